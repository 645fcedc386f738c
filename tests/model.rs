//! Model test: many connections run seeded random GET/SET/DEL/GETV/PUTV/RM
//! messages against a 4-shard server, and every result element is checked
//! against the reference model of what the server must hold
//! (tests/common/model.rs).
//!
//! Each thread owns a disjoint set of keys, so the result of every one of its
//! requests is determined by its own earlier requests alone, whatever the other
//! threads do at the same time; the model is exact, not a set of allowed
//! outcomes. Threads also pipeline: some bursts queue several messages before
//! reading their replies. At the end the union of the models must match the
//! server's state key by key and its STATS counters exactly.
//!
//! Replay a failure with the seed the test prints: `COREKV_TEST_SEED=<seed>`.

mod common;

use common::model::Model;
use common::{TestServer, REPLY_TIMEOUT};
use corekv::client::{decode_reply, Client, Element, Request};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rmpv::Value;
use std::net::SocketAddr;

const NR_SHARDS: usize = 4;
const NR_THREADS: usize = 8;
const KEYS_PER_THREAD: usize = 64;
/// Requests each thread sends; bounds the test by count, not by time.
const OPS_PER_THREAD: usize = 3_000;
const MAX_OPS_PER_MESSAGE: usize = 8;
/// Messages queued before their replies are read, at most.
const MAX_BURST: usize = 4;

/// A random msgpack value; `depth` bounds nesting.
fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    let kinds = if depth == 0 { 8 } else { 10 };
    match rng.gen_range(0..kinds) {
        0 => Value::Nil,
        1 => Value::Boolean(rng.gen()),
        2 => Value::from(rng.gen::<i64>()),
        3 => Value::from(rng.gen_range(0u64..300)),
        4 => Value::F64(rng.gen_range(-1e9..1e9)),
        5 => {
            let len = rng.gen_range(0..40);
            let s: String = (0..len).map(|_| rng.gen_range('a'..='z')).collect();
            Value::from(s)
        }
        6 => {
            let len = if rng.gen_ratio(1, 50) {
                rng.gen_range(1_000..5_000)
            } else {
                rng.gen_range(0..64)
            };
            Value::Binary((0..len).map(|_| rng.gen()).collect())
        }
        7 => {
            let len = rng.gen_range(0..20);
            Value::Ext(rng.gen(), (0..len).map(|_| rng.gen()).collect())
        }
        8 => {
            let len = rng.gen_range(0..5);
            Value::Array((0..len).map(|_| random_value(rng, depth - 1)).collect())
        }
        _ => {
            let len = rng.gen_range(0..4);
            let entries = (0..len)
                .map(|i| (Value::from(format!("f{i}")), random_value(rng, depth - 1)))
                .collect();
            Value::Map(entries)
        }
    }
}

/// A random request on one of `keys`. PUTV mostly names the right version, so
/// that both outcomes stay common.
fn random_request(rng: &mut StdRng, keys: &[Vec<u8>], model: &Model) -> Request {
    let key = keys[rng.gen_range(0..keys.len())].clone();
    match rng.gen_range(0..100) {
        0..=19 => Request::Get(key),
        20..=44 => Request::Set(key, random_value(rng, 2)),
        45..=52 => Request::Del(key),
        53..=67 => Request::GetV(key),
        68..=89 => {
            let current = model.state(&key).version();
            let expected = match rng.gen_range(0..8) {
                0..=4 => current,
                5 => 0,
                6 => current + rng.gen_range(1..3),
                _ => current.saturating_sub(1),
            };
            Request::PutV(key, random_value(rng, 2), expected)
        }
        _ => Request::Rm(key),
    }
}

/// The keys thread `thread` owns.
fn thread_keys(thread: usize) -> Vec<Vec<u8>> {
    (0..KEYS_PER_THREAD)
        .map(|i| format!("model:t{thread}:k{i}").into_bytes())
        .collect()
}

/// One thread's run: random bursts of random messages, every reply checked.
fn run_thread(addr: SocketAddr, seed: u64, thread: usize) -> Model {
    let thread_seed = seed ^ (thread as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut rng = StdRng::seed_from_u64(thread_seed);
    let mut client = Client::connect(addr, Some(REPLY_TIMEOUT)).expect("connect");
    let keys = thread_keys(thread);
    let mut model = Model::default();
    let mut nr_ops = 0;
    let mut nr_messages = 0;
    while nr_ops < OPS_PER_THREAD {
        // Expected elements are computed as the requests are generated: the
        // server will run them in exactly this order, so PUTV versions are
        // chosen from the state the server will be in.
        let mut queued: Vec<(Vec<Request>, Vec<Element>)> = Vec::new();
        for _ in 0..rng.gen_range(1..=MAX_BURST) {
            let len = rng.gen_range(1..=MAX_OPS_PER_MESSAGE);
            let mut requests = Vec::with_capacity(len);
            let mut expected = Vec::new();
            for _ in 0..len {
                let request = random_request(&mut rng, &keys, &model);
                expected.extend(model.apply(&request));
                requests.push(request);
            }
            nr_ops += len;
            client.send_message(&requests).expect("send");
            queued.push((requests, expected));
        }
        client.flush().expect("flush");
        for (requests, expected) in queued {
            let body = client.recv_reply().expect("reply");
            let got = decode_reply(&body).expect("well-formed reply");
            assert_eq!(
                got, expected,
                "seed {seed}, thread {thread}, message {nr_messages}: reply to {requests:?}"
            );
            nr_messages += 1;
        }
    }
    model
}

/// Reads back every key of every model.
fn check_final_state(client: &mut Client, models: &[Model], seed: u64) {
    for (thread, model) in models.iter().enumerate() {
        model.check(client, &format!("seed {seed}: thread {thread}'s keys"));
    }
}

#[test]
fn random_ops_on_many_connections_match_a_hashmap_model() {
    let seed = common::test_seed("random_ops_on_many_connections_match_a_hashmap_model");
    let server = TestServer::start(NR_SHARDS, &[]);
    let addr = server.addr;
    let models: Vec<Model> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..NR_THREADS)
            .map(|thread| scope.spawn(move || run_thread(addr, seed, thread)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });

    // STATS first: nothing but the threads' requests has run yet, so every
    // counter is exactly the sum of what the models counted.
    let mut client = server.client();
    let stats = client.stats().expect("STATS");
    let nr_keys: usize = models.iter().map(Model::nr_keys).sum();
    let value_bytes: usize = models
        .iter()
        .flat_map(Model::values)
        .map(|value| common::pack(value).len())
        .sum();
    assert_eq!(stats["keys"], nr_keys as u64, "seed {seed}: {stats:?}");
    assert_eq!(
        stats["value_bytes"], value_bytes as u64,
        "seed {seed}: {stats:?}"
    );
    for name in [
        "gets",
        "hits",
        "misses",
        "sets",
        "deletes",
        "version_conflicts",
    ] {
        let expected: u64 = models.iter().map(|m| m.counter(name)).sum();
        assert_eq!(stats[name], expected, "seed {seed}: {name} in {stats:?}");
    }
    assert_eq!(stats["shards"], NR_SHARDS as u64, "{stats:?}");
    assert_eq!(stats["oom_rejections"], 0, "{stats:?}");
    // The random ops really exercised every kind of outcome.
    for name in ["hits", "misses", "version_conflicts", "deletes"] {
        assert!(
            stats[name] > 0,
            "seed {seed}: no {name} at all in {stats:?}"
        );
    }
    assert!(nr_keys > 0, "seed {seed}: every key ended deleted");

    check_final_state(&mut client, &models, seed);
}
