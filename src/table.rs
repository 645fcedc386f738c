//! A shard's table: the hash map from key bytes to (value, version), and
//! [`Table::apply`], which runs one request against it, writes the result
//! element and says what the request changed ([`Effect`], which the log
//! records). No I/O, no awaits, and no clock of its own: the shard tells the
//! table the time each request runs at ([`Table::set_clock`]), so given the
//! same ops at the same times in the same order a table always ends in the
//! same state, which is what the model tests rely on.
//!
//! Semantics (BRIEF §3):
//! - An absent key has version 0. Every successful write (SET, PUTV) makes it
//!   old + 1; deleting makes it absent again, so the next write gives version 1.
//! - Values are opaque: the complete msgpack encoding as it arrived.
//! - Over the memory limit a write that would grow memory — the table's, or
//!   pinned values' (below) — is refused with OOM; reads, deletes and shrinking
//!   writes keep working.
//! - Each key is stored with its value and version as one [`Entry`]: a single
//!   reference-counted allocation (`crate::entry`). A read hands out a
//!   reference to the entry, never a copy, so replies in flight cost pointers,
//!   not value bytes (see `proto::results`). An overwrite or delete frees the
//!   old entry at once if nothing else holds it; else the entry is *pinned*
//!   ([`pinned`]): kept, and counted against the memory limit beside the
//!   table's own memory, until a sweep finds that the last reply holding it
//!   has been written.
//!
//! Storage: the map is a hashbrown `HashTable` of entry pointers — 8 bytes and
//! a control byte per bucket. Lookups hash the key and compare it with the key
//! inside the entry, so a key is stored once, in its entry.
//!
//! Memory accounting counts what the allocator really holds: each entry's
//! size class ([`Footprint`]) and the map's bucket array.
//! A write is checked before it runs, including the bucket array it would make
//! the map grow into.
//!
//! Expiry (`expiry`): a key may carry a deadline (absolute Unix
//! milliseconds, stored in its entry). A key whose deadline is at or before
//! the table's clock is absent to every request — GET and GETV miss, its
//! version is 0 — before anything removes it; a write over it starts again
//! at version 1. The expire index ([`deadlines`]) orders the keys that have a
//! deadline, and the shard's sweep removes those that are due
//! ([`Table::remove_due`]), logging each as a delete.
//!
//! Eviction (`eviction`): over the memory limit, a write is refused with OOM,
//! or keys are evicted to make room, as `--maxmemory-policy` says.
//!
//! The map is hashed with per-process random keys, not with the fixed routing
//! seeds: every key in shard `s` has `route_hash % nr_shards == s`, and reusing
//! that hash would leave most buckets of each shard's map empty.

pub mod deadlines;
pub mod eviction;
pub mod expiry;
pub mod file_bytes;
pub mod pinned;

use crate::allocator;
use crate::entry::Stored as EntryValue;
pub use crate::entry::{Entry, Footprint, Location};
use crate::proto::reply;
use crate::proto::resp::glob;
use crate::proto::resp::value::{format_f64, parse_f64, parse_i64, Stored};
use crate::proto::{BatchResults, ErrorCode, Op, OpKind, RequestError};
use deadlines::DeadlineIndex;
use eviction::{access_clock_at, EvictionPolicy};
use file_bytes::FileBytes;
use hashbrown::hash_table;
use hashbrown::HashTable;
use pinned::PinnedValues;
use std::cell::Cell;

/// The figures a table keeps, as STATS reports them (`proto::stats`).
pub use crate::proto::stats::TableStats;

/// Pinned values a write looks at before it is refused over the memory limit
/// (all of them when there are no more). Bounds what a refused write costs when
/// many values are pinned; the periodic sweep gets to the rest.
pub const OOM_SWEEP_BUDGET: usize = 1024;

/// hashbrown's control bytes come in groups of this many (SSE2 on x86; a
/// machine word elsewhere); its bucket array has one group more than buckets.
const INDEX_GROUP_BYTES: usize = if cfg!(all(
    any(target_arch = "x86", target_arch = "x86_64"),
    target_feature = "sse2"
)) {
    16
} else {
    8
};
/// What a first insert allocates: 4 buckets of one pointer and one control
/// byte, and a group of control bytes more.
const FIRST_INDEX_BYTES: usize = 4 * (std::mem::size_of::<Entry>() + 1) + INDEX_GROUP_BYTES;

/// A key's state before a write, kept to put it back if a batch aborts: the
/// entry itself, so putting it back copies nothing.
#[derive(Debug, Clone)]
pub struct Prior(Option<Entry>);

impl Prior {
    /// The entry the key had (its value and version), or None if it was absent.
    pub fn state(&self) -> Option<&Entry> {
        self.0.as_ref()
    }
}

/// What a request changed: one key written or deleted. [`Table::apply`] says
/// it; the log records it as it is (`log::format`), a single-shard ATOMIC
/// collects its requests' into one record, and recovery loads it back. Byte
/// fields borrow the request's buffer (or, replaying, the log file's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<'a> {
    /// The key now holds `value` at `version`, until `deadline` (Unix
    /// milliseconds) if it has one.
    Put {
        key: &'a [u8],
        version: u64,
        value: &'a [u8],
        deadline: Option<u64>,
    },
    /// The key existed and is gone (deleted, or removed once expired).
    Del { key: &'a [u8] },
    /// The key keeps its value and version and now expires at `deadline`, or
    /// never (None): EXPIRE and PERSIST.
    Expire {
        key: &'a [u8],
        deadline: Option<u64>,
    },
}

/// What removing a key found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// Nothing under the key.
    Absent,
    /// An expired entry, now gone: to clients the key was already absent,
    /// but the removal is logged so that a restart does not bring it back.
    Expired,
    /// A live key, now deleted.
    Deleted,
}

/// What PUTV did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Written; the key's new version.
    Applied(u64),
    /// Not written; the key's current version (0 if absent).
    Conflict(u64),
}

/// A write that would take the table over its memory limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "over the memory limit: {used_bytes} of {limit_bytes} bytes used{} (--max-memory-bytes)",
    pinned_note(*reply_pinned_bytes)
)]
pub struct OverMemoryLimit {
    /// The table's memory plus pinned values'.
    pub used_bytes: u64,
    pub reply_pinned_bytes: u64,
    pub limit_bytes: u64,
}

/// What a write needs to know of the entry it replaces.
#[derive(Debug, Clone, Copy)]
struct Replaced {
    footprint: Footprint,
    /// What it costs if it is pinned: an old entry that someone else holds is
    /// not freed but pinned, so the write must have room for it too, or
    /// same-size overwrites of values that stalled replies hold would grow
    /// memory without ever being refused.
    pinned_cost: u64,
    /// Whether it has a deadline (and so a place in the expire index).
    has_deadline: bool,
}

impl Replaced {
    fn of(entry: &Entry) -> Replaced {
        let footprint = entry.footprint();
        Replaced {
            footprint,
            pinned_cost: match entry.is_shared() {
                true => pinned::pinned_cost(entry),
                false => 0,
            },
            has_deadline: entry.deadline().is_some(),
        }
    }

    /// The expire index's growth when the key's entry is replaced by one
    /// with (or without) a deadline.
    fn index_growth(old: Option<&Replaced>, has_deadline: bool) -> u64 {
        let had_deadline = old.is_some_and(|old| old.has_deadline);
        match has_deadline && !had_deadline {
            true => deadlines::INDEX_COST_BYTES,
            false => 0,
        }
    }
}

/// One shard's key/value map.
#[derive(Debug)]
pub struct Table {
    map: HashTable<Entry>,
    hasher: ahash::RandomState,
    /// What the allocator holds for the entries in `map` (not its buckets).
    entry_bytes: u64,
    /// Bytes of the keys in `map`.
    key_bytes: u64,
    /// Disk engine: per log file, the bytes of the records holding the
    /// values of `map`'s on-disk entries (`FileBytes`).
    file_bytes: FileBytes,
    /// Counters; `memory_bytes` is filled in by [`Table::stats`].
    stats: TableStats,
    /// Values the map dropped that others still hold.
    pinned: PinnedValues,
    memory_limit_bytes: u64,
    /// The keys in `map` that have a deadline, by deadline.
    deadlines: DeadlineIndex,
    /// The time (Unix milliseconds) the current request runs at, as the
    /// shard set it; entries whose deadline is at or before it are expired.
    now_ms: u64,
    /// What a write over the memory limit does (`eviction`).
    policy: EvictionPolicy,
    /// Keys evicted that the shard has not logged yet.
    evicted: Vec<Box<[u8]>>,
    /// The state of the generator that samples keys to evict.
    random: Cell<u64>,
    /// The latest deadline of a key removed in the background
    /// ([`Table::swept_up_to`]).
    swept_up_to: u64,
    /// The disk engine's table: its entries may hold a location in the
    /// shard's log instead of their value (`crate::entry`).
    values_on_disk: bool,
    /// Copies of on-disk values the shard read for the requests it is about
    /// to run ([`Table::keep_fetched`]), by location: what their replies and
    /// read-modify-writes use.
    fetched: Vec<(Location, Entry)>,
    /// Log files that entries an undo put back point into, since the shard
    /// last took a snapshot ([`Table::restored_into`]).
    restored_files: Vec<u32>,
}

/// Picks the entry whose bytes a request uses: `entry` itself, or the copy
/// of its on-disk value in `fetched`; Err(location) if that was not read.
fn readable<'a>(fetched: &'a [(Location, Entry)], entry: &'a Entry) -> Result<&'a Entry, Location> {
    if !entry.is_on_disk() {
        return Ok(entry);
    }
    let location = entry.location().expect("an on-disk entry has a location");
    fetched
        .iter()
        .find(|(at, _)| *at == location)
        .map(|(_, copy)| copy)
        .ok_or(location)
}

/// The error of a request whose on-disk value was not read (its read failed).
fn unread(key: &[u8], location: Location) -> RequestError {
    RequestError::new(
        ErrorCode::IoErr,
        format!(
            "the value of key {} could not be read from disk (log file {}, offset {})",
            String::from_utf8_lossy(key),
            location.file,
            location.offset
        ),
    )
}

/// The sampling generator's first state: fixed, so a table's evictions
/// depend only on its requests, as everything else in it does.
const RANDOM_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Names the share of pinned values in an OOM message, when there is one.
fn pinned_note(reply_pinned_bytes: u64) -> String {
    match reply_pinned_bytes {
        0 => String::new(),
        n => format!(", {n} of them by values that replies not yet written still hold"),
    }
}

/// A bucket array the map left at least this large is given back at once.
const RELEASE_BUCKETS_MIN_BYTES: usize = 1 << 20;

/// Gives the pages of a bucket array of `allocation` bytes that the map just
/// left (it grew, or shrank) back to the operating system now, if it is
/// large. It is the largest block a table frees (9 MiB at a million keys),
/// and the allocator would return it only after a delay, and only once this
/// thread next frees or allocates pages, so a table that just grew would stay
/// resident at one and a half times its buckets for an unknown time. A large
/// map grows rarely and each growth rehashes every key, so the call's cost
/// (tens of microseconds) is lost in it; small arrays are left to the
/// allocator, which reuses their memory.
fn release_old_buckets(allocation: usize) {
    if allocation >= RELEASE_BUCKETS_MIN_BYTES {
        allocator::return_free_memory_to_os();
    }
}

/// What the allocator holds for a bucket array of `allocation` bytes (0: none).
fn held_index_bytes(allocation: usize) -> u64 {
    match allocation {
        0 => 0,
        n => allocator::held_bytes(n) as u64,
    }
}

/// The bucket array hashbrown allocates when a map whose array is
/// `allocation` bytes grows: twice the buckets, so twice the slots and control
/// bytes, and one trailing group as before. A unit test holds hashbrown to it.
fn index_bytes_after_growth(allocation: usize) -> usize {
    match allocation {
        0 => FIRST_INDEX_BYTES,
        n => 2 * n - INDEX_GROUP_BYTES,
    }
}

impl Table {
    /// An empty table that refuses growth beyond `memory_limit_bytes`.
    pub fn new(memory_limit_bytes: u64) -> Table {
        Table {
            map: HashTable::new(),
            hasher: ahash::RandomState::new(),
            entry_bytes: 0,
            file_bytes: FileBytes::default(),
            key_bytes: 0,
            stats: TableStats::default(),
            pinned: PinnedValues::default(),
            memory_limit_bytes,
            deadlines: DeadlineIndex::default(),
            now_ms: 0,
            policy: EvictionPolicy::NoEviction,
            evicted: Vec::new(),
            random: Cell::new(RANDOM_SEED),
            swept_up_to: 0,
            values_on_disk: false,
            fetched: Vec::new(),
            restored_files: Vec::new(),
        }
    }

    /// An empty table of the disk engine (see `values_on_disk`).
    pub fn on_disk(memory_limit_bytes: u64) -> Table {
        Table {
            values_on_disk: true,
            ..Table::new(memory_limit_bytes)
        }
    }

    /// Whether this is a disk engine's table, whose entries may hold
    /// locations rather than values.
    pub fn keeps_values_on_disk(&self) -> bool {
        self.values_on_disk
    }

    /// Where the live value of `key` is on disk, and the entry's version,
    /// if it is there and no copy of it has been read
    /// ([`Table::keep_fetched`]): what the shard reads (and checks against
    /// the version) before a request that uses the value runs.
    pub fn unread_location(&self, key: &[u8]) -> Option<(Location, u64)> {
        let entry = self.find_live(key)?;
        let location = readable(&self.fetched, entry).err()?;
        Some((location, entry.version()))
    }

    /// Keeps `bytes`, read from `location`, for the requests about to run
    /// on `key` (counted as a disk read); not kept if the key's live entry is
    /// no longer there (it changed while the read ran: the shard asks again).
    pub fn keep_fetched(&mut self, key: &[u8], location: Location, bytes: &[u8]) -> bool {
        self.stats.disk_reads += 1;
        self.keep_copy(key, location, bytes)
    }

    /// Counts `bytes` read from the log files for requests: the whole blocks
    /// a read covered, once per read however many values it brought.
    pub fn count_disk_read_bytes(&mut self, bytes: u64) {
        self.stats.disk_read_bytes += bytes;
    }

    /// Keeps `bytes`, the value at `location` the shard had a copy of (its
    /// cache of hot values), for the requests about to run on `key`, as
    /// [`Table::keep_fetched`] does but not counted as a disk read.
    ///
    /// A small value ([`crate::entry::stays_inline`]) loaded as a location
    /// (from a hint file) goes back into its entry instead, so it is read at
    /// most once after a restart — unless that would take the table past its
    /// memory limit, which a read never does (then it is a copy as any).
    /// Returns whether it did (the value then needs no other copy).
    pub fn keep_copy(&mut self, key: &[u8], location: Location, bytes: &[u8]) -> bool {
        let Some(entry) = self.find_live(key) else {
            return false;
        };
        if entry.location() != Some(location) {
            return false;
        }
        let (version, deadline) = (entry.version(), entry.deadline());
        if crate::entry::stays_inline(bytes.len()) && self.take_inline(key, bytes) {
            return true;
        }
        let copy = Entry::expiring(key, bytes, version, deadline);
        self.fetched.push((location, copy));
        false
    }

    /// Puts `bytes`, the value `key`'s live on-disk entry points at, into
    /// the entry, if the memory limit has room for the growth; returns
    /// whether it did. The on-disk entry, if nothing else holds it, is freed.
    fn take_inline(&mut self, key: &[u8], bytes: &[u8]) -> bool {
        let hash = self.hash(key);
        let room = self
            .memory_limit_bytes
            .saturating_sub(self.memory_used_bytes());
        let Some(slot) = self.map.find_mut(hash, |e| e.key() == key) else {
            return false;
        };
        let inline = slot.with_value_inline(bytes);
        let old_bytes = slot.allocated_bytes() as u64;
        let new_bytes = inline.allocated_bytes() as u64;
        // An old entry someone else holds (an undo log, a snapshot) is
        // pinned, and counted, until they let it go.
        let pinned_cost = match slot.is_shared() {
            true => pinned::pinned_cost(slot),
            false => 0,
        };
        if (new_bytes + pinned_cost).saturating_sub(old_bytes) > room {
            return false;
        }
        let old = std::mem::replace(slot, inline);
        self.entry_bytes = self.entry_bytes - old_bytes + new_bytes;
        self.file_bytes.count_out(&old.footprint());
        self.pinned.displace(old);
        true
    }

    /// Drops the copies read for requests that have run.
    pub fn clear_fetched(&mut self) {
        self.fetched.clear();
    }

    /// Points `key`'s entry at `location` if it is still `written` (its
    /// value was just written there, or moved there by compaction) or an
    /// entry of the same value (the same location, another deadline);
    /// returns whether it did. The inline value, if nothing else holds it,
    /// is freed. A small inline value ([`crate::entry::stays_inline`]) is
    /// not moved: it stays in its entry, as well as on disk.
    pub fn relocate(&mut self, written: Entry, location: Location) -> bool {
        if !written.is_on_disk() && crate::entry::stays_inline(written.value_len()) {
            return false;
        }
        let hash = self.hash(written.key());
        let Some(slot) = self.map.find_mut(hash, |e| e.key() == written.key()) else {
            return false;
        };
        let same = Entry::ptr_eq(slot, &written)
            || (written.is_on_disk() && slot.location() == written.location());
        if !same || slot.location() == Some(location) {
            return false;
        }
        let moved = slot.relocated(location);
        let old_footprint = slot.footprint();
        let new_footprint = moved.footprint();
        let old = std::mem::replace(slot, moved);
        self.entry_bytes = self.entry_bytes - old_footprint.allocated_bytes as u64
            + new_footprint.allocated_bytes as u64;
        self.file_bytes.count_out(&old_footprint);
        self.file_bytes.count_in(&new_footprint);
        drop(written);
        self.pinned.displace(old);
        true
    }

    /// Whether an entry put back by an undo since the last
    /// [`Table::forget_restored_files`] points into log file `file`:
    /// compaction keeps such a file open until a snapshot taken after the
    /// undo has moved the entry out of it.
    pub fn restored_into(&self, file: u32) -> bool {
        self.restored_files.contains(&file)
    }

    /// Compaction takes a snapshot, which holds every entry put back so far.
    pub fn forget_restored_files(&mut self) {
        self.restored_files.clear();
    }

    /// Whether an entry that left the table but is still held (by a reply,
    /// an undo log, a snapshot) points into log file `file`.
    pub fn pinned_point_into(&self, file: u32) -> bool {
        self.pinned.point_into(file)
    }

    /// Recovery of the disk engine: puts a logged value's location in place.
    pub fn load_on_disk(
        &mut self,
        key: &[u8],
        location: Location,
        version: u64,
        deadline: Option<u64>,
    ) {
        self.load_entry(Entry::on_disk(key, location, version, deadline));
    }

    pub fn stats(&self) -> TableStats {
        TableStats {
            memory_bytes: self.memory_bytes(),
            reply_pinned_bytes: self.pinned.bytes(),
            expires: self.deadlines.len() as u64,
            ..self.stats
        }
    }

    /// What the memory limit counts: the table's memory and pinned values'.
    pub fn memory_used_bytes(&self) -> u64 {
        self.memory_bytes() + self.pinned.bytes()
    }

    /// Bytes of the stored keys (values' are in [`TableStats::value_bytes`]):
    /// with them, compaction sizes a snapshot of the table.
    pub fn key_bytes(&self) -> u64 {
        self.key_bytes
    }

    /// Disk engine: the bytes of the records in log file `file` that hold
    /// values of this table's entries (`FileBytes`).
    pub fn live_bytes_in_file(&self, file: u32) -> u64 {
        self.file_bytes.of(file)
    }

    /// The table's own memory, as the allocator holds it: entries, buckets
    /// and the expire index.
    fn memory_bytes(&self) -> u64 {
        self.entry_bytes + self.index_bytes() + self.deadlines.bytes()
    }

    fn index_bytes(&self) -> u64 {
        held_index_bytes(self.map.allocation_size())
    }

    /// What inserting one more key adds to the bucket array: nothing while
    /// there is room, else the growth to twice the buckets. (A full map whose
    /// deleted slots can be reused rehashes in place instead, so this may
    /// overstate; never understate.)
    fn index_growth_bytes(&self) -> u64 {
        if self.map.len() < self.map.capacity() {
            return 0;
        }
        let now = self.map.allocation_size();
        held_index_bytes(index_bytes_after_growth(now)) - held_index_bytes(now)
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn find(&self, key: &[u8]) -> Option<&Entry> {
        self.map.find(self.hash(key), |e| e.key() == key)
    }

    /// The entries an expire-index place names: those whose key has that
    /// hash and whose deadline is that one (almost always exactly one).
    fn indexed(&self, (deadline, hash): deadlines::Indexed) -> impl Iterator<Item = &Entry> + '_ {
        self.map
            .iter_hash(hash)
            .filter(move |e| e.deadline() == Some(deadline) && self.hash(e.key()) == hash)
    }

    /// The key's entry unless it has expired.
    fn find_live(&self, key: &[u8]) -> Option<&Entry> {
        self.find(key).filter(|e| !e.is_expired(self.now_ms))
    }

    /// Frees pinned values whose replies are gone, looking at no more than
    /// `budget` of them (see [`PinnedValues::sweep`]); returns the bytes freed.
    /// The shard calls it periodically, so that what a stalled reply held is
    /// given back once the reply is written or its connection closes.
    pub fn sweep_pinned(&mut self, budget: usize) -> u64 {
        self.pinned.sweep(budget)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The entry stored under `key` (live or not), without counting a read.
    pub fn current(&self, key: &[u8]) -> Option<&Entry> {
        self.find(key)
    }

    /// The value and version of `key`, without counting a read (a value
    /// on disk must have been read: [`Table::keep_fetched`]).
    pub fn peek(&self, key: &[u8]) -> Option<(&[u8], u64)> {
        self.find_live(key)
            .map(|e| (readable(&self.fetched, e).unwrap_or(e).value(), e.version()))
    }

    /// The key's current version; 0 when absent (or expired).
    pub fn version(&self, key: &[u8]) -> u64 {
        self.find_live(key).map_or(0, Entry::version)
    }

    /// Reads `key`, counting a get and a hit or miss. A reply clones the entry
    /// to hold its value. Under the disk engine the entry is the copy of the
    /// value the shard read ([`Table::keep_fetched`]); Err if it was not read.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<&Entry>, RequestError> {
        self.stats.gets += 1;
        let hash = self.hash(key);
        let now_ms = self.now_ms;
        match self.map.find(hash, |e| e.key() == key) {
            Some(entry) if !entry.is_expired(now_ms) => {
                self.stats.hits += 1;
                entry.touch(access_clock_at(now_ms));
                match readable(&self.fetched, entry) {
                    Ok(entry) => Ok(Some(entry)),
                    Err(location) => Err(unread(key, location)),
                }
            }
            _ => {
                self.stats.misses += 1;
                Ok(None)
            }
        }
    }

    /// Writes `value` under `key` unconditionally, clearing any deadline;
    /// returns the new version.
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> Result<u64, OverMemoryLimit> {
        self.write(key, value, None)
    }

    /// Writes `value` under `key` unconditionally, to expire at `deadline`
    /// (or never); returns the new version. An expired entry under the key
    /// is removed first: the key starts again at version 1.
    fn write(
        &mut self,
        key: &[u8],
        value: &[u8],
        deadline: Option<u64>,
    ) -> Result<u64, OverMemoryLimit> {
        let hash = self.hash(key);
        let now_ms = self.now_ms;
        let mut old = self.map.find(hash, |e| e.key() == key).map(|e| {
            let expired = e.is_expired(now_ms);
            (Replaced::of(e), expired)
        });
        if let Some((_, true)) = old {
            self.remove_expired(key);
            old = None;
        }
        let old = old.map(|(replaced, _)| replaced);
        let version = old.map_or(0, |old| old.footprint.version) + 1;
        let stamp = self.new_access_stamp();
        let new = Footprint::of_expiring(
            key.len(),
            value.len(),
            version,
            deadline.is_some(),
            stamp.is_some(),
        );
        let new_bytes = new.allocated_bytes as u64;
        let (growth, index_growth) = match old {
            Some(old) => {
                let old_bytes = old.footprint.allocated_bytes as u64;
                ((new_bytes + old.pinned_cost).saturating_sub(old_bytes), 0)
            }
            None => {
                let index_growth = self.index_growth_bytes();
                (new_bytes + index_growth, index_growth)
            }
        };
        let growth = growth + Replaced::index_growth(old.as_ref(), deadline.is_some());
        self.check_growth(growth, key)?;
        let entry = Entry::build(key, EntryValue::Inline(value), version, deadline, stamp);
        match old {
            Some(old) => {
                let slot = self
                    .map
                    .find_mut(hash, |e| e.key() == key)
                    .expect("the key was found above, and nothing has run since");
                let replaced = std::mem::replace(slot, entry);
                self.count_out(&old.footprint, key, replaced.deadline());
                self.count_in(&new, key, deadline);
                self.pinned.displace(replaced);
            }
            None => {
                self.count_in(&new, key, deadline);
                let index_before = self.map.allocation_size();
                let hasher = &self.hasher;
                self.map
                    .insert_unique(hash, entry, |e| hasher.hash_one(e.key()));
                if index_growth > 0 {
                    release_old_buckets(index_before);
                }
            }
        }
        self.stats.sets += 1;
        Ok(version)
    }

    /// Writes `value` only if the key's version is `expected` (0 = must be absent).
    pub fn put_versioned(
        &mut self,
        key: &[u8],
        value: &[u8],
        expected: u64,
    ) -> Result<PutOutcome, OverMemoryLimit> {
        let current = self.version(key);
        if current != expected {
            self.stats.version_conflicts += 1;
            return Ok(PutOutcome::Conflict(current));
        }
        self.set(key, value).map(PutOutcome::Applied)
    }

    /// Deletes `key`; returns whether it existed (an expired key did not).
    pub fn delete(&mut self, key: &[u8]) -> bool {
        self.remove(key) == Removal::Deleted
    }

    /// Deletes `key`, saying whether it was live, expired or absent.
    fn remove(&mut self, key: &[u8]) -> Removal {
        self.stats.deletes += 1;
        match self.take(key) {
            Some(entry) if entry.is_expired(self.now_ms) => {
                self.stats.expired_keys += 1;
                self.pinned.displace(entry);
                Removal::Expired
            }
            Some(entry) => {
                self.pinned.displace(entry);
                Removal::Deleted
            }
            None => Removal::Absent,
        }
    }

    /// Removes `key`'s entry, which has expired (a write over it, or the
    /// sweep), counting it as expired.
    fn remove_expired(&mut self, key: &[u8]) {
        if let Some(entry) = self.take(key) {
            self.stats.expired_keys += 1;
            self.pinned.displace(entry);
        }
    }

    /// The state of `key` now, to be handed back to [`Table::restore`].
    pub fn prior(&self, key: &[u8]) -> Prior {
        Prior(self.find(key).cloned())
    }

    /// Puts `key` back to an earlier state (an aborted batch's undo). Adjusts the
    /// size figures; request counters keep counting what ran.
    pub fn restore(&mut self, key: &[u8], prior: Prior) {
        if let (Some(entry), Some(before)) = (self.find(key), &prior.0) {
            if Entry::ptr_eq(entry, before) {
                return; // unchanged (the batch's write was refused)
            }
        }
        if let Some(entry) = self.take(key) {
            self.pinned.displace(entry);
        }
        if let Some(entry) = prior.0 {
            // The write being undone may have pinned it (the undo log held it).
            self.pinned.take_back(&entry);
            if let Some(location) = entry.location() {
                if !self.restored_files.contains(&location.file) {
                    self.restored_files.push(location.file);
                }
            }
            self.insert_new(entry);
        }
    }

    /// Recovery: puts a logged value in place, without counting a request or
    /// checking the memory limit (what was acknowledged must come back).
    pub fn load(&mut self, key: &[u8], value: impl AsRef<[u8]>, version: u64) {
        self.load_entry(Entry::new(key, value.as_ref(), version));
    }

    /// Recovery: puts an entry in place (moved from another table, or logged),
    /// as [`Table::load`] does. One lookup: the key is hashed once whether it
    /// is new or replaced.
    pub fn load_entry(&mut self, entry: Entry) {
        let entry = self.with_fitting_clock(entry);
        let footprint = entry.footprint();
        let deadline = entry.deadline();
        // The expire index needs the key once the entry has moved into the
        // map; only keys with a deadline are copied for it.
        let indexed_key: Option<Box<[u8]>> = deadline.map(|_| Box::from(entry.key()));
        let hasher = &self.hasher;
        let hash = hasher.hash_one(entry.key());
        let slot = self.map.entry(
            hash,
            |e| e.key() == entry.key(),
            |e| hasher.hash_one(e.key()),
        );
        let replaced = match slot {
            hash_table::Entry::Occupied(mut slot) => Some(std::mem::replace(slot.get_mut(), entry)),
            hash_table::Entry::Vacant(slot) => {
                slot.insert(entry);
                None
            }
        };
        // Out before in: the new entry may have the old one's deadline.
        if let Some(old) = replaced {
            self.count_out(&old.footprint(), old.key(), old.deadline());
            self.pinned.displace(old);
        }
        self.count_in(
            &footprint,
            indexed_key.as_deref().unwrap_or_default(),
            deadline,
        );
    }

    /// Recovery: makes room for `additional` more keys, so that loading them
    /// does not rehash the map each time it doubles.
    pub fn reserve(&mut self, additional: usize) {
        let hasher = &self.hasher;
        self.map.reserve(additional, |e| hasher.hash_one(e.key()));
    }

    /// Recovery: gives back room [`Table::reserve`] set aside beyond what the
    /// loaded keys need (the map then has the size growing would have given it).
    pub fn shrink_to_fit(&mut self) {
        let before = self.map.allocation_size();
        let hasher = &self.hasher;
        self.map.shrink_to(0, |e| hasher.hash_one(e.key()));
        if self.map.allocation_size() != before {
            release_old_buckets(before);
        }
    }

    /// Recovery: removes a logged deletion's key, without counting a request.
    pub fn unload(&mut self, key: &[u8]) {
        self.restore(key, Prior(None));
    }

    /// Sets the memory limit (recovery loads first, then limits).
    pub fn set_memory_limit(&mut self, memory_limit_bytes: u64) {
        self.memory_limit_bytes = memory_limit_bytes;
    }

    /// Takes every entry out, leaving the table empty (to move keys to other
    /// shards: [`Table::load_entry`]).
    pub fn drain(&mut self) -> impl Iterator<Item = Entry> + '_ {
        self.stats.keys = 0;
        self.stats.value_bytes = 0;
        self.entry_bytes = 0;
        self.key_bytes = 0;
        self.file_bytes = FileBytes::default();
        self.deadlines.clear();
        self.map.drain()
    }

    /// Every entry, in no particular order (for snapshots: a clone holds the
    /// entry as it is now).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.map.iter()
    }

    /// Counts the outcome of an ATOMIC batch this shard decided or took part in.
    pub fn count_atomic(&mut self, committed: bool) {
        match committed {
            true => self.stats.atomic_commits += 1,
            false => self.stats.atomic_aborts += 1,
        }
    }

    /// Removes `key`'s entry from the map and the size figures.
    fn take(&mut self, key: &[u8]) -> Option<Entry> {
        let hash = self.hash(key);
        let slot = self.map.find_entry(hash, |e| e.key() == key).ok()?;
        let (entry, _) = slot.remove();
        self.count_out(&entry.footprint(), entry.key(), entry.deadline());
        Some(entry)
    }

    /// Inserts an entry whose key is not in the map.
    fn insert_new(&mut self, entry: Entry) {
        self.count_in(&entry.footprint(), entry.key(), entry.deadline());
        let hasher = &self.hasher;
        let hash = hasher.hash_one(entry.key());
        self.map
            .insert_unique(hash, entry, |e| hasher.hash_one(e.key()));
    }

    /// Adds an entry of `key` going into the map (whose footprint is
    /// `footprint`) to the size figures, and to the expire index if it has a
    /// deadline. A replaced entry must be counted out first: both may have
    /// the same deadline, which is one place in the index.
    fn count_in(&mut self, footprint: &Footprint, key: &[u8], deadline: Option<u64>) {
        self.stats.keys += 1;
        self.stats.value_bytes += footprint.value_bytes as u64;
        self.key_bytes += footprint.key_bytes as u64;
        self.entry_bytes += footprint.allocated_bytes as u64;
        self.file_bytes.count_in(footprint);
        if let Some(deadline) = deadline {
            self.deadlines.insert(self.hash(key), deadline);
        }
    }

    /// Removes an entry of `key` leaving the map from the size figures and
    /// the expire index.
    fn count_out(&mut self, footprint: &Footprint, key: &[u8], deadline: Option<u64>) {
        self.stats.keys -= 1;
        self.stats.value_bytes -= footprint.value_bytes as u64;
        self.key_bytes -= footprint.key_bytes as u64;
        self.entry_bytes -= footprint.allocated_bytes as u64;
        self.file_bytes.count_out(footprint);
        if let Some(deadline) = deadline {
            self.deadlines.remove(self.hash(key), deadline);
        }
    }

    /// Refuses `growth` bytes more (for a write of `key`) if they would pass
    /// the limit, counting pinned values; but first frees the pinned values
    /// whose replies are gone, so a write is never refused for memory that is
    /// only waiting for a sweep, and then evicts keys if the policy says so.
    fn check_growth(&mut self, growth: u64, key: &[u8]) -> Result<(), OverMemoryLimit> {
        let fits = |table: &Table| table.memory_used_bytes() + growth <= table.memory_limit_bytes;
        if growth == 0 || fits(self) {
            return Ok(());
        }
        if !self.pinned.is_empty() {
            self.pinned.sweep(OOM_SWEEP_BUDGET);
            if fits(self) {
                return Ok(());
            }
        }
        if self.policy != EvictionPolicy::NoEviction && self.evict_for(growth, key) {
            return Ok(());
        }
        self.stats.oom_rejections += 1;
        Err(OverMemoryLimit {
            used_bytes: self.memory_used_bytes(),
            reply_pinned_bytes: self.pinned.bytes(),
            limit_bytes: self.memory_limit_bytes,
        })
    }

    /// Runs one request whose spans point into `buf`, appending its result
    /// element (if it has one) to `out` — without ending the request's slot —
    /// and says what it changed, if anything. STATS is not a table request: the
    /// shard answers it, since it needs figures the table does not own.
    pub fn apply<'b>(
        &mut self,
        op: &Op,
        buf: &'b [u8],
        out: &mut BatchResults,
    ) -> Option<Effect<'b>> {
        let key = op.key.of(buf);
        let value = op.value.of(buf);
        let mut change = None;
        match op.kind {
            OpKind::Get => match self.get(key) {
                Ok(Some(entry)) => {
                    reply::write_found_header(&mut out.buf);
                    out.push_value(entry);
                }
                Ok(None) => reply::write_not_found(&mut out.buf),
                Err(unread) => reply::write_error(&mut out.buf, unread.code, &unread.message),
            },
            OpKind::GetV => match self.get(key) {
                Ok(Some(entry)) => {
                    let version = entry.version();
                    reply::write_versioned_header(&mut out.buf);
                    out.push_value(entry);
                    reply::write_uint(&mut out.buf, version);
                }
                Ok(None) => reply::write_not_found(&mut out.buf),
                Err(unread) => reply::write_error(&mut out.buf, unread.code, &unread.message),
            },
            OpKind::Set => match self.set(key, value) {
                Ok(version) => {
                    change = Some(Effect::Put {
                        key,
                        version,
                        value,
                        deadline: None,
                    })
                }
                Err(oom) => write_oom(&mut out.buf, key, oom),
            },
            OpKind::PutV => match self.put_versioned(key, value, op.version) {
                Ok(PutOutcome::Applied(version)) => {
                    reply::write_done(&mut out.buf, version);
                    change = Some(Effect::Put {
                        key,
                        version,
                        value,
                        deadline: None,
                    });
                }
                Ok(PutOutcome::Conflict(current)) => {
                    reply::write_version_conflict(&mut out.buf, current)
                }
                Err(oom) => write_oom(&mut out.buf, key, oom),
            },
            OpKind::Del => {
                if self.remove(key) != Removal::Absent {
                    change = Some(Effect::Del { key });
                }
            }
            OpKind::Rm => {
                let removal = self.remove(key);
                let existed = removal == Removal::Deleted;
                reply::write_done(&mut out.buf, u64::from(existed));
                if removal != Removal::Absent {
                    change = Some(Effect::Del { key });
                }
            }
            OpKind::Check => self.check_version(key, op.version, out),
            OpKind::Scan => self.scan(op.version, op.target.count, key, out),
            OpKind::Flush => unreachable!("FLUSH is answered by the shard ([`Table::flush`])"),
            OpKind::IncrBy | OpKind::Append | OpKind::IncrByFloat => {
                unreachable!("{} runs through Table::read_modify_write", op.kind.name())
            }
            OpKind::SetTtl
            | OpKind::Expire
            | OpKind::Ttl
            | OpKind::Persist
            | OpKind::ExpireAt
            | OpKind::SetKeepTtl
            | OpKind::ExpireTime
            | OpKind::SetAt => match self.apply_expiry(op, buf, out) {
                Ok(effect) => change = effect,
                Err(oom) => write_oom(&mut out.buf, key, oom),
            },
            OpKind::Stats | OpKind::Atomic | OpKind::SlotMap => {
                unreachable!("{} is answered by the shard, not the table", op.kind.name())
            }
        }
        change
    }
}

impl Table {
    /// CHECK outside ATOMIC: nothing when `key` is at `expected`, else
    /// `[-5, current]`. Reads nothing and counts nothing: it is a guard (inside
    /// ATOMIC a mismatch aborts the batch, `txn::unit`).
    fn check_version(&self, key: &[u8], expected: u64, out: &mut BatchResults) {
        let current = self.version(key);
        if current != expected {
            reply::write_version_conflict(&mut out.buf, current);
        }
    }

    /// SCAN: looks at up to `count` buckets of the map from bucket `position`
    /// and answers `[-7, next, [keys matching pattern]]`, `next` 0 once the
    /// last bucket is passed. Positions are bucket indices, stable while the
    /// map does not resize, so a full iteration without writes sees every key
    /// once, and each call costs only the buckets it looks at.
    fn scan(&self, position: u64, count: u32, pattern: &[u8], out: &mut BatchResults) {
        let nr_buckets = self.map.num_buckets() as u64;
        let end = position.saturating_add(u64::from(count)).min(nr_buckets);
        let mut keys = Vec::new();
        for bucket in position.min(end)..end {
            let Some(entry) = self.map.get_bucket(bucket as usize) else {
                continue;
            };
            if entry.is_expired(self.now_ms) {
                continue;
            }
            if pattern.is_empty() || glob::matches(pattern, entry.key()) {
                keys.push(entry.key());
            }
        }
        let next = if end >= nr_buckets { 0 } else { end };
        reply::write_keys_header(&mut out.buf, next, keys.len() as u32);
        keys.iter()
            .for_each(|key| reply::write_bin(&mut out.buf, key));
    }

    /// INCRBY, INCRBYFLOAT and APPEND: computes the key's new value from its
    /// current one (read as a Redis string, `proto::resp::value`), stores it
    /// as bin and appends the result element (`[-8, n]`, `[-1, new value]`,
    /// `[-4, new length]`). Returns the
    /// new entry, whose value the caller logs; on failure changes nothing and
    /// writes nothing.
    pub fn read_modify_write(
        &mut self,
        op: &Op,
        buf: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Entry, RequestError> {
        let key = op.key.of(buf);
        let live = match self.find_live(key).map(|e| readable(&self.fetched, e)) {
            Some(Err(location)) => return Err(unread(key, location)),
            Some(Ok(entry)) => Some(entry),
            None => None,
        };
        // As Redis's INCR and APPEND, the new value keeps the key's deadline.
        let deadline = live.and_then(Entry::deadline);
        let current = live.map(|entry| Stored::of(entry.value()));
        let mut scratch = Vec::new();
        let old_bytes = match current.map(|stored| stored.bytes(&mut scratch)) {
            Some(None) => return Err(wrong_type(key)),
            Some(Some(bytes)) => bytes,
            None => &[],
        };
        enum Answer {
            Integer(i64),
            Value,
            Length,
        }
        let (new_bytes, answer) = match op.kind {
            OpKind::IncrBy => {
                let old = match current {
                    None => 0,
                    Some(_) => parse_i64(old_bytes).ok_or_else(not_an_integer)?,
                };
                let new = old.checked_add(op.version as i64).ok_or_else(|| {
                    RequestError::new(
                        ErrorCode::NotANumber,
                        "increment or decrement would overflow",
                    )
                })?;
                (new.to_string().into_bytes(), Answer::Integer(new))
            }
            OpKind::IncrByFloat => {
                let old = match current {
                    None => 0.0,
                    Some(_) => parse_f64(old_bytes).ok_or_else(|| {
                        RequestError::new(ErrorCode::NotANumber, "value is not a valid float")
                    })?,
                };
                let new = old + f64::from_bits(op.version);
                if !new.is_finite() {
                    let message = "increment would produce NaN or Infinity";
                    return Err(RequestError::new(ErrorCode::NotANumber, message));
                }
                (format_f64(new).into_bytes(), Answer::Value)
            }
            _ => ([old_bytes, op.value.of(buf)].concat(), Answer::Length),
        };
        let mut stored = Vec::with_capacity(new_bytes.len() + 5);
        reply::write_bin(&mut stored, &new_bytes);
        self.write(key, &stored, deadline)
            .map_err(|_| RequestError::new(ErrorCode::Oom, oom_text(key)))?;
        match answer {
            Answer::Integer(n) => reply::write_integer(out, n),
            Answer::Value => reply::write_found(out, &stored),
            Answer::Length => reply::write_done(out, new_bytes.len() as u64),
        }
        Ok(self.find(key).cloned().expect("the key was just written"))
    }

    /// FLUSH: deletes every key, counting each as a delete; returns the keys
    /// (the shard logs their deletion).
    pub fn flush(&mut self) -> Vec<Box<[u8]>> {
        let entries: Vec<Entry> = self.map.drain().collect();
        let mut keys = Vec::with_capacity(entries.len());
        for entry in entries {
            self.count_out(&entry.footprint(), entry.key(), entry.deadline());
            self.stats.deletes += 1;
            keys.push(Box::from(entry.key()));
            self.pinned.displace(entry);
        }
        keys
    }
}

fn wrong_type(key: &[u8]) -> RequestError {
    RequestError::new(
        ErrorCode::WrongType,
        format!(
            "the value of key {} is not a string or an integer",
            String::from_utf8_lossy(key)
        ),
    )
}

fn not_an_integer() -> RequestError {
    RequestError::new(
        ErrorCode::NotANumber,
        "value is not an integer or out of range",
    )
}

fn oom_text(key: &[u8]) -> String {
    format!(
        "write of key {} refused, over the memory limit (--max-memory-bytes)",
        String::from_utf8_lossy(key)
    )
}

fn write_oom(out: &mut Vec<u8>, key: &[u8], oom: OverMemoryLimit) {
    let message = format!(
        "write of key {} refused: {oom}",
        String::from_utf8_lossy(key)
    );
    reply::write_error(out, ErrorCode::Oom, &message);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::live;

    fn allocated_bytes(key_len: usize, value_len: usize, version: u64) -> usize {
        Footprint::of_parts(key_len, value_len, version).allocated_bytes
    }

    const NO_LIMIT: u64 = u64::MAX;

    /// The memory of a table holding exactly these entries, written once each:
    /// a limit that such a table fits exactly.
    fn memory_holding(entries: &[(&[u8], &[u8])]) -> u64 {
        let mut table = Table::new(NO_LIMIT);
        for (key, value) in entries {
            table.set(key, value).expect("no limit");
        }
        table.memory_used_bytes()
    }

    /// What pinning an entry of these sizes (at a one-byte version) costs.
    fn pinned_cost_of(key_len: usize, value_len: usize) -> u64 {
        allocated_bytes(key_len, value_len, 1) as u64 + pinned::PINNED_OVERHEAD_BYTES
    }

    #[test]
    fn versions_start_at_one_count_writes_and_reset_on_delete() {
        let mut table = Table::new(NO_LIMIT);
        assert_eq!(table.version(b"k"), 0);
        assert_eq!(table.set(b"k", b"\xa1a"), Ok(1));
        assert_eq!(table.set(b"k", b"\xa1b"), Ok(2));
        assert_eq!(
            table.put_versioned(b"k", b"\xa1c", 2),
            Ok(PutOutcome::Applied(3))
        );
        assert_eq!(
            table.put_versioned(b"k", b"\xa1d", 2),
            Ok(PutOutcome::Conflict(3))
        );
        assert!(table.delete(b"k"));
        assert!(!table.delete(b"k"));
        assert_eq!(
            table.put_versioned(b"k", b"\xa1e", 1),
            Ok(PutOutcome::Conflict(0))
        );
        assert_eq!(
            table.put_versioned(b"k", b"\xa1e", 0),
            Ok(PutOutcome::Applied(1))
        );
    }

    #[test]
    fn stats_track_keys_bytes_and_operations() {
        let mut table = Table::new(NO_LIMIT);
        table.set(b"a", b"12345").expect("room");
        table.set(b"b", b"1").expect("room");
        table.set(b"a", b"12").expect("room");
        assert!(table.get(b"a").expect("read").is_some());
        assert!(table.get(b"zz").expect("read").is_none());
        table.delete(b"b");
        let stats = table.stats();
        assert_eq!((stats.keys, stats.value_bytes), (1, 2));
        assert_eq!((stats.gets, stats.hits, stats.misses), (2, 1, 1));
        assert_eq!((stats.sets, stats.deletes), (3, 1));
        assert_eq!(
            stats.memory_bytes,
            allocated_bytes(1, 2, 2) as u64 + table.index_bytes()
        );
    }

    /// A location of `len` bytes in log file 0, checked by its record.
    fn location_of(offset: u64, len: u32) -> Location {
        Location {
            file: 0,
            offset,
            len,
            check: crate::entry::ValueCheck::Record {
                with_deadline: false,
            },
        }
    }

    /// What the table's memory must be: its entries', its buckets' and its
    /// expire index's.
    fn entries_and_buckets(table: &Table) -> u64 {
        let entries: u64 = table.entries().map(|e| e.allocated_bytes() as u64).sum();
        entries
            + allocator::held_bytes(table.map.allocation_size()) as u64
            + table.deadlines.bytes()
    }

    #[test]
    fn a_small_value_read_from_its_location_goes_back_into_its_entry_and_counts_as_memory() {
        let mut table = Table::on_disk(NO_LIMIT);
        let (small, large) = (location_of(100, 63), location_of(4096, 64));
        table.load_on_disk(b"small", small, 3, Some(9_000));
        table.load_on_disk(b"large", large, 1, None);
        let before = table.stats().memory_bytes;
        assert!(table.keep_fetched(b"small", small, &[5; 63]));
        assert!(!table.keep_fetched(b"large", large, &[6; 64]));
        table.clear_fetched();
        let entry = table.current(b"small").expect("still there");
        assert!(!entry.is_on_disk());
        assert_eq!(
            (entry.value(), entry.version(), entry.deadline()),
            (&[5; 63][..], 3, Some(9_000))
        );
        assert!(table.current(b"large").expect("still there").is_on_disk());
        let after = table.stats().memory_bytes;
        assert!(after > before, "the value's bytes are counted: {after}");
        assert_eq!(after, entries_and_buckets(&table));
        assert_eq!(table.stats().disk_reads, 2);
        // In the entry now: no location to read.
        assert_eq!(table.unread_location(b"small"), None);
    }

    #[test]
    fn a_small_value_read_at_the_memory_limit_stays_on_disk_and_is_used_from_its_copy() {
        let mut table = Table::on_disk(NO_LIMIT);
        let location = location_of(100, 10);
        table.load_on_disk(b"key", location, 1, None);
        table.set_memory_limit(table.memory_used_bytes());
        assert!(!table.keep_copy(b"key", location, b"0123456789"));
        assert!(table.current(b"key").expect("there").is_on_disk());
        let (value, _) = table.peek(b"key").expect("a copy was kept");
        assert_eq!(value, b"0123456789");
        assert_eq!(table.stats().memory_bytes, entries_and_buckets(&table));
    }

    #[test]
    fn a_small_written_value_is_not_relocated_and_a_larger_one_is() {
        let mut table = Table::on_disk(NO_LIMIT);
        table.set(b"small", &[1; 63]).expect("room");
        table.set(b"large", &[2; 64]).expect("room");
        let small = table.current(b"small").expect("written").clone();
        let large = table.current(b"large").expect("written").clone();
        assert!(!table.relocate(small, location_of(0, 63)));
        assert!(table.relocate(large, location_of(4096, 64)));
        assert!(!table.current(b"small").expect("there").is_on_disk());
        assert!(table.current(b"large").expect("there").is_on_disk());
        table.sweep_pinned(usize::MAX);
        assert_eq!(table.stats().memory_bytes, entries_and_buckets(&table));
    }

    #[test]
    fn memory_is_what_the_allocator_holds_for_the_entries_and_the_buckets() {
        let mut table = Table::new(NO_LIMIT);
        for i in 0..1000u32 {
            table
                .set(&i.to_be_bytes(), &vec![7; i as usize % 300])
                .expect("room");
        }
        let entries: u64 = table.entries().map(|e| e.allocated_bytes() as u64).sum();
        let buckets = allocator::held_bytes(table.map.allocation_size()) as u64;
        assert_eq!(table.stats().memory_bytes, entries + buckets);
        assert!(
            buckets >= (table.len() * std::mem::size_of::<Entry>()) as u64,
            "the buckets hold a pointer per key"
        );
    }

    #[test]
    fn a_million_16_byte_keys_with_32_byte_values_take_under_90_bytes_each() {
        // The brief's memory workload: 0.6 of Redis's 149 bytes per key is 89.
        // Values are msgpack: a 32-byte bin is 34 bytes.
        const NR_KEYS: u64 = 1_000_000;
        let mut table = Table::new(NO_LIMIT);
        let value = [&[0xc4, 32][..], &[b'v'; 32]].concat();
        for i in 0..NR_KEYS {
            table
                .set(format!("key:{i:012}").as_bytes(), &value)
                .expect("no limit");
        }
        let per_key = table.stats().memory_bytes / NR_KEYS;
        // 64 bytes of entry, 18.9 of buckets (2^21 of 9 bytes): 82.
        assert!(per_key <= 89, "{per_key} bytes per key");
    }

    #[test]
    fn the_bucket_growth_a_new_key_is_charged_is_what_the_map_then_allocates() {
        let mut table = Table::new(NO_LIMIT);
        let mut growths = 0;
        for i in 0..20_000u32 {
            let charged = table.index_growth_bytes();
            let before = table.index_bytes();
            table.set(&i.to_le_bytes(), b"v").expect("room");
            assert_eq!(
                table.index_bytes() - before,
                charged,
                "insert {i}: {} keys",
                table.len()
            );
            growths += u32::from(charged > 0);
        }
        assert!(growths >= 12, "the map grew {growths} times");
        let before = table.index_bytes();
        for i in 0..20_000u32 {
            table.set(&i.to_le_bytes(), b"w").expect("room");
        }
        assert_eq!(
            table.index_bytes(),
            before,
            "overwrites never grow the buckets"
        );
    }

    #[test]
    fn filling_a_table_to_its_limit_never_takes_memory_past_it() {
        let limit = 256 << 10;
        let mut table = Table::new(limit);
        let mut refused = 0;
        for i in 0..100_000u32 {
            match table.set(&i.to_le_bytes(), &[1; 40]) {
                Ok(_) => assert!(table.memory_used_bytes() <= limit, "after key {i}"),
                Err(oom) => {
                    assert!(oom.used_bytes <= limit);
                    refused += 1;
                    if refused == 10 {
                        break;
                    }
                }
            }
        }
        assert_eq!(refused, 10, "the limit was reached");
        assert!(
            table.memory_used_bytes() > limit / 4,
            "the map was not refused long before the limit: {}",
            table.memory_used_bytes()
        );
    }

    #[test]
    fn over_the_memory_limit_writes_fail_and_reads_and_deletes_work() {
        let limit = memory_holding(&[(b"a", b"0123456789")]);
        let mut table = Table::new(limit);
        table.set(b"a", b"0123456789").expect("fits exactly");
        let oom = table.set(b"b", b"x").expect_err("over the limit");
        assert_eq!(oom.limit_bytes, limit);
        assert!(
            !oom.to_string().contains("replies"),
            "nothing pinned: {oom}"
        );
        assert_eq!(
            table.set(b"a", b"short"),
            Ok(2),
            "a shrinking write is allowed"
        );
        assert!(table.get(b"a").expect("read").is_some());
        assert!(table.delete(b"a"));
        assert_eq!(table.set(b"b", b"x"), Ok(1));
        assert_eq!(table.stats().oom_rejections, 1);
    }

    #[test]
    fn restore_puts_back_a_prior_state_and_its_sizes() {
        let mut table = Table::new(NO_LIMIT);
        table.set(b"a", b"old").expect("room");
        let before = table.stats();
        let prior_a = table.prior(b"a");
        let prior_b = table.prior(b"b");
        table.set(b"a", b"newer").expect("room");
        table.set(b"b", b"x").expect("room");
        table.restore(b"a", prior_a);
        table.restore(b"b", prior_b);
        assert_eq!(table.peek(b"a"), Some((&b"old"[..], 1)));
        assert_eq!(table.peek(b"b"), None);
        let after = table.stats();
        assert_eq!(
            (after.keys, after.value_bytes, after.memory_bytes),
            (before.keys, before.value_bytes, before.memory_bytes)
        );
        assert_eq!(after.sets, 3, "request counters keep counting what ran");
    }

    #[test]
    fn load_and_unload_keep_the_sizes_that_set_and_delete_do() {
        let (mut written, mut loaded) = (Table::new(NO_LIMIT), Table::new(NO_LIMIT));
        loaded.reserve(1000);
        for (key, value) in [(&b"a"[..], &b"12345"[..]), (b"b", b"1"), (b"a", b"12")] {
            let version = written.set(key, value).expect("room");
            loaded.load(key, value, version);
        }
        written.delete(b"b");
        loaded.unload(b"b");
        loaded.shrink_to_fit();
        assert_eq!(loaded.peek(b"a"), Some((&b"12"[..], 2)));
        let (w, l) = (written.stats(), loaded.stats());
        assert_eq!(
            (l.keys, l.value_bytes, l.memory_bytes),
            (w.keys, w.value_bytes, w.memory_bytes)
        );
        assert_eq!((loaded.key_bytes(), written.key_bytes()), (1, 1));
        assert_eq!(l.sets, 0, "loading counts no requests");
    }

    #[test]
    fn drained_entries_load_into_another_table_without_a_copy() {
        let mut old = Table::new(NO_LIMIT);
        old.set(b"a", b"1").expect("room");
        old.set(b"a", b"22").expect("room");
        old.set(b"b", b"333").expect("room");
        let value_at = old.peek(b"a").expect("stored").0.as_ptr();
        let mut new = Table::new(NO_LIMIT);
        for entry in old.drain() {
            new.load_entry(entry);
        }
        assert_eq!(
            (old.stats().keys, old.stats().value_bytes),
            (0, 0),
            "the entries left"
        );
        assert_eq!(
            old.stats().memory_bytes,
            old.index_bytes(),
            "the buckets stay"
        );
        assert!(old.is_empty());
        assert_eq!(new.peek(b"a"), Some((&b"22"[..], 2)));
        assert_eq!(new.peek(b"a").expect("moved").0.as_ptr(), value_at);
        assert_eq!(new.peek(b"b"), Some((&b"333"[..], 1)));
        assert_eq!((new.stats().keys, new.stats().value_bytes), (2, 5));
    }

    #[test]
    fn a_value_a_reply_holds_after_an_overwrite_counts_against_the_limit_until_the_reply_is_gone() {
        let one = memory_holding(&[(b"a", &[1; 1000])]);
        let pinned_cost = pinned_cost_of(1, 1000);
        let mut table = Table::new(one + pinned_cost + 10);
        table.set(b"a", &[1; 1000]).expect("room");
        let reply = table.get(b"a").expect("read").expect("found").clone();
        table
            .set(b"a", &[2; 1000])
            .expect("the pinned old value still fits");
        assert_eq!(table.stats().reply_pinned_bytes, pinned_cost);
        let second_reply = table.get(b"a").expect("read").expect("found").clone();
        table
            .set(b"a", &[3; 1000])
            .expect_err("a same-size overwrite needs room to pin the value it replaces");
        drop(second_reply);
        assert_eq!(table.stats().memory_bytes, one);
        let oom = table.set(b"b", &[3; 100]).expect_err("pinned bytes count");
        assert_eq!(oom.reply_pinned_bytes, pinned_cost);
        assert_eq!(oom.used_bytes, table.memory_used_bytes());
        assert!(
            oom.to_string()
                .contains("replies not yet written still hold"),
            "{oom}"
        );
        assert!(
            table.get(b"a").expect("read").is_some(),
            "reads keep working"
        );
        assert_eq!(reply.value(), &[1; 1000][..], "the reply's value is intact");
        drop(reply);
        assert_eq!(table.set(b"b", &[3; 100]), Ok(1), "the refusal swept first");
        assert_eq!(table.stats().reply_pinned_bytes, 0);
    }

    #[test]
    fn a_deleted_value_nobody_holds_is_not_pinned_and_a_held_one_is_freed_by_a_sweep() {
        let live_before = live::count();
        let mut table = Table::new(NO_LIMIT);
        table.set(b"a", b"1").expect("room");
        table.set(b"b", b"2").expect("room");
        let reply = table.get(b"b").expect("read").expect("found").clone();
        table.delete(b"a");
        assert_eq!(live::count(), live_before + 1, "a was freed at once");
        table.delete(b"b");
        assert_eq!(table.stats().reply_pinned_bytes, pinned_cost_of(1, 1));
        assert_eq!(
            table.sweep_pinned(usize::MAX),
            0,
            "the reply still holds it"
        );
        drop(reply);
        assert_eq!(live::count(), live_before + 1, "the pinned list holds it");
        assert_eq!(table.sweep_pinned(usize::MAX), pinned_cost_of(1, 1));
        assert_eq!(live::count(), live_before, "the sweep freed it");
        assert_eq!(table.stats().reply_pinned_bytes, 0);
    }

    #[test]
    fn undoing_a_write_takes_a_pinned_prior_value_back_into_the_table() {
        let mut table = Table::new(NO_LIMIT);
        table.set(b"a", b"old").expect("room");
        let prior = table.prior(b"a");
        table.set(b"a", b"new").expect("room");
        assert_eq!(
            table.stats().reply_pinned_bytes,
            pinned_cost_of(1, 3),
            "the undo log holds the old value"
        );
        table.restore(b"a", prior);
        assert_eq!(table.peek(b"a"), Some((&b"old"[..], 1)));
        assert_eq!(table.stats().reply_pinned_bytes, 0);
        // Undoing a write that was refused leaves the value where it is.
        let mut full = Table::new(memory_holding(&[(b"a", b"old")]));
        full.set(b"a", b"old").expect("fits exactly");
        let prior = full.prior(b"a");
        full.set(b"a", b"longer").expect_err("over the limit");
        full.restore(b"a", prior);
        assert_eq!(full.peek(b"a"), Some((&b"old"[..], 1)));
        assert_eq!(full.stats().reply_pinned_bytes, 0);
        full.delete(b"a");
        assert_eq!(full.stats().reply_pinned_bytes, 0, "nothing else held it");
    }

    #[test]
    fn apply_says_what_each_request_changed() {
        use crate::proto::decode_message;
        let mut body = Vec::new();
        reply::write_array_len(&mut body, 6);
        for request in [
            &[0x93, 0x01, 0xa1, b'k', 0xa1, b'v'][..],   // SET k v
            &[0x94, 0x05, 0xa1, b'k', 0xa1, b'w', 0x07], // PUTV k w 7 (conflict)
            &[0x92, 0x00, 0xa1, b'k'],                   // GET k
            &[0x92, 0x06, 0xa1, b'k'],                   // RM k
            &[0x92, 0x02, 0xa1, b'k'],                   // DEL k (absent)
            &[0x94, 0x05, 0xa1, b'k', 0xa1, b'w', 0x00], // PUTV k w 0
        ] {
            body.extend_from_slice(request);
        }
        let mut ops = Vec::new();
        let limits = crate::proto::RequestLimits { max_key_bytes: 16 };
        decode_message(&body, 0..body.len(), &limits, &mut ops).expect("valid message");
        let mut table = Table::new(NO_LIMIT);
        let mut out = BatchResults::default();
        let effects: Vec<_> = ops
            .iter()
            .map(|op| table.apply(op, &body, &mut out))
            .collect();
        let put = |version| Effect::Put {
            key: b"k",
            version,
            value: b"\xa1w",
            deadline: None,
        };
        let set = Effect::Put {
            key: b"k",
            version: 1,
            value: b"\xa1v",
            deadline: None,
        };
        let deleted = Effect::Del { key: b"k" };
        assert_eq!(
            effects,
            [Some(set), None, None, Some(deleted), None, Some(put(1))]
        );
    }
}
