//! The disk engine's segments (docs/storage.md, *Segments*): once the active
//! file `shard-<i>.log` passes `--segment-bytes`, it is sealed as
//! `shard-<i>.<seq>.seg` and a new one started. Values stay byte-exact
//! across many rolls and restarts, a crash at every step of a roll loses
//! nothing acknowledged, damage in a sealed segment refuses the start, and a
//! compaction leaves one file per shard.

mod common;

use common::crash::{assert_mentions, stop, temp_data_dir};
use common::{
    arm_failpoint, assert_all_read_back, assert_reads_back, force_compaction, http_addr,
    random_bin, run_backup, start_on, test_seed, TestServer,
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
    assert!(
        rolled >= 10,
        "the logs rolled many times ({rolled} sealed segments)"
    );
    assert_all_read_back(&mut client, &written, "after the rolls");
    for (round, signal) in [libc::SIGTERM, libc::SIGKILL, libc::SIGKILL]
        .into_iter()
        .enumerate()
    {
        stop(&mut server, signal);
        server = start_on(&data_dir, 2, &flags);
        client = server.client();
        assert_all_read_back(&mut client, &written, &format!("after signal {signal}"));
        write_keys(
            &mut client,
            &mut rng,
            &format!("r{round}"),
            60,
            &mut written,
        );
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

/// A disk-engine server with the HTTP API (for failpoints) on `data_dir`.
fn start_with_http(
    data_dir: &Path,
    nr_shards: usize,
    extra: &[&str],
) -> (TestServer, std::net::SocketAddr) {
    let mut flags = disk_flags(&["--http-addr", "127.0.0.1:0"]);
    flags.extend_from_slice(extra);
    let mut server = start_on(data_dir, nr_shards, &flags);
    let http = http_addr(&mut server);
    (server, http)
}

#[test]
fn a_crash_at_every_step_of_a_roll_loses_nothing_acknowledged() {
    let seed = test_seed("segments roll crash");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Each step's failpoint fails the roll there (poisoning the log, as a
    // failed write does), and the server is then killed: what is on disk is
    // what a crash at that step leaves.
    for (step, sealed_after) in [("sync", 0), ("rename", 0), ("create", 1), ("dir_fsync", 1)] {
        let (_temp, data_dir) = temp_data_dir();
        let (mut server, http) = start_with_http(&data_dir, 1, &[]);
        let mut client = server.client();
        let mut written = BTreeMap::new();
        for i in 0..5 {
            let key = format!("before:{i}").into_bytes();
            let value = random_bin(&mut rng, 1000);
            client
                .set(&key, value.clone())
                .expect("SET before the roll");
            written.insert(key, value);
        }
        arm_failpoint(http, &format!("segment::{step}"), "return");
        let mut refused = None;
        for i in 0..100 {
            let key = format!("during:{i}").into_bytes();
            let value = random_bin(&mut rng, 2000);
            match client.set(&key, value.clone()) {
                Ok(()) => {
                    written.insert(key, value);
                }
                Err(_) => {
                    refused = Some(key);
                    break;
                }
            }
        }
        let refused = refused.unwrap_or_else(|| panic!("{step}: no write was refused"));
        stop(&mut server, libc::SIGKILL);
        let log_dir = data_dir.join("log");
        assert_eq!(
            sealed_segments(&data_dir, 0).len(),
            sealed_after,
            "{step}: sealed segments after the failed roll"
        );
        if step == "create" {
            assert!(
                !log_dir.join("shard-0.log").exists(),
                "{step}: no active file"
            );
            assert!(
                log_dir.join("shard-0.log.tmp").exists(),
                "{step}: the new one half made"
            );
        }
        let flags = disk_flags(&[]);
        let mut server = start_on(&data_dir, 1, &flags);
        let mut client = server.client();
        // The files themselves may be in the middle of the next roll now
        // (the active file is past the segment size): the start says it
        // made the missing active file.
        if step == "create" {
            common::wait_for_line(&mut server, &["shard-0.log: creating it"]);
            common::wait_for_line(&mut server, &["removing", "shard-0.log.tmp"]);
        }
        assert_all_read_back(&mut client, &written, &format!("after a crash at {step}"));
        // The refused write was never acknowledged: either outcome is right.
        client.get(&refused).expect("GET of the refused key");
        write_keys(&mut client, &mut rng, step, 40, &mut written);
        assert!(
            sealed_segments(&data_dir, 0).len() > sealed_after,
            "{step}: rolls again"
        );
        stop(&mut server, libc::SIGKILL);
        let mut server = start_on(&data_dir, 1, &flags);
        let mut client = server.client();
        assert_all_read_back(&mut client, &written, &format!("{step}: at the end"));
        stop(&mut server, libc::SIGTERM);
    }
}

/// Flips one byte at `offset` of `path`.
fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset as usize] ^= 0x5a;
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn damage_in_a_sealed_segment_is_refused_with_its_file_and_offset_even_at_its_end() {
    let seed = test_seed("segments damage");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let flags = disk_flags(&[]);
    let mut server = start_on(&data_dir, 1, &flags);
    let mut client = server.client();
    let mut written = BTreeMap::new();
    write_keys(&mut client, &mut rng, "k", 60, &mut written);
    stop(&mut server, libc::SIGTERM);
    let sealed = sealed_segments(&data_dir, 0);
    assert!(sealed.len() >= 3, "{} sealed segments", sealed.len());
    let first = &sealed[0];
    let name = first
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let saved = std::fs::read(first).expect("read the segment");
    // A flipped byte in the middle of its records.
    flip_byte(first, 100);
    let refused = TestServer::start_in(&data_dir, 1, &flags)
        .err()
        .expect("the start is refused");
    assert_mentions(&refused.1, &[&name, "is corrupt at offset", "--salvage"]);
    // Its last record cut short: a torn tail is corruption too in a sealed file.
    std::fs::write(first, &saved[..saved.len() - 10]).expect("cut the segment");
    let refused = TestServer::start_in(&data_dir, 1, &flags)
        .err()
        .expect("the start is refused");
    assert_mentions(
        &refused.1,
        &[&name, "sealed segment", "at offset", "--salvage"],
    );
    // --salvage starts, keeping the records before the damage.
    let mut salvage = flags.clone();
    salvage.push("--salvage");
    let mut server = start_on(&data_dir, 1, &salvage);
    let mut client = server.client();
    let last = written.keys().last().cloned().expect("a key");
    assert_reads_back(&mut client, &last, &written[&last], "after salvage");
    stop(&mut server, libc::SIGTERM);
    // The salvaged segment was cut: a start without --salvage works again.
    let mut server = start_on(&data_dir, 1, &flags);
    stop(&mut server, libc::SIGTERM);
}

/// Whether the log file at `path` is a BASE (its header's flags word).
fn is_base(path: &Path) -> bool {
    let bytes = std::fs::read(path).expect("read a log file");
    bytes.len() >= 16 && u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) & 1 == 1
}

#[test]
fn a_compaction_supersedes_every_sealed_segment_and_copied_back_they_resurrect_nothing() {
    let seed = test_seed("segments compaction");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    // Merges off: whole-log compaction reclaims the space, as it does when
    // no sealed segment is worth merging.
    let flags = [
        "--engine",
        "disk",
        "--segment-bytes",
        SEGMENT_BYTES,
        "--compact-min-bytes",
        "256KiB",
        "--merge-live-percent",
        "0",
    ];
    let mut server = start_on(&data_dir, 1, &flags);
    let mut client = server.client();
    let doomed: Vec<Vec<u8>> = (0..10)
        .map(|i| format!("doomed:{i}").into_bytes())
        .collect();
    for key in &doomed {
        client.set(key, random_bin(&mut rng, 2000)).expect("SET");
    }
    let mut written = BTreeMap::new();
    write_keys(&mut client, &mut rng, "kept", 40, &mut written);
    // The doomed keys' PUTs are in these sealed segments.
    let saved: Vec<(PathBuf, Vec<u8>)> = sealed_segments(&data_dir, 0)
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("read a segment");
            (path, bytes)
        })
        .collect();
    assert!(saved.len() >= 3, "{} sealed segments", saved.len());
    for key in &doomed {
        client.del(key).expect("DEL");
    }
    let (filler, value, _) = force_compaction(&mut server, &mut client, 0, 1);
    written.insert(filler, value);
    // Every segment sealed before the compaction is gone; what is left is
    // the BASE and anything sealed after it.
    for (path, _) in &saved {
        assert!(!path.exists(), "{} was deleted", path.display());
    }
    assert_all_read_back(&mut client, &written, "after the compaction");
    // Stopped: no roll is under way while the files are looked at.
    stop(&mut server, libc::SIGTERM);
    let mut files = sealed_segments(&data_dir, 0);
    files.push(data_dir.join("log").join("shard-0.log"));
    assert!(is_base(&files[0]), "{} is a BASE", files[0].display());
    // A crash between the BASE's rename and the deletes leaves them: put
    // them back. Replayed, they would bring the doomed keys back.
    for (path, bytes) in &saved {
        std::fs::write(path, bytes).expect("copy a segment back");
    }
    let mut server = start_on(&data_dir, 1, &flags);
    let mut client = server.client();
    for key in &doomed {
        let found = client.get(key).expect("GET");
        let key = String::from_utf8_lossy(key);
        assert!(found.is_none(), "{key} was deleted and stays deleted");
    }
    assert_all_read_back(&mut client, &written, "after the restart");
    for (path, _) in &saved {
        assert!(
            !path.exists(),
            "{} was deleted at the start",
            path.display()
        );
    }
    // Sealed, the BASE keeps its hint, and a restart loads the hint.
    write_keys(&mut client, &mut rng, "later", 15, &mut written);
    stop(&mut server, libc::SIGTERM);
    let base = sealed_segments(&data_dir, 0)
        .into_iter()
        .next()
        .expect("the BASE was sealed");
    assert!(is_base(&base), "{} is the BASE", base.display());
    assert!(
        base.with_extension("hint").exists(),
        "its hint moved with it"
    );
    let mut server = start_on(&data_dir, 1, &flags);
    common::wait_for_line(&mut server, &["hint file entries"]);
    let mut client = server.client();
    assert_all_read_back(
        &mut client,
        &written,
        "after a restart from the sealed hint",
    );
    stop(&mut server, libc::SIGTERM);
}

#[test]
fn cross_shard_batches_stay_whole_across_rolls_between_prepare_and_decide() {
    const NR_SHARDS: usize = 2;
    let seed = test_seed("segments atomic");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    // The smallest segments: nearly every record rolls its shard's log, so
    // a PREPARE and its DECIDE are in different files again and again.
    let flags = [
        "--engine",
        "disk",
        "--segment-bytes",
        "4KiB",
        "--compact-min-bytes",
        NO_COMPACTION,
    ];
    let mut server = start_on(&data_dir, NR_SHARDS, &flags);
    let mut client = server.client();
    let pairs = common::keys::pairs_across_shards(4, NR_SHARDS);
    let mut last = BTreeMap::new();
    for round in 0..60 {
        let value = random_bin(&mut rng, 1500 + round);
        common::set_pair_atomically(&mut client, &pairs[round % pairs.len()], value, &mut last);
    }
    for shard in 0..NR_SHARDS {
        let sealed = sealed_segments(&data_dir, shard).len();
        assert!(sealed >= 20, "shard {shard} rolled {sealed} times");
    }
    for signal in [libc::SIGKILL, libc::SIGTERM] {
        stop(&mut server, signal);
        server = start_on(&data_dir, NR_SHARDS, &flags);
        client = server.client();
        assert_all_read_back(&mut client, &last, &format!("after signal {signal}"));
    }
    stop(&mut server, libc::SIGTERM);
}

/// The files in `data_dir/log` whose names end in `.seg`, over all shards.
fn all_sealed(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("log"))
        .expect("read the log directory")
        .filter(|entry| {
            let entry = entry.as_ref().expect("a directory entry");
            entry.file_name().to_string_lossy().ends_with(".seg")
        })
        .count()
}

#[test]
fn a_shard_count_change_and_an_engine_switch_read_values_from_every_segment() {
    let seed = test_seed("segments reshard");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let flags = disk_flags(&[]);
    let mut server = start_on(&data_dir, 2, &flags);
    let mut client = server.client();
    let mut written = BTreeMap::new();
    write_keys(&mut client, &mut rng, "moved", 150, &mut written);
    assert!(
        all_sealed(&data_dir) >= 6,
        "{} sealed segments",
        all_sealed(&data_dir)
    );
    stop(&mut server, libc::SIGKILL);
    // Every key moves to its owner under 3 shards: one file per shard.
    let mut server = start_on(&data_dir, 3, &flags);
    let mut client = server.client();
    assert_all_read_back(&mut client, &written, "on 3 shards");
    // One file per shard was written, a BASE: larger than a segment, it may
    // have been sealed as soon as the shard started, whole.
    for shard in 0..3 {
        let sealed = sealed_segments(&data_dir, shard);
        assert!(sealed.len() <= 1, "shard {shard}: {sealed:?}");
        assert!(
            sealed.iter().all(|path| is_base(path)),
            "shard {shard}: {sealed:?}"
        );
    }
    write_keys(&mut client, &mut rng, "three", 100, &mut written);
    assert!(all_sealed(&data_dir) >= 3, "rolls again");
    stop(&mut server, libc::SIGTERM);
    // The log engine keeps one file per shard: it folds the segments in.
    let log_flags = ["--engine", "log", "--compact-min-bytes", NO_COMPACTION];
    let mut server = start_on(&data_dir, 3, &log_flags);
    let mut client = server.client();
    assert_all_read_back(&mut client, &written, "on the log engine");
    assert_eq!(all_sealed(&data_dir), 0, "no segments under the log engine");
    stop(&mut server, libc::SIGTERM);
    let mut server = start_on(&data_dir, 3, &flags);
    let mut client = server.client();
    assert_all_read_back(&mut client, &written, "back on the disk engine");
    stop(&mut server, libc::SIGTERM);
}

#[test]
fn a_backup_of_a_log_in_many_segments_restores_every_value() {
    let seed = test_seed("segments backup");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (temp, data_dir) = temp_data_dir();
    let (mut server, http) = start_with_http(&data_dir, 2, &[]);
    let mut client = server.client();
    let mut written = BTreeMap::new();
    write_keys(&mut client, &mut rng, "saved", 150, &mut written);
    assert!(
        all_sealed(&data_dir) >= 6,
        "{} sealed segments",
        all_sealed(&data_dir)
    );
    let backup = temp.path().join("backup");
    run_backup(&backup, http);
    // Written after the backup: not in it.
    client
        .set(b"after", random_bin(&mut rng, 10))
        .expect("SET after the backup");
    stop(&mut server, libc::SIGTERM);
    assert_eq!(all_sealed(&backup), 0, "a backup is one file per shard");
    let mut restored = start_on(&backup, 2, &disk_flags(&[]));
    let mut client = restored.client();
    assert_all_read_back(&mut client, &written, "from the backup");
    assert_eq!(client.get(b"after").expect("GET"), None);
    stop(&mut restored, libc::SIGTERM);
}

#[test]
fn the_log_engine_never_rolls_whatever_the_segment_size() {
    let seed = test_seed("segments log engine");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let flags = [
        "--engine",
        "log",
        "--segment-bytes",
        "4KiB",
        "--compact-min-bytes",
        NO_COMPACTION,
    ];
    let mut server = start_on(&data_dir, 1, &flags);
    let mut client = server.client();
    let mut written = BTreeMap::new();
    write_keys(&mut client, &mut rng, "log", 100, &mut written);
    stop(&mut server, libc::SIGKILL);
    let log = data_dir.join("log").join("shard-0.log");
    let len = std::fs::metadata(&log).expect("the log").len();
    assert!(len > 64 << 10, "one file of {len} bytes");
    assert_eq!(all_sealed(&data_dir), 0);
    let mut server = start_on(&data_dir, 1, &flags);
    let mut client = server.client();
    assert_all_read_back(&mut client, &written, "after a restart");
    stop(&mut server, libc::SIGTERM);
}

#[test]
fn rolls_happen_in_every_fsync_mode_and_a_kill_loses_nothing_acknowledged() {
    let seed = test_seed("segments fsync modes");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for mode in ["always", "interval", "never"] {
        let (_temp, data_dir) = temp_data_dir();
        let flags = disk_flags(&["--fsync", mode]);
        let mut server = start_on(&data_dir, 1, &flags);
        let mut client = server.client();
        let mut written = BTreeMap::new();
        // One write at a time: in `interval` and `never` modes each SET's
        // own wait writes its records, and the flusher must still roll.
        write_keys(&mut client, &mut rng, mode, 60, &mut written);
        let sealed = sealed_segments(&data_dir, 0).len();
        assert!(sealed >= 3, "fsync {mode}: {sealed} sealed segments");
        stop(&mut server, libc::SIGKILL);
        let mut server = start_on(&data_dir, 1, &flags);
        let mut client = server.client();
        assert_all_read_back(
            &mut client,
            &written,
            &format!("fsync {mode}, after kill -9"),
        );
        stop(&mut server, libc::SIGTERM);
    }
}
