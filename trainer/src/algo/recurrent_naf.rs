//! Recurrent NAF (`--recurrent` with `--algo naf`): NAF's network (see
//! [`super::naf`]) on the state of an LSTM over [o_t, a_{t−1}], trained on
//! windows of sequence replay (see [`super::recurrent`]):
//!
//! ```text
//!   Q(h_t, a) = V(h_t) − ½ ‖L(h_t)ᵀ (a − μ(h_t))‖²
//!   y_t       = Σ_{i<m} γ^i r_{t+i} + γ^m V⁻(h⁻_{t+m})           (0 after termination)
//!   L         = Σ_t w · mask_t (Q(h_t, a_t) − y_t)² / Σ_t mask_t + λ · masked mean ‖pre-tanh μ‖²
//! ```
//!
//! One network acts and learns, so both it and its target start their windows
//! from the stored actor state (or zeros).

use candle_core::{Device, D};
use reflex_msgs::{Action, BoxSpace, PolicySpec};
use reflex_sim::SimRng;

use super::naf::NafConfig;
use super::recurrent::{forward_to_sequence_core, LstmConfig, SequenceCore};
use super::{Agent, UpdateStats};
use crate::nn::{polyak, NafNetwork, Params, Recurrent};
use crate::optim::Adam;
use crate::TrainError;

/// The learner's state for recurrent NAF.
pub struct RecurrentNaf {
    /// NAF hyperparameters (`batch_size` counts windows).
    pub config: NafConfig,
    /// LSTM, then V, μ, L.
    pub online: Recurrent<NafNetwork>,
    /// The target copy (its V bootstraps).
    pub target: Recurrent<NafNetwork>,
    /// Adam over `online`.
    pub optimizer: Adam,
    /// Sequence replay, acting state, noise, generators, normalization, scaling.
    pub core: SequenceCore,
}

impl RecurrentNaf {
    /// A fresh learner for an env with `obs_dim` observations and action `bounds`.
    pub fn new(
        config: NafConfig,
        lstm: LstmConfig,
        obs_dim: usize,
        bounds: &BoxSpace,
        seed: u64,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let hidden = lstm.hidden;
        let core = SequenceCore::new(config.core(), lstm, obs_dim, bounds, seed, device)?;
        let online = Recurrent::<NafNetwork>::new(
            &config.net,
            obs_dim,
            core.scaling.dim(),
            hidden,
            &mut SimRng::seed(seed),
            device,
        )?;
        Ok(Self {
            target: online.duplicate()?,
            optimizer: Adam::new(online.vars(), config.learning_rate)?,
            online,
            core,
            config,
        })
    }

    /// One gradient update on sampled windows; the target follows by Polyak.
    pub fn update(&mut self, beta: f64) -> Result<UpdateStats, TrainError> {
        let w = self.core.sample(beta)?;
        let next_h = w
            .states(&self.target, true)?
            .detach()
            .index_select(&w.boot_rows, 0)?;
        let next_value = self.target.head.forward(&next_h)?.value.detach();
        let y = (&w.returns + (&w.discounts * next_value)?)?.detach();
        let h = w
            .states(&self.online, true)?
            .index_select(&w.learn_rows, 0)?;
        let out = self.online.head.forward(&h)?;
        let q = self.online.head.q(&out, &w.actions)?;
        let error = (&q - &y)?;
        let td_loss = (error.sqr()? * &w.weights)?.sum_all()?;
        let loss = if self.config.mu_penalty > 0.0 {
            let penalty = (out.mu_pre.sqr()?.mean(D::Minus1)? * &w.mask_mean)?.sum_all()?;
            (&td_loss + (penalty * self.config.mu_penalty)?)?
        } else {
            td_loss.clone()
        };
        let grads = loss.backward()?;
        let grad_norm = self.optimizer.step(&grads, self.config.max_grad_norm)?;
        polyak(&self.target, &self.online, self.config.tau)?;
        self.core.update_priorities(&error.detach())?;
        Ok(UpdateStats {
            loss: td_loss.to_scalar::<f32>()?,
            q_mean: (q.detach() * &w.mask_mean)?.sum_all()?.to_scalar::<f32>()?,
            grad_norm,
        })
    }
}

impl Agent for RecurrentNaf {
    forward_to_sequence_core!();

    fn algo(&self) -> &'static str {
        "naf"
    }

    /// Uniform random actions before `learning_starts`, then μ + noise; the
    /// network steps on every observation either way.
    fn explore(&mut self, obs: &[f32], step: u64, total: u64) -> Result<Action, TrainError> {
        let online = &self.online;
        self.core
            .explore(obs, step, total, |x, h, c| online.step(x, h, c))
    }

    fn greedy(&self, obs: &[f32]) -> Result<Action, TrainError> {
        self.core.greedy(obs, |x, h, c| self.online.step(x, h, c))
    }

    super::online_target_slots!();

    /// The one-step policy (see [`SequenceCore::to_onnx`]).
    fn to_onnx(&self, template: &PolicySpec) -> Result<Vec<u8>, TrainError> {
        self.core.to_onnx(template, |g, x, state_in, state_out| {
            self.online.to_onnx(g, x, state_in, state_out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::NetConfig;
    use crate::replay::{ActionRef, EnvStep};

    #[test]
    fn an_update_reaches_the_lstm_and_moves_the_target() {
        let config = NafConfig {
            batch_size: 4,
            learning_starts: 0,
            net: NetConfig {
                hidden: vec![8],
                ..NafConfig::default().net
            },
            ..NafConfig::default()
        };
        let lstm = LstmConfig {
            hidden: 6,
            seq_len: 4,
            burn_in: 2,
            ..LstmConfig::default()
        };
        let bounds = BoxSpace {
            low: vec![-2.0, -1.0],
            high: vec![2.0, 1.0],
        };
        let mut agent = RecurrentNaf::new(config, lstm, 2, &bounds, 0, &Device::Cpu).unwrap();
        agent.episode_start();
        for t in 0..30u64 {
            let obs = [(t as f32).cos(), (t as f32).sin()];
            let Action::Continuous(a) = agent.explore(&obs, t + 1, 100).unwrap() else {
                panic!("continuous")
            };
            assert!(a[0].abs() <= 2.0 && a[1].abs() <= 1.0, "{a:?}");
            agent
                .observe(&EnvStep {
                    obs: &obs,
                    action: ActionRef::Continuous(&a),
                    reward: -1.0,
                    next_obs: &obs,
                    terminated: t == 14,
                    truncated: false,
                })
                .unwrap();
            if t == 14 {
                agent.episode_start();
            }
        }
        let flat = |p: &dyn Params| -> Vec<(String, Vec<f32>)> {
            p.named_vars()
                .into_iter()
                .map(|(n, v)| (n, v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()))
                .collect()
        };
        let (online0, target0) = (flat(&agent.online), flat(&agent.target));
        let stats = agent.update(1.0).unwrap();
        assert!(stats.loss.is_finite());
        for ((name, before), (_, after)) in online0.iter().zip(&flat(&agent.online)) {
            // V's and L's heads and μ's all get gradients; so does the LSTM.
            assert_ne!(before, after, "parameter {name} got no gradient");
        }
        assert_ne!(flat(&agent.target), target0);
    }
}
