//! Encoding reply messages and their result elements.
//!
//! ```text
//! [-1, V]            GET found               [-4, n]    PUTV applied (n = new version), RM (1/0)
//! [-2]               not found               [-5, cur]  PUTV conflict (cur = current version)
//! [-3, V, version]   GETV found              [-6, {name: integer}]   STATS
//! [-7, next, [K…]]  SCAN                   [-8, n]    a signed integer: INCRBY, TTL
//!                   [-9, CODE, message]  error
//! [-10, me, [[name, "ip:port", [[first, last]…]]…]]   SLOTMAP: the cluster's nodes
//! ```
//!
//! Values are written back exactly as they arrived (they are stored as raw
//! msgpack), so these encoders only ever write headers, integers and strings.
//! Integers use the smallest msgpack encoding, as every msgpack library does,
//! so replies are byte-identical to what the seed's Haskell server produced.

use super::error::ErrorCode;

pub const TAG_FOUND: i8 = -1;
pub const TAG_NOT_FOUND: i8 = -2;
pub const TAG_VERSIONED: i8 = -3;
pub const TAG_DONE: i8 = -4;
pub const TAG_VERSION_CONFLICT: i8 = -5;
pub const TAG_STATS: i8 = -6;
pub const TAG_KEYS: i8 = -7;
pub const TAG_INTEGER: i8 = -8;
pub const TAG_ERROR: i8 = -9;
pub const TAG_SLOT_MAP: i8 = -10;

/// Starts SCAN's `[-7, next_position, [K…]]`: the keys follow as bin.
pub fn write_keys_header(out: &mut Vec<u8>, next_position: u64, nr_keys: u32) {
    write_array_len(out, 3);
    out.push(TAG_KEYS as u8);
    write_uint(out, next_position);
    write_array_len(out, nr_keys);
}

/// Writes an array header for `len` elements.
pub fn write_array_len(out: &mut Vec<u8>, len: u32) {
    match len {
        0..=15 => out.push(0x90 | len as u8),
        16..=0xffff => {
            out.push(0xdc);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdd);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
}

/// Bytes [`write_array_len`] writes for `len` elements.
pub fn array_len_bytes(len: u32) -> usize {
    match len {
        0..=15 => 1,
        16..=0xffff => 3,
        _ => 5,
    }
}

/// Writes a map header for `len` key/value pairs.
pub fn write_map_len(out: &mut Vec<u8>, len: u32) {
    match len {
        0..=15 => out.push(0x80 | len as u8),
        16..=0xffff => {
            out.push(0xde);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdf);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
}

/// Writes a signed integer element `[-8, n]`: INCRBY's new value, TTL's
/// answer.
pub fn write_integer(out: &mut Vec<u8>, n: i64) {
    out.push(0x92);
    write_tag(out, TAG_INTEGER);
    write_int(out, n);
}

/// Writes a signed integer in its smallest encoding (non-negative ones as
/// [`write_uint`] does).
pub fn write_int(out: &mut Vec<u8>, n: i64) {
    match n {
        0.. => write_uint(out, n as u64),
        -32..=-1 => out.push(n as i8 as u8),
        -0x80..=-33 => out.extend_from_slice(&[0xd0, n as i8 as u8]),
        -0x8000..=-0x81 => {
            out.push(0xd1);
            out.extend_from_slice(&(n as i16).to_be_bytes());
        }
        -0x8000_0000..=-0x8001 => {
            out.push(0xd2);
            out.extend_from_slice(&(n as i32).to_be_bytes());
        }
        _ => {
            out.push(0xd3);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// Writes a non-negative integer in its smallest encoding.
pub fn write_uint(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=0x7f => out.push(n as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, n as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// Writes a negative fixint tag (-32..=-1).
fn write_tag(out: &mut Vec<u8>, tag: i8) {
    debug_assert!((-32..0).contains(&tag));
    out.push(tag as u8);
}

/// Writes a UTF-8 string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let len = s.len();
    match len {
        0..=31 => out.push(0xa0 | len as u8),
        32..=0xff => out.extend_from_slice(&[0xd9, len as u8]),
        0x100..=0xffff => {
            out.push(0xda);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdb);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(s.as_bytes());
}

/// Writes binary data as msgpack bin.
pub fn write_bin(out: &mut Vec<u8>, bytes: &[u8]) {
    write_bin_header(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Writes the header of a msgpack bin of `len` bytes (the bytes follow).
pub fn write_bin_header(out: &mut Vec<u8>, len: usize) {
    match len {
        0..=0xff => out.extend_from_slice(&[0xc4, len as u8]),
        0x100..=0xffff => {
            out.push(0xc5);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0xc6);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }
}

/// `[-1, V]`: GET found a value.
pub fn write_found(out: &mut Vec<u8>, value: &[u8]) {
    write_found_header(out);
    out.extend_from_slice(value);
}

/// The bytes of `[-1, V]` before V.
pub fn write_found_header(out: &mut Vec<u8>) {
    out.push(0x92);
    write_tag(out, TAG_FOUND);
}

/// `[-2]`: the key is absent.
pub fn write_not_found(out: &mut Vec<u8>) {
    out.push(0x91);
    write_tag(out, TAG_NOT_FOUND);
}

/// `[-3, V, version]`: GETV found a value.
pub fn write_versioned(out: &mut Vec<u8>, value: &[u8], version: u64) {
    write_versioned_header(out);
    out.extend_from_slice(value);
    write_uint(out, version);
}

/// The bytes of `[-3, V, version]` before V.
pub fn write_versioned_header(out: &mut Vec<u8>) {
    out.push(0x93);
    write_tag(out, TAG_VERSIONED);
}

/// `[-4, n]`: PUTV applied (n = new version) or RM (n = 1 existed, 0 did not).
pub fn write_done(out: &mut Vec<u8>, n: u64) {
    out.push(0x92);
    write_tag(out, TAG_DONE);
    write_uint(out, n);
}

/// `[-5, current]`: PUTV's expected version did not match.
pub fn write_version_conflict(out: &mut Vec<u8>, current: u64) {
    out.push(0x92);
    write_tag(out, TAG_VERSION_CONFLICT);
    write_uint(out, current);
}

/// `[-6, {name: integer}]`: STATS.
pub fn write_stats<'a>(out: &mut Vec<u8>, entries: impl ExactSizeIterator<Item = (&'a str, u64)>) {
    out.push(0x92);
    write_tag(out, TAG_STATS);
    write_map_len(out, entries.len() as u32);
    for (name, value) in entries {
        write_str(out, name);
        write_uint(out, value);
    }
}

/// `[-10, me, [[name, "ip:port", [[first, last]…]]…]]`: SLOTMAP, the
/// cluster's nodes as the node named `me` sees them.
pub fn write_slot_map(out: &mut Vec<u8>, me: &str, nodes: &[super::message::ClusterNode]) {
    out.push(0x93);
    write_tag(out, TAG_SLOT_MAP);
    write_str(out, me);
    write_array_len(out, nodes.len() as u32);
    for node in nodes {
        out.push(0x93);
        write_str(out, &node.name);
        write_str(out, &node.addr.to_string());
        write_array_len(out, node.slots.len() as u32);
        for range in &node.slots {
            out.push(0x92);
            write_uint(out, u64::from(range.first));
            write_uint(out, u64::from(range.last));
        }
    }
}

/// `[-9, CODE, message]`: an error element.
/// Counted by code for `/metrics` (see `proto::error`).
pub fn write_error(out: &mut Vec<u8>, code: ErrorCode, message: &str) {
    super::error::count_written(code);
    out.push(0x93);
    write_tag(out, TAG_ERROR);
    write_str(out, code.as_str());
    write_str(out, message);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(v: rmpv::Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &v).expect("encode");
        out
    }

    #[test]
    fn integers_match_a_reference_msgpack_encoder() {
        for n in [
            0u64,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_uint(&mut out, n);
            assert_eq!(out, encoded(n.into()), "{n}");
        }
    }

    #[test]
    fn signed_integers_match_a_reference_msgpack_encoder() {
        for n in [
            0i64,
            1,
            -1,
            -2,
            -32,
            -33,
            -128,
            -129,
            -32_768,
            -32_769,
            i64::from(i32::MIN),
            i64::from(i32::MIN) - 1,
            i64::MIN,
            i64::MAX,
        ] {
            let mut out = Vec::new();
            write_int(&mut out, n);
            assert_eq!(out, encoded(n.into()), "{n}");
        }
    }

    #[test]
    fn headers_and_strings_match_a_reference_msgpack_encoder() {
        for len in [0u32, 15, 16, 65_535, 65_536] {
            let mut out = Vec::new();
            write_array_len(&mut out, len);
            let mut reference = Vec::new();
            rmp::encode::write_array_len(&mut reference, len).expect("encode");
            assert_eq!(out, reference, "array {len}");
        }
        for len in [0usize, 31, 32, 255, 256, 70_000] {
            let s = "x".repeat(len);
            let mut out = Vec::new();
            write_str(&mut out, &s);
            assert_eq!(out, encoded(s.as_str().into()), "str {len}");
        }
    }

    #[test]
    fn result_elements_have_the_documented_shape() {
        let mut out = Vec::new();
        write_versioned(&mut out, &[0xa1, b'v'], 300);
        assert_eq!(out, [0x93, 0xfd, 0xa1, b'v', 0xcd, 0x01, 0x2c]);
        out.clear();
        write_error(&mut out, ErrorCode::Conflict, "k");
        assert_eq!(
            out,
            encoded(rmpv::Value::Array(vec![
                (-9).into(),
                "CONFLICT".into(),
                "k".into()
            ]))
        );
    }
}
