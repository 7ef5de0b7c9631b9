//! `reflex-train`: train a policy on a built-in simulator.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::Device;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use reflex_daemon::Policy;
use reflex_msgs::PolicySpec;
use reflex_sim::{make, Env};
use reflex_trainer::algo::{self, evaluate, train, Agent, Observer, Progress};
use reflex_trainer::checkpoint;
use reflex_trainer::eval::evaluate_policy;
use reflex_trainer::export::{
    export_beside_checkpoint, policy_for_checkpoint, spec_for, POLICY_FILE,
};
use reflex_trainer::run::{resolve, RunConfig};
use reflex_trainer::TrainError;
use serde::{Deserialize, Serialize};

mod fleet;
mod population;

#[derive(Parser)]
#[command(
    name = "reflex-train",
    version,
    about = "Train robot control policies on reflex's simulators"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train from a preset (trainer/presets/<env>-<algo>.toml), a config file and overrides.
    Run {
        /// Env name: cartpole, acrobot, mountaincar (discrete), pendulum,
        /// mountaincarcontinuous (continuous), a Gymnasium id, or a -masked
        /// variant [default: cartpole, or the config file's].
        #[arg(long)]
        env: Option<String>,
        /// Algorithm: dqn, drqn (discrete actions); ddpg, td3, naf (continuous)
        /// [default: dqn, or the config file's].
        #[arg(long)]
        algo: Option<String>,
        /// An LSTM over the history in front of every network (ddpg, td3, naf; set
        /// it up in the `[lstm]` table). Presets for -masked envs may turn it
        /// on; `--set recurrent=false` turns it off.
        #[arg(long)]
        recurrent: bool,
        /// Seed of everything random in the run.
        #[arg(long)]
        seed: Option<u64>,
        /// Env steps to train for (default: the preset's).
        #[arg(long)]
        steps: Option<u64>,
        /// Run folder (config.toml, metrics.csv, eval.json).
        #[arg(long, default_value = "runs/latest")]
        out: PathBuf,
        /// A TOML file with any of the run's settings (unknown keys are errors).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override one setting, e.g. `--set dqn.gamma=0.98` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Logs only, no progress bar.
        #[arg(long)]
        quiet: bool,
        /// Compute threads for candle's CPU kernels (RAYON_NUM_THREADS, if set, wins).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Compute device: cpu, cuda or cuda:N (needs a build with the `cuda` feature).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Train this many seeds at once (seed, seed + 1, …) as one
        /// population on stacked networks, each into OUT/member-K (dqn, drqn, ddpg, td3).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        population: u16,
    },
    /// Continue a run from its newest checkpoint (after a crash or kill); a
    /// population's folder resumes all its members together.
    Resume {
        /// The run folder given to `run --out`.
        run: PathBuf,
        /// Logs only, no progress bar.
        #[arg(long)]
        quiet: bool,
        /// Compute threads for candle's CPU kernels.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Compute device: cpu, cuda or cuda:N (needs a build with the `cuda` feature).
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Evaluate a checkpoint, or an exported policy through the robots' runtime
    /// (tract), greedily; the eval.json record is the last line of stdout.
    Eval {
        /// A checkpoint folder (runs/NAME/checkpoints/step-…) or a run folder (its newest).
        #[arg(long, required_unless_present = "policy", conflicts_with = "policy")]
        checkpoint: Option<PathBuf>,
        /// An exported ONNX policy, run with the daemon's runtime.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Env to evaluate on [default: the run's, or the policy spec's].
        #[arg(long)]
        env: Option<String>,
        /// Greedy episodes.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
        episodes: u32,
        /// Seed of the first episode (episode k uses seed + k).
        #[arg(long, default_value_t = 1_000_000)]
        seed: u64,
        /// Compute device: cpu, cuda or cuda:N (needs a build with the `cuda` feature).
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Export a run's policy (its newest checkpoint, or --checkpoint) to ONNX.
    Export {
        /// The run folder given to `run --out`.
        run: PathBuf,
        /// A checkpoint folder of that run [default: the newest].
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Output file [default: RUN/policy.onnx].
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// The learner service: robots' transitions in over zenoh, signed policies out.
    Serve(ServeArgs),
    /// The fleet loop on one machine: the learner, simulated robots and their
    /// reflexd daemons as separate processes on loopback, until solved.
    Fleet(FleetArgs),
    /// A zenoh router for a fleet across machines: the learner and the robots
    /// connect to it in client mode. Runs until SIGINT/SIGTERM.
    Router(RouterArgs),
    /// The GPU path's checks (run by scripts/gpu-check.sh on the GPU machine):
    /// CPU-vs-device parity of every network, the optimizer and every learner's
    /// first update; update throughput of the GPU benchmark's shapes.
    Gpu(GpuArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Env the robots run (its built-in simulator evaluates the learner).
    #[arg(long)]
    env: Option<String>,
    /// Algorithm.
    #[arg(long)]
    algo: Option<String>,
    /// Seed of the learner's weights and sampling.
    #[arg(long)]
    seed: Option<u64>,
    /// Fleet name (policies go to reflex/<fleet>/policy).
    #[arg(long, default_value = "default")]
    fleet: String,
    /// zenoh endpoint to listen on (repeatable); robots connect here [default:
    /// tcp/127.0.0.1:7447 in peer mode, none in client mode].
    #[arg(long, conflicts_with = "zenoh_config")]
    listen: Vec<String>,
    /// zenoh endpoint to connect to (repeatable), e.g. a router.
    #[arg(long, conflicts_with = "zenoh_config")]
    connect: Vec<String>,
    /// zenoh mode: peer, or client (through a router).
    #[arg(long, default_value = "peer", value_parser = ["peer", "client"], conflicts_with = "zenoh_config")]
    mode: String,
    /// The zenoh session from a TOML file instead (mode, listen, connect, scouting: the
    /// keys of robot.toml's [transport.zenoh]; e.g. launch/zenoh/learner-client.toml).
    #[arg(long, value_name = "FILE")]
    zenoh_config: Option<PathBuf>,
    /// The network: zenoh, or ros2 (robots found by discovery: every reflexd
    /// `~/transitions` topic on the domain; policies go to their `~/policy_update`).
    #[arg(long, default_value = "zenoh", value_parser = ["zenoh", "ros2"])]
    transport: String,
    /// ROS 2 domain id, 0 to 232 [default: ROS_DOMAIN_ID, else 0].
    #[arg(long, value_parser = clap::value_parser!(u16).range(0..=232))]
    ros_domain: Option<u16>,
    /// Run folder (policy.onnx, learner.key/.pub, checkpoints, learner.json).
    #[arg(long, default_value = "runs/fleet")]
    out: PathBuf,
    /// A TOML file with any of the run's settings (unknown keys are errors).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override one setting, e.g. `--set dqn.gamma=0.98` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Samples per insert [default: the preset's gradient_steps·batch_size/train_freq].
    #[arg(long)]
    samples_per_insert: Option<f64>,
    /// Publish a signed policy every K updates.
    #[arg(long, default_value_t = 250)]
    publish_every: u64,
    /// Hard target update every this many updates [default: the local loop's].
    #[arg(long)]
    target_update_every: Option<u64>,
    /// Checkpoint every this many updates (0 = only at the end).
    #[arg(long, default_value_t = 5000)]
    checkpoint_every: u64,
    /// Greedy evaluation every this many updates (0 = never).
    #[arg(long, default_value_t = 500)]
    eval_every: u64,
    /// Stop after this many transitions received.
    #[arg(long)]
    max_transitions: Option<u64>,
    /// Stop when the greedy evaluation reaches this mean return [default: the env's
    /// threshold, 475 for CartPole].
    #[arg(long)]
    target_return: Option<f64>,
    /// Logs only, no progress bar.
    #[arg(long)]
    quiet: bool,
    /// After stopping, keep counting what robots still send until SIGINT/SIGTERM
    /// (what `fleet` uses for exact accounting).
    #[arg(long)]
    linger: bool,
    /// Compute threads for candle's CPU kernels.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Compute device: cpu, cuda or cuda:N (needs a build with the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(clap::Args)]
struct FleetArgs {
    /// Env the simulated robots run [default: the --config file's, else cartpole].
    #[arg(long)]
    env: Option<String>,
    /// The learner's algorithm: dqn or drqn (recurrent) for discrete actions;
    /// ddpg, td3 or naf for continuous ones [default: the --config file's, else dqn].
    #[arg(long, value_parser = ["dqn", "drqn", "ddpg", "td3", "naf"])]
    algo: Option<String>,
    /// The learner's settings from a TOML file (the format `run --config` reads;
    /// unknown keys are errors), passed to `serve --config`. The robots explore
    /// with its noise process; --env, --algo, --seed and --set apply over it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Number of simulated robots.
    #[arg(long, default_value_t = 2)]
    robots: u32,
    /// Run folder (robots/, logs/, policy.onnx, learner.json, summary.json).
    #[arg(long, default_value = "runs/fleet")]
    out: PathBuf,
    /// Fleet name.
    #[arg(long, default_value = "default")]
    fleet: String,
    /// Stop after this many transitions received (the env-step budget).
    #[arg(long, default_value_t = 100_000)]
    max_transitions: u64,
    /// Control rate of each robot, Hz.
    #[arg(long, default_value_t = 400.0)]
    rate_hz: f64,
    /// The learner's port on 127.0.0.1 [default: a free one].
    #[arg(long)]
    port: Option<u16>,
    /// Seed of the learner and of the robots' exploration [default: the --config
    /// file's, else 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Stop at this greedy mean return [default: 475 for CartPole, −200 for Pendulum].
    #[arg(long)]
    target_return: Option<f64>,
    /// Base ε of the Ape-X per-actor schedule (actor i: ε^(1 + 7 i / (N − 1))).
    #[arg(long, default_value_t = 0.4)]
    epsilon: f64,
    /// Continuous actions: the robots' action noise, `gaussian` (independent
    /// each tick) or `ou` (Ornstein–Uhlenbeck, correlated over ticks) [default:
    /// the learner's own noise process, from its preset and `--set`].
    #[arg(long, value_parser = ["gaussian", "ou"])]
    noise: Option<String>,
    /// Continuous actions: the noise added each tick, as a fraction of each
    /// action's half range [default: the learner's σ (OU: σ·√dt)].
    #[arg(long)]
    sigma: Option<f64>,
    /// Continuous actions with `--noise ou`: the pull back to zero per tick, in
    /// (0, 1] [default: the learner's θ·dt].
    #[arg(long)]
    ou_theta: Option<f64>,
    /// Override one learner setting (repeatable), passed to `serve --set`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Extra `serve` options, e.g. `--serve-arg=--publish-every=100` (repeatable);
    /// not --config, --env, --algo, --seed or --set, which the robots must know too.
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    serve_args: Vec<String>,
    /// Greedy episodes of the final evaluation of policy.onnx [default: the
    /// learner's `eval_episodes` (20), the same episodes its "solved" was decided on].
    #[arg(long)]
    eval_episodes: Option<u32>,
    /// Keep the previous run's checkpoints and resume from them.
    #[arg(long)]
    resume: bool,
    /// The network between learner, daemons and simulators: zenoh (loopback TCP,
    /// explicit endpoints) or ros2 (DDS: multicast discovery on the machine's
    /// interfaces, so use a domain of your own or a network namespace).
    #[arg(long, default_value = "zenoh", value_parser = ["zenoh", "ros2"])]
    transport: String,
    /// ROS 2 domain id for --transport ros2, 0 to 232 [default: ROS_DOMAIN_ID,
    /// else 0].
    #[arg(long, value_parser = clap::value_parser!(u16).range(0..=232))]
    ros_domain: Option<u16>,
}

#[derive(clap::Args)]
struct GpuArgs {
    /// parity: compare against CPU (with --device cpu, candle's primitives
    /// against this crate's CPU kernels); bench: throughput.
    #[arg(value_parser = ["parity", "bench"])]
    what: String,
    /// The device under test: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Folder for the results (parity.md/.json or bench.md/.json).
    #[arg(long, default_value = "runs/gpu")]
    out: PathBuf,
    /// bench: one case (repeatable) [default: all].
    #[arg(long = "case")]
    cases: Vec<String>,
    /// bench: measured seconds per case.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// bench: shapes divided by 8, for a smoke run on a CPU.
    #[arg(long)]
    small: bool,
    /// Compute threads for candle's CPU kernels.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(clap::Args)]
struct RouterArgs {
    /// Endpoint to listen on (repeatable) [default: tcp/127.0.0.1:7447 unless
    /// --config gives listen endpoints].
    #[arg(long)]
    listen: Vec<String>,
    /// Another router to connect to (repeatable).
    #[arg(long)]
    connect: Vec<String>,
    /// A zenoh configuration file (JSON5, the format zenohd reads, e.g.
    /// launch/zenoh/router.json5); its mode must be "router" or unset. --listen and
    /// --connect replace its endpoints.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn threads_from(threads: usize) {
    // RAYON_NUM_THREADS, when set, wins over --threads.
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(threads);
    reflex_trainer::set_compute_threads(threads);
}

fn main() {
    reflex_trainer::keep_freed_memory();
    // The trainer library's warnings (e.g. a CUDA graph that could not be
    // captured) on stderr; RUST_LOG replaces the filter (other crates' logs
    // stay off unless it names them).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off,reflex_trainer=warn")),
        )
        .with_writer(std::io::stderr)
        // No colour codes in a log file (fleet's, or a service's journal).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            env,
            algo,
            recurrent,
            seed,
            steps,
            out,
            config,
            sets,
            quiet,
            threads,
            device,
            population: members,
        } => {
            let mut explicit = toml::Table::new();
            if recurrent {
                explicit.insert("recurrent".into(), true.into());
            }
            if let Some(env) = env {
                explicit.insert("env".into(), env.into());
            }
            if let Some(algo) = algo {
                explicit.insert("algo".into(), algo.into());
            }
            if let Some(seed) = seed {
                explicit.insert("seed".into(), toml::Value::Integer(seed as i64));
            }
            if let Some(steps) = steps {
                // TOML integers are i64: beyond that is "forever" either way.
                let steps = i64::try_from(steps).unwrap_or(i64::MAX);
                explicit.insert("steps".into(), toml::Value::Integer(steps));
            }
            threads_from(threads);
            reflex_trainer::device(&device)
                .map_err(anyhow::Error::from)
                .and_then(|device| {
                    let config = resolve(config.as_deref(), &sets, &explicit)?;
                    if members > 1 {
                        population::run_population(
                            &config,
                            &out,
                            quiet,
                            usize::from(members),
                            &device,
                        )
                    } else {
                        run(&config, &out, quiet, false, &device)
                    }
                })
        }
        Command::Resume {
            run: dir,
            quiet,
            threads,
            device,
        } => {
            threads_from(threads);
            reflex_trainer::device(&device)
                .map_err(anyhow::Error::from)
                .and_then(|device| {
                    if population::is_population(&dir) {
                        population::resume_population(&dir, quiet, &device)
                    } else {
                        run(&read_config(&dir)?, &dir, quiet, true, &device)
                    }
                })
        }
        Command::Eval {
            checkpoint,
            policy,
            env,
            episodes,
            seed,
            device,
        } => match (checkpoint, policy) {
            (_, Some(policy)) => eval_policy(&policy, env, episodes, seed),
            (Some(checkpoint), None) => reflex_trainer::device(&device)
                .map_err(anyhow::Error::from)
                .and_then(|device| eval(&checkpoint, env, episodes, seed, &device)),
            (None, None) => Err(anyhow::anyhow!("eval needs --checkpoint or --policy")),
        },
        Command::Export {
            run,
            checkpoint,
            output,
        } => export(&run, checkpoint, output),
        Command::Serve(args) => serve(args),
        Command::Fleet(args) => fleet::fleet(args),
        Command::Router(args) => router(args),
        Command::Gpu(args) => gpu(args),
    };
    if let Err(e) = result {
        eprintln!("error: {}", reflex_msgs::error_report(e.as_ref()));
        std::process::exit(2);
    }
}

/// `reflex-train gpu parity|bench`.
fn gpu(args: GpuArgs) -> anyhow::Result<()> {
    use reflex_trainer::gpu::{bench, parity};
    threads_from(args.threads);
    let device = reflex_trainer::device(&args.device)?;
    fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let write = |name: &str, text: &str| -> anyhow::Result<()> {
        let path = args.out.join(name);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    let started = Instant::now();
    let tell = |case: &str| eprintln!("[{:>6.1} s] {case}", started.elapsed().as_secs_f64());
    if args.what == "parity" {
        let report = parity::run(&device, tell)?;
        let table = report.to_markdown();
        write("parity.md", &table)?;
        write("parity.json", &serde_json::to_string_pretty(&report)?)?;
        println!("{table}");
        if !report.passed() {
            bail!(
                "{} parity checks failed (see {})",
                report.failures().len(),
                args.out.display()
            );
        }
    } else {
        let options = bench::BenchOptions {
            seconds: args.seconds,
            small: args.small,
        };
        let rows = bench::run(&device, &args.cases, &options, tell)?;
        let table = bench::to_markdown(&format!("{device:?}"), &rows);
        write("bench.md", &table)?;
        write("bench.json", &serde_json::to_string_pretty(&rows)?)?;
        println!("{table}");
    }
    Ok(())
}

/// The final evaluation, as `eval.json` stores it.
#[derive(Serialize)]
struct EvalReport<'a> {
    mean_return: f64,
    std_return: f64,
    episodes: u32,
    env: &'a str,
    algo: &'a str,
    /// Env steps the evaluated weights trained for (not known for an ONNX
    /// file: see `updates`).
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<u64>,
    /// Gradient updates they trained for, where known (an ONNX file's spec
    /// says, as its `training_step`).
    #[serde(skip_serializing_if = "Option::is_none")]
    updates: Option<u64>,
    /// The run's training seed (not known for an ONNX file).
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    /// Seed of the first evaluation episode (episode k: eval_seed + k).
    eval_seed: u64,
}

impl<'a> EvalReport<'a> {
    /// The record for `config`'s run from `episodes` greedy episodes seeded
    /// from `eval_seed`, of weights trained for `steps` env steps.
    fn new(
        config: &'a RunConfig,
        (mean_return, std_return): (f64, f64),
        episodes: u32,
        steps: u64,
        eval_seed: u64,
    ) -> Self {
        Self {
            mean_return,
            std_return,
            episodes,
            env: &config.env,
            algo: &config.algo,
            steps: Some(steps),
            updates: None,
            seed: Some(config.seed),
            eval_seed,
        }
    }
}

/// One row of `metrics.csv`: an episode end or a periodic evaluation.
#[derive(Serialize)]
struct MetricsRow {
    step: u64,
    episode_return: Option<f64>,
    eval_return: Option<f64>,
    loss: Option<f32>,
    q_mean: Option<f32>,
    exploration: f64,
    steps_per_s: f64,
}

struct RunObserver {
    metrics: csv::Writer<fs::File>,
    run_dir: PathBuf,
    eval_interval: u64,
    checkpoint_interval: u64,
    bar: ProgressBar,
    quiet: bool,
    /// A population member's name for its log lines (the population draws
    /// the progress bar).
    label: Option<String>,
    started: Instant,
    /// The step this process started from (a resume's checkpoint; else 0).
    started_at_step: u64,
    eval_env: Box<dyn Env>,
    eval_episodes: u32,
    eval_seed: u64,
    recent_returns: Vec<f64>,
    /// Spec of the exported policies (training step and checkpoint hash filled in
    /// per export).
    spec: PolicySpec,
    /// The best periodic evaluation so far (env step, mean return), whose
    /// policy is in `best/`.
    best: Option<(u64, f64)>,
}

/// Where a run keeps the policy of its best periodic evaluation.
const BEST_DIR: &str = "best";

/// Set by the first SIGINT or SIGTERM of a run: training stops after the
/// current step and saves a checkpoint (a second SIGINT ends the process at
/// once, with status 130).
static STOP: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicBool>> =
    std::sync::OnceLock::new();

/// Installs the run's SIGINT/SIGTERM handling (once per process).
fn stop_on_signal() -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    if STOP.get().is_some() {
        return Ok(());
    }
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A second signal (during the checkpoint, or the final evaluation after
    // the last step): out at once.
    for (signal, status) in [(SIGINT, 130), (SIGTERM, 143)] {
        signal_hook::flag::register_conditional_shutdown(signal, status, flag.clone())
            .context("installing signal handlers")?;
    }
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register(signal, flag.clone()).context("installing signal handlers")?;
    }
    let _ = STOP.set(flag);
    Ok(())
}

/// Whether a SIGINT or SIGTERM asked the run to stop.
fn stop_requested() -> bool {
    STOP.get()
        .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
}

/// The end of an interrupted run: a checkpoint at the step it reached (with
/// its policy beside it) and the metrics so far; then the process exits with
/// status 130, as an interrupted command does.
fn save_interrupted(
    out: &Path,
    agent: &mut dyn Agent,
    observer: &mut RunObserver,
) -> anyhow::Result<PathBuf> {
    observer.metrics.flush()?;
    // Interrupted right on a periodic checkpoint's step: it is saved already.
    let there = out
        .join("checkpoints")
        .join(format!("step-{:010}", agent.steps_done()));
    if there.join(POLICY_FILE).exists() {
        return Ok(there);
    }
    let saved = checkpoint::save(out, agent)?;
    export_beside_checkpoint(&saved, agent, &observer.spec)?;
    Ok(saved)
}

/// `best/selected.json`: which periodic evaluation picked `best/policy.onnx`.
#[derive(Serialize, Deserialize)]
struct BestSelected {
    /// Env step of the evaluation.
    step: u64,
    /// Its mean return.
    periodic_mean: f64,
    /// Its episodes.
    episodes: u32,
}

impl RunObserver {
    /// Exports the agent's policy to `best/policy.onnx` and records why.
    fn save_best(&mut self, step: u64, mean: f64, agent: &dyn Agent) -> Result<(), TrainError> {
        let dir = self.run_dir.join(BEST_DIR);
        fs::create_dir_all(&dir)
            .map_err(|e| TrainError::Export(format!("{}: {e}", dir.display())))?;
        let mut spec = self.spec.clone();
        spec.training_step = agent.updates();
        let at = format!("best policy at step {step}, not exported");
        reflex_trainer::algo::check_weights(agent, &at)?;
        let bytes = agent.to_onnx(&spec)?;
        reflex_trainer::export::write_atomic(&dir.join(POLICY_FILE), &bytes)?;
        let selected = BestSelected {
            step,
            periodic_mean: mean,
            episodes: self.eval_episodes,
        };
        let json = serde_json::to_string_pretty(&selected)
            .map_err(|e| TrainError::Export(format!("best/selected.json: {e}")))?;
        reflex_trainer::export::write_atomic(&dir.join("selected.json"), json.as_bytes())?;
        self.best = Some((step, mean));
        Ok(())
    }

    fn row(&mut self, progress: &Progress, episode_return: Option<f64>, eval_return: Option<f64>) {
        let update = progress.last_update;
        let row = MetricsRow {
            step: progress.step,
            episode_return,
            eval_return,
            loss: update.map(|u| u.loss),
            q_mean: update.map(|u| u.q_mean),
            exploration: progress.exploration,
            // This process's rate: a resumed run's earlier steps took their own time.
            steps_per_s: progress.step.saturating_sub(self.started_at_step) as f64
                / self.started.elapsed().as_secs_f64().max(1e-9),
        };
        if let Err(e) = self.metrics.serialize(row) {
            eprintln!("warning: metrics.csv: {e}");
        }
    }
}

impl Observer for RunObserver {
    fn interrupted(&self) -> bool {
        stop_requested()
    }

    fn episode(&mut self, progress: &Progress, episode_return: f64, _length: u32) {
        self.row(progress, Some(episode_return), None);
        self.recent_returns.push(episode_return);
        if self.label.is_some() {
            return;
        }
        let window = &self.recent_returns[self.recent_returns.len().saturating_sub(10)..];
        let mean = window.iter().sum::<f64>() / window.len() as f64;
        let loss = progress
            .last_update
            .map_or("-".to_string(), |u| format!("{:.4}", u.loss));
        self.bar.set_position(progress.step);
        self.bar.set_message(format!(
            "return(10) {mean:.1}  explore {:.3}  loss {loss}",
            progress.exploration
        ));
    }

    fn periodic(&mut self, progress: &Progress, agent: &mut dyn Agent) -> Result<(), TrainError> {
        if self.checkpoint_interval > 0 && progress.step.is_multiple_of(self.checkpoint_interval) {
            let _ = self.metrics.flush();
            let saved = checkpoint::save(&self.run_dir, agent)?;
            export_beside_checkpoint(&saved, agent, &self.spec)?;
        }
        if self.eval_interval == 0 || !progress.step.is_multiple_of(self.eval_interval) {
            return Ok(());
        }
        let (mean, _) = evaluate(
            agent,
            self.eval_env.as_mut(),
            self.eval_episodes,
            self.eval_seed,
        )?;
        self.row(progress, None, Some(mean));
        // Ties go to the later policy: it has trained longer at the same score.
        if self.best.is_none_or(|(_, best)| mean >= best) {
            self.save_best(progress.step, mean, agent)?;
        }
        let who = self
            .label
            .as_deref()
            .map_or(String::new(), |l| format!("{l} "));
        let line = format!(
            "{who}step {:>8}: greedy eval return {mean:.1}",
            progress.step
        );
        if self.quiet {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
        let _ = self.metrics.flush();
        Ok(())
    }
}

/// The run's resolved configuration, as `run` stored it.
fn read_config(dir: &Path) -> anyhow::Result<RunConfig> {
    let path = dir.join("config.toml");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let config: RunConfig =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    // It may have been edited since the run wrote it: the same checks as `run`.
    reflex_trainer::run::check(&config).with_context(|| format!("checking {}", path.display()))?;
    Ok(config)
}

/// A fresh learner for `config`'s algorithm and env.
fn learner(config: &RunConfig, env: &dyn Env, device: &Device) -> anyhow::Result<Box<dyn Agent>> {
    Ok(algo::build(config, env, device)?)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn run(
    config: &RunConfig,
    out: &Path,
    quiet: bool,
    resume: bool,
    device: &Device,
) -> anyhow::Result<()> {
    check_learning_starts(config)?;
    let device = device.clone();
    let mut env = make(&config.env)?;
    let mut agent;
    if resume {
        let latest;
        (latest, agent) = checkpoint::load_newest(
            out,
            || learner(config, env.as_ref(), &device),
            |path, agent| Ok(checkpoint::load(path, agent.as_mut(), &device)?),
        )?
        .with_context(|| {
            format!(
                "{} has no complete checkpoint to resume from",
                out.display()
            )
        })?;
        eprintln!(
            "resuming {} from {} (step {})",
            out.display(),
            latest.display(),
            agent.steps_done()
        );
    } else {
        agent = learner(config, env.as_ref(), &device)?;
        start_fresh(out)?;
        write_atomic(
            &out.join("config.toml"),
            toml::to_string(config)?.as_bytes(),
        )?;
    }

    let bar = steps_bar(quiet, config.steps, agent.steps_done())?;
    let resume_from = resume.then(|| agent.steps_done());
    let mut observer = run_observer(
        config,
        out,
        quiet,
        resume_from,
        env.as_ref(),
        bar.clone(),
        None,
    )?;
    if quiet {
        eprintln!(
            "training {} on {} for {} steps (seed {})",
            config.algo, config.env, config.steps, config.seed
        );
    }
    let periodic = gcd(config.eval_interval, config.checkpoint_interval);
    stop_on_signal()?;
    train(
        agent.as_mut(),
        env.as_mut(),
        config.steps,
        config.seed,
        periodic,
        &mut observer,
    )?;
    bar.finish_and_clear();
    if stop_requested() && agent.steps_done() < config.steps {
        let saved = save_interrupted(out, agent.as_mut(), &mut observer)?;
        eprintln!(
            "interrupted at step {} of {}: checkpoint {}; `reflex-train resume {}` goes on",
            agent.steps_done(),
            config.steps,
            saved.display(),
            out.display()
        );
        std::process::exit(130);
    }
    finish_run(config, out, agent.as_mut(), observer, env.as_mut())?;
    Ok(())
}

/// A run whose first update would come after its last step is refused: it
/// would export an untrained policy without a word.
fn check_learning_starts(config: &RunConfig) -> anyhow::Result<()> {
    let starts = config.learning_starts();
    if config.steps > 0 && starts >= config.steps {
        bail!(
            "{algo}.learning_starts = {starts} is not below steps = {steps}: the run would make \
             no update. Train longer (--steps) or start sooner (--set {algo}.learning_starts=N)",
            algo = config.algo,
            steps = config.steps
        );
    }
    Ok(())
}

/// Makes `out` the folder of a new run. A folder that already holds a run
/// with a checkpoint (its own, or a population member's) is moved aside to
/// `OUT.previous`, replacing an older one there (said so): a new run never
/// appends to an old run's metrics or resumes from its checkpoints, and the
/// last resumable run is kept, one generation deep. A run that stopped before
/// its first checkpoint (and has no results: `eval.json`, a policy, `best/`)
/// has nothing worth keeping: its files are removed instead, so that it cannot
/// push a good run out of `OUT.previous`; other files in the folder stay.
fn start_fresh(out: &Path) -> anyhow::Result<()> {
    const RUN_FILES: [&str; 6] = [
        "config.toml",
        "metrics.csv",
        "curve.png",
        "eval.json",
        reflex_trainer::export::POLICY_FILE,
        BEST_DIR,
    ];
    let resumable = |dir: &Path| {
        reflex_trainer::checkpoint::latest(dir)
            .ok()
            .flatten()
            .is_some()
    };
    let members = fs::read_dir(out)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("member-") && e.path().is_dir());
    // Worth keeping: something to resume, or a finished run's results (its
    // checkpoints may have been deleted to free the disk).
    let keep = |dir: &Path| {
        resumable(dir)
            || ["eval.json", reflex_trainer::export::POLICY_FILE, BEST_DIR]
                .iter()
                .any(|name| dir.join(name).exists())
    };
    let mut resumable_run = keep(out);
    let mut member_dirs = Vec::new();
    for member in members {
        resumable_run |= keep(&member.path());
        member_dirs.push(member.path());
    }
    let holds_run = RUN_FILES.iter().any(|name| out.join(name).exists())
        || out.join("checkpoints").exists()
        || !member_dirs.is_empty();
    if holds_run && !resumable_run {
        let remove_run_files = |dir: &Path| -> anyhow::Result<()> {
            for name in RUN_FILES.iter().chain(&["checkpoints", "population.json"]) {
                let path = dir.join(name);
                let removed = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                if let Err(e) = removed {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        return Err(e).with_context(|| format!("removing {}", path.display()));
                    }
                }
            }
            Ok(())
        };
        remove_run_files(out)?;
        for dir in &member_dirs {
            remove_run_files(dir)?;
            // Gone if nothing else is in it.
            let _ = fs::remove_dir(dir);
        }
        eprintln!(
            "{} held a run that stopped before its first checkpoint: its files were removed",
            out.display()
        );
    } else if holds_run {
        let Some(name) = out.file_name() else {
            bail!(
                "{} already holds a run; give --out a folder of its own",
                out.display()
            );
        };
        let mut previous_name = name.to_os_string();
        previous_name.push(".previous");
        let previous = out.with_file_name(previous_name);
        let replaced = previous.exists();
        if replaced {
            fs::remove_dir_all(&previous)
                .with_context(|| format!("removing {}", previous.display()))?;
        }
        fs::rename(out, &previous)
            .with_context(|| format!("moving {} aside to {}", out.display(), previous.display()))?;
        eprintln!(
            "{} held a run: moved it to {}{}",
            out.display(),
            previous.display(),
            if replaced {
                " (the older run there was deleted)"
            } else {
                ""
            }
        );
    }
    if out.exists() && !out.is_dir() {
        bail!("--out {}: a file, not a folder", out.display());
    }
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))
}

/// The env-step progress bar of a run (hidden when `quiet`).
fn steps_bar(quiet: bool, steps: u64, done: u64) -> anyhow::Result<ProgressBar> {
    if quiet {
        return Ok(ProgressBar::hidden());
    }
    let bar = ProgressBar::new(steps);
    bar.set_position(done);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} steps {per_sec} {msg}",
        )?
        .progress_chars("=> "),
    );
    Ok(bar)
}

/// The observer of a run writing into `out`: metrics.csv (appended to when
/// resuming from step `resume_from`, past which its rows go), periodic
/// evaluations and checkpoints, the best policy so far.
/// `label` names a population's member in its log lines; a member leaves the
/// progress bar to the population.
fn run_observer(
    config: &RunConfig,
    out: &Path,
    quiet: bool,
    resume_from: Option<u64>,
    env: &dyn Env,
    bar: ProgressBar,
    label: Option<String>,
) -> anyhow::Result<RunObserver> {
    // Evaluation episodes use seeds far from the training ones.
    let eval_seed = reflex_trainer::eval::eval_seed(config.seed);
    let metrics_path = out.join("metrics.csv");
    let (metrics, dropped) = reflex_trainer::plot::open_metrics(&metrics_path, resume_from)?;
    if let (Some(step), true) = (resume_from, dropped > 0) {
        eprintln!(
            "{}: dropped {dropped} rows past step {step}, the checkpoint's (they are played again)",
            metrics_path.display()
        );
    }
    Ok(RunObserver {
        metrics,
        run_dir: out.to_path_buf(),
        eval_interval: config.eval_interval,
        checkpoint_interval: config.checkpoint_interval,
        bar,
        quiet,
        label,
        started: Instant::now(),
        started_at_step: resume_from.unwrap_or(0),
        eval_env: make(&config.env)?,
        eval_episodes: config.eval_interval_episodes,
        eval_seed,
        recent_returns: Vec::new(),
        spec: spec_for(&config.algo, &config.env, env),
        // A resumed run keeps competing against the best it had.
        best: fs::read(out.join(BEST_DIR).join("selected.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<BestSelected>(&bytes).ok())
            .filter(|_| resume_from.is_some() && out.join(BEST_DIR).join(POLICY_FILE).exists())
            .map(|b| (b.step, b.periodic_mean)),
    })
}

/// The end of a run: the last checkpoint and its policy (copied to
/// `out/policy.onnx`), the learning curve, the final greedy evaluation
/// (`eval.json`, also printed as one line) and the best periodic policy's.
/// Returns the final evaluation's mean return.
fn finish_run(
    config: &RunConfig,
    out: &Path,
    agent: &mut dyn Agent,
    mut observer: RunObserver,
    env: &mut dyn Env,
) -> anyhow::Result<f64> {
    let saved = checkpoint::save(out, agent)?;
    let exported = export_beside_checkpoint(&saved, agent, &observer.spec)?;
    fs::copy(&exported, out.join(POLICY_FILE))
        .with_context(|| format!("copying {} into {}", exported.display(), out.display()))?;
    // Every row must be on disk before the curve reads the file back.
    observer.metrics.flush()?;
    let title = format!("{} · {} · seed {}", config.env, config.algo, config.seed);
    let metrics_path = out.join("metrics.csv");
    if let Err(e) = reflex_trainer::plot::draw_curve(&metrics_path, &out.join("curve.png"), &title)
    {
        eprintln!("warning: curve.png not drawn: {e}");
    }
    let eval_seed = observer.eval_seed;
    let stats = evaluate(agent, env, config.eval_episodes, eval_seed)?;
    let report = EvalReport {
        updates: Some(agent.updates()),
        ..EvalReport::new(
            config,
            stats,
            config.eval_episodes,
            agent.steps_done(),
            eval_seed,
        )
    };
    let json = serde_json::to_string_pretty(&report)?;
    write_atomic(&out.join("eval.json"), json.as_bytes())?;
    println!("{}", serde_json::to_string(&report)?);
    if let Some((step, periodic_mean)) = observer.best {
        evaluate_best(out, config, env, eval_seed, step, periodic_mean)?;
    }
    eprintln!(
        "{} steps in {:.1}s; run folder {}; checkpoint {}; policy {}",
        config.steps,
        observer.started.elapsed().as_secs_f64(),
        out.display(),
        saved.display(),
        out.join(POLICY_FILE).display()
    );
    Ok(stats.0)
}

/// A run folder and checkpoint from a path that is either (a run folder means its
/// newest checkpoint; a checkpoint lives in run/checkpoints/).
fn run_and_checkpoint(checkpoint_path: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    if population::is_population(checkpoint_path) {
        bail!(
            "{} is a population's folder: name one member's run, e.g. {} \
             (population.json ranks them)",
            checkpoint_path.display(),
            checkpoint_path.join("member-0").display()
        );
    }
    Ok(if checkpoint_path.join("config.toml").exists() {
        let latest = checkpoint::latest(checkpoint_path)?
            .with_context(|| format!("{} has no checkpoint", checkpoint_path.display()))?;
        (checkpoint_path.to_path_buf(), latest)
    } else {
        let run_dir = checkpoint_path
            .parent()
            .and_then(Path::parent)
            .filter(|run| run.join("config.toml").exists())
            .with_context(|| {
                format!(
                    "{} is neither a run folder (it has no config.toml) nor a checkpoint inside one",
                    checkpoint_path.display()
                )
            })?;
        (run_dir.to_path_buf(), checkpoint_path.to_path_buf())
    })
}

/// `reflex-train eval --checkpoint`: loads a checkpoint's online network and
/// evaluates it.
fn eval(
    checkpoint_path: &Path,
    env_name: Option<String>,
    episodes: u32,
    seed: u64,
    device: &Device,
) -> anyhow::Result<()> {
    let (run_dir, checkpoint_dir) = run_and_checkpoint(checkpoint_path)?;
    let mut config = read_config(&run_dir)?;
    if let Some(name) = env_name {
        // Another env the run's networks fit (e.g. its -noisy variant).
        let (trained, other) = (make(&config.env)?, make(&name)?);
        if trained.observation_space().dim() != other.observation_space().dim()
            || trained.action_space() != other.action_space()
        {
            bail!(
                "{} was trained on {} ({} observations, {}); {name} ({} observations, {}) \
                 does not fit it",
                checkpoint_dir.display(),
                config.env,
                trained.observation_space().dim(),
                describe_actions(trained.action_space()),
                other.observation_space().dim(),
                describe_actions(other.action_space())
            );
        }
        config.env = name;
    }
    let device = device.clone();
    let mut env = make(&config.env)?;
    let agent = learner(&config, env.as_ref(), &device)?;
    checkpoint::load_weights(&checkpoint_dir, agent.as_ref(), &device)?;
    let stats = evaluate(agent.as_ref(), env.as_mut(), episodes, seed)?;
    // The checkpoint's folder says at which step it was made.
    let steps = checkpoint_dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("step-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(config.steps);
    let report = EvalReport::new(&config, stats, episodes, steps, seed);
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// `best/eval.json`: the final evaluation's episodes (same seeds) run on
/// `best/policy.onnx` through the daemon's runtime, with the periodic
/// evaluation that picked it.
#[derive(Serialize)]
struct BestReport<'a> {
    #[serde(flatten)]
    eval: EvalReport<'a>,
    /// Env step at which the policy was saved.
    selected_step: u64,
    /// The periodic evaluation's mean return that selected it.
    selected_periodic_mean: f64,
}

fn evaluate_best(
    out: &Path,
    config: &RunConfig,
    env: &mut dyn Env,
    eval_seed: u64,
    step: u64,
    periodic_mean: f64,
) -> anyhow::Result<()> {
    let path = out.join(BEST_DIR).join(POLICY_FILE);
    let mut policy =
        Policy::load(&path).with_context(|| format!("refusing policy {}", path.display()))?;
    let stats = evaluate_policy(&mut policy, env, config.eval_episodes, eval_seed)?;
    let report = BestReport {
        eval: EvalReport {
            updates: Some(policy.spec().training_step),
            ..EvalReport::new(config, stats, config.eval_episodes, step, eval_seed)
        },
        selected_step: step,
        selected_periodic_mean: periodic_mean,
    };
    let json = serde_json::to_string_pretty(&report)?;
    write_atomic(&out.join(BEST_DIR).join("eval.json"), json.as_bytes())?;
    eprintln!(
        "best periodic policy (step {step}, periodic mean {periodic_mean:.1}): greedy eval \
         {:.1} ± {:.1} over {} episodes; {}",
        stats.0,
        stats.1,
        config.eval_episodes,
        path.display()
    );
    Ok(())
}

/// An action space in words: "2 discrete actions", "1-dimensional
/// continuous actions".
fn describe_actions(space: &reflex_msgs::ActionSpace) -> String {
    match space {
        reflex_msgs::ActionSpace::Discrete { n } => format!("{n} discrete actions"),
        reflex_msgs::ActionSpace::Box(b) => format!("{}-dimensional continuous actions", b.dim()),
    }
}

/// `reflex-train eval --policy`: runs an exported policy with the daemon's
/// runtime, so the number is what a robot would get.
fn eval_policy(
    path: &Path,
    env_name: Option<String>,
    episodes: u32,
    seed: u64,
) -> anyhow::Result<()> {
    let mut policy =
        Policy::load(path).with_context(|| format!("refusing policy {}", path.display()))?;
    let env_name = env_name.unwrap_or_else(|| policy.spec().env_id.clone());
    let mut env = make(&env_name)?;
    let spec = policy.spec();
    if env.observation_space().dim() != spec.observation_space.dim()
        || env.action_space() != &spec.action_space
    {
        bail!(
            "{} was trained for {} ({} observations, {}); {env_name} ({} observations, {}) \
             does not match",
            path.display(),
            spec.env_id,
            spec.observation_space.dim(),
            describe_actions(&spec.action_space),
            env.observation_space().dim(),
            describe_actions(env.action_space())
        );
    }
    let (mean_return, std_return) = evaluate_policy(&mut policy, env.as_mut(), episodes, seed)?;
    let spec = policy.spec();
    let report = EvalReport {
        mean_return,
        std_return,
        episodes,
        env: &env_name,
        algo: &spec.algorithm,
        steps: None,
        updates: Some(spec.training_step),
        seed: None,
        eval_seed: seed,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// `reflex-train export`: a checkpoint's online network to ONNX.
fn export(
    run_dir: &Path,
    checkpoint_path: Option<PathBuf>,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let given_run = run_dir;
    let explicit_checkpoint = checkpoint_path.is_some();
    let (run_dir, checkpoint_dir) =
        run_and_checkpoint(checkpoint_path.as_deref().unwrap_or(run_dir))?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    if explicit_checkpoint && !same(given_run, &run_dir) {
        bail!(
            "--checkpoint {} belongs to the run {}, not to {}: name that run",
            checkpoint_dir.display(),
            run_dir.display(),
            given_run.display()
        );
    }
    let config = read_config(&run_dir)?;
    let device = Device::Cpu;
    let env = make(&config.env)?;
    let mut agent = learner(&config, env.as_ref(), &device)?;
    checkpoint::load(&checkpoint_dir, agent.as_mut(), &device)?;
    let spec = spec_for(&config.algo, &config.env, env.as_ref());
    let bytes = policy_for_checkpoint(&checkpoint_dir, agent.as_ref(), &spec)?;
    // The file must load in the runtime robots use before it is written.
    Policy::from_bytes(&bytes).context("the exported policy does not validate")?;
    let output = output.unwrap_or_else(|| run_dir.join(POLICY_FILE));
    reflex_trainer::export::write_atomic(&output, &bytes)?;
    eprintln!(
        "exported {} ({} bytes) from {}",
        output.display(),
        bytes.len(),
        checkpoint_dir.display()
    );
    println!("{}", output.display());
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a killed
/// run never leaves a half-written file.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// The default "solved" return of an env (Gymnasium's reward thresholds).
fn default_target(env: &str) -> Option<f64> {
    // A POMDP variant (`cartpole-masked`) keeps its base env's rewards and bar.
    let entry = reflex_sim::registry::lookup(env).or_else(|| {
        env.rsplit_once('-')
            .and_then(|(base, _)| reflex_sim::registry::lookup(base))
    });
    let short = entry.map_or(env, |e| e.short);
    match short {
        "cartpole" => Some(475.0),
        "acrobot" => Some(-100.0),
        "mountaincar" => Some(-110.0),
        // Gymnasium gives Pendulum no threshold; −200 is a swing-up held upright
        // from most starts (RL Zoo's TD3 ends near −150).
        "pendulum" => Some(-200.0),
        "mountaincarcontinuous" => Some(90.0),
        _ => None,
    }
}

/// `reflex-train serve`: the learner service.
fn serve(args: ServeArgs) -> anyhow::Result<()> {
    use reflex_daemon::zenoh_link::{ZenohConfig, ZenohMode};
    use reflex_trainer::learner::{self, ServeOptions};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    let mut explicit = toml::Table::new();
    if let Some(env) = args.env {
        explicit.insert("env".into(), env.into());
    }
    if let Some(algo) = args.algo {
        explicit.insert("algo".into(), algo.into());
    }
    if let Some(seed) = args.seed {
        explicit.insert("seed".into(), toml::Value::Integer(seed as i64));
    }
    threads_from(args.threads);
    let device = reflex_trainer::device(&args.device)?;
    let run = resolve(args.config.as_deref(), &args.sets, &explicit)?;
    // What was named now (not filled in from a preset or the defaults).
    let mut given: Vec<String> = explicit.keys().cloned().collect();
    given.extend(
        args.sets
            .iter()
            .map(|set| set.split('=').next().unwrap_or(set).trim().to_string()),
    );
    if let Some(path) = &args.config {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        given.extend(file.keys().cloned());
    }
    if run.dqn.n_step == 0 {
        bail!("dqn.n_step must be at least 1");
    }
    let zenoh = match &args.zenoh_config {
        Some(path) => {
            let text =
                fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let config: ZenohConfig =
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            config
                .validate()
                .with_context(|| format!("checking {}", path.display()))?;
            config
        }
        None => {
            let client = args.mode == "client";
            // A client reaches everyone through its router and needs no listener
            // (one on the default port would clash with a router on the same host).
            let listen = if args.listen.is_empty() && !client {
                vec![reflex_daemon::zenoh_link::DEFAULT_ENDPOINT.to_string()]
            } else {
                args.listen
            };
            ZenohConfig {
                mode: if client {
                    ZenohMode::Client
                } else {
                    ZenohMode::Peer
                },
                listen,
                connect: args.connect,
                scouting: false,
            }
        }
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, shutdown.clone())
            .context("installing signal handlers")?;
    }
    let target_return = args.target_return.or_else(|| default_target(&run.env));
    let ros2 = if args.transport == "ros2" {
        Some(reflex_trainer::learner_ros2::Ros2LearnerConfig {
            domain: match args.ros_domain {
                Some(d) => d,
                None => reflex_ros2::domain_from_env()?,
            },
            ..Default::default()
        })
    } else {
        None
    };
    let report = learner::serve(
        ServeOptions {
            run,
            fleet: args.fleet,
            zenoh,
            ros2,
            device,
            out: args.out,
            samples_per_insert: args.samples_per_insert,
            publish_every: args.publish_every,
            target_update_every: args.target_update_every,
            checkpoint_every: args.checkpoint_every,
            eval_every: args.eval_every,
            max_transitions: args.max_transitions,
            target_return,
            quiet: args.quiet,
            linger: args.linger,
            given,
        },
        shutdown,
    )?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// `reflex-train router`: a zenoh session in router mode until SIGINT/SIGTERM.
fn router(args: RouterArgs) -> anyhow::Result<()> {
    use reflex_daemon::zenoh;
    use reflex_daemon::zenoh::Wait;
    use reflex_daemon::zenoh_link::{ZenohConfig, ZenohMode, DEFAULT_ENDPOINT};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let config = match &args.config {
        Some(path) => {
            let mut config = zenoh::Config::from_file(path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            let mode = config.get_json("mode").unwrap_or_default();
            if !matches!(mode.trim_matches('"'), "" | "null" | "router") {
                bail!(
                    "{}: mode is {mode}; `reflex-train router` runs a router",
                    path.display()
                );
            }
            let set = |config: &mut zenoh::Config, key: &str, value: String| {
                config
                    .insert_json5(key, &value)
                    .map_err(|e| anyhow::anyhow!("{key} = {value}: {e}"))
            };
            set(&mut config, "mode", "\"router\"".into())?;
            if !args.listen.is_empty() {
                set(
                    &mut config,
                    "listen/endpoints",
                    serde_json::to_string(&args.listen)?,
                )?;
            }
            if !args.connect.is_empty() {
                set(
                    &mut config,
                    "connect/endpoints",
                    serde_json::to_string(&args.connect)?,
                )?;
            }
            config
        }
        None => ZenohConfig {
            mode: ZenohMode::Router,
            listen: if args.listen.is_empty() {
                vec![DEFAULT_ENDPOINT.to_string()]
            } else {
                args.listen.clone()
            },
            connect: args.connect.clone(),
            scouting: false,
        }
        .to_zenoh()?,
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, shutdown.clone())
            .context("installing signal handlers")?;
    }
    let listening = config.get_json("listen/endpoints").unwrap_or_default();
    let session = zenoh::open(config)
        .wait()
        .map_err(|e| anyhow::anyhow!("opening the router session: {e}"))?;
    eprintln!(
        "router {} listening on {listening}; stop with Ctrl-C",
        session.info().zid().wait()
    );
    let started = Instant::now();
    while !shutdown.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    session
        .close()
        .wait()
        .map_err(|e| anyhow::anyhow!("closing the router session: {e}"))?;
    println!(
        "{}",
        serde_json::json!({
            "stopped": "signal",
            "listening": listening,
            "uptime_s": started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}
