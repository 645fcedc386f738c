//! The log engine: each shard appends checksummed records to its own log file;
//! the in-memory table stays the source of reads, and the logs are how it comes
//! back after a restart or a crash. docs/storage.md is the long form.
//!
//! # Files
//!
//! ```text
//! DATA/ENGINE              "log"  (see datadir.rs)
//! DATA/log/SHARDS          how many shard logs the directory holds, and how
//!                          keys are routed to them: "2" (by hash) or "2 slots"
//! DATA/log/shard-0.log     shard 0's records (format.rs has the byte layout)
//! DATA/log/shard-1.log
//! DATA/log/shard-0.<seq>.seg  the disk engine's sealed segments of shard 0,
//!                          replayed before shard-0.log (segments.rs)
//! DATA/log.new/, log.old/  only while the shard count changes (see below)
//! ```
//!
//! # What is logged
//!
//! Every change that a reply acknowledges: PUT (key, exact version, value) for
//! SET and applied PUTV, DEL for a DEL/RM of a present key, BATCH for a
//! single-shard ATOMIC (one record: all or nothing). A cross-shard ATOMIC logs a
//! PREPARE (the participant's share) on each participant, safe before the
//! coordinator goes on, then a COMMIT on the coordinator before anyone is told
//! — the commit point —
//! and a DECIDE on each participant when it is told.
//!
//! # Recovery ([`recover`])
//!
//! 1. Every shard log is replayed in parallel, one thread per shard
//!    (`replay.rs`): its sealed segments in order, then its active file, into
//!    one table (`segments.rs`; sealed segments a newer BASE supersedes are
//!    deleted first, and a missing active file after a crash in a roll is
//!    created). Torn tails of the active file are cut; damage in the middle,
//!    or anywhere in a sealed segment, refuses the start with file and offset
//!    (unless `--salvage`), and no record is modified until every file has
//!    been read. Every file of every shard gets its own number, which the
//!    disk engine's entries carry (`Location::file`).
//! 2. A PREPARE with no DECIDE in its shard's files is resolved by the coordinator's
//!    files: committed if they hold the COMMIT, else dropped. The resolution is
//!    then appended (DECIDE) to the participant's log and synced, so no later
//!    compaction can lose the evidence.
//! 3. If `--shards` changed, every key is moved to its new owner and a complete
//!    new set of logs is written to `log.new/`, synced, and swapped in by
//!    renaming directories; a crash at any point leaves either the old or the
//!    new set whole. The log engine does the same with the sealed segments a
//!    disk engine left (a switch of engine): it keeps one file per shard.

pub mod blocks;
pub mod compaction;
pub mod file_io;
pub mod format;
pub mod hint;
pub mod merge;
pub mod pacing;
pub mod replay;
pub mod segments;
pub mod sync_stats;
pub mod tail_copy;
pub mod values;
pub mod writer;

use crate::failpoint;
use crate::ids::{Router, Routing};
use crate::table::{Location, Table};
use format::Framing;
use replay::{apply_prepared, Replayed};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use writer::{LogPoisoned, LogWriter};

const LOG_DIR: &str = "log";
const NEW_LOG_DIR: &str = "log.new";
const OLD_LOG_DIR: &str = "log.old";
const SHARDS_FILE: &str = "SHARDS";

/// When a reply may say a write is safe (docs/operations.md explains the choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncMode {
    /// After its records are fdatasync-ed (group commit).
    Always,
    /// After its records are written; a timer fdatasyncs every period.
    Interval(Duration),
    /// After its records are written; the kernel syncs when it likes.
    Never,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("cannot read or write {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{path} is corrupt at offset {offset} ({reason}), and intact records follow at offset \
         {intact_at}: refusing to start so that nothing is lost. Nothing was modified. To start \
         anyway, keeping the records before offset {offset} and dropping the rest of this file, \
         restart with --salvage (copy the data directory first)"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
        intact_at: u64,
    },
    #[error(
        "{path} is not a log this corekv can read: {reason}. Nothing was modified; --salvage does \
         not help with a damaged file header (restore the file from a backup, or move it away to \
         start without its records)"
    )]
    BadFileHeader { path: PathBuf, reason: String },
    #[error("{path} says {found:?}, not a shard count (and routing)")]
    BadShardsFile { path: PathBuf, found: String },
    #[error("{path} is missing: the log directory lists {nr_shards} shards but this log is gone")]
    MissingLog { path: PathBuf, nr_shards: usize },
    #[error(
        "{path} is a sealed segment, synced before it was sealed, but its records end in an \
         incomplete or damaged record at offset {offset}: refusing to start so that nothing is \
         lost. Nothing was modified. To start anyway, keeping the records before offset \
         {offset} and dropping the rest of this file, restart with --salvage (copy the data \
         directory first)"
    )]
    SealedDamaged { path: PathBuf, offset: u64 },
}

/// The files of one shard after recovery (the disk engine reads values from
/// them): its sealed segments with their numbers, oldest first, the number of
/// its active file, and the sequence number its next roll takes.
#[derive(Debug, Clone, Default)]
pub struct ShardFiles {
    pub sealed: Vec<(u32, PathBuf)>,
    pub active: u32,
    pub next_seq: u64,
}

/// The tables rebuilt from the logs, ready for the shards.
pub struct Recovered {
    pub tables: Vec<Table>,
    /// Length of each shard's intact log: where its writer continues (the file
    /// may be longer: space allocated ahead, which reads as zeros).
    pub log_lens: Vec<u64>,
    pub nr_keys: u64,
    pub nr_records: u64,
    /// Keys loaded from hint files (the disk engine) rather than records.
    pub hinted_keys: u64,
    /// Per shard, with the disk engine and a hint file: the live-data scale
    /// its compaction measured (`compaction::LiveScale`).
    pub live_scales: Vec<Option<compaction::LiveScale>>,
    /// Bytes checksummed looking past damage, over all logs (linear in the
    /// damaged regions' length; see `replay`).
    pub scan_hashed_bytes: u64,
    pub elapsed: Duration,
    /// Where cross-shard batch numbering continues: above every number in the logs.
    pub next_txn_seq: u64,
    /// Each shard's files and their numbers.
    pub files: Vec<ShardFiles>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RecoveryError + '_ {
    move |source| RecoveryError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Path of shard `i`'s log inside a log directory.
pub fn shard_log_path(log_dir: &Path, shard: usize) -> PathBuf {
    log_dir.join(format!("shard-{shard}.log"))
}

/// The log directory of a data directory.
pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(LOG_DIR)
}

/// An empty table for recovery: of the disk engine or not.
fn empty_table(values_on_disk: bool) -> Table {
    match values_on_disk {
        true => Table::on_disk(u64::MAX),
        false => Table::new(u64::MAX),
    }
}

/// Rebuilds every shard's table from the logs in `data_dir`, for the shards
/// `router` routes to, and leaves the directory holding exactly that many
/// intact logs, each key in its owner's. With `values_on_disk` (the disk
/// engine) the tables hold where each value is in the logs, not the value:
/// entries point into their shard's files by the numbers of
/// [`Recovered::files`].
pub fn recover(
    data_dir: &Path,
    router: &Router,
    salvage: bool,
    values_on_disk: bool,
) -> Result<Recovered, RecoveryError> {
    let nr_shards = router.nr_shards();
    let started = Instant::now();
    finish_interrupted_reshard(data_dir)?;
    let dir = log_dir(data_dir);
    if !dir.exists() {
        write_log_set(
            data_dir,
            &mut (0..nr_shards)
                .map(|_| Table::new(u64::MAX))
                .collect::<Vec<_>>(),
            router.routing(),
            values_on_disk,
            OldLogs::new(&[]),
        )?;
    }
    remove_compaction_leftovers(&dir)?;
    let (nr_old, routing_old) = read_shards_file(&dir)?;
    let moved = nr_old != nr_shards || routing_old != router.routing();
    let mut tables: Vec<Table> = (0..nr_old).map(|_| empty_table(values_on_disk)).collect();
    let files = prepare_shard_files(&dir, nr_old)?;
    let (replayed, sealed_cuts) = replay_all(&files, &mut tables, salvage)?;
    let has_sealed = files.iter().any(|f| !f.numbered.sealed.is_empty());
    let nr_legacy = replayed
        .iter()
        .filter(|r| r.framing == Some(Framing::Legacy))
        .count();
    // The logs are rewritten whole when keys move (another shard count or
    // routing), when they are in corekv 0.1's format, or when the log engine
    // finds a disk engine's sealed segments; otherwise they are kept and
    // appended to.
    let rewrite = moved || nr_legacy > 0 || (has_sealed && !values_on_disk);
    if !rewrite {
        cut_sealed(&sealed_cuts)?;
        cut_dropped_tails(&dir, &replayed)?;
    }
    let decided_bytes = resolve_pending(&dir, &mut tables, &replayed, !rewrite)?;
    let nr_records = replayed.iter().map(|r| r.nr_records).sum();
    let hinted_keys = replayed.iter().map(|r| r.hinted_keys).sum();
    let scan_hashed_bytes = replayed.iter().map(|r| r.scan_hashed_bytes).sum();
    let next_txn_seq = replayed
        .iter()
        .filter_map(|r| r.max_txn_seq)
        .max()
        .map_or(0, |seq| seq + 1);
    if rewrite {
        if nr_legacy > 0 {
            tracing::info!("upgrading {nr_legacy} shard logs from corekv 0.1's format");
        }
        if moved {
            tracing::info!(
                "moving every key from {nr_old} shard logs routed by {} to {nr_shards} routed by {}",
                routing_old.name(),
                router.routing().name()
            );
            tables = reshard(tables, router);
        }
        let old_logs = OldLogs::new(&files);
        write_log_set(
            data_dir,
            &mut tables,
            router.routing(),
            values_on_disk,
            old_logs,
        )?;
        if values_on_disk {
            // The tables point into the logs just replaced: read the new set
            // (which needs no rewrite) for where the values are now.
            drop(tables);
            let again = recover(data_dir, router, salvage, values_on_disk)?;
            return Ok(Recovered {
                nr_records,
                scan_hashed_bytes,
                elapsed: started.elapsed(),
                next_txn_seq: next_txn_seq.max(again.next_txn_seq),
                ..again
            });
        }
    }
    let log_lens = if rewrite {
        (0..nr_shards)
            .map(|i| fs::metadata(shard_log_path(&dir, i)).map(|m| m.len()))
            .collect::<io::Result<Vec<u64>>>()
            .map_err(io_err(&dir))?
    } else {
        let intact = replayed.iter().map(|r| r.valid_bytes);
        intact.zip(decided_bytes).map(|(a, b)| a + b).collect()
    };
    let nr_keys = tables.iter().map(|t| t.len() as u64).sum();
    // A rewritten set has no hint files: nothing to say about its snapshots.
    let live_scales = match rewrite {
        true => vec![None; tables.len()],
        false => replayed.iter().map(|r| r.live_scale).collect(),
    };
    let files = match rewrite {
        // One file per shard, numbered after its shard.
        true => (0..nr_shards)
            .map(|i| ShardFiles {
                active: i as u32,
                ..ShardFiles::default()
            })
            .collect(),
        false => files.into_iter().map(|f| f.numbered).collect(),
    };
    Ok(Recovered {
        tables,
        log_lens,
        nr_keys,
        nr_records,
        hinted_keys,
        live_scales,
        scan_hashed_bytes,
        elapsed: started.elapsed(),
        next_txn_seq,
        files,
    })
}

/// A fresh random epoch for a new log file (see `format`): records are
/// checksummed with it, so no record written for another file passes as one of
/// this file's.
pub fn new_epoch() -> u64 {
    if let Some(random) = crate::sys::random_u64() {
        return random;
    }
    // No getrandom (very old kernel): the clock and pid still differ per file.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// A shard's files, ready to replay: paths in replay order (sealed
/// segments, then the active file) and their numbers.
struct ShardReplayFiles {
    paths: Vec<PathBuf>,
    numbered: ShardFiles,
}

/// Lists each shard's files, deletes the sealed segments a newer BASE
/// supersedes, creates the active file a crash in a roll left missing, and
/// numbers every file of every shard uniquely (so that entries moved to
/// another shard's table still name their file: [`OldLogs`]). A shard with
/// one file gets its shard's number, as before segments existed.
fn prepare_shard_files(
    dir: &Path,
    nr_shards: usize,
) -> Result<Vec<ShardReplayFiles>, RecoveryError> {
    let mut next_number = 0u32;
    let mut all = Vec::with_capacity(nr_shards);
    for shard in 0..nr_shards {
        let active = shard_log_path(dir, shard);
        let mut sealed = segments::list_sealed(dir, shard).map_err(io_err(dir))?;
        if !active.exists() {
            if sealed.is_empty() {
                return Err(RecoveryError::MissingLog {
                    path: active,
                    nr_shards,
                });
            }
            tracing::warn!(
                "{}: creating it (a crash came between sealing the last segment and creating it)",
                active.display()
            );
            let start = segments::active_start(new_epoch(), 0, false);
            segments::create_active(&active, &start, ("recovery::write", Some(shard)))
                .and_then(|()| segments::sync_dir_of(&active))
                .map_err(io_err(&active))?;
        }
        let mut paths: Vec<PathBuf> = sealed.iter().map(|(_, p)| p.clone()).collect();
        paths.push(active.clone());
        let superseded = segments::superseded(&paths).map_err(io_err(dir))?;
        if !superseded.is_empty() {
            tracing::info!(
                "shard {shard}: deleting {} sealed segments a compaction superseded (a crash \
                 came before it deleted them)",
                superseded.len()
            );
            segments::delete(&superseded).map_err(io_err(dir))?;
            sync_dir(dir)?;
            sealed.drain(..superseded.len());
            paths.drain(..superseded.len());
        }
        let next_seq = sealed.last().map_or(0, |(seq, _)| seq + 1);
        // Numbers in replay order: the sealed segments, then the active file.
        let first = next_number;
        let active_number = first + sealed.len() as u32;
        next_number = active_number + 1;
        let numbered_sealed = (first..)
            .zip(sealed)
            .map(|(number, (_, path))| (number, path))
            .collect();
        all.push(ShardReplayFiles {
            paths,
            numbered: ShardFiles {
                sealed: numbered_sealed,
                active: active_number,
                next_seq,
            },
        });
    }
    Ok(all)
}

/// A sealed segment that salvage cuts short: its path and intact length.
type SealedCut = (PathBuf, u64);

/// Replays every shard's files in parallel, one thread per shard; refuses at
/// the first corrupt one.
fn replay_all(
    files: &[ShardReplayFiles],
    tables: &mut [Table],
    salvage: bool,
) -> Result<(Vec<Replayed>, Vec<SealedCut>), RecoveryError> {
    let results: Vec<Result<(Replayed, Vec<SealedCut>), RecoveryError>> =
        std::thread::scope(|scope| {
            let workers: Vec<_> = tables
                .iter_mut()
                .zip(files)
                .map(|(table, files)| scope.spawn(move || replay_shard(files, table, salvage)))
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("a replay thread panicked"))
                .collect()
        });
    let mut replayed = Vec::with_capacity(results.len());
    let mut cuts = Vec::new();
    for result in results {
        let (r, c) = result?;
        replayed.push(r);
        cuts.extend(c);
    }
    Ok((replayed, cuts))
}

/// Replays one shard's files in order into `table`, carrying prepared
/// batches (a DECIDE may be in a later file) and COMMITs across them. What is
/// returned describes the active file (where appends continue), with the
/// records, commits and pending batches of all.
fn replay_shard(
    files: &ShardReplayFiles,
    table: &mut Table,
    salvage: bool,
) -> Result<(Replayed, Vec<SealedCut>), RecoveryError> {
    let numbers = files
        .numbered
        .sealed
        .iter()
        .map(|(n, _)| *n)
        .chain([files.numbered.active]);
    let mut total = Replayed::default();
    let mut cuts = Vec::new();
    let last = files.paths.len() - 1;
    for (i, (path, number)) in files.paths.iter().zip(numbers).enumerate() {
        let carried = std::mem::take(&mut total.pending);
        let r = replay::replay_continuing(path, table, salvage, number, carried)?;
        tracing::info!(
            "{}: replayed {} records, {} keys",
            path.display(),
            r.nr_records,
            table.len()
        );
        if i < last && r.dropped_bytes > 0 {
            if !salvage {
                return Err(RecoveryError::SealedDamaged {
                    path: path.clone(),
                    offset: r.valid_bytes,
                });
            }
            tracing::warn!(
                "{}: salvaging: keeping the {} bytes of records of this sealed segment and \
                 dropping {} bytes after them",
                path.display(),
                r.valid_bytes,
                r.dropped_bytes
            );
            cuts.push((path.clone(), r.valid_bytes));
        }
        total.commits.extend(r.commits.iter().copied());
        total.max_txn_seq = total.max_txn_seq.max(r.max_txn_seq);
        total.nr_records += r.nr_records;
        total.hinted_keys += r.hinted_keys;
        total.scan_hashed_bytes += r.scan_hashed_bytes;
        total.live_scale = r.live_scale.or(total.live_scale);
        total.pending = r.pending;
        if i == last {
            total.valid_bytes = r.valid_bytes;
            total.dropped_bytes = r.dropped_bytes;
            total.preallocated_bytes = r.preallocated_bytes;
            total.framing = r.framing;
        }
    }
    Ok((total, cuts))
}

/// Truncates sealed segments that salvage cut short to their intact records.
fn cut_sealed(cuts: &[SealedCut]) -> Result<(), RecoveryError> {
    for (path, valid) in cuts {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        file.set_len(*valid).map_err(io_err(path))?;
        file.sync_all().map_err(io_err(path))?;
    }
    Ok(())
}

/// Truncates each file to its intact records (a torn tail, or salvage).
fn cut_dropped_tails(dir: &Path, replayed: &[Replayed]) -> Result<(), RecoveryError> {
    for (i, r) in replayed
        .iter()
        .enumerate()
        .filter(|(_, r)| r.dropped_bytes > 0)
    {
        let path = shard_log_path(dir, i);
        tracing::warn!(
            "{}: cutting {} bytes after offset {} (a write cut short by a crash)",
            path.display(),
            r.dropped_bytes,
            r.valid_bytes
        );
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        failpoint::check("recovery::write", Some(i)).map_err(io_err(&path))?;
        file.set_len(r.valid_bytes).map_err(io_err(&path))?;
        failpoint::check("recovery::fdatasync", Some(i)).map_err(io_err(&path))?;
        file.sync_all().map_err(io_err(&path))?;
    }
    Ok(())
}

/// Applies or drops each prepared share that its own log left undecided, by the
/// COMMIT records of all logs; with `record`, appends the outcome (DECIDE) to
/// the participant's log and syncs it, so no later compaction can lose the
/// evidence (without, the logs are about to be rewritten from the tables).
/// Returns the bytes appended to each log.
fn resolve_pending(
    dir: &Path,
    tables: &mut [Table],
    replayed: &[Replayed],
    record: bool,
) -> Result<Vec<u64>, RecoveryError> {
    let mut appended = vec![0; replayed.len()];
    let committed: hashbrown::HashSet<_> = replayed
        .iter()
        .flat_map(|r| r.commits.iter().copied())
        .collect();
    for (i, r) in replayed.iter().enumerate() {
        if r.pending.is_empty() {
            continue;
        }
        let mut decisions = Vec::new();
        for (txn, effects) in r.pending.clone() {
            let commit = committed.contains(&txn);
            tracing::info!(
                "shard {i}: {txn} was prepared and is resolved as {}",
                if commit { "committed" } else { "aborted" }
            );
            if commit {
                apply_prepared(&mut tables[i], effects);
            }
            format::write_decide(&mut decisions, txn, commit);
        }
        if let (true, Some(Framing::Epoch(epoch))) = (record, r.framing) {
            if tables[i].keeps_values_on_disk() {
                blocks::place_records(&mut decisions, 0, r.valid_bytes);
            }
            format::stamp(&mut decisions, epoch);
            append_synced(&shard_log_path(dir, i), r.valid_bytes, &decisions)?;
            appended[i] = decisions.len() as u64;
        }
    }
    Ok(appended)
}

/// Writes `bytes` at `offset` (the end of the intact log, before any space
/// allocated ahead) and syncs them.
fn append_synced(path: &Path, offset: u64, bytes: &[u8]) -> Result<(), RecoveryError> {
    use std::os::unix::fs::FileExt;
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    failpoint::check("recovery::write", None).map_err(io_err(path))?;
    file.write_all_at(bytes, offset).map_err(io_err(path))?;
    failpoint::check("recovery::fdatasync", None).map_err(io_err(path))?;
    file.sync_data().map_err(io_err(path))
}

/// Moves every entry to the table of its owner under `router`.
fn reshard(mut old: Vec<Table>, router: &Router) -> Vec<Table> {
    let nr_shards = router.nr_shards();
    let mut tables: Vec<Table> = (0..nr_shards).map(|_| Table::new(u64::MAX)).collect();
    for table in &mut old {
        for entry in table.drain() {
            tables[router.route(entry.key()).0].load_entry(entry);
        }
    }
    tables
}

/// Writes one snapshot log per table into `log.new/`, then swaps it in for
/// `log/`. Each step is synced before the next, so a crash leaves one whole set.
/// With `values_on_disk` (the disk engine) records are placed in 4 KiB blocks
/// (`blocks`).
fn write_log_set(
    data_dir: &Path,
    tables: &mut [Table],
    routing: Routing,
    values_on_disk: bool,
    mut old_logs: OldLogs,
) -> Result<(), RecoveryError> {
    let new_dir = data_dir.join(NEW_LOG_DIR);
    if new_dir.exists() {
        fs::remove_dir_all(&new_dir).map_err(io_err(&new_dir))?;
    }
    fs::create_dir_all(&new_dir).map_err(io_err(&new_dir))?;
    for (i, table) in tables.iter().enumerate() {
        let path = shard_log_path(&new_dir, i);
        write_snapshot(&path, table, &mut old_logs, values_on_disk)?;
    }
    // SHARDS is written last: it marks log.new/ as complete.
    write_synced(
        &new_dir.join(SHARDS_FILE),
        shards_file_text(tables.len(), routing).as_bytes(),
    )?;
    sync_dir(&new_dir)?;
    swap_in_new_logs(data_dir)
}

/// The logs being replaced, read for the values of a disk engine's
/// entries: each file number is the file recovery gave it
/// ([`prepare_shard_files`]).
struct OldLogs {
    paths: hashbrown::HashMap<u32, PathBuf>,
    open: hashbrown::HashMap<u32, File>,
}

impl OldLogs {
    fn new(files: &[ShardReplayFiles]) -> OldLogs {
        let paths = files
            .iter()
            .flat_map(|f| {
                let numbers = f.numbered.sealed.iter().map(|(n, _)| *n);
                numbers
                    .chain([f.numbered.active])
                    .zip(f.paths.iter().cloned())
            })
            .collect();
        OldLogs {
            paths,
            open: hashbrown::HashMap::new(),
        }
    }

    /// The bytes at `location`, read into `buf`.
    fn read(&mut self, location: Location, buf: &mut Vec<u8>) -> Result<(), RecoveryError> {
        use std::os::unix::fs::FileExt;
        let path = self
            .paths
            .get(&location.file)
            .cloned()
            .ok_or_else(|| RecoveryError::Io {
                path: PathBuf::from(format!("log file {}", location.file)),
                source: io::Error::other("no such log file was replayed"),
            })?;
        let file = match self.open.entry(location.file) {
            hashbrown::hash_map::Entry::Occupied(open) => open.into_mut(),
            hashbrown::hash_map::Entry::Vacant(slot) => {
                slot.insert(File::open(&path).map_err(io_err(&path))?)
            }
        };
        buf.resize(location.len as usize, 0);
        file.read_exact_at(buf, location.offset)
            .map_err(io_err(&path))
    }
}

/// Writes a new log file, of a new epoch, holding `table` as PUT records
/// (values on disk read from `old_logs`), placed in blocks if `placed`.
fn write_snapshot(
    path: &Path,
    table: &Table,
    old_logs: &mut OldLogs,
    placed: bool,
) -> Result<(), RecoveryError> {
    let epoch = new_epoch();
    let mut out = Vec::new();
    // A whole shard's state: no sealed segment is older than it.
    format::write_file_header_flagged(&mut out, epoch, format::FLAG_BASE);
    let records_start = out.len();
    let mut read = Vec::new();
    for entry in table.entries() {
        let value = match entry.location() {
            Some(location) => {
                old_logs.read(location, &mut read)?;
                &read[..]
            }
            None => entry.value(),
        };
        let put = format::Effect::Put {
            key: entry.key(),
            version: entry.version(),
            value,
            deadline: entry.deadline(),
        };
        blocks::append_records(&mut out, placed.then_some(0), |out| {
            format::write_effect(out, &put)
        });
    }
    format::stamp(&mut out[records_start..], epoch);
    write_synced(path, &out)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), RecoveryError> {
    let mut file = File::create(path).map_err(io_err(path))?;
    failpoint::check("recovery::write", None).map_err(io_err(path))?;
    file.write_all(bytes).map_err(io_err(path))?;
    failpoint::check("recovery::fdatasync", None).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

fn sync_dir(dir: &Path) -> Result<(), RecoveryError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// `log/` → `log.old/`, `log.new/` → `log/`, then `log.old/` removed.
fn swap_in_new_logs(data_dir: &Path) -> Result<(), RecoveryError> {
    let (current, new, old) = (
        data_dir.join(LOG_DIR),
        data_dir.join(NEW_LOG_DIR),
        data_dir.join(OLD_LOG_DIR),
    );
    if current.exists() {
        fs::rename(&current, &old).map_err(io_err(&current))?;
        sync_dir(data_dir)?;
    }
    failpoint::check("recovery::rename", None).map_err(io_err(&new))?;
    fs::rename(&new, &current).map_err(io_err(&new))?;
    sync_dir(data_dir)?;
    if old.exists() {
        fs::remove_dir_all(&old).map_err(io_err(&old))?;
    }
    Ok(())
}

/// Completes a shard-count change that a crash interrupted, or discards it.
fn finish_interrupted_reshard(data_dir: &Path) -> Result<(), RecoveryError> {
    let (current, new, old) = (
        data_dir.join(LOG_DIR),
        data_dir.join(NEW_LOG_DIR),
        data_dir.join(OLD_LOG_DIR),
    );
    let new_complete = new.join(SHARDS_FILE).exists();
    if !current.exists() && new_complete {
        tracing::warn!("finishing a shard-count change interrupted by a crash");
        fs::rename(&new, &current).map_err(io_err(&new))?;
        sync_dir(data_dir)?;
    }
    if current.exists() {
        for leftover in [&new, &old] {
            if leftover.exists() {
                fs::remove_dir_all(leftover).map_err(io_err(leftover))?;
            }
        }
    } else if old.exists() {
        // The swap moved log/ away but log.new/ was not complete: put it back.
        fs::rename(&old, &current).map_err(io_err(&old))?;
    }
    Ok(())
}

/// A `.compact` file is a snapshot a crash interrupted before its switch: the
/// log under the real name is complete without it. A `.tmp` file is a hint
/// a crash interrupted (`hint`), or a roll's new active file (`segments`).
fn remove_compaction_leftovers(dir: &Path) -> Result<(), RecoveryError> {
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if path
            .extension()
            .is_some_and(|e| e == "compact" || e == "tmp" || e == "merge")
        {
            tracing::info!(
                "removing {}, left by an interrupted compaction or roll",
                path.display()
            );
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

/// What `log/SHARDS` says for `nr_shards` logs routed by `routing`: the
/// count alone for hash routing (as every corekv before slot routing wrote
/// it), the count and `slots` otherwise.
pub fn shards_file_text(nr_shards: usize, routing: Routing) -> String {
    match routing {
        Routing::Hash => format!("{nr_shards}\n"),
        Routing::Slots => format!("{nr_shards} {}\n", routing.name()),
    }
}

fn read_shards_file(dir: &Path) -> Result<(usize, Routing), RecoveryError> {
    let path = dir.join(SHARDS_FILE);
    let text = fs::read_to_string(&path).map_err(io_err(&path))?;
    let mut words = text.split_whitespace();
    let nr_shards = words
        .next()
        .and_then(|w| w.parse::<usize>().ok())
        .filter(|&n| n > 0);
    let routing = match words.next() {
        None => Some(Routing::Hash),
        Some(word) => Routing::from_name(word),
    };
    match (nr_shards, routing, words.next()) {
        (Some(nr_shards), Some(routing), None) => Ok((nr_shards, routing)),
        _ => Err(RecoveryError::BadShardsFile { path, found: text }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use format::{read_file_header, FileStart, LEGACY_HEADER_BYTES};

    /// A corekv 0.1 record: an 8-byte header (`len | crc`), no header checksum.
    fn legacy_put(out: &mut Vec<u8>, key: &[u8], version: u64, value: &[u8]) {
        let start = out.len();
        let put = format::Effect::Put {
            key,
            version,
            value,
            deadline: None,
        };
        format::write_effect(out, &put);
        out.drain(start + LEGACY_HEADER_BYTES..start + format::HEADER_BYTES);
    }

    /// Which shard's table holds each key, and its value and version.
    fn placement(tables: &[Table]) -> Vec<(Vec<u8>, usize, Vec<u8>, u64)> {
        let mut placed: Vec<_> = tables
            .iter()
            .enumerate()
            .flat_map(|(shard, table)| {
                table
                    .entries()
                    .map(move |e| (e.key().to_vec(), shard, e.value().to_vec(), e.version()))
            })
            .collect();
        placed.sort();
        placed
    }

    #[test]
    fn a_restart_with_the_other_routing_moves_every_key_to_its_owner_and_back() {
        let data = tempfile::tempdir().expect("temp dir");
        let hash = Router::new(3);
        let slots = Router::with_routing(3, Routing::Slots);
        let mut tables: Vec<Table> = (0..3).map(|_| Table::new(u64::MAX)).collect();
        let keys: Vec<Vec<u8>> = (0..300)
            .map(|i| format!("{{tag{}}}:key{i}", i % 7).into_bytes())
            .collect();
        for (i, key) in keys.iter().enumerate() {
            let text = format!("v{i}");
            let value = [&[0xa0 | text.len() as u8][..], text.as_bytes()].concat();
            tables[hash.route(key).0].load(key, value, i as u64 + 1);
        }
        write_log_set(
            data.path(),
            &mut tables,
            Routing::Hash,
            false,
            OldLogs::new(&[]),
        )
        .expect("write logs");
        let written = placement(&tables);
        let shards_file = log_dir(data.path()).join(SHARDS_FILE);
        for (router, text) in [(&slots, "3 slots\n"), (&hash, "3\n"), (&hash, "3\n")] {
            let recovered = recover(data.path(), router, false, false).expect("recover");
            let placed = placement(&recovered.tables);
            assert_eq!(placed.len(), keys.len());
            for (key, shard, _, _) in &placed {
                assert_eq!(*shard, router.route(key).0, "{key:?}");
            }
            let strip = |p: &[(Vec<u8>, usize, Vec<u8>, u64)]| {
                p.iter()
                    .map(|(k, _, v, n)| (k.clone(), v.clone(), *n))
                    .collect::<Vec<_>>()
            };
            assert_eq!(strip(&placed), strip(&written), "values and versions kept");
            assert_eq!(fs::read_to_string(&shards_file).expect("SHARDS"), text);
        }
    }

    #[test]
    fn a_shards_file_naming_an_unknown_routing_is_refused() {
        let data = tempfile::tempdir().expect("temp dir");
        let dir = log_dir(data.path());
        fs::create_dir_all(&dir).expect("mkdir");
        for text in ["2 ring\n", "2 slots extra\n", "0\n", "slots\n"] {
            fs::write(dir.join(SHARDS_FILE), text).expect("SHARDS");
            let error = read_shards_file(&dir).expect_err(text);
            assert!(
                matches!(error, RecoveryError::BadShardsFile { .. }),
                "{error}"
            );
        }
    }

    #[test]
    fn logs_in_the_legacy_format_are_upgraded_with_every_key_and_version() {
        let data = tempfile::tempdir().expect("temp dir");
        let dir = log_dir(data.path());
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join(SHARDS_FILE), "1\n").expect("SHARDS");
        let mut legacy = Vec::new();
        legacy_put(&mut legacy, b"small", 3, b"\xa1s");
        legacy_put(&mut legacy, b"big", 7, &vec![0xc4; 3 << 20]);
        fs::write(shard_log_path(&dir, 0), &legacy).expect("log");
        for _ in 0..2 {
            let recovered = recover(data.path(), &Router::new(1), false, false).expect("recover");
            assert_eq!(recovered.tables[0].peek(b"small"), Some((&b"\xa1s"[..], 3)));
            assert_eq!(
                recovered.tables[0]
                    .peek(b"big")
                    .map(|(v, version)| (v.len(), version)),
                Some((3 << 20, 7))
            );
            let upgraded = fs::read(shard_log_path(&dir, 0)).expect("log");
            assert!(matches!(read_file_header(&upgraded), FileStart::Header(_)));
        }
    }
}
