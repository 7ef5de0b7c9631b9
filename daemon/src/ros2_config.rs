//! `[transport.ros2]`: reflexd as a ROS 2 node (see [`crate::ros2_transport`]).
//!
//! Everything here is plain configuration (always compiled, so a reflexd built
//! without the `ros2` feature still reads and checks files written for one that has
//! it).

use serde::{Deserialize, Serialize};

/// `[transport.ros2]`: the node, its topics and their quality of service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ros2Config {
    /// Node name; empty = `reflexd_<robot_id>`, with every character a ROS name does not
    /// allow replaced by `_` (`robot-1` → `reflexd_robot_1`).
    pub node_name: String,
    /// Node namespace, e.g. `/robot_1`; `/` = the root namespace.
    pub namespace: String,
    /// DDS domain (`ROS_DOMAIN_ID`, 0–232); -1 = take `ROS_DOMAIN_ID` from the
    /// environment, 0 when it is not set.
    pub domain_id: i32,
    /// `[transport.ros2.observation]`: where observations come from.
    pub observation: Ros2ObservationConfig,
    /// `[transport.ros2.action]`: where actions go.
    pub action: Ros2ActionConfig,
    /// `[transport.ros2.qos]`: per-topic quality-of-service overrides.
    pub qos: Ros2QosConfig,
}

impl Default for Ros2Config {
    fn default() -> Self {
        Self {
            node_name: String::new(),
            namespace: "/".into(),
            domain_id: -1,
            observation: Ros2ObservationConfig::default(),
            action: Ros2ActionConfig::default(),
            qos: Ros2QosConfig::default(),
        }
    }
}

/// The message an observation arrives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObservationSourceKind {
    /// `reflex_msgs/msg/Observation` (a simulator, or a driver written for reflex): it
    /// carries reward and episode flags itself.
    Reflex,
    /// `sensor_msgs/msg/JointState`, joints picked by name; reward and episode ends
    /// from `reflex_msgs/msg/StepInfo` joined on the header stamp.
    JointState,
    /// `std_msgs/msg/Float64MultiArray` taken whole; reward and episode ends from
    /// `reflex_msgs/msg/StepInfo` paired in arrival order.
    Float64MultiArray,
}

/// One per-joint quantity of a `JointState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JointField {
    /// `position` (rad or m).
    Position,
    /// `velocity` (rad/s or m/s).
    Velocity,
    /// `effort` (N·m or N).
    Effort,
}

/// `[transport.ros2.observation]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ros2ObservationConfig {
    /// `"reflex"`, `"joint_state"` or `"float64_multi_array"`.
    pub source: ObservationSourceKind,
    /// Topic; empty = the source's usual one: `~/observation` (reflex),
    /// `/joint_states` (joint_state), `~/observation_array` (float64_multi_array).
    /// `~/x` is the node's own `x`, `x` is in the node's namespace, `/x` is absolute.
    pub topic: String,
    /// joint_state: the joints, in the order they make the observation vector.
    pub joints: Vec<String>,
    /// joint_state: the quantities taken from each joint, in order. The vector is
    /// joint-major: joints `[cart, pole]` with fields `[position, velocity]` give
    /// `[cart.position, cart.velocity, pole.position, pole.velocity]`.
    pub fields: Vec<JointField>,
    /// joint_state / float64_multi_array: the `reflex_msgs/msg/StepInfo` topic with
    /// each step's reward and episode flags; empty = none (reward 0, episodes never
    /// end: deployment without learning).
    pub step_info_topic: String,
    /// How long a sensor message waits for its StepInfo (and a StepInfo for its
    /// sensor message) before it is dropped and counted, ms.
    pub step_info_timeout_ms: u64,
}

impl Default for Ros2ObservationConfig {
    fn default() -> Self {
        Self {
            source: ObservationSourceKind::Reflex,
            topic: String::new(),
            joints: Vec::new(),
            fields: vec![JointField::Position, JointField::Velocity],
            step_info_topic: "~/step_info".into(),
            step_info_timeout_ms: 100,
        }
    }
}

impl Ros2ObservationConfig {
    /// The topic, defaults applied.
    pub fn topic(&self) -> &str {
        match (self.topic.as_str(), self.source) {
            ("", ObservationSourceKind::Reflex) => "~/observation",
            ("", ObservationSourceKind::JointState) => "/joint_states",
            ("", ObservationSourceKind::Float64MultiArray) => "~/observation_array",
            (topic, _) => topic,
        }
    }
}

/// The message an action goes out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionSinkKind {
    /// `reflex_msgs/msg/ActionCommand` (a simulator, or a driver written for reflex).
    Reflex,
    /// `std_msgs/msg/Float64MultiArray`, what ros2_control's forward command
    /// controllers take: the action vector (a discrete action: `[index]`).
    Float64MultiArray,
    /// `geometry_msgs/msg/Twist` (mobile bases): each action dimension drives the
    /// field named in `twist_fields`; the others are 0.
    Twist,
}

/// `[transport.ros2.action]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ros2ActionConfig {
    /// `"reflex"`, `"float64_multi_array"` or `"twist"`.
    pub sink: ActionSinkKind,
    /// Topic; empty = the sink's usual one: `~/action` (reflex), `~/commands`
    /// (float64_multi_array; a forward command controller listens on
    /// `/<controller>/commands`), `/cmd_vel` (twist).
    pub topic: String,
    /// twist: the field each action dimension drives, in order: `linear.x`,
    /// `linear.y`, `linear.z`, `angular.x`, `angular.y`, `angular.z`.
    pub twist_fields: Vec<String>,
}

impl Default for Ros2ActionConfig {
    fn default() -> Self {
        Self {
            sink: ActionSinkKind::Reflex,
            topic: String::new(),
            twist_fields: vec!["linear.x".into(), "angular.z".into()],
        }
    }
}

impl Ros2ActionConfig {
    /// The topic, defaults applied.
    pub fn topic(&self) -> &str {
        match (self.topic.as_str(), self.sink) {
            ("", ActionSinkKind::Reflex) => "~/action",
            ("", ActionSinkKind::Float64MultiArray) => "~/commands",
            ("", ActionSinkKind::Twist) => "/cmd_vel",
            (topic, _) => topic,
        }
    }
}

/// The `Twist` fields an action dimension can drive.
pub const TWIST_FIELDS: [&str; 6] = [
    "linear.x",
    "linear.y",
    "linear.z",
    "angular.x",
    "angular.y",
    "angular.z",
];

/// Delivery guarantee of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QosReliability {
    /// The topic's default (see [`Ros2QosConfig`]).
    Default,
    /// Lost samples are resent.
    Reliable,
    /// Lost samples stay lost (sensor data).
    BestEffort,
}

/// Whether a late subscriber gets earlier samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QosDurability {
    /// The topic's default (see [`Ros2QosConfig`]).
    Default,
    /// Only samples published while subscribed.
    Volatile,
    /// The last `depth` samples too ("latched").
    TransientLocal,
}

/// One topic's quality of service; each knob's `default` / 0 keeps the topic's
/// default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QosOverride {
    /// `"default"`, `"reliable"` or `"best_effort"`.
    pub reliability: QosReliability,
    /// `"default"`, `"volatile"` or `"transient_local"`.
    pub durability: QosDurability,
    /// History depth (keep last N); 0 = the topic's default.
    pub depth: usize,
}

impl Default for QosOverride {
    fn default() -> Self {
        Self {
            reliability: QosReliability::Default,
            durability: QosDurability::Default,
            depth: 0,
        }
    }
}

/// A resolved quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qos {
    /// Reliable (true) or best effort.
    pub reliable: bool,
    /// Transient-local (true) or volatile.
    pub transient_local: bool,
    /// Keep-last depth.
    pub depth: usize,
}

impl QosOverride {
    /// `default` with this override's non-default knobs applied.
    pub fn apply(&self, default: Qos) -> Qos {
        Qos {
            reliable: match self.reliability {
                QosReliability::Default => default.reliable,
                QosReliability::Reliable => true,
                QosReliability::BestEffort => false,
            },
            transient_local: match self.durability {
                QosDurability::Default => default.transient_local,
                QosDurability::Volatile => false,
                QosDurability::TransientLocal => true,
            },
            depth: if self.depth == 0 {
                default.depth
            } else {
                self.depth
            },
        }
    }
}

/// `[transport.ros2.qos]`: per-topic overrides of the defaults ROS 2 users expect.
///
/// | topic | default |
/// |---|---|
/// | observation, step_info (in) | best effort, volatile, depth 5 (sensor data) |
/// | action (out) | reliable, volatile, depth 10 (matches reliable and best-effort controllers) |
/// | transitions (out) | reliable, volatile, depth 100 batches |
/// | status (out) | reliable, transient local, depth 1 (late tools see the last heartbeat) |
/// | policy_update (in) | reliable, volatile, depth 4 (matches volatile and transient-local learners) |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Ros2QosConfig {
    /// Observations in.
    pub observation: QosOverride,
    /// Step info in.
    pub step_info: QosOverride,
    /// Actions out.
    pub action: QosOverride,
    /// Transitions out.
    pub transitions: QosOverride,
    /// Status heartbeats out.
    pub status: QosOverride,
    /// Policy updates in.
    pub policy_update: QosOverride,
}

/// Default QoS of sensor-like inputs (observation, step_info).
pub const SENSOR_QOS: Qos = Qos {
    reliable: false,
    transient_local: false,
    depth: 5,
};
/// Default QoS of actions.
pub const ACTION_QOS: Qos = Qos {
    reliable: true,
    transient_local: false,
    depth: 10,
};
/// Default QoS of transitions.
pub const TRANSITIONS_QOS: Qos = Qos {
    reliable: true,
    transient_local: false,
    depth: 100,
};
/// Default QoS of status heartbeats.
pub const STATUS_QOS: Qos = Qos {
    reliable: true,
    transient_local: true,
    depth: 1,
};
/// Default QoS of policy updates.
pub const POLICY_QOS: Qos = Qos {
    reliable: true,
    transient_local: false,
    depth: 4,
};

impl Ros2Config {
    /// The node name, defaults applied (see [`Ros2Config::node_name`]).
    pub fn node_name(&self, robot_id: &str) -> String {
        if !self.node_name.is_empty() {
            return self.node_name.clone();
        }
        reflex_msgs::topics::daemon_node_name(robot_id)
    }

    /// Checks what the node would refuse later, naming the key.
    pub fn validate(&self, robot_id: &str) -> Result<(), String> {
        let node = self.node_name(robot_id);
        check_token(&node).map_err(|e| format!("transport.ros2.node_name = {node:?}: {e}"))?;
        check_namespace(&self.namespace)
            .map_err(|e| format!("transport.ros2.namespace = {:?}: {e}", self.namespace))?;
        if !(-1..=232).contains(&self.domain_id) {
            return Err(format!(
                "transport.ros2.domain_id = {}: must be in 0..=232 (or -1: from ROS_DOMAIN_ID)",
                self.domain_id
            ));
        }
        let obs = &self.observation;
        check_topic(obs.topic())
            .map_err(|e| format!("transport.ros2.observation.topic = {:?}: {e}", obs.topic()))?;
        if !obs.step_info_topic.is_empty() {
            check_topic(&obs.step_info_topic).map_err(|e| {
                format!(
                    "transport.ros2.observation.step_info_topic = {:?}: {e}",
                    obs.step_info_topic
                )
            })?;
        }
        if obs.source == ObservationSourceKind::JointState {
            if obs.joints.is_empty() {
                return Err(
                    "transport.ros2.observation.joints = []: the joint_state source needs the joints, in observation order"
                        .into(),
                );
            }
            if obs.fields.is_empty() {
                return Err("transport.ros2.observation.fields = []: name at least one of position, velocity, effort".into());
            }
        }
        if obs.step_info_timeout_ms == 0 {
            return Err(
                "transport.ros2.observation.step_info_timeout_ms = 0: must be at least 1".into(),
            );
        }
        let action = &self.action;
        check_topic(action.topic())
            .map_err(|e| format!("transport.ros2.action.topic = {:?}: {e}", action.topic()))?;
        if action.sink == ActionSinkKind::Twist {
            if action.twist_fields.is_empty() || action.twist_fields.len() > 6 {
                return Err("transport.ros2.action.twist_fields: name 1 to 6 fields".into());
            }
            for (i, f) in action.twist_fields.iter().enumerate() {
                if !TWIST_FIELDS.contains(&f.as_str()) {
                    return Err(format!(
                        "transport.ros2.action.twist_fields contains {f:?}: expected one of {TWIST_FIELDS:?}"
                    ));
                }
                if action.twist_fields[..i].contains(f) {
                    return Err(format!(
                        "transport.ros2.action.twist_fields names {f:?} twice"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks that the policy's spaces fit the messages: a joint_state
    /// observation of joints × fields values, a Twist action of one continuous
    /// value per `twist_fields` entry. Found at start, not as a failed send
    /// (of the safe action too) on every tick.
    pub fn fits(&self, spec: &reflex_msgs::PolicySpec) -> Result<(), String> {
        let obs = &self.observation;
        let obs_dim = spec.observation_space.dim();
        if obs.source == ObservationSourceKind::JointState
            && obs.joints.len() * obs.fields.len() != obs_dim
        {
            return Err(format!(
                "transport.ros2.observation: {} joints × {} fields make {} values, the \
                 policy observes {obs_dim}",
                obs.joints.len(),
                obs.fields.len(),
                obs.joints.len() * obs.fields.len()
            ));
        }
        if self.action.sink == ActionSinkKind::Twist {
            let fields = self.action.twist_fields.len();
            match &spec.action_space {
                reflex_msgs::ActionSpace::Box(b) if b.dim() == fields => {}
                reflex_msgs::ActionSpace::Box(b) => {
                    return Err(format!(
                        "transport.ros2.action.twist_fields names {fields} fields, the \
                         policy's action has {} dimensions",
                        b.dim()
                    ))
                }
                _ => {
                    return Err(
                        "transport.ros2.action.sink = \"twist\" needs a policy with \
                         continuous actions; this one's are discrete"
                            .into(),
                    )
                }
            }
        }
        Ok(())
    }

    /// Resolves a topic name the way rcl does: `~/x` → `<namespace>/<node>/x`, `x` →
    /// `<namespace>/x`, `/x` stays.
    pub fn resolve(&self, robot_id: &str, topic: &str) -> String {
        let ns = self.namespace.trim_end_matches('/');
        if let Some(rest) = topic.strip_prefix("~/") {
            format!("{ns}/{}/{rest}", self.node_name(robot_id))
        } else if topic.starts_with('/') {
            topic.to_string()
        } else {
            format!("{ns}/{topic}")
        }
    }
}

/// One name token: `[A-Za-z_][A-Za-z0-9_]*`, no `__`.
fn check_token(token: &str) -> Result<(), String> {
    let mut chars = token.chars();
    match chars.next() {
        None => return Err("empty name".into()),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            return Err(format!("must start with a letter or '_', not {c:?}"))
        }
        _ => {}
    }
    if let Some(c) = token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(format!("{c:?} is not allowed in a ROS name"));
    }
    if token.contains("__") {
        return Err("\"__\" is not allowed in a ROS name".into());
    }
    Ok(())
}

/// A namespace: `/` or `/a/b` (absolute, no trailing slash).
fn check_namespace(ns: &str) -> Result<(), String> {
    if ns == "/" {
        return Ok(());
    }
    let Some(rest) = ns.strip_prefix('/') else {
        return Err("must start with '/'".into());
    };
    rest.split('/').try_for_each(check_token)
}

/// A topic: `~/a/b`, `/a/b` or `a/b`.
fn check_topic(topic: &str) -> Result<(), String> {
    let rest = topic
        .strip_prefix("~/")
        .or_else(|| topic.strip_prefix('/'))
        .unwrap_or(topic);
    rest.split('/').try_for_each(check_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_valid_ros_names() {
        let c = Ros2Config::default();
        assert_eq!(c.node_name("robot-1"), "reflexd_robot_1");
        assert_eq!(c.node_name("a--b."), "reflexd_a_b");
        assert!(c.validate("robot-1").is_ok());
        let named = Ros2Config {
            node_name: "arm_driver".into(),
            ..Ros2Config::default()
        };
        assert_eq!(named.node_name("x"), "arm_driver");
    }

    #[test]
    fn topics_resolve_like_rcl() {
        let c = Ros2Config {
            namespace: "/fleet_a".into(),
            ..Ros2Config::default()
        };
        assert_eq!(
            c.resolve("r1", "~/transitions"),
            "/fleet_a/reflexd_r1/transitions"
        );
        assert_eq!(c.resolve("r1", "joint_states"), "/fleet_a/joint_states");
        assert_eq!(c.resolve("r1", "/cmd_vel"), "/cmd_vel");
        let root = Ros2Config::default();
        assert_eq!(root.resolve("r1", "~/action"), "/reflexd_r1/action");
        assert_eq!(root.resolve("r1", "odom"), "/odom");
    }

    #[test]
    fn bad_names_and_settings_are_refused_with_the_key() {
        let bad = |f: &dyn Fn(&mut Ros2Config), key: &str| {
            let mut c = Ros2Config::default();
            f(&mut c);
            let e = c.validate("r1").unwrap_err();
            assert!(e.contains(key), "{e} should name {key}");
        };
        bad(&|c| c.namespace = "robots".into(), "namespace");
        bad(&|c| c.namespace = "/a//b".into(), "namespace");
        bad(&|c| c.node_name = "1node".into(), "node_name");
        bad(&|c| c.domain_id = 233, "domain_id");
        bad(
            &|c| c.observation.topic = "/a b".into(),
            "observation.topic",
        );
        bad(
            &|c| c.observation.source = ObservationSourceKind::JointState,
            "observation.joints",
        );
        bad(
            &|c| {
                c.action.sink = ActionSinkKind::Twist;
                c.action.twist_fields = vec!["linear.w".into()];
            },
            "twist_fields",
        );
        bad(
            &|c| {
                c.action.sink = ActionSinkKind::Twist;
                c.action.twist_fields = vec!["linear.x".into(), "linear.x".into()];
            },
            "twist_fields",
        );
    }

    #[test]
    fn the_policy_must_fit_the_messages() {
        use reflex_msgs::{ActionSpace, BoxSpace, PolicySpec};
        let spec = |obs: usize, action: ActionSpace| PolicySpec {
            observation_space: BoxSpace::new(vec![-1.0; obs], vec![1.0; obs]).unwrap(),
            action_space: action,
            ..PolicySpec::default()
        };
        let continuous =
            |n: usize| ActionSpace::Box(BoxSpace::new(vec![-1.0; n], vec![1.0; n]).unwrap());
        let mut c = Ros2Config::default();
        assert!(c.fits(&spec(4, ActionSpace::Discrete { n: 2 })).is_ok());
        c.observation.source = ObservationSourceKind::JointState;
        c.observation.joints = vec!["cart".into(), "pole".into()];
        assert!(c.fits(&spec(4, ActionSpace::Discrete { n: 2 })).is_ok());
        let e = c
            .fits(&spec(3, ActionSpace::Discrete { n: 2 }))
            .unwrap_err();
        assert!(
            e.contains("2 joints × 2 fields make 4 values, the policy observes 3"),
            "{e}"
        );
        c.action.sink = ActionSinkKind::Twist;
        assert!(c.fits(&spec(4, continuous(2))).is_ok());
        let e = c.fits(&spec(4, continuous(1))).unwrap_err();
        assert!(e.contains("twist_fields names 2 fields"), "{e}");
        let e = c
            .fits(&spec(4, ActionSpace::Discrete { n: 2 }))
            .unwrap_err();
        assert!(e.contains("continuous actions"), "{e}");
    }

    #[test]
    fn qos_overrides_apply_knob_by_knob() {
        let o = QosOverride {
            reliability: QosReliability::BestEffort,
            ..QosOverride::default()
        };
        assert_eq!(
            o.apply(STATUS_QOS),
            Qos {
                reliable: false,
                transient_local: true,
                depth: 1
            }
        );
        assert_eq!(QosOverride::default().apply(SENSOR_QOS), SENSOR_QOS);
        let d = QosOverride {
            durability: QosDurability::TransientLocal,
            depth: 7,
            ..QosOverride::default()
        };
        assert_eq!(
            d.apply(ACTION_QOS),
            Qos {
                reliable: true,
                transient_local: true,
                depth: 7
            }
        );
    }
}
