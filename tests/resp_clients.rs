//! Real Redis clients against corekv's RESP port: redis-py (with RESP2 and
//! RESP3) runs tests/python/redis_client.py; redis-cli and redis-benchmark
//! run as shipped. None of them is skipped: a missing tool fails the test
//! (.ci/run installs them: `redis` from PyPI, `redis-tools` from Debian).

mod common;

use common::python::{describe, ensure_python_package, python};
use common::TestServer;
use std::process::{Command, Output};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/redis_client.py");

/// Runs one scenario of the redis-py script on a fresh two-shard server.
fn redis_py(protocol: u8, scenario: &str) {
    ensure_python_package("redis", "redis");
    let server = TestServer::start(2, &[]);
    let addr = server.addr.to_string();
    let output = python(&[SCRIPT, &addr, &protocol.to_string(), scenario], b"");
    assert!(
        output.status.success(),
        "redis-py {scenario} with RESP{protocol} failed:\n{}",
        describe(&output)
    );
}

#[test]
fn redis_py_runs_every_command_with_resp2() {
    redis_py(2, "commands");
}

#[test]
fn redis_py_runs_every_command_with_resp3() {
    redis_py(3, "commands");
}

#[test]
fn redis_py_pipelines_thousands_of_commands_in_order() {
    redis_py(2, "pipeline");
    redis_py(3, "pipeline");
}

#[test]
fn redis_py_transactions_move_money_across_shards_and_readers_never_see_a_partial_transfer() {
    redis_py(3, "bank");
}

#[test]
fn redis_py_watch_increments_from_several_clients_lose_nothing() {
    redis_py(2, "watch");
}

#[test]
fn redis_py_scan_and_keys_see_every_key_of_every_shard_once() {
    redis_py(2, "keys");
    redis_py(3, "keys");
}

/// Runs redis-cli or redis-benchmark, installing Debian's redis-tools first
/// if they are missing (as the Python tests install their pip packages); a
/// tool that still cannot run fails the test.
fn run(tool: &str, args: &[&str]) -> Output {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let present = |tool| Command::new(tool).arg("--version").output().is_ok();
        if !present("redis-cli") || !present("redis-benchmark") {
            eprintln!("installing redis-tools with apt-get");
            let apt = |args: &[&str]| Command::new("apt-get").args(args).status();
            let _ = apt(&["update", "-qq"]);
            let _ = apt(&["install", "-y", "-qq", "redis-tools"]);
        }
    });
    Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {tool} ({e}): install redis-tools (apt-get install -y redis-tools)")
    })
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// redis-cli's output for one command against `server` (which must succeed).
fn redis_cli(server: &TestServer, args: &[&str]) -> String {
    let port = server.addr.port().to_string();
    let mut all = vec!["-h", "127.0.0.1", "-p", port.as_str()];
    all.extend_from_slice(args);
    let output = run("redis-cli", &all);
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    stdout(&output)
}

#[test]
fn config_get_reports_the_flags_the_server_runs_with() {
    let server = TestServer::start(
        1,
        &["--maxmemory-policy", "allkeys-lru", "--idle-poll-us", "50"],
    );
    let cli = |args: &[&str]| redis_cli(&server, args);
    assert_eq!(
        cli(&["CONFIG", "GET", "maxmemory-policy"]),
        "maxmemory-policy\nallkeys-lru\n"
    );
    assert_eq!(
        cli(&["CONFIG", "GET", "corekv-idle-poll-us"]),
        "corekv-idle-poll-us\n50\n"
    );
    assert_eq!(
        cli(&["CONFIG", "GET", "corekv-segment-bytes"]),
        format!("corekv-segment-bytes\n{}\n", 64 << 20)
    );
}

#[test]
fn redis_cli_one_shot_commands_work() {
    let server = TestServer::start(2, &[]);
    let cli = |args: &[&str]| redis_cli(&server, args);
    assert_eq!(cli(&["PING"]), "PONG\n");
    assert_eq!(cli(&["SET", "greeting", "hello world"]), "OK\n");
    assert_eq!(cli(&["GET", "greeting"]), "hello world\n");
    assert_eq!(cli(&["INCRBY", "n", "5"]), "5\n");
    assert_eq!(
        cli(&["MGET", "greeting", "n", "none"]),
        "hello world\n5\n\n"
    );
    assert_eq!(cli(&["DBSIZE"]), "2\n");
    // Expiry: SET EX, TTL, PERSIST.
    assert_eq!(cli(&["SET", "session", "s", "EX", "100"]), "OK\n");
    let ttl: i64 = cli(&["TTL", "session"])
        .trim()
        .parse()
        .expect("TTL is an integer");
    assert!((1..=100).contains(&ttl), "TTL after EX 100: {ttl}");
    assert_eq!(cli(&["PERSIST", "session"]), "1\n");
    assert_eq!(cli(&["TTL", "session"]), "-1\n");
    assert_eq!(cli(&["DEL", "session"]), "1\n");
    assert!(cli(&["INFO", "server"]).contains("redis_version:"));
    assert_eq!(cli(&["CONFIG", "GET", "appendonly"]), "appendonly\nno\n");
    // redis-cli with RESP3.
    assert_eq!(cli(&["-3", "GET", "none"]), "\n");
    assert!(cli(&["NOSUCH"]).contains("unknown command"));
    // --scan walks every shard.
    for i in 0..300 {
        cli(&["SET", &format!("scan:{i}"), "x"]);
    }
    let mut scanned: Vec<String> = cli(&["--scan", "--pattern", "scan:*"])
        .lines()
        .map(str::to_owned)
        .collect();
    scanned.sort();
    let mut want: Vec<String> = (0..300).map(|i| format!("scan:{i}")).collect();
    want.sort();
    assert_eq!(scanned, want);
    assert_eq!(cli(&["FLUSHALL"]), "OK\n");
    assert_eq!(cli(&["DBSIZE"]), "0\n");
}

#[test]
fn redis_benchmark_runs_without_errors() {
    let server = TestServer::start(2, &[]);
    let port = server.addr.port().to_string();
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "set,get,incr,mset",
        "-n",
        "20000",
        "-c",
        "10",
        "-q",
    ];
    let output = run("redis-benchmark", &args);
    let text = format!(
        "{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "redis-benchmark failed:\n{text}");
    for test in ["SET:", "GET:", "INCR:", "MSET"] {
        assert!(text.contains(test), "no {test} result:\n{text}");
    }
    assert!(!text.to_lowercase().contains("error"), "{text}");
    // Every INCR ran once: redis-benchmark increments the key `counter:__rand_int__`.
    let output = run(
        "redis-cli",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "GET",
            "counter:__rand_int__",
        ],
    );
    assert_eq!(stdout(&output), "20000\n");
}

/// Mass insertion as Redis documents it: RESP commands piped through
/// `redis-cli --pipe`, which ends the stream with an empty line and an ECHO
/// whose reply tells it every reply has come.
#[test]
fn redis_cli_pipe_mass_insertion_loads_every_key_with_no_error() {
    use std::io::Write;
    let server = TestServer::start(2, &[]);
    let port = server.addr.port().to_string();
    run("redis-cli", &["--version"]);
    let nr_keys = 5_000;
    let mut commands = Vec::new();
    for i in 0..nr_keys {
        let (key, value) = (format!("mass:{i}"), format!("value-{i}"));
        write!(
            commands,
            "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n",
            key.len(),
            value.len()
        )
        .expect("write to a Vec");
    }
    let mut child = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port, "--pipe"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("redis-cli runs");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(&commands)
        .expect("redis-cli reads its input");
    let output = child.wait_with_output().expect("redis-cli ends");
    let text = format!(
        "{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "redis-cli --pipe failed:\n{text}");
    assert!(
        text.contains(&format!("errors: 0, replies: {nr_keys}")),
        "redis-cli --pipe saw errors:\n{text}"
    );
    let output = run("redis-cli", &["-h", "127.0.0.1", "-p", &port, "DBSIZE"]);
    assert_eq!(stdout(&output), format!("{nr_keys}\n"));
    let output = run(
        "redis-cli",
        &["-h", "127.0.0.1", "-p", &port, "GET", "mass:4321"],
    );
    assert_eq!(stdout(&output), "value-4321\n");
}
