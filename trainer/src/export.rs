//! ONNX export: a trained policy as one self-describing `.onnx` file, the contract
//! between the trainer and every robot (shared/DESIGN.md, "ONNX policy").
//!
//! The protobuf is written by our own code with the ONNX message types that
//! tract-onnx generates with prost (`tract_onnx::pb`), so no Python is involved.
//! Files use opset 17 (`LayerNormalization` is standard there) and IR version 8,
//! which onnx ≥ 1.12, onnxruntime ≥ 1.12 and tract accept. The batch dimension is
//! the symbol `batch`; every tensor is float32; the [`PolicySpec`] is JSON in
//! `metadata_props["reflex.policy_spec"]`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::Var;
use prost::Message;
use reflex_msgs::onnx::{INPUT_OBS, METADATA_POLICY_SPEC, OUTPUT_Q};
use reflex_msgs::{ActionSpace, PolicySpec, WIRE_VERSION};
use reflex_sim::Env;
use tract_onnx::pb;

use crate::algo::Agent;
use crate::nn::QNetwork;
use crate::TrainError;

/// ONNX operator set the exporter writes.
pub const OPSET: i64 = 17;
/// ONNX IR version the exporter writes (the one that goes with opset 17).
pub const IR_VERSION: i64 = 8;
/// File name of an exported policy, in a run folder and beside each checkpoint.
pub const POLICY_FILE: &str = "policy.onnx";

const FLOAT: i32 = pb::tensor_proto::DataType::Float as i32;
const INT64: i32 = pb::tensor_proto::DataType::Int64 as i32;

/// An ONNX graph under construction: nodes in topological order and the
/// initializers (weights) they read.
#[derive(Debug, Default)]
pub struct OnnxGraph {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    counter: usize,
}

/// An attribute of an ONNX node.
pub enum Attr<'a> {
    /// An integer, e.g. `transB = 1`.
    Int(&'a str, i64),
    /// A float, e.g. `epsilon`.
    Float(&'a str, f32),
    /// A list of integers, e.g. `axes`.
    Ints(&'a str, Vec<i64>),
}

impl Attr<'_> {
    fn proto(&self) -> pb::AttributeProto {
        use pb::attribute_proto::AttributeType;
        match self {
            Attr::Int(name, i) => pb::AttributeProto {
                name: name.to_string(),
                r#type: AttributeType::Int as i32,
                i: *i,
                ..Default::default()
            },
            Attr::Float(name, f) => pb::AttributeProto {
                name: name.to_string(),
                r#type: AttributeType::Float as i32,
                f: *f,
                ..Default::default()
            },
            Attr::Ints(name, ints) => pb::AttributeProto {
                name: name.to_string(),
                r#type: AttributeType::Ints as i32,
                ints: ints.clone(),
                ..Default::default()
            },
        }
    }
}

impl OnnxGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a float32 initializer named `name` with `dims`; returns its name.
    pub fn constant(&mut self, name: &str, dims: &[usize], data: Vec<f32>) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        self.initializers.push(pb::TensorProto {
            name: name.to_string(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.to_string()
    }

    /// Adds an int64 initializer (axes, shapes) named `name`; returns its name.
    pub fn constant_i64(&mut self, name: &str, values: &[i64]) -> String {
        self.initializers.push(pb::TensorProto {
            name: name.to_string(),
            dims: vec![values.len() as i64],
            data_type: INT64,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.to_string()
    }

    /// Adds a parameter as an initializer under its network name.
    pub fn parameter(&mut self, name: &str, var: &Var) -> candle_core::Result<String> {
        let tensor = var.as_tensor();
        let data = tensor.flatten_all()?.to_vec1::<f32>()?;
        Ok(self.constant(name, tensor.dims(), data))
    }

    /// Adds a node of `op_type` reading `inputs`; its single output is named
    /// `output`, or gets a fresh name. Returns the output's name.
    pub fn op(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attrs: &[Attr<'_>],
        output: Option<&str>,
    ) -> String {
        self.counter += 1;
        let out = output.map_or_else(
            || format!("{}_{}", op_type.to_lowercase(), self.counter),
            str::to_string,
        );
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: format!("{op_type}_{}", self.counter),
            op_type: op_type.to_string(),
            attribute: attrs.iter().map(Attr::proto).collect(),
            ..Default::default()
        });
        out
    }

    /// Adds a node with several outputs (e.g. `LSTM`'s `Y`, `Y_h`, `Y_c`); an empty
    /// name leaves an optional output out. Empty input names skip optional inputs.
    pub fn op_outputs(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attrs: &[Attr<'_>],
        outputs: &[&str],
    ) {
        self.counter += 1;
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: format!("{op_type}_{}", self.counter),
            op_type: op_type.to_string(),
            attribute: attrs.iter().map(Attr::proto).collect(),
            ..Default::default()
        });
    }

    /// The model: `inputs` and `outputs` as (name, feature width) float32
    /// `[batch, width]` tensors, `spec` in the metadata. Returns the protobuf bytes.
    pub fn finish(
        self,
        inputs: &[(&str, usize)],
        outputs: &[(&str, usize)],
        spec: &PolicySpec,
    ) -> Result<Vec<u8>, TrainError> {
        let info = |(name, width): &(&str, usize)| pb::ValueInfoProto {
            name: name.to_string(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: FLOAT,
                    shape: Some(pb::TensorShapeProto {
                        dim: vec![
                            pb::tensor_shape_proto::Dimension {
                                value: Some(pb::tensor_shape_proto::dimension::Value::DimParam(
                                    "batch".into(),
                                )),
                                ..Default::default()
                            },
                            pb::tensor_shape_proto::Dimension {
                                value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(
                                    *width as i64,
                                )),
                                ..Default::default()
                            },
                        ],
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let spec_json = serde_json::to_string(spec)
            .map_err(|e| TrainError::Export(format!("policy spec to JSON: {e}")))?;
        let model = pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "reflex".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: format!(
                "reflex {} policy for {} (see metadata {METADATA_POLICY_SPEC})",
                spec.algorithm, spec.env_id
            ),
            graph: Some(pb::GraphProto {
                node: self.nodes,
                name: format!("reflex_{}", spec.algorithm),
                initializer: self.initializers,
                input: inputs.iter().map(info).collect(),
                output: outputs.iter().map(info).collect(),
                ..Default::default()
            }),
            metadata_props: vec![pb::StringStringEntryProto {
                key: METADATA_POLICY_SPEC.into(),
                value: spec_json,
            }],
            ..Default::default()
        };
        Ok(model.encode_to_vec())
    }
}

/// The spec of a policy for `env` trained by `algorithm`, without the fields
/// only known at export time (training step, checkpoint hash, version).
pub fn spec_for(algorithm: &str, env_id: &str, env: &dyn Env) -> PolicySpec {
    PolicySpec {
        wire_version: WIRE_VERSION,
        algorithm: algorithm.to_string(),
        env_id: env_id.to_string(),
        observation_space: env.observation_space().clone(),
        action_space: env.action_space().clone(),
        recurrent_hidden_size: 0,
        obs_mean: Vec::new(),
        obs_std: Vec::new(),
        policy_version: 0,
        training_step: 0,
        source_checkpoint_sha256: String::new(),
        reflex_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Observation normalization from the spec, as the graph's first nodes; returns
/// the name of the (possibly normalized) observation.
pub fn normalized_obs(g: &mut OnnxGraph, spec: &PolicySpec) -> String {
    if spec.obs_mean.is_empty() {
        return INPUT_OBS.to_string();
    }
    let dim = spec.obs_mean.len();
    let mean = g.constant("obs_norm.mean", &[dim], spec.obs_mean.clone());
    let std = g.constant("obs_norm.std", &[dim], spec.obs_std.clone());
    let centered = g.op("Sub", &[INPUT_OBS, &mean], &[], None);
    g.op("Div", &[&centered, &std], &[], None)
}

/// A discrete Q-network as ONNX: `obs` [batch, obs_dim] → `q` [batch, n_actions]
/// (the minimum over the heads for Twin DQN, as the trainer acts).
pub fn q_network_onnx(net: &QNetwork, spec: &PolicySpec) -> Result<Vec<u8>, TrainError> {
    spec.validate()
        .map_err(|e| TrainError::Export(format!("policy spec: {e}")))?;
    let n_actions = match spec.action_space {
        ActionSpace::Discrete { n } => n as usize,
        ActionSpace::Box(_) => {
            return Err(TrainError::Export(
                "a Q-network needs a discrete action space".into(),
            ))
        }
    };
    let obs_dim = spec.observation_space.dim();
    if obs_dim != net.obs_dim() || n_actions != net.n_actions() {
        return Err(TrainError::Export(format!(
            "network is {}→{}, spec says {obs_dim}→{n_actions}",
            net.obs_dim(),
            net.n_actions()
        )));
    }
    let mut g = OnnxGraph::new();
    let x = normalized_obs(&mut g, spec);
    net.to_onnx(&mut g, &x, OUTPUT_Q)?;
    g.finish(&[(INPUT_OBS, obs_dim)], &[(OUTPUT_Q, n_actions)], spec)
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let io = |e: std::io::Error| TrainError::Export(format!("{}: {e}", path.display()));
    let tmp = path.with_extension("onnx.tmp");
    let mut file = fs::File::create(&tmp).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

/// Exports `agent`'s acting network, whose weights were saved in `checkpoint`,
/// to `checkpoint/policy.onnx`, recording the checkpoint's weights hash and the
/// agent's update count as `training_step` in the spec. Returns the file's path.
pub fn export_beside_checkpoint(
    checkpoint: &Path,
    agent: &dyn Agent,
    template: &PolicySpec,
) -> Result<PathBuf, TrainError> {
    let bytes = policy_for_checkpoint(checkpoint, agent, template)?;
    let path = checkpoint.join(POLICY_FILE);
    write_atomic(&path, &bytes)?;
    Ok(path)
}

/// The ONNX bytes of `agent` as saved in `checkpoint` (see
/// [`export_beside_checkpoint`]). Its weights are the ones
/// [`checkpoint::save`](crate::checkpoint::save) wrote or
/// [`checkpoint::load`](crate::checkpoint::load) read, both of which refuse
/// NaN, so they are not checked again here.
pub fn policy_for_checkpoint(
    checkpoint: &Path,
    agent: &dyn Agent,
    template: &PolicySpec,
) -> Result<Vec<u8>, TrainError> {
    let weights = checkpoint.join("weights.safetensors");
    let bytes = fs::read(&weights)
        .map_err(|e| TrainError::Export(format!("{}: {e}", weights.display())))?;
    let mut spec = template.clone();
    spec.training_step = agent.updates();
    spec.source_checkpoint_sha256 = reflex_msgs::hash::to_hex(&reflex_msgs::hash::sha256(&bytes));
    agent.to_onnx(&spec)
}
