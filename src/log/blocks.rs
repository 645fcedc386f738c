//! Where the disk engine places records relative to the 4 KiB blocks of its
//! log file, so that a small value is one aligned block to read.
//!
//! The disk engine reads values back with direct I/O, which reads whole
//! aligned blocks. Records appended back to back would put a 1 KiB value
//! across a block boundary about a quarter of the time, and its GET would
//! read two blocks. So with the disk engine every writer of a log file
//! follows one rule ([`padding_before`]):
//!
//! - a record of at most [`BLOCK_BYTES`] (header included) never crosses a
//!   multiple of [`BLOCK_BYTES`] of the file offset: if it would, a PAD
//!   record (`format::write_pad`) fills the rest of the block first. When
//!   the rest is shorter than the smallest PAD record
//!   ([`format::MIN_PAD_BYTES`]), the PAD fills the next block too;
//! - a larger record starts wherever it falls: it spans several blocks
//!   however it is placed, and aligning its start would save at most one
//!   block of its read while costing up to a block of padding per record.
//!
//! The log engine's files never hold PAD records: its writers do not call
//! this module (its files are byte for byte what they were before it).
//!
//! Positions: the log writer counts logical positions that only grow, and a
//! compaction switch moves the records behind a snapshot at a shift that is
//! a multiple of [`BLOCK_BYTES`] ([`padding_to`], `LogWriter::switch_file`),
//! so a logical position and its file offset are the same modulo a block,
//! and placement can be decided at append time.

use super::format::{self, HEADER_BYTES, MIN_PAD_BYTES};

/// The block a small record stays within: the page size, and the unit of a
/// direct read on the devices this is for.
pub const BLOCK_BYTES: u64 = 4096;

/// The bytes of PAD to write at file offset `at` before a record of
/// `record_bytes` bytes (header included) so that it does not cross a block
/// boundary: 0 if it does not, or if it is larger than a block.
pub fn padding_before(at: u64, record_bytes: u64) -> u64 {
    let room = BLOCK_BYTES - at % BLOCK_BYTES;
    if record_bytes > BLOCK_BYTES || record_bytes <= room {
        return 0;
    }
    padding_to(at, 0)
}

/// The bytes of PAD that take file offset `from` to the first offset at or
/// after it that equals `to` modulo a block: 0 if `from` does, otherwise at
/// least a PAD record's minimum (a block more when the distance is shorter).
pub fn padding_to(from: u64, to: u64) -> u64 {
    let gap = (to % BLOCK_BYTES + BLOCK_BYTES - from % BLOCK_BYTES) % BLOCK_BYTES;
    match gap {
        0 => 0,
        gap if gap < MIN_PAD_BYTES as u64 => gap + BLOCK_BYTES,
        gap => gap,
    }
}

/// The whole blocks holding `len` bytes at file offset `offset`: their first
/// byte and their length. What a value read costs (`log::values`).
pub fn covering(offset: u64, len: u64) -> (u64, u64) {
    let start = offset / BLOCK_BYTES * BLOCK_BYTES;
    let end = (offset + len.max(1)).div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
    (start, end - start)
}

/// Where padding went into a run of records: for each record that moved
/// further, its start in the run before padding and the bytes inserted up
/// to it, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Shifts(Vec<(usize, usize)>);

impl Shifts {
    /// Where the byte at `index` (before padding) is after it.
    pub fn moved(&self, index: usize) -> usize {
        let before = self.0.partition_point(|&(start, _)| start <= index);
        index + before.checked_sub(1).map_or(0, |last| self.0[last].1)
    }

    /// Whether no record moved.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Lays out the whole records in `records[from..]` by the rule, knowing that
/// `records[from]` will be written at file offset `at`: inserts a PAD record
/// before each record that would cross a block boundary. Returns where
/// records moved ([`Shifts`]), for the offsets the caller holds into them.
pub fn place_records(records: &mut Vec<u8>, from: usize, at: u64) -> Shifts {
    let mut pads = Vec::new();
    let (mut index, mut inserted) = (from, 0);
    while index < records.len() {
        let len = HEADER_BYTES + record_body_len(&records[index..]);
        let pad = padding_before(at + (index - from + inserted) as u64, len as u64) as usize;
        if pad > 0 {
            inserted += pad;
            pads.push((index, pad, inserted));
        }
        index += len;
    }
    if pads.is_empty() {
        return Shifts::default();
    }
    let run = records.split_off(from);
    records.reserve(run.len() + inserted);
    let mut copied = 0;
    for &(start, pad, _) in &pads {
        records.extend_from_slice(&run[copied..start - from]);
        format::write_pad(records, pad);
        copied = start - from;
    }
    records.extend_from_slice(&run[copied..]);
    Shifts(
        pads.into_iter()
            .map(|(start, _, inserted)| (start, inserted))
            .collect(),
    )
}

/// Appends the records `encode` writes to `out`, placed by the rule if
/// `placed_at` is the file offset of `out[0]` (the disk engine), as they
/// come if it is None (the log engine); returns where they moved, for
/// offsets into `out` that `encode` reported.
pub fn append_records(
    out: &mut Vec<u8>,
    placed_at: Option<u64>,
    encode: impl FnOnce(&mut Vec<u8>),
) -> Shifts {
    let start = out.len();
    encode(out);
    match placed_at {
        Some(at) => place_records(out, start, at + start as u64),
        None => Shifts::default(),
    }
}

/// The body length in the (unstamped or stamped) record header at the start
/// of `record`.
fn record_body_len(record: &[u8]) -> usize {
    let len = record
        .get(..4)
        .expect("a run of whole records has a header here");
    u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::format::{write_effect, Effect};

    const B: u64 = BLOCK_BYTES;
    const MIN_PAD: u64 = MIN_PAD_BYTES as u64;

    #[test]
    fn a_record_that_fits_in_what_is_left_of_its_block_is_not_moved() {
        for at in [0, 1, 100, B - 13, 5 * B, 5 * B + 7] {
            let room = B - at % B;
            for len in [13, room.min(B) / 2 + 1, room] {
                assert_eq!(padding_before(at, len.max(13)), 0, "at {at}, {len} bytes");
            }
        }
        // At a block's start every record of at most a block fits.
        for len in [13, B - 14, B - 13, B - 12, B - 1, B] {
            assert_eq!(padding_before(3 * B, len), 0, "{len} bytes at a boundary");
        }
    }

    #[test]
    fn a_record_that_would_cross_a_boundary_starts_the_next_block() {
        // (bytes left in the block, record size) → padding; every record
        // size of the rule's edges against every gap at its edges.
        let sizes = [13, B - 13 - 1, B - 13, B - 12, B - 1, B];
        for left in [1, 12, 13, 14, 100, B - 1] {
            let at = 7 * B + (B - left);
            for len in sizes {
                let pad = padding_before(at, len);
                let expected = match (len <= left, left < MIN_PAD) {
                    (true, _) => 0,
                    (false, false) => left,
                    (false, true) => left + B,
                };
                assert_eq!(pad, expected, "{left} bytes left, a record of {len}");
                let start = at + pad;
                assert_eq!(
                    start / B,
                    (start + len - 1) / B,
                    "{left} left, {len} bytes: the record lies in one block"
                );
                assert!(pad == 0 || pad >= MIN_PAD, "a PAD record fits in {pad}");
            }
        }
    }

    #[test]
    fn a_record_larger_than_a_block_starts_where_it_falls() {
        for at in [0, 1, 12, 13, B - 14, B - 1, B, 9 * B + 100] {
            for len in [B + 1, 2 * B, 10 * B + 3] {
                assert_eq!(padding_before(at, len), 0, "at {at}, {len} bytes");
            }
        }
    }

    #[test]
    fn the_blocks_covering_a_value_are_whole_and_aligned() {
        assert_eq!(covering(0, 1), (0, B));
        assert_eq!(covering(100, 1000), (0, B));
        assert_eq!(covering(B - 1, 1), (0, B));
        assert_eq!(covering(B - 1, 2), (0, 2 * B));
        assert_eq!(covering(B, B), (B, B));
        assert_eq!(covering(3 * B + 5, 0), (3 * B, B));
        assert_eq!(covering(3 * B + 5, 2 * B), (3 * B, 3 * B));
    }

    #[test]
    fn padding_to_an_offset_modulo_a_block_is_none_or_a_whole_pad_record() {
        assert_eq!(padding_to(5 * B + 100, 100), 0);
        assert_eq!(padding_to(5 * B + 100, 7 * B + 100), 0);
        assert_eq!(padding_to(5 * B, 0), 0);
        assert_eq!(padding_to(5 * B + 1, 0), B - 1);
        assert_eq!(padding_to(5 * B + 100, 113), 13);
        assert_eq!(padding_to(5 * B + 100, 112), 12 + B);
        assert_eq!(padding_to(5 * B + 100, 101), 1 + B);
        assert_eq!(padding_to(5 * B + 100, 99), B - 1);
    }

    fn put(value_len: usize) -> Vec<u8> {
        let value = vec![0xab; value_len];
        let mut out = Vec::new();
        write_effect(
            &mut out,
            &Effect::Put {
                key: b"k",
                version: 1,
                value: &value,
                deadline: None,
            },
        );
        out
    }

    #[test]
    fn placed_records_keep_their_bytes_and_order_and_only_pads_are_added() {
        let records: Vec<Vec<u8>> = [1000, 3000, 10, 4096 - 30, 9000, 5, 2000, 2000, 2000]
            .into_iter()
            .map(put)
            .collect();
        for at in [0, 1, 4000, B - 13, B - 12, B + 17] {
            let mut run = vec![0xee; 3];
            let mut starts = Vec::new();
            for record in &records {
                starts.push(run.len());
                run.extend_from_slice(record);
            }
            let shifts = place_records(&mut run, 3, at);
            assert_eq!(&run[..3], &[0xee; 3], "bytes before the run stay");
            for (record, &start) in records.iter().zip(&starts) {
                let now = shifts.moved(start);
                assert_eq!(&run[now..now + record.len()], &record[..], "at {at}");
                let offset = at + (now - 3) as u64;
                if record.len() as u64 <= B {
                    assert_eq!(offset / B, (offset + record.len() as u64 - 1) / B);
                }
            }
            format::stamp(&mut run[3..], 1);
            let mut file = vec![0; 3];
            file.extend_from_slice(&run[3..]);
            let mut index = 3;
            let (mut nr_puts, mut nr_pads) = (0, 0);
            while index < file.len() {
                match format::decode_at(&file, index, format::Framing::Epoch(1)) {
                    format::Decoded::Record(format::Record::Pad, next) => {
                        nr_pads += 1;
                        index = next;
                    }
                    format::Decoded::Record(_, next) => {
                        nr_puts += 1;
                        index = next;
                    }
                    other => panic!("{other:?} at {index}"),
                }
            }
            assert_eq!(nr_puts, records.len());
            assert!(nr_pads > 0, "some record needed moving at {at}");
        }
    }

    #[test]
    fn records_that_need_no_padding_are_left_as_they_are() {
        let mut run = put(100);
        run.extend_from_slice(&put(200));
        let before = run.clone();
        assert!(place_records(&mut run, 0, B).is_empty());
        assert_eq!(run, before);
        let mut out = Vec::new();
        let shifts = append_records(&mut out, Some(B - 20), |out| {
            out.extend_from_slice(&put(30))
        });
        assert_eq!(shifts.moved(0), 20, "a 20-byte gap is one PAD record");
        assert_eq!(out.len(), 20 + put(30).len());
        let mut unplaced = Vec::new();
        let shifts = append_records(&mut unplaced, None, |out| out.extend_from_slice(&put(30)));
        assert!(shifts.is_empty(), "the log engine's records are not placed");
        assert_eq!(unplaced, put(30));
    }
}
