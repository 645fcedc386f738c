//! Key names, values, and which keys each connection uses. Pure arithmetic: the
//! workloads ask [`ConnKeys`] for key indices and write names and values with
//! [`write_key`] and [`write_value`] into buffers they own.
//!
//! # Names
//!
//! Every key is exactly `--key-bytes` long: a 4-byte namespace and the low hex
//! digits of the key's index, zero-padded when the key is longer than 20 bytes.
//!
//! ```text
//! "key-" | hex(index)   keys a connection owns: written and read back
//! "nil-" | hex(index)   keys nobody writes (gets of missing keys)
//! "N???" | hex(index)   fresh keys for PUTV version 0; ??? = 3 characters of a
//!                       per-run nonce, index = connection << 32 | n-th fresh key
//! "inc-" | hex(0)       the one counter every connection increments
//! value: 16 hex digits of a value seed, repeated and cut to --value-bytes
//! ```
//!
//! # Ownership
//!
//! `--keys` keys are split into one contiguous partition per connection, so no
//! two connections ever write the same key and every GET's reply is known in
//! advance (a message as a whole is not atomic: a shared key could be
//! overwritten by another connection between this message's SET and GET).
//!
//! # Placement (`--placement`, `--server-shards N`)
//!
//! corekv routes a key to shard `ahash(key) % N` ([`Router`]). With a placement,
//! each connection routes every key of its partition once, at start-up, and
//! buckets them by shard; a message's keys then come from the buckets:
//! - `one-shard`: all keys of message `m` on shard `(connection + m) % N`, so
//!   messages alternate between shards (for a connection that lands on shard 0
//!   of a 2-shard server, every other ATOMIC batch is local, the rest forwarded);
//! - `spread`: key `j` on shard `j % N`, so every message touches every shard.
//!
//! # A cluster node's keys (`--cluster`)
//!
//! Against a corekv cluster each connection talks to one node and keeps, of
//! its partition, only the keys whose hash slot that node owns
//! ([`ConnKeys::on_node`]): every request then goes to its key's node, and
//! a message never spans nodes. The workloads draw positions `0..owned_len()`
//! and name the key at each with [`ConnKeys::owned`].

use corekv::ids::Router;

/// Bytes of a key's namespace prefix.
pub const KEY_PREFIX_BYTES: usize = 4;
/// Shortest key: the prefix and 4 hex digits.
pub const MIN_KEY_BYTES: usize = KEY_PREFIX_BYTES + 4;
/// Longest key accepted (corekv's default key limit is 64 KiB; longer keys here
/// are only zero-padded indices).
pub const MAX_KEY_BYTES: usize = 256;
/// Fresh keys need 12 hex digits: 16 bits of connection, 32 of counter.
pub const MIN_FRESH_KEY_BYTES: usize = KEY_PREFIX_BYTES + 12;

pub const OWNED_PREFIX: [u8; 4] = *b"key-";
pub const MISSING_PREFIX: [u8; 4] = *b"nil-";
pub const COUNTER_PREFIX: [u8; 4] = *b"inc-";
const HEX: &[u8; 16] = b"0123456789abcdef";
const NONCE_ALPHABET: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Which server shards a message's keys live on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Every message's keys cover all shards (a cross-shard ATOMIC is a two-phase commit).
    Spread,
    /// All keys of a message on one shard (an ATOMIC takes the fast path).
    OneShard,
}

impl Placement {
    pub fn name(self) -> &'static str {
        match self {
            Placement::Spread => "spread",
            Placement::OneShard => "one-shard",
        }
    }
}

/// The namespace prefix of fresh keys for a run: `N` and three characters of `nonce`.
pub fn fresh_prefix(nonce: u64) -> [u8; 4] {
    let n = NONCE_ALPHABET.len() as u64;
    let char_at = |i: u32| NONCE_ALPHABET[((nonce / n.pow(i)) % n) as usize];
    [b'N', char_at(0), char_at(1), char_at(2)]
}

/// Index of fresh key `n` of connection `conn` (see the module doc).
pub fn fresh_index(conn: u64, n: u64) -> u64 {
    (conn << 32) | (n & 0xffff_ffff)
}

/// Writes `prefix` and the index as hex into `out` (the whole key).
pub fn write_key(prefix: &[u8; 4], index: u64, out: &mut [u8]) {
    out[..KEY_PREFIX_BYTES].copy_from_slice(prefix);
    write_hex(&mut out[KEY_PREFIX_BYTES..], index);
}

/// Writes the value of `seed` into `out` (the whole value).
pub fn write_value(seed: u64, out: &mut [u8]) {
    let mut digits = [0u8; 16];
    write_hex(&mut digits, seed);
    for chunk in out.chunks_mut(digits.len()) {
        chunk.copy_from_slice(&digits[..chunk.len()]);
    }
}

/// Writes the low `out.len()` hex digits of `n`, most significant first.
fn write_hex(out: &mut [u8], mut n: u64) {
    for digit in out.iter_mut().rev() {
        *digit = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// How many distinct indices keys of `key_bytes` can name.
pub fn key_capacity(key_bytes: usize) -> u64 {
    let digits = key_bytes.saturating_sub(KEY_PREFIX_BYTES) as u32;
    16u64.checked_pow(digits).unwrap_or(u64::MAX)
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

/// A placement request: how, over how many shards, for keys named with `prefix`.
#[derive(Debug, Clone, Copy)]
pub struct PlacementSpec {
    pub placement: Placement,
    pub nr_shards: usize,
    pub prefix: [u8; 4],
    pub key_bytes: usize,
    /// Keys each message takes.
    pub per_message: u64,
}

/// A partition too small for the placement asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "connection {conn}: only {found} of its {partition} keys live on shard {shard}, but each \
     message needs {needed} there; raise --keys"
)]
pub struct PlacementError {
    pub conn: u64,
    pub shard: usize,
    pub found: usize,
    pub needed: u64,
    pub partition: u64,
}

/// The keys of one connection: its partition, where its rotation starts, and
/// (with a placement) its keys bucketed by owning shard.
#[derive(Debug, Clone)]
pub struct ConnKeys {
    pub conn: u64,
    base: u64,
    len: u64,
    start: u64,
    placement: Option<Placement>,
    by_shard: Vec<Vec<u64>>,
    /// `--cluster`: the partition's keys that the connection's node owns.
    on_node: Option<Vec<u64>>,
    /// Namespace of this run's fresh keys.
    pub fresh_prefix: [u8; 4],
}

impl ConnKeys {
    /// Partition `conn` of `nr_conns` over `nr_keys` keys (validated: `nr_keys >= nr_conns`).
    pub fn new(conn: u64, nr_conns: u64, nr_keys: u64, seed: u64) -> ConnKeys {
        let len = nr_keys / nr_conns;
        assert!(len > 0, "key space smaller than the number of connections");
        ConnKeys {
            conn,
            base: conn * len,
            len,
            start: mix(seed ^ 0x6b65_7973, conn) % len,
            placement: None,
            by_shard: Vec::new(),
            on_node: None,
            fresh_prefix: fresh_prefix(0),
        }
    }

    pub fn with_fresh_prefix(mut self, prefix: [u8; 4]) -> ConnKeys {
        self.fresh_prefix = prefix;
        self
    }

    /// Routes every key of the partition and keeps them bucketed by shard.
    pub fn place(mut self, spec: &PlacementSpec) -> Result<ConnKeys, PlacementError> {
        let router = Router::new(spec.nr_shards);
        let mut by_shard = vec![Vec::new(); spec.nr_shards];
        let mut key = vec![0u8; spec.key_bytes];
        for index in self.base..self.base + self.len {
            write_key(&spec.prefix, index, &mut key);
            by_shard[router.route(&key).0].push(index);
        }
        let needed = match spec.placement {
            Placement::OneShard => spec.per_message,
            Placement::Spread => spec.per_message.div_ceil(spec.nr_shards as u64),
        };
        if let Some((shard, bucket)) = by_shard
            .iter()
            .enumerate()
            .find(|(_, b)| (b.len() as u64) < needed)
        {
            return Err(PlacementError {
                conn: self.conn,
                shard,
                found: bucket.len(),
                needed,
                partition: self.len,
            });
        }
        self.placement = Some(spec.placement);
        self.by_shard = by_shard;
        Ok(self)
    }

    /// Keeps only the partition's keys (named with `prefix`) that `owns`
    /// accepts: those of the connection's cluster node. At least `needed`
    /// must remain (the keys of one message).
    pub fn on_node(
        mut self,
        prefix: &[u8; 4],
        key_bytes: usize,
        needed: u64,
        owns: impl Fn(&[u8]) -> bool,
    ) -> Result<ConnKeys, String> {
        let mut key = vec![0u8; key_bytes];
        let kept: Vec<u64> = (self.base..self.base + self.len)
            .filter(|&index| {
                write_key(prefix, index, &mut key);
                owns(&key)
            })
            .collect();
        if (kept.len() as u64) < needed {
            return Err(format!(
                "connection {}: only {} of its {} keys are on its cluster node, but each \
                 message needs {needed}; raise --keys",
                self.conn,
                kept.len(),
                self.len
            ));
        }
        self.on_node = Some(kept);
        Ok(self)
    }

    /// First index and length of the partition.
    pub fn partition(&self) -> (u64, u64) {
        (self.base, self.len)
    }

    /// How many keys the connection uses: its partition, or with `--cluster`
    /// the part of it its node owns.
    pub fn owned_len(&self) -> u64 {
        self.on_node
            .as_ref()
            .map_or(self.len, |keys| keys.len() as u64)
    }

    /// The index of the connection's key at `pos` (below [`Self::owned_len`]).
    pub fn owned(&self, pos: u64) -> u64 {
        match &self.on_node {
            Some(keys) => keys[pos as usize],
            None => self.base + pos,
        }
    }

    /// Index of the `i`-th of the `per_message` keys message `message` uses.
    /// The keys of one message are distinct (validation keeps partitions and
    /// buckets at least that long).
    pub fn key(&self, message: u64, per_message: u64, i: u64) -> u64 {
        match self.placement {
            None => {
                let len = self.owned_len();
                let pos = (self.start % len + message.wrapping_mul(per_message) + i) % len;
                self.owned(pos)
            }
            Some(Placement::OneShard) => {
                let shard = (self.conn + message) as usize % self.by_shard.len();
                self.in_bucket(shard, message, per_message, i)
            }
            Some(Placement::Spread) => {
                let nr_shards = self.by_shard.len() as u64;
                let per_shard = per_message.div_ceil(nr_shards);
                self.in_bucket((i % nr_shards) as usize, message, per_shard, i / nr_shards)
            }
        }
    }

    fn in_bucket(&self, shard: usize, message: u64, per_message: u64, i: u64) -> u64 {
        let bucket = &self.by_shard[shard];
        let pos = (self.start + message.wrapping_mul(per_message) + i) % bucket.len() as u64;
        bucket[pos as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn key_text(prefix: &[u8; 4], index: u64, key_bytes: usize) -> String {
        let mut key = vec![0u8; key_bytes];
        write_key(prefix, index, &mut key);
        String::from_utf8(key).expect("ascii key")
    }

    fn shard_of(index: u64, router: &Router) -> usize {
        router
            .route(key_text(&OWNED_PREFIX, index, 16).as_bytes())
            .0
    }

    #[test]
    fn keys_and_values_have_the_documented_bytes() {
        assert_eq!(key_text(&OWNED_PREFIX, 0xabc, 16), "key-000000000abc");
        assert_eq!(key_text(&MISSING_PREFIX, 0x2a, 10), "nil-00002a");
        assert_eq!(
            key_text(&COUNTER_PREFIX, 0x1f, 24),
            "inc-0000000000000000001f",
            "long keys are zero-padded"
        );
        let mut value = [0u8; 20];
        write_value(0x0123_4567_89ab_cdef, &mut value);
        assert_eq!(&value, b"0123456789abcdef0123");
        assert_eq!(key_capacity(10), 1 << 24);
        assert_eq!(key_capacity(36), u64::MAX);
    }

    #[test]
    fn fresh_keys_are_unique_per_connection_and_namespaced_per_run() {
        assert_ne!(fresh_index(1, 0), fresh_index(0, 1));
        assert_eq!(fresh_index(3, 5), 0x3_0000_0005);
        let prefix = fresh_prefix(12_345);
        assert_eq!(prefix[0], b'N');
        assert!(prefix[1..].iter().all(u8::is_ascii_alphanumeric));
        assert_ne!(prefix, fresh_prefix(12_346));
        assert_ne!(prefix, OWNED_PREFIX);
    }

    #[test]
    fn keys_of_a_message_are_distinct_and_rotate_through_the_partition() {
        let keys = ConnKeys::new(0, 1, 10, 3);
        let mut seen = BTreeSet::new();
        for message in 0..5 {
            let (a, b) = (keys.key(message, 2, 0), keys.key(message, 2, 1));
            assert_ne!(a, b);
            seen.extend([a, b]);
        }
        assert_eq!(
            seen.len(),
            10,
            "5 messages of 2 keys cover a partition of 10"
        );
        let keys = ConnKeys::new(1, 4, 400, 7);
        assert!((0..50).all(|i| (100..200).contains(&keys.key(i, 3, i % 3))));
    }

    fn placed(placement: Placement, per_message: u64) -> ConnKeys {
        let spec = PlacementSpec {
            placement,
            nr_shards: 3,
            prefix: OWNED_PREFIX,
            key_bytes: 16,
            per_message,
        };
        ConnKeys::new(2, 4, 4_000, 9)
            .place(&spec)
            .expect("enough keys")
    }

    #[test]
    fn one_shard_placement_puts_a_message_on_one_shard_and_rotates_shards() {
        let router = Router::new(3);
        let keys = placed(Placement::OneShard, 8);
        let mut shards_used = BTreeSet::new();
        for message in 0..30 {
            let batch: BTreeSet<u64> = (0..8).map(|i| keys.key(message, 8, i)).collect();
            assert_eq!(batch.len(), 8, "distinct keys");
            let shards: BTreeSet<usize> = batch.iter().map(|&k| shard_of(k, &router)).collect();
            assert_eq!(shards.len(), 1, "message {message} on one shard");
            shards_used.extend(shards);
            assert!(batch.iter().all(|k| (2_000..3_000).contains(k)));
        }
        assert_eq!(shards_used.len(), 3);
    }

    #[test]
    fn spread_placement_covers_every_shard_in_every_message() {
        let router = Router::new(3);
        let keys = placed(Placement::Spread, 7);
        for message in 0..30 {
            let batch: BTreeSet<u64> = (0..7).map(|i| keys.key(message, 7, i)).collect();
            assert_eq!(batch.len(), 7, "distinct keys");
            let shards: BTreeSet<usize> = batch.iter().map(|&k| shard_of(k, &router)).collect();
            assert_eq!(shards.len(), 3, "message {message} covers all shards");
        }
    }

    #[test]
    fn a_partition_too_small_for_the_placement_is_refused() {
        let spec = PlacementSpec {
            placement: Placement::OneShard,
            nr_shards: 2,
            prefix: OWNED_PREFIX,
            key_bytes: 16,
            per_message: 16,
        };
        let err = ConnKeys::new(0, 10, 200, 1)
            .place(&spec)
            .expect_err("20 keys, 2 shards");
        assert_eq!(err.needed, 16);
        assert!(err.to_string().contains("raise --keys"), "{err}");
    }
}
