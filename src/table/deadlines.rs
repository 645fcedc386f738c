//! The expire index: every key of a table that has a deadline, ordered by
//! deadline, so the active sweep finds the keys that are due without
//! looking at any other.
//!
//! Why an ordered index rather than Redis's sampling: the map is a hashbrown
//! table of entry pointers with no random access, and a walk of the whole
//! map to find a few expiring keys would cost time in proportion to the keys
//! without a deadline. Ordered by deadline, the sweep reads exactly the keys
//! that are due, oldest first, and stops at the first that is not; a key that
//! nobody reads again goes within one sweep tick of its deadline.
//!
//! The index holds a copy of each key (an entry clone would count as a
//! reference and pin the entry), so keys with a deadline cost their key bytes
//! again plus the tree's overhead ([`INDEX_OVERHEAD_BYTES`]); keys without one
//! cost nothing here. The table keeps the index in step with the map: every
//! entry that enters or leaves the map with a deadline enters or leaves the
//! index (`Table::count_in`, `Table::count_out`).

use crate::allocator;
use std::collections::BTreeSet;

/// What the table charges per indexed key on top of the key's copy: the
/// tree's (deadline, boxed key) element of 24 bytes, in B-tree nodes that are
/// at least half full, and their share of the node's edges.
pub const INDEX_OVERHEAD_BYTES: u64 = 64;

/// Keys with a deadline, by deadline.
#[derive(Debug, Default)]
pub struct DeadlineIndex {
    by_deadline: BTreeSet<(u64, Box<[u8]>)>,
    bytes: u64,
}

impl DeadlineIndex {
    /// Keys in the index: the keys that have a deadline.
    pub fn len(&self) -> usize {
        self.by_deadline.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_deadline.is_empty()
    }

    /// What the index holds, as the memory limit counts it.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn insert(&mut self, key: &[u8], deadline: u64) {
        if self.by_deadline.insert((deadline, Box::from(key))) {
            self.bytes += cost(key);
        }
    }

    pub fn remove(&mut self, key: &[u8], deadline: u64) {
        // The tuple borrows as itself only: build the owned probe.
        if self.by_deadline.remove(&(deadline, Box::from(key))) {
            self.bytes -= cost(key);
        }
    }

    /// Up to `budget` keys whose deadline is at or before `now_ms`, earliest
    /// first. They stay in the index: removing each from the table takes it
    /// out.
    pub fn due(&self, now_ms: u64, budget: usize) -> Vec<Box<[u8]>> {
        self.by_deadline
            .iter()
            .take_while(|(deadline, _)| *deadline <= now_ms)
            .take(budget)
            .map(|(_, key)| key.clone())
            .collect()
    }

    /// Up to `n` keys with the earliest deadlines, earliest first.
    pub fn earliest_keys(&self, n: usize) -> impl Iterator<Item = &[u8]> + '_ {
        self.by_deadline.iter().take(n).map(|(_, key)| &key[..])
    }

    /// The key at or after a random point (`random`) of the range from the
    /// earliest deadline to the latest, or the earliest key: a sample of the
    /// keys with a deadline, in O(log n).
    pub fn at_random_point(&self, random: u64) -> Option<&[u8]> {
        let (first, _) = self.by_deadline.first()?;
        let (last, _) = self.by_deadline.last()?;
        let span = last - first;
        let point = match span {
            u64::MAX => random,
            span => first + random % (span + 1),
        };
        let empty: Box<[u8]> = Box::default();
        self.by_deadline
            .range((point, empty)..)
            .chain(self.by_deadline.iter())
            .map(|(_, key)| &key[..])
            .next()
    }

    /// The earliest deadline in the index.
    pub fn earliest(&self) -> Option<u64> {
        self.by_deadline.first().map(|(deadline, _)| *deadline)
    }

    pub fn clear(&mut self) {
        self.by_deadline.clear();
        self.bytes = 0;
    }
}

/// What indexing `key` costs, as [`DeadlineIndex::bytes`] counts it: a
/// write that gives a key a deadline needs this much room too.
pub fn cost(key: &[u8]) -> u64 {
    let copy = match key.len() {
        0 => 0,
        n => allocator::held_bytes(n) as u64,
    };
    copy + INDEX_OVERHEAD_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_keys_come_earliest_first_up_to_the_budget() {
        let mut index = DeadlineIndex::default();
        index.insert(b"c", 30);
        index.insert(b"a", 10);
        index.insert(b"b", 20);
        index.insert(b"late", 1000);
        assert_eq!(
            index.due(25, 10),
            [Box::from(&b"a"[..]), Box::from(&b"b"[..])]
        );
        assert_eq!(index.due(1000, 1), [Box::from(&b"a"[..])]);
        assert_eq!(index.earliest(), Some(10));
        index.remove(b"a", 10);
        index.remove(b"a", 10);
        assert_eq!(index.len(), 3);
        assert_eq!(index.earliest(), Some(20));
    }

    #[test]
    fn the_bytes_follow_what_is_indexed() {
        let mut index = DeadlineIndex::default();
        index.insert(b"key", 5);
        index.insert(b"key", 5);
        assert_eq!(index.bytes(), cost(b"key"));
        index.remove(b"key", 6);
        assert_eq!(
            index.bytes(),
            cost(b"key"),
            "another deadline is another element"
        );
        index.remove(b"key", 5);
        assert_eq!((index.bytes(), index.len()), (0, 0));
    }
}
