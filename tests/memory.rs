//! Memory held for replies, against the real `corekv-server` binary: a value
//! the table lets go of (overwritten, deleted) while a reply not yet written
//! still references it stays alive — it is *pinned*. STATS reports it as
//! `reply_pinned_bytes`, `--max-memory-bytes` counts it (writes get OOM, reads
//! keep working), and once the replies are gone it is freed and given back to
//! the operating system.
//!
//! Nothing here asserts how fast anything happens: every wait is a bounded poll
//! that turns a hang into a failure.

mod common;

use common::{key_on_shard, TestServer};
use corekv::client::{encode_message, Client, Element, Request};
use rmpv::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

const NR_SHARDS: usize = 2;
const KEYS_PER_SHARD: usize = 4;
const VALUE_BYTES: usize = 1 << 20;
/// 16 MiB per shard: its 4 MiB of values and about three more copies of them.
const MAX_MEMORY: &str = "32MiB";
const MAX_MEMORY_BYTES: u64 = 32 << 20;
/// Stalled connections opened at most; each pins one copy of every value, so
/// the limit is reached by the third.
const MAX_STALLED: usize = 8;
/// A stalled connection's receive buffer: set small (which also stops the
/// kernel from growing it), so the server's write blocks once its own send
/// buffer is full.
const STALLED_RCVBUF_BYTES: usize = 4096;
const POLL: Duration = Duration::from_millis(50);
/// 30 s of polls: a bound that turns a hang into a failure.
const MAX_POLLS: usize = 600;

fn value(generation: usize, key: usize) -> Value {
    Value::Binary(vec![(generation * 16 + key) as u8; VALUE_BYTES])
}

fn all_keys() -> Vec<Vec<u8>> {
    (0..NR_SHARDS)
        .flat_map(|shard| {
            (0..KEYS_PER_SHARD).map(move |i| key_on_shard(&format!("pinned-{i}"), shard, NR_SHARDS))
        })
        .collect()
}

/// Resident memory of a process, from /proc/PID/status.
fn vm_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kib * 1024
}

/// How often a stalled connection asks for each key: enough for a reply four
/// times what the kernel may buffer for the server's socket (the maximum of
/// net.ipv4.tcp_wmem), so the server's write blocks with every value of the
/// round still referenced.
fn gets_per_key(nr_keys: usize) -> usize {
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
        .unwrap_or(4 << 20);
    (4 * wmem_max).div_ceil(nr_keys * VALUE_BYTES).max(2)
}

/// A connection that sends `message` and never reads a byte.
fn stalled_connection(addr: SocketAddr, message: &[u8]) -> socket2::Socket {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    // Before connecting: the window is agreed on at the handshake.
    socket
        .set_recv_buffer_size(STALLED_RCVBUF_BYTES)
        .expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    let mut sent = 0;
    while sent < message.len() {
        sent += socket.send(&message[sent..]).expect("send the GETs");
    }
    socket
}

fn poll_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    for _ in 0..MAX_POLLS {
        if let Some(found) = check() {
            return found;
        }
        std::thread::sleep(POLL);
    }
    panic!("gave up waiting: {what}");
}

fn stats(client: &mut Client) -> BTreeMap<String, u64> {
    client.stats().expect("STATS")
}

/// DEL then SET each key to this generation's value; returns which SETs ran
/// (a refused one leaves its key deleted).
fn replace_all(client: &mut Client, keys: &[Vec<u8>], generation: usize) -> Vec<bool> {
    keys.iter()
        .enumerate()
        .map(|(i, key)| {
            let requests = [
                Request::Del(key.clone()),
                Request::Set(key.clone(), value(generation, i)),
            ];
            match client.call(&requests).expect("DEL + SET").as_slice() {
                [] => true,
                [Element::Error { code, .. }] if code == "OOM" => false,
                other => panic!("unexpected reply to DEL + SET: {other:?}"),
            }
        })
        .collect()
}

#[test]
fn values_held_by_unread_replies_count_against_the_memory_limit_and_are_returned_once_the_replies_are_gone(
) {
    let server = TestServer::start(NR_SHARDS, &["--max-memory-bytes", MAX_MEMORY]);
    let mut client = server.client();
    let keys = all_keys();
    assert!(replace_all(&mut client, &keys, 0)
        .iter()
        .all(|&stored| stored));
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(client.get(key).expect("GET"), Some(value(0, i)));
    }
    let baseline_rss = vm_rss_bytes(server.pid());

    // Each stalled connection reads every value of the current generation and
    // never takes its reply; then every value is replaced. The replaced values
    // stay alive for the stalled replies, on the shard that owns each key
    // (half of them were read across shards), until the limit refuses writes.
    let gets: Vec<Request> = (0..gets_per_key(keys.len()))
        .flat_map(|_| keys.iter().map(|key| Request::Get(key.clone())))
        .collect();
    let gets_message = encode_message(&gets);
    let mut stalled = Vec::new();
    let mut stored = Vec::new();
    for generation in 1..=MAX_STALLED {
        let gets_before = stats(&mut client)["gets"];
        stalled.push(stalled_connection(server.addr, &gets_message));
        poll_until("the stalled connection's GETs to run", || {
            (stats(&mut client)["gets"] >= gets_before + gets.len() as u64).then_some(())
        });
        stored = replace_all(&mut client, &keys, generation);
        if stored.contains(&false) {
            break;
        }
    }
    let nr_stalled = stalled.len();
    assert!(
        stored.contains(&false),
        "{nr_stalled} stalled connections each held a copy of all {} MiB of values, and no write \
         was refused over a {MAX_MEMORY} limit",
        (keys.len() * VALUE_BYTES) >> 20
    );
    let at_limit = stats(&mut client);
    let pinned = at_limit["reply_pinned_bytes"];
    assert!(
        pinned >= (nr_stalled * keys.len() * VALUE_BYTES) as u64,
        "every stalled connection pins its generation: {at_limit:?}"
    );
    assert!(
        at_limit["memory_bytes"] + pinned <= MAX_MEMORY_BYTES,
        "the limit covers pinned values: {at_limit:?}"
    );
    assert!(at_limit["oom_rejections"] > 0, "{at_limit:?}");

    // Reads keep working, on this connection and a new one: each key holds the
    // last generation, or is gone where its SET was refused.
    let mut fresh = server.client();
    for (i, key) in keys.iter().enumerate() {
        let expected = stored[i].then(|| value(nr_stalled, i));
        assert_eq!(client.get(key).expect("GET"), expected);
        assert_eq!(fresh.get(key).expect("GET"), expected);
    }

    // The stalled clients go away; their replies die with their connections.
    drop(stalled);
    poll_until("the pinned values to be freed", || {
        (stats(&mut client)["reply_pinned_bytes"] == 0).then_some(())
    });
    // ...and the memory goes back to the operating system. Kept by the
    // allocator, it would leave RSS at the baseline plus about everything that
    // was pinned; given back, RSS is at the baseline within a few MiB of
    // allocator slack (the table holds no more than it did then). Half of what
    // was pinned tells the two apart with room for that slack.
    let bound = baseline_rss + pinned / 2;
    let mut rss = 0;
    let fell_back = (0..MAX_POLLS).any(|_| {
        rss = vm_rss_bytes(server.pid());
        rss <= bound || {
            std::thread::sleep(POLL);
            false
        }
    });
    let report = format!(
        "RSS {} MiB before the stalled connections, {} MiB pinned at the limit, {} MiB after \
         they closed (bound {} MiB)",
        baseline_rss >> 20,
        pinned >> 20,
        rss >> 20,
        bound >> 20
    );
    assert!(fell_back, "{report}");
    eprintln!("{report}");

    // With the pinned memory gone, writes work again.
    let refusals = stats(&mut client)["oom_rejections"];
    assert!(replace_all(&mut client, &keys, nr_stalled + 1)
        .iter()
        .all(|&stored| stored));
    assert_eq!(stats(&mut client)["oom_rejections"], refusals);
}
