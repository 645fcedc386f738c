//! `/metrics`: the Prometheus text exposition format (version 0.0.4).
//!
//! One family per figure. A figure that each shard has is one family with a
//! `shard` label (`corekv_keys{shard="0"}`), so `sum(corekv_keys)` is the
//! server's total and nothing is counted twice; server-wide figures have no
//! `shard` label. Counters end in `_total`, durations are in seconds
//! (`_seconds`), sizes in bytes (`_bytes`). The figures and how each reaches
//! the shard that renders the page are described in [`crate::metrics`]; table
//! figures come from one STATS through the request path, so they are the
//! numbers a msgpack client's STATS returns.
//!
//! The page is written by hand rather than with a metrics crate: every figure
//! is read from the shards when the page is served (no registry to keep), the
//! format is a few line shapes, and the maintained Rust client
//! (`prometheus-client`) writes only the OpenMetrics variant and keeps its
//! histograms behind locks, where the shards' single-writer atomics need
//! none. tests/http.rs checks the page with the Python Prometheus client's
//! parser.

use super::dispatch::Stats;
use crate::metrics::histogram::HistogramReading;
use crate::metrics::latency::Family;
use crate::metrics::{process, Metrics, ShardMetrics};
use crate::proto::ErrorCode;
use crate::server::state::ServerState;
use crate::table::TableStats;
use std::fmt::{Display, Write};
use std::sync::atomic::Ordering;

/// A table figure: its family, and the STATS field it reads.
struct TableMetric {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    field: &'static str,
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
    }
}

const TABLE_METRICS: [TableMetric; 19] = [
    metric("corekv_keys", "gauge", "keys", "Keys stored."),
    metric(
        "corekv_value_bytes",
        "gauge",
        "value_bytes",
        "Bytes of stored values.",
    ),
    metric(
        "corekv_memory_bytes",
        "gauge",
        "memory_bytes",
        "Memory accounted to keys and values.",
    ),
    metric(
        "corekv_reply_pinned_bytes",
        "gauge",
        "reply_pinned_bytes",
        "Memory of values no longer stored that unwritten replies still hold; counts against the memory limit.",
    ),
    metric(
        "corekv_hits_total",
        "counter",
        "hits",
        "Reads that found their key.",
    ),
    metric(
        "corekv_misses_total",
        "counter",
        "misses",
        "Reads that did not find their key.",
    ),
    metric(
        "corekv_version_conflicts_total",
        "counter",
        "version_conflicts",
        "PUTV requests refused on a version conflict.",
    ),
    metric(
        "corekv_oom_rejections_total",
        "counter",
        "oom_rejections",
        "Writes refused over the memory limit.",
    ),
    metric(
        "corekv_atomic_commits_total",
        "counter",
        "atomic_commits",
        "ATOMIC batches committed.",
    ),
    metric(
        "corekv_atomic_aborts_total",
        "counter",
        "atomic_aborts",
        "ATOMIC batches aborted.",
    ),
    metric(
        "corekv_log_syncs_total",
        "counter",
        "log_syncs",
        "Log syncs (fdatasync) since start; 0 with the memory engine.",
    ),
    metric(
        "corekv_expiring_keys",
        "gauge",
        "expires",
        "Keys stored with an expiry deadline.",
    ),
    metric(
        "corekv_expired_keys_total",
        "counter",
        "expired_keys",
        "Keys removed because their deadline passed.",
    ),
    metric(
        "corekv_evicted_keys_total",
        "counter",
        "evicted_keys",
        "Keys evicted to stay under the memory limit (--maxmemory-policy).",
    ),
    metric(
        "corekv_disk_reads_total",
        "counter",
        "disk_reads",
        "Values the disk engine read from its log files for requests.",
    ),
    metric(
        "corekv_disk_read_bytes_total",
        "counter",
        "disk_read_bytes",
        "Bytes of the 4 KiB blocks the disk engine read from its log files for requests.",
    ),
    metric(
        "corekv_disk_cache_hits_total",
        "counter",
        "disk_cache_hits",
        "Values the disk engine served from its cache of hot values instead of reading them.",
    ),
    metric(
        "corekv_disk_cache_bytes",
        "gauge",
        "disk_cache_bytes",
        "Memory the disk engine's cache of hot values holds (--disk-cache-bytes bounds it).",
    ),
    metric(
        "corekv_write_pacing_waits_total",
        "counter",
        "write_pacing_waits",
        "Rounds of writes that waited for a compaction or a merge of segments to catch up (the log stays within twice the live data plus a margin).",
    ),
];

/// `corekv_operations_total{op}`: the STATS field of each op label.
const OPERATIONS: [(&str, &str); 3] = [("get", "gets"), ("set", "sets"), ("delete", "deletes")];

/// The page being written.
struct Page {
    out: String,
}

impl Page {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// One family member of a histogram: cumulative buckets, sum and count;
    /// `scale` turns the reading's unit into the family's.
    fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        reading: &HistogramReading,
        scale: f64,
    ) {
        let bucket_name = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, count) in reading.counts.iter().enumerate() {
            cumulative += count;
            let le = reading.bounds.get(i).map_or("+Inf".to_owned(), |bound| {
                (*bound as f64 * scale).to_string()
            });
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket_name, &with_le, cumulative);
        }
        self.sample(&format!("{name}_sum"), labels, reading.sum as f64 * scale);
        self.sample(&format!("{name}_count"), labels, cumulative);
    }
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole `/metrics` page.
pub fn render(stats: &Stats, metrics: &Metrics, state: &ServerState) -> String {
    let mut page = Page { out: String::new() };
    render_server(&mut page, stats, state);
    render_process(&mut page);
    render_table(&mut page, &stats.shares);
    render_shards(&mut page, metrics);
    page.out
}

fn render_server(page: &mut Page, stats: &Stats, state: &ServerState) {
    let gauge = |page: &mut Page, name: &str, help: &str, value: u64| {
        page.family(name, "gauge", help);
        page.sample(name, &[], value);
    };
    page.family(
        "corekv_build_info",
        "gauge",
        "The corekv version serving; always 1.",
    );
    page.sample(
        "corekv_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    gauge(
        page,
        "corekv_shards",
        "Shards (one executor each).",
        state.nr_shards as u64,
    );
    let connections = stats.total.get("connections").copied().unwrap_or(0);
    gauge(
        page,
        "corekv_connections",
        "Open client connections, msgpack and HTTP.",
        connections,
    );
    gauge(
        page,
        "corekv_max_connections",
        "The --max-connections limit.",
        state.max_connections as u64,
    );
    let counter = |page: &mut Page, name: &str, help: &str, value: u64| {
        page.family(name, "counter", help);
        page.sample(name, &[], value);
    };
    counter(
        page,
        "corekv_connections_accepted_total",
        "Client connections accepted, msgpack and HTTP.",
        state.connections_accepted(),
    );
    counter(
        page,
        "corekv_connections_refused_total",
        "Client connections refused over --max-connections.",
        state.connections_refused(),
    );
    counter(
        page,
        "corekv_shards_woken_by_guard_total",
        "Times a shard that had not run for 100 ms was woken by the wake guard.",
        state.wake_guard.nr_woken(),
    );
}

/// The standard process figures; one that cannot be read is left out.
fn render_process(page: &mut Page) {
    let figures = process::read();
    let mut figure = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(value) = value {
            page.family(name, kind, help);
            page.sample(name, &[], value);
        }
    };
    let bytes = |v: Option<u64>| v.map(|v| v as f64);
    figure(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch, in seconds.",
        figures.start_time_seconds,
    );
    figure(
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time spent, in seconds.",
        figures.cpu_seconds,
    );
    figure(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        bytes(figures.resident_memory_bytes),
    );
    figure(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        bytes(figures.virtual_memory_bytes),
    );
    figure(
        "process_open_fds",
        "gauge",
        "Open file descriptors.",
        bytes(figures.open_fds),
    );
    figure(
        "process_max_fds",
        "gauge",
        "The limit on open file descriptors (RLIMIT_NOFILE).",
        bytes(figures.max_fds),
    );
}

/// Table figures, one family each, one sample per shard.
fn render_table(page: &mut Page, shares: &[TableStats]) {
    let ids: Vec<String> = (0..shares.len()).map(|id| id.to_string()).collect();
    for m in &TABLE_METRICS {
        page.family(m.name, m.kind, m.help);
        for (id, share) in ids.iter().zip(shares) {
            page.sample(m.name, &[("shard", id)], field(share, m.field));
        }
    }
    let name = "corekv_operations_total";
    page.family(
        name,
        "counter",
        "Requests executed, by type (get: GET/GETV; set: SET/PUTV and writes in ATOMIC; delete: DEL/RM).",
    );
    for (id, share) in ids.iter().zip(shares) {
        for (op, stats_field) in OPERATIONS {
            page.sample(
                name,
                &[("shard", id), ("op", op)],
                field(share, stats_field),
            );
        }
    }
    // STATS counts microseconds; durations here are in seconds.
    let name = "corekv_write_pacing_wait_seconds_total";
    page.family(
        name,
        "counter",
        "Time rounds of writes waited for a compaction or a merge of segments to catch up, summed (STATS write_pacing_wait_us).",
    );
    for (id, share) in ids.iter().zip(shares) {
        let seconds = share.write_pacing_wait_us as f64 / 1e6;
        page.sample(name, &[("shard", id)], seconds);
    }
}

fn field(share: &TableStats, name: &str) -> u64 {
    share
        .fields()
        .iter()
        .find(|(field, _)| *field == name)
        .map_or(0, |(_, value)| *value)
}

/// Figures the shards publish or keep in place ([`crate::metrics`]).
fn render_shards(page: &mut Page, metrics: &Metrics) {
    let shards: Vec<(String, &ShardMetrics)> = metrics
        .shards
        .iter()
        .enumerate()
        .map(|(id, shard)| (id.to_string(), shard))
        .collect();
    let name = "corekv_http_connections";
    page.family(name, "gauge", "Open HTTP connections.");
    for (id, shard) in &shards {
        let open = shard.http_connections.load(Ordering::Relaxed);
        page.sample(name, &[("shard", id)], open);
    }
    let name = "corekv_error_replies_total";
    page.family(
        name,
        "counter",
        "Error elements [-9, CODE, message] sent, by code, counted on the shard that produced them.",
    );
    for (id, shard) in &shards {
        for (code, count) in ErrorCode::ALL.iter().zip(&shard.errors) {
            let count = count.load(Ordering::Relaxed);
            page.sample(name, &[("shard", id), ("code", code.as_str())], count);
        }
    }
    let name = "corekv_request_duration_seconds";
    page.family(
        name,
        "histogram",
        "msgpack requests, from the read that completed their message to the write of its reply, by command family.",
    );
    for (id, shard) in &shards {
        for family in Family::ALL {
            let reading = shard.requests.family(family).read();
            let labels = [("shard", id.as_str()), ("command", family.name())];
            page.histogram(name, &labels, &reading, 1e-9);
        }
    }
    if metrics.has_log {
        render_log(page, &shards);
    }
    if metrics.reads_values {
        let name = "corekv_disk_read_duration_seconds";
        page.family(
            name,
            "histogram",
            "Time each read of a value from the disk engine's log files took (cache hits are not reads).",
        );
        for (id, shard) in &shards {
            let reading = shard.disk_read_micros.read();
            page.histogram(name, &[("shard", id)], &reading, 1e-6);
        }
    }
}

fn render_log(page: &mut Page, shards: &[(String, &ShardMetrics)]) {
    let name = "corekv_log_bytes";
    page.family(
        name,
        "gauge",
        "Bytes of log records in the log file (not counting space allocated ahead).",
    );
    for (id, shard) in shards {
        let bytes = shard.log_bytes.load(Ordering::Relaxed);
        page.sample(name, &[("shard", id)], bytes);
    }
    let name = "corekv_log_sync_duration_seconds";
    page.family(name, "histogram", "Time each log sync (fdatasync) took.");
    for (id, shard) in shards {
        let reading = shard.log_sync_micros.read();
        page.histogram(name, &[("shard", id)], &reading, 1e-6);
    }
    let name = "corekv_log_records_per_sync";
    page.family(
        name,
        "histogram",
        "Log records made durable by each sync: the grouping of group commit.",
    );
    for (id, shard) in shards {
        let reading = shard.log_records_per_sync.read();
        page.histogram(name, &[("shard", id)], &reading, 1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_a_sum_and_a_count() {
        static BOUNDS: [u64; 2] = [1, 10];
        let reading = HistogramReading {
            bounds: &BOUNDS,
            counts: vec![1, 2, 3],
            sum: 40,
        };
        let mut page = Page { out: String::new() };
        page.histogram("h", &[("shard", "0")], &reading, 0.5);
        assert_eq!(
            page.out,
            "h_bucket{shard=\"0\",le=\"0.5\"} 1\n\
             h_bucket{shard=\"0\",le=\"5\"} 3\n\
             h_bucket{shard=\"0\",le=\"+Inf\"} 6\n\
             h_sum{shard=\"0\"} 20\n\
             h_count{shard=\"0\"} 6\n"
        );
    }
}
