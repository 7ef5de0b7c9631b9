//! ROS 2 topic names, relative so that they resolve inside each robot's namespace
//! (e.g. `/robot_1/observation`; DDS topic `rt/robot_1/observation`).
//!
//! The message type on each topic is the `reflex_msgs/msg/<Name>` of the same struct
//! that travels on the matching zenoh key (see [`crate::keys`]).

/// [`crate::TransitionBatch`]es, daemon → learner (zenoh suffix [`crate::keys::TRANSITIONS`]).
pub const TRANSITIONS: &str = "transitions";
/// [`crate::Status`] heartbeats (zenoh suffix [`crate::keys::STATUS`]).
pub const STATUS: &str = "status";
/// [`crate::PolicyUpdate`]s, learner → daemons (zenoh suffix [`crate::keys::POLICY`]).
pub const POLICY_UPDATE: &str = "policy_update";
/// [`crate::Observation`]s, robot driver or simulator → daemon (zenoh suffix
/// [`crate::keys::OBS`]).
pub const OBSERVATION: &str = "observation";
/// [`crate::ActionCommand`]s, daemon → robot driver or simulator (zenoh suffix
/// [`crate::keys::ACTION`]).
pub const ACTION: &str = "action";

/// [`crate::StepInfo`]s, a task's reward node or simulator → daemon, beside a standard
/// sensor topic (ROS 2 only: on zenoh the [`crate::Observation`] carries them).
pub const STEP_INFO: &str = "step_info";

/// Every topic name, in a fixed order.
pub const ALL: [&str; 6] = [
    TRANSITIONS,
    STATUS,
    POLICY_UPDATE,
    OBSERVATION,
    ACTION,
    STEP_INFO,
];

/// `reflexd`'s default ROS 2 node name for robot `robot_id`: `reflexd_<robot_id>` with
/// every character a ROS name refuses replaced by `_` (no `__`, no trailing `_`), e.g.
/// `robot-1` → `reflexd_robot_1`. Its topics are `<namespace>/<node>/<topic>`.
#[cfg(feature = "alloc")]
pub fn daemon_node_name(robot_id: &str) -> alloc::string::String {
    let mut name = alloc::string::String::from("reflexd_");
    for c in robot_id.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '_' };
        if !(c == '_' && name.ends_with('_')) {
            name.push(c);
        }
    }
    name.trim_end_matches('_').into()
}
