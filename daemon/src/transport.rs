//! Transports: how observations come in and actions, transitions, status and policies
//! move, as traits, with in-process implementations ([`inproc`]) on channels.
//!
//! A network transport (zenoh, ROS 2) implements the same traits on top of the wire
//! codec; a message that does not decode is counted ([`ObservationSource::decode_errors`])
//! and dropped, never a panic.

use std::path::PathBuf;
use std::time::Duration;

use reflex_msgs::{ActionCommand, Observation, PolicyUpdate, Status, TransitionBatch};

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The other end is gone or unreachable (for transitions: they are spooled).
    #[error("transport disconnected: {0}")]
    Disconnected(String),
    /// The message is larger than the wire allows: it can never be sent as it
    /// is (a transition batch is sent in smaller ones instead).
    #[error("message too large for the wire: {0}")]
    TooLarge(String),
    /// Anything else the transport reports.
    #[error("transport error: {0}")]
    Other(String),
}

/// Where observations come from (the robot's sensors, or a simulator).
pub trait ObservationSource: Send {
    /// Moves every observation received since the last call into `out`, oldest
    /// first, without blocking. The control loop acts on the newest only, but uses the
    /// older ones to close transitions (a terminal observation followed at once by the
    /// next episode's first must not be lost).
    fn poll(&mut self, out: &mut Vec<Observation>) -> Result<(), TransportError>;

    /// Incoming messages that failed to decode, total since start.
    fn decode_errors(&self) -> u64 {
        0
    }
}

/// Where actions go (the robot's actuators, or a simulator).
pub trait ActionSink: Send {
    /// Sends one action command.
    fn send(&mut self, command: &ActionCommand) -> Result<(), TransportError>;
}

/// Where transitions go (the learner). It may fail at any time: the spool keeps what
/// could not be sent.
pub trait TransitionSink: Send {
    /// Sends one batch; an error means the batch was not delivered.
    fn send(&mut self, batch: &TransitionBatch) -> Result<(), TransportError>;

    /// At shutdown: waits up to `max_wait` until what was sent has reached the
    /// learner (a transport that hands batches over asynchronously must not lose
    /// them when the daemon exits). `true` when everything is delivered; the default
    /// has nothing in flight.
    fn flush(&mut self, max_wait: Duration) -> bool {
        let _ = max_wait;
        true
    }
}

/// Where status heartbeats go.
pub trait StatusSink: Send {
    /// Publishes one heartbeat (best effort).
    fn publish(&mut self, status: &Status) -> Result<(), TransportError>;
}

/// A policy offered to the daemon.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyMessage {
    /// A `PolicyUpdate` from the learner: verified (sha256, signature) before loading.
    Update(Box<PolicyUpdate>),
    /// The bytes of a policy file (a local, trusted operator action).
    File {
        /// Where the bytes came from (for logs).
        path: PathBuf,
        /// The file's contents.
        bytes: Vec<u8>,
    },
}

/// Where new policies come from.
pub trait PolicySource: Send {
    /// The next offered policy, if one arrived; never blocks.
    fn poll(&mut self) -> Option<PolicyMessage>;

    /// The next offered policy, waiting up to `timeout` for one (the swap thread waits
    /// here between its checks of the policy file and of its stop flag). The default
    /// polls, sleeps `timeout` and polls again; a source that can block on its queue
    /// returns as soon as a policy arrives, so an update is not held back by a poll
    /// period.
    fn wait(&mut self, timeout: Duration) -> Option<PolicyMessage> {
        if let Some(message) = self.poll() {
            return Some(message);
        }
        std::thread::sleep(timeout);
        self.poll()
    }

    /// Incoming messages that failed to decode, total since start.
    fn decode_errors(&self) -> u64 {
        0
    }
}

/// A transport that carries nothing: actions and status are discarded, no policy ever
/// arrives. Useful where one side is not wired.
#[derive(Debug, Default, Clone, Copy)]
pub struct Null;

impl ActionSink for Null {
    fn send(&mut self, _: &ActionCommand) -> Result<(), TransportError> {
        Ok(())
    }
}

impl StatusSink for Null {
    fn publish(&mut self, _: &Status) -> Result<(), TransportError> {
        Ok(())
    }
}

impl PolicySource for Null {
    fn poll(&mut self) -> Option<PolicyMessage> {
        None
    }
}

impl ObservationSource for Null {
    fn poll(&mut self, _: &mut Vec<Observation>) -> Result<(), TransportError> {
        Ok(())
    }
}

/// In-process transports on `std::sync::mpsc` channels: the daemon's side implements
/// the traits, the other side is a plain channel end for a test, a simulator thread or
/// the trainer's local loop.
pub mod inproc {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender, TryRecvError};
    use std::sync::Arc;

    use super::*;

    /// The daemon's end of an observation channel.
    #[derive(Debug)]
    pub struct ObservationReceiver(Receiver<Observation>);

    /// An observation channel: send observations into the first end.
    pub fn observations() -> (Sender<Observation>, ObservationReceiver) {
        let (tx, rx) = channel();
        (tx, ObservationReceiver(rx))
    }

    impl ObservationSource for ObservationReceiver {
        fn poll(&mut self, out: &mut Vec<Observation>) -> Result<(), TransportError> {
            loop {
                match self.0.try_recv() {
                    Ok(obs) => out.push(obs),
                    // A closed channel just means no more observations (the watchdog
                    // notices).
                    Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => return Ok(()),
                }
            }
        }
    }

    /// The daemon's end of an action channel.
    #[derive(Debug, Clone)]
    pub struct ActionSender(Sender<ActionCommand>);

    /// An action channel: actions come out of the second end.
    pub fn actions() -> (ActionSender, Receiver<ActionCommand>) {
        let (tx, rx) = channel();
        (ActionSender(tx), rx)
    }

    impl ActionSink for ActionSender {
        fn send(&mut self, command: &ActionCommand) -> Result<(), TransportError> {
            self.0
                .send(command.clone())
                .map_err(|_| TransportError::Disconnected("action receiver dropped".into()))
        }
    }

    /// A switch that takes an in-process link down and up again (for outage tests).
    #[derive(Debug, Clone, Default)]
    pub struct Link {
        down: Arc<AtomicBool>,
        attempts: Arc<AtomicU64>,
    }

    impl Link {
        /// Takes the link down: sends fail until [`Link::up`].
        pub fn down(&self) {
            self.down.store(true, Ordering::SeqCst);
        }
        /// Brings the link back.
        pub fn up(&self) {
            self.down.store(false, Ordering::SeqCst);
        }
        /// Whether the link is up.
        pub fn is_up(&self) -> bool {
            !self.down.load(Ordering::SeqCst)
        }
        /// Send attempts so far (successful or not).
        pub fn attempts(&self) -> u64 {
            self.attempts.load(Ordering::SeqCst)
        }
    }

    /// The daemon's end of a transition channel, with a [`Link`] switch.
    #[derive(Debug)]
    pub struct TransitionSender {
        tx: Sender<TransitionBatch>,
        link: Link,
    }

    /// A transition channel: batches come out of the receiver; the [`Link`] simulates
    /// outages.
    pub fn transitions() -> (TransitionSender, Receiver<TransitionBatch>, Link) {
        let (tx, rx) = channel();
        let link = Link::default();
        (
            TransitionSender {
                tx,
                link: link.clone(),
            },
            rx,
            link,
        )
    }

    impl TransitionSink for TransitionSender {
        fn send(&mut self, batch: &TransitionBatch) -> Result<(), TransportError> {
            self.link.attempts.fetch_add(1, Ordering::SeqCst);
            if !self.link.is_up() {
                return Err(TransportError::Disconnected("link down".into()));
            }
            self.tx
                .send(batch.clone())
                .map_err(|_| TransportError::Disconnected("transition receiver dropped".into()))
        }
    }

    /// The daemon's end of a status channel.
    #[derive(Debug, Clone)]
    pub struct StatusSender(Sender<Status>);

    /// A status channel: heartbeats come out of the second end.
    pub fn status() -> (StatusSender, Receiver<Status>) {
        let (tx, rx) = channel();
        (StatusSender(tx), rx)
    }

    impl StatusSink for StatusSender {
        fn publish(&mut self, status: &Status) -> Result<(), TransportError> {
            self.0
                .send(status.clone())
                .map_err(|_| TransportError::Disconnected("status receiver dropped".into()))
        }
    }

    /// The daemon's end of a policy channel.
    #[derive(Debug)]
    pub struct PolicyReceiver(Receiver<PolicyMessage>);

    /// A policy channel: offer policies into the first end.
    pub fn policies() -> (Sender<PolicyMessage>, PolicyReceiver) {
        let (tx, rx) = channel();
        (tx, PolicyReceiver(rx))
    }

    impl PolicySource for PolicyReceiver {
        fn poll(&mut self) -> Option<PolicyMessage> {
            self.0.try_recv().ok()
        }

        fn wait(&mut self, timeout: Duration) -> Option<PolicyMessage> {
            match self.0.recv_timeout(timeout) {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    // Nobody can offer policies any more: wait as the default would.
                    std::thread::sleep(timeout);
                    None
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn observation_source_returns_all_in_order() {
            let (tx, mut rx) = observations();
            let mut out = Vec::new();
            rx.poll(&mut out).unwrap();
            assert!(out.is_empty());
            for seq in 0..3 {
                tx.send(Observation {
                    seq,
                    ..Observation::default()
                })
                .unwrap();
            }
            rx.poll(&mut out).unwrap();
            assert_eq!(out.iter().map(|o| o.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
            drop(tx);
            out.clear();
            rx.poll(&mut out).unwrap();
            assert!(out.is_empty());
        }

        #[test]
        fn transition_link_outage() {
            let (mut tx, rx, link) = transitions();
            let batch = TransitionBatch::default();
            tx.send(&batch).unwrap();
            link.down();
            assert!(tx.send(&batch).is_err());
            link.up();
            tx.send(&batch).unwrap();
            assert_eq!(rx.try_iter().count(), 2);
            assert_eq!(link.attempts(), 3);
        }
    }
}
