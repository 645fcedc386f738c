//! INCRBY (opcode 11), APPEND (opcode 12) and INCRBYFLOAT (opcode 13): the table computes the new value
//! from the old one, alone, inside ATOMIC on one shard and across shards, and
//! what they wrote survives kill -9 (their log records hold the computed
//! values).

mod common;

use common::keys::key_on_shard;
use common::{call, TestServer};
use rmpv::Value;

fn bin(bytes: &[u8]) -> Value {
    Value::Binary(bytes.to_vec())
}

fn incr_by(key: &[u8], delta: i64) -> Value {
    Value::Array(vec![11.into(), bin(key), delta.into()])
}

fn append(key: &[u8], suffix: &[u8]) -> Value {
    Value::Array(vec![12.into(), bin(key), bin(suffix)])
}

fn incr_by_float(key: &[u8], delta: f64) -> Value {
    Value::Array(vec![13.into(), bin(key), Value::F64(delta)])
}

fn atomic(requests: Vec<Value>) -> Value {
    Value::Array(vec![3.into(), Value::Array(requests)])
}

fn error_code(element: &Value) -> &str {
    match element.as_array().map(Vec::as_slice) {
        Some([tag, code, _]) if tag.as_i64() == Some(-9) => code.as_str().expect("code"),
        _ => panic!("not an error: {element}"),
    }
}

#[test]
fn incrby_and_append_compute_the_new_value_in_the_table() {
    let server = TestServer::start(2, &[]);
    let mut client = server.client();
    client.set(b"text", Value::from("abc")).expect("set");
    client
        .set(b"list", Value::Array(vec![1.into()]))
        .expect("set");
    client.set(b"int", Value::from(40)).expect("set");
    let replies = call(
        &mut client,
        vec![
            incr_by(b"n", 5),
            incr_by(b"n", -10),
            incr_by(b"int", 2),
            append(b"s", b"xy"),
            append(b"s", b"z"),
            incr_by(b"text", 1),
            incr_by(b"list", 1),
            append(b"list", b"x"),
            incr_by(b"int", i64::MAX),
        ],
    );
    let values = &replies[..5];
    let want = |tag: i64, n: i64| Value::Array(vec![tag.into(), n.into()]);
    assert_eq!(
        values,
        [
            want(-8, 5),
            want(-8, -5),
            want(-8, 42),
            want(-4, 2),
            want(-4, 3)
        ]
    );
    let codes: Vec<&str> = replies[5..].iter().map(error_code).collect();
    assert_eq!(codes, ["NOTNUM", "WRONGTYPE", "WRONGTYPE", "NOTNUM"]);
    // Stored as bin of the text, so every protocol reads the same bytes.
    assert_eq!(client.get(b"n").expect("get"), Some(bin(b"-5")));
    assert_eq!(client.get(b"s").expect("get"), Some(bin(b"xyz")));
    assert_eq!(client.getv(b"int").expect("getv"), Some((bin(b"42"), 2)));
    // INCRBYFLOAT answers the new value as GET would.
    let found = |text: &[u8]| Value::Array(vec![(-1).into(), bin(text)]);
    let replies = call(
        &mut client,
        vec![
            incr_by_float(b"f", 10.5),
            incr_by_float(b"f", 0.1),
            incr_by_float(b"int", -0.5),
            incr_by_float(b"big", f64::MAX),
            incr_by_float(b"text", 1.0),
            incr_by_float(b"big", f64::MAX),
        ],
    );
    assert_eq!(
        replies[..3],
        [found(b"10.5"), found(b"10.6"), found(b"41.5")]
    );
    let codes: Vec<&str> = replies[4..].iter().map(error_code).collect();
    assert_eq!(codes, ["NOTNUM", "NOTNUM"]);
}

#[test]
fn incrby_in_atomic_batches_is_all_or_nothing_and_survives_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let flags = ["--engine", "log", "--fsync", "always"];
    let mut server = TestServer::start_in(&data_dir, 2, &flags).expect("start");
    let mut client = server.client();
    let (a, b) = (key_on_shard("acct", 0, 2), key_on_shard("acct", 1, 2));
    let (a2, text) = (key_on_shard("more", 0, 2), key_on_shard("text", 1, 2));
    client.set(&text, Value::from("x")).expect("set");
    // Across shards (two-phase commit) and on one shard (a BATCH record).
    let replies = call(
        &mut client,
        vec![
            atomic(vec![incr_by(&a, -30), incr_by(&b, 30), append(&text, b"y")]),
            atomic(vec![incr_by(&a2, 7), incr_by(&a2, 1), append(&a, b"0")]),
        ],
    );
    assert_eq!(replies.len(), 6, "{replies:?}");
    // A failing INCRBY aborts its batch: nothing of it stays.
    let replies = call(
        &mut client,
        vec![atomic(vec![incr_by(&b, 1), incr_by(&text, 1)])],
    );
    assert_eq!(error_code(&replies[0]), "NOTNUM");
    server.stop_with(libc::SIGKILL);
    let server = TestServer::start_in(&data_dir, 2, &flags).expect("restart");
    let mut client = server.client();
    assert_eq!(client.get(&a).expect("get"), Some(bin(b"-300")));
    assert_eq!(client.get(&b).expect("get"), Some(bin(b"30")));
    assert_eq!(client.get(&a2).expect("get"), Some(bin(b"8")));
    assert_eq!(client.get(&text).expect("get"), Some(bin(b"xy")));
}

/// As Redis's INCR and APPEND: the computed value keeps the key's deadline,
/// and an expired key counts as absent (it starts again from nothing).
#[test]
fn incrby_and_append_keep_a_deadline_and_treat_an_expired_key_as_absent() {
    let server = TestServer::start(2, &[]);
    let mut client = server.client();
    let set_ttl = |key: &[u8], value: &str, ttl_ms: u64| {
        Value::Array(vec![16.into(), bin(key), value.into(), ttl_ms.into()])
    };
    let ttl = |key: &[u8]| Value::Array(vec![18.into(), bin(key)]);
    let integer = |element: &Value| match element.as_array().map(Vec::as_slice) {
        Some([tag, n]) if tag.as_i64() == Some(-8) => n.as_i64().expect("an integer"),
        _ => panic!("not an integer element: {element}"),
    };
    let hour_ms = 3_600_000;
    call(
        &mut client,
        vec![
            set_ttl(b"counter", "5", hour_ms),
            set_ttl(b"text", "ab", hour_ms),
        ],
    );
    let replies = call(
        &mut client,
        vec![
            incr_by(b"counter", 2),
            append(b"text", b"c"),
            ttl(b"counter"),
            ttl(b"text"),
        ],
    );
    assert_eq!(integer(&replies[0]), 7);
    for remaining in [integer(&replies[2]), integer(&replies[3])] {
        assert!(
            (1..=hour_ms as i64).contains(&remaining),
            "the deadline was lost: {replies:?}"
        );
    }
    // A key that has expired is absent to INCRBY and APPEND.
    call(
        &mut client,
        vec![set_ttl(b"short", "41", 1), set_ttl(b"short-text", "old", 1)],
    );
    // Each key's deadline was set by its own shard, when it ran its part of
    // the message: wait for both (one may expire a moment after the other).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while call(&mut client, vec![ttl(b"short"), ttl(b"short-text")])
        .iter()
        .any(|reply| integer(reply) != -2)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the key never expired"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let replies = call(
        &mut client,
        vec![
            incr_by(b"short", 1),
            append(b"short-text", b"new"),
            ttl(b"short"),
        ],
    );
    assert_eq!(integer(&replies[0]), 1, "{replies:?}");
    assert_eq!(
        replies[1],
        Value::Array(vec![(-4).into(), 3.into()]),
        "{replies:?}"
    );
    assert_eq!(
        integer(&replies[2]),
        -1,
        "a new key has no deadline: {replies:?}"
    );
}
