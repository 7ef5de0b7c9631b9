//! reflexd's configuration from ROS 2 parameters: the parameter YAML that `ros2
//! launch` passes (`--ros-params FILE`, or `--ros-args --params-file FILE`), and
//! `--ros-args` remaps and `-p name:=value` overrides, so one file configures reflexd
//! under `ros2 launch` and standalone.
//!
//! A parameter is a [`Config`] key in dotted form (`rate_hz`, `policy.path`,
//! `transport.ros2.observation.joints`); nested maps under `ros__parameters` mean the
//! same as dotted names, as in ROS 2. Unknown parameters are errors, like unknown
//! keys in robot.toml.
//!
//! ```yaml
//! /**:                      # every node; or the node's name: reflexd_robot_1
//!   ros__parameters:
//!     robot_id: robot_1
//!     rate_hz: 50.0         # Hz
//!     policy.path: /opt/reflex/policy.onnx
//!     transport:
//!       kind: ros2
//! ```

use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use crate::config::{Config, ConfigError};

/// Why ROS parameters could not make a configuration.
#[derive(Debug, thiserror::Error)]
pub enum RosParamsError {
    /// A parameter file could not be read.
    #[error("cannot read parameter file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A parameter file is not ROS 2 parameter YAML.
    #[error("invalid parameter file {path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A `--ros-args` argument is malformed or not supported.
    #[error("--ros-args: {0}")]
    Args(String),
    /// The parameters do not make a valid configuration (an unknown parameter, a wrong
    /// type, a bad value).
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// What `--ros-args` said: remaps, parameter files and single parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RosArgs {
    /// `-r __node:=NAME`.
    pub node_name: Option<String>,
    /// `-r __ns:=/NS`.
    pub namespace: Option<String>,
    /// `--params-file FILE`, in order.
    pub params_files: Vec<PathBuf>,
    /// `-p name:=value`, in order (the value is YAML, as in ROS 2).
    pub params: Vec<(String, String)>,
}

impl RosArgs {
    /// Parses the arguments after `--ros-args` (up to a `--` or the end). Accepts
    /// `-r/--remap __node:=X`, `-r __ns:=/X`, `-p/--param name:=value`,
    /// `--params-file FILE` and `--log-level LEVEL` (ignored: use `RUST_LOG`); topic
    /// remaps are refused (set topics in the parameters instead).
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Self, RosParamsError> {
        let mut out = RosArgs::default();
        let mut it = args.iter().map(AsRef::as_ref);
        while let Some(arg) = it.next() {
            let mut value = |flag: &str| {
                it.next()
                    .ok_or_else(|| RosParamsError::Args(format!("{flag} needs a value")))
            };
            match arg {
                "--" => break,
                "--ros-args" => {}
                "-r" | "--remap" => {
                    let rule = value(arg)?;
                    let (from, to) = split_assign(rule)?;
                    match from {
                        "__node" | "__name" => out.node_name = Some(to.to_string()),
                        // An empty namespace is the root (what launch files pass
                        // when none is given).
                        "__ns" if to.is_empty() => out.namespace = Some("/".into()),
                        "__ns" => out.namespace = Some(to.to_string()),
                        _ => {
                            return Err(RosParamsError::Args(format!(
                                "remap {rule:?}: only __node and __ns can be remapped; set topics with the transport.ros2.* parameters"
                            )))
                        }
                    }
                }
                "-p" | "--param" => {
                    let (name, v) = split_assign(value(arg)?)?;
                    out.params.push((name.to_string(), v.to_string()));
                }
                "--params-file" => out.params_files.push(PathBuf::from(value(arg)?)),
                "--log-level" => {
                    value(arg)?;
                }
                other => {
                    return Err(RosParamsError::Args(format!(
                        "unsupported argument {other:?} (reflexd takes -r __node:=, -r __ns:=, -p name:=value, --params-file, --log-level)"
                    )))
                }
            }
        }
        Ok(out)
    }
}

fn split_assign(rule: &str) -> Result<(&str, &str), RosParamsError> {
    rule.split_once(":=")
        .filter(|(name, _)| !name.is_empty())
        .ok_or_else(|| RosParamsError::Args(format!("expected name:=value, got {rule:?}")))
}

/// Builds the configuration from parameter files (in order, later files win), then
/// `args`' parameter files and `-p` overrides, then its remaps; validates it.
pub fn load(files: &[PathBuf], args: &RosArgs) -> Result<Config, RosParamsError> {
    let mut texts = Vec::new();
    for path in files.iter().chain(&args.params_files) {
        let text = std::fs::read_to_string(path).map_err(|source| RosParamsError::Io {
            path: path.clone(),
            source,
        })?;
        texts.push((path.clone(), text));
    }
    from_texts(&texts, args)
}

/// [`load`] on file contents already read (`(path for messages, text)`).
pub fn from_texts(texts: &[(PathBuf, String)], args: &RosArgs) -> Result<Config, RosParamsError> {
    let mut files = Vec::new();
    for (path, text) in texts {
        files.push((path.clone(), node_entries(path, text)?));
    }
    let source = texts
        .last()
        .map(|(p, _)| p.clone())
        .unwrap_or_else(|| PathBuf::from("--ros-args"));
    let mut params = Mapping::new();
    // Wildcard entries first: they may set the robot id that names the node.
    for (_, entries) in &files {
        for (key, p) in entries {
            if key == "/**" || key == "**" {
                merge(&mut params, p);
            }
        }
    }
    let overrides = overrides(args)?;
    for (path, entries) in &files {
        for (key, p) in entries {
            if key == "/**" || key == "**" {
                continue;
            }
            // The node's name may come from this very entry (its robot_id or
            // node_name): judge the entry by the identity it would give.
            let mut probe = params.clone();
            merge(&mut probe, p);
            merge(&mut probe, &overrides);
            let (node, ns) = node_identity(&probe, args);
            if names_node(key, &node, &ns) {
                merge(&mut params, p);
            } else {
                tracing::debug!(
                    "{}: parameters for {key:?} are not for this node ({ns}/{node}); ignored",
                    path.display()
                );
            }
        }
    }
    merge(&mut params, &overrides);
    if let Some(node) = &args.node_name {
        set(
            &mut params,
            "transport.ros2.node_name",
            Value::from(node.clone()),
        );
    }
    if let Some(ns) = &args.namespace {
        set(
            &mut params,
            "transport.ros2.namespace",
            Value::from(ns.clone()),
        );
    }
    config_from(params, &source)
}

/// Turns a parameter mapping into a validated [`Config`].
fn config_from(params: Mapping, source: &Path) -> Result<Config, RosParamsError> {
    let config: Config =
        serde_yaml_ng::from_value(Value::Mapping(params)).map_err(|e| ConfigError::Invalid {
            path: source.to_owned(),
            message: format!("parameters: {e}"),
        })?;
    config.validate().map_err(|message| ConfigError::Invalid {
        path: source.to_owned(),
        message,
    })?;
    Ok(config)
}

/// The `-p` overrides as one nested mapping.
fn overrides(args: &RosArgs) -> Result<Mapping, RosParamsError> {
    let mut m = Mapping::new();
    for (name, text) in &args.params {
        let value: Value = serde_yaml_ng::from_str(text)
            .map_err(|e| RosParamsError::Args(format!("-p {name}:={text}: {e}")))?;
        set(&mut m, name, value);
    }
    Ok(m)
}

/// The node name and namespace these parameters (and remaps) give.
///
/// Only the settings that name the node are read: a typo or a bad value
/// elsewhere in an entry must not make it look like another node's entry and
/// be skipped unseen (applied, it is reported by the full check).
fn node_identity(params: &Mapping, args: &RosArgs) -> (String, String) {
    let text = |name: &str| {
        let mut at = params;
        let mut parts = name.split('.').peekable();
        while let Some(part) = parts.next() {
            let value = at.get(Value::from(part))?;
            if parts.peek().is_none() {
                return value.as_str().map(str::to_owned);
            }
            at = value.as_mapping()?;
        }
        None
    };
    let mut partial = Config::default();
    if let Some(id) = text("robot_id") {
        partial.robot_id = id;
    }
    if let Some(node) = text("transport.ros2.node_name") {
        partial.transport.ros2.node_name = node;
    }
    if let Some(ns) = text("transport.ros2.namespace") {
        partial.transport.ros2.namespace = ns;
    }
    let node = args
        .node_name
        .clone()
        .unwrap_or_else(|| partial.transport.ros2.node_name(&partial.robot_id));
    let ns = args
        .namespace
        .clone()
        .unwrap_or(partial.transport.ros2.namespace);
    (node, ns)
}

/// Whether a parameter file's node key names this node (`node`, `/node`,
/// `/ns/node`, `ns/node`, `/**/node`).
fn names_node(key: &str, node: &str, ns: &str) -> bool {
    let ns = ns.trim_end_matches('/');
    let full = format!("{ns}/{node}");
    key == node
        || key == full
        || key.trim_start_matches('/') == full.trim_start_matches('/')
        || key.strip_prefix("/**/") == Some(node)
}

/// The `ros__parameters` of each node entry of a parameter file, dotted names
/// expanded.
fn node_entries(path: &Path, text: &str) -> Result<Vec<(String, Mapping)>, RosParamsError> {
    let syntax = |message: String| RosParamsError::Syntax {
        path: path.to_owned(),
        message,
    };
    let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| syntax(e.to_string()))?;
    let Value::Mapping(nodes) = doc else {
        return Err(syntax(
            "expected a mapping of node names to {ros__parameters: ...}".into(),
        ));
    };
    let mut out = Vec::new();
    for (key, entry) in nodes {
        let key = key
            .as_str()
            .ok_or_else(|| syntax(format!("node name {key:?} is not a string")))?
            .to_string();
        let Value::Mapping(entry) = entry else {
            return Err(syntax(format!("{key}: expected {{ros__parameters: ...}}")));
        };
        let mut params = Mapping::new();
        for (k, v) in entry {
            match (k.as_str(), v) {
                (Some("ros__parameters"), Value::Mapping(p)) => merge(&mut params, &expand(p)),
                (Some("ros__parameters"), _) => {
                    return Err(syntax(format!("{key}.ros__parameters: expected a mapping")))
                }
                (other, _) => {
                    return Err(syntax(format!(
                        "{key}: unexpected key {other:?} (only ros__parameters belongs under a node name)"
                    )))
                }
            }
        }
        out.push((key, params));
    }
    Ok(out)
}

/// Expands dotted keys (`policy.path: x` → `policy: {path: x}`), recursively.
fn expand(m: Mapping) -> Mapping {
    let mut out = Mapping::new();
    for (k, v) in m {
        let v = match v {
            Value::Mapping(inner) => Value::Mapping(expand(inner)),
            other => other,
        };
        match k.as_str() {
            Some(name) => set(&mut out, name, v),
            None => {
                out.insert(k, v);
            }
        }
    }
    out
}

/// Sets dotted `name` in `m`, merging with maps already there.
fn set(m: &mut Mapping, name: &str, value: Value) {
    let mut parts = name.split('.').peekable();
    let mut at = m;
    while let Some(part) = parts.next() {
        let key = Value::from(part);
        if parts.peek().is_none() {
            match (at.get_mut(&key), value) {
                (Some(Value::Mapping(old)), Value::Mapping(new)) => merge(old, &new),
                (_, value) => {
                    at.insert(key, value);
                }
            }
            return;
        }
        if !matches!(at.get(&key), Some(Value::Mapping(_))) {
            at.insert(key.clone(), Value::Mapping(Mapping::new()));
        }
        at = match at.get_mut(&key) {
            Some(Value::Mapping(inner)) => inner,
            _ => unreachable!("just inserted a mapping"),
        };
    }
}

/// Deep-merges `from` into `into` (maps merge, everything else is replaced).
fn merge(into: &mut Mapping, from: &Mapping) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(Value::Mapping(old)), Value::Mapping(new)) => merge(old, new),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Every parameter reflexd knows, dotted, in the order of [`Config`]'s fields (for
/// docs and launch-file checks).
pub fn parameter_names() -> Vec<String> {
    let value = serde_yaml_ng::to_value(Config::default()).expect("the default config serializes");
    let mut names = Vec::new();
    fn walk(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Mapping(m) => {
                for (k, v) in m {
                    let k = k.as_str().unwrap_or_default();
                    let name = if prefix.is_empty() {
                        k.to_string()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&name, v, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }
    walk("", &value, &mut names);
    names
}

/// Checks one parameter's name and type as `-p name:=value` would set it: an unknown
/// name or a value of the wrong type is an error. Values are validated together (a
/// joint list needs the joint_state source, say): check whole configurations with
/// [`from_texts`].
pub fn check_parameter(name: &str, value: &str) -> Result<(), RosParamsError> {
    let args = RosArgs {
        params: vec![(name.to_string(), value.to_string())],
        ..RosArgs::default()
    };
    let params = overrides(&args)?;
    let config: Config = serde_yaml_ng::from_value(Value::Mapping(params))
        .map_err(|e| RosParamsError::Args(format!("-p {name}:={value}: {e}")))?;
    let _ = config;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TransportKind;
    use crate::ros2_config::{JointField, ObservationSourceKind};

    fn texts(text: &str) -> Vec<(PathBuf, String)> {
        vec![(PathBuf::from("params.yaml"), text.to_string())]
    }

    const FILE: &str = r#"
/**:
  ros__parameters:
    robot_id: arm_1
    rate_hz: 100          # Hz (an integer is fine for a double)
    policy.path: /opt/reflex/policy.onnx
    transport:
      kind: ros2
      ros2:
        observation:
          source: joint_state
          joints: [shoulder, elbow]
          fields: [position]
reflexd_arm_1:
  ros__parameters:
    safety.watchdog_ms: 250
other_node:
  ros__parameters:
    not_ours: 1
"#;

    #[test]
    fn nested_and_dotted_parameters_make_the_config() {
        let c = from_texts(&texts(FILE), &RosArgs::default()).unwrap();
        assert_eq!(c.robot_id, "arm_1");
        assert_eq!(c.rate_hz, 100.0);
        assert_eq!(c.policy.path, PathBuf::from("/opt/reflex/policy.onnx"));
        assert_eq!(c.transport.kind, TransportKind::Ros2);
        let obs = &c.transport.ros2.observation;
        assert_eq!(obs.source, ObservationSourceKind::JointState);
        assert_eq!(obs.joints, ["shoulder", "elbow"]);
        assert_eq!(obs.fields, [JointField::Position]);
        // The entry named after the node applies, other nodes' entries do not.
        assert_eq!(c.safety.watchdog_ms, 250);
        // Untouched keys keep their defaults.
        assert_eq!(c.fleet, Config::default().fleet);
    }

    #[test]
    fn an_entry_named_after_the_node_it_configures_applies() {
        // The robot id inside the entry gives the node the entry is named after.
        let c = from_texts(
            &texts(
                "reflexd_cell_7:\n  ros__parameters:\n    robot_id: cell_7\n    rate_hz: 30.0\n",
            ),
            &RosArgs::default(),
        )
        .unwrap();
        assert_eq!((c.robot_id.as_str(), c.rate_hz), ("cell_7", 30.0));
        // An entry for another robot's node does not apply.
        let other = from_texts(
            &texts("/**:\n  ros__parameters:\n    robot_id: r1\nreflexd_r2:\n  ros__parameters:\n    robot_id: r3\n"),
            &RosArgs::default(),
        )
        .unwrap();
        assert_eq!(other.robot_id, "r1");
    }

    #[test]
    fn ros_args_override_and_remap() {
        let args = RosArgs::parse(&[
            "--ros-args",
            "-r",
            "__node:=arm_driver",
            "-r",
            "__ns:=/cell_3",
            "-p",
            "rate_hz:=25.5",
            "--param",
            "transport.ros2.observation.joints:=[a, b, c]",
            "--log-level",
            "info",
        ])
        .unwrap();
        assert_eq!(args.node_name.as_deref(), Some("arm_driver"));
        let c = from_texts(&texts(FILE), &args).unwrap();
        assert_eq!(c.rate_hz, 25.5);
        assert_eq!(c.transport.ros2.node_name, "arm_driver");
        assert_eq!(c.transport.ros2.namespace, "/cell_3");
        assert_eq!(c.transport.ros2.observation.joints, ["a", "b", "c"]);
        // The reflexd_arm_1 entry no longer names this node.
        assert_eq!(c.safety.watchdog_ms, Config::default().safety.watchdog_ms);
    }

    #[test]
    fn unknown_parameters_and_bad_values_are_errors() {
        let unknown = from_texts(
            &texts("/**:\n  ros__parameters:\n    rate_hzz: 5\n"),
            &RosArgs::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(unknown.contains("rate_hzz"), "{unknown}");
        let invalid = from_texts(
            &texts("/**:\n  ros__parameters:\n    rate_hz: 0.0\n"),
            &RosArgs::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(invalid.contains("rate_hz"), "{invalid}");
        let typed = from_texts(
            &texts("/**:\n  ros__parameters:\n    rate_hz: fast\n"),
            &RosArgs::default(),
        );
        assert!(typed.is_err());
        let not_params = from_texts(&texts("/**:\n  parameters: {}\n"), &RosArgs::default())
            .unwrap_err()
            .to_string();
        assert!(not_params.contains("ros__parameters"), "{not_params}");
        // A typo in an entry named after this node is reported, not taken for
        // another node's entry and skipped unseen.
        let node_typo = from_texts(
            &texts(
                "/**:\n  ros__parameters:\n    robot_id: robot-2\nreflexd_robot_2:\n  \
                 ros__parameters:\n    safety.start_estoped: true\n",
            ),
            &RosArgs::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(node_typo.contains("start_estoped"), "{node_typo}");
        assert!(RosArgs::parse(&["-r", "chatter:=talk"]).is_err());
        assert!(RosArgs::parse(&["-p", "rate_hz"]).is_err());
        assert!(RosArgs::parse(&["--enclave", "x"]).is_err());
        assert!(check_parameter("policy.path", "/x.onnx").is_ok());
        assert!(check_parameter("policy.pth", "/x.onnx").is_err());
        assert!(check_parameter("rate_hz", "\"fast\"").is_err());
    }

    #[test]
    fn parameter_names_cover_the_config() {
        let names = parameter_names();
        for name in [
            "robot_id",
            "rate_hz",
            "policy.path",
            "transport.kind",
            "transport.ros2.namespace",
            "transport.ros2.observation.joints",
            "transport.ros2.qos.status.durability",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing");
        }
        for name in &names {
            // Every name is settable with its default's YAML form.
            assert!(!name.is_empty());
        }
    }
}
