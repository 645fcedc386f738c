//! Test harness: runs the real `corekv-server` binary as a child process on a
//! free loopback port with its own temporary data directory, and stops it when
//! dropped. The server is started with `--addr 127.0.0.1:0` (unless a test
//! passes `--addr`); the port it chose is read from its "listening on" log line,
//! so parallel tests never race for ports.
//!
//! Beside it, the support every test shares (one copy of each):
//! - [`wire`]: a raw connection that sends bytes as given and reads whole frames;
//! - [`keys`]: keys placed on chosen shards with the server's router;
//! - [`model`]: the reference model of what a correct server holds and answers;
//! - [`crash`]: log-engine servers, crash cycles (`kill -9` under load), and
//!   what a writer may find after one;
//! - [`logs`]: shard log files — paths, records, cutting;
//! - [`python`]: Python 3 and its packages, for the client-compatibility tests.
#![allow(dead_code)]

pub mod crash;
pub mod keys;
pub mod logs;
pub mod model;
pub mod python;
pub mod wire;

pub use keys::key_on_shard;

use corekv::client::Client;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a test waits for the server to say it is listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a client waits for any single reply before the test fails.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// The server under test: this build's, or the binary `COREKV_TEST_SERVER`
/// names (to run a test against another build, e.g. to see it fail before a fix).
pub fn server_binary() -> String {
    std::env::var("COREKV_TEST_SERVER")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_corekv-server").to_owned())
}

/// How long a server that should exit by itself (a refused start) may take.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `command` (a server expected to exit by itself, e.g. a refused start)
/// to its exit and returns its status and output. stdout and stderr are read
/// while it runs, so a chatty server cannot block on a full pipe; one still
/// running after [`EXIT_TIMEOUT`] is killed and the test fails with its stderr.
pub fn run_to_exit(command: &mut Command) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn corekv-server");
    let read_all = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read_all(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the server") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().expect("stderr reader");
            panic!(
                "{command:?} did not exit within {EXIT_TIMEOUT:?}; stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// A running server child process.
pub struct TestServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    /// Every stderr line the server printed so far is sent here.
    stderr_lines: mpsc::Receiver<String>,
    pub stderr_seen: Vec<String>,
}

impl TestServer {
    /// A server with `nr_shards` shards and extra flags (memory engine unless
    /// `extra_args` names one), in a fresh temporary data directory.
    pub fn start(nr_shards: usize, extra_args: &[&str]) -> TestServer {
        let temp = tempfile::tempdir().expect("temp data dir");
        let data_dir = temp.path().join("data");
        let mut server =
            Self::start_in(&data_dir, nr_shards, extra_args).unwrap_or_else(|(status, stderr)| {
                panic!("server did not start ({status:?}):\n{stderr}")
            });
        server._temp = Some(temp);
        server
    }

    /// Starts a server on `data_dir`; on failure returns its exit status and stderr.
    pub fn start_in(
        data_dir: &Path,
        nr_shards: usize,
        extra_args: &[&str],
    ) -> Result<TestServer, (Option<ExitStatus>, String)> {
        Self::start_with_env(data_dir, nr_shards, extra_args, &[])
    }

    /// [`TestServer::start_in`] with extra environment variables (`FAILPOINTS`).
    // The child moves into the returned TestServer, whose Drop kills and waits for it.
    #[allow(clippy::zombie_processes)]
    pub fn start_with_env(
        data_dir: &Path,
        nr_shards: usize,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<TestServer, (Option<ExitStatus>, String)> {
        let shards = nr_shards.to_string();
        let mut args = vec!["--shards", shards.as_str()];
        // Port 0 unless the test picks the address.
        if !extra_args.contains(&"--addr") {
            args.extend_from_slice(&["--addr", "127.0.0.1:0"]);
        }
        // The memory engine unless the test picks one (or runs on the disk
        // engine: [`on_disk_engine`]).
        if !extra_args.contains(&"--engine") && !on_disk_engine() {
            args.extend_from_slice(&["--engine", "memory"]);
        }
        args.extend_from_slice(extra_args);
        let (mut child, rx) = spawn_server(data_dir, &args, env);
        let mut seen = Vec::new();
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let addr = line
                        .split("listening on ")
                        .nth(1)
                        .and_then(|a| a.trim().parse::<SocketAddr>().ok());
                    seen.push(line);
                    if let Some(addr) = addr {
                        return Ok(TestServer {
                            child: Some(child),
                            addr,
                            data_dir: data_dir.to_owned(),
                            _temp: None,
                            stderr_lines: rx,
                            stderr_seen: seen,
                        });
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        drain_into(&rx, &mut seen);
                        return Err((Some(status), seen.join("\n")));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().ok();
                    drain_into(&rx, &mut seen);
                    return Err((status, seen.join("\n")));
                }
            }
        }
        let _ = child.kill();
        Err((
            None,
            format!(
                "no 'listening on' line within {START_TIMEOUT:?}:\n{}",
                seen.join("\n")
            ),
        ))
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr, Some(REPLY_TIMEOUT)).expect("connect to test server")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` and waits (bounded) for the process to exit.
    pub fn stop_with(&mut self, signal: i32) -> ExitStatus {
        let mut child = self.child.take().expect("server still running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for server") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not exit within 30 s of signal {signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// All stderr lines printed so far.
    pub fn stderr(&mut self) -> String {
        drain_into(&self.stderr_lines, &mut self.stderr_seen);
        self.stderr_seen.join("\n")
    }

    /// True while the child process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }
}

/// Bytes drawn from `rng`, as a msgpack bin of `len` bytes.
pub fn random_bin(rng: &mut rand::rngs::StdRng, len: usize) -> rmpv::Value {
    use rand::Rng;
    let mut bytes = vec![0u8; len];
    rng.fill(&mut bytes[..]);
    rmpv::Value::Binary(bytes)
}

/// Asserts that GET of `key` answers `value`, byte for byte; `when` says
/// at which step of the test.
pub fn assert_reads_back(client: &mut Client, key: &[u8], value: &rmpv::Value, when: &str) {
    let found = client.get(key).expect("GET");
    assert_eq!(
        found.as_ref(),
        Some(value),
        "{when}: key {}",
        String::from_utf8_lossy(key)
    );
}

/// One STATS figure of the server `client` talks to (summed over shards).
pub fn stat(client: &mut Client, name: &str) -> u64 {
    client.stats().expect("STATS")[name]
}

/// Starts a server on `data_dir` with `flags`; panics with its stderr if it
/// does not start.
pub fn start_on(data_dir: &Path, nr_shards: usize, flags: &[&str]) -> TestServer {
    TestServer::start_in(data_dir, nr_shards, flags)
        .unwrap_or_else(|(status, stderr)| panic!("server did not start ({status:?}):\n{stderr}"))
}

/// Whether this test binary runs its suites on the disk engine: the
/// `disk_engine` test includes the suites whose servers keep data (and the
/// protocol suites), and every server they start with the log engine, or
/// with no engine named, runs the disk engine instead.
pub fn on_disk_engine() -> bool {
    static ON_DISK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON_DISK.get_or_init(|| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| {
                exe.file_name()
                    .map(|name| name.to_string_lossy().into_owned())
            })
            .is_some_and(|name| name.starts_with("disk_engine"))
    })
}

/// `args` with the engine this test binary runs (see [`on_disk_engine`]).
fn with_engine_under_test<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut args = args.to_vec();
    if on_disk_engine() {
        match args.iter().position(|a| *a == "--engine") {
            Some(at) if args.get(at + 1) == Some(&"log") => args[at + 1] = "disk",
            Some(_) => {}
            None => args.extend_from_slice(&["--engine", "disk"]),
        }
    }
    args
}

/// Starts the server binary with `args` on `data_dir` and returns at once:
/// the child, and its stderr lines as they come. [`TestServer`] waits for it
/// to listen; a test that watches it start (recovery) reads the lines itself.
pub fn spawn_server(
    data_dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(server_binary())
        .args(with_engine_under_test(args))
        .arg("--data-dir")
        .arg(data_dir)
        .env("COREKV_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn corekv-server");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn drain_into(rx: &mpsc::Receiver<String>, seen: &mut Vec<String>) {
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
        seen.push(line);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Frames a msgpack body with the 8-byte big-endian length prefix.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u64).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// Encodes a msgpack value.
pub fn pack(value: &rmpv::Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).expect("encode");
    out
}

/// Backs up the server whose HTTP API is at `http` into `dir` with the
/// `corekv backup` command, which must succeed.
pub fn run_backup(dir: &Path, http: SocketAddr) {
    let output = Command::new(env!("CARGO_BIN_EXE_corekv"))
        .args(["--timeout", "120", "backup"])
        .arg(dir)
        .args(["--http-addr", &http.to_string()])
        .output()
        .expect("run corekv backup");
    assert!(
        output.status.success(),
        "corekv backup failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Sets both keys of `pair` to `value` in one ATOMIC (a cross-shard batch
/// when they are on different shards), and records them in `written`.
pub fn set_pair_atomically(
    client: &mut Client,
    pair: &(Vec<u8>, Vec<u8>),
    value: rmpv::Value,
    written: &mut std::collections::BTreeMap<Vec<u8>, rmpv::Value>,
) {
    use corekv::client::Request;
    let (left, right) = pair;
    let batch = Request::Atomic(vec![
        Request::Set(left.clone(), value.clone()),
        Request::Set(right.clone(), value.clone()),
    ]);
    client.call(&[batch]).expect("ATOMIC");
    written.insert(left.clone(), value.clone());
    written.insert(right.clone(), value);
}

/// Reads every key of `written` and checks its value byte for byte.
pub fn assert_all_read_back(
    client: &mut Client,
    written: &std::collections::BTreeMap<Vec<u8>, rmpv::Value>,
    when: &str,
) {
    for (key, value) in written {
        assert_reads_back(client, key, value, when);
    }
}

/// Sends one message of msgpack `requests` and returns its reply's elements.
pub fn call(client: &mut Client, requests: Vec<rmpv::Value>) -> Vec<rmpv::Value> {
    client
        .send_raw(&frame(&pack(&rmpv::Value::Array(requests))))
        .and_then(|_| client.flush())
        .expect("send");
    let reply = client.recv_reply().expect("reply");
    match rmpv::decode::read_value(&mut &reply[..]).expect("msgpack") {
        rmpv::Value::Array(elements) => elements,
        other => panic!("reply is not an array: {other}"),
    }
}

/// A seed for randomised tests: COREKV_TEST_SEED if set, else the clock. Printed
/// so a failure can be replayed.
pub fn test_seed(test: &str) -> u64 {
    let seed = std::env::var("COREKV_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("{test}: seed {seed} (replay with COREKV_TEST_SEED={seed})");
    seed
}

/// The HTTP address the server logged ("http listening on IP:PORT"); the server
/// must have been started with `--http-addr 127.0.0.1:0`.
pub fn http_addr(server: &mut TestServer) -> SocketAddr {
    // The line follows "listening on" at once; stderr() waits briefly for lines.
    for _ in 0..50 {
        let stderr = server.stderr();
        let found = stderr
            .lines()
            .filter_map(|line| line.split("http listening on ").nth(1))
            .find_map(|addr| addr.trim().parse().ok());
        if let Some(addr) = found {
            return addr;
        }
    }
    panic!("no 'http listening on' line:\n{}", server.stderr());
}

/// One HTTP/1.1 request on a fresh connection; returns the status code and body.
pub fn http_request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the HTTP address");
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .expect("read timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: corekv\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .expect("send request head");
    stream.write_all(body).expect("send request body");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read response");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    (status, body)
}

/// Arms failpoint `name` (`log::fdatasync`, or `log::fdatasync@1` for shard 1
/// only) with the `fail` crate's `actions` (`return`, `return(ENOSPC)`,
/// `2*off->return`, …) on a server started with `--http-addr`; empty
/// `actions` disarms it. The test build of the server has failpoints compiled in.
pub fn arm_failpoint(http: SocketAddr, name: &str, actions: &str) {
    let (status, body) = http_request(
        http,
        "POST",
        "/debug/failpoint",
        format!("{name}={actions}").as_bytes(),
    );
    assert_eq!(status, 200, "arming failpoint {name}={actions}: {body}");
}

/// A log-engine server with the HTTP API (failpoints are armed through it) on
/// `data_dir`, and its HTTP address.
pub fn start_log_with_http(
    data_dir: &Path,
    nr_shards: usize,
    extra_args: &[&str],
) -> (TestServer, SocketAddr) {
    let mut args = vec!["--engine", "log", "--http-addr", "127.0.0.1:0"];
    args.extend_from_slice(extra_args);
    let mut server = TestServer::start_in(data_dir, nr_shards, &args)
        .unwrap_or_else(|(status, stderr)| panic!("server did not start ({status:?}):\n{stderr}"));
    let http = http_addr(&mut server);
    (server, http)
}

/// How many stderr lines so far contain every one of `needles`.
pub fn count_lines(server: &mut TestServer, needles: &[&str]) -> usize {
    server
        .stderr()
        .lines()
        .filter(|line| needles.iter().all(|n| line.contains(n)))
        .count()
}

/// Waits (bounded: about 30 s) until a stderr line contains every one of
/// `needles`, and returns it; panics with the stderr if none does.
pub fn wait_for_line(server: &mut TestServer, needles: &[&str]) -> String {
    for _ in 0..150 {
        let stderr = server.stderr();
        if let Some(line) = stderr
            .lines()
            .find(|line| needles.iter().all(|n| line.contains(n)))
        {
            return line.to_owned();
        }
    }
    panic!(
        "no line with {needles:?} in the server's stderr:\n{}",
        server.stderr()
    );
}

/// Compactions shard `shard` has logged so far (`compacted …/shard-<i>.log: …`).
pub fn nr_compactions(server: &mut TestServer, shard: usize) -> usize {
    count_lines(server, &["compacted ", &format!("shard-{shard}.log: ")])
}

/// Values of this many bytes grow a log quickly past a small `--compact-min-bytes`.
pub const FILLER_VALUE_BYTES: usize = 16 * 1024;

/// Overwrites a filler key on `shard` (16 KiB values) until the shard logs one
/// more compaction than before; returns the filler key and its last value and
/// version, all acknowledged. The server must run with a small
/// `--compact-min-bytes` (64 KiB compacts after a handful of writes).
pub fn force_compaction(
    server: &mut TestServer,
    client: &mut Client,
    shard: usize,
    nr_shards: usize,
) -> (Vec<u8>, rmpv::Value, u64) {
    let filler = key_on_shard("filler", shard, nr_shards);
    let before = nr_compactions(server, shard);
    for round in 0..100u8 {
        for i in 0..4u8 {
            let value = rmpv::Value::Binary(vec![round ^ i; FILLER_VALUE_BYTES]);
            client.set(&filler, value).expect("SET of the filler key");
        }
        if nr_compactions(server, shard) > before {
            let (value, version) = client
                .getv(&filler)
                .expect("GETV of the filler key")
                .expect("the filler key is present");
            return (filler, value, version);
        }
    }
    panic!("shard {shard} did not compact:\n{}", server.stderr());
}
