//! proptest strategies and hand-made samples of every message, shared by the tests.
#![allow(dead_code)]

use proptest::collection::vec;
use proptest::prelude::*;
use reflex_msgs::*;

/// Any float but NaN (so `PartialEq` round trips hold): normal, subnormal, zero of
/// either sign, infinities, and a bias toward ordinary values.
pub fn float() -> impl Strategy<Value = f32> {
    prop_oneof![
        3 => -1000.0f32..1000.0,
        1 => any::<u32>().prop_map(f32::from_bits).prop_map(|x| if x.is_nan() { 0.5 } else { x }),
        1 => prop::sample::select(vec![0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::MIN_POSITIVE, f32::MAX]),
    ]
}

/// Any bit pattern, NaNs with payloads included.
pub fn float_bits() -> impl Strategy<Value = f32> {
    any::<u32>().prop_map(f32::from_bits)
}

pub fn floats(max: usize) -> impl Strategy<Value = Vec<f32>> {
    vec(float(), 0..=max)
}

/// Robot-id-like names and arbitrary text (multi-byte UTF-8, NUL included).
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_-]{0,32}",
        "\\PC{0,12}",
        Just("nul\0inside".to_string())
    ]
}

pub fn robot_id() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{0,32}"
}

pub fn action(max_dim: usize) -> impl Strategy<Value = Action> {
    prop_oneof![
        any::<u32>().prop_map(Action::Discrete),
        floats(max_dim).prop_map(Action::Continuous),
    ]
}

pub fn box_space() -> impl Strategy<Value = BoxSpace> {
    floats(6)
        .prop_flat_map(|low| {
            let n = low.len();
            (Just(low), vec(float(), n))
        })
        .prop_map(|(low, high)| BoxSpace { low, high })
}

/// A box that passes `validate` (so it also survives JSON with infinite bounds).
pub fn valid_box_space() -> impl Strategy<Value = BoxSpace> {
    vec((float(), float()), 1..6).prop_map(|pairs| BoxSpace {
        low: pairs.iter().map(|(a, b)| a.min(*b)).collect(),
        high: pairs.iter().map(|(a, b)| a.max(*b)).collect(),
    })
}

/// A valid box with finite bounds, as an action space must have (actions are
/// clamped to them).
pub fn finite_box_space() -> impl Strategy<Value = BoxSpace> {
    vec((-1e6f32..1e6, -1e6f32..1e6), 1..6).prop_map(|pairs| BoxSpace {
        low: pairs.iter().map(|(a, b)| a.min(*b)).collect(),
        high: pairs.iter().map(|(a, b)| a.max(*b)).collect(),
    })
}

pub fn action_space() -> impl Strategy<Value = ActionSpace> {
    prop_oneof![
        any::<u32>().prop_map(|n| ActionSpace::Discrete { n }),
        box_space().prop_map(ActionSpace::Box),
    ]
}

pub fn observation() -> impl Strategy<Value = Observation> {
    (
        text(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        floats(16),
        float(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                robot_id,
                seq,
                timestamp_ns,
                episode_id,
                step,
                values,
                reward,
                terminated,
                truncated,
            )| {
                Observation {
                    wire_version: WIRE_VERSION,
                    robot_id,
                    seq,
                    timestamp_ns,
                    episode_id,
                    step,
                    values,
                    reward,
                    terminated,
                    truncated,
                }
            },
        )
}

pub fn action_command() -> impl Strategy<Value = ActionCommand> {
    (text(), any::<u64>(), any::<u64>(), any::<u64>(), action(6)).prop_map(
        |(robot_id, seq, timestamp_ns, policy_version, action)| ActionCommand {
            wire_version: WIRE_VERSION,
            robot_id,
            seq,
            timestamp_ns,
            policy_version,
            action,
        },
    )
}

pub fn transition() -> impl Strategy<Value = Transition> {
    (
        (
            text(),
            any::<u64>(),
            any::<u32>(),
            floats(8),
            action(4),
            float(),
        ),
        (
            floats(8),
            any::<bool>(),
            any::<bool>(),
            any::<u64>(),
            float(),
        ),
        (0usize..4).prop_flat_map(|h| (vec(float(), h), vec(float(), h))),
    )
        .prop_map(
            |(
                (robot_id, episode_id, step, obs, action, reward),
                (next_obs, terminated, truncated, policy_version, priority),
                (recurrent_h, recurrent_c),
            )| Transition {
                wire_version: WIRE_VERSION,
                robot_id,
                episode_id,
                step,
                obs,
                action,
                reward,
                next_obs,
                terminated,
                truncated,
                policy_version,
                priority,
                recurrent_h,
                recurrent_c,
            },
        )
}

pub fn transition_batch() -> impl Strategy<Value = TransitionBatch> {
    (text(), any::<u64>(), vec(transition(), 0..4)).prop_map(
        |(robot_id, batch_seq, transitions)| TransitionBatch {
            wire_version: WIRE_VERSION,
            robot_id,
            batch_seq,
            transitions,
        },
    )
}

fn spec_from(
    (algorithm, env_id, observation_space, action_space, recurrent_hidden_size): (
        String,
        String,
        BoxSpace,
        ActionSpace,
        u32,
    ),
    (norm, policy_version, training_step, source_checkpoint_sha256, reflex_version): (
        Vec<(f32, f32)>,
        u64,
        u64,
        String,
        String,
    ),
) -> PolicySpec {
    PolicySpec {
        wire_version: WIRE_VERSION,
        algorithm,
        env_id,
        observation_space,
        action_space,
        recurrent_hidden_size,
        obs_mean: norm.iter().map(|p| p.0).collect(),
        obs_std: norm.iter().map(|p| p.1).collect(),
        policy_version,
        training_step,
        source_checkpoint_sha256,
        reflex_version,
    }
}

pub fn policy_spec() -> impl Strategy<Value = PolicySpec> {
    (
        (text(), text(), box_space(), action_space(), any::<u32>()),
        (
            vec((float(), float()), 0..6),
            any::<u64>(),
            any::<u64>(),
            prop_oneof![Just(String::new()), "[0-9a-f]{64}", text()],
            text(),
        ),
    )
        .prop_map(|(a, b)| spec_from(a, b))
}

/// Specs that pass `validate` (JSON round trips need no NaN; infinities are fine).
pub fn valid_policy_spec() -> impl Strategy<Value = PolicySpec> {
    (
        (
            "[a-z]{1,8}",
            text(),
            valid_box_space(),
            prop_oneof![
                (1u32..100).prop_map(|n| ActionSpace::Discrete { n }),
                finite_box_space().prop_map(ActionSpace::Box),
            ],
            // Up to MAX_POLICY_SIZE, the largest valid LSTM width.
            0u32..=(1 << 16),
        ),
        (
            Just(Vec::new()),
            any::<u64>(),
            any::<u64>(),
            prop_oneof![Just(String::new()), "[0-9a-f]{64}"],
            text(),
        ),
        prop::option::of(any::<u32>()),
    )
        .prop_map(|(a, b, with_norm)| {
            let mut spec = spec_from(a, b);
            if let Some(seed) = with_norm {
                let dim = spec.observation_space.dim();
                spec.obs_mean = (0..dim).map(|i| (seed as f32 + i as f32) * 0.1).collect();
                spec.obs_std = (0..dim).map(|i| 0.5 + i as f32).collect();
            }
            spec
        })
}

pub fn policy_update() -> impl Strategy<Value = PolicyUpdate> {
    (
        any::<u64>(),
        policy_spec(),
        vec(any::<u8>(), 0..64),
        any::<[u8; 32]>(),
        prop_oneof![Just(Vec::new()), vec(any::<u8>(), 64)],
    )
        .prop_map(
            |(policy_version, spec, onnx, onnx_sha256, signature)| PolicyUpdate {
                wire_version: WIRE_VERSION,
                policy_version,
                spec,
                onnx,
                onnx_sha256,
                signature,
            },
        )
}

pub fn status() -> impl Strategy<Value = Status> {
    (
        (
            text(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        ),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        ),
        (
            any::<bool>(),
            any::<bool>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        ),
        (any::<u32>(), any::<u32>(), any::<u32>()),
    )
        .prop_map(
            |(
                (robot_id, timestamp_ns, heartbeat_seq, policy_version, ticks, overruns),
                (
                    transitions_sent,
                    transitions_spooled,
                    transitions_dropped,
                    decode_errors,
                    policy_updates_rejected,
                    safety_interventions,
                ),
                (watchdog_tripped, estop_active, latency_p50_us, latency_p99_us, latency_max_us),
                (jitter_p50_us, jitter_p99_us, jitter_max_us),
            )| Status {
                wire_version: WIRE_VERSION,
                robot_id,
                timestamp_ns,
                heartbeat_seq,
                policy_version,
                ticks,
                overruns,
                transitions_sent,
                transitions_spooled,
                transitions_dropped,
                decode_errors,
                policy_updates_rejected,
                safety_interventions,
                watchdog_tripped,
                estop_active,
                latency_p50_us,
                latency_p99_us,
                latency_max_us,
                jitter_p50_us,
                jitter_p99_us,
                jitter_max_us,
            },
        )
}

/// Hand-made samples with every sequence non-empty and the continuous / box variant
/// of every enum, so a schema recorder sees every field's element type.
pub mod samples {
    use super::*;

    pub fn continuous_action() -> Action {
        Action::Continuous(vec![0.25, -0.5])
    }

    pub fn box_space() -> BoxSpace {
        BoxSpace::new(vec![-1.0, -2.0], vec![1.0, 2.0]).unwrap()
    }

    pub fn observation() -> Observation {
        Observation {
            robot_id: "robot-1".into(),
            seq: 10,
            timestamp_ns: 1_700_000_000_000_000_000,
            episode_id: 2,
            step: 5,
            values: vec![0.1, 0.2, 0.3, 0.4],
            reward: 1.0,
            terminated: false,
            truncated: true,
            ..Observation::default()
        }
    }

    pub fn action_command() -> ActionCommand {
        ActionCommand {
            robot_id: "robot-1".into(),
            seq: 10,
            timestamp_ns: 1_700_000_000_000_100_000,
            policy_version: 4,
            action: continuous_action(),
            ..ActionCommand::default()
        }
    }

    pub fn transition() -> Transition {
        Transition {
            robot_id: "robot-1".into(),
            episode_id: 2,
            step: 4,
            obs: vec![0.0, 0.1, 0.2, 0.3],
            action: continuous_action(),
            reward: 1.0,
            next_obs: vec![0.1, 0.2, 0.3, 0.4],
            terminated: false,
            truncated: true,
            policy_version: 4,
            priority: 0.7,
            recurrent_h: vec![0.5; 3],
            recurrent_c: vec![-0.5; 3],
            ..Transition::default()
        }
    }

    pub fn transition_batch() -> TransitionBatch {
        TransitionBatch {
            robot_id: "robot-1".into(),
            batch_seq: 99,
            transitions: vec![transition(), transition()],
            ..TransitionBatch::default()
        }
    }

    pub fn policy_spec() -> PolicySpec {
        PolicySpec {
            algorithm: "ddpg".into(),
            env_id: "pendulum".into(),
            observation_space: BoxSpace::new(vec![-1.0, -1.0, -8.0], vec![1.0, 1.0, 8.0]).unwrap(),
            action_space: ActionSpace::Box(BoxSpace::new(vec![-2.0], vec![2.0]).unwrap()),
            recurrent_hidden_size: 64,
            obs_mean: vec![0.0, 0.0, 0.0],
            obs_std: vec![1.0, 1.0, 4.0],
            policy_version: 4,
            training_step: 20_000,
            source_checkpoint_sha256: reflex_msgs::hash::to_hex(&reflex_msgs::hash::sha256(
                b"checkpoint",
            )),
            reflex_version: "0.1.0".into(),
            ..PolicySpec::default()
        }
    }

    pub fn policy_update() -> PolicyUpdate {
        let mut update = PolicyUpdate::new(policy_spec(), b"not really onnx".to_vec());
        update.set_signature([0x5a; ED25519_SIGNATURE_LEN]);
        update
    }

    pub fn status() -> Status {
        Status {
            robot_id: "robot-1".into(),
            timestamp_ns: 1_700_000_000_000_000_000,
            heartbeat_seq: 3,
            policy_version: 4,
            ticks: 1000,
            overruns: 2,
            transitions_sent: 990,
            transitions_spooled: 10,
            transitions_dropped: 0,
            decode_errors: 1,
            policy_updates_rejected: 0,
            safety_interventions: 5,
            watchdog_tripped: false,
            estop_active: false,
            latency_p50_us: 80,
            latency_p99_us: 200,
            latency_max_us: 450,
            jitter_p50_us: 60,
            jitter_p99_us: 140,
            jitter_max_us: 300,
            ..Status::default()
        }
    }

    pub fn step_info() -> StepInfo {
        StepInfo {
            robot_id: "robot-1".into(),
            stamp_ns: 1_700_000_000_000_000_123,
            reward: 1.0,
            terminated: true,
            truncated: false,
            ..StepInfo::default()
        }
    }
}
