//! [`Observation`]: what a robot (or a simulator standing in for one) senses.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::WIRE_VERSION;

/// One observation from a robot, published on [`keys::OBS`](crate::keys::OBS) /
/// [`topics::OBSERVATION`](crate::topics::OBSERVATION) (`Observation.msg`).
///
/// Besides the sensor values it carries the reward and episode flags of the step that
/// led to it, so a simulator standing in for a robot can publish everything a learner
/// needs; a real robot without a reward signal leaves them 0 / false and the daemon
/// computes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Schema version, [`WIRE_VERSION`] when written by this build.
    pub wire_version: u16,
    /// The robot that observed it.
    pub robot_id: String,
    /// Per-robot sequence number, from 1 and +1 per observation: gaps reveal
    /// drops, and the [`ActionCommand`](crate::ActionCommand) answering it echoes
    /// it (0 is left for a command that answers none).
    pub seq: u64,
    /// When the values were sensed, nanoseconds since the UNIX epoch (robot clock).
    pub timestamp_ns: u64,
    /// Episode this observation belongs to (per robot, +1 per reset).
    pub episode_id: u64,
    /// Step index within the episode; 0 is the observation right after a reset.
    pub step: u32,
    /// The observation vector, in the observation space's units.
    pub values: Vec<f32>,
    /// Reward received for the step that led here (0 at step 0).
    pub reward: f32,
    /// The episode ended in a terminal state (no bootstrapping past it).
    pub terminated: bool,
    /// The episode was cut off (time limit, operator) in a non-terminal state.
    pub truncated: bool,
}

impl Observation {
    /// Whether the episode ended (terminated or truncated) with this observation.
    pub fn done(&self) -> bool {
        self.terminated || self.truncated
    }
}

impl Default for Observation {
    fn default() -> Self {
        Self {
            wire_version: WIRE_VERSION,
            robot_id: String::new(),
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
