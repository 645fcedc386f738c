//! The figures of a run: totals, throughput, latency percentiles per message
//! (HdrHistogram), and what went wrong. Printed as text for people and
//! serialised as JSON (`--json`) for scripts; both carry the same figures.

use crate::config::{Config, Preset};
use crate::connection::Outcome;
use crate::protocol::Protocol;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;

/// Mismatch descriptions kept in the report (all mismatches are counted).
const MAX_SAMPLES: usize = 10;

/// What the runner hands over.
pub struct Totals {
    pub outcomes: Vec<Outcome>,
    pub latency_ns: Histogram<u64>,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    pub connections: u32,
    pub threads: usize,
    pub messages_per_connection: u64,
    pub sets_per_message: u32,
    pub gets_per_message: u32,
    pub keys: u64,
    pub key_bytes: usize,
    pub value_bytes: usize,
    pub pipeline: u32,
    pub seed: u64,
}

/// Latency per message, from its send to its whole reply, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub protocol: Protocol,
    pub preset: Option<Preset>,
    pub addr: String,
    pub workload: Workload,
    /// Requests answered (SETs and GETs in answered messages).
    pub ops: u64,
    /// Messages answered.
    pub messages: u64,
    /// Messages the workload asked for.
    pub messages_expected: u64,
    pub elapsed_s: f64,
    pub ops_per_s: f64,
    pub messages_per_s: f64,
    /// Mismatched replies plus failed connections.
    pub errors: u64,
    pub mismatches: u64,
    pub failed_connections: u64,
    pub latency_us: Latency,
    pub mismatch_samples: Vec<String>,
    pub connection_failures: Vec<String>,
}

impl Report {
    pub fn new(config: &Config, totals: Totals) -> Report {
        let messages: u64 = totals.outcomes.iter().map(|o| o.replies).sum();
        let mismatches: u64 = totals.outcomes.iter().map(|o| o.mismatches).sum();
        let failures: Vec<String> = totals
            .outcomes
            .iter()
            .filter_map(|o| o.failure.clone())
            .collect();
        let samples = totals
            .outcomes
            .iter()
            .flat_map(|o| o.mismatch_samples.iter().cloned())
            .take(MAX_SAMPLES)
            .collect();
        let ops = messages * config.ops_per_message();
        let seconds = totals.elapsed.as_secs_f64();
        let per_s = |n: u64| {
            if seconds > 0.0 {
                n as f64 / seconds
            } else {
                0.0
            }
        };
        Report {
            tool: "corekv-loadgen",
            version: env!("CARGO_PKG_VERSION"),
            protocol: config.protocol,
            preset: config.preset,
            addr: config.addr.to_string(),
            workload: workload(config),
            ops,
            messages,
            messages_expected: u64::from(config.nr_connections) * config.messages_per_connection,
            elapsed_s: seconds,
            ops_per_s: per_s(ops),
            messages_per_s: per_s(messages),
            errors: mismatches + failures.len() as u64,
            mismatches,
            failed_connections: failures.len() as u64,
            latency_us: latency(&totals.latency_ns),
            mismatch_samples: samples,
            connection_failures: failures,
        }
    }

    /// Every reply matched and every connection finished.
    pub fn passed(&self) -> bool {
        self.errors == 0 && self.messages == self.messages_expected
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }

    /// The human-readable summary printed on stdout.
    pub fn to_text(&self) -> String {
        let w = &self.workload;
        let l = &self.latency_us;
        let mut text = String::new();
        let preset = self
            .preset
            .map_or(String::new(), |p| format!(", preset {}", p.name()));
        let _ = writeln!(
            text,
            "corekv-loadgen {}: {} to {}{preset}",
            self.version,
            self.protocol.name(),
            self.addr
        );
        let _ = writeln!(
            text,
            "workload: {} connections on {} thread(s) × {} messages of {} SET + {} GET, pipeline {}, \
             {} keys of {} B, {} B values, seed {}",
            w.connections, w.threads, w.messages_per_connection, w.sets_per_message,
            w.gets_per_message, w.pipeline, w.keys, w.key_bytes, w.value_bytes, w.seed
        );
        let _ = writeln!(text, "ops          {}", self.ops);
        let _ = writeln!(
            text,
            "messages     {} of {}",
            self.messages, self.messages_expected
        );
        let _ = writeln!(text, "elapsed      {:.3} s", self.elapsed_s);
        let _ = writeln!(text, "ops/s        {:.0}", self.ops_per_s);
        let _ = writeln!(text, "messages/s   {:.0}", self.messages_per_s);
        let _ = writeln!(
            text,
            "errors       {} ({} mismatched replies, {} failed connections)",
            self.errors, self.mismatches, self.failed_connections
        );
        let _ = writeln!(
            text,
            "latency/msg  p50 {:.1} µs  p90 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  max {:.1} µs  mean {:.1} µs",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        );
        for line in self
            .mismatch_samples
            .iter()
            .chain(&self.connection_failures)
        {
            let _ = writeln!(text, "  {line}");
        }
        text
    }
}

fn workload(config: &Config) -> Workload {
    Workload {
        connections: config.nr_connections,
        threads: config.nr_threads,
        messages_per_connection: config.messages_per_connection,
        sets_per_message: config.shape.sets,
        gets_per_message: config.shape.gets,
        keys: config.nr_keys,
        key_bytes: config.shape.key_bytes,
        value_bytes: config.shape.value_bytes,
        pipeline: config.pipeline,
        seed: config.seed,
    }
}

fn latency(h: &Histogram<u64>) -> Latency {
    let us = |ns: u64| ns as f64 / 1_000.0;
    Latency {
        p50: us(h.value_at_quantile(0.50)),
        p90: us(h.value_at_quantile(0.90)),
        p99: us(h.value_at_quantile(0.99)),
        p999: us(h.value_at_quantile(0.999)),
        max: us(h.max()),
        mean: h.mean() / 1_000.0,
    }
}
