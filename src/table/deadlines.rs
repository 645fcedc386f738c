//! The expire index: every key of a table that has a deadline, ordered by
//! deadline, so the active sweep finds the keys that are due without
//! looking at any other.
//!
//! Why an ordered index rather than Redis's sampling: a walk of the whole
//! map to find a few expiring keys would cost time in proportion to the keys
//! without a deadline. Ordered by deadline, the sweep reads exactly the keys
//! that are due, oldest first, and stops at the first that is not; a key that
//! nobody reads again goes within one sweep tick of its deadline.
//!
//! The index names a key by its hash in the table's map, not by a copy of
//! its bytes: the table finds the entry again with that hash and the
//! deadline (`Table::indexed`). An element is 16 bytes and a count, so a key
//! with a deadline costs [`INDEX_COST_BYTES`] here whatever its length, and a
//! key without one nothing. Two keys with the same hash and deadline share an
//! element, counted twice. The table keeps the index in step with the map:
//! every entry that enters or leaves the map with a deadline enters or leaves
//! the index (`Table::count_in`, `Table::count_out`).

use std::collections::BTreeMap;

/// What the table charges per indexed key: the tree's element, a
/// (deadline, hash) key of 16 bytes and a 4-byte count, in B-tree nodes of
/// eleven that are at least half full, and their share of the nodes' edges.
pub const INDEX_COST_BYTES: u64 = 40;

/// A place in the index: a deadline (Unix ms) and a key's hash in the map.
pub type Indexed = (u64, u64);

/// Keys with a deadline, by deadline.
#[derive(Debug, Default)]
pub struct DeadlineIndex {
    by_deadline: BTreeMap<Indexed, u32>,
    len: usize,
}

impl DeadlineIndex {
    /// Keys in the index: the keys that have a deadline.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// What the index holds, as the memory limit counts it.
    pub fn bytes(&self) -> u64 {
        self.len as u64 * INDEX_COST_BYTES
    }

    /// A key of hash `hash` now has `deadline`.
    pub fn insert(&mut self, hash: u64, deadline: u64) {
        *self.by_deadline.entry((deadline, hash)).or_default() += 1;
        self.len += 1;
    }

    /// A key of hash `hash` no longer has `deadline`.
    pub fn remove(&mut self, hash: u64, deadline: u64) {
        let place = (deadline, hash);
        let Some(count) = self.by_deadline.get_mut(&place) else {
            debug_assert!(false, "removing a key the expire index does not hold");
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.by_deadline.remove(&place);
        }
        self.len -= 1;
    }

    /// Up to `budget` places whose deadline is at or before `now_ms`,
    /// earliest first. They stay in the index: removing each key from the
    /// table takes it out.
    pub fn due(&self, now_ms: u64, budget: usize) -> Vec<Indexed> {
        self.by_deadline
            .keys()
            .take_while(|(deadline, _)| *deadline <= now_ms)
            .take(budget)
            .copied()
            .collect()
    }

    /// Up to `n` places with the earliest deadlines, earliest first.
    pub fn earliest_places(&self, n: usize) -> impl Iterator<Item = Indexed> + '_ {
        self.by_deadline.keys().take(n).copied()
    }

    /// The place at or after a random point (`random`) of the range from the
    /// earliest deadline to the latest, or the earliest: a sample of the keys
    /// with a deadline, in O(log n).
    pub fn at_random_point(&self, random: u64) -> Option<Indexed> {
        let (&(first, _), _) = self.by_deadline.first_key_value()?;
        let (&(last, _), _) = self.by_deadline.last_key_value()?;
        let point = match last - first {
            u64::MAX => random,
            span => first + random % (span + 1),
        };
        self.by_deadline
            .range((point, 0)..)
            .chain(self.by_deadline.iter())
            .map(|(place, _)| *place)
            .next()
    }

    /// The earliest deadline in the index.
    pub fn earliest(&self) -> Option<u64> {
        self.by_deadline
            .first_key_value()
            .map(|((deadline, _), _)| *deadline)
    }

    pub fn clear(&mut self) {
        self.by_deadline.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_places_come_earliest_first_up_to_the_budget() {
        let mut index = DeadlineIndex::default();
        index.insert(3, 30);
        index.insert(1, 10);
        index.insert(2, 20);
        index.insert(9, 1000);
        assert_eq!(index.due(25, 10), [(10, 1), (20, 2)]);
        assert_eq!(index.due(1000, 1), [(10, 1)]);
        assert_eq!(index.earliest(), Some(10));
        index.remove(1, 10);
        assert_eq!(index.len(), 3);
        assert_eq!(index.earliest(), Some(20));
    }

    #[test]
    fn keys_sharing_a_hash_and_a_deadline_are_counted_each() {
        let mut index = DeadlineIndex::default();
        index.insert(7, 5);
        index.insert(7, 5);
        assert_eq!((index.len(), index.bytes()), (2, 2 * INDEX_COST_BYTES));
        assert_eq!(index.due(5, 10), [(5, 7)], "one place for both");
        index.remove(7, 5);
        assert_eq!(index.due(5, 10), [(5, 7)], "the other key is still there");
        index.remove(7, 5);
        assert_eq!((index.len(), index.bytes(), index.earliest()), (0, 0, None));
    }
}
