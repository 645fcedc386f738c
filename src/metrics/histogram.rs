//! A fixed-bucket histogram that one shard writes and any shard reads: the
//! shape Prometheus wants (a count per upper bound, a sum), in atomics.
//!
//! One writer per histogram — the shard it belongs to — so an observation is
//! a relaxed load and store per cell, not a locked read-modify-write: no
//! other thread ever writes these cells, so no increment can be lost, and a
//! reader on another shard sees each cell's latest value (or one observation
//! behind). A reader may see a bucket count that already includes an
//! observation whose sum does not yet; the page derives `_count` from the
//! buckets, so count and buckets always agree.

use std::sync::atomic::{AtomicU64, Ordering};

/// Adds `n` to a cell only its owner writes.
fn add(cell: &AtomicU64, n: u64) {
    cell.store(
        cell.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// The bucket an observation of `value` falls in: the first whose bound
/// holds it, or the last (+Inf).
pub fn bucket_of(bounds: &[u64], value: u64) -> usize {
    bounds.partition_point(|&bound| bound < value)
}

/// Counts per bucket and the sum of what was observed, in the unit of the
/// bounds.
#[derive(Debug)]
pub struct SharedHistogram {
    bounds: &'static [u64],
    /// One per bound, then +Inf; not cumulative.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

/// What a reader takes from a [`SharedHistogram`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramReading {
    pub bounds: &'static [u64],
    /// One per bound, then +Inf; not cumulative.
    pub counts: Vec<u64>,
    pub sum: u64,
}

impl SharedHistogram {
    pub fn new(bounds: &'static [u64]) -> SharedHistogram {
        SharedHistogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    pub fn bounds(&self) -> &'static [u64] {
        self.bounds
    }

    /// Records `n` observations of `value` that fall in `bucket`
    /// ([`bucket_of`]). Only the owning shard may call it.
    pub fn observe_in(&self, bucket: usize, value: u64, n: u64) {
        add(&self.counts[bucket], n);
        add(&self.sum, value.wrapping_mul(n));
    }

    /// Replaces the contents with a copy the owner keeps elsewhere (counts
    /// per bucket, not cumulative). Only the owning shard may call it.
    pub fn store(&self, counts: &[u64], sum: u64) {
        for (cell, count) in self.counts.iter().zip(counts) {
            cell.store(*count, Ordering::Relaxed);
        }
        self.sum.store(sum, Ordering::Relaxed);
    }

    pub fn read(&self) -> HistogramReading {
        HistogramReading {
            bounds: self.bounds,
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

impl HistogramReading {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_holds_them() {
        static BOUNDS: [u64; 3] = [10, 20, 40];
        let histogram = SharedHistogram::new(&BOUNDS);
        for (value, n) in [(10, 1), (11, 2), (40, 1), (41, 3)] {
            histogram.observe_in(bucket_of(&BOUNDS, value), value, n);
        }
        let reading = histogram.read();
        assert_eq!(reading.counts, [1, 2, 1, 3]);
        assert_eq!(reading.sum, 10 + 22 + 40 + 123);
        assert_eq!(reading.count(), 7);
    }
}
