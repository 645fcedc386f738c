//! The minimal-server benchmark (benches/minimal_server.rs) answers the load
//! generator's verified workloads in every network variant, so that what it
//! measures is a correct server. Each variant serves on a thread of this test
//! process (it runs until the process exits), driven through the load
//! generator's library entry point; only that every reply matches is checked.

#[allow(dead_code)] // the bench's `main` and flags are not used here
#[path = "../benches/minimal_server.rs"]
mod minimal_server;

use clap::Parser;
use corekv_loadgen::{Args, Config};
use minimal_server::Variant;
use std::net::SocketAddr;

/// Starts `variant` on 127.0.0.1, port 0, on a thread of its own.
fn start(variant: Variant) -> SocketAddr {
    let any_port = "127.0.0.1:0".parse().expect("address");
    let listener = corekv::server::bind::shared_listener(any_port).expect("bind");
    let addr = listener.local_addr().expect("bound address");
    std::thread::spawn(move || {
        if let Err(e) = minimal_server::serve(variant, listener) {
            panic!("{variant:?} server failed: {e}");
        }
    });
    addr
}

/// Runs the load generator with `flags` against `addr`; every reply must match.
fn run(variant: Variant, addr: SocketAddr, flags: &[&str]) {
    let addr = addr.to_string();
    let argv = ["corekv-loadgen", "--addr", &addr, "--quiet"];
    let args = Args::parse_from(argv.iter().chain(flags));
    let config = Config::from_args(&args).expect("valid loadgen flags");
    let report = corekv_loadgen::run(&config).expect("load generator runs");
    assert!(
        report.passed() && report.messages > 0,
        "{variant:?} {flags:?}: {}",
        report.to_text()
    );
}

#[test]
fn every_variant_answers_the_load_generators_workloads_correctly() {
    for variant in [Variant::Glommio, Variant::Epoll, Variant::Ring] {
        let addr = start(variant);
        let one_set_one_get = [
            "--connections",
            "4",
            "--messages",
            "50",
            "--sets-per-message",
            "1",
            "--gets-per-message",
            "1",
        ];
        run(variant, addr, &one_set_one_get);
        run(
            variant,
            addr,
            &[
                "--preset",
                "kvstore",
                "--connections",
                "4",
                "--messages",
                "10",
            ],
        );
        let mixed_pipelined = [
            "--get-ratio",
            "0.5",
            "--pipeline",
            "16",
            "--connections",
            "4",
            "--messages",
            "50",
            "--keys",
            "2000",
        ];
        run(variant, addr, &mixed_pipelined);
    }
}

#[test]
fn every_variant_answers_values_larger_than_a_read_or_a_socket_buffer() {
    for variant in [Variant::Glommio, Variant::Epoll, Variant::Ring] {
        let addr = start(variant);
        // Replies of 4 MB, 4 in flight: more than a loopback socket buffers,
        // so sends are partial and wait for room.
        let large_values = [
            "--connections",
            "2",
            "--messages",
            "5",
            "--pipeline",
            "4",
            "--sets-per-message",
            "4",
            "--gets-per-message",
            "4",
            "--value-bytes",
            "1000000",
        ];
        run(variant, addr, &large_values);
    }
}
