//! Replays trajectories recorded from Gymnasium (JSON Lines, schema in
//! `tests/data/gymnasium/README.md`) and measures how far our envs deviate.
//!
//! Each episode is replayed three ways:
//! - **reset from seed**: `reset(Some(seed))` must draw the recorded initial state;
//! - **step by step**: every step restarts from the recorded state before it, so
//!   errors cannot accumulate and each step's physics is checked alone;
//! - **free running**: the whole episode runs from the recorded reset state with
//!   the recorded actions, as a user would run it.

use std::collections::BTreeMap;
use std::path::Path;

use reflex_msgs::Action;
use serde::Deserialize;

use crate::env::{Env, Step};
use crate::registry::make;
use crate::SimError;

/// One line of a reference file.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Line {
    Meta { env: String },
    Reset(ResetLine),
    Step(StepLine),
    End(EndLine),
}

#[derive(Debug, Deserialize)]
struct ResetLine {
    env: String,
    seed: u64,
    policy: String,
    obs: Vec<f64>,
    state: Vec<f64>,
}

#[derive(Debug, Deserialize)]
struct StepLine {
    t: u32,
    obs: Vec<f64>,
    action: RefAction,
    reward: f64,
    next_obs: Vec<f64>,
    next_state: Vec<f64>,
    terminated: bool,
    truncated: bool,
}

#[derive(Debug, Deserialize)]
struct EndLine {
    length: u32,
    #[serde(rename = "return")]
    episode_return: f64,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RefAction {
    Discrete(u32),
    Continuous(Vec<f64>),
}

impl RefAction {
    fn to_action(&self) -> Action {
        match self {
            Self::Discrete(i) => Action::Discrete(*i),
            // Recorded as the exact float64 widening of the float32 action.
            Self::Continuous(v) => Action::Continuous(v.iter().map(|&x| x as f32).collect()),
        }
    }
}

/// One recorded episode.
#[derive(Debug)]
struct Episode {
    reset: ResetLine,
    steps: Vec<StepLine>,
    end: EndLine,
}

/// Largest deviations found for one env, per replay mode.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvReport {
    /// Gymnasium id.
    pub env: String,
    /// Episodes replayed.
    pub episodes: usize,
    /// Steps replayed (per mode).
    pub steps: usize,
    /// Largest |Δ| of the initial state drawn by `reset(Some(seed))`.
    pub reset_state: f64,
    /// Largest |Δ| of the reset observation computed from the recorded state.
    pub reset_obs: f64,
    /// Step by step: largest |Δ| of the observation.
    pub step_obs: f64,
    /// Step by step: largest |Δ| of the reward.
    pub step_reward: f64,
    /// Step by step: largest |Δ| of the internal state.
    pub step_state: f64,
    /// Step by step: steps whose terminated/truncated flags differ.
    pub step_flag_mismatches: usize,
    /// Free running: largest |Δ| of the observation.
    pub free_obs: f64,
    /// Free running: largest |Δ| of the reward.
    pub free_reward: f64,
    /// Free running: largest |Δ| of an episode's return.
    pub free_return: f64,
    /// Free running: steps whose flags differ, plus episodes whose length
    /// differs from the recorded end.
    pub free_flag_mismatches: usize,
    /// The first few mismatches, described for a human.
    pub first_problems: Vec<String>,
}

impl EnvReport {
    /// Passes when every deviation, of the reset, step by step and free running,
    /// is within `tol` and no flag differs in either mode. (A wrong seeding moves
    /// only the reset state, which both modes then start from: it must count.)
    pub fn passes(&self, tol: f64) -> bool {
        self.reset_obs <= tol
            && self.reset_state <= tol
            && self.free_obs <= tol
            && self.free_reward <= tol
            && self.free_return <= tol
            && self.step_obs <= tol
            && self.step_reward <= tol
            && self.step_state <= tol
            && self.step_flag_mismatches == 0
            && self.free_flag_mismatches == 0
    }

    fn problem(&mut self, text: String) {
        if self.first_problems.len() < 5 {
            self.first_problems.push(text);
        }
    }
}

/// Largest absolute difference between two vectors (∞ if their lengths differ;
/// NaN on either side counts as ∞ unless both are NaN).
fn max_dev(ours: impl IntoIterator<Item = f64>, theirs: &[f64]) -> f64 {
    let ours: Vec<f64> = ours.into_iter().collect();
    if ours.len() != theirs.len() {
        return f64::INFINITY;
    }
    ours.iter().zip(theirs).fold(0.0, |m, (&a, &b)| {
        // Equal values (infinities included) and NaN against NaN do not deviate.
        let d = if a == b || (a.is_nan() && b.is_nan()) {
            0.0
        } else {
            (a - b).abs()
        };
        if d.is_nan() {
            f64::INFINITY
        } else {
            m.max(d)
        }
    })
}

fn obs_f64(obs: &[f32]) -> impl Iterator<Item = f64> + '_ {
    obs.iter().map(|&v| f64::from(v))
}

/// Reads a reference file into episodes grouped by env.
fn read_episodes(path: &Path) -> Result<BTreeMap<String, Vec<Episode>>, SimError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SimError::Io {
        path: shown.clone(),
        source,
    })?;
    let malformed = |line: usize, message: String| SimError::Malformed {
        path: shown.clone(),
        line,
        message,
    };
    let mut by_env: BTreeMap<String, Vec<Episode>> = BTreeMap::new();
    let mut open: Option<(ResetLine, Vec<StepLine>)> = None;
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        // Python's json writes ±Infinity for unbounded spaces in the meta line; that
        // is not JSON, and nothing we read from the meta line needs it.
        let cleaned;
        let raw = if raw.contains("Infinity") && raw.contains("\"meta\"") {
            cleaned = raw.replace("-Infinity", "null").replace("Infinity", "null");
            cleaned.as_str()
        } else {
            raw
        };
        let line: Line = serde_json::from_str(raw)
            .map_err(|e| malformed(number, format!("not a reference line: {e}")))?;
        match line {
            Line::Meta { env } => {
                make(&env).map_err(|e| malformed(number, e.to_string()))?;
            }
            Line::Reset(reset) => {
                if open.is_some() {
                    return Err(malformed(
                        number,
                        "reset before the previous episode's end".into(),
                    ));
                }
                open = Some((reset, Vec::new()));
            }
            Line::Step(step) => {
                let (_, steps) = open
                    .as_mut()
                    .ok_or_else(|| malformed(number, "step outside an episode".into()))?;
                if step.t as usize != steps.len() {
                    return Err(malformed(
                        number,
                        format!("step t={} where t={} was expected", step.t, steps.len()),
                    ));
                }
                steps.push(step);
            }
            Line::End(end) => {
                let (reset, steps) = open
                    .take()
                    .ok_or_else(|| malformed(number, "end outside an episode".into()))?;
                by_env
                    .entry(reset.env.clone())
                    .or_default()
                    .push(Episode { reset, steps, end });
            }
        }
    }
    if open.is_some() {
        return Err(malformed(
            text.lines().count(),
            "file ends inside an episode".into(),
        ));
    }
    if by_env.is_empty() {
        return Err(malformed(0, "no episodes".into()));
    }
    Ok(by_env)
}

/// Replays every episode of a reference file; one report per env in it.
pub fn check_file(path: &Path) -> Result<Vec<EnvReport>, SimError> {
    let mut reports = Vec::new();
    for (env_id, episodes) in read_episodes(path)? {
        let mut env = make(&env_id)?;
        let mut report = EnvReport {
            env: env_id,
            ..EnvReport::default()
        };
        for episode in &episodes {
            check_episode(env.as_mut(), episode, &mut report)?;
        }
        reports.push(report);
    }
    Ok(reports)
}

fn flags_match(step: &Step, recorded: &StepLine) -> bool {
    step.terminated == recorded.terminated && step.truncated == recorded.truncated
}

fn check_episode(
    env: &mut dyn Env,
    episode: &Episode,
    report: &mut EnvReport,
) -> Result<(), SimError> {
    let reset = &episode.reset;
    let label = format!("seed {} ({})", reset.seed, reset.policy);
    report.episodes += 1;
    report.steps += episode.steps.len();

    env.reset(Some(reset.seed));
    let d = max_dev(env.state(), &reset.state);
    report.reset_state = report.reset_state.max(d);

    env.set_state(&reset.state)?;
    let d = max_dev(obs_f64(env.obs()), &reset.obs);
    report.reset_obs = report.reset_obs.max(d);

    // Step by step, each from the recorded state before it.
    let mut before = &reset.state;
    for step in &episode.steps {
        env.set_state(before)?;
        env.set_elapsed_steps(step.t);
        let input = max_dev(obs_f64(env.obs()), &step.obs);
        let ours = env.step(&step.action.to_action())?;
        let obs = max_dev(obs_f64(env.obs()), &step.next_obs).max(input);
        let state = max_dev(env.state(), &step.next_state);
        let reward = max_dev([ours.reward], &[step.reward]);
        report.step_obs = report.step_obs.max(obs);
        report.step_state = report.step_state.max(state);
        report.step_reward = report.step_reward.max(reward);
        if !flags_match(&ours, step) {
            report.step_flag_mismatches += 1;
            report.problem(format!(
                "{label} t={}: step-by-step flags (terminated {}, truncated {}) vs recorded ({}, {})",
                step.t, ours.terminated, ours.truncated, step.terminated, step.truncated
            ));
        }
        before = &step.next_state;
    }

    // Free running from the recorded reset state.
    env.set_state(&reset.state)?;
    env.set_elapsed_steps(0);
    let mut episode_return = 0.0;
    for step in &episode.steps {
        let ours = env.step(&step.action.to_action())?;
        episode_return += ours.reward;
        report.free_obs = report
            .free_obs
            .max(max_dev(obs_f64(env.obs()), &step.next_obs));
        report.free_reward = report
            .free_reward
            .max(max_dev([ours.reward], &[step.reward]));
        if !flags_match(&ours, step) {
            report.free_flag_mismatches += 1;
            report.problem(format!(
                "{label} t={}: free-running flags (terminated {}, truncated {}) vs recorded ({}, {})",
                step.t, ours.terminated, ours.truncated, step.terminated, step.truncated
            ));
        }
    }
    if episode.end.length as usize != episode.steps.len() {
        report.free_flag_mismatches += 1;
        report.problem(format!(
            "{label}: recorded end says length {} but the file has {} steps",
            episode.end.length,
            episode.steps.len()
        ));
    }
    report.free_return = report
        .free_return
        .max((episode_return - episode.end.episode_return).abs());
    Ok(())
}
