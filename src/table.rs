//! A shard's table: the hash map from key bytes to (value, version), and
//! [`Table::apply`], which runs one request against it and writes the result
//! element. No I/O, no awaits, no clocks: given the same ops in the same order a
//! table always ends in the same state, which is what the model tests rely on.
//!
//! Semantics (BRIEF §3):
//! - An absent key has version 0. Every successful write (SET, PUTV) makes it
//!   old + 1; deleting makes it absent again, so the next write gives version 1.
//! - Values are opaque: the complete msgpack encoding as it arrived.
//! - Over the memory limit a write that would grow the table is refused with OOM;
//!   reads, deletes and shrinking writes keep working.
//! - Values are reference-counted (`Arc<[u8]>`): a read hands out a reference,
//!   never a copy, so replies in flight cost pointers, not value bytes
//!   (see `proto::results`). An overwrite or delete frees the old value once the
//!   last reply holding it has been written.
//!
//! The map is hashed with per-process random keys, not with the fixed routing
//! seeds: every key in shard `s` has `route_hash % nr_shards == s`, and reusing
//! that hash would leave most buckets of each shard's map empty.

use crate::proto::reply;
use crate::proto::{BatchResults, ErrorCode, Op, OpKind};
use hashbrown::hash_map::EntryRef;
use hashbrown::HashMap;
use std::sync::Arc;

/// Bytes charged per entry on top of its key and value: the boxed key and the
/// shared value (pointers, the Arc's counts), the version, the map's slot and
/// control byte, and allocator headers. An estimate that errs high, so the
/// memory limit is conservative.
pub const ENTRY_OVERHEAD_BYTES: u64 = 96;

#[derive(Debug)]
struct Entry {
    value: Arc<[u8]>,
    version: u64,
}

/// Counters a shard reports in STATS. Names are the wire names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    pub keys: u64,
    pub value_bytes: u64,
    pub memory_bytes: u64,
    pub gets: u64,
    pub hits: u64,
    pub misses: u64,
    pub sets: u64,
    pub deletes: u64,
    pub version_conflicts: u64,
    pub oom_rejections: u64,
    pub atomic_commits: u64,
    pub atomic_aborts: u64,
}

impl TableStats {
    /// Number of fields, in [`TableStats::fields`] order.
    pub const NR_FIELDS: usize = 12;

    /// `(wire name, value)` pairs in a fixed order.
    pub fn fields(&self) -> [(&'static str, u64); Self::NR_FIELDS] {
        [
            ("keys", self.keys),
            ("value_bytes", self.value_bytes),
            ("memory_bytes", self.memory_bytes),
            ("gets", self.gets),
            ("hits", self.hits),
            ("misses", self.misses),
            ("sets", self.sets),
            ("deletes", self.deletes),
            ("version_conflicts", self.version_conflicts),
            ("oom_rejections", self.oom_rejections),
            ("atomic_commits", self.atomic_commits),
            ("atomic_aborts", self.atomic_aborts),
        ]
    }

    /// Rebuilds stats from values in [`TableStats::fields`] order.
    pub fn from_values(v: [u64; Self::NR_FIELDS]) -> TableStats {
        TableStats {
            keys: v[0],
            value_bytes: v[1],
            memory_bytes: v[2],
            gets: v[3],
            hits: v[4],
            misses: v[5],
            sets: v[6],
            deletes: v[7],
            version_conflicts: v[8],
            oom_rejections: v[9],
            atomic_commits: v[10],
            atomic_aborts: v[11],
        }
    }

    /// Field-wise sum, for STATS across shards.
    pub fn add(&mut self, other: &TableStats) {
        let mut sum = self.fields().map(|(_, v)| v);
        for (total, (_, v)) in sum.iter_mut().zip(other.fields()) {
            *total += v;
        }
        *self = TableStats::from_values(sum);
    }
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

/// What a request changed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Nothing,
    /// The key now holds the request's value at this version.
    Put(u64),
    /// The key existed and is gone.
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
#[error("over the memory limit: {used_bytes} of {limit_bytes} bytes used (--max-memory-bytes)")]
pub struct OverMemoryLimit {
    pub used_bytes: u64,
    pub limit_bytes: u64,
}

/// One shard's key/value map.
#[derive(Debug)]
pub struct Table {
    map: HashMap<Box<[u8]>, Entry, ahash::RandomState>,
    stats: TableStats,
    memory_limit_bytes: u64,
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
            memory_limit_bytes,
        }
    }

    pub fn stats(&self) -> TableStats {
        self.stats
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
        let old = self.map.get(key).map(|e| (e.value.len(), e.version));
        let new_cost = entry_cost(key.len(), value.len());
        let old_cost = old.map_or(0, |(len, _)| entry_cost(key.len(), len));
        self.check_growth(new_cost.saturating_sub(old_cost))?;
        let version = old.map_or(0, |(_, v)| v) + 1;
        let entry = Entry {
            value: value.into(),
            version,
        };
        match self.map.get_mut(key) {
            Some(slot) => *slot = entry,
            None => {
                self.map.insert(key.into(), entry);
                self.stats.keys += 1;
            }
        }
        self.stats.value_bytes += value.len() as u64;
        self.stats.value_bytes -= old.map_or(0, |(len, _)| len as u64);
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
        true
    }

    /// The state of `key` now, to be handed back to [`Table::restore`].
    pub fn prior(&self, key: &[u8]) -> Prior {
        Prior(self.map.get(key).map(|e| (e.value.clone(), e.version)))
    }

    /// Puts `key` back to an earlier state (an aborted batch's undo). Adjusts the
    /// size figures; request counters keep counting what ran.
    pub fn restore(&mut self, key: &[u8], prior: Prior) {
        if let Some(entry) = self.map.remove(key) {
            self.forget_entry(key.len(), entry.value.len());
        }
        if let Some((value, version)) = prior.0 {
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
        self.stats.value_bytes += value.len() as u64;
        self.stats.memory_bytes += entry_cost(key.len(), value.len());
        let entry = Entry { value, version };
        match self.map.entry_ref(key) {
            EntryRef::Occupied(mut slot) => {
                let old = slot.insert(entry);
                self.stats.value_bytes -= old.value.len() as u64;
                self.stats.memory_bytes -= entry_cost(key.len(), old.value.len());
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

    fn check_growth(&mut self, growth: u64) -> Result<(), OverMemoryLimit> {
        let used_bytes = self.stats.memory_bytes;
        if growth > 0 && used_bytes + growth > self.memory_limit_bytes {
            self.stats.oom_rejections += 1;
            return Err(OverMemoryLimit {
                used_bytes,
                limit_bytes: self.memory_limit_bytes,
            });
        }
        Ok(())
    }

    /// Runs one request whose spans point into `buf`, appending its result
    /// element (if it has one) to `out` — without ending the request's slot —
    /// and says what it changed. STATS is not a table request: the shard answers
    /// it, since it needs figures the table does not own.
    pub fn apply(&mut self, op: &Op, buf: &[u8], out: &mut BatchResults) -> Change {
        let key = op.key.of(buf);
        let mut change = Change::Nothing;
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
            OpKind::Set => match self.set(key, op.value.of(buf)) {
                Ok(version) => change = Change::Put(version),
                Err(oom) => write_oom(&mut out.buf, key, oom),
            },
            OpKind::PutV => match self.put_versioned(key, op.value.of(buf), op.version) {
                Ok(PutOutcome::Applied(version)) => {
                    reply::write_done(&mut out.buf, version);
                    change = Change::Put(version);
                }
                Ok(PutOutcome::Conflict(current)) => {
                    reply::write_version_conflict(&mut out.buf, current)
                }
                Err(oom) => write_oom(&mut out.buf, key, oom),
            },
            OpKind::Del => {
                if self.delete(key) {
                    change = Change::Deleted;
                }
            }
            OpKind::Rm => {
                let existed = self.delete(key);
                reply::write_done(&mut out.buf, u64::from(existed));
                if existed {
                    change = Change::Deleted;
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
    fn stats_add_sums_every_field() {
        let mut total = TableStats::from_values([1; TableStats::NR_FIELDS]);
        total.add(&TableStats::from_values([2; TableStats::NR_FIELDS]));
        assert!(total.fields().iter().all(|&(_, v)| v == 3));
    }
}
