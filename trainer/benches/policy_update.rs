//! Policy-update latency: from the learner publishing a signed `PolicyUpdate` to the
//! first `ActionCommand` that carries its `policy_version` (issue 10's target:
//! < 10 ms), over zenoh on loopback, with a real daemon and a simulated robot.
//!
//!     cargo bench -p reflex-trainer --bench policy_update -- [updates=50] [rate=1000]
//!         [hidden=64] [gap_ms=30]
//!
//! Three zenoh sessions in this process, peer mode, scouting off, TCP on 127.0.0.1:
//! the daemon's (`reflex_daemon::Daemon` on `zenoh_transport::transports`, as `reflexd
//! run` starts it: explore mode, the learner's public key configured, so every update
//! is sha256- and ed25519-checked), the simulated CartPole robot's
//! (`reflex_sim::node::run`, what `reflex-sim serve` runs, in a thread) and the
//! learner's (a policy publisher declared as `reflex-train serve` declares it, and a
//! subscriber on the robot's action key). Both other sessions connect to the daemon's.
//!
//! The updates are the ONNX export of a dueling `hidden`×`hidden` Q-network (the fleet
//! default is 64×64) as the learner writes it, versions 2, 3, …, signed with the
//! learner's signing code, all prepared before the clock starts. Each is published
//! `gap_ms` (± a random half) after the previous one was seen in use, so updates land
//! at random points of the daemon's tick. The clock stops when the learner's action
//! subscriber receives the first action carrying the new version.
//!
//! The split (measured separately, same updates, same process):
//! - transfer: publish → the update's arrival at a subscriber in the daemon's session;
//! - verify: `Verifier::verify` (sha256 of the ONNX bytes + ed25519);
//! - validate: `Validator::validate` (verify + tract load/optimize + spec checks +
//!   probe step), what the daemon's swap thread runs on each update;
//! - the rest: the swap thread's wait for its next poll (it polls every 10 ms), the
//!   hand-over to the control thread, the wait for the next tick with a fresh
//!   observation, and the action's way back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use reflex_daemon::config::Mode;
use reflex_daemon::policy::onnx_loader;
use reflex_daemon::swap::{Validator, Verifier};
use reflex_daemon::transport::PolicyMessage;
use reflex_daemon::zenoh::qos::CongestionControl;
use reflex_daemon::zenoh::Wait;
use reflex_daemon::zenoh_link::{self, ZenohConfig};
use reflex_daemon::zenoh_transport::{self, ZenohTransportOptions};
use reflex_daemon::{Config, Daemon};
use reflex_msgs::{codec, hash, keys, ActionCommand, PolicyUpdate};
use reflex_sim::node::{self, NodeConfig};
use reflex_sim::{make, SimRng};
use reflex_trainer::export::{q_network_onnx, spec_for};
use reflex_trainer::learner::sign;
use reflex_trainer::nn::{NetConfig, QNetwork};

const FLEET: &str = "latency";
const ROBOT: &str = "r0";

struct Options {
    updates: usize,
    rate: f64,
    hidden: usize,
    gap_ms: u64,
}

fn options() -> Options {
    let mut o = Options {
        updates: 50,
        rate: 1000.0,
        hidden: 64,
        gap_ms: 30,
    };
    for arg in std::env::args().skip(1).filter(|a| !a.starts_with("--")) {
        match arg.split_once('=') {
            Some(("updates", v)) => o.updates = v.parse().expect("updates=N"),
            Some(("rate", v)) => o.rate = v.parse().expect("rate=HZ"),
            Some(("hidden", v)) => o.hidden = v.parse().expect("hidden=N"),
            Some(("gap_ms", v)) => o.gap_ms = v.parse().expect("gap_ms=N"),
            _ => panic!("unknown argument {arg:?}"),
        }
    }
    o
}

/// Signed updates for versions `1..=count` of one network.
fn updates(hidden: usize, count: usize) -> (Vec<PolicyUpdate>, String) {
    let env = make("cartpole").expect("cartpole");
    let config = NetConfig {
        hidden: vec![hidden, hidden],
        dueling: true,
        ..NetConfig::default()
    };
    let mut rng = SimRng::seed(7);
    let net = QNetwork::new(&config, 4, 2, 1, &mut rng, &Device::Cpu).expect("network");
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let public = hash::to_hex(key.verifying_key().as_bytes());
    let list = (1..=count as u64)
        .map(|version| {
            let mut spec = spec_for("dqn", "cartpole", env.as_ref());
            spec.policy_version = version;
            spec.training_step = version * 250;
            let bytes = q_network_onnx(&net, &spec).expect("export");
            let mut update = PolicyUpdate::new(spec, bytes);
            sign(&mut update, &key);
            update
        })
        .collect();
    (list, public)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    format!(
        "| {name} | {:.3} | {:.3} | {:.3} | {:.3} |",
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        v[v.len() - 1],
        v.iter().sum::<f64>() / v.len() as f64
    )
}

fn main() {
    let o = options();
    let (updates, public_key) = updates(o.hidden, o.updates + 1);
    let onnx_bytes = updates[0].onnx.len();
    let dir = std::env::temp_dir().join(format!("reflex-policy-update-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let policy_path = dir.join("policy.onnx");
    std::fs::write(&policy_path, &updates[0].onnx).expect("writing v1");

    // The daemon, on zenoh, listening for the others.
    let daemon_endpoint = format!(
        "tcp/127.0.0.1:{}",
        zenoh_link::free_loopback_port().expect("a free port")
    );
    let daemon_session = zenoh_link::open(&ZenohConfig {
        listen: vec![daemon_endpoint.clone()],
        connect: vec![],
        ..ZenohConfig::default()
    })
    .expect("daemon session");
    let mut config = Config {
        robot_id: ROBOT.into(),
        fleet: FLEET.into(),
        rate_hz: o.rate,
        ..Config::default()
    };
    config.policy.path = policy_path.clone();
    config.policy.reload_poll_ms = 0;
    config.policy.public_key = public_key;
    config.mode.kind = Mode::Explore;
    config.mode.epsilon = 0.1;
    let loader = onnx_loader();
    let actor = loader(&updates[0].onnx).expect("v1 loads");
    let transports = zenoh_transport::transports(
        &daemon_session,
        FLEET,
        ROBOT,
        ZenohTransportOptions::default(),
    )
    .expect("transports");
    let daemon = Daemon::start(&config, actor, loader.clone(), transports).expect("daemon");
    // Where the daemon's session sees each update arrive (transfer time).
    let (arrival_tx, arrival_rx) = channel::<(u64, Instant)>();
    let _arrivals = daemon_session
        .declare_subscriber(keys::policy_key(FLEET))
        .callback(move |sample| {
            let at = Instant::now();
            if let Ok(update) = codec::decode::<PolicyUpdate>(&sample.payload().to_bytes()) {
                let _ = arrival_tx.send((update.policy_version, at));
            }
        })
        .wait()
        .expect("arrival subscriber");

    // The simulated robot.
    let stop = Arc::new(AtomicBool::new(false));
    let sim_stop = stop.clone();
    let sim_config = NodeConfig {
        env: "cartpole".into(),
        robot: ROBOT.into(),
        fleet: FLEET.into(),
        connect: vec![daemon_endpoint.clone()],
        ..NodeConfig::default()
    };
    let sim = std::thread::spawn(move || node::run(&sim_config, &sim_stop));

    // The learner: policy publisher and action watcher.
    let learner = zenoh_link::open(&ZenohConfig {
        connect: vec![daemon_endpoint],
        ..ZenohConfig::default()
    })
    .expect("learner session");
    let publisher = learner
        .declare_publisher(keys::policy_key(FLEET))
        .congestion_control(CongestionControl::Block)
        .wait()
        .expect("policy publisher");
    let (action_tx, action_rx) = channel::<(u64, Instant)>();
    let _actions = learner
        .declare_subscriber(keys::action_key(FLEET, ROBOT))
        .callback(move |sample| {
            let at = Instant::now();
            if let Ok(cmd) = codec::decode::<ActionCommand>(&sample.payload().to_bytes()) {
                let _ = action_tx.send((cmd.policy_version, at));
            }
        })
        .wait()
        .expect("action subscriber");

    // Wait until the loop runs with v1 and the daemon subscribes to policies.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((1, _)) = action_rx.recv_timeout(Duration::from_millis(100)) {
            break;
        }
        assert!(Instant::now() < end, "the daemon never acted with v1");
    }
    while !zenoh_link::has_subscribers(&publisher).expect("matching") {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));

    let mut rng = SimRng::seed(11);
    let mut total_ms = Vec::new();
    let mut transfer_ms = Vec::new();
    for update in &updates[1..] {
        let jitter = (rng.next_u64() % (o.gap_ms + 1)) as i64 - (o.gap_ms / 2) as i64;
        std::thread::sleep(Duration::from_millis(
            (o.gap_ms as i64 + jitter).max(1) as u64
        ));
        while action_rx.try_recv().is_ok() {}
        while arrival_rx.try_recv().is_ok() {}
        let version = update.policy_version;
        let t0 = Instant::now();
        zenoh_link::publish_cdr(&publisher, update).expect("publish");
        let end = t0 + Duration::from_secs(5);
        let seen = loop {
            let left = end.saturating_duration_since(Instant::now());
            match action_rx.recv_timeout(left) {
                Ok((v, at)) if v >= version => break at,
                Ok(_) => {}
                Err(_) => panic!(
                    "no action with v{version} within 5 s (accepted {}, rejected {})",
                    daemon.policies_accepted(),
                    daemon.policies_rejected()
                ),
            }
        };
        total_ms.push(seen.duration_since(t0).as_secs_f64() * 1e3);
        while let Ok((v, at)) = arrival_rx.try_recv() {
            if v == version {
                transfer_ms.push(at.duration_since(t0).as_secs_f64() * 1e3);
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let report = daemon.stop();
    let sim_report = sim.join().expect("sim thread").expect("sim ran");
    assert!(sim_report.error.is_none(), "the sim failed: {sim_report:?}");
    drop(publisher);
    let _ = learner.close().wait();
    let _ = daemon_session.close().wait();

    // The swap thread's work alone, on the same updates.
    let verifier =
        Verifier::new(reflex_daemon::config::parse_hex32(&config.policy.public_key).expect("key"))
            .expect("verifier");
    let mut verify_ms = Vec::new();
    for update in &updates[1..] {
        let t = Instant::now();
        verifier.verify(update).expect("verifies");
        verify_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let v1 = loader(&updates[0].onnx).expect("v1");
    let mut validator = Validator::new(verifier, loader.clone(), v1.spec());
    let mut validate_ms = Vec::new();
    for update in &updates[1..] {
        let message = PolicyMessage::Update(Box::new(update.clone()));
        let t = Instant::now();
        validator.validate(&message).expect("validates");
        validate_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut decode_ms = Vec::new();
    for update in &updates[1..] {
        let bytes = codec::encode(update).expect("encodes");
        let t = Instant::now();
        std::hint::black_box(codec::decode::<PolicyUpdate>(&bytes).expect("decodes"));
        decode_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let n = total_ms.len();
    let rest: Vec<f64> = {
        let mut t = total_ms.clone();
        t.sort_by(|a, b| a.total_cmp(b));
        let median_fixed = percentile(
            &{
                let mut x = transfer_ms.clone();
                x.sort_by(|a, b| a.total_cmp(b));
                x
            },
            0.5,
        ) + percentile(
            &{
                let mut x = validate_ms.clone();
                x.sort_by(|a, b| a.total_cmp(b));
                x
            },
            0.5,
        );
        total_ms
            .iter()
            .map(|t| (t - median_fixed).max(0.0))
            .collect()
    };

    println!(
        "policy update → first action with it: {n} updates, dueling {h}x{h} Q-network \
         ({onnx_bytes} ONNX bytes), daemon at {} Hz (explore, signature required), \
         sha256 {}…",
        o.rate,
        &hash::to_hex(&updates[1].onnx_sha256)[..12],
        h = o.hidden,
    );
    println!();
    println!("| ms | p50 | p99 | max | mean |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "{}",
        summary("publish → first action with the new version", total_ms)
    );
    println!(
        "{}",
        summary(
            "transfer: publish → arrival in the daemon's session",
            transfer_ms
        )
    );
    println!("{}", summary("CDR decode of the update (alone)", decode_ms));
    println!("{}", summary("verify: sha256 + ed25519 (alone)", verify_ms));
    println!(
        "{}",
        summary(
            "validate: verify + load/optimize + checks + probe (alone)",
            validate_ms
        )
    );
    println!(
        "{}",
        summary("the rest (total − median transfer − median validate)", rest)
    );
    println!();
    println!(
        "daemon: {} policies accepted, {} rejected, {} swaps, {} ticks, {} overruns; \
         robot: {} steps, {} stale actions, {} reissued",
        report.policies_accepted,
        report.policies_rejected,
        report.stats.swaps,
        report.stats.ticks,
        report.stats.overruns,
        sim_report.steps,
        sim_report.stale_actions,
        sim_report.reissued
    );
    let _ = std::fs::remove_dir_all(&dir);
}
