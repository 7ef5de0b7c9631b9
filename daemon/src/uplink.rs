//! The uplink thread: batches transitions from the control loop and sends them
//! through the [`Spool`] to the [`TransitionSink`], so that a slow or dead sink (and
//! disk I/O) never stalls the control thread.
//!
//! The control thread hands transitions over a bounded channel; if that channel is
//! ever full (the uplink thread is starved) the transition is dropped and counted,
//! never blocked on. The uplink sends as soon as a batch is full or its oldest
//! transition is `max_latency_ms` old, and while the sink is down retries every
//! `retry_ms`; the spool keeps everything meanwhile.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reflex_msgs::Transition;

use crate::config::{BatchingConfig, SpoolConfig};
use crate::spool::{Spool, SpoolCounters};
use crate::transport::TransitionSink;

/// How often the uplink thread collects transitions from the control thread.
const POLL: Duration = Duration::from_millis(1);

/// Transition accounting shared by the control thread, the uplink thread and
/// whoever reads the status. At rest (no transition in the hand-over channel):
/// `produced + recovered == sent + spooled + dropped`.
#[derive(Debug, Default)]
pub struct TransitionStats {
    /// Transitions assembled by the control loop.
    pub produced: AtomicU64,
    /// Valid transitions found in the disk spool at start.
    pub recovered: AtomicU64,
    /// Transitions delivered to the sink.
    pub sent: AtomicU64,
    /// Transitions waiting in the spool right now.
    pub spooled: AtomicU64,
    /// Transitions dropped: spool full, or the hand-over channel full.
    pub dropped: AtomicU64,
    /// Corrupt or truncated records found in disk segments.
    pub corrupt: AtomicU64,
    /// Batches delivered.
    pub batches: AtomicU64,
    /// Transitions dropped because the hand-over channel was full (part of
    /// `dropped`).
    pub handover_dropped: AtomicU64,
}

/// A consistent-enough copy of [`TransitionStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransitionTotals {
    /// See [`TransitionStats::produced`].
    pub produced: u64,
    /// See [`TransitionStats::recovered`].
    pub recovered: u64,
    /// See [`TransitionStats::sent`].
    pub sent: u64,
    /// See [`TransitionStats::spooled`].
    pub spooled: u64,
    /// See [`TransitionStats::dropped`].
    pub dropped: u64,
    /// See [`TransitionStats::corrupt`].
    pub corrupt: u64,
    /// See [`TransitionStats::batches`].
    pub batches: u64,
}

impl TransitionTotals {
    /// Whether nothing was lost silently: `produced + recovered == sent + spooled +
    /// dropped` (holds once the uplink has stopped).
    pub fn balanced(&self) -> bool {
        self.produced + self.recovered == self.sent + self.spooled + self.dropped
    }
}

impl TransitionStats {
    /// A snapshot.
    pub fn totals(&self) -> TransitionTotals {
        TransitionTotals {
            produced: self.produced.load(Ordering::SeqCst),
            recovered: self.recovered.load(Ordering::SeqCst),
            sent: self.sent.load(Ordering::SeqCst),
            spooled: self.spooled.load(Ordering::SeqCst),
            dropped: self.dropped.load(Ordering::SeqCst),
            corrupt: self.corrupt.load(Ordering::SeqCst),
            batches: self.batches.load(Ordering::SeqCst),
        }
    }

    fn publish(&self, c: &SpoolCounters) {
        let handover = self.handover_dropped.load(Ordering::SeqCst);
        self.recovered.store(c.recovered, Ordering::SeqCst);
        self.sent.store(c.sent, Ordering::SeqCst);
        self.spooled.store(c.len, Ordering::SeqCst);
        self.dropped.store(c.dropped + handover, Ordering::SeqCst);
        self.corrupt.store(c.corrupt, Ordering::SeqCst);
        self.batches.store(c.batches, Ordering::SeqCst);
    }
}

/// The control thread's end: hands transitions to the uplink without blocking.
#[derive(Debug, Clone)]
pub struct UplinkSender {
    tx: SyncSender<Transition>,
    stats: Arc<TransitionStats>,
}

impl UplinkSender {
    /// Hands one transition over; counts it as produced, and as dropped if the
    /// uplink cannot take it right now.
    pub fn send(&self, transition: Transition) {
        self.stats.produced.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(transition) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.handover_dropped.fetch_add(1, Ordering::SeqCst);
                self.stats.dropped.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// What the uplink thread returns when it stops.
#[derive(Debug, Clone, Copy)]
pub struct UplinkReport {
    /// Spool totals at the end.
    pub counters: SpoolCounters,
    /// Transitions lost at shutdown because they could be neither sent nor written to
    /// disk (memory-only spool, sink down).
    pub lost_at_shutdown: u64,
}

/// The running uplink thread.
#[derive(Debug)]
pub struct Uplink {
    handle: JoinHandle<UplinkReport>,
}

impl Uplink {
    /// Starts the uplink thread around an already opened `spool`.
    pub fn start(
        robot_id: String,
        mut spool: Spool,
        mut sink: Box<dyn TransitionSink>,
        batching: &BatchingConfig,
        spool_config: &SpoolConfig,
    ) -> (UplinkSender, Uplink, Arc<TransitionStats>) {
        let stats = Arc::new(TransitionStats::default());
        stats.publish(&spool.counters());
        let capacity = (batching.transitions_per_batch * 4).max(4096);
        let (tx, rx) = sync_channel::<Transition>(capacity);
        let batch_size = batching.transitions_per_batch.max(1);
        let max_latency = Duration::from_millis(batching.max_latency_ms);
        let retry = Duration::from_millis(spool_config.retry_ms);
        let thread_stats = stats.clone();
        let handle = std::thread::Builder::new()
            .name("reflexd-uplink".into())
            .spawn(move || {
                run(
                    &robot_id,
                    &mut spool,
                    sink.as_mut(),
                    rx,
                    batch_size,
                    max_latency,
                    retry,
                    &thread_stats,
                )
            })
            .expect("spawn the uplink thread");
        (
            UplinkSender {
                tx,
                stats: stats.clone(),
            },
            Uplink { handle },
            stats,
        )
    }

    /// Waits for the thread to finish (after every [`UplinkSender`] was dropped).
    pub fn join(self) -> UplinkReport {
        self.handle.join().expect("the uplink thread panicked")
    }
}

/// How long shutdown waits for the learner to acknowledge what was sent.
const FLUSH_AT_SHUTDOWN: Duration = Duration::from_secs(2);

#[allow(clippy::too_many_arguments)]
fn run(
    robot_id: &str,
    spool: &mut Spool,
    sink: &mut dyn TransitionSink,
    rx: Receiver<Transition>,
    batch_size: usize,
    max_latency: Duration,
    retry: Duration,
    stats: &TransitionStats,
) -> UplinkReport {
    let mut batch_seq = 0u64;
    // When the oldest unsent transition arrived (None: the spool is empty).
    let mut oldest: Option<Instant> = (!spool.is_empty()).then(Instant::now);
    let mut sink_down_since: Option<Instant> = None;
    let mut last_attempt: Option<Instant> = None;
    let mut open = true;
    while open {
        let wait = match oldest {
            None => Duration::from_millis(100),
            Some(t) => (t + max_latency).saturating_duration_since(Instant::now()),
        };
        // Poll instead of blocking on the channel: a receiver parked on it turns
        // every send from the control thread into a futex wake-up, paid on the
        // tick's clock (tens of µs on a VM). Polling costs at most POLL of latency.
        std::thread::sleep(wait.clamp(Duration::from_micros(100), POLL));
        let mut received = false;
        loop {
            match rx.try_recv() {
                Ok(t) => {
                    spool.push(t);
                    received = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if received {
            oldest.get_or_insert_with(Instant::now);
        }
        let now = Instant::now();
        let due = !spool.is_empty()
            && (spool.len() >= batch_size as u64
                || oldest.is_some_and(|t| now >= t + max_latency)
                || !open);
        let may_retry =
            !open || sink_down_since.is_none() || last_attempt.is_none_or(|t| now >= t + retry);
        if due && may_retry {
            last_attempt = Some(now);
            // While up, send whole batches and leave a partial one to fill up unless
            // it is old enough (or we are shutting down).
            let flush_partial = oldest.is_some_and(|t| now >= t + max_latency) || !open;
            let full_batches = (spool.len() / batch_size as u64) as usize;
            let max_batches = if flush_partial {
                usize::MAX
            } else {
                full_batches
            };
            match spool.send(sink, robot_id, batch_size, max_batches, &mut batch_seq) {
                Ok(_) => {
                    if sink_down_since.take().is_some() {
                        tracing::info!("transition sink back; spool drained to {}", spool.len());
                    }
                    oldest = (!spool.is_empty()).then_some(now);
                }
                Err(e) => {
                    if sink_down_since.is_none() {
                        tracing::warn!("transition sink down ({e}); spooling");
                        sink_down_since = Some(now);
                    }
                    if !open {
                        break;
                    }
                }
            }
        }
        stats.publish(&spool.counters());
    }
    // Shutdown: what was sent must reach the learner before the process exits...
    if !sink.flush(FLUSH_AT_SHUTDOWN) {
        tracing::warn!(
            "the learner did not acknowledge every sent batch within {FLUSH_AT_SHUTDOWN:?} of shutdown"
        );
    }
    // ...and whatever could not be sent goes to disk (or is reported lost).
    let lost_at_shutdown = spool.persist();
    if lost_at_shutdown > 0 {
        tracing::warn!(
            "{lost_at_shutdown} unsent transitions lost at shutdown ({}; counted as dropped)",
            if spool.on_disk() {
                "the disk spool failed, see above"
            } else {
                "no spool.dir configured"
            }
        );
    }
    stats.publish(&spool.counters());
    UplinkReport {
        counters: spool.counters(),
        lost_at_shutdown,
    }
}
