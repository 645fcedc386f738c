//! Renderings of stored msgpack values for people and for scripts. Pure
//! functions, no I/O; `output` decides which one a command prints.
//!
//! - [`readable`]: one line, JSON-like. str values are double-quoted with JSON
//!   escapes, bin values are `b"..."` with `\xNN` escapes ([`escape_bytes`]),
//!   arrays and maps look like JSON (map keys that are not strings are rendered
//!   readably too), ext values are `ext(TYPE, b"...")`. A rendering never
//!   contains a raw newline and never starts with a letter other than those of
//!   `true`, `false`, `null`, `NaN`, `inf`, `b"` and `ext(`, so it cannot be
//!   mistaken for the words `Key not found`.
//! - [`json`]: a `serde_json::Value` for `--json`. bin is an array of byte
//!   numbers (as in the HTTP API, BRIEF §7), ext is `{"ext_type", "data"}`,
//!   non-finite floats are `null`, map keys that are not strings become their
//!   readable rendering. [`type_name`] tells a script which msgpack type it was.

use rmpv::{Utf8String, Value};
use serde_json::json;
use std::fmt::Write;

/// The msgpack type of a value, as `--json` reports it in `"type"`.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Boolean(_) => "bool",
        Value::Integer(_) => "int",
        Value::F32(_) | Value::F64(_) => "float",
        Value::String(_) => "str",
        Value::Binary(_) => "bin",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        Value::Ext(..) => "ext",
    }
}

/// One-line, JSON-like rendering (see the module docs).
pub fn readable(value: &Value) -> String {
    let mut out = String::new();
    write_readable(&mut out, value);
    out
}

fn write_readable(out: &mut String, value: &Value) {
    match value {
        Value::Nil => out.push_str("null"),
        Value::Boolean(b) => push_display(out, b),
        Value::Integer(i) => push_display(out, i),
        Value::F32(f) => push_float(out, f64::from(*f)),
        Value::F64(f) => push_float(out, *f),
        Value::String(s) => out.push_str(&quote_str(s)),
        Value::Binary(bytes) => out.push_str(&escape_bytes(bytes)),
        Value::Array(items) => write_seq(out, ('[', ']'), items.iter(), write_readable),
        Value::Map(entries) => write_seq(out, ('{', '}'), entries.iter(), |out, (k, v)| {
            write_readable(out, k);
            out.push_str(": ");
            write_readable(out, v);
        }),
        Value::Ext(tag, bytes) => {
            let _ = write!(out, "ext({tag}, {})", escape_bytes(bytes));
        }
    }
}

fn write_seq<T>(
    out: &mut String,
    (open, close): (char, char),
    items: impl Iterator<Item = T>,
    mut write_item: impl FnMut(&mut String, T),
) {
    out.push(open);
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_item(out, item);
    }
    out.push(close);
}

fn push_display(out: &mut String, x: impl std::fmt::Display) {
    let _ = write!(out, "{x}");
}

/// `1.0` (not `1`), `NaN`, `inf`, `-inf`.
fn push_float(out: &mut String, f: f64) {
    let _ = write!(out, "{f:?}");
}

/// A str value as a JSON string literal; invalid UTF-8 (which a msgpack str may
/// carry) is replaced by U+FFFD.
fn quote_str(s: &Utf8String) -> String {
    let text = String::from_utf8_lossy(s.as_bytes());
    serde_json::Value::String(text.into_owned()).to_string()
}

/// Bytes as `b"..."`: printable ASCII as itself, `\\`, `\"`, `\n`, `\r`, `\t`,
/// `\0`, anything else as `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 3);
    out.push_str("b\"");
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0 => out.push_str("\\0"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
    out
}

/// The `--json` form of a value (see the module docs).
pub fn json(value: &Value) -> serde_json::Value {
    match value {
        Value::Nil => serde_json::Value::Null,
        Value::Boolean(b) => json!(b),
        Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => json!(u),
            (None, Some(s)) => json!(s),
            (None, None) => serde_json::Value::Null,
        },
        Value::F32(f) => float_json(f64::from(*f)),
        Value::F64(f) => float_json(*f),
        Value::String(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        Value::Binary(bytes) => json!(bytes),
        Value::Array(items) => items.iter().map(json).collect(),
        Value::Map(entries) => {
            serde_json::Value::Object(entries.iter().map(|(k, v)| (map_key(k), json(v))).collect())
        }
        Value::Ext(tag, bytes) => json!({ "ext_type": tag, "data": bytes }),
    }
}

fn float_json(f: f64) -> serde_json::Value {
    serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

fn map_key(key: &Value) -> String {
    match key {
        Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => readable(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_escape_to_a_printable_byte_string() {
        assert_eq!(
            escape_bytes(b"a\"\\\n\r\t\0\x7f\xff z"),
            r#"b"a\"\\\n\r\t\0\x7f\xff z""#
        );
    }

    #[test]
    fn readable_renderings_are_json_like_and_one_line() {
        let map = Value::Map(vec![
            (
                "k".into(),
                Value::Array(vec![1.into(), "two\nlines".into()]),
            ),
            (Value::from(7), Value::Nil),
        ]);
        assert_eq!(readable(&map), r#"{"k": [1, "two\nlines"], 7: null}"#);
        assert_eq!(readable(&Value::F64(1.0)), "1.0");
        assert_eq!(readable(&Value::Boolean(true)), "true");
        assert_eq!(readable(&Value::from(-5)), "-5");
        assert_eq!(readable(&Value::Binary(vec![0, b'a'])), r#"b"\0a""#);
        assert_eq!(
            readable(&Value::Ext(3, vec![1])),
            r#"ext(3, b"\x01")"#.to_owned()
        );
    }

    #[test]
    fn json_renders_bin_as_byte_numbers_and_keeps_structure() {
        let value = Value::Map(vec![
            ("b".into(), Value::Binary(vec![0, 255])),
            (Value::from(1), Value::F64(f64::NAN)),
            ("n".into(), Value::from(u64::MAX)),
            ("neg".into(), Value::from(i64::MIN)),
        ]);
        assert_eq!(
            json(&value),
            json!({"b": [0, 255], "1": null, "n": u64::MAX, "neg": i64::MIN})
        );
        assert_eq!(
            json(&Value::Ext(-1, vec![9])),
            json!({"ext_type": -1, "data": [9]})
        );
    }

    #[test]
    fn every_type_has_a_name() {
        let names: Vec<&str> = [
            Value::Nil,
            Value::Boolean(false),
            Value::from(1),
            Value::F32(1.5),
            Value::from("s"),
            Value::Binary(vec![]),
            Value::Array(vec![]),
            Value::Map(vec![]),
            Value::Ext(1, vec![]),
        ]
        .iter()
        .map(type_name)
        .collect();
        assert_eq!(
            names,
            ["nil", "bool", "int", "float", "str", "bin", "array", "map", "ext"]
        );
    }
}
