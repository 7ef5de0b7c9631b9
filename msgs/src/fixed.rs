//! Fixed-capacity messages for robots without an allocator, on `heapless`.
//!
//! Each type here has the same fields in the same order as its growable counterpart
//! and therefore the same CDR bytes: a `heapless::Vec` is a sequence (a `u32` length,
//! then the elements) like a `Vec`, a `heapless::String` a string like a `String`. A
//! robot can publish an [`ObservationN`] that the daemon decodes as an
//! [`Observation`](crate::Observation), and decode the daemon's
//! [`ActionCommand`](crate::ActionCommand) as an [`ActionCommandN`]. Decoding refuses
//! sequences longer than the capacity. With `alloc`, `TryFrom<&Growable>` and
//! `From<&Fixed>` convert between the two.
//!
//! Unlike the growable types, these use the flat wire form in every serde format
//! (JSON included).

use heapless::{String, Vec};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::wire::{action_kind, ActionKind, ActionWireRef};
use crate::{CapacityError, WIRE_VERSION};

/// Capacity of a fixed-capacity robot id, in bytes (also the longest fleet or robot
/// name [`keys::validate_name`](crate::keys::validate_name) accepts).
pub const ROBOT_ID_CAPACITY: usize = 32;

/// A robot id without allocation.
pub type RobotId = String<ROBOT_ID_CAPACITY>;

/// `id` as a [`RobotId`], refused if longer than [`ROBOT_ID_CAPACITY`] bytes.
pub fn robot_id(id: &str) -> Result<RobotId, CapacityError> {
    RobotId::try_from(id).map_err(|()| CapacityError {
        field: "robot_id",
        len: id.len(),
        capacity: ROBOT_ID_CAPACITY,
    })
}

/// `values` in a `heapless::Vec` of capacity `N`, refused if longer.
pub fn fixed_vec<const N: usize>(
    field: &'static str,
    values: &[f32],
) -> Result<Vec<f32, N>, CapacityError> {
    Vec::from_slice(values).map_err(|()| CapacityError {
        field,
        len: values.len(),
        capacity: N,
    })
}

/// [`Action`](crate::Action) with at most `A` continuous dimensions. Same wire form
/// (`Action.msg`).
#[derive(Debug, Clone, PartialEq)]
pub enum ActionN<const A: usize> {
    /// Index of the chosen action.
    Discrete(u32),
    /// The action vector.
    Continuous(Vec<f32, A>),
}

impl<const A: usize> Default for ActionN<A> {
    /// Discrete action 0.
    fn default() -> Self {
        Self::Discrete(0)
    }
}

/// `Action.msg` as decoded into fixed capacity.
#[derive(Deserialize)]
#[serde(rename = "Action")]
struct ActionWireN<const A: usize> {
    kind: u8,
    index: u32,
    values: Vec<f32, A>,
}

impl<const A: usize> Serialize for ActionN<A> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Discrete(index) => ActionWireRef::discrete(*index).serialize(s),
            Self::Continuous(values) => ActionWireRef::continuous(values).serialize(s),
        }
    }
}

impl<'de, const A: usize> Deserialize<'de> for ActionN<A> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = ActionWireN::<A>::deserialize(d)?;
        match action_kind(wire.kind, wire.index, wire.values.len()) {
            Ok(ActionKind::Discrete(index)) => Ok(Self::Discrete(index)),
            Ok(ActionKind::Continuous) => Ok(Self::Continuous(wire.values)),
            Err(e) => Err(serde::de::Error::custom(e)),
        }
    }
}

/// [`Observation`](crate::Observation) with at most `N` values (`Observation.msg`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "Observation")]
pub struct ObservationN<const N: usize> {
    /// Schema version, [`WIRE_VERSION`] when written by this build.
    pub wire_version: u16,
    /// The robot that observed it.
    pub robot_id: RobotId,
    /// Per-robot sequence number, from 1 and +1 per observation.
    pub seq: u64,
    /// When the values were sensed, nanoseconds since the UNIX epoch (robot clock).
    pub timestamp_ns: u64,
    /// Episode this observation belongs to.
    pub episode_id: u64,
    /// Step index within the episode; 0 right after a reset.
    pub step: u32,
    /// The observation vector.
    pub values: Vec<f32, N>,
    /// Reward received for the step that led here.
    pub reward: f32,
    /// The episode ended in a terminal state.
    pub terminated: bool,
    /// The episode was cut off in a non-terminal state.
    pub truncated: bool,
}

impl<const N: usize> Default for ObservationN<N> {
    fn default() -> Self {
        Self {
            wire_version: WIRE_VERSION,
            robot_id: RobotId::new(),
            seq: 0,
            timestamp_ns: 0,
            episode_id: 0,
            step: 0,
            values: Vec::new(),
            reward: 0.0,
            terminated: false,
            truncated: false,
        }
    }
}

/// [`ActionCommand`](crate::ActionCommand) with at most `A` continuous action
/// dimensions (`ActionCommand.msg`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "ActionCommand")]
pub struct ActionCommandN<const A: usize> {
    /// Schema version, [`WIRE_VERSION`] when written by this build.
    pub wire_version: u16,
    /// The robot this action is for.
    pub robot_id: RobotId,
    /// `seq` of the observation this action answers; 0 when it answers none.
    pub seq: u64,
    /// When the action was computed, nanoseconds since the UNIX epoch.
    pub timestamp_ns: u64,
    /// Version of the policy that chose it (0 = none).
    pub policy_version: u64,
    /// The action.
    pub action: ActionN<A>,
}

impl<const A: usize> Default for ActionCommandN<A> {
    fn default() -> Self {
        Self {
            wire_version: WIRE_VERSION,
            robot_id: RobotId::new(),
            seq: 0,
            timestamp_ns: 0,
            policy_version: 0,
            action: ActionN::default(),
        }
    }
}

/// [`Transition`](crate::Transition) with at most `N` observation values, `A`
/// continuous action dimensions and `H` recurrent state values per vector (`H = 0`:
/// feed-forward policies) (`Transition.msg`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "Transition")]
pub struct TransitionN<const N: usize, const A: usize, const H: usize = 0> {
    /// Schema version, [`WIRE_VERSION`] when written by this build.
    pub wire_version: u16,
    /// The robot that collected it.
    pub robot_id: RobotId,
    /// Episode it belongs to.
    pub episode_id: u64,
    /// Index of `obs` within the episode.
    pub step: u32,
    /// Observation the action was chosen from.
    pub obs: Vec<f32, N>,
    /// Action taken.
    pub action: ActionN<A>,
    /// Reward received for the step.
    pub reward: f32,
    /// Observation after the step.
    pub next_obs: Vec<f32, N>,
    /// `next_obs` is terminal.
    pub terminated: bool,
    /// The episode was cut off at `next_obs`.
    pub truncated: bool,
    /// Version of the policy that chose the action.
    pub policy_version: u64,
    /// Initial replay priority (0 = let the learner assign one).
    pub priority: f32,
    /// LSTM hidden state before this step; empty = none.
    pub recurrent_h: Vec<f32, H>,
    /// LSTM cell state before this step; empty = none.
    pub recurrent_c: Vec<f32, H>,
}

impl<const N: usize, const A: usize, const H: usize> Default for TransitionN<N, A, H> {
    fn default() -> Self {
        Self {
            wire_version: WIRE_VERSION,
            robot_id: RobotId::new(),
            episode_id: 0,
            step: 0,
            obs: Vec::new(),
            action: ActionN::default(),
            reward: 0.0,
            next_obs: Vec::new(),
            terminated: false,
            truncated: false,
            policy_version: 0,
            priority: 0.0,
            recurrent_h: Vec::new(),
            recurrent_c: Vec::new(),
        }
    }
}

#[cfg(feature = "alloc")]
mod convert {
    use super::*;
    use crate::{Action, ActionCommand, Observation, Transition};
    use alloc::string::String as AllocString;

    fn alloc_id(id: &RobotId) -> AllocString {
        AllocString::from(id.as_str())
    }

    impl<const A: usize> TryFrom<&Action> for ActionN<A> {
        type Error = CapacityError;

        fn try_from(action: &Action) -> Result<Self, CapacityError> {
            Ok(match action {
                Action::Discrete(index) => Self::Discrete(*index),
                Action::Continuous(values) => Self::Continuous(fixed_vec("action", values)?),
            })
        }
    }

    impl<const A: usize> From<&ActionN<A>> for Action {
        fn from(action: &ActionN<A>) -> Self {
            match action {
                ActionN::Discrete(index) => Self::Discrete(*index),
                ActionN::Continuous(values) => Self::Continuous(values.to_vec()),
            }
        }
    }

    impl<const N: usize> TryFrom<&Observation> for ObservationN<N> {
        type Error = CapacityError;

        fn try_from(o: &Observation) -> Result<Self, CapacityError> {
            Ok(Self {
                wire_version: o.wire_version,
                robot_id: robot_id(&o.robot_id)?,
                seq: o.seq,
                timestamp_ns: o.timestamp_ns,
                episode_id: o.episode_id,
                step: o.step,
                values: fixed_vec("values", &o.values)?,
                reward: o.reward,
                terminated: o.terminated,
                truncated: o.truncated,
            })
        }
    }

    impl<const N: usize> From<&ObservationN<N>> for Observation {
        fn from(o: &ObservationN<N>) -> Self {
            Self {
                wire_version: o.wire_version,
                robot_id: alloc_id(&o.robot_id),
                seq: o.seq,
                timestamp_ns: o.timestamp_ns,
                episode_id: o.episode_id,
                step: o.step,
                values: o.values.to_vec(),
                reward: o.reward,
                terminated: o.terminated,
                truncated: o.truncated,
            }
        }
    }

    impl<const A: usize> TryFrom<&ActionCommand> for ActionCommandN<A> {
        type Error = CapacityError;

        fn try_from(c: &ActionCommand) -> Result<Self, CapacityError> {
            Ok(Self {
                wire_version: c.wire_version,
                robot_id: robot_id(&c.robot_id)?,
                seq: c.seq,
                timestamp_ns: c.timestamp_ns,
                policy_version: c.policy_version,
                action: ActionN::try_from(&c.action)?,
            })
        }
    }

    impl<const A: usize> From<&ActionCommandN<A>> for ActionCommand {
        fn from(c: &ActionCommandN<A>) -> Self {
            Self {
                wire_version: c.wire_version,
                robot_id: alloc_id(&c.robot_id),
                seq: c.seq,
                timestamp_ns: c.timestamp_ns,
                policy_version: c.policy_version,
                action: Action::from(&c.action),
            }
        }
    }

    impl<const N: usize, const A: usize, const H: usize> TryFrom<&Transition> for TransitionN<N, A, H> {
        type Error = CapacityError;

        fn try_from(t: &Transition) -> Result<Self, CapacityError> {
            Ok(Self {
                wire_version: t.wire_version,
                robot_id: robot_id(&t.robot_id)?,
                episode_id: t.episode_id,
                step: t.step,
                obs: fixed_vec("obs", &t.obs)?,
                action: ActionN::try_from(&t.action)?,
                reward: t.reward,
                next_obs: fixed_vec("next_obs", &t.next_obs)?,
                terminated: t.terminated,
                truncated: t.truncated,
                policy_version: t.policy_version,
                priority: t.priority,
                recurrent_h: fixed_vec("recurrent_h", &t.recurrent_h)?,
                recurrent_c: fixed_vec("recurrent_c", &t.recurrent_c)?,
            })
        }
    }

    impl<const N: usize, const A: usize, const H: usize> From<&TransitionN<N, A, H>> for Transition {
        fn from(t: &TransitionN<N, A, H>) -> Self {
            Self {
                wire_version: t.wire_version,
                robot_id: alloc_id(&t.robot_id),
                episode_id: t.episode_id,
                step: t.step,
                obs: t.obs.to_vec(),
                action: Action::from(&t.action),
                reward: t.reward,
                next_obs: t.next_obs.to_vec(),
                terminated: t.terminated,
                truncated: t.truncated,
                policy_version: t.policy_version,
                priority: t.priority,
                recurrent_h: t.recurrent_h.to_vec(),
                recurrent_c: t.recurrent_c.to_vec(),
            }
        }
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use crate::{Action, Observation};
    use alloc::vec;

    #[test]
    fn conversions_check_capacity() {
        let obs = Observation {
            robot_id: "r1".into(),
            values: vec![1.0, 2.0, 3.0],
            ..Observation::default()
        };
        let fixed = ObservationN::<4>::try_from(&obs).unwrap();
        assert_eq!(Observation::from(&fixed), obs);
        assert_eq!(
            ObservationN::<2>::try_from(&obs),
            Err(CapacityError {
                field: "values",
                len: 3,
                capacity: 2
            })
        );
        let long_id = Observation {
            robot_id: "x".repeat(ROBOT_ID_CAPACITY + 1),
            ..Observation::default()
        };
        assert!(matches!(
            ObservationN::<4>::try_from(&long_id),
            Err(CapacityError {
                field: "robot_id",
                ..
            })
        ));
        let action = Action::Continuous(vec![0.5, -0.5]);
        assert_eq!(
            Action::from(&ActionN::<2>::try_from(&action).unwrap()),
            action
        );
        assert!(ActionN::<1>::try_from(&action).is_err());
        assert_eq!(
            ActionN::<0>::try_from(&Action::Discrete(4)),
            Ok(ActionN::Discrete(4))
        );
    }
}
