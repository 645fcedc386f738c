//! Hostile input against the real `corekv-server` binary (BRIEF §3): malformed
//! messages, oversized frames, random bytes, deep nesting, half-sent frames,
//! slow readers, thousands of connections, and the connection and memory
//! limits. No input may crash the server, hang other connections or lose data;
//! every refusal is the exact `[[-9, CODE, message]]` the brief prescribes.
//!
//! Timeouts here are only upper bounds that turn a hang into a failure; nothing
//! asserts how fast anything happens.

mod common;

use common::wire::{read_frame, RawConnection};
use common::{frame, pack, test_seed, TestServer, REPLY_TIMEOUT};
use corekv::client::{decode_reply, Client, Element, Request};
use corekv::proto::detect::Protocol;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rmpv::Value;
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Helpers: messages and the replies they must get.
// ---------------------------------------------------------------------------

fn arr(items: Vec<Value>) -> Value {
    Value::Array(items)
}

fn s(text: &str) -> Value {
    Value::from(text)
}

/// `[[0, key]]`: one GET.
fn get_body(key: &str) -> Vec<u8> {
    pack(&arr(vec![arr(vec![0.into(), s(key)])]))
}

/// `[[1, key, value]]`: one SET.
fn set_body(key: &str, value: Value) -> Vec<u8> {
    pack(&arr(vec![arr(vec![1.into(), s(key), value])]))
}

/// The code of a reply that must be exactly `[[-9, CODE, message]]`.
fn refusal_code(body: &[u8]) -> String {
    let elements =
        decode_reply(body).unwrap_or_else(|e| panic!("reply {body:02x?} does not decode: {e}"));
    match elements.as_slice() {
        [Element::Error { code, message }] => {
            assert!(!message.is_empty(), "error {code} has an empty message");
            code.clone()
        }
        other => panic!("expected one error element, got {other:?}"),
    }
}

/// The reply body of a GET that found `value` (byte-exact).
fn found_body(value: &Value) -> Vec<u8> {
    let mut body = vec![0x91, 0x92, 0xff];
    body.extend_from_slice(&pack(value));
    body
}

const NOT_FOUND_BODY: [u8; 3] = [0x91, 0x91, 0xfe];
const EMPTY_REPLY_BODY: [u8; 1] = [0x90];

/// Asserts the server still answers: `key` holds `value`, on a new connection.
fn assert_serves(server: &TestServer, key: &str, value: &Value) {
    let mut raw = RawConnection::connect(server.addr);
    assert_eq!(raw.call(&get_body(key)), found_body(value));
}

// ---------------------------------------------------------------------------
// Malformed messages
// ---------------------------------------------------------------------------

/// A request that would clobber the anchor key if a refused message ran anyway.
fn clobber() -> Value {
    arr(vec![1.into(), s("anchor"), s("clobbered")])
}

/// `depth` ATOMICs, each the only request of the one around it, around a clobber.
fn nested_atomic(depth: usize) -> Value {
    (0..depth).fold(clobber(), |inner, _| arr(vec![3.into(), arr(vec![inner])]))
}

/// `[clobber, bad]`: the bad request after a good one, so the test also checks
/// that nothing of a refused message runs.
fn after_clobber(bad: Value) -> Vec<u8> {
    pack(&arr(vec![clobber(), bad]))
}

/// Every malformed message kind, with the code it must be refused with.
fn malformed_cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut trailing = pack(&arr(vec![clobber()]));
    trailing.push(0xc0);
    let deep_message = {
        let mut bytes = vec![0x91u8; 100_000];
        bytes.push(0x01);
        bytes
    };
    let deep_key = {
        let mut bytes = vec![0x91, 0x92, 0x00];
        bytes.extend(std::iter::repeat_n(0x91u8, 10_000));
        bytes.push(0xa1);
        bytes.push(b'k');
        bytes
    };
    let long_key = "k".repeat(65);
    vec![
        // BADFRAME: the body is not exactly one msgpack value.
        ("empty body", vec![], "BADFRAME"),
        ("reserved marker 0xc1", vec![0xc1], "BADFRAME"),
        ("0xc1 inside an array", vec![0x91, 0xc1], "BADFRAME"),
        ("truncated array", vec![0x92, 0x01], "BADFRAME"),
        (
            "truncated str",
            vec![0x91, 0x92, 0x00, 0xa5, b'a', b'n'],
            "BADFRAME",
        ),
        (
            "array claiming 4 billion elements",
            vec![0xdd, 0xff, 0xff, 0xff, 0xff, 0x01],
            "BADFRAME",
        ),
        (
            "bin claiming 4 GiB",
            vec![0x91, 0x92, 0x00, 0xc6, 0xff, 0xff, 0xff, 0xff],
            "BADFRAME",
        ),
        ("trailing bytes after the message", trailing, "BADFRAME"),
        ("two messages in one frame", vec![0x90, 0x90], "BADFRAME"),
        (
            "deep nesting without a leaf",
            vec![0x91u8; 50_000],
            "BADFRAME",
        ),
        // BADREQ: valid msgpack, not an array of valid requests.
        ("integer message", pack(&5.into()), "BADREQ"),
        ("string message", pack(&s("GET anchor")), "BADREQ"),
        ("nil message", vec![0xc0], "BADREQ"),
        (
            "map message",
            pack(&Value::Map(vec![(s("op"), 0.into())])),
            "BADREQ",
        ),
        (
            "request that is not an array",
            after_clobber(7.into()),
            "BADREQ",
        ),
        ("empty request", after_clobber(arr(vec![])), "BADREQ"),
        (
            "unknown opcode 9",
            after_clobber(arr(vec![9.into(), s("k")])),
            "BADREQ",
        ),
        (
            "unknown opcode 255",
            after_clobber(arr(vec![255.into(), s("k")])),
            "BADREQ",
        ),
        (
            "negative opcode",
            after_clobber(arr(vec![(-1).into(), s("k")])),
            "BADREQ",
        ),
        (
            "string opcode",
            after_clobber(arr(vec![s("0"), s("k")])),
            "BADREQ",
        ),
        (
            "float opcode",
            after_clobber(arr(vec![Value::F64(0.0), s("k")])),
            "BADREQ",
        ),
        (
            "GET without key",
            after_clobber(arr(vec![0.into()])),
            "BADREQ",
        ),
        (
            "GET with an extra element",
            after_clobber(arr(vec![0.into(), s("k"), s("x")])),
            "BADREQ",
        ),
        (
            "SET without value",
            after_clobber(arr(vec![1.into(), s("k")])),
            "BADREQ",
        ),
        (
            "DEL with a value",
            after_clobber(arr(vec![2.into(), s("k"), s("v")])),
            "BADREQ",
        ),
        (
            "PUTV without version",
            after_clobber(arr(vec![5.into(), s("k"), s("v")])),
            "BADREQ",
        ),
        (
            "STATS with an argument",
            after_clobber(arr(vec![7.into(), s("k")])),
            "BADREQ",
        ),
        (
            "integer key",
            after_clobber(arr(vec![0.into(), 5.into()])),
            "BADREQ",
        ),
        (
            "nil key",
            after_clobber(arr(vec![2.into(), Value::Nil])),
            "BADREQ",
        ),
        (
            "array key",
            after_clobber(arr(vec![1.into(), arr(vec![s("k")]), s("v")])),
            "BADREQ",
        ),
        ("deeply nested key", deep_key, "BADREQ"),
        (
            "negative version",
            after_clobber(arr(vec![5.into(), s("k"), s("v"), (-1).into()])),
            "BADREQ",
        ),
        (
            "string version",
            after_clobber(arr(vec![5.into(), s("k"), s("v"), s("1")])),
            "BADREQ",
        ),
        (
            "ATOMIC whose body is not a list",
            after_clobber(arr(vec![3.into(), s("not a list")])),
            "BADREQ",
        ),
        (
            "STATS inside ATOMIC",
            after_clobber(arr(vec![
                3.into(),
                arr(vec![clobber(), arr(vec![7.into()])]),
            ])),
            "BADREQ",
        ),
        (
            "a bad request inside ATOMIC",
            after_clobber(arr(vec![
                3.into(),
                arr(vec![clobber(), arr(vec![0.into(), 5.into()])]),
            ])),
            "BADREQ",
        ),
        (
            "ATOMIC nested 33 deep",
            after_clobber(nested_atomic(33)),
            "BADREQ",
        ),
        ("message nested 100,000 deep", deep_message, "BADREQ"),
        // TOOBIG: a key over --max-key-bytes (64 in this test).
        (
            "key one byte over the limit",
            after_clobber(arr(vec![0.into(), s(&long_key)])),
            "TOOBIG",
        ),
        (
            "bin key over the limit in a SET",
            after_clobber(arr(vec![1.into(), Value::Binary(vec![b'k'; 1000]), s("v")])),
            "TOOBIG",
        ),
    ]
}

#[test]
fn each_malformed_message_gets_its_code_runs_nothing_and_leaves_the_connection_usable() {
    let server = TestServer::start(2, &["--max-key-bytes", "64"]);
    let anchor = s("value");
    let mut raw = RawConnection::connect(server.addr);
    assert_eq!(
        raw.call(&set_body("anchor", anchor.clone())),
        EMPTY_REPLY_BODY
    );
    for (name, body, expected) in malformed_cases() {
        let reply = raw.call(&body);
        assert_eq!(refusal_code(&reply), expected, "{name}");
        assert_eq!(
            raw.call(&get_body("anchor")),
            found_body(&anchor),
            "after {name}: the connection must answer a GET and nothing may have run"
        );
    }
    // A key exactly at the limit is accepted.
    let at_limit = "k".repeat(64);
    assert_eq!(raw.call(&set_body(&at_limit, 1.into())), EMPTY_REPLY_BODY);
    assert_eq!(raw.call(&get_body(&at_limit)), found_body(&1.into()));
}

#[test]
fn malformed_messages_pipelined_between_valid_ones_are_answered_in_order() {
    let server = TestServer::start(2, &["--max-key-bytes", "64"]);
    let mut raw = RawConnection::connect(server.addr);
    let mut burst = Vec::new();
    let mut expected = Vec::new();
    for (i, (name, body, code)) in malformed_cases().into_iter().enumerate() {
        let key = format!("pipelined-{i}");
        burst.extend(frame(&set_body(&key, (i as u64).into())));
        expected.push((format!("SET before {name}"), None));
        burst.extend(frame(&body));
        expected.push((name.to_string(), Some(code)));
        burst.extend(frame(&get_body(&key)));
        expected.push((format!("GET after {name}"), None));
    }
    raw.send(&burst);
    for (i, (what, code)) in expected.iter().enumerate() {
        let reply = raw.reply();
        match (code, i % 3) {
            (Some(code), _) => assert_eq!(refusal_code(&reply), *code, "{what}"),
            (None, 0) => assert_eq!(reply, EMPTY_REPLY_BODY, "{what}"),
            (None, _) => assert_eq!(reply, found_body(&((i / 3) as u64).into()), "{what}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Oversized frames
// ---------------------------------------------------------------------------

#[test]
fn a_frame_over_the_limit_is_answered_toobig_after_earlier_replies_then_closed() {
    let server = TestServer::start(2, &["--max-frame-bytes", "1KiB", "--max-key-bytes", "64"]);
    let mut before = server.client();
    for i in 0..20u64 {
        before
            .set(format!("kept-{i}").as_bytes(), i.into())
            .expect("set");
    }
    for declared in [1025u64, 1 << 40, u64::MAX] {
        let mut raw = RawConnection::connect(server.addr);
        let mut burst = frame(&set_body("burst", s("landed")));
        burst.extend(frame(&get_body("burst")));
        burst.extend(declared.to_be_bytes());
        burst.extend([0x91; 100]); // some of the oversized body; never read
        raw.send(&burst);
        assert_eq!(raw.reply(), EMPTY_REPLY_BODY, "SET before the big frame");
        assert_eq!(raw.reply(), found_body(&s("landed")), "GET before it");
        let reply = raw.reply();
        assert_eq!(refusal_code(&reply), "TOOBIG", "declared {declared}");
        raw.expect_closed();
    }
    // A frame exactly at the limit is served.
    let mut raw = RawConnection::connect(server.addr);
    let without_filler = pack(&arr(vec![arr(vec![1.into(), s("edge"), Value::Nil])]));
    let filler = 1024 - without_filler.len() - 2; // a bin16 header is 3 bytes, nil was 1
    let exact = set_body("edge", Value::Binary(vec![7; filler]));
    assert_eq!(exact.len(), 1024);
    assert_eq!(raw.call(&exact), EMPTY_REPLY_BODY);

    // Connections opened before and after still work; data is intact.
    for i in 0..20u64 {
        let key = format!("kept-{i}");
        assert_eq!(before.get(key.as_bytes()).expect("get"), Some(i.into()));
    }
    let mut after = server.client();
    assert_eq!(after.get(b"burst").expect("get"), Some(s("landed")));
    assert_eq!(after.get(b"kept-7").expect("get"), Some(7.into()));
}

// ---------------------------------------------------------------------------
// Random bytes
// ---------------------------------------------------------------------------

/// Valid messages to mutate: every opcode, str and bin keys, nested values.
fn seed_messages(rng: &mut StdRng) -> Vec<Vec<u8>> {
    let key = |rng: &mut StdRng| s(&format!("fz-{}", rng.gen_range(0..50)));
    let mut out = Vec::new();
    for _ in 0..20 {
        let k = key(rng);
        let value = arr(vec![
            rng.gen::<u32>().into(),
            Value::Map(vec![(s("a"), Value::Binary(vec![1, 2, 3]))]),
            Value::F64(1.5),
        ]);
        out.push(pack(&arr(vec![
            arr(vec![1.into(), k.clone(), value.clone()]),
            arr(vec![0.into(), k.clone()]),
            arr(vec![4.into(), k.clone()]),
            arr(vec![
                5.into(),
                k.clone(),
                value,
                rng.gen_range(0..3u64).into(),
            ]),
            arr(vec![
                6.into(),
                Value::Binary(format!("fz-{}", rng.gen_range(0..50)).into()),
            ]),
            arr(vec![2.into(), key(rng)]),
            arr(vec![7.into()]),
        ])));
    }
    out
}

fn mutate(rng: &mut StdRng, message: &[u8]) -> Vec<u8> {
    let mut bytes = message.to_vec();
    for _ in 0..rng.gen_range(1..4) {
        let at = rng.gen_range(0..bytes.len().max(1));
        match rng.gen_range(0..4) {
            0 if !bytes.is_empty() => bytes[at] = rng.gen(),
            1 => bytes.insert(at.min(bytes.len()), rng.gen()),
            2 if !bytes.is_empty() => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

fn random_bytes(rng: &mut StdRng, max_len: usize) -> Vec<u8> {
    let len = rng.gen_range(0..=max_len);
    (0..len).map(|_| rng.gen()).collect()
}

/// Writes `bytes` in random pieces, so frames arrive split at arbitrary points.
fn send_in_pieces(rng: &mut StdRng, stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = rng.gen_range(1..=rest.len());
        stream.write_all(&rest[..n])?;
        stream.flush()?;
        rest = &rest[n..];
    }
    Ok(())
}

#[test]
fn random_bytes_framed_and_unframed_never_crash_the_server() {
    let seed = test_seed("random_bytes_framed_and_unframed_never_crash_the_server");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut server = TestServer::start(2, &[]);
    let anchor = s("still here");
    let mut watcher = server.client();
    watcher.set(b"anchor", anchor.clone()).expect("set anchor");
    let seeds = seed_messages(&mut rng);

    // Framed: each body gets exactly one reply, and it decodes.
    let mut framed = RawConnection::connect(server.addr);
    for blob in 0..400 {
        let body = match blob % 2 {
            0 => random_bytes(&mut rng, 300),
            _ => {
                let original = rng.gen_range(0..seeds.len());
                mutate(&mut rng, &seeds[original])
            }
        };
        send_in_pieces(&mut rng, &mut framed.stream, &frame(&body)).expect("send");
        let reply = framed.reply();
        if let Err(e) = decode_reply(&reply) {
            panic!("seed {seed}, blob {blob} {body:02x?}: reply {reply:02x?} does not decode: {e}");
        }
    }

    // Unframed: raw bytes on a fresh connection, then end of input. Whatever the
    // server sends back must be whole frames that decode, then a close.
    for blob in 0..300 {
        let mut bytes = random_bytes(&mut rng, 600);
        // A first byte `*` or a letter chooses RESP or the text protocol, whose
        // hostile input tests/resp_wire.rs covers; these blobs stay msgpack.
        if let Some(first) = bytes.first_mut() {
            if Protocol::of_first_byte(*first) != Protocol::Msgpack {
                *first = 0;
            }
        }
        if blob % 3 == 0 && bytes.len() > 8 {
            // A plausible small length prefix, so bodies are actually parsed.
            let declared = rng.gen_range(0..bytes.len() as u64);
            bytes[..8].copy_from_slice(&declared.to_be_bytes());
        }
        let mut raw = RawConnection::connect(server.addr);
        // The server may close early (an oversized prefix), so writes may fail.
        if send_in_pieces(&mut rng, &mut raw.stream, &bytes).is_ok() {
            let _ = raw.stream.shutdown(Shutdown::Write);
        }
        for _ in 0..bytes.len() + 1 {
            match read_frame(&mut raw.stream) {
                Ok(Some(reply)) => {
                    if let Err(e) = decode_reply(&reply) {
                        panic!("seed {seed}, unframed blob {blob}: reply {reply:02x?}: {e}");
                    }
                }
                Ok(None) => break,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("seed {seed}, unframed blob {blob} {bytes:02x?}: {e}"),
            }
        }
    }

    assert!(server.is_running(), "seed {seed}: the server died");
    assert_eq!(
        watcher.get(b"anchor").expect("old connection"),
        Some(anchor.clone())
    );
    assert_serves(&server, "anchor", &anchor);
    server.client().stats().expect("stats after the storm");
}

// ---------------------------------------------------------------------------
// Deep nesting
// ---------------------------------------------------------------------------

/// `depth` levels of one-element containers around the integer 1.
fn nested(depth: usize, container: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(depth * container.len() + 1);
    for _ in 0..depth {
        bytes.extend_from_slice(container);
    }
    bytes.push(0x01);
    bytes
}

#[test]
fn a_deeply_nested_value_is_stored_and_returned_byte_exact_or_refused_cleanly() {
    let server = TestServer::start(2, &[]);
    let mut raw = RawConnection::connect(server.addr);
    let values = [
        ("arrays", nested(100_000, &[0x91])),
        ("maps", nested(100_000, &[0x81, 0xc0])),
        ("arrays, a million deep", nested(1_000_000, &[0x91])),
    ];
    // Several keys, so that some SETs are forwarded to the other shard.
    for (i, (what, value)) in values.iter().enumerate() {
        for k in 0..4 {
            let key = format!("deep-{i}-{k}");
            let mut set = vec![0x91, 0x93, 0x01];
            set.extend(pack(&s(&key)));
            set.extend(value);
            let reply = raw.call(&set);
            let get = raw.call(&get_body(&key));
            if reply == EMPTY_REPLY_BODY {
                eprintln!("{what}: stored under {key}");
                let mut expected = vec![0x91, 0x92, 0xff];
                expected.extend(value);
                assert!(
                    get == expected,
                    "{what}: GET returned {} bytes that differ from the {} stored",
                    get.len(),
                    expected.len()
                );
            } else {
                let code = refusal_code(&reply);
                eprintln!("{what}: refused with {code}");
                assert!(
                    ["BADREQ", "TOOBIG"].contains(&code.as_str()),
                    "{what}: {code}"
                );
                assert_eq!(get, NOT_FOUND_BODY, "{what}: refused, so not stored");
            }
        }
    }
    assert_eq!(raw.call(&set_body("after", 1.into())), EMPTY_REPLY_BODY);
    assert_serves(&server, "after", &1.into());
}

// ---------------------------------------------------------------------------
// Stalls: half-sent frames and slow readers
// ---------------------------------------------------------------------------

/// One round trip of `rounds` SET+GET messages on a new client.
fn round_trips(server: &TestServer, prefix: &str, rounds: u64) {
    let mut client = server.client();
    for i in 0..rounds {
        let key = format!("{prefix}-{i}");
        client.set(key.as_bytes(), i.into()).expect("set");
        assert_eq!(client.get(key.as_bytes()).expect("get"), Some(i.into()));
    }
}

#[test]
fn a_half_sent_frame_does_not_stall_other_connections() {
    for nr_shards in [1, 2] {
        let server = TestServer::start(nr_shards, &[]);
        let full = frame(&set_body("half", s("completed later")));
        // One connection stops inside the body, one inside the length prefix.
        let mut in_body = RawConnection::connect(server.addr);
        in_body.send(&full[..full.len() - 3]);
        let mut in_prefix = RawConnection::connect(server.addr);
        in_prefix.send(&[0, 0, 0]);
        // One announces a large frame and sends only its first bytes.
        let mut big = RawConnection::connect(server.addr);
        big.send(&(32u64 << 20).to_be_bytes());
        big.send(&[0x91; 1000]);

        round_trips(&server, "while-stalled", 100);

        // The half-sent frame is still served once it is completed.
        in_body.send(&full[full.len() - 3..]);
        assert_eq!(in_body.reply(), EMPTY_REPLY_BODY);
        assert_eq!(
            in_body.call(&get_body("half")),
            found_body(&s("completed later"))
        );
        in_prefix.send(&[0, 0, 0, 0, 1, 0x90]);
        assert_eq!(in_prefix.reply(), EMPTY_REPLY_BODY);
    }
}

#[test]
fn a_client_that_never_reads_its_replies_does_not_stall_others() {
    let server = TestServer::start(1, &[]);
    let big = Value::Binary(vec![0xab; 16 * 1024]);
    server.client().set(b"big", big.clone()).expect("set big");
    // 2,000 GETs of 16 KiB are 32 MiB of replies, far more than the socket
    // buffers hold; this client never reads them, so the server's writes to it
    // block while the other connections on the same shard are served.
    let mut slow = RawConnection::connect(server.addr);
    let gets: Vec<u8> = (0..2000).flat_map(|_| frame(&get_body("big"))).collect();
    slow.send(&gets);
    round_trips(&server, "beside-a-slow-reader", 100);
    let mut client = server.client();
    assert_eq!(client.get(b"big").expect("get"), Some(big.clone()));
    // The slow client finally reads: every reply is there, in order.
    for i in 0..2000 {
        assert_eq!(slow.reply(), found_body(&big), "reply {i}");
    }
    drop(slow);
    round_trips(&server, "after-the-slow-reader", 10);
}

/// The server's peak resident memory so far (VmHWM), in bytes.
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmHWM value");
    kib * 1024
}

#[test]
fn a_client_that_requests_far_more_than_it_reads_does_not_grow_server_memory_unbounded() {
    // BRIEF §2: "a slow peer applies back-pressure, it never grows memory
    // unbounded". 300 GETs of a 1 MiB value are 4.5 KiB of requests and 300 MiB
    // of replies; a client that reads one reply and then stalls may cost the
    // server a bounded buffer, not the whole 300 MiB (with the 64 MiB frame
    // limit, a 64 KiB read of such GETs would otherwise be ~230 GiB).
    const NR_GETS: usize = 300;
    const ALLOWED_GROWTH_BYTES: u64 = 64 << 20;
    let server = TestServer::start(1, &[]);
    let big = Value::Binary(vec![0x5a; 1 << 20]);
    server.client().set(b"big", big.clone()).expect("set big");
    let before = peak_rss_bytes(server.pid());
    let mut slow = RawConnection::connect(server.addr);
    let gets: Vec<u8> = (0..NR_GETS).flat_map(|_| frame(&get_body("big"))).collect();
    slow.send(&gets);
    // The first reply proves the server has taken the requests in hand.
    assert_eq!(slow.reply(), found_body(&big));
    let growth = peak_rss_bytes(server.pid()).saturating_sub(before);
    // Whatever the memory did, every reply must still arrive, in order.
    for i in 1..NR_GETS {
        assert_eq!(slow.reply(), found_body(&big), "reply {i}");
    }
    assert!(
        growth <= ALLOWED_GROWTH_BYTES,
        "the server's peak memory grew by {} MiB for a client holding {NR_GETS} MiB of \
         unread replies (allowed {} MiB): replies are buffered without bound",
        growth >> 20,
        ALLOWED_GROWTH_BYTES >> 20
    );
}

// ---------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------

#[test]
fn a_thousand_connections_open_at_once_are_all_served() {
    const NR_CONNECTIONS: usize = 1000;
    let server = TestServer::start(2, &[]);
    let mut clients: Vec<Client> = (0..NR_CONNECTIONS).map(|_| server.client()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        let key = format!("conn-{i}").into_bytes();
        client
            .send_message(&[
                Request::Set(key.clone(), (i as u64).into()),
                Request::Get(key),
            ])
            .expect("queue");
        client.flush().expect("send");
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let elements = decode_reply(&client.recv_reply().expect("reply")).expect("decode");
        assert_eq!(
            elements,
            [Element::Found((i as u64).into())],
            "connection {i}"
        );
    }
    let stats = clients[0].stats().expect("stats");
    assert_eq!(stats["connections"], NR_CONNECTIONS as u64, "{stats:?}");
    // Every connection sees every other's data.
    for (i, client) in clients.iter_mut().enumerate() {
        let other = format!("conn-{}", (i * 7 + 1) % NR_CONNECTIONS);
        let expected = ((i * 7 + 1) % NR_CONNECTIONS) as u64;
        assert_eq!(
            client.get(other.as_bytes()).expect("get"),
            Some(expected.into())
        );
    }
}

#[test]
fn a_connection_over_the_limit_gets_oom_and_is_closed_while_earlier_ones_work() {
    let server = TestServer::start(2, &["--max-connections", "5"]);
    let mut admitted: Vec<Client> = (0..5).map(|_| server.client()).collect();
    for (i, client) in admitted.iter_mut().enumerate() {
        client
            .set(format!("limit-{i}").as_bytes(), (i as u64).into())
            .expect("set");
    }
    for _ in 0..3 {
        let mut sixth = RawConnection::connect(server.addr);
        let reply = sixth.reply();
        let elements = decode_reply(&reply).expect("decode");
        match elements.as_slice() {
            [Element::Error { code, message }] => {
                assert_eq!(code, "OOM");
                assert!(message.contains("too many connections"), "{message}");
            }
            other => panic!("expected one OOM element, got {other:?}"),
        }
        sixth.expect_closed();
    }
    for (i, client) in admitted.iter_mut().enumerate() {
        let key = format!("limit-{}", (i + 1) % 5);
        assert_eq!(
            client.get(key.as_bytes()).expect("get"),
            Some((((i + 1) % 5) as u64).into())
        );
    }
    // Once one closes, a new connection is admitted (the release is noticed
    // asynchronously, so retry a bounded number of times).
    drop(admitted.pop());
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let mut raw = RawConnection::connect(server.addr);
        raw.send(&frame(&get_body("limit-0")));
        let reply = raw.reply();
        if reply == found_body(&0.into()) {
            break;
        }
        assert_eq!(refusal_code(&reply), "OOM");
        assert!(Instant::now() < deadline, "a freed slot was never reused");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Memory limit
// ---------------------------------------------------------------------------

fn oom_code(element: &Element) -> Option<&str> {
    match element {
        Element::Error { code, .. } => Some(code),
        _ => None,
    }
}

#[test]
fn writes_over_the_memory_limit_get_oom_while_reads_and_deletes_keep_working() {
    let server = TestServer::start(1, &["--max-memory-bytes", "2MiB"]);
    let mut client = server.client();
    let value = |i: usize| Value::Binary(vec![(i % 251) as u8; 16 * 1024]);
    let key = |i: usize| format!("mem-{i}").into_bytes();

    // Fill, one SET per message, until a SET is refused.
    let mut first_refused = None;
    for i in 0..1000 {
        let elements = client.call(&[Request::Set(key(i), value(i))]).expect("set");
        match elements.as_slice() {
            [] => {}
            [element] => {
                assert_eq!(oom_code(element), Some("OOM"), "{element:?}");
                first_refused = Some(i);
                break;
            }
            other => panic!("unexpected SET reply {other:?}"),
        }
    }
    let refused = first_refused.expect("16 MiB of writes never hit a 2 MiB limit");
    assert!(refused > 10, "only {refused} values fit in 2 MiB");

    // More growth is refused; in a mixed message the error takes the SET's place.
    let elements = client
        .call(&[
            Request::Set(key(refused + 1), value(0)),
            Request::Get(key(0)),
            Request::PutV(key(refused + 2), value(0), 0),
            Request::Get(key(refused)),
        ])
        .expect("mixed");
    assert_eq!(elements.len(), 4, "{elements:?}");
    assert_eq!(oom_code(&elements[0]), Some("OOM"));
    assert_eq!(elements[1], Element::Found(value(0)));
    assert_eq!(oom_code(&elements[2]), Some("OOM"));
    assert_eq!(elements[3], Element::NotFound);

    // Reads keep working, on this and on a new connection.
    for i in [0, refused / 2, refused - 1] {
        assert_eq!(client.get(&key(i)).expect("get"), Some(value(i)));
    }
    let stats = server.client().stats().expect("stats");
    assert_eq!(stats["keys"], refused as u64);
    assert!(stats["oom_rejections"] >= 3, "{stats:?}");

    // Deleting makes room again.
    assert_eq!(
        client
            .call(&[Request::Del(key(0)), Request::Del(key(1))])
            .expect("del"),
        []
    );
    assert!(client.rm(&key(2)).expect("rm"));
    assert_eq!(
        client
            .call(&[Request::Set(key(refused), value(refused))])
            .expect("set"),
        []
    );
    assert_eq!(
        client.get(&key(refused)).expect("get"),
        Some(value(refused))
    );
    assert_eq!(client.get(&key(0)).expect("get"), None);
    assert_eq!(
        client.get(&key(refused - 1)).expect("get"),
        Some(value(refused - 1))
    );
}
