//! `reflex-sim`: check the simulators against Gymnasium and play episodes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use reflex_msgs::ActionSpace;
use reflex_sim::reference::{check_file, EnvReport};
use reflex_sim::{make, random_action, SimRng};

#[derive(Parser)]
#[command(name = "reflex-sim", version, about = "reflex's simulated robots")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Replay a Gymnasium reference file (JSON Lines) and report deviations.
    Check {
        /// The reference file, e.g. tests/data/gymnasium/CartPole-v1.jsonl.
        file: PathBuf,
        /// Largest deviation allowed, of the reset (from the seed), step by step
        /// and free running (observation, reward, state, return).
        #[arg(long, default_value_t = 1e-5)]
        tol: f64,
    },
    /// Play episodes with uniformly random actions and print their returns.
    Run {
        /// Env name: cartpole, acrobot, mountaincar, pendulum,
        /// mountaincarcontinuous, a Gymnasium id, or a -masked/-flicker/-noisy variant.
        #[arg(long, default_value = "cartpole")]
        env: String,
        /// Number of episodes.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
        episodes: u32,
        /// Seed of the first episode (episode k uses seed + k); actions use their own stream.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Also print every step (observation, action, reward).
        #[arg(long)]
        trace: bool,
    },
    /// Play a robot over zenoh or ROS 2: publish observations (with reward and done
    /// flags) on reflex/<fleet>/<robot>/obs (ROS 2: /<ns>/reflexd_<robot>/observation),
    /// apply the actions that answer them from reflex/<fleet>/<robot>/action (ROS 2:
    /// /<ns>/reflexd_<robot>/action). Prints a JSON report on stdout when it stops
    /// (SIGINT/SIGTERM, --max-episodes, --idle-timeout-s).
    Serve {
        /// Env name (as for `run`).
        #[arg(long, default_value = "cartpole")]
        env: String,
        /// Robot id (one key chunk).
        #[arg(long, default_value = "r0")]
        robot: String,
        /// Fleet (one key chunk).
        #[arg(long, default_value = "default")]
        fleet: String,
        /// zenoh endpoint to connect to (repeatable); default tcp/127.0.0.1:7447
        /// unless --listen is given.
        #[arg(long)]
        connect: Vec<String>,
        /// zenoh endpoint to listen on (repeatable).
        #[arg(long)]
        listen: Vec<String>,
        /// zenoh mode: peer or client (through a router) [default: peer].
        #[arg(long, value_parser = ["peer", "client"])]
        mode: Option<String>,
        /// Episode k resets with seed + k.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Stop after this many episodes (at least 1) [default: run until stopped].
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        max_episodes: Option<u64>,
        /// Stop after this many seconds without an action.
        #[arg(long)]
        idle_timeout_s: Option<f64>,
        /// Republish an unanswered observation this often, milliseconds.
        #[arg(long, default_value_t = 100)]
        republish_ms: u64,
        /// The wire: zenoh (keys reflex/<fleet>/<robot>/…) or ros2 (reflexd's
        /// ~/observation and ~/action topics).
        #[arg(long, default_value = "zenoh", value_parser = ["zenoh", "ros2"])]
        transport: String,
        /// ROS 2 domain id, 0 to 232 (default: ROS_DOMAIN_ID, else 0).
        #[arg(long, value_parser = clap::value_parser!(u16).range(0..=232))]
        ros_domain: Option<u16>,
        /// ROS 2 namespace reflexd runs in [default: /].
        #[arg(long)]
        ros_namespace: Option<String>,
        /// reflexd's ROS 2 node name (default: reflexd_<robot>). --robot must
        /// still be that reflexd's robot_id: each side drops the other's
        /// messages that name another robot.
        #[arg(long)]
        ros_daemon_node: Option<String>,
        /// Write every step the simulator took as JSON lines to this file.
        #[arg(long)]
        record: Option<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { file, tol } => check(&file, tol),
        Command::Run {
            env,
            episodes,
            seed,
            trace,
        } => run(&env, episodes, seed, trace).map(|()| true),
        Command::Serve {
            env,
            robot,
            fleet,
            mut connect,
            listen,
            mode,
            seed,
            max_episodes,
            idle_timeout_s,
            republish_ms,
            transport,
            ros_domain,
            ros_namespace,
            ros_daemon_node,
            record,
        } => {
            let idle_timeout = match idle_timeout_s {
                Some(t) => match std::time::Duration::try_from_secs_f64(t) {
                    Ok(d) if t > 0.0 && !d.is_zero() => Some(d),
                    _ => {
                        eprintln!(
                            "error: --idle-timeout-s must be a positive number of seconds a \
                             clock can hold, got {t}"
                        );
                        return ExitCode::from(2);
                    }
                },
                None => None,
            };
            // Options of the other wire would be ignored without a word: refuse them.
            let misplaced: Vec<&str> = if transport == "ros2" {
                [
                    (!connect.is_empty(), "--connect"),
                    (!listen.is_empty(), "--listen"),
                    (mode.is_some(), "--mode"),
                ]
                .into_iter()
                .filter_map(|(given, name)| given.then_some(name))
                .collect()
            } else {
                [
                    (ros_domain.is_some(), "--ros-domain"),
                    (ros_namespace.is_some(), "--ros-namespace"),
                    (ros_daemon_node.is_some(), "--ros-daemon-node"),
                ]
                .into_iter()
                .filter_map(|(given, name)| given.then_some(name))
                .collect()
            };
            if !misplaced.is_empty() {
                let (these, wire) = if transport == "ros2" {
                    ("zenoh", "ros2")
                } else {
                    ("ROS 2", "zenoh")
                };
                let is = if misplaced.len() == 1 {
                    format!("is a {these} option")
                } else {
                    format!("are {these} options")
                };
                eprintln!(
                    "error: {} {is}; this robot runs on --transport {wire}",
                    misplaced.join(", ")
                );
                return ExitCode::from(2);
            }
            if transport != "ros2" && connect.is_empty() && listen.is_empty() {
                connect.push("tcp/127.0.0.1:7447".into());
            }
            serve(reflex_sim::node::NodeConfig {
                env,
                robot,
                fleet,
                connect,
                listen,
                mode: mode.unwrap_or_else(|| "peer".into()),
                seed,
                max_episodes,
                idle_timeout,
                republish: std::time::Duration::from_millis(republish_ms.max(1)),
                transport: if transport == "ros2" {
                    reflex_sim::node::NodeTransport::Ros2
                } else {
                    reflex_sim::node::NodeTransport::Zenoh
                },
                ros_domain,
                ros_namespace: ros_namespace.unwrap_or_else(|| "/".into()),
                ros_daemon_node,
                record,
                ..reflex_sim::node::NodeConfig::default()
            })
            .map(|()| true)
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {}", reflex_msgs::error_report(e.as_ref()));
            ExitCode::from(2)
        }
    }
}

fn check(file: &std::path::Path, tol: f64) -> anyhow::Result<bool> {
    anyhow::ensure!(tol >= 0.0, "--tol must be a non-negative number, got {tol}");
    let reports = check_file(file).with_context(|| format!("checking {}", file.display()))?;
    let mut all_pass = true;
    for report in &reports {
        print_report(report, tol);
        all_pass &= report.passes(tol);
    }
    Ok(all_pass)
}

fn print_report(r: &EnvReport, tol: f64) {
    let verdict = if r.passes(tol) { "PASS" } else { "FAIL" };
    println!(
        "{}: {} episodes, {} steps  [{verdict} at tol {tol:e}]",
        r.env, r.episodes, r.steps
    );
    println!(
        "  reset from seed  max |Δstate| {:.3e}   reset obs max |Δ| {:.3e}",
        r.reset_state, r.reset_obs
    );
    println!(
        "  step by step     max |Δobs| {:.3e}  |Δreward| {:.3e}  |Δstate| {:.3e}  flag mismatches {}",
        r.step_obs, r.step_reward, r.step_state, r.step_flag_mismatches
    );
    println!(
        "  free running     max |Δobs| {:.3e}  |Δreward| {:.3e}  |Δreturn| {:.3e}  flag mismatches {}",
        r.free_obs, r.free_reward, r.free_return, r.free_flag_mismatches
    );
    for problem in &r.first_problems {
        println!("  ! {problem}");
    }
}

fn serve(config: reflex_sim::node::NodeConfig) -> anyhow::Result<()> {
    let shutdown = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, shutdown.clone())
            .context("installing signal handlers")?;
    }
    match config.transport {
        reflex_sim::node::NodeTransport::Zenoh => eprintln!(
            "reflex-sim serve: robot {} in fleet {} ({}) over zenoh, connect {:?}, listen {:?}",
            config.robot, config.fleet, config.env, config.connect, config.listen
        ),
        reflex_sim::node::NodeTransport::Ros2 => eprintln!(
            "reflex-sim serve: robot {} ({}) over ROS 2, domain {}, namespace {}, reflexd node {}",
            config.robot,
            config.env,
            config
                .ros_domain
                .map_or("from ROS_DOMAIN_ID, else 0".to_string(), |d| d.to_string()),
            config.ros_namespace,
            config
                .ros_daemon_node
                .clone()
                .unwrap_or_else(|| reflex_msgs::topics::daemon_node_name(&config.robot)),
        ),
    }
    let report = reflex_sim::node::run(&config, &shutdown)?;
    println!("{}", serde_json::to_string(&report)?);
    match &report.error {
        // The report above says what was done until then.
        Some(e) => anyhow::bail!("the simulated robot stopped: {e}"),
        None => Ok(()),
    }
}

fn run(name: &str, episodes: u32, seed: u64, trace: bool) -> anyhow::Result<()> {
    let mut env = make(name)?;
    let mut action_rng = SimRng::seed(seed.wrapping_add(1000));
    let actions = match env.action_space() {
        ActionSpace::Discrete { n } => format!("{n} discrete actions"),
        ActionSpace::Box(b) => format!("continuous actions in {:?}..{:?}", b.low, b.high),
    };
    let limit = env
        .max_episode_steps()
        .map_or("no time limit".to_string(), |n| {
            format!("time limit {n} steps")
        });
    println!(
        "{name} ({}): {}-dim observation, {actions}, {limit}",
        env.id(),
        env.observation_space().low.len(),
    );
    let mut returns = Vec::new();
    for k in 0..episodes {
        let obs = env.reset(Some(seed.wrapping_add(u64::from(k)))).to_vec();
        if trace {
            println!("  reset obs {obs:?}");
        }
        let (mut total, mut length) = (0.0, 0u32);
        loop {
            let action = random_action(env.action_space(), &mut action_rng);
            let step = env.step(&action)?;
            total += step.reward;
            length += 1;
            if trace {
                println!(
                    "  t={:<4} action {:?} reward {:+.4} obs {:?}",
                    length - 1,
                    action,
                    step.reward,
                    env.obs()
                );
            }
            if step.done() {
                let end = if step.terminated {
                    "terminated"
                } else {
                    "truncated"
                };
                println!(
                    "episode {k} (seed {}): return {total:.3}, length {length}, {end}",
                    seed.wrapping_add(u64::from(k))
                );
                break;
            }
        }
        returns.push(total);
    }
    let mean = returns.iter().sum::<f64>() / returns.len().max(1) as f64;
    println!("mean return over {episodes} episodes: {mean:.3}");
    Ok(())
}
