//! Writing the requests a RESP or text command is translated into, as msgpack
//! request arrays (`proto::request`), so they run exactly as a msgpack
//! client's would. Keys are written as bin; values as bin (`super::value`).

use crate::proto::reply::{write_array_len, write_bin, write_uint};
use crate::proto::OpKind;

/// Starts a message of `nr_requests` requests.
pub fn message(out: &mut Vec<u8>, nr_requests: u32) {
    write_array_len(out, nr_requests);
}

/// Starts an ATOMIC request of `nr_requests` requests.
pub fn atomic(out: &mut Vec<u8>, nr_requests: u32) {
    write_array_len(out, 2);
    write_uint(out, OpKind::Atomic as u64);
    write_array_len(out, nr_requests);
}

pub fn get(out: &mut Vec<u8>, key: &[u8]) {
    keyed(out, OpKind::Get, key);
}

pub fn get_versioned(out: &mut Vec<u8>, key: &[u8]) {
    keyed(out, OpKind::GetV, key);
}

pub fn del(out: &mut Vec<u8>, key: &[u8]) {
    keyed(out, OpKind::Del, key);
}

pub fn remove(out: &mut Vec<u8>, key: &[u8]) {
    keyed(out, OpKind::Rm, key);
}

pub fn stats(out: &mut Vec<u8>) {
    write_array_len(out, 1);
    write_uint(out, OpKind::Stats as u64);
}

/// SET of `value`'s bytes, stored as bin.
pub fn set(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    write_array_len(out, 3);
    write_uint(out, OpKind::Set as u64);
    write_bin(out, key);
    write_bin(out, value);
}

/// SET with a TTL (`[16, K, V, ttl_ms]`): the key expires `ttl_ms` from now.
pub fn set_with_ttl(out: &mut Vec<u8>, key: &[u8], value: &[u8], ttl_ms: u64) {
    write_array_len(out, 4);
    write_uint(out, OpKind::SetTtl as u64);
    write_bin(out, key);
    write_bin(out, value);
    write_uint(out, ttl_ms);
}

/// SET with a deadline (`[23, K, V, unix_ms]`); one not in the future
/// removes the key instead.
pub fn set_with_deadline(out: &mut Vec<u8>, key: &[u8], value: &[u8], unix_ms: u64) {
    write_array_len(out, 4);
    write_uint(out, OpKind::SetAt as u64);
    write_bin(out, key);
    write_bin(out, value);
    write_uint(out, unix_ms);
}

/// SET keeping the key's deadline (`[21, K, V]`, Redis's KEEPTTL).
pub fn set_keep_ttl(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    write_array_len(out, 3);
    write_uint(out, OpKind::SetKeepTtl as u64);
    write_bin(out, key);
    write_bin(out, value);
}

/// EXPIRE (`[17, K, ttl_ms]`): the key expires `ttl_ms` from now (0: at once).
pub fn expire(out: &mut Vec<u8>, key: &[u8], ttl_ms: u64) {
    write_array_len(out, 3);
    write_uint(out, OpKind::Expire as u64);
    write_bin(out, key);
    write_uint(out, ttl_ms);
}

/// EXPIREAT (`[20, K, unix_ms]`): the key expires at `unix_ms`.
pub fn expire_at(out: &mut Vec<u8>, key: &[u8], unix_ms: u64) {
    write_array_len(out, 3);
    write_uint(out, OpKind::ExpireAt as u64);
    write_bin(out, key);
    write_uint(out, unix_ms);
}

/// TTL (`[18, K]`): the remaining milliseconds, -1 or -2.
pub fn ttl(out: &mut Vec<u8>, key: &[u8]) {
    keyed(out, OpKind::Ttl, key);
}

/// EXPIRETIME (`[22, K]`): the deadline in Unix milliseconds, -1 or -2.
pub fn expire_time(out: &mut Vec<u8>, key: &[u8]) {
    keyed(out, OpKind::ExpireTime, key);
}

/// PERSIST (`[19, K]`): the key no longer expires.
pub fn persist(out: &mut Vec<u8>, key: &[u8]) {
    keyed(out, OpKind::Persist, key);
}

/// SET of a value already in msgpack (a value read back unchanged).
pub fn set_msgpack(out: &mut Vec<u8>, key: &[u8], msgpack: &[u8]) {
    write_array_len(out, 3);
    write_uint(out, OpKind::Set as u64);
    write_bin(out, key);
    out.extend_from_slice(msgpack);
}

/// PUTV of `value`'s bytes at `version` (0: only if absent).
pub fn put_versioned(out: &mut Vec<u8>, key: &[u8], value: &[u8], version: u64) {
    write_array_len(out, 4);
    write_uint(out, OpKind::PutV as u64);
    write_bin(out, key);
    write_bin(out, value);
    write_uint(out, version);
}

/// CHECK: the key must be at `version`, or the ATOMIC batch aborts.
pub fn check(out: &mut Vec<u8>, key: &[u8], version: u64) {
    write_array_len(out, 3);
    write_uint(out, OpKind::Check as u64);
    write_bin(out, key);
    write_uint(out, version);
}

/// INCRBY: adds `delta` to the key's integer (0 if absent).
pub fn incr_by(out: &mut Vec<u8>, key: &[u8], delta: i64) {
    write_array_len(out, 3);
    write_uint(out, OpKind::IncrBy as u64);
    write_bin(out, key);
    write_int(out, delta);
}

/// APPEND: appends `suffix` to the key's string (empty if absent).
pub fn append(out: &mut Vec<u8>, key: &[u8], suffix: &[u8]) {
    write_array_len(out, 3);
    write_uint(out, OpKind::Append as u64);
    write_bin(out, key);
    write_bin(out, suffix);
}

/// INCRBYFLOAT: adds `delta` to the key's number (0 if absent).
pub fn incr_by_float(out: &mut Vec<u8>, key: &[u8], delta: f64) {
    write_array_len(out, 3);
    write_uint(out, OpKind::IncrByFloat as u64);
    write_bin(out, key);
    out.push(0xcb);
    out.extend_from_slice(&delta.to_bits().to_be_bytes());
}

/// A signed integer in msgpack (int 64 when negative).
fn write_int(out: &mut Vec<u8>, n: i64) {
    match u64::try_from(n) {
        Ok(n) => write_uint(out, n),
        Err(_) => {
            out.push(0xd3);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// SCAN of `shard` from `position`, visiting `count` entries, keeping the
/// keys that match `pattern` (empty: all).
pub fn scan(out: &mut Vec<u8>, shard: usize, position: u64, count: u32, pattern: &[u8]) {
    write_array_len(out, 5);
    write_uint(out, OpKind::Scan as u64);
    write_uint(out, shard as u64);
    write_uint(out, position);
    write_uint(out, u64::from(count));
    write_bin(out, pattern);
}

/// FLUSH: deletes every key of `shard`.
pub fn flush(out: &mut Vec<u8>, shard: usize) {
    write_array_len(out, 2);
    write_uint(out, OpKind::Flush as u64);
    write_uint(out, shard as u64);
}

fn keyed(out: &mut Vec<u8>, kind: OpKind, key: &[u8]) {
    write_array_len(out, 2);
    write_uint(out, kind as u64);
    write_bin(out, key);
}
