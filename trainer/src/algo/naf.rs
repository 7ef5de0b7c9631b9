//! NAF, normalized advantage functions (Gu, Lillicrap, Sutskever & Levine 2016):
//! Q-learning for continuous actions with a Q whose maximum over actions is
//! known in closed form.
//!
//! One network ([`NafNetwork`]) gives V(s), μ(s) and a lower-triangular L(s)
//! with an exp'd diagonal; P = L Lᵀ is symmetric positive definite and
//!
//! ```text
//!   Q(s, a) = V(s) − ½ (a − μ(s))ᵀ P(s) (a − μ(s))
//!   max_a Q(s, a) = V(s), at a = μ(s)
//!   y = R + d · V⁻(s')                  (target network, Polyak-averaged)
//!   L = mean_i w_i (Q(s_i, a_i) − y_i)² + λ mean_i ‖pre-tanh μ(s_i)‖²
//! ```
//!
//! The small λ term is ours: without it μ ran into tanh's flat tails at an action
//! bound on Pendulum and never came back.
//!
//! The greedy action is μ(s); exploration adds Gaussian or OU noise to it. As in
//! the paper's robot setup, several gradient steps per env step are one setting
//! away (`gradient_steps`).

use candle_core::{Device, Tensor};
use reflex_msgs::{Action, BoxSpace, PolicySpec};
use reflex_sim::SimRng;
use serde::{Deserialize, Serialize};

use super::continuous::{core_config, forward_to_core, Core, CoreConfig, NoiseConfig};
use super::{Agent, UpdateStats};
use crate::nn::{polyak, Activation, NafNetwork, NetConfig, Params};
use crate::optim::Adam;
use crate::TrainError;

/// Every hyperparameter of a NAF run. Defaults are the Pendulum preset's: at a
/// learning rate of 1e-3 without gradient clipping μ's tanh saturated at one
/// bound and stayed there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NafConfig {
    /// Discount factor γ.
    pub gamma: f64,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Transitions per update.
    pub batch_size: usize,
    /// Replay capacity.
    pub buffer_size: usize,
    /// Env steps of uniformly random actions before the first update.
    pub learning_starts: u64,
    /// Env steps between training rounds.
    pub train_freq: u64,
    /// Updates per training round (the paper's robots used several per step).
    pub gradient_steps: u64,
    /// Polyak coefficient τ of the target network.
    pub tau: f64,
    /// Exploration noise (normalized action units).
    pub noise: NoiseConfig,
    /// n of n-step returns.
    pub n_step: usize,
    /// Prioritized replay (proportional).
    pub prioritized: bool,
    /// PER priority exponent α.
    pub per_alpha: f64,
    /// PER importance exponent β at the start; annealed to 1.
    pub per_beta0: f64,
    /// PER ε added to |TD error|.
    pub per_eps: f64,
    /// Normalize observations with running mean/std (frozen into the export).
    pub obs_norm: bool,
    /// Clip the gradient norm to this (none when absent).
    pub max_grad_norm: Option<f64>,
    /// Weight λ of `λ · mean(pre-tanh μ²)` added to the loss. Without it μ can
    /// run into tanh's flat tails at an action bound, where no gradient brings it
    /// back (the policy then applies one constant action).
    pub mu_penalty: f64,
    /// Network shape (trunk; V, μ and L heads on top).
    pub net: NetConfig,
}

impl Default for NafConfig {
    fn default() -> Self {
        Self {
            gamma: 0.98,
            learning_rate: 3e-4,
            batch_size: 128,
            buffer_size: 200_000,
            learning_starts: 1_000,
            train_freq: 1,
            gradient_steps: 1,
            tau: 0.005,
            noise: NoiseConfig {
                sigma: crate::schedule::Schedule::linear(0.3, 0.1, 0.5),
                ..NoiseConfig::default()
            },
            n_step: 1,
            prioritized: false,
            per_alpha: 0.6,
            per_beta0: 0.4,
            per_eps: 1e-6,
            obs_norm: false,
            max_grad_norm: Some(10.0),
            mu_penalty: 1e-2,
            net: NetConfig {
                hidden: vec![256, 256],
                activation: Activation::Relu,
                layer_norm: false,
                dueling: false,
                final_init_scale: 1.0,
            },
        }
    }
}

impl NafConfig {
    pub(crate) fn core(&self) -> CoreConfig {
        core_config!(self)
    }
}

/// The learner's state for NAF.
pub struct Naf {
    /// Hyperparameters.
    pub config: NafConfig,
    /// V, μ, L.
    pub online: NafNetwork,
    /// The target copy (its V bootstraps).
    pub target: NafNetwork,
    /// Adam over `online`.
    pub optimizer: Adam,
    /// Replay, noise, generators, normalization, scaling.
    pub core: Core,
}

impl Naf {
    /// A fresh learner for an env with `obs_dim` observations and action `bounds`.
    pub fn new(
        config: NafConfig,
        obs_dim: usize,
        bounds: &BoxSpace,
        seed: u64,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let core = Core::new(config.core(), obs_dim, bounds, seed, device)?;
        let online = NafNetwork::new(
            &config.net,
            obs_dim,
            core.scaling.dim(),
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

    /// One gradient update on a sampled batch; the target follows by Polyak.
    pub fn update(&mut self, beta: f64) -> Result<UpdateStats, TrainError> {
        // On CPU this runs inside candle's own thread pool, so a
        // multi-threaded matmul finds its workers awake.
        let device = self.core.device.clone();
        crate::nn::fused::with_context(&device, || {
            let batch = self.core.sample(beta)?;
            let next_value = self.target.forward(&batch.next_obs)?.value;
            let y = (&batch.rewards + (&batch.discounts * next_value)?)?.detach();
            let out = self.online.forward(&batch.obs)?;
            let q = self.online.q(&out, &batch.actions)?;
            let error = (&q - &y)?;
            let td_loss = (error.sqr()? * &batch.weights)?.mean_all()?;
            let loss = if self.config.mu_penalty > 0.0 {
                (&td_loss + (out.mu_pre.sqr()?.mean_all()? * self.config.mu_penalty)?)?
            } else {
                td_loss.clone()
            };
            let grads = loss.backward()?;
            let grad_norm = self.optimizer.step(&grads, self.config.max_grad_norm)?;
            polyak(&self.target, &self.online, self.config.tau)?;
            self.core.update_priorities(&error.detach())?;
            Ok(UpdateStats {
                loss: td_loss.to_scalar::<f32>()?,
                q_mean: q.mean_all()?.to_scalar::<f32>()?,
                grad_norm,
            })
        })
    }

    fn mu(&self, obs: &Tensor) -> Result<Tensor, TrainError> {
        Ok(self.online.forward(obs)?.mu)
    }
}

impl Agent for Naf {
    forward_to_core!();

    fn algo(&self) -> &'static str {
        "naf"
    }

    /// Uniform random actions before `learning_starts`, then μ(s) + noise.
    fn explore(&mut self, obs: &[f32], step: u64, total: u64) -> Result<Action, TrainError> {
        let online = &self.online;
        self.core.explore(step, total, |core| {
            Ok(online.forward(&core.obs_tensor(obs)?)?.mu)
        })
    }

    fn greedy(&self, obs: &[f32]) -> Result<Action, TrainError> {
        let mu = self.mu(&self.core.obs_tensor(obs)?)?;
        self.core.env_action(&mu)
    }

    super::online_target_slots!();

    fn to_onnx(&self, template: &PolicySpec) -> Result<Vec<u8>, TrainError> {
        self.core
            .to_onnx(template, |g, x| self.online.to_onnx(g, x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(act_dim: usize, seed: u64) -> NafNetwork {
        let config = NetConfig {
            hidden: vec![16, 16],
            ..NafConfig::default().net
        };
        NafNetwork::new(&config, 4, act_dim, &mut SimRng::seed(seed), &Device::Cpu).unwrap()
    }

    fn obs(rows: usize) -> Tensor {
        let mut rng = SimRng::seed(11);
        let data: Vec<f32> = (0..rows * 4)
            .map(|_| rng.uniform(-2.0, 2.0) as f32)
            .collect();
        Tensor::from_vec(data, (rows, 4), &Device::Cpu).unwrap()
    }

    #[test]
    fn p_is_symmetric_positive_definite() {
        for act_dim in [1, 2, 3] {
            let naf = net(act_dim, act_dim as u64);
            let out = naf.forward(&obs(32)).unwrap();
            let p = NafNetwork::precision(&out)
                .unwrap()
                .to_vec3::<f32>()
                .unwrap();
            let l = out.l.to_vec3::<f32>().unwrap();
            let mut rng = SimRng::seed(5);
            for (pb, lb) in p.iter().zip(&l) {
                for i in 0..act_dim {
                    assert!(lb[i][i] > 0.0, "exp'd diagonal");
                    for j in 0..act_dim {
                        assert!((pb[i][j] - pb[j][i]).abs() < 1e-5, "symmetric");
                        if j > i {
                            assert_eq!(lb[i][j], 0.0, "L is lower-triangular");
                        }
                    }
                }
                for _ in 0..20 {
                    let x: Vec<f32> = (0..act_dim).map(|_| rng.normal() as f32).collect();
                    let quad: f32 = (0..act_dim)
                        .flat_map(|i| (0..act_dim).map(move |j| (i, j)))
                        .map(|(i, j)| x[i] * pb[i][j] * x[j])
                        .sum();
                    assert!(quad > 0.0, "xᵀPx = {quad} for {x:?}");
                }
            }
        }
    }

    #[test]
    fn q_peaks_at_mu_with_value_v() {
        let naf = net(2, 9);
        let x = obs(16);
        let out = naf.forward(&x).unwrap();
        let at_mu = naf.q(&out, &out.mu).unwrap().to_vec1::<f32>().unwrap();
        let v = out.value.to_vec1::<f32>().unwrap();
        for (q, v) in at_mu.iter().zip(&v) {
            assert!((q - v).abs() < 1e-6, "Q(s, μ) = {q}, V = {v}");
        }
        let mut rng = SimRng::seed(3);
        for _ in 0..50 {
            let shift: Vec<f32> = (0..32).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
            let a = (&out.mu + Tensor::from_vec(shift, (16, 2), &Device::Cpu).unwrap()).unwrap();
            let q = naf.q(&out, &a).unwrap().to_vec1::<f32>().unwrap();
            for (q, peak) in q.iter().zip(&at_mu) {
                assert!(q <= peak, "Q(s, a) = {q} above Q(s, μ) = {peak}");
            }
        }
        // Worked by hand for one dimension: Q = V − ½ exp(2l)(a − μ)².
        let one = net(1, 4);
        let out = one.forward(&obs(3)).unwrap();
        let a = Tensor::new(&[[0.5f32], [-0.25], [0.0]], &Device::Cpu).unwrap();
        let q = one.q(&out, &a).unwrap().to_vec1::<f32>().unwrap();
        let (v, mu, l) = (
            out.value.to_vec1::<f32>().unwrap(),
            out.mu.to_vec2::<f32>().unwrap(),
            out.l.to_vec3::<f32>().unwrap(),
        );
        for (i, a) in [0.5f32, -0.25, 0.0].iter().enumerate() {
            let expected = v[i] - 0.5 * l[i][0][0].powi(2) * (a - mu[i][0]).powi(2);
            assert!((q[i] - expected).abs() < 1e-5, "{} vs {expected}", q[i]);
        }
    }
}
