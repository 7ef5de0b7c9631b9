//! The uniform replay buffer: a fixed-capacity ring of transitions stored
//! structure-of-arrays, sampled uniformly with replacement. It is also the
//! storage the prioritized buffer wraps.

use reflex_sim::SimRng;

use super::batch::Batch;
use super::error::ReplayError;
use super::state::{Kind, Reader, Writer};
use super::transition::{ActionColumn, ActionShape, Transition};
use super::{try_vec, TransitionSink};

/// A ring buffer of transitions. Slot `i` of every column is the same
/// transition; once full, each push overwrites the oldest transition.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayBuffer {
    capacity: usize,
    obs_dim: usize,
    action: ActionShape,
    /// `[capacity, obs_dim]`.
    obs: Vec<f32>,
    actions: ActionColumn,
    rewards: Vec<f32>,
    /// `[capacity, obs_dim]`.
    next_obs: Vec<f32>,
    discounts: Vec<f32>,
    /// Number of stored transitions, at most `capacity`.
    len: usize,
    /// Slot the next push writes.
    next: usize,
}

impl ReplayBuffer {
    /// An empty buffer for `capacity` transitions with `obs_dim`-entry
    /// observations. All storage is allocated (and zeroed) here, once; a size
    /// that cannot be allocated is refused with [`ReplayError::TooLarge`].
    pub fn new(capacity: usize, obs_dim: usize, action: ActionShape) -> Result<Self, ReplayError> {
        if capacity == 0 {
            return Err(ReplayError::Zero { what: "capacity" });
        }
        if obs_dim == 0 {
            return Err(ReplayError::Zero { what: "obs_dim" });
        }
        action.validate()?;
        Ok(Self {
            capacity,
            obs_dim,
            action,
            obs: try_vec("observations", capacity, obs_dim, 0.0)?,
            actions: ActionColumn::zeros(action, capacity)?,
            rewards: try_vec("rewards", capacity, 1, 0.0)?,
            next_obs: try_vec("next observations", capacity, obs_dim, 0.0)?,
            discounts: try_vec("discounts", capacity, 1, 0.0)?,
            len: 0,
            next: 0,
        })
    }

    /// Most transitions the buffer holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries per observation.
    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    /// How actions are stored.
    pub fn action_shape(&self) -> ActionShape {
        self.action
    }

    /// Number of stored transitions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is stored yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the next push overwrites the oldest transition.
    pub fn is_full(&self) -> bool {
        self.len == self.capacity
    }

    /// The slot the next push writes (the oldest transition's once full).
    pub fn next_index(&self) -> usize {
        self.next
    }

    /// Stores a transition and returns its slot. Refused (and nothing stored) when
    /// a row has the wrong length, a value is not finite, the action does not fit
    /// the shape, or the discount is outside `[0, 1]`.
    pub fn push(&mut self, transition: &Transition<'_>) -> Result<usize, ReplayError> {
        transition.check(self.obs_dim, self.action)?;
        let slot = self.next;
        self.write_row(slot, transition);
        self.next = (slot + 1) % self.capacity;
        self.len = (self.len + 1).min(self.capacity);
        Ok(slot)
    }

    /// The transition in slot `index`, or `None` when the slot holds none.
    pub fn get(&self, index: usize) -> Option<Transition<'_>> {
        (index < self.len).then(|| Transition {
            obs: self.obs_row(index),
            action: self.actions.get(index),
            reward: self.rewards[index],
            next_obs: self.next_obs_row(index),
            discount: self.discounts[index],
        })
    }

    /// `batch_size` transitions drawn uniformly with replacement.
    pub fn sample(&self, batch_size: usize, rng: &mut SimRng) -> Result<Batch, ReplayError> {
        let mut batch = Batch::default();
        self.sample_into(batch_size, rng, &mut batch)?;
        Ok(batch)
    }

    /// [`sample`](Self::sample) into a reused batch (its vectors keep their
    /// allocations). Refused on an empty buffer or a zero batch size.
    pub fn sample_into(
        &self,
        batch_size: usize,
        rng: &mut SimRng,
        batch: &mut Batch,
    ) -> Result<(), ReplayError> {
        if batch_size == 0 {
            return Err(ReplayError::Zero { what: "batch size" });
        }
        if self.is_empty() {
            return Err(ReplayError::Empty);
        }
        batch.indices.clear();
        batch
            .indices
            .extend((0..batch_size).map(|_| rng.below(self.len as u64) as usize));
        self.fill_rows(batch);
        Ok(())
    }

    /// The transitions in slots `indices`, in that order, into `batch` (weights
    /// all 1). Refused when an index holds no transition.
    pub fn gather_into(&self, indices: &[usize], batch: &mut Batch) -> Result<(), ReplayError> {
        self.check_indices(indices)?;
        batch.indices.clear();
        batch.indices.extend_from_slice(indices);
        self.fill_rows(batch);
        Ok(())
    }

    /// The buffer's whole state (dims, position, stored rows) in the format of
    /// [`REPLAY_FORMAT_VERSION`](super::REPLAY_FORMAT_VERSION): a versioned
    /// header, then the filled rows as little-endian arrays.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut writer = Writer::new(Kind::Uniform, self.state_size());
        self.write_state(&mut writer);
        writer.finish()
    }

    /// A buffer restored from [`to_bytes`](Self::to_bytes): same contents, same
    /// next slot, so it samples and overwrites exactly as the saved one would.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ReplayError> {
        let mut reader = Reader::new(bytes, Kind::Uniform)?;
        let buffer = Self::read_state(&mut reader)?;
        reader.finish()?;
        Ok(buffer)
    }

    /// Bytes of the buffer section of the state (a capacity hint).
    pub(super) fn state_size(&self) -> usize {
        48 + 4 * self.len * (2 * self.obs_dim + self.action.width() + 2)
    }

    /// Refuses indices that hold no transition.
    pub(super) fn check_indices(&self, indices: &[usize]) -> Result<(), ReplayError> {
        match indices.iter().find(|&&index| index >= self.len) {
            Some(&index) => Err(ReplayError::IndexOutOfRange {
                index,
                len: self.len,
            }),
            None => Ok(()),
        }
    }

    /// Copies the rows named by `batch.indices` (all valid) into the batch's
    /// other fields, with weights 1.
    pub(super) fn fill_rows(&self, batch: &mut Batch) {
        let d = self.obs_dim;
        let rows = &batch.indices;
        batch.obs.clear();
        batch.next_obs.clear();
        batch.rewards.clear();
        batch.discounts.clear();
        for &row in rows {
            batch
                .obs
                .extend_from_slice(&self.obs[row * d..(row + 1) * d]);
            batch
                .next_obs
                .extend_from_slice(&self.next_obs[row * d..(row + 1) * d]);
        }
        batch
            .rewards
            .extend(rows.iter().map(|&row| self.rewards[row]));
        batch
            .discounts
            .extend(rows.iter().map(|&row| self.discounts[row]));
        self.actions.gather_into(rows, &mut batch.actions);
        batch.weights.clear();
        batch.weights.resize(rows.len(), 1.0);
    }

    /// Appends the buffer section of the state format.
    pub(super) fn write_state(&self, writer: &mut Writer) {
        let rows = self.len;
        let d = self.obs_dim;
        writer.u64(self.capacity);
        writer.u64(d);
        match self.action {
            ActionShape::Discrete { n } => {
                writer.u8(0);
                writer.u64(n as usize);
            }
            ActionShape::Continuous { dim } => {
                writer.u8(1);
                writer.u64(dim);
            }
        }
        writer.u64(self.len);
        writer.u64(self.next);
        writer.f32s(&self.obs[..rows * d]);
        writer.f32s(&self.next_obs[..rows * d]);
        match &self.actions {
            ActionColumn::Discrete(data) => writer.u32s(&data[..rows]),
            ActionColumn::Continuous { dim, data } => writer.f32s(&data[..rows * dim]),
        }
        writer.f32s(&self.rewards[..rows]);
        writer.f32s(&self.discounts[..rows]);
    }

    /// Reads the buffer section of the state format, checking every row as
    /// [`push`](Self::push) would.
    pub(super) fn read_state(reader: &mut Reader<'_>) -> Result<Self, ReplayError> {
        let capacity = reader.u64()?;
        let obs_dim = reader.u64()?;
        let action = match (reader.u8()?, reader.u64()?) {
            (0, n) => ActionShape::Discrete {
                n: u32::try_from(n).map_err(|_| ReplayError::BadState("action count"))?,
            },
            (1, dim) => ActionShape::Continuous { dim },
            _ => return Err(ReplayError::BadState("unknown action kind")),
        };
        let len = reader.u64()?;
        let next = reader.u64()?;
        if len > capacity || next >= capacity || (len < capacity && next != len) {
            return Err(ReplayError::BadState("inconsistent position"));
        }
        let row_values = |width: usize| {
            len.checked_mul(width)
                .ok_or(ReplayError::BadState("array length overflows"))
        };
        // Read the arrays before allocating `capacity` rows, so a corrupt header
        // with a huge capacity but few bytes fails on the arrays' lengths first.
        let obs = reader.f32s(row_values(obs_dim)?)?;
        let next_obs = reader.f32s(row_values(obs_dim)?)?;
        let actions = match action {
            ActionShape::Discrete { .. } => ActionColumn::Discrete(reader.u32s(len)?),
            ActionShape::Continuous { dim } => ActionColumn::Continuous {
                dim,
                data: reader.f32s(row_values(dim)?)?,
            },
        };
        let rewards = reader.f32s(len)?;
        let discounts = reader.f32s(len)?;
        let mut buffer = Self::new(capacity, obs_dim, action)?;
        for row in 0..len {
            let transition = Transition {
                obs: &obs[row * obs_dim..(row + 1) * obs_dim],
                action: actions.get(row),
                reward: rewards[row],
                next_obs: &next_obs[row * obs_dim..(row + 1) * obs_dim],
                discount: discounts[row],
            };
            transition.check(obs_dim, action)?;
            buffer.write_row(row, &transition);
        }
        buffer.len = len;
        buffer.next = next;
        Ok(buffer)
    }

    fn write_row(&mut self, slot: usize, transition: &Transition<'_>) {
        let d = self.obs_dim;
        self.obs[slot * d..(slot + 1) * d].copy_from_slice(transition.obs);
        self.next_obs[slot * d..(slot + 1) * d].copy_from_slice(transition.next_obs);
        self.actions.set(slot, transition.action);
        self.rewards[slot] = transition.reward;
        self.discounts[slot] = transition.discount;
    }

    fn obs_row(&self, index: usize) -> &[f32] {
        &self.obs[index * self.obs_dim..(index + 1) * self.obs_dim]
    }

    fn next_obs_row(&self, index: usize) -> &[f32] {
        &self.next_obs[index * self.obs_dim..(index + 1) * self.obs_dim]
    }
}

impl TransitionSink for ReplayBuffer {
    fn store(&mut self, transition: &Transition<'_>) -> Result<(), ReplayError> {
        self.push(transition).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::{ActionRef, BatchActions};

    const DISCRETE: ActionShape = ActionShape::Discrete { n: 3 };

    /// Transition number `i`: obs `[i, -i]`, next_obs `[i + 0.5, -i - 0.5]`,
    /// action `i % 3`, reward `10 i`, discount 0.99 (0 for every fifth).
    fn push_numbered(buffer: &mut ReplayBuffer, i: u32) -> usize {
        let x = i as f32;
        buffer
            .push(&Transition {
                obs: &[x, -x],
                action: ActionRef::Discrete(i % 3),
                reward: 10.0 * x,
                next_obs: &[x + 0.5, -x - 0.5],
                discount: if i % 5 == 4 { 0.0 } else { 0.99 },
            })
            .unwrap()
    }

    /// Every row of the batch is one numbered transition, all fields agreeing.
    fn assert_rows_consistent(batch: &Batch) {
        let BatchActions::Discrete(actions) = &batch.actions else {
            panic!("discrete buffer gave continuous actions");
        };
        assert_eq!(batch.obs_dim(), 2);
        assert_eq!(actions.len(), batch.len());
        for (k, &action) in actions.iter().enumerate() {
            let x = batch.obs[2 * k];
            let i = x as u32;
            assert_eq!(batch.obs[2 * k + 1], -x, "row {k}");
            assert_eq!(&batch.next_obs[2 * k..2 * k + 2], &[x + 0.5, -x - 0.5]);
            assert_eq!(batch.rewards[k], 10.0 * x);
            assert_eq!(action, i % 3);
            assert_eq!(batch.discounts[k], if i % 5 == 4 { 0.0 } else { 0.99 });
            assert_eq!(batch.weights[k], 1.0);
        }
    }

    #[test]
    fn new_refuses_zero_sizes() {
        assert_eq!(
            ReplayBuffer::new(0, 2, DISCRETE),
            Err(ReplayError::Zero { what: "capacity" })
        );
        assert_eq!(
            ReplayBuffer::new(4, 0, DISCRETE),
            Err(ReplayError::Zero { what: "obs_dim" })
        );
        assert!(ReplayBuffer::new(4, 2, ActionShape::Discrete { n: 0 }).is_err());
        assert!(ReplayBuffer::new(4, 2, ActionShape::Continuous { dim: 0 }).is_err());
        assert!(matches!(
            ReplayBuffer::new(usize::MAX / 2, 4, DISCRETE),
            Err(ReplayError::TooLarge { .. })
        ));
        // No overflow, but far past any machine's memory: an error, not an abort.
        assert!(matches!(
            ReplayBuffer::new(1 << 52, 1, DISCRETE),
            Err(ReplayError::TooLarge { .. })
        ));
    }

    #[test]
    fn push_refuses_bad_input_and_stores_nothing() {
        let mut buffer = ReplayBuffer::new(4, 2, DISCRETE).unwrap();
        let good = Transition {
            obs: &[0.0, 1.0],
            action: ActionRef::Discrete(2),
            reward: 1.0,
            next_obs: &[1.0, 2.0],
            discount: 0.99,
        };
        let cases = [
            Transition {
                obs: &[0.0],
                ..good
            },
            Transition {
                next_obs: &[0.0, 1.0, 2.0],
                ..good
            },
            Transition {
                obs: &[f32::NAN, 0.0],
                ..good
            },
            Transition {
                next_obs: &[f32::INFINITY, 0.0],
                ..good
            },
            Transition {
                reward: f32::NAN,
                ..good
            },
            Transition {
                discount: 1.5,
                ..good
            },
            Transition {
                discount: f32::NAN,
                ..good
            },
            Transition {
                action: ActionRef::Discrete(3),
                ..good
            },
            Transition {
                action: ActionRef::Continuous(&[0.0]),
                ..good
            },
        ];
        for bad in cases {
            assert!(buffer.push(&bad).is_err(), "{bad:?}");
        }
        assert!(buffer.is_empty());
        assert_eq!(buffer.next_index(), 0);
        assert_eq!(buffer.push(&good), Ok(0));
        assert_eq!(buffer.get(0), Some(good));
        assert_eq!(buffer.get(1), None);
    }

    #[test]
    fn sampling_refuses_empty_buffer_and_zero_batch() {
        let mut rng = SimRng::seed(0);
        let mut buffer = ReplayBuffer::new(4, 2, DISCRETE).unwrap();
        assert_eq!(buffer.sample(8, &mut rng), Err(ReplayError::Empty));
        push_numbered(&mut buffer, 0);
        assert_eq!(
            buffer.sample(0, &mut rng),
            Err(ReplayError::Zero { what: "batch size" })
        );
        // With replacement, a batch may be larger than the buffer.
        assert_eq!(buffer.sample(8, &mut rng).unwrap().indices, vec![0; 8]);
    }

    #[test]
    fn wraparound_overwrites_the_oldest_and_rows_stay_consistent() {
        let capacity = 5;
        let mut buffer = ReplayBuffer::new(capacity, 2, DISCRETE).unwrap();
        let slots: Vec<usize> = (0..capacity as u32 + 3)
            .map(|i| push_numbered(&mut buffer, i))
            .collect();
        assert_eq!(slots, [0, 1, 2, 3, 4, 0, 1, 2]);
        assert_eq!(buffer.len(), capacity);
        assert!(buffer.is_full());
        assert_eq!(buffer.next_index(), 3);
        // Transitions 0, 1, 2 are gone; slots 0..3 hold 5, 6, 7.
        let stored: Vec<f32> = (0..capacity)
            .map(|slot| buffer.get(slot).unwrap().obs[0])
            .collect();
        assert_eq!(stored, [5.0, 6.0, 7.0, 3.0, 4.0]);

        let mut rng = SimRng::seed(7);
        let mut batch = Batch::default();
        for _ in 0..50 {
            buffer.sample_into(32, &mut rng, &mut batch).unwrap();
            assert_eq!(batch.len(), 32);
            assert_rows_consistent(&batch);
            assert!(batch.obs.chunks(2).all(|row| row[0] >= 3.0));
        }
    }

    #[test]
    fn uniform_sampling_frequencies() {
        let mut buffer = ReplayBuffer::new(8, 2, DISCRETE).unwrap();
        for i in 0..4 {
            push_numbered(&mut buffer, i);
        }
        let mut rng = SimRng::seed(1);
        let batch = buffer.sample(40_000, &mut rng).unwrap();
        let mut counts = [0usize; 4];
        batch.indices.iter().for_each(|&i| counts[i] += 1);
        for count in counts {
            let frequency = count as f64 / 40_000.0;
            assert!((frequency - 0.25).abs() < 0.01, "{counts:?}");
        }
    }

    #[test]
    fn gather_returns_rows_in_order_and_refuses_empty_slots() {
        let mut buffer = ReplayBuffer::new(4, 2, DISCRETE).unwrap();
        for i in 0..3 {
            push_numbered(&mut buffer, i);
        }
        let mut batch = Batch::default();
        buffer.gather_into(&[2, 0, 2], &mut batch).unwrap();
        assert_eq!(batch.obs, [2.0, -2.0, 0.0, 0.0, 2.0, -2.0]);
        assert_eq!(batch.actions, BatchActions::Discrete(vec![2, 0, 2]));
        assert_eq!(batch.rewards, [20.0, 0.0, 20.0]);
        assert_eq!(batch.indices, [2, 0, 2]);
        assert_eq!(
            buffer.gather_into(&[3], &mut batch),
            Err(ReplayError::IndexOutOfRange { index: 3, len: 3 })
        );
    }

    #[test]
    fn continuous_actions_are_row_major() {
        let mut buffer = ReplayBuffer::new(3, 1, ActionShape::Continuous { dim: 2 }).unwrap();
        for i in 0..3 {
            let x = i as f32;
            buffer
                .push(&Transition {
                    obs: &[x],
                    action: ActionRef::Continuous(&[x, x + 0.25]),
                    reward: 0.0,
                    next_obs: &[x],
                    discount: 1.0,
                })
                .unwrap();
        }
        let mut batch = Batch::default();
        buffer.gather_into(&[1, 2], &mut batch).unwrap();
        assert_eq!(
            batch.actions,
            BatchActions::Continuous(vec![1.0, 1.25, 2.0, 2.25])
        );
        assert_eq!(
            buffer.push(&Transition {
                obs: &[0.0],
                action: ActionRef::Continuous(&[0.0, f32::NAN]),
                reward: 0.0,
                next_obs: &[0.0],
                discount: 1.0,
            }),
            Err(ReplayError::NonFinite { what: "action" })
        );
    }

    #[test]
    fn state_round_trip_samples_identically() {
        for pushes in [0, 3, 8] {
            let mut buffer = ReplayBuffer::new(5, 2, DISCRETE).unwrap();
            for i in 0..pushes {
                push_numbered(&mut buffer, i);
            }
            let bytes = buffer.to_bytes();
            // Header (8 + 2 + 1), dims and position (5 × 8 + 1), then 7 values
            // of 4 bytes per stored row.
            assert_eq!(bytes.len(), 11 + 41 + buffer.len() * 4 * 7);
            let mut restored = ReplayBuffer::from_bytes(&bytes).unwrap();
            assert_eq!(restored, buffer);
            if pushes == 0 {
                continue;
            }
            let (mut rng_a, mut rng_b) = (SimRng::seed(3), SimRng::seed(3));
            for _ in 0..5 {
                assert_eq!(
                    buffer.sample(16, &mut rng_a).unwrap(),
                    restored.sample(16, &mut rng_b).unwrap()
                );
            }
            // And they keep overwriting the same slots.
            assert_eq!(
                push_numbered(&mut buffer, 99),
                push_numbered(&mut restored, 99)
            );
            assert_eq!(restored, buffer);
        }
    }

    #[test]
    fn continuous_state_round_trip() {
        let mut buffer = ReplayBuffer::new(4, 1, ActionShape::Continuous { dim: 2 }).unwrap();
        buffer
            .push(&Transition {
                obs: &[1.0],
                action: ActionRef::Continuous(&[-0.5, 0.5]),
                reward: -2.0,
                next_obs: &[2.0],
                discount: 0.0,
            })
            .unwrap();
        let restored = ReplayBuffer::from_bytes(&buffer.to_bytes()).unwrap();
        assert_eq!(restored, buffer);
    }

    #[test]
    fn from_bytes_refuses_damaged_state() {
        let mut buffer = ReplayBuffer::new(5, 2, DISCRETE).unwrap();
        for i in 0..3 {
            push_numbered(&mut buffer, i);
        }
        let bytes = buffer.to_bytes();
        for cut in [0, 5, 18, 40, bytes.len() - 1] {
            assert!(
                ReplayBuffer::from_bytes(&bytes[..cut]).is_err(),
                "cut {cut}"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(ReplayBuffer::from_bytes(&trailing).is_err());
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert!(ReplayBuffer::from_bytes(&magic).is_err());
        let mut version = bytes.clone();
        version[8] = 99;
        assert_eq!(
            ReplayBuffer::from_bytes(&version),
            Err(ReplayError::UnsupportedVersion {
                found: 99,
                supported: crate::replay::REPLAY_FORMAT_VERSION
            })
        );
        // A NaN reward in the saved rows is refused like a pushed one.
        let mut nan = bytes.clone();
        let rewards_at = bytes.len() - 2 * 3 * 4;
        nan[rewards_at..rewards_at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert_eq!(
            ReplayBuffer::from_bytes(&nan),
            Err(ReplayError::NonFinite { what: "reward" })
        );
    }
}
