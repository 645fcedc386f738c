//! The KVStore seed's Python client must work unchanged (BRIEF §3): runs
//! tests/python/seed_client.py, which speaks the seed's wire format (msgpack with
//! `use_bin_type=True`, `struct ">Q"` framing), against a real two-shard server.

mod common;

use common::TestServer;
use std::process::{Command, Output};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/seed_client.py");

fn python(args: &[&str]) -> Output {
    Command::new("python3")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {args:?}: {e} (is Python 3 installed?)"))
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Makes `import msgpack` work, installing the package with pip if it is missing.
fn ensure_msgpack() {
    if python(&["-c", "import msgpack"]).status.success() {
        return;
    }
    let install = python(&["-m", "pip", "install", "--quiet", "msgpack"]);
    assert!(
        install.status.success(),
        "the Python package `msgpack` is not importable and `python3 -m pip install msgpack` \
         failed; install it (pip install msgpack, or apt-get install python3-msgpack).\n{}",
        describe(&install)
    );
    let check = python(&["-c", "import msgpack"]);
    assert!(
        check.status.success(),
        "msgpack was installed but still cannot be imported:\n{}",
        describe(&check)
    );
}

#[test]
fn the_seed_python_client_works_unchanged() {
    ensure_msgpack();
    let server = TestServer::start(2, &[]);
    let output = python(&[SCRIPT, &server.addr.to_string()]);
    assert!(
        output.status.success(),
        "seed_client.py failed against {}:\n{}",
        server.addr,
        describe(&output)
    );
    // The data it wrote is visible to the Rust client too.
    let mut client = server.client();
    assert_eq!(
        client.get(b"seed-19-0049").expect("get"),
        Some(rmpv::Value::Binary(b"value-19-0049".to_vec()))
    );
    assert_eq!(client.get(b"hello").expect("get"), None);
}
