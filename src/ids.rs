//! Identities and routing, at the bottom of the crate: every module may use
//! them and they use nothing of it.
//!
//! - [`ShardId`]: a shard's index; shard i runs on executor i.
//! - [`TxnId`]: a cross-shard ATOMIC batch, named by its coordinator and a
//!   sequence number (logged in PREPARE, DECIDE and COMMIT records).
//! - [`Router`]: key → owning shard. `shard = ahash(key) % nr_shards` with
//!   fixed seeds, so a key's owner is the same in every process, every restart
//!   and every build of this version (the ahash version is pinned in
//!   Cargo.toml, because ahash does not promise stable output across versions;
//!   a test below pins known values).

/// Index of a shard, `0..nr_shards`; shard i runs on executor i.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub usize);

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}

/// Names a cross-shard batch: the coordinating shard and its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxnId {
    pub coordinator: ShardId,
    pub seq: u64,
}

impl std::fmt::Display for TxnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "txn {}.{}", self.coordinator.0, self.seq)
    }
}

/// Seeds for the routing hash. Changing them moves every key to another shard.
const ROUTING_SEEDS: [u64; 4] = [
    0x636f_7265_6b76_0001,
    0x9e37_79b9_7f4a_7c15,
    0xbf58_476d_1ce4_e5b9,
    0x94d0_49bb_1331_11eb,
];

/// Decides which shard owns a key.
#[derive(Debug, Clone)]
pub struct Router {
    nr_shards: usize,
    hasher: ahash::RandomState,
}

impl Router {
    pub fn new(nr_shards: usize) -> Router {
        assert!(nr_shards > 0, "a server has at least one shard");
        let [a, b, c, d] = ROUTING_SEEDS;
        Router {
            nr_shards,
            hasher: ahash::RandomState::with_seeds(a, b, c, d),
        }
    }

    pub fn nr_shards(&self) -> usize {
        self.nr_shards
    }

    /// The routing hash of a key (before the modulo).
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard that owns `key`.
    pub fn route(&self, key: &[u8]) -> ShardId {
        ShardId((self.hash(key) % self.nr_shards as u64) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_hash_is_stable() {
        // If this fails, keys would move between shards after an upgrade: the
        // ahash version or the seeds changed. Pin them back, or write a migration.
        let router = Router::new(4);
        let hashes: Vec<u64> = [&b""[..], b"a", b"status", b"key:000001"]
            .iter()
            .map(|k| router.hash(k))
            .collect();
        assert_eq!(hashes, GOLDEN_HASHES);
    }

    const GOLDEN_HASHES: [u64; 4] = [
        10491136444524614951,
        13459409450065459462,
        14569308910146132900,
        3285934634610343355,
    ];

    #[test]
    fn keys_spread_over_all_shards() {
        let router = Router::new(4);
        let mut counts = [0usize; 4];
        for i in 0..10_000 {
            counts[router.route(format!("key:{i}").as_bytes()).0] += 1;
        }
        assert!(counts.iter().all(|&c| c > 2_000), "{counts:?}");
    }
}
