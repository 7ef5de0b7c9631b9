//! DDPG / TD3 / NAF updates per second on Pendulum-v1 with the presets' network
//! shapes (issue 6's speed target; the update is what dominates a run).
//!
//!     cargo bench -p reflex-trainer --bench continuous_update -- [algo=ddpg|td3|naf]
//!         [threads=1] [updates=300] [repeats=3]
//!
//! The replay is first filled by 10,000 steps of uniformly random actions (the
//! presets' `learning_starts`), then the clock times `updates` calls of the
//! agent's own `train_after` path (inside candle's thread pool, as a run does).
//! Prints one JSON line per repeat and the median.

use std::time::Instant;

use candle_core::Device;
use reflex_sim::make;

use reflex_trainer::algo::ddpg::{Ddpg, DdpgConfig};
use reflex_trainer::algo::naf::{Naf, NafConfig};
use reflex_trainer::algo::{train, Agent, Observer, Progress};

struct Quiet;
impl Observer for Quiet {
    fn episode(&mut self, _: &Progress, _: f64, _: u32) {}
}

fn arg(name: &str, default: &str) -> String {
    std::env::args()
        .filter_map(|a| a.strip_prefix(&format!("{name}=")).map(str::to_string))
        .next_back()
        .unwrap_or_else(|| default.to_string())
}

fn main() {
    reflex_trainer::keep_freed_memory();
    let algo = arg("algo", "ddpg");
    let threads: usize = arg("threads", "1").parse().expect("threads=N");
    let updates: u64 = arg("updates", "300").parse().expect("updates=N");
    let repeats: usize = arg("repeats", "3").parse().expect("repeats=N");
    reflex_trainer::set_compute_threads(threads);
    let mut env = make("pendulum").unwrap();
    let reflex_msgs::ActionSpace::Box(bounds) = env.action_space().clone() else {
        panic!("pendulum has a Box action space")
    };
    let device = Device::Cpu;
    let fill = 10_000;
    let mut agent: Box<dyn Agent> = match algo.as_str() {
        "ddpg" | "td3" => {
            let base = if algo == "td3" {
                DdpgConfig::td3()
            } else {
                DdpgConfig::default()
            };
            let config = DdpgConfig {
                learning_starts: fill,
                ..base
            };
            Box::new(Ddpg::new(config, algo == "td3", 3, &bounds, 0, &device).unwrap())
        }
        "naf" => {
            let config = NafConfig {
                learning_starts: fill,
                ..NafConfig::default()
            };
            Box::new(Naf::new(config, 3, &bounds, 0, &device).unwrap())
        }
        other => panic!("algo={other}: ddpg, td3 or naf"),
    };
    train(agent.as_mut(), env.as_mut(), fill, 0, 0, &mut Quiet).unwrap();
    let mut rates = Vec::new();
    let mut step = fill;
    for repeat in 0..repeats {
        let start = Instant::now();
        for _ in 0..updates {
            step += 1;
            agent.train_after(step, u64::MAX).unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        let rate = updates as f64 / secs;
        rates.push(rate);
        println!(
            "{{\"impl\":\"reflex\",\"algo\":\"{algo}\",\"threads\":{threads},\"repeat\":{repeat},\
             \"updates\":{updates},\"seconds\":{secs:.3},\"updates_per_s\":{rate:.2},\
             \"ms_per_update\":{:.3}}}",
            1e3 / rate
        );
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "reflex {algo} t{threads} median updates/s: {:.2}",
        rates[rates.len() / 2]
    );
}
