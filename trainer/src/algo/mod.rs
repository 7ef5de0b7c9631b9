//! Learning algorithms, one file each, behind one [`Agent`] interface so the
//! training loop, evaluation, checkpoints, export and the CLI are shared:
//!
//! - [`dqn`]: DQN for discrete actions (Double, Twin, dueling, PER, n-step);
//! - [`drqn`]: recurrent DQN (LSTM, sequence replay with burn-in and stored
//!   state) for partially observed envs;
//! - [`ddpg`]: DDPG and TD3 for continuous actions (TD3 = DDPG with clipped
//!   double Q, delayed actor updates and target policy smoothing);
//! - [`recurrent_ddpg`], [`recurrent_naf`]: recurrent DDPG, TD3 and NAF
//!   (`recurrent = true`): an LSTM in front of every network, trained on
//!   sequence replay; [`recurrent`] is what they share;
//! - [`naf`]: normalized advantage functions for continuous actions;
//! - [`population`]: P DQN learners (seeds) trained in lockstep on stacked
//!   networks, one batched update for all;
//! - [`continuous`]: what the continuous ones share (action scaling,
//!   Gaussian/Ornstein–Uhlenbeck noise, observation normalization).

pub mod continuous;
pub mod ddpg;
pub mod dqn;
pub mod drqn;
pub mod naf;
pub mod population;
pub mod population_ac;
pub mod population_drqn;
pub mod recurrent;
pub mod recurrent_ddpg;
pub mod recurrent_naf;

use candle_core::Device;
use reflex_msgs::{Action, ActionSpace, PolicySpec};
use reflex_sim::{Env, SimRng};

use crate::nn::Params;
use crate::optim::Adam;
use crate::replay::{EnvStep, Replay};
use crate::run::RunConfig;
use crate::TrainError;

pub use continuous::RunningNorm;

/// What one gradient update reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateStats {
    /// The minimized (critic's) loss.
    pub loss: f32,
    /// Mean Q(s, a) of the batch (first head or critic).
    pub q_mean: f32,
    /// Global gradient norm (critic's) before clipping.
    pub grad_norm: f64,
}

impl UpdateStats {
    /// These stats, or [`TrainError::Diverged`] if the loss or the gradient
    /// norm is NaN or infinite.
    ///
    /// A non-finite gradient makes the weights NaN in this very update (the clip
    /// scale times an infinite gradient, or Adam's inf/inf), a non-finite loss
    /// shows they already are, and they stay so: everything saved after would
    /// be garbage, so training stops there. `when` says where, e.g. `"step
    /// 1200"`. Both are read back for the stats anyway, so the check costs no
    /// synchronisation.
    pub fn finite(self, when: impl FnOnce() -> String) -> Result<Self, TrainError> {
        if self.loss.is_finite() && self.grad_norm.is_finite() {
            Ok(self)
        } else {
            Err(TrainError::Diverged {
                when: when(),
                loss: self.loss,
                grad_norm: self.grad_norm,
            })
        }
    }
}

/// What one update returns, checked for divergence after every update of a
/// round ([`UpdateStats::finite`]): a learner's stats, or a population's, one
/// per member.
pub(crate) trait Checked: Sized {
    /// `self`, or [`TrainError::Diverged`] naming env step `step`.
    fn checked(self, step: u64) -> Result<Self, TrainError>;
}

impl Checked for UpdateStats {
    fn checked(self, step: u64) -> Result<Self, TrainError> {
        self.finite(|| format!("step {step}"))
    }
}

impl Checked for Vec<UpdateStats> {
    fn checked(self, step: u64) -> Result<Self, TrainError> {
        for (k, stats) in self.iter().enumerate() {
            stats.finite(|| format!("member {k}, step {step}"))?;
        }
        Ok(self)
    }
}

/// `Ok` if every weight of `agent`'s networks is finite, else
/// [`TrainError::NonFiniteWeights`] naming the first bad tensor. Checkpoints,
/// exports and published policies call it: NaN weights saved or sent to robots
/// would poison a resume and drive robots on the safe action.
pub fn check_weights(agent: &dyn Agent, when: &str) -> Result<(), TrainError> {
    for (prefix, net) in agent.networks() {
        for (name, var) in net.named_vars() {
            let values = var
                .as_tensor()
                .flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?;
            if values.iter().any(|v| !v.is_finite()) {
                return Err(TrainError::NonFiniteWeights {
                    tensor: format!("{prefix}.{name}"),
                    when: when.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// An optimizer as a checkpoint sees it: its parameters' names (with `prefix`
/// in front) and the Adam state.
pub struct OptimizerSlot<'a> {
    /// Put before each parameter name (`""` for DQN's single optimizer).
    pub prefix: &'static str,
    /// The optimizer.
    pub adam: &'a mut Adam,
    /// The network it updates.
    pub params: &'a dyn Params,
}

/// A learner the shared training loop, checkpoints, export and CLI can drive.
pub trait Agent {
    /// The algorithm's name as configs spell it (`dqn`, `ddpg`, `td3`, `naf`).
    fn algo(&self) -> &'static str;

    /// Env steps taken so far (what a resumed run continues from).
    fn steps_done(&self) -> u64;

    /// Sets the env steps taken (the loop counts; checkpoints restore).
    fn set_steps_done(&mut self, steps: u64);

    /// The action to take while training at env step `step` (1-based) of `total`.
    fn explore(&mut self, obs: &[f32], step: u64, total: u64) -> Result<Action, TrainError>;

    /// The exploration parameter at `step` of `total` (ε, or the noise σ), for
    /// progress and metrics.
    fn exploration(&self, step: u64, total: u64) -> f64;

    /// The greedy action for one observation (a recurrent agent advances its
    /// evaluation state, which [`greedy_reset`](Self::greedy_reset) zeroes).
    fn greedy(&self, obs: &[f32]) -> Result<Action, TrainError>;

    /// A greedy episode starts: recurrent agents zero their evaluation state.
    fn greedy_reset(&self) {}

    /// Stores one env step (through the n-step accumulator).
    fn observe(&mut self, step: &EnvStep<'_>) -> Result<(), TrainError>;

    /// A new episode starts (resets temporally correlated noise).
    fn episode_start(&mut self) {}

    /// The gradient updates (and target updates) due after env step `step` of
    /// `total`; the last update's stats if there was one.
    fn train_after(&mut self, step: u64, total: u64) -> Result<Option<UpdateStats>, TrainError>;

    /// Gradient updates so far: an exported policy's `training_step`.
    fn updates(&self) -> u64;

    /// Networks by checkpoint prefix; the first one is the one that acts.
    fn networks(&self) -> Vec<(&'static str, &dyn Params)>;

    /// Optimizers with the networks they update.
    fn optimizers(&mut self) -> Vec<OptimizerSlot<'_>>;

    /// Replay storage.
    fn replay(&self) -> &Replay;

    /// Replay storage, to restore.
    fn replay_mut(&mut self) -> &mut Replay;

    /// The exploration and replay-sampling generators.
    fn rngs(&mut self) -> (&mut SimRng, &mut SimRng);

    /// The running observation statistics, when the agent normalizes.
    fn obs_norm(&mut self) -> Option<&mut RunningNorm> {
        None
    }

    /// The acting network as ONNX, for `template` (its `obs_mean`/`obs_std` are
    /// filled in here from the normalizer).
    fn to_onnx(&self, template: &PolicySpec) -> Result<Vec<u8>, TrainError>;
}

/// The [`Agent`] methods of a learner with one trained network `online`, its
/// copy `target` and one `optimizer` (DQN, DRQN, NAF and recurrent NAF):
/// `updates`, `networks` and `optimizers`, so their checkpoints name the
/// parameters alike.
macro_rules! online_target_slots {
    () => {
        fn updates(&self) -> u64 {
            self.optimizer.steps()
        }

        fn networks(&self) -> Vec<(&'static str, &dyn crate::nn::Params)> {
            vec![("online", &self.online), ("target", &self.target)]
        }

        fn optimizers(&mut self) -> Vec<crate::algo::OptimizerSlot<'_>> {
            vec![crate::algo::OptimizerSlot {
                prefix: "",
                adam: &mut self.optimizer,
                params: &self.online,
            }]
        }
    };
}
pub(crate) use online_target_slots;

/// The same for an actor-critic learner (DDPG/TD3, feed-forward or recurrent):
/// `actor`, `critics`, their targets and optimizers; an update is a critic
/// update.
macro_rules! actor_critic_slots {
    () => {
        fn updates(&self) -> u64 {
            self.critic_optimizer.steps()
        }

        fn networks(&self) -> Vec<(&'static str, &dyn crate::nn::Params)> {
            vec![
                ("actor", &self.actor),
                ("critic", &self.critics),
                ("actor_target", &self.actor_target),
                ("critic_target", &self.critic_targets),
            ]
        }

        fn optimizers(&mut self) -> Vec<crate::algo::OptimizerSlot<'_>> {
            vec![
                crate::algo::OptimizerSlot {
                    prefix: "actor.",
                    adam: &mut self.actor_optimizer,
                    params: &self.actor,
                },
                crate::algo::OptimizerSlot {
                    prefix: "critic.",
                    adam: &mut self.critic_optimizer,
                    params: &self.critics,
                },
            ]
        }
    };
}
pub(crate) use actor_critic_slots;

/// Uploads several host arrays in one host-to-device copy: their concatenation
/// (assembled in `scratch`) goes up as one buffer, and each comes back as a
/// view of it with its shape. On a GPU every copy is a blocking transfer with
/// its own fixed cost, so a batch of six arrays pays it once instead of six
/// times.
pub(crate) fn upload_packed(
    parts: &[(&[f32], candle_core::Shape)],
    scratch: &mut Vec<f32>,
    device: &Device,
) -> candle_core::Result<Vec<candle_core::Tensor>> {
    let shapes = pack(parts, scratch);
    let all = candle_core::Tensor::from_slice(scratch, scratch.len(), device)?;
    unpack(&all, &shapes)
}

/// The host half of [`upload_packed`]: concatenates `parts` into `scratch`
/// and returns their shapes.
pub(crate) fn pack(
    parts: &[(&[f32], candle_core::Shape)],
    scratch: &mut Vec<f32>,
) -> Vec<candle_core::Shape> {
    scratch.clear();
    for (data, shape) in parts {
        debug_assert_eq!(data.len(), shape.elem_count());
        scratch.extend_from_slice(data);
    }
    parts.iter().map(|(_, shape)| shape.clone()).collect()
}

/// The device half of [`upload_packed`]: consecutive views of the 1-D `all`,
/// one per shape.
pub(crate) fn unpack(
    all: &candle_core::Tensor,
    shapes: &[candle_core::Shape],
) -> candle_core::Result<Vec<candle_core::Tensor>> {
    let mut start = 0;
    shapes
        .iter()
        .map(|shape| {
            let n = shape.elem_count();
            let part = all.narrow(0, start, n)?.reshape(shape)?;
            start += n;
            Ok(part)
        })
        .collect()
}

/// A fresh learner for `config`'s algorithm and `env`'s spaces.
pub fn build(
    config: &RunConfig,
    env: &dyn Env,
    device: &Device,
) -> Result<Box<dyn Agent>, TrainError> {
    let obs_dim = env.observation_space().dim();
    let space = env.action_space();
    let wrong = |needs: &str| {
        TrainError::Config(format!(
            "{} needs {needs} actions; {} has {}",
            config.algo,
            config.env,
            match space {
                ActionSpace::Discrete { .. } => "discrete ones",
                ActionSpace::Box(_) => "continuous ones",
            }
        ))
    };
    // TD3 is DDPG with its own table of settings.
    let ddpg_config = if config.algo == "td3" {
        &config.td3
    } else {
        &config.ddpg
    };
    Ok(match (config.algo.as_str(), space) {
        ("dqn", ActionSpace::Discrete { n }) => Box::new(dqn::Dqn::new(
            config.dqn.clone(),
            obs_dim,
            *n as usize,
            config.seed,
            device,
        )?),
        ("drqn", ActionSpace::Discrete { n }) => Box::new(drqn::Drqn::new(
            config.drqn.clone(),
            obs_dim,
            *n as usize,
            config.seed,
            device,
        )?),
        ("ddpg" | "td3", ActionSpace::Box(bounds)) if config.recurrent => {
            Box::new(recurrent_ddpg::RecurrentDdpg::new(
                ddpg_config.clone(),
                config.lstm.clone(),
                config.algo == "td3",
                obs_dim,
                bounds,
                config.seed,
                device,
            )?)
        }
        ("ddpg" | "td3", ActionSpace::Box(bounds)) => Box::new(ddpg::Ddpg::new(
            ddpg_config.clone(),
            config.algo == "td3",
            obs_dim,
            bounds,
            config.seed,
            device,
        )?),
        ("naf", ActionSpace::Box(bounds)) if config.recurrent => {
            Box::new(recurrent_naf::RecurrentNaf::new(
                config.naf.clone(),
                config.lstm.clone(),
                obs_dim,
                bounds,
                config.seed,
                device,
            )?)
        }
        ("naf", ActionSpace::Box(bounds)) => Box::new(naf::Naf::new(
            config.naf.clone(),
            obs_dim,
            bounds,
            config.seed,
            device,
        )?),
        ("dqn" | "drqn", _) => return Err(wrong("discrete")),
        ("ddpg" | "td3" | "naf", _) => return Err(wrong("continuous")),
        (other, _) => {
            return Err(TrainError::Config(format!(
                "unknown algo `{other}` (known: {})",
                crate::run::ALGOS.join(", ")
            )))
        }
    })
}

/// The numbers of a value-based learner's update schedule ([`scheduled`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rounds {
    pub learning_rate: f64,
    pub learning_rate_end: Option<f64>,
    pub learning_starts: u64,
    pub train_freq: u64,
    pub gradient_steps: u64,
    pub per_beta0: f64,
    pub target_update_interval: u64,
}

/// `rounds()` for a config struct with the schedule's fields under
/// [`Rounds`]'s names (DQN's and DRQN's).
macro_rules! schedule_rounds {
    ($config:ty) => {
        impl $config {
            /// The update schedule's numbers.
            pub(crate) fn rounds(&self) -> $crate::algo::Rounds {
                $crate::algo::Rounds {
                    learning_rate: self.learning_rate,
                    learning_rate_end: self.learning_rate_end,
                    learning_starts: self.learning_starts,
                    train_freq: self.train_freq,
                    gradient_steps: self.gradient_steps,
                    per_beta0: self.per_beta0,
                    target_update_interval: self.target_update_interval,
                }
            }
        }
    };
}
pub(crate) use schedule_rounds;

/// What a value-based schedule ([`scheduled`]) drives: a DQN or DRQN
/// learner, or a [population](population) of them in lockstep.
pub(crate) trait Scheduled {
    /// What one update reports.
    type Stats: Checked;
    /// The schedule's numbers.
    fn rounds(&self) -> Rounds;
    /// Sets the optimizer's learning rate.
    fn set_learning_rate(&mut self, lr: f64);
    /// Whether replay holds anything to sample.
    fn has_data(&self) -> bool;
    /// One gradient update with PER exponent `beta`.
    fn update_once(&mut self, beta: f64) -> Result<Self::Stats, TrainError>;
    /// Moves the target network(s).
    fn move_target(&self) -> Result<(), TrainError>;
}

/// The schedule after env step `step` of `total`: the learning rate for the
/// step, a round of `gradient_steps` updates every `train_freq` steps once
/// past `learning_starts` (while replay has data), and the target every
/// `target_update_interval` steps. Returns the round's last stats.
pub(crate) fn scheduled<L: Scheduled>(
    learner: &mut L,
    step: u64,
    total: u64,
) -> Result<Option<L::Stats>, TrainError> {
    let r = learner.rounds();
    learner.set_learning_rate(learning_rate_at(
        r.learning_rate,
        r.learning_rate_end,
        step,
        total,
    ));
    let last = if learner.has_data() {
        let (starts, freq, steps) = (r.learning_starts, r.train_freq, r.gradient_steps);
        update_round(step, total, starts, freq, steps, r.per_beta0, |beta| {
            learner.update_once(beta)
        })?
    } else {
        None
    };
    if step.is_multiple_of(r.target_update_interval) {
        learner.move_target()?;
    }
    Ok(last)
}

/// The value-based learners' update schedule (DQN, DRQN): a round of
/// `gradient_steps` calls of `update(β)` every `train_freq` steps once past
/// `learning_starts`, with PER's β annealed linearly from `per_beta0` to 1 over
/// the run. Returns the last update's stats; stops at the first update that
/// diverged ([`Checked`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn update_round<T: Checked>(
    step: u64,
    total: u64,
    learning_starts: u64,
    train_freq: u64,
    gradient_steps: u64,
    per_beta0: f64,
    mut update: impl FnMut(f64) -> Result<T, TrainError>,
) -> Result<Option<T>, TrainError> {
    let mut last = None;
    if step > learning_starts && step.is_multiple_of(train_freq) {
        let beta = per_beta0 + (1.0 - per_beta0) * (step as f64 / total.max(1) as f64);
        for _ in 0..gradient_steps {
            last = Some(update(beta.min(1.0))?.checked(step)?);
        }
    }
    Ok(last)
}

/// Checks an optional `learning_rate_end` (`what` names it in the error).
pub(crate) fn check_learning_rate_end(end: Option<f64>, what: &str) -> Result<(), TrainError> {
    match end {
        Some(end) if !(end.is_finite() && end >= 0.0) => Err(TrainError::Config(format!(
            "{what} = {end} must be a finite value ≥ 0"
        ))),
        _ => Ok(()),
    }
}

/// The learning rate at `step` of `total`: `start` throughout, or falling
/// linearly from `start` to `end` over the run when an end is set (Q-learning's
/// greedy policy keeps oscillating around a solved one at a constant rate; a
/// decaying rate lets it settle).
pub(crate) fn learning_rate_at(start: f64, end: Option<f64>, step: u64, total: u64) -> f64 {
    match end {
        Some(end) => {
            let progress = (step as f64 / total.max(1) as f64).min(1.0);
            start + (end - start) * progress
        }
        None => start,
    }
}

/// Per-step numbers the training loop reports to its observer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Env steps taken.
    pub step: u64,
    /// Current exploration parameter (ε, or the noise σ).
    pub exploration: f64,
    /// Stats of the latest update, if any.
    pub last_update: Option<UpdateStats>,
}

/// Receives what the training loop does, for progress bars and metrics.
pub trait Observer {
    /// An episode ended at `step` with this return and length.
    fn episode(&mut self, progress: &Progress, episode_return: f64, length: u32);
    /// A training round finished.
    fn trained(&mut self, _progress: &Progress) {}
    /// Called every `periodic_every` steps with the learner (for evaluations and
    /// checkpoints).
    fn periodic(&mut self, _progress: &Progress, _agent: &mut dyn Agent) -> Result<(), TrainError> {
        Ok(())
    }
    /// Whether training should stop after the current step (e.g. on Ctrl-C);
    /// checked once a step, so keep it cheap.
    fn interrupted(&self) -> bool {
        false
    }
}

/// Trains until `total_steps` env steps have been taken on `env`, continuing
/// from `agent.steps_done()` (0 for a fresh learner), and calls
/// `observer.periodic` every `periodic_every` steps (never when 0). A fresh run's
/// first episode uses `seed`; a resumed run starts a new episode seeded by
/// `seed + steps_done`. Returns early, after a whole step, once
/// `observer.interrupted()`.
pub fn train(
    agent: &mut dyn Agent,
    env: &mut dyn Env,
    total_steps: u64,
    seed: u64,
    periodic_every: u64,
    observer: &mut dyn Observer,
) -> Result<(), TrainError> {
    let mut obs = env
        .reset(Some(seed.wrapping_add(agent.steps_done())))
        .to_vec();
    agent.episode_start();
    let mut next_obs = vec![0.0; obs.len()];
    let (mut episode_return, mut length) = (0.0, 0u32);
    let mut last_update = None;
    while agent.steps_done() < total_steps {
        let step = agent.steps_done() + 1;
        agent.set_steps_done(step);
        let exploration = agent.exploration(step - 1, total_steps);
        let action = agent.explore(&obs, step, total_steps)?;
        let result = env.step(&action)?;
        next_obs.copy_from_slice(env.obs());
        agent.observe(&EnvStep::new(&obs, &action, &result, &next_obs))?;
        episode_return += result.reward;
        length += 1;
        let progress = |last_update| Progress {
            step,
            exploration,
            last_update,
        };
        if result.done() {
            observer.episode(&progress(last_update), episode_return, length);
            (episode_return, length) = (0.0, 0);
            obs.copy_from_slice(env.reset(None));
            agent.episode_start();
        } else {
            obs.copy_from_slice(&next_obs);
        }
        if let Some(stats) = agent.train_after(step, total_steps)? {
            last_update = Some(stats);
            observer.trained(&progress(last_update));
        }
        if periodic_every > 0 && step.is_multiple_of(periodic_every) {
            observer.periodic(&progress(last_update), agent)?;
        }
        if observer.interrupted() {
            break;
        }
    }
    Ok(())
}

/// Mean and standard deviation of the return of `episodes` greedy episodes,
/// episode k seeded with `seed + k`.
pub fn evaluate(
    agent: &dyn Agent,
    env: &mut dyn Env,
    episodes: u32,
    seed: u64,
) -> Result<(f64, f64), TrainError> {
    let mut returns = Vec::new();
    for k in 0..episodes {
        let mut obs = env.reset(Some(seed + u64::from(k))).to_vec();
        agent.greedy_reset();
        let mut total = 0.0;
        loop {
            let step = env.step(&agent.greedy(&obs)?)?;
            total += step.reward;
            if step.done() {
                break;
            }
            obs.copy_from_slice(env.obs());
        }
        returns.push(total);
    }
    Ok(crate::eval::mean_std(&returns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_upload_gives_back_every_part_with_its_shape() {
        let (a, b, c) = ([1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [7.0f32], [8.0f32, 9.0]);
        let mut scratch = vec![42.0; 3];
        let parts = upload_packed(
            &[
                (&a, candle_core::Shape::from((2, 3))),
                (&b, candle_core::Shape::from(())),
                (&c, candle_core::Shape::from((2, 1))),
            ],
            &mut scratch,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(
            parts[0].to_vec2::<f32>().unwrap(),
            [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
        );
        assert_eq!(parts[1].to_scalar::<f32>().unwrap(), 7.0);
        assert_eq!(parts[2].to_vec2::<f32>().unwrap(), [[8.0], [9.0]]);
        assert_eq!(scratch.len(), 9, "the scratch holds this upload only");
    }

    #[test]
    fn the_learning_rate_falls_linearly_to_its_end_when_one_is_set() {
        assert_eq!(learning_rate_at(1e-3, None, 70, 100), 1e-3);
        assert_eq!(learning_rate_at(1.0, Some(0.0), 0, 100), 1.0);
        assert_eq!(learning_rate_at(1.0, Some(0.0), 25, 100), 0.75);
        assert_eq!(learning_rate_at(1.0, Some(0.5), 100, 100), 0.5);
        // Past the run's end (a resumed run given fewer steps) it stays at the end.
        assert_eq!(learning_rate_at(1.0, Some(0.5), 300, 100), 0.5);
        assert!(check_learning_rate_end(Some(0.0), "x").is_ok());
        assert!(check_learning_rate_end(None, "x").is_ok());
        for bad in [-1e-4, f64::NAN, f64::INFINITY] {
            let err = check_learning_rate_end(Some(bad), "dqn.learning_rate_end").unwrap_err();
            assert!(err.to_string().contains("dqn.learning_rate_end"), "{err}");
        }
    }
}
