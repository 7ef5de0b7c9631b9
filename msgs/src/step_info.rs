//! [`StepInfo`]: reward and episode flags beside a robot's standard sensor topic.

use alloc::string::String;
use serde::{Deserialize, Serialize};

use crate::WIRE_VERSION;

/// Reward and episode flags for one sensor message (`StepInfo.msg`), published by a
/// task's reward node or a simulator on [`topics::STEP_INFO`](crate::topics::STEP_INFO)
/// beside a standard sensor topic (`sensor_msgs/JointState`,
/// `std_msgs/Float64MultiArray`). The daemon joins the two on [`StepInfo::stamp_ns`]
/// and acts on the [`Observation`](crate::Observation) they make together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepInfo {
    /// Schema version, [`WIRE_VERSION`] when written by this build.
    pub wire_version: u16,
    /// The robot this step belongs to (may be empty).
    pub robot_id: String,
    /// The sensor message's `header.stamp` in nanoseconds since the UNIX epoch
    /// (`sec * 10^9 + nanosec`). Messages without a header (`Float64MultiArray`) are
    /// paired in arrival order, and this is 0.
    pub stamp_ns: u64,
    /// Reward for the step that led to this sensor message (0 after a reset).
    pub reward: f32,
    /// The episode ended in a terminal state at this sensor message.
    pub terminated: bool,
    /// The episode was cut off (time limit) at this sensor message.
    pub truncated: bool,
}

impl Default for StepInfo {
    fn default() -> Self {
        Self {
            wire_version: WIRE_VERSION,
            robot_id: String::new(),
            stamp_ns: 0,
            reward: 0.0,
            terminated: false,
            truncated: false,
        }
    }
}
