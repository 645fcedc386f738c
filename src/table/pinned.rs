//! Values the table has let go of while someone else still holds them.
//!
//! Stored entries are shared (`crate::entry::Entry`, a reference-counted
//! key, value and version): a GET's result references the table's entry
//! instead of copying its value (`proto::results`). When the table then drops
//! its reference — an overwrite, a delete, an aborted batch's undo — the
//! entry, and so its value, lives on for as long as anyone else holds it: a
//! reply not yet written
//! (on this shard, or on the shard whose connection asked for it), a batch's
//! undo log, a compaction snapshot. A client that sends GETs of large values and
//! never reads its replies would otherwise keep any number of them alive outside
//! the table's accounting, and so outside `--max-memory-bytes`.
//!
//! So the table hands every entry it drops to [`PinnedValues::displace`]. An
//! entry nobody else holds is freed at once. One someone else still holds is
//! kept here, with the bytes the allocator holds for it counted in
//! [`PinnedValues::bytes`],
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
//! frees landing on other shards' threads. Instead the owner looks: an entry
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

use crate::entry::Entry;
use hashbrown::HashMap;

/// Bytes charged per pinned entry on top of what the allocator holds for it:
/// its slot in the list (8 bytes) and in the position index (16 bytes and a
/// control byte, at most 8/7 of them per entry), with room for both to grow.
pub const PINNED_OVERHEAD_BYTES: u64 = 64;

/// Entries held by others after the table let go of them.
#[derive(Debug, Default)]
pub struct PinnedValues {
    values: Vec<Entry>,
    /// Each kept entry's index in `values`, by its address (unique while the
    /// entry is alive, and this list keeps it alive).
    positions: HashMap<usize, usize>,
    bytes: u64,
    /// Where the next windowed sweep starts.
    cursor: usize,
}

/// What a kept entry counts against the memory limit.
pub fn pinned_cost(entry: &Entry) -> u64 {
    entry.allocated_bytes() as u64 + PINNED_OVERHEAD_BYTES
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

    /// Takes an entry the table no longer holds: frees it now if nobody else
    /// holds it, else keeps it (and counts it) until a sweep finds it free.
    pub fn displace(&mut self, value: Entry) {
        if !value.is_shared() {
            return; // the last reference: freed here
        }
        let at = value.address();
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

    /// Whether a kept entry points into log file `file` (the disk engine
    /// keeps a file open while one does).
    pub fn point_into(&self, file: u32) -> bool {
        self.values
            .iter()
            .any(|value| value.location().is_some_and(|at| at.file == file))
    }

    /// Stops keeping `value`, which is going back into the table.
    pub fn take_back(&mut self, value: &Entry) {
        if let Some(&i) = self.positions.get(&value.address()) {
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
            if !self.values[i].is_shared() {
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
        self.positions.remove(&value.address());
        if let Some(moved) = self.values.get(i) {
            self.positions.insert(moved.address(), i);
        }
        let cost = pinned_cost(&value);
        self.bytes -= cost;
        cost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::live;

    fn value(len: usize) -> Entry {
        Entry::new(b"k", &vec![7u8; len], 1)
    }

    fn cost(len: usize) -> u64 {
        pinned_cost(&value(len))
    }

    #[test]
    fn a_value_nobody_else_holds_is_freed_at_once() {
        let live_before = live::count();
        let mut pinned = PinnedValues::default();
        pinned.displace(value(100));
        assert_eq!(live::count(), live_before, "freed");
        assert_eq!((pinned.len(), pinned.bytes()), (0, 0));
    }

    #[test]
    fn a_held_value_counts_until_its_last_other_holder_lets_go_and_a_sweep_runs() {
        let live_before = live::count();
        let mut pinned = PinnedValues::default();
        let reply = value(1000);
        pinned.displace(reply.clone());
        assert_eq!(pinned.bytes(), cost(1000));
        assert_eq!(
            pinned.bytes(),
            reply.allocated_bytes() as u64 + PINNED_OVERHEAD_BYTES
        );
        assert_eq!(pinned.sweep(usize::MAX), 0, "still held by the reply");
        drop(reply);
        assert_eq!(
            live::count(),
            live_before + 1,
            "the list keeps it until a sweep"
        );
        assert_eq!(pinned.sweep(usize::MAX), cost(1000));
        assert_eq!(
            live::count(),
            live_before,
            "the sweep dropped the last reference"
        );
        assert_eq!((pinned.len(), pinned.bytes()), (0, 0));
    }

    #[test]
    fn take_back_forgets_a_value_returning_to_the_table() {
        let mut pinned = PinnedValues::default();
        let (a, b, c) = (value(1), value(200), value(3000));
        for v in [&a, &b, &c] {
            pinned.displace(v.clone());
        }
        pinned.take_back(&a);
        pinned.take_back(&value(1)); // an equal entry that was never kept
        assert_eq!(pinned.len(), 2);
        assert_eq!(pinned.bytes(), cost(200) + cost(3000));
        assert_eq!(a.ref_count(), 1, "the list let go of it");
        drop((b, c));
        assert_eq!(pinned.sweep(usize::MAX), cost(200) + cost(3000));
    }

    #[test]
    fn windowed_sweeps_look_at_each_value_once_per_round_and_free_every_released_one() {
        let mut pinned = PinnedValues::default();
        let holders: Vec<Entry> = (1..=10).map(|i| value(i * 100)).collect();
        for v in &holders {
            pinned.displace(v.clone());
        }
        // Release every other value; hold on to the rest.
        let kept: Vec<Entry> = holders.into_iter().step_by(2).collect();
        let mut freed = 0;
        for _ in 0..4 {
            freed += pinned.sweep(3);
        }
        assert_eq!(
            freed,
            [200, 400, 600, 800, 1000].map(cost).iter().sum::<u64>()
        );
        assert_eq!(pinned.len(), 5);
        // The position index still finds every kept value.
        for v in &kept {
            pinned.take_back(v);
        }
        assert_eq!((pinned.len(), pinned.bytes()), (0, 0));
    }
}
