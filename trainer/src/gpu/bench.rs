//! Update throughput on a device for the shapes of the GPU benchmark
//! (BENCHMARKS.md, GPU section), the device's matmul peak, and an end-to-end
//! vectorized CartPole run. `scripts/bench_gpu_torch.py` runs the same shapes
//! in PyTorch for the side-by-side.
//!
//! Every case runs the trainer's own update code (`Dqn::update`, TD3's
//! `train_after`, `Drqn::update`), replay sampling and uploads included, on
//! replay filled with the env's transitions under random actions. The clock
//! starts after warm-up updates and stops after a device synchronization.
//!
//! FLOP counts are the matmuls' (2·m·n·k each) of one update, forward and
//! backward, as the comment on each case derives them; elementwise work is
//! left out, so the achieved rate is a lower bound on what the device did.

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use reflex_msgs::{Action, ActionSpace};
use reflex_sim::{make, SimRng, VecEnv};
use serde::Serialize;

use crate::algo::ddpg::{Ddpg, DdpgConfig};
use crate::algo::dqn::{Dqn, DqnConfig};
use crate::algo::drqn::{Drqn, DrqnConfig};
use crate::algo::population::DqnPopulation;
use crate::algo::population_ac::DdpgPopulation;
use crate::algo::population_drqn::DrqnPopulation;
use crate::algo::Agent;
use crate::nn::NetConfig;
use crate::replay::EnvStep;
use crate::schedule::Schedule;
use crate::TrainError;

/// The benchmark's cases, by name.
pub const CASES: &[&str] = &[
    "matmul-4096",
    "dqn-256x256-b256",
    "dqn-256x256-b4096",
    "dqn-256x256-b256-pop16",
    "td3-400x300-b256",
    "td3-400x300-b256-pop16",
    "lstm512-b64-t80-burn40",
    "lstm512-b64-t80-burn40-pop16",
    "e2e-cartpole-64envs",
];

/// How long and how big.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Measured time per case (after warm-up), seconds.
    pub seconds: f64,
    /// Scale the shapes down (widths, batches, lengths ÷ 8) for a smoke run on
    /// a CPU; the numbers are then not the benchmark's.
    pub small: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            seconds: 5.0,
            small: false,
        }
    }
}

/// One measured case.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// Case name (see [`CASES`]).
    pub case: String,
    /// Shape details.
    pub shape: String,
    /// What `rate` counts: updates, matmuls or env steps per second.
    pub unit: String,
    /// Iterations timed.
    pub iterations: u64,
    /// Seconds they took.
    pub seconds: f64,
    /// Iterations per second.
    pub rate: f64,
    /// Matmul FLOPs per iteration (0 where not counted).
    pub flop_per_iteration: f64,
    /// Achieved TFLOP/s (matmul FLOPs only).
    pub tflops: f64,
    /// Updates per second in the end-to-end case (0 elsewhere).
    pub updates_per_s: f64,
    /// Mean µs per update of each phase, from a separate synchronized run
    /// (DQN cases only).
    pub phases_us: Vec<(String, f64)>,
}

fn sync(device: &Device) -> Result<(), TrainError> {
    device.synchronize()?;
    Ok(())
}

/// Runs `step` `warmup` times, then for about `seconds`, in rounds of `chunk`
/// with a synchronization after each round; returns (iterations, seconds).
fn clocked(
    device: &Device,
    warmup: u64,
    chunk: u64,
    seconds: f64,
    mut step: impl FnMut() -> Result<(), TrainError>,
) -> Result<(u64, f64), TrainError> {
    for _ in 0..warmup {
        step()?;
    }
    sync(device)?;
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs_f64(seconds) || n == 0 {
        for _ in 0..chunk {
            step()?;
        }
        sync(device)?;
        n += chunk;
    }
    Ok((n, start.elapsed().as_secs_f64()))
}

fn row(case: &str, shape: String, unit: &str, (n, secs): (u64, f64), flop: f64) -> BenchRow {
    let rate = n as f64 / secs;
    BenchRow {
        case: case.to_string(),
        shape,
        unit: unit.to_string(),
        iterations: n,
        seconds: secs,
        rate,
        flop_per_iteration: flop,
        tflops: rate * flop / 1e12,
        updates_per_s: 0.0,
        phases_us: Vec::new(),
    }
}

/// Σ in·out over a chain of dense layers.
fn dense_macs(widths: &[usize]) -> f64 {
    widths.windows(2).map(|w| (w[0] * w[1]) as f64).sum()
}

/// Stores `steps` transitions of `env_name` under uniformly random actions
/// through `observe` (episodes reset as they end).
pub(crate) fn fill_random(
    env_name: &str,
    steps: u64,
    seed: u64,
    mut observe: impl FnMut(&EnvStep<'_>) -> Result<(), TrainError>,
) -> Result<(), TrainError> {
    let mut env = make(env_name)?;
    let mut rng = SimRng::seed(seed);
    let mut obs = env.reset(Some(seed)).to_vec();
    let space = env.action_space().clone();
    for _ in 0..steps {
        let action = reflex_sim::random_action(&space, &mut rng);
        let result = env.step(&action)?;
        let next = env.obs().to_vec();
        observe(&EnvStep::new(&obs, &action, &result, &next))?;
        obs = if result.done() {
            env.reset(None).to_vec()
        } else {
            next
        };
    }
    Ok(())
}

/// The DQN update of the benchmark: CartPole (4 → 2), MLP `hidden`×`hidden`
/// ReLU, plain DQN (no Double, no dueling), Huber loss, gradient clipping at
/// 10, Adam, hard target copy every 100 updates.
fn dqn_config(hidden: usize, batch: usize) -> DqnConfig {
    DqnConfig {
        batch_size: batch,
        double: false,
        learning_starts: 0,
        net: NetConfig {
            hidden: vec![hidden, hidden],
            dueling: false,
            ..NetConfig::default()
        },
        ..DqnConfig::default()
    }
}

fn bench_dqn(
    case: &str,
    batch: usize,
    o: &BenchOptions,
    device: &Device,
) -> Result<BenchRow, TrainError> {
    let (hidden, batch) = if o.small {
        (32, batch / 8)
    } else {
        (256, batch)
    };
    let mut agent = Dqn::new(dqn_config(hidden, batch), 4, 2, 0, device)?;
    fill_random("cartpole", 20_000, 1, |s| agent.observe(s))?;
    let mut k = 0u64;
    let timed = clocked(device, 20, 20, o.seconds, || {
        agent.update(1.0)?;
        k += 1;
        if k.is_multiple_of(100) {
            agent.update_target()?;
        }
        Ok(())
    })?;
    // The same update once more with phase timers (synchronized), for the
    // split of its time.
    agent.profile = Some(crate::gpu::Phases::new(device));
    for _ in 0..200 {
        agent.update(1.0)?;
    }
    let phases = agent
        .profile
        .take()
        .map(|p| p.per_update_us())
        .unwrap_or_default();
    // Online forward + backward (2× the forward's products: input and weight
    // gradients) + target forward: 4 forwards' worth of 2·B·Σ in·out.
    let flop = 4.0 * 2.0 * batch as f64 * dense_macs(&[4, hidden, hidden, 2]);
    let mut r = row(
        case,
        format!("4-{hidden}-{hidden}-2, batch {batch}, Huber, clip 10, Adam, target net"),
        "updates/s",
        timed,
        flop,
    );
    r.phases_us = phases
        .into_iter()
        .map(|(n, us)| (n.to_string(), us))
        .collect();
    Ok(r)
}

/// The DQN b256 update for a population of 16 learners (seeds 0–15) on
/// stacked networks ([`crate::algo::population`]): one batched update
/// updates all 16, each on its own replay. The rate counts member updates,
/// so it compares with the single learner's updates/s directly.
fn bench_population(o: &BenchOptions, device: &Device) -> Result<BenchRow, TrainError> {
    let (hidden, batch, members) = if o.small { (32, 32, 4) } else { (256, 256, 16) };
    let seeds: Vec<u64> = (0..members as u64).collect();
    let mut population = DqnPopulation::new(dqn_config(hidden, batch), 4, 2, &seeds, device)?;
    for (k, member) in population.members.iter_mut().enumerate() {
        fill_random("cartpole", 20_000, 1 + k as u64, |s| member.observe(s))?;
    }
    let mut k = 0u64;
    let (n, secs) = clocked(device, 10, 10, o.seconds, || {
        population.update(1.0)?;
        k += 1;
        if k.is_multiple_of(100) {
            population.update_target()?;
        }
        Ok(())
    })?;
    let flop = 4.0 * 2.0 * batch as f64 * dense_macs(&[4, hidden, hidden, 2]);
    Ok(row(
        "dqn-256x256-b256-pop16",
        format!(
            "{members} learners × (4-{hidden}-{hidden}-2, batch {batch}), stacked; {:.1} population updates/s",
            n as f64 / secs
        ),
        "member updates/s",
        (n * members as u64, secs),
        flop,
    ))
}

/// The TD3 update of the benchmark: Pendulum (3 → 1), actor and twin
/// critics `h1`×`h2` ReLU, batch `batch`, TD3's defaults (policy delay 2,
/// target smoothing, Polyak targets, no clipping), and its matmul FLOPs per
/// update.
fn td3_config(o: &BenchOptions) -> (DdpgConfig, String, f64) {
    let (h1, h2, batch) = if o.small {
        (50, 38, 32)
    } else {
        (400, 300, 256)
    };
    let net = NetConfig {
        hidden: vec![h1, h2],
        ..NetConfig::default()
    };
    let config = DdpgConfig {
        batch_size: batch,
        learning_starts: 0,
        train_freq: 1,
        gradient_steps: 1,
        actor: net.clone(),
        critic: net,
        ..DdpgConfig::td3()
    };
    // Per update: two critics forward + backward (3 forwards' worth each),
    // the target actor and two target critics forward; every second update
    // the actor forward + backward (3) through critic 1 (forward + input
    // gradient, 2): 8 C + 1 A + (3 A + 2 C)/2 forwards of 2·B·Σ in·out.
    let (a, c) = (dense_macs(&[3, h1, h2, 1]), dense_macs(&[4, h1, h2, 1]));
    let flop = 2.0 * batch as f64 * (9.0 * c + 2.5 * a);
    let shape =
        format!("Pendulum 3→1, actor and 2 critics {h1}×{h2}, batch {batch}, policy delay 2");
    (config, shape, flop)
}

fn pendulum_bounds() -> Result<reflex_msgs::BoxSpace, TrainError> {
    match make("pendulum")?.action_space() {
        ActionSpace::Box(bounds) => Ok(bounds.clone()),
        ActionSpace::Discrete { .. } => {
            Err(TrainError::Config("pendulum has a Box action space".into()))
        }
    }
}

fn bench_td3(o: &BenchOptions, device: &Device) -> Result<BenchRow, TrainError> {
    let (config, shape, flop) = td3_config(o);
    let mut agent = Ddpg::new(config, true, 3, &pendulum_bounds()?, 0, device)?;
    fill_random("pendulum", 20_000, 1, |s| agent.observe(s))?;
    let mut step = 20_000u64;
    let timed = clocked(device, 20, 20, o.seconds, || {
        step += 1;
        agent.train_after(step, u64::MAX)?;
        Ok(())
    })?;
    Ok(row("td3-400x300-b256", shape, "updates/s", timed, flop))
}

/// The TD3 update for a population of 16 learners (seeds 0–15) on stacked
/// actors and critics ([`crate::algo::population_ac`]), each on its own
/// replay and smoothing noise. The rate counts member updates.
fn bench_td3_population(o: &BenchOptions, device: &Device) -> Result<BenchRow, TrainError> {
    let (config, shape, flop) = td3_config(o);
    let members = if o.small { 4 } else { 16 };
    let seeds: Vec<u64> = (0..members as u64).collect();
    let mut population = DdpgPopulation::new(config, true, 3, &pendulum_bounds()?, &seeds, device)?;
    for (k, member) in population.members.iter_mut().enumerate() {
        fill_random("pendulum", 20_000, 1 + k as u64, |s| member.observe(s))?;
    }
    let (n, secs) = clocked(device, 10, 10, o.seconds, || {
        population.update(1.0)?;
        Ok(())
    })?;
    Ok(row(
        "td3-400x300-b256-pop16",
        format!(
            "{members} learners × ({shape}), stacked; {:.1} population updates/s",
            n as f64 / secs
        ),
        "member updates/s",
        (n * members as u64, secs),
        flop,
    ))
}

/// The DRQN update's shape: (config, description, FLOP per update).
fn lstm_config(o: &BenchOptions) -> (DrqnConfig, String, f64) {
    let (hidden, batch, len, burn_in) = if o.small {
        (64, 8, 10, 5)
    } else {
        (512, 64, 40, 40)
    };
    let config = DrqnConfig {
        batch_size: batch,
        seq_len: len,
        burn_in,
        lstm_hidden: hidden,
        // Filled by acting at ε = 1 below; updates are called directly.
        learning_starts: u64::MAX,
        exploration: Schedule::linear(1.0, 1.0, 1.0),
        n_step: 1,
        net: NetConfig {
            hidden: vec![hidden],
            dueling: true,
            ..NetConfig::default()
        },
        ..DrqnConfig::default()
    };
    // Per update, over the window's burn_in + len + 1 positions: the online
    // LSTM forward and backward on the steps after the burn-in and forward on
    // the burn-in; the target forward on all; the head likewise on the
    // learning steps. LSTM step: 2·B·(in + H)·4H.
    let positions = (burn_in + len + 1) as f64;
    let learn = (len + 1) as f64;
    let cell = 2.0 * batch as f64 * ((4 + hidden) * 4 * hidden) as f64;
    let head = 2.0 * batch as f64 * dense_macs(&[hidden, hidden, 3]);
    let flop = cell * (positions + 2.0 * learn + positions) + head * (3.0 * learn + learn);
    let shape = format!(
        "DRQN, LSTM {hidden} + dueling head {hidden}, batch {batch} × ({burn_in} burn-in + {len} + 1) steps"
    );
    (config, shape, flop)
}

/// A DRQN learner's sequence replay filled by acting (random actions at
/// ε = 1: replay stores steps with the acting state).
fn filled_drqn(agent: &mut Drqn) -> Result<(), TrainError> {
    let mut env = make("cartpole-masked")?;
    crate::algo::train(agent, env.as_mut(), 20_000, 1, 0, &mut Quiet)?;
    Ok(())
}

fn bench_lstm(o: &BenchOptions, device: &Device) -> Result<BenchRow, TrainError> {
    let (config, shape, flop) = lstm_config(o);
    let mut agent = Drqn::new(config, 2, 2, 0, device)?;
    filled_drqn(&mut agent)?;
    let timed = clocked(device, 5, 5, o.seconds, || {
        agent.update(1.0)?;
        Ok(())
    })?;
    Ok(row(
        "lstm512-b64-t80-burn40",
        shape,
        "updates/s",
        timed,
        flop,
    ))
}

/// The DRQN update for a population of 16 learners: one stacked unroll
/// updates all 16. Member 0's replay, filled by acting, is copied to the
/// others (acting 16 × 20k steps would cost more than the measurement);
/// each member samples it with its own generator.
fn bench_lstm_population(o: &BenchOptions, device: &Device) -> Result<BenchRow, TrainError> {
    let (config, shape, flop) = lstm_config(o);
    let members = if o.small { 4 } else { 16 };
    let seeds: Vec<u64> = (0..members as u64).collect();
    let mut population = DrqnPopulation::new(config, 2, 2, &seeds, device)?;
    let (first, rest) = population.members.split_at_mut(1);
    filled_drqn(&mut first[0])?;
    if let crate::replay::Replay::Sequence(filled) = &first[0].replay {
        for member in rest {
            member.replay = crate::replay::Replay::Sequence(filled.clone());
            member.norm.clone_from(&first[0].norm);
        }
    }
    let (n, secs) = clocked(device, 3, 3, o.seconds, || {
        population.update(1.0)?;
        Ok(())
    })?;
    Ok(row(
        "lstm512-b64-t80-burn40-pop16",
        format!(
            "{members} learners × ({shape}), stacked; {:.2} population updates/s",
            n as f64 / secs
        ),
        "member updates/s",
        (n * members as u64, secs),
        flop,
    ))
}

struct Quiet;
impl crate::algo::Observer for Quiet {
    fn episode(&mut self, _: &crate::algo::Progress, _: f64, _: u32) {}
}

fn bench_matmul(o: &BenchOptions, device: &Device) -> Result<BenchRow, TrainError> {
    let n = if o.small { 512 } else { 4096 };
    let mut rng = SimRng::seed(3);
    let data: Vec<f32> = (0..n * n).map(|_| rng.next_f64() as f32 - 0.5).collect();
    let a = Tensor::from_vec(data, (n, n), device)?;
    let b = a.t()?.contiguous()?;
    let timed = clocked(device, 3, 10, o.seconds.min(3.0), || {
        let _ = a.matmul(&b)?;
        Ok(())
    })?;
    Ok(row(
        "matmul-4096",
        format!("f32 {n}×{n} · {n}×{n}"),
        "matmuls/s",
        timed,
        2.0 * (n as f64).powi(3),
    ))
}

/// CartPole DQN with `envs` CPU envs feeding the device's learner: per vector
/// step one batched greedy forward (one upload of all observations, one
/// download of the argmaxes), ε-greedy on the host, the envs' steps, their
/// transitions into replay, and one update (batch 256) per vector step once
/// 1,000 transitions are stored.
fn bench_e2e(o: &BenchOptions, device: &Device) -> Result<BenchRow, TrainError> {
    let (hidden, envs) = if o.small { (32, 8) } else { (256, 64) };
    let batch = if o.small { 32 } else { 256 };
    let mut config = dqn_config(hidden, batch);
    config.learning_starts = 1_000;
    config.exploration = Schedule::linear(1.0, 0.05, 0.1);
    let mut agent = Dqn::new(config, 4, 2, 0, device)?;
    let mut vec_env = VecEnv::new("cartpole", envs)?;
    let mut obs = vec_env.reset(0).to_vec();
    let mut rng = SimRng::seed(9);
    let total = 1_000_000u64;
    let (mut env_steps, mut updates) = (0u64, 0u64);
    let mut actions = Vec::with_capacity(envs);
    let mut vector_step = || -> Result<(), TrainError> {
        let epsilon = agent.exploration(env_steps, total);
        let greedy = agent.greedy_batch(&obs, envs)?;
        actions.clear();
        actions.extend(greedy.iter().map(|&g| {
            Action::Discrete(if rng.next_f64() < epsilon {
                rng.below(2) as u32
            } else {
                g
            })
        }));
        let steps = vec_env.step(&actions)?.to_vec();
        for (i, step) in steps.iter().enumerate() {
            let row = i * 4..(i + 1) * 4;
            let next = vec_env
                .final_obs(i)
                .map_or_else(|| vec_env.obs()[row.clone()].to_vec(), <[f32]>::to_vec);
            agent.observe(&EnvStep::new(&obs[row], &actions[i], step, &next))?;
        }
        obs.copy_from_slice(vec_env.obs());
        env_steps += envs as u64;
        if env_steps >= 1_000 {
            agent.update(1.0)?;
            updates += 1;
            if updates.is_multiple_of(100) {
                agent.update_target()?;
            }
        }
        Ok(())
    };
    // Warm-up includes the learning_starts fill.
    let timed = clocked(
        device,
        1_000 / envs as u64 + 20,
        10,
        o.seconds,
        &mut vector_step,
    )?;
    let mut r = row(
        "e2e-cartpole-64envs",
        format!("{envs} CartPole envs on CPU, DQN 4-{hidden}-{hidden}-2 learner, 1 update (batch {batch}) per vector step"),
        "env steps/s",
        (timed.0 * envs as u64, timed.1),
        0.0,
    );
    r.updates_per_s = timed.0 as f64 / timed.1;
    Ok(r)
}

/// Runs the named `cases` (all of [`CASES`] when empty) on `device`;
/// `progress` is told each case's name as it starts.
pub fn run(
    device: &Device,
    cases: &[String],
    options: &BenchOptions,
    mut progress: impl FnMut(&str),
) -> Result<Vec<BenchRow>, TrainError> {
    let wanted: Vec<&str> = if cases.is_empty() {
        CASES.to_vec()
    } else {
        cases.iter().map(String::as_str).collect()
    };
    let mut rows = Vec::new();
    for case in wanted {
        progress(case);
        rows.push(match case {
            "matmul-4096" => bench_matmul(options, device)?,
            "dqn-256x256-b256" => bench_dqn(case, 256, options, device)?,
            "dqn-256x256-b4096" => bench_dqn(case, 4096, options, device)?,
            "dqn-256x256-b256-pop16" => bench_population(options, device)?,
            "td3-400x300-b256" => bench_td3(options, device)?,
            "td3-400x300-b256-pop16" => bench_td3_population(options, device)?,
            "lstm512-b64-t80-burn40" => bench_lstm(options, device)?,
            "lstm512-b64-t80-burn40-pop16" => bench_lstm_population(options, device)?,
            "e2e-cartpole-64envs" => bench_e2e(options, device)?,
            other => {
                return Err(TrainError::Config(format!(
                    "unknown benchmark case `{other}` (known: {})",
                    CASES.join(", ")
                )))
            }
        });
    }
    Ok(rows)
}

/// The rows as a markdown table.
pub fn to_markdown(device: &str, rows: &[BenchRow]) -> String {
    let mut out = format!(
        "reflex on {device}\n\n| case | shape | rate | unit | matmul TFLOP/s |\n|---|---|---:|---|---:|\n"
    );
    for r in rows {
        let rate = if r.updates_per_s > 0.0 {
            format!("{:.0} ({:.0} updates/s)", r.rate, r.updates_per_s)
        } else {
            format!("{:.1}", r.rate)
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.3} |\n",
            r.case, r.shape, rate, r.unit, r.tflops
        ));
    }
    for r in rows.iter().filter(|r| !r.phases_us.is_empty()) {
        let total: f64 = r.phases_us.iter().map(|(_, us)| us).sum();
        out.push_str(&format!(
            "\n{}: where an update's time goes (synchronized at each boundary; {total:.0} µs per update in all)\n\n| phase | µs per update | share |\n|---|---:|---:|\n",
            r.case
        ));
        for (name, us) in &r.phases_us {
            out.push_str(&format!(
                "| {name} | {us:.1} | {:.0}% |\n",
                100.0 * us / total
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_runs_small_on_cpu() {
        let options = BenchOptions {
            seconds: 0.05,
            small: true,
        };
        let rows = run(&Device::Cpu, &[], &options, |_| {}).unwrap();
        assert_eq!(rows.len(), CASES.len());
        for r in &rows {
            assert!(
                r.iterations > 0 && r.rate.is_finite() && r.rate > 0.0,
                "{r:?}"
            );
        }
        let e2e = rows
            .iter()
            .find(|r| r.case == "e2e-cartpole-64envs")
            .unwrap();
        assert!(e2e.updates_per_s > 0.0, "{e2e:?}");
        let table = to_markdown("Cpu", &rows);
        assert!(table.contains("td3-400x300-b256"), "{table}");
        let dqn = rows.iter().find(|r| r.case == "dqn-256x256-b256").unwrap();
        let phases: Vec<&str> = dqn.phases_us.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(phases.len(), 6, "{phases:?}");
        assert!(
            phases.contains(&"optimizer") && phases.contains(&"upload"),
            "{phases:?}"
        );
        assert!(table.contains("where an update's time goes"), "{table}");
        assert!(run(&Device::Cpu, &["nope".into()], &options, |_| {}).is_err());
    }
}
