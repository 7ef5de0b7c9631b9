//! The `Env` trait: a simulated robot shaped like a Gymnasium environment.

use reflex_msgs::{Action, ActionSpace, BoxSpace};

use crate::rng::SimRng;
use crate::SimError;

/// What one `step` returns besides the observation (read it with [`Env::obs`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Reward for this transition, in float64 as Gymnasium returns it.
    pub reward: f64,
    /// The episode reached a terminal state of the task (no bootstrapping past it).
    pub terminated: bool,
    /// The episode was cut by the time limit (the state is not terminal: bootstrap).
    pub truncated: bool,
}

impl Step {
    /// The episode is over, for either reason.
    pub fn done(&self) -> bool {
        self.terminated || self.truncated
    }
}

/// A simulated robot with Gymnasium's interface and semantics.
///
/// Observations are float32 (as Gymnasium's), rewards float64. The time limit
/// (Gymnasium's `TimeLimit` wrapper) is part of every env made by [`crate::make`].
pub trait Env: Send {
    /// The Gymnasium id of the underlying task, e.g. `CartPole-v1`.
    fn id(&self) -> &str;

    /// Observation space with bounds (float32, as Gymnasium declares it).
    fn observation_space(&self) -> &BoxSpace;

    /// Action space: discrete `n` or a box with bounds.
    fn action_space(&self) -> &ActionSpace;

    /// Steps after which an episode is truncated, if the env has a time limit.
    fn max_episode_steps(&self) -> Option<u32>;

    /// Starts a new episode. `Some(seed)` re-seeds the env's generator (as
    /// Gymnasium's `reset(seed=…)`); `None` continues its stream. Returns the
    /// first observation.
    fn reset(&mut self, seed: Option<u64>) -> &[f32];

    /// Applies one action. Discrete actions must be in `0..n`; continuous actions
    /// must have the action space's dimension and be finite (out-of-bound values
    /// are clipped exactly as Gymnasium clips them).
    fn step(&mut self, action: &Action) -> Result<Step, SimError>;

    /// The current observation (after the last `reset` or `step`).
    fn obs(&self) -> &[f32];

    /// The exact internal physical state in float64 (layout per env, as in
    /// Gymnasium's `env.unwrapped.state`).
    fn state(&self) -> Vec<f64>;

    /// Sets the exact internal physical state (for reference checks and tests) and
    /// recomputes the observation. The episode counts as started.
    fn set_state(&mut self, state: &[f64]) -> Result<(), SimError>;

    /// Steps taken in the current episode (what the time limit counts).
    fn elapsed_steps(&self) -> u32;

    /// Overrides the time limit's step counter (for restarting mid-episode).
    fn set_elapsed_steps(&mut self, steps: u32);
}

impl<E: Env + ?Sized> Env for Box<E> {
    fn id(&self) -> &str {
        (**self).id()
    }
    fn observation_space(&self) -> &BoxSpace {
        (**self).observation_space()
    }
    fn action_space(&self) -> &ActionSpace {
        (**self).action_space()
    }
    fn max_episode_steps(&self) -> Option<u32> {
        (**self).max_episode_steps()
    }
    fn reset(&mut self, seed: Option<u64>) -> &[f32] {
        (**self).reset(seed)
    }
    fn step(&mut self, action: &Action) -> Result<Step, SimError> {
        (**self).step(action)
    }
    fn obs(&self) -> &[f32] {
        (**self).obs()
    }
    fn state(&self) -> Vec<f64> {
        (**self).state()
    }
    fn set_state(&mut self, state: &[f64]) -> Result<(), SimError> {
        (**self).set_state(state)
    }
    fn elapsed_steps(&self) -> u32 {
        (**self).elapsed_steps()
    }
    fn set_elapsed_steps(&mut self, steps: u32) {
        (**self).set_elapsed_steps(steps)
    }
}

/// Whether `action` is valid for `space`: the right kind, a discrete index below
/// `n`, or a continuous vector of the right length with finite values (bounds are
/// not checked: envs clip out-of-bound values as Gymnasium does).
pub fn action_fits(action: &Action, space: &ActionSpace) -> bool {
    match (space, action) {
        (ActionSpace::Discrete { n }, Action::Discrete(index)) => index < n,
        (ActionSpace::Box(space), Action::Continuous(values)) => {
            values.len() == space.low.len() && values.iter().all(|v| v.is_finite())
        }
        _ => false,
    }
}

/// A uniformly random action from `space` (a random policy, the baseline every
/// learner must beat): an index below `n`, or each component uniform in its bounds.
pub fn random_action(space: &ActionSpace, rng: &mut SimRng) -> Action {
    match space {
        ActionSpace::Discrete { n } => Action::Discrete(rng.below(u64::from(*n)) as u32),
        ActionSpace::Box(b) => Action::Continuous(
            b.low
                .iter()
                .zip(&b.high)
                .map(|(&lo, &hi)| rng.uniform(f64::from(lo), f64::from(hi)) as f32)
                .collect(),
        ),
    }
}
