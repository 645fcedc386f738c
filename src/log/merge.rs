//! The disk engine's space reclamation: the sealed segments (`log::segments`)
//! that hold the least live data are rewritten, a few at a time, into one new
//! segment holding only what is still needed, and deleted. The log then stays
//! within about twice its live data however often keys are overwritten,
//! without rewriting the whole log and without stopping the writes: the
//! active file is never touched.
//!
//! # What a merge writes
//!
//! The inputs S (sealed segments, in log order) are read front to back,
//! record by record, and a record's key is judged by the table's committed
//! state (a key a cross-shard batch holds counts as it was before the batch:
//! [`MergeView`]):
//!
//! - A PUT (alone, in a BATCH or in a decided PREPARE) whose version is the
//!   key's committed version, or an EXPIRE that set its committed deadline:
//!   the key's committed entry is written as a PUT (PUTX with a deadline).
//! - A record of a key that is absent now: a DEL is written, unless S is a
//!   prefix of the log (its oldest segments), when no older record of the key
//!   remains that it would have to hide.
//! - A COMMIT still needed by a participant is copied. A DECIDE is dropped
//!   when its PREPARE is in S too (the batch's effects are judged above) or
//!   S is a prefix. A DECIDE whose PREPARE is in an older segment can be
//!   neither dropped nor copied: without it, replay finds the PREPARE
//!   undecided and settles it at the end by the coordinator's COMMIT — a
//!   committed batch whose COMMIT is gone would be undone, one whose COMMIT
//!   remains applied after later writes of its keys; copied, it would apply
//!   the batch after the output's restated later writes. The merge gives up
//!   with [`MergeError::NeedsOlder`], and is retried with the segment before
//!   that input added.
//! - A PREPARE of a batch still undecided: the merge gives up
//!   ([`MergeError::Busy`]) and is retried later. It happens only when a roll
//!   came between a batch's PREPARE and its DECIDE.
//!
//! The output takes the newest input's place (its name), so it replays after
//! every older record. That is correct because everything it writes is the
//! key's state now: a record of the key in a later file re-establishes the
//! same state, and any later write replaces it. A prefix merge's output is
//! flagged BASE: after a crash, recovery deletes the older inputs before
//! replaying (their dropped tombstones would let deleted keys back).
//! A crash before the output is renamed leaves the inputs (the `.merge`
//! file is removed at start); after it, leftover older inputs of a
//! non-prefix merge replay harmlessly before the output, which restates
//! every key they could change.
//!
//! # Steps ([`write`], then [`install`])
//!
//! 1. Write `<newest input>.merge` in chunks, yielding between them, reading
//!    the inputs through the shard's ring (as compaction does); fdatasync it.
//! 2. Rename it over the newest input (atomic), sync the directory.
//! 3. The caller registers it for reads (`LogWriter::install_merge`), writes
//!    its hint file (`log::hint`), moves the table's entries into it
//!    (`Table::relocate`), deletes the older inputs, and closes the inputs'
//!    files once nothing points into them.
//!
//! # Which segments ([`choose`])
//!
//! The table counts, per file, the bytes of the records its live values take
//! (`table::file_bytes`), scaled by how much larger records are on disk
//! (padding in blocks: the last merge's output against its records). Sealed
//! segments under [`MERGE_BELOW_LIVE_PERCENT`] live (`--merge-live-percent`) are merged, the emptiest
//! first, up to [`MERGE_INPUT_BYTES`] of input at a time.

use super::compaction::{append_put, write_chunk, write_when_full, LiveScale};
use super::format::{self, Decoded, Effect, FileStart, Framing, Record};
use super::values::WantedValue;
use super::writer::SealedSegment;
use super::{blocks, file_io, LogWriter};
use crate::entry::Entry;
use crate::failpoint;
use crate::ids::TxnId;
use glommio::io::BufferedFile;
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// The default `--merge-live-percent`: a sealed segment whose live data is
/// under this share of its size is merged. The directory then stays under
/// about 100 / this times the live data, and rewriting a segment frees at
/// least as much as it writes.
pub const MERGE_BELOW_LIVE_PERCENT: u64 = 50;
/// The highest `--merge-live-percent`: above it, merges would rewrite
/// mostly live data to free little.
pub const MAX_MERGE_LIVE_PERCENT: u64 = 80;
/// The most bytes of input one merge takes (at least one segment).
pub const MERGE_INPUT_BYTES: u64 = 256 << 20;
/// Bytes of an input read at a time.
const READ_BYTES: u64 = 4 << 20;

/// What a merge asks of the shard about a key or a batch.
pub trait MergeView {
    /// The key's committed entry (a key a prepared batch holds: as it was
    /// before the batch), expired or not; None if the key is absent.
    fn committed(&self, key: &[u8]) -> Option<Entry>;
    /// Whether cross-shard batch `txn` is prepared here and undecided.
    fn is_prepared(&self, txn: TxnId) -> bool;
    /// Whether this shard coordinates `txn` and still needs its COMMIT.
    fn commit_needed(&self, txn: TxnId) -> bool;
}

/// Why a merge wrote nothing (its partial output is removed).
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("batch {0:?} is still prepared in a segment to merge; retrying later")]
    Busy(TxnId),
    #[error("a batch decided in segment {0} was prepared in an older segment")]
    NeedsOlder(u32),
    #[error("{0}")]
    Failed(#[from] io::Error),
}

/// The segments one merge rewrites, in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergePlan {
    pub inputs: Vec<SealedSegment>,
    /// The inputs are the log's oldest segments, all of them up to the newest
    /// input: no older record of any key remains.
    pub prefix: bool,
}

impl MergePlan {
    /// The plan of merging `sealed[i]` for each `i` of `chosen` (any order).
    pub fn of(sealed: &[SealedSegment], chosen: &[usize]) -> MergePlan {
        let mut chosen: Vec<usize> = chosen.to_vec();
        chosen.sort_unstable();
        chosen.dedup();
        let prefix = chosen.iter().enumerate().all(|(i, &at)| i == at);
        MergePlan {
            inputs: chosen.iter().map(|&i| sealed[i].clone()).collect(),
            prefix,
        }
    }

    /// This plan with the segment before input `number` added (for
    /// [`MergeError::NeedsOlder`]); None if there is none to add.
    pub fn with_older(&self, sealed: &[SealedSegment], number: u32) -> Option<MergePlan> {
        let mut chosen: Vec<usize> = self
            .inputs
            .iter()
            .filter_map(|input| sealed.iter().position(|s| s.number == input.number))
            .collect();
        let at = sealed.iter().position(|s| s.number == number)?;
        let before = (0..at).rev().find(|i| !chosen.contains(i))?;
        chosen.push(before);
        Some(MergePlan::of(sealed, &chosen))
    }
}

/// The sealed segments worth merging now (indices into `sealed`), the
/// emptiest first up to [`MERGE_INPUT_BYTES`]; None if none is under
/// `below_percent` live (`--merge-live-percent`). `live_records` gives a segment's live
/// record bytes (by number), which `scale` turns into bytes on disk.
pub fn choose(
    sealed: &[SealedSegment],
    live_records: impl Fn(u32) -> u64,
    scale: LiveScale,
    floors: &Floors,
    below_percent: u64,
) -> Option<Chosen> {
    let on_disk = |records: u64| match scale.estimated {
        0 => records,
        estimated => {
            let scaled = u128::from(records) * u128::from(scale.measured) / u128::from(estimated);
            u64::try_from(scaled).unwrap_or(u64::MAX).max(records)
        }
    };
    let mut candidates: Vec<(f64, usize, u64)> = sealed
        .iter()
        .enumerate()
        .filter(|(_, s)| s.bytes > 0)
        .map(|(i, s)| {
            let live = on_disk(live_records(s.number)) + floors.of(s.number);
            (live as f64 / s.bytes as f64, i, live)
        })
        .filter(|(share, _, _)| *share * 100.0 < below_percent as f64)
        .collect();
    candidates.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut chosen = Chosen::default();
    let mut bytes = 0;
    for (_, i, live) in candidates {
        if !chosen.segments.is_empty() && bytes + sealed[i].bytes > MERGE_INPUT_BYTES {
            break;
        }
        bytes += sealed[i].bytes;
        chosen.segments.push(i);
        chosen.live_bytes += live;
    }
    (!chosen.segments.is_empty()).then_some(chosen)
}

/// What [`choose`] picked: indices into the sealed segments, and the live
/// bytes on disk it expects them to hold (about what the merge writes).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Chosen {
    pub segments: Vec<usize>,
    pub live_bytes: u64,
}

/// Per merge output still sealed, the bytes of it that the table's
/// per-file counts do not see (`Written::uncounted_bytes`): values kept in
/// memory, and the DELs and COMMITs a merge that is not a prefix carries
/// forward. Without them a segment of tombstones looks empty, and would be
/// merged into itself again and again. Not known after a restart: such a
/// segment is then merged once more, and known again.
#[derive(Debug, Default)]
pub struct Floors {
    by_file: std::collections::HashMap<u32, u64>,
}

impl Floors {
    /// Output `number` holds `bytes` of uncounted records; `inputs` are gone.
    pub fn merged(&mut self, inputs: &[SealedSegment], number: Option<u32>, bytes: u64) {
        for input in inputs {
            self.by_file.remove(&input.number);
        }
        if let Some(number) = number {
            self.by_file.insert(number, bytes);
        }
    }

    /// Forgets every file (a compaction replaced them all).
    pub fn clear(&mut self) {
        self.by_file.clear();
    }

    pub fn of(&self, number: u32) -> u64 {
        self.by_file.get(&number).copied().unwrap_or(0)
    }
}

/// A merge's output, written and synced under its temporary name.
pub struct Written {
    pub temp: PathBuf,
    pub epoch: u64,
    pub len: u64,
    /// Where its PUT records end (its hint covers them: `log::hint`).
    pub puts_end: u64,
    /// Each entry written and its value's file offset in the output.
    pub located: Vec<(Entry, u64)>,
    /// The written entries' PUT records' bytes without padding
    /// (`compaction::snapshot_bytes`), against which `puts_end` measures it.
    pub records_estimate: u64,
    /// Bytes of the output the table's per-file counts do not see: PUTs of
    /// values kept in memory, DELs, COMMITs ([`Floors`]).
    pub uncounted_bytes: u64,
}

/// The temporary file a merge into `newest` writes.
pub fn temp_path(newest: &Path) -> PathBuf {
    newest.with_extension("seg.merge")
}

/// Writes the merge of `plan` (step 1 of the module doc). On failure the
/// partial output is removed.
pub async fn write(
    log: &LogWriter,
    plan: &MergePlan,
    view: &dyn MergeView,
    progress: &dyn Fn(u64),
) -> Result<Written, MergeError> {
    let newest = plan.inputs.last().ok_or_else(|| {
        MergeError::Failed(io::Error::other("a merge needs at least one segment"))
    })?;
    let temp = temp_path(&newest.path);
    let written = write_output(log, plan, view, &temp, progress).await;
    if written.is_err() {
        match std::fs::remove_file(&temp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                tracing::error!("cannot remove {}: {e}", temp.display())
            }
            _ => {}
        }
    }
    written
}

/// Step 2 of the module doc: the output replaces the newest input under its
/// name (its stale hint removed first), durably. An error before the rename
/// leaves the inputs as they were (the caller removes the output); after it
/// (`Ok(false)`: the directory sync failed), the output is in place but the
/// older inputs must stay until a later sync.
pub fn install(written: &Written, plan: &MergePlan, shard: usize) -> io::Result<bool> {
    let newest = &plan.inputs.last().expect("a plan has inputs").path;
    let scope = Some(shard);
    failpoint::check("merge::rename", scope)?;
    super::hint::remove(newest)?;
    std::fs::rename(&written.temp, newest)?;
    let synced = failpoint::check("merge::dir_fsync", scope)
        .and_then(|()| super::segments::sync_dir_of(newest));
    if let Err(e) = &synced {
        tracing::error!(
            shard,
            "merged into {}, but syncing its directory failed ({e}); the older merged segments \
             are left on disk, which a restart replays harmlessly (or deletes, after a BASE)",
            newest.display()
        );
    }
    Ok(synced.is_ok())
}

/// Deletes the inputs but the newest (which the output replaced), or every
/// input if the output is `empty` (it holds nothing: it is not installed),
/// oldest first, and syncs the directory. Oldest first: a crash in between
/// leaves the newest inputs, which hold the DELs of the keys the older ones
/// wrote.
pub fn delete_inputs(plan: &MergePlan, empty: bool, shard: usize) -> io::Result<()> {
    let Some((newest, older)) = plan.inputs.split_last() else {
        return Ok(());
    };
    failpoint::check("merge::delete", Some(shard))?;
    let inputs = match empty {
        true => &plan.inputs[..],
        false => older,
    };
    let paths: Vec<PathBuf> = inputs.iter().map(|s| s.path.clone()).collect();
    super::segments::delete(&paths)?;
    super::segments::sync_dir_of(&newest.path)
}

/// Whether `written` holds no record at all: nothing of the inputs is
/// needed, and they are deleted rather than replaced.
pub fn is_empty(written: &Written) -> bool {
    written.len <= format::FILE_HEADER_BYTES as u64
}

/// The output being written: its file, the chunk not yet written, and what
/// is known of it.
struct Output<'a> {
    log: &'a LogWriter,
    file: Rc<BufferedFile>,
    chunk: Vec<u8>,
    /// The file offset of `chunk[0]`.
    offset: u64,
    epoch: u64,
    located: Vec<(Entry, u64)>,
    records_estimate: u64,
    inline_bytes: u64,
}

impl Output<'_> {
    /// Writes `entry` as a PUT (PUTX); its value is `value`, or the entry's
    /// own, or read from where the entry says.
    async fn put(&mut self, entry: Entry, value: Option<&[u8]>) -> io::Result<()> {
        let read;
        let value = match (value, WantedValue::of(&entry)) {
            (Some(value), _) => value,
            (None, Some(wanted)) => {
                read = self.log.read_value(wanted).await?;
                &read[..]
            }
            (None, None) => entry.value(),
        };
        let at = append_put(&mut self.chunk, Some(self.offset), &entry, value);
        let record =
            super::compaction::snapshot_bytes(1, entry.key().len() as u64, value.len() as u64);
        self.records_estimate += record;
        if crate::entry::stays_inline(value.len()) {
            self.inline_bytes += record;
        }
        self.located.push((entry, self.offset + at as u64));
        self.flush_when_full().await
    }

    async fn flush_when_full(&mut self) -> io::Result<()> {
        let log = self.log;
        let mut progress = |_: u64| match log.rewrite_stopped() {
            Some(stopped) => Err(stopped),
            None => Ok(()),
        };
        let failpoint = ("merge::write", Some(log.shard()));
        write_when_full(
            &self.file,
            &mut self.chunk,
            &mut self.offset,
            self.epoch,
            failpoint,
            &mut progress,
        )
        .await
    }
}

/// What the scan of the inputs keeps besides the PUTs it writes at once.
#[derive(Default)]
struct Kept {
    /// Keys written already (a key's state is written once).
    written: HashSet<Box<[u8]>>,
    /// Keys met absent (a DEL each, unless the merge is a prefix).
    absent: HashSet<Box<[u8]>>,
    commits: Vec<TxnId>,
    prepares_seen: HashSet<TxnId>,
}

async fn write_output(
    log: &LogWriter,
    plan: &MergePlan,
    view: &dyn MergeView,
    temp: &Path,
    progress: &dyn Fn(u64),
) -> Result<Written, MergeError> {
    let scope = Some(log.shard());
    failpoint::check("merge::write", scope)?;
    let file = glommio::io::OpenOptions::new()
        .write(true)
        .read(true)
        .create(true)
        .truncate(true)
        .buffered_open(temp)
        .await
        .map_err(io::Error::from)?;
    let epoch = super::new_epoch();
    let flags = match plan.prefix {
        true => format::FLAG_BASE,
        false => 0,
    };
    let mut header = Vec::with_capacity(format::FILE_HEADER_BYTES);
    format::write_file_header_flagged(&mut header, epoch, flags);
    let offset = write_chunk(&file, &mut header, 0, ("merge::write", scope)).await?;
    let mut out = Output {
        log,
        file: Rc::new(file),
        chunk: Vec::with_capacity(READ_BYTES as usize),
        offset,
        epoch,
        located: Vec::new(),
        records_estimate: 0,
        inline_bytes: 0,
    };
    let mut kept = Kept::default();
    for input in &plan.inputs {
        scan(log, input, plan.prefix, view, &mut out, &mut kept, progress).await?;
    }
    // The PUT records end here; the rest is replayed record by record.
    let puts_end = out.offset + out.chunk.len() as u64;
    let mut absent: Vec<&Box<[u8]>> = kept.absent.iter().collect();
    absent.sort_unstable();
    for key in absent {
        // Written since (in the active file, which replays later): no DEL needed.
        if view.committed(key).is_some() {
            continue;
        }
        blocks::append_records(&mut out.chunk, Some(out.offset), |chunk| {
            format::write_effect(chunk, &Effect::Del { key })
        });
        out.flush_when_full().await?;
    }
    for txn in kept.commits.iter().filter(|txn| view.commit_needed(**txn)) {
        blocks::append_records(&mut out.chunk, Some(out.offset), |chunk| {
            format::write_commit(chunk, *txn)
        });
    }
    format::stamp(&mut out.chunk, epoch);
    let last = write_chunk(
        &out.file,
        &mut out.chunk,
        out.offset,
        ("merge::write", scope),
    )
    .await?;
    let len = out.offset + last;
    failpoint::check("merge::sync", scope)?;
    file_io::fdatasync(out.file.clone()).await?;
    Ok(Written {
        temp: temp.to_owned(),
        epoch,
        len,
        puts_end,
        located: out.located,
        records_estimate: out.records_estimate,
        uncounted_bytes: out.inline_bytes + (len - puts_end),
    })
}

/// A key's committed entry to write for a record met in an input, if the
/// record is (or restates) it; None otherwise, and the key noted if absent.
fn judge(
    key: &[u8],
    version: Option<u64>,
    deadline: Option<Option<u64>>,
    prefix: bool,
    view: &dyn MergeView,
    kept: &mut Kept,
) -> Option<Entry> {
    if kept.written.contains(key) {
        return None;
    }
    let Some(entry) = view.committed(key) else {
        if !prefix {
            kept.absent.insert(Box::from(key));
        }
        return None;
    };
    let current = match (version, deadline) {
        (Some(version), _) => entry.version() == version,
        (None, Some(deadline)) => entry.deadline() == deadline,
        (None, None) => false,
    };
    if !current {
        return None;
    }
    kept.written.insert(Box::from(key));
    Some(entry)
}

/// Reads `input` front to back and writes what of it is still needed
/// (the module doc's rules).
async fn scan(
    log: &LogWriter,
    input: &SealedSegment,
    prefix: bool,
    view: &dyn MergeView,
    out: &mut Output<'_>,
    kept: &mut Kept,
    progress: &dyn Fn(u64),
) -> Result<(), MergeError> {
    let damaged = |offset: u64, reason: &str| {
        MergeError::Failed(io::Error::other(format!(
            "{} is damaged at offset {offset} ({reason}); not merged",
            input.path.display()
        )))
    };
    let mut reader = InputReader {
        log,
        input,
        buf: Vec::new(),
        base: 0,
        read_to: 0,
        progress,
    };
    reader.fill(format::FILE_HEADER_BYTES as u64).await?;
    let framing = match format::read_file_header(&reader.buf) {
        FileStart::Header(framing) => framing,
        FileStart::Legacy => Framing::Legacy,
        FileStart::Bad(reason) => return Err(damaged(0, &reason)),
    };
    let mut pos = framing.records_start();
    loop {
        // The entries to write for one record, with where their values are
        // in the buffer when they are the record's own bytes.
        let mut to_write: Vec<(Entry, Option<(usize, usize)>)> = Vec::new();
        let next = match format::decode_at(&reader.buf, pos, framing) {
            Decoded::Record(record, next) => {
                let buf_start = reader.buf.as_ptr() as usize;
                let effects: &[Effect<'_>] = match &record {
                    Record::Effect(effect) => std::slice::from_ref(effect),
                    Record::Batch(effects) => effects,
                    Record::Prepare { txn, effects } => {
                        if view.is_prepared(*txn) {
                            return Err(MergeError::Busy(*txn));
                        }
                        kept.prepares_seen.insert(*txn);
                        effects
                    }
                    Record::Decide { txn, .. } => {
                        if !prefix && !kept.prepares_seen.contains(txn) {
                            return Err(MergeError::NeedsOlder(input.number));
                        }
                        &[]
                    }
                    Record::Commit { txn } => {
                        if !kept.commits.contains(txn) {
                            kept.commits.push(*txn);
                        }
                        &[]
                    }
                    Record::Pad => &[],
                };
                for effect in effects {
                    let (judged, value) = match effect {
                        Effect::Put {
                            key,
                            version,
                            value,
                            ..
                        } => (
                            judge(key, Some(*version), None, prefix, view, kept),
                            Some(value),
                        ),
                        Effect::Del { key } => (judge(key, None, None, prefix, view, kept), None),
                        Effect::Expire { key, deadline } => {
                            (judge(key, None, Some(*deadline), prefix, view, kept), None)
                        }
                    };
                    let Some(entry) = judged else { continue };
                    // The value's own bytes, when the entry points at them.
                    let here = value.and_then(|value| {
                        let at = value.as_ptr() as usize - buf_start;
                        let location = entry.location()?;
                        (location.file == input.number
                            && location.offset == reader.base + at as u64
                            && location.len as usize == value.len())
                        .then_some((at, value.len()))
                    });
                    to_write.push((entry, here));
                }
                next
            }
            Decoded::Incomplete if reader.read_to < input.bytes => {
                pos = reader.advance(pos, framing).await?;
                continue;
            }
            Decoded::Incomplete => return Ok(()),
            Decoded::Damaged(reason) => return Err(damaged(reader.base + pos as u64, &reason)),
        };
        for (entry, here) in to_write {
            let value = here.map(|(at, len)| &reader.buf[at..at + len]);
            out.put(entry, value).await?;
        }
        pos = next;
    }
}

/// An input read in pieces through the shard's ring.
struct InputReader<'a> {
    log: &'a LogWriter,
    input: &'a SealedSegment,
    buf: Vec<u8>,
    /// The file offset of `buf[0]`.
    base: u64,
    /// The file offset read up to.
    read_to: u64,
    /// Told the bytes of each read (the writers' pacing, if any).
    progress: &'a dyn Fn(u64),
}

impl InputReader<'_> {
    /// Reads on until the buffer holds at least `wanted` bytes or the file
    /// ends.
    async fn fill(&mut self, wanted: u64) -> io::Result<()> {
        while (self.buf.len() as u64) < wanted && self.read_to < self.input.bytes {
            let len = READ_BYTES
                .max(wanted - self.buf.len() as u64)
                .min(self.input.bytes - self.read_to);
            let read = match self
                .log
                .read_span(self.input.number, self.read_to, len)
                .await
            {
                Some(read) => read?,
                None => {
                    return Err(io::Error::other(format!(
                        "{} is not open for reading",
                        self.input.path.display()
                    )))
                }
            };
            self.buf.extend_from_slice(&read);
            self.read_to += len;
            (self.progress)(len);
        }
        Ok(())
    }

    /// Drops the buffer before `pos` and reads on, so that the record at
    /// `pos` (incomplete in the buffer) is whole; returns its new position.
    async fn advance(&mut self, pos: usize, framing: Framing) -> io::Result<usize> {
        self.buf.drain(..pos);
        self.base += pos as u64;
        let header = framing.header_bytes();
        let record = match self.buf.len() >= header {
            true => format::frame_bytes(&self.buf, framing) as u64,
            false => header as u64,
        };
        let wanted = (self.buf.len() as u64 + READ_BYTES).max(record);
        self.fill(wanted).await?;
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Router, ShardId};
    use crate::log::segments::{sealed_path, MIN_SEGMENT_BYTES};
    use crate::log::writer::{LogStart, SegmentPlan};
    use crate::log::{shard_log_path, FsyncMode, ShardFiles};
    use crate::table::Table;

    fn segments(sizes: &[u64]) -> Vec<SealedSegment> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &bytes)| SealedSegment {
                number: 10 + i as u32,
                path: PathBuf::from(format!("s{i}")),
                bytes,
            })
            .collect()
    }

    #[test]
    fn the_emptiest_segments_under_half_live_are_chosen_first_up_to_the_budget() {
        let sealed = segments(&[100 << 20, 100 << 20, 100 << 20, 100 << 20]);
        let live = |number: u32| match number {
            10 => 60 << 20,
            11 => 10 << 20,
            12 => 40 << 20,
            _ => 20 << 20,
        };
        let chosen = choose(&sealed, live, LiveScale::default(), &Floors::default(), 50)
            .expect("some are worth it");
        assert_eq!(
            chosen,
            Chosen {
                segments: vec![1, 3],
                live_bytes: 30 << 20
            },
            "emptiest first, 256 MiB of input at most"
        );
        let plan = MergePlan::of(&sealed, &chosen.segments);
        assert!(!plan.prefix);
        assert_eq!(
            plan.inputs.iter().map(|s| s.number).collect::<Vec<_>>(),
            [11, 13]
        );
    }

    #[test]
    fn padding_on_disk_counts_so_a_full_segment_of_padded_records_is_not_chosen() {
        let sealed = segments(&[64 << 20]);
        // Records of under half a block each, one per block.
        let live = |_| 30 << 20;
        assert_eq!(
            choose(&sealed, live, LiveScale::default(), &Floors::default(), 50)
                .map(|chosen| chosen.segments),
            Some(vec![0]),
            "without the scale it looks half empty"
        );
        let scale = LiveScale {
            estimated: 1000,
            measured: 2000,
        };
        assert_eq!(choose(&sealed, live, scale, &Floors::default(), 50), None);
    }

    #[test]
    fn nothing_is_chosen_when_every_segment_is_mostly_live() {
        let sealed = segments(&[1000, 1000]);
        let none = Floors::default();
        assert_eq!(
            choose(&sealed, |_| 600, LiveScale::default(), &none, 50),
            None
        );
        assert_eq!(choose(&[], |_| 0, LiveScale::default(), &none, 50), None);
    }

    #[test]
    fn a_merged_segment_of_tombstones_is_not_merged_again() {
        let sealed = segments(&[1000, 1000]);
        let mut floors = Floors::default();
        assert_eq!(
            choose(&sealed, |_| 0, LiveScale::default(), &floors, 50).map(|c| c.segments),
            Some(vec![0, 1])
        );
        floors.merged(&sealed[..1], Some(11), 990);
        assert_eq!(
            choose(&sealed, |_| 0, LiveScale::default(), &floors, 50).map(|c| c.segments),
            Some(vec![0]),
            "segment 11 is a merge's output of DELs"
        );
    }

    #[test]
    fn a_plan_is_a_prefix_only_if_it_holds_every_segment_up_to_its_newest() {
        let sealed = segments(&[1, 1, 1, 1]);
        assert!(MergePlan::of(&sealed, &[1, 0]).prefix);
        assert!(!MergePlan::of(&sealed, &[0, 2]).prefix);
        let plan = MergePlan::of(&sealed, &[2]);
        let wider = plan.with_older(&sealed, 12).expect("segment 11 is older");
        assert_eq!(
            wider.inputs.iter().map(|s| s.number).collect::<Vec<_>>(),
            [11, 12]
        );
        let widest = wider.with_older(&sealed, 11).expect("segment 10 is older");
        assert!(widest.prefix);
        assert_eq!(widest.with_older(&sealed, 10), None);
    }

    /// Writes a disk engine's log file at `path`: a file header, then the
    /// records `encode` writes, placed in blocks and stamped as its writer
    /// does.
    fn write_log_file(path: &Path, encode: impl FnOnce(&mut Vec<u8>)) {
        let epoch = crate::log::new_epoch();
        let mut file = Vec::new();
        format::write_file_header(&mut file, epoch);
        let start = file.len();
        blocks::append_records(&mut file, Some(0), encode);
        format::stamp(&mut file[start..], epoch);
        std::fs::write(path, file).expect("write a log file");
    }

    fn put<'a>(key: &'a [u8], version: u64, value: &'a [u8]) -> Effect<'a> {
        Effect::Put {
            key,
            version,
            value,
            deadline: None,
        }
    }

    /// The committed state of a recovered shard: every batch is decided.
    struct Recovered<'a>(&'a Table);

    impl MergeView for Recovered<'_> {
        fn committed(&self, key: &[u8]) -> Option<Entry> {
            self.0.prior(key).state().cloned()
        }
        fn is_prepared(&self, _: TxnId) -> bool {
            false
        }
        fn commit_needed(&self, _: TxnId) -> bool {
            false
        }
    }

    /// Shard 0's log writer over the files recovery left, as a shard opens
    /// it with the disk engine (a merge only reads through it).
    async fn open_shard_0(log_dir: &Path, files: &ShardFiles) -> Rc<LogWriter> {
        use glommio::io::DmaFile;
        let active = shard_log_path(log_dir, 0);
        let len = std::fs::metadata(&active).expect("active file").len();
        let file = glommio::io::OpenOptions::new()
            .write(true)
            .buffered_open(&active)
            .await
            .expect("open the active file");
        let start = LogStart {
            len,
            file_size: len,
            epoch: 0,
        };
        let log = LogWriter::new(file, start, FsyncMode::Never, 0);
        let mut sealed = Vec::new();
        for (number, path) in &files.sealed {
            sealed.push((*number, DmaFile::open(path).await.expect("open a segment")));
        }
        let reader = DmaFile::open(&active).await.expect("open the active file");
        log.keep_values(crate::log::values::ValueFiles::with_sealed(
            files.active,
            reader,
            sealed,
        ));
        log.roll_segments(SegmentPlan {
            active,
            segment_bytes: MIN_SEGMENT_BYTES,
            next_seq: files.next_seq,
            sealed: files.sealed.iter().map(|(_, p)| p.clone()).collect(),
            sealed_bytes: 0,
        });
        log
    }

    /// Why a DECIDE whose PREPARE is in an older segment outside the merge
    /// makes the merge give up ([`MergeError::NeedsOlder`]) rather than drop
    /// it. Shard 0 logged cross-shard batches T1 and T2 (coordinated by
    /// shard 1): their PREPAREs in segment A, their DECIDEs (commit) in the
    /// next segment B, then a write of T2's key `k2`. Shard 1's log still
    /// holds T2's COMMIT but no longer T1's (a rewrite of its log dropped it
    /// once every participant had decided). Were B merged alone, its
    /// DECIDEs dropped, recovery would find both PREPAREs in A undecided
    /// and resolve them by the COMMITs at the end of the replay:
    /// - T1, with no COMMIT left, as aborted: its committed, acknowledged
    ///   write of `k1` is lost (`k1` goes back to version 1, before T1);
    /// - T2, committed, applied after every file: its old `k2` (version 4)
    ///   replaces the later write (version 5) that the merge output
    ///   restated.
    ///
    /// (A dropped DECIDE of an aborted batch would be harmless: with no
    /// COMMIT it resolves as aborted again.)
    #[test]
    fn a_decide_whose_prepare_is_in_an_older_segment_makes_the_merge_take_that_segment_too() {
        let data = tempfile::tempdir().expect("temp dir");
        let log_dir = crate::log::log_dir(data.path());
        std::fs::create_dir_all(&log_dir).expect("mkdir");
        std::fs::write(log_dir.join(crate::log::SHARDS_FILE), "2\n").expect("SHARDS");
        let t1 = TxnId {
            coordinator: ShardId(1),
            seq: 1,
        };
        let t2 = TxnId { seq: 2, ..t1 };
        // Kept on disk (not inline): the merge reads it back from B.
        let big = vec![0xc4; 1000];
        write_log_file(&sealed_path(&log_dir, 0, 0), |out| {
            format::write_effect(out, &put(b"k1", 1, b"\xa6before"));
            format::write_prepare(out, t1, &[put(b"k1", 3, b"\xa2t1")]);
            format::write_prepare(out, t2, &[put(b"k2", 4, b"\xa2t2")]);
        });
        write_log_file(&sealed_path(&log_dir, 0, 1), |out| {
            format::write_decide(out, t1, true);
            format::write_decide(out, t2, true);
            format::write_effect(out, &put(b"k2", 5, &big));
        });
        write_log_file(&shard_log_path(&log_dir, 0), |_| {});
        write_log_file(&shard_log_path(&log_dir, 1), |out| {
            format::write_commit(out, t2)
        });
        let router = Router::new(2);
        let recover = || crate::log::recover(data.path(), &router, false, true).expect("recover");
        // What a replay leaves of k1 and k2: their versions.
        let state = |table: &Table| (table.version(b"k1"), table.version(b"k2"));
        let before = recover();
        assert_eq!(state(&before.tables[0]), (3, 5), "both batches committed");

        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .expect("an executor")
            .run(async move {
                let log = open_shard_0(&log_dir, &before.files[0]).await;
                let view = Recovered(&before.tables[0]);
                let sealed = log.sealed_segments();
                let (a, b) = (sealed[0].number, sealed[1].number);
                let alone = MergePlan::of(&sealed, &[1]);
                assert!(!alone.prefix);
                match write(&log, &alone, &view, &|_| {}).await {
                    Err(MergeError::NeedsOlder(number)) => assert_eq!(number, b),
                    Ok(written) => {
                        install(&written, &alone, 0).expect("install");
                        let after = recover();
                        panic!(
                            "segment {b} was merged without segment {a}, which holds the \
                             PREPAREs its DECIDEs decide: a replay then gives (k1, k2) the \
                             versions {:?}, not (3, 5)",
                            state(&after.tables[0])
                        );
                    }
                    Err(e) => panic!("merging segment {b} alone failed: {e}"),
                }
                assert!(
                    !temp_path(&sealed[1].path).exists(),
                    "the output is removed"
                );

                let wider = alone.with_older(&sealed, b).expect("segment A is older");
                let written = write(&log, &wider, &view, &|_| {})
                    .await
                    .expect("merge segments A and B");
                assert!(install(&written, &wider, 0).expect("install"));
                delete_inputs(&wider, false, 0).expect("delete segment A");
                let after = recover();
                assert_eq!(after.files[0].sealed.len(), 1, "A and B are one segment");
                assert_eq!(state(&after.tables[0]), (3, 5), "a replay after the merge");
            });
    }
}
