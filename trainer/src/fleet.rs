//! `reflex-train fleet`: the fleet loop on one machine, as separate processes on
//! loopback — the learner (`reflex-train serve`), N simulated robots (`reflex-sim
//! serve`) and their daemons (`reflexd run`) — until the learner is done; then a clean
//! stop, a greedy evaluation of the published `policy.onnx` through the robots' runtime,
//! and a summary.
//!
//! Topology (explicit endpoints, scouting off): the learner listens on
//! `tcp/127.0.0.1:PORT`; each simulator listens on a port of its own; each daemon
//! connects to both.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reflex_daemon::config::{Mode, ModeConfig, Noise};
use reflex_daemon::Policy;
use reflex_trainer::algo::continuous::NoiseKind;
use reflex_trainer::eval::{eval_seed, evaluate_policy};
use reflex_trainer::export::POLICY_FILE;
use reflex_trainer::learner::{read_report, LearnerReport, CURVE_FILE, METRICS_FILE, PUB_FILE};
use reflex_trainer::run::RunConfig;
use serde::Serialize;

/// The learner's networks in a fleet run, per algorithm, unless `--set` says
/// otherwise: 64×64, so the learner keeps up with robots acting in real time.
fn fleet_nets(algo: &str) -> Vec<String> {
    match algo {
        "ddpg" | "td3" => ["actor", "critic"]
            .iter()
            .map(|net| format!("{algo}.{net}.hidden=[64,64]"))
            .collect(),
        "naf" => vec!["naf.net.hidden=[64,64]".into()],
        // The preset's LSTM (64) and head ([64]) are already this size.
        "drqn" => Vec::new(),
        _ => vec!["dqn.net.hidden=[64,64]".into()],
    }
}

use crate::FleetArgs;

/// A child process with its role and log file. One still running when it is
/// dropped (the fleet returned early, on an error) is stopped, so that no
/// learner, simulator or daemon is left behind holding ports and the run folder.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> anyhow::Result<Self> {
        let file = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let out = file.try_clone()?;
        // A process group of its own: Ctrl-C in the terminal reaches only the
        // fleet, which then stops the daemons first (their spools flush into
        // the learner), then the simulators, then the learner. Sent to the
        // whole group, it stopped the learner before the daemons had flushed.
        std::os::unix::process::CommandExt::process_group(&mut *cmd, 0);
        die_with_parent(cmd);
        let child = cmd
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        Ok(Self {
            name: name.to_string(),
            child,
            log,
        })
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Why a process that should still run is gone: its exit status and the
    /// tail of its log.
    fn death(&mut self) -> String {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => status.to_string(),
            _ => "status unknown".into(),
        };
        format!(
            "{} exited unexpectedly ({status}); {}:\n{}",
            self.name,
            self.log.display(),
            self.tail()
        )
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    fn stop(&mut self, grace: Duration) {
        if !self.alive() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("fleet: {} did not stop in {grace:?}; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn tail(&self) -> String {
        // Lossy: one stray byte in a log must not hide why a process died.
        let text = String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default()).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// Asks the kernel to send the child SIGTERM when the fleet dies, so that a
/// fleet killed with SIGKILL (or by the OOM killer), which runs no `Drop`, leaves
/// no learner, simulator or daemon behind holding ports and the run folder. The
/// daemons still get SIGTERM, so they persist their spools as on any stop.
///
/// The signal follows the *thread* that spawned the child: the fleet spawns
/// from its main thread, which lives as long as the process.
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the child between fork and exec, and calls
    // only async-signal-safe functions (prctl, getppid); it does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The fleet died between fork and prctl: nobody would send the
            // signal, so do not start at all.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

/// A free TCP port on 127.0.0.1.
fn free_port() -> anyhow::Result<u16> {
    reflex_daemon::zenoh_link::free_loopback_port().context("finding a free port")
}

/// The robot configuration the fleet writes for robot `index`.
#[allow(clippy::too_many_arguments)]
fn robot_toml(
    robot: &str,
    fleet: &str,
    rate_hz: f64,
    policy: &Path,
    public_key: &str,
    seed: u64,
    index: u32,
    robots: u32,
    explore: &Explore,
    network: &Network,
) -> String {
    let transport = match network {
        Network::Zenoh { connect } => {
            let connect = connect
                .iter()
                .map(|e| format!("{e:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                r#"[transport]
kind = "zenoh"

[transport.zenoh]
mode = "peer"
# The learner, then this robot's simulator.
connect = [{connect}]
scouting = false
"#
            )
        }
        Network::Ros2 { domain } => format!(
            r#"[transport]
kind = "ros2"

[transport.ros2]
# The learner and this robot's simulator find reflexd_{robot} by DDS discovery.
domain_id = {domain}
"#
        ),
    };
    let Explore {
        epsilon,
        noise,
        sigma,
        ou_theta,
    } = *explore;
    let noise = match noise {
        Noise::Gaussian => "gaussian",
        Noise::Ou => "ou",
    };
    format!(
        r#"# Written by `reflex-train fleet`: simulated robot {robot}.
robot_id = "{robot}"
fleet = "{fleet}"
rate_hz = {rate_hz:?}
status_interval_ms = 250

[policy]
# The learner's initial policy; later ones arrive signed over the network.
path = {policy:?}
reload_poll_ms = 0
public_key = "{public_key}"

[mode]
kind = "explore"
seed = {seed}
# Discrete policies, Ape-X: actor i explores with epsilon^(1 + 7 i / (N - 1)).
epsilon = {epsilon:?}
actor_index = {index}
num_actors = {robots}
epsilon_alpha = 7.0
# Continuous policies: noise of sigma times each action's half range per tick
# (Ornstein-Uhlenbeck: pulled back to 0 by ou_theta per tick).
noise = "{noise}"
sigma = {sigma:?}
ou_theta = {ou_theta:?}

{transport}"#
    )
}

/// How robots explore.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Explore {
    /// Base ε of the Ape-X schedule (discrete actions).
    epsilon: f64,
    /// Continuous actions: Gaussian or Ornstein–Uhlenbeck noise.
    noise: Noise,
    /// Action noise per tick as a fraction of the half range (continuous actions).
    sigma: f64,
    /// OU mean reversion per tick.
    ou_theta: f64,
}

impl Explore {
    /// What the robots of an `algo` learner use, in a few words.
    fn describe(&self, algo: &str) -> String {
        match (algo, self.noise) {
            ("dqn" | "drqn", _) => format!("Ape-X ε from {}", self.epsilon),
            (_, Noise::Ou) => format!(
                "OU noise, σ {:.3} and θ {:.3} per tick",
                self.sigma, self.ou_theta
            ),
            _ => format!("Gaussian noise, σ {:.3} per tick", self.sigma),
        }
    }
}

/// The learner's configuration as `serve` will resolve it, and the `--set`s
/// that make it so.
#[derive(Debug)]
struct LearnerSetup {
    run: RunConfig,
    /// The fleet's network sizes (where neither `--config` nor `--set` names
    /// them), then `--set`.
    sets: Vec<String>,
}

/// The algorithms the learner service trains.
const FLEET_ALGOS: [&str; 5] = ["dqn", "drqn", "ddpg", "td3", "naf"];

/// `serve` options the fleet passes itself, because the robots follow them too.
const OWN_SERVE_OPTIONS: [&str; 5] = ["--config", "--env", "--algo", "--seed", "--set"];

/// `key` (dotted, as in `--set`) is in the TOML table `file`.
fn names(file: &toml::Table, key: &str) -> bool {
    let mut table = file;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        match (table.get(part), parts.peek()) {
            (Some(_), None) => return true,
            (Some(toml::Value::Table(inner)), Some(_)) => table = inner,
            _ => return false,
        }
    }
    false
}

/// The learner's configuration as `serve` will resolve it: the preset for the
/// env and algorithm, `--config`, the fleet's network sizes, then `--set`.
fn learner_config(args: &FleetArgs) -> anyhow::Result<LearnerSetup> {
    for arg in &args.serve_args {
        let name = arg.split('=').next().unwrap_or(arg);
        if OWN_SERVE_OPTIONS.contains(&name) {
            bail!("--serve-arg={arg}: use the fleet's own {name}: the robots follow it too");
        }
    }
    let mut explicit = toml::Table::new();
    if let Some(env) = &args.env {
        explicit.insert("env".into(), env.clone().into());
    }
    if let Some(algo) = &args.algo {
        explicit.insert("algo".into(), algo.clone().into());
    }
    if let Some(seed) = args.seed {
        let seed = i64::try_from(seed).context("--seed must be below 2^63")?;
        explicit.insert("seed".into(), seed.into());
    }
    let config = args.config.as_deref();
    let resolve = |sets: &[String]| reflex_trainer::run::resolve(config, sets, &explicit);
    let base = resolve(&args.sets)?;
    if !FLEET_ALGOS.contains(&base.algo.as_str()) {
        bail!(
            "algo = {:?}: the fleet's learner trains {}",
            base.algo,
            FLEET_ALGOS.join(", ")
        );
    }
    // The fleet's smaller networks, unless the file sets them (`--set` comes
    // after them, so it wins anyway).
    let file: toml::Table = match config {
        Some(path) => toml::from_str(&fs::read_to_string(path)?)?,
        None => toml::Table::new(),
    };
    let mut sets: Vec<String> = fleet_nets(&base.algo)
        .into_iter()
        .filter(|set| !base.recurrent && !names(&file, set.split('=').next().unwrap_or(set)))
        .collect();
    sets.extend(args.sets.iter().cloned());
    Ok(LearnerSetup {
        run: resolve(&sets)?,
        sets,
    })
}

/// How the robots explore: `--epsilon`, and for continuous actions the
/// learner's own noise process (its preset's, with `--set`) in reflexd's
/// per-tick terms, unless `--noise`, `--sigma` or `--ou-theta` say otherwise.
/// The trainer's OU step is `x += −θ·x·dt + σ·√dt·z` in half-range units;
/// reflexd's is `x += −θ'·x + σ'·z`, so θ' = θ·dt and σ' = σ·√dt.
fn explore(args: &FleetArgs, run: &RunConfig) -> anyhow::Result<Explore> {
    let learner = match run.algo.as_str() {
        "ddpg" => Some(&run.ddpg.noise),
        "td3" => Some(&run.td3.noise),
        "naf" => Some(&run.naf.noise),
        _ => None,
    };
    let (noise, sigma, ou_theta) = match learner {
        Some(n) => {
            let sigma = n.sigma.value(0, 1);
            match n.kind {
                NoiseKind::Gaussian => (Noise::Gaussian, sigma, 0.15),
                NoiseKind::Ou => (Noise::Ou, sigma * n.ou_dt.sqrt(), n.ou_theta * n.ou_dt),
            }
        }
        None => (Noise::Gaussian, 0.1, 0.15),
    };
    let explore = Explore {
        epsilon: args.epsilon,
        noise: match args.noise.as_deref() {
            Some("ou") => Noise::Ou,
            Some(_) => Noise::Gaussian,
            None => noise,
        },
        sigma: args.sigma.unwrap_or(sigma),
        ou_theta: args.ou_theta.unwrap_or(ou_theta),
    };
    // The daemons' own check of these values, before any process starts.
    ModeConfig {
        kind: Mode::Explore,
        epsilon: explore.epsilon,
        num_actors: args.robots.max(1),
        noise: explore.noise,
        sigma: explore.sigma,
        ou_theta: explore.ou_theta,
        ..ModeConfig::default()
    }
    .validate()
    .map_err(|e| {
        anyhow::anyhow!("the robots' exploration (--epsilon, --sigma, --ou-theta): {e}")
    })?;
    Ok(explore)
}

/// How a robot's daemon reaches the learner and its simulator.
enum Network {
    /// zenoh endpoints to connect to.
    Zenoh { connect: Vec<String> },
    /// A ROS 2 domain.
    Ros2 { domain: u16 },
}

/// A daemon's final totals, the exact numbers after its spool was flushed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct DaemonTotals {
    sent: u64,
    spooled: u64,
    dropped: u64,
    /// Steps that became no transition (see reflexd's `steps_unsent`).
    unsent: u64,
}

/// A daemon's final totals from its log (`reflexd stopped … sent=N spooled=N
/// dropped=N unsent=N`).
fn daemon_totals(log: &Path) -> Option<DaemonTotals> {
    let text = String::from_utf8_lossy(&fs::read(log).ok()?).into_owned();
    let line = text.lines().rev().find(|l| l.contains("reflexd stopped"))?;
    let field = |name: &str| -> Option<u64> {
        line.split_whitespace()
            .filter_map(|tok| tok.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
    };
    Some(DaemonTotals {
        sent: field("sent")?,
        spooled: field("spooled")?,
        dropped: field("dropped")?,
        unsent: field("unsent")?,
    })
}

/// `summary.json`, and the last line of stdout.
#[derive(Debug, Serialize)]
struct Summary {
    eval_mean_return: f64,
    eval_std_return: f64,
    eval_episodes: u32,
    solved: bool,
    stop_reason: String,
    transitions_produced: u64,
    transitions_sent: u64,
    transitions_received: u64,
    transitions_dropped: u64,
    transitions_spooled: u64,
    /// Sent by the daemons, never received: `transitions_sent −
    /// transitions_received` (exact with the daemons' final reports).
    lost_in_transit: u64,
    /// Steps missing from the robots' episode streams as the learner saw them:
    /// lost in transit, or never sent.
    steps_missing: u64,
    /// Steps the daemons took that became no transition (a watchdog trip between
    /// a step and its next observation, an observation not acted on); known from
    /// their final reports only.
    steps_unsent: Option<u64>,
    duplicates: u64,
    decode_errors: u64,
    robots: u32,
    updates: u64,
    policy_version: u64,
    policy: String,
    wall_s: f64,
    time_to_solve_s: Option<f64>,
    transitions_per_s: f64,
    /// Transitions/s while the robots were sending (first to last batch received).
    receiving_transitions_per_s: f64,
    /// Learner updates/s from its first update to its last.
    training_updates_per_s: f64,
    accounting: &'static str,
}

fn stop_all(procs: &mut [Proc]) {
    for p in procs.iter_mut().rev() {
        p.stop(Duration::from_secs(5));
    }
}

pub fn fleet(args: FleetArgs) -> anyhow::Result<()> {
    if args.robots == 0 {
        bail!("--robots must be at least 1");
    }
    if !(args.rate_hz.is_finite() && args.rate_hz > 0.0) {
        bail!("--rate-hz must be positive");
    }
    let started = Instant::now();
    let exe = std::env::current_exe().context("locating reflex-train")?;
    let bin_dir = exe.parent().context("reflex-train has no parent folder")?;
    let profile = if bin_dir.ends_with("release") {
        " --release"
    } else {
        ""
    };
    let sim_bin = bin_dir.join("reflex-sim");
    let daemon_bin = bin_dir.join("reflexd");
    for bin in [&sim_bin, &daemon_bin] {
        if !bin.exists() {
            bail!(
                "{} not found next to {}: build it with `cargo build{profile} -p reflex-sim -p reflex-daemon`",
                bin.display(),
                exe.display()
            );
        }
    }
    let out = &args.out;
    for sub in ["robots", "logs"] {
        fs::create_dir_all(out.join(sub))
            .with_context(|| format!("--out {}: cannot make its {sub} folder", out.display()))?;
    }
    let out = out.canonicalize()?;
    // The last run's reports go either way: a finished run's learner.json says
    // `done`, which would stop a resumed learner as soon as it started.
    for name in ["learner.json", "summary.json"] {
        let _ = fs::remove_file(out.join(name));
    }
    if !args.resume {
        // A fresh run; the signing key (the fleet's identity) stays.
        for name in [POLICY_FILE, "config.toml", METRICS_FILE, CURVE_FILE] {
            let _ = fs::remove_file(out.join(name));
        }
        let _ = fs::remove_dir_all(out.join("checkpoints"));
    }
    let LearnerSetup { run, sets } = learner_config(&args)?;
    let explore = explore(&args, &run)?;
    // The robots' simulator, and the final evaluation's.
    let mut eval_env = reflex_sim::make(&run.env)?;
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, shutdown.clone())
            .context("installing signal handlers")?;
    }

    let ros_domain = if args.transport == "ros2" {
        Some(match args.ros_domain {
            Some(d) => d,
            None => reflex_ros2::domain_from_env()?,
        })
    } else {
        None
    };
    let port = match args.port {
        Some(p) => p,
        None => free_port()?,
    };
    let endpoint = match ros_domain {
        Some(d) => format!("ROS 2 domain {d}"),
        None => format!("tcp/127.0.0.1:{port}"),
    };
    let mut learner_cmd = Command::new(&exe);
    learner_cmd
        .args(["serve", "--env", &run.env, "--algo", &run.algo, "--fleet"])
        .arg(&args.fleet);
    if let Some(config) = &args.config {
        learner_cmd.arg("--config").arg(config);
    }
    match ros_domain {
        Some(d) => learner_cmd.args(["--transport", "ros2", "--ros-domain", &d.to_string()]),
        None => learner_cmd.args(["--listen", &endpoint]),
    };
    learner_cmd
        .args(["--quiet", "--linger", "--seed"])
        .arg(run.seed.to_string())
        .arg("--out")
        .arg(&out);
    learner_cmd.args(["--max-transitions", &args.max_transitions.to_string()]);
    if let Some(t) = args.target_return {
        learner_cmd.args(["--target-return", &t.to_string()]);
    }
    // The fleet's learner trains while robots act in real time, so it must keep up
    // with them: a 64×64 network does (the preset's 256×256 fell behind at 1 kHz
    // on 2 cores and did not solve CartPole in 60k transitions); `sets` has it
    // unless the config or `--set` says otherwise. A recurrent learner keeps its
    // preset's networks: its LSTM is the cost.
    for set in &sets {
        learner_cmd.args(["--set", set]);
    }
    learner_cmd.args(&args.serve_args);
    let logs = out.join("logs");
    let mut learner = Proc::spawn("learner", &mut learner_cmd, logs.join("learner.log"))?;
    eprintln!(
        "fleet: learner on {endpoint} (log {})",
        learner.log.display()
    );

    // The learner writes the initial policy and its public key before it serves.
    let policy = out.join(POLICY_FILE);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(policy.exists() && out.join(PUB_FILE).exists()) {
        if !learner.alive() {
            bail!(
                "the learner exited before serving; {}:\n{}",
                learner.log.display(),
                learner.tail()
            );
        }
        if Instant::now() > deadline || shutdown.load(Ordering::SeqCst) {
            learner.stop(Duration::from_secs(5));
            bail!("the learner did not write {} in time", policy.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let public_key = fs::read_to_string(out.join(PUB_FILE))?.trim().to_string();

    let mut robots: Vec<Proc> = Vec::new();
    let mut daemons: Vec<(String, PathBuf)> = Vec::new();
    for i in 0..args.robots {
        let robot = format!("r{i}");
        let sim_port = free_port()?;
        let sim_endpoint = format!("tcp/127.0.0.1:{sim_port}");
        let config = out.join("robots").join(format!("{robot}.toml"));
        fs::write(
            &config,
            robot_toml(
                &robot,
                &args.fleet,
                args.rate_hz,
                &policy,
                &public_key,
                run.seed.wrapping_mul(1000).wrapping_add(u64::from(i)),
                i,
                args.robots,
                &explore,
                &match ros_domain {
                    Some(domain) => Network::Ros2 { domain },
                    None => Network::Zenoh {
                        connect: vec![endpoint.clone(), sim_endpoint.clone()],
                    },
                },
            ),
        )?;
        let mut sim = Command::new(&sim_bin);
        sim.args(["serve", "--env", &run.env, "--robot", &robot, "--fleet"])
            .arg(&args.fleet);
        match ros_domain {
            Some(d) => sim.args(["--transport", "ros2", "--ros-domain", &d.to_string()]),
            None => sim.args(["--listen", &sim_endpoint]),
        };
        sim.arg("--seed").arg(
            run.seed
                .wrapping_mul(1_000_003)
                .wrapping_add(u64::from(i) * 100_000)
                .to_string(),
        );
        let spawned = Proc::spawn(
            &format!("reflex-sim {robot}"),
            &mut sim,
            logs.join(format!("sim-{robot}.log")),
        );
        match spawned {
            Ok(p) => robots.push(p),
            Err(e) => {
                stop_all(&mut robots);
                learner.stop(Duration::from_secs(10));
                return Err(e);
            }
        }
        let mut daemon = Command::new(&daemon_bin);
        daemon.arg("run").arg("--config").arg(&config);
        let log = logs.join(format!("reflexd-{robot}.log"));
        match Proc::spawn(&format!("reflexd {robot}"), &mut daemon, log.clone()) {
            Ok(p) => robots.push(p),
            Err(e) => {
                stop_all(&mut robots);
                learner.stop(Duration::from_secs(10));
                return Err(e);
            }
        }
        daemons.push((robot, log));
    }
    eprintln!(
        "fleet: {} robots at {} Hz exploring with {} (configs in {}, logs in {})",
        args.robots,
        args.rate_hz,
        explore.describe(&run.algo),
        out.join("robots").display(),
        logs.display()
    );

    // Run until the learner is done.
    let mut last_line = Instant::now();
    let mut failure: Option<String> = None;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if shutdown.load(Ordering::SeqCst) {
            failure = Some("interrupted".into());
            break;
        }
        if !learner.alive() {
            failure = Some(learner.death());
            break;
        }
        if let Some(dead) = robots.iter_mut().find_map(|p| (!p.alive()).then_some(p)) {
            failure = Some(dead.death());
            break;
        }
        let report = read_report(&out).ok();
        if report.as_ref().is_some_and(|r| r.done) {
            break;
        }
        if last_line.elapsed() >= Duration::from_secs(5) {
            last_line = Instant::now();
            if let Some(r) = report {
                eprintln!(
                    "fleet: {:>5.0}s  robots {}  received {} ({:.0}/s)  updates {}  policy v{}  eval {}",
                    started.elapsed().as_secs_f64(),
                    r.robots_seen,
                    r.transitions_received,
                    r.transitions_per_s,
                    r.updates,
                    r.policy_version,
                    r.eval_mean_return
                        .map_or("-".to_string(), |m| format!("{m:.1}"))
                );
            }
        }
    }

    // Daemons first (they flush their spools to the still-listening learner), then the
    // simulators, then the learner.
    let (daemon_procs, sim_procs): (Vec<_>, Vec<_>) = robots
        .into_iter()
        .partition(|p| p.name.starts_with("reflexd"));
    let mut daemon_procs = daemon_procs;
    let mut sim_procs = sim_procs;
    stop_all(&mut daemon_procs);
    stop_all(&mut sim_procs);
    std::thread::sleep(Duration::from_millis(500));
    learner.stop(Duration::from_secs(60));
    if let Some(failure) = failure {
        bail!("fleet stopped: {failure}");
    }

    let report: LearnerReport = read_report(&out).context("reading the learner's report")?;
    let mut loaded =
        Policy::load(&policy).with_context(|| format!("loading {}", policy.display()))?;
    // The episodes the learner's "solved" was decided on.
    let eval_episodes = args.eval_episodes.unwrap_or(run.eval_episodes);
    let (eval_mean, eval_std) = evaluate_policy(
        &mut loaded,
        eval_env.as_mut(),
        eval_episodes,
        eval_seed(run.seed),
    )?;

    // Exact totals from each daemon's final report when every one logged it; else the
    // robots' last heartbeats.
    let exact: Option<Vec<DaemonTotals>> =
        daemons.iter().map(|(_, log)| daemon_totals(log)).collect();
    let (totals, exact) = match exact {
        Some(all) => (
            all.iter()
                .fold(DaemonTotals::default(), |a, t| DaemonTotals {
                    sent: a.sent + t.sent,
                    spooled: a.spooled + t.spooled,
                    dropped: a.dropped + t.dropped,
                    unsent: a.unsent + t.unsent,
                }),
            true,
        ),
        None => (
            DaemonTotals {
                sent: report.status_sent,
                spooled: report.status_spooled,
                dropped: report.status_dropped,
                unsent: 0,
            },
            false,
        ),
    };
    let accounting = if exact {
        "daemon final reports"
    } else {
        "daemon heartbeats"
    };
    let DaemonTotals {
        sent,
        spooled,
        dropped,
        unsent,
    } = totals;
    let lost = sent.saturating_sub(report.transitions_received);
    let summary = Summary {
        eval_mean_return: eval_mean,
        eval_std_return: eval_std,
        eval_episodes,
        solved: report.solved,
        stop_reason: report.stop_reason.clone(),
        transitions_produced: sent + spooled + dropped,
        transitions_sent: sent,
        transitions_received: report.transitions_received,
        transitions_dropped: dropped + lost,
        transitions_spooled: spooled,
        lost_in_transit: lost,
        steps_missing: report.missing_steps,
        steps_unsent: exact.then_some(unsent),
        duplicates: report.duplicates,
        decode_errors: report.decode_errors,
        robots: args.robots,
        updates: report.updates,
        policy_version: report.policy_version,
        policy: policy.display().to_string(),
        wall_s: started.elapsed().as_secs_f64(),
        time_to_solve_s: report.time_to_solve_s,
        transitions_per_s: report.transitions_per_s,
        receiving_transitions_per_s: report.receiving_transitions_per_s,
        training_updates_per_s: report.training_updates_per_s,
        accounting,
    };
    fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    eprintln!(
        "fleet: {} after {:.1}s: greedy eval {:.1} ± {:.1} over {} episodes (policy v{}, {} updates)\n\
         fleet: transitions produced {}, sent {}, received {}, dropped {} (lost in transit {}), \
         spooled {}, duplicates {}; {:.0} transitions/s into the learner\n\
         fleet: steps missing from the episode streams {} (the daemons sent no transition for {})\n\
         fleet: policy {}, learning curve {}",
        if report.solved { "solved" } else { "stopped" },
        summary.wall_s,
        eval_mean,
        eval_std,
        eval_episodes,
        report.policy_version,
        report.updates,
        summary.transitions_produced,
        sent,
        report.transitions_received,
        summary.transitions_dropped,
        lost,
        spooled,
        report.duplicates,
        report.transitions_per_s,
        report.missing_steps,
        summary
            .steps_unsent
            .map_or("an unknown number".to_string(), |n| n.to_string()),
        policy.display(),
        out.join(CURVE_FILE).display()
    );
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fleet that returns early (an error) leaves no child running.
    #[test]
    fn a_dropped_process_is_stopped() {
        let dir = std::env::temp_dir().join(format!("reflex-proc-drop-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("60");
        let proc = Proc::spawn("sleeper", &mut cmd, dir.join("sleep.log")).unwrap();
        let pid = proc.child.id().to_string();
        let alive = || {
            Command::new("kill")
                .args(["-0", &pid])
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success()
        };
        assert!(alive());
        // In a process group of its own (Ctrl-C reaches only the fleet).
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let pgrp = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(2)
            .unwrap();
        assert_eq!(pgrp, pid, "{stat}");
        drop(proc);
        assert!(!alive(), "the child outlived its Proc");
        fs::remove_dir_all(&dir).ok();
    }
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        fleet: FleetArgs,
    }

    fn explore_for(args: &[&str]) -> anyhow::Result<Explore> {
        let cli = Cli::try_parse_from(std::iter::once("fleet").chain(args.iter().copied()))?;
        explore(&cli.fleet, &learner_config(&cli.fleet)?.run)
    }

    #[test]
    fn robots_explore_with_the_learners_noise_in_reflexd_terms() {
        // MountainCarContinuous' TD3 preset: OU with σ 0.5, θ 0.15, dt 0.1 → per
        // tick σ' = 0.5·√0.1, θ' = 0.015.
        let mcc = explore_for(&["--env", "mountaincarcontinuous", "--algo", "td3"]).unwrap();
        assert_eq!(mcc.noise, Noise::Ou);
        assert!((mcc.sigma - 0.5 * 0.1f64.sqrt()).abs() < 1e-12, "{mcc:?}");
        assert!((mcc.ou_theta - 0.015).abs() < 1e-12, "{mcc:?}");
        // Pendulum's TD3 preset: Gaussian σ 0.1; `--set` changes the learner's
        // noise and so the robots'; the flags override both.
        let pendulum = explore_for(&["--env", "pendulum", "--algo", "td3"]).unwrap();
        assert_eq!((pendulum.noise, pendulum.sigma), (Noise::Gaussian, 0.1));
        let set = explore_for(&[
            "--env",
            "pendulum",
            "--algo",
            "td3",
            "--set",
            "td3.noise.sigma={ start = 0.3, end = 0.3, fraction = 1.0, shape = \"linear\" }",
        ])
        .unwrap();
        assert_eq!(set.sigma, 0.3);
        let flags = explore_for(&[
            "--env",
            "pendulum",
            "--algo",
            "td3",
            "--noise",
            "ou",
            "--sigma",
            "0.2",
            "--ou-theta",
            "0.05",
        ])
        .unwrap();
        assert_eq!(
            (flags.noise, flags.sigma, flags.ou_theta),
            (Noise::Ou, 0.2, 0.05)
        );
        assert!(flags.describe("td3").contains("OU noise"));
        // DQN robots use the Ape-X ε schedule.
        let dqn = explore_for(&["--epsilon", "0.5"]).unwrap();
        assert_eq!(dqn.epsilon, 0.5);
        assert!(dqn.describe("dqn").contains("ε from 0.5"));
        // Refusals.
        assert!(
            explore_for(&["--env", "pendulum", "--algo", "td3", "--ou-theta", "0"])
                .unwrap_err()
                .to_string()
                .contains("(0, 1]")
        );
        assert!(
            explore_for(&["--env", "pendulum", "--algo", "td3", "--sigma=-1"])
                .unwrap_err()
                .to_string()
                .contains("mode.sigma = -1")
        );
        assert!(explore_for(&["--epsilon", "1.5"])
            .unwrap_err()
            .to_string()
            .contains("mode.epsilon = 1.5"));
        assert!(
            explore_for(&["--algo", "ppo"]).is_err(),
            "clap refuses unknown learners"
        );
    }

    fn setup_for(args: &[&str]) -> anyhow::Result<LearnerSetup> {
        let cli = Cli::try_parse_from(std::iter::once("fleet").chain(args.iter().copied()))?;
        learner_config(&cli.fleet)
    }

    #[test]
    fn a_config_file_sets_the_learner_and_the_robots_noise() {
        let dir = std::env::temp_dir().join(format!("reflex-fleet-config-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("learner.toml");
        fs::write(
            &file,
            r#"env = "pendulum"
algo = "td3"
seed = 7

[td3.critic]
hidden = [32, 32]

[td3.noise]
kind = "ou"
sigma = { start = 0.4, end = 0.4, fraction = 1.0, shape = "linear" }
ou_theta = 0.2
ou_dt = 0.05
"#,
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let setup = setup_for(&["--config", path]).unwrap();
        let run = &setup.run;
        assert_eq!(
            (run.env.as_str(), run.algo.as_str(), run.seed),
            ("pendulum", "td3", 7)
        );
        // The file's critic stands; the actor the file leaves alone gets the
        // fleet's size.
        assert_eq!(run.td3.critic.hidden, vec![32, 32]);
        assert_eq!(run.td3.actor.hidden, vec![64, 64]);
        assert_eq!(setup.sets, vec!["td3.actor.hidden=[64,64]".to_string()]);
        // The robots explore with the file's OU process, in reflexd's terms.
        let explore = explore(
            &Cli::try_parse_from(["fleet", "--config", path])
                .unwrap()
                .fleet,
            run,
        )
        .unwrap();
        assert_eq!(explore.noise, Noise::Ou);
        assert!(
            (explore.sigma - 0.4 * 0.05f64.sqrt()).abs() < 1e-12,
            "{explore:?}"
        );
        assert!((explore.ou_theta - 0.01).abs() < 1e-12, "{explore:?}");
        // Flags and --set apply over the file.
        let over = setup_for(&[
            "--config",
            path,
            "--seed",
            "3",
            "--set",
            "td3.critic.hidden=[16]",
        ])
        .unwrap();
        assert_eq!(
            (over.run.seed, over.run.td3.critic.hidden.clone()),
            (3, vec![16])
        );

        // Refusals: what the robots must follow cannot go around the fleet.
        for arg in [
            "--serve-arg=--config=x.toml",
            "--serve-arg=--env",
            "--serve-arg=--set",
        ] {
            let err = setup_for(&["--config", path, arg]).unwrap_err().to_string();
            assert!(err.contains("use the fleet's own --"), "{err}");
        }
        fs::write(&file, "algo = \"ppo\"\n").unwrap();
        assert!(setup_for(&["--config", path]).is_err());
        fs::write(&file, "[td3]\nno_such_key = 1\n").unwrap();
        assert!(setup_for(&["--config", path, "--algo", "td3"]).is_err());
        assert!(setup_for(&["--config", "/no/such/file.toml"]).is_err());
        fs::remove_dir_all(&dir).ok();
    }
}
