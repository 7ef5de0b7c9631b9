//! reflex-daemon: `reflexd`, the on-robot runtime.
//!
//! This crate will own policy loading and validation (tract), the fixed-rate
//! control loop, the safety layer, transports (zenoh, ROS 2), the transition
//! spool and policy hot-swap. It is empty until the daemon issues land: nothing
//! here pretends to run a policy yet.
//!
//! It depends on `reflex-msgs` only; it must never depend on the trainer or on
//! candle, because it ships to robots.
