//! The little state every shard of one server shares: the live connection count
//! (for the connection limit and STATS) and how many were accepted and refused
//! (for `/metrics`), whether a backup runs, the shutdown flag, and each shard's
//! health for `/health`, which any shard answers for all of them, and the
//! wake guard that watches the shards' executors (`net::wake_guard`). Atomics,
//! plus each shard's poison message in a `OnceLock` (see `ShardStatus`) and
//! the guard's list; nothing here guards shard data.

use crate::ids::ShardId;
use crate::net::wake_guard::WakeGuard;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;

#[derive(Debug)]
pub struct ServerState {
    pub nr_shards: usize,
    pub max_connections: usize,
    connections: AtomicUsize,
    connections_accepted: AtomicU64,
    /// Refused over `--max-connections`.
    connections_refused: AtomicU64,
    /// Set while a backup runs: one at a time (see `crate::backup`).
    backup_running: AtomicBool,
    shutting_down: AtomicBool,
    shards_drained: AtomicUsize,
    /// Indexed by shard.
    shards: Box<[ShardStatus]>,
    /// Interrupts a shard whose executor sleeps through its own wake-ups.
    pub wake_guard: Arc<WakeGuard>,
}

/// What other shards may know of one shard's health.
#[derive(Debug, Default)]
struct ShardStatus {
    /// Set once the shard serves requests (its table, log and mesh are ready).
    serving: AtomicBool,
    /// Why its log was poisoned. The message is kept here rather than only in
    /// the shard's own `LogWriter` because `/health` on any shard must report
    /// it, and the writer lives on its shard's executor. A `OnceLock` fits:
    /// the shard's log writes it at most once (the first failure wins, as in
    /// the writer) and it never changes after, so readers take no lock. It is
    /// not shard data: no request reads or writes it.
    poisoned: OnceLock<String>,
}

/// One shard's health, as `/health` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardHealth {
    /// Not serving yet: the server is still starting.
    Recovering,
    Serving,
    ShuttingDown,
    /// Its log failed a write or sync: writes are answered IOERR until restart.
    LogPoisoned(String),
}

impl ServerState {
    pub fn new(nr_shards: usize, max_connections: usize) -> ServerState {
        ServerState {
            nr_shards,
            max_connections,
            connections: AtomicUsize::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            backup_running: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            shards_drained: AtomicUsize::new(0),
            shards: (0..nr_shards).map(|_| ShardStatus::default()).collect(),
            wake_guard: Arc::default(),
        }
    }

    /// Records that `shard` serves requests.
    pub fn shard_serving(&self, shard: ShardId) {
        self.shards[shard.0].serving.store(true, Ordering::Release);
    }

    /// Records why `shard`'s log was poisoned; the first report stays.
    pub fn shard_log_poisoned(&self, shard: ShardId, cause: &str) {
        // An Err only means an earlier cause was recorded, which stays.
        let _ = self.shards[shard.0].poisoned.set(cause.to_owned());
    }

    /// `shard`'s health; a poisoned log is reported even while shutting down.
    pub fn shard_health(&self, shard: ShardId) -> ShardHealth {
        let status = &self.shards[shard.0];
        if let Some(cause) = status.poisoned.get() {
            ShardHealth::LogPoisoned(cause.clone())
        } else if self.is_shutting_down() {
            ShardHealth::ShuttingDown
        } else if status.serving.load(Ordering::Acquire) {
            ShardHealth::Serving
        } else {
            ShardHealth::Recovering
        }
    }

    /// Counts a new connection, unless that would exceed the limit.
    pub fn admit_connection(&self) -> bool {
        let previous = self.connections.fetch_add(1, Ordering::Relaxed);
        if previous >= self.max_connections {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            self.connections_refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Connections admitted since start, msgpack and HTTP.
    pub fn connections_accepted(&self) -> u64 {
        self.connections_accepted.load(Ordering::Relaxed)
    }

    /// Connections refused over `--max-connections` since start.
    pub fn connections_refused(&self) -> u64 {
        self.connections_refused.load(Ordering::Relaxed)
    }

    /// Marks a backup as running; false if one already is.
    pub fn begin_backup(&self) -> bool {
        !self.backup_running.swap(true, Ordering::AcqRel)
    }

    pub fn end_backup(&self) {
        self.backup_running.store(false, Ordering::Release);
    }

    pub fn release_connection(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Records that one shard has no connections left; returns how many have.
    pub fn shard_drained(&self) -> usize {
        self.shards_drained.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn all_shards_drained(&self) -> bool {
        self.shards_drained.load(Ordering::SeqCst) >= self.nr_shards
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_is_recovering_then_serving_and_its_first_poison_cause_stays() {
        let state = ServerState::new(2, 10);
        assert_eq!(state.shard_health(ShardId(1)), ShardHealth::Recovering);
        state.shard_serving(ShardId(1));
        assert_eq!(state.shard_health(ShardId(1)), ShardHealth::Serving);
        state.shard_log_poisoned(ShardId(1), "first");
        state.shard_log_poisoned(ShardId(1), "second");
        let poisoned = ShardHealth::LogPoisoned("first".into());
        assert_eq!(state.shard_health(ShardId(1)), poisoned);
        assert_eq!(state.shard_health(ShardId(0)), ShardHealth::Recovering);
        state.begin_shutdown();
        assert_eq!(state.shard_health(ShardId(0)), ShardHealth::ShuttingDown);
        assert_eq!(state.shard_health(ShardId(1)), poisoned);
    }
}
