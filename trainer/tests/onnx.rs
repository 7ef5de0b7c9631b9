//! ONNX export ↔ tract runtime: parity of every discrete network kind with the
//! candle forward pass, and refusal of every kind of bad policy file.
//!
//! With `REFLEX_INTEROP_DIR` set, the parity test also writes each exported file
//! with its probe inputs and candle's outputs there, for `scripts/onnx-interop.py`
//! (onnx checker + onnxruntime), which `.ci/run` runs.

mod common;

use candle_core::{Device, Tensor};
use common::{candle_q, cartpole_spec, kinds, network};
use prost::Message;
use reflex_daemon::{Engine, LoadOptions, Policy, PolicyLoadError, PolicyOutput};
use reflex_msgs::onnx::{INPUT_OBS, METADATA_POLICY_SPEC, OUTPUT_Q};
use reflex_msgs::PolicySpec;
use reflex_sim::SimRng;
use reflex_trainer::export::{q_network_onnx, Attr, OnnxGraph};
use tract_onnx::pb;

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-5 * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn tract_matches_candle_for_every_network_kind() {
    let interop = std::env::var_os("REFLEX_INTEROP_DIR").map(std::path::PathBuf::from);
    for (seed, (name, config, heads)) in kinds().into_iter().enumerate() {
        let net = network(&config, heads, seed as u64);
        let mut spec = cartpole_spec();
        // One kind also bakes in observation normalization.
        let normalized = name == "dueling";
        if normalized {
            spec.obs_mean = vec![0.1, -0.2, 0.01, 0.5];
            spec.obs_std = vec![2.0, 0.5, 0.25, 3.0];
        }
        let bytes = q_network_onnx(&net, &spec).unwrap();
        // Both engines: the default (every exported kind compiles to the native
        // evaluator) and tract alone.
        let mut native = Policy::from_bytes(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(native.spec(), &spec, "{name}: spec round trip");
        assert_eq!(native.engine(), Engine::Native, "{name}");
        let mut tract = Policy::from_bytes_with(&bytes, LoadOptions { native: false })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(tract.engine(), Engine::Tract, "{name}");

        let mut rng = SimRng::seed(1000 + seed as u64);
        let mut probes = Vec::new();
        let mut expected = Vec::new();
        let mut disagreements = 0;
        for _ in 0..200 {
            let obs: Vec<f32> = (0..4).map(|_| (rng.normal() * 2.0) as f32).collect();
            let input: Vec<f32> = if normalized {
                obs.iter()
                    .zip(spec.obs_mean.iter().zip(&spec.obs_std))
                    .map(|(x, (m, s))| (x - m) / s)
                    .collect()
            } else {
                obs.clone()
            };
            let want = candle_q(&net, &input);
            let greedy = if want[1] > want[0] { 1 } else { 0 };
            for policy in [&mut native, &mut tract] {
                let engine = policy.engine();
                let PolicyOutput::Discrete { action, q } = policy.step(&obs).unwrap() else {
                    panic!("{name}: a Q-network must give a discrete output");
                };
                for (a, b) in want.iter().zip(q) {
                    assert!(close(*a, *b), "{name}: candle {want:?} vs {engine:?} {q:?}");
                }
                if (want[0] - want[1]).abs() > 1e-5 && greedy != action {
                    disagreements += 1;
                }
            }
            probes.extend_from_slice(&obs);
            expected.extend_from_slice(&want);
        }
        assert_eq!(disagreements, 0, "{name}: greedy actions differ");

        if let Some(dir) = &interop {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(format!("{name}.onnx")), &bytes).unwrap();
            let record = serde_json::json!({
                "obs": probes, "q": expected, "obs_dim": 4, "n_actions": 2,
            });
            std::fs::write(dir.join(format!("{name}.json")), record.to_string()).unwrap();
        }
    }
}

/// The exported plain network, decoded so a test can damage it.
fn good_model() -> pb::ModelProto {
    let (_, config, heads) = kinds().remove(0);
    let bytes = q_network_onnx(&network(&config, heads, 7), &cartpole_spec()).unwrap();
    pb::ModelProto::decode(bytes.as_slice()).unwrap()
}

fn load(model: &pb::ModelProto) -> Result<Policy, PolicyLoadError> {
    Policy::from_bytes(&model.encode_to_vec())
}

#[test]
fn the_good_model_loads() {
    load(&good_model()).unwrap();
}

#[test]
fn truncated_and_corrupt_files_are_refused() {
    let bytes = good_model().encode_to_vec();
    for cut in [1, 10, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
        let err = Policy::from_bytes(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(
                err,
                PolicyLoadError::Decode(_)
                    | PolicyLoadError::NoGraph
                    | PolicyLoadError::MissingSpec
                    | PolicyLoadError::Graph(_)
            ),
            "cut at {cut}: {err}"
        );
    }
    // Flipped bytes anywhere: refused or (if the damage hits weights only)
    // loaded; never a panic.
    let mut rng = SimRng::seed(3);
    for _ in 0..200 {
        let mut damaged = bytes.clone();
        let at = rng.below(damaged.len() as u64) as usize;
        damaged[at] ^= 1 << rng.below(8);
        let _ = Policy::from_bytes(&damaged);
    }
}

#[test]
fn a_file_without_a_spec_is_refused() {
    let mut model = good_model();
    model.metadata_props.clear();
    assert!(matches!(load(&model), Err(PolicyLoadError::MissingSpec)));

    let mut model = good_model();
    model.metadata_props[0].value = "{not json".into();
    assert!(matches!(load(&model), Err(PolicyLoadError::BadSpec(_))));
}

#[test]
fn a_spec_that_disagrees_with_the_graph_is_refused() {
    // The spec says 3 actions; the graph gives 2.
    let mut model = good_model();
    let mut spec: PolicySpec = serde_json::from_str(&model.metadata_props[0].value).unwrap();
    spec.action_space = reflex_msgs::ActionSpace::Discrete { n: 3 };
    model.metadata_props[0].value = serde_json::to_string(&spec).unwrap();
    let err = load(&model).unwrap_err();
    assert!(
        matches!(err, PolicyLoadError::WrongShape { ref name, expected: 3, .. } if name == OUTPUT_Q),
        "{err}"
    );

    // The spec says 5 observation dims; the graph takes 4.
    let mut model = good_model();
    let mut spec: PolicySpec = serde_json::from_str(&model.metadata_props[0].value).unwrap();
    spec.observation_space = reflex_msgs::BoxSpace::new(vec![-1.0; 5], vec![1.0; 5]).unwrap();
    model.metadata_props[0].value = serde_json::to_string(&spec).unwrap();
    let err = load(&model).unwrap_err();
    assert!(
        matches!(err, PolicyLoadError::WrongShape { ref name, expected: 5, .. } if name == INPUT_OBS),
        "{err}"
    );

    // An internally inconsistent spec.
    let mut model = good_model();
    let mut spec: PolicySpec = serde_json::from_str(&model.metadata_props[0].value).unwrap();
    spec.obs_std = vec![1.0];
    model.metadata_props[0].value = serde_json::to_string(&spec).unwrap();
    assert!(matches!(load(&model), Err(PolicyLoadError::InvalidSpec(_))));
}

#[test]
fn wrong_names_types_and_shapes_are_refused() {
    let mut model = good_model();
    model.graph.as_mut().unwrap().input[0].name = "observation".into();
    let err = load(&model).unwrap_err();
    assert!(matches!(err, PolicyLoadError::WrongInputs { .. }), "{err}");
    assert!(err.to_string().contains("observation"), "{err}");

    let mut model = good_model();
    model.graph.as_mut().unwrap().output[0].name = "logits".into();
    assert!(matches!(
        load(&model),
        Err(PolicyLoadError::WrongOutputs { .. })
    ));

    // Declared as float64.
    let mut model = good_model();
    if let Some(pb::type_proto::Value::TensorType(t)) = model.graph.as_mut().unwrap().input[0]
        .r#type
        .as_mut()
        .unwrap()
        .value
        .as_mut()
    {
        t.elem_type = pb::tensor_proto::DataType::Double as i32;
    }
    assert!(matches!(
        load(&model),
        Err(PolicyLoadError::WrongType { found: 11, .. })
    ));

    // A weight of the wrong shape makes the graph itself inconsistent.
    let mut model = good_model();
    let init = &mut model.graph.as_mut().unwrap().initializer[0];
    init.dims = vec![64, 5];
    init.raw_data.extend(vec![0u8; 64 * 4]);
    assert!(matches!(load(&model), Err(PolicyLoadError::Graph(_))));
}

#[test]
fn unsupported_operators_are_refused() {
    let mut g = OnnxGraph::new();
    g.op(
        "TotallyMadeUpOp",
        &[INPUT_OBS],
        &[Attr::Int("k", 1)],
        Some(OUTPUT_Q),
    );
    let bytes = g
        .finish(&[(INPUT_OBS, 4)], &[(OUTPUT_Q, 2)], &cartpole_spec())
        .unwrap();
    let err = Policy::from_bytes(&bytes).unwrap_err();
    assert!(matches!(err, PolicyLoadError::Graph(_)), "{err}");
    assert!(err.to_string().contains("TotallyMadeUpOp"), "{err}");
}

#[test]
fn a_policy_with_non_finite_outputs_is_refused() {
    let (_, config, heads) = kinds().remove(0);
    let net = network(&config, heads, 1);
    let (_, bias) = net
        .named_vars()
        .into_iter()
        .find(|(name, _)| name == "head0.q.bias")
        .unwrap();
    bias.set(&Tensor::new(&[0.0f32, f32::NAN], &Device::Cpu).unwrap())
        .unwrap();
    let bytes = q_network_onnx(&net, &cartpole_spec()).unwrap();
    let err = Policy::from_bytes(&bytes).unwrap_err();
    assert!(
        matches!(
            err,
            PolicyLoadError::NonFiniteOutput {
                output: "q",
                index: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn observations_of_the_wrong_length_are_refused_at_step() {
    let mut policy = load(&good_model()).unwrap();
    assert!(matches!(
        policy.step(&[0.0; 3]),
        Err(PolicyLoadError::ObservationLength {
            expected: 4,
            found: 3
        })
    ));
    // And the policy still works afterwards.
    policy.step(&[0.0; 4]).unwrap();
}

#[test]
fn the_metadata_key_is_the_contracts() {
    let model = good_model();
    assert_eq!(model.metadata_props[0].key, METADATA_POLICY_SPEC);
    assert_eq!(model.opset_import[0].version, 17);
}

/// Outputs of the default-loaded policy and of tract for one observation.
type OutputPair = (Vec<f32>, Vec<f32>);

/// Native and tract outputs for the same observations.
fn both_engines(bytes: &[u8], obs_dim: usize, seed: u64) -> (Engine, Vec<OutputPair>) {
    let mut native = Policy::from_bytes(bytes).unwrap();
    let mut tract = Policy::from_bytes_with(bytes, LoadOptions { native: false }).unwrap();
    let mut rng = SimRng::seed(seed);
    let pairs = (0..100)
        .map(|_| {
            let obs: Vec<f32> = (0..obs_dim).map(|_| (rng.normal() * 2.0) as f32).collect();
            let out = |p: &mut Policy| match p.step(&obs).unwrap() {
                PolicyOutput::Discrete { q, .. } => q.to_vec(),
                PolicyOutput::Continuous { action } => action.to_vec(),
            };
            (out(&mut native), out(&mut tract))
        })
        .collect();
    (native.engine(), pairs)
}

#[test]
fn the_native_evaluator_matches_tract_on_every_operator_it_compiles() {
    // Every operator and attribute variant the native evaluator models, outside
    // what the exporter happens to write: Gemm with transB = 0 and alpha/beta, MatMul,
    // Sigmoid, Identity, Mul/Div/Max with scalar and row constants, Sub from a
    // constant, LayerNormalization without a bias, ReduceMean without keepdims.
    let mut rng = SimRng::seed(42);
    let mut data = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32 * 0.5).collect() };
    let mut g = OnnxGraph::new();
    let w1 = g.constant("w1", &[4, 8], data(32));
    let b1 = g.constant("b1", &[1, 8], data(8));
    let h = g.op(
        "Gemm",
        &[INPUT_OBS, &w1, &b1],
        &[Attr::Float("alpha", 0.5), Attr::Float("beta", 2.0)],
        None,
    );
    let h = g.op("Sigmoid", &[&h], &[], None);
    let w2 = g.constant("w2", &[8, 6], data(48));
    let h = g.op("MatMul", &[&h, &w2], &[], None);
    let two = g.constant("two", &[1], vec![2.0]);
    let h = g.op("Mul", &[&h, &two], &[], None);
    let row = g.constant("row", &[6], vec![1.5, 0.5, 2.0, 1.0, 4.0, 0.25]);
    let h = g.op("Div", &[&h, &row], &[], None);
    let gain = g.constant("gain", &[6], data(6));
    let h = g.op(
        "LayerNormalization",
        &[&h, &gain],
        &[Attr::Int("axis", 1), Attr::Float("epsilon", 1e-3)],
        None,
    );
    let floor = g.constant("floor", &[1, 1], vec![-0.3]);
    let h = g.op("Max", &[&h, &floor], &[], None);
    let h = g.op("Identity", &[&h], &[], None);
    let mean = g.op(
        "ReduceMean",
        &[&h],
        &[Attr::Ints("axes", vec![-1]), Attr::Int("keepdims", 0)],
        None,
    );
    let one = g.constant("one", &[1], vec![1.0]);
    let shifted = g.op("Sub", &[&one, &mean], &[], None);
    let w3 = g.constant("w3", &[2, 6], data(12));
    let q = g.op("Gemm", &[&h, &w3], &[Attr::Int("transB", 1)], None);
    g.op("Add", &[&q, &shifted], &[], Some(OUTPUT_Q));
    let bytes = g
        .finish(&[(INPUT_OBS, 4)], &[(OUTPUT_Q, 2)], &cartpole_spec())
        .unwrap();
    let (engine, pairs) = both_engines(&bytes, 4, 5);
    assert_eq!(engine, Engine::Native);
    for (native, tract) in pairs {
        for (a, b) in native.iter().zip(&tract) {
            assert!(close(*a, *b), "native {native:?} vs tract {tract:?}");
        }
    }
}

#[test]
fn graphs_outside_the_native_evaluator_run_on_tract() {
    // Abs is a valid ONNX operator that tract runs and the native evaluator does
    // not model: the policy loads, runs on tract, and gives tract's answer.
    let mut g = OnnxGraph::new();
    let w = g.constant(
        "w",
        &[2, 4],
        vec![1.0, -2.0, 0.5, 0.0, -1.0, 0.25, 3.0, 1.0],
    );
    let q = g.op("Gemm", &[INPUT_OBS, &w], &[Attr::Int("transB", 1)], None);
    g.op("Abs", &[&q], &[], Some(OUTPUT_Q));
    let bytes = g
        .finish(&[(INPUT_OBS, 4)], &[(OUTPUT_Q, 2)], &cartpole_spec())
        .unwrap();
    let (engine, pairs) = both_engines(&bytes, 4, 6);
    assert_eq!(engine, Engine::Tract);
    for (native, tract) in pairs {
        assert_eq!(native, tract);
        assert!(native.iter().all(|v| *v >= 0.0));
    }
}

/// Continuous policies (DDPG and TD3 actors, NAF's μ) exported from their agents:
/// tract (both engines) gives the agent's own greedy action to 1e-5 in env
/// units, with observation normalization baked in and actions inside the bounds.
#[test]
fn continuous_policies_match_their_agents() {
    use reflex_msgs::Action;
    use reflex_trainer::algo::build;
    use reflex_trainer::export::spec_for;
    use reflex_trainer::run::RunConfig;

    let interop = std::env::var_os("REFLEX_INTEROP_DIR").map(std::path::PathBuf::from);
    let cases = [
        ("ddpg-pendulum", "pendulum", "ddpg", false),
        ("td3-obsnorm-pendulum", "pendulum", "td3", true),
        (
            "naf-mountaincarcontinuous",
            "mountaincarcontinuous",
            "naf",
            false,
        ),
        ("naf-obsnorm-pendulum", "pendulum", "naf", true),
    ];
    for (seed, (name, env_name, algo, obs_norm)) in cases.into_iter().enumerate() {
        let mut config = RunConfig {
            env: env_name.into(),
            algo: algo.into(),
            seed: seed as u64,
            ..RunConfig::default()
        };
        config.ddpg.obs_norm = obs_norm;
        config.td3.obs_norm = obs_norm;
        config.naf.obs_norm = obs_norm;
        config.ddpg.actor.hidden = vec![64, 64];
        config.td3.actor.hidden = vec![64, 64];
        config.naf.net.hidden = vec![64, 64];
        let env = reflex_sim::make(env_name).unwrap();
        let mut agent = build(&config, env.as_ref(), &Device::Cpu).unwrap();
        let dim = env.observation_space().dim();
        let mut rng = SimRng::seed(50 + seed as u64);
        let random_obs = |rng: &mut SimRng| -> Vec<f32> {
            (0..dim)
                .map(|_| (rng.normal() * 3.0 + 1.0) as f32)
                .collect()
        };
        if let Some(norm) = agent.obs_norm() {
            for _ in 0..100 {
                norm.update(&random_obs(&mut rng));
            }
        }
        let spec = spec_for(algo, env_name, env.as_ref());
        let bytes = agent.to_onnx(&spec).unwrap();
        let mut native = Policy::from_bytes(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(native.engine(), Engine::Native, "{name}");
        assert_eq!(native.spec().obs_mean.is_empty(), !obs_norm, "{name}");
        let mut tract = Policy::from_bytes_with(&bytes, LoadOptions { native: false }).unwrap();
        let bounds = match env.action_space() {
            reflex_msgs::ActionSpace::Box(b) => b.clone(),
            _ => unreachable!(),
        };
        let (mut probes, mut expected) = (Vec::new(), Vec::new());
        for _ in 0..200 {
            let obs = random_obs(&mut rng);
            let Action::Continuous(want) = agent.greedy(&obs).unwrap() else {
                panic!("{name}: continuous agent")
            };
            for policy in [&mut native, &mut tract] {
                let engine = policy.engine();
                let PolicyOutput::Continuous { action } = policy.step(&obs).unwrap() else {
                    panic!("{name}: a continuous policy must give an action");
                };
                for (i, (a, b)) in want.iter().zip(action).enumerate() {
                    assert!(
                        close(*a, *b),
                        "{name}: candle {want:?} vs {engine:?} {action:?}"
                    );
                    assert!(
                        (bounds.low[i]..=bounds.high[i]).contains(b),
                        "{name}: {b} out of bounds"
                    );
                }
            }
            probes.extend_from_slice(&obs);
            expected.extend_from_slice(&want);
        }
        if let Some(dir) = &interop {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(format!("{name}.onnx")), &bytes).unwrap();
            let record = serde_json::json!({
                "obs": probes, "action": expected, "obs_dim": dim,
                "act_dim": bounds.dim(),
            });
            std::fs::write(dir.join(format!("{name}.json")), record.to_string()).unwrap();
        }
    }
}

/// A DRQN policy exported from its agent: over three 100-step rollouts on masked
/// CartPole with the state fed back (and the applied action, sometimes not the
/// greedy one, as `prev_action`), the Q-values and new state of both engines
/// (the native evaluator's LSTM step and tract's) match candle's to 1e-5 and the greedy actions agree; `reset()` returns to the zero state. The
/// agent's own evaluation (`greedy`) agrees with the policy file too.
#[test]
fn recurrent_policies_match_their_agents_over_rollouts() {
    use candle_core::DType;
    use reflex_msgs::Action;
    use reflex_trainer::algo::drqn::{Drqn, DrqnConfig};
    use reflex_trainer::algo::Agent;
    use reflex_trainer::export::spec_for;

    let mut config = DrqnConfig {
        lstm_hidden: 32,
        ..DrqnConfig::default()
    };
    config.net.final_init_scale = 1.0;
    let dev = Device::Cpu;
    let mut env = reflex_sim::make("cartpole-masked").unwrap();
    let mut agent = Drqn::new(config, 2, 2, 4, &dev).unwrap();
    // Observation statistics far from (0, 1), baked into the file.
    let mut rng = SimRng::seed(10);
    let norm = agent.obs_norm().expect("DRQN normalizes by default");
    for _ in 0..100 {
        norm.update(&[
            (rng.normal() * 0.5 + 0.3) as f32,
            (rng.normal() * 0.05) as f32,
        ]);
    }
    let norm = norm.clone();
    let spec = spec_for("drqn", "cartpole-masked", env.as_ref());
    let bytes = agent.to_onnx(&spec).unwrap();
    // The first episode's inputs and candle's outputs, for the onnxruntime check.
    let mut record = serde_json::json!({
        "obs_dim": 2, "n_actions": 2, "hidden": 32, "recurrent": true,
        "obs": [], "prev_action": [], "q": [], "h": [], "c": [],
    });
    let mut policy = Policy::from_bytes(&bytes).unwrap();
    assert!(policy.is_recurrent());
    assert_eq!(
        policy.engine(),
        Engine::Native,
        "the LSTM step compiles natively"
    );
    let mut tract = Policy::from_bytes_with(&bytes, LoadOptions { native: false }).unwrap();
    assert_eq!(
        policy.spec().obs_mean.len(),
        2,
        "normalization is in the spec"
    );
    assert_eq!(policy.spec().recurrent_hidden_size, 32);
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for rollout in 0..3u64 {
        let mut obs = env.reset(Some(rollout)).to_vec();
        policy.reset();
        tract.reset();
        assert!(policy.recurrent_state().0.iter().all(|v| *v == 0.0));
        let mut h = Tensor::zeros((1, 32), DType::F32, &dev).unwrap();
        let mut c = h.clone();
        let mut prev = vec![0.0f32; 2];
        for t in 0..100 {
            let mut x = obs.clone();
            norm.apply(&mut x);
            x.extend_from_slice(&prev);
            let x = Tensor::from_vec(x, (1, 4), &dev).unwrap();
            let (q, h2, c2) = agent.online.step(&x, &h, &c).unwrap();
            (h, c) = (h2, c2);
            let want_q = flat(&q);
            let PolicyOutput::Discrete { q: tract_q, .. } = tract.step(&obs).unwrap() else {
                panic!("a DRQN policy gives Q-values")
            };
            let tract_q = tract_q.to_vec();
            let PolicyOutput::Discrete { action, q } = policy.step(&obs).unwrap() else {
                panic!("a DRQN policy gives Q-values")
            };
            let step_name = format!("rollout {rollout} step {t}");
            for (a, b) in tract_q.iter().zip(q) {
                assert!(
                    close(*a, *b),
                    "{step_name}: tract {tract_q:?} vs native {q:?}"
                );
            }
            for (a, b) in want_q.iter().zip(q) {
                assert!(close(*a, *b), "{step_name}: q {want_q:?} vs {q:?}");
            }
            let want_action = if want_q[1] > want_q[0] { 1 } else { 0 };
            assert_eq!(action, want_action, "{step_name}");
            for engine in [&policy, &tract] {
                let (ph, pc) = engine.recurrent_state();
                for (a, b) in flat(&h).iter().zip(ph).chain(flat(&c).iter().zip(pc)) {
                    assert!(close(*a, *b), "{step_name}: {:?} state", engine.engine());
                }
            }
            if rollout == 0 {
                for (key, values) in [
                    ("obs", obs.clone()),
                    ("prev_action", prev.clone()),
                    ("q", want_q.clone()),
                    ("h", flat(&h)),
                    ("c", flat(&c)),
                ] {
                    let list = record[key].as_array_mut().unwrap();
                    list.extend(values.into_iter().map(serde_json::Value::from));
                }
            }
            // Every fifth step the applied action is not the greedy one, so the
            // `prev_action` input is really read.
            let applied = if t % 5 == 4 { 1 - action } else { action };
            prev = vec![0.0; 2];
            prev[applied as usize] = 1.0;
            policy.observe_applied(&Action::Discrete(applied));
            tract.observe_applied(&Action::Discrete(applied));
            // 100 steps with the state fed back, whatever the episodes do: an
            // early pole fall just brings fresh observations.
            if env.step(&Action::Discrete(applied)).unwrap().done() {
                env.reset(None);
            }
            obs.copy_from_slice(env.obs());
        }
    }
    if let Some(dir) = std::env::var_os("REFLEX_INTEROP_DIR") {
        let dir = std::path::Path::new(&dir);
        std::fs::write(dir.join("drqn-cartpole-masked.onnx"), &bytes).unwrap();
        std::fs::write(dir.join("drqn-cartpole-masked.json"), record.to_string()).unwrap();
    }
    // The agent's greedy evaluation carries its own state and agrees with the
    // file over a whole greedy episode.
    let mut obs = env.reset(Some(11)).to_vec();
    agent.greedy_reset();
    policy.reset();
    loop {
        let Action::Discrete(want) = agent.greedy(&obs).unwrap() else {
            panic!("discrete agent")
        };
        let PolicyOutput::Discrete { action, .. } = policy.step(&obs).unwrap() else {
            panic!("discrete policy")
        };
        assert_eq!(action, want);
        policy.observe_applied(&Action::Discrete(action));
        if env.step(&Action::Discrete(action)).unwrap().done() {
            break;
        }
        obs.copy_from_slice(env.obs());
    }
}

/// Recurrent TD3's exported step (`obs`, `prev_action` in env units, `h_in`,
/// `c_in` → `action`, `h_out`, `c_out`) agrees with candle's actor, native and
/// tract alike, over 100-step rollouts with the applied (perturbed) action fed
/// back; and the agent's greedy evaluation agrees with the file over an episode.
#[test]
fn recurrent_td3_policies_match_their_agents_over_rollouts() {
    use candle_core::DType;
    use reflex_msgs::{Action, ActionSpace};
    use reflex_trainer::algo::ddpg::DdpgConfig;
    use reflex_trainer::algo::recurrent::LstmConfig;
    use reflex_trainer::algo::recurrent_ddpg::RecurrentDdpg;
    use reflex_trainer::algo::Agent;
    use reflex_trainer::export::spec_for;

    let mut config = DdpgConfig {
        obs_norm: true,
        ..DdpgConfig::td3()
    };
    config.actor.hidden = vec![32, 32];
    let lstm = LstmConfig {
        hidden: 24,
        ..LstmConfig::default()
    };
    let dev = Device::Cpu;
    let mut env = reflex_sim::make("pendulum-masked").unwrap();
    let ActionSpace::Box(bounds) = env.action_space().clone() else {
        panic!("pendulum is continuous")
    };
    let mut agent = RecurrentDdpg::new(config, lstm, true, 2, &bounds, 7, &dev).unwrap();
    let mut rng = SimRng::seed(10);
    let norm = agent.obs_norm().expect("normalization is on");
    for _ in 0..100 {
        norm.update(&[
            (rng.normal() * 0.5 + 0.3) as f32,
            (rng.normal() * 0.2) as f32,
        ]);
    }
    let norm = norm.clone();
    let spec = spec_for("td3", "pendulum-masked", env.as_ref());
    let bytes = agent.to_onnx(&spec).unwrap();
    let mut policy = Policy::from_bytes(&bytes).unwrap();
    assert!(policy.is_recurrent());
    assert_eq!(
        policy.engine(),
        Engine::Native,
        "the step compiles natively"
    );
    assert_eq!(policy.spec().recurrent_hidden_size, 24);
    let mut tract = Policy::from_bytes_with(&bytes, LoadOptions { native: false }).unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for rollout in 0..2u64 {
        let mut obs = env.reset(Some(rollout)).to_vec();
        policy.reset();
        tract.reset();
        let mut h = Tensor::zeros((1, 24), DType::F32, &dev).unwrap();
        let mut c = h.clone();
        let mut prev = 0.0f32;
        for t in 0..100 {
            let mut x = obs.clone();
            norm.apply(&mut x);
            x.push(prev / 2.0);
            let x = Tensor::from_vec(x, (1, 3), &dev).unwrap();
            let (mu, h2, c2) = agent.actor.step(&x, &h, &c).unwrap();
            (h, c) = (h2, c2);
            let want = 2.0 * flat(&mu)[0];
            let step_name = format!("rollout {rollout} step {t}");
            let mut applied = 0.0;
            for engine in [&mut policy, &mut tract] {
                let PolicyOutput::Continuous { action } = engine.step(&obs).unwrap() else {
                    panic!("a TD3 policy gives actions")
                };
                assert!(close(action[0], want), "{step_name}: {action:?} vs {want}");
                applied = action[0];
            }
            for engine in [&policy, &tract] {
                let (ph, pc) = engine.recurrent_state();
                for (a, b) in flat(&h).iter().zip(ph).chain(flat(&c).iter().zip(pc)) {
                    assert!(close(*a, *b), "{step_name}: {:?} state", engine.engine());
                }
            }
            // Every third step the applied action is not the policy's (as
            // exploration and the safety layer do), so `prev_action` is read.
            if t % 3 == 2 {
                applied = (applied + 0.7).clamp(-2.0, 2.0);
            }
            prev = applied;
            let action = Action::Continuous(vec![applied]);
            policy.observe_applied(&action);
            tract.observe_applied(&action);
            env.step(&action).unwrap();
            obs.copy_from_slice(env.obs());
        }
    }
    // The agent's greedy evaluation carries its own state and agrees with the
    // file over a whole episode.
    let mut obs = env.reset(Some(11)).to_vec();
    agent.greedy_reset();
    policy.reset();
    loop {
        let Action::Continuous(want) = agent.greedy(&obs).unwrap() else {
            panic!("continuous agent")
        };
        let PolicyOutput::Continuous { action } = policy.step(&obs).unwrap() else {
            panic!("continuous policy")
        };
        assert!(close(action[0], want[0]), "{action:?} vs {want:?}");
        let action = Action::Continuous(action.to_vec());
        policy.observe_applied(&action);
        if env.step(&action).unwrap().done() {
            break;
        }
        obs.copy_from_slice(env.obs());
    }
}
