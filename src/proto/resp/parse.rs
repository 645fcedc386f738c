//! Incremental, bounds-checked parsing of RESP commands: arrays of bulk
//! strings, as every Redis client sends them.
//!
//! ```text
//! *3\r\n $3\r\nSET\r\n $1\r\nk\r\n $5\r\nhello\r\n
//! ^ array of 3   ^ bulk of 3 bytes  ...
//! ```
//!
//! [`parse_command`] looks at the front of a receive buffer and returns the
//! byte ranges of the command's arguments once the whole command is there
//! (`Ok(None)`: need more bytes; nothing is copied). Every length is checked
//! against [`RespLimits`] *before* waiting for the bytes it announces, so a
//! client cannot make the server buffer more than `max_command_bytes` for one
//! command. A framing error is fatal for the connection ([`ProtocolError`]):
//! after it the stream cannot be resynchronised. Inline commands (plain lines
//! on a RESP connection) are not supported.

use std::ops::Range;

/// Longest `*<count>` or `$<len>` header line accepted (digits, sign, CRLF).
const MAX_HEADER_LINE_BYTES: usize = 32;
/// Bytes every argument takes at least: `$0\r\n\r\n`; bounds the argument
/// count a command of `max_command_bytes` can announce.
const MIN_ARG_BYTES: usize = 6;

/// Limits a RESP connection enforces.
#[derive(Debug, Clone, Copy)]
pub struct RespLimits {
    /// A command's total size on the wire (`--max-frame-bytes`).
    pub max_command_bytes: usize,
}

/// The stream broke RESP framing; the reply is `-ERR Protocol error: …` and
/// the connection closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

/// A complete command at the front of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Bytes the command takes, to be consumed.
    pub len: usize,
    /// An empty array (`*0`, `*-1`): Redis ignores it, and so do we.
    pub empty: bool,
}

/// Parses one command at the front of `buf`, appending its arguments' byte
/// ranges to `args` (left as it was unless a whole command is returned).
pub fn parse_command(
    buf: &[u8],
    limits: &RespLimits,
    args: &mut Vec<Range<usize>>,
) -> Result<Option<Parsed>, ProtocolError> {
    let first_arg = args.len();
    let result = parse_array(buf, limits, args);
    if !matches!(result, Ok(Some(_))) {
        args.truncate(first_arg);
    }
    result
}

fn parse_array(
    buf: &[u8],
    limits: &RespLimits,
    args: &mut Vec<Range<usize>>,
) -> Result<Option<Parsed>, ProtocolError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first != b'*' {
        return Err(ProtocolError(format!(
            "expected '*', got '{}' (inline commands are not supported)",
            first.escape_ascii()
        )));
    }
    let Some((count, mut pos)) = header_line(buf, 1, "multibulk length")? else {
        return Ok(None);
    };
    if count <= 0 {
        return Ok(Some(Parsed {
            len: pos,
            empty: true,
        }));
    }
    let max_args = limits.max_command_bytes / MIN_ARG_BYTES;
    if count as u64 > max_args as u64 {
        return Err(ProtocolError(format!(
            "invalid multibulk length: {count} arguments cannot fit in {} bytes (--max-frame-bytes)",
            limits.max_command_bytes
        )));
    }
    for _ in 0..count {
        match parse_bulk(buf, pos, limits)? {
            Some(bulk) => {
                pos = bulk.end + 2;
                args.push(bulk);
            }
            None => return Ok(None),
        }
    }
    Ok(Some(Parsed {
        len: pos,
        empty: false,
    }))
}

/// Parses `$<len>\r\n<bytes>\r\n` at `pos`; returns the range of the bytes.
fn parse_bulk(
    buf: &[u8],
    pos: usize,
    limits: &RespLimits,
) -> Result<Option<Range<usize>>, ProtocolError> {
    let Some(&marker) = buf.get(pos) else {
        return Ok(None);
    };
    if marker != b'$' {
        return Err(ProtocolError(format!(
            "expected '$', got '{}'",
            marker.escape_ascii()
        )));
    }
    let Some((len, start)) = header_line(buf, pos + 1, "bulk length")? else {
        return Ok(None);
    };
    if len < 0 {
        return Err(ProtocolError("invalid bulk length".into()));
    }
    let end = start as u64 + len as u64;
    if end + 2 > limits.max_command_bytes as u64 {
        return Err(ProtocolError(format!(
            "invalid bulk length: the command would exceed {} bytes (--max-frame-bytes)",
            limits.max_command_bytes
        )));
    }
    let end = end as usize;
    if buf.len() < end + 2 {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(ProtocolError("bulk string not terminated by CRLF".into()));
    }
    Ok(Some(start..end))
}

/// Reads a decimal integer line starting at `pos` (after its marker); returns
/// it and the position after its CRLF.
fn header_line(buf: &[u8], pos: usize, what: &str) -> Result<Option<(i64, usize)>, ProtocolError> {
    let window = &buf[pos..buf.len().min(pos + MAX_HEADER_LINE_BYTES)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if window.len() >= MAX_HEADER_LINE_BYTES {
            return Err(ProtocolError(format!("invalid {what}: line too long")));
        }
        return Ok(None);
    };
    match window.get(cr + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(ProtocolError(format!("invalid {what}: CR without LF"))),
    }
    let number = std::str::from_utf8(&window[..cr])
        .ok()
        .and_then(|text| text.parse::<i64>().ok())
        .ok_or_else(|| ProtocolError(format!("invalid {what}")))?;
    Ok(Some((number, pos + cr + 2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RespLimits = RespLimits {
        max_command_bytes: 1024,
    };

    type Arguments = Vec<Vec<u8>>;

    fn parse(buf: &[u8]) -> Result<Option<(Parsed, Arguments)>, ProtocolError> {
        let mut args = Vec::new();
        let parsed = parse_command(buf, &LIMITS, &mut args)?;
        Ok(parsed.map(|p| (p, args.iter().map(|r| buf[r.clone()].to_vec()).collect())))
    }

    #[test]
    fn a_complete_command_yields_its_arguments_and_length() {
        let wire = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n*1\r\n";
        let (parsed, args) = parse(wire).expect("valid").expect("complete");
        assert_eq!(args, [b"SET".to_vec(), b"k".to_vec(), Vec::new()]);
        assert_eq!(parsed.len, wire.len() - 4);
        assert!(!parsed.empty);
    }

    #[test]
    fn every_prefix_of_a_command_asks_for_more_bytes() {
        let wire = b"*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n";
        for cut in 0..wire.len() {
            assert_eq!(parse(&wire[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(parse(wire).expect("valid").is_some());
    }

    #[test]
    fn empty_and_null_arrays_are_skipped() {
        for wire in [&b"*0\r\n"[..], b"*-1\r\n"] {
            let (parsed, args) = parse(wire).expect("valid").expect("complete");
            assert!(parsed.empty && args.is_empty());
            assert_eq!(parsed.len, wire.len());
        }
    }

    #[test]
    fn hostile_lengths_are_protocol_errors_before_any_bytes_arrive() {
        let cases: [&[u8]; 9] = [
            b"*99999999999\r\n",
            b"*1000\r\n",
            b"*1\r\n$-1\r\n",
            b"*1\r\n$2000\r\n",
            b"*1\r\n$99999999999999999999999\r\n",
            b"*x\r\n",
            b"*1\r\n:1\r\n",
            b"*1\r\n$1\r\nab\r\n",
            b"*111111111111111111111111111111111111111",
        ];
        for wire in cases {
            assert!(
                parse(wire).is_err(),
                "{:?}",
                wire.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn a_line_that_is_not_an_array_is_refused() {
        let err = parse(b"PING\r\n").expect_err("inline");
        assert!(err.0.contains("inline"), "{err}");
    }
}
