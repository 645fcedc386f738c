//! Expiry through the msgpack protocol, against the real server: SET with a
//! TTL, EXPIRE, TTL and PERSIST with Redis's semantics, keys that are absent
//! once expired whether or not anyone reads them, ATOMIC batches that judge
//! expiry at one instant, and deadlines that survive restarts, kill -9,
//! compaction and a change of the shard count; and the same through the HTTP
//! API (`ttl_ms`) and the `corekv` command line.
//!
//! Time is real here, so no test waits for a deadline to be *near*: a key
//! either has a TTL far longer than the test (it must be there) or a short one
//! that the test waits out with a bounded poll (it must go, eventually).

mod common;

use common::stat;

use common::crash::{start_log, stop, temp_data_dir};
use common::keys::key_on_shard;
use common::logs::{log_path, read_log, Kind};
use common::{force_compaction, http_addr, http_request, TestServer};
use corekv::client::{Element, KeyTtl, Request};
use rmpv::Value;
use std::time::{Duration, Instant};

/// A TTL no test outlives: a key with it must be present.
const HOUR_MS: u64 = 3_600_000;
/// A TTL that a test waits out.
const SHORT_TTL_MS: u64 = 300;
/// How long a test polls for something that must happen eventually.
const PATIENCE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

/// Polls `done` until it holds; panics after [`PATIENCE`] naming `what`.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        std::thread::sleep(POLL);
    }
}

fn remaining(ttl: KeyTtl) -> u64 {
    match ttl {
        KeyTtl::Remaining(ms) => ms,
        other => panic!("expected a remaining TTL, got {other:?}"),
    }
}

#[test]
fn a_key_set_with_a_ttl_is_absent_everywhere_once_it_expires() {
    let server = TestServer::start(2, &[]);
    let mut client = server.client();
    for shard in 0..2 {
        let key = key_on_shard("short", shard, 2);
        client
            .set_with_ttl(&key, "v".into(), SHORT_TTL_MS)
            .expect("SET with a TTL");
        let ttl = remaining(client.ttl(&key).expect("TTL"));
        assert!(ttl <= SHORT_TTL_MS, "{ttl} ms left of {SHORT_TTL_MS}");
        eventually("the key expires", || {
            client.get(&key).expect("GET").is_none()
        });
        assert_eq!(client.getv(&key).expect("GETV"), None);
        assert_eq!(client.ttl(&key).expect("TTL"), KeyTtl::Missing);
        assert!(!client.expire(&key, HOUR_MS).expect("EXPIRE"), "absent");
        assert_eq!(
            client.putv(&key, "new".into(), 0).expect("PUTV"),
            Ok(1),
            "an expired key has version 0, and the next write version 1"
        );
        assert_eq!(client.ttl(&key).expect("TTL"), KeyTtl::NoDeadline);
    }
}

#[test]
fn ttl_expire_persist_and_plain_writes_follow_redis() {
    let server = TestServer::start(1, &[]);
    let mut client = server.client();
    let key = b"k".to_vec();
    assert_eq!(client.ttl(&key).expect("TTL"), KeyTtl::Missing);
    assert!(!client.persist(&key).expect("PERSIST"));
    client.set(&key, "v".into()).expect("SET");
    assert_eq!(client.ttl(&key).expect("TTL"), KeyTtl::NoDeadline);
    assert!(!client.persist(&key).expect("PERSIST"), "no deadline");
    assert!(client.expire(&key, HOUR_MS).expect("EXPIRE"));
    let ttl = remaining(client.ttl(&key).expect("TTL"));
    assert!(ttl > 0 && ttl <= HOUR_MS, "{ttl}");
    assert_eq!(
        client.getv(&key).expect("GETV"),
        Some(("v".into(), 1)),
        "EXPIRE keeps the value and the version"
    );
    assert_eq!(stat(&mut client, "expires"), 1);
    assert!(client.persist(&key).expect("PERSIST"));
    assert_eq!(client.ttl(&key).expect("TTL"), KeyTtl::NoDeadline);
    assert_eq!(stat(&mut client, "expires"), 0);

    client.expire(&key, HOUR_MS).expect("EXPIRE");
    client.set(&key, "w".into()).expect("SET");
    assert_eq!(
        client.ttl(&key).expect("TTL"),
        KeyTtl::NoDeadline,
        "a plain SET clears the TTL"
    );
    client
        .set_with_ttl(&key, "x".into(), HOUR_MS)
        .expect("SET with a TTL");
    assert_eq!(client.getv(&key).expect("GETV"), Some(("x".into(), 3)));
    assert_eq!(client.putv(&key, "y".into(), 3).expect("PUTV"), Ok(4));
    assert_eq!(
        client.ttl(&key).expect("TTL"),
        KeyTtl::NoDeadline,
        "PUTV replaces the value and clears the TTL"
    );
    assert!(client.expire(&key, 0).expect("EXPIRE 0"));
    assert_eq!(
        client.get(&key).expect("GET"),
        None,
        "EXPIRE 0 removes the key"
    );
    assert_eq!(stat(&mut client, "keys"), 0);
    assert_eq!(stat(&mut client, "expired_keys"), 1);
}

/// The wall clock in Unix milliseconds, as the server reads it.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as u64
}

#[test]
fn absolute_deadlines_keepttl_and_expiretime_follow_redis() {
    let server = TestServer::start(2, &[]);
    let mut client = server.client();
    let in_an_hour = unix_ms() + HOUR_MS;
    client
        .set_at(b"k", "v".into(), in_an_hour)
        .expect("SET with a deadline");
    assert_eq!(
        client.expire_time(b"k").expect("EXPIRETIME"),
        KeyTtl::Remaining(in_an_hour),
        "the deadline as given"
    );
    client
        .set_keep_ttl(b"k", "w".into())
        .expect("SET keeping the deadline");
    assert_eq!(client.getv(b"k").expect("GETV"), Some(("w".into(), 2)));
    assert_eq!(
        client.expire_time(b"k").expect("EXPIRETIME"),
        KeyTtl::Remaining(in_an_hour)
    );
    assert!(client.expire_at(b"k", in_an_hour + 1).expect("EXPIREAT"));
    assert_eq!(
        client.expire_time(b"k").expect("EXPIRETIME"),
        KeyTtl::Remaining(in_an_hour + 1)
    );
    client
        .set_keep_ttl(b"plain", "v".into())
        .expect("SET keeping no deadline");
    assert_eq!(
        client.expire_time(b"plain").expect("EXPIRETIME"),
        KeyTtl::NoDeadline
    );
    assert_eq!(
        client.expire_time(b"missing").expect("EXPIRETIME"),
        KeyTtl::Missing
    );
    assert!(!client.expire_at(b"missing", in_an_hour).expect("EXPIREAT"));
    assert!(client.expire_at(b"plain", 1).expect("EXPIREAT in the past"));
    assert_eq!(client.get(b"plain").expect("GET"), None, "removed at once");
    client
        .set_at(b"k", "x".into(), 1)
        .expect("SET with a past deadline");
    assert_eq!(
        client.get(b"k").expect("GET"),
        None,
        "a past deadline removes the key"
    );
    let stats = client.stats().expect("STATS");
    assert_eq!((stats["keys"], stats["expired_keys"]), (0, 2), "{stats:?}");
}

#[test]
fn bad_ttls_are_refused_and_nothing_of_the_message_runs() {
    let server = TestServer::start(1, &[]);
    let mut client = server.client();
    for bad in [
        Request::SetTtl(b"k".to_vec(), "v".into(), 0),
        Request::SetTtl(b"k".to_vec(), "v".into(), u64::MAX),
    ] {
        let elements = client
            .call(&[Request::Set(b"other".to_vec(), 1.into()), bad])
            .expect("a reply");
        match &elements[..] {
            [Element::Error { code, message }] => {
                assert_eq!(code, "BADREQ");
                assert!(message.contains("ttl_ms"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(client.get(b"other").expect("GET"), None);
}

#[test]
fn expiry_requests_run_inside_atomic_batches_on_every_shard() {
    let server = TestServer::start(2, &[]);
    let mut client = server.client();
    let (a, b) = (key_on_shard("a", 0, 2), key_on_shard("b", 1, 2));
    client.set(&b, "old".into()).expect("SET");
    let elements = client
        .call(&[Request::Atomic(vec![
            Request::SetTtl(a.clone(), "v".into(), HOUR_MS),
            Request::Expire(b.clone(), HOUR_MS),
            Request::Ttl(a.clone()),
            Request::Persist(b.clone()),
            Request::Ttl(b.clone()),
        ])])
        .expect("ATOMIC");
    match &elements[..] {
        [Element::Done(1), Element::Integer(ttl_a), Element::Done(1), Element::Integer(-1)] => {
            assert!(*ttl_a > 0 && *ttl_a <= HOUR_MS as i64, "{ttl_a}");
        }
        other => panic!("{other:?}"),
    }
    // An aborted batch leaves every deadline as it was.
    let elements = client
        .call(&[Request::Atomic(vec![
            Request::Expire(b.clone(), 5),
            Request::Persist(a.clone()),
            Request::PutV(b.clone(), "x".into(), 99),
        ])])
        .expect("ATOMIC");
    assert!(
        matches!(&elements[..], [Element::Error { code, .. }] if code == "CONFLICT"),
        "{elements:?}"
    );
    assert_eq!(client.ttl(&b).expect("TTL"), KeyTtl::NoDeadline);
    assert!(matches!(client.ttl(&a).expect("TTL"), KeyTtl::Remaining(_)));
}

#[test]
fn an_atomic_batch_never_sees_one_key_alive_and_another_with_the_same_deadline_expired() {
    // Both keys get one deadline: the batch that sets them reads the clock
    // once. Every later batch that reads both must then find both or neither,
    // on whichever shards they live. The reads follow each other without a
    // pause, so around the deadline one of them runs while it passes: were
    // each shard to read its own clock, that read would find the key on the
    // shard asked first alive and the other expired, about every other round.
    const ROUNDS: usize = 8;
    const MAX_READS: usize = 1_000_000;
    let server = TestServer::start(2, &[]);
    let mut client = server.client();
    for round in 0..ROUNDS {
        let (a, b) = (
            key_on_shard(&format!("a{round}"), 0, 2),
            key_on_shard(&format!("b{round}"), 1, 2),
        );
        let set = client
            .call(&[Request::Atomic(vec![
                Request::SetTtl(a.clone(), "v".into(), SHORT_TTL_MS),
                Request::SetTtl(b.clone(), "v".into(), SHORT_TTL_MS),
            ])])
            .expect("ATOMIC");
        assert_eq!(set, []);
        let read = [Request::Atomic(vec![
            Request::Get(a.clone()),
            Request::Get(b.clone()),
        ])];
        let give_up = Instant::now() + PATIENCE;
        for reads in 0.. {
            assert!(
                reads < MAX_READS && Instant::now() < give_up,
                "round {round}: the keys did not expire"
            );
            match &client.call(&read).expect("ATOMIC")[..] {
                [Element::Found(_), Element::Found(_)] => continue,
                [Element::NotFound, Element::NotFound] => break,
                other => {
                    panic!("round {round}, read {reads}: one key alive, one expired: {other:?}")
                }
            }
        }
    }
}

#[test]
fn a_cross_shard_batch_held_past_a_deadline_is_refused_rather_than_finding_a_swept_key() {
    // The batch reads the clock before the keys' deadline, prepares shard 0
    // (a is alive), and is held before shard 1 until shard 1's sweep has
    // removed b. Served at its reading, it would answer a alive and b gone.
    const TTL_MS: u64 = 2_000;
    let mut server = TestServer::start(2, &["--http-addr", "127.0.0.1:0"]);
    let http = http_addr(&mut server);
    let mut client = server.client();
    let mut observer = server.client();
    let (a, b) = (key_on_shard("a", 0, 2), key_on_shard("b", 1, 2));
    let set = client
        .call(&[Request::Atomic(vec![
            Request::SetTtl(a.clone(), "v".into(), TTL_MS),
            Request::SetTtl(b.clone(), "v".into(), TTL_MS),
        ])])
        .expect("ATOMIC");
    assert_eq!(set, []);
    common::arm_failpoint(http, "txn::before_prepare@1", "return");
    let read = [Request::Atomic(vec![
        Request::Get(a.clone()),
        Request::Get(b.clone()),
    ])];
    client.send_message(&read).expect("send");
    client.flush().expect("flush");
    common::wait_for_line(&mut server, &["failpoint txn::before_prepare holds"]);
    eventually("shard 1's sweep removes b", || {
        stat(&mut observer, "expired_keys") >= 1
    });
    common::arm_failpoint(http, "txn::before_prepare@1", "");
    let reply = client.recv_reply().expect("the held batch's reply");
    let elements = corekv::client::decode_reply(&reply).expect("a reply");
    match &elements[..] {
        [Element::Error { code, message }] => {
            assert_eq!(code, "CONFLICT", "{message}");
            assert!(message.contains("clock reading"), "{message}");
        }
        other => panic!("the held batch answered {other:?}"),
    }
    let retried = client.call(&read).expect("ATOMIC");
    assert_eq!(
        retried,
        [Element::NotFound, Element::NotFound],
        "a retry reads again"
    );
}

#[test]
fn keys_nobody_reads_again_are_removed_by_the_sweep() {
    const NR_KEYS: usize = 100_000;
    const TTL_MS: u64 = 2_000;
    const BATCH: usize = 1_000;
    let server = TestServer::start(2, &[]);
    let mut client = server.client();
    for start in (0..NR_KEYS).step_by(BATCH) {
        let requests: Vec<Request> = (start..start + BATCH)
            .map(|i| Request::SetTtl(format!("key:{i:08}").into_bytes(), Value::from(i), TTL_MS))
            .collect();
        assert_eq!(client.call(&requests).expect("SET with a TTL"), []);
    }
    client.set(b"forever", "v".into()).expect("SET");
    let written = Instant::now();
    let allowed_left = (NR_KEYS / 100) as u64 + 1; // 1 %, and the key without a TTL
    let deadline = written + Duration::from_secs(12);
    let mut keys = stat(&mut client, "keys");
    while keys > allowed_left {
        assert!(
            Instant::now() < deadline,
            "{keys} keys left 12 s after writing {NR_KEYS} with a {TTL_MS} ms TTL"
        );
        std::thread::sleep(Duration::from_millis(200));
        keys = stat(&mut client, "keys");
    }
    eventually("every expiring key is swept", || {
        stat(&mut client, "keys") == 1
    });
    let stats = client.stats().expect("STATS");
    assert_eq!(stats["expired_keys"], NR_KEYS as u64, "{stats:?}");
    assert_eq!((stats["expires"], stats["gets"]), (0, 0), "{stats:?}");
    assert_eq!(client.get(b"forever").expect("GET"), Some("v".into()));
}

#[test]
fn expired_keys_stay_gone_after_kill_9_and_after_a_clean_restart() {
    let (_temp, data_dir) = temp_data_dir();
    for signal in [libc::SIGKILL, libc::SIGTERM] {
        let mut server = start_log(&data_dir, 2, &[]);
        let mut client = server.client();
        let short: Vec<Vec<u8>> = (0..2).map(|s| key_on_shard("short", s, 2)).collect();
        let long: Vec<Vec<u8>> = (0..2).map(|s| key_on_shard("long", s, 2)).collect();
        for (short, long) in short.iter().zip(&long) {
            client.set(short, "v".into()).expect("SET");
            client
                .expire(short, SHORT_TTL_MS)
                .expect("EXPIRE")
                .then_some(())
                .expect("present");
            client
                .set_with_ttl(long, "v".into(), HOUR_MS)
                .expect("SET with a TTL");
        }
        eventually("the sweep removes the short keys", || {
            stat(&mut client, "keys") == 2
        });
        // An acknowledged write on each shard: what its log held before it
        // (the sweep's deletes) is on disk too.
        for key in &long {
            assert!(client.expire(key, HOUR_MS).expect("EXPIRE"));
        }
        let before = remaining(client.ttl(&long[0]).expect("TTL"));
        stop(&mut server, signal);
        for (shard, key) in short.iter().enumerate() {
            let (_, records) = read_log(&log_path(&data_dir, shard));
            let last = records
                .iter()
                .rev()
                .find(|r| matches!(&r.kind, Kind::Put(k, _) | Kind::Del(k) | Kind::Expire(k, _) if k == key))
                .map(|r| r.kind.clone());
            assert_eq!(
                last,
                Some(Kind::Del(key.clone())),
                "the expiry was logged as a delete"
            );
        }
        let server = start_log(&data_dir, 2, &[]);
        let mut client = server.client();
        for key in &short {
            assert_eq!(client.get(key).expect("GET"), None, "after signal {signal}");
        }
        assert_eq!(stat(&mut client, "keys"), 2, "after signal {signal}");
        for key in &long {
            let after = remaining(client.ttl(key).expect("TTL"));
            assert!(
                after <= before,
                "the deadline stayed where it was: {after} > {before}"
            );
        }
        drop(client);
        drop(server);
        std::fs::remove_dir_all(&data_dir).expect("a fresh data directory for the next signal");
    }
}

#[test]
fn a_key_whose_deadline_passed_while_the_server_was_down_is_absent_after_recovery() {
    let (_temp, data_dir) = temp_data_dir();
    let mut server = start_log(&data_dir, 1, &[]);
    let mut client = server.client();
    client
        .set_with_ttl(b"k", "v".into(), SHORT_TTL_MS)
        .expect("SET with a TTL");
    client.set(b"plain", "v".into()).expect("SET");
    stop(&mut server, libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(SHORT_TTL_MS + 100));
    let server = start_log(&data_dir, 1, &[]);
    let mut client = server.client();
    assert_eq!(client.get(b"k").expect("GET"), None);
    assert_eq!(client.getv(b"k").expect("GETV"), None);
    eventually("the sweep drops the recovered key", || {
        stat(&mut client, "keys") == 1
    });
    assert_eq!(stat(&mut client, "expired_keys"), 1);
}

#[test]
fn deadlines_survive_compaction_and_a_change_of_the_shard_count() {
    let (_temp, data_dir) = temp_data_dir();
    let flags = ["--compact-min-bytes", "64KiB"];
    let mut server = start_log(&data_dir, 2, &flags);
    let mut client = server.client();
    let keys: Vec<Vec<u8>> = (0..20).map(|i| format!("ttl-{i}").into_bytes()).collect();
    for key in &keys {
        client
            .set_with_ttl(key, "v".into(), HOUR_MS)
            .expect("SET with a TTL");
    }
    client.set(b"persisted", "v".into()).expect("SET");
    client.expire(b"persisted", HOUR_MS).expect("EXPIRE");
    client.persist(b"persisted").expect("PERSIST");
    for shard in 0..2 {
        force_compaction(&mut server, &mut client, shard, 2);
    }
    stop(&mut server, libc::SIGTERM);
    for nr_shards in [3, 1] {
        let mut server = start_log(&data_dir, nr_shards, &flags);
        let mut client = server.client();
        for key in &keys {
            let ttl = remaining(client.ttl(key).expect("TTL"));
            assert!(ttl > 0 && ttl <= HOUR_MS, "{nr_shards} shards: {ttl}");
        }
        assert_eq!(
            client.ttl(b"persisted").expect("TTL"),
            KeyTtl::NoDeadline,
            "{nr_shards} shards"
        );
        stop(&mut server, libc::SIGTERM);
    }
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn http_puts_take_a_ttl_and_gets_report_it_until_the_key_expires() {
    let mut server = TestServer::start(2, &["--http-addr", "127.0.0.1:0"]);
    let http = http_addr(&mut server);
    let items = r#"[{"key":"short","value":"v","version":0,"ttl_ms":300},
                    {"key":"long","value":1,"version":0,"ttl_ms":3600000},
                    {"key":"plain","value":2,"version":0}]"#;
    let (status, body) = http_request(http, "POST", "/v1/put", items.as_bytes());
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["versions"], serde_json::json!([1, 1, 1]));
    let (status, body) = http_request(http, "GET", "/v1/get?key=long", b"");
    assert_eq!(status, 200, "{body}");
    let ttl = json(&body)["ttl_ms"]
        .as_u64()
        .expect("ttl_ms of a key that expires");
    assert!(ttl > 0 && ttl <= HOUR_MS, "{body}");
    let (status, body) = http_request(http, "GET", "/v1/get?key=plain", b"");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json(&body).get("ttl_ms"),
        None,
        "no deadline, no field: {body}"
    );
    eventually("the short key expires over HTTP", || {
        http_request(http, "GET", "/v1/get?key=short", b"").0 == 404
    });
    eventually("/metrics counts the expired key", || {
        metric_sum(http, "corekv_expired_keys_total") == 1
    });
    assert_eq!(metric_sum(http, "corekv_expiring_keys"), 1, "the long key");
    assert_eq!(metric_sum(http, "corekv_evicted_keys_total"), 0);
    // A put without ttl_ms over a key that had one clears it, as PUTV does.
    let (status, body) = http_request(
        http,
        "POST",
        "/v1/put",
        br#"[{"key":"long","value":3,"version":1}]"#,
    );
    assert_eq!(status, 200, "{body}");
    let (_, body) = http_request(http, "GET", "/v1/get?key=long", b"");
    assert_eq!(json(&body).get("ttl_ms"), None, "{body}");
    for bad in [
        r#"[{"key":"k","value":1,"version":0,"ttl_ms":0}]"#,
        r#"[{"key":"k","value":1,"version":0,"ttl_ms":"10s"}]"#,
        r#"[{"key":"k","value":1,"version":0,"ttl_ms":-1}]"#,
    ] {
        let (status, body) = http_request(http, "POST", "/v1/put", bad.as_bytes());
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("ttl_ms"), "{body}");
    }
    let mut client = server.client();
    assert_eq!(
        client.get(b"k").expect("GET"),
        None,
        "a refused put wrote nothing"
    );
}

/// The sum over shards of a per-shard family on /metrics.
fn metric_sum(http: std::net::SocketAddr, family: &str) -> u64 {
    let (status, page) = http_request(http, "GET", "/metrics", b"");
    assert_eq!(status, 200, "{page}");
    let samples: Vec<u64> = page
        .lines()
        .filter(|line| line.starts_with(&format!("{family}{{")))
        .map(|line| {
            let value = line.rsplit(' ').next().unwrap_or("");
            value.parse().unwrap_or_else(|_| panic!("{line}"))
        })
        .collect();
    assert!(!samples.is_empty(), "no {family} on /metrics:\n{page}");
    samples.iter().sum()
}

/// `corekv --addr ADDR ARGS…`, bounded in time.
fn corekv(server: &TestServer, args: &[&str]) -> assert_cmd::assert::Assert {
    assert_cmd::Command::new(env!("CARGO_BIN_EXE_corekv"))
        .timeout(Duration::from_secs(30))
        .arg("--addr")
        .arg(server.addr.to_string())
        .args(args)
        .assert()
}

fn stdout(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stdout).into_owned()
}

#[test]
fn the_command_line_sets_expires_reads_and_persists_ttls() {
    let server = TestServer::start(1, &[]);
    corekv(&server, &["set", "k", "v", "--ttl", "1h"]).success();
    let ttl = stdout(&corekv(&server, &["ttl", "k"]).success());
    let ms: u64 = ttl
        .trim()
        .strip_suffix(" ms")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("ttl printed {ttl:?}"));
    assert!(ms > 0 && ms <= HOUR_MS, "{ttl}");
    let json = stdout(&corekv(&server, &["ttl", "k", "--json"]).success());
    assert!(json.contains("\"ttl_ms\":"), "{json}");
    corekv(&server, &["persist", "k"]).success().stdout("");
    corekv(&server, &["ttl", "k"])
        .success()
        .stdout("no expiry\n");
    corekv(&server, &["persist", "k"]).code(3);
    corekv(&server, &["expire", "k", "300ms"])
        .success()
        .stdout("");
    corekv(&server, &["expire", "missing", "10s"])
        .code(3)
        .stderr("Key not found\n");
    corekv(&server, &["ttl", "missing"])
        .success()
        .stdout("Key not found\n");
    let mut client = server.client();
    eventually("the key expires", || {
        client.get(b"k").expect("GET").is_none()
    });
    corekv(&server, &["get", "k"])
        .success()
        .stdout("Key not found\n");
}

#[test]
fn bad_durations_on_the_command_line_are_usage_errors_that_send_nothing() {
    let server = TestServer::start(1, &[]);
    for args in [
        &["set", "k", "v", "--ttl", "ten"][..],
        &["set", "k", "v", "--ttl", "0s"],
        &["set", "k", "v", "--ttl", "-5s"],
        &["expire", "k", "10x"],
        &["expire", "k"],
    ] {
        let assert = corekv(&server, args).code(2);
        let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
        assert!(!stderr.is_empty(), "{args:?}: no message");
    }
    let mut client = server.client();
    assert_eq!(client.get(b"k").expect("GET"), None);
}

/// The server's resident memory, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in:\n{status}"));
    kib * 1024
}

#[test]
fn allkeys_lru_writes_100_mb_through_a_32_mib_limit_and_keeps_the_newest_keys() {
    if common::on_disk_engine() {
        // The disk engine's memory limit counts its index, not values on
        // disk: tests/disk_values.rs holds it to that.
        return;
    }
    const LIMIT: u64 = 32 << 20;
    const VALUE_BYTES: usize = 4096;
    const NR_WRITES: usize = 100_000_000 / VALUE_BYTES;
    const BATCH: usize = 100;
    let server = TestServer::start(
        2,
        &[
            "--max-memory-bytes",
            "32MiB",
            "--maxmemory-policy",
            "allkeys-lru",
        ],
    );
    let baseline = rss_bytes(server.pid());
    let mut client = server.client();
    let value = |i: usize| Value::Binary(vec![(i % 251) as u8; VALUE_BYTES]);
    for start in (0..NR_WRITES).step_by(BATCH) {
        let requests: Vec<Request> = (start..start + BATCH)
            .map(|i| Request::Set(format!("key:{i:08}").into_bytes(), value(i)))
            .collect();
        let reply = client.call(&requests).expect("SETs");
        assert_eq!(reply, [], "writes {start}..{}: refused", start + BATCH);
    }
    let stats = client.stats().expect("STATS");
    let rss = rss_bytes(server.pid());
    eprintln!("baseline RSS {baseline}, after {rss}; {stats:?}");
    assert_eq!(stats["oom_rejections"], 0, "{stats:?}");
    assert!(stats["evicted_keys"] > 0, "{stats:?}");
    assert!(
        stats["memory_bytes"] + stats["reply_pinned_bytes"] <= LIMIT,
        "{stats:?}"
    );
    assert!(
        rss <= 2 * LIMIT + baseline,
        "RSS {rss} bytes after 100 MB through a {LIMIT}-byte limit (baseline {baseline})"
    );
    for i in NR_WRITES - 200..NR_WRITES {
        let key = format!("key:{i:08}");
        let found = client.get(key.as_bytes()).expect("GET");
        assert!(
            found == Some(value(i)),
            "{key}, among the newest, was evicted"
        );
    }
}

#[test]
fn noeviction_refuses_writes_with_oom_and_reads_keep_working() {
    if common::on_disk_engine() {
        // The disk engine's memory limit counts its index, not values on
        // disk: tests/disk_values.rs holds it to that.
        return;
    }
    let server = TestServer::start(1, &["--max-memory-bytes", "2MiB"]);
    let mut client = server.client();
    client.set(b"first", "v".into()).expect("SET");
    let mut refused = None;
    for i in 0..10_000 {
        let reply = client
            .call(&[Request::Set(
                format!("k{i}").into_bytes(),
                Value::Binary(vec![0; 4096]),
            )])
            .expect("SET");
        if let [Element::Error { code, .. }] = &reply[..] {
            assert_eq!(code, "OOM");
            refused = Some(i);
            break;
        }
    }
    let refused = refused.expect("40 MB never hit a 2 MiB limit");
    assert!(refused > 100, "refused after {refused} writes");
    assert_eq!(client.get(b"first").expect("GET"), Some("v".into()));
    let stats = client.stats().expect("STATS");
    assert_eq!(stats["evicted_keys"], 0, "{stats:?}");
}

#[test]
fn evicted_keys_stay_gone_after_a_restart() {
    if common::on_disk_engine() {
        // The disk engine's memory limit counts its index, not values on
        // disk: tests/disk_values.rs holds it to that.
        return;
    }
    let (_temp, data_dir) = temp_data_dir();
    let flags = [
        "--max-memory-bytes",
        "4MiB",
        "--maxmemory-policy",
        "allkeys-random",
    ];
    let mut server = start_log(&data_dir, 2, &flags);
    let mut client = server.client();
    for i in 0..4_000 {
        client
            .set(format!("k{i}").as_bytes(), Value::Binary(vec![1; 4096]))
            .expect("SET under an evicting policy");
    }
    let before = client.stats().expect("STATS");
    assert!(before["evicted_keys"] > 1_000, "{before:?}");
    stop(&mut server, libc::SIGKILL);
    let server = start_log(&data_dir, 2, &flags);
    let mut client = server.client();
    let after = client.stats().expect("STATS");
    assert_eq!(
        after["keys"], before["keys"],
        "evictions were logged as deletes"
    );
}

#[test]
fn volatile_ttl_evicts_the_keys_nearest_their_deadline_and_keeps_the_rest() {
    if common::on_disk_engine() {
        // The disk engine's memory limit counts its index, not values on
        // disk: tests/disk_values.rs holds it to that.
        return;
    }
    let server = TestServer::start(
        1,
        &[
            "--max-memory-bytes",
            "4MiB",
            "--maxmemory-policy",
            "volatile-ttl",
        ],
    );
    let mut client = server.client();
    for i in 0..200 {
        client
            .set(
                format!("plain-{i}").as_bytes(),
                Value::Binary(vec![0; 4096]),
            )
            .expect("SET");
    }
    for i in 0..2_000 {
        let ttl = HOUR_MS + i as u64 * 1000;
        let reply = client
            .call(&[Request::SetTtl(
                format!("ttl-{i}").into_bytes(),
                Value::Binary(vec![0; 4096]),
                ttl,
            )])
            .expect("SET with a TTL");
        assert_eq!(reply, [], "write {i}");
    }
    for i in 0..200 {
        assert!(client
            .get(format!("plain-{i}").as_bytes())
            .expect("GET")
            .is_some());
    }
    assert!(
        client.get(b"ttl-1999").expect("GET").is_some(),
        "the latest deadline stays"
    );
    assert!(
        client.get(b"ttl-0").expect("GET").is_none(),
        "the nearest went first"
    );
}

#[test]
fn a_backup_keeps_every_deadline() {
    let mut server = TestServer::start(2, &["--engine", "log", "--http-addr", "127.0.0.1:0"]);
    let http = http_addr(&mut server);
    let mut client = server.client();
    for i in 0..10 {
        client
            .set_with_ttl(format!("ttl-{i}").as_bytes(), "v".into(), HOUR_MS)
            .expect("SET with a TTL");
    }
    client.set(b"plain", "v".into()).expect("SET");
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("backup");
    let body = serde_json::json!({ "dir": dir.display().to_string() }).to_string();
    let (status, report) = http_request(http, "POST", "/v1/backup", body.as_bytes());
    assert_eq!(status, 200, "{report}");
    let restored = start_log(&dir, 2, &[]);
    let mut restored_client = restored.client();
    for i in 0..10 {
        let ttl = remaining(
            restored_client
                .ttl(format!("ttl-{i}").as_bytes())
                .expect("TTL"),
        );
        assert!(ttl > 0 && ttl <= HOUR_MS, "{ttl}");
    }
    assert_eq!(
        restored_client.ttl(b"plain").expect("TTL"),
        KeyTtl::NoDeadline
    );
    assert_eq!(stat(&mut restored_client, "expires"), 10);
}
