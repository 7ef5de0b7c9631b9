//! Pendulum-v1: swing a frictionless pendulum up and keep it upright, with
//! Gymnasium's exact dynamics, including the float32 steps NumPy takes because
//! the torque arrives as float32.

use std::f64::consts::PI;

use reflex_msgs::{Action, ActionSpace, BoxSpace};

use super::{box_space, continuous, py_square, py_square_f32, Dynamics};
use crate::rng::SimRng;

/// Angular speed limit, rad/s.
const MAX_SPEED: f64 = 8.0;
/// Torque limit, N·m.
const MAX_TORQUE: f32 = 2.0;
/// Seconds per step.
const DT: f64 = 0.05;
const G: f64 = 10.0;
const M: f64 = 1.0;
const L: f64 = 1.0;

/// Wraps an angle to [-π, π) the way Gymnasium's `angle_normalize` does
/// (NumPy's `%` takes the sign of the divisor, like `rem_euclid` here).
fn angle_normalize(x: f64) -> f64 {
    (x + PI).rem_euclid(2.0 * PI) - PI
}

/// State `[theta, theta_dot]`; theta is not wrapped (only the cost wraps it).
#[derive(Debug, Clone, Default)]
pub struct Pendulum {
    state: [f64; 2],
}

impl Dynamics for Pendulum {
    const ID: &'static str = "Pendulum-v1";
    const MAX_EPISODE_STEPS: u32 = 200;
    const STATE_DIM: usize = 2;

    fn observation_space() -> BoxSpace {
        box_space(&[-1.0, -1.0, -MAX_SPEED], &[1.0, 1.0, MAX_SPEED])
    }

    fn action_space() -> ActionSpace {
        let torque = f64::from(MAX_TORQUE);
        ActionSpace::Box(box_space(&[-torque], &[torque]))
    }

    fn reset(&mut self, rng: &mut SimRng) {
        self.state = [rng.uniform(-PI, PI), rng.uniform(-1.0, 1.0)];
    }

    fn apply(&mut self, action: &Action) -> (f64, bool) {
        let [th, thdot] = self.state;
        // Clipping happens in float32, and so do the products with the torque.
        let u: f32 = continuous(action).clamp(-MAX_TORQUE, MAX_TORQUE);
        let torque_cost = 0.001_f32 * py_square_f32(u);
        let cost = py_square(angle_normalize(th)) + 0.1 * py_square(thdot) + f64::from(torque_cost);
        // `3 / (m l²)` is a Python float; its product with the float32 torque is float32.
        let torque_term = f64::from((3.0 / (M * L * L)) as f32 * u);
        let newthdot = thdot + (3.0 * G / (2.0 * L) * th.sin() + torque_term) * DT;
        let newthdot = newthdot.clamp(-MAX_SPEED, MAX_SPEED);
        let newth = th + newthdot * DT;
        self.state = [newth, newthdot];
        // The reward is the cost of the pre-step state; Pendulum never terminates.
        (-cost, false)
    }

    fn observe(&self, obs: &mut [f32]) {
        let [theta, thetadot] = self.state;
        obs[0] = theta.cos() as f32;
        obs[1] = theta.sin() as f32;
        obs[2] = thetadot as f32;
    }

    fn state(&self) -> Vec<f64> {
        self.state.to_vec()
    }

    fn set_state(&mut self, state: &[f64]) {
        self.state.copy_from_slice(state);
    }
}
