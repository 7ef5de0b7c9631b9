//! The transition spool: where transitions wait until the transition sink takes them.
//!
//! Every transition produced goes through the spool, which sends it in batches, oldest
//! first. While the sink is down the spool keeps them:
//!
//! - a bounded in-memory ring of the newest transitions;
//! - optionally, append-only segment files on disk for the overflow (older than
//!   everything in memory) and, at shutdown, for everything still unsent, so they
//!   survive a restart. Each record carries a CRC-32 of its bytes; a truncated or
//!   corrupt record is detected, counted and skipped, never a panic;
//! - when full, the oldest transitions are dropped and counted.
//!
//! Nothing is lost silently: `recovered + pushed == sent + len + dropped` at all times
//! ([`SpoolCounters`]), where `recovered` are the records read back from disk at start
//! (corrupt records found there are counted separately in `corrupt`).
//!
//! Delivery is at-least-once across a crash: a disk record is removed only after it
//! was sent, so a crash between sending and removing sends it again.
//!
//! Record layout: `u32 LE` payload length, `u32 LE` CRC-32 of the payload, payload (the
//! CDR-encoded [`Transition`], the wire format). Segments are `<index>.seg`, 20-digit
//! zero-padded, read in index order.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use reflex_msgs::{Transition, TransitionBatch};

use crate::config::SpoolConfig;
use crate::transport::{TransitionSink, TransportError};

/// Bytes of a record header: length and CRC-32.
const HEADER: usize = 8;

/// Why the disk spool failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A spool file or directory could not be read or written.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// A transition could not be encoded.
    #[error("cannot encode a transition for the spool: {0}")]
    Encode(#[from] reflex_msgs::WireError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The spool's totals (since this process started, except `recovered`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolCounters {
    /// Transitions pushed in by this process.
    pub pushed: u64,
    /// Valid records found on disk at start.
    pub recovered: u64,
    /// Transitions delivered to the sink.
    pub sent: u64,
    /// Transitions dropped because memory and disk were full (oldest first), or
    /// because one alone was larger than the wire allows.
    pub dropped: u64,
    /// Corrupt or truncated records found on disk (not part of `recovered`).
    pub corrupt: u64,
    /// Batches delivered.
    pub batches: u64,
    /// Transitions waiting right now (memory + disk).
    pub len: u64,
}

impl SpoolCounters {
    /// Whether the accounting invariant holds: `recovered + pushed == sent + len +
    /// dropped`.
    pub fn balanced(&self) -> bool {
        self.recovered + self.pushed == self.sent + self.len + self.dropped
    }
}

/// The spool.
#[derive(Debug)]
pub struct Spool {
    memory: VecDeque<Transition>,
    capacity: usize,
    disk: Option<Disk>,
    counters: SpoolCounters,
    /// The batch size the wire last took after refusing a larger one
    /// (`usize::MAX`: no refusal seen), and the batches sent since.
    wire_fits: usize,
    sent_at_fit: u32,
}

/// Batches sent at a reduced size before a larger one is tried again.
const RETRY_LARGER_AFTER: u32 = 16;

impl Spool {
    /// A spool as configured; with a directory it is created if needed and the
    /// segments already there (from a previous run) are checked and queued first.
    pub fn open(config: &SpoolConfig) -> Result<Self, SpoolError> {
        let mut counters = SpoolCounters::default();
        let disk = if config.dir.as_os_str().is_empty() {
            None
        } else {
            let disk = Disk::open(
                &config.dir,
                config.segment_bytes,
                config.max_disk_bytes,
                &mut counters,
            )?;
            Some(disk)
        };
        let mut spool = Self {
            memory: VecDeque::new(),
            capacity: config.memory_capacity.max(1),
            disk,
            counters,
            wire_fits: usize::MAX,
            sent_at_fit: 0,
        };
        spool.counters.len = spool.len();
        Ok(spool)
    }

    /// A memory-only spool of `capacity` transitions.
    pub fn in_memory(capacity: usize) -> Self {
        Self {
            memory: VecDeque::new(),
            capacity: capacity.max(1),
            disk: None,
            counters: SpoolCounters::default(),
            wire_fits: usize::MAX,
            sent_at_fit: 0,
        }
    }

    /// Transitions waiting (memory + disk).
    pub fn len(&self) -> u64 {
        self.memory.len() as u64 + self.disk.as_ref().map_or(0, |d| d.records)
    }

    /// Whether this spool has a disk part (`spool.dir` set).
    pub fn on_disk(&self) -> bool {
        self.disk.is_some()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The totals.
    pub fn counters(&self) -> SpoolCounters {
        self.counters
    }

    /// Queues a transition (newest last). When memory is full the oldest in memory
    /// goes to disk, or is dropped when there is no disk (or the disk fails).
    pub fn push(&mut self, transition: Transition) {
        self.counters.pushed += 1;
        self.memory.push_back(transition);
        while self.memory.len() > self.capacity {
            let oldest = self.memory.pop_front().expect("memory is over capacity");
            match self.disk.as_mut() {
                Some(disk) => {
                    if let Err(e) = disk.append(&oldest, &mut self.counters) {
                        tracing::warn!("spool: dropping a transition, disk append failed: {e}");
                        self.counters.dropped += 1;
                    }
                }
                None => self.counters.dropped += 1,
            }
        }
        self.counters.len = self.len();
    }

    /// Removes the `n` oldest transitions: from the disk's head segment when
    /// they came from there, else from memory.
    fn remove_front(&mut self, from_disk: bool, n: usize) {
        if from_disk {
            if let Some(disk) = self.disk.as_mut() {
                if let Err(e) = disk.consume(n) {
                    tracing::warn!("spool: cannot remove a sent segment: {e}");
                }
            }
        } else {
            self.memory.drain(..n.min(self.memory.len()));
        }
    }

    /// Sends up to `max_batches` batches of at most `batch_size` transitions, oldest
    /// first (disk, then memory). A transition leaves the spool only once its batch was
    /// delivered; the first failure stops and is returned. `batch_seq` is advanced per
    /// batch delivered. Returns the number of transitions sent.
    ///
    /// A batch too large for the wire ([`TransportError::TooLarge`]) is tried again
    /// at half the size (that retry uses no round of `max_batches`), and later
    /// calls start from the size that went through, trying twice that again
    /// after a while; a single transition too large is dropped (counted, logged):
    /// it could never leave, and would hold back everything after it.
    pub fn send(
        &mut self,
        sink: &mut dyn TransitionSink,
        robot_id: &str,
        batch_size: usize,
        max_batches: usize,
        batch_seq: &mut u64,
    ) -> Result<u64, TransportError> {
        let mut batch_size = batch_size.max(1).min(self.wire_fits);
        let mut sent = 0;
        let mut delivered = 0;
        while delivered < max_batches {
            if self.is_empty() {
                break;
            }
            let mut batch = TransitionBatch {
                robot_id: robot_id.to_owned(),
                batch_seq: *batch_seq,
                ..TransitionBatch::default()
            };
            // Oldest first: the disk's head segment, then memory.
            let from_disk = match self.disk.as_mut() {
                Some(disk) if disk.records > 0 => match disk.head(batch_size, &mut self.counters) {
                    Ok(head) => {
                        batch.transitions.extend(head.cloned());
                        // Nothing readable left on disk: memory is next.
                        !batch.transitions.is_empty()
                    }
                    Err(e) => {
                        tracing::warn!("spool: cannot read disk segment: {e}");
                        false
                    }
                },
                _ => false,
            };
            if !from_disk {
                let n = batch_size.min(self.memory.len());
                batch
                    .transitions
                    .extend(self.memory.iter().take(n).cloned());
            }
            if batch.transitions.is_empty() {
                break;
            }
            let n = batch.transitions.len();
            match sink.send(&batch) {
                Ok(()) => {}
                Err(TransportError::TooLarge(why)) if n > 1 => {
                    tracing::debug!("spool: a batch of {n} is too large ({why}); halving it");
                    batch_size = n / 2;
                    (self.wire_fits, self.sent_at_fit) = (batch_size, 0);
                    continue;
                }
                Err(TransportError::TooLarge(why)) => {
                    tracing::warn!(
                        "spool: dropping a transition too large for the wire ({why}): \
                         it could never be sent"
                    );
                    self.remove_front(from_disk, 1);
                    self.counters.dropped += 1;
                    self.counters.len = self.len();
                    // One outsized transition says nothing of the others.
                    (self.wire_fits, self.sent_at_fit) = (usize::MAX, 0);
                    continue;
                }
                Err(e) => {
                    self.counters.len = self.len();
                    return Err(e);
                }
            }
            self.remove_front(from_disk, n);
            delivered += 1;
            if self.wire_fits != usize::MAX {
                self.sent_at_fit += 1;
                if self.sent_at_fit >= RETRY_LARGER_AFTER {
                    // The transitions may have shrunk: try a larger batch again.
                    (self.wire_fits, self.sent_at_fit) = (self.wire_fits.saturating_mul(2), 0);
                }
            }
            *batch_seq += 1;
            sent += n as u64;
            self.counters.sent += n as u64;
            self.counters.batches += 1;
            self.counters.len = self.len();
        }
        Ok(sent)
    }

    /// Writes everything still waiting in memory to disk (and the unsent rest of a
    /// partly sent segment back to its file), so it survives a restart. Returns
    /// the number of transitions lost instead: all of memory without a disk, and
    /// with one, those the disk refused (logged). They are counted as dropped, so
    /// what stays counted as waiting is what is really on disk.
    pub fn persist(&mut self) -> u64 {
        let Some(disk) = self.disk.as_mut() else {
            let lost = self.memory.len() as u64;
            self.memory.clear();
            self.counters.dropped += lost;
            self.counters.len = self.len();
            return lost;
        };
        if let Err(e) = disk.rewrite_head() {
            // The file still holds every record, the sent ones too: they will be
            // sent again after a restart (at-least-once), not lost.
            tracing::warn!("spool: cannot rewrite the partly sent segment: {e}");
        }
        let dropped_before = self.counters.dropped;
        while let Some(t) = self.memory.pop_front() {
            if let Err(e) = disk.append(&t, &mut self.counters) {
                let lost = 1 + self.memory.len() as u64;
                tracing::error!("spool: cannot write to disk at shutdown ({e}); {lost} lost");
                self.counters.dropped += lost;
                self.memory.clear();
                break;
            }
        }
        self.counters.dropped += disk.sync();
        self.counters.len = self.len();
        self.counters.dropped - dropped_before
    }
}

/// One segment file on disk.
#[derive(Debug)]
struct Segment {
    index: u64,
    path: PathBuf,
    /// Records in the file not yet sent.
    records: u64,
    bytes: u64,
    /// Corrupt records in the file already counted (a repair that failed).
    known_corrupt: u64,
}

/// The on-disk part of the spool.
#[derive(Debug)]
struct Disk {
    dir: PathBuf,
    segment_bytes: u64,
    max_bytes: u64,
    segments: VecDeque<Segment>,
    /// Open writer on the last segment, while it is below `segment_bytes`.
    writer: Option<BufWriter<File>>,
    /// Records of the last segment that may still sit in the writer's buffer
    /// (lost with it if the file refuses them).
    buffered: u64,
    /// The unsent records of `segments[0]`, once it was read for sending.
    head: Option<VecDeque<Transition>>,
    /// Records on disk not yet sent.
    records: u64,
    bytes: u64,
    next_index: u64,
}

impl Disk {
    fn open(
        dir: &Path,
        segment_bytes: u64,
        max_bytes: u64,
        counters: &mut SpoolCounters,
    ) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let path = entry.map_err(io_err(dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".seg.tmp") {
                // A repair interrupted by a crash: the segment itself is intact.
                let _ = fs::remove_file(&path);
                continue;
            }
            let index = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(index) = index {
                found.push((index, path));
            }
        }
        found.sort();
        let mut disk = Self {
            dir: dir.to_owned(),
            segment_bytes,
            max_bytes,
            segments: VecDeque::new(),
            writer: None,
            buffered: 0,
            head: None,
            records: 0,
            bytes: 0,
            next_index: found.last().map_or(0, |(i, _)| i + 1),
        };
        for (index, path) in found {
            // A segment that cannot be read must not keep the robot from being
            // controlled: it is left where it is, and said so.
            let (records, corrupt) = match read_segment(&path) {
                Ok(read) => read,
                Err(e) => {
                    tracing::error!("{e}; left in place, its records are not sent");
                    continue;
                }
            };
            counters.corrupt += corrupt;
            if records.is_empty() {
                if let Err(e) = remove_segment(&path) {
                    tracing::error!("{e}; an empty segment left in place");
                }
                continue;
            }
            let mut known_corrupt = 0;
            if corrupt > 0 {
                // Keep only the valid records, so the damage is counted once.
                tracing::warn!("spool: {corrupt} corrupt record(s) in {}", path.display());
                if let Err(e) = write_segment(&path, &records) {
                    // E.g. the disk is full (what may have torn the record): the
                    // valid records are still read from the file as it is.
                    tracing::warn!("spool: cannot repair it ({e}); reading around the damage");
                    let _ = fs::remove_file(path.with_extension("seg.tmp"));
                    known_corrupt = corrupt;
                }
            }
            let bytes = match fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) => {
                    tracing::error!("spool {}: {e}; left in place, not sent", path.display());
                    continue;
                }
            };
            counters.recovered += records.len() as u64;
            disk.records += records.len() as u64;
            disk.bytes += bytes;
            disk.segments.push_back(Segment {
                index,
                path,
                records: records.len() as u64,
                bytes,
                known_corrupt,
            });
        }
        Ok(disk)
    }

    fn segment_path(&self, index: u64) -> PathBuf {
        self.dir.join(format!("{index:020}.seg"))
    }

    /// Appends one record, starting a new segment when the current one is full and
    /// dropping the oldest segment when the disk budget is exceeded.
    fn append(&mut self, t: &Transition, counters: &mut SpoolCounters) -> Result<(), SpoolError> {
        let payload = reflex_msgs::encode(t)?;
        let len = (HEADER + payload.len()) as u64;
        while self.bytes + len > self.max_bytes && !self.segments.is_empty() {
            self.drop_oldest(counters)?;
        }
        let full = self
            .segments
            .back()
            .is_none_or(|s| s.bytes >= self.segment_bytes);
        if self.writer.is_none() || full {
            self.seal(counters)?;
            let index = self.next_index;
            self.next_index += 1;
            let path = self.segment_path(index);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            self.writer = Some(BufWriter::new(file));
            self.buffered = 0;
            self.segments.push_back(Segment {
                index,
                path,
                records: 0,
                bytes: 0,
                known_corrupt: 0,
            });
        }
        let segment = self.segments.back_mut().expect("a segment is open");
        let writer = self.writer.as_mut().expect("a writer is open");
        let mut record = Vec::with_capacity(HEADER + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        if let Err(e) = writer.write_all(&record) {
            // Part of the record may be in the file: nothing more goes after it
            // (a reader stops at a torn record). The next record starts a new
            // segment. The records still in the buffer are lost with it.
            if let Some(writer) = self.writer.take() {
                let _ = writer.into_parts();
            }
            let lost = std::mem::take(&mut self.buffered);
            if lost > 0 {
                tracing::error!("spool: {lost} buffered record(s) lost with the failed write");
            }
            segment.records -= lost;
            self.records -= lost;
            counters.dropped += lost;
            return Err(io_err(&segment.path)(e));
        }
        // BufWriter either flushed its buffer before this record (then holds
        // it alone), wrote it straight through (holds nothing), or added it.
        self.buffered = match writer.buffer().len() {
            0 => 0,
            n if n == record.len() => 1,
            _ => self.buffered + 1,
        };
        segment.records += 1;
        segment.bytes += len;
        self.records += 1;
        self.bytes += len;
        Ok(())
    }

    /// Flushes and closes the writer (the last segment is complete).
    fn seal(&mut self, counters: &mut SpoolCounters) -> Result<(), SpoolError> {
        if let Some(mut writer) = self.writer.take() {
            let segment = self.segments.back_mut().expect("writer has a segment");
            if let Err(e) = writer.flush() {
                // The records still buffered are lost with the writer.
                let _ = writer.into_parts();
                let lost = std::mem::take(&mut self.buffered);
                segment.records -= lost;
                self.records -= lost;
                counters.dropped += lost;
                return Err(io_err(&segment.path)(e));
            }
            self.buffered = 0;
        }
        Ok(())
    }

    /// Flushes the open segment to the device. Returns the records lost when
    /// that fails: the segment's records past what its file holds (they are
    /// no longer counted as on disk).
    fn sync(&mut self) -> u64 {
        let Some(mut writer) = self.writer.take() else {
            return 0;
        };
        let segment = self.segments.back_mut().expect("writer has a segment");
        if let Err(e) = writer.flush() {
            // What reached the file is what a restart will find.
            let _ = writer.into_parts();
            let lost = std::mem::take(&mut self.buffered);
            tracing::error!(
                "spool {}: {e}; {lost} record(s) of the last segment lost",
                segment.path.display()
            );
            segment.records -= lost;
            self.records -= lost;
            return lost;
        }
        self.buffered = 0;
        if let Err(e) = writer.get_ref().sync_all() {
            // Written, but perhaps not yet on the device.
            tracing::warn!("spool {}: {e}", segment.path.display());
        }
        self.writer = Some(writer);
        0
    }

    fn drop_oldest(&mut self, counters: &mut SpoolCounters) -> Result<(), SpoolError> {
        if self.segments.len() == 1 {
            self.seal(counters)?;
        }
        let segment = self.segments.pop_front().expect("a segment to drop");
        // A loaded head is this segment's unsent records: `records` counts them.
        self.head = None;
        let lost = segment.records;
        tracing::warn!(
            "spool: disk full, dropping {lost} transitions ({})",
            segment.path.display()
        );
        counters.dropped += lost;
        self.records -= lost;
        self.bytes -= segment.bytes;
        remove_segment(&segment.path)
    }

    /// Up to `n` of the oldest unsent records (reading the head segment if needed).
    fn head(
        &mut self,
        n: usize,
        counters: &mut SpoolCounters,
    ) -> Result<impl Iterator<Item = &Transition>, SpoolError> {
        while self.head.is_none() {
            if self.segments.len() == 1 && self.writer.is_some() {
                // Reading the segment being written: close it, new records go to a new one.
                self.seal(counters)?;
            }
            // No segment left: nothing is cached, so that the next records
            // written are read from their segment.
            let Some(segment) = self.segments.front() else {
                break;
            };
            let (records, corrupt) = match read_segment(&segment.path) {
                Ok(read) => read,
                // Deleted behind the spool's back: its records are lost, the
                // ones after it are not (they would wait forever behind it).
                Err(SpoolError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    (Vec::new(), 0)
                }
                Err(e) => return Err(e),
            };
            // Corruption after writing (this run) loses those records: count them.
            let lost = segment.records.saturating_sub(records.len() as u64);
            let corrupt = corrupt.saturating_sub(segment.known_corrupt);
            if corrupt > 0 || lost > 0 {
                counters.corrupt += corrupt;
                counters.dropped += lost;
                self.records -= lost;
                self.segments[0].records -= lost;
            }
            if records.is_empty() {
                // Nothing readable is left in it: remove it and read the next one
                // (an empty head would stop the spool until the budget evicted it).
                let segment = self.segments.pop_front().expect("the head segment");
                self.bytes -= segment.bytes;
                remove_segment(&segment.path)?;
                continue;
            }
            self.head = Some(records.into());
        }
        Ok(self.head.iter().flatten().take(n))
    }

    /// Marks the first `n` head records as sent; removes the segment when done.
    fn consume(&mut self, n: usize) -> Result<(), SpoolError> {
        let head = self.head.as_mut().expect("consume after head");
        head.drain(..n);
        self.records -= n as u64;
        self.segments[0].records -= n as u64;
        if head.is_empty() {
            self.head = None;
            let segment = self.segments.pop_front().expect("head segment");
            self.bytes -= segment.bytes;
            remove_segment(&segment.path)?;
        }
        Ok(())
    }

    /// Writes the unsent rest of a partly sent head segment back to its file.
    fn rewrite_head(&mut self) -> Result<(), SpoolError> {
        if let Some(head) = self.head.take() {
            let segment = &mut self.segments[0];
            let records: Vec<_> = head.into();
            write_segment(&segment.path, &records)?;
            let bytes = fs::metadata(&segment.path)
                .map_err(io_err(&segment.path))?
                .len();
            self.bytes = self.bytes - segment.bytes + bytes;
            segment.bytes = bytes;
            segment.known_corrupt = 0;
            debug_assert_eq!(segment.records, records.len() as u64);
            let _ = segment.index;
        }
        Ok(())
    }
}

/// Removes a segment file; one already gone is fine.
fn remove_segment(path: &Path) -> Result<(), SpoolError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

/// Reads a segment: its valid records and the number of corrupt ones (a truncated
/// tail counts as one).
fn read_segment(path: &Path) -> Result<(Vec<Transition>, u64), SpoolError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_err(path))?;
    Ok(parse_records(&bytes))
}

/// Parses records from `bytes`: valid records and the count of corrupt ones.
fn parse_records(bytes: &[u8]) -> (Vec<Transition>, u64) {
    let mut records = Vec::new();
    let mut corrupt = 0;
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.len() < HEADER {
            corrupt += 1; // truncated header
            break;
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if len > reflex_msgs::MAX_MESSAGE_BYTES || rest.len() - HEADER < len {
            corrupt += 1; // truncated payload, or a garbage length: the rest is unreadable
            break;
        }
        let payload = &rest[HEADER..HEADER + len];
        rest = &rest[HEADER + len..];
        if crc32fast::hash(payload) != crc {
            corrupt += 1;
            continue;
        }
        match reflex_msgs::decode::<Transition>(payload) {
            Ok(t) => records.push(t),
            Err(_) => corrupt += 1,
        }
    }
    (records, corrupt)
}

/// Replaces `path` with a segment holding `records` (written aside, then renamed).
fn write_segment(path: &Path, records: &[Transition]) -> Result<(), SpoolError> {
    let tmp = path.with_extension("seg.tmp");
    {
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut w = BufWriter::new(file);
        for t in records {
            let payload = reflex_msgs::encode(t)?;
            w.write_all(&(payload.len() as u32).to_le_bytes())
                .map_err(io_err(&tmp))?;
            w.write_all(&crc32fast::hash(&payload).to_le_bytes())
                .map_err(io_err(&tmp))?;
            w.write_all(&payload).map_err(io_err(&tmp))?;
        }
        let file = w.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
        file.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::inproc;

    fn t(i: u64) -> Transition {
        Transition {
            robot_id: "r".into(),
            episode_id: i,
            step: i as u32,
            obs: vec![i as f32; 4],
            next_obs: vec![i as f32 + 1.0; 4],
            ..Transition::default()
        }
    }

    #[test]
    fn memory_ring_drops_oldest_and_balances() {
        let mut spool = Spool::in_memory(3);
        for i in 0..5 {
            spool.push(t(i));
        }
        let c = spool.counters();
        assert_eq!((c.pushed, c.dropped, c.len), (5, 2, 3));
        assert!(c.balanced());
        let (mut sink, rx, _link) = inproc::transitions();
        let mut seq = 0;
        assert_eq!(
            spool.send(&mut sink, "r", 2, usize::MAX, &mut seq).unwrap(),
            3
        );
        let got: Vec<u64> = rx
            .try_iter()
            .flat_map(|b| b.transitions)
            .map(|t| t.episode_id)
            .collect();
        assert_eq!(got, vec![2, 3, 4], "oldest dropped, order kept");
        assert_eq!(seq, 2);
        assert!(spool.counters().balanced());
    }

    #[test]
    fn parse_detects_truncation_and_corruption() {
        let mut bytes = Vec::new();
        for i in 0..3 {
            let payload = reflex_msgs::encode(&t(i)).unwrap();
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            bytes.extend_from_slice(&payload);
        }
        assert_eq!(parse_records(&bytes).0.len(), 3);
        // Flip a payload byte of the second record: it is skipped, the third survives.
        let mut flipped = bytes.clone();
        let second = bytes.len() / 3 + HEADER + 10;
        flipped[second] ^= 0xff;
        let (records, corrupt) = parse_records(&flipped);
        assert_eq!((records.len(), corrupt), (2, 1));
        assert_eq!(records[1].episode_id, 2);
        // Every truncation point: never a panic, at most one corrupt tail.
        for cut in 0..bytes.len() {
            let (records, corrupt) = parse_records(&bytes[..cut]);
            assert!(corrupt <= 1);
            assert!(records.len() <= 3);
        }
        // A garbage length.
        let mut garbage = bytes.clone();
        garbage[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_records(&garbage), (vec![], 1));
    }
}
