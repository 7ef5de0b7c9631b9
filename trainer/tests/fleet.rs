//! End to end: `reflex-train fleet --robots 2` — the learner, two `reflex-sim
//! serve` robots and their `reflexd` daemons as separate processes on loopback —
//! learns over the wire within a fixed transition budget, CartPole with DQN and
//! Pendulum with TD3 (continuous actions: Gaussian noise on the robots), and the
//! accounting closes: transitions sent by the daemons = received by the learner +
//! counted losses.
//!
//! Needs the `reflex-sim` and `reflexd` binaries next to `reflex-train`
//! (`cargo test --workspace` builds them; otherwise this test builds them).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

fn sibling(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_reflex-train"))
        .parent()
        .unwrap()
        .join(name)
}

/// One fleet at a time: each is five processes that must keep up in real time.
static FLEET: Mutex<()> = Mutex::new(());

/// Runs `reflex-train fleet` with `args` in a fresh folder; checks what
/// [`fleet_in`] checks, and returns the summary.
fn fleet(name: &str, args: &[&str]) -> serde_json::Value {
    let _one = FLEET.lock().unwrap_or_else(|e| e.into_inner());
    let out = std::env::temp_dir().join(format!("reflex-fleet-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let summary = fleet_in(&out, args);
    std::fs::remove_dir_all(&out).ok();
    summary
}

/// Builds `reflex-sim` and `reflexd` if they are not next to `reflex-train`.
fn robot_binaries() {
    if !(sibling("reflex-sim").exists() && sibling("reflexd").exists()) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "reflex-sim", "-p", "reflex-daemon", "--bins"])
            .status()
            .expect("running cargo build");
        assert!(
            status.success(),
            "build the robot binaries: cargo build -p reflex-sim -p reflex-daemon"
        );
    }
}

/// Runs `reflex-train fleet` with `args` on the run folder `out`; checks that it
/// succeeded, that nothing was lost silently and that a policy was published;
/// returns the summary, with the published policy's algorithm and action kind.
fn fleet_in(out: &std::path::Path, args: &[&str]) -> serde_json::Value {
    robot_binaries();
    let output = Command::new(env!("CARGO_BIN_EXE_reflex-train"))
        .arg("fleet")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("running reflex-train fleet");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "fleet failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().expect("a summary line");
    let summary: serde_json::Value = serde_json::from_str(last).expect("JSON summary");
    eprintln!("{stderr}\n{summary:#}");

    let get = |k: &str| {
        summary[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} in {summary}"))
    };
    assert_eq!(summary["robots"], 2);
    assert!(get("policy_version") >= 2.0);
    let policy = PathBuf::from(summary["policy"].as_str().unwrap());
    assert!(policy.exists());
    // Nothing lost silently.
    let (sent, received, lost) = (
        get("transitions_sent"),
        get("transitions_received"),
        get("lost_in_transit"),
    );
    assert!(received > 0.0);
    assert_eq!(sent, received + lost, "{summary}");
    // Loopback loses nothing, and every gap the learner saw in the robots'
    // episodes is a step their daemons say they did not send (a watchdog trip,
    // a stale observation): none is unexplained.
    assert_eq!(lost, 0.0, "{summary}");
    assert_eq!(summary["accounting"], "daemon final reports", "{summary}");
    assert!(
        get("steps_missing") <= get("steps_unsent"),
        "the learner saw gaps the daemons did not account for: {summary}"
    );
    assert_eq!(
        get("transitions_produced"),
        sent + get("transitions_spooled") + get("transitions_dropped") - lost,
        "{summary}"
    );
    // The published policy as robots load it.
    let loaded = reflex_daemon::Policy::load(&policy).expect("policy.onnx loads in reflexd");
    let mut summary = summary;
    summary["spec_algorithm"] = loaded.spec().algorithm.clone().into();
    summary["spec_continuous"] =
        matches!(loaded.spec().action_space, reflex_msgs::ActionSpace::Box(_)).into();
    summary["spec_recurrent_hidden"] = loaded.spec().recurrent_hidden_size.into();
    // The learner's own account of what it stored.
    let learner: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("learner.json")).unwrap()).unwrap();
    summary["learner_inserted"] = learner["transitions_inserted"].clone();
    summary["learner_invalid"] = learner["invalid_transitions"].clone();
    // The learning curve: the robots' episodes and the learner's evaluations, by
    // transitions inserted (which only grows), drawn as curve.png.
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let mut lines = metrics.lines();
    assert_eq!(
        lines.next(),
        Some("step,episode_return,eval_return,robot,updates,policy_version,elapsed_s")
    );
    let (mut episodes, mut evals, mut last) = (0u64, 0u64, 0u64);
    for line in lines {
        let cols: Vec<&str> = line.split(',').collect();
        let step: u64 = cols[0].parse().unwrap();
        assert!(step >= last, "steps go back: {line}");
        last = step;
        episodes += u64::from(!cols[1].is_empty() && !cols[3].is_empty());
        evals += u64::from(!cols[2].is_empty());
    }
    assert!(episodes > 0, "{metrics}");
    summary["metrics_episodes"] = episodes.into();
    summary["metrics_evals"] = evals.into();
    let curve = std::fs::metadata(out.join("curve.png")).expect("curve.png");
    assert!(curve.len() > 10_000, "{curve:?}");
    summary
}

#[test]
fn fleet_of_two_learns_cartpole_over_zenoh() {
    let summary = fleet(
        "cartpole",
        &[
            "--env",
            "cartpole",
            "--robots",
            "2",
            // 400 Hz and a 64×64 network let the learner keep its samples-per-insert
            // ratio on a 2-core machine while four other processes run (measured:
            // solved after ~38k transitions, 50 s).
            "--max-transitions",
            "80000",
            "--rate-hz",
            "400",
            "--set",
            "dqn.net.hidden=[64,64]",
        ],
    );
    // It learned: CartPole's "solved" bar on the published policy, run by tract.
    assert!(
        summary["eval_mean_return"].as_f64().unwrap() >= 475.0,
        "{summary}"
    );
    assert_eq!(summary["spec_algorithm"], "dqn");
    assert_eq!(summary["spec_continuous"], false);
    // The evaluation that decided "solved" is on the curve.
    assert!(summary["metrics_evals"].as_u64().unwrap() >= 1, "{summary}");
}

#[test]
fn fleet_of_two_learns_pendulum_with_td3_over_zenoh() {
    let summary = fleet(
        "pendulum-td3",
        &[
            "--env",
            "pendulum",
            "--algo",
            "td3",
            "--robots",
            "2",
            // A shorter warm-up than the preset's 10k transitions: the robots'
            // noise explores from the first step. A debug build's learner makes
            // about 200 updates/s here and solves after 6–9k updates.
            "--set",
            "td3.learning_starts=3000",
            "--max-transitions",
            "60000",
            "--rate-hz",
            "400",
        ],
    );
    // It learned: a swing-up held upright (−200, the fleet's Pendulum bar; the
    // untrained policy scores about −1500), on the published policy run by the
    // robots' runtime.
    assert!(
        summary["eval_mean_return"].as_f64().unwrap() >= -200.0,
        "{summary}"
    );
    assert_eq!(summary["solved"], true, "{summary}");
    assert_eq!(summary["spec_algorithm"], "td3");
    assert_eq!(summary["spec_continuous"], true);
}

#[test]
fn a_resumed_fleet_continues_from_the_last_checkpoint() {
    let _one = FLEET.lock().unwrap_or_else(|e| e.into_inner());
    let out = std::env::temp_dir().join(format!("reflex-fleet-test-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let args = [
        "--env",
        "cartpole",
        "--robots",
        "2",
        "--max-transitions",
        "3000",
        "--set",
        "dqn.learning_starts=500",
    ];
    let first = fleet_in(&out, &args);
    assert_eq!(first["stop_reason"], "max_transitions", "{first}");
    let updates = first["updates"].as_u64().unwrap();
    assert!(updates > 0, "{first}");

    let mut again = args.to_vec();
    again.push("--resume");
    let second = fleet_in(&out, &again);
    // It trained on: the finished run's learner.json (done) must not stop it.
    assert_eq!(second["stop_reason"], "max_transitions", "{second}");
    assert!(
        second["updates"].as_u64().unwrap() > updates,
        "{first}\n{second}"
    );
    assert!(second["policy_version"].as_u64() > first["policy_version"].as_u64());
    // The resumed learner added to the run's metrics.
    assert!(
        second["metrics_episodes"].as_u64() > first["metrics_episodes"].as_u64(),
        "{first}\n{second}"
    );
    let log = std::fs::read_to_string(out.join("logs/learner.log")).unwrap();
    assert!(log.contains("resuming from"), "{log}");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn a_drqn_fleet_trains_on_sequences_with_the_robots_stored_state() {
    // Plumbing, not learning (DRQN needs minutes to learn masked CartPole here):
    // the robots run the recurrent policy and send their LSTM state with every
    // step; the learner assembles sequences from them, trains, and publishes
    // recurrent policies the robots load.
    let summary = fleet(
        "drqn",
        &[
            "--env",
            "cartpole-masked",
            "--algo",
            "drqn",
            "--robots",
            "2",
            "--max-transitions",
            "4000",
            "--set",
            "drqn.learning_starts=1000",
        ],
    );
    assert_trained_on_sequences(&summary, "drqn", false);
}

/// A short recurrent fleet ran to its budget, trained, published a recurrent
/// `algo` policy with the preset's LSTM, and every step carried a usable
/// state: none refused, all stored.
fn assert_trained_on_sequences(summary: &serde_json::Value, algo: &str, continuous: bool) {
    assert_eq!(summary["stop_reason"], "max_transitions", "{summary}");
    assert!(summary["updates"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(summary["spec_algorithm"], algo);
    assert_eq!(summary["spec_continuous"], continuous);
    assert_eq!(summary["spec_recurrent_hidden"], 64, "the preset's LSTM");
    assert_eq!(summary["learner_invalid"], 0, "{summary}");
    assert_eq!(
        summary["learner_inserted"], summary["transitions_received"],
        "{summary}"
    );
}

#[test]
fn a_recurrent_td3_fleet_trains_on_sequences_of_continuous_actions() {
    // Plumbing, as for DRQN: masked Pendulum's preset is recurrent TD3; the
    // robots feed back their applied (continuous) action and send their
    // actor's LSTM state; the learner trains on sequences of them.
    let summary = fleet(
        "recurrent-td3",
        &[
            "--env",
            "pendulum-masked",
            "--algo",
            "td3",
            "--robots",
            "2",
            "--max-transitions",
            "3000",
            "--set",
            "td3.learning_starts=1000",
        ],
    );
    assert_trained_on_sequences(&summary, "td3", true);
}

/// A learner whose updates go NaN stops the fleet, and the fleet says why
/// instead of publishing NaN policies to the robots.
#[test]
fn a_diverging_learner_stops_the_fleet_with_the_reason() {
    let _one = FLEET.lock().unwrap_or_else(|e| e.into_inner());
    robot_binaries();
    let out = std::env::temp_dir().join(format!("reflex-fleet-test-nan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let output = Command::new(env!("CARGO_BIN_EXE_reflex-train"))
        .args(["fleet", "--env", "cartpole", "--robots", "1"])
        .args([
            "--max-transitions",
            "20000",
            "--set",
            "dqn.learning_starts=300",
        ])
        .args(["--set", "dqn.learning_rate=1e30", "--out"])
        .arg(&out)
        .output()
        .expect("running reflex-train fleet");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("learner exited unexpectedly"), "{stderr}");
    assert!(stderr.contains("training diverged at update"), "{stderr}");
    std::fs::remove_dir_all(&out).ok();
}

/// `/proc/PID/stat`'s fields after the command name (state, ppid, …), or `None`
/// once the process is gone. The name is in parentheses and may hold spaces.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// The processes whose parent is `pid`, from /proc.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&child| {
            stat_fields(child).is_some_and(|f| f.get(1).and_then(|p| p.parse().ok()) == Some(pid))
        })
        .collect()
}

/// Whether `pid` is still a running process (a zombie waiting to be reaped counts
/// as gone: it holds no port and runs nothing).
fn running(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().map(String::as_str) != Some("Z"))
}

/// A fleet killed with SIGKILL runs no cleanup of its own: its learner,
/// simulators and daemons must still stop rather than run on, orphaned, holding
/// the ports and the run folder (the kernel signals them when the fleet dies).
#[test]
fn a_killed_fleet_leaves_no_process_behind() {
    let _one = FLEET.lock().unwrap_or_else(|e| e.into_inner());
    robot_binaries();
    let out = std::env::temp_dir().join(format!("reflex-fleet-test-killed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut fleet = Command::new(env!("CARGO_BIN_EXE_reflex-train"))
        .args(["fleet", "--robots", "1", "--max-transitions", "100000000"])
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting reflex-train fleet");
    // The learner, one simulator and one daemon (the fleet gives its learner up
    // to 120 s to write its first policy before it starts the robots).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(150);
    let kids = loop {
        let kids = children_of(fleet.id());
        if kids.len() >= 3 {
            break kids;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fleet started {} processes in 150 s",
            kids.len()
        );
        assert!(
            fleet.try_wait().unwrap().is_none(),
            "the fleet exited early"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    fleet.kill().unwrap();
    fleet.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left: Vec<u32> = kids.iter().copied().filter(|&p| running(p)).collect();
        if left.is_empty() {
            break;
        }
        if std::time::Instant::now() > deadline {
            for &pid in &left {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            panic!("30 s after the fleet was killed, {left:?} of {kids:?} still run");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::fs::remove_dir_all(&out).ok();
}
