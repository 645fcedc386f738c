//! The typed message model: requests and reply elements as values, and their
//! msgpack encoding. Sans-IO: it turns messages into bytes and bytes into
//! elements, and leaves sockets to its callers — the client library
//! (`crate::client`), the CLI, the HTTP API (which serves a message through
//! the same round as a msgpack connection) and the load generator.
//!
//! The server's own request path does not build these values: it validates a
//! message in place into [`Op`](super::Op)s that point into the receive buffer
//! (`request`) and writes elements straight from the table (`reply`,
//! `results`). Both ends share the wire constants (`reply::TAG_*`), and the
//! tests hold the two encodings to the same bytes.
//!
//! Keys are sent as msgpack bin, values as whatever msgpack value the caller
//! gives, exactly like the KVStore seed's Python client (`use_bin_type=True`).

use super::frame::{begin_frame, finish_frame};
use super::reply;
use crate::slot::SlotRange;
use rmpv::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// A reply that is not what the protocol allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedReply(pub String);

/// One node of a cluster: its name, the address its clients use (and MOVED
/// names), and the hash slots it owns — as the cluster file lists it
/// (`crate::cluster`) and SLOTMAP's element carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    pub name: String,
    pub addr: SocketAddr,
    pub slots: Vec<SlotRange>,
}

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
    /// `[24]`: a cluster node's slot map ([`Element::SlotMap`]).
    SlotMap,
    /// `[16, K, V, ttl_ms]`: SET that expires `ttl_ms` from now.
    SetTtl(Vec<u8>, Value, u64),
    /// `[17, K, ttl_ms]`: the key expires `ttl_ms` from now (0: at once).
    Expire(Vec<u8>, u64),
    /// `[18, K]`: the key's remaining time to live ([`KeyTtl`]).
    Ttl(Vec<u8>),
    /// `[19, K]`: the key no longer expires.
    Persist(Vec<u8>),
    /// `[20, K, unix_ms]`: the key expires at `unix_ms` (at once if past).
    ExpireAt(Vec<u8>, u64),
    /// `[21, K, V]`: SET that keeps the key's deadline (Redis's KEEPTTL).
    SetKeepTtl(Vec<u8>, Value),
    /// `[22, K]`: the key's deadline in Unix milliseconds ([`KeyTtl`]).
    ExpireTime(Vec<u8>),
    /// `[23, K, V, unix_ms]`: SET that expires at `unix_ms` (removes the key
    /// if past).
    SetAt(Vec<u8>, Value, u64),
    /// `[9, shard, position, count, pattern]`: SCAN `count` buckets of one
    /// shard's table from `position`, keys matching the glob `pattern` (empty:
    /// every key).
    Scan {
        shard: u64,
        position: u64,
        count: u32,
        pattern: Vec<u8>,
    },
}

/// What TTL (Redis's PTTL, in milliseconds) and EXPIRETIME (PEXPIRETIME,
/// Unix milliseconds) answer about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTtl {
    /// `[-8, -2]`: no such key (or it has expired).
    Missing,
    /// `[-8, -1]`: the key never expires.
    NoDeadline,
    /// `[-8, ms]`: TTL: the key expires in this many milliseconds;
    /// EXPIRETIME: at this Unix time in milliseconds.
    Remaining(u64),
}

impl KeyTtl {
    /// The TTL element's integer as what it means; None for a value the
    /// protocol does not allow.
    pub fn from_reply(n: i64) -> Option<KeyTtl> {
        match n {
            -2 => Some(KeyTtl::Missing),
            -1 => Some(KeyTtl::NoDeadline),
            0.. => Some(KeyTtl::Remaining(n as u64)),
            _ => None,
        }
    }
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
    /// `[-7, next, [K…]]`: SCAN's keys, and the position to go on from (0:
    /// the shard's table is done).
    Keys { next: u64, keys: Vec<Vec<u8>> },
    /// `[-8, n]`: a signed integer: INCRBY's new value, TTL's answer ([`KeyTtl`]).
    Integer(i64),
    /// `[-9, CODE, message]`
    Error { code: String, message: String },
    /// `[-10, me, [[name, "ip:port", [[first, last]…]]…]]`: SLOTMAP's answer,
    /// every node of the cluster with its slots, and the name of the node
    /// that answered.
    SlotMap {
        answered_by: String,
        nodes: Vec<ClusterNode>,
    },
}

impl Request {
    /// The keys the request names, in order: an ATOMIC's are its body's
    /// (nested batches' included); none for STATS, SLOTMAP and SCAN.
    pub fn keys(&self) -> Vec<&[u8]> {
        let mut keys = Vec::new();
        self.collect_keys(&mut keys);
        keys
    }

    fn collect_keys<'r>(&'r self, keys: &mut Vec<&'r [u8]>) {
        match self {
            Request::Get(k)
            | Request::Set(k, _)
            | Request::Del(k)
            | Request::GetV(k)
            | Request::PutV(k, ..)
            | Request::Rm(k)
            | Request::SetTtl(k, ..)
            | Request::Expire(k, _)
            | Request::Ttl(k)
            | Request::Persist(k)
            | Request::ExpireAt(k, _)
            | Request::SetKeepTtl(k, _)
            | Request::ExpireTime(k)
            | Request::SetAt(k, ..) => keys.push(k),
            Request::Atomic(body) => body.iter().for_each(|r| r.collect_keys(keys)),
            Request::Stats | Request::SlotMap | Request::Scan { .. } => {}
        }
    }

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
            Request::SlotMap => vec![24.into()],
            Request::SetTtl(k, v, ttl_ms) => vec![16.into(), bin(k), v.clone(), (*ttl_ms).into()],
            Request::Expire(k, ttl_ms) => vec![17.into(), bin(k), (*ttl_ms).into()],
            Request::Ttl(k) => vec![18.into(), bin(k)],
            Request::Persist(k) => vec![19.into(), bin(k)],
            Request::ExpireAt(k, unix_ms) => vec![20.into(), bin(k), (*unix_ms).into()],
            Request::SetKeepTtl(k, v) => vec![21.into(), bin(k), v.clone()],
            Request::ExpireTime(k) => vec![22.into(), bin(k)],
            Request::SetAt(k, v, unix_ms) => vec![23.into(), bin(k), v.clone(), (*unix_ms).into()],
            Request::Scan {
                shard,
                position,
                count,
                pattern,
            } => vec![
                9.into(),
                (*shard).into(),
                (*position).into(),
                (*count).into(),
                bin(pattern),
            ],
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
pub fn decode_reply(body: &[u8]) -> Result<Vec<Element>, MalformedReply> {
    let mut reader = body;
    let value = rmpv::decode::read_value(&mut reader).map_err(|e| MalformedReply(e.to_string()))?;
    if !reader.is_empty() {
        return Err(MalformedReply("trailing bytes after the reply".into()));
    }
    let Value::Array(elements) = value else {
        return Err(MalformedReply(format!("reply is not an array: {value}")));
    };
    elements.into_iter().map(decode_element).collect()
}

fn decode_element(element: Value) -> Result<Element, MalformedReply> {
    let bad = |e: &Value| MalformedReply(format!("unexpected result element {e}"));
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
        (reply::TAG_KEYS, 3) => Element::Keys {
            next: uint(1)?,
            keys: items[2]
                .as_array()
                .and_then(|keys| keys.iter().map(key_bytes).collect())
                .ok_or_else(|| bad(&element))?,
        },
        (reply::TAG_INTEGER, 2) => {
            Element::Integer(items[1].as_i64().ok_or_else(|| bad(&element))?)
        }
        (reply::TAG_STATS, 2) => {
            Element::Stats(decode_stats(&items[1]).ok_or_else(|| bad(&element))?)
        }
        (reply::TAG_SLOT_MAP, 3) => Element::SlotMap {
            answered_by: items[1].as_str().ok_or_else(|| bad(&element))?.to_owned(),
            nodes: items[2]
                .as_array()
                .and_then(|nodes| nodes.iter().map(decode_node).collect())
                .ok_or_else(|| bad(&element))?,
        },
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

/// A key of a SCAN reply: bin (as the server sends keys) or str.
fn key_bytes(key: &Value) -> Option<Vec<u8>> {
    match key {
        Value::Binary(bytes) => Some(bytes.clone()),
        Value::String(text) => Some(text.as_bytes().to_vec()),
        _ => None,
    }
}

/// `[name, "ip:port", [[first, last]…]]` of a SLOTMAP element.
fn decode_node(node: &Value) -> Option<ClusterNode> {
    let [name, addr, slots] = node.as_array()?.as_slice() else {
        return None;
    };
    let slot = |n: &Value| n.as_u64().and_then(|n| u16::try_from(n).ok());
    let range = |pair: &Value| match pair.as_array()?.as_slice() {
        [first, last] => Some(SlotRange {
            first: slot(first)?,
            last: slot(last)?,
        }),
        _ => None,
    };
    Some(ClusterNode {
        name: name.as_str()?.to_owned(),
        addr: addr.as_str()?.parse().ok()?,
        slots: slots.as_array()?.iter().map(range).collect::<Option<_>>()?,
    })
}

fn decode_stats(map: &Value) -> Option<BTreeMap<String, u64>> {
    map.as_map()?
        .iter()
        .map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_u64()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_requests_encode_as_their_opcodes() {
        let value = |r: Request| r.to_value().to_string();
        assert_eq!(
            value(Request::SetTtl(b"k".to_vec(), "v".into(), 1500)),
            r#"[16, [107], "v", 1500]"#
        );
        assert_eq!(value(Request::Expire(b"k".to_vec(), 0)), "[17, [107], 0]");
        assert_eq!(value(Request::Ttl(b"k".to_vec())), "[18, [107]]");
        assert_eq!(value(Request::Persist(b"k".to_vec())), "[19, [107]]");
        assert_eq!(value(Request::ExpireAt(b"k".to_vec(), 9)), "[20, [107], 9]");
        assert_eq!(
            value(Request::SetKeepTtl(b"k".to_vec(), "v".into())),
            r#"[21, [107], "v"]"#
        );
        assert_eq!(value(Request::ExpireTime(b"k".to_vec())), "[22, [107]]");
        assert_eq!(
            value(Request::SetAt(b"k".to_vec(), "v".into(), 9)),
            r#"[23, [107], "v", 9]"#
        );
        assert_eq!(KeyTtl::from_reply(-2), Some(KeyTtl::Missing));
        assert_eq!(KeyTtl::from_reply(-1), Some(KeyTtl::NoDeadline));
        assert_eq!(KeyTtl::from_reply(7), Some(KeyTtl::Remaining(7)));
        assert_eq!(KeyTtl::from_reply(-3), None);
    }

    #[test]
    fn messages_are_framed_msgpack_arrays_with_bin_keys() {
        let bytes = encode_message(&[Request::Get(b"k".to_vec())]);
        assert_eq!(
            bytes,
            [0, 0, 0, 0, 0, 0, 0, 6, 0x91, 0x92, 0x00, 0xc4, 0x01, b'k']
        );
    }

    #[test]
    fn a_slot_map_element_decodes_to_its_nodes_and_the_node_that_answered() {
        let nodes = vec![
            ClusterNode {
                name: "a".into(),
                addr: "127.0.0.1:7001".parse().expect("addr"),
                slots: vec![SlotRange {
                    first: 0,
                    last: 8000,
                }],
            },
            ClusterNode {
                name: "b".into(),
                addr: "127.0.0.1:7002".parse().expect("addr"),
                slots: vec![
                    SlotRange {
                        first: 8001,
                        last: 16000,
                    },
                    SlotRange {
                        first: 16001,
                        last: 16383,
                    },
                ],
            },
        ];
        let mut body = Vec::new();
        reply::write_array_len(&mut body, 1);
        reply::write_slot_map(&mut body, "b", &nodes);
        let decoded = decode_reply(&body).expect("valid reply");
        assert_eq!(
            decoded,
            [Element::SlotMap {
                answered_by: "b".into(),
                nodes
            }]
        );
        assert_eq!(Request::SlotMap.to_value().to_string(), "[24]");
        // A slot past u16 or an address that is not ip:port is malformed.
        let bad = rmpv::Value::Array(vec![rmpv::Value::Array(vec![
            (-10).into(),
            "a".into(),
            rmpv::Value::Array(vec![rmpv::Value::Array(vec![
                "a".into(),
                "nowhere".into(),
                rmpv::Value::Array(vec![]),
            ])]),
        ])]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &bad).expect("encode");
        assert!(decode_reply(&bytes).is_err());
    }

    #[test]
    fn every_element_kind_decodes() {
        let mut body = Vec::new();
        reply::write_array_len(&mut body, 8);
        reply::write_integer(&mut body, -2);
        reply::write_integer(&mut body, 1500);
        reply::write_found(&mut body, &[0xa1, b'v']);
        reply::write_not_found(&mut body);
        reply::write_versioned(&mut body, &[0x01], 7);
        reply::write_done(&mut body, 1);
        reply::write_version_conflict(&mut body, 3);
        reply::write_error(&mut body, super::super::ErrorCode::Oom, "full");
        let elements = decode_reply(&body).expect("valid reply");
        assert_eq!(
            elements,
            [
                Element::Integer(-2),
                Element::Integer(1500),
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
