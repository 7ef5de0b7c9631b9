//! Recurrent learning test: DRQN learns masked CartPole (cart position and pole
//! angle only, no velocities) on a short budget (16k steps) with a fixed seed.
//! The full-budget runs (100k steps, seeds 0–2, ≥ 475, beside plain DQN) are
//! benchmarks (BENCHMARKS.md), not tests.
//!
//! On masked CartPole a random policy lasts about 22 steps, and a memoryless
//! policy sees no velocities, so it cannot balance for long; a greedy mean of
//! 150 or more over 10 episodes means the network is reading the history.

use candle_core::Device;
use reflex_sim::{make, Env};
use reflex_trainer::algo::{build, evaluate, train, Agent, Observer, Progress};
use reflex_trainer::run::resolve;
use reflex_trainer::TrainError;

struct Evals {
    eval_env: Box<dyn Env>,
    evals: Vec<f64>,
}

impl Observer for Evals {
    fn episode(&mut self, _: &Progress, _: f64, _: u32) {}

    fn periodic(&mut self, _: &Progress, agent: &mut dyn Agent) -> Result<(), TrainError> {
        let (mean, _) = evaluate(agent, self.eval_env.as_mut(), 10, 50_000)?;
        self.evals.push(mean);
        Ok(())
    }
}

#[test]
fn drqn_learns_masked_cartpole_from_the_history() {
    reflex_trainer::set_compute_threads(1);
    let mut flags = toml::Table::new();
    flags.insert("env".into(), "cartpole-masked".into());
    flags.insert("algo".into(), "drqn".into());
    let mut config = resolve(None, &[], &flags).unwrap();
    let steps = 16_000;
    // Faster (and less stable over a long run) than the preset: a larger,
    // constant learning rate, half the updates, more frequent target updates,
    // ε over 40% of the run.
    config.drqn.learning_rate = 1e-3;
    config.drqn.learning_rate_end = None;
    config.drqn.train_freq = 4;
    config.drqn.target_update_interval = 100;
    config.drqn.exploration.fraction = 0.4;
    let mut env = make(&config.env).unwrap();
    let mut agent = build(&config, env.as_ref(), &Device::Cpu).unwrap();
    let mut evals = Evals {
        eval_env: make(&config.env).unwrap(),
        evals: Vec::new(),
    };
    train(agent.as_mut(), env.as_mut(), steps, 0, 2_000, &mut evals).unwrap();
    eprintln!("DRQN greedy evals every 2,000 steps: {:?}", evals.evals);
    assert!(
        evals.evals[0] < 60.0,
        "before learning the policy must be poor: {:?}",
        evals.evals
    );
    let best = evals.evals.iter().copied().fold(f64::MIN, f64::max);
    assert!(best >= 150.0, "DRQN did not learn: {:?}", evals.evals);
}
