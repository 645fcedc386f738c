//! Memory per key of a shard's table, without the server: builds a `Table` of
//! 1 M entries shaped like the brief's memory workload (16-byte keys, 32-byte
//! values, which are 34 bytes of msgpack) and prints the process's RSS growth
//! per key beside what the table accounts for (`memory_bytes`, which
//! `--max-memory-bytes` limits). Not a criterion benchmark: it measures bytes,
//! once, in a few seconds.
//!
//! `cargo bench --bench memory_per_key [-- KEYS [VALUE_BYTES]]`
//!
//! The server-level figure, against Redis, is `loadgen/compare.sh`'s memory
//! row (docs/benchmarks.md, "Memory per key").

use corekv::table::Table;

/// Resident memory of this process, from /proc/self/status.
fn vm_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line");
    kib * 1024
}

/// A msgpack bin of `len` bytes (bin 8 up to 255 bytes, bin 32 beyond).
fn msgpack_bin(len: usize) -> Vec<u8> {
    let mut value = match u8::try_from(len) {
        Ok(len) => vec![0xc4, len],
        Err(_) => [&[0xc6][..], &(len as u32).to_be_bytes()].concat(),
    };
    value.resize(value.len() + len, b'v');
    value
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let nr_keys: usize = args.next().map_or(1_000_000, |a| a.parse().expect("KEYS"));
    let value_bytes: usize = args.next().map_or(32, |a| a.parse().expect("VALUE_BYTES"));
    let value = msgpack_bin(value_bytes);

    let before = vm_rss_bytes();
    let mut table = Table::new(u64::MAX);
    for i in 0..nr_keys {
        let key = format!("key:{i:012}"); // 16 bytes
        table.set(key.as_bytes(), &value).expect("no limit");
    }
    let after = vm_rss_bytes();
    // What the allocator still holds of freed blocks (the bucket arrays the
    // map grew out of) goes back on its own after a delay; ask now.
    corekv::allocator::return_free_memory_to_os();
    let collected = vm_rss_bytes();

    let stats = table.stats();
    let per_key = |bytes: u64| bytes as f64 / nr_keys as f64;
    println!(
        "{nr_keys} keys of 16 B, values of {value_bytes} B ({} B of msgpack): \
         RSS growth {:.1} B/key ({:.1} B/key once freed pages are returned), \
         memory_bytes {:.1} B/key",
        value.len(),
        per_key(after - before),
        per_key(collected - before),
        per_key(stats.memory_bytes)
    );
}
