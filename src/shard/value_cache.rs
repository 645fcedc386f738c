//! The disk engine's cache of hot values: copies of values a shard read from
//! its log, kept by [`Location`] so the next request for the same value is
//! answered from memory instead of another read.
//!
//! Owned by one shard ([`crate::shard::Shard`]), used by its read path
//! (`shard::values`): a read looks here first ([`ValueCache::get`]) and offers
//! what it read from disk ([`ValueCache::offer`]). No I/O, no awaits.
//!
//! **Never stale.** A location names bytes that never change: a log file is
//! only appended to while the server runs, a key written again gets a new
//! location, and compaction moves values to a new file (new locations; the
//! old copies are never asked for again and age out). So a location (file
//! number, offset, length) is never reused while the server runs: files are
//! append-only and their numbers only grow, from 0 at start, when the cache
//! is empty. Every copy was checked when it was read (by its record or its
//! CRC-32, `log::values::WantedValue`), so a copy found here *is* the value
//! its location names; the location needs no checksum to be unique.
//! Nothing is ever invalidated.
//!
//! **Admitted on the second read.** A value read once is only remembered,
//! as a 32-bit fingerprint of its location in a fixed table (the
//! *doorkeeper*, as in TinyLFU); a read that finds its fingerprint there
//! copies the value in. A scan that reads many values once each therefore
//! leaves the cache as it was, instead of flushing the hot values out.
//!
//! **Bounded in bytes.** Each copy counts what the allocator holds for it
//! plus `SLOT_OVERHEAD_BYTES` (about 115) of bookkeeping; the doorkeeper's
//! table is taken off the budget first, so the whole structure stays within
//! it. Eviction is CLOCK (`ValueCache::make_room` says why).

use crate::allocator;
use crate::entry::Location;
use std::collections::HashMap;

/// Bookkeeping counted per cached value besides its bytes: its slot and an
/// index entry (with the hash map's control byte, at a load as low as one
/// half just after it grows).
const SLOT_OVERHEAD_BYTES: u64 = (std::mem::size_of::<Option<Slot>>()
    + 2 * (std::mem::size_of::<(Location, usize)>() + 1)) as u64;

/// One value is admitted only if it takes at most this share of the cache
/// (1/4): a single large value must not push out most of the hot ones.
const MAX_VALUE_SHARE: u64 = 4;

/// Budget bytes per doorkeeper fingerprint: 4 bytes per 256, 1.6 % of the
/// budget, remembers as many recent reads as the cache holds values of 256
/// bytes, so a value read about as often as the coldest cached one gets in.
const BUDGET_BYTES_PER_FINGERPRINT: u64 = 256;
/// Doorkeeper size bounds, in fingerprints (a power of two between).
const MIN_FINGERPRINTS: u64 = 64;
const MAX_FINGERPRINTS: u64 = 1 << 20;

/// Fixed seeds: where a location lands depends only on the location, so
/// the unit tests (and two runs) behave alike.
const HASH_SEEDS: [u64; 4] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
];

fn hasher() -> ahash::RandomState {
    let [a, b, c, d] = HASH_SEEDS;
    ahash::RandomState::with_seeds(a, b, c, d)
}

/// A cached copy.
#[derive(Debug)]
struct Slot {
    location: Location,
    value: Box<[u8]>,
    /// CLOCK's bit: set by a hit, cleared as the hand passes.
    referenced: bool,
}

/// Fingerprints of recently read locations, one per cell of a direct-mapped
/// table: a newer read that lands in the same cell replaces the older one,
/// so the table forgets on its own and never grows.
#[derive(Debug)]
struct Doorkeeper {
    cells: Box<[u32]>,
}

impl Doorkeeper {
    fn with_budget(budget_bytes: u64) -> Doorkeeper {
        let wanted =
            (budget_bytes / BUDGET_BYTES_PER_FINGERPRINT).clamp(MIN_FINGERPRINTS, MAX_FINGERPRINTS);
        // The largest power of two not over `wanted`: a mask picks the cell.
        let nr_cells = 1u64 << (63 - wanted.leading_zeros());
        Doorkeeper {
            cells: vec![0; nr_cells as usize].into_boxed_slice(),
        }
    }

    fn bytes(&self) -> u64 {
        (self.cells.len() * std::mem::size_of::<u32>()) as u64
    }

    /// Whether `hash`'s location was read recently (then it is forgotten:
    /// it is about to be cached); if not, remembers it.
    fn seen_before(&mut self, hash: u64) -> bool {
        let cell = &mut self.cells[hash as usize & (self.cells.len() - 1)];
        // The high half, never 0 (0 marks an empty cell).
        let fingerprint = (hash >> 32) as u32 | 1;
        if *cell == fingerprint {
            *cell = 0;
            return true;
        }
        *cell = fingerprint;
        false
    }
}

/// A shard's cache of values read from disk (see the module docs).
#[derive(Debug)]
pub struct ValueCache {
    /// Bytes the copies may take: the budget less the doorkeeper's table.
    value_budget_bytes: u64,
    /// Bytes the copies take now, as [`ValueCache::cost`] counts them.
    used_bytes: u64,
    /// None: a free slot (its index is in `free`).
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// Keyed by location, unique without a checksum (see the module docs).
    index: HashMap<Location, usize, ahash::RandomState>,
    /// CLOCK's hand: the next slot eviction looks at.
    hand: usize,
    /// None when the cache is disabled (a budget of 0).
    doorkeeper: Option<Doorkeeper>,
    hits: u64,
}

impl ValueCache {
    /// A cache of at most `budget_bytes` (0: disabled, it keeps nothing).
    pub fn new(budget_bytes: u64) -> ValueCache {
        let doorkeeper = (budget_bytes > 0).then(|| Doorkeeper::with_budget(budget_bytes));
        let doorkeeper_bytes = doorkeeper.as_ref().map_or(0, Doorkeeper::bytes);
        ValueCache {
            value_budget_bytes: budget_bytes.saturating_sub(doorkeeper_bytes),
            used_bytes: 0,
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::with_hasher(hasher()),
            hand: 0,
            doorkeeper,
            hits: 0,
        }
    }

    /// The copy of the value at `location`, if cached (counted as a hit).
    pub fn get(&mut self, location: Location) -> Option<&[u8]> {
        let &at = self.index.get(&location)?;
        let slot = self.slots[at]
            .as_mut()
            .expect("the index names only occupied slots");
        slot.referenced = true;
        self.hits += 1;
        Some(&slot.value)
    }

    /// Offers `value`, just read from disk at `location` (and checked
    /// against it): cached if this is its second read since the doorkeeper
    /// last forgot it, and it is not too large; else remembered.
    pub fn offer(&mut self, location: Location, value: &[u8]) {
        let cost = Self::cost(value.len());
        if cost > self.value_budget_bytes / MAX_VALUE_SHARE || self.index.contains_key(&location) {
            return;
        }
        let hash = hasher().hash_one(location);
        let Some(doorkeeper) = self.doorkeeper.as_mut() else {
            return;
        };
        if !doorkeeper.seen_before(hash) {
            return;
        }
        self.make_room(cost);
        let slot = Slot {
            location,
            value: value.into(),
            referenced: false,
        };
        let at = match self.free.pop() {
            Some(at) => {
                self.slots[at] = Some(slot);
                at
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.index.insert(location, at);
        self.used_bytes += cost;
    }

    /// Evicts until `cost` more bytes fit. CLOCK rather than sampling: a hit
    /// only sets a bit (hits are the path that must stay cheap), eviction
    /// needs no random generator and is deterministic, and a value hit since
    /// the hand last passed survives one more turn, which with the
    /// doorkeeper's admission is close enough to LRU for a cache that holds
    /// only values read at least twice.
    fn make_room(&mut self, cost: u64) {
        // Two turns of the hand at most: the first clears every bit.
        let mut steps = 2 * self.slots.len() + 1;
        while self.used_bytes + cost > self.value_budget_bytes && steps > 0 {
            steps -= 1;
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let at = self.hand;
            self.hand += 1;
            match self.slots[at].as_mut() {
                None => {}
                Some(slot) if slot.referenced => slot.referenced = false,
                Some(_) => self.evict(at),
            }
        }
    }

    fn evict(&mut self, at: usize) {
        if let Some(slot) = self.slots[at].take() {
            self.index.remove(&slot.location);
            self.used_bytes -= Self::cost(slot.value.len());
            self.free.push(at);
        }
    }

    /// What a copy of `len` bytes counts against the budget.
    fn cost(len: usize) -> u64 {
        let held = match len {
            0 => 0,
            n => allocator::held_bytes(n) as u64,
        };
        held + SLOT_OVERHEAD_BYTES
    }

    /// Bytes the cached copies take (doorkeeper not included).
    pub fn bytes(&self) -> u64 {
        self.used_bytes
    }

    /// Requests answered from the cache since start.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Values cached now.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::ValueCheck;

    fn at(offset: u64) -> Location {
        Location {
            file: 0,
            offset,
            len: 100,
            check: ValueCheck::Crc(offset as u32),
        }
    }

    fn value(offset: u64) -> Vec<u8> {
        vec![offset as u8; 100]
    }

    /// Reads `location` through the cache as the shard does: a hit, or a
    /// "disk read" offered to it. Returns whether it was a hit.
    fn read(cache: &mut ValueCache, offset: u64) -> bool {
        if let Some(bytes) = cache.get(at(offset)) {
            assert_eq!(bytes, &value(offset)[..], "the copy of offset {offset}");
            return true;
        }
        cache.offer(at(offset), &value(offset));
        false
    }

    #[test]
    fn a_value_is_cached_on_its_second_read_and_hit_on_its_third() {
        let mut cache = ValueCache::new(1 << 20);
        assert!(!read(&mut cache, 7));
        assert!(cache.is_empty(), "one read only remembers the location");
        assert!(!read(&mut cache, 7));
        assert_eq!(cache.len(), 1);
        assert!(read(&mut cache, 7));
        assert_eq!(cache.hits(), 1);
    }

    #[test]
    fn a_scan_of_values_read_once_caches_nothing_and_keeps_the_hot_ones() {
        let mut cache = ValueCache::new(64 << 10);
        for _ in 0..2 {
            read(&mut cache, 1);
        }
        let before = (cache.len(), cache.bytes());
        for offset in 1000..100_000 {
            read(&mut cache, offset);
        }
        assert_eq!((cache.len(), cache.bytes()), before);
        assert!(read(&mut cache, 1), "the hot value survived the scan");
    }

    #[test]
    fn many_hot_values_stay_within_the_budget() {
        const BUDGET: u64 = 32 << 10;
        let mut cache = ValueCache::new(BUDGET);
        for offset in 0..5000 {
            read(&mut cache, offset);
            read(&mut cache, offset);
            assert!(cache.bytes() <= BUDGET, "{} bytes", cache.bytes());
        }
        let doorkeeper = cache.doorkeeper.as_ref().map_or(0, Doorkeeper::bytes);
        assert!(cache.bytes() + doorkeeper <= BUDGET);
        assert!(
            cache.len() > 10,
            "the cache filled ({} values)",
            cache.len()
        );
        assert_eq!(cache.len() as u64 * ValueCache::cost(100), cache.bytes());
    }

    #[test]
    fn eviction_spares_values_hit_since_the_hand_last_passed() {
        let mut cache = ValueCache::new(32 << 10);
        let per_value = ValueCache::cost(100);
        let room = cache.value_budget_bytes / per_value;
        for offset in 0..room {
            read(&mut cache, offset);
            read(&mut cache, offset);
        }
        assert_eq!(cache.len() as u64, room);
        assert!(read(&mut cache, 0), "value 0 is hit: its bit is set");
        // One more value: the hand passes value 0 (clearing its bit) and
        // evicts value 1, the first one not hit.
        read(&mut cache, room);
        read(&mut cache, room);
        assert_eq!(cache.len() as u64, room);
        assert!(read(&mut cache, 0), "value 0 stayed");
        assert!(!read(&mut cache, 1), "value 1 was evicted");
    }

    #[test]
    fn a_value_over_a_quarter_of_the_cache_is_not_cached() {
        let mut cache = ValueCache::new(64 << 10);
        let big = vec![1u8; 20 << 10];
        let location = Location {
            file: 1,
            offset: 0,
            len: big.len() as u32,
            check: ValueCheck::Crc(1),
        };
        for _ in 0..3 {
            assert!(cache.get(location).is_none());
            cache.offer(location, &big);
        }
        assert!(cache.is_empty());
    }

    #[test]
    fn a_budget_of_zero_caches_nothing() {
        let mut cache = ValueCache::new(0);
        for _ in 0..3 {
            assert!(!read(&mut cache, 5));
        }
        assert_eq!((cache.len(), cache.bytes(), cache.hits()), (0, 0, 0));
    }

    #[test]
    fn the_doorkeeper_is_a_power_of_two_within_its_bounds() {
        for budget in [1, 1000, 64 << 10, 32 << 20, 1 << 40] {
            let cells = Doorkeeper::with_budget(budget).cells.len() as u64;
            assert!(cells.is_power_of_two(), "{budget}: {cells}");
            assert!((MIN_FINGERPRINTS..=MAX_FINGERPRINTS).contains(&cells));
        }
    }
}
