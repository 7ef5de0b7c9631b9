//! Experience streamed from robots to the learner: [`Transition`] and
//! [`TransitionBatch`].

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::{Action, WIRE_VERSION};

/// One step of experience, `(obs, action, reward, next_obs, terminated, truncated)`,
/// with what the learner needs around it (`Transition.msg`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// Schema version, [`WIRE_VERSION`] when written by this build.
    pub wire_version: u16,
    /// The robot that collected it.
    pub robot_id: String,
    /// Episode it belongs to (per robot).
    pub episode_id: u64,
    /// Index of `obs` within the episode (0 = first step after a reset).
    pub step: u32,
    /// Observation the action was chosen from.
    pub obs: Vec<f32>,
    /// Action taken (after the safety layer: what the robot actually did).
    pub action: Action,
    /// Reward received for the step.
    pub reward: f32,
    /// Observation after the step.
    pub next_obs: Vec<f32>,
    /// `next_obs` is terminal: do not bootstrap from it.
    pub terminated: bool,
    /// The episode was cut off at `next_obs` (time limit): bootstrap from it.
    pub truncated: bool,
    /// Version of the behaviour policy (exploratory actions included: they carry the
    /// version of the policy they explore around); 0 = none, i.e. the safe action.
    pub policy_version: u64,
    /// Initial replay priority computed by the actor (Ape-X); 0 = let the learner
    /// assign one.
    pub priority: f32,
    /// Recurrent policies: LSTM hidden state `h` before this step (R2D2 stored state,
    /// used to burn in); empty when the policy is not recurrent or the state is not sent.
    pub recurrent_h: Vec<f32>,
    /// Recurrent policies: LSTM cell state `c` before this step; same length as
    /// `recurrent_h`.
    pub recurrent_c: Vec<f32>,
}

impl Transition {
    /// Whether the episode ended (terminated or truncated) with this step.
    pub fn done(&self) -> bool {
        self.terminated || self.truncated
    }

    /// Whether it carries a recurrent state.
    pub fn has_recurrent_state(&self) -> bool {
        !self.recurrent_h.is_empty()
    }
}

impl Default for Transition {
    fn default() -> Self {
        Self {
            wire_version: WIRE_VERSION,
            robot_id: String::new(),
            episode_id: 0,
            step: 0,
            obs: Vec::new(),
            action: Action::default(),
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

/// Transitions from one robot, sent together on
/// [`keys::TRANSITIONS`](crate::keys::TRANSITIONS) /
/// [`topics::TRANSITIONS`](crate::topics::TRANSITIONS) (`TransitionBatch.msg`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransitionBatch {
    /// Schema version, [`WIRE_VERSION`] when written by this build.
    pub wire_version: u16,
    /// The robot that collected them.
    pub robot_id: String,
    /// Per-robot batch sequence number, +1 per batch sent: a gap means batches were
    /// lost in transit.
    pub batch_seq: u64,
    /// The transitions, oldest first.
    pub transitions: Vec<Transition>,
}

impl Default for TransitionBatch {
    fn default() -> Self {
        Self {
            wire_version: WIRE_VERSION,
            robot_id: String::new(),
            batch_seq: 0,
            transitions: Vec::new(),
        }
    }
}
