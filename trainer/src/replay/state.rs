//! The replay checkpoint format (described on [`REPLAY_FORMAT_VERSION`]): the
//! byte writer and the bounds-checked reader both buffers save and restore with.

use super::error::ReplayError;

/// Version of the replay checkpoint format this build writes and reads
/// ([`ReplayBuffer::to_bytes`](super::ReplayBuffer::to_bytes),
/// [`PrioritizedReplay::to_bytes`](super::PrioritizedReplay::to_bytes)).
///
/// Version 1, every integer and float little-endian, nothing after the last
/// array:
///
/// ```text
/// magic     8 bytes  "RFXREPLY"
/// version   u16      1
/// kind      u8       0 = uniform buffer, 1 = prioritized buffer, 2 = sequence
///                    buffer (its layout is in `SequenceReplay::to_bytes`)
/// buffer    capacity u64, obs_dim u64, action kind u8 (0 discrete, 1 continuous),
///           action size u64 (n or dim), len u64, next slot u64,
///           then slots 0..len of: obs f32[len·obs_dim], next_obs f32[len·obs_dim],
///           actions (u32[len] or f32[len·dim]), rewards f32[len], discounts f32[len]
/// (prioritized only) alpha f64, epsilon f64, priorities f64[len]
/// ```
///
/// Restoring checks everything a push would (lengths, finite values, action
/// range, discounts in `[0, 1]`, positive priorities) and refuses anything else.
pub const REPLAY_FORMAT_VERSION: u16 = 1;

const MAGIC: [u8; 8] = *b"RFXREPLY";

/// Which buffer a state holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Uniform = 0,
    Prioritized = 1,
    Sequence = 2,
}

/// Appends the format's values to a byte vector.
pub(super) struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    /// A writer with the header for `kind` already written.
    pub(super) fn new(kind: Kind, size_hint: usize) -> Self {
        let mut bytes = Vec::with_capacity(size_hint + 16);
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&REPLAY_FORMAT_VERSION.to_le_bytes());
        bytes.push(kind as u8);
        Self { bytes }
    }

    pub(super) fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }

    pub(super) fn u64(&mut self, value: usize) {
        self.bytes.extend_from_slice(&(value as u64).to_le_bytes());
    }

    pub(super) fn f64(&mut self, value: f64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub(super) fn f32s(&mut self, values: &[f32]) {
        for value in values {
            self.bytes.extend_from_slice(&value.to_le_bytes());
        }
    }

    pub(super) fn u32s(&mut self, values: &[u32]) {
        for value in values {
            self.bytes.extend_from_slice(&value.to_le_bytes());
        }
    }

    pub(super) fn f64s(&mut self, values: impl IntoIterator<Item = f64>) {
        for value in values {
            self.bytes.extend_from_slice(&value.to_le_bytes());
        }
    }

    pub(super) fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads the format's values back, refusing truncated input.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader past a header that must name `kind` and this build's version.
    pub(super) fn new(bytes: &'a [u8], kind: Kind) -> Result<Self, ReplayError> {
        let mut reader = Self { bytes };
        if reader.take(MAGIC.len())? != MAGIC {
            return Err(ReplayError::BadState("not replay state (wrong magic)"));
        }
        let version = u16::from_le_bytes(reader.array()?);
        if version != REPLAY_FORMAT_VERSION {
            return Err(ReplayError::UnsupportedVersion {
                found: version,
                supported: REPLAY_FORMAT_VERSION,
            });
        }
        if reader.u8()? != kind as u8 {
            return Err(ReplayError::BadState(match kind {
                Kind::Uniform => "expected a uniform buffer's state",
                Kind::Prioritized => "expected a prioritized buffer's state",
                Kind::Sequence => "expected a sequence buffer's state",
            }));
        }
        Ok(reader)
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], ReplayError> {
        if count > self.bytes.len() {
            return Err(ReplayError::BadState("truncated"));
        }
        let (head, tail) = self.bytes.split_at(count);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ReplayError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn take_items(&mut self, count: usize, size: usize) -> Result<&'a [u8], ReplayError> {
        let bytes = count
            .checked_mul(size)
            .ok_or(ReplayError::BadState("array length overflows"))?;
        self.take(bytes)
    }

    pub(super) fn u8(&mut self) -> Result<u8, ReplayError> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u64(&mut self) -> Result<usize, ReplayError> {
        usize::try_from(u64::from_le_bytes(self.array()?))
            .map_err(|_| ReplayError::BadState("size does not fit this machine"))
    }

    pub(super) fn f64(&mut self) -> Result<f64, ReplayError> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    pub(super) fn f32s(&mut self, count: usize) -> Result<Vec<f32>, ReplayError> {
        let bytes = self.take_items(count, 4)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    pub(super) fn u32s(&mut self, count: usize) -> Result<Vec<u32>, ReplayError> {
        let bytes = self.take_items(count, 4)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    pub(super) fn f64s(&mut self, count: usize) -> Result<Vec<f64>, ReplayError> {
        let bytes = self.take_items(count, 8)?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect())
    }

    /// Refuses trailing bytes.
    pub(super) fn finish(self) -> Result<(), ReplayError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(ReplayError::BadState("trailing bytes after the last array"))
        }
    }
}
