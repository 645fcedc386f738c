//! Online compaction where it is hard: with a cross-shard batch prepared on the
//! shard being compacted, and when compaction fails or the disk is nearly
//! full. Real `corekv-server` processes with failpoints (see src/failpoint.rs)
//! armed over the HTTP API, killed with SIGKILL and restarted.
//!
//! What must hold:
//! - a batch held between its PREPAREs and its COMMIT (or between its COMMIT
//!   and its DECIDEs) does not stop either shard from compacting, and comes
//!   back after kill -9 exactly as decided: committed if its COMMIT was safe,
//!   dropped otherwise, never in part;
//! - a compaction that fails at any step leaves no `.compact` file, leaves the
//!   live log writable, and the next one succeeds once the fault is gone;
//! - on a nearly full file system compaction is skipped (or fails cleanly), the
//!   live log keeps taking writes that fit, and compaction runs again once
//!   there is room;
//! - a switch whose tail (the records appended while the snapshot was
//!   written) is many MiB copies it a chunk at a time, a record larger than
//!   a chunk whole, and every acknowledged write comes back byte for byte.
//!
//! Timeouts here only turn a hang into a failure; nothing asserts on time.

mod common;

use common::random_bin;

use common::logs::log_path;
use common::{
    arm_failpoint, count_lines, force_compaction, key_on_shard, nr_compactions,
    start_log_with_http as start, wait_for_line,
};
use corekv::client::{Client, Request};
use corekv::log::tail_copy::CHUNK_BYTES;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rmpv::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Small enough that a few 16 KiB overwrites make a log due.
const SMALL_COMPACT_MIN: &str = "64KiB";

/// A value of `text` and 100 bytes more: the disk engine keeps values
/// this large on disk only (smaller ones stay in memory as well), so its
/// compactions move them.
fn value(text: &str) -> Value {
    Value::from(format!("{text}:{}", "v".repeat(100)))
}

/// Names of the `.compact` files in the log directory.
fn compact_files(data_dir: &Path) -> Vec<String> {
    std::fs::read_dir(data_dir.join("log"))
        .expect("read the log directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".compact"))
        .collect()
}

/// A key's state as GETV answers it: `Some((value, version))`, or None if absent.
type State = Option<(Value, u64)>;

/// Asserts each key's state.
fn assert_states(client: &mut Client, expected: &[(&[u8], State)], context: &str) {
    for (key, state) in expected {
        assert_eq!(
            &client.getv(key).expect("GETV"),
            state,
            "{context}: key {}",
            String::from_utf8_lossy(key)
        );
    }
}

// ---------------------------------------------------------------------------
// A batch prepared across a compaction
// ---------------------------------------------------------------------------

/// How the held batch ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    /// Held before its COMMIT, released, acknowledged, then kill -9.
    CommittedThenKilled,
    /// Held before its COMMIT and killed there: no COMMIT anywhere.
    KilledBeforeItsCommit,
    /// Held after its COMMIT is safe, before any DECIDE, and killed there:
    /// recovery completes it from the COMMIT.
    KilledAfterItsCommit,
}

/// A batch that changes, deletes and creates keys on both shards is held by a
/// failpoint while both shards compact (each snapshot must hold the keys'
/// committed states and the batch's share as a PREPARE); then it ends as
/// `ending` says and the server restarts from the compacted logs.
fn a_batch_prepared_across_compaction(ending: Ending) {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let flags = ["--compact-min-bytes", SMALL_COMPACT_MIN];
    let (mut server, http) = start(&data_dir, 2, &flags);
    let changed_0 = key_on_shard("changed", 0, 2);
    let deleted_0 = key_on_shard("deleted", 0, 2);
    let changed_1 = key_on_shard("changed", 1, 2);
    let created_1 = key_on_shard("created", 1, 2);
    let mut client = server.client();
    for key in [&changed_0, &deleted_0, &changed_1] {
        client.set(key, value("before")).expect("SET");
    }
    let failpoint = match ending {
        Ending::KilledAfterItsCommit => "txn::before_decide",
        _ => "txn::before_commit",
    };
    arm_failpoint(http, failpoint, "return");
    let batch = Request::Atomic(vec![
        Request::Set(changed_0.clone(), value("batch")),
        Request::Del(deleted_0.clone()),
        Request::Set(changed_1.clone(), value("batch")),
        Request::Set(created_1.clone(), value("batch")),
    ]);
    let mut batch_client = server.client();
    let batch_reply = std::thread::spawn(move || batch_client.call(&[batch]));
    wait_for_line(&mut server, &[&format!("failpoint {failpoint} holds txn")]);
    // Both shards hold the batch's keys while they compact.
    let fillers: Vec<_> = (0..2)
        .map(|shard| force_compaction(&mut server, &mut client, shard, 2))
        .collect();
    let context = format!("{ending:?}");
    let before = Some((value("before"), 1));
    let batch = Some((value("batch"), 2));
    let expected: Vec<(&[u8], State)> = match ending {
        Ending::KilledBeforeItsCommit => vec![
            (&changed_0, before.clone()),
            (&deleted_0, before.clone()),
            (&changed_1, before),
            (&created_1, None),
        ],
        _ => vec![
            (&changed_0, batch.clone()),
            (&deleted_0, None),
            (&changed_1, batch),
            (&created_1, Some((value("batch"), 1))),
        ],
    };
    if ending == Ending::CommittedThenKilled {
        arm_failpoint(http, failpoint, "");
        let reply = batch_reply.join().expect("batch client");
        assert_eq!(reply.expect("the batch commits"), [], "{context}");
        // Read where the compactions left them (the disk engine: in the
        // PREPARE records the snapshots carried).
        assert_states(
            &mut client,
            &expected,
            &format!("{context}, before the kill"),
        );
    }
    drop(client);
    server.stop_with(libc::SIGKILL);
    let (mut server, _) = start(&data_dir, 2, &flags);
    let mut client = server.client();
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_states(&mut client, &expected, &context);
        for (filler, filler_value, version) in &fillers {
            let filler_state = Some((filler_value.clone(), *version));
            assert_states(&mut client, &[(filler, filler_state)], &context);
        }
    }));
    if let Err(panic) = checked {
        eprintln!("server stderr after the restart:\n{}", server.stderr());
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn a_batch_prepared_while_both_shards_compact_commits_whole_after_kill_9() {
    a_batch_prepared_across_compaction(Ending::CommittedThenKilled);
}

#[test]
fn a_batch_still_prepared_at_kill_9_after_both_shards_compacted_is_dropped_whole() {
    a_batch_prepared_across_compaction(Ending::KilledBeforeItsCommit);
}

#[test]
fn a_batch_committed_but_undecided_at_kill_9_after_both_shards_compacted_is_completed() {
    a_batch_prepared_across_compaction(Ending::KilledAfterItsCommit);
}

// ---------------------------------------------------------------------------
// A compaction that fails
// ---------------------------------------------------------------------------

/// Overwrites of this many 16 KiB values take a log past 64 KiB and past
/// twice its live data.
const OVERWRITES_TO_BE_DUE: u8 = 10;

/// Arms `failpoint` on shard 0 and makes its log due: the compaction fails.
/// Then: no `.compact` file, writes still acknowledged, and once disarmed the
/// next compaction succeeds; after kill -9 every acknowledged write is there.
fn a_failed_compaction_leaves_the_log_writable(failpoint: &str, action: &str) {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let flags = ["--compact-min-bytes", SMALL_COMPACT_MIN];
    let (mut server, http) = start(&data_dir, 2, &flags);
    let (key_0, key_1) = (key_on_shard("k", 0, 2), key_on_shard("k", 1, 2));
    let filler = key_on_shard("churn", 0, 2);
    let mut client = server.client();
    client.set(&key_1, value("one")).expect("SET on shard 1");
    arm_failpoint(http, &format!("{failpoint}@0"), action);
    // One message: shard 0 runs its requests without a pause, so the log grows
    // once, before any compaction attempt. Nothing more is written until the
    // check below, and a failed compaction is retried only once the log has
    // grown: no new attempt can be under way then.
    let overwrites: Vec<Request> = (0..OVERWRITES_TO_BE_DUE)
        .map(|i| {
            Request::Set(
                filler.clone(),
                Value::Binary(vec![i; common::FILLER_VALUE_BYTES]),
            )
        })
        .collect();
    assert_eq!(client.call(&overwrites).expect("SET filler"), []);
    let failure = wait_for_line(&mut server, &["compaction of", "shard-0.log", "failed"]);
    assert_eq!(
        compact_files(&data_dir),
        Vec::<String>::new(),
        "{failpoint}: after {failure:?}"
    );
    assert_eq!(
        count_lines(&mut server, &["poisoned"]),
        0,
        "{failpoint}: the failed compaction poisoned the log:\n{}",
        server.stderr()
    );
    client
        .set(&key_0, value("after the failure"))
        .expect("the live log still takes writes");
    arm_failpoint(http, &format!("{failpoint}@0"), "");
    let (filler, filler_value, filler_version) = force_compaction(&mut server, &mut client, 0, 2);
    drop(client);
    server.stop_with(libc::SIGKILL);
    let (mut server, _) = start(&data_dir, 2, &flags);
    let mut client = server.client();
    let expected: [(&[u8], _); 3] = [
        (&key_0, Some((value("after the failure"), 1))),
        (&key_1, Some((value("one"), 1))),
        (&filler, Some((filler_value, filler_version))),
    ];
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_states(&mut client, &expected, failpoint);
    }));
    if let Err(panic) = checked {
        eprintln!("server stderr after the restart:\n{}", server.stderr());
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn a_compaction_that_cannot_create_its_file_leaves_the_log_writable() {
    a_failed_compaction_leaves_the_log_writable("compaction::create", "return");
}

#[test]
fn a_compaction_whose_write_finds_the_disk_full_removes_its_file_and_leaves_the_log_writable() {
    a_failed_compaction_leaves_the_log_writable("compaction::write", "return(ENOSPC)");
}

#[test]
fn a_compaction_whose_fdatasync_fails_removes_its_file_and_leaves_the_log_writable() {
    a_failed_compaction_leaves_the_log_writable("compaction::fdatasync", "return");
}

#[test]
fn a_compaction_whose_rename_fails_removes_its_file_and_leaves_the_log_writable() {
    a_failed_compaction_leaves_the_log_writable("compaction::rename", "return");
}

/// The rename has happened when the directory sync fails: the new file is the
/// log, and writes after it must land there (not in the replaced file).
#[test]
fn a_compaction_whose_directory_sync_fails_keeps_the_new_file_and_the_log_writable() {
    a_failed_compaction_leaves_the_log_writable("compaction::dir_fsync", "return");
}

// ---------------------------------------------------------------------------
// A long tail
// ---------------------------------------------------------------------------

/// A value larger than a chunk of the switch's copy: its record is copied whole.
const BIG_VALUE_BYTES: usize = CHUNK_BYTES + (2 << 20);
/// The tail's other values are up to this large, random in size.
const TAIL_VALUE_MAX_BYTES: usize = 256 * 1024;
/// Writes in the tail, sent this many to a message.
const TAIL_WRITES: usize = 120;
const TAIL_WRITES_PER_MESSAGE: usize = 8;

/// The keys a test wrote and what each must hold: value and version, or
/// nothing (deleted).
type Expected = BTreeMap<Vec<u8>, State>;

/// Sends `writes` in one message, asserts all were acknowledged, and records
/// them in `expected`.
fn write_acknowledged(client: &mut Client, writes: Vec<Request>, expected: &mut Expected) {
    assert_eq!(client.call(&writes).expect("the writes"), []);
    record(writes, expected);
}

fn record(writes: Vec<Request>, expected: &mut Expected) {
    for write in writes {
        match write {
            Request::Set(key, value) => {
                let version = match expected.get(&key) {
                    Some(Some((_, version))) => version + 1,
                    _ => 1,
                };
                expected.insert(key, Some((value, version)));
            }
            Request::Del(key) => {
                expected.insert(key, None);
            }
            other => unreachable!("only SET and DEL are written here, not {other:?}"),
        }
    }
}

fn assert_expected(server: &mut common::TestServer, expected: &Expected, context: &str) {
    let mut client = server.client();
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for (key, state) in expected {
            // Compared without printing megabytes of values on a mismatch.
            let found = client.getv(key).expect("GETV");
            assert!(
                &found == state,
                "{context}: key {} holds {:?} (version), expected {:?}",
                String::from_utf8_lossy(key),
                found.as_ref().map(|(_, version)| version),
                state.as_ref().map(|(_, version)| version),
            );
        }
    }));
    if let Err(panic) = checked {
        eprintln!("server stderr:\n{}", server.stderr());
        std::panic::resume_unwind(panic);
    }
}

/// What the switch's log line says it copied: bytes, chunks, largest chunk.
fn switch_copy(server: &mut common::TestServer) -> (u64, u64, u64) {
    let line = wait_for_line(server, &["compaction switch copied"]);
    let number_after = |word: &str| -> u64 {
        line.split(word)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number after {word:?} in {line:?}"))
    };
    (
        number_after("copied "),
        number_after(" in "),
        number_after("the largest "),
    )
}

/// The flags of the long-tail tests: compaction is due early, and the switch
/// logs what it copied.
const LONG_TAIL_FLAGS: [&str; 4] = [
    "--compact-min-bytes",
    SMALL_COMPACT_MIN,
    "--log",
    "info,corekv::log::writer=debug",
];

/// A one-shard server whose compaction has written its snapshot and is held
/// before its switch, with many MiB appended since (the tail the switch will
/// copy): values of random sizes, one larger than a chunk, overwrites and
/// deletes, all acknowledged and in `expected`. With `delete_all`, the tail
/// ends by deleting its keys, so little of the log is live.
struct HeldBeforeSwitch {
    server: common::TestServer,
    http: std::net::SocketAddr,
    client: Client,
    rng: StdRng,
    expected: Expected,
    tail_bytes: usize,
}

fn hold_before_switch(data_dir: &Path, test: &str, delete_all: bool) -> HeldBeforeSwitch {
    let mut rng = StdRng::seed_from_u64(common::test_seed(test));
    let (mut server, http) = start(data_dir, 1, &LONG_TAIL_FLAGS);
    let mut client = server.client();
    let mut expected = Expected::new();
    arm_failpoint(http, "compaction::before_switch@0", "return");
    let overwrites: Vec<Request> = (0..OVERWRITES_TO_BE_DUE)
        .map(|i| {
            Request::Set(
                b"churn".to_vec(),
                random_bin(&mut rng, 16 * 1024 + i as usize),
            )
        })
        .collect();
    write_acknowledged(&mut client, overwrites, &mut expected);
    wait_for_line(&mut server, &["failpoint compaction::before_switch holds"]);
    let tail_key = |i: usize| format!("tail-{i}").into_bytes();
    let mut tail_bytes = 0;
    for first in (0..TAIL_WRITES).step_by(TAIL_WRITES_PER_MESSAGE) {
        let writes: Vec<Request> = (first..first + TAIL_WRITES_PER_MESSAGE)
            .map(|i| match i {
                _ if i == TAIL_WRITES / 2 => {
                    Request::Set(tail_key(i), random_bin(&mut rng, BIG_VALUE_BYTES))
                }
                // Overwrites and deletes of keys written earlier in the tail.
                _ if i % 10 == 9 => Request::Set(tail_key(i - 5), random_bin(&mut rng, 100)),
                _ if i % 10 == 7 => Request::Del(tail_key(i - 4)),
                _ => {
                    // At least half the maximum: the tail always spans well over
                    // four chunks, whatever the seed.
                    let len = rng.gen_range(TAIL_VALUE_MAX_BYTES / 2..=TAIL_VALUE_MAX_BYTES);
                    Request::Set(tail_key(i), random_bin(&mut rng, len))
                }
            })
            .collect();
        tail_bytes += writes
            .iter()
            .map(|w| match w {
                Request::Set(_, Value::Binary(bytes)) => bytes.len(),
                _ => 0,
            })
            .sum::<usize>();
        write_acknowledged(&mut client, writes, &mut expected);
    }
    if delete_all {
        let live: Vec<Vec<u8>> = expected
            .iter()
            .filter(|(key, state)| key.starts_with(b"tail-") && state.is_some())
            .map(|(key, _)| key.clone())
            .collect();
        let deletes = live.into_iter().map(Request::Del).collect();
        write_acknowledged(&mut client, deletes, &mut expected);
    }
    assert!(tail_bytes > 4 * CHUNK_BYTES, "a tail of {tail_bytes} bytes");
    HeldBeforeSwitch {
        server,
        http,
        client,
        rng,
        expected,
        tail_bytes,
    }
}

/// Writes appended while the switch is held after copying the tail (one of
/// them larger than a chunk), and the thread waiting for their replies,
/// which come once the switch ends. Returns once they are appended.
type WritesDuringSwitch = (
    Vec<Request>,
    std::thread::JoinHandle<corekv::client::Result<Vec<corekv::client::Element>>>,
);

fn append_during_switch(held: &mut HeldBeforeSwitch) -> WritesDuringSwitch {
    wait_for_line(
        &mut held.server,
        &["failpoint compaction::tail_copied holds"],
    );
    let during: Vec<Request> = (0..4)
        .map(|i| {
            let len = if i == 2 {
                BIG_VALUE_BYTES
            } else {
                1000 * i + 1
            };
            let value = random_bin(&mut held.rng, len);
            Request::Set(format!("during-{i}").into_bytes(), value)
        })
        .collect();
    let last_key = format!("during-{}", during.len() - 1).into_bytes();
    let mut during_client = held.server.client();
    let sent = during.clone();
    let replies = std::thread::spawn(move || during_client.call(&sent));
    // Reads see a write once it is appended, before it is safe.
    let appended = (0..500).any(|_| {
        let found = held.client.get(&last_key).expect("GET").is_some();
        if !found {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        found
    });
    assert!(appended, "the writes during the switch were not appended");
    (during, replies)
}

/// Waits for the replies to the writes made during the switch: all acknowledged.
fn acknowledged((during, replies): WritesDuringSwitch, expected: &mut Expected) {
    let replies = replies.join().expect("the client during the switch");
    assert_eq!(replies.expect("the writes during the switch"), []);
    record(during, expected);
}

/// Kills the server with SIGKILL, restarts it and checks every write, then
/// again after a clean stop.
fn restarts_keep_every_write(mut server: common::TestServer, data_dir: &Path, expected: &Expected) {
    server.stop_with(libc::SIGKILL);
    let (mut server, _) = start(data_dir, 1, &LONG_TAIL_FLAGS);
    assert_expected(&mut server, expected, "after kill -9");
    server.stop_with(libc::SIGTERM);
    let (mut server, _) = start(data_dir, 1, &LONG_TAIL_FLAGS);
    assert_expected(&mut server, expected, "after a restart");
}

/// A compaction held after writing its snapshot while many MiB are written
/// (the tail), then held again in its switch, once the tail is copied, while
/// more is written (the records appended during the switch, one of them
/// larger than a chunk too). The switch copies chunk by chunk, none larger
/// than a chunk unless it is a single record, and every acknowledged write
/// is there byte for byte: right after, after kill -9, and after a restart.
#[test]
fn a_compaction_whose_tail_spans_many_chunks_keeps_every_acknowledged_write_byte_exact() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let mut held = hold_before_switch(
        &data_dir,
        "a_compaction_whose_tail_spans_many_chunks",
        false,
    );
    arm_failpoint(held.http, "compaction::tail_copied@0", "return");
    arm_failpoint(held.http, "compaction::before_switch@0", "");
    let during = append_during_switch(&mut held);
    arm_failpoint(held.http, "compaction::tail_copied@0", "");
    acknowledged(during, &mut held.expected);
    let HeldBeforeSwitch {
        mut server,
        mut client,
        mut rng,
        mut expected,
        tail_bytes,
        ..
    } = held;
    wait_for_line(&mut server, &["compacted ", "shard-0.log: "]);

    let (copied, chunks, largest) = switch_copy(&mut server);
    let context = format!("{copied} bytes copied in {chunks} chunks, the largest {largest}");
    eprintln!("the switch: {context}");
    assert!(copied as usize > tail_bytes + BIG_VALUE_BYTES, "{context}");
    assert!(
        largest as usize >= BIG_VALUE_BYTES && (largest as usize) < BIG_VALUE_BYTES + 4096,
        "only a single big record may make a chunk larger than {CHUNK_BYTES} bytes: {context}"
    );
    assert!(
        chunks as usize > copied as usize / largest as usize,
        "{context}"
    );
    assert_expected(&mut server, &expected, "after the switch");

    // Appended to the new file, behind what the switch copied.
    let after: Vec<Request> = (0..3)
        .map(|i| {
            Request::Set(
                format!("after-{i}").into_bytes(),
                random_bin(&mut rng, 5000),
            )
        })
        .collect();
    write_acknowledged(&mut client, after, &mut expected);
    drop(client);
    restarts_keep_every_write(server, &data_dir, &expected);
}

/// Where a long tail's switch fails.
#[derive(Debug, Clone, Copy, PartialEq)]
enum SwitchFailure {
    /// At the third chunk of the tail: nothing taken from the writer yet.
    InTheTail,
    /// Copying the records appended during the switch, taken from the writer.
    InTheAppendedRecords,
}

/// A long tail's switch fails part way: no `.compact` file is left, the old
/// log stays in use and writable, the writes appended during the switch are
/// acknowledged from it, the next compaction succeeds, and every
/// acknowledged write survives kill -9 and a restart.
fn a_switch_that_fails(failure: SwitchFailure) {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let test = format!("a_switch_that_fails {failure:?}");
    let mut held = hold_before_switch(&data_dir, &test, true);
    let http = held.http;
    let during = match failure {
        SwitchFailure::InTheTail => {
            arm_failpoint(http, "compaction::write@0", "2*off->return");
            arm_failpoint(http, "compaction::before_switch@0", "");
            None
        }
        SwitchFailure::InTheAppendedRecords => {
            arm_failpoint(http, "compaction::tail_copied@0", "return");
            arm_failpoint(http, "compaction::before_switch@0", "");
            let during = append_during_switch(&mut held);
            arm_failpoint(http, "compaction::write@0", "return");
            arm_failpoint(http, "compaction::tail_copied@0", "");
            Some(during)
        }
    };
    if let Some(during) = during {
        acknowledged(during, &mut held.expected);
    }
    let HeldBeforeSwitch {
        mut server,
        mut client,
        mut expected,
        ..
    } = held;
    let line = wait_for_line(&mut server, &["compaction of", "shard-0.log", "failed"]);
    assert!(line.contains("compaction::write"), "{failure:?}: {line}");
    assert_eq!(
        compact_files(&data_dir),
        Vec::<String>::new(),
        "{failure:?}"
    );
    assert_eq!(
        count_lines(&mut server, &["poisoned"]),
        0,
        "{failure:?}: the failed switch poisoned the log:\n{}",
        server.stderr()
    );
    assert_expected(&mut server, &expected, "after the failed switch");
    arm_failpoint(http, "compaction::write@0", "");
    // The log has grown since the failure: the next check retries.
    let after = vec![Request::Set(b"after".to_vec(), Value::from("the failure"))];
    write_acknowledged(&mut client, after, &mut expected);
    wait_for_line(&mut server, &["compacted ", "shard-0.log: "]);
    assert_expected(&mut server, &expected, "after the next compaction");
    drop(client);
    restarts_keep_every_write(server, &data_dir, &expected);
}

#[test]
fn a_switch_failing_part_way_through_a_long_tail_loses_nothing_and_leaves_the_log_writable() {
    a_switch_that_fails(SwitchFailure::InTheTail);
}

#[test]
fn a_switch_failing_on_the_records_appended_during_it_puts_them_back_and_loses_nothing() {
    a_switch_that_fails(SwitchFailure::InTheAppendedRecords);
}

// ---------------------------------------------------------------------------
// A nearly full file system
// ---------------------------------------------------------------------------

/// A tmpfs mounted for the test, unmounted when dropped (also on a panic).
struct Tmpfs {
    mount_point: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it), or None if this
    /// process may not mount (not root).
    fn mount(mount_point: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(mount_point).expect("create the mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(mount_point)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        mounted.then(|| Tmpfs {
            mount_point: mount_point.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.mount_point)
            .status()
            .is_ok_and(|status| status.success());
        if !unmounted {
            // Busy (a child not yet reaped): detach it now, freed when unused.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mount_point)
                .status();
        }
    }
}

/// The file system's size, and the live data written on it: a compaction is
/// due once the log is twice the live data, 19 MB, when 6 MB are left — less
/// than the snapshot (9.5 MB), let alone the room compaction asks for.
const TMPFS_SIZE: &str = "24m";
const TMPFS_BYTES: u64 = 24 << 20;
const LIVE_KEYS: usize = 1150;
const VALUE_BYTES: usize = 8 * 1024;
/// Overwrites stop when this much is left free: the live log's own appends
/// would fail on a full disk, and poison it, which is right but not the point.
const STOP_WITH_FREE_BYTES: u64 = 3 << 20;

fn filled_value(tag: usize) -> Value {
    Value::Binary(vec![tag as u8; VALUE_BYTES])
}

#[test]
fn compaction_on_a_nearly_full_disk_is_skipped_and_the_live_log_keeps_taking_writes() {
    let temp = tempfile::tempdir().expect("temp dir");
    let Some(_tmpfs) = Tmpfs::mount(&temp.path().join("mnt"), TMPFS_SIZE) else {
        eprintln!(
            "skipping the full-disk test: cannot mount a tmpfs here (not root?); the failpoint \
             tests cover a compaction that fails"
        );
        return;
    };
    let data_dir = temp.path().join("mnt").join("data");
    let flags = ["--compact-min-bytes", "1MiB"];
    let (mut server, _) = start(&data_dir, 1, &flags);
    let mut client = server.client();
    let keys: Vec<Vec<u8>> = (0..LIVE_KEYS)
        .map(|i| format!("live-{i}").into_bytes())
        .collect();
    for (i, chunk) in keys.chunks(10).enumerate() {
        let sets: Vec<Request> = chunk
            .iter()
            .map(|k| Request::Set(k.clone(), filled_value(i)))
            .collect();
        assert_eq!(client.call(&sets).expect("SET live data"), []);
    }
    // Overwrite one key until the disk is nearly full; every write fits.
    let churn = b"churn".to_vec();
    let log = log_path(&data_dir, 0);
    let mut churn_version = 0;
    while std::fs::metadata(&log).expect("log").len() < TMPFS_BYTES - STOP_WITH_FREE_BYTES {
        assert!(churn_version < 5_000, "the log stopped growing");
        client
            .set(&churn, filled_value(churn_version))
            .unwrap_or_else(|e| {
                panic!(
                    "a write that fits was refused ({e}); free space is left:\n{}",
                    server.stderr()
                )
            });
        churn_version += 1;
    }
    let skipped = count_lines(&mut server, &["compaction of", "skipped"]);
    let failed = count_lines(&mut server, &["compaction of", "failed"]);
    eprintln!("on the nearly full disk: {skipped} skip lines, {failed} failed compactions");
    assert!(
        skipped + failed > 0,
        "compaction neither skipped nor failed on a nearly full disk:\n{}",
        server.stderr()
    );
    assert!(
        skipped <= 1,
        "the skip is logged once, not at every check:\n{}",
        server.stderr()
    );
    assert_eq!(compact_files(&data_dir), Vec::<String>::new());
    assert_eq!(nr_compactions(&mut server, 0), 0, "{}", server.stderr());
    // Deleting most keys makes the snapshot small enough for the room left.
    let (deleted, kept) = keys.split_at(LIVE_KEYS - 20);
    for chunk in deleted.chunks(50) {
        let dels: Vec<Request> = chunk.iter().map(|k| Request::Del(k.clone())).collect();
        assert_eq!(client.call(&dels).expect("DEL"), []);
    }
    client
        .set(&churn, filled_value(churn_version))
        .expect("SET after the deletes");
    churn_version += 1;
    wait_for_line(&mut server, &["compacted ", "shard-0.log: "]);
    assert!(
        std::fs::metadata(&log).expect("log").len() < TMPFS_BYTES / 4,
        "{}",
        server.stderr()
    );
    drop(client);
    server.stop_with(libc::SIGKILL);
    let (server, _) = start(&data_dir, 1, &flags);
    let mut client = server.client();
    for (i, key) in kept.iter().enumerate() {
        let tag = (deleted.len() + i) / 10;
        assert_eq!(
            client.getv(key).expect("GETV"),
            Some((filled_value(tag), 1)),
            "kept key {i}"
        );
    }
    assert_eq!(
        client.getv(&churn).expect("GETV"),
        Some((filled_value(churn_version - 1), churn_version as u64))
    );
    assert_eq!(client.getv(&deleted[0]).expect("GETV"), None);
}
