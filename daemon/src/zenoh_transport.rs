//! The zenoh transport: the [`transport`](crate::transport) traits on zenoh keys
//! (`reflex/<fleet>/<robot>/{obs,action,transitions,status}`, `reflex/<fleet>/policy`)
//! with CDR payloads from `msgs`.
//!
//! Quality of service, chosen per stream:
//!
//! | stream | direction | congestion control | notes |
//! |---|---|---|---|
//! | observations | in | — | bounded ring, oldest dropped when full ([`ZenohTransportOptions::observation_queue`]); undecodable messages counted |
//! | actions | out | `Block`, express | latency first: no batching; blocking only when the link itself is full |
//! | transitions | out | `Block` | refused with [`TransportError::Disconnected`] while no subscriber matches, so the spool keeps them |
//! | status | out | `Drop` | best effort heartbeats |
//! | policies | in | — | small ring, oldest dropped when full (the newest policy is the one that counts); undecodable messages counted |
//!
//! zenoh's `put` succeeds when nobody listens (the sample is just not routed). For
//! transitions that would be silent loss, so [`ZenohTransitions`] asks the publisher's
//! matching status before each batch and reports `Disconnected` when no learner
//! subscribes: the uplink spools the batch and retries. Over TCP a put that returned
//! `Ok` is in the link's ordered, reliable stream; what can still be lost is what sat in
//! zenoh's queues when the link itself broke.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reflex_msgs::codec::WireMessage;
use reflex_msgs::keys;
use reflex_msgs::{ActionCommand, Observation, PolicyUpdate, Status, TransitionBatch};
use zenoh::handlers::{RingChannel, RingChannelHandler};
use zenoh::pubsub::{Publisher, Subscriber};
use zenoh::qos::{CongestionControl, Priority};
use zenoh::sample::Sample;
use zenoh::Wait;

use crate::control::Transports;
use crate::transport::{
    ActionSink, ObservationSource, PolicyMessage, PolicySource, StatusSink, TransitionSink,
    TransportError,
};
use crate::zenoh_link::{cdr_encoding, decode_sample, encode_cdr, has_subscribers};

/// Declares a CDR publisher of `T` on `key` with one stream's quality of service.
fn declare<T: WireMessage>(
    session: &zenoh::Session,
    key: &str,
    congestion: CongestionControl,
    priority: Priority,
    express: bool,
) -> Result<Publisher<'static>, TransportError> {
    session
        .declare_publisher(key.to_owned())
        .encoding(cdr_encoding::<T>())
        .congestion_control(congestion)
        .priority(priority)
        .express(express)
        .wait()
        .map_err(|e| zerr(&format!("declaring publisher on {key}"), e))
}

/// Encodes `msg` and puts it on `publisher`.
fn put<T: WireMessage>(
    publisher: &Publisher<'static>,
    msg: &T,
    what: &str,
) -> Result<(), TransportError> {
    publisher
        .put(encode_cdr(msg)?)
        .wait()
        .map_err(|e| zerr(what, e))
}

/// Queue sizes of the zenoh transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZenohTransportOptions {
    /// Observations kept between two ticks (a full ring drops its oldest; the
    /// loop acts on the newest anyway).
    pub observation_queue: usize,
    /// Policy updates kept while one is being validated (a full ring drops its
    /// oldest: only the newest policy matters).
    pub policy_queue: usize,
}

impl Default for ZenohTransportOptions {
    fn default() -> Self {
        Self {
            observation_queue: 1024,
            policy_queue: 8,
        }
    }
}

fn zerr(what: &str, e: impl std::fmt::Display) -> TransportError {
    TransportError::Other(format!("{what}: {e}"))
}

/// Declares every stream of robot `robot` in fleet `fleet` on `session` and returns
/// them as the daemon's [`Transports`].
pub fn transports(
    session: &zenoh::Session,
    fleet: &str,
    robot: &str,
    options: ZenohTransportOptions,
) -> Result<Transports, TransportError> {
    Ok(Transports {
        observations: Box::new(ZenohObservations::new(
            session,
            &keys::obs_key(fleet, robot),
            options.observation_queue,
        )?),
        actions: Box::new(ZenohActions::new(session, &keys::action_key(fleet, robot))?),
        transitions: Box::new(ZenohTransitions::new(
            session,
            &keys::transitions_key(fleet, robot),
        )?),
        status: Box::new(ZenohStatus::new(session, &keys::status_key(fleet, robot))?),
        policies: Box::new(ZenohPolicies::new(
            session,
            &keys::policy_key(fleet),
            options.policy_queue,
        )?),
    })
}

/// A subscriber on `key` that keeps up to `capacity` samples for polling.
fn ring_subscriber(
    session: &zenoh::Session,
    key: &str,
    capacity: usize,
) -> Result<Subscriber<RingChannelHandler<Sample>>, TransportError> {
    session
        .declare_subscriber(key.to_owned())
        // A ring, not a FIFO: a full FIFO blocks zenoh's receive thread, and
        // with it every other message on that link (observations stall behind
        // policy updates waiting for validation). A full ring drops its oldest.
        .with(RingChannel::new(capacity.max(1)))
        .wait()
        .map_err(|e| zerr(&format!("subscribing to {key}"), e))
}

/// A ring subscriber whose samples decode to `T`; a sample that does not decode is
/// dropped and counted (logged at `warn` for rare messages, `debug` for streams).
struct Decoding<T> {
    subscriber: Subscriber<RingChannelHandler<Sample>>,
    decode_errors: AtomicU64,
    what: &'static str,
    warn: bool,
    _message: std::marker::PhantomData<fn() -> T>,
}

impl<T: WireMessage> Decoding<T> {
    fn new(
        session: &zenoh::Session,
        key: &str,
        capacity: usize,
        what: &'static str,
        warn: bool,
    ) -> Result<Self, TransportError> {
        Ok(Self {
            subscriber: ring_subscriber(session, key, capacity)?,
            decode_errors: AtomicU64::new(0),
            what,
            warn,
            _message: std::marker::PhantomData,
        })
    }

    /// The message in `sample`, or `None` (counted) when it does not decode.
    fn decode(&self, sample: &Sample) -> Option<T> {
        match decode_sample::<T>(sample) {
            Ok(message) => Some(message),
            Err(e) => {
                self.decode_errors.fetch_add(1, Ordering::Relaxed);
                if self.warn {
                    tracing::warn!("dropping {}: {e}", self.what);
                } else {
                    tracing::debug!("dropping {}: {e}", self.what);
                }
                None
            }
        }
    }

    /// The next queued message that decodes, without waiting.
    fn try_next(&self) -> Option<T> {
        while let Ok(Some(sample)) = self.subscriber.try_recv() {
            if let Some(message) = self.decode(&sample) {
                return Some(message);
            }
        }
        None
    }

    fn decode_errors(&self) -> u64 {
        self.decode_errors.load(Ordering::Relaxed)
    }
}

/// Observations from a subscriber on the robot's `obs` key.
pub struct ZenohObservations {
    inner: Decoding<Observation>,
}

impl ZenohObservations {
    /// Subscribes to `key` with a ring of `capacity` samples.
    pub fn new(
        session: &zenoh::Session,
        key: &str,
        capacity: usize,
    ) -> Result<Self, TransportError> {
        Ok(Self {
            inner: Decoding::new(session, key, capacity, "observation", false)?,
        })
    }
}

impl ObservationSource for ZenohObservations {
    fn poll(&mut self, out: &mut Vec<Observation>) -> Result<(), TransportError> {
        while let Some(obs) = self.inner.try_next() {
            out.push(obs);
        }
        Ok(())
    }

    fn decode_errors(&self) -> u64 {
        self.inner.decode_errors()
    }
}

/// Actions on the robot's `action` key: express (no batching), high priority.
pub struct ZenohActions {
    publisher: Publisher<'static>,
}

impl ZenohActions {
    /// Declares the publisher on `key`.
    pub fn new(session: &zenoh::Session, key: &str) -> Result<Self, TransportError> {
        let publisher = declare::<ActionCommand>(
            session,
            key,
            CongestionControl::Block,
            Priority::InteractiveHigh,
            true,
        )?;
        Ok(Self { publisher })
    }
}

impl ActionSink for ZenohActions {
    fn send(&mut self, command: &ActionCommand) -> Result<(), TransportError> {
        put(&self.publisher, command, "sending action")
    }
}

/// Transitions on the robot's `transitions` key: `Block` congestion control, and
/// [`TransportError::Disconnected`] while no subscriber (learner) matches.
pub struct ZenohTransitions {
    publisher: Publisher<'static>,
}

impl ZenohTransitions {
    /// Declares the publisher on `key`.
    pub fn new(session: &zenoh::Session, key: &str) -> Result<Self, TransportError> {
        let publisher = declare::<TransitionBatch>(
            session,
            key,
            CongestionControl::Block,
            Priority::Data,
            false,
        )?;
        Ok(Self { publisher })
    }

    /// Whether a learner (any subscriber on the key) is currently reachable.
    pub fn has_learner(&self) -> Result<bool, TransportError> {
        has_subscribers(&self.publisher)
    }
}

impl TransitionSink for ZenohTransitions {
    fn send(&mut self, batch: &TransitionBatch) -> Result<(), TransportError> {
        if !self.has_learner()? {
            return Err(TransportError::Disconnected(format!(
                "no subscriber on {}",
                self.publisher.key_expr()
            )));
        }
        self.publisher
            .put(encode_cdr(batch)?)
            .wait()
            .map_err(|e| TransportError::Disconnected(format!("sending transitions: {e}")))
    }
}

/// Status heartbeats on the robot's `status` key (best effort).
pub struct ZenohStatus {
    publisher: Publisher<'static>,
}

impl ZenohStatus {
    /// Declares the publisher on `key`.
    pub fn new(session: &zenoh::Session, key: &str) -> Result<Self, TransportError> {
        let publisher =
            declare::<Status>(session, key, CongestionControl::Drop, Priority::Data, false)?;
        Ok(Self { publisher })
    }
}

impl StatusSink for ZenohStatus {
    fn publish(&mut self, status: &Status) -> Result<(), TransportError> {
        put(&self.publisher, status, "publishing status")
    }
}

/// Policy updates from a subscriber on the fleet's `policy` key.
pub struct ZenohPolicies {
    inner: Decoding<PolicyUpdate>,
}

impl ZenohPolicies {
    /// Subscribes to `key` with a ring of `capacity` samples.
    pub fn new(
        session: &zenoh::Session,
        key: &str,
        capacity: usize,
    ) -> Result<Self, TransportError> {
        Ok(Self {
            inner: Decoding::new(session, key, capacity, "policy update", true)?,
        })
    }
}

fn update(update: PolicyUpdate) -> PolicyMessage {
    PolicyMessage::Update(Box::new(update))
}

impl PolicySource for ZenohPolicies {
    fn poll(&mut self) -> Option<PolicyMessage> {
        self.inner.try_next().map(update)
    }

    fn wait(&mut self, timeout: Duration) -> Option<PolicyMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.inner.subscriber.recv_timeout(left) {
                Ok(Some(sample)) => {
                    if let Some(message) = self.inner.decode(&sample) {
                        return Some(update(message));
                    }
                }
                Ok(None) => return None,
                Err(_) => {
                    // The subscriber is gone (session closing): nothing will come.
                    std::thread::sleep(left);
                    return None;
                }
            }
        }
    }

    fn decode_errors(&self) -> u64 {
        self.inner.decode_errors()
    }
}
