//! corekv's protocol (BRIEF §3): every message is an 8-byte big-endian length
//! and a msgpack array. Keys and values are sent as msgpack bin, as the KVStore
//! seed's Python client does (`use_bin_type=True`).
//!
//! ```text
//! request:  len | array(n) | requests                     n = writes + gets
//!           len | array(1) | [3, array(n) | requests]     (ATOMIC)
//! requests: [1, bin key, bin value] × writes              (SET)
//!           [5, bin key, bin value, 0] × writes           (PUTV of a fresh key)
//!           [0, bin key] × gets
//! reply:    len | array(results) | [-4, 1] × writes       (PUTV only)
//!                                | [-1, bin value] × gets (keys just written)
//!                                | [-2] × gets           (writes = 0: keys never written)
//! ```
//!
//! An ATOMIC's results are flattened into the reply, so its expected reply is
//! the same as the plain message's.
//!
//! The encoders are corekv's own (`corekv::proto`), so the load generator and the
//! server cannot disagree on integer or header encodings.

use super::BadReply;
use crate::template::Template;
use crate::workload::{Shape, WriteOp};
use corekv::client::MAX_REPLY_BYTES;
use corekv::proto::frame::{begin_frame, finish_frame, next_frame, LEN_PREFIX_BYTES};
use corekv::proto::message::decode_reply;
use corekv::proto::reply::{write_array_len, write_done, write_found_header, write_not_found};

pub const OP_GET: u8 = 0;
pub const OP_SET: u8 = 1;
pub const OP_DEL: u8 = 2;
pub const OP_ATOMIC: u8 = 3;
pub const OP_GETV: u8 = 4;
pub const OP_PUTV: u8 = 5;
/// SET with a TTL, `[16, K, V, ttl_ms]`.
pub const OP_SET_TTL: u8 = 16;

pub fn request_template(shape: &Shape) -> Template {
    let mut t = Template::new(shape.key_bytes, shape.value_bytes);
    let start = begin_frame(t.bytes_mut());
    if shape.atomic {
        t.bytes_mut().extend_from_slice(&[0x91, 0x92, OP_ATOMIC]);
    }
    write_array_len(t.bytes_mut(), shape.ops());
    for write in 0..shape.writes as usize {
        match shape.write_op {
            WriteOp::Set => t.bytes_mut().extend_from_slice(&[0x93, OP_SET]),
            WriteOp::PutvNew => t.bytes_mut().extend_from_slice(&[0x94, OP_PUTV]),
        }
        bin_header(t.bytes_mut(), shape.key_bytes);
        t.key_hole(write);
        bin_header(t.bytes_mut(), shape.value_bytes);
        t.value_hole(write);
        if shape.write_op == WriteOp::PutvNew {
            t.bytes_mut().push(0x00);
        }
    }
    for get in 0..shape.gets as usize {
        t.bytes_mut().extend_from_slice(&[0x92, OP_GET]);
        bin_header(t.bytes_mut(), shape.key_bytes);
        t.key_hole(shape.writes as usize + get);
    }
    finish_frame(t.bytes_mut(), start);
    t
}

pub fn reply_template(shape: &Shape) -> Template {
    let mut t = Template::new(shape.key_bytes, shape.value_bytes);
    let start = begin_frame(t.bytes_mut());
    write_array_len(t.bytes_mut(), shape.results());
    if shape.write_op == WriteOp::PutvNew {
        for _ in 0..shape.writes {
            write_done(t.bytes_mut(), 1);
        }
    }
    for get in 0..shape.gets {
        if shape.gets_find_values() {
            write_found_header(t.bytes_mut());
            bin_header(t.bytes_mut(), shape.value_bytes);
            t.value_hole((get % shape.writes) as usize);
        } else {
            write_not_found(t.bytes_mut());
        }
    }
    finish_frame(t.bytes_mut(), start);
    t
}

/// A reply message is one frame, length prefix included.
pub fn reply_len(buf: &[u8]) -> Result<Option<usize>, BadReply> {
    match next_frame(buf, MAX_REPLY_BYTES) {
        Ok(frame) => Ok(frame.map(|f| f.total_len())),
        Err(too_big) => Err(BadReply(format!(
            "reply announces {} bytes",
            too_big.declared
        ))),
    }
}

pub fn describe(reply: &[u8]) -> String {
    let body = reply.get(LEN_PREFIX_BYTES..).unwrap_or_default();
    match decode_reply(body) {
        Ok(elements) => format!("{elements:?}"),
        Err(e) => format!("{e} ({} bytes)", body.len()),
    }
}

/// Header of a msgpack bin of `len` bytes (the bytes themselves follow).
pub use corekv::proto::reply::write_bin_header as bin_header;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::ConnKeys;
    use crate::workload::Plan;
    use corekv::proto::message::{encode_message, Element, Request};
    use corekv::proto::reply::{write_bin, write_found};

    fn shape(writes: u32, gets: u32, value_bytes: usize) -> Shape {
        Shape {
            writes,
            gets,
            write_op: WriteOp::Set,
            atomic: false,
            key_bytes: 16,
            value_bytes,
        }
    }

    fn render(shape: &Shape) -> (Plan, Vec<u8>, Vec<u8>) {
        let mut plan = Plan::default();
        let keys = ConnKeys::new(2, 3, 300, 11).with_fresh_prefix(*b"Nxyz");
        plan.fill(shape, &keys, 11, 4);
        let (mut request, mut reply) = (Vec::new(), Vec::new());
        request_template(shape).render(&plan, &mut request);
        reply_template(shape).render(&plan, &mut reply);
        (plan, request, reply)
    }

    fn key(plan: &Plan, op: usize) -> Vec<u8> {
        let mut key = vec![0; 16];
        plan.write_key(op, &mut key);
        key
    }

    fn value(plan: &Plan, write: usize, value_bytes: usize) -> rmpv::Value {
        let mut value = vec![0; value_bytes];
        plan.write_value(write, &mut value);
        rmpv::Value::Binary(value)
    }

    /// The requests of `shape`'s message as the client library builds them.
    fn library_requests(shape: &Shape, plan: &Plan) -> Vec<Request> {
        let mut requests = Vec::new();
        for w in 0..shape.writes as usize {
            let v = value(plan, w, shape.value_bytes);
            requests.push(match shape.write_op {
                WriteOp::Set => Request::Set(key(plan, w), v),
                WriteOp::PutvNew => Request::PutV(key(plan, w), v, 0),
            });
        }
        for get in shape.writes as usize..shape.ops() as usize {
            requests.push(Request::Get(key(plan, get)));
        }
        if shape.atomic {
            requests = vec![Request::Atomic(requests)];
        }
        requests
    }

    #[test]
    fn request_matches_the_client_library_encoding() {
        for value_bytes in [0, 32, 300, 70_000] {
            for (write_op, atomic) in [
                (WriteOp::Set, false),
                (WriteOp::Set, true),
                (WriteOp::PutvNew, false),
                (WriteOp::PutvNew, true),
            ] {
                let shape = Shape {
                    write_op,
                    atomic,
                    ..shape(3, 4, value_bytes)
                };
                let (plan, request, _) = render(&shape);
                assert_eq!(
                    request,
                    encode_message(&library_requests(&shape, &plan)),
                    "{shape:?}"
                );
            }
        }
        let atomic = Shape {
            atomic: true,
            ..shape(20, 0, 1)
        };
        let (plan, request, _) = render(&atomic);
        let library = encode_message(&library_requests(&atomic, &plan));
        assert_eq!(request, library, "an ATOMIC of 20 requests: array16 header");
    }

    #[test]
    fn expected_reply_is_what_the_server_encoder_writes() {
        for atomic in [false, true] {
            let shape = Shape {
                atomic,
                ..shape(2, 3, 20)
            };
            let (plan, _, reply) = render(&shape);
            let mut body = Vec::new();
            write_array_len(&mut body, 3);
            for write in [0, 1, 0] {
                let mut v = Vec::new();
                let rmpv::Value::Binary(bytes) = value(&plan, write, 20) else {
                    unreachable!("values are bin")
                };
                write_bin(&mut v, &bytes);
                write_found(&mut body, &v);
            }
            assert_eq!(reply[..8], (body.len() as u64).to_be_bytes());
            assert_eq!(reply[8..], body, "ATOMIC results are flattened");
            assert_eq!(reply_len(&reply), Ok(Some(reply.len())));
            assert_eq!(reply_len(&reply[..reply.len() - 1]), Ok(None));
        }
    }

    #[test]
    fn fresh_puts_expect_version_one_then_the_values_they_wrote() {
        let shape = Shape {
            write_op: WriteOp::PutvNew,
            atomic: true,
            ..shape(2, 1, 8)
        };
        let (plan, _, reply) = render(&shape);
        let elements = decode_reply(&reply[LEN_PREFIX_BYTES..]).expect("valid reply");
        assert_eq!(
            elements,
            [
                Element::Done(1),
                Element::Done(1),
                Element::Found(value(&plan, 0, 8))
            ]
        );
    }

    #[test]
    fn read_only_messages_expect_not_found_and_set_only_messages_an_empty_array() {
        let (_, _, reply) = render(&shape(0, 2, 8));
        let body = &reply[LEN_PREFIX_BYTES..];
        let elements = decode_reply(body).expect("valid reply");
        assert_eq!(elements, [Element::NotFound, Element::NotFound]);
        let (_, _, reply) = render(&shape(2, 0, 8));
        assert_eq!(reply, [0, 0, 0, 0, 0, 0, 0, 1, 0x90]);
    }

    #[test]
    fn an_absurd_length_prefix_is_a_bad_reply() {
        assert!(reply_len(&u64::MAX.to_be_bytes()).is_err());
    }
}
