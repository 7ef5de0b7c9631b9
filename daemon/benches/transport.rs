//! reflexd's two network transports side by side, same payloads, same run: zenoh
//! (peer sessions over loopback TCP, scouting off) and ROS 2 (ros2-client/RustDDS,
//! multicast discovery: run it inside a network namespace, as
//! `scripts/bench-transport.sh` does).
//!
//!     cargo bench -p reflex-daemon --bench transport -- [SECONDS] [BATCH] [PACE]
//!
//! Both use the daemon's own transport code (`zenoh_transport::transports`,
//! `ros2_transport::transports`) on the robot-facing and learner-facing side, and
//! the peers a robot and a learner would use on the other:
//!
//! 1. Observation → action latency: a robot publishes a CartPole `Observation`, the
//!    daemon side polls its `ObservationSource` and answers at once with an
//!    `ActionCommand` through its `ActionSink` (no policy: the transport alone), and
//!    the robot waits for it. One observation in flight; p50/p99/max of the round
//!    trip as the robot sees it, over `2 * SECONDS / 5` seconds.
//! 2. Transitions/s: the daemon's `TransitionSink` sends `TransitionBatch`es of
//!    BATCH CartPole transitions for SECONDS, once as fast as the sink takes them
//!    (flood) and once paced at PACE batches/s; a learner-side subscriber counts
//!    what arrives. Then the sink is flushed and what did not arrive is reported as
//!    lost (counted, not assumed away).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reflex_daemon::config::TransportKind;
use reflex_daemon::transport::TransportError;
use reflex_daemon::zenoh::handlers::FifoChannel;
use reflex_daemon::zenoh::Wait;
use reflex_daemon::zenoh_link::{self, decode_sample, ZenohConfig};
use reflex_daemon::zenoh_transport::{self, ZenohTransportOptions};
use reflex_daemon::{ros2_transport, Config, Transports};
use reflex_msgs::{keys, Action, ActionCommand, Observation, Transition, TransitionBatch};
use reflex_ros2::{Link, Qos};

const ROBOT: &str = "bench";
const FLEET: &str = "bench";

fn observation(seq: u64) -> Observation {
    Observation {
        robot_id: ROBOT.into(),
        seq,
        timestamp_ns: seq,
        episode_id: 0,
        step: seq as u32,
        values: vec![0.01, -0.02, 0.03, -0.04],
        reward: 1.0,
        ..Observation::default()
    }
}

fn batch(seq: u64, n: usize) -> TransitionBatch {
    TransitionBatch {
        robot_id: ROBOT.into(),
        batch_seq: seq,
        transitions: (0..n)
            .map(|i| Transition {
                robot_id: ROBOT.into(),
                episode_id: seq,
                step: i as u32,
                obs: vec![0.01, -0.02, 0.03, -0.04],
                action: Action::Discrete((i % 2) as u32),
                reward: 1.0,
                next_obs: vec![0.02, -0.01, 0.02, -0.03],
                policy_version: 1,
                ..Transition::default()
            })
            .collect(),
        ..TransitionBatch::default()
    }
}

/// What the robot and the learner need from a transport under test.
trait Peers {
    fn send_obs(&mut self, obs: &Observation);
    /// The next action, polling until `deadline`.
    fn recv_action(&mut self, deadline: Instant) -> Option<ActionCommand>;
    /// Transitions received by the learner so far.
    fn received(&self) -> u64;
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

/// Runs both measurements on one transport; returns a table row.
fn measure(
    name: &str,
    mut daemon: Transports,
    peers: &mut dyn Peers,
    seconds: f64,
    n: usize,
    pace: f64,
) -> String {
    // Let discovery settle: round trips until one works.
    let mut obs_buf = Vec::new();
    let start = Instant::now();
    let mut seq = 0u64;
    let mut rtts: Vec<u64> = Vec::new();
    let latency_for = Duration::from_secs_f64(seconds * 2.0 / 5.0);
    let mut measuring_since: Option<Instant> = None;
    loop {
        if start.elapsed() > Duration::from_secs(30) && measuring_since.is_none() {
            panic!("{name}: no round trip in 30 s");
        }
        if measuring_since.is_some_and(|t| t.elapsed() >= latency_for) {
            break;
        }
        seq += 1;
        let t0 = Instant::now();
        peers.send_obs(&observation(seq));
        // The daemon side: poll until this observation arrives, answer it.
        let deadline = t0 + Duration::from_millis(200);
        let mut answered = false;
        while Instant::now() < deadline && !answered {
            obs_buf.clear();
            daemon.observations.poll(&mut obs_buf).unwrap();
            if let Some(o) = obs_buf.iter().rev().find(|o| o.seq == seq) {
                let cmd = ActionCommand {
                    robot_id: ROBOT.into(),
                    seq: o.seq,
                    action: Action::Discrete(1),
                    ..ActionCommand::default()
                };
                daemon.actions.send(&cmd).unwrap();
                answered = true;
            } else {
                std::hint::spin_loop();
            }
        }
        if !answered {
            continue;
        }
        let mut got = false;
        while let Some(a) = peers.recv_action(t0 + Duration::from_millis(200)) {
            if a.seq == seq {
                got = true;
                break;
            }
        }
        if got {
            if let Some(_since) = measuring_since {
                rtts.push(t0.elapsed().as_nanos() as u64);
            } else if seq > 50 {
                measuring_since = Some(Instant::now());
            }
        }
    }
    rtts.sort_unstable();
    let (p50, p99, max) = (
        percentile(&rtts, 0.5),
        percentile(&rtts, 0.99),
        *rtts.last().unwrap() as f64 / 1000.0,
    );

    let latency = format!("{p50:.0} | {p99:.0} | {max:.0} | {}", rtts.len());
    let flood = throughput(name, &mut daemon, peers, seconds, n, None);
    let paced = throughput(name, &mut daemon, peers, seconds, n, Some(pace));
    format!("| {name} | {flood} | {paced} | {latency} |")
}

/// Sends batches for `seconds` (as fast as the sink takes them, or `pace` batches/s),
/// flushes, waits for the learner side; returns "delivered/s | lost" cells.
fn throughput(
    name: &str,
    daemon: &mut Transports,
    peers: &mut dyn Peers,
    seconds: f64,
    n: usize,
    pace: Option<f64>,
) -> String {
    let before = peers.received();
    let mut sent = 0u64;
    let mut bseq = 0u64;
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < seconds {
        if let Some(rate) = pace {
            let due = t0 + Duration::from_secs_f64(bseq as f64 / rate);
            while Instant::now() < due {
                std::hint::spin_loop();
            }
        }
        match daemon.transitions.send(&batch(bseq, n)) {
            Ok(()) => {
                sent += n as u64;
                bseq += 1;
            }
            // Refused (window full, no learner): the uplink would spool and retry.
            Err(TransportError::Disconnected(_)) => {}
            Err(e) => panic!("{name}: {e}"),
        }
    }
    let flushed = daemon.transitions.flush(Duration::from_secs(10));
    let end = Instant::now() + Duration::from_secs(10);
    while peers.received() - before < sent && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    let received = peers.received() - before;
    let secs = t0.elapsed().as_secs_f64();
    if !flushed {
        eprintln!("{name}: not every batch was acknowledged");
    }
    format!(
        "{:.0} | {} ({:.2}%)",
        received as f64 / secs.max(seconds),
        sent - received.min(sent),
        100.0 * (sent - received.min(sent)) as f64 / sent.max(1) as f64
    )
}

// ---------------------------------------------------------------------------
// zenoh

struct ZenohPeers {
    obs: reflex_daemon::zenoh::pubsub::Publisher<'static>,
    actions: reflex_daemon::zenoh::pubsub::Subscriber<
        reflex_daemon::zenoh::handlers::FifoChannelHandler<reflex_daemon::zenoh::sample::Sample>,
    >,
    received: Arc<AtomicU64>,
    _learner: reflex_daemon::zenoh::pubsub::Subscriber<()>,
}

impl Peers for ZenohPeers {
    fn send_obs(&mut self, obs: &Observation) {
        zenoh_link::publish_cdr(&self.obs, obs).unwrap();
    }
    fn recv_action(&mut self, deadline: Instant) -> Option<ActionCommand> {
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.actions.try_recv() {
                return decode_sample(&s).ok();
            }
            std::hint::spin_loop();
        }
        None
    }
    fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }
}

fn zenoh_row(seconds: f64, n: usize, pace: f64) -> String {
    let port = zenoh_link::free_loopback_port().unwrap();
    let endpoint = format!("tcp/127.0.0.1:{port}");
    let daemon_session = zenoh_link::open(&ZenohConfig {
        listen: vec![endpoint.clone()],
        connect: vec![],
        ..ZenohConfig::default()
    })
    .unwrap();
    let other = zenoh_link::open(&ZenohConfig {
        connect: vec![endpoint],
        ..ZenohConfig::default()
    })
    .unwrap();
    let daemon = zenoh_transport::transports(
        &daemon_session,
        FLEET,
        ROBOT,
        ZenohTransportOptions::default(),
    )
    .unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let learner = other
        .declare_subscriber(keys::transitions_key(FLEET, ROBOT))
        .callback(move |s| {
            let b: TransitionBatch = decode_sample(&s).unwrap();
            counter.fetch_add(b.transitions.len() as u64, Ordering::SeqCst);
        })
        .wait()
        .unwrap();
    let mut peers = ZenohPeers {
        obs: other
            .declare_publisher(keys::obs_key(FLEET, ROBOT))
            .express(true)
            .wait()
            .unwrap(),
        actions: other
            .declare_subscriber(keys::action_key(FLEET, ROBOT))
            .with(FifoChannel::new(1024))
            .wait()
            .unwrap(),
        received,
        _learner: learner,
    };
    std::thread::sleep(Duration::from_millis(500));
    measure(
        "zenoh 1.10 (TCP, peer)",
        daemon,
        &mut peers,
        seconds,
        n,
        pace,
    )
}

// ---------------------------------------------------------------------------
// ROS 2

struct Ros2Peers {
    obs: reflex_ros2::Pub<Observation>,
    actions: reflex_ros2::Sub<ActionCommand>,
    buf: Vec<ActionCommand>,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    _learner: Option<std::thread::JoinHandle<()>>,
    _link: Arc<Link>,
}

impl Peers for Ros2Peers {
    fn send_obs(&mut self, obs: &Observation) {
        self.obs.publish(obs.clone()).unwrap();
    }
    fn recv_action(&mut self, deadline: Instant) -> Option<ActionCommand> {
        while Instant::now() < deadline {
            if self.buf.is_empty() {
                self.actions.drain(&mut self.buf);
            }
            if !self.buf.is_empty() {
                return Some(self.buf.remove(0));
            }
            std::hint::spin_loop();
        }
        None
    }
    fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }
}

impl Drop for Ros2Peers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self._learner.take() {
            let _ = t.join();
        }
    }
}

fn ros2_row(seconds: f64, n: usize, pace: f64) -> String {
    let mut config = Config {
        robot_id: ROBOT.into(),
        ..Config::default()
    };
    config.transport.kind = TransportKind::Ros2;
    config.transport.ros2.domain_id = 77;
    let link = ros2_transport::open(&config).unwrap();
    let daemon = ros2_transport::transports(&link, &config).unwrap();
    let other = Arc::new(Link::open(77, "/", "bench_peer").unwrap());
    let reliable = |depth| Qos {
        reliable: true,
        transient_local: false,
        depth,
        max_blocking: Duration::from_millis(100),
    };
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let learner = {
        let (other, received, stop) = (other.clone(), received.clone(), stop.clone());
        let mut sub = other
            .deep_subscription::<TransitionBatch>("/reflexd_bench/transitions", reliable(0), 4096)
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                sub.drain(&mut buf);
                let k: usize = buf.drain(..).map(|b| b.transitions.len()).sum();
                received.fetch_add(k as u64, Ordering::SeqCst);
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let mut peers = Ros2Peers {
        obs: other
            .publisher("/reflexd_bench/observation", reliable(10))
            .unwrap(),
        actions: other
            .subscription("/reflexd_bench/action", reliable(10))
            .unwrap(),
        buf: Vec::new(),
        received,
        stop,
        _learner: Some(learner),
        _link: other.clone(),
    };
    // Discovery: wait until the learner's reader is matched.
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end
        && !other
            .discovered_writers()
            .iter()
            .any(|w| w.topic == "/reflexd_bench/transitions")
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let row = measure(
        "ROS 2 (ros2-client 0.12 / RustDDS 0.15)",
        daemon,
        &mut peers,
        seconds,
        n,
        pace,
    );
    drop(peers);
    drop(link);
    row
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let seconds: f64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    let pace: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000.0);
    println!(
        "transport bench: {seconds} s of transitions per mode (batches of {n} CartPole transitions, {} B CDR each; paced at {pace} batches/s = {:.0} transitions/s), observation round trips for {:.1} s",
        reflex_msgs::encode(&batch(0, n)).unwrap().len(),
        pace * n as f64,
        seconds * 2.0 / 5.0
    );
    println!("| transport | flood: delivered transitions/s | flood: lost | paced: delivered transitions/s | paced: lost | obs→action p50 µs | p99 µs | max µs | round trips |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!("{}", zenoh_row(seconds, n, pace));
    println!("{}", ros2_row(seconds, n, pace));
}
