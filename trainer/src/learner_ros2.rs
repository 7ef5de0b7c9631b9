//! The learner on ROS 2 (`reflex-train serve --transport ros2`): robots are found by
//! discovery, not configured. Every `reflex_msgs/msg/TransitionBatch` topic that a
//! writer on the domain publishes (reflexd's `~/transitions`, e.g.
//! `/robot_1/reflexd_robot_1/transitions`) is subscribed, with the `~/status` beside
//! it, and policies go to the `~/policy_update` beside it, so the learner needs no
//! robot list, as zenoh's `reflex/<fleet>/*/transitions` wildcard needs none.
//!
//! A thread drains the subscriptions and feeds the same [`Incoming`] queue as the
//! zenoh side; robot ids come from the messages themselves. Policy publishers are
//! reliable and transient-local (depth 1): a daemon that starts later gets the
//! current policy from DDS, and a new robot also gets it at once from here.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reflex_msgs::{PolicyUpdate, Status, TransitionBatch};
use reflex_ros2::{DeepSub, Link, Pub, Qos, Sub};

use crate::learner::{Incoming, LearnerError};

/// What the learner needs to join a ROS 2 domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ros2LearnerConfig {
    /// DDS domain (`ROS_DOMAIN_ID`).
    pub domain: u16,
    /// The learner's node namespace (`/` or `/a/b`).
    pub namespace: String,
    /// The learner's node name.
    pub node_name: String,
}

impl Default for Ros2LearnerConfig {
    fn default() -> Self {
        Self {
            domain: 0,
            namespace: "/".into(),
            node_name: "reflex_learner".into(),
        }
    }
}

/// Keep all: the reader must not overwrite batches this side has not taken yet.
const TRANSITIONS_QOS: Qos = Qos {
    reliable: true,
    transient_local: false,
    depth: 0,
    max_blocking: Duration::ZERO,
};
/// Batches a robot's reader may hold before this side takes them (64 transitions
/// each at the daemon's default: about 8 MB of CartPole batches).
const READER_CACHE: usize = 4096;
const STATUS_QOS: Qos = Qos {
    reliable: false,
    transient_local: false,
    depth: 4,
    max_blocking: Duration::ZERO,
};
const POLICY_QOS: Qos = Qos {
    reliable: true,
    transient_local: true,
    depth: 1,
    max_blocking: Duration::from_millis(200),
};

/// One robot's topics.
struct RobotTopics {
    transitions: DeepSub<TransitionBatch>,
    status: Sub<Status>,
    policy: Pub<PolicyUpdate>,
}

/// Shared between the learner loop and the discovery thread.
struct Shared {
    robots: Mutex<Vec<RobotTopics>>,
    current: Mutex<Option<PolicyUpdate>>,
    stop: AtomicBool,
    /// Messages dropped for a robot id that is not a valid name.
    bad_ids: AtomicU64,
}

/// The learner's ROS 2 side: subscriptions found by discovery, and policy
/// publishers. Dropping it stops the thread and leaves the domain.
pub struct Ros2Fleet {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    link: Arc<Link>,
}

impl Ros2Fleet {
    /// Joins the domain and starts looking for robots.
    pub fn start(config: &Ros2LearnerConfig) -> Result<(Self, Receiver<Incoming>), LearnerError> {
        let link = Arc::new(
            Link::open(config.domain, &config.namespace, &config.node_name)
                .map_err(|e| LearnerError::Ros2(e.to_string()))?,
        );
        let shared = Arc::new(Shared {
            robots: Mutex::new(Vec::new()),
            current: Mutex::new(None),
            stop: AtomicBool::new(false),
            bad_ids: AtomicU64::new(0),
        });
        let (tx, rx) = channel();
        let thread = {
            let (link, shared) = (link.clone(), shared.clone());
            std::thread::Builder::new()
                .name("learner-ros2".into())
                .spawn(move || pump(&link, &shared, &tx))
                .map_err(|e| LearnerError::Ros2(format!("starting the ROS 2 thread: {e}")))?
        };
        Ok((
            Self {
                shared,
                thread: Some(thread),
                link,
            },
            rx,
        ))
    }

    /// Publishes `update` to every robot found so far (and to later ones).
    pub fn publish(&self, update: &PolicyUpdate) -> Result<(), LearnerError> {
        *lock(&self.shared.current) = Some(update.clone());
        for robot in lock(&self.shared.robots).iter() {
            robot
                .policy
                .publish(update.clone())
                .map_err(|e| LearnerError::Ros2(e.to_string()))?;
        }
        Ok(())
    }

    /// Messages dropped because they did not decode, over every robot found.
    pub fn decode_errors(&self) -> u64 {
        lock(&self.shared.robots)
            .iter()
            .map(|r| r.transitions.errors() + r.status.errors())
            .sum::<u64>()
            + self.shared.bad_ids.load(Ordering::Relaxed)
    }

    /// The learner's node name (`/ns/name`).
    pub fn node(&self) -> &str {
        self.link.fully_qualified_name()
    }
}

impl Drop for Ros2Fleet {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The discovery-and-drain loop.
fn pump(link: &Link, shared: &Shared, tx: &Sender<Incoming>) {
    let mut known: Vec<String> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    let mut last_scan: Option<Instant> = None;
    let mut batches = Vec::new();
    let mut statuses = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        if last_scan.is_none_or(|t| t.elapsed() >= Duration::from_millis(200)) {
            last_scan = Some(Instant::now());
            for topic in link.topics_of::<TransitionBatch>() {
                let Some(prefix) = topic.strip_suffix("/transitions") else {
                    continue;
                };
                if known.contains(&topic) {
                    continue;
                }
                match robot_topics(link, prefix) {
                    Ok(robot) => {
                        if let Some(update) = lock(&shared.current).clone() {
                            if let Err(e) = robot.policy.publish(update) {
                                eprintln!("learner: policy to {prefix}: {e}");
                            }
                        }
                        eprintln!("learner: robot found on {prefix}");
                        lock(&shared.robots).push(robot);
                        known.push(topic);
                    }
                    // Tried again at the next scan; said once.
                    Err(e) if !failed.contains(&topic) => {
                        eprintln!("learner: cannot subscribe to {prefix} (retrying): {e}");
                        failed.push(topic);
                    }
                    Err(_) => {}
                }
            }
        }
        for robot in lock(&shared.robots).iter_mut() {
            robot.transitions.drain(&mut batches);
            robot.status.drain(&mut statuses);
        }
        // The learner keys its per-robot state by the id a message carries:
        // one that is not a valid name (empty, oversized, odd characters) is
        // dropped and counted with the undecodable ones.
        let valid = |id: &str| {
            let ok = reflex_msgs::keys::validate_name(id).is_ok();
            if !ok && shared.bad_ids.fetch_add(1, Ordering::Relaxed) < 5 {
                let shown: String = id.chars().take(40).collect();
                eprintln!("learner: dropped a message from robot id {shown:?}: not a valid name");
            }
            ok
        };
        for b in batches.drain(..) {
            if valid(&b.robot_id) && tx.send(Incoming::Batch(b.robot_id.clone(), b)).is_err() {
                return;
            }
        }
        for s in statuses.drain(..) {
            if valid(&s.robot_id) && tx.send(Incoming::Status(s.robot_id.clone(), s)).is_err() {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn robot_topics(link: &Link, prefix: &str) -> Result<RobotTopics, reflex_ros2::Ros2Error> {
    Ok(RobotTopics {
        transitions: link.deep_subscription(
            &format!("{prefix}/transitions"),
            TRANSITIONS_QOS,
            READER_CACHE,
        )?,
        status: link.subscription(&format!("{prefix}/status"), STATUS_QOS)?,
        policy: link.publisher(&format!("{prefix}/policy_update"), POLICY_QOS)?,
    })
}
