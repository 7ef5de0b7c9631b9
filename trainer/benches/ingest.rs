//! Ingest throughput: CartPole-sized transitions per second into the learner's replay
//! over zenoh on loopback, with zero loss (issue 10's target: ≥ 1,000,000/s).
//!
//!     cargo bench -p reflex-trainer --bench ingest -- [batch=64,256,1024] [publishers=1,4]
//!         [transitions=1000000] [repeats=3] [stages]
//!
//! The learner side is `reflex-train serve`'s own ingest path, called as the service
//! calls it: `learner::subscribe` (zenoh subscriber, CDR decode of each
//! `TransitionBatch` on zenoh's receive thread, an unbounded queue) and
//! `learner::Ingest` (per-robot `SeqTracker` / `EpisodeTracker`, shape and action
//! checks, the n-step window, the insert into the preset's replay buffer) on this
//! thread, which stands in for the learner's loop without the training.
//!
//! Each publisher is a simulated robot in a thread with a zenoh session of its own
//! (peer mode, connected to the learner's listen endpoint over TCP on 127.0.0.1,
//! scouting off). It publishes its batches as `reflexd` does (daemon/src/
//! zenoh_transport.rs): a declared publisher with `CongestionControl::Block`, priority
//! `Data`, tagged CDR, and only once a subscriber matches. Batches are encoded before
//! the clock starts: valid CartPole transitions (4 observations, 2 actions, reward 1),
//! `batch_seq` +1 per batch, steps consecutive within episodes of 10–500 steps that
//! end terminated (truncated at 500). The clock runs from the publishers' start to the
//! last transition stored in replay; a run fails unless every transition sent was
//! received and inserted with no gap, duplicate, lost step, invalid transition or
//! decode error.
//!
//! `stages` also times the pieces of the path alone on one thread (no zenoh): CDR
//! decode, `Ingest::batch` on decoded batches, and zenoh delivery with a subscriber
//! that only counts bytes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use reflex_daemon::zenoh;
use reflex_daemon::zenoh::qos::{CongestionControl, Priority};
use reflex_daemon::zenoh::Wait;
use reflex_daemon::zenoh_link::{self, cdr_encoding, ZenohConfig};
use reflex_msgs::{codec, keys, Action, Transition, TransitionBatch};
use reflex_trainer::algo::dqn::Replay;
use reflex_trainer::learner::{self, Incoming, Ingest, IngestTotals};
use reflex_trainer::replay::{ActionShape, ReplayBuffer};
use reflex_trainer::run::{resolve, RunConfig};

const FLEET: &str = "bench";
const OBS_DIM: usize = 4;
const N_ACTIONS: u32 = 2;

struct Options {
    batches: Vec<usize>,
    publishers: Vec<usize>,
    transitions: usize,
    repeats: usize,
    stages: bool,
}

fn list(value: &str) -> Vec<usize> {
    value
        .split(',')
        .map(|v| v.trim().parse().expect("a list of positive integers"))
        .collect()
}

fn options() -> Options {
    let mut o = Options {
        batches: vec![64, 256, 1024],
        publishers: vec![1, 4],
        transitions: 1_000_000,
        repeats: 3,
        stages: false,
    };
    for arg in std::env::args().skip(1).filter(|a| !a.starts_with("--")) {
        match arg.split_once('=') {
            Some(("batch", v)) => o.batches = list(v),
            Some(("publishers", v)) => o.publishers = list(v),
            Some(("transitions", v)) => o.transitions = v.parse().expect("transitions=N"),
            Some(("repeats", v)) => o.repeats = v.parse().expect("repeats=N"),
            None if arg == "stages" => o.stages = true,
            _ => panic!("unknown argument {arg:?}"),
        }
    }
    o
}

/// The preset the learner runs for CartPole (replay size, n-step, γ).
fn preset() -> RunConfig {
    let mut explicit = toml::Table::new();
    explicit.insert("env".into(), "cartpole".into());
    resolve(None, &[], &explicit).expect("the CartPole preset")
}

/// A small deterministic generator (no dependency, the same stream every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn unit(&mut self) -> f32 {
        (self.next() % 1_000_000) as f32 / 1_000_000.0 - 0.5
    }
}

/// Robot `robot`'s stream, `batches` batches of `size` transitions, decoded.
fn robot_batches(robot: &str, batches: usize, size: usize, seed: u64) -> Vec<TransitionBatch> {
    let mut rng = Lcg(seed);
    let mut episode = 0u64;
    let mut step = 0u32;
    let mut length = 10 + (rng.next() % 491) as u32;
    let mut obs: Vec<f32> = (0..OBS_DIM).map(|_| rng.unit()).collect();
    (0..batches)
        .map(|seq| {
            let transitions = (0..size)
                .map(|_| {
                    let next_obs: Vec<f32> = (0..OBS_DIM).map(|_| rng.unit()).collect();
                    let end = step + 1 == length;
                    let t = Transition {
                        robot_id: robot.to_string(),
                        episode_id: episode,
                        step,
                        obs: std::mem::replace(&mut obs, next_obs.clone()),
                        action: Action::Discrete((rng.next() % u64::from(N_ACTIONS)) as u32),
                        reward: 1.0,
                        next_obs,
                        terminated: end && length < 500,
                        truncated: end && length == 500,
                        policy_version: 1,
                        ..Transition::default()
                    };
                    if end {
                        episode += 1;
                        step = 0;
                        length = 10 + (rng.next() % 491) as u32;
                        obs = (0..OBS_DIM).map(|_| rng.unit()).collect();
                    } else {
                        step += 1;
                    }
                    t
                })
                .collect();
            TransitionBatch {
                robot_id: robot.to_string(),
                batch_seq: seq as u64,
                transitions,
                ..TransitionBatch::default()
            }
        })
        .collect()
}

fn encode_all(batches: &[TransitionBatch]) -> Vec<Vec<u8>> {
    batches
        .iter()
        .map(|b| codec::encode(b).expect("encodes"))
        .collect()
}

fn learner_session(endpoint: &str) -> zenoh::Session {
    zenoh_link::open(&ZenohConfig {
        listen: vec![endpoint.to_string()],
        connect: vec![],
        ..ZenohConfig::default()
    })
    .expect("the learner's session opens")
}

/// Starts `payloads.len()` publisher threads (robot `r<i>` publishes `payloads[i]`);
/// they connect, wait for the learner's subscriber, then for `go`, then publish
/// everything, and keep their sessions open until `done` (so nothing queued is cut
/// off by a close).
fn spawn_publishers(
    endpoint: &str,
    payloads: Vec<Vec<Vec<u8>>>,
    go: Arc<Barrier>,
    done: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Duration>> {
    payloads
        .into_iter()
        .enumerate()
        .map(|(i, batches)| {
            let endpoint = endpoint.to_string();
            let go = go.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let session = zenoh_link::open(&ZenohConfig {
                    connect: vec![endpoint],
                    ..ZenohConfig::default()
                })
                .expect("a robot's session opens");
                let key = keys::transitions_key(FLEET, &format!("r{i}"));
                // As reflexd's ZenohTransitions declares it.
                let publisher = session
                    .declare_publisher(key)
                    .encoding(cdr_encoding::<TransitionBatch>())
                    .congestion_control(CongestionControl::Block)
                    .priority(Priority::Data)
                    .wait()
                    .expect("declaring the publisher");
                let end = Instant::now() + Duration::from_secs(30);
                while !zenoh_link::has_subscribers(&publisher).unwrap_or(false) {
                    assert!(Instant::now() < end, "the learner never subscribed");
                    std::thread::sleep(Duration::from_millis(5));
                }
                go.wait();
                let started = Instant::now();
                for payload in batches {
                    publisher.put(payload).wait().expect("put");
                }
                let took = started.elapsed();
                while !done.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                drop(publisher);
                let _ = session.close().wait();
                took
            })
        })
        .collect()
}

fn replay_for(run: &RunConfig) -> Replay {
    Replay::Uniform(
        ReplayBuffer::new(
            run.dqn.buffer_size,
            OBS_DIM,
            ActionShape::Discrete { n: N_ACTIONS },
        )
        .expect("replay"),
    )
}

struct Measured {
    seconds: f64,
    publish_seconds: f64,
    totals: IngestTotals,
    decode_errors: u64,
    replay_len: usize,
}

/// One run: `publishers` robots, `batches` batches of `size` each.
fn run(run: &RunConfig, publishers: usize, batches: usize, size: usize) -> Measured {
    let payloads: Vec<Vec<Vec<u8>>> = (0..publishers)
        .map(|i| {
            encode_all(&robot_batches(
                &format!("r{i}"),
                batches,
                size,
                i as u64 + 1,
            ))
        })
        .collect();
    let expected = (publishers * batches * size) as u64;
    let endpoint = format!(
        "tcp/127.0.0.1:{}",
        zenoh_link::free_loopback_port().expect("a free port")
    );
    let session = learner_session(&endpoint);
    let (subscriptions, rx) = learner::subscribe(&session, FLEET).expect("subscribes");
    let mut ingest = ingest_for(run);
    let mut replay = replay_for(run);

    let go = Arc::new(Barrier::new(publishers + 1));
    let done = Arc::new(AtomicBool::new(false));
    let threads = spawn_publishers(&endpoint, payloads, go.clone(), done.clone());
    go.wait();
    let started = Instant::now();
    let mut received = 0u64;
    let mut last = started;
    while received < expected {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Incoming::Batch(robot, batch)) => {
                received += batch.transitions.len() as u64;
                ingest
                    .batch(&robot, &batch, &mut replay)
                    .expect("ingest path");
                last = Instant::now();
            }
            Ok(Incoming::Status(robot, status)) => {
                ingest.status(&robot, status).expect("status");
            }
            Err(_) => break,
        }
    }
    let seconds = last.duration_since(started).as_secs_f64();
    done.store(true, Ordering::SeqCst);
    let publish_seconds = threads
        .into_iter()
        .map(|t| t.join().expect("publisher").as_secs_f64())
        .fold(0.0, f64::max);
    let decode_errors = subscriptions.decode_errors();
    drop(subscriptions);
    let _ = session.close().wait();
    let totals = ingest.totals();
    let m = Measured {
        seconds,
        publish_seconds,
        totals,
        decode_errors,
        replay_len: replay.len(),
    };
    let clean = totals.received == expected
        && totals.inserted == expected
        && totals.batches == (publishers * batches) as u64
        && totals.duplicate_batches == 0
        && totals.missing_batches == 0
        && totals.missing_steps == 0
        && totals.invalid == 0
        && decode_errors == 0;
    assert!(
        clean,
        "loss or error: expected {expected} transitions in {} batches, got {totals:?}, \
         decode errors {decode_errors}",
        publishers * batches
    );
    m
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The pieces alone, one thread, no zenoh except the last.
fn stages(run: &RunConfig, size: usize, transitions: usize) {
    let batches = (transitions / size).max(1);
    let decoded = robot_batches("r0", batches, size, 1);
    let encoded = encode_all(&decoded);
    let n = (batches * size) as f64;
    let bytes: usize = encoded.iter().map(Vec::len).sum();

    let t = Instant::now();
    for payload in &encoded {
        let b: TransitionBatch = codec::decode(payload).expect("decodes");
        std::hint::black_box(b);
    }
    let decode = t.elapsed().as_secs_f64();

    let mut ingest = ingest_for(run);
    let mut replay = replay_for(run);
    let t = Instant::now();
    for batch in &decoded {
        ingest.batch("r0", batch, &mut replay).expect("ingest");
    }
    let insert = t.elapsed().as_secs_f64();
    assert_eq!(ingest.totals().inserted, (batches * size) as u64);

    let t = Instant::now();
    for batch in decoded {
        std::hint::black_box(batch);
    }
    let drop_time = t.elapsed().as_secs_f64();

    // zenoh alone: a subscriber that only counts payload bytes.
    let endpoint = format!(
        "tcp/127.0.0.1:{}",
        zenoh_link::free_loopback_port().expect("a free port")
    );
    let session = learner_session(&endpoint);
    let count = Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    let _sub = session
        .declare_subscriber(keys::all_robots_key(FLEET, keys::TRANSITIONS))
        .callback(move |sample| {
            seen.fetch_add(1, Ordering::SeqCst);
            std::hint::black_box(sample.payload().len());
        })
        .wait()
        .expect("subscriber");
    let go = Arc::new(Barrier::new(2));
    let done = Arc::new(AtomicBool::new(false));
    let threads = spawn_publishers(&endpoint, vec![encoded], go.clone(), done.clone());
    go.wait();
    let t = Instant::now();
    while count.load(Ordering::SeqCst) < batches as u64 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "zenoh-only run stalled"
        );
        std::thread::yield_now();
    }
    let zenoh_only = t.elapsed().as_secs_f64();
    done.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("publisher");
    }
    let _ = session.close().wait();

    println!(
        "| {size} | {:.0} | {:.1} | {:.1} | {:.1} | {:.2} M/s |",
        bytes as f64 / n,
        decode / n * 1e9,
        insert / n * 1e9,
        drop_time / n * 1e9,
        n / zenoh_only / 1e6,
    );
}

/// The service's ingest path for CartPole transitions with `run`'s n-step settings.
fn ingest_for(run: &RunConfig) -> Ingest {
    Ingest::new(
        OBS_DIM,
        ActionShape::Discrete { n: N_ACTIONS },
        run.dqn.n_step,
        run.dqn.gamma as f32,
    )
    .expect("ingest")
}

fn main() {
    let o = options();
    let run_config = preset();
    println!(
        "ingest over zenoh on loopback: CartPole transitions (obs {OBS_DIM}, {N_ACTIONS} actions), \
         n_step {}, replay {} (uniform), ~{} transitions per run, median of {}",
        run_config.dqn.n_step, run_config.dqn.buffer_size, o.transitions, o.repeats
    );
    println!();
    println!(
        "| publishers | batch | transitions/s | batches/s | MB/s | received = sent | gaps / dups / lost / invalid / decode errors | runs (transitions/s) |"
    );
    println!("|---:|---:|---:|---:|---:|---|---|---|");
    for &publishers in &o.publishers {
        for &size in &o.batches {
            let batches = (o.transitions / publishers / size).max(1);
            let mut rates = Vec::new();
            let mut batch_rates = Vec::new();
            let mut last = None;
            for _ in 0..o.repeats {
                let m = run(&run_config, publishers, batches, size);
                rates.push(m.totals.received as f64 / m.seconds);
                batch_rates.push(m.totals.batches as f64 / m.seconds);
                eprintln!(
                    "  {publishers} x {size}: {} transitions in {:.3} s ({:.0}/s; publishers done after {:.3} s), replay holds {}",
                    m.totals.received,
                    m.seconds,
                    m.totals.received as f64 / m.seconds,
                    m.publish_seconds,
                    m.replay_len
                );
                last = Some(m);
            }
            let m = last.expect("at least one run");
            let bytes_per = codec::encode(&robot_batches("r0", 1, size, 1)[0])
                .expect("encodes")
                .len() as f64;
            let rate = median(rates.clone());
            let t = m.totals;
            println!(
                "| {publishers} | {size} | {rate:.0} | {:.0} | {:.0} | {} = {} | {} / {} / {} / {} / {} | {} |",
                median(batch_rates),
                rate / size as f64 * bytes_per / 1e6,
                t.received,
                publishers * batches * size,
                t.missing_batches,
                t.duplicate_batches,
                t.missing_steps,
                t.invalid,
                m.decode_errors,
                rates
                    .iter()
                    .map(|r| format!("{r:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if o.stages {
        println!();
        println!("stages alone (one thread; ns per transition):");
        println!();
        println!("| batch | bytes/transition | CDR decode | Ingest::batch (track + n-step + replay) | drop of the decoded batch | zenoh only (1 publisher) |");
        println!("|---:|---:|---:|---:|---:|---:|");
        for &size in &o.batches {
            stages(&run_config, size, o.transitions);
        }
    }
}
