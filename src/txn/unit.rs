//! Running the requests of an ATOMIC batch that one shard owns as a unit: in
//! order, each seeing the ones before it, every write recorded in an undo log,
//! stopping at the first failure.
//!
//! A failure is a PUTV or CHECK whose version does not match (CONFLICT), a
//! write over the memory limit (OOM) — SET with a TTL, EXPIRE and PERSIST
//! included — or an INCRBY, INCRBYFLOAT or APPEND on a value it cannot use
//! (WRONGTYPE, NOTNUM). The caller then rolls the undo log back, so nothing of
//! the batch remains, and the batch answers one error element (naming the key).

use super::undo::UndoLog;
use crate::proto::{reply, BatchResults, ErrorCode, Op, OpKind, RequestError};
use crate::table::{Effect, PutOutcome, Table};

/// Runs `ops` (leaf requests, no STATS, no markers) with undo. Results go to
/// `out`, one slot per op; what each changed, to `effects` (for the log) —
/// except INCRBY, INCRBYFLOAT and APPEND, whose keys go to `computed`: their
/// values were computed here, so the caller logs those keys' final state
/// after `effects`.
pub fn run_unit<'b>(
    table: &mut Table,
    ops: &[Op],
    buf: &'b [u8],
    out: &mut BatchResults,
    undo: &mut UndoLog,
    effects: &mut Vec<Effect<'b>>,
    computed: &mut Vec<&'b [u8]>,
) -> Result<(), RequestError> {
    for op in ops {
        let (key, value) = (op.key.of(buf), op.value.of(buf));
        if op.kind.writes() {
            undo.record(table, key);
        }
        // A refused write aborts the batch here; `Table::apply` would answer it.
        let effect = match op.kind {
            OpKind::PutV => match table.put_versioned(key, value, op.version) {
                Ok(PutOutcome::Applied(version)) => {
                    reply::write_done(&mut out.buf, version);
                    Some(Effect::Put {
                        key,
                        version,
                        value,
                        deadline: None,
                    })
                }
                Ok(PutOutcome::Conflict(current)) => {
                    return Err(conflict(key, op.version, current))
                }
                Err(_) => return Err(over_memory(key)),
            },
            kind if kind.is_read_modify_write() => {
                // The new value exists only in the table: the caller logs the
                // key's final state ([`run_unit`]'s `computed`).
                table.read_modify_write(op, buf, &mut out.buf)?;
                computed.push(key);
                None
            }
            OpKind::Check => match table.version(key) {
                current if current == op.version => None,
                current => return Err(conflict(key, op.version, current)),
            },
            OpKind::Set => {
                let version = table.set(key, value).map_err(|_| over_memory(key))?;
                Some(Effect::Put {
                    key,
                    version,
                    value,
                    deadline: None,
                })
            }
            kind if kind.is_expiry() => table
                .apply_expiry(op, buf, out)
                .map_err(|_| over_memory(key))?,
            _ => table.apply(op, buf, out),
        };
        effects.extend(effect);
        out.end_request();
    }
    Ok(())
}

fn over_memory(key: &[u8]) -> RequestError {
    RequestError::new(
        ErrorCode::Oom,
        format!(
            "ATOMIC aborted: write of key {} refused, over the memory limit (--max-memory-bytes)",
            describe_key(key)
        ),
    )
}

fn conflict(key: &[u8], expected: u64, current: u64) -> RequestError {
    RequestError::new(
        ErrorCode::Conflict,
        format!(
            "ATOMIC aborted: key {} is at version {current}, not {expected}",
            describe_key(key)
        ),
    )
}

/// A key for an error message: as text where it is UTF-8, cut to a sane length.
pub fn describe_key(key: &[u8]) -> String {
    const MAX_CHARS: usize = 64;
    let text = String::from_utf8_lossy(key);
    let mut described: String = text.chars().take(MAX_CHARS).collect();
    if text.chars().count() > MAX_CHARS {
        described.push('…');
    }
    format!("{described:?}")
}
