//! Reading a request's result elements back as typed outcomes, so another
//! protocol can answer them in its own encoding.
//!
//! A result slot holds msgpack elements (`proto::reply`) whose values are
//! spliced in from the stored entries (`proto::results`): the value of a
//! `[-1, V]` is the entry's own bytes, borrowed here, never copied.

use crate::proto::msgpack::Cursor;
use crate::proto::reply::{
    TAG_DONE, TAG_ERROR, TAG_FOUND, TAG_INTEGER, TAG_KEYS, TAG_NOT_FOUND, TAG_STATS, TAG_VERSIONED,
    TAG_VERSION_CONFLICT,
};
use crate::proto::ElementRef;

/// One result element.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<'a> {
    /// GET found: the stored value's msgpack encoding.
    Found(&'a [u8]),
    NotFound,
    /// GETV found: the value and its version.
    Versioned(&'a [u8], u64),
    /// PUTV applied (new version), RM (1/0).
    Done(u64),
    /// PUTV or CHECK refused: the current version.
    Conflict(u64),
    /// INCRBY: the new value.
    Integer(i64),
    /// SCAN: the next position (0 at the end) and the keys found.
    Keys(u64, Vec<&'a [u8]>),
    /// STATS: `name → value`.
    Stats(Vec<(String, u64)>),
    /// `[-9, CODE, message]`.
    Error {
        code: String,
        message: String,
    },
}

/// The slot's bytes do not hold result elements: a bug on the server side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed result element at byte {0}")]
pub struct MalformedResult(pub usize);

/// Appends the outcomes of every element in `slot` to `out`.
pub fn read_slot<'a>(
    slot: &ElementRef<'a>,
    out: &mut Vec<Outcome<'a>>,
) -> Result<(), MalformedResult> {
    let mut reader = SlotReader {
        bytes: slot.bytes,
        slot,
        next_splice: 0,
    };
    let mut cursor = Cursor::new(slot.bytes);
    while !cursor.is_empty() {
        let at = cursor.position();
        let outcome = reader.element(&mut cursor).ok_or(MalformedResult(at))?;
        out.push(outcome);
    }
    Ok(())
}

struct SlotReader<'s, 'a> {
    bytes: &'a [u8],
    slot: &'s ElementRef<'a>,
    next_splice: usize,
}

impl<'a> SlotReader<'_, 'a> {
    fn element(&mut self, cursor: &mut Cursor<'a>) -> Option<Outcome<'a>> {
        let start = cursor.position();
        let len = cursor.read_array_len().ok()?;
        let tag = cursor.read_int().ok()?;
        let outcome = match (tag, len) {
            (t, 2) if t == i128::from(TAG_FOUND) => Outcome::Found(self.value(cursor)?),
            (t, 1) if t == i128::from(TAG_NOT_FOUND) => Outcome::NotFound,
            (t, 3) if t == i128::from(TAG_VERSIONED) => {
                let value = self.value(cursor)?;
                Outcome::Versioned(value, read_u64(cursor)?)
            }
            (t, 2) if t == i128::from(TAG_DONE) => Outcome::Done(read_u64(cursor)?),
            (t, 2) if t == i128::from(TAG_VERSION_CONFLICT) => Outcome::Conflict(read_u64(cursor)?),
            (t, 2) if t == i128::from(TAG_INTEGER) => {
                Outcome::Integer(i64::try_from(cursor.read_int().ok()?).ok()?)
            }
            (t, 3) if t == i128::from(TAG_KEYS) => {
                let next = read_u64(cursor)?;
                let nr_keys = cursor.read_array_len().ok()?;
                let mut keys = Vec::new();
                for _ in 0..nr_keys {
                    keys.push(&self.bytes[cursor.read_str_or_bin().ok()?]);
                }
                Outcome::Keys(next, keys)
            }
            (t, _) if t == i128::from(TAG_STATS) || t == i128::from(TAG_ERROR) => {
                let mut whole = Cursor::at(self.bytes, start);
                let range = whole.skip_value().ok()?;
                *cursor = whole;
                rare_element(&self.bytes[range])?
            }
            _ => return None,
        };
        Some(outcome)
    }

    /// The value at the cursor: a spliced entry's bytes, or inline msgpack.
    fn value(&mut self, cursor: &mut Cursor<'a>) -> Option<&'a [u8]> {
        let here = cursor.position() as u32;
        if let Some(splice) = self.slot.splices.get(self.next_splice) {
            if splice.at - self.slot.base == here {
                self.next_splice += 1;
                return Some(splice.entry.value());
            }
        }
        let range = cursor.skip_value().ok()?;
        Some(&self.bytes[range])
    }
}

fn read_u64(cursor: &mut Cursor) -> Option<u64> {
    u64::try_from(cursor.read_int().ok()?).ok()
}

/// STATS and error elements, decoded with rmpv (they are rare and small).
fn rare_element<'a>(bytes: &[u8]) -> Option<Outcome<'a>> {
    let value = rmpv::decode::read_value(&mut &bytes[..]).ok()?;
    let items = value.as_array()?;
    match items.first()?.as_i64()? {
        t if t == i64::from(TAG_ERROR) => Some(Outcome::Error {
            code: items.get(1)?.as_str()?.to_owned(),
            message: items.get(2)?.as_str()?.to_owned(),
        }),
        _ => {
            let fields = items.get(1)?.as_map()?;
            let stats = fields
                .iter()
                .filter_map(|(name, n)| Some((name.as_str()?.to_owned(), n.as_u64()?)))
                .collect();
            Some(Outcome::Stats(stats))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Entry;
    use crate::proto::{reply, BatchResults, ErrorCode};

    #[test]
    fn spliced_values_and_inline_elements_read_back_in_order() {
        let stored = Entry::new(b"k", b"\xc4\x02hi", 3);
        let mut results = BatchResults::default();
        reply::write_found_header(&mut results.buf);
        results.push_value(&stored);
        reply::write_not_found(&mut results.buf);
        reply::write_versioned_header(&mut results.buf);
        results.push_value(&stored);
        reply::write_uint(&mut results.buf, 3);
        reply::write_done(&mut results.buf, 1);
        reply::write_version_conflict(&mut results.buf, 9);
        reply::write_error(&mut results.buf, ErrorCode::Oom, "full");
        results.end_request_with(6);
        let mut splice = 0;
        let slot = results.element(0, &mut splice);
        let mut outcomes = Vec::new();
        read_slot(&slot, &mut outcomes).expect("well formed");
        assert_eq!(
            outcomes,
            [
                Outcome::Found(b"\xc4\x02hi"),
                Outcome::NotFound,
                Outcome::Versioned(b"\xc4\x02hi", 3),
                Outcome::Done(1),
                Outcome::Conflict(9),
                Outcome::Error {
                    code: "OOM".into(),
                    message: "full".into()
                },
            ]
        );
    }
}
