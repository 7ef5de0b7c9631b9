//! Continuous-control learning tests: DDPG, TD3 and NAF each learn to swing up
//! Pendulum-v1 on a short budget with small networks and a fixed seed. The
//! full-budget runs with the presets (20k steps, [400, 300] networks, seeds 0–2,
//! ≥ −200) are benchmarks (BENCHMARKS.md), not tests.
//!
//! A random or untrained policy scores about −1200 to −1500 on Pendulum; a
//! greedy mean of −400 or better over 5 episodes only comes from a policy that
//! swings the pendulum up and holds it from most starting angles.

use candle_core::Device;
use reflex_sim::{make, Env};
use reflex_trainer::algo::{build, evaluate, train, Agent, Observer, Progress};
use reflex_trainer::nn::NetConfig;
use reflex_trainer::run::RunConfig;
use reflex_trainer::TrainError;

struct Evals {
    eval_env: Box<dyn Env>,
    evals: Vec<f64>,
}

impl Observer for Evals {
    fn episode(&mut self, _: &Progress, _: f64, _: u32) {}

    fn periodic(&mut self, _: &Progress, agent: &mut dyn Agent) -> Result<(), TrainError> {
        let (mean, _) = evaluate(agent, self.eval_env.as_mut(), 5, 70_000)?;
        self.evals.push(mean);
        Ok(())
    }
}

/// Small networks and an early start, so a run takes seconds.
fn small(algo: &str, seed: u64) -> RunConfig {
    let net = NetConfig {
        hidden: vec![64, 64],
        final_init_scale: 1.0,
        ..NetConfig::default()
    };
    let mut c = RunConfig {
        env: "pendulum".into(),
        algo: algo.into(),
        seed,
        ..RunConfig::default()
    };
    for ddpg in [&mut c.ddpg, &mut c.td3] {
        ddpg.learning_starts = 1_000;
        ddpg.batch_size = 64;
        ddpg.actor = net.clone();
        ddpg.critic = net.clone();
    }
    c.naf.learning_starts = 1_000;
    c.naf.batch_size = 64;
    c.naf.net = net;
    c
}

fn pendulum_run(config: &RunConfig, steps: u64) -> Vec<f64> {
    reflex_trainer::set_compute_threads(1);
    let mut env = make("pendulum").unwrap();
    let mut agent = build(config, env.as_ref(), &Device::Cpu).unwrap();
    let mut evals = Evals {
        eval_env: make("pendulum").unwrap(),
        evals: Vec::new(),
    };
    train(
        agent.as_mut(),
        env.as_mut(),
        steps,
        config.seed,
        1_000,
        &mut evals,
    )
    .unwrap();
    evals.evals
}

fn check(algo: &str, seed: u64, steps: u64) {
    let evals = pendulum_run(&small(algo, seed), steps);
    assert!(
        evals[0] < -900.0,
        "{algo}: the untrained policy already swings up? {evals:?}"
    );
    let best = evals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    assert!(best >= -400.0, "{algo} seed {seed}: greedy evals {evals:?}");
}

#[test]
fn ddpg_learns_pendulum() {
    check("ddpg", 0, 8_000);
}

#[test]
fn td3_learns_pendulum() {
    check("td3", 0, 8_000);
}

#[test]
fn naf_learns_pendulum() {
    check("naf", 0, 12_000);
}

#[test]
fn same_seed_same_continuous_run() {
    let a = pendulum_run(&small("td3", 3), 2_000);
    let b = pendulum_run(&small("td3", 3), 2_000);
    assert_eq!(a, b);
    let c = pendulum_run(&small("td3", 4), 2_000);
    assert_ne!(a, c);
}
