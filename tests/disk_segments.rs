//! The disk engine's segments (docs/storage.md, *Segments*): once the active
//! file `shard-<i>.log` passes `--segment-bytes`, it is sealed as
//! `shard-<i>.<seq>.seg` and a new one started. Values stay byte-exact
//! across many rolls and restarts, a crash at every step of a roll loses
//! nothing acknowledged, damage in a sealed segment refuses the start, and a
//! compaction leaves one file per shard.

mod common;

use common::crash::{assert_mentions, stop, temp_data_dir};
use common::keys::key_on_shard;
use common::{
    arm_failpoint, assert_reads_back, force_compaction, http_addr, random_bin, start_on,
    test_seed, TestServer,
};
use rand::SeedableRng;
use rmpv::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A segment size that rolls after a few writes.
const SEGMENT_BYTES: &str = "16KiB";
/// Compaction out of the way (it would fold the segments into one file).
const NO_COMPACTION: &str = "1GiB";

/// Shard `shard`'s sealed segments in `data_dir`, oldest first.
fn sealed_segments(data_dir: &Path, shard: usize) -> Vec<PathBuf> {
    let prefix = format!("shard-{shard}.");
    let mut sealed: Vec<PathBuf> = std::fs::read_dir(data_dir.join("log"))
        .expect("read the log directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".seg")
        })
        .collect();
    sealed.sort();
    sealed
}

fn disk_flags<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut flags = vec![
        "--engine",
        "disk",
        "--segment-bytes",
        SEGMENT_BYTES,
        "--compact-min-bytes",
        NO_COMPACTION,
    ];
    flags.extend_from_slice(extra);
    flags
}

/// Writes `nr_keys` keys of every size class (some overwritten), recording
/// each acknowledged value in `written`.
fn write_keys(
    client: &mut corekv::client::Client,
    rng: &mut rand::rngs::StdRng,
    tag: &str,
    nr_keys: usize,
    written: &mut BTreeMap<Vec<u8>, Value>,
) {
    for i in 0..nr_keys {
        let key = format!("{tag}:{}", i % (nr_keys * 3 / 4).max(1)).into_bytes();
        let len = [1, 100, 1000, 4000, 4097, 9000][i % 6];
        let value = random_bin(rng, len);
        client.set(&key, value.clone()).expect("SET");
        written.insert(key, value);
    }
}

fn assert_all_read_back(
    client: &mut corekv::client::Client,
    written: &BTreeMap<Vec<u8>, Value>,
    when: &str,
) {
    for (key, value) in written {
        assert_reads_back(client, key, value, when);
    }
}

#[test]
fn values_stay_byte_exact_across_many_rolls_and_restarts() {
    let seed = test_seed("segments byte-exact");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let flags = disk_flags(&[]);
    let mut server = start_on(&data_dir, 2, &flags);
    let mut client = server.client();
    let mut written = BTreeMap::new();
    write_keys(&mut client, &mut rng, "a", 200, &mut written);
    let rolled: usize = (0..2).map(|s| sealed_segments(&data_dir, s).len()).sum();
    assert!(rolled >= 10, "the logs rolled many times ({rolled} sealed segments)");
    assert_all_read_back(&mut client, &written, "after the rolls");
    for (round, signal) in [libc::SIGTERM, libc::SIGKILL, libc::SIGKILL].into_iter().enumerate() {
        stop(&mut server, signal);
        server = start_on(&data_dir, 2, &flags);
        client = server.client();
        assert_all_read_back(&mut client, &written, &format!("after signal {signal}"));
        write_keys(&mut client, &mut rng, &format!("r{round}"), 60, &mut written);
        for key in written.keys().take(20).cloned().collect::<Vec<_>>() {
            client.del(&key).expect("DEL");
            written.remove(&key);
        }
    }
    stop(&mut server, libc::SIGKILL);
    server = start_on(&data_dir, 2, &flags);
    client = server.client();
    assert_all_read_back(&mut client, &written, "at the end");
    assert_eq!(client.keys(b"*").expect("KEYS").len(), written.len());
    stop(&mut server, libc::SIGTERM);
}
