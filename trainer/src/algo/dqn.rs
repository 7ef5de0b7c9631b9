//! Deep Q-learning for discrete actions, readable top to bottom: the config, the
//! update (the lecture's equations), then the training loop.
//!
//! Variants are switches on one config, so an ablation is one flag away:
//! Double DQN (`double`), Twin DQN (`twin`), dueling heads (`net.dueling`),
//! n-step returns (`n_step`) and prioritized replay (`prioritized`).
//!
//! The update, for a sampled batch (s, a, R, s', d) where R is the (n-step)
//! return and d = γ^m (0 if the episode terminated within those m steps):
//!
//! ```text
//!   Q⁻(s', ·)  = target network (Twin: min over its two heads)
//!   a*         = argmax_a Q(s', a) of the ONLINE network  (Double DQN)
//!              | argmax_a Q⁻(s', a)                        (plain DQN)
//!   y          = R + d · Q⁻(s', a*)
//!   loss       = mean_i w_i · Huber(Q(s_i, a_i) − y_i)      (w = PER weights, else 1)
//! ```
//!
//! Truncation (a time limit) is not termination: the replay keeps d = γ^m for a
//! truncated episode's last steps, so the target bootstraps through it.

use candle_core::{DType, Device, Tensor, D};
use reflex_msgs::Action;
use reflex_sim::{Env, SimRng};
use serde::{Deserialize, Serialize};

use crate::nn::{NetConfig, QNetwork};
use crate::optim::Adam;
use crate::replay::{
    ActionRef, ActionShape, Batch, BatchActions, EnvStep, NStepAccumulator, PrioritizedReplay,
    ReplayBuffer, ReplayError, Transition, TransitionSink,
};
use crate::schedule::Schedule;
use crate::TrainError;

/// Every hyperparameter of a DQN run. Defaults follow RL Zoo's CartPole-v1 DQN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DqnConfig {
    /// Discount factor γ.
    pub gamma: f64,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Transitions per gradient update.
    pub batch_size: usize,
    /// Replay capacity (transitions).
    pub buffer_size: usize,
    /// Env steps of pure collection before the first update.
    pub learning_starts: u64,
    /// Env steps between training rounds.
    pub train_freq: u64,
    /// Gradient updates per training round.
    pub gradient_steps: u64,
    /// Env steps between target-network updates.
    pub target_update_interval: u64,
    /// Target update mix: 1.0 copies the online network, below 1 is Polyak averaging.
    pub tau: f64,
    /// ε of ε-greedy exploration over the run.
    pub exploration: Schedule,
    /// Double DQN: the online network picks the bootstrap action.
    pub double: bool,
    /// Twin DQN: two Q heads trained on the same target; the target takes their minimum.
    pub twin: bool,
    /// n of n-step returns (1 = one-step TD).
    pub n_step: usize,
    /// Prioritized replay (proportional, Schaul et al. 2016).
    pub prioritized: bool,
    /// PER priority exponent α.
    pub per_alpha: f64,
    /// PER importance-weight exponent β at the start; annealed linearly to 1.
    pub per_beta0: f64,
    /// PER ε added to |TD error|.
    pub per_eps: f64,
    /// Huber (smooth L1, δ = 1) loss; false for squared error.
    pub huber: bool,
    /// Clip the global gradient norm to this (none when absent).
    pub max_grad_norm: Option<f64>,
    /// Network shape.
    pub net: NetConfig,
}

impl Default for DqnConfig {
    fn default() -> Self {
        Self {
            gamma: 0.99,
            learning_rate: 2.3e-3,
            batch_size: 64,
            buffer_size: 100_000,
            learning_starts: 1_000,
            train_freq: 256,
            gradient_steps: 128,
            target_update_interval: 10,
            tau: 1.0,
            exploration: Schedule::linear(1.0, 0.04, 0.16),
            double: true,
            twin: false,
            n_step: 1,
            prioritized: false,
            per_alpha: 0.6,
            per_beta0: 0.4,
            per_eps: 1e-6,
            huber: true,
            max_grad_norm: Some(10.0),
            net: NetConfig {
                dueling: true,
                ..NetConfig::default()
            },
        }
    }
}

/// What one gradient update reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateStats {
    /// The minimized loss.
    pub loss: f32,
    /// Mean Q(s, a) of the batch (first head).
    pub q_mean: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// Uniform or prioritized storage behind one interface.
#[derive(Debug)]
pub enum Replay {
    /// Uniform sampling.
    Uniform(ReplayBuffer),
    /// Proportional prioritized sampling.
    Prioritized(PrioritizedReplay),
}

impl TransitionSink for Replay {
    fn store(&mut self, transition: &Transition<'_>) -> Result<(), ReplayError> {
        match self {
            Replay::Uniform(buffer) => buffer.push(transition).map(drop),
            Replay::Prioritized(buffer) => buffer.push(transition).map(drop),
        }
    }
}

impl Replay {
    /// Transitions stored.
    pub fn len(&self) -> usize {
        match self {
            Replay::Uniform(b) => b.len(),
            Replay::Prioritized(b) => b.len(),
        }
    }

    /// Whether nothing is stored yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The learner's state: networks, optimizer, replay and generators.
pub struct Dqn {
    /// Hyperparameters.
    pub config: DqnConfig,
    /// The network being trained.
    pub online: QNetwork,
    /// The slowly moving copy that the targets bootstrap from.
    pub target: QNetwork,
    /// Optimizer over `online`.
    pub optimizer: Adam,
    /// Replay storage.
    pub replay: Replay,
    /// Turns env steps into (n-step) transitions.
    pub nstep: NStepAccumulator,
    /// Env steps taken so far (what a resumed run continues from).
    pub steps_done: u64,
    /// Draws exploration decisions and random actions.
    pub act_rng: SimRng,
    /// Draws replay samples.
    pub replay_rng: SimRng,
    device: Device,
    batch: Batch,
}

impl Dqn {
    /// A fresh learner for an env with `obs_dim` observations and `n_actions`
    /// actions; `seed` fixes its initial weights and every later random draw.
    pub fn new(
        config: DqnConfig,
        obs_dim: usize,
        n_actions: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let heads = if config.twin { 2 } else { 1 };
        let mut init_rng = SimRng::seed(seed);
        let online = QNetwork::new(
            &config.net,
            obs_dim,
            n_actions,
            heads,
            &mut init_rng,
            device,
        )?;
        let target = online.duplicate()?;
        let optimizer = Adam::new(online.vars(), config.learning_rate)?;
        let storage = ReplayBuffer::new(
            config.buffer_size,
            obs_dim,
            ActionShape::Discrete {
                n: n_actions as u32,
            },
        )?;
        let replay = if config.prioritized {
            Replay::Prioritized(PrioritizedReplay::new(
                storage,
                config.per_alpha,
                config.per_eps,
            )?)
        } else {
            Replay::Uniform(storage)
        };
        let nstep = NStepAccumulator::new(
            config.n_step,
            config.gamma as f32,
            obs_dim,
            ActionShape::Discrete {
                n: n_actions as u32,
            },
            1,
        )?;
        Ok(Self {
            config,
            online,
            target,
            optimizer,
            replay,
            nstep,
            steps_done: 0,
            act_rng: SimRng::seed(seed.wrapping_add(1)),
            replay_rng: SimRng::seed(seed.wrapping_add(2)),
            device: device.clone(),
            batch: Batch::default(),
        })
    }

    /// The greedy action for one observation.
    pub fn greedy(&self, obs: &[f32]) -> Result<u32, TrainError> {
        let x = Tensor::from_slice(obs, (1, obs.len()), &self.device)?;
        let best = self.online.q_values(&x)?.argmax(D::Minus1)?;
        Ok(best.to_vec1::<u32>()?[0])
    }

    /// Stores one env step (through the n-step accumulator).
    pub fn observe(&mut self, step: &EnvStep<'_>) -> Result<(), TrainError> {
        self.nstep.push(0, step, &mut self.replay)?;
        Ok(())
    }

    /// One gradient update on a sampled batch. `beta` is PER's importance exponent.
    pub fn update(&mut self, beta: f64) -> Result<UpdateStats, TrainError> {
        let b = self.config.batch_size;
        let rng = &mut self.replay_rng;
        match &self.replay {
            Replay::Uniform(buffer) => buffer.sample_into(b, rng, &mut self.batch)?,
            Replay::Prioritized(buffer) => buffer.sample_into(b, beta, rng, &mut self.batch)?,
        }
        let dev = &self.device;
        let d = self.online.obs_dim();
        let batch = &self.batch;
        let obs = Tensor::from_slice(&batch.obs, (b, d), dev)?;
        let next_obs = Tensor::from_slice(&batch.next_obs, (b, d), dev)?;
        let BatchActions::Discrete(actions) = &batch.actions else {
            return Err(TrainError::Config("DQN needs discrete actions".into()));
        };
        let actions = Tensor::from_slice(actions, (b, 1), dev)?;
        let rewards = Tensor::from_slice(&batch.rewards, b, dev)?;
        let discounts = Tensor::from_slice(&batch.discounts, b, dev)?;
        let weights = Tensor::from_slice(&batch.weights, b, dev)?;

        // The target y = R + d · Q⁻(s', a*), computed without gradients.
        let next_q = self.target.q_values(&next_obs)?.detach();
        let online_next_q = if self.config.double {
            Some(self.online.q_values(&next_obs)?.detach())
        } else {
            None
        };
        let next_value = bootstrap_value(&next_q, online_next_q.as_ref())?;
        let y = (rewards + (discounts * next_value)?)?.detach();

        // Every head regresses Q(s, a) onto the same target.
        let mut loss = Tensor::zeros((), DType::F32, dev)?;
        let mut first_q = None;
        for q in self.online.forward_heads(&obs)? {
            let q_taken = q.gather(&actions, D::Minus1)?.squeeze(D::Minus1)?;
            let error = (&q_taken - &y)?;
            let per_sample = if self.config.huber {
                huber(&error)?
            } else {
                (error.sqr()? * 0.5)?
            };
            loss = (loss + (per_sample * &weights)?.mean_all()?)?;
            first_q.get_or_insert((q_taken.detach(), error.detach()));
        }
        let grads = loss.backward()?;
        let grad_norm = self.optimizer.step(&grads, self.config.max_grad_norm)?;

        let (q_taken, td_error) = first_q.expect("a network has at least one head");
        if let Replay::Prioritized(buffer) = &mut self.replay {
            buffer.update_priorities(&self.batch.indices, &td_error.to_vec1::<f32>()?)?;
        }
        Ok(UpdateStats {
            loss: loss.to_scalar::<f32>()?,
            q_mean: q_taken.mean_all()?.to_scalar::<f32>()?,
            grad_norm,
        })
    }

    /// Moves the target network toward the online one (copy when τ = 1).
    pub fn update_target(&self) -> Result<(), TrainError> {
        if self.config.tau >= 1.0 {
            self.target.copy_from(&self.online)?;
        } else {
            self.target.polyak_from(&self.online, self.config.tau)?;
        }
        Ok(())
    }
}

/// Q⁻(s', a*) per row: with `online_next_q` (Double DQN) a* is the online
/// network's argmax, evaluated by the target network; without it, the target's max.
pub fn bootstrap_value(
    next_q: &Tensor,
    online_next_q: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    match online_next_q {
        Some(online) => {
            let best = online.argmax_keepdim(D::Minus1)?;
            next_q.gather(&best, D::Minus1)?.squeeze(D::Minus1)
        }
        None => next_q.max(D::Minus1),
    }
}

/// Huber loss with δ = 1, elementwise: ½x² for |x| ≤ 1, |x| − ½ beyond.
/// Written as ½ min(|x|,1)² + (|x| − min(|x|,1)) so it stays differentiable.
pub fn huber(x: &Tensor) -> candle_core::Result<Tensor> {
    let abs = x.abs()?;
    let quadratic = abs.minimum(1.0)?;
    (quadratic.sqr()? * 0.5)? + (abs - quadratic)?
}

/// Per-step numbers the training loop reports to its observer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Env steps taken.
    pub step: u64,
    /// Current ε.
    pub epsilon: f64,
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
    fn periodic(&mut self, _progress: &Progress, _dqn: &Dqn) -> Result<(), TrainError> {
        Ok(())
    }
}

/// Trains until `total_steps` env steps have been taken on `env`, continuing
/// from `dqn.steps_done` (0 for a fresh learner), and calls `observer.periodic`
/// every `periodic_every` steps (never when 0). A fresh run's first episode uses
/// `seed`; a resumed run starts a new episode seeded by `seed + steps_done`.
pub fn train(
    dqn: &mut Dqn,
    env: &mut dyn Env,
    total_steps: u64,
    seed: u64,
    periodic_every: u64,
    observer: &mut dyn Observer,
) -> Result<(), TrainError> {
    let n_actions = dqn.online.n_actions() as u64;
    let mut obs = env.reset(Some(seed.wrapping_add(dqn.steps_done))).to_vec();
    let mut next_obs = vec![0.0; obs.len()];
    let (mut episode_return, mut length) = (0.0, 0u32);
    let mut last_update = None;
    while dqn.steps_done < total_steps {
        dqn.steps_done += 1;
        let step = dqn.steps_done;
        // ε-greedy.
        let epsilon = dqn.config.exploration.value(step - 1, total_steps);
        let action = if dqn.act_rng.next_f64() < epsilon {
            dqn.act_rng.below(n_actions) as u32
        } else {
            dqn.greedy(&obs)?
        };
        let result = env.step(&Action::Discrete(action))?;
        next_obs.copy_from_slice(env.obs());
        dqn.observe(&EnvStep {
            obs: &obs,
            action: ActionRef::Discrete(action),
            reward: result.reward as f32,
            next_obs: &next_obs,
            terminated: result.terminated,
            truncated: result.truncated,
        })?;
        episode_return += result.reward;
        length += 1;
        let progress = |last_update| Progress {
            step,
            epsilon,
            last_update,
        };
        if result.done() {
            observer.episode(&progress(last_update), episode_return, length);
            (episode_return, length) = (0.0, 0);
            obs.copy_from_slice(env.reset(None));
        } else {
            obs.copy_from_slice(&next_obs);
        }

        let config = &dqn.config;
        if step > config.learning_starts
            && step.is_multiple_of(config.train_freq)
            && !dqn.replay.is_empty()
        {
            // PER's β anneals linearly from β0 to 1 over the run.
            let beta =
                config.per_beta0 + (1.0 - config.per_beta0) * (step as f64 / total_steps as f64);
            for _ in 0..config.gradient_steps {
                last_update = Some(dqn.update(beta.min(1.0))?);
            }
            observer.trained(&progress(last_update));
        }
        if step.is_multiple_of(dqn.config.target_update_interval) {
            dqn.update_target()?;
        }
        if periodic_every > 0 && step.is_multiple_of(periodic_every) {
            observer.periodic(&progress(last_update), dqn)?;
        }
    }
    Ok(())
}

/// Mean and standard deviation of the return of `episodes` greedy episodes,
/// episode k seeded with `seed + k`.
pub fn evaluate(
    dqn: &Dqn,
    env: &mut dyn Env,
    episodes: u32,
    seed: u64,
) -> Result<(f64, f64), TrainError> {
    let mut returns = Vec::new();
    for k in 0..episodes {
        let mut obs = env.reset(Some(seed + u64::from(k))).to_vec();
        let mut total = 0.0;
        loop {
            let step = env.step(&Action::Discrete(dqn.greedy(&obs)?))?;
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

    fn t(rows: &[[f32; 2]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_vec(flat, (rows.len(), 2), &Device::Cpu).unwrap()
    }

    #[test]
    fn double_dqn_evaluates_the_online_argmax_with_the_target() {
        let target = t(&[[1.0, 5.0], [3.0, 2.0]]);
        let online = t(&[[2.0, 1.0], [0.0, 4.0]]);
        // Double: a* = [0, 1] from the online net → target values [1, 2].
        let double = bootstrap_value(&target, Some(&online)).unwrap();
        assert_eq!(double.to_vec1::<f32>().unwrap(), vec![1.0, 2.0]);
        // Plain DQN: the target's own max → [5, 3].
        let plain = bootstrap_value(&target, None).unwrap();
        assert_eq!(plain.to_vec1::<f32>().unwrap(), vec![5.0, 3.0]);
        // y = r + d·v with d = 0 for a terminated row: [0.5 + 0.99·1, 1 + 0·2].
        let r = Tensor::new(&[0.5f32, 1.0], &Device::Cpu).unwrap();
        let d = Tensor::new(&[0.99f32, 0.0], &Device::Cpu).unwrap();
        let y = (r + (d * double).unwrap())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!((y[0] - 1.49).abs() < 1e-6 && y[1] == 1.0, "{y:?}");
    }

    #[test]
    fn huber_is_quadratic_inside_and_linear_outside() {
        let x = Tensor::new(&[-2.0f32, -0.5, 0.0, 0.5, 3.0], &Device::Cpu).unwrap();
        let h = huber(&x).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(h, vec![1.5, 0.125, 0.0, 0.125, 2.5]);
    }
}
