//! A simulated robot on zenoh or ROS 2 (`reflex-sim serve`): publishes
//! [`Observation`]s on `reflex/<fleet>/<robot>/obs` (ROS 2: reflexd's `~/observation`,
//! `/<namespace>/reflexd_<robot>/observation`), applies the [`ActionCommand`]s that
//! answer them from `reflex/<fleet>/<robot>/action` (ROS 2: reflexd's `~/action`), so
//! `reflexd` controls it exactly as it would control hardware.
//!
//! Protocol (what the daemon's control loop expects, see `Observation`'s docs):
//!
//! - every new observation gets the next `seq`, from 1 (a command with `seq` 0
//!   answers nothing: it is reflexd's safe action before its first observation,
//!   and must not step the simulator); it carries the reward and the
//!   `terminated` / `truncated` flags of the step that led to it, its `episode_id` and
//!   its `step` index (0 right after a reset, with reward 0);
//! - an action answers the observation whose `seq` it echoes; an action for any other
//!   `seq` is stale and ignored (counted);
//! - at an episode's end the node publishes the terminal observation, resets the env
//!   with `seed + episode` and publishes the next episode's step 0 at once (the daemon
//!   sends no action for a done observation);
//! - while no action comes the current observation is republished every
//!   [`NodeConfig::republish`] with the same `seq` (the daemon ignores repeats), so a
//!   daemon that starts later still gets going; after [`NodeConfig::reissue_after`]
//!   republishes without an answer it is reissued under a new `seq` (counted), which
//!   unsticks a daemon whose action was lost.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reflex_msgs::codec;
use reflex_msgs::keys;
use reflex_msgs::{ActionCommand, Observation, WireMessage};
use serde::Serialize;
use zenoh::bytes::Encoding;
use zenoh::handlers::FifoChannel;
use zenoh::qos::CongestionControl;
use zenoh::Wait;

use crate::{make, Env};

/// Why the node could not run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The env name is unknown or the env failed.
    #[error(transparent)]
    Sim(#[from] crate::SimError),
    /// zenoh refused the configuration or a declaration.
    #[error("zenoh: {0}")]
    Zenoh(String),
    /// A robot or fleet name is not a valid key chunk.
    #[error("{0}")]
    Name(String),
    /// An observation could not be encoded.
    #[error("encoding an observation: {0}")]
    Encode(String),
    /// ROS 2 refused the node or a topic (or this build has no ROS 2).
    #[error("ROS 2: {0}")]
    Ros2(String),
    /// The step record could not be written.
    #[error("writing the step record: {0}")]
    Record(#[from] std::io::Error),
}

/// How a simulated robot runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Env name as [`make`] takes it (`cartpole`, `CartPole-v1`, `pendulum-masked`…).
    pub env: String,
    /// Robot id (one key chunk).
    pub robot: String,
    /// Fleet (one key chunk).
    pub fleet: String,
    /// zenoh endpoints to connect to (e.g. `tcp/127.0.0.1:7447`).
    pub connect: Vec<String>,
    /// zenoh endpoints to listen on.
    pub listen: Vec<String>,
    /// zenoh mode: `peer` or `client`.
    pub mode: String,
    /// Episode `k` resets with seed `seed + k`.
    pub seed: u64,
    /// Stop after this many episodes (`None`: run until stopped).
    pub max_episodes: Option<u64>,
    /// Stop after this long without a (current) action (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Republish the current observation this often while no action comes.
    pub republish: Duration,
    /// Reissue the current observation under a new `seq` after this many republishes.
    pub reissue_after: u32,
    /// The wire: zenoh (the fields above) or ROS 2.
    pub transport: NodeTransport,
    /// ROS 2: the DDS domain (`None`: `ROS_DOMAIN_ID`, else 0).
    pub ros_domain: Option<u16>,
    /// ROS 2: the namespace reflexd runs in (`/` or `/a/b`).
    pub ros_namespace: String,
    /// ROS 2: reflexd's node name (`None`: its default, `reflexd_<robot>` with
    /// characters ROS names refuse replaced by `_`).
    pub ros_daemon_node: Option<String>,
    /// Append every step the env took as one JSON line here (the simulator's own
    /// record, to check transitions against).
    pub record: Option<std::path::PathBuf>,
}

/// Which wire a simulated robot plays on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeTransport {
    /// zenoh keys `reflex/<fleet>/<robot>/{obs,action}`.
    #[default]
    Zenoh,
    /// ROS 2 topics of reflexd's node: `~/observation` and `~/action`.
    Ros2,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            env: "cartpole".into(),
            robot: "r0".into(),
            fleet: "default".into(),
            connect: vec!["tcp/127.0.0.1:7447".into()],
            listen: Vec::new(),
            mode: "peer".into(),
            seed: 0,
            max_episodes: None,
            idle_timeout: None,
            republish: Duration::from_millis(100),
            reissue_after: 10,
            transport: NodeTransport::Zenoh,
            ros_domain: None,
            ros_namespace: "/".into(),
            ros_daemon_node: None,
            record: None,
        }
    }
}

/// One step as the simulator took it (a line of [`NodeConfig::record`]).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct StepRecord {
    /// Episode (per robot, from 0).
    pub episode_id: u64,
    /// Index of `obs` within the episode.
    pub step: u32,
    /// Observation the action answered.
    pub obs: Vec<f32>,
    /// The action applied.
    pub action: reflex_msgs::Action,
    /// Reward for the step.
    pub reward: f32,
    /// Observation after the step.
    pub next_obs: Vec<f32>,
    /// The episode terminated.
    pub terminated: bool,
    /// The episode was truncated.
    pub truncated: bool,
}

/// Where a node publishes observations and takes actions.
trait Wire {
    fn publish(&mut self, obs: &Observation) -> Result<(), NodeError>;
    /// The next action message within `wait` (`None` when none came), or why
    /// one that came does not decode.
    fn recv(&mut self, wait: Duration) -> Result<Option<Result<ActionCommand, String>>, NodeError>;
    fn decode_errors(&self) -> u64 {
        0
    }
    fn close(self: Box<Self>) {}
}

struct ZenohWire {
    session: zenoh::Session,
    actions: zenoh::pubsub::Subscriber<zenoh::handlers::FifoChannelHandler<zenoh::sample::Sample>>,
    publisher: zenoh::pubsub::Publisher<'static>,
    obs_key: String,
}

impl ZenohWire {
    fn open(config: &NodeConfig) -> Result<Self, NodeError> {
        let session = zenoh::open(zenoh_config(config)?)
            .wait()
            .map_err(|e| NodeError::Zenoh(format!("opening session: {e}")))?;
        let obs_key = keys::obs_key(&config.fleet, &config.robot);
        let action_key = keys::action_key(&config.fleet, &config.robot);
        let actions = session
            .declare_subscriber(action_key.clone())
            .with(FifoChannel::new(256))
            .wait()
            .map_err(|e| NodeError::Zenoh(format!("subscribing to {action_key}: {e}")))?;
        let publisher = session
            .declare_publisher(obs_key.clone())
            .encoding(Encoding::APPLICATION_CDR.with_schema(Observation::DDS_TYPE))
            .congestion_control(CongestionControl::Block)
            .express(true)
            .wait()
            .map_err(|e| NodeError::Zenoh(format!("declaring publisher on {obs_key}: {e}")))?;
        Ok(Self {
            session,
            actions,
            publisher,
            obs_key,
        })
    }
}

impl Wire for ZenohWire {
    fn publish(&mut self, obs: &Observation) -> Result<(), NodeError> {
        let bytes = codec::encode(obs).map_err(|e| NodeError::Encode(e.to_string()))?;
        self.publisher
            .put(bytes)
            .wait()
            .map_err(|e| NodeError::Zenoh(format!("put on {}: {e}", self.obs_key)))
    }

    fn recv(&mut self, wait: Duration) -> Result<Option<Result<ActionCommand, String>>, NodeError> {
        match self.actions.recv_timeout(wait) {
            Ok(Some(sample)) => Ok(Some(
                codec::decode(&sample.payload().to_bytes()).map_err(|e| e.to_string()),
            )),
            Ok(None) => Ok(None),
            Err(e) => Err(NodeError::Zenoh(format!("action subscriber: {e}"))),
        }
    }

    fn close(self: Box<Self>) {
        let this = *self;
        drop(this.actions);
        drop(this.publisher);
        let _ = this.session.close().wait();
    }
}

#[cfg(feature = "ros2")]
struct Ros2Wire {
    // Field order: the topics go before the node.
    observations: reflex_ros2::Pub<Observation>,
    actions: reflex_ros2::Sub<ActionCommand>,
    buf: std::collections::VecDeque<ActionCommand>,
    scratch: Vec<ActionCommand>,
    _link: reflex_ros2::Link,
}

#[cfg(feature = "ros2")]
impl Ros2Wire {
    fn open(config: &NodeConfig) -> Result<Self, NodeError> {
        let ros = |e: reflex_ros2::Ros2Error| NodeError::Ros2(e.to_string());
        let domain = match config.ros_domain {
            Some(d) => d,
            None => reflex_ros2::domain_from_env().map_err(ros)?,
        };
        let daemon = config
            .ros_daemon_node
            .clone()
            .unwrap_or_else(|| reflex_msgs::topics::daemon_node_name(&config.robot));
        let own = format!("reflex_sim_{}", daemon.trim_start_matches("reflexd_"));
        let link = reflex_ros2::Link::open(domain, &config.ros_namespace, &own).map_err(ros)?;
        let ns = config.ros_namespace.trim_end_matches('/');
        let qos = reflex_ros2::Qos {
            reliable: true,
            transient_local: false,
            depth: 10,
            max_blocking: Duration::from_millis(20),
        };
        Ok(Self {
            observations: link
                .publisher(&format!("{ns}/{daemon}/observation"), qos)
                .map_err(ros)?,
            actions: link
                .subscription(&format!("{ns}/{daemon}/action"), qos)
                .map_err(ros)?,
            buf: Default::default(),
            scratch: Vec::new(),
            _link: link,
        })
    }
}

#[cfg(feature = "ros2")]
impl Wire for Ros2Wire {
    fn publish(&mut self, obs: &Observation) -> Result<(), NodeError> {
        match self.observations.publish(obs.clone()) {
            // A full window means reflexd is not reading: the republish timer retries.
            Ok(()) | Err(reflex_ros2::PublishError::WouldBlock(_)) => Ok(()),
            Err(e) => Err(NodeError::Ros2(e.to_string())),
        }
    }

    fn recv(&mut self, wait: Duration) -> Result<Option<Result<ActionCommand, String>>, NodeError> {
        let deadline = Instant::now() + wait;
        loop {
            self.actions.drain(&mut self.scratch);
            self.buf.extend(self.scratch.drain(..));
            if let Some(c) = self.buf.pop_front() {
                return Ok(Some(Ok(c)));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep((deadline - now).min(Duration::from_micros(200)));
        }
    }

    fn decode_errors(&self) -> u64 {
        self.actions.errors()
    }
}

/// Episode returns [`NodeReport::returns`] keeps.
pub const RETURNS_KEPT: usize = 1000;

/// Dropped or refused actions whose reason is printed (the rest are counted).
const LOGGED: u64 = 5;

/// Without any applied action this long after start, the node says so once.
const FIRST_ACTION: Duration = Duration::from_secs(5);

/// What a node did (printed as JSON by `reflex-sim serve` when it stops).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeReport {
    /// Robot id.
    pub robot: String,
    /// Gymnasium id of the env.
    pub env: String,
    /// Episodes completed.
    pub episodes: u64,
    /// Env steps taken (actions applied).
    pub steps: u64,
    /// Returns of the last [`RETURNS_KEPT`] completed episodes, oldest first (a
    /// node that runs for weeks keeps a bounded report).
    pub returns: Vec<f64>,
    /// Mean return of every completed episode (0 when none).
    pub mean_return: f64,
    /// Actions for an observation other than the current one (ignored).
    pub stale_actions: u64,
    /// Actions the env refused (wrong kind, out of range, non-finite; ignored).
    pub invalid_actions: u64,
    /// Action messages that did not decode (ignored).
    pub decode_errors: u64,
    /// Actions addressed to another robot (ignored): two robots whose topics
    /// or keys collide.
    pub foreign_actions: u64,
    /// Republishes of an unanswered observation.
    pub republished: u64,
    /// Unanswered observations reissued under a new `seq`.
    pub reissued: u64,
    /// Why it stopped: `signal`, `max_episodes`, `idle_timeout` or `error`.
    pub stopped_by: String,
    /// With `stopped_by` = `error`: what failed (publishing, receiving, the
    /// step record); the counts above are what was done until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn zenoh_config(config: &NodeConfig) -> Result<zenoh::Config, NodeError> {
    let mut cfg = zenoh::Config::default();
    let list = |l: &[String]| serde_json::to_string(l).unwrap_or_else(|_| "[]".into());
    for (key, value) in [
        (
            "mode",
            serde_json::to_string(&config.mode).unwrap_or_default(),
        ),
        ("listen/endpoints", list(&config.listen)),
        ("connect/endpoints", list(&config.connect)),
        ("scouting/multicast/enabled", "false".into()),
    ] {
        cfg.insert_json5(key, &value)
            .map_err(|e| NodeError::Zenoh(format!("{key} = {value}: {e}")))?;
    }
    Ok(cfg)
}

/// Runs the node until `shutdown` is set, `max_episodes` episodes are done or no
/// action came for `idle_timeout`. `Err` when it cannot start (names, env, wire,
/// record file); once running, a wire or record failure ends it with `Ok` and the
/// report of what was done, its `error` set (check it).
pub fn run(config: &NodeConfig, shutdown: &AtomicBool) -> Result<NodeReport, NodeError> {
    for (what, name) in [("robot", &config.robot), ("fleet", &config.fleet)] {
        keys::validate_name(name).map_err(|e| NodeError::Name(format!("{what} {name:?}: {e}")))?;
    }
    let mut env = make(&config.env)?;
    let mut wire: Box<dyn Wire> = match config.transport {
        NodeTransport::Zenoh => Box::new(ZenohWire::open(config)?),
        #[cfg(feature = "ros2")]
        NodeTransport::Ros2 => Box::new(Ros2Wire::open(config)?),
        #[cfg(not(feature = "ros2"))]
        NodeTransport::Ros2 => {
            return Err(NodeError::Ros2(
                "this reflex-sim was built without the `ros2` feature".into(),
            ))
        }
    };
    let mut record = match &config.record {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        )),
        None => None,
    };
    let mut report = NodeReport {
        robot: config.robot.clone(),
        env: env.id().to_string(),
        ..NodeReport::default()
    };
    let mut episode = 0u64;
    // From 1: see the protocol above.
    let mut seq = 1u64;
    let mut episode_return = 0.0;
    let mut returns_sum = 0.0;
    let mut current = first_observation(&mut *env, config, episode, seq);
    let mut last_action = Instant::now();
    let mut last_publish = Instant::now();
    let mut unanswered = 0u32;
    let started = Instant::now();
    let mut silence_told = false;

    // The loop runs in a closure so that a wire or record error still ends
    // with the report of what was done (stopped_by "error", and the reason).
    let outcome = (|| -> Result<String, NodeError> {
        wire.publish(&current)?;
        Ok(loop {
            if shutdown.load(Ordering::SeqCst) {
                break "signal".into();
            }
            let now = Instant::now();
            if !silence_told && report.steps == 0 && now - started >= FIRST_ACTION {
                // Nothing applied yet: most often reflexd runs under another
                // robot_id or fleet, or does not reach this endpoint; the counts
                // say whether actions came but were refused.
                silence_told = true;
                eprintln!(
                    "reflex-sim {}: no action applied in {} s since start ({} refused, {} for \
                     other robots, {} undecodable, {} stale): is reflexd's robot_id {:?} (and \
                     fleet {:?}), and does it reach this robot's endpoint or topics?",
                    config.robot,
                    FIRST_ACTION.as_secs(),
                    report.invalid_actions,
                    report.foreign_actions,
                    report.decode_errors + wire.decode_errors(),
                    report.stale_actions,
                    config.robot,
                    config.fleet
                );
            }
            if let Some(idle) = config.idle_timeout {
                if now.duration_since(last_action) >= idle {
                    break "idle_timeout".into();
                }
            }
            let due = last_publish + config.republish;
            if now >= due {
                unanswered += 1;
                if unanswered >= config.reissue_after.max(1) {
                    unanswered = 0;
                    seq += 1;
                    current.seq = seq;
                    report.reissued += 1;
                } else {
                    report.republished += 1;
                }
                current.timestamp_ns = now_ns();
                wire.publish(&current)?;
                last_publish = Instant::now();
                continue;
            }
            // Wake up at least every 50 ms to notice signals.
            let wait = (due - now).min(Duration::from_millis(50));
            let command: ActionCommand = match wire.recv(wait)? {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    report.decode_errors += 1;
                    if report.decode_errors <= LOGGED {
                        eprintln!(
                            "reflex-sim {}: dropped an action message: {e}",
                            config.robot
                        );
                    }
                    continue;
                }
                None => continue,
            };
            // An empty robot_id is taken as this robot's (as reflexd takes
            // observations): a controller that does not fill it in still works.
            if !command.robot_id.is_empty() && command.robot_id != config.robot {
                report.foreign_actions += 1;
                if report.foreign_actions <= LOGGED {
                    eprintln!(
                        "reflex-sim {}: dropped an action for robot {:?}: another robot \
                     publishes on this robot's action key or topic",
                        config.robot, command.robot_id
                    );
                }
                continue;
            }
            if command.seq != seq {
                report.stale_actions += 1;
                continue;
            }
            let step = match env.step(&command.action) {
                Ok(step) => step,
                Err(e) => {
                    report.invalid_actions += 1;
                    if report.invalid_actions <= LOGGED {
                        eprintln!("reflex-sim {}: refused an action: {e}", config.robot);
                    }
                    continue;
                }
            };
            last_action = Instant::now();
            unanswered = 0;
            report.steps += 1;
            episode_return += step.reward;
            seq += 1;
            let next = Observation {
                robot_id: config.robot.clone(),
                seq,
                timestamp_ns: now_ns(),
                episode_id: episode,
                step: current.step.saturating_add(1),
                values: env.obs().to_vec(),
                reward: step.reward as f32,
                terminated: step.terminated,
                truncated: step.truncated,
                ..Observation::default()
            };
            if let Some(r) = &mut record {
                let line = StepRecord {
                    episode_id: episode,
                    step: current.step,
                    obs: current.values.clone(),
                    action: command.action.clone(),
                    reward: next.reward,
                    next_obs: next.values.clone(),
                    terminated: next.terminated,
                    truncated: next.truncated,
                };
                serde_json::to_writer(&mut *r, &line).map_err(std::io::Error::from)?;
                r.write_all(b"\n")?;
            }
            current = next;
            wire.publish(&current)?;
            last_publish = Instant::now();
            if step.done() {
                report.episodes += 1;
                returns_sum += episode_return;
                if report.returns.len() == RETURNS_KEPT {
                    report.returns.remove(0);
                }
                report.returns.push(episode_return);
                episode_return = 0.0;
                if config.max_episodes.is_some_and(|m| report.episodes >= m) {
                    break "max_episodes".into();
                }
                episode += 1;
                seq += 1;
                current = first_observation(&mut *env, config, episode, seq);
                wire.publish(&current)?;
                last_publish = Instant::now();
            }
        })
    })();
    if report.episodes > 0 {
        report.mean_return = returns_sum / report.episodes as f64;
    }
    report.decode_errors += wire.decode_errors();
    let flushed = match &mut record {
        Some(r) => r.flush().map_err(NodeError::from),
        None => Ok(()),
    };
    match outcome {
        Ok(why) => report.stopped_by = why,
        Err(e) => {
            report.stopped_by = "error".into();
            report.error = Some(e.to_string());
        }
    }
    // A record that could not be flushed at the end is an error too, kept
    // beside the reason the loop stopped (and beside its error, if any).
    if let Err(e) = flushed {
        let error = report.error.get_or_insert_with(String::new);
        if !error.is_empty() {
            error.push_str("; then ");
        }
        error.push_str(&e.to_string());
    }
    // Give the wire a moment to flush the last observation before it closes.
    std::thread::sleep(Duration::from_millis(20));
    wire.close();
    Ok(report)
}

fn first_observation(
    env: &mut dyn Env,
    config: &NodeConfig,
    episode: u64,
    seq: u64,
) -> Observation {
    let values = env.reset(Some(config.seed.wrapping_add(episode))).to_vec();
    Observation {
        robot_id: config.robot.clone(),
        seq,
        timestamp_ns: now_ns(),
        episode_id: episode,
        step: 0,
        values,
        ..Observation::default()
    }
}
