//! Identities and routing, at the bottom of the crate: every module may use
//! them and they use nothing of it.
//!
//! - [`ShardId`]: a shard's index; shard i runs on executor i.
//! - [`TxnId`]: a cross-shard ATOMIC batch, named by its coordinator and a
//!   sequence number (logged in PREPARE, DECIDE and COMMIT records).
//! - [`Router`]: key → owning shard, by one of two [`Routing`]s. By hash (the
//!   default): `shard = ahash(key) % nr_shards` with fixed seeds, so a key's
//!   owner is the same in every process, every restart and every build of
//!   this version (the ahash version is pinned in Cargo.toml, because ahash
//!   does not promise stable output across versions; a test below pins known
//!   values). By slot (a cluster node): the key's Redis Cluster hash slot
//!   ([`crate::slot`]) picks the shard, so every key of one slot — every key
//!   with one hash tag — is on one shard and a single-slot command touches
//!   one shard.

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

use crate::slot::key_slot;

/// Seeds for the routing hash. Changing them moves every key to another shard.
const ROUTING_SEEDS: [u64; 4] = [
    0x636f_7265_6b76_0001,
    0x9e37_79b9_7f4a_7c15,
    0xbf58_476d_1ce4_e5b9,
    0x94d0_49bb_1331_11eb,
];

/// How keys are spread over shards. Recorded with the logs: a restart with
/// the other routing moves every key, as one with another shard count does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Routing {
    /// By the routing hash of the whole key.
    #[default]
    Hash,
    /// By the key's hash slot: shard `slot mod nr_shards`. Dealt round
    /// like this, rather than in runs, every shard of a node gets an equal
    /// share of the node's slots whichever range of them the node owns (a
    /// node of a three-node cluster owns a third of the slots, and runs would
    /// leave two thirds of its shards idle); and the shard of a slot depends
    /// only on the shard count, which the logs record, not on the cluster
    /// file, which may change between restarts.
    Slots,
}

impl Routing {
    /// The word the log directory records (`log/SHARDS`).
    pub fn name(self) -> &'static str {
        match self {
            Routing::Hash => "hash",
            Routing::Slots => "slots",
        }
    }

    pub fn from_name(name: &str) -> Option<Routing> {
        [Routing::Hash, Routing::Slots]
            .into_iter()
            .find(|r| r.name() == name)
    }
}

/// Decides which shard owns a key.
#[derive(Debug, Clone)]
pub struct Router {
    nr_shards: usize,
    routing: Routing,
    hasher: ahash::RandomState,
}

impl Router {
    /// Routing by hash, the default.
    pub fn new(nr_shards: usize) -> Router {
        Router::with_routing(nr_shards, Routing::Hash)
    }

    pub fn with_routing(nr_shards: usize, routing: Routing) -> Router {
        assert!(nr_shards > 0, "a server has at least one shard");
        let [a, b, c, d] = ROUTING_SEEDS;
        Router {
            nr_shards,
            routing,
            hasher: ahash::RandomState::with_seeds(a, b, c, d),
        }
    }

    pub fn nr_shards(&self) -> usize {
        self.nr_shards
    }

    pub fn routing(&self) -> Routing {
        self.routing
    }

    /// The routing hash of a key (before the modulo).
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard that owns `key`.
    pub fn route(&self, key: &[u8]) -> ShardId {
        match self.routing {
            Routing::Hash => ShardId((self.hash(key) % self.nr_shards as u64) as usize),
            Routing::Slots => self.slot_owner(key_slot(key)),
        }
    }

    /// With slot routing, the shard that owns `slot`.
    pub fn slot_owner(&self, slot: u16) -> ShardId {
        ShardId(usize::from(slot) % self.nr_shards)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::NR_SLOTS;

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

    #[test]
    fn slot_routing_keeps_a_hash_tag_on_one_shard_and_spreads_the_rest() {
        let router = Router::with_routing(3, Routing::Slots);
        let tagged = router.route(b"{user42}.name");
        assert_eq!(router.route(b"{user42}.email"), tagged);
        assert_eq!(router.route(b"user42"), tagged);
        assert_eq!(router.slot_owner(0), ShardId(0));
        assert_eq!(router.slot_owner(NR_SLOTS - 1), ShardId(0));
        assert_eq!(router.slot_owner(NR_SLOTS - 2), ShardId(2));
        let mut counts = [0usize; 3];
        for i in 0..9_000 {
            counts[router.route(format!("key:{i}").as_bytes()).0] += 1;
        }
        assert!(counts.iter().all(|&c| c > 2_000), "{counts:?}");
        // A cluster node owning a third of the slots uses all its shards.
        let router = Router::with_routing(4, Routing::Slots);
        let mut owned = [0usize; 4];
        for slot in 0..5461 {
            owned[router.slot_owner(slot).0] += 1;
        }
        assert!(owned.iter().all(|&n| n >= 5461 / 4), "{owned:?}");
        for routing in [Routing::Hash, Routing::Slots] {
            assert_eq!(Routing::from_name(routing.name()), Some(routing));
        }
    }
}
