//! Partial-observability wrappers: what a robot's sensors really give.
//!
//! [`ObsWrapper`] applies an [`ObsTransform`] to every observation of an inner env;
//! the transforms are velocity masking, flickering (the whole observation zeroed
//! with probability p) and Gaussian sensor noise. Random transforms are seeded by
//! `reset(Some(seed))`, so wrapped episodes are as reproducible as plain ones.

use reflex_msgs::{Action, ActionSpace, BoxSpace};

use crate::env::{Env, Step};
use crate::rng::SimRng;
use crate::SimError;

/// Added to the reset seed for the wrapper's own generator, so the wrapper's
/// draws are not the env's reset draws.
const WRAPPER_SEED_OFFSET: u64 = 0x9E37_79B9_7F4A_7C15;

/// A change applied to every observation.
pub trait ObsTransform: Send {
    /// Name used in errors.
    const NAME: &'static str;
    /// The observation space seen through the transform.
    fn space(&self, inner: &BoxSpace) -> Result<BoxSpace, SimError>;
    /// Re-seeds the transform's randomness (if any) at `reset`.
    fn reseed(&mut self, seed: Option<u64>);
    /// Writes the transformed observation.
    fn apply(&mut self, inner: &[f32], out: &mut [f32]);
}

/// Keeps only some observation indices (e.g. positions without velocities).
#[derive(Debug, Clone)]
pub struct VelocityMask {
    keep: Vec<usize>,
}

impl VelocityMask {
    /// Keeps the observation indices in `keep`, in that order.
    pub fn new(keep: &[usize]) -> Self {
        Self {
            keep: keep.to_vec(),
        }
    }
}

impl ObsTransform for VelocityMask {
    const NAME: &'static str = "masked";

    fn space(&self, inner: &BoxSpace) -> Result<BoxSpace, SimError> {
        if let Some(&bad) = self.keep.iter().find(|&&i| i >= inner.low.len()) {
            return Err(SimError::InvalidParameter {
                wrapper: Self::NAME,
                message: format!(
                    "index {bad} is outside the {}-dimensional observation",
                    inner.low.len()
                ),
            });
        }
        Ok(BoxSpace {
            low: self.keep.iter().map(|&i| inner.low[i]).collect(),
            high: self.keep.iter().map(|&i| inner.high[i]).collect(),
        })
    }

    fn reseed(&mut self, _seed: Option<u64>) {}

    fn apply(&mut self, inner: &[f32], out: &mut [f32]) {
        for (o, &i) in out.iter_mut().zip(&self.keep) {
            *o = inner[i];
        }
    }
}

/// Zeroes the whole observation with probability `p` (a dropped sensor frame).
#[derive(Debug, Clone)]
pub struct Flicker {
    p: f64,
    rng: SimRng,
}

impl Flicker {
    /// Flicker with probability `p` in [0, 1].
    pub fn new(p: f64) -> Result<Self, SimError> {
        if !(0.0..=1.0).contains(&p) {
            return Err(SimError::InvalidParameter {
                wrapper: Self::NAME,
                message: format!("probability must be in [0, 1], got {p}"),
            });
        }
        Ok(Self {
            p,
            rng: SimRng::from_entropy(),
        })
    }
}

impl ObsTransform for Flicker {
    const NAME: &'static str = "flicker";

    fn space(&self, inner: &BoxSpace) -> Result<BoxSpace, SimError> {
        Ok(inner.clone())
    }

    fn reseed(&mut self, seed: Option<u64>) {
        if let Some(seed) = seed {
            self.rng = SimRng::seed(seed.wrapping_add(WRAPPER_SEED_OFFSET));
        }
    }

    fn apply(&mut self, inner: &[f32], out: &mut [f32]) {
        if self.rng.next_f64() < self.p {
            out.fill(0.0);
        } else {
            out.copy_from_slice(inner);
        }
    }
}

/// Adds independent Gaussian noise of standard deviation `std` to every value.
#[derive(Debug, Clone)]
pub struct SensorNoise {
    std: f64,
    rng: SimRng,
}

impl SensorNoise {
    /// Noise with standard deviation `std` ≥ 0 (observation units).
    pub fn new(std: f64) -> Result<Self, SimError> {
        if !(std >= 0.0 && std.is_finite()) {
            return Err(SimError::InvalidParameter {
                wrapper: Self::NAME,
                message: format!("standard deviation must be finite and >= 0, got {std}"),
            });
        }
        Ok(Self {
            std,
            rng: SimRng::from_entropy(),
        })
    }
}

impl ObsTransform for SensorNoise {
    const NAME: &'static str = "noisy";

    fn space(&self, inner: &BoxSpace) -> Result<BoxSpace, SimError> {
        // Noise can push readings past the nominal bounds, as real sensors do.
        Ok(BoxSpace {
            low: vec![f32::NEG_INFINITY; inner.low.len()],
            high: vec![f32::INFINITY; inner.high.len()],
        })
    }

    fn reseed(&mut self, seed: Option<u64>) {
        if let Some(seed) = seed {
            self.rng = SimRng::seed(seed.wrapping_add(WRAPPER_SEED_OFFSET));
        }
    }

    fn apply(&mut self, inner: &[f32], out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(inner) {
            *o = (f64::from(v) + self.std * self.rng.normal()) as f32;
        }
    }
}

/// An env seen through an observation transform.
pub struct ObsWrapper<E, T> {
    inner: E,
    transform: T,
    space: BoxSpace,
    obs: Vec<f32>,
}

impl<E: Env, T: ObsTransform> ObsWrapper<E, T> {
    /// Wraps `inner`; fails if the transform does not fit its observation space.
    pub fn new(inner: E, transform: T) -> Result<Self, SimError> {
        let space = transform.space(inner.observation_space())?;
        let obs = vec![0.0; space.low.len()];
        Ok(Self {
            inner,
            transform,
            space,
            obs,
        })
    }

    fn refresh(&mut self) {
        self.transform.apply(self.inner.obs(), &mut self.obs);
    }
}

impl<E: Env, T: ObsTransform> Env for ObsWrapper<E, T> {
    fn id(&self) -> &str {
        self.inner.id()
    }

    fn observation_space(&self) -> &BoxSpace {
        &self.space
    }

    fn action_space(&self) -> &ActionSpace {
        self.inner.action_space()
    }

    fn max_episode_steps(&self) -> Option<u32> {
        self.inner.max_episode_steps()
    }

    fn reset(&mut self, seed: Option<u64>) -> &[f32] {
        self.transform.reseed(seed);
        self.inner.reset(seed);
        self.refresh();
        &self.obs
    }

    fn step(&mut self, action: &Action) -> Result<Step, SimError> {
        let step = self.inner.step(action)?;
        self.refresh();
        Ok(step)
    }

    fn obs(&self) -> &[f32] {
        &self.obs
    }

    fn state(&self) -> Vec<f64> {
        self.inner.state()
    }

    fn set_state(&mut self, state: &[f64]) -> Result<(), SimError> {
        self.inner.set_state(state)?;
        self.refresh();
        Ok(())
    }

    fn elapsed_steps(&self) -> u32 {
        self.inner.elapsed_steps()
    }

    fn set_elapsed_steps(&mut self, steps: u32) {
        self.inner.set_elapsed_steps(steps)
    }
}
