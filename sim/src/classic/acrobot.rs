//! Acrobot-v1: a two-link pendulum actuated at the elbow must swing its tip above
//! a line (Sutton 1996, the "book" dynamics), integrated with Gymnasium's RK4.

use std::f64::consts::PI;

use reflex_msgs::{Action, ActionSpace, BoxSpace};

use super::{box_space, discrete, py_square as sq, Dynamics};
use crate::rng::SimRng;

/// Seconds per step (one RK4 step).
const DT: f64 = 0.2;
const LINK_LENGTH_1: f64 = 1.0;
const LINK_MASS_1: f64 = 1.0;
const LINK_MASS_2: f64 = 1.0;
/// Position of each link's centre of mass along it.
const LINK_COM_POS_1: f64 = 0.5;
const LINK_COM_POS_2: f64 = 0.5;
/// Moment of inertia of both links.
const LINK_MOI: f64 = 1.0;
const MAX_VEL_1: f64 = 4.0 * PI;
const MAX_VEL_2: f64 = 9.0 * PI;
/// Torque applied at the elbow by actions 0, 1, 2.
const AVAIL_TORQUE: [f64; 3] = [-1.0, 0.0, 1.0];
const G: f64 = 9.8;

/// State `[theta1, theta2, dtheta1, dtheta2]`.
#[derive(Debug, Clone, Default)]
pub struct Acrobot {
    state: [f64; 4],
}

/// Time derivative of `[theta1, theta2, dtheta1, dtheta2]` under elbow torque `a`
/// (Gymnasium's `_dsdt`, "book" variant; operation order kept for exactness).
fn dsdt(s: [f64; 4], a: f64) -> [f64; 4] {
    // `sq` is Python's `x**2` (libm pow), not `x * x`: they differ in rare last bits.
    let (m1, m2, l1) = (LINK_MASS_1, LINK_MASS_2, LINK_LENGTH_1);
    let (lc1, lc2) = (LINK_COM_POS_1, LINK_COM_POS_2);
    let (i1, i2) = (LINK_MOI, LINK_MOI);
    let [theta1, theta2, dtheta1, dtheta2] = s;
    let d1 = m1 * sq(lc1) + m2 * (l1 * l1 + lc2 * lc2 + 2.0 * l1 * lc2 * theta2.cos()) + i1 + i2;
    let d2 = m2 * (lc2 * lc2 + l1 * lc2 * theta2.cos()) + i2;
    let phi2 = m2 * lc2 * G * (theta1 + theta2 - PI / 2.0).cos();
    let phi1 = -m2 * l1 * lc2 * sq(dtheta2) * theta2.sin()
        - 2.0 * m2 * l1 * lc2 * dtheta2 * dtheta1 * theta2.sin()
        + (m1 * lc1 + m2 * l1) * G * (theta1 - PI / 2.0).cos()
        + phi2;
    let ddtheta2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * sq(dtheta1) * theta2.sin() - phi2)
        / (m2 * sq(lc2) + i2 - sq(d2) / d1);
    let ddtheta1 = -(d2 * ddtheta2 + phi1) / d1;
    [dtheta1, dtheta2, ddtheta1, ddtheta2]
}

/// `y + h * k`, elementwise.
fn axpy(y: [f64; 4], h: f64, k: [f64; 4]) -> [f64; 4] {
    [0, 1, 2, 3].map(|i| y[i] + h * k[i])
}

/// One classical Runge–Kutta step of size `DT`, torque held constant.
fn rk4(y0: [f64; 4], a: f64) -> [f64; 4] {
    let dt = DT - 0.0;
    let dt2 = dt / 2.0;
    let k1 = dsdt(y0, a);
    let k2 = dsdt(axpy(y0, dt2, k1), a);
    let k3 = dsdt(axpy(y0, dt2, k2), a);
    let k4 = dsdt(axpy(y0, dt, k3), a);
    [0, 1, 2, 3].map(|i| y0[i] + dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]))
}

/// Gymnasium's `wrap`: shift by whole periods into `[m, big_m]`.
fn wrap(mut x: f64, m: f64, big_m: f64) -> f64 {
    let diff = big_m - m;
    // Gymnasium loops once per period: a state many periods out (a corrupt
    // file, set_state with 1e300) would never end. Bring it within a period
    // first; the loops below then take Gymnasium's steps for every state an
    // episode reaches.
    if (x - m).abs() > 64.0 * diff {
        x = m + (x - m).rem_euclid(diff);
    }
    while x > big_m {
        x -= diff;
    }
    while x < m {
        x += diff;
    }
    x
}

impl Dynamics for Acrobot {
    const ID: &'static str = "Acrobot-v1";
    const MAX_EPISODE_STEPS: u32 = 500;
    const STATE_DIM: usize = 4;

    fn observation_space() -> BoxSpace {
        let high = [1.0, 1.0, 1.0, 1.0, MAX_VEL_1, MAX_VEL_2];
        box_space(&high.map(|h| -h), &high)
    }

    fn action_space() -> ActionSpace {
        ActionSpace::Discrete {
            n: AVAIL_TORQUE.len() as u32,
        }
    }

    fn reset(&mut self, rng: &mut SimRng) {
        // Drawn in float64, stored as float32 (as Gymnasium does).
        self.state = [0.0; 4].map(|_| f64::from(rng.uniform(-0.1, 0.1) as f32));
    }

    fn apply(&mut self, action: &Action) -> (f64, bool) {
        let torque = AVAIL_TORQUE[discrete(action)];
        let mut ns = rk4(self.state, torque);
        ns[0] = wrap(ns[0], -PI, PI);
        ns[1] = wrap(ns[1], -PI, PI);
        ns[2] = ns[2].clamp(-MAX_VEL_1, MAX_VEL_1);
        ns[3] = ns[3].clamp(-MAX_VEL_2, MAX_VEL_2);
        self.state = ns;
        let terminated = -ns[0].cos() - (ns[1] + ns[0]).cos() > 1.0;
        (if terminated { 0.0 } else { -1.0 }, terminated)
    }

    fn observe(&self, obs: &mut [f32]) {
        let [t1, t2, dt1, dt2] = self.state;
        let values = [t1.cos(), t1.sin(), t2.cos(), t2.sin(), dt1, dt2];
        for (o, v) in obs.iter_mut().zip(values) {
            *o = v as f32;
        }
    }

    fn state(&self) -> Vec<f64> {
        self.state.to_vec()
    }

    fn set_state(&mut self, state: &[f64]) {
        self.state.copy_from_slice(state);
    }
}
