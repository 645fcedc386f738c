//! End to end: the load generator's KVStore workload, shrunk to 4 connections ×
//! 20 messages, against the real `corekv-server` binary. Every reply must match
//! the expected bytes. Uses the loadgen's library entry point (a dev-dependency)
//! rather than its binary, whose path Cargo does not expose across crates.

mod common;
use clap::Parser;
use common::TestServer;
use corekv_loadgen::{Args, Config};

fn loadgen_config(flags: &[&str]) -> Config {
    let argv = std::iter::once("corekv-loadgen").chain(flags.iter().copied());
    Config::from_args(&Args::parse_from(argv)).expect("valid loadgen flags")
}

#[test]
fn kvstore_workload_gets_every_reply_right_from_a_real_server() {
    let server = TestServer::start(2, &[]);
    let addr = server.addr.to_string();
    let config = loadgen_config(&[
        "--addr",
        &addr,
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
        "--quiet",
    ]);
    let report = corekv_loadgen::run(&config).expect("load generator runs");
    assert!(report.passed(), "{}", report.to_text());
    assert_eq!(report.messages, 4 * 20);
    assert_eq!(report.ops, 4 * 20 * 100);
    assert_eq!(report.mismatches, 0);
}
