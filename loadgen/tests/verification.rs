//! The load generator never reports a wrong or missing reply as success: it is
//! run against tiny fake servers (std threads on loopback) that answer wrongly
//! or hang up, and the report must say so.

use clap::Parser;
use corekv_loadgen::{Args, Config, Report};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

/// Starts a fake server that hands each accepted connection to `serve`.
fn fake_server(serve: fn(TcpStream)) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || serve(stream));
        }
    });
    addr
}

fn run(addr: &str, extra: &[&str]) -> Report {
    let mut argv = vec!["corekv-loadgen", "--addr", addr, "--quiet"];
    argv.extend_from_slice(extra);
    argv.extend_from_slice(&[
        "--connections",
        "2",
        "--messages",
        "5",
        "--reply-timeout-ms",
        "5000",
    ]);
    let config = Config::from_args(&Args::parse_from(argv)).expect("valid flags");
    corekv_loadgen::run(&config).expect("run takes place")
}

/// Answers every msgpack message with `[[-2]]`: a GET that found nothing.
fn answers_not_found(mut stream: TcpStream) {
    let mut prefix = [0u8; 8];
    while stream.read_exact(&mut prefix).is_ok() {
        let mut body = vec![0; u64::from_be_bytes(prefix) as usize];
        if stream.read_exact(&mut body).is_err() {
            return;
        }
        let reply = [0, 0, 0, 0, 0, 0, 0, 3, 0x91, 0x91, 0xfe];
        if stream.write_all(&reply).is_err() {
            return;
        }
    }
}

fn hangs_up(stream: TcpStream) {
    drop(stream);
}

/// Answers every RESP command with +OK, so each GET gets the wrong reply.
fn answers_ok_to_everything(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        let commands = buf[..n].iter().filter(|&&b| b == b'*').count();
        if stream.write_all(&b"+OK\r\n".repeat(commands)).is_err() {
            return;
        }
    }
}

#[test]
fn a_wrong_reply_is_a_counted_and_described_mismatch() {
    let report = run(&fake_server(answers_not_found), &[]);
    assert!(!report.passed());
    assert_eq!(
        report.messages, 10,
        "framing intact: every message answered"
    );
    assert_eq!(report.mismatches, 10);
    assert_eq!(report.errors, 10);
    assert!(
        report.mismatch_samples[0].contains("NotFound"),
        "{:?}",
        report.mismatch_samples
    );
}

#[test]
fn a_connection_closed_by_the_server_is_a_failure() {
    let report = run(&fake_server(hangs_up), &[]);
    assert!(!report.passed());
    assert_eq!(report.failed_connections, 2);
    assert_eq!(report.messages, 0);
}

#[test]
fn a_wrong_resp_reply_is_a_mismatch() {
    let report = run(
        &fake_server(answers_ok_to_everything),
        &["--protocol", "resp"],
    );
    assert!(!report.passed());
    assert_eq!(report.mismatches, 10, "{}", report.to_text());
}

#[test]
fn nothing_listening_is_a_failed_connection_not_a_hang() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.local_addr().expect("local addr").to_string()
    };
    let report = run(&addr, &[]);
    assert_eq!(report.failed_connections, 2);
    assert!(
        report.connection_failures[0].contains("cannot connect"),
        "{:?}",
        report.connection_failures
    );
}

/// A counter server that accepts every increment but never stores it: the
/// reset succeeds, every GETV answers value 0 at version 1, every PUTV "applies"
/// at version 2. Each reply is plausible; the final check must catch the lie.
fn loses_every_increment(mut stream: TcpStream) {
    let mut prefix = [0u8; 8];
    while stream.read_exact(&mut prefix).is_ok() {
        let mut body = vec![0; u64::from_be_bytes(prefix) as usize];
        if stream.read_exact(&mut body).is_err() {
            return;
        }
        let message = rmpv::decode::read_value(&mut &body[..]).expect("msgpack request");
        let requests = message.as_array().expect("array of requests");
        let last_opcode = requests.last().and_then(|r| r[0].as_u64());
        let element: &[u8] = match last_opcode {
            Some(4) => &[0x93, 0xfd, 0x00, 0x01], // [-3, 0, 1]
            Some(5) if requests.len() == 2 => &[0x92, 0xfc, 0x01], // reset: [-4, 1]
            Some(5) => &[0x92, 0xfc, 0x02],       // [-4, 2]
            _ => return,
        };
        let mut reply = ((element.len() + 1) as u64).to_be_bytes().to_vec();
        reply.push(0x91);
        reply.extend_from_slice(element);
        if stream.write_all(&reply).is_err() {
            return;
        }
    }
}

#[test]
fn increments_the_server_lost_fail_the_final_counter_check() {
    let report = run(
        &fake_server(loses_every_increment),
        &["--preset", "concave-increments"],
    );
    assert_eq!(report.errors, 0, "every single reply looked right");
    let increments = report.increments.as_ref().expect("an increments report");
    assert_eq!((increments.attempts, increments.successes), (4, 4));
    assert!(!increments.counter.verified);
    assert_eq!(increments.counter.value, Some(0));
    assert!(!report.passed(), "{}", report.to_text());
}

/// Reads every message and never answers.
fn never_answers(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(1..) = stream.read(&mut buf) {}
}

#[test]
fn a_server_that_never_answers_fails_each_connection_at_the_reply_timeout() {
    let addr = fake_server(never_answers);
    let argv = [
        "corekv-loadgen",
        "--addr",
        &addr,
        "--quiet",
        "--connections",
        "2",
        "--messages",
        "5",
        "--reply-timeout-ms",
        "300",
    ];
    let config = Config::from_args(&Args::parse_from(argv)).expect("valid flags");
    let report = corekv_loadgen::run(&config).expect("run takes place");
    assert!(!report.passed());
    assert_eq!(report.messages, 0);
    assert_eq!(report.failed_connections, 2, "{report:?}");
}
