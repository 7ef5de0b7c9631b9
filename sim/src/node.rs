//! A simulated robot on zenoh (`reflex-sim serve`): publishes [`Observation`]s on
//! `reflex/<fleet>/<robot>/obs`, applies the [`ActionCommand`]s that answer them from
//! `reflex/<fleet>/<robot>/action`, so `reflexd` controls it exactly as it would
//! control hardware.
//!
//! Protocol (what the daemon's control loop expects, see `Observation`'s docs):
//!
//! - every new observation gets the next `seq`; it carries the reward and the
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
        }
    }
}

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
    /// Return of each completed episode.
    pub returns: Vec<f64>,
    /// Mean of `returns` (0 when none).
    pub mean_return: f64,
    /// Actions for an observation other than the current one (ignored).
    pub stale_actions: u64,
    /// Actions the env refused (wrong kind, out of range, non-finite; ignored).
    pub invalid_actions: u64,
    /// Action messages that did not decode (ignored).
    pub decode_errors: u64,
    /// Republishes of an unanswered observation.
    pub republished: u64,
    /// Unanswered observations reissued under a new `seq`.
    pub reissued: u64,
    /// Why it stopped: `signal`, `max_episodes` or `idle_timeout`.
    pub stopped_by: String,
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
/// action came for `idle_timeout`.
pub fn run(config: &NodeConfig, shutdown: &AtomicBool) -> Result<NodeReport, NodeError> {
    for (what, name) in [("robot", &config.robot), ("fleet", &config.fleet)] {
        keys::validate_name(name).map_err(|e| NodeError::Name(format!("{what} {name:?}: {e}")))?;
    }
    let mut env = make(&config.env)?;
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
    let publish = |obs: &Observation| -> Result<(), NodeError> {
        let bytes = codec::encode(obs).map_err(|e| NodeError::Encode(e.to_string()))?;
        publisher
            .put(bytes)
            .wait()
            .map_err(|e| NodeError::Zenoh(format!("put on {obs_key}: {e}")))
    };

    let mut report = NodeReport {
        robot: config.robot.clone(),
        env: env.id().to_string(),
        ..NodeReport::default()
    };
    let mut episode = 0u64;
    let mut seq = 0u64;
    let mut episode_return = 0.0;
    let mut current = first_observation(&mut *env, config, episode, seq);
    publish(&current)?;
    let mut last_action = Instant::now();
    let mut last_publish = Instant::now();
    let mut unanswered = 0u32;

    report.stopped_by = loop {
        if shutdown.load(Ordering::SeqCst) {
            break "signal".into();
        }
        let now = Instant::now();
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
            publish(&current)?;
            last_publish = Instant::now();
            continue;
        }
        // Wake up at least every 50 ms to notice signals.
        let wait = (due - now).min(Duration::from_millis(50));
        let sample = match actions.recv_timeout(wait) {
            Ok(Some(sample)) => sample,
            Ok(None) => continue,
            Err(e) => return Err(NodeError::Zenoh(format!("action subscriber: {e}"))),
        };
        let command: ActionCommand = match codec::decode(&sample.payload().to_bytes()) {
            Ok(c) => c,
            Err(_) => {
                report.decode_errors += 1;
                continue;
            }
        };
        if command.seq != seq {
            report.stale_actions += 1;
            continue;
        }
        let step = match env.step(&command.action) {
            Ok(step) => step,
            Err(_) => {
                report.invalid_actions += 1;
                continue;
            }
        };
        last_action = Instant::now();
        unanswered = 0;
        report.steps += 1;
        episode_return += step.reward;
        seq += 1;
        current = Observation {
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
        publish(&current)?;
        last_publish = Instant::now();
        if step.done() {
            report.episodes += 1;
            report.returns.push(episode_return);
            episode_return = 0.0;
            if config.max_episodes.is_some_and(|m| report.episodes >= m) {
                break "max_episodes".into();
            }
            episode += 1;
            seq += 1;
            current = first_observation(&mut *env, config, episode, seq);
            publish(&current)?;
            last_publish = Instant::now();
        }
    };
    if !report.returns.is_empty() {
        report.mean_return = report.returns.iter().sum::<f64>() / report.returns.len() as f64;
    }
    // Give zenoh a moment to flush the last observation before the session closes.
    std::thread::sleep(Duration::from_millis(20));
    drop(actions);
    drop(publisher);
    let _ = session.close().wait();
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
