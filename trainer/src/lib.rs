//! reflex-trainer: the learner.
//!
//! Replay buffers ([`replay`]: uniform, prioritized, n-step, sequence), networks
//! on candle ([`nn`]: Q-networks, actors, critics, NAF, LSTM), Adam
//! ([`optim`]), schedules, the algorithms behind one [`algo::Agent`] trait (DQN
//! with its variants, DRQN; DDPG, TD3 and NAF for continuous actions, and their
//! recurrent variants), the shared training loop, evaluation, checkpoints
//! ([`checkpoint`]), ONNX export ([`export`]) and the learner service that
//! receives robots' transitions ([`learner`], DQN so far).
//!
//! It may depend on `reflex-msgs`, `reflex-sim` and the daemon's policy runtime;
//! nothing depends on it, and robots never ship it.

pub mod algo;
pub mod checkpoint;
pub mod eval;
pub mod export;
pub mod gpu;
pub mod learner;
pub mod learner_ros2;
pub mod nn;
pub mod optim;
pub mod plot;
pub mod replay;
pub mod run;
pub mod schedule;

/// Sets how many threads candle's CPU kernels use (they read
/// `RAYON_NUM_THREADS` on every call). The networks here are small: on this
/// project's 2-core machines one thread ran the CartPole learning tests 5× faster
/// than candle's default of one per core. With more than one, only the matrix
/// multiplications run in parallel: candle's elementwise kernels stay on one
/// thread (`CANDLE_NUM_THREADS=1`, unless already set), since on tensors this
/// size their barrier pool cost more than it saved (a Pendulum DDPG run with
/// [400, 300] networks took 34 s at 2 threads with it, 24 s without, 27 s on
/// one thread). Call it before training starts.
pub fn set_compute_threads(threads: usize) {
    std::env::set_var("RAYON_NUM_THREADS", threads.max(1).to_string());
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Keeps freed memory in the process instead of handing it back to the OS.
///
/// An update allocates a fresh tensor per op, and glibc serves allocations of
/// 128 KiB and more (a 256×256 weight gradient is 256 KiB) with `mmap`, then
/// `munmap`s them on free, so every such tensor paid for page faults and the
/// kernel's page zeroing again: 5–7% of a CartPole DQN run in a profile. With
/// a high mmap threshold and no trimming, those pages are reused. Memory use
/// stays near its peak instead of shrinking, which for a trainer is what it
/// would reach again at the next update anyway. A no-op off glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation thresholds; it is called
    // before the trainer allocates anything large.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

/// Everything that can stop training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A tensor operation failed (shapes, device, I/O of safetensors).
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
    /// The replay refused data or arguments.
    #[error("replay: {0}")]
    Replay(#[from] replay::ReplayError),
    /// The simulator refused an action or a name.
    #[error("sim: {0}")]
    Sim(#[from] reflex_sim::SimError),
    /// A checkpoint that cannot be written or read.
    #[error("checkpoint {0}")]
    Checkpoint(String),
    /// The learning curve could not be drawn.
    #[error("plot: {0}")]
    Plot(String),
    /// A configuration that cannot work.
    #[error("config: {0}")]
    Config(String),
    /// A policy could not be exported to ONNX.
    #[error("export: {0}")]
    Export(String),
    /// An update's loss was NaN or infinite: the weights are lost, so training
    /// stopped rather than save or publish them.
    #[error(
        "training diverged at {when}: the loss is {loss} (gradient norm before clipping \
         {grad_norm}). Nothing after the last checkpoint was saved. Lower the learning \
         rate, set max_grad_norm, or scale the rewards down (a resumed run reads them \
         from its config.toml; a population's, from every member's)"
    )]
    Diverged {
        /// Where it happened (`step 1200`, `member 2, step 1200`, `update 300`).
        when: String,
        /// The update's loss.
        loss: f32,
        /// Its gradient norm before clipping.
        grad_norm: f64,
    },
    /// A network's weights hold NaN or infinite values when they were to be
    /// saved, exported, published or resumed from.
    #[error(
        "training diverged: {tensor} holds NaN or infinite values ({when}). Lower the \
         learning rate, set max_grad_norm, or scale the rewards down"
    )]
    NonFiniteWeights {
        /// The first tensor found bad (`online.trunk.0.weight`).
        tensor: String,
        /// What was being done, and what became of it (`checkpoint at step
        /// 1200, not written`).
        when: String,
    },
}

/// Why `--device` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Not `cpu`, `cuda` or `cuda:N`.
    #[error("--device {0:?}: expected cpu, cuda or cuda:N (N = the GPU's index)")]
    Unknown(String),
    /// A CUDA device was asked for, but this binary has no CUDA backend.
    #[error(
        "--device {0}: this reflex-train was built without the `cuda` feature; build one with \
         scripts/build-cuda.sh (see README, \"Training on a GPU\"), or use --device cpu"
    )]
    NotBuilt(String),
    /// The CUDA backend could not open the device (no GPU, no driver, bad index).
    #[error("--device {spec}: no usable CUDA device: {reason}")]
    Unavailable {
        /// What was asked for.
        spec: String,
        /// What CUDA said.
        reason: String,
    },
}

/// The compute device `spec` names: `cpu` (the default everywhere), `cuda` (GPU 0)
/// or `cuda:N`.
pub fn device(spec: &str) -> Result<candle_core::Device, DeviceError> {
    let spec = spec.trim();
    let index = match spec {
        "cpu" => return Ok(candle_core::Device::Cpu),
        "cuda" => 0,
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => return Err(DeviceError::Unknown(spec.to_string())),
        },
    };
    if !candle_core::utils::cuda_is_available() {
        return Err(DeviceError::NotBuilt(spec.to_string()));
    }
    let device = candle_core::Device::new_cuda(index).map_err(|e| DeviceError::Unavailable {
        spec: spec.to_string(),
        reason: e.to_string(),
    })?;
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(cuda) = &device {
        if std::env::var_os("REFLEX_CUDA_EVENTS").is_none() {
            // With event tracking on (cudarc's default), every device buffer
            // is created with two CUDA events (and destroys them when freed),
            // for ordering its uses across streams. Every candle op allocates
            // its output, so that is four driver calls per op that order
            // nothing here: candle runs the device on one stream, and the
            // trainer issues all device work from one thread, so launch order
            // already orders every use.
            // SAFETY: no second stream is created, and device work comes from
            // the thread that trains (cudarc's per-thread stream), so no buffer
            // is used on another stream. (REFLEX_CUDA_EVENTS=1 keeps the
            // tracking, to compare.)
            unsafe { cuda.disable_event_tracking() };
        }
    }
    Ok(device)
}

#[cfg(test)]
mod device_tests {
    use super::*;

    #[test]
    fn device_specs_parse_and_cuda_fails_clearly_without_it() {
        assert!(device("cpu").unwrap().is_cpu());
        assert!(matches!(device("gpu"), Err(DeviceError::Unknown(_))));
        assert!(matches!(device("cuda:x"), Err(DeviceError::Unknown(_))));
        if !candle_core::utils::cuda_is_available() {
            let e = device("cuda:1").unwrap_err().to_string();
            assert!(
                e.contains("without the `cuda` feature") && e.contains("build-cuda.sh"),
                "{e}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wrapped error shows its cause once on the binaries' error line, where
    /// anyhow's alternate form repeats it (the message holds it and `source` returns it).
    #[test]
    fn an_error_line_names_each_cause_once() {
        let e = anyhow::Error::from(TrainError::from(replay::ReplayError::BadState("truncated")))
            .context("resuming runs/a");
        assert_eq!(
            format!("{e:#}"),
            "resuming runs/a: replay: bad replay state: truncated: bad replay state: truncated"
        );
        assert_eq!(
            reflex_msgs::error_report(e.as_ref()),
            "resuming runs/a: replay: bad replay state: truncated"
        );
    }
}
