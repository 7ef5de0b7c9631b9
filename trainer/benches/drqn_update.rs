//! DRQN sequence-batch updates per second (issue 7's benchmark): batch 32 ×
//! length 40, LSTM hidden 128, on one thread, the same model and update as
//! `scripts/bench_drqn_torch.py` runs in PyTorch.
//!
//!     cargo bench -p reflex-trainer --bench drqn_update -- [updates=200] [repeats=3]
//!         [hidden=128] [batch=32] [len=40] [burn_in=0]
//!
//! The model: LSTM over [obs, prev action one-hot] (masked CartPole: 2 + 2
//! inputs), then a dueling head with one hidden layer of `hidden` units. One
//! update: sample 32 windows of `burn_in + len + 1` positions from sequence
//! replay (filled beforehand by 20,000 ε-greedy steps), unroll the online and
//! target networks, Double-DQN targets, masked Huber loss, backward, gradient
//! clipping at norm 10, Adam. Prints one JSON line per repeat and the median.

use std::time::Instant;

use candle_core::Device;
use reflex_sim::make;
use reflex_trainer::algo::drqn::{Drqn, DrqnConfig};
use reflex_trainer::algo::{train, Agent, Observer, Progress};
use reflex_trainer::nn::NetConfig;

struct Quiet;
impl Observer for Quiet {
    fn episode(&mut self, _: &Progress, _: f64, _: u32) {}
}

fn arg(name: &str, default: usize) -> usize {
    std::env::args()
        .filter_map(|a| a.strip_prefix(&format!("{name}=")).map(str::to_string))
        .next_back()
        .map_or(default, |v| v.parse().expect("a number"))
}

fn main() {
    reflex_trainer::keep_freed_memory();
    reflex_trainer::set_compute_threads(1);
    let (updates, repeats) = (arg("updates", 200), arg("repeats", 3));
    let (hidden, batch, len, burn_in) = (
        arg("hidden", 128),
        arg("batch", 32),
        arg("len", 40),
        arg("burn_in", 0),
    );
    let config = DrqnConfig {
        batch_size: batch,
        seq_len: len,
        burn_in,
        lstm_hidden: hidden,
        // Collection only while filling: no update before the clock starts.
        learning_starts: u64::MAX,
        net: NetConfig {
            hidden: vec![hidden],
            dueling: true,
            ..NetConfig::default()
        },
        ..DrqnConfig::default()
    };
    let mut env = make("cartpole-masked").unwrap();
    let mut agent = Drqn::new(config, 2, 2, 0, &Device::Cpu).unwrap();
    train(&mut agent, env.as_mut(), 20_000, 0, 0, &mut Quiet).unwrap();
    let mut rates = Vec::new();
    for repeat in 0..repeats {
        let start = Instant::now();
        for _ in 0..updates {
            agent.update(1.0).unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        let rate = updates as f64 / secs;
        rates.push(rate);
        println!(
            "{{\"impl\":\"reflex\",\"repeat\":{repeat},\"updates\":{updates},\"seconds\":{secs:.3},\
             \"updates_per_s\":{rate:.2},\"batch\":{batch},\"len\":{len},\"burn_in\":{burn_in},\
             \"hidden\":{hidden},\"training_step\":{}}}",
            agent.updates()
        );
    }
    rates.sort_by(f64::total_cmp);
    println!("reflex median updates/s: {:.2}", rates[rates.len() / 2]);
}
