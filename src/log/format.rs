//! The on-disk record format of a shard's log. Pure encoding and decoding: no
//! I/O here.
//!
//! A log file is a sequence of records, each a checksummed frame:
//!
//! ```text
//! +----------------+----------------+---------------------------------------+
//! | len: u32 LE    | crc: u32 LE    | body: `len` bytes                     |
//! +----------------+----------------+---------------------------------------+
//!                    crc = CRC-32 (IEEE) of body
//!
//! body = kind: u8, then by kind:
//!   1 PUT      key_len u32 | key | version u64 | value_len u32 | value (raw msgpack)
//!   2 DEL      key_len u32 | key
//!   3 BATCH    n u32 | n × (PUT or DEL body)           a single-shard ATOMIC
//!   4 PREPARE  txn | n u32 | n × (PUT or DEL body)     a participant's share
//!   5 DECIDE   txn | commit u8                         the participant heard the decision
//!   6 COMMIT   txn                                      the coordinator's commit point
//!   txn = coordinator shard u32 | seq u64
//! ```
//!
//! All integers little-endian. A BATCH or PREPARE is one record with one
//! checksum, so it is on disk entirely or not at all.
//!
//! [`decode_at`] tells a complete record from a short or damaged one; whether
//! damage is a torn tail or corruption in the middle is decided by the caller
//! (`log::replay`), which can look past it.

use crate::shard::ShardId;
use crate::txn::TxnId;

/// Bytes of a record's frame before its body.
pub const HEADER_BYTES: usize = 8;
/// A body longer than this is damage, not a record: no frame is this large.
pub const MAX_BODY_BYTES: u32 = u32::MAX / 2;

const KIND_PUT: u8 = 1;
const KIND_DEL: u8 = 2;
const KIND_BATCH: u8 = 3;
const KIND_PREPARE: u8 = 4;
const KIND_DECIDE: u8 = 5;
const KIND_COMMIT: u8 = 6;

/// One change to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<'a> {
    Put {
        key: &'a [u8],
        version: u64,
        value: &'a [u8],
    },
    Del {
        key: &'a [u8],
    },
}

/// A decoded record; byte fields borrow from the file buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    Effect(Effect<'a>),
    Batch(Vec<Effect<'a>>),
    Prepare {
        txn: TxnId,
        effects: Vec<Effect<'a>>,
    },
    Decide {
        txn: TxnId,
        commit: bool,
    },
    Commit {
        txn: TxnId,
    },
}

impl Record<'_> {
    /// The cross-shard batch the record belongs to, if any.
    pub fn txn(&self) -> Option<TxnId> {
        match self {
            Record::Prepare { txn, .. } | Record::Decide { txn, .. } | Record::Commit { txn } => {
                Some(*txn)
            }
            Record::Effect(_) | Record::Batch(_) => None,
        }
    }
}

/// What is at an offset of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A complete, intact record and the offset just past it.
    Record(Record<'a>, usize),
    /// The file ends inside the header or body of a record, or in zero padding.
    Incomplete,
    /// The frame is complete but its checksum or contents are wrong.
    Damaged(String),
}

/// Appends the record of a write or delete.
pub fn write_effect(out: &mut Vec<u8>, effect: &Effect<'_>) {
    frame(out, |body| effect_body(body, effect));
}

/// Appends a single-shard ATOMIC's effects as one record.
pub fn write_batch(out: &mut Vec<u8>, effects: &[Effect<'_>]) {
    frame(out, |body| {
        body.push(KIND_BATCH);
        effects_body(body, effects);
    });
}

/// Appends a participant's prepared share of a cross-shard batch.
pub fn write_prepare(out: &mut Vec<u8>, txn: TxnId, effects: &[Effect<'_>]) {
    frame(out, |body| {
        body.push(KIND_PREPARE);
        txn_body(body, txn);
        effects_body(body, effects);
    });
}

/// Appends a participant's record of a decision.
pub fn write_decide(out: &mut Vec<u8>, txn: TxnId, commit: bool) {
    frame(out, |body| {
        body.push(KIND_DECIDE);
        txn_body(body, txn);
        body.push(u8::from(commit));
    });
}

/// Appends the coordinator's commit point of a cross-shard batch.
pub fn write_commit(out: &mut Vec<u8>, txn: TxnId) {
    frame(out, |body| {
        body.push(KIND_COMMIT);
        txn_body(body, txn);
    });
}

/// Writes header + body, filling in the length and checksum after the body.
fn frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    body(out);
    let body_bytes = &out[start + HEADER_BYTES..];
    let len = body_bytes.len() as u32;
    let crc = crc32fast::hash(body_bytes);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn effect_body(body: &mut Vec<u8>, effect: &Effect<'_>) {
    match effect {
        Effect::Put {
            key,
            version,
            value,
        } => {
            body.push(KIND_PUT);
            bytes_field(body, key);
            body.extend_from_slice(&version.to_le_bytes());
            bytes_field(body, value);
        }
        Effect::Del { key } => {
            body.push(KIND_DEL);
            bytes_field(body, key);
        }
    }
}

fn effects_body(body: &mut Vec<u8>, effects: &[Effect<'_>]) {
    body.extend_from_slice(&(effects.len() as u32).to_le_bytes());
    for effect in effects {
        effect_body(body, effect);
    }
}

fn txn_body(body: &mut Vec<u8>, txn: TxnId) {
    body.extend_from_slice(&(txn.coordinator.0 as u32).to_le_bytes());
    body.extend_from_slice(&txn.seq.to_le_bytes());
}

fn bytes_field(body: &mut Vec<u8>, bytes: &[u8]) {
    body.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    body.extend_from_slice(bytes);
}

/// How many bytes the record at the start of `rest` spans, header included, as
/// far as its header tells: [`HEADER_BYTES`] while the header is incomplete or
/// its length is implausible. A reader that holds this many bytes (or the rest
/// of the file, if shorter) gets the same answer from [`decode_at`] as one that
/// holds the whole file.
pub fn frame_bytes(rest: &[u8]) -> usize {
    match rest.get(0..4) {
        Some(len) => match u32::from_le_bytes(len.try_into().expect("4 bytes")) {
            len if len <= MAX_BODY_BYTES => HEADER_BYTES + len as usize,
            _ => HEADER_BYTES,
        },
        None => HEADER_BYTES,
    }
}

/// Decodes the record at `offset` of `file`.
pub fn decode_at(file: &[u8], offset: usize) -> Decoded<'_> {
    let rest = &file[offset..];
    if rest.len() < HEADER_BYTES {
        return Decoded::Incomplete;
    }
    let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    if len == 0 && crc == 0 {
        return Decoded::Incomplete; // zero padding: a preallocated or torn tail
    }
    if len > MAX_BODY_BYTES {
        return Decoded::Damaged(format!("record length {len} is implausible"));
    }
    let end = HEADER_BYTES + len as usize;
    if rest.len() < end {
        return Decoded::Incomplete;
    }
    let body = &rest[HEADER_BYTES..end];
    if crc32fast::hash(body) != crc {
        return Decoded::Damaged("checksum mismatch".into());
    }
    match decode_body(body) {
        Some(record) => Decoded::Record(record, offset + end),
        None => Decoded::Damaged("checksum matches but the record does not parse".into()),
    }
}

/// A cursor over a record body; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn txn(&mut self) -> Option<TxnId> {
        let coordinator = ShardId(self.u32()? as usize);
        let seq = self.u64()?;
        Some(TxnId { coordinator, seq })
    }

    fn effect(&mut self) -> Option<Effect<'a>> {
        match self.u8()? {
            KIND_PUT => Some(Effect::Put {
                key: self.bytes()?,
                version: self.u64()?,
                value: self.bytes()?,
            }),
            KIND_DEL => Some(Effect::Del { key: self.bytes()? }),
            _ => None,
        }
    }

    fn effects(&mut self) -> Option<Vec<Effect<'a>>> {
        let n = self.u32()? as usize;
        // Each effect takes at least 5 bytes: a count beyond that is damage.
        if n > self.bytes.len() / 5 {
            return None;
        }
        (0..n).map(|_| self.effect()).collect()
    }
}

fn decode_body(body: &[u8]) -> Option<Record<'_>> {
    let mut reader = Reader { bytes: body };
    let record = match *body.first()? {
        KIND_PUT | KIND_DEL => Record::Effect(reader.effect()?),
        kind => {
            reader.u8()?;
            match kind {
                KIND_BATCH => Record::Batch(reader.effects()?),
                KIND_PREPARE => Record::Prepare {
                    txn: reader.txn()?,
                    effects: reader.effects()?,
                },
                KIND_DECIDE => Record::Decide {
                    txn: reader.txn()?,
                    commit: reader.u8()? != 0,
                },
                KIND_COMMIT => Record::Commit { txn: reader.txn()? },
                _ => return None,
            }
        }
    };
    reader.bytes.is_empty().then_some(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TXN: TxnId = TxnId {
        coordinator: ShardId(3),
        seq: 77,
    };

    fn all_records() -> Vec<u8> {
        let put = Effect::Put {
            key: b"k",
            version: 9,
            value: b"\xa1v",
        };
        let del = Effect::Del { key: b"gone" };
        let mut log = Vec::new();
        write_effect(&mut log, &put);
        write_effect(&mut log, &del);
        write_batch(&mut log, &[put.clone(), del.clone()]);
        write_prepare(&mut log, TXN, &[put]);
        write_decide(&mut log, TXN, true);
        write_commit(&mut log, TXN);
        log
    }

    #[test]
    fn every_record_kind_round_trips() {
        let log = all_records();
        let mut offset = 0;
        let mut kinds = Vec::new();
        while offset < log.len() {
            match decode_at(&log, offset) {
                Decoded::Record(record, next) => {
                    kinds.push(record);
                    offset = next;
                }
                other => panic!("at {offset}: {other:?}"),
            }
        }
        assert_eq!(kinds.len(), 6);
        assert!(
            matches!(&kinds[3], Record::Prepare { txn, effects } if *txn == TXN && effects.len() == 1)
        );
        assert_eq!(
            kinds[4],
            Record::Decide {
                txn: TXN,
                commit: true
            }
        );
    }

    #[test]
    fn a_cut_record_is_incomplete_and_a_flipped_bit_is_damage() {
        let log = all_records();
        let first_end = match decode_at(&log, 0) {
            Decoded::Record(_, next) => next,
            other => panic!("{other:?}"),
        };
        assert_eq!(decode_at(&log[..first_end - 1], 0), Decoded::Incomplete);
        assert_eq!(decode_at(&log[..3], 0), Decoded::Incomplete);
        assert_eq!(decode_at(&[0u8; 64], 0), Decoded::Incomplete);
        let mut damaged = log.clone();
        damaged[HEADER_BYTES + 2] ^= 0x40;
        assert!(matches!(decode_at(&damaged, 0), Decoded::Damaged(_)));
    }
}
