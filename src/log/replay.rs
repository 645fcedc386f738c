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

use super::format::{decode_at, Decoded, Effect, Record};
use super::RecoveryError;
use crate::table::Table;
use crate::txn::TxnId;
use hashbrown::{HashMap, HashSet};
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
    let file = std::fs::read(path).map_err(|source| RecoveryError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut replayed = Replayed::default();
    let mut prepared: HashMap<TxnId, Vec<OwnedEffect>> = HashMap::new();
    let mut offset = 0;
    while offset < file.len() {
        let reason = match decode_at(&file, offset) {
            Decoded::Record(record, next) => {
                if let Some(txn) = record.txn() {
                    replayed.max_txn_seq = replayed.max_txn_seq.max(Some(txn.seq));
                }
                apply(record, table, &mut prepared, &mut replayed.commits);
                replayed.nr_records += 1;
                offset = next;
                continue;
            }
            Decoded::Incomplete => "incomplete record".to_owned(),
            Decoded::Damaged(reason) => reason,
        };
        if let Some(intact_at) = next_intact_record(&file, offset) {
            if !salvage {
                return Err(RecoveryError::Corrupt {
                    path: path.to_owned(),
                    offset: offset as u64,
                    reason,
                    intact_at: intact_at as u64,
                });
            }
            tracing::warn!(
                "{}: {reason} at offset {offset}; salvaging: keeping the {offset} bytes before it and \
                 dropping {} bytes (intact records from offset {intact_at} are lost)",
                path.display(),
                file.len() - offset
            );
        }
        break;
    }
    replayed.valid_bytes = offset as u64;
    replayed.dropped_bytes = (file.len() - offset) as u64;
    replayed.pending = prepared;
    Ok(replayed)
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
