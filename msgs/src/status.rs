//! [`Status`]: a daemon's heartbeat.

use alloc::string::String;
use serde::{Deserialize, Serialize};

use crate::WIRE_VERSION;

/// A daemon's periodic heartbeat, published on [`keys::STATUS`](crate::keys::STATUS) /
/// [`topics::STATUS`](crate::topics::STATUS) (`Status.msg`). Counters are totals since
/// the daemon started, so a missed heartbeat loses nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Schema version, [`WIRE_VERSION`] when written by this build.
    pub wire_version: u16,
    /// The robot this daemon controls.
    pub robot_id: String,
    /// When the heartbeat was sent, nanoseconds since the UNIX epoch.
    pub timestamp_ns: u64,
    /// +1 per heartbeat: a gap means heartbeats were lost.
    pub heartbeat_seq: u64,
    /// Version of the running policy (0 = none loaded).
    pub policy_version: u64,
    /// Control-loop ticks run.
    pub ticks: u64,
    /// Ticks that overran their period.
    pub overruns: u64,
    /// Transitions delivered to the transport.
    pub transitions_sent: u64,
    /// Transitions waiting in the spool right now (not a total).
    pub transitions_spooled: u64,
    /// Transitions dropped because the spool was full.
    pub transitions_dropped: u64,
    /// Incoming messages that failed to decode (counted and dropped).
    pub decode_errors: u64,
    /// Policy updates refused (bad hash, signature, spec, or a probe failed).
    pub policy_updates_rejected: u64,
    /// Ticks where the safety layer changed the policy's action (clamp, non-finite
    /// guard, rate limit, safe action).
    pub safety_interventions: u64,
    /// The sensor watchdog is tripped: observations are stale, the safe action is out.
    pub watchdog_tripped: bool,
    /// The external emergency stop is engaged.
    pub estop_active: bool,
    /// Median tick latency (observation in → action out), microseconds.
    pub latency_p50_us: u32,
    /// 99th-percentile tick latency, microseconds.
    pub latency_p99_us: u32,
    /// Largest tick latency, microseconds.
    pub latency_max_us: u32,
    /// Median wake-up jitter (tick start − its deadline), microseconds.
    pub jitter_p50_us: u32,
    /// 99th-percentile wake-up jitter, microseconds.
    pub jitter_p99_us: u32,
    /// Largest wake-up jitter, microseconds.
    pub jitter_max_us: u32,
}

impl Default for Status {
    fn default() -> Self {
        Self {
            wire_version: WIRE_VERSION,
            robot_id: String::new(),
            timestamp_ns: 0,
            heartbeat_seq: 0,
            policy_version: 0,
            ticks: 0,
            overruns: 0,
            transitions_sent: 0,
            transitions_spooled: 0,
            transitions_dropped: 0,
            decode_errors: 0,
            policy_updates_rejected: 0,
            safety_interventions: 0,
            watchdog_tripped: false,
            estop_active: false,
            latency_p50_us: 0,
            latency_p99_us: 0,
            latency_max_us: 0,
            jitter_p50_us: 0,
            jitter_p99_us: 0,
            jitter_max_us: 0,
        }
    }
}
