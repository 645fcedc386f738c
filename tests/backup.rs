//! Online backup (`corekv backup DIR`, docs/operations.md) through the real
//! binaries: the CLI asks a running server for a backup while clients move
//! money between accounts on every shard with cross-shard ATOMIC batches,
//! then a server started on a copy of DIR must hold a state in which the
//! balances sum to the invariant and every write acknowledged before the
//! backup began is there. A batch held between the phases of its two-phase
//! commit is in the backup whole or not at all, with either engine. Refused
//! and failed backups leave nothing behind.

mod common;

use common::{arm_failpoint, http_addr, key_on_shard, test_seed, wait_for_line, TestServer};
use corekv::client::{Client, Element, Request};
use rand::{Rng, SeedableRng};
use rmpv::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const NR_SHARDS: usize = 2;

/// Runs `corekv backup DIR --http-addr HTTP` and returns its output.
fn corekv_backup(http: SocketAddr, dir: &Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_corekv"))
        .args(["--timeout", "120", "backup"])
        .arg(dir)
        .args(["--http-addr", &http.to_string()])
        .output()
        .expect("run corekv backup")
}

fn assert_backup_succeeded(output: &Output) {
    assert!(
        output.status.success(),
        "corekv backup failed ({:?}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A server with the HTTP API, `engine` on a fresh data directory.
fn start(engine: &str) -> (TestServer, SocketAddr) {
    let mut server = TestServer::start(
        NR_SHARDS,
        &["--engine", engine, "--http-addr", "127.0.0.1:0"],
    );
    let http = http_addr(&mut server);
    (server, http)
}

/// A server on a copy of backup `dir` (the way docs/operations.md restores).
fn restore(dir: &Path, nr_shards: usize) -> (TestServer, tempfile::TempDir) {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("restored");
    copy_dir(dir, &data_dir);
    let server = TestServer::start_in(&data_dir, nr_shards, &["--engine", "log"]).unwrap_or_else(
        |(status, stderr)| panic!("a server on the backup did not start ({status:?}):\n{stderr}"),
    );
    (server, temp)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn balance(client: &mut Client, account: &[u8]) -> (i64, u64) {
    match client.getv(account).expect("GETV") {
        Some((value, version)) => (value.as_i64().expect("a balance"), version),
        None => panic!("account {} is missing", String::from_utf8_lossy(account)),
    }
}

fn total(client: &mut Client, accounts: &[Vec<u8>]) -> i64 {
    accounts.iter().map(|a| balance(client, a).0).sum()
}

/// Moves `amount` between two accounts and records `progress_key = count`
/// in the same ATOMIC batch; returns whether it committed (a CONFLICT means
/// another client moved money in between).
fn transfer(
    client: &mut Client,
    (from, to): (&[u8], &[u8]),
    amount: i64,
    (progress_key, count): (&[u8], u64),
) -> bool {
    let ((from_balance, from_version), (to_balance, to_version)) =
        (balance(client, from), balance(client, to));
    let batch = Request::Atomic(vec![
        Request::PutV(from.to_vec(), (from_balance - amount).into(), from_version),
        Request::PutV(to.to_vec(), (to_balance + amount).into(), to_version),
        Request::Set(progress_key.to_vec(), count.into()),
    ]);
    match client.call(&[batch]).expect("transfer").as_slice() {
        [Element::Done(_), Element::Done(_)] => true,
        [Element::Error { code, .. }] if code == "CONFLICT" => false,
        other => panic!("unexpected transfer reply {other:?}"),
    }
}

/// Accounts spread over every shard.
fn accounts(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| key_on_shard(&format!("account{i}"), i % NR_SHARDS, NR_SHARDS))
        .collect()
}

#[test]
fn a_backup_taken_under_cross_shard_transfers_restores_the_invariant_and_every_acknowledged_write()
{
    const NR_ACCOUNTS: usize = 8;
    const INITIAL: i64 = 1_000;
    const NR_TRANSFERRERS: usize = 4;
    /// Bounds on each client's loop, whatever happens.
    const MAX_OPS_EACH: u64 = 20_000;
    const TIME_LIMIT: Duration = Duration::from_secs(90);
    let seed = test_seed("backup under transfers");
    let (mut server, http) = start("log");
    let accounts = accounts(NR_ACCOUNTS);
    let mut setup = server.client();
    for account in &accounts {
        setup.set(account, INITIAL.into()).expect("open account");
    }
    let expected_total = INITIAL * NR_ACCOUNTS as i64;
    // What each client has had acknowledged so far: transfers committed
    // (per transferrer), keys written (the writer). Stored after each ack.
    let acked: Vec<AtomicU64> = (0..=NR_TRANSFERRERS).map(|_| AtomicU64::new(0)).collect();
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let temp = tempfile::tempdir().expect("temp dir");
    let backup_dir = temp.path().join("backup");
    let acked_before = std::thread::scope(|scope| {
        for t in 0..NR_TRANSFERRERS {
            let (accounts, acked, stop) = (&accounts, &acked[t], &stop);
            let mut client = server.client();
            scope.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed + t as u64);
                let progress_key = format!("progress-{t}").into_bytes();
                let mut committed = 0;
                for _ in 0..MAX_OPS_EACH {
                    if stop.load(Ordering::Relaxed) || started.elapsed() > TIME_LIMIT {
                        break;
                    }
                    let from = rng.gen_range(0..NR_ACCOUNTS);
                    let to = (from + rng.gen_range(1..NR_ACCOUNTS)) % NR_ACCOUNTS;
                    let pair = (&accounts[from][..], &accounts[to][..]);
                    let amount = rng.gen_range(1..50);
                    if transfer(&mut client, pair, amount, (&progress_key, committed + 1)) {
                        committed += 1;
                        acked.store(committed, Ordering::SeqCst);
                    }
                }
            });
        }
        let (writer_acked, stop) = (&acked[NR_TRANSFERRERS], &stop);
        let mut writer = server.client();
        scope.spawn(move || {
            for i in 0..MAX_OPS_EACH {
                if stop.load(Ordering::Relaxed) || started.elapsed() > TIME_LIMIT {
                    break;
                }
                let key = format!("written-{i}").into_bytes();
                writer.set(&key, i.into()).expect("SET");
                writer_acked.store(i + 1, Ordering::SeqCst);
            }
        });
        // Let the transfers get going, then note what is acknowledged and
        // ask for the backup while they go on.
        while acked[..NR_TRANSFERRERS]
            .iter()
            .any(|a| a.load(Ordering::SeqCst) < 20)
        {
            assert!(
                started.elapsed() < TIME_LIMIT,
                "the transfers do not commit"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let acked_before: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
        let output = corekv_backup(http, &backup_dir);
        // Some more traffic after the backup, then stop.
        let after: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
        while acked
            .iter()
            .zip(&after)
            .any(|(a, b)| a.load(Ordering::SeqCst) < b + 5)
            && started.elapsed() < TIME_LIMIT
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        assert_backup_succeeded(&output);
        acked_before
    });
    assert_eq!(
        total(&mut setup, &accounts),
        expected_total,
        "the live server"
    );
    let line = wait_for_line(&mut server, &["backup written to"]);
    eprintln!("{line}");
    eprintln!("acknowledged before the backup began: {acked_before:?}");

    for nr_shards in [NR_SHARDS, 3] {
        let (restored, _temp) = restore(&backup_dir, nr_shards);
        let mut client = restored.client();
        assert_eq!(
            total(&mut client, &accounts),
            expected_total,
            "the restored balances ({nr_shards} shards)"
        );
        for (t, &before) in acked_before[..NR_TRANSFERRERS].iter().enumerate() {
            let progress = client
                .get(format!("progress-{t}").as_bytes())
                .expect("GET")
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            assert!(
                progress >= before,
                "transferrer {t}: {before} transfers acknowledged before the backup, {progress} in it"
            );
        }
        for i in 0..acked_before[NR_TRANSFERRERS] {
            let value = client.get(format!("written-{i}").as_bytes()).expect("GET");
            assert_eq!(
                value,
                Some(Value::from(i)),
                "written-{i} was acknowledged before the backup"
            );
        }
    }
}

/// How a batch is held while the backup is taken.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Held {
    /// Every participant voted yes, no COMMIT yet: not in the backup at all.
    BeforeItsCommit,
    /// The COMMIT is made, no participant told yet: in the backup whole.
    AfterItsCommit,
}

/// A batch that changes keys on both shards is held by a failpoint while a
/// backup is taken; a server on the backup has all of it or none of it.
fn a_held_batch_is_whole_or_absent_in_the_backup(engine: &str, held: Held) {
    let (mut server, http) = start(engine);
    let a = key_on_shard("a", 0, NR_SHARDS);
    let b = key_on_shard("b", 1, NR_SHARDS);
    let created = key_on_shard("created", 1, NR_SHARDS);
    let mut client = server.client();
    client.set(&a, Value::from("before")).expect("SET");
    client.set(&b, Value::from("before")).expect("SET");
    let failpoint = match held {
        Held::BeforeItsCommit => "txn::before_commit",
        Held::AfterItsCommit => "txn::before_decide",
    };
    arm_failpoint(http, failpoint, "return");
    let batch = Request::Atomic(vec![
        Request::Set(a.clone(), Value::from("batch")),
        Request::Set(b.clone(), Value::from("batch")),
        Request::Set(created.clone(), Value::from("batch")),
    ]);
    let mut batch_client = server.client();
    let batch_reply = std::thread::spawn(move || batch_client.call(&[batch]));
    wait_for_line(&mut server, &[&format!("failpoint {failpoint} holds txn")]);
    let temp = tempfile::tempdir().expect("temp dir");
    let backup_dir = temp.path().join("backup");
    let output = corekv_backup(http, &backup_dir);
    arm_failpoint(http, failpoint, "");
    assert_eq!(
        batch_reply.join().expect("batch client").expect("reply"),
        []
    );
    assert_backup_succeeded(&output);

    let (restored, _temp) = restore(&backup_dir, NR_SHARDS);
    let mut client = restored.client();
    let expected = match held {
        Held::BeforeItsCommit => [Some("before"), Some("before"), None],
        Held::AfterItsCommit => [Some("batch"), Some("batch"), Some("batch")],
    };
    for (key, want) in [a, b, created].iter().zip(expected) {
        assert_eq!(
            client.get(key).expect("GET"),
            want.map(Value::from),
            "{engine} engine, held {held:?}: {}",
            String::from_utf8_lossy(key)
        );
    }
}

#[test]
fn a_batch_held_after_its_commit_is_whole_in_the_backup() {
    a_held_batch_is_whole_or_absent_in_the_backup("log", Held::AfterItsCommit);
}

#[test]
fn a_batch_held_before_its_commit_is_absent_from_the_backup() {
    a_held_batch_is_whole_or_absent_in_the_backup("log", Held::BeforeItsCommit);
}

#[test]
fn a_memory_engine_backup_holds_a_batch_held_after_its_commit_whole() {
    a_held_batch_is_whole_or_absent_in_the_backup("memory", Held::AfterItsCommit);
}

#[test]
fn a_backup_into_a_directory_that_is_not_empty_is_refused_and_changes_nothing() {
    let (_server, http) = start("log");
    let temp = tempfile::tempdir().expect("temp dir");
    let keep = temp.path().join("keep");
    std::fs::write(&keep, "mine").expect("write");
    let output = corekv_backup(http, temp.path());
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("EXISTS") && stderr.contains("not empty"),
        "{stderr}"
    );
    let entries: Vec<_> = std::fs::read_dir(temp.path()).expect("dir").collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(std::fs::read_to_string(&keep).expect("read"), "mine");
}

#[test]
fn a_failed_backup_removes_what_it_wrote_and_the_server_keeps_serving() {
    let (server, http) = start("log");
    let mut client = server.client();
    for shard in 0..NR_SHARDS {
        let key = key_on_shard("k", shard, NR_SHARDS);
        client.set(&key, Value::from(shard as u64)).expect("SET");
    }
    let temp = tempfile::tempdir().expect("temp dir");
    let empty = temp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    for (failpoint, dir) in [
        ("backup::write@1", temp.path().join("new")),
        ("backup::fdatasync@0", empty.clone()),
    ] {
        arm_failpoint(http, failpoint, "return");
        let output = corekv_backup(http, &dir);
        arm_failpoint(http, failpoint, "");
        assert_eq!(output.status.code(), Some(1), "{failpoint}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("IOERR"), "{failpoint}: {stderr}");
        if dir == empty {
            let left = std::fs::read_dir(&dir).expect("still there").count();
            assert_eq!(
                left, 0,
                "{failpoint}: the operator's empty directory is left empty"
            );
        } else {
            assert!(!dir.exists(), "{failpoint}: {} is left", dir.display());
        }
        client
            .set(b"after", Value::from(failpoint))
            .expect("still serving");
    }
    let output = corekv_backup(http, &empty);
    assert_backup_succeeded(&output);
    let (restored, _temp) = restore(&empty, NR_SHARDS);
    let mut client = restored.client();
    assert_eq!(
        client.get(b"after").expect("GET"),
        Some(Value::from("backup::fdatasync@0"))
    );
}

#[test]
fn a_relative_backup_directory_is_a_usage_error() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_corekv"))
        .args(["backup", "backups/today", "--http-addr", "127.0.0.1:1"])
        .output()
        .expect("run corekv");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("absolute path on the server's host"),
        "{stderr}"
    );
}
