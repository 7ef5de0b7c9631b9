//! What DDPG, TD3 and NAF share: actions in normalized units, exploration
//! noise, observation normalization, and the acting network's ONNX export.
//!
//! **Normalized actions.** Networks work in `u ∈ [−1, 1]^n`; the env gets
//! `a = offset + scale · u` with `offset = (high + low)/2`, `scale = (high − low)/2`.
//! Replay stores the env action that was applied (as robots report it), and
//! updates map it back with `u = (a − offset)/scale`. Exploration noise is added
//! in normalized units, then clipped to [−1, 1], so σ = 0.1 means 10% of the
//! half-range on every dimension (SB3's convention, and the daemon's).

use candle_core::{Device, Shape, Tensor};
use reflex_msgs::onnx::{INPUT_OBS, OUTPUT_ACTION};
use reflex_msgs::{Action, BoxSpace, PolicySpec};
use reflex_sim::SimRng;
use serde::{Deserialize, Serialize};

use crate::export::OnnxGraph;
use crate::replay::{
    ActionShape, Batch, BatchActions, EnvStep, NStepAccumulator, PerParams, Replay,
};
use crate::schedule::Schedule;
use crate::TrainError;

/// Maps normalized actions to an env's bounds and back.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionScaling {
    /// (high + low) / 2 per dimension.
    pub offset: Vec<f32>,
    /// (high − low) / 2 per dimension.
    pub scale: Vec<f32>,
}

impl ActionScaling {
    /// The scaling for `bounds`; every bound must be finite with low < high.
    pub fn new(bounds: &BoxSpace) -> Result<Self, TrainError> {
        let mut offset = Vec::new();
        let mut scale = Vec::new();
        for (i, (&low, &high)) in bounds.low.iter().zip(&bounds.high).enumerate() {
            if !(low.is_finite() && high.is_finite() && low < high) {
                return Err(TrainError::Config(format!(
                    "action dimension {i} has bounds [{low}, {high}]; continuous \
                     algorithms need finite bounds with low < high"
                )));
            }
            offset.push((high + low) / 2.0);
            scale.push((high - low) / 2.0);
        }
        if offset.is_empty() {
            return Err(TrainError::Config(
                "the action space has no dimensions".into(),
            ));
        }
        Ok(Self { offset, scale })
    }

    /// Action dimensions.
    pub fn dim(&self) -> usize {
        self.offset.len()
    }

    /// The env action for normalized `u` (clipped to [−1, 1] first).
    pub fn to_env(&self, u: &[f32]) -> Vec<f32> {
        u.iter()
            .zip(self.offset.iter().zip(&self.scale))
            .map(|(&u, (&o, &s))| o + s * u.clamp(-1.0, 1.0))
            .collect()
    }

    /// Normalized units for env actions `a` (row-major rows of [`dim`](Self::dim)),
    /// into `out`. Values outside the bounds map outside [−1, 1] and are clipped.
    pub fn to_normalized(&self, a: &[f32], out: &mut Vec<f32>) {
        let n = self.dim();
        out.clear();
        out.extend(a.iter().enumerate().map(|(k, &a)| {
            let i = k % n;
            ((a - self.offset[i]) / self.scale[i]).clamp(-1.0, 1.0)
        }));
    }

    /// Appends `offset + scale · u` to an ONNX graph, reading `normalized` and
    /// writing `output`.
    pub fn to_onnx(&self, g: &mut OnnxGraph, normalized: &str, output: &str) {
        let n = self.dim();
        let scale = g.constant("action_scale", &[n], self.scale.clone());
        let offset = g.constant("action_offset", &[n], self.offset.clone());
        let scaled = g.op("Mul", &[normalized, &scale], &[], None);
        g.op("Add", &[&scaled, &offset], &[], Some(output));
    }
}

/// Exploration noise families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoiseKind {
    /// Independent N(0, σ²) each step.
    Gaussian,
    /// Ornstein–Uhlenbeck: x ← x + θ(0 − x)dt + σ√dt·z, reset each episode
    /// (temporally correlated, as in the DDPG paper and SB3).
    Ou,
}

/// Exploration noise, in normalized action units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoiseConfig {
    /// Which process.
    pub kind: NoiseKind,
    /// σ over the run (annealable; constant when start = end).
    pub sigma: Schedule,
    /// OU mean-reversion rate θ.
    pub ou_theta: f64,
    /// OU time step dt.
    pub ou_dt: f64,
}

impl Default for NoiseConfig {
    fn default() -> Self {
        Self {
            kind: NoiseKind::Gaussian,
            sigma: Schedule::linear(0.1, 0.1, 1.0),
            ou_theta: 0.15,
            ou_dt: 1e-2,
        }
    }
}

/// The state of the exploration noise process.
#[derive(Debug, Clone)]
pub struct Noise {
    config: NoiseConfig,
    ou: Vec<f64>,
}

impl Noise {
    /// A process for `dim` action dimensions.
    pub fn new(config: NoiseConfig, dim: usize) -> Self {
        Self {
            config,
            ou: vec![0.0; dim],
        }
    }

    /// σ at `step` of a run of `total` steps.
    pub fn sigma(&self, step: u64, total: u64) -> f64 {
        self.config.sigma.value(step, total)
    }

    /// Starts a new episode (OU back to 0).
    pub fn reset(&mut self) {
        self.ou.iter_mut().for_each(|x| *x = 0.0);
    }

    /// Adds one noise sample with scale `sigma` to `u` and clips to [−1, 1].
    pub fn perturb(&mut self, u: &mut [f32], sigma: f64, rng: &mut SimRng) {
        let NoiseConfig {
            kind,
            ou_theta,
            ou_dt,
            ..
        } = self.config;
        for (u, x) in u.iter_mut().zip(self.ou.iter_mut()) {
            let z = rng.normal();
            let noise = match kind {
                NoiseKind::Gaussian => sigma * z,
                NoiseKind::Ou => {
                    *x += ou_theta * (0.0 - *x) * ou_dt + sigma * ou_dt.sqrt() * z;
                    *x
                }
            };
            *u = (f64::from(*u) + noise).clamp(-1.0, 1.0) as f32;
        }
    }
}

/// Running mean and variance of observations (Welford / Chan et al.), for
/// observation normalization. Frozen into the ONNX graph at export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningNorm {
    /// Observations seen.
    pub count: u64,
    /// Mean per dimension.
    pub mean: Vec<f64>,
    /// Sum of squared deviations per dimension.
    pub m2: Vec<f64>,
}

impl RunningNorm {
    /// Smallest standard deviation used (a constant dimension is not blown up).
    pub const MIN_STD: f64 = 1e-2;

    /// No observations yet (mean 0, std 1).
    pub fn new(dim: usize) -> Self {
        Self {
            count: 0,
            mean: vec![0.0; dim],
            m2: vec![0.0; dim],
        }
    }

    /// Adds one observation.
    pub fn update(&mut self, obs: &[f32]) {
        self.count += 1;
        let n = self.count as f64;
        for ((mean, m2), &x) in self.mean.iter_mut().zip(&mut self.m2).zip(obs) {
            let x = f64::from(x);
            let delta = x - *mean;
            *mean += delta / n;
            *m2 += delta * (x - *mean);
        }
    }

    /// Mean and standard deviation (population, at least [`Self::MIN_STD`]).
    pub fn mean_std(&self) -> (Vec<f32>, Vec<f32>) {
        let n = self.count.max(1) as f64;
        let std = self
            .m2
            .iter()
            .map(|m2| {
                if self.count < 2 {
                    1.0
                } else {
                    (m2 / n).sqrt().max(Self::MIN_STD) as f32
                }
            })
            .collect();
        (self.mean.iter().map(|&m| m as f32).collect(), std)
    }

    /// Normalizes row-major observations in place.
    pub fn apply(&self, obs: &mut [f32]) {
        let (mean, std) = self.mean_std();
        let d = mean.len();
        for (k, x) in obs.iter_mut().enumerate() {
            *x = (*x - mean[k % d]) / std[k % d];
        }
    }
}

/// A sampled batch as tensors, observations normalized and actions in
/// normalized units.
pub struct ContinuousBatch {
    /// `[batch, obs_dim]`.
    pub obs: Tensor,
    /// `[batch, act_dim]` in [−1, 1].
    pub actions: Tensor,
    /// `[batch]`.
    pub rewards: Tensor,
    /// `[batch, obs_dim]`.
    pub next_obs: Tensor,
    /// `[batch]`: γ^m, 0 when terminated.
    pub discounts: Tensor,
    /// `[batch]`: PER importance weights (1 when uniform).
    pub weights: Tensor,
}

impl ContinuousBatch {
    /// Tensors from `batch`, normalizing observations with `norm` (if any) and
    /// actions with `scaling`, uploaded in one copy; `scratch` and `upload`
    /// are reused between calls.
    pub fn new(
        batch: &mut Batch,
        scaling: &ActionScaling,
        norm: Option<&RunningNorm>,
        scratch: &mut Vec<f32>,
        upload: &mut Vec<f32>,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let shapes = Self::pack(batch, scaling, norm, scratch, upload)?;
        let all = Tensor::from_slice(upload, upload.len(), device)?;
        Self::from_parts(super::unpack(&all, &shapes)?)
    }

    /// The host half of [`new`](Self::new): normalizes `batch` and packs it
    /// into `upload` (observations, actions, rewards, next observations,
    /// discounts, weights). Returns the parts' shapes.
    pub(crate) fn pack(
        batch: &mut Batch,
        scaling: &ActionScaling,
        norm: Option<&RunningNorm>,
        scratch: &mut Vec<f32>,
        upload: &mut Vec<f32>,
    ) -> Result<Vec<Shape>, TrainError> {
        let b = batch.len();
        let d = batch.obs_dim();
        let BatchActions::Continuous(actions) = &batch.actions else {
            return Err(TrainError::Config(
                "continuous algorithms need continuous actions".into(),
            ));
        };
        scaling.to_normalized(actions, scratch);
        if let Some(norm) = norm {
            norm.apply(&mut batch.obs);
            norm.apply(&mut batch.next_obs);
        }
        Ok(super::pack(
            &[
                (&batch.obs, Shape::from((b, d))),
                (scratch, Shape::from((b, scaling.dim()))),
                (&batch.rewards, Shape::from(b)),
                (&batch.next_obs, Shape::from((b, d))),
                (&batch.discounts, Shape::from(b)),
                (&batch.weights, Shape::from(b)),
            ],
            upload,
        ))
    }

    /// The batch from the first six tensors of `parts`, in
    /// [`pack`](Self::pack) order (one learner's, or a population's stacked
    /// `[P, …]` ones).
    pub(crate) fn from_parts(parts: Vec<Tensor>) -> Result<Self, TrainError> {
        let mut parts = parts.into_iter();
        let mut next = || {
            parts
                .next()
                .ok_or_else(|| TrainError::Config("a continuous batch has six parts".into()))
        };
        Ok(Self {
            obs: next()?,
            actions: next()?,
            rewards: next()?,
            next_obs: next()?,
            discounts: next()?,
            weights: next()?,
        })
    }
}

/// One observation as a `[1, obs_dim]` tensor, normalized with `norm` if any.
pub fn obs_tensor(
    obs: &[f32],
    norm: Option<&RunningNorm>,
    device: &Device,
) -> Result<Tensor, TrainError> {
    let mut x = obs.to_vec();
    if let Some(norm) = norm {
        norm.apply(&mut x);
    }
    Ok(Tensor::from_vec(x, (1, obs.len()), device)?)
}

/// The ONNX file of a continuous policy: normalization from the spec, then
/// `mu` (which appends the normalized greedy action and returns its name), then
/// the scaling to the env's bounds, written to `action`.
pub fn policy_onnx(
    template: &PolicySpec,
    norm: Option<&RunningNorm>,
    scaling: &ActionScaling,
    obs_dim: usize,
    mu: impl FnOnce(&mut OnnxGraph, &str) -> candle_core::Result<String>,
) -> Result<Vec<u8>, TrainError> {
    let mut spec = template.clone();
    if let Some(norm) = norm {
        (spec.obs_mean, spec.obs_std) = norm.mean_std();
    }
    spec.validate()
        .map_err(|e| TrainError::Export(format!("policy spec: {e}")))?;
    if spec.observation_space.dim() != obs_dim || spec.action_space.dim() != scaling.dim() {
        return Err(TrainError::Export(format!(
            "network is {obs_dim}→{}, spec says {}→{}",
            scaling.dim(),
            spec.observation_space.dim(),
            spec.action_space.dim()
        )));
    }
    let mut g = OnnxGraph::new();
    let x = crate::export::normalized_obs(&mut g, &spec);
    let u = mu(&mut g, &x)?;
    scaling.to_onnx(&mut g, &u, OUTPUT_ACTION);
    g.finish(
        &[(INPUT_OBS, obs_dim)],
        &[(OUTPUT_ACTION, scaling.dim())],
        &spec,
    )
}

/// `n` draws of N(0, σ²) clipped to ±`clip` as a `[rows, cols]` tensor (TD3's
/// target policy smoothing), from the run's seeded generator.
pub fn clipped_normal(
    rows: usize,
    cols: usize,
    sigma: f64,
    clip: f64,
    rng: &mut SimRng,
    device: &Device,
) -> Result<Tensor, TrainError> {
    let mut values = Vec::with_capacity(rows * cols);
    push_clipped_normal(rows * cols, sigma, clip, rng, &mut values);
    Ok(Tensor::from_vec(values, (rows, cols), device)?)
}

/// [`clipped_normal`]'s `n` draws, on the host, appended to `out`.
pub(crate) fn push_clipped_normal(
    n: usize,
    sigma: f64,
    clip: f64,
    rng: &mut SimRng,
    out: &mut Vec<f32>,
) {
    out.extend((0..n).map(|_| (sigma * rng.normal()).clamp(-clip, clip) as f32));
}

/// Replay and acting settings every continuous algorithm has.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreConfig {
    /// Discount factor γ.
    pub gamma: f64,
    /// Replay capacity.
    pub buffer_size: usize,
    /// Transitions per update.
    pub batch_size: usize,
    /// Env steps of uniformly random actions before the first update.
    pub learning_starts: u64,
    /// Env steps between training rounds.
    pub train_freq: u64,
    /// Updates per training round.
    pub gradient_steps: u64,
    /// n-step returns.
    pub n_step: usize,
    /// Prioritized replay (α, ε) when on.
    pub per: Option<PerParams>,
    /// PER's initial β (annealed to 1 over the run).
    pub per_beta0: f64,
    /// Normalize observations with running statistics.
    pub obs_norm: bool,
    /// Exploration noise.
    pub noise: NoiseConfig,
}

/// What DDPG, TD3 and NAF hold besides their networks: replay, the n-step
/// accumulator, generators, noise, normalization and the action scaling.
pub struct Core {
    /// Settings.
    pub config: CoreConfig,
    /// Replay storage (env actions).
    pub replay: Replay,
    /// Turns env steps into (n-step) transitions.
    pub nstep: NStepAccumulator,
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
    batch: Batch,
    scratch: Vec<f32>,
    /// Reused host buffer of the packed batch upload.
    upload: Vec<f32>,
}

impl Core {
    /// A fresh core for an env with `obs_dim` observations and action `bounds`.
    pub fn new(
        config: CoreConfig,
        obs_dim: usize,
        bounds: &BoxSpace,
        seed: u64,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let scaling = ActionScaling::new(bounds)?;
        let shape = ActionShape::Continuous { dim: scaling.dim() };
        if config.batch_size == 0 || config.train_freq == 0 {
            return Err(TrainError::Config(
                "batch_size and train_freq must be at least 1".into(),
            ));
        }
        Ok(Self {
            replay: Replay::new(config.buffer_size, obs_dim, shape, config.per)?,
            nstep: NStepAccumulator::new(config.n_step, config.gamma as f32, obs_dim, shape, 1)?,
            steps_done: 0,
            act_rng: SimRng::seed(seed.wrapping_add(1)),
            replay_rng: SimRng::seed(seed.wrapping_add(2)),
            norm: config.obs_norm.then(|| RunningNorm::new(obs_dim)),
            noise: Noise::new(config.noise.clone(), scaling.dim()),
            device: device.clone(),
            obs_dim,
            batch: Batch::default(),
            scratch: Vec::new(),
            upload: Vec::new(),
            scaling,
            config,
        })
    }

    /// Observation length.
    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    /// One observation as a normalized `[1, obs_dim]` tensor.
    pub fn obs_tensor(&self, obs: &[f32]) -> Result<Tensor, TrainError> {
        obs_tensor(obs, self.norm.as_ref(), &self.device)
    }

    /// The env action for the normalized greedy action `mu` `[1, act_dim]`.
    pub fn env_action(&self, mu: &Tensor) -> Result<Action, TrainError> {
        Ok(Action::Continuous(
            self.scaling.to_env(&mu.flatten_all()?.to_vec1::<f32>()?),
        ))
    }

    /// The training action at `step` (1-based): uniformly random before
    /// `learning_starts` (as SB3), then `greedy` (the normalized μ(s), computed
    /// only when needed) plus noise.
    pub fn explore(
        &mut self,
        step: u64,
        total: u64,
        greedy: impl FnOnce(&Self) -> Result<Tensor, TrainError>,
    ) -> Result<Action, TrainError> {
        let u = if step <= self.config.learning_starts {
            (0..self.scaling.dim())
                .map(|_| self.act_rng.uniform(-1.0, 1.0) as f32)
                .collect()
        } else {
            let mut u = greedy(self)?.flatten_all()?.to_vec1::<f32>()?;
            let sigma = self.noise.sigma(step - 1, total);
            self.noise.perturb(&mut u, sigma, &mut self.act_rng);
            u
        };
        Ok(Action::Continuous(self.scaling.to_env(&u)))
    }

    /// Stores one env step (and updates the observation statistics).
    pub fn observe(&mut self, step: &EnvStep<'_>) -> Result<(), TrainError> {
        if let Some(norm) = &mut self.norm {
            norm.update(step.obs);
        }
        self.nstep.push(0, step, &mut self.replay)?;
        Ok(())
    }

    /// Updates due after env step `step`: `gradient_steps` every `train_freq`
    /// steps once past `learning_starts`.
    pub fn updates_due(&self, step: u64) -> u64 {
        let c = &self.config;
        if step > c.learning_starts && step.is_multiple_of(c.train_freq) && !self.replay.is_empty()
        {
            c.gradient_steps
        } else {
            0
        }
    }

    /// PER's β at `step` of `total`.
    pub fn beta(&self, step: u64, total: u64) -> f64 {
        let b0 = self.config.per_beta0;
        (b0 + (1.0 - b0) * step as f64 / total.max(1) as f64).min(1.0)
    }

    /// Samples a batch as tensors.
    pub fn sample(&mut self, beta: f64) -> Result<ContinuousBatch, TrainError> {
        self.replay.sample_into(
            self.config.batch_size,
            beta,
            &mut self.replay_rng,
            &mut self.batch,
        )?;
        ContinuousBatch::new(
            &mut self.batch,
            &self.scaling,
            self.norm.as_ref(),
            &mut self.scratch,
            &mut self.upload,
            &self.device,
        )
    }

    /// Samples a batch into one host buffer, [`packed`](Self::packed): the
    /// host half of [`sample`](Self::sample), for a
    /// [population](super::population_ac) that uploads its members' batches
    /// together. With `smoothing` (TD3's σ̃ and clip) a seventh part follows,
    /// the target smoothing noise shaped as the actions, drawn after the
    /// sample from the replay generator as [`super::ddpg::Ddpg::update`]
    /// draws it. Returns the parts' shapes.
    pub(crate) fn sample_packed(
        &mut self,
        beta: f64,
        smoothing: Option<(f64, f64)>,
    ) -> Result<Vec<Shape>, TrainError> {
        self.replay.sample_into(
            self.config.batch_size,
            beta,
            &mut self.replay_rng,
            &mut self.batch,
        )?;
        let mut shapes = ContinuousBatch::pack(
            &mut self.batch,
            &self.scaling,
            self.norm.as_ref(),
            &mut self.scratch,
            &mut self.upload,
        )?;
        if let Some((sigma, clip)) = smoothing {
            let actions = shapes[1].clone();
            let n = actions.elem_count();
            push_clipped_normal(n, sigma, clip, &mut self.replay_rng, &mut self.upload);
            shapes.push(actions);
        }
        Ok(shapes)
    }

    /// The buffer [`sample_packed`](Self::sample_packed) filled.
    pub(crate) fn packed(&self) -> &[f32] {
        &self.upload
    }

    /// New priorities for the last sampled batch (prioritized replay only).
    pub fn update_priorities(&mut self, td_error: &Tensor) -> Result<(), TrainError> {
        if let Replay::Prioritized(_) = self.replay {
            let td = td_error.to_vec1::<f32>()?;
            self.set_priorities(&td)?;
        }
        Ok(())
    }

    /// [`update_priorities`](Self::update_priorities) from host values.
    pub(crate) fn set_priorities(&mut self, td_error: &[f32]) -> Result<(), TrainError> {
        if let Replay::Prioritized(_) = self.replay {
            self.replay
                .update_priorities(&self.batch.indices, td_error)?;
        }
        Ok(())
    }

    /// The acting network as ONNX (see [`policy_onnx`]).
    pub fn to_onnx(
        &self,
        template: &PolicySpec,
        mu: impl FnOnce(&mut OnnxGraph, &str) -> candle_core::Result<String>,
    ) -> Result<Vec<u8>, TrainError> {
        policy_onnx(
            template,
            self.norm.as_ref(),
            &self.scaling,
            self.obs_dim,
            mu,
        )
    }
}

/// The [`CoreConfig`] of an algorithm's config, which has fields of the same
/// names (`gamma`, `buffer_size`, …, `prioritized`, `per_*`, `obs_norm`, `noise`).
macro_rules! core_config {
    ($c:expr) => {
        $crate::algo::continuous::CoreConfig {
            gamma: $c.gamma,
            buffer_size: $c.buffer_size,
            batch_size: $c.batch_size,
            learning_starts: $c.learning_starts,
            train_freq: $c.train_freq,
            gradient_steps: $c.gradient_steps,
            n_step: $c.n_step,
            per: $c.prioritized.then_some($crate::replay::PerParams {
                alpha: $c.per_alpha,
                eps: $c.per_eps,
            }),
            per_beta0: $c.per_beta0,
            obs_norm: $c.obs_norm,
            noise: $c.noise.clone(),
        }
    };
}
pub(crate) use core_config;

/// The [`Agent`](super::Agent) methods a continuous agent answers from its
/// `core: Core` field and its `update(beta)` method (written once here rather
/// than in every algorithm).
macro_rules! forward_to_core {
    () => {
        fn train_after(
            &mut self,
            step: u64,
            total: u64,
        ) -> Result<Option<super::UpdateStats>, TrainError> {
            let due = self.core.updates_due(step);
            if due == 0 {
                return Ok(None);
            }
            let beta = self.core.beta(step, total);
            // Each eager update runs inside candle's CPU thread pool itself.
            let mut last = None;
            for _ in 0..due {
                last = Some(super::Checked::checked(self.update(beta)?, step)?);
            }
            Ok(Some(last.expect("at least one update")))
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

        fn observe(&mut self, step: &crate::replay::EnvStep<'_>) -> Result<(), TrainError> {
            self.core.observe(step)
        }

        fn episode_start(&mut self) {
            self.core.noise.reset();
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
pub(crate) use forward_to_core;

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(low: &[f32], high: &[f32]) -> BoxSpace {
        BoxSpace {
            low: low.to_vec(),
            high: high.to_vec(),
        }
    }

    #[test]
    fn actions_stay_in_bounds_whatever_the_network_says() {
        let scaling = ActionScaling::new(&bounds(&[-2.0, 0.0], &[2.0, 1.0])).unwrap();
        assert_eq!(scaling.to_env(&[0.0, 0.0]), vec![0.0, 0.5]);
        assert_eq!(scaling.to_env(&[1.0, -1.0]), vec![2.0, 0.0]);
        // Out-of-range outputs (an untrained net, noise) are clipped to the bounds.
        assert_eq!(scaling.to_env(&[7.5, -3.0]), vec![2.0, 0.0]);
        assert_eq!(scaling.to_env(&[f32::INFINITY, 0.5]), vec![2.0, 0.75]);
        let mut u = Vec::new();
        scaling.to_normalized(&[2.0, 0.25, -2.0, 5.0], &mut u);
        assert_eq!(u, vec![1.0, -0.5, -1.0, 1.0]);
        // Noise never pushes a normalized action out of [-1, 1].
        let mut noise = Noise::new(
            NoiseConfig {
                sigma: Schedule::linear(5.0, 5.0, 1.0),
                ..NoiseConfig::default()
            },
            2,
        );
        let mut rng = SimRng::seed(3);
        for _ in 0..1000 {
            let mut u = [0.9f32, -0.9];
            noise.perturb(&mut u, 5.0, &mut rng);
            assert!(u.iter().all(|v| (-1.0..=1.0).contains(v)), "{u:?}");
        }
        assert!(ActionScaling::new(&bounds(&[f32::NEG_INFINITY], &[1.0])).is_err());
        assert!(ActionScaling::new(&bounds(&[1.0], &[1.0])).is_err());
    }

    #[test]
    fn ou_noise_has_the_stationary_statistics_of_its_sde() {
        // x ← x − θ x dt + σ √dt z has stationary variance σ² dt / (1 − (1 − θ dt)²)
        // ≈ σ²/(2θ), lag-1 autocorrelation 1 − θ dt and mean 0.
        let (theta, dt, sigma) = (0.15, 0.5, 0.2);
        let mut noise = Noise::new(
            NoiseConfig {
                kind: NoiseKind::Ou,
                ou_theta: theta,
                ou_dt: dt,
                ..NoiseConfig::default()
            },
            1,
        );
        let mut rng = SimRng::seed(7);
        let mut xs = Vec::new();
        for _ in 0..1000 {
            let mut u = [0.0f32];
            noise.perturb(&mut u, sigma, &mut rng);
        }
        for _ in 0..200_000 {
            let mut u = [0.0f32];
            noise.perturb(&mut u, sigma, &mut rng);
            xs.push(noise.ou[0]);
        }
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        let lag1 = xs
            .windows(2)
            .map(|w| (w[0] - mean) * (w[1] - mean))
            .sum::<f64>()
            / (n - 1.0)
            / var;
        let decay = 1.0 - theta * dt;
        let expected_var = sigma * sigma * dt / (1.0 - decay * decay);
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!(
            (var / expected_var - 1.0).abs() < 0.08,
            "var {var} vs {expected_var}"
        );
        assert!((lag1 - decay).abs() < 0.01, "lag-1 {lag1} vs {decay}");
        noise.reset();
        assert_eq!(noise.ou, vec![0.0]);

        // Gaussian noise: mean 0, std σ, uncorrelated.
        let mut gauss = Noise::new(NoiseConfig::default(), 1);
        let samples: Vec<f64> = (0..100_000)
            .map(|_| {
                let mut u = [0.0f32];
                gauss.perturb(&mut u, 0.1, &mut rng);
                f64::from(u[0])
            })
            .collect();
        let m = samples.iter().sum::<f64>() / samples.len() as f64;
        let s =
            (samples.iter().map(|x| (x - m).powi(2)).sum::<f64>() / samples.len() as f64).sqrt();
        assert!(m.abs() < 2e-3 && (s - 0.1).abs() < 2e-3, "{m} {s}");
    }

    #[test]
    fn running_norm_matches_the_batch_statistics() {
        let mut norm = RunningNorm::new(2);
        let data = [[1.0f32, 10.0], [2.0, 10.0], [3.0, 10.0], [6.0, 10.0]];
        for row in &data {
            norm.update(row);
        }
        let (mean, std) = norm.mean_std();
        assert_eq!(mean, vec![3.0, 10.0]);
        assert!((std[0] - 3.5f32.sqrt()).abs() < 1e-6, "{std:?}");
        assert_eq!(std[1], RunningNorm::MIN_STD as f32, "constant dimension");
        let mut x = [3.0f32, 10.0];
        norm.apply(&mut x);
        assert_eq!(x, [0.0, 0.0]);
    }
}
