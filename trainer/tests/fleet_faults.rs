//! Faults in the fleet loop, with real processes on loopback (peer mode, scouting off,
//! explicit endpoints, free ports): the learner (`reflex-train serve`), one simulated
//! robot (`reflex-sim serve`) and its daemon (`reflexd run`).
//!
//! - The learner is SIGKILLed mid-run: the daemon keeps controlling its robot and
//!   spools its transitions; a new learner on the same run folder resumes from the
//!   checkpoint (updates continue from it), the spool drains into it, and learning
//!   goes on. Nothing is dropped: `produced = sent + spooled + dropped`, dropped = 0.
//! - The daemon is SIGKILLed and a new one started with the same robot id: the
//!   learner counts a daemon restart (not duplicates or lost data) and keeps
//!   receiving from that robot.
//!
//! The test watches the daemon's heartbeats itself: it listens on a zenoh endpoint of
//! its own that the daemon also connects to, and subscribes to `reflex/<fleet>/*/status`.
//!
//! Needs the `reflex-sim` and `reflexd` binaries next to `reflex-train`
//! (`cargo build --bins`).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reflex_daemon::zenoh::handlers::{FifoChannel, FifoChannelHandler};
use reflex_daemon::zenoh::pubsub::Subscriber;
use reflex_daemon::zenoh::sample::Sample;
use reflex_daemon::zenoh::Wait;
use reflex_daemon::zenoh_link::{self, decode_sample, ZenohConfig};
use reflex_msgs::{keys, Status};
use reflex_trainer::learner::{read_report, LearnerReport, PUB_FILE};
use support::{bin, free_port, robot_toml, u, wait_for, Proc};

/// One learner, one simulated robot, one daemon, and the test's own status watcher.
struct Rig {
    dir: PathBuf,
    fleet: String,
    learner_endpoint: String,
    sim_endpoint: String,
    watch_endpoint: String,
    config: PathBuf,
    status: Subscriber<FifoChannelHandler<Sample>>,
    _session: reflex_daemon::zenoh::Session,
    last: Option<Status>,
}

const ROBOT: &str = "r0";

impl Rig {
    fn new(test: &str) -> Rig {
        let dir = std::env::temp_dir().join(format!("reflex-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        // One fleet per test (they may run side by side).
        let fleet = format!("{test}-{}", std::process::id());
        let watch_endpoint = format!("tcp/127.0.0.1:{}", free_port());
        let session = zenoh_link::open(&ZenohConfig {
            listen: vec![watch_endpoint.clone()],
            connect: vec![],
            ..ZenohConfig::default()
        })
        .unwrap();
        let status = session
            .declare_subscriber(keys::all_robots_key(&fleet, keys::STATUS))
            .with(FifoChannel::new(10_000))
            .wait()
            .unwrap();
        let learner_endpoint = format!("tcp/127.0.0.1:{}", free_port());
        let sim_endpoint = format!("tcp/127.0.0.1:{}", free_port());
        let config = dir.join("r0.toml");
        Rig {
            dir,
            fleet,
            learner_endpoint,
            sim_endpoint,
            watch_endpoint,
            config,
            status,
            _session: session,
            last: None,
        }
    }

    fn out(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// Starts a learner on the run folder (a second one resumes from its checkpoint).
    fn learner(&self, life: u32) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_reflex-train"));
        cmd.args(["serve", "--env", "cartpole", "--algo", "dqn", "--fleet"])
            .arg(&self.fleet)
            .args(["--listen", &self.learner_endpoint, "--quiet", "--seed", "1"])
            .arg("--out")
            .arg(self.out())
            // Checkpoints often; never "done" during the test.
            .args(["--checkpoint-every", "100", "--eval-every", "0"])
            .args(["--max-transitions", "100000000", "--target-return", "1e9"])
            .args(["--publish-every", "100"])
            .args(["--set", "dqn.net.hidden=[64,64]"])
            .args(["--set", "dqn.learning_starts=200"]);
        let learner = Proc::spawn(
            &format!("learner #{life}"),
            &mut cmd,
            self.dir.join("logs").join(format!("learner-{life}.log")),
        );
        let out = self.out();
        wait_for(
            Duration::from_secs(60),
            "the learner's policy and key",
            || out.join("policy.onnx").exists() && out.join(PUB_FILE).exists(),
        );
        learner
    }

    fn sim(&self) -> Proc {
        let mut cmd = Command::new(bin("reflex-sim"));
        cmd.args(["serve", "--env", "cartpole", "--robot", ROBOT, "--fleet"])
            .arg(&self.fleet)
            .args(["--listen", &self.sim_endpoint, "--seed", "3"])
            .args(["--idle-timeout-s", "60"]);
        Proc::spawn(
            "reflex-sim",
            &mut cmd,
            self.dir.join("logs").join("sim.log"),
        )
    }

    fn daemon(&self, life: u32) -> Proc {
        let mut cmd = Command::new(bin("reflexd"));
        cmd.args(["run", "--config"]).arg(&self.config);
        Proc::spawn(
            &format!("reflexd #{life}"),
            &mut cmd,
            self.dir.join("logs").join(format!("reflexd-{life}.log")),
        )
    }

    /// The robot's TOML (as `reflex-train fleet` writes it, plus the test's endpoint).
    /// Written once the learner has made its key.
    fn write_config(&self) {
        let out = self.out();
        let public_key = std::fs::read_to_string(out.join(PUB_FILE)).unwrap();
        let zenoh = format!(
            "mode = \"peer\"\nconnect = [\"{}\", \"{}\", \"{}\"]\nscouting = false",
            self.learner_endpoint, self.sim_endpoint, self.watch_endpoint
        );
        std::fs::write(
            &self.config,
            robot_toml(
                ROBOT,
                &self.fleet,
                &out.join("policy.onnx"),
                &public_key,
                &zenoh,
            ),
        )
        .unwrap();
    }

    /// Takes every heartbeat queued so far; the newest one.
    fn latest(&mut self) -> Option<Status> {
        while let Ok(Some(sample)) = self.status.try_recv() {
            let s: Status = decode_sample(&sample).expect("status decodes");
            assert_eq!(s.robot_id, ROBOT);
            self.last = Some(s);
        }
        self.last.clone()
    }

    /// Waits for a heartbeat of the robot that satisfies `pred` (heartbeats are taken
    /// in order; call [`Rig::latest`] first to skip old ones).
    fn status_until(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: &dyn Fn(&Status) -> bool,
    ) -> Status {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(sample)) = self.status.recv_timeout(Duration::from_millis(100)) {
                let s: Status = decode_sample(&sample).expect("status decodes");
                assert_eq!(s.robot_id, ROBOT);
                self.last = Some(s.clone());
                if pred(&s) {
                    return s;
                }
            }
        }
        panic!(
            "no heartbeat with {what} within {timeout:?}; last {:?}",
            self.last
        );
    }

    fn report(&self) -> LearnerReport {
        read_report(&self.out()).unwrap_or_default()
    }

    /// Waits for `learner.json` to satisfy `pred`.
    fn report_until(
        &self,
        timeout: Duration,
        what: &str,
        pred: &dyn Fn(&LearnerReport) -> bool,
    ) -> LearnerReport {
        let end = Instant::now() + timeout;
        loop {
            let r = self.report();
            if pred(&r) {
                return r;
            }
            if Instant::now() > end {
                panic!("learner.json never showed {what} within {timeout:?}: {r:#?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn checkpoints(out: &Path) -> usize {
    std::fs::read_dir(out.join("checkpoints"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().ends_with(".partial"))
                .count()
        })
        .unwrap_or(0)
}

/// `learner: resuming from … (N transitions, M updates, …)` → M.
fn resumed_updates(log: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains("resuming from"))?;
    let before = line.split(" updates").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

#[test]
fn learner_restart_resumes_and_daemons_spool_meanwhile() {
    let mut rig = Rig::new("learner-restart");
    let out = rig.out();
    let learner = rig.learner(1);
    rig.write_config();
    let mut sim = rig.sim();
    let mut daemon = rig.daemon(1);

    // Learning is under way and a checkpoint is on disk.
    let before = rig.report_until(Duration::from_secs(40), "updates and a checkpoint", &|r| {
        r.transitions_received >= 600 && r.updates >= 200 && checkpoints(&out) > 0
    });
    assert_eq!(before.robots_seen, 1);
    rig.latest();
    let sent_before = rig
        .status_until(Duration::from_secs(5), "anything sent", &|s| {
            s.transitions_sent > 0
        })
        .transitions_sent;

    // The learner dies without a word.
    learner.kill();
    let killed_at = rig.latest().unwrap();

    // The daemon keeps controlling the robot and spools what it cannot send.
    let spooling = rig.status_until(Duration::from_secs(20), "a spool of 200", &|s| {
        s.transitions_spooled >= 200
    });
    daemon.assert_running();
    sim.assert_running();
    assert!(
        spooling.ticks > killed_at.ticks + 200,
        "the daemon kept ticking: {killed_at:?} then {spooling:?}"
    );
    assert_eq!(spooling.transitions_dropped, 0);
    let frozen = spooling.transitions_sent;
    let later = rig.status_until(Duration::from_secs(10), "a bigger spool", &|s| {
        s.transitions_spooled >= spooling.transitions_spooled + 100
    });
    assert_eq!(
        later.transitions_sent, frozen,
        "nothing can be sent while no learner listens"
    );
    assert!(frozen >= sent_before);

    // A new learner on the same folder resumes from the checkpoint.
    let learner = rig.learner(2);
    let resumed = {
        let log = &learner.log;
        let mut found = None;
        wait_for(Duration::from_secs(30), "the resume line", || {
            found = resumed_updates(&std::fs::read_to_string(log).unwrap_or_default());
            found.is_some()
        });
        found.unwrap()
    };
    assert!(
        resumed >= 100,
        "resumed from a checkpoint at update {resumed}"
    );
    assert!(resumed <= before.updates + 1000);

    // The spool drains into it.
    let spooled_then = rig.latest().unwrap().transitions_spooled;
    let drained = rig.status_until(Duration::from_secs(30), "the spool drained", &|s| {
        s.transitions_spooled == 0 && s.transitions_sent >= frozen + spooled_then
    });
    assert_eq!(drained.transitions_dropped, 0);

    // Learning continues from where the checkpoint left it.
    let after = rig.report_until(
        Duration::from_secs(30),
        "updates past the checkpoint",
        &|r| r.updates >= resumed + 200 && r.transitions_received >= spooled_then,
    );
    assert_eq!(after.robots_seen, 1);
    let r0 = &after.robots[0];
    assert_eq!(r0.restarts, 0, "the daemon did not restart: {after:#?}");
    assert_eq!(r0.duplicate_batches, 0, "{after:#?}");
    assert_eq!(r0.missing_batches, 0, "{after:#?}");
    // (Steps may be missing: batches in flight at the kill died with learner #1.)
    assert!(after.policy_version > 1, "{after:#?}");

    // Clean stop: the daemon's books close with nothing dropped.
    let report = stop_and_close_the_books(daemon, sim, learner);
    let sent = u(&report, "transitions_sent");
    let last = rig.report();
    assert!(last.done && last.stop_reason == "signal", "{last:#?}");
    assert!(last.updates > resumed);
    // The second learner received everything sent after it came up: the spool, then
    // the live stream (only batches in flight at the kill can be lost, and those were
    // counted as sent before it).
    assert!(
        last.transitions_received >= sent - frozen,
        "learner #2 received {} of the {} sent after the kill: {last:#?}",
        last.transitions_received,
        sent - frozen
    );
    eprintln!(
        "learner restart: resumed at update {resumed}, spool peaked at {spooled_then}, \
         final updates {}, policy v{}; daemon {report}",
        last.updates, last.policy_version
    );
    let _ = std::fs::remove_dir_all(&rig.dir);
}

#[test]
fn robot_killed_and_restarted_rejoins() {
    let mut rig = Rig::new("robot-restart");
    let learner = rig.learner(1);
    rig.write_config();
    let mut sim = rig.sim();
    let daemon = rig.daemon(1);

    let before = rig.report_until(Duration::from_secs(40), "transitions from r0", &|r| {
        r.robots
            .first()
            .is_some_and(|r0| r0.transitions_received >= 500)
    });

    // The daemon dies; the robot (simulator) stays up, the learner stays up.
    daemon.kill();
    std::thread::sleep(Duration::from_millis(500));
    sim.assert_running();
    let first_life = rig.latest().expect("heartbeats from the first daemon");
    let stalled = rig.report();
    let received_at_kill = stalled.robots[0].transitions_received;

    // A new daemon with the same robot id takes over.
    let daemon = rig.daemon(2);
    let second_life = rig.status_until(Duration::from_secs(20), "a new daemon's heartbeat", &|s| {
        s.heartbeat_seq < first_life.heartbeat_seq && s.transitions_sent > 0
    });
    assert_eq!(second_life.transitions_dropped, 0);
    let after = rig.report_until(
        Duration::from_secs(30),
        "r0 again after its restart",
        &|r| {
            r.robots.first().is_some_and(|r0| {
                r0.restarts >= 1 && r0.transitions_received >= received_at_kill + 500
            })
        },
    );
    assert_eq!(
        after.robots_seen, 1,
        "the same robot, not a new one: {after:#?}"
    );
    let r0 = &after.robots[0];
    assert_eq!(r0.robot, ROBOT);
    assert_eq!(r0.restarts, 1, "one daemon restart: {after:#?}");
    assert_eq!(
        r0.duplicate_batches, 0,
        "a restart is not duplicates: {after:#?}"
    );
    assert_eq!(
        r0.missing_batches, 0,
        "a restart is not lost batches: {after:#?}"
    );
    assert_eq!(after.decode_errors, 0);
    assert!(
        after.updates > before.updates,
        "learning went on: {after:#?}"
    );

    let report = stop_and_close_the_books(daemon, sim, learner);
    let sent = u(&report, "transitions_sent");
    let last = rig.report();
    let r0 = &last.robots[0];
    assert_eq!(r0.restarts, 1, "{last:#?}");
    // The second daemon's whole output arrived on top of the first's.
    assert!(
        r0.transitions_received >= received_at_kill + sent,
        "received {} = {received_at_kill} before the kill + {sent} sent by the new daemon? {last:#?}",
        r0.transitions_received
    );
    eprintln!(
        "robot restart: {received_at_kill} transitions before the kill, {} in all; \
         second daemon {report}",
        r0.transitions_received
    );
    let _ = std::fs::remove_dir_all(&rig.dir);
}

/// Stops the daemon, the simulator and then the learner (the daemon first, so its
/// spool drains into the learner) and checks the daemon's books: produced +
/// recovered = sent + spooled + dropped, nothing dropped, nothing left spooled (a
/// learner was there at shutdown), and the robot refused no action. Returns the
/// daemon's final report.
fn stop_and_close_the_books(daemon: Proc, sim: Proc, learner: Proc) -> serde_json::Value {
    let report = daemon.stop_json();
    let sim_report = sim.stop_json();
    std::thread::sleep(Duration::from_secs(1));
    let name = learner.name.clone();
    let (status, _, log) = learner.stop();
    assert!(status.success(), "{name} failed ({status}):\n{log}");
    let produced = u(&report, "transitions_produced") + u(&report, "transitions_recovered");
    let (sent, spooled, dropped) = (
        u(&report, "transitions_sent"),
        u(&report, "transitions_spooled"),
        u(&report, "transitions_dropped"),
    );
    assert_eq!(produced, sent + spooled + dropped, "{report}");
    assert_eq!(dropped, 0, "{report}");
    assert_eq!(spooled, 0, "a learner was there at shutdown: {report}");
    assert_eq!(u(&sim_report, "invalid_actions"), 0, "{sim_report}");
    report
}
