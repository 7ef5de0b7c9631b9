//! Checkpoints: everything a killed run needs to continue — weights (online and
//! target), Adam's moments and step count, the replay buffer and its position,
//! and the generators — in one folder per step, written under a temporary name
//! and renamed into place, so `kill -9` at any moment leaves either the old
//! checkpoints or a complete new one, never a torn one.
//!
//! ```text
//! runs/NAME/checkpoints/step-0000050000/
//!   weights.safetensors    online.<param>, target.<param>
//!   optimizer.safetensors  adam.m.<param>, adam.v.<param>
//!   replay.bin             the replay buffer (format in replay::state)
//!   state.json             step, Adam steps, generator states
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

use crate::algo::dqn::{Dqn, Replay};
use crate::nn::QNetwork;
use crate::replay::{PrioritizedReplay, ReplayBuffer};
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

fn names(net: &QNetwork) -> Vec<String> {
    net.named_vars().into_iter().map(|(name, _)| name).collect()
}

/// Writes a checkpoint of `dqn` under `run_dir/checkpoints/` and prunes old
/// ones; returns its folder.
pub fn save(run_dir: &Path, dqn: &Dqn) -> Result<PathBuf, TrainError> {
    let root = run_dir.join("checkpoints");
    fs::create_dir_all(&root).map_err(|e| bad(&root, e))?;
    let name = format!("step-{:010}", dqn.steps_done);
    let partial = root.join(format!("{name}.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(|e| bad(&partial, e))?;
    }
    fs::create_dir_all(&partial).map_err(|e| bad(&partial, e))?;

    let mut weights: HashMap<String, Tensor> = HashMap::new();
    for (prefix, net) in [("online", &dqn.online), ("target", &dqn.target)] {
        for (param, var) in net.named_vars() {
            weights.insert(format!("{prefix}.{param}"), var.as_tensor().clone());
        }
    }
    candle_core::safetensors::save(&weights, partial.join("weights.safetensors"))?;
    let optimizer: HashMap<String, Tensor> = dqn
        .optimizer
        .state(&names(&dqn.online))
        .into_iter()
        .collect();
    candle_core::safetensors::save(&optimizer, partial.join("optimizer.safetensors"))?;
    let replay = match &dqn.replay {
        Replay::Uniform(buffer) => buffer.to_bytes(),
        Replay::Prioritized(buffer) => buffer.to_bytes(),
    };
    write_file(&partial.join("replay.bin"), &replay)?;
    let state = State {
        format: CHECKPOINT_FORMAT,
        step: dqn.steps_done,
        adam_steps: dqn.optimizer.steps(),
        act_rng: to_hex(&dqn.act_rng.to_bytes()),
        replay_rng: to_hex(&dqn.replay_rng.to_bytes()),
    };
    let json = serde_json::to_vec_pretty(&state).map_err(|e| bad(&partial, e))?;
    write_file(&partial.join("state.json"), &json)?;

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

fn load_net(
    net: &QNetwork,
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

/// Loads only the online network's weights from a checkpoint (for evaluation).
pub fn load_online(checkpoint: &Path, net: &QNetwork, device: &Device) -> Result<(), TrainError> {
    let path = checkpoint.join("weights.safetensors");
    let tensors = candle_core::safetensors::load(&path, device).map_err(|e| bad(&path, e))?;
    load_net(net, "online", &tensors, &path)
}

/// Restores everything a checkpoint holds into `dqn`, which must have been built
/// with the same configuration.
pub fn load(checkpoint: &Path, dqn: &mut Dqn, device: &Device) -> Result<(), TrainError> {
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

    let path = checkpoint.join("weights.safetensors");
    let weights = candle_core::safetensors::load(&path, device).map_err(|e| bad(&path, e))?;
    load_net(&dqn.online, "online", &weights, &path)?;
    load_net(&dqn.target, "target", &weights, &path)?;
    let path = checkpoint.join("optimizer.safetensors");
    let moments = candle_core::safetensors::load(&path, device).map_err(|e| bad(&path, e))?;
    dqn.optimizer
        .load_state(&names(&dqn.online), &moments, state.adam_steps)
        .map_err(|e| bad(&path, e))?;
    let path = checkpoint.join("replay.bin");
    let bytes = fs::read(&path).map_err(|e| bad(&path, e))?;
    dqn.replay = match &dqn.replay {
        Replay::Uniform(_) => {
            Replay::Uniform(ReplayBuffer::from_bytes(&bytes).map_err(|e| bad(&path, e))?)
        }
        Replay::Prioritized(_) => {
            Replay::Prioritized(PrioritizedReplay::from_bytes(&bytes).map_err(|e| bad(&path, e))?)
        }
    };
    dqn.act_rng = act_rng;
    dqn.replay_rng = replay_rng;
    dqn.steps_done = state.step;
    Ok(())
}
