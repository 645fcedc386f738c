//! What each message of each connection contains: which keys its SETs and GETs
//! touch and which value each SET writes. Pure arithmetic, no I/O, no
//! allocation after construction; the protocol modules turn a [`Plan`] into bytes.
//!
//! Key space. `--keys` keys are split into one contiguous partition per
//! connection, so no two connections ever write the same key and every GET's
//! reply is known in advance (a message as a whole is not atomic: a shared key
//! could be overwritten by another connection between this message's SET and
//! GET). Message `m` of a connection uses the next `sets` keys of its partition
//! in rotation, from a start point drawn from `--seed`; they are distinct
//! because validation keeps a partition at least `sets` keys long.
//!
//! Requests of a message, in order:
//! - SET `j` (`j < sets`) writes `value(key_j, m)` to `key_j`;
//! - GET `j` reads `key_(j % sets)`, one of the keys just set, so its expected
//!   result is `[-1, value]`.
//!
//! With `sets = 0` there is nothing to read back; the GETs then read keys of a
//! namespace the load generator never writes (`nil-…`) and expect not-found —
//! the concave seed's "gets of missing keys" benchmark.
//!
//! Byte layout (every key is exactly `--key-bytes` long, so messages have a
//! fixed shape and can be rendered from a template by patching holes):
//!
//! ```text
//! key:   "key-" | key_bytes - 4 lowercase hex digits of the key index
//!        "nil-" | ...                                    (never written)
//! value: 16 hex digits of mix(seed, key index, message), repeated and cut to
//!        --value-bytes
//! ```
//! Values change with every message, so a stale or misrouted read is a mismatch.

/// Bytes of the key prefix (`key-` or `nil-`).
pub const KEY_PREFIX_BYTES: usize = 4;
/// Shortest key: the prefix and 4 hex digits.
pub const MIN_KEY_BYTES: usize = KEY_PREFIX_BYTES + 4;
/// Longest key: the prefix and the 16 hex digits of a u64.
pub const MAX_KEY_BYTES: usize = KEY_PREFIX_BYTES + 16;
const KEY_PREFIX: &[u8; 4] = b"key-";
const MISSING_KEY_PREFIX: &[u8; 4] = b"nil-";
const HEX: &[u8; 16] = b"0123456789abcdef";

/// The shape every message shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub sets: u32,
    pub gets: u32,
    /// Between [`MIN_KEY_BYTES`] and [`MAX_KEY_BYTES`].
    pub key_bytes: usize,
    pub value_bytes: usize,
}

impl Shape {
    pub fn ops(&self) -> u32 {
        self.sets + self.gets
    }

    /// How many distinct keys keys of `key_bytes` can name.
    pub fn key_capacity(&self) -> u64 {
        let digits = self.key_bytes.saturating_sub(KEY_PREFIX_BYTES) as u32;
        16u64.checked_pow(digits).unwrap_or(u64::MAX)
    }

    /// Whether GETs read keys that were just set (else keys never written).
    pub fn gets_find_values(&self) -> bool {
        self.sets > 0
    }
}

/// The key partition and seed of one connection.
#[derive(Debug, Clone, Copy)]
pub struct KeyRange {
    base: u64,
    len: u64,
    start: u64,
}

impl KeyRange {
    /// Partition `conn` of `nr_conns` over `nr_keys` keys (validated: `nr_keys >= nr_conns`).
    pub fn for_connection(conn: u64, nr_conns: u64, nr_keys: u64, seed: u64) -> KeyRange {
        let len = nr_keys / nr_conns;
        assert!(len > 0, "key space smaller than the number of connections");
        KeyRange {
            base: conn * len,
            len,
            start: mix(seed ^ 0x6b65_7973, conn) % len,
        }
    }

    /// Index of the `i`-th key that message `message` uses.
    fn key(&self, message: u64, per_message: u64, i: u64) -> u64 {
        let pos = (self.start + message.wrapping_mul(per_message) + i) % self.len;
        self.base + pos
    }
}

/// Keys and values of one message; reused from message to message.
#[derive(Debug, Default)]
pub struct Plan {
    /// Key index per request, SETs first, then GETs.
    pub keys: Vec<u64>,
    /// Value seed per SET.
    pub values: Vec<u64>,
    missing_keys: bool,
}

impl Plan {
    /// Fills in message `message` of the connection owning `range`.
    pub fn fill(&mut self, shape: &Shape, range: &KeyRange, seed: u64, message: u64) {
        self.keys.clear();
        self.values.clear();
        self.missing_keys = shape.sets == 0;
        // Keys drawn from the partition per message: the SETs', or the GETs' if none.
        let per_message = u64::from(if shape.sets > 0 {
            shape.sets
        } else {
            shape.gets
        });
        for j in 0..u64::from(shape.sets) {
            let key = range.key(message, per_message, j);
            self.keys.push(key);
            self.values.push(mix(seed ^ key, message));
        }
        for j in 0..u64::from(shape.gets) {
            let key = match shape.sets {
                0 => range.key(message, per_message, j),
                sets => self.keys[(j % u64::from(sets)) as usize],
            };
            self.keys.push(key);
        }
    }

    /// Writes request `op`'s key into `out` (the whole slice, `key_bytes` long).
    pub fn write_key(&self, op: usize, out: &mut [u8]) {
        let prefix = if self.missing_keys {
            MISSING_KEY_PREFIX
        } else {
            KEY_PREFIX
        };
        out[..KEY_PREFIX_BYTES].copy_from_slice(prefix);
        write_hex(&mut out[KEY_PREFIX_BYTES..], self.keys[op]);
    }

    /// Writes SET `set`'s value into `out` (the whole slice).
    pub fn write_value(&self, set: usize, out: &mut [u8]) {
        let mut digits = [0u8; 16];
        write_hex(&mut digits, self.values[set]);
        for chunk in out.chunks_mut(digits.len()) {
            chunk.copy_from_slice(&digits[..chunk.len()]);
        }
    }
}

/// Writes the low `out.len()` hex digits of `n`, most significant first.
fn write_hex(out: &mut [u8], mut n: u64) {
    for digit in out.iter_mut().rev() {
        *digit = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// splitmix64 of two words: cheap, and every input bit affects every output bit.
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(b)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(sets: u32, gets: u32) -> Shape {
        Shape {
            sets,
            gets,
            key_bytes: 16,
            value_bytes: 20,
        }
    }

    fn key_text(plan: &Plan, op: usize) -> String {
        let mut key = [0u8; 16];
        plan.write_key(op, &mut key);
        String::from_utf8(key.to_vec()).expect("ascii key")
    }

    #[test]
    fn gets_read_the_keys_the_same_message_set() {
        let range = KeyRange::for_connection(1, 4, 400, 7);
        let mut plan = Plan::default();
        plan.fill(&shape(3, 5), &range, 7, 0);
        assert_eq!(plan.keys.len(), 8);
        assert_eq!(
            plan.keys[3..],
            [
                plan.keys[0],
                plan.keys[1],
                plan.keys[2],
                plan.keys[0],
                plan.keys[1]
            ]
        );
        assert!(plan.keys.iter().all(|k| (100..200).contains(k)));
    }

    #[test]
    fn keys_of_a_message_are_distinct_and_rotate_through_the_partition() {
        let range = KeyRange::for_connection(0, 1, 10, 3);
        let mut plan = Plan::default();
        let mut seen = std::collections::BTreeSet::new();
        for message in 0..5 {
            plan.fill(&shape(2, 0), &range, 3, message);
            assert_ne!(plan.keys[0], plan.keys[1]);
            seen.extend(plan.keys.iter().copied());
        }
        assert_eq!(
            seen.len(),
            10,
            "5 messages of 2 keys cover a partition of 10"
        );
    }

    #[test]
    fn keys_and_values_have_the_documented_bytes() {
        let range = KeyRange::for_connection(0, 1, 1 << 20, 0);
        let mut plan = Plan::default();
        plan.fill(&shape(1, 1), &range, 0, 0);
        plan.keys[0] = 0xabc;
        assert_eq!(key_text(&plan, 0), "key-000000000abc");
        plan.values[0] = 0x0123_4567_89ab_cdef;
        let mut value = [0u8; 20];
        plan.write_value(0, &mut value);
        assert_eq!(&value, b"0123456789abcdef0123");
    }

    #[test]
    fn short_keys_keep_the_prefix_and_the_low_hex_digits() {
        let shape = Shape {
            key_bytes: 10,
            ..shape(1, 0)
        };
        assert_eq!(shape.key_capacity(), 1 << 24);
        let mut plan = Plan::default();
        plan.fill(&shape, &KeyRange::for_connection(0, 1, 100, 0), 0, 0);
        plan.keys[0] = 0x2a;
        let mut key = [0u8; 10];
        plan.write_key(0, &mut key);
        assert_eq!(&key, b"key-00002a");
    }

    #[test]
    fn values_change_with_every_message() {
        let range = KeyRange::for_connection(0, 1, 1, 9);
        let mut plan = Plan::default();
        plan.fill(&shape(1, 1), &range, 9, 0);
        let first = plan.values[0];
        plan.fill(&shape(1, 1), &range, 9, 1);
        assert_eq!(plan.keys[0], 0, "a one-key partition reuses its key");
        assert_ne!(plan.values[0], first);
    }

    #[test]
    fn read_only_messages_use_the_never_written_namespace() {
        let range = KeyRange::for_connection(0, 1, 100, 0);
        let mut plan = Plan::default();
        plan.fill(&shape(0, 2), &range, 0, 0);
        assert!(key_text(&plan, 0).starts_with("nil-"));
        assert_ne!(plan.keys[0], plan.keys[1]);
    }
}
