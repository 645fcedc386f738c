//! A shard's table: the hash map from key bytes to (value, version), and
//! [`Table::apply`], which runs one request against it, writes the result
//! element and says what the request changed ([`Effect`], which the log
//! records). No I/O, no awaits, no clocks: given the same ops in the same order a
//! table always ends in the same state, which is what the model tests rely on.
//!
//! Semantics (BRIEF §3):
//! - An absent key has version 0. Every successful write (SET, PUTV) makes it
//!   old + 1; deleting makes it absent again, so the next write gives version 1.
//! - Values are opaque: the complete msgpack encoding as it arrived.
//! - Over the memory limit a write that would grow memory — the table's, or
//!   pinned values' (below) — is refused with OOM; reads, deletes and shrinking
//!   writes keep working.
//! - Values are reference-counted (`Arc<[u8]>`): a read hands out a reference,
//!   never a copy, so replies in flight cost pointers, not value bytes
//!   (see `proto::results`). An overwrite or delete frees the old value at once
//!   if nothing else holds it; else the value is *pinned* ([`pinned`]): kept,
//!   and counted against the memory limit beside the table's own memory, until
//!   a sweep finds that the last reply holding it has been written.
//!
//! The map is hashed with per-process random keys, not with the fixed routing
//! seeds: every key in shard `s` has `route_hash % nr_shards == s`, and reusing
//! that hash would leave most buckets of each shard's map empty.

pub mod pinned;

use crate::proto::reply;
use crate::proto::{BatchResults, ErrorCode, Op, OpKind};
use hashbrown::hash_map::EntryRef;
use hashbrown::HashMap;
use pinned::PinnedValues;
use std::sync::Arc;

/// The figures a table keeps, as STATS reports them (`proto::stats`).
pub use crate::proto::stats::TableStats;

/// Bytes charged per entry on top of its key and value: the boxed key and the
/// shared value (pointers, the Arc's counts), the version, the map's slot and
/// control byte, and allocator headers. An estimate that errs high, so the
/// memory limit is conservative.
pub const ENTRY_OVERHEAD_BYTES: u64 = 96;

/// Pinned values a write looks at before it is refused over the memory limit
/// (all of them when there are no more). Bounds what a refused write costs when
/// many values are pinned; the periodic sweep gets to the rest.
pub const OOM_SWEEP_BUDGET: usize = 1024;

#[derive(Debug)]
struct Entry {
    value: Arc<[u8]>,
    version: u64,
}

/// A key's state before a write, kept to put it back if a batch aborts.
#[derive(Debug, Clone)]
pub struct Prior(Option<(Arc<[u8]>, u64)>);

impl Prior {
    /// The value and version the key had, or None if it was absent.
    pub fn state(&self) -> Option<(&Arc<[u8]>, u64)> {
        self.0.as_ref().map(|(value, version)| (value, *version))
    }
}

/// What a request changed: one key written or deleted. [`Table::apply`] says
/// it; the log records it as it is (`log::format`), a single-shard ATOMIC
/// collects its requests' into one record, and recovery loads it back. Byte
/// fields borrow the request's buffer (or, replaying, the log file's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<'a> {
    /// The key now holds `value` at `version`.
    Put {
        key: &'a [u8],
        version: u64,
        value: &'a [u8],
    },
    /// The key existed and is gone.
    Del { key: &'a [u8] },
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

/// One shard's key/value map.
#[derive(Debug)]
pub struct Table {
    map: HashMap<Box<[u8]>, Entry, ahash::RandomState>,
    stats: TableStats,
    /// Values the map dropped that others still hold.
    pinned: PinnedValues,
    memory_limit_bytes: u64,
}

/// Names the share of pinned values in an OOM message, when there is one.
fn pinned_note(reply_pinned_bytes: u64) -> String {
    match reply_pinned_bytes {
        0 => String::new(),
        n => format!(", {n} of them by values that replies not yet written still hold"),
    }
}

fn entry_cost(key_len: usize, value_len: usize) -> u64 {
    (key_len + value_len) as u64 + ENTRY_OVERHEAD_BYTES
}

impl Table {
    /// An empty table that refuses growth beyond `memory_limit_bytes`.
    pub fn new(memory_limit_bytes: u64) -> Table {
        Table {
            map: HashMap::with_hasher(ahash::RandomState::new()),
            stats: TableStats::default(),
            pinned: PinnedValues::default(),
            memory_limit_bytes,
        }
    }

    pub fn stats(&self) -> TableStats {
        TableStats {
            reply_pinned_bytes: self.pinned.bytes(),
            ..self.stats
        }
    }

    /// What the memory limit counts: the table's memory and pinned values'.
    pub fn memory_used_bytes(&self) -> u64 {
        self.stats.memory_bytes + self.pinned.bytes()
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

    /// The value and version of `key`, without counting a read.
    pub fn peek(&self, key: &[u8]) -> Option<(&[u8], u64)> {
        self.map.get(key).map(|e| (&*e.value, e.version))
    }

    /// The key's current version; 0 when absent.
    pub fn version(&self, key: &[u8]) -> u64 {
        self.map.get(key).map_or(0, |e| e.version)
    }

    /// Reads `key`, counting a get and a hit or miss.
    pub fn get(&mut self, key: &[u8]) -> Option<(&Arc<[u8]>, u64)> {
        self.stats.gets += 1;
        match self.map.get(key) {
            Some(e) => {
                self.stats.hits += 1;
                Some((&e.value, e.version))
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Writes `value` under `key` unconditionally; returns the new version.
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> Result<u64, OverMemoryLimit> {
        // An old value that someone else holds is not freed but pinned: the
        // write must have room for it too, or same-size overwrites of values
        // that stalled replies hold would grow memory without ever being refused.
        let old = self.map.get(key).map(|e| {
            let held = Arc::strong_count(&e.value) > 1;
            let pinned_cost = if held {
                pinned::pinned_cost(&e.value)
            } else {
                0
            };
            (e.value.len(), e.version, pinned_cost)
        });
        let new_cost = entry_cost(key.len(), value.len());
        let old_cost = old.map_or(0, |(len, _, _)| entry_cost(key.len(), len));
        let old_pinned_cost = old.map_or(0, |(_, _, cost)| cost);
        self.check_growth((new_cost + old_pinned_cost).saturating_sub(old_cost))?;
        let version = old.map_or(0, |(_, v, _)| v) + 1;
        let entry = Entry {
            value: value.into(),
            version,
        };
        match self.map.get_mut(key) {
            Some(slot) => {
                let old = std::mem::replace(slot, entry);
                self.pinned.displace(old.value);
            }
            None => {
                self.map.insert(key.into(), entry);
                self.stats.keys += 1;
            }
        }
        self.stats.value_bytes += value.len() as u64;
        self.stats.value_bytes -= old.map_or(0, |(len, _, _)| len as u64);
        self.stats.memory_bytes = self.stats.memory_bytes + new_cost - old_cost;
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

    /// Deletes `key`; returns whether it existed.
    pub fn delete(&mut self, key: &[u8]) -> bool {
        self.stats.deletes += 1;
        let Some(entry) = self.map.remove(key) else {
            return false;
        };
        self.forget_entry(key.len(), entry.value.len());
        self.pinned.displace(entry.value);
        true
    }

    /// The state of `key` now, to be handed back to [`Table::restore`].
    pub fn prior(&self, key: &[u8]) -> Prior {
        Prior(self.map.get(key).map(|e| (e.value.clone(), e.version)))
    }

    /// Puts `key` back to an earlier state (an aborted batch's undo). Adjusts the
    /// size figures; request counters keep counting what ran.
    pub fn restore(&mut self, key: &[u8], prior: Prior) {
        if let (Some(entry), Some((value, version))) = (self.map.get(key), &prior.0) {
            if Arc::ptr_eq(&entry.value, value) && entry.version == *version {
                return; // unchanged (the batch's write was refused)
            }
        }
        if let Some(entry) = self.map.remove(key) {
            self.forget_entry(key.len(), entry.value.len());
            self.pinned.displace(entry.value);
        }
        if let Some((value, version)) = prior.0 {
            // The write being undone may have pinned it (the undo log held it).
            self.pinned.take_back(&value);
            self.stats.keys += 1;
            self.stats.value_bytes += value.len() as u64;
            self.stats.memory_bytes += entry_cost(key.len(), value.len());
            self.map.insert(key.into(), Entry { value, version });
        }
    }

    /// Recovery: puts a logged value in place, without counting a request or
    /// checking the memory limit (what was acknowledged must come back). One
    /// lookup: the key is hashed once whether it is new or replaced.
    pub fn load(&mut self, key: &[u8], value: Arc<[u8]>, version: u64) {
        if !self.pinned.is_empty() {
            self.pinned.take_back(&value);
        }
        self.stats.value_bytes += value.len() as u64;
        self.stats.memory_bytes += entry_cost(key.len(), value.len());
        let entry = Entry { value, version };
        match self.map.entry_ref(key) {
            EntryRef::Occupied(mut slot) => {
                let old = slot.insert(entry);
                self.stats.value_bytes -= old.value.len() as u64;
                self.stats.memory_bytes -= entry_cost(key.len(), old.value.len());
                self.pinned.displace(old.value);
            }
            EntryRef::Vacant(slot) => {
                slot.insert(entry);
                self.stats.keys += 1;
            }
        }
    }

    /// Recovery: makes room for `additional` more keys, so that loading them
    /// does not rehash the map each time it doubles.
    pub fn reserve(&mut self, additional: usize) {
        self.map.reserve(additional);
    }

    /// Recovery: gives back room [`Table::reserve`] set aside beyond what the
    /// loaded keys need (the map then has the size growing would have given it).
    pub fn shrink_to_fit(&mut self) {
        self.map.shrink_to(0);
    }

    /// Recovery: removes a logged deletion's key, without counting a request.
    pub fn unload(&mut self, key: &[u8]) {
        self.restore(key, Prior(None));
    }

    /// Sets the memory limit (recovery loads first, then limits).
    pub fn set_memory_limit(&mut self, memory_limit_bytes: u64) {
        self.memory_limit_bytes = memory_limit_bytes;
    }

    /// Takes every entry out, leaving the table empty (to move keys to other shards).
    pub fn drain(&mut self) -> impl Iterator<Item = (Box<[u8]>, Arc<[u8]>, u64)> + '_ {
        self.stats.keys = 0;
        self.stats.value_bytes = 0;
        self.stats.memory_bytes = 0;
        self.map.drain().map(|(key, e)| (key, e.value, e.version))
    }

    /// Every entry, in no particular order (for snapshots).
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], &Arc<[u8]>, u64)> + '_ {
        self.map
            .iter()
            .map(|(key, e)| (&**key, &e.value, e.version))
    }

    /// Counts the outcome of an ATOMIC batch this shard decided or took part in.
    pub fn count_atomic(&mut self, committed: bool) {
        match committed {
            true => self.stats.atomic_commits += 1,
            false => self.stats.atomic_aborts += 1,
        }
    }

    fn forget_entry(&mut self, key_len: usize, value_len: usize) {
        self.stats.keys -= 1;
        self.stats.value_bytes -= value_len as u64;
        self.stats.memory_bytes -= entry_cost(key_len, value_len);
    }

    /// Refuses `growth` bytes more if they would pass the limit, counting pinned
    /// values; but first frees the pinned values whose replies are gone, so a
    /// write is never refused for memory that is only waiting for a sweep.
    fn check_growth(&mut self, growth: u64) -> Result<(), OverMemoryLimit> {
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
                Some((value, _)) => {
                    reply::write_found_header(&mut out.buf);
                    out.push_value(value);
                }
                None => reply::write_not_found(&mut out.buf),
            },
            OpKind::GetV => match self.get(key) {
                Some((value, version)) => {
                    reply::write_versioned_header(&mut out.buf);
                    out.push_value(value);
                    reply::write_uint(&mut out.buf, version);
                }
                None => reply::write_not_found(&mut out.buf),
            },
            OpKind::Set => match self.set(key, value) {
                Ok(version) => {
                    change = Some(Effect::Put {
                        key,
                        version,
                        value,
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
                    });
                }
                Ok(PutOutcome::Conflict(current)) => {
                    reply::write_version_conflict(&mut out.buf, current)
                }
                Err(oom) => write_oom(&mut out.buf, key, oom),
            },
            OpKind::Del => {
                if self.delete(key) {
                    change = Some(Effect::Del { key });
                }
            }
            OpKind::Rm => {
                let existed = self.delete(key);
                reply::write_done(&mut out.buf, u64::from(existed));
                if existed {
                    change = Some(Effect::Del { key });
                }
            }
            OpKind::Stats | OpKind::Atomic => {
                unreachable!("{} is answered by the shard, not the table", op.kind.name())
            }
        }
        change
    }
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

    const NO_LIMIT: u64 = u64::MAX;

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
        assert!(table.get(b"a").is_some());
        assert!(table.get(b"zz").is_none());
        table.delete(b"b");
        let stats = table.stats();
        assert_eq!((stats.keys, stats.value_bytes), (1, 2));
        assert_eq!((stats.gets, stats.hits, stats.misses), (2, 1, 1));
        assert_eq!((stats.sets, stats.deletes), (3, 1));
        assert_eq!(stats.memory_bytes, entry_cost(1, 2));
    }

    #[test]
    fn over_the_memory_limit_writes_fail_and_reads_and_deletes_work() {
        let mut table = Table::new(entry_cost(1, 10));
        table.set(b"a", b"0123456789").expect("fits exactly");
        let oom = table.set(b"b", b"x").expect_err("over the limit");
        assert_eq!(oom.limit_bytes, entry_cost(1, 10));
        assert!(
            !oom.to_string().contains("replies"),
            "nothing pinned: {oom}"
        );
        assert_eq!(
            table.set(b"a", b"short"),
            Ok(2),
            "a shrinking write is allowed"
        );
        assert!(table.get(b"a").is_some());
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
            loaded.load(key, value.into(), version);
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
        assert_eq!(l.sets, 0, "loading counts no requests");
    }

    #[test]
    fn a_value_a_reply_holds_after_an_overwrite_counts_against_the_limit_until_the_reply_is_gone() {
        let limit = entry_cost(1, 1000) + pinned::pinned_cost(&[0; 1000]) + 10;
        let mut table = Table::new(limit);
        table.set(b"a", &[1; 1000]).expect("room");
        let reply = table.get(b"a").expect("found").0.clone();
        table
            .set(b"a", &[2; 1000])
            .expect("the pinned old value still fits");
        assert_eq!(
            table.stats().reply_pinned_bytes,
            pinned::pinned_cost(&[0; 1000])
        );
        let second_reply = table.get(b"a").expect("found").0.clone();
        table
            .set(b"a", &[3; 1000])
            .expect_err("a same-size overwrite needs room to pin the value it replaces");
        drop(second_reply);
        assert_eq!(table.stats().memory_bytes, entry_cost(1, 1000));
        let oom = table.set(b"b", &[3; 100]).expect_err("pinned bytes count");
        assert_eq!(oom.reply_pinned_bytes, pinned::pinned_cost(&[0; 1000]));
        assert_eq!(oom.used_bytes, table.memory_used_bytes());
        assert!(
            oom.to_string()
                .contains("replies not yet written still hold"),
            "{oom}"
        );
        assert!(table.get(b"a").is_some(), "reads keep working");
        drop(reply);
        assert_eq!(table.set(b"b", &[3; 100]), Ok(1), "the refusal swept first");
        assert_eq!(table.stats().reply_pinned_bytes, 0);
    }

    #[test]
    fn a_deleted_value_nobody_holds_is_not_pinned_and_a_held_one_is_freed_by_a_sweep() {
        let mut table = Table::new(NO_LIMIT);
        table.set(b"a", b"1").expect("room");
        table.set(b"b", b"2").expect("room");
        let reply = table.get(b"b").expect("found").0.clone();
        let weak = Arc::downgrade(&reply);
        table.delete(b"a");
        table.delete(b"b");
        assert_eq!(table.stats().reply_pinned_bytes, pinned::pinned_cost(b"2"));
        assert_eq!(
            table.sweep_pinned(usize::MAX),
            0,
            "the reply still holds it"
        );
        drop(reply);
        assert_eq!(table.sweep_pinned(usize::MAX), pinned::pinned_cost(b"2"));
        assert!(weak.upgrade().is_none(), "the sweep freed it");
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
            pinned::pinned_cost(b"old"),
            "the undo log holds the old value"
        );
        table.restore(b"a", prior);
        assert_eq!(table.peek(b"a"), Some((&b"old"[..], 1)));
        assert_eq!(table.stats().reply_pinned_bytes, 0);
        // Undoing a write that was refused leaves the value where it is.
        let mut full = Table::new(entry_cost(1, 3));
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
        };
        let set = Effect::Put {
            key: b"k",
            version: 1,
            value: b"\xa1v",
        };
        let deleted = Effect::Del { key: b"k" };
        assert_eq!(
            effects,
            [Some(set), None, None, Some(deleted), None, Some(put(1))]
        );
    }
}
