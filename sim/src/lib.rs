//! reflex-sim: simulated robots for reflex.
//!
//! This crate owns the simulators that stand in for hardware: Gymnasium's
//! classic-control tasks with their exact dynamics ([`classic`]), partial-observability
//! wrappers ([`pomdp`]), a vectorized runner for fast data collection ([`VecEnv`]),
//! and the reference-trajectory checker behind `reflex-sim check` ([`reference`]).
//! Every env is made by name with [`make`].
//!
//! It depends on `reflex-msgs` (spaces and actions) and on nothing from the
//! trainer or the daemon: both of those use it, never the reverse.

pub mod classic;
pub mod env;
pub mod node;
pub mod pomdp;
pub mod reference;
pub mod registry;
pub mod rng;
pub mod vec_env;

pub use env::{random_action, Env, Step};
pub use registry::{make, EnvName, ENVS};
pub use rng::SimRng;
pub use vec_env::{EpisodeSummary, VecEnv};

/// Everything that can go wrong in the simulators.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// An env name that [`make`] does not know.
    #[error("unknown env `{name}`; known envs: {known}")]
    UnknownEnv {
        /// The name that was asked for.
        name: String,
        /// The names that would have worked.
        known: String,
    },
    /// A wrapper parameter out of its range (e.g. a probability above 1).
    #[error("invalid parameter for `{wrapper}`: {message}")]
    InvalidParameter {
        /// The wrapper.
        wrapper: &'static str,
        /// What is wrong.
        message: String,
    },
    /// An action of the wrong kind, out of range, of the wrong length or not finite.
    #[error("{env}: action {action} is not valid for action space {space}")]
    InvalidAction {
        /// Gymnasium id of the env.
        env: &'static str,
        /// The action given.
        action: String,
        /// The env's action space.
        space: String,
    },
    /// `step` before the first `reset` (or `set_state`).
    #[error("{env}: step called before reset")]
    NotReset {
        /// Gymnasium id of the env.
        env: &'static str,
    },
    /// `set_state` with a state of the wrong length.
    #[error("{env}: state must have {expected} values, got {found}")]
    StateShape {
        /// Gymnasium id of the env.
        env: &'static str,
        /// The env's state length.
        expected: usize,
        /// The length given.
        found: usize,
    },
    /// `set_state` with a NaN or infinite value.
    #[error("{env}: state value {index} is {value}, not a finite number")]
    StateValue {
        /// Gymnasium id of the env.
        env: &'static str,
        /// Which value.
        index: usize,
        /// The value given.
        value: f64,
    },
    /// A vectorized step with the wrong number of actions.
    #[error("expected one action per env ({expected}), got {found}")]
    ActionCount {
        /// Number of envs.
        expected: usize,
        /// Number of actions given.
        found: usize,
    },
    /// A reference file that cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A reference file that is not in the expected schema.
    #[error("{path}:{line}: {message}")]
    Malformed {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong there.
        message: String,
    },
}
