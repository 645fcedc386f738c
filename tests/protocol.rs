//! The wire protocol, byte for byte (BRIEF §3, docs/protocol.md), against the
//! real `corekv-server` binary over raw sockets: no client library sits between
//! the assertions and the bytes on the wire.
//!
//! Every exchange compares whole reply frames (length prefix included) with the
//! exact bytes expected. Tests that route keys run on a 1-shard and a 3-shard
//! server, with keys chosen so that each shard owns at least one of them, which
//! exercises both the in-place and the cross-shard path of the connection's shard.
//!
//! ATOMIC (opcode 3) is not built yet and is not covered here.

mod common;

use common::keys::key_names_on_every_shard;
use common::wire::RawConnection;
use common::{frame, pack, TestServer};
use rmpv::Value;

/// The reply to the empty message and to messages of only SET/DEL.
const EMPTY_REPLY: [u8; 9] = [0, 0, 0, 0, 0, 0, 0, 1, 0x90];

/// Shard counts the routing-sensitive tests run with.
const SHARD_COUNTS: [usize; 2] = [1, 3];

// ---------------------------------------------------------------------------
// Helpers: raw connections, msgpack building, keys per shard.
// ---------------------------------------------------------------------------

/// A raw connection whose replies are compared as whole frames, length
/// prefix included.
struct Wire(RawConnection);

impl Wire {
    fn connect(server: &TestServer) -> Wire {
        Wire(RawConnection::connect(server.addr))
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        self.0.send(bytes);
    }

    /// Reads one whole reply frame, length prefix included.
    fn read_frame(&mut self) -> Vec<u8> {
        frame(&self.0.reply())
    }

    /// Sends the message body `body` framed, returns the whole reply frame.
    fn exchange(&mut self, body: &[u8]) -> Vec<u8> {
        frame(&self.0.call(body))
    }

    /// Sends `message` and asserts its reply is exactly the frame of `expected`.
    fn expect(&mut self, message: &Value, expected: &Value) {
        let reply = self.exchange(&pack(message));
        assert_frame(&reply, &frame(&pack(expected)), message);
    }
}

/// Asserts two frames are byte-identical; on failure shows both in hex and decoded.
fn assert_frame(actual: &[u8], expected: &[u8], context: &dyn std::fmt::Display) {
    assert!(
        actual == expected,
        "reply to {context} differs\n  actual:   {} = {}\n  expected: {} = {}",
        hex(actual),
        decoded(actual),
        hex(expected),
        decoded(expected),
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The frame's body decoded, for failure messages.
fn decoded(frame: &[u8]) -> String {
    let mut body = frame.get(8..).unwrap_or_default();
    match rmpv::decode::read_value(&mut body) {
        Ok(value) => value.to_string(),
        Err(e) => format!("(not msgpack: {e})"),
    }
}

/// `a![x, y, ...]`: a msgpack array of anything `Value: From` accepts.
macro_rules! a {
    ($($item:expr),* $(,)?) => {
        Value::Array(vec![$(Value::from($item)),*])
    };
}

fn bin(bytes: &[u8]) -> Value {
    Value::Binary(bytes.to_vec())
}

fn message(requests: Vec<Value>) -> Value {
    Value::Array(requests)
}

/// Raw msgpack request bytes: `[opcode, key, rest...]`, with `rest` already encoded.
fn raw_request(opcode: u8, key: &[u8], rest: &[&[u8]]) -> Vec<u8> {
    assert!(rest.len() < 14);
    let mut out = vec![0x92 + rest.len() as u8, opcode];
    out.extend_from_slice(key);
    for part in rest {
        out.extend_from_slice(part);
    }
    out
}

/// A raw message body: an array header followed by the raw requests.
fn raw_message(requests: &[Vec<u8>]) -> Vec<u8> {
    assert!(requests.len() < 16);
    let mut out = vec![0x90 + requests.len() as u8];
    for request in requests {
        out.extend_from_slice(request);
    }
    out
}

// ---------------------------------------------------------------------------
// The KVStore seed's example conversation.
// ---------------------------------------------------------------------------

/// The seed's reply `[[-1,"Halpert"],[-1,"Schrute"]]`, byte by byte as in
/// docs/protocol.md.
#[rustfmt::skip]
const SEED_REPLY_STR: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0x15, // length 21
    0x92, // array of 2 elements
    0x92, 0xff, 0xa7, b'H', b'a', b'l', b'p', b'e', b'r', b't', // [-1, "Halpert"]
    0x92, 0xff, 0xa7, b'S', b'c', b'h', b'r', b'u', b't', b'e', // [-1, "Schrute"]
];

/// The seed's request `[[1,"status","OK"],[0,"Jim"],[0,"Dwight"]]`, byte by byte.
#[rustfmt::skip]
const SEED_REQUEST_STR: [u8; 36] = [
    0, 0, 0, 0, 0, 0, 0, 0x1c, // length 28
    0x93, // array of 3 requests
    0x93, 0x01, 0xa6, b's', b't', b'a', b't', b'u', b's', 0xa2, b'O', b'K', // [1, "status", "OK"]
    0x92, 0x00, 0xa3, b'J', b'i', b'm', // [0, "Jim"]
    0x92, 0x00, 0xa6, b'D', b'w', b'i', b'g', b'h', b't', // [0, "Dwight"]
];

#[test]
fn seed_example_conversation_with_str_keys_is_answered_byte_for_byte() {
    for nr_shards in SHARD_COUNTS {
        let server = TestServer::start(nr_shards, &[]);
        let mut wire = Wire::connect(&server);
        let setup = message(vec![a![1, "Jim", "Halpert"], a![1, "Dwight", "Schrute"]]);
        assert_frame(&wire.exchange(&pack(&setup)), &EMPTY_REPLY, &setup);

        // The handwritten bytes agree with the msgpack encoder's.
        let request = message(vec![a![1, "status", "OK"], a![0, "Jim"], a![0, "Dwight"]]);
        assert_eq!(SEED_REQUEST_STR.to_vec(), frame(&pack(&request)));
        let expected = a![a![-1, "Halpert"], a![-1, "Schrute"]];
        assert_eq!(SEED_REPLY_STR.to_vec(), frame(&pack(&expected)));

        wire.send_bytes(&SEED_REQUEST_STR);
        let context = format!("the seed's request on {nr_shards} shard(s)");
        assert_frame(&wire.read_frame(), &SEED_REPLY_STR, &context);
        wire.expect(&message(vec![a![0, "status"]]), &a![a![-1, "OK"]]);
    }
}

#[test]
fn seed_example_conversation_with_bin_keys_and_values_returns_bin_values() {
    for nr_shards in SHARD_COUNTS {
        let server = TestServer::start(nr_shards, &[]);
        let mut wire = Wire::connect(&server);
        let setup = message(vec![
            a![1, bin(b"Jim"), bin(b"Halpert")],
            a![1, bin(b"Dwight"), bin(b"Schrute")],
        ]);
        assert_frame(&wire.exchange(&pack(&setup)), &EMPTY_REPLY, &setup);

        let request = message(vec![
            a![1, bin(b"status"), bin(b"OK")],
            a![0, bin(b"Jim")],
            a![0, bin(b"Dwight")],
        ]);
        let mut expected_frame = vec![0, 0, 0, 0, 0, 0, 0, 0x17, 0x92];
        expected_frame.extend_from_slice(&[0x92, 0xff, 0xc4, 7]);
        expected_frame.extend_from_slice(b"Halpert");
        expected_frame.extend_from_slice(&[0x92, 0xff, 0xc4, 7]);
        expected_frame.extend_from_slice(b"Schrute");
        let expected = a![a![-1, bin(b"Halpert")], a![-1, bin(b"Schrute")]];
        assert_eq!(expected_frame, frame(&pack(&expected)));
        assert_frame(
            &wire.exchange(&pack(&request)),
            &expected_frame,
            &"the seed's request with bin keys",
        );
        // The same keys named as str: identity is the bytes, the values stay bin.
        wire.expect(
            &message(vec![a![0, "Jim"], a![0, "status"]]),
            &a![a![-1, bin(b"Halpert")], a![-1, bin(b"OK")]],
        );
    }
}

// ---------------------------------------------------------------------------
// Replies without elements.
// ---------------------------------------------------------------------------

#[test]
fn empty_and_set_del_only_messages_are_answered_with_the_empty_array() {
    for nr_shards in SHARD_COUNTS {
        let server = TestServer::start(nr_shards, &[]);
        let mut wire = Wire::connect(&server);
        let keys = key_names_on_every_shard("quiet:", nr_shards, nr_shards);
        let mut messages = vec![
            message(vec![]),
            message(vec![a![1, keys[0].as_str(), 1]]),
            message(vec![a![2, keys[0].as_str()]]),
            message(vec![a![2, "never-set"]]),
        ];
        // One message touching every shard with writes and deletes only.
        let mut mixed = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            mixed.push(a![1, key.as_str(), i]);
            mixed.push(a![2, bin(b"absent")]);
            mixed.push(a![1, bin(key.as_bytes()), a![i, "x"]]);
        }
        mixed.push(a![2, keys[0].as_str()]);
        messages.push(message(mixed));
        for m in &messages {
            assert_frame(&wire.exchange(&pack(m)), &EMPTY_REPLY, m);
        }
        // The empty message written as raw bytes, three times in one write.
        let empty = frame(&[0x90]);
        wire.send_bytes(&[empty.clone(), empty.clone(), empty].concat());
        for _ in 0..3 {
            assert_frame(&wire.read_frame(), &EMPTY_REPLY, &"[] (pipelined)");
        }
        // The writes above took effect.
        let gets: Vec<Value> = keys.iter().map(|k| a![0, k.as_str()]).collect();
        let mut expected = vec![a![-2]];
        for i in 1..keys.len() {
            expected.push(a![-1, a![i, "x"]]);
        }
        wire.expect(&message(gets), &Value::Array(expected));
    }
}

// ---------------------------------------------------------------------------
// Every opcode's reply shape and the version rules.
// ---------------------------------------------------------------------------

#[test]
fn get_replies_found_and_not_found_with_the_documented_bytes() {
    let server = TestServer::start(3, &[]);
    let mut wire = Wire::connect(&server);
    // [[0, "k"]] on an empty server: [[-2]].
    assert_frame(
        &wire.exchange(&[0x91, 0x92, 0x00, 0xa1, b'k']),
        &[0, 0, 0, 0, 0, 0, 0, 3, 0x91, 0x91, 0xfe],
        &"[[0,\"k\"]] before any write",
    );
    // [[1, "k", "v"], [0, "k"]]: [[-1, "v"]].
    assert_frame(
        &wire.exchange(&[
            0x92, 0x93, 0x01, 0xa1, b'k', 0xa1, b'v', 0x92, 0x00, 0xa1, b'k',
        ]),
        &[0, 0, 0, 0, 0, 0, 0, 5, 0x91, 0x92, 0xff, 0xa1, b'v'],
        &"[[1,\"k\",\"v\"],[0,\"k\"]]",
    );
}

#[test]
fn versioned_update_example_from_the_protocol_docs_is_answered_byte_for_byte() {
    for nr_shards in SHARD_COUNTS {
        let server = TestServer::start(nr_shards, &[]);
        let mut wire = Wire::connect(&server);
        let set = [0x91, 0x93, 0x01, 0xa1, b'k', 0xa1, b'v'];
        assert_frame(&wire.exchange(&set), &EMPTY_REPLY, &"[[1,\"k\",\"v\"]]");
        let steps: [(&[u8], &[u8]); 4] = [
            (
                &[0x91, 0x92, 0x04, 0xa1, b'k'],
                &[0, 0, 0, 0, 0, 0, 0, 6, 0x91, 0x93, 0xfd, 0xa1, b'v', 0x01],
            ),
            (
                &[0x91, 0x94, 0x05, 0xa1, b'k', 0xa1, b'w', 0x01],
                &[0, 0, 0, 0, 0, 0, 0, 4, 0x91, 0x92, 0xfc, 0x02],
            ),
            (
                &[0x91, 0x94, 0x05, 0xa1, b'k', 0xa1, b'x', 0x01],
                &[0, 0, 0, 0, 0, 0, 0, 4, 0x91, 0x92, 0xfb, 0x02],
            ),
            (
                &[0x92, 0x92, 0x06, 0xa1, b'k', 0x92, 0x06, 0xa1, b'k'],
                &[
                    0, 0, 0, 0, 0, 0, 0, 7, 0x92, 0x92, 0xfc, 0x01, 0x92, 0xfc, 0x00,
                ],
            ),
        ];
        for (request, reply) in steps {
            let context = format!("body {} on {nr_shards} shard(s)", hex(request));
            assert_frame(&wire.exchange(request), reply, &context);
        }
    }
}

#[test]
fn getv_putv_and_rm_follow_the_version_rules_on_every_shard() {
    for nr_shards in SHARD_COUNTS {
        let server = TestServer::start(nr_shards, &[]);
        let mut wire = Wire::connect(&server);
        for key in key_names_on_every_shard("versioned:", nr_shards, nr_shards) {
            let k = key.as_str();
            let steps = [
                (a![4, k], a![-2]),
                (a![0, k], a![-2]),
                (a![5, k, "v1", 1], a![-5, 0]), // absent: current version 0
                (a![5, k, "v1", 0], a![-4, 1]), // 0 = must be absent
                (a![5, k, "v2", 0], a![-5, 1]), // now present
                (a![4, k], a![-3, "v1", 1]),
                (a![1, k, "v3"], Value::Nil), // SET: no element, version 2
                (a![4, k], a![-3, "v3", 2]),
                (a![5, k, "v4", 2], a![-4, 3]),
                (a![5, k, "v5", 2], a![-5, 3]), // stale version
                (a![5, k, "v5", 4], a![-5, 3]), // future version
                (a![0, k], a![-1, "v4"]),
                (a![6, k], a![-4, 1]),
                (a![6, k], a![-4, 0]),
                (a![4, k], a![-2]),
                (a![0, k], a![-2]),
                (a![5, k, "v6", 3], a![-5, 0]), // deleted: version back to 0
                (a![1, k, "v7"], Value::Nil),
                (a![4, k], a![-3, "v7", 1]), // a write after delete gives 1
                (a![2, k], Value::Nil),
                (a![2, k], Value::Nil), // DEL of a missing key is a no-op
                (a![5, k, "v8", 0], a![-4, 1]),
                (a![4, k], a![-3, "v8", 1]),
            ];
            for (request, element) in steps {
                let expected = match element {
                    Value::Nil => a![],
                    element => a![element],
                };
                wire.expect(&message(vec![request]), &expected);
            }
        }
    }
}

#[test]
fn versions_past_one_byte_use_the_smallest_integer_encoding() {
    let server = TestServer::start(3, &[]);
    let mut wire = Wire::connect(&server);
    for key in key_names_on_every_shard("counter:", 3, 3) {
        let k = key.as_str();
        let sets: Vec<Value> = (0..300).map(|i| a![1, k, i]).collect();
        wire.expect(&message(sets), &a![]);
        // Version 300 is `cd 01 2c` on the wire.
        let body = pack(&message(vec![a![4, k]]));
        let expected = [
            &[0, 0, 0, 0, 0, 0, 0, 9, 0x91, 0x93, 0xfd, 0xcd, 0x01, 0x2b][..],
            &[0xcd, 0x01, 0x2c][..],
        ]
        .concat();
        assert_frame(&wire.exchange(&body), &expected, &"GETV after 300 SETs");
        wire.expect(&message(vec![a![5, k, 0, 299]]), &a![a![-5, 300]]);
        wire.expect(&message(vec![a![5, k, 0, 300]]), &a![a![-4, 301]]);
        wire.expect(&message(vec![a![6, k]]), &a![a![-4, 1]]);
        wire.expect(&message(vec![a![5, k, 0, 0]]), &a![a![-4, 1]]);
    }
}

#[test]
fn opcodes_and_versions_accept_any_integer_encoding() {
    let server = TestServer::start(3, &[]);
    let mut wire = Wire::connect(&server);
    let key = [0xa1, b'n'];
    // SET with opcode 1 as uint8 (cc 01), GET with opcode 0 as int64 (d3 00..00),
    // GETV with opcode 4 as uint16, PUTV with opcode 5 as int8 and version 1 as uint64.
    let body = raw_message(&[
        [&[0x93, 0xcc, 0x01][..], &key, &[0x07]].concat(),
        [&[0x92, 0xd3, 0, 0, 0, 0, 0, 0, 0, 0][..], &key].concat(),
        [&[0x92, 0xcd, 0x00, 0x04][..], &key].concat(),
        [
            &[0x94, 0xd0, 0x05][..],
            &key,
            &[0x08, 0xcf, 0, 0, 0, 0, 0, 0, 0, 1],
        ]
        .concat(),
        [&[0x92, 0xce, 0, 0, 0, 0x06][..], &key].concat(),
    ]);
    let expected = a![a![-1, 7], a![-3, 7, 1], a![-4, 2], a![-4, 1]];
    assert_frame(
        &wire.exchange(&body),
        &frame(&pack(&expected)),
        &"requests with wide integer encodings",
    );
}

// ---------------------------------------------------------------------------
// Keys.
// ---------------------------------------------------------------------------

#[test]
fn str_and_bin_keys_with_the_same_bytes_are_one_key() {
    for nr_shards in SHARD_COUNTS {
        let server = TestServer::start(nr_shards, &[]);
        let mut wire = Wire::connect(&server);
        for key in key_names_on_every_shard("same:", nr_shards, nr_shards) {
            let s = key.as_str();
            let b = bin(key.as_bytes());
            wire.expect(&message(vec![a![1, s, 1]]), &a![]);
            wire.expect(
                &message(vec![a![0, b.clone()], a![4, b.clone()]]),
                &a![a![-1, 1], a![-3, 1, 1]],
            );
            wire.expect(
                &message(vec![a![1, b.clone(), 2], a![4, s]]),
                &a![a![-3, 2, 2]],
            );
            wire.expect(&message(vec![a![5, s, 3, 2]]), &a![a![-4, 3]]);
            wire.expect(&message(vec![a![6, b.clone()]]), &a![a![-4, 1]]);
            wire.expect(&message(vec![a![0, s], a![6, s]]), &a![a![-2], a![-4, 0]]);
            wire.expect(
                &message(vec![a![5, b, 4, 0], a![0, s]]),
                &a![a![-4, 1], a![-1, 4]],
            );
        }
    }
}

#[test]
fn a_key_is_its_payload_bytes_whatever_str_or_bin_header_encodes_it() {
    for nr_shards in SHARD_COUNTS {
        let server = TestServer::start(nr_shards, &[]);
        let mut wire = Wire::connect(&server);
        // "ab" as fixstr, str8, str16, str32, bin8, bin16, bin32.
        let encodings: [&[u8]; 7] = [
            &[0xa2, b'a', b'b'],
            &[0xd9, 2, b'a', b'b'],
            &[0xda, 0, 2, b'a', b'b'],
            &[0xdb, 0, 0, 0, 2, b'a', b'b'],
            &[0xc4, 2, b'a', b'b'],
            &[0xc5, 0, 2, b'a', b'b'],
            &[0xc6, 0, 0, 0, 2, b'a', b'b'],
        ];
        for (i, writer) in encodings.iter().enumerate() {
            let set = raw_request(1, writer, &[&[i as u8]]);
            assert_frame(
                &wire.exchange(&raw_message(&[set])),
                &EMPTY_REPLY,
                &hex(writer),
            );
            for reader in encodings {
                let get = raw_request(4, reader, &[]);
                let expected = a![a![-3, i, i + 1]];
                let context = format!("GETV {} after SET {}", hex(reader), hex(writer));
                let reply = wire.exchange(&raw_message(&[get]));
                assert_frame(&reply, &frame(&pack(&expected)), &context);
            }
        }
    }
}

#[test]
fn empty_and_non_utf8_keys_are_ordinary_keys() {
    for nr_shards in SHARD_COUNTS {
        let server = TestServer::start(nr_shards, &[]);
        let mut wire = Wire::connect(&server);
        let odd_keys = [
            bin(b""),
            bin(&[0xff, 0xfe, 0x00, 0x80]),
            bin(&[0u8; 64]),
            Value::from("ключ ☃"),
        ];
        for (i, key) in odd_keys.iter().enumerate() {
            wire.expect(&message(vec![a![1, key.clone(), i]]), &a![]);
        }
        let gets: Vec<Value> = odd_keys.iter().map(|k| a![4, k.clone()]).collect();
        let expected: Vec<Value> = (0..odd_keys.len()).map(|i| a![-3, i, 1]).collect();
        wire.expect(&message(gets), &Value::Array(expected));
        // The empty str is the empty bin.
        wire.expect(
            &message(vec![a![0, ""], a![6, ""]]),
            &a![a![-1, 0], a![-4, 1]],
        );
        wire.expect(&message(vec![a![0, bin(b"")]]), &a![a![-2]]);
    }
}

// ---------------------------------------------------------------------------
// Values.
// ---------------------------------------------------------------------------

/// Encodings of every msgpack type, including non-minimal ones that a
/// re-encoding server would change.
fn every_kind_of_value() -> Vec<(&'static str, Vec<u8>)> {
    let mut values: Vec<(&'static str, Vec<u8>)> = vec![
        ("nil", vec![0xc0]),
        ("false", vec![0xc2]),
        ("true", vec![0xc3]),
        ("positive fixint 0", vec![0x00]),
        ("positive fixint 127", vec![0x7f]),
        ("negative fixint -1", vec![0xff]),
        ("negative fixint -32", vec![0xe0]),
        ("uint8 255", vec![0xcc, 0xff]),
        ("uint8 1 (non-minimal)", vec![0xcc, 0x01]),
        ("uint16", vec![0xcd, 0x01, 0x00]),
        ("uint32", vec![0xce, 0xde, 0xad, 0xbe, 0xef]),
        (
            "uint64 max",
            vec![0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ),
        ("int8 -128", vec![0xd0, 0x80]),
        ("int16 -32768", vec![0xd1, 0x80, 0x00]),
        ("int32 -1 (non-minimal)", vec![0xd2, 0xff, 0xff, 0xff, 0xff]),
        ("int64 min", vec![0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0]),
        ("int64 1 (non-minimal)", vec![0xd3, 0, 0, 0, 0, 0, 0, 0, 1]),
        ("float32 1.5", vec![0xca, 0x3f, 0xc0, 0x00, 0x00]),
        ("float32 inf", vec![0xca, 0x7f, 0x80, 0x00, 0x00]),
        (
            "float64 pi",
            vec![0xcb, 0x40, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18],
        ),
        ("float64 -0.0", vec![0xcb, 0x80, 0, 0, 0, 0, 0, 0, 0]),
        (
            "float64 NaN with payload",
            vec![0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0x01],
        ),
        ("fixstr empty", vec![0xa0]),
        ("fixstr", [&[0xa5][..], b"hello"].concat()),
        (
            "fixstr utf-8",
            [&[0xaa][..], "h\u{e9}llo \u{2603}".as_bytes()].concat(),
        ),
        ("str8 1 byte (non-minimal)", vec![0xd9, 0x01, b'x']),
        ("str16 1 byte (non-minimal)", vec![0xda, 0x00, 0x01, b'x']),
        (
            "str32 1 byte (non-minimal)",
            vec![0xdb, 0, 0, 0, 0x01, b'x'],
        ),
        ("bin8 empty", vec![0xc4, 0x00]),
        ("bin8", vec![0xc4, 0x04, 0x00, 0xff, 0x10, 0x80]),
        ("bin16 (non-minimal)", vec![0xc5, 0x00, 0x01, 0xfe]),
        ("bin32 (non-minimal)", vec![0xc6, 0, 0, 0, 0x01, 0xfe]),
        ("fixarray empty", vec![0x90]),
        ("fixarray mixed", vec![0x93, 0x01, 0xa1, b'a', 0xc0]),
        ("array16 (non-minimal)", vec![0xdc, 0x00, 0x02, 0xc3, 0xc2]),
        ("array32 (non-minimal)", vec![0xdd, 0, 0, 0, 0x01, 0x90]),
        ("fixmap empty", vec![0x80]),
        (
            "fixmap nested",
            vec![
                0x82, 0xa1, b'a', 0x01, 0xa1, b'b', 0x92, 0xc2, 0x81, 0xc0, 0xc0,
            ],
        ),
        ("map16 (non-minimal)", vec![0xde, 0x00, 0x01, 0x01, 0x02]),
        (
            "map32 with a non-str key",
            vec![0xdf, 0, 0, 0, 0x01, 0x92, 0x01, 0x02, 0xc3],
        ),
        ("fixext1", vec![0xd4, 0x01, 0xaa]),
        ("fixext2", vec![0xd5, 0x02, 0xaa, 0xbb]),
        (
            "fixext4 timestamp32",
            vec![0xd6, 0xff, 0x00, 0x00, 0x00, 0x01],
        ),
        ("fixext8", vec![0xd7, 0xff, 1, 2, 3, 4, 5, 6, 7, 8]),
        ("fixext16", [&[0xd8, 0x05][..], &[0x5a; 16]].concat()),
        ("ext8 empty", vec![0xc7, 0x00, 0x07]),
        (
            "ext8 negative type",
            vec![0xc7, 0x03, 0x80, 0xaa, 0xbb, 0xcc],
        ),
        ("ext16", vec![0xc8, 0x00, 0x02, 0x05, 0xaa, 0xbb]),
        ("ext32", vec![0xc9, 0, 0, 0, 0x02, 0x05, 0xaa, 0xbb]),
    ];
    let deep = [vec![0x91u8; 1000], vec![0xc0]].concat();
    values.push(("array nested 1000 deep", deep));
    let mut array16 = vec![0xdc, 0x00, 0x14];
    array16.extend((0..20u8).map(|i| i & 0x7f));
    values.push(("array16 of 20", array16));
    let mut map16 = vec![0xde, 0x00, 0x10];
    for i in 0..16u8 {
        map16.extend_from_slice(&[0xa1, b'a' + i, 0xd4, i, i]);
    }
    values.push(("map16 of ext values", map16));
    let long_str = "s".repeat(100_000);
    values.push(("str32 100 KB", pack(&Value::from(long_str.as_str()))));
    let long_bin: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    values.push(("bin32 70 KB", pack(&Value::Binary(long_bin))));
    values
}

#[test]
fn values_of_every_msgpack_type_come_back_byte_for_byte() {
    for nr_shards in SHARD_COUNTS {
        let server = TestServer::start(nr_shards, &[]);
        let mut wire = Wire::connect(&server);
        let values = every_kind_of_value();
        let keys: Vec<Vec<u8>> = (0..values.len())
            .map(|i| pack(&Value::from(format!("value:{i}"))))
            .collect();
        // SET, GET and GETV in one message: the reads see the write.
        for ((name, value), key) in values.iter().zip(&keys) {
            let body = raw_message(&[
                raw_request(1, key, &[value]),
                raw_request(0, key, &[]),
                raw_request(4, key, &[]),
            ]);
            let expected_body = [
                &[0x92, 0x92, 0xff][..],
                value,
                &[0x93, 0xfd],
                value,
                &[0x01],
            ]
            .concat();
            let context = format!("{name} on {nr_shards} shard(s)");
            assert_frame(&wire.exchange(&body), &frame(&expected_body), &context);
        }
        // Later messages read the same bytes, all values in one reply.
        let mut body = vec![0xdc];
        body.extend_from_slice(&(values.len() as u16).to_be_bytes());
        let mut expected_body = body.clone();
        for ((_, value), key) in values.iter().zip(&keys) {
            body.extend_from_slice(&raw_request(0, key, &[]));
            expected_body.extend_from_slice(&[0x92, 0xff]);
            expected_body.extend_from_slice(value);
        }
        let context = format!("one GET per value on {nr_shards} shard(s)");
        assert_frame(&wire.exchange(&body), &frame(&expected_body), &context);
        // PUTV stores its value byte-for-byte too.
        for ((name, value), key) in values.iter().zip(&keys) {
            let body = raw_message(&[
                raw_request(5, key, &[&[0xc0], &[0x01]]),
                raw_request(5, key, &[value, &[0x02]]),
                raw_request(4, key, &[]),
            ]);
            let expected_body = [
                &[0x93, 0x92, 0xfc, 0x02, 0x92, 0xfc, 0x03, 0x93, 0xfd][..],
                value,
                &[0x03],
            ]
            .concat();
            let context = format!("PUTV of {name} on {nr_shards} shard(s)");
            assert_frame(&wire.exchange(&body), &frame(&expected_body), &context);
        }
    }
}

// ---------------------------------------------------------------------------
// Order inside a message.
// ---------------------------------------------------------------------------

#[test]
fn a_get_sees_an_earlier_set_of_the_same_message() {
    for nr_shards in SHARD_COUNTS {
        let server = TestServer::start(nr_shards, &[]);
        let mut wire = Wire::connect(&server);
        for key in key_names_on_every_shard("same-message:", nr_shards, nr_shards) {
            let k = key.as_str();
            let requests = vec![
                a![0, k],
                a![1, k, 1],
                a![0, k],
                a![1, k, 2],
                a![4, k],
                a![2, k],
                a![0, k],
                a![6, k],
                a![5, k, "x", 0],
                a![4, k],
                a![6, k],
                a![4, k],
            ];
            let expected = a![
                a![-2],
                a![-1, 1],
                a![-3, 2, 2],
                a![-2],
                a![-4, 0],
                a![-4, 1],
                a![-3, "x", 1],
                a![-4, 1],
                a![-2],
            ];
            wire.expect(&message(requests), &expected);
        }
    }
}

#[test]
fn requests_on_keys_of_different_shards_are_answered_in_request_order() {
    for nr_shards in SHARD_COUNTS {
        let server = TestServer::start(nr_shards, &[]);
        let mut wire = Wire::connect(&server);
        let keys = key_names_on_every_shard("interleaved:", nr_shards, nr_shards);
        let mut requests = Vec::new();
        let mut expected = Vec::new();
        // Round-robin over the shards, several rounds, so each reply element has
        // to be taken from a different shard's results than the one before it.
        for round in 0..5 {
            for (i, key) in keys.iter().enumerate() {
                let value = round * 10 + i;
                requests.push(a![1, key.as_str(), value]);
                requests.push(a![0, key.as_str()]);
                expected.push(a![-1, value]);
                if (round + i) % 2 == 0 {
                    requests.push(a![4, "interleaved:missing"]);
                    expected.push(a![-2]);
                }
            }
            for key in keys.iter().rev() {
                requests.push(a![4, key.as_str()]);
                let i = keys.iter().position(|k| k == key).expect("known key");
                expected.push(a![-3, round * 10 + i, round + 1]);
            }
        }
        wire.expect(&message(requests), &Value::Array(expected));
    }
}

#[test]
fn a_frame_sent_one_byte_at_a_time_is_answered_once() {
    let server = TestServer::start(3, &[]);
    let mut wire = Wire::connect(&server);
    let keys = key_names_on_every_shard("trickle:", 3, 3);
    let requests: Vec<Value> = keys
        .iter()
        .flat_map(|k| [a![1, k.as_str(), k.as_str()], a![0, k.as_str()]])
        .collect();
    let bytes = frame(&pack(&message(requests)));
    for byte in &bytes {
        wire.send_bytes(&[*byte]);
    }
    let expected: Vec<Value> = keys.iter().map(|k| a![-1, k.as_str()]).collect();
    let expected = frame(&pack(&Value::Array(expected)));
    assert_frame(&wire.read_frame(), &expected, &"a trickled frame");
    // Nothing else was answered: the next reply is the next message's.
    wire.expect(&message(vec![a![0, "trickle:none"]]), &a![a![-2]]);
}

// ---------------------------------------------------------------------------
// STATS.
// ---------------------------------------------------------------------------

/// The names docs/protocol.md promises in every STATS reply.
const STATS_NAMES: [&str; 12] = [
    "keys",
    "value_bytes",
    "memory_bytes",
    "gets",
    "hits",
    "misses",
    "sets",
    "deletes",
    "version_conflicts",
    "oom_rejections",
    "shards",
    "connections",
];

/// Sends `[[7]]` and checks the reply's shape: one `[-6, {str: uint}]` element.
fn stats(wire: &mut Wire) -> std::collections::BTreeMap<String, u64> {
    let reply = wire.exchange(&[0x91, 0x91, 0x07]);
    let mut body = &reply[8..];
    let value = rmpv::decode::read_value(&mut body).expect("reply is msgpack");
    assert!(body.is_empty(), "trailing bytes after the STATS reply");
    let elements = value.as_array().expect("reply is an array");
    assert_eq!(elements.len(), 1, "one element for one STATS: {value}");
    let element = elements[0].as_array().expect("element is an array");
    assert_eq!(element.len(), 2, "[-6, map]: {value}");
    assert_eq!(element[0].as_i64(), Some(-6), "STATS tag: {value}");
    // The tag is the one-byte negative fixint.
    assert_eq!(&reply[8..11], &[0x91, 0x92, 0xfa][..]);
    let map = element[1].as_map().expect("STATS map");
    let stats: std::collections::BTreeMap<String, u64> = map
        .iter()
        .map(|(k, v)| {
            let name = k.as_str().expect("STATS names are str").to_owned();
            let n = v.as_u64().expect("STATS values are non-negative integers");
            (name, n)
        })
        .collect();
    assert_eq!(stats.len(), map.len(), "STATS names are unique: {value}");
    for name in STATS_NAMES {
        assert!(stats.contains_key(name), "STATS lacks {name}: {value}");
    }
    stats
}

#[test]
fn stats_of_a_fresh_server_are_zero_and_report_its_shards_and_connection() {
    for nr_shards in [1, 3, 4] {
        let server = TestServer::start(nr_shards, &[]);
        let mut wire = Wire::connect(&server);
        let stats = stats(&mut wire);
        for name in &STATS_NAMES[..10] {
            assert_eq!(stats[*name], 0, "{name} on a fresh server: {stats:?}");
        }
        assert_eq!(stats["shards"], nr_shards as u64, "{stats:?}");
        assert_eq!(stats["connections"], 1, "{stats:?}");
    }
}

#[test]
fn stats_count_exactly_the_operations_just_made() {
    for nr_shards in SHARD_COUNTS {
        let server = TestServer::start(nr_shards, &[]);
        let mut wire = Wire::connect(&server);
        let keys = key_names_on_every_shard("counted:", nr_shards.max(3), nr_shards.max(3));
        let (ka, kb, kc) = (keys[0].as_str(), keys[1].as_str(), keys[2].as_str());
        let kd = "counted:d";

        // 4 SETs (one an overwrite). Values: "aaaa" = 5 bytes, "bb" = 3, 7 = 1, "a" = 2.
        let sets = message(vec![
            a![1, ka, "aaaa"],
            a![1, kb, "bb"],
            a![1, kc, 7],
            a![1, ka, "a"],
        ]);
        wire.expect(&sets, &a![]);
        // 5 gets: 3 hits (GET ka, GET kb, GETV kc), 2 misses.
        wire.expect(
            &message(vec![
                a![0, ka],
                a![0, kb],
                a![0, "counted:missing1"],
                a![4, kc],
                a![4, "counted:missing2"],
            ]),
            &a![a![-1, "a"], a![-1, "bb"], a![-2], a![-3, 7, 1], a![-2]],
        );
        // 1 applied PUTV (a set, "dd" = 3 bytes), 2 conflicts.
        wire.expect(
            &message(vec![
                a![5, kd, "dd", 0],
                a![5, kd, "x", 0],
                a![5, kb, "y", 7],
            ]),
            &a![a![-4, 1], a![-5, 1], a![-5, 1]],
        );
        // 4 deletes: DEL and RM, of present and missing keys.
        wire.expect(
            &message(vec![
                a![2, kc],
                a![2, "counted:missing3"],
                a![6, kd],
                a![6, "counted:missing4"],
            ]),
            &a![a![-4, 1], a![-4, 0]],
        );

        // Left: ka = "a" (2 bytes), kb = "bb" (3 bytes).
        let stats = stats(&mut wire);
        let expected = [
            ("keys", 2),
            ("value_bytes", 5),
            ("gets", 5),
            ("hits", 3),
            ("misses", 2),
            ("sets", 5),
            ("deletes", 4),
            ("version_conflicts", 2),
            ("oom_rejections", 0),
            ("shards", nr_shards as u64),
            ("connections", 1),
        ];
        for (name, value) in expected {
            assert_eq!(
                stats[name], value,
                "{name} on {nr_shards} shard(s): {stats:?}"
            );
        }
        let key_bytes = (ka.len() + kb.len()) as u64;
        assert!(
            stats["memory_bytes"] >= key_bytes + 5,
            "memory_bytes covers at least keys and values: {stats:?}"
        );
    }
}

#[test]
fn stats_in_a_message_see_the_requests_before_them() {
    for nr_shards in SHARD_COUNTS {
        let server = TestServer::start(nr_shards, &[]);
        let mut wire = Wire::connect(&server);
        let keys = key_names_on_every_shard("seen:", nr_shards, nr_shards);
        let mut requests: Vec<Value> = keys.iter().map(|k| a![1, k.as_str(), "vv"]).collect();
        requests.push(a![7]);
        requests.extend(keys.iter().map(|k| a![2, k.as_str()]));
        requests.push(a![7]);
        let reply = wire.exchange(&pack(&message(requests)));
        let mut body = &reply[8..];
        let value = rmpv::decode::read_value(&mut body)
            .unwrap_or_else(|e| panic!("reply {} is not msgpack: {e}", hex(&reply)));
        let elements = value.as_array().expect("array reply");
        assert_eq!(elements.len(), 2, "two STATS elements: {value}");
        let field = |element: &Value, name: &str| -> u64 {
            let map = element.as_array().expect("[-6, map]")[1]
                .as_map()
                .expect("map");
            map.iter()
                .find(|(k, _)| k.as_str() == Some(name))
                .and_then(|(_, v)| v.as_u64())
                .unwrap_or_else(|| panic!("{name} missing in {element}"))
        };
        let n = keys.len() as u64;
        assert_eq!(field(&elements[0], "keys"), n, "{value}");
        assert_eq!(field(&elements[0], "value_bytes"), 3 * n, "{value}");
        assert_eq!(field(&elements[0], "sets"), n, "{value}");
        assert_eq!(field(&elements[1], "keys"), 0, "{value}");
        assert_eq!(field(&elements[1], "value_bytes"), 0, "{value}");
        assert_eq!(field(&elements[1], "deletes"), n, "{value}");
    }
}

#[test]
fn a_set_or_del_after_stats_in_the_same_message_adds_no_element() {
    for nr_shards in SHARD_COUNTS {
        let server = TestServer::start(nr_shards, &[]);
        let mut wire = Wire::connect(&server);
        for requests in [
            vec![a![7], a![1, "after-stats", 1]],
            vec![a![7], a![2, "after-stats"]],
            vec![
                a![1, "after-stats", 1],
                a![7],
                a![2, "after-stats"],
                a![0, "x"],
            ],
        ] {
            let reply = wire.exchange(&pack(&message(requests.clone())));
            let mut body = &reply[8..];
            let value = rmpv::decode::read_value(&mut body).unwrap_or_else(|e| {
                panic!(
                    "reply to {} on {nr_shards} shard(s) is not one msgpack value: {e}\n  {}",
                    message(requests.clone()),
                    hex(&reply)
                )
            });
            assert!(body.is_empty(), "trailing bytes: {}", hex(&reply));
            let elements = value.as_array().expect("array reply");
            let nr_stats = requests.iter().filter(|r| r[0].as_u64() == Some(7)).count();
            let nr_gets = requests.iter().filter(|r| r[0].as_u64() == Some(0)).count();
            assert_eq!(elements.len(), nr_stats + nr_gets, "{value}");
        }
    }
}
