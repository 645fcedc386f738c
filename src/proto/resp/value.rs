//! Values are bytes across protocols: how a stored msgpack value reads as a
//! Redis string, and how a Redis string is stored.
//!
//! | stored msgpack value | as a Redis string |
//! |---|---|
//! | bin, str | its bytes |
//! | integer | its decimal text (INCR works on it) |
//! | anything else | `-WRONGTYPE` |
//!
//! A value written over RESP or the text protocol is stored as msgpack bin, so
//! a msgpack GET returns it byte for byte.

use crate::proto::msgpack::Cursor;
use crate::proto::reply;

pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// A stored value seen as a Redis string.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stored<'a> {
    Bytes(&'a [u8]),
    Int(i128),
    /// Nil, bool, float, array, map, ext: not a string.
    Other,
}

impl<'a> Stored<'a> {
    /// Reads the complete msgpack encoding of a stored value.
    pub fn of(msgpack: &'a [u8]) -> Stored<'a> {
        let mut cursor = Cursor::new(msgpack);
        if let Ok(range) = cursor.read_str_or_bin() {
            if cursor.is_empty() {
                return Stored::Bytes(&msgpack[range]);
            }
        }
        let mut cursor = Cursor::new(msgpack);
        match cursor.read_int() {
            Ok(n) if cursor.is_empty() => Stored::Int(n),
            _ => Stored::Other,
        }
    }

    /// The string's bytes; `scratch` holds an integer's text.
    pub fn bytes<'s>(&self, scratch: &'s mut Vec<u8>) -> Option<&'s [u8]>
    where
        'a: 's,
    {
        match *self {
            Stored::Bytes(bytes) => Some(bytes),
            Stored::Int(n) => {
                scratch.clear();
                scratch.extend_from_slice(n.to_string().as_bytes());
                Some(scratch)
            }
            Stored::Other => None,
        }
    }

    /// The value as a 64-bit integer, as INCR reads it: `None` if it is a
    /// string that is not one, `Err` if it is not a string at all.
    pub fn as_i64(&self) -> Result<Option<i64>, WrongType> {
        match *self {
            Stored::Bytes(bytes) => Ok(parse_i64(bytes)),
            Stored::Int(n) => Ok(i64::try_from(n).ok()),
            Stored::Other => Err(WrongType),
        }
    }
}

/// The stored value is not a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongType;

/// Appends `bytes` stored as msgpack bin (the form every RESP write stores).
pub fn write_as_bin(out: &mut Vec<u8>, bytes: &[u8]) {
    reply::write_bin(out, bytes);
}

/// Parses a decimal integer as Redis's string2ll does: optional `-`, no `+`,
/// no spaces, no leading zeros, within i64.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let canonical = match digits {
        [] => false,
        [b'0'] => bytes.len() == 1,
        [first, ..] => *first != b'0' && digits.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Parses a float as INCRBYFLOAT does: finite, no surrounding spaces.
pub fn parse_f64(bytes: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.is_empty() || text.trim() != text {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    value.is_finite().then_some(value)
}

/// A float's text as Redis writes INCRBYFLOAT's result: plain decimal, no
/// exponent, no trailing zeros.
pub fn format_f64(value: f64) -> String {
    let text = format!("{value}");
    if text == "-0" {
        return "0".into();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_integers_read_as_bytes_and_the_rest_is_the_wrong_type() {
        let mut scratch = Vec::new();
        assert_eq!(
            Stored::of(b"\xc4\x02hi").bytes(&mut scratch),
            Some(&b"hi"[..])
        );
        assert_eq!(Stored::of(b"\xa2hi").bytes(&mut scratch), Some(&b"hi"[..]));
        assert_eq!(
            Stored::of(b"\xd0\xfe").bytes(&mut scratch),
            Some(&b"-2"[..])
        );
        assert_eq!(Stored::of(b"\x92\x01\x02"), Stored::Other);
        assert_eq!(Stored::of(b"\xc0"), Stored::Other);
        assert_eq!(Stored::of(b"\x92\x01\x02").as_i64(), Err(WrongType));
        assert_eq!(Stored::of(b"\x07").as_i64(), Ok(Some(7)));
    }

    #[test]
    fn integers_parse_only_in_canonical_form() {
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"0"), Some(0));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"01",
            b"+1",
            b" 1",
            b"1.0",
            b"9223372036854775808",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", bad.escape_ascii().to_string());
        }
    }

    #[test]
    fn floats_parse_finite_and_format_without_noise() {
        assert_eq!(parse_f64(b"10.5"), Some(10.5));
        assert_eq!(parse_f64(b"5.0e3"), Some(5000.0));
        for bad in [&b"nan"[..], b"inf", b" 1", b"", b"abc"] {
            assert_eq!(parse_f64(bad), None);
        }
        assert_eq!(format_f64(10.5 + 0.1), "10.6");
        assert_eq!(format_f64(3.0), "3");
        assert_eq!(format_f64(5000.0), "5000");
    }
}
