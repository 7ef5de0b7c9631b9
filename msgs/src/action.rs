//! Actions: the [`Action`] value and the [`ActionCommand`] message that carries one to
//! a robot's actuators (or to a simulator standing in for them).

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::wire::{action_kind, ActionKind, ActionWireRef};
use crate::WIRE_VERSION;

/// One action, discrete or continuous.
///
/// On the wire (`Action.msg`, ROS has no enums) this is the flat struct `uint8 kind`
/// ([`KIND_DISCRETE`](crate::KIND_DISCRETE) or
/// [`KIND_CONTINUOUS`](crate::KIND_CONTINUOUS)), `uint32 index` (the discrete action;
/// 0 for continuous) and `float32[] values` (the continuous action; empty for
/// discrete). Decoding refuses an unknown kind or a non-zero unused field. In JSON it
/// is `{"discrete": 1}` or `{"continuous": [0.5]}`.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Index of the chosen action, `0..n`.
    Discrete(u32),
    /// The action vector, in the action space's units.
    Continuous(Vec<f32>),
}

impl Action {
    /// Whether this is a discrete action.
    pub fn is_discrete(&self) -> bool {
        matches!(self, Self::Discrete(_))
    }

    /// The index of a discrete action.
    pub fn as_discrete(&self) -> Option<u32> {
        match self {
            Self::Discrete(index) => Some(*index),
            Self::Continuous(_) => None,
        }
    }

    /// The vector of a continuous action.
    pub fn as_continuous(&self) -> Option<&[f32]> {
        match self {
            Self::Discrete(_) => None,
            Self::Continuous(values) => Some(values),
        }
    }
}

impl Default for Action {
    /// Discrete action 0.
    fn default() -> Self {
        Self::Discrete(0)
    }
}

/// `Action.msg` as decoded.
#[derive(Deserialize)]
#[serde(rename = "Action")]
struct ActionWire {
    kind: u8,
    index: u32,
    values: Vec<f32>,
}

/// The JSON form (borrowed for encoding).
#[derive(Serialize)]
#[serde(rename = "Action", rename_all = "snake_case")]
enum ActionJsonRef<'a> {
    Discrete(u32),
    Continuous(#[serde(with = "crate::serde_util::f32_seq")] &'a [f32]),
}

/// The JSON form (decoded).
#[derive(Deserialize)]
#[serde(rename = "Action", rename_all = "snake_case")]
enum ActionJson {
    Discrete(u32),
    Continuous(#[serde(with = "crate::serde_util::f32_seq")] Vec<f32>),
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (self, s.is_human_readable()) {
            (Self::Discrete(index), true) => ActionJsonRef::Discrete(*index).serialize(s),
            (Self::Continuous(values), true) => ActionJsonRef::Continuous(values).serialize(s),
            (Self::Discrete(index), false) => ActionWireRef::discrete(*index).serialize(s),
            (Self::Continuous(values), false) => ActionWireRef::continuous(values).serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            return Ok(match ActionJson::deserialize(d)? {
                ActionJson::Discrete(index) => Self::Discrete(index),
                ActionJson::Continuous(values) => Self::Continuous(values),
            });
        }
        let wire = ActionWire::deserialize(d)?;
        match action_kind(wire.kind, wire.index, wire.values.len()) {
            Ok(ActionKind::Discrete(index)) => Ok(Self::Discrete(index)),
            Ok(ActionKind::Continuous) => Ok(Self::Continuous(wire.values)),
            Err(e) => Err(serde::de::Error::custom(e)),
        }
    }
}

/// The action a daemon chose for one observation, published on
/// [`keys::ACTION`](crate::keys::ACTION) / [`topics::ACTION`](crate::topics::ACTION)
/// for the robot driver (or simulator) to apply (`ActionCommand.msg`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionCommand {
    /// Schema version, [`WIRE_VERSION`] when written by this build.
    pub wire_version: u16,
    /// The robot this action is for.
    pub robot_id: String,
    /// `seq` of the [`Observation`](crate::Observation) this action answers; 0
    /// when it answers none (a safe action sent before the first observation).
    pub seq: u64,
    /// When the action was computed, nanoseconds since the UNIX epoch (the daemon's
    /// clock).
    pub timestamp_ns: u64,
    /// Version of the policy that chose it (0 = no policy: the safe action).
    pub policy_version: u64,
    /// The action, after the safety layer (clamped, rate-limited).
    pub action: Action,
}

impl Default for ActionCommand {
    fn default() -> Self {
        Self {
            wire_version: WIRE_VERSION,
            robot_id: String::new(),
            seq: 0,
            timestamp_ns: 0,
            policy_version: 0,
            action: Action::default(),
        }
    }
}
