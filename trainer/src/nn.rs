//! Networks on candle. All share one [`Trunk`] (hidden layers of configurable
//! sizes and activation, optional LayerNorm):
//!
//! - [`QNetwork`]: discrete Q-values with a plain or dueling head, one or two of
//!   them (Twin DQN);
//! - [`Actor`]: a deterministic policy μ(s) squashed by tanh into the action bounds
//!   (DDPG, TD3);
//! - [`Critic`]: Q(s, a) on the concatenated observation and action;
//! - [`NafNetwork`]: V(s), μ(s) and the lower-triangular L(s) of NAF's quadratic
//!   advantage.
//!
//! - [`Lstm`] and [`RecurrentQNetwork`] (DRQN): an LSTM over the observation and
//!   the previous action in front of a Q head.
//!
//! Every network implements [`Params`] (its named parameters), so target copies,
//! Polyak averaging, optimizers and checkpoints work on any of them.
//!
//! Parameters are candle `Var`s with stable names that follow the module tree
//! (`trunk.0.weight`, `head0.advantage.bias`, …), so checkpoints (safetensors) and
//! ONNX initializers read alike. Weights are initialized from a seeded
//! [`SimRng`] rather than candle's unseedable CPU generator, so a seed fixes a run.

pub(crate) mod fused;
mod recurrent;
pub mod stack;

pub use fused::{cpu_kernels, portable};
pub use recurrent::{ActingHead, Lstm, Recurrent, RecurrentHead, RecurrentQNetwork};

use candle_core::{DType, Device, Result, Tensor, Var, D};
use reflex_sim::SimRng;
use serde::{Deserialize, Serialize};

/// Nonlinearity between hidden layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// max(0, x)
    Relu,
    /// tanh(x)
    Tanh,
}

/// Shape of a Q-network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetConfig {
    /// Hidden layer widths, e.g. `[256, 256]`.
    pub hidden: Vec<usize>,
    /// Nonlinearity after each hidden layer.
    pub activation: Activation,
    /// LayerNorm after each hidden layer's affine map (before the activation).
    pub layer_norm: bool,
    /// Dueling head: Q = V + A − mean(A) (Wang et al. 2016).
    pub dueling: bool,
    /// Scale of the final layers' initial weights relative to the default
    /// (PyTorch's U(±1/√fan_in)); small values start Q near zero.
    pub final_init_scale: f64,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            hidden: vec![256, 256],
            activation: Activation::Relu,
            layer_norm: false,
            dueling: false,
            final_init_scale: 0.01,
        }
    }
}

/// A parameter as a tensor, detached when `frozen` (gradients then skip it).
fn param(var: &Var, frozen: bool) -> Tensor {
    if frozen {
        var.as_tensor().detach()
    } else {
        var.as_tensor().clone()
    }
}

/// An affine layer `x Wᵀ + b`.
#[derive(Debug, Clone)]
pub(crate) struct Dense {
    weight: Var,
    bias: Var,
}

impl Dense {
    /// PyTorch's default init, U(±1/√fan_in) for weight and bias, times `scale`.
    fn new(
        inputs: usize,
        outputs: usize,
        scale: f64,
        rng: &mut SimRng,
        device: &Device,
    ) -> Result<Self> {
        let bound = scale / (inputs as f64).sqrt();
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.uniform(-bound, bound) as f32).collect() };
        let weight = Tensor::from_vec(draw(outputs * inputs), (outputs, inputs), device)?;
        let bias = Tensor::from_vec(draw(outputs), outputs, device)?;
        Ok(Self {
            weight: Var::from_tensor(&weight)?,
            bias: Var::from_tensor(&bias)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, fused::Act::Identity)
    }

    /// `act(x Wᵀ + b)`: one fused op on CPU ([`fused`]), primitives elsewhere.
    fn forward_act(&self, x: &Tensor, act: fused::Act) -> Result<Tensor> {
        self.forward_with(x, act, false)
    }

    /// [`forward_act`](Self::forward_act), with the parameters detached when
    /// `frozen`: gradients then flow to `x` only, and the backward pass skips
    /// this layer's weight and bias products.
    fn forward_with(&self, x: &Tensor, act: fused::Act, frozen: bool) -> Result<Tensor> {
        let (w, b) = (param(&self.weight, frozen), param(&self.bias, frozen));
        // Rank 3: a population's stacked layer (see `stack`).
        if fused::available(x) && (x.rank() == 2 || (x.rank() == 3 && w.rank() == 3)) {
            return fused::dense(x, &w, &b, act);
        }
        if crate::gpu::kernels::cuda_kernels(x.device()) && x.rank() == 2 && x.dtype() == DType::F32
        {
            return fused::bias_act(&x.matmul(&w.t()?)?, &b, act);
        }
        act.apply(x.broadcast_matmul(&w.t()?)?.broadcast_add(&b)?)
    }

    fn push_vars(&self, name: &str, out: &mut Vec<(String, Var)>) {
        out.push((format!("{name}.weight"), self.weight.clone()));
        out.push((format!("{name}.bias"), self.bias.clone()));
    }

    /// Appends `Gemm(x, W, b, transB = 1)` under the parameter names `name.*`.
    fn to_onnx(
        &self,
        g: &mut crate::export::OnnxGraph,
        name: &str,
        x: &str,
        out: Option<&str>,
    ) -> Result<String> {
        use crate::export::Attr;
        let w = g.parameter(&format!("{name}.weight"), &self.weight)?;
        let b = g.parameter(&format!("{name}.bias"), &self.bias)?;
        Ok(g.op("Gemm", &[x, &w, &b], &[Attr::Int("transB", 1)], out))
    }
}

/// LayerNorm over the last dimension with a learned gain and offset.
#[derive(Debug, Clone)]
struct Norm {
    gain: Var,
    offset: Var,
}

impl Norm {
    const EPS: f64 = 1e-5;

    fn new(width: usize, device: &Device) -> Result<Self> {
        Ok(Self {
            gain: Var::ones(width, DType::F32, device)?,
            offset: Var::zeros(width, DType::F32, device)?,
        })
    }

    /// Built from differentiable primitives (candle's fused layer-norm op has no
    /// backward pass). `frozen` detaches the gain and offset, as
    /// [`Dense::forward_with`] does its weights, so that a loss through a frozen
    /// network computes no gradients for them.
    fn forward(&self, x: &Tensor, frozen: bool) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let (gain, offset) = (param(&self.gain, frozen), param(&self.offset, frozen));
        centered
            .broadcast_div(&(var + Self::EPS)?.sqrt()?)?
            .broadcast_mul(&gain)?
            .broadcast_add(&offset)
    }
}

/// Named parameters of a network, in a fixed order. Names follow the module
/// tree (`trunk.0.weight`, `mu.bias`, …) so checkpoints and ONNX initializers
/// read alike.
pub trait Params {
    /// Every parameter with its stable name.
    fn named_vars(&self) -> Vec<(String, Var)>;

    /// The parameters, in [`named_vars`](Self::named_vars) order.
    fn vars(&self) -> Vec<Var> {
        self.named_vars().into_iter().map(|(_, v)| v).collect()
    }

    /// The parameter names, in order.
    fn names(&self) -> Vec<String> {
        self.named_vars().into_iter().map(|(n, _)| n).collect()
    }
}

/// Copies `src`'s parameters into `dst` (a hard target update); both must have
/// the same shape.
pub fn copy_params(dst: &dyn Params, src: &dyn Params) -> Result<()> {
    for (mine, theirs) in dst.vars().iter().zip(src.vars()) {
        mine.set(&theirs.as_tensor().detach())?;
    }
    Ok(())
}

/// Polyak averaging: θ_dst ← (1 − τ) θ_dst + τ θ_src.
pub fn polyak(dst: &dyn Params, src: &dyn Params, tau: f64) -> Result<()> {
    for (mine, theirs) in dst.vars().iter().zip(src.vars()) {
        crate::optim::polyak_var(mine, &theirs, tau)?;
    }
    Ok(())
}

/// A detached copy of `v` as a parameter of its own.
pub(crate) fn fresh(v: &Var) -> Result<Var> {
    Var::from_tensor(&v.as_tensor().detach().copy()?)
}

/// Makes a network's new parameter from its old one, in
/// [`named_vars`](Params::named_vars) order (see [`QNetwork::map_vars`]).
pub type VarMap<'a> = dyn FnMut(&Var) -> Result<Var> + 'a;

impl Dense {
    /// A copy with its own parameters.
    fn duplicate(&self) -> Result<Self> {
        self.map_vars(&mut fresh)
    }

    /// The same layer on the parameters `f` makes (weight, then bias).
    fn map_vars(&self, f: &mut VarMap<'_>) -> Result<Self> {
        Ok(Self {
            weight: f(&self.weight)?,
            bias: f(&self.bias)?,
        })
    }
}

/// The hidden layers of an MLP: affine map, optional LayerNorm, activation.
#[derive(Debug, Clone)]
pub struct Trunk {
    layers: Vec<(Dense, Option<Norm>)>,
    activation: Activation,
    width: usize,
}

impl Trunk {
    /// Hidden layers per `config` on `inputs` features.
    pub fn new(
        config: &NetConfig,
        inputs: usize,
        rng: &mut SimRng,
        device: &Device,
    ) -> Result<Self> {
        let mut layers = Vec::new();
        let mut width = inputs;
        for &hidden in &config.hidden {
            let norm = if config.layer_norm {
                Some(Norm::new(hidden, device)?)
            } else {
                None
            };
            layers.push((Dense::new(width, hidden, 1.0, rng, device)?, norm));
            width = hidden;
        }
        Ok(Self {
            layers,
            activation: config.activation,
            width,
        })
    }

    /// Features out (the last hidden width, or the input width with no layers).
    pub fn width(&self) -> usize {
        self.width
    }

    /// The features of `x` `[batch, inputs]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, false)
    }

    /// The features, with the parameters detached when `frozen` (see
    /// [`Dense::forward_with`]).
    fn forward_with(&self, x: &Tensor, frozen: bool) -> Result<Tensor> {
        let act = match self.activation {
            Activation::Relu => fused::Act::Relu,
            Activation::Tanh => fused::Act::Tanh,
        };
        let mut x = x.clone();
        for (dense, norm) in &self.layers {
            x = match norm {
                None => dense.forward_with(&x, act, frozen)?,
                Some(norm) => {
                    let affine = dense.forward_with(&x, fused::Act::Identity, frozen)?;
                    act.apply(norm.forward(&affine, frozen)?)?
                }
            };
        }
        Ok(x)
    }

    /// Appends the layers to an ONNX graph (parameters under `prefix.i.*`);
    /// returns the features' name.
    pub fn to_onnx(
        &self,
        g: &mut crate::export::OnnxGraph,
        prefix: &str,
        input: &str,
    ) -> Result<String> {
        use crate::export::Attr;
        let mut x = input.to_string();
        for (i, (layer, norm)) in self.layers.iter().enumerate() {
            x = layer.to_onnx(g, &format!("{prefix}.{i}"), &x, None)?;
            if let Some(norm) = norm {
                let gain = g.parameter(&format!("{prefix}.{i}.norm.gain"), &norm.gain)?;
                let offset = g.parameter(&format!("{prefix}.{i}.norm.offset"), &norm.offset)?;
                x = g.op(
                    "LayerNormalization",
                    &[&x, &gain, &offset],
                    &[
                        Attr::Int("axis", -1),
                        Attr::Float("epsilon", Norm::EPS as f32),
                    ],
                    None,
                );
            }
            let op = match self.activation {
                Activation::Relu => "Relu",
                Activation::Tanh => "Tanh",
            };
            x = g.op(op, &[&x], &[], None);
        }
        Ok(x)
    }

    fn push_vars(&self, prefix: &str, out: &mut Vec<(String, Var)>) {
        for (i, (dense, norm)) in self.layers.iter().enumerate() {
            dense.push_vars(&format!("{prefix}.{i}"), out);
            if let Some(norm) = norm {
                out.push((format!("{prefix}.{i}.norm.gain"), norm.gain.clone()));
                out.push((format!("{prefix}.{i}.norm.offset"), norm.offset.clone()));
            }
        }
    }

    fn duplicate(&self) -> Result<Self> {
        self.map_vars(&mut fresh)
    }

    /// The same layers on the parameters `f` makes, in
    /// [`push_vars`](Self::push_vars) order.
    fn map_vars(&self, f: &mut VarMap<'_>) -> Result<Self> {
        let mut copy = self.clone();
        for (dense, norm) in &mut copy.layers {
            *dense = dense.map_vars(f)?;
            if let Some(norm) = norm {
                norm.gain = f(&norm.gain)?;
                norm.offset = f(&norm.offset)?;
            }
        }
        Ok(copy)
    }
}

/// The output layer(s) of one Q estimate.
#[derive(Debug, Clone)]
enum Head {
    Plain(Dense),
    Dueling { value: Dense, advantage: Dense },
}

impl Head {
    fn forward(&self, features: &Tensor, frozen: bool) -> Result<Tensor> {
        let id = fused::Act::Identity;
        match self {
            Head::Plain(q) => q.forward_with(features, id, frozen),
            Head::Dueling { value, advantage } => dueling_q(
                &value.forward_with(features, id, frozen)?,
                &advantage.forward_with(features, id, frozen)?,
            ),
        }
    }
}

/// Q = V + (A − mean_a A) for `value` `[batch, 1]` and `advantage`
/// `[batch, n_actions]`: the mean-subtracted form keeps V and A identifiable.
pub fn dueling_q(value: &Tensor, advantage: &Tensor) -> Result<Tensor> {
    let centered = advantage.broadcast_sub(&advantage.mean_keepdim(D::Minus1)?)?;
    value.broadcast_add(&centered)
}

/// A Q-network: shared trunk, one head (or two for Twin DQN).
#[derive(Debug, Clone)]
pub struct QNetwork {
    trunk: Trunk,
    heads: Vec<Head>,
    obs_dim: usize,
    n_actions: usize,
}

impl QNetwork {
    /// A freshly initialized network with `n_heads` heads (1, or 2 for Twin DQN).
    pub fn new(
        config: &NetConfig,
        obs_dim: usize,
        n_actions: usize,
        n_heads: usize,
        rng: &mut SimRng,
        device: &Device,
    ) -> Result<Self> {
        let trunk = Trunk::new(config, obs_dim, rng, device)?;
        let width = trunk.width();
        let scale = config.final_init_scale;
        let heads = (0..n_heads)
            .map(|_| {
                Ok(if config.dueling {
                    Head::Dueling {
                        value: Dense::new(width, 1, scale, rng, device)?,
                        advantage: Dense::new(width, n_actions, scale, rng, device)?,
                    }
                } else {
                    Head::Plain(Dense::new(width, n_actions, scale, rng, device)?)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            trunk,
            heads,
            obs_dim,
            n_actions,
        })
    }

    /// Observation length.
    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    /// Number of discrete actions.
    pub fn n_actions(&self) -> usize {
        self.n_actions
    }

    /// Number of Q heads.
    pub fn n_heads(&self) -> usize {
        self.heads.len()
    }

    /// Q-values of every head, each `[batch, n_actions]`, for `obs` `[batch, obs_dim]`.
    pub fn forward_heads(&self, obs: &Tensor) -> Result<Vec<Tensor>> {
        self.heads_with(obs, false)
    }

    fn heads_with(&self, obs: &Tensor, frozen: bool) -> Result<Vec<Tensor>> {
        let x = self.trunk.forward_with(obs, frozen)?;
        self.heads.iter().map(|h| h.forward(&x, frozen)).collect()
    }

    /// The network's Q estimate `[batch, n_actions]`: the single head, or the
    /// elementwise minimum of the two (Twin DQN's pessimistic estimate).
    pub fn q_values(&self, obs: &Tensor) -> Result<Tensor> {
        self.q_values_with(obs, false)
    }

    /// [`q_values`](Self::q_values) with the parameters detached: for targets,
    /// which need no gradient, so no backward graph is recorded for them.
    pub fn q_values_frozen(&self, obs: &Tensor) -> Result<Tensor> {
        self.q_values_with(obs, true)
    }

    fn q_values_with(&self, obs: &Tensor, frozen: bool) -> Result<Tensor> {
        let heads = self.heads_with(obs, frozen)?;
        let mut q = heads[0].clone();
        for other in &heads[1..] {
            q = q.minimum(other)?;
        }
        Ok(q)
    }

    /// Appends this network's forward pass to an ONNX graph, reading `input`
    /// `[batch, obs_dim]` and writing Q-values `[batch, n_actions]` to `output`:
    /// `Gemm` per affine layer (weights under their [`named_vars`](Params::named_vars)
    /// names), `LayerNormalization` (ε = 1e-5 on the variance, as here), `Relu` or
    /// `Tanh`, the dueling combination with `ReduceMean`, and `Min` over twin heads.
    pub fn to_onnx(
        &self,
        g: &mut crate::export::OnnxGraph,
        input: &str,
        output: &str,
    ) -> Result<()> {
        use crate::export::Attr;
        let x = self.trunk.to_onnx(g, "trunk", input)?;
        let single = self.heads.len() == 1;
        let mut qs = Vec::new();
        for (h, head) in self.heads.iter().enumerate() {
            let out = single.then_some(output);
            qs.push(match head {
                Head::Plain(q) => q.to_onnx(g, &format!("head{h}.q"), &x, out)?,
                Head::Dueling { value, advantage } => {
                    let v = value.to_onnx(g, &format!("head{h}.value"), &x, None)?;
                    let a = advantage.to_onnx(g, &format!("head{h}.advantage"), &x, None)?;
                    let mean = g.op(
                        "ReduceMean",
                        &[&a],
                        &[Attr::Ints("axes", vec![1]), Attr::Int("keepdims", 1)],
                        None,
                    );
                    let centered = g.op("Sub", &[&a, &mean], &[], None);
                    g.op("Add", &[&v, &centered], &[], out)
                }
            });
        }
        if !single {
            let refs: Vec<&str> = qs.iter().map(String::as_str).collect();
            g.op("Min", &refs, &[], Some(output));
        }
        Ok(())
    }

    /// Every parameter with its stable name, in a fixed order.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        Params::named_vars(self)
    }

    /// The parameters, in [`named_vars`](Self::named_vars) order.
    pub fn vars(&self) -> Vec<Var> {
        Params::vars(self)
    }

    /// Copies `other`'s parameters into this network (hard target update).
    pub fn copy_from(&self, other: &QNetwork) -> Result<()> {
        copy_params(self, other)
    }

    /// Polyak averaging: θ ← (1 − τ) θ + τ θ_other.
    pub fn polyak_from(&self, other: &QNetwork, tau: f64) -> Result<()> {
        polyak(self, other, tau)
    }

    /// A detached copy with its own parameters (a target network).
    pub fn duplicate(&self) -> Result<QNetwork> {
        self.map_vars(&mut fresh)
    }

    /// The same network on the parameters `f` makes from these, called in
    /// [`named_vars`](Self::named_vars) order. The new parameters may have
    /// other shapes: a population's stacked ones (see [`crate::nn::stack`]).
    pub fn map_vars(&self, f: &mut VarMap<'_>) -> Result<QNetwork> {
        let mut copy = self.clone();
        copy.trunk = self.trunk.map_vars(f)?;
        for head in &mut copy.heads {
            *head = match head {
                Head::Plain(q) => Head::Plain(q.map_vars(f)?),
                Head::Dueling { value, advantage } => Head::Dueling {
                    value: value.map_vars(f)?,
                    advantage: advantage.map_vars(f)?,
                },
            };
        }
        Ok(copy)
    }
}

impl Params for QNetwork {
    fn named_vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        self.trunk.push_vars("trunk", &mut out);
        for (h, head) in self.heads.iter().enumerate() {
            match head {
                Head::Plain(q) => q.push_vars(&format!("head{h}.q"), &mut out),
                Head::Dueling { value, advantage } => {
                    value.push_vars(&format!("head{h}.value"), &mut out);
                    advantage.push_vars(&format!("head{h}.advantage"), &mut out);
                }
            }
        }
        out
    }
}

/// `tanh(mu(trunk(input)))` as ONNX nodes: the greedy action of an actor or of
/// NAF, in normalized units.
fn mu_onnx(
    trunk: &Trunk,
    mu: &Dense,
    g: &mut crate::export::OnnxGraph,
    input: &str,
) -> Result<String> {
    let x = trunk.to_onnx(g, "trunk", input)?;
    let pre = mu.to_onnx(g, "mu", &x, None)?;
    Ok(g.op("Tanh", &[&pre], &[], None))
}

/// A deterministic policy μ(s) = tanh(MLP(s)) ∈ [−1, 1]^act_dim, in *normalized*
/// action units: the env action is `offset + scale · μ` (see
/// [`crate::algo::continuous::ActionScaling`]).
#[derive(Debug, Clone)]
pub struct Actor {
    trunk: Trunk,
    mu: Dense,
    obs_dim: usize,
    act_dim: usize,
}

impl Actor {
    /// A freshly initialized actor.
    pub fn new(
        config: &NetConfig,
        obs_dim: usize,
        act_dim: usize,
        rng: &mut SimRng,
        device: &Device,
    ) -> Result<Self> {
        let trunk = Trunk::new(config, obs_dim, rng, device)?;
        let mu = Dense::new(trunk.width(), act_dim, config.final_init_scale, rng, device)?;
        Ok(Self {
            trunk,
            mu,
            obs_dim,
            act_dim,
        })
    }

    /// Observation length.
    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    /// Action dimensions.
    pub fn act_dim(&self) -> usize {
        self.act_dim
    }

    /// μ(s) `[batch, act_dim]` in [−1, 1] for `obs` `[batch, obs_dim]`.
    pub fn forward(&self, obs: &Tensor) -> Result<Tensor> {
        self.mu
            .forward_act(&self.trunk.forward(obs)?, fused::Act::Tanh)
    }

    /// Appends μ(s) (normalized units) to an ONNX graph; returns its name.
    pub fn to_onnx(&self, g: &mut crate::export::OnnxGraph, input: &str) -> Result<String> {
        mu_onnx(&self.trunk, &self.mu, g, input)
    }

    /// A copy with its own parameters (a target network).
    pub fn duplicate(&self) -> Result<Self> {
        self.map_vars(&mut fresh)
    }

    /// The same actor on the parameters `f` makes from these, in
    /// [`named_vars`](Params::named_vars) order (see [`QNetwork::map_vars`]).
    pub fn map_vars(&self, f: &mut VarMap<'_>) -> Result<Self> {
        Ok(Self {
            trunk: self.trunk.map_vars(f)?,
            mu: self.mu.map_vars(f)?,
            ..self.clone()
        })
    }
}

impl Params for Actor {
    fn named_vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        self.trunk.push_vars("trunk", &mut out);
        self.mu.push_vars("mu", &mut out);
        out
    }
}

/// A state-action value Q(s, a): an MLP on `[obs, action]` (normalized action
/// units) with one output.
#[derive(Debug, Clone)]
pub struct Critic {
    trunk: Trunk,
    q: Dense,
}

impl Critic {
    /// A freshly initialized critic.
    pub fn new(
        config: &NetConfig,
        obs_dim: usize,
        act_dim: usize,
        rng: &mut SimRng,
        device: &Device,
    ) -> Result<Self> {
        let trunk = Trunk::new(config, obs_dim + act_dim, rng, device)?;
        let q = Dense::new(trunk.width(), 1, config.final_init_scale, rng, device)?;
        Ok(Self { trunk, q })
    }

    /// Q(s, a) `[batch]`.
    pub fn forward(&self, obs: &Tensor, action: &Tensor) -> Result<Tensor> {
        self.forward_with(obs, action, false)
    }

    /// Q(s, a) with the critic's parameters detached: for the actor's loss,
    /// whose backward pass needs ∂Q/∂a but not the critic's own gradients.
    pub fn forward_frozen(&self, obs: &Tensor, action: &Tensor) -> Result<Tensor> {
        self.forward_with(obs, action, true)
    }

    fn forward_with(&self, obs: &Tensor, action: &Tensor, frozen: bool) -> Result<Tensor> {
        let x = Tensor::cat(&[obs, action], D::Minus1)?;
        let features = self.trunk.forward_with(&x, frozen)?;
        self.q
            .forward_with(&features, fused::Act::Identity, frozen)?
            .squeeze(D::Minus1)
    }

    /// A copy with its own parameters (a target network).
    pub fn duplicate(&self) -> Result<Self> {
        self.map_vars(&mut fresh)
    }

    /// The same critic on the parameters `f` makes from these, in
    /// [`named_vars`](Params::named_vars) order (see [`QNetwork::map_vars`]).
    pub fn map_vars(&self, f: &mut VarMap<'_>) -> Result<Self> {
        Ok(Self {
            trunk: self.trunk.map_vars(f)?,
            q: self.q.map_vars(f)?,
        })
    }
}

impl Params for Critic {
    fn named_vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        self.trunk.push_vars("trunk", &mut out);
        self.q.push_vars("q", &mut out);
        out
    }
}

/// NAF's network (Gu et al. 2016): a shared trunk with three heads, V(s), μ(s)
/// ∈ [−1, 1] (tanh) and the `n(n+1)/2` entries of a lower-triangular L(s) whose
/// diagonal goes through exp, so P(s) = L Lᵀ is symmetric positive definite and
///
/// ```text
///   Q(s, a) = V(s) − ½ (a − μ(s))ᵀ P(s) (a − μ(s)) = V(s) − ½ ‖L(s)ᵀ (a − μ(s))‖²
/// ```
///
/// peaks at a = μ(s) with value V(s). Actions are in normalized units.
#[derive(Debug, Clone)]
pub struct NafNetwork {
    trunk: Trunk,
    value: Dense,
    mu: Dense,
    l: Dense,
    act_dim: usize,
    obs_dim: usize,
    /// `[n(n+1)/2, n·n]`: puts entry k (row-major over i ≥ j) at L[i][j].
    placement: Tensor,
    /// `[n(n+1)/2]`: 1 for diagonal entries.
    diagonal: Tensor,
}

/// What one NAF forward pass yields.
#[derive(Debug, Clone)]
pub struct NafOutput {
    /// V(s) `[batch]`.
    pub value: Tensor,
    /// μ(s) `[batch, n]` in [−1, 1].
    pub mu: Tensor,
    /// μ before its tanh `[batch, n]` (for a penalty that keeps tanh from
    /// saturating).
    pub mu_pre: Tensor,
    /// L(s) `[batch, n, n]`, lower-triangular with a positive diagonal.
    pub l: Tensor,
}

impl NafNetwork {
    /// A freshly initialized NAF network.
    pub fn new(
        config: &NetConfig,
        obs_dim: usize,
        act_dim: usize,
        rng: &mut SimRng,
        device: &Device,
    ) -> Result<Self> {
        let trunk = Trunk::new(config, obs_dim, rng, device)?;
        let width = trunk.width();
        let scale = config.final_init_scale;
        let entries = act_dim * (act_dim + 1) / 2;
        let value = Dense::new(width, 1, scale, rng, device)?;
        let mu = Dense::new(width, act_dim, scale, rng, device)?;
        let l = Dense::new(width, entries, scale, rng, device)?;
        let mut placement = vec![0f32; entries * act_dim * act_dim];
        let mut diagonal = vec![0f32; entries];
        let mut k = 0;
        for i in 0..act_dim {
            for j in 0..=i {
                placement[k * act_dim * act_dim + i * act_dim + j] = 1.0;
                if i == j {
                    diagonal[k] = 1.0;
                }
                k += 1;
            }
        }
        Ok(Self {
            trunk,
            value,
            mu,
            l,
            act_dim,
            obs_dim,
            placement: Tensor::from_vec(placement, (entries, act_dim * act_dim), device)?,
            diagonal: Tensor::from_vec(diagonal, entries, device)?,
        })
    }

    /// Observation length.
    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    /// Action dimensions.
    pub fn act_dim(&self) -> usize {
        self.act_dim
    }

    /// V, μ and L for `obs` `[batch, obs_dim]`.
    pub fn forward(&self, obs: &Tensor) -> Result<NafOutput> {
        let h = self.trunk.forward(obs)?;
        let batch = obs.dim(0)?;
        let n = self.act_dim;
        let raw = self.l.forward(&h)?;
        // exp on the diagonal entries, identity elsewhere: raw + diag·(exp(raw) − raw).
        let diag = raw.broadcast_mul(&self.diagonal)?;
        let lifted = (&raw + (diag.exp()?.broadcast_mul(&self.diagonal)? - &diag)?)?;
        let l = lifted.matmul(&self.placement)?.reshape((batch, n, n))?;
        let mu_pre = self.mu.forward(&h)?;
        Ok(NafOutput {
            value: self.value.forward(&h)?.squeeze(D::Minus1)?,
            mu: mu_pre.tanh()?,
            mu_pre,
            l,
        })
    }

    /// Q(s, a) `[batch]` for `action` `[batch, n]` (normalized units).
    pub fn q(&self, out: &NafOutput, action: &Tensor) -> Result<Tensor> {
        let u = (action - &out.mu)?.unsqueeze(1)?; // [batch, 1, n]
        let lt_u = u.matmul(&out.l)?.squeeze(1)?; // (Lᵀu)_j = Σ_i u_i L_ij
        &out.value - (lt_u.sqr()?.sum(D::Minus1)? * 0.5)?
    }

    /// P(s) = L Lᵀ `[batch, n, n]`.
    pub fn precision(out: &NafOutput) -> Result<Tensor> {
        out.l.matmul(&out.l.transpose(1, 2)?)
    }

    /// Appends μ(s) (normalized units) to an ONNX graph; returns its name. V and
    /// L are not needed to act.
    pub fn to_onnx(&self, g: &mut crate::export::OnnxGraph, input: &str) -> Result<String> {
        mu_onnx(&self.trunk, &self.mu, g, input)
    }

    /// A copy with its own parameters (a target network).
    pub fn duplicate(&self) -> Result<Self> {
        Ok(Self {
            trunk: self.trunk.duplicate()?,
            value: self.value.duplicate()?,
            mu: self.mu.duplicate()?,
            l: self.l.duplicate()?,
            ..self.clone()
        })
    }
}

impl Params for NafNetwork {
    fn named_vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        self.trunk.push_vars("trunk", &mut out);
        self.value.push_vars("value", &mut out);
        self.mu.push_vars("mu", &mut out);
        self.l.push_vars("l", &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dueling_subtracts_the_mean_advantage() {
        let dev = Device::Cpu;
        let value = Tensor::new(&[[1.0f32], [-2.0]], &dev).unwrap();
        let advantage = Tensor::new(&[[1.0f32, 3.0, 5.0], [0.0, 0.0, 6.0]], &dev).unwrap();
        // Row 0: mean A = 3 → Q = 1 + [-2, 0, 2]; row 1: mean A = 2 → Q = -2 + [-2, -2, 4].
        let q = dueling_q(&value, &advantage)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(q, vec![vec![-1.0, 1.0, 3.0], vec![-4.0, -4.0, 2.0]]);
    }

    /// The actor's loss goes through a frozen critic: ∂Q/∂a flows, but no
    /// gradient is computed for any of the critic's parameters, LayerNorm's
    /// gain and offset included.
    #[test]
    fn a_frozen_critic_passes_gradients_to_the_action_only() {
        let dev = Device::Cpu;
        let config = NetConfig {
            hidden: vec![8, 8],
            layer_norm: true,
            ..NetConfig::default()
        };
        let critic = Critic::new(&config, 3, 2, &mut SimRng::seed(3), &dev).unwrap();
        let obs = Tensor::new(&[[0.1f32, -0.4, 0.9], [1.0, 0.2, -0.3]], &dev).unwrap();
        let action = Var::new(&[[0.5f32, -0.5], [0.1, 0.9]], &dev).unwrap();
        for frozen in [false, true] {
            let q = if frozen {
                critic.forward_frozen(&obs, action.as_tensor())
            } else {
                critic.forward(&obs, action.as_tensor())
            }
            .unwrap();
            let grads = q.sum_all().unwrap().backward().unwrap();
            assert!(grads.get(action.as_tensor()).is_some(), "∂Q/∂a");
            for (name, var) in critic.named_vars() {
                assert_eq!(
                    grads.get(var.as_tensor()).is_some(),
                    !frozen,
                    "{name}: frozen = {frozen}"
                );
            }
        }
    }

    #[test]
    fn twin_heads_take_the_minimum_and_targets_copy_exactly() {
        let dev = Device::Cpu;
        let config = NetConfig {
            hidden: vec![8],
            final_init_scale: 1.0,
            ..NetConfig::default()
        };
        let net = QNetwork::new(&config, 3, 2, 2, &mut SimRng::seed(1), &dev).unwrap();
        let obs = Tensor::new(&[[0.1f32, -0.4, 0.9], [1.0, 0.2, -0.3]], &dev).unwrap();
        let heads = net.forward_heads(&obs).unwrap();
        let (a, b) = (
            heads[0].to_vec2::<f32>().unwrap(),
            heads[1].to_vec2::<f32>().unwrap(),
        );
        let q = net.q_values(&obs).unwrap().to_vec2::<f32>().unwrap();
        for i in 0..2 {
            for j in 0..2 {
                assert_eq!(q[i][j], a[i][j].min(b[i][j]));
            }
        }
        assert_ne!(a, b, "the heads are initialized independently");
        let other = QNetwork::new(&config, 3, 2, 2, &mut SimRng::seed(2), &dev).unwrap();
        other.copy_from(&net).unwrap();
        assert_eq!(other.q_values(&obs).unwrap().to_vec2::<f32>().unwrap(), q);
        let names: Vec<String> = net.named_vars().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names[..2],
            ["trunk.0.weight".to_string(), "trunk.0.bias".to_string()]
        );
        assert!(names.contains(&"head1.q.bias".to_string()));
    }
}
