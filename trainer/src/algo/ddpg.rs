//! DDPG (Lillicrap et al. 2016) and TD3 (Fujimoto et al. 2018) for continuous
//! actions, readable top to bottom: the config, the update, the agent.
//!
//! A deterministic actor μ(s) and a critic Q(s, a), each with a target copy that
//! follows by Polyak averaging θ⁻ ← (1 − τ) θ⁻ + τ θ. For a sampled batch
//! (s, a, R, s', d) with d = γ^m (0 if the episode terminated):
//!
//! ```text
//!   a'   = μ⁻(s')                                  (DDPG)
//!        = clip(μ⁻(s') + clip(ε, −c, c), −1, 1),  ε ~ N(0, σ̃²)   (TD3 smoothing)
//!   y    = R + d · Q⁻(s', a')                       (DDPG)
//!        = R + d · min(Q₁⁻(s', a'), Q₂⁻(s', a'))    (TD3 clipped double Q)
//!   L_Q  = Σ_k mean_i w_i (Q_k(s_i, a_i) − y_i)²
//!   L_μ  = −mean_i Q₁(s_i, μ(s_i))                  every `policy_delay` critic updates
//! ```
//!
//! TD3 is DDPG with `twin_critics`, `policy_delay = 2` and target smoothing
//! (`target_noise`, `target_noise_clip`); the targets move only when the actor
//! does. Actions are in normalized units inside (see [`super::continuous`]).

use candle_core::{DType, Device, Tensor, Var, D};
use reflex_msgs::{Action, BoxSpace, PolicySpec};
use reflex_sim::SimRng;
use serde::{Deserialize, Serialize};

use super::continuous::{
    clipped_normal, core_config, forward_to_core, ContinuousBatch, Core, CoreConfig, NoiseConfig,
};
use super::{Agent, UpdateStats};
use crate::nn::stack::Stackable;
use crate::nn::{polyak, Activation, Actor, Critic, NetConfig, Params, VarMap};
use crate::optim::Adam;
use crate::TrainError;

/// Every hyperparameter of a DDPG or TD3 run. Defaults are RL Zoo's
/// Pendulum-v1 DDPG (SB3's DDPG defaults otherwise); [`DdpgConfig::td3`] turns
/// on TD3's three changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DdpgConfig {
    /// Discount factor γ.
    pub gamma: f64,
    /// Actor's Adam learning rate.
    pub actor_learning_rate: f64,
    /// Critic's Adam learning rate.
    pub critic_learning_rate: f64,
    /// Transitions per update.
    pub batch_size: usize,
    /// Replay capacity.
    pub buffer_size: usize,
    /// Env steps of uniformly random actions before the first update.
    pub learning_starts: u64,
    /// Env steps between training rounds.
    pub train_freq: u64,
    /// Critic updates per training round.
    pub gradient_steps: u64,
    /// Polyak coefficient τ of the target networks.
    pub tau: f64,
    /// Exploration noise (normalized action units).
    pub noise: NoiseConfig,
    /// TD3: two critics, the target takes their minimum.
    pub twin_critics: bool,
    /// Critic updates per actor (and target) update; TD3 uses 2.
    pub policy_delay: u64,
    /// TD3's target policy smoothing σ̃ (normalized units; 0 = off).
    pub target_noise: f64,
    /// TD3's smoothing noise clip c.
    pub target_noise_clip: f64,
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
    /// Clip each network's gradient norm to this (none when absent).
    pub max_grad_norm: Option<f64>,
    /// Actor network.
    pub actor: NetConfig,
    /// Critic network (input: observation and action).
    pub critic: NetConfig,
}

/// SB3's `net_arch = [400, 300]` with ReLU and PyTorch's default init.
fn rl_zoo_net() -> NetConfig {
    NetConfig {
        hidden: vec![400, 300],
        activation: Activation::Relu,
        layer_norm: false,
        dueling: false,
        final_init_scale: 1.0,
    }
}

impl Default for DdpgConfig {
    fn default() -> Self {
        Self {
            gamma: 0.98,
            actor_learning_rate: 1e-3,
            critic_learning_rate: 1e-3,
            batch_size: 256,
            buffer_size: 200_000,
            learning_starts: 10_000,
            train_freq: 1,
            gradient_steps: 1,
            tau: 0.005,
            noise: NoiseConfig::default(),
            twin_critics: false,
            policy_delay: 1,
            target_noise: 0.0,
            target_noise_clip: 0.5,
            n_step: 1,
            prioritized: false,
            per_alpha: 0.6,
            per_beta0: 0.4,
            per_eps: 1e-6,
            obs_norm: false,
            max_grad_norm: None,
            actor: rl_zoo_net(),
            critic: rl_zoo_net(),
        }
    }
}

impl DdpgConfig {
    /// TD3's defaults: DDPG's plus twin critics, policy delay 2 and target
    /// smoothing σ̃ = 0.2 clipped at 0.5 (Fujimoto et al., SB3).
    pub fn td3() -> Self {
        Self {
            twin_critics: true,
            policy_delay: 2,
            target_noise: 0.2,
            target_noise_clip: 0.5,
            ..Self::default()
        }
    }

    pub(crate) fn core(&self) -> CoreConfig {
        core_config!(self)
    }
}

/// One or two critics, trained on the same target (feed-forward [`Critic`]s,
/// or recurrent ones in [`super::recurrent_ddpg`]).
#[derive(Debug, Clone)]
pub struct Critics<C = Critic>(pub Vec<C>);

impl<C: Params> Params for Critics<C> {
    fn named_vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        for (k, critic) in self.0.iter().enumerate() {
            for (name, var) in critic.named_vars() {
                out.push((format!("q{k}.{name}"), var));
            }
        }
        out
    }
}

impl<C> Critics<C> {
    /// Copies with their own parameters, by `duplicate` on each critic.
    pub(crate) fn duplicate_with(
        &self,
        duplicate: impl Fn(&C) -> candle_core::Result<C>,
    ) -> candle_core::Result<Self> {
        Ok(Self(
            self.0
                .iter()
                .map(duplicate)
                .collect::<candle_core::Result<_>>()?,
        ))
    }
}

impl<C: Stackable> Stackable for Critics<C> {
    fn map_vars(&self, f: &mut VarMap<'_>) -> candle_core::Result<Self> {
        Ok(Self(
            self.0
                .iter()
                .map(|critic| critic.map_vars(f))
                .collect::<candle_core::Result<_>>()?,
        ))
    }
}

impl Critics {
    fn duplicate(&self) -> candle_core::Result<Self> {
        self.duplicate_with(Critic::duplicate)
    }

    /// min_k Q_k(s, a) `[batch]`.
    pub(crate) fn min_q(&self, obs: &Tensor, action: &Tensor) -> candle_core::Result<Tensor> {
        let mut q = self.0[0].forward(obs, action)?;
        for critic in &self.0[1..] {
            q = q.minimum(&critic.forward(obs, action)?)?;
        }
        Ok(q)
    }
}

/// The learner's state for DDPG or TD3.
pub struct Ddpg {
    /// Hyperparameters.
    pub config: DdpgConfig,
    /// Whether this runs as TD3 (its name in exports and checkpoints).
    pub td3: bool,
    /// μ(s).
    pub actor: Actor,
    /// μ⁻.
    pub actor_target: Actor,
    /// Q₁ (and Q₂).
    pub critics: Critics,
    /// Q⁻.
    pub critic_targets: Critics,
    /// Adam over the actor.
    pub actor_optimizer: Adam,
    /// Adam over the critics.
    pub critic_optimizer: Adam,
    /// Replay, noise, generators, normalization, scaling.
    pub core: Core,
    /// Run updates as captured CUDA graphs (experimental, as [`super::dqn::Dqn`]'s;
    /// starts as `REFLEX_CUDA_GRAPH=1` says; CUDA with the fused kernels
    /// only): one graph for critic-only updates, one for updates that also
    /// move the actor and the targets.
    pub cuda_graph: bool,
    graphs: crate::gpu::graph::ActorCriticGraphs,
}

impl Ddpg {
    /// A fresh learner for an env with `obs_dim` observations and action
    /// `bounds`; `seed` fixes weights and every later draw. `td3` only names it:
    /// the config's switches decide the algorithm.
    pub fn new(
        config: DdpgConfig,
        td3: bool,
        obs_dim: usize,
        bounds: &BoxSpace,
        seed: u64,
        device: &Device,
    ) -> Result<Self, TrainError> {
        if config.policy_delay == 0 {
            return Err(TrainError::Config("policy_delay must be at least 1".into()));
        }
        let core = Core::new(config.core(), obs_dim, bounds, seed, device)?;
        let act_dim = core.scaling.dim();
        let mut init = SimRng::seed(seed);
        let actor = Actor::new(&config.actor, obs_dim, act_dim, &mut init, device)?;
        let n_critics = if config.twin_critics { 2 } else { 1 };
        let critics = Critics(
            (0..n_critics)
                .map(|_| Critic::new(&config.critic, obs_dim, act_dim, &mut init, device))
                .collect::<candle_core::Result<_>>()?,
        );
        Ok(Self {
            actor_target: actor.duplicate()?,
            critic_targets: critics.duplicate()?,
            actor_optimizer: Adam::new(actor.vars(), config.actor_learning_rate)?,
            critic_optimizer: Adam::new(critics.vars(), config.critic_learning_rate)?,
            actor,
            critics,
            core,
            config,
            td3,
            cuda_graph: crate::gpu::graph::requested(),
            graphs: Default::default(),
        })
    }

    /// One critic update, and every `policy_delay`-th time an actor update and
    /// the target moves. `beta` is PER's importance exponent.
    pub fn update(&mut self, beta: f64) -> Result<UpdateStats, TrainError> {
        if self.graphed() {
            return self.update_graphed(beta);
        }
        // On CPU this runs inside candle's own thread pool, so a
        // multi-threaded matmul finds its workers awake. (The closure
        // borrows fields, not `self`: the CUDA graphs are not `Send`.)
        let device = self.core.device.clone();
        crate::nn::fused::with_context(&device, || {
            let batch = self.core.sample(beta)?;
            let c = &self.config;
            let smoothing = if c.target_noise > 0.0 {
                let (rows, cols) = batch.actions.dims2()?;
                Some(clipped_normal(
                    rows,
                    cols,
                    c.target_noise,
                    c.target_noise_clip,
                    &mut self.core.replay_rng,
                    &self.core.device,
                )?)
            } else {
                None
            };
            let (loss, q, td_error) = critic_loss(
                &self.critics,
                &self.critic_targets,
                &self.actor_target,
                &batch,
                smoothing.as_ref(),
            )?;
            let grads = loss.backward()?;
            let grad_norm = self.critic_optimizer.step(&grads, c.max_grad_norm)?;

            // The actor climbs Q₁(s, μ(s)); the targets follow.
            if self.critic_optimizer.steps().is_multiple_of(c.policy_delay) {
                let grads = actor_loss(&self.actor, &self.critics, &batch.obs)?.backward()?;
                self.actor_optimizer.step(&grads, c.max_grad_norm)?;
                polyak(&self.actor_target, &self.actor, c.tau)?;
                polyak(&self.critic_targets, &self.critics, c.tau)?;
            }

            self.core.update_priorities(&td_error)?;
            Ok(UpdateStats {
                loss: loss.to_scalar::<f32>()?,
                q_mean: q.mean_all()?.to_scalar::<f32>()?,
                grad_norm,
            })
        })
    }
}

impl Ddpg {
    /// Whether updates run as captured CUDA graphs: asked for
    /// ([`cuda_graph`](Self::cuda_graph)) on a CUDA device with the fused
    /// kernels.
    fn graphed(&self) -> bool {
        self.cuda_graph && crate::gpu::kernels::cuda_kernels(&self.core.device)
    }

    /// [`update`](Self::update) as a replayed CUDA graph (see
    /// [`crate::gpu::graph::GraphedUpdate`]): the batch and TD3's smoothing
    /// noise are sampled on the host and packed into one upload; critic-only
    /// updates and updates that also move the actor each have their own
    /// graph (warm-up, capture, replays), fed both optimizers' step sizes
    /// through its buffer; [loss, mean Q, norm², TD errors] come back in one
    /// copy. A failed capture turns the graphs off with a warning.
    fn update_graphed(&mut self, beta: f64) -> Result<UpdateStats, TrainError> {
        let c = &self.config;
        let smoothing = (c.target_noise > 0.0).then_some((c.target_noise, c.target_noise_clip));
        let shapes = self.core.sample_packed(beta, smoothing)?;
        let with_actor = (self.critic_optimizer.steps() + 1).is_multiple_of(c.policy_delay);
        let dev = self.core.device.clone();
        let (critic_optimizer, actor_optimizer) =
            (&mut self.critic_optimizer, &mut self.actor_optimizer);
        let (g, hyper) = self.graphs.prepare(
            self.core.packed().len(),
            (&mut *critic_optimizer, &mut *actor_optimizer),
            with_actor,
            &dev,
        )?;
        let per = c.prioritized;
        let nets = (
            &self.actor,
            &self.actor_target,
            &self.critics,
            &self.critic_targets,
        );
        let ran = g.run(&dev, self.core.packed(), &hyper, |input, hyper| {
            let (actor, actor_target, critics, critic_targets) = nets;
            let mut parts = super::unpack(input, &shapes)?;
            let smoothing = (parts.len() == 7).then(|| parts.pop()).flatten();
            let batch = ContinuousBatch::from_parts(parts)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            let (loss, q, td_error) = critic_loss(
                critics,
                critic_targets,
                actor_target,
                &batch,
                smoothing.as_ref(),
            )?;
            let grads = loss.backward()?;
            let normsq =
                critic_optimizer.step_in_graph(&grads, c.max_grad_norm, &hyper.narrow(0, 0, 2)?)?;
            if with_actor {
                let grads = actor_loss(actor, critics, &batch.obs)?.backward()?;
                actor_optimizer.step_in_graph(&grads, c.max_grad_norm, &hyper.narrow(0, 2, 2)?)?;
                polyak(actor_target, actor, c.tau)?;
                polyak(critic_targets, critics, c.tau)?;
            }
            let td = per.then_some(&td_error);
            Ok(vec![crate::gpu::graph::readback(
                &loss,
                &q.mean_all()?,
                &normsq,
                td,
            )?])
        })?;
        let out = ran.settle(&mut self.cuda_graph, || self.graphs.clear());
        let (stats, td_error) = crate::gpu::graph::stats(&out);
        self.core.set_priorities(td_error)?;
        Ok(stats)
    }

    /// Whether both updates (critic-only, and with the actor) now replay
    /// captured CUDA graphs.
    pub fn graph_captured(&self) -> bool {
        self.graphs.captured()
    }
}

/// The critics' regression onto the (TD3: smoothed, clipped double-Q)
/// target for `batch`: a learner's (`[batch, …]` tensors) or a population's
/// (`[P, batch, …]`, stacked networks), each member's mean over its own
/// rows. `smoothing` is TD3's clipped target noise, shaped as the actions.
/// Returns the loss (a scalar, or `[P]`), the first critic's Q and its TD
/// error (detached, shaped as the rewards).
pub(crate) fn critic_loss(
    critics: &Critics,
    critic_targets: &Critics,
    actor_target: &Actor,
    batch: &ContinuousBatch,
    smoothing: Option<&Tensor>,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    // The target, without gradients.
    let mut next_action = actor_target.forward(&batch.next_obs)?;
    if let Some(smoothing) = smoothing {
        next_action = (next_action + smoothing)?.clamp(-1f32, 1f32)?;
    }
    let next_q = critic_targets.min_q(&batch.next_obs, &next_action)?;
    let y = (&batch.rewards + (&batch.discounts * next_q)?)?.detach();

    // Every critic regresses onto y.
    let members = &y.dims()[..y.rank() - 1];
    let mut loss = Tensor::zeros(members, DType::F32, y.device())?;
    let mut first = None;
    for critic in &critics.0 {
        let q = critic.forward(&batch.obs, &batch.actions)?;
        let error = (&q - &y)?;
        loss = (loss + (error.sqr()? * &batch.weights)?.mean(D::Minus1)?)?;
        first.get_or_insert((q.detach(), error.detach()));
    }
    let (q, td_error) = first.expect("at least one critic");
    Ok((loss, q, td_error))
}

/// The actor's loss −Q₁(s, μ(s)) averaged over `obs`'s rows (per member for
/// a population's `[P, batch, obs_dim]`), with the critic frozen: only
/// ∂Q/∂a flows back, into the actor.
pub(crate) fn actor_loss(
    actor: &Actor,
    critics: &Critics,
    obs: &Tensor,
) -> candle_core::Result<Tensor> {
    let mu = actor.forward(obs)?;
    critics.0[0]
        .forward_frozen(obs, &mu)?
        .mean(D::Minus1)?
        .neg()
}

impl Agent for Ddpg {
    forward_to_core!();

    fn algo(&self) -> &'static str {
        if self.td3 {
            "td3"
        } else {
            "ddpg"
        }
    }

    /// Uniform random actions before `learning_starts`, then μ(s) + noise.
    fn explore(&mut self, obs: &[f32], step: u64, total: u64) -> Result<Action, TrainError> {
        let actor = &self.actor;
        self.core.explore(step, total, |core| {
            Ok(actor.forward(&core.obs_tensor(obs)?)?)
        })
    }

    fn greedy(&self, obs: &[f32]) -> Result<Action, TrainError> {
        let mu = self.actor.forward(&self.core.obs_tensor(obs)?)?;
        self.core.env_action(&mu)
    }

    super::actor_critic_slots!();

    fn to_onnx(&self, template: &PolicySpec) -> Result<Vec<u8>, TrainError> {
        self.core.to_onnx(template, |g, x| self.actor.to_onnx(g, x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pendulum_bounds() -> BoxSpace {
        BoxSpace {
            low: vec![-2.0],
            high: vec![2.0],
        }
    }

    fn small(td3: bool) -> DdpgConfig {
        let net = NetConfig {
            hidden: vec![16],
            ..rl_zoo_net()
        };
        let base = if td3 {
            DdpgConfig::td3()
        } else {
            DdpgConfig::default()
        };
        DdpgConfig {
            batch_size: 8,
            learning_starts: 0,
            actor: net.clone(),
            critic: net,
            ..base
        }
    }

    #[test]
    fn polyak_moves_targets_by_tau() {
        let dev = Device::Cpu;
        let net = NetConfig {
            hidden: vec![4],
            ..rl_zoo_net()
        };
        let a = Actor::new(&net, 3, 1, &mut SimRng::seed(1), &dev).unwrap();
        let b = Actor::new(&net, 3, 1, &mut SimRng::seed(2), &dev).unwrap();
        let before: Vec<Vec<f32>> = a
            .vars()
            .iter()
            .map(|v| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
            .collect();
        let src: Vec<Vec<f32>> = b
            .vars()
            .iter()
            .map(|v| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
            .collect();
        polyak(&a, &b, 0.25).unwrap();
        for ((var, old), new) in a.vars().iter().zip(&before).zip(&src) {
            let got: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            for ((g, o), n) in got.iter().zip(old).zip(new) {
                assert!((g - (0.75 * o + 0.25 * n)).abs() < 1e-6, "{g} {o} {n}");
            }
        }
        // τ = 1 copies.
        polyak(&a, &b, 1.0).unwrap();
        assert_eq!(
            a.vars()[0]
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            src[0]
        );
    }

    #[test]
    fn td3_delays_the_actor_and_the_targets() {
        let mut agent =
            Ddpg::new(small(true), true, 3, &pendulum_bounds(), 0, &Device::Cpu).unwrap();
        assert_eq!(agent.critics.0.len(), 2);
        for i in 0..20 {
            let obs = [i as f32 * 0.1, 0.5, -0.2];
            agent
                .observe(&crate::replay::EnvStep {
                    obs: &obs,
                    action: crate::replay::ActionRef::Continuous(&[1.5]),
                    reward: -1.0,
                    next_obs: &obs,
                    terminated: false,
                    truncated: false,
                })
                .unwrap();
        }
        let target_before = agent.actor_target.vars()[0]
            .as_tensor()
            .to_vec2::<f32>()
            .unwrap();
        agent.update(1.0).unwrap();
        assert_eq!(agent.actor_optimizer.steps(), 0, "actor waits one update");
        assert_eq!(
            agent.actor_target.vars()[0]
                .as_tensor()
                .to_vec2::<f32>()
                .unwrap(),
            target_before,
            "targets wait with the actor"
        );
        agent.update(1.0).unwrap();
        assert_eq!(
            (
                agent.critic_optimizer.steps(),
                agent.actor_optimizer.steps()
            ),
            (2, 1)
        );
        assert_ne!(
            agent.actor_target.vars()[0]
                .as_tensor()
                .to_vec2::<f32>()
                .unwrap(),
            target_before
        );
    }

    #[test]
    fn actions_respect_the_bounds() {
        let mut agent =
            Ddpg::new(small(false), false, 3, &pendulum_bounds(), 0, &Device::Cpu).unwrap();
        // Blow the actor's output layer up so μ(s) saturates far outside.
        for var in agent.actor.vars() {
            var.set(&(var.as_tensor() * 1e4).unwrap()).unwrap();
        }
        for k in 0..200 {
            let obs = [k as f32 - 100.0, 1.0, -3.0];
            for action in [
                agent.greedy(&obs).unwrap(),
                agent.explore(&obs, 1 + k as u64, 1000).unwrap(),
            ] {
                let Action::Continuous(a) = action else {
                    panic!("continuous")
                };
                assert!((-2.0..=2.0).contains(&a[0]), "{a:?}");
            }
        }
    }
}
