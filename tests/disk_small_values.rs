//! The disk engine keeps a value shorter than 64 bytes (its stored bytes:
//! the msgpack encoding as written) in memory as well as in the log: a GET,
//! INCRBY or APPEND of it reads nothing from disk (STATS `disk_reads` does
//! not move), and after a restart it is read from disk at most once — never
//! after a replay of the log, which has its bytes, and once after a start
//! from a hint file, which has only where they are.

mod common;

use common::crash::{stop, temp_data_dir};
use common::{call, force_compaction, pack, start_on, stat, test_seed};
use corekv::client::Client;
use rand::{Rng, SeedableRng};
use rmpv::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The threshold: values shorter than this stay in memory.
const INLINE_BELOW_BYTES: usize = 64;

/// One shard (so every key is on it), the disk engine, no cache of hot
/// values (every read of an on-disk value is a disk read), compaction after
/// 64 KiB of log (`force_compaction`).
const FLAGS: [&str; 6] = [
    "--engine",
    "disk",
    "--disk-cache-bytes",
    "0",
    "--compact-min-bytes",
    "65536",
];
const NR_SHARDS: usize = 1;

/// Bytes of `value`'s msgpack encoding: what the server stores.
fn stored_len(value: &Value) -> usize {
    pack(value).len()
}

/// A msgpack bin whose encoding is `stored` bytes long (2 bytes of header
/// up to 255 bytes, 3 up to 64 KiB), its bytes drawn from `rng`.
fn bin_stored_as(rng: &mut rand::rngs::StdRng, stored: usize) -> Value {
    let header = if stored - 2 < 256 { 2 } else { 3 };
    let mut bytes = vec![0u8; stored - header];
    rng.fill(&mut bytes[..]);
    let value = Value::Binary(bytes);
    assert_eq!(stored_len(&value), stored);
    value
}

/// Values at the threshold's edges, by stored size: 1 (nil), 2 (an empty
/// bin), 3 (one byte), 63, 64 and 65 bytes, and some larger.
fn edge_values(rng: &mut rand::rngs::StdRng) -> Vec<Value> {
    let mut values = vec![Value::Nil, Value::Binary(Vec::new())];
    for stored in [3, 62, 63, 64, 65, 66, 100, 4000] {
        values.push(bin_stored_as(rng, stored));
    }
    values
}

/// GET of `key`, checked byte for byte; returns the disk reads it made.
fn disk_reads_of_get(client: &mut Client, key: &[u8], want: &Value, when: &str) -> u64 {
    let before = stat(client, "disk_reads");
    let found = client.get(key).expect("GET");
    assert_eq!(found.as_ref(), Some(want), "{when}: {}", show(key));
    stat(client, "disk_reads") - before
}

fn show(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

/// Asserts a GET of each key reads the disk exactly when its value is 64
/// bytes or longer.
fn assert_small_values_read_from_memory(
    client: &mut Client,
    written: &BTreeMap<Vec<u8>, Value>,
    when: &str,
) {
    for (key, value) in written {
        let reads = disk_reads_of_get(client, key, value, when);
        let len = stored_len(value);
        match len < INLINE_BELOW_BYTES {
            true => assert_eq!(reads, 0, "{when}: a {len}-byte value was read from disk"),
            false => assert!(
                reads >= 1,
                "{when}: a {len}-byte value was not read from disk"
            ),
        }
    }
}

fn incr_by(key: &[u8], delta: i64) -> Value {
    Value::Array(vec![11.into(), Value::Binary(key.to_vec()), delta.into()])
}

fn append(key: &[u8], suffix: &[u8]) -> Value {
    Value::Array(vec![
        12.into(),
        Value::Binary(key.to_vec()),
        Value::Binary(suffix.to_vec()),
    ])
}

fn set(key: &[u8], value: &Value) -> Value {
    Value::Array(vec![1.into(), Value::Binary(key.to_vec()), value.clone()])
}

fn atomic(requests: Vec<Value>) -> Value {
    Value::Array(vec![3.into(), Value::Array(requests)])
}

/// Writes each of `values` under its own key (with `prefix`), by SET;
/// returns what was written.
fn write_values(client: &mut Client, prefix: &str, values: &[Value]) -> BTreeMap<Vec<u8>, Value> {
    let mut written = BTreeMap::new();
    for (i, value) in values.iter().enumerate() {
        let key = format!("{prefix}:{i:02}:{}", stored_len(value)).into_bytes();
        client.set(&key, value.clone()).expect("SET");
        written.insert(key, value.clone());
    }
    written
}

#[test]
fn a_get_of_a_value_under_64_bytes_reads_no_disk_and_of_64_bytes_or_more_reads_it() {
    let seed = test_seed("disk small values");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let server = start_on(&data_dir, NR_SHARDS, &FLAGS);
    let mut client = server.client();
    let values = edge_values(&mut rng);
    let mut written = write_values(&mut client, "set", &values);
    // PUTV, an expiring SET and a TTL change write small values too.
    client
        .putv(b"putv", Value::from("v"), 0)
        .expect("PUTV")
        .expect("PUTV applied");
    written.insert(b"putv".to_vec(), Value::from("v"));
    client
        .set_with_ttl(b"ttl", Value::from("session"), 3_600_000)
        .expect("SET with a TTL");
    written.insert(b"ttl".to_vec(), Value::from("session"));
    client.expire(b"putv", 3_600_000).expect("EXPIRE");
    // A single-shard ATOMIC's values, a small one and a large one.
    let large = bin_stored_as(&mut rng, 200);
    let replies = call(
        &mut client,
        vec![atomic(vec![
            set(b"batch:small", &Value::from("flag")),
            set(b"batch:large", &large),
        ])],
    );
    assert_eq!(replies, [], "SETs in an ATOMIC answer nothing, or an error");
    written.insert(b"batch:small".to_vec(), Value::from("flag"));
    written.insert(b"batch:large".to_vec(), large);
    for round in 0..2 {
        assert_small_values_read_from_memory(&mut client, &written, &format!("round {round}"));
    }
}

#[test]
fn incrby_and_append_of_small_values_read_no_disk_and_an_append_past_63_bytes_moves_the_value_to_disk(
) {
    let (_temp, data_dir) = temp_data_dir();
    let server = start_on(&data_dir, NR_SHARDS, &FLAGS);
    let mut client = server.client();
    let before = stat(&mut client, "disk_reads");
    for _ in 0..50 {
        call(&mut client, vec![incr_by(b"counter", 7)]);
    }
    let replies = call(&mut client, vec![atomic(vec![incr_by(b"counter", 1)])]);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(
        client.get(b"counter").expect("GET"),
        Some(Value::Binary(b"351".to_vec()))
    );
    assert_eq!(
        stat(&mut client, "disk_reads"),
        before,
        "INCRBY of a counter read the disk"
    );
    // A value of 60 stored bytes (58 and a 2-byte header), appended to
    // while it stays under 64: no disk read.
    client
        .set(b"text", Value::Binary(vec![b'a'; 58]))
        .expect("SET");
    call(&mut client, vec![append(b"text", b"bc")]);
    let want = [vec![b'a'; 58], b"bc".to_vec()].concat();
    let reads = disk_reads_of_get(&mut client, b"text", &Value::Binary(want), "at 62 bytes");
    assert_eq!(reads, 0, "a 62-byte value was read from disk");
    assert_eq!(stat(&mut client, "disk_reads"), before);
    // Grown to 70 bytes: on disk, read from there (the APPEND itself read
    // the 62-byte value from memory).
    call(&mut client, vec![append(b"text", b"12345678")]);
    assert_eq!(stat(&mut client, "disk_reads"), before);
    let want = [vec![b'a'; 58], b"bc12345678".to_vec()].concat();
    let reads = disk_reads_of_get(&mut client, b"text", &Value::Binary(want), "at 70 bytes");
    assert!(reads >= 1, "a 70-byte value was not read from disk");
}

/// Stops the server with `signal` and starts it again on `data_dir`.
fn restart(server: &mut common::TestServer, data_dir: &Path, signal: i32) -> common::TestServer {
    stop(server, signal);
    start_on(data_dir, NR_SHARDS, &FLAGS)
}

#[test]
fn after_a_restart_from_the_log_small_values_are_exact_and_read_no_disk() {
    let seed = test_seed("disk small values replayed");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let mut server = start_on(&data_dir, NR_SHARDS, &FLAGS);
    let mut client = server.client();
    let values = edge_values(&mut rng);
    let mut written = write_values(&mut client, "replayed", &values);
    call(&mut client, vec![incr_by(b"counter", 41)]);
    written.insert(b"counter".to_vec(), Value::Binary(b"41".to_vec()));
    for signal in [libc::SIGKILL, libc::SIGTERM] {
        server = restart(&mut server, &data_dir, signal);
        assert!(
            !data_dir.join("log").join("shard-0.hint").exists(),
            "no compaction ran: the log was replayed"
        );
        let mut client = server.client();
        assert_small_values_read_from_memory(
            &mut client,
            &written,
            &format!("after signal {signal}"),
        );
    }
}

#[test]
fn after_a_restart_from_a_hint_file_each_small_value_is_read_from_disk_at_most_once() {
    let seed = test_seed("disk small values hinted");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let mut server = start_on(&data_dir, NR_SHARDS, &FLAGS);
    let mut client = server.client();
    let mut values = edge_values(&mut rng);
    for i in 0..40 {
        values.push(bin_stored_as(&mut rng, 2 + i % 62));
    }
    let mut written = write_values(&mut client, "hinted", &values);
    let (filler, value, _) = force_compaction(&mut server, &mut client, 0, NR_SHARDS);
    written.insert(filler, value);
    // After the compaction, before a restart: the small values stayed in
    // memory (compaction did not point them at the new file).
    assert_small_values_read_from_memory(&mut client, &written, "after a compaction");
    // Written after the compaction: replayed from the log's tail.
    let tail = write_values(&mut client, "tail", &edge_values(&mut rng));
    written.extend(tail.clone());
    let hint = data_dir.join("log").join("shard-0.hint");
    let hinted = (0..200).any(|_| {
        let there = hint.exists();
        if !there {
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        there
    });
    assert!(hinted, "the compaction wrote a hint file");
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        server = restart(&mut server, &data_dir, signal);
        assert!(
            server.stderr().contains("hint file entries"),
            "{}",
            server.stderr()
        );
        let mut client = server.client();
        for (key, value) in &written {
            let small = stored_len(value) < INLINE_BELOW_BYTES;
            let first = disk_reads_of_get(&mut client, key, value, "first read");
            let second = disk_reads_of_get(&mut client, key, value, "second read");
            if small {
                assert!(first <= 1, "{}: {first} disk reads", show(key));
                assert_eq!(second, 0, "{}: read from disk again", show(key));
                if tail.contains_key(key) {
                    assert_eq!(first, 0, "{}: replayed, yet read from disk", show(key));
                }
            } else {
                assert!(first >= 1 && second >= 1, "{}: not on disk", show(key));
            }
        }
    }
}
