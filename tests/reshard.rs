//! Restarting the log-engine server with more or fewer shards moves every
//! key to its new owner with its exact version, and leaves exactly one log
//! per shard (the reference model of tests/common follows every write).

mod common;

use common::crash::{start_log, stop, temp_data_dir, write_mixed};
use common::model::Model;
use common::test_seed;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::path::Path;

fn log_files(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir.join("log"))
        .expect("log dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn restarting_with_more_or_fewer_shards_keeps_every_key_and_version() {
    let seed = test_seed("restarting_with_more_or_fewer_shards");
    let mut rng = StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let keys: Vec<Vec<u8>> = (0..120)
        .map(|i| format!("reshard-{i}").into_bytes())
        .collect();
    let mut model = Model::default();
    // (shard count of this run, how the run ends)
    let runs = [
        (2, libc::SIGKILL),
        (3, libc::SIGTERM),
        (1, libc::SIGKILL),
        (2, libc::SIGTERM),
        (2, libc::SIGTERM),
    ];
    for (run, (nr_shards, signal)) in runs.into_iter().enumerate() {
        let mut server = start_log(&data_dir, nr_shards, &[]);
        let context = format!("run {run} with {nr_shards} shards");
        let mut client = server.client();
        model.check_all(&mut client, &context);
        let mut expected_files: Vec<String> =
            (0..nr_shards).map(|i| format!("shard-{i}.log")).collect();
        expected_files.push("SHARDS".into());
        expected_files.sort();
        assert_eq!(log_files(&data_dir), expected_files, "{context}");
        assert_eq!(
            std::fs::read_to_string(data_dir.join("log/SHARDS")).expect("SHARDS"),
            format!("{nr_shards}\n")
        );
        assert!(
            !data_dir.join("log.new").exists() && !data_dir.join("log.old").exists(),
            "{context}"
        );
        write_mixed(
            &mut client,
            &mut model,
            &mut rng,
            &keys,
            nr_shards,
            &format!("run{run}"),
        );
        model.check_all(&mut client, &format!("{context}, before stopping"));
        drop(client);
        stop(&mut server, signal);
    }
}
