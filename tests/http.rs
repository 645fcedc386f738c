//! The HTTP API (`--http-addr`, docs/http.md) against the real server binary:
//! concave's versioned get/put semantics, all-or-nothing puts across shards,
//! values crossing between msgpack and HTTP, every kind of bad input, and
//! `/metrics` read by the real Prometheus text parser (Python `prometheus_client`).
//!
//! Requests are written by hand over a `TcpStream` (HTTP/1.1, `Connection:
//! close`), so malformed and oversized requests can be sent exactly.

mod common;

use common::python::{describe, ensure_python_package, python};
use common::{http_addr, TestServer, REPLY_TIMEOUT};
use rmpv::Value;
use serde_json::{json, Value as Json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// A server with `nr_shards` shards and the HTTP API on a free port.
fn start(nr_shards: usize, extra_args: &[&str]) -> (TestServer, SocketAddr) {
    let mut args = vec!["--http-addr", "127.0.0.1:0"];
    args.extend_from_slice(extra_args);
    let mut server = TestServer::start(nr_shards, &args);
    let addr = http_addr(&mut server);
    (server, addr)
}

#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Json {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}):\n{}\n{}",
                self.head,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// Sends raw request bytes and reads the whole response (the server closes).
fn raw(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect to the HTTP port");
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .expect("timeout");
    stream.write_all(request).expect("send request");
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).expect("read response");
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&bytes)));
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head}"));
    Reply {
        status,
        head,
        body: bytes[split + 4..].to_vec(),
    }
}

fn request(addr: SocketAddr, method: &str, target: &str, body: Option<&[u8]>) -> Reply {
    let mut bytes = format!("{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    if let Some(body) = body {
        bytes.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    bytes.push_str("\r\n");
    let mut bytes = bytes.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    raw(addr, &bytes)
}

fn get(addr: SocketAddr, key: &str) -> Reply {
    request(addr, "GET", &format!("/v1/get?key={key}"), None)
}

fn put(addr: SocketAddr, items: Json) -> Reply {
    request(addr, "POST", "/v1/put", Some(items.to_string().as_bytes()))
}

/// Asserts a 200 `{"key","value","version"}` for `key`.
fn assert_value(addr: SocketAddr, key: &str, value: Json, version: u64) {
    let reply = get(addr, key);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.json(),
        json!({"key": key, "value": value, "version": version})
    );
}

#[test]
fn put_with_version_zero_creates_and_get_reads_version_one() {
    let (_server, addr) = start(2, &[]);
    let missing = get(addr, "apple");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"], "key not found");

    let reply = put(
        addr,
        json!([{"key": "apple", "value": "red", "version": 0}]),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["result"], "Success");
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_value(addr, "apple", json!("red"), 1);

    // The read-modify-write loop concave documents: write with the version read.
    let reply = put(
        addr,
        json!([{"key": "apple", "value": "green", "version": 1}]),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json(), json!({"result": "Success", "versions": [2]}));
    assert_value(addr, "apple", json!("green"), 2);
}

#[test]
fn a_stale_version_is_rejected_with_409_and_changes_nothing() {
    let (_server, addr) = start(2, &[]);
    put(addr, json!([{"key": "k", "value": 1, "version": 0}]));
    for stale in [0, 2, 7] {
        let reply = put(addr, json!([{"key": "k", "value": 99, "version": stale}]));
        assert_eq!(reply.status, 409, "version {stale}: {reply:?}");
        let body = reply.json();
        assert_eq!(body["result"], "Failure");
        assert_eq!(body["code"], "CONFLICT");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains('k')),
            "{body}"
        );
    }
    assert_value(addr, "k", json!(1), 1);
}

#[test]
fn a_put_across_shards_is_all_or_nothing() {
    let (_server, addr) = start(4, &[]);
    let keys: Vec<String> = (0..20).map(|i| format!("key-{i}")).collect();
    let create: Vec<Json> = keys
        .iter()
        .map(|k| json!({"key": k, "value": 0, "version": 0}))
        .collect();
    assert_eq!(put(addr, Json::Array(create)).status, 200);
    let stats = request(addr, "GET", "/v1/stats", None).json();
    let shards_used = stats["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .filter(|s| s["keys"].as_u64() > Some(0))
        .count();
    assert!(shards_used >= 2, "the keys should span shards: {stats}");

    // One stale version among twenty: nothing is written, on any shard.
    let mut update: Vec<Json> = keys
        .iter()
        .map(|k| json!({"key": k, "value": 1, "version": 1}))
        .collect();
    update[13]["version"] = json!(0);
    let reply = put(addr, Json::Array(update.clone()));
    assert_eq!(reply.status, 409, "{reply:?}");
    assert!(reply.json()["error"]
        .as_str()
        .is_some_and(|e| e.contains("key-13")));
    for key in &keys {
        assert_value(addr, key, json!(0), 1);
    }

    update[13]["version"] = json!(1);
    assert_eq!(put(addr, Json::Array(update)).status, 200);
    for key in &keys {
        assert_value(addr, key, json!(1), 2);
    }
}

#[test]
fn values_written_over_msgpack_read_over_http_and_back() {
    let (server, addr) = start(2, &[]);
    let mut client = server.client();
    client.set(b"str", Value::from("hello")).expect("set");
    client.set(b"int", Value::from(-42)).expect("set");
    client
        .set(b"bin", Value::Binary(vec![0, 1, 255]))
        .expect("set");
    client.set(b"nil", Value::Nil).expect("set");
    let map = Value::Map(vec![(Value::from("a"), Value::from(1))]);
    client.set(b"map", map).expect("set");
    assert_value(addr, "str", json!("hello"), 1);
    assert_value(addr, "int", json!(-42), 1);
    assert_value(addr, "bin", json!([0, 1, 255]), 1);
    assert_value(addr, "nil", json!(null), 1);
    assert_value(addr, "map", json!({"a": 1}), 1);

    let items = json!([
        {"key": "h-str", "value": "wörld", "version": 0},
        {"key": "h-int", "value": 7, "version": 0},
        {"key": "h-float", "value": 2.5, "version": 0},
        {"key": "h-bool", "value": true, "version": 0},
        {"key": "h-array", "value": [1, 2, [3.5, "x"]], "version": 0},
        {"key": "str", "value": "over http", "version": 1},
    ]);
    assert_eq!(put(addr, items).status, 200);
    let expected = [
        ("h-str", Value::from("wörld"), 1),
        ("h-int", Value::from(7), 1),
        ("h-float", Value::F64(2.5), 1),
        ("h-bool", Value::Boolean(true), 1),
        (
            "h-array",
            Value::Array(vec![
                1.into(),
                2.into(),
                Value::Array(vec![Value::F64(3.5), "x".into()]),
            ]),
            1,
        ),
        ("str", Value::from("over http"), 2),
    ];
    for (key, value, version) in expected {
        assert_eq!(
            client.getv(key.as_bytes()).expect("getv"),
            Some((value, version)),
            "{key}"
        );
    }
}

#[test]
fn keys_in_the_query_are_percent_decoded() {
    let (_server, addr) = start(2, &[]);
    let key = "a key/with ünïcode&=+";
    assert_eq!(
        put(addr, json!([{"key": key, "value": 1, "version": 0}])).status,
        200
    );
    let encoded = "a+key%2Fwith%20%C3%BCn%C3%AFcode%26%3D%2B";
    let reply = get(addr, encoded);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json(), json!({"key": key, "value": 1, "version": 1}));
}

/// A 4xx with a JSON `{"error": …}` body.
fn assert_client_error(reply: &Reply, status: u16, what: &str) {
    assert_eq!(reply.status, status, "{what}: {reply:?}");
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json"),
        "{what}"
    );
    let body = reply.json();
    assert!(body["error"].is_string(), "{what}: {body}");
}

#[test]
fn bad_input_gets_a_4xx_json_error_and_writes_nothing() {
    let (_server, addr) = start(2, &["--max-frame-bytes", "1KiB", "--max-key-bytes", "64"]);
    let bodies: &[(&str, &[u8])] = &[
        ("malformed JSON", b"[{\"key\": \"a\","),
        ("empty body", b""),
        ("not an array", br#"{"key": "a", "value": 1, "version": 0}"#),
        ("item not an object", br#"["a"]"#),
        ("missing key", br#"[{"value": 1, "version": 0}]"#),
        ("missing value", br#"[{"key": "a", "version": 0}]"#),
        ("missing version", br#"[{"key": "a", "value": 1}]"#),
        (
            "key not a string",
            br#"[{"key": 5, "value": 1, "version": 0}]"#,
        ),
        (
            "negative version",
            br#"[{"key": "a", "value": 1, "version": -1}]"#,
        ),
        (
            "fractional version",
            br#"[{"key": "a", "value": 1, "version": 1.5}]"#,
        ),
        (
            "string version",
            br#"[{"key": "a", "value": 1, "version": "0"}]"#,
        ),
        (
            "null value",
            br#"[{"key": "a", "value": null, "version": 0}]"#,
        ),
        (
            "object value",
            br#"[{"key": "a", "value": {"x": 1}, "version": 0}]"#,
        ),
        (
            "null in an array value",
            br#"[{"key": "a", "value": [1, null], "version": 0}]"#,
        ),
        (
            "unknown field",
            br#"[{"key": "a", "value": 1, "version": 0, "ttl": 5}]"#,
        ),
        (
            "a valid item before a bad one",
            br#"[{"key": "a", "value": 1, "version": 0}, {"key": "b"}]"#,
        ),
    ];
    for (what, body) in bodies {
        let reply = request(addr, "POST", "/v1/put", Some(body));
        assert_client_error(&reply, 400, what);
        assert_eq!(reply.json()["result"], "Failure", "{what}");
    }

    let long_key = "k".repeat(100);
    let reply = put(addr, json!([{"key": long_key, "value": 1, "version": 0}]));
    assert_client_error(&reply, 413, "key over --max-key-bytes");
    assert_client_error(
        &get(addr, &long_key),
        413,
        "GET of a key over --max-key-bytes",
    );

    // Floats are 3 bytes of JSON here but 9 of msgpack: the message is over the limit.
    let floats = vec![json!(1.5); 200];
    let reply = put(addr, json!([{"key": "f", "value": floats, "version": 0}]));
    assert_client_error(&reply, 413, "msgpack message over --max-frame-bytes");

    let head =
        b"POST /v1/put HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 5000\r\n\r\n";
    assert_client_error(&raw(addr, head), 413, "declared body over the limit");
    let chunk = format!("[{}]", vec!["1"; 700].join(","));
    let chunked = format!(
        "POST /v1/put HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    assert_client_error(
        &raw(addr, chunked.as_bytes()),
        413,
        "chunked body over the limit",
    );

    let gets: &[(&str, u16, &str)] = &[
        ("/v1/get", 400, "no query"),
        ("/v1/get?k=a", 400, "no key parameter"),
        ("/v1/get?key=a&key=b", 400, "key given twice"),
        ("/v1/get?key=%FF", 400, "key not UTF-8"),
        ("/nope", 404, "unknown path"),
        ("/v1/get/extra?key=a", 404, "unknown path under /v1/get"),
        ("/v1/put", 405, "GET on /v1/put"),
    ];
    for (target, status, what) in gets {
        assert_client_error(&request(addr, "GET", target, None), *status, what);
    }
    for (method, target) in [
        ("POST", "/v1/get?key=a"),
        ("DELETE", "/v1/get?key=a"),
        ("PUT", "/v1/put"),
        ("POST", "/metrics"),
        ("POST", "/health"),
        ("DELETE", "/v1/stats"),
    ] {
        let reply = request(addr, method, target, Some(b"[]"));
        assert_client_error(&reply, 405, &format!("{method} {target}"));
        assert!(
            reply.header("allow").is_some(),
            "{method} {target}: {reply:?}"
        );
    }

    // Nothing above wrote anything.
    let stats = request(addr, "GET", "/v1/stats", None).json();
    assert_eq!(stats["total"]["keys"], 0, "{stats}");
    assert_eq!(stats["total"]["sets"], 0, "{stats}");
    assert_eq!(get(addr, "a").status, 404);
}

#[test]
fn health_and_stats_answer_json() {
    let (_server, addr) = start(2, &[]);
    let reply = request(addr, "GET", "/health", None);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["status"], "serving");

    put(addr, json!([{"key": "a", "value": "xyz", "version": 0}]));
    get(addr, "a");
    get(addr, "missing");
    let stats = request(addr, "GET", "/v1/stats", None).json();
    let total = &stats["total"];
    assert_eq!(total["keys"], 1, "{stats}");
    assert_eq!(total["shards"], 2);
    assert_eq!(total["hits"], 1);
    assert_eq!(total["misses"], 1);
    assert_eq!(total["atomic_commits"], 1);
    let shards = stats["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 2);
    let key_sum: u64 = shards.iter().filter_map(|s| s["keys"].as_u64()).sum();
    assert_eq!(key_sum, 1);
}

#[test]
fn several_requests_share_one_keep_alive_connection() {
    let (_server, addr) = start(2, &[]);
    let body = json!([{"key": "ka", "value": 1, "version": 0}]).to_string();
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .expect("timeout");
    let requests = format!(
        "POST /v1/put HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}\
         GET /v1/get?key=ka HTTP/1.1\r\nHost: t\r\n\r\n\
         GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(requests.as_bytes()).expect("send");
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).expect("read");
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
    assert!(
        text.contains(r#"{"key":"ka","value":1,"version":1}"#),
        "{text}"
    );
}

/// Parses a metrics page with prometheus_client; returns its samples as
/// `{"family", "type", "name", "labels", "value"}` objects.
fn parse_metrics(page: &[u8]) -> Vec<Json> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"family": family.name, "type": family.type, "name": s.name,
                    "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;
    let output = python(&["-c", SCRIPT], page);
    assert!(
        output.status.success(),
        "prometheus_client could not parse /metrics:\n{}\n--- page ---\n{}",
        describe(&output),
        String::from_utf8_lossy(page)
    );
    let parsed: Json = serde_json::from_slice(&output.stdout).expect("parser output is JSON");
    parsed.as_array().expect("a list of samples").clone()
}

fn sample(samples: &[Json], name: &str, labels: Json) -> f64 {
    samples
        .iter()
        .find(|s| s["name"] == name && s["labels"] == labels)
        .and_then(|s| s["value"].as_f64())
        .unwrap_or_else(|| panic!("no sample {name} {labels}"))
}

/// The sum of `name`'s samples whose labels include every one of `labels`.
fn sum_where(samples: &[Json], name: &str, labels: Json) -> f64 {
    let wanted = labels.as_object().expect("labels are an object");
    samples
        .iter()
        .filter(|s| s["name"] == name)
        .filter(|s| wanted.iter().all(|(k, v)| &s["labels"][k] == v))
        .filter_map(|s| s["value"].as_f64())
        .sum()
}

/// Scrapes `/metrics` and parses it with the real parser.
fn scrape(addr: SocketAddr) -> Vec<Json> {
    let reply = request(addr, "GET", "/metrics", None);
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")));
    parse_metrics(&reply.body)
}

/// Scrapes until `ready` holds (figures other shards publish may be up to a
/// second old); at most about 10 s.
fn scrape_until(addr: SocketAddr, ready: impl Fn(&[Json]) -> bool) -> Vec<Json> {
    for _ in 0..100 {
        let samples = scrape(addr);
        if ready(&samples) {
            return samples;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("/metrics never showed the expected figures");
}

/// Checks one member of a histogram family: buckets ascend to `+Inf`, whose
/// count is `_count`; returns (count, sum).
fn histogram(samples: &[Json], name: &str, labels: Json) -> (f64, f64) {
    let member = |s: &&Json| {
        labels
            .as_object()
            .expect("labels")
            .iter()
            .all(|(k, v)| &s["labels"][k] == v)
    };
    let buckets: Vec<f64> = samples
        .iter()
        .filter(|s| s["name"] == format!("{name}_bucket"))
        .filter(member)
        .filter_map(|s| s["value"].as_f64())
        .collect();
    assert!(buckets.len() > 2, "{name} {labels} has buckets");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    let count = sample(samples, &format!("{name}_count"), labels.clone());
    assert_eq!(buckets.last().copied(), Some(count), "{name} {labels}");
    (count, sample(samples, &format!("{name}_sum"), labels))
}

#[test]
fn metrics_parse_with_the_prometheus_text_parser() {
    ensure_python_package("prometheus_client", "prometheus_client");
    let (server, addr) = start(2, &["--engine", "log"]);
    let items: Vec<Json> = (0..10)
        .map(|i| json!({"key": format!("m{i}"), "value": "abcd", "version": 0}))
        .collect();
    assert_eq!(put(addr, Json::Array(items)).status, 200);
    let conflict = put(addr, json!([{"key": "m0", "value": 1, "version": 0}]));
    assert_eq!(conflict.status, 409);
    get(addr, "m1");
    get(addr, "nothing");
    let mut client = server.client();
    client.set(b"m0", Value::from("x")).expect("set");
    client.get(b"m1").expect("get");
    let transfer = vec![
        corekv::client::Request::Set(b"m2".to_vec(), Value::from(1)),
        corekv::client::Request::Set(b"m3".to_vec(), Value::from(2)),
    ];
    client
        .call(&[corekv::client::Request::Atomic(transfer)])
        .expect("atomic");
    // A message refused whole: not a msgpack array of requests.
    client.send_raw(&common::frame(&[0xc1])).expect("send");
    client.flush().expect("flush");
    client.recv_reply().expect("refusal");

    // Error counts are published by each shard every second.
    let samples = scrape_until(addr, |samples| {
        ["BADFRAME", "CONFLICT"].iter().all(|code| {
            sum_where(samples, "corekv_error_replies_total", json!({"code": code})) >= 1.0
        })
    });

    // Per-shard figures are one family with a `shard` label, never a
    // family of their own.
    assert!(
        samples.iter().all(|s| !s["family"]
            .as_str()
            .unwrap_or("")
            .starts_with("corekv_shard_")),
        "a corekv_shard_* family is left"
    );
    assert_eq!(sample(&samples, "corekv_shards", json!({})), 2.0);
    for shard in ["0", "1"] {
        sample(&samples, "corekv_keys", json!({"shard": shard}));
    }
    assert_eq!(sum_where(&samples, "corekv_keys", json!({})), 10.0);
    assert_eq!(sum_where(&samples, "corekv_value_bytes", json!({})), 39.0);
    let sets = sum_where(&samples, "corekv_operations_total", json!({"op": "set"}));
    assert_eq!(sets, 13.0);
    assert_eq!(sum_where(&samples, "corekv_hits_total", json!({})), 2.0);
    assert_eq!(sum_where(&samples, "corekv_misses_total", json!({})), 1.0);
    let commits = sum_where(&samples, "corekv_atomic_commits_total", json!({}));
    assert_eq!(commits, 2.0);
    let aborts = sum_where(&samples, "corekv_atomic_aborts_total", json!({}));
    assert_eq!(aborts, 1.0);
    let conflicts = json!({"code": "CONFLICT"});
    assert!(sum_where(&samples, "corekv_error_replies_total", conflicts) >= 1.0);
    let oom = json!({"code": "OOM"});
    assert_eq!(sum_where(&samples, "corekv_error_replies_total", oom), 0.0);

    let version = json!({"version": env!("CARGO_PKG_VERSION")});
    assert_eq!(sample(&samples, "corekv_build_info", version), 1.0);
    assert!(sample(&samples, "corekv_connections", json!({})) >= 2.0);
    assert!(sample(&samples, "corekv_connections_accepted_total", json!({})) >= 6.0);
    assert_eq!(
        sample(&samples, "corekv_connections_refused_total", json!({})),
        0.0
    );
    // Served, whatever its count (a busy test machine may stall a shard).
    let woken = sample(&samples, "corekv_shards_woken_by_guard_total", json!({}));
    assert!(woken >= 0.0, "{woken}");
    assert_eq!(
        sum_where(&samples, "corekv_http_connections", json!({})),
        1.0
    );

    let started = sample(&samples, "process_start_time_seconds", json!({}));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    assert!(started > now - 3600.0 && started <= now + 1.0, "{started}");
    assert!(sample(&samples, "process_resident_memory_bytes", json!({})) > 0.0);
    let open_fds = sample(&samples, "process_open_fds", json!({}));
    assert!(open_fds > 0.0 && open_fds <= sample(&samples, "process_max_fds", json!({})));
    sample(&samples, "process_cpu_seconds_total", json!({}));

    // Request latency, per command family, of the msgpack requests above.
    let mut observed = std::collections::BTreeMap::new();
    for shard in ["0", "1"] {
        for command in ["get", "set", "delete", "atomic", "stats", "other"] {
            let labels = json!({"shard": shard, "command": command});
            let (count, sum) = histogram(&samples, "corekv_request_duration_seconds", labels);
            assert!(sum >= 0.0 && (count > 0.0 || sum == 0.0));
            *observed.entry(command).or_insert(0.0) += count;
        }
    }
    assert_eq!(observed["set"], 1.0, "{observed:?}");
    assert_eq!(observed["get"], 1.0, "{observed:?}");
    assert_eq!(observed["atomic"], 1.0, "{observed:?}");
    assert_eq!(observed["other"], 1.0, "{observed:?}");
    assert_eq!(observed["delete"], 0.0, "{observed:?}");

    // The log: one family per figure, a member per shard.
    assert!(sum_where(&samples, "corekv_log_syncs_total", json!({})) >= 2.0);
    for shard in ["0", "1"] {
        let labels = json!({"shard": shard});
        sample(&samples, "corekv_log_syncs_total", labels.clone());
        sample(&samples, "corekv_log_bytes", labels.clone());
        // The group commit's histograms: how long syncs take, how many
        // records each one covers.
        histogram(&samples, "corekv_log_sync_duration_seconds", labels.clone());
        histogram(&samples, "corekv_log_records_per_sync", labels);
    }
    let (syncs, _) = {
        let mut total = (0.0, 0.0);
        for shard in ["0", "1"] {
            let (count, sum) = histogram(
                &samples,
                "corekv_log_sync_duration_seconds",
                json!({"shard": shard}),
            );
            total = (total.0 + count, total.1 + sum);
        }
        total
    };
    assert!(syncs >= 1.0, "the log syncs were published");
    for (name, kind) in [
        ("corekv_operations_total", "counter"),
        ("corekv_request_duration_seconds_bucket", "histogram"),
        ("corekv_build_info", "gauge"),
    ] {
        let found = samples
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(found["type"], kind, "{name}");
    }
}

#[test]
fn http_connections_count_against_the_connection_limit() {
    let (server, addr) = start(1, &["--max-connections", "1"]);
    let mut client = server.client();
    client
        .set(b"x", Value::from(1))
        .expect("the one allowed connection works");
    let reply = request(addr, "GET", "/health", None);
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(reply.json()["error"]
        .as_str()
        .is_some_and(|e| e.contains("--max-connections")));
    drop(client);
    // Once the server has seen the msgpack connection close, /metrics can
    // be scraped (until then it refuses the scrape too) and counts refusals.
    ensure_python_package("prometheus_client", "prometheus_client");
    let page = (0..100)
        .find_map(|_| {
            let reply = request(addr, "GET", "/metrics", None);
            if reply.status == 200 {
                return Some(reply.body);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            None
        })
        .expect("/metrics is served once the msgpack connection is gone");
    let samples = parse_metrics(&page);
    let refused = sample(&samples, "corekv_connections_refused_total", json!({}));
    assert!(refused >= 1.0, "{refused}");
    assert!(sample(&samples, "corekv_connections_accepted_total", json!({})) >= 2.0);
}

#[test]
fn shutdown_closes_idle_keep_alive_connections_and_exits_cleanly() {
    let (mut server, addr) = start(2, &[]);
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .expect("timeout");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    let mut first = [0u8; 15];
    stream.read_exact(&mut first).expect("read the reply");
    assert_eq!(&first, b"HTTP/1.1 200 OK");
    // The connection stays open (keep-alive) while the server shuts down.
    let status = server.stop_with(libc::SIGTERM);
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn over_the_memory_limit_puts_get_507_and_reads_keep_working() {
    let (_server, addr) = start(1, &["--max-memory-bytes", "1MiB"]);
    assert_eq!(
        put(addr, json!([{"key": "small", "value": 1, "version": 0}])).status,
        200
    );
    let big = "x".repeat(2 << 20);
    let reply = put(addr, json!([{"key": "big", "value": big, "version": 0}]));
    assert_eq!(reply.status, 507, "{:?}", reply.head);
    assert_eq!(reply.json()["code"], "OOM");
    assert_eq!(get(addr, "big").status, 404);
    assert_value(addr, "small", json!(1), 1);
}
