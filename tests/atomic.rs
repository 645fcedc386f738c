//! ATOMIC batches against the real server: semantics on one shard and across
//! shards, all-or-nothing aborts, and the concurrency guarantees of BRIEF §4
//! (bank invariant, opposite-order contention, hot-key versioned increments,
//! no plain reader ever seeing part of a batch).

mod common;

use common::keys::{key_on_shard, keys_on_every_shard};
use common::{test_seed, TestServer};
use corekv::client::{Client, Element, Request};
use rand::{Rng, SeedableRng};
use rmpv::Value;
use std::time::{Duration, Instant};

const NR_SHARDS: usize = 3;

/// Two keys owned by the same shard.
fn keys_on_one_shard(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let on_shard_0 = |name: &str| key_on_shard(&format!("{prefix}-{name}"), 0, NR_SHARDS);
    (on_shard_0("a"), on_shard_0("b"))
}

fn atomic(requests: Vec<Request>) -> Request {
    Request::Atomic(requests)
}

fn get(k: &[u8]) -> Request {
    Request::Get(k.to_vec())
}

fn set(k: &[u8], v: impl Into<Value>) -> Request {
    Request::Set(k.to_vec(), v.into())
}

fn int(element: &Element) -> i64 {
    match element {
        Element::Found(v) | Element::Versioned(v, _) => v.as_i64().expect("integer value"),
        other => panic!("expected a found value, got {other:?}"),
    }
}

fn conflict_message(elements: &[Element]) -> String {
    match elements {
        [Element::Error { code, message }] if code == "CONFLICT" => message.clone(),
        other => panic!("expected one CONFLICT element, got {other:?}"),
    }
}

#[test]
fn the_seeds_atomic_read_and_swap_returns_the_old_value() {
    let server = TestServer::start(NR_SHARDS, &[]);
    let mut client = server.client();
    client.set(b"k", "old".into()).expect("set");
    let reply = client
        .call(&[atomic(vec![get(b"k"), set(b"k", "new")])])
        .expect("call");
    assert_eq!(reply, [Element::Found("old".into())]);
    assert_eq!(client.get(b"k").expect("get"), Some("new".into()));
}

#[test]
fn an_aborted_batch_answers_one_conflict_element_in_its_place() {
    let server = TestServer::start(NR_SHARDS, &[]);
    let mut client = server.client();
    let keys = keys_on_every_shard("flat", 3, NR_SHARDS);
    let (a, b, c) = (&keys[0], &keys[1], &keys[2]);
    let batch = atomic(vec![
        set(a, 1),
        get(a),
        atomic(vec![set(b, 2), Request::GetV(b.to_vec())]),
        // c exists (set just before the batch): version 0 means "must be absent".
        Request::PutV(c.to_vec(), 3.into(), 0),
    ]);
    let reply = client.call(&[set(c, 0), batch, get(b)]).expect("call");
    assert_eq!(reply.len(), 2, "{reply:?}");
    conflict_message(&reply[..1]);
    assert_eq!(
        reply[1],
        Element::NotFound,
        "the batch's SET of b was not applied"
    );
    assert_eq!(client.get(a).expect("get a"), None);
    assert_eq!(client.getv(c).expect("getv c"), Some((0.into(), 1)));
}

#[test]
fn a_successful_cross_shard_batch_answers_every_result_in_order() {
    let server = TestServer::start(NR_SHARDS, &[]);
    let mut client = server.client();
    let keys = keys_on_every_shard("ok", 3, NR_SHARDS);
    let (a, b, c) = (&keys[0], &keys[1], &keys[2]);
    client.set(c, 0.into()).expect("set c");
    let batch = atomic(vec![
        set(a, 1),
        get(a),
        atomic(vec![
            set(b, 2),
            Request::GetV(b.to_vec()),
            atomic(vec![get(c)]),
        ]),
        Request::PutV(c.to_vec(), 3.into(), 1),
        Request::Rm(a.to_vec()),
        get(a),
    ]);
    let reply = client.call(&[batch, get(b)]).expect("call");
    assert_eq!(
        reply,
        [
            Element::Found(1.into()),
            Element::Versioned(2.into(), 1),
            Element::Found(0.into()),
            Element::Done(2),
            Element::Done(1),
            Element::NotFound,
            Element::Found(2.into()),
        ]
    );
    assert_eq!(client.getv(c).expect("getv c"), Some((3.into(), 2)));
}

#[test]
fn a_version_conflict_on_any_shard_aborts_the_whole_batch_and_names_the_key() {
    let server = TestServer::start(NR_SHARDS, &[]);
    let mut client = server.client();
    let keys = keys_on_every_shard("abort", 6, NR_SHARDS);
    for key in &keys {
        client.set(key, "before".into()).expect("set");
    }
    // The conflicting PUTV sits on each shard in turn: first, middle and last
    // participant, so both the early-abort and the roll-back paths run.
    for (i, bad) in keys.iter().enumerate().take(NR_SHARDS) {
        let mut batch: Vec<Request> = keys.iter().map(|k| set(k, "after")).collect();
        batch.push(Request::PutV(bad.clone(), "x".into(), 99));
        let reply = client.call(&[atomic(batch)]).expect("call");
        let message = conflict_message(&reply);
        assert!(
            message.contains(&String::from_utf8_lossy(bad).to_string()),
            "case {i}: {message}"
        );
        for key in &keys {
            assert_eq!(
                client.getv(key).expect("getv"),
                Some(("before".into(), 1)),
                "case {i}"
            );
        }
    }
    // A single-shard batch aborts the same way.
    let (x, y) = keys_on_one_shard("abort-one");
    client.set(&x, 1.into()).expect("set x");
    let reply = client
        .call(&[atomic(vec![
            set(&x, 2),
            set(&y, 2),
            Request::PutV(y.clone(), 3.into(), 7),
        ])])
        .expect("call");
    conflict_message(&reply);
    assert_eq!(client.getv(&x).expect("getv"), Some((1.into(), 1)));
    assert_eq!(client.get(&y).expect("get"), None);
    let stats = client.stats().expect("stats");
    assert_eq!(stats["atomic_aborts"], 4, "{stats:?}");
    assert_eq!(stats["keys"], 7, "{stats:?}");
}

#[test]
fn an_empty_atomic_answers_nothing_and_a_message_around_it_still_works() {
    let server = TestServer::start(NR_SHARDS, &[]);
    let mut client = server.client();
    let reply = client
        .call(&[
            set(b"e", 1),
            atomic(vec![]),
            get(b"e"),
            atomic(vec![atomic(vec![])]),
        ])
        .expect("call");
    assert_eq!(reply, [Element::Found(1.into())]);
}

#[test]
fn requests_around_a_cross_shard_batch_take_effect_in_message_order() {
    let server = TestServer::start(NR_SHARDS, &[]);
    let mut client = server.client();
    let keys = keys_on_every_shard("order", 3, NR_SHARDS);
    let (a, b) = (&keys[0], &keys[1]);
    let reply = client
        .call(&[
            set(a, 1),
            set(b, 1),
            atomic(vec![get(a), set(a, 2), get(b), set(b, 2)]),
            get(a),
            get(b),
            atomic(vec![set(a, 3), set(b, 3)]),
            get(b),
        ])
        .expect("call");
    let values: Vec<i64> = reply.iter().map(int).collect();
    assert_eq!(values, [1, 1, 2, 2, 3]);
}

/// Reads every account in one ATOMIC and returns the sum.
fn total_balance(client: &mut Client, accounts: &[Vec<u8>]) -> i64 {
    let reply = client
        .call(&[atomic(accounts.iter().map(|a| get(a)).collect())])
        .expect("read all balances");
    assert_eq!(reply.len(), accounts.len(), "{reply:?}");
    reply.iter().map(int).sum()
}

#[test]
fn transfers_between_accounts_on_every_shard_never_change_the_total_anyone_reads() {
    const NR_ACCOUNTS: usize = 9;
    const INITIAL: i64 = 1_000;
    const NR_TRANSFERRERS: usize = 6;
    const TRANSFERS_EACH: usize = 150;
    const NR_AUDITORS: usize = 2;
    const AUDITS_EACH: usize = 150;
    let seed = test_seed("bank");
    let server = TestServer::start(NR_SHARDS, &[]);
    let accounts = keys_on_every_shard("account", NR_ACCOUNTS, NR_SHARDS);
    let mut setup = server.client();
    for account in &accounts {
        setup.set(account, INITIAL.into()).expect("open account");
    }
    let expected_total = INITIAL * NR_ACCOUNTS as i64;
    std::thread::scope(|scope| {
        for t in 0..NR_TRANSFERRERS {
            let (accounts, mut client) = (&accounts, server.client());
            scope.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed + t as u64);
                let mut committed = 0;
                for _ in 0..TRANSFERS_EACH {
                    let from = rng.gen_range(0..NR_ACCOUNTS);
                    let to = (from + rng.gen_range(1..NR_ACCOUNTS)) % NR_ACCOUNTS;
                    committed += usize::from(transfer(
                        &mut client,
                        &accounts[from],
                        &accounts[to],
                        rng.gen_range(1..50),
                    ));
                }
                assert!(committed > 0, "transferrer {t} never committed");
            });
        }
        for _ in 0..NR_AUDITORS {
            let (accounts, mut client) = (&accounts, server.client());
            scope.spawn(move || {
                for audit in 0..AUDITS_EACH {
                    assert_eq!(
                        total_balance(&mut client, accounts),
                        expected_total,
                        "audit {audit}"
                    );
                }
            });
        }
    });
    assert_eq!(total_balance(&mut setup, &accounts), expected_total);
    let stats = setup.stats().expect("stats");
    assert!(stats["atomic_commits"] > 0, "{stats:?}");
}

/// Moves `amount` from one account to another with GETV + an ATOMIC of two
/// PUTVs; returns whether it committed (a conflict means someone else moved
/// money in between, which is the point).
fn transfer(client: &mut Client, from: &[u8], to: &[u8], amount: i64) -> bool {
    let reply = client
        .call(&[Request::GetV(from.to_vec()), Request::GetV(to.to_vec())])
        .expect("read balances");
    let versioned = |e: &Element| match e {
        Element::Versioned(v, version) => (v.as_i64().expect("balance"), *version),
        other => panic!("expected a balance, got {other:?}"),
    };
    let ((from_balance, from_version), (to_balance, to_version)) =
        (versioned(&reply[0]), versioned(&reply[1]));
    let batch = atomic(vec![
        Request::PutV(from.to_vec(), (from_balance - amount).into(), from_version),
        Request::PutV(to.to_vec(), (to_balance + amount).into(), to_version),
    ]);
    match client.call(&[batch]).expect("transfer").as_slice() {
        [Element::Done(_), Element::Done(_)] => true,
        [Element::Error { code, .. }] if code == "CONFLICT" => false,
        other => panic!("unexpected transfer reply {other:?}"),
    }
}

#[test]
fn clients_swapping_the_same_cross_shard_keys_in_opposite_orders_all_finish() {
    const ROUNDS_EACH: usize = 300;
    const TIME_LIMIT: Duration = Duration::from_secs(120);
    let server = TestServer::start(NR_SHARDS, &[]);
    let keys = keys_on_every_shard("swap", 3, NR_SHARDS);
    let (a, b, c) = (&keys[0], &keys[1], &keys[2]);
    let orders: [[&Vec<u8>; 3]; 4] = [[a, b, c], [c, b, a], [b, a, c], [c, a, b]];
    let started = Instant::now();
    std::thread::scope(|scope| {
        for (t, order) in orders.iter().enumerate() {
            let mut client = server.client();
            scope.spawn(move || {
                for round in 0..ROUNDS_EACH {
                    assert!(
                        started.elapsed() < TIME_LIMIT,
                        "client {t} stuck at round {round}"
                    );
                    let mut batch: Vec<Request> = order.iter().map(|k| get(k)).collect();
                    batch.extend(order.iter().map(|k| set(k, (t * 1000 + round) as i64)));
                    let reply = client.call(&[atomic(batch)]).expect("swap");
                    assert_eq!(reply.len(), 3, "round {round}: {reply:?}");
                }
            });
        }
    });
    // The last batch to commit wrote all three keys with one value.
    let mut client = server.client();
    let reply = client
        .call(&[atomic(vec![get(a), get(b), get(c)])])
        .expect("read");
    let values: Vec<i64> = reply.iter().map(int).collect();
    assert!(values.iter().all(|v| *v == values[0]), "{values:?}");
}

#[test]
fn versioned_increments_of_one_hot_key_count_every_success_and_report_every_conflict() {
    const NR_CLIENTS: usize = 8;
    const ATTEMPTS_EACH: usize = 200;
    let server = TestServer::start(NR_SHARDS, &[]);
    server.client().set(b"hot", 0.into()).expect("set");
    let (successes, conflicts): (Vec<usize>, Vec<usize>) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..NR_CLIENTS)
            .map(|_| {
                let mut client = server.client();
                scope.spawn(move || {
                    let (mut ok, mut conflict) = (0, 0);
                    for _ in 0..ATTEMPTS_EACH {
                        let (value, version) = client.getv(b"hot").expect("getv").expect("present");
                        let next = value.as_i64().expect("counter") + 1;
                        match client.putv(b"hot", next.into(), version).expect("putv") {
                            Ok(new_version) => {
                                assert_eq!(new_version, version + 1);
                                ok += 1;
                            }
                            Err(current) => {
                                assert!(current > version, "a conflict reports a newer version");
                                conflict += 1;
                            }
                        }
                    }
                    (ok, conflict)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .unzip()
    });
    let total_ok: usize = successes.iter().sum();
    let total_conflicts: usize = conflicts.iter().sum();
    assert_eq!(total_ok + total_conflicts, NR_CLIENTS * ATTEMPTS_EACH);
    let mut client = server.client();
    let (value, version) = client.getv(b"hot").expect("getv").expect("present");
    assert_eq!(value, Value::from(total_ok as i64));
    assert_eq!(version, 1 + total_ok as u64);
    let stats = client.stats().expect("stats");
    assert_eq!(stats["version_conflicts"], total_conflicts as u64);
}

#[test]
fn plain_reads_never_see_part_of_a_cross_shard_batch() {
    const NR_BATCHES: i64 = 400;
    const NR_READERS: usize = 3;
    let server = TestServer::start(NR_SHARDS, &[]);
    let keys = keys_on_every_shard("pair", 2, NR_SHARDS);
    let (a, b) = (&keys[0], &keys[1]);
    let mut writer = server.client();
    writer
        .call(&[atomic(vec![set(a, 0), set(b, 0)])])
        .expect("init");
    let done = std::sync::atomic::AtomicBool::new(false);
    let done = &done;
    std::thread::scope(|scope| {
        for _ in 0..NR_READERS {
            let mut reader = server.client();
            scope.spawn(move || {
                // a is always written before b is read, both by every batch: a
                // reader that sees batch n's a must then see b from n or later.
                let mut reads = 0;
                while !done.load(std::sync::atomic::Ordering::SeqCst) && reads < 20_000 {
                    let seen_a = reader
                        .get(a)
                        .expect("get a")
                        .and_then(|v| v.as_i64())
                        .expect("a");
                    let seen_b = reader
                        .get(b)
                        .expect("get b")
                        .and_then(|v| v.as_i64())
                        .expect("b");
                    assert!(
                        seen_b >= seen_a,
                        "read a={seen_a} then b={seen_b}: saw part of a batch"
                    );
                    reads += 1;
                }
            });
        }
        for n in 1..=NR_BATCHES {
            let reply = writer
                .call(&[atomic(vec![set(a, n), set(b, n)])])
                .expect("batch");
            assert!(reply.is_empty(), "{reply:?}");
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    });
}
