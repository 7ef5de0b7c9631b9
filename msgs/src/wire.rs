//! The flat wire form of an action (`Action.msg`), shared by [`Action`](crate::Action)
//! and [`ActionN`](crate::ActionN) so both write the same bytes.

use core::fmt;
use serde::Serialize;

use crate::{KIND_CONTINUOUS, KIND_DISCRETE};

/// `Action.msg` as borrowed for encoding: `uint8 kind`, `uint32 index` (discrete
/// only), `float32[] values` (continuous only).
#[derive(Serialize)]
#[serde(rename = "Action")]
pub(crate) struct ActionWireRef<'a> {
    pub(crate) kind: u8,
    pub(crate) index: u32,
    pub(crate) values: &'a [f32],
}

impl<'a> ActionWireRef<'a> {
    pub(crate) fn discrete(index: u32) -> Self {
        Self {
            kind: KIND_DISCRETE,
            index,
            values: &[],
        }
    }

    pub(crate) fn continuous(values: &'a [f32]) -> Self {
        Self {
            kind: KIND_CONTINUOUS,
            index: 0,
            values,
        }
    }
}

/// What a decoded `Action.msg` holds.
pub(crate) enum ActionKind {
    Discrete(u32),
    Continuous,
}

/// Why a decoded `Action.msg` is not an action.
pub(crate) enum ActionWireError {
    UnknownKind(u8),
    DiscreteWithValues,
    ContinuousWithIndex,
}

impl fmt::Display for ActionWireError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::UnknownKind(kind) => write!(
                f,
                "unknown action kind {kind} (expected {KIND_DISCRETE} or {KIND_CONTINUOUS})"
            ),
            Self::DiscreteWithValues => f.write_str("discrete action with continuous values"),
            Self::ContinuousWithIndex => f.write_str("continuous action with index != 0"),
        }
    }
}

/// Interprets the fields of a decoded `Action.msg`; the unused field of each kind must
/// be zero / empty so that every accepted message encodes back to the same bytes.
pub(crate) fn action_kind(
    kind: u8,
    index: u32,
    n_values: usize,
) -> Result<ActionKind, ActionWireError> {
    match kind {
        KIND_DISCRETE if n_values == 0 => Ok(ActionKind::Discrete(index)),
        KIND_DISCRETE => Err(ActionWireError::DiscreteWithValues),
        KIND_CONTINUOUS if index == 0 => Ok(ActionKind::Continuous),
        KIND_CONTINUOUS => Err(ActionWireError::ContinuousWithIndex),
        kind => Err(ActionWireError::UnknownKind(kind)),
    }
}
