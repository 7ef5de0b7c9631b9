//! The control loop: one thread, a fixed rate, absolute deadlines.
//!
//! Tick `k` is due at `start + k · period` (never "last tick + period", so there is
//! no drift). Each tick:
//!
//! 1. swaps in a policy the swap thread has validated, if any (recurrent state reset, the
//!    episode's last action kept as the policy's previous action);
//! 2. takes the newest observation;
//! 3. if it is fresh, closes the previous step's transition with it (reward and
//!    `terminated` / `truncated` come from this observation, the one *after* the
//!    action, see `Observation`'s docs) and hands the transition to the uplink;
//! 4. unless the episode just ended, steps the policy, adds exploration, runs the
//!    safety layer and sends the action;
//! 5. without a fresh observation, sends the safe action only if the watchdog tripped
//!    or the e-stop is engaged.
//!
//! A tick that ends after the next deadline is an overrun: it is counted and the
//! missed deadlines are skipped (the loop never tries to catch up with a burst).
//! Latency (fresh observation taken → action sent) and jitter (wake-up − deadline)
//! go into histograms reported in [`LoopStats`] and `Status`.
//!
//! Transition convention: a transition `(obs, action, reward, next_obs,
//! terminated, truncated)` is recorded when the observation that follows `obs` in
//! the same episode (`step + 1`) arrives. If observations were skipped, the episode
//! changed without a done flag, or the safe action replaced the command in between
//! (watchdog, e-stop), the pending step is discarded (counted): the daemon cannot know
//! what the robot did. On a done observation the daemon sends no action and resets the
//! policy's recurrent state and the exploration noise; the robot (or simulator)
//! resets and publishes step 0 of the next episode.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use reflex_msgs::{Action, ActionCommand, BoxSpace, Observation, Status, Transition};

use crate::actor::{Actor, ActorOutput, Loader};
use crate::config::Config;
use crate::explore::Explorer;
use crate::safety::{EStop, Safety, SafetyCounters, SafetyError, Watchdog};
use crate::spool::{Spool, SpoolError};
use crate::swap::{BadKey, FileWatcher, SwapStats, Swapper, Validator, Verifier};
use crate::transport::{ActionSink, ObservationSource, PolicySource, StatusSink, TransitionSink};
use crate::uplink::{TransitionStats, TransitionTotals, Uplink, UplinkReport, UplinkSender};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The safety configuration does not fit the policy.
    #[error(transparent)]
    Safety(#[from] SafetyError),
    /// The spool could not be opened.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The public key is invalid.
    #[error(transparent)]
    Key(#[from] BadKey),
    /// The initial policy is unusable.
    #[error("initial policy: {0}")]
    Policy(String),
}

/// Everything the daemon talks to.
pub struct Transports {
    /// Observations from the robot.
    pub observations: Box<dyn ObservationSource>,
    /// Actions to the robot.
    pub actions: Box<dyn ActionSink>,
    /// Transitions to the learner (may fail: spooled).
    pub transitions: Box<dyn TransitionSink>,
    /// Status heartbeats.
    pub status: Box<dyn StatusSink>,
    /// Policy updates.
    pub policies: Box<dyn PolicySource>,
}

/// Loop timing and bookkeeping totals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoopStats {
    /// Version of the policy running when these were taken (0 = none).
    pub policy_version: u64,
    /// Ticks run.
    pub ticks: u64,
    /// Ticks that stepped the policy and sent an action.
    pub acting_ticks: u64,
    /// Ticks that ended after the next deadline.
    pub overruns: u64,
    /// Deadlines skipped after overruns.
    pub skipped_deadlines: u64,
    /// Latency (fresh observation → action sent) percentiles, nanoseconds.
    pub latency_p50_ns: u64,
    /// 99th percentile.
    pub latency_p99_ns: u64,
    /// Maximum.
    pub latency_max_ns: u64,
    /// Wake-up jitter (wake − deadline) percentiles, nanoseconds.
    pub jitter_p50_ns: u64,
    /// 99th percentile.
    pub jitter_p99_ns: u64,
    /// Maximum.
    pub jitter_max_ns: u64,
    /// Policies swapped in.
    pub swaps: u64,
    /// Policy steps that returned an error (→ safe action).
    pub policy_errors: u64,
    /// Times the policy's recurrent state went NaN or infinite and was reset
    /// to zeros mid-episode.
    pub recurrent_resets: u64,
    /// Observations never acted on because a newer one came in the same tick.
    pub skipped_observations: u64,
    /// Observations that name another robot (`robot_id` set and not this
    /// daemon's): dropped before anything else, so another robot's sensors
    /// neither get actions nor keep this robot's watchdog quiet.
    pub foreign_observations: u64,
    /// Observations of the wrong dimension, with NaN or infinite values, or (with
    /// `[safety] observation_bounds`) outside the policy's observation space (→
    /// safe action, no transition).
    pub bad_observations: u64,
    /// Pending steps discarded (skipped observations, episode change without done,
    /// safe action in between, an unusable next observation).
    pub discarded_steps: u64,
    /// The safety layer's totals.
    pub safety: SafetyCounters,
}

/// State shared between the control thread and the [`Daemon`] handle.
#[derive(Debug)]
struct Shared {
    status: Mutex<Status>,
    stats: Mutex<LoopStats>,
}

/// The step waiting for its next observation.
#[derive(Debug)]
struct Pending {
    episode_id: u64,
    step: u32,
    obs: Vec<f32>,
    action: Action,
    policy_version: u64,
    recurrent_h: Vec<f32>,
    recurrent_c: Vec<f32>,
}

/// Unusable observations logged one by one; the rest are only counted.
const LOGGED_BAD_OBSERVATIONS: u64 = 5;

/// Without any observation this long after start, reflexd says so once.
const FIRST_OBSERVATION: Duration = Duration::from_secs(5);

/// The control loop's state (lives on the control thread).
pub struct ControlLoop {
    robot_id: String,
    actor: Box<dyn Actor>,
    obs_dim: usize,
    /// The policy's observation bounds, when `[safety] observation_bounds` is on.
    obs_bounds: Option<BoxSpace>,
    explorer: Explorer,
    safety: Safety,
    watchdog: Watchdog,
    estop: EStop,
    observations: Box<dyn ObservationSource>,
    actions: Box<dyn ActionSink>,
    status_sink: Box<dyn StatusSink>,
    uplink: UplinkSender,
    swaps: Receiver<Box<dyn Actor>>,
    pending: Option<Pending>,
    /// The last action sent in the current episode (`None` after a reset): a
    /// swapped-in recurrent policy gets it as its previous action, as the learner
    /// assumes when it replays the episode.
    applied: Option<Action>,
    /// The running policy panicked in a step: it is not stepped again, and the
    /// robot gets the safe action until another policy is swapped in.
    broken: bool,
    last_seq: Option<u64>,
    inbox: Vec<Observation>,
    latency: Histogram<u64>,
    jitter: Histogram<u64>,
    stats: LoopStats,
    heartbeat_seq: u64,
    transition_stats: Arc<TransitionStats>,
    swap_stats: Arc<SwapStats>,
    shared: Arc<Shared>,
}

fn histogram() -> Histogram<u64> {
    // 1 ns .. 100 s at 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// Nanoseconds to whole microseconds for `Status`, saturating.
fn micros(ns: u64) -> u32 {
    u32::try_from(ns / 1000).unwrap_or(u32::MAX)
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl ControlLoop {
    /// One tick at `now`.
    pub fn tick(&mut self, now: Instant) {
        self.stats.ticks += 1;
        self.take_swap();
        let estop = self.estop.is_engaged();
        let mut inbox = std::mem::take(&mut self.inbox);
        if let Err(e) = self.observations.poll(&mut inbox) {
            tracing::warn!("observation source: {e}");
        }
        // The newest fresh observation is acted on; a repeat after it (a bridge
        // republishing it) does not displace it.
        let mut newest: Option<Observation> = None;
        let mut fresh = 0;
        for obs in inbox.drain(..) {
            if !obs.robot_id.is_empty() && obs.robot_id != self.robot_id {
                self.stats.foreign_observations += 1;
                if self.stats.foreign_observations <= LOGGED_BAD_OBSERVATIONS {
                    tracing::warn!(
                        "dropped an observation for robot {:?}: this daemon is {:?}, and two \
                         robots publish on one key or topic (ROS 2 node names that differ \
                         only in '-', '.' or '_' map to the same node); counted as \
                         `foreign_observations`",
                        obs.robot_id,
                        self.robot_id
                    );
                }
                continue;
            }
            if self.last_seq == Some(obs.seq) {
                continue; // a repeat of what we already saw
            }
            fresh += 1;
            self.last_seq = Some(obs.seq);
            if newest.take().is_some() {
                self.stats.skipped_observations += 1;
            }
            self.close_pending(&obs);
            if obs.done() {
                // The episode is over: no action; the robot resets.
                self.reset_episode();
            } else {
                newest = Some(obs);
            }
        }
        self.inbox = inbox;
        // Only a new observation shows the sensors are alive: a bridge that
        // keeps republishing a frozen one must not keep the watchdog quiet.
        if fresh > 0 {
            self.watchdog.feed(now);
        }
        match newest {
            Some(obs) => self.act(obs, now, estop),
            None => {
                let tripped = self.watchdog.tripped(now);
                if tripped || estop {
                    // Nothing fresh to act on, but the robot must stop now. Before
                    // any observation the command answers none: seq 0 (observations
                    // count from 1), so a simulator does not take it for an answer.
                    let (action, _) = self.safety.fallback(tripped, estop);
                    self.discard_pending();
                    self.observe_applied(&action);
                    self.send_action(self.last_seq.unwrap_or(0), 0, action);
                }
            }
        }
    }

    fn take_swap(&mut self) {
        let mut newest = None;
        while let Ok(actor) = self.swaps.try_recv() {
            newest = Some(actor);
        }
        if let Some(mut actor) = newest {
            actor.reset();
            // The state starts afresh, but the episode goes on: the learner
            // replays this step with the action before it as the previous action.
            if let Some(action) = &self.applied {
                actor.observe_applied(action);
            }
            tracing::info!("policy v{} -> v{}", self.actor.version(), actor.version());
            // The bounds observations are checked against are the running policy's.
            if let Some(bounds) = &mut self.obs_bounds {
                bounds.clone_from(&actor.spec().observation_space);
            }
            self.actor = actor;
            self.broken = false;
            self.explorer.reset();
            self.stats.swaps += 1;
        }
    }

    /// Forgets the episode: recurrent state, exploration noise, last action.
    fn reset_episode(&mut self) {
        self.actor.reset();
        self.explorer.reset();
        self.applied = None;
    }

    /// Records `action` as sent: the recurrent policy's next previous action.
    fn observe_applied(&mut self, action: &Action) {
        self.actor.observe_applied(action);
        self.applied = Some(action.clone());
    }

    fn discard_pending(&mut self) {
        if self.pending.take().is_some() {
            self.stats.discarded_steps += 1;
        }
    }

    /// Whether `obs` can close the pending step as its next observation (see
    /// [`unusable`](Self::unusable)). A terminal one skips the bounds: the
    /// learner does not bootstrap from it, and a robot may well end an episode
    /// past the training env's bounds (a pole that fell further).
    fn usable_next(&self, obs: &Observation) -> bool {
        self.unusable(&obs.values, !obs.terminated).is_none()
    }

    /// `obs`'s values as the next observation of a transition: a terminal one
    /// past the bounds is clamped into them, since a huge value would still
    /// reach a learner's network (and its 0 · Q(next) = 0 · ∞ would be NaN).
    fn next_values(&self, obs: &Observation) -> Vec<f32> {
        let mut values = obs.values.clone();
        if let Some(space) = self.obs_bounds.as_ref().filter(|_| obs.terminated) {
            for ((v, &low), &high) in values.iter_mut().zip(&space.low).zip(&space.high) {
                *v = v.clamp(low, high);
            }
        }
        values
    }

    /// Why `values` cannot be acted on and recorded, if so: not the policy's
    /// length, a NaN or infinite value, or (with `[safety] observation_bounds`,
    /// when `bounds`) a value outside the policy's observation space. Such an
    /// observation gets the safe action and no transition.
    fn unusable(&self, values: &[f32], bounds: bool) -> Option<String> {
        if values.len() != self.obs_dim {
            return Some(format!(
                "{} values, the policy takes {}",
                values.len(),
                self.obs_dim
            ));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Some(format!("value {i} is {}", values[i]));
        }
        let space = self.obs_bounds.as_ref().filter(|_| bounds)?;
        let (i, v) = values
            .iter()
            .enumerate()
            .find(|&(i, v)| *v < space.low[i] || *v > space.high[i])?;
        Some(format!(
            "value {i} = {v} is outside the policy's observation space [{}, {}]",
            space.low[i], space.high[i]
        ))
    }

    /// Closes the pending step with `obs`, the observation after it.
    fn close_pending(&mut self, obs: &Observation) {
        let Some(p) = self.pending.take() else {
            return;
        };
        if obs.episode_id != p.episode_id
            || obs.step != p.step.wrapping_add(1)
            || !self.usable_next(obs)
        {
            self.stats.discarded_steps += 1;
            return;
        }
        self.uplink.send(Transition {
            robot_id: self.robot_id.clone(),
            episode_id: p.episode_id,
            step: p.step,
            obs: p.obs,
            action: p.action,
            reward: obs.reward,
            next_obs: self.next_values(obs),
            terminated: obs.terminated,
            truncated: obs.truncated,
            policy_version: p.policy_version,
            recurrent_h: p.recurrent_h,
            recurrent_c: p.recurrent_c,
            ..Transition::default()
        });
    }

    /// Policy → exploration → safety → action out, for a fresh, non-terminal `obs`.
    fn act(&mut self, obs: Observation, now: Instant, estop: bool) {
        if obs.step == 0 {
            // A new episode (possibly without a done flag before it).
            self.reset_episode();
        }
        let (h, c) = self
            .actor
            .recurrent_state()
            .map_or((Vec::new(), Vec::new()), |(h, c)| (h.to_vec(), c.to_vec()));
        let version = self.actor.version();
        let why = self.unusable(&obs.values, true);
        let usable = why.is_none();
        let (action, verdict) = if let Some(why) = why {
            self.stats.bad_observations += 1;
            if self.stats.bad_observations <= LOGGED_BAD_OBSERVATIONS {
                let more = if self.stats.bad_observations == LOGGED_BAD_OBSERVATIONS {
                    " (no more of these are logged: they are counted as `bad_observations` in \
                     the stop report and as safety interventions in the status)"
                } else {
                    ""
                };
                tracing::warn!(
                    seq = obs.seq,
                    "unusable observation: {why}; safe action, no transition{more}"
                );
            }
            self.safety.fallback(false, estop)
        } else if self.broken {
            self.stats.policy_errors += 1;
            self.safety.fallback(false, estop)
        } else {
            // A panic inside the policy (a runtime fault a crafted file can
            // reach) must not take the control thread, and with it the safe
            // action and the watchdog, down.
            let actor = &mut self.actor;
            let values = &obs.values;
            let mut panicked = false;
            let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                // Moved in, so that the output may borrow the actor.
                let actor = actor;
                actor.step(values)
            }))
            .unwrap_or_else(|payload| {
                panicked = true;
                Err(crate::policy::panic_message(payload).into())
            });
            match stepped {
                // NaN Q-values still have an argmax; it means nothing.
                Ok(ActorOutput::Discrete { q, .. }) if q.iter().any(|v| !v.is_finite()) => {
                    self.safety.non_finite(false, estop)
                }
                Ok(out) => {
                    let proposed = self.explorer.propose(out, self.safety.space());
                    self.safety.filter(proposed, false, estop)
                }
                Err(e) if panicked => {
                    self.stats.policy_errors += 1;
                    self.broken = true;
                    tracing::error!(
                        "policy v{version} panicked in a step: {e}; safe action until another \
                         policy is swapped in (counted as policy_errors)"
                    );
                    self.safety.fallback(false, estop)
                }
                Err(e) => {
                    self.stats.policy_errors += 1;
                    tracing::warn!("policy step failed: {e}; safe action");
                    self.safety.fallback(false, estop)
                }
            }
        };
        let version = if verdict.safe_action() { 0 } else { version };
        // A recurrent state gone NaN or infinite would hold every later step of
        // the episode on the safe action: start it afresh (the previous action,
        // set just below, is kept).
        let state_broken = self
            .actor
            .recurrent_state()
            .is_some_and(|(h, c)| h.iter().chain(c).any(|v| !v.is_finite()));
        if state_broken {
            self.actor.reset();
            self.stats.recurrent_resets += 1;
            if self.stats.recurrent_resets <= LOGGED_BAD_OBSERVATIONS {
                tracing::warn!(
                    seq = obs.seq,
                    "the policy's recurrent state went non-finite; reset to zeros \
                     (counted as recurrent_resets)"
                );
            }
        }
        // A recurrent policy's next prev_action is what the robot was told to do.
        self.observe_applied(&action);
        self.send_action(obs.seq, version, action.clone());
        self.stats.acting_ticks += 1;
        let _ = self.latency.record(now.elapsed().as_nanos().max(1) as u64);
        if usable {
            self.pending = Some(Pending {
                episode_id: obs.episode_id,
                step: obs.step,
                obs: obs.values,
                action,
                policy_version: version,
                recurrent_h: h,
                recurrent_c: c,
            });
        }
    }

    fn send_action(&mut self, seq: u64, policy_version: u64, action: Action) {
        let command = ActionCommand {
            robot_id: self.robot_id.clone(),
            seq,
            timestamp_ns: unix_ns(),
            policy_version,
            action,
            ..ActionCommand::default()
        };
        if let Err(e) = self.actions.send(&command) {
            tracing::warn!("action sink: {e}");
        }
    }

    /// The current loop statistics.
    pub fn stats(&self) -> LoopStats {
        let mut s = self.stats.clone();
        s.latency_p50_ns = self.latency.value_at_quantile(0.5);
        s.latency_p99_ns = self.latency.value_at_quantile(0.99);
        s.latency_max_ns = self.latency.max();
        s.jitter_p50_ns = self.jitter.value_at_quantile(0.5);
        s.jitter_p99_ns = self.jitter.value_at_quantile(0.99);
        s.jitter_max_ns = self.jitter.max();
        s.safety = self.safety.counters();
        s.policy_version = self.actor.version();
        s
    }

    /// A status heartbeat (advances the heartbeat sequence).
    pub fn status(&mut self, now: Instant) -> Status {
        let stats = self.stats();
        let totals: TransitionTotals = self.transition_stats.totals();
        let status = Status {
            robot_id: self.robot_id.clone(),
            timestamp_ns: unix_ns(),
            heartbeat_seq: self.heartbeat_seq,
            policy_version: self.actor.version(),
            ticks: stats.ticks,
            overruns: stats.overruns,
            transitions_sent: totals.sent,
            transitions_spooled: totals.spooled,
            transitions_dropped: totals.dropped,
            decode_errors: self.observations.decode_errors()
                + self.swap_stats.decode_errors.load(Ordering::SeqCst),
            policy_updates_rejected: self.swap_stats.rejected.load(Ordering::SeqCst),
            safety_interventions: stats.safety.interventions,
            watchdog_tripped: self.watchdog.tripped(now),
            estop_active: self.estop.is_engaged(),
            latency_p50_us: micros(stats.latency_p50_ns),
            latency_p99_us: micros(stats.latency_p99_ns),
            latency_max_us: micros(stats.latency_max_ns),
            jitter_p50_us: micros(stats.jitter_p50_ns),
            jitter_p99_us: micros(stats.jitter_p99_ns),
            jitter_max_us: micros(stats.jitter_max_ns),
            ..Status::default()
        };
        self.heartbeat_seq += 1;
        status
    }

    fn publish_status(&mut self, now: Instant) {
        let status = self.status(now);
        if let Err(e) = self.status_sink.publish(&status) {
            tracing::debug!("status sink: {e}");
        }
        *self
            .shared
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = status;
        *self
            .shared
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = self.stats();
    }

    /// Runs ticks at `period` on absolute deadlines until `stop` is set, then sends
    /// the safe action and a final status.
    fn run(
        mut self,
        period: Duration,
        spin: Duration,
        status_every: Duration,
        stop: Arc<AtomicBool>,
    ) -> LoopStats {
        let start = Instant::now();
        let period_ns = period.as_nanos().max(1);
        let deadline_of = |k: u64| start + Duration::from_nanos((period_ns * u128::from(k)) as u64);
        let mut k: u64 = 0;
        let mut next_status = start;
        let mut silence_told = false;
        while !stop.load(Ordering::Relaxed) {
            let deadline = deadline_of(k);
            sleep_until(deadline, spin);
            let woke = Instant::now();
            let _ = self
                .jitter
                .record(woke.saturating_duration_since(deadline).as_nanos().max(1) as u64);
            self.tick(woke);
            if !silence_told && self.last_seq.is_none() && woke - start >= FIRST_OBSERVATION {
                // Nothing ever came: most often the robot (or simulator) publishes
                // under another robot_id or fleet, or on another endpoint.
                silence_told = true;
                tracing::warn!(
                    "no observation for robot {:?} in {} s since start ({} for other robots, \
                     {} undecodable): is the robot (or `reflex-sim serve --robot`) publishing \
                     as this robot_id and fleet, where this daemon listens (zenoh: \
                     reflex/<fleet>/<robot_id>/obs on an endpoint it connects to; ROS 2: the \
                     observation topic it subscribes to)?",
                    self.robot_id,
                    FIRST_OBSERVATION.as_secs(),
                    self.stats.foreign_observations,
                    self.observations.decode_errors()
                );
            }
            if woke >= next_status {
                self.publish_status(woke);
                next_status = woke + status_every;
            }
            let end = Instant::now();
            k += 1;
            if end > deadline_of(k) {
                self.stats.overruns += 1;
                let behind = ((end - start).as_nanos() / period_ns) as u64 + 1;
                self.stats.skipped_deadlines += behind - k;
                k = behind;
            }
        }
        // Clean stop: the actuators get the safe action last.
        // The step in flight never completes: it is not a transition (nor counted as
        // a discarded one).
        let action = self.safety.safe_action().clone();
        self.pending = None;
        self.send_action(self.last_seq.unwrap_or(0), 0, action);
        self.publish_status(Instant::now());
        self.stats()
    }
}

/// Sleeps until `deadline`, yielding in a busy loop for the last `spin`.
fn sleep_until(deadline: Instant, spin: Duration) {
    let now = Instant::now();
    if deadline <= now {
        return;
    }
    let remaining = deadline - now;
    if remaining > spin {
        std::thread::sleep(remaining - spin);
    }
    while Instant::now() < deadline {
        std::thread::yield_now();
    }
}

/// What the daemon reports when it stops.
#[derive(Debug, Clone)]
pub struct Report {
    /// The last status.
    pub status: Status,
    /// Loop statistics.
    pub stats: LoopStats,
    /// Transition accounting (balanced: `produced + recovered == sent + spooled +
    /// dropped`).
    pub transitions: TransitionTotals,
    /// The uplink's final report.
    pub uplink: UplinkReport,
    /// Policies accepted by the swap thread.
    pub policies_accepted: u64,
    /// Policies refused by the swap thread.
    pub policies_rejected: u64,
    /// Why the control thread died, if it did (a panic outside the policy step,
    /// which is guarded); `stats` are then its last published ones.
    pub control_failure: Option<String>,
}

/// A running daemon: control, uplink and swap threads.
pub struct Daemon {
    stop: Arc<AtomicBool>,
    control: JoinHandle<LoopStats>,
    uplink: Uplink,
    swapper: Swapper,
    shared: Arc<Shared>,
    estop: EStop,
    transition_stats: Arc<TransitionStats>,
    swap_stats: Arc<SwapStats>,
}

/// Whether a policy with `spec` can run under `config`: its spec is valid, the
/// safety settings fit its action space, and a ROS 2 transport's messages fit
/// its spaces. [`Daemon::start`] checks this, and so does `reflexd
/// check-config`. Returns the safety layer built for it.
pub fn check_fit(config: &Config, spec: &reflex_msgs::PolicySpec) -> Result<Safety, DaemonError> {
    spec.validate()
        .map_err(|e| DaemonError::Policy(e.to_string()))?;
    let safety = Safety::new(&spec.action_space, &config.safety, config.rate_hz)?;
    if config.transport.kind == crate::config::TransportKind::Ros2 {
        config
            .transport
            .ros2
            .fits(spec)
            .map_err(DaemonError::Config)?;
    }
    Ok(safety)
}

impl Daemon {
    /// Starts the daemon with `actor` as the initial policy; `loader` loads the
    /// policies offered later (file changes and updates).
    pub fn start(
        config: &Config,
        actor: Box<dyn Actor>,
        loader: Loader,
        transports: Transports,
    ) -> Result<Self, DaemonError> {
        config.validate().map_err(DaemonError::Config)?;
        let spec = actor.spec().clone();
        let safety = check_fit(config, &spec)?;
        let verifier = Verifier::from_config(&config.policy)?;
        let spool = Spool::open(&config.spool)?;
        let (uplink_tx, uplink, transition_stats) = Uplink::start(
            config.robot_id.clone(),
            spool,
            transports.transitions,
            &config.batching,
            &config.spool,
        );

        let watcher = (config.policy.reload_poll_ms > 0).then(|| {
            let initial = std::fs::read(&config.policy.path).ok();
            FileWatcher::new(
                &config.policy.path,
                Duration::from_millis(config.policy.reload_poll_ms),
                initial.as_deref(),
            )
        });
        let swap_stats = Arc::new(SwapStats::default());
        let validator = Validator::new(verifier, loader, &spec);
        let (swapper, swaps) = Swapper::start(
            validator,
            transports.policies,
            watcher,
            Duration::from_millis(10),
            swap_stats.clone(),
        );

        let estop = EStop::new(config.safety.start_estopped);
        let now = Instant::now();
        let watchdog = Watchdog::new(
            (config.safety.watchdog_ms > 0)
                .then(|| Duration::from_millis(config.safety.watchdog_ms)),
            now,
        );
        let shared = Arc::new(Shared {
            status: Mutex::new(Status {
                robot_id: config.robot_id.clone(),
                policy_version: actor.version(),
                ..Status::default()
            }),
            stats: Mutex::new(LoopStats::default()),
        });
        let control = ControlLoop {
            robot_id: config.robot_id.clone(),
            obs_dim: spec.observation_space.dim(),
            obs_bounds: config
                .safety
                .observation_bounds
                .then(|| spec.observation_space.clone()),
            explorer: Explorer::new(&config.mode, &spec.action_space),
            actor,
            safety,
            watchdog,
            estop: estop.clone(),
            observations: transports.observations,
            actions: transports.actions,
            status_sink: transports.status,
            uplink: uplink_tx,
            swaps,
            pending: None,
            applied: None,
            broken: false,
            last_seq: None,
            inbox: Vec::new(),
            latency: histogram(),
            jitter: histogram(),
            stats: LoopStats::default(),
            heartbeat_seq: 0,
            transition_stats: transition_stats.clone(),
            swap_stats: swap_stats.clone(),
            shared: shared.clone(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (period, spin) = (config.period(), Duration::from_micros(config.spin_us));
        let status_every = Duration::from_millis(config.status_interval_ms);
        let thread_stop = stop.clone();
        let control = std::thread::Builder::new()
            .name("reflexd-control".into())
            .spawn(move || control.run(period, spin, status_every, thread_stop))
            .expect("spawn the control thread");
        tracing::info!(
            robot = %config.robot_id,
            fleet = %config.fleet,
            rate_hz = config.rate_hz,
            policy_version = spec.policy_version,
            "reflexd running"
        );
        if config.policy.public_key.is_empty() {
            if config.policy.accept_unsigned {
                tracing::warn!(
                    "policy.accept_unsigned: unsigned policy updates are accepted; anyone who \
                     can publish to this fleet can change what this robot runs"
                );
            } else {
                let file = if config.policy.reload_poll_ms > 0 {
                    "new policies come only by changing the policy file"
                } else {
                    "and policy.reload_poll_ms = 0: this robot takes no new policy while it runs"
                };
                tracing::info!(
                    "no policy.public_key: policy updates over the network are refused; {file}"
                );
            }
        }
        Ok(Self {
            stop,
            control,
            uplink,
            swapper,
            shared,
            estop,
            transition_stats,
            swap_stats,
        })
    }

    /// The latest status (refreshed every `status_interval_ms`).
    pub fn status(&self) -> Status {
        self.shared
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The latest loop statistics (refreshed with the status).
    pub fn stats(&self) -> LoopStats {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Transition accounting right now.
    pub fn transitions(&self) -> TransitionTotals {
        self.transition_stats.totals()
    }

    /// Policies accepted by the swap thread so far.
    pub fn policies_accepted(&self) -> u64 {
        self.swap_stats.accepted.load(Ordering::SeqCst)
    }

    /// Policies refused by the swap thread so far.
    pub fn policies_rejected(&self) -> u64 {
        self.swap_stats.rejected.load(Ordering::SeqCst)
    }

    /// The e-stop input (engage / clear from anywhere).
    pub fn estop(&self) -> EStop {
        self.estop.clone()
    }

    /// Stops cleanly: the control thread sends the safe action and a last status,
    /// the swap thread stops, the uplink sends what it can and writes the rest to the
    /// disk spool.
    pub fn stop(self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        let (stats, control_failure) = match self.control.join() {
            Ok(stats) => (stats, None),
            Err(payload) => {
                let why = crate::policy::panic_message(payload);
                tracing::error!("the control thread panicked: {why}");
                let stats = self
                    .shared
                    .stats
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                (stats, Some(why))
            }
        };
        self.swapper.stop();
        // The control loop (and with it the last uplink sender) is gone: the uplink
        // flushes and exits.
        let uplink = self.uplink.join();
        let status = self
            .shared
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Report {
            status,
            stats,
            transitions: self.transition_stats.totals(),
            uplink,
            policies_accepted: self.swap_stats.accepted.load(Ordering::SeqCst),
            policies_rejected: self.swap_stats.rejected.load(Ordering::SeqCst),
            control_failure,
        }
    }

    /// Whether the control thread has ended without being stopped (it died).
    pub fn control_died(&self) -> bool {
        self.control.is_finished() && !self.stop.load(Ordering::SeqCst)
    }
}

/// Runs a daemon until `shutdown` is set (e.g. by a SIGINT/SIGTERM handler), then
/// stops it cleanly (safe action out, spool flushed) and returns its report.
/// Whenever `report` is set (e.g. by SIGUSR1) it logs the current status (latency
/// and jitter percentiles, overruns, transitions, safety state) and clears it.
pub fn serve(
    config: &Config,
    actor: Box<dyn Actor>,
    loader: Loader,
    transports: Transports,
    shutdown: &AtomicBool,
    report: &AtomicBool,
) -> Result<Report, DaemonError> {
    let daemon = Daemon::start(config, actor, loader, transports)?;
    while !shutdown.load(Ordering::SeqCst) {
        if report.swap(false, Ordering::SeqCst) {
            log_status(&daemon.status());
        }
        if daemon.control_died() {
            // Nothing drives the robot any more: stop, and say why (the
            // report's `control_failure`), rather than look healthy.
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if daemon.control_died() {
        tracing::error!(
            "the control loop died: the robot gets no further command, not even the safe \
             action; flushing the spool"
        );
    } else {
        tracing::info!("shutting down: safe action out, flushing the spool");
    }
    Ok(daemon.stop())
}

/// One log line with everything a robot owner asks a running daemon for.
pub fn log_status(s: &Status) {
    tracing::info!(
        robot = %s.robot_id,
        policy_version = s.policy_version,
        ticks = s.ticks,
        overruns = s.overruns,
        latency_p50_us = s.latency_p50_us,
        latency_p99_us = s.latency_p99_us,
        latency_max_us = s.latency_max_us,
        jitter_p50_us = s.jitter_p50_us,
        jitter_p99_us = s.jitter_p99_us,
        jitter_max_us = s.jitter_max_us,
        transitions_sent = s.transitions_sent,
        transitions_spooled = s.transitions_spooled,
        transitions_dropped = s.transitions_dropped,
        safety_interventions = s.safety_interventions,
        watchdog_tripped = s.watchdog_tripped,
        estop_active = s.estop_active,
        "status on request"
    );
}
