//! The disk engine's index in memory: what one key costs in it, and that
//! LRU eviction, the one reader of an entry's access clock, still works on
//! it — on entries written under the policy and on entries a restart rebuilt.
//! (src/entry.rs has the layout the arithmetic below follows.)

mod common;

use common::crash::{stop, temp_data_dir};
use common::{start_on, stat};
use corekv::client::Request;
use rmpv::Value;
use std::time::Duration;

/// A 16-byte key for `i`.
fn key(prefix: &str, i: usize) -> Vec<u8> {
    let key = format!("{prefix}:{i:0width$}", width = 15 - prefix.len());
    assert_eq!(key.len(), 16);
    key.into_bytes()
}

/// Writes `keys`, pipelined, each with `value`; asserts none is refused.
fn write_all(client: &mut corekv::client::Client, keys: &[Vec<u8>], value: &Value) {
    for chunk in keys.chunks(100) {
        let requests: Vec<Request> = chunk
            .iter()
            .map(|key| Request::Set(key.clone(), value.clone()))
            .collect();
        let reply = client.call(&requests).expect("SETs");
        assert_eq!(reply, [], "a SET was refused");
    }
}

#[test]
fn an_index_entry_of_a_16_byte_key_carries_no_access_clock_without_an_lru_policy() {
    // Few enough that the map stays under 7/8 of 16 384 buckets.
    const NR_KEYS: usize = 14_000;
    // The entry of a 16-byte key whose value lies in log file 0 at an offset
    // between 2 MiB and 256 MiB (a 4-byte varint), alone in its PUT record,
    // 64 to 4095 bytes long (its length and how it is checked, a 2-byte
    // varint; a shorter value would stay in the entry), at version 1: count 4 + key tag 1 + key 16 + location (file
    // 1, offset 4, length 2) + version 1 = 29 bytes, the allocator's 32-byte
    // class. With the 4-byte access clock it would be 33, in the 48-byte
    // class (mimalloc's classes are 16 bytes apart up to 128): 59.7 bytes a
    // key in all, where this is 43.7.
    const ENTRY_BYTES: u64 = 32;
    // hashbrown's bucket array for 14 000 keys: 16 384 buckets (at most 7/8
    // full) of an 8-byte pointer and a control byte, one group of 16 control
    // bytes more, in the allocator's class for that size (160 KiB); and the
    // entry of the key that fills the first 2 MiB of the log.
    let other_bytes = corekv::allocator::held_bytes(16_384 * 9 + 16) as u64 + 64;
    let (_temp, data_dir) = temp_data_dir();
    let mut server = start_on(&data_dir, 1, &["--engine", "disk"]);
    let mut client = server.client();
    let filler = Value::Binary(vec![1; 2 << 20]);
    client.set(b"filler", filler).expect("SET of the filler");
    let keys: Vec<Vec<u8>> = (0..NR_KEYS).map(|i| key("index", i)).collect();
    // 66 bytes stored: a bin of 64 and its 2-byte header.
    write_all(&mut client, &keys, &Value::Binary(vec![7; 64]));
    let log_bytes = std::fs::metadata(data_dir.join("log").join("shard-0.log"))
        .expect("the shard's log")
        .len();
    assert!(
        log_bytes < 1 << 28,
        "the arithmetic above takes every offset under 256 MiB; the log is {log_bytes} bytes"
    );
    let (nr_keys, memory) = (stat(&mut client, "keys"), stat(&mut client, "memory_bytes"));
    assert_eq!(nr_keys, NR_KEYS as u64 + 1);
    eprintln!(
        "{memory} bytes of index for {nr_keys} keys: {:.2} per key",
        memory as f64 / nr_keys as f64
    );
    assert!(
        memory >= NR_KEYS as u64 * ENTRY_BYTES,
        "{memory} bytes cannot hold {NR_KEYS} entries"
    );
    assert!(
        memory <= NR_KEYS as u64 * ENTRY_BYTES + other_bytes,
        "{memory} bytes for {NR_KEYS} keys: more than {ENTRY_BYTES}-byte entries and the buckets"
    );
    stop(&mut server, libc::SIGTERM);
}

#[test]
fn a_16_byte_key_indexed_past_256_mib_of_log_costs_at_most_48_bytes_of_memory() {
    // Keys written after 256 MiB of log: their values' offsets take 5-byte
    // varints. The entry of a 16-byte key whose value is alone in its PUT
    // record (every SET's), 64 to 4095 bytes long (a shorter value would
    // stay in the entry), at version 1: count 4 + key tag 1 + key 16 +
    // location (file 1, offset 5, length 2) + version 1 = 30 bytes, the
    // 32-byte class. With a value length and a CRC, as entries had before,
    // 35 bytes and the 48-byte class: 48 bytes a key before the map's
    // share. The map adds about 12 bytes a key here:
    // 131 072 buckets of a pointer and a control byte for 100 000 keys.
    const NR_KEYS: usize = 100_000;
    const FILLER_VALUES: usize = 20;
    const FILLER_VALUE_BYTES: usize = 13 << 20;
    let (_temp, data_dir) = temp_data_dir();
    // One file past 256 MiB: no roll into segments before then.
    let flags = [
        "--engine",
        "disk",
        "--disk-cache-bytes",
        "0",
        "--segment-bytes",
        "1GiB",
    ];
    let mut server = start_on(&data_dir, 1, &flags);
    let mut client = server.client();
    let filler = Value::Binary(vec![0x5a; FILLER_VALUE_BYTES]);
    for i in 0..FILLER_VALUES {
        client
            .set(&key("filler", i), filler.clone())
            .expect("SET of a filler value");
    }
    drop(filler);
    let log = data_dir.join("log").join("shard-0.log");
    let log_bytes = || std::fs::metadata(&log).expect("the shard's log").len();
    let before = log_bytes();
    assert!(
        before > 1 << 28,
        "the filler took the log to {before} bytes, not past 256 MiB"
    );
    let keys: Vec<Vec<u8>> = (0..NR_KEYS).map(|i| key("far", i)).collect();
    // 66 bytes stored: a bin of 64 and its 2-byte header.
    write_all(&mut client, &keys, &Value::Binary(vec![7; 64]));
    let (nr_keys, memory) = (stat(&mut client, "keys"), stat(&mut client, "memory_bytes"));
    assert_eq!(nr_keys, (NR_KEYS + FILLER_VALUES) as u64);
    let per_key = memory as f64 / nr_keys as f64;
    eprintln!("{memory} bytes of index for {nr_keys} keys: {per_key:.2} per key");
    assert!(
        per_key <= 48.0,
        "{memory} bytes for {nr_keys} keys, {per_key:.2} a key: over 48"
    );
    assert_eq!(
        client.get(&keys[NR_KEYS / 2]).expect("GET").as_ref(),
        Some(&Value::Binary(vec![7; 64]))
    );
    stop(&mut server, libc::SIGTERM);
}

#[test]
fn allkeys_lru_on_the_disk_engine_evicts_the_keys_not_read_since_a_restart() {
    const NR_COLD: usize = 8_000;
    const NR_HOT: usize = 500;
    const NR_ROUNDS: usize = 30;
    const NEW_PER_ROUND: usize = 1_000;
    let (_temp, data_dir) = temp_data_dir();
    // One shard: all of the 1 MiB is its share, about 18 000 keys of index.
    let flags = [
        "--engine",
        "disk",
        "--max-memory-bytes",
        "1MiB",
        "--maxmemory-policy",
        "allkeys-lru",
    ];
    let mut server = start_on(&data_dir, 1, &flags);
    let value = Value::Binary(vec![3; 16]);
    let old: Vec<Vec<u8>> = (0..NR_COLD).map(|i| key("old", i)).collect();
    write_all(&mut server.client(), &old, &value);
    // The restart rebuilds these keys' entries from the log, before the
    // policy is applied: they must come back with a clock LRU can read.
    stop(&mut server, libc::SIGTERM);
    server = start_on(&data_dir, 1, &flags);
    let mut client = server.client();
    assert_eq!(stat(&mut client, "keys"), NR_COLD as u64);
    let (hot, cold) = old.split_at(NR_HOT);
    for round in 0..NR_ROUNDS {
        for key in hot {
            assert_eq!(client.get(key).expect("GET").as_ref(), Some(&value));
        }
        // The access clock ticks every 10 ms: the keys written next are
        // stamped later than the reads above, which are later than the
        // writes of the round before.
        std::thread::sleep(Duration::from_millis(20));
        let new: Vec<Vec<u8>> = (0..NEW_PER_ROUND)
            .map(|i| key("new", round * NEW_PER_ROUND + i))
            .collect();
        write_all(&mut client, &new, &value);
        std::thread::sleep(Duration::from_millis(20));
    }
    let evicted = stat(&mut client, "evicted_keys");
    assert!(
        evicted as usize > NR_COLD,
        "only {evicted} keys were evicted: the limit was never reached"
    );
    let present = |client: &mut corekv::client::Client, keys: &[Vec<u8>]| {
        keys.iter()
            .filter(|key| client.get(key).expect("GET").is_some())
            .count()
    };
    let (hot_left, cold_left) = (present(&mut client, hot), present(&mut client, cold));
    eprintln!("{evicted} evicted; {hot_left} hot and {cold_left} cold keys left");
    // Sampled LRU approximates (see table::eviction): a hot key may rarely
    // go, but the keys never read since the restart must go first by far.
    assert!(
        hot_left >= NR_HOT * 95 / 100,
        "only {hot_left} of the {NR_HOT} keys read every round are left"
    );
    assert!(
        cold_left <= (NR_COLD - NR_HOT) / 10,
        "{cold_left} of the {} keys never read again are still there",
        NR_COLD - NR_HOT
    );
    stop(&mut server, libc::SIGTERM);
}
