//! The disk engine reclaims space by merging its emptiest sealed segments
//! (docs/storage.md, *Space reclamation*): under endless overwrites the log
//! stays within about twice its live data, values stay byte-exact, deleted
//! keys stay deleted, and a crash at every step of a merge loses nothing
//! acknowledged and resurrects nothing.

mod common;

use common::crash::{stop, temp_data_dir};
use common::{assert_all_read_back, count_lines, random_bin, start_on, test_seed};
use rand::SeedableRng;
use rmpv::Value;
use std::collections::BTreeMap;
use std::path::Path;

const SEGMENT_BYTES: u64 = 64 << 10;

fn merge_flags<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut flags = vec![
        "--engine",
        "disk",
        "--segment-bytes",
        "64KiB",
        "--compact-min-bytes",
        "256KiB",
    ];
    flags.extend_from_slice(extra);
    flags
}

/// Bytes of shard `shard`'s sealed segments (the active file is left out:
/// it is allocated a MiB or more ahead of its records).
fn sealed_bytes(data_dir: &Path, shard: usize) -> u64 {
    let prefix = format!("shard-{shard}.");
    std::fs::read_dir(data_dir.join("log"))
        .expect("read the log directory")
        .map(|entry| entry.expect("a directory entry"))
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix) && name.ends_with(".seg")
        })
        .map(|entry| entry.metadata().expect("metadata").len())
        .sum()
}

/// The entries of every hint file in `data_dir/log` (the count in each
/// header), and whether one belongs to a sealed segment that is not its
/// shard's oldest.
fn hint_entries(data_dir: &Path) -> (u64, bool) {
    let log_dir = data_dir.join("log");
    let mut names: Vec<String> = std::fs::read_dir(&log_dir)
        .expect("read the log directory")
        .map(|entry| {
            entry
                .expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    let (mut entries, mut later) = (0, false);
    for name in names.iter().filter(|name| name.ends_with(".hint")) {
        let bytes = std::fs::read(log_dir.join(name)).expect("read a hint");
        entries += u64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes"));
        let shard = name.split('.').next().unwrap_or_default();
        let oldest = names
            .iter()
            .find(|other| other.starts_with(&format!("{shard}.")) && other.ends_with(".seg"));
        let segment = name.replace(".hint", ".seg");
        later |= names.contains(&segment) && oldest != Some(&segment);
    }
    (entries, later)
}

/// Keys `tag:0` … `tag:<n-1>`.
fn named(tag: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("{tag}:{i}").into_bytes()).collect()
}

fn nr_merges(server: &mut common::TestServer) -> usize {
    count_lines(server, &["merged ", "sealed segments into"])
}

#[test]
fn endless_overwrites_keep_the_log_within_twice_its_live_data() {
    let seed = test_seed("merge bound");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let flags = merge_flags(&[]);
    let mut server = start_on(&data_dir, 1, &flags);
    let mut client = server.client();
    let mut written: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
    const KEYS: usize = 200;
    // 1000-byte values: three records to a 4 KiB block.
    let live_on_disk = (KEYS as u64).div_ceil(3) * 4096;
    let mut largest = 0;
    for round in 0..25 {
        for i in 0..KEYS {
            let key = format!("key:{i}").into_bytes();
            let value = random_bin(&mut rng, 1000);
            if let Err(e) = client.set(&key, value.clone()) {
                panic!("SET failed ({e}):\n{}", server.stderr());
            }
            written.insert(key, value);
        }
        largest = largest.max(sealed_bytes(&data_dir, 0));
        if round % 5 == 4 {
            assert_all_read_back(&mut client, &written, &format!("after round {round}"));
        }
    }
    let merges = nr_merges(&mut server);
    assert!(merges > 0, "no merge ran:\n{}", server.stderr());
    let bound = 2 * live_on_disk + 2 * SEGMENT_BYTES;
    println!(
        "live on disk {live_on_disk}, largest sealed {largest}, bound {bound}, {merges} merges"
    );
    assert!(
        largest <= bound,
        "the sealed segments reached {largest} bytes, over {bound}:\n{}",
        server.stderr()
    );
    stop(&mut server, libc::SIGKILL);
    let mut server = start_on(&data_dir, 1, &flags);
    let mut client = server.client();
    assert_all_read_back(&mut client, &written, "after a kill");
    stop(&mut server, libc::SIGTERM);
}

/// Overwrites the `hot` keys `rounds` times with 1000-byte values (merges
/// follow, their old segments being mostly dead).
fn overwrite(
    client: &mut corekv::client::Client,
    rng: &mut rand::rngs::StdRng,
    hot: &[Vec<u8>],
    rounds: usize,
    written: &mut BTreeMap<Vec<u8>, Value>,
) {
    for _ in 0..rounds {
        for key in hot {
            let value = random_bin(rng, 1000);
            client.set(key, value.clone()).expect("SET of a hot key");
            written.insert(key.clone(), value);
        }
    }
}

/// Every key of `written` reads back, and no other key exists.
fn assert_exactly(
    client: &mut corekv::client::Client,
    written: &BTreeMap<Vec<u8>, Value>,
    when: &str,
) {
    assert_all_read_back(client, written, when);
    let text = |key: &Vec<u8>| String::from_utf8_lossy(key).into_owned();
    let mut keys: Vec<String> = client.keys(b"*").expect("KEYS").iter().map(text).collect();
    keys.sort();
    let mut expected: Vec<String> = written.keys().map(text).collect();
    expected.sort();
    assert_eq!(keys, expected, "{when}: the keys present");
}

#[test]
fn deleted_keys_stay_deleted_and_deadlines_stay_set_when_newer_segments_are_merged_first() {
    let seed = test_seed("merge tombstones");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let flags = merge_flags(&[]);
    let mut server = start_on(&data_dir, 2, &flags);
    let mut client = server.client();
    let mut written = BTreeMap::new();
    // Cold keys, written once: they keep the oldest segments mostly live,
    // so the merges take newer segments and leave these be.
    let cold = named("cold", 120);
    for (i, key) in cold.iter().enumerate() {
        let value = random_bin(&mut rng, [10, 200, 1000, 3000][i % 4]);
        client.set(key, value.clone()).expect("SET of a cold key");
        written.insert(key.clone(), value);
    }
    let hot = named("hot", 60);
    overwrite(&mut client, &mut rng, &hot, 3, &mut written);
    // Their DELs and EXPIREs land in segments that the hot keys' overwrites
    // then empty: merged while the cold keys' PUTs stay where they are.
    let deadline = 4_000_000_000_000u64;
    let mut deadlines = BTreeMap::new();
    for (i, key) in cold.iter().enumerate() {
        match i % 3 {
            0 => {
                client.del(key).expect("DEL of a cold key");
                written.remove(key);
            }
            1 => {
                let at = deadline + i as u64;
                assert!(client.expire_at(key, at).expect("EXPIREAT"));
                deadlines.insert(key.clone(), at);
            }
            _ => {}
        }
        if i % 10 == 9 {
            overwrite(&mut client, &mut rng, &hot, 1, &mut written);
        }
    }
    let merges_before = nr_merges(&mut server);
    overwrite(&mut client, &mut rng, &hot, 15, &mut written);
    assert!(
        nr_merges(&mut server) > merges_before,
        "the overwrites merged segments:\n{}",
        server.stderr()
    );
    assert_exactly(&mut client, &written, "after the merges");
    for signal in [libc::SIGKILL, libc::SIGTERM] {
        stop(&mut server, signal);
        server = start_on(&data_dir, 2, &flags);
        client = server.client();
        assert_exactly(&mut client, &written, &format!("after signal {signal}"));
        // Every merged segment's hint is used, not only a shard's first
        // file's: the restart reads none of their values.
        let (hinted, later) = hint_entries(&data_dir);
        assert!(later, "some merged segment is not its shard's first file");
        let recovered = common::wait_for_line(&mut server, &["recovered", "keys from"]);
        assert!(
            recovered.contains(&format!(" and {hinted} hint file entries")),
            "every hint file's {hinted} entries were loaded: {recovered}"
        );
        for (key, at) in &deadlines {
            assert_eq!(
                client.expire_time(key).expect("EXPIRETIME"),
                corekv::client::KeyTtl::Remaining(*at),
                "the deadline of {}",
                String::from_utf8_lossy(key)
            );
        }
        overwrite(&mut client, &mut rng, &hot, 5, &mut written);
    }
    stop(&mut server, libc::SIGTERM);
}

#[test]
fn a_crash_at_every_step_of_a_merge_loses_nothing_and_resurrects_nothing() {
    let seed = test_seed("merge crash");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Each step's failpoint fails every merge there, and the server is then
    // killed: what is on disk is what a crash at that step leaves. With cold
    // keys the merges take newer segments (their DELs must stay); without,
    // they take the oldest (a prefix: its DELs go, and its BASE flag must
    // keep the older inputs from replaying).
    let steps = [
        ("write", "merging segments of"),
        ("sync", "merging segments of"),
        ("rename", "cannot put the merged segment in place"),
        ("dir_fsync", "syncing its directory failed"),
        ("delete", "cannot delete"),
    ];
    for (step, failure) in steps {
        for with_cold in [true, false] {
            let when = format!("{step}, cold keys {with_cold}");
            let (_temp, data_dir) = temp_data_dir();
            let flags = merge_flags(&["--http-addr", "127.0.0.1:0"]);
            let mut server = start_on(&data_dir, 1, &flags);
            let http = common::http_addr(&mut server);
            let mut client = server.client();
            let mut written = BTreeMap::new();
            let mut set_all =
                |client: &mut corekv::client::Client,
                 keys: &[Vec<u8>],
                 written: &mut BTreeMap<Vec<u8>, Value>| {
                    for key in keys {
                        let value = random_bin(&mut rng, 1500);
                        client.set(key, value.clone()).expect("SET");
                        written.insert(key.clone(), value);
                    }
                };
            if with_cold {
                set_all(&mut client, &named("cold", 90), &mut written);
            }
            // Keys to delete, a keeper after every eight: their segments
            // are merged once the DELs are in, and the keepers make every
            // output hold something.
            let doomed = named("doomed", 80);
            let keepers = named("keeper", 10);
            for (chunk, keeper) in doomed.chunks(8).zip(&keepers) {
                set_all(&mut client, chunk, &mut written);
                set_all(&mut client, std::slice::from_ref(keeper), &mut written);
            }
            common::arm_failpoint(http, &format!("merge::{step}"), "return");
            for key in &doomed {
                client.del(key).expect("DEL");
                written.remove(key);
            }
            let hot = named("hot", 40);
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 1);
            let mut failed = false;
            for _ in 0..40 {
                overwrite(&mut client, &mut rng, &hot, 1, &mut written);
                if count_lines(&mut server, &[failure]) > 0 {
                    failed = true;
                    break;
                }
            }
            assert!(failed, "{when}: no merge failed:\n{}", server.stderr());
            stop(&mut server, libc::SIGKILL);
            let mut server = start_on(&data_dir, 1, &merge_flags(&[]));
            let mut client = server.client();
            assert_exactly(&mut client, &written, &format!("after a crash at {when}"));
            overwrite(&mut client, &mut rng, &hot, 6, &mut written);
            stop(&mut server, libc::SIGKILL);
            let mut server = start_on(&data_dir, 1, &merge_flags(&[]));
            let mut client = server.client();
            assert_exactly(&mut client, &written, &format!("{when}: at the end"));
            stop(&mut server, libc::SIGTERM);
        }
    }
}

#[test]
fn a_merge_file_left_by_a_crash_is_removed_at_start() {
    let seed = test_seed("merge leftover");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let flags = merge_flags(&[]);
    let mut server = start_on(&data_dir, 1, &flags);
    let mut client = server.client();
    let mut written = BTreeMap::new();
    let hot = named("hot", 60);
    overwrite(&mut client, &mut rng, &hot, 3, &mut written);
    stop(&mut server, libc::SIGKILL);
    // Half a merge's output, as a crash while writing it leaves it: a copy
    // of a sealed segment cut short.
    let log_dir = data_dir.join("log");
    let sealed = std::fs::read_dir(&log_dir)
        .expect("read the log directory")
        .map(|entry| entry.expect("a directory entry").path())
        .find(|path| path.extension().is_some_and(|e| e == "seg"))
        .expect("a sealed segment");
    let bytes = std::fs::read(&sealed).expect("read the segment");
    let leftover = sealed.with_extension("seg.merge");
    std::fs::write(&leftover, &bytes[..bytes.len() / 2]).expect("write the leftover");
    let mut server = start_on(&data_dir, 1, &flags);
    let mut client = server.client();
    common::wait_for_line(&mut server, &["removing", ".seg.merge"]);
    assert!(!leftover.exists(), "the leftover is gone");
    assert_exactly(&mut client, &written, "after the start");
    stop(&mut server, libc::SIGTERM);
}

#[test]
fn cross_shard_batches_stay_whole_when_segments_with_their_prepares_and_decides_are_merged() {
    const NR_SHARDS: usize = 2;
    let seed = test_seed("merge atomic");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    // Small segments: PREPAREs and their DECIDEs often fall in different
    // segments, which a merge must take together.
    let flags = [
        "--engine",
        "disk",
        "--segment-bytes",
        "16KiB",
        "--compact-min-bytes",
        "64KiB",
    ];
    let mut server = start_on(&data_dir, NR_SHARDS, &flags);
    let mut client = server.client();
    let pairs = common::keys::pairs_across_shards(6, NR_SHARDS);
    let mut last = BTreeMap::new();
    let mut round = 0;
    for phase in 0..3 {
        for _ in 0..150 {
            let value = random_bin(&mut rng, 1000 + round % 700);
            common::set_pair_atomically(&mut client, &pairs[round % pairs.len()], value, &mut last);
            round += 1;
        }
        assert_exactly(&mut client, &last, &format!("phase {phase}"));
        let merges =
            nr_merges(&mut server) + count_lines(&mut server, &["nothing in them is live"]);
        println!("phase {phase}: {merges} merges");
        assert!(
            merges > 0,
            "phase {phase}: no merge ran:\n{}",
            server.stderr()
        );
        stop(&mut server, libc::SIGKILL);
        server = start_on(&data_dir, NR_SHARDS, &flags);
        client = server.client();
        assert_exactly(
            &mut client,
            &last,
            &format!("after a kill in phase {phase}"),
        );
    }
    stop(&mut server, libc::SIGTERM);
}

#[test]
fn kills_at_any_moment_while_segments_merge_lose_nothing_and_resurrect_nothing() {
    let seed = test_seed("merge kills");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let flags = merge_flags(&[]);
    let mut written = BTreeMap::new();
    let hot = named("hot", 50);
    let mut server = start_on(&data_dir, 1, &flags);
    let mut client = server.client();
    let mut merges = 0;
    for round in 0..6 {
        // Keys that live a while, then go: their DELs land among the
        // overwrites, which the merges keep emptying.
        let passing = named(&format!("passing{round}"), 20);
        for key in &passing {
            let value = random_bin(&mut rng, 2500);
            client.set(key, value.clone()).expect("SET");
            written.insert(key.clone(), value);
        }
        overwrite(&mut client, &mut rng, &hot, 4, &mut written);
        for key in passing.iter().step_by(2) {
            client.del(key).expect("DEL");
            written.remove(key);
        }
        overwrite(&mut client, &mut rng, &hot, 4, &mut written);
        merges += nr_merges(&mut server) + count_lines(&mut server, &["nothing in them is live"]);
        // The merges run on their own in the server: the kill lands
        // wherever one of them is.
        stop(&mut server, libc::SIGKILL);
        server = start_on(&data_dir, 1, &flags);
        client = server.client();
        assert_exactly(
            &mut client,
            &written,
            &format!("after the kill of round {round}"),
        );
    }
    assert!(merges >= 6, "{merges} merges ran");
    stop(&mut server, libc::SIGTERM);
}
