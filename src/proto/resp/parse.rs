//! Incremental, bounds-checked parsing of RESP commands: arrays of bulk
//! strings, as every Redis client sends them.
//!
//! ```text
//! *3\r\n $3\r\nSET\r\n $1\r\nk\r\n $5\r\nhello\r\n
//! ^ array of 3   ^ bulk of 3 bytes  ...
//! ```
//!
//! [`CommandParser::parse`] looks at the front of a receive buffer and returns
//! the byte ranges of the command's arguments once the whole command is there
//! (`Ok(None)`: need more bytes; nothing is copied; the next call resumes at
//! the first argument not yet complete). Every length is checked
//! against [`RespLimits`] *before* waiting for the bytes it announces, so a
//! client cannot make the server buffer more than `max_command_bytes` for one
//! command. A framing error is fatal for the connection ([`ProtocolError`]):
//! after it the stream cannot be resynchronised. Inline commands (plain lines
//! on a RESP connection) are not supported, except the empty line, which is
//! skipped as Redis skips it.

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
    /// An empty array (`*0`, `*-1`) or an empty line: Redis ignores them,
    /// and so do we.
    pub empty: bool,
}

/// Parses commands, resuming an incomplete one where it stopped: a command
/// that arrives in many reads has each argument parsed once, not once per
/// read (which a client could make quadratic with a large command of tiny
/// arguments).
#[derive(Debug, Default)]
pub struct CommandParser {
    partial: Option<Partial>,
}

/// An incomplete command: positions relative to its first byte, so they stay
/// valid when the bytes before it are consumed and it moves to the front.
#[derive(Debug)]
struct Partial {
    nr_args: usize,
    /// Where the next argument starts.
    next: usize,
    args: Vec<Range<usize>>,
}

impl CommandParser {
    /// Parses one command at the front of `buf`, appending its arguments'
    /// byte ranges to `args` (left as it was unless a whole command is
    /// returned). After `Ok(None)`, the next call must present the same
    /// command at the front of its `buf`, with more bytes after it.
    pub fn parse(
        &mut self,
        buf: &[u8],
        limits: &RespLimits,
        args: &mut Vec<Range<usize>>,
    ) -> Result<Option<Parsed>, ProtocolError> {
        let first_arg = args.len();
        let (nr_args, mut next) = match self.partial.take() {
            Some(partial) => {
                args.extend(partial.args);
                (partial.nr_args, partial.next)
            }
            None => match parse_array_header(buf, limits)? {
                Header::Incomplete => return Ok(None),
                Header::Empty(len) => return Ok(Some(Parsed { len, empty: true })),
                Header::Array { nr_args, first } => (nr_args, first),
            },
        };
        while args.len() - first_arg < nr_args {
            match parse_bulk(buf, next, limits) {
                Ok(Some(bulk)) => {
                    next = bulk.end + 2;
                    args.push(bulk);
                }
                Ok(None) => {
                    let args = args.drain(first_arg..).collect();
                    self.partial = Some(Partial {
                        nr_args,
                        next,
                        args,
                    });
                    return Ok(None);
                }
                Err(broken) => {
                    args.truncate(first_arg);
                    return Err(broken);
                }
            }
        }
        Ok(Some(Parsed {
            len: next,
            empty: false,
        }))
    }
}

/// Parses one command at the front of `buf` from scratch (see
/// [`CommandParser::parse`]).
pub fn parse_command(
    buf: &[u8],
    limits: &RespLimits,
    args: &mut Vec<Range<usize>>,
) -> Result<Option<Parsed>, ProtocolError> {
    CommandParser::default().parse(buf, limits, args)
}

enum Header {
    Incomplete,
    /// `*0`, `*-1` or an empty line, this many bytes.
    Empty(usize),
    Array {
        nr_args: usize,
        first: usize,
    },
}

fn parse_array_header(buf: &[u8], limits: &RespLimits) -> Result<Header, ProtocolError> {
    let Some(&first) = buf.first() else {
        return Ok(Header::Incomplete);
    };
    // An empty line between commands is an empty inline command, which
    // Redis skips: `redis-cli --pipe` sends one ("\r\n") before the ECHO
    // it ends a mass insertion with.
    match (first, buf.get(1)) {
        (b'\n', _) | (b'\r', Some(b'\n')) => {
            return Ok(Header::Empty(usize::from(first == b'\r') + 1))
        }
        (b'\r', None) => return Ok(Header::Incomplete),
        _ => {}
    }
    if first != b'*' {
        return Err(ProtocolError(format!(
            "expected '*', got '{}' (inline commands are not supported)",
            first.escape_ascii()
        )));
    }
    let Some((count, pos)) = header_line(buf, 1, "multibulk length")? else {
        return Ok(Header::Incomplete);
    };
    if count <= 0 {
        return Ok(Header::Empty(pos));
    }
    let max_args = limits.max_command_bytes / MIN_ARG_BYTES;
    if count as u64 > max_args as u64 {
        return Err(ProtocolError(format!(
            "invalid multibulk length: {count} arguments cannot fit in {} bytes (--max-frame-bytes)",
            limits.max_command_bytes
        )));
    }
    Ok(Header::Array {
        nr_args: count as usize,
        first: pos,
    })
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
    fn empty_and_null_arrays_and_empty_lines_are_skipped() {
        for wire in [&b"*0\r\n"[..], b"*-1\r\n", b"\r\n", b"\n"] {
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
    fn a_command_arriving_in_pieces_resumes_where_it_stopped() {
        let wire = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        let mut parser = CommandParser::default();
        let mut args = Vec::new();
        for cut in 1..wire.len() {
            let parsed = parser.parse(&wire[..cut], &LIMITS, &mut args);
            assert_eq!(parsed, Ok(None), "cut at {cut}");
            assert!(args.is_empty());
        }
        let parsed = parser.parse(wire, &LIMITS, &mut args).expect("valid");
        assert_eq!(parsed.map(|p| p.len), Some(wire.len()));
        let got: Vec<&[u8]> = args.iter().map(|r| &wire[r.clone()]).collect();
        assert_eq!(got, [&b"SET"[..], b"k", b"hello"]);
        // The parser starts afresh for the next command.
        args.clear();
        let next = parser.parse(b"*1\r\n$4\r\nPING\r\n", &LIMITS, &mut args);
        assert_eq!(next.expect("valid").map(|p| p.len), Some(14));
    }

    #[test]
    fn a_line_that_is_not_an_array_is_refused() {
        assert_eq!(
            parse(b"\r").expect("valid"),
            None,
            "a lone CR waits for its LF"
        );
        let err = parse(b"\rPING\r\n").expect_err("a CR without its LF");
        assert!(err.0.contains("inline"), "{err}");
        let err = parse(b"PING\r\n").expect_err("inline");
        assert!(err.0.contains("inline"), "{err}");
    }
}
