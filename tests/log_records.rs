//! Records of every size, wherever they fall in a log file, through the real
//! server: values on both sides of the recovery reader's 1 MiB buffer and up to
//! the frame limit, as the first record of a fresh log, in the middle of one,
//! as the first record of a file compaction wrote and of files a shard-count
//! change wrote; then a clean restart (SIGTERM) or a crash (kill -9), and every
//! acknowledged value must come back byte for byte.
//!
//! Also the torn tails an attacker can shape: a value that holds a perfect
//! image of a log record, torn by a crash, and a value built to make every
//! offset look like a record header. Both are a torn tail: the server starts,
//! drops only the torn write, and keeps everything before it.

mod common;

use common::logs::{cut_to, log_path};
use common::TestServer;
use corekv::client::Client;
use corekv::log::format::{self, Effect, FileStart, Framing};
use rmpv::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// The recovery reader's buffer (src/log/replay.rs).
const CHUNK: usize = 1 << 20;
/// The frame limit these tests run with.
const MAX_FRAME: usize = 16 << 20;
/// Bytes a PUT record takes besides its key and the value's payload: record
/// header, kind, key length, version, value length, and msgpack's bin32 header.
const PUT_RECORD_OVERHEAD: usize = format::HEADER_BYTES + 1 + 4 + 8 + 4 + 5;

fn start(data_dir: &Path, nr_shards: usize, extra: &[&str]) -> TestServer {
    let max_frame = MAX_FRAME.to_string();
    let mut args = vec!["--engine", "log", "--max-frame-bytes", &max_frame];
    args.extend_from_slice(extra);
    TestServer::start_in(data_dir, nr_shards, &args)
        .unwrap_or_else(|(status, stderr)| panic!("server did not start ({status:?}):\n{stderr}"))
}

/// A value whose PUT record under `key` takes exactly `record_bytes` bytes.
fn value_for_record(key: &[u8], record_bytes: usize, fill: u8) -> Vec<u8> {
    vec![fill; record_bytes - PUT_RECORD_OVERHEAD - key.len()]
}

/// Record sizes around the reader's buffer (the first record of a file starts
/// after the 32-byte file header) and beyond it, up to the frame limit.
fn boundary_record_sizes() -> Vec<usize> {
    let at_buffer_end = CHUNK - format::FILE_HEADER_BYTES;
    vec![
        at_buffer_end - 7,
        at_buffer_end - 1,
        at_buffer_end,
        at_buffer_end + 1,
        CHUNK - 7,
        CHUNK,
        CHUNK + 1,
        2 * CHUNK,
        8 * CHUNK,
        MAX_FRAME - 64,
    ]
}

fn assert_value(client: &mut Client, key: &[u8], expected: &[u8], context: &str) {
    match client.get(key) {
        Ok(Some(Value::Binary(found))) => assert!(
            found == expected,
            "{context}: {} has {} bytes, expected {}",
            String::from_utf8_lossy(key),
            found.len(),
            expected.len()
        ),
        other => panic!(
            "{context}: {} is {other:?}, expected {} bytes",
            String::from_utf8_lossy(key),
            expected.len()
        ),
    }
}

/// Stops the server with `signal` and restarts it on the same directory.
fn restart(server: &mut TestServer, signal: i32, nr_shards: usize, extra: &[&str]) -> TestServer {
    let data_dir = server.data_dir.clone();
    server.stop_with(signal);
    start(&data_dir, nr_shards, extra)
}

#[test]
fn a_value_of_any_size_survives_a_restart_as_the_first_record_of_a_log() {
    for record_bytes in boundary_record_sizes() {
        for signal in [libc::SIGTERM, libc::SIGKILL] {
            let temp = tempfile::tempdir().expect("temp dir");
            let data_dir = temp.path().join("data");
            let context = format!("a {record_bytes}-byte record, signal {signal}");
            let big = value_for_record(b"big", record_bytes, 0xb1);
            let mut server = start(&data_dir, 1, &[]);
            server
                .client()
                .set(b"big", Value::Binary(big.clone()))
                .expect("set");
            let server = restart(&mut server, signal, 1, &[]);
            assert_value(&mut server.client(), b"big", &big, &context);
        }
    }
}

#[test]
fn a_value_of_any_size_survives_a_restart_in_the_middle_of_a_log() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let mut server = start(&data_dir, 1, &[]);
    let mut expected = Vec::new();
    {
        let mut client = server.client();
        for (i, record_bytes) in boundary_record_sizes().into_iter().enumerate() {
            for (key, value) in [
                (format!("small-{i}"), vec![i as u8; 10]),
                (
                    format!("big-{i}"),
                    value_for_record(b"big-00", record_bytes, i as u8),
                ),
            ] {
                client
                    .set(key.as_bytes(), Value::Binary(value.clone()))
                    .expect("set");
                expected.push((key, value));
            }
        }
        client
            .set(b"last", Value::Binary(b"small".to_vec()))
            .expect("set");
        expected.push(("last".into(), b"small".to_vec()));
    }
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        server = restart(&mut server, signal, 1, &[]);
        let mut client = server.client();
        for (key, value) in &expected {
            assert_value(
                &mut client,
                key.as_bytes(),
                value,
                &format!("signal {signal}"),
            );
        }
    }
}

/// Waits (bounded) until the server has logged `count` lines containing `needle`.
fn wait_for_lines(server: &mut TestServer, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.stderr().matches(needle).count() < count {
        assert!(
            Instant::now() < deadline,
            "no {count} '{needle}' lines within 30 s:\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_big_value_survives_as_the_first_record_of_a_compacted_log() {
    for record_bytes in [CHUNK - 7, CHUNK + 1, 2 * CHUNK, 8 * CHUNK] {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().join("data");
        let flags = ["--compact-min-bytes", "1MiB"];
        let mut server = start(&data_dir, 1, &flags);
        let mut client = server.client();
        let mut big = Vec::new();
        // The only key, overwritten until the log is over twice its size: the
        // snapshot holds it as its first (and only) record.
        for round in 0..4u8 {
            big = value_for_record(b"big", record_bytes, round);
            client.set(b"big", Value::Binary(big.clone())).expect("set");
        }
        wait_for_lines(&mut server, "compacted", 1);
        drop(client);
        let server = restart(&mut server, libc::SIGTERM, 1, &flags);
        assert_value(
            &mut server.client(),
            b"big",
            &big,
            &format!("{record_bytes}-byte record after compaction"),
        );
    }
}

#[test]
fn big_values_survive_as_the_first_records_of_logs_a_shard_count_change_wrote() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let mut server = start(&data_dir, 1, &[]);
    let values: Vec<(Vec<u8>, Vec<u8>)> = [CHUNK - 7, CHUNK + 1, 2 * CHUNK]
        .into_iter()
        .enumerate()
        .map(|(i, size)| {
            (
                format!("big-{i}").into_bytes(),
                value_for_record(b"big-0", size, i as u8),
            )
        })
        .collect();
    {
        let mut client = server.client();
        for (key, value) in &values {
            client.set(key, Value::Binary(value.clone())).expect("set");
        }
    }
    for nr_shards in [2, 3, 1] {
        server = restart(&mut server, libc::SIGTERM, nr_shards, &[]);
        let mut client = server.client();
        for (key, value) in &values {
            assert_value(&mut client, key, value, &format!("{nr_shards} shards"));
        }
    }
}

/// A PUT record image for the log file at `path`, as the file's own writer
/// would frame it: the strongest forgery a value could carry.
fn record_image(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).expect("read log");
    let mut image = Vec::new();
    format::write_effect(
        &mut image,
        &Effect::Put {
            key: b"forged",
            version: 99,
            value: b"\xa4evil",
            deadline: None,
        },
    );
    match format::read_file_header(&bytes) {
        FileStart::Header(Framing::Epoch(epoch)) => {
            format::stamp(&mut image, epoch);
        }
        // A corekv 0.1 log: 8-byte record headers.
        _ => {
            image.drain(8..12);
        }
    }
    image
}

#[test]
fn a_torn_value_that_holds_a_record_image_is_cut_and_the_server_starts() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let mut server = start(&data_dir, 1, &[]);
    let mut client = server.client();
    client.set(b"before", Value::from("kept")).expect("set");
    let log = log_path(&data_dir, 0);
    let image = record_image(&log);
    let mut value = Vec::new();
    while value.len() < 2 * CHUNK {
        value.extend_from_slice(&[0x90; 100]);
        value.extend_from_slice(&image);
    }
    let intact_len = std::fs::metadata(&log).expect("log").len();
    client.set(b"victim", Value::Binary(value)).expect("set");
    drop(client);
    server.stop_with(libc::SIGKILL);
    // The crash tore the big write: its last half never reached the file.
    let written = std::fs::metadata(&log).expect("log").len();
    cut_to(&log, intact_len + (written - intact_len) / 2);
    let mut server = start(&data_dir, 1, &[]);
    let mut client = server.client();
    assert_eq!(
        client.get(b"before").expect("get"),
        Some(Value::from("kept"))
    );
    assert_eq!(client.get(b"victim").expect("get"), None);
    assert_eq!(client.get(b"forged").expect("get"), None);
    assert!(server.stderr().contains("cutting"), "{}", server.stderr());
}

/// A 12 MiB value of `00 10 10 00` makes every offset claim a plausible record
/// length; torn, with its record header damaged too, recovery must still look
/// past it in time linear in its size (the reply timeout bounds the wait; the
/// unit tests in src/log/replay.rs count the work exactly).
#[test]
fn a_torn_value_built_to_look_like_headers_everywhere_is_cut_promptly() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let mut server = start(&data_dir, 1, &[]);
    let mut client = server.client();
    for i in 0..100 {
        client
            .set(format!("key-{i}").as_bytes(), Value::from(i))
            .expect("set");
    }
    let log = log_path(&data_dir, 0);
    let intact_len = std::fs::metadata(&log).expect("log").len();
    let value = [0x00, 0x10, 0x10, 0x00].repeat(3 << 20);
    client.set(b"pattern", Value::Binary(value)).expect("set");
    drop(client);
    server.stop_with(libc::SIGKILL);
    let written = std::fs::metadata(&log).expect("log").len();
    cut_to(&log, written - CHUNK as u64);
    let mut bytes = std::fs::read(&log).expect("read log");
    bytes[intact_len as usize] ^= 0x01; // the torn record's length
    std::fs::write(&log, &bytes).expect("write log");
    let server = start(&data_dir, 1, &[]);
    let mut client = server.client();
    for i in 0..100 {
        assert_eq!(
            client.get(format!("key-{i}").as_bytes()).expect("get"),
            Some(Value::from(i))
        );
    }
    assert_eq!(client.get(b"pattern").expect("get"), None);
}

/// The log is allocated ahead of its writer, so after a crash its file ends in
/// zeros. A record torn inside that space is cut; the zeros after an intact
/// log are kept (no warning), and appends continue over them.
#[test]
fn a_torn_record_inside_space_allocated_ahead_is_cut_and_the_zeros_after_are_kept() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let mut server = start(&data_dir, 1, &[]);
    let mut client = server.client();
    for i in 0..50 {
        client
            .set(format!("k{i}").as_bytes(), Value::from(i))
            .expect("set");
    }
    client
        .set(b"last", Value::Binary(vec![7; 300]))
        .expect("set");
    drop(client);
    server.stop_with(libc::SIGKILL);
    let log = log_path(&data_dir, 0);
    let mut bytes = std::fs::read(&log).expect("read log");
    let (last_start, end) = {
        let (_, records, end) = format::parse_file(&bytes).expect("a log");
        (records.last().expect("records").0, end)
    };
    assert!(
        bytes.len() > end && bytes[end..].iter().all(|&b| b == 0),
        "the file is allocated ahead of its records ({} bytes, records end at {end})",
        bytes.len()
    );
    // A crash in the middle of the last record's write: its end never made it.
    bytes[end - 100..end].fill(0);
    std::fs::write(&log, &bytes).expect("write log");
    let mut server = start(&data_dir, 1, &[]);
    assert!(server.stderr().contains("cutting"), "{}", server.stderr());
    let mut client = server.client();
    assert_eq!(client.get(b"k49").expect("get"), Some(Value::from(49)));
    assert_eq!(client.get(b"last").expect("get"), None);
    assert_eq!(
        std::fs::metadata(&log).expect("log").len(),
        last_start as u64,
        "cut back to the last intact record"
    );
    // Writes continue at the cut; a clean restart finds an intact log ending
    // in zeros, and says nothing about it.
    client.set(b"after", Value::from("cut")).expect("set");
    drop(client);
    server.stop_with(libc::SIGTERM);
    let mut server = start(&data_dir, 1, &[]);
    assert!(!server.stderr().contains("cutting"), "{}", server.stderr());
    assert_eq!(
        server.client().get(b"after").expect("get"),
        Some(Value::from("cut"))
    );
}

/// Records from another log file (as a file reused from an older log would
/// hold) are never taken for this file's, wherever they lie after its end.
#[test]
fn records_of_another_file_after_the_end_of_the_log_are_not_resurrected() {
    let temp = tempfile::tempdir().expect("temp dir");
    let (old_dir, data_dir) = (temp.path().join("old"), temp.path().join("data"));
    for dir in [&old_dir, &data_dir] {
        let mut server = start(dir, 1, &[]);
        let mut client = server.client();
        let tag = dir.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        for i in 0..40 {
            client
                .set(format!("{tag}-{i}").as_bytes(), Value::from(i))
                .expect("set");
        }
        drop(client);
        server.stop_with(libc::SIGTERM);
    }
    let old = std::fs::read(log_path(&old_dir, 0)).expect("old log");
    let (_, _, old_end) = format::parse_file(&old).expect("old log");
    let log = log_path(&data_dir, 0);
    let mut bytes = std::fs::read(&log).expect("log");
    let (_, _, end) = format::parse_file(&bytes).expect("log");
    // The old file's records, placed right where this log ends.
    let stale = &old[format::FILE_HEADER_BYTES..old_end];
    bytes.truncate(end);
    bytes.extend_from_slice(stale);
    std::fs::write(&log, &bytes).expect("write log");
    let server = start(&data_dir, 1, &[]);
    let mut client = server.client();
    assert_eq!(client.get(b"data-39").expect("get"), Some(Value::from(39)));
    for i in 0..40 {
        assert_eq!(
            client.get(format!("old-{i}").as_bytes()).expect("get"),
            None,
            "old-{i} came back from another file's records"
        );
    }
}
