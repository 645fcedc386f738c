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
    println!("live on disk {live_on_disk}, largest sealed {largest}, bound {bound}, {merges} merges");
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
