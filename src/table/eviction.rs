//! Making room under the memory limit: `--maxmemory-policy`, Redis's
//! policies, each shard on its own share of `--max-memory-bytes`.
//!
//! A write that would take the table over its limit first frees pinned
//! values nobody holds any more (`Table::check_growth`). If that is not
//! enough, `noeviction` refuses the write with OOM, as before; every other
//! policy evicts keys until the write fits:
//!
//! | policy | candidates | victim |
//! |---|---|---|
//! | `allkeys-lru` | [`SAMPLES`] keys sampled from the whole map | the one idle longest |
//! | `volatile-lru` | [`SAMPLES`] keys sampled among those with a deadline | the one idle longest |
//! | `allkeys-random` | one key sampled from the whole map | it |
//! | `volatile-random` | one key sampled among those with a deadline | it |
//! | `volatile-ttl` | the keys with the nearest deadlines | the nearest |
//!
//! Before any live key, keys whose deadline passed more than
//! `REMOVAL_GRACE_MS` ago go (they are absent already). Idleness is approximated as Redis does: each entry carries an
//! access clock in hundredths of a second (`Entry::touch`), stamped when it is
//! written or read, and the sampled key with the oldest stamp goes. Only
//! under an LRU policy do entries carry the clock (4 bytes each,
//! `crate::entry`); a table given one after recovery built its entries
//! rebuilds them with it ([`Table::set_eviction_policy`]). Sampling
//! the whole map picks random buckets of the hash table; sampling keys with a
//! deadline picks random points of the expire index's deadline range.
//!
//! A key is never evicted while a reply still holds its entry (evicting it
//! would pin it, freeing nothing), nor is the key being written. A write
//! evicts at most [`MAX_EVICTIONS_PER_WRITE`] keys; if it still does not fit
//! — a value larger than the shard's share, or everything pinned — it is
//! refused with OOM. Evicted keys are collected ([`Table::take_evicted`]) so
//! the shard logs each as a delete: a restart does not bring them back.

use super::expiry::REMOVAL_GRACE_MS;
use super::Table;
use crate::entry::Entry;

/// What a table does when a write would pass its memory limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvictionPolicy {
    /// Refuse the write with OOM.
    #[default]
    NoEviction,
    AllKeysLru,
    VolatileLru,
    AllKeysRandom,
    VolatileRandom,
    VolatileTtl,
}

impl EvictionPolicy {
    /// Whether the policy compares keys' access clocks (the LRU ones): only
    /// then do a table's entries carry one (`crate::entry`).
    pub fn reads_access_clock(self) -> bool {
        matches!(
            self,
            EvictionPolicy::AllKeysLru | EvictionPolicy::VolatileLru
        )
    }

    /// Redis's name of the policy.
    pub fn name(self) -> &'static str {
        match self {
            EvictionPolicy::NoEviction => "noeviction",
            EvictionPolicy::AllKeysLru => "allkeys-lru",
            EvictionPolicy::VolatileLru => "volatile-lru",
            EvictionPolicy::AllKeysRandom => "allkeys-random",
            EvictionPolicy::VolatileRandom => "volatile-random",
            EvictionPolicy::VolatileTtl => "volatile-ttl",
        }
    }
}

/// Keys an LRU policy compares per eviction (Redis's maxmemory-samples).
pub const SAMPLES: usize = 5;
/// Random buckets looked at per eviction at most: with the map at least
/// 7/16 full after growth, 64 probes miss every key once in tens of
/// millions of evictions (and the write is then refused, not stalled).
const MAX_PROBES: usize = 64;
/// Keys one write may evict before it is refused instead.
pub const MAX_EVICTIONS_PER_WRITE: usize = 1024;
/// Expired keys removed, at most, before live ones are evicted.
const EXPIRED_FIRST_BUDGET: usize = 64;
/// The access clock's tick: 10 ms (see `crate::entry` for why not Redis's
/// second).
pub const ACCESS_CLOCK_MS: u64 = 10;

/// The access clock at `now_ms` (wrapping every 2^32 ticks).
pub fn access_clock_at(now_ms: u64) -> u32 {
    (now_ms / ACCESS_CLOCK_MS) as u32
}

impl Table {
    /// Sets the policy (once, at start). Entries carry an access clock only
    /// under an LRU policy, and recovery builds a table's entries before
    /// the server gives it its policy: the entries are rebuilt here, with a
    /// clock or without, if they do not fit the policy.
    pub fn set_eviction_policy(&mut self, policy: EvictionPolicy) {
        self.policy = policy;
        self.fit_access_clocks();
    }

    /// The access clock a new entry is stamped with: the table's clock now,
    /// under an LRU policy; None (no clock in the entry) under the others.
    pub(super) fn new_access_stamp(&self) -> Option<u32> {
        let reads_clock = self.policy.reads_access_clock();
        reads_clock.then(|| access_clock_at(self.now_ms))
    }

    /// `entry`, or a copy of it with a clock or without, as the policy
    /// needs: for entries built elsewhere (recovery, another table).
    pub(super) fn with_fitting_clock(&self, entry: Entry) -> Entry {
        let stamp = self.new_access_stamp();
        match entry.access_stamp().is_some() == stamp.is_some() {
            true => entry,
            false => entry.with_access_clock(stamp),
        }
    }

    /// Rebuilds every entry whose clock (or lack of one) does not fit the
    /// policy. At start, before the shard serves: one copy per key, all
    /// stamped now (as a restart has always left them), and the memory the
    /// old entries held given back at once rather than after the
    /// allocator's delay.
    fn fit_access_clocks(&mut self) {
        let stamp = self.new_access_stamp();
        let mut rebuilt = 0usize;
        for slot in self.map.iter_mut() {
            if slot.access_stamp().is_some() == stamp.is_some() {
                continue;
            }
            let fitted = slot.with_access_clock(stamp);
            let old = std::mem::replace(slot, fitted);
            self.entry_bytes =
                self.entry_bytes - old.allocated_bytes() as u64 + slot.allocated_bytes() as u64;
            self.pinned.displace(old);
            rebuilt += 1;
        }
        if rebuilt > 0 {
            crate::allocator::return_free_memory_to_os();
        }
    }

    pub fn eviction_policy(&self) -> EvictionPolicy {
        self.policy
    }

    /// The keys evicted (or removed as expired to make room) since the last
    /// call, for the shard to log as deletes.
    pub fn take_evicted(&mut self) -> Vec<Box<[u8]>> {
        std::mem::take(&mut self.evicted)
    }

    /// Evicts keys, never `protect`, until `growth` more bytes fit under the
    /// limit; returns whether they do.
    pub(super) fn evict_for(&mut self, growth: u64, protect: &[u8]) -> bool {
        let fits = |table: &Table| table.memory_used_bytes() + growth <= table.memory_limit_bytes;
        let removable = self.now_ms.saturating_sub(REMOVAL_GRACE_MS);
        let expired = self.remove_due(removable, EXPIRED_FIRST_BUDGET);
        self.evicted.extend(expired);
        for _ in 0..MAX_EVICTIONS_PER_WRITE {
            if fits(self) {
                return true;
            }
            let Some(victim) = self.pick_victim(protect) else {
                return false;
            };
            if let Some(entry) = self.take(&victim) {
                self.stats.evicted_keys += 1;
                self.pinned.displace(entry);
                self.evicted.push(victim);
            }
        }
        fits(self)
    }

    /// The key the policy evicts next, if there is one it may.
    fn pick_victim(&self, protect: &[u8]) -> Option<Box<[u8]>> {
        let evictable = |entry: &Entry| entry.key() != protect && !entry.is_shared();
        let victim = match self.policy {
            EvictionPolicy::NoEviction => None,
            EvictionPolicy::AllKeysRandom => self.sample_map(1, &evictable),
            EvictionPolicy::AllKeysLru => self.sample_map(SAMPLES, &evictable),
            EvictionPolicy::VolatileRandom => self.sample_expiring(1, &evictable),
            EvictionPolicy::VolatileLru => self.sample_expiring(SAMPLES, &evictable),
            EvictionPolicy::VolatileTtl => self
                .deadlines
                .earliest_places(MAX_PROBES)
                .flat_map(|place| self.indexed(place))
                .find(|entry| evictable(entry)),
        };
        victim.map(|entry| Box::from(entry.key()))
    }

    /// Of up to `samples` evictable keys at random buckets of the map, the
    /// one idle longest.
    fn sample_map(&self, samples: usize, evictable: &dyn Fn(&Entry) -> bool) -> Option<&Entry> {
        let buckets = self.map.num_buckets() as u64;
        if self.map.is_empty() || buckets == 0 {
            return None;
        }
        let candidates = (0..MAX_PROBES)
            .filter_map(|_| self.map.get_bucket((self.next_random() % buckets) as usize))
            .filter(|entry| evictable(entry))
            .take(samples);
        self.idlest(candidates)
    }

    /// Of up to `samples` evictable keys with a deadline, at random points
    /// of the deadline range, the one idle longest.
    fn sample_expiring(
        &self,
        samples: usize,
        evictable: &dyn Fn(&Entry) -> bool,
    ) -> Option<&Entry> {
        let candidates = (0..MAX_PROBES)
            .filter_map(|_| self.deadlines.at_random_point(self.next_random()))
            .flat_map(|place| self.indexed(place))
            .filter(|entry| evictable(entry))
            .take(samples);
        self.idlest(candidates)
    }

    /// The entry whose access clock is furthest behind the table's (wrapping
    /// arithmetic: a stamp is never ahead of the clock); under a policy that
    /// reads no clock (its entries have none), the first.
    fn idlest<'t>(&self, mut candidates: impl Iterator<Item = &'t Entry>) -> Option<&'t Entry> {
        if !self.policy.reads_access_clock() {
            return candidates.next();
        }
        let clock = access_clock_at(self.now_ms);
        candidates.max_by_key(|entry| clock.wrapping_sub(entry.access_clock()))
    }

    /// The next number of the table's xorshift generator: sampling needs
    /// spread, not secrecy.
    fn next_random(&self) -> u64 {
        let mut x = self.random.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random.set(x);
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Location;

    /// A table of `policy` that holds about `nr_keys` keys of 100-byte values.
    fn full_table(policy: EvictionPolicy, nr_keys: usize) -> Table {
        let mut sizing = Table::new(u64::MAX);
        for i in 0..nr_keys {
            sizing
                .set(format!("{i:06}").as_bytes(), &[0; 100])
                .expect("room");
        }
        let mut table = Table::new(sizing.memory_used_bytes());
        table.set_eviction_policy(policy);
        table
    }

    #[test]
    fn noeviction_refuses_and_every_other_policy_makes_room() {
        for policy in [
            EvictionPolicy::NoEviction,
            EvictionPolicy::AllKeysLru,
            EvictionPolicy::AllKeysRandom,
        ] {
            let mut table = full_table(policy, 1000);
            let mut refused = 0;
            for i in 0..5000 {
                if table.set(format!("{i:06}").as_bytes(), &[1; 100]).is_err() {
                    refused += 1;
                }
                assert!(table.memory_used_bytes() <= table.memory_limit_bytes);
            }
            let evicted = table.take_evicted();
            match policy {
                EvictionPolicy::NoEviction => {
                    assert!(refused > 3000, "{refused}");
                    assert!(evicted.is_empty());
                }
                _ => {
                    assert_eq!(refused, 0, "{}", policy.name());
                    assert_eq!(evicted.len() as u64, table.stats().evicted_keys);
                    assert!(evicted.len() > 3000, "{}: {}", policy.name(), evicted.len());
                }
            }
        }
    }

    #[test]
    fn lru_keeps_the_keys_read_most_recently() {
        let mut table = full_table(EvictionPolicy::AllKeysLru, 1000);
        for i in 0..1000 {
            table
                .set(format!("{i:06}").as_bytes(), &[1; 100])
                .expect("room");
        }
        // Keys 0..100 are read at every later second; the rest are not, and
        // 1000 new keys push the table past its limit. Sampled LRU is an
        // approximation (a sample of five may hold only keys as recent as a
        // hot one, and the map's bucket order differs from run to run), so a
        // hot key may rarely go; the cold ones must go first by far.
        for second in 1..=20u64 {
            table.set_clock(second * ACCESS_CLOCK_MS);
            for i in 0..100 {
                let _ = table.get(format!("{i:06}").as_bytes());
            }
            for i in 0..50 {
                let key = format!("new-{second}-{i}");
                table.set(key.as_bytes(), &[2; 100]).expect("evicts");
            }
        }
        let present = |range: std::ops::Range<usize>| {
            range
                .filter(|i| table.peek(format!("{i:06}").as_bytes()).is_some())
                .count()
        };
        let (hot, cold) = (present(0..100), present(100..1000));
        assert!(
            hot >= 95,
            "only {hot} of the 100 keys read every second are left"
        );
        assert!(
            cold <= 100,
            "{cold} of the 900 keys never read again are still there"
        );
    }

    #[test]
    fn volatile_policies_evict_only_keys_with_a_deadline() {
        for policy in [
            EvictionPolicy::VolatileLru,
            EvictionPolicy::VolatileRandom,
            EvictionPolicy::VolatileTtl,
        ] {
            let mut table = full_table(policy, 1000);
            for i in 0..500 {
                table
                    .set(format!("plain-{i}").as_bytes(), &[0; 100])
                    .expect("room");
                table
                    .set_expiring(format!("ttl-{i}").as_bytes(), &[0; 100], 1000 + i)
                    .expect("room");
            }
            let mut refused = 0;
            for i in 0..2000 {
                refused += usize::from(
                    table
                        .set(format!("more-{i}").as_bytes(), &[0; 100])
                        .is_err(),
                );
            }
            let evicted = table.take_evicted();
            assert!(
                refused > 0,
                "{}: once the keys with a deadline are gone",
                policy.name()
            );
            assert_eq!(table.stats().expires, 0, "{}", policy.name());
            assert!(
                evicted.iter().all(|key| key.starts_with(b"ttl-")),
                "{}",
                policy.name()
            );
            for i in 0..500 {
                assert!(table.peek(format!("plain-{i}").as_bytes()).is_some());
            }
        }
        let mut table = full_table(EvictionPolicy::VolatileTtl, 10);
        table.set_expiring(b"late", &[0; 100], 9000).expect("room");
        table.set_expiring(b"soon", &[0; 100], 10).expect("room");
        for i in 0..20 {
            let _ = table.set(format!("k{i}").as_bytes(), &[0; 100]);
        }
        assert_eq!(
            table.take_evicted()[0],
            Box::from(&b"soon"[..]),
            "nearest deadline first"
        );
    }

    /// What the table's entries hold, counted afresh.
    fn entries_allocated_bytes(table: &Table) -> u64 {
        table.entries().map(|e| e.allocated_bytes() as u64).sum()
    }

    #[test]
    fn entries_carry_an_access_clock_only_under_an_lru_policy() {
        for policy in [
            EvictionPolicy::NoEviction,
            EvictionPolicy::AllKeysLru,
            EvictionPolicy::VolatileLru,
            EvictionPolicy::AllKeysRandom,
            EvictionPolicy::VolatileRandom,
            EvictionPolicy::VolatileTtl,
        ] {
            let mut table = Table::new(u64::MAX);
            table.set_eviction_policy(policy);
            table.set_clock(7 * ACCESS_CLOCK_MS);
            table.set(b"plain", &[0; 20]).expect("room");
            table.set_expiring(b"ttl", &[0; 20], 1000).expect("room");
            let _ = table.get(b"plain");
            let lru = policy.reads_access_clock();
            for entry in table.entries() {
                let stamp = entry.access_stamp();
                assert_eq!(stamp, lru.then_some(7), "{}: {entry:?}", policy.name());
            }
            assert_eq!(table.entry_bytes, entries_allocated_bytes(&table));
        }
    }

    #[test]
    fn entries_loaded_before_the_policy_is_set_are_rebuilt_to_fit_it() {
        let mut table = Table::on_disk(u64::MAX);
        for i in 0..100u64 {
            let location = Location {
                file: 0,
                offset: 4096 * i,
                len: 100,
                check: crate::entry::ValueCheck::Crc(1),
            };
            let key = format!("{i:016}");
            table.load_on_disk(key.as_bytes(), location, 1, (i % 2 == 0).then_some(5000));
        }
        let unclocked = table.memory_used_bytes();
        table.set_clock(3 * ACCESS_CLOCK_MS);
        table.set_eviction_policy(EvictionPolicy::AllKeysLru);
        assert!(table.entries().all(|e| e.access_stamp() == Some(3)));
        assert_eq!(table.entry_bytes, entries_allocated_bytes(&table));
        assert!(
            table.memory_used_bytes() > unclocked,
            "32-byte entries became 36"
        );
        assert_eq!(table.stats().expires, 50);
        table.set_eviction_policy(EvictionPolicy::VolatileTtl);
        assert!(table.entries().all(|e| e.access_stamp().is_none()));
        assert_eq!(table.memory_used_bytes(), unclocked);
        assert_eq!(table.stats().keys, 100);
    }

    #[test]
    fn a_key_a_reply_holds_is_not_evicted() {
        let mut table = full_table(EvictionPolicy::AllKeysRandom, 10);
        table.set(b"held", &[0; 100]).expect("room");
        let reply = table.get(b"held").expect("read").expect("found").clone();
        for i in 0..100 {
            let _ = table.set(format!("k{i}").as_bytes(), &[0; 100]);
        }
        assert!(table.peek(b"held").is_some());
        drop(reply);
    }
}
