//! STATS: the counters each shard reports, and how a shard's share travels
//! to the shard that answers.
//!
//! A STATS request is answered by the connection's shard from every shard's
//! share. A share is an element of the sharing shard's results, an array of
//! integers in [`TableStats::fields`] order ([`write_stats_element`]); only the
//! answering shard reads the shares ([`read_stats_element`]), sums them and
//! writes the `[-6, {name: integer}]` element (`reply::write_stats`), adding
//! the figures no shard owns (shards, connections).

use super::msgpack::Cursor;
use super::reply;

/// The counters one shard reports in STATS (or their sum over every shard).
/// Names are the wire names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    pub keys: u64,
    pub value_bytes: u64,
    pub memory_bytes: u64,
    /// Memory of values no longer in the table that replies (or a batch's undo,
    /// or a compaction snapshot) still hold; counted against the limit too.
    pub reply_pinned_bytes: u64,
    pub gets: u64,
    pub hits: u64,
    pub misses: u64,
    pub sets: u64,
    pub deletes: u64,
    pub version_conflicts: u64,
    pub oom_rejections: u64,
    pub atomic_commits: u64,
    pub atomic_aborts: u64,
    /// Syncs (fdatasync) of the shard's log; 0 with the memory engine. Filled
    /// in by the shard, which owns the log.
    pub log_syncs: u64,
    /// Keys stored with a deadline (expired ones not yet removed included).
    pub expires: u64,
    /// Keys removed because their deadline passed (by the sweep, or by a
    /// request that met them).
    pub expired_keys: u64,
    /// Keys removed to make room under the memory limit.
    pub evicted_keys: u64,
    /// Values the disk engine read from its log for requests, and their bytes.
    pub disk_reads: u64,
    pub disk_read_bytes: u64,
    /// Values the disk engine answered from its cache of hot values instead
    /// of reading them (a hit ratio: hits / (hits + disk_reads)), and the
    /// bytes the cache holds now. Filled in by the shard, which owns the
    /// cache.
    pub disk_cache_hits: u64,
    pub disk_cache_bytes: u64,
    /// Rounds of writes that waited for a compaction to catch up, and the
    /// microseconds they waited, summed (`log::pacing`). Filled in by the
    /// shard, which owns the pacing.
    pub write_pacing_waits: u64,
    pub write_pacing_wait_us: u64,
}

impl TableStats {
    /// Number of fields, in [`TableStats::fields`] order.
    pub const NR_FIELDS: usize = 23;

    /// `(wire name, value)` pairs in a fixed order.
    pub fn fields(&self) -> [(&'static str, u64); Self::NR_FIELDS] {
        [
            ("keys", self.keys),
            ("value_bytes", self.value_bytes),
            ("memory_bytes", self.memory_bytes),
            ("reply_pinned_bytes", self.reply_pinned_bytes),
            ("gets", self.gets),
            ("hits", self.hits),
            ("misses", self.misses),
            ("sets", self.sets),
            ("deletes", self.deletes),
            ("version_conflicts", self.version_conflicts),
            ("oom_rejections", self.oom_rejections),
            ("atomic_commits", self.atomic_commits),
            ("atomic_aborts", self.atomic_aborts),
            ("log_syncs", self.log_syncs),
            ("expires", self.expires),
            ("expired_keys", self.expired_keys),
            ("evicted_keys", self.evicted_keys),
            ("disk_reads", self.disk_reads),
            ("disk_read_bytes", self.disk_read_bytes),
            ("disk_cache_hits", self.disk_cache_hits),
            ("disk_cache_bytes", self.disk_cache_bytes),
            ("write_pacing_waits", self.write_pacing_waits),
            ("write_pacing_wait_us", self.write_pacing_wait_us),
        ]
    }

    /// Rebuilds stats from values in [`TableStats::fields`] order.
    pub fn from_values(v: [u64; Self::NR_FIELDS]) -> TableStats {
        TableStats {
            keys: v[0],
            value_bytes: v[1],
            memory_bytes: v[2],
            reply_pinned_bytes: v[3],
            gets: v[4],
            hits: v[5],
            misses: v[6],
            sets: v[7],
            deletes: v[8],
            version_conflicts: v[9],
            oom_rejections: v[10],
            atomic_commits: v[11],
            atomic_aborts: v[12],
            log_syncs: v[13],
            expires: v[14],
            expired_keys: v[15],
            evicted_keys: v[16],
            disk_reads: v[17],
            disk_read_bytes: v[18],
            disk_cache_hits: v[19],
            disk_cache_bytes: v[20],
            write_pacing_waits: v[21],
            write_pacing_wait_us: v[22],
        }
    }

    /// Field-wise sum, for STATS across shards.
    pub fn add(&mut self, other: &TableStats) {
        let mut sum = self.fields().map(|(_, v)| v);
        for (total, (_, v)) in sum.iter_mut().zip(other.fields()) {
            *total += v;
        }
        *self = TableStats::from_values(sum);
    }
}

/// Writes a shard's share of a STATS answer: an array of its counters in
/// [`TableStats::fields`] order.
pub fn write_stats_element(out: &mut Vec<u8>, stats: &TableStats) {
    let fields = stats.fields();
    reply::write_array_len(out, fields.len() as u32);
    for (_, value) in fields {
        reply::write_uint(out, value);
    }
}

/// Reads an element written by [`write_stats_element`]; None if it is
/// something else (a shard that could not answer sent an error element).
pub fn read_stats_element(element: &[u8]) -> Option<TableStats> {
    let mut cursor = Cursor::new(element);
    if cursor.read_array_len().ok()? != TableStats::NR_FIELDS as u64 {
        return None;
    }
    let mut values = [0u64; TableStats::NR_FIELDS];
    for value in &mut values {
        *value = u64::try_from(cursor.read_int().ok()?).ok()?;
    }
    Some(TableStats::from_values(values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_add_sums_every_field() {
        let mut total = TableStats::from_values([1; TableStats::NR_FIELDS]);
        total.add(&TableStats::from_values([2; TableStats::NR_FIELDS]));
        assert!(total.fields().iter().all(|&(_, v)| v == 3));
    }

    #[test]
    fn stats_element_round_trips() {
        let stats = TableStats::from_values([
            1,
            2,
            3,
            4,
            5,
            6,
            7,
            8,
            9,
            10,
            11,
            12,
            13,
            u64::MAX,
            15,
            16,
            17,
            18,
            19,
            20,
            21,
            22,
            23,
        ]);
        let mut element = Vec::new();
        write_stats_element(&mut element, &stats);
        assert_eq!(read_stats_element(&element), Some(stats));
        assert_eq!(read_stats_element(&[0x90]), None);
    }
}
