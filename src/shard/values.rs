//! The disk engine's side of a shard: reading values back from the log
//! before requests use them, and pointing keys at their values once these
//! are on disk.
//!
//! Under the disk engine a key's entry holds its value only from the write
//! until its record is in the log file; then the entry is replaced by one
//! holding the value's location ([`Shard::locate_written_values`]), and the
//! value's memory is freed. A request that uses a value (GET, GETV, INCRBY,
//! INCRBYFLOAT, APPEND, and those inside ATOMIC) first has the owning shard
//! read it ([`Shard::read_values_for`]) through the log's io_uring reads;
//! the table keeps the copy for the requests about to run, which run with no
//! await in between, so the copy is the value they see. Reads happen before
//! a request takes its turn on its keys (a turn is used at once, with no
//! await: `txn::locks`); a value that changed while the request waited for
//! its turn is read then with a blocking read ([`Shard::read_changed_values`]).
//! A copy is kept by location, whose bytes never change, so a copy kept too
//! long is never wrong, only unused. For the same reason the shard keeps a
//! small cache of hot values by location (`shard::value_cache`), which both
//! reads look in first and offer what they read to.
//!
//! A value under 64 bytes (`entry::stays_inline`) is never moved: its entry
//! keeps it as well as its record, so no request reads it from disk. One
//! that comes as a location (a start from a hint file, which has no values)
//! goes back into its entry when it is first read (`Table::keep_copy`), and
//! is not offered to the cache.
//!
//! Nothing here runs for the log and memory engines beyond one flag test.

use super::Shard;
use crate::entry::{stays_inline, Entry, Location};
use crate::ids::TxnId;
use crate::log::blocks;
use crate::log::format::{self, Effect};
use crate::log::sync_stats::Histogram;
use crate::log::values::WantedValue;
use crate::log::writer::{PendingCheck, PendingValue};
use crate::log::LogWriter;
use crate::proto::{Op, OpKind};
use std::time::{Duration, Instant};

/// Told each PUT's index among a record's effects and where in the buffer
/// its value bytes start (`format::write_batch_locating`).
type Locate<'a> = &'a mut dyn FnMut(usize, usize);

/// Upper bounds of the value read latency buckets, in microseconds: from a
/// read served by the page cache (tmpfs) to one queued behind a busy device.
pub const DISK_READ_MICROS_BOUNDS: [u64; 12] = [
    10, 25, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 50_000, 100_000,
];

/// How long a shard's value reads took, from submission to completion as
/// the shard saw them, by [`DISK_READ_MICROS_BOUNDS`]. Only the shard writes
/// it; `/metrics` reads a published copy (`crate::metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskReadLatency {
    pub micros: Histogram,
}

impl Default for DiskReadLatency {
    fn default() -> DiskReadLatency {
        DiskReadLatency {
            micros: Histogram::new(DISK_READ_MICROS_BOUNDS.len()),
        }
    }
}

impl DiskReadLatency {
    fn observe(&mut self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.micros.observe(&DISK_READ_MICROS_BOUNDS, micros);
    }
}

/// Reads of one key's value, when the key keeps changing under them.
const MAX_READ_ATTEMPTS: usize = 8;
/// Values of one round further apart than this on disk are read apart.
const MERGE_GAP_BYTES: u64 = 16 * 1024;
/// The most one merged read of neighbouring values covers.
const MERGE_MAX_BYTES: u64 = 256 * 1024;

/// Groups `wanted` (indices into it) into runs read together: in one
/// file, in offset order, each read (a value with its record, see
/// `log::values::WantedValue`) at most [`MERGE_GAP_BYTES`] after the
/// previous one's end, the run at most [`MERGE_MAX_BYTES`] long. A value
/// on its own is a run of one.
fn neighbour_spans(wanted: &[WantedValue<'_>]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..wanted.len()).collect();
    order.sort_unstable_by_key(|&i| (wanted[i].location.file, wanted[i].read_start()));
    let mut spans: Vec<Vec<usize>> = Vec::new();
    let mut run: Option<(u32, u64, u64)> = None; // file, start, end
    for i in order {
        let (file_of, at, end) = (
            wanted[i].location.file,
            wanted[i].read_start(),
            wanted[i].read_end(),
        );
        match (&mut run, spans.last_mut()) {
            (Some((file, start, run_end)), Some(members))
                if *file == file_of
                    && at >= *run_end
                    && at - *run_end <= MERGE_GAP_BYTES
                    && end - *start <= MERGE_MAX_BYTES =>
            {
                *run_end = end;
                members.push(i);
            }
            _ => {
                run = Some((file_of, at, end));
                spans.push(vec![i]);
            }
        }
    }
    spans
}

/// The bytes a read of `wanted` alone costs: the whole blocks holding what
/// it reads (its record, for a value checked by it).
fn block_bytes_of(wanted: WantedValue<'_>) -> u64 {
    blocks::covering(wanted.read_start(), wanted.read_len() as u64).1
}

/// What the reads of one run of `neighbour_spans` brought: the values in
/// `members` order, how long each read took, and the bytes of the blocks
/// read (`blocks::covering`).
type SpanRead = (Vec<std::io::Result<Vec<u8>>>, Vec<Duration>, u64);

/// Reads the values of one run of `neighbour_spans`: one read for the run,
/// from the first one's record start (each value then checked, see
/// `log::values::WantedValue`), or one per value if it is a single value or
/// does not lie in one piece of one file.
async fn read_span_of(log: &LogWriter, wanted: &[WantedValue<'_>], members: &[usize]) -> SpanRead {
    let first = wanted[members[0]];
    let last = wanted[members[members.len() - 1]];
    let start = first.read_start();
    let len = last.read_end() - start;
    if members.len() > 1 {
        let started = Instant::now();
        if let Some(read) = log.read_span(first.location.file, start, len).await {
            let took = vec![started.elapsed()];
            let block_bytes = match read {
                Ok(_) => blocks::covering(start, len).1,
                Err(_) => 0,
            };
            let values = members
                .iter()
                .map(|&i| {
                    let bytes = read
                        .as_ref()
                        .map_err(|e| std::io::Error::new(e.kind(), e.to_string()))?;
                    let from = (wanted[i].read_start() - start) as usize;
                    let value = wanted[i].check(&bytes[from..from + wanted[i].read_len()])?;
                    Ok(value.to_vec())
                })
                .collect();
            return (values, took, block_bytes);
        }
    }
    let mut values = Vec::with_capacity(members.len());
    let mut took = Vec::with_capacity(members.len());
    let mut block_bytes = 0;
    for &i in members {
        let started = Instant::now();
        let read = log.read_value(wanted[i]).await;
        took.push(started.elapsed());
        if read.is_ok() {
            block_bytes += block_bytes_of(wanted[i]);
        }
        values.push(read);
    }
    (values, took, block_bytes)
}
/// Entries relocated between yields after a compaction.
const RELOCATE_STEP: usize = 4096;

/// Whether a request of `kind` uses its key's value.
pub fn reads_value(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::Get | OpKind::GetV | OpKind::IncrBy | OpKind::Append | OpKind::IncrByFloat
    )
}

impl Shard {
    /// Whether this shard's values are on disk (the disk engine).
    pub fn keeps_values_on_disk(&self) -> bool {
        self.table.borrow().keeps_values_on_disk()
    }

    /// Reads the on-disk values the requests `ops` will use, all at once,
    /// into the table's copies (see the module docs); returns whether it
    /// read any from disk (and so waited). Values in the shard's cache of
    /// hot values are copied from it instead; a value read from disk is
    /// offered to it. A failed read is logged; the request then answers
    /// IOERR naming its key.
    pub async fn read_values_for(&self, ops: &[Op], buf: &[u8]) -> bool {
        let Some(log) = self.log.as_ref().filter(|log| log.keeps_values()) else {
            return false;
        };
        let keys: Vec<&[u8]> = ops
            .iter()
            .filter(|op| reads_value(op.kind))
            .map(|op| op.key.of(buf))
            .collect();
        for attempt in 0..MAX_READ_ATTEMPTS {
            let wanted = self.copy_cached_values(&keys);
            if wanted.is_empty() {
                return attempt > 0;
            }
            let read = self.read_neighbours_together(log, &wanted).await;
            let mut table = self.table.borrow_mut();
            let mut cache = self.value_cache.borrow_mut();
            for (WantedValue { key, location, .. }, bytes) in wanted.into_iter().zip(read) {
                match bytes {
                    Ok(bytes) => {
                        if !table.keep_fetched(key, location, &bytes) {
                            cache.offer(location, &bytes);
                        }
                    }
                    Err(e) => {
                        tracing::error!(
                            shard = %self.id,
                            "cannot read the value of {:?} at {location:?}: {e}",
                            String::from_utf8_lossy(key)
                        );
                        return true;
                    }
                }
            }
        }
        true
    }

    /// Reads the values at the locations of `wanted`, all in flight at once;
    /// values that lie close together in one file (a message's writes are
    /// neighbours in the log) come in one read ([`neighbour_spans`]), each
    /// then checked. Returns them in `wanted`'s order.
    async fn read_neighbours_together(
        &self,
        log: &LogWriter,
        wanted: &[WantedValue<'_>],
    ) -> Vec<std::io::Result<Vec<u8>>> {
        let spans = neighbour_spans(wanted);
        let reads = spans
            .iter()
            .map(|members| read_span_of(log, wanted, members))
            .collect();
        let mut out: Vec<Option<std::io::Result<Vec<u8>>>> = wanted.iter().map(|_| None).collect();
        let (mut latency, mut block_bytes) = (Vec::new(), 0);
        for (members, (values, took, bytes)) in
            spans.iter().zip(crate::log::values::join_all(reads).await)
        {
            latency.extend(took);
            block_bytes += bytes;
            for (&i, value) in members.iter().zip(values) {
                out[i] = Some(value);
            }
        }
        self.table.borrow_mut().count_disk_read_bytes(block_bytes);
        let mut histogram = self.disk_read_latency.borrow_mut();
        latency.into_iter().for_each(|took| histogram.observe(took));
        out.into_iter()
            .map(|value| value.expect("every location is in one span"))
            .collect()
    }

    /// Copies the on-disk values of `keys` that the cache holds into the
    /// table's copies; returns the others that are not read yet, each once,
    /// with where they are and what checks them.
    fn copy_cached_values<'k>(&self, keys: &[&'k [u8]]) -> Vec<WantedValue<'k>> {
        let mut table = self.table.borrow_mut();
        let mut cache = self.value_cache.borrow_mut();
        let mut wanted: Vec<WantedValue<'k>> = Vec::new();
        for &key in keys {
            let Some((location, version)) = table.unread_location(key) else {
                continue;
            };
            match cache.get(location) {
                Some(bytes) => {
                    table.keep_copy(key, location, bytes);
                }
                None if !wanted.iter().any(|w| w.key == key) => wanted.push(WantedValue {
                    key,
                    version,
                    location,
                }),
                None => {}
            }
        }
        wanted
    }

    /// Just before the requests `ops` run (after a turn on their keys began,
    /// if they needed one): reads, blocking, any value they use that changed
    /// since [`Shard::read_values_for`] read them — a write or a move to
    /// disk while the request waited for its turn, or a key rewritten under
    /// each of that function's attempts. What runs next must not await, so
    /// this cannot go through io_uring; it is rare, and one read. The cache of hot values is used
    /// as by [`Shard::read_values_for`].
    pub fn read_changed_values(&self, ops: &[Op], buf: &[u8]) {
        let Some(log) = self.log.as_ref().filter(|log| log.keeps_values()) else {
            return;
        };
        let keys: Vec<&[u8]> = ops
            .iter()
            .filter(|op| reads_value(op.kind))
            .map(|op| op.key.of(buf))
            .collect();
        for wanted in self.copy_cached_values(&keys) {
            let WantedValue { key, location, .. } = wanted;
            let started = Instant::now();
            let read = log.read_value_blocking(wanted);
            self.disk_read_latency
                .borrow_mut()
                .observe(started.elapsed());
            match read {
                Ok(bytes) => {
                    let mut table = self.table.borrow_mut();
                    table.count_disk_read_bytes(block_bytes_of(wanted));
                    let inline = table.keep_fetched(key, location, &bytes);
                    drop(table);
                    if !inline {
                        self.value_cache.borrow_mut().offer(location, &bytes);
                    }
                }
                Err(e) => tracing::error!(
                    shard = %self.id,
                    "cannot read the value of {:?} at {location:?}: {e}",
                    String::from_utf8_lossy(key)
                ),
            }
        }
    }

    /// The latency of this shard's value reads so far, for `/metrics`.
    pub fn disk_read_latency(&self) -> Histogram {
        self.disk_read_latency.borrow().micros.clone()
    }

    /// Drops the copies of values read for requests that have run.
    pub fn forget_read_values(&self) {
        if self.keeps_values_on_disk() {
            self.table.borrow_mut().clear_fetched();
        }
    }

    /// Appends the record of `effect` (a leaf request's change) to the log;
    /// with the disk engine a written value's entry is pointed at its bytes
    /// once they are in the file. Returns the log position after it.
    pub(super) fn append_effect(&self, effect: &Effect<'_>) -> Option<u64> {
        let log = self.log.as_ref()?;
        let entry = match effect {
            Effect::Put { key, .. } if log.keeps_values() => self.written_entry(key),
            _ => None,
        };
        Some(match entry {
            None => log.append(|records| format::write_effect(records, effect)),
            Some(entry) => log.append_values(|records, values| {
                if let Some(at) = format::write_effect_locating(records, effect) {
                    // The value is alone in its PUT (or PUTX) record: reads
                    // check it by the record.
                    let with_deadline = matches!(
                        effect,
                        Effect::Put {
                            deadline: Some(_),
                            ..
                        }
                    );
                    let check = PendingCheck::Record { with_deadline };
                    values.push(PendingValue { entry, at, check });
                }
            }),
        })
    }

    /// Appends a single-shard ATOMIC's changes as one record; with the disk
    /// engine, each key's last written value is located as for a leaf
    /// write (an earlier write of the key in the batch is not its value).
    pub fn append_batch(&self, effects: &[Effect<'_>]) -> Option<u64> {
        self.append_located(effects, &|records, located| {
            format::write_batch_locating(records, effects, located)
        })
    }

    /// Appends this shard's share of cross-shard batch `txn`, whose
    /// tentative writes `effects` the table already holds, as its PREPARE
    /// record; with the disk engine their values are located in it as for
    /// a single-shard batch's. (Were the batch to abort, the undo puts the
    /// entries before it back, and a location reported for a tentative
    /// entry no longer in the table is ignored.)
    pub fn append_prepare(&self, txn: TxnId, effects: &[Effect<'_>]) -> Option<u64> {
        self.append_located(effects, &|records, located| {
            format::write_prepare_locating(records, txn, effects, located)
        })
    }

    /// Appends the record `write` encodes for `effects`, telling its
    /// [`Locate`] each PUT's index and where its value bytes start; with the disk
    /// engine, each key's last written value in it is located (reads check
    /// it by a CRC-32 of its own: it is one of several values in a record).
    fn append_located(
        &self,
        effects: &[Effect<'_>],
        write: &dyn Fn(&mut Vec<u8>, Locate<'_>),
    ) -> Option<u64> {
        let log = self.log.as_ref()?;
        if !log.keeps_values() {
            return Some(log.append(|records| write(records, &mut |_, _| {})));
        }
        let last_put = |i: usize, key: &[u8]| {
            !effects[i + 1..].iter().any(|later| match later {
                Effect::Put { key: k, .. } | Effect::Del { key: k } => *k == key,
                Effect::Expire { .. } => false,
            })
        };
        Some(log.append_values(|records, values| {
            write(records, &mut |i, at| {
                let Effect::Put { key, version, .. } = effects[i] else {
                    return;
                };
                if !last_put(i, key) {
                    return;
                }
                if let Some(entry) = self.written_entry(key) {
                    if entry.version() == version {
                        let check = PendingCheck::Crc;
                        values.push(PendingValue { entry, at, check });
                    }
                }
            })
        }))
    }

    /// The entry a write just stored under `key`, if it holds its value
    /// and that value is to move to disk: a small one stays in its entry
    /// (`entry::stays_inline`), so its record needs no location.
    fn written_entry(&self, key: &[u8]) -> Option<Entry> {
        let table = self.table.borrow();
        let moves = |e: &&Entry| !e.is_on_disk() && !stays_inline(e.value_len());
        table.current(key).filter(moves).cloned()
    }

    /// Points the keys whose values the log has written since the last call
    /// at them, freeing the values' memory.
    pub fn locate_written_values(&self) {
        let Some(log) = self.log.as_ref().filter(|log| log.keeps_values()) else {
            return;
        };
        let written = log.take_written_values();
        if written.is_empty() {
            return;
        }
        let mut table = self.table.borrow_mut();
        for (entry, location) in written {
            table.relocate(entry, location);
        }
    }

    /// After a compaction: points the keys of its snapshot at their values
    /// in the new file, a step at a time so requests keep running (the old
    /// file stays readable meanwhile).
    pub async fn relocate_values(&self, located: Vec<(Entry, Location)>) {
        let mut located = located.into_iter();
        loop {
            {
                let mut table = self.table.borrow_mut();
                let mut moved = 0;
                for (entry, location) in located.by_ref().take(RELOCATE_STEP) {
                    table.relocate(entry, location);
                    moved += 1;
                }
                if moved == 0 {
                    return;
                }
            }
            glommio::yield_if_needed().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::ValueCheck;

    fn at(file: u32, offset: u64, len: u32) -> WantedValue<'static> {
        let location = Location {
            file,
            offset,
            len,
            check: ValueCheck::Crc(0),
        };
        WantedValue {
            key: b"k",
            version: 1,
            location,
        }
    }

    #[test]
    fn neighbouring_values_of_one_file_are_read_together_and_far_ones_apart() {
        let locations = [
            at(1, 10_000, 100),                   // 0: after 1, within the gap
            at(1, 0, 1000),                       // 1: the run's start
            at(2, 1000, 10),                      // 2: another file: its own run
            at(1, 10_100 + 16 * 1024, 5),         // 3: exactly the gap after 0's end
            at(1, 10_105 + 2 * 16 * 1024 + 1, 5), // 4: one byte more than the gap after 3's end
            at(1, 500_000, 300_000),              // 5: alone, longer than a run may be
        ];
        let spans = neighbour_spans(&locations);
        assert_eq!(spans, vec![vec![1, 0, 3], vec![4], vec![5], vec![2]]);
        let long: Vec<WantedValue> = (0..10).map(|i| at(0, i * 40_000, 40_000)).collect();
        let spans = neighbour_spans(&long);
        assert!(spans.iter().all(|run| run.len() <= 6), "{spans:?}");
        assert_eq!(spans.iter().map(Vec::len).sum::<usize>(), 10);
    }
}
