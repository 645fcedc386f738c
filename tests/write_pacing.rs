//! Write pacing (src/log/pacing.rs): under endless full-rate overwrites, a
//! shard's log stays within twice its live data plus the margin
//! (`--compact-min-bytes`), because writes wait for a compaction that falls
//! behind instead of growing the log; and a compaction that fails while
//! writes wait for it lets them go, losing nothing.
//!
//! Real `corekv-server` processes, one shard, several client threads
//! overwriting a small key set with 64 KiB values as fast as they can. A
//! compaction that cannot keep up is made certain with the
//! `snapshot::chunk_written` failpoint, which holds the snapshot writer
//! after a chunk. Every loop is bounded in count; nothing asserts on time.

mod common;

use common::logs::log_path;
use common::{arm_failpoint, start_log_with_http, test_seed, wait_for_line, TestServer};
use corekv::client::{Client, Request};
use corekv::log::pacing::ALLOWANCE_BYTES;
use corekv::log::writer::PREALLOCATE_BYTES;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rmpv::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const MIB: u64 = 1 << 20;
/// The compaction threshold, which is also the margin over twice the live
/// data (`log::pacing::margin_bytes`).
const COMPACT_MIN: &str = "4MiB";
const COMPACT_MIN_BYTES: u64 = 4 * MIB;
const NR_WRITERS: usize = 4;
const KEYS_PER_WRITER: usize = 16;
const VALUE_BYTES: usize = 64 * 1024;
/// SETs per message: one round of a writer.
const SETS_PER_ROUND: usize = 4;
/// Rounds a writer sends at most (about 16 GiB over all writers: far more
/// than a test run writes before it is stopped).
const MAX_ROUNDS: u64 = 64 * 1024;
/// Log size samples taken at most in each phase, one per pause.
const NR_SAMPLES: usize = 60;
const SAMPLE_PAUSE: Duration = Duration::from_millis(25);

fn key(writer: usize, i: usize) -> Vec<u8> {
    format!("w{writer}-key{i}").into_bytes()
}

/// The value of a write: its round number, then the writer's filler byte.
fn value(writer: usize, round: u64) -> Value {
    let mut bytes = vec![writer as u8 ^ round as u8; VALUE_BYTES];
    bytes[..8].copy_from_slice(&round.to_be_bytes());
    Value::Binary(bytes)
}

/// The live data once every key is written, as a compaction writes it.
fn live_bytes() -> u64 {
    let nr_keys = (NR_WRITERS * KEYS_PER_WRITER) as u64;
    let key_bytes = (0..NR_WRITERS)
        .flat_map(|w| (0..KEYS_PER_WRITER).map(move |i| key(w, i).len() as u64))
        .sum();
    corekv::log::compaction::snapshot_bytes(nr_keys, key_bytes, nr_keys * VALUE_BYTES as u64)
}

/// The most the log file may measure: twice the live data plus the margin,
/// plus what pacing lets through before a round waits (the allowance and
/// one round per writer), plus the space the writer allocates ahead of its
/// end (part of the file's size, zeros).
fn log_size_limit() -> u64 {
    let rounds_in_flight = (NR_WRITERS * SETS_PER_ROUND * VALUE_BYTES) as u64 + MIB;
    2 * live_bytes()
        + COMPACT_MIN_BYTES
        + ALLOWANCE_BYTES
        + rounds_in_flight
        + PREALLOCATE_BYTES.end()
}

/// Writers overwriting their own keys until told to stop; each remembers,
/// per key, the round of its last acknowledged write.
struct Writers {
    stop: Arc<AtomicBool>,
    /// Rounds acknowledged, over all writers.
    acknowledged: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Vec<Option<u64>>>>,
}

/// What a writer does when a round is refused.
#[derive(Clone, Copy, PartialEq)]
enum OnError {
    Panic,
    /// Stop writing (a poisoned log refuses every later write).
    Stop,
}

impl Writers {
    /// Starts the writers; returns once every key has been written once.
    fn start(addr: SocketAddr, seed: u64, on_error: OnError) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicU64::new(0));
        let threads = (0..NR_WRITERS)
            .map(|writer| {
                let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
                std::thread::spawn(move || {
                    write_until_stopped(addr, writer, seed, on_error, &stop, &acknowledged)
                })
            })
            .collect();
        let writers = Writers {
            stop,
            acknowledged,
            threads,
        };
        let first_pass = (NR_WRITERS * KEYS_PER_WRITER / SETS_PER_ROUND) as u64;
        for _ in 0..2000 {
            if writers.acknowledged.load(Ordering::Relaxed) >= first_pass {
                return writers;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the writers did not write every key once");
    }

    fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::Relaxed)
    }

    /// Stops the writers; returns each key's last acknowledged round.
    fn stop(self) -> Vec<Vec<Option<u64>>> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|t| t.join().expect("a writer panicked"))
            .collect()
    }
}

fn write_until_stopped(
    addr: SocketAddr,
    writer: usize,
    seed: u64,
    on_error: OnError,
    stop: &AtomicBool,
    acknowledged: &AtomicU64,
) -> Vec<Option<u64>> {
    let mut rng = StdRng::seed_from_u64(seed ^ writer as u64);
    let mut client = Client::connect(addr, Some(Duration::from_secs(120))).expect("connect");
    let mut last = vec![None; KEYS_PER_WRITER];
    for round in 0..MAX_ROUNDS {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // Every key once first (so the live data is complete), then at random.
        let keys: Vec<usize> = (0..SETS_PER_ROUND)
            .map(
                |j| match round < (KEYS_PER_WRITER / SETS_PER_ROUND) as u64 {
                    true => round as usize * SETS_PER_ROUND + j,
                    false => rng.gen_range(0..KEYS_PER_WRITER),
                },
            )
            .collect();
        let sets: Vec<Request> = keys
            .iter()
            .map(|&i| Request::Set(key(writer, i), value(writer, round)))
            .collect();
        let refused = match client.call(&sets) {
            Ok(elements) => !elements.is_empty(),
            Err(e) => panic!("writer {writer}: {e}"),
        };
        if refused {
            match on_error {
                OnError::Panic => panic!("writer {writer}: a SET was refused"),
                OnError::Stop => break,
            }
        }
        for &i in &keys {
            last[i] = Some(round);
        }
        acknowledged.fetch_add(1, Ordering::Relaxed);
    }
    last
}

/// Samples the log's size; one over the limit stops the writers (without
/// pacing the log would grow by GiBs) and fails the test. Returns the size.
fn take_sample(log: &Path, samples: &mut Vec<u64>, writers: &Writers) -> u64 {
    let size = file_size(log);
    samples.push(size);
    let limit = log_size_limit();
    if size > limit {
        writers.stop.store(true, Ordering::Relaxed);
        panic!(
            "the log reached {size} bytes, over {limit} (2 × {} live + {COMPACT_MIN} + slack); samples: {samples:?}",
            live_bytes()
        );
    }
    size
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Waits (bounded) until the log at `log` shrinks: a compaction switched.
/// The log is sampled meanwhile: the first compaction must start in time
/// too, not only the ones after it. (Its log line is no help while writes
/// go on: the server's stderr is read until it has been quiet a while, and
/// compactions keep it busy.)
fn wait_for_compaction(log: &Path, samples: &mut Vec<u64>, writers: &Writers) {
    let mut last = file_size(log);
    for _ in 0..3000 {
        std::thread::sleep(Duration::from_millis(10));
        let now = take_sample(log, samples, writers);
        if now < last {
            return;
        }
        last = now;
    }
    panic!("the log never shrank: no compaction");
}

/// Waits (bounded) until the writers stop being acknowledged: paced while
/// the compaction is held. Returns whether they did.
fn wait_until_writers_stall(writers: &Writers) -> bool {
    let mut last = writers.acknowledged();
    let mut unchanged = 0;
    for _ in 0..400 {
        std::thread::sleep(Duration::from_millis(25));
        let now = writers.acknowledged();
        unchanged = if now == last { unchanged + 1 } else { 0 };
        last = now;
        if unchanged >= 8 {
            return true;
        }
    }
    false
}

/// Holds the next compaction after its first snapshot chunk and waits until
/// the writers are paced to a stop behind it.
fn hold_compaction_until_writers_stall(
    server: &mut TestServer,
    http: SocketAddr,
    writers: &Writers,
) {
    arm_failpoint(http, "snapshot::chunk_written@0", "return");
    wait_for_line(server, &["failpoint snapshot::chunk_written holds"]);
    assert!(
        wait_until_writers_stall(writers),
        "the writes go on while the compaction is held:\n{}",
        server.stderr()
    );
}

fn start_server(data_dir: &Path) -> (TestServer, SocketAddr) {
    let flags = ["--fsync", "never", "--compact-min-bytes", COMPACT_MIN];
    start_log_with_http(data_dir, 1, &flags)
}

#[test]
fn the_log_stays_within_twice_the_live_data_under_endless_overwrites() {
    let seed = test_seed("the_log_stays_within_twice_the_live_data_under_endless_overwrites");
    let data = tempfile::tempdir().expect("temp dir");
    let (mut server, http) = start_server(data.path());
    let log = log_path(&server.data_dir, 0);
    let writers = Writers::start(server.addr, seed, OnError::Panic);
    let mut samples = Vec::new();
    wait_for_compaction(&log, &mut samples, &writers);
    // Free running: the compaction keeps up or the writes are paced.
    for _ in 0..NR_SAMPLES {
        take_sample(&log, &mut samples, &writers);
        std::thread::sleep(SAMPLE_PAUSE);
    }
    // A compaction that cannot keep up at all: held after its first chunk.
    arm_failpoint(http, "snapshot::chunk_written@0", "return");
    wait_for_line(&mut server, &["failpoint snapshot::chunk_written holds"]);
    for _ in 0..NR_SAMPLES {
        take_sample(&log, &mut samples, &writers);
        std::thread::sleep(SAMPLE_PAUSE);
    }
    arm_failpoint(http, "snapshot::chunk_written@0", "");
    for _ in 0..NR_SAMPLES / 2 {
        take_sample(&log, &mut samples, &writers);
        std::thread::sleep(SAMPLE_PAUSE);
    }
    writers.stop();
    let largest = samples.iter().copied().max().unwrap_or(0);
    let limit = log_size_limit();
    eprintln!(
        "live {} bytes, limit {limit}, largest of {} samples {largest}",
        live_bytes(),
        samples.len()
    );
    let mut client = server.client();
    assert!(
        common::stat(&mut client, "write_pacing_waits") > 0,
        "the writes waited for the held compaction"
    );
}

#[test]
fn a_compaction_failing_while_writes_wait_for_it_releases_them_and_loses_nothing() {
    let seed =
        test_seed("a_compaction_failing_while_writes_wait_for_it_releases_them_and_loses_nothing");
    let data = tempfile::tempdir().expect("temp dir");
    let (mut server, http) = start_server(data.path());
    let writers = Writers::start(server.addr, seed, OnError::Panic);
    hold_compaction_until_writers_stall(&mut server, http, &writers);
    // The held compaction's next chunk write fails (and so does the retry a
    // second later, if the writers get there first: that changes nothing).
    let stalled_at = writers.acknowledged();
    arm_failpoint(http, "compaction::write@0", "return");
    arm_failpoint(http, "snapshot::chunk_written@0", "");
    for _ in 0..2000 {
        if writers.acknowledged() > stalled_at + 50 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        writers.acknowledged() > stalled_at + 50,
        "the writes did not resume after the compaction failed"
    );
    let last = writers.stop();
    arm_failpoint(http, "compaction::write@0", "");
    wait_for_line(&mut server, &["compaction of", "failed"]);
    let mut client = server.client();
    assert!(common::stat(&mut client, "write_pacing_waits") > 0);
    drop(client);
    server.stop_with(libc::SIGKILL);
    let (server, _http) = start_server(data.path());
    let mut client = server.client();
    for (writer, rounds) in last.iter().enumerate() {
        for (i, round) in rounds.iter().enumerate() {
            let round = round.expect("every key was written");
            common::assert_reads_back(
                &mut client,
                &key(writer, i),
                &value(writer, round),
                "after kill -9 and restart",
            );
        }
    }
}

#[test]
fn a_log_poisoned_while_writes_wait_for_a_compaction_releases_them() {
    let seed = test_seed("a_log_poisoned_while_writes_wait_for_a_compaction_releases_them");
    let data = tempfile::tempdir().expect("temp dir");
    let (mut server, http) = start_server(data.path());
    let writers = Writers::start(server.addr, seed, OnError::Stop);
    hold_compaction_until_writers_stall(&mut server, http, &writers);
    // The next write of the log fails and poisons it; the compaction, still
    // held, cannot pay anyone: the waiters must go at once, answered IOERR.
    arm_failpoint(http, "log::write@0", "return");
    let mut client = server.client();
    let poisoning = client.call(&[Request::Set(b"poison".to_vec(), Value::from(1))]);
    assert!(
        poisoning.is_ok_and(|elements| !elements.is_empty()),
        "a write to a failing log is refused"
    );
    // Every writer finishes: its paced round is answered (IOERR) and it stops.
    let _ = writers.stop();
    arm_failpoint(http, "snapshot::chunk_written@0", "");
    wait_for_line(&mut server, &["compaction of", "failed"]);
}
