//! Prints an [`Outcome`] for people or, with `--json`, for scripts, and picks
//! the exit status. The formats are documented in docs/cli.md; tests/cli.rs
//! holds them to it.
//!
//! Human output (stdout unless noted):
//! - `set`, `mset`: nothing.
//! - `get`: a str value as its text, a newline; any other value in its
//!   [`render::readable`] form, a newline; missing: `Key not found`.
//!   `--raw`: the value's bytes, no newline; missing: `Key not found` on stderr.
//! - `rm`: nothing; missing: `Key not found` on stderr.
//! - `mget`: `KEY: RENDERING` or `KEY: Key not found`, one line per key.
//! - `mrm`: `KEY: deleted` or `KEY: Key not found`, one line per key.
//! - `stats`: aligned `Label: value` lines, known metrics first.
//! - `ping`: `PONG`.
//! - `backup`: one line naming the directory, the shards, entries and bytes.
//! - `expire`: nothing; missing: `Key not found` on stderr.
//! - `ttl`: `N ms`, `no expiry`, or `Key not found`.
//! - `persist`: nothing; a key missing or without an expiry: a note on stderr.
//!
//! JSON output: exactly one compact JSON document and a newline on stdout.

use super::commands::Outcome;
use super::render;
use crate::client::KeyTtl;
use rmpv::Value;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{self, Write};

/// The message for a missing key, as the kvs spec spells it.
pub const KEY_NOT_FOUND: &str = "Key not found";
/// `ttl` of a key that never expires.
pub const NO_EXPIRY: &str = "no expiry";
/// `persist` of a key that is missing or has no expiry.
pub const NO_EXPIRY_TO_REMOVE: &str = "Key not found or it has no expiry";

/// How a run that reached the server ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Exit 0.
    Success,
    /// Exit 3: `rm` of a missing key, `mrm` with a missing key, `get --raw` of
    /// a missing key.
    NotFound,
}

impl Status {
    pub const NOT_FOUND_EXIT_CODE: u8 = 3;

    pub fn exit_code(self) -> u8 {
        match self {
            Status::Success => 0,
            Status::NotFound => Self::NOT_FOUND_EXIT_CODE,
        }
    }
}

/// Writes the outcome to `out` (and `Key not found` notes to `err`).
///
/// A reader that goes away early (`corekv mget … | head -1`) is not an error:
/// like other Unix tools, corekv stops writing quietly, with the status the
/// outcome calls for.
pub fn print(
    outcome: &Outcome,
    as_json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<Status> {
    let written = if as_json {
        writeln!(out, "{}", json_document(outcome)).and_then(|()| note_not_found(outcome, err))
    } else {
        print_human(outcome, out, err)
    };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e),
        _ => Ok(status(outcome)),
    }
}

fn status(outcome: &Outcome) -> Status {
    let missing = match outcome {
        Outcome::Get { value, raw, .. } => *raw && value.is_none(),
        Outcome::Rm { existed, .. } | Outcome::Expire { existed, .. } => !existed,
        Outcome::Persist { removed, .. } => !removed,
        Outcome::Mrm(results) => results.iter().any(|(_, existed)| !existed),
        _ => false,
    };
    if missing {
        Status::NotFound
    } else {
        Status::Success
    }
}

/// With `--json`, stdout holds only the document; the not-found note that
/// makes the exit status non-zero still goes to stderr.
fn note_not_found(outcome: &Outcome, err: &mut dyn Write) -> io::Result<()> {
    match outcome {
        Outcome::Rm { existed: false, .. } | Outcome::Expire { existed: false, .. } => {
            writeln!(err, "{KEY_NOT_FOUND}")
        }
        Outcome::Persist { removed: false, .. } => writeln!(err, "{NO_EXPIRY_TO_REMOVE}"),
        Outcome::Mrm(results) => note_mrm_missing(results, err),
        _ => Ok(()),
    }
}

fn print_human(outcome: &Outcome, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<()> {
    match outcome {
        Outcome::Set { .. } | Outcome::Mset { .. } | Outcome::Rm { existed: true, .. } => Ok(()),
        Outcome::Rm { existed: false, .. } => writeln!(err, "{KEY_NOT_FOUND}"),
        Outcome::Expire { existed, .. }
        | Outcome::Persist {
            removed: existed, ..
        } if *existed => Ok(()),
        Outcome::Expire { .. } | Outcome::Persist { .. } => note_not_found(outcome, err),
        Outcome::Ttl { ttl, .. } => match ttl {
            KeyTtl::Remaining(ms) => writeln!(out, "{ms} ms"),
            KeyTtl::NoDeadline => writeln!(out, "{NO_EXPIRY}"),
            KeyTtl::Missing => writeln!(out, "{KEY_NOT_FOUND}"),
        },
        Outcome::Get { value, raw, .. } => print_get(value.as_ref(), *raw, out, err),
        Outcome::Mget(values) => values.iter().try_for_each(|(key, value)| {
            let shown = value.as_ref().map(render::readable);
            let shown = shown.as_deref().unwrap_or(KEY_NOT_FOUND);
            writeln!(out, "{}: {shown}", show_key(key))
        }),
        Outcome::Mrm(results) => {
            for (key, existed) in results {
                let shown = if *existed { "deleted" } else { KEY_NOT_FOUND };
                writeln!(out, "{}: {shown}", show_key(key))?;
            }
            note_mrm_missing(results, err)
        }
        Outcome::Keys(keys) => keys
            .iter()
            .try_for_each(|key| writeln!(out, "{}", show_key(key))),
        Outcome::Stats(stats) => print_stats(stats, out),
        Outcome::Pong { .. } => writeln!(out, "PONG"),
        Outcome::Backup(report) => writeln!(
            out,
            "backup written to {}: {} shards, {} entries, {} bytes in {:.3} s",
            report["dir"].as_str().unwrap_or("?"),
            report["shards"],
            report["entries"],
            report["bytes"],
            report["seconds"].as_f64().unwrap_or(0.0)
        ),
    }
}

fn note_mrm_missing(results: &[(String, bool)], err: &mut dyn Write) -> io::Result<()> {
    let missing = results.iter().filter(|(_, existed)| !existed).count();
    if missing == 0 {
        return Ok(());
    }
    writeln!(err, "{missing} of {} keys not found", results.len())
}

fn print_get(
    value: Option<&Value>,
    raw: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<()> {
    match (value, raw) {
        (None, false) => writeln!(out, "{KEY_NOT_FOUND}"),
        (None, true) => writeln!(err, "{KEY_NOT_FOUND}"),
        (Some(value), true) => out.write_all(&raw_bytes(value)),
        (Some(Value::String(s)), false) => {
            out.write_all(s.as_bytes())?;
            writeln!(out)
        }
        (Some(other), false) => writeln!(out, "{}", render::readable(other)),
    }
}

/// `--raw`: a bin or str value's own bytes; any other value's msgpack encoding.
fn raw_bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::Binary(bytes) => bytes.clone(),
        Value::String(s) => s.as_bytes().to_vec(),
        other => {
            let mut bytes = Vec::new();
            rmpv::encode::write_value(&mut bytes, other).expect("writing to a Vec cannot fail");
            bytes
        }
    }
}

/// A key as given, unless it holds control characters (a newline would break
/// the one-line-per-key format): then JSON-quoted.
fn show_key(key: &str) -> String {
    if key.chars().any(char::is_control) {
        serde_json::Value::String(key.to_owned()).to_string()
    } else {
        key.to_owned()
    }
}

/// Human labels for the STATS names docs/protocol.md defines, in print order.
/// Names the server does not report are skipped.
const STATS_LABELS: [(&str, &str); 23] = [
    ("keys", "Keys stored"),
    ("expires", "  with an expiry"),
    ("value_bytes", "Bytes of values"),
    ("memory_bytes", "Memory used (estimate)"),
    ("gets", "Get operations"),
    ("hits", "  found"),
    ("misses", "  not found"),
    ("sets", "Set operations"),
    ("deletes", "Delete operations"),
    ("version_conflicts", "Version conflicts"),
    ("atomic_commits", "Atomic batches committed"),
    ("atomic_aborts", "Atomic batches aborted"),
    ("oom_rejections", "Writes refused (OOM)"),
    ("expired_keys", "Keys expired"),
    ("evicted_keys", "Keys evicted"),
    ("disk_reads", "Values read from disk"),
    ("disk_read_bytes", "  bytes"),
    ("disk_cache_hits", "Disk cache hits (values not read)"),
    ("disk_cache_bytes", "Disk cache memory"),
    ("write_pacing_waits", "Writes paced for compaction"),
    ("write_pacing_wait_us", "  time waited (µs)"),
    ("shards", "Shards"),
    ("connections", "Open connections"),
];

/// Names whose values are byte counts: printed with a binary-unit figure too.
const STATS_BYTE_NAMES: [&str; 4] = [
    "value_bytes",
    "memory_bytes",
    "disk_read_bytes",
    "disk_cache_bytes",
];

fn print_stats(stats: &BTreeMap<String, u64>, out: &mut dyn Write) -> io::Result<()> {
    let known = STATS_LABELS
        .iter()
        .filter_map(|&(name, label)| Some((name, label.to_owned(), *stats.get(name)?)))
        .collect::<Vec<_>>();
    let is_known = |name: &str| known.iter().any(|(n, ..)| *n == name);
    let unknown = stats
        .iter()
        .filter(|(name, _)| !is_known(name))
        .map(|(name, value)| (name.as_str(), name.clone(), *value));
    let rows: Vec<(&str, String, u64)> = known.iter().cloned().chain(unknown).collect();
    let width = rows
        .iter()
        .map(|(_, label, _)| label.len() + 1)
        .max()
        .unwrap_or(0);
    for (name, label, value) in rows {
        let label = format!("{label}:");
        let value = if STATS_BYTE_NAMES.contains(&name) {
            with_binary_units(value)
        } else {
            value.to_string()
        };
        writeln!(out, "{label:<width$} {value}")?;
    }
    Ok(())
}

/// `1234` → `1234`; `123456` → `123456 (120.6 KiB)`.
fn with_binary_units(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return bytes.to_string();
    }
    let mut scaled = bytes as f64;
    let mut unit = 0;
    while scaled >= 1024.0 && unit + 1 < UNITS.len() {
        scaled /= 1024.0;
        unit += 1;
    }
    format!("{bytes} ({scaled:.1} {})", UNITS[unit])
}

/// The `--json` document of each subcommand (docs/cli.md, "JSON output").
pub fn json_document(outcome: &Outcome) -> serde_json::Value {
    match outcome {
        Outcome::Set { key } => json!({ "key": key, "ok": true }),
        Outcome::Get { key, value, .. } => get_json(key, value.as_ref()),
        Outcome::Rm { key, existed } => json!({ "key": key, "existed": existed }),
        Outcome::Mget(values) => values
            .iter()
            .map(|(key, value)| get_json(key, value.as_ref()))
            .collect(),
        Outcome::Mset { keys } => json!({ "keys": keys, "ok": true }),
        Outcome::Mrm(results) => results
            .iter()
            .map(|(key, existed)| json!({ "key": key, "existed": existed }))
            .collect(),
        Outcome::Keys(keys) => json!(keys),
        Outcome::Stats(stats) => json!(stats),
        Outcome::Pong { addr, round_trip } => json!({
            "pong": true,
            "addr": addr.to_string(),
            "round_trip_ms": round_trip.as_secs_f64() * 1e3,
        }),
        Outcome::Backup(report) => report.clone(),
        Outcome::Expire { key, existed } => json!({ "key": key, "existed": existed }),
        Outcome::Ttl { key, ttl } => match ttl {
            KeyTtl::Missing => json!({ "key": key, "found": false }),
            KeyTtl::NoDeadline => json!({ "key": key, "found": true, "ttl_ms": null }),
            KeyTtl::Remaining(ms) => json!({ "key": key, "found": true, "ttl_ms": ms }),
        },
        Outcome::Persist { key, removed } => json!({ "key": key, "persisted": removed }),
    }
}

fn get_json(key: &str, value: Option<&Value>) -> serde_json::Value {
    match value {
        None => json!({ "key": key, "found": false }),
        Some(value) => json!({
            "key": key,
            "found": true,
            "type": render::type_name(value),
            "value": render::json(value),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn human(outcome: &Outcome) -> (String, String, Status) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = print(outcome, false, &mut out, &mut err).expect("write to Vec");
        let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8");
        (text(out), text(err), status)
    }

    #[test]
    fn get_prints_str_values_as_text_and_others_rendered() {
        let get = |value: Option<Value>| Outcome::Get {
            key: "k".into(),
            value,
            raw: false,
        };
        assert_eq!(human(&get(Some("hi".into()))).0, "hi\n");
        assert_eq!(human(&get(Some(Value::from(42)))).0, "42\n");
        assert_eq!(human(&get(Some(Value::Binary(vec![1])))).0, "b\"\\x01\"\n");
        assert_eq!(
            human(&get(None)),
            ("Key not found\n".into(), String::new(), Status::Success)
        );
    }

    #[test]
    fn raw_get_of_a_missing_key_reports_on_stderr_and_fails() {
        let outcome = Outcome::Get {
            key: "k".into(),
            value: None,
            raw: true,
        };
        assert_eq!(
            human(&outcome),
            (String::new(), "Key not found\n".into(), Status::NotFound)
        );
    }

    #[test]
    fn mget_lines_quote_strings_so_missing_keys_are_unambiguous() {
        let outcome = Outcome::Mget(vec![
            ("a".into(), Some("Key not found".into())),
            ("b".into(), None),
            ("c\nd".into(), Some(Value::from(1))),
        ]);
        assert_eq!(
            human(&outcome).0,
            "a: \"Key not found\"\nb: Key not found\n\"c\\nd\": 1\n"
        );
    }

    #[test]
    fn mrm_reports_every_key_and_fails_if_one_was_missing() {
        let outcome = Outcome::Mrm(vec![("a".into(), true), ("b".into(), false)]);
        assert_eq!(
            human(&outcome),
            (
                "a: deleted\nb: Key not found\n".into(),
                "1 of 2 keys not found\n".into(),
                Status::NotFound
            )
        );
    }

    #[test]
    fn stats_use_labels_and_keep_unknown_names() {
        let stats: BTreeMap<String, u64> = [("keys", 2), ("value_bytes", 2048), ("future", 7)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(
            human(&Outcome::Stats(stats)).0,
            "Keys stored:     2\nBytes of values: 2048 (2.0 KiB)\nfuture:          7\n"
        );
    }

    #[test]
    fn a_reader_that_went_away_is_not_an_error() {
        struct ClosedPipe;
        impl Write for ClosedPipe {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let outcome = Outcome::Mget(vec![("a".into(), None)]);
        let status = print(&outcome, false, &mut ClosedPipe, &mut Vec::new());
        assert_eq!(status.ok(), Some(Status::Success));
    }

    #[test]
    fn byte_counts_get_binary_units_from_one_kibibyte() {
        assert_eq!(with_binary_units(1023), "1023");
        assert_eq!(with_binary_units(1536), "1536 (1.5 KiB)");
        assert_eq!(with_binary_units(3 << 30), "3221225472 (3.0 GiB)");
    }

    #[test]
    fn json_documents_have_the_documented_shapes() {
        let mget = Outcome::Mget(vec![("a".into(), Some("x".into())), ("b".into(), None)]);
        assert_eq!(
            json_document(&mget),
            json!([
                {"key": "a", "found": true, "type": "str", "value": "x"},
                {"key": "b", "found": false}
            ])
        );
        let rm = Outcome::Rm {
            key: "a".into(),
            existed: false,
        };
        assert_eq!(json_document(&rm), json!({"key": "a", "existed": false}));
    }
}
