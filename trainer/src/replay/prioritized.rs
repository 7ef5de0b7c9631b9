//! Prioritized experience replay, proportional variant (Schaul et al. 2016):
//! the uniform ring buffer's storage plus a [`SumTree`] of priorities over its
//! slots.
//!
//! - Priority from a TD error: `p_i = (|δ_i| + ε)^α`.
//! - New transitions enter at the largest priority currently stored (1 while the
//!   buffer is empty), so each is sampled at least about once before its TD error
//!   is known. "Currently stored" rather than "ever seen": one early outlier does
//!   not pin every later transition's priority.
//! - Stratified sampling: the total priority is split into `batch_size` equal
//!   segments and one value drawn uniformly in each, then looked up in the tree.
//! - Importance weights `w_i = (N·P(i))^(−β) / max_j w_j`, the max over the whole
//!   buffer (that is, at the smallest stored priority), which simplifies to
//!   `w_i = (p_min / p_i)^β`; β is an argument of [`PrioritizedReplay::sample`]
//!   so the caller anneals it (linearly to 1 over the run, as in the paper).
//! - A NaN or infinite TD error is refused with an error and no priority changes:
//!   it never reaches the tree.

use reflex_sim::SimRng;

use super::batch::Batch;
use super::error::ReplayError;
use super::state::{Kind, Reader, Writer};
use super::sum_tree::SumTree;
use super::transition::{check_unit, Transition};
use super::uniform::ReplayBuffer;
use super::TransitionSink;

/// A replay buffer sampled in proportion to priorities.
#[derive(Debug, Clone, PartialEq)]
pub struct PrioritizedReplay {
    storage: ReplayBuffer,
    tree: SumTree,
    alpha: f64,
    epsilon: f64,
}

impl PrioritizedReplay {
    /// Prioritized sampling over `storage`, with priority exponent `alpha`
    /// (≥ 0; 0 is uniform) and `epsilon` (> 0) added to `|δ|` so no transition's
    /// priority is zero. Transitions already in `storage` get priority 1.
    pub fn new(storage: ReplayBuffer, alpha: f64, epsilon: f64) -> Result<Self, ReplayError> {
        check_hyperparameters(alpha, epsilon)?;
        let tree = SumTree::from_priorities(storage.capacity(), &vec![1.0; storage.len()])?;
        Ok(Self {
            storage,
            tree,
            alpha,
            epsilon,
        })
    }

    /// The underlying ring buffer (read-only: pushes go through this type so the
    /// priorities follow).
    pub fn storage(&self) -> &ReplayBuffer {
        &self.storage
    }

    /// The priorities, one leaf per storage slot.
    pub fn tree(&self) -> &SumTree {
        &self.tree
    }

    /// Number of stored transitions.
    pub fn len(&self) -> usize {
        self.storage.len()
    }

    /// Whether nothing is stored yet.
    pub fn is_empty(&self) -> bool {
        self.storage.is_empty()
    }

    /// Most transitions the buffer holds.
    pub fn capacity(&self) -> usize {
        self.storage.capacity()
    }

    /// Priority exponent α.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// The ε in `(|δ| + ε)^α`.
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    /// The priority of the transition in slot `index`, `None` for an empty slot.
    pub fn priority(&self, index: usize) -> Option<f64> {
        (index < self.len()).then(|| self.tree.get(index)).flatten()
    }

    /// The priority a new transition gets: the largest stored, or 1 when empty.
    pub fn max_priority(&self) -> f64 {
        if self.is_empty() {
            1.0
        } else {
            self.tree.max()
        }
    }

    /// `(|td_error| + ε)^α`; refused for a non-finite TD error (or a priority
    /// that overflows or underflows to zero).
    pub fn priority_from_td_error(&self, td_error: f64) -> Result<f64, ReplayError> {
        if !td_error.is_finite() {
            return Err(ReplayError::NonFinite { what: "TD error" });
        }
        let priority = (td_error.abs() + self.epsilon).powf(self.alpha);
        if priority.is_finite() && priority > 0.0 {
            Ok(priority)
        } else {
            Err(ReplayError::OutOfRange {
                what: "priority (|δ| + ε)^α",
                value: priority,
                range: "(0, ∞)",
            })
        }
    }

    /// Stores a transition at [`max_priority`](Self::max_priority) and returns
    /// its slot.
    pub fn push(&mut self, transition: &Transition<'_>) -> Result<usize, ReplayError> {
        let priority = self.max_priority();
        self.push_with_priority(transition, priority)
    }

    /// Stores a transition whose TD error is already known (an Ape-X actor's
    /// initial priority) at `(|td_error| + ε)^α`, and returns its slot.
    pub fn push_with_td_error(
        &mut self,
        transition: &Transition<'_>,
        td_error: f64,
    ) -> Result<usize, ReplayError> {
        let priority = self.priority_from_td_error(td_error)?;
        self.push_with_priority(transition, priority)
    }

    /// `batch_size` transitions sampled by stratified proportional sampling, with
    /// importance weights for exponent `beta` in `[0, 1]`.
    pub fn sample(
        &self,
        batch_size: usize,
        beta: f64,
        rng: &mut SimRng,
    ) -> Result<Batch, ReplayError> {
        let mut batch = Batch::default();
        self.sample_into(batch_size, beta, rng, &mut batch)?;
        Ok(batch)
    }

    /// [`sample`](Self::sample) into a reused batch.
    pub fn sample_into(
        &self,
        batch_size: usize,
        beta: f64,
        rng: &mut SimRng,
        batch: &mut Batch,
    ) -> Result<(), ReplayError> {
        if batch_size == 0 {
            return Err(ReplayError::Zero { what: "batch size" });
        }
        check_unit("beta", beta)?;
        // Every stored transition has a positive priority, so this is `None`
        // exactly when the buffer is empty.
        let min_priority = self.tree.min_nonzero().ok_or(ReplayError::Empty)?;
        let total = self.tree.total();
        let segment = total / batch_size as f64;
        batch.indices.clear();
        for k in 0..batch_size {
            let low = segment * k as f64;
            let high = if k + 1 == batch_size {
                total
            } else {
                segment * (k + 1) as f64
            };
            batch.indices.push(self.tree.find(rng.uniform(low, high))?);
        }
        self.storage.fill_rows(batch);
        // w_i / max_j w_j = (N P(i))^-β / (N P_min)^-β = (p_min / p_i)^β.
        let tree = &self.tree;
        batch.weights.clear();
        batch.weights.extend(batch.indices.iter().map(|&index| {
            let priority = tree.get(index).unwrap_or(min_priority);
            (min_priority / priority).powf(beta) as f32
        }));
        Ok(())
    }

    /// Sets the priorities of slots `indices` from their new TD errors:
    /// `(|δ| + ε)^α`. All-or-nothing: a length mismatch, an empty slot, or a NaN
    /// or infinite TD error is refused before any priority changes. With a
    /// repeated index, the last TD error wins. A slot overwritten by a push since
    /// it was sampled gets the priority anyway (as in the paper's implementation;
    /// the transition then simply starts at that priority).
    pub fn update_priorities(
        &mut self,
        indices: &[usize],
        td_errors: &[f32],
    ) -> Result<(), ReplayError> {
        if td_errors.len() != indices.len() {
            return Err(ReplayError::LengthMismatch {
                what: "td_errors",
                expected: indices.len(),
                got: td_errors.len(),
            });
        }
        self.storage.check_indices(indices)?;
        for &td_error in td_errors {
            self.priority_from_td_error(f64::from(td_error))?;
        }
        for (&index, &td_error) in indices.iter().zip(td_errors) {
            let priority = self.priority_from_td_error(f64::from(td_error))?;
            self.tree.update(index, priority)?;
        }
        Ok(())
    }

    /// The storage's state followed by α, ε and the stored priorities, in the
    /// format of [`REPLAY_FORMAT_VERSION`](super::REPLAY_FORMAT_VERSION).
    pub fn to_bytes(&self) -> Vec<u8> {
        let size = self.storage.state_size() + 8 * (self.len() + 2);
        let mut writer = Writer::new(Kind::Prioritized, size);
        self.storage.write_state(&mut writer);
        writer.f64(self.alpha);
        writer.f64(self.epsilon);
        writer.f64s(self.tree.priorities().take(self.len()));
        writer.finish()
    }

    /// A buffer restored from [`to_bytes`](Self::to_bytes): same contents,
    /// position and priorities, so it samples exactly as the saved one would.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ReplayError> {
        let mut reader = Reader::new(bytes, Kind::Prioritized)?;
        let storage = ReplayBuffer::read_state(&mut reader)?;
        let alpha = reader.f64()?;
        let epsilon = reader.f64()?;
        check_hyperparameters(alpha, epsilon)?;
        let priorities = reader.f64s(storage.len())?;
        reader.finish()?;
        if priorities.iter().any(|&p| p <= 0.0) {
            return Err(ReplayError::BadState("a stored priority is not positive"));
        }
        let tree = SumTree::from_priorities(storage.capacity(), &priorities)?;
        Ok(Self {
            storage,
            tree,
            alpha,
            epsilon,
        })
    }

    fn push_with_priority(
        &mut self,
        transition: &Transition<'_>,
        priority: f64,
    ) -> Result<usize, ReplayError> {
        let slot = self.storage.push(transition)?;
        self.tree.update(slot, priority)?;
        Ok(slot)
    }
}

impl TransitionSink for PrioritizedReplay {
    fn store(&mut self, transition: &Transition<'_>) -> Result<(), ReplayError> {
        self.push(transition).map(|_| ())
    }
}

/// Refuses α outside `[0, ∞)` and ε outside `(0, ∞)` (NaN included).
fn check_hyperparameters(alpha: f64, epsilon: f64) -> Result<(), ReplayError> {
    if !(alpha.is_finite() && alpha >= 0.0) {
        return Err(ReplayError::OutOfRange {
            what: "alpha",
            value: alpha,
            range: "[0, ∞)",
        });
    }
    if !(epsilon.is_finite() && epsilon > 0.0) {
        return Err(ReplayError::OutOfRange {
            what: "epsilon",
            value: epsilon,
            range: "(0, ∞)",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::{ActionRef, ActionShape};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    /// A prioritized buffer holding transitions 0..count (obs `[i]`, reward `i`).
    fn filled(capacity: usize, count: usize, alpha: f64, epsilon: f64) -> PrioritizedReplay {
        let storage = ReplayBuffer::new(capacity, 1, ActionShape::Discrete { n: 2 }).unwrap();
        let mut replay = PrioritizedReplay::new(storage, alpha, epsilon).unwrap();
        for i in 0..count {
            push_numbered(&mut replay, i);
        }
        replay
    }

    fn push_numbered(replay: &mut PrioritizedReplay, i: usize) -> usize {
        let x = i as f32;
        replay
            .push(&Transition {
                obs: &[x],
                action: ActionRef::Discrete(i as u32 % 2),
                reward: x,
                next_obs: &[x + 1.0],
                discount: 0.99,
            })
            .unwrap()
    }

    #[test]
    fn hand_worked_importance_weights() {
        // α = 1 and ε = 0.5 turn TD errors 0.5 and 2.5 into priorities 1 and 3.
        let mut replay = filled(4, 2, 1.0, 0.5);
        replay.update_priorities(&[0, 1], &[0.5, -2.5]).unwrap();
        assert_eq!(replay.priority(0), Some(1.0));
        assert_eq!(replay.priority(1), Some(3.0));
        // N = 2, P = [0.25, 0.75]; β = 0.5: (N P)^-β = [0.5^-0.5, 1.5^-0.5]
        // = [√2, 0.8164966]; divided by the max √2: [1, 0.5773503].
        let raw = [0.5f64.powf(-0.5), 1.5f64.powf(-0.5)];
        assert!(close(raw[0], std::f64::consts::SQRT_2));
        assert!(close(raw[1], 0.816_496_6));
        let expected = [1.0, raw[1] / raw[0]];
        assert!(close(expected[1], 0.577_350_3));
        let mut rng = SimRng::seed(0);
        let mut seen = [false; 2];
        for _ in 0..20 {
            let batch = replay.sample(2, 0.5, &mut rng).unwrap();
            for (&index, &weight) in batch.indices.iter().zip(&batch.weights) {
                assert!(close(f64::from(weight), expected[index]), "{batch:?}");
                seen[index] = true;
            }
        }
        assert_eq!(seen, [true, true]);
        // Normalized over the buffer, not the batch: a batch holding only the
        // likelier transition still weighs it 0.577, not 1.
        let only_one = (0..100)
            .map(|_| replay.sample(1, 0.5, &mut rng).unwrap())
            .find(|batch| batch.indices == [1])
            .unwrap();
        assert!(close(f64::from(only_one.weights[0]), 0.5773503));
        // β = 0: no correction; β = 1: full correction, w = p_min / p_i.
        let batch = replay.sample(64, 0.0, &mut rng).unwrap();
        assert!(batch.weights.iter().all(|&w| w == 1.0));
        let batch = replay.sample(64, 1.0, &mut rng).unwrap();
        for (&index, &weight) in batch.indices.iter().zip(&batch.weights) {
            assert!(close(f64::from(weight), [1.0, 1.0 / 3.0][index]));
        }
    }

    #[test]
    fn new_items_enter_at_the_current_max_priority() {
        let mut replay = filled(4, 0, 0.6, 0.01);
        assert_eq!(replay.max_priority(), 1.0);
        push_numbered(&mut replay, 0);
        assert_eq!(replay.priority(0), Some(1.0));
        // (|3| + 0.01)^0.6 = 3.01^0.6 = 1.9370458
        replay.update_priorities(&[0], &[3.0]).unwrap();
        let high = replay.priority(0).unwrap();
        assert!(close(high, 1.937_045_8), "{high}");
        push_numbered(&mut replay, 1);
        assert_eq!(replay.priority(1), Some(high));
        // (|-0| + 0.01)^0.6 = 0.0631; the max is now slot 1's.
        replay.update_priorities(&[0], &[-0.0]).unwrap();
        assert!(close(replay.priority(0).unwrap(), 0.063_095_7));
        push_numbered(&mut replay, 2);
        assert_eq!(replay.priority(2), Some(high));
        // Once every stored priority is small, new items enter at that small max.
        replay
            .update_priorities(&[0, 1, 2], &[0.0, 0.0, 0.0])
            .unwrap();
        push_numbered(&mut replay, 3);
        assert!(close(replay.priority(3).unwrap(), 0.063_095_7));
        // Pushing past capacity overwrites slot 0, at the max of the others.
        replay.update_priorities(&[1], &[1.0]).unwrap();
        assert_eq!(push_numbered(&mut replay, 4), 0);
        assert!(close(replay.priority(0).unwrap(), 1.01f64.powf(0.6)));
    }

    #[test]
    fn update_priorities_uses_abs_td_plus_epsilon_to_the_alpha() {
        let mut replay = filled(4, 3, 0.6, 0.01);
        replay
            .update_priorities(&[0, 1, 2], &[-2.0, 0.5, 0.0])
            .unwrap();
        let expected = [2.01f64.powf(0.6), 0.51f64.powf(0.6), 0.01f64.powf(0.6)];
        for (slot, expected) in expected.into_iter().enumerate() {
            assert!(close(replay.priority(slot).unwrap(), expected));
        }
        assert!(close(replay.tree().total(), expected.iter().sum()));
        assert_eq!(replay.priority(3), None);
        // α = 0 makes every priority 1: uniform replay.
        let mut uniform = filled(4, 3, 0.0, 0.01);
        uniform.update_priorities(&[0, 1], &[100.0, 0.0]).unwrap();
        assert_eq!(uniform.tree().total(), 3.0);
    }

    #[test]
    fn nan_td_errors_are_refused_without_touching_the_tree() {
        let mut replay = filled(4, 3, 0.6, 0.01);
        replay.update_priorities(&[0], &[1.0]).unwrap();
        let before = replay.clone();
        assert_eq!(
            replay.update_priorities(&[1, 2], &[0.5, f32::NAN]),
            Err(ReplayError::NonFinite { what: "TD error" })
        );
        assert!(replay.update_priorities(&[1], &[f32::INFINITY]).is_err());
        assert!(matches!(
            replay.update_priorities(&[1, 2], &[0.5]),
            Err(ReplayError::LengthMismatch { .. })
        ));
        assert_eq!(
            replay.update_priorities(&[3], &[0.5]),
            Err(ReplayError::IndexOutOfRange { index: 3, len: 3 })
        );
        assert!(replay
            .push_with_td_error(
                &Transition {
                    obs: &[0.0],
                    action: ActionRef::Discrete(0),
                    reward: 0.0,
                    next_obs: &[0.0],
                    discount: 1.0,
                },
                f64::NAN
            )
            .is_err());
        assert_eq!(replay, before);
        assert!(replay.tree().total().is_finite());
    }

    #[test]
    fn refuses_bad_hyperparameters_and_empty_sampling() {
        let storage = || ReplayBuffer::new(4, 1, ActionShape::Discrete { n: 2 }).unwrap();
        assert!(PrioritizedReplay::new(storage(), -0.1, 0.01).is_err());
        assert!(PrioritizedReplay::new(storage(), f64::NAN, 0.01).is_err());
        assert!(PrioritizedReplay::new(storage(), 0.6, 0.0).is_err());
        let mut rng = SimRng::seed(0);
        let mut replay = PrioritizedReplay::new(storage(), 0.6, 0.01).unwrap();
        assert_eq!(replay.sample(4, 0.4, &mut rng), Err(ReplayError::Empty));
        push_numbered(&mut replay, 0);
        assert!(replay.sample(4, 1.5, &mut rng).is_err());
        assert!(replay.sample(4, f64::NAN, &mut rng).is_err());
        assert!(replay.sample(0, 0.4, &mut rng).is_err());
    }

    #[test]
    fn wrapping_a_filled_buffer_gives_its_transitions_priority_one() {
        let mut storage = ReplayBuffer::new(4, 1, ActionShape::Discrete { n: 2 }).unwrap();
        for i in 0..3 {
            let x = i as f32;
            storage
                .push(&Transition {
                    obs: &[x],
                    action: ActionRef::Discrete(0),
                    reward: x,
                    next_obs: &[x],
                    discount: 1.0,
                })
                .unwrap();
        }
        let replay = PrioritizedReplay::new(storage, 0.6, 0.01).unwrap();
        assert_eq!(replay.tree().total(), 3.0);
        assert_eq!(replay.priority(3), None);
    }

    #[test]
    fn stratified_sampling_draws_one_value_per_segment() {
        // Priorities [1, 2, 3, 4] (α = 1, ε = 1, δ = 0..3): total 10, four
        // segments of 2.5. Segment k can only reach the leaves it overlaps.
        let mut replay = filled(4, 4, 1.0, 1.0);
        replay
            .update_priorities(&[0, 1, 2, 3], &[0.0, 1.0, 2.0, 3.0])
            .unwrap();
        let reachable: [&[usize]; 4] = [&[0, 1], &[1, 2], &[2, 3], &[3]];
        let mut rng = SimRng::seed(11);
        let mut counts = [0usize; 4];
        let rounds = 25_000;
        let mut batch = Batch::default();
        for _ in 0..rounds {
            replay.sample_into(4, 0.4, &mut rng, &mut batch).unwrap();
            for (k, &index) in batch.indices.iter().enumerate() {
                assert!(reachable[k].contains(&index), "segment {k}: {index}");
                counts[index] += 1;
                // The row is the transition in that slot.
                assert_eq!(batch.obs[k], index as f32);
            }
        }
        for (index, count) in counts.iter().enumerate() {
            let frequency = *count as f64 / (4 * rounds) as f64;
            let expected = (index + 1) as f64 / 10.0;
            assert!((frequency - expected).abs() < 0.01, "{counts:?}");
        }
    }

    #[test]
    fn state_round_trip_samples_identically() {
        let mut replay = filled(5, 7, 0.6, 0.01);
        replay
            .update_priorities(&[0, 3, 4], &[2.0, -0.25, 7.5])
            .unwrap();
        let bytes = replay.to_bytes();
        let restored = PrioritizedReplay::from_bytes(&bytes).unwrap();
        assert_eq!(restored, replay);
        let (mut rng_a, mut rng_b) = (SimRng::seed(9), SimRng::seed(9));
        for _ in 0..5 {
            assert_eq!(
                replay.sample(8, 0.7, &mut rng_a).unwrap(),
                restored.sample(8, 0.7, &mut rng_b).unwrap()
            );
        }
        // A uniform buffer's state is not a prioritized one's, and vice versa.
        assert!(PrioritizedReplay::from_bytes(&replay.storage().to_bytes()).is_err());
        assert!(ReplayBuffer::from_bytes(&bytes).is_err());
        // A zero or negative stored priority is refused.
        let mut bad = bytes.clone();
        let last = bad.len() - 8;
        bad[last..].copy_from_slice(&(-1.0f64).to_le_bytes());
        assert!(PrioritizedReplay::from_bytes(&bad).is_err());
    }
}
