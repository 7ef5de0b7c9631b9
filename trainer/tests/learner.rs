//! The learner service fed by a zenoh publisher in this process (loopback, a free
//! port, scouting off): batches are inserted, duplicates and gaps are counted, an
//! undecodable payload is counted, and signed policy updates arrive and verify with
//! the run's public key exactly as a daemon verifies them.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reflex_daemon::swap::Verifier;
use reflex_daemon::zenoh::handlers::FifoChannel;
use reflex_daemon::zenoh::qos::CongestionControl;
use reflex_daemon::zenoh::Wait;
use reflex_daemon::zenoh_link::{self, ZenohConfig};
use reflex_msgs::{keys, Action, PolicyUpdate, Transition, TransitionBatch};
use reflex_trainer::learner::{serve, ServeOptions, PUB_FILE};
use reflex_trainer::run::RunConfig;

fn batch(seq: u64, first_step: u32, n: u32) -> TransitionBatch {
    let transitions = (first_step..first_step + n)
        .map(|step| {
            let x = step as f32 * 0.001;
            Transition {
                robot_id: "r0".into(),
                episode_id: 0,
                step,
                obs: vec![x, 0.0, -x, 0.1],
                action: Action::Discrete(step % 2),
                reward: 1.0,
                next_obs: vec![x + 0.001, 0.0, -x - 0.001, 0.1],
                policy_version: 1,
                ..Transition::default()
            }
        })
        .collect();
    TransitionBatch {
        robot_id: "r0".into(),
        batch_seq: seq,
        transitions,
        ..TransitionBatch::default()
    }
}

#[test]
fn learner_inserts_counts_and_publishes_signed_policies() {
    let out = std::env::temp_dir().join(format!("reflex-learner-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let port = zenoh_link::free_loopback_port().expect("a free port");
    let endpoint = format!("tcp/127.0.0.1:{port}");
    let mut run = RunConfig::default();
    run.dqn.net.hidden = vec![32, 32];
    run.dqn.batch_size = 16;
    run.dqn.learning_starts = 32;
    run.dqn.buffer_size = 1_000;
    let opts = ServeOptions {
        run,
        fleet: "test".into(),
        zenoh: ZenohConfig {
            listen: vec![endpoint.clone()],
            connect: vec![],
            ..ZenohConfig::default()
        },
        ros2: None,
        device: candle_core::Device::Cpu,
        out: out.clone(),
        samples_per_insert: Some(16.0),
        publish_every: 5,
        target_update_every: Some(10),
        checkpoint_every: 0,
        eval_every: 0,
        max_transitions: Some(6 * 32),
        target_return: None,
        quiet: true,
        linger: false,
        given: Vec::new(),
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    let learner = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || serve(opts, shutdown))
    };

    let session = zenoh_link::open(&ZenohConfig {
        connect: vec![endpoint],
        ..ZenohConfig::default()
    })
    .unwrap();
    let policies = session
        .declare_subscriber(keys::policy_key("test"))
        .with(FifoChannel::new(64))
        .wait()
        .unwrap();
    let publisher = session
        .declare_publisher(keys::transitions_key("test", "r0"))
        .congestion_control(CongestionControl::Block)
        .wait()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !zenoh_link::has_subscribers(&publisher).unwrap() {
        assert!(Instant::now() < deadline, "the learner never subscribed");
        std::thread::sleep(Duration::from_millis(20));
    }

    // 0, 1, 1 again (duplicate), 3 (batch 2 lost), garbage, 4, 5.
    for (seq, first) in [(0, 0), (1, 32), (1, 32), (3, 96)] {
        zenoh_link::publish_cdr(&publisher, &batch(seq, first, 32)).unwrap();
    }
    publisher.put(vec![0xde, 0xad, 0xbe, 0xef]).wait().unwrap();
    for (seq, first) in [(4, 128), (5, 160)] {
        zenoh_link::publish_cdr(&publisher, &batch(seq, first, 32)).unwrap();
    }

    // A signed policy from the learner, verified as a daemon would.
    let public = std::fs::read_to_string(out.join(PUB_FILE)).unwrap();
    let public = reflex_daemon::config::parse_hex32(&public).unwrap();
    let verifier = Verifier::new(public).unwrap();
    let update: PolicyUpdate = loop {
        let sample = policies
            .recv_timeout(Duration::from_secs(30))
            .expect("subscriber open")
            .expect("a policy update within 30 s");
        let update: PolicyUpdate = zenoh_link::decode_sample(&sample).unwrap();
        if update.policy_version >= 2 {
            break update;
        }
    };
    verifier.verify(&update).expect("the signature verifies");
    assert!(update.spec.training_step > 0);
    let policy = reflex_daemon::Policy::from_bytes(&update.onnx).expect("a valid policy");
    assert_eq!(policy.spec().policy_version, update.policy_version);

    // The sixth fresh batch reaches --max-transitions: the learner stops.
    zenoh_link::publish_cdr(&publisher, &batch(6, 192, 32)).unwrap();
    let report = learner.join().unwrap().unwrap();
    assert_eq!(report.stop_reason, "max_transitions");
    assert_eq!(report.transitions_received, 6 * 32);
    assert_eq!(report.transitions_inserted, 6 * 32);
    assert_eq!(report.duplicates, 1);
    assert_eq!(report.gaps, 1);
    assert_eq!(report.missing_steps, 32);
    assert_eq!(report.decode_errors, 1);
    assert_eq!(report.robots_seen, 1);
    assert!(report.updates > 0);
    assert!(report.policy_version >= update.policy_version);
    // The final policy on disk and a checkpoint to resume from.
    let on_disk = reflex_daemon::Policy::load(out.join("policy.onnx")).unwrap();
    assert_eq!(on_disk.spec().policy_version, report.policy_version);
    assert!(reflex_trainer::checkpoint::latest(&out).unwrap().is_some());
    let json = reflex_trainer::learner::read_report(&out).unwrap();
    assert_eq!(json, report);
    let _ = session.close().wait();
    std::fs::remove_dir_all(&out).ok();
}
