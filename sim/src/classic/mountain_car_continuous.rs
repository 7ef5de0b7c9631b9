//! MountainCarContinuous-v0: the mountain car with a continuous engine force and an
//! energy penalty, reproducing Gymnasium's mixed float32/float64 arithmetic.
//!
//! Gymnasium keeps this env's state as a float32 array after every step (it is
//! float64 only right after `reset`), so NumPy evaluates most of the update in
//! float32 from the second step on. Under NumPy 2's promotion rules (NEP 50) a
//! Python float meeting a float32 value is rounded to float32 first, comparisons
//! included. This file follows those roundings, so it matches Gymnasium bit for bit
//! rather than within 1e-7.

use reflex_msgs::{Action, ActionSpace, BoxSpace};

use super::mountain_car::{observation_space, reset_state, MAX_POSITION, MAX_SPEED, MIN_POSITION};
use super::{box_space, continuous, py_square, Dynamics};
use crate::rng::SimRng;

const MIN_ACTION: f32 = -1.0;
const MAX_ACTION: f32 = 1.0;
const GOAL_POSITION: f64 = 0.45;
const GOAL_VELOCITY: f64 = 0.0;
const POWER: f64 = 0.0015;
const GRAVITY: f64 = 0.0025;
/// Reward for reaching the goal.
const GOAL_REWARD: f64 = 100.0;

/// State `[position, velocity]` and the precision Gymnasium holds it in.
#[derive(Debug, Clone, Default)]
pub struct MountainCarContinuous {
    position: f64,
    velocity: f64,
    /// True once the state has been stored as float32 (after the first step).
    stored_f32: bool,
}

impl MountainCarContinuous {
    /// The first step after reset: float64 state, float32 action.
    fn apply_f64(&mut self, action: f32) {
        let gravity = GRAVITY * (3.0 * self.position).cos();
        // `force` stays float32 unless clipping replaced it with a Python float.
        let delta = if (MIN_ACTION..=MAX_ACTION).contains(&action) {
            f64::from(action * POWER as f32 - gravity as f32)
        } else {
            f64::from(action.clamp(MIN_ACTION, MAX_ACTION)) * POWER - gravity
        };
        let mut velocity = (self.velocity + delta).clamp(-MAX_SPEED, MAX_SPEED);
        let position = (self.position + velocity).clamp(MIN_POSITION, MAX_POSITION);
        if position == MIN_POSITION && velocity < 0.0 {
            velocity = 0.0;
        }
        (self.position, self.velocity) = (position, velocity);
    }

    /// Later steps: the state is float32 and so is most of the arithmetic.
    fn apply_f32(&mut self, action: f32) {
        let (position, velocity) = (self.position as f32, self.velocity as f32);
        let gravity = GRAVITY * f64::from(3.0_f32 * position).cos();
        let velocity = if (MIN_ACTION..=MAX_ACTION).contains(&action) {
            velocity + (action * POWER as f32 - gravity as f32)
        } else {
            let force = f64::from(action.clamp(MIN_ACTION, MAX_ACTION));
            velocity + (force * POWER - gravity) as f32
        };
        let mut velocity = velocity.clamp(-MAX_SPEED as f32, MAX_SPEED as f32);
        let position = (position + velocity).clamp(MIN_POSITION as f32, MAX_POSITION as f32);
        if position == MIN_POSITION as f32 && velocity < 0.0 {
            velocity = 0.0;
        }
        (self.position, self.velocity) = (position.into(), velocity.into());
    }

    /// The goal test, compared in the precision the state is held in.
    fn at_goal(&self) -> bool {
        if self.stored_f32 {
            self.position as f32 >= GOAL_POSITION as f32
                && self.velocity as f32 >= GOAL_VELOCITY as f32
        } else {
            self.position >= GOAL_POSITION && self.velocity >= GOAL_VELOCITY
        }
    }
}

impl Dynamics for MountainCarContinuous {
    const ID: &'static str = "MountainCarContinuous-v0";
    const MAX_EPISODE_STEPS: u32 = 999;
    const STATE_DIM: usize = 2;

    fn observation_space() -> BoxSpace {
        observation_space()
    }

    fn action_space() -> ActionSpace {
        ActionSpace::Box(box_space(
            &[f64::from(MIN_ACTION)],
            &[f64::from(MAX_ACTION)],
        ))
    }

    fn reset(&mut self, rng: &mut SimRng) {
        [self.position, self.velocity] = reset_state(rng);
        self.stored_f32 = false;
    }

    fn apply(&mut self, action: &Action) -> (f64, bool) {
        let action = continuous(action);
        if self.stored_f32 {
            self.apply_f32(action);
        } else {
            self.apply_f64(action);
        }
        let terminated = self.at_goal();
        // Gymnasium stores the new state as float32.
        self.position = f64::from(self.position as f32);
        self.velocity = f64::from(self.velocity as f32);
        self.stored_f32 = true;
        // The energy penalty uses the action as given, before clipping.
        let penalty = py_square(f64::from(action)) * 0.1;
        let reward = if terminated { GOAL_REWARD } else { 0.0 } - penalty;
        (reward, terminated)
    }

    fn observe(&self, obs: &mut [f32]) {
        obs[0] = self.position as f32;
        obs[1] = self.velocity as f32;
    }

    fn state(&self) -> Vec<f64> {
        vec![self.position, self.velocity]
    }

    /// A state whose values are all exactly float32 is taken to be a stored
    /// (post-step) state; any other is a float64 state as right after `reset`.
    fn set_state(&mut self, state: &[f64]) {
        (self.position, self.velocity) = (state[0], state[1]);
        self.stored_f32 = state.iter().all(|&v| f64::from(v as f32) == v);
    }
}
