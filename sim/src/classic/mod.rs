//! Gymnasium's classic-control tasks with their exact dynamics, wrapped with the
//! registered time limit.
//!
//! Each task is a [`Dynamics`] (the physics, one file each, readable beside
//! Gymnasium's source); [`ClassicEnv`] adds what they share: the seeded
//! generator, the observation buffer, action checks and the time limit.

pub mod acrobot;
pub mod cartpole;
pub mod mountain_car;
pub mod mountain_car_continuous;
pub mod pendulum;

use reflex_msgs::{Action, ActionSpace, BoxSpace};

use crate::env::{action_fits, Env, Step};
use crate::rng::SimRng;
use crate::SimError;

/// The physics of one classic-control task.
pub trait Dynamics: Default + Send {
    /// Gymnasium id, e.g. `CartPole-v1`.
    const ID: &'static str;
    /// Gymnasium's registered `max_episode_steps`.
    const MAX_EPISODE_STEPS: u32;
    /// Length of the internal state vector.
    const STATE_DIM: usize;

    /// Observation space as Gymnasium declares it.
    fn observation_space() -> BoxSpace;
    /// Action space as Gymnasium declares it.
    fn action_space() -> ActionSpace;
    /// Draws the initial state exactly as Gymnasium's `reset` does.
    fn reset(&mut self, rng: &mut SimRng);
    /// Applies a validated action (see [`ClassicEnv::step`]); returns the reward and
    /// whether the new state is terminal.
    fn apply(&mut self, action: &Action) -> (f64, bool);
    /// Writes the observation of the current state.
    fn observe(&self, obs: &mut [f32]);
    /// The internal state in float64.
    fn state(&self) -> Vec<f64>;
    /// Sets the internal state; `state.len() == STATE_DIM` is checked by the caller.
    fn set_state(&mut self, state: &[f64]);
}

/// A classic-control task with Gymnasium's `TimeLimit`.
#[derive(Debug, Clone)]
pub struct ClassicEnv<D: Dynamics> {
    dynamics: D,
    observation_space: BoxSpace,
    action_space: ActionSpace,
    obs: Vec<f32>,
    rng: SimRng,
    elapsed_steps: u32,
    started: bool,
}

impl<D: Dynamics> Default for ClassicEnv<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: Dynamics> ClassicEnv<D> {
    /// A new env; call `reset` (or `set_state`) before stepping.
    pub fn new() -> Self {
        let observation_space = D::observation_space();
        let obs = vec![0.0; observation_space.dim()];
        Self {
            dynamics: D::default(),
            observation_space,
            action_space: D::action_space(),
            obs,
            rng: SimRng::from_entropy(),
            elapsed_steps: 0,
            started: false,
        }
    }

    /// The physics, for tests and tools that need more than the `Env` view.
    pub fn dynamics(&self) -> &D {
        &self.dynamics
    }

    fn check_action(&self, action: &Action) -> Result<(), SimError> {
        if action_fits(action, &self.action_space) {
            Ok(())
        } else {
            Err(SimError::InvalidAction {
                env: D::ID,
                action: format!("{action:?}"),
                space: format!("{:?}", self.action_space),
            })
        }
    }
}

impl<D: Dynamics> Env for ClassicEnv<D> {
    fn id(&self) -> &str {
        D::ID
    }

    fn observation_space(&self) -> &BoxSpace {
        &self.observation_space
    }

    fn action_space(&self) -> &ActionSpace {
        &self.action_space
    }

    fn max_episode_steps(&self) -> Option<u32> {
        Some(D::MAX_EPISODE_STEPS)
    }

    fn reset(&mut self, seed: Option<u64>) -> &[f32] {
        if let Some(seed) = seed {
            self.rng = SimRng::seed(seed);
        }
        self.dynamics.reset(&mut self.rng);
        self.dynamics.observe(&mut self.obs);
        self.elapsed_steps = 0;
        self.started = true;
        &self.obs
    }

    fn step(&mut self, action: &Action) -> Result<Step, SimError> {
        if !self.started {
            return Err(SimError::NotReset { env: D::ID });
        }
        self.check_action(action)?;
        let (reward, terminated) = self.dynamics.apply(action);
        self.dynamics.observe(&mut self.obs);
        // Gymnasium's TimeLimit: truncated once the elapsed steps reach the limit,
        // independently of (and possibly together with) termination.
        self.elapsed_steps = self.elapsed_steps.saturating_add(1);
        let truncated = self.elapsed_steps >= D::MAX_EPISODE_STEPS;
        Ok(Step {
            reward,
            terminated,
            truncated,
        })
    }

    fn obs(&self) -> &[f32] {
        &self.obs
    }

    fn state(&self) -> Vec<f64> {
        self.dynamics.state()
    }

    fn set_state(&mut self, state: &[f64]) -> Result<(), SimError> {
        if state.len() != D::STATE_DIM {
            return Err(SimError::StateShape {
                env: D::ID,
                expected: D::STATE_DIM,
                found: state.len(),
            });
        }
        if let Some(index) = state.iter().position(|v| !v.is_finite()) {
            return Err(SimError::StateValue {
                env: D::ID,
                index,
                value: state[index],
            });
        }
        self.dynamics.set_state(state);
        self.dynamics.observe(&mut self.obs);
        self.started = true;
        Ok(())
    }

    fn elapsed_steps(&self) -> u32 {
        self.elapsed_steps
    }

    fn set_elapsed_steps(&mut self, steps: u32) {
        self.elapsed_steps = steps;
    }
}

/// A float32 box space from float64 bounds (Gymnasium declares them in float32).
pub(crate) fn box_space(low: &[f64], high: &[f64]) -> BoxSpace {
    BoxSpace {
        low: low.iter().map(|&v| v as f32).collect(),
        high: high.iter().map(|&v| v as f32).collect(),
    }
}

/// The index of a discrete action that [`ClassicEnv`] has already validated.
pub(crate) fn discrete(action: &Action) -> usize {
    match action {
        Action::Discrete(index) => *index as usize,
        Action::Continuous(_) => unreachable!("ClassicEnv validates the action kind"),
    }
}

/// The first component of a continuous action that [`ClassicEnv`] has validated.
pub(crate) fn continuous(action: &Action) -> f32 {
    match action {
        Action::Continuous(values) => values[0],
        Action::Discrete(_) => unreachable!("ClassicEnv validates the action kind"),
    }
}

/// Python's and NumPy's `x ** 2` on float64: a call to libm's `pow`, which differs
/// from the correctly rounded `x * x` in the last bit for about 1 input in 1000.
/// `black_box` keeps LLVM from folding `pow(x, 2.0)` into `x * x`.
pub(crate) fn py_square(x: f64) -> f64 {
    x.powf(std::hint::black_box(2.0))
}

/// NumPy's `x ** 2` on a float32 scalar (libm's `powf`).
pub(crate) fn py_square_f32(x: f32) -> f32 {
    x.powf(std::hint::black_box(2.0))
}
