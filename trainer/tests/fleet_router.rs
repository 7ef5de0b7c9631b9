//! The fleet loop through a zenoh router, as across machines but on loopback: a
//! router (`reflex-train router`), and the learner (`reflex-train serve`), a simulated
//! robot (`reflex-sim serve`) and its daemon (`reflexd run`) all in **client** mode,
//! connected only to the router (scouting off, explicit endpoints, a free port).
//!
//! Observations and actions, transitions and heartbeats, and signed policies all go
//! through the router: the daemon controls the robot, everything it sends reaches the
//! learner with nothing lost, duplicated or undecodable, and it runs the policies the
//! learner publishes. Also: the example configurations in `launch/zenoh/` parse and
//! say what their comments say.
//!
//! Needs the `reflex-sim` and `reflexd` binaries next to `reflex-train`
//! (`cargo build --bins`).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reflex_daemon::zenoh_link::{ZenohConfig, ZenohMode};
use reflex_daemon::Config;
use reflex_trainer::learner::{read_report, PUB_FILE};
use support::{bin, free_port, robot_toml, u, wait_for, Proc};

const ROBOT: &str = "r0";

fn launch(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../launch/zenoh")
        .join(name)
}

#[test]
fn learner_robot_and_daemon_as_clients_of_a_router() {
    let dir = std::env::temp_dir().join(format!("reflex-router-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let log = |name: &str| dir.join("logs").join(name);
    let fleet = format!("router-{}", std::process::id());
    let port = free_port();
    let router_endpoint = format!("tcp/127.0.0.1:{port}");

    let mut router = Proc::spawn(
        "reflex-train router",
        Command::new(env!("CARGO_BIN_EXE_reflex-train")).args([
            "router",
            "--listen",
            &router_endpoint,
        ]),
        log("router.log"),
    );
    // zenoh clients try their router once at start: wait until it listens.
    wait_for(Duration::from_secs(30), "the router's listener", || {
        router.assert_running();
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });

    let out = dir.join("run");
    let mut learner = Proc::spawn(
        "learner (client)",
        Command::new(env!("CARGO_BIN_EXE_reflex-train"))
            .args(["serve", "--env", "cartpole", "--fleet", &fleet])
            .args(["--mode", "client", "--connect", &router_endpoint])
            .args(["--quiet", "--linger", "--seed", "1"])
            .arg("--out")
            .arg(&out)
            .args(["--max-transitions", "400", "--eval-every", "0"])
            .args(["--checkpoint-every", "0", "--publish-every", "20"])
            .args(["--set", "dqn.net.hidden=[16,16]"])
            .args(["--set", "dqn.learning_starts=100"]),
        log("learner.log"),
    );
    wait_for(
        Duration::from_secs(60),
        "the learner's policy and key",
        || {
            learner.assert_running();
            out.join("policy.onnx").exists() && out.join(PUB_FILE).exists()
        },
    );

    let mut sim = Proc::spawn(
        "reflex-sim (client)",
        Command::new(bin("reflex-sim"))
            .args(["serve", "--env", "cartpole", "--robot", ROBOT])
            .args(["--fleet", &fleet, "--seed", "3"])
            .args(["--mode", "client", "--connect", &router_endpoint])
            .args(["--idle-timeout-s", "60"]),
        log("sim.log"),
    );
    let public_key = std::fs::read_to_string(out.join(PUB_FILE)).unwrap();
    let config = dir.join("r0.toml");
    let zenoh = format!(
        "mode = \"client\"\nconnect = [\"{router_endpoint}\"]\nlisten = []\nscouting = false"
    );
    std::fs::write(
        &config,
        robot_toml(ROBOT, &fleet, &out.join("policy.onnx"), &public_key, &zenoh),
    )
    .unwrap();
    let mut daemon = Proc::spawn(
        "reflexd (client)",
        Command::new(bin("reflexd"))
            .args(["run", "--config"])
            .arg(&config),
        log("reflexd.log"),
    );

    // The learner reaches its budget (400 transitions) and keeps counting (--linger);
    // meanwhile it trains and publishes a policy every 20 updates, which the daemon
    // takes (its heartbeats say which version it runs).
    wait_for(
        Duration::from_secs(60),
        "400 transitions and a new policy",
        || {
            for p in [&mut router, &mut learner, &mut sim, &mut daemon] {
                p.assert_running();
            }
            read_report(&out).is_ok_and(|r| {
                r.done
                    && r.robots
                        .first()
                        .is_some_and(|robot| robot.status_policy_version >= 2)
            })
        },
    );

    // The daemon flushes what it holds to the learner, through the router.
    let report = daemon.stop_json();
    let sent = u(&report, "transitions_sent");
    assert_eq!(u(&report, "transitions_dropped"), 0, "{report}");
    assert_eq!(u(&report, "transitions_spooled"), 0, "{report}");
    assert_eq!(
        u(&report, "transitions_produced") + u(&report, "transitions_recovered"),
        sent,
        "{report}"
    );
    wait_for(Duration::from_secs(20), "everything sent to arrive", || {
        read_report(&out).is_ok_and(|r| r.transitions_received >= sent)
    });
    let sim_report = sim.stop_json();
    let learner_json = learner.stop_json();
    let r = read_report(&out).unwrap();
    let _ = router.stop();

    assert!(sent >= 400, "daemon sent only {sent}: {report}");
    assert_eq!(r.transitions_received, sent, "{learner_json}");
    assert_eq!(r.gaps, 0, "{learner_json}");
    assert_eq!(r.missing_steps, 0, "{learner_json}");
    assert_eq!(r.duplicates, 0, "{learner_json}");
    assert_eq!(r.decode_errors, 0, "{learner_json}");
    assert_eq!(r.invalid_transitions, 0, "{learner_json}");
    assert_eq!(r.robots_seen, 1, "{learner_json}");
    assert_eq!(r.robots[0].robot, ROBOT);
    assert!(r.updates > 0, "the learner never trained: {learner_json}");
    // The rates over the spans of receiving and training (what the fleet reports).
    assert!(
        r.receiving_s > 0.0 && r.receiving_s <= r.elapsed_s,
        "{learner_json}"
    );
    assert!(r.receiving_transitions_per_s > 0.0, "{learner_json}");
    assert!(
        r.training_s > 0.0 && r.training_updates_per_s > 0.0,
        "{learner_json}"
    );
    assert!(
        r.robots[0].status_policy_version >= 2,
        "the daemon never ran a published policy: {learner_json}"
    );
    // The robot was controlled over the router: every step answered, none stale.
    assert!(u(&sim_report, "steps") >= sent, "{sim_report}");
    assert_eq!(u(&sim_report, "invalid_actions"), 0, "{sim_report}");
    assert_eq!(u(&sim_report, "decode_errors"), 0, "{sim_report}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn launch_examples_parse_as_documented() {
    // The robot: a complete reflexd configuration in client mode.
    let robot = Config::load(launch("robot-client.toml")).unwrap();
    assert_eq!(robot.transport.zenoh.mode, ZenohMode::Client);
    assert!(robot.transport.zenoh.listen.is_empty());
    assert!(!robot.transport.zenoh.scouting);
    assert_eq!(robot.transport.zenoh.connect.len(), 1);
    robot.transport.zenoh.validate().unwrap();

    // The learner's session (`serve --zenoh-config`): the same keys.
    let text = std::fs::read_to_string(launch("learner-client.toml")).unwrap();
    let learner: ZenohConfig = toml::from_str(&text).unwrap();
    assert_eq!(learner.mode, ZenohMode::Client);
    assert_eq!(learner.connect, robot.transport.zenoh.connect);
    learner.validate().unwrap();

    // The router: zenoh's own format (zenohd reads it too), router mode, no scouting.
    let router = reflex_daemon::zenoh::Config::from_file(launch("router.json5")).unwrap();
    assert_eq!(router.get_json("mode").unwrap(), "\"router\"");
    assert_eq!(
        router.get_json("scouting/multicast/enabled").unwrap(),
        "false"
    );
    let listen = router.get_json("listen/endpoints").unwrap();
    assert!(listen.contains(":7447"), "{listen}");
}
