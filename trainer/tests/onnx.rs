//! ONNX export ↔ tract runtime: parity of every discrete network kind with the
//! candle forward pass, and refusal of every kind of bad policy file.
//!
//! With `REFLEX_INTEROP_DIR` set, the parity test also writes each exported file
//! with its probe inputs and candle's outputs there, for `scripts/onnx-interop.py`
//! (onnx checker + onnxruntime), which `.ci/run` runs.

use candle_core::{Device, Tensor};
use prost::Message;
use reflex_daemon::{Policy, PolicyLoadError, PolicyOutput};
use reflex_msgs::onnx::{INPUT_OBS, METADATA_POLICY_SPEC, OUTPUT_Q};
use reflex_msgs::PolicySpec;
use reflex_sim::{make, SimRng};
use reflex_trainer::export::{q_network_onnx, spec_for, Attr, OnnxGraph};
use reflex_trainer::nn::{Activation, NetConfig, QNetwork};
use tract_onnx::pb;

/// The network kinds DQN can train, with final layers at full scale so the
/// outputs are far from zero and differences show.
fn kinds() -> Vec<(&'static str, NetConfig, usize)> {
    let base = NetConfig {
        hidden: vec![64, 64],
        activation: Activation::Relu,
        layer_norm: false,
        dueling: false,
        final_init_scale: 1.0,
    };
    vec![
        ("plain", base.clone(), 1),
        (
            "dueling",
            NetConfig {
                dueling: true,
                ..base.clone()
            },
            1,
        ),
        (
            "twin-dueling-layernorm-tanh",
            NetConfig {
                dueling: true,
                layer_norm: true,
                activation: Activation::Tanh,
                ..base.clone()
            },
            2,
        ),
        (
            "twin-plain-256",
            NetConfig {
                hidden: vec![256, 256],
                ..base
            },
            2,
        ),
    ]
}

fn cartpole_spec() -> PolicySpec {
    spec_for("dqn", "cartpole", make("cartpole").unwrap().as_ref())
}

fn network(config: &NetConfig, heads: usize, seed: u64) -> QNetwork {
    let mut rng = SimRng::seed(seed);
    QNetwork::new(config, 4, 2, heads, &mut rng, &Device::Cpu).unwrap()
}

fn candle_q(net: &QNetwork, obs: &[f32]) -> Vec<f32> {
    let x = Tensor::from_slice(obs, (1, obs.len()), &Device::Cpu).unwrap();
    net.q_values(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

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
        let mut policy = Policy::from_bytes(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(policy.spec(), &spec, "{name}: spec round trip");

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
            let PolicyOutput::Discrete { action, q } = policy.step(&obs).unwrap() else {
                panic!("{name}: a Q-network must give a discrete output");
            };
            for (a, b) in want.iter().zip(q) {
                assert!(close(*a, *b), "{name}: candle {want:?} vs tract {q:?}");
            }
            let greedy = if want[1] > want[0] { 1 } else { 0 };
            if (want[0] - want[1]).abs() > 1e-5 && greedy != action {
                disagreements += 1;
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
