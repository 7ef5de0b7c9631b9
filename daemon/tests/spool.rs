//! Transition accounting under sink outages: nothing is lost silently
//! (`produced + recovered == sent + spooled + dropped`), order is kept, the disk
//! spool survives a restart, and corrupt segment tails are counted, never a panic.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use reflex_daemon::config::{BatchingConfig, SpoolConfig};
use reflex_daemon::spool::Spool;
use reflex_daemon::transport::{inproc, TransportError};
use reflex_daemon::uplink::Uplink;
use reflex_msgs::{Transition, TransitionBatch};

const HANG: Duration = Duration::from_secs(60);

fn t(i: u64) -> Transition {
    Transition {
        robot_id: "r".into(),
        episode_id: i, // the test's serial number
        obs: vec![i as f32; 4],
        next_obs: vec![i as f32 + 1.0; 4],
        reward: 1.0,
        ..Transition::default()
    }
}

fn ids(batches: &[TransitionBatch]) -> Vec<u64> {
    batches
        .iter()
        .flat_map(|b| &b.transitions)
        .map(|t| t.episode_id)
        .collect()
}

fn batching() -> BatchingConfig {
    BatchingConfig {
        transitions_per_batch: 16,
        max_latency_ms: 1,
    }
}

fn spool_config(dir: Option<&Path>, memory_capacity: usize) -> SpoolConfig {
    SpoolConfig {
        memory_capacity,
        dir: dir.map(Path::to_path_buf).unwrap_or_default(),
        segment_bytes: 4096,
        max_disk_bytes: 1 << 20,
        retry_ms: 1,
    }
}

/// The segment files in `dir`, oldest first.
fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    segments
}

/// Transitions `0..n` pushed into a spool in `dir` (`memory` of them kept in
/// memory) and persisted at shutdown; the segment files they left, oldest first.
fn persisted(dir: &Path, memory: usize, n: u64) -> Vec<std::path::PathBuf> {
    let mut spool = Spool::open(&spool_config(Some(dir), memory)).unwrap();
    for i in 0..n {
        spool.push(t(i));
    }
    assert_eq!(spool.persist(), 0);
    segment_files(dir)
}

/// A torn write at the end of `segment`: three bytes of a record header.
fn tear(segment: &Path) {
    OpenOptions::new()
        .append(true)
        .open(segment)
        .unwrap()
        .write_all(&[42, 0, 0])
        .unwrap();
}

fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < HANG, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn memory_spool_outage_drops_oldest_and_drains_in_order() {
    let config = spool_config(None, 100);
    let (sink, rx, link) = inproc::transitions();
    let (tx, uplink, stats) = Uplink::start(
        "r".into(),
        Spool::open(&config).unwrap(),
        Box::new(sink),
        &batching(),
        &config,
    );
    for i in 0..50 {
        tx.send(t(i));
    }
    wait("the first 50 sent", || stats.totals().sent == 50);
    link.down();
    for i in 50..300 {
        tx.send(t(i));
    }
    // 250 produced while down, 100 fit: the 150 oldest of them are dropped.
    wait("the outage to fill the spool", || {
        stats.totals().dropped == 150
    });
    let during = stats.totals();
    assert_eq!(during.spooled, 100);
    assert!(during.balanced(), "{during:?}");
    link.up();
    wait("the spool to drain", || stats.totals().spooled == 0);
    drop(tx);
    let report = uplink.join();
    let totals = stats.totals();
    assert!(totals.balanced(), "{totals:?}");
    assert_eq!(
        (totals.produced, totals.sent, totals.dropped),
        (300, 150, 150)
    );
    assert_eq!(report.lost_at_shutdown, 0);
    let batches: Vec<_> = rx.try_iter().collect();
    let expected: Vec<u64> = (0..50).chain(200..300).collect();
    assert_eq!(ids(&batches), expected, "sent in order, oldest dropped");
    for (i, b) in batches.iter().enumerate() {
        assert_eq!(b.batch_seq, i as u64);
    }
}

#[test]
fn repeated_outages_balance_at_every_step() {
    let config = spool_config(None, 64);
    let (sink, rx, link) = inproc::transitions();
    let (tx, uplink, stats) = Uplink::start(
        "r".into(),
        Spool::open(&config).unwrap(),
        Box::new(sink),
        &batching(),
        &config,
    );
    let mut produced = 0;
    for round in 0..20u64 {
        if round % 2 == 1 {
            link.down();
        } else {
            link.up();
        }
        for _ in 0..(10 + round * 7) {
            tx.send(t(produced));
            produced += 1;
        }
        // Once the uplink has taken everything in, the books balance.
        wait("the hand-over", || {
            let s = stats.totals();
            s.sent + s.spooled + s.dropped == s.produced
        });
    }
    link.up();
    drop(tx);
    uplink.join();
    let totals = stats.totals();
    assert!(totals.balanced(), "{totals:?}");
    assert_eq!(totals.produced, produced);
    assert_eq!(totals.spooled, 0);
    let got = ids(&rx.try_iter().collect::<Vec<_>>());
    assert_eq!(got.len() as u64, totals.sent);
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates"
    );
}

#[test]
fn disk_spool_survives_restart_and_drains_in_order() {
    let dir = tempfile::tempdir().unwrap();
    // Small memory: most of the outage goes to disk segments.
    let config = spool_config(Some(dir.path()), 32);
    let (sink, _rx, link) = inproc::transitions();
    link.down();
    let (tx, uplink, stats) = Uplink::start(
        "r".into(),
        Spool::open(&config).unwrap(),
        Box::new(sink),
        &batching(),
        &config,
    );
    for i in 0..500 {
        tx.send(t(i));
    }
    drop(tx);
    // Shutdown with the sink down: everything is written to disk.
    let report = uplink.join();
    let totals = stats.totals();
    assert!(totals.balanced(), "{totals:?}");
    assert_eq!((totals.sent, totals.spooled, totals.dropped), (0, 500, 0));
    assert_eq!(report.lost_at_shutdown, 0);
    let segments = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(segments > 1, "several segments ({segments})");

    // Restart: recovered from disk, drained in order, then new transitions follow.
    let (sink, rx, _link) = inproc::transitions();
    let spool = Spool::open(&config).unwrap();
    assert_eq!((spool.counters().recovered, spool.len()), (500, 500));
    let (tx, uplink, stats) =
        Uplink::start("r".into(), spool, Box::new(sink), &batching(), &config);
    for i in 500..600 {
        tx.send(t(i));
    }
    drop(tx);
    uplink.join();
    let totals = stats.totals();
    assert!(totals.balanced(), "{totals:?}");
    assert_eq!(
        (
            totals.recovered,
            totals.produced,
            totals.sent,
            totals.spooled
        ),
        (500, 100, 600, 0)
    );
    assert_eq!(
        ids(&rx.try_iter().collect::<Vec<_>>()),
        (0..600).collect::<Vec<_>>()
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "sent segments are removed"
    );
}

#[test]
fn partly_drained_segment_is_rewritten_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let config = spool_config(Some(dir.path()), 8);
    let mut spool = Spool::open(&config).unwrap();
    for i in 0..100 {
        spool.push(t(i));
    }
    let (mut sink, rx, _link) = inproc::transitions();
    let mut seq = 0;
    // Send 2 batches of 10 (from the oldest disk segment), then stop.
    assert_eq!(spool.send(&mut sink, "r", 10, 2, &mut seq).unwrap(), 20);
    assert_eq!(spool.persist(), 0);
    assert!(spool.counters().balanced());
    drop(spool);
    let mut spool = Spool::open(&config).unwrap();
    assert_eq!(spool.counters().recovered, 80);
    spool
        .send(&mut sink, "r", 10, usize::MAX, &mut seq)
        .unwrap();
    assert_eq!(
        ids(&rx.try_iter().collect::<Vec<_>>()),
        (0..100).collect::<Vec<_>>()
    );
}

#[test]
fn corrupt_and_truncated_segments_are_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let config = spool_config(Some(dir.path()), 4);
    let segments = persisted(dir.path(), 4, 40);
    assert!(segments.len() >= 2);
    // A torn write at the end of the last segment.
    let last = segments.last().unwrap();
    tear(last);
    // A flipped byte in the middle of the first segment's second record.
    let first = &segments[0];
    let mut bytes = std::fs::read(first).unwrap();
    let len = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
    bytes[8 + len + 8 + 5] ^= 0xff;
    std::fs::write(first, bytes).unwrap();

    let spool = Spool::open(&config).unwrap();
    let c = spool.counters();
    assert_eq!(c.corrupt, 2, "{c:?}");
    assert_eq!(c.recovered, 39, "one record lost to the flipped byte");
    // Reopening again does not count the same damage twice.
    drop(spool);
    let mut spool = Spool::open(&config).unwrap();
    assert_eq!(
        (spool.counters().corrupt, spool.counters().recovered),
        (0, 39)
    );
    let (mut sink, rx, _link) = inproc::transitions();
    spool.send(&mut sink, "r", 16, usize::MAX, &mut 0).unwrap();
    let got = ids(&rx.try_iter().collect::<Vec<_>>());
    let expected: Vec<u64> = (0..40).filter(|&i| i != 1).collect();
    assert_eq!(got, expected);

    // Garbage files never panic.
    std::fs::write(
        dir.path().join("00000000000000000099.seg"),
        b"\xff\xff\xff\xffgarbage",
    )
    .unwrap();
    let spool = Spool::open(&config).unwrap();
    assert_eq!(spool.counters().corrupt, 1);
}

#[test]
fn disk_budget_drops_oldest_segment_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = SpoolConfig {
        max_disk_bytes: 8192,
        ..spool_config(Some(dir.path()), 4)
    };
    let mut spool = Spool::open(&config).unwrap();
    for i in 0..500 {
        spool.push(t(i));
    }
    let c = spool.counters();
    assert!(c.dropped > 0, "{c:?}");
    assert!(c.balanced(), "{c:?}");
    let (mut sink, rx, _link) = inproc::transitions();
    spool.send(&mut sink, "r", 16, usize::MAX, &mut 0).unwrap();
    let got = ids(&rx.try_iter().collect::<Vec<_>>());
    // The newest survive, in order, and the oldest went first.
    assert_eq!(*got.last().unwrap(), 499);
    assert!(
        got.windows(2).all(|w| w[0] + 1 == w[1]),
        "contiguous: whole oldest segments dropped"
    );
    assert_eq!(got.len() as u64 + c.dropped, 500);
}

/// A wire with a size limit: a batch over `max_batch` transitions, or with a
/// transition carrying more than 100 values, is too large.
#[derive(Default)]
struct Narrow {
    max_batch: usize,
    delivered: Vec<TransitionBatch>,
    /// Batches refused as too large.
    refused: usize,
}

impl reflex_daemon::transport::TransitionSink for Narrow {
    fn send(&mut self, batch: &TransitionBatch) -> Result<(), TransportError> {
        let huge = batch.transitions.iter().any(|t| t.obs.len() > 100);
        if batch.transitions.len() > self.max_batch || huge {
            self.refused += 1;
            return Err(TransportError::TooLarge(format!(
                "{} transitions",
                batch.transitions.len()
            )));
        }
        self.delivered.push(batch.clone());
        Ok(())
    }
}

#[test]
fn batches_too_large_for_the_wire_are_split_and_a_transition_too_large_is_dropped() {
    for dir in [None, Some(tempfile::tempdir().unwrap())] {
        // Memory only, and disk (a one-transition memory: the rest spills).
        let (config, memory) = match &dir {
            None => (spool_config(None, 100), 100),
            Some(d) => (spool_config(Some(d.path()), 1), 1),
        };
        let mut spool = Spool::open(&config).unwrap();
        for i in 0..20 {
            let mut transition = t(i);
            if i == 7 {
                transition.obs = vec![0.0; 1000]; // alone too large for this wire
            }
            spool.push(transition);
        }
        let mut sink = Narrow {
            max_batch: 3,
            ..Narrow::default()
        };
        let mut seq = 0;
        let mut sent = 0;
        for _ in 0..50 {
            sent += spool
                .send(&mut sink, "r", 16, usize::MAX, &mut seq)
                .unwrap();
            if spool.is_empty() {
                break;
            }
        }
        let expected: Vec<u64> = (0..20).filter(|&i| i != 7).collect();
        assert_eq!(ids(&sink.delivered), expected, "memory {memory}");
        assert!(sink.delivered.iter().all(|b| b.transitions.len() <= 3));
        assert_eq!(sent, 19);
        let c = spool.counters();
        assert_eq!((c.sent, c.dropped, c.len), (19, 1, 0), "{c:?}");
        assert!(c.balanced(), "{c:?}");
        // Batch numbers count delivered batches only, without gaps.
        let seqs: Vec<u64> = sink.delivered.iter().map(|b| b.batch_seq).collect();
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    }
}

/// The uplink asks for one batch at a time when only one full batch waits.
/// Halving a batch the wire refused used to take that one round, so such a
/// call sent nothing, and every call started again from the refused size.
#[test]
fn a_refused_batch_size_is_remembered_and_halving_costs_no_round() {
    let mut spool = Spool::in_memory(1000);
    for i in 0..100 {
        spool.push(t(i));
    }
    let mut sink = Narrow {
        max_batch: 3,
        ..Narrow::default()
    };
    let mut seq = 0;
    let mut calls = 0;
    while !spool.is_empty() {
        calls += 1;
        assert!(calls <= 100, "no progress: {:?}", spool.counters());
        let sent = spool.send(&mut sink, "r", 16, 1, &mut seq).unwrap();
        assert!(sent > 0, "call {calls} sent nothing");
    }
    assert_eq!(ids(&sink.delivered), (0..100).collect::<Vec<_>>());
    // 16 → 8 → 4 → 2 once, then one larger try per 16 batches sent.
    assert!(sink.refused <= 3 + 50 / 16, "refused {}", sink.refused);
}

#[test]
fn a_head_segment_emptied_behind_the_spools_back_does_not_stop_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(&spool_config(Some(dir.path()), 1)).unwrap();
    for i in 0..200 {
        spool.push(t(i));
    }
    let segments = segment_files(dir.path());
    assert!(segments.len() >= 3, "{segments:?}");
    // Something outside reflexd empties the oldest segment.
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&segments[0])
        .unwrap();
    let mut sink = Narrow {
        max_batch: 16,
        ..Narrow::default()
    };
    let mut seq = 0;
    for _ in 0..100 {
        spool
            .send(&mut sink, "r", 16, usize::MAX, &mut seq)
            .unwrap();
        if spool.is_empty() {
            break;
        }
    }
    let got = ids(&sink.delivered);
    let c = spool.counters();
    assert!(spool.is_empty(), "the spool stopped with {c:?}");
    // The emptied segment's records are counted lost; everything after arrived
    // in order.
    assert_eq!(got.len() as u64 + c.dropped, 200, "{c:?}");
    assert!(c.dropped > 0, "{c:?}");
    assert_eq!(got, (c.dropped..200).collect::<Vec<_>>());
    assert!(c.balanced(), "{c:?}");
}

/// The last segment on disk emptied (a disk that filled up under it) or deleted
/// behind the spool's back: its records are counted lost, and the spool goes on
/// with what comes after. It used to remember the empty head and send nothing,
/// disk or memory, from then on; a deleted head stalled the disk backlog.
#[test]
fn a_last_segment_emptied_or_deleted_does_not_jam_the_spool() {
    for damage in ["truncated", "deleted"] {
        let dir = tempfile::tempdir().unwrap();
        let config = spool_config(Some(dir.path()), 1);
        let segments = persisted(dir.path(), 1, 10);
        assert_eq!(segments.len(), 1, "{segments:?}");
        let mut spool = Spool::open(&config).unwrap();
        assert_eq!(spool.counters().recovered, 10);
        match damage {
            "truncated" => {
                OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&segments[0])
                    .unwrap();
            }
            _ => std::fs::remove_file(&segments[0]).unwrap(),
        }
        let (mut sink, rx, _link) = inproc::transitions();
        let mut seq = 0;
        spool
            .send(&mut sink, "r", 16, usize::MAX, &mut seq)
            .unwrap();
        // New transitions: nine spill to a new segment, one stays in memory.
        for i in 10..20 {
            spool.push(t(i));
        }
        for _ in 0..10 {
            spool.send(&mut sink, "r", 4, usize::MAX, &mut seq).unwrap();
        }
        let c = spool.counters();
        assert!(spool.is_empty(), "{damage}: the spool stopped with {c:?}");
        assert_eq!(c.dropped, 10, "{damage}: the damaged segment counted lost");
        assert!(c.balanced(), "{damage}: {c:?}");
        assert_eq!(
            ids(&rx.try_iter().collect::<Vec<_>>()),
            (10..20).collect::<Vec<_>>(),
            "{damage}"
        );
    }
}

/// Without a disk, what is still in memory at shutdown is lost: counted as
/// dropped, not reported as waiting.
#[test]
fn memory_left_at_shutdown_is_counted_lost() {
    let mut spool = Spool::in_memory(100);
    for i in 0..7 {
        spool.push(t(i));
    }
    assert_eq!(spool.persist(), 7);
    let c = spool.counters();
    assert_eq!((c.len, c.dropped), (0, 7));
    assert!(c.balanced(), "{c:?}");
}

/// A write that fails part-way (here: a segment that is `/dev/full`) leaves
/// that segment behind: the next record starts a new one. Every record after
/// the failure used to go on into the failing segment and be lost with it.
#[test]
fn a_failed_disk_write_moves_on_to_a_new_segment() {
    if !Path::new("/dev/full").exists() {
        eprintln!("no /dev/full here: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(&spool_config(Some(dir.path()), 1)).unwrap();
    let first = dir.path().join(format!("{:020}.seg", 0));
    std::os::unix::fs::symlink("/dev/full", &first).unwrap();
    // Records larger than the writer's buffer, so each write reaches the file.
    let big = |i: u64| Transition {
        obs: vec![i as f32; 4000],
        ..t(i)
    };
    for i in 0..6 {
        spool.push(big(i));
    }
    let c = spool.counters();
    assert_eq!(c.dropped, 1, "only the record the full disk refused: {c:?}");
    assert!(c.balanced(), "{c:?}");
    std::fs::remove_file(&first).unwrap();
    let (mut sink, rx, _link) = inproc::transitions();
    spool.send(&mut sink, "r", 2, usize::MAX, &mut 0).unwrap();
    assert!(spool.is_empty(), "{:?}", spool.counters());
    assert_eq!(
        ids(&rx.try_iter().collect::<Vec<_>>()),
        (1..6).collect::<Vec<_>>()
    );
    assert!(spool.counters().balanced());

    // Small records wait in the writer's buffer: when the full disk refuses
    // it, they are lost with it, and counted so at once (not left counted as
    // waiting on disk).
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(&spool_config(Some(dir.path()), 1)).unwrap();
    let first = dir.path().join(format!("{:020}.seg", 0));
    std::os::unix::fs::symlink("/dev/full", &first).unwrap();
    for i in 0..200 {
        spool.push(t(i));
        let c = spool.counters();
        assert!(c.balanced(), "after {i}: {c:?}");
    }
    let lost = spool.counters().dropped;
    assert!(
        lost > 1,
        "the buffered records went too: {:?}",
        spool.counters()
    );
    std::fs::remove_file(&first).unwrap();
    let (mut sink, rx, _link) = inproc::transitions();
    spool.send(&mut sink, "r", 16, usize::MAX, &mut 0).unwrap();
    let c = spool.counters();
    assert!(spool.is_empty(), "{c:?}");
    assert_eq!(c.dropped, lost, "nothing more found lost on reading: {c:?}");
    assert_eq!(
        ids(&rx.try_iter().collect::<Vec<_>>()),
        (lost..200).collect::<Vec<_>>()
    );
    assert!(c.balanced());
}

/// What a crash on a full disk leaves behind must not keep reflexd from
/// starting: a segment that cannot be read is left in place (logged), and a
/// torn segment that cannot be repaired (no room for the repaired copy; here
/// its temporary path is taken) is read around its damage, counted once.
#[test]
fn unreadable_or_unrepairable_segments_do_not_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = spool_config(Some(dir.path()), 4);
    let segments = persisted(dir.path(), 4, 40);
    let last = segments.last().unwrap();
    tear(last);
    std::fs::create_dir(last.with_extension("seg.tmp")).unwrap();
    // Something that is not a segment file, named like one.
    std::fs::create_dir(dir.path().join(format!("{:020}.seg", 99))).unwrap();

    let mut spool = Spool::open(&config).unwrap();
    let c = spool.counters();
    assert_eq!((c.recovered, c.corrupt), (40, 1), "{c:?}");
    let (mut sink, rx, _link) = inproc::transitions();
    spool.send(&mut sink, "r", 16, usize::MAX, &mut 0).unwrap();
    let c = spool.counters();
    assert_eq!(
        (c.sent, c.corrupt, c.dropped, c.len),
        (40, 1, 0, 0),
        "{c:?}"
    );
    assert_eq!(
        ids(&rx.try_iter().collect::<Vec<_>>()),
        (0..40).collect::<Vec<_>>()
    );
}
