//! MountainCar-v0: an under-powered car in a valley must rock its way up to the
//! flag (Moore 1990), with Gymnasium's exact discrete dynamics.

use reflex_msgs::{Action, ActionSpace, BoxSpace};

use super::{box_space, discrete, Dynamics};
use crate::rng::SimRng;

pub(crate) const MIN_POSITION: f64 = -1.2;
pub(crate) const MAX_POSITION: f64 = 0.6;
pub(crate) const MAX_SPEED: f64 = 0.07;
const GOAL_POSITION: f64 = 0.5;
const GOAL_VELOCITY: f64 = 0.0;
const FORCE: f64 = 0.001;
const GRAVITY: f64 = 0.0025;

/// The observation space shared by both mountain-car tasks.
pub(crate) fn observation_space() -> BoxSpace {
    box_space(&[MIN_POSITION, -MAX_SPEED], &[MAX_POSITION, MAX_SPEED])
}

/// The reset draw shared by both mountain-car tasks: position in [-0.6, -0.4), at rest.
pub(crate) fn reset_state(rng: &mut SimRng) -> [f64; 2] {
    [rng.uniform(-0.6, -0.4), 0.0]
}

/// State `[position, velocity]`.
#[derive(Debug, Clone, Default)]
pub struct MountainCar {
    state: [f64; 2],
}

impl Dynamics for MountainCar {
    const ID: &'static str = "MountainCar-v0";
    const MAX_EPISODE_STEPS: u32 = 200;
    const STATE_DIM: usize = 2;

    fn observation_space() -> BoxSpace {
        observation_space()
    }

    fn action_space() -> ActionSpace {
        ActionSpace::Discrete { n: 3 }
    }

    fn reset(&mut self, rng: &mut SimRng) {
        self.state = reset_state(rng);
    }

    fn apply(&mut self, action: &Action) -> (f64, bool) {
        let [mut position, mut velocity] = self.state;
        let push = discrete(action) as f64 - 1.0;
        velocity += push * FORCE + (3.0 * position).cos() * (-GRAVITY);
        velocity = velocity.clamp(-MAX_SPEED, MAX_SPEED);
        position += velocity;
        position = position.clamp(MIN_POSITION, MAX_POSITION);
        // Hitting the left wall stops the car.
        if position == MIN_POSITION && velocity < 0.0 {
            velocity = 0.0;
        }
        self.state = [position, velocity];
        let terminated = position >= GOAL_POSITION && velocity >= GOAL_VELOCITY;
        (-1.0, terminated)
    }

    fn observe(&self, obs: &mut [f32]) {
        obs[0] = self.state[0] as f32;
        obs[1] = self.state[1] as f32;
    }

    fn state(&self) -> Vec<f64> {
        self.state.to_vec()
    }

    fn set_state(&mut self, state: &[f64]) {
        self.state.copy_from_slice(state);
    }
}
