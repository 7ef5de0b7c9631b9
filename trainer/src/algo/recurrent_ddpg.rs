//! Recurrent DDPG and TD3 (`--recurrent` with `--algo ddpg|td3`) for partially
//! observed continuous control, readable top to bottom: the update, the agent.
//!
//! Every network reads the history through its own LSTM over [o_t, a_{t−1}]
//! and puts the usual head on h_t: the actor μ(h^μ_t), each critic
//! Q(h^Q_t, a_t). Separate encoders for actor and critics, as in Ni et al.
//! (2022, "Recurrent model-free RL can be a strong baseline for many POMDPs").
//! Learning is DDPG/TD3 (see [`super::ddpg`]) on windows of sequence replay
//! (see [`super::recurrent`] for the windows, start states and acting):
//!
//! ```text
//!   a'_t = μ⁻(h^μ⁻_{t+m}) (+ TD3's clipped smoothing noise)
//!   y_t  = Σ_{i<m} γ^i r_{t+i} + γ^m min_k Q_k⁻(h^Q⁻_{t+m}, a'_t)    (0 after termination)
//!   L_Q  = Σ_k Σ_t w · mask_t (Q_k(h^Q_t, a_t) − y_t)² / Σ_t mask_t
//!   L_μ  = −Σ_t mask_t Q₁(h^Q_t, μ(h^μ_t)) / Σ_t mask_t     every `policy_delay` critic updates
//! ```
//!
//! The actor's windows start from its stored state, the critics' from zeros
//! (both warm up over the burn-in). In the actor's loss the critic (head and
//! its hidden states) is frozen: only ∂Q/∂a flows, into the actor's head and
//! through time into its LSTM.

use candle_core::{DType, Device, Tensor};
use reflex_msgs::{Action, BoxSpace, PolicySpec};

use super::continuous::clipped_normal;
use super::ddpg::{Critics, DdpgConfig};
use super::recurrent::{forward_to_sequence_core, LstmConfig, SequenceCore};
use super::{Agent, UpdateStats};
use crate::nn::{polyak, Actor, Critic, Params, Recurrent};
use crate::optim::Adam;
use crate::TrainError;
use reflex_sim::SimRng;

/// The learner's state for recurrent DDPG or TD3.
pub struct RecurrentDdpg {
    /// DDPG/TD3 hyperparameters (`batch_size` counts windows).
    pub config: DdpgConfig,
    /// Whether this runs as TD3 (its name in exports and checkpoints).
    pub td3: bool,
    /// μ(h^μ_t).
    pub actor: Recurrent<Actor>,
    /// μ⁻.
    pub actor_target: Recurrent<Actor>,
    /// Q₁ (and Q₂), each with its own LSTM.
    pub critics: Critics<Recurrent<Critic>>,
    /// Q⁻.
    pub critic_targets: Critics<Recurrent<Critic>>,
    /// Adam over the actor.
    pub actor_optimizer: Adam,
    /// Adam over the critics.
    pub critic_optimizer: Adam,
    /// Sequence replay, acting state, noise, generators, normalization, scaling.
    pub core: SequenceCore,
}

impl RecurrentDdpg {
    /// A fresh learner for an env with `obs_dim` observations and action
    /// `bounds`; `seed` fixes weights and every later draw. `td3` only names it:
    /// the config's switches decide the algorithm.
    pub fn new(
        config: DdpgConfig,
        lstm: LstmConfig,
        td3: bool,
        obs_dim: usize,
        bounds: &BoxSpace,
        seed: u64,
        device: &Device,
    ) -> Result<Self, TrainError> {
        if config.policy_delay == 0 {
            return Err(TrainError::Config("policy_delay must be at least 1".into()));
        }
        let hidden = lstm.hidden;
        let core = SequenceCore::new(config.core(), lstm, obs_dim, bounds, seed, device)?;
        let m = core.scaling.dim();
        let mut init = SimRng::seed(seed);
        let actor = Recurrent::<Actor>::new(&config.actor, obs_dim, m, hidden, &mut init, device)?;
        let n_critics = if config.twin_critics { 2 } else { 1 };
        let critics = Critics(
            (0..n_critics)
                .map(|_| {
                    Recurrent::<Critic>::new(&config.critic, obs_dim, m, hidden, &mut init, device)
                })
                .collect::<candle_core::Result<_>>()?,
        );
        Ok(Self {
            actor_target: actor.duplicate()?,
            critic_targets: critics.duplicate_with(Recurrent::<Critic>::duplicate)?,
            actor_optimizer: Adam::new(actor.vars(), config.actor_learning_rate)?,
            critic_optimizer: Adam::new(critics.vars(), config.critic_learning_rate)?,
            actor,
            critics,
            core,
            config,
            td3,
        })
    }

    /// One critic update, and every `policy_delay`-th time an actor update and
    /// the target moves. `beta` is PER's importance exponent.
    pub fn update(&mut self, beta: f64) -> Result<UpdateStats, TrainError> {
        let w = self.core.sample(beta)?;
        let c = &self.config;

        // The target, without gradients.
        let next_h = w
            .states(&self.actor_target, true)?
            .detach()
            .index_select(&w.boot_rows, 0)?;
        let mut next_action = self.actor_target.head.forward(&next_h)?.detach();
        if c.target_noise > 0.0 {
            let (rows, cols) = next_action.dims2()?;
            let smoothing = clipped_normal(
                rows,
                cols,
                c.target_noise,
                c.target_noise_clip,
                &mut self.core.replay_rng,
                &self.core.device,
            )?;
            next_action = (next_action + smoothing)?.clamp(-1f32, 1f32)?;
        }
        let mut next_q: Option<Tensor> = None;
        for target in &self.critic_targets.0 {
            let h = w
                .states(target, false)?
                .detach()
                .index_select(&w.boot_rows, 0)?;
            let q = target.head.forward(&h, &next_action)?;
            next_q = Some(match next_q {
                Some(min) => min.minimum(&q)?,
                None => q,
            });
        }
        let next_q = next_q.expect("at least one critic").detach();
        let y = (&w.returns + (&w.discounts * next_q)?)?.detach();

        // Every critic regresses onto y over the learning steps.
        let mut loss = Tensor::zeros((), DType::F32, &self.core.device)?;
        let mut first = None;
        for critic in &self.critics.0 {
            let h = w.states(critic, false)?.index_select(&w.learn_rows, 0)?;
            let q = critic.head.forward(&h, &w.actions)?;
            let error = (&q - &y)?;
            loss = (loss + (error.sqr()? * &w.weights)?.sum_all()?)?;
            first.get_or_insert((q.detach(), error.detach(), h.detach()));
        }
        let grads = loss.backward()?;
        let grad_norm = self.critic_optimizer.step(&grads, c.max_grad_norm)?;
        let (q, td_error, critic_h) = first.expect("at least one critic");

        // The actor climbs Q₁(h^Q_t, μ(h^μ_t)) through a frozen critic; the
        // targets follow. h^Q_t are the critic's states from before its step
        // just now (its head is the stepped one): a deliberate shortcut that
        // saves a second unroll of the critic, at the cost of one Adam step of
        // staleness in its LSTM. The feed-forward learners have no such gap.
        if self.critic_optimizer.steps().is_multiple_of(c.policy_delay) {
            let h = w
                .states(&self.actor, true)?
                .index_select(&w.learn_rows, 0)?;
            let mu = self.actor.head.forward(&h)?;
            let q_mu = self.critics.0[0].head.forward_frozen(&critic_h, &mu)?;
            let actor_loss = (q_mu * &w.mask_mean)?.sum_all()?.neg()?;
            let grads = actor_loss.backward()?;
            self.actor_optimizer.step(&grads, c.max_grad_norm)?;
            polyak(&self.actor_target, &self.actor, c.tau)?;
            polyak(&self.critic_targets, &self.critics, c.tau)?;
        }

        self.core.update_priorities(&td_error)?;
        Ok(UpdateStats {
            loss: loss.to_scalar::<f32>()?,
            q_mean: (q * &w.mask_mean)?.sum_all()?.to_scalar::<f32>()?,
            grad_norm,
        })
    }
}

impl Agent for RecurrentDdpg {
    forward_to_sequence_core!();

    fn algo(&self) -> &'static str {
        if self.td3 {
            "td3"
        } else {
            "ddpg"
        }
    }

    /// Uniform random actions before `learning_starts`, then μ + noise; the
    /// actor steps on every observation either way.
    fn explore(&mut self, obs: &[f32], step: u64, total: u64) -> Result<Action, TrainError> {
        let actor = &self.actor;
        self.core
            .explore(obs, step, total, |x, h, c| actor.step(x, h, c))
    }

    fn greedy(&self, obs: &[f32]) -> Result<Action, TrainError> {
        self.core.greedy(obs, |x, h, c| self.actor.step(x, h, c))
    }

    super::actor_critic_slots!();

    /// The one-step policy (see [`SequenceCore::to_onnx`]).
    fn to_onnx(&self, template: &PolicySpec) -> Result<Vec<u8>, TrainError> {
        self.core.to_onnx(template, |g, x, state_in, state_out| {
            self.actor.to_onnx(g, x, state_in, state_out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::NetConfig;
    use crate::replay::{ActionRef, EnvStep, Replay, SequenceBatch, WindowSpec};

    fn pendulum_bounds() -> BoxSpace {
        BoxSpace {
            low: vec![-2.0],
            high: vec![2.0],
        }
    }

    fn small() -> (DdpgConfig, LstmConfig) {
        let net = NetConfig {
            hidden: vec![8],
            final_init_scale: 1.0,
            ..NetConfig::default()
        };
        let config = DdpgConfig {
            batch_size: 4,
            learning_starts: 0,
            actor: net.clone(),
            critic: net,
            ..DdpgConfig::td3()
        };
        let lstm = LstmConfig {
            hidden: 6,
            seq_len: 4,
            burn_in: 2,
            ..LstmConfig::default()
        };
        (config, lstm)
    }

    /// Runs `steps` env steps of a made-up 2-observation env through explore
    /// and observe, ending an episode every 10 steps; returns the env actions.
    fn feed(agent: &mut RecurrentDdpg, steps: u64) -> Vec<f32> {
        let mut applied = Vec::new();
        agent.episode_start();
        for t in 0..steps {
            let obs = [(t as f32 * 0.3).cos(), (t as f32 * 0.3).sin()];
            let next = [(t as f32 * 0.3 + 0.3).cos(), (t as f32 * 0.3 + 0.3).sin()];
            let Action::Continuous(a) = agent.explore(&obs, t + 1, 1000).unwrap() else {
                panic!("continuous")
            };
            let done = t % 10 == 9;
            agent
                .observe(&EnvStep {
                    obs: &obs,
                    action: ActionRef::Continuous(&a),
                    reward: -(t as f32 % 7.0),
                    next_obs: &next,
                    terminated: false,
                    truncated: done,
                })
                .unwrap();
            applied.push(a[0]);
            if done {
                agent.episode_start();
            }
        }
        applied
    }

    fn values(p: &dyn Params) -> Vec<(String, Vec<f32>)> {
        p.named_vars()
            .into_iter()
            .map(|(name, v)| {
                (
                    name,
                    v.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn updates_reach_every_lstm_and_the_actor_waits_for_the_policy_delay() {
        let (config, lstm) = small();
        let mut agent =
            RecurrentDdpg::new(config, lstm, true, 2, &pendulum_bounds(), 0, &Device::Cpu).unwrap();
        feed(&mut agent, 40);
        let (actor0, critics0) = (values(&agent.actor), values(&agent.critics));
        let target0 = values(&agent.actor_target);
        agent.update(1.0).unwrap();
        assert_eq!(values(&agent.actor), actor0, "the actor waits one update");
        assert_eq!(values(&agent.actor_target), target0, "targets wait with it");
        let critics1 = values(&agent.critics);
        for ((name, before), (_, after)) in critics0.iter().zip(&critics1) {
            assert_ne!(before, after, "critic parameter {name} got no gradient");
        }
        assert!(critics0.iter().any(|(n, _)| n.starts_with("q1.lstm.")));
        agent.update(1.0).unwrap();
        for ((name, before), (_, after)) in actor0.iter().zip(&values(&agent.actor)) {
            assert_ne!(before, after, "actor parameter {name} got no gradient");
        }
        assert_ne!(values(&agent.actor_target), target0);
        assert_eq!(agent.actor_optimizer.steps(), 1);
    }

    #[test]
    fn the_next_steps_previous_action_is_the_applied_one_normalized() {
        let (config, lstm) = small();
        let mut agent =
            RecurrentDdpg::new(config, lstm, true, 2, &pendulum_bounds(), 3, &Device::Cpu).unwrap();
        feed(&mut agent, 60);
        let window = WindowSpec {
            burn_in: 0,
            learn: 4,
            n_step: 1,
            gamma: 0.9,
        };
        let Replay::Sequence(replay) = &agent.core.replay else {
            panic!("sequence replay")
        };
        let mut batch = SequenceBatch::default();
        let mut rng = SimRng::seed(1);
        replay
            .sample_into(16, window, 1.0, &mut rng, &mut batch)
            .unwrap();
        let p = batch.positions;
        let mut checked = 0;
        for i in 0..16 {
            for j in 0..3 {
                if batch.mask[i * 4 + j] == 1.0 && batch.alive[i * p + j + 1] == 1.0 {
                    let prev = batch.prev_actions[i * p + j + 1];
                    let taken = batch.actions[i * 4 + j];
                    assert!((prev - taken / 2.0).abs() < 1e-6, "{prev} vs {taken}");
                    assert!(taken.abs() <= 2.0 && taken != 0.0);
                    checked += 1;
                }
            }
        }
        assert!(checked > 20, "only {checked} pairs");
    }

    #[test]
    fn acting_carries_the_state_and_an_episode_start_zeroes_it() {
        let (config, lstm) = small();
        let mut agent =
            RecurrentDdpg::new(config, lstm, false, 2, &pendulum_bounds(), 5, &Device::Cpu)
                .unwrap();
        let obs = [0.5, -0.5];
        let greedy = |agent: &RecurrentDdpg| match agent.greedy(&obs).unwrap() {
            Action::Continuous(a) => a[0],
            Action::Discrete(_) => panic!("continuous"),
        };
        agent.greedy_reset();
        let first = greedy(&agent);
        let second = greedy(&agent);
        assert_ne!(
            first, second,
            "the same observation twice reads the history"
        );
        agent.greedy_reset();
        assert_eq!(greedy(&agent), first);
        // Training's carry is separate from evaluation's.
        agent.episode_start();
        assert!(agent.core.acting_state().iter().all(|v| *v == 0.0));
        agent.explore(&obs, 1, 10).unwrap();
        assert!(agent.core.acting_state().iter().any(|v| *v != 0.0));
        agent.episode_start();
        assert!(agent.core.acting_state().iter().all(|v| *v == 0.0));
        assert!(agent.core.acting_prev().iter().all(|v| *v == 0.0));
    }
}
