//! The wire schema shared by robots, the daemon (`reflexd`) and the trainer.
//!
//! This crate owns every message that crosses a process boundary in reflex —
//! [`Observation`], [`ActionCommand`] (carrying an [`Action`]), [`Transition`] /
//! [`TransitionBatch`], [`PolicySpec`] / [`PolicyUpdate`] and [`Status`] — together
//! with the zenoh keys and ROS 2 topic names they travel on ([`keys`], [`topics`]),
//! the schema version [`WIRE_VERSION`], the ONNX contract names ([`onnx`]) and the one
//! encoding: CDR little-endian behind the 4-byte encapsulation header `00 01 00 00`,
//! exactly what ROS 2 / DDS put on the wire (see [`codec`]).
//!
//! The same structs are mirrored field for field by the ROS 2 interface package in
//! `msgs/ros/reflex_msgs/msg/*.msg`; a test parses those files and fails if the two
//! drift apart. ROS messages have no enums or options, so Rust enums ([`Action`],
//! [`ActionSpace`]) go on the wire as flat structs with a `kind` field, and "absent"
//! is spelled as an empty sequence.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "std")]
//! # fn main() -> Result<(), reflex_msgs::WireError> {
//! use reflex_msgs::{decode, encode, keys, Observation, WireMessage};
//!
//! let obs = Observation {
//!     robot_id: "robot-1".into(),
//!     seq: 42,
//!     values: vec![0.1, -0.2, 0.03, 0.4],
//!     ..Observation::default() // wire_version = WIRE_VERSION
//! };
//! let key = keys::obs_key("lab", "robot-1"); // "reflex/lab/robot-1/obs"
//! let bytes = encode(&obs)?; // 00 01 00 00, then the CDR body
//! assert_eq!(decode::<Observation>(&bytes)?, obs);
//! assert_eq!(Observation::DDS_TYPE, "reflex_msgs::msg::dds_::Observation_");
//! # assert_eq!(key, "reflex/lab/robot-1/obs");
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "std"))]
//! # fn main() {}
//! ```
//!
//! # What this crate must not depend on
//!
//! It is `#![no_std]` and ships to robots: it never depends on std-only crates
//! unconditionally, nor on the trainer, the daemon, the simulators, candle, tract,
//! zenoh or any DDS stack (those live in the crates that use it). Features:
//!
//! - none: the constants, the fixed-capacity messages on `heapless`
//!   ([`ObservationN`], [`ActionCommandN`] with [`ActionN`], [`TransitionN`]), the
//!   allocation-free CDR codec ([`encode_to_slice`], [`decode_from_slice`]) and
//!   SHA-256 helpers ([`hash`]);
//! - `alloc`: the growable messages (`Vec`/`String`), key builders, conversions
//!   between fixed and growable messages;
//! - `std` (default): the allocating CDR codec ([`encode`], [`encode_into`],
//!   [`decode`]) on `cdr-encoding`, the CDR implementation under RustDDS /
//!   ros2-client, which needs std. Both codecs write identical bytes.
#![no_std]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod codec;
mod error;
pub mod fixed;
pub mod hash;
pub mod keys;
pub mod onnx;
mod serde_util;
pub mod topics;
mod wire;

#[cfg(feature = "alloc")]
mod action;
#[cfg(feature = "alloc")]
mod observation;
#[cfg(feature = "alloc")]
mod policy;
#[cfg(feature = "alloc")]
pub mod ros_std;
#[cfg(feature = "alloc")]
mod space;
#[cfg(feature = "alloc")]
mod status;
#[cfg(feature = "alloc")]
mod step_info;
#[cfg(feature = "alloc")]
mod transition;

pub use codec::{
    decode_from_slice, encode_to_slice, peek_version, WireMessage, ENCAPSULATION_CDR_BE,
    ENCAPSULATION_CDR_LE, MAX_MESSAGE_BYTES,
};
#[cfg(feature = "std")]
pub use error::error_report;
pub use error::{CapacityError, Reason, WireError, REASON_CAPACITY};
pub use fixed::{ActionCommandN, ActionN, ObservationN, RobotId, TransitionN, ROBOT_ID_CAPACITY};

#[cfg(feature = "alloc")]
pub use action::{Action, ActionCommand};
#[cfg(feature = "alloc")]
pub use observation::Observation;
#[cfg(feature = "alloc")]
pub use policy::{
    PolicyError, PolicySpec, PolicyUpdate, ED25519_SIGNATURE_LEN, POLICY_SIGNING_DOMAIN,
    SIGNING_MESSAGE_LEN,
};
#[cfg(feature = "alloc")]
pub use space::{ActionSpace, BoxSpace, SpaceError};
#[cfg(feature = "alloc")]
pub use status::Status;
#[cfg(feature = "alloc")]
pub use step_info::StepInfo;
#[cfg(feature = "alloc")]
pub use transition::{Transition, TransitionBatch};

#[cfg(feature = "std")]
pub use codec::{decode, encode, encode_into};

/// The version of the wire schema, the first field (`wire_version`, `uint16`) of every
/// top-level message.
///
/// Bump it whenever a field is added, removed, reordered or retyped (and the
/// `WIRE_VERSION` constants in `msg/*.msg` with it; a test checks they agree).
/// Decoders refuse newer versions (and 0) with [`WireError::UnsupportedVersion`]
/// before reading the body; versions 1 up to their own go on to the body, so a
/// version that changes the layout must keep reading the old one or refuse it.
pub const WIRE_VERSION: u16 = 1;

/// `kind` value of a discrete action / action space on the wire (`KIND_DISCRETE` in
/// `Action.msg` and `ActionSpace.msg`).
pub const KIND_DISCRETE: u8 = 0;

/// `kind` value of a continuous action / box action space on the wire
/// (`KIND_CONTINUOUS` in `Action.msg`, `KIND_BOX` in `ActionSpace.msg`).
pub const KIND_CONTINUOUS: u8 = 1;

/// `kind` value of a box action space on the wire (`KIND_BOX` in `ActionSpace.msg`),
/// the same as [`KIND_CONTINUOUS`].
pub const KIND_BOX: u8 = KIND_CONTINUOUS;

/// Name of the ROS 2 interface package that mirrors these types (`reflex_msgs`).
pub const ROS_PACKAGE: &str = "reflex_msgs";
