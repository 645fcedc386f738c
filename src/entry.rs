//! A stored entry: one heap allocation holding a key, its value and its
//! version, behind a thin (8-byte), reference-counted pointer.
//!
//! A shard's table stores only these pointers; a GET's reply holds a clone of
//! one and writes the entry's value bytes from it, never a copy
//! (`proto::results`); an ATOMIC batch's undo log and a compaction snapshot
//! hold clones too. An entry never changes once built: every write of a key
//! makes a new one (its version is new), so a holder sees the key, value and
//! version of the moment it took the reference, whatever the table does next.
//!
//! Why one allocation: with a boxed key and a shared value beside it, every
//! entry cost two allocations, each rounded up to the allocator's size class,
//! plus a 41-byte map slot holding both fat pointers and the version. Here the
//! map slot is the pointer alone, and the key is compared inside the entry, so
//! it is stored once (docs/benchmarks.md has the arithmetic and the
//! measurements).
//!
//! ```text
//!                 the pointer
//!                 v
//! offset -4       0              4            (varints: 1 byte each below 128)
//! +---------------+--------------+------------+--------------+-----------+-------------+------------+
//! | access: u32   | refs: u32    | key_tag    | value_len    | key bytes | value bytes | version    |
//! | (atomic; only | (atomic; top | varint     | varint       |           |             | varint     |
//! | under LRU)    | bit: clock)  |            |              |           |             |            |
//! +---------------+--------------+------------+--------------+-----------+-------------+------------+
//!   key_tag = key_len << 2 | on-disk flag << 1 | deadline flag
//!   varint  = unsigned LEB128: 7 bits per byte, low bits first, high bit set
//!             on every byte but the last
//! ```
//!
//! An entry whose value is on disk has no `value_len` (its location, in
//! the value's place, says how long the value is): see *Values on disk*.
//!
//! The lengths and the version are varints because the header is most of what
//! an entry adds to its bytes: for a 16-byte key and a 34-byte value the
//! lengths and version take 3 bytes, the entry 57 (61 with an access clock),
//! and the allocator's 64-byte class holds it; with fixed-width fields (u32
//! count, two u32 lengths, u64 version) it would be 70, and the next class
//! up (80) would hold it. (mimalloc's classes are 16 bytes apart from 16 to
//! 128 bytes on x86-64, `crate::allocator`: a few bytes less save memory
//! only where they take an entry below a class's edge.)
//!
//! The version comes last because every lookup reads the key and every reply
//! the value: both sit behind two bytes of lengths, decoded from one load,
//! however large the version has grown. The version, which only writes and
//! GETV read, is decoded from the tail.
//!
//! An expiring key's entry has the deadline flag set and carries its deadline
//! (absolute Unix milliseconds, u64 little-endian, unaligned) as 8 more bytes
//! after the version, so entries without one pay nothing for it:
//!
//! ```text
//! ... | version varint | deadline: u64 LE (only when the flag is set)
//! ```
//!
//! Whether a key has expired is asked on every access, so the flag sits in
//! the first byte after the count: an entry without a deadline answers from
//! the byte the key lookup reads anyway.
//!
//! # Values on disk
//!
//! Under the disk engine an entry may hold, instead of its value, where the
//! value lies in its shard's log ([`Location`]: the log file, the offset of
//! the value's bytes, their length, and how a read checks them), with the
//! on-disk flag set in the key tag:
//!
//! ```text
//! offset 0       4          (key_tag: 1 byte for keys under 32 bytes)
//! +--------------+----------+-----------+--------------+----------------+---------------+---------+
//! | refs: u32    | key_tag  | key bytes | file varint  | offset varint  | len_check     | version |
//! |              | varint   |           |              |                | varint        | varint  |
//! +--------------+----------+-----------+--------------+----------------+---------------+---------+
//!   len_check = len << 2 | PUTX << 1 | checked by its record; when that
//!               low bit is clear, a CRC-32 (u32 LE) of the value follows
//! ```
//!
//! No value length: the location has it. No CRC for a value that is the
//! only one of its PUT or PUTX record (every plain write's, and after a
//! compaction every value, its snapshot writing one PUT per key): the
//! record starts a fixed distance before the value (its header and the
//! key's length, key, version and value length), so a read covers the whole
//! record and checks its length, body checksum, kind, key and version
//! against this entry (`log::values::WantedValue`) — more than a CRC of the
//! value would, as it also catches a location pointing at the wrong record.
//! A value inside a record of several (a single-shard ATOMIC's BATCH, a
//! cross-shard PREPARE) keeps its 4-byte CRC-32 ([`ValueCheck::Crc`]).
//!
//! So such an entry is an index entry whatever the value's size: for a
//! 16-byte key, a value under 4 KiB at an offset past 256 MiB (a 5-byte
//! varint; a 20 GB log) and version 1, 4 + 1 + 16 + (1 + 5 + 2) + 1 = 30
//! bytes, in the 32-byte class, which holds it up to version 2^21 (at
//! offsets below 2 MiB, 28 bytes). With the value length and the CRC it
//! carried before, 35 bytes and the 48-byte class; a batch's value is
//! still 34. (The map adds its 8-byte slot and a control byte, about 15
//! bytes a key at its usual load.)
//!
//! [`Entry::stored`] tells the two apart; [`Entry::value`]
//! is for inline values only (the owning shard reads an on-disk value into
//! an inline copy before anything uses its bytes, `shard::values`).
//!
//! A value shorter than [`INLINE_VALUE_BELOW_BYTES`] (64 bytes) stays
//! inline under the disk engine too, as well as in its record on disk
//! ([`stays_inline`]). Its bytes are about the size of the location that
//! would take their place (8 to 14 bytes) plus what a disk read of it
//! costs: a 4 KiB block read on every GET, INCRBY or APPEND of a counter,
//! a flag or a session id, against at most 64 bytes more of memory (for a
//! 16-byte key, the entry's class grows from 32 bytes to at most 96).
//! Whoever would make an entry on-disk asks first: a write keeps
//! it inline, compaction does not point it at the new file, replay keeps
//! its bytes, and an entry loaded as a location (from a hint file, which
//! has no values) takes its value back inline on its first read.
//!
//! # The access clock
//!
//! The access clock is the one field that changes after an entry is built:
//! the owning shard stamps it with its coarse clock when the entry is
//! written or read, and the memory limit's LRU eviction compares stamps of
//! sampled keys (`table::eviction`, as Redis's 24-bit LRU field in each
//! object). Four bytes of hundredths of a second wrap every 497 days, which
//! only makes a key idle for longer than that look younger than it is; a
//! coarser clock (Redis's ticks once a second) cannot tell apart the keys a
//! busy shard writes within one tick, and then evicts the newest as readily
//! as the oldest. It is atomic because references are read on other
//! threads, though only the owner writes it.
//!
//! Only LRU eviction reads it, and the policy is fixed when the server
//! starts, so only the entries of a table under an LRU policy carry one
//! ([`Entry::build`] is told; copies of an entry keep what it has): the
//! others are 4 bytes shorter. An entry says itself whether it has one, in
//! the top bit of its reference count, which counting never reaches
//! (`MAX_REFS`): a clone or a drop masks it off the value its atomic
//! operation returns anyway, and the last drop finds there where the
//! allocation starts. The clock sits *before* the pointer, so everything a
//! lookup, a reply or an expiry check reads is at the same offset in every
//! entry, clock or not: the key tag (and with it both flags) at byte 4, the
//! key right after the lengths, found as before without looking at the
//! count. The alternatives cost that path: the clock after the count would
//! move the lengths by 4 bytes in some entries, so every key comparison
//! would first load the count to find them; a flag in the key tag would
//! take a bit from the key's length, and a 16-byte key's tag (16 << 3 =
//! 128) would need a second varint byte, a quarter of the saving gone and
//! every lookup of such a key off the one-load path of `Entry::key_span`.
//! Only `touch` and `access_clock` look at the flag: an entry without a
//! clock ignores a touch, and LRU, which never sees one, would read it as 0.
//!
//! The reference count is atomic: replies travel to other shards' threads
//! (a GET forwarded from another shard's connection) and drop their reference
//! there. The table's owner keeps a reference for as long as anyone else holds
//! one (`table::pinned`), so the last reference, and the free, is the owning
//! shard's.

use crate::allocator;
use std::alloc::Layout;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{self, AtomicU32, Ordering};

/// Bytes of the reference count at the start of every entry.
const REFS_BYTES: usize = 4;
/// Bytes of the access clock, before the reference count, in an entry that
/// has one.
const CLOCK_BYTES: usize = 4;
/// Where the lengths start: after the count.
const LENGTHS_AT: usize = REFS_BYTES;
/// The reference count's top bit: set, from the start, in an entry that
/// carries an access clock. Counting never reaches it (`MAX_REFS`).
const HAS_CLOCK: u32 = 1 << 31;
/// The bits of the reference count word that count references.
const COUNT_MASK: u32 = !HAS_CLOCK;
/// Bytes of a deadline, after the version, in an entry that has one.
const DEADLINE_BYTES: usize = 8;
/// Entries are aligned for their reference count.
const ALIGN: usize = std::mem::align_of::<AtomicU32>();
/// References beyond this abort the process, as `Arc` does past `isize::MAX`:
/// a count that wrapped would free an entry still in use. A clone checks
/// after it counted, so threads cloning at once may each add one before
/// they abort: this leaves 2^30 of them before the count would reach the
/// clock flag. Reaching it takes a billion live clones (8 GiB of pointers
/// alone).
const MAX_REFS: u32 = u32::MAX / 4;

/// Values shorter than this stay in their entry under the disk engine, as
/// well as on disk (see the module docs): below it, a value is about the
/// size of the location its entry would carry instead, plus the disk read
/// that every GET, INCRBY or APPEND of it would otherwise cost.
pub const INLINE_VALUE_BELOW_BYTES: usize = 64;

/// Whether a value of `len` bytes stays in its entry under the disk engine
/// (it is shorter than [`INLINE_VALUE_BELOW_BYTES`]).
pub fn stays_inline(len: usize) -> bool {
    len < INLINE_VALUE_BELOW_BYTES
}

/// Where an on-disk value's bytes are: in the log file `file` of its shard
/// (files are numbered from 0 at start, one more at each compaction), `len`
/// bytes at byte `offset`; `check` is how a read proves it got those bytes,
/// so damage on disk is an error and never a wrong value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    pub file: u32,
    pub offset: u64,
    pub len: u32,
    pub check: ValueCheck,
}

/// How a read of an on-disk value is checked (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueCheck {
    /// The value is the only one of a PUT record (a PUTX with
    /// `with_deadline`): the read covers the whole record, and its length,
    /// body checksum, kind, key and version are checked. Nothing is kept
    /// for it in the entry: the record's checksum covers the value.
    Record { with_deadline: bool },
    /// The value is one of several in a record (a single-shard ATOMIC's
    /// BATCH, a cross-shard PREPARE), whose checksum only a read of the
    /// whole record could check: the CRC-32 of its bytes, kept in the entry.
    Crc(u32),
}

/// Bytes of a location's checksum in an entry (fixed: a checksum's varint
/// would mostly take five).
const CRC_BYTES: usize = 4;
/// The low bits of a location's length varint say how the value is checked
/// ([`ValueCheck`]): none set, by the CRC-32 that follows the varint.
const LEN_FLAG_BITS: u32 = 2;
/// Checked by its PUT or PUTX record.
const LEN_RECORD_FLAG: u64 = 1;
/// Checked by its record, which is a PUTX.
const LEN_DEADLINE_FLAG: u64 = 2;

impl Location {
    /// The location's length varint: the length, and how it is checked.
    fn len_field(&self) -> u64 {
        let flags = match self.check {
            ValueCheck::Record {
                with_deadline: false,
            } => LEN_RECORD_FLAG,
            ValueCheck::Record {
                with_deadline: true,
            } => LEN_RECORD_FLAG | LEN_DEADLINE_FLAG,
            ValueCheck::Crc(_) => 0,
        };
        u64::from(self.len) << LEN_FLAG_BITS | flags
    }

    /// Bytes of the location in an entry: three varints, and the checksum
    /// only for a value checked by it.
    fn encoded_len(&self) -> usize {
        let crc = match self.check {
            ValueCheck::Record { .. } => 0,
            ValueCheck::Crc(_) => CRC_BYTES,
        };
        varint_len(u64::from(self.file))
            + varint_len(self.offset)
            + varint_len(self.len_field())
            + crc
    }

    /// Writes the location at `at`; returns the byte after it.
    ///
    /// # Safety
    /// `at` must be valid for `encoded_len()` bytes of writes.
    unsafe fn write(&self, at: *mut u8) -> *mut u8 {
        let mut at = write_varint(at, u64::from(self.file));
        at = write_varint(at, self.offset);
        at = write_varint(at, self.len_field());
        if let ValueCheck::Crc(crc) = self.check {
            at.cast::<[u8; CRC_BYTES]>()
                .write_unaligned(crc.to_le_bytes());
            at = at.add(CRC_BYTES);
        }
        at
    }

    /// Reads a location written by [`Location::write`]; returns it and the
    /// byte after it.
    ///
    /// # Safety
    /// `at` must point at a complete location.
    unsafe fn read(at: *const u8) -> (Location, *const u8) {
        let (file, at) = read_varint(at);
        let (offset, at) = read_varint(at);
        let (len_field, mut at) = read_varint(at);
        let check = match len_field & LEN_RECORD_FLAG {
            0 => {
                let crc = u32::from_le_bytes(at.cast::<[u8; CRC_BYTES]>().read_unaligned());
                at = at.add(CRC_BYTES);
                ValueCheck::Crc(crc)
            }
            _ => ValueCheck::Record {
                with_deadline: len_field & LEN_DEADLINE_FLAG != 0,
            },
        };
        let location = Location {
            file: file as u32,
            offset,
            len: (len_field >> LEN_FLAG_BITS) as u32,
            check,
        };
        (location, at)
    }
}

/// An entry's value: its bytes, or where they are on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored<'a> {
    Inline(&'a [u8]),
    OnDisk(Location),
}

/// A shared, immutable (key, value, version) in one allocation.
pub struct Entry {
    ptr: NonNull<u8>,
}

// SAFETY: an entry's bytes never change after `Entry::new`, and its reference
// count is atomic, so clones may be used and dropped on any thread.
unsafe impl Send for Entry {}
// SAFETY: as above; `&Entry` only reads immutable bytes.
unsafe impl Sync for Entry {}

/// The decoded lengths: where the key and value are and how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    key_len: usize,
    value_len: usize,
    /// Offset of the key (the reference count and both lengths before it).
    key_at: usize,
}

impl Header {
    fn for_lens(key_len: usize, value_len: usize) -> Header {
        Header {
            key_len,
            value_len,
            key_at: LENGTHS_AT
                + varint_len(key_tag(key_len, false, false))
                + varint_len(value_len as u64),
        }
    }

    /// Offset of the version: right after the value.
    fn version_at(&self) -> usize {
        self.key_at + self.key_len + self.value_len
    }
}

const DEADLINE_FLAG: u8 = 1;
const ON_DISK_FLAG: u8 = 2;
/// Bits of the key tag below the key's length.
const TAG_FLAG_BITS: u32 = 2;

fn key_tag(key_len: usize, has_deadline: bool, on_disk: bool) -> u64 {
    let mut tag = (key_len as u64) << TAG_FLAG_BITS;
    if has_deadline {
        tag |= u64::from(DEADLINE_FLAG);
    }
    if on_disk {
        tag |= u64::from(ON_DISK_FLAG);
    }
    tag
}

/// Bytes after the version: the deadline's, if there is one.
fn deadline_bytes(has_deadline: bool) -> usize {
    match has_deadline {
        true => DEADLINE_BYTES,
        false => 0,
    }
}

/// Bytes before the reference count: the access clock's, if there is one.
fn clock_bytes(has_clock: bool) -> usize {
    match has_clock {
        true => CLOCK_BYTES,
        false => 0,
    }
}

/// The layout of an entry of `size` bytes (to report a failed allocation).
fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, ALIGN).expect("entry sizes are far below isize::MAX")
}

/// What an entry adds to a table's figures: its lengths, its version and what
/// the allocator holds for it (its size rounded up to the allocator's size
/// class, which the memory limit counts). Decoded at once, since a write
/// needs all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    pub key_bytes: usize,
    pub value_bytes: usize,
    pub version: u64,
    pub allocated_bytes: usize,
    /// The log file holding the value, for an entry whose value is on disk.
    pub on_disk_file: Option<u32>,
}

impl Footprint {
    /// The footprint of an entry of these parts, known before it is built
    /// (so that a write can be refused before it allocates).
    pub fn of_parts(key_len: usize, value_len: usize, version: u64) -> Footprint {
        Footprint::of_expiring(key_len, value_len, version, false, false)
    }

    /// As [`Footprint::of_parts`], for an entry with or without a deadline,
    /// and with or without an access clock.
    pub fn of_expiring(
        key_len: usize,
        value_len: usize,
        version: u64,
        has_deadline: bool,
        has_clock: bool,
    ) -> Footprint {
        let size = clock_bytes(has_clock)
            + Header::for_lens(key_len, value_len).version_at()
            + varint_len(version)
            + deadline_bytes(has_deadline);
        Footprint {
            on_disk_file: None,
            key_bytes: key_len,
            value_bytes: value_len,
            version,
            allocated_bytes: allocator::held_bytes(size),
        }
    }
}

impl Entry {
    /// Copies `key` and `value` into a new entry with one reference (and no
    /// access clock).
    pub fn new(key: &[u8], value: &[u8], version: u64) -> Entry {
        Entry::expiring(key, value, version, None)
    }

    /// Copies `key` and `value` into a new entry with one reference, which
    /// expires at `deadline` (Unix milliseconds) if there is one.
    pub fn expiring(key: &[u8], value: &[u8], version: u64, deadline: Option<u64>) -> Entry {
        Entry::build(key, Stored::Inline(value), version, deadline, None)
    }

    /// An index entry: `key`, whose value lies on disk at `location`.
    pub fn on_disk(key: &[u8], location: Location, version: u64, deadline: Option<u64>) -> Entry {
        Entry::build(key, Stored::OnDisk(location), version, deadline, None)
    }

    /// This entry with another deadline: the same key, value (or location)
    /// and version, and the same access clock (or none).
    pub fn with_deadline(&self, deadline: Option<u64>) -> Entry {
        let stamp = self.access_stamp();
        Entry::build(self.key(), self.stored(), self.version(), deadline, stamp)
    }

    /// This entry with its value at `location` instead (the same bytes
    /// written to disk, or moved there by compaction); the rest kept.
    pub fn relocated(&self, location: Location) -> Entry {
        let (version, deadline) = (self.version(), self.deadline());
        let stored = Stored::OnDisk(location);
        Entry::build(self.key(), stored, version, deadline, self.access_stamp())
    }

    /// This entry with `value`, read from its location, inline instead
    /// (a small value loaded as a location: see the module docs); the rest
    /// kept.
    pub fn with_value_inline(&self, value: &[u8]) -> Entry {
        let (version, deadline) = (self.version(), self.deadline());
        let stored = Stored::Inline(value);
        Entry::build(self.key(), stored, version, deadline, self.access_stamp())
    }

    /// This entry with an access clock stamped at `clock`, or without one
    /// (None); the rest kept. For a table whose entries were built before
    /// it was given its eviction policy (`table::eviction`).
    pub fn with_access_clock(&self, clock: Option<u32>) -> Entry {
        let (version, deadline) = (self.version(), self.deadline());
        Entry::build(self.key(), self.stored(), version, deadline, clock)
    }

    /// A new entry with one reference: `key`, its value or where that lies
    /// on disk, its version, its deadline if it has one, and an access clock
    /// stamped at `clock` if it carries one (only a table under an LRU
    /// eviction policy asks for it: see the module docs).
    pub fn build(
        key: &[u8],
        stored: Stored<'_>,
        version: u64,
        deadline: Option<u64>,
        clock: Option<u32>,
    ) -> Entry {
        let stored_len = match stored {
            Stored::Inline(value) => value.len(),
            Stored::OnDisk(location) => location.encoded_len(),
        };
        let on_disk = matches!(stored, Stored::OnDisk(_));
        let tag = key_tag(key.len(), deadline.is_some(), on_disk);
        // An on-disk entry has no value length: its location says how long
        // it is itself.
        let value_len_bytes = match on_disk {
            true => 0,
            false => varint_len(stored_len as u64),
        };
        let key_at = LENGTHS_AT + varint_len(tag) + value_len_bytes;
        let header = Header {
            key_len: key.len(),
            value_len: stored_len,
            key_at,
        };
        let version_end = header.version_at() + varint_len(version);
        let size = version_end + deadline_bytes(deadline.is_some());
        let prefix = clock_bytes(clock.is_some());
        let Some(block) = allocator::allocate(prefix + size) else {
            std::alloc::handle_alloc_error(layout(prefix + size))
        };
        // SAFETY: `prefix` is within the block (it is 0 or 4 bytes long).
        let ptr = unsafe { block.add(prefix) };
        let raw = ptr.as_ptr();
        // SAFETY: `block` is a fresh allocation of `prefix + size` bytes
        // aligned for a u32 (so is `raw`, `prefix` being 0 or 4); the writes
        // below fill exactly those bytes.
        unsafe {
            let refs = match clock {
                Some(stamp) => {
                    block
                        .as_ptr()
                        .cast::<AtomicU32>()
                        .write(AtomicU32::new(stamp));
                    1 | HAS_CLOCK
                }
                None => 1,
            };
            raw.cast::<AtomicU32>().write(AtomicU32::new(refs));
            let mut at = raw.add(LENGTHS_AT);
            at = write_varint(at, tag);
            if !on_disk {
                at = write_varint(at, stored_len as u64);
            }
            debug_assert_eq!(at, raw.add(header.key_at));
            std::ptr::copy_nonoverlapping(key.as_ptr(), at, key.len());
            let value_at = at.add(key.len());
            match stored {
                Stored::Inline(value) => {
                    std::ptr::copy_nonoverlapping(value.as_ptr(), value_at, value.len());
                }
                Stored::OnDisk(location) => {
                    let loc_end = location.write(value_at);
                    debug_assert_eq!(loc_end, raw.add(header.version_at()));
                }
            }
            let mut end = write_varint(raw.add(header.version_at()), version);
            debug_assert_eq!(end, raw.add(version_end));
            if let Some(deadline) = deadline {
                end.cast::<[u8; DEADLINE_BYTES]>()
                    .write_unaligned(deadline.to_le_bytes());
                end = end.add(DEADLINE_BYTES);
            }
            debug_assert_eq!(end, raw.add(size));
        }
        #[cfg(test)]
        live::created();
        Entry { ptr }
    }

    pub fn key(&self) -> &[u8] {
        let (key_at, key_len) = self.key_span();
        // SAFETY: the key's bytes lie at key_at, inside the live allocation.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(key_at), key_len) }
    }

    /// The value bytes, exactly as they were written. Only for an entry
    /// holding its value: an on-disk one's bytes are read first (see the
    /// module docs), and asking it is a bug in the caller.
    pub fn value(&self) -> &[u8] {
        match self.stored() {
            Stored::Inline(value) => value,
            Stored::OnDisk(location) => {
                panic!("the value of an on-disk entry ({location:?}) was used unread")
            }
        }
    }

    /// The value's bytes, or where they are on disk.
    pub fn stored(&self) -> Stored<'_> {
        if self.is_on_disk() {
            let (key_at, key_len) = self.key_span();
            // SAFETY: the location follows the key, inside the live
            // allocation.
            let (location, _) = unsafe { Location::read(self.ptr.as_ptr().add(key_at + key_len)) };
            return Stored::OnDisk(location);
        }
        let header = self.header();
        // SAFETY: the value's bytes follow the key, inside the live
        // allocation.
        unsafe {
            let at = self.ptr.as_ptr().add(header.key_at + header.key_len);
            Stored::Inline(std::slice::from_raw_parts(at, header.value_len))
        }
    }

    /// Where the value is on disk, if it is there rather than in the entry.
    pub fn location(&self) -> Option<Location> {
        match self.stored() {
            Stored::Inline(_) => None,
            Stored::OnDisk(location) => Some(location),
        }
    }

    /// Whether the value is on disk rather than in the entry.
    pub fn is_on_disk(&self) -> bool {
        self.tag_byte() & ON_DISK_FLAG != 0
    }

    /// The value's length in bytes, wherever it is.
    pub fn value_len(&self) -> usize {
        match self.stored() {
            Stored::Inline(value) => value.len(),
            Stored::OnDisk(location) => location.len as usize,
        }
    }

    pub fn version(&self) -> u64 {
        self.version_and_size().0
    }

    /// When the key expires (Unix milliseconds), if it does.
    pub fn deadline(&self) -> Option<u64> {
        if !self.has_deadline() {
            return None;
        }
        let header = self.header();
        // SAFETY: the flag says `Entry::new` wrote 8 deadline bytes after the
        // version, which ends where `read_version` says.
        unsafe {
            let start = self.ptr.as_ptr().cast_const();
            let (_, end) = read_varint(start.add(header.version_at()));
            let bytes = end.cast::<[u8; DEADLINE_BYTES]>().read_unaligned();
            Some(u64::from_le_bytes(bytes))
        }
    }

    /// Whether the key's deadline is at or before `now_ms`. An entry without
    /// a deadline answers from its first header byte.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.deadline().is_some_and(|deadline| deadline <= now_ms)
    }

    /// Whether the entry carries a deadline (the flag in its key tag).
    fn has_deadline(&self) -> bool {
        self.tag_byte() & DEADLINE_FLAG != 0
    }

    /// The first byte of the key tag: both flags, whatever the key's length.
    fn tag_byte(&self) -> u8 {
        // SAFETY: every entry has at least one byte of key tag after the count.
        unsafe { self.ptr.as_ptr().add(LENGTHS_AT).read() }
    }

    /// What the allocator holds for this entry (see [`Footprint`]).
    pub fn allocated_bytes(&self) -> usize {
        allocator::held_bytes(self.version_and_size().1)
    }

    /// The entry's lengths, version and allocated size, decoded at once.
    pub fn footprint(&self) -> Footprint {
        let header = self.header();
        // SAFETY: `Entry::new` wrote a well-formed varint after the value.
        let (version, size) = unsafe { self.read_version(header) };
        Footprint {
            key_bytes: header.key_len,
            value_bytes: self.value_len(),
            version,
            allocated_bytes: allocator::held_bytes(size),
            on_disk_file: self.location().map(|at| at.file),
        }
    }

    /// Whether anyone else holds a reference to this entry (a reply, an undo
    /// log, a snapshot).
    pub fn is_shared(&self) -> bool {
        self.ref_count() > 1
    }

    /// Number of references, this one included.
    pub fn ref_count(&self) -> usize {
        (self.refs().load(Ordering::Acquire) & COUNT_MASK) as usize
    }

    /// Whether two references are to the same entry.
    pub fn ptr_eq(a: &Entry, b: &Entry) -> bool {
        a.ptr == b.ptr
    }

    /// The entry's address: unique among live entries.
    pub fn address(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// The coarse clock of the entry's last write or read (see the module
    /// docs): what LRU eviction compares. Only a table under an LRU policy
    /// asks, and its entries all carry a clock; an entry without one
    /// answers 0, as if never used since the clock started.
    pub fn access_clock(&self) -> u32 {
        debug_assert!(self.has_clock(), "LRU asked an entry without a clock");
        self.access_stamp().unwrap_or(0)
    }

    /// The access clock, if the entry carries one.
    pub fn access_stamp(&self) -> Option<u32> {
        self.access().map(|clock| clock.load(Ordering::Relaxed))
    }

    /// Stamps the entry as written or read at `clock`, if it carries a
    /// clock; an entry without one (no LRU policy) is left as it is.
    /// Relaxed: the owning shard alone writes and compares it; nothing else
    /// depends on it.
    pub fn touch(&self, clock: u32) {
        if let Some(access) = self.access() {
            access.store(clock, Ordering::Relaxed);
        }
    }

    /// Whether the entry carries an access clock (fixed when it was built).
    fn has_clock(&self) -> bool {
        // Relaxed: the flag was written before this reference existed and
        // never changes; counting never carries into it.
        self.refs().load(Ordering::Relaxed) & HAS_CLOCK != 0
    }

    fn access(&self) -> Option<&AtomicU32> {
        if !self.has_clock() {
            return None;
        }
        // SAFETY: the flag says the allocation starts with an access clock
        // right before the count, aligned for a u32 as the count is.
        Some(unsafe { &*self.ptr.as_ptr().sub(CLOCK_BYTES).cast::<AtomicU32>() })
    }

    /// The start of the entry's allocation: its access clock, if it has
    /// one, else its count.
    fn block(&self, has_clock: bool) -> NonNull<u8> {
        // SAFETY: an entry with a clock was allocated CLOCK_BYTES before its
        // pointer (`Entry::build`).
        unsafe { self.ptr.sub(clock_bytes(has_clock)) }
    }

    fn refs(&self) -> &AtomicU32 {
        // SAFETY: every entry starts with its reference count, aligned (ALIGN).
        unsafe { &*self.ptr.as_ptr().cast::<AtomicU32>() }
    }

    /// Where the key is and how long, the one thing every lookup decodes:
    /// for keys under 32 bytes, from the first two header bytes, loaded
    /// at once, whether the value is in the entry or on disk.
    fn key_span(&self) -> (usize, usize) {
        // SAFETY: every entry has at least two bytes after the reference
        // count (a key tag, then a value length or a location).
        let [tag, value_len] =
            unsafe { self.ptr.as_ptr().add(LENGTHS_AT).cast::<[u8; 2]>().read() };
        if tag < 0x80 {
            let key_len = usize::from(tag >> TAG_FLAG_BITS);
            if tag & ON_DISK_FLAG != 0 {
                return (LENGTHS_AT + 1, key_len);
            }
            if value_len < 0x80 {
                return (LENGTHS_AT + 2, key_len);
            }
        }
        let header = self.decode_header();
        (header.key_at, header.key_len)
    }

    /// The lengths. Keys under 32 bytes with inline values under 128 (one
    /// byte each) are decoded from one two-byte load; an on-disk entry's
    /// location is decoded for its length.
    fn header(&self) -> Header {
        // SAFETY: every entry has at least one byte of each length after the
        // reference count (a location, for an on-disk entry, and a version
        // after them).
        let [tag, value_len] =
            unsafe { self.ptr.as_ptr().add(LENGTHS_AT).cast::<[u8; 2]>().read() };
        if (tag | value_len) < 0x80 && tag & ON_DISK_FLAG == 0 {
            return Header {
                key_len: usize::from(tag >> TAG_FLAG_BITS),
                value_len: usize::from(value_len),
                key_at: LENGTHS_AT + 2,
            };
        }
        self.decode_header()
    }

    fn decode_header(&self) -> Header {
        // SAFETY: `Entry::build` wrote a well-formed key tag after the
        // count, then a value length (inline) or, after the key, a location
        // (on disk).
        unsafe {
            let start = self.ptr.as_ptr().cast_const();
            let (tag, at) = read_varint(start.add(LENGTHS_AT));
            let key_len = (tag >> TAG_FLAG_BITS) as usize;
            if tag & u64::from(ON_DISK_FLAG) != 0 {
                let location_at = at.add(key_len);
                let (_, end) = Location::read(location_at);
                return Header {
                    key_len,
                    value_len: end.offset_from(location_at) as usize,
                    key_at: at.offset_from(start) as usize,
                };
            }
            let (value_len, at) = read_varint(at);
            Header {
                key_len,
                value_len: value_len as usize,
                key_at: at.offset_from(start) as usize,
            }
        }
    }

    /// The version, and the entry's size (it ends with the version).
    fn version_and_size(&self) -> (u64, usize) {
        // SAFETY: `Entry::new` wrote a well-formed varint after the value.
        unsafe { self.read_version(self.header()) }
    }

    /// Decodes the version after the value `header` locates; returns it and
    /// the entry's size (its deadline and its access clock included).
    ///
    /// # Safety
    /// `header` must be this entry's.
    unsafe fn read_version(&self, header: Header) -> (u64, usize) {
        let start = self.ptr.as_ptr().cast_const();
        let (version, end) = read_varint(start.add(header.version_at()));
        let size = clock_bytes(self.has_clock())
            + end.offset_from(start) as usize
            + deadline_bytes(self.has_deadline());
        (version, size)
    }
}

impl Clone for Entry {
    fn clone(&self) -> Entry {
        // Relaxed, as in `Arc::clone`: a new reference is made from an existing
        // one, which keeps the entry alive meanwhile.
        if self.refs().fetch_add(1, Ordering::Relaxed) & COUNT_MASK > MAX_REFS {
            std::process::abort();
        }
        Entry { ptr: self.ptr }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // Release, then Acquire before freeing, as in `Arc::drop`: every use of
        // the entry through other references happens before the free.
        let before = self.refs().fetch_sub(1, Ordering::Release);
        if before & COUNT_MASK != 1 {
            return;
        }
        atomic::fence(Ordering::Acquire);
        #[cfg(test)]
        live::freed();
        let block = self.block(before & HAS_CLOCK != 0);
        // SAFETY: this was the last reference to a block from `allocate`.
        unsafe { allocator::free(block) }
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("key", &String::from_utf8_lossy(self.key()))
            .field("stored", &self.location().map_or("inline", |_| "on disk"))
            .field("value_len", &self.value_len())
            .field("version", &self.version())
            .field("deadline", &self.deadline())
            .field("access_clock", &self.access_stamp())
            .finish()
    }
}

/// Bytes of `n` as a varint: one per 7 significant bits, at least one.
fn varint_len(n: u64) -> usize {
    let bits = 64 - (n | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Writes `n` as a varint at `at`; returns the byte after it.
///
/// # Safety
/// `at` must be valid for `varint_len(n)` bytes of writes.
unsafe fn write_varint(mut at: *mut u8, mut n: u64) -> *mut u8 {
    while n >= 0x80 {
        at.write(n as u8 | 0x80);
        at = at.add(1);
        n >>= 7;
    }
    at.write(n as u8);
    at.add(1)
}

/// Reads a varint written by [`write_varint`]; returns it and the byte after it.
///
/// # Safety
/// `at` must point at a complete varint.
unsafe fn read_varint(mut at: *const u8) -> (u64, *const u8) {
    let mut n = 0u64;
    let mut shift = 0;
    loop {
        let byte = at.read();
        at = at.add(1);
        n |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return (n, at);
        }
        shift += 7;
    }
}

#[cfg(test)]
pub(crate) mod live {
    use std::cell::Cell;

    thread_local! {
        static LIVE: Cell<i64> = const { Cell::new(0) };
    }

    pub(crate) fn created() {
        LIVE.with(|n| n.set(n.get() + 1));
    }

    pub(crate) fn freed() {
        LIVE.with(|n| n.set(n.get() - 1));
    }

    /// Entries created minus entries freed on this thread so far.
    pub(crate) fn count() -> i64 {
        LIVE.with(Cell::get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(entry: &Entry) -> usize {
        entry.header().key_at
    }

    fn size(entry: &Entry) -> usize {
        entry.version_and_size().1
    }

    #[test]
    fn an_entry_returns_its_key_value_and_version_byte_for_byte() {
        let entry = Entry::new(b"key", b"\xa5hello", 7);
        assert_eq!(entry.key(), b"key");
        assert_eq!(entry.value(), b"\xa5hello");
        assert_eq!(entry.version(), 7);
        assert_eq!(header_bytes(&entry), LENGTHS_AT + 2);
        assert_eq!(size(&entry), LENGTHS_AT + 2 + 3 + 6 + 1);
    }

    #[test]
    fn an_empty_key_and_an_empty_value_take_only_the_count_lengths_and_version() {
        let entry = Entry::new(b"", b"", 1);
        assert_eq!(
            (entry.key(), entry.value(), entry.version()),
            (&[][..], &[][..], 1)
        );
        assert_eq!(size(&entry), LENGTHS_AT + 3);
        assert!(entry.allocated_bytes() >= LENGTHS_AT + 3);
        let no_key = Entry::new(b"", b"v", 2);
        assert_eq!((no_key.key(), no_key.value()), (&b""[..], &b"v"[..]));
        let no_value = Entry::new(b"k", b"", 3);
        assert_eq!((no_value.key(), no_value.value()), (&b"k"[..], &b""[..]));
    }

    #[test]
    fn lengths_and_versions_at_every_varint_boundary_round_trip() {
        // key_tag is key_len << 2, so its byte boundaries fall at a quarter of
        // the value_len ones. Each field crosses its boundaries on its own, so the
        // two-byte decoding of the lengths meets every mix.
        let lens = [
            0, 1, 31, 32, 63, 64, 127, 128, 4095, 4096, 16383, 16384, 70_000,
        ];
        let versions = [0, 1, 127, 128, 16383, 16384, u64::from(u32::MAX), u64::MAX];
        for key_len in lens {
            for value_len in lens {
                for version in versions {
                    let (key, value) = (vec![b'k'; key_len], vec![b'v'; value_len]);
                    let entry = Entry::new(&key, &value, version);
                    let what = format!("{key_len}-byte key, {value_len}-byte value, v{version}");
                    assert_eq!(entry.key(), &key[..], "{what}");
                    assert_eq!(entry.value(), &value[..], "{what}");
                    assert_eq!(entry.version(), version, "{what}");
                    let lengths = varint_len((key_len as u64) << 2) + varint_len(value_len as u64);
                    assert_eq!(header_bytes(&entry), LENGTHS_AT + lengths, "{what}");
                    assert_eq!(
                        size(&entry),
                        LENGTHS_AT + lengths + key_len + value_len + varint_len(version),
                        "{what}"
                    );
                    assert_eq!(entry.header(), entry.decode_header(), "{what}");
                }
            }
        }
    }

    #[test]
    fn an_on_disk_entry_holds_its_location_and_keeps_key_version_and_deadline() {
        let checks = [
            ValueCheck::Record {
                with_deadline: false,
            },
            ValueCheck::Record {
                with_deadline: true,
            },
            ValueCheck::Crc(0),
            ValueCheck::Crc(0x8000_0001),
            ValueCheck::Crc(u32::MAX),
        ];
        let places = [
            (0, 0, 0),
            (3, 4096 + 17, 1024),
            (1, 1 << 28, 127),
            (u32::MAX, u64::MAX, u32::MAX),
        ];
        let locations = checks.iter().flat_map(|&check| {
            places.map(|(file, offset, len)| Location {
                file,
                offset,
                len,
                check,
            })
        });
        for key_len in [0, 16, 31, 32, 200] {
            for location in locations.clone() {
                for deadline in [None, Some(1_700_000_000_000)] {
                    let key = vec![b'k'; key_len];
                    let entry = Entry::on_disk(&key, location, 9, deadline);
                    assert!(entry.is_on_disk());
                    assert_eq!(entry.stored(), Stored::OnDisk(location));
                    assert_eq!(entry.location(), Some(location));
                    assert_eq!(entry.key(), &key[..]);
                    assert_eq!((entry.version(), entry.deadline()), (9, deadline));
                    assert_eq!(entry.value_len(), location.len as usize);
                    assert_eq!(entry.footprint().value_bytes, location.len as usize);
                    assert_eq!(entry.header(), entry.decode_header());
                }
            }
        }
    }

    #[test]
    fn relocating_or_changing_the_deadline_keeps_everything_else() {
        let inline = Entry::build(b"key", Stored::Inline(b"\xa3abc"), 5, Some(77), Some(0));
        inline.touch(1234);
        let location = Location {
            file: 1,
            offset: 999,
            len: 4,
            check: ValueCheck::Crc(crc32fast::hash(b"\xa3abc")),
        };
        let moved = inline.relocated(location);
        assert_eq!(moved.location(), Some(location));
        assert_eq!(
            (moved.key(), moved.version(), moved.deadline()),
            (&b"key"[..], 5, Some(77))
        );
        assert_eq!(moved.access_clock(), 1234);
        let persisted = moved.with_deadline(None);
        assert_eq!(persisted.location(), Some(location));
        assert_eq!((persisted.version(), persisted.deadline()), (5, None));
        let back = inline.with_deadline(Some(88));
        assert_eq!((back.value(), back.deadline()), (&b"\xa3abc"[..], Some(88)));
        assert!(!back.is_on_disk());
        let read_back = moved.with_value_inline(b"\xa3abc");
        assert!(!read_back.is_on_disk());
        assert_eq!(
            (read_back.value(), read_back.version(), read_back.deadline()),
            (&b"\xa3abc"[..], 5, Some(77))
        );
        assert_eq!(read_back.access_clock(), 1234);
    }

    #[test]
    #[should_panic(expected = "used unread")]
    fn using_an_on_disk_entrys_value_unread_is_a_bug_caught_at_once() {
        let location = Location {
            file: 0,
            offset: 40,
            len: 3,
            check: ValueCheck::Crc(7),
        };
        let _ = Entry::on_disk(b"k", location, 1, None).value();
    }

    /// An on-disk entry of `key` at `location`, at `version`, with an
    /// access clock stamped at `clock` if there is one.
    fn index_entry(key: &[u8], location: Location, version: u64, clock: Option<u32>) -> Entry {
        Entry::build(key, Stored::OnDisk(location), version, None, clock)
    }

    /// A 1 KiB value at `offset` of file 1, checked by its PUT record.
    fn put_value_at(offset: u64) -> Location {
        Location {
            file: 1,
            offset,
            len: 1024,
            check: ValueCheck::Record {
                with_deadline: false,
            },
        }
    }

    #[test]
    fn an_index_entry_of_a_16_byte_key_past_256_mib_of_log_takes_a_32_byte_block() {
        // What the disk engine keeps per key besides its map slot, whatever
        // the value's size: a 16-byte key, a 1 KiB value at an offset past
        // 256 MiB (a 5-byte varint), version 1. Count 4 + key tag 1 + key
        // 16 + location (file 1, offset 5, length and check 2) + version 1
        // = 30 bytes: no value length and, its PUT record checking the
        // value, no CRC. mimalloc's classes are 16 bytes apart from 16 to
        // 128 on x86-64, so it takes 32 (with the 5 bytes, 35, it took 48).
        let far = put_value_at(20 << 30);
        let entry = index_entry(&[7; 16], far, 1, None);
        assert_eq!(size(&entry), 30);
        assert_eq!(entry.allocated_bytes(), 32);
        let real = allocator::usable_bytes(entry.block(false).as_ptr());
        assert_eq!(real, 32, "mimalloc's own size of the block");
        // Below 2 MiB of log, a 3-byte offset: 28 bytes.
        assert_eq!(
            size(&index_entry(&[7; 16], put_value_at(1 << 20), 1, None)),
            28
        );
        // Versions up to 2^21 still fit the class; an access clock does not.
        let rewritten = index_entry(&[7; 16], far, (1 << 21) - 1, None);
        assert_eq!((size(&rewritten), rewritten.allocated_bytes()), (32, 32));
        let clocked = index_entry(&[7; 16], far, 1, Some(5));
        assert_eq!(size(&clocked), 34);
        assert_eq!(clocked.allocated_bytes(), 48);
    }

    #[test]
    fn a_value_of_a_batch_keeps_its_crc_in_its_index_entry() {
        // A value inside a BATCH or PREPARE record is checked by a CRC-32 of
        // its own, 4 bytes more than a PUT record's value: 34 bytes, 48.
        let in_batch = Location {
            check: ValueCheck::Crc(0xdead_beef),
            ..put_value_at(20 << 30)
        };
        let entry = index_entry(&[7; 16], in_batch, 1, None);
        assert_eq!(entry.location(), Some(in_batch));
        assert_eq!(size(&entry), 30 + CRC_BYTES);
        assert_eq!(entry.allocated_bytes(), 48);
        let big = Location {
            len: u32::MAX,
            ..in_batch
        };
        let huge_value = index_entry(&[7; 16], big, 1, None);
        assert_eq!(huge_value.location(), Some(big));
        assert_eq!(size(&huge_value), 30 - 2 + 5 + CRC_BYTES);
    }

    #[test]
    fn an_entry_without_an_access_clock_is_four_bytes_shorter() {
        for (key_len, value_len, deadline) in [
            (0, 0, None),
            (16, 34, None),
            (16, 34, Some(99)),
            (200, 5000, Some(1)),
        ] {
            let (key, value) = (vec![1; key_len], vec![2; value_len]);
            let plain = Entry::expiring(&key, &value, 3, deadline);
            let stored = Stored::Inline(&value);
            let clocked = Entry::build(&key, stored, 3, deadline, Some(7));
            let what = format!("{key_len}-byte key, {value_len}-byte value, {deadline:?}");
            assert_eq!(size(&clocked), size(&plain) + CLOCK_BYTES, "{what}");
            assert_eq!(header_bytes(&clocked), header_bytes(&plain), "{what}");
            for (entry, has_clock) in [(&plain, false), (&clocked, true)] {
                assert_eq!(entry.key(), &key[..], "{what}");
                assert_eq!(entry.value(), &value[..], "{what}");
                assert_eq!((entry.version(), entry.deadline()), (3, deadline), "{what}");
                let footprint =
                    Footprint::of_expiring(key_len, value_len, 3, deadline.is_some(), has_clock);
                assert_eq!(entry.footprint(), footprint, "{what}");
                let real = allocator::usable_bytes(entry.block(has_clock).as_ptr());
                assert_eq!(entry.allocated_bytes(), real, "{what}");
            }
        }
    }

    #[test]
    fn only_an_entry_with_an_access_clock_keeps_a_stamp() {
        let plain = Entry::new(b"key", b"value", 1);
        plain.touch(1234);
        assert_eq!(plain.access_stamp(), None, "touch leaves it as it is");
        let clocked = Entry::build(b"key", Stored::Inline(b"value"), 1, None, Some(9));
        assert_eq!(clocked.access_stamp(), Some(9));
        for clock in [0, 1, 1234, u32::MAX - 1, u32::MAX] {
            clocked.touch(clock);
            assert_eq!(clocked.access_clock(), clock);
            assert_eq!(clocked.access_stamp(), Some(clock));
        }
        assert_eq!(clocked.ref_count(), 1, "the clock flag is no reference");
        assert_eq!(
            (clocked.key(), clocked.value(), clocked.version()),
            (&b"key"[..], &b"value"[..], 1)
        );
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "without a clock")]
    fn asking_an_entry_without_a_clock_for_it_is_a_bug_caught_in_debug_builds() {
        let _ = Entry::new(b"k", b"v", 1).access_clock();
    }

    #[test]
    fn clones_and_copies_keep_whether_an_entry_has_a_clock() {
        let before = live::count();
        let location = Location {
            file: 2,
            offset: 77,
            len: 4,
            check: ValueCheck::Record {
                with_deadline: true,
            },
        };
        for clock in [None, Some(0), Some(u32::MAX)] {
            let entry = Entry::build(b"k", Stored::Inline(b"\xa3abc"), 4, Some(50), clock);
            let reply = entry.clone();
            assert_eq!(reply.access_stamp(), clock);
            assert_eq!((entry.ref_count(), entry.is_shared()), (2, true));
            drop(reply);
            assert_eq!((entry.ref_count(), entry.is_shared()), (1, false));
            let copies = [
                entry.with_deadline(None),
                entry.relocated(location),
                entry.relocated(location).with_deadline(Some(60)),
            ];
            for copy in &copies {
                assert_eq!(copy.access_stamp(), clock, "{copy:?}");
                assert_eq!((copy.key(), copy.version()), (&b"k"[..], 4));
            }
            let other = entry.with_access_clock(clock.map_or(Some(8), |_| None));
            assert_eq!(other.access_stamp().is_some(), clock.is_none());
            assert_eq!(
                (other.key(), other.value(), other.deadline()),
                (&b"k"[..], &b"\xa3abc"[..], Some(50))
            );
        }
        assert_eq!(
            live::count(),
            before,
            "every entry, clock or not, was freed"
        );
    }

    #[test]
    fn varint_lengths_step_every_seven_bits() {
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(127), 1);
        assert_eq!(varint_len(128), 2);
        assert_eq!(varint_len(16383), 2);
        assert_eq!(varint_len(16384), 3);
        assert_eq!(varint_len(u64::MAX), 10);
    }

    #[test]
    fn a_large_value_is_stored_whole() {
        let value: Vec<u8> = (0..(4usize << 20)).map(|i| (i % 251) as u8).collect();
        let entry = Entry::new(b"big", &value, 1);
        assert_eq!(entry.value(), &value[..]);
        assert_eq!(size(&entry), LENGTHS_AT + 1 + 4 + 3 + value.len() + 1);
        assert!(entry.allocated_bytes() >= size(&entry));
    }

    #[test]
    fn the_footprint_is_known_before_the_entry_is_built() {
        for (key, value, version) in [(0, 0, 1), (16, 34, 1), (16, 34, 200), (100, 5000, 9)] {
            let entry = Entry::new(&vec![1; key], &vec![2; value], version);
            let footprint = Footprint::of_parts(key, value, version);
            assert_eq!(footprint, entry.footprint());
            assert_eq!(footprint.allocated_bytes, entry.allocated_bytes());
            assert_eq!(
                (
                    footprint.key_bytes,
                    footprint.value_bytes,
                    footprint.version
                ),
                (key, value, version)
            );
        }
    }

    #[test]
    fn the_allocated_size_is_what_the_allocator_really_holds() {
        for (key, value) in [
            (0, 0),
            (16, 34),
            (16, 41),
            (16, 42),
            (200, 3000),
            (1, 100_000),
        ] {
            let entry = Entry::new(&vec![1; key], &vec![2; value], 1);
            let real = allocator::usable_bytes(entry.block(false).as_ptr());
            assert_eq!(
                entry.allocated_bytes(),
                real,
                "{key}-byte key, {value}-byte value"
            );
        }
        // The benchmark's shape: a 16-byte key and a 32-byte value (34 bytes
        // of msgpack) take a 64-byte block.
        assert_eq!(Footprint::of_parts(16, 34, 1).allocated_bytes, 64);
    }

    #[test]
    fn a_reply_shares_the_entry_and_the_last_reference_frees_it() {
        let before = live::count();
        let entry = Entry::new(b"k", b"value", 1);
        assert!(!entry.is_shared());
        let reply = entry.clone();
        assert!(Entry::ptr_eq(&entry, &reply));
        assert_eq!(reply.value().as_ptr(), entry.value().as_ptr(), "not a copy");
        assert!(entry.is_shared());
        assert_eq!(entry.ref_count(), 2);
        drop(entry);
        assert_eq!(live::count(), before + 1, "the reply keeps it alive");
        assert_eq!(reply.ref_count(), 1);
        assert_eq!(reply.value(), b"value");
        drop(reply);
        assert_eq!(live::count(), before, "the last reference freed it");
    }

    #[test]
    fn the_access_clock_changes_and_nothing_else_does() {
        let entry = Entry::build(b"key", Stored::Inline(b"value"), 300, Some(12_345), Some(0));
        assert_eq!(entry.access_clock(), 0);
        entry.touch(u32::MAX);
        assert_eq!(entry.access_clock(), u32::MAX);
        assert_eq!((entry.key(), entry.value()), (&b"key"[..], &b"value"[..]));
        assert_eq!((entry.version(), entry.deadline()), (300, Some(12_345)));
    }

    #[test]
    fn equal_entries_are_different_entries() {
        let (a, b) = (Entry::new(b"k", b"v", 1), Entry::new(b"k", b"v", 1));
        assert!(!Entry::ptr_eq(&a, &b));
        assert_ne!(a.address(), b.address());
    }

    #[test]
    fn references_dropped_on_other_threads_leave_the_entry_to_its_owner() {
        let entry = Entry::new(b"k", &[7; 100], 1);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let reply = entry.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        let again = reply.clone();
                        assert_eq!(again.value(), &[7; 100][..]);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("reader thread");
        }
        assert_eq!(entry.ref_count(), 1);
        assert!(!entry.is_shared());
    }
}
