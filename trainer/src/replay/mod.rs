//! Replay: where experience waits to be learned from.
//!
//! - [`ReplayBuffer`] (`uniform.rs`): a fixed-capacity ring of transitions,
//!   structure-of-arrays, sampled uniformly with replacement.
//! - [`SumTree`] (`sum_tree.rs`): priorities with `O(log n)` proportional lookup.
//! - [`PrioritizedReplay`] (`prioritized.rs`): proportional prioritized replay
//!   over the ring buffer's storage.
//! - [`NStepAccumulator`] (`nstep.rs`): per-stream n-step returns in front of
//!   either buffer, correct across terminated and truncated episode ends.
//! - [`SequenceReplay`] (`sequence.rs`): whole episodes in a ring, sampled as
//!   windows with burn-in, stored recurrent state and masks (DRQN).
//! - [`Batch`] (`batch.rs`): what sampling returns, contiguous row-major arrays.
//! - `to_bytes`/`from_bytes` on both buffers (`state.rs`): their checkpoint state.
//!
//! Every buffer stores `discount` (`γ^m`, 0 when terminated) rather than a done
//! flag, so a learner's target is `reward + discount · V(next_obs)` whatever
//! `n` was. Randomness comes from a caller-supplied [`reflex_sim::SimRng`], so a
//! run's sampling is reproducible from its seed and checkpointed RNG state.
//! Nothing here depends on candle.

#![warn(missing_docs)]

mod batch;
mod error;
mod nstep;
mod prioritized;
mod sequence;
mod state;
mod sum_tree;
mod transition;
mod uniform;

pub use batch::{Batch, BatchActions};
pub use error::ReplayError;
pub use nstep::NStepAccumulator;
pub use prioritized::PrioritizedReplay;
pub use sequence::{SequenceBatch, SequencePer, SequenceReplay, WindowSpec};
pub use state::REPLAY_FORMAT_VERSION;
pub use sum_tree::SumTree;
pub use transition::{ActionRef, ActionShape, EnvStep, Transition};
pub use uniform::ReplayBuffer;

/// A vector of `rows × width` copies of `value`, or [`ReplayError::TooLarge`]
/// when that many cannot be allocated: sizes come from configs and checkpoint
/// headers, and an impossible one must be an error, not an abort.
fn try_vec<T: Clone>(
    what: &'static str,
    rows: usize,
    width: usize,
    value: T,
) -> Result<Vec<T>, ReplayError> {
    let too_large = ReplayError::TooLarge { what, rows, width };
    let len = rows.checked_mul(width).ok_or(too_large.clone())?;
    let mut values = Vec::new();
    values.try_reserve_exact(len).map_err(|_| too_large)?;
    values.resize(len, value);
    Ok(values)
}

/// Anything that stores transitions: both buffers, so the n-step accumulator
/// can sit in front of either.
pub trait TransitionSink {
    /// Stores one transition, or refuses it (and stores nothing).
    fn store(&mut self, transition: &Transition<'_>) -> Result<(), ReplayError>;
}

/// Uniform or prioritized storage behind one interface.
#[derive(Debug)]
pub enum Replay {
    /// Uniform sampling.
    Uniform(ReplayBuffer),
    /// Proportional prioritized sampling.
    Prioritized(PrioritizedReplay),
    /// Episodes sampled as windows (recurrent learners); transitions are
    /// pushed with [`SequenceReplay::push_step`], not through this enum.
    Sequence(SequenceReplay),
}

impl TransitionSink for Replay {
    fn store(&mut self, transition: &Transition<'_>) -> Result<(), ReplayError> {
        match self {
            Replay::Uniform(buffer) => buffer.push(transition).map(drop),
            Replay::Prioritized(buffer) => buffer.push(transition).map(drop),
            Replay::Sequence(_) => Err(ReplayError::BadState(
                "a sequence buffer takes whole steps (push_step), not transitions",
            )),
        }
    }
}

impl Replay {
    /// Transitions stored.
    pub fn len(&self) -> usize {
        match self {
            Replay::Uniform(b) => b.len(),
            Replay::Prioritized(b) => b.len(),
            Replay::Sequence(b) => b.len(),
        }
    }

    /// Whether nothing is stored yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Prioritized replay's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerParams {
    /// Priority exponent α.
    pub alpha: f64,
    /// Added to |TD error|.
    pub eps: f64,
}

impl Replay {
    /// An empty buffer of `capacity` transitions; prioritized when `per` is given.
    pub fn new(
        capacity: usize,
        obs_dim: usize,
        action: ActionShape,
        per: Option<PerParams>,
    ) -> Result<Self, ReplayError> {
        let storage = ReplayBuffer::new(capacity, obs_dim, action)?;
        Ok(match per {
            Some(p) => Replay::Prioritized(PrioritizedReplay::new(storage, p.alpha, p.eps)?),
            None => Replay::Uniform(storage),
        })
    }

    /// Samples `batch_size` transitions into `batch` (uniformly, or by priority
    /// with importance exponent `beta`).
    pub fn sample_into(
        &self,
        batch_size: usize,
        beta: f64,
        rng: &mut reflex_sim::SimRng,
        batch: &mut Batch,
    ) -> Result<(), ReplayError> {
        match self {
            Replay::Uniform(buffer) => buffer.sample_into(batch_size, rng, batch),
            Replay::Prioritized(buffer) => buffer.sample_into(batch_size, beta, rng, batch),
            Replay::Sequence(_) => Err(ReplayError::BadState(
                "a sequence buffer samples windows (SequenceReplay::sample_into)",
            )),
        }
    }

    /// New priorities from TD errors (prioritized only; a no-op when uniform).
    pub fn update_priorities(
        &mut self,
        indices: &[usize],
        td_errors: &[f32],
    ) -> Result<(), ReplayError> {
        match self {
            Replay::Uniform(_) | Replay::Sequence(_) => Ok(()),
            Replay::Prioritized(buffer) => buffer.update_priorities(indices, td_errors),
        }
    }

    /// The whole state for a checkpoint.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Replay::Uniform(buffer) => buffer.to_bytes(),
            Replay::Prioritized(buffer) => buffer.to_bytes(),
            Replay::Sequence(buffer) => buffer.to_bytes(),
        }
    }

    /// Replaces this buffer with one restored from `bytes` (of the same kind).
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), ReplayError> {
        *self = match self {
            Replay::Uniform(_) => Replay::Uniform(ReplayBuffer::from_bytes(bytes)?),
            Replay::Prioritized(_) => Replay::Prioritized(PrioritizedReplay::from_bytes(bytes)?),
            Replay::Sequence(_) => Replay::Sequence(SequenceReplay::from_bytes(bytes)?),
        };
        Ok(())
    }
}
