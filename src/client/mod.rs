//! A blocking corekv client over `std::net`, shared by the CLI, the load
//! generator and the tests. Portable: no glommio, no io_uring.
//!
//! [`Client::call`] sends one request message and returns its reply's elements;
//! [`Client::send_message`] and [`Client::recv_reply`] split that in two so a
//! caller can pipeline many messages before reading. The client is only the
//! I/O: the messages, [`Request`]s and reply [`Element`]s, and their encoding
//! are the protocol's (`proto::message`, re-exported here).
//!
//! [`ClusterClient`] (`cluster`) is the cluster-aware client: one [`Client`]
//! per node, each request sent to the node owning its key's hash slot.

mod cluster;

pub use cluster::{plan_message, ClusterClient, NodeGroup};

use crate::proto::frame::LEN_PREFIX_BYTES;
use rmpv::Value;
use std::collections::BTreeMap;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest reply the client accepts (a GET of a huge value, or many of them).
pub const MAX_REPLY_BYTES: u64 = 1 << 30;

/// Buckets of a shard's table one SCAN step of [`Client::keys`] looks at.
pub const SCAN_STEP_BUCKETS: u32 = 10_000;

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
    /// A cluster client cannot send the request to one node: an ATOMIC
    /// batch whose keys are on several nodes, or a request with no key.
    #[error("cannot route: {0}")]
    Routing(String),
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

pub use crate::proto::message::{
    decode_reply, encode_message, Element, KeyTtl, MalformedReply, Request,
};

impl From<MalformedReply> for ClientError {
    fn from(e: MalformedReply) -> ClientError {
        ClientError::Protocol(e.0)
    }
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
        Ok(decode_reply(&self.recv_reply()?)?)
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

    /// SET with a TTL: the key expires `ttl_ms` milliseconds from now.
    pub fn set_with_ttl(&mut self, key: &[u8], value: Value, ttl_ms: u64) -> Result<()> {
        self.no_result(Request::SetTtl(key.to_vec(), value, ttl_ms))
    }

    /// EXPIRE: whether the key existed (and now expires `ttl_ms` from now;
    /// 0 removes it at once).
    pub fn expire(&mut self, key: &[u8], ttl_ms: u64) -> Result<bool> {
        self.done_flag(Request::Expire(key.to_vec(), ttl_ms), "EXPIRE")
    }

    /// TTL: the key's remaining time to live.
    pub fn ttl(&mut self, key: &[u8]) -> Result<KeyTtl> {
        match self.one(Request::Ttl(key.to_vec()))? {
            Element::Integer(n) => KeyTtl::from_reply(n)
                .ok_or_else(|| ClientError::Protocol(format!("TTL answered {n}"))),
            other => Err(ClientError::Protocol(format!(
                "unexpected TTL result {other:?}"
            ))),
        }
    }

    /// SET with a deadline: the key expires at `unix_ms` (one in the past
    /// removes it instead).
    pub fn set_at(&mut self, key: &[u8], value: Value, unix_ms: u64) -> Result<()> {
        self.no_result(Request::SetAt(key.to_vec(), value, unix_ms))
    }

    /// SET keeping the key's deadline (Redis's KEEPTTL).
    pub fn set_keep_ttl(&mut self, key: &[u8], value: Value) -> Result<()> {
        self.no_result(Request::SetKeepTtl(key.to_vec(), value))
    }

    /// EXPIREAT: whether the key existed (and now expires at `unix_ms`).
    pub fn expire_at(&mut self, key: &[u8], unix_ms: u64) -> Result<bool> {
        self.done_flag(Request::ExpireAt(key.to_vec(), unix_ms), "EXPIREAT")
    }

    /// EXPIRETIME: the key's deadline, `KeyTtl::Remaining(unix_ms)`.
    pub fn expire_time(&mut self, key: &[u8]) -> Result<KeyTtl> {
        match self.one(Request::ExpireTime(key.to_vec()))? {
            Element::Integer(n) => KeyTtl::from_reply(n)
                .ok_or_else(|| ClientError::Protocol(format!("EXPIRETIME answered {n}"))),
            other => Err(ClientError::Protocol(format!(
                "unexpected EXPIRETIME result {other:?}"
            ))),
        }
    }

    /// PERSIST: whether the key had a deadline (which it no longer has).
    pub fn persist(&mut self, key: &[u8]) -> Result<bool> {
        self.done_flag(Request::Persist(key.to_vec()), "PERSIST")
    }

    /// A request answered `[-4, 1]` or `[-4, 0]`.
    fn done_flag(&mut self, request: Request, name: &str) -> Result<bool> {
        match self.one(request)? {
            Element::Done(n) => Ok(n == 1),
            other => Err(ClientError::Protocol(format!(
                "unexpected {name} result {other:?}"
            ))),
        }
    }

    /// Every key matching the glob `pattern` (empty: every key), shard by
    /// shard, with SCAN steps of [`SCAN_STEP_BUCKETS`] buckets. A key written
    /// or deleted meanwhile may be missed or listed once more, as with Redis's
    /// SCAN; with no writes, every key is listed exactly once.
    pub fn keys(&mut self, pattern: &[u8]) -> Result<Vec<Vec<u8>>> {
        let nr_shards = self.stats()?.get("shards").copied().unwrap_or(1);
        let mut keys = Vec::new();
        for shard in 0..nr_shards {
            let mut position = 0;
            loop {
                let scan = Request::Scan {
                    shard,
                    position,
                    count: SCAN_STEP_BUCKETS,
                    pattern: pattern.to_vec(),
                };
                match self.one(scan)? {
                    Element::Keys { next, keys: found } => {
                        keys.extend(found);
                        // Positions only grow, so this ends.
                        if next <= position {
                            break;
                        }
                        position = next;
                    }
                    other => {
                        return Err(ClientError::Protocol(format!(
                            "unexpected SCAN result {other:?}"
                        )))
                    }
                }
            }
        }
        Ok(keys)
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
}
