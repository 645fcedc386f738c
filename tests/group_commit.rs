//! The group commit of `--fsync always`, seen from outside through a
//! failpoint that holds a shard's log sync (`log::before_sync`):
//! - while one sync is in flight the shard keeps serving, and everything
//!   written meanwhile is made durable by the next single sync;
//! - a cross-shard ATOMIC's participants sync their PREPARE records in
//!   parallel: the coordinator asks the next participant while the previous
//!   one's sync is still running.
//!
//! Nothing here measures time: the failpoint makes the order deterministic.

mod common;

use common::logs::{log_path, records_so_far, Kind};
use common::{arm_failpoint, key_on_shard, start_log_with_http, wait_for_line};
use corekv::client::{Client, Element, Request};
use rmpv::Value;
use std::time::{Duration, Instant};

fn log_syncs(client: &mut Client) -> u64 {
    client.stats().expect("STATS")["log_syncs"]
}

#[test]
fn writes_that_arrive_during_a_sync_are_made_durable_by_one_more_sync() {
    const WRITERS: usize = 20;
    let temp = tempfile::tempdir().expect("temp dir");
    let (mut server, http) = start_log_with_http(&temp.path().join("data"), 1, &[]);
    let mut stats = server.client();
    stats.set(b"warm", Value::from(0)).expect("set");
    let before = log_syncs(&mut stats);
    arm_failpoint(http, "log::before_sync", "return");
    let addr = server.addr;
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            std::thread::spawn(move || {
                let mut client =
                    Client::connect(addr, Some(common::REPLY_TIMEOUT)).expect("connect");
                client
                    .set(format!("k{i}").as_bytes(), Value::from(i as u64))
                    .expect("an acknowledged SET")
            })
        })
        .collect();
    wait_for_line(&mut server, &["failpoint log::before_sync holds"]);
    // The shard keeps serving while the sync is held: it executes every
    // writer's SET (acknowledged only once synced) and answers reads.
    let deadline = Instant::now() + Duration::from_secs(15);
    while stats.stats().expect("STATS")["sets"] < (WRITERS + 1) as u64 {
        assert!(
            Instant::now() < deadline,
            "the shard stopped executing writes while a sync was held"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        stats.get(b"warm").expect("a read during the sync"),
        Some(Value::from(0))
    );
    arm_failpoint(http, "log::before_sync", "");
    for writer in writers {
        writer.join().expect("writer");
    }
    let syncs = log_syncs(&mut stats) - before;
    assert!(
        syncs <= 2,
        "{WRITERS} writes that arrived during one sync took {syncs} syncs"
    );
    for i in 0..WRITERS {
        assert_eq!(
            stats.get(format!("k{i}").as_bytes()).expect("get"),
            Some(Value::from(i as u64))
        );
    }
}

/// A cross-shard ATOMIC over shards 1 and 2: with shard 1's sync held, shard 2
/// is still asked to prepare (its PREPARE record appears), so the two syncs
/// overlap; the batch then commits whole.
#[test]
fn the_participants_of_a_cross_shard_batch_sync_their_prepares_in_parallel() {
    let temp = tempfile::tempdir().expect("temp dir");
    let (mut server, http) = start_log_with_http(&temp.path().join("data"), 3, &[]);
    let (k1, k2) = (key_on_shard("p", 1, 3), key_on_shard("p", 2, 3));
    arm_failpoint(http, "log::before_sync@1", "return");
    let addr = server.addr;
    let batch = {
        let (k1, k2) = (k1.clone(), k2.clone());
        std::thread::spawn(move || {
            let mut client = Client::connect(addr, Some(common::REPLY_TIMEOUT)).expect("connect");
            client.call(&[Request::Atomic(vec![
                Request::Set(k1, Value::from("one")),
                Request::Set(k2, Value::from("two")),
            ])])
        })
    };
    wait_for_line(&mut server, &["failpoint log::before_sync holds"]);
    let shard_2 = log_path(&server.data_dir, 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !records_so_far(&shard_2)
        .iter()
        .any(|kind| matches!(kind, Kind::Prepare(_)))
    {
        assert!(
            Instant::now() < deadline,
            "shard 2 was not asked to prepare while shard 1's sync was held"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    arm_failpoint(http, "log::before_sync@1", "");
    let reply = batch
        .join()
        .expect("batch thread")
        .expect("the batch's reply");
    assert_eq!(reply, Vec::<Element>::new(), "the batch committed");
    let mut client: Client = server.client();
    assert_eq!(client.get(&k1).expect("get"), Some(Value::from("one")));
    assert_eq!(client.get(&k2).expect("get"), Some(Value::from("two")));
}
