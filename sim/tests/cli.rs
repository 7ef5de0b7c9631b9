//! The `reflex-sim` binary as a user runs it.

use std::process::Command;

fn reflex_sim(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reflex-sim"))
        .args(args)
        .output()
        .expect("reflex-sim runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn data(file: &str) -> String {
    format!(
        "{}/../tests/data/gymnasium/{file}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn check_passes_on_reference_and_prints_deviations() {
    let (code, stdout, _) = reflex_sim(&["check", &data("CartPole-v1.jsonl")]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("CartPole-v1: 5 episodes"), "{stdout}");
    assert!(stdout.contains("PASS"), "{stdout}");
    assert!(stdout.contains("step by step"), "{stdout}");
}

#[test]
fn check_fails_on_a_wrong_trajectory_and_errors_on_bad_input() {
    let original = std::fs::read_to_string(data("Pendulum-v1.jsonl")).unwrap();
    // Shift one recorded reward by 1e-3: far beyond the default 1e-5 tolerance.
    let mut shifted = false;
    let tampered: Vec<String> = original
        .lines()
        .map(|line| {
            if shifted || !line.contains("\"t\": 3,") {
                return line.to_string();
            }
            shifted = true;
            let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
            let reward = value["reward"].as_f64().unwrap();
            value["reward"] = serde_json::json!(reward - 1e-3);
            value.to_string()
        })
        .collect();
    assert!(shifted);
    let tampered = tampered.join("\n");
    let path = std::env::temp_dir().join(format!("reflex-sim-cli-{}.jsonl", std::process::id()));
    std::fs::write(&path, tampered).unwrap();
    let (code, stdout, stderr) = reflex_sim(&["check", path.to_str().unwrap()]);
    std::fs::remove_file(&path).ok();
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("FAIL"), "{stdout}");

    let (code, _, stderr) = reflex_sim(&["check", &data("Pendulum-v1.jsonl"), "--tol=-1"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--tol must be a non-negative number"),
        "{stderr}"
    );
    let (code, _, stderr) = reflex_sim(&["check", "/nonexistent/file.jsonl"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("cannot read /nonexistent/file.jsonl"),
        "{stderr}"
    );
}

#[test]
fn run_prints_one_line_per_episode_and_is_reproducible() {
    let args = ["run", "--env", "cartpole", "--episodes", "4", "--seed", "7"];
    let (code, first, _) = reflex_sim(&args);
    assert_eq!(code, 0);
    assert_eq!(
        first.lines().filter(|l| l.starts_with("episode ")).count(),
        4,
        "{first}"
    );
    assert!(first.contains("mean return over 4 episodes"), "{first}");
    let (_, second, _) = reflex_sim(&args);
    assert_eq!(first, second, "same seed, same output");
}

#[test]
fn run_works_for_every_env_and_variant() {
    for env in [
        "acrobot",
        "MountainCar-v0",
        "pendulum",
        "mountaincarcontinuous",
        "cartpole-masked",
        "pendulum-noisy",
        "cartpole-flicker",
    ] {
        let (code, stdout, stderr) = reflex_sim(&["run", "--env", env, "--episodes", "1"]);
        assert_eq!(code, 0, "{env}: {stderr}");
        assert!(stdout.contains("episode 0"), "{env}: {stdout}");
    }
}

#[test]
fn unknown_env_is_a_clear_error() {
    let (code, _, stderr) = reflex_sim(&["run", "--env", "cartpoel"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown env `cartpoel`"), "{stderr}");
    assert!(stderr.contains("cartpole (CartPole-v1)"), "{stderr}");
}

#[test]
fn serve_refuses_values_it_cannot_use_before_touching_the_network() {
    for (args, needle) in [
        (&["--idle-timeout-s", "1e20"][..], "--idle-timeout-s"),
        (&["--idle-timeout-s", "0"][..], "--idle-timeout-s"),
        (
            &["--transport", "ros2", "--ros-domain", "233"][..],
            "0..=232",
        ),
        (&["--max-episodes", "0"][..], "--max-episodes"),
        // Options of the other wire are refused, not ignored.
        (
            &["--transport", "ros2", "--connect", "tcp/127.0.0.1:7447"][..],
            "--connect is a zenoh option",
        ),
        (
            &[
                "--transport",
                "ros2",
                "--listen",
                "tcp/127.0.0.1:7447",
                "--mode",
                "client",
            ][..],
            "--listen, --mode are zenoh options",
        ),
        (&["--ros-domain", "3"][..], "--ros-domain is a ROS 2 option"),
    ] {
        let mut all = vec!["serve", "--env", "cartpole", "--robot", "r0"];
        all.extend_from_slice(args);
        let (code, _, stderr) = reflex_sim(&all);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    // A seed at the top of u64 wraps instead of overflowing.
    let (code, stdout, stderr) = reflex_sim(&[
        "run",
        "--env",
        "cartpole",
        "--episodes",
        "2",
        "--seed",
        "18446744073709551615",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("episode 1 (seed 0)"), "{stdout}");
}
