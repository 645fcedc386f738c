//! Acknowledged writes survive `kill -9` of the log-engine server at random
//! instants, in every `--fsync` mode, with and without online compaction
//! rewriting the logs under the writers: after the restart every key holds its
//! last acknowledged state, or one a write sent but not acknowledged would
//! have left (its record is in the log before its reply leaves). And
//! compaction under concurrent writers loses nothing and stops no shard.
//!
//! Crash tests follow sled's tests/test_crash_recovery.rs: the server is a
//! child process and the test kills it (tests/common/crash.rs). Randomness is
//! seeded; the seed is printed (replay with `COREKV_TEST_SEED=<seed>`).
//! Timeouts here only turn a hang into a failure; nothing asserts on time.

mod common;

use common::crash::{
    cycle_flags, fsync_flags, pipeline, plan_single, run_until_killed, start_log, stop,
    temp_data_dir, Track, CRASH_MAX_BURSTS, FSYNC_MODES, SMALL_COMPACT_MIN,
};
use common::keys::show;
use common::model::{getv_all, KeyState};
use common::test_seed;
use corekv::client::{Client, Element};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const CRASH_WORKERS: usize = 4;
const CRASH_KEYS_PER_WORKER: usize = 12;

/// Writes the worker's keys in bursts of 1–3 pipelined messages of 1–4
/// requests until the connection dies (the kill), checking every reply, and
/// returns what it knows of each key.
fn single_key_worker(
    mut client: Client,
    keys: &[Vec<u8>],
    mut tracks: Vec<Track>,
    max_bursts: usize,
    seed: u64,
    who: &str,
    killed: &AtomicBool,
) -> Vec<Track> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut n = 0u64;
    for _ in 0..max_bursts {
        let mut messages = Vec::new();
        let mut plans = Vec::new();
        for _ in 0..rng.gen_range(1..=3) {
            let mut message = Vec::new();
            let mut plan = Vec::new();
            for _ in 0..rng.gen_range(1..=4) {
                let key = rng.gen_range(0..keys.len());
                n += 1;
                let planned = plan_single(
                    &mut rng,
                    keys,
                    key,
                    tracks[key].current(),
                    format!("{who}-{n}"),
                );
                if let Some(after) = &planned.after {
                    tracks[key].unconfirmed.push_back(after.clone());
                }
                message.push(planned.request.clone());
                plan.push(planned);
            }
            messages.push(message);
            plans.push(plan);
        }
        let alive = pipeline(&mut client, &messages, killed, who, |i, reply| {
            let expected: Vec<Element> = plans[i].iter().flat_map(|p| p.expected.clone()).collect();
            assert_eq!(reply, expected, "{who}: reply to {:?}", messages[i]);
            for planned in plans[i].iter().filter(|p| p.after.is_some()) {
                tracks[planned.key].acknowledge_one();
            }
        });
        if !alive {
            break;
        }
    }
    tracks
}

/// One data directory, `cycles` crash-restart cycles: workers write, the
/// server is killed after a random delay, restarted, and checked key by key.
fn crash_cycles(nr_shards: usize, cycles: usize, seed: u64) {
    let (_temp, data_dir) = temp_data_dir();
    let mut rng = StdRng::seed_from_u64(seed);
    let keys: Vec<Vec<Vec<u8>>> = (0..CRASH_WORKERS)
        .map(|w| {
            (0..CRASH_KEYS_PER_WORKER)
                .map(|i| format!("s{nr_shards}-w{w}-k{i}").into_bytes())
                .collect()
        })
        .collect();
    let mut tracks: Vec<Vec<Track>> =
        vec![vec![Track::new(); CRASH_KEYS_PER_WORKER]; CRASH_WORKERS];
    for cycle in 0..cycles {
        let (mode, flags) = cycle_flags(cycle);
        let mode = mode.as_str();
        let mut server = start_log(&data_dir, nr_shards, &flags);
        let delay = Duration::from_millis(rng.gen_range(20..300));
        let inputs = std::mem::take(&mut tracks);
        tracks = run_until_killed(&mut server, inputs, delay, |w, tracks, client, killed| {
            let worker_seed = seed ^ ((cycle as u64) << 32) ^ (w as u64 + 1);
            let who = format!("shards={nr_shards} cycle={cycle} {mode} worker={w}");
            let keys = &keys[w];
            single_key_worker(
                client,
                keys,
                tracks,
                CRASH_MAX_BURSTS,
                worker_seed,
                &who,
                killed,
            )
        });
        let server = start_log(&data_dir, nr_shards, &flags);
        let mut client = server.client();
        let mut nr_present = 0;
        for (w, worker_tracks) in tracks.iter_mut().enumerate() {
            for ((key, track), found) in keys[w]
                .iter()
                .zip(worker_tracks)
                .zip(getv_all(&mut client, &keys[w]))
            {
                nr_present += u64::from(found != KeyState::Absent);
                let what = format!("shards={nr_shards} cycle={cycle} {mode}: key {}", show(key));
                track.settle(found, &what);
            }
        }
        let stats = client.stats().expect("stats");
        assert_eq!(stats["keys"], nr_present, "cycle {cycle}: {stats:?}");
        drop(server);
    }
}

#[test]
fn acknowledged_writes_survive_kill_9_at_random_moments_in_every_fsync_mode() {
    let seed = test_seed("acknowledged_writes_survive_kill_9");
    std::thread::scope(|scope| {
        let two = scope.spawn(|| crash_cycles(2, 9, seed));
        let three = scope.spawn(|| crash_cycles(3, 9, seed.wrapping_add(1)));
        two.join().expect("2 shards");
        three.join().expect("3 shards");
    });
}

/// Bursts each writer sends in the compaction test.
const COMPACTION_BURSTS: usize = 400;

/// Online compaction rewrites a shard's log while requests keep coming (BRIEF
/// §5). With a tiny threshold the logs are compacted again and again under
/// concurrent writers, in every fsync mode: every write must be acknowledged
/// correctly, readable at once and after kill -9, and no shard may die.
#[test]
fn compaction_under_concurrent_writes_loses_nothing_and_stops_no_shard() {
    let seed = test_seed("compaction_under_concurrent_writes");
    for mode in FSYNC_MODES {
        let (_temp, data_dir) = temp_data_dir();
        let mut flags = fsync_flags(mode);
        flags.extend_from_slice(&["--compact-min-bytes", SMALL_COMPACT_MIN]);
        let mut server = start_log(&data_dir, 2, &flags);
        let keys: Vec<Vec<Vec<u8>>> = (0..CRASH_WORKERS)
            .map(|w| {
                (0..CRASH_KEYS_PER_WORKER)
                    .map(|i| format!("compact-{mode}-w{w}-k{i}").into_bytes())
                    .collect()
            })
            .collect();
        let never_killed = AtomicBool::new(false);
        let clients: Vec<Client> = (0..CRASH_WORKERS).map(|_| server.client()).collect();
        let joined: Vec<std::thread::Result<Vec<Track>>> = std::thread::scope(|scope| {
            let workers: Vec<_> = clients
                .into_iter()
                .enumerate()
                .map(|(w, client)| {
                    let (keys, never_killed) = (&keys[w], &never_killed);
                    scope.spawn(move || {
                        let who = format!("--fsync {mode} compacting, worker {w}");
                        let tracks = vec![Track::new(); keys.len()];
                        let worker_seed = seed ^ (w as u64 + 1);
                        single_key_worker(
                            client,
                            keys,
                            tracks,
                            COMPACTION_BURSTS,
                            worker_seed,
                            &who,
                            never_killed,
                        )
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join()).collect()
        });
        let stderr = server.stderr();
        let mut tracks = Vec::new();
        for worker in joined {
            match worker {
                Ok(worker_tracks) => tracks.push(worker_tracks),
                Err(panic) => {
                    eprintln!("--fsync {mode}: server stderr:\n{stderr}");
                    std::panic::resume_unwind(panic);
                }
            }
        }
        assert!(
            !stderr.contains("panicked"),
            "--fsync {mode}: the server panicked:\n{stderr}"
        );
        eprintln!(
            "--fsync {mode}: {} compactions",
            stderr.matches("compacted").count()
        );
        // Every write was acknowledged: the state is exact, now and after kill -9.
        for round in ["before", "after"] {
            let mut client = server.client();
            for (w, worker_tracks) in tracks.iter_mut().enumerate() {
                for ((key, track), found) in keys[w]
                    .iter()
                    .zip(worker_tracks)
                    .zip(getv_all(&mut client, &keys[w]))
                {
                    assert_eq!(
                        found,
                        track.confirmed,
                        "--fsync {mode}, {round} kill -9: key {}",
                        show(key)
                    );
                }
            }
            if round == "before" {
                stop(&mut server, libc::SIGKILL);
                server = start_log(&data_dir, 2, &flags);
            }
        }
    }
}
