//! A minimal, allocation-free msgpack reader over a byte slice.
//!
//! The server never builds a tree of msgpack values: it only needs to find where
//! things are (a request's opcode, its key bytes, the exact byte span of its value)
//! so that values can be stored and returned byte-for-byte. This reader does that
//! and nothing more.
//!
//! Guarantees:
//! - Every read is bounds-checked; a truncated or invalid input is an `Err`, never a
//!   panic or an out-of-bounds access.
//! - [`Cursor::skip_value`] is iterative: a value nested a million levels deep costs
//!   no stack, and a container that claims more elements than bytes remain is
//!   rejected at once instead of being walked.

use std::ops::Range;

/// Why a byte sequence is not the msgpack the caller expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated msgpack: needed more bytes at offset {0}")]
    Truncated(usize),
    #[error("invalid msgpack marker 0x{marker:02x} at offset {offset}")]
    InvalidMarker { marker: u8, offset: usize },
    #[error("expected {expected} at offset {offset}")]
    Unexpected {
        expected: &'static str,
        offset: usize,
    },
}

/// A read position inside a byte slice holding msgpack.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// What a marker byte says about the value that follows it.
enum Shape {
    /// A scalar whose payload is `len` bytes after the marker.
    Fixed(usize),
    /// A str/bin/ext whose length is stored in the next `len_bytes` bytes
    /// (plus `extra` bytes, the ext type byte).
    Sized { len_bytes: usize, extra: usize },
    /// An array or map with `count` children; a map counts keys and values.
    Container { count: u64 },
    /// An array or map whose element count is in the next `len_bytes` bytes;
    /// `per_entry` is 2 for maps.
    SizedContainer { len_bytes: usize, per_entry: u64 },
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    /// A cursor over `buf` starting at `pos`; offsets it reports stay relative to `buf`.
    pub fn at(buf: &'a [u8], pos: usize) -> Self {
        Cursor { buf, pos }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or(DecodeError::Truncated(self.pos))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::Truncated(self.pos))
    }

    fn be_uint(&mut self, n: usize) -> Result<u64, DecodeError> {
        let bytes = self.take(n)?;
        Ok(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn unexpected(&self, expected: &'static str, offset: usize) -> DecodeError {
        DecodeError::Unexpected { expected, offset }
    }

    /// Reads an array header and returns its element count.
    pub fn read_array_len(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        match self.byte()? {
            m @ 0x90..=0x9f => Ok(u64::from(m & 0x0f)),
            0xdc => self.be_uint(2),
            0xdd => self.be_uint(4),
            _ => Err(self.unexpected("an array", start)),
        }
    }

    /// Reads any msgpack integer. Returns it as i128 so every u64 and i64 fits.
    pub fn read_int(&mut self) -> Result<i128, DecodeError> {
        let start = self.pos;
        let m = self.byte()?;
        let value = match m {
            0x00..=0x7f => i128::from(m),
            0xe0..=0xff => i128::from(m as i8),
            0xcc => i128::from(self.be_uint(1)?),
            0xcd => i128::from(self.be_uint(2)?),
            0xce => i128::from(self.be_uint(4)?),
            0xcf => i128::from(self.be_uint(8)?),
            0xd0 => i128::from(self.be_uint(1)? as u8 as i8),
            0xd1 => i128::from(self.be_uint(2)? as u16 as i16),
            0xd2 => i128::from(self.be_uint(4)? as u32 as i32),
            0xd3 => i128::from(self.be_uint(8)? as i64),
            _ => return Err(self.unexpected("an integer", start)),
        };
        Ok(value)
    }

    /// Reads a str or bin and returns the span of its payload bytes in the buffer.
    pub fn read_str_or_bin(&mut self) -> Result<Range<usize>, DecodeError> {
        let start = self.pos;
        let len = match self.byte()? {
            m @ 0xa0..=0xbf => u64::from(m & 0x1f),
            0xd9 | 0xc4 => self.be_uint(1)?,
            0xda | 0xc5 => self.be_uint(2)?,
            0xdb | 0xc6 => self.be_uint(4)?,
            _ => return Err(self.unexpected("a str or bin", start)),
        };
        let payload_start = self.pos;
        self.take(len as usize)?;
        Ok(payload_start..self.pos)
    }

    /// Skips one complete value of any type, however deeply nested, and returns
    /// its full byte span (marker included).
    pub fn skip_value(&mut self) -> Result<Range<usize>, DecodeError> {
        let start = self.pos;
        // Values still to be skipped, counting the one we were asked for. Every
        // value takes at least one byte, so a count above the remaining length is
        // a lie we can reject without walking it.
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            let children = self.skip_one_header()?;
            pending += children;
            let remaining = (self.buf.len() - self.pos) as u64;
            if pending > remaining {
                return Err(DecodeError::Truncated(self.buf.len()));
            }
        }
        Ok(start..self.pos)
    }

    /// Consumes one marker and its scalar payload; returns how many child values
    /// follow it (non-zero only for arrays and maps).
    fn skip_one_header(&mut self) -> Result<u64, DecodeError> {
        let offset = self.pos;
        let marker = self.byte()?;
        match shape_of(marker).ok_or(DecodeError::InvalidMarker { marker, offset })? {
            Shape::Fixed(len) => self.take(len).map(|_| 0),
            Shape::Sized { len_bytes, extra } => {
                let len = self.be_uint(len_bytes)? as usize;
                self.take(len.saturating_add(extra)).map(|_| 0)
            }
            Shape::Container { count } => Ok(count),
            Shape::SizedContainer {
                len_bytes,
                per_entry,
            } => Ok(self.be_uint(len_bytes)? * per_entry),
        }
    }
}

fn shape_of(marker: u8) -> Option<Shape> {
    use Shape::*;
    let shape = match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Fixed(0),
        0x80..=0x8f => Container {
            count: u64::from(marker & 0x0f) * 2,
        },
        0x90..=0x9f => Container {
            count: u64::from(marker & 0x0f),
        },
        0xa0..=0xbf => Fixed(usize::from(marker & 0x1f)),
        0xc1 => return None,
        0xc4 | 0xd9 => Sized {
            len_bytes: 1,
            extra: 0,
        },
        0xc5 | 0xda => Sized {
            len_bytes: 2,
            extra: 0,
        },
        0xc6 | 0xdb => Sized {
            len_bytes: 4,
            extra: 0,
        },
        0xc7 => Sized {
            len_bytes: 1,
            extra: 1,
        },
        0xc8 => Sized {
            len_bytes: 2,
            extra: 1,
        },
        0xc9 => Sized {
            len_bytes: 4,
            extra: 1,
        },
        0xca => Fixed(4),
        0xcb => Fixed(8),
        0xcc | 0xd0 => Fixed(1),
        0xcd | 0xd1 => Fixed(2),
        0xce | 0xd2 => Fixed(4),
        0xcf | 0xd3 => Fixed(8),
        0xd4 => Fixed(2),
        0xd5 => Fixed(3),
        0xd6 => Fixed(5),
        0xd7 => Fixed(9),
        0xd8 => Fixed(17),
        0xdc => SizedContainer {
            len_bytes: 2,
            per_entry: 1,
        },
        0xdd => SizedContainer {
            len_bytes: 4,
            per_entry: 1,
        },
        0xde => SizedContainer {
            len_bytes: 2,
            per_entry: 2,
        },
        0xdf => SizedContainer {
            len_bytes: 4,
            per_entry: 2,
        },
    };
    Some(shape)
}

impl Cursor<'_> {
    /// Reads a float (32 or 64 bits) or an integer, as an f64.
    pub fn read_f64(&mut self) -> Result<f64, DecodeError> {
        let start = self.pos;
        match self.peek()? {
            0xca => {
                self.byte()?;
                Ok(f64::from(f32::from_bits(self.be_uint(4)? as u32)))
            }
            0xcb => {
                self.byte()?;
                Ok(f64::from_bits(self.be_uint(8)?))
            }
            _ => self
                .read_int()
                .map(|n| n as f64)
                .map_err(|_| self.unexpected("a number", start)),
        }
    }

    /// True when the next value is an array (used to tell a request from garbage
    /// before committing to a decode path).
    pub fn next_is_array(&self) -> bool {
        matches!(self.peek(), Ok(0x90..=0x9f | 0xdc | 0xdd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(v: &rmpv::Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).expect("encode");
        out
    }

    #[test]
    fn skip_value_spans_every_kind_of_value() {
        use rmpv::Value;
        let values = [
            Value::Nil,
            Value::from(true),
            Value::from(-33),
            Value::from(u64::MAX),
            Value::from(1.5f64),
            Value::from("a string that is longer than thirty-one bytes, so str8"),
            Value::Binary(vec![7; 300]),
            Value::Array(vec![
                Value::from(1),
                Value::Map(vec![(Value::from("k"), Value::Nil)]),
            ]),
            Value::Ext(5, vec![1, 2, 3, 4]),
            Value::Ext(9, vec![0; 20]),
        ];
        for value in &values {
            let mut bytes = encode(value);
            bytes.push(0xc0);
            let mut cursor = Cursor::new(&bytes);
            assert_eq!(cursor.skip_value(), Ok(0..bytes.len() - 1), "{value:?}");
        }
    }

    #[test]
    fn skip_value_handles_deep_nesting_without_recursion() {
        let depth = 1_000_000;
        let mut bytes = vec![0x91u8; depth];
        bytes.push(0x01);
        assert_eq!(Cursor::new(&bytes).skip_value(), Ok(0..depth + 1));
        bytes.pop();
        assert!(Cursor::new(&bytes).skip_value().is_err());
    }

    #[test]
    fn containers_claiming_more_elements_than_bytes_are_rejected() {
        let bytes = [0xdd, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(matches!(
            Cursor::new(&bytes).skip_value(),
            Err(DecodeError::Truncated(_))
        ));
    }

    #[test]
    fn reserved_marker_is_invalid() {
        assert_eq!(
            Cursor::new(&[0xc1]).skip_value(),
            Err(DecodeError::InvalidMarker {
                marker: 0xc1,
                offset: 0
            })
        );
    }

    #[test]
    fn read_int_accepts_every_integer_encoding() {
        for n in [
            0i64,
            1,
            127,
            128,
            255,
            65_535,
            1 << 40,
            -1,
            -32,
            -33,
            -200,
            i64::MIN,
        ] {
            let bytes = encode(&rmpv::Value::from(n));
            assert_eq!(Cursor::new(&bytes).read_int(), Ok(i128::from(n)), "{n}");
        }
        let bytes = encode(&rmpv::Value::from(u64::MAX));
        assert_eq!(Cursor::new(&bytes).read_int(), Ok(i128::from(u64::MAX)));
    }
}
