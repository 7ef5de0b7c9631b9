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
fn run_refuses_transports_not_built_yet() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, needle) in [("ros2", "not built"), ("inproc", "one process")] {
        let path = dir.path().join(format!("{kind}.toml"));
        std::fs::write(&path, format!("[transport]\nkind = \"{kind}\"\n")).unwrap();
        let out = reflexd(&["run", "--config", path.to_str().unwrap()]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{kind}: {err}");
    }
}
