//! Learning algorithms, one file each.

pub mod dqn;
