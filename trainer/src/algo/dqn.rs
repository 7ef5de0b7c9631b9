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

use candle_core::{DType, Device, Shape, Tensor, D};
use reflex_msgs::{Action, PolicySpec};
use reflex_sim::SimRng;
use serde::{Deserialize, Serialize};

use super::{scheduled, Agent, Rounds, Scheduled};
use crate::nn::{NetConfig, QNetwork};
use crate::optim::Adam;
use crate::replay::{ActionShape, Batch, BatchActions, EnvStep, NStepAccumulator, PerParams};
use crate::schedule::Schedule;
use crate::TrainError;

pub use super::{evaluate, train, Observer, Progress, UpdateStats};
pub use crate::replay::Replay;

/// Every hyperparameter of a DQN run. Defaults follow RL Zoo's CartPole-v1 DQN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DqnConfig {
    /// Discount factor γ.
    pub gamma: f64,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// When set, the learning rate falls linearly from `learning_rate` to this
    /// by the end of the run, so the greedy policy settles instead of
    /// oscillating around a solved one.
    pub learning_rate_end: Option<f64>,
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
            learning_rate_end: None,
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

super::schedule_rounds!(DqnConfig);

impl Scheduled for Dqn {
    type Stats = UpdateStats;

    fn rounds(&self) -> Rounds {
        self.config.rounds()
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.optimizer.lr = lr;
    }

    fn has_data(&self) -> bool {
        !self.replay.is_empty()
    }

    fn update_once(&mut self, beta: f64) -> Result<UpdateStats, TrainError> {
        self.update(beta)
    }

    fn move_target(&self) -> Result<(), TrainError> {
        self.update_target()
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
    /// When set, `update` times its phases into it (see
    /// [`Phases`](crate::gpu::Phases)); off in training.
    pub profile: Option<crate::gpu::Phases>,
    /// Run updates as a captured CUDA graph (see [`crate::gpu::graph`];
    /// experimental). Starts as `REFLEX_CUDA_GRAPH=1` says; has an effect on
    /// CUDA devices with the fused kernels only.
    pub cuda_graph: bool,
    /// The graphed update's buffers and graph, once made.
    graph: Option<crate::gpu::graph::GraphedUpdate>,
    /// Reused host buffers of the packed batch upload.
    action_scratch: Vec<f32>,
    upload_scratch: Vec<f32>,
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
        super::check_learning_rate_end(config.learning_rate_end, "dqn.learning_rate_end")?;
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
        let replay = Replay::new(
            config.buffer_size,
            obs_dim,
            ActionShape::Discrete {
                n: n_actions as u32,
            },
            config.prioritized.then_some(PerParams {
                alpha: config.per_alpha,
                eps: config.per_eps,
            }),
        )?;
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
            profile: None,
            cuda_graph: crate::gpu::graph::requested(),
            graph: None,
            action_scratch: Vec::new(),
            upload_scratch: Vec::new(),
        })
    }

    /// The greedy action index for one observation.
    pub fn greedy_index(&self, obs: &[f32]) -> Result<u32, TrainError> {
        let x = Tensor::from_slice(obs, (1, obs.len()), &self.device)?;
        let best = self.online.q_values_frozen(&x)?.argmax(D::Minus1)?;
        Ok(best.to_vec1::<u32>()?[0])
    }

    /// The greedy action indices for `rows` observations (row-major, `rows ×
    /// obs_dim`): one upload, one forward pass, one download, for vectorized
    /// envs.
    pub fn greedy_batch(&self, obs: &[f32], rows: usize) -> Result<Vec<u32>, TrainError> {
        let d = self.online.obs_dim();
        if obs.len() != rows * d {
            return Err(TrainError::Config(format!(
                "greedy_batch: {} values for {rows} rows of {d}",
                obs.len()
            )));
        }
        let x = Tensor::from_slice(obs, (rows, d), &self.device)?;
        Ok(self
            .online
            .q_values_frozen(&x)?
            .argmax(D::Minus1)?
            .to_vec1::<u32>()?)
    }

    /// Stores one env step (through the n-step accumulator).
    pub fn observe(&mut self, step: &EnvStep<'_>) -> Result<(), TrainError> {
        self.nstep.push(0, step, &mut self.replay)?;
        Ok(())
    }

    /// One gradient update on a sampled batch. `beta` is PER's importance exponent.
    pub fn update(&mut self, beta: f64) -> Result<UpdateStats, TrainError> {
        if let Some(p) = &mut self.profile {
            p.start()?;
        }
        let shapes = self.sample_packed(beta)?.0;
        if let Some(p) = &mut self.profile {
            p.mark("sample, pack (host)")?;
        }
        if self.graphed() {
            return self.update_graphed(&shapes);
        }
        self.update_eager(&shapes)
    }

    /// Samples a batch and packs it into one host buffer, the host half of
    /// an update (for a [population](super::population), which uploads its
    /// members' batches together). Returns the parts' shapes and the buffer.
    pub(crate) fn sample_packed(&mut self, beta: f64) -> Result<(Vec<Shape>, &[f32]), TrainError> {
        self.replay.sample_into(
            self.config.batch_size,
            beta,
            &mut self.replay_rng,
            &mut self.batch,
        )?;
        let shapes = self.pack_batch()?;
        Ok((shapes, &self.upload_scratch))
    }

    /// The buffer [`sample_packed`](Self::sample_packed) filled.
    pub(crate) fn packed(&self) -> &[f32] {
        &self.upload_scratch
    }

    /// New priorities for the last sampled batch from its TD errors (with
    /// prioritized replay; nothing otherwise).
    pub(crate) fn set_priorities(&mut self, td_error: &[f32]) -> Result<(), TrainError> {
        if let Replay::Prioritized(_) = self.replay {
            self.replay
                .update_priorities(&self.batch.indices, td_error)?;
        }
        Ok(())
    }

    /// The sampled batch as one host buffer (`upload_scratch`): observations,
    /// next observations, action indices as f32 (exact below 2^24), rewards,
    /// discounts, weights. Returns the parts' shapes.
    fn pack_batch(&mut self) -> Result<Vec<Shape>, TrainError> {
        let (b, d) = (self.config.batch_size, self.online.obs_dim());
        let batch = &self.batch;
        let BatchActions::Discrete(actions) = &batch.actions else {
            return Err(TrainError::Config("DQN needs discrete actions".into()));
        };
        self.action_scratch.clear();
        self.action_scratch
            .extend(actions.iter().map(|&a| a as f32));
        Ok(super::pack(
            &[
                (&batch.obs, Shape::from((b, d))),
                (&batch.next_obs, Shape::from((b, d))),
                (&self.action_scratch, Shape::from((b, 1))),
                (&batch.rewards, Shape::from(b)),
                (&batch.discounts, Shape::from(b)),
                (&batch.weights, Shape::from(b)),
            ],
            &mut self.upload_scratch,
        ))
    }

    /// The update op by op, from the packed batch.
    fn update_eager(&mut self, shapes: &[Shape]) -> Result<UpdateStats, TrainError> {
        let all = Tensor::from_slice(
            &self.upload_scratch,
            self.upload_scratch.len(),
            &self.device,
        )?;
        let parts = super::unpack(&all, shapes)?;
        if let Some(p) = &mut self.profile {
            p.mark("upload")?;
        }
        let (loss, q_taken, td_error) = td_loss(&self.online, &self.target, &self.config, &parts)?;
        if let Some(p) = &mut self.profile {
            p.mark("forward + loss")?;
        }
        let grads = loss.backward()?;
        if let Some(p) = &mut self.profile {
            p.mark("backward")?;
        }
        let grad_norm = self.optimizer.step(&grads, self.config.max_grad_norm)?;
        if let Some(p) = &mut self.profile {
            p.mark("optimizer")?;
        }
        if let Replay::Prioritized(_) = self.replay {
            self.set_priorities(&td_error.to_vec1::<f32>()?)?;
        }
        let stats = UpdateStats {
            loss: loss.to_scalar::<f32>()?,
            q_mean: q_taken.mean_all()?.to_scalar::<f32>()?,
            grad_norm,
        };
        if let Some(p) = &mut self.profile {
            p.mark("stats, priorities (readback)")?;
        }
        Ok(stats)
    }

    /// Whether updates run as a captured CUDA graph: asked for
    /// ([`cuda_graph`](Self::cuda_graph)), on a CUDA device with the fused
    /// kernels, and not while phases are being timed.
    fn graphed(&self) -> bool {
        self.cuda_graph && self.profile.is_none() && crate::gpu::kernels::cuda_kernels(&self.device)
    }

    /// The update as one replay of a CUDA graph (see [`crate::gpu::graph`]):
    /// the batch is copied into a fixed device buffer and Adam's step size
    /// into another; the first few updates run the graph's body eagerly (which
    /// also fills candle's cache of small uploads the capture needs), the next
    /// one captures it, and every update replays it and reads [loss, mean Q,
    /// norm², TD errors] back in one copy. A capture that fails turns the
    /// graph off (with a warning) and the update runs eagerly.
    fn update_graphed(&mut self, shapes: &[Shape]) -> Result<UpdateStats, TrainError> {
        let dev = self.device.clone();
        let (n, generation) = (self.upload_scratch.len(), self.optimizer.generation());
        let g = crate::gpu::graph::prepare(&mut self.graph, n, generation, &dev)?;
        let per = matches!(self.replay, Replay::Prioritized(_));
        let (online, target, config) = (&self.online, &self.target, &self.config);
        let optimizer = &mut self.optimizer;
        let hyper = optimizer.next_hyper();
        let ran = g.run(&dev, &self.upload_scratch, &hyper, |input, hyper| {
            graph_body(online, target, config, optimizer, input, hyper, shapes, per)
        })?;
        let out = ran.settle(&mut self.cuda_graph, || self.graph = None);
        self.finish_graphed(&out)
    }

    /// Whether updates now replay a captured CUDA graph.
    pub fn graph_captured(&self) -> bool {
        self.graph.as_ref().is_some_and(|g| g.captured())
    }

    /// Stats (and PER priorities) from a graphed update's read-back.
    fn finish_graphed(&mut self, out: &[f32]) -> Result<UpdateStats, TrainError> {
        let (stats, td_error) = crate::gpu::graph::stats(out);
        self.set_priorities(td_error)?;
        Ok(stats)
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

impl Agent for Dqn {
    fn algo(&self) -> &'static str {
        "dqn"
    }

    fn steps_done(&self) -> u64 {
        self.steps_done
    }

    fn set_steps_done(&mut self, steps: u64) {
        self.steps_done = steps;
    }

    /// ε-greedy with ε from the schedule.
    fn explore(&mut self, obs: &[f32], step: u64, total: u64) -> Result<Action, TrainError> {
        let epsilon = self.exploration(step - 1, total);
        let n_actions = self.online.n_actions() as u64;
        Ok(Action::Discrete(if self.act_rng.next_f64() < epsilon {
            self.act_rng.below(n_actions) as u32
        } else {
            self.greedy_index(obs)?
        }))
    }

    fn exploration(&self, step: u64, total: u64) -> f64 {
        self.config.exploration.value(step, total)
    }

    fn greedy(&self, obs: &[f32]) -> Result<Action, TrainError> {
        Ok(Action::Discrete(self.greedy_index(obs)?))
    }

    fn observe(&mut self, step: &EnvStep<'_>) -> Result<(), TrainError> {
        Dqn::observe(self, step)
    }

    /// A round of `gradient_steps` updates every `train_freq` steps after
    /// `learning_starts`; the target moves every `target_update_interval` steps.
    fn train_after(&mut self, step: u64, total: u64) -> Result<Option<UpdateStats>, TrainError> {
        scheduled(self, step, total)
    }

    super::online_target_slots!();

    fn replay(&self) -> &Replay {
        &self.replay
    }

    fn replay_mut(&mut self) -> &mut Replay {
        &mut self.replay
    }

    fn rngs(&mut self) -> (&mut SimRng, &mut SimRng) {
        (&mut self.act_rng, &mut self.replay_rng)
    }

    fn to_onnx(&self, template: &PolicySpec) -> Result<Vec<u8>, TrainError> {
        crate::export::q_network_onnx(&self.online, template)
    }
}

/// One graphed update's device work (run eagerly to warm up, then
/// captured): DQN's loss on the batch in `input`, backward, the fused Adam
/// step with its step size from `hyper`. Returns one tensor: [loss, mean Q,
/// norm², TD errors when `per`].
#[allow(clippy::too_many_arguments)]
fn graph_body(
    online: &QNetwork,
    target: &QNetwork,
    config: &DqnConfig,
    optimizer: &mut Adam,
    input: &Tensor,
    hyper: &Tensor,
    shapes: &[Shape],
    per: bool,
) -> candle_core::Result<Vec<Tensor>> {
    let parts = super::unpack(input, shapes)?;
    let (loss, q_taken, td_error) = td_loss(online, target, config, &parts)
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let grads = loss.backward()?;
    let normsq = optimizer.step_in_graph(&grads, config.max_grad_norm, hyper)?;
    let td = per.then_some(&td_error);
    Ok(vec![crate::gpu::graph::readback(
        &loss,
        &q_taken.mean_all()?,
        &normsq,
        td,
    )?])
}

/// DQN's loss on a batch (`parts` as [`Dqn::update`] packs them): the target
/// y = R + d · Q⁻(s', a*) without gradients, every head regressed onto it
/// with PER weights. Returns (loss, Q(s, a) of the first head, its TD error),
/// the last two detached. For a population's batch (every part with a
/// leading member dimension, networks [stacked](crate::nn::stack)) the loss
/// is one per member, `[P]`.
pub(crate) fn td_loss(
    online: &QNetwork,
    target: &QNetwork,
    config: &DqnConfig,
    parts: &[Tensor],
) -> Result<(Tensor, Tensor, Tensor), TrainError> {
    let [obs, next_obs, actions, rewards, discounts, weights] = parts else {
        return Err(TrainError::Config("DQN batch: six parts expected".into()));
    };
    let actions = actions.to_dtype(DType::U32)?;
    let next_q = target.q_values_frozen(next_obs)?;
    let online_next_q = if config.double {
        Some(online.q_values_frozen(next_obs)?)
    } else {
        None
    };
    let next_value = bootstrap_value(&next_q, online_next_q.as_ref())?;
    let y = (rewards + (discounts * next_value)?)?.detach();
    let mut loss: Option<Tensor> = None;
    let mut first_q = None;
    for q in online.forward_heads(obs)? {
        let q_taken = q.gather(&actions, D::Minus1)?.squeeze(D::Minus1)?;
        let error = (&q_taken - &y)?;
        let per_sample = if config.huber {
            huber(&error)?
        } else {
            (error.sqr()? * 0.5)?
        };
        // The mean over the batch rows: one value, or one per member of a
        // population (batch `[P, B]`).
        let head_loss = (per_sample * weights)?.mean(D::Minus1)?;
        loss = Some(match loss {
            None => head_loss,
            Some(total) => (total + head_loss)?,
        });
        first_q.get_or_insert((q_taken.detach(), error.detach()));
    }
    let (q_taken, td_error) = first_q.expect("a network has at least one head");
    let loss = loss.expect("a network has at least one head");
    Ok((loss, q_taken, td_error))
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
