//! RESP and the text protocol on the msgpack port, byte for byte over raw
//! sockets: the protocol chosen by the first byte, replies, hostile input, the
//! kv-store seed's text session, values shared with msgpack and HTTP, and a
//! RESP-acknowledged write surviving kill -9.

mod common;

use common::keys::key_name_on_shard;
use common::{http_addr, http_request, TestServer};
use rmpv::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .expect("read timeout");
    stream
}

/// Sends `request` and reads until `expected.len()` bytes came (or the
/// timeout); returns what came.
fn exchange(stream: &mut TcpStream, request: &[u8], expected_len: usize) -> Vec<u8> {
    stream.write_all(request).expect("send");
    let mut got = Vec::new();
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let mut chunk = [0u8; 4096];
    while got.len() < expected_len && Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading a reply: {e} (got so far: {:?})", show(&got)),
        }
    }
    got
}

fn assert_exchange(stream: &mut TcpStream, request: &[u8], expected: &[u8]) {
    let got = exchange(stream, request, expected.len());
    assert_eq!(show(&got), show(expected), "request {:?}", show(request));
}

/// Reads until the server closes the connection; returns everything it sent.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    got
}

fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[test]
fn a_resp_connection_answers_redis_commands_byte_for_byte() {
    let server = TestServer::start(2, &[]);
    let mut s = connect(server.addr);
    let cases: &[(&[&[u8]], &[u8])] = &[
        (&[b"PING"], b"+PONG\r\n"),
        (&[b"echo", b"hi"], b"$2\r\nhi\r\n"),
        (&[b"SET", b"k", b"v"], b"+OK\r\n"),
        (&[b"GET", b"k"], b"$1\r\nv\r\n"),
        (&[b"GET", b"missing"], b"$-1\r\n"),
        (&[b"INCR", b"n"], b":1\r\n"),
        (&[b"INCRBY", b"n", b"41"], b":42\r\n"),
        (
            &[b"INCR", b"k"],
            b"-ERR value is not an integer or out of range\r\n",
        ),
        (&[b"MSET", b"a", b"1", b"b", b"2"], b"+OK\r\n"),
        (
            &[b"MGET", b"a", b"nope", b"b"],
            b"*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n",
        ),
        (&[b"DEL", b"a", b"b", b"nope"], b":2\r\n"),
        (&[b"EXISTS", b"k", b"k", b"a"], b":2\r\n"),
        (&[b"SETNX", b"k", b"w"], b":0\r\n"),
        (&[b"APPEND", b"k", b"xyz"], b":4\r\n"),
        (&[b"STRLEN", b"k"], b":4\r\n"),
        (&[b"TYPE", b"k"], b"+string\r\n"),
        (&[b"TYPE", b"nope"], b"+none\r\n"),
        (&[b"GETDEL", b"k"], b"$4\r\nvxyz\r\n"),
        (&[b"SELECT", b"0"], b"+OK\r\n"),
        (&[b"SELECT", b"1"], b"-ERR DB index is out of range\r\n"),
        (
            &[b"GET"],
            b"-ERR wrong number of arguments for 'get' command\r\n",
        ),
        (
            &[b"NOSUCH", b"x"],
            b"-ERR unknown command 'NOSUCH', with args beginning with: 'x' \r\n",
        ),
        (&[b"INCRBYFLOAT", b"f", b"10.5"], b"$4\r\n10.5\r\n"),
        (&[b"INCRBYFLOAT", b"f", b"0.1"], b"$4\r\n10.6\r\n"),
    ];
    for (args, expected) in cases {
        let got = exchange(&mut s, &command(args), expected.len());
        assert_eq!(show(&got), show(expected), "{:?}", show(&command(args)));
    }
    let hello = b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.2.0\r\n\
                  $5\r\nproto\r\n:3\r\n$2\r\nid\r\n:";
    let rest = b"\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n\
                 $7\r\nmodules\r\n*0\r\n";
    s.write_all(&command(&[b"HELLO", b"3"])).expect("send");
    let mut got = Vec::new();
    while !got.ends_with(rest) && got.len() < 300 {
        got.extend(exchange(&mut s, b"", 1));
    }
    assert!(
        got.starts_with(hello) && got.ends_with(rest),
        "{}",
        show(&got)
    );
    // After HELLO 3, nulls are RESP3's.
    assert_exchange(&mut s, &command(&[b"GET", b"missing"]), b"_\r\n");
}

#[test]
fn a_pipeline_is_answered_in_order_across_shards() {
    let server = TestServer::start(2, &[]);
    let mut s = connect(server.addr);
    let mut request = Vec::new();
    let mut expected = Vec::new();
    for i in 0..2000 {
        let key = format!("p{i}");
        let value = format!("v{i}");
        request.extend(command(&[b"SET", key.as_bytes(), value.as_bytes()]));
        request.extend(command(&[b"GET", key.as_bytes()]));
        request.extend(command(&[b"INCR", b"counter"]));
        expected.extend_from_slice(b"+OK\r\n");
        expected.extend(format!("${}\r\n{value}\r\n", value.len()).into_bytes());
        expected.extend(format!(":{}\r\n", i + 1).into_bytes());
    }
    assert_exchange(&mut s, &request, &expected);
}

#[test]
fn multi_exec_runs_as_one_unit_and_watch_aborts_on_a_changed_key() {
    let server = TestServer::start(2, &[]);
    let a = key_name_on_shard("acct", 0, 2);
    let b = key_name_on_shard("acct", 1, 2);
    let mut s = connect(server.addr);
    let mut other = connect(server.addr);
    assert_exchange(
        &mut s,
        &command(&[b"MSET", a.as_bytes(), b"10", b.as_bytes(), b"0"]),
        b"+OK\r\n",
    );
    let block = [
        command(&[b"MULTI"]),
        command(&[b"DECRBY", a.as_bytes(), b"3"]),
        command(&[b"INCRBY", b.as_bytes(), b"3"]),
        command(&[b"MGET", a.as_bytes(), b.as_bytes()]),
        command(&[b"EXEC"]),
    ]
    .concat();
    assert_exchange(
        &mut s,
        &block,
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n:7\r\n:3\r\n*2\r\n$1\r\n7\r\n$1\r\n3\r\n",
    );
    // WATCH, a write by another client, then EXEC: null, nothing ran.
    assert_exchange(&mut s, &command(&[b"WATCH", a.as_bytes()]), b"+OK\r\n");
    assert_exchange(
        &mut other,
        &command(&[b"SET", a.as_bytes(), b"100"]),
        b"+OK\r\n",
    );
    let block = [
        command(&[b"MULTI"]),
        command(&[b"SET", b.as_bytes(), b"lost"]),
        command(&[b"EXEC"]),
    ]
    .concat();
    assert_exchange(&mut s, &block, b"+OK\r\n+QUEUED\r\n*-1\r\n");
    assert_exchange(&mut s, &command(&[b"GET", b.as_bytes()]), b"$1\r\n3\r\n");
    // A command refused while queueing discards the block.
    let block = [
        command(&[b"MULTI"]),
        command(&[b"SET", b.as_bytes(), b"lost"]),
        command(&[b"GET"]),
        command(&[b"EXEC"]),
    ]
    .concat();
    assert_exchange(
        &mut s,
        &block,
        b"+OK\r\n+QUEUED\r\n-ERR wrong number of arguments for 'get' command\r\n\
          -EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    assert_exchange(&mut s, &command(&[b"GET", b.as_bytes()]), b"$1\r\n3\r\n");
}

#[test]
fn unwatch_forgets_the_watched_keys_so_exec_runs_after_they_changed() {
    let server = TestServer::start(2, &[]);
    let mut s = connect(server.addr);
    let mut other = connect(server.addr);
    assert_exchange(&mut s, &command(&[b"WATCH", b"k"]), b"+OK\r\n");
    assert_exchange(&mut other, &command(&[b"SET", b"k", b"1"]), b"+OK\r\n");
    assert_exchange(&mut s, &command(&[b"UNWATCH"]), b"+OK\r\n");
    let block = [
        command(&[b"MULTI"]),
        command(&[b"SET", b"k", b"2"]),
        command(&[b"UNWATCH"]),
        command(&[b"EXEC"]),
    ]
    .concat();
    assert_exchange(
        &mut s,
        &block,
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n+OK\r\n",
    );
    assert_exchange(&mut s, &command(&[b"GET", b"k"]), b"$1\r\n2\r\n");
}

#[test]
fn hostile_resp_gets_a_protocol_error_and_the_connection_closes() {
    let server = TestServer::start(2, &["--max-frame-bytes", "4096", "--max-key-bytes", "1024"]);
    let cases: [&[u8]; 6] = [
        b"*99999999999999\r\n",
        b"*2\r\n$99999999\r\n",
        b"*1\r\n$-5\r\n",
        b"*\x00\xff\x13garbage\r\n",
        b"*1\r\n:5\r\n",
        b"*1\r\n$3\r\nGETxx",
    ];
    for case in cases {
        let mut s = connect(server.addr);
        // A good command first: it is answered before the error.
        let mut request = command(&[b"PING"]);
        request.extend_from_slice(case);
        s.write_all(&request).expect("send");
        let got = show(&read_to_close(&mut s));
        assert!(
            got.starts_with("+PONG\\r\\n-ERR Protocol error: "),
            "{:?} got {got}",
            show(case)
        );
    }
    // A half command then close: the server carries on.
    let mut s = connect(server.addr);
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk").expect("send");
    drop(s);
    let mut s = connect(server.addr);
    assert_exchange(&mut s, &command(&[b"GET", b"k"]), b"$-1\r\n");
    // A well-framed but wrong command keeps the connection usable.
    assert_exchange(
        &mut s,
        &command(&[b"SET", b"k", b"v", b"BOGUS"]),
        b"-ERR syntax error\r\n",
    );
    let too_long_key = vec![b'k'; 5000];
    let mut s2 = connect(server.addr);
    let got = read_to_close_after(&mut s2, &command(&[b"GET", &too_long_key]));
    assert!(got.starts_with("-ERR Protocol error: "), "{got}");
    assert_exchange(&mut s, &command(&[b"PING"]), b"+PONG\r\n");
}

#[test]
fn random_bytes_after_a_star_never_crash_or_stall_the_server() {
    use rand::{Rng, SeedableRng};
    let seed = common::test_seed("random_bytes_after_a_star_never_crash_or_stall_the_server");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let server = TestServer::start(2, &[]);
    for case in 0..50 {
        let mut bytes = vec![b'*'];
        let len = rng.gen_range(1..64);
        bytes.extend((0..len).map(|_| rng.gen::<u8>()));
        let mut s = connect(server.addr);
        s.write_all(&bytes).expect("send");
        // Half-close: the server sees the end of the stream and closes too.
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let got = show(&read_to_close(&mut s));
        assert!(
            got.is_empty() || got.starts_with("-ERR Protocol error: ") || got.starts_with('-'),
            "case {case} (seed {seed}): {:?} got {got}",
            show(&bytes)
        );
    }
    let mut s = connect(server.addr);
    assert_exchange(&mut s, &command(&[b"PING"]), b"+PONG\r\n");
}

fn read_to_close_after(stream: &mut TcpStream, request: &[u8]) -> String {
    stream.write_all(request).expect("send");
    show(&read_to_close(stream))
}

#[test]
fn the_seed_text_session_works_over_a_raw_socket() {
    let server = TestServer::start(2, &[]);
    let mut s = connect(server.addr);
    assert_exchange(&mut s, b"SET key value\n", b"success\n");
    assert_exchange(&mut s, b"GET key\n", b"value\n");
    assert_exchange(&mut s, b"DELETE key\n", b"success\n");
    assert_exchange(&mut s, b"GET key\n", b"no value stored\n");
    assert_exchange(&mut s, b"SET greeting hello there\r\n", b"success\n");
    assert_exchange(&mut s, b"GET greeting\r\n", b"hello there\n");
    assert_exchange(&mut s, b"INCR visits\nINCR visits\n", b"1\n2\n");
    assert_exchange(
        &mut s,
        b"FROB x\n",
        b"ERR unknown command 'FROB', with args beginning with: 'x' \n",
    );
    assert_exchange(&mut s, b"STRLEN greeting\n", b"11\n");
    // The text protocol shares the store with RESP.
    let mut r = connect(server.addr);
    assert_exchange(
        &mut r,
        &command(&[b"GET", b"greeting"]),
        b"$11\r\nhello there\r\n",
    );
}

#[test]
fn values_are_the_same_bytes_over_msgpack_resp_and_http() {
    let mut server = TestServer::start(2, &["--http-addr", "127.0.0.1:0"]);
    let http = http_addr(&mut server);
    let mut client = server.client();
    let mut s = connect(server.addr);
    let binary: Vec<u8> = (0..=255u8).collect();
    // RESP → msgpack: bin, byte for byte.
    assert_exchange(&mut s, &command(&[b"SET", b"bytes", &binary]), b"+OK\r\n");
    assert_eq!(
        client.get(b"bytes").expect("get"),
        Some(Value::Binary(binary.clone()))
    );
    // msgpack str, bin and integers → RESP strings; INCR works on integers.
    client.set(b"s", Value::from("text")).expect("set");
    client
        .set(b"b", Value::Binary(b"\x00\r\n".to_vec()))
        .expect("set");
    client.set(b"i", Value::from(-7)).expect("set");
    client.set(b"l", Value::Array(vec![1.into()])).expect("set");
    assert_exchange(&mut s, &command(&[b"GET", b"s"]), b"$4\r\ntext\r\n");
    assert_exchange(&mut s, &command(&[b"GET", b"b"]), b"$3\r\n\x00\r\n\r\n");
    assert_exchange(&mut s, &command(&[b"GET", b"i"]), b"$2\r\n-7\r\n");
    assert_exchange(&mut s, &command(&[b"INCR", b"i"]), b":-6\r\n");
    let wrongtype = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
    assert_exchange(&mut s, &command(&[b"GET", b"l"]), wrongtype);
    assert_exchange(&mut s, &command(&[b"APPEND", b"l", b"x"]), wrongtype);
    assert_exchange(&mut s, &command(&[b"TYPE", b"l"]), b"+msgpack\r\n");
    // HTTP → RESP, and RESP → HTTP (bin reads as byte numbers there).
    let (status, body) = http_request(
        http,
        "POST",
        "/v1/put",
        br#"[{"key":"h","value":"from http","version":0},{"key":"hn","value":41,"version":0}]"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_exchange(&mut s, &command(&[b"GET", b"h"]), b"$9\r\nfrom http\r\n");
    assert_exchange(&mut s, &command(&[b"INCR", b"hn"]), b":42\r\n");
    let (status, body) = http_request(http, "GET", "/v1/get?key=hn", b"");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""value":[52,50]"#), "{body}");
}

#[test]
fn the_check_request_guards_an_atomic_batch_by_version() {
    let server = TestServer::start(2, &[]);
    let mut client = server.client();
    let (a, b) = (
        key_name_on_shard("c", 0, 2).into_bytes(),
        key_name_on_shard("c", 1, 2).into_bytes(),
    );
    client.set(&a, Value::from(1)).expect("set");
    let check = |key: &[u8], version: u64| {
        Value::Array(vec![8.into(), Value::Binary(key.to_vec()), version.into()])
    };
    let set = |key: &[u8]| Value::Array(vec![1.into(), Value::Binary(key.to_vec()), 2.into()]);
    let atomic = |inner: Vec<Value>| {
        common::frame(&common::pack(&Value::Array(vec![Value::Array(vec![
            3.into(),
            Value::Array(inner),
        ])])))
    };
    // a is at version 1: the batch commits.
    client
        .send_raw(&atomic(vec![check(&a, 1), set(&b)]))
        .and_then(|_| client.flush())
        .expect("send");
    assert_eq!(client.recv_reply().expect("reply"), [0x90]);
    // Stale version: the batch aborts with CONFLICT and changes nothing.
    client
        .send_raw(&atomic(vec![set(&b), check(&a, 7)]))
        .and_then(|_| client.flush())
        .expect("send");
    let reply = client.recv_reply().expect("reply");
    assert!(show(&reply).contains("CONFLICT"), "{}", show(&reply));
    assert_eq!(client.getv(&b).expect("getv").map(|(_, v)| v), Some(1));
    // Outside ATOMIC: nothing when it matches, [-5, current] when not.
    let alone = common::frame(&common::pack(&Value::Array(vec![
        check(&a, 1),
        check(&a, 3),
    ])));
    client
        .send_raw(&alone)
        .and_then(|_| client.flush())
        .expect("send");
    assert_eq!(
        client.recv_reply().expect("reply"),
        [0x91, 0x92, 0xfb, 0x01]
    );
}

#[test]
fn a_resp_acknowledged_write_survives_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let flags = ["--engine", "log", "--fsync", "always"];
    let mut server = TestServer::start_in(&data_dir, 2, &flags).expect("start");
    let mut s = connect(server.addr);
    let mut request = Vec::new();
    let mut expected = Vec::new();
    for i in 0..50 {
        request.extend(command(&[b"SET", format!("d{i}").as_bytes(), b"durable"]));
        expected.extend_from_slice(b"+OK\r\n");
    }
    request.extend(command(&[b"INCRBY", b"dn", b"5"]));
    expected.extend_from_slice(b":5\r\n");
    assert_exchange(&mut s, &request, &expected);
    server.stop_with(libc::SIGKILL);
    let server = TestServer::start_in(&data_dir, 2, &flags).expect("restart");
    let mut s = connect(server.addr);
    assert_exchange(&mut s, &command(&[b"GET", b"d49"]), b"$7\r\ndurable\r\n");
    assert_exchange(&mut s, &command(&[b"GET", b"dn"]), b"$1\r\n5\r\n");
    assert_exchange(&mut s, &command(&[b"DBSIZE"]), b":51\r\n");
    // FLUSHDB is logged too.
    assert_exchange(&mut s, &command(&[b"FLUSHDB"]), b"+OK\r\n");
    drop(s);
    let mut server = server;
    server.stop_with(libc::SIGKILL);
    let server = TestServer::start_in(&data_dir, 2, &flags).expect("restart");
    let mut s = connect(server.addr);
    assert_exchange(&mut s, &command(&[b"DBSIZE"]), b":0\r\n");
}

#[test]
fn over_the_memory_limit_a_resp_write_gets_redis_oom_error_and_reads_still_work() {
    let server = TestServer::start(1, &["--max-memory-bytes", "1048576"]);
    let mut s = connect(server.addr);
    assert_exchange(&mut s, &command(&[b"SET", b"small", b"v"]), b"+OK\r\n");
    let big = vec![b'x'; 2 << 20];
    assert_exchange(
        &mut s,
        &command(&[b"SET", b"big", &big]),
        b"-OOM command not allowed when used memory > 'maxmemory'.\r\n",
    );
    assert_exchange(
        &mut s,
        &command(&[b"MSET", b"a", b"1", b"big", &big]),
        b"-OOM command not allowed when used memory > 'maxmemory'.\r\n",
    );
    assert_exchange(&mut s, &command(&[b"GET", b"a"]), b"$-1\r\n");
    assert_exchange(&mut s, &command(&[b"GET", b"small"]), b"$1\r\nv\r\n");
}

#[test]
fn a_failed_log_sync_answers_resp_writes_with_ioerr() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, http) =
        common::start_log_with_http(&dir.path().join("data"), 1, &["--fsync", "always"]);
    let mut s = connect(server.addr);
    assert_exchange(&mut s, &command(&[b"SET", b"before", b"1"]), b"+OK\r\n");
    common::arm_failpoint(http, "log::fdatasync", "return");
    s.write_all(&command(&[b"SET", b"k", b"v"])).expect("send");
    let got = show(&exchange(&mut s, b"", 6));
    assert!(got.starts_with("-IOERR "), "{got}");
    // Reads still work.
    let got = exchange(&mut s, &command(&[b"GET", b"before"]), 7);
    assert_eq!(show(&got), show(b"$1\r\n1\r\n"));
}

#[test]
fn flushdb_waits_for_a_held_atomic_batch_so_a_restart_does_not_bring_its_keys_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let (mut server, http) = common::start_log_with_http(&data_dir, 2, &["--fsync", "always"]);
    let keys = [
        common::keys::key_on_shard("held", 0, 2),
        common::keys::key_on_shard("held", 1, 2),
    ];
    // A cross-shard batch prepared on both shards, held before its commit.
    common::arm_failpoint(http, "txn::before_commit", "return");
    let batch = corekv::client::Request::Atomic(
        keys.iter()
            .map(|k| corekv::client::Request::Set(k.clone(), Value::from("v")))
            .collect(),
    );
    let mut batch_client = server.client();
    let batch_reply = std::thread::spawn(move || batch_client.call(&[batch]));
    common::wait_for_line(&mut server, &["failpoint txn::before_commit holds"]);
    let addr = server.addr;
    let flush = std::thread::spawn(move || {
        let mut s = connect(addr);
        exchange(&mut s, &command(&[b"FLUSHDB"]), 5)
    });
    // Let FLUSHDB reach the shards while the keys are held, then commit.
    std::thread::sleep(Duration::from_millis(200));
    common::arm_failpoint(http, "txn::before_commit", "");
    assert_eq!(batch_reply.join().expect("batch").expect("reply"), []);
    assert_eq!(show(&flush.join().expect("flush")), "+OK\\r\\n");
    let mut s = connect(server.addr);
    assert_exchange(&mut s, &command(&[b"DBSIZE"]), b":0\r\n");
    server.stop_with(libc::SIGKILL);
    let (server, _) = common::start_log_with_http(&data_dir, 2, &["--fsync", "always"]);
    let mut s = connect(server.addr);
    assert_exchange(&mut s, &command(&[b"DBSIZE"]), b":0\r\n");
}

#[test]
fn a_large_command_arriving_in_many_small_pieces_is_served_whole() {
    let server = TestServer::start(2, &[]);
    let mut s = connect(server.addr);
    s.set_nodelay(true).expect("nodelay");
    let names: Vec<String> = (0..5000).map(|i| format!("piece{i}")).collect();
    let mut args: Vec<&[u8]> = vec![b"MSET"];
    for name in &names {
        args.push(name.as_bytes());
        args.push(b"v");
    }
    let request = command(&args);
    // Pieces that end anywhere: inside headers, bulks and CRLFs.
    for piece in request.chunks(997) {
        s.write_all(piece).expect("send");
    }
    assert_exchange(&mut s, b"", b"+OK\r\n");
    assert_exchange(&mut s, &command(&[b"DBSIZE"]), b":5000\r\n");
    assert_exchange(&mut s, &command(&[b"GET", b"piece4999"]), b"$1\r\nv\r\n");
}

/// A Unix time in seconds far in the future (2100-01-01), for deadlines
/// whose replies do not depend on the clock.
const FAR_SECONDS: &str = "4102444800";

/// Switches the connection to RESP3 (reading HELLO's map to its end).
fn hello3(s: &mut TcpStream) {
    let end = b"$7\r\nmodules\r\n*0\r\n";
    s.write_all(&command(&[b"HELLO", b"3"])).expect("send");
    let mut got = Vec::new();
    while !got.ends_with(end) && got.len() < 300 {
        got.extend(exchange(s, b"", 1));
    }
    assert!(got.ends_with(end), "{}", show(&got));
}

/// Sends one command whose reply is an integer and returns it.
fn integer_reply(s: &mut TcpStream, args: &[&[u8]]) -> i64 {
    s.write_all(&command(args)).expect("send");
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n") && got.len() < 64 {
        got.extend(exchange(s, b"", 1));
    }
    let text = String::from_utf8_lossy(&got);
    text.strip_prefix(':')
        .and_then(|n| n.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("{args:?}: not an integer reply: {text:?}"))
}

#[test]
fn expiry_commands_answer_with_redis_reply_types_in_resp2_and_resp3() {
    let server = TestServer::start(2, &[]);
    for protocol in [2, 3] {
        let mut s = connect(server.addr);
        let null: &[u8] = if protocol == 3 {
            hello3(&mut s);
            b"_\r\n"
        } else {
            b"$-1\r\n"
        };
        let far = FAR_SECONDS.as_bytes();
        let far_ms = format!("{FAR_SECONDS}123");
        let far_ms = far_ms.as_bytes();
        let far_reply = format!(":{FAR_SECONDS}\r\n");
        let far_ms_reply = format!(":{FAR_SECONDS}123\r\n");
        let far_reply = far_reply.as_bytes();
        let far_ms_reply = far_ms_reply.as_bytes();
        let invalid = |name: &str| format!("-ERR invalid expire time in '{name}' command\r\n");
        let (set_invalid, setex_invalid, psetex_invalid) =
            (invalid("set"), invalid("setex"), invalid("psetex"));
        let (getex_invalid, expire_invalid, pexpire_invalid) =
            (invalid("getex"), invalid("expire"), invalid("pexpire"));
        let not_integer: &[u8] = b"-ERR value is not an integer or out of range\r\n";
        let syntax: &[u8] = b"-ERR syntax error\r\n";
        let cases: &[(&[&[u8]], &[u8])] = &[
            // Missing keys: -2, 0, null.
            (&[b"TTL", b"none"], b":-2\r\n"),
            (&[b"PTTL", b"none"], b":-2\r\n"),
            (&[b"EXPIRETIME", b"none"], b":-2\r\n"),
            (&[b"PEXPIRETIME", b"none"], b":-2\r\n"),
            (&[b"EXPIRE", b"none", b"10"], b":0\r\n"),
            (&[b"PEXPIREAT", b"none", far_ms], b":0\r\n"),
            (&[b"PERSIST", b"none"], b":0\r\n"),
            (&[b"GETEX", b"none", b"EX", b"10"], null),
            // A key without a deadline: -1.
            (&[b"SET", b"k", b"v"], b"+OK\r\n"),
            (&[b"TTL", b"k"], b":-1\r\n"),
            (&[b"PEXPIRETIME", b"k"], b":-1\r\n"),
            (&[b"PERSIST", b"k"], b":0\r\n"),
            // EXPIREAT and its reading back; EXPIRETIME rounds down.
            (&[b"EXPIREAT", b"k", far], b":1\r\n"),
            (&[b"EXPIRETIME", b"k"], far_reply),
            (&[b"PEXPIREAT", b"k", far_ms], b":1\r\n"),
            (&[b"PEXPIRETIME", b"k"], far_ms_reply),
            (&[b"EXPIRETIME", b"k"], far_reply),
            (&[b"PERSIST", b"k"], b":1\r\n"),
            (&[b"PERSIST", b"k"], b":0\r\n"),
            (&[b"TTL", b"k"], b":-1\r\n"),
            // SET's options, alone and with NX, XX and GET.
            (&[b"SET", b"k", b"v1", b"EXAT", far], b"+OK\r\n"),
            (&[b"EXPIRETIME", b"k"], far_reply),
            (&[b"SET", b"k", b"v2", b"KEEPTTL"], b"+OK\r\n"),
            (&[b"EXPIRETIME", b"k"], far_reply),
            (&[b"GET", b"k"], b"$2\r\nv2\r\n"),
            (&[b"SET", b"k", b"v3"], b"+OK\r\n"),
            (&[b"TTL", b"k"], b":-1\r\n"),
            (
                &[b"SET", b"k", b"v4", b"PXAT", far_ms, b"GET"],
                b"$2\r\nv3\r\n",
            ),
            (&[b"PEXPIRETIME", b"k"], far_ms_reply),
            (&[b"SET", b"k", b"v5", b"NX", b"EX", b"100"], null),
            (
                &[b"SET", b"k", b"v5", b"NX", b"GET", b"EX", b"100"],
                b"$2\r\nv4\r\n",
            ),
            (&[b"PEXPIRETIME", b"k"], far_ms_reply),
            (&[b"SET", b"k", b"v6", b"XX", b"EXAT", far], b"+OK\r\n"),
            (&[b"EXPIRETIME", b"k"], far_reply),
            (
                &[b"SET", b"k", b"v7", b"XX", b"KEEPTTL", b"GET"],
                b"$2\r\nv6\r\n",
            ),
            (&[b"EXPIRETIME", b"k"], far_reply),
            (&[b"SET", b"nope", b"v", b"XX", b"PX", b"100"], null),
            (&[b"EXISTS", b"nope"], b":0\r\n"),
            (
                &[b"SET", b"fresh", b"v", b"NX", b"PXAT", far_ms],
                b"+OK\r\n",
            ),
            (&[b"PEXPIRETIME", b"fresh"], far_ms_reply),
            // GETSET clears the deadline; INCR and APPEND keep it.
            (&[b"GETSET", b"fresh", b"w"], b"$1\r\nv\r\n"),
            (&[b"TTL", b"fresh"], b":-1\r\n"),
            (&[b"SET", b"n", b"1", b"EXAT", far], b"+OK\r\n"),
            (&[b"INCR", b"n"], b":2\r\n"),
            (&[b"APPEND", b"n", b"0"], b":2\r\n"),
            (&[b"EXPIRETIME", b"n"], far_reply),
            // GETEX.
            (&[b"GETEX", b"n"], b"$2\r\n20\r\n"),
            (&[b"GETEX", b"n", b"PERSIST"], b"$2\r\n20\r\n"),
            (&[b"TTL", b"n"], b":-1\r\n"),
            (&[b"GETEX", b"n", b"EXAT", far], b"$2\r\n20\r\n"),
            (&[b"EXPIRETIME", b"n"], far_reply),
            (&[b"GETEX", b"n", b"PXAT", b"1"], b"$2\r\n20\r\n"),
            (&[b"EXISTS", b"n"], b":0\r\n"),
            // Times at or before now remove the key (and answer 1).
            (&[b"SET", b"gone", b"v"], b"+OK\r\n"),
            (&[b"EXPIRE", b"gone", b"-5"], b":1\r\n"),
            (&[b"GET", b"gone"], null),
            (&[b"SET", b"gone", b"v"], b"+OK\r\n"),
            (&[b"PEXPIRE", b"gone", b"0"], b":1\r\n"),
            (&[b"TTL", b"gone"], b":-2\r\n"),
            (&[b"SET", b"gone", b"v"], b"+OK\r\n"),
            (&[b"EXPIREAT", b"gone", b"1"], b":1\r\n"),
            (&[b"EXISTS", b"gone"], b":0\r\n"),
            (&[b"SET", b"gone", b"v", b"EXAT", b"1"], b"+OK\r\n"),
            (&[b"GET", b"gone"], null),
            (&[b"SETEX", b"sx", b"100", b"v"], b"+OK\r\n"),
            (&[b"PSETEX", b"psx", b"100000", b"v"], b"+OK\r\n"),
            (&[b"GET", b"psx"], b"$1\r\nv\r\n"),
            // Bad times: Redis's texts.
            (&[b"SET", b"k", b"v", b"EX", b"0"], set_invalid.as_bytes()),
            (&[b"SET", b"k", b"v", b"PX", b"-1"], set_invalid.as_bytes()),
            (&[b"SET", b"k", b"v", b"EXAT", b"0"], set_invalid.as_bytes()),
            (
                &[b"SET", b"k", b"v", b"EX", b"9223372036854775807"],
                set_invalid.as_bytes(),
            ),
            (&[b"SET", b"k", b"v", b"EX", b"1.5"], not_integer),
            (&[b"SET", b"k", b"v", b"PX", b"soon"], not_integer),
            (&[b"SETEX", b"k", b"0", b"v"], setex_invalid.as_bytes()),
            (&[b"SETEX", b"k", b"-3", b"v"], setex_invalid.as_bytes()),
            (&[b"PSETEX", b"k", b"0", b"v"], psetex_invalid.as_bytes()),
            (&[b"SETEX", b"k", b"x", b"v"], not_integer),
            (&[b"GETEX", b"k", b"PX", b"0"], getex_invalid.as_bytes()),
            (&[b"EXPIRE", b"k", b"x"], not_integer),
            (
                &[b"EXPIRE", b"k", b"9223372036854775807"],
                expire_invalid.as_bytes(),
            ),
            (
                &[b"PEXPIRE", b"k", b"9223372036854775807"],
                pexpire_invalid.as_bytes(),
            ),
            (&[b"PEXPIRE", b"k", b"99999999999999999999"], not_integer),
            // Invalid combinations: Redis's syntax errors.
            (&[b"SET", b"k", b"v", b"EX", b"1", b"PX", b"1"], syntax),
            (&[b"SET", b"k", b"v", b"KEEPTTL", b"EX", b"1"], syntax),
            (&[b"SET", b"k", b"v", b"PXAT", b"1", b"KEEPTTL"], syntax),
            (&[b"SET", b"k", b"v", b"NX", b"XX", b"EX", b"1"], syntax),
            (&[b"SET", b"k", b"v", b"EX"], syntax),
            (&[b"GETEX", b"k", b"PERSIST", b"EX", b"1"], syntax),
            (&[b"GETEX", b"k", b"KEEPTTL"], syntax),
            (
                &[b"EXPIRE", b"k", b"1", b"NX", b"GT"],
                b"-ERR NX and XX, GT or LT options at the same time are not compatible\r\n",
            ),
            (
                &[b"EXPIRE", b"k", b"1", b"GT", b"LT"],
                b"-ERR GT and LT options at the same time are not compatible\r\n",
            ),
            (
                &[b"EXPIRE", b"k", b"1", b"SOON"],
                b"-ERR Unsupported option SOON\r\n",
            ),
            (
                &[b"EXPIRE", b"k", b"1", b"GT"],
                b"-ERR the NX, XX, GT and LT options are not supported: \
                  corekv cannot apply them atomically\r\n",
            ),
            (
                &[b"TTL", b"k", b"x"],
                b"-ERR wrong number of arguments for 'ttl' command\r\n",
            ),
        ];
        for (args, expected) in cases {
            let got = exchange(&mut s, &command(args), expected.len());
            assert_eq!(
                show(&got),
                show(expected),
                "RESP{protocol} {:?}",
                show(&command(args))
            );
        }
        // Relative TTLs: read back within their range (the clock moves).
        assert_exchange(
            &mut s,
            &command(&[b"SET", b"r", b"v", b"EX", b"100"]),
            b"+OK\r\n",
        );
        let ttl = integer_reply(&mut s, &[b"TTL", b"r"]);
        assert!((1..=100).contains(&ttl), "TTL after EX 100: {ttl}");
        let pttl = integer_reply(&mut s, &[b"PTTL", b"r"]);
        assert!((1..=100_000).contains(&pttl), "PTTL after EX 100: {pttl}");
        assert_exchange(&mut s, &command(&[b"PEXPIRE", b"r", b"5000"]), b":1\r\n");
        let pttl = integer_reply(&mut s, &[b"PTTL", b"r"]);
        assert!(
            (1..=5000).contains(&pttl),
            "PTTL after PEXPIRE 5000: {pttl}"
        );
        for key in [&b"sx"[..], b"psx"] {
            let ttl = integer_reply(&mut s, &[b"TTL", key]);
            assert!((1..=100).contains(&ttl), "TTL after SETEX 100: {ttl}");
        }
        assert_exchange(&mut s, &command(&[b"FLUSHDB"]), b"+OK\r\n");
    }
}

#[test]
fn a_key_set_with_px_50_is_gone_once_its_deadline_passes() {
    let server = TestServer::start(2, &[]);
    let mut s = connect(server.addr);
    assert_exchange(
        &mut s,
        &command(&[b"SET", b"brief", b"v", b"PX", b"50"]),
        b"+OK\r\n",
    );
    let mut gone = false;
    for _ in 0..1000 {
        if exchange(&mut s, &command(&[b"EXISTS", b"brief"]), 4) == b":0\r\n" {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(gone, "the key was still there after 1000 polls");
    assert_exchange(&mut s, &command(&[b"GET", b"brief"]), b"$-1\r\n");
    assert_exchange(&mut s, &command(&[b"TTL", b"brief"]), b":-2\r\n");
}

#[test]
fn expiry_commands_inside_multi_exec_run_in_the_one_atomic_unit() {
    let server = TestServer::start(2, &[]);
    let a = key_name_on_shard("ttl", 0, 2);
    let b = key_name_on_shard("ttl", 1, 2);
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let far = FAR_SECONDS.as_bytes();
    let mut s = connect(server.addr);
    let block = [
        command(&[b"MULTI"]),
        command(&[b"SET", a, b"5", b"EXAT", far]),
        command(&[b"SET", b, b"1"]),
        command(&[b"EXPIREAT", b, far]),
        // INCR inside MULTI is computed from the block's view: it keeps the
        // deadline as Redis's does.
        command(&[b"INCR", a]),
        command(&[b"EXPIRETIME", a]),
        command(&[b"EXPIRETIME", b]),
        command(&[b"PERSIST", b]),
        command(&[b"TTL", b]),
        // EXPIRE 0 removes the key: a later INCR of the block starts from 0.
        command(&[b"EXPIRE", a, b"0"]),
        command(&[b"GET", a]),
        command(&[b"INCR", a]),
        command(&[b"EXPIRETIME", a]),
        command(&[b"EXEC"]),
    ]
    .concat();
    let far_reply = format!(":{FAR_SECONDS}\r\n");
    let expected = [
        &b"+OK\r\n"[..],
        &b"+QUEUED\r\n".repeat(12),
        b"*12\r\n+OK\r\n+OK\r\n:1\r\n:6\r\n",
        far_reply.as_bytes(),
        far_reply.as_bytes(),
        b":1\r\n:-1\r\n:1\r\n$-1\r\n:1\r\n:-1\r\n",
    ]
    .concat();
    assert_exchange(&mut s, &block, &expected);
    // SET EX inside MULTI with a read-modify-write (SET XX GET) after it.
    let block = [
        command(&[b"MULTI"]),
        command(&[b"SET", b, b"x", b"EXAT", far]),
        command(&[b"SET", b, b"y", b"XX", b"KEEPTTL", b"GET"]),
        command(&[b"EXPIRETIME", b]),
        command(&[b"EXEC"]),
    ]
    .concat();
    let expected = [
        &b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n$1\r\nx\r\n"[..],
        far_reply.as_bytes(),
    ]
    .concat();
    assert_exchange(&mut s, &block, &expected);
    assert_exchange(&mut s, &command(&[b"GET", b]), b"$1\r\ny\r\n");
}

#[test]
fn a_resp_acknowledged_set_ex_survives_kill_9_with_its_deadline() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let flags = ["--engine", "log", "--fsync", "always"];
    let mut server = TestServer::start_in(&data_dir, 2, &flags).expect("start");
    let mut s = connect(server.addr);
    let far = FAR_SECONDS.as_bytes();
    let mut request = Vec::new();
    request.extend(command(&[b"SET", b"ex", b"v", b"EX", b"3600"]));
    request.extend(command(&[b"SET", b"at", b"v", b"EXAT", far]));
    request.extend(command(&[b"SETEX", b"setex", b"3600", b"v"]));
    request.extend(command(&[b"SET", b"expired", b"v"]));
    request.extend(command(&[b"EXPIREAT", b"kept", far]));
    request.extend(command(&[b"SET", b"kept", b"v"]));
    request.extend(command(&[b"EXPIREAT", b"kept", far]));
    request.extend(command(&[b"SET", b"persisted", b"v", b"EXAT", far]));
    request.extend(command(&[b"PERSIST", b"persisted"]));
    request.extend(command(&[b"PEXPIRE", b"expired", b"0"]));
    assert_exchange(
        &mut s,
        &request,
        b"+OK\r\n+OK\r\n+OK\r\n+OK\r\n:0\r\n+OK\r\n:1\r\n+OK\r\n:1\r\n:1\r\n",
    );
    let ex_deadline = integer_reply(&mut s, &[b"PEXPIRETIME", b"ex"]);
    server.stop_with(libc::SIGKILL);
    let server = TestServer::start_in(&data_dir, 2, &flags).expect("restart");
    let mut s = connect(server.addr);
    // The deadline is absolute: the same after the restart, not moved.
    assert_eq!(integer_reply(&mut s, &[b"PEXPIRETIME", b"ex"]), ex_deadline);
    let far_reply = format!(":{FAR_SECONDS}\r\n");
    assert_exchange(
        &mut s,
        &command(&[b"EXPIRETIME", b"at"]),
        far_reply.as_bytes(),
    );
    assert_exchange(
        &mut s,
        &command(&[b"EXPIRETIME", b"kept"]),
        far_reply.as_bytes(),
    );
    let ttl = integer_reply(&mut s, &[b"TTL", b"setex"]);
    assert!((1..=3600).contains(&ttl), "TTL after SETEX 3600: {ttl}");
    assert_exchange(&mut s, &command(&[b"TTL", b"persisted"]), b":-1\r\n");
    assert_exchange(&mut s, &command(&[b"GET", b"expired"]), b"$-1\r\n");
    assert_exchange(&mut s, &command(&[b"GET", b"ex"]), b"$1\r\nv\r\n");
    assert_exchange(&mut s, &command(&[b"DBSIZE"]), b":5\r\n");
}

#[test]
fn command_and_info_list_the_expiry_commands_and_keys_with_a_deadline() {
    let server = TestServer::start(2, &[]);
    let mut s = connect(server.addr);
    assert_exchange(&mut s, &command(&[b"COMMAND", b"COUNT"]), b":54\r\n");
    for (name, arity) in [
        ("expire", "-3"),
        ("pexpire", "-3"),
        ("expireat", "-3"),
        ("pexpireat", "-3"),
        ("ttl", "2"),
        ("pttl", "2"),
        ("expiretime", "2"),
        ("pexpiretime", "2"),
        ("persist", "2"),
        ("setex", "4"),
        ("psetex", "4"),
        ("getex", "-2"),
    ] {
        let entry = format!("${}\r\n{name}\r\n:{arity}\r\n", name.len());
        let mut reply = exchange(&mut s, &command(&[b"COMMAND", b"INFO", name.as_bytes()]), 1);
        while !String::from_utf8_lossy(&reply).contains(&entry) && reply.len() < 4096 {
            let more = exchange(&mut s, b"", 1);
            if more.is_empty() {
                break;
            }
            reply.extend(more);
        }
        let text = String::from_utf8_lossy(&reply);
        assert!(
            text.starts_with("*1\r\n*") && text.contains(&entry),
            "COMMAND INFO {name}: {}",
            show(&reply)
        );
    }
    let docs = b"*2\r\n$4\r\npttl\r\n*4\r\n$7\r\nsummary\r\n\
                 $53\r\nReturns the expiration time in milliseconds of a key.\r\n\
                 $5\r\ngroup\r\n$7\r\ngeneric\r\n";
    assert_exchange(
        &mut s,
        &command(&[b"COMMAND", b"DOCS", b"pttl", b"nosuch"]),
        docs,
    );
    let request = [
        command(&[b"SET", b"a", b"v", b"EX", b"100"]),
        command(&[b"SET", b"b", b"v"]),
        command(&[b"SETEX", b"c", b"100", b"v"]),
    ]
    .concat();
    assert_exchange(&mut s, &request, b"+OK\r\n+OK\r\n+OK\r\n");
    let want = "db0:keys=3,expires=2,";
    s.write_all(&command(&[b"INFO", b"keyspace"]))
        .expect("send");
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains(want) && got.len() < 4096 {
        let more = exchange(&mut s, b"", 1);
        if more.is_empty() {
            break;
        }
        got.extend(more);
    }
    assert!(
        String::from_utf8_lossy(&got).contains(want),
        "{}",
        show(&got)
    );
}
