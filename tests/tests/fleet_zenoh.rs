//! The fleet loop's transport half over real processes: `reflex-sim serve` plays a
//! CartPole robot, `reflexd run` controls it with a freshly exported ONNX Q-network,
//! and this test stands in for the learner on zenoh (peer mode, loopback, scouting
//! off, explicit endpoints, free ports).
//!
//! While nothing subscribes to the robot's transitions the daemon spools them; once
//! the test subscribes, the spool drains in order and every transition arrives well
//! formed; at the end `produced + recovered == sent + spooled + dropped` with nothing
//! dropped and everything sent received.
//!
//! The binaries must be built first (`cargo build -p reflex-daemon -p reflex-sim
//! --bins`): they are found next to this test's executable, in `target/<profile>/`.

#[path = "../../trainer/tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{bin, free_port, Proc};

use reflex_daemon::zenoh::handlers::FifoChannel;
use reflex_daemon::zenoh::Wait;
use reflex_daemon::zenoh_link::{self, decode_sample, ZenohConfig};
use reflex_msgs::{keys, Action, ActionCommand, Observation, Status, Transition, TransitionBatch};

fn u(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// Checks the stream of one robot: batches in order without gaps, transitions well
/// formed and consecutive within each episode, episodes ending with a done flag.
fn check_stream(batches: &[TransitionBatch], robot: &str) -> usize {
    for (i, b) in batches.iter().enumerate() {
        assert_eq!(b.robot_id, robot);
        assert_eq!(
            b.batch_seq,
            batches[0].batch_seq + i as u64,
            "batch gap or reorder"
        );
        assert!(!b.transitions.is_empty());
    }
    let all: Vec<&Transition> = batches.iter().flat_map(|b| &b.transitions).collect();
    for t in &all {
        assert_eq!(t.robot_id, robot);
        assert_eq!(t.obs.len(), 4, "{t:?}");
        assert_eq!(t.next_obs.len(), 4, "{t:?}");
        assert!(matches!(t.action.as_discrete(), Some(0 | 1)), "{t:?}");
        assert!(t.obs.iter().chain(&t.next_obs).all(|x| x.is_finite()));
        assert_eq!(t.reward, 1.0, "CartPole pays 1 per step");
        assert!(!t.truncated || t.step + 1 == 500);
    }
    for pair in all.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.episode_id == b.episode_id {
            assert_eq!(
                b.step,
                a.step + 1,
                "steps not consecutive: {a:?} then {b:?}"
            );
            assert_eq!(a.next_obs, b.obs, "next_obs of one step is obs of the next");
            assert!(!a.done(), "a done transition in mid-episode: {a:?}");
        } else {
            assert!(b.episode_id > a.episode_id, "episodes out of order");
            assert!(
                a.done(),
                "episode {} ended without done: {a:?}",
                a.episode_id
            );
            assert_eq!(
                b.step, 0,
                "episode {} did not start at step 0",
                b.episode_id
            );
        }
    }
    all.len()
}

/// `reflex-sim serve`: a CartPole robot listening on `endpoint`, with `extra`
/// options, its log in `dir`.
fn cartpole_sim(
    dir: &std::path::Path,
    fleet: &str,
    robot: &str,
    endpoint: &str,
    extra: &[&str],
) -> Proc {
    Proc::spawn(
        "reflex-sim serve",
        Command::new(bin("reflex-sim"))
            .args([
                "serve",
                "--env",
                "cartpole",
                "--robot",
                robot,
                "--fleet",
                fleet,
                "--listen",
                endpoint,
                "--seed",
                "3",
                "--idle-timeout-s",
                "60",
            ])
            .args(extra),
        dir.join("sim.log"),
    )
}

#[test]
fn sim_and_daemon_over_zenoh_spool_then_deliver() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("t{}", std::process::id());
    let robot = "r0";
    let sim_endpoint = format!("tcp/127.0.0.1:{}", free_port());
    let learner_endpoint = format!("tcp/127.0.0.1:{}", free_port());

    let policy = dir.path().join("policy.onnx");
    reflex_tests::write_cartpole_policy(&policy, &[32, 32], 5);
    let config = dir.path().join("robot.toml");
    std::fs::write(
        &config,
        format!(
            r#"robot_id = "{robot}"
fleet = "{fleet}"
rate_hz = 200.0
status_interval_ms = 100
[policy]
path = "{policy}"
reload_poll_ms = 0
[mode]
kind = "explore"
epsilon = 0.3
[spool]
retry_ms = 50
[batching]
transitions_per_batch = 16
max_latency_ms = 50
[safety]
watchdog_ms = 1000
[transport]
kind = "zenoh"
[transport.zenoh]
connect = ["{sim_endpoint}", "{learner_endpoint}"]
"#,
            policy = policy.display()
        ),
    )
    .unwrap();

    // The learner's stand-in listens; at first it watches status only.
    let session = zenoh_link::open(&ZenohConfig {
        listen: vec![learner_endpoint.clone()],
        connect: vec![],
        ..ZenohConfig::default()
    })
    .unwrap();
    let status = session
        .declare_subscriber(keys::status_key(&fleet, robot))
        .with(FifoChannel::new(1024))
        .wait()
        .unwrap();

    let mut sim = cartpole_sim(dir.path(), &fleet, robot, &sim_endpoint, &[]);
    let mut daemon = Proc::spawn(
        "reflexd run",
        Command::new(bin("reflexd"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info"),
        dir.path().join("reflexd.log"),
    );

    // Phase 1: nobody subscribes to transitions: they pile up in the spool.
    let latest_status = |timeout: Duration, pred: &dyn Fn(&Status) -> bool| -> Option<Status> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(sample)) = status.recv_timeout(Duration::from_millis(100)) {
                let s: Status = decode_sample(&sample).expect("status decodes");
                if pred(&s) {
                    return Some(s);
                }
            }
        }
        None
    };
    let spooling = latest_status(Duration::from_secs(30), &|s| s.transitions_spooled >= 100);
    sim.assert_running();
    daemon.assert_running();
    let spooling = spooling.unwrap_or_else(|| {
        panic!(
            "the daemon never spooled 100 transitions:\n--- reflexd ---\n{}\n--- sim ---\n{}",
            daemon.log(),
            sim.log()
        )
    });
    assert_eq!(spooling.transitions_sent, 0, "sent with nobody listening");
    assert_eq!(spooling.transitions_dropped, 0);
    // Status carries the loop's histograms; SIGUSR1 logs them on request.
    assert!(spooling.latency_max_us > 0 && spooling.jitter_max_us > 0);
    assert!(spooling.jitter_p50_us <= spooling.jitter_p99_us);
    daemon.signal("USR1");
    let end = Instant::now() + Duration::from_secs(5);
    while !daemon.log().contains("status on request") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = daemon.log();
    assert!(
        log.contains("status on request") && log.contains("jitter_p99_us"),
        "no status line after SIGUSR1:\n{log}"
    );
    daemon.assert_running();

    // Phase 2: the learner subscribes; the spool drains in order.
    let learner = session
        .declare_subscriber(keys::all_robots_key(&fleet, keys::TRANSITIONS))
        .with(FifoChannel::new(100_000))
        .wait()
        .unwrap();
    let mut batches: Vec<TransitionBatch> = Vec::new();
    let mut received = 0u64;
    let mut receive = |timeout: Duration, batches: &mut Vec<TransitionBatch>| {
        while let Ok(Some(sample)) = learner.recv_timeout(timeout) {
            let key = keys::parse_robot_key(sample.key_expr().as_str()).expect("robot key");
            assert_eq!((key.fleet, key.robot), (fleet.as_str(), robot));
            let batch: TransitionBatch = decode_sample(&sample).expect("batch decodes");
            received += batch.transitions.len() as u64;
            batches.push(batch);
        }
    };
    let drained = latest_status(Duration::from_secs(30), &|s| {
        s.transitions_spooled == 0 && s.transitions_sent > spooling.transitions_spooled
    });
    assert!(
        drained.is_some(),
        "the spool never drained:\n{}",
        daemon.log()
    );
    // Let a few more live batches flow.
    std::thread::sleep(Duration::from_millis(500));
    receive(Duration::from_millis(10), &mut batches);

    // Stop the daemon (it flushes what it holds to the learner), then the robot.
    let report = daemon.stop_json();
    receive(Duration::from_millis(500), &mut batches);
    let sim_report = sim.stop_json();

    let produced = u(&report, "transitions_produced") + u(&report, "transitions_recovered");
    let (sent, spooled, dropped) = (
        u(&report, "transitions_sent"),
        u(&report, "transitions_spooled"),
        u(&report, "transitions_dropped"),
    );
    assert_eq!(produced, sent + spooled + dropped, "accounting: {report}");
    assert_eq!(dropped, 0, "{report}");
    assert_eq!(spooled, 0, "a learner was there at shutdown: {report}");
    assert_eq!(received, sent, "everything sent arrived: {report}");
    assert_eq!(batches.len() as u64, u(&report, "batches"), "{report}");
    // What went wrong on the robot side, in the same report: nothing here.
    assert_eq!(u(&report, "bad_observations"), 0, "{report}");
    assert_eq!(u(&report, "policy_errors"), 0, "{report}");
    // The policy it ran, and no swap offered or refused (no learner here).
    let loaded = reflex_daemon::Policy::load(&policy).expect("the policy loads");
    assert_eq!(
        u(&report, "policy_version"),
        loaded.spec().policy_version,
        "{report}"
    );
    assert_eq!(u(&report, "policies_refused"), 0, "{report}");
    assert_eq!(u(&report["safety"], "non_finite"), 0, "{report}");
    assert_eq!(
        batches[0].batch_seq, 0,
        "the oldest spooled batch came first"
    );
    let checked = check_stream(&batches, robot);
    assert_eq!(checked as u64, received);
    let episodes = batches
        .iter()
        .flat_map(|b| &b.transitions)
        .filter(|t| t.done())
        .count() as u64;
    assert!(episodes >= 5, "only {episodes} episodes");
    // The sim saw every step the daemon recorded (and maybe one more in flight).
    let steps = u(&sim_report, "steps");
    assert!(steps >= received, "sim {sim_report} vs received {received}");
    assert_eq!(u(&sim_report, "invalid_actions"), 0, "{sim_report}");
    assert_eq!(u(&sim_report, "decode_errors"), 0, "{sim_report}");
    eprintln!(
        "spooled {} before the learner came; received {received} transitions in {} batches; \
         daemon {report}; sim {sim_report}",
        spooling.transitions_spooled,
        batches.len()
    );
}

/// The protocol's start: observations count from 1, and a command with `seq` 0 —
/// what reflexd sends when its watchdog trips before it has seen an observation —
/// answers none, so it does not step the simulator (once it did, and the fleet's
/// learner saw the robot's first transition at step 1: a step "lost" that no one
/// sent).
#[test]
fn a_command_answering_no_observation_does_not_step_the_sim() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("s{}", std::process::id());
    let robot = "r0";
    let sim_endpoint = format!("tcp/127.0.0.1:{}", free_port());
    let session = zenoh_link::open(&ZenohConfig {
        connect: vec![sim_endpoint.clone()],
        ..ZenohConfig::default()
    })
    .unwrap();
    let obs = session
        .declare_subscriber(keys::obs_key(&fleet, robot))
        .with(FifoChannel::new(1024))
        .wait()
        .unwrap();
    let sim = cartpole_sim(dir.path(), &fleet, robot, &sim_endpoint, &[]);
    let next = |what: &str| -> Observation {
        let sample = obs
            .recv_timeout(Duration::from_secs(20))
            .unwrap()
            .unwrap_or_else(|| panic!("no observation ({what}):\n{}", sim.log()));
        decode_sample(&sample).expect("observation decodes")
    };
    let command = |seq: u64| ActionCommand {
        robot_id: robot.into(),
        seq,
        action: Action::Discrete(1),
        ..ActionCommand::default()
    };
    let action_key = keys::action_key(&fleet, robot);
    // The first observation: seq 1, unless the simulator reissued it under a
    // new seq while this session was connecting (counted; checked below).
    let first = next("the first");
    assert_eq!((first.episode_id, first.step), (0, 0), "{first:?}");
    assert!(first.seq >= 1, "{first:?}");
    // Safe commands answering nothing, as a daemon without observations sends them.
    for _ in 0..20 {
        zenoh_link::put_cdr(&session, &action_key, &command(0)).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    // The simulator only republishes (or reissues) step 0.
    let mut current = first.seq;
    let end = Instant::now() + Duration::from_millis(300);
    while Instant::now() < end {
        if let Ok(Some(sample)) = obs.recv_timeout(Duration::from_millis(50)) {
            let o: Observation = decode_sample(&sample).unwrap();
            assert_eq!(o.step, 0, "a seq-0 command stepped the sim: {o:?}");
            current = o.seq;
        }
    }
    // The answer to the current seq steps it.
    zenoh_link::put_cdr(&session, &action_key, &command(current)).unwrap();
    let stepped = loop {
        let o = next("after the answer");
        if o.step != 0 {
            break o;
        }
        // A reissue crossed the answer: answer that one.
        if o.seq != current {
            current = o.seq;
            zenoh_link::put_cdr(&session, &action_key, &command(current)).unwrap();
        }
    };
    assert_eq!((stepped.seq, stepped.step), (current + 1, 1), "{stepped:?}");
    let report = sim.stop_json();
    assert_eq!(u(&report, "steps"), 1, "{report}");
    assert!(u(&report, "stale_actions") >= 20, "{report}");
    // Observations counted from 1: the first seq was 1 plus the reissues before it.
    assert!(
        first.seq <= 1 + u(&report, "reissued"),
        "{first:?} {report}"
    );
}

/// The test standing in for reflexd in front of one simulated robot: it
/// receives the robot's observations and publishes actions for it.
struct Controller {
    session: reflex_daemon::zenoh::Session,
    observations: reflex_daemon::zenoh::pubsub::Subscriber<
        reflex_daemon::zenoh::handlers::FifoChannelHandler<reflex_daemon::zenoh::sample::Sample>,
    >,
    actions: reflex_daemon::zenoh::pubsub::Publisher<'static>,
}

impl Controller {
    fn connect(endpoint: &str, fleet: &str, robot: &str) -> Self {
        let session = zenoh_link::open(&ZenohConfig {
            connect: vec![endpoint.to_string()],
            ..ZenohConfig::default()
        })
        .unwrap();
        let observations = session
            .declare_subscriber(keys::robot_key(fleet, robot, keys::OBS))
            .with(FifoChannel::new(1024))
            .wait()
            .unwrap();
        let actions = session
            .declare_publisher(keys::robot_key(fleet, robot, keys::ACTION))
            .wait()
            .unwrap();
        Self {
            session,
            observations,
            actions,
        }
    }

    fn send(&self, command: &ActionCommand) {
        let bytes = reflex_msgs::codec::encode(command).unwrap();
        self.actions.put(bytes).wait().unwrap();
    }

    fn close(self) {
        drop(self.actions);
        drop(self.observations);
        let _ = self.session.close().wait();
    }
}

/// `reflex-sim serve` applies only actions addressed to its own robot: one that
/// names another robot (two robots whose keys or topics collide) is dropped,
/// counted as `foreign_actions` and said in the log, even when its `seq`
/// answers the current observation; then the robot's own action is applied.
#[test]
fn the_sim_node_refuses_actions_for_another_robot() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("f{}", std::process::id());
    let robot = "r0";
    let endpoint = format!("tcp/127.0.0.1:{}", free_port());
    let mut sim = cartpole_sim(dir.path(), &fleet, robot, &endpoint, &[]);
    let link = Controller::connect(&endpoint, &fleet, robot);
    // The first observation (republished until answered).
    let first = loop {
        sim.assert_running();
        if let Ok(Some(sample)) = link.observations.recv_timeout(Duration::from_secs(1)) {
            break decode_sample::<Observation>(&sample).unwrap();
        }
    };
    let command = |robot_id: &str| ActionCommand {
        robot_id: robot_id.into(),
        seq: first.seq,
        action: Action::Discrete(1),
        ..ActionCommand::default()
    };
    for _ in 0..3 {
        link.send(&command("r_0"));
    }
    std::thread::sleep(Duration::from_millis(300));
    // The robot's own action, for the newest observation (an unanswered one is
    // reissued under a new seq now and then), until the env steps.
    let mut newest = first.clone();
    let end = Instant::now() + Duration::from_secs(10);
    let stepped = 'stepped: loop {
        assert!(
            Instant::now() < end,
            "no observation after the robot's own action"
        );
        let mut own = command(robot);
        own.seq = newest.seq;
        link.send(&own);
        let wait = Instant::now() + Duration::from_millis(500);
        while let Ok(Some(sample)) = link.observations.recv_timeout(Duration::from_millis(100)) {
            let obs: Observation = decode_sample(&sample).unwrap();
            if obs.step == 1 {
                break 'stepped obs;
            }
            newest = obs;
            if Instant::now() > wait {
                break;
            }
        }
    };
    assert_eq!(stepped.episode_id, first.episode_id);
    link.close();
    let log = sim.log();
    let report = sim.stop_json();
    assert_eq!(u(&report, "foreign_actions"), 3, "{report}");
    assert_eq!(u(&report, "steps"), 1, "{report}");
    assert!(log.contains("dropped an action for robot \"r_0\""), "{log}");
}

/// A simulated robot whose step record cannot be written (a full disk, here
/// /dev/full) stops with the report of what it did until then, `stopped_by`
/// "error" and the reason, and exit status 2, rather than losing the report.
#[test]
fn the_sim_node_reports_what_it_did_when_its_record_fails() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("g{}", std::process::id());
    let robot = "r0";
    let endpoint = format!("tcp/127.0.0.1:{}", free_port());
    let mut sim = cartpole_sim(
        dir.path(),
        &fleet,
        robot,
        &endpoint,
        &["--record", "/dev/full"],
    );
    let link = Controller::connect(&endpoint, &fleet, robot);
    // Answer every observation (alternating pushes keep episodes long) until
    // the robot stops by itself: the record's buffer fills after a few dozen
    // steps, and the write fails inside the loop (not at a final flush).
    let end = Instant::now() + Duration::from_secs(120);
    let mut answered = 0u64;
    while !sim.exited() {
        assert!(Instant::now() < end, "the robot never stopped");
        let Ok(Some(sample)) = link.observations.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let obs: Observation = decode_sample(&sample).unwrap();
        let command = ActionCommand {
            robot_id: robot.into(),
            seq: obs.seq,
            action: Action::Discrete(obs.step % 2),
            ..ActionCommand::default()
        };
        link.send(&command);
        answered += 1;
    }
    link.close();
    let (status, last, log) = sim.stop();
    assert_eq!(status.code(), Some(2), "{log}");
    let report: serde_json::Value = serde_json::from_str(&last).expect("the report, as JSON");
    assert_eq!(report["stopped_by"], "error", "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("step record"), "{error}");
    assert!(
        u(&report, "steps") > 10,
        "{report} after {answered} answers"
    );
    assert!(log.contains("the simulated robot stopped"), "{log}");
}
