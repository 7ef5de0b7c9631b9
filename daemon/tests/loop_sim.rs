//! The control loop against a simulator over the in-process transports: 10,000
//! environment steps at 10 kHz, every transition checked against the simulator's own
//! record of what happened.

mod common;

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use reflex_daemon::config::{Mode, Noise};
use reflex_daemon::transport::{inproc, Null};
use reflex_daemon::{Actor, Config, Daemon, Transports};
use reflex_msgs::{Action, ActionCommand, Observation, Transition, TransitionBatch};
use reflex_sim::Env;

/// What the simulator saw on one step: the daemon's transition must say the same.
#[derive(Debug, Clone, PartialEq)]
struct SimRecord {
    episode_id: u64,
    step: u32,
    obs: Vec<f32>,
    action: Action,
    reward: f32,
    next_obs: Vec<f32>,
    terminated: bool,
    truncated: bool,
    policy_version: u64,
}

/// Generous limit for waiting on another thread; only reached if something hangs.
const HANG: Duration = Duration::from_secs(120);

/// Plays `env` as a robot: publishes observations, applies the action answering each
/// one, records every step. Returns the record after `steps` steps.
fn simulate(
    mut env: Box<dyn Env>,
    steps: usize,
    obs_tx: Sender<Observation>,
    actions: Receiver<ActionCommand>,
) -> Vec<SimRecord> {
    let mut records = Vec::with_capacity(steps);
    let (mut seq, mut episode_id, mut step) = (0u64, 0u64, 0u32);
    let mut obs = env.reset(Some(7)).to_vec();
    let publish = |seq, episode_id, step, values: &[f32], reward, terminated, truncated| {
        obs_tx
            .send(Observation {
                robot_id: "sim-1".into(),
                seq,
                episode_id,
                step,
                values: values.to_vec(),
                reward,
                terminated,
                truncated,
                ..Observation::default()
            })
            .unwrap();
    };
    publish(seq, episode_id, step, &obs, 0.0, false, false);
    while records.len() < steps {
        // The action answering the observation just published (older ones are stale).
        let command = loop {
            match actions.recv_timeout(HANG) {
                Ok(c) if c.seq == seq => break c,
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => panic!("no action for seq {seq}"),
                Err(RecvTimeoutError::Disconnected) => panic!("daemon gone"),
            }
        };
        let result = env.step(&command.action).unwrap();
        let next_obs = env.obs().to_vec();
        let reward = result.reward as f32;
        records.push(SimRecord {
            episode_id,
            step,
            obs: obs.clone(),
            action: command.action.clone(),
            reward,
            next_obs: next_obs.clone(),
            terminated: result.terminated,
            truncated: result.truncated,
            policy_version: command.policy_version,
        });
        seq += 1;
        step += 1;
        publish(
            seq,
            episode_id,
            step,
            &next_obs,
            reward,
            result.terminated,
            result.truncated,
        );
        obs = next_obs;
        if result.done() {
            // No action answers a terminal observation: reset and go on.
            episode_id += 1;
            step = 0;
            seq += 1;
            obs = env.reset(None).to_vec();
            publish(seq, episode_id, step, &obs, 0.0, false, false);
        }
    }
    records
}

fn as_record(t: &Transition) -> SimRecord {
    SimRecord {
        episode_id: t.episode_id,
        step: t.step,
        obs: t.obs.clone(),
        action: t.action.clone(),
        reward: t.reward,
        next_obs: t.next_obs.clone(),
        terminated: t.terminated,
        truncated: t.truncated,
        policy_version: t.policy_version,
    }
}

/// Runs the daemon against `env` for `steps` steps and checks every transition.
fn run_loop(
    env_name: &str,
    actor: Box<dyn Actor>,
    config: Config,
    steps: usize,
) -> reflex_daemon::Report {
    let env = reflex_sim::make(env_name).unwrap();
    let (obs_tx, obs_rx) = inproc::observations();
    let (action_tx, action_rx) = inproc::actions();
    let (transition_tx, transition_rx, _link) = inproc::transitions();
    let (status_tx, status_rx) = inproc::status();
    let daemon = Daemon::start(
        &config,
        actor,
        common::loader(),
        Transports {
            observations: Box::new(obs_rx),
            actions: Box::new(action_tx),
            transitions: Box::new(transition_tx),
            status: Box::new(status_tx),
            policies: Box::new(Null),
        },
    )
    .unwrap();

    let sim = std::thread::spawn(move || simulate(env, steps, obs_tx, action_rx));
    let records = sim.join().unwrap();
    // The last step's transition closes when the daemon sees its next observation.
    let waited = Instant::now();
    while daemon.transitions().produced < steps as u64 {
        assert!(waited.elapsed() < HANG, "daemon did not record every step");
        std::thread::sleep(Duration::from_millis(1));
    }
    let report = daemon.stop();

    let batches: Vec<TransitionBatch> = transition_rx.try_iter().collect();
    for (i, batch) in batches.iter().enumerate() {
        assert_eq!(batch.batch_seq, i as u64, "batch sequence has no gaps");
        assert_eq!(batch.robot_id, config.robot_id);
        assert!(batch.transitions.len() <= config.batching.transitions_per_batch);
    }
    let transitions: Vec<&Transition> = batches.iter().flat_map(|b| &b.transitions).collect();
    assert_eq!(
        transitions.len(),
        steps,
        "one transition per simulator step"
    );
    for (i, (t, r)) in transitions.iter().zip(&records).enumerate() {
        assert_eq!(
            &as_record(t),
            r,
            "transition {i} differs from the simulator's record"
        );
        assert_eq!(t.robot_id, config.robot_id);
    }
    assert!(
        records.iter().any(|r| r.terminated || r.truncated),
        "episodes ended"
    );
    // The stored recurrent state is the one before each step: the test actor's `h`
    // is the action the loop reported as applied at the previous step of the
    // episode (after exploration and safety; `[-1]` at an episode start) and its
    // `c` counts the episode's steps.
    for (i, t) in transitions.iter().enumerate() {
        let expected_h = match (t.step, i.checked_sub(1).map(|j| transitions[j])) {
            (0, _) | (_, None) => vec![-1.0],
            (_, Some(prev)) => match &prev.action {
                Action::Discrete(a) => vec![*a as f32],
                Action::Continuous(v) => v.clone(),
            },
        };
        assert_eq!(
            t.recurrent_h, expected_h,
            "transition {i}: applied action fed back"
        );
        assert_eq!(
            t.recurrent_c,
            vec![t.step as f32],
            "transition {i}: reset per episode"
        );
    }

    let totals = report.transitions;
    assert!(totals.balanced(), "{totals:?}");
    assert_eq!(
        (totals.produced, totals.sent, totals.dropped, totals.spooled),
        (steps as u64, steps as u64, 0, 0)
    );
    assert_eq!(report.stats.discarded_steps, 0);
    assert_eq!(report.stats.policy_errors, 0);
    assert!(report.stats.acting_ticks >= steps as u64);
    assert!(report.stats.ticks >= report.stats.acting_ticks);
    // Status heartbeats went out, numbered without gaps, with the running version.
    let statuses: Vec<_> = status_rx.try_iter().collect();
    assert!(!statuses.is_empty());
    for (i, s) in statuses.iter().enumerate() {
        assert_eq!(s.heartbeat_seq, i as u64);
        assert_eq!(s.policy_version, 1);
    }
    assert_eq!(report.status.ticks, report.stats.ticks);
    // The last heartbeat carries the loop's latency and jitter histograms.
    let (st, stats) = (&report.status, &report.stats);
    assert_eq!(u64::from(st.latency_p99_us), stats.latency_p99_ns / 1000);
    assert_eq!(u64::from(st.jitter_p99_us), stats.jitter_p99_ns / 1000);
    assert_eq!(u64::from(st.jitter_max_us), stats.jitter_max_ns / 1000);
    assert!(stats.jitter_max_ns > 0 && st.jitter_p50_us <= st.jitter_max_us);
    report
}

fn fast_config() -> Config {
    let mut config = Config {
        robot_id: "sim-1".into(),
        rate_hz: 10_000.0,
        status_interval_ms: 50,
        ..Config::default()
    };
    config.policy.reload_poll_ms = 0;
    // Scheduling on a loaded test machine must not trip the watchdog.
    config.safety.watchdog_ms = 0;
    config.batching.transitions_per_batch = 64;
    config.batching.max_latency_ms = 5;
    config
}

#[test]
fn cartpole_10k_steps_explore_matches_the_simulator() {
    let mut config = fast_config();
    config.mode.kind = Mode::Explore;
    config.mode.epsilon = 0.1;
    config.mode.seed = 42;
    let report = run_loop(
        "cartpole",
        Box::new(common::cartpole_controller(1)),
        config,
        10_000,
    );
    assert_eq!(report.stats.safety.interventions, 0);
}

#[test]
fn pendulum_continuous_noise_and_clamp_match_the_simulator() {
    let mut config = fast_config();
    config.mode.kind = Mode::Explore;
    config.mode.noise = Noise::Ou;
    config.mode.sigma = 0.2;
    let report = run_loop(
        "pendulum",
        Box::new(common::pendulum_controller(1)),
        config,
        2_000,
    );
    // The over-eager controller leaves the bounds: clamped, and what the sim got is
    // what the transitions say (checked in run_loop).
    assert!(report.stats.safety.clamped > 0);
}
