//! Result elements of a batch of requests, with values shared, not copied.
//!
//! A GET's result element is `[-1, V]` where V may be megabytes. Copying V into
//! every result would let a client amplify a few bytes of GETs into gigabytes of
//! server memory before a single byte is written back. So an element's own bytes
//! (array header, tag, version…) go into `buf`, and each value it carries is a
//! reference to the stored entry (`crate::entry::Entry`) whose value is spliced
//! in at a position of `buf` when the reply is written.
//!
//! ```text
//! buf:    | 92 ff |          | 93 fd |          01 |
//! values:        ^ E1.value         ^ E2.value
//!         '-- element 0 --'  '---- element 1 ------'      ends = [2, 5]
//! ```
//!
//! A value spliced at position `p` belongs to the element whose bytes lie on
//! both sides of it or end at it: every value-carrying element has at least one
//! header byte before its value, so `start < p <= end` identifies the element.

use crate::entry::Entry;

/// An entry's value spliced into the element bytes at `at`.
#[derive(Debug, Clone)]
pub struct Splice {
    pub at: u32,
    pub entry: Entry,
}

/// Result slots of a batch of requests: `ends[i]` is where request i's elements
/// end in `buf`, and `counts[i]` how many elements it holds — none for SET/DEL,
/// one for most requests, any number for an ATOMIC (its results, flattened).
#[derive(Debug, Default)]
pub struct BatchResults {
    pub buf: Vec<u8>,
    pub ends: Vec<u32>,
    pub counts: Vec<u32>,
    pub splices: Vec<Splice>,
}

/// One result element: its bytes with values spliced in.
#[derive(Debug, Clone, Copy)]
pub struct ElementRef<'a> {
    pub bytes: &'a [u8],
    /// Splices of this element, with `at` relative to `bytes`.
    pub splices: &'a [Splice],
    /// Where `bytes` starts in the batch's buf (to rebase `splices`).
    pub base: u32,
}

impl ElementRef<'_> {
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Length of the element on the wire.
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
            + self
                .splices
                .iter()
                .map(|s| s.entry.value().len())
                .sum::<usize>()
    }

    /// The element's pieces in wire order: its own bytes, interrupted by the
    /// values spliced into them.
    pub fn pieces(&self) -> impl Iterator<Item = Piece<'_>> {
        let mut from = 0usize;
        let mut splices = self.splices.iter();
        let mut done = false;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            match splices.next() {
                Some(splice) => {
                    let at = (splice.at - self.base) as usize;
                    let bytes = &self.bytes[from..at];
                    from = at;
                    Some(Piece::BytesThenValue(bytes, splice.entry.value()))
                }
                None => {
                    done = true;
                    Some(Piece::Bytes(&self.bytes[from..]))
                }
            }
        })
    }
}

/// A piece of an element on the wire.
#[derive(Debug, Clone, Copy)]
pub enum Piece<'a> {
    /// Element bytes.
    Bytes(&'a [u8]),
    /// Element bytes followed by a spliced value.
    BytesThenValue(&'a [u8], &'a [u8]),
}

impl BatchResults {
    pub fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
        self.counts.clear();
        self.splices.clear();
    }

    /// Splices a stored entry's value in at the current end of `buf`.
    pub fn push_value(&mut self, entry: &Entry) {
        self.splices.push(Splice {
            at: self.buf.len() as u32,
            entry: entry.clone(),
        });
    }

    /// Marks the end of the current request's slot, holding one element if
    /// anything was written since the previous slot, else none.
    pub fn end_request(&mut self) {
        let start = self.ends.last().copied().unwrap_or(0);
        let has_element = self.buf.len() as u32 > start;
        self.end_request_with(u32::from(has_element));
    }

    /// Marks the end of the current request's slot, holding `nr_elements`.
    pub fn end_request_with(&mut self, nr_elements: u32) {
        self.ends.push(self.buf.len() as u32);
        self.counts.push(nr_elements);
    }

    /// Elements in slot `i`.
    pub fn count(&self, i: usize) -> u32 {
        self.counts[i]
    }

    /// Copies an element (from another batch) into the current slot.
    pub fn push_element(&mut self, element: ElementRef<'_>) {
        let base = self.buf.len() as u32;
        self.buf.extend_from_slice(element.bytes);
        for splice in element.splices {
            self.splices.push(Splice {
                at: splice.at - element.base + base,
                entry: splice.entry.clone(),
            });
        }
    }

    /// Copies every element of `other` into the current slot (an ATOMIC's
    /// results becoming one slot).
    pub fn append_into_slot(&mut self, other: BatchResults) {
        let base = self.buf.len() as u32;
        self.buf.extend_from_slice(&other.buf);
        self.splices
            .extend(other.splices.into_iter().map(|s| Splice {
                at: s.at + base,
                entry: s.entry,
            }));
    }

    /// Replaces every slot from `first` on with one error element each (their
    /// results cannot be acknowledged).
    pub fn fail_from(&mut self, first: usize, code: crate::proto::ErrorCode, message: &str) {
        let nr_failed = self.ends.len().saturating_sub(first);
        let cut = if first == 0 { 0 } else { self.ends[first - 1] };
        self.buf.truncate(cut as usize);
        self.ends.truncate(first);
        self.counts.truncate(first);
        self.splices.retain(|s| s.at <= cut);
        for _ in 0..nr_failed {
            crate::proto::reply::write_error(&mut self.buf, code, message);
            self.end_request();
        }
    }

    /// `nr_slots` slots, each holding one error element.
    pub fn all_errors(
        nr_slots: usize,
        code: crate::proto::ErrorCode,
        message: &str,
    ) -> BatchResults {
        let mut results = BatchResults::default();
        for _ in 0..nr_slots {
            crate::proto::reply::write_error(&mut results.buf, code, message);
            results.end_request();
        }
        results
    }

    /// Appends every slot of `other` after this batch's slots.
    pub fn append(&mut self, other: BatchResults) {
        if self.ends.is_empty() {
            *self = other;
            return;
        }
        let base = self.buf.len() as u32;
        self.buf.extend_from_slice(&other.buf);
        self.ends.extend(other.ends.iter().map(|end| end + base));
        self.counts.extend_from_slice(&other.counts);
        self.splices
            .extend(other.splices.into_iter().map(|s| Splice {
                at: s.at + base,
                entry: s.entry,
            }));
    }

    /// The element of request `i`. `first_splice` must be the index of the first
    /// splice not belonging to an earlier element; it is advanced past this one's.
    pub fn element(&self, i: usize, first_splice: &mut usize) -> ElementRef<'_> {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        let end = self.ends[i];
        let from = *first_splice;
        let mut to = from;
        while to < self.splices.len() && self.splices[to].at <= end && self.splices[to].at > start {
            to += 1;
        }
        *first_splice = to;
        ElementRef {
            bytes: &self.buf[start as usize..end as usize],
            splices: &self.splices[from..to],
            base: start,
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(element: ElementRef<'_>) -> Vec<u8> {
        let mut wire = Vec::new();
        for piece in element.pieces() {
            match piece {
                Piece::Bytes(bytes) => wire.extend_from_slice(bytes),
                Piece::BytesThenValue(bytes, value) => {
                    wire.extend_from_slice(bytes);
                    wire.extend_from_slice(value);
                }
            }
        }
        wire
    }

    #[test]
    fn elements_interleave_their_bytes_and_spliced_values() {
        let v1 = Entry::new(b"k1", b"\xa2ab", 1);
        let v2 = Entry::new(b"k2", b"\x07", 1);
        let mut results = BatchResults::default();
        results.end_request(); // a SET: no element
        results.buf.extend_from_slice(&[0x92, 0xff]);
        results.push_value(&v1);
        results.end_request();
        results.buf.extend_from_slice(&[0x93, 0xfd]);
        results.push_value(&v2);
        results.buf.push(0x01);
        results.end_request();
        let mut splice = 0;
        assert!(results.element(0, &mut splice).is_empty());
        let found = results.element(1, &mut splice);
        assert_eq!(found.encoded_len(), 5);
        assert_eq!(wire(found), b"\x92\xff\xa2ab");
        let versioned = results.element(2, &mut splice);
        assert_eq!(wire(versioned), b"\x93\xfd\x07\x01");
        assert_eq!(splice, 2);
    }
}
