//! The ROS 2 transport: reflexd as a ROS 2 node (`[transport.ros2]`), the
//! [`transport`](crate::transport) traits on ROS 2 topics through [`reflex_ros2`].
//!
//! | topic (default) | type | direction | QoS (default) |
//! |---|---|---|---|
//! | `~/observation` | `reflex_msgs/msg/Observation` | in | best effort, depth 5 |
//! | or `/joint_states` | `sensor_msgs/msg/JointState` + `~/step_info` `reflex_msgs/msg/StepInfo` | in | best effort, depth 5 |
//! | or `~/observation_array` | `std_msgs/msg/Float64MultiArray` + `~/step_info` | in | best effort, depth 5 |
//! | `~/action` | `reflex_msgs/msg/ActionCommand` | out | reliable, depth 10 |
//! | or `~/commands` | `std_msgs/msg/Float64MultiArray` | out | reliable, depth 10 |
//! | or `/cmd_vel` | `geometry_msgs/msg/Twist` | out | reliable, depth 10 |
//! | `~/transitions` | `reflex_msgs/msg/TransitionBatch` | out | reliable, depth 100 |
//! | `~/status` | `reflex_msgs/msg/Status` | out | reliable, transient local, depth 1 |
//! | `~/policy_update` | `reflex_msgs/msg/PolicyUpdate` | in | reliable, depth 4 |
//!
//! Transitions are refused with [`TransportError::Disconnected`] while no subscription
//! matches and when the reliable send window stays full, so the uplink spools them
//! instead of losing them. Incoming messages that do not decode, carry a newer
//! `wire_version`, lack a configured joint, or wait in vain for their StepInfo are
//! counted in `decode_errors` and dropped.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use reflex_msgs::ros_std::{Float64MultiArray, JointState, Twist};
use reflex_msgs::{
    Action, ActionCommand, Observation, PolicyUpdate, Status, StepInfo, TransitionBatch,
    WireMessage, WIRE_VERSION,
};
pub use reflex_ros2::Link;
use reflex_ros2::{AckPub, Pub, PublishError, Sub};

use crate::config::Config;
use crate::control::Transports;
use crate::ros2_config::{
    ActionSinkKind, JointField, ObservationSourceKind, Qos, ACTION_QOS, POLICY_QOS, SENSOR_QOS,
    STATUS_QOS, TRANSITIONS_QOS,
};
use crate::transport::{
    ActionSink, ObservationSource, PolicyMessage, PolicySource, StatusSink, TransitionSink,
    TransportError,
};

fn err(e: impl std::fmt::Display) -> TransportError {
    TransportError::Other(e.to_string())
}

/// How long a reliable writer may wait for room: transitions may wait (the uplink
/// thread), actions and status never block the control loop.
fn qos(q: Qos, max_blocking: Duration) -> reflex_ros2::Qos {
    reflex_ros2::Qos {
        reliable: q.reliable,
        transient_local: q.transient_local,
        depth: q.depth,
        max_blocking,
    }
}

/// Opens the node `[transport.ros2]` describes.
pub fn open(config: &Config) -> Result<Link, TransportError> {
    let r = &config.transport.ros2;
    let domain = if r.domain_id < 0 {
        reflex_ros2::domain_from_env().map_err(err)?
    } else {
        r.domain_id as u16
    };
    Link::open(domain, &r.namespace, &r.node_name(&config.robot_id)).map_err(err)
}

/// Declares every topic of the daemon on `link` and returns them as its
/// [`Transports`].
pub fn transports(link: &Link, config: &Config) -> Result<Transports, TransportError> {
    let r = &config.transport.ros2;
    let robot = config.robot_id.as_str();
    let topic = |t: &str| r.resolve(robot, t);
    let q = &r.qos;
    let observations: Box<dyn ObservationSource> = match r.observation.source {
        ObservationSourceKind::Reflex => Box::new(Ros2Observations {
            sub: link
                .subscription(
                    &topic(r.observation.topic()),
                    qos(q.observation.apply(SENSOR_QOS), Duration::ZERO),
                )
                .map_err(err)?,
            buf: Vec::new(),
            refused: 0,
        }),
        kind => Box::new(JoinedObservations::new(link, config, kind)?),
    };
    let actions: Box<dyn ActionSink> = {
        let t = topic(r.action.topic());
        let aq = qos(q.action.apply(ACTION_QOS), Duration::ZERO);
        match r.action.sink {
            ActionSinkKind::Reflex => {
                Box::new(link.publisher::<ActionCommand>(&t, aq).map_err(err)?)
            }
            ActionSinkKind::Float64MultiArray => {
                Box::new(link.publisher::<Float64MultiArray>(&t, aq).map_err(err)?)
            }
            ActionSinkKind::Twist => Box::new(TwistActions {
                publisher: link.publisher(&t, aq).map_err(err)?,
                fields: r
                    .action
                    .twist_fields
                    .iter()
                    .map(|f| twist_index(f))
                    .collect::<Result<_, _>>()?,
            }),
        }
    };
    Ok(Transports {
        observations,
        actions,
        transitions: Box::new(Ros2Transitions(
            link.acked_publisher(
                &topic("~/transitions"),
                qos(
                    q.transitions.apply(TRANSITIONS_QOS),
                    Duration::from_millis(100),
                ),
            )
            .map_err(err)?,
        )),
        status: Box::new(Ros2Status(
            link.publisher(
                &topic("~/status"),
                qos(q.status.apply(STATUS_QOS), Duration::ZERO),
            )
            .map_err(err)?,
        )),
        policies: Box::new(Ros2Policies {
            sub: link
                .subscription(
                    &topic("~/policy_update"),
                    qos(q.policy_update.apply(POLICY_QOS), Duration::ZERO),
                )
                .map_err(err)?,
            buf: VecDeque::new(),
            scratch: Vec::new(),
            refused: 0,
        }),
    })
}

/// Whether a decoded `reflex_msgs` message is one this build can read (a newer
/// `wire_version` may mean fields it would misread).
fn readable<T: WireMessage>(msg: &T) -> bool {
    (1..=WIRE_VERSION).contains(&msg.wire_version())
}

/// `reflex_msgs/msg/Observation` in.
struct Ros2Observations {
    sub: Sub<Observation>,
    buf: Vec<Observation>,
    refused: u64,
}

impl ObservationSource for Ros2Observations {
    fn poll(&mut self, out: &mut Vec<Observation>) -> Result<(), TransportError> {
        self.sub.drain(&mut self.buf);
        for obs in self.buf.drain(..) {
            if readable(&obs) {
                out.push(obs);
            } else {
                self.refused += 1;
            }
        }
        Ok(())
    }

    fn decode_errors(&self) -> u64 {
        self.sub.errors() + self.refused
    }
}

/// A sensor message's values, waiting for its StepInfo.
#[derive(Debug)]
struct Pending {
    stamp_ns: u64,
    values: Vec<f32>,
    since: Instant,
}

/// Joins sensor messages with their `StepInfo`s into [`Observation`]s and numbers
/// them (seq, episode, step): pure bookkeeping, no I/O.
#[derive(Debug)]
pub struct StepJoin {
    /// Pair on `stamp_ns` (JointState) or in arrival order (Float64MultiArray).
    by_stamp: bool,
    /// Without step info, every sensor message is an observation (reward 0).
    with_info: bool,
    timeout: Duration,
    robot_id: String,
    /// Sensor messages waiting for their step info, in arrival order.
    sensors: VecDeque<Pending>,
    /// Step infos waiting for their sensor message, in arrival order.
    infos: VecDeque<(StepInfo, Instant)>,
    /// Dropped: a newer StepInfo version, or no partner within the timeout.
    dropped: u64,
    seq: u64,
    episode_id: u64,
    step: u32,
    /// The last emitted observation ended its episode.
    episode_over: bool,
}

impl StepJoin {
    /// A join for `robot_id`: by stamp or in arrival order, with or without step
    /// info, dropping what waits longer than `timeout` for its partner.
    pub fn new(robot_id: &str, by_stamp: bool, with_info: bool, timeout: Duration) -> Self {
        Self {
            by_stamp,
            with_info,
            timeout,
            robot_id: robot_id.to_string(),
            sensors: VecDeque::new(),
            infos: VecDeque::new(),
            dropped: 0,
            // From 1, as reflex-msgs asks: seq 0 answers no observation.
            seq: 1,
            episode_id: 0,
            step: 0,
            episode_over: false,
        }
    }

    /// A sensor message's values (and header stamp; 0 without a header) arrived.
    pub fn sensor(&mut self, stamp_ns: u64, values: Vec<f32>, now: Instant) {
        self.sensors.push_back(Pending {
            stamp_ns,
            values,
            since: now,
        });
    }

    /// A step info arrived (one of a newer wire version is dropped and counted).
    pub fn info(&mut self, info: StepInfo, now: Instant) {
        if readable(&info) {
            self.infos.push_back((info, now));
        } else {
            self.dropped += 1;
        }
    }

    /// Messages dropped so far (no partner in time, unreadable step info).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Moves every observation that is complete at `now` into `out`, in sensor
    /// order: the oldest sensor message waits for its step info (and holds back
    /// newer ones) until the timeout, then it is dropped.
    pub fn ready(&mut self, now: Instant, out: &mut Vec<Observation>) {
        if !self.with_info {
            while let Some(p) = self.sensors.pop_front() {
                self.emit(out, p.stamp_ns, p.values, None);
            }
            return;
        }
        while let Some(head) = self.sensors.front() {
            let partner = if self.by_stamp {
                self.infos
                    .iter()
                    .position(|(i, _)| i.stamp_ns == head.stamp_ns)
            } else if self.infos.is_empty() {
                None
            } else {
                Some(0)
            };
            match partner {
                Some(k) => {
                    // Unmatched step infos stay until their sensor message comes or
                    // they time out (a reward node may publish out of order).
                    let (info, _) = self.infos.remove(k).expect("partner index is in range");
                    let p = self.sensors.pop_front().expect("head exists");
                    self.emit(out, p.stamp_ns, p.values, Some(info));
                }
                None if now.duration_since(head.since) >= self.timeout => {
                    self.sensors.pop_front();
                    self.dropped += 1;
                }
                None => break,
            }
        }
        while self
            .infos
            .front()
            .is_some_and(|(_, since)| now.duration_since(*since) >= self.timeout)
        {
            self.infos.pop_front();
            self.dropped += 1;
        }
    }

    fn emit(
        &mut self,
        out: &mut Vec<Observation>,
        stamp_ns: u64,
        values: Vec<f32>,
        info: Option<StepInfo>,
    ) {
        if self.episode_over {
            self.episode_id += 1;
            self.step = 0;
            self.episode_over = false;
        }
        let info = info.unwrap_or_default();
        let obs = Observation {
            robot_id: self.robot_id.clone(),
            seq: self.seq,
            timestamp_ns: stamp_ns,
            episode_id: self.episode_id,
            step: self.step,
            values,
            reward: info.reward,
            terminated: info.terminated,
            truncated: info.truncated,
            ..Observation::default()
        };
        self.seq += 1;
        self.step = self.step.saturating_add(1);
        self.episode_over = obs.done();
        out.push(obs);
    }
}

/// The observation vector of a JointState: for each joint, the fields, joint-major.
/// `None` when a joint or a field is missing.
fn joint_values(js: &JointState, joints: &[String], fields: &[JointField]) -> Option<Vec<f32>> {
    let mut values = Vec::with_capacity(joints.len() * fields.len());
    for joint in joints {
        let i = js.name.iter().position(|n| n == joint)?;
        for field in fields {
            let array = match field {
                JointField::Position => &js.position,
                JointField::Velocity => &js.velocity,
                JointField::Effort => &js.effort,
            };
            values.push(*array.get(i)? as f32);
        }
    }
    Some(values)
}

/// Standard sensor messages joined with `StepInfo`s into [`Observation`]s.
struct JoinedObservations {
    joint_states: Option<Sub<JointState>>,
    arrays: Option<Sub<Float64MultiArray>>,
    step_info: Option<Sub<StepInfo>>,
    joints: Vec<String>,
    fields: Vec<JointField>,
    join: StepJoin,
    js_buf: Vec<JointState>,
    arr_buf: Vec<Float64MultiArray>,
    info_buf: Vec<StepInfo>,
    /// JointStates without a configured joint or field.
    malformed: u64,
}

impl JoinedObservations {
    fn new(
        link: &Link,
        config: &Config,
        kind: ObservationSourceKind,
    ) -> Result<Self, TransportError> {
        let r = &config.transport.ros2;
        let robot = config.robot_id.as_str();
        let obs = &r.observation;
        let sensor_qos = qos(r.qos.observation.apply(SENSOR_QOS), Duration::ZERO);
        let topic = r.resolve(robot, obs.topic());
        let by_stamp = kind == ObservationSourceKind::JointState;
        let (joint_states, arrays) = if by_stamp {
            (
                Some(link.subscription(&topic, sensor_qos).map_err(err)?),
                None,
            )
        } else {
            (
                None,
                Some(link.subscription(&topic, sensor_qos).map_err(err)?),
            )
        };
        let step_info = if obs.step_info_topic.is_empty() {
            None
        } else {
            Some(
                link.subscription(
                    &r.resolve(robot, &obs.step_info_topic),
                    qos(r.qos.step_info.apply(SENSOR_QOS), Duration::ZERO),
                )
                .map_err(err)?,
            )
        };
        Ok(Self {
            join: StepJoin::new(
                robot,
                by_stamp,
                step_info.is_some(),
                Duration::from_millis(obs.step_info_timeout_ms),
            ),
            joint_states,
            arrays,
            step_info,
            joints: obs.joints.clone(),
            fields: obs.fields.clone(),
            js_buf: Vec::new(),
            arr_buf: Vec::new(),
            info_buf: Vec::new(),
            malformed: 0,
        })
    }
}

impl ObservationSource for JoinedObservations {
    fn poll(&mut self, out: &mut Vec<Observation>) -> Result<(), TransportError> {
        let now = Instant::now();
        if let Some(sub) = &mut self.step_info {
            sub.drain(&mut self.info_buf);
        }
        for info in self.info_buf.drain(..) {
            self.join.info(info, now);
        }
        if let Some(sub) = &mut self.joint_states {
            sub.drain(&mut self.js_buf);
        }
        for js in self.js_buf.drain(..) {
            match joint_values(&js, &self.joints, &self.fields) {
                Some(values) => self.join.sensor(js.header.stamp.as_nanos(), values, now),
                None => {
                    self.malformed += 1;
                    tracing::debug!(
                        "JointState without the configured joints {:?} / fields {:?}: dropped",
                        self.joints,
                        self.fields
                    );
                }
            }
        }
        if let Some(sub) = &mut self.arrays {
            sub.drain(&mut self.arr_buf);
        }
        for a in self.arr_buf.drain(..) {
            let values = a.values().iter().map(|v| *v as f32).collect();
            self.join.sensor(0, values, now);
        }
        self.join.ready(now, out);
        Ok(())
    }

    fn decode_errors(&self) -> u64 {
        let subs = self.joint_states.as_ref().map_or(0, Sub::errors)
            + self.arrays.as_ref().map_or(0, Sub::errors)
            + self.step_info.as_ref().map_or(0, Sub::errors);
        subs + self.malformed + self.join.dropped()
    }
}

fn publish_err(e: PublishError) -> TransportError {
    match e {
        PublishError::WouldBlock(topic) => {
            TransportError::Disconnected(format!("{topic}: send window full"))
        }
        other => err(other),
    }
}

impl ActionSink for Pub<ActionCommand> {
    fn send(&mut self, command: &ActionCommand) -> Result<(), TransportError> {
        self.publish(command.clone()).map_err(publish_err)
    }
}

impl ActionSink for Pub<Float64MultiArray> {
    fn send(&mut self, command: &ActionCommand) -> Result<(), TransportError> {
        let data = match &command.action {
            Action::Discrete(i) => vec![f64::from(*i)],
            Action::Continuous(v) => v.iter().map(|x| f64::from(*x)).collect(),
        };
        self.publish(Float64MultiArray::vector("action", data))
            .map_err(publish_err)
    }
}

/// Index of a Twist field in `[linear.x, …, angular.z]`.
fn twist_index(field: &str) -> Result<usize, TransportError> {
    crate::ros2_config::TWIST_FIELDS
        .iter()
        .position(|f| *f == field)
        .ok_or_else(|| err(format!("unknown Twist field {field:?}")))
}

/// Actions as `geometry_msgs/msg/Twist`.
struct TwistActions {
    publisher: Pub<Twist>,
    fields: Vec<usize>,
}

impl ActionSink for TwistActions {
    fn send(&mut self, command: &ActionCommand) -> Result<(), TransportError> {
        let Action::Continuous(values) = &command.action else {
            return Err(err(
                "the twist action sink needs a continuous action (a Box action space)",
            ));
        };
        if values.len() != self.fields.len() {
            return Err(err(format!(
                "action has {} dimensions, transport.ros2.action.twist_fields names {}",
                values.len(),
                self.fields.len()
            )));
        }
        let mut v = [0.0f64; 6];
        for (field, x) in self.fields.iter().zip(values) {
            v[*field] = f64::from(*x);
        }
        let mut t = Twist::default();
        (t.linear.x, t.linear.y, t.linear.z) = (v[0], v[1], v[2]);
        (t.angular.x, t.angular.y, t.angular.z) = (v[3], v[4], v[5]);
        self.publisher.publish(t).map_err(publish_err)
    }
}

/// Transitions out; refused while no learner subscribes; flushed (acknowledged) at
/// shutdown.
struct Ros2Transitions(AckPub<TransitionBatch>);

impl TransitionSink for Ros2Transitions {
    fn send(&mut self, batch: &TransitionBatch) -> Result<(), TransportError> {
        if self.0.subscriptions() == 0 {
            return Err(TransportError::Disconnected(format!(
                "no subscription on {}",
                self.0.topic()
            )));
        }
        self.0.publish(batch.clone()).map_err(publish_err)
    }

    fn flush(&mut self, max_wait: Duration) -> bool {
        self.0.flush(max_wait)
    }
}

/// Status heartbeats out.
struct Ros2Status(Pub<Status>);

impl StatusSink for Ros2Status {
    fn publish(&mut self, status: &Status) -> Result<(), TransportError> {
        self.0.publish(status.clone()).map_err(publish_err)
    }
}

/// Policy updates in.
struct Ros2Policies {
    sub: Sub<PolicyUpdate>,
    buf: VecDeque<PolicyUpdate>,
    scratch: Vec<PolicyUpdate>,
    refused: u64,
}

impl PolicySource for Ros2Policies {
    fn poll(&mut self) -> Option<PolicyMessage> {
        self.sub.drain(&mut self.scratch);
        for u in self.scratch.drain(..) {
            if readable(&u) {
                self.buf.push_back(u);
            } else {
                self.refused += 1;
            }
        }
        self.buf
            .pop_front()
            .map(|u| PolicyMessage::Update(Box::new(u)))
    }

    fn wait(&mut self, timeout: Duration) -> Option<PolicyMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.poll() {
                return Some(m);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(5)));
        }
    }

    fn decode_errors(&self) -> u64 {
        self.sub.errors() + self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reflex_msgs::ros_std::{Header, Time};

    fn info(stamp_ns: u64, reward: f32, terminated: bool) -> StepInfo {
        StepInfo {
            stamp_ns,
            reward,
            terminated,
            ..StepInfo::default()
        }
    }

    #[test]
    fn joins_on_stamp_in_sensor_order_and_numbers_episodes() {
        let t = Instant::now();
        let mut j = StepJoin::new("r", true, true, Duration::from_millis(100));
        let mut out = Vec::new();
        // Infos may come before or after their sensor message, in any order.
        j.info(info(20, 1.0, false), t);
        j.sensor(10, vec![1.0], t);
        j.sensor(20, vec![2.0], t);
        j.ready(t, &mut out);
        assert!(out.is_empty(), "10 waits for its info and holds 20 back");
        j.info(info(10, 0.0, false), t);
        j.sensor(30, vec![3.0], t);
        j.info(info(30, 1.0, true), t);
        j.sensor(40, vec![4.0], t);
        j.info(info(40, 0.0, false), t);
        j.ready(t, &mut out);
        let got: Vec<_> = out
            .iter()
            .map(|o| {
                (
                    o.seq,
                    o.episode_id,
                    o.step,
                    o.values[0],
                    o.reward,
                    o.terminated,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                // seq from 1: 0 answers no observation.
                (1, 0, 0, 1.0, 0.0, false),
                (2, 0, 1, 2.0, 1.0, false),
                (3, 0, 2, 3.0, 1.0, true),
                // After a terminal observation a new episode starts at step 0.
                (4, 1, 0, 4.0, 0.0, false),
            ]
        );
        assert_eq!(out[1].timestamp_ns, 20);
        assert_eq!(j.dropped(), 0);
    }

    #[test]
    fn partners_that_never_come_are_dropped_and_counted() {
        let t = Instant::now();
        let late = t + Duration::from_millis(150);
        let mut j = StepJoin::new("r", true, true, Duration::from_millis(100));
        let mut out = Vec::new();
        j.sensor(10, vec![1.0], t); // its info is lost
        j.info(info(99, 0.0, false), t); // its sensor message is lost
        j.sensor(20, vec![2.0], late);
        j.info(info(20, 5.0, false), late);
        j.ready(late, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].values[0], out[0].reward, out[0].seq), (2.0, 5.0, 1));
        assert_eq!(j.dropped(), 2);
        // A step info of a newer wire version is refused.
        j.info(
            StepInfo {
                wire_version: WIRE_VERSION + 1,
                ..info(30, 0.0, false)
            },
            late,
        );
        assert_eq!(j.dropped(), 3);
    }

    #[test]
    fn arrays_pair_in_arrival_order_and_no_step_info_means_reward_zero() {
        let t = Instant::now();
        let mut j = StepJoin::new("r", false, true, Duration::from_millis(100));
        let mut out = Vec::new();
        j.sensor(0, vec![1.0], t);
        j.sensor(0, vec![2.0], t);
        j.info(info(0, 7.0, false), t);
        j.ready(t, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].values[0], out[0].reward), (1.0, 7.0));
        let mut bare = StepJoin::new("r", true, false, Duration::from_millis(100));
        out.clear();
        bare.sensor(5, vec![1.0], t);
        bare.sensor(6, vec![2.0], t);
        bare.ready(t, &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|o| o.reward == 0.0 && !o.done()));
        assert_eq!((out[0].step, out[1].step), (0, 1));
    }

    #[test]
    fn joint_states_are_read_by_name_joint_major() {
        let js = JointState {
            header: Header {
                stamp: Time { sec: 1, nanosec: 0 },
                frame_id: String::new(),
            },
            name: vec!["wheel".into(), "pole".into(), "cart".into()],
            position: vec![9.0, 0.5, 1.5],
            velocity: vec![9.0, -0.5, -1.5],
            effort: vec![],
        };
        let joints = vec!["cart".to_string(), "pole".to_string()];
        let pv = [JointField::Position, JointField::Velocity];
        assert_eq!(
            joint_values(&js, &joints, &pv),
            Some(vec![1.5, -1.5, 0.5, -0.5])
        );
        // A missing joint or an empty field array: no observation.
        assert_eq!(joint_values(&js, &["arm".to_string()], &pv), None);
        assert_eq!(joint_values(&js, &joints, &[JointField::Effort]), None);
    }

    #[test]
    fn twist_fields_map_action_dimensions() {
        assert_eq!(twist_index("linear.x").unwrap(), 0);
        assert_eq!(twist_index("angular.z").unwrap(), 5);
        assert!(twist_index("linear.w").is_err());
    }
}
