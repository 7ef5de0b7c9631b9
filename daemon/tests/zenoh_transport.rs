//! The zenoh transport in one process, two sessions on loopback (scouting off,
//! explicit endpoints, a free port): every stream arrives decoded, garbage is counted
//! and dropped, and the transition sink refuses (so the spool keeps the batch) while no
//! learner subscribes.

use std::time::{Duration, Instant};

use reflex_daemon::transport::TransportError;
use reflex_daemon::zenoh::handlers::FifoChannel;
use reflex_daemon::zenoh::Wait;
use reflex_daemon::zenoh_link::{self, decode_sample, put_cdr, ZenohConfig};
use reflex_daemon::zenoh_transport::{transports, ZenohTransportOptions};
use reflex_msgs::{keys, Action, ActionCommand, Observation, Transition, TransitionBatch};

fn until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn streams_garbage_and_matching() {
    let endpoint = format!(
        "tcp/127.0.0.1:{}",
        zenoh_link::free_loopback_port().expect("a free port")
    );
    let robot_side = zenoh_link::open(&ZenohConfig {
        listen: vec![endpoint.clone()],
        connect: vec![],
        ..ZenohConfig::default()
    })
    .unwrap();
    let other = zenoh_link::open(&ZenohConfig {
        connect: vec![endpoint],
        ..ZenohConfig::default()
    })
    .unwrap();
    let (fleet, robot) = ("ztest", "r7");
    let mut t = transports(&robot_side, fleet, robot, ZenohTransportOptions::default()).unwrap();

    // Transitions: refused while nobody subscribes.
    let batch = TransitionBatch {
        robot_id: robot.into(),
        batch_seq: 3,
        transitions: vec![Transition {
            robot_id: robot.into(),
            obs: vec![1.0; 4],
            next_obs: vec![2.0; 4],
            ..Transition::default()
        }],
        ..TransitionBatch::default()
    };
    assert!(matches!(
        t.transitions.send(&batch),
        Err(TransportError::Disconnected(_))
    ));
    let learner = other
        .declare_subscriber(keys::all_robots_key(fleet, keys::TRANSITIONS))
        .with(FifoChannel::new(64))
        .wait()
        .unwrap();
    assert!(
        until(Duration::from_secs(10), || t
            .transitions
            .send(&batch)
            .is_ok()),
        "the sink never saw the learner's subscriber"
    );
    let sample = learner
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .unwrap();
    assert_eq!(
        keys::parse_robot_key(sample.key_expr().as_str()).map(|k| k.robot),
        Some(robot)
    );
    assert_eq!(
        sample.encoding(),
        &zenoh_link::cdr_encoding::<TransitionBatch>()
    );
    assert_eq!(decode_sample::<TransitionBatch>(&sample).unwrap(), batch);
    drop(learner);
    assert!(
        until(Duration::from_secs(10), || t
            .transitions
            .send(&batch)
            .is_err()),
        "the sink kept sending after the learner left"
    );

    // Observations: garbage counted, the good ones in order.
    let obs_key = keys::obs_key(fleet, robot);
    other.put(&obs_key, vec![0u8, 1, 2]).wait().unwrap();
    for seq in 0..3 {
        let obs = Observation {
            robot_id: robot.into(),
            seq,
            values: vec![seq as f32; 4],
            ..Observation::default()
        };
        put_cdr(&other, &obs_key, &obs).unwrap();
    }
    let mut got = Vec::new();
    assert!(until(Duration::from_secs(10), || {
        t.observations.poll(&mut got).unwrap();
        got.len() >= 3
    }));
    assert_eq!(got.iter().map(|o| o.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(t.observations.decode_errors(), 1);

    // Actions.
    let actions = other
        .declare_subscriber(keys::action_key(fleet, robot))
        .with(FifoChannel::new(64))
        .wait()
        .unwrap();
    let command = ActionCommand {
        robot_id: robot.into(),
        seq: 9,
        action: Action::Discrete(1),
        ..ActionCommand::default()
    };
    let mut received = None;
    assert!(until(Duration::from_secs(10), || {
        t.actions.send(&command).unwrap();
        received = actions.try_recv().unwrap();
        received.is_some()
    }));
    assert_eq!(
        decode_sample::<ActionCommand>(&received.unwrap()).unwrap(),
        command
    );

    // Policies: garbage counted, nothing offered.
    other
        .put(keys::policy_key(fleet), vec![9u8; 16])
        .wait()
        .unwrap();
    assert!(until(Duration::from_secs(10), || {
        assert!(t.policies.poll().is_none());
        t.policies.decode_errors() == 1
    }));
}
