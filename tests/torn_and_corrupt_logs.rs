//! A log-engine server restarted on damaged logs: a torn tail (a cut record,
//! zero padding, appended garbage) is cut with a warning and nothing before it
//! is lost; damage followed by intact records refuses the start, naming file
//! and offset, and changes no byte, until `--salvage` keeps what precedes it.

mod common;

use common::crash::{assert_mentions, start_log, start_refused, stop, temp_data_dir};
use common::keys::{key_on_shard, show};
use common::logs::{append, log_len, log_path, read_log, snapshot, Kind};
use common::model::{getv_all, KeyState};
use common::test_seed;
use corekv::client::{Client, Request};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rmpv::Value;

/// Sets every key in `keys` with one SET per message in order, twice (so
/// versions are 2); returns the values set last.
fn write_twice(client: &mut Client, keys: &[Vec<u8>]) -> Vec<Value> {
    let value = |k: &[u8], round: u32| Value::from(format!("{}-round{round}", show(k)));
    for round in 1..=2 {
        for chunk in keys.chunks(10) {
            let sets: Vec<Request> = chunk
                .iter()
                .map(|k| Request::Set(k.clone(), value(k, round)))
                .collect();
            assert_eq!(client.call(&sets).expect("SET"), []);
        }
    }
    keys.iter().map(|k| value(k, 2)).collect()
}

fn assert_values(
    client: &mut Client,
    keys: &[Vec<u8>],
    values: &[Value],
    version: u64,
    context: &str,
) {
    for ((key, value), found) in keys.iter().zip(values).zip(getv_all(client, keys)) {
        assert_eq!(
            found,
            KeyState::Present(value.clone(), version),
            "{context}: key {}",
            show(key)
        );
    }
}

// ---------------------------------------------------------------------------
// 3. Torn tails
// ---------------------------------------------------------------------------

#[test]
fn a_torn_tail_a_zero_padding_and_appended_garbage_are_cut_and_nothing_before_is_lost() {
    let seed = test_seed("a_torn_tail_is_cut");
    let mut rng = StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let last_log = log_path(&data_dir, 1);
    let keys: Vec<Vec<u8>> = (0..60).map(|i| format!("torn-{i}").into_bytes()).collect();
    let last_key = key_on_shard("torn-last", 1, 2);

    let mut server = start_log(&data_dir, 2, &[]);
    let mut client = server.client();
    let values = write_twice(&mut client, &keys);
    client
        .set(&last_key, "the last record".into())
        .expect("SET last");
    drop(client);
    stop(&mut server, libc::SIGTERM);

    // A write cut short: the last record loses its final 3 bytes.
    let (bytes, records) = read_log(&last_log);
    let last = records.last().expect("shard 1 logged something").clone();
    assert_eq!(last.kind, Kind::Put(last_key.clone(), 1), "{records:?}");
    let cut_len = bytes.len() - 3;
    std::fs::write(&last_log, &bytes[..cut_len]).expect("cut the log");
    let mut server = start_log(&data_dir, 2, &[]);
    let cut_bytes = (cut_len - last.start).to_string();
    assert_mentions(&server.stderr(), &["shard-1.log", "cutting", &cut_bytes]);
    let mut client = server.client();
    assert_values(&mut client, &keys, &values, 2, "after a torn tail");
    assert_eq!(
        client.getv(&last_key).expect("GETV"),
        None,
        "the cut record is gone"
    );
    assert_eq!(
        std::fs::metadata(&last_log).expect("log").len(),
        last.start as u64
    );
    drop(client);
    stop(&mut server, libc::SIGTERM);

    // Zeros after the records: space allocated ahead of the writer, kept as it
    // is, without a warning.
    let intact = std::fs::read(&last_log).expect("log");
    append(&last_log, &[0u8; 4096]);
    let mut server = start_log(&data_dir, 2, &[]);
    assert!(
        !server.stderr().contains("cutting"),
        "zeros are not a torn tail:\n{}",
        server.stderr()
    );
    let mut client = server.client();
    assert_values(&mut client, &keys, &values, 2, "after zeros");
    drop(client);
    stop(&mut server, libc::SIGTERM);
    assert_eq!(log_len(&last_log), intact.len() as u64);

    // Random garbage after them: a torn tail, cut with the zeros before it.
    let mut garbage = vec![0u8; 1 + rng.gen_range(0..2000)];
    rng.fill(&mut garbage[..]);
    garbage[0] = 0xff; // not a zero: the garbage starts where it is appended
    append(&last_log, &garbage);
    let mut server = start_log(&data_dir, 2, &[]);
    assert_mentions(
        &server.stderr(),
        &[
            "shard-1.log",
            &format!("cutting {} bytes", 4096 + garbage.len()),
        ],
    );
    let mut client = server.client();
    assert_values(&mut client, &keys, &values, 2, "after random garbage");
    assert_eq!(
        std::fs::read(&last_log).expect("log"),
        intact,
        "random garbage is still in the log"
    );
    drop(client);
    stop(&mut server, libc::SIGTERM);

    // The writer continues at the cut: after a new write the next start finds
    // an intact log (no garbage left between the old and the new records).
    let mut server = start_log(&data_dir, 2, &[]);
    let mut client = server.client();
    client.set(&last_key, "after the cut".into()).expect("SET");
    drop(client);
    stop(&mut server, libc::SIGTERM);
    let server = start_log(&data_dir, 2, &[]);
    let mut client = server.client();
    assert_eq!(
        client.getv(&last_key).expect("GETV"),
        Some(("after the cut".into(), 1))
    );
    assert_values(&mut client, &keys, &values, 2, "after new writes");
    read_log(&last_log);
}

// ---------------------------------------------------------------------------
// 4. Corruption in the middle
// ---------------------------------------------------------------------------

#[test]
fn a_corrupt_record_in_the_middle_refuses_the_start_without_touching_a_byte_until_salvage() {
    let (_temp, data_dir) = temp_data_dir();
    let damaged_log = log_path(&data_dir, 0);
    let shard_0: Vec<Vec<u8>> = (0..40)
        .map(|i| key_on_shard(&format!("mid-a{i}"), 0, 2))
        .collect();
    let shard_1: Vec<Vec<u8>> = (0..40)
        .map(|i| key_on_shard(&format!("mid-b{i}"), 1, 2))
        .collect();
    let mut server = start_log(&data_dir, 2, &[]);
    let mut client = server.client();
    let mut values = Vec::new();
    for (i, (a, b)) in shard_0.iter().zip(&shard_1).enumerate() {
        let (va, vb) = (Value::from(format!("a{i}")), Value::from(format!("b{i}")));
        assert_eq!(
            client
                .call(&[
                    Request::Set(a.clone(), va.clone()),
                    Request::Set(b.clone(), vb.clone())
                ])
                .expect("SET"),
            []
        );
        values.push((va, vb));
    }
    drop(client);
    stop(&mut server, libc::SIGTERM);

    // Flip one byte inside the value of shard 0's fourth record.
    let (mut bytes, records) = read_log(&damaged_log);
    assert_eq!(records.len(), shard_0.len(), "{records:?}");
    let damaged = records[3].clone();
    assert_eq!(damaged.kind, Kind::Put(shard_0[3].clone(), 1));
    bytes[damaged.end - 1] ^= 0x55;
    std::fs::write(&damaged_log, &bytes).expect("write damaged log");
    let before = snapshot(&data_dir);

    let stderr = start_refused(&data_dir, 2, &[]);
    let offset = format!("offset {}", damaged.start);
    assert_mentions(
        &stderr,
        &[&damaged_log.display().to_string(), &offset, "--salvage"],
    );
    assert!(
        before == snapshot(&data_dir),
        "a refused start changed the data directory"
    );
    // Also with another shard count: the refusal comes before any resharding.
    start_refused(&data_dir, 3, &[]);
    assert!(
        before == snapshot(&data_dir),
        "a refused reshard changed the data directory"
    );

    let mut server = start_log(&data_dir, 2, &["--salvage"]);
    assert_mentions(&server.stderr(), &["shard-0.log", "salvag"]);
    let mut client = server.client();
    for (i, ((a, b), (va, vb))) in shard_0.iter().zip(&shard_1).zip(&values).enumerate() {
        let expected_a = if i < 3 { Some((va.clone(), 1)) } else { None };
        assert_eq!(client.getv(a).expect("GETV"), expected_a, "shard 0 key {i}");
        assert_eq!(
            client.getv(b).expect("GETV"),
            Some((vb.clone(), 1)),
            "shard 1 key {i}"
        );
    }
    drop(client);
    stop(&mut server, libc::SIGTERM);
    assert_eq!(
        std::fs::metadata(&damaged_log).expect("log").len(),
        damaged.start as u64
    );
    // Salvaged once, the directory starts normally again.
    drop(start_log(&data_dir, 2, &[]));
}
