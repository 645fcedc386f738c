//! End to end: the load generator's workloads, shrunk, against the real
//! `corekv-server` binary. Every reply must match what a correct server sends,
//! and the increments counter must equal the successes counted. Uses the
//! loadgen's library entry point (a dev-dependency) rather than its binary,
//! whose path Cargo does not expose across crates. No figure is asserted:
//! only that the runs pass.

mod common;
use clap::Parser;
use common::TestServer;
use corekv_loadgen::{Args, Config, Report};

fn loadgen_config(flags: &[&str]) -> Config {
    let argv = std::iter::once("corekv-loadgen").chain(flags.iter().copied());
    Config::from_args(&Args::parse_from(argv)).expect("valid loadgen flags")
}

/// Runs the load generator against `server` with `flags` and `--quiet`.
fn run(server: &TestServer, flags: &[&str]) -> Report {
    let addr = server.addr.to_string();
    let mut all = vec!["--addr", &addr, "--quiet"];
    all.extend_from_slice(flags);
    let report = corekv_loadgen::run(&loadgen_config(&all)).expect("load generator runs");
    assert!(report.passed(), "{}", report.to_text());
    assert_eq!(report.errors, 0);
    report
}

#[test]
fn kvstore_workload_gets_every_reply_right_from_a_real_server() {
    let server = TestServer::start(2, &[]);
    let report = run(
        &server,
        &[
            "--preset",
            "kvstore",
            "--connections",
            "4",
            "--messages",
            "20",
            "--threads",
            "2",
            "--pipeline",
            "3",
        ],
    );
    assert_eq!(report.messages, 4 * 20);
    assert_eq!(report.ops, 4 * 20 * 100);
}

#[test]
fn atomic_batches_spread_over_shards_or_on_one_shard_read_back_their_writes() {
    let server = TestServer::start(2, &[]);
    for placement in ["spread", "one-shard"] {
        for keys in ["2", "16"] {
            let report = run(
                &server,
                &[
                    "--atomic-keys",
                    keys,
                    "--placement",
                    placement,
                    "--server-shards",
                    "2",
                    "--connections",
                    "4",
                    "--messages",
                    "25",
                    "--pipeline",
                    "2",
                    "--keys",
                    "2000",
                ],
            );
            let keys: u64 = keys.parse().expect("number");
            assert_eq!(report.messages, 4 * 25, "{placement} {keys}");
            assert_eq!(report.ops, 4 * 25 * 2 * keys, "K SETs + K GETs per batch");
        }
    }
}

#[test]
fn concave_gets_and_fresh_key_puts_get_the_documented_replies() {
    let server = TestServer::start(2, &[]);
    let shrink = ["--connections", "8", "--messages", "10"];
    for preset in ["concave-missing-gets", "concave-put-1"] {
        let mut flags = vec!["--preset", preset];
        flags.extend_from_slice(&shrink);
        let report = run(&server, &flags);
        assert_eq!(report.messages, 80, "{preset}");
    }
    // Twice: fresh keys of a second run must not collide with the first's.
    for _ in 0..2 {
        let mut flags = vec!["--preset", "concave-put-500", "--sets-per-message", "50"];
        flags.extend_from_slice(&shrink);
        let report = run(&server, &flags);
        assert_eq!(
            report.ops,
            8 * 10 * 50,
            "one ATOMIC of 50 PUTVs per message"
        );
    }
}

#[test]
fn contended_increments_are_counted_honestly_and_the_counter_matches() {
    let server = TestServer::start(2, &[]);
    let report = run(
        &server,
        &[
            "--preset",
            "concave-increments",
            "--connections",
            "8",
            "--messages",
            "200",
            "--threads",
            "2",
        ],
    );
    let increments = report.increments.expect("an increments report");
    assert_eq!(increments.attempts, 8 * 100);
    assert_eq!(
        increments.successes + increments.conflicts,
        increments.attempts
    );
    assert!(increments.counter.verified, "{:?}", increments.counter);
    assert_eq!(increments.counter.value, Some(increments.successes));
}

#[test]
fn mixed_zipf_workload_with_putv_tracks_every_value_and_version() {
    let server = TestServer::start(2, &[]);
    for putv in [&["--putv-ratio", "0.2"][..], &[][..]] {
        let mut flags = vec![
            "--get-ratio",
            "0.6",
            "--distribution",
            "zipf",
            "--ops-per-message",
            "4",
            "--connections",
            "4",
            "--messages",
            "200",
            "--pipeline",
            "4",
            "--keys",
            "1000",
        ];
        flags.extend_from_slice(putv);
        let report = run(&server, &flags);
        assert_eq!(report.ops, 4 * 200 * 4);
    }
}

#[test]
fn open_loop_runs_for_a_duration_after_a_warmup() {
    let server = TestServer::start(2, &[]);
    let report = run(
        &server,
        &[
            "--rate",
            "2000",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--connections",
            "4",
            "--get-ratio",
            "0.5",
            "--keys",
            "400",
        ],
    );
    assert_eq!(report.mode, "open-loop");
    assert_eq!(report.messages_expected, None);
    assert!(report.messages > 0, "{}", report.to_text());
}

#[test]
fn a_mix_whose_sets_carry_a_ttl_gets_every_reply_right_and_leaves_keys_expiring() {
    let server = TestServer::start(2, &[]);
    let flags = [
        "--get-ratio",
        "0.5",
        "--set-ttl-ms",
        "3600000",
        "--ops-per-message",
        "4",
        "--connections",
        "4",
        "--messages",
        "100",
        "--keys",
        "400",
    ];
    let report = run(&server, &flags);
    assert_eq!(report.ops, 4 * 100 * 4);
    let stats = server.client().stats().expect("STATS");
    assert!(stats["expires"] > 0, "{stats:?}");
}

/// The loading run docs/benchmarks.md gives for `--preloaded`: the fixed
/// workload, SETs only, `--keys` = connections × sets per message × messages,
/// so every connection writes each key of its partition once.
const LOAD_2000_KEYS: [&str; 14] = [
    "--connections",
    "4",
    "--keys",
    "2000",
    "--value-bytes",
    "100",
    "--sets-per-message",
    "50",
    "--gets-per-message",
    "0",
    "--messages",
    "10",
    "--pipeline",
    "2",
];

/// An open-loop, GET-only read of the 2 000 keys with `--preloaded`, on
/// `connections` connections (the key names do not depend on them when
/// `--keys` is a multiple of both runs' connections).
fn read_preloaded(connections: &str, protocol: &str) -> Vec<String> {
    [
        "--protocol",
        protocol,
        "--connections",
        connections,
        "--threads",
        "2",
        "--keys",
        "2000",
        "--value-bytes",
        "100",
        "--get-ratio",
        "1",
        "--preloaded",
        "--rate",
        "2000",
        "--duration",
        "0.5",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[test]
fn preloaded_gets_at_a_rate_hit_every_key_an_earlier_run_loaded() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let mut server = common::start_on(&data_dir, 2, &["--engine", "disk"]);
    let load = run(&server, &LOAD_2000_KEYS);
    assert_eq!(load.ops, 2_000);
    let stats = server.client().stats().expect("STATS");
    assert_eq!(stats["keys"], 2_000, "each key written once");
    // The benchmark reads keys a server holds from an earlier life.
    assert!(server.stop_with(libc::SIGTERM).success());
    let server = common::start_on(&data_dir, 2, &["--engine", "disk"]);
    for (connections, protocol) in [("4", "msgpack"), ("8", "resp")] {
        let flags = read_preloaded(connections, protocol);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let report = run(&server, &flags);
        let gets = report.preloaded_gets.expect("a --preloaded report");
        assert_eq!(report.mode, "open-loop");
        assert_eq!(gets.misses, 0, "{protocol}: {}", report.to_text());
        assert!(
            gets.hits > 0 && gets.hits >= report.ops,
            "{protocol}: every GET answered is a hit: {}",
            report.to_text()
        );
    }
    // SETs mixed in still expect exactly what they wrote.
    let report = run(
        &server,
        &[
            "--connections",
            "4",
            "--keys",
            "2000",
            "--value-bytes",
            "100",
            "--get-ratio",
            "0.5",
            "--ops-per-message",
            "4",
            "--preloaded",
            "--messages",
            "100",
        ],
    );
    let gets = report.preloaded_gets.expect("a --preloaded report");
    assert_eq!(gets.misses, 0);
    assert!(gets.hits > 0);
}

#[test]
fn preloaded_gets_of_keys_never_loaded_are_reported_as_misses_and_fail_the_run() {
    let server = TestServer::start(2, &[]);
    let addr = server.addr.to_string();
    for protocol in ["msgpack", "resp"] {
        let mut flags = vec!["--addr".to_owned(), addr.clone(), "--quiet".to_owned()];
        flags.extend(read_preloaded("4", protocol));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let report = corekv_loadgen::run(&loadgen_config(&flags)).expect("load generator runs");
        let gets = report.preloaded_gets.expect("a --preloaded report");
        assert!(!report.passed(), "{protocol}: {}", report.to_text());
        assert_eq!(gets.hits, 0, "{protocol}");
        assert!(gets.misses > 0, "{protocol}");
        assert_eq!(report.mismatches, gets.misses, "one GET per message");
        assert!(
            report.mismatch_samples[0].contains("not found"),
            "{:?}",
            report.mismatch_samples
        );
    }
}
