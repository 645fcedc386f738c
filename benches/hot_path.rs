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

criterion_group!(benches, decode, apply, encode);
criterion_main!(benches);
