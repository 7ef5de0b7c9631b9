//! The GPU path's checks and benchmarks, run by `reflex-train gpu …` on the
//! machine that has the GPU (see `scripts/gpu-check.sh`):
//!
//! - [`parity`]: CPU-vs-device parity of every network kind's forward pass
//!   and gradients, of the optimizer, and of every learner's first update;
//! - [`bench`]: update throughput for the shapes the GPU benchmark names,
//!   the device's matmul peak, and an end-to-end vectorized CartPole run.

pub mod bench;
pub(crate) mod kernels;
pub mod parity;

use std::time::{Duration, Instant};

use candle_core::Device;

/// Where an update's time goes: wall time per named phase, with the device
/// synchronized at every boundary so that a GPU's queued work is charged to
/// the phase that issued it. The synchronizations themselves cost time, so a
/// profiled update is slower than an unprofiled one; the split is what counts.
#[derive(Debug)]
pub struct Phases {
    device: Device,
    names: Vec<&'static str>,
    totals: Vec<Duration>,
    last: Instant,
    /// Updates profiled.
    pub updates: u64,
}

impl Phases {
    /// An empty profile for work on `device`.
    pub fn new(device: &Device) -> Self {
        Self {
            device: device.clone(),
            names: Vec::new(),
            totals: Vec::new(),
            last: Instant::now(),
            updates: 0,
        }
    }

    /// Starts one update's clock (after the device has drained).
    pub fn start(&mut self) -> candle_core::Result<()> {
        self.device.synchronize()?;
        self.updates += 1;
        self.last = Instant::now();
        Ok(())
    }

    /// Charges the time since the last mark to `phase`.
    pub fn mark(&mut self, phase: &'static str) -> candle_core::Result<()> {
        self.device.synchronize()?;
        let now = Instant::now();
        let spent = now - self.last;
        match self.names.iter().position(|n| *n == phase) {
            Some(i) => self.totals[i] += spent,
            None => {
                self.names.push(phase);
                self.totals.push(spent);
            }
        }
        self.last = now;
        Ok(())
    }

    /// Mean microseconds per update of each phase, in first-seen order.
    pub fn per_update_us(&self) -> Vec<(&'static str, f64)> {
        let n = self.updates.max(1) as f64;
        self.names
            .iter()
            .zip(&self.totals)
            .map(|(name, t)| (*name, t.as_secs_f64() * 1e6 / n))
            .collect()
    }
}
pub mod graph;
