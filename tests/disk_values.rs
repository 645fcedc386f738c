//! What only the disk engine does: values live in the log files and are read
//! back from disk, so a data set many times the memory limit fits, values
//! survive compactions that move them between files, and the log and disk
//! engines take over each other's data directories. (Every suite of servers
//! that keep data also runs on the disk engine: tests/disk_engine.rs.)

mod common;

use common::{assert_all_read_back, assert_reads_back, random_bin, start_on, stat};

use common::crash::{stop, temp_data_dir};
use common::keys::key_on_shard;
use common::{force_compaction, test_seed, TestServer};
use corekv::client::{Element, Request};
use rand::SeedableRng;
use rmpv::Value;
use std::collections::BTreeMap;

#[test]
fn a_data_set_eight_times_the_memory_limit_is_written_and_read_back_byte_exact() {
    const LIMIT_BYTES: u64 = 4 << 20;
    const NR_KEYS: usize = 1024;
    const VALUE_BYTES: usize = 32 * 1024; // 32 MiB of values in all
    let seed = test_seed("disk data set");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let limit = LIMIT_BYTES.to_string();
    let flags = ["--engine", "disk", "--max-memory-bytes", &limit];
    let mut server = start_on(&data_dir, 2, &flags);
    let mut client = server.client();
    let mut written = BTreeMap::new();
    for i in 0..NR_KEYS {
        let key = format!("big:{i:05}").into_bytes();
        let value = random_bin(&mut rng, VALUE_BYTES);
        client
            .set(&key, value.clone())
            .expect("SET under the memory limit");
        written.insert(key, value);
    }
    let value_bytes = stat(&mut client, "value_bytes");
    assert!(
        value_bytes >= 8 * LIMIT_BYTES,
        "the values ({value_bytes} bytes) are many times the limit"
    );
    assert_eq!(stat(&mut client, "oom_rejections"), 0);
    let memory = stat(&mut client, "memory_bytes") + stat(&mut client, "reply_pinned_bytes");
    assert!(memory < LIMIT_BYTES, "memory counted: {memory} bytes");
    let reads_before = stat(&mut client, "disk_reads");
    assert_all_read_back(&mut client, &written, "before a restart");
    let reads = stat(&mut client, "disk_reads") - reads_before;
    assert!(
        reads >= NR_KEYS as u64,
        "every value was read from disk ({reads} reads)"
    );
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        stop(&mut server, signal);
        server = start_on(&data_dir, 2, &flags);
        let mut client = server.client();
        assert_all_read_back(&mut client, &written, &format!("after signal {signal}"));
    }
}

/// Values written by ATOMIC batches across shards (each shard's share is
/// logged in a PREPARE record, applied at the commit) live on disk like any
/// other: eight times the memory limit written that way is read back before
/// and after restarts, and the memory counted stays under the limit, at run
/// time and after recovery.
#[test]
fn values_of_cross_shard_batches_live_on_disk_not_in_memory() {
    const NR_SHARDS: usize = 2;
    const LIMIT_BYTES: u64 = 4 << 20;
    const NR_BATCHES: usize = 512;
    const VALUE_BYTES: usize = 32 * 1024; // 2 × 512 × 32 KiB = 32 MiB
    let seed = test_seed("cross-shard batch values on disk");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let limit = LIMIT_BYTES.to_string();
    let flags = ["--engine", "disk", "--max-memory-bytes", &limit];
    let mut server = start_on(&data_dir, NR_SHARDS, &flags);
    let mut client = server.client();
    let mut written = BTreeMap::new();
    for i in 0..NR_BATCHES {
        let sets = (0..NR_SHARDS)
            .map(|shard| {
                let key = key_on_shard(&format!("batch{i}-"), shard, NR_SHARDS);
                let value = random_bin(&mut rng, VALUE_BYTES);
                written.insert(key.clone(), value.clone());
                Request::Set(key, value)
            })
            .collect();
        let reply = client.call(&[Request::Atomic(sets)]).expect("ATOMIC");
        assert!(
            !reply.iter().any(|e| matches!(e, Element::Error { .. })),
            "batch {i}: {reply:?}"
        );
    }
    let memory_counted = |client: &mut corekv::client::Client| {
        stat(client, "memory_bytes") + stat(client, "reply_pinned_bytes")
    };
    assert_eq!(stat(&mut client, "oom_rejections"), 0);
    let memory = memory_counted(&mut client);
    assert!(memory < LIMIT_BYTES, "memory counted: {memory} bytes");
    assert_all_read_back(&mut client, &written, "before a restart");
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        stop(&mut server, signal);
        server = start_on(&data_dir, NR_SHARDS, &flags);
        let mut client = server.client();
        let context = format!("after signal {signal}");
        let memory = memory_counted(&mut client);
        assert!(
            memory < LIMIT_BYTES,
            "{context}: memory counted: {memory} bytes"
        );
        assert_all_read_back(&mut client, &written, &context);
    }
}

#[test]
fn values_moved_by_compactions_stay_exact_and_the_files_stay_bounded() {
    const NR_SHARDS: usize = 1;
    let seed = test_seed("disk compaction");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let flags = ["--engine", "disk", "--compact-min-bytes", "65536"];
    let mut server = start_on(&data_dir, NR_SHARDS, &flags);
    let mut client = server.client();
    let mut written = BTreeMap::new();
    // Keys that stay while others are overwritten around them, and values
    // of every size class, so each compaction moves all of them.
    for i in 0..200 {
        let key = key_on_shard(&format!("kept{i}"), 0, NR_SHARDS);
        let len = [1, 100, 4000, 4097, 20_000][i % 5];
        let value = random_bin(&mut rng, len);
        client.set(&key, value.clone()).expect("SET");
        written.insert(key, value);
    }
    for round in 0..3 {
        let (filler, value, _) = force_compaction(&mut server, &mut client, 0, NR_SHARDS);
        written.insert(filler, value);
        assert_all_read_back(&mut client, &written, &format!("after compaction {round}"));
        // Overwrites and expiry changes between compactions: entries that
        // point into the old file when the next one runs.
        for (i, key) in written
            .keys()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .iter()
            .enumerate()
        {
            if i % 2 == 0 {
                let value = random_bin(&mut rng, 3000 + i);
                client.set(key, value.clone()).expect("overwrite");
                written.insert(key.clone(), value);
            } else {
                client.expire(key, 3_600_000).expect("EXPIRE");
            }
        }
    }
    let log = data_dir.join("log").join("shard-0.log");
    let live: u64 = written
        .iter()
        .map(|(k, v)| (k.len() + rmp_len(v)) as u64 + 64)
        .sum();
    let on_disk = std::fs::metadata(&log).expect("log").len();
    assert!(
        on_disk <= 2 * live + (16 << 20),
        "log {on_disk} bytes for {live} bytes of live data"
    );
    stop(&mut server, libc::SIGKILL);
    let server = start_on(&data_dir, NR_SHARDS, &flags);
    let mut client = server.client();
    assert_all_read_back(&mut client, &written, "after kill -9");
}

/// Bytes of `value`'s msgpack encoding.
fn rmp_len(value: &Value) -> usize {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).expect("encode");
    out.len()
}

#[test]
fn the_log_and_disk_engines_serve_each_others_data_directories() {
    let (_temp, data_dir) = temp_data_dir();
    let mut written = BTreeMap::new();
    let mut server = start_on(&data_dir, 2, &["--engine", "log"]);
    let mut client = server.client();
    for i in 0..100u32 {
        let key = format!("k{i}").into_bytes();
        let value = Value::Binary(i.to_le_bytes().repeat(i as usize));
        client.set(&key, value.clone()).expect("SET");
        written.insert(key, value);
    }
    for (engine, shards) in [("disk", 2), ("disk", 3), ("log", 3), ("disk", 1)] {
        stop(&mut server, libc::SIGTERM);
        server = start_on(&data_dir, shards, &["--engine", engine]);
        let mut client = server.client();
        assert_all_read_back(
            &mut client,
            &written,
            &format!("--engine {engine} --shards {shards}"),
        );
        let name = format!("by-{engine}-{shards}");
        let (key, value) = (name.clone().into_bytes(), Value::from(name));
        client.set(&key, value.clone()).expect("SET");
        written.insert(key, value);
    }
    let marker = std::fs::read_to_string(data_dir.join("ENGINE")).expect("ENGINE");
    assert_eq!(marker.trim(), "disk");
    stop(&mut server, libc::SIGTERM);
    let refused = TestServer::start_in(&data_dir, 1, &["--engine", "memory"])
        .err()
        .expect("the memory engine would ignore the logs");
    assert!(
        refused.1.contains("created with --engine disk"),
        "{}",
        refused.1
    );
}

/// A figure of the server process's `/proc/PID/io`: `rchar`, the bytes it
/// has read through `read` and `pread`, or `read_bytes`, those the storage
/// layer read for it (direct reads count; copies from the page cache do not).
fn proc_io(server: &TestServer, field: &str) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{}/io", server.pid())).expect("/proc/PID/io");
    io.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(": "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/PID/io"))
}

/// A direct read of bytes still dirty in the page cache makes the kernel
/// write them back and wait for it first, holding the file's lock: the
/// shard's appends waited behind such reads. So values the log has not
/// synced yet (all of the active file under `--fsync never`) are read
/// through the page cache, and reach the device only once synced.
#[test]
fn values_not_yet_synced_are_read_from_the_page_cache_and_synced_ones_from_the_device() {
    const NR_VALUES: usize = 32;
    let seed = test_seed("disk unsynced reads");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let flags = [
        "--engine",
        "disk",
        "--fsync",
        "never",
        "--disk-cache-bytes",
        "0",
    ];
    let named = |prefix: &str| -> Vec<Vec<u8>> {
        (0..NR_VALUES)
            .map(|i| format!("{prefix}{i:02}").into_bytes())
            .collect()
    };
    let (synced, fresh) = (named("synced"), named("fresh"));
    let values: Vec<Value> = (0..NR_VALUES).map(|_| random_bin(&mut rng, 1000)).collect();
    // One SET per message, so that each value has blocks of its own.
    let set_all = |client: &mut corekv::client::Client, keys: &[Vec<u8>]| {
        for (key, value) in keys.iter().zip(&values) {
            client
                .call(&[Request::Set(key.clone(), value.clone())])
                .expect("SET");
        }
    };
    let mut server = start_on(&data_dir, 1, &flags);
    set_all(&mut server.client(), &synced);
    // A clean stop syncs the log: after the restart these are synced.
    stop(&mut server, libc::SIGTERM);
    let server = start_on(&data_dir, 1, &flags);
    let mut client = server.client();
    set_all(&mut client, &fresh);
    let get_all = |client: &mut corekv::client::Client, keys: &[Vec<u8>]| {
        let gets: Vec<Request> = keys.iter().map(|key| Request::Get(key.clone())).collect();
        let found = client.call(&gets).expect("GETs");
        let expected: Vec<Element> = values.iter().cloned().map(Element::Found).collect();
        assert_eq!(found, expected, "the values read back");
    };
    let before = proc_io(&server, "read_bytes");
    get_all(&mut client, &synced);
    let synced_reads = proc_io(&server, "read_bytes") - before;
    // 32 records of 1 KiB fill at least 8 blocks of 4 KiB.
    if synced_reads < 8 * 4096 {
        // A file system without direct I/O (tmpfs) serves every read from
        // memory: nothing to tell apart here.
        eprintln!(
            "the synced values cost {synced_reads} bytes of device reads: no direct I/O here"
        );
        return;
    }
    let before = proc_io(&server, "read_bytes");
    get_all(&mut client, &fresh);
    let fresh_reads = proc_io(&server, "read_bytes") - before;
    assert!(
        fresh_reads < 2 * 4096,
        "{NR_VALUES} values not yet synced cost {fresh_reads} bytes of device reads \
         (the synced ones: {synced_reads})"
    );
}

/// Waits (a bounded number of times) for `path` to exist.
fn wait_for_file(path: &std::path::Path) -> bool {
    (0..200).any(|_| {
        let there = path.exists();
        if !there {
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        there
    })
}

#[test]
fn a_restart_after_a_compaction_reads_the_index_from_the_hint_file_not_the_values() {
    const NR_SHARDS: usize = 1;
    let seed = test_seed("disk hint");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let flags = ["--engine", "disk", "--compact-min-bytes", "65536"];
    let mut server = start_on(&data_dir, NR_SHARDS, &flags);
    let mut client = server.client();
    let mut written = BTreeMap::new();
    for i in 0..200 {
        let key = format!("kept{i:04}").into_bytes();
        let value = random_bin(&mut rng, 16 * 1024);
        client.set(&key, value.clone()).expect("SET");
        written.insert(key, value);
    }
    let (filler, value, _) = force_compaction(&mut server, &mut client, 0, NR_SHARDS);
    written.insert(filler, value);
    let hint = data_dir.join("log").join("shard-0.hint");
    assert!(wait_for_file(&hint), "the compaction wrote a hint file");
    // Writes after the compaction: the tail replay reads.
    for i in 0..20 {
        let key = format!("after{i}").into_bytes();
        let value = random_bin(&mut rng, 100);
        client.set(&key, value.clone()).expect("SET");
        written.insert(key, value);
    }
    let mut read_with_hint = 0;
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        stop(&mut server, signal);
        server = start_on(&data_dir, NR_SHARDS, &flags);
        read_with_hint = proc_io(&server, "rchar");
        assert!(
            server.stderr().contains("hint file entries"),
            "{}",
            server.stderr()
        );
        let mut client = server.client();
        assert_all_read_back(&mut client, &written, &format!("after signal {signal}"));
    }
    // A damaged hint is not used: the whole log is read, and nothing is lost.
    stop(&mut server, libc::SIGTERM);
    let mut bytes = std::fs::read(&hint).expect("hint");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&hint, &bytes).expect("damage the hint");
    let mut server = start_on(&data_dir, NR_SHARDS, &flags);
    let read_without_hint = proc_io(&server, "rchar");
    assert!(
        server.stderr().contains("not using its hint file"),
        "{}",
        server.stderr()
    );
    // The values of the 200 kept keys alone are 3.2 MB: a start that uses
    // the hint reads none of them.
    let kept_value_bytes = 200 * 16 * 1024;
    assert!(
        read_with_hint + kept_value_bytes <= read_without_hint,
        "a start read {read_with_hint} bytes with the hint, {read_without_hint} without"
    );
    let mut client = server.client();
    assert_all_read_back(&mut client, &written, "with a damaged hint");
}

#[test]
fn a_value_damaged_on_disk_is_an_ioerr_naming_it_never_wrong_bytes() {
    const NR_SHARDS: usize = 1;
    let seed = test_seed("disk damage");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let flags = ["--engine", "disk", "--compact-min-bytes", "65536"];
    let mut server = start_on(&data_dir, NR_SHARDS, &flags);
    let mut client = server.client();
    let mut written = BTreeMap::new();
    for i in 0..50 {
        let key = format!("kept{i:02}").into_bytes();
        let value = random_bin(&mut rng, 4000);
        client.set(&key, value.clone()).expect("SET");
        written.insert(key, value);
    }
    force_compaction(&mut server, &mut client, 0, NR_SHARDS);
    let hint = data_dir.join("log").join("shard-0.hint");
    assert!(wait_for_file(&hint), "the compaction wrote a hint file");
    stop(&mut server, libc::SIGTERM);
    // Flip one bit in the middle of one value, in the part of the log the
    // hint stands for (so the restart does not read it).
    let (victim, value) = written.iter().nth(17).expect("a key");
    let Value::Binary(bytes) = value else {
        panic!("bin values")
    };
    let log = data_dir.join("log").join("shard-0.log");
    let mut file = std::fs::read(&log).expect("log");
    let at = file
        .windows(64)
        .position(|w| w == &bytes[1000..1064])
        .expect("the value is in the log");
    file[at + 10] ^= 0x01;
    std::fs::write(&log, &file).expect("damage the log");
    let server = start_on(&data_dir, NR_SHARDS, &flags);
    let mut client = server.client();
    match client.get(victim) {
        Err(corekv::client::ClientError::Server { code, message }) => {
            assert_eq!(code, "IOERR", "{message}");
            assert!(message.contains("could not be read"), "{message}");
        }
        other => panic!("a damaged value must not be served: {other:?}"),
    }
    for (key, value) in written.iter().filter(|(k, _)| *k != victim) {
        assert_eq!(client.get(key).expect("GET").as_ref(), Some(value));
    }
}

/// The count of the shard's disk-read latency histogram: reads issued.
fn disk_read_ops(server: &mut TestServer) -> f64 {
    let http = common::http_addr(server);
    let (status, page) = common::http_request(http, "GET", "/metrics", b"");
    assert_eq!(status, 200, "{page}");
    page.lines()
        .find_map(|line| line.strip_prefix("corekv_disk_read_duration_seconds_count{shard=\"0\"}"))
        .and_then(|rest| rest.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no disk read count in:\n{page}"))
}

#[test]
fn values_written_together_are_read_together_in_one_disk_read() {
    const NR_VALUES: usize = 64;
    let seed = test_seed("disk neighbours");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let flags = ["--engine", "disk", "--http-addr", "127.0.0.1:0"];
    let mut server = start_on(&data_dir, 1, &flags);
    let mut client = server.client();
    let keys: Vec<Vec<u8>> = (0..NR_VALUES)
        .map(|i| format!("n{i:02}").into_bytes())
        .collect();
    let values: Vec<Value> = (0..NR_VALUES).map(|_| random_bin(&mut rng, 1000)).collect();
    // One message: its records lie next to each other in the log.
    let sets: Vec<Request> = keys
        .iter()
        .zip(&values)
        .map(|(key, value)| Request::Set(key.clone(), value.clone()))
        .collect();
    client.call(&sets).expect("SETs");
    // A restart: every value is on disk, none in the cache.
    stop(&mut server, libc::SIGTERM);
    let mut server = start_on(&data_dir, 1, &flags);
    let mut client = server.client();
    let (values_before, ops_before) = (stat(&mut client, "disk_reads"), disk_read_ops(&mut server));
    let gets: Vec<Request> = keys.iter().map(|key| Request::Get(key.clone())).collect();
    let found = client.call(&gets).expect("GETs");
    let expected: Vec<Element> = values.iter().cloned().map(Element::Found).collect();
    assert_eq!(found, expected);
    let values_read = stat(&mut client, "disk_reads") - values_before;
    let ops = disk_read_ops(&mut server) - ops_before;
    assert_eq!(values_read, NR_VALUES as u64, "every value came from disk");
    assert!(
        ops < 4.0,
        "{NR_VALUES} neighbouring values took {ops} disk reads"
    );
}

/// The parts of a value's record a test damages.
#[derive(Debug, Clone, Copy)]
enum RecordPart {
    /// The body length in the record header.
    Length,
    /// The body checksum in the record header.
    BodyChecksum,
    /// The record's kind byte.
    Kind,
    Key,
    Version,
    Value,
}

/// Flips one bit of `part` of the last record holding `key`'s value in the
/// log at `log`, in place (the server may have the file open). The record
/// is found by its key field, `key_len u32 | key`, which in a PUT record
/// (and in each PUT body of a BATCH) follows the kind byte and is followed by
/// `version u64 | value_len u32 | value` (docs/storage.md has the format).
fn flip_bit_in_record(log: &std::path::Path, key: &[u8], part: RecordPart) {
    use std::os::unix::fs::FileExt;
    let bytes = std::fs::read(log).expect("log");
    let mut field = (key.len() as u32).to_le_bytes().to_vec();
    field.extend_from_slice(key);
    let key_at = bytes
        .windows(field.len())
        .rposition(|w| w == field)
        .expect("the key's record is in the log");
    // A PUT record's header (len u32 | body_crc u32 | head_crc u32) and kind.
    let record_at = key_at - 1 - 12;
    let version_at = key_at + field.len();
    let (at, bit) = match part {
        RecordPart::Length => (record_at + 1, 0x01),
        RecordPart::BodyChecksum => (record_at + 5, 0x10),
        RecordPart::Kind => (record_at + 12, 0x04),
        RecordPart::Key => (key_at + field.len() - 1, 0x01),
        RecordPart::Version => (version_at, 0x01),
        RecordPart::Value => (version_at + 8 + 4 + 100, 0x20),
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(log)
        .expect("open the log");
    file.write_at(&[bytes[at] ^ bit], at as u64)
        .expect("damage the log");
}

/// Asserts that GET `key` answers IOERR (its record was damaged as `what`
/// says), not a value, and that the server logged which key and where.
fn assert_damage_is_an_ioerr(server: &mut TestServer, key: &[u8], what: &str) {
    match server.client().get(key) {
        Err(corekv::client::ClientError::Server { code, message }) => {
            assert_eq!(code, "IOERR", "{what}: {message}");
            assert!(message.contains("could not be read"), "{what}: {message}");
            assert!(
                message.contains(&*String::from_utf8_lossy(key)),
                "{what}: {message}"
            );
        }
        other => panic!("{what}: a damaged record must not be served: {other:?}"),
    }
    let logged = format!(
        "cannot read the value of {:?}",
        String::from_utf8_lossy(key)
    );
    assert!(
        server.stderr().contains(&logged),
        "{what}: {}",
        server.stderr()
    );
}

#[test]
fn a_bit_flipped_in_a_values_record_header_key_or_version_is_an_ioerr_also_after_a_restart_with_a_hint(
) {
    const NR_SHARDS: usize = 1;
    let parts = [
        RecordPart::Length,
        RecordPart::BodyChecksum,
        RecordPart::Kind,
        RecordPart::Key,
        RecordPart::Version,
        RecordPart::Value,
    ];
    let seed = test_seed("disk record damage");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let flags = [
        "--engine",
        "disk",
        "--compact-min-bytes",
        "65536",
        "--disk-cache-bytes",
        "0",
    ];
    let mut server = start_on(&data_dir, NR_SHARDS, &flags);
    let mut client = server.client();
    let mut written = BTreeMap::new();
    for i in 0..60 {
        let key = format!("record{i:010}").into_bytes();
        let value = random_bin(&mut rng, 1000);
        client.set(&key, value.clone()).expect("SET");
        written.insert(key, value);
    }
    let log = data_dir.join("log").join("shard-0.log");
    // The records the SETs wrote, damaged under the running server.
    let keys: Vec<Vec<u8>> = written.keys().cloned().collect();
    for (key, part) in keys.iter().zip(parts) {
        flip_bit_in_record(&log, key, part);
    }
    for (key, part) in keys.iter().zip(parts) {
        assert_damage_is_an_ioerr(&mut server, key, &format!("{part:?}, as written"));
        client.del(key).expect("DEL of a damaged key");
        written.remove(key);
    }
    assert_all_read_back(&mut client, &written, "beside the damaged records");
    // The same in the PUT records of a compaction's snapshot, read through
    // its hint after a restart (which so never reads them itself).
    let (filler, value, _) = force_compaction(&mut server, &mut client, 0, NR_SHARDS);
    written.insert(filler, value);
    let hint = data_dir.join("log").join("shard-0.hint");
    assert!(wait_for_file(&hint), "the compaction wrote a hint file");
    stop(&mut server, libc::SIGTERM);
    let victims: Vec<Vec<u8>> = written.keys().skip(10).take(parts.len()).cloned().collect();
    for (key, part) in victims.iter().zip(parts) {
        flip_bit_in_record(&log, key, part);
    }
    let mut server = start_on(&data_dir, NR_SHARDS, &flags);
    assert!(
        server.stderr().contains("hint file entries"),
        "{}",
        server.stderr()
    );
    for (key, part) in victims.iter().zip(parts) {
        let what = format!("{part:?}, in a snapshot, after a restart with its hint");
        assert_damage_is_an_ioerr(&mut server, key, &what);
        written.remove(key);
    }
    assert_all_read_back(&mut server.client(), &written, "after the restart");
}

#[test]
fn a_bit_flipped_in_a_value_written_by_a_single_shard_atomic_batch_is_an_ioerr() {
    let seed = test_seed("disk batch damage");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let flags = ["--engine", "disk", "--disk-cache-bytes", "0"];
    let mut server = start_on(&data_dir, 1, &flags);
    let mut client = server.client();
    let keys: Vec<Vec<u8>> = (0..3).map(|i| format!("batched{i}").into_bytes()).collect();
    let values: Vec<Value> = (0..3).map(|_| random_bin(&mut rng, 1000)).collect();
    let sets = keys
        .iter()
        .zip(&values)
        .map(|(key, value)| Request::Set(key.clone(), value.clone()))
        .collect();
    client.call(&[Request::Atomic(sets)]).expect("ATOMIC");
    for (key, value) in keys.iter().zip(&values) {
        assert_reads_back(&mut client, key, value, "as the batch wrote it");
    }
    // Each value is one of three in the BATCH record: its entry keeps its
    // own checksum, which the read checks.
    flip_bit_in_record(
        &data_dir.join("log").join("shard-0.log"),
        &keys[1],
        RecordPart::Value,
    );
    assert_damage_is_an_ioerr(&mut server, &keys[1], "a value of a batch");
    for (key, value) in [(&keys[0], &values[0]), (&keys[2], &values[2])] {
        assert_reads_back(
            &mut client,
            key,
            value,
            "beside the damaged value of the batch",
        );
    }
}
