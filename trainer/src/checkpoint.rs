//! Checkpoints: everything a killed run needs to continue — weights (every
//! network of the agent: online and target, or actor, critics and their
//! targets), Adam's moments and step counts, the replay buffer and its position,
//! the generators and the observation statistics — in one folder per step, written under a temporary name
//! and renamed into place, so `kill -9` at any moment leaves either the old
//! checkpoints or a complete new one, never a torn one.
//!
//! ```text
//! runs/NAME/checkpoints/step-0000050000/
//!   weights.safetensors    <network>.<param> (DQN, NAF: online, target;
//!                          DDPG, TD3: actor, critic, actor_target, critic_target)
//!   optimizer.safetensors  adam.m.<prefix><param>, adam.v.<prefix><param>
//!   replay.bin             the replay buffer (format in replay::state)
//!   state.json             step, Adam steps, generator states, obs statistics
//! ```
//!
//! Not saved: the n-step accumulator's pending window (at most n − 1 steps) and
//! the episode in progress; a resumed run starts a new episode.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use reflex_msgs::hash::to_hex;
use reflex_sim::SimRng;
use serde::{Deserialize, Serialize};

use crate::algo::{Agent, RunningNorm};
use crate::nn::Params;
use crate::TrainError;

/// Version of the checkpoint layout.
pub const CHECKPOINT_FORMAT: u32 = 1;
/// Checkpoints kept per run; older ones are deleted after a new one is complete.
pub const KEEP: usize = 2;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    format: u32,
    step: u64,
    adam_steps: u64,
    act_rng: String,
    replay_rng: String,
    /// Step counts of the optimizers after the first (DDPG, TD3: the critic's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    more_adam_steps: Vec<u64>,
    /// Running observation statistics, for agents that normalize.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    obs_norm: Option<RunningNorm>,
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn bad(path: &Path, what: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint(format!("{}: {what}", path.display()))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let mut file = fs::File::create(path).map_err(|e| bad(path, e))?;
    file.write_all(bytes).map_err(|e| bad(path, e))?;
    file.sync_all().map_err(|e| bad(path, e))
}

/// Flushes a file (or a folder's entries) to disk.
fn sync(path: &Path) -> Result<(), TrainError> {
    fs::File::open(path)
        .and_then(|file| file.sync_all())
        .map_err(|e| bad(path, e))
}

fn prefixed(prefix: &str, params: &dyn Params) -> Vec<String> {
    params
        .names()
        .into_iter()
        .map(|name| format!("{prefix}{name}"))
        .collect()
}

/// Writes a checkpoint of `agent` under `run_dir/checkpoints/` and prunes old
/// ones; returns its folder.
pub fn save(run_dir: &Path, agent: &mut dyn Agent) -> Result<PathBuf, TrainError> {
    let at = format!("checkpoint at step {}, not written", agent.steps_done());
    crate::algo::check_weights(agent, &at)?;
    let root = run_dir.join("checkpoints");
    fs::create_dir_all(&root).map_err(|e| bad(&root, e))?;
    let name = format!("step-{:010}", agent.steps_done());
    let partial = root.join(format!("{name}.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(|e| bad(&partial, e))?;
    }
    fs::create_dir_all(&partial).map_err(|e| bad(&partial, e))?;

    let mut weights: HashMap<String, Tensor> = HashMap::new();
    for (prefix, net) in agent.networks() {
        for (param, var) in net.named_vars() {
            weights.insert(format!("{prefix}.{param}"), var.as_tensor().clone());
        }
    }
    candle_core::safetensors::save(&weights, partial.join("weights.safetensors"))?;
    sync(&partial.join("weights.safetensors"))?;
    let mut optimizer: HashMap<String, Tensor> = HashMap::new();
    let mut adam_steps = Vec::new();
    for slot in agent.optimizers() {
        optimizer.extend(slot.adam.state(&prefixed(slot.prefix, slot.params)));
        adam_steps.push(slot.adam.steps());
    }
    candle_core::safetensors::save(&optimizer, partial.join("optimizer.safetensors"))?;
    sync(&partial.join("optimizer.safetensors"))?;
    write_file(&partial.join("replay.bin"), &agent.replay().to_bytes())?;
    let obs_norm = agent.obs_norm().cloned();
    let step = agent.steps_done();
    let (act_rng, replay_rng) = agent.rngs();
    let state = State {
        format: CHECKPOINT_FORMAT,
        step,
        adam_steps: adam_steps.first().copied().unwrap_or(0),
        act_rng: to_hex(&act_rng.to_bytes()),
        replay_rng: to_hex(&replay_rng.to_bytes()),
        more_adam_steps: adam_steps.get(1..).unwrap_or_default().to_vec(),
        obs_norm,
    };
    let json = serde_json::to_vec_pretty(&state).map_err(|e| bad(&partial, e))?;
    write_file(&partial.join("state.json"), &json)?;

    // The files' contents on disk before the name that says they are complete:
    // after a power cut, a renamed folder must not hold empty files.
    sync(&partial)?;
    let done = root.join(&name);
    if done.exists() {
        fs::remove_dir_all(&done).map_err(|e| bad(&done, e))?;
    }
    fs::rename(&partial, &done).map_err(|e| bad(&done, e))?;
    if let Ok(dir) = fs::File::open(&root) {
        let _ = dir.sync_all();
    }
    let all = list(run_dir)?;
    for old in all.iter().rev().skip(KEEP) {
        fs::remove_dir_all(old).map_err(|e| bad(old, e))?;
    }
    Ok(done)
}

/// Complete checkpoints of a run, oldest first (`.partial` folders are ignored).
pub fn list(run_dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
    let root = run_dir.join("checkpoints");
    let Ok(entries) = fs::read_dir(&root) else {
        return Ok(Vec::new());
    };
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
            Some((step, entry.path()))
        })
        .collect();
    found.sort();
    Ok(found.into_iter().map(|(_, path)| path).collect())
}

/// The newest complete checkpoint of a run.
pub fn latest(run_dir: &Path) -> Result<Option<PathBuf>, TrainError> {
    Ok(list(run_dir)?.pop())
}

/// Suffix given to a checkpoint folder that failed to load when a run resumed
/// from an older one: [`list`] no longer sees it, and it is kept to look at.
pub const DAMAGED_SUFFIX: &str = ".damaged";

/// Resumes from the newest checkpoint of `run_dir` that loads: `fresh` builds
/// an agent, `load` restores a checkpoint into it. A checkpoint that fails to
/// load (a disk fault, a file truncated or edited by hand) while an older one
/// loads is renamed with [`DAMAGED_SUFFIX`] (numbered if that name is taken),
/// after a warning that names it and why, and the run goes on from the older
/// one, built afresh: one damaged folder does not stop a run that has a good
/// checkpoint.
///
/// `Ok(None)` when the run has no checkpoint. When none loads (the usual case
/// for a cause that is not the files, such as settings that no longer fit them)
/// nothing is renamed: every older one's error is warned about, and the newest
/// one's is returned.
pub fn load_newest<A, E>(
    run_dir: &Path,
    mut fresh: impl FnMut() -> Result<A, E>,
    mut load: impl FnMut(&Path, &mut A) -> Result<(), E>,
) -> Result<Option<(PathBuf, A)>, E>
where
    E: std::fmt::Display + From<TrainError>,
{
    let all = list(run_dir)?;
    let mut failed: Vec<(&PathBuf, E)> = Vec::new();
    for path in all.iter().rev() {
        let mut agent = fresh()?;
        match load(path, &mut agent) {
            Ok(()) => {
                for (damaged, error) in &failed {
                    let kept = match set_aside(damaged) {
                        Ok(renamed) => format!("kept as {}", renamed.display()),
                        Err(e) => format!("could not be renamed: {e}"),
                    };
                    tracing::warn!(
                        "checkpoint {} does not load ({error}); resuming from the one before \
                         it, {} ({kept})",
                        damaged.display(),
                        path.display()
                    );
                }
                return Ok(Some((path.clone(), agent)));
            }
            Err(e) => failed.push((path, e)),
        }
    }
    let mut failed = failed.into_iter();
    let newest = failed.next();
    for (older, error) in failed {
        tracing::warn!(
            "checkpoint {} does not load either: {error}",
            older.display()
        );
    }
    match newest {
        Some((_, error)) => Err(error),
        None => Ok(None),
    }
}

/// Renames a checkpoint folder that does not load to `<name>.damaged`, or
/// `<name>.damaged-2`, … when an earlier one of the same step is there.
fn set_aside(damaged: &Path) -> std::io::Result<PathBuf> {
    for n in 1u32.. {
        let mut name = damaged.as_os_str().to_owned();
        name.push(DAMAGED_SUFFIX);
        if n > 1 {
            name.push(format!("-{n}"));
        }
        let renamed = PathBuf::from(name);
        if !renamed.exists() {
            fs::rename(damaged, &renamed)?;
            return Ok(renamed);
        }
    }
    unreachable!("a free name among 2^32")
}

fn load_net(
    net: &dyn Params,
    prefix: &str,
    tensors: &HashMap<String, Tensor>,
    path: &Path,
) -> Result<(), TrainError> {
    for (param, var) in net.named_vars() {
        let key = format!("{prefix}.{param}");
        let tensor = tensors
            .get(&key)
            .ok_or_else(|| bad(path, format!("lacks `{key}`")))?;
        if tensor.dims() != var.dims() {
            return Err(bad(
                path,
                format!(
                    "`{key}` has shape {:?}, the network needs {:?}",
                    tensor.dims(),
                    var.dims()
                ),
            ));
        }
        var.set(tensor)?;
    }
    Ok(())
}

/// Loads only the weights of every network from a checkpoint (for evaluation
/// and export).
pub fn load_weights(
    checkpoint: &Path,
    agent: &dyn Agent,
    device: &Device,
) -> Result<(), TrainError> {
    let path = checkpoint.join("weights.safetensors");
    let tensors = candle_core::safetensors::load(&path, device).map_err(|e| bad(&path, e))?;
    for (prefix, net) in agent.networks() {
        load_net(net, prefix, &tensors, &path)?;
    }
    Ok(())
}

/// Restores everything a checkpoint holds into `agent`, which must have been
/// built with the same configuration.
pub fn load(checkpoint: &Path, agent: &mut dyn Agent, device: &Device) -> Result<(), TrainError> {
    let state_path = checkpoint.join("state.json");
    let text = fs::read(&state_path).map_err(|e| bad(&state_path, e))?;
    let state: State = serde_json::from_slice(&text).map_err(|e| bad(&state_path, e))?;
    if state.format != CHECKPOINT_FORMAT {
        return Err(bad(
            &state_path,
            format!(
                "format {} (this build reads {CHECKPOINT_FORMAT})",
                state.format
            ),
        ));
    }
    let rng = |text: &str| unhex(text).and_then(|b| SimRng::from_bytes(&b));
    let act_rng = rng(&state.act_rng).ok_or_else(|| bad(&state_path, "corrupt act_rng"))?;
    let replay_rng =
        rng(&state.replay_rng).ok_or_else(|| bad(&state_path, "corrupt replay_rng"))?;

    load_weights(checkpoint, agent, device)?;
    let path = checkpoint.join("optimizer.safetensors");
    let moments = candle_core::safetensors::load(&path, device).map_err(|e| bad(&path, e))?;
    let steps: Vec<u64> = std::iter::once(state.adam_steps)
        .chain(state.more_adam_steps.iter().copied())
        .collect();
    let mut slots = agent.optimizers();
    if slots.len() != steps.len() {
        return Err(bad(
            &state_path,
            format!(
                "{} optimizer step counts for {} optimizers",
                steps.len(),
                slots.len()
            ),
        ));
    }
    for (slot, steps) in slots.iter_mut().zip(steps) {
        let names = prefixed(slot.prefix, slot.params);
        slot.adam
            .load_state(&names, &moments, steps)
            .map_err(|e| bad(&path, e))?;
    }
    drop(slots);
    let path = checkpoint.join("replay.bin");
    let bytes = fs::read(&path).map_err(|e| bad(&path, e))?;
    agent
        .replay_mut()
        .restore(&bytes)
        .map_err(|e| bad(&path, e))?;
    match (agent.obs_norm(), state.obs_norm) {
        (Some(norm), Some(saved)) if saved.mean.len() == norm.mean.len() => *norm = saved,
        (None, None) => {}
        _ => {
            return Err(bad(
                &state_path,
                "observation statistics do not match the configuration",
            ))
        }
    }
    let (act, replay) = agent.rngs();
    *act = act_rng;
    *replay = replay_rng;
    agent.set_steps_done(state.step);
    // One written before checkpoints refused NaN weights.
    let at = format!(
        "in checkpoint {}: move it aside to resume from the one before",
        checkpoint.display()
    );
    crate::algo::check_weights(agent, &at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(steps: &[u64], name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("reflex-ckpt-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for step in steps {
            fs::create_dir_all(dir.join(format!("checkpoints/step-{step:010}"))).unwrap();
        }
        dir
    }

    /// Loads "checkpoints" whose step is not in `bad`; the agent is the step.
    fn resume(dir: &Path, bad: &[u64]) -> Result<Option<(PathBuf, u64)>, TrainError> {
        load_newest(
            dir,
            || Ok(0u64),
            |path, agent| {
                let step: u64 = path.file_name().unwrap().to_str().unwrap()[5..]
                    .parse()
                    .unwrap();
                if bad.contains(&step) {
                    return Err(bad_step(path));
                }
                *agent = step;
                Ok(())
            },
        )
    }

    fn bad_step(path: &Path) -> TrainError {
        TrainError::Checkpoint(format!("{}: truncated", path.display()))
    }

    #[test]
    fn the_newest_checkpoint_that_loads_is_resumed_and_damaged_ones_set_aside() {
        let dir = run_with(&[1000, 2000, 3000], "aside");
        let (path, step) = resume(&dir, &[3000, 2000]).unwrap().unwrap();
        assert_eq!(step, 1000);
        assert!(path.ends_with("step-0000001000"));
        let names: Vec<String> = fs::read_dir(dir.join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            names.contains(&"step-0000003000.damaged".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"step-0000002000.damaged".to_string()),
            "{names:?}"
        );
        assert_eq!(list(&dir).unwrap().len(), 1, "list() no longer sees them");

        // The same step damaged again (a rerun reached it and wrote it anew):
        // the earlier one set aside stays, the new one gets a number.
        fs::create_dir_all(dir.join("checkpoints/step-0000003000")).unwrap();
        assert_eq!(resume(&dir, &[3000]).unwrap().unwrap().1, 1000);
        assert!(dir.join("checkpoints/step-0000003000.damaged").exists());
        assert!(dir.join("checkpoints/step-0000003000.damaged-2").exists());
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn when_no_checkpoint_loads_the_newest_error_is_returned_and_nothing_renamed() {
        let dir = run_with(&[1000, 2000], "none");
        let err = resume(&dir, &[1000, 2000]).unwrap_err().to_string();
        assert!(err.contains("step-0000002000"), "{err}");
        assert_eq!(list(&dir).unwrap().len(), 2, "nothing set aside");
        assert!(resume(&run_with(&[], "empty"), &[]).unwrap().is_none());
        fs::remove_dir_all(&dir).ok();
    }
}
