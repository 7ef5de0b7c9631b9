//! `reflexd check-config` with a real ONNX policy: a config that passes must be
//! one `reflexd run` starts with (systemd runs the check as `ExecStartPre`), so
//! the policy is loaded and checked against the safety and transport settings.
//! The binary must be built first (`cargo build -p reflex-daemon --bins`).

#[path = "../../trainer/tests/support/mod.rs"]
mod support;

use std::process::Command;

use support::bin;

fn check(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.onnx");
    reflex_tests::write_cartpole_policy(&policy, &[16], 1);
    let path = dir.path().join("robot.toml");
    let text = format!(
        "[policy]\npath = {:?}\n{config}",
        policy.display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    let out = Command::new(bin("reflexd"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn check_config_checks_the_policy_against_the_settings() {
    let (ok, text) = check("");
    assert!(ok, "{text}");
    assert!(text.contains("fits"), "{text}");
    // CartPole has two actions: a safe action index of 5 cannot be sent.
    let (ok, text) = check("[safety]\nsafe_action_index = 5\n");
    assert!(!ok, "{text}");
    assert!(text.contains("safe_action"), "{text}");
    // A Twist needs continuous actions.
    let (ok, text) =
        check("[transport]\nkind = \"ros2\"\n[transport.ros2.action]\nsink = \"twist\"\n");
    assert!(!ok, "{text}");
    assert!(text.contains("continuous actions"), "{text}");
    // A transport `run` refuses, refused here too.
    let (ok, text) = check("[transport]\nkind = \"inproc\"\n");
    assert!(!ok, "{text}");
    assert!(text.contains("one process"), "{text}");
    // No policy file: said, not passed off as checked.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("robot.toml");
    std::fs::write(&path, "[policy]\npath = \"/nonexistent/policy.onnx\"\n").unwrap();
    let out = Command::new(bin("reflexd"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("not found, so not checked"), "{stdout}");
}
