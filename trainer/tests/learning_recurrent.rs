//! Recurrent learning tests: DRQN learns masked CartPole (cart position and pole
//! angle only, no velocities) on a short budget (16k steps), and recurrent TD3
//! learns masked Pendulum (cos θ and sin θ, no angular velocity) on 12k steps,
//! each with a fixed seed. The full-budget runs (seeds 0–2 beside the
//! feed-forward learners) are benchmarks (BENCHMARKS.md), not tests.
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
    // constant learning rate, half the updates of half the windows, more
    // frequent target updates, ε over 40% of the run.
    config.drqn.learning_rate = 1e-3;
    config.drqn.learning_rate_end = None;
    config.drqn.batch_size = 32;
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

/// A random policy on Pendulum scores about −1,200 per episode. On the masked
/// env the feed-forward TD3 runs of BENCHMARKS.md ("Recurrent TD3 on masked
/// Pendulum", 60k steps) ended at −998 to −1,208, and their best periodic
/// policies scored −970 to −1,218 over 20 episodes: the angular velocity the env
/// hides is needed to swing the pendulum up. The best of this run's 12 ten-episode
/// evaluations at −750 or better means the LSTM reads it from the history.
/// (The full recurrent runs end at −128 to −160; this one is sized for CI. On
/// 2026-12-06 seed 0, the one tested, reached −233 at 10k steps and −489 at 12k;
/// seeds 1 and 2 reached −259 and −633. The earlier bar, −300 at 10k steps, held
/// for seed 0 alone, and only just.)
#[test]
fn recurrent_td3_learns_masked_pendulum_from_the_history() {
    reflex_trainer::set_compute_threads(1);
    let mut flags = toml::Table::new();
    flags.insert("env".into(), "pendulum-masked".into());
    flags.insert("algo".into(), "td3".into());
    let mut config = resolve(None, &[], &flags).unwrap();
    assert!(config.recurrent, "the preset turns the LSTM on");
    let steps = 12_000;
    // Smaller and faster than the preset (64-wide LSTM, 32 windows of 16 steps,
    // [128, 128] heads, 60k steps).
    config.lstm.hidden = 32;
    config.lstm.seq_len = 8;
    config.lstm.burn_in = 4;
    config.td3.batch_size = 16;
    config.td3.actor.hidden = vec![64, 64];
    config.td3.critic.hidden = vec![64, 64];
    config.td3.learning_starts = 1_000;
    let mut env = make(&config.env).unwrap();
    let mut agent = build(&config, env.as_ref(), &Device::Cpu).unwrap();
    let mut evals = Evals {
        eval_env: make(&config.env).unwrap(),
        evals: Vec::new(),
    };
    train(agent.as_mut(), env.as_mut(), steps, 0, 1_000, &mut evals).unwrap();
    eprintln!(
        "recurrent TD3 greedy evals every 1,000 steps: {:?}",
        evals.evals
    );
    assert!(
        evals.evals[0] < -900.0,
        "before learning the policy must be poor: {:?}",
        evals.evals
    );
    let best = evals.evals.iter().copied().fold(f64::MIN, f64::max);
    assert!(
        best >= -750.0,
        "recurrent TD3 did not learn: {:?}",
        evals.evals
    );
}
