//! `reflex-train`: train a policy on a built-in simulator.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use reflex_msgs::ActionSpace;
use reflex_sim::{make, Env, SimRng};
use reflex_trainer::algo::dqn::{evaluate, train, Dqn, Observer, Progress};
use reflex_trainer::run::{resolve, RunConfig};
use reflex_trainer::TrainError;
use serde::Serialize;

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
        /// Env name: cartpole, acrobot, mountaincar, a Gymnasium id, or a -masked
        /// variant [default: cartpole, or the config file's].
        #[arg(long)]
        env: Option<String>,
        /// Algorithm [default: dqn, or the config file's].
        #[arg(long)]
        algo: Option<String>,
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
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            env,
            algo,
            seed,
            steps,
            out,
            config,
            sets,
            quiet,
            threads,
        } => {
            let mut explicit = toml::Table::new();
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
                explicit.insert("steps".into(), toml::Value::Integer(steps as i64));
            }
            if std::env::var_os("RAYON_NUM_THREADS").is_none() {
                reflex_trainer::set_compute_threads(threads);
            }
            resolve(config.as_deref(), &sets, &explicit)
                .map_err(anyhow::Error::from)
                .and_then(|config| run(&config, &out, quiet))
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}

/// The final evaluation, as `eval.json` stores it.
#[derive(Serialize)]
struct EvalReport<'a> {
    mean_return: f64,
    std_return: f64,
    episodes: u32,
    env: &'a str,
    algo: &'a str,
    steps: u64,
    seed: u64,
}

/// One row of `metrics.csv`: an episode end or a periodic evaluation.
#[derive(Serialize)]
struct MetricsRow {
    step: u64,
    episode_return: Option<f64>,
    eval_return: Option<f64>,
    loss: Option<f32>,
    q_mean: Option<f32>,
    epsilon: f64,
    steps_per_s: f64,
}

struct RunObserver {
    metrics: csv::Writer<fs::File>,
    bar: ProgressBar,
    quiet: bool,
    started: Instant,
    eval_env: Box<dyn Env>,
    eval_episodes: u32,
    eval_seed: u64,
    recent_returns: Vec<f64>,
}

impl RunObserver {
    fn row(&mut self, progress: &Progress, episode_return: Option<f64>, eval_return: Option<f64>) {
        let update = progress.last_update;
        let row = MetricsRow {
            step: progress.step,
            episode_return,
            eval_return,
            loss: update.map(|u| u.loss),
            q_mean: update.map(|u| u.q_mean),
            epsilon: progress.epsilon,
            steps_per_s: progress.step as f64 / self.started.elapsed().as_secs_f64().max(1e-9),
        };
        if let Err(e) = self.metrics.serialize(row) {
            eprintln!("warning: metrics.csv: {e}");
        }
    }
}

impl Observer for RunObserver {
    fn episode(&mut self, progress: &Progress, episode_return: f64, _length: u32) {
        self.row(progress, Some(episode_return), None);
        self.recent_returns.push(episode_return);
        let window = &self.recent_returns[self.recent_returns.len().saturating_sub(10)..];
        let mean = window.iter().sum::<f64>() / window.len() as f64;
        let loss = progress
            .last_update
            .map_or("-".to_string(), |u| format!("{:.4}", u.loss));
        self.bar.set_position(progress.step);
        self.bar.set_message(format!(
            "return(10) {mean:.1}  ε {:.3}  loss {loss}",
            progress.epsilon
        ));
    }

    fn periodic(&mut self, progress: &Progress, dqn: &Dqn) -> Result<(), TrainError> {
        let (mean, _) = evaluate(
            dqn,
            self.eval_env.as_mut(),
            self.eval_episodes,
            self.eval_seed,
        )?;
        self.row(progress, None, Some(mean));
        let line = format!("step {:>8}: greedy eval return {mean:.1}", progress.step);
        if self.quiet {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
        let _ = self.metrics.flush();
        Ok(())
    }
}

fn run(config: &RunConfig, out: &Path, quiet: bool) -> anyhow::Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_atomic(
        &out.join("config.toml"),
        toml::to_string(config)?.as_bytes(),
    )?;
    let mut env = make(&config.env)?;
    let n_actions = match env.action_space() {
        ActionSpace::Discrete { n } => *n as usize,
        ActionSpace::Box(_) => bail!(
            "{} has continuous actions; DQN needs discrete ones",
            config.env
        ),
    };
    let obs_dim = env.observation_space().low.len();
    let device = candle_core::Device::Cpu;
    let mut rng = SimRng::seed(config.seed);
    let mut dqn = Dqn::new(config.dqn.clone(), obs_dim, n_actions, &mut rng, &device)?;

    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(config.steps);
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} steps {per_sec} {msg}",
            )?
            .progress_chars("=> "),
        );
        bar
    };
    // Evaluation episodes use seeds far from the training ones.
    let eval_seed = config.seed.wrapping_mul(1_000).wrapping_add(1_000_000);
    let mut observer = RunObserver {
        metrics: csv::Writer::from_path(out.join("metrics.csv"))?,
        bar: bar.clone(),
        quiet,
        started: Instant::now(),
        eval_env: make(&config.env)?,
        eval_episodes: config.eval_interval_episodes,
        eval_seed,
        recent_returns: Vec::new(),
    };
    if quiet {
        eprintln!(
            "training {} on {} for {} steps (seed {})",
            config.algo, config.env, config.steps, config.seed
        );
    }
    train(
        &mut dqn,
        env.as_mut(),
        config.steps,
        config.seed,
        config.eval_interval,
        &mut observer,
    )?;
    observer.metrics.flush()?;
    bar.finish_and_clear();

    let (mean_return, std_return) = evaluate(&dqn, env.as_mut(), config.eval_episodes, eval_seed)?;
    let report = EvalReport {
        mean_return,
        std_return,
        episodes: config.eval_episodes,
        env: &config.env,
        algo: &config.algo,
        steps: config.steps,
        seed: config.seed,
    };
    let json = serde_json::to_string_pretty(&report)?;
    write_atomic(&out.join("eval.json"), json.as_bytes())?;
    println!("{json}");
    eprintln!(
        "{} steps in {:.1}s; run folder {}",
        config.steps,
        observer.started.elapsed().as_secs_f64(),
        out.display()
    );
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
