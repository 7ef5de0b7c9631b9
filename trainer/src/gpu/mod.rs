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
