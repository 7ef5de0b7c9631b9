//! A population: P networks of one shape held as one network whose
//! parameters carry a leading member dimension, so P learners take one
//! forward pass, one backward pass and one optimizer step together: each
//! matrix product becomes one batched product over the members, each
//! elementwise op one launch over all of them. On a GPU, where a small
//! network's update is bound by kernel launches rather than arithmetic, that
//! is P updates for the launches of one.
//!
//! Layout: a member's weight `[out, in]` becomes `[P, out, in]`, a bias or
//! LayerNorm vector `[n]` becomes `[P, 1, n]` (so it broadcasts over a
//! member's batch rows). Inputs are `[P, batch, features]`. Member `p` is
//! slice `p` of every parameter, and nothing mixes members: the product,
//! the bias, the activations, the dueling mean and a critic's concatenation
//! of observation and action all act within a slice.
//!
//! Any network whose layers are the MLP layers of [`super`] stacks: Q-networks
//! (DQN), actors and critics (DDPG, TD3).

use candle_core::{Result, Shape, Tensor, Var};

use super::{Actor, Critic, Params, QNetwork, VarMap};

/// A network a population can stack: its parameters, and the same network
/// on other parameters (of other shapes: the stacked ones).
pub trait Stackable: Params + Clone {
    /// The same network on the parameters `f` makes from these, called in
    /// [`named_vars`](Params::named_vars) order.
    fn map_vars(&self, f: &mut VarMap<'_>) -> Result<Self>;
}

impl Stackable for QNetwork {
    fn map_vars(&self, f: &mut VarMap<'_>) -> Result<Self> {
        QNetwork::map_vars(self, f)
    }
}

impl Stackable for Actor {
    fn map_vars(&self, f: &mut VarMap<'_>) -> Result<Self> {
        Actor::map_vars(self, f)
    }
}

impl Stackable for Critic {
    fn map_vars(&self, f: &mut VarMap<'_>) -> Result<Self> {
        Critic::map_vars(self, f)
    }
}

/// P networks as one (see the module docs).
#[derive(Debug, Clone)]
pub struct Stacked<N = QNetwork> {
    /// The stacked network: feed it `[P, batch, features]`.
    pub net: N,
    members: usize,
    /// A member's parameter shapes, in [`Params::named_vars`] order.
    shapes: Vec<Shape>,
}

/// The stacked shape of a member parameter of shape `dims`.
fn stacked_dims(members: usize, dims: &[usize]) -> Result<Vec<usize>> {
    match dims {
        [n] => Ok(vec![members, 1, *n]),
        [out, inp] => Ok(vec![members, *out, *inp]),
        other => candle_core::bail!(
            "stacking parameters of rank {} is not supported",
            other.len()
        ),
    }
}

impl<N: Stackable> Stacked<N> {
    /// The networks `members` (same config, any weights) as one stacked
    /// network on their device.
    pub fn new(members: &[N]) -> Result<Self> {
        let Some(first) = members.first() else {
            candle_core::bail!("a population needs at least one member");
        };
        let each: Vec<Vec<Var>> = members.iter().map(|m| m.vars()).collect();
        let shapes: Vec<Shape> = each[0].iter().map(|v| v.shape().clone()).collect();
        for (k, vars) in each.iter().enumerate() {
            let same =
                vars.len() == shapes.len() && vars.iter().zip(&shapes).all(|(v, s)| v.shape() == s);
            if !same {
                candle_core::bail!("population member {k} differs in shape from member 0");
            }
        }
        let p = members.len();
        let mut index = 0;
        let net = first.map_vars(&mut |_| {
            let parts: Vec<Tensor> = each
                .iter()
                .map(|vars| vars[index].as_tensor().detach())
                .collect();
            let dims = stacked_dims(p, shapes[index].dims())?;
            index += 1;
            Var::from_tensor(&Tensor::stack(&parts, 0)?.reshape(dims)?)
        })?;
        Ok(Self {
            net,
            members: p,
            shapes,
        })
    }

    /// Number of members P.
    pub fn members(&self) -> usize {
        self.members
    }

    /// A fresh stacked network with its own parameters (a target network).
    pub fn duplicate(&self) -> Result<Self> {
        Ok(Self {
            net: self.net.map_vars(&mut super::fresh)?,
            ..self.clone()
        })
    }

    /// The members' tensors `parts` (one per member, in the member shape of
    /// parameter `index`: the parameter itself, or an Adam moment of it)
    /// stacked as that parameter is.
    pub fn stack_parts(&self, index: usize, parts: &[Tensor]) -> Result<Tensor> {
        if parts.len() != self.members {
            candle_core::bail!("{} parts for {} members", parts.len(), self.members);
        }
        let dims = stacked_dims(self.members, self.shapes[index].dims())?;
        Tensor::stack(parts, 0)?.reshape(dims)
    }

    /// Member `p`'s slice of a stacked tensor `t` (a parameter, a gradient, an
    /// Adam moment) that belongs to parameter `index`, in the member's shape.
    pub fn member_slice(&self, t: &Tensor, index: usize, p: usize) -> Result<Tensor> {
        t.get(p)?.reshape(self.shapes[index].clone())
    }

    /// Writes member `p`'s parameters into `into`, a network of the member
    /// shape (for its evaluation, checkpoint and export).
    pub fn write_member(&self, p: usize, into: &N) -> Result<()> {
        if p >= self.members {
            candle_core::bail!("member {p} of a population of {}", self.members);
        }
        for (i, (mine, theirs)) in self.net.vars().iter().zip(into.vars()).enumerate() {
            theirs.set(&self.member_slice(mine.as_tensor(), i, p)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::NetConfig;
    use candle_core::Device;
    use reflex_sim::SimRng;

    /// max |t|.
    fn max_abs(t: &Tensor) -> f32 {
        t.abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    fn net(config: &NetConfig, heads: usize, seed: u64) -> QNetwork {
        let mut rng = SimRng::seed(seed);
        QNetwork::new(config, 5, 3, heads, &mut rng, &Device::Cpu).unwrap()
    }

    /// Every member's Q-values and gradients from the stacked network equal
    /// its own network's, for plain, dueling, twin and LayerNorm shapes, on
    /// this crate's CPU kernels (the batched fused layer) and on candle's
    /// primitives (what CUDA runs).
    #[test]
    fn a_stacked_network_computes_each_member_as_alone() {
        stacked_matches_members();
        crate::nn::portable(stacked_matches_members);
    }

    fn stacked_matches_members() {
        let configs = [
            NetConfig {
                hidden: vec![16, 8],
                ..NetConfig::default()
            },
            NetConfig {
                hidden: vec![16],
                dueling: true,
                layer_norm: true,
                activation: crate::nn::Activation::Tanh,
                final_init_scale: 1.0,
            },
        ];
        for (c, config) in configs.iter().enumerate() {
            for heads in [1, 2] {
                let members: Vec<QNetwork> =
                    (0..3).map(|k| net(config, heads, 10 * k + 1)).collect();
                let stacked = Stacked::new(&members).unwrap();
                let mut rng = SimRng::seed(7);
                let obs: Vec<f32> = (0..3 * 4 * 5)
                    .map(|_| rng.uniform(-2.0, 2.0) as f32)
                    .collect();
                let x = Tensor::from_vec(obs, (3, 4, 5), &Device::Cpu).unwrap();
                let q = stacked.net.q_values(&x).unwrap();
                assert_eq!(q.dims(), &[3, 4, 3]);
                // A loss that weighs members differently, so a gradient that
                // leaked across members would show.
                let weights = Tensor::new(&[1.0f32, -2.0, 0.5], &Device::Cpu)
                    .unwrap()
                    .reshape((3, 1, 1))
                    .unwrap();
                let loss = q
                    .sqr()
                    .unwrap()
                    .broadcast_mul(&weights)
                    .unwrap()
                    .sum_all()
                    .unwrap();
                let grads = loss.backward().unwrap();
                for (k, member) in members.iter().enumerate() {
                    let xk = x.get(k).unwrap();
                    let alone = member.q_values(&xk).unwrap();
                    let diff = max_abs(&(q.get(k).unwrap() - &alone).unwrap());
                    assert!(
                        diff < 1e-5,
                        "config {c}, heads {heads}, member {k}: Q off by {diff}"
                    );
                    let w = [1.0f32, -2.0, 0.5][k];
                    let own = (alone.sqr().unwrap().sum_all().unwrap() * f64::from(w))
                        .unwrap()
                        .backward()
                        .unwrap();
                    for (i, (sv, mv)) in stacked.net.vars().iter().zip(member.vars()).enumerate() {
                        let g = stacked.member_slice(grads.get(sv).unwrap(), i, k).unwrap();
                        let e = own.get(&mv).unwrap();
                        let (scale, off) = (max_abs(e), max_abs(&(g - e).unwrap()));
                        assert!(
                            off <= 1e-5 * (1.0 + scale),
                            "config {c}, heads {heads}, member {k}, parameter {i}: gradient off by {off}"
                        );
                    }
                }
                // Unstacking gives each member's weights back.
                let copy = members[2].duplicate().unwrap();
                stacked.write_member(1, &copy).unwrap();
                for (a, b) in copy.vars().iter().zip(members[1].vars()) {
                    let a = a
                        .as_tensor()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap();
                    let b = b
                        .as_tensor()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap();
                    assert_eq!(a, b);
                }
            }
        }
    }

    #[test]
    fn members_of_different_shapes_are_refused() {
        let a = net(&NetConfig::default(), 1, 0);
        let b = net(&NetConfig::default(), 2, 0);
        let err = Stacked::new(&[a, b]).unwrap_err().to_string();
        assert!(err.contains("member 1 differs"), "{err}");
        assert!(Stacked::<QNetwork>::new(&[]).is_err());
    }
}
