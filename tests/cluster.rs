//! A three-node cluster on 127.0.0.1 (`--cluster FILE --node NAME`): redis-py's
//! RedisCluster routes by slot across it, every node holds only its own
//! slots, a key sent to the wrong node gets MOVED over RESP and msgpack alike,
//! keys of several slots get CROSSSLOT, bad cluster files are refused at
//! start, and a node that dies takes only its own slots with it.

mod common;

use common::python::{describe, ensure_python_package, python};
use common::wire::RawConnection;
use common::{pack, server_binary, TestServer};
use corekv::client::{Client, ClientError, ClusterClient, Element, Request};
use corekv::cluster::ClusterMap;
use rmpv::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/redis_cluster.py");
const TRANSACTIONS_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/python/redis_cluster_transactions.py"
);

/// The three nodes' names and slots.
const LAYOUT: [(&str, &str); 3] = [("a", "0-5460"), ("b", "5461-10922"), ("c", "10923-16383")];

/// Free ports on 127.0.0.1, held open together so they differ, then released
/// for the nodes to bind.
fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr"))
        .collect()
}

fn cluster_file(addrs: &[SocketAddr]) -> String {
    LAYOUT
        .iter()
        .zip(addrs)
        .map(|((name, slots), addr)| {
            format!("[[node]]\nname = \"{name}\"\naddr = \"{addr}\"\nslots = [\"{slots}\"]\n\n")
        })
        .collect()
}

struct Cluster {
    nodes: Vec<TestServer>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let addrs = free_addrs(LAYOUT.len());
        let file = dir.path().join("cluster.toml");
        std::fs::write(&file, cluster_file(&addrs)).expect("write the cluster file");
        let nodes = LAYOUT
            .iter()
            .zip(&addrs)
            .map(|((name, _), addr)| {
                let addr = addr.to_string();
                let file = file.to_str().expect("utf-8 path");
                let args = ["--addr", addr.as_str(), "--cluster", file, "--node", *name];
                TestServer::start(2, &args)
            })
            .collect();
        Cluster { nodes, _dir: dir }
    }

    fn addr(&self, node: usize) -> SocketAddr {
        self.nodes[node].addr
    }
}

/// The index in [`LAYOUT`] of the node owning `key`'s slot.
fn owner(key: &str) -> usize {
    let slot = slot_of(key);
    LAYOUT
        .iter()
        .position(|(_, range)| {
            let (first, last) = range.split_once('-').expect("a range");
            (first.parse().unwrap()..=last.parse().unwrap()).contains(&slot)
        })
        .expect("every slot has an owner")
}

/// Redis Cluster's slot of a key without a hash tag (CRC16-XMODEM).
fn slot_of(key: &str) -> u16 {
    let mut crc: u16 = 0;
    for byte in key.bytes() {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// Sends one RESP command and reads a one-line reply (simple, error,
/// integer) or a bulk string, as text.
fn resp(addr: SocketAddr, args: &[&str]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).expect("send");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("read a reply");
    if line.starts_with('$') && !line.starts_with("$-1") {
        let mut body = String::new();
        reader.read_line(&mut body).expect("read a bulk string");
        return body.trim_end().to_owned();
    }
    line.trim_end().to_owned()
}

/// Sends one msgpack message to `addr` and returns its decoded reply.
fn msgpack_call(addr: SocketAddr, message: Value) -> Value {
    let mut conn = RawConnection::connect(addr);
    let reply = conn.call(&pack(&message));
    rmpv::decode::read_value(&mut reply.as_slice()).expect("a msgpack reply")
}

/// One msgpack GET of `key` on `addr`: the reply's only element.
fn msgpack_get(addr: SocketAddr, key: &str) -> Value {
    let message = Value::Array(vec![Value::Array(vec![0.into(), key.into()])]);
    match msgpack_call(addr, message) {
        Value::Array(mut elements) if elements.len() == 1 => elements.remove(0),
        other => panic!("GET {key}: reply {other}"),
    }
}

/// A message of one ATOMIC batch setting each key to "x".
fn atomic_set(keys: &[&str]) -> Value {
    let sets = keys
        .iter()
        .map(|k| Value::Array(vec![1.into(), (*k).into(), "x".into()]))
        .collect();
    Value::Array(vec![Value::Array(vec![3.into(), Value::Array(sets)])])
}

#[test]
fn redis_py_cluster_client_spreads_keys_over_three_nodes_each_holding_only_its_slots() {
    ensure_python_package("redis", "redis");
    let cluster = Cluster::start();
    let mut args = vec![SCRIPT.to_owned(), "2000".to_owned()];
    args.extend((0..3).map(|i| cluster.addr(i).to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = python(&args, b"");
    assert!(
        output.status.success(),
        "redis_cluster.py failed:\n{}",
        describe(&output)
    );
}

#[test]
fn watched_keys_and_a_multi_blocks_keys_must_share_one_slot_or_exec_answers_crossslot() {
    ensure_python_package("redis", "redis");
    let cluster = Cluster::start();
    let addr = cluster.addr(1).to_string();
    let output = python(&[TRANSACTIONS_SCRIPT, &addr], b"");
    assert!(
        output.status.success(),
        "redis_cluster_transactions.py failed:\n{}",
        describe(&output)
    );
}

#[test]
fn a_key_sent_to_the_wrong_node_gets_moved_over_resp_and_msgpack() {
    let cluster = Cluster::start();
    let key = "foo";
    let (slot, home) = (slot_of(key), owner(key));
    assert_eq!(slot, 12182);
    let wrong = (home + 1) % 3;
    let moved = format!("MOVED {slot} {}", cluster.addr(home));
    assert_eq!(
        resp(cluster.addr(wrong), &["SET", key, "v"]),
        format!("-{moved}")
    );
    assert_eq!(
        resp(cluster.addr(wrong), &["GET", key]),
        format!("-{moved}")
    );
    assert_eq!(resp(cluster.addr(home), &["SET", key, "v"]), "+OK");
    assert_eq!(resp(cluster.addr(home), &["GET", key]), "v");
    // msgpack: the whole message is refused with an error element naming the owner.
    let refused = msgpack_get(cluster.addr(wrong), key);
    let expected = Value::Array(vec![
        (-9).into(),
        "MOVED".into(),
        format!("{slot} {}", cluster.addr(home)).into(),
    ]);
    assert_eq!(refused, expected);
    let found = msgpack_get(cluster.addr(home), key);
    let value = match &found {
        Value::Array(parts) if parts.first() == Some(&Value::from(-1)) => parts.get(1),
        _ => None,
    };
    assert!(
        matches!(value, Some(Value::Binary(b)) if b == b"v") || value == Some(&Value::from("v")),
        "GET {key} on its owner: {found}"
    );
    // Keys of two slots: CROSSSLOT, even on the node that owns both.
    let other = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| owner(k) == home && slot_of(k) != slot)
        .expect("another slot of the same node");
    assert_eq!(
        resp(cluster.addr(home), &["MGET", key, other.as_str()]),
        "-CROSSSLOT Keys in request don't hash to the same slot"
    );
    // Any node answers CLUSTER KEYSLOT, whoever owns the slot.
    let keyslot = resp(cluster.addr(wrong), &["CLUSTER", "KEYSLOT", key]);
    assert_eq!(keyslot, ":12182");
}

#[test]
fn redis_cli_cluster_check_passes() {
    let cluster = Cluster::start();
    let addr = cluster.addr(0).to_string();
    let output = Command::new("redis-cli")
        .args(["--cluster", "check", &addr])
        .output()
        .expect("run redis-cli (apt-get install -y redis-tools)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("[OK] All 16384 slots covered."),
        "redis-cli --cluster check:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_dead_node_takes_only_its_own_slots_with_it() {
    let mut cluster = Cluster::start();
    let keys: Vec<String> = (0..300).map(|i| format!("key:{i}")).collect();
    for key in &keys {
        let key = key.as_str();
        assert_eq!(resp(cluster.addr(owner(key)), &["SET", key, key]), "+OK");
    }
    let dead = 1;
    let dead_addr = cluster.addr(dead);
    cluster.nodes[dead].stop_with(libc::SIGKILL);
    // The kernel tears a killed process's io_uring rings down after it
    // exits, and its listening socket with them: connecting may still
    // succeed for a moment.
    let refused = (0..100).any(|_| {
        let down = TcpStream::connect(dead_addr).is_err();
        if !down {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        down
    });
    assert!(refused, "the node is down");
    for key in keys.iter().filter(|k| owner(k) != dead) {
        assert_eq!(resp(cluster.addr(owner(key)), &["GET", key.as_str()]), *key);
    }
    // The survivors still redirect the dead node's keys to it.
    let orphan = keys.iter().find(|k| owner(k) == dead).expect("a key of b");
    let reply = resp(cluster.addr(0), &["GET", orphan.as_str()]);
    assert_eq!(reply, format!("-MOVED {} {dead_addr}", slot_of(orphan)));
}

/// Runs the server with `args` and returns its stderr; it must refuse to start.
fn refused(dir: &Path, args: &[&str]) -> String {
    let output = common::run_to_exit(
        Command::new(server_binary())
            .args(["--addr", "127.0.0.1:0", "--engine", "memory"])
            .args(args)
            .arg("--data-dir")
            .arg(dir.join("data")),
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{args:?} started:\n{stderr}");
    stderr
}

#[test]
fn bad_cluster_files_and_flags_are_refused_at_start_naming_the_fault() {
    let dir = tempfile::tempdir().expect("temp dir");
    let addrs = free_addrs(3);
    let good = cluster_file(&addrs);
    let write = |name: &str, text: &str| -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write a cluster file");
        path
    };
    let cases = [
        (
            good.replace("\"0-5460\"", "\"0-5461\""),
            "slot 5461 is owned by both \"a\" and \"b\"",
        ),
        (
            good.replace("\"10923-16383\"", "\"10923-16382\""),
            "1 slots are owned by no node",
        ),
        (
            good.replace(&addrs[1].to_string(), "nowhere"),
            "is not IP:PORT",
        ),
        ("[[node]]\nname = \"a\"\n".to_owned(), "missing field"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let path = write(&format!("bad{i}.toml"), text);
        let stderr = refused(
            dir.path(),
            &["--cluster", path.to_str().unwrap(), "--node", "a"],
        );
        assert!(stderr.contains(needle), "{needle:?} not in:\n{stderr}");
        assert!(
            stderr.contains(path.to_str().unwrap()),
            "the file is named:\n{stderr}"
        );
    }
    let path = write("good.toml", &good);
    let path = path.to_str().unwrap();
    let stderr = refused(dir.path(), &["--cluster", path, "--node", "d"]);
    assert!(
        stderr.contains("--node \"d\" is not one of its nodes"),
        "{stderr}"
    );
    let stderr = refused(dir.path(), &["--cluster", path]);
    assert!(
        stderr.contains("--cluster and --node go together"),
        "{stderr}"
    );
    let missing = dir.path().join("missing.toml");
    let stderr = refused(
        dir.path(),
        &["--cluster", missing.to_str().unwrap(), "--node", "a"],
    );
    assert!(stderr.contains("cannot read the cluster file"), "{stderr}");
}

#[test]
fn a_standalone_server_answers_cluster_commands_that_cluster_support_is_disabled() {
    let server = TestServer::start(2, &[]);
    let disabled = "-ERR This instance has cluster support disabled";
    assert_eq!(resp(server.addr, &["CLUSTER", "SLOTS"]), disabled);
    assert_eq!(resp(server.addr, &["READONLY"]), disabled);
    assert_eq!(resp(server.addr, &["INFO", "cluster"]), "# Cluster");
    // Keys of any slot run there.
    assert_eq!(resp(server.addr, &["MSET", "a", "1", "b", "2"]), "+OK");
}

#[test]
fn a_msgpack_atomic_batch_runs_whole_on_its_node_or_is_refused_whole_with_moved() {
    let cluster = Cluster::start();
    let home = owner("foo");
    let addr = cluster.addr(home);
    // Another key of the same node on its other shard (slots go to shards in
    // turn): the batch spans shards, not nodes, and runs.
    let neighbour = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| owner(k) == home && slot_of(k) % 2 != slot_of("foo") % 2)
        .expect("a key of the node's other shard");
    let ran = msgpack_call(addr, atomic_set(&["foo", &neighbour]));
    assert_eq!(ran, Value::Array(vec![]), "SETs answer no elements");
    assert_ne!(
        msgpack_get(addr, &neighbour),
        Value::Array(vec![(-2).into()])
    );
    // One key of another node: the whole batch is refused, nothing is written.
    let foreign = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| owner(k) != home)
        .expect("a key of another node");
    let fresh = (0..1000)
        .map(|i| format!("fresh{i}"))
        .find(|k| owner(k) == home)
        .expect("a fresh key of this node");
    let refused = msgpack_call(addr, atomic_set(&[&fresh, &foreign]));
    let moved = format!("{} {}", slot_of(&foreign), cluster.addr(owner(&foreign)));
    let element = Value::Array(vec![(-9).into(), "MOVED".into(), moved.into()]);
    assert_eq!(refused, Value::Array(vec![element]));
    assert_eq!(msgpack_get(addr, &fresh), Value::Array(vec![(-2).into()]));
}

#[test]
fn a_node_listening_on_another_port_than_its_file_gives_warns_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("cluster.toml");
    std::fs::write(&file, cluster_file(&free_addrs(3))).expect("write the cluster file");
    let file = file.to_str().expect("utf-8 path");
    // Port 0: whatever port the server gets is not the file's.
    let mut node = TestServer::start(1, &["--cluster", file, "--node", "b"]);
    let stderr = node.stderr();
    assert!(
        stderr.contains("the cluster file gives node \"b\" the address"),
        "{stderr}"
    );
}

#[test]
fn every_node_answers_slotmap_with_the_whole_map_and_its_own_name() {
    let cluster = Cluster::start();
    for (i, (me, _)) in LAYOUT.iter().enumerate() {
        let reply = msgpack_call(
            cluster.addr(i),
            Value::Array(vec![Value::Array(vec![24.into()])]),
        );
        let nodes: Vec<Value> = LAYOUT
            .iter()
            .enumerate()
            .map(|(j, (name, range))| {
                let (first, last) = range.split_once('-').expect("a range");
                let pair = Value::Array(vec![
                    first.parse::<u16>().unwrap().into(),
                    last.parse::<u16>().unwrap().into(),
                ]);
                Value::Array(vec![
                    (*name).into(),
                    cluster.addr(j).to_string().into(),
                    Value::Array(vec![pair]),
                ])
            })
            .collect();
        let expected = Value::Array(vec![(-10).into(), (*me).into(), Value::Array(nodes)]);
        assert_eq!(reply, Value::Array(vec![expected]), "node {me}");
    }
    // Not inside ATOMIC: the message is refused whole.
    let atomic = Value::Array(vec![Value::Array(vec![
        3.into(),
        Value::Array(vec![Value::Array(vec![24.into()])]),
    ])]);
    let refused = msgpack_call(cluster.addr(0), atomic).to_string();
    assert!(
        refused.contains("BADREQ") && refused.contains("SLOTMAP cannot run inside ATOMIC"),
        "{refused}"
    );
}

#[test]
fn a_standalone_server_refuses_slotmap_saying_it_is_not_a_cluster_node() {
    let server = TestServer::start(2, &[]);
    let message = Value::Array(vec![
        Value::Array(vec![1.into(), "k".into(), "v".into()]),
        Value::Array(vec![24.into()]),
    ]);
    let refused = msgpack_call(server.addr, message);
    let expected = Value::Array(vec![Value::Array(vec![
        (-9).into(),
        "BADREQ".into(),
        "SLOTMAP: this server is not a cluster node (started without --cluster)".into(),
    ])]);
    assert_eq!(refused, expected);
    // Nothing of the refused message ran.
    assert_eq!(
        msgpack_get(server.addr, "k"),
        Value::Array(vec![(-2).into()])
    );
}

const TIMEOUT: Option<std::time::Duration> = Some(std::time::Duration::from_secs(30));

/// Every key stored on `addr` (one node), by SCAN.
fn keys_on(addr: SocketAddr) -> Vec<String> {
    let mut client = Client::connect(addr, TIMEOUT).expect("connect to a node");
    let keys = client.keys(b"").expect("scan the node");
    keys.into_iter()
        .map(|k| String::from_utf8(k).expect("utf-8 key"))
        .collect()
}

#[test]
fn the_cluster_client_routes_each_request_of_a_message_to_its_keys_node_and_keeps_their_order() {
    let cluster = Cluster::start();
    // One seed is enough: the map comes from it.
    let mut client = ClusterClient::connect(&[cluster.addr(1)], TIMEOUT).expect("connect");
    assert_eq!(client.map().nodes().len(), 3);
    let keys: Vec<String> = (0..120).map(|i| format!("key:{i}")).collect();
    for chunk in keys.chunks(12) {
        // SETs and GETs of keys of every node, interleaved in one message.
        let mut message = Vec::new();
        for key in chunk {
            message.push(Request::Set(key.as_bytes().to_vec(), key.as_str().into()));
            message.push(Request::Get(key.as_bytes().to_vec()));
        }
        message.push(Request::Get(b"never-written".to_vec()));
        let elements = client.call(&message).expect("routed");
        let mut expected: Vec<Element> = chunk
            .iter()
            .map(|k| Element::Found(k.as_str().into()))
            .collect();
        expected.push(Element::NotFound);
        assert_eq!(elements, expected);
    }
    // Each node holds exactly the keys of its own slots.
    let mut total = 0;
    for node in 0..3 {
        let held = keys_on(cluster.addr(node));
        assert!(
            held.iter().all(|k| owner(k) == node),
            "node {node}: {held:?}"
        );
        total += held.len();
    }
    assert_eq!(total, keys.len());
    // An ATOMIC batch on one node runs there, across its shards.
    let home = owner("foo");
    let neighbour = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| owner(k) == home && slot_of(k) % 2 != slot_of("foo") % 2)
        .expect("a key of the node's other shard");
    let batch = Request::Atomic(vec![
        Request::Set(b"foo".to_vec(), "1".into()),
        Request::Set(neighbour.as_bytes().to_vec(), "2".into()),
        Request::Get(neighbour.as_bytes().to_vec()),
    ]);
    assert_eq!(
        client.call(&[batch]).expect("one node"),
        [Element::Found("2".into())]
    );
    // One spanning nodes is refused before anything is sent.
    let foreign = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| owner(k) != home)
        .expect("a key of another node");
    let spanning = Request::Atomic(vec![
        Request::Set(b"foo".to_vec(), "changed".into()),
        Request::Set(foreign.as_bytes().to_vec(), "x".into()),
    ]);
    let refused = client.call(&[spanning]).expect_err("two nodes");
    assert!(matches!(refused, ClientError::Routing(_)), "{refused}");
    assert_eq!(client.get(b"foo").expect("get"), Some("1".into()));
    // Keyless requests go to a node by name.
    let stats = client.node("a").expect("node a").stats().expect("stats");
    assert_eq!(
        stats.get("keys").copied(),
        Some(keys_on(cluster.addr(0)).len() as u64)
    );
}

#[test]
fn a_cluster_client_with_a_stale_map_follows_moved_once_and_learns_the_map() {
    let cluster = Cluster::start();
    let addrs: Vec<SocketAddr> = (0..3).map(|i| cluster.addr(i)).collect();
    // The right addresses with every node's slots given to the next node.
    let right = cluster_file(&addrs);
    let rotated: Vec<SocketAddr> = (0..3).map(|i| addrs[(i + 1) % 3]).collect();
    let stale = ClusterMap::parse(&cluster_file(&rotated), "a").expect("a valid map");
    let mut client = ClusterClient::with_map(stale, TIMEOUT);
    let keys: Vec<String> = (0..30).map(|i| format!("key:{i}")).collect();
    let message: Vec<Request> = keys
        .iter()
        .map(|k| Request::Set(k.as_bytes().to_vec(), k.as_str().into()))
        .collect();
    assert_eq!(client.call(&message).expect("after MOVED"), []);
    let truth = ClusterMap::parse(&right, "a").expect("valid");
    assert_eq!(client.map().nodes(), truth.nodes(), "the map was refreshed");
    for key in &keys {
        assert_eq!(
            client.get(key.as_bytes()).expect("get"),
            Some(key.as_str().into())
        );
        assert!(keys_on(cluster.addr(owner(key))).contains(key));
    }
}

#[test]
fn a_cluster_client_seeded_with_a_standalone_server_says_it_is_not_a_cluster_node() {
    let server = TestServer::start(1, &[]);
    let refused = ClusterClient::connect(&[server.addr], TIMEOUT)
        .err()
        .expect("no slot map");
    let text = refused.to_string();
    assert!(
        text.contains("BADREQ") && text.contains("not a cluster node"),
        "{text}"
    );
}

/// Runs the load generator with `flags` and `--quiet`.
fn loadgen(flags: &[&str]) -> Result<corekv_loadgen::Report, corekv_loadgen::RunError> {
    use clap::Parser;
    let argv = ["corekv-loadgen", "--quiet"]
        .into_iter()
        .chain(flags.iter().copied());
    let args = corekv_loadgen::Args::parse_from(argv);
    let config = corekv_loadgen::Config::from_args(&args).expect("valid loadgen flags");
    corekv_loadgen::run(&config)
}

/// Each node's STATS figure `name`.
fn stat_per_node(cluster: &Cluster, name: &str) -> Vec<u64> {
    (0..3)
        .map(|node| {
            let mut client = Client::connect(cluster.addr(node), TIMEOUT).expect("connect");
            let stats = client.stats().expect("stats");
            stats.get(name).copied().unwrap_or(0)
        })
        .collect()
}

#[test]
fn the_load_generator_with_cluster_sends_each_request_to_its_keys_node_without_an_error() {
    let cluster = Cluster::start();
    let addr = cluster.addr(2).to_string();
    let common = ["--addr", addr.as_str(), "--cluster", "--connections", "6"];
    // Fixed messages of 3 SETs and 3 GETs, each message on one node.
    let mut flags = common.to_vec();
    flags.extend([
        "--messages",
        "40",
        "--sets-per-message",
        "3",
        "--keys",
        "3000",
    ]);
    let report = loadgen(&flags).expect("the run takes place");
    assert!(report.passed(), "{}", report.to_text());
    assert_eq!(report.errors, 0);
    let sets = stat_per_node(&cluster, "sets");
    assert!(
        sets.iter().all(|&n| n > 0),
        "every node was written: {sets:?}"
    );
    // A mixed workload with ATOMIC-free random GETs and SETs, pipelined.
    let mut flags = common.to_vec();
    flags.extend([
        "--messages",
        "40",
        "--get-ratio",
        "0.5",
        "--ops-per-message",
        "4",
    ]);
    flags.extend(["--pipeline", "4", "--keys", "3000"]);
    let report = loadgen(&flags).expect("the run takes place");
    assert!(report.passed(), "{}", report.to_text());
    assert_eq!(report.errors, 0);
    let gets = stat_per_node(&cluster, "gets");
    assert!(gets.iter().all(|&n| n > 0), "every node was read: {gets:?}");
    // ATOMIC batches of one node's keys.
    let mut flags = common.to_vec();
    flags.extend(["--messages", "20", "--atomic-keys", "4", "--keys", "3000"]);
    let report = loadgen(&flags).expect("the run takes place");
    assert!(report.passed(), "{}", report.to_text());
    let commits = stat_per_node(&cluster, "atomic_commits");
    assert!(
        commits.iter().all(|&n| n > 0),
        "every node ran batches: {commits:?}"
    );
}

#[test]
fn the_load_generator_with_cluster_against_a_standalone_server_says_it_is_not_a_cluster_node() {
    let server = TestServer::start(1, &[]);
    let addr = server.addr.to_string();
    let refused =
        loadgen(&["--addr", &addr, "--cluster", "--messages", "1"]).expect_err("no slot map");
    let text = refused.to_string();
    assert!(
        text.contains("--cluster") && text.contains("not a cluster node"),
        "{text}"
    );
}
