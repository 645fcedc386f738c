//! What the server measures for `/metrics`, and how each figure gets from the
//! shard it describes to whichever shard renders the page
//! (`crate::http::metrics`).
//!
//! Shard state stays unshared: every per-shard figure has exactly one writer,
//! its shard, and reaches readers in one of three ways.
//!
//! - **In place**, in single-writer atomics that any shard may read: request
//!   latency ([`latency`], written by the shard's connections as rounds
//!   finish) and open HTTP connections.
//! - **Published**: copied from the shard's own state into its atomics by
//!   [`Metrics::publish`], on the shard's thread, every
//!   [`PUBLISH_PERIOD`] and whenever that shard serves `/metrics`: the log's
//!   size and sync histograms (which the log writer keeps), the disk
//!   engine's value read latency (which the shard keeps), and the error
//!   elements the shard's thread has written by code
//!   ([`crate::proto::error::errors_written`]). Another shard's published
//!   figures may be up to one period old.
//! - **At scrape time, through the request path**: table figures, from one
//!   STATS that every shard answers with its share.
//!
//! Server-wide figures live elsewhere: connections open, accepted and refused
//! in [`crate::server::state::ServerState`], the `process_*` figures in
//! [`process`] (read from `/proc` at scrape time).
//!
//! - [`histogram`]: the single-writer atomic histogram.
//! - [`latency`]: request latency per command family.
//! - [`process`]: the standard process figures.

pub mod histogram;
pub mod latency;
pub mod process;

use crate::log::sync_stats::{Histogram, RECORDS_BOUNDS, SYNC_MICROS_BOUNDS};
use crate::proto::ErrorCode;
use crate::shard::values::DISK_READ_MICROS_BOUNDS;
use crate::shard::{Shard, ShardId};
use histogram::SharedHistogram;
use latency::RequestLatency;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often each shard publishes the figures it keeps to itself.
pub const PUBLISH_PERIOD: Duration = Duration::from_secs(1);

/// One shard's figures (see the module docs for who writes which).
#[derive(Debug)]
pub struct ShardMetrics {
    /// Bytes of records in the log file (published).
    pub log_bytes: AtomicU64,
    /// Open HTTP connections (in place).
    pub http_connections: AtomicU64,
    /// Each log sync's latency, in microseconds (published).
    pub log_sync_micros: SharedHistogram,
    /// Records each log sync made durable (published).
    pub log_records_per_sync: SharedHistogram,
    /// Request latency per command family (in place).
    pub requests: RequestLatency,
    /// Error elements written, by [`ErrorCode::ALL`] index (published).
    pub errors: [AtomicU64; ErrorCode::ALL.len()],
    /// Each value read from disk's latency, in microseconds (published;
    /// the disk engine only).
    pub disk_read_micros: SharedHistogram,
}

impl Default for ShardMetrics {
    fn default() -> ShardMetrics {
        ShardMetrics {
            log_bytes: AtomicU64::new(0),
            http_connections: AtomicU64::new(0),
            log_sync_micros: SharedHistogram::new(&SYNC_MICROS_BOUNDS),
            log_records_per_sync: SharedHistogram::new(&RECORDS_BOUNDS),
            requests: RequestLatency::default(),
            errors: ErrorCode::ALL.map(|_| AtomicU64::new(0)),
            disk_read_micros: SharedHistogram::new(&DISK_READ_MICROS_BOUNDS),
        }
    }
}

/// Every shard's figures, shared by all shards of a server.
#[derive(Debug)]
pub struct Metrics {
    pub shards: Box<[ShardMetrics]>,
    /// Whether the shards have logs (the log and disk engines).
    pub has_log: bool,
    /// Whether the shards read their values from disk (the disk engine).
    pub reads_values: bool,
}

impl Metrics {
    pub fn new(nr_shards: usize, has_log: bool, reads_values: bool) -> Metrics {
        Metrics {
            shards: (0..nr_shards).map(|_| ShardMetrics::default()).collect(),
            has_log,
            reads_values,
        }
    }

    pub fn shard(&self, shard: ShardId) -> &ShardMetrics {
        &self.shards[shard.0]
    }

    /// Shard `shard`'s request latency histograms, for its connections.
    pub fn requests(&self, shard: ShardId) -> &RequestLatency {
        &self.shard(shard).requests
    }

    /// Copies the figures `shard` keeps to itself into its atomics. Must run
    /// on `shard`'s own thread (the error tally is the calling thread's).
    pub fn publish(&self, shard: &Shard) {
        let Some(figures) = self.shards.get(shard.id().0) else {
            return;
        };
        for (published, count) in figures
            .errors
            .iter()
            .zip(crate::proto::error::errors_written())
        {
            published.store(count, Ordering::Relaxed);
        }
        store(&figures.disk_read_micros, &shard.disk_read_latency());
        let Some(log) = shard.log() else { return };
        figures.log_bytes.store(log.file_len(), Ordering::Relaxed);
        let stats = log.sync_stats();
        store(&figures.log_sync_micros, &stats.micros);
        store(&figures.log_records_per_sync, &stats.records);
    }
}

fn store(published: &SharedHistogram, histogram: &Histogram) {
    published.store(&histogram.counts, histogram.sum);
}
