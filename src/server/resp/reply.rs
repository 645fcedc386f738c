//! Writing one reply in a connection's dialect: RESP2, RESP3, or the text
//! protocol's one line per value.
//!
//! | reply | RESP | text |
//! |---|---|---|
//! | OK | `+OK` | `success` |
//! | null | `$-1` / `_` | `no value stored` |
//! | integer, string, simple string | `:n`, `$len bytes`, `+s` | the value on a line |
//! | error | `-ERR …` | `ERR …` on a line |
//! | array | `*n` then the elements | each element on its own line (`(empty)` if none) |

use crate::proto::resp::encode;
use crate::proto::resp::Version;

/// How a connection's replies are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Resp(Version),
    Text,
}

/// Writes replies into a connection's output buffer.
pub struct Reply<'b> {
    pub out: &'b mut Vec<u8>,
    pub dialect: Dialect,
}

impl<'b> Reply<'b> {
    pub fn new(out: &'b mut Vec<u8>, dialect: Dialect) -> Reply<'b> {
        Reply { out, dialect }
    }

    pub fn ok(&mut self) {
        match self.dialect {
            Dialect::Resp(_) => encode::ok(self.out),
            Dialect::Text => self.line(b"success"),
        }
    }

    pub fn simple(&mut self, text: &str) {
        match self.dialect {
            Dialect::Resp(_) => encode::simple(self.out, text),
            Dialect::Text => self.line(text.as_bytes()),
        }
    }

    pub fn error(&mut self, text: &str) {
        match self.dialect {
            Dialect::Resp(_) => encode::error(self.out, text),
            Dialect::Text => self.line(text.replace(['\r', '\n'], " ").as_bytes()),
        }
    }

    pub fn integer(&mut self, n: i64) {
        match self.dialect {
            Dialect::Resp(_) => encode::integer(self.out, n),
            Dialect::Text => {
                encode::push_decimal(self.out, n);
                self.out.push(b'\n');
            }
        }
    }

    pub fn bulk(&mut self, bytes: &[u8]) {
        match self.dialect {
            Dialect::Resp(_) => encode::bulk(self.out, bytes),
            Dialect::Text => self.line(bytes),
        }
    }

    pub fn null(&mut self) {
        match self.dialect {
            Dialect::Resp(version) => encode::null(self.out, version),
            Dialect::Text => self.line(b"no value stored"),
        }
    }

    pub fn null_array(&mut self) {
        match self.dialect {
            Dialect::Resp(version) => encode::null_array(self.out, version),
            Dialect::Text => self.line(b"no value stored"),
        }
    }

    pub fn array(&mut self, len: usize) {
        match self.dialect {
            Dialect::Resp(_) => encode::array(self.out, len),
            Dialect::Text if len == 0 => self.line(b"(empty)"),
            Dialect::Text => {}
        }
    }

    pub fn map(&mut self, pairs: usize) {
        match self.dialect {
            Dialect::Resp(version) => encode::map(self.out, pairs, version),
            Dialect::Text if pairs == 0 => self.line(b"(empty)"),
            Dialect::Text => {}
        }
    }

    pub fn set(&mut self, len: usize) {
        match self.dialect {
            Dialect::Resp(version) => encode::set(self.out, len, version),
            Dialect::Text if len == 0 => self.line(b"(empty)"),
            Dialect::Text => {}
        }
    }

    /// A float's text, as INCRBYFLOAT answers it: a bulk string in RESP2 and
    /// RESP3 alike, as Redis does.
    pub fn float_text(&mut self, text: &str) {
        self.bulk(text.as_bytes());
    }

    fn line(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
        self.out.push(b'\n');
    }
}
