//! The KVStore seed's Python client must work unchanged (BRIEF §3): runs
//! tests/python/seed_client.py, which speaks the seed's wire format (msgpack with
//! `use_bin_type=True`, `struct ">Q"` framing), against a real two-shard server.

mod common;

use common::python::{describe, ensure_python_package, python};
use common::TestServer;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/seed_client.py");

#[test]
fn the_seed_python_client_works_unchanged() {
    ensure_python_package("msgpack", "msgpack");
    let server = TestServer::start(2, &[]);
    let output = python(&[SCRIPT, &server.addr.to_string()], b"");
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
