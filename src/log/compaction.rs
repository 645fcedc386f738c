//! Online compaction of a shard's log: rewrite the shard's live data as a
//! snapshot into a new file while the shard keeps serving, then switch to it
//! atomically, so the log stays within a small factor of the live data however
//! often keys are overwritten.
//!
//! 1. *Snapshot* (synchronous, on the shard,
//!    `txn::Participant::compaction_snapshot`): remember the log position `cut`
//!    and take the table's entries — references, not copies of values. COMMIT
//!    records of batches still being confirmed by their participants are
//!    carried into the snapshot (recovery may need them).
//! 2. *Write* the snapshot to `shard-<i>.log.compact`, in chunks, yielding
//!    between them: requests keep running and appending to the old log
//!    (paced, see below).
//! 3. *Switch* ([`LogWriter::switch_file`]): the records appended after `cut`
//!    are copied behind the snapshot, a few MiB of whole records at a time
//!    (`log::tail_copy`), the new file is fdatasync-ed and renamed
//!    over `shard-<i>.log` (atomic), and appends continue in it. Only this step
//!    makes requests wait. Then the directory is synced.
//!
//! A crash at any point leaves either the old log or the new one under the
//! log's name; a leftover `.compact` file is deleted at the next start.
//!
//! With the disk engine's segments (`log::segments`) the snapshot holds every
//! entry whatever file it points into, and its file header is flagged BASE:
//! it supersedes every sealed segment of the shard. No roll happens from the
//! snapshot to the switch (`LogWriter::hold_rolls`), so the cut and the tail
//! are in the active file; the compactor deletes the sealed segments once the
//! switch is durable.
//!
//! While the snapshot is written the shard's writes are paced to it
//! (`log::pacing`): [`compact`] pays the writers' budget with each chunk, so
//! that the log stays within twice the live data plus a margin however fast
//! clients overwrite.
//!
//! # Keeping up with a busy shard
//!
//! glommio submits and collects its io_uring operations only between runs
//! of its task queues: when every queue is empty, or when its preemption
//! timer (100 ms) fires. A shard under load never empties its queue: the
//! network poller (`crate::net`) yields and runs again while its ring has
//! completions, and a connection whose socket has more requests serves them
//! without suspending. So on a busy shard every glommio file operation
//! waits up to the preemption period for its completion to be seen.
//! Measured (one shard, 16 connections of pipelined 1 KiB SETs, a debug
//! build): each 1 MiB chunk write waited ~100 ms, a 21 MB snapshot took
//! 1.7–2.3 s (~10 MB/s) while requests appended ~15 MB/s, and the log
//! reached 5× its live data.
//!
//! Hence: each chunk is written with a blocking `pwrite` into the page cache
//! (as the log writer writes its rounds, `file_io`), a fraction of a
//! millisecond, and the writer then yields its task queue (the compactor
//! runs in one of its own, `server::compactor`), so that the requests
//! waiting run before the next chunk. The same snapshot then took
//! 40–200 ms. The disk engine's reads of the values go through the shard's
//! own ring on a server (`log::values::BlockReader`), which its network
//! poller enters at every pass. What still goes through glommio's ring: the
//! switch's tail copy (`tail_copy`, while the writes wait anyway), its
//! fdatasync, and the disk engine's hint file. The chunk
//! size is not the limit once writes do not wait for the ring.
//!
//! # Cross-shard batches in flight
//!
//! A snapshot can be taken while cross-shard batches are prepared on the shard
//! (under steady ATOMIC load some always are). Their writes are tentative: in
//! the table, but decided only later. The snapshot file holds, in order:
//!
//! ```text
//! PUT …       the committed state: every key, and for a key a prepared batch
//!             holds, its value and version before the batch (its undo log);
//!             a key the batch created is left out
//! COMMIT …    batches this shard coordinates whose participants have not all
//!             confirmed their DECIDE as safe
//! PREPARE …   one per batch prepared at `cut`: the state its share gave its
//!             keys (value and version, or DEL for a key it deleted)
//! ```
//!
//! (A COMMIT only marks its batch committed wherever it is in the file; the
//! PUTs come first so that the disk engine's hint file, which stands for
//! them, covers one run of the file's start: `log::hint`.)
//!
//! followed by the records appended after `cut`. Replaying it gives exactly
//! what replaying the old log would have, in each case:
//!
//! - *Prepared before the cut, decided after it.* Its DECIDE is in the copied
//!   tail: replay holds the snapshot's PREPARE aside, then applies it (commit)
//!   over the PUTs of the old values, or drops it (abort), leaving them.
//! - *Prepared and undecided at a crash.* The snapshot's PREPARE has no DECIDE:
//!   recovery resolves it as it would the original, by the coordinator's COMMIT
//!   record — committed if found, dropped otherwise. The COMMIT cannot have
//!   been compacted away meanwhile: the coordinator carries it until this
//!   shard confirms a DECIDE that is safe.
//! - *PREPARE appended before the cut but not yet safe.* The participant votes
//!   yes only once its PREPARE is safe, in whichever file: the old one (synced
//!   by the flusher before the switch) or the new one, which is fdatasync-ed
//!   before it takes the log's name, with the PREPARE in it. A crash before the
//!   vote leaves no COMMIT anywhere, so either file's PREPARE is dropped.
//!
//! A batch prepared after the cut has all its records in the copied tail, and
//! one decided before the cut has none in the snapshot: only its outcome is in
//! the PUTs.
//!
//! # When compaction cannot run
//!
//! A compaction that fails (a write refused, the disk full, a failed sync or
//! rename) removes its `.compact` file at once and changes nothing else: the
//! old log stays in use and writable, and no record is lost (the writer puts
//! back what it took for the switch). Only a failed *directory* sync after
//! the rename is different: the new file is already the log, so it stays in
//! use ([`CompactionError::DirectoryNotSynced`]) and the caller retries the
//! directory sync. Before starting, the caller checks the file system has
//! [`room_needed`] for the snapshot ([`free_bytes`]).

use super::blocks;
use super::format::{self, Effect};
use super::pacing::PacedCompaction;
use super::values::WantedValue;
use super::LogWriter;
use crate::entry::{Location, ValueCheck};
use crate::failpoint;
use crate::ids::TxnId;
use std::path::{Path, PathBuf};

/// Snapshot bytes written per chunk before yielding to requests.
const CHUNK_BYTES: usize = 1 << 20;
/// Free space a compaction leaves for everything else, beyond the snapshot and
/// its share of growth (see [`room_needed`]).
const ROOM_MARGIN_BYTES: u64 = 1 << 20;

/// Why a compaction did not complete.
#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    /// Nothing changed: the old log is in use, and the partial `.compact` file
    /// has been removed.
    #[error("{0}; the log is unchanged and the partial snapshot removed")]
    Abandoned(std::io::Error),
    /// The new file replaced the log and is in use, but the directory sync
    /// that makes the rename survive a power loss failed: retry it
    /// ([`sync_log_dir`]).
    #[error("the new file replaced the log, but syncing the log directory failed ({0}); retrying")]
    DirectoryNotSynced(std::io::Error),
}

/// When a log is worth compacting: larger than `min_bytes` and more than twice
/// the live data (its snapshot's size, [`snapshot_bytes`]).
pub fn should_compact(file_len: u64, live_bytes: u64, min_bytes: u64) -> bool {
    file_len > due_past(live_bytes, min_bytes)
}

/// The log length past which a compaction is due ([`should_compact`]).
pub fn due_past(live_bytes: u64, min_bytes: u64) -> u64 {
    min_bytes.max(live_bytes.saturating_mul(2))
}

/// The size of a snapshot's PUT records for `nr_keys` keys holding
/// `key_bytes` of keys and `value_bytes` of values: each record is its key,
/// its value, and a fixed frame (measured by encoding an empty one, so it
/// follows the record format).
pub fn snapshot_bytes(nr_keys: u64, key_bytes: u64, value_bytes: u64) -> u64 {
    let mut empty = Vec::new();
    format::write_effect(
        &mut empty,
        &Effect::Put {
            key: b"",
            version: 0,
            value: b"",
            deadline: None,
        },
    );
    key_bytes + value_bytes + nr_keys * empty.len() as u64
}

/// One entry of a snapshot: the table's entry (key, value, version) as it was
/// when the snapshot was taken, shared with the table.
pub type SnapshotEntry = crate::entry::Entry;

/// The shard's state at `cut`, ready to be written without the table.
pub struct Snapshot {
    pub cut: u64,
    /// The committed state: a prepared batch's keys as they were before it.
    pub entries: Vec<SnapshotEntry>,
    /// COMMIT records still needed by a participant's recovery.
    pub commits: Vec<TxnId>,
    /// Batches prepared here and undecided at `cut`.
    pub prepared: Vec<PreparedShare>,
}

/// A batch prepared on this shard and undecided at the snapshot: its keys as
/// its share left them (the entry, or None if it deleted the key), carried
/// forward as a PREPARE record.
pub struct PreparedShare {
    pub txn: TxnId,
    pub states: Vec<(Box<[u8]>, Option<SnapshotEntry>)>,
}

/// A written snapshot: its length, where its PUT records end, and with the
/// disk engine where each entry's value now is in it (file offsets, for
/// `Table::relocate` and the hint file).
pub struct WrittenSnapshot {
    pub len: u64,
    pub puts_end: u64,
    /// Each entry and its value's file offset (in its own PUT or PUTX
    /// record, which reads of it check).
    pub located: Vec<(SnapshotEntry, u64)>,
    /// The tentative entries of batches prepared at the snapshot, each with
    /// its value's file offset in the carried PREPARE record and the CRC-32
    /// that reads of it check (one of several values in a record).
    pub prepared_located: Vec<(SnapshotEntry, u64, u32)>,
}

/// What a compaction that switched files hands back with the disk engine:
/// where the snapshot's values are in the new file (for `Table::relocate`),
/// and what its hint file needs (`log::hint`). Empty otherwise.
#[derive(Default)]
pub struct Moved {
    pub located: Vec<(SnapshotEntry, Location)>,
    /// Values of batches prepared at the snapshot, in the PREPARE records
    /// carried behind its PUTs: not in the hint file (the batch may still
    /// abort), moved like the others if it is still their entry.
    pub prepared_located: Vec<(SnapshotEntry, Location)>,
    pub epoch: u64,
    pub puts_end: u64,
    /// What the snapshot takes of the new file, before the records copied
    /// behind it: the live data as it is on disk (`Shard::live_bytes`).
    pub snapshot_len: u64,
}

/// What a snapshot took on disk (`measured`) against the live data estimated
/// for it (`estimated`, [`snapshot_bytes`] of its keys and values): the disk
/// engine places records in 4 KiB blocks (`log::blocks`), so its snapshot is
/// larger than the records' sum by a factor that depends on the value sizes.
/// The shard scales its live-data estimate by it (`Shard::live_bytes`).
/// Known after a compaction, and again after a restart from the hint file
/// that compaction wrote (`log::hint`), which describes the same snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveScale {
    pub estimated: u64,
    pub measured: u64,
}

/// The disk engine pads the snapshot's end, and the start of the records
/// copied behind it, to their places in 4 KiB blocks (`blocks`): at most
/// two blocks more, which a tiny snapshot must count in what it takes or it
/// is due again as soon as it is written.
pub const SNAPSHOT_PADDING_SLACK: u64 = 2 * blocks::BLOCK_BYTES;

/// Free bytes a compaction needs before it starts, for a shard whose live
/// data is `live_bytes` (the table's estimate, which is larger than the PUT
/// records of the snapshot): the snapshot, a quarter more for the records
/// appended while it is written (copied behind it, so on disk twice until the
/// old file goes), and a fixed margin so the live log can keep growing.
pub fn room_needed(live_bytes: u64) -> u64 {
    live_bytes + live_bytes / 4 + ROOM_MARGIN_BYTES
}

/// Bytes an unprivileged process may still write on the file system holding
/// `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    crate::sys::free_bytes(path)
}

/// The temporary file a shard's compaction writes.
pub fn compact_path(log_path: &Path) -> PathBuf {
    log_path.with_extension("log.compact")
}

/// Writes `snapshot` to a new file and switches `log` to it, paying the
/// writers' pacing budget (`log::pacing`) as the snapshot is written,
/// ending it once it is, and after the switch giving the writers the room
/// left in the new file (until the caller drops `paced`). On failure the partial file is removed before
/// returning. A failed directory sync after the switch still hands back
/// where the values are ([`CompactionError::DirectoryNotSynced`] does not
/// lose them).
pub async fn compact(
    log: &LogWriter,
    log_path: &Path,
    snapshot: Snapshot,
    paced: &PacedCompaction<'_>,
) -> (Result<u64, CompactionError>, Moved) {
    let tmp = compact_path(log_path);
    let moved = match write_and_switch(log, log_path, &tmp, snapshot, paced).await {
        Ok(moved) => moved,
        Err(e) => {
            remove_partial(&tmp);
            return (Err(CompactionError::Abandoned(e)), Moved::default());
        }
    };
    let synced = sync_log_dir(log_path, log.shard()).map_err(CompactionError::DirectoryNotSynced);
    (synced.map(|()| log.file_len()), moved)
}

async fn write_and_switch(
    log: &LogWriter,
    log_path: &Path,
    tmp: &Path,
    snapshot: Snapshot,
    paced: &PacedCompaction<'_>,
) -> std::io::Result<Moved> {
    let scope = Some(log.shard());
    failpoint::check("compaction::create", scope)?;
    let file = glommio::io::OpenOptions::new()
        .write(true)
        .read(true)
        .create(true)
        .truncate(true)
        .buffered_open(tmp)
        .await
        .map_err(std::io::Error::from)?;
    let values = log.keeps_values().then_some(log);
    // Opened before the rename, so it is the new file whatever the name
    // holds; and before the snapshot, so that nothing stands between its
    // last chunk and the switch (the pacing ends there).
    let reader = match values {
        Some(_) => Some(
            glommio::io::DmaFile::open(tmp)
                .await
                .map_err(std::io::Error::from)?,
        ),
        None => None,
    };
    let epoch = super::new_epoch();
    let failpoint = "compaction::write";
    // Each chunk pays the writers' pacing budget; a poisoned log cannot
    // switch, so the compaction stops at once and lets its waiters go (as
    // it does at shutdown).
    let mut progress = |bytes: u64| {
        paced.pay(bytes);
        match log.rewrite_stopped() {
            Some(stopped) => Err(stopped),
            None => Ok(()),
        }
    };
    let written = write_snapshot(
        &file,
        &snapshot,
        epoch,
        (failpoint, scope),
        values,
        &mut progress,
    )
    .await?;
    // The switch stops the old file's growth itself (it pauses the writes
    // while it copies the tail): no budget until it is done.
    paced.end();
    // Tests hold the compaction here, its snapshot written, to grow its tail.
    failpoint::hold_while_armed("compaction::before_switch", scope, &"a compaction").await;
    // The rename is the switch: from here the new file is the log.
    let install = async {
        failpoint::check("compaction::rename", scope)?;
        std::fs::rename(tmp, log_path)
    };
    log.switch_file(file, (snapshot.cut, written.len), epoch, install, reader)
        .await?;
    // Known only now: a roll under way when the compaction began ends
    // before the switch and takes a number first (`log::segments`).
    let new_number = log.current_value_file();
    paced.after_switch(log.file_len(), log.appended());
    let located = written
        .located
        .into_iter()
        .map(|(entry, offset)| {
            let len = entry.value_len() as u32;
            // The snapshot wrote the entry's PUT (PUTX with a deadline).
            let with_deadline = entry.deadline().is_some();
            let location = Location {
                file: new_number,
                offset,
                len,
                check: ValueCheck::Record { with_deadline },
            };
            (entry, location)
        })
        .collect();
    let prepared_located = written
        .prepared_located
        .into_iter()
        .map(|(entry, offset, crc)| {
            let location = Location {
                file: new_number,
                offset,
                len: entry.value_len() as u32,
                check: ValueCheck::Crc(crc),
            };
            (entry, location)
        })
        .collect();
    let padding = match log.keeps_values() {
        true => SNAPSHOT_PADDING_SLACK,
        false => 0,
    };
    Ok(Moved {
        located,
        prepared_located,
        epoch,
        puts_end: written.puts_end,
        snapshot_len: written.len + padding,
    })
}

/// Syncs the directory holding shard `shard`'s log, so that a rename in it
/// survives a power loss.
pub fn sync_log_dir(log_path: &Path, shard: usize) -> std::io::Result<()> {
    let dir = log_path.parent().unwrap_or(Path::new("."));
    failpoint::check("compaction::dir_fsync", Some(shard))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Removes a failed compaction's file at once: left behind it would hold disk
/// space the live log may need (on a full disk, enough to make its next
/// append fail).
fn remove_partial(tmp: &Path) {
    match std::fs::remove_file(tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::error!("cannot remove {}: {e}", tmp.display()),
    }
}

/// Writes `snapshot` as a log file of `epoch` (header, then its records),
/// from offset 0, in chunks, yielding between them; returns its length.
/// Every chunk write checks `failpoint` (for shard `scope`) and is reported
/// to `progress` (its length), which may stop the writing with an error.
/// Backups write their files with it too (`crate::backup`), so they are
/// exactly what recovery reads.
///
/// With the disk engine (`values`: the log its entries' values are read
/// from), values on disk are read back for it in the order they lie on disk,
/// neighbours together (`read_in_spans`), where each entry's value lands in
/// the file is returned, and records are placed in 4 KiB blocks
/// (`log::blocks`).
pub async fn write_snapshot(
    file: &glommio::io::BufferedFile,
    snapshot: &Snapshot,
    epoch: u64,
    failpoint: (&str, Option<usize>),
    values: Option<&LogWriter>,
    progress: &mut dyn FnMut(u64) -> std::io::Result<()>,
) -> std::io::Result<WrittenSnapshot> {
    let mut header = Vec::with_capacity(format::FILE_HEADER_BYTES);
    // A snapshot is the shard's whole state: it supersedes every sealed
    // segment (`log::segments`).
    format::write_file_header_flagged(&mut header, epoch, format::FLAG_BASE);
    let mut offset = write_chunk(file, &mut header, 0, failpoint).await?;
    let mut chunk = Vec::with_capacity(CHUNK_BYTES + 4096);
    let mut located = Vec::new();
    let mut prepared_located = Vec::new();
    // The disk engine's records are placed in the file's 4 KiB blocks.
    let placed = values.is_some();
    // With the disk engine, the entries go in the order their values lie on
    // disk, so that neighbouring values are read together, in spans of up
    // to SPAN_BYTES: close to one sequential pass over the old file, however
    // the table orders its keys.
    let order = match values {
        Some(_) => disk_order(&snapshot.entries),
        None => (0..snapshot.entries.len() as u32).collect(),
    };
    let mut next = 0;
    while next < order.len() {
        // A batch: entries up to BATCH_BYTES of values (at least one).
        let mut group: Vec<&SnapshotEntry> = Vec::new();
        let mut bytes = 0;
        while next < order.len() && (group.is_empty() || bytes < BATCH_BYTES) {
            let entry = &snapshot.entries[order[next] as usize];
            bytes += entry.value_len() as u64;
            group.push(entry);
            next += 1;
        }
        let read = read_in_spans(values, &group).await?;
        for (entry, value) in group.iter().zip(&read) {
            let value = value.as_deref().unwrap_or_else(|| entry.value());
            let at = append_put(&mut chunk, placed.then_some(offset), entry, value);
            if values.is_some() {
                located.push(((*entry).clone(), offset + at as u64));
            }
            write_when_full(file, &mut chunk, &mut offset, epoch, failpoint, progress).await?;
        }
    }
    // The PUT records end here: a hint file describes the file up to this
    // point (`log::hint`), and everything after it is replayed.
    let puts_end = offset + chunk.len() as u64;
    for txn in &snapshot.commits {
        blocks::append_records(&mut chunk, placed.then_some(offset), |chunk| {
            format::write_commit(chunk, *txn)
        });
    }
    // After the PUTs: replay applies a committed share over the old values.
    for share in &snapshot.prepared {
        let entries: Vec<SnapshotEntry> =
            share.states.iter().flat_map(|(_, e)| e.clone()).collect();
        let mut read = read_values(values, &entries).await?.into_iter();
        let mut effects = Vec::with_capacity(share.states.len());
        let mut bytes = Vec::with_capacity(entries.len());
        for (_, state) in &share.states {
            if state.is_some() {
                bytes.push(read.next().expect("one read per entry"));
            }
        }
        let mut bytes = bytes.iter();
        for (key, state) in &share.states {
            effects.push(match state {
                Some(entry) => Effect::Put {
                    key,
                    version: entry.version(),
                    value: bytes
                        .next()
                        .expect("one read per entry")
                        .as_deref()
                        .unwrap_or_else(|| entry.value()),
                    deadline: entry.deadline(),
                },
                None => Effect::Del { key },
            });
        }
        let mut value_ats = Vec::new();
        let shifts = blocks::append_records(&mut chunk, placed.then_some(offset), |chunk| {
            format::write_prepare_locating(chunk, share.txn, &effects, &mut |i, at| {
                value_ats.push((i, at))
            })
        });
        if values.is_some() {
            for (i, at) in value_ats {
                let (Some(entry), Effect::Put { value, .. }) = (&share.states[i].1, &effects[i])
                else {
                    continue;
                };
                let at = offset + shifts.moved(at) as u64;
                prepared_located.push((entry.clone(), at, crc32fast::hash(value)));
            }
        }
        write_when_full(file, &mut chunk, &mut offset, epoch, failpoint, progress).await?;
    }
    format::stamp(&mut chunk, epoch);
    let len = write_chunk(file, &mut chunk, offset, failpoint).await?;
    offset += len;
    progress(len)?;
    Ok(WrittenSnapshot {
        len: offset,
        puts_end,
        located,
        prepared_located,
    })
}

/// Appends `entry`'s PUT record (PUTX with a deadline) holding `value` to
/// `chunk`, placed in blocks if `placed_at` is the file offset of
/// `chunk[0]` (`blocks::append_records`); returns where in `chunk` the
/// value's bytes start.
pub(super) fn append_put(
    chunk: &mut Vec<u8>,
    placed_at: Option<u64>,
    entry: &SnapshotEntry,
    value: &[u8],
) -> usize {
    let put = Effect::Put {
        key: entry.key(),
        version: entry.version(),
        value,
        deadline: entry.deadline(),
    };
    let mut at = None;
    let shifts = blocks::append_records(chunk, placed_at, |chunk| {
        at = format::write_effect_locating(chunk, &put);
    });
    shifts.moved(at.expect("a PUT record holds a value"))
}

/// The most bytes one read of neighbouring values covers.
const SPAN_BYTES: u64 = 4 << 20;
/// Span reads in flight at once.
const SPANS_IN_FLIGHT: usize = 4;
/// Bytes of values read per batch (a batch's values are in memory together
/// until they are written): the spans in flight, filled.
const BATCH_BYTES: u64 = SPANS_IN_FLIGHT as u64 * SPAN_BYTES;

/// The snapshot's entries in the order their values lie on disk: those
/// holding their values first, then by (file, offset). Sorts compact
/// (position, index) pairs, not the entries.
fn disk_order(entries: &[SnapshotEntry]) -> Vec<u32> {
    let mut keyed: Vec<(u32, u64, u32)> = entries
        .iter()
        .enumerate()
        .map(|(i, entry)| match entry.location() {
            None => (0, 0, i as u32),
            Some(at) => (at.file.wrapping_add(1).max(1), at.offset, i as u32),
        })
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, _, i)| i).collect()
}

/// The values of `entries` (in disk order) that are on disk, read from
/// `values`: runs of neighbouring values of one file in single reads of up
/// to [`SPAN_BYTES`], [`SPANS_IN_FLIGHT`] at a time; a value that is alone,
/// larger than a span, or in a span that does not lie in one piece of one
/// file (`ValueFiles::locate_span`) is read on its own. Every value is
/// read with what checks it (`values::WantedValue`: its whole PUT record,
/// so a run starts at its first record's start) and checked. None for an
/// entry holding its value.
async fn read_in_spans(
    values: Option<&LogWriter>,
    entries: &[&SnapshotEntry],
) -> std::io::Result<Vec<Option<Vec<u8>>>> {
    let Some(log) = values else {
        return Ok(vec![None; entries.len()]);
    };
    let mut out: Vec<Option<Vec<u8>>> = vec![None; entries.len()];
    // Spans: (file, start, end, the entries' positions in `entries`).
    let mut spans: Vec<(u32, u64, u64, Vec<usize>)> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let Some(wanted) = WantedValue::of(entry) else {
            continue;
        };
        let (at, end) = (wanted.read_start(), wanted.read_end());
        match spans.last_mut() {
            Some((file, start, span_end, members))
                if *file == wanted.location.file && at >= *start && end - *start <= SPAN_BYTES =>
            {
                *span_end = (*span_end).max(end);
                members.push(i);
            }
            _ => spans.push((wanted.location.file, at, end, vec![i])),
        }
    }
    for group in spans.chunks(SPANS_IN_FLIGHT) {
        let reads = group.iter().map(|(file, start, end, members)| async move {
            let whole = match members.len() {
                1 => None,
                _ => log.read_span(*file, *start, end - start).await,
            };
            match whole {
                Some(Ok(read)) => Ok((members, Some((*start, read)), Vec::new())),
                Some(Err(e)) => Err(e),
                None => {
                    // One at a time: alone, or not in one piece of one file.
                    let mut each = Vec::with_capacity(members.len());
                    for &i in members.iter() {
                        let wanted = WantedValue::of(entries[i]).expect("a member is on disk");
                        each.push(log.read_value(wanted).await?);
                    }
                    Ok((members, None, each))
                }
            }
        });
        for read in super::values::join_all(reads.collect()).await {
            let (members, span, each) = read?;
            match span {
                Some((start, bytes)) => {
                    for &i in members.iter() {
                        let wanted = WantedValue::of(entries[i]).expect("a member is on disk");
                        let from = (wanted.read_start() - start) as usize;
                        let read = &bytes[from..from + wanted.read_len()];
                        out[i] = Some(wanted.check(read)?.to_vec());
                    }
                }
                None => {
                    for (&i, value) in members.iter().zip(each) {
                        out[i] = Some(value);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The values of `entries` that are on disk, read from `values` together
/// (None for an entry holding its value).
async fn read_values(
    values: Option<&LogWriter>,
    entries: &[SnapshotEntry],
) -> std::io::Result<Vec<Option<Vec<u8>>>> {
    let Some(log) = values else {
        return Ok(vec![None; entries.len()]);
    };
    let reads = entries.iter().map(|entry| async move {
        match WantedValue::of(entry) {
            Some(wanted) => log.read_value(wanted).await.map(Some),
            None => Ok(None),
        }
    });
    super::values::join_all(reads.collect())
        .await
        .into_iter()
        .collect()
}

/// Once `chunk` holds [`CHUNK_BYTES`], writes it at `offset` (moved on past
/// it), reports the bytes to `progress`, and lets requests run.
pub(super) async fn write_when_full(
    file: &glommio::io::BufferedFile,
    chunk: &mut Vec<u8>,
    offset: &mut u64,
    epoch: u64,
    failpoint: (&str, Option<usize>),
    progress: &mut dyn FnMut(u64) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if chunk.len() < CHUNK_BYTES {
        return Ok(());
    }
    format::stamp(chunk, epoch);
    let len = write_chunk(file, chunk, *offset, failpoint).await?;
    *offset += len;
    progress(len)?;
    between_chunks(failpoint.1).await;
    Ok(())
}

pub(super) async fn write_chunk(
    file: &glommio::io::BufferedFile,
    chunk: &mut Vec<u8>,
    offset: u64,
    (failpoint, scope): (&str, Option<usize>),
) -> std::io::Result<u64> {
    if chunk.is_empty() {
        return Ok(0);
    }
    failpoint::check(failpoint, scope)?;
    let len = chunk.len();
    // A blocking `pwrite` into the page cache, as the log writer's rounds
    // are written: through glommio's ring its completion would wait for the
    // executor's next poll, up to its preemption period on a busy shard (see
    // the module doc).
    super::file_io::pwrite_all(file, chunk, offset)?;
    chunk.clear();
    Ok(len as u64)
}

/// Lets the requests waiting to run go first before the writer goes on: a
/// chunk is written without suspending. The writer runs in a task queue of
/// its own (`server::compactor`), so it yields that queue, not only its
/// task: a task alone in its queue that merely yields is run again at once,
/// and would hold the shard until glommio's preemption period is over.
async fn between_chunks(scope: Option<usize>) {
    // Tests hold the writer here to stand for a compaction that cannot keep
    // up (`log::pacing`).
    failpoint::hold_while_armed("snapshot::chunk_written", scope, &"a snapshot writer").await;
    glommio::executor().yield_task_queue_now().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_snapshot_reads_values_in_the_order_they_lie_on_disk() {
        let at = |file, offset| Location {
            file,
            offset,
            len: 10,
            check: ValueCheck::Record {
                with_deadline: false,
            },
        };
        let entries = vec![
            SnapshotEntry::on_disk(b"c", at(2, 50), 1, None),
            SnapshotEntry::on_disk(b"a", at(1, 900), 1, None),
            SnapshotEntry::new(b"inline", b"v", 1),
            SnapshotEntry::on_disk(b"b", at(2, 10), 1, None),
            SnapshotEntry::on_disk(b"d", at(1, 5), 1, None),
        ];
        let keys: Vec<&[u8]> = disk_order(&entries)
            .into_iter()
            .map(|i| entries[i as usize].key())
            .collect();
        assert_eq!(keys, [&b"inline"[..], b"d", b"a", b"b", b"c"]);
    }

    #[test]
    fn snapshot_bytes_is_the_size_of_the_put_records_of_the_keys_and_values() {
        let entries: [(&[u8], &[u8], u64); 3] = [
            (b"a", b"\xa1x", 1),
            (b"longer-key", &[7; 9000], 300),
            (b"", b"", u64::MAX),
        ];
        let mut records = Vec::new();
        for (key, value, version) in entries {
            let put = Effect::Put {
                key,
                version,
                value,
                deadline: None,
            };
            format::write_effect(&mut records, &put);
        }
        let key_bytes = entries.iter().map(|e| e.0.len() as u64).sum();
        let value_bytes = entries.iter().map(|e| e.1.len() as u64).sum();
        assert_eq!(
            snapshot_bytes(3, key_bytes, value_bytes),
            records.len() as u64
        );
    }
}
