//! RESP reply encoders, for RESP2 and RESP3 (chosen per connection by HELLO).
//!
//! ```text
//! +OK\r\n            simple string      -ERR …\r\n         error
//! :42\r\n            integer            $5\r\nhello\r\n    bulk string
//! $-1\r\n / _\r\n    null (RESP2 / 3)   *2\r\n…            array
//! %1\r\n…            map (RESP3; a flat array of key, value in RESP2)
//! ,1.5\r\n           double (RESP3; a bulk string in RESP2)
//! ```

/// The RESP version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    #[default]
    Resp2,
    Resp3,
}

impl Version {
    pub fn number(self) -> i64 {
        match self {
            Version::Resp2 => 2,
            Version::Resp3 => 3,
        }
    }
}

pub fn simple(out: &mut Vec<u8>, text: &str) {
    out.push(b'+');
    push_line_safe(out, text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub fn ok(out: &mut Vec<u8>) {
    out.extend_from_slice(b"+OK\r\n");
}

/// An error reply; `text` starts with its code (`ERR …`, `WRONGTYPE …`).
pub fn error(out: &mut Vec<u8>, text: &str) {
    out.push(b'-');
    push_line_safe(out, text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub fn integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

pub fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    bulk_header(out, bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// `$<len>\r\n`: the bytes and [`bulk_end`] follow.
pub fn bulk_header(out: &mut Vec<u8>, len: usize) {
    out.push(b'$');
    push_decimal(out, len as i64);
    out.extend_from_slice(b"\r\n");
}

pub fn bulk_end(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\r\n");
}

/// A missing value: RESP2's null bulk string, RESP3's null.
pub fn null(out: &mut Vec<u8>, version: Version) {
    match version {
        Version::Resp2 => out.extend_from_slice(b"$-1\r\n"),
        Version::Resp3 => out.extend_from_slice(b"_\r\n"),
    }
}

/// A missing array (an EXEC whose WATCH failed): RESP2's null array.
pub fn null_array(out: &mut Vec<u8>, version: Version) {
    match version {
        Version::Resp2 => out.extend_from_slice(b"*-1\r\n"),
        Version::Resp3 => out.extend_from_slice(b"_\r\n"),
    }
}

pub fn array(out: &mut Vec<u8>, len: usize) {
    out.push(b'*');
    push_decimal(out, len as i64);
    out.extend_from_slice(b"\r\n");
}

/// A map of `pairs` key/value pairs (each key then its value follow).
pub fn map(out: &mut Vec<u8>, pairs: usize, version: Version) {
    match version {
        Version::Resp2 => array(out, pairs * 2),
        Version::Resp3 => {
            out.push(b'%');
            push_decimal(out, pairs as i64);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// A set of `len` members: RESP3's set type, an array in RESP2.
pub fn set(out: &mut Vec<u8>, len: usize, version: Version) {
    match version {
        Version::Resp2 => array(out, len),
        Version::Resp3 => {
            out.push(b'~');
            push_decimal(out, len as i64);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// A floating point number: RESP3's double, a bulk string in RESP2 (as Redis
/// answers INCRBYFLOAT in both, this takes the text already formatted).
pub fn double(out: &mut Vec<u8>, text: &str, version: Version) {
    match version {
        Version::Resp2 => bulk(out, text.as_bytes()),
        Version::Resp3 => {
            out.push(b',');
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// The decimal text of `n`, without allocating.
pub fn push_decimal(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

/// A simple string or error must be one line: CR and LF become spaces.
fn push_line_safe(out: &mut Vec<u8>, text: &[u8]) {
    out.extend(text.iter().map(|&b| match b {
        b'\r' | b'\n' => b' ',
        b => b,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        write(&mut out);
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn scalars_are_encoded_as_redis_does() {
        assert_eq!(wire(|o| integer(o, -1234)), ":-1234\r\n");
        assert_eq!(wire(|o| integer(o, i64::MIN)), ":-9223372036854775808\r\n");
        assert_eq!(wire(|o| bulk(o, b"hi")), "$2\r\nhi\r\n");
        assert_eq!(wire(|o| error(o, "ERR a\r\nb")), "-ERR a  b\r\n");
        assert_eq!(wire(ok), "+OK\r\n");
    }

    #[test]
    fn resp3_types_fall_back_to_resp2_shapes() {
        assert_eq!(wire(|o| null(o, Version::Resp2)), "$-1\r\n");
        assert_eq!(wire(|o| null(o, Version::Resp3)), "_\r\n");
        assert_eq!(wire(|o| map(o, 2, Version::Resp2)), "*4\r\n");
        assert_eq!(wire(|o| map(o, 2, Version::Resp3)), "%2\r\n");
        assert_eq!(wire(|o| double(o, "1.5", Version::Resp2)), "$3\r\n1.5\r\n");
        assert_eq!(wire(|o| double(o, "1.5", Version::Resp3)), ",1.5\r\n");
        assert_eq!(wire(|o| null_array(o, Version::Resp2)), "*-1\r\n");
    }
}
