//! What a shard's group commit did: how long each sync took and how many
//! records it made durable, as fixed-bucket histograms (Prometheus's shape:
//! cumulative counts per upper bound, a count and a sum). Written only by the
//! shard that owns the log; `/metrics` reads a published copy.

use std::time::Duration;

/// Upper bounds of the sync latency buckets, in microseconds.
pub const SYNC_MICROS_BOUNDS: [u64; 12] = [
    50, 100, 200, 300, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000,
];
/// Upper bounds of the records-per-sync buckets.
pub const RECORDS_BOUNDS: [u64; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024];

/// A histogram with fixed upper bounds; the last bucket is +Inf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative), one more than the bounds.
    pub counts: Vec<u64>,
    pub sum: u64,
}

impl Histogram {
    pub fn new(nr_bounds: usize) -> Histogram {
        Histogram {
            counts: vec![0; nr_bounds + 1],
            sum: 0,
        }
    }

    pub fn observe(&mut self, bounds: &[u64], value: u64) {
        let bucket = bounds.partition_point(|&bound| bound < value);
        self.counts[bucket] += 1;
        self.sum += value;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// The histograms of one shard's syncs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStats {
    /// Sync latency in microseconds, by [`SYNC_MICROS_BOUNDS`].
    pub micros: Histogram,
    /// Records made durable per sync, by [`RECORDS_BOUNDS`].
    pub records: Histogram,
}

impl Default for SyncStats {
    fn default() -> SyncStats {
        SyncStats {
            micros: Histogram::new(SYNC_MICROS_BOUNDS.len()),
            records: Histogram::new(RECORDS_BOUNDS.len()),
        }
    }
}

impl SyncStats {
    pub fn observe(&mut self, took: Duration, nr_records: u64) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.micros.observe(&SYNC_MICROS_BOUNDS, micros);
        self.records.observe(&RECORDS_BOUNDS, nr_records);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_holds_them() {
        let mut stats = SyncStats::default();
        stats.observe(Duration::from_micros(50), 1);
        stats.observe(Duration::from_micros(51), 3);
        stats.observe(Duration::from_secs(1), 5000);
        assert_eq!(&stats.micros.counts[..3], &[1, 1, 0]);
        assert_eq!(stats.micros.counts[SYNC_MICROS_BOUNDS.len()], 1);
        assert_eq!(stats.records.counts[0], 1);
        assert_eq!(stats.records.counts[2], 1);
        assert_eq!(stats.records.counts[RECORDS_BOUNDS.len()], 1);
        assert_eq!((stats.records.count(), stats.records.sum), (3, 5004));
    }
}
