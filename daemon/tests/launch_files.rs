//! The ROS 2 launch package `launch/reflex_bringup`: its launch files only pass
//! parameters reflexd knows, with values of the right type, and declare the same
//! arguments in every front end; its parameter files load.
//!
//! No ROS installation is needed: the XML and YAML launch files are read here, and
//! their substitutions are replaced by stand-ins, explicitly:
//!
//! - `$(var NAME)`: the argument's default (itself resolved), or for an argument
//!   without a default or a `let` computed with `$(eval ...)`, the value in
//!   [`STAND_INS`];
//! - `$(find-pkg-share reflex_bringup)`: the package's source folder (its `launch/`
//!   and `config/` are what CMake installs to the share folder);
//! - anything else fails the test, so a new substitution in a launch file has to be
//!   taught here first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use reflex_daemon::config::{Mode, TransportKind};
use reflex_daemon::ros2_config::{ActionSinkKind, JointField, ObservationSourceKind};
use reflex_daemon::ros_params::{self, RosArgs};
use reflex_daemon::Config;

/// The launch arguments every front end declares.
const EXPECTED_ARGS: [&str; 7] = [
    "robot_id",
    "policy",
    "rate_hz",
    "namespace",
    "use_sim",
    "params_file",
    "reflexd",
];

/// Values for what the test does not evaluate: arguments without a default (a value
/// of the kind the argument takes) and `let`s computed with `$(eval ...)`.
const STAND_INS: &[(&str, &str)] = &[
    ("policy", "/opt/reflex/policy.onnx"),
    // `'/' + '$(var namespace)'.strip('/')` with the default namespace "".
    ("ros_namespace", "/"),
];

fn package() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../launch/reflex_bringup")
}

fn read(rel: &str) -> String {
    let path = package().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A `<arg>` / `- arg:` of a launch file.
#[derive(Debug, Clone, PartialEq)]
struct LaunchArg {
    name: String,
    /// `None`: the argument is required.
    default: Option<String>,
    description: Option<String>,
}

/// A process a launch file starts.
#[derive(Debug, Clone, PartialEq)]
struct Executable {
    name: Option<String>,
    cmd: String,
    /// The `if` condition, unresolved.
    condition: Option<String>,
}

/// What a launch file says, substitutions unresolved.
#[derive(Debug, Clone, PartialEq, Default)]
struct Launch {
    args: Vec<LaunchArg>,
    /// `<let name= value=>`, in order.
    lets: Vec<(String, String)>,
    executables: Vec<Executable>,
}

fn parse_xml(text: &str) -> Result<Launch, String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| e.to_string())?;
    let root = doc.root_element();
    if root.tag_name().name() != "launch" {
        return Err(format!(
            "root element <{}>, expected <launch>",
            root.tag_name().name()
        ));
    }
    let mut launch = Launch::default();
    for node in root.children().filter(|n| n.is_element()) {
        let attr = |name: &str| node.attribute(name).map(str::to_string);
        let required = |name: &str| {
            attr(name).ok_or_else(|| format!("<{}> without {name}=", node.tag_name().name()))
        };
        match node.tag_name().name() {
            "arg" => launch.args.push(LaunchArg {
                name: required("name")?,
                default: attr("default"),
                description: attr("description"),
            }),
            "let" => launch.lets.push((required("name")?, required("value")?)),
            "executable" => launch.executables.push(Executable {
                name: attr("name"),
                cmd: required("cmd")?,
                condition: attr("if"),
            }),
            other => return Err(format!("<{other}>: not an element this test knows")),
        }
    }
    Ok(launch)
}

fn parse_yaml(text: &str) -> Result<Launch, String> {
    use serde_yaml_ng::Value;
    let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let entities = doc
        .get("launch")
        .and_then(Value::as_sequence)
        .ok_or("expected `launch:` with a list of entities")?;
    let mut launch = Launch::default();
    for entity in entities {
        let Some((Some(kind), Value::Mapping(fields))) = entity
            .as_mapping()
            .filter(|m| m.len() == 1)
            .and_then(|m| m.iter().next())
            .map(|(k, v)| (k.as_str(), v))
        else {
            return Err(format!("{entity:?}: expected one `kind: {{...}}` entity"));
        };
        // launch_yaml takes strings only (it does not convert 50.0 or false).
        let attr = |name: &str| -> Result<Option<String>, String> {
            match fields.get(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(format!(
                    "{kind}.{name} = {other:?}: launch_yaml needs a string"
                )),
            }
        };
        let required = |name: &str| attr(name)?.ok_or_else(|| format!("{kind} without {name}"));
        match kind {
            "arg" => launch.args.push(LaunchArg {
                name: required("name")?,
                default: attr("default")?,
                description: attr("description")?,
            }),
            "let" => launch.lets.push((required("name")?, required("value")?)),
            "executable" => launch.executables.push(Executable {
                name: attr("name")?,
                cmd: required("cmd")?,
                condition: attr("if")?,
            }),
            other => return Err(format!("`{other}`: not an entity this test knows")),
        }
    }
    Ok(launch)
}

/// Splits a command line on whitespace outside `$(...)`.
fn split_cmd(cmd: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut token = String::new();
    let mut depth = 0usize;
    let mut chars = cmd.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' if chars.peek() == Some(&'(') => {
                depth += 1;
                token.push(c);
                token.push(chars.next().unwrap());
            }
            ')' if depth > 0 => {
                depth -= 1;
                token.push(c);
            }
            c if c.is_whitespace() && depth == 0 => {
                if !token.is_empty() {
                    tokens.push(std::mem::take(&mut token));
                }
            }
            c => token.push(c),
        }
    }
    if !token.is_empty() {
        tokens.push(token);
    }
    tokens
}

/// Resolves launch variables to stand-in values (see the module docs).
struct StandIns {
    vars: BTreeMap<String, String>,
}

impl StandIns {
    fn new(launch: &Launch) -> Result<Self, String> {
        let explicit: BTreeMap<&str, &str> = STAND_INS.iter().copied().collect();
        let mut s = StandIns {
            vars: BTreeMap::new(),
        };
        for arg in &launch.args {
            let value = match (&arg.default, explicit.get(arg.name.as_str())) {
                (Some(default), _) => s.resolve(default)?,
                (None, Some(v)) => v.to_string(),
                (None, None) => {
                    return Err(format!(
                        "argument {} has no default: add a stand-in to STAND_INS",
                        arg.name
                    ))
                }
            };
            s.vars.insert(arg.name.clone(), value);
        }
        for (name, value) in &launch.lets {
            let value = if value.contains("$(eval") {
                explicit
                    .get(name.as_str())
                    .ok_or_else(|| format!("let {name} uses $(eval): add a stand-in to STAND_INS"))?
                    .to_string()
            } else {
                s.resolve(value)?
            };
            s.vars.insert(name.clone(), value);
        }
        Ok(s)
    }

    /// `text` with every `$(var X)` and `$(find-pkg-share reflex_bringup)` replaced.
    fn resolve(&self, text: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("$(") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find(')')
                .ok_or_else(|| format!("{text:?}: unclosed $("))?;
            let inner = &after[..end];
            match inner.split_once(' ') {
                Some(("var", name)) => out.push_str(
                    self.vars
                        .get(name)
                        .ok_or_else(|| format!("{text:?}: $(var {name}) is not declared before"))?,
                ),
                Some(("find-pkg-share", "reflex_bringup")) => {
                    out.push_str(package().to_str().unwrap())
                }
                _ => {
                    return Err(format!(
                        "{text:?}: $({inner}) is not a substitution this test knows"
                    ))
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// The reflexd command's arguments, stand-ins substituted: what it would run with
/// the default launch arguments (and [`STAND_INS`]).
struct ReflexdCommand {
    /// `-p` name and value, in order.
    params: Vec<(String, String)>,
    /// `--ros-params` files.
    ros_params: Vec<PathBuf>,
    /// Everything after `--ros-args`.
    ros_args: Vec<String>,
}

/// Checks a launch file: the arguments (each described, the expected set), and
/// every `-p` of the reflexd command against reflexd's parameters. Returns every
/// problem found.
fn check_launch(launch: &Launch) -> Result<ReflexdCommand, Vec<String>> {
    let mut errors = Vec::new();
    let names: BTreeSet<&str> = launch.args.iter().map(|a| a.name.as_str()).collect();
    let expected: BTreeSet<&str> = EXPECTED_ARGS.into_iter().collect();
    if names != expected || names.len() != launch.args.len() {
        errors.push(format!(
            "arguments {:?}, expected {expected:?} (each once)",
            launch.args.iter().map(|a| &a.name).collect::<Vec<_>>()
        ));
    }
    for arg in &launch.args {
        if arg
            .description
            .as_deref()
            .is_none_or(|d| d.trim().is_empty())
        {
            errors.push(format!("argument {} has no description", arg.name));
        }
    }
    let stand_ins = match StandIns::new(launch) {
        Ok(s) => s,
        Err(e) => return Err([errors, vec![e]].concat()),
    };
    let reflexd: Vec<&Executable> = launch
        .executables
        .iter()
        .filter(|e| split_cmd(&e.cmd).first().map(String::as_str) == Some("$(var reflexd)"))
        .collect();
    let [reflexd] = reflexd[..] else {
        errors.push(format!(
            "expected one executable whose cmd starts with $(var reflexd), found {}",
            reflexd.len()
        ));
        return Err(errors);
    };
    let tokens = split_cmd(&reflexd.cmd);
    if tokens.get(1).map(String::as_str) != Some("run") {
        errors.push(format!(
            "reflexd command {:?}: expected `reflexd run ...`",
            reflexd.cmd
        ));
    }
    let known = ros_params::parameter_names();
    let mut command = ReflexdCommand {
        params: Vec::new(),
        ros_params: Vec::new(),
        ros_args: Vec::new(),
    };
    // Every token resolved; what follows --ros-args is what reflexd parses.
    let mut resolved = Vec::new();
    for token in &tokens {
        match stand_ins.resolve(token) {
            Ok(t) => resolved.push(t),
            Err(e) => {
                errors.push(e);
                resolved.push(token.clone());
            }
        }
    }
    if let Some(at) = tokens.iter().position(|t| t == "--ros-args") {
        command.ros_args = resolved[at + 1..].to_vec();
    }
    for (i, pair) in tokens.windows(2).enumerate() {
        match pair[0].as_str() {
            "--ros-params" => command.ros_params.push(PathBuf::from(&resolved[i + 1])),
            "-p" | "--param" => {
                let assign = &pair[1];
                let Some((name, value)) = assign.split_once(":=") else {
                    errors.push(format!("-p {assign}: expected name:=value"));
                    continue;
                };
                if name.contains("$(") {
                    errors.push(format!("-p {assign}: the parameter name must be literal"));
                } else if !known.iter().any(|k| k == name) {
                    errors.push(format!("-p {assign}: reflexd has no parameter {name:?}"));
                }
                // The stand-in value: what follows := in the resolved token.
                let value_in = resolved[i + 1].split_once(":=").map_or("", |(_, v)| v);
                if let Err(e) = ros_params::check_parameter(name, value_in) {
                    errors.push(format!("-p {name}:={value_in} (from {value:?}): {e}"));
                }
                command
                    .params
                    .push((name.to_string(), value_in.to_string()));
            }
            _ => {}
        }
    }
    for name in ["robot_id", "policy.path", "rate_hz"] {
        if !command.params.iter().any(|(n, _)| n == name) {
            errors.push(format!("the reflexd command does not pass -p {name}:=..."));
        }
    }
    if command.ros_params.len() != 1 {
        errors.push("the reflexd command needs one --ros-params $(var params_file)".into());
    }
    if errors.is_empty() {
        Ok(command)
    } else {
        Err(errors)
    }
}

/// `check_launch`, panicking with every problem.
fn checked(launch: &Launch, file: &str) -> ReflexdCommand {
    check_launch(launch).unwrap_or_else(|errors| panic!("{file}:\n  {}", errors.join("\n  ")))
}

/// The simulator: started only with use_sim, with the robot id and the namespace
/// reflexd gets.
fn check_sim(launch: &Launch, file: &str) {
    let sim: Vec<&Executable> = launch
        .executables
        .iter()
        .filter(|e| e.cmd.starts_with("reflex-sim "))
        .collect();
    assert_eq!(sim.len(), 1, "{file}: one reflex-sim executable");
    assert_eq!(
        sim[0].condition.as_deref(),
        Some("$(var use_sim)"),
        "{file}"
    );
    let tokens = split_cmd(&sim[0].cmd);
    for pair in [
        ["serve", "--transport"],
        ["--transport", "ros2"],
        ["--robot", "$(var robot_id)"],
        ["--ros-namespace", "$(var ros_namespace)"],
    ] {
        assert!(
            tokens.windows(2).any(|w| w == pair),
            "{file}: reflex-sim command {:?} lacks {pair:?}",
            sim[0].cmd
        );
    }
    let reflexd = launch
        .executables
        .iter()
        .find(|e| e.cmd.starts_with("$(var reflexd)"))
        .unwrap();
    assert!(reflexd.condition.is_none(), "{file}: reflexd always starts");
    assert!(
        reflexd.cmd.contains("-r __ns:=$(var ros_namespace)"),
        "{file}: reflexd's namespace is the one the simulator gets"
    );
}

/// The reflexd command as a whole, with the default parameter file: what `ros2
/// launch` with the default arguments would make reflexd load.
fn check_whole_command(command: &ReflexdCommand, file: &str) {
    let args = RosArgs::parse(&command.ros_args)
        .unwrap_or_else(|e| panic!("{file}: {:?}: {e}", command.ros_args));
    let path = &command.ros_params[0];
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{file}: --ros-params {}: {e}", path.display()));
    let config = ros_params::from_texts(&[(path.clone(), text)], &args)
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    assert_eq!(config.robot_id, "robot_1");
    assert_eq!(config.rate_hz, 50.0);
    assert_eq!(config.policy.path, PathBuf::from("/opt/reflex/policy.onnx"));
    assert_eq!(config.transport.kind, TransportKind::Ros2);
    assert_eq!(config.transport.ros2.namespace, "/");
    assert_eq!(
        config.transport.ros2.node_name(&config.robot_id),
        "reflexd_robot_1"
    );
}

#[test]
fn xml_launch_passes_only_known_parameters() {
    let launch = parse_xml(&read("launch/reflexd.launch.xml")).unwrap();
    let command = checked(&launch, "reflexd.launch.xml");
    check_sim(&launch, "reflexd.launch.xml");
    check_whole_command(&command, "reflexd.launch.xml");
}

#[test]
fn yaml_launch_passes_only_known_parameters_and_matches_the_xml() {
    let launch = parse_yaml(&read("launch/reflexd.launch.yaml")).unwrap();
    let command = checked(&launch, "reflexd.launch.yaml");
    check_sim(&launch, "reflexd.launch.yaml");
    check_whole_command(&command, "reflexd.launch.yaml");
    // The two front ends say the same: arguments (defaults, descriptions), lets and
    // commands.
    let xml = parse_xml(&read("launch/reflexd.launch.xml")).unwrap();
    assert_eq!(launch, xml);
}

#[test]
fn python_launch_compiles_and_declares_the_same_arguments() {
    let path = package().join("launch/reflexd.launch.py");
    let text = read("launch/reflexd.launch.py");

    // The declared names: `DeclareLaunchArgument(\s*(['"])(\w+)\1` written out by
    // hand (the daemon has no regex dependency), each declaration with a
    // description.
    let mut declared = Vec::new();
    let parts: Vec<&str> = text.split("DeclareLaunchArgument(").skip(1).collect();
    for part in &parts {
        let body = part.trim_start();
        let quote = body.chars().next().filter(|c| *c == '\'' || *c == '"');
        let quote = quote.unwrap_or_else(|| panic!("DeclareLaunchArgument({body:.40}: name first"));
        let name: String = body[1..].chars().take_while(|c| *c != quote).collect();
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "argument name {name:?}"
        );
        let call = part.split("ExecuteProcess(").next().unwrap();
        assert!(call.contains("description="), "{name}: no description");
        declared.push(name);
    }
    let declared_set: BTreeSet<&str> = declared.iter().map(String::as_str).collect();
    assert_eq!(
        declared_set.len(),
        declared.len(),
        "{declared:?}: a name twice"
    );
    assert_eq!(
        declared_set,
        EXPECTED_ARGS.into_iter().collect::<BTreeSet<_>>()
    );

    // The `name:=` fragments of its commands are the XML's -p names and __ns.
    let assigns: BTreeSet<&str> = text
        .split(['\'', '"'])
        .filter_map(|s| s.strip_suffix(":="))
        .collect();
    let xml = checked(
        &parse_xml(&read("launch/reflexd.launch.xml")).unwrap(),
        "reflexd.launch.xml",
    );
    let mut expected: BTreeSet<&str> = xml.params.iter().map(|(n, _)| n.as_str()).collect();
    expected.insert("__ns");
    assert_eq!(assigns, expected, "reflexd.launch.py's -p/-r names");

    // It compiles (bytecode goes to a temporary folder, not next to the source).
    let cache = tempfile::tempdir().unwrap();
    match Command::new("python3")
        .args(["-m", "py_compile"])
        .arg(&path)
        .env("PYTHONPYCACHEPREFIX", cache.path())
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "python3 -m py_compile {}:\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("note: python3 not found: reflexd.launch.py was not compiled");
        }
        Err(e) => panic!("python3: {e}"),
    }
}

#[test]
fn the_checker_catches_bad_launch_files() {
    let xml = read("launch/reflexd.launch.xml");
    let needle = "-p rate_hz:=$(var rate_hz)";
    assert!(xml.contains(needle));

    // An unknown parameter.
    let typo = xml.replace(needle, &format!("{needle} -p rate_hzz:=5"));
    let errors = check_launch(&parse_xml(&typo).unwrap())
        .err()
        .expect("rate_hzz passed");
    assert!(errors.iter().any(|e| e.contains("rate_hzz")), "{errors:?}");

    // A known parameter with a value of the wrong type (a name for a rate).
    let wrong_type = xml.replace(needle, "-p rate_hz:=$(var robot_id)");
    let errors = check_launch(&parse_xml(&wrong_type).unwrap())
        .err()
        .expect("rate_hz:=robot_1 passed");
    assert!(
        errors.iter().any(|e| e.contains("rate_hz:=robot_1")),
        "{errors:?}"
    );

    // An argument without a description, and one more than expected.
    let undescribed = xml.replace(
        r#"<arg name="reflexd" default="reflexd""#,
        r#"<arg name="extra" default="x"/><arg name="reflexd" default="reflexd""#,
    );
    let undescribed = undescribed.replace("description=\"Control-loop rate, Hz\"", "");
    let errors = check_launch(&parse_xml(&undescribed).unwrap())
        .err()
        .expect("passed");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("rate_hz has no description")),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.contains("\"extra\"")), "{errors:?}");
}

/// Loads a parameter file as `reflexd run --ros-params FILE` would.
fn load_params(name: &str) -> Config {
    let path = package().join("config").join(name);
    let text = read(&format!("config/{name}"));
    ros_params::from_texts(&[(path, text)], &RosArgs::default())
        .unwrap_or_else(|e| panic!("config/{name}: {e}"))
}

#[test]
fn parameter_files_load_and_say_what_they_should() {
    let mut files: Vec<String> = std::fs::read_dir(package().join("config"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "reflexd.yaml",
            "reflexd_mobile_base.yaml",
            "reflexd_sim.yaml"
        ],
        "a new parameter file needs its checks here"
    );
    for name in &files {
        let c = load_params(name);
        assert_eq!(c.transport.kind, TransportKind::Ros2, "{name}");
        let ros2 = &c.transport.ros2;
        let (obs, action) = (&ros2.observation, &ros2.action);
        match name.as_str() {
            "reflexd.yaml" => {
                assert_eq!(obs.source, ObservationSourceKind::JointState);
                assert_eq!(obs.joints, ["cart", "pole"]);
                assert_eq!(obs.fields, [JointField::Position, JointField::Velocity]);
                assert_eq!(ros2.resolve(&c.robot_id, obs.topic()), "/joint_states");
                assert_eq!(
                    ros2.resolve(&c.robot_id, &obs.step_info_topic),
                    "/step_info"
                );
                assert_eq!(action.sink, ActionSinkKind::Float64MultiArray);
                assert_eq!(
                    ros2.resolve(&c.robot_id, action.topic()),
                    "/cart_effort_controller/commands"
                );
                assert_eq!(c.safety.safe_action, [0.0]);
                assert_eq!(c.rate_hz, 50.0);
            }
            "reflexd_sim.yaml" => {
                // Where reflex-sim serve publishes and listens.
                assert_eq!(obs.source, ObservationSourceKind::Reflex);
                assert_eq!(action.sink, ActionSinkKind::Reflex);
                assert_eq!(
                    ros2.resolve(&c.robot_id, obs.topic()),
                    "/reflexd_robot_1/observation"
                );
                assert_eq!(
                    ros2.resolve(&c.robot_id, action.topic()),
                    "/reflexd_robot_1/action"
                );
                assert_eq!(c.mode.kind, Mode::Explore);
            }
            "reflexd_mobile_base.yaml" => {
                assert_eq!(obs.source, ObservationSourceKind::Float64MultiArray);
                assert_eq!(action.sink, ActionSinkKind::Twist);
                assert_eq!(ros2.resolve(&c.robot_id, action.topic()), "/cmd_vel");
                assert_eq!(action.twist_fields, ["linear.x", "angular.z"]);
                assert_eq!(c.safety.safe_action, [0.0, 0.0]);
                assert_eq!(c.rate_hz, 20.0);
            }
            _ => unreachable!(),
        }

        // Under the launch file: its -p overrides and a namespace apply on top.
        let args = RosArgs::parse(&[
            "-r",
            "__ns:=/robot_7",
            "-p",
            "robot_id:=robot_7",
            "-p",
            "policy.path:=/opt/reflex/policy.onnx",
            "-p",
            "rate_hz:=25.0",
        ])
        .unwrap();
        let path = package().join("config").join(name);
        let launched = ros_params::from_texts(&[(path, read(&format!("config/{name}")))], &args)
            .unwrap_or_else(|e| panic!("config/{name} under the launch file: {e}"));
        assert_eq!(launched.robot_id, "robot_7", "{name}");
        assert_eq!(launched.rate_hz, 25.0, "{name}");
        assert_eq!(launched.transport.ros2.namespace, "/robot_7", "{name}");
    }

    // Unknown parameters are refused (the check above can fail).
    let text = read("config/reflexd.yaml");
    let typo = text.replace("    rate_hz: 50.0", "    rate_hzz: 50.0");
    assert_ne!(typo, text);
    let err = ros_params::from_texts(&[(PathBuf::from("typo.yaml"), typo)], &RosArgs::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("rate_hzz"), "{err}");
}
