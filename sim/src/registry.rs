//! Env names: short names (`cartpole`), Gymnasium ids (`CartPole-v1`) and POMDP
//! variants (`cartpole-masked`, `cartpole-flicker`, `cartpole-noisy`).

use crate::classic::acrobot::Acrobot;
use crate::classic::cartpole::CartPole;
use crate::classic::mountain_car::MountainCar;
use crate::classic::mountain_car_continuous::MountainCarContinuous;
use crate::classic::pendulum::Pendulum;
use crate::classic::ClassicEnv;
use crate::env::Env;
use crate::pomdp::{Flicker, ObsWrapper, SensorNoise, VelocityMask};
use crate::SimError;

/// One built-in task: its short name, Gymnasium id, and the observation indices
/// that stay visible under velocity masking.
#[derive(Debug, Clone, Copy)]
pub struct EnvName {
    /// Short name, e.g. `cartpole`.
    pub short: &'static str,
    /// Gymnasium id, e.g. `CartPole-v1`.
    pub gym_id: &'static str,
    /// Observation indices kept by `-masked` (positions/angles, no velocities).
    pub masked_keep: &'static [usize],
    make: fn() -> Box<dyn Env>,
}

fn boxed<E: Env + Default + 'static>() -> Box<dyn Env> {
    Box::new(E::default())
}

/// The built-in tasks.
pub const ENVS: &[EnvName] = &[
    EnvName {
        short: "cartpole",
        gym_id: "CartPole-v1",
        masked_keep: &[0, 2],
        make: boxed::<ClassicEnv<CartPole>>,
    },
    EnvName {
        short: "acrobot",
        gym_id: "Acrobot-v1",
        masked_keep: &[0, 1, 2, 3],
        make: boxed::<ClassicEnv<Acrobot>>,
    },
    EnvName {
        short: "mountaincar",
        gym_id: "MountainCar-v0",
        masked_keep: &[0],
        make: boxed::<ClassicEnv<MountainCar>>,
    },
    EnvName {
        short: "pendulum",
        gym_id: "Pendulum-v1",
        masked_keep: &[0, 1],
        make: boxed::<ClassicEnv<Pendulum>>,
    },
    EnvName {
        short: "mountaincarcontinuous",
        gym_id: "MountainCarContinuous-v0",
        masked_keep: &[0],
        make: boxed::<ClassicEnv<MountainCarContinuous>>,
    },
];

/// Flicker probability of `-flicker` envs (Hausknecht & Stone's flickering Pong).
pub const DEFAULT_FLICKER_P: f64 = 0.5;
/// Noise standard deviation of `-noisy` envs, in observation units.
pub const DEFAULT_NOISE_STD: f64 = 0.1;

/// Looks up a built-in task by short name (any case) or exact Gymnasium id.
pub fn lookup(base: &str) -> Option<&'static EnvName> {
    ENVS.iter()
        .find(|e| e.gym_id == base || e.short.eq_ignore_ascii_case(base))
}

/// Makes an env by name: `cartpole`, `CartPole-v1`, or a POMDP variant with a
/// `-masked`, `-flicker` or `-noisy` suffix (`cartpole-masked`,
/// `Pendulum-v1-noisy`). Wrapped envs draw their randomness from a generator
/// seeded by `reset(Some(seed))`.
pub fn make(name: &str) -> Result<Box<dyn Env>, SimError> {
    let unknown = || SimError::UnknownEnv {
        name: name.to_string(),
        known: known_names(),
    };
    if let Some(entry) = lookup(name) {
        return Ok((entry.make)());
    }
    let (base, suffix) = name.rsplit_once('-').ok_or_else(unknown)?;
    let entry = lookup(base).ok_or_else(unknown)?;
    let inner = (entry.make)();
    let env: Box<dyn Env> = match suffix.to_ascii_lowercase().as_str() {
        "masked" => Box::new(ObsWrapper::new(
            inner,
            VelocityMask::new(entry.masked_keep),
        )?),
        "flicker" => Box::new(ObsWrapper::new(inner, Flicker::new(DEFAULT_FLICKER_P)?)?),
        "noisy" => Box::new(ObsWrapper::new(
            inner,
            SensorNoise::new(DEFAULT_NOISE_STD)?,
        )?),
        _ => return Err(unknown()),
    };
    Ok(env)
}

/// Every accepted base name, for error messages and `--help`.
pub fn known_names() -> String {
    let names: Vec<String> = ENVS
        .iter()
        .map(|e| format!("{} ({})", e.short, e.gym_id))
        .collect();
    format!(
        "{}; add -masked, -flicker or -noisy for partial observability",
        names.join(", ")
    )
}
