//! Recovery under random damage: a real log, written by the server, is cut
//! short, has bytes flipped, ranges zeroed or garbage appended, hundreds of
//! times, and recovery runs on each copy (in-process, `corekv::log::recover`).
//!
//! What must hold, whatever the damage:
//! - recovery never panics;
//! - it either starts with exactly the records before the first damaged one
//!   (a torn tail is cut), or refuses — only when intact records follow the
//!   damage — without changing a byte; with `--salvage` it always starts with
//!   exactly that prefix;
//! - damage to the file header refuses the start, salvaging or not;
//! - no record is invented or resurrected: the recovered table is the state
//!   after a prefix of the original records, never anything else;
//! - the work of looking past damage stays linear in the file's size.

mod common;

use common::{test_seed, TestServer};
use corekv::client::{Client, Request};
use corekv::log::format::{parse_file, Effect, Record, FILE_HEADER_BYTES};
use corekv::log::{recover, RecoveryError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rmpv::Value;
use std::collections::BTreeMap;
use std::path::Path;

const ITERATIONS: usize = 300;

type State = BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

/// Writes a log of SETs (some larger than the recovery buffer), overwrites,
/// DELs and ATOMIC batches with a 1-shard server; returns its data directory.
fn real_log(rng: &mut StdRng) -> tempfile::TempDir {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let mut server = TestServer::start_in(&data_dir, 1, &["--engine", "log", "--fsync", "never"])
        .unwrap_or_else(|(status, stderr)| panic!("server did not start ({status:?}):\n{stderr}"));
    let mut client: Client = server.client();
    for i in 0..400 {
        let key = format!("key-{}", rng.gen_range(0..120)).into_bytes();
        let len = match rng.gen_range(0..100) {
            0 => rng.gen_range(1 << 20..(1 << 20) + 4096),
            1..=9 => rng.gen_range(1000..64 << 10),
            _ => rng.gen_range(0..64),
        };
        let value = Value::Binary(vec![i as u8; len]);
        match rng.gen_range(0..10) {
            0 => client.del(&key).expect("del"),
            1 => {
                let other = format!("key-{}", rng.gen_range(0..120)).into_bytes();
                client
                    .call(&[Request::Atomic(vec![
                        Request::Set(key, value.clone()),
                        Request::Del(other),
                    ])])
                    .map(drop)
                    .expect("atomic");
            }
            _ => client.set(&key, value).expect("set"),
        }
    }
    drop(client);
    server.stop_with(libc::SIGTERM);
    temp
}

/// The state after each prefix of the log's records: `states[k]` is the table
/// after the first `k` records.
fn prefix_states(records: &[(usize, Record<'_>)]) -> Vec<State> {
    let mut state = State::new();
    let mut states = vec![state.clone()];
    let apply = |state: &mut State, effect: &Effect<'_>| match effect {
        Effect::Put {
            key,
            version,
            value,
            ..
        } => {
            state.insert(key.to_vec(), (value.to_vec(), *version));
        }
        Effect::Del { key } => {
            state.remove(*key);
        }
        Effect::Expire { .. } => {}
    };
    for (_, record) in records {
        match record {
            Record::Effect(effect) => apply(&mut state, effect),
            Record::Batch(effects) => effects.iter().for_each(|e| apply(&mut state, e)),
            other => panic!("a 1-shard log holds no {other:?}"),
        }
        states.push(state.clone());
    }
    states
}

/// One random kind of damage to `bytes`.
fn damage(rng: &mut StdRng, bytes: &mut Vec<u8>) -> String {
    let len = bytes.len();
    match rng.gen_range(0..5) {
        0 => {
            let cut = rng.gen_range(0..len);
            bytes.truncate(cut);
            format!("cut to {cut} bytes")
        }
        1 => {
            let flips = rng.gen_range(1..8);
            for _ in 0..flips {
                let at = rng.gen_range(0..len);
                bytes[at] ^= 1 << rng.gen_range(0..8);
            }
            format!("{flips} bits flipped")
        }
        2 => {
            let start = rng.gen_range(FILE_HEADER_BYTES..len);
            let end = (start + rng.gen_range(1..64 << 10)).min(len);
            bytes[start..end].fill(0);
            format!("zeros over {start}..{end}")
        }
        3 => {
            let extra = rng.gen_range(1..4096);
            bytes.extend((0..extra).map(|_| rng.gen::<u8>()));
            format!("{extra} garbage bytes appended")
        }
        _ => {
            let keep = rng.gen_range(FILE_HEADER_BYTES..len);
            bytes.truncate(keep);
            bytes.resize(len, 0);
            format!("zeros from {keep} to the end")
        }
    }
}

/// The index of the first record the damage touched (or cut short).
fn first_damaged(
    records: &[(usize, Record<'_>)],
    end: usize,
    original: &[u8],
    damaged: &[u8],
) -> usize {
    let changed = original
        .iter()
        .zip(damaged)
        .position(|(a, b)| a != b)
        .unwrap_or(original.len().min(damaged.len()));
    let first_bad = changed.min(damaged.len());
    records
        .iter()
        .enumerate()
        .position(|(i, (start, _))| {
            let record_end = records.get(i + 1).map_or(end, |next| next.0);
            record_end > first_bad || *start >= first_bad
        })
        .unwrap_or(records.len())
}

fn table_state(tables: &[corekv::table::Table]) -> State {
    tables[0]
        .entries()
        .map(|e| (e.key().to_vec(), (e.value().to_vec(), e.version())))
        .collect()
}

fn copy_with_log(original: &Path, log: &[u8]) -> tempfile::TempDir {
    let copy = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(copy.path().join("log")).expect("mkdir");
    std::fs::copy(original.join("log/SHARDS"), copy.path().join("log/SHARDS")).expect("copy");
    std::fs::write(copy.path().join("log/shard-0.log"), log).expect("write log");
    copy
}

#[test]
fn random_damage_never_crashes_recovery_invents_a_record_or_costs_more_than_linear_work() {
    let mut rng = StdRng::seed_from_u64(test_seed("recovery_fuzz"));
    let temp = real_log(&mut rng);
    let data_dir = temp.path().join("data");
    let original = std::fs::read(data_dir.join("log/shard-0.log")).expect("read log");
    let (_, records, end) = parse_file(&original).expect("an intact log");
    assert!(
        original[end..].iter().all(|&b| b == 0),
        "the server left an intact log (and zeros allocated ahead)"
    );
    let states = prefix_states(&records);
    for iteration in 0..ITERATIONS {
        let mut bytes = original.clone();
        let what = damage(&mut rng, &mut bytes);
        let context = format!("iteration {iteration}: {what}");
        let header_hit = bytes.len() < FILE_HEADER_BYTES
            || bytes[..FILE_HEADER_BYTES] != original[..FILE_HEADER_BYTES];
        let d = first_damaged(&records, end, &original, &bytes);
        for salvage in [false, true] {
            let copy = copy_with_log(&data_dir, &bytes);
            let log_path = copy.path().join("log/shard-0.log");
            match recover(copy.path(), &corekv::ids::Router::new(1), salvage, false) {
                Ok(recovered) => {
                    assert!(
                        !header_hit || bytes.is_empty(),
                        "{context}: started with a damaged file header"
                    );
                    let found = table_state(&recovered.tables);
                    assert!(
                        found == states[d],
                        "{context}, salvage {salvage}: recovered {} keys, not the {} keys of the first {d} records",
                        found.len(),
                        states[d].len()
                    );
                    assert!(
                        recovered.scan_hashed_bytes <= 17 * bytes.len() as u64 + 64,
                        "{context}: {} bytes checksummed for a {}-byte log",
                        recovered.scan_hashed_bytes,
                        bytes.len()
                    );
                }
                Err(RecoveryError::BadFileHeader { .. }) => {
                    assert!(
                        header_hit,
                        "{context}: a refused header that was not damaged"
                    );
                    assert_eq!(
                        std::fs::read(&log_path).expect("read"),
                        bytes,
                        "{context}: changed a byte"
                    );
                }
                Err(RecoveryError::Corrupt { offset, .. }) => {
                    assert!(!salvage, "{context}: salvage refused");
                    assert!(!header_hit, "{context}");
                    assert_eq!(
                        offset,
                        records.get(d).map_or(end, |r| r.0) as u64,
                        "{context}"
                    );
                    assert_eq!(
                        std::fs::read(&log_path).expect("read"),
                        bytes,
                        "{context}: changed a byte"
                    );
                }
                Err(other) => panic!("{context}, salvage {salvage}: {other}"),
            }
        }
    }
}
