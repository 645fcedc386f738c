//! Values the table has let go of while someone else still holds them.
//!
//! Stored values are shared (`Arc<[u8]>`): a GET's result references the
//! table's copy instead of copying it (`proto::results`). When the table then
//! drops its reference — an overwrite, a delete, an aborted batch's undo — the
//! value lives on for as long as anyone else holds it: a reply not yet written
//! (on this shard, or on the shard whose connection asked for it), a batch's
//! undo log, a compaction snapshot. A client that sends GETs of large values and
//! never reads its replies would otherwise keep any number of them alive outside
//! the table's accounting, and so outside `--max-memory-bytes`.
//!
//! So the table hands every value it drops to [`PinnedValues::displace`]. A
//! value nobody else holds is freed at once, as before. A value someone else
//! still holds is kept here, with its bytes counted in [`PinnedValues::bytes`],
//! which the table adds to its own memory when it checks the limit; and
//! because this list keeps one reference, the last reference to go is always
//! this list's, dropped by [`PinnedValues::sweep`] on the shard's own thread.
//!
//! A value read through another shard travels there inside the forwarded
//! results, but it is pinned here, by the shard that owns the key: this table
//! let go of it and its memory is charged to this shard's limit; the remote
//! reply merely holds a reference, and dropping it only lowers the count.
//!
//! Why a lazy sweep rather than being told: the other holders are replies on
//! any shard's connections. Exact accounting would need every value to carry a
//! counter of its owning shard, updated by whichever thread drops the last
//! reference — a different value type through results, log and table, and
//! frees landing on other shards' threads. Instead the owner looks: a value
//! whose reference count has fallen to 1 (this list's) is free to go. Sweeps
//! run before a write would be refused over the limit and on a periodic timer
//! (`server::reclaim`), each looking at a bounded number of values — a
//! round-robin window once the list is longer than the budget — so a shard
//! with a huge list never stalls on it. The price is lag: memory counts as
//! pinned until the next sweep after its last reply is gone.
//!
//! Since a write that replaces a value someone still holds pins that value,
//! the table's limit check counts the pinning as growth (a same-size overwrite
//! would otherwise grow memory unchecked, which is exactly what stalled
//! readers exploited). Inside an ATOMIC batch the undo log holds each value it
//! may restore, so those values pass through this list as well.
//!
//! A value can come back: an aborted batch restores the value it overwrote,
//! which is pinned (the batch's own undo log held it). [`PinnedValues::take_back`]
//! removes it first, so a value is never both in the table and in this list.

use hashbrown::HashMap;
use std::sync::Arc;

/// Bytes charged per pinned value on top of its own: the value's reference
/// counts, its slot in the list and in the position index, allocator headers.
pub const PINNED_OVERHEAD_BYTES: u64 = 64;

/// Values held by others after the table let go of them.
#[derive(Debug, Default)]
pub struct PinnedValues {
    values: Vec<Arc<[u8]>>,
    /// Each kept value's index in `values`, by the address of its bytes (unique
    /// while the value is alive, and this list keeps it alive).
    positions: HashMap<usize, usize>,
    bytes: u64,
    /// Where the next windowed sweep starts.
    cursor: usize,
}

fn address(value: &Arc<[u8]>) -> usize {
    Arc::as_ptr(value) as *const u8 as usize
}

/// What a kept value counts against the memory limit.
pub fn pinned_cost(value: &[u8]) -> u64 {
    value.len() as u64 + PINNED_OVERHEAD_BYTES
}

impl PinnedValues {
    /// Memory held by kept values, as the memory limit counts it.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Number of kept values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Takes a value the table no longer holds: frees it now if nobody else
    /// holds it, else keeps it (and counts it) until a sweep finds it free.
    pub fn displace(&mut self, value: Arc<[u8]>) {
        if Arc::strong_count(&value) == 1 {
            return; // the last reference: freed here
        }
        let at = address(&value);
        if self.positions.contains_key(&at) {
            // Already kept (the table never holds a kept value, so this does not
            // happen); keeping it twice would keep its count above 1 for good.
            debug_assert!(false, "a pinned value was displaced again");
            return;
        }
        self.positions.insert(at, self.values.len());
        self.bytes += pinned_cost(&value);
        self.values.push(value);
    }

    /// Stops keeping `value`, which is going back into the table.
    pub fn take_back(&mut self, value: &Arc<[u8]>) {
        if let Some(&i) = self.positions.get(&address(value)) {
            self.remove_at(i);
        }
    }

    /// Frees kept values that nobody else holds any more, looking at no more
    /// than `budget` of them: all of them when they are that few, else the
    /// next window of a round-robin walk. Returns the bytes freed (as counted).
    pub fn sweep(&mut self, budget: usize) -> u64 {
        let (mut i, mut steps) = if self.values.len() <= budget {
            (0, usize::MAX)
        } else {
            (self.cursor, budget)
        };
        let mut freed = 0;
        // Walking up while removing with swap_remove: the value moved into slot
        // i comes from beyond i, so it is looked at next and nothing is skipped.
        while i < self.values.len() && steps > 0 {
            if Arc::strong_count(&self.values[i]) == 1 {
                freed += self.remove_at(i);
            } else {
                i += 1;
            }
            steps -= 1;
        }
        self.cursor = if i < self.values.len() { i } else { 0 };
        freed
    }

    /// Drops the kept reference at `i`; returns its cost.
    fn remove_at(&mut self, i: usize) -> u64 {
        let value = self.values.swap_remove(i);
        self.positions.remove(&address(&value));
        if let Some(moved) = self.values.get(i) {
            self.positions.insert(address(moved), i);
        }
        let cost = pinned_cost(&value);
        self.bytes -= cost;
        cost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(len: usize) -> Arc<[u8]> {
        Arc::from(vec![7u8; len])
    }

    #[test]
    fn a_value_nobody_else_holds_is_freed_at_once() {
        let mut pinned = PinnedValues::default();
        let v = value(100);
        let weak = Arc::downgrade(&v);
        pinned.displace(v);
        assert!(weak.upgrade().is_none(), "freed");
        assert_eq!((pinned.len(), pinned.bytes()), (0, 0));
    }

    #[test]
    fn a_held_value_counts_until_its_last_other_holder_lets_go_and_a_sweep_runs() {
        let mut pinned = PinnedValues::default();
        let reply = value(1000);
        let weak = Arc::downgrade(&reply);
        pinned.displace(reply.clone());
        assert_eq!(pinned.bytes(), 1000 + PINNED_OVERHEAD_BYTES);
        assert_eq!(pinned.sweep(usize::MAX), 0, "still held by the reply");
        drop(reply);
        assert!(weak.upgrade().is_some(), "the list keeps it until a sweep");
        assert_eq!(pinned.sweep(usize::MAX), 1000 + PINNED_OVERHEAD_BYTES);
        assert!(
            weak.upgrade().is_none(),
            "the sweep dropped the last reference"
        );
        assert_eq!((pinned.len(), pinned.bytes()), (0, 0));
    }

    #[test]
    fn take_back_forgets_a_value_returning_to_the_table() {
        let mut pinned = PinnedValues::default();
        let (a, b, c) = (value(1), value(2), value(3));
        for v in [&a, &b, &c] {
            pinned.displace(v.clone());
        }
        pinned.take_back(&a);
        pinned.take_back(&value(1)); // an equal value that was never kept
        assert_eq!(pinned.len(), 2);
        assert_eq!(pinned.bytes(), 2 + 3 + 2 * PINNED_OVERHEAD_BYTES);
        assert_eq!(Arc::strong_count(&a), 1, "the list let go of it");
        drop((b, c));
        assert_eq!(pinned.sweep(usize::MAX), 2 + 3 + 2 * PINNED_OVERHEAD_BYTES);
    }

    #[test]
    fn windowed_sweeps_look_at_each_value_once_per_round_and_free_every_released_one() {
        let mut pinned = PinnedValues::default();
        let holders: Vec<Arc<[u8]>> = (1..=10).map(value).collect();
        for v in &holders {
            pinned.displace(v.clone());
        }
        // Release every other value; hold on to the rest.
        let kept: Vec<Arc<[u8]>> = holders.into_iter().step_by(2).collect();
        let mut freed = 0;
        for _ in 0..4 {
            freed += pinned.sweep(3);
        }
        assert_eq!(freed, (2 + 4 + 6 + 8 + 10) + 5 * PINNED_OVERHEAD_BYTES);
        assert_eq!(pinned.len(), 5);
        // The position index still finds every kept value.
        for v in &kept {
            pinned.take_back(v);
        }
        assert_eq!((pinned.len(), pinned.bytes()), (0, 0));
    }
}
