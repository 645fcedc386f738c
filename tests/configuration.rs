//! Configuration from the environment and logging, through the real
//! `corekv-server` binary: every flag also reads `COREKV_<FLAG>` and the
//! command line wins; `--log`/`COREKV_LOG`, else `RUST_LOG`, choose the log
//! lines, and a filter that does not parse stops the start; `--log-format
//! json` writes one JSON object per line; `--help` shows the variables and
//! examples.

mod common;

use common::{http_addr, http_request, TestServer};
use std::io::{BufRead, BufReader};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn server() -> Command {
    let mut command = Command::new(common::server_binary());
    command.stdin(Stdio::null()).stdout(Stdio::null());
    command
}

/// Runs a server that is expected to exit by itself (bounded); returns its
/// status and stderr.
fn exit_of(command: &mut Command) -> (ExitStatus, String) {
    let output = common::run_to_exit(command);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status, stderr)
}

#[test]
fn flags_come_from_corekv_environment_variables_and_the_command_line_wins() {
    let temp = tempfile::tempdir().expect("temp dir");
    let env = [
        ("COREKV_HTTP_ADDR", "127.0.0.1:0"),
        ("COREKV_MAX_CONNECTIONS", "7"),
        // The harness passes --shards 2: the flag wins over this.
        ("COREKV_SHARDS", "3"),
    ];
    let mut server = TestServer::start_with_env(&temp.path().join("data"), 2, &[], &env)
        .unwrap_or_else(|(status, stderr)| panic!("no start ({status:?}):\n{stderr}"));
    let stats = server.client().stats().expect("STATS");
    assert_eq!(stats["shards"], 2, "--shards beats COREKV_SHARDS");
    let http = http_addr(&mut server);
    let (status, page) = http_request(http, "GET", "/metrics", b"");
    assert_eq!(status, 200);
    assert!(
        page.lines().any(|line| line == "corekv_max_connections 7"),
        "COREKV_MAX_CONNECTIONS: {page}"
    );
}

#[test]
fn an_environment_variable_that_does_not_parse_is_refused_naming_its_flag() {
    let temp = tempfile::tempdir().expect("temp dir");
    let (status, stderr) = exit_of(
        server()
            .args(["--engine", "memory", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(temp.path().join("data"))
            .env("COREKV_MAX_CONNECTIONS", "lots"),
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value 'lots' for '--max-connections"),
        "{stderr}"
    );
    assert!(!temp.path().join("data").exists());
}

#[test]
fn an_invalid_log_filter_stops_the_start_naming_where_it_came_from() {
    let temp = tempfile::tempdir().expect("temp dir");
    // (environment, flags, the source the error must name)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
    let cases: [Case; 3] = [
        (&[("COREKV_LOG", "corekv=loud")], &[], "(from COREKV_LOG)"),
        (
            &[("COREKV_LOG", "")],
            &["--log", "info,x=[["],
            "(from --log)",
        ),
        (
            &[("COREKV_LOG", ""), ("RUST_LOG", "warn,corekv=chatty")],
            &[],
            "(from RUST_LOG)",
        ),
    ];
    for (env, flags, source) in cases {
        let (status, stderr) = exit_of(
            server()
                .args(["--engine", "memory", "--addr", "127.0.0.1:0", "--data-dir"])
                .arg(temp.path().join("data"))
                .args(flags)
                .envs(env.iter().copied()),
        );
        assert_eq!(status.code(), Some(1), "{env:?}: {stderr}");
        assert!(
            stderr.contains("invalid log filter") && stderr.contains(source),
            "{env:?}: {stderr}"
        );
        assert!(!temp.path().join("data").exists(), "nothing was created");
    }
}

#[test]
fn rust_log_chooses_the_log_lines_when_corekv_log_is_not_set() {
    let temp = tempfile::tempdir().expect("temp dir");
    let env = [("COREKV_LOG", ""), ("RUST_LOG", "warn,corekv_server=info")];
    let mut server = TestServer::start_with_env(&temp.path().join("data"), 1, &[], &env)
        .unwrap_or_else(|(status, stderr)| panic!("no start ({status:?}):\n{stderr}"));
    let stderr = server.stderr();
    assert!(stderr.contains("listening on"), "{stderr}");
    assert!(
        !stderr.contains("recovered nothing"),
        "corekv::server's info lines are filtered out: {stderr}"
    );
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut child = server()
        .args([
            "--engine",
            "memory",
            "--addr",
            "127.0.0.1:0",
            "--shards",
            "1",
        ])
        .args(["--log-format", "json", "--data-dir"])
        .arg(temp.path().join("data"))
        .env("COREKV_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn corekv-server");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    // Bounded: the start-up logs a handful of lines, each within seconds.
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        if lines.len() >= 100 {
            break;
        }
        let listening = line.contains("listening on");
        lines.push(line);
        if listening {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines.last().is_some_and(|l| l.contains("listening on")),
        "{lines:?}"
    );
    for line in &lines {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_eq!(object["level"], "INFO", "{line}");
        assert!(object["timestamp"].is_string(), "{line}");
        assert!(object["fields"]["message"].is_string(), "{line}");
    }
}

#[test]
fn help_shows_every_variable_and_examples() {
    let output = Command::new(common::server_binary())
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in [
        "COREKV_ADDR",
        "COREKV_HTTP_ADDR",
        "COREKV_DATA_DIR",
        "COREKV_FSYNC",
        "COREKV_LOG",
        "COREKV_LOG_FORMAT",
    ] {
        assert!(
            help.contains(&format!("[env: {variable}")),
            "{variable}: {help}"
        );
    }
    assert!(help.contains("Examples:"), "{help}");
    assert!(help.contains("corekv-server --addr 0.0.0.0:4000"), "{help}");
}

/// CPU time (user + system, in clock ticks) the server's shard threads have
/// used so far.
fn shard_cpu_ticks(server: &TestServer) -> u64 {
    let tasks = format!("/proc/{}/task", server.pid());
    let mut ticks = 0;
    for task in std::fs::read_dir(&tasks).expect("the server's threads") {
        let task = task.expect("a thread").path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if !name.starts_with("corekv-shard") {
            continue;
        }
        let stat = std::fs::read_to_string(task.join("stat")).unwrap_or_default();
        // The fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // utime and stime are the 14th and 15th fields of the whole line.
        ticks += fields
            .get(11..13)
            .map(|t| t.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
            .unwrap_or(0);
    }
    ticks
}

/// Shard CPU ticks used over 100 requests sent 3 ms apart (about 0.3 s).
fn shard_cpu_over_spaced_requests(server: &TestServer) -> u64 {
    let mut client = server.client();
    let before = shard_cpu_ticks(server);
    for i in 0..100u32 {
        client
            .set(b"k", rmpv::Value::from(i))
            .expect("SET between pauses");
        std::thread::sleep(Duration::from_millis(3));
    }
    shard_cpu_ticks(server) - before
}

#[test]
fn an_idle_polling_shard_spends_its_pauses_on_its_cpu_and_a_default_one_sleeps() {
    // One shard has a CPU of its own on any machine, so it polls.
    let mut polling = TestServer::start(1, &["--idle-poll-us", "5000"]);
    assert!(
        polling
            .stderr()
            .contains("shards poll for 5000 µs before they sleep"),
        "{}",
        polling.stderr()
    );
    let sleeping = TestServer::start(1, &[]);
    let polled = shard_cpu_over_spaced_requests(&polling);
    let slept = shard_cpu_over_spaced_requests(&sleeping);
    // The polling shard never sleeps (each pause is shorter than its
    // polling): about 30 ticks of 10 ms if it has the CPU to itself. The
    // bounds leave room for a machine busy with other tests.
    assert!(
        polled >= 5 && polled >= 4 * slept.max(1),
        "shard CPU ticks over 0.3 s of spaced requests: {polled} polling, {slept} sleeping"
    );
}

#[test]
fn idle_polling_is_refused_past_10_ms_and_ignored_with_a_warning_for_shards_sharing_cpus() {
    let temp = tempfile::tempdir().expect("temp dir");
    let (status, stderr) = exit_of(
        server()
            .args(["--engine", "memory", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(temp.path().join("data"))
            .args(["--idle-poll-us", "20000"]),
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--idle-poll-us must be between 0 (sleep at once) and 10000, got 20000"),
        "{stderr}"
    );
    // More shards than CPUs: they are not pinned, and a polling shard would
    // take the time of the others on its CPU.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut shared = TestServer::start(cpus + 1, &["--idle-poll-us", "200"]);
    let stderr = shared.stderr();
    assert!(
        stderr.contains("shards are not pinned to CPUs, and --idle-poll-us has no effect"),
        "{stderr}"
    );
    assert!(!stderr.contains("shards poll for"), "{stderr}");
    shared
        .client()
        .set(b"k", rmpv::Value::from(1))
        .expect("a server that ignores --idle-poll-us serves");
}
