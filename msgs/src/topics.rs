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

/// Every topic name, in a fixed order.
pub const ALL: [&str; 5] = [TRANSITIONS, STATUS, POLICY_UPDATE, OBSERVATION, ACTION];
