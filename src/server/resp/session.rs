//! What a RESP or text connection remembers between commands: its dialect
//! (HELLO), its name and id (CLIENT), an open MULTI block and WATCHed keys.

use super::reply::Dialect;
use std::sync::atomic::{AtomicU64, Ordering};

/// Client ids, unique in the process (CLIENT ID, HELLO).
static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

pub struct Session {
    pub dialect: Dialect,
    pub client_id: u64,
    pub client_name: Option<Vec<u8>>,
    /// Open after MULTI, until EXEC or DISCARD.
    pub multi: Option<Multi>,
    /// Keys WATCHed and their versions when they were; EXEC runs nothing if
    /// one has changed since.
    pub watched: Vec<(Vec<u8>, u64)>,
}

/// A MULTI block being queued.
#[derive(Default)]
pub struct Multi {
    /// Each queued command's arguments (owned: the receive buffer moves on).
    pub queued: Vec<Vec<Vec<u8>>>,
    /// Bytes of the queued arguments: a block runs as one ATOMIC batch, so
    /// it is held to `--max-frame-bytes` like one request message.
    pub queued_bytes: usize,
    /// A command was refused while queueing: EXEC answers EXECABORT.
    pub failed: bool,
    /// On a cluster node: the hash slot of the first keys queued (a block
    /// runs on one node, atomically, only if all its keys, and the keys
    /// WATCHed, share one).
    pub slot: Option<u16>,
    /// On a cluster node: a queued command's keys are in another slot than
    /// `slot`: EXEC answers CROSSSLOT, as Redis Cluster's does.
    pub spans_slots: bool,
}

impl Session {
    pub fn new(dialect: Dialect) -> Session {
        Session {
            dialect,
            client_id: NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed),
            client_name: None,
            multi: None,
            watched: Vec::new(),
        }
    }

    /// Remembers `key` at `version`, unless it is already watched (the first
    /// WATCH of a key counts, as in Redis).
    pub fn watch(&mut self, key: &[u8], version: u64) {
        if !self.watched.iter().any(|(k, _)| k == key) {
            self.watched.push((key.to_vec(), version));
        }
    }
}
