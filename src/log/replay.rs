//! Replaying one shard's log file into a table, at start-up.
//!
//! Rules, in the order they apply:
//! - Records are applied in file order; PUT restores the exact version.
//! - A BATCH (single-shard ATOMIC) is one record: applied whole.
//! - A PREPARE is held aside until this file's DECIDE for it (applied if
//!   commit). One still undecided at the end of the file is *pending*: the caller
//!   resolves it with the coordinator's COMMIT records from every file.
//! - At the first record that is incomplete or damaged, the rest of the file is
//!   examined: if no intact record follows, it is a torn tail (a write cut short
//!   by a crash, or zero padding) and the file is valid up to there. If an intact
//!   record follows, the damage is in the middle of the log: replay refuses with
//!   an error naming file and offset, unless salvaging, which keeps what precedes
//!   the damage and drops the rest.
//!
//! The file is read in chunks through one reused buffer, not whole: a record is
//! parsed while its bytes are still in the CPU's cache. The table is sized from
//! the first records, so the map does not rehash every key as it grows.

use super::format::{decode_at, frame_bytes, Decoded, Effect, Record};
use super::RecoveryError;
use crate::table::Table;
use crate::txn::TxnId;
use hashbrown::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

/// An effect copied out of the file buffer, kept until its batch is resolved.
#[derive(Debug, Clone)]
pub enum OwnedEffect {
    Put {
        key: Box<[u8]>,
        version: u64,
        value: Arc<[u8]>,
    },
    Del {
        key: Box<[u8]>,
    },
}

/// What replaying one file found.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Prepared shares with no decision in this file.
    pub pending: HashMap<TxnId, Vec<OwnedEffect>>,
    /// Cross-shard batches this shard coordinated and committed.
    pub commits: HashSet<TxnId>,
    /// The highest batch sequence number in any record (new batches must not
    /// reuse one: an old COMMIT record would decide them).
    pub max_txn_seq: Option<u64>,
    /// Bytes of the file that hold intact records.
    pub valid_bytes: u64,
    /// Bytes after them: a torn tail, or (salvaging) everything after damage.
    pub dropped_bytes: u64,
    pub nr_records: u64,
}

/// Replays `path` into `table`.
pub fn replay_file(
    path: &Path,
    table: &mut Table,
    salvage: bool,
) -> Result<Replayed, RecoveryError> {
    let io_err = |source| RecoveryError::Io {
        path: path.to_owned(),
        source,
    };
    let mut log = LogReader::open(path).map_err(io_err)?;
    let mut replayed = Replayed::default();
    let mut prepared: HashMap<TxnId, Vec<OwnedEffect>> = HashMap::new();
    loop {
        let rest = log.next_record().map_err(io_err)?;
        if rest.is_empty() {
            break;
        }
        let reason = match decode_at(rest, 0) {
            Decoded::Record(record, len) => {
                if let Some(txn) = record.txn() {
                    replayed.max_txn_seq = replayed.max_txn_seq.max(Some(txn.seq));
                }
                apply(record, table, &mut prepared, &mut replayed.commits);
                replayed.nr_records += 1;
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
        let rest = log.rest_of_file().map_err(io_err)?;
        if let Some(intact_at) = next_intact_record(rest, 0).map(|at| offset + at as u64) {
            if !salvage {
                return Err(RecoveryError::Corrupt {
                    path: path.to_owned(),
                    offset,
                    reason,
                    intact_at,
                });
            }
            tracing::warn!(
                "{}: {reason} at offset {offset}; salvaging: keeping the {offset} bytes before it and \
                 dropping {} bytes (intact records from offset {intact_at} are lost)",
                path.display(),
                rest.len()
            );
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

    /// The file offset of the next unconsumed byte.
    fn offset(&self) -> u64 {
        self.buf_offset + self.start as u64
    }

    /// The unconsumed bytes, holding the whole next record as far as its
    /// header tells (see [`frame_bytes`]) unless the file ends first; empty at
    /// the end of the file.
    fn next_record(&mut self) -> io::Result<&[u8]> {
        self.fill(frame_bytes(&self.buf[self.start..self.end]))?;
        Ok(&self.buf[self.start..self.end])
    }

    /// Every byte from the current offset to the end of the file.
    fn rest_of_file(&mut self) -> io::Result<&[u8]> {
        self.fill(usize::MAX)?;
        Ok(&self.buf[self.start..self.end])
    }

    fn consume(&mut self, bytes: usize) {
        self.start += bytes;
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
            match self.file.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.len = self.buf_offset + self.end as u64;
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

/// The offset of the first intact record after `damaged`, if any.
fn next_intact_record(file: &[u8], damaged: usize) -> Option<usize> {
    (damaged + 1..file.len()).find(|&at| matches!(decode_at(file, at), Decoded::Record(..)))
}

fn apply(
    record: Record<'_>,
    table: &mut Table,
    prepared: &mut HashMap<TxnId, Vec<OwnedEffect>>,
    commits: &mut HashSet<TxnId>,
) {
    match record {
        Record::Effect(effect) => apply_effect(table, &effect),
        Record::Batch(effects) => effects.iter().for_each(|e| apply_effect(table, e)),
        Record::Prepare { txn, effects } => {
            prepared.insert(txn, effects.iter().map(to_owned).collect());
        }
        Record::Decide { txn, commit } => {
            if let Some(effects) = prepared.remove(&txn) {
                if commit {
                    apply_owned(table, effects);
                }
            }
        }
        Record::Commit { txn } => {
            commits.insert(txn);
        }
    }
}

fn apply_effect(table: &mut Table, effect: &Effect<'_>) {
    match effect {
        Effect::Put {
            key,
            version,
            value,
        } => table.load(key, Arc::from(*value), *version),
        Effect::Del { key } => {
            table.unload(key);
        }
    }
}

fn to_owned(effect: &Effect<'_>) -> OwnedEffect {
    match effect {
        Effect::Put {
            key,
            version,
            value,
        } => OwnedEffect::Put {
            key: Box::from(*key),
            version: *version,
            value: Arc::from(*value),
        },
        Effect::Del { key } => OwnedEffect::Del {
            key: Box::from(*key),
        },
    }
}

/// Applies a resolved batch's effects.
pub fn apply_owned(table: &mut Table, effects: Vec<OwnedEffect>) {
    for effect in effects {
        match effect {
            OwnedEffect::Put {
                key,
                version,
                value,
            } => table.load(&key, value, version),
            OwnedEffect::Del { key } => {
                table.unload(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::format::write_effect;

    const NR_PUTS: usize = 30_000; // about 4 MiB: records straddle every chunk boundary

    /// A log of [`NR_PUTS`] PUTs of 100-byte values, then one value larger than
    /// a whole chunk; and the offset where each record starts.
    fn log_crossing_chunks() -> (Vec<u8>, Vec<usize>) {
        let (mut log, mut starts) = (Vec::new(), Vec::new());
        for i in 0..NR_PUTS {
            starts.push(log.len());
            let key = format!("key-{i}");
            let put = Effect::Put {
                key: key.as_bytes(),
                version: i as u64 + 1,
                value: &[i as u8; 100],
            };
            write_effect(&mut log, &put);
        }
        starts.push(log.len());
        let big = Effect::Put {
            key: b"big",
            version: 1,
            value: &vec![7; CHUNK_BYTES + 3],
        };
        write_effect(&mut log, &big);
        (log, starts)
    }

    fn replay_bytes(log: &[u8], salvage: bool) -> (Result<Replayed, RecoveryError>, Table) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("shard-0.log");
        std::fs::write(&path, log).expect("write log");
        let mut table = Table::new(u64::MAX);
        (replay_file(&path, &mut table, salvage), table)
    }

    #[test]
    fn records_across_chunk_boundaries_and_larger_than_a_chunk_replay() {
        let (log, _) = log_crossing_chunks();
        let (replayed, table) = replay_bytes(&log, false);
        let replayed = replayed.expect("intact log");
        assert_eq!(replayed.nr_records, NR_PUTS as u64 + 1);
        assert_eq!(
            (replayed.valid_bytes, replayed.dropped_bytes),
            (log.len() as u64, 0)
        );
        assert_eq!(table.len(), NR_PUTS + 1);
        let last = NR_PUTS - 1;
        assert_eq!(
            table.peek(format!("key-{last}").as_bytes()),
            Some((&[last as u8; 100][..], NR_PUTS as u64))
        );
        assert_eq!(
            table.peek(b"big").map(|(v, _)| v.len()),
            Some(CHUNK_BYTES + 3)
        );
    }

    #[test]
    fn damage_past_the_first_chunk_is_reported_at_its_file_offset() {
        let (mut log, starts) = log_crossing_chunks();
        let (damaged_at, intact_at) = (starts[20_000], starts[20_001]);
        log[damaged_at + 20] ^= 1;
        match replay_bytes(&log, false).0 {
            Err(RecoveryError::Corrupt {
                offset,
                intact_at: found,
                ..
            }) => assert_eq!((offset, found), (damaged_at as u64, intact_at as u64)),
            other => panic!("{other:?}"),
        }
        let (salvaged, table) = replay_bytes(&log, true);
        let salvaged = salvaged.expect("salvage");
        assert_eq!(
            (salvaged.valid_bytes, salvaged.dropped_bytes),
            (damaged_at as u64, (log.len() - damaged_at) as u64)
        );
        assert_eq!(table.len(), 20_000);
    }

    #[test]
    fn a_torn_tail_after_the_first_chunk_is_cut() {
        let (log, starts) = log_crossing_chunks();
        let torn = &log[..log.len() - 5];
        let (replayed, table) = replay_bytes(torn, false);
        let replayed = replayed.expect("a torn tail is not corruption");
        let cut = starts[NR_PUTS] as u64;
        assert_eq!(
            (replayed.valid_bytes, replayed.dropped_bytes),
            (cut, torn.len() as u64 - cut)
        );
        assert_eq!(table.len(), NR_PUTS);
    }
}
