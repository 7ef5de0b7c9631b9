//! reflexd's control tick at 1 kHz with a real ONNX policy: latency (fresh
//! observation → action sent: policy + exploration + safety + bookkeeping),
//! wake-up jitter, overruns, and the process's peak resident memory.
//!
//!     cargo bench -p reflex-daemon --bench tick_latency -- POLICY.onnx [SECONDS] [RATE_HZ] [SPIN_US] [ROBOT] [ENGINE]
//!
//! A simulated CartPole (reflex-sim, in a thread, over the in-process transports)
//! answers every action with the next observation, so each tick acts on a fresh
//! observation as on a robot. `ROBOT` says how that robot waits for actions:
//! `blocking` (default) sleeps on the action channel, so every action the daemon
//! sends wakes it (a futex wake inside the tick); `polling` checks for a new action
//! every 100 µs, as a hardware driver's own fixed-rate loop reads the latest
//! command, so the daemon's send never wakes a thread. `ENGINE` is `native`
//! (default: what `reflexd` uses for the graphs reflex exports) or `tract`. The numbers come from the daemon's own histograms
//! (`LoopStats`), the ones `Status` reports. Peak RSS is `VmHWM` of this process,
//! which also holds the simulator thread: an upper bound for the daemon alone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reflex_daemon::config::Mode;
use reflex_daemon::policy::onnx_loader;
use reflex_daemon::transport::{inproc, Null};
use reflex_daemon::{Actor, LoadOptions, Loader, Policy};
use reflex_daemon::{Config, Daemon, Transports};
use reflex_msgs::Observation;

fn vm_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let Some(path) = args.first() else {
        eprintln!("usage: tick_latency POLICY.onnx [SECONDS] [RATE_HZ] [SPIN_US]");
        std::process::exit(2);
    };
    let seconds: f64 = args.get(1).map_or(10.0, |s| s.parse().unwrap());
    let rate: f64 = args.get(2).map_or(1000.0, |s| s.parse().unwrap());
    let spin_us: u64 = args.get(3).map_or(0, |s| s.parse().unwrap());
    let polling = match args.get(4).map_or("blocking", String::as_str) {
        "blocking" => false,
        "polling" => true,
        other => {
            eprintln!("ROBOT is `blocking` or `polling`, not `{other}`");
            std::process::exit(2);
        }
    };

    let mut config = Config {
        robot_id: "bench".into(),
        rate_hz: rate,
        ..Config::default()
    };
    config.policy.path = path.into();
    config.policy.reload_poll_ms = 0;
    config.spin_us = spin_us;
    config.mode.kind = Mode::Explore;
    config.mode.epsilon = 0.05;
    let native = match args.get(5).map_or("native", String::as_str) {
        "native" => true,
        "tract" => false,
        other => {
            eprintln!("ENGINE is `native` or `tract`, not `{other}`");
            std::process::exit(2);
        }
    };
    let bytes = std::fs::read(path).expect("reading the policy");
    let loader: Loader = if native {
        onnx_loader()
    } else {
        Arc::new(|bytes: &[u8]| {
            let policy = Policy::from_bytes_with(bytes, LoadOptions { native: false })?;
            Ok(Box::new(policy) as Box<dyn Actor>)
        })
    };
    let actor = loader(&bytes).expect("the policy loads");
    let actor_engine = if native { "native" } else { "tract" };

    let (obs_tx, obs_rx) = inproc::observations();
    let (action_tx, action_rx) = inproc::actions();
    let (transition_tx, transition_rx, _link) = inproc::transitions();
    let (status_tx, _status_rx) = inproc::status();
    let daemon = Daemon::start(
        &config,
        actor,
        loader,
        Transports {
            observations: Box::new(obs_rx),
            actions: Box::new(action_tx),
            transitions: Box::new(transition_tx),
            status: Box::new(status_tx),
            policies: Box::new(Null),
        },
    )
    .expect("daemon starts");

    let stop = Arc::new(AtomicBool::new(false));
    let sim_stop = stop.clone();
    let sim = std::thread::spawn(move || {
        let mut env = reflex_sim::make("cartpole").unwrap();
        let (mut seq, mut episode_id, mut step) = (0u64, 0u64, 0u32);
        let mut values = env.reset(Some(0)).to_vec();
        let observation =
            |seq, episode_id, step, values: &[f32], reward, terminated, truncated| Observation {
                robot_id: "bench".into(),
                seq,
                episode_id,
                step,
                values: values.to_vec(),
                reward,
                terminated,
                truncated,
                ..Observation::default()
            };
        let _ = obs_tx.send(observation(
            seq, episode_id, step, &values, 0.0, false, false,
        ));
        while !sim_stop.load(Ordering::Relaxed) {
            let next = if polling {
                action_rx.try_recv().ok().or_else(|| {
                    std::thread::sleep(Duration::from_micros(100));
                    None
                })
            } else {
                action_rx.recv_timeout(Duration::from_millis(100)).ok()
            };
            let Some(command) = next else {
                continue;
            };
            if command.seq != seq {
                continue;
            }
            let result = env.step(&command.action).unwrap();
            values.copy_from_slice(env.obs());
            seq += 1;
            step += 1;
            let _ = obs_tx.send(observation(
                seq,
                episode_id,
                step,
                &values,
                result.reward as f32,
                result.terminated,
                result.truncated,
            ));
            if result.done() {
                episode_id += 1;
                step = 0;
                seq += 1;
                values = env.reset(None).to_vec();
                let _ = obs_tx.send(observation(
                    seq, episode_id, step, &values, 0.0, false, false,
                ));
            }
        }
    });
    // Drain transitions as a learner would.
    let drain_stop = stop.clone();
    let drain = std::thread::spawn(move || {
        let mut n = 0usize;
        while !drain_stop.load(Ordering::Relaxed) {
            if let Ok(batch) = transition_rx.recv_timeout(Duration::from_millis(50)) {
                n += batch.transitions.len();
            }
        }
        n
    });

    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let report = daemon.stop();
    stop.store(true, Ordering::Relaxed);
    sim.join().unwrap();
    let received = drain.join().unwrap();
    let s = report.stats;
    let us = |ns: u64| ns as f64 / 1000.0;
    println!(
        "policy {path} on {}, spin_us {spin_us}, robot {}\n{:.1} s at {rate} Hz: {} ticks, {} acting, {} overruns, {} skipped deadlines",
        actor_engine,
        if polling { "polling" } else { "blocking" },
        started.elapsed().as_secs_f64(),
        s.ticks,
        s.acting_ticks,
        s.overruns,
        s.skipped_deadlines
    );
    println!(
        "tick latency (obs → action) µs: p50 {:.1}  p99 {:.1}  max {:.1}",
        us(s.latency_p50_ns),
        us(s.latency_p99_ns),
        us(s.latency_max_ns)
    );
    println!(
        "wake-up jitter µs:             p50 {:.1}  p99 {:.1}  max {:.1}",
        us(s.jitter_p50_ns),
        us(s.jitter_p99_ns),
        us(s.jitter_max_ns)
    );
    let t = report.transitions;
    println!(
        "transitions: produced {} sent {} spooled {} dropped {} (received {received})",
        t.produced, t.sent, t.spooled, t.dropped
    );
    println!(
        "peak RSS {:.1} MiB (VmHWM; current {:.1} MiB)",
        vm_kib("VmHWM:") as f64 / 1024.0,
        vm_kib("VmRSS:") as f64 / 1024.0
    );
}
