//! Pipelining (BRIEF §3): a client may write many request messages before it
//! reads any reply; the server answers each with exactly one reply, in order.
//!
//! Each test builds its messages and the exact reply frame each must get (from
//! the reference model, tests/common/model.rs), writes all messages from a writer thread
//! while the test thread reads, and compares every reply byte for byte. The
//! writer is a separate thread so that neither side can stall on a full socket
//! buffer: the server stops reading while its replies are not being read.

mod common;

use common::keys::key_names_on_every_shard;
use common::model::{encode_reply, Model};
use common::wire::{read_frame, RawConnection};
use common::{frame, TestServer};
use corekv::client::{encode_message, Element, Request};
use rmpv::Value;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::SocketAddr;

fn set(key: &str, value: impl Into<Value>) -> Request {
    Request::Set(key.as_bytes().to_vec(), value.into())
}

fn get(key: &str) -> Request {
    Request::Get(key.as_bytes().to_vec())
}

fn getv(key: &str) -> Request {
    Request::GetV(key.as_bytes().to_vec())
}

fn del(key: &str) -> Request {
    Request::Del(key.as_bytes().to_vec())
}

/// `[a, b]` as a msgpack value.
fn pair(a: impl Into<Value>, b: impl Into<Value>) -> Value {
    Value::Array(vec![a.into(), b.into()])
}

/// One whole reply frame, length prefix included.
fn read_reply(reader: &mut impl Read) -> Vec<u8> {
    let body = read_frame(reader)
        .expect("read a reply")
        .expect("a reply, not the end of the stream");
    frame(&body)
}

fn describe(frame: &[u8]) -> String {
    let mut body = frame.get(8..).unwrap_or_default();
    match rmpv::decode::read_value(&mut body) {
        Ok(value) => value.to_string(),
        Err(e) => format!("(not msgpack: {e})"),
    }
}

/// Writes every message on one connection from a writer thread before reading
/// any reply, then checks that reply i is exactly `expected[i]`, and that the
/// next reply after them belongs to a message sent afterwards.
fn pipeline(addr: SocketAddr, messages: Vec<Vec<Request>>, expected: Vec<Vec<u8>>) {
    assert_eq!(messages.len(), expected.len());
    let stream = RawConnection::connect(addr).stream;
    let mut writer = BufWriter::new(stream.try_clone().expect("clone stream"));
    let nr_messages = messages.len();
    let writer_thread = std::thread::spawn(move || {
        for message in &messages {
            writer.write_all(&encode_message(message)).expect("write");
        }
        writer.flush().expect("flush");
        writer
    });
    let mut reader = BufReader::new(stream);
    for (i, want) in expected.iter().enumerate() {
        let got = read_reply(&mut reader);
        assert!(
            &got == want,
            "reply {i} of {nr_messages} differs\n  got:      {}\n  expected: {}",
            describe(&got),
            describe(want)
        );
    }
    // No extra reply was sent: the next frame answers the next message.
    let mut writer = writer_thread.join().expect("writer thread");
    let sentinel = encode_message(&[get("pipeline:sentinel")]);
    writer.write_all(&sentinel).expect("write");
    writer.flush().expect("flush");
    let got = read_reply(&mut reader);
    assert_eq!(
        describe(&got),
        describe(&encode_reply(&[Element::NotFound])),
        "reply after the pipeline"
    );
}

#[test]
fn five_thousand_pipelined_messages_are_answered_completely_and_in_order() {
    let server = TestServer::start(3, &[]);
    let mut model = Model::default();
    let mut messages = Vec::new();
    let mut expected = Vec::new();
    for i in 0..5_000u64 {
        let key = format!("pipe:{i}");
        let previous = format!("pipe:{}", i.saturating_sub(1));
        let message = match i % 10 {
            3 => vec![],
            7 => vec![set(&key, i), set("pipe:counter", i)],
            _ => vec![
                set(&key, i),
                get(&key),
                get(&previous),
                set("pipe:counter", i),
                getv("pipe:counter"),
            ],
        };
        expected.push(encode_reply(&model.reply_to(&message)));
        messages.push(message);
    }
    // Spot-check the model against hand-written expectations.
    assert_eq!(describe(&expected[0]), "[[-1, 0], [-1, 0], [-3, 0, 1]]");
    assert_eq!(describe(&expected[3]), "[]");
    assert_eq!(describe(&expected[4]), "[[-1, 4], [-2], [-3, 4, 4]]");
    assert_eq!(describe(&expected[8]), "[[-1, 8], [-1, 7], [-3, 8, 8]]");
    pipeline(server.addr, messages, expected);
}

#[test]
fn pipelined_writes_to_each_key_take_effect_in_order_on_every_shard() {
    let server = TestServer::start(3, &[]);
    let keys = key_names_on_every_shard("order:", 12, 3);
    let mut model = Model::default();
    let mut messages = Vec::new();
    let mut expected = Vec::new();
    for round in 0..300usize {
        // Rotate the key order every round so each message interleaves shards
        // differently.
        let mut order = keys.clone();
        order.rotate_left(round % keys.len());
        let first: Vec<Request> = order.iter().map(|k| set(k, pair(round, 1))).collect();
        let mut second = Vec::new();
        for (i, k) in order.iter().rev().enumerate() {
            if (round + i) % 7 == 0 {
                second.push(del(k)); // the version starts over at 1
            }
            second.push(set(k, pair(round, 2)));
        }
        let mut reads = Vec::new();
        for k in &order {
            reads.push(get(k));
            reads.push(getv(k));
        }
        for message in [vec![], first, second, reads] {
            expected.push(encode_reply(&model.reply_to(&message)));
            messages.push(message);
        }
    }
    // Every read sees the second write of its round.
    let last = describe(expected.last().expect("messages"));
    assert!(
        last.starts_with("[[-1, [299, 2]], [-3, [299, 2], "),
        "{last}"
    );
    pipeline(server.addr, messages, expected);
}

#[test]
fn pipelined_large_values_flow_through_without_loss() {
    let server = TestServer::start(3, &[]);
    let mut model = Model::default();
    let mut messages = Vec::new();
    let mut expected = Vec::new();
    // 1,000 messages of 16 KiB each way: far more than socket buffers hold, so
    // the server must wait for the reader and carry on where it stopped.
    for i in 0..1_000usize {
        let key = format!("large:{}", i % 64);
        let value = Value::Binary((0..16 * 1024).map(|j| ((i + j) % 251) as u8).collect());
        let message = vec![set(&key, value), get(&key)];
        expected.push(encode_reply(&model.reply_to(&message)));
        messages.push(message);
    }
    pipeline(server.addr, messages, expected);
}

#[test]
fn connections_pipelining_at_once_each_get_their_own_replies_in_order() {
    let server = TestServer::start(3, &[]);
    std::thread::scope(|scope| {
        for connection in 0..4 {
            let addr = server.addr;
            scope.spawn(move || {
                let mut model = Model::default();
                let mut messages = Vec::new();
                let mut expected = Vec::new();
                for i in 0..1_500usize {
                    let key = format!("conn{connection}:{}", i % 97);
                    let message = vec![get(&key), set(&key, pair(connection, i)), getv(&key)];
                    expected.push(encode_reply(&model.reply_to(&message)));
                    messages.push(message);
                }
                pipeline(addr, messages, expected);
            });
        }
    });
}
