//! The wire formats the load generator speaks: corekv's length-prefixed msgpack
//! ([`msgpack`]) and Redis's RESP ([`resp`]). Each turns a fixed message
//! [`Shape`] into a request template and an expected-reply template, encodes
//! the single requests the other workloads build message by message, and finds
//! where one reply message ends in a receive buffer.

pub mod msgpack;
pub mod resp;

use crate::template::Template;
use crate::workload::Shape;

/// A reply the stream cannot be read past (the connection is then given up).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable reply: {0}")]
pub struct BadReply(pub String);

/// Which server the load generator talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// corekv: 8-byte length prefix + msgpack array of requests.
    Msgpack,
    /// Redis: one SET or GET command per request, pipelined.
    Resp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Msgpack => "msgpack",
            Protocol::Resp => "resp",
        }
    }

    /// The request message, with holes for keys and values.
    pub fn request_template(self, shape: &Shape) -> Template {
        match self {
            Protocol::Msgpack => msgpack::request_template(shape),
            Protocol::Resp => resp::request_template(shape),
        }
    }

    /// The exact reply a correct server sends, with holes for the values read.
    pub fn reply_template(self, shape: &Shape) -> Template {
        match self {
            Protocol::Msgpack => msgpack::reply_template(shape),
            Protocol::Resp => resp::reply_template(shape),
        }
    }

    /// Bytes of the first complete reply message in `buf`, the reply to a
    /// message of `requests` requests; `Ok(None)` if more bytes are needed.
    pub fn reply_len(self, buf: &[u8], requests: u32) -> Result<Option<usize>, BadReply> {
        match self {
            Protocol::Msgpack => msgpack::reply_len(buf),
            Protocol::Resp => resp::reply_len(buf, requests as usize),
        }
    }

    /// A short human-readable rendering of a reply, for error reports.
    pub fn describe(self, reply: &[u8]) -> String {
        let text = match self {
            Protocol::Msgpack => msgpack::describe(reply),
            Protocol::Resp => resp::describe(reply),
        };
        truncate(text, 240)
    }
}

fn truncate(mut text: String, max_chars: usize) -> String {
    if let Some((cut, _)) = text.char_indices().nth(max_chars) {
        text.truncate(cut);
        text.push('…');
    }
    text
}
