//! corekv's protocol (BRIEF §3): every message is an 8-byte big-endian length
//! and a msgpack array. Keys and values are sent as msgpack bin, as the KVStore
//! seed's Python client does (`use_bin_type=True`).
//!
//! ```text
//! request:  len | array(sets+gets) | [1, bin key, bin value] × sets | [0, bin key] × gets
//! reply:    len | array(gets)      | [-1, bin value] × gets      (keys just set)
//!                                  | [-2] × gets                 (sets = 0: keys never written)
//! ```
//!
//! The encoders are corekv's own (`corekv::proto`), so the load generator and the
//! server cannot disagree on integer or header encodings.

use super::BadReply;
use crate::template::Template;
use crate::workload::Shape;
use corekv::client::{decode_reply, MAX_REPLY_BYTES};
use corekv::proto::frame::{begin_frame, finish_frame, next_frame, LEN_PREFIX_BYTES};
use corekv::proto::reply::{write_array_len, write_not_found, TAG_FOUND};

const OP_GET: u8 = 0;
const OP_SET: u8 = 1;

pub fn request_template(shape: &Shape) -> Template {
    let mut t = Template::new(shape.key_bytes, shape.value_bytes);
    let start = begin_frame(t.bytes_mut());
    write_array_len(t.bytes_mut(), shape.ops());
    for set in 0..shape.sets as usize {
        t.bytes_mut().extend_from_slice(&[0x93, OP_SET]);
        bin_header(t.bytes_mut(), shape.key_bytes);
        t.key_hole(set);
        bin_header(t.bytes_mut(), shape.value_bytes);
        t.value_hole(set);
    }
    for get in 0..shape.gets as usize {
        t.bytes_mut().extend_from_slice(&[0x92, OP_GET]);
        bin_header(t.bytes_mut(), shape.key_bytes);
        t.key_hole(shape.sets as usize + get);
    }
    finish_frame(t.bytes_mut(), start);
    t
}

pub fn reply_template(shape: &Shape) -> Template {
    let mut t = Template::new(shape.key_bytes, shape.value_bytes);
    let start = begin_frame(t.bytes_mut());
    write_array_len(t.bytes_mut(), shape.gets);
    for get in 0..shape.gets {
        if shape.gets_find_values() {
            t.bytes_mut().extend_from_slice(&[0x92, TAG_FOUND as u8]);
            bin_header(t.bytes_mut(), shape.value_bytes);
            t.value_hole((get % shape.sets) as usize);
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

/// Header of a msgpack bin of `len` bytes (the bytes themselves are a hole).
fn bin_header(out: &mut Vec<u8>, len: usize) {
    match len {
        0..=0xff => out.extend_from_slice(&[0xc4, len as u8]),
        0x100..=0xffff => {
            out.push(0xc5);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0xc6);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{KeyRange, Plan};
    use corekv::client::{encode_message, Element, Request};
    use corekv::proto::reply::{write_bin, write_found};

    fn render(shape: &Shape) -> (Plan, Vec<u8>, Vec<u8>) {
        let mut plan = Plan::default();
        plan.fill(shape, &KeyRange::for_connection(2, 3, 300, 11), 11, 4);
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

    fn value(plan: &Plan, set: usize, value_bytes: usize) -> Vec<u8> {
        let mut value = vec![0; value_bytes];
        plan.write_value(set, &mut value);
        value
    }

    #[test]
    fn request_matches_the_client_library_encoding() {
        for value_bytes in [0, 32, 300, 70_000] {
            let shape = Shape {
                sets: 3,
                gets: 4,
                key_bytes: 16,
                value_bytes,
            };
            let (plan, request, _) = render(&shape);
            let mut requests = Vec::new();
            for set in 0..3 {
                let v = rmpv::Value::Binary(value(&plan, set, value_bytes));
                requests.push(Request::Set(key(&plan, set), v));
            }
            for get in 3..7 {
                requests.push(Request::Get(key(&plan, get)));
            }
            assert_eq!(
                request,
                encode_message(&requests),
                "value_bytes {value_bytes}"
            );
        }
    }

    #[test]
    fn expected_reply_is_what_the_server_encoder_writes() {
        let shape = Shape {
            sets: 2,
            gets: 3,
            key_bytes: 16,
            value_bytes: 20,
        };
        let (plan, _, reply) = render(&shape);
        let mut body = Vec::new();
        write_array_len(&mut body, 3);
        for set in [0, 1, 0] {
            let mut v = Vec::new();
            write_bin(&mut v, &value(&plan, set, 20));
            write_found(&mut body, &v);
        }
        assert_eq!(reply[..8], (body.len() as u64).to_be_bytes());
        assert_eq!(reply[8..], body);
        assert_eq!(reply_len(&reply), Ok(Some(reply.len())));
        assert_eq!(reply_len(&reply[..reply.len() - 1]), Ok(None));
    }

    #[test]
    fn read_only_messages_expect_not_found_and_set_only_messages_an_empty_array() {
        let (_, _, reply) = render(&Shape {
            sets: 0,
            gets: 2,
            key_bytes: 16,
            value_bytes: 8,
        });
        let body = &reply[LEN_PREFIX_BYTES..];
        let elements = decode_reply(body).expect("valid reply");
        assert_eq!(elements, [Element::NotFound, Element::NotFound]);
        let (_, _, reply) = render(&Shape {
            sets: 2,
            gets: 0,
            key_bytes: 16,
            value_bytes: 8,
        });
        assert_eq!(reply, [0, 0, 0, 0, 0, 0, 0, 1, 0x90]);
    }

    #[test]
    fn an_absurd_length_prefix_is_a_bad_reply() {
        assert!(reply_len(&u64::MAX.to_be_bytes()).is_err());
    }
}
