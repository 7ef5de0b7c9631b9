//! Replays every Gymnasium reference trajectory and requires an exact match.
//!
//! The reference README allows 1e-5 (and asks for bit-exactness only for
//! CartPole, Acrobot and MountainCar); our ports reproduce NumPy's roundings
//! (libm `pow` for `**2`, float32 steps, `SeedSequence` seeding), so every env is
//! held to zero deviation here: any drift is a real change in the physics.

use std::path::PathBuf;

use reflex_sim::reference::check_file;

fn reference_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/gymnasium")
}

fn check_exact(file: &str, min_episodes: usize) {
    let reports = check_file(&reference_dir().join(file)).expect("reference file reads");
    assert_eq!(reports.len(), 1, "{file}: one env per file");
    let r = &reports[0];
    assert!(
        r.episodes >= min_episodes,
        "{file}: only {} episodes",
        r.episodes
    );
    assert!(r.steps > 0);
    for (what, dev) in [
        ("reset-from-seed state", r.reset_state),
        ("reset obs", r.reset_obs),
        ("step-by-step obs", r.step_obs),
        ("step-by-step reward", r.step_reward),
        ("step-by-step state", r.step_state),
        ("free-running obs", r.free_obs),
        ("free-running reward", r.free_reward),
        ("free-running return", r.free_return),
    ] {
        assert_eq!(
            dev, 0.0,
            "{file}: {what} deviates by {dev:e}: {:?}",
            r.first_problems
        );
    }
    assert_eq!(r.step_flag_mismatches, 0, "{file}: {:?}", r.first_problems);
    assert_eq!(r.free_flag_mismatches, 0, "{file}: {:?}", r.first_problems);
    assert!(r.passes(0.0));
}

#[test]
fn cartpole_matches_gymnasium_bit_for_bit() {
    check_exact("CartPole-v1.jsonl", 5);
}

#[test]
fn acrobot_matches_gymnasium_bit_for_bit() {
    check_exact("Acrobot-v1.jsonl", 10);
}

#[test]
fn mountain_car_matches_gymnasium_bit_for_bit() {
    check_exact("MountainCar-v0.jsonl", 10);
}

#[test]
fn pendulum_matches_gymnasium_bit_for_bit() {
    check_exact("Pendulum-v1.jsonl", 5);
}

#[test]
fn mountain_car_continuous_matches_gymnasium_bit_for_bit() {
    check_exact("MountainCarContinuous-v0.jsonl", 10);
}

/// The checker itself must notice a wrong trajectory: perturb one reward and one
/// flag in a copy of a reference file.
#[test]
fn checker_flags_a_tampered_file() {
    let original = std::fs::read_to_string(reference_dir().join("MountainCar-v0.jsonl")).unwrap();
    let mut tampered = String::new();
    let mut changed_reward = false;
    let mut changed_flag = false;
    for line in original.lines() {
        let mut line = line.to_string();
        if !changed_reward && line.contains("\"t\": 7,") {
            line = line.replace("\"reward\": -1.0", "\"reward\": -1.001");
            changed_reward = true;
        } else if !changed_flag && line.contains("\"t\": 9,") {
            line = line.replace("\"truncated\": false", "\"truncated\": true");
            changed_flag = true;
        }
        tampered.push_str(&line);
        tampered.push('\n');
    }
    assert!(changed_reward && changed_flag);
    let dir = std::env::temp_dir().join(format!("reflex-sim-tamper-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("MountainCar-v0.jsonl");
    std::fs::write(&path, tampered).unwrap();
    let r = &check_file(&path).unwrap()[0];
    assert!((r.step_reward - 0.001).abs() < 1e-9, "{}", r.step_reward);
    assert_eq!(r.step_flag_mismatches, 1);
    assert_eq!(r.free_flag_mismatches, 1);
    assert!(!r.passes(1e-5));
    assert!(!r.first_problems.is_empty());
    std::fs::remove_dir_all(dir).ok();
}

/// A seeding that no longer reproduces Gymnasium's reset moves only the reset
/// state (both modes then start from the recorded one): the check must fail on
/// it. Stand-in: the file says seed 7 where the episode was recorded with seed 0.
#[test]
fn checker_fails_a_reset_that_seeding_does_not_reproduce() {
    let original = std::fs::read_to_string(reference_dir().join("MountainCar-v0.jsonl")).unwrap();
    let needle = "\"type\": \"reset\", \"env\": \"MountainCar-v0\", \"seed\": 0,";
    assert!(original.contains(needle));
    let tampered = original.replacen(
        needle,
        "\"type\": \"reset\", \"env\": \"MountainCar-v0\", \"seed\": 7,",
        1,
    );
    let dir = std::env::temp_dir().join(format!("reflex-sim-reseed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("MountainCar-v0.jsonl");
    std::fs::write(&path, tampered).unwrap();
    let r = &check_file(&path).unwrap()[0];
    assert!(r.reset_state > 0.0, "{r:?}");
    assert_eq!(
        (r.reset_obs, r.step_obs, r.free_obs, r.free_return),
        (0.0, 0.0, 0.0, 0.0),
        "only the reset state moves: {r:?}"
    );
    assert!(!r.passes(0.0), "{r:?}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn malformed_files_get_clear_errors() {
    let dir = std::env::temp_dir().join(format!("reflex-sim-malformed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("garbage.jsonl", "not json at all\n", ":1: not a reference line"),
        (
            "orphan.jsonl",
            "{\"type\": \"step\", \"t\": 0, \"obs\": [0.0], \"action\": 0, \"reward\": 1.0, \"next_obs\": [0.0], \"next_state\": [0.0], \"terminated\": false, \"truncated\": false}\n",
            ":1: step outside an episode",
        ),
        ("unknown.jsonl", "{\"type\": \"meta\", \"env\": \"Humanoid-v5\"}\n", "unknown env `Humanoid-v5`"),
        ("empty.jsonl", "\n", "no episodes"),
    ];
    for (name, text, expected) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let err = check_file(&path).unwrap_err().to_string();
        assert!(err.contains(expected), "{name}: {err}");
    }
    let err = check_file(&dir.join("missing.jsonl"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("cannot read"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}
