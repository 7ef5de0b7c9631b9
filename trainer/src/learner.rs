//! The learner service (`reflex-train serve`): robots' transitions in over zenoh,
//! gradient updates out as signed policies — the learner half of the Ape-X loop.
//!
//! ```text
//! reflex/<fleet>/*/transitions ──▶ per-robot tracking ──▶ per-robot n-step ──▶ replay
//!                                  (batch_seq gaps/dups,                          │
//!                                   episodes, step gaps)        SPI limiter ◀─────┤
//!                                                                    │            │
//! reflex/<fleet>/policy ◀── sign (ed25519) ◀── ONNX ◀── every K updates ◀──── update
//! ```
//!
//! - **Tracking.** Each robot's batches carry `batch_seq` (+1 per batch since the
//!   daemon started). A higher number than expected is a gap (batches lost in
//!   transit, counted); a lower one is either a duplicate (the same batch again: not
//!   inserted twice) or a restarted daemon (its numbering starts over): the two are
//!   told apart by a fingerprint of each recent batch's first transition. Inside the
//!   stream, `(episode_id, step)` must advance by one; a step gap, an episode that
//!   changes without ending, or a refused step (wrong shape, non-finite values)
//!   closes the robot's n-step window as truncated, so returns never span missing
//!   steps.
//! - **Rate limiting** (Reverb's samples-per-insert): after `learning_starts`
//!   transitions, `updates allowed = (inserted − learning_starts) · SPI / batch_size`.
//!   A learner that is ahead waits for data instead of overfitting a small replay;
//!   one that is behind trains as fast as it can (robots are never blocked, they only
//!   act with an older policy). The default SPI is the local loop's ratio,
//!   `gradient_steps · batch_size / train_freq`.
//! - **Learners.** [`FleetLearner`]: DQN or DRQN for discrete actions; DDPG, TD3
//!   or NAF, feed-forward or recurrent, for continuous ones (robots send the actions they applied, in env
//!   units; replay keeps them so, as the local trainer's does). A learner that
//!   normalizes observations updates its running statistics from every accepted
//!   step. DQN's and DRQN's hard target updates run every N updates (the local
//!   loop's interval); the others move their targets by Polyak averaging in each
//!   update.
//! - **Sequences (the recurrent learners).** Each robot's accepted steps, with the LSTM state its
//!   daemon had before each one, gather into a segment that goes into sequence
//!   replay as one episode when the episode ends, at a hole in the stream
//!   (missing or refused steps: written as truncated), or after four windows'
//!   worth of steps. A window then starts from the robot's stored state; the
//!   previous-action input is the last applied action (one-hot, or in [−1, 1]
//!   for continuous actions), zeros at an episode's start and after a hole.
//! - **Policies.** Every K updates the acting network is exported (the same ONNX the
//!   local trainer writes, `policy_version` + 1, `training_step` = updates), written to
//!   `out/policy.onnx` atomically, signed with the run's ed25519 key (`out/learner.key`,
//!   public half in `out/learner.pub`, kept across restarts) and published reliably.
//! - **Restarts.** Checkpoints (the trainer's format) every N updates and on a clean
//!   stop (after the robots' open n-step windows and sequence segments are stored,
//!   so it holds every step accepted); a learner started on a folder with a
//!   checkpoint resumes from it while the robots keep acting and spooling.
//! - **Done.** A periodic greedy evaluation of the acting network on the built-in env
//!   decides "solved" (`--target-return`); the learner then publishes its final policy,
//!   writes `out/learner.json` and stops, as it does at `--max-transitions` or on
//!   SIGINT/SIGTERM.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use ed25519_dalek::{Signer, SigningKey};
use indicatif::{ProgressBar, ProgressStyle};
use reflex_daemon::zenoh::pubsub::Subscriber;
use reflex_daemon::zenoh::qos::CongestionControl;
use reflex_daemon::zenoh::Wait;
use reflex_daemon::zenoh_link::{self, ZenohConfig};
use reflex_msgs::{keys, ActionSpace, PolicySpec, PolicyUpdate, Status, TransitionBatch};
use reflex_sim::Env;
use serde::{Deserialize, Serialize};

use crate::algo::ddpg::Ddpg;
use crate::algo::dqn::{evaluate, Dqn};
use crate::algo::drqn::Drqn;
use crate::algo::naf::Naf;
use crate::algo::recurrent_ddpg::RecurrentDdpg;
use crate::algo::recurrent_naf::RecurrentNaf;
use crate::algo::{learning_rate_at, Agent, Scheduled, UpdateStats};
use crate::checkpoint;
use crate::export::{spec_for, write_atomic, POLICY_FILE};
use crate::replay::{
    ActionRef, ActionShape, EnvStep, NStepAccumulator, Replay, SequenceReplay, TransitionSink,
};
use crate::run::RunConfig;
use crate::TrainError;

/// The learner's summary file in the run folder (rewritten every few seconds while it
/// runs, final when it stops).
pub const LEARNER_FILE: &str = "learner.json";
/// The run's ed25519 signing key (64 hex digits, private).
pub const KEY_FILE: &str = "learner.key";
/// The run's ed25519 public key (64 hex digits): what robots put in `policy.public_key`.
pub const PUB_FILE: &str = "learner.pub";
/// The learner's metrics in its run folder: the robots' episodes and the
/// periodic evaluations, by transitions inserted.
pub const METRICS_FILE: &str = "metrics.csv";
/// [`METRICS_FILE`] drawn when the learner stops.
pub const CURVE_FILE: &str = "curve.png";

/// Why the learner stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum LearnerError {
    /// Training, export or checkpoints failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// zenoh refused the configuration or a declaration.
    #[error("zenoh: {0}")]
    Zenoh(String),
    /// ROS 2 refused the node or a topic.
    #[error("ROS 2: {0}")]
    Ros2(String),
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The options cannot work.
    #[error("config: {0}")]
    Config(String),
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> LearnerError {
    LearnerError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Rate limiting
// ---------------------------------------------------------------------------

/// Reverb-style samples-per-insert limiter: how many gradient updates the data
/// inserted so far pays for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpiLimiter {
    /// Samples (batch rows) drawn per transition inserted.
    pub samples_per_insert: f64,
    /// Rows per update.
    pub batch_size: usize,
    /// Transitions inserted before the first update.
    pub learning_starts: u64,
}

impl SpiLimiter {
    /// A limiter; `samples_per_insert` must be finite and positive, `batch_size` > 0.
    pub fn new(
        samples_per_insert: f64,
        batch_size: usize,
        learning_starts: u64,
    ) -> Result<Self, LearnerError> {
        if !(samples_per_insert.is_finite() && samples_per_insert > 0.0) {
            return Err(LearnerError::Config(format!(
                "samples per insert {samples_per_insert}: must be finite and > 0"
            )));
        }
        if batch_size == 0 {
            return Err(LearnerError::Config("batch_size = 0".into()));
        }
        Ok(Self {
            samples_per_insert,
            batch_size,
            learning_starts,
        })
    }

    /// Updates allowed after `inserted` transitions:
    /// `⌊(inserted − learning_starts) · SPI / batch_size⌋`, 0 before `learning_starts`.
    pub fn allowed(&self, inserted: u64) -> u64 {
        let paid = inserted.saturating_sub(self.learning_starts) as f64;
        (paid * self.samples_per_insert / self.batch_size as f64).floor() as u64
    }

    /// Whether one more update is allowed after `updates` updates.
    pub fn may_update(&self, inserted: u64, updates: u64) -> bool {
        inserted > self.learning_starts && updates < self.allowed(inserted)
    }
}

// ---------------------------------------------------------------------------
// Per-robot tracking
// ---------------------------------------------------------------------------

/// What a batch's sequence number says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchVerdict {
    /// New data; `missing` batches were skipped before it (0 = in order).
    Fresh {
        /// Batches lost before this one.
        missing: u64,
    },
    /// A batch already received: drop it.
    Duplicate,
    /// The numbering started over (the daemon restarted): new data.
    Restarted,
}

/// Batches remembered for duplicate detection, per robot.
const RECENT_BATCHES: usize = 256;

/// Tracks one robot's `batch_seq`.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    next: Option<u64>,
    recent: VecDeque<(u64, u64)>,
}

impl SeqTracker {
    /// Classifies batch `seq` whose content has `fingerprint` (see [`fingerprint`]).
    pub fn check(&mut self, seq: u64, fingerprint: u64) -> BatchVerdict {
        let verdict = match self.next {
            None => BatchVerdict::Fresh { missing: 0 },
            Some(next) if seq >= next => BatchVerdict::Fresh {
                missing: seq - next,
            },
            Some(_) => {
                if self
                    .recent
                    .iter()
                    .any(|&(s, f)| s == seq && f == fingerprint)
                {
                    return BatchVerdict::Duplicate;
                }
                self.recent.clear();
                BatchVerdict::Restarted
            }
        };
        // Robot-provided numbers: saturate rather than overflow.
        self.next = Some(seq.saturating_add(1));
        if self.recent.len() == RECENT_BATCHES {
            self.recent.pop_front();
        }
        self.recent.push_back((seq, fingerprint));
        verdict
    }
}

/// A fingerprint of a batch (its size and first transition), to tell a duplicate from
/// a restarted daemon's batch with the same number.
pub fn fingerprint(batch: &TransitionBatch) -> u64 {
    // FNV-1a over the identifying fields.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    };
    eat(&(batch.transitions.len() as u64).to_le_bytes());
    if let Some(t) = batch.transitions.first() {
        eat(&t.episode_id.to_le_bytes());
        eat(&t.step.to_le_bytes());
        for v in &t.obs {
            eat(&v.to_bits().to_le_bytes());
        }
    }
    h
}

/// Gaps in a robot's episode stream logged (each one after is only counted).
const GAPS_LOGGED: u64 = 5;

/// Refused transitions logged per robot (with the reason); the rest are counted.
const INVALID_LOGGED: u64 = 5;

/// The largest magnitude an observation or reward value may have. Past it a
/// value is taken for a faulty sensor: a network fed it learns nothing, and
/// squared in a loss it overflows f32 and stops training (one robot would end
/// the service). Scale such signals before they reach the policy.
pub const MAX_ABS_VALUE: f32 = 1e6;
/// Daemon restarts of a robot logged (each one after is only counted).
const RESTARTS_LOGGED: u64 = 5;

/// Where a transition falls in its robot's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepVerdict {
    /// The next step of the current episode (or step 0 of a new one after a done).
    Continues,
    /// A new episode began before the previous one ended (its tail was lost or the
    /// robot restarted): close the window first.
    EpisodeCut,
    /// `missing` steps of this episode never arrived: close the window first.
    Gap {
        /// Steps missing.
        missing: u64,
    },
    /// A step already seen: skip it.
    Stale,
    /// The first step seen from this robot (or from its restarted daemon) is
    /// mid-episode: the learner joined late, and the steps before it are not
    /// missing (as a first `batch_seq` above 0 is no batch gap).
    Joined,
}

/// Tracks one robot's `(episode_id, step)` stream.
#[derive(Debug, Clone, Default)]
pub struct EpisodeTracker {
    /// (episode, next expected step, the episode has ended).
    current: Option<(u64, u32, bool)>,
    /// Episodes seen to their end.
    pub completed: u64,
}

impl EpisodeTracker {
    /// Classifies the transition `(episode_id, step, done)` and advances.
    pub fn check(&mut self, episode_id: u64, step: u32, done: bool) -> StepVerdict {
        let verdict = match self.current {
            None if step == 0 => StepVerdict::Continues,
            None => StepVerdict::Joined,
            // A robot that does not number its episodes: step 0 after a done
            // under the same id is the next episode.
            Some((ep, _, true)) if ep == episode_id && step == 0 => StepVerdict::Continues,
            Some((ep, next, ended)) if ep == episode_id => {
                if step < next || ended {
                    return StepVerdict::Stale;
                }
                if step == next {
                    StepVerdict::Continues
                } else {
                    StepVerdict::Gap {
                        missing: u64::from(step - next),
                    }
                }
            }
            Some((_, _, ended)) => match (ended, step) {
                (true, 0) => StepVerdict::Continues,
                (true, s) => StepVerdict::Gap {
                    missing: u64::from(s),
                },
                (false, _) => StepVerdict::EpisodeCut,
            },
        };
        if done {
            self.completed += 1;
        }
        self.current = Some((episode_id, step.saturating_add(1), done));
        verdict
    }
}

/// Per-robot numbers in `learner.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RobotReport {
    /// Robot id.
    pub robot: String,
    /// Batches received (duplicates excluded).
    pub batches: u64,
    /// Transitions received (duplicates excluded).
    pub transitions_received: u64,
    /// Transitions stored (through the n-step window) into replay.
    pub transitions_inserted: u64,
    /// Duplicate batches dropped.
    pub duplicate_batches: u64,
    /// Batches missing from the sequence (lost in transit).
    pub missing_batches: u64,
    /// Steps missing inside episodes (lost transitions).
    pub missing_steps: u64,
    /// Steps already seen (or of an episode already ended) that came again:
    /// skipped.
    pub stale_transitions: u64,
    /// Episodes that ended without a done flag (the next one began first).
    pub episodes_cut: u64,
    /// Transitions refused (wrong shape, bad action, non-finite values).
    pub invalid_transitions: u64,
    /// Daemon restarts seen (batch numbering started over).
    pub restarts: u64,
    /// Episodes received to their end.
    pub episodes: u64,
    /// Mean return of the robot's last 20 episodes (exploring), if any.
    pub recent_return: Option<f64>,
    /// From the robot's Status heartbeats (summed over daemon restarts): transitions
    /// delivered to the transport.
    pub status_sent: u64,
    /// Transitions waiting in the robot's spool at its last heartbeat.
    pub status_spooled: u64,
    /// Transitions the robot dropped (spool full), summed over restarts.
    pub status_dropped: u64,
    /// Policy version the robot runs (last heartbeat).
    pub status_policy_version: u64,
}

// ---------------------------------------------------------------------------
// Ingest: the fleet's batches into replay
// ---------------------------------------------------------------------------

/// A message from the fleet, decoded on zenoh's receive thread.
#[derive(Debug)]
pub enum Incoming {
    /// A robot's transitions (the robot id is the key's).
    Batch(String, TransitionBatch),
    /// A robot's heartbeat.
    Status(String, Status),
}

/// The learner's subscriptions to `reflex/<fleet>/*/transitions` and
/// `reflex/<fleet>/*/status`. Payloads are decoded on zenoh's receive thread and
/// queued, unbounded, for the learner's loop (whatever arrived is kept: a slow
/// learner costs memory, never data); payloads that do not decode, or arrive on a key
/// without a robot, are counted and dropped. Dropping this ends the subscriptions, and
/// the receiver then reports `Disconnected` once it is empty.
pub struct Subscriptions {
    _transitions: Subscriber<()>,
    _statuses: Subscriber<()>,
    decode_errors: Arc<AtomicU64>,
}

impl Subscriptions {
    /// Payloads dropped because they did not decode (or had no robot in their key).
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors.load(Ordering::Relaxed)
    }
}

/// Subscribes `session` to every robot of `fleet` (what `reflex-train serve` does).
pub fn subscribe(
    session: &reflex_daemon::zenoh::Session,
    fleet: &str,
) -> Result<(Subscriptions, Receiver<Incoming>), LearnerError> {
    let decode_errors = Arc::new(AtomicU64::new(0));
    let (tx, rx) = channel::<Incoming>();
    let subscribe = |suffix: &'static str| {
        let tx = tx.clone();
        let errors = decode_errors.clone();
        session
            .declare_subscriber(keys::all_robots_key(fleet, suffix))
            .callback(move |sample| {
                let key = sample.key_expr().as_str();
                let robot = keys::parse_robot_key(key).map(|k| k.robot.to_string());
                let Some(robot) = robot else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let msg = if suffix == keys::TRANSITIONS {
                    zenoh_link::decode_sample::<TransitionBatch>(&sample)
                        .map(|b| Incoming::Batch(robot, b))
                } else {
                    zenoh_link::decode_sample::<Status>(&sample).map(|s| Incoming::Status(robot, s))
                };
                match msg {
                    Ok(msg) => {
                        let _ = tx.send(msg);
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("learner: dropped an undecodable message: {e}");
                        }
                    }
                }
            })
            .wait()
            .map_err(|e| LearnerError::Zenoh(format!("subscribing to {suffix}: {e}")))
    };
    let transitions = subscribe(keys::TRANSITIONS)?;
    let statuses = subscribe(keys::STATUS)?;
    Ok((
        Subscriptions {
            _transitions: transitions,
            _statuses: statuses,
            decode_errors,
        },
        rx,
    ))
}

/// A robot that sends no transitions for this long has its open n-step window
/// or sequence segment stored into replay ([`Ingest::flush_idle`]).
pub const IDLE_FLUSH: Duration = Duration::from_secs(10);

/// One robot as the learner sees it.
#[derive(Debug)]
struct Robot {
    seq: SeqTracker,
    episodes: EpisodeTracker,
    nstep: NStepAccumulator,
    /// Steps not yet written into a sequence replay (recurrent learners).
    segment: Segment,
    batches: u64,
    received: u64,
    inserted: u64,
    duplicate_batches: u64,
    duplicate_transitions: u64,
    stale_transitions: u64,
    missing_batches: u64,
    missing_steps: u64,
    /// Gaps in the episode stream (each of `missing` steps).
    gaps: u64,
    episodes_cut: u64,
    invalid: u64,
    restarts: u64,
    last_seen: Instant,
    last_status: Option<Status>,
    /// Status totals of earlier daemon lives (a restart resets its counters).
    status_base: (u64, u64),
    /// The current episode's return so far; NaN once a step of it is missing
    /// or refused (a return with a hole is not reported).
    episode_return: f64,
    /// Returns of the last 20 whole episodes.
    recent_returns: VecDeque<f64>,
}

/// Sums over every robot the learner has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestTotals {
    /// Batches received (duplicates excluded).
    pub batches: u64,
    /// Transitions received (duplicates excluded).
    pub received: u64,
    /// Transitions stored (through the n-step windows) into replay.
    pub inserted: u64,
    /// Duplicate batches dropped.
    pub duplicate_batches: u64,
    /// Batches missing from robots' sequences.
    pub missing_batches: u64,
    /// Steps missing inside episodes.
    pub missing_steps: u64,
    /// Transitions refused (wrong shape, bad action, non-finite values).
    pub invalid: u64,
    /// Daemon restarts seen.
    pub restarts: u64,
    /// Σ of the robots' Status `transitions_sent` (over daemon restarts).
    pub status_sent: u64,
    /// Σ of the robots' Status `transitions_spooled` (last heartbeat).
    pub status_spooled: u64,
    /// Σ of the robots' Status `transitions_dropped` (over daemon restarts).
    pub status_dropped: u64,
}

/// The learner's ingest path, between the subscriptions and replay: per robot, batch
/// numbering (gaps, duplicates, daemon restarts), the `(episode, step)` stream (gaps,
/// cut episodes, stale steps), shape and action checks, and an n-step window that
/// stores into replay (or, for a recurrent learner, a segment that goes into
/// sequence replay). `reflex-train serve` and the ingest benchmark both run it.
#[derive(Debug)]
pub struct Ingest {
    obs_dim: usize,
    actions: ActionShape,
    n_step: usize,
    gamma: f32,
    /// Recurrent learners: how steps become sequence-replay episodes.
    sequences: Option<(SequenceShape, PrevInput)>,
    /// Continuous actions' bounds (env units), when known: reflexd clamps into
    /// them, so an action outside comes from a faulty robot.
    action_bounds: Option<(Vec<f32>, Vec<f32>)>,
    robots: BTreeMap<String, Robot>,
    /// Whole episodes finished since [`take_finished`](Self::take_finished).
    finished: Vec<FinishedEpisode>,
}

/// A robot's whole episode, as the learner received it.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedEpisode {
    /// The robot.
    pub robot: String,
    /// Its return (the robot explored while it played it).
    pub episode_return: f64,
    /// [`Ingest::inserted`] when its last step was taken.
    pub inserted: u64,
}

/// How a recurrent network reads the previous action: one-hot for discrete
/// actions (DRQN), normalized units for continuous ones (the env action
/// mapped to [−1, 1], as the recurrent DDPG, TD3 and NAF learners store it).
#[derive(Debug, Clone, PartialEq)]
pub enum PrevInput {
    /// One-hot over `n` actions.
    OneHot {
        /// Number of actions.
        n: u32,
    },
    /// Env units mapped to [−1, 1].
    Normalized(crate::algo::continuous::ActionScaling),
}

impl PrevInput {
    /// The actions this input encodes.
    fn actions(&self) -> ActionShape {
        match self {
            Self::OneHot { n } => ActionShape::Discrete { n: *n },
            Self::Normalized(scaling) => ActionShape::Continuous { dim: scaling.dim() },
        }
    }

    /// Floats of the network's previous-action input.
    fn width(&self) -> usize {
        match self {
            Self::OneHot { n } => *n as usize,
            Self::Normalized(scaling) => scaling.dim(),
        }
    }

    /// Floats per stored action row: a discrete index, or the env-unit vector.
    fn action_width(&self) -> usize {
        match self {
            Self::OneHot { .. } => 1,
            Self::Normalized(scaling) => scaling.dim(),
        }
    }

    /// Appends the network's input for the action `row` (as [`Segment`]
    /// stores it), or zeros for none.
    fn encode(&self, row: Option<&[f32]>, out: &mut Vec<f32>) {
        let start = out.len();
        match (self, row) {
            (Self::OneHot { n }, row) => {
                out.resize(start + *n as usize, 0.0);
                if let Some(&[a]) = row {
                    out[start + a as usize] = 1.0;
                }
            }
            (Self::Normalized(scaling), Some(a)) => {
                let mut u = Vec::with_capacity(a.len());
                scaling.to_normalized(a, &mut u);
                out.extend_from_slice(&u);
            }
            (Self::Normalized(scaling), None) => out.resize(start + scaling.dim(), 0.0),
        }
    }
}

/// What a recurrent learner's sequence replay stores per step besides the
/// observation, and how long a robot's pending segment may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceShape {
    /// Width of the stored recurrent state `[h | c]` (0 = none stored).
    pub state_width: usize,
    /// Steps after which a robot's pending segment is written (as truncated)
    /// even though its episode goes on.
    pub max_segment: usize,
}

/// Where a robot's accepted steps go.
trait Store {
    /// The robot's stream broke (missing steps, a cut episode, a restarted
    /// daemon): what its open window holds is stored as truncated.
    fn close(&mut self, robot: &mut Robot);
    /// The robot went quiet, its stream unbroken: what its open window holds is
    /// stored as truncated, and its next step continues the episode (a
    /// recurrent segment keeps the last action as that step's input).
    fn pause(&mut self, robot: &mut Robot) {
        self.close(robot);
    }
    /// Stores one checked step; `false` refuses it (counted invalid).
    fn step(
        &mut self,
        robot: &mut Robot,
        t: &reflex_msgs::Transition,
        action: ActionRef<'_>,
    ) -> bool;
}

/// Flat replay through the robot's n-step window.
struct Flat<'a, S: ?Sized>(&'a mut S);

impl<S: TransitionSink + ?Sized> Store for Flat<'_, S> {
    fn close(&mut self, robot: &mut Robot) {
        let _ = robot.nstep.flush(0, self.0);
    }

    fn step(
        &mut self,
        robot: &mut Robot,
        t: &reflex_msgs::Transition,
        action: ActionRef<'_>,
    ) -> bool {
        let step = EnvStep {
            obs: &t.obs,
            action,
            reward: t.reward,
            next_obs: &t.next_obs,
            terminated: t.terminated,
            truncated: t.truncated,
        };
        robot.nstep.push(0, &step, self.0).is_ok()
    }
}

/// One robot's steps not yet in sequence replay: a contiguous piece of one
/// episode, in the layout [`SequenceReplay::push_step`] takes.
#[derive(Debug, Default)]
struct Segment {
    obs: Vec<f32>,
    prev: Vec<f32>,
    state: Vec<f32>,
    /// Action rows: a discrete index, or the env-unit vector.
    actions: Vec<f32>,
    rewards: Vec<f32>,
    /// The last step's next observation.
    next_obs: Vec<f32>,
    /// The action row applied last, the next step's previous-action input;
    /// `None` at an episode's start or after a hole (zeros: the actor's real
    /// input is not known there).
    last_action: Option<Vec<f32>>,
}

/// A recurrent learner's sequence replay, fed segment by segment.
struct Sequences<'a> {
    replay: &'a mut SequenceReplay,
    shape: SequenceShape,
    obs_dim: usize,
    prev: PrevInput,
}

impl Sequences<'_> {
    /// Writes `segment` as one replay episode that ends `terminated` (no
    /// bootstrap) or truncated, and empties it. A write the replay refuses
    /// drops the segment (its steps were counted as inserted already).
    fn write(&mut self, segment: &mut Segment, terminated: bool) {
        let steps = segment.rewards.len();
        if steps > 0 {
            let (d, w, a) = (
                self.obs_dim,
                self.shape.state_width,
                self.prev.action_width(),
            );
            let p = self.prev.width();
            let written = (0..steps)
                .try_for_each(|i| {
                    let row = &segment.actions[i * a..][..a];
                    let action = match self.prev {
                        PrevInput::OneHot { .. } => ActionRef::Discrete(row[0] as u32),
                        PrevInput::Normalized(_) => ActionRef::Continuous(row),
                    };
                    self.replay
                        .push_step(
                            &segment.obs[i * d..][..d],
                            &segment.prev[i * p..][..p],
                            &segment.state[i * w..][..w],
                            action,
                            segment.rewards[i],
                        )
                        .map(|_| ())
                })
                .and_then(|()| {
                    let mut last = Vec::new();
                    self.prev.encode(segment.last_action.as_deref(), &mut last);
                    // The state after the last step: no window starts there.
                    let state = vec![0.0; w];
                    self.replay
                        .finish_episode(&segment.next_obs, &last, &state, terminated)
                        .map(|_| ())
                });
            if written.is_err() {
                self.replay.abandon_episode();
            }
        }
        segment.obs.clear();
        segment.prev.clear();
        segment.state.clear();
        segment.actions.clear();
        segment.rewards.clear();
    }
}

impl Segment {
    /// Gives back the buffers of an emptied segment.
    fn release(&mut self) {
        for v in [
            &mut self.obs,
            &mut self.prev,
            &mut self.state,
            &mut self.actions,
            &mut self.rewards,
        ] {
            v.shrink_to_fit();
        }
    }
}

impl Store for Sequences<'_> {
    fn close(&mut self, robot: &mut Robot) {
        self.write(&mut robot.segment, false);
        robot.segment.last_action = None;
    }

    fn pause(&mut self, robot: &mut Robot) {
        self.write(&mut robot.segment, false);
    }

    fn step(
        &mut self,
        robot: &mut Robot,
        t: &reflex_msgs::Transition,
        action: ActionRef<'_>,
    ) -> bool {
        let w = self.shape.state_width;
        if w > 0
            && (t.recurrent_h.len() + t.recurrent_c.len() != w
                || t.recurrent_h.len() != t.recurrent_c.len()
                || !t
                    .recurrent_h
                    .iter()
                    .chain(&t.recurrent_c)
                    .all(|x| x.is_finite()))
        {
            return false;
        }
        let segment = &mut robot.segment;
        segment.obs.extend_from_slice(&t.obs);
        self.prev
            .encode(segment.last_action.as_deref(), &mut segment.prev);
        if w > 0 {
            segment.state.extend_from_slice(&t.recurrent_h);
            segment.state.extend_from_slice(&t.recurrent_c);
        }
        let row = match action {
            ActionRef::Discrete(a) => vec![a as f32],
            ActionRef::Continuous(a) => a.to_vec(),
        };
        segment.actions.extend_from_slice(&row);
        segment.rewards.push(t.reward);
        segment.next_obs.clone_from(&t.next_obs);
        segment.last_action = Some(row);
        if t.done() {
            self.write(&mut robot.segment, t.terminated);
            robot.segment.last_action = None;
        } else if segment.rewards.len() >= self.shape.max_segment {
            // The episode goes on; the next segment starts from the stored
            // state of its first step, with this action as its input.
            self.write(&mut robot.segment, false);
        }
        true
    }
}

impl Ingest {
    /// An ingest path for `obs_dim`-entry observations and `actions` (discrete
    /// indices, or continuous vectors in env units), storing `n_step`-step
    /// returns discounted by `gamma`.
    pub fn new(
        obs_dim: usize,
        actions: ActionShape,
        n_step: usize,
        gamma: f32,
    ) -> Result<Self, LearnerError> {
        // Checked once here, so that a robot joining later cannot fail on them.
        NStepAccumulator::new(n_step, gamma, obs_dim, actions, 1).map_err(TrainError::from)?;
        Ok(Self {
            obs_dim,
            actions,
            n_step,
            gamma,
            sequences: None,
            action_bounds: None,
            robots: BTreeMap::new(),
            finished: Vec::new(),
        })
    }

    /// An ingest path for a recurrent learner's sequence replay: each robot's
    /// steps (with the recurrent state its daemon sends, R2D2's stored state)
    /// gather into a segment that is written as one replay episode when the
    /// episode ends, when steps go missing, or after `shape.max_segment` steps.
    /// `prev` says how the network reads the previous action.
    pub fn sequences(
        obs_dim: usize,
        prev: PrevInput,
        shape: SequenceShape,
    ) -> Result<Self, LearnerError> {
        if shape.max_segment == 0 {
            return Err(LearnerError::Config(
                "a sequence ingest needs segments of at least 1 step".into(),
            ));
        }
        let mut ingest = Self::new(obs_dim, prev.actions(), 1, 1.0)?;
        ingest.sequences = Some((shape, prev));
        Ok(ingest)
    }

    /// Refuses continuous actions outside `[low, high]` (by more than rounding).
    pub fn bound_actions(mut self, low: &[f32], high: &[f32]) -> Self {
        self.action_bounds = Some((low.to_vec(), high.to_vec()));
        self
    }
}

/// Why transition `t` cannot be stored for a learner of `obs_dim`
/// observations and `actions` (within `action_bounds`), if it cannot.
fn refusal(
    obs_dim: usize,
    actions: ActionShape,
    action_bounds: Option<&(Vec<f32>, Vec<f32>)>,
    t: &reflex_msgs::Transition,
) -> Option<String> {
    let plausible = |x: f32| x.is_finite() && x.abs() <= MAX_ABS_VALUE;
    let dim = obs_dim;
    if t.obs.len() != dim || t.next_obs.len() != dim {
        return Some(format!(
            "observations of {} and {} values, expected {dim}",
            t.obs.len(),
            t.next_obs.len()
        ));
    }
    for (name, values) in [("obs", &t.obs), ("next_obs", &t.next_obs)] {
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !plausible(**v)) {
            return Some(format!(
                "{name}[{i}] = {v} (non-finite, or past ±{MAX_ABS_VALUE:e})"
            ));
        }
    }
    if !plausible(t.reward) {
        return Some(format!(
            "reward {} (non-finite, or past ±{MAX_ABS_VALUE:e})",
            t.reward
        ));
    }
    match (&t.action, actions) {
        (reflex_msgs::Action::Discrete(a), ActionShape::Discrete { n }) if *a >= n => {
            Some(format!("action {a} of {n}"))
        }
        (reflex_msgs::Action::Discrete(_), ActionShape::Discrete { .. }) => None,
        (reflex_msgs::Action::Continuous(a), ActionShape::Continuous { dim }) => {
            if a.len() != dim {
                return Some(format!("an action of {} values, expected {dim}", a.len()));
            }
            if let Some((i, v)) = a.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Some(format!("action[{i}] = {v}"));
            }
            let (low, high) = action_bounds?;
            a.iter()
                .zip(low.iter().zip(high))
                .enumerate()
                .find(|(_, (&v, (&lo, &hi)))| {
                    let slack = 1e-4 * (hi - lo).abs().max(1.0);
                    v < lo - slack || v > hi + slack
                })
                .map(|(i, (v, (lo, hi)))| {
                    format!("action[{i}] = {v} outside the action space [{lo}, {hi}]")
                })
        }
        (reflex_msgs::Action::Discrete(_), ActionShape::Continuous { .. }) => {
            Some("a discrete action for continuous ones".into())
        }
        (reflex_msgs::Action::Continuous(_), ActionShape::Discrete { .. }) => {
            Some("a continuous action for discrete ones".into())
        }
    }
}

impl Ingest {
    /// Robot `id`, created on first sight; also whether it was new.
    fn robot(&mut self, id: &str) -> Result<(&mut Robot, bool), LearnerError> {
        let fresh = !self.robots.contains_key(id);
        if fresh {
            let nstep =
                NStepAccumulator::new(self.n_step, self.gamma, self.obs_dim, self.actions, 1)
                    .map_err(TrainError::from)?;
            self.robots.insert(
                id.to_string(),
                Robot {
                    seq: SeqTracker::default(),
                    episodes: EpisodeTracker::default(),
                    nstep,
                    segment: Segment::default(),
                    batches: 0,
                    received: 0,
                    inserted: 0,
                    duplicate_batches: 0,
                    duplicate_transitions: 0,
                    stale_transitions: 0,
                    missing_batches: 0,
                    missing_steps: 0,
                    gaps: 0,
                    episodes_cut: 0,
                    invalid: 0,
                    restarts: 0,
                    last_seen: Instant::now(),
                    last_status: None,
                    status_base: (0, 0),
                    episode_return: 0.0,
                    recent_returns: VecDeque::new(),
                },
            );
        }
        Ok((self.robots.get_mut(id).expect("just inserted"), fresh))
    }

    /// Takes robot `id`'s `batch` into `replay`; returns whether the robot is new.
    pub fn batch<S: TransitionSink + ?Sized>(
        &mut self,
        id: &str,
        batch: &TransitionBatch,
        replay: &mut S,
    ) -> Result<bool, LearnerError> {
        self.batch_observed(id, batch, replay, |_| {})
    }

    /// [`batch`](Self::batch), calling `observed` with the observation of every
    /// step it accepts (once per step, before it enters the n-step window): a
    /// learner that normalizes observations keeps its running statistics so.
    pub fn batch_observed<S: TransitionSink + ?Sized>(
        &mut self,
        id: &str,
        batch: &TransitionBatch,
        replay: &mut S,
        observed: impl FnMut(&[f32]),
    ) -> Result<bool, LearnerError> {
        self.take(id, batch, &mut Flat(replay), observed)
    }

    /// Takes robot `id`'s `batch` into a recurrent learner's sequence `replay`
    /// (an ingest made by [`sequences`](Self::sequences)), calling `observed`
    /// as [`batch_observed`](Self::batch_observed) does.
    pub fn batch_sequences(
        &mut self,
        id: &str,
        batch: &TransitionBatch,
        replay: &mut SequenceReplay,
        observed: impl FnMut(&[f32]),
    ) -> Result<bool, LearnerError> {
        self.with_sequences(replay, |ingest, store| {
            ingest.take(id, batch, store, observed)
        })?
    }

    /// Runs `f` with this (recurrent) ingest's sequence store on `replay`.
    fn with_sequences<R>(
        &mut self,
        replay: &mut SequenceReplay,
        f: impl FnOnce(&mut Self, &mut dyn Store) -> R,
    ) -> Result<R, LearnerError> {
        let Some((shape, prev)) = self.sequences.take() else {
            return Err(LearnerError::Config(
                "this ingest path stores transitions, not sequences".into(),
            ));
        };
        let mut store = Sequences {
            replay,
            shape,
            obs_dim: self.obs_dim,
            prev,
        };
        let out = f(self, &mut store);
        self.sequences = Some((store.shape, store.prev));
        Ok(out)
    }

    /// Stores what every robot's open n-step window holds into `replay` (as
    /// truncated), so a checkpoint made now holds every step accepted: a
    /// [`flush_idle`](Self::flush_idle) of every robot.
    pub fn flush<S: TransitionSink + ?Sized>(&mut self, replay: &mut S) {
        self.flush_idle(replay, Duration::ZERO);
    }

    /// [`flush`](Self::flush) for a recurrent learner: every robot's open
    /// segment goes into the sequence `replay`.
    pub fn flush_sequences(&mut self, replay: &mut SequenceReplay) -> Result<(), LearnerError> {
        self.flush_idle_sequences(replay, Duration::ZERO)
            .map(|_| ())
    }

    /// Stores the open n-step window of every robot that sent no transitions
    /// for `idle` or longer into `replay` (as truncated); returns how many
    /// robots' steps went in. A robot that stops (powered off, e-stopped, cut off) would
    /// otherwise keep its last steps out of replay until the learner stops, and
    /// a robot id never seen again would hold them for the learner's whole life.
    /// A robot that comes back continues its episode in a new window.
    pub fn flush_idle<S: TransitionSink + ?Sized>(
        &mut self,
        replay: &mut S,
        idle: Duration,
    ) -> usize {
        self.close_idle(&mut Flat(replay), idle)
    }

    /// [`flush_idle`](Self::flush_idle) for a recurrent learner: the open
    /// segments of idle robots go into the sequence `replay`, and their
    /// buffers are given back (a long recurrent segment holds the LSTM state of
    /// every step).
    pub fn flush_idle_sequences(
        &mut self,
        replay: &mut SequenceReplay,
        idle: Duration,
    ) -> Result<usize, LearnerError> {
        self.with_sequences(replay, |ingest, store| ingest.close_idle(store, idle))
    }

    fn close_idle(&mut self, store: &mut dyn Store, idle: Duration) -> usize {
        let now = Instant::now();
        let mut closed = 0;
        for robot in self.robots.values_mut() {
            let open = !robot.segment.rewards.is_empty() || robot.nstep.pending(0).unwrap_or(0) > 0;
            if open && now.saturating_duration_since(robot.last_seen) >= idle {
                store.pause(robot);
                robot.segment.release();
                closed += 1;
            }
        }
        closed
    }

    /// The tracking and checks both stores share.
    fn take(
        &mut self,
        id: &str,
        batch: &TransitionBatch,
        store: &mut dyn Store,
        mut observed: impl FnMut(&[f32]),
    ) -> Result<bool, LearnerError> {
        let (obs_dim, actions) = (self.obs_dim, self.actions);
        let bounds = self.action_bounds.clone();
        let refusal = |t: &reflex_msgs::Transition| refusal(obs_dim, actions, bounds.as_ref(), t);
        let print = fingerprint(batch);
        let inserted_before = self.inserted();
        let (robot, fresh) = self.robot(id)?;
        robot.last_seen = Instant::now();
        match robot.seq.check(batch.batch_seq, print) {
            BatchVerdict::Duplicate => {
                robot.duplicate_batches += 1;
                robot.duplicate_transitions += batch.transitions.len() as u64;
                return Ok(fresh);
            }
            BatchVerdict::Restarted => {
                robot.restarts += 1;
                if robot.restarts <= RESTARTS_LOGGED {
                    tracing::warn!(
                        "robot {id}: batch numbering started over at {} (its daemon \
                         restarted){}",
                        batch.batch_seq,
                        if robot.restarts == RESTARTS_LOGGED {
                            "; this often, two daemons may share the robot id; \
                             further restarts are only counted"
                        } else {
                            ""
                        }
                    );
                }
                robot.episodes = EpisodeTracker {
                    completed: robot.episodes.completed,
                    ..EpisodeTracker::default()
                };
                store.close(robot);
                // The new daemon life starts its own episode (or joins one).
                robot.episode_return = 0.0;
            }
            BatchVerdict::Fresh { missing } => {
                robot.missing_batches = robot.missing_batches.saturating_add(missing)
            }
        }
        robot.batches += 1;
        let robot_before = robot.inserted;
        let mut finished = Vec::new();
        for t in &batch.transitions {
            robot.received += 1;
            match robot.episodes.check(t.episode_id, t.step, t.done()) {
                StepVerdict::Stale => {
                    robot.stale_transitions += 1;
                    continue;
                }
                StepVerdict::Continues => {}
                StepVerdict::Gap { missing } => {
                    robot.gaps += 1;
                    if robot.gaps <= GAPS_LOGGED {
                        tracing::warn!(
                            "robot {id}: episode {} step {} arrived with the {missing} step(s) \
                             before it missing (lost in transit, or not sent: see the daemon's \
                             steps_unsent){}",
                            t.episode_id,
                            t.step,
                            if robot.gaps == GAPS_LOGGED {
                                "; further gaps of this robot are only counted"
                            } else {
                                ""
                            }
                        );
                    }
                    robot.missing_steps = robot.missing_steps.saturating_add(missing);
                    store.close(robot);
                    robot.episode_return = f64::NAN;
                }
                StepVerdict::EpisodeCut => {
                    robot.episodes_cut += 1;
                    store.close(robot);
                    robot.episode_return = 0.0;
                }
                // Nothing is open yet; the episode's return is partial, though.
                StepVerdict::Joined => robot.episode_return = f64::NAN,
            }
            let refusal = refusal(t);
            let action = match &t.action {
                reflex_msgs::Action::Discrete(a) => ActionRef::Discrete(*a),
                reflex_msgs::Action::Continuous(a) => ActionRef::Continuous(a),
            };
            let stored = match &refusal {
                None => store.step(robot, t, action),
                Some(_) => false,
            };
            match stored {
                true => {
                    observed(&t.obs);
                    robot.inserted += 1;
                }
                false => {
                    // A refused step is a hole in the stream: no return or
                    // sequence may span it.
                    robot.invalid += 1;
                    if robot.invalid <= INVALID_LOGGED {
                        tracing::warn!(
                            "robot {id}: episode {} step {} refused: {}{}",
                            t.episode_id,
                            t.step,
                            refusal
                                .as_deref()
                                .unwrap_or("replay refused it (its recurrent state?)"),
                            if robot.invalid == INVALID_LOGGED {
                                "; further refusals of this robot are only counted \
                                 (invalid_transitions)"
                            } else {
                                ""
                            }
                        );
                    }
                    store.close(robot);
                    robot.episode_return = if t.done() { 0.0 } else { f64::NAN };
                    continue;
                }
            }
            robot.episode_return += f64::from(t.reward);
            if t.done() {
                // Whole episodes only: one with a hole has no return to report.
                if robot.episode_return.is_finite() {
                    if robot.recent_returns.len() == 20 {
                        robot.recent_returns.pop_front();
                    }
                    robot.recent_returns.push_back(robot.episode_return);
                    finished.push((
                        robot.episode_return,
                        inserted_before + robot.inserted - robot_before,
                    ));
                }
                robot.episode_return = 0.0;
            }
        }
        self.finished
            .extend(
                finished
                    .into_iter()
                    .map(|(episode_return, inserted)| FinishedEpisode {
                        robot: id.to_string(),
                        episode_return,
                        inserted,
                    }),
            );
        Ok(fresh)
    }

    /// The whole episodes finished since the last call, in the order they
    /// ended; a long-running caller drains them, or they pile up.
    pub fn take_finished(&mut self) -> Vec<FinishedEpisode> {
        std::mem::take(&mut self.finished)
    }

    /// Takes robot `id`'s heartbeat; returns whether the robot is new.
    pub fn status(&mut self, id: &str, status: Status) -> Result<bool, LearnerError> {
        let (robot, fresh) = self.robot(id)?;
        if let Some(prev) = &robot.last_status {
            if status.heartbeat_seq < prev.heartbeat_seq {
                // The daemon restarted: its totals start over.
                robot.status_base.0 = robot.status_base.0.saturating_add(prev.transitions_sent);
                robot.status_base.1 = robot.status_base.1.saturating_add(prev.transitions_dropped);
            }
        }
        robot.last_status = Some(status);
        Ok(fresh)
    }

    /// Robots seen.
    pub fn robots(&self) -> usize {
        self.robots.len()
    }

    /// Transitions stored into replay, over all robots.
    pub fn inserted(&self) -> u64 {
        self.robots.values().map(|r| r.inserted).sum()
    }

    /// Sums over all robots.
    pub fn totals(&self) -> IngestTotals {
        let mut t = IngestTotals::default();
        for robot in self.robots.values() {
            let status = robot.last_status.as_ref();
            t.batches += robot.batches;
            t.received += robot.received;
            t.inserted += robot.inserted;
            t.duplicate_batches += robot.duplicate_batches;
            t.missing_batches = t.missing_batches.saturating_add(robot.missing_batches);
            t.missing_steps += robot.missing_steps;
            t.invalid += robot.invalid;
            t.restarts += robot.restarts;
            // Heartbeat counters are the robots' word: saturate, never overflow.
            let sum = |a: u64, b: u64, c: u64| a.saturating_add(b).saturating_add(c);
            t.status_sent = sum(
                t.status_sent,
                robot.status_base.0,
                status.map_or(0, |s| s.transitions_sent),
            );
            t.status_dropped = sum(
                t.status_dropped,
                robot.status_base.1,
                status.map_or(0, |s| s.transitions_dropped),
            );
            t.status_spooled = t
                .status_spooled
                .saturating_add(status.map_or(0, |s| s.transitions_spooled));
        }
        t
    }

    /// One report per robot, by id.
    pub fn reports(&self) -> Vec<RobotReport> {
        self.robots
            .iter()
            .map(|(id, robot)| {
                let status = robot.last_status.as_ref();
                RobotReport {
                    robot: id.clone(),
                    batches: robot.batches,
                    transitions_received: robot.received,
                    transitions_inserted: robot.inserted,
                    duplicate_batches: robot.duplicate_batches,
                    missing_batches: robot.missing_batches,
                    missing_steps: robot.missing_steps,
                    stale_transitions: robot.stale_transitions,
                    episodes_cut: robot.episodes_cut,
                    invalid_transitions: robot.invalid,
                    restarts: robot.restarts,
                    episodes: robot.episodes.completed,
                    recent_return: (!robot.recent_returns.is_empty()).then(|| {
                        robot.recent_returns.iter().sum::<f64>() / robot.recent_returns.len() as f64
                    }),
                    status_sent: robot
                        .status_base
                        .0
                        .saturating_add(status.map_or(0, |s| s.transitions_sent)),
                    status_spooled: status.map_or(0, |s| s.transitions_spooled),
                    status_dropped: robot
                        .status_base
                        .1
                        .saturating_add(status.map_or(0, |s| s.transitions_dropped)),
                    status_policy_version: status.map_or(0, |s| s.policy_version),
                }
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------

/// How `reflex-train serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The run's configuration (env, algorithm, DQN hyperparameters, seed).
    pub run: RunConfig,
    /// Fleet name (one key chunk).
    pub fleet: String,
    /// The zenoh session (the learner listens; scouting off).
    pub zenoh: ZenohConfig,
    /// ROS 2 instead of zenoh: robots found by discovery on this domain.
    pub ros2: Option<crate::learner_ros2::Ros2LearnerConfig>,
    /// Where the learner's networks train (CPU by default; `cuda` builds).
    pub device: Device,
    /// Run folder.
    pub out: PathBuf,
    /// Samples per insert; `None` = the preset's ratio ([`FleetSchedule::samples_per_insert`]).
    pub samples_per_insert: Option<f64>,
    /// Publish a policy every this many updates.
    pub publish_every: u64,
    /// Hard target update every this many updates; `None` = the local loop's
    /// effective interval.
    pub target_update_every: Option<u64>,
    /// Checkpoint every this many updates (0 = only at the end).
    pub checkpoint_every: u64,
    /// Greedy evaluation every this many updates (0 = never).
    pub eval_every: u64,
    /// Stop once this many transitions were received.
    pub max_transitions: Option<u64>,
    /// "Solved" at this greedy mean return.
    pub target_return: Option<f64>,
    /// Logs instead of a progress bar.
    pub quiet: bool,
    /// After finishing, keep receiving (counting, not training) until SIGINT/SIGTERM,
    /// so the final counts include what robots flush when they stop.
    pub linger: bool,
    /// The settings named on the command line or in `--config` (dotted names;
    /// a table's name covers its keys): on a resume, the ones that differ from
    /// the run's own configuration are named as ignored.
    pub given: Vec<String>,
}

/// The settings (dotted names, with both values) among `names` (a table's
/// name covers its keys) in which `given` differs from `resumed`.
fn differing_settings(given: &RunConfig, resumed: &RunConfig, names: &[String]) -> Vec<String> {
    fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
        match value {
            toml::Value::Table(table) => {
                for (k, v) in table {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&name, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let table = |run: &RunConfig| {
        let mut out = BTreeMap::new();
        if let Ok(value) = toml::Value::try_from(run) {
            flatten("", &value, &mut out);
        }
        out
    };
    let (given, resumed) = (table(given), table(resumed));
    let named = |k: &str| {
        names.iter().any(|n| {
            k == n
                || k.strip_prefix(n.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        })
    };
    given
        .iter()
        .filter(|(k, v)| named(k) && resumed.get(*k) != Some(*v))
        .map(|(k, v)| {
            let was = resumed.get(k).map_or("unset", String::as_str);
            format!("{k} = {v} (the run's: {was})")
        })
        .collect()
}

/// The newest policy version a learner in `out` published, from its policy
/// file and from its last report, whichever is newer: the robots refuse any
/// update not newer than what they run, so counting again from 1 would leave
/// them on the old policy for good. Either may be missing (a crash) or
/// unreadable; that is said, and 0 only when both are.
fn last_published(out: &Path) -> u64 {
    let path = out.join(POLICY_FILE);
    let from_file = match reflex_daemon::Policy::load(&path) {
        Ok(policy) => Some(policy.spec().policy_version),
        Err(e) => {
            if path.exists() {
                tracing::warn!("learner: {}: {e}; its version is not known", path.display());
            }
            None
        }
    };
    let from_report = fs::read_to_string(out.join(LEARNER_FILE))
        .ok()
        .and_then(|text| serde_json::from_str::<LearnerReport>(&text).ok())
        .map(|r| r.policy_version);
    from_file.max(from_report).unwrap_or_else(|| {
        tracing::warn!(
            "learner: no {POLICY_FILE} or {LEARNER_FILE} to tell the last version published; \
             numbering from 1 (robots running a higher version refuse the updates)"
        );
        0
    })
}

/// `learner.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LearnerReport {
    /// Training is over (solved, budget reached or stopped).
    pub done: bool,
    /// The greedy evaluation reached the target return.
    pub solved: bool,
    /// Why training stopped (`solved`, `max_transitions`, `signal`), empty while running.
    pub stop_reason: String,
    /// Env name.
    pub env: String,
    /// Fleet name.
    pub fleet: String,
    /// Transitions received (duplicates excluded).
    pub transitions_received: u64,
    /// Transitions stored into replay.
    pub transitions_inserted: u64,
    /// Duplicate batches dropped.
    pub duplicates: u64,
    /// Batches missing from robots' sequences.
    pub gaps: u64,
    /// Steps missing inside episodes: transitions lost in transit, or steps a
    /// daemon never sent (its `steps_unsent`: a watchdog trip between a step and
    /// its next observation, an observation it could not act on).
    pub missing_steps: u64,
    /// Payloads that did not decode.
    pub decode_errors: u64,
    /// Transitions refused by replay (wrong shape, non-finite).
    pub invalid_transitions: u64,
    /// Robots seen.
    pub robots_seen: usize,
    /// Gradient updates done (over restarts).
    pub updates: u64,
    /// Latest published policy version.
    pub policy_version: u64,
    /// Policies published by this process.
    pub policies_published: u64,
    /// Latest greedy evaluation (mean return), if any.
    pub eval_mean_return: Option<f64>,
    /// Seconds from start to solved, if solved.
    pub time_to_solve_s: Option<f64>,
    /// Seconds this process ran.
    pub elapsed_s: f64,
    /// Transitions received per second over this process's run.
    pub transitions_per_s: f64,
    /// Updates per second over this process's run.
    pub updates_per_s: f64,
    /// Seconds from the first batch this process received to the latest one.
    #[serde(default)]
    pub receiving_s: f64,
    /// Transitions received per second over `receiving_s`: the fleet's aggregate rate
    /// while it sends (no start-up or idle time).
    #[serde(default)]
    pub receiving_transitions_per_s: f64,
    /// Seconds from this process's first gradient update to its latest one.
    #[serde(default)]
    pub training_s: f64,
    /// Updates per second over `training_s`.
    #[serde(default)]
    pub training_updates_per_s: f64,
    /// Samples per insert the limiter enforced.
    pub samples_per_insert: f64,
    /// Σ over robots of their Status `transitions_sent`.
    pub status_sent: u64,
    /// Σ over robots of their Status `transitions_spooled`.
    pub status_spooled: u64,
    /// Σ over robots of their Status `transitions_dropped`.
    pub status_dropped: u64,
    /// Per robot.
    pub robots: Vec<RobotReport>,
}

/// Loads the run's signing key from `out`, or creates one (private key mode 0600).
pub fn load_or_create_key(out: &Path) -> Result<SigningKey, LearnerError> {
    let path = out.join(KEY_FILE);
    if path.exists() {
        let text = fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
        let bytes = reflex_daemon::config::parse_hex32(&text).map_err(|e| io_err(&path, e))?;
        let key = SigningKey::from_bytes(&bytes);
        let public = reflex_msgs::hash::to_hex(key.verifying_key().as_bytes());
        write_text(&out.join(PUB_FILE), &public)?;
        return Ok(key);
    }
    let mut seed = [0u8; 32];
    let urandom = Path::new("/dev/urandom");
    let mut file = fs::File::open(urandom).map_err(|e| io_err(urandom, e))?;
    std::io::Read::read_exact(&mut file, &mut seed).map_err(|e| io_err(urandom, e))?;
    let key = SigningKey::from_bytes(&seed);
    let tmp = path.with_extension("tmp");
    {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(reflex_msgs::hash::to_hex(&seed).as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| io_err(&tmp, e))?;
    }
    fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
    let public = reflex_msgs::hash::to_hex(key.verifying_key().as_bytes());
    write_text(&out.join(PUB_FILE), &public)?;
    Ok(key)
}

fn write_text(path: &Path, text: &str) -> Result<(), LearnerError> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).map_err(|e| io_err(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

/// `$body` with `$l` bound to the learner inside each [`FleetLearner`]
/// variant (the arms differ only in type).
macro_rules! each_learner {
    ($learner:expr, $l:ident => $body:expr) => {
        match $learner {
            FleetLearner::Dqn($l) => $body,
            FleetLearner::ActorCritic($l) => $body,
            FleetLearner::Naf($l) => $body,
            FleetLearner::Drqn($l) => $body,
            FleetLearner::RecurrentActorCritic($l) => $body,
            FleetLearner::RecurrentNaf($l) => $body,
        }
    };
}

/// What the learner service trains: DQN or DRQN for discrete actions; DDPG,
/// TD3 or NAF, feed-forward or recurrent (`recurrent = true`), for continuous
/// ones. The recurrent learners learn from sequences the ingest path assembles
/// per robot, with the LSTM state each daemon sends (R2D2's stored state).
// One per service: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum FleetLearner {
    /// DQN (Double, Twin, Dueling, n-step, prioritized as configured).
    Dqn(Dqn),
    /// DDPG or TD3.
    ActorCritic(Ddpg),
    /// NAF.
    Naf(Naf),
    /// DRQN (LSTM Q-network on sequence replay).
    Drqn(Drqn),
    /// Recurrent DDPG or TD3.
    RecurrentActorCritic(RecurrentDdpg),
    /// Recurrent NAF.
    RecurrentNaf(RecurrentNaf),
}

/// The numbers of a learner's replay and update schedule that the service uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FleetSchedule {
    /// Rows per update.
    pub batch_size: usize,
    /// Transitions in replay before the first update.
    pub learning_starts: u64,
    /// The local loop's env steps per training round.
    pub train_freq: u64,
    /// The local loop's updates per training round.
    pub gradient_steps: u64,
    /// n of the n-step returns the ingest path stores.
    pub n_step: usize,
    /// Discount factor γ.
    pub gamma: f64,
    /// Prioritized replay's β at the start (annealed to 1 over `steps`).
    pub per_beta0: f64,
    /// DQN's hard target update interval in env steps; `None` where every
    /// update moves the targets itself (Polyak averaging in DDPG, TD3, NAF).
    pub target_update_interval: Option<u64>,
}

impl FleetSchedule {
    /// The local training loop's ratio: `gradient_steps · batch_size / train_freq`
    /// samples per env step (RL Zoo's CartPole preset: 128 · 64 / 256 = 32; its
    /// Pendulum TD3 preset: 1 · 256 / 1 = 256).
    pub fn samples_per_insert(&self) -> f64 {
        (self.gradient_steps as f64 * self.batch_size as f64) / self.train_freq.max(1) as f64
    }

    /// Hard target updates every this many gradient updates: the local loop's
    /// interval, counted in updates (`None` without hard target updates).
    pub fn target_every(&self) -> Option<u64> {
        self.target_update_interval.map(|interval| {
            (interval * self.gradient_steps / self.train_freq.max(1)).max(self.gradient_steps)
        })
    }
}

impl FleetLearner {
    /// A fresh learner for `run`'s algorithm and env.
    pub fn build(run: &RunConfig, env: &dyn Env, device: &Device) -> Result<Self, LearnerError> {
        let obs_dim = env.observation_space().dim();
        let space = env.action_space();
        let ddpg = |config: &crate::algo::ddpg::DdpgConfig, td3: bool, bounds| {
            let (config, seed, lstm) = (config.clone(), run.seed, run.lstm.clone());
            Ok::<_, TrainError>(if run.recurrent {
                let l = RecurrentDdpg::new(config, lstm, td3, obs_dim, bounds, seed, device)?;
                Self::RecurrentActorCritic(l)
            } else {
                Self::ActorCritic(Ddpg::new(config, td3, obs_dim, bounds, seed, device)?)
            })
        };
        let learner = match (run.algo.as_str(), space) {
            ("dqn" | "drqn", ActionSpace::Discrete { n }) => {
                let n = *n as usize;
                if run.algo == "dqn" {
                    Self::Dqn(Dqn::new(run.dqn.clone(), obs_dim, n, run.seed, device)?)
                } else {
                    Self::Drqn(Drqn::new(run.drqn.clone(), obs_dim, n, run.seed, device)?)
                }
            }
            ("ddpg", ActionSpace::Box(bounds)) => ddpg(&run.ddpg, false, bounds)?,
            ("td3", ActionSpace::Box(bounds)) => ddpg(&run.td3, true, bounds)?,
            ("naf", ActionSpace::Box(bounds)) => {
                let (config, seed) = (run.naf.clone(), run.seed);
                if run.recurrent {
                    let lstm = run.lstm.clone();
                    let naf = RecurrentNaf::new(config, lstm, obs_dim, bounds, seed, device)?;
                    Self::RecurrentNaf(naf)
                } else {
                    Self::Naf(Naf::new(config, obs_dim, bounds, seed, device)?)
                }
            }
            (algo @ ("dqn" | "drqn" | "ddpg" | "td3" | "naf"), _) => {
                return Err(LearnerError::Config(format!(
                    "{} has {} actions; {algo} needs {} ones",
                    run.env,
                    if matches!(space, ActionSpace::Box(_)) {
                        "continuous"
                    } else {
                        "discrete"
                    },
                    if matches!(algo, "dqn" | "drqn") {
                        "discrete"
                    } else {
                        "continuous"
                    },
                )))
            }
            (other, _) => {
                return Err(LearnerError::Config(format!(
                    "the fleet learner serves dqn, drqn, ddpg, td3 and naf, not `{other}`"
                )))
            }
        };
        Ok(learner)
    }

    /// The learner as the shared training code sees it (checkpoints, export,
    /// evaluation).
    pub fn agent(&self) -> &dyn Agent {
        each_learner!(self, l => l)
    }

    /// [`agent`](Self::agent), mutably.
    pub fn agent_mut(&mut self) -> &mut dyn Agent {
        each_learner!(self, l => l)
    }

    /// Its replay and update schedule.
    pub fn schedule(&self) -> FleetSchedule {
        // DqnConfig and the continuous learners' CoreConfig name these fields alike.
        macro_rules! from_config {
            ($c:expr, $target:expr) => {{
                let c = $c;
                FleetSchedule {
                    batch_size: c.batch_size,
                    learning_starts: c.learning_starts,
                    train_freq: c.train_freq,
                    gradient_steps: c.gradient_steps,
                    n_step: c.n_step,
                    gamma: c.gamma,
                    per_beta0: c.per_beta0,
                    target_update_interval: $target,
                }
            }};
        }
        match self {
            Self::Dqn(l) => from_config!(&l.config, Some(l.config.target_update_interval)),
            Self::Drqn(l) => from_config!(&l.config, Some(l.config.target_update_interval)),
            Self::ActorCritic(Ddpg { core, .. }) | Self::Naf(Naf { core, .. }) => {
                from_config!(&core.config, None)
            }
            Self::RecurrentActorCritic(RecurrentDdpg { core, .. })
            | Self::RecurrentNaf(RecurrentNaf { core, .. }) => from_config!(&core.config, None),
        }
    }

    /// What robots' actions are: discrete indices or continuous vectors.
    pub fn actions(&self) -> ActionShape {
        match self {
            Self::Dqn(l) => ActionShape::Discrete {
                n: l.online.n_actions() as u32,
            },
            Self::Drqn(l) => ActionShape::Discrete {
                n: l.online.n_actions() as u32,
            },
            Self::ActorCritic(Ddpg { core, .. }) | Self::Naf(Naf { core, .. }) => {
                ActionShape::Continuous {
                    dim: core.scaling.dim(),
                }
            }
            Self::RecurrentActorCritic(RecurrentDdpg { core, .. })
            | Self::RecurrentNaf(RecurrentNaf { core, .. }) => ActionShape::Continuous {
                dim: core.scaling.dim(),
            },
        }
    }

    /// The ingest path its replay takes: transitions through n-step windows,
    /// or (DRQN) per-robot segments into sequence replay, written at least
    /// every four windows' worth of steps.
    pub fn ingest_path(&self, obs_dim: usize) -> Result<Ingest, LearnerError> {
        let s = self.schedule();
        let sequences = |prev, hidden: usize, stored: bool, burn_in: usize, seq_len: usize| {
            let window = burn_in + seq_len + s.n_step;
            let shape = SequenceShape {
                state_width: if stored { 2 * hidden } else { 0 },
                max_segment: (4 * window).max(64),
            };
            Ingest::sequences(obs_dim, prev, shape)
        };
        match self {
            Self::Drqn(l) => {
                let c = &l.config;
                let prev = PrevInput::OneHot {
                    n: l.online.n_actions() as u32,
                };
                sequences(prev, c.lstm_hidden, c.stored_state, c.burn_in, c.seq_len)
            }
            Self::RecurrentActorCritic(RecurrentDdpg { core, .. })
            | Self::RecurrentNaf(RecurrentNaf { core, .. }) => {
                let c = &core.lstm;
                let prev = PrevInput::Normalized(core.scaling.clone());
                sequences(prev, c.hidden, c.stored_state, c.burn_in, c.seq_len)
            }
            _ => Ingest::new(obs_dim, self.actions(), s.n_step, s.gamma as f32),
        }
    }

    /// Whether replay holds enough for a batch.
    pub fn can_sample(&self) -> bool {
        match self.agent().replay() {
            Replay::Sequence(r) => r.can_sample(),
            replay => replay.len() >= self.schedule().batch_size,
        }
    }

    /// Takes robot `id`'s `batch` through `ingest` (made by
    /// [`ingest_path`](Self::ingest_path)) into replay, updating the running
    /// observation statistics where the learner normalizes.
    pub fn ingest(
        &mut self,
        ingest: &mut Ingest,
        id: &str,
        batch: &TransitionBatch,
    ) -> Result<bool, LearnerError> {
        let (replay, mut norm) = self.replay_and_norm();
        let observed = |obs: &[f32]| {
            if let Some(norm) = norm.as_mut() {
                norm.update(obs);
            }
        };
        match replay {
            Replay::Sequence(sequences) => ingest.batch_sequences(id, batch, sequences, observed),
            flat => ingest.batch_observed(id, batch, flat, observed),
        }
    }

    /// Stores what the robots' open windows and segments hold (see
    /// [`Ingest::flush`]): before a final checkpoint.
    pub fn flush(&mut self, ingest: &mut Ingest) -> Result<(), LearnerError> {
        self.flush_idle(ingest, Duration::ZERO).map(|_| ())
    }

    /// Stores the open windows or segments of robots silent for `idle` into
    /// replay ([`Ingest::flush_idle`]); returns how many robots'.
    pub fn flush_idle(
        &mut self,
        ingest: &mut Ingest,
        idle: Duration,
    ) -> Result<usize, LearnerError> {
        match self.replay_and_norm().0 {
            Replay::Sequence(sequences) => ingest.flush_idle_sequences(sequences, idle),
            flat => Ok(ingest.flush_idle(flat, idle)),
        }
    }

    /// The replay robots' steps go into, and the running observation
    /// statistics they update (learners that normalize).
    fn replay_and_norm(&mut self) -> (&mut Replay, Option<&mut crate::algo::RunningNorm>) {
        match self {
            Self::Dqn(l) => (&mut l.replay, None),
            Self::Drqn(l) => (&mut l.replay, l.norm.as_mut()),
            Self::ActorCritic(Ddpg { core, .. }) | Self::Naf(Naf { core, .. }) => {
                (&mut core.replay, core.norm.as_mut())
            }
            Self::RecurrentActorCritic(RecurrentDdpg { core, .. })
            | Self::RecurrentNaf(RecurrentNaf { core, .. }) => {
                (&mut core.replay, core.norm.as_mut())
            }
        }
    }

    /// One gradient update (moving the targets where the algorithm does so in
    /// every update); `beta` is prioritized replay's importance exponent.
    pub fn update(&mut self, beta: f64) -> Result<UpdateStats, LearnerError> {
        Ok(each_learner!(self, l => l.update(beta)?))
    }

    /// Sets DQN's or DRQN's learning rate for `inserted` transitions of a run of
    /// `total` (the local loop's linear decay to `learning_rate_end`, with
    /// transitions in place of env steps; the others keep theirs).
    pub fn set_learning_rate_at(&mut self, inserted: u64, total: u64) {
        fn set<L: Scheduled>(l: &mut L, inserted: u64, total: u64) {
            let r = l.rounds();
            l.set_learning_rate(learning_rate_at(
                r.learning_rate,
                r.learning_rate_end,
                inserted,
                total,
            ));
        }
        match self {
            Self::Dqn(l) => set(l, inserted, total),
            Self::Drqn(l) => set(l, inserted, total),
            _ => {}
        }
    }

    /// DQN's and DRQN's hard target update (the others move theirs in every
    /// update).
    pub fn update_target(&mut self) -> Result<(), LearnerError> {
        match self {
            Self::Dqn(l) => l.update_target()?,
            Self::Drqn(l) => l.update_target()?,
            _ => {}
        }
        Ok(())
    }
}

/// Signs `update` with `key` the way the daemon verifies it (ed25519 over
/// `signing_message()`).
pub fn sign(update: &mut PolicyUpdate, key: &SigningKey) {
    let signature = key.sign(&update.signing_message());
    update.set_signature(signature.to_bytes());
}

struct Service {
    opts: ServeOptions,
    learner: FleetLearner,
    spec: PolicySpec,
    key: SigningKey,
    ingest: Ingest,
    report: LearnerReport,
    updates: u64,
    last_published_update: u64,
    started: Instant,
    received_at_start: u64,
    updates_at_start: u64,
    /// The first batch's arrival and the transitions received by then; the latest
    /// batch's arrival.
    receiving: Option<(Instant, u64, Instant)>,
    /// The first update's time and the updates done by then; the latest update's time.
    training: Option<(Instant, u64, Instant)>,
    bar: ProgressBar,
    eval_env: Box<dyn Env>,
    /// `out/metrics.csv`.
    metrics: csv::Writer<fs::File>,
    /// Transitions inserted before this learner started (a resumed run's).
    inserted_base: u64,
    /// Episodes go to `metrics.csv` (until the final checkpoint: what arrives
    /// after it is counted, not trained on, and a resumed run's clock starts
    /// from the checkpoint).
    recording: bool,
}

/// One row of the learner's `metrics.csv`: a robot's finished episode or a
/// periodic evaluation. The first three columns are the local run's, so
/// [`crate::plot::draw_curve`] draws it.
#[derive(Serialize)]
struct FleetMetricsRow<'a> {
    /// Transitions inserted into replay, over restarts: the fleet's env steps.
    step: u64,
    /// A robot's whole episode, as it acted (exploring).
    episode_return: Option<f64>,
    /// The learner's greedy evaluation.
    eval_return: Option<f64>,
    /// The robot whose episode it was.
    robot: Option<&'a str>,
    updates: u64,
    policy_version: u64,
    /// Seconds since this learner started.
    elapsed_s: f64,
}

/// The learner's metrics file in `out`: appended to when resuming from
/// `resume_from` transitions (its rows past them go), else new.
fn open_metrics(
    out: &Path,
    resume_from: Option<u64>,
) -> Result<csv::Writer<fs::File>, LearnerError> {
    let path = out.join(METRICS_FILE);
    let (writer, dropped) = crate::plot::open_metrics(&path, resume_from)?;
    if let (Some(step), true) = (resume_from, dropped > 0) {
        eprintln!(
            "learner: {}: dropped {dropped} rows past the checkpoint's {step} transitions",
            path.display()
        );
    }
    Ok(writer)
}

impl Service {
    /// Adds a row to `metrics.csv` (a failure is logged: metrics never stop
    /// training).
    fn metrics_row(&mut self, episode: Option<&FinishedEpisode>, eval_return: Option<f64>) {
        let row = FleetMetricsRow {
            step: self.inserted_base + episode.map_or(self.ingest.inserted(), |e| e.inserted),
            episode_return: episode.map(|e| e.episode_return),
            eval_return,
            robot: episode.map(|e| e.robot.as_str()),
            updates: self.updates,
            policy_version: self.report.policy_version,
            elapsed_s: self.started.elapsed().as_secs_f64(),
        };
        if let Err(e) = self.metrics.serialize(row) {
            self.log(&format!("warning: {METRICS_FILE}: {e}"));
        }
    }

    /// Writes the robots' newly finished episodes to `metrics.csv`.
    fn record_episodes(&mut self) {
        for episode in self.ingest.take_finished() {
            if self.recording {
                self.metrics_row(Some(&episode), None);
            }
        }
    }

    /// Flushes `metrics.csv` and draws it as `curve.png`.
    fn draw_curve(&mut self) {
        if let Err(e) = self.metrics.flush() {
            self.log(&format!("warning: {METRICS_FILE}: {e}"));
            return;
        }
        let title = format!(
            "{} {}, fleet {:?} (robots exploring; greedy evaluations)",
            self.opts.run.env, self.opts.run.algo, self.opts.fleet
        );
        let out = &self.opts.out;
        if let Err(e) =
            crate::plot::draw_curve(&out.join(METRICS_FILE), &out.join(CURVE_FILE), &title)
        {
            self.log(&format!("warning: {CURVE_FILE}: {e}"));
        }
    }

    fn log(&self, line: &str) {
        if self.opts.quiet || self.bar.is_hidden() {
            eprintln!("learner: {line}");
        } else {
            self.bar.println(line);
        }
    }

    /// Takes a message from the fleet; returns whether it was a batch from a robot
    /// not seen before.
    fn handle(&mut self, msg: Incoming) -> Result<bool, LearnerError> {
        let (id, fresh, batch) = match msg {
            Incoming::Batch(id, batch) => {
                let fresh = self.learner.ingest(&mut self.ingest, &id, &batch)?;
                self.record_episodes();
                let now = Instant::now();
                match &mut self.receiving {
                    Some((_, _, last)) => *last = now,
                    None => self.receiving = Some((now, self.ingest.totals().received, now)),
                }
                (id, fresh, true)
            }
            Incoming::Status(id, status) => {
                let fresh = self.ingest.status(&id, status)?;
                (id, fresh, false)
            }
        };
        if fresh {
            self.log(&format!("robot {id} joined"));
        }
        Ok(fresh && batch)
    }

    fn refresh_report(&mut self) {
        let t = self.ingest.totals();
        let r = &mut self.report;
        r.robots = self.ingest.reports();
        r.transitions_received = t.received;
        r.transitions_inserted = t.inserted;
        r.duplicates = t.duplicate_batches;
        r.gaps = t.missing_batches;
        r.missing_steps = t.missing_steps;
        r.invalid_transitions = t.invalid;
        r.robots_seen = self.ingest.robots();
        r.updates = self.updates;
        r.status_sent = t.status_sent;
        r.status_spooled = t.status_spooled;
        r.status_dropped = t.status_dropped;
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-9);
        r.elapsed_s = elapsed;
        r.transitions_per_s = t.received.saturating_sub(self.received_at_start) as f64 / elapsed;
        r.updates_per_s = self.updates.saturating_sub(self.updates_at_start) as f64 / elapsed;
        let span = |(first, count, last): (Instant, u64, Instant), now: u64| {
            let s = last.duration_since(first).as_secs_f64();
            let rate = if s > 0.0 {
                now.saturating_sub(count) as f64 / s
            } else {
                0.0
            };
            (s, rate)
        };
        if let Some(receiving) = self.receiving {
            (r.receiving_s, r.receiving_transitions_per_s) = span(receiving, t.received);
        }
        if let Some(training) = self.training {
            (r.training_s, r.training_updates_per_s) = span(training, self.updates);
        }
    }

    fn write_report(&mut self) -> Result<(), LearnerError> {
        self.refresh_report();
        if let Err(e) = self.metrics.flush() {
            self.log(&format!("warning: {METRICS_FILE}: {e}"));
        }
        let json = serde_json::to_string_pretty(&self.report)
            .map_err(|e| LearnerError::Config(e.to_string()))?;
        write_text(&self.opts.out.join(LEARNER_FILE), &json)
    }

    /// Exports the online network as the next policy version, writes it to
    /// `out/policy.onnx` and returns the signed update.
    fn next_policy(&mut self) -> Result<PolicyUpdate, LearnerError> {
        let mut spec = self.spec.clone();
        spec.policy_version = self.report.policy_version + 1;
        spec.training_step = self.updates;
        let at = format!(
            "policy v{} at update {}, not published",
            spec.policy_version, self.updates
        );
        crate::algo::check_weights(self.learner.agent(), &at)?;
        let bytes = self.learner.agent().to_onnx(&spec)?;
        write_atomic(&self.opts.out.join(POLICY_FILE), &bytes)?;
        self.report.policy_version = spec.policy_version;
        self.last_published_update = self.updates;
        let mut update = PolicyUpdate::new(spec, bytes);
        sign(&mut update, &self.key);
        Ok(update)
    }

    fn eval(&mut self) -> Result<f64, LearnerError> {
        let seed = crate::eval::eval_seed(self.opts.run.seed);
        let episodes = self.opts.run.eval_interval_episodes.max(1);
        let (mut mean, _) = evaluate(self.learner.agent(), self.eval_env.as_mut(), episodes, seed)?;
        // A promising screen is confirmed on the full evaluation's episodes.
        if let Some(target) = self.opts.target_return {
            if mean >= target && self.opts.run.eval_episodes > episodes {
                let full = self.opts.run.eval_episodes;
                mean = evaluate(self.learner.agent(), self.eval_env.as_mut(), full, seed)?.0;
            }
        }
        self.report.eval_mean_return = Some(mean);
        self.metrics_row(None, Some(mean));
        Ok(mean)
    }

    fn progress(&mut self) {
        self.refresh_report();
        let r = &self.report;
        let line = format!(
            "robots {} | rx {} ({:.0}/s) | dup {} gap {} missing {} err {} | upd {} ({:.0}/s) | v{} | eval {}",
            r.robots_seen,
            r.transitions_received,
            r.transitions_per_s,
            r.duplicates,
            r.gaps,
            r.missing_steps,
            r.decode_errors,
            r.updates,
            r.updates_per_s,
            r.policy_version,
            r.eval_mean_return
                .map_or("-".to_string(), |m| format!("{m:.1}"))
        );
        if self.opts.quiet {
            eprintln!("learner: {line}");
        } else {
            self.bar.set_message(line);
            self.bar.tick();
        }
    }
}

/// Runs the learner until it is solved, reaches `max_transitions`, or `shutdown` is
/// set; returns the final report (also written to `out/learner.json`).
pub fn serve(opts: ServeOptions, shutdown: Arc<AtomicBool>) -> Result<LearnerReport, LearnerError> {
    keys::validate_name(&opts.fleet)
        .map_err(|e| LearnerError::Config(format!("fleet {:?}: {e}", opts.fleet)))?;
    if opts.publish_every == 0 {
        return Err(LearnerError::Config(
            "--publish-every must be at least 1".into(),
        ));
    }
    let out = opts.out.clone();
    fs::create_dir_all(&out).map_err(|e| io_err(&out, e))?;
    let device = opts.device.clone();

    // Resume from the newest checkpoint, with the configuration it was made with.
    let latest = checkpoint::latest(&out)?;
    let config_path = out.join("config.toml");
    let mut run = opts.run.clone();
    if latest.is_some() && config_path.exists() {
        let text = fs::read_to_string(&config_path).map_err(|e| io_err(&config_path, e))?;
        run = toml::from_str(&text).map_err(|e| io_err(&config_path, e))?;
        // It may have been edited since: the same checks as a fresh start.
        crate::run::check(&run)
            .map_err(|e| LearnerError::Config(format!("{}: {e}", config_path.display())))?;
        let ignored = differing_settings(&opts.run, &run, &opts.given);
        if !ignored.is_empty() {
            tracing::warn!(
                "learner: resuming with {}; settings given now that differ from it are \
                 ignored: {}",
                config_path.display(),
                ignored.join(", ")
            );
        }
    } else {
        let text = toml::to_string(&run).map_err(|e| LearnerError::Config(e.to_string()))?;
        write_text(&config_path, &text)?;
    }
    let env = reflex_sim::make(&run.env).map_err(TrainError::from)?;
    let mut policy_version = 0;
    // The newest checkpoint that loads (a damaged one is set aside, warned about).
    // (None when the folder has no checkpoint.)
    let resumed = checkpoint::load_newest(
        &out,
        || FleetLearner::build(&run, env.as_ref(), &device),
        |dir, learner: &mut FleetLearner| Ok(checkpoint::load(dir, learner.agent_mut(), &device)?),
    )?;
    let (latest, learner) = match resumed {
        Some((dir, learner)) => (Some(dir), learner),
        None => (None, FleetLearner::build(&run, env.as_ref(), &device)?),
    };
    if let Some(dir) = &latest {
        policy_version = last_published(&out);
        eprintln!(
            "learner: resuming from {} ({} transitions, {} updates, policy v{policy_version})",
            dir.display(),
            learner.agent().steps_done(),
            learner.agent().updates()
        );
    }
    let schedule = learner.schedule();
    let spi = opts
        .samples_per_insert
        .unwrap_or_else(|| schedule.samples_per_insert());
    let limiter = SpiLimiter::new(spi, schedule.batch_size, schedule.learning_starts)?;
    let target_every = match (opts.target_update_every, schedule.target_every()) {
        (Some(0), _) => {
            return Err(LearnerError::Config(
                "--target-update-every must be at least 1".into(),
            ))
        }
        (Some(_), None) => {
            return Err(LearnerError::Config(format!(
                "--target-update-every sets DQN's hard target updates; {} moves its targets \
                 by Polyak averaging in every update ({}.tau)",
                run.algo, run.algo
            )))
        }
        (given, local) => given.or(local),
    };
    let key = load_or_create_key(&out)?;
    let spec = spec_for(&run.algo, &run.env, env.as_ref());
    let bar = if opts.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{elapsed_precise} {spinner} {msg}") {
            bar.set_style(style);
        }
        bar
    };
    let updates = learner.agent().updates();
    let mut svc = Service {
        opts: ServeOptions {
            run: run.clone(),
            ..opts
        },
        ingest: match env.action_space() {
            reflex_msgs::ActionSpace::Box(b) => learner
                .ingest_path(env.observation_space().dim())?
                .bound_actions(&b.low, &b.high),
            _ => learner.ingest_path(env.observation_space().dim())?,
        },
        spec,
        key,
        report: LearnerReport {
            env: run.env.clone(),
            fleet: String::new(),
            policy_version,
            samples_per_insert: spi,
            ..LearnerReport::default()
        },
        updates,
        last_published_update: updates,
        started: Instant::now(),
        received_at_start: 0,
        updates_at_start: updates,
        receiving: None,
        training: None,
        bar,
        eval_env: reflex_sim::make(&run.env).map_err(TrainError::from)?,
        metrics: open_metrics(&out, latest.is_some().then(|| learner.agent().steps_done()))?,
        inserted_base: 0,
        recording: true,
        learner,
    };
    svc.report.fleet = svc.opts.fleet.clone();
    // Inserted transitions are the replay's clock; a resumed learner continues it.
    let inserted_base = svc.learner.agent().steps_done();
    svc.inserted_base = inserted_base;

    // The initial policy, before anyone connects, so daemons can start from it.
    let first = svc.next_policy()?;

    let (network, rx) = Network::open(&svc.opts)?;
    svc.log(&format!(
        "serving fleet {:?} on {:?}: {} with {}, SPI {spi}, batch {}, learning starts at {}, \
         targets {}, policy every {} updates; signing key {}",
        svc.opts.fleet,
        network.describe(&svc.opts),
        run.env,
        run.algo,
        schedule.batch_size,
        schedule.learning_starts,
        target_every.map_or(
            "by Polyak averaging in every update".to_string(),
            |k| format!("every {k} updates")
        ),
        svc.opts.publish_every,
        out.join(PUB_FILE).display()
    ));

    let publish = |svc: &mut Service, update: &PolicyUpdate| -> Result<(), LearnerError> {
        network.publish(update)?;
        svc.report.policies_published += 1;
        Ok(())
    };
    publish(&mut svc, &first)?;
    let mut current = Some(first);
    let mut last_progress = Instant::now();
    let mut last_report = Instant::now();
    let mut last_idle_check = Instant::now();
    let inserted = |svc: &Service, base: u64| base + svc.ingest.inserted();
    let mut new_robot = false;

    let stop_reason: String = loop {
        if shutdown.load(Ordering::SeqCst) {
            break "signal".to_string();
        }
        // Take everything that arrived.
        let mut drained = 0;
        while let Ok(msg) = rx.try_recv() {
            new_robot |= svc.handle(msg)?;
            drained += 1;
            if drained >= 4096 {
                break;
            }
        }
        svc.report.decode_errors = network.decode_errors();
        if new_robot {
            // No late-joiner cache on the policy key: a robot that joins gets the
            // current policy again.
            new_robot = false;
            if let Some(update) = &current {
                let update = update.clone();
                publish(&mut svc, &update)?;
            }
        }
        // Not while a backlog is still queued (after a stall): the robots in it
        // only look silent.
        if drained < 4096 && last_idle_check.elapsed() >= Duration::from_secs(1) {
            last_idle_check = Instant::now();
            let flushed = svc.learner.flush_idle(&mut svc.ingest, IDLE_FLUSH)?;
            if flushed > 0 {
                tracing::debug!("{flushed} silent robots' open steps went into replay");
            }
        }
        let total_inserted = inserted(&svc, inserted_base);
        svc.learner.agent_mut().set_steps_done(total_inserted);
        if let Some(max) = svc.opts.max_transitions {
            svc.refresh_report();
            if svc.report.transitions_received >= max {
                break "max_transitions".to_string();
            }
        }

        let can_sample = svc.learner.can_sample();
        if can_sample && limiter.may_update(total_inserted, svc.updates) {
            // Train as fast as the limiter allows, in small slices so new data keeps
            // flowing into replay.
            let budget = (limiter.allowed(total_inserted) - svc.updates).min(32);
            let mut solved = false;
            for _ in 0..budget {
                let progress = (total_inserted as f64 / svc.opts.run.steps.max(1) as f64).min(1.0);
                let beta = schedule.per_beta0 + (1.0 - schedule.per_beta0) * progress;
                svc.learner
                    .set_learning_rate_at(total_inserted, svc.opts.run.steps);
                let updates = svc.updates + 1;
                svc.learner
                    .update(beta)?
                    .finite(|| format!("update {updates}"))?;
                svc.updates += 1;
                let now = Instant::now();
                match &mut svc.training {
                    Some((_, _, last)) => *last = now,
                    None => svc.training = Some((now, svc.updates, now)),
                }
                if target_every.is_some_and(|k| svc.updates.is_multiple_of(k)) {
                    svc.learner.update_target()?;
                }
                if svc.updates.is_multiple_of(svc.opts.publish_every) {
                    let update = svc.next_policy()?;
                    publish(&mut svc, &update)?;
                    current = Some(update);
                }
                if svc.opts.checkpoint_every > 0
                    && svc.updates.is_multiple_of(svc.opts.checkpoint_every)
                {
                    checkpoint::save(&out, svc.learner.agent_mut())?;
                }
                if svc.opts.eval_every > 0 && svc.updates.is_multiple_of(svc.opts.eval_every) {
                    let mean = svc.eval()?;
                    svc.log(&format!(
                        "update {:>7}: greedy eval return {mean:.1} ({} transitions)",
                        svc.updates, total_inserted
                    ));
                    if svc.opts.target_return.is_some_and(|t| mean >= t) {
                        solved = true;
                        break;
                    }
                }
            }
            if solved {
                svc.report.solved = true;
                svc.report.time_to_solve_s = Some(svc.started.elapsed().as_secs_f64());
                break "solved".to_string();
            }
        } else {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(msg) => new_robot |= svc.handle(msg)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    break "subscriptions closed".to_string();
                }
            }
        }
        if last_progress.elapsed() >= Duration::from_millis(if svc.opts.quiet { 5000 } else { 200 })
        {
            last_progress = Instant::now();
            svc.progress();
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            last_report = Instant::now();
            svc.write_report()?;
        }
    };

    // The final policy is the network as it is now (the one the evaluation saw).
    if svc.updates != svc.last_published_update {
        let update = svc.next_policy()?;
        publish(&mut svc, &update)?;
    }
    let steps = inserted(&svc, inserted_base);
    svc.learner.agent_mut().set_steps_done(steps);
    // Every accepted step into replay first, so the checkpoint holds them all.
    svc.learner.flush(&mut svc.ingest)?;
    checkpoint::save(&out, svc.learner.agent_mut())?;
    svc.recording = false;
    svc.report.done = true;
    svc.report.stop_reason = stop_reason.clone();
    svc.write_report()?;
    svc.log(&format!(
        "stopped ({stop_reason}): policy v{} in {}",
        svc.report.policy_version,
        out.join(POLICY_FILE).display()
    ));

    if svc.opts.linger && stop_reason != "signal" {
        // Keep counting what robots still send (and their last heartbeats) until told
        // to stop, so the final accounting is complete.
        while !shutdown.load(Ordering::SeqCst) {
            match rx.recv_timeout(Duration::from_millis(50)) {
                // Counted (and stored), not trained on.
                Ok(msg) => {
                    svc.handle(msg)?;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            svc.report.decode_errors = network.decode_errors();
            if last_report.elapsed() >= Duration::from_millis(500) {
                last_report = Instant::now();
                svc.write_report()?;
            }
        }
        // Whatever is still queued.
        while let Ok(msg) = rx.try_recv() {
            svc.handle(msg)?;
        }
    }
    svc.report.decode_errors = network.decode_errors();
    svc.write_report()?;
    svc.draw_curve();
    svc.bar.finish_and_clear();
    network.close();
    Ok(svc.report.clone())
}

/// The network the learner serves on.
enum Network {
    Zenoh {
        session: reflex_daemon::zenoh::Session,
        publisher: reflex_daemon::zenoh::pubsub::Publisher<'static>,
        subscriptions: Subscriptions,
    },
    Ros2(crate::learner_ros2::Ros2Fleet),
}

impl Network {
    /// Joins the network; what robots send arrives on the returned queue.
    fn open(opts: &ServeOptions) -> Result<(Self, Receiver<Incoming>), LearnerError> {
        if let Some(ros2) = &opts.ros2 {
            let (fleet, rx) = crate::learner_ros2::Ros2Fleet::start(ros2)?;
            return Ok((Network::Ros2(fleet), rx));
        }
        let session =
            zenoh_link::open(&opts.zenoh).map_err(|e| LearnerError::Zenoh(e.to_string()))?;
        let publisher = session
            .declare_publisher(keys::policy_key(&opts.fleet))
            .congestion_control(CongestionControl::Block)
            .wait()
            .map_err(|e| LearnerError::Zenoh(format!("declaring the policy publisher: {e}")))?;
        let (subscriptions, rx) = subscribe(&session, &opts.fleet)?;
        Ok((
            Network::Zenoh {
                session,
                publisher,
                subscriptions,
            },
            rx,
        ))
    }

    /// Messages dropped because they did not decode.
    fn decode_errors(&self) -> u64 {
        match self {
            Network::Zenoh { subscriptions, .. } => subscriptions.decode_errors(),
            Network::Ros2(fleet) => fleet.decode_errors(),
        }
    }

    fn describe(&self, opts: &ServeOptions) -> String {
        match self {
            Network::Zenoh { .. } => format!("zenoh {:?}", opts.zenoh.listen),
            Network::Ros2(fleet) => format!(
                "ROS 2 domain {} as {}",
                opts.ros2.as_ref().map_or(0, |r| r.domain),
                fleet.node()
            ),
        }
    }

    fn publish(&self, update: &PolicyUpdate) -> Result<(), LearnerError> {
        match self {
            Network::Zenoh { publisher, .. } => zenoh_link::publish_cdr(publisher, update)
                .map_err(|e| LearnerError::Zenoh(e.to_string())),
            Network::Ros2(fleet) => fleet.publish(update),
        }
    }

    fn close(self) {
        match self {
            Network::Zenoh {
                session,
                publisher,
                subscriptions,
            } => {
                drop(subscriptions);
                drop(publisher);
                let _ = session.close().wait();
            }
            Network::Ros2(fleet) => drop(fleet),
        }
    }
}

/// Reads `out/learner.json`.
pub fn read_report(out: &Path) -> Result<LearnerReport, LearnerError> {
    let path = out.join(LEARNER_FILE);
    let text = fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    serde_json::from_str(&text).map_err(|e| io_err(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spi_limiter_arithmetic() {
        let l = SpiLimiter::new(32.0, 64, 1000).unwrap();
        assert_eq!(l.allowed(0), 0);
        assert_eq!(l.allowed(1000), 0);
        assert_eq!(l.allowed(1001), 0, "0.5 update rounds down");
        assert_eq!(l.allowed(1002), 1);
        assert_eq!(l.allowed(3000), 1000);
        assert!(!l.may_update(1000, 0));
        assert!(l.may_update(1002, 0));
        assert!(!l.may_update(1002, 1), "ahead of the data: wait");
        assert!(l.may_update(3000, 10), "behind: train");
        let l = SpiLimiter::new(1.0, 4, 0).unwrap();
        assert_eq!(l.allowed(10), 2);
        assert!(SpiLimiter::new(0.0, 64, 0).is_err());
        assert!(SpiLimiter::new(f64::NAN, 64, 0).is_err());
        assert!(SpiLimiter::new(1.0, 0, 0).is_err());
    }

    #[test]
    fn batch_gaps_duplicates_and_restarts() {
        let mut s = SeqTracker::default();
        assert_eq!(s.check(0, 10), BatchVerdict::Fresh { missing: 0 });
        assert_eq!(s.check(1, 11), BatchVerdict::Fresh { missing: 0 });
        assert_eq!(s.check(1, 11), BatchVerdict::Duplicate);
        assert_eq!(s.check(4, 14), BatchVerdict::Fresh { missing: 2 });
        assert_eq!(s.check(0, 10), BatchVerdict::Duplicate, "an old one again");
        assert_eq!(s.check(5, 15), BatchVerdict::Fresh { missing: 0 });
        // Numbering starts over with different content: a restarted daemon.
        assert_eq!(s.check(0, 99), BatchVerdict::Restarted);
        assert_eq!(s.check(1, 100), BatchVerdict::Fresh { missing: 0 });
        // A first batch that is not 0 (the learner started late) is not a gap.
        let mut late = SeqTracker::default();
        assert_eq!(late.check(7, 1), BatchVerdict::Fresh { missing: 0 });
        // Absurd numbers from a robot saturate instead of overflowing.
        let mut huge = SeqTracker::default();
        assert_eq!(huge.check(0, 1), BatchVerdict::Fresh { missing: 0 });
        assert_eq!(
            huge.check(u64::MAX, 2),
            BatchVerdict::Fresh {
                missing: u64::MAX - 1
            }
        );
        assert_eq!(huge.check(u64::MAX, 3), BatchVerdict::Fresh { missing: 0 });
    }

    #[test]
    fn episode_steps_gaps_and_cuts() {
        let mut e = EpisodeTracker::default();
        assert_eq!(e.check(0, 0, false), StepVerdict::Continues);
        assert_eq!(e.check(0, 1, false), StepVerdict::Continues);
        assert_eq!(e.check(0, 1, false), StepVerdict::Stale);
        assert_eq!(e.check(0, 4, false), StepVerdict::Gap { missing: 2 });
        assert_eq!(e.check(0, 5, true), StepVerdict::Continues);
        assert_eq!(e.completed, 1);
        assert_eq!(e.check(0, 5, true), StepVerdict::Stale, "after its end");
        assert_eq!(e.check(1, 0, false), StepVerdict::Continues);
        assert_eq!(e.check(2, 0, false), StepVerdict::EpisodeCut);
        assert_eq!(e.check(2, 1, true), StepVerdict::Continues);
        assert_eq!(e.check(3, 2, false), StepVerdict::Gap { missing: 2 });
        // A robot that reuses the episode id: step 0 after its done is the next
        // episode; anything else of the ended episode is stale.
        let mut same = EpisodeTracker::default();
        assert_eq!(same.check(0, 0, false), StepVerdict::Continues);
        assert_eq!(same.check(0, 1, true), StepVerdict::Continues);
        assert_eq!(same.check(0, 1, false), StepVerdict::Stale);
        assert_eq!(same.check(0, 0, false), StepVerdict::Continues);
        assert_eq!(same.check(0, 1, true), StepVerdict::Continues);
        assert_eq!(same.completed, 2);
        // Joining mid-episode is no gap: those steps were never this learner's.
        let mut late = EpisodeTracker::default();
        assert_eq!(late.check(9, 3, false), StepVerdict::Joined);
        assert_eq!(late.check(9, 4, false), StepVerdict::Continues);
    }

    /// A faulty robot's implausible values are refused one transition at a
    /// time: huge or non-finite observations and rewards (squared in a loss
    /// they overflow and stop training) and actions past the action space
    /// (reflexd clamps into it).
    #[test]
    fn implausible_transitions_are_refused_not_trained_on() {
        use crate::replay::ReplayBuffer;
        use reflex_msgs::{Action, Transition};

        let shape = ActionShape::Continuous { dim: 1 };
        let t = |step: u32, a: f32| Transition {
            step,
            obs: vec![0.1, 0.2],
            action: Action::Continuous(vec![a]),
            reward: -1.0,
            next_obs: vec![0.3, 0.4],
            ..Transition::default()
        };
        let mut ingest = Ingest::new(2, shape, 1, 0.99)
            .unwrap()
            .bound_actions(&[-2.0], &[2.0]);
        let mut replay = ReplayBuffer::new(100, 2, shape).unwrap();
        let mut huge_reward = t(1, 0.0);
        huge_reward.reward = 1e20;
        let mut huge_obs = t(2, 0.0);
        huge_obs.next_obs[1] = -1e30;
        let mut plausible = t(6, 1.0);
        plausible.reward = -MAX_ABS_VALUE;
        let steps = vec![
            t(0, 2.0),
            huge_reward,
            huge_obs,
            t(3, 2.5),
            t(4, f32::NAN),
            t(5, -2.0),
            plausible,
        ];
        let batch = TransitionBatch {
            transitions: steps,
            ..TransitionBatch::default()
        };
        ingest.batch("a", &batch, &mut replay).unwrap();
        let totals = ingest.totals();
        assert_eq!((totals.inserted, totals.invalid), (3, 4));
        assert_eq!(replay.len(), 3);
        let check = |t: &Transition| refusal(2, shape, Some(&(vec![-2.0], vec![2.0])), t);
        assert!(check(&t(0, 2.5))
            .unwrap()
            .contains("outside the action space"));
        assert!(check(&t(0, 2.0)).is_none());
        // Without bounds (none known), only finiteness is asked of an action.
        assert!(refusal(2, shape, None, &t(0, 7.0)).is_none());
    }

    /// A resumed learner numbers on from the last version it published, from
    /// its report when the policy file is gone or unreadable.
    #[test]
    fn a_resumed_learner_numbers_on_from_its_report_without_a_policy_file() {
        let dir =
            std::env::temp_dir().join(format!("reflex-last-published-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(last_published(&dir), 0);
        let report = LearnerReport {
            policy_version: 7,
            ..LearnerReport::default()
        };
        std::fs::write(
            dir.join(LEARNER_FILE),
            serde_json::to_string(&report).unwrap(),
        )
        .unwrap();
        assert_eq!(last_published(&dir), 7);
        std::fs::write(dir.join(POLICY_FILE), b"not an onnx file").unwrap();
        assert_eq!(last_published(&dir), 7);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_resume_names_the_settings_it_ignores() {
        let resumed = RunConfig::default();
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let all = names(&["seed", "dqn", "env"]);
        assert!(differing_settings(&resumed, &resumed, &all).is_empty());
        let mut given = resumed.clone();
        given.dqn.learning_rate = 0.5;
        given.dqn.gamma = 0.5;
        given.seed = 9;
        given.eval_interval += 1;
        // Only what was named counts: `eval_interval` differs (a preset's,
        // say) but nobody gave it now; `dqn.gamma` is covered by `dqn`.
        let ignored = differing_settings(&given, &resumed, &names(&["seed", "dqn.learning_rate"]));
        assert_eq!(ignored.len(), 2, "{ignored:?}");
        assert_eq!(differing_settings(&given, &resumed, &all).len(), 3);
        assert!(differing_settings(&given, &resumed, &[]).is_empty());
        assert!(
            ignored
                .iter()
                .any(|s| s.starts_with("dqn.learning_rate = 0.5")),
            "{ignored:?}"
        );
        assert!(
            ignored.iter().any(|s| s.starts_with("seed = 9")),
            "{ignored:?}"
        );
    }

    #[test]
    fn ingest_counts_per_robot_and_fills_replay() {
        use crate::replay::ReplayBuffer;
        use reflex_msgs::{Action, Transition};

        let t = |episode_id, step, done| Transition {
            episode_id,
            step,
            obs: vec![0.1, 0.2],
            action: Action::Discrete(1),
            reward: 1.0,
            next_obs: vec![0.3, 0.4],
            terminated: done,
            ..Transition::default()
        };
        let batch = |batch_seq, transitions| TransitionBatch {
            batch_seq,
            transitions,
            ..TransitionBatch::default()
        };
        // n = 3: steps wait in the robot's window until its episode ends, or
        // until a flush at a clean stop.
        let mut windowed = Ingest::new(2, ActionShape::Discrete { n: 2 }, 3, 0.99).unwrap();
        let mut stored = ReplayBuffer::new(100, 2, ActionShape::Discrete { n: 2 }).unwrap();
        windowed
            .batch(
                "a",
                &batch(0, vec![t(0, 0, false), t(0, 1, false)]),
                &mut stored,
            )
            .unwrap();
        assert_eq!(stored.len(), 0);
        windowed.flush(&mut stored);
        assert_eq!(stored.len(), 2);
        // A robot that goes quiet: its open window goes into replay once it has
        // been silent long enough, not before.
        windowed
            .batch("b", &batch(0, vec![t(0, 0, false)]), &mut stored)
            .unwrap();
        assert_eq!(
            windowed.flush_idle(&mut stored, Duration::from_secs(3600)),
            0
        );
        assert_eq!(stored.len(), 2);
        assert_eq!(windowed.flush_idle(&mut stored, Duration::ZERO), 1);
        assert_eq!(stored.len(), 3);
        assert_eq!(
            windowed.flush_idle(&mut stored, Duration::ZERO),
            0,
            "nothing open"
        );
        // It comes back mid-episode: a new window, no gap.
        windowed
            .batch(
                "b",
                &batch(1, vec![t(0, 1, false), t(0, 2, true)]),
                &mut stored,
            )
            .unwrap();
        assert_eq!(stored.len(), 5);
        assert_eq!(windowed.totals().missing_steps, 0);

        let mut ingest = Ingest::new(2, ActionShape::Discrete { n: 2 }, 1, 0.99).unwrap();
        let mut replay = ReplayBuffer::new(100, 2, ActionShape::Discrete { n: 2 }).unwrap();
        let mut take = |ingest: &mut Ingest, robot: &str, b: &TransitionBatch| {
            ingest.batch(robot, b, &mut replay).unwrap()
        };
        // Robot a: an episode, then the next one starts.
        assert!(take(
            &mut ingest,
            "a",
            &batch(0, vec![t(0, 0, false), t(0, 1, true)])
        ));
        assert!(!take(&mut ingest, "a", &batch(1, vec![t(1, 0, false)])));
        // The same batch again: counted, not stored twice.
        assert!(!take(&mut ingest, "a", &batch(1, vec![t(1, 0, false)])));
        // Batch 2 lost: a batch gap and two missing steps; that episode's
        // return has a hole and is not reported.
        take(
            &mut ingest,
            "a",
            &batch(3, vec![t(1, 3, false), t(1, 4, true)]),
        );
        // Robot b: a short observation and an action out of range are refused.
        let mut short = t(0, 0, false);
        short.obs = vec![0.0];
        let mut bad_action = t(0, 1, false);
        bad_action.action = Action::Discrete(5);
        assert!(take(&mut ingest, "b", &batch(0, vec![short, bad_action])));

        let totals = ingest.totals();
        assert_eq!(totals.batches, 4);
        assert_eq!(totals.received, 7);
        assert_eq!(totals.inserted, 5);
        assert_eq!(ingest.inserted(), 5);
        assert_eq!(totals.duplicate_batches, 1);
        assert_eq!(totals.missing_batches, 1);
        assert_eq!(totals.missing_steps, 2);
        assert_eq!(totals.invalid, 2);
        assert_eq!(
            replay.len(),
            5,
            "n = 1: every accepted step is stored at once"
        );
        assert_eq!(ingest.robots(), 2);

        // Heartbeats: totals carry over a daemon restart (its counters start over).
        let status = |heartbeat_seq, transitions_sent| Status {
            heartbeat_seq,
            transitions_sent,
            ..Status::default()
        };
        assert!(ingest.status("c", status(5, 10)).unwrap(), "a new robot");
        assert!(!ingest.status("c", status(1, 3)).unwrap());
        assert_eq!(ingest.totals().status_sent, 13);
        let reports = ingest.reports();
        assert_eq!(
            reports.iter().map(|r| r.robot.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(reports[0].episodes, 2);
        assert_eq!(reports[0].transitions_inserted, 5);
        assert_eq!(
            reports[0].recent_return,
            Some(2.0),
            "the whole episode's return only"
        );
        // A robot first seen mid-episode: no gap, and no partial return.
        ingest
            .batch(
                "d",
                &batch(7, vec![t(4, 10, false), t(4, 11, true)]),
                &mut replay,
            )
            .unwrap();
        let d = &ingest.reports()[3];
        assert_eq!((d.missing_steps, d.missing_batches), (0, 0), "{d:?}");
        assert_eq!((d.episodes, d.recent_return), (1, None), "{d:?}");
        // The whole episodes for metrics.csv: robot a's first (ended when two
        // steps had been taken in all), not the one with a hole, not d's part.
        assert_eq!(
            ingest.take_finished(),
            vec![FinishedEpisode {
                robot: "a".into(),
                episode_return: 2.0,
                inserted: 2,
            }]
        );
        assert!(ingest.take_finished().is_empty(), "drained");
        // Heartbeat counters are the robots' word: absurd ones saturate.
        assert!(ingest.status("e", status(5, u64::MAX)).unwrap());
        assert!(
            !ingest.status("e", status(1, u64::MAX)).unwrap(),
            "a restart"
        );
        assert_eq!(ingest.totals().status_sent, u64::MAX);
        assert_eq!(ingest.reports()[4].status_sent, u64::MAX);
        assert!(
            Ingest::new(2, ActionShape::Discrete { n: 2 }, 0, 0.99).is_err(),
            "n = 0 is refused up front"
        );
    }

    #[test]
    fn fingerprints_tell_batches_apart() {
        let t = |ep, step| reflex_msgs::Transition {
            episode_id: ep,
            step,
            obs: vec![0.5; 4],
            ..reflex_msgs::Transition::default()
        };
        let a = TransitionBatch {
            transitions: vec![t(0, 0), t(0, 1)],
            ..TransitionBatch::default()
        };
        let mut b = a.clone();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        b.transitions[0].step = 3;
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }

    #[test]
    fn signatures_verify_with_the_daemon_verifier() {
        let dir = tempfile_dir("sign");
        let key = load_or_create_key(&dir).unwrap();
        let again = load_or_create_key(&dir).unwrap();
        assert_eq!(
            key.to_bytes(),
            again.to_bytes(),
            "a restart keeps the identity"
        );
        let public = fs::read_to_string(dir.join(PUB_FILE)).unwrap();
        let public = reflex_daemon::config::parse_hex32(&public).unwrap();
        let spec = PolicySpec {
            algorithm: "dqn".into(),
            observation_space: reflex_msgs::BoxSpace::new(vec![-1.0; 2], vec![1.0; 2]).unwrap(),
            action_space: ActionSpace::Discrete { n: 2 },
            policy_version: 7,
            ..PolicySpec::default()
        };
        let mut update = PolicyUpdate::new(spec, vec![1, 2, 3]);
        sign(&mut update, &key);
        let verifier = reflex_daemon::swap::Verifier::new(public).unwrap();
        verifier.verify(&update).unwrap();
        update.onnx_sha256[0] ^= 1;
        assert!(verifier.verify(&update).is_err());
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn fleet_learners_for_each_algorithm_and_their_refusals() {
        let dev = Device::Cpu;
        let run = |env: &str, algo: &str| {
            let mut run = crate::run::RunConfig {
                env: env.into(),
                algo: algo.into(),
                ..crate::run::RunConfig::default()
            };
            for net in [&mut run.td3.actor, &mut run.td3.critic, &mut run.naf.net] {
                net.hidden = vec![8];
            }
            run.dqn.net.hidden = vec![8];
            run
        };
        let build = |env: &str, algo: &str| {
            let run = run(env, algo);
            let sim = reflex_sim::make(env).unwrap();
            FleetLearner::build(&run, sim.as_ref(), &dev)
        };
        // TD3 on Pendulum: one critic update per transition (SPI = batch), Polyak
        // targets, one continuous action.
        let td3 = build("pendulum", "td3").unwrap();
        assert!(matches!(td3, FleetLearner::ActorCritic(_)));
        assert_eq!(td3.agent().algo(), "td3");
        let s = td3.schedule();
        assert_eq!(s.samples_per_insert(), s.batch_size as f64);
        assert_eq!(s.target_every(), None);
        assert_eq!(td3.actions(), ActionShape::Continuous { dim: 1 });
        assert_eq!(build("pendulum", "ddpg").unwrap().agent().algo(), "ddpg");
        assert_eq!(build("pendulum", "naf").unwrap().agent().algo(), "naf");
        // DQN: RL Zoo's CartPole ratio, 128 updates of 64 per 256 steps = 32
        // samples per insert, and its hard target interval in updates.
        let dqn = build("cartpole", "dqn").unwrap();
        let s = dqn.schedule();
        assert_eq!(s.samples_per_insert(), 32.0);
        // Its target interval (10 steps) is shorter than a training round (128
        // updates per 256 steps): the target moves once per round's updates.
        assert_eq!(s.target_update_interval, Some(10));
        assert_eq!(s.target_every(), Some(128));
        assert_eq!(dqn.actions(), ActionShape::Discrete { n: 2 });
        // DRQN: hard targets too, and the learning rate decays with the
        // transitions inserted as the local loop's does with env steps.
        let mut drqn = build("cartpole-masked", "drqn").unwrap();
        assert!(drqn.schedule().target_every().is_some());
        assert!(drqn.ingest_path(2).is_ok());
        let FleetLearner::Drqn(l) = &mut drqn else {
            panic!("a DRQN learner")
        };
        l.config.learning_rate = 1e-3;
        l.config.learning_rate_end = Some(0.0);
        drqn.set_learning_rate_at(25_000, 100_000);
        let FleetLearner::Drqn(l) = &drqn else {
            unreachable!()
        };
        assert!(
            (l.optimizer.lr - 7.5e-4).abs() < 1e-12,
            "{}",
            l.optimizer.lr
        );
        // Refusals that name the problem.
        let refused = |env: &str, algo: &str, recurrent: bool| {
            let mut run = run(env, algo);
            run.recurrent = recurrent;
            let sim = reflex_sim::make(env).unwrap();
            match FleetLearner::build(&run, sim.as_ref(), &dev) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{algo} on {env} (recurrent {recurrent}) was accepted"),
            }
        };
        assert!(
            refused("pendulum", "dqn", false).contains("continuous actions; dqn needs discrete")
        );
        assert!(
            refused("cartpole", "td3", false).contains("discrete actions; td3 needs continuous")
        );
        assert!(
            refused("pendulum", "drqn", false).contains("continuous actions; drqn needs discrete")
        );
        // Recurrent TD3 and NAF: sequences of continuous actions.
        for algo in ["td3", "naf"] {
            let mut run = run("pendulum-masked", algo);
            run.recurrent = true;
            run.lstm.hidden = 4;
            let sim = reflex_sim::make("pendulum-masked").unwrap();
            let learner = FleetLearner::build(&run, sim.as_ref(), &dev).unwrap();
            assert!(matches!(
                learner,
                FleetLearner::RecurrentActorCritic(_) | FleetLearner::RecurrentNaf(_)
            ));
            assert_eq!(learner.actions(), ActionShape::Continuous { dim: 1 });
            let ingest = learner.ingest_path(2).unwrap();
            assert!(matches!(
                ingest.sequences,
                Some((
                    SequenceShape { state_width: 8, .. },
                    PrevInput::Normalized(_)
                ))
            ));
        }
        assert!(refused("cartpole", "ppo", false).contains("not `ppo`"));
    }

    #[test]
    fn continuous_ingest_checks_actions_and_feeds_the_running_norm() {
        use reflex_msgs::{Action, Transition};
        let mut run = crate::run::RunConfig {
            env: "pendulum".into(),
            algo: "td3".into(),
            ..crate::run::RunConfig::default()
        };
        run.td3.obs_norm = true;
        run.td3.actor.hidden = vec![8];
        run.td3.critic.hidden = vec![8];
        let sim = reflex_sim::make("pendulum").unwrap();
        let mut learner = FleetLearner::build(&run, sim.as_ref(), &Device::Cpu).unwrap();
        let mut ingest = Ingest::new(3, learner.actions(), 1, 0.98).unwrap();
        let t = |step: u32, action: Action| Transition {
            episode_id: 0,
            step,
            obs: vec![1.0, 0.0, step as f32],
            action,
            reward: -1.0,
            next_obs: vec![1.0, 0.0, step as f32 + 1.0],
            ..Transition::default()
        };
        let mut nan_obs = t(5, Action::Continuous(vec![0.0]));
        nan_obs.next_obs[2] = f32::NAN;
        let mut nan_reward = t(6, Action::Continuous(vec![0.0]));
        nan_reward.reward = f32::INFINITY;
        let batch = TransitionBatch {
            batch_seq: 0,
            transitions: vec![
                t(0, Action::Continuous(vec![1.5])),
                t(1, Action::Continuous(vec![-2.0])),
                t(2, Action::Continuous(vec![0.5, 0.5])), // two entries for one action
                t(3, Action::Continuous(vec![f32::NAN])),
                t(4, Action::Discrete(1)), // a discrete policy's robot
                nan_obs,
                nan_reward,
            ],
            ..TransitionBatch::default()
        };
        assert!(learner.ingest(&mut ingest, "r0", &batch).unwrap());
        let totals = ingest.totals();
        assert_eq!((totals.inserted, totals.invalid), (2, 5));
        assert_eq!(learner.agent().replay().len(), 2);
        // The running statistics saw exactly the accepted steps' observations.
        let FleetLearner::ActorCritic(ddpg) = &learner else {
            panic!("TD3 is an actor-critic learner")
        };
        let norm = ddpg.core.norm.as_ref().expect("obs_norm is on");
        assert_eq!(norm.count, 2);
        assert_eq!(norm.mean, [1.0, 0.0, 0.5]);
        // The replay keeps env units: the stored actions come back as sent.
        let crate::replay::Replay::Uniform(replay) = learner.agent().replay() else {
            panic!("uniform replay")
        };
        let stored: Vec<ActionRef<'_>> = (0..2).map(|i| replay.get(i).unwrap().action).collect();
        assert_eq!(
            stored,
            [
                ActionRef::Continuous(&[1.5]),
                ActionRef::Continuous(&[-2.0])
            ]
        );
    }

    #[test]
    fn sequence_ingest_writes_segments_with_stored_state_and_previous_actions() {
        use reflex_msgs::{Action, Transition};

        // Step `s` of episode `e`: obs [100 e + s, 1], action s % 2, and the
        // daemon's state before it, h = [s, s], c = [−s, −s].
        let t = |e: u64, s: u32, terminated: bool| {
            let x = (100 * e + u64::from(s)) as f32;
            Transition {
                episode_id: e,
                step: s,
                obs: vec![x, 1.0],
                action: Action::Discrete(s % 2),
                reward: 1.0,
                next_obs: vec![x + 1.0, 1.0],
                terminated,
                recurrent_h: vec![s as f32; 2],
                recurrent_c: vec![-(s as f32); 2],
                ..Transition::default()
            }
        };
        let shape = SequenceShape {
            state_width: 4,
            max_segment: 3,
        };
        let mut ingest = Ingest::sequences(2, PrevInput::OneHot { n: 2 }, shape).unwrap();
        let mut replay =
            SequenceReplay::new(100, 2, ActionShape::Discrete { n: 2 }, 4, None).unwrap();
        let mut seq = 0;
        let mut take = |ingest: &mut Ingest, replay: &mut SequenceReplay, ts: Vec<Transition>| {
            let batch = TransitionBatch {
                batch_seq: seq,
                transitions: ts,
                ..TransitionBatch::default()
            };
            seq += 1;
            ingest
                .batch_sequences("r0", &batch, replay, |_| {})
                .unwrap();
        };
        take(
            &mut ingest,
            &mut replay,
            vec![t(0, 0, false), t(0, 1, false)],
        );
        assert_eq!(replay.len(), 0, "a segment waits for its end");
        // Three steps: the segment is written (truncated) though the episode goes on.
        take(&mut ingest, &mut replay, vec![t(0, 2, false)]);
        assert_eq!((replay.len(), replay.starts()), (4, 3));
        // A step without the daemon's state is refused, a hole no sequence
        // spans; the episode then ends.
        let mut stateless = t(0, 3, false);
        stateless.recurrent_h.clear();
        stateless.recurrent_c.clear();
        take(&mut ingest, &mut replay, vec![stateless]);
        take(&mut ingest, &mut replay, vec![t(0, 4, true)]);
        assert_eq!((replay.len(), replay.starts()), (6, 4));
        // Episode 1 loses its step 2: the segment before the gap is written.
        take(
            &mut ingest,
            &mut replay,
            vec![t(1, 0, false), t(1, 1, false)],
        );
        take(&mut ingest, &mut replay, vec![t(1, 3, false)]);
        assert_eq!((replay.len(), replay.starts()), (9, 6));
        // Steps 3–5 fill a segment; step 6, in the next one, still gets step
        // 5's action as its input.
        take(
            &mut ingest,
            &mut replay,
            vec![t(1, 4, false), t(1, 5, false)],
        );
        assert_eq!((replay.len(), replay.starts()), (13, 9));
        take(&mut ingest, &mut replay, vec![t(1, 6, true)]);
        assert_eq!((replay.len(), replay.starts()), (15, 10));
        let totals = ingest.totals();
        assert_eq!(
            (totals.inserted, totals.invalid, totals.missing_steps),
            (10, 1, 1)
        );

        // Every learning start, sampled as a one-step window, holds the step's
        // observation, the robot's state before it, and the action applied
        // before it in the same stream (zeros at an episode's start and after
        // each hole; kept across a segment written mid-episode).
        let batch = one_step_windows(&replay, 256);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..batch.batch {
            let x = batch.obs[i * 2 * 2] as u32;
            let (e, s) = (x / 100, x % 100);
            seen.insert(x);
            let prev = &batch.prev_actions[i * 2 * 2..][..2];
            let expect_prev: [f32; 2] = match (e, s) {
                (_, 0) | (0, 4) | (1, 3) => [0.0, 0.0],
                _ if (s - 1) % 2 == 0 => [1.0, 0.0],
                _ => [0.0, 1.0],
            };
            assert_eq!(prev, expect_prev, "episode {e} step {s}");
            let s = s as f32;
            assert_eq!(&batch.init_state[i * 4..][..4], [s, s, -s, -s], "step {s}");
        }
        let expect: std::collections::BTreeSet<u32> =
            [0, 1, 2, 4, 100, 101, 103, 104, 105, 106].into();
        assert_eq!(seen, expect, "every stored step, each once in the replay");

        // A clean stop: the open segment goes into replay too.
        take(
            &mut ingest,
            &mut replay,
            vec![t(2, 0, false), t(2, 1, false)],
        );
        assert_eq!((replay.len(), replay.starts()), (15, 10), "still open");
        ingest.flush_sequences(&mut replay).unwrap();
        assert_eq!((replay.len(), replay.starts()), (18, 12));
        // A robot gone silent: its open segment goes in, and its buffers go back.
        take(&mut ingest, &mut replay, vec![t(2, 2, false)]);
        assert_eq!((replay.len(), replay.starts()), (18, 12), "still open");
        let idle = Duration::from_secs(3600);
        assert_eq!(ingest.flush_idle_sequences(&mut replay, idle).unwrap(), 0);
        assert_eq!(
            ingest
                .flush_idle_sequences(&mut replay, Duration::ZERO)
                .unwrap(),
            1
        );
        assert_eq!((replay.len(), replay.starts()), (20, 13));
        assert!(ingest
            .robots
            .values()
            .all(|r| r.segment.state.capacity() == 0));
        // It comes back with no step missing: the resumed step's previous-action
        // input is step 2's action (one-hot of 2 % 2 = 0), not zeros.
        take(&mut ingest, &mut replay, vec![t(2, 3, true)]);
        let batch = one_step_windows(&replay, 256);
        let resumed = (0..batch.batch)
            .find(|&i| batch.obs[i * 2 * 2] as u32 == 203)
            .expect("step 3 of episode 2 is stored");
        assert_eq!(&batch.prev_actions[resumed * 2 * 2..][..2], [1.0, 0.0]);
        // The flat path refuses a sequence store, and the other way round.
        let mut flat = Ingest::new(2, ActionShape::Discrete { n: 2 }, 3, 0.99).unwrap();
        assert!(flat.flush_sequences(&mut replay).is_err());
    }

    #[test]
    fn continuous_sequences_feed_back_the_normalized_applied_action() {
        use crate::algo::continuous::ActionScaling;
        use reflex_msgs::{Action, Transition};

        let scaling = ActionScaling::new(&reflex_msgs::BoxSpace {
            low: vec![-2.0],
            high: vec![2.0],
        })
        .unwrap();
        let shape = SequenceShape {
            state_width: 0,
            max_segment: 64,
        };
        let mut ingest = Ingest::sequences(1, PrevInput::Normalized(scaling), shape).unwrap();
        let mut replay =
            SequenceReplay::new(16, 1, ActionShape::Continuous { dim: 1 }, 0, None).unwrap();
        let applied = [1.0f32, -2.0, 0.5];
        let transitions = applied
            .iter()
            .enumerate()
            .map(|(s, &a)| Transition {
                step: s as u32,
                obs: vec![s as f32],
                action: Action::Continuous(vec![a]),
                reward: -1.0,
                next_obs: vec![s as f32 + 1.0],
                truncated: s == 2,
                ..Transition::default()
            })
            .collect();
        let batch = TransitionBatch {
            transitions,
            ..TransitionBatch::default()
        };
        ingest
            .batch_sequences("r0", &batch, &mut replay, |_| {})
            .unwrap();
        assert_eq!(replay.starts(), 3);
        let out = one_step_windows(&replay, 64);
        for i in 0..out.batch {
            let s = out.obs[i * 2] as usize;
            // The previous action in [−1, 1] (2 → 1), zeros at the start; the
            // action itself in env units.
            let prev = [0.0f32, 0.5, -1.0][s];
            assert_eq!(out.prev_actions[i * 2], prev, "step {s}");
            assert_eq!(out.actions[i], applied[s], "step {s}");
        }
    }

    /// `n` windows of one learning step (no burn-in) sampled from `replay`.
    fn one_step_windows(replay: &SequenceReplay, n: usize) -> crate::replay::SequenceBatch {
        let window = crate::replay::WindowSpec {
            burn_in: 0,
            learn: 1,
            n_step: 1,
            gamma: 0.99,
        };
        let mut out = crate::replay::SequenceBatch::default();
        let mut rng = reflex_sim::SimRng::seed(3);
        replay
            .sample_into(n, window, 1.0, &mut rng, &mut out)
            .unwrap();
        out
    }

    fn tempfile_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("reflex-learner-{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
