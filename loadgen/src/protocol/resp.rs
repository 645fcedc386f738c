//! Redis's RESP: each request of a message is one command, and a message is
//! simply the commands of one batch pipelined together; its reply is the
//! concatenation of their replies.
//!
//! ```text
//! SET: *3\r\n $3\r\nSET\r\n $16\r\n<key>\r\n $<n>\r\n<value>\r\n   → +OK\r\n
//! GET: *2\r\n $3\r\nGET\r\n $16\r\n<key>\r\n                       → $<n>\r\n<value>\r\n
//!                                                                     $-1\r\n (never written)
//! ```
//!
//! Only SET and GET: ATOMIC, PUTV and the increments workload are corekv-only
//! and refused by the configuration.
//!
//! RESP replies carry no message-level length, so [`reply_len`] walks the
//! replies one by one to find where a message's replies end; anything that is
//! not well-formed RESP there makes the stream unreadable.

use super::BadReply;
use crate::template::Template;
use crate::workload::Shape;

/// Nesting depth of RESP arrays accepted in a reply (SET and GET reply none).
const MAX_DEPTH: usize = 8;

pub fn request_template(shape: &Shape) -> Template {
    let mut t = Template::new(shape.key_bytes, shape.value_bytes);
    for write in 0..shape.writes as usize {
        t.bytes_mut().extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
        bulk_header(t.bytes_mut(), shape.key_bytes);
        t.key_hole(write);
        t.bytes_mut().extend_from_slice(b"\r\n");
        bulk_header(t.bytes_mut(), shape.value_bytes);
        t.value_hole(write);
        t.bytes_mut().extend_from_slice(b"\r\n");
    }
    for get in 0..shape.gets as usize {
        t.bytes_mut().extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
        bulk_header(t.bytes_mut(), shape.key_bytes);
        t.key_hole(shape.writes as usize + get);
        t.bytes_mut().extend_from_slice(b"\r\n");
    }
    t
}

pub fn reply_template(shape: &Shape) -> Template {
    let mut t = Template::new(shape.key_bytes, shape.value_bytes);
    for _ in 0..shape.writes {
        t.bytes_mut().extend_from_slice(b"+OK\r\n");
    }
    for get in 0..shape.gets {
        if shape.gets_find_values() {
            bulk_header(t.bytes_mut(), shape.value_bytes);
            t.value_hole((get % shape.writes) as usize);
            t.bytes_mut().extend_from_slice(b"\r\n");
        } else {
            t.bytes_mut().extend_from_slice(b"$-1\r\n");
        }
    }
    t
}

/// Bytes taken by the first `nr_replies` complete replies in `buf`.
pub fn reply_len(buf: &[u8], nr_replies: usize) -> Result<Option<usize>, BadReply> {
    let mut at = 0;
    for _ in 0..nr_replies {
        match skip_reply(buf, at, 0)? {
            Some(end) => at = end,
            None => return Ok(None),
        }
    }
    Ok(Some(at))
}

/// Where the reply starting at `at` ends, if it is complete.
fn skip_reply(buf: &[u8], at: usize, depth: usize) -> Result<Option<usize>, BadReply> {
    let Some(line_end) = find_crlf(buf, at) else {
        return Ok(None);
    };
    let after_line = line_end + 2;
    let line = &buf[at..line_end];
    match line.first() {
        Some(b'+' | b'-' | b':') => Ok(Some(after_line)),
        Some(b'$') => match parse_len(&line[1..])? {
            None => Ok(Some(after_line)),
            Some(n) if buf.len() >= after_line + n + 2 => Ok(Some(after_line + n + 2)),
            Some(_) => Ok(None),
        },
        Some(b'*') if depth < MAX_DEPTH => {
            let mut end = after_line;
            for _ in 0..parse_len(&line[1..])?.unwrap_or(0) {
                match skip_reply(buf, end, depth + 1)? {
                    Some(next) => end = next,
                    None => return Ok(None),
                }
            }
            Ok(Some(end))
        }
        _ => Err(BadReply(format!(
            "not a RESP reply: {:?}",
            String::from_utf8_lossy(&line[..line.len().min(40)])
        ))),
    }
}

/// A bulk or array length; `None` for -1 (nil).
fn parse_len(digits: &[u8]) -> Result<Option<usize>, BadReply> {
    let bad = || {
        BadReply(format!(
            "bad RESP length {:?}",
            String::from_utf8_lossy(digits)
        ))
    };
    if digits == b"-1" {
        return Ok(None);
    }
    let text = std::str::from_utf8(digits).map_err(|_| bad())?;
    text.parse::<usize>().map(Some).map_err(|_| bad())
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let cr = at + buf.get(at..)?.iter().position(|&b| b == b'\r')?;
        match buf.get(cr + 1) {
            Some(b'\n') => return Some(cr),
            Some(_) => at = cr + 1,
            None => return None,
        }
    }
}

pub fn describe(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply).escape_debug().to_string()
}

/// `$<len>\r\n`, the header of a bulk string of `len` bytes.
pub fn bulk_header(out: &mut Vec<u8>, len: usize) {
    out.push(b'$');
    out.extend_from_slice(len.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::ConnKeys;
    use crate::workload::{Plan, WriteOp};

    fn render(shape: &Shape) -> (Vec<u8>, Vec<u8>) {
        let mut plan = Plan::default();
        plan.fill(shape, &ConnKeys::new(0, 1, 100, 1), 1, 0);
        plan.keys.iter_mut().for_each(|k| *k = 0x2a);
        plan.values
            .iter_mut()
            .for_each(|v| *v = 0x0123_4567_89ab_cdef);
        let (mut request, mut reply) = (Vec::new(), Vec::new());
        request_template(shape).render(&plan, &mut request);
        reply_template(shape).render(&plan, &mut reply);
        (request, reply)
    }

    #[test]
    fn commands_and_replies_have_the_documented_bytes() {
        let (request, reply) = render(&Shape {
            writes: 1,
            gets: 1,
            write_op: WriteOp::Set,
            atomic: false,
            key_bytes: 16,
            value_bytes: 4,
        });
        assert_eq!(
            String::from_utf8(request).expect("ascii"),
            "*3\r\n$3\r\nSET\r\n$16\r\nkey-00000000002a\r\n$4\r\n0123\r\n\
             *2\r\n$3\r\nGET\r\n$16\r\nkey-00000000002a\r\n"
        );
        assert_eq!(reply, b"+OK\r\n$4\r\n0123\r\n");
        let (_, reply) = render(&Shape {
            writes: 0,
            gets: 2,
            write_op: WriteOp::Set,
            atomic: false,
            key_bytes: 16,
            value_bytes: 4,
        });
        assert_eq!(reply, b"$-1\r\n$-1\r\n");
    }

    #[test]
    fn reply_len_finds_the_end_of_a_message_or_asks_for_more() {
        let (_, reply) = render(&Shape {
            writes: 2,
            gets: 2,
            write_op: WriteOp::Set,
            atomic: false,
            key_bytes: 16,
            value_bytes: 10,
        });
        assert_eq!(reply_len(&reply, 4), Ok(Some(reply.len())));
        for cut in 0..reply.len() {
            assert_eq!(reply_len(&reply[..cut], 4), Ok(None), "cut at {cut}");
        }
        let mut two = reply.clone();
        two.extend_from_slice(&reply);
        assert_eq!(reply_len(&two, 4), Ok(Some(reply.len())));
    }

    #[test]
    fn errors_integers_and_arrays_are_skipped_but_garbage_is_refused() {
        let buf = b"-ERR wrong\r\n:12\r\n*2\r\n$1\r\na\r\n$-1\r\n";
        assert_eq!(reply_len(buf, 3), Ok(Some(buf.len())));
        assert!(reply_len(b"hello\r\n", 1).is_err());
        assert!(reply_len(b"$x\r\n", 1).is_err());
    }
}
