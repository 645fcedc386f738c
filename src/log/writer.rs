//! A shard's log writer: appends records and tells each request when its
//! records are safe, with a pipelined group commit.
//!
//! Requests append their records to an in-memory buffer ([`LogWriter::append`])
//! and get back the log position just past them. In `always` mode one flusher
//! task writes the whole buffer with one `pwrite` and then waits for one
//! `fdatasync`, which runs off the shard's thread (`file_io`): while it is in
//! flight the shard keeps reading sockets, executing requests and appending,
//! and everything appended meanwhile goes out in the next write and sync. So
//! at most one sync is in flight per shard, it never stalls the shard, and one
//! sync covers every request that arrived while the previous one ran.
//! [`LogWriter::durable`] resolves when a position is safe for the mode:
//!
//! | mode       | a reply waits until its records are… | survives          |
//! |------------|---------------------------------------|-------------------|
//! | `always`   | written and fdatasync-ed              | kill -9, power loss |
//! | `interval` | written (a timer fdatasyncs every N ms) | kill -9          |
//! | `never`    | written (the kernel syncs when it likes) | kill -9         |
//!
//! The file is allocated ahead of the write position (by [`PREALLOCATE_BYTES`]
//! at a time), so an append does not grow the file and its sync flushes data, not
//! the file's size. The allocated space reads as zeros, which recovery takes
//! for the end of the log.
//!
//! With the disk engine the writer also *rolls* the log into segments
//! (`log::segments`): between rounds, once the active file passes the
//! segment size and no compaction holds rolls back ([`LogWriter::hold_rolls`]),
//! the flusher syncs the active file, seals it under its segment name and
//! continues in a new active file. Positions stay logical (`file_origin`):
//! everything before the roll is synced before anything is written to the
//! new file, so `durable` keeps its meaning. A failed roll poisons the log.
//!
//! A failed write or sync *poisons* the log until restart: every waiter, now
//! and later, gets [`LogPoisoned`], and no reply claims a write is safe. The
//! in-memory table may hold writes that never reached disk; they are answered
//! IOERR, never acknowledged.

use super::blocks;
use super::file_io;
use super::sync_stats::SyncStats;
use super::tail_copy::RecordCopy;
use super::values::{self, BlockReader, ReadHandle, ValueFiles, WantedValue};
use super::{format, segments, FsyncMode};
use crate::entry::{Entry, Location, ValueCheck};
use crate::failpoint;
use crate::notify::Notify;
use glommio::io::{BufferedFile, DmaFile};
use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How much of the file is allocated ahead of the write position at a time: a
/// quarter of the file's size, within these bounds. One sync per this many
/// bytes of log flushes a size change; the others flush data only. Small logs
/// take little space; large ones extend rarely.
pub const PREALLOCATE_BYTES: std::ops::RangeInclusive<u64> = (1 << 20)..=(8 << 20);
/// Syncs a roll makes while the writes go on, before it pauses them, until
/// at most [`ROLL_PAUSED_SYNC_BYTES`] are left for the paused sync.
const ROLL_PRESYNCS: usize = 3;
const ROLL_PAUSED_SYNC_BYTES: u64 = 1 << 20;
/// A round's buffer larger than this (a huge value went through) is freed
/// rather than kept for the next round.
const SPARE_MAX_BYTES: usize = 4 << 20;

/// Where a writer starts: the log's intact length, the file's size (which may
/// be larger: allocated ahead, zeros), and the file's epoch.
#[derive(Debug, Clone, Copy)]
pub struct LogStart {
    pub len: u64,
    pub file_size: u64,
    pub epoch: u64,
}

/// The log failed; nothing more is acknowledged until restart.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the shard's log is poisoned after a failed write or sync ({0}); restart the server")]
pub struct LogPoisoned(pub String);

/// How a disk engine's writer rolls its log into segments (`log::segments`).
#[derive(Debug, Clone)]
pub struct SegmentPlan {
    /// The active file, `log/shard-<i>.log`.
    pub active: PathBuf,
    /// The size past which the active file is sealed.
    pub segment_bytes: u64,
    /// The sequence number of the next sealed segment.
    pub next_seq: u64,
    /// The sealed segments, oldest first, and their bytes in all.
    pub sealed: Vec<PathBuf>,
    pub sealed_bytes: u64,
}

/// A sealed segment as a merge sees it (`log::merge`): the number its
/// entries carry, its path, and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSegment {
    pub number: u32,
    pub path: PathBuf,
    pub bytes: u64,
}

/// Rolls are held back while this lives ([`LogWriter::hold_rolls`]).
pub struct RollsHeld<'a>(&'a LogWriter);

impl Drop for RollsHeld<'_> {
    fn drop(&mut self) {
        self.0.rolls_held.set(self.0.rolls_held.get() - 1);
        self.0.work.notify_all();
    }
}

/// Called with the cause when the log is poisoned (see [`LogWriter::on_poison`]).
type PoisonObserver = Box<dyn Fn(&LogPoisoned)>;

/// A value appended to the log and not yet written: its entry, and where its
/// bytes start in the pending records.
pub struct PendingValue {
    pub entry: Entry,
    pub at: usize,
    /// How reads will check it: by its own PUT or PUTX record, or (one of
    /// several values in a record) by a CRC-32 taken when it is written.
    pub check: PendingCheck,
}

/// How a pending value will be checked when read back (`entry::ValueCheck`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingCheck {
    Record { with_deadline: bool },
    Crc,
}

pub struct LogWriter {
    /// The current file; compaction replaces it (see [`LogWriter::switch_file`]).
    file: RefCell<Rc<BufferedFile>>,
    /// The current file's epoch: records are stamped with it as they are
    /// written into the file (`format::stamp`), not when appended, because
    /// compaction may switch files in between.
    epoch: Cell<u64>,
    mode: FsyncMode,
    /// Positions are logical (they only grow); the current file holds logical
    /// position `p` at byte `p - file_origin`, so compaction can shrink the file
    /// without moving anyone's position.
    file_origin: Cell<i64>,
    /// Set while compaction swaps files: the flusher leaves pending records alone.
    paused: Cell<bool>,
    /// Records appended and not yet handed to the flusher.
    pending: RefCell<Vec<u8>>,
    /// The buffer of the last round written, empty, to take `pending`'s place.
    spare: RefCell<Vec<u8>>,
    /// Log position after everything appended.
    appended: Cell<u64>,
    /// Log position after everything written to the file.
    written: Cell<u64>,
    /// Log position after everything known to be on stable storage.
    synced: Cell<u64>,
    /// File offset up to which the current file is allocated (its size).
    allocated: Cell<u64>,
    /// Records written and not yet synced, for the records-per-sync figure.
    unsynced_records: Cell<u64>,
    sync_stats: RefCell<SyncStats>,
    poisoned: RefCell<Option<LogPoisoned>>,
    /// An fdatasync failed: no later sync can vouch for what it covered.
    sync_failed: Cell<bool>,
    /// Wakes the flusher (something to write) and waiters (progress).
    work: Notify,
    progress: Notify,
    syncs: Cell<u64>,
    /// The shard this log belongs to: the scope of its failpoints.
    shard: usize,
    /// Told when the log is poisoned, so the rest of the server can know
    /// (`/health` on any shard); set by [`LogWriter::on_poison`].
    poison_observer: RefCell<Option<PoisonObserver>>,
    /// The disk engine's log files, for reading values back (`values`).
    value_files: RefCell<Option<ValueFiles>>,
    /// Values in `pending`, to be located once written (disk engine).
    pending_values: RefCell<Vec<PendingValue>>,
    /// Values written, with where they are: the shard points their keys'
    /// entries there ([`LogWriter::take_written_values`]).
    written_values: RefCell<Vec<(Entry, Location)>>,
    /// The shard's own ring, which reads values for requests when set
    /// ([`LogWriter::read_through`]).
    block_reader: RefCell<Option<Rc<dyn BlockReader>>>,
    /// The disk engine's segments; None: the log never rolls.
    segments: RefCell<Option<SegmentPlan>>,
    /// Sealed segments a compaction's snapshot superseded, to be deleted
    /// once it is the log for good ([`LogWriter::take_superseded_segments`]).
    superseded: RefCell<Vec<PathBuf>>,
    /// Compactions holding rolls back ([`LogWriter::hold_rolls`]).
    rolls_held: Cell<u32>,
    /// A roll is under way: a compaction switch waits for it.
    rolling: Cell<bool>,
    /// The shard is shutting down: compaction and merges stop at their
    /// next chunk ([`LogWriter::stop_rewrites`]).
    rewrites_stopped: Cell<bool>,
}

impl LogWriter {
    /// A writer appending to `file` after its intact log.
    pub fn new(
        file: BufferedFile,
        start: LogStart,
        mode: FsyncMode,
        shard: usize,
    ) -> Rc<LogWriter> {
        let len = start.len;
        Rc::new(LogWriter {
            file: RefCell::new(Rc::new(file)),
            epoch: Cell::new(start.epoch),
            mode,
            file_origin: Cell::new(0),
            paused: Cell::new(false),
            pending: RefCell::new(Vec::new()),
            spare: RefCell::new(Vec::new()),
            appended: Cell::new(len),
            written: Cell::new(len),
            synced: Cell::new(len),
            allocated: Cell::new(start.file_size.max(len)),
            unsynced_records: Cell::new(0),
            sync_stats: RefCell::new(SyncStats::default()),
            poisoned: RefCell::new(None),
            sync_failed: Cell::new(false),
            work: Notify::default(),
            progress: Notify::default(),
            syncs: Cell::new(0),
            shard,
            poison_observer: RefCell::new(None),
            value_files: RefCell::new(None),
            pending_values: RefCell::new(Vec::new()),
            written_values: RefCell::new(Vec::new()),
            block_reader: RefCell::new(None),
            segments: RefCell::new(None),
            superseded: RefCell::new(Vec::new()),
            rolls_held: Cell::new(0),
            rolling: Cell::new(false),
            rewrites_stopped: Cell::new(false),
        })
    }

    /// Disk engine: rolls the log into segments by `plan` from now on.
    pub fn roll_segments(&self, plan: SegmentPlan) {
        *self.segments.borrow_mut() = Some(plan);
    }

    /// Holds rolls back until the returned guard is dropped: a compaction
    /// takes its cut and copies its tail in the active file, and deletes the
    /// sealed segments its snapshot superseded.
    pub fn hold_rolls(&self) -> RollsHeld<'_> {
        self.rolls_held.set(self.rolls_held.get() + 1);
        RollsHeld(self)
    }

    /// The sealed segments the last compaction switch superseded, not yet
    /// deleted (the caller deletes them once the switch is durable).
    pub fn take_superseded_segments(&self) -> Vec<PathBuf> {
        std::mem::take(&mut *self.superseded.borrow_mut())
    }

    /// The sealed segments, oldest first (none with the log engine, or if
    /// a size cannot be read: the merge then waits for the next check).
    pub fn sealed_segments(&self) -> Vec<SealedSegment> {
        let paths = match self.segments.borrow().as_ref() {
            Some(plan) => plan.sealed.clone(),
            None => return Vec::new(),
        };
        let numbers = self
            .value_files
            .borrow()
            .as_ref()
            .map_or_else(Vec::new, ValueFiles::sealed_numbers);
        if numbers.len() != paths.len() {
            return Vec::new();
        }
        let mut sealed = Vec::with_capacity(paths.len());
        for (number, path) in numbers.into_iter().zip(paths) {
            let Ok(meta) = std::fs::metadata(&path) else {
                return Vec::new();
            };
            sealed.push(SealedSegment {
                number,
                path,
                bytes: meta.len(),
            });
        }
        sealed
    }

    /// A merge replaced the sealed segments `inputs` (oldest first) with
    /// `output` (`output_bytes` long), which took the newest input's name
    /// and place, or with nothing (every input deleted); returns the number
    /// the output's values are read under.
    pub fn install_merge(
        &self,
        inputs: &[SealedSegment],
        output: Option<DmaFile>,
        output_bytes: u64,
    ) -> Option<u32> {
        let numbers: Vec<u32> = inputs.iter().map(|s| s.number).collect();
        let kept = output
            .as_ref()
            .and(inputs.last())
            .map(|newest| &newest.path);
        let number = self
            .value_files
            .borrow_mut()
            .as_mut()
            .and_then(|files| files.merged(&numbers, output));
        if let Some(plan) = self.segments.borrow_mut().as_mut() {
            let gone: Vec<&PathBuf> = inputs
                .iter()
                .map(|s| &s.path)
                .filter(|path| Some(*path) != kept)
                .collect();
            plan.sealed.retain(|path| !gone.contains(&path));
            let input_bytes: u64 = inputs.iter().map(|s| s.bytes).sum();
            plan.sealed_bytes = (plan.sealed_bytes + output_bytes).saturating_sub(input_bytes);
        }
        number
    }

    /// Disk engine: values are read back from the log's files, the current
    /// one being `files`' current (see `values`).
    pub fn keep_values(&self, files: ValueFiles) {
        *self.value_files.borrow_mut() = Some(files);
    }

    /// Whether the log is the disk engine's, whose values are read back.
    pub fn keeps_values(&self) -> bool {
        self.value_files.borrow().is_some()
    }

    /// Reads values through `ring` (the shard's own io_uring) from now on
    /// instead of glommio's (`values::BlockReader` says why).
    pub fn read_through(&self, ring: Rc<dyn BlockReader>) {
        *self.block_reader.borrow_mut() = Some(ring);
    }

    /// Reads the on-disk value `wanted` and checks it (disk engine; see
    /// `values::WantedValue`).
    pub async fn read_value(&self, wanted: WantedValue<'_>) -> std::io::Result<Vec<u8>> {
        let (file, offset) = self.locate_read(wanted)?;
        failpoint::check("log::read_value", Some(self.shard))?;
        let ring = self.block_reader.borrow().clone();
        let read = values::read_exact(&file, offset, wanted.read_len(), ring.as_deref()).await?;
        Ok(wanted.check(&read)?.to_vec())
    }

    /// The file and offset a read of `wanted` starts at: where its value
    /// is now, less the bytes read before it (they lie in the same file:
    /// a value and its record are never apart).
    fn locate_read(&self, wanted: WantedValue<'_>) -> std::io::Result<(ReadHandle, u64)> {
        let files = self.value_files.borrow();
        let Some(files) = files.as_ref() else {
            return Err(std::io::Error::other("this log keeps no values"));
        };
        let (file, value_at) = files.locate(wanted.location)?;
        let offset = value_at.saturating_sub(wanted.lead());
        Ok((
            self.read_handle(files, file, offset, wanted.read_len() as u64),
            offset,
        ))
    }

    /// How to read `len` bytes at `offset` of `file`: through the writer's
    /// buffered handle if they are in the active file past its last sync
    /// (dirty pages, which a direct read would have the kernel write back
    /// first: `values` says why not), else directly.
    fn read_handle(
        &self,
        files: &ValueFiles,
        file: Rc<DmaFile>,
        offset: u64,
        len: u64,
    ) -> ReadHandle {
        let synced_to = self.synced.get() as i64 - self.file_origin.get();
        let unsynced = files.is_current(&file) && (offset + len) as i64 > synced_to;
        match unsynced {
            true => ReadHandle::Buffered(self.file.borrow().clone()),
            false => ReadHandle::Direct(file),
        }
    }

    /// The number of the active value file (after a compaction switch: the
    /// snapshot's).
    pub fn current_value_file(&self) -> u32 {
        self.value_files
            .borrow()
            .as_ref()
            .map_or(0, ValueFiles::current_number)
    }

    /// Reads `len` bytes from `offset` of value file `file` in one read (a
    /// compaction reading many neighbouring values); None if they are not
    /// in one piece of one file (see `ValueFiles::locate_span`).
    pub async fn read_span(
        &self,
        file: u32,
        offset: u64,
        len: u64,
    ) -> Option<std::io::Result<values::ReadBytes>> {
        let (handle, at) = {
            let files = self.value_files.borrow();
            let files = files.as_ref()?;
            let (dma, at) = files.locate_span(file, offset, len)?;
            (self.read_handle(files, dma, at, len), at)
        };
        if let Err(e) = failpoint::check("log::read_value", Some(self.shard)) {
            return Some(Err(e));
        }
        let ring = self.block_reader.borrow().clone();
        Some(values::read_exact(&handle, at, len as usize, ring.as_deref()).await)
    }

    /// Reads the on-disk value `wanted` at once, blocking this thread (see
    /// `values::read_blocking` for the one case that needs it), and checks
    /// it.
    pub fn read_value_blocking(&self, wanted: WantedValue<'_>) -> std::io::Result<Vec<u8>> {
        let (file, offset) = self.locate_read(wanted)?;
        failpoint::check("log::read_value", Some(self.shard))?;
        let read = values::read_blocking(&file, offset, wanted.read_len())?;
        Ok(wanted.check(&read)?.to_vec())
    }

    /// The values written since the last call, each with where it is now.
    pub fn take_written_values(&self) -> Vec<(Entry, Location)> {
        std::mem::take(&mut *self.written_values.borrow_mut())
    }

    /// Closes retired log files nothing points into (see
    /// `ValueFiles::close_unreferenced`); returns how many it closed.
    pub fn close_unreferenced_files(&self, referenced: impl Fn(u32) -> bool) -> usize {
        self.value_files
            .borrow_mut()
            .as_mut()
            .map_or(0, |files| files.close_unreferenced(referenced))
    }

    /// Calls `observer` with the cause each time the log is poisoned (the
    /// first cause is the one that stays).
    pub fn on_poison(&self, observer: impl Fn(&LogPoisoned) + 'static) {
        *self.poison_observer.borrow_mut() = Some(Box::new(observer));
    }

    /// Starts the flusher (and, in `interval` mode, the sync timer).
    pub fn start(self: &Rc<Self>) {
        glommio::spawn_local(flush_forever(self.clone())).detach();
        if let FsyncMode::Interval(period) = self.mode {
            glommio::spawn_local(sync_every(self.clone(), period)).detach();
        }
    }

    /// Appends records written by `encode`; returns the position just past them.
    pub fn append(&self, encode: impl FnOnce(&mut Vec<u8>)) -> u64 {
        self.append_values(|records, _| encode(records))
    }

    /// As [`LogWriter::append`], for records holding values that the disk
    /// engine reads back: `encode` also lists each value's entry and where
    /// its bytes start in the buffer it is given; once written, they are
    /// reported by [`LogWriter::take_written_values`].
    ///
    /// The disk engine's records are placed by `blocks`' rule (PAD records
    /// go before those that would cross a 4 KiB boundary); a position here
    /// is its file offset modulo a block, whatever file it lands in.
    pub fn append_values(&self, encode: impl FnOnce(&mut Vec<u8>, &mut Vec<PendingValue>)) -> u64 {
        let mut pending = self.pending.borrow_mut();
        let mut pending_values = self.pending_values.borrow_mut();
        let (before, nr_values) = (pending.len(), pending_values.len());
        encode(&mut pending, &mut pending_values);
        if self.keeps_values() {
            let shifts = blocks::place_records(&mut pending, before, self.appended.get());
            if !shifts.is_empty() {
                for value in &mut pending_values[nr_values..] {
                    value.at = shifts.moved(value.at);
                }
            }
        }
        let end = self.appended.get() + (pending.len() - before) as u64;
        self.appended.set(end);
        drop((pending, pending_values));
        self.work.notify_all();
        end
    }

    /// The position after everything appended so far.
    pub fn appended(&self) -> u64 {
        self.appended.get()
    }

    /// The shard this log belongs to.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// fdatasync calls made so far.
    pub fn nr_syncs(&self) -> u64 {
        self.syncs.get()
    }

    /// The latency and size histograms of the syncs so far.
    pub fn sync_stats(&self) -> SyncStats {
        self.sync_stats.borrow().clone()
    }

    /// Resolves when everything up to `position` is safe for this mode.
    pub async fn durable(&self, position: u64) -> Result<(), LogPoisoned> {
        let safe = || match self.mode {
            FsyncMode::Always => self.synced.get() >= position,
            FsyncMode::Interval(_) | FsyncMode::Never => self.written.get() >= position,
        };
        // Without a sync to wait for, the waiter writes the records itself: a
        // `pwrite` costs less than handing the work to the flusher task and
        // being woken by it.
        if self.mode != FsyncMode::Always && !safe() && !self.paused.get() {
            self.write_pending();
        }
        self.progress
            .until(|| safe() || self.poisoned.borrow().is_some())
            .await;
        match self.poisoned.borrow().as_ref() {
            Some(poisoned) if !safe() => Err(poisoned.clone()),
            _ => Ok(()),
        }
    }

    /// Writes and fdatasyncs everything appended, whatever the mode (shutdown).
    pub async fn sync_all(&self) -> Result<(), LogPoisoned> {
        let end = self.appended();
        self.progress
            .until(|| self.written.get() >= end || self.poisoned.borrow().is_some())
            .await;
        self.sync().await;
        match self.poisoned() {
            Some(poisoned) => Err(poisoned),
            None => Ok(()),
        }
    }

    /// Bytes written to the file and not yet known to be on stable storage.
    pub fn unsynced_bytes(&self) -> u64 {
        self.written.get() - self.synced.get()
    }

    /// At shutdown: a compaction or merge under way gives up at its next
    /// chunk (removing what it wrote), and none starts. Its file
    /// operations are then done before the executor ends (glommio's
    /// blocking pool cannot answer an executor that is gone).
    pub fn stop_rewrites(&self) {
        self.rewrites_stopped.set(true);
    }

    /// Why a compaction or merge must stop now, if it must: the log is
    /// poisoned, or the shard is shutting down.
    pub fn rewrite_stopped(&self) -> Option<std::io::Error> {
        if let Some(poisoned) = self.poisoned() {
            return Some(std::io::Error::other(poisoned.to_string()));
        }
        self.rewrites_stopped
            .get()
            .then(|| std::io::Error::other("the shard is shutting down"))
    }

    /// Whether [`LogWriter::stop_rewrites`] was called.
    pub fn rewrites_stopped(&self) -> bool {
        self.rewrites_stopped.get()
    }

    /// Whether a failed write or sync has poisoned the log.
    pub fn poisoned(&self) -> Option<LogPoisoned> {
        self.poisoned.borrow().clone()
    }

    fn poison(&self, what: &str, error: impl std::fmt::Display) {
        let poisoned = LogPoisoned(format!("{what}: {error}"));
        tracing::error!("{poisoned}");
        if let Some(observer) = self.poison_observer.borrow().as_ref() {
            observer(&poisoned);
        }
        self.poisoned.borrow_mut().get_or_insert(poisoned);
        self.progress.notify_all();
    }

    /// Writes what is pending (and syncs in `always` mode). One round of group commit.
    async fn flush_once(&self) {
        if !self.write_pending() {
            return;
        }
        if self.mode == FsyncMode::Always {
            // Appends go on while this waits: they are the next round's.
            self.sync().await;
            self.progress.notify_all();
        }
    }

    /// Writes everything appended and not yet written, at once (no await, so
    /// no compaction switch can come between); returns whether it wrote.
    fn write_pending(&self) -> bool {
        if self.pending.borrow().is_empty() || self.poisoned.borrow().is_some() {
            return false;
        }
        // The appends from now on go into the spare buffer, which keeps the
        // capacity of earlier rounds: no regrowing the buffer every round.
        let mut buf = std::mem::replace(
            &mut *self.pending.borrow_mut(),
            std::mem::take(&mut *self.spare.borrow_mut()),
        );
        let values = std::mem::take(&mut *self.pending_values.borrow_mut());
        let nr_records = format::stamp(&mut buf, self.epoch.get());
        let len = buf.len() as u64;
        let at = self.file_offset(self.written.get());
        if let Err(e) = self.write_all_at(&buf, at) {
            self.poison("log write failed", e);
            return false;
        }
        self.located(values, at);
        self.written.set(self.written.get() + len);
        self.unsynced_records
            .set(self.unsynced_records.get() + nr_records);
        self.progress.notify_all();
        if buf.capacity() <= SPARE_MAX_BYTES {
            buf.clear();
            *self.spare.borrow_mut() = buf;
        }
        true
    }

    /// Reports `values`, whose records were written at file offset `at` of
    /// the current file (their `at` counts from there).
    fn located(&self, values: Vec<PendingValue>, at: u64) {
        if values.is_empty() {
            return;
        }
        let Some(file) = self
            .value_files
            .borrow()
            .as_ref()
            .map(|f| f.current_number())
        else {
            return;
        };
        let mut written = self.written_values.borrow_mut();
        written.extend(values.into_iter().map(|value| {
            let bytes = value.entry.value();
            let location = Location {
                file,
                offset: at + value.at as u64,
                len: bytes.len() as u32,
                check: match value.check {
                    PendingCheck::Record { with_deadline } => ValueCheck::Record { with_deadline },
                    PendingCheck::Crc => ValueCheck::Crc(crc32fast::hash(bytes)),
                },
            };
            (value.entry, location)
        }));
    }

    fn file_offset(&self, position: u64) -> u64 {
        (position as i64 - self.file_origin.get()) as u64
    }

    /// Bytes in the log's files: the sealed segments and the active file.
    pub fn file_len(&self) -> u64 {
        let sealed = self
            .segments
            .borrow()
            .as_ref()
            .map_or(0, |plan| plan.sealed_bytes);
        sealed + self.active_len()
    }

    /// Bytes in the active file.
    fn active_len(&self) -> u64 {
        self.file_offset(self.written.get())
    }

    /// Whether the active file is full and a roll may start now.
    fn roll_due(&self) -> bool {
        let full = match self.segments.borrow().as_ref() {
            Some(plan) => self.active_len() >= plan.segment_bytes,
            None => false,
        };
        full && self.rolls_held.get() == 0 && !self.paused.get() && self.poisoned.borrow().is_none()
    }

    /// Rolls the log into a new segment if the active file is full and
    /// nothing holds rolls back. Runs in the flusher, between rounds.
    async fn roll_if_due(&self) {
        if !self.roll_due() {
            return;
        }
        // The roll syncs the file it seals with the writes paused. Under
        // `--fsync never` most of a segment may still be dirty, a sync of
        // hundreds of milliseconds: sync it first while the writes go on,
        // so the paused sync only covers what they wrote meanwhile.
        for _ in 0..ROLL_PRESYNCS {
            if self.unsynced_bytes() <= ROLL_PAUSED_SYNC_BYTES || self.poisoned().is_some() {
                break;
            }
            self.sync().await;
        }
        // A compaction may have started meanwhile and hold rolls back.
        if !self.roll_due() {
            return;
        }
        // Paused: no waiter writes into the file being sealed.
        self.rolling.set(true);
        self.paused.set(true);
        let rolled = self.roll().await;
        self.rolling.set(false);
        self.paused.set(false);
        if let Err(e) = rolled {
            self.sync_failed.set(true);
            self.poison("log segment roll failed", e);
        }
        self.work.notify_all();
        self.progress.notify_all();
    }

    /// Seals the active file (everything written is synced first) and
    /// continues in a new one (`segments::roll`).
    async fn roll(&self) -> std::io::Result<()> {
        let Some(plan) = self.segments.borrow().clone() else {
            return Ok(());
        };
        let log_dir = plan.active.parent().unwrap_or(std::path::Path::new("."));
        let sealed = segments::sealed_path(log_dir, self.shard, plan.next_seq);
        let written = self.written.get();
        let len = self.active_len();
        let old = self.file.borrow().clone();
        let epoch = super::new_epoch();
        let start = segments::active_start(epoch, written, self.keeps_values());
        let sync = async {
            // The sealed file holds its records only, not space allocated ahead.
            std::fs::OpenOptions::new()
                .write(true)
                .open(&plan.active)?
                .set_len(len)?;
            file_io::fdatasync(old).await
        };
        segments::roll(&plan.active, &sealed, &start, self.shard, sync).await?;
        // Everything written is in the sealed file, synced.
        self.synced.set(self.synced.get().max(written));
        let file = glommio::io::OpenOptions::new()
            .read(true)
            .write(true)
            .buffered_open(&plan.active)
            .await
            .map_err(std::io::Error::from)?;
        if self.keeps_values() {
            let reader = DmaFile::open(&plan.active)
                .await
                .map_err(std::io::Error::from)?;
            if let Some(files) = self.value_files.borrow_mut().as_mut() {
                files.seal(reader);
            }
        }
        *self.file.borrow_mut() = Rc::new(file);
        self.epoch.set(epoch);
        self.file_origin.set(written as i64 - start.len() as i64);
        self.allocated.set(start.len() as u64);
        if let Some(plan) = self.segments.borrow_mut().as_mut() {
            plan.next_seq += 1;
            plan.sealed.push(sealed.clone());
            plan.sealed_bytes += len;
        }
        tracing::debug!(
            shard = self.shard,
            "sealed {} ({len} bytes)",
            sealed.display()
        );
        Ok(())
    }

    /// Compaction's switch: `new_file`, of epoch `new_epoch`, holds a snapshot
    /// of the state at logical position `cut` in its first `snapshot_len` bytes. Stops the flusher, writes
    /// everything appended so far to the current file, copies the records after
    /// `cut` behind the snapshot, syncs the new file, lets `install` rename it into
    /// place, then continues appending there. Requests wait only for this switch,
    /// not for the snapshot.
    ///
    /// With the disk engine, `reader` is the new file opened for reading
    /// values: it becomes the current value file, and the old one is retired
    /// (see `values`).
    pub async fn switch_file(
        &self,
        new_file: BufferedFile,
        (cut, snapshot_len): (u64, u64),
        new_epoch: u64,
        install: impl std::future::Future<Output = std::io::Result<()>>,
        reader: Option<glommio::io::DmaFile>,
    ) -> std::io::Result<()> {
        // The records before `cut` are in the snapshot; the file must hold all of
        // them before the records after `cut` can be copied out of it.
        // A roll under way (begun before the compaction held rolls back)
        // ends first: the tail after `cut` is then in the active file.
        self.progress
            .until(|| {
                (self.written.get() >= cut && !self.rolling.get())
                    || self.poisoned.borrow().is_some()
            })
            .await;
        if let Some(poisoned) = self.poisoned() {
            return Err(std::io::Error::other(poisoned.to_string()));
        }
        // Writes are synchronous, so none is half done here; the flusher may be
        // waiting for a sync of the old file, which is harmless (the switch
        // syncs the new file, and `synced` only grows).
        self.paused.set(true);
        let result = self
            .move_to(new_file, (cut, snapshot_len), new_epoch, install, reader)
            .await;
        self.paused.set(false);
        self.work.notify_all();
        result
    }

    /// The switch proper. On failure the old file stays in use and nothing
    /// appended is lost: records taken for the new file are put back.
    ///
    /// The records are copied a chunk of a few MiB at a time (`tail_copy`),
    /// so the switch's memory does not grow with the tail.
    async fn move_to(
        &self,
        new_file: BufferedFile,
        (cut, snapshot_len): (u64, u64),
        new_epoch: u64,
        install: impl std::future::Future<Output = std::io::Result<()>>,
        reader: Option<glommio::io::DmaFile>,
    ) -> std::io::Result<()> {
        let old = self.file.borrow().clone();
        let tail_start = self.file_offset(cut);
        let tail_len = self.file_offset(self.written.get()) - tail_start;
        // Nothing is taken from the writer before the tail is copied, so a
        // failure here leaves it as it was. The tail cannot grow meanwhile:
        // while paused, nothing is written to the old file.
        let mut copy = RecordCopy::new(&new_file, new_epoch, self.shard);
        let snapshot_len = self
            .pad_for_tail(&mut copy, snapshot_len, tail_start)
            .await?;
        copy.copy_from_file(&old, tail_start, tail_len, snapshot_len)
            .await?;
        // Tests hold the switch here to append while it runs.
        failpoint::hold_while_armed(
            "compaction::tail_copied",
            Some(self.shard),
            &"a compaction switch",
        )
        .await;
        // Records appended but not yet written go to the new file behind the
        // tail; anything appended while they are copied stays pending for
        // the flusher.
        let taken = std::mem::take(&mut *self.pending.borrow_mut());
        let taken_values = std::mem::take(&mut *self.pending_values.borrow_mut());
        let taken_at = snapshot_len + tail_len;
        match finish_new_file(&mut copy, &taken, taken_at, &new_file, install, self.shard).await {
            Ok(()) => {
                let copied = copy.stats();
                // The new file holds logical `cut` at byte `snapshot_len`.
                self.file_origin.set(cut as i64 - snapshot_len as i64);
                debug_assert!(
                    !self.keeps_values()
                        || self
                            .file_origin
                            .get()
                            .rem_euclid(blocks::BLOCK_BYTES as i64)
                            == 0,
                    "positions and file offsets agree modulo a block"
                );
                let end = self.written.get() + taken.len() as u64;
                self.written.set(end);
                self.synced.set(end);
                self.allocated.set(taken_at + taken.len() as u64);
                *self.file.borrow_mut() = Rc::new(new_file);
                self.epoch.set(new_epoch);
                if let (Some(files), Some(reader)) =
                    (self.value_files.borrow_mut().as_mut(), reader)
                {
                    files.switch(reader, tail_start, snapshot_len);
                }
                // The snapshot, a BASE, supersedes every sealed segment.
                if let Some(plan) = self.segments.borrow_mut().as_mut() {
                    self.superseded.borrow_mut().append(&mut plan.sealed);
                    plan.sealed_bytes = 0;
                }
                // The taken records are in the new file, behind the tail.
                self.located(taken_values, taken_at);
                self.progress.notify_all();
                tracing::debug!(
                    shard = self.shard,
                    "compaction switch copied {} bytes behind the snapshot in {} chunks, \
                     the largest {} bytes",
                    copied.bytes,
                    copied.chunks,
                    copied.largest_chunk
                );
                Ok(())
            }
            Err(e) => {
                let mut pending = self.pending.borrow_mut();
                let later = std::mem::replace(&mut *pending, taken);
                let shift = pending.len();
                pending.extend_from_slice(&later);
                let mut values = self.pending_values.borrow_mut();
                let later_values = std::mem::replace(&mut *values, taken_values);
                values.extend(later_values.into_iter().map(|value| PendingValue {
                    at: value.at + shift,
                    ..value
                }));
                Err(e)
            }
        }
    }

    /// With the disk engine, writes a PAD record behind the snapshot (which
    /// ends at `snapshot_len`) so that the tail, at `tail_start` in the old
    /// file, moves by a multiple of a block: its records keep their places
    /// in the blocks (`blocks`). Returns where the tail goes.
    async fn pad_for_tail(
        &self,
        copy: &mut RecordCopy<'_>,
        snapshot_len: u64,
        tail_start: u64,
    ) -> std::io::Result<u64> {
        let pad = blocks::padding_to(snapshot_len, tail_start);
        if !self.keeps_values() || pad == 0 {
            return Ok(snapshot_len);
        }
        let mut record = Vec::with_capacity(pad as usize);
        format::write_pad(&mut record, pad as usize);
        copy.copy_from_memory(&record, snapshot_len).await?;
        Ok(snapshot_len + pad)
    }

    /// Writes all of `buf` at file offset `at`, allocating ahead first. A short
    /// write to a regular file means the device refused (full, quota): it
    /// poisons like any other failure.
    fn write_all_at(&self, buf: &[u8], at: u64) -> std::io::Result<()> {
        failpoint::check("log::write", Some(self.shard))?;
        let file = self.file.borrow().clone();
        self.allocate_ahead(&file, at + buf.len() as u64);
        file_io::pwrite_all(&file, buf, at)
    }

    /// Keeps the file allocated past `end`. Allocation failing (a full disk) is
    /// not an error: the write that follows grows the file itself, or fails
    /// and poisons.
    fn allocate_ahead(&self, file: &BufferedFile, end: u64) {
        let allocated = self.allocated.get();
        if end <= allocated {
            return;
        }
        let step = (end / 4).clamp(*PREALLOCATE_BYTES.start(), *PREALLOCATE_BYTES.end());
        let new_end = end + step;
        if let Err(e) = file_io::preallocate(file, allocated, new_end - allocated) {
            // Not tried again before the file reaches `new_end`: a file system
            // without fallocate, or a full disk, would otherwise cost a failing
            // system call per write.
            tracing::debug!(shard = self.shard, "cannot allocate log space ahead: {e}");
        }
        self.allocated.set(new_end);
    }

    /// Makes everything written so far durable; the shard keeps running meanwhile.
    ///
    /// After one fdatasync has failed, no later one is trusted, so none is
    /// made: Linux reports a failed writeback once and may drop the pages, so
    /// a retry would succeed and claim bytes safe that are not.
    /// `unsynced_bytes` then stays what it was when the sync failed.
    async fn sync(&self) {
        // Tests hold a sync here to see what happens meanwhile.
        failpoint::hold_while_armed("log::before_sync", Some(self.shard), &"a log sync").await;
        let target = self.written.get();
        if self.synced.get() >= target || self.sync_failed.get() {
            return;
        }
        let nr_records = self.unsynced_records.replace(0);
        let file = self.file.borrow().clone();
        let started = Instant::now();
        let synced = match failpoint::check("log::fdatasync", Some(self.shard)) {
            Ok(()) => file_io::fdatasync(file).await,
            Err(e) => Err(e),
        };
        match synced {
            Ok(()) => {
                // A compaction switch may have moved `synced` further meanwhile.
                self.synced.set(self.synced.get().max(target));
                self.syncs.set(self.syncs.get() + 1);
                self.sync_stats
                    .borrow_mut()
                    .observe(started.elapsed(), nr_records);
            }
            Err(e) => {
                self.sync_failed.set(true);
                self.poison("log fdatasync failed", e);
            }
        }
    }
}

/// Copies `taken` (records appended and not yet written) to `at` in the new
/// file, behind the tail `copy` wrote, syncs the file, and installs it.
async fn finish_new_file(
    copy: &mut RecordCopy<'_>,
    taken: &[u8],
    at: u64,
    file: &BufferedFile,
    install: impl std::future::Future<Output = std::io::Result<()>>,
    shard: usize,
) -> std::io::Result<()> {
    copy.copy_from_memory(taken, at).await?;
    failpoint::check("compaction::fdatasync", Some(shard))?;
    file.fdatasync().await?;
    install.await
}

async fn flush_forever(log: Rc<LogWriter>) {
    while log.poisoned().is_none() {
        // A roll may be due with nothing pending: in `interval` and `never`
        // modes the waiters write their records themselves.
        log.work
            .until(|| {
                (!log.pending.borrow().is_empty() && !log.paused.get())
                    || log.poisoned.borrow().is_some()
                    || log.roll_due()
            })
            .await;
        log.flush_once().await;
        log.roll_if_due().await;
    }
}

async fn sync_every(log: Rc<LogWriter>, period: Duration) {
    while log.poisoned().is_none() {
        glommio::timer::sleep(period).await;
        log.sync().await;
        log.progress.notify_all();
    }
}
