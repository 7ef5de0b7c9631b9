//! A vectorized runner: N envs stepped together with automatic reset, for fast
//! data collection.
//!
//! Reset happens in the same step that ends an episode (Gymnasium's `SAME_STEP`
//! autoreset mode): after `step`, `obs()` holds the first observation of the new
//! episode for every env that finished, and `final_obs(i)` the last observation of
//! the finished one, which is what a replay buffer needs as `next_obs`.

use std::collections::VecDeque;

use reflex_msgs::{Action, ActionSpace, BoxSpace};

use crate::env::{action_fits, Env, Step};
use crate::registry::make;
use crate::SimError;

/// One finished episode of a [`VecEnv`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpisodeSummary {
    /// Which env of the vector.
    pub env_index: usize,
    /// Sum of rewards.
    pub episode_return: f64,
    /// Steps taken.
    pub length: u32,
    /// Ended by a terminal state (rather than the time limit only).
    pub terminated: bool,
}

/// Finished-episode summaries kept until drained; older ones are dropped (and
/// counted) so a runner nobody drains does not grow without bound.
pub const MAX_PENDING_EPISODES: usize = 4096;

/// N envs of the same task stepped in lockstep.
pub struct VecEnv {
    envs: Vec<Box<dyn Env>>,
    obs_dim: usize,
    obs: Vec<f32>,
    final_obs: Vec<f32>,
    steps: Vec<Step>,
    returns: Vec<f64>,
    lengths: Vec<u32>,
    finished: VecDeque<EpisodeSummary>,
    dropped_episodes: u64,
}

impl VecEnv {
    /// `n` envs made by name (see [`make`]).
    pub fn new(name: &str, n: usize) -> Result<Self, SimError> {
        let envs = (0..n).map(|_| make(name)).collect::<Result<Vec<_>, _>>()?;
        Self::from_envs(envs)
    }

    /// Vectorizes the given envs, which must share observation and action spaces.
    pub fn from_envs(envs: Vec<Box<dyn Env>>) -> Result<Self, SimError> {
        let first = envs.first().ok_or_else(|| SimError::InvalidParameter {
            wrapper: "vec",
            message: "a vectorized env needs at least one env".into(),
        })?;
        let (obs_space, action_space) = (first.observation_space(), first.action_space());
        if let Some(other) = envs
            .iter()
            .find(|e| e.observation_space() != obs_space || e.action_space() != action_space)
        {
            return Err(SimError::InvalidParameter {
                wrapper: "vec",
                message: format!("{} does not share the spaces of {}", other.id(), first.id()),
            });
        }
        let n = envs.len();
        let obs_dim = obs_space.low.len();
        Ok(Self {
            envs,
            obs_dim,
            obs: vec![0.0; n * obs_dim],
            final_obs: vec![0.0; n * obs_dim],
            steps: vec![
                Step {
                    reward: 0.0,
                    terminated: false,
                    truncated: false
                };
                n
            ],
            returns: vec![0.0; n],
            lengths: vec![0; n],
            finished: VecDeque::new(),
            dropped_episodes: 0,
        })
    }

    /// Number of envs.
    pub fn len(&self) -> usize {
        self.envs.len()
    }

    /// Always false: a `VecEnv` holds at least one env.
    pub fn is_empty(&self) -> bool {
        self.envs.is_empty()
    }

    /// Observation length of one env.
    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    /// The shared observation space.
    pub fn observation_space(&self) -> &BoxSpace {
        self.envs[0].observation_space()
    }

    /// The shared action space.
    pub fn action_space(&self) -> &ActionSpace {
        self.envs[0].action_space()
    }

    /// Resets every env, env `i` with seed `seed + i`; returns all observations,
    /// row-major (`len() × obs_dim()`).
    pub fn reset(&mut self, seed: u64) -> &[f32] {
        for (i, env) in self.envs.iter_mut().enumerate() {
            let obs = env.reset(Some(seed.wrapping_add(i as u64)));
            self.obs[i * self.obs_dim..(i + 1) * self.obs_dim].copy_from_slice(obs);
        }
        self.returns.fill(0.0);
        self.lengths.fill(0);
        &self.obs
    }

    /// Steps every env with its action and resets those whose episode ended.
    /// An invalid action leaves all envs unstepped.
    pub fn step(&mut self, actions: &[Action]) -> Result<&[Step], SimError> {
        if actions.len() != self.envs.len() {
            return Err(SimError::ActionCount {
                expected: self.envs.len(),
                found: actions.len(),
            });
        }
        let space = self.envs[0].action_space();
        if let Some(bad) = actions.iter().find(|a| !action_fits(a, space)) {
            return Err(SimError::InvalidAction {
                env: "vec",
                action: format!("{bad:?}"),
                space: format!("{space:?}"),
            });
        }
        for (i, (env, action)) in self.envs.iter_mut().zip(actions).enumerate() {
            let step = env.step(action)?;
            let row = i * self.obs_dim..(i + 1) * self.obs_dim;
            self.returns[i] += step.reward;
            self.lengths[i] += 1;
            if step.done() {
                self.final_obs[row.clone()].copy_from_slice(env.obs());
                if self.finished.len() == MAX_PENDING_EPISODES {
                    self.finished.pop_front();
                    self.dropped_episodes += 1;
                }
                self.finished.push_back(EpisodeSummary {
                    env_index: i,
                    episode_return: self.returns[i],
                    length: self.lengths[i],
                    terminated: step.terminated,
                });
                self.returns[i] = 0.0;
                self.lengths[i] = 0;
                env.reset(None);
            }
            self.obs[row].copy_from_slice(env.obs());
            self.steps[i] = step;
        }
        Ok(&self.steps)
    }

    /// Current observations, row-major (`len() × obs_dim()`).
    pub fn obs(&self) -> &[f32] {
        &self.obs
    }

    /// The last observation of env `i`'s episode if its last step ended one.
    pub fn final_obs(&self, i: usize) -> Option<&[f32]> {
        self.steps
            .get(i)
            .filter(|s| s.done())
            .map(|_| &self.final_obs[i * self.obs_dim..(i + 1) * self.obs_dim])
    }

    /// Takes the episodes finished since the last call (at most the newest
    /// [`MAX_PENDING_EPISODES`]).
    pub fn drain_episodes(&mut self) -> Vec<EpisodeSummary> {
        self.finished.drain(..).collect()
    }

    /// Episode summaries dropped because more than [`MAX_PENDING_EPISODES`]
    /// piled up undrained.
    pub fn dropped_episodes(&self) -> u64 {
        self.dropped_episodes
    }
}
