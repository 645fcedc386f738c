//! The figures of a run: totals, throughput, latency percentiles per message
//! (HdrHistogram), and what went wrong. Printed as text for people and
//! serialised as JSON (`--json`) for scripts; both carry the same figures.

use crate::config::{Config, Preset, Workload};
use crate::connection::{Outcome, Span};
use crate::distribution::Distribution;
use crate::increments::Verdict;
use crate::keys::Placement;
use crate::protocol::Protocol;
use crate::script::Tally;
use crate::workload::WriteOp;
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
    /// The counter's final check (increments workload only).
    pub counter: Option<Verdict>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    /// `fixed`, `mix` or `increments`.
    pub kind: &'static str,
    pub connections: u32,
    pub threads: usize,
    pub pipeline: u32,
    pub seed: u64,
    /// Set with `--messages` (or a preset's count), else null.
    pub messages_per_connection: Option<u64>,
    /// Set with `--duration`, else null.
    pub duration_s: Option<f64>,
    pub warmup_s: Option<f64>,
    /// Open loop's target, else null.
    pub rate_ops_per_s: Option<f64>,
    pub ops_per_message: u64,
    pub keys: u64,
    pub key_bytes: usize,
    pub value_bytes: usize,
    pub fixed: Option<FixedReport>,
    pub mix: Option<MixReport>,
    /// `--cluster`: connections spread over the cluster's nodes, each request
    /// sent to its key's node.
    pub cluster: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FixedReport {
    pub writes_per_message: u32,
    pub gets_per_message: u32,
    pub write_op: WriteOp,
    pub atomic: bool,
    pub placement: Option<Placement>,
    pub server_shards: Option<usize>,
    /// Namespace of this run's fresh keys (`putv-new` only).
    pub fresh_key_prefix: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MixReport {
    pub get_ratio: f64,
    pub putv_ratio: f64,
    pub set_ratio: f64,
    pub distribution: Distribution,
    pub zipf_theta: Option<f64>,
    /// SETs expire this long after they run (`--set-ttl-ms`).
    pub set_ttl_ms: Option<u64>,
    /// `--preloaded`: no prefill; GETs read keys an earlier run loaded.
    pub preloaded: bool,
}

/// `--preloaded`: how the GETs fared, every reply counted (warm-up and the
/// replies after the window included). Each miss also makes its message a
/// mismatch, so a run with misses does not pass.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PreloadedGets {
    /// GETs that found a value of `--value-bytes` (or, for a key this run
    /// wrote, exactly its value).
    pub hits: u64,
    /// GETs answered not-found.
    pub misses: u64,
}

/// Latency per message, from its send (open loop: its intended send) to its
/// whole reply, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// The contended counter's figures.
#[derive(Debug, Clone, Serialize)]
pub struct IncrementsReport {
    /// PUTVs answered (each after a GETV).
    pub attempts: u64,
    pub successes: u64,
    pub conflicts: u64,
    /// Successful increments per second in the measured run.
    pub successes_per_s: f64,
    /// The counter's final state, and whether it equals `successes`.
    pub counter: Verdict,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub protocol: Protocol,
    pub preset: Option<Preset>,
    pub addr: String,
    pub workload: WorkloadReport,
    /// `closed-loop` or `open-loop`.
    pub mode: &'static str,
    /// Requests answered in counted messages (inside an ATOMIC, each request).
    pub ops: u64,
    /// Messages answered (with `--duration`: inside the measured window).
    pub messages: u64,
    /// Messages the workload asked for (null with `--duration`).
    pub messages_expected: Option<u64>,
    pub elapsed_s: f64,
    pub ops_per_s: f64,
    pub messages_per_s: f64,
    /// Mismatched replies plus failed connections.
    pub errors: u64,
    pub mismatches: u64,
    pub failed_connections: u64,
    pub latency_us: Latency,
    pub increments: Option<IncrementsReport>,
    /// `--preloaded` runs only.
    pub preloaded_gets: Option<PreloadedGets>,
    pub mismatch_samples: Vec<String>,
    pub connection_failures: Vec<String>,
}

impl Report {
    pub fn new(config: &Config, totals: Totals) -> Report {
        let outcomes = &totals.outcomes;
        let messages: u64 = outcomes.iter().map(|o| o.measured).sum();
        let ops: u64 = outcomes.iter().map(|o| o.measured_ops).sum();
        let mismatches: u64 = outcomes.iter().map(|o| o.mismatches).sum();
        let failures: Vec<String> = outcomes.iter().filter_map(|o| o.failure.clone()).collect();
        let samples = outcomes
            .iter()
            .flat_map(|o| o.mismatch_samples.iter().cloned())
            .take(MAX_SAMPLES)
            .collect();
        let seconds = totals.elapsed.as_secs_f64();
        let per_s = |n: u64| {
            if seconds > 0.0 {
                n as f64 / seconds
            } else {
                0.0
            }
        };
        let messages_expected = match config.span {
            Span::Messages(n) => Some(u64::from(config.nr_connections) * n),
            Span::Window { .. } => None,
        };
        let mut tally = Tally::default();
        outcomes.iter().for_each(|o| tally.add(&o.tally));
        let preloaded = matches!(config.workload, Workload::Mix(spec) if spec.preloaded);
        let preloaded_gets = preloaded.then_some(PreloadedGets {
            hits: tally.get_hits,
            misses: tally.get_misses,
        });
        let increments = totals.counter.map(|counter| IncrementsReport {
            attempts: tally.attempts,
            successes: tally.successes,
            conflicts: tally.conflicts,
            successes_per_s: per_s(tally.measured_successes),
            counter,
        });
        Report {
            tool: "corekv-loadgen",
            version: env!("CARGO_PKG_VERSION"),
            protocol: config.protocol,
            preset: config.preset,
            addr: config.addr.to_string(),
            workload: workload(config),
            mode: if config.rate_ops_per_s.is_some() {
                "open-loop"
            } else {
                "closed-loop"
            },
            ops,
            messages,
            messages_expected,
            elapsed_s: seconds,
            ops_per_s: per_s(ops),
            messages_per_s: per_s(messages),
            errors: mismatches + failures.len() as u64,
            mismatches,
            failed_connections: failures.len() as u64,
            latency_us: latency(&totals.latency_ns),
            increments,
            preloaded_gets,
            mismatch_samples: samples,
            connection_failures: failures,
        }
    }

    /// Every reply matched, every connection finished, and (increments) the
    /// counter holds exactly the successes counted.
    pub fn passed(&self) -> bool {
        self.errors == 0
            && self.messages_expected.is_none_or(|n| self.messages == n)
            && self.increments.as_ref().is_none_or(|i| i.counter.verified)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }

    /// The human-readable summary printed on stdout.
    pub fn to_text(&self) -> String {
        let l = &self.latency_us;
        let mut text = String::new();
        let preset = self
            .preset
            .map_or(String::new(), |p| format!(", preset {}", p.name()));
        let _ = writeln!(
            text,
            "corekv-loadgen {}: {} to {}{preset}, {}",
            self.version,
            self.protocol.name(),
            self.addr,
            self.mode
        );
        let _ = writeln!(text, "workload: {}", describe(&self.workload));
        let _ = writeln!(text, "ops          {}", self.ops);
        let expected = self
            .messages_expected
            .map_or(String::new(), |n| format!(" of {n}"));
        let _ = writeln!(text, "messages     {}{expected}", self.messages);
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
        if let Some(i) = &self.increments {
            let _ = writeln!(
                text,
                "increments   {} attempts: {} succeeded, {} conflicts; {:.0} increments/s",
                i.attempts, i.successes, i.conflicts, i.successes_per_s
            );
            let verdict = match &i.counter.problem {
                None => format!("counter = {} = successes: verified", i.successes),
                Some(problem) => format!("NOT VERIFIED: {problem}"),
            };
            let _ = writeln!(text, "counter      {verdict}");
        }
        if let Some(g) = &self.preloaded_gets {
            let _ = writeln!(
                text,
                "gets         {} hits, {} misses (keys loaded by an earlier run)",
                g.hits, g.misses
            );
        }
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

/// One line saying what each connection did.
fn describe(w: &WorkloadReport) -> String {
    let span = match (w.messages_per_connection, w.duration_s) {
        (Some(n), _) => format!("{n} messages"),
        (None, d) => format!(
            "{:.1} s after {:.1} s warm-up",
            d.unwrap_or(0.0),
            w.warmup_s.unwrap_or(0.0)
        ),
    };
    let rate = w
        .rate_ops_per_s
        .map_or(String::new(), |r| format!(", paced at {r:.0} ops/s"));
    let what = if let Some(f) = &w.fixed {
        let write = match f.write_op {
            WriteOp::Set => "SET",
            WriteOp::PutvNew => "PUTV-new",
        };
        let batch = if f.atomic { "one ATOMIC of " } else { "" };
        let placed = match (f.placement, f.server_shards) {
            (Some(p), Some(n)) => format!(", keys placed {} over {n} shards", p.name()),
            _ => String::new(),
        };
        format!(
            "{batch}{} {write} + {} GET{placed}",
            f.writes_per_message, f.gets_per_message
        )
    } else if let Some(m) = &w.mix {
        let theta = m
            .zipf_theta
            .map_or(String::new(), |t| format!(" theta {t}"));
        let ttl = m
            .set_ttl_ms
            .map_or(String::new(), |ms| format!(", SETs with a {ms} ms TTL"));
        let preloaded = if m.preloaded {
            ", keys preloaded (no prefill)"
        } else {
            ""
        };
        format!(
            "{} random requests ({:.0}% GET, {:.0}% PUTV, {:.0}% SET), {:?}{theta} keys{ttl}{preloaded}",
            w.ops_per_message,
            m.get_ratio * 100.0,
            m.putv_ratio * 100.0,
            m.set_ratio * 100.0,
            m.distribution
        )
    } else {
        "GETV then PUTV(value + 1) of one shared counter".to_owned()
    };
    let spread = if w.cluster {
        " over the cluster's nodes"
    } else {
        ""
    };
    format!(
        "{} connections{spread} on {} thread(s) × {span} of {what}, pipeline {}{rate}, {} keys of {} B, {} B values, seed {}",
        w.connections, w.threads, w.pipeline, w.keys, w.key_bytes, w.value_bytes, w.seed
    )
}

fn workload(config: &Config) -> WorkloadReport {
    let (messages, duration, warmup) = match config.span {
        Span::Messages(n) => (Some(n), None, None),
        Span::Window { warmup, duration } => (
            None,
            Some(duration.as_secs_f64()),
            Some(warmup.as_secs_f64()),
        ),
    };
    let fixed = match &config.workload {
        Workload::Fixed { shape, placement } => Some(FixedReport {
            writes_per_message: shape.writes,
            gets_per_message: shape.gets,
            write_op: shape.write_op,
            atomic: shape.atomic,
            placement: placement.map(|p| p.0),
            server_shards: placement.map(|p| p.1),
            fresh_key_prefix: (shape.write_op == WriteOp::PutvNew)
                .then(|| String::from_utf8_lossy(&config.fresh_prefix).into_owned()),
        }),
        _ => None,
    };
    let mix = match &config.workload {
        Workload::Mix(spec) => Some(MixReport {
            get_ratio: spec.get_ratio,
            putv_ratio: spec.putv_ratio,
            set_ratio: spec.set_ratio(),
            distribution: spec.distribution,
            zipf_theta: (spec.distribution == Distribution::Zipf).then_some(spec.zipf_theta),
            set_ttl_ms: spec.set_ttl_ms,
            preloaded: spec.preloaded,
        }),
        _ => None,
    };
    WorkloadReport {
        kind: config.workload.name(),
        connections: config.nr_connections,
        threads: config.nr_threads,
        pipeline: config.pipeline,
        seed: config.seed,
        messages_per_connection: messages,
        duration_s: duration,
        warmup_s: warmup,
        rate_ops_per_s: config.rate_ops_per_s,
        ops_per_message: config.ops_per_message(),
        keys: config.nr_keys,
        key_bytes: config.key_bytes,
        value_bytes: config.value_bytes,
        fixed,
        mix,
        cluster: config.cluster,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Args;
    use clap::Parser;
    use serde_json::Value;

    fn report(flags: &[&str], outcomes: Vec<Outcome>, counter: Option<Verdict>) -> Report {
        let argv = std::iter::once("corekv-loadgen").chain(flags.iter().copied());
        let config = Config::from_args(&Args::parse_from(argv)).expect("valid flags");
        let mut latency_ns = crate::runner::new_histogram();
        latency_ns.record(1_500).expect("in range");
        let totals = Totals {
            outcomes,
            latency_ns,
            elapsed: Duration::from_secs(2),
            counter,
        };
        Report::new(&config, totals)
    }

    fn answered(measured: u64, measured_ops: u64) -> Outcome {
        Outcome {
            replies: measured,
            measured,
            measured_ops,
            ..Outcome::default()
        }
    }

    fn keys(value: &Value) -> Vec<&str> {
        let mut keys: Vec<&str> = value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn json_report_has_the_documented_shape() {
        let flags = [
            "--atomic-keys",
            "2",
            "--placement",
            "spread",
            "--server-shards",
            "2",
            "--connections",
            "2",
            "--messages",
            "3",
        ];
        let r = report(&flags, vec![answered(3, 12), answered(3, 12)], None);
        let json: Value = serde_json::from_str(&r.to_json()).expect("valid JSON");
        assert_eq!(
            keys(&json),
            [
                "addr",
                "connection_failures",
                "elapsed_s",
                "errors",
                "failed_connections",
                "increments",
                "latency_us",
                "messages",
                "messages_expected",
                "messages_per_s",
                "mismatch_samples",
                "mismatches",
                "mode",
                "ops",
                "ops_per_s",
                "preloaded_gets",
                "preset",
                "protocol",
                "tool",
                "version",
                "workload"
            ]
        );
        assert_eq!(
            keys(&json["workload"]),
            [
                "cluster",
                "connections",
                "duration_s",
                "fixed",
                "key_bytes",
                "keys",
                "kind",
                "messages_per_connection",
                "mix",
                "ops_per_message",
                "pipeline",
                "rate_ops_per_s",
                "seed",
                "threads",
                "value_bytes",
                "warmup_s"
            ]
        );
        assert_eq!(
            keys(&json["latency_us"]),
            ["max", "mean", "p50", "p90", "p99", "p999"]
        );
        assert_eq!(json["workload"]["kind"], "fixed");
        assert_eq!(json["workload"]["fixed"]["placement"], "spread");
        assert_eq!(json["workload"]["fixed"]["write_op"], "set");
        assert_eq!(json["workload"]["fixed"]["atomic"], true);
        assert_eq!(json["workload"]["mix"], Value::Null);
        assert_eq!(
            (json["ops"].as_u64(), json["messages"].as_u64()),
            (Some(24), Some(6))
        );
        assert_eq!(json["messages_expected"], 6);
        assert_eq!(json["ops_per_s"], 12.0);
        assert_eq!(json["mode"], "closed-loop");
        assert_eq!(json["protocol"], "msgpack");
        assert_eq!(json["latency_us"]["p50"], 1.5);
        assert!(r.passed());
    }

    #[test]
    fn json_names_presets_mixes_and_timed_open_loop_runs() {
        let flags = [
            "--get-ratio",
            "0.75",
            "--distribution",
            "zipf",
            "--rate",
            "1000",
            "--duration",
            "2",
            "--warmup",
            "1",
        ];
        let r = report(&flags, vec![answered(100, 100)], None);
        let json: Value = serde_json::from_str(&r.to_json()).expect("valid JSON");
        assert_eq!(json["mode"], "open-loop");
        assert_eq!(json["messages_expected"], Value::Null);
        let w = &json["workload"];
        assert_eq!(
            (
                w["kind"].as_str(),
                w["duration_s"].as_f64(),
                w["warmup_s"].as_f64()
            ),
            (Some("mix"), Some(2.0), Some(1.0))
        );
        assert_eq!(w["rate_ops_per_s"], 1000.0);
        assert_eq!(
            keys(&w["mix"]),
            [
                "distribution",
                "get_ratio",
                "preloaded",
                "putv_ratio",
                "set_ratio",
                "set_ttl_ms",
                "zipf_theta"
            ]
        );
        assert_eq!(w["mix"]["distribution"], "zipf");
        assert!(r.passed(), "a timed run has no expected count");
        let r = report(
            &[
                "--preset",
                "concave-put-1",
                "--connections",
                "1",
                "--messages",
                "1",
            ],
            vec![answered(1, 1)],
            None,
        );
        let json: Value = serde_json::from_str(&r.to_json()).expect("valid JSON");
        assert_eq!(json["preset"], "concave-put-1");
        assert_eq!(json["workload"]["fixed"]["write_op"], "putv-new");
        assert!(json["workload"]["fixed"]["fresh_key_prefix"]
            .as_str()
            .is_some_and(|p| p.starts_with('N')));
    }

    #[test]
    fn increments_pass_only_when_the_counter_matches_the_successes() {
        let flags = [
            "--preset",
            "concave-increments",
            "--connections",
            "1",
            "--messages",
            "4",
        ];
        let mut outcome = answered(4, 4);
        outcome.tally = Tally {
            attempts: 2,
            successes: 2,
            conflicts: 0,
            measured_successes: 2,
            ..Tally::default()
        };
        let verdict = |verified: bool| Verdict {
            value: Some(if verified { 2 } else { 1 }),
            version: Some(3),
            verified,
            problem: (!verified).then(|| "lost an increment".to_owned()),
        };
        let good = report(&flags, vec![answered(4, 4)], Some(verdict(true)));
        assert!(good.passed());
        let mut bad = report(&flags, vec![outcome], Some(verdict(false)));
        assert!(!bad.passed());
        assert!(
            bad.to_text().contains("NOT VERIFIED: lost an increment"),
            "{}",
            bad.to_text()
        );
        let json: Value = serde_json::from_str(&bad.to_json()).expect("valid JSON");
        assert_eq!(
            keys(&json["increments"]),
            [
                "attempts",
                "conflicts",
                "counter",
                "successes",
                "successes_per_s"
            ]
        );
        assert_eq!(json["increments"]["successes_per_s"], 1.0);
        assert_eq!(json["increments"]["counter"]["verified"], false);
        bad.increments = None;
        assert!(bad.passed(), "the rest of the run was clean");
    }

    #[test]
    fn preloaded_runs_report_hits_and_misses_and_do_not_pass_with_misses() {
        let flags = ["--get-ratio", "1", "--preloaded", "--messages", "3"];
        let mut outcome = answered(3, 3);
        outcome.mismatches = 1;
        outcome.tally.get_hits = 2;
        outcome.tally.get_misses = 1;
        let r = report(&flags[..], vec![outcome], None);
        assert!(!r.passed());
        assert!(r.to_text().contains("2 hits, 1 misses"), "{}", r.to_text());
        let json: Value = serde_json::from_str(&r.to_json()).expect("valid JSON");
        assert_eq!(json["preloaded_gets"]["hits"], 2);
        assert_eq!(json["preloaded_gets"]["misses"], 1);
        assert_eq!(json["workload"]["mix"]["preloaded"], true);
        let plain = report(&["--get-ratio", "1"], vec![], None);
        assert!(plain.preloaded_gets.is_none());
    }

    #[test]
    fn short_or_wrong_runs_do_not_pass() {
        let flags = ["--connections", "2", "--messages", "3"];
        assert!(
            !report(&flags, vec![answered(3, 6), answered(2, 4)], None).passed(),
            "a message missing"
        );
        let mut wrong = answered(3, 6);
        wrong.mismatches = 1;
        let r = report(&flags, vec![answered(3, 6), wrong], None);
        assert_eq!(r.errors, 1);
        assert!(!r.passed());
    }
}
