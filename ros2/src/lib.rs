//! reflex-ros2: one ROS 2 node on [`ros2_client`] (DDS in pure Rust via RustDDS; no
//! ROS 2 installation at build or run time) with typed publishers and subscriptions
//! for `reflex_msgs` and the standard messages in [`reflex_msgs::ros_std`].
//!
//! Shared by `reflexd` (its ROS 2 transport), `reflex-sim serve --transport ros2` and
//! the learner. Everything here is blocking and cheap to call from a control loop:
//! [`Sub::drain`] never waits, [`Pub::publish`] waits at most the topic's
//! `when_full` time. DDS discovery and the node's graph bookkeeping run on
//! RustDDS's threads and one spinner thread per [`Link`].
//!
//! Names follow rcl: topic `/a/b` is DDS topic `rt/a/b`; message `pkg/msg/T` is DDS
//! type `pkg::msg::dds_::T_`. The domain is explicit ([`domain_from_env`] reads
//! `ROS_DOMAIN_ID`, which [`ros2_client::Context::new`] would not).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ros2_client::dds::rustdds;
use ros2_client::qos::{Durability, History, Reliability, WhenFull};
use ros2_client::{
    Context, ContextOptions, MessageTypeName, Name, Node, NodeName, NodeOptions, Publisher,
    QosProfile, ReadError, Subscription, WriteError,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use ros2_client;

/// Why a ROS 2 operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Ros2Error {
    /// A node, namespace or topic name ROS 2 refuses.
    #[error("invalid ROS 2 name {name:?}: {reason}")]
    Name {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// DDS refused to create something (participant, topic, reader, writer).
    #[error("creating {what}: {reason}")]
    Create {
        /// What was being created.
        what: String,
        /// DDS's reason.
        reason: String,
    },
    /// `ROS_DOMAIN_ID` is set but not a domain id.
    #[error("ROS_DOMAIN_ID = {0:?}: expected an integer in 0..=232")]
    DomainEnv(String),
}

/// Quality of service of one topic, in the terms ROS 2 users set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qos {
    /// Reliable (true) or best effort.
    pub reliable: bool,
    /// Transient-local (true) or volatile.
    pub transient_local: bool,
    /// Keep-last depth; 0 = keep all (a reader then never overwrites samples the
    /// application has not taken yet: what a learner needs for transitions).
    pub depth: usize,
    /// Reliable writers: how long `publish` may wait for room in the send window
    /// (zero: fail at once).
    pub max_blocking: Duration,
}

impl Qos {
    /// ros2-client's profile for this QoS.
    pub fn profile(&self) -> QosProfile {
        let reliability = if self.reliable {
            Reliability::Reliable {
                when_full: if self.max_blocking.is_zero() {
                    WhenFull::Fail
                } else {
                    WhenFull::Wait(self.max_blocking)
                },
            }
        } else {
            Reliability::BestEffort
        };
        QosProfile::subscription_default()
            .reliability(reliability)
            .durability(if self.transient_local {
                Durability::TransientLocal
            } else {
                Durability::Volatile
            })
            .history(if self.depth == 0 {
                History::KeepAll
            } else {
                History::KeepLast { depth: self.depth }
            })
    }
}

/// The domain in `ROS_DOMAIN_ID`, 0 when unset or empty.
pub fn domain_from_env() -> Result<u16, Ros2Error> {
    match std::env::var("ROS_DOMAIN_ID") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|d| *d <= 232)
            .ok_or(Ros2Error::DomainEnv(v)),
        _ => Ok(0),
    }
}

/// A ROS 2 message type: its interface package and name.
pub trait Message: Serialize + DeserializeOwned + Send + 'static {
    /// The `pkg`/`Name` pair.
    fn type_name() -> MessageTypeName;
}

macro_rules! reflex_message {
    ($($ty:ty),*) => {$(
        impl Message for $ty {
            fn type_name() -> MessageTypeName {
                MessageTypeName::new(
                    reflex_msgs::ROS_PACKAGE,
                    <$ty as reflex_msgs::WireMessage>::NAME,
                )
            }
        }
    )*};
}
reflex_message!(
    reflex_msgs::Observation,
    reflex_msgs::ActionCommand,
    reflex_msgs::TransitionBatch,
    reflex_msgs::Status,
    reflex_msgs::PolicyUpdate,
    reflex_msgs::StepInfo
);

macro_rules! std_message {
    ($($ty:ty),*) => {$(
        impl Message for $ty {
            fn type_name() -> MessageTypeName {
                use reflex_msgs::ros_std::RosMessage;
                MessageTypeName::new(<$ty>::PACKAGE, <$ty>::NAME)
            }
        }
    )*};
}
std_message!(
    reflex_msgs::ros_std::JointState,
    reflex_msgs::ros_std::Float64MultiArray,
    reflex_msgs::ros_std::Twist,
    reflex_msgs::ros_std::StringMsg
);

/// One ROS 2 node and the thread that spins it.
pub struct Link {
    node: Arc<Mutex<Node>>,
    fqn: String,
    domain: u16,
    spinner: Option<std::thread::JoinHandle<()>>,
    _context: Context,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("node", &self.fqn)
            .field("domain", &self.domain)
            .finish()
    }
}

impl Link {
    /// Joins DDS domain `domain` as node `name` in namespace `namespace` (`/` or
    /// `/a/b`).
    pub fn open(domain: u16, namespace: &str, name: &str) -> Result<Self, Ros2Error> {
        let node_name = NodeName::new(namespace, name).map_err(|e| Ros2Error::Name {
            name: format!("{namespace}/{name}"),
            reason: format!("{e:?}"),
        })?;
        let context = Context::with_options(ContextOptions::new().domain_id(domain))
            .map_err(|e| create("DDS participant", e))?;
        // rosout and the parameter services are left out: reflexd's parameters come
        // from its file, and its logs go to stderr (journald under systemd).
        let mut node = context
            .new_node(
                node_name,
                NodeOptions::new()
                    .enable_rosout(false)
                    .start_parameter_services(false),
            )
            .map_err(|e| create("node", e))?;
        let fqn = node.fully_qualified_name();
        let spinner = node.spinner().map_err(|e| create("node spinner", e))?;
        let thread = std::thread::Builder::new()
            .name("ros2-spin".into())
            .spawn(move || {
                if let Err(e) = futures::executor::block_on(spinner.spin()) {
                    tracing::warn!("ROS 2 spinner stopped: {e:?}");
                }
            })
            .map_err(|e| create("spinner thread", e))?;
        tracing::info!(node = %fqn, domain, "ROS 2 node up");
        Ok(Self {
            node: Arc::new(Mutex::new(node)),
            fqn,
            domain,
            spinner: Some(thread),
            _context: context,
        })
    }

    /// The node's fully qualified name (`/ns/name`).
    pub fn fully_qualified_name(&self) -> &str {
        &self.fqn
    }

    /// The DDS domain.
    pub fn domain(&self) -> u16 {
        self.domain
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Node> {
        // A panic elsewhere while holding the node poisons it; the node itself is
        // still consistent (ros2-client keeps its own locks), so go on.
        self.node.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node, locked, and the ROS topic `topic` of `T` declared on it.
    fn node_topic<T: Message>(
        &self,
        topic: &str,
        profile: &QosProfile,
    ) -> Result<(std::sync::MutexGuard<'_, Node>, rustdds::Topic), Ros2Error> {
        let name = topic_name(topic)?;
        let node = self.lock();
        let t = node
            .create_topic(&name, T::type_name(), profile)
            .map_err(|e| create(&format!("topic {topic}"), e))?;
        Ok((node, t))
    }

    /// The DDS topic `rt<topic>` of `T` on the participant (for the RustDDS-made
    /// endpoints).
    fn dds_topic<T: Message>(
        &self,
        topic: &str,
        policies: &rustdds::QosPolicies,
    ) -> Result<rustdds::Topic, Ros2Error> {
        topic_name(topic)?;
        self._context
            .domain_participant()
            .create_topic(
                format!("rt{topic}"),
                T::type_name().dds_msg_type(),
                policies,
                rustdds::TopicKind::NoKey,
            )
            .map_err(|e| create(&format!("topic {topic}"), e))
    }

    /// A publisher of `T` on the absolute topic `topic` (`/a/b`).
    pub fn publisher<T: Message>(&self, topic: &str, qos: Qos) -> Result<Pub<T>, Ros2Error> {
        let profile = qos.profile();
        let (mut node, t) = self.node_topic::<T>(topic, &profile)?;
        let publisher = node
            .create_publisher::<T>(&t, Some(profile))
            .map_err(|e| create(&format!("publisher on {topic}"), e))?;
        Ok(Pub {
            publisher,
            node: self.node.clone(),
            topic: topic.to_string(),
        })
    }

    /// A subscription to `T` on the absolute topic `topic`.
    pub fn subscription<T: Message>(&self, topic: &str, qos: Qos) -> Result<Sub<T>, Ros2Error> {
        let profile = qos.profile();
        let (mut node, t) = self.node_topic::<T>(topic, &profile)?;
        let subscription = node
            .create_subscription::<T>(&t, Some(profile))
            .map_err(|e| create(&format!("subscription to {topic}"), e))?;
        Ok(Sub {
            subscription,
            topic: topic.to_string(),
            errors: 0,
        })
    }
}

impl Link {
    /// A reliable publisher of `T` on `topic` that can wait until every matched
    /// subscription has acknowledged what it wrote ([`AckPub::flush`]): what reflexd
    /// streams to the learner must not be lost when the daemon exits right after
    /// sending. It is a DDS writer made through RustDDS directly (ros2-client's
    /// `Publisher` does not expose acknowledgments), so `ros2 node info` does not list
    /// it under the node; `ros2 topic` tools and subscriptions see it as usual.
    pub fn acked_publisher<T: Message>(
        &self,
        topic: &str,
        qos: Qos,
    ) -> Result<AckPub<T>, Ros2Error> {
        let policies = rustdds::QosPolicies::from(&qos.profile());
        let dds_topic = self.dds_topic::<T>(topic, &policies)?;
        let publisher = self
            ._context
            .domain_participant()
            .create_publisher(&policies)
            .map_err(|e| create(&format!("DDS publisher for {topic}"), e))?;
        let writer = publisher
            .create_datawriter_no_key_cdr::<T>(&dds_topic, Some(policies))
            .map_err(|e| create(&format!("writer on {topic}"), e))?;
        Ok(AckPub {
            writer,
            node: self.node.clone(),
            topic: topic.to_string(),
        })
    }
}

/// A DDS writer seen on the domain (any vendor), with the QoS it advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterInfo {
    /// ROS topic name (`/a/b`; the DDS name without its `rt` prefix).
    pub topic: String,
    /// DDS type name (`pkg::msg::dds_::T_`).
    pub type_name: String,
    /// Advertised reliability (`None`: not advertised, i.e. the DDS default).
    pub reliable: Option<bool>,
    /// Advertised durability: transient local or stronger (`None`: not advertised).
    pub transient_local: Option<bool>,
}

impl Link {
    /// Every writer discovered on the domain so far, this process's own included
    /// (what `ros2 topic info -v` shows about publishers).
    pub fn discovered_writers(&self) -> Vec<WriterInfo> {
        use rustdds::policy::{Durability as D, Reliability as R};
        self._context
            .domain_participant()
            .discovered_writers()
            .into_iter()
            .map(|w| {
                let t = w.publication_topic_data;
                WriterInfo {
                    topic: t
                        .topic_name
                        .strip_prefix("rt")
                        .unwrap_or(&t.topic_name)
                        .to_string(),
                    type_name: t.type_name,
                    reliable: t.reliability.map(|r| matches!(r, R::Reliable { .. })),
                    transient_local: t.durability.map(|d| !matches!(d, D::Volatile)),
                }
            })
            .collect()
    }

    /// The ROS topics on which some writer publishes `T`, sorted, without repeats.
    pub fn topics_of<T: Message>(&self) -> Vec<String> {
        let ty = T::type_name().dds_msg_type();
        let mut topics: Vec<String> = self
            .discovered_writers()
            .into_iter()
            .filter(|w| w.type_name == ty)
            .map(|w| w.topic)
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }
}

impl Link {
    /// A keep-all subscription to `T` on `topic` whose reader cache holds up to
    /// `max_samples` messages not yet taken (a DDS resource limit). RustDDS otherwise
    /// caps a reader's cache at 64 samples for keep-all and at the depth for
    /// keep-last, and evicts the oldest beyond that even from a reliable reader that
    /// has acknowledged them: a learner that pauses for a moment would lose batches
    /// (a benchmark lost 65% of a flood that way). ros2-client's QoS has no resource
    /// limits, so this reader is made through RustDDS directly.
    pub fn deep_subscription<T: Message>(
        &self,
        topic: &str,
        qos: Qos,
        max_samples: usize,
    ) -> Result<DeepSub<T>, Ros2Error> {
        let max = i32::try_from(max_samples.max(1)).unwrap_or(i32::MAX);
        let policies = rustdds::QosPolicies::from(&Qos { depth: 0, ..qos }.profile()).modify_by(
            &rustdds::QosPolicyBuilder::new()
                .resource_limits(rustdds::policy::ResourceLimits {
                    max_samples: max,
                    max_instances: 1,
                    max_samples_per_instance: max,
                })
                .build(),
        );
        let dds_topic = self.dds_topic::<T>(topic, &policies)?;
        let subscriber = self
            ._context
            .domain_participant()
            .create_subscriber(&policies)
            .map_err(|e| create(&format!("DDS subscriber for {topic}"), e))?;
        let reader = subscriber
            .create_simple_datareader_no_key::<T, rustdds::CDRDeserializerAdapter<T>>(
                &dds_topic,
                Some(policies),
            )
            .map_err(|e| create(&format!("reader on {topic}"), e))?;
        Ok(DeepSub {
            reader,
            topic: topic.to_string(),
            errors: 0,
        })
    }
}

/// A keep-all subscription with a deep reader cache ([`Link::deep_subscription`]).
pub struct DeepSub<T: Message> {
    reader: rustdds::no_key::SimpleDataReaderCdr<T>,
    topic: String,
    errors: u64,
}

impl<T: Message> DeepSub<T> {
    /// Moves every message received so far into `out`, oldest first; undecodable
    /// ones are counted and dropped.
    pub fn drain(&mut self, out: &mut Vec<T>) {
        self.reader.drain_read_notifications();
        loop {
            match self.reader.try_take_one() {
                Ok(Some(change)) => out.push(change.sample),
                Ok(None) => return,
                Err(e) => {
                    self.errors += 1;
                    tracing::debug!(topic = %self.topic, "dropping a message: {e}");
                    if !matches!(e, rustdds::dds::ReadError::Deserialization { .. }) {
                        return;
                    }
                }
            }
        }
    }

    /// Messages dropped because they did not decode.
    pub fn errors(&self) -> u64 {
        self.errors
    }
}

/// How long [`AckPub::flush`] stays up after the acknowledgments.
pub const FLUSH_LINGER: Duration = Duration::from_millis(150);

/// A reliable publisher whose writes can be waited on until acknowledged.
pub struct AckPub<T: Message> {
    writer: rustdds::no_key::DataWriterCdr<T>,
    node: Arc<Mutex<Node>>,
    topic: String,
}

impl<T: Message> AckPub<T> {
    /// Publishes `msg` (waits up to the QoS's `max_blocking` for room).
    pub fn publish(&self, msg: T) -> Result<(), PublishError> {
        self.writer.write(msg, None).map_err(|e| match e {
            rustdds::dds::WriteError::WouldBlock { .. } => {
                PublishError::WouldBlock(self.topic.clone())
            }
            other => PublishError::Other {
                topic: self.topic.clone(),
                reason: other.to_string(),
            },
        })
    }

    /// Subscriptions discovered on this topic now (by name; QoS compatibility is
    /// checked when they match).
    pub fn subscriptions(&self) -> usize {
        let node = self.node.lock().unwrap_or_else(|p| p.into_inner());
        node.subscription_count(&self.topic)
    }

    /// Waits up to `max_wait` until every matched subscription has acknowledged
    /// everything written, then [`FLUSH_LINGER`] more; `true` when they have.
    ///
    /// The linger is there because RustDDS 0.15.1 was seen to report a last sample
    /// acknowledged 0.5 ms after writing it, and the subscriber never got it when the
    /// process exited right then (tests/tests/ros2_loop.rs loses its final batch
    /// without the linger); staying up a little longer lets the writer's heartbeat and
    /// repair exchange finish.
    pub fn flush(&self, max_wait: Duration) -> bool {
        let acked = self
            .writer
            .wait_for_acknowledgments(max_wait)
            .unwrap_or(false);
        std::thread::sleep(FLUSH_LINGER);
        acked
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.lock().stop_spinner();
        if let Some(t) = self.spinner.take() {
            let _ = t.join();
        }
    }
}

fn create(what: &str, e: impl std::fmt::Debug) -> Ros2Error {
    Ros2Error::Create {
        what: what.to_string(),
        reason: format!("{e:?}"),
    }
}

fn topic_name(topic: &str) -> Result<Name, Ros2Error> {
    if !topic.starts_with('/') {
        return Err(Ros2Error::Name {
            name: topic.to_string(),
            reason: "expected an absolute topic name (resolve ~/ and relative names first)".into(),
        });
    }
    Name::parse(topic).map_err(|e| Ros2Error::Name {
        name: topic.to_string(),
        reason: format!("{e:?}"),
    })
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A reliable writer's send window stayed full for its `max_blocking` time (slow
    /// or gone subscribers): the message was not sent.
    #[error("publish on {0}: send window full")]
    WouldBlock(String),
    /// Anything else.
    #[error("publish on {topic}: {reason}")]
    Other {
        /// The topic.
        topic: String,
        /// What DDS said.
        reason: String,
    },
}

/// A typed publisher.
pub struct Pub<T: Message> {
    publisher: Publisher<T>,
    node: Arc<Mutex<Node>>,
    topic: String,
}

impl<T: Message> Pub<T> {
    /// Publishes `msg`.
    pub fn publish(&self, msg: T) -> Result<(), PublishError> {
        self.publisher.publish(msg).map_err(|e| match e {
            WriteError::WouldBlock { .. } => PublishError::WouldBlock(self.topic.clone()),
            other => PublishError::Other {
                topic: self.topic.clone(),
                reason: other.to_string(),
            },
        })
    }

    /// Subscriptions matched to this publisher now (discovery and QoS compatible).
    pub fn subscriptions(&self) -> usize {
        let node = self.node.lock().unwrap_or_else(|p| p.into_inner());
        self.publisher.get_subscription_count(&node)
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

/// A typed subscription that counts what fails to decode.
pub struct Sub<T: Message> {
    subscription: Subscription<T>,
    topic: String,
    errors: u64,
}

impl<T: Message> Sub<T> {
    /// Moves every message received so far into `out`, oldest first, without waiting.
    /// Messages that fail to decode are counted ([`Sub::errors`]) and dropped.
    pub fn drain(&mut self, out: &mut Vec<T>) {
        loop {
            match self.subscription.take() {
                Ok(Some((msg, _info))) => out.push(msg),
                Ok(None) => return,
                Err(ReadError::Deserialization { reason }) => {
                    self.errors += 1;
                    tracing::debug!(topic = %self.topic, "dropping an undecodable message: {reason}");
                }
                Err(e) => {
                    self.errors += 1;
                    tracing::warn!(topic = %self.topic, "reading: {e}");
                    return;
                }
            }
        }
    }

    /// Messages dropped because they did not decode, since the start.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}
