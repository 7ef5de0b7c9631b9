//! reflexd against a non-Rust ROS 2 peer: a Python process on Cyclone DDS (the
//! `cyclonedds` package from PyPI, with the same IDL types; `scripts/ros2_interop.py`)
//! plays a robot that publishes `sensor_msgs/JointState` and `reflex_msgs/StepInfo`
//! and takes `std_msgs/Float64MultiArray` actions and `reflex_msgs/TransitionBatch`es
//! from reflexd. Values must be identical both ways. A `std_msgs/String` echo checks
//! the plainest type too. Everything runs inside a private network namespace.
//!
//! Needs `cargo build --bins` and the Python venv of `scripts/venv-ros2.sh` (made on
//! first use; `.ci/run` makes it up front).

#[path = "../../trainer/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{bin, u, Proc};

use reflex_msgs::ros_std::StringMsg;
use reflex_ros2::{Link, Qos};
use reflex_tests::netns;
use serde_json::Value;

const DOMAIN: u16 = 7;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The venv's python (made by scripts/venv-ros2.sh if missing).
fn python() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo().join("scripts/venv-ros2.sh"))
        .current_dir(repo())
        .output()
        .expect("running scripts/venv-ros2.sh");
    assert!(
        out.status.success(),
        "scripts/venv-ros2.sh failed (it installs cyclonedds from PyPI):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(stdout.lines().last().expect("the venv's python").trim())
}

#[test]
fn reflexd_and_a_cyclonedds_python_robot() {
    // Outside the namespace: make the venv (it needs PyPI), then go in.
    let py = python();
    assert!(py.exists(), "{}", py.display());
    netns::run_inside("inside_netns_reflexd_and_a_cyclonedds_python_robot");
}

#[test]
#[ignore = "runs inside a network namespace: started by reflexd_and_a_cyclonedds_python_robot"]
fn inside_netns_reflexd_and_a_cyclonedds_python_robot() {
    assert!(netns::inside());
    let py = python();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.onnx");
    reflex_tests::write_cartpole_policy(&policy, &[16], 11);
    let params = dir.path().join("reflexd.yaml");
    std::fs::write(
        &params,
        format!(
            r#"reflexd_interop:
  ros__parameters:
    robot_id: interop
    rate_hz: 200.0                  # Hz: several ticks per 50 Hz sensor message
    status_interval_ms: 100         # ms
    policy.path: {policy}
    mode.kind: deploy
    batching:
      transitions_per_batch: 10
      max_latency_ms: 50            # ms
    safety.watchdog_ms: 1000        # ms
    # The robot's states are synthetic (the pole turns past CartPole's bounds):
    # this test checks the wire, not the observation bounds.
    safety.observation_bounds: false
    transport:
      kind: ros2
      ros2:
        domain_id: {DOMAIN}
        observation:
          source: joint_state
          topic: /joint_states
          joints: [cart, pole]
          fields: [position, velocity]
          step_info_topic: "~/step_info"
        action:
          sink: float64_multi_array
          topic: "~/commands"
"#,
            policy = policy.display()
        ),
    )
    .unwrap();
    let mut daemon = Proc::spawn(
        "reflexd run",
        Command::new(bin("reflexd"))
            .args(["run", "--ros-params"])
            .arg(&params)
            .env("RUST_LOG", "info,rustdds=warn,ros2_client=warn"),
        dir.path().join("reflexd.log"),
    );
    let steps = 150;
    let out = dir.path().join("robot.json");
    let robot = Command::new(&py)
        .arg(repo().join("scripts/ros2_interop.py"))
        .args(["robot", "--domain", &DOMAIN.to_string(), "--steps"])
        .arg(steps.to_string())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    daemon.assert_running();
    assert!(
        robot.status.success(),
        "the Python robot failed:\n{}\n--- reflexd ---\n{}",
        String::from_utf8_lossy(&robot.stderr),
        daemon.log()
    );
    let report = daemon.stop_json();
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let sent = r["sent"].as_array().unwrap();
    let actions = r["actions"].as_array().unwrap();
    let transitions = r["transitions"].as_array().unwrap();
    assert_eq!(sent.len(), steps);

    // What reflexd should have seen at step k: [cart.pos, cart.vel, pole.pos,
    // pole.vel] as float32, the step's reward and flags.
    let obs_of = |k: usize| -> Vec<f64> {
        let s = &sent[k];
        let (p, v) = (&s["position"], &s["velocity"]);
        [&p[0], &v[0], &p[1], &v[1]]
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let floats = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    assert!(
        transitions.len() >= steps * 9 / 10,
        "{} transitions for {steps} steps; reflexd {report}",
        transitions.len()
    );
    for t in transitions {
        let obs = floats(&t["obs"]);
        let k = (0..steps)
            .find(|&k| obs_of(k) == obs)
            .unwrap_or_else(|| panic!("transition obs {obs:?} is no sensor message"));
        assert!(k + 1 < steps);
        assert_eq!(
            floats(&t["next_obs"]),
            obs_of(k + 1),
            "next_obs of step {k}"
        );
        let next = &sent[k + 1];
        assert_eq!(
            t["reward"].as_f64(),
            next["reward"].as_f64(),
            "reward of step {k}"
        );
        assert_eq!(
            t["terminated"], next["terminated"],
            "terminated of step {k}"
        );
        assert_eq!(t["truncated"], false);
        assert_eq!(t["robot_id"], "interop");
        assert_eq!(
            t["episode_id"].as_u64(),
            Some(k as u64 / 50),
            "episode of step {k}"
        );
        assert_eq!(
            t["step"].as_u64(),
            Some(k as u64 % 50),
            "step index of step {k}"
        );
        assert_eq!(t["action"]["kind"], 0, "discrete");
        assert!(t["action"]["index"].as_u64().unwrap() < 2);
    }
    // Each action reached the robot as Float64MultiArray [index], in order, and
    // the transitions carry the same actions.
    let sent_actions: Vec<f64> = actions.iter().map(|a| floats(&a["data"])[0]).collect();
    assert!(sent_actions.iter().all(|a| *a == 0.0 || *a == 1.0));
    let recorded: Vec<f64> = transitions
        .iter()
        .map(|t| t["action"]["index"].as_f64().unwrap())
        .collect();
    assert!(
        sent_actions.len() >= recorded.len(),
        "{} actions, {} transitions",
        sent_actions.len(),
        recorded.len()
    );
    assert!(
        sent_actions
            .windows(recorded.len().max(1))
            .any(|w| w == recorded.as_slice()),
        "the transitions' actions are not the actions the robot received"
    );
    assert_eq!(u(&report, "transitions_dropped"), 0, "{report}");

    // std_msgs/String both ways.
    let link = Link::open(DOMAIN, "/", "interop_chatter").unwrap();
    let qos = Qos {
        reliable: true,
        transient_local: false,
        depth: 10,
        max_blocking: Duration::from_millis(100),
    };
    let chatter = link
        .publisher::<StringMsg>("/reflexd_interop/chatter_out", qos)
        .unwrap();
    let mut echoes = link
        .subscription::<StringMsg>("/reflexd_interop/chatter_in", qos)
        .unwrap();
    let mut echo = Command::new(&py)
        .arg(repo().join("scripts/ros2_interop.py"))
        .args([
            "string-echo",
            "--domain",
            &DOMAIN.to_string(),
            "--count",
            "3",
        ])
        .spawn()
        .unwrap();
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    while got.len() < 3 && Instant::now() < end {
        if chatter.subscriptions() > 0 {
            chatter
                .publish(StringMsg {
                    data: format!("hello {i} ✓"),
                })
                .unwrap();
            i += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
        echoes.drain(&mut got);
    }
    let _ = echo.wait();
    assert!(got.len() >= 3, "echoes: {got:?}");
    for g in &got {
        assert!(
            g.data.starts_with("echo: hello ") && g.data.ends_with(" ✓"),
            "{g:?}"
        );
    }
    eprintln!(
        "interop: {} transitions and {} actions checked value for value; reflexd {report}",
        transitions.len(),
        actions.len()
    );
}
