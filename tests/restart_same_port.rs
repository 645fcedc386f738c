//! Restarting on the same port (docs/operations.md, "Port sharing, restarts
//! and a second server"): a server killed with clients connected — by kill -9
//! or by SIGTERM — leaves its side of those connections behind in the kernel
//! (FIN_WAIT, TIME_WAIT) for up to a minute; a new server on the same msgpack
//! and HTTP ports must start at once anyway. A *live* server's ports must still
//! be refused, with the cause printed once.
//!
//! These tests need fixed ports: each is found by binding port 0 and closing
//! it. Only the first start retries (with new ports) in case another process
//! took them in between; the restart must succeed on the same ports.

mod common;

use common::{frame, http_request, pack, server_binary, TestServer, REPLY_TIMEOUT};
use rmpv::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Attempts at finding free ports for the first start.
const PORT_ATTEMPTS: usize = 10;
/// Attempts at restarting on the same ports: one. A dead server's sockets would
/// keep a port busy for about a minute without SO_REUSEADDR; after a `kill -9`
/// the kernel also holds its listening socket while it tears down its io_uring
/// rings, which start-up waits out by itself.
const RESTART_ATTEMPTS: usize = 1;
const RESTART_PAUSE: Duration = Duration::from_millis(100);

/// A loopback address whose port was free a moment ago.
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}

fn start_on(
    data_dir: &Path,
    addr: SocketAddr,
    http: SocketAddr,
) -> Result<TestServer, (Option<std::process::ExitStatus>, String)> {
    let (addr, http) = (addr.to_string(), http.to_string());
    let args = ["--addr", &addr, "--http-addr", &http, "--engine", "log"];
    TestServer::start_in(data_dir, 2, &args)
}

/// The first start, on ports found free; returns the server and its HTTP address.
fn start_on_free_ports(data_dir: &Path) -> (TestServer, SocketAddr) {
    let mut failures = Vec::new();
    for _ in 0..PORT_ATTEMPTS {
        let (addr, http) = (free_addr(), free_addr());
        match start_on(data_dir, addr, http) {
            Ok(server) => return (server, http),
            Err(failure) => failures.push(failure),
        }
    }
    panic!("no start on free ports in {PORT_ATTEMPTS} attempts: {failures:#?}");
}

/// Restarts on the same ports, as a supervisor would right after the exit.
fn restart_on(data_dir: &Path, addr: SocketAddr, http: SocketAddr) -> TestServer {
    let mut failures = Vec::new();
    for _ in 0..RESTART_ATTEMPTS {
        match start_on(data_dir, addr, http) {
            Ok(server) => {
                eprintln!("restarted after {} failed attempts", failures.len());
                return server;
            }
            Err(failure) => failures.push(failure),
        }
        std::thread::sleep(RESTART_PAUSE);
    }
    panic!("the restart on {addr} (http {http}) failed: {failures:#?}");
}

/// Connections a killed server leaves behind in every state the kernel keeps.
struct Clients {
    _held: Vec<TcpStream>,
    _msgpack: Vec<corekv::client::Client>,
}

fn connect_clients(server: &TestServer, http: SocketAddr, with_unread_replies: bool) -> Clients {
    let mut msgpack = Vec::new();
    for i in 0..4 {
        let mut client = server.client();
        let key = format!("held-{i}");
        client.set(key.as_bytes(), Value::from(i)).expect("set");
        msgpack.push(client);
    }
    let mut held = Vec::new();
    // Half a frame: the server has read bytes it has not served.
    let mut half = TcpStream::connect(server.addr).expect("connect");
    half.write_all(&[0, 0, 0, 0, 0, 0, 0, 9, 0x91])
        .expect("half a frame");
    held.push(half);
    // Keep-alive HTTP connections, idle after one request.
    for _ in 0..2 {
        let mut stream = TcpStream::connect(http).expect("connect http");
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("timeout");
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("send");
        let mut status = [0u8; 15];
        stream.read_exact(&mut status).expect("read the reply");
        assert_eq!(&status, b"HTTP/1.1 200 OK");
        held.push(stream);
    }
    if with_unread_replies {
        // Megabytes of replies never read: the server's send buffer stays full,
        // so its end lingers with data in flight after it dies.
        let mut client = server.client();
        client
            .set(b"big", Value::Binary(vec![7; 256 * 1024]))
            .expect("set big");
        let mut stalled = TcpStream::connect(server.addr).expect("connect");
        let get = frame(&pack(&Value::Array(vec![Value::Array(vec![
            0.into(),
            "big".into(),
        ])])));
        let gets: Vec<u8> = (0..40).flat_map(|_| get.clone()).collect();
        stalled.write_all(&gets).expect("send");
        // A round trip on another connection: the stalled GETs were read meanwhile.
        assert!(client.get(b"big").expect("get").is_some());
        held.push(stalled);
    }
    Clients {
        _held: held,
        _msgpack: msgpack,
    }
}

/// The restarted server serves msgpack and HTTP, with the data of the first.
fn assert_serves(server: &TestServer, http: SocketAddr) {
    let mut client = server.client();
    assert_eq!(client.get(b"held-3").expect("get"), Some(Value::from(3)));
    client.set(b"after", Value::from("restart")).expect("set");
    let (status, body) = http_request(http, "GET", "/health", b"");
    assert_eq!(status, 200, "{body}");
}

fn restarts_on_the_same_ports_after(signal: i32) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let (mut server, http) = start_on_free_ports(&data_dir);
    let addr = server.addr;
    // SIGTERM waits for connections to finish; unread replies would hold it 10 s.
    let clients = connect_clients(&server, http, signal == libc::SIGKILL);
    let status = server.stop_with(signal);
    assert!(
        signal == libc::SIGKILL || status.success(),
        "{status:?}\n{}",
        server.stderr()
    );
    let restarted = restart_on(&data_dir, addr, http);
    assert_serves(&restarted, http);
    drop(clients);
}

#[test]
fn a_server_killed_with_clients_connected_restarts_on_the_same_ports_at_once() {
    restarts_on_the_same_ports_after(libc::SIGKILL);
}

#[test]
fn a_server_stopped_by_sigterm_with_clients_connected_restarts_on_the_same_ports_at_once() {
    restarts_on_the_same_ports_after(libc::SIGTERM);
}

/// Runs a second server that must refuse to start; returns its stderr.
fn second_server_is_refused(args: &[&str], data_dir: &Path) -> String {
    let output = common::run_to_exit(
        Command::new(server_binary())
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .env("COREKV_LOG", "info"),
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "{:?} must exit non-zero:\n{stderr}",
        output.status
    );
    stderr
}

/// The `corekv-server: error:` line names the address and its cause, once.
fn assert_refusal_names(stderr: &str, addr: SocketAddr) {
    let line = stderr
        .lines()
        .find(|line| line.starts_with("corekv-server: error:"))
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"));
    assert_eq!(
        line,
        format!(
            "corekv-server: error: cannot listen on {addr}: Address already in use (os error 98)"
        ),
        "{stderr}"
    );
}

#[test]
fn a_second_server_on_a_live_servers_ports_is_refused_and_the_first_keeps_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut first, http) = start_on_free_ports(&dir.path().join("first"));
    let addr = first.addr.to_string();
    let http_text = http.to_string();
    let second_dir = dir.path().join("second");
    let cases: [(&[&str], SocketAddr); 2] = [
        (&["--addr", &addr, "--engine", "memory"], first.addr),
        (
            &[
                "--addr",
                "127.0.0.1:0",
                "--http-addr",
                &http_text,
                "--engine",
                "memory",
            ],
            http,
        ),
    ];
    for (args, taken) in cases {
        let stderr = second_server_is_refused(args, &second_dir);
        assert_refusal_names(&stderr, taken);
    }
    // Every new connection still reaches the first server: the second shares nothing.
    for i in 0..16 {
        let mut client = first.client();
        let key = format!("first-{i}");
        client.set(key.as_bytes(), Value::from(i)).expect("set");
        let (status, body) = http_request(http, "GET", "/health", b"");
        assert_eq!(status, 200, "{body}");
    }
    assert!(first.is_running(), "{}", first.stderr());
}
