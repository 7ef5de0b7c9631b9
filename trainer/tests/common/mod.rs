//! Networks and specs shared by the ONNX tests.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use reflex_msgs::PolicySpec;
use reflex_sim::{make, SimRng};
use reflex_trainer::export::spec_for;
use reflex_trainer::nn::{Activation, NetConfig, QNetwork};

/// The network kinds DQN can train, with final layers at full scale so the
/// outputs are far from zero and differences show.
pub fn kinds() -> Vec<(&'static str, NetConfig, usize)> {
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

pub fn cartpole_spec() -> PolicySpec {
    spec_for("dqn", "cartpole", make("cartpole").unwrap().as_ref())
}

pub fn network(config: &NetConfig, heads: usize, seed: u64) -> QNetwork {
    let mut rng = SimRng::seed(seed);
    QNetwork::new(config, 4, 2, heads, &mut rng, &Device::Cpu).unwrap()
}

pub fn candle_q(net: &QNetwork, obs: &[f32]) -> Vec<f32> {
    let x = Tensor::from_slice(obs, (1, obs.len()), &Device::Cpu).unwrap();
    net.q_values(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}
