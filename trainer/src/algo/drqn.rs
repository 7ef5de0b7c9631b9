//! DRQN: deep recurrent Q-learning for partially observed envs, readable top to
//! bottom. The network reads the history through an LSTM,
//! h_t = LSTM(h_{t−1}, [o_t, onehot(a_{t−1})]), and a (dueling) Q head reads h_t.
//!
//! Learning follows R2D2 (Kapturowski et al. 2019) on top of DQN:
//!
//! ```text
//!   window   = B burn-in steps, L learning steps, n bootstrap steps of one episode
//!   (h0, c0) = the state the actor had at the window's first step (stored state),
//!              or zeros (zero state)
//!   burn-in  : both networks run over the B steps from (h0, c0); no loss, no gradient
//!   y_t      = Σ_{i<m} γ^i r_{t+i} + γ^m Q⁻(h⁻_{t+m}, a*)      (0 after termination)
//!   a*       = argmax_a Q(h_{t+m}, a) of the online network    (Double DQN)
//!   loss     = Σ_t w · mask_t · Huber(Q(h_t, a_t) − y_t) / Σ_t mask_t
//! ```
//!
//! The mask drops steps past the episode's end; the PER weights `w` are per
//! window, and a window's priority is η·max|δ| + (1 − η)·mean|δ|.
//!
//! Acting carries (h, c) across the steps of an episode and zeroes it (and the
//! previous action) at each episode start; evaluation keeps its own state so a
//! periodic evaluation does not disturb the training episode.

use std::cell::RefCell;

use candle_core::{DType, Device, Shape, Tensor, D};
use reflex_msgs::onnx::{
    INPUT_C, INPUT_H, INPUT_OBS, INPUT_PREV_ACTION, OUTPUT_C, OUTPUT_H, OUTPUT_Q,
};
use reflex_msgs::{Action, ActionSpace, PolicySpec};
use reflex_sim::SimRng;
use serde::{Deserialize, Serialize};

use super::dqn::huber;
use super::{Agent, RunningNorm, UpdateStats};
use crate::export::{normalized_obs, Attr, OnnxGraph};
use crate::nn::{NetConfig, Params, RecurrentQNetwork};
use crate::optim::Adam;
use crate::replay::{
    ActionRef, ActionShape, EnvStep, Replay, SequenceBatch, SequencePer, SequenceReplay, WindowSpec,
};
use crate::schedule::Schedule;
use crate::TrainError;

/// Every hyperparameter of a DRQN run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrqnConfig {
    /// Discount factor γ.
    pub gamma: f64,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// When set, the learning rate falls linearly from `learning_rate` to this
    /// by the end of the run (Q-learning's greedy policy keeps oscillating
    /// around a solved one at a constant rate; a decaying rate lets it settle).
    pub learning_rate_end: Option<f64>,
    /// Windows per gradient update.
    pub batch_size: usize,
    /// Replay capacity in env steps (slots).
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
    /// n of n-step returns (1 = one-step TD).
    pub n_step: usize,
    /// Learning steps L per window.
    pub seq_len: usize,
    /// Burn-in steps B before them (state warm-up, no loss).
    pub burn_in: usize,
    /// Start windows from the state the actor had (true) or from zeros.
    pub stored_state: bool,
    /// LSTM hidden size.
    pub lstm_hidden: usize,
    /// Running observation normalization (frozen into the exported graph).
    /// Recovering velocities from positions means reading small differences
    /// between steps: on unit-scale inputs the LSTM sees them far sooner.
    pub obs_norm: bool,
    /// Prioritized sequence replay.
    pub prioritized: bool,
    /// PER priority exponent α.
    pub per_alpha: f64,
    /// PER importance-weight exponent β at the start; annealed linearly to 1.
    pub per_beta0: f64,
    /// PER ε added to the mixed |TD error|.
    pub per_eps: f64,
    /// R2D2's η: a window's priority is η·max|δ| + (1 − η)·mean|δ|.
    pub per_eta: f64,
    /// Huber (smooth L1, δ = 1) loss; false for squared error.
    pub huber: bool,
    /// Clip the global gradient norm to this (none when absent).
    pub max_grad_norm: Option<f64>,
    /// The Q head on the LSTM's output (hidden layers, dueling).
    pub net: NetConfig,
}

impl Default for DrqnConfig {
    fn default() -> Self {
        Self {
            gamma: 0.99,
            learning_rate: 1e-3,
            learning_rate_end: None,
            batch_size: 32,
            buffer_size: 100_000,
            learning_starts: 2_000,
            train_freq: 4,
            gradient_steps: 1,
            target_update_interval: 500,
            tau: 1.0,
            exploration: Schedule::linear(1.0, 0.02, 0.2),
            double: true,
            n_step: 1,
            seq_len: 20,
            burn_in: 10,
            stored_state: true,
            lstm_hidden: 64,
            obs_norm: true,
            prioritized: false,
            per_alpha: 0.6,
            per_beta0: 0.4,
            per_eps: 1e-6,
            per_eta: 0.9,
            huber: true,
            max_grad_norm: Some(10.0),
            net: NetConfig {
                hidden: vec![64],
                dueling: true,
                ..NetConfig::default()
            },
        }
    }
}

/// The recurrent state an actor carries through an episode (DRQN, and the
/// recurrent continuous learners).
#[derive(Debug, Clone)]
pub(crate) struct Carry {
    h: Tensor,
    c: Tensor,
    /// h then c on the host, read back with each step's output in the same
    /// copy (replay stores them with the next step; reading them then would
    /// cost two more device round trips per env step).
    host: Vec<f32>,
    /// The previous action as the network reads it: one-hot for discrete
    /// actions, normalized units for continuous ones (zeros at an episode's
    /// start).
    pub(crate) prev: Vec<f32>,
}

impl Carry {
    /// The start of an episode: zero state, zero previous action `prev_width` wide.
    pub(crate) fn zero(
        hidden: usize,
        prev_width: usize,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let zeros = Tensor::zeros((1, hidden), DType::F32, device)?;
        Ok(Self {
            h: zeros.clone(),
            c: zeros,
            host: vec![0.0; 2 * hidden],
            prev: vec![0.0; prev_width],
        })
    }

    /// h then c, as replay stores them.
    pub(crate) fn state(&self) -> &[f32] {
        &self.host
    }

    /// Carries the network's new state (h', c') `[1, H]` each, whose values
    /// `host` (h' then c') came back with the step's output.
    fn advance(&mut self, h: Tensor, c: Tensor, host: &[f32]) {
        (self.h, self.c) = (h, c);
        self.host.clear();
        self.host.extend_from_slice(host);
    }

    /// Advances the state by one observation (normalized with `norm` if any)
    /// through `net` (`[obs, prev]`, h, c → output, h', c'); returns the output.
    pub(crate) fn step(
        &mut self,
        norm: Option<&RunningNorm>,
        obs: &[f32],
        net: impl FnOnce(&Tensor, &Tensor, &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor)>,
    ) -> candle_core::Result<Vec<f32>> {
        let x = self.input(norm, obs);
        let x = Tensor::from_vec(x, (1, obs.len() + self.prev.len()), self.h.device())?;
        let (out, h, c) = net(&x, &self.h, &self.c)?;
        let mut values = read_step(&out, &h, &c)?;
        let n = values.len() - self.host.len();
        self.advance(h, c, &values[n..]);
        values.truncate(n);
        Ok(values)
    }

    /// The network's input for `obs`: the observation (normalized with
    /// `norm` if any), then the previous action.
    pub(crate) fn input(&self, norm: Option<&RunningNorm>, obs: &[f32]) -> Vec<f32> {
        let mut x = Vec::with_capacity(obs.len() + self.prev.len());
        x.extend_from_slice(obs);
        if let Some(norm) = norm {
            norm.apply(&mut x);
        }
        x.extend_from_slice(&self.prev);
        x
    }

    /// The previous-action input and, when `stored`, the state, as replay
    /// stores them.
    pub(crate) fn pending(&self, stored: bool) -> candle_core::Result<Pending> {
        Ok(Pending {
            prev: self.prev.clone(),
            state: if stored {
                self.state().to_vec()
            } else {
                Vec::new()
            },
        })
    }

    /// When `step` ended its episode, writes the episode's final slot: the last
    /// observation with the previous action and state after the step.
    pub(crate) fn finish(
        &self,
        replay: &mut SequenceReplay,
        step: &EnvStep<'_>,
        stored: bool,
    ) -> Result<(), TrainError> {
        if step.terminated || step.truncated {
            let end = self.pending(stored)?;
            replay.finish_episode(step.next_obs, &end.prev, &end.state, step.terminated)?;
        }
        Ok(())
    }

    fn applied(&mut self, action: u32) {
        self.prev.fill(0.0);
        self.prev[action as usize] = 1.0;
    }
}

/// An acting step's output and new state (h', c') in one device read, as
/// [output…, h'…, c'…] (each flattened, so a population's `[P, …]` comes
/// back member-major within each part).
pub(crate) fn read_step(out: &Tensor, h: &Tensor, c: &Tensor) -> candle_core::Result<Vec<f32>> {
    Tensor::cat(&[out.flatten_all()?, h.flatten_all()?, c.flatten_all()?], 0)?.to_vec1::<f32>()
}

fn argmax(q: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in q.iter().enumerate() {
        if *v > q[best] {
            best = i;
        }
    }
    best as u32
}

/// What replay stores about the actor at a step: the previous-action input
/// and (with stored state) h then c.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pending {
    pub(crate) prev: Vec<f32>,
    pub(crate) state: Vec<f32>,
}

/// The learner: networks, optimizer, sequence replay, and the acting state.
pub struct Drqn {
    /// Hyperparameters.
    pub config: DrqnConfig,
    /// The network being trained.
    pub online: RecurrentQNetwork,
    /// The slowly moving copy the targets bootstrap from.
    pub target: RecurrentQNetwork,
    /// Optimizer over `online`.
    pub optimizer: Adam,
    /// Sequence replay (as [`Replay::Sequence`], for checkpoints).
    pub replay: Replay,
    /// Env steps taken so far.
    pub steps_done: u64,
    /// Draws exploration decisions and random actions.
    pub act_rng: SimRng,
    /// Draws replay samples.
    pub replay_rng: SimRng,
    /// Running observation statistics (when `obs_norm`).
    pub norm: Option<RunningNorm>,
    device: Device,
    batch: SequenceBatch,
    /// Reused host buffer of the packed batch upload.
    upload: Vec<f32>,
    acting: Carry,
    pending: Option<Pending>,
    evaluating: RefCell<Carry>,
    /// Run updates as a captured CUDA graph (experimental, as
    /// [`super::dqn::Dqn`]'s: starts as `REFLEX_CUDA_GRAPH=1` says; CUDA
    /// with the fused kernels only). A window's unroll is a long chain of
    /// small launches, which a graph replays as one.
    pub cuda_graph: bool,
    graph: Option<crate::gpu::graph::GraphedUpdate>,
}

impl Drqn {
    /// A fresh learner for an env with `obs_dim` observations and `n_actions`
    /// actions; `seed` fixes its initial weights and every later random draw.
    pub fn new(
        config: DrqnConfig,
        obs_dim: usize,
        n_actions: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self, TrainError> {
        for (what, v) in [
            ("drqn.seq_len", config.seq_len),
            ("drqn.n_step", config.n_step),
            ("drqn.lstm_hidden", config.lstm_hidden),
            ("drqn.batch_size", config.batch_size),
        ] {
            if v == 0 {
                return Err(TrainError::Config(format!("{what} must be at least 1")));
            }
        }
        super::check_learning_rate_end(config.learning_rate_end, "drqn.learning_rate_end")?;
        let hidden = config.lstm_hidden;
        let mut init_rng = SimRng::seed(seed);
        let online = RecurrentQNetwork::new(
            &config.net,
            obs_dim,
            n_actions,
            hidden,
            &mut init_rng,
            device,
        )?;
        let target = online.duplicate()?;
        let optimizer = Adam::new(online.vars(), config.learning_rate)?;
        let replay = SequenceReplay::new(
            config.buffer_size,
            obs_dim,
            ActionShape::Discrete {
                n: n_actions as u32,
            },
            if config.stored_state { 2 * hidden } else { 0 },
            config.prioritized.then_some(SequencePer {
                alpha: config.per_alpha,
                eps: config.per_eps,
                eta: config.per_eta,
            }),
        )?;
        let zero = Carry::zero(hidden, n_actions, device)?;
        let norm = config.obs_norm.then(|| RunningNorm::new(obs_dim));
        Ok(Self {
            config,
            online,
            target,
            optimizer,
            replay: Replay::Sequence(replay),
            steps_done: 0,
            act_rng: SimRng::seed(seed.wrapping_add(1)),
            replay_rng: SimRng::seed(seed.wrapping_add(2)),
            norm,
            device: device.clone(),
            batch: SequenceBatch::default(),
            upload: Vec::new(),
            acting: zero.clone(),
            pending: None,
            evaluating: RefCell::new(zero),
            cuda_graph: crate::gpu::graph::requested(),
            graph: None,
        })
    }

    fn sequences(&mut self) -> &mut SequenceReplay {
        match &mut self.replay {
            Replay::Sequence(r) => r,
            _ => unreachable!("DRQN is built with a sequence buffer"),
        }
    }

    pub(crate) fn window(&self) -> WindowSpec {
        WindowSpec {
            burn_in: self.config.burn_in,
            learn: self.config.seq_len,
            n_step: self.config.n_step,
            gamma: self.config.gamma as f32,
        }
    }

    /// One gradient update on a batch of windows; `beta` is PER's exponent.
    pub fn update(&mut self, beta: f64) -> Result<UpdateStats, TrainError> {
        let shapes = self.sample_packed(beta)?;
        if self.graphed() {
            return self.update_graphed(&shapes);
        }
        let all = Tensor::from_slice(&self.upload, self.upload.len(), &self.device)?;
        let parts = super::unpack(&all, &shapes)?;
        let (loss, q_mean, td_error) = drqn_loss(
            &self.online,
            &self.target,
            &self.config,
            self.window(),
            &parts,
        )?;
        let grads = loss.backward()?;
        let grad_norm = self.optimizer.step(&grads, self.config.max_grad_norm)?;
        if self.config.prioritized {
            self.set_priorities(&td_error.flatten_all()?.to_vec1::<f32>()?)?;
        }
        Ok(UpdateStats {
            loss: loss.to_scalar::<f32>()?,
            q_mean: q_mean.to_scalar::<f32>()?,
            grad_norm,
        })
    }

    /// Samples a batch of windows and packs it, as [`drqn_loss`] reads it,
    /// into one host buffer ([`packed`](Self::packed)) for one upload.
    /// Returns the parts' shapes.
    pub(crate) fn sample_packed(&mut self, beta: f64) -> Result<Vec<Shape>, TrainError> {
        let (b, window) = (self.config.batch_size, self.window());
        let Replay::Sequence(replay) = &self.replay else {
            unreachable!("DRQN is built with a sequence buffer")
        };
        replay.sample_into(b, window, beta, &mut self.replay_rng, &mut self.batch)?;
        let (p, l, burn) = (self.batch.positions, window.learn, window.burn_in);
        let (d, n, hd) = (
            self.online.obs_dim(),
            self.online.n_actions(),
            self.online.hidden(),
        );

        // Inputs [B, P, obs + n]: observation (normalized with the current
        // statistics) then previous action one-hot.
        if let Some(norm) = &self.norm {
            norm.apply(&mut self.batch.obs);
        }
        let batch = &self.batch;
        let mut xs = Vec::with_capacity(b * p * (d + n));
        for at in 0..b * p {
            xs.extend_from_slice(&batch.obs[at * d..][..d]);
            xs.extend_from_slice(&batch.prev_actions[at * n..][..n]);
        }
        // Gather rows: bootstrap positions [B, L, n] and taken actions [B, L,
        // 1], as f32 (exact below 2^24) so that everything goes up in one copy.
        let mut boot = Vec::with_capacity(b * l * n);
        let mut taken = Vec::with_capacity(b * l);
        for at in 0..b * l {
            let k = (batch.bootstrap[at] as usize).saturating_sub(burn) as f32;
            boot.extend(std::iter::repeat_n(k, n));
            taken.push(batch.actions[at]);
        }
        // The loss divides by the number of live learning steps (at least 1).
        let valid = [(1.0 / f64::from(batch.mask.iter().sum::<f32>().max(1.0))) as f32];
        let mut parts: Vec<(&[f32], Shape)> = vec![
            (&xs, Shape::from((b, p, d + n))),
            (&batch.alive, Shape::from((b, p))),
            (&boot, Shape::from((b, l, n))),
            (&taken, Shape::from((b, l, 1))),
            (&batch.returns, Shape::from((b, l))),
            (&batch.discounts, Shape::from((b, l))),
            (&batch.mask, Shape::from((b, l))),
            (&batch.weights, Shape::from((b, 1))),
            (&valid, Shape::from(())),
        ];
        if !batch.init_state.is_empty() {
            parts.push((&batch.init_state, Shape::from((b, 2 * hd))));
        }
        Ok(super::pack(&parts, &mut self.upload))
    }

    /// Whether updates run as a captured CUDA graph: asked for
    /// ([`cuda_graph`](Self::cuda_graph)) on a CUDA device with the fused
    /// kernels.
    fn graphed(&self) -> bool {
        self.cuda_graph && crate::gpu::kernels::cuda_kernels(&self.device)
    }

    /// The update as a replayed CUDA graph (see
    /// [`crate::gpu::graph::GraphedUpdate`]): warm-up updates run the body
    /// eagerly, the next captures it, the rest replay it and read [loss,
    /// mean Q, norm², TD errors] back in one copy; a failed capture turns
    /// the graph off with a warning.
    fn update_graphed(&mut self, shapes: &[Shape]) -> Result<UpdateStats, TrainError> {
        let dev = self.device.clone();
        let (n, generation) = (self.upload.len(), self.optimizer.generation());
        let window = self.window();
        let g = crate::gpu::graph::prepare(&mut self.graph, n, generation, &dev)?;
        let (online, target, config) = (&self.online, &self.target, &self.config);
        let optimizer = &mut self.optimizer;
        let hyper = optimizer.next_hyper();
        let ran = g.run(&dev, &self.upload, &hyper, |input, hyper| {
            let parts = super::unpack(input, shapes)?;
            let (loss, q_mean, td_error) = drqn_loss(online, target, config, window, &parts)?;
            let grads = loss.backward()?;
            let normsq = optimizer.step_in_graph(&grads, config.max_grad_norm, hyper)?;
            let td = config.prioritized.then_some(&td_error);
            Ok(vec![crate::gpu::graph::readback(
                &loss, &q_mean, &normsq, td,
            )?])
        })?;
        let out = ran.settle(&mut self.cuda_graph, || self.graph = None);
        let (stats, td_error) = crate::gpu::graph::stats(&out);
        self.set_priorities(td_error)?;
        Ok(stats)
    }

    /// Whether updates now replay a captured CUDA graph.
    pub fn graph_captured(&self) -> bool {
        self.graph.as_ref().is_some_and(|g| g.captured())
    }

    /// The buffer [`sample_packed`](Self::sample_packed) filled.
    pub(crate) fn packed(&self) -> &[f32] {
        &self.upload
    }

    /// New window priorities for the last sampled batch from its TD errors
    /// `[B · L]` (with prioritized replay; nothing otherwise).
    pub(crate) fn set_priorities(&mut self, td_error: &[f32]) -> Result<(), TrainError> {
        if self.config.prioritized {
            let (starts, mask) = (self.batch.starts.clone(), self.batch.mask.clone());
            self.sequences()
                .update_priorities(&starts, td_error, &mask)?;
        }
        Ok(())
    }

    /// The first half of [`Agent::explore`] (a population runs the network
    /// between the halves, for all members at once): keeps what replay will
    /// store about this step, and returns the network's input row and the
    /// carried state (h, c) `[1, H]` each.
    pub(crate) fn begin_explore(
        &mut self,
        obs: &[f32],
    ) -> Result<(Vec<f32>, Tensor, Tensor), TrainError> {
        self.pending = Some(self.acting.pending(self.config.stored_state)?);
        let x = self.acting.input(self.norm.as_ref(), obs);
        Ok((x, self.acting.h.clone(), self.acting.c.clone()))
    }

    /// The second half: carries the network's new state (h', c', and their
    /// values h' then c', read back with `q`) and draws the ε-greedy action
    /// on its Q values `q`.
    pub(crate) fn end_explore(
        &mut self,
        q: &[f32],
        (h, c, host): (Tensor, Tensor, &[f32]),
        step: u64,
        total: u64,
    ) -> u32 {
        self.acting.advance(h, c, host);
        let epsilon = self.exploration(step - 1, total);
        if self.act_rng.next_f64() < epsilon {
            self.act_rng.below(q.len() as u64) as u32
        } else {
            argmax(q)
        }
    }

    /// Moves the target network toward the online one (copy when τ = 1).
    pub fn update_target(&self) -> Result<(), TrainError> {
        if self.config.tau >= 1.0 {
            crate::nn::copy_params(&self.target, &self.online)?;
        } else {
            crate::nn::polyak(&self.target, &self.online, self.config.tau)?;
        }
        Ok(())
    }
}

/// DRQN's loss on a packed batch's `parts` (as [`Drqn::sample_packed`]
/// makes them: `[B, …]` each, or `[P, B, …]` for a population's stacked
/// networks, whose members' losses are then independent sums). Returns the
/// loss (a scalar; `[P]` stacked), the masked mean Q of the taken actions
/// (likewise) and the TD errors `[B, L]` (`[P, B, L]`).
pub(crate) fn drqn_loss(
    online: &RecurrentQNetwork,
    target: &RecurrentQNetwork,
    config: &DrqnConfig,
    window: WindowSpec,
    parts: &[Tensor],
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let [xs, alive, boot, taken, returns, discounts, mask, weights, inv_valid, rest @ ..] = parts
    else {
        candle_core::bail!("DRQN batch: {} parts, expected 9 or 10", parts.len());
    };
    let (boot, taken) = (boot.to_dtype(DType::U32)?, taken.to_dtype(DType::U32)?);
    let hd = online.hidden();
    let (h0, c0) = match rest {
        [state] => (
            state.narrow(D::Minus1, 0, hd)?,
            state.narrow(D::Minus1, hd, hd)?,
        ),
        _ => {
            // Zero state: [B, H] (stacked [P, B, H]).
            let mut dims = xs.dims()[..xs.rank() - 2].to_vec();
            dims.push(hd);
            let zeros = Tensor::zeros(dims, DType::F32, xs.device())?;
            (zeros.clone(), zeros)
        }
    };

    // Both networks from the same start state; outputs after the burn-in:
    // positions burn..P, so learning step j is at j and a bootstrap
    // position k at k − burn.
    // Without burn-in a window starts at its (live) learning start, so dead
    // positions only follow the episode's end, where no output is read:
    // holding the state there is needed only with a burn-in.
    let burn = window.burn_in;
    let alive = (burn > 0).then_some(alive);
    let q_online = online.unroll(xs, &h0, &c0, alive, burn)?;
    let q_target = target.unroll(xs, &h0, &c0, alive, burn)?.detach();

    let next_target = q_target.gather(&boot, D::Minus2)?;
    let next_value = if config.double {
        let best = q_online
            .detach()
            .gather(&boot, D::Minus2)?
            .argmax_keepdim(D::Minus1)?;
        next_target.gather(&best, D::Minus1)?.squeeze(D::Minus1)?
    } else {
        next_target.max(D::Minus1)?
    };
    let y = (returns + (discounts * next_value)?)?.detach();

    let q_taken = q_online
        .narrow(D::Minus2, 0, window.learn)?
        .contiguous()?
        .gather(&taken, D::Minus1)?
        .squeeze(D::Minus1)?;
    let error = (&q_taken - &y)?;
    let per_step = if config.huber {
        huber(&error)?
    } else {
        (error.sqr()? * 0.5)?
    };
    // Σ over a member's [B, L] steps, times 1 / its live step count.
    let member_sum = |t: &Tensor| -> candle_core::Result<Tensor> {
        t.flatten_from(t.rank() - 2)?.sum(D::Minus1)?.mul(inv_valid)
    };
    let loss = member_sum(&(per_step * mask)?.broadcast_mul(weights)?)?;
    let q_mean = member_sum(&(q_taken.detach() * mask)?)?;
    Ok((loss, q_mean, error.detach()))
}

super::schedule_rounds!(DrqnConfig);

impl super::Scheduled for Drqn {
    type Stats = UpdateStats;

    fn rounds(&self) -> super::Rounds {
        self.config.rounds()
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.optimizer.lr = lr;
    }

    /// Whether a window can be sampled.
    fn has_data(&self) -> bool {
        matches!(&self.replay, Replay::Sequence(r) if r.can_sample())
    }

    fn update_once(&mut self, beta: f64) -> Result<UpdateStats, TrainError> {
        self.update(beta)
    }

    fn move_target(&self) -> Result<(), TrainError> {
        self.update_target()
    }
}

impl Agent for Drqn {
    fn algo(&self) -> &'static str {
        "drqn"
    }

    fn steps_done(&self) -> u64 {
        self.steps_done
    }

    fn set_steps_done(&mut self, steps: u64) {
        self.steps_done = steps;
    }

    /// ε-greedy; the network steps on every observation (random actions too) so
    /// the state follows the history.
    fn explore(&mut self, obs: &[f32], step: u64, total: u64) -> Result<Action, TrainError> {
        let (x, h, c) = self.begin_explore(obs)?;
        let x = Tensor::from_vec(
            x,
            (1, self.online.obs_dim() + self.online.n_actions()),
            &self.device,
        )?;
        let (q, h, c) = self.online.step(&x, &h, &c)?;
        let values = read_step(&q, &h, &c)?;
        let n = self.online.n_actions();
        let (q, state) = values.split_at(n);
        Ok(Action::Discrete(self.end_explore(
            q,
            (h, c, state),
            step,
            total,
        )))
    }

    fn exploration(&self, step: u64, total: u64) -> f64 {
        self.config.exploration.value(step, total)
    }

    fn greedy(&self, obs: &[f32]) -> Result<Action, TrainError> {
        let q = self
            .evaluating
            .borrow_mut()
            .step(self.norm.as_ref(), obs, |x, h, c| self.online.step(x, h, c))?;
        let action = argmax(&q);
        self.evaluating.borrow_mut().applied(action);
        Ok(Action::Discrete(action))
    }

    fn greedy_reset(&self) {
        let mut carry = self.evaluating.borrow_mut();
        if let Ok(zero) = Carry::zero(self.online.hidden(), self.online.n_actions(), &self.device) {
            *carry = zero;
        }
    }

    fn observe(&mut self, step: &EnvStep<'_>) -> Result<(), TrainError> {
        let pending = self.pending.take().ok_or_else(|| {
            TrainError::Config("DRQN stores steps it chose itself (explore, then observe)".into())
        })?;
        let ActionRef::Discrete(action) = step.action else {
            return Err(TrainError::Config("DRQN needs discrete actions".into()));
        };
        if let Some(norm) = &mut self.norm {
            norm.update(step.obs);
        }
        self.sequences().push_step(
            step.obs,
            &pending.prev,
            &pending.state,
            step.action,
            step.reward,
        )?;
        self.acting.applied(action);
        let stored = self.config.stored_state;
        let Replay::Sequence(replay) = &mut self.replay else {
            unreachable!("DRQN is built with a sequence buffer")
        };
        self.acting.finish(replay, step, stored)
    }

    fn episode_start(&mut self) {
        self.sequences().abandon_episode();
        if let Ok(zero) = Carry::zero(self.online.hidden(), self.online.n_actions(), &self.device) {
            self.acting = zero;
        }
        self.pending = None;
    }

    /// A round of `gradient_steps` updates every `train_freq` steps after
    /// `learning_starts` (once a window can be sampled); the target moves every
    /// `target_update_interval` steps.
    fn train_after(&mut self, step: u64, total: u64) -> Result<Option<UpdateStats>, TrainError> {
        super::scheduled(self, step, total)
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

    fn obs_norm(&mut self) -> Option<&mut RunningNorm> {
        self.norm.as_mut()
    }

    /// The one-step policy: `obs`, `prev_action` (one-hot), `h_in`, `c_in` →
    /// `q`, `h_out`, `c_out`, with ONNX's `LSTM` operator.
    fn to_onnx(&self, template: &PolicySpec) -> Result<Vec<u8>, TrainError> {
        let mut spec = template.clone();
        spec.recurrent_hidden_size = self.online.hidden() as u32;
        if let Some(norm) = &self.norm {
            (spec.obs_mean, spec.obs_std) = norm.mean_std();
        }
        spec.validate()
            .map_err(|e| TrainError::Export(format!("policy spec: {e}")))?;
        let (d, n, hd) = (
            self.online.obs_dim(),
            self.online.n_actions(),
            self.online.hidden(),
        );
        if spec.observation_space.dim() != d
            || spec.action_space != (ActionSpace::Discrete { n: n as u32 })
        {
            return Err(TrainError::Export(format!(
                "network is {d}→{n}, the spec disagrees"
            )));
        }
        let mut g = OnnxGraph::new();
        let obs = normalized_obs(&mut g, &spec);
        let x = g.op(
            "Concat",
            &[&obs, INPUT_PREV_ACTION],
            &[Attr::Int("axis", 1)],
            None,
        );
        self.online.to_onnx(
            &mut g,
            &x,
            (INPUT_H, INPUT_C),
            (OUTPUT_Q, OUTPUT_H, OUTPUT_C),
        )?;
        g.finish(
            &[
                (INPUT_OBS, d),
                (INPUT_PREV_ACTION, n),
                (INPUT_H, hd),
                (INPUT_C, hd),
            ],
            &[(OUTPUT_Q, n), (OUTPUT_H, hd), (OUTPUT_C, hd)],
            &spec,
        )
    }
}
