//! Pipelining (BRIEF §3): a client may write many request messages before it
//! reads any reply; the server answers each with exactly one reply, in order.
//!
//! Each test builds its messages and the exact reply frame each must get (from a
//! small model of the keys it touches), writes all messages from a writer thread
//! while the test thread reads, and compares every reply byte for byte. The
//! writer is a separate thread so that neither side can stall on a full socket
//! buffer: the server stops reading while its replies are not being read.

mod common;

use common::{frame, pack, TestServer, REPLY_TIMEOUT};
use corekv::ids::Router;
use rmpv::Value;
use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream};

/// `a![x, y, ...]`: a msgpack array of anything `Value: From` accepts.
macro_rules! a {
    ($($item:expr),* $(,)?) => {
        Value::Array(vec![$(Value::from($item)),*])
    };
}

/// Keys `{prefix}{i}` chosen so that each of the `nr_shards` shards owns
/// `per_shard` of them, listed shard by shard.
fn keys_on_every_shard(nr_shards: usize, per_shard: usize, prefix: &str) -> Vec<String> {
    let router = Router::new(nr_shards);
    let mut by_shard: Vec<Vec<String>> = vec![Vec::new(); nr_shards];
    for i in 0..100_000 {
        let key = format!("{prefix}{i}");
        let owned = &mut by_shard[router.route(key.as_bytes()).0];
        if owned.len() < per_shard {
            owned.push(key);
        }
        if by_shard.iter().all(|keys| keys.len() == per_shard) {
            break;
        }
    }
    assert!(by_shard.iter().all(|keys| keys.len() == per_shard));
    by_shard.concat()
}

/// What the server should hold for the keys a test touches: value and version.
#[derive(Default)]
struct Model {
    entries: HashMap<String, (Value, u64)>,
}

impl Model {
    /// Applies one request and returns its result element, if it has one.
    fn apply(&mut self, request: &Value) -> Option<Value> {
        let items = request.as_array().expect("request array");
        let opcode = items[0].as_u64().expect("opcode");
        let key = || items[1].as_str().expect("str key").to_owned();
        match opcode {
            0 => Some(match self.entries.get(&key()) {
                Some((value, _)) => a![-1, value.clone()],
                None => a![-2],
            }),
            1 => {
                let version = self.entries.get(&key()).map_or(0, |e| e.1) + 1;
                self.entries.insert(key(), (items[2].clone(), version));
                None
            }
            2 => {
                self.entries.remove(&key());
                None
            }
            4 => Some(match self.entries.get(&key()) {
                Some((value, version)) => a![-3, value.clone(), *version],
                None => a![-2],
            }),
            _ => panic!("the model does not know opcode {opcode}"),
        }
    }

    /// The reply frame the server must send for `message`.
    fn reply_to(&mut self, message: &Value) -> Vec<u8> {
        let requests = message.as_array().expect("message array");
        let elements: Vec<Value> = requests.iter().filter_map(|r| self.apply(r)).collect();
        frame(&pack(&Value::Array(elements)))
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    // A guard against a hung test, not a timing assertion.
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .expect("timeout");
    stream
}

fn read_frame(reader: &mut impl Read) -> Vec<u8> {
    let mut prefix = [0u8; 8];
    reader.read_exact(&mut prefix).expect("read reply length");
    let len = u64::from_be_bytes(prefix);
    assert!(len < 1 << 30, "implausible reply length {len}");
    let mut out = prefix.to_vec();
    out.resize(8 + len as usize, 0);
    reader.read_exact(&mut out[8..]).expect("read reply body");
    out
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
fn pipeline(addr: SocketAddr, messages: Vec<Value>, expected: Vec<Vec<u8>>) {
    assert_eq!(messages.len(), expected.len());
    let stream = connect(addr);
    let mut writer = BufWriter::new(stream.try_clone().expect("clone stream"));
    let nr_messages = messages.len();
    let writer_thread = std::thread::spawn(move || {
        for message in &messages {
            writer.write_all(&frame(&pack(message))).expect("write");
        }
        writer.flush().expect("flush");
        writer
    });
    let mut reader = BufReader::new(stream);
    for (i, want) in expected.iter().enumerate() {
        let got = read_frame(&mut reader);
        assert!(
            &got == want,
            "reply {i} of {nr_messages} differs\n  got:      {}\n  expected: {}",
            describe(&got),
            describe(want)
        );
    }
    // No extra reply was sent: the next frame answers the next message.
    let mut writer = writer_thread.join().expect("writer thread");
    let sentinel = a![a![0, "pipeline:sentinel"]];
    writer.write_all(&frame(&pack(&sentinel))).expect("write");
    writer.flush().expect("flush");
    let got = read_frame(&mut reader);
    assert_eq!(
        describe(&got),
        describe(&frame(&pack(&a![a![-2]]))),
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
            3 => a![],
            7 => a![a![1, key.as_str(), i], a![1, "pipe:counter", i]],
            _ => a![
                a![1, key.as_str(), i],
                a![0, key.as_str()],
                a![0, previous.as_str()],
                a![1, "pipe:counter", i],
                a![4, "pipe:counter"],
            ],
        };
        expected.push(model.reply_to(&message));
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
    let keys = keys_on_every_shard(3, 4, "order:");
    let mut model = Model::default();
    let mut messages = Vec::new();
    let mut expected = Vec::new();
    for round in 0..300usize {
        // Rotate the key order every round so each message interleaves shards
        // differently.
        let mut order = keys.clone();
        order.rotate_left(round % keys.len());
        let first: Vec<Value> = order
            .iter()
            .map(|k| a![1, k.as_str(), a![round, 1]])
            .collect();
        let mut second = Vec::new();
        for (i, k) in order.iter().rev().enumerate() {
            if (round + i) % 7 == 0 {
                second.push(a![2, k.as_str()]); // the version starts over at 1
            }
            second.push(a![1, k.as_str(), a![round, 2]]);
        }
        let mut reads = Vec::new();
        for k in &order {
            reads.push(a![0, k.as_str()]);
            reads.push(a![4, k.as_str()]);
        }
        for message in [
            a![],
            Value::Array(first),
            Value::Array(second),
            Value::Array(reads),
        ] {
            expected.push(model.reply_to(&message));
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
        let message = a![a![1, key.as_str(), value], a![0, key.as_str()]];
        expected.push(model.reply_to(&message));
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
                    let message = a![
                        a![0, key.as_str()],
                        a![1, key.as_str(), a![connection, i]],
                        a![4, key.as_str()],
                    ];
                    expected.push(model.reply_to(&message));
                    messages.push(message);
                }
                pipeline(addr, messages, expected);
            });
        }
    });
}
