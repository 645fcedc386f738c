//! The disk engine places every record of at most 4 KiB within one 4 KiB
//! block of its log file (a PAD record fills the rest of a block before a
//! record that would cross it), so a GET of such a value is one aligned
//! 4 KiB read; the log engine's files are what they always were.
//!
//! Records are aimed at the edges of blocks: each test reads where the log
//! ends and sizes the next values so that their records end exactly at a
//! boundary, one byte before it, one after it, and leave 12, 13 or 14 bytes
//! of a block (a PAD record takes at least 13). The files are then checked
//! against the rule, record by record.

mod common;

use common::crash::{stop, temp_data_dir};
use common::logs::log_path;
use common::{
    assert_reads_back, force_compaction, nr_compactions, pack, random_bin, run_backup, start_on,
    stat, test_seed, wait_for_line,
};
use corekv::client::{Client, Element, Request};
use corekv::log::format::{self, Decoded, Effect, Framing, Record};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rmpv::Value;
use std::collections::BTreeMap;
use std::path::Path;

const BLOCK: u64 = 4096;
/// A record's header: len, body_crc, head_crc.
const HEADER: u64 = 12;
/// The smallest PAD record: a header and its kind byte.
const MIN_PAD: u64 = HEADER + 1;
/// Keys are this long, so a record's size follows from its value's.
const KEY_BYTES: usize = 10;
/// A PUT record of a `KEY_BYTES` key, without its value's msgpack bytes.
const PUT_OVERHEAD: u64 = HEADER + 1 + 4 + KEY_BYTES as u64 + 8 + 4;
/// A BATCH record without its PUT bodies: header, kind, count.
const BATCH_OVERHEAD: u64 = HEADER + 1 + 4;
/// The disk engine, with every GET a read of the file (no cache of hot values).
const DISK_FLAGS: [&str; 4] = ["--engine", "disk", "--disk-cache-bytes", "0"];

/// The padding the rule puts at file offset `at` before a record of `len`
/// bytes (written here again, from the rule's words, to check the server's).
fn rule_padding(at: u64, len: u64) -> u64 {
    let left = BLOCK - at % BLOCK;
    if len > BLOCK || len <= left {
        0
    } else if left < MIN_PAD {
        left + BLOCK
    } else {
        left
    }
}

/// The bytes of a msgpack bin value whose encoding takes `encoded` bytes, if
/// one does (no bin encodes in 258 bytes, for one).
fn bin_of_encoded(encoded: u64) -> Option<usize> {
    if encoded > 2 * BLOCK {
        return None;
    }
    [2u64, 3, 5]
        .into_iter()
        .filter_map(|head| encoded.checked_sub(head))
        .find(|&n| pack(&Value::Binary(vec![0; n as usize])).len() as u64 == encoded)
        .map(|n| n as usize)
}

/// What a key holds, and the size of the record that wrote it.
type Written = BTreeMap<Vec<u8>, (Value, u64)>;

/// Where the writes of a test stand: the log's end (a file offset, modulo a
/// block as good as any) and what every key holds.
struct Plan {
    rng: StdRng,
    end: u64,
    nr_keys: usize,
    written: Written,
}

impl Plan {
    fn key(&mut self) -> Vec<u8> {
        self.nr_keys += 1;
        let key = format!("k{:09}", self.nr_keys).into_bytes();
        assert_eq!(key.len(), KEY_BYTES);
        key
    }

    /// A random value whose PUT body (no header) is `body` bytes, if any is.
    fn value_for_body(&mut self, body: u64) -> Option<Value> {
        let n = bin_of_encoded(body.checked_sub(PUT_OVERHEAD - HEADER)?)?;
        Some(random_bin(&mut self.rng, n))
    }

    /// A SET whose record is `record` bytes and moves `end` on by the rule.
    fn set_of_record(&mut self, record: u64) -> Option<Request> {
        let value = self.value_for_body(record.checked_sub(HEADER)?)?;
        let key = self.key();
        self.end += rule_padding(self.end, record) + record;
        self.written.insert(key.clone(), (value.clone(), record));
        Some(Request::Set(key, value))
    }

    /// An ATOMIC of two SETs whose BATCH record is `record` bytes.
    fn atomic_of_record(&mut self, record: u64) -> Option<Request> {
        let first_body = PUT_OVERHEAD - HEADER + 2 + 40;
        let first = self.value_for_body(first_body)?;
        let second = self.value_for_body(record.checked_sub(BATCH_OVERHEAD + first_body)?)?;
        let (a, b) = (self.key(), self.key());
        self.end += rule_padding(self.end, record) + record;
        self.written.insert(a.clone(), (first.clone(), record));
        self.written.insert(b.clone(), (second.clone(), record));
        Some(Request::Atomic(vec![
            Request::Set(a, first),
            Request::Set(b, second),
        ]))
    }

    /// Records aimed at the edges of the block the log ends in: their sizes
    /// leave `edge` bytes of it (−1: one more than it has, so the record
    /// moves to the next block), each followed by a small record that meets
    /// the gap left. An ATOMIC batch if `atomic`. Records too small for a
    /// PUT of a key are skipped (a filler moves the log on first).
    fn aimed_at_edges(&mut self, atomic: bool) -> Vec<(Request, u64)> {
        let mut requests = Vec::new();
        for edge in [0i64, 1, -1, 12, 13, 14, 0] {
            let left = BLOCK - self.end % BLOCK;
            let record = u64::try_from(left as i64 - edge).ok();
            let made = match (atomic, record) {
                (_, None) => None,
                (true, Some(record)) => self.atomic_of_record(record),
                (false, Some(record)) => self.set_of_record(record),
            };
            // Too small a place: a block-sized filler, then the next edge.
            let made = made.or_else(|| self.set_of_record(BLOCK - 200));
            requests.extend(made.map(|request| (request, self.end)));
            let small = self.rng.gen_range(PUT_OVERHEAD + 2..PUT_OVERHEAD + 200);
            let made = self.set_of_record(small);
            requests.extend(made.map(|request| (request, self.end)));
        }
        // Sizes at the rule's limits, wherever they fall.
        for record in [
            BLOCK - 14,
            BLOCK - 13,
            BLOCK - 12,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
        ] {
            let made = self.set_of_record(record);
            requests.extend(made.map(|request| (request, self.end)));
        }
        requests
    }
}

/// Sends `requests` in one message and checks every reply is OK.
fn call_ok(client: &mut Client, requests: &[(Request, u64)]) {
    let requests: Vec<Request> = requests.iter().map(|(r, _)| r.clone()).collect();
    let replies = client.call(&requests).expect("the writes");
    for reply in replies {
        assert!(
            !matches!(reply, Element::Error { .. }),
            "a write failed: {reply:?}"
        );
    }
}

/// Every record of the log file at `path`: offset, size, whether it is a
/// PAD; and where the intact records end.
fn records_of(path: &Path) -> (Vec<(u64, u64, bool)>, u64) {
    let bytes = std::fs::read(path).expect("read the log");
    let (framing, parsed, end) = format::parse_file(&bytes).expect("a log file");

    let mut records = Vec::new();
    for (i, (at, record)) in parsed.iter().enumerate() {
        let next = parsed.get(i + 1).map_or(end, |n| n.0);
        let at = *at as u64;
        records.push((at, next as u64 - at, *record == Record::Pad));
    }
    // Nothing after the records but the zeros of space allocated ahead.
    let rest = &bytes[end..];
    assert!(
        rest.iter().all(|&b| b == 0)
            || matches!(format::decode_at(&bytes, end, framing), Decoded::Incomplete),
        "the log is intact to its end"
    );
    (records, end as u64)
}

/// Checks the placement rule on the log of `data_dir` (shard 0).
fn assert_placed_by_the_rule(data_dir: &Path, minimal: bool) -> (usize, usize) {
    assert_file_placed_by_the_rule(&log_path(data_dir, 0), minimal)
}

/// Checks the placement rule on the log file at `path`: every record of at
/// most a block lies in one block; with `minimal`, PAD records stand exactly
/// where the rule puts them and nowhere else (a compacted file also has the
/// PAD that keeps its tail's records in their blocks). Returns how many
/// PADs, and records ending exactly at a boundary, there are.
fn assert_file_placed_by_the_rule(path: &Path, minimal: bool) -> (usize, usize) {
    let (records, _) = records_of(path);
    let (mut nr_pads, mut nr_at_boundary) = (0, 0);
    let mut pads_from: Option<u64> = None;
    for &(at, len, pad) in &records {
        if pad {
            nr_pads += 1;
            pads_from.get_or_insert(at);
            continue;
        }
        if len <= BLOCK {
            assert_eq!(
                at / BLOCK,
                (at + len - 1) / BLOCK,
                "a record of {len} bytes at offset {at} crosses a block boundary"
            );
        }
        if minimal {
            let from = pads_from.unwrap_or(at);
            assert_eq!(
                at - from,
                rule_padding(from, len),
                "padding before the record of {len} bytes at offset {at}"
            );
        }
        nr_at_boundary += usize::from((at + len) % BLOCK == 0);
        pads_from = None;
    }
    (nr_pads, nr_at_boundary)
}

/// GETs every key once, one GET per message, checking each value byte for
/// byte and that a value whose record fits a block costs exactly one 4 KiB
/// read (STATS `disk_read_bytes`). A compaction rewrites each value in a
/// record of its own, no larger than the one that wrote it. A value under
/// 64 bytes is kept in memory too: read from disk at most once (after a
/// start from a hint file), else not at all.
fn assert_read_back_one_block_each(client: &mut Client, written: &Written) {
    let mut nr_checked = 0;
    for (key, (value, record)) in written {
        let before = stat(client, "disk_read_bytes");
        common::assert_reads_back(client, key, value, "a value placed in blocks");
        let read = stat(client, "disk_read_bytes") - before;
        if pack(value).len() < 64 {
            assert!(
                read == 0 || read == BLOCK,
                "GET of {} (a small value) read {read} bytes",
                String::from_utf8_lossy(key)
            );
            nr_checked += 1;
        } else if *record <= BLOCK {
            assert_eq!(
                read,
                BLOCK,
                "GET of {} ({record}-byte record) read {read} bytes",
                String::from_utf8_lossy(key)
            );
            nr_checked += 1;
        }
    }
    assert!(nr_checked > written.len() / 2, "{nr_checked} GETs checked");
}

/// The end of the log of `data_dir` (shard 0).
fn log_end(data_dir: &Path) -> u64 {
    records_of(&log_path(data_dir, 0)).1
}

#[test]
fn records_at_the_edges_of_blocks_are_placed_read_back_and_survive_restarts_and_compaction() {
    let seed = test_seed("disk blocks");
    let (_temp, data_dir) = temp_data_dir();
    let mut flags = DISK_FLAGS.to_vec();
    flags.extend(["--compact-min-bytes", "65536"]);
    let mut server = start_on(&data_dir, 1, &flags);
    let mut client = server.client();
    let mut plan = Plan {
        rng: StdRng::seed_from_u64(seed),
        end: log_end(&data_dir),
        nr_keys: 0,
        written: BTreeMap::new(),
    };
    // Each edge in a message of its own, planned from the log's real end…
    for _ in 0..3 {
        for request in plan.aimed_at_edges(false) {
            let end = request.1;
            call_ok(&mut client, &[request]);
            assert_eq!(log_end(&data_dir), end, "the log ends where the rule says");
        }
    }
    // …all of them in one message, and as ATOMIC batches in one message.
    for atomic in [false, true, false] {
        let requests = plan.aimed_at_edges(atomic);
        call_ok(&mut client, &requests);
        assert_eq!(log_end(&data_dir), plan.end, "atomic: {atomic}");
    }
    let (nr_pads, nr_at_boundary) = assert_placed_by_the_rule(&data_dir, true);
    assert!(nr_pads >= 20, "{nr_pads} PAD records");
    assert!(
        nr_at_boundary >= 10,
        "{nr_at_boundary} records end at a boundary"
    );
    assert_read_back_one_block_each(&mut client, &plan.written);

    for signal in [libc::SIGTERM, libc::SIGKILL] {
        stop(&mut server, signal);
        server = start_on(&data_dir, 1, &flags);
        client = server.client();
        assert_read_back_one_block_each(&mut client, &plan.written);
        // Appends after a restart go on by the rule from where the log ends.
        plan.end = log_end(&data_dir);
        let requests = plan.aimed_at_edges(false);
        call_ok(&mut client, &requests);
        assert_placed_by_the_rule(&data_dir, true);
    }

    let (filler, value, _) = force_compaction(&mut server, &mut client, 0, 1);
    let filler_record = PUT_OVERHEAD + pack(&value).len() as u64;
    plan.written.insert(filler, (value, filler_record));
    // Writes behind the compaction land in the new file by the rule too.
    plan.end = log_end(&data_dir);
    for request in plan.aimed_at_edges(true) {
        call_ok(&mut client, &[request]);
    }
    assert_placed_by_the_rule(&data_dir, false);
    assert_read_back_one_block_each(&mut client, &plan.written);
    stop(&mut server, libc::SIGKILL);
    server = start_on(&data_dir, 1, &flags);
    client = server.client();
    assert_placed_by_the_rule(&data_dir, false);
    assert_read_back_one_block_each(&mut client, &plan.written);
}

#[test]
fn a_get_of_a_value_whose_record_fits_a_block_reads_exactly_one_block() {
    let seed = test_seed("one block per GET");
    let mut rng = StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let mut server = start_on(&data_dir, 1, &DISK_FLAGS);
    let mut client = server.client();
    let mut written = BTreeMap::new();
    // Values of every size class up to a whole block's record, in random
    // order, so they fall at every offset of their blocks.
    let max_value = (BLOCK - PUT_OVERHEAD - 3) as usize;
    for i in 0..300usize {
        let len = match i % 3 {
            0 => rng.gen_range(1..=200),
            1 => rng.gen_range(200..=2000),
            _ => rng.gen_range(2000..=max_value),
        };
        let key = format!("v{i:09}").into_bytes();
        let value = random_bin(&mut rng, len);
        client.set(&key, value.clone()).expect("SET");
        let record = PUT_OVERHEAD + pack(&value).len() as u64;
        written.insert(key, (value, record));
    }
    assert_read_back_one_block_each(&mut client, &written);
    stop(&mut server, libc::SIGTERM);
}

#[test]
fn the_log_engine_writes_the_same_writes_back_to_back_with_no_pad_records() {
    let seed = test_seed("log engine unpadded");
    let (_temp, data_dir) = temp_data_dir();
    let mut server = start_on(&data_dir, 1, &["--engine", "log"]);
    let mut client = server.client();
    let mut plan = Plan {
        rng: StdRng::seed_from_u64(seed),
        end: log_end(&data_dir),
        nr_keys: 0,
        written: BTreeMap::new(),
    };
    let mut sent = Vec::new();
    for atomic in [false, true] {
        // The plan is the disk engine's; here the records go back to back.
        let requests = plan.aimed_at_edges(atomic);
        call_ok(&mut client, &requests);
        sent.extend(requests);
    }
    stop(&mut server, libc::SIGTERM);
    // The file is exactly the records of these writes, as this format has
    // always encoded them: no PAD, no gap.
    let bytes = std::fs::read(log_path(&data_dir, 0)).expect("read the log");
    let (Framing::Epoch(epoch), _, end) = format::parse_file(&bytes).expect("a log file") else {
        panic!("a log with a file header");
    };
    let mut expected = bytes[..format::FILE_HEADER_BYTES].to_vec();
    for (request, _) in &sent {
        let put = |request: &Request| match request {
            Request::Set(key, value) => (key.clone(), pack(value)),
            other => panic!("{other:?}"),
        };
        match request {
            Request::Atomic(sets) => {
                let owned: Vec<_> = sets.iter().map(put).collect();
                let effects: Vec<Effect> = owned
                    .iter()
                    .map(|(key, value)| Effect::Put {
                        key,
                        version: 1,
                        value,
                        deadline: None,
                    })
                    .collect();
                format::write_batch(&mut expected, &effects);
            }
            set => {
                let (key, value) = put(set);
                let effect = Effect::Put {
                    key: &key,
                    version: 1,
                    value: &value,
                    deadline: None,
                };
                format::write_effect(&mut expected, &effect);
            }
        }
    }
    format::stamp(&mut expected[format::FILE_HEADER_BYTES..], epoch);
    assert_eq!(end, expected.len(), "the log's length");
    assert!(bytes[..end] == expected[..], "the log's bytes");
    let (records, _) = records_of(&log_path(&data_dir, 0));
    assert!(records.iter().all(|&(_, _, pad)| !pad), "no PAD record");
}

#[test]
fn a_backup_and_a_shard_count_change_write_their_logs_in_blocks_too() {
    let seed = test_seed("blocks in backups and resharding");
    let (temp, data_dir) = temp_data_dir();
    let mut flags = DISK_FLAGS.to_vec();
    flags.extend(["--http-addr", "127.0.0.1:0"]);
    let mut server = start_on(&data_dir, 1, &flags);
    let http = common::http_addr(&mut server);
    let mut client = server.client();
    let mut plan = Plan {
        rng: StdRng::seed_from_u64(seed),
        end: log_end(&data_dir),
        nr_keys: 0,
        written: BTreeMap::new(),
    };
    for atomic in [false, true, false] {
        let requests = plan.aimed_at_edges(atomic);
        call_ok(&mut client, &requests);
    }
    let backup = temp.path().join("backup");
    run_backup(&backup, http);
    let (nr_pads, _) = assert_file_placed_by_the_rule(&log_path(&backup, 0), true);
    assert!(nr_pads > 0, "the backup's records needed placing");
    stop(&mut server, libc::SIGTERM);

    // Two shards instead of one: every key is rewritten into a new set of logs.
    let mut server = start_on(&data_dir, 2, &DISK_FLAGS);
    let mut client = server.client();
    for shard in 0..2 {
        assert_file_placed_by_the_rule(&log_path(&data_dir, shard), true);
    }
    assert_read_back_one_block_each(&mut client, &plan.written);
    stop(&mut server, libc::SIGTERM);

    let mut server = start_on(&backup, 1, &DISK_FLAGS);
    let mut client = server.client();
    assert_read_back_one_block_each(&mut client, &plan.written);
    stop(&mut server, libc::SIGTERM);
}

/// A snapshot of records that leave much of each block to padding takes
/// more of the file than the records' sum: a shard that compared its log
/// with that sum alone found the new log "more than twice the live data"
/// at once, or after a few more writes, and compacted it again and again,
/// pacing its writes all the while. Measured instead, a compacted log is
/// compacted again only once it has about doubled: 8 tiny values, whose
/// snapshot and its padding take under 10 KiB, every 100 writes or so; 200
/// values of about 2 KiB, every 200 writes or so. The bounds allow twice
/// that, however the writes fall around a compaction.
#[test]
fn a_compacted_log_of_padded_records_is_compacted_again_only_once_it_has_grown() {
    let seed = test_seed("a_compacted_log_of_padded_records");
    let mut rng = StdRng::seed_from_u64(seed);
    // (value bytes, keys, --compact-min-bytes, rounds of writes of every
    // key, most compactions): tiny values, whose snapshot is padded to a
    // whole block; values of about 2 KiB, one record a block.
    for (value_bytes, nr_keys, min_bytes, rounds, most) in
        [(100, 8, "4KiB", 50, 8), (2030, 200, "256KiB", 6, 12)]
    {
        let (_temp, data_dir) = temp_data_dir();
        let mut flags = DISK_FLAGS.to_vec();
        flags.extend_from_slice(&["--compact-min-bytes", min_bytes]);
        let mut server = start_on(&data_dir, 1, &flags);
        let mut client = server.client();
        for _ in 0..rounds {
            for i in 0..nr_keys {
                let key = format!("padded-{i}").into_bytes();
                client
                    .set(&key, random_bin(&mut rng, value_bytes))
                    .expect("SET");
            }
        }
        // Let a compaction the last writes made due finish.
        std::thread::sleep(std::time::Duration::from_millis(500));
        let compactions = nr_compactions(&mut server, 0);
        assert!(
            (1..=most).contains(&compactions),
            "{compactions} compactions for {rounds} writes of each of {nr_keys} keys \
             ({value_bytes}-byte values, --compact-min-bytes {min_bytes}; at most {most}; seed {seed})"
        );
        for i in 0..nr_keys {
            let key = format!("padded-{i}").into_bytes();
            assert!(client.get(&key).expect("GET").is_some(), "padded-{i} lost");
        }
        drop(server);
    }
}

/// A restart from a compacted log's hint file keeps what the compaction
/// measured: values of about 2 KiB take a block each, so the log right after
/// its compaction is twice the live data as estimated from the records'
/// sizes, and a restart that forgot the measurement compacted it again at
/// once, every restart (a rewrite of the whole log).
#[test]
fn a_restart_from_a_hint_file_does_not_compact_a_log_of_padded_records_again() {
    let seed = test_seed("a_restart_from_a_hint_file_does_not_compact");
    let mut rng = StdRng::seed_from_u64(seed);
    let (_temp, data_dir) = temp_data_dir();
    let mut flags = DISK_FLAGS.to_vec();
    flags.extend_from_slice(&["--compact-min-bytes", "256KiB"]);
    let (value_bytes, nr_keys) = (2030, 200);
    let key = |i: usize| format!("padded-{i}").into_bytes();
    let mut server = start_on(&data_dir, 1, &flags);
    let mut client = server.client();
    let mut written = std::collections::HashMap::new();
    for _ in 0..20 {
        for i in 0..nr_keys {
            let value = random_bin(&mut rng, value_bytes);
            client.set(&key(i), value.clone()).expect("SET");
            written.insert(i, value);
        }
        if nr_compactions(&mut server, 0) > 0 {
            break;
        }
    }
    // Let a compaction the last writes made due finish and write its hint.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        nr_compactions(&mut server, 0) > 0,
        "no compaction (seed {seed})"
    );
    // A few records behind the snapshot, as any log has.
    for i in 0..5 {
        let value = random_bin(&mut rng, value_bytes);
        client.set(&key(i), value.clone()).expect("SET");
        written.insert(i, value);
    }
    stop(&mut server, libc::SIGTERM);
    let mut server = start_on(&data_dir, 1, &flags);
    let mut client = server.client();
    wait_for_line(&mut server, &["hint file entries"]);
    // The compactor checks every 100 ms: give it several checks.
    std::thread::sleep(std::time::Duration::from_millis(800));
    let compactions = nr_compactions(&mut server, 0);
    assert_eq!(
        compactions, 0,
        "a restart from the hint compacted the log again (seed {seed})"
    );
    for (i, value) in &written {
        assert_reads_back(&mut client, &key(*i), value, "after the restart");
    }
}
