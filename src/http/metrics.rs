//! `/metrics`: the Prometheus text exposition format (version 0.0.4).
//!
//! Table figures come from one STATS through the request path, so they are the
//! numbers a msgpack client's STATS returns, totals and per shard. Figures that
//! STATS does not carry — each shard's log syncs and bytes on disk, and its
//! open HTTP connections — are published by each shard into [`Gauges`] (plain
//! atomics, written only by their own shard): HTTP connections as they open and
//! close, log figures every [`LOG_PUBLISH_PERIOD`] and whenever that shard
//! serves `/metrics`. Another shard's log figures may therefore be up to one
//! period old.
//!
//! Names: `corekv_<figure>` is the total over shards, `corekv_shard_<figure>`
//! with a `shard` label is each shard's share (two families, so `sum()` over a
//! family never double-counts). Counters end in `_total`.

use super::dispatch::Stats;
use crate::log::sync_stats::{Histogram, RECORDS_BOUNDS, SYNC_MICROS_BOUNDS};
use crate::shard::Shard;
use crate::table::TableStats;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often each shard publishes its log figures.
pub const LOG_PUBLISH_PERIOD: Duration = Duration::from_secs(1);

/// Figures each shard publishes for the others to report.
#[derive(Debug, Default)]
pub struct ShardGauges {
    pub log_bytes: AtomicU64,
    pub http_connections: AtomicU64,
    /// The log's sync latency histogram (microseconds, non-cumulative buckets).
    pub sync_micros: PublishedHistogram<{ SYNC_MICROS_BOUNDS.len() + 1 }>,
    /// Records made durable per sync.
    pub sync_records: PublishedHistogram<{ RECORDS_BOUNDS.len() + 1 }>,
}

/// A histogram a shard publishes: per-bucket counts and the sum.
#[derive(Debug)]
pub struct PublishedHistogram<const N: usize> {
    pub counts: [AtomicU64; N],
    pub sum: AtomicU64,
}

impl<const N: usize> Default for PublishedHistogram<N> {
    fn default() -> Self {
        PublishedHistogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> PublishedHistogram<N> {
    fn store(&self, histogram: &Histogram) {
        for (published, count) in self.counts.iter().zip(&histogram.counts) {
            published.store(*count, Ordering::Relaxed);
        }
        self.sum.store(histogram.sum, Ordering::Relaxed);
    }
}

/// One [`ShardGauges`] per shard, shared by all shards of a server.
#[derive(Debug)]
pub struct Gauges {
    pub shards: Vec<ShardGauges>,
    /// Whether the shards have logs (the log engine).
    pub has_log: bool,
}

impl Gauges {
    pub fn new(nr_shards: usize, has_log: bool) -> Gauges {
        Gauges {
            shards: (0..nr_shards).map(|_| ShardGauges::default()).collect(),
            has_log,
        }
    }

    /// Stores `shard`'s current log figures.
    pub fn publish_log(&self, shard: &Shard) {
        let (Some(log), Some(gauges)) = (shard.log(), self.shards.get(shard.id().0)) else {
            return;
        };
        gauges.log_bytes.store(log.file_len(), Ordering::Relaxed);
        let stats = log.sync_stats();
        gauges.sync_micros.store(&stats.micros);
        gauges.sync_records.store(&stats.records);
    }
}

/// A metric family being written: its samples follow its HELP and TYPE lines.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn sample(&mut self, name: &str, labels: &str, value: u64) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "{name}{labels} {value}");
    }
}

fn family<'a>(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out }
}

/// How a table figure is exposed.
struct TableMetric {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    /// The STATS field.
    field: &'static str,
    /// For `corekv_operations_total{op=…}`: the op label.
    op: Option<&'static str>,
}

const fn metric(
    name: &'static str,
    kind: &'static str,
    field: &'static str,
    help: &'static str,
) -> TableMetric {
    TableMetric {
        name,
        kind,
        help,
        field,
        op: None,
    }
}

const fn operation(op: &'static str, field: &'static str) -> TableMetric {
    TableMetric {
        name: "operations_total",
        kind: "counter",
        help: "Requests executed, by type (get: GET/GETV; set: SET/PUTV and writes in ATOMIC; delete: DEL/RM).",
        field,
        op: Some(op),
    }
}

const TABLE_METRICS: [TableMetric; 14] = [
    metric("keys", "gauge", "keys", "Keys stored."),
    metric(
        "value_bytes",
        "gauge",
        "value_bytes",
        "Bytes of stored values.",
    ),
    metric(
        "memory_bytes",
        "gauge",
        "memory_bytes",
        "Memory accounted to keys and values.",
    ),
    metric(
        "reply_pinned_bytes",
        "gauge",
        "reply_pinned_bytes",
        "Memory of values no longer stored that unwritten replies still hold; counts against the memory limit.",
    ),
    operation("get", "gets"),
    operation("set", "sets"),
    operation("delete", "deletes"),
    metric(
        "hits_total",
        "counter",
        "hits",
        "Reads that found their key.",
    ),
    metric(
        "misses_total",
        "counter",
        "misses",
        "Reads that did not find their key.",
    ),
    metric(
        "version_conflicts_total",
        "counter",
        "version_conflicts",
        "PUTV requests refused on a version conflict.",
    ),
    metric(
        "oom_rejections_total",
        "counter",
        "oom_rejections",
        "Writes refused over the memory limit.",
    ),
    metric(
        "atomic_commits_total",
        "counter",
        "atomic_commits",
        "ATOMIC batches committed.",
    ),
    metric(
        "atomic_aborts_total",
        "counter",
        "atomic_aborts",
        "ATOMIC batches aborted.",
    ),
    metric(
        "log_syncs_total",
        "counter",
        "log_syncs",
        "Log syncs (fdatasync) since start; 0 with the memory engine.",
    ),
];

/// The whole `/metrics` page.
pub fn render(stats: &Stats, gauges: &Gauges, max_connections: usize) -> String {
    let mut out = String::new();
    let total = |field: &str| stats.total.get(field).copied().unwrap_or(0);
    let shards = stats.total.get("shards").copied().unwrap_or(0);
    family(
        &mut out,
        "corekv_shards",
        "gauge",
        "Shards (one executor each).",
    )
    .sample("corekv_shards", "", shards);
    render_table(&mut out, stats);
    family(
        &mut out,
        "corekv_connections",
        "gauge",
        "Open client connections, msgpack and HTTP.",
    )
    .sample("corekv_connections", "", total("connections"));
    family(
        &mut out,
        "corekv_max_connections",
        "gauge",
        "The --max-connections limit.",
    )
    .sample("corekv_max_connections", "", max_connections as u64);
    render_gauge(
        &mut out,
        gauges,
        "http_connections",
        "gauge",
        "Open HTTP connections.",
        |g| &g.http_connections,
    );
    if gauges.has_log {
        render_gauge(
            &mut out,
            gauges,
            "log_bytes",
            "gauge",
            "Bytes of log records in the log file (not counting space allocated ahead).",
            |g| &g.log_bytes,
        );
        render_histogram(
            &mut out,
            gauges,
            ("log_sync_seconds", "Time each log sync (fdatasync) took."),
            (&SYNC_MICROS_BOUNDS, 1e-6),
            |g| (&g.sync_micros.counts[..], &g.sync_micros.sum),
        );
        render_histogram(
            &mut out,
            gauges,
            (
                "log_records_per_sync",
                "Log records made durable by each sync: the grouping of group commit.",
            ),
            (&RECORDS_BOUNDS, 1.0),
            |g| (&g.sync_records.counts[..], &g.sync_records.sum),
        );
    }
    out
}

/// A per-shard histogram family `corekv_shard_<name>` (buckets, sum, count
/// per shard); `scale` turns bucket bounds and the sum into the unit named.
fn render_histogram(
    out: &mut String,
    gauges: &Gauges,
    (name, help): (&str, &str),
    (bounds, scale): (&[u64], f64),
    pick: impl Fn(&ShardGauges) -> (&[AtomicU64], &AtomicU64),
) {
    let name = format!("corekv_shard_{name}");
    family(out, &name, "histogram", &format!("{help} Per shard."));
    for (id, shard) in gauges.shards.iter().enumerate() {
        let (counts, sum) = pick(shard);
        let mut cumulative = 0;
        for (i, count) in counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = bounds.get(i).map_or("+Inf".to_owned(), |bound| {
                (*bound as f64 * scale).to_string()
            });
            let _ = writeln!(
                out,
                "{name}_bucket{{shard=\"{id}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = sum.load(Ordering::Relaxed) as f64 * scale;
        let _ = writeln!(out, "{name}_sum{{shard=\"{id}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{shard=\"{id}\"}} {cumulative}");
    }
}

fn render_table(out: &mut String, stats: &Stats) {
    let mut i = 0;
    while i < TABLE_METRICS.len() {
        let first = &TABLE_METRICS[i];
        // Metrics of one name (the operations) are consecutive and share a family.
        let group: Vec<&TableMetric> = TABLE_METRICS[i..]
            .iter()
            .take_while(|m| m.name == first.name)
            .collect();
        i += group.len();
        let total_name = format!("corekv_{}", first.name);
        let mut total = family(out, &total_name, first.kind, first.help);
        for m in &group {
            let value = stats.total.get(m.field).copied().unwrap_or(0);
            total.sample(&total_name, &op_labels(m, None), value);
        }
        let shard_name = format!("corekv_shard_{}", first.name);
        let help = format!("{} Per shard.", first.help);
        let mut per_shard = family(out, &shard_name, first.kind, &help);
        for (id, share) in stats.shares.iter().enumerate() {
            for m in &group {
                per_shard.sample(&shard_name, &op_labels(m, Some(id)), field(share, m.field));
            }
        }
    }
}

fn op_labels(m: &TableMetric, shard: Option<usize>) -> String {
    match (m.op, shard) {
        (None, None) => String::new(),
        (None, Some(id)) => format!("{{shard=\"{id}\"}}"),
        (Some(op), None) => format!("{{op=\"{op}\"}}"),
        (Some(op), Some(id)) => format!("{{shard=\"{id}\",op=\"{op}\"}}"),
    }
}

fn field(share: &TableStats, name: &str) -> u64 {
    share
        .fields()
        .iter()
        .find(|(field, _)| *field == name)
        .map_or(0, |(_, value)| *value)
}

/// A published per-shard figure: its total and its per-shard family.
fn render_gauge(
    out: &mut String,
    gauges: &Gauges,
    name: &str,
    kind: &str,
    help: &str,
    pick: impl Fn(&ShardGauges) -> &AtomicU64,
) {
    let values: Vec<u64> = gauges
        .shards
        .iter()
        .map(|g| pick(g).load(Ordering::Relaxed))
        .collect();
    let total_name = format!("corekv_{name}");
    family(out, &total_name, kind, help).sample(&total_name, "", values.iter().sum());
    let shard_name = format!("corekv_shard_{name}");
    let help = format!("{help} Per shard.");
    let mut per_shard = family(out, &shard_name, kind, &help);
    for (id, value) in values.iter().enumerate() {
        per_shard.sample(&shard_name, &format!("{{shard=\"{id}\"}}"), *value);
    }
}
