//! `reflexd`: the on-robot daemon.
//!
//! ```text
//! reflexd run --config robot.toml            # run until SIGINT / SIGTERM (SIGUSR1: log status)
//! reflexd run --ros-params reflexd.yaml [--ros-args -r __ns:=/r1 -p rate_hz:=100]
//! reflexd check-config --config robot.toml   # parse and validate, then exit
//! reflexd print-default-config > robot.toml  # the fully commented defaults
//! ```

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use reflex_daemon::config::TransportKind;
use reflex_daemon::policy::onnx_loader;
use reflex_daemon::ros_params;
use reflex_daemon::zenoh_transport::{self, ZenohTransportOptions};
use reflex_daemon::{zenoh, zenoh_link};
use reflex_daemon::{Actor, Config, Loader, Transports, DEFAULT_CONFIG_TOML};

#[derive(Parser)]
#[command(
    name = "reflexd",
    version,
    about = "reflex's on-robot daemon: runs a policy at a fixed rate behind a safety layer and streams experience to the learner"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon until SIGINT or SIGTERM (then: safe action out, spool flushed);
    /// SIGUSR1 logs the current status (latency and jitter percentiles, overruns,
    /// transitions, safety state).
    Run {
        #[command(flatten)]
        source: ConfigSource,
    },
    /// Parse and validate a configuration, then exit (0 = valid).
    CheckConfig {
        #[command(flatten)]
        source: ConfigSource,
    },
    /// Print the default configuration as a fully commented TOML file.
    PrintDefaultConfig,
}

/// Where the configuration comes from: robot.toml, or ROS 2 parameters.
#[derive(clap::Args)]
#[group(required = true, multiple = true)]
struct ConfigSource {
    /// The configuration file (robot.toml).
    #[arg(long, short, conflicts_with_all = ["ros_params", "ros_args"])]
    config: Option<PathBuf>,
    /// ROS 2 parameter YAML (`/**: ros__parameters: ...`; repeatable, later files
    /// win): the same file `ros2 launch` passes, with reflexd's keys in dotted form.
    #[arg(long = "ros-params", value_name = "FILE")]
    ros_params: Vec<PathBuf>,
    /// ROS 2 arguments, as `ros2 launch` appends them: `--ros-args -r __node:=NAME
    /// -r __ns:=/NS -p name:=value --params-file FILE`.
    #[arg(long = "ros-args", num_args = 0.., allow_hyphen_values = true, value_name = "ARGS")]
    ros_args: Option<Vec<String>>,
}

impl ConfigSource {
    fn load(&self) -> anyhow::Result<(Config, String)> {
        if let Some(path) = &self.config {
            return Ok((Config::load(path)?, path.display().to_string()));
        }
        let args = ros_params::RosArgs::parse(self.ros_args.as_deref().unwrap_or_default())?;
        let config = ros_params::load(&self.ros_params, &args)?;
        let files: Vec<String> = self
            .ros_params
            .iter()
            .chain(&args.params_files)
            .map(|p| p.display().to_string())
            .collect();
        Ok((config, format!("ROS parameters [{}]", files.join(", "))))
    }
}

fn main() -> std::process::ExitCode {
    match start() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Each cause once (`anyhow`'s own report repeats causes that an error's
            // message already shows).
            eprintln!("error: {}", reflex_msgs::error_report(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

fn start() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // No colour codes in a file or the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::PrintDefaultConfig => {
            print!("{DEFAULT_CONFIG_TOML}");
            Ok(())
        }
        Command::CheckConfig { source } => {
            let (parsed, from) = source.load()?;
            // The transport and the policy too, as `run` checks them: with the
            // policy file in place, a check that passes means `run` starts
            // (systemd runs it as ExecStartPre).
            check_transport(&parsed)?;
            let path = &parsed.policy.path;
            let shown = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            let policy = if path.exists() {
                let (actor, _) = policy_runtime(&parsed)
                    .with_context(|| format!("policy.path = {}", shown.display()))?;
                reflex_daemon::check_fit(&parsed, actor.spec())
                    .with_context(|| format!("the policy {} under this config", shown.display()))?;
                format!("policy {} v{} fits", shown.display(), actor.version())
            } else {
                format!(
                    "policy {} not found, so not checked: `run` needs it",
                    shown.display()
                )
            };
            println!(
                "{}: ok (robot {} in fleet {}, {} Hz, {:?} mode, transport {:?}; {policy})",
                from,
                parsed.robot_id,
                parsed.fleet,
                parsed.rate_hz,
                parsed.mode.kind,
                parsed.transport.kind,
            );
            Ok(())
        }
        Command::Run { source } => run(source.load()?.0),
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, shutdown.clone())
            .context("installing signal handlers")?;
    }
    // `kill -USR1 <pid>` logs the loop's latency and jitter percentiles now.
    let report_now = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, report_now.clone())
        .context("installing the SIGUSR1 handler")?;
    // Refuse a transport reflexd cannot run before touching the policy or the network.
    check_transport(&config)?;
    let (actor, loader) = policy_runtime(&config)?;
    let (transports, link) = transports(&config)?;
    let report = reflex_daemon::serve(&config, actor, loader, transports, &shutdown, &report_now)?;
    let t = report.transitions;
    // Steps the robot took that became no transition (a watchdog trip or a stale
    // observation between a step and its next observation, an observation never
    // acted on or unusable): a learner sees them as gaps that no one sent.
    let s = &report.stats;
    let unsent = s.discarded_steps + s.skipped_observations + s.bad_observations;
    tracing::info!(
        ticks = report.stats.ticks,
        overruns = report.stats.overruns,
        produced = t.produced,
        recovered = t.recovered,
        sent = t.sent,
        spooled = t.spooled,
        dropped = t.dropped,
        unsent,
        "reflexd stopped"
    );
    // One JSON line on stdout for supervisors (reflex-train fleet, tests).
    println!(
        "{}",
        serde_json::json!({
            "robot_id": config.robot_id,
            "fleet": config.fleet,
            "policy_version": report.stats.policy_version,
            "policies_accepted": report.policies_accepted,
            "policies_refused": report.policies_rejected,
            "ticks": report.stats.ticks,
            "acting_ticks": report.stats.acting_ticks,
            "overruns": report.stats.overruns,
            "transitions_produced": t.produced,
            "transitions_recovered": t.recovered,
            "transitions_sent": t.sent,
            "transitions_spooled": t.spooled,
            "transitions_dropped": t.dropped,
            "transitions_corrupt": t.corrupt,
            "batches": t.batches,
            "steps_unsent": unsent,
            "bad_observations": s.bad_observations,
            "skipped_observations": s.skipped_observations,
            "foreign_observations": s.foreign_observations,
            "discarded_steps": s.discarded_steps,
            "policy_errors": s.policy_errors,
            "recurrent_resets": s.recurrent_resets,
            "control_failure": report.control_failure,
            "safety": {
                "interventions": s.safety.interventions,
                "non_finite": s.safety.non_finite,
                "invalid": s.safety.invalid,
                "clamped": s.safety.clamped,
                "rate_limited": s.safety.rate_limited,
                "watchdog": s.safety.watchdog,
                "estop": s.safety.estop,
            },
        })
    );
    match link {
        Link::Zenoh(session) => {
            use zenoh::Wait;
            if let Err(e) = session.close().wait() {
                tracing::warn!("closing zenoh session: {e}");
            }
        }
        #[cfg(feature = "ros2")]
        Link::Ros2(node) => drop(node),
    }
    if let Some(why) = report.control_failure {
        bail!("the control loop died: {why} (the robot got no commands from then on)");
    }
    Ok(())
}

/// What the transports run on, kept open until the daemon has stopped.
enum Link {
    Zenoh(zenoh::Session),
    #[cfg(feature = "ros2")]
    Ros2(Box<reflex_daemon::ros2_transport::Link>),
}

/// This robot's transports.
fn transports(config: &Config) -> anyhow::Result<(Transports, Link)> {
    #[cfg(feature = "ros2")]
    if config.transport.kind == TransportKind::Ros2 {
        use reflex_daemon::ros2_transport;
        let link = ros2_transport::open(config)?;
        let r = &config.transport.ros2;
        tracing::info!(
            node = link.fully_qualified_name(),
            domain = link.domain(),
            observation = %r.resolve(&config.robot_id, r.observation.topic()),
            action = %r.resolve(&config.robot_id, r.action.topic()),
            "ROS 2 node open"
        );
        let transports = ros2_transport::transports(&link, config)?;
        return Ok((transports, Link::Ros2(Box::new(link))));
    }
    let (transports, session) = zenoh_transports(config)?;
    Ok((transports, Link::Zenoh(session)))
}

/// The zenoh transports of this robot, and the session they run on.
fn zenoh_transports(config: &Config) -> anyhow::Result<(Transports, zenoh::Session)> {
    let z = &config.transport.zenoh;
    let session = zenoh_link::open(z)?;
    tracing::info!(
        mode = z.mode.as_str(),
        listen = ?z.listen,
        connect = ?z.connect,
        obs = %reflex_msgs::keys::obs_key(&config.fleet, &config.robot_id),
        "zenoh session open"
    );
    let transports = zenoh_transport::transports(
        &session,
        &config.fleet,
        &config.robot_id,
        ZenohTransportOptions::default(),
    )?;
    Ok((transports, session))
}

/// Refuses a transport this reflexd cannot run (one not built in, or the
/// in-process one), for `run` and `check-config` alike.
fn check_transport(config: &Config) -> anyhow::Result<()> {
    match config.transport.kind {
        TransportKind::Zenoh => {}
        #[cfg(feature = "ros2")]
        TransportKind::Ros2 => {}
        #[cfg(not(feature = "ros2"))]
        TransportKind::Ros2 => bail!(
            "this reflexd was built without the ROS 2 transport (cargo feature `ros2`): \
             rebuild with it, or set [transport] kind = \"zenoh\""
        ),
        TransportKind::Inproc => bail!(
            "transport \"inproc\" only connects within one process (tests, reflex-train's local loop); \
             `reflexd run` needs a network transport: set [transport] kind = \"zenoh\" or \"ros2\""
        ),
        kind => bail!("transport {kind:?} is not built into this reflexd yet"),
    }
    Ok(())
}

/// The initial policy (from `policy.path`) and the loader for later ones: the ONNX
/// runtime plugs in here.
fn policy_runtime(config: &Config) -> anyhow::Result<(Box<dyn Actor>, Loader)> {
    let path = &config.policy.path;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let loader = onnx_loader();
    let actor = loader(&bytes).map_err(|e| anyhow::anyhow!("refusing {}: {e}", path.display()))?;
    Ok((actor, loader))
}
