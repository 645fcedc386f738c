//! The disk engine's cache of hot values (`--disk-cache-bytes`): a value is
//! cached on its second read from disk and served from memory after that, a
//! value read once is not, the cache keeps to its bound, a key written again
//! is never served its old copy, and 0 turns it off. STATS and /metrics show
//! it (`disk_cache_hits`, `disk_cache_bytes`, the read latency histogram).
//!
//! Each test writes its keys and restarts the server, so that every value is
//! on disk (a value just written is served from memory until its record is
//! in the log file), and the reads the test counts are the only ones.

mod common;

use common::{assert_reads_back, random_bin, start_on, stat};

use common::crash::{stop, temp_data_dir};
use common::keys::key_on_shard;
use common::{force_compaction, frame, http_addr, http_request, pack, test_seed, TestServer};
use corekv::client::Client;
use rand::{Rng, SeedableRng};
use rmpv::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Restarts `server` (SIGTERM) with the same flags: every value is on disk.
fn restart(server: &mut TestServer, data_dir: &Path, nr_shards: usize, flags: &[&str]) {
    stop(server, libc::SIGTERM);
    *server = start_on(data_dir, nr_shards, flags);
}

/// The counters these tests watch: (disk_reads, disk_cache_hits, disk_cache_bytes).
fn cache_stats(client: &mut Client) -> (u64, u64, u64) {
    let stats = client.stats().expect("STATS");
    (
        stats["disk_reads"],
        stats["disk_cache_hits"],
        stats["disk_cache_bytes"],
    )
}

#[test]
fn a_value_read_twice_is_served_from_the_cache_the_third_time() {
    let (_temp, data_dir) = temp_data_dir();
    let flags = ["--engine", "disk"];
    let mut server = start_on(&data_dir, 1, &flags);
    let mut client = server.client();
    let value = Value::Binary(vec![7u8; 3000]);
    client.set(b"hot", value.clone()).expect("SET");
    restart(&mut server, &data_dir, 1, &flags);
    let mut client = server.client();
    let (reads0, hits0, bytes0) = cache_stats(&mut client);
    assert_eq!((hits0, bytes0), (0, 0), "a fresh server's cache is empty");
    assert_reads_back(&mut client, b"hot", &value, "first read");
    assert_eq!(
        cache_stats(&mut client),
        (reads0 + 1, 0, 0),
        "read, not cached"
    );
    assert_reads_back(&mut client, b"hot", &value, "second read");
    let (reads, hits, bytes) = cache_stats(&mut client);
    assert_eq!((reads, hits), (reads0 + 2, 0), "read again, and cached");
    assert!(bytes >= 3000, "the cache holds the value: {bytes} bytes");
    for n in 1..=3 {
        assert_reads_back(&mut client, b"hot", &value, "from the cache");
        assert_eq!(
            cache_stats(&mut client),
            (reads0 + 2, n, bytes),
            "read {} came from the cache, not the disk",
            n + 2
        );
    }
}

#[test]
fn values_read_once_are_not_cached_and_a_scan_keeps_the_hot_ones() {
    const NR_KEYS: usize = 300;
    let (_temp, data_dir) = temp_data_dir();
    let flags = ["--engine", "disk"];
    let mut server = start_on(&data_dir, 2, &flags);
    let mut client = server.client();
    let value_of = |i: usize| Value::Binary(vec![i as u8; 1000 + i]);
    for i in 0..NR_KEYS {
        client
            .set(format!("scan{i}").as_bytes(), value_of(i))
            .expect("SET");
    }
    client.set(b"hot", value_of(1)).expect("SET");
    restart(&mut server, &data_dir, 2, &flags);
    let mut client = server.client();
    let scan = |client: &mut Client, keys: std::ops::Range<usize>| {
        for i in keys {
            let key = format!("scan{i}");
            assert_reads_back(client, key.as_bytes(), &value_of(i), "scan");
        }
    };
    let (reads0, ..) = cache_stats(&mut client);
    scan(&mut client, 0..NR_KEYS / 2);
    assert_eq!(
        cache_stats(&mut client),
        (reads0 + NR_KEYS as u64 / 2, 0, 0),
        "a scan of values read once each caches none of them"
    );
    for _ in 0..2 {
        assert_reads_back(&mut client, b"hot", &value_of(1), "hot");
    }
    let (reads, _, hot_bytes) = cache_stats(&mut client);
    assert!(hot_bytes > 0, "the hot value is cached");
    scan(&mut client, NR_KEYS / 2..NR_KEYS);
    assert_eq!(
        cache_stats(&mut client),
        (reads + NR_KEYS as u64 / 2, 0, hot_bytes),
        "another scan left the cache as it was"
    );
    assert_reads_back(&mut client, b"hot", &value_of(1), "hot after the scans");
    assert_eq!(
        cache_stats(&mut client),
        (reads + NR_KEYS as u64 / 2, 1, hot_bytes),
        "the hot value was served from the cache"
    );
}

#[test]
fn the_cache_stays_within_its_bound_under_many_distinct_hot_values() {
    const NR_SHARDS: usize = 2;
    const BOUND: u64 = 256 << 10;
    const NR_KEYS: usize = 400;
    let seed = test_seed("disk cache bound");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let bound = BOUND.to_string();
    let flags = ["--engine", "disk", "--disk-cache-bytes", &bound];
    let mut server = start_on(&data_dir, NR_SHARDS, &flags);
    let mut client = server.client();
    let mut written = BTreeMap::new();
    for i in 0..NR_KEYS {
        // 1.2 MB of values in all, about five times the bound.
        let key = format!("many{i:04}").into_bytes();
        let len = rng.gen_range(100..6000);
        let value = random_bin(&mut rng, len);
        client.set(&key, value.clone()).expect("SET");
        written.insert(key, value);
    }
    restart(&mut server, &data_dir, NR_SHARDS, &flags);
    let mut client = server.client();
    let mut most = 0;
    for round in 0..4 {
        for (key, value) in &written {
            assert_reads_back(&mut client, key, value, &format!("round {round}"));
        }
        let (_, _, bytes) = cache_stats(&mut client);
        assert!(
            bytes <= BOUND,
            "round {round}: the cache holds {bytes} bytes"
        );
        most = most.max(bytes);
    }
    assert!(
        most > BOUND / 2,
        "the cache filled up to near its bound ({most} bytes)"
    );
    assert!(stat(&mut client, "disk_cache_hits") > 0);
}

#[test]
fn a_key_written_again_is_never_served_its_old_cached_value() {
    const NR_SHARDS: usize = 1;
    const NR_KEYS: usize = 40;
    let seed = test_seed("disk cache rewrite");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let flags = ["--engine", "disk", "--compact-min-bytes", "65536"];
    let mut server = start_on(&data_dir, NR_SHARDS, &flags);
    let mut client = server.client();
    let mut written = BTreeMap::new();
    for i in 0..NR_KEYS {
        let key = key_on_shard(&format!("re{i}"), 0, NR_SHARDS);
        let value = random_bin(&mut rng, 2000);
        client.set(&key, value.clone()).expect("SET");
        written.insert(key, value);
    }
    client
        .set(b"text", Value::Binary(b"abc".to_vec()))
        .expect("SET");
    written.insert(b"text".to_vec(), Value::Binary(b"abc".to_vec()));
    restart(&mut server, &data_dir, NR_SHARDS, &flags);
    let mut client = server.client();
    let read_all = |client: &mut Client, written: &BTreeMap<Vec<u8>, Value>, when: &str| {
        for _ in 0..3 {
            for (key, value) in written {
                assert_reads_back(client, key, value, when);
            }
        }
    };
    read_all(&mut client, &written, "cached");
    assert!(stat(&mut client, "disk_cache_hits") >= NR_KEYS as u64);
    for round in 0..3 {
        // Same-length values in new bytes: only the location tells the new
        // value from the old, cached one.
        for key in written.keys().cloned().collect::<Vec<_>>() {
            if key == b"text" {
                continue;
            }
            let value = random_bin(&mut rng, 2000);
            client.set(&key, value.clone()).expect("SET");
            written.insert(key, value);
        }
        // APPEND reads the value through the cache too.
        let appended = append(&mut client, b"text", &[b'a' + round]);
        let Value::Binary(text) = &written[&b"text"[..]] else {
            panic!("text is bin")
        };
        let text = [&text[..], &[b'a' + round]].concat();
        assert_eq!(appended, text.len() as u64, "APPEND read the latest text");
        written.insert(b"text".to_vec(), Value::Binary(text));
        read_all(&mut client, &written, &format!("after rewrite {round}"));
        let (filler, value, _) = force_compaction(&mut server, &mut client, 0, NR_SHARDS);
        written.insert(filler, value);
        let hits = stat(&mut client, "disk_cache_hits");
        read_all(&mut client, &written, &format!("after compaction {round}"));
        assert!(
            stat(&mut client, "disk_cache_hits") > hits,
            "the values' new copies were served from the cache"
        );
    }
    restart(&mut server, &data_dir, NR_SHARDS, &flags);
    let mut client = server.client();
    read_all(&mut client, &written, "after a restart");
}

/// APPEND (opcode 12) of `suffix` to `key`; returns the new length.
fn append(client: &mut Client, key: &[u8], suffix: &[u8]) -> u64 {
    let request = Value::Array(vec![
        12.into(),
        Value::Binary(key.to_vec()),
        Value::Binary(suffix.to_vec()),
    ]);
    client
        .send_raw(&frame(&pack(&Value::Array(vec![request]))))
        .and_then(|_| client.flush())
        .expect("send APPEND");
    let reply = client.recv_reply().expect("reply");
    match rmpv::decode::read_value(&mut &reply[..]).expect("msgpack") {
        Value::Array(elements) => match elements[0].as_array().map(Vec::as_slice) {
            Some([tag, length]) if tag.as_i64() == Some(-4) => length.as_u64().expect("a length"),
            _ => panic!("APPEND answers [-4, length], not {}", elements[0]),
        },
        other => panic!("reply is not an array: {other}"),
    }
}

#[test]
fn a_cache_of_zero_bytes_serves_every_read_from_disk() {
    let (_temp, data_dir) = temp_data_dir();
    let flags = ["--engine", "disk", "--disk-cache-bytes", "0"];
    let mut server = start_on(&data_dir, 1, &flags);
    let mut client = server.client();
    let value = Value::Binary(vec![3u8; 500]);
    client.set(b"k", value.clone()).expect("SET");
    restart(&mut server, &data_dir, 1, &flags);
    let mut client = server.client();
    let (reads0, ..) = cache_stats(&mut client);
    for _ in 0..5 {
        assert_reads_back(&mut client, b"k", &value, "uncached");
    }
    assert_eq!(cache_stats(&mut client), (reads0 + 5, 0, 0));
}

#[test]
fn the_cache_flag_is_refused_with_the_engines_that_keep_values_in_memory() {
    for engine in ["log", "memory"] {
        let (_temp, data_dir) = temp_data_dir();
        let flags = ["--engine", engine, "--disk-cache-bytes", "1MiB"];
        let (status, stderr) = TestServer::start_in(&data_dir, 1, &flags)
            .err()
            .expect("the flag would do nothing");
        assert!(status.is_some_and(|s| !s.success()), "{status:?}");
        assert!(
            stderr.contains("--disk-cache-bytes applies only to --engine disk"),
            "{stderr}"
        );
    }
    let (_temp, data_dir) = temp_data_dir();
    let flags = ["--engine", "disk", "--disk-cache-bytes", "lots"];
    let (_, stderr) = TestServer::start_in(&data_dir, 1, &flags)
        .err()
        .expect("not a size");
    assert!(stderr.contains("is not a byte count"), "{stderr}");
}

#[test]
fn metrics_show_the_cache_and_a_histogram_of_disk_read_latency() {
    let (_temp, data_dir) = temp_data_dir();
    let flags = ["--engine", "disk", "--http-addr", "127.0.0.1:0"];
    let mut server = start_on(&data_dir, 1, &flags);
    let mut client = server.client();
    let value = Value::Binary(vec![9u8; 700]);
    client.set(b"m", value.clone()).expect("SET");
    restart(&mut server, &data_dir, 1, &flags);
    let mut client = server.client();
    let (reads0, ..) = cache_stats(&mut client);
    for _ in 0..4 {
        assert_reads_back(&mut client, b"m", &value, "metrics");
    }
    let (reads, hits, bytes) = cache_stats(&mut client);
    assert_eq!((reads - reads0, hits), (2, 2));
    let http = http_addr(&mut server);
    let (status, page) = http_request(http, "GET", "/metrics", b"");
    assert_eq!(status, 200, "{page}");
    let sample = |name: &str| {
        page.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no sample {name} in:\n{page}"))
    };
    assert_eq!(sample("corekv_disk_cache_hits_total{shard=\"0\"}"), 2.0);
    assert_eq!(sample("corekv_disk_cache_bytes{shard=\"0\"}"), bytes as f64);
    // The shard that serves the page publishes its figures first.
    assert_eq!(
        sample("corekv_disk_read_duration_seconds_count{shard=\"0\"}"),
        reads as f64,
        "the reads from disk, the cache hits not counted"
    );
    assert_eq!(
        sample("corekv_disk_read_duration_seconds_bucket{shard=\"0\",le=\"+Inf\"}"),
        reads as f64
    );
    assert!(page.contains("# TYPE corekv_disk_read_duration_seconds histogram"));
}
