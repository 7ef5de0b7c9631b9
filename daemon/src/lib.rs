//! reflex-daemon: `reflexd`, the on-robot runtime.
//!
//! `reflexd` reads observations, runs the policy at a fixed rate, guards what goes to
//! the actuators and records the experience for the learner:
//!
//! ```text
//! ObservationSource ─▶ control thread ─▶ ActionSink
//!                       │ Actor (policy) → Explorer → Safety
//!                       └─ Transition ─▶ uplink thread ─▶ Spool ─▶ TransitionSink
//! PolicySource / policy file ─▶ swap thread (verify, load, validate) ─▶ control thread
//! ```
//!
//! One module per concern: [`config`] (robot.toml), [`actor`] (the policy seam),
//! [`policy`] (ONNX policy files checked against the contract and run with tract,
//! or with [`native`]'s allocation-free evaluator where the graph allows),
//! [`explore`] (ε-greedy, Gaussian / OU noise), [`safety`] (clamp, non-finite
//! guard, rate limit, watchdog, e-stop), [`control`] (the fixed-rate loop and the
//! [`Daemon`] handle), [`spool`] and [`uplink`] (batching, spooling, accounting),
//! [`swap`] (signatures and hot-swap), [`transport`] (the traits and in-process
//! channels), [`zenoh_link`] (opening zenoh sessions from [`zenoh_link::ZenohConfig`],
//! CDR payload helpers) and [`zenoh_transport`] (the traits on zenoh keys).
//!
//! It depends on `reflex-msgs` and zenoh (TCP transport only); it must never depend on the trainer or on
//! candle, because it ships to robots, and its dependency tree is pure Rust so it
//! cross-compiles for aarch64 boards with just a cross linker.

pub mod actor;
pub mod config;
pub mod control;
pub mod explore;
pub mod native;
pub mod policy;
pub mod ros2_config;
#[cfg(feature = "ros2")]
pub mod ros2_transport;
pub mod ros_params;
pub mod safety;
pub mod spool;
pub mod swap;
pub mod transport;
pub mod uplink;
pub mod zenoh_link;
pub mod zenoh_transport;

/// The zenoh crate this daemon is built with (the learner uses the same version).
pub use zenoh;

pub use actor::{Actor, ActorError, ActorOutput, Loader};
pub use config::{Config, ConfigError, DEFAULT_CONFIG_TOML};
pub use control::{check_fit, serve, Daemon, DaemonError, LoopStats, Report, Transports};
pub use policy::{Engine, LoadOptions, Policy, PolicyLoadError, PolicyOutput};
pub use safety::EStop;
