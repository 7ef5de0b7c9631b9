//! Policy hot-swap: signature checks, good and bad policies, and swaps inside a
//! running daemon (the old policy keeps running when a new one is refused).

mod common;

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use reflex_daemon::swap::{FileWatcher, SwapError, Validator, Verifier};
use reflex_daemon::transport::{inproc, Null, PolicyMessage};
use reflex_daemon::{Config, Daemon, Transports};
use reflex_msgs::{Action, ActionCommand, ActionSpace, Observation, PolicyUpdate};

const HANG: Duration = Duration::from_secs(60);

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn update(policy: &common::Linear) -> PolicyUpdate {
    PolicyUpdate::new(policy.spec.clone(), policy.to_bytes())
}

fn signed(policy: &common::Linear, key: &SigningKey) -> PolicyUpdate {
    let mut u = update(policy);
    let signature = key.sign(&u.signing_message());
    u.set_signature(signature.to_bytes());
    u
}

/// A validator with `public_key`, or without a key and accepting unsigned
/// updates (`policy.accept_unsigned = true`).
fn validator(public_key: Option<[u8; 32]>) -> Validator {
    let verifier = match public_key {
        Some(key) => Verifier::new(key).unwrap(),
        None => Verifier::without_key(true),
    };
    Validator::new(verifier, common::loader(), &common::cartpole_spec(1))
}

fn offer(v: &mut Validator, u: PolicyUpdate) -> Result<u64, SwapError> {
    v.validate(&PolicyMessage::Update(Box::new(u)))
        .map(|a| a.version())
}

#[test]
fn signed_update_is_accepted() {
    let k = key(1);
    let mut v = validator(Some(k.verifying_key().to_bytes()));
    assert_eq!(
        offer(&mut v, signed(&common::cartpole_controller(2), &k)).unwrap(),
        2
    );
    assert_eq!(v.current_version(), 2);
}

/// An operator may roll a robot back by file; an old signed update replayed
/// after that is still refused.
#[test]
fn a_rollback_by_file_does_not_reopen_old_updates_to_replay() {
    let k = key(1);
    let mut v = validator(Some(k.verifying_key().to_bytes()));
    let old = signed(&common::cartpole_controller(3), &k);
    assert_eq!(
        offer(&mut v, signed(&common::cartpole_controller(5), &k)).unwrap(),
        5
    );
    let file = PolicyMessage::File {
        path: "policy.json".into(),
        bytes: common::cartpole_controller(2).to_bytes(),
    };
    assert_eq!(v.validate(&file).unwrap().version(), 2, "the rollback runs");
    let err = offer(&mut v, old).unwrap_err();
    assert!(
        matches!(
            err,
            SwapError::NotNewer {
                version: 3,
                current: 5
            }
        ),
        "{err}"
    );
    assert_eq!(
        offer(&mut v, signed(&common::cartpole_controller(6), &k)).unwrap(),
        6
    );
}

#[test]
fn unsigned_update_refused_when_a_key_is_configured() {
    let k = key(1);
    let mut v = validator(Some(k.verifying_key().to_bytes()));
    let err = offer(&mut v, update(&common::cartpole_controller(2))).unwrap_err();
    assert!(matches!(err, SwapError::Unsigned { version: 2 }), "{err}");
    assert_eq!(v.current_version(), 1);
}

#[test]
fn wrong_key_refused() {
    let mut v = validator(Some(key(1).verifying_key().to_bytes()));
    let err = offer(&mut v, signed(&common::cartpole_controller(2), &key(2))).unwrap_err();
    assert!(
        matches!(err, SwapError::BadSignature { version: 2 }),
        "{err}"
    );
}

#[test]
fn tampered_bytes_refused() {
    let k = key(1);
    let mut v = validator(Some(k.verifying_key().to_bytes()));
    // Bytes changed after signing: the hash no longer matches.
    let mut u = signed(&common::cartpole_controller(2), &k);
    u.onnx.push(b' ');
    let err = offer(&mut v, u.clone()).unwrap_err();
    assert!(matches!(err, SwapError::Integrity { .. }), "{err}");
    // Bytes and hash both replaced: the signature no longer verifies.
    u.onnx_sha256 = reflex_msgs::hash::sha256(&u.onnx);
    let err = offer(&mut v, u.clone()).unwrap_err();
    assert!(matches!(err, SwapError::BadSignature { .. }), "{err}");
    // The version changed after signing: refused too (it is signed).
    let mut u = signed(&common::cartpole_controller(2), &k);
    u.policy_version = 3;
    u.spec.policy_version = 3;
    assert!(matches!(
        offer(&mut v, u).unwrap_err(),
        SwapError::BadSignature { .. }
    ));
    // Tampered, without a key configured: the hash check still refuses.
    let mut open = validator(None);
    let mut u = update(&common::cartpole_controller(2));
    u.onnx.push(b' ');
    assert!(matches!(
        offer(&mut open, u).unwrap_err(),
        SwapError::Integrity { .. }
    ));
}

#[test]
fn unsigned_update_accepted_without_a_key() {
    let mut v = validator(None);
    assert_eq!(
        offer(&mut v, update(&common::cartpole_controller(2))).unwrap(),
        2
    );
}

/// The default `[policy]` (no key, `accept_unsigned` false) refuses every
/// update from the network, signed or not, with a message that says what to set:
/// a robot must not run whatever anyone on its network publishes.
#[test]
fn updates_refused_by_default_without_a_key() {
    let policy = reflex_daemon::config::PolicyConfig::default();
    assert!(policy.public_key.is_empty() && !policy.accept_unsigned);
    let verifier = Verifier::from_config(&policy).unwrap();
    let mut v = Validator::new(verifier, common::loader(), &common::cartpole_spec(1));
    let err = offer(&mut v, update(&common::cartpole_controller(2))).unwrap_err();
    assert!(matches!(err, SwapError::NoKey { version: 2 }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("policy.public_key") && text.contains("policy.accept_unsigned"),
        "{text}"
    );
    let err = offer(&mut v, signed(&common::cartpole_controller(3), &key(1))).unwrap_err();
    assert!(matches!(err, SwapError::NoKey { version: 3 }), "{err}");
    assert_eq!(v.current_version(), 1);
    // The policy file is trusted: a rollback by file still runs.
    let file = PolicyMessage::File {
        path: "policy.json".into(),
        bytes: common::cartpole_controller(4).to_bytes(),
    };
    assert_eq!(v.validate(&file).unwrap().version(), 4);
}

#[test]
fn bad_policies_refused() {
    let mut v = validator(None);
    // The runtime refuses to load it.
    let mut p = common::cartpole_controller(2);
    p.fail_load = true;
    assert!(matches!(
        offer(&mut v, update(&p)).unwrap_err(),
        SwapError::Load { .. }
    ));
    // Non-finite output on the probe.
    let mut p = common::cartpole_controller(2);
    p.nan = true;
    assert!(matches!(
        offer(&mut v, update(&p)).unwrap_err(),
        SwapError::Probe { .. }
    ));
    // A different action space than the running policy's.
    let mut p = common::cartpole_controller(2);
    p.spec.action_space = ActionSpace::Discrete { n: 3 };
    p.w.push(vec![0.0; 4]);
    p.b.push(0.0);
    assert!(matches!(
        offer(&mut v, update(&p)).unwrap_err(),
        SwapError::Incompatible { .. }
    ));
    // An invalid spec.
    let mut p = common::cartpole_controller(2);
    p.spec.algorithm.clear();
    assert!(matches!(
        offer(&mut v, update(&p)).unwrap_err(),
        SwapError::Spec { .. }
    ));
    // Not newer than the running version (replay / rollback).
    assert!(matches!(
        offer(&mut v, update(&common::cartpole_controller(1))).unwrap_err(),
        SwapError::NotNewer {
            version: 1,
            current: 1
        }
    ));
    // After all that, a good one still goes in.
    assert_eq!(
        offer(&mut v, update(&common::cartpole_controller(2))).unwrap(),
        2
    );
    // The update's version must match the version in the policy file itself.
    let mut u = update(&common::cartpole_controller(3));
    u.onnx = common::cartpole_controller(4).to_bytes();
    u.onnx_sha256 = reflex_msgs::hash::sha256(&u.onnx);
    assert!(matches!(
        offer(&mut v, u).unwrap_err(),
        SwapError::Incompatible { .. }
    ));
}

#[test]
fn file_watcher_yields_changed_contents_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.json");
    let v1 = common::cartpole_controller(1).to_bytes();
    std::fs::write(&path, &v1).unwrap();
    let mut w = FileWatcher::new(&path, Duration::from_millis(1), Some(&v1));
    assert!(w.check().is_none(), "unchanged");
    let v2 = common::cartpole_controller(2).to_bytes();
    std::fs::write(&path, &v2).unwrap();
    match w.check() {
        Some(PolicyMessage::File { bytes, .. }) => assert_eq!(bytes, v2),
        other => panic!("expected the new file, got {other:?}"),
    }
    assert!(w.check().is_none(), "reported once");
    // Rewritten with the same contents: not a new policy.
    std::fs::write(&path, &v2).unwrap();
    assert!(w.check().is_none());
}

/// A running daemon fed observations by hand.
struct Rig {
    daemon: Daemon,
    obs: std::sync::mpsc::Sender<Observation>,
    actions: Receiver<ActionCommand>,
    policies: std::sync::mpsc::Sender<PolicyMessage>,
    transitions: Receiver<reflex_msgs::TransitionBatch>,
    seq: u64,
}

impl Rig {
    fn start(config: Config) -> Self {
        Self::start_with(config, common::cartpole_controller(1))
    }

    fn start_with(config: Config, policy: common::Linear) -> Self {
        let (obs, obs_rx) = inproc::observations();
        let (action_tx, actions) = inproc::actions();
        let (transition_tx, transitions, _link) = inproc::transitions();
        let (policies, policy_rx) = inproc::policies();
        let daemon = Daemon::start(
            &config,
            Box::new(policy),
            common::loader(),
            Transports {
                observations: Box::new(obs_rx),
                actions: Box::new(action_tx),
                transitions: Box::new(transition_tx),
                status: Box::new(Null),
                policies: Box::new(policy_rx),
            },
        )
        .unwrap();
        Self {
            daemon,
            obs,
            actions,
            policies,
            transitions,
            seq: 0,
        }
    }

    /// Sends an observation and returns the action answering it.
    fn act(&mut self, values: [f32; 4]) -> ActionCommand {
        self.seq += 1;
        self.obs
            .send(Observation {
                seq: self.seq,
                step: self.seq as u32,
                values: values.to_vec(),
                ..Observation::default()
            })
            .unwrap();
        loop {
            let c = self.actions.recv_timeout(HANG).expect("an action");
            if c.seq == self.seq {
                return c;
            }
        }
    }

    /// Acts until the running version is `version` (the swap happens between ticks).
    fn until_version(&mut self, version: u64) -> ActionCommand {
        let start = Instant::now();
        loop {
            let c = self.act([0.0, 0.0, 0.1, 0.0]);
            if c.policy_version == version {
                return c;
            }
            assert!(start.elapsed() < HANG, "policy v{version} never swapped in");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn swap_thread_takes_an_update_when_it_arrives_not_at_its_next_poll() {
    use reflex_daemon::swap::{SwapStats, Swapper};
    use std::sync::Arc;

    // A poll period far longer than the test may wait: the thread must be woken by
    // the update itself (it used to sleep the period between polls).
    let (offer, source) = inproc::policies();
    let stats = Arc::new(SwapStats::default());
    let (swapper, accepted) = Swapper::start(
        validator(None),
        Box::new(source),
        None,
        Duration::from_secs(3600),
        stats.clone(),
    );
    // Let the thread find nothing and start waiting.
    std::thread::sleep(Duration::from_millis(100));
    offer
        .send(PolicyMessage::Update(Box::new(update(
            &common::cartpole_controller(2),
        ))))
        .unwrap();
    let actor = accepted
        .recv_timeout(HANG)
        .expect("the update waited for the next poll");
    assert_eq!(actor.version(), 2);
    assert_eq!(stats.accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The thread now waits out its hour; it is left behind (the process ends soon).
    drop(swapper);
}

fn rig_config() -> Config {
    let mut config = Config {
        rate_hz: 2000.0,
        ..Config::default()
    };
    config.safety.watchdog_ms = 0;
    config.policy.reload_poll_ms = 0;
    // The rig offers unsigned updates (signatures have tests of their own above).
    config.policy.accept_unsigned = true;
    config
}

#[test]
fn daemon_swaps_good_policies_and_keeps_the_old_one_on_refusal() {
    let mut rig = Rig::start(rig_config());
    let c = rig.act([0.0, 0.0, 0.1, 0.0]);
    assert_eq!((c.policy_version, c.action), (1, Action::Discrete(1)));

    // v2 pushes the other way: the swap is visible in the actions.
    let mut v2 = common::cartpole_controller(2);
    v2.w.swap(0, 1);
    rig.policies
        .send(PolicyMessage::Update(Box::new(update(&v2))))
        .unwrap();
    let c = rig.until_version(2);
    assert_eq!(c.action, Action::Discrete(0));

    // A broken v3 is refused; v2 keeps running.
    let mut v3 = common::cartpole_controller(3);
    v3.nan = true;
    rig.policies
        .send(PolicyMessage::Update(Box::new(update(&v3))))
        .unwrap();
    let start = Instant::now();
    while rig.daemon.policies_rejected() < 1 {
        assert!(start.elapsed() < HANG);
        std::thread::sleep(Duration::from_millis(1));
    }
    for _ in 0..10 {
        let c = rig.act([0.0, 0.0, 0.1, 0.0]);
        assert_eq!((c.policy_version, c.action), (2, Action::Discrete(0)));
    }

    let report = rig.daemon.stop();
    assert_eq!(report.stats.swaps, 1);
    assert_eq!((report.policies_accepted, report.policies_rejected), (1, 1));
    assert_eq!(report.status.policy_updates_rejected, 1);
    assert_eq!(report.status.policy_version, 2);
}

#[test]
fn daemon_reloads_the_policy_file_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.json");
    std::fs::write(&path, common::cartpole_controller(1).to_bytes()).unwrap();
    let mut config = rig_config();
    config.policy.path = path.clone();
    config.policy.reload_poll_ms = 5;
    let mut rig = Rig::start(config);
    assert_eq!(rig.act([0.0; 4]).policy_version, 1);
    // A refused file (broken) changes nothing…
    let mut broken = common::cartpole_controller(5);
    broken.nan = true;
    std::fs::write(&path, broken.to_bytes()).unwrap();
    let start = Instant::now();
    while rig.daemon.policies_rejected() < 1 {
        assert!(start.elapsed() < HANG);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(rig.act([0.0; 4]).policy_version, 1);
    // …a good one swaps in.
    std::fs::write(&path, common::cartpole_controller(7).to_bytes()).unwrap();
    rig.until_version(7);
    let report = rig.daemon.stop();
    assert_eq!(report.stats.swaps, 1);
}

#[test]
fn estop_and_watchdog_in_the_running_daemon() {
    let mut config = rig_config();
    config.safety.safe_action_index = 0;
    let mut rig = Rig::start(config);
    assert_eq!(rig.act([0.0, 0.0, 0.1, 0.0]).action, Action::Discrete(1));
    let estop = rig.daemon.estop();
    estop.engage();
    let c = rig.act([0.0, 0.0, 0.1, 0.0]);
    assert_eq!((c.action, c.policy_version), (Action::Discrete(0), 0));
    estop.clear();
    assert_eq!(rig.act([0.0, 0.0, 0.1, 0.0]).action, Action::Discrete(1));
    let report = rig.daemon.stop();
    assert!(report.stats.safety.estop >= 1);
}

#[test]
fn watchdog_sends_the_safe_action_when_observations_stop() {
    let mut config = rig_config();
    config.safety.watchdog_ms = 20;
    config.status_interval_ms = 2;
    let mut rig = Rig::start(config);
    // A fresh observation feeds the watchdog before the policy acts on it.
    assert_eq!(rig.act([0.0, 0.0, 0.1, 0.0]).action, Action::Discrete(1));
    // Observations stop: the safe action follows, and the status says why.
    let start = Instant::now();
    loop {
        let c = rig.actions.recv_timeout(HANG).expect("an action");
        if c.policy_version == 0 && c.action == Action::Discrete(0) {
            break;
        }
        assert!(start.elapsed() < HANG);
    }
    while !rig.daemon.status().watchdog_tripped {
        assert!(start.elapsed() < HANG);
        std::thread::sleep(Duration::from_millis(1));
    }
    // Observations resume: the policy drives again.
    assert_eq!(rig.act([0.0, 0.0, 0.1, 0.0]).action, Action::Discrete(1));
    let report = rig.daemon.stop();
    assert!(report.stats.safety.watchdog >= 1);
}

#[test]
fn a_nan_or_infinite_observation_gets_the_safe_action_and_no_transition() {
    let mut config = rig_config();
    config.safety.safe_action_index = 0;
    let mut rig = Rig::start(config);
    assert_eq!(rig.act([0.0, 0.0, 0.1, 0.0]).action, Action::Discrete(1));
    // A broken sensor: the robot gets the safe action, not one chosen from it.
    for bad in [f32::NAN, f32::INFINITY] {
        let c = rig.act([0.0, 0.0, bad, 0.0]);
        assert_eq!((c.action, c.policy_version), (Action::Discrete(0), 0));
    }
    assert_eq!(rig.act([0.0, 0.0, 0.1, 0.0]).action, Action::Discrete(1));
    assert_eq!(rig.act([0.0, 0.0, 0.1, 0.0]).action, Action::Discrete(1));
    let report = rig.daemon.stop();
    assert_eq!(report.stats.bad_observations, 2);
    // The step before the bad reading has no usable next observation: dropped,
    // counted. Only the last two good steps make a transition.
    assert_eq!(report.stats.discarded_steps, 1);
    assert_eq!(report.transitions.produced, 1);
}

/// CartPole's spec bounds the pole angle to ±0.419 rad: a reading past it (a
/// sensor fault, or a state training never saw) gets the safe action and no
/// transition, unless `observation_bounds` is off.
#[test]
fn an_observation_outside_the_policys_space_gets_the_safe_action() {
    for bounds in [true, false] {
        let mut config = rig_config();
        config.safety.safe_action_index = 0;
        config.safety.observation_bounds = bounds;
        let mut rig = Rig::start(config);
        assert_eq!(rig.act([0.0, 0.0, 0.1, 0.0]).action, Action::Discrete(1));
        // Just inside the bound the policy drives; past it, the safety layer.
        assert_eq!(rig.act([0.0, 0.0, 0.41, 0.0]).action, Action::Discrete(1));
        let c = rig.act([0.0, 0.0, 0.5, 0.0]);
        let expected = if bounds {
            (Action::Discrete(0), 0)
        } else {
            (Action::Discrete(1), 1)
        };
        assert_eq!((c.action, c.policy_version), expected, "bounds {bounds}");
        assert_eq!(rig.act([0.0, 0.0, 0.1, 0.0]).action, Action::Discrete(1));
        // A terminal observation past the bounds still ends its step: the
        // learner does not bootstrap from it, and the pole did fall.
        rig.seq += 1;
        rig.obs
            .send(Observation {
                seq: rig.seq,
                step: rig.seq as u32,
                values: vec![0.0, 0.0, 0.5, 0.0],
                terminated: true,
                ..Observation::default()
            })
            .unwrap();
        // (The next one's answer means the terminal one was taken in.)
        assert_eq!(rig.act([0.0, 0.0, 0.1, 0.0]).action, Action::Discrete(1));
        let report = rig.daemon.stop();
        // With the check on, its value past the bound is clamped into it.
        let terminal = rig
            .transitions
            .try_iter()
            .flat_map(|b| b.transitions)
            .find(|t| t.terminated)
            .expect("the terminal step was sent");
        let angle = if bounds { 0.418_879 } else { 0.5 };
        assert_eq!(terminal.next_obs, [0.0, 0.0, angle, 0.0], "bounds {bounds}");
        let bad = u64::from(bounds);
        assert_eq!(report.stats.bad_observations, bad, "bounds {bounds}");
        // The step into the bad reading and the bad one itself make no transition.
        assert_eq!(report.stats.discarded_steps, bad, "bounds {bounds}");
        assert_eq!(report.transitions.produced, 4 - 2 * bad, "bounds {bounds}");
    }
}

/// The bounds observations are checked against are the running policy's: one
/// swapped in that was trained on a wider space acts on a reading the first
/// policy's bounds refused.
#[test]
fn observation_bounds_follow_a_swapped_policy() {
    let mut config = rig_config();
    config.safety.safe_action_index = 0;
    let mut rig = Rig::start(config);
    let c = rig.act([0.0, 0.0, 0.5, 0.0]);
    assert_eq!((c.action, c.policy_version), (Action::Discrete(0), 0));
    let mut wide = common::cartpole_controller(2);
    wide.spec.observation_space = reflex_msgs::BoxSpace::new(
        vec![-4.8, f32::MIN, -1.0, f32::MIN],
        vec![4.8, f32::MAX, 1.0, f32::MAX],
    )
    .unwrap();
    rig.policies
        .send(PolicyMessage::Update(Box::new(update(&wide))))
        .unwrap();
    rig.until_version(2);
    let c = rig.act([0.0, 0.0, 0.5, 0.0]);
    assert_eq!((c.action, c.policy_version), (Action::Discrete(1), 2));
}

/// A policy swapped in mid-episode starts from a zero recurrent state but is told
/// the action sent before it, the same previous action the learner's replay
/// gives that step (it takes it from the episode's previous transition).
#[test]
fn a_swapped_recurrent_policy_keeps_the_episodes_last_action() {
    let mut config = rig_config();
    config.batching.max_latency_ms = 1;
    let mut rig = Rig::start(config);
    for _ in 0..3 {
        rig.act([0.0, 0.0, 0.1, 0.0]);
    }
    rig.policies
        .send(PolicyMessage::Update(Box::new(update(
            &common::cartpole_controller(2),
        ))))
        .unwrap();
    let first = rig.until_version(2);
    // One more observation closes the first v2 step's transition.
    rig.act([0.0, 0.0, 0.1, 0.0]);
    let report = rig.daemon.stop();
    assert_eq!(report.stats.swaps, 1);
    let transitions: Vec<_> = rig
        .transitions
        .try_iter()
        .flat_map(|b| b.transitions)
        .collect();
    let at = |step: u64| {
        transitions
            .iter()
            .find(|t| u64::from(t.step) == step)
            .unwrap_or_else(|| panic!("no transition for step {step}"))
    };
    let (before, swapped) = (at(first.seq - 1), at(first.seq));
    assert_eq!((before.policy_version, swapped.policy_version), (1, 2));
    let Action::Discrete(a) = before.action else {
        panic!("a discrete action")
    };
    // The test actor's `h` is the previous action it was told (`[-1]` = none),
    // its `c` counts steps since its reset.
    assert_eq!(swapped.recurrent_h, vec![a as f32], "previous action kept");
    assert_eq!(swapped.recurrent_c, vec![0.0], "state reset on the swap");
}

#[test]
fn a_frozen_observation_stream_trips_the_watchdog() {
    let mut config = rig_config();
    config.safety.watchdog_ms = 20;
    config.safety.safe_action_index = 0;
    let mut rig = Rig::start(config);
    assert_eq!(rig.act([0.0, 0.0, 0.1, 0.0]).action, Action::Discrete(1));
    // A bridge that keeps republishing the last observation (the same seq):
    // nothing new is sensed, so the watchdog must trip all the same.
    let frozen = Observation {
        seq: rig.seq,
        step: rig.seq as u32,
        values: vec![0.0, 0.0, 0.1, 0.0],
        ..Observation::default()
    };
    let start = Instant::now();
    let tripped = loop {
        rig.obs.send(frozen.clone()).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let safe = rig
            .actions
            .try_iter()
            .any(|c| c.policy_version == 0 && c.action == Action::Discrete(0));
        if safe && rig.daemon.status().watchdog_tripped {
            break true;
        }
        if start.elapsed() > Duration::from_secs(5) {
            break false;
        }
    };
    assert!(tripped, "repeats of one observation kept the watchdog fed");
    let report = rig.daemon.stop();
    assert!(report.stats.safety.watchdog >= 1);
}

/// A bridge that republishes each reading until the next: the new observation
/// and its repeat often land in one tick. The new one is acted on (the loop used
/// to act only on the last message of a tick, and ignored it as a repeat).
#[test]
fn an_observation_and_its_repeat_in_one_tick_get_an_action() {
    let mut config = rig_config();
    // A long period, so that both messages land in the same tick.
    config.rate_hz = 20.0;
    let mut rig = Rig::start(config);
    for _ in 0..3 {
        rig.seq += 1;
        let obs = Observation {
            seq: rig.seq,
            step: rig.seq as u32,
            values: vec![0.0, 0.0, 0.1, 0.0],
            ..Observation::default()
        };
        rig.obs.send(obs.clone()).unwrap();
        rig.obs.send(obs).unwrap();
        let answered = loop {
            match rig.actions.recv_timeout(Duration::from_secs(2)) {
                Ok(c) if c.seq == rig.seq => break true,
                Ok(_) => continue,
                Err(_) => break false,
            }
        };
        assert!(answered, "no action for observation {}", rig.seq);
    }
    let report = rig.daemon.stop();
    assert_eq!(report.stats.skipped_observations, 0);
}

/// An observation that names another robot (two robots on one key or topic) is
/// dropped and counted: it gets no action and does not feed this robot's
/// watchdog, while this robot's own observations, and ones that name no robot,
/// are acted on.
#[test]
fn an_observation_for_another_robot_is_dropped_and_counted() {
    let mut config = rig_config();
    config.robot_id = "robot-1".into();
    config.safety.watchdog_ms = 150;
    config.safety.safe_action_index = 0;
    let mut rig = Rig::start(config);
    let send = |rig: &mut Rig, robot: &str| {
        rig.seq += 1;
        rig.obs
            .send(Observation {
                robot_id: robot.into(),
                seq: rig.seq,
                step: rig.seq as u32,
                values: vec![0.0, 0.0, 0.1, 0.0],
                ..Observation::default()
            })
            .unwrap();
        rig.seq
    };
    let answer = |rig: &mut Rig, seq: u64| loop {
        match rig.actions.recv_timeout(HANG) {
            Ok(c) if c.seq == seq => break Some(c),
            Ok(_) => continue,
            Err(_) => break None,
        }
    };
    for robot in ["robot-1", ""] {
        let seq = send(&mut rig, robot);
        let c = answer(&mut rig, seq).unwrap_or_else(|| panic!("no action for {robot:?}"));
        assert_eq!(c.action, Action::Discrete(1));
    }
    // Another robot's sensors, fresh and frequent: no answer, and the watchdog
    // trips (the safe action goes out) as if nothing came.
    let start = std::time::Instant::now();
    let mut foreign = Vec::new();
    while start.elapsed() < Duration::from_millis(400) {
        foreign.push(send(&mut rig, "robot_1"));
        std::thread::sleep(Duration::from_millis(10));
    }
    // Once tripped, the safe action goes out every tick: stop, then look at
    // everything that was sent.
    let report = rig.daemon.stop();
    let mut safe = 0;
    for c in rig.actions.try_iter() {
        assert!(
            !foreign.contains(&c.seq),
            "answered a foreign observation: {c:?}"
        );
        safe += u32::from(c.policy_version == 0 && c.action == Action::Discrete(0));
    }
    assert!(safe > 0, "the watchdog tripped");
    assert_eq!(report.stats.foreign_observations, foreign.len() as u64);
    assert!(report.stats.safety.watchdog > 0, "{:?}", report.stats);
}

/// A policy that panics inside its step (tract has panicking paths a crafted
/// file can reach) must not kill the control thread: the robot gets the safe
/// action, the policy is not stepped again, and the next policy takes over.
#[test]
fn a_policy_that_panics_gets_the_safe_action_and_the_next_policy_takes_over() {
    let mut config = rig_config();
    config.safety.safe_action_index = 0;
    let mut broken = common::cartpole_controller(1);
    broken.panic = true;
    let mut rig = Rig::start_with(config, broken);
    for _ in 0..3 {
        let c = rig.act([0.0, 0.0, 0.1, 0.0]);
        assert_eq!((c.action, c.policy_version), (Action::Discrete(0), 0));
    }
    rig.policies
        .send(PolicyMessage::Update(Box::new(update(
            &common::cartpole_controller(2),
        ))))
        .unwrap();
    assert_eq!(rig.until_version(2).action, Action::Discrete(1));
    let report = rig.daemon.stop();
    assert_eq!(
        report.stats.policy_version, 2,
        "the report names the policy it ran last"
    );
    assert!(report.control_failure.is_none());
    assert!(report.stats.policy_errors >= 3, "{:?}", report.stats);
}

#[test]
fn nan_q_values_get_the_safe_action_not_their_argmax() {
    let mut config = rig_config();
    config.safety.safe_action_index = 0;
    let mut broken = common::cartpole_controller(1);
    broken.nan = true;
    let mut rig = Rig::start_with(config, broken);
    for _ in 0..3 {
        let c = rig.act([0.0, 0.0, 0.1, 0.0]);
        assert_eq!((c.action, c.policy_version), (Action::Discrete(0), 0));
    }
    let report = rig.daemon.stop();
    assert_eq!(report.stats.safety.non_finite, 3);
    assert_eq!(report.stats.safety.invalid, 0);
    assert_eq!(report.stats.recurrent_resets, 3);
    // The NaN state the policy left behind was reset, not carried on: every
    // step starts from a finite state (which the learner would refuse otherwise).
    let transitions: Vec<_> = rig
        .transitions
        .try_iter()
        .flat_map(|b| b.transitions)
        .collect();
    assert_eq!(transitions.len(), 2);
    for t in &transitions {
        assert_eq!(t.recurrent_c, vec![0.0], "step {}", t.step);
    }
}
