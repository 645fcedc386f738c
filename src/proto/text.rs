//! The plain-text protocol: one command per line, words separated by spaces,
//! as in the kv-store seed's `nc` session.
//!
//! ```text
//! SET key value        → success
//! GET key              → value          (or: no value stored)
//! DELETE key           → success
//! ```
//!
//! A line is split into words; for the commands that take a value last (SET,
//! APPEND, SETNX, GETSET) the value is the rest of the line, spaces included.
//! The words then go through the same command parser as RESP
//! (`proto::resp::command`), so every single-key command works here too.

/// Longest line accepted; a longer one is refused and the connection closed.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Commands whose last argument is a value that may contain spaces.
const VALUE_LAST: [&[u8]; 4] = [b"SET", b"APPEND", b"SETNX", b"GETSET"];

/// A complete line at the front of the buffer: its length with the newline,
/// or `Err` if no newline came within [`MAX_LINE_BYTES`].
pub fn next_line(buf: &[u8]) -> Result<Option<usize>, LineTooLong> {
    match buf.iter().take(MAX_LINE_BYTES).position(|&b| b == b'\n') {
        Some(at) => Ok(Some(at + 1)),
        None if buf.len() >= MAX_LINE_BYTES => Err(LineTooLong),
        None => Ok(None),
    }
}

/// A line over [`MAX_LINE_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("line longer than {MAX_LINE_BYTES} bytes")]
pub struct LineTooLong;

/// Splits a line (without its newline) into arguments (`DELETE` is taken
/// as DEL by `proto::resp::command`).
pub fn words(line: &[u8]) -> Vec<&[u8]> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words: Vec<&[u8]> = Vec::new();
    let mut rest = trim_start(line);
    while !rest.is_empty() {
        let is_value = words.len() == 2
            && VALUE_LAST
                .iter()
                .any(|name| words[0].eq_ignore_ascii_case(name));
        if is_value {
            words.push(rest);
            break;
        }
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        words.push(&rest[..end]);
        rest = trim_start(&rest[end..]);
    }
    words
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != b' ').unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_splits_into_words_with_the_value_taking_the_rest() {
        assert_eq!(
            words(b"SET key two words\r"),
            [&b"SET"[..], b"key", b"two words"]
        );
        assert_eq!(words(b"  GET   key"), [&b"GET"[..], b"key"]);
        assert!(words(b"").is_empty());
    }

    #[test]
    fn lines_end_at_a_newline_within_the_limit() {
        assert_eq!(next_line(b"GET k\nSET"), Ok(Some(6)));
        assert_eq!(next_line(b"GET k"), Ok(None));
        assert_eq!(next_line(&vec![b'a'; MAX_LINE_BYTES]), Err(LineTooLong));
    }
}
