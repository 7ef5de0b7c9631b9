//! What the recurrent continuous learners (recurrent DDPG/TD3 and NAF, run
//! with `recurrent = true`) share: the `[lstm]` settings, sequence replay of
//! env steps with the actor's state, acting with a carried state, windows
//! turned into tensors, and the one-step ONNX export.
//!
//! **Inputs.** Every network reads [o_t, a_{t−1}] through its LSTM; the
//! previous action is in normalized units (see [`super::continuous`]), zeros at
//! an episode's start. The exported step takes the applied action in env units
//! (as `reflexd` feeds it back) and normalizes it inside the graph.
//!
//! **Windows.** An update samples `batch_size` windows of B burn-in, L learning
//! and n bootstrap positions (R2D2's scheme; see
//! [`crate::replay::SequenceReplay`]). The networks' outputs after the burn-in
//! are rows `[batch · (B … P), H]`; [`Windows`] carries the row indices of the
//! learning steps and of their bootstraps, and per-row weights for masked means.
//!
//! **Start states.** The acting network's windows (online and target) start
//! from the state the actor had at the window's first step when
//! `stored_state`, else zeros; networks that do not act (DDPG's critics) start
//! from zeros and warm up over the burn-in.

use std::cell::RefCell;

use candle_core::{DType, Device, Shape, Tensor};
use reflex_msgs::onnx::{
    INPUT_C, INPUT_H, INPUT_OBS, INPUT_PREV_ACTION, OUTPUT_ACTION, OUTPUT_C, OUTPUT_H,
};
use reflex_msgs::{Action, BoxSpace, PolicySpec};
use reflex_sim::SimRng;
use serde::{Deserialize, Serialize};

use super::continuous::{ActionScaling, CoreConfig, Noise};
use super::drqn::{Carry, Pending};
use super::RunningNorm;
use crate::export::{normalized_obs, Attr, OnnxGraph};
use crate::nn::Recurrent;
use crate::replay::{
    ActionRef, ActionShape, EnvStep, Replay, SequenceBatch, SequencePer, SequenceReplay, WindowSpec,
};
use crate::TrainError;

/// The recurrent settings of a continuous learner run with `recurrent = true`
/// (the `[lstm]` table); the rest comes from the algorithm's own table, whose
/// `batch_size` then counts windows and `buffer_size` env steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LstmConfig {
    /// LSTM hidden size of every network.
    pub hidden: usize,
    /// Learning steps L per window.
    pub seq_len: usize,
    /// Burn-in steps B before them (state warm-up, no loss).
    pub burn_in: usize,
    /// Start the acting network's windows from the state the actor had (true)
    /// or from zeros. Networks that do not act (critics) always start from
    /// zeros and warm up over the burn-in: their states are not computed while
    /// acting.
    pub stored_state: bool,
    /// R2D2's η for prioritized windows: priority η·max|δ| + (1 − η)·mean|δ|.
    pub per_eta: f64,
}

impl Default for LstmConfig {
    fn default() -> Self {
        Self {
            hidden: 64,
            seq_len: 16,
            burn_in: 8,
            stored_state: true,
            per_eta: 0.9,
        }
    }
}

/// A sampled batch of windows as tensors (see the module docs).
pub struct Windows {
    /// `[B, P, obs + m]`: normalized observation, then previous action.
    pub xs: Tensor,
    /// `[B, P]` alive marks, when there is a burn-in (without one a window
    /// starts at its live learning start and no dead position is read).
    pub alive: Option<Tensor>,
    /// The acting network's start state `[B, H]` each (stored, or zeros).
    pub h0: Tensor,
    /// See `h0`.
    pub c0: Tensor,
    /// `[B, H]` zeros: the start of networks that do not act.
    pub zeros: Tensor,
    /// Burn-in positions B.
    pub burn: usize,
    /// Row of each learning step in a network's output rows `[B·L]`.
    pub learn_rows: Tensor,
    /// Row of each learning step's bootstrap observation `[B·L]`.
    pub boot_rows: Tensor,
    /// Actions taken at the learning steps, normalized `[B·L, m]`.
    pub actions: Tensor,
    /// n-step reward sums `[B·L]`.
    pub returns: Tensor,
    /// γ^m of the bootstrap, 0 after termination `[B·L]`.
    pub discounts: Tensor,
    /// mask · PER weight / valid steps `[B·L]`: a weighted masked mean is a
    /// product with this, summed.
    pub weights: Tensor,
    /// mask / valid steps `[B·L]` (a plain masked mean).
    pub mask_mean: Tensor,
    /// mask `[B·L]`: 1 where the learning step exists.
    pub mask: Tensor,
}

impl Windows {
    /// The hidden-state rows of `net` over the windows (after the burn-in),
    /// started from the actor's state (`acting`) or from zeros.
    pub fn states<H>(&self, net: &Recurrent<H>, acting: bool) -> candle_core::Result<Tensor> {
        let (h0, c0) = if acting {
            (&self.h0, &self.c0)
        } else {
            (&self.zeros, &self.zeros)
        };
        net.states(&self.xs, h0, c0, self.alive.as_ref(), self.burn)
    }
}

/// Sequence replay, generators, noise, normalization, scaling and the carried
/// acting state of a recurrent continuous learner.
pub struct SequenceCore {
    /// Replay and update-schedule settings (`batch_size` counts windows).
    pub config: CoreConfig,
    /// Window and LSTM settings.
    pub lstm: LstmConfig,
    /// Sequence replay (as [`Replay::Sequence`], for checkpoints); env actions.
    pub replay: Replay,
    /// Env steps taken so far.
    pub steps_done: u64,
    /// Draws exploration noise and random actions.
    pub act_rng: SimRng,
    /// Draws replay samples and target smoothing noise.
    pub replay_rng: SimRng,
    /// Running observation statistics (when `obs_norm`).
    pub norm: Option<RunningNorm>,
    /// Exploration noise state.
    pub noise: Noise,
    /// Normalized ↔ env action units.
    pub scaling: ActionScaling,
    /// The device tensors live on.
    pub device: Device,
    obs_dim: usize,
    batch: SequenceBatch,
    scratch: Vec<f32>,
    /// Reused host buffer of the packed batch upload.
    upload: Vec<f32>,
    acting: Carry,
    pending: Option<Pending>,
    evaluating: RefCell<Carry>,
}

impl SequenceCore {
    /// A fresh core for an env with `obs_dim` observations and action `bounds`.
    pub fn new(
        config: CoreConfig,
        lstm: LstmConfig,
        obs_dim: usize,
        bounds: &BoxSpace,
        seed: u64,
        device: &Device,
    ) -> Result<Self, TrainError> {
        for (what, v) in [
            ("lstm.hidden", lstm.hidden),
            ("lstm.seq_len", lstm.seq_len),
            ("batch_size", config.batch_size),
            ("n_step", config.n_step),
            ("train_freq", config.train_freq as usize),
        ] {
            if v == 0 {
                return Err(TrainError::Config(format!("{what} must be at least 1")));
            }
        }
        let scaling = ActionScaling::new(bounds)?;
        let m = scaling.dim();
        let replay = SequenceReplay::new(
            config.buffer_size,
            obs_dim,
            ActionShape::Continuous { dim: m },
            if lstm.stored_state {
                2 * lstm.hidden
            } else {
                0
            },
            config.per.map(|per| SequencePer {
                alpha: per.alpha,
                eps: per.eps,
                eta: lstm.per_eta,
            }),
        )?;
        let zero = Carry::zero(lstm.hidden, m, device)?;
        Ok(Self {
            replay: Replay::Sequence(replay),
            steps_done: 0,
            act_rng: SimRng::seed(seed.wrapping_add(1)),
            replay_rng: SimRng::seed(seed.wrapping_add(2)),
            norm: config.obs_norm.then(|| RunningNorm::new(obs_dim)),
            noise: Noise::new(config.noise.clone(), m),
            scaling,
            device: device.clone(),
            obs_dim,
            batch: SequenceBatch::default(),
            upload: Vec::new(),
            scratch: Vec::new(),
            acting: zero.clone(),
            pending: None,
            evaluating: RefCell::new(zero),
            config,
            lstm,
        })
    }

    fn sequences(&mut self) -> &mut SequenceReplay {
        match &mut self.replay {
            Replay::Sequence(r) => r,
            _ => unreachable!("a recurrent learner is built with a sequence buffer"),
        }
    }

    /// Samples windows (PER importance exponent `beta`) as tensors.
    pub fn sample(&mut self, beta: f64) -> Result<Windows, TrainError> {
        let window = WindowSpec {
            burn_in: self.lstm.burn_in,
            learn: self.lstm.seq_len,
            n_step: self.config.n_step,
            gamma: self.config.gamma as f32,
        };
        let b = self.config.batch_size;
        let Replay::Sequence(replay) = &self.replay else {
            unreachable!("a recurrent learner is built with a sequence buffer")
        };
        replay.sample_into(b, window, beta, &mut self.replay_rng, &mut self.batch)?;
        if let Some(norm) = &self.norm {
            norm.apply(&mut self.batch.obs);
        }
        self.scaling
            .to_normalized(&self.batch.actions, &mut self.scratch);
        let (dev, batch) = (&self.device, &self.batch);
        let (p, l, burn) = (batch.positions, window.learn, window.burn_in);
        let (d, m, hd) = (self.obs_dim, self.scaling.dim(), self.lstm.hidden);

        let mut xs = Vec::with_capacity(b * p * (d + m));
        for at in 0..b * p {
            xs.extend_from_slice(&batch.obs[at * d..][..d]);
            xs.extend_from_slice(&batch.prev_actions[at * m..][..m]);
        }
        let zeros = Tensor::zeros((b, hd), DType::F32, dev)?;
        // Learning step j of window i is output row i·span + j; its bootstrap
        // at position k is row i·span + (k − B). Row indices travel as f32
        // (exact below 2^24) so that everything goes up in one copy.
        let span = p - burn;
        let learn_rows: Vec<f32> = (0..b * l)
            .map(|at| ((at / l) * span + at % l) as f32)
            .collect();
        let boot_rows: Vec<f32> = (0..b * l)
            .map(|at| {
                let k = (batch.bootstrap[at] as usize).saturating_sub(burn);
                ((at / l) * span + k) as f32
            })
            .collect();
        let valid = batch.mask.iter().sum::<f32>().max(1.0);
        let weights: Vec<f32> = (0..b * l)
            .map(|at| batch.mask[at] * batch.weights[at / l] / valid)
            .collect();
        let mask_mean: Vec<f32> = batch.mask.iter().map(|m| m / valid).collect();
        let stored = !batch.init_state.is_empty();
        let mut parts: Vec<(&[f32], Shape)> = vec![
            (&xs, Shape::from((b, p, d + m))),
            (&batch.alive, Shape::from((b, p))),
            (&learn_rows, Shape::from(b * l)),
            (&boot_rows, Shape::from(b * l)),
            (&self.scratch, Shape::from((b * l, m))),
            (&batch.returns, Shape::from(b * l)),
            (&batch.discounts, Shape::from(b * l)),
            (&weights, Shape::from(b * l)),
            (&mask_mean, Shape::from(b * l)),
            (&batch.mask, Shape::from(b * l)),
        ];
        if stored {
            parts.push((&batch.init_state, Shape::from((b, 2 * hd))));
        }
        let mut up = super::upload_packed(&parts, &mut self.upload, dev)?.into_iter();
        let mut next = || up.next().expect("one tensor per part");
        let (xs, alive, learn_rows, boot_rows) = (next(), next(), next(), next());
        let (actions, returns, discounts) = (next(), next(), next());
        let (weights, mask_mean, mask) = (next(), next(), next());
        let (h0, c0) = if stored {
            let state = next();
            (state.narrow(1, 0, hd)?, state.narrow(1, hd, hd)?)
        } else {
            (zeros.clone(), zeros.clone())
        };
        Ok(Windows {
            xs,
            alive: (burn > 0).then_some(alive),
            h0,
            c0,
            zeros,
            burn,
            learn_rows: learn_rows.to_dtype(DType::U32)?,
            boot_rows: boot_rows.to_dtype(DType::U32)?,
            actions,
            returns,
            discounts,
            weights,
            mask_mean,
            mask,
        })
    }

    /// New priorities for the last sampled windows from their TD errors
    /// `[B·L]` (prioritized replay only).
    pub fn update_priorities(&mut self, td_error: &Tensor) -> Result<(), TrainError> {
        if self.config.per.is_some() {
            let td = td_error.to_vec1::<f32>()?;
            let (starts, mask) = (self.batch.starts.clone(), self.batch.mask.clone());
            self.sequences().update_priorities(&starts, &td, &mask)?;
        }
        Ok(())
    }

    /// The applied env action `a` in normalized units (the next step's
    /// previous-action input).
    fn normalized(&self, a: &[f32]) -> Vec<f32> {
        let mut u = Vec::with_capacity(a.len());
        self.scaling.to_normalized(a, &mut u);
        u
    }

    /// The training action at `step` (1-based): the actor steps on `obs` (its
    /// state follows every observation); uniformly random before
    /// `learning_starts`, then μ + noise. `actor` is one step of the acting
    /// network: `[obs, prev]`, h, c → normalized μ, h', c'.
    pub fn explore(
        &mut self,
        obs: &[f32],
        step: u64,
        total: u64,
        actor: impl FnOnce(&Tensor, &Tensor, &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor)>,
    ) -> Result<Action, TrainError> {
        let pending = self.acting.pending(self.lstm.stored_state)?;
        let mu = self.acting.step(self.norm.as_ref(), obs, actor)?;
        let u = if step <= self.config.learning_starts {
            (0..mu.len())
                .map(|_| self.act_rng.uniform(-1.0, 1.0) as f32)
                .collect()
        } else {
            let mut u = mu;
            let sigma = self.noise.sigma(step - 1, total);
            self.noise.perturb(&mut u, sigma, &mut self.act_rng);
            u
        };
        self.pending = Some(pending);
        Ok(Action::Continuous(self.scaling.to_env(&u)))
    }

    /// The greedy action, advancing the evaluation state (not training's).
    pub fn greedy(
        &self,
        obs: &[f32],
        actor: impl FnOnce(&Tensor, &Tensor, &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor)>,
    ) -> Result<Action, TrainError> {
        let mut carry = self.evaluating.borrow_mut();
        let mu = carry.step(self.norm.as_ref(), obs, actor)?;
        let action = self.scaling.to_env(&mu);
        carry.prev = self.normalized(&action);
        Ok(Action::Continuous(action))
    }

    /// A greedy episode starts: zero evaluation state.
    pub fn greedy_reset(&self) {
        if let Ok(zero) = Carry::zero(self.lstm.hidden, self.scaling.dim(), &self.device) {
            *self.evaluating.borrow_mut() = zero;
        }
    }

    /// Stores one env step (the actor's inputs and state from before it) and
    /// feeds the applied action back as the next previous action.
    pub fn observe(&mut self, step: &EnvStep<'_>) -> Result<(), TrainError> {
        let pending = self.pending.take().ok_or_else(|| {
            TrainError::Config(
                "a recurrent learner stores steps it chose itself (explore, then observe)".into(),
            )
        })?;
        let ActionRef::Continuous(action) = step.action else {
            return Err(TrainError::Config(
                "this recurrent learner needs continuous actions".into(),
            ));
        };
        let applied = self.normalized(action);
        self.sequences().push_step(
            step.obs,
            &pending.prev,
            &pending.state,
            step.action,
            step.reward,
        )?;
        if let Some(norm) = &mut self.norm {
            norm.update(step.obs);
        }
        self.acting.prev = applied;
        let stored = self.lstm.stored_state;
        let Replay::Sequence(replay) = &mut self.replay else {
            unreachable!("a recurrent learner is built with a sequence buffer")
        };
        self.acting.finish(replay, step, stored)
    }

    /// A new episode: zero state and previous action, noise reset; a partial
    /// episode in replay is closed to sampling.
    pub fn episode_start(&mut self) {
        self.sequences().abandon_episode();
        if let Ok(zero) = Carry::zero(self.lstm.hidden, self.scaling.dim(), &self.device) {
            self.acting = zero;
        }
        self.pending = None;
        self.noise.reset();
    }

    /// Whether a window can be sampled.
    pub fn can_sample(&self) -> bool {
        matches!(&self.replay, Replay::Sequence(r) if r.can_sample())
    }

    /// The one-step policy graph: `obs`, `prev_action` (the applied action, env
    /// units), `h_in`, `c_in` → `action` (env units), `h_out`, `c_out`. `mu`
    /// appends the acting network on the concatenated, normalized input with
    /// the given state names and returns the normalized action's name.
    pub fn to_onnx(
        &self,
        template: &PolicySpec,
        mu: impl FnOnce(&mut OnnxGraph, &str, (&str, &str), (&str, &str)) -> candle_core::Result<String>,
    ) -> Result<Vec<u8>, TrainError> {
        let mut spec = template.clone();
        spec.recurrent_hidden_size = self.lstm.hidden as u32;
        if let Some(norm) = &self.norm {
            (spec.obs_mean, spec.obs_std) = norm.mean_std();
        }
        spec.validate()
            .map_err(|e| TrainError::Export(format!("policy spec: {e}")))?;
        let (d, m, hd) = (self.obs_dim, self.scaling.dim(), self.lstm.hidden);
        if spec.observation_space.dim() != d || spec.action_space.dim() != m {
            return Err(TrainError::Export(format!(
                "network is {d}→{m}, spec says {}→{}",
                spec.observation_space.dim(),
                spec.action_space.dim()
            )));
        }
        let mut g = OnnxGraph::new();
        let obs = normalized_obs(&mut g, &spec);
        // u = a / scale − offset / scale.
        let inverse: Vec<f32> = self.scaling.scale.iter().map(|s| 1.0 / s).collect();
        let shift: Vec<f32> = (self.scaling.offset.iter().zip(&self.scaling.scale))
            .map(|(o, s)| -o / s)
            .collect();
        let inverse = g.constant("prev_action.inverse_scale", &[m], inverse);
        let shift = g.constant("prev_action.shift", &[m], shift);
        let prev = g.op("Mul", &[INPUT_PREV_ACTION, &inverse], &[], None);
        let prev = g.op("Add", &[&prev, &shift], &[], None);
        let x = g.op("Concat", &[&obs, &prev], &[Attr::Int("axis", 1)], None);
        let u = mu(&mut g, &x, (INPUT_H, INPUT_C), (OUTPUT_H, OUTPUT_C))?;
        self.scaling.to_onnx(&mut g, &u, OUTPUT_ACTION);
        g.finish(
            &[
                (INPUT_OBS, d),
                (INPUT_PREV_ACTION, m),
                (INPUT_H, hd),
                (INPUT_C, hd),
            ],
            &[(OUTPUT_ACTION, m), (OUTPUT_H, hd), (OUTPUT_C, hd)],
            &spec,
        )
    }

    /// The carried acting state (h then c).
    #[cfg(test)]
    pub(crate) fn acting_state(&self) -> Vec<f32> {
        self.acting.state().to_vec()
    }

    /// The carried previous action.
    #[cfg(test)]
    pub(crate) fn acting_prev(&self) -> &[f32] {
        &self.acting.prev
    }
}

/// The [`Agent`](super::Agent) methods a recurrent continuous agent answers
/// from its `core: SequenceCore` field and its `update(beta)` method.
macro_rules! forward_to_sequence_core {
    () => {
        fn train_after(
            &mut self,
            step: u64,
            total: u64,
        ) -> Result<Option<super::UpdateStats>, TrainError> {
            if !self.core.can_sample() {
                return Ok(None);
            }
            let c = &self.core.config;
            let (starts, freq, steps, beta0) = (
                c.learning_starts,
                c.train_freq,
                c.gradient_steps,
                c.per_beta0,
            );
            // On CPU the updates run inside candle's own thread pool.
            let device = self.core.device.clone();
            crate::nn::fused::with_context(&device, || {
                super::update_round(step, total, starts, freq, steps, beta0, |beta| {
                    self.update(beta)
                })
            })
        }

        fn steps_done(&self) -> u64 {
            self.core.steps_done
        }

        fn set_steps_done(&mut self, steps: u64) {
            self.core.steps_done = steps;
        }

        fn exploration(&self, step: u64, total: u64) -> f64 {
            if step < self.core.config.learning_starts {
                1.0
            } else {
                self.core.noise.sigma(step, total)
            }
        }

        fn greedy_reset(&self) {
            self.core.greedy_reset();
        }

        fn observe(&mut self, step: &crate::replay::EnvStep<'_>) -> Result<(), TrainError> {
            self.core.observe(step)
        }

        fn episode_start(&mut self) {
            self.core.episode_start();
        }

        fn replay(&self) -> &crate::replay::Replay {
            &self.core.replay
        }

        fn replay_mut(&mut self) -> &mut crate::replay::Replay {
            &mut self.core.replay
        }

        fn rngs(&mut self) -> (&mut reflex_sim::SimRng, &mut reflex_sim::SimRng) {
            (&mut self.core.act_rng, &mut self.core.replay_rng)
        }

        fn obs_norm(&mut self) -> Option<&mut crate::algo::RunningNorm> {
            self.core.norm.as_mut()
        }
    };
}
pub(crate) use forward_to_sequence_core;
