//! `reflex-train` as a user runs it: a run folder, a kill -9 and a resume, eval,
//! and clear errors for bad settings.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn train_cmd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reflex-train"));
    cmd.env("RAYON_NUM_THREADS", "1");
    cmd
}

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("reflex-train-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

const SMALL: [&str; 6] = [
    "--set",
    "dqn.net.hidden=[32, 32]",
    "--set",
    "checkpoint_interval=1000",
    "--set",
    "eval_interval=1000",
];

/// `reflex-train export RUN [--checkpoint C] [-o OUTPUT]`.
fn export(run: &Path, checkpoint: Option<&Path>, output: Option<&Path>) -> std::process::Output {
    let mut cmd = train_cmd();
    cmd.arg("export").arg(run);
    if let Some(c) = checkpoint {
        cmd.arg("--checkpoint").arg(c);
    }
    if let Some(o) = output {
        cmd.arg("-o").arg(o);
    }
    cmd.output().unwrap()
}

/// The periodic-evaluation rows of a metrics.csv.
fn eval_rows(metrics: &str) -> usize {
    metrics
        .lines()
        .skip(1)
        .filter(|l| l.split(',').nth(2).is_some_and(|v| !v.is_empty()))
        .count()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `reflex-train eval ARGS PATH`, which must succeed; its JSON record.
fn eval_json(args: &[&str], path: &Path) -> serde_json::Value {
    let output = train_cmd()
        .arg("eval")
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn run_writes_its_folder_and_eval_reads_it_back() {
    let out = out_dir("run");
    let status = train_cmd()
        .args([
            "run", "--env", "cartpole", "--steps", "2500", "--seed", "3", "--quiet", "--out",
        ])
        .arg(&out)
        .args(SMALL)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        config.contains("steps = 2500") && config.contains("hidden = [32, 32]"),
        "{config}"
    );
    let eval = read_json(&out.join("eval.json"));
    for key in [
        "mean_return",
        "std_return",
        "episodes",
        "env",
        "algo",
        "steps",
        "updates",
        "seed",
        "eval_seed",
    ] {
        assert!(eval.get(key).is_some(), "eval.json lacks {key}: {eval}");
    }
    assert_eq!(eval["episodes"], 20);
    assert_eq!(eval["seed"], 3);
    assert_eq!(eval["steps"], 2500);
    // Evaluation episodes are seeded far from training's: 1,000,000 + 1000 · 3.
    assert_eq!(eval["eval_seed"], 1_003_000);
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let mut lines = metrics.lines();
    assert_eq!(
        lines.next().unwrap(),
        "step,episode_return,eval_return,loss,q_mean,exploration,steps_per_s"
    );
    assert_eq!(
        eval_rows(&metrics),
        2,
        "evaluations at 1000 and 2000:\n{metrics}"
    );
    assert!(out
        .join("checkpoints/step-0000002500/weights.safetensors")
        .exists());

    // The best periodic evaluation's policy, and its own final evaluation.
    let selected = read_json(&out.join("best/selected.json"));
    let step = selected["step"].as_u64().unwrap();
    assert!(step == 1000 || step == 2000, "{selected}");
    let periodic: Vec<f64> = metrics
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(2).and_then(|v| v.parse().ok()))
        .collect();
    let best = periodic.iter().copied().fold(f64::MIN, f64::max);
    assert_eq!(
        selected["periodic_mean"].as_f64().unwrap(),
        best,
        "{selected}"
    );
    assert!(out.join("best/policy.onnx").exists());
    let best_eval = read_json(&out.join("best/eval.json"));
    assert_eq!(best_eval["episodes"], 20);
    assert_eq!(best_eval["selected_step"].as_u64(), Some(step));
    // It is what the saved file does on the final evaluation's episodes
    // (seed 3 → 1,000,000 + 1000 · 3).
    let best_policy = out.join("best/policy.onnx");
    let again = eval_json(
        &["--episodes", "20", "--seed", "1003000", "--policy"],
        &best_policy,
    );
    assert_eq!(
        again["mean_return"], best_eval["mean_return"],
        "{again} vs {best_eval}"
    );

    // Each field means the same in every record: `steps` are env steps, the
    // checkpoint's; `seed` is the run's training seed, `eval_seed` this
    // evaluation's; an ONNX file knows its updates, not its steps or seed.
    assert_eq!(again["eval_seed"], 1_003_000, "{again}");
    assert!(
        again.get("steps").is_none() && again.get("seed").is_none(),
        "{again}"
    );
    assert!(again["updates"].as_u64().is_some(), "{again}");
    let printed = eval_json(&["--episodes", "3", "--seed", "5", "--checkpoint"], &out);
    assert_eq!(printed["episodes"], 3);
    assert_eq!(printed["env"], "cartpole");
    assert_eq!(
        (&printed["steps"], &printed["seed"], &printed["eval_seed"]),
        (&2500.into(), &3.into(), &5.into()),
        "{printed}"
    );
    // An older checkpoint (the newest two are kept) says its own step.
    let at_2000 = out.join("checkpoints/step-0000002000");
    let printed = eval_json(&["--episodes", "1", "--checkpoint"], &at_2000);
    assert_eq!(printed["steps"], 2000, "{printed}");

    // Another env that does not fit the networks is a clear refusal.
    let output = train_cmd()
        .args([
            "eval",
            "--episodes",
            "1",
            "--env",
            "pendulum",
            "--checkpoint",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("(4 observations, 2 discrete actions); pendulum (3 observations"),
        "{stderr}"
    );

    // `export RUN --checkpoint C`: C must be RUN's (the output goes into RUN).
    let exported = out.join("exported.onnx");
    let output = export(&out, Some(&at_2000), Some(&exported));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(exported.exists());
    // A checkpoint folder as the positional argument stands for its run.
    let output = export(&at_2000, None, Some(&exported));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let other = out_dir("other-run");
    std::fs::create_dir_all(&other).unwrap();
    let output = export(&other, Some(&at_2000), None);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("belongs to the run"), "{stderr}");
    assert!(!other.join("policy.onnx").exists() && !out.join("policy.onnx.tmp").exists());
    std::fs::remove_dir_all(&other).ok();
    std::fs::remove_dir_all(&out).ok();
}

/// A second run into a folder that holds one starts fresh: its metrics are
/// its own, and the first run is kept beside it as `OUT.previous`.
#[test]
fn a_new_run_moves_an_old_one_aside_instead_of_mixing_with_it() {
    let out = out_dir("again");
    let run = |seed: &str| {
        let status = train_cmd()
            .args(["run", "--steps", "1500", "--seed", seed, "--quiet", "--out"])
            .arg(&out)
            .args(SMALL)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    };
    run("1");
    let first = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    run("2");
    let second = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(second.matches("step,episode_return").count(), 1);
    assert_ne!(first, second);
    assert_eq!(read_json(&out.join("eval.json"))["seed"], 2);
    let mut previous = out.clone().into_os_string();
    previous.push(".previous");
    let previous = PathBuf::from(previous);
    assert_eq!(
        std::fs::read_to_string(previous.join("metrics.csv")).unwrap(),
        first
    );
    assert_eq!(read_json(&previous.join("eval.json"))["seed"], 1);

    // A run that stopped before its first checkpoint (here: its checkpoints
    // and results removed) has nothing to keep: it does not push the kept run
    // out of OUT.previous, and the folder's other files stay.
    for results in ["checkpoints", "best"] {
        std::fs::remove_dir_all(out.join(results)).unwrap();
    }
    for results in ["eval.json", "policy.onnx", "curve.png"] {
        std::fs::remove_file(out.join(results)).unwrap();
    }
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    run("3");
    assert_eq!(read_json(&out.join("eval.json"))["seed"], 3);
    assert_eq!(
        std::fs::read_to_string(previous.join("metrics.csv")).unwrap(),
        first,
        "the resumable run is still kept"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "mine"
    );

    // A finished run whose checkpoints were deleted (to free the disk) still
    // has its results: it is kept, moved aside.
    std::fs::remove_dir_all(out.join("checkpoints")).unwrap();
    run("4");
    assert_eq!(read_json(&previous.join("eval.json"))["seed"], 3);
    assert_eq!(read_json(&out.join("eval.json"))["seed"], 4);
    std::fs::remove_dir_all(&out).ok();
    std::fs::remove_dir_all(&previous).ok();
}

/// `run --population 2`: a run folder per seed, each a whole run (its own
/// config, metrics, evaluations and policy, which `eval` reads back), and
/// the population's summary and picture.
#[test]
fn a_population_run_writes_a_run_folder_per_seed() {
    let out = out_dir("population");
    let output = train_cmd()
        .args([
            "run",
            "--population",
            "2",
            "--steps",
            "2500",
            "--seed",
            "3",
            "--quiet",
            "--out",
        ])
        .arg(&out)
        .args(SMALL)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("population of 2"), "{stderr}");
    let summary = read_json(&out.join("population.json"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        last, summary,
        "the last line of stdout is population.json's record"
    );
    let members = summary["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{summary}");
    for (k, member) in members.iter().enumerate() {
        let seed = 3 + k as u64;
        assert_eq!(member["seed"].as_u64(), Some(seed), "{summary}");
        let dir = out.join(format!("member-{k}"));
        let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
        assert!(config.contains(&format!("seed = {seed}")), "{config}");
        let eval = read_json(&dir.join("eval.json"));
        assert_eq!(eval["seed"].as_u64(), Some(seed));
        assert_eq!(eval["mean_return"], member["final_mean_return"]);
        let best = read_json(&dir.join("best/eval.json"));
        assert_eq!(best["mean_return"], member["best_policy_mean_return"]);
        let metrics = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
        assert_eq!(
            eval_rows(&metrics),
            2,
            "evaluations at 1000 and 2000:\n{metrics}"
        );
        assert!(dir
            .join("checkpoints/step-0000002500/weights.safetensors")
            .exists());
        // The exported policy is the member's: the runtime's evaluation on
        // the final evaluation's episodes (seed 1,000,000 + 1000 · seed)
        // gives its return.
        let seed_arg = (1_000_000 + 1000 * seed).to_string();
        let again = eval_json(
            &["--episodes", "20", "--seed", &seed_arg, "--policy"],
            &dir.join("policy.onnx"),
        );
        assert_eq!(again["mean_return"], eval["mean_return"], "member {k}");
    }
    let best = summary["best_member"].as_u64().unwrap() as usize;
    let best_return = members[best]["final_mean_return"].as_f64().unwrap();
    assert!(members
        .iter()
        .all(|m| m["final_mean_return"].as_f64().unwrap() <= best_return));
    assert!(out.join("curve.png").exists());

    // The population's own folder is not a run: eval says which to name.
    let output = train_cmd()
        .args(["eval", "--episodes", "1", "--checkpoint"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("population's folder"),
        "{stderr}"
    );

    // Recurrent learners and NAF have no population form: a clear error.
    for algo in [&["--algo", "naf"][..], &["--algo", "td3", "--recurrent"]] {
        let output = train_cmd()
            .args(["run", "--population", "2", "--env", "pendulum"])
            .args(algo)
            .args(["--steps", "10", "--quiet", "--out"])
            .arg(out.join("refused"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains("no population form"),
            "{algo:?}: {stderr}"
        );
        assert!(
            !out.join("refused").exists(),
            "nothing written for {algo:?}"
        );
    }
    std::fs::remove_dir_all(&out).ok();
}

/// `run --algo td3 --population 2`: member K's metrics are the single run
/// `--seed K` writes, row for row (every episode return, evaluation, loss
/// and mean Q; only the timing column differs).
#[test]
fn a_td3_population_member_is_its_seeds_run() {
    population_member_is_its_seeds_run(
        "pendulum",
        "td3",
        &[
            "td3.learning_starts=400",
            "td3.batch_size=32",
            "td3.actor.hidden=[32, 32]",
            "td3.critic.hidden=[32, 32]",
        ],
    );
}

/// The same for DRQN's population (stacked LSTMs) on masked CartPole.
#[test]
fn a_drqn_population_member_is_its_seeds_run() {
    population_member_is_its_seeds_run(
        "cartpole-masked",
        "drqn",
        &[
            "drqn.learning_starts=300",
            "drqn.batch_size=8",
            "drqn.lstm_hidden=16",
            "drqn.net.hidden=[16]",
            "drqn.seq_len=8",
            "drqn.burn_in=4",
        ],
    );
}

/// `run --env ENV --algo ALGO --population 2 --seed 4` against `run --seed
/// 5` alone, 1,000 steps with `settings` (key=value): member 1's
/// metrics.csv (but its timing column) and final evaluation are the single
/// run's.
fn population_member_is_its_seeds_run(env: &str, algo: &str, settings: &[&str]) {
    let out = out_dir(&format!("population-{algo}"));
    let mut sets = Vec::new();
    for kv in settings.iter().chain(&[
        "eval_interval=500",
        "eval_interval_episodes=1",
        "eval_episodes=2",
    ]) {
        sets.extend(["--set", kv]);
    }
    let run = |extra: &[&str], dir: &Path| {
        let output = train_cmd()
            .args(["run", "--env", env, "--algo", algo, "--steps", "1000"])
            .arg("--quiet")
            .args(extra)
            .args(&sets)
            .arg("--out")
            .arg(dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "{stderr}");
        stderr
    };
    let stderr = run(&["--seed", "4", "--population", "2"], &out);
    assert!(
        stderr.contains(&format!("population of 2 {algo} learners")),
        "{stderr}"
    );
    let summary = read_json(&out.join("population.json"));
    assert_eq!(summary["algo"], algo);
    let without_timing = |metrics: &Path| -> Vec<String> {
        std::fs::read_to_string(metrics)
            .unwrap()
            .lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string())
            .collect()
    };
    let alone = out.with_extension("alone");
    run(&["--seed", "5"], &alone);
    let member = without_timing(&out.join("member-1/metrics.csv"));
    assert!(
        member.len() > 5 && eval_rows(&member.join("\n")) == 2,
        "{member:?}"
    );
    assert_eq!(member, without_timing(&alone.join("metrics.csv")));
    assert_eq!(
        read_json(&out.join("member-1/eval.json"))["mean_return"],
        read_json(&alone.join("eval.json"))["mean_return"]
    );
    std::fs::remove_dir_all(&out).ok();
    std::fs::remove_dir_all(&alone).ok();
}

/// A population whose members did not all save their last checkpoint (a
/// crash while saving) resumes from the newest step they all have, and
/// finishes every member's run.
#[test]
fn a_population_resumes_from_the_newest_step_all_members_saved() {
    let out = out_dir("population-resume");
    let run = |args: &[&str]| {
        let output = train_cmd().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "{stderr}");
        stderr
    };
    let dir = out.to_str().unwrap();
    let mut args = vec![
        "run",
        "--population",
        "2",
        "--steps",
        "3000",
        "--quiet",
        "--out",
        dir,
    ];
    args.extend(SMALL);
    run(&args);
    // As if the run died while member-1 saved step 3000, before the end.
    let member1 = out.join("member-1");
    std::fs::remove_dir_all(member1.join("checkpoints/step-0000003000")).unwrap();
    for k in 0..2 {
        std::fs::remove_file(out.join(format!("member-{k}/eval.json"))).unwrap();
    }
    std::fs::remove_file(out.join("population.json")).unwrap();
    let stderr = run(&["resume", dir, "--quiet"]);
    assert!(
        stderr.contains("resuming a population of 2") && stderr.contains("from step 2000"),
        "{stderr}"
    );
    for k in 0..2 {
        let member = out.join(format!("member-{k}"));
        assert_eq!(read_json(&member.join("eval.json"))["steps"], 3000);
        assert!(member.join("checkpoints/step-0000003000").exists());
    }
    assert_eq!(
        read_json(&out.join("population.json"))["members"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // A member is a run folder of its own, too: it resumes alone (it is
    // finished, so that is its final evaluation again).
    let alone = run(&["resume", member1.to_str().unwrap(), "--quiet"]);
    assert!(alone.contains("resuming"), "{alone}");
    std::fs::remove_dir_all(&out).ok();
}

/// Ctrl-C (SIGINT) stops a run after the step it is on, with a checkpoint at
/// that step (not only the last periodic one), and `resume` goes on from it.
#[test]
fn an_interrupted_run_checkpoints_where_it_stopped() {
    let out = out_dir("sigint");
    let child = train_cmd()
        .args([
            "run", "--env", "cartpole", "--steps", "1000000", "--quiet", "--out",
        ])
        .arg(&out)
        .args(SMALL)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Past the first periodic checkpoint (any: the newest two are kept), then
    // interrupted.
    let start = Instant::now();
    let checkpointed = || {
        std::fs::read_dir(out.join("checkpoints"))
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("step-"))
            })
            .unwrap_or(false)
    };
    while !checkpointed() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("interrupted at step"))
        .unwrap();
    let step: u64 = line["interrupted at step ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let saved = out.join(format!("checkpoints/step-{step:010}"));
    assert!(saved.join("weights.safetensors").exists(), "{line}");
    assert!(saved.join("policy.onnx").exists(), "its policy beside it");

    // Resume from it, for a few hundred steps more.
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    let config = config.replace("steps = 1000000", &format!("steps = {}", step + 300));
    std::fs::write(out.join("config.toml"), config).unwrap();
    let output = train_cmd()
        .arg("resume")
        .arg(&out)
        .arg("--quiet")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("(step {step})")), "{stderr}");
    assert_eq!(read_json(&out.join("eval.json"))["steps"], step + 300);
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn a_killed_run_resumes_from_its_last_checkpoint() {
    let out = out_dir("resume");
    let mut child = train_cmd()
        .args([
            "run", "--env", "cartpole", "--steps", "6000", "--quiet", "--out",
        ])
        .arg(&out)
        .args(SMALL)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = out.join("checkpoints/step-0000002000");
    let start = Instant::now();
    while !first.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    assert!(!out.join("eval.json").exists(), "killed before the end");

    let resume = || {
        train_cmd()
            .arg("resume")
            .arg(&out)
            .arg("--quiet")
            .output()
            .unwrap()
    };
    let output = resume();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("resuming"), "{stderr}");
    assert_eq!(read_json(&out.join("eval.json"))["steps"], 6000);
    assert!(out.join("checkpoints/step-0000006000").exists());
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(
        metrics.matches("step,episode_return").count(),
        1,
        "one header after resume"
    );
    let last_step: u64 = metrics
        .lines()
        .last()
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(last_step > 5000, "metrics continue to the end: {last_step}");

    // A damaged newest checkpoint (here a truncated weights file, as a power cut
    // or a full disk leaves) is set aside with a warning that names it, and the
    // run resumes from the one before it; the end of the run is done again.
    std::fs::remove_file(out.join("eval.json")).unwrap();
    let damaged = out.join("checkpoints/step-0000006000");
    let weights = std::fs::read(damaged.join("weights.safetensors")).unwrap();
    std::fs::write(
        damaged.join("weights.safetensors"),
        &weights[..weights.len() / 2],
    )
    .unwrap();
    let output = resume();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.contains("does not load"))
        .unwrap_or_else(|| panic!("a warning about the damaged checkpoint: {stderr}"));
    assert!(
        warning.contains("step-0000006000/weights.safetensors")
            && warning.contains("step-0000005000")
            && warning.contains("step-0000006000.damaged"),
        "{warning}"
    );
    assert!(stderr.contains("(step 5000)"), "{stderr}");
    assert!(out.join("checkpoints/step-0000006000.damaged").exists());
    assert!(out
        .join("checkpoints/step-0000006000/weights.safetensors")
        .exists());
    assert_eq!(read_json(&out.join("eval.json"))["steps"], 6000);

    // When no checkpoint loads, it is one clear line that names the newest's
    // file and says what is wrong with it once (not `truncated: truncated`), and
    // nothing is set aside.
    for step in [5000, 6000] {
        let replay = out.join(format!("checkpoints/step-{step:010}/replay.bin"));
        std::fs::write(&replay, b"junk").unwrap();
    }
    let output = resume();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(line.contains("step-0000006000/replay.bin"), "{line}");
    assert_eq!(line.matches("truncated").count(), 1, "{line}");
    assert!(out.join("checkpoints/step-0000006000/replay.bin").exists());
    assert!(out.join("checkpoints/step-0000005000/replay.bin").exists());
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn bad_settings_are_clear_errors() {
    for (args, expected) in [
        (vec!["run", "--quiet", "--set", "dqn.gama=0.9"], "gama"),
        (
            vec!["run", "--quiet", "--env", "pendulum"],
            "continuous actions",
        ),
        (vec!["run", "--quiet", "--env", "cartpoel"], "unknown env"),
        // TD3's Pendulum preset starts learning at 10k steps: 5k would train nothing.
        (
            vec![
                "run", "--quiet", "--env", "pendulum", "--algo", "td3", "--steps", "5000",
            ],
            "td3.learning_starts = 10000 is not below steps = 5000",
        ),
        (
            vec!["run", "--quiet", "--set", "dqn.net.hidden=[64,0]"],
            "dqn.net.hidden = [64, 0]: a layer must have at least 1 unit",
        ),
        (
            vec!["serve", "--quiet", "--set", "dqn.tau=0"],
            "dqn.tau = 0: must be in (0, 1]",
        ),
        (
            vec!["run", "--quiet", "--set", "dqn.gamma=1.5"],
            "dqn.gamma = 1.5: must be in [0, 1]",
        ),
        (
            vec!["run", "--quiet", "--steps", "0"],
            "steps = 0: must be at least 1",
        ),
        (
            vec!["eval", "--episodes", "0", "--policy", "x.onnx"],
            "--episodes",
        ),
        (
            vec![
                "run",
                "--quiet",
                "--set",
                "dqn.batch_size=200",
                "--set",
                "dqn.buffer_size=100",
            ],
            "dqn.batch_size = 200: must not exceed dqn.buffer_size = 100",
        ),
        // Without the `cuda` feature (CI, default builds) a GPU is a clear refusal.
        #[cfg(not(feature = "cuda"))]
        (
            vec!["run", "--quiet", "--device", "cuda"],
            "built without the `cuda` feature",
        ),
        (
            vec!["run", "--quiet", "--device", "tpu"],
            "expected cpu, cuda or cuda:N",
        ),
        #[cfg(not(feature = "cuda"))]
        (
            vec!["serve", "--quiet", "--device", "cuda:1"],
            "built without the `cuda` feature",
        ),
        (
            vec!["resume", "--quiet", "/nonexistent/run"],
            "/nonexistent/run/config.toml",
        ),
        (
            vec![
                "eval",
                "--checkpoint",
                "/nonexistent/run/checkpoints/step-1",
            ],
            "/nonexistent/run",
        ),
    ] {
        let output = train_cmd().args(&args).output();
        let output = match output {
            Ok(o) => o,
            Err(e) => panic!("{args:?}: {e}"),
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// `config.toml` is there to be edited before a resume: an edit out of range
/// is refused as `run` refuses it, not trained on.
#[test]
fn a_resume_checks_the_edited_config() {
    let out = out_dir("edited");
    let status = train_cmd()
        .args(["run", "--steps", "1500", "--quiet", "--out"])
        .arg(&out)
        .args(SMALL)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let path = out.join("config.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    let edited = config.replacen("learning_rate = ", "learning_rate = -", 1);
    assert_ne!(config, edited);
    std::fs::write(&path, edited).unwrap();
    let output = train_cmd()
        .args(["resume", "--quiet"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("config.toml"), "{stderr}");
    assert!(stderr.contains("learning_rate = -"), "{stderr}");
    assert!(
        stderr.contains("must be a finite number above 0"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&out).ok();
}

/// A run whose loss goes NaN stops with a clear error at that step instead of
/// training on, and exporting, NaN weights; its checkpoints from before stay.
#[test]
fn a_diverging_run_stops_with_a_clear_error() {
    for (algo_args, expected) in [
        (
            vec!["--set", "dqn.learning_rate=1e30"],
            "training diverged at step",
        ),
        (
            vec!["--population", "2", "--set", "dqn.learning_rate=1e30"],
            "training diverged at member 0, step",
        ),
    ] {
        let out = out_dir("diverge");
        let output = train_cmd()
            .args(["run", "--quiet", "--env", "cartpole", "--steps", "3000"])
            .args(["--set", "checkpoint_interval=500", "--out"])
            .arg(&out)
            .args(&algo_args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{algo_args:?}: {stderr}");
        assert!(stderr.contains(expected), "{algo_args:?}: {stderr}");
        assert!(stderr.contains("the loss is"), "{stderr}");
        let run = if algo_args.contains(&"--population") {
            out.join("member-0")
        } else {
            out.clone()
        };
        assert!(
            !run.join("policy.onnx").exists(),
            "no policy from NaN weights"
        );
        assert!(run.join("checkpoints/step-0000000500").exists());
        std::fs::remove_dir_all(&out).ok();
    }
}
