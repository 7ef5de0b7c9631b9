//! Observation and action spaces: [`BoxSpace`] and [`ActionSpace`].

use alloc::vec::Vec;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Action, KIND_CONTINUOUS, KIND_DISCRETE};

/// Why a space is not valid.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum SpaceError {
    /// `low` and `high` have different lengths.
    #[error("box bounds have different lengths: low {low}, high {high}")]
    LengthMismatch {
        /// `low.len()`.
        low: usize,
        /// `high.len()`.
        high: usize,
    },
    /// A lower bound is above its upper bound, or one of them is NaN.
    #[error("box bound {index}: low {low} is not <= high {high}")]
    Inverted {
        /// Dimension index.
        index: usize,
        /// `low[index]`.
        low: f32,
        /// `high[index]`.
        high: f32,
    },
    /// A discrete space with no actions.
    #[error("discrete action space has n = 0 actions")]
    NoActions,
    /// A box action space with no dimensions.
    #[error("box action space has 0 dimensions")]
    ZeroDim,
    /// A box action space with an infinite bound: the safety layer clamps
    /// actions to these bounds, and an infinite one clamps nothing.
    #[error(
        "box action bound {index} is infinite (low {low}, high {high}): actions are \
         clamped to these bounds, so they must be finite"
    )]
    Unbounded {
        /// Dimension index.
        index: usize,
        /// `low[index]`.
        low: f32,
        /// `high[index]`.
        high: f32,
    },
}

/// A box in R^n (Gymnasium `Box`, float32): each dimension `i` lies in
/// `[low[i], high[i]]`; bounds may be infinite.
///
/// On the wire (`BoxSpace.msg`): `float32[] low`, `float32[] high`. Decoding checks
/// only the structure; call [`BoxSpace::validate`] on boxes from outside.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxSpace {
    /// Lower bound of each dimension (may be `-inf`).
    #[serde(with = "crate::serde_util::f32_seq")]
    pub low: Vec<f32>,
    /// Upper bound of each dimension (may be `+inf`), same length as `low`.
    #[serde(with = "crate::serde_util::f32_seq")]
    pub high: Vec<f32>,
}

impl BoxSpace {
    /// A box with the given bounds, refused unless they have equal lengths and
    /// `low[i] <= high[i]` for every `i` (NaN bounds are refused).
    pub fn new(low: Vec<f32>, high: Vec<f32>) -> Result<Self, SpaceError> {
        let space = Self { low, high };
        space.validate()?;
        Ok(space)
    }

    /// Checks equal lengths and `low[i] <= high[i]` (no NaN).
    pub fn validate(&self) -> Result<(), SpaceError> {
        if self.low.len() != self.high.len() {
            return Err(SpaceError::LengthMismatch {
                low: self.low.len(),
                high: self.high.len(),
            });
        }
        for (index, (&low, &high)) in self.low.iter().zip(&self.high).enumerate() {
            // NaN bounds compare as neither ordered nor equal: refused too.
            let ordered = matches!(
                low.partial_cmp(&high),
                Some(core::cmp::Ordering::Less | core::cmp::Ordering::Equal)
            );
            if !ordered {
                return Err(SpaceError::Inverted { index, low, high });
            }
        }
        Ok(())
    }

    /// Number of dimensions (`low.len()`).
    pub fn dim(&self) -> usize {
        self.low.len()
    }

    /// Whether `x` has this box's dimension and every `x[i]` lies in
    /// `[low[i], high[i]]` (a NaN is never contained). `false` for an invalid box.
    pub fn contains(&self, x: &[f32]) -> bool {
        x.len() == self.low.len()
            && x.len() == self.high.len()
            && x.iter()
                .zip(self.low.iter().zip(&self.high))
                .all(|(v, (low, high))| low <= v && v <= high)
    }
}

/// The action space of an environment or policy.
///
/// On the wire (`ActionSpace.msg`, ROS has no enums) this is the flat struct
/// `uint8 kind` ([`KIND_DISCRETE`] or [`KIND_BOX`](crate::KIND_BOX)), `uint32 n` (number of
/// actions; 0 for a box) and `BoxSpace bounds` (empty for discrete). In JSON it is
/// `{"type": "discrete", "n": 2}` or `{"type": "box", "low": [..], "high": [..]}`.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionSpace {
    /// Actions are integers `0..n` (Gymnasium `Discrete(n)`).
    Discrete {
        /// Number of actions.
        n: u32,
    },
    /// Actions are float32 vectors inside a box (Gymnasium `Box`).
    Box(BoxSpace),
}

impl ActionSpace {
    /// Whether actions are discrete.
    pub fn is_discrete(&self) -> bool {
        matches!(self, Self::Discrete { .. })
    }

    /// `n` for a discrete space (the width of a Q-value output), the action dimension
    /// for a box.
    pub fn dim(&self) -> usize {
        match self {
            Self::Discrete { n } => *n as usize,
            Self::Box(space) => space.dim(),
        }
    }

    /// Checks `n > 0` for a discrete space, a valid non-empty box with finite
    /// bounds otherwise (actions are clamped to them).
    pub fn validate(&self) -> Result<(), SpaceError> {
        match self {
            Self::Discrete { n: 0 } => Err(SpaceError::NoActions),
            Self::Discrete { .. } => Ok(()),
            Self::Box(space) if space.dim() == 0 => Err(SpaceError::ZeroDim),
            Self::Box(space) => {
                space.validate()?;
                let unbounded = space
                    .low
                    .iter()
                    .zip(space.high.iter())
                    .position(|(l, h)| !l.is_finite() || !h.is_finite());
                match unbounded {
                    Some(index) => Err(SpaceError::Unbounded {
                        index,
                        low: space.low[index],
                        high: space.high[index],
                    }),
                    None => Ok(()),
                }
            }
        }
    }

    /// Whether `action` is of this space's kind and inside it: an index below `n`, or a
    /// vector inside the box.
    pub fn contains(&self, action: &Action) -> bool {
        match (self, action) {
            (Self::Discrete { n }, Action::Discrete(index)) => index < n,
            (Self::Box(space), Action::Continuous(values)) => space.contains(values),
            _ => false,
        }
    }
}

/// `ActionSpace.msg` as borrowed for encoding.
#[derive(Serialize)]
#[serde(rename = "ActionSpace")]
struct ActionSpaceWireRef<'a> {
    kind: u8,
    n: u32,
    bounds: &'a BoxSpace,
}

/// `ActionSpace.msg` as decoded.
#[derive(Deserialize)]
#[serde(rename = "ActionSpace")]
struct ActionSpaceWire {
    kind: u8,
    n: u32,
    bounds: BoxSpace,
}

/// The JSON form.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ActionSpaceJson {
    Discrete { n: u32 },
    Box(BoxSpace),
}

impl Serialize for ActionSpace {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            let json = match self {
                Self::Discrete { n } => ActionSpaceJson::Discrete { n: *n },
                Self::Box(space) => ActionSpaceJson::Box(space.clone()),
            };
            return json.serialize(s);
        }
        let empty = BoxSpace::default();
        let wire = match self {
            Self::Discrete { n } => ActionSpaceWireRef {
                kind: KIND_DISCRETE,
                n: *n,
                bounds: &empty,
            },
            Self::Box(space) => ActionSpaceWireRef {
                kind: KIND_CONTINUOUS,
                n: 0,
                bounds: space,
            },
        };
        wire.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ActionSpace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        if d.is_human_readable() {
            return Ok(match ActionSpaceJson::deserialize(d)? {
                ActionSpaceJson::Discrete { n } => Self::Discrete { n },
                ActionSpaceJson::Box(space) => Self::Box(space),
            });
        }
        let wire = ActionSpaceWire::deserialize(d)?;
        let empty_bounds = wire.bounds.low.is_empty() && wire.bounds.high.is_empty();
        match wire.kind {
            KIND_DISCRETE if empty_bounds => Ok(Self::Discrete { n: wire.n }),
            KIND_DISCRETE => Err(D::Error::custom("discrete action space with box bounds")),
            KIND_CONTINUOUS if wire.n == 0 => Ok(Self::Box(wire.bounds)),
            KIND_CONTINUOUS => Err(D::Error::custom("box action space with n != 0")),
            kind => Err(D::Error::custom(format_args!(
                "unknown action space kind {kind} (expected {KIND_DISCRETE} or {KIND_CONTINUOUS})"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn box_new_checks_bounds() {
        assert!(BoxSpace::new(vec![-1.0, 0.0], vec![1.0, 0.0]).is_ok());
        assert_eq!(
            BoxSpace::new(vec![0.0], vec![1.0, 2.0]),
            Err(SpaceError::LengthMismatch { low: 1, high: 2 })
        );
        assert!(matches!(
            BoxSpace::new(vec![0.0, 2.0], vec![1.0, 1.0]),
            Err(SpaceError::Inverted { index: 1, .. })
        ));
        assert!(BoxSpace::new(vec![f32::NAN], vec![1.0]).is_err());
        assert!(BoxSpace::new(vec![f32::NEG_INFINITY], vec![f32::INFINITY]).is_ok());
    }

    #[test]
    fn box_contains() {
        let space = BoxSpace::new(vec![-1.0, 0.0], vec![1.0, 2.0]).unwrap();
        assert_eq!(space.dim(), 2);
        assert!(space.contains(&[0.0, 2.0]));
        assert!(space.contains(&[-1.0, 0.0]));
        assert!(!space.contains(&[1.5, 1.0]));
        assert!(!space.contains(&[0.0]));
        assert!(!space.contains(&[f32::NAN, 1.0]));
        let broken = BoxSpace {
            low: vec![0.0],
            high: vec![],
        };
        assert!(!broken.contains(&[0.0]));
    }

    #[test]
    fn action_space_helpers() {
        let discrete = ActionSpace::Discrete { n: 3 };
        assert!(discrete.is_discrete());
        assert_eq!(discrete.dim(), 3);
        assert!(discrete.contains(&Action::Discrete(2)));
        assert!(!discrete.contains(&Action::Discrete(3)));
        assert!(!discrete.contains(&Action::Continuous(vec![0.0])));
        assert_eq!(
            ActionSpace::Discrete { n: 0 }.validate(),
            Err(SpaceError::NoActions)
        );

        let cont = ActionSpace::Box(BoxSpace::new(vec![-2.0], vec![2.0]).unwrap());
        assert!(!cont.is_discrete());
        assert_eq!(cont.dim(), 1);
        assert!(cont.contains(&Action::Continuous(vec![1.0])));
        assert!(!cont.contains(&Action::Continuous(vec![3.0])));
        assert!(!cont.contains(&Action::Discrete(0)));
        assert_eq!(cont.validate(), Ok(()));
        assert_eq!(
            ActionSpace::Box(BoxSpace::default()).validate(),
            Err(SpaceError::ZeroDim)
        );
        // Actions are clamped to the bounds: an infinite one would clamp nothing.
        let open = BoxSpace::new(vec![-1.0, -2.0], vec![1.0, f32::INFINITY]).unwrap();
        assert!(matches!(
            ActionSpace::Box(open).validate(),
            Err(SpaceError::Unbounded { index: 1, .. })
        ));
    }
}
