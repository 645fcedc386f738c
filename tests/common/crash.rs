//! The crash harness of the durability tests: log-engine servers started and
//! stopped (a server that printed a panic fails the test whatever stops it),
//! the `--fsync` modes and compaction settings crash cycles rotate through,
//! workers that pipeline requests whose outcome they know and keep [`Track`]
//! of what was acknowledged, and [`run_until_killed`], one crash: workers
//! write until the server is killed with SIGKILL at a chosen moment.
//!
//! After the restart every key must hold its last acknowledged state or one
//! that a write sent but not acknowledged would have left (`Track::settle`).
#![allow(dead_code)]

use super::keys::keys_on_every_shard;
use super::model::{KeyState, Model};
use super::TestServer;
use corekv::client::{decode_reply, Client, ClientError, Element, Request};
use rand::rngs::StdRng;
use rand::Rng;
use rmpv::Value;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Bounds a worker's run between two kills by count (the kill normally ends it first).
pub const CRASH_MAX_BURSTS: usize = 20_000;

/// Every `--fsync` mode.
pub const FSYNC_MODES: [&str; 3] = ["always", "interval", "never"];

/// The flags that select an `--fsync` mode (interval mode syncs every 5 ms).
pub fn fsync_flags(mode: &'static str) -> Vec<&'static str> {
    let mut flags = vec!["--fsync", mode];
    if mode == "interval" {
        flags.extend_from_slice(&["--fsync-interval-ms", "5"]);
    }
    flags
}

/// Compaction threshold for the crash cycles that compact: small enough that
/// the logs are rewritten many times while the workers write.
pub const SMALL_COMPACT_MIN: &str = "4KiB";

/// The flags of crash cycle `cycle` and a description of them: every `--fsync`
/// mode in turn, and every other run of three cycles with online compaction
/// rewriting the logs under the writers (a crash may hit it at any step).
pub fn cycle_flags(cycle: usize) -> (String, Vec<&'static str>) {
    let mode = FSYNC_MODES[cycle % FSYNC_MODES.len()];
    let mut flags = fsync_flags(mode);
    let compact = (cycle / FSYNC_MODES.len()) % 2 == 1;
    if compact {
        flags.extend_from_slice(&["--compact-min-bytes", SMALL_COMPACT_MIN]);
    }
    let description = match compact {
        true => format!("fsync={mode} compact-min-bytes={SMALL_COMPACT_MIN}"),
        false => format!("fsync={mode}"),
    };
    (description, flags)
}

/// Starts a log-engine server on `data_dir`; panics with its stderr if it does not start.
pub fn start_log(data_dir: &Path, nr_shards: usize, flags: &[&str]) -> TestServer {
    let mut args = vec!["--engine", "log"];
    args.extend_from_slice(flags);
    TestServer::start_in(data_dir, nr_shards, &args).unwrap_or_else(|(status, stderr)| {
        panic!(
            "log server on {} did not start ({status:?}):\n{stderr}",
            data_dir.display()
        )
    })
}

/// Starts a log-engine server that must refuse; returns its stderr.
pub fn start_refused(data_dir: &Path, nr_shards: usize, flags: &[&str]) -> String {
    let mut args = vec!["--engine", "log"];
    args.extend_from_slice(flags);
    match TestServer::start_in(data_dir, nr_shards, &args) {
        Ok(mut server) => panic!(
            "the server started on {} but should have refused:\n{}",
            data_dir.display(),
            server.stderr()
        ),
        Err((status, stderr)) => {
            assert!(
                status.is_some_and(|s| !s.success()),
                "expected a non-zero exit, got {status:?}:\n{stderr}"
            );
            stderr
        }
    }
}

/// Stops the server with `signal` (SIGTERM must end in exit 0). A server whose
/// stderr shows a panic fails the test whatever the signal: a shard thread that
/// panicked leaves a process that runs on without it.
pub fn stop(server: &mut TestServer, signal: i32) {
    let status = server.stop_with(signal);
    let stderr = server.stderr();
    assert!(
        !stderr.contains("panicked"),
        "the server panicked before signal {signal}:\n{stderr}"
    );
    if signal == libc::SIGTERM {
        assert!(status.success(), "exit {status:?} after SIGTERM:\n{stderr}");
    }
}

/// Asserts `stderr` contains every one of `needles`.
pub fn assert_mentions(stderr: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "stderr does not mention {needle:?}:\n{stderr}"
        );
    }
}

/// A fresh data directory path inside a temporary directory (removed when
/// the returned guard drops); the server creates the directory itself.
pub fn temp_data_dir() -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    (temp, data_dir)
}

/// What a client knows of a key it alone writes: the state its last
/// acknowledged write left, and the state after each write sent but not yet
/// acknowledged, in order. After a crash the key must hold one of these.
#[derive(Debug, Clone)]
pub struct Track {
    pub confirmed: KeyState,
    pub unconfirmed: VecDeque<KeyState>,
}

impl Track {
    pub fn new() -> Track {
        Track {
            confirmed: KeyState::Absent,
            unconfirmed: VecDeque::new(),
        }
    }

    /// The state once everything sent has been applied.
    pub fn current(&self) -> &KeyState {
        self.unconfirmed.back().unwrap_or(&self.confirmed)
    }

    pub fn acknowledge_one(&mut self) {
        self.confirmed = self
            .unconfirmed
            .pop_front()
            .expect("an acknowledged write was sent");
    }

    /// Checks the state found after a restart and makes it the new starting point.
    pub fn settle(&mut self, found: KeyState, what: &str) {
        assert!(
            found == self.confirmed || self.unconfirmed.contains(&found),
            "{what} holds {found:?} after the restart; the last acknowledged state was {:?} and \
             the unacknowledged writes would have left one of {:?}",
            self.confirmed,
            self.unconfirmed
        );
        self.confirmed = found;
        self.unconfirmed.clear();
    }
}

/// A worker's connection error: expected once the server has been killed, a
/// test failure before.
pub fn connection_lost(error: ClientError, killed: &AtomicBool, who: &str) {
    assert!(
        killed.load(Ordering::SeqCst),
        "{who}: connection failed while the server was supposed to be running: {error}"
    );
}

/// Sends `messages` pipelined and reads their replies in order, calling
/// `acknowledged(i, reply)` for each reply received. Returns false once the
/// connection is lost (after the kill).
pub fn pipeline(
    client: &mut Client,
    messages: &[Vec<Request>],
    killed: &AtomicBool,
    who: &str,
    mut acknowledged: impl FnMut(usize, Vec<Element>),
) -> bool {
    let sent = messages
        .iter()
        .try_for_each(|m| client.send_message(m))
        .and_then(|()| client.flush());
    if let Err(e) = sent {
        connection_lost(e, killed, who);
        return false;
    }
    for i in 0..messages.len() {
        match client.recv_reply() {
            Ok(body) => {
                let reply = decode_reply(&body).expect("a whole reply decodes");
                acknowledged(i, reply);
            }
            Err(e) => {
                connection_lost(e, killed, who);
                return false;
            }
        }
    }
    true
}

/// A value that no other write in the test sends: str, bin or array.
pub fn unique_value(rng: &mut StdRng, tag: String) -> Value {
    match rng.gen_range(0..3) {
        0 => Value::from(tag),
        1 => {
            let mut bytes = tag.into_bytes();
            bytes.extend((0..rng.gen_range(0..200)).map(|_| rng.gen::<u8>()));
            Value::Binary(bytes)
        }
        _ => Value::Array(vec![Value::from(tag), Value::from(rng.gen::<u32>())]),
    }
}

/// One planned request on one of a worker's keys.
pub struct Planned {
    pub key: usize,
    pub request: Request,
    pub expected: Vec<Element>,
    /// The key's state after the request, or None for a read.
    pub after: Option<KeyState>,
}

/// Picks a request for key `key` whose outcome follows from `state` alone.
pub fn plan_single(
    rng: &mut StdRng,
    keys: &[Vec<u8>],
    key: usize,
    state: &KeyState,
    tag: String,
) -> Planned {
    let k = keys[key].clone();
    let value = unique_value(rng, tag);
    let (request, expected, after) = match rng.gen_range(0..100) {
        0..=39 => (
            Request::Set(k, value.clone()),
            vec![],
            Some(state.after_write(value)),
        ),
        40..=59 => {
            let new = state.after_write(value.clone());
            let done = Element::Done(new.version());
            (
                Request::PutV(k, value, state.version()),
                vec![done],
                Some(new),
            )
        }
        60..=67 => {
            let wrong = state.version() + rng.gen_range(1..4);
            let conflict = Element::VersionConflict(state.version());
            (
                Request::PutV(k, value, wrong),
                vec![conflict],
                Some(state.clone()),
            )
        }
        68..=77 => (Request::Del(k), vec![], Some(KeyState::Absent)),
        78..=89 => {
            let existed = u64::from(*state != KeyState::Absent);
            (
                Request::Rm(k),
                vec![Element::Done(existed)],
                Some(KeyState::Absent),
            )
        }
        _ => {
            let read = match state {
                KeyState::Absent => Element::NotFound,
                KeyState::Present(v, version) => Element::Versioned(v.clone(), *version),
            };
            (Request::GetV(k), vec![read], None)
        }
    };
    Planned {
        key,
        request,
        expected,
        after,
    }
}

/// One crash: each of `inputs` goes to a worker thread with a connection of
/// its own, `work(worker, input, client, killed)` runs until its connection
/// dies, and the server is killed with SIGKILL after `delay` (`killed` is set
/// first, so a worker tells the kill from a failure). Returns each worker's
/// result, in order.
pub fn run_until_killed<I: Send, T: Send>(
    server: &mut TestServer,
    inputs: Vec<I>,
    delay: Duration,
    work: impl Fn(usize, I, Client, &AtomicBool) -> T + Sync,
) -> Vec<T> {
    let killed = AtomicBool::new(false);
    let clients: Vec<Client> = inputs.iter().map(|_| server.client()).collect();
    std::thread::scope(|scope| {
        let (killed, work) = (&killed, &work);
        let workers: Vec<_> = inputs
            .into_iter()
            .zip(clients)
            .enumerate()
            .map(|(w, (input, client))| scope.spawn(move || work(w, input, client, killed)))
            .collect();
        std::thread::sleep(delay);
        killed.store(true, Ordering::SeqCst);
        stop(server, libc::SIGKILL);
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect()
    })
}

/// Random SET/PUTV/DEL/RM/GETV messages, pipelined, and cross-shard ATOMIC
/// batches over `keys`, with every reply checked against `model`, which
/// follows along.
pub fn write_mixed(
    client: &mut Client,
    model: &mut Model,
    rng: &mut StdRng,
    keys: &[Vec<u8>],
    nr_shards: usize,
    tag: &str,
) {
    let never_killed = AtomicBool::new(false);
    let mut n = 0;
    for _ in 0..40 {
        let mut messages = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..rng.gen_range(1..=4) {
            let mut message = Vec::new();
            for _ in 0..rng.gen_range(1..=6) {
                let key = rng.gen_range(0..keys.len());
                n += 1;
                let state = model.state(&keys[key]);
                let planned = plan_single(rng, keys, key, &state, format!("{tag}-{n}"));
                message.push(planned.request);
            }
            expected.push(model.reply_to(&message));
            messages.push(message);
        }
        assert!(pipeline(
            client,
            &messages,
            &never_killed,
            tag,
            |i, reply| assert_eq!(reply, expected[i], "{tag}")
        ));
    }
    // Cross-shard batches: every key of a group of 3 (one per shard under this
    // shard count) set in one ATOMIC.
    for b in 0..20 {
        let group = keys_on_every_shard(&format!("{tag}-batch{}", b % 7), 3, nr_shards);
        let value = Value::from(format!("{tag}-batch{b}"));
        let batch = Request::Atomic(
            group
                .iter()
                .map(|k| Request::Set(k.clone(), value.clone()))
                .collect(),
        );
        let expected = model.apply(&batch);
        assert_eq!(client.call(&[batch]).expect("ATOMIC"), expected, "{tag}");
    }
}
