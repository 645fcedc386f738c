//! The `corekv-server` process from the outside (BRIEF §2, §5): flags, start-up
//! refusals with a message and a non-zero exit, the data directory's engine
//! marker and lock, the start-up log, and graceful shutdown on SIGTERM/SIGINT —
//! including a client that is pipelining when the signal arrives.
//!
//! Timeouts here are only upper bounds that turn a hang into a failure.

mod common;

use common::wire::read_frame;
use common::{frame, pack, server_binary, TestServer, REPLY_TIMEOUT};
use corekv::client::{decode_reply, Element};
use rmpv::Value;
use std::io::{self, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest a refused start may take before the test calls it a hang.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the server with `args` and waits (bounded) for it to exit by itself.
fn run_to_exit(args: &[&str], data_dir: &Path) -> Output {
    common::run_to_exit(
        Command::new(server_binary())
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .env("COREKV_LOG", "info"),
    )
}

/// Asserts the run failed with a non-zero exit and stderr containing every needle.
fn assert_refused(output: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "expected a non-zero exit, got {:?}; stderr:\n{stderr}",
        output.status
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "stderr does not mention {needle:?}:\n{stderr}"
        );
    }
    stderr
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

// ---------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------

#[test]
fn version_flag_prints_the_version_and_exits_zero() {
    for flag in ["-V", "--version"] {
        let output = Command::new(server_binary())
            .arg(flag)
            .output()
            .expect("run corekv-server -V");
        assert!(output.status.success(), "{flag}: {:?}", output.status);
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("corekv-server {}\n", env!("CARGO_PKG_VERSION")),
            "{flag}"
        );
    }
}

#[test]
fn an_address_that_does_not_parse_is_refused() {
    let dir = temp_dir();
    let data_dir = dir.path().join("data");
    for addr in [
        "not-an-address",
        "127.0.0.1",
        "127.0.0.1:99999",
        "999.0.0.1:4000",
        "",
    ] {
        let output = run_to_exit(&["--addr", addr, "--engine", "memory"], &data_dir);
        assert_refused(&output, &["--addr"]);
    }
    assert!(
        !data_dir.exists(),
        "a refused start must not create the data dir"
    );
}

#[test]
fn an_unknown_engine_is_refused() {
    let dir = temp_dir();
    let data_dir = dir.path().join("data");
    let output = run_to_exit(&["--addr", "127.0.0.1:0", "--engine", "rocks"], &data_dir);
    assert_refused(&output, &["--engine", "rocks"]);
    assert!(
        !data_dir.exists(),
        "a refused start must not create the data dir"
    );
}

#[test]
fn zero_shards_are_refused() {
    let dir = temp_dir();
    let data_dir = dir.path().join("data");
    let args = [
        "--addr",
        "127.0.0.1:0",
        "--engine",
        "memory",
        "--shards",
        "0",
    ];
    assert_refused(&run_to_exit(&args, &data_dir), &["--shards"]);
    assert!(
        !data_dir.exists(),
        "a refused start must not create the data dir"
    );
}

#[test]
fn impossible_limits_are_refused_with_the_flag_named() {
    let dir = temp_dir();
    let data_dir = dir.path().join("data");
    let cases: [(&[&str], &str); 6] = [
        (&["--max-connections", "0"], "--max-connections"),
        (&["--max-memory-bytes", "1KiB"], "--max-memory-bytes"),
        (&["--max-frame-bytes", "8"], "--max-frame-bytes"),
        (&["--max-frame-bytes", "1GiB"], "between 16 and 536870912"),
        (&["--max-key-bytes", "0"], "--max-key-bytes"),
        (&["--max-frame-bytes", "12XB"], "--max-frame-bytes"),
    ];
    for (flags, needle) in cases {
        let mut args = vec!["--addr", "127.0.0.1:0", "--engine", "memory"];
        args.extend_from_slice(flags);
        assert_refused(&run_to_exit(&args, &data_dir), &[needle]);
    }
    assert!(
        !data_dir.exists(),
        "a refused start must not create the data dir"
    );
}

#[test]
fn the_log_engine_is_the_default_and_is_recorded_with_its_log_files() {
    let dir = temp_dir();
    let data_dir = dir.path().join("data");
    let mut server = TestServer::start_in(&data_dir, 2, &["--engine", "log"]).expect("start");
    server.stop_with(libc::SIGTERM);
    let engine = std::fs::read_to_string(data_dir.join("ENGINE")).expect("ENGINE");
    assert_eq!(engine, "log\n");
    let log_dir = data_dir.join("log");
    let shards = std::fs::read_to_string(log_dir.join("SHARDS")).expect("SHARDS");
    assert_eq!(shards, "2\n");
    assert!(log_dir.join("shard-0.log").exists() && log_dir.join("shard-1.log").exists());
    // With no --engine the server asks for the log engine: a memory data dir refuses it.
    let memory_dir = dir.path().join("memory");
    TestServer::start_in(&memory_dir, 1, &[])
        .expect("memory start")
        .stop_with(libc::SIGTERM);
    let output = run_to_exit(&["--addr", "127.0.0.1:0"], &memory_dir);
    assert_refused(&output, &["created with --engine memory", "--engine log"]);
}

#[test]
fn a_port_already_bound_is_refused() {
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = squatter.local_addr().expect("addr").to_string();
    let dir = temp_dir();
    let output = run_to_exit(
        &["--addr", &addr, "--engine", "memory", "--shards", "2"],
        &dir.path().join("data"),
    );
    assert_refused(&output, &["cannot listen on", &addr]);
    // The squatter is unaffected: nobody else accepted its connections.
    let _client = TcpStream::connect(&addr).expect("squatter still listens");
    let (_conn, _) = squatter.accept().expect("squatter accepts");
}

// ---------------------------------------------------------------------------
// The data directory
// ---------------------------------------------------------------------------

#[test]
fn the_engine_is_recorded_in_the_data_dir_at_first_start() {
    let dir = temp_dir();
    let data_dir = dir.path().join("data");
    let server = TestServer::start_in(&data_dir, 1, &[]).expect("start");
    let marker = std::fs::read_to_string(data_dir.join("ENGINE")).expect("ENGINE file");
    assert_eq!(marker, "memory\n");
    drop(server);
    let again = TestServer::start_in(&data_dir, 1, &[]).expect("restart, same engine");
    drop(again);
    let marker = std::fs::read_to_string(data_dir.join("ENGINE")).expect("ENGINE file");
    assert_eq!(marker, "memory\n");
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused_while_the_first_runs() {
    let dir = temp_dir();
    let data_dir = dir.path().join("data");
    let mut first = TestServer::start_in(&data_dir, 2, &[]).expect("first server");
    let mut client = first.client();
    client.set(b"owner", "first".into()).expect("set");
    let err = TestServer::start_in(&data_dir, 2, &[]).err();
    let (status, stderr) = err.expect("a second server on a locked data dir must be refused");
    assert!(
        status.is_some_and(|s| !s.success()),
        "status {status:?}:\n{stderr}"
    );
    assert!(
        stderr.contains("in use by another corekv-server"),
        "{stderr}"
    );
    // The first server is untouched.
    assert_eq!(client.get(b"owner").expect("get"), Some("first".into()));
    assert!(first.is_running());
    // Once the first has stopped, the directory is free again.
    assert!(first.stop_with(libc::SIGTERM).success());
    drop(TestServer::start_in(&data_dir, 2, &[]).expect("start after the first stopped"));
}

#[test]
fn an_engine_mismatch_is_refused_and_the_marker_is_left_unchanged() {
    let dir = temp_dir();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).expect("mkdir");
    std::fs::write(data_dir.join("ENGINE"), "log\n").expect("write marker");
    let (status, stderr) = TestServer::start_in(&data_dir, 1, &[])
        .err()
        .expect("an engine mismatch must be refused");
    assert!(
        status.is_some_and(|s| !s.success()),
        "status {status:?}:\n{stderr}"
    );
    assert!(stderr.contains("--engine log"), "{stderr}");
    assert!(stderr.contains("--engine memory"), "{stderr}");
    let marker = std::fs::read(data_dir.join("ENGINE")).expect("ENGINE file");
    assert_eq!(marker, b"log\n", "the marker must not be rewritten");
}

// ---------------------------------------------------------------------------
// Start-up log and shutdown
// ---------------------------------------------------------------------------

#[test]
fn the_startup_log_names_version_engine_shard_count_and_address() {
    let mut server = TestServer::start(3, &[]);
    let stderr = server.stderr();
    let version = format!("corekv-server {}", env!("CARGO_PKG_VERSION"));
    for needle in [
        version.as_str(),
        "engine memory",
        "3 shards",
        &format!("listening on {}", server.addr),
    ] {
        assert!(stderr.contains(needle), "no {needle:?} in:\n{stderr}");
    }
}

fn shuts_down_cleanly_on(signal: i32) {
    let dir = temp_dir();
    let data_dir = dir.path().join("data");
    let mut server = TestServer::start_in(&data_dir, 2, &[]).expect("start");
    let mut client = server.client();
    client.set(b"k", "v".into()).expect("set");
    let status = server.stop_with(signal);
    let stderr = server.stderr();
    assert!(
        status.success(),
        "signal {signal}: exit {status:?}\n{stderr}"
    );
    assert!(stderr.contains("shut down cleanly"), "{stderr}");
    // The lock was released: a new server can use the directory at once.
    let again = TestServer::start_in(&data_dir, 2, &[]).expect("restart after shutdown");
    assert_eq!(again.client().get(b"missing").expect("get"), None);
}

#[test]
fn sigterm_shuts_down_cleanly_with_exit_status_zero() {
    shuts_down_cleanly_on(libc::SIGTERM);
}

#[test]
fn sigint_shuts_down_cleanly_with_exit_status_zero() {
    shuts_down_cleanly_on(libc::SIGINT);
}

#[test]
fn an_idle_connection_does_not_hold_up_shutdown() {
    let mut server = TestServer::start(2, &[]);
    let mut idle = server.client();
    idle.set(b"k", "v".into()).expect("set");
    let mut half = TcpStream::connect(server.addr).expect("connect");
    half.write_all(&[0, 0, 0, 0, 0, 0, 0, 9, 0x91])
        .expect("half a frame");
    let status = server.stop_with(libc::SIGTERM);
    assert!(status.success(), "{status:?}\n{}", server.stderr());
}

#[test]
fn a_client_that_never_reads_its_replies_does_not_block_shutdown_forever() {
    let mut server = TestServer::start(2, &[]);
    server
        .client()
        .set(b"big", Value::Binary(vec![1; 256 * 1024]))
        .expect("set");
    // 25 MiB of replies that are never read: the server's write to this client
    // blocks, and shutdown must still finish (the harness bounds the wait).
    let mut stalled = TcpStream::connect(server.addr).expect("connect");
    let get = frame(&pack(&Value::Array(vec![Value::Array(vec![
        0.into(),
        "big".into(),
    ])])));
    let gets: Vec<u8> = (0..100).flat_map(|_| get.clone()).collect();
    stalled.write_all(&gets).expect("send");
    let mut other = server.client();
    assert!(other.get(b"big").expect("get").is_some());
    let status = server.stop_with(libc::SIGTERM);
    let stderr = server.stderr();
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("shut down cleanly"), "{stderr}");
}

/// Message `i` of the pipelining client: SET a key to `i`, then GET it back.
fn pipelined_message(i: u64) -> Vec<u8> {
    let key = Value::from(format!("pipe-{}", i % 64));
    frame(&pack(&Value::Array(vec![
        Value::Array(vec![1.into(), key.clone(), i.into()]),
        Value::Array(vec![0.into(), key]),
    ])))
}

/// Checks reply `i`: the GET of message `i` sees `i`, unless the server said
/// it did not run the message (SHUTDOWN).
fn check_pipelined_reply(i: u64, body: &[u8]) -> Result<(), String> {
    let elements = decode_reply(body).map_err(|e| format!("reply {i} does not decode: {e}"))?;
    let shutdown = elements.iter().any(|e| match e {
        Element::Error { code, .. } => code == "SHUTDOWN",
        _ => false,
    });
    if shutdown || elements == [Element::Found(i.into())] {
        Ok(())
    } else {
        Err(format!("reply {i} is {elements:?}, expected [Found({i})]"))
    }
}

/// Reads replies until the server closes; returns how many were received.
fn read_pipelined_replies(
    mut stream: TcpStream,
    received: &AtomicUsize,
    max_messages: u64,
) -> Result<u64, String> {
    for i in 0..=max_messages {
        match read_frame(&mut stream) {
            Ok(Some(body)) => check_pipelined_reply(i, &body)?,
            Ok(None) => return Ok(i),
            // A reset after the last whole frame is a close, not a torn frame:
            // read_frame reports a torn frame as UnexpectedEof instead.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(i),
            Err(e) => return Err(format!("after {i} whole replies: {e}")),
        }
        received.fetch_add(1, Ordering::Relaxed);
    }
    Err(format!("more than {max_messages} replies"))
}

#[test]
fn a_client_pipelining_through_sigterm_receives_only_whole_correct_replies() {
    const MAX_MESSAGES: u64 = 2_000_000;
    const BATCH: u64 = 256;
    let mut server = TestServer::start(2, &[]);
    let stream = TcpStream::connect(server.addr).expect("connect");
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .expect("timeout");
    stream
        .set_write_timeout(Some(REPLY_TIMEOUT))
        .expect("timeout");
    let received = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    let mut writer_stream = stream.try_clone().expect("clone");
    let writer_stop = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut sent = 0;
        while sent < MAX_MESSAGES && !writer_stop.load(Ordering::Relaxed) {
            let batch: Vec<u8> = (sent..sent + BATCH).flat_map(pipelined_message).collect();
            if writer_stream.write_all(&batch).is_err() {
                break; // the server closed the connection
            }
            sent += BATCH;
        }
        sent
    });
    let reader_received = received.clone();
    let reader =
        std::thread::spawn(move || read_pipelined_replies(stream, &reader_received, MAX_MESSAGES));

    // Signal once the client is well into its stream of replies.
    let deadline = Instant::now() + REPLY_TIMEOUT;
    while received.load(Ordering::Relaxed) < 1000 {
        assert!(Instant::now() < deadline, "no replies before the signal");
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = server.stop_with(libc::SIGTERM);
    stop.store(true, Ordering::Relaxed);
    let stderr = server.stderr();
    let replies = reader.join().expect("reader thread");
    let sent = writer.join().expect("writer thread");
    let replies = replies.unwrap_or_else(|e| panic!("{e}\nserver stderr:\n{stderr}"));
    eprintln!("{replies} whole replies to {sent} messages sent");
    assert!(status.success(), "exit {status:?}\n{stderr}");
    assert!(stderr.contains("shut down cleanly"), "{stderr}");
    assert!(replies >= 1000, "{replies} replies");
    assert!(replies <= sent, "{replies} replies to {sent} messages");
}

#[test]
fn a_server_whose_stderr_is_gone_still_serves_and_shuts_down_on_sigterm() {
    let dir = temp_dir();
    let mut child = Command::new(server_binary())
        .args([
            "--addr",
            "127.0.0.1:0",
            "--engine",
            "memory",
            "--shards",
            "2",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("COREKV_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn corekv-server");
    // Read up to the address, then close our end: every later log line fails.
    let mut stderr = io::BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut addr = None;
    for _ in 0..100 {
        let mut line = String::new();
        if io::BufRead::read_line(&mut stderr, &mut line).expect("read stderr") == 0 {
            break;
        }
        if let Some(a) = line.split("listening on ").nth(1) {
            addr = Some(a.trim().to_owned());
            break;
        }
    }
    drop(stderr);
    let addr = addr.expect("the server logged its address");
    // Requests still work (connections log at debug level as they close).
    for _ in 0..3 {
        let mut client =
            corekv::client::Client::connect(addr.as_str(), Some(REPLY_TIMEOUT)).expect("connect");
        client.set(b"k", "v".into()).expect("set");
        assert_eq!(client.get(b"k").expect("get"), Some("v".into()));
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server ignored SIGTERM once its stderr was gone");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}");
}
