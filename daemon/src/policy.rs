//! The policy runtime: an ONNX policy file, checked against the contract in
//! shared/DESIGN.md ("ONNX policy") and run with tract.
//!
//! [`Policy::from_bytes`] refuses, with a typed [`PolicyLoadError`] naming what is
//! wrong, anything a robot should not run: bytes that are not an ONNX model, a
//! missing or inconsistent [`PolicySpec`], inputs or outputs with the wrong names,
//! types or shapes, operators tract does not support, and a graph whose output on
//! a probe observation is not finite. Loading never panics: tract's own checks run
//! behind a panic guard, and a panic there becomes [`PolicyLoadError::Panicked`].
//!
//! [`Policy::step`] runs one observation (batch 1). tract validates every policy,
//! but it allocates each node's output on every run; so where the graph is one of
//! the small chains reflex exports (feed-forward, or one LSTM step in front of a
//! head), the policy runs on [`crate::native::Plan`] instead, an evaluator whose
//! buffers are allocated at load and which allocates nothing per step. A plan is
//! only used if it agrees with tract on a set of probe observations (to 1e-5; for
//! a recurrent policy, a rollout over them with the state and previous action fed
//! back, the new state compared too); otherwise, and for every other graph, tract
//! runs it ([`Policy::engine`] says which). [`LoadOptions`] can force tract.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::actor::{Actor, ActorError, Loader};
use std::path::Path;

use reflex_msgs::onnx::{
    INPUT_C, INPUT_H, INPUT_OBS, INPUT_PREV_ACTION, METADATA_POLICY_SPEC, OUTPUT_ACTION, OUTPUT_C,
    OUTPUT_H, OUTPUT_Q,
};
use reflex_msgs::{Action, ActionSpace, PolicySpec};
use std::sync::Arc;
use tract_onnx::pb;
use tract_onnx::prelude::*;

/// ONNX `TensorProto.DataType` of float32.
const ONNX_FLOAT: i32 = 1;

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not an ONNX model (corrupt, truncated, not protobuf).
    #[error("not an ONNX model ({0})")]
    Decode(String),
    /// The model has no graph.
    #[error("the ONNX model has no graph")]
    NoGraph,
    /// No `reflex.policy_spec` entry in `metadata_props`.
    #[error("the ONNX model has no `{METADATA_POLICY_SPEC}` metadata: not a reflex policy")]
    MissingSpec,
    /// The spec metadata is not a valid JSON `PolicySpec`.
    #[error("`{METADATA_POLICY_SPEC}` metadata is not a policy spec: {0}")]
    BadSpec(String),
    /// The spec is internally inconsistent.
    #[error("policy spec: {0}")]
    InvalidSpec(#[from] reflex_msgs::PolicyError),
    /// A kind of policy this runtime does not run yet.
    #[error("unsupported policy: {0}")]
    Unsupported(String),
    /// The graph's inputs are not the ones the spec calls for.
    #[error("graph inputs are {found:?}; a {kind} policy needs exactly {expected:?}")]
    WrongInputs {
        /// Policy kind, e.g. "discrete feed-forward".
        kind: &'static str,
        /// Names the contract requires.
        expected: Vec<String>,
        /// Names the graph declares.
        found: Vec<String>,
    },
    /// The graph's outputs are not the ones the spec calls for.
    #[error("graph outputs are {found:?}; a {kind} policy needs exactly {expected:?}")]
    WrongOutputs {
        /// Policy kind.
        kind: &'static str,
        /// Names the contract requires.
        expected: Vec<String>,
        /// Names the graph declares.
        found: Vec<String>,
    },
    /// An input or output is declared with a type other than float32.
    #[error("`{name}` is declared as ONNX type {found}; the contract is float32 (1)")]
    WrongType {
        /// Tensor name.
        name: String,
        /// ONNX `elem_type`.
        found: i32,
    },
    /// An input or output has a shape that disagrees with the spec.
    #[error("`{name}` has shape {found}; the spec calls for [batch, {expected}]")]
    WrongShape {
        /// Tensor name.
        name: String,
        /// Expected feature width.
        expected: usize,
        /// What the graph declares or tract infers.
        found: String,
    },
    /// tract could not build or optimize the graph (unsupported operator,
    /// inconsistent shapes, bad initializers…).
    #[error("tract cannot run the graph: {0}")]
    Graph(String),
    /// The graph produced NaN or infinity on the probe observation.
    #[error("output `{output}` is not finite on the probe observation (value {value} at {index})")]
    NonFiniteOutput {
        /// Output name.
        output: &'static str,
        /// Index of the first bad value.
        index: usize,
        /// The value.
        value: f32,
    },
    /// An observation of the wrong length was given to [`Policy::step`].
    #[error("observation has {found} values; the policy takes {expected}")]
    ObservationLength {
        /// `obs_dim`.
        expected: usize,
        /// Given length.
        found: usize,
    },
    /// tract failed while running a step.
    #[error("running the policy: {0}")]
    Run(String),
    /// tract panicked; the message is kept.
    #[error("tract panicked while {during}: {message}")]
    Panicked {
        /// What was being done.
        during: &'static str,
        /// The panic's message.
        message: String,
    },
}

/// What one step of a policy gives: the same type the control loop consumes
/// from any [`Actor`].
pub use crate::actor::ActorOutput as PolicyOutput;

/// Which evaluator runs a loaded policy's steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// [`crate::native::Plan`]: preallocated, no allocation per step.
    Native,
    /// tract's optimized plan.
    Tract,
}

/// How to load a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Try the allocation-free native evaluator (default `true`); tract runs the
    /// graph when this is off or the graph is outside what the evaluator models.
    pub native: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { native: true }
    }
}

/// Agreement the native plan must show with tract before it is used.
const NATIVE_TOLERANCE: f32 = 1e-5;
/// Observations the native plan is checked on at load (the probe plus these).
const NATIVE_CHECKS: usize = 32;

/// A loaded, validated policy, ready to step.
pub struct Policy {
    spec: PolicySpec,
    sha256: [u8; 32],
    state: TypedSimpleState,
    native: Option<crate::native::Plan>,
    obs_dim: usize,
    /// Output width: `n_actions` (q) or `act_dim` (action).
    out_dim: usize,
    discrete: bool,
    output: Vec<f32>,
    /// What each graph input (in the graph's order) is fed.
    input_slots: Vec<Slot>,
    /// What each graph output (in the graph's order) fills.
    output_slots: Vec<Slot>,
    /// Recurrent policies: the previous applied action (one-hot for discrete, zeros
    /// at an episode start) and the LSTM state; empty for feed-forward ones.
    prev_action: Vec<f32>,
    h: Vec<f32>,
    c: Vec<f32>,
    /// Where the native plan writes the next state (swapped with `h`, `c`).
    h_next: Vec<f32>,
    c_next: Vec<f32>,
}

/// A tensor of the policy contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Obs,
    PrevAction,
    H,
    C,
    Out,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("algorithm", &self.spec.algorithm)
            .field("env_id", &self.spec.env_id)
            .field("obs_dim", &self.obs_dim)
            .field("out_dim", &self.out_dim)
            .field("discrete", &self.discrete)
            .field("engine", &self.engine())
            .field("sha256", &reflex_msgs::hash::to_hex(&self.sha256))
            .finish()
    }
}

/// The text of a caught panic.
pub(crate) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Runs `f`, turning a panic into [`PolicyLoadError::Panicked`].
fn guarded<T>(
    during: &'static str,
    f: impl FnOnce() -> Result<T, PolicyLoadError>,
) -> Result<T, PolicyLoadError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        Err(PolicyLoadError::Panicked {
            during,
            message: panic_message(payload),
        })
    })
}

/// The element type and dims of a declared graph input or output (`None` where
/// the file leaves them out).
fn declared(info: &pb::ValueInfoProto) -> (Option<i32>, Option<Vec<Option<i64>>>) {
    let Some(pb::type_proto::Value::TensorType(t)) =
        info.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return (None, None);
    };
    let dims = t.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match d.value {
                Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) => Some(v),
                _ => None,
            })
            .collect()
    });
    (Some(t.elem_type), dims)
}

/// Checks a declared tensor: float32, rank 2, feature width `width` (batch free).
fn check_declared(info: &pb::ValueInfoProto, width: usize) -> Result<(), PolicyLoadError> {
    let (elem, dims) = declared(info);
    if let Some(elem) = elem {
        if elem != ONNX_FLOAT {
            return Err(PolicyLoadError::WrongType {
                name: info.name.clone(),
                found: elem,
            });
        }
    }
    if let Some(dims) = dims {
        let ok = dims.len() == 2
            && dims[1].is_none_or(|w| w == width as i64)
            && dims[0].is_none_or(|b| b >= 1);
        if !ok {
            let shown: Vec<String> = dims
                .iter()
                .map(|d| d.map_or("?".to_string(), |v| v.to_string()))
                .collect();
            return Err(PolicyLoadError::WrongShape {
                name: info.name.clone(),
                expected: width,
                found: format!("[{}]", shown.join(", ")),
            });
        }
    }
    Ok(())
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: impl AsRef<Path>) -> Result<Policy, PolicyLoadError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| PolicyLoadError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    /// Validates and prepares a policy from the bytes of an ONNX file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Policy, PolicyLoadError> {
        Self::from_bytes_with(bytes, LoadOptions::default())
    }

    /// [`Policy::from_bytes`] with options (e.g. tract only, for comparisons).
    pub fn from_bytes_with(bytes: &[u8], options: LoadOptions) -> Result<Policy, PolicyLoadError> {
        guarded("loading the policy", || {
            Self::from_bytes_unguarded(bytes, options)
        })
    }

    fn from_bytes_unguarded(bytes: &[u8], options: LoadOptions) -> Result<Policy, PolicyLoadError> {
        use tract_onnx::prelude::Framework;
        let onnx = tract_onnx::onnx();
        let proto = onnx
            .proto_model_for_read(&mut &bytes[..])
            .map_err(|e| PolicyLoadError::Decode(format!("{e:#}")))?;
        let graph = proto.graph.as_ref().ok_or(PolicyLoadError::NoGraph)?;

        let spec_json = proto
            .metadata_props
            .iter()
            .find(|p| p.key == METADATA_POLICY_SPEC)
            .ok_or(PolicyLoadError::MissingSpec)?;
        let spec: PolicySpec = serde_json::from_str(&spec_json.value)
            .map_err(|e| PolicyLoadError::BadSpec(e.to_string()))?;
        spec.validate()?;
        let obs_dim = spec.observation_space.dim();
        let recurrent = spec.is_recurrent();
        let hidden = spec.recurrent_hidden_size as usize;
        let (discrete, out_name, out_dim, kind) = match (&spec.action_space, recurrent) {
            (ActionSpace::Discrete { n }, false) => {
                (true, OUTPUT_Q, *n as usize, "discrete feed-forward")
            }
            (ActionSpace::Discrete { n }, true) => {
                (true, OUTPUT_Q, *n as usize, "discrete recurrent")
            }
            (ActionSpace::Box(space), false) => {
                (false, OUTPUT_ACTION, space.dim(), "continuous feed-forward")
            }
            (ActionSpace::Box(space), true) => {
                (false, OUTPUT_ACTION, space.dim(), "continuous recurrent")
            }
        };
        // The contract's tensors and their feature widths; `prev_action` is one-hot
        // (discrete) or the action vector (continuous), so as wide as the output.
        let mut wanted_inputs = vec![(Slot::Obs, INPUT_OBS, obs_dim)];
        let mut wanted_outputs = vec![(Slot::Out, out_name, out_dim)];
        if recurrent {
            wanted_inputs.extend([
                (Slot::PrevAction, INPUT_PREV_ACTION, out_dim),
                (Slot::H, INPUT_H, hidden),
                (Slot::C, INPUT_C, hidden),
            ]);
            wanted_outputs.extend([(Slot::H, OUTPUT_H, hidden), (Slot::C, OUTPUT_C, hidden)]);
        }

        // Graph inputs, minus initializers (IR < 4 lists weights as inputs too).
        let initializers: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<&pb::ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !initializers.contains(i.name.as_str()))
            .collect();
        // Each graph input / output (in the graph's order) matched to the contract's
        // names, in any order; anything missing or extra is refused.
        let bind =
            |names: Vec<String>, wanted: &[(Slot, &str, usize)]| -> Option<Vec<(Slot, usize)>> {
                if names.len() != wanted.len() {
                    return None;
                }
                names
                    .iter()
                    .map(|n| {
                        wanted
                            .iter()
                            .find(|(_, w, _)| w == n)
                            .map(|&(slot, _, width)| (slot, width))
                    })
                    .collect()
            };
        let names = |w: &[(Slot, &str, usize)]| w.iter().map(|(_, n, _)| n.to_string()).collect();
        let input_names: Vec<String> = inputs.iter().map(|i| i.name.clone()).collect();
        let input_slots = bind(input_names.clone(), &wanted_inputs).ok_or_else(|| {
            PolicyLoadError::WrongInputs {
                kind,
                expected: names(&wanted_inputs),
                found: input_names,
            }
        })?;
        let output_names: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
        let output_slots = bind(output_names.clone(), &wanted_outputs).ok_or_else(|| {
            PolicyLoadError::WrongOutputs {
                kind,
                expected: names(&wanted_outputs),
                found: output_names,
            }
        })?;
        for (info, &(_, width)) in inputs.iter().zip(&input_slots) {
            check_declared(info, width)?;
        }
        for (info, &(_, width)) in graph.output.iter().zip(&output_slots) {
            check_declared(info, width)?;
        }

        let graph_err = |e: TractError| PolicyLoadError::Graph(format!("{e:#}"));
        let mut model = onnx.model_for_proto_model(&proto).map_err(graph_err)?;
        for (i, &(_, width)) in input_slots.iter().enumerate() {
            model
                .set_input_fact(i, f32::fact([1, width]).into())
                .map_err(graph_err)?;
        }
        let typed = model.into_typed().map_err(graph_err)?;
        for (i, &(_, width)) in output_slots.iter().enumerate() {
            let name = &graph.output[i].name;
            let fact = typed.output_fact(i).map_err(graph_err)?;
            if fact.datum_type != f32::datum_type() {
                return Err(PolicyLoadError::WrongType {
                    name: name.clone(),
                    found: -1,
                });
            }
            let shape_ok = fact
                .shape
                .as_concrete()
                .is_some_and(|s| s.len() == 2 && s[0] == 1 && s[1] == width);
            if !shape_ok {
                return Err(PolicyLoadError::WrongShape {
                    name: name.clone(),
                    expected: width,
                    found: format!("{:?} (inferred for batch 1)", fact.shape),
                });
            }
        }
        let plan = typed
            .into_optimized()
            .map_err(graph_err)?
            .into_runnable()
            .map_err(graph_err)?;
        let state = TypedSimpleState::new(&plan).map_err(graph_err)?;

        let mut policy = Policy {
            spec,
            sha256: reflex_msgs::hash::sha256(bytes),
            state,
            native: None,
            obs_dim,
            out_dim,
            discrete,
            output: vec![0.0; out_dim],
            input_slots: input_slots.iter().map(|&(slot, _)| slot).collect(),
            output_slots: output_slots.iter().map(|&(slot, _)| slot).collect(),
            prev_action: vec![0.0; if recurrent { out_dim } else { 0 }],
            h: vec![0.0; hidden],
            c: vec![0.0; hidden],
            h_next: vec![0.0; hidden],
            c_next: vec![0.0; hidden],
        };
        policy.probe(out_name)?;
        policy.reset();
        if options.native {
            let plan = if recurrent {
                crate::native::Plan::compile_io(
                    graph,
                    &[
                        (INPUT_OBS, obs_dim),
                        (INPUT_PREV_ACTION, out_dim),
                        (INPUT_H, hidden),
                        (INPUT_C, hidden),
                    ],
                    &[(out_name, out_dim), (OUTPUT_H, hidden), (OUTPUT_C, hidden)],
                )
            } else {
                crate::native::Plan::compile(graph, INPUT_OBS, obs_dim, out_name, out_dim)
            };
            policy.native = plan.and_then(|plan| policy.checked_against_tract(plan));
            policy.reset();
        }
        Ok(policy)
    }

    /// Which evaluator runs [`Policy::step`].
    pub fn engine(&self) -> Engine {
        if self.native.is_some() {
            Engine::Native
        } else {
            Engine::Tract
        }
    }

    /// Observations to check a native plan on: the probe, then points spread over
    /// the observation space (uniform where bounded, within ±3 where not), from a
    /// fixed generator so that a load is reproducible.
    fn check_observations(&self) -> Vec<Vec<f32>> {
        let space = &self.spec.observation_space;
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut uniform = move || {
            // SplitMix64 → [0, 1).
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
        };
        let mut out = vec![self.probe_observation()];
        for _ in 0..NATIVE_CHECKS {
            out.push(
                space
                    .low
                    .iter()
                    .zip(&space.high)
                    .map(|(&lo, &hi)| {
                        let u = uniform();
                        if (hi - lo).is_finite() {
                            lo + u * (hi - lo)
                        } else {
                            6.0 * u - 3.0
                        }
                    })
                    .collect(),
            );
        }
        out
    }

    /// Keeps `plan` only if it matches tract on every check observation. A
    /// recurrent policy is checked as a rollout over them, the state and the
    /// previous action fed back (the action alternates between the greedy one
    /// and another, so both inputs matter), its new state compared too.
    fn checked_against_tract(
        &mut self,
        mut plan: crate::native::Plan,
    ) -> Option<crate::native::Plan> {
        let hidden = self.h.len();
        let mut native = vec![0.0f32; self.out_dim];
        let (mut native_h, mut native_c) = (vec![0.0f32; hidden], vec![0.0f32; hidden]);
        self.reset();
        for (k, obs) in self.check_observations().into_iter().enumerate() {
            let (prev, h, c) = (self.prev_action.clone(), self.h.clone(), self.c.clone());
            self.run_tract(&obs).ok()?;
            if self.is_recurrent() {
                plan.run_io(
                    &[&obs, &prev, &h, &c],
                    &mut [&mut native, &mut native_h, &mut native_c],
                );
            } else {
                plan.run(&obs, &mut native);
            }
            let close = |(&a, &b): (&f32, &f32)| {
                (a - b).abs() <= NATIVE_TOLERANCE * (1.0 + a.abs().max(b.abs()))
            };
            let agree = native.iter().zip(&self.output).all(close)
                && native_h.iter().zip(&self.h).all(close)
                && native_c.iter().zip(&self.c).all(close);
            if self.is_recurrent() {
                let action = if self.discrete {
                    let best = argmax(&self.output);
                    Action::Discrete(if k % 2 == 1 {
                        (best + 1) % self.out_dim as u32
                    } else {
                        best
                    })
                } else {
                    Action::Continuous(
                        self.output
                            .iter()
                            .map(|v| if k % 2 == 1 { -v } else { *v })
                            .collect(),
                    )
                };
                self.observe_applied(&action);
            }
            if !agree {
                tracing::warn!(
                    "the native evaluator disagrees with tract on this policy \
                     ({native:?} vs {:?}); running it on tract",
                    self.output
                );
                return None;
            }
        }
        Some(plan)
    }

    /// The middle of the observation space where it is bounded, 0 where not.
    fn probe_observation(&self) -> Vec<f32> {
        let space = &self.spec.observation_space;
        space
            .low
            .iter()
            .zip(&space.high)
            .map(|(&lo, &hi)| {
                let mid = 0.5 * lo + 0.5 * hi;
                if mid.is_finite() {
                    mid
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Runs the probe observation and refuses non-finite outputs.
    fn probe(&mut self, output: &'static str) -> Result<(), PolicyLoadError> {
        let probe = self.probe_observation();
        self.run(&probe)?;
        for (name, values) in [
            (output, &self.output),
            (OUTPUT_H, &self.h),
            (OUTPUT_C, &self.c),
        ] {
            if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(PolicyLoadError::NonFiniteOutput {
                    output: name,
                    index,
                    value,
                });
            }
        }
        Ok(())
    }

    /// Runs one observation into `self.output`, on the native plan if there is one.
    fn run(&mut self, obs: &[f32]) -> Result<(), PolicyLoadError> {
        if obs.len() != self.obs_dim {
            return Err(PolicyLoadError::ObservationLength {
                expected: self.obs_dim,
                found: obs.len(),
            });
        }
        match &mut self.native {
            Some(plan) if self.h.is_empty() => {
                plan.run(obs, &mut self.output);
                Ok(())
            }
            Some(plan) => {
                // The new state goes into the spare vectors, which then swap
                // with the current ones: no copy, no allocation.
                plan.run_io(
                    &[obs, &self.prev_action, &self.h, &self.c],
                    &mut [&mut self.output, &mut self.h_next, &mut self.c_next],
                );
                std::mem::swap(&mut self.h, &mut self.h_next);
                std::mem::swap(&mut self.c, &mut self.c_next);
                Ok(())
            }
            None => self.run_tract(obs),
        }
    }

    /// Runs tract's plan on one observation (of the right length) into `self.output`;
    /// a recurrent policy also feeds its previous action and state and takes the new
    /// state.
    fn run_tract(&mut self, obs: &[f32]) -> Result<(), PolicyLoadError> {
        let run_err = |e: TractError| PolicyLoadError::Run(format!("{e:#}"));
        let mut inputs = TVec::new();
        for slot in &self.input_slots {
            let values: &[f32] = match slot {
                Slot::Obs => obs,
                Slot::PrevAction => &self.prev_action,
                Slot::H => &self.h,
                Slot::C => &self.c,
                Slot::Out => unreachable!("outputs are not inputs"),
            };
            let tensor = Tensor::from_shape(&[1, values.len()], values).map_err(run_err)?;
            inputs.push(tensor.into_tvalue());
        }
        let outputs = self.state.run(inputs).map_err(run_err)?;
        for (slot, value) in self.output_slots.iter().zip(outputs.iter()) {
            let values = value
                .try_as_plain_ram()
                .and_then(|view| view.as_slice::<f32>())
                .map_err(run_err)?;
            let target = match slot {
                Slot::Out => &mut self.output,
                Slot::H => &mut self.h,
                Slot::C => &mut self.c,
                Slot::Obs | Slot::PrevAction => unreachable!("inputs are not outputs"),
            };
            if values.len() != target.len() {
                return Err(PolicyLoadError::Run(format!(
                    "an output has {} values, expected {}",
                    values.len(),
                    target.len()
                )));
            }
            target.copy_from_slice(values);
        }
        Ok(())
    }

    /// The policy's spec, from its metadata.
    pub fn spec(&self) -> &PolicySpec {
        &self.spec
    }

    /// SHA-256 of the ONNX bytes it was loaded from.
    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }

    /// Observation length the policy takes.
    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    /// Whether the policy outputs Q-values over discrete actions.
    pub fn is_discrete(&self) -> bool {
        self.discrete
    }

    /// One greedy step: the action for `obs` (discrete: argmax of Q, with Q).
    pub fn step(&mut self, obs: &[f32]) -> Result<PolicyOutput<'_>, PolicyLoadError> {
        self.run(obs)?;
        Ok(if self.discrete {
            PolicyOutput::Discrete {
                action: argmax(&self.output),
                q: &self.output,
            }
        } else {
            PolicyOutput::Continuous {
                action: &self.output,
            }
        })
    }

    /// Clears the recurrent state and the previous action (a no-op for feed-forward
    /// policies), e.g. at an episode start or after a policy swap.
    pub fn reset(&mut self) {
        self.prev_action.fill(0.0);
        self.h.fill(0.0);
        self.c.fill(0.0);
    }

    /// Whether the policy carries an LSTM state between steps.
    pub fn is_recurrent(&self) -> bool {
        !self.h.is_empty()
    }

    /// The state `(h, c)` the next step starts from (empty for feed-forward).
    pub fn recurrent_state(&self) -> (&[f32], &[f32]) {
        (&self.h, &self.c)
    }

    /// Tells a recurrent policy which action was applied after its step (after
    /// exploration and safety): its `prev_action` input at the next step. Ignored by
    /// feed-forward policies and for an action of the wrong kind or width.
    pub fn observe_applied(&mut self, action: &Action) {
        if self.prev_action.is_empty() {
            return;
        }
        match action {
            Action::Discrete(i) if self.discrete => {
                self.prev_action.fill(0.0);
                if let Some(v) = self.prev_action.get_mut(*i as usize) {
                    *v = 1.0;
                }
            }
            Action::Continuous(a) if !self.discrete && a.len() == self.prev_action.len() => {
                self.prev_action.copy_from_slice(a);
            }
            _ => {}
        }
    }
}

impl Actor for Policy {
    fn spec(&self) -> &PolicySpec {
        Policy::spec(self)
    }

    fn step(&mut self, obs: &[f32]) -> Result<PolicyOutput<'_>, ActorError> {
        Ok(Policy::step(self, obs)?)
    }

    fn reset(&mut self) {
        Policy::reset(self)
    }

    fn observe_applied(&mut self, action: &Action) {
        Policy::observe_applied(self, action)
    }

    fn recurrent_state(&self) -> Option<(&[f32], &[f32])> {
        self.is_recurrent().then(|| Policy::recurrent_state(self))
    }
}

/// The [`Loader`] the daemon uses for policy files and updates: the bytes must
/// pass every check of [`Policy::from_bytes`].
pub fn onnx_loader() -> Loader {
    Arc::new(|bytes: &[u8]| Ok(Box::new(Policy::from_bytes(bytes)?) as Box<dyn Actor>))
}

/// Index of the first largest value; NaN never wins.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate().skip(1) {
        if v > values[best] || values[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_of_ties_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.2]), 1);
        assert_eq!(argmax(&[2.0]), 0);
    }

    #[test]
    fn garbage_and_empty_bytes_are_refused() {
        assert!(matches!(
            Policy::from_bytes(b"this is not protobuf \xff\xff\xff"),
            Err(PolicyLoadError::Decode(_)) | Err(PolicyLoadError::NoGraph)
        ));
        assert!(matches!(
            Policy::from_bytes(&[]),
            Err(PolicyLoadError::NoGraph)
        ));
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let err = Policy::load("/nonexistent/policy.onnx").unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/policy.onnx"),
            "{err}"
        );
    }
}
