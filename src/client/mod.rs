//! A blocking corekv client over `std::net`, shared by the CLI, the load
//! generator and the tests. Portable: no glommio, no io_uring.
//!
//! [`Client::call`] sends one request message and returns its reply's elements;
//! [`Client::send_message`] and [`Client::recv_reply`] split that in two so a
//! caller can pipeline many messages before reading. Keys are sent as msgpack
//! bin, values as whatever msgpack value the caller gives, exactly like the
//! KVStore seed's Python client (`use_bin_type=True`).

use crate::proto::frame::{begin_frame, finish_frame, LEN_PREFIX_BYTES};
use crate::proto::reply;
use rmpv::Value;
use std::collections::BTreeMap;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest reply the client accepts (a GET of a huge value, or many of them).
pub const MAX_REPLY_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    #[error("malformed reply from server: {0}")]
    Protocol(String),
    #[error("server error {code}: {message}")]
    Server { code: String, message: String },
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// One request of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Get(Vec<u8>),
    Set(Vec<u8>, Value),
    Del(Vec<u8>),
    Atomic(Vec<Request>),
    GetV(Vec<u8>),
    PutV(Vec<u8>, Value, u64),
    Rm(Vec<u8>),
    Stats,
}

/// One result element of a reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Element {
    /// `[-1, V]`
    Found(Value),
    /// `[-2]`
    NotFound,
    /// `[-3, V, version]`
    Versioned(Value, u64),
    /// `[-4, n]`: PUTV's new version, or RM's 1/0.
    Done(u64),
    /// `[-5, current]`
    VersionConflict(u64),
    /// `[-6, {name: integer}]`
    Stats(BTreeMap<String, u64>),
    /// `[-9, CODE, message]`
    Error { code: String, message: String },
}

impl Request {
    /// The request as a msgpack value.
    pub fn to_value(&self) -> Value {
        let bin = |k: &[u8]| Value::Binary(k.to_vec());
        let items = match self {
            Request::Get(k) => vec![0.into(), bin(k)],
            Request::Set(k, v) => vec![1.into(), bin(k), v.clone()],
            Request::Del(k) => vec![2.into(), bin(k)],
            Request::Atomic(rs) => vec![
                3.into(),
                Value::Array(rs.iter().map(Request::to_value).collect()),
            ],
            Request::GetV(k) => vec![4.into(), bin(k)],
            Request::PutV(k, v, version) => vec![5.into(), bin(k), v.clone(), (*version).into()],
            Request::Rm(k) => vec![6.into(), bin(k)],
            Request::Stats => vec![7.into()],
        };
        Value::Array(items)
    }
}

/// Encodes a request message, length prefix included.
pub fn encode_message(requests: &[Request]) -> Vec<u8> {
    let message = Value::Array(requests.iter().map(Request::to_value).collect());
    let mut out = Vec::new();
    let start = begin_frame(&mut out);
    rmpv::encode::write_value(&mut out, &message).expect("writing to a Vec cannot fail");
    finish_frame(&mut out, start);
    out
}

/// Decodes a reply body into its elements.
pub fn decode_reply(body: &[u8]) -> Result<Vec<Element>> {
    let mut reader = body;
    let value =
        rmpv::decode::read_value(&mut reader).map_err(|e| ClientError::Protocol(e.to_string()))?;
    if !reader.is_empty() {
        return Err(ClientError::Protocol(
            "trailing bytes after the reply".into(),
        ));
    }
    let Value::Array(elements) = value else {
        return Err(ClientError::Protocol(format!(
            "reply is not an array: {value}"
        )));
    };
    elements.into_iter().map(decode_element).collect()
}

fn decode_element(element: Value) -> Result<Element> {
    let bad = |e: &Value| ClientError::Protocol(format!("unexpected result element {e}"));
    let Value::Array(items) = &element else {
        return Err(bad(&element));
    };
    let tag = items
        .first()
        .and_then(Value::as_i64)
        .ok_or_else(|| bad(&element))?;
    let uint = |i: usize| {
        items
            .get(i)
            .and_then(Value::as_u64)
            .ok_or_else(|| bad(&element))
    };
    let parsed = match (tag as i8, items.len()) {
        (reply::TAG_FOUND, 2) => Element::Found(items[1].clone()),
        (reply::TAG_NOT_FOUND, 1) => Element::NotFound,
        (reply::TAG_VERSIONED, 3) => Element::Versioned(items[1].clone(), uint(2)?),
        (reply::TAG_DONE, 2) => Element::Done(uint(1)?),
        (reply::TAG_VERSION_CONFLICT, 2) => Element::VersionConflict(uint(1)?),
        (reply::TAG_STATS, 2) => {
            Element::Stats(decode_stats(&items[1]).ok_or_else(|| bad(&element))?)
        }
        (reply::TAG_ERROR, 3) => Element::Error {
            code: items[1].as_str().ok_or_else(|| bad(&element))?.to_owned(),
            message: items[2]
                .as_str()
                .unwrap_or("(message is not UTF-8)")
                .to_owned(),
        },
        _ => return Err(bad(&element)),
    };
    Ok(parsed)
}

fn decode_stats(map: &Value) -> Option<BTreeMap<String, u64>> {
    map.as_map()?
        .iter()
        .map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_u64()?)))
        .collect()
}

/// Connects to the first address `addr` resolves to that accepts (as
/// `TcpStream::connect` does), waiting at most `timeout` for each; returns
/// the stream and the address it reached.
pub fn connect_stream(
    addr: &(impl ToSocketAddrs + std::fmt::Display),
    timeout: Option<Duration>,
) -> Result<(TcpStream, SocketAddr)> {
    let connect_error = |source| ClientError::Connect {
        addr: addr.to_string(),
        source,
    };
    let targets: Vec<SocketAddr> = addr.to_socket_addrs().map_err(connect_error)?.collect();
    let mut last_error = io::Error::other("the address resolves to nothing");
    for target in targets {
        let connected = match timeout {
            Some(t) => TcpStream::connect_timeout(&target, t),
            None => TcpStream::connect(target),
        };
        match connected {
            Ok(stream) => return Ok((stream, target)),
            Err(e) => last_error = e,
        }
    }
    Err(connect_error(last_error))
}

/// Why a reply's length prefix is not believable, with a hint when the
/// bytes are text: another protocol answered (most often an HTTP port).
fn implausible_reply(prefix: &[u8; LEN_PREFIX_BYTES], len: u64, peer: SocketAddr) -> String {
    let text = String::from_utf8_lossy(prefix);
    if prefix.starts_with(b"HTTP/") {
        return format!(
            "{peer} answered in HTTP (\"{text}…\"): it is an HTTP port (corekv-server \
             --http-addr), but this client speaks corekv's msgpack protocol; use the server's \
             --addr (default port 4000)"
        );
    }
    if prefix.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return format!(
            "{peer} answered with text (\"{text}…\"), not corekv's msgpack protocol: is it a \
             corekv-server --addr?"
        );
    }
    format!("reply of {len} bytes is implausibly large: is {peer} a corekv-server --addr?")
}

/// A connection to a corekv server.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    peer: SocketAddr,
}

impl Client {
    /// Connects, waiting at most `timeout` for the connection and for each reply.
    /// `addr` may be a host name (`localhost:4000`): each address it
    /// resolves to is tried in turn.
    pub fn connect(
        addr: impl ToSocketAddrs + std::fmt::Display,
        timeout: Option<Duration>,
    ) -> Result<Client> {
        let (stream, target) = connect_stream(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(timeout)?;
        stream.set_write_timeout(timeout)?;
        Ok(Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: BufWriter::new(stream),
            peer: target,
        })
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Sends one message and returns its reply's elements.
    pub fn call(&mut self, requests: &[Request]) -> Result<Vec<Element>> {
        self.send_message(requests)?;
        self.flush()?;
        decode_reply(&self.recv_reply()?)
    }

    /// Queues one message (call [`Client::flush`] to send what is queued).
    pub fn send_message(&mut self, requests: &[Request]) -> Result<()> {
        self.writer.write_all(&encode_message(requests))?;
        Ok(())
    }

    /// Queues already-framed bytes as they are (for tests of hostile input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer.write_all(bytes)?;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.writer.flush()?;
        Ok(())
    }

    /// Reads one reply message and returns its body.
    pub fn recv_reply(&mut self) -> Result<Vec<u8>> {
        let mut prefix = [0u8; LEN_PREFIX_BYTES];
        self.reader.read_exact(&mut prefix)?;
        let len = u64::from_be_bytes(prefix);
        if len > MAX_REPLY_BYTES {
            return Err(ClientError::Protocol(implausible_reply(
                &prefix, len, self.peer,
            )));
        }
        let mut body = vec![0; len as usize];
        self.reader.read_exact(&mut body)?;
        Ok(body)
    }

    /// Runs one request alone and returns its single element.
    fn one(&mut self, request: Request) -> Result<Element> {
        let mut elements = self.call(&[request])?;
        match (elements.pop(), elements.is_empty()) {
            (Some(Element::Error { code, message }), true) => {
                Err(ClientError::Server { code, message })
            }
            (Some(element), true) => Ok(element),
            _ => Err(ClientError::Protocol(
                "expected exactly one result element".into(),
            )),
        }
    }

    /// Runs requests that have no result element; any element is an error.
    fn no_result(&mut self, request: Request) -> Result<()> {
        match self.call(&[request])?.into_iter().next() {
            None => Ok(()),
            Some(Element::Error { code, message }) => Err(ClientError::Server { code, message }),
            Some(other) => Err(ClientError::Protocol(format!(
                "unexpected element {other:?}"
            ))),
        }
    }

    pub fn get(&mut self, key: &[u8]) -> Result<Option<Value>> {
        match self.one(Request::Get(key.to_vec()))? {
            Element::Found(value) => Ok(Some(value)),
            Element::NotFound => Ok(None),
            other => Err(ClientError::Protocol(format!(
                "unexpected GET result {other:?}"
            ))),
        }
    }

    pub fn set(&mut self, key: &[u8], value: Value) -> Result<()> {
        self.no_result(Request::Set(key.to_vec(), value))
    }

    pub fn del(&mut self, key: &[u8]) -> Result<()> {
        self.no_result(Request::Del(key.to_vec()))
    }

    /// The value and version of `key`.
    pub fn getv(&mut self, key: &[u8]) -> Result<Option<(Value, u64)>> {
        match self.one(Request::GetV(key.to_vec()))? {
            Element::Versioned(value, version) => Ok(Some((value, version))),
            Element::NotFound => Ok(None),
            other => Err(ClientError::Protocol(format!(
                "unexpected GETV result {other:?}"
            ))),
        }
    }

    /// PUTV: `Ok(new_version)` if applied, `Err(current_version)` on conflict.
    pub fn putv(&mut self, key: &[u8], value: Value, version: u64) -> Result<Result<u64, u64>> {
        match self.one(Request::PutV(key.to_vec(), value, version))? {
            Element::Done(new_version) => Ok(Ok(new_version)),
            Element::VersionConflict(current) => Ok(Err(current)),
            other => Err(ClientError::Protocol(format!(
                "unexpected PUTV result {other:?}"
            ))),
        }
    }

    /// RM: whether the key existed.
    pub fn rm(&mut self, key: &[u8]) -> Result<bool> {
        match self.one(Request::Rm(key.to_vec()))? {
            Element::Done(n) => Ok(n == 1),
            other => Err(ClientError::Protocol(format!(
                "unexpected RM result {other:?}"
            ))),
        }
    }

    pub fn stats(&mut self) -> Result<BTreeMap<String, u64>> {
        match self.one(Request::Stats)? {
            Element::Stats(stats) => Ok(stats),
            other => Err(ClientError::Protocol(format!(
                "unexpected STATS result {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_framed_msgpack_arrays_with_bin_keys() {
        let bytes = encode_message(&[Request::Get(b"k".to_vec())]);
        assert_eq!(
            bytes,
            [0, 0, 0, 0, 0, 0, 0, 6, 0x91, 0x92, 0x00, 0xc4, 0x01, b'k']
        );
    }

    #[test]
    fn a_reply_in_http_or_text_is_named_as_such() {
        let peer: SocketAddr = "127.0.0.1:8080".parse().expect("address");
        let http = implausible_reply(b"HTTP/1.1", u64::MAX, peer);
        assert!(
            http.contains("HTTP port") && http.contains("--addr"),
            "{http}"
        );
        let text = implausible_reply(b"-ERR unk", u64::MAX, peer);
        assert!(text.contains("answered with text"), "{text}");
        let binary = implausible_reply(&[0xff; 8], u64::MAX, peer);
        assert!(binary.contains("implausibly large"), "{binary}");
    }

    #[test]
    fn every_element_kind_decodes() {
        let mut body = Vec::new();
        reply::write_array_len(&mut body, 6);
        reply::write_found(&mut body, &[0xa1, b'v']);
        reply::write_not_found(&mut body);
        reply::write_versioned(&mut body, &[0x01], 7);
        reply::write_done(&mut body, 1);
        reply::write_version_conflict(&mut body, 3);
        reply::write_error(&mut body, crate::proto::ErrorCode::Oom, "full");
        let elements = decode_reply(&body).expect("valid reply");
        assert_eq!(
            elements,
            [
                Element::Found("v".into()),
                Element::NotFound,
                Element::Versioned(1.into(), 7),
                Element::Done(1),
                Element::VersionConflict(3),
                Element::Error {
                    code: "OOM".into(),
                    message: "full".into()
                },
            ]
        );
    }
}
