//! Q-networks on candle: an MLP trunk (configurable sizes, activation, optional
//! LayerNorm) with a plain or dueling head, one or two of them (Twin DQN).
//!
//! Parameters are candle `Var`s with stable names that follow the module tree
//! (`trunk.0.weight`, `head0.advantage.bias`, …), so checkpoints (safetensors) and
//! ONNX initializers read alike. Weights are initialized from a seeded
//! [`SimRng`] rather than candle's unseedable CPU generator, so a seed fixes a run.

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

/// An affine layer `x Wᵀ + b`.
#[derive(Debug, Clone)]
struct Dense {
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
        x.matmul(&self.weight.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())
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
    /// backward pass).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        centered
            .broadcast_div(&(var + Self::EPS)?.sqrt()?)?
            .broadcast_mul(self.gain.as_tensor())?
            .broadcast_add(self.offset.as_tensor())
    }
}

/// The output layer(s) of one Q estimate.
#[derive(Debug, Clone)]
enum Head {
    Plain(Dense),
    Dueling { value: Dense, advantage: Dense },
}

impl Head {
    fn forward(&self, features: &Tensor) -> Result<Tensor> {
        match self {
            Head::Plain(q) => q.forward(features),
            Head::Dueling { value, advantage } => {
                dueling_q(&value.forward(features)?, &advantage.forward(features)?)
            }
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
    trunk: Vec<(Dense, Option<Norm>)>,
    heads: Vec<Head>,
    activation: Activation,
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
        let mut trunk = Vec::new();
        let mut width = obs_dim;
        for &hidden in &config.hidden {
            let norm = if config.layer_norm {
                Some(Norm::new(hidden, device)?)
            } else {
                None
            };
            trunk.push((Dense::new(width, hidden, 1.0, rng, device)?, norm));
            width = hidden;
        }
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
            activation: config.activation,
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
        let mut x = obs.clone();
        for (dense, norm) in &self.trunk {
            x = dense.forward(&x)?;
            if let Some(norm) = norm {
                x = norm.forward(&x)?;
            }
            x = match self.activation {
                Activation::Relu => x.relu()?,
                Activation::Tanh => x.tanh()?,
            };
        }
        self.heads.iter().map(|h| h.forward(&x)).collect()
    }

    /// The network's Q estimate `[batch, n_actions]`: the single head, or the
    /// elementwise minimum of the two (Twin DQN's pessimistic estimate).
    pub fn q_values(&self, obs: &Tensor) -> Result<Tensor> {
        let heads = self.forward_heads(obs)?;
        let mut q = heads[0].clone();
        for other in &heads[1..] {
            q = q.minimum(other)?;
        }
        Ok(q)
    }

    /// Appends this network's forward pass to an ONNX graph, reading `input`
    /// `[batch, obs_dim]` and writing Q-values `[batch, n_actions]` to `output`:
    /// `Gemm` per affine layer (weights under their [`named_vars`](Self::named_vars)
    /// names), `LayerNormalization` (ε = 1e-5 on the variance, as here), `Relu` or
    /// `Tanh`, the dueling combination with `ReduceMean`, and `Min` over twin heads.
    pub fn to_onnx(
        &self,
        g: &mut crate::export::OnnxGraph,
        input: &str,
        output: &str,
    ) -> Result<()> {
        use crate::export::Attr;
        let dense = |g: &mut crate::export::OnnxGraph,
                     name: &str,
                     layer: &Dense,
                     x: &str,
                     out: Option<&str>|
         -> Result<String> {
            let w = g.parameter(&format!("{name}.weight"), &layer.weight)?;
            let b = g.parameter(&format!("{name}.bias"), &layer.bias)?;
            Ok(g.op("Gemm", &[x, &w, &b], &[Attr::Int("transB", 1)], out))
        };
        let mut x = input.to_string();
        for (i, (layer, norm)) in self.trunk.iter().enumerate() {
            x = dense(g, &format!("trunk.{i}"), layer, &x, None)?;
            if let Some(norm) = norm {
                let gain = g.parameter(&format!("trunk.{i}.norm.gain"), &norm.gain)?;
                let offset = g.parameter(&format!("trunk.{i}.norm.offset"), &norm.offset)?;
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
        let single = self.heads.len() == 1;
        let mut qs = Vec::new();
        for (h, head) in self.heads.iter().enumerate() {
            let out = single.then_some(output);
            qs.push(match head {
                Head::Plain(q) => dense(g, &format!("head{h}.q"), q, &x, out)?,
                Head::Dueling { value, advantage } => {
                    let v = dense(g, &format!("head{h}.value"), value, &x, None)?;
                    let a = dense(g, &format!("head{h}.advantage"), advantage, &x, None)?;
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
        let mut out = Vec::new();
        for (i, (dense, norm)) in self.trunk.iter().enumerate() {
            out.push((format!("trunk.{i}.weight"), dense.weight.clone()));
            out.push((format!("trunk.{i}.bias"), dense.bias.clone()));
            if let Some(norm) = norm {
                out.push((format!("trunk.{i}.norm.gain"), norm.gain.clone()));
                out.push((format!("trunk.{i}.norm.offset"), norm.offset.clone()));
            }
        }
        for (h, head) in self.heads.iter().enumerate() {
            match head {
                Head::Plain(q) => {
                    out.push((format!("head{h}.q.weight"), q.weight.clone()));
                    out.push((format!("head{h}.q.bias"), q.bias.clone()));
                }
                Head::Dueling { value, advantage } => {
                    out.push((format!("head{h}.value.weight"), value.weight.clone()));
                    out.push((format!("head{h}.value.bias"), value.bias.clone()));
                    out.push((
                        format!("head{h}.advantage.weight"),
                        advantage.weight.clone(),
                    ));
                    out.push((format!("head{h}.advantage.bias"), advantage.bias.clone()));
                }
            }
        }
        out
    }

    /// The parameters, in [`named_vars`](Self::named_vars) order.
    pub fn vars(&self) -> Vec<Var> {
        self.named_vars().into_iter().map(|(_, v)| v).collect()
    }

    /// Copies `other`'s parameters into this network (hard target update).
    pub fn copy_from(&self, other: &QNetwork) -> Result<()> {
        for (mine, theirs) in self.vars().iter().zip(other.vars()) {
            mine.set(&theirs.as_tensor().detach())?;
        }
        Ok(())
    }

    /// Polyak averaging: θ ← (1 − τ) θ + τ θ_other.
    pub fn polyak_from(&self, other: &QNetwork, tau: f64) -> Result<()> {
        for (mine, theirs) in self.vars().iter().zip(other.vars()) {
            let mixed = ((mine.as_tensor() * (1.0 - tau))? + (theirs.as_tensor() * tau)?)?;
            mine.set(&mixed.detach())?;
        }
        Ok(())
    }

    /// A detached copy with its own parameters (a target network).
    pub fn duplicate(&self) -> Result<QNetwork> {
        let mut copy = self.clone();
        let fresh = |v: &Var| Var::from_tensor(&v.as_tensor().detach().copy()?);
        for (dense, norm) in &mut copy.trunk {
            dense.weight = fresh(&dense.weight)?;
            dense.bias = fresh(&dense.bias)?;
            if let Some(norm) = norm {
                norm.gain = fresh(&norm.gain)?;
                norm.offset = fresh(&norm.offset)?;
            }
        }
        for head in &mut copy.heads {
            let denses: Vec<&mut Dense> = match head {
                Head::Plain(q) => vec![q],
                Head::Dueling { value, advantage } => vec![value, advantage],
            };
            for dense in denses {
                dense.weight = fresh(&dense.weight)?;
                dense.bias = fresh(&dense.bias)?;
            }
        }
        Ok(copy)
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
