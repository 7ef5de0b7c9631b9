//! A simulated robot's experience crosses the wire intact: episodes played in
//! `reflex-sim` become `Transition`s, travel as CDR bytes (the growable codec a
//! learner uses and the allocation-free one a no_std robot uses), and decode into
//! transitions that replay exactly in a fresh simulator.

use reflex_msgs::{
    decode, decode_from_slice, encode, encode_to_slice, Transition, TransitionBatch, TransitionN,
    WIRE_VERSION,
};
use reflex_sim::{make, random_action, Env, SimRng};

/// Plays one episode with random actions and records it as transitions.
fn record_episode(name: &str, seed: u64, robot: &str) -> Vec<Transition> {
    let mut env = make(name).unwrap();
    let mut rng = SimRng::seed(seed + 77);
    let mut obs = env.reset(Some(seed)).to_vec();
    let mut out = Vec::new();
    for step in 0.. {
        let action = random_action(env.action_space(), &mut rng);
        let result = env.step(&action).unwrap();
        let next_obs = env.obs().to_vec();
        out.push(Transition {
            robot_id: robot.into(),
            episode_id: seed,
            step,
            obs: std::mem::replace(&mut obs, next_obs.clone()),
            action,
            reward: result.reward as f32,
            next_obs,
            terminated: result.terminated,
            truncated: result.truncated,
            policy_version: 3,
            ..Transition::default()
        });
        if result.done() {
            break;
        }
    }
    out
}

#[test]
fn episodes_survive_cdr_and_replay_exactly() {
    for (name, seed) in [
        ("cartpole", 1),
        ("acrobot", 2),
        ("pendulum", 3),
        ("mountaincarcontinuous", 4),
    ] {
        let transitions = record_episode(name, seed, "sim-1");
        let batch = TransitionBatch {
            robot_id: "sim-1".into(),
            batch_seq: 9,
            transitions: transitions.clone(),
            ..TransitionBatch::default()
        };
        let bytes = encode(&batch).unwrap();
        assert_eq!(
            &bytes[..4],
            &[0, 1, 0, 0],
            "CDR little-endian encapsulation"
        );
        let received: TransitionBatch = decode(&bytes).unwrap();
        assert_eq!(received, batch);
        assert_eq!(received.wire_version, WIRE_VERSION);

        // The received episode replays in a fresh env from the same seed.
        let mut env = make(name).unwrap();
        let first = env.reset(Some(seed)).to_vec();
        assert_eq!(received.transitions[0].obs, first);
        for t in &received.transitions {
            let step = env.step(&t.action).unwrap();
            assert_eq!(env.obs(), t.next_obs.as_slice(), "{name} step {}", t.step);
            assert_eq!(
                (step.terminated, step.truncated),
                (t.terminated, t.truncated)
            );
        }
        let last = received.transitions.last().unwrap();
        assert!(
            last.terminated || last.truncated,
            "{name}: the episode ends in the batch"
        );
    }
}

#[test]
fn a_no_std_robot_and_the_learner_agree_on_the_bytes() {
    // CartPole: 4 observation values, a discrete action (capacity 1), no recurrent state.
    let transitions = record_episode("cartpole", 5, "mcu-7");
    let mut buffer = [0u8; 256];
    for t in &transitions {
        let fixed = TransitionN::<4, 1>::try_from(t).expect("fits the fixed capacities");
        let written = encode_to_slice(&fixed, &mut buffer).unwrap();
        assert_eq!(
            &buffer[..written],
            encode(t).unwrap().as_slice(),
            "identical CDR bytes"
        );
        let decoded: Transition = decode(&buffer[..written]).unwrap();
        assert_eq!(&decoded, t);
        let back: TransitionN<4, 1> = decode_from_slice(&buffer[..written]).unwrap();
        assert_eq!(back, fixed);
    }
    // An observation longer than the robot's capacity is refused, not truncated.
    let acrobot = record_episode("acrobot", 1, "mcu-7");
    assert!(TransitionN::<4, 1>::try_from(&acrobot[0]).is_err());
}

#[test]
fn a_corrupted_batch_is_an_error_not_a_panic() {
    let batch = TransitionBatch {
        robot_id: "sim-2".into(),
        transitions: record_episode("mountaincar", 6, "sim-2"),
        ..TransitionBatch::default()
    };
    let bytes = encode(&batch).unwrap();
    for cut in [5, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            decode::<TransitionBatch>(&bytes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    let mut newer = bytes.clone();
    newer[4..6].copy_from_slice(&(WIRE_VERSION + 1).to_le_bytes());
    let err = decode::<TransitionBatch>(&newer).unwrap_err().to_string();
    assert!(err.contains("version"), "{err}");
}
