//! Each `--fsync` mode keeps its promise across `kill -9` of the log-engine
//! server: a write's record is in its shard's log file by the time its reply
//! arrives, so an acknowledged write survives a kill right after the reply;
//! and SIGTERM then restart keeps everything, STATS included.

mod common;

use common::crash::{fsync_flags, start_log, stop, temp_data_dir, write_mixed, FSYNC_MODES};
use common::keys::{key_on_shard, show};
use common::logs::{log_path, records_so_far, Kind};
use common::model::{KeyState, Model};
use common::test_seed;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rmpv::Value;

/// Every mode promises the records are *written* before the reply (BRIEF §5),
/// which is what makes an acknowledged write survive kill -9. So once the
/// reply is in, the record must be in the file. With one shard every key is
/// owned by the connection's own shard; with two, one of each pair is
/// forwarded to the other shard.
#[test]
fn a_write_is_in_its_shards_log_file_by_the_time_its_reply_arrives() {
    for nr_shards in [1, 2] {
        for mode in FSYNC_MODES {
            let (_temp, data_dir) = temp_data_dir();
            let server = start_log(&data_dir, nr_shards, &fsync_flags(mode));
            let mut client = server.client();
            for i in 0..40 {
                let keys: Vec<Vec<u8>> = (0..nr_shards)
                    .map(|shard| key_on_shard(&format!("seen-{i}"), shard, nr_shards))
                    .collect();
                for key in &keys {
                    client.set(key, Value::from(i)).expect("SET");
                }
                for (shard, key) in keys.iter().enumerate() {
                    let path = log_path(&data_dir, shard);
                    assert!(
                        records_so_far(&path).contains(&Kind::Put(key.clone(), 1)),
                        "--shards {nr_shards} --fsync {mode}: SET {} was acknowledged before its \
                         record was written to {}; a kill -9 now would lose an acknowledged write",
                        show(key),
                        path.display()
                    );
                }
            }
        }
    }
}

#[test]
fn acknowledged_writes_survive_kill_9_right_after_the_reply_in_each_fsync_mode() {
    let seed = test_seed("acknowledged_writes_survive_kill_9_right_after_the_reply");
    let mut rng = StdRng::seed_from_u64(seed);
    // interval: a period far longer than the test, so no timer sync helps.
    let modes: [(&str, &[&str]); 3] = [
        ("always", &["--fsync", "always"]),
        (
            "interval",
            &["--fsync", "interval", "--fsync-interval-ms", "60000"],
        ),
        ("never", &["--fsync", "never"]),
    ];
    for (mode, flags) in modes {
        let (_temp, data_dir) = temp_data_dir();
        let keys: Vec<Vec<u8>> = (0..80)
            .map(|i| format!("{mode}-{i}").into_bytes())
            .collect();
        let mut model = Model::default();
        let mut server = start_log(&data_dir, 3, flags);
        let mut client = server.client();
        write_mixed(&mut client, &mut model, &mut rng, &keys, 3, mode);
        // The very last acknowledged write, then kill at once.
        let last = key_on_shard(&format!("{mode}-last"), 2, 3);
        assert_eq!(client.putv(&last, "last".into(), 0).expect("PUTV"), Ok(1));
        model.set_state(&last, KeyState::Present("last".into(), 1));
        stop(&mut server, libc::SIGKILL);
        let server = start_log(&data_dir, 3, flags);
        model.check_all(
            &mut server.client(),
            &format!("--fsync {mode} after kill -9"),
        );
    }
}

#[test]
fn a_graceful_sigterm_then_restart_keeps_everything_and_the_same_stats() {
    let seed = test_seed("a_graceful_sigterm_then_restart");
    let mut rng = StdRng::seed_from_u64(seed);
    for flags in [
        &["--fsync", "never"][..],
        &["--fsync", "interval", "--fsync-interval-ms", "60000"],
    ] {
        let (_temp, data_dir) = temp_data_dir();
        let keys: Vec<Vec<u8>> = (0..100).map(|i| format!("term-{i}").into_bytes()).collect();
        let mut model = Model::default();
        let mut server = start_log(&data_dir, 3, flags);
        let mut client = server.client();
        write_mixed(&mut client, &mut model, &mut rng, &keys, 3, "term");
        let stats_before = client.stats().expect("stats");
        drop(client);
        stop(&mut server, libc::SIGTERM);
        let server = start_log(&data_dir, 3, flags);
        let mut client = server.client();
        model.check_all(&mut client, &format!("{flags:?} after SIGTERM"));
        let stats_after = client.stats().expect("stats");
        for name in ["keys", "value_bytes"] {
            assert_eq!(
                stats_after[name], stats_before[name],
                "{flags:?}: STATS {name}"
            );
        }
    }
}
