//! The undo log of one ATOMIC batch on one shard: the state of each key before
//! the batch first wrote it. Rolling back restores exactly those states, so an
//! aborted batch leaves no trace in the table. Compaction reads it too: the
//! states before a prepared batch are the keys' committed states.

use crate::table::{Prior, Table};
use hashbrown::HashMap;

#[derive(Debug, Default)]
pub struct UndoLog {
    priors: HashMap<Box<[u8]>, Prior>,
}

impl UndoLog {
    /// Remembers `key`'s current state, unless this batch already wrote it.
    pub fn record(&mut self, table: &Table, key: &[u8]) {
        if !self.priors.contains_key(key) {
            self.priors.insert(key.into(), table.prior(key));
        }
    }

    /// Every key the batch wrote, with its state before the batch (read-only:
    /// compaction snapshots a prepared batch's keys as they were before it).
    pub fn priors(&self) -> impl Iterator<Item = (&[u8], &Prior)> + '_ {
        self.priors.iter().map(|(key, prior)| (&**key, prior))
    }

    /// Puts every written key back as it was before the batch.
    pub fn roll_back(self, table: &mut Table) {
        for (key, prior) in self.priors {
            table.restore(&key, prior);
        }
    }
}
