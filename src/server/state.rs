//! The little state every shard of one server shares: the live connection count
//! (for the connection limit and STATS) and the shutdown flag. Only atomics;
//! nothing here guards shard data.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[derive(Debug)]
pub struct ServerState {
    pub nr_shards: usize,
    pub max_connections: usize,
    connections: AtomicUsize,
    shutting_down: AtomicBool,
    shards_drained: AtomicUsize,
}

impl ServerState {
    pub fn new(nr_shards: usize, max_connections: usize) -> ServerState {
        ServerState {
            nr_shards,
            max_connections,
            connections: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            shards_drained: AtomicUsize::new(0),
        }
    }

    /// Counts a new connection, unless that would exceed the limit.
    pub fn admit_connection(&self) -> bool {
        let previous = self.connections.fetch_add(1, Ordering::Relaxed);
        if previous >= self.max_connections {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
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
