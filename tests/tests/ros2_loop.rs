//! The robot loop over ROS 2, across processes, inside a private network namespace
//! (DDS multicast never leaves it): `reflex-sim serve --transport ros2` plays a
//! CartPole robot on reflexd's `~/observation` / `~/action` topics, `reflexd run
//! --ros-params` (ROS 2 parameter YAML) controls it for well over 1,000 ticks, and this
//! test stands in for the learner on `~/transitions` and watches `~/status`.
//!
//! Every transition that arrives is checked against the simulator's own record of
//! the step it took (obs, action, reward, next obs, flags: identical), and the
//! daemon's accounting must show nothing lost.
//!
//! The binaries must be built first (`cargo build --bins`).

#[path = "../../trainer/tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{bin, u, Proc};

use reflex_msgs::{Status, TransitionBatch};
use reflex_ros2::{Link, Qos};
use reflex_sim::node::StepRecord;
use reflex_tests::netns;

const DOMAIN: u16 = 42;

#[test]
fn sim_and_daemon_over_ros2() {
    netns::run_inside("inside_netns_sim_and_daemon_over_ros2");
}

#[test]
#[ignore = "runs inside a network namespace: started by sim_and_daemon_over_ros2"]
fn inside_netns_sim_and_daemon_over_ros2() {
    assert!(netns::inside(), "run through sim_and_daemon_over_ros2");
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.onnx");
    reflex_tests::write_cartpole_policy(&policy, &[32, 32], 5);
    let record = dir.path().join("sim.jsonl");
    // ROS 2 parameter YAML, as `ros2 launch` would pass it; -p overrides below.
    let params = dir.path().join("reflexd.yaml");
    std::fs::write(
        &params,
        format!(
            r#"/**:
  ros__parameters:
    robot_id: r0
    rate_hz: 200.0              # Hz
    status_interval_ms: 100     # ms
    policy:
      path: {policy}
      reload_poll_ms: 0
    mode:
      kind: explore
      seed: 7
      epsilon: 0.3
    spool.retry_ms: 50          # ms
    batching:
      transitions_per_batch: 16
      max_latency_ms: 50        # ms
    safety.watchdog_ms: 1000    # ms
    transport:
      kind: ros2
"#,
            policy = policy.display()
        ),
    )
    .unwrap();

    // The learner's stand-in: transitions and status of robot r0.
    let learner = Link::open(DOMAIN, "/", "learner").unwrap();
    let mut transitions = learner
        .deep_subscription::<TransitionBatch>(
            "/reflexd_r0/transitions",
            Qos {
                reliable: true,
                transient_local: false,
                depth: 0,
                max_blocking: Duration::ZERO,
            },
            4096,
        )
        .unwrap();
    let mut status = learner
        .subscription::<Status>(
            "/reflexd_r0/status",
            Qos {
                reliable: true,
                transient_local: true,
                depth: 1,
                max_blocking: Duration::ZERO,
            },
        )
        .unwrap();

    let mut sim = Proc::spawn(
        "reflex-sim serve",
        Command::new(bin("reflex-sim"))
            .args([
                "serve",
                "--transport",
                "ros2",
                "--ros-domain",
                &DOMAIN.to_string(),
                "--env",
                "cartpole",
                "--robot",
                "r0",
                "--seed",
                "3",
                "--idle-timeout-s",
                "60",
                "--record",
            ])
            .arg(&record),
        dir.path().join("sim.log"),
    );
    let mut daemon = Proc::spawn(
        "reflexd run",
        Command::new(bin("reflexd"))
            .args(["run", "--ros-params"])
            .arg(&params)
            .args([
                "--ros-args",
                "-p",
                &format!("transport.ros2.domain_id:={DOMAIN}"),
            ])
            .env("RUST_LOG", "info,rustdds=warn,ros2_client=warn"),
        dir.path().join("reflexd.log"),
    );

    let mut batches: Vec<TransitionBatch> = Vec::new();
    let mut statuses: Vec<Status> = Vec::new();
    let count = |b: &[TransitionBatch]| b.iter().map(|b| b.transitions.len()).sum::<usize>();
    let end = Instant::now() + Duration::from_secs(90);
    while count(&batches) < 1500 || statuses.last().is_none_or(|s| s.ticks < 1000) {
        assert!(
            Instant::now() < end,
            "only {} transitions and {} status messages in 90 s:\n--- reflexd ---\n{}\n--- sim ---\n{}",
            count(&batches),
            statuses.len(),
            daemon.log(),
            sim.log()
        );
        transitions.drain(&mut batches);
        status.drain(&mut statuses);
        std::thread::sleep(Duration::from_millis(20));
    }
    sim.assert_running();
    daemon.assert_running();
    // Stop the daemon (it flushes to the learner), collect the rest, stop the robot.
    let daemon_log_path = dir.path().join("reflexd.log");
    // Keep reading while the daemon shuts down: its last batch comes then.
    daemon.signal("TERM");
    let quiet = Instant::now() + Duration::from_secs(2);
    while Instant::now() < quiet {
        transitions.drain(&mut batches);
        std::thread::sleep(Duration::from_millis(5));
    }
    let report = daemon.stop_json();
    let sim_report = sim.stop_json();
    assert_eq!(transitions.errors(), 0);

    // Accounting: nothing lost, everything sent arrived, in order.
    let produced = u(&report, "transitions_produced") + u(&report, "transitions_recovered");
    let (sent, spooled, dropped) = (
        u(&report, "transitions_sent"),
        u(&report, "transitions_spooled"),
        u(&report, "transitions_dropped"),
    );
    assert_eq!(produced, sent + spooled + dropped, "{report}");
    assert_eq!(dropped, 0, "{report}");
    assert!(u(&report, "ticks") >= 1000, "{report}");
    let received = count(&batches) as u64;
    let seqs: Vec<u64> = batches.iter().map(|b| b.batch_seq).collect();
    assert_eq!(
        received,
        sent,
        "everything sent arrived: {report}; batches received {} ({:?} .. {:?})\n--- reflexd ---\n{}",
        batches.len(),
        seqs.first(),
        seqs.last(),
        std::fs::read_to_string(&daemon_log_path).unwrap_or_default()
    );
    for (i, b) in batches.iter().enumerate() {
        assert_eq!(b.robot_id, "r0");
        assert_eq!(b.batch_seq, batches[0].batch_seq + i as u64, "batch gap");
    }
    let last = statuses.last().unwrap();
    assert_eq!(last.robot_id, "r0");
    assert!(last.ticks >= 1000 && last.latency_max_us > 0, "{last:?}");

    // Every transition is a step the simulator took, value for value.
    let text = std::fs::read_to_string(&record).unwrap();
    let steps: HashMap<(u64, u32), StepRecord> = text
        .lines()
        .map(|l| serde_json::from_str::<StepRecord>(l).unwrap())
        .map(|r| ((r.episode_id, r.step), r))
        .collect();
    let mut episodes = 0;
    for t in batches.iter().flat_map(|b| &b.transitions) {
        let s = steps
            .get(&(t.episode_id, t.step))
            .unwrap_or_else(|| panic!("no simulator step for {t:?}"));
        assert_eq!(t.obs, s.obs, "obs of {t:?}");
        assert_eq!(t.action, s.action, "action of {t:?}");
        assert_eq!(t.reward, s.reward);
        assert_eq!(t.next_obs, s.next_obs, "next_obs of {t:?}");
        assert_eq!((t.terminated, t.truncated), (s.terminated, s.truncated));
        episodes += usize::from(t.done());
    }
    assert!(episodes >= 3, "only {episodes} episodes");
    assert_eq!(u(&sim_report, "invalid_actions"), 0, "{sim_report}");
    assert_eq!(u(&sim_report, "decode_errors"), 0, "{sim_report}");
    eprintln!(
        "ROS 2 loop: {received} transitions in {} batches, {episodes} episodes, {} simulator steps; daemon {report}",
        batches.len(),
        steps.len()
    );
}
