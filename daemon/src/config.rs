//! `robot.toml`: the daemon's configuration.
//!
//! Every struct refuses unknown keys (a misspelled key is an error naming the key and
//! the file, never a silently ignored setting) and every field has a default, so a
//! file only needs what differs from [`Config::default`]. [`DEFAULT_CONFIG_TOML`] is
//! the fully commented default file `reflexd print-default-config` prints; a test
//! checks it parses to exactly [`Config::default`] and names every field.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ros2_config::Ros2Config;
use crate::zenoh_link::ZenohConfig;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (syntax, a wrong type, an unknown
    /// key: toml's message names the key and shows the line).
    #[error("invalid config {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's error, with the key and its position.
        source: toml::de::Error,
    },
    /// The values parse but make no sense together (e.g. `rate_hz = 0`).
    #[error("invalid config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Which setting and why.
        message: String,
    },
}

/// The whole daemon configuration (`robot.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This robot's id: a single zenoh key chunk (no `/`, `*`, `$`, `?`, `#`),
    /// unique within its fleet.
    pub robot_id: String,
    /// The fleet this robot belongs to (a single key chunk); policies are published
    /// per fleet.
    pub fleet: String,
    /// Control-loop rate in Hz, 0.01 to 1e6: one tick every `1 / rate_hz`
    /// seconds on absolute deadlines.
    pub rate_hz: f64,
    /// Busy-wait (yielding) for the last `spin_us` microseconds before each deadline
    /// instead of sleeping, trading CPU for lower jitter; 0 = always sleep.
    pub spin_us: u64,
    /// Interval between `Status` heartbeats, milliseconds.
    pub status_interval_ms: u64,
    /// Which policy runs and how it is updated.
    pub policy: PolicyConfig,
    /// Greedy deployment or exploration.
    pub mode: ModeConfig,
    /// The safety layer between the policy and the actuators.
    pub safety: SafetyConfig,
    /// Where transitions wait while the trainer is unreachable.
    pub spool: SpoolConfig,
    /// How transitions are grouped before they are sent.
    pub batching: BatchingConfig,
    /// How the daemon talks to the robot and the trainer.
    pub transport: TransportConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            robot_id: "robot-1".into(),
            fleet: "default".into(),
            rate_hz: 50.0,
            spin_us: 0,
            status_interval_ms: 1000,
            policy: PolicyConfig::default(),
            mode: ModeConfig::default(),
            safety: SafetyConfig::default(),
            spool: SpoolConfig::default(),
            batching: BatchingConfig::default(),
            transport: TransportConfig::default(),
        }
    }
}

/// `[policy]`: the policy file and policy updates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// The ONNX policy loaded at start (relative paths are relative to the working
    /// directory).
    pub path: PathBuf,
    /// Poll the policy file every `reload_poll_ms` milliseconds and hot-swap it when
    /// its contents change; 0 = never reload from the file.
    pub reload_poll_ms: u64,
    /// ed25519 public key (64 hex digits) that must have signed every `PolicyUpdate`
    /// message: the learner's `learner.pub`. Empty = no key, and then updates
    /// over the network are refused unless `accept_unsigned` is true.
    pub public_key: String,
    /// With no `public_key`: accept unsigned `PolicyUpdate`s, checked by their
    /// sha256 only, so anyone who can publish on the fleet's keys (zenoh) or
    /// topics (ROS 2) can change what this robot runs. For a bench or a closed
    /// network; an error together with `public_key`. The policy file itself
    /// (`path`, reloaded from disk) is trusted either way.
    pub accept_unsigned: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("policy.onnx"),
            reload_poll_ms: 1000,
            public_key: String::new(),
            accept_unsigned: false,
        }
    }
}

impl PolicyConfig {
    /// The configured public key as bytes, `None` when none is configured.
    pub fn public_key_bytes(&self) -> Result<Option<[u8; 32]>, String> {
        if self.public_key.is_empty() {
            return Ok(None);
        }
        parse_hex32(&self.public_key).map(Some)
    }
}

/// Parses 64 hex digits (either case) into 32 bytes.
pub fn parse_hex32(s: &str) -> Result<[u8; 32], String> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return Err(format!(
            "expected 64 hex digits, got {} characters",
            s.len()
        ));
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("`{}` is not hex", &s[2 * i..2 * i + 2]))?;
    }
    Ok(out)
}

/// How the policy's greedy output is turned into the action sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Greedy: exactly the policy's action (after safety).
    Deploy,
    /// Explore to collect experience: ε-greedy (discrete) or action noise
    /// (continuous).
    Explore,
}

/// Action noise for continuous policies in explore mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Noise {
    /// Independent Gaussian noise each tick.
    Gaussian,
    /// Ornstein–Uhlenbeck noise (temporally correlated), reset each episode.
    Ou,
}

/// `[mode]`: deploy or explore, and the per-actor exploration parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModeConfig {
    /// `"deploy"` (greedy) or `"explore"`.
    pub kind: Mode,
    /// Seed of the exploration generator (runs are reproducible for a given seed and
    /// observation stream).
    pub seed: u64,
    /// Discrete policies: probability of a uniformly random action (before the
    /// per-actor schedule below), in [0, 1].
    pub epsilon: f64,
    /// This actor's index in the fleet, `0..num_actors` (Ape-X per-actor schedule).
    pub actor_index: u32,
    /// Number of actors sharing the schedule; with more than one, actor `i` uses
    /// ε_i = epsilon^(1 + epsilon_alpha · i / (num_actors − 1)) (Ape-X).
    pub num_actors: u32,
    /// Exponent α of the Ape-X schedule (7 in the paper).
    pub epsilon_alpha: f64,
    /// Continuous policies: `"gaussian"` or `"ou"`.
    pub noise: Noise,
    /// Continuous policies: noise scale as a fraction of each dimension's half range
    /// `(high − low) / 2` (absolute units where a bound is infinite).
    pub sigma: f64,
    /// Ornstein–Uhlenbeck mean reversion per tick, in (0, 1].
    pub ou_theta: f64,
}

impl Default for ModeConfig {
    fn default() -> Self {
        Self {
            kind: Mode::Deploy,
            seed: 0,
            epsilon: 0.4,
            actor_index: 0,
            num_actors: 1,
            epsilon_alpha: 7.0,
            noise: Noise::Gaussian,
            sigma: 0.1,
            ou_theta: 0.15,
        }
    }
}

impl ModeConfig {
    /// Checks the values that parse but cannot work (each message names the
    /// key): what [`Config::validate`] checks of `[mode]`, and what `reflex-train
    /// fleet` checks before it writes its robots' configs.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.epsilon) {
            return Err(format!(
                "mode.epsilon = {}: must be in [0, 1]",
                self.epsilon
            ));
        }
        if self.num_actors == 0 || self.actor_index >= self.num_actors {
            return Err(format!(
                "mode.actor_index = {} with mode.num_actors = {}: need actor_index < num_actors",
                self.actor_index, self.num_actors
            ));
        }
        if !(self.epsilon_alpha.is_finite() && self.epsilon_alpha >= 0.0) {
            return Err(format!(
                "mode.epsilon_alpha = {}: must be finite and >= 0",
                self.epsilon_alpha
            ));
        }
        if !(self.sigma.is_finite() && self.sigma >= 0.0) {
            return Err(format!(
                "mode.sigma = {}: must be finite and >= 0",
                self.sigma
            ));
        }
        if !(self.ou_theta > 0.0 && self.ou_theta <= 1.0) {
            return Err(format!(
                "mode.ou_theta = {}: must be in (0, 1]",
                self.ou_theta
            ));
        }
        Ok(())
    }

    /// This actor's ε after the Ape-X schedule.
    pub fn actor_epsilon(&self) -> f64 {
        if self.num_actors <= 1 {
            return self.epsilon;
        }
        let frac = f64::from(self.actor_index) / f64::from(self.num_actors - 1);
        self.epsilon.powf(1.0 + self.epsilon_alpha * frac)
    }
}

/// `[safety]`: what the safety layer enforces after the policy.
///
/// Clamping to the policy spec's action bounds and the non-finite guard are always
/// on; the rest is configured here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SafetyConfig {
    /// Discrete policies: the action index sent when the safety layer takes over
    /// (watchdog, e-stop, invalid output); must be below the spec's `n`.
    pub safe_action_index: u32,
    /// Continuous policies: the action vector sent when the safety layer takes over;
    /// empty = 0 in every dimension, clamped into the bounds. Must lie inside the
    /// spec's bounds.
    pub safe_action: Vec<f32>,
    /// Continuous policies: largest change per second of each action dimension
    /// (one value per dimension, or one value for all); empty = no rate limit. The
    /// safe action itself is never rate-limited.
    pub max_rate_per_s: Vec<f32>,
    /// Sensor watchdog: no new observation for this many milliseconds → safe action
    /// and a flagged status until observations resume; 0 = no watchdog.
    pub watchdog_ms: u64,
    /// Start with the emergency stop engaged (the safe action is sent until an
    /// operator clears it).
    pub start_estopped: bool,
    /// Treat an observation outside the running policy's observation space (each
    /// finite bound of its spec) like a NaN one: the safe action, no transition,
    /// counted in `bad_observations`. The bounds are the training env's, so a
    /// reading past them is a sensor fault or a state the policy never saw. A
    /// terminal observation still ends its step, clamped into the bounds. `false`
    /// = check only the length and that every value is finite.
    pub observation_bounds: bool,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        Self {
            safe_action_index: 0,
            safe_action: Vec::new(),
            max_rate_per_s: Vec::new(),
            watchdog_ms: 200,
            start_estopped: false,
            observation_bounds: true,
        }
    }
}

/// `[spool]`: where transitions wait while the transition sink is down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Transitions kept in memory; beyond this the oldest go to disk (if `dir` is
    /// set) or are dropped (counted).
    pub memory_capacity: usize,
    /// Directory for append-only spool segments (checksummed records, kept across
    /// restarts); empty = memory only, and what is unsent at shutdown is lost
    /// (counted as dropped).
    pub dir: PathBuf,
    /// Size at which a disk segment is closed and a new one started, bytes.
    pub segment_bytes: u64,
    /// Most bytes kept on disk; beyond this the oldest segment is dropped (counted).
    pub max_disk_bytes: u64,
    /// While the sink is down, retry it at most this often, milliseconds.
    pub retry_ms: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            memory_capacity: 100_000,
            dir: PathBuf::new(),
            segment_bytes: 8 << 20,
            max_disk_bytes: 1 << 30,
            retry_ms: 500,
        }
    }
}

/// `[batching]`: transitions are sent in batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    /// Transitions per `TransitionBatch` (a batch is sent as soon as it is full).
    pub transitions_per_batch: usize,
    /// A partial batch is sent once its oldest transition is this old,
    /// milliseconds; at most 5000 (a learner takes a robot silent for 10 s as
    /// gone and stores its open steps).
    pub max_latency_ms: u64,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            transitions_per_batch: 64,
            max_latency_ms: 100,
        }
    }
}

/// Which transport carries observations, actions, transitions and policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TransportKind {
    /// In-process channels (tests, and the trainer's local loop).
    Inproc,
    /// zenoh: CDR payloads on `reflex/<fleet>/<robot>/…` keys (`[transport.zenoh]`).
    Zenoh,
    /// ROS 2: a node with `reflex_msgs` topics and adapters to standard messages
    /// (`[transport.ros2]`).
    Ros2,
}

/// `[transport]`: how the daemon talks to the robot and the trainer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// `"zenoh"` (default), `"ros2"`, or `"inproc"` (in-process channels: tests and
    /// reflex-train's local loop, refused by `reflexd run`).
    pub kind: TransportKind,
    /// `[transport.zenoh]`: the zenoh session (used when `kind = "zenoh"`).
    pub zenoh: ZenohConfig,
    /// `[transport.ros2]`: the ROS 2 node (used when `kind = "ros2"`).
    pub ros2: Ros2Config,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            kind: TransportKind::Zenoh,
            zenoh: ZenohConfig::default(),
            ros2: Ros2Config::default(),
        }
    }
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses and validates `text`; `path` only names the source in errors.
    pub fn from_toml(text: &str, path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let config: Self = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    /// Checks the values that parse but cannot work (each message names the key).
    pub fn validate(&self) -> Result<(), String> {
        let name = |key: &str, value: &str| {
            reflex_msgs::keys::validate_name(value).map_err(|e| format!("{key} = {value:?}: {e}"))
        };
        name("robot_id", &self.robot_id)?;
        name("fleet", &self.fleet)?;
        // A tick per 100 s at the slowest (a period the clock can hold), a
        // million per second at the fastest.
        if !(self.rate_hz.is_finite() && (0.01..=1e6).contains(&self.rate_hz)) {
            return Err(format!(
                "rate_hz = {}: must be in [0.01, 1e6]",
                self.rate_hz
            ));
        }
        if self.status_interval_ms == 0 {
            return Err("status_interval_ms = 0: must be at least 1".into());
        }
        let key = self
            .policy
            .public_key_bytes()
            .map_err(|e| format!("policy.public_key: {e}"))?;
        if key.is_some() && self.policy.accept_unsigned {
            return Err(
                "policy.accept_unsigned = true with a policy.public_key: with a key, \
                 every update must be signed; remove one of the two"
                    .into(),
            );
        }
        self.mode.validate()?;
        if let Some(v) = self.safety.safe_action.iter().find(|v| !v.is_finite()) {
            return Err(format!("safety.safe_action contains {v}: must be finite"));
        }
        if let Some(v) = self
            .safety
            .max_rate_per_s
            .iter()
            .find(|v| !(v.is_finite() && **v > 0.0))
        {
            return Err(format!(
                "safety.max_rate_per_s contains {v}: must be finite and > 0"
            ));
        }
        if self.spool.memory_capacity == 0 {
            return Err("spool.memory_capacity = 0: must be at least 1".into());
        }
        if self.spool.segment_bytes < 1024 {
            return Err(format!(
                "spool.segment_bytes = {}: must be at least 1024",
                self.spool.segment_bytes
            ));
        }
        if self.spool.max_disk_bytes < self.spool.segment_bytes {
            return Err("spool.max_disk_bytes must be at least spool.segment_bytes".into());
        }
        if self.batching.transitions_per_batch == 0 {
            return Err("batching.transitions_per_batch = 0: must be at least 1".into());
        }
        // reflex-train's learner takes a robot silent for 10 s as gone and stores
        // its open steps; batches must come well before that.
        if self.batching.max_latency_ms > 5000 {
            return Err(format!(
                "batching.max_latency_ms = {}: must be at most 5000",
                self.batching.max_latency_ms
            ));
        }
        if self.transport.kind == TransportKind::Zenoh {
            self.transport
                .zenoh
                .validate()
                .map_err(|e| format!("transport.zenoh: {e}"))?;
        }
        if self.transport.kind == TransportKind::Ros2 {
            self.transport.ros2.validate(&self.robot_id)?;
        }
        Ok(())
    }

    /// The tick period.
    pub fn period(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(1.0 / self.rate_hz)
    }
}

/// The default configuration as a fully commented TOML file (what
/// `reflexd print-default-config` prints). It parses to exactly [`Config::default`].
pub const DEFAULT_CONFIG_TOML: &str = r#"# reflexd configuration (robot.toml). Every key is optional: a missing key takes the
# value shown here. Unknown or misspelled keys are refused.

# This robot's id: one zenoh key chunk (no '/', '*', '$', '?', '#'), unique in its fleet.
robot_id = "robot-1"
# The fleet this robot belongs to (one key chunk); policies are published per fleet.
fleet = "default"
# Control-loop rate in Hz, 0.01 to 1e6 (ticks on absolute deadlines: no drift).
rate_hz = 50.0
# Busy-wait (yielding) for the last spin_us microseconds before each deadline instead
# of sleeping: lower jitter for more CPU. 0 = always sleep.
spin_us = 0
# Interval between Status heartbeats, milliseconds.
status_interval_ms = 1000

[policy]
# The ONNX policy loaded at start.
path = "policy.onnx"
# Poll the policy file this often (ms) and hot-swap it when its contents change;
# 0 = never reload from the file.
reload_poll_ms = 1000
# ed25519 public key (64 hex digits) that must have signed every PolicyUpdate: the
# learner's learner.pub. "" = no key: updates over the network are then refused,
# unless accept_unsigned = true.
public_key = ""
# With no public_key, accept unsigned PolicyUpdates checked by sha256 only: anyone
# who can publish on the fleet's keys or topics can change what this robot runs.
# For a bench or a closed network. The policy file (path) is trusted either way.
accept_unsigned = false

[mode]
# "deploy" (greedy) or "explore".
kind = "deploy"
# Seed of the exploration generator.
seed = 0
# Discrete policies: probability of a uniformly random action, in [0, 1].
epsilon = 0.4
# Ape-X per-actor schedule: with num_actors > 1, actor i explores with
# epsilon^(1 + epsilon_alpha * i / (num_actors - 1)).
actor_index = 0
num_actors = 1
epsilon_alpha = 7.0
# Continuous policies: "gaussian" or "ou" (Ornstein-Uhlenbeck, reset each episode).
noise = "gaussian"
# Noise scale as a fraction of each dimension's half range (absolute if unbounded).
sigma = 0.1
# Ornstein-Uhlenbeck mean reversion per tick, in (0, 1].
ou_theta = 0.15

[safety]
# Clamping to the policy's action bounds and the non-finite guard are always on.
# Discrete policies: action index sent when the safety layer takes over.
safe_action_index = 0
# Continuous policies: action sent when the safety layer takes over;
# [] = 0 in every dimension, clamped into the bounds.
safe_action = []
# Continuous policies: largest change per second of each action dimension (one value
# per dimension, or one for all); [] = no rate limit.
max_rate_per_s = []
# Sensor watchdog: no new observation for this many ms -> safe action and a flagged
# status; 0 = no watchdog.
watchdog_ms = 200
# Start with the emergency stop engaged (safe action until an operator clears it).
start_estopped = false
# An observation outside the running policy's observation space (its finite bounds,
# those of the env it was trained on) gets the safe action and no transition, like a
# NaN one (a terminal one still ends its step, clamped into the bounds); false =
# check only its length and that it is finite.
observation_bounds = true

[spool]
# Transitions kept in memory while the trainer is unreachable; beyond this the oldest
# go to disk (if dir is set) or are dropped (counted).
memory_capacity = 100000
# Directory for checksummed, append-only spool segments kept across restarts;
# "" = memory only.
dir = ""
# Size at which a disk segment is closed and a new one started, bytes.
segment_bytes = 8388608
# Most bytes kept on disk; beyond this the oldest segment is dropped (counted).
max_disk_bytes = 1073741824
# While the transition sink is down, retry it at most this often, ms.
retry_ms = 500

[batching]
# Transitions per TransitionBatch (sent as soon as it is full).
transitions_per_batch = 64
# A partial batch is sent once its oldest transition is this old, ms (at most 5000).
max_latency_ms = 100

[transport]
# "zenoh", "ros2", or "inproc" (in-process channels: tests and reflex-train's local
# loop; refused by `reflexd run`).
kind = "zenoh"

[transport.zenoh]
# "peer" (talk directly to the peers connected to), "client" (only through a zenoh
# router: fleets across machines) or "router".
mode = "peer"
# Endpoints to listen on, e.g. ["tcp/127.0.0.1:7448"]; [] = listen on none.
listen = []
# Endpoints to connect to (retried until they are up): the learner's or the router's.
connect = ["tcp/127.0.0.1:7447"]
# Multicast scouting (automatic discovery on the LAN); off: endpoints are explicit.
scouting = false

[transport.ros2]
# Node name; "" = "reflexd_<robot_id>" with characters ROS names refuse replaced by _.
node_name = ""
# Node namespace: "/" (root) or e.g. "/robot_1". Topics "~/x" resolve to
# <namespace>/<node_name>/x, "x" to <namespace>/x, "/x" stays absolute.
namespace = "/"
# DDS domain (ROS_DOMAIN_ID, 0-232); -1 = from the ROS_DOMAIN_ID environment variable
# (0 when unset).
domain_id = -1

[transport.ros2.observation]
# "reflex" (reflex_msgs/msg/Observation: reward and episode flags included),
# "joint_state" (sensor_msgs/msg/JointState) or "float64_multi_array"
# (std_msgs/msg/Float64MultiArray); the last two take reward and episode ends from
# reflex_msgs/msg/StepInfo on step_info_topic.
source = "reflex"
# "" = the source's usual topic: "~/observation", "/joint_states" or
# "~/observation_array".
topic = ""
# joint_state: the joints, in observation order, e.g. ["cart", "pole"].
joints = []
# joint_state: the quantities taken from each joint, joint-major
# ([cart.position, cart.velocity, pole.position, ...]): position (rad or m),
# velocity (rad/s or m/s), effort (N m or N).
fields = ["position", "velocity"]
# joint_state / float64_multi_array: the StepInfo topic (reward, terminated,
# truncated per sensor message, joined on header.stamp; arrays in arrival order,
# so one message lost on a best-effort link shifts every later reward by a step).
# "" = none: reward 0 and episodes never end (deployment without learning).
step_info_topic = "~/step_info"
# A sensor message without its StepInfo (or a StepInfo without its sensor message)
# after this long is dropped and counted, ms.
step_info_timeout_ms = 100

[transport.ros2.action]
# "reflex" (reflex_msgs/msg/ActionCommand), "float64_multi_array"
# (std_msgs/msg/Float64MultiArray, what ros2_control's forward command controllers
# take; a discrete action is sent as [index]) or "twist" (geometry_msgs/msg/Twist).
sink = "reflex"
# "" = the sink's usual topic: "~/action", "~/commands" or "/cmd_vel".
topic = ""
# twist: the Twist field each action dimension drives (m/s, rad/s); others stay 0.
twist_fields = ["linear.x", "angular.z"]

# Quality of service per topic: reliability "default" | "reliable" | "best_effort",
# durability "default" | "volatile" | "transient_local", depth 0 = default. Defaults:
# observation, step_info: best effort, volatile, depth 5 (sensor data); action:
# reliable, volatile, 10; transitions: reliable, volatile, 100; status: reliable,
# transient local, 1; policy_update: reliable, volatile, 4.
[transport.ros2.qos.observation]
reliability = "default"
durability = "default"
depth = 0

[transport.ros2.qos.step_info]
reliability = "default"
durability = "default"
depth = 0

[transport.ros2.qos.action]
reliability = "default"
durability = "default"
depth = 0

[transport.ros2.qos.transitions]
reliability = "default"
durability = "default"
depth = 0

[transport.ros2.qos.status]
reliability = "default"
durability = "default"
depth = 0

[transport.ros2.qos.policy_update]
reliability = "default"
durability = "default"
depth = 0
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_toml_is_the_default_config() {
        let parsed = Config::from_toml(DEFAULT_CONFIG_TOML, "default.toml").unwrap();
        assert_eq!(parsed, Config::default());
    }

    /// Every field of the schema appears (uncommented) in the default file, so the
    /// printed default documents every setting.
    #[test]
    fn default_toml_names_every_field() {
        let printed: toml::Table = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
        let full: toml::Table =
            toml::from_str(&toml::to_string(&Config::default()).unwrap()).unwrap();
        fn keys(t: &toml::Table, prefix: &str, out: &mut Vec<String>) {
            for (k, v) in t {
                let key = format!("{prefix}{k}");
                if let toml::Value::Table(sub) = v {
                    keys(sub, &format!("{key}."), out);
                } else {
                    out.push(key);
                }
            }
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        keys(&printed, "", &mut a);
        keys(&full, "", &mut b);
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::from_toml("", "x.toml").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_refused_with_key_and_file() {
        let err = Config::from_toml("rate_hz = 10.0\nrate_hzz = 5.0\n", "/etc/robot.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/robot.toml"), "{err}");
        assert!(err.contains("rate_hzz"), "{err}");

        let err = Config::from_toml("[safety]\nwatchdog = 5\n", "robot.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("watchdog"), "{err}");
        assert!(err.contains("robot.toml"), "{err}");
    }

    #[test]
    fn invalid_values_are_refused() {
        for (text, needle) in [
            ("rate_hz = 0.0", "rate_hz"),
            ("rate_hz = 1e-20", "rate_hz"),
            ("robot_id = \"a/b\"", "robot_id"),
            ("[policy]\npublic_key = \"abcd\"", "public_key"),
            (
                "[policy]\npublic_key = \"0000000000000000000000000000000000000000000000000000000000000000\"\naccept_unsigned = true",
                "policy.accept_unsigned = true with a policy.public_key",
            ),
            ("[mode]\nepsilon = 1.5", "epsilon"),
            ("[mode]\nactor_index = 3\nnum_actors = 2", "actor_index"),
            ("[safety]\nmax_rate_per_s = [0.0]", "max_rate_per_s"),
            ("[spool]\nmemory_capacity = 0", "memory_capacity"),
            (
                "[batching]\ntransitions_per_batch = 0",
                "transitions_per_batch",
            ),
            (
                "[batching]\nmax_latency_ms = 60000",
                "max_latency_ms = 60000: must be at most 5000",
            ),
            ("[transport]\nkind = \"carrier-pigeon\"", "carrier-pigeon"),
            ("[transport.zenoh]\nmode = \"mesh\"", "mesh"),
            ("[transport.zenoh]\nconect = []", "conect"),
            (
                "[transport]\nkind = \"zenoh\"\n[transport.zenoh]\nconnect = [\"127.0.0.1:7447\"]",
                "transport.zenoh",
            ),
        ] {
            let err = Config::from_toml(text, "r.toml").unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn ape_x_epsilon_schedule() {
        let mut mode = ModeConfig {
            epsilon: 0.4,
            epsilon_alpha: 7.0,
            num_actors: 8,
            ..ModeConfig::default()
        };
        assert_eq!(mode.actor_epsilon(), 0.4);
        mode.actor_index = 7;
        assert!((mode.actor_epsilon() - 0.4f64.powi(8)).abs() < 1e-12);
        mode.num_actors = 1;
        mode.actor_index = 0;
        assert_eq!(mode.actor_epsilon(), 0.4);
    }

    #[test]
    fn public_key_hex() {
        let hex = "00".repeat(31) + "ff";
        let policy = PolicyConfig {
            public_key: hex,
            ..PolicyConfig::default()
        };
        let key = policy.public_key_bytes().unwrap().unwrap();
        assert_eq!(key[31], 0xff);
        assert!(parse_hex32(&"zz".repeat(32)).is_err());
    }
}
