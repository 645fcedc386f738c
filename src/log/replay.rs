//! Replaying one shard's log file into a table, at start-up.
//!
//! Rules, in the order they apply:
//! - The file header gives the file's framing and epoch (`log::format`); a
//!   file without one is a corekv 0.1 log, read with the old framing.
//! - Records are applied in file order; PUT restores the exact version. The
//!   disk engine keeps a PUT's value as its location in the file, or inline
//!   if it is small (`entry::stays_inline`).
//! - A BATCH (single-shard ATOMIC) is one record: applied whole.
//! - A PREPARE is held aside until this file's DECIDE for it (applied if
//!   commit). One still undecided at the end of the file is *pending*: the caller
//!   resolves it with the coordinator's COMMIT records from every file. A file
//!   that continues an earlier one of its shard (the disk engine's segments,
//!   `log::segments`) starts with the earlier one's pending batches
//!   ([`replay_continuing`]), so a DECIDE may come a file later.
//! - At the first record that is incomplete or damaged, the rest of the file is
//!   examined ([`intact_record_after_damage`]): if no intact record follows, it
//!   is a torn tail (a write cut short by a crash, or zero padding) and the file
//!   is valid up to there. If an intact record follows, the damage is in the
//!   middle of the log: replay refuses with an error naming file and offset,
//!   unless salvaging, which keeps what precedes the damage and drops the rest.
//!   (A power loss during a sync can leave that too, the pages of one write
//!   reaching the disk out of order; what follows the damage was then never
//!   acknowledged. Refusing costs a restart with `--salvage`, never a write.)
//!
//! # Looking past damage
//!
//! A record may only start where the previous one's length says, so when the
//! damaged record's header is intact (its checksum covers its length), the
//! search resumes after its body: a torn value's bytes are never examined. Only
//! when the header itself is damaged does the search try every later offset,
//! and then it accepts only headers checksummed with this file's epoch, which
//! client bytes cannot carry. Each offset costs one 16-byte checksum, each
//! valid header's body is checksummed once and skipped, and runs of zeros are
//! skipped without checksums: the search is linear in the bytes after the
//! damage, whatever they are.
//!
//! The file is read in chunks through one reused buffer, not whole: a record is
//! parsed while its bytes are still in the CPU's cache. A record longer than the
//! buffer grows it to the record's size. The table is sized from the first
//! records, so the map does not rehash every key as it grows.

use super::compaction::{snapshot_bytes, LiveScale, SNAPSHOT_PADDING_SLACK};
use super::format::{
    decode_at, frame_bytes, read_file_header, valid_header_len, Decoded, Effect, FileStart,
    Framing, Record, FILE_HEADER_BYTES,
};
use super::RecoveryError;
use crate::entry::ValueCheck;
use crate::ids::TxnId;
use crate::table::{Location, Table};
use hashbrown::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// An effect copied out of the file buffer, kept until its batch is resolved.
#[derive(Debug, Clone)]
pub enum OwnedEffect {
    Put {
        key: Box<[u8]>,
        version: u64,
        value: Arc<[u8]>,
        deadline: Option<u64>,
    },
    Del {
        key: Box<[u8]>,
    },
    Expire {
        key: Box<[u8]>,
        deadline: Option<u64>,
    },
}

impl OwnedEffect {
    /// The effect as the log writes it, borrowing this one's bytes.
    pub fn borrowed(&self) -> Effect<'_> {
        match self {
            OwnedEffect::Put {
                key,
                version,
                value,
                deadline,
            } => Effect::Put {
                key,
                version: *version,
                value,
                deadline: *deadline,
            },
            OwnedEffect::Del { key } => Effect::Del { key },
            OwnedEffect::Expire { key, deadline } => Effect::Expire {
                key,
                deadline: *deadline,
            },
        }
    }
}

/// An effect of a prepared share, kept until its batch is decided: owned,
/// or, for a disk engine's value that does not stay in its entry, where
/// its bytes lie in the PREPARE record (the value is not held in memory).
#[derive(Debug, Clone)]
pub enum PreparedEffect {
    Owned(OwnedEffect),
    OnDisk {
        key: Box<[u8]>,
        version: u64,
        location: Location,
        deadline: Option<u64>,
    },
}

/// What replaying one file found.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Prepared shares with no decision in this file.
    pub pending: HashMap<TxnId, Vec<PreparedEffect>>,
    /// Cross-shard batches this shard coordinated and committed.
    pub commits: HashSet<TxnId>,
    /// The highest batch sequence number in any record (new batches must not
    /// reuse one: an old COMMIT record would decide them).
    pub max_txn_seq: Option<u64>,
    /// Bytes of the file that hold intact records.
    pub valid_bytes: u64,
    /// Bytes after them: a torn tail, or (salvaging) everything after damage.
    pub dropped_bytes: u64,
    /// Zeros after them: space the writer allocated ahead, kept.
    pub preallocated_bytes: u64,
    pub nr_records: u64,
    /// Keys loaded from a hint file (the disk engine) rather than from records.
    pub hinted_keys: u64,
    /// With a hint: what its snapshot took on disk against the live data
    /// estimated for its keys, as the compaction that wrote it measured.
    pub live_scale: Option<LiveScale>,
    /// How the file's records are framed (and its epoch).
    pub framing: Option<Framing>,
    /// Bytes checksummed while looking past damage: linear in the length of
    /// the damaged region, whatever its bytes (the tests hold it to that).
    pub scan_hashed_bytes: u64,
}

/// Where a record being replayed lies, so that a disk engine's table can
/// point its keys at their values' bytes in the file.
#[derive(Clone, Copy)]
struct RecordSite<'a> {
    /// The number the file's entries carry (`entry::Location::file`).
    file: u32,
    /// The record's bytes and the file offset of their first byte.
    bytes: &'a [u8],
    offset: u64,
    /// Whether a PUT or PUTX record found here is what checks its value's
    /// reads (`entry::ValueCheck::Record`): in a file with 12-byte record
    /// headers, for a value alone in its record. Values inside a BATCH,
    /// and those of a corekv 0.1 file (rewritten before any is read), keep
    /// a CRC-32.
    checked_by_record: bool,
}

impl RecordSite<'_> {
    /// Where `value`, a slice of the record's bytes, lies in the file (its
    /// record a PUTX, `with_deadline`).
    fn locate(&self, value: &[u8], with_deadline: bool) -> Location {
        let within = value.as_ptr() as usize - self.bytes.as_ptr() as usize;
        debug_assert!(within + value.len() <= self.bytes.len());
        Location {
            file: self.file,
            offset: self.offset + within as u64,
            len: value.len() as u32,
            check: match self.checked_by_record {
                true => ValueCheck::Record { with_deadline },
                false => ValueCheck::Crc(crc32fast::hash(value)),
            },
        }
    }
}

/// Replays `path` into `table`. A disk engine's table gets the location of
/// each value (in file number `file`), not the value.
pub fn replay_file(
    path: &Path,
    table: &mut Table,
    salvage: bool,
    file: u32,
) -> Result<Replayed, RecoveryError> {
    replay_continuing(path, table, salvage, file, HashMap::new())
}

/// As [`replay_file`], for a file that continues an earlier one of the same
/// shard (`log::segments`): `prepared` holds the batches prepared there and
/// not yet decided, which a DECIDE in this file may decide.
pub fn replay_continuing(
    path: &Path,
    table: &mut Table,
    salvage: bool,
    file: u32,
    mut prepared: HashMap<TxnId, Vec<PreparedEffect>>,
) -> Result<Replayed, RecoveryError> {
    let io_err = |source| RecoveryError::Io {
        path: path.to_owned(),
        source,
    };
    let mut log = LogReader::open(path).map_err(io_err)?;
    // The header alone (not a buffer's worth of records): with a hint file
    // the records it describes are never read.
    let framing = match read_file_header(&log.read_header().map_err(io_err)?) {
        FileStart::Header(framing) => framing,
        FileStart::Legacy => Framing::Legacy,
        FileStart::Bad(reason) => {
            return Err(RecoveryError::BadFileHeader {
                path: path.to_owned(),
                reason,
            })
        }
    };
    log.skip(framing.records_start() as u64);
    let mut replayed = Replayed {
        framing: Some(framing),
        ..Replayed::default()
    };
    // The disk engine starts from the hint of a compacted or merged file,
    // when there is a valid one, and replays only what follows its PUT
    // records. The hint of the shard's first file (a compaction's snapshot,
    // or a prefix merge's output) describes all the live data: it also
    // gives the live-data scale.
    let first = table.is_empty() && prepared.is_empty();
    if let (true, false, Framing::Epoch(epoch)) = (table.keeps_values_on_disk(), salvage, framing) {
        match super::hint::load(path, epoch, log.len, table, file) {
            Ok(hint) => {
                replayed.hinted_keys = hint.count;
                if first {
                    replayed.live_scale = Some(hinted_scale(table, hint.puts_end));
                }
                log.rewind_to(hint.puts_end);
            }
            Err(super::hint::Unusable::Missing) => {}
            Err(why) => tracing::warn!(
                "{}: not using its hint file ({why}); reading the whole log",
                path.display()
            ),
        }
    }
    loop {
        let offset = log.offset();
        let rest = log.next_record(framing).map_err(io_err)?;
        if rest.is_empty() {
            break;
        }
        let reason = match decode_at(rest, 0, framing) {
            Decoded::Record(record, len) => {
                if let Some(txn) = record.txn() {
                    replayed.max_txn_seq = replayed.max_txn_seq.max(Some(txn.seq));
                }
                let site = RecordSite {
                    file,
                    bytes: rest,
                    offset,
                    checked_by_record: matches!(framing, Framing::Epoch(_)),
                };
                // Padding is no record of a change: not counted.
                replayed.nr_records += u64::from(record != Record::Pad);
                apply(record, site, table, &mut prepared, &mut replayed.commits);
                log.consume(len);
                if replayed.nr_records == SIZING_SAMPLE_RECORDS {
                    reserve_for_rest(table, &log, replayed.nr_records);
                }
                continue;
            }
            Decoded::Incomplete => "incomplete record".to_owned(),
            Decoded::Damaged(reason) => reason,
        };
        let offset = log.offset();
        let mut scan = Scan::default();
        let after = after_damage(&mut log, framing, &mut scan).map_err(io_err)?;
        replayed.scan_hashed_bytes = scan.hashed_bytes;
        log.rewind_to(offset);
        match after {
            AfterDamage::Zeros => {
                // Space allocated ahead of the writer: the log ends here.
                replayed.valid_bytes = offset;
                replayed.preallocated_bytes = log.len - offset;
                table.shrink_to_fit();
                replayed.pending = prepared;
                return Ok(replayed);
            }
            AfterDamage::Torn => {}
            AfterDamage::Intact(intact_at) if !salvage => {
                return Err(RecoveryError::Corrupt {
                    path: path.to_owned(),
                    offset,
                    reason,
                    intact_at,
                });
            }
            AfterDamage::Intact(intact_at) => tracing::warn!(
                "{}: {reason} at offset {offset}; salvaging: keeping the {offset} bytes before it and \
                 dropping {} bytes (intact records from offset {intact_at} are lost)",
                path.display(),
                log.len - offset
            ),
        }
        break;
    }
    table.shrink_to_fit();
    replayed.valid_bytes = log.offset();
    replayed.dropped_bytes = log.len - log.offset();
    replayed.pending = prepared;
    Ok(replayed)
}

/// Records replayed before the table is sized from them.
const SIZING_SAMPLE_RECORDS: u64 = 10_000;

/// Reserves room in `table` for the keys of the rest of the file, estimated at
/// one per record at the average record size so far, so that the map does not
/// rehash every key each time it doubles. Overwrites and deletions make the
/// estimate high; [`Table::shrink_to_fit`] after the file gives the excess back.
/// The live-data scale of a snapshot whose PUT records end at `puts_end`,
/// with the table holding exactly the keys its hint loaded: what the
/// compaction that wrote it measured (`compaction::LiveScale`), so that a
/// restart does not take a log of padded records for one twice its live
/// data and compact it again at once.
fn hinted_scale(table: &Table, puts_end: u64) -> LiveScale {
    let stats = table.stats();
    LiveScale {
        estimated: snapshot_bytes(stats.keys, table.key_bytes(), stats.value_bytes),
        measured: puts_end + SNAPSHOT_PADDING_SLACK,
    }
}

fn reserve_for_rest(table: &mut Table, log: &LogReader, nr_records: u64) {
    let bytes_per_record = (log.offset() / nr_records).max(1);
    let estimate = (log.len - log.offset()) / bytes_per_record;
    table.reserve(usize::try_from(estimate).unwrap_or(usize::MAX));
}

/// Bytes read from a log at a time.
const CHUNK_BYTES: usize = 1 << 20;

/// Reads a log front to back through one reused buffer of [`CHUNK_BYTES`]
/// (larger only for a larger record), not the whole file at once: records are
/// parsed while the read has them in the CPU's cache, and replay allocates
/// nothing the size of the file.
struct LogReader {
    file: File,
    /// The file's length when opened (the data directory is locked: nothing
    /// else writes it), or where reading it ended, if sooner.
    len: u64,
    buf: Vec<u8>,
    /// `buf[start..end]` holds the bytes not yet consumed.
    start: usize,
    end: usize,
    /// The file offset of `buf[0]`.
    buf_offset: u64,
}

impl LogReader {
    fn open(path: &Path) -> io::Result<LogReader> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(LogReader {
            file,
            len,
            buf: vec![0; CHUNK_BYTES],
            start: 0,
            end: 0,
            buf_offset: 0,
        })
    }

    /// The file's first bytes (a file header's worth, fewer if the file is
    /// shorter), read on their own; the reading position stays at 0.
    fn read_header(&mut self) -> io::Result<Vec<u8>> {
        let mut header = vec![0u8; FILE_HEADER_BYTES.min(self.len as usize)];
        self.file.read_exact_at(&mut header, 0)?;
        Ok(header)
    }

    /// The file offset of the next unconsumed byte.
    fn offset(&self) -> u64 {
        self.buf_offset + self.start as u64
    }

    /// The unconsumed bytes, holding the whole next record as far as its
    /// header tells (see [`frame_bytes`]) unless the file ends first; empty at
    /// the end of the file.
    fn next_record(&mut self, framing: Framing) -> io::Result<&[u8]> {
        // The header first: with fewer bytes than a header buffered, the record's
        // length is unknown, and one buffer's worth may not hold the record.
        self.fill(framing.header_bytes())?;
        self.fill(frame_bytes(&self.buf[self.start..self.end], framing))?;
        Ok(&self.buf[self.start..self.end])
    }

    /// At least `want` unconsumed bytes (fewer only at the end of the file).
    fn peek(&mut self, want: usize) -> io::Result<&[u8]> {
        self.fill(want)?;
        Ok(&self.buf[self.start..self.end])
    }

    /// Every byte from the current offset to the end of the file.
    fn rest_of_file(&mut self) -> io::Result<&[u8]> {
        self.fill(usize::MAX)?;
        Ok(&self.buf[self.start..self.end])
    }

    fn consume(&mut self, bytes: usize) {
        let bytes = bytes.min(self.end - self.start);
        self.start += bytes;
    }

    /// Skips `bytes`, reading past what is buffered if need be.
    fn skip(&mut self, bytes: u64) {
        let buffered = (self.end - self.start) as u64;
        if bytes <= buffered {
            self.start += bytes as usize;
            return;
        }
        let to = (self.offset() + bytes).min(self.len);
        self.rewind_to(to);
    }

    /// Moves the reading position to `offset`, dropping the buffered bytes.
    fn rewind_to(&mut self, offset: u64) {
        if offset >= self.buf_offset && offset <= self.buf_offset + self.end as u64 {
            self.start = (offset - self.buf_offset) as usize;
            return;
        }
        self.buf_offset = offset;
        self.start = 0;
        self.end = 0;
    }

    /// Makes the unconsumed bytes number at least `want`, or all the rest of
    /// the file if fewer, reading as much as the buffer holds each time.
    fn fill(&mut self, want: usize) -> io::Result<()> {
        let left_in_file = usize::try_from(self.len - self.offset()).unwrap_or(usize::MAX);
        let want = want.min(left_in_file);
        if self.end - self.start >= want {
            return Ok(());
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.buf_offset += self.start as u64;
        self.end -= self.start;
        self.start = 0;
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        while self.end < want {
            let at = self.buf_offset + self.end as u64;
            match self.file.read_at(&mut self.buf[self.end..], at) {
                Ok(0) => {
                    self.len = at;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Work done looking past damage.
#[derive(Debug, Default)]
struct Scan {
    hashed_bytes: u64,
}

/// What follows the first record that is incomplete or damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterDamage {
    /// Only zeros, to the end of the file: space allocated ahead of the writer.
    Zeros,
    /// No intact record: a torn tail, to be cut.
    Torn,
    /// An intact record at this file offset: damage in the middle.
    Intact(u64),
}

/// Looks past the damage at the reader's offset (see the module doc). Moves
/// the reader.
fn after_damage(log: &mut LogReader, framing: Framing, scan: &mut Scan) -> io::Result<AfterDamage> {
    if framing == Framing::Legacy {
        let offset = log.offset();
        let rest = log.rest_of_file()?;
        return Ok(match next_intact_legacy_record(rest) {
            Some(at) => AfterDamage::Intact(offset + at as u64),
            None => AfterDamage::Torn,
        });
    }
    let header = framing.header_bytes();
    let mut nonzero = false;
    // A damaged record whose header is intact ends where its length says.
    let damaged = log.peek(header)?;
    nonzero |= damaged.iter().any(|&b| b != 0);
    scan.hashed_bytes += header as u64;
    match valid_header_len(damaged, framing) {
        Some(len) => log.skip(header as u64 + u64::from(len)),
        None => log.consume(1),
    }
    loop {
        let rest = log.peek(header)?;
        if rest.len() < header {
            nonzero |= rest.iter().any(|&b| b != 0);
            return Ok(if nonzero {
                AfterDamage::Torn
            } else {
                AfterDamage::Zeros
            });
        }
        // A record's length field is never zero: skip zeros without checksums.
        if rest[..4] == [0; 4] {
            let skip = rest
                .iter()
                .position(|&b| b != 0)
                .map_or(rest.len() - 3, |nonzero| nonzero.saturating_sub(3));
            log.consume(skip.max(1));
            continue;
        }
        nonzero = true;
        scan.hashed_bytes += header as u64;
        let Some(len) = valid_header_len(rest, framing) else {
            log.consume(1);
            continue;
        };
        let want = header + len as usize;
        let candidate = log.peek(want)?;
        if candidate.len() < want {
            return Ok(AfterDamage::Torn); // a record cut short by the end of the file
        }
        scan.hashed_bytes += u64::from(len);
        if let Decoded::Record(..) = decode_at(candidate, 0, framing) {
            return Ok(AfterDamage::Intact(log.offset()));
        }
        log.consume(want);
    }
}

/// In a corekv 0.1 log (no epoch): the offset of the first intact record in
/// `rest` after its first byte, trying every offset.
fn next_intact_legacy_record(rest: &[u8]) -> Option<usize> {
    (1..rest.len()).find(|&at| matches!(decode_at(rest, at, Framing::Legacy), Decoded::Record(..)))
}

fn apply(
    record: Record<'_>,
    site: RecordSite<'_>,
    table: &mut Table,
    prepared: &mut HashMap<TxnId, Vec<PreparedEffect>>,
    commits: &mut HashSet<TxnId>,
) {
    match record {
        Record::Effect(effect) => apply_effect(table, &effect, site),
        Record::Batch(effects) => {
            let site = RecordSite {
                checked_by_record: false,
                ..site
            };
            effects.iter().for_each(|e| apply_effect(table, e, site))
        }
        Record::Prepare { txn, effects } => {
            let site = RecordSite {
                checked_by_record: false,
                ..site
            };
            let kept = effects.iter().map(|e| to_prepared(table, e, site));
            prepared.insert(txn, kept.collect());
        }
        Record::Decide { txn, commit } => {
            if let Some(effects) = prepared.remove(&txn) {
                if commit {
                    apply_prepared(table, effects);
                }
            }
        }
        Record::Commit { txn } => {
            commits.insert(txn);
        }
        Record::Pad => {}
    }
}

/// Whether `table` keeps `value` on disk only (a disk engine's, not one
/// small enough to stay in its entry).
fn kept_on_disk(table: &Table, value: &[u8]) -> bool {
    table.keeps_values_on_disk() && !crate::entry::stays_inline(value.len())
}

fn apply_effect(table: &mut Table, effect: &Effect<'_>, site: RecordSite<'_>) {
    match effect {
        Effect::Put {
            key,
            version,
            value,
            deadline,
        } if kept_on_disk(table, value) => {
            let location = site.locate(value, deadline.is_some());
            table.load_on_disk(key, location, *version, *deadline)
        }
        Effect::Put {
            key,
            version,
            value,
            deadline,
        } => table.load_expiring(key, value, *version, *deadline),
        Effect::Del { key } => {
            table.unload(key);
        }
        Effect::Expire { key, deadline } => table.load_deadline(key, *deadline),
    }
}

fn to_owned(effect: &Effect<'_>) -> OwnedEffect {
    match effect {
        Effect::Put {
            key,
            version,
            value,
            deadline,
        } => OwnedEffect::Put {
            key: Box::from(*key),
            version: *version,
            value: Arc::from(*value),
            deadline: *deadline,
        },
        Effect::Del { key } => OwnedEffect::Del {
            key: Box::from(*key),
        },
        Effect::Expire { key, deadline } => OwnedEffect::Expire {
            key: Box::from(*key),
            deadline: *deadline,
        },
    }
}

/// A prepared share's `effect` to keep until its batch is decided: a disk
/// engine's value that does not stay in its entry by its place at `site`.
fn to_prepared(table: &Table, effect: &Effect<'_>, site: RecordSite<'_>) -> PreparedEffect {
    match effect {
        Effect::Put {
            key,
            version,
            value,
            deadline,
        } if kept_on_disk(table, value) => PreparedEffect::OnDisk {
            key: Box::from(*key),
            version: *version,
            location: site.locate(value, deadline.is_some()),
            deadline: *deadline,
        },
        _ => PreparedEffect::Owned(to_owned(effect)),
    }
}

/// Applies a committed batch's prepared share.
pub fn apply_prepared(table: &mut Table, effects: Vec<PreparedEffect>) {
    for effect in effects {
        match effect {
            PreparedEffect::Owned(effect) => apply_owned(table, effect),
            PreparedEffect::OnDisk {
                key,
                version,
                location,
                deadline,
            } => table.load_on_disk(&key, location, version, deadline),
        }
    }
}

/// Applies one effect of a committed batch.
fn apply_owned(table: &mut Table, effect: OwnedEffect) {
    match effect {
        OwnedEffect::Put {
            key,
            version,
            value,
            deadline,
        } => table.load_expiring(&key, value, version, deadline),
        OwnedEffect::Del { key } => {
            table.unload(&key);
        }
        OwnedEffect::Expire { key, deadline } => table.load_deadline(&key, deadline),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::format::{
        stamp, write_effect, write_file_header, HEADER_BYTES, LEGACY_HEADER_BYTES,
    };
    use proptest::prelude::*;

    const EPOCH: u64 = 0x0123_4567_89ab_cdef;
    /// PUT body bytes besides the value: kind, key length, version, value length.
    const PUT_OVERHEAD: usize = 1 + 4 + 8 + 4;

    /// A log file (header + records stamped for [`EPOCH`]) being built.
    struct LogFile {
        bytes: Vec<u8>,
        /// Where each record starts, and its key.
        records: Vec<(usize, Vec<u8>)>,
    }

    impl LogFile {
        fn new() -> LogFile {
            let mut bytes = Vec::new();
            write_file_header(&mut bytes, EPOCH);
            LogFile {
                bytes,
                records: Vec::new(),
            }
        }

        /// Appends a PUT of `key` whose whole record (header included) takes
        /// `record_bytes` bytes.
        fn put_sized(&mut self, key: &str, record_bytes: usize) -> &mut LogFile {
            let value_len = record_bytes - HEADER_BYTES - PUT_OVERHEAD - key.len();
            self.put(key, &vec![0xa5; value_len])
        }

        fn put(&mut self, key: &str, value: &[u8]) -> &mut LogFile {
            let start = self.bytes.len();
            let put = Effect::Put {
                key: key.as_bytes(),
                version: self.records.len() as u64 + 1,
                value,
                deadline: None,
            };
            write_effect(&mut self.bytes, &put);
            stamp(&mut self.bytes[start..], EPOCH);
            self.records.push((start, key.as_bytes().to_vec()));
            self
        }
    }

    fn replay_bytes(log: &[u8], salvage: bool) -> (Result<Replayed, RecoveryError>, Table) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("shard-0.log");
        std::fs::write(&path, log).expect("write log");
        let mut table = Table::new(u64::MAX);
        (replay_file(&path, &mut table, salvage, 0), table)
    }

    /// Replays an intact log and checks every record of it came back.
    fn assert_replays_whole(log: &LogFile, context: &str) {
        let (replayed, table) = replay_bytes(&log.bytes, false);
        let replayed = replayed.unwrap_or_else(|e| panic!("{context}: {e}"));
        assert_eq!(
            (replayed.nr_records, replayed.dropped_bytes),
            (log.records.len() as u64, 0),
            "{context}"
        );
        for (i, (start, key)) in log.records.iter().enumerate() {
            let end = log.records.get(i + 1).map_or(log.bytes.len(), |r| r.0);
            let expected_value = end - start - HEADER_BYTES - PUT_OVERHEAD - key.len();
            let found = table
                .peek(key)
                .map(|(value, version)| (value.len(), version));
            assert_eq!(
                found,
                Some((expected_value, i as u64 + 1)),
                "{context}: record {i}"
            );
        }
    }

    /// Record sizes on both sides of the reader's buffer size and beyond it.
    fn boundary_sizes() -> Vec<usize> {
        let small = HEADER_BYTES + PUT_OVERHEAD + 8;
        vec![
            small,
            CHUNK_BYTES - 7,
            CHUNK_BYTES - 1,
            CHUNK_BYTES,
            CHUNK_BYTES + 1,
            2 * CHUNK_BYTES,
            8 * CHUNK_BYTES,
        ]
    }

    #[test]
    fn a_record_of_any_size_replays_as_the_first_record_of_a_log() {
        for size in boundary_sizes() {
            let mut alone = LogFile::new();
            alone.put_sized("big", size);
            assert_replays_whole(&alone, &format!("alone, {size} bytes"));
            let mut followed = LogFile::new();
            followed.put_sized("big", size).put("after", b"\xa1x");
            assert_replays_whole(&followed, &format!("first of two, {size} bytes"));
        }
    }

    #[test]
    fn a_record_of_any_size_replays_wherever_it_starts_against_the_buffer() {
        let small = HEADER_BYTES + PUT_OVERHEAD + 8;
        for size in boundary_sizes() {
            // Start the big record at every offset around the end of the first
            // buffer: with 0..=small+1 bytes of the buffer left for it.
            for left in [0, 1, 3, 4, HEADER_BYTES - 1, HEADER_BYTES, small + 1] {
                let mut log = LogFile::new();
                let mut filler = 0;
                while CHUNK_BYTES - log.bytes.len() > left + 2 * small {
                    let room = CHUNK_BYTES - log.bytes.len() - left - small;
                    log.put_sized(&format!("f{filler:06}"), room.min(64 * 1024));
                    filler += 1;
                }
                let rest = CHUNK_BYTES - log.bytes.len() - left;
                log.put_sized(&format!("f{filler:06}"), rest);
                assert_eq!(CHUNK_BYTES - log.bytes.len(), left);
                log.put_sized("big", size).put("after", b"\xa1x");
                assert_replays_whole(
                    &log,
                    &format!("{size} bytes with {left} left in the buffer"),
                );
            }
        }
    }

    #[test]
    fn damage_past_the_first_chunk_is_reported_at_its_file_offset() {
        let mut log = LogFile::new();
        for i in 0..30_000 {
            log.put(&format!("key-{i}"), &[i as u8; 100]);
        }
        let (damaged_at, intact_at) = (log.records[20_000].0, log.records[20_001].0);
        log.bytes[damaged_at + HEADER_BYTES + 20] ^= 1;
        match replay_bytes(&log.bytes, false).0 {
            Err(RecoveryError::Corrupt {
                offset,
                intact_at: found,
                ..
            }) => assert_eq!((offset, found), (damaged_at as u64, intact_at as u64)),
            other => panic!("{other:?}"),
        }
        let (salvaged, table) = replay_bytes(&log.bytes, true);
        let salvaged = salvaged.expect("salvage");
        assert_eq!(
            (salvaged.valid_bytes, salvaged.dropped_bytes),
            (damaged_at as u64, (log.bytes.len() - damaged_at) as u64)
        );
        assert_eq!(table.len(), 20_000);
    }

    #[test]
    fn a_torn_tail_after_the_first_chunk_is_cut() {
        let mut log = LogFile::new();
        for i in 0..30_000 {
            log.put(&format!("key-{i}"), &[i as u8; 100]);
        }
        log.put_sized("big", CHUNK_BYTES + 3);
        let torn = &log.bytes[..log.bytes.len() - 5];
        let (replayed, table) = replay_bytes(torn, false);
        let replayed = replayed.expect("a torn tail is not corruption");
        let cut = log.records[30_000].0 as u64;
        assert_eq!(
            (replayed.valid_bytes, replayed.dropped_bytes),
            (cut, torn.len() as u64 - cut)
        );
        assert_eq!(table.len(), 30_000);
    }

    /// A value holding a perfect image of a record (even one stamped with this
    /// file's own epoch, which no client can know) and torn by a crash is a
    /// torn tail: the value's bytes are never taken for records.
    #[test]
    fn a_torn_value_holding_a_record_image_is_a_torn_tail() {
        for epoch in [EPOCH, EPOCH ^ 1] {
            let mut image = Vec::new();
            write_effect(
                &mut image,
                &Effect::Put {
                    key: b"forged",
                    version: 99,
                    value: b"\xa4evil",
                    deadline: None,
                },
            );
            stamp(&mut image, epoch);
            let mut value = vec![0x90; 1000];
            for _ in 0..100 {
                value.extend_from_slice(&image);
            }
            value.extend_from_slice(&[0x90; 1000]);
            let mut log = LogFile::new();
            log.put("before", b"\xa1x").put("victim", &value);
            let torn = &log.bytes[..log.bytes.len() - 500];
            let (replayed, table) = replay_bytes(torn, false);
            let replayed = replayed.expect("a torn tail, whatever the value holds");
            assert_eq!(replayed.valid_bytes, log.records[1].0 as u64);
            assert_eq!(table.len(), 1);
            assert!(table.peek(b"forged").is_none());
        }
    }

    /// The worst case of the old resynchronisation: a 12 MiB value of repeated
    /// `00 10 10 00`, whose every offset claims a plausible length. Looking past
    /// it checksums a bounded multiple of its size, header damaged or not.
    #[test]
    fn looking_past_damage_is_linear_in_the_bytes_after_it() {
        let value: Vec<u8> = [0x00, 0x10, 0x10, 0x00].repeat(3 << 20);
        let mut log = LogFile::new();
        for i in 0..100 {
            log.put(&format!("key-{i}"), b"\xa1x");
        }
        log.put("pattern", &value);
        let start = log.records[100].0;
        let torn = log.bytes[..log.bytes.len() - CHUNK_BYTES].to_vec();
        let mut header_damaged = torn.clone();
        header_damaged[start] ^= 0x01;
        for (bytes, what) in [(&torn, "torn"), (&header_damaged, "torn, header damaged")] {
            let (replayed, table) = replay_bytes(bytes, false);
            let replayed = replayed.unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(replayed.valid_bytes, start as u64, "{what}");
            assert_eq!(table.len(), 100, "{what}");
            let after = (bytes.len() - start) as u64;
            assert!(
                replayed.scan_hashed_bytes <= 17 * after,
                "{what}: {} bytes checksummed looking past {after} bytes",
                replayed.scan_hashed_bytes
            );
        }
    }

    #[test]
    fn zero_padding_after_the_last_record_is_a_torn_tail() {
        let mut log = LogFile::new();
        log.put("a", b"\xa1x").put("b", b"\xa1y");
        let end = log.bytes.len();
        log.bytes.resize(end + 8 * CHUNK_BYTES, 0);
        let (replayed, table) = replay_bytes(&log.bytes, false);
        let replayed = replayed.expect("zeros are a torn tail");
        assert_eq!(replayed.valid_bytes, end as u64);
        assert_eq!(table.len(), 2);
        assert!(
            replayed.scan_hashed_bytes <= 64,
            "zeros are skipped unchecksummed"
        );
    }

    #[test]
    fn a_record_stamped_for_another_file_is_not_replayed() {
        let mut log = LogFile::new();
        log.put("a", b"\xa1x");
        let end = log.bytes.len();
        let mut stale = Vec::new();
        write_effect(
            &mut stale,
            &Effect::Put {
                key: b"stale",
                version: 7,
                value: b"\xa1s",
                deadline: None,
            },
        );
        stamp(&mut stale, EPOCH.wrapping_add(1));
        log.bytes.extend_from_slice(&stale);
        let (replayed, table) = replay_bytes(&log.bytes, false);
        assert_eq!(
            replayed.expect("a stale record is a torn tail").valid_bytes,
            end as u64
        );
        assert!(table.peek(b"stale").is_none());
    }

    #[test]
    fn a_damaged_file_header_refuses_the_start_even_when_salvaging() {
        let mut log = LogFile::new();
        log.put("a", b"\xa1x");
        log.bytes[20] ^= 0x08;
        for salvage in [false, true] {
            match replay_bytes(&log.bytes, salvage).0 {
                Err(RecoveryError::BadFileHeader { .. }) => {}
                other => panic!("salvage {salvage}: {other:?}"),
            }
        }
    }

    /// A corekv 0.1 log (no file header, 8-byte record headers) with a record
    /// larger than the buffer first, as 0.1 wrote after a compaction.
    #[test]
    fn a_legacy_log_replays() {
        let mut legacy = Vec::new();
        for (i, len) in [CHUNK_BYTES + 9, 10, 3 * CHUNK_BYTES]
            .into_iter()
            .enumerate()
        {
            let start = legacy.len();
            let key = format!("k{i}");
            let put = Effect::Put {
                key: key.as_bytes(),
                version: 1,
                value: &vec![1; len],
                deadline: None,
            };
            write_effect(&mut legacy, &put);
            legacy.drain(start + LEGACY_HEADER_BYTES..start + HEADER_BYTES);
        }
        let (replayed, table) = replay_bytes(&legacy, false);
        let replayed = replayed.expect("a legacy log");
        assert_eq!(replayed.framing, Some(Framing::Legacy));
        assert_eq!((replayed.nr_records, table.len()), (3, 3));
        assert_eq!(
            table.peek(b"k2").map(|(v, _)| v.len()),
            Some(3 * CHUNK_BYTES)
        );
    }

    /// Record sizes that favour the reader's boundaries: tiny, around the
    /// buffer size, and anywhere up to three buffers.
    fn record_size() -> impl Strategy<Value = usize> {
        // Room for the 9-byte keys the property test uses.
        let least = HEADER_BYTES + PUT_OVERHEAD + 16;
        prop_oneof![
            least..least + 64,
            (CHUNK_BYTES - 16)..(CHUNK_BYTES + 16),
            least..3 * CHUNK_BYTES,
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Any sequence of record sizes replays whole; cut anywhere, exactly the
        /// records before the cut come back.
        #[test]
        fn any_sequence_of_record_sizes_replays_and_cuts_cleanly(
            sizes in prop::collection::vec(record_size(), 1..8),
            cut_fraction in 0.0f64..1.0,
        ) {
            let mut log = LogFile::new();
            for (i, size) in sizes.iter().enumerate() {
                log.put_sized(&format!("k{i:08}"), *size);
            }
            assert_replays_whole(&log, &format!("sizes {sizes:?}"));
            let cut = FILE_HEADER_BYTES
                + ((log.bytes.len() - FILE_HEADER_BYTES) as f64 * cut_fraction) as usize;
            let (replayed, table) = replay_bytes(&log.bytes[..cut], false);
            let replayed = replayed.expect("a cut log is a torn tail");
            let whole = log.records.iter().enumerate().filter(|(i, (start, _))| {
                let end = log.records.get(i + 1).map_or(log.bytes.len(), |r| r.0);
                end <= cut && *start < cut
            }).count();
            prop_assert_eq!(table.len(), whole);
            prop_assert_eq!(
                replayed.valid_bytes,
                log.records.get(whole).map_or(log.bytes.len(), |r| r.0) as u64
            );
        }
    }
}
