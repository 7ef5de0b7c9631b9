//! Env steps per second of the simulators, single env and vectorized (N = 16),
//! for CartPole-v1 and Pendulum-v1: the Rust half of the comparison with
//! Gymnasium that `scripts/bench-sim.sh` runs (the Python half is
//! `scripts/bench_sim_gymnasium.py`, which measures the same way and prints the
//! same JSON keys).
//!
//!     cargo bench -p reflex-sim --bench env_steps
//!
//! Method, identical on both sides:
//! - random actions are drawn before timing (uniform over the action space); the
//!   timed loop only copies the next one into a reused `Action`;
//! - single env: `step`, then `reset(None)` when the episode ends (terminated or
//!   truncated); the vectorized runner resets in the same step by itself;
//! - env steps are counted (vector: calls × N); the step count of a measurement
//!   is calibrated to last about `REFLEX_BENCH_SECS` seconds (default 1.5);
//! - each measurement is repeated `REFLEX_BENCH_REPEATS` times (default 5) and
//!   the median is reported.
//!
//! Progress goes to stderr; stdout is one line of JSON.

use std::hint::black_box;
use std::time::{Duration, Instant};

use reflex_msgs::Action;
use reflex_sim::{make, Env, SimRng, VecEnv};

/// Pre-drawn actions are cycled through this many values (a power of two, so the
/// index is a mask): about a million actions, 4 MiB, as the task asked.
const ACTION_POOL: usize = 1 << 20;
const POOL_MASK: usize = ACTION_POOL - 1;
const NUM_ENVS: usize = 16;
const SEED: u64 = 0;

/// The random actions of one env, drawn before timing: discrete indices or
/// torques (one dimension for every env benchmarked here).
enum Pool {
    Discrete(Vec<u32>),
    Continuous(Vec<f32>),
}

impl Pool {
    fn draw(env: &dyn Env, rng: &mut SimRng) -> Self {
        match env.action_space() {
            reflex_msgs::ActionSpace::Discrete { n } => Pool::Discrete(
                (0..ACTION_POOL)
                    .map(|_| rng.below(u64::from(*n)) as u32)
                    .collect(),
            ),
            reflex_msgs::ActionSpace::Box(space) => {
                assert_eq!(space.low.len(), 1, "the bench draws 1-D continuous actions");
                let (low, high) = (f64::from(space.low[0]), f64::from(space.high[0]));
                Pool::Continuous(
                    (0..ACTION_POOL)
                        .map(|_| rng.uniform(low, high) as f32)
                        .collect(),
                )
            }
        }
    }

    /// An `Action` of the right kind, to be reused by every step.
    fn template(&self) -> Action {
        match self {
            Pool::Discrete(_) => Action::Discrete(0),
            Pool::Continuous(_) => Action::Continuous(vec![0.0]),
        }
    }

    /// Writes pre-drawn action `i` into `action` without allocating.
    #[inline(always)]
    fn load(&self, i: usize, action: &mut Action) {
        match (self, action) {
            (Pool::Discrete(values), Action::Discrete(a)) => *a = values[i & POOL_MASK],
            (Pool::Continuous(values), Action::Continuous(a)) => a[0] = values[i & POOL_MASK],
            _ => unreachable!("the template matches the pool"),
        }
    }
}

/// Steps one env `steps` times; returns the elapsed time.
fn run_single(env: &mut dyn Env, pool: &Pool, action: &mut Action, steps: u64) -> Duration {
    let start = Instant::now();
    for i in 0..steps as usize {
        pool.load(i, action);
        let step = env.step(action).expect("valid action");
        black_box(env.obs());
        if black_box(step).done() {
            black_box(env.reset(None));
        }
    }
    start.elapsed()
}

/// Steps the vector `calls` times (each call is `NUM_ENVS` env steps).
fn run_vector(envs: &mut VecEnv, pool: &Pool, actions: &mut [Action], calls: u64) -> Duration {
    let n = actions.len();
    let start = Instant::now();
    for call in 0..calls as usize {
        for (j, action) in actions.iter_mut().enumerate() {
            pool.load(call * n + j, action);
        }
        black_box(envs.step(actions).expect("valid actions"));
        black_box(envs.obs());
        // Take the finished episodes as a collector would (otherwise the runner
        // keeps every episode summary of the run).
        black_box(envs.drain_episodes());
    }
    start.elapsed()
}

/// Settings read from the environment.
struct Config {
    target: Duration,
    repeats: usize,
}

/// Calibrates a unit count (steps or calls) so that one run lasts about
/// `config.target`, then times `config.repeats` runs. Returns
/// (units per run, seconds per run).
fn measure(config: &Config, mut run: impl FnMut(u64) -> Duration) -> (u64, Vec<f64>) {
    // Warm up and estimate the rate: double the count until a run lasts 0.25 s,
    // keeping the best rate of the runs long enough to time (a transient load
    // during calibration would otherwise shorten every timed run).
    let mut units = 1_000u64;
    let mut rate = 0.0f64;
    loop {
        let elapsed = run(units).as_secs_f64();
        if elapsed >= 0.05 {
            rate = rate.max(units as f64 / elapsed);
        }
        if elapsed >= 0.25 {
            break;
        }
        units *= 2;
    }
    let units = ((rate * config.target.as_secs_f64()) as u64).max(1);
    let secs = (0..config.repeats)
        .map(|_| run(units).as_secs_f64())
        .collect();
    (units, secs)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// One result as a JSON object (same keys as the Python script's).
fn result_json(env: &str, num_envs: usize, env_steps: u64, secs: &[f64]) -> String {
    let rates: Vec<f64> = secs.iter().map(|s| env_steps as f64 / s).collect();
    let median_rate = median(&rates);
    eprintln!(
        "{env:<12} {:<22} {median_rate:>14.0} env steps/s  (median of {}, {} env steps each)",
        if num_envs == 1 {
            "single".to_string()
        } else {
            format!("vector N={num_envs}")
        },
        rates.len(),
        env_steps
    );
    let rates_json: Vec<String> = rates.iter().map(|r| format!("{r:.1}")).collect();
    format!(
        "{{\"env\":\"{env}\",\"mode\":\"{}\",\"num_envs\":{num_envs},\"env_steps\":{env_steps},\
         \"steps_per_s\":{median_rate:.1},\"runs_steps_per_s\":[{}]}}",
        if num_envs == 1 { "single" } else { "vector" },
        rates_json.join(",")
    )
}

fn env_var<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a valid value")),
        Err(_) => default,
    }
}

fn main() {
    let config = Config {
        target: Duration::from_secs_f64(env_var("REFLEX_BENCH_SECS", 1.5)),
        repeats: env_var("REFLEX_BENCH_REPEATS", 5),
    };
    let mut results = Vec::new();
    for name in ["CartPole-v1", "Pendulum-v1"] {
        // Single env.
        let mut env = make(name).expect("built-in env");
        let pool = Pool::draw(&*env, &mut SimRng::seed(SEED));
        let mut action = pool.template();
        env.reset(Some(SEED));
        let (steps, secs) = measure(&config, |steps| {
            run_single(&mut *env, &pool, &mut action, steps)
        });
        results.push(result_json(name, 1, steps, &secs));

        // Vectorized runner, auto-reset.
        let mut envs = VecEnv::new(name, NUM_ENVS).expect("built-in env");
        let mut actions = vec![pool.template(); NUM_ENVS];
        envs.reset(SEED);
        let (calls, secs) = measure(&config, |calls| {
            run_vector(&mut envs, &pool, &mut actions, calls)
        });
        results.push(result_json(name, NUM_ENVS, calls * NUM_ENVS as u64, &secs));
    }
    println!(
        "{{\"impl\":\"reflex\",\"repeats\":{},\"target_secs\":{},\"results\":[{}]}}",
        config.repeats,
        config.target.as_secs_f64(),
        results.join(",")
    );
}
