//! Criterion benchmarks of the server's per-request hot path, without I/O:
//! decoding a KVStore-seed message (50 SET + 50 GET), applying it to a table,
//! and encoding reply elements. Run with `cargo bench --bench hot_path`.

use corekv::proto::{decode_message, reply, BatchResults, Op, RequestLimits};
use corekv::table::Table;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rmpv::Value;

const LIMITS: RequestLimits = RequestLimits {
    max_key_bytes: 64 * 1024,
};

/// The seed workload's message: 50 SETs of 16-byte keys to 32-byte values, then
/// 50 GETs of the same keys.
fn seed_message() -> Vec<u8> {
    let key = |i: usize| Value::Binary(format!("key:{i:012}").into_bytes());
    let value = Value::Binary(vec![b'v'; 32]);
    let sets = (0..50).map(|i| Value::Array(vec![1.into(), key(i), value.clone()]));
    let gets = (0..50).map(|i| Value::Array(vec![0.into(), key(i)]));
    let mut body = Vec::new();
    rmpv::encode::write_value(&mut body, &Value::Array(sets.chain(gets).collect()))
        .expect("encode");
    body
}

fn decode(c: &mut Criterion) {
    let body = seed_message();
    let mut ops: Vec<Op> = Vec::with_capacity(100);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(100));
    group.bench_function("seed_message_100_requests", |b| {
        b.iter(|| {
            ops.clear();
            decode_message(&body, 0..body.len(), &LIMITS, &mut ops).expect("valid");
            ops.len()
        })
    });
    group.finish();
}

fn apply(c: &mut Criterion) {
    let body = seed_message();
    let mut ops = Vec::new();
    decode_message(&body, 0..body.len(), &LIMITS, &mut ops).expect("valid");
    let mut out = BatchResults::default();
    let mut group = c.benchmark_group("table");
    group.throughput(Throughput::Elements(100));
    group.bench_function("apply_seed_message_overwrite", |b| {
        let mut table = Table::new(u64::MAX);
        b.iter(|| {
            out.clear();
            for op in &ops {
                table.apply(op, &body, &mut out);
            }
            out.buf.len()
        })
    });
    group.bench_function("apply_seed_message_fresh_table", |b| {
        b.iter_batched(
            || Table::new(u64::MAX),
            |mut table| {
                out.clear();
                for op in &ops {
                    table.apply(op, &body, &mut out);
                }
                table
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// A message of `nr` requests of `opcode` (0 GET, 1 SET) on keys
/// `key:{i:012}` (16 bytes) for i in `keys`, SETs with 32-byte values.
fn message_of(opcode: u8, keys: impl Iterator<Item = usize>) -> Vec<u8> {
    let value = Value::Binary(vec![b'v'; 32]);
    let requests = keys.map(|i| {
        let key = Value::Binary(format!("key:{i:012}").into_bytes());
        match opcode {
            1 => Value::Array(vec![1.into(), key, value.clone()]),
            _ => Value::Array(vec![0.into(), key]),
        }
    });
    let mut body = Vec::new();
    rmpv::encode::write_value(&mut body, &Value::Array(requests.collect())).expect("encode");
    body
}

fn apply_message(table: &mut Table, body: &[u8], out: &mut BatchResults) {
    let mut ops = Vec::new();
    decode_message(body, 0..body.len(), &LIMITS, &mut ops).expect("valid");
    out.clear();
    for op in &ops {
        table.apply(op, body, out);
    }
}

/// GETs over a table of 1 M keys, far larger than the CPU's caches, each
/// message reading 100 keys not read for a long while: what a read costs
/// when its key's entry is not cached.
fn apply_large_table(c: &mut Criterion) {
    let mut group = c.benchmark_group("table");
    group.throughput(Throughput::Elements(100));
    // Built on first use: a run that filters this benchmark out skips it.
    let mut state = None;
    let mut next = 0;
    let mut out = BatchResults::default();
    group.bench_function("apply_100_gets_1m_keys", |b| {
        let (table, messages) = state.get_or_insert_with(large_table_and_gets);
        b.iter(|| {
            let (body, ops) = &messages[next];
            next = (next + 1) % messages.len();
            out.clear();
            for op in ops {
                table.apply(op, body, &mut out);
            }
            out.buf.len()
        })
    });
    group.finish();
}

/// A table of 1 M keys, and every key once, in a scattered order (i * a
/// prime, mod the key count), as 10 000 messages of 100 GETs.
#[allow(clippy::type_complexity)]
fn large_table_and_gets() -> (Table, Vec<(Vec<u8>, Vec<Op>)>) {
    const NR_KEYS: usize = 1_000_000;
    let mut table = Table::new(u64::MAX);
    let mut out = BatchResults::default();
    for start in (0..NR_KEYS).step_by(1000) {
        apply_message(&mut table, &message_of(1, start..start + 1000), &mut out);
    }
    let messages = (0..NR_KEYS / 100)
        .map(|m| {
            let body = message_of(0, (m * 100..m * 100 + 100).map(|i| (i * 7_919) % NR_KEYS));
            let mut ops = Vec::new();
            decode_message(&body, 0..body.len(), &LIMITS, &mut ops).expect("valid");
            (body, ops)
        })
        .collect();
    (table, messages)
}

fn encode(c: &mut Criterion) {
    let value = [0xc4, 32]
        .iter()
        .chain([b'v'; 32].iter())
        .copied()
        .collect::<Vec<u8>>();
    let mut out = Vec::with_capacity(8192);
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(50));
    group.bench_function("reply_50_found_elements", |b| {
        b.iter(|| {
            out.clear();
            reply::write_array_len(&mut out, 50);
            for _ in 0..50 {
                reply::write_found(&mut out, &value);
            }
            out.len()
        })
    });
    group.finish();
}

criterion_group!(benches, decode, apply, apply_large_table, encode);
criterion_main!(benches);
