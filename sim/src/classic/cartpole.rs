//! CartPole-v1: a pole on a cart, pushed left or right (Barto, Sutton & Anderson
//! 1983), exactly as Gymnasium 1.x computes it (Euler integration, float64 state,
//! float32 observation).

use reflex_msgs::{Action, ActionSpace, BoxSpace};

use super::{box_space, discrete, Dynamics};
use crate::rng::SimRng;

const GRAVITY: f64 = 9.8;
const MASS_CART: f64 = 1.0;
const MASS_POLE: f64 = 0.1;
/// Half the pole's length, as in Gymnasium.
const LENGTH: f64 = 0.5;
const FORCE_MAG: f64 = 10.0;
/// Seconds between state updates.
const TAU: f64 = 0.02;
const X_THRESHOLD: f64 = 2.4;
const RESET_BOUND: f64 = 0.05;

/// Angle at which the episode fails: 12 degrees, computed as Gymnasium does.
fn theta_threshold_radians() -> f64 {
    12.0 * 2.0 * std::f64::consts::PI / 360.0
}

/// State `[x, x_dot, theta, theta_dot]`.
#[derive(Debug, Clone, Default)]
pub struct CartPole {
    state: [f64; 4],
    /// The pole has already fallen in this episode (Gymnasium's
    /// `steps_beyond_terminated` is not None): further steps earn 0.
    fallen: bool,
}

impl Dynamics for CartPole {
    const ID: &'static str = "CartPole-v1";
    const MAX_EPISODE_STEPS: u32 = 500;
    const STATE_DIM: usize = 4;

    fn observation_space() -> BoxSpace {
        let high = [
            X_THRESHOLD * 2.0,
            f64::INFINITY,
            theta_threshold_radians() * 2.0,
            f64::INFINITY,
        ];
        box_space(&high.map(|h| -h), &high)
    }

    fn action_space() -> ActionSpace {
        ActionSpace::Discrete { n: 2 }
    }

    fn reset(&mut self, rng: &mut SimRng) {
        self.state = [0.0; 4].map(|_| rng.uniform(-RESET_BOUND, RESET_BOUND));
        self.fallen = false;
    }

    fn apply(&mut self, action: &Action) -> (f64, bool) {
        let [x, x_dot, theta, theta_dot] = self.state;
        let total_mass = MASS_POLE + MASS_CART;
        let polemass_length = MASS_POLE * LENGTH;
        let force = if discrete(action) == 1 {
            FORCE_MAG
        } else {
            -FORCE_MAG
        };
        let (sintheta, costheta) = (theta.sin(), theta.cos());
        // The operation order follows Gymnasium's source so results match bit for bit.
        let temp = (force + polemass_length * (theta_dot * theta_dot) * sintheta) / total_mass;
        let thetaacc = (GRAVITY * sintheta - costheta * temp)
            / (LENGTH * (4.0 / 3.0 - MASS_POLE * (costheta * costheta) / total_mass));
        let xacc = temp - polemass_length * thetaacc * costheta / total_mass;
        // Euler: every update uses the pre-step values.
        self.state = [
            x + TAU * x_dot,
            x_dot + TAU * xacc,
            theta + TAU * theta_dot,
            theta_dot + TAU * thetaacc,
        ];
        let [x, _, theta, _] = self.state;
        let limit = theta_threshold_radians();
        let terminated =
            !(-X_THRESHOLD..=X_THRESHOLD).contains(&x) || !(-limit..=limit).contains(&theta);
        // Reward 1 on every step, the terminating one included (Gymnasium's default);
        // 0 for a terminal step taken after the pole has already fallen once. As in
        // Gymnasium, a state stepped back inside the bounds earns 1 again.
        let reward = if terminated && self.fallen { 0.0 } else { 1.0 };
        self.fallen |= terminated;
        (reward, terminated)
    }

    fn observe(&self, obs: &mut [f32]) {
        for (o, s) in obs.iter_mut().zip(self.state) {
            *o = s as f32;
        }
    }

    fn state(&self) -> Vec<f64> {
        self.state.to_vec()
    }

    fn set_state(&mut self, state: &[f64]) {
        self.state.copy_from_slice(state);
        self.fallen = false;
    }
}
