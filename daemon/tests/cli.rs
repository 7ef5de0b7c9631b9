//! The `reflexd` binary: print-default-config round trip, check-config refusals,
//! and `run` refusing transports that are not built yet (zenoh runs: tests/fleet_zenoh.rs
//! in the tests crate).

use std::process::Command;

fn reflexd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_reflexd"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn printed_default_config_passes_check_config() {
    let out = reflexd(&["print-default-config"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text, reflex_daemon::DEFAULT_CONFIG_TOML);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("robot.toml");
    std::fs::write(&path, &text).unwrap();
    let out = reflexd(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        reflex_daemon::Config::load(&path).unwrap(),
        reflex_daemon::Config::default()
    );
}

#[test]
fn check_config_names_the_unknown_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("robot.toml");
    std::fs::write(&path, "robot_id = \"r1\"\n[safety]\nwatchdog_msec = 100\n").unwrap();
    let out = reflexd(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("watchdog_msec"), "{err}");
    assert!(err.contains(path.to_str().unwrap()), "{err}");
}

#[test]
fn run_refuses_the_in_process_transport() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inproc.toml");
    std::fs::write(&path, "[transport]\nkind = \"inproc\"\n").unwrap();
    let out = reflexd(&["run", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("one process"), "{err}");
}

#[test]
fn ros_parameters_configure_reflexd_like_robot_toml() {
    let dir = tempfile::tempdir().unwrap();
    let params = dir.path().join("reflexd.yaml");
    std::fs::write(
        &params,
        "/**:\n  ros__parameters:\n    robot_id: arm_1\n    rate_hz: 100.0\n    transport.kind: ros2\n",
    )
    .unwrap();
    let p = params.to_str().unwrap();
    let ok = reflexd(&[
        "check-config",
        "--ros-params",
        p,
        "--ros-args",
        "-p",
        "rate_hz:=25.0",
    ]);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout.contains("robot arm_1") && stdout.contains("25 Hz") && stdout.contains("Ros2"),
        "{stdout}"
    );
    // An unknown parameter, a bad --ros-args and both sources at once are refused.
    for (args, needle) in [
        (
            vec!["--ros-params", p, "--ros-args", "-p", "rate_hzz:=5"],
            "rate_hzz",
        ),
        (
            vec!["--ros-params", p, "--ros-args", "-r", "chatter:=talk"],
            "__node and __ns",
        ),
        (
            vec!["--config", p, "--ros-params", p],
            "cannot be used with",
        ),
    ] {
        let mut all = vec!["check-config"];
        all.extend(args);
        let out = reflexd(&all);
        assert!(!out.status.success(), "{all:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{all:?}: {err}");
    }
    // `run` with ROS parameters gets as far as the policy file (the transport is
    // built in).
    let out = reflexd(&["run", "--ros-params", p]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("policy.onnx"), "{err}");
}
