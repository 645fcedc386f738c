//! Data directories a log-engine server cannot use are refused with a clear
//! error, and a refused start changes nothing in them: a file instead of a
//! directory, a missing shard log, a SHARDS file with garbage, a directory of
//! the other engine.

mod common;

use common::crash::{assert_mentions, start_log, start_refused, stop, temp_data_dir};
use common::keys::keys_on_every_shard;
use common::logs::{log_path, snapshot};
use common::TestServer;
use std::path::PathBuf;

#[test]
fn a_data_dir_that_is_a_file_is_refused_with_a_clear_error() {
    let temp = tempfile::tempdir().expect("temp dir");
    let path = temp.path().join("not-a-dir");
    std::fs::write(&path, "hello").expect("write file");
    let stderr = start_refused(&path, 2, &[]);
    assert_mentions(&stderr, &[&path.display().to_string()]);
    assert_eq!(std::fs::read(&path).expect("file"), b"hello");
}

/// A data dir with a few keys on 2 shards, stopped.
fn small_log_dir() -> (tempfile::TempDir, PathBuf) {
    let (temp, data_dir) = temp_data_dir();
    let mut server = start_log(&data_dir, 2, &[]);
    let mut client = server.client();
    for key in keys_on_every_shard("small", 6, 2) {
        client.set(&key, "v".into()).expect("SET");
    }
    drop(client);
    stop(&mut server, libc::SIGTERM);
    (temp, data_dir)
}

#[test]
fn a_missing_shard_log_is_refused_by_name_and_nothing_is_recreated() {
    let (_temp, data_dir) = small_log_dir();
    std::fs::remove_file(log_path(&data_dir, 1)).expect("remove shard-1.log");
    let before = snapshot(&data_dir);
    let stderr = start_refused(&data_dir, 2, &[]);
    assert_mentions(&stderr, &["shard-1.log", "missing"]);
    assert!(
        before == snapshot(&data_dir),
        "a refused start changed the data directory"
    );
}

#[test]
fn a_shards_file_with_garbage_is_refused() {
    let (_temp, data_dir) = small_log_dir();
    for garbage in ["two\n", "0\n", "", "-1\n", "\u{1}\u{2}\u{3}"] {
        std::fs::write(data_dir.join("log").join("SHARDS"), garbage).expect("write SHARDS");
        let before = snapshot(&data_dir);
        let stderr = start_refused(&data_dir, 2, &[]);
        assert_mentions(&stderr, &["SHARDS", "not a shard count"]);
        assert!(
            before == snapshot(&data_dir),
            "SHARDS {garbage:?}: a refused start changed the data directory"
        );
    }
}

#[test]
fn a_log_data_dir_refuses_the_memory_engine_and_a_memory_one_the_log_engine() {
    let (_temp, log_dir) = small_log_dir();
    let (status, stderr) = TestServer::start_in(&log_dir, 2, &["--engine", "memory"])
        .err()
        .expect("refused");
    assert!(
        status.is_some_and(|s| !s.success()),
        "{status:?}:\n{stderr}"
    );
    assert_mentions(&stderr, &["--engine log", "--engine memory"]);
    let (_temp2, memory_dir) = temp_data_dir();
    TestServer::start_in(&memory_dir, 2, &["--engine", "memory"])
        .expect("memory server")
        .stop_with(libc::SIGTERM);
    let stderr = start_refused(&memory_dir, 2, &[]);
    assert_mentions(&stderr, &["--engine memory", "--engine log"]);
    assert!(
        !memory_dir.join("log").exists(),
        "a refused start created a log directory"
    );
}
