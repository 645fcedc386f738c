//! A shard's last log sync at shutdown, and what the server says when it fails.
//!
//! After its connections have drained, each shard writes and fdatasyncs the
//! rest of its log ([`settle`]): the records no reply waited for (the outcome
//! records of cross-shard batches) and, under `--fsync interval|never`, the
//! acknowledged writes since the last sync. If that fails, or the log was
//! poisoned earlier, the shard reports an [`UnsyncedLog`]; the server then
//! exits non-zero with every such shard named and what may not be on stable
//! storage, instead of "shut down cleanly".

use crate::ids::ShardId;
use crate::log::FsyncMode;
use crate::shard::Shard;
use std::fmt;

/// A shard whose log was not wholly on stable storage at shutdown.
#[derive(Debug)]
pub struct UnsyncedLog {
    pub shard: ShardId,
    /// Why: the failed write or sync that poisoned the log.
    pub cause: String,
    /// Bytes written to the log file and not known to be on stable storage.
    pub unsynced_bytes: u64,
    pub fsync: FsyncMode,
}

/// Writes and fdatasyncs the rest of the shard's log (if it has one).
pub async fn settle(shard: &Shard, fsync: FsyncMode) -> Result<(), UnsyncedLog> {
    let Some(log) = shard.log() else {
        return Ok(());
    };
    match shard.settle_all().await {
        Ok(()) => Ok(()),
        Err(poisoned) => Err(UnsyncedLog {
            shard: shard.id(),
            cause: poisoned.0,
            unsynced_bytes: log.unsynced_bytes(),
            fsync,
        }),
    }
}

impl fmt::Display for UnsyncedLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (shard, bytes) = (self.shard, self.unsynced_bytes);
        if bytes == 0 {
            // The final fdatasync worked; the failure was an earlier write.
            return write!(
                f,
                "{shard}: its log failed earlier ({}); the writes since were answered IOERR, \
                 never acknowledged, and everything acknowledged is on stable storage",
                self.cause
            );
        }
        write!(
            f,
            "{shard}: the final log sync failed ({}); the last {bytes} bytes written to its \
             log may not be on stable storage. ",
            self.cause
        )?;
        let mode = match self.fsync {
            FsyncMode::Always => {
                return f.write_str(
                    "No acknowledged write is among them: with --fsync always every write was \
                     synced before it was acknowledged",
                )
            }
            FsyncMode::Interval(_) => "interval",
            FsyncMode::Never => "never",
        };
        write!(
            f,
            "They may hold writes acknowledged since its last successful sync (--fsync {mode} \
             acknowledges a write once it is written): those are in the OS page cache, where a \
             restarted server normally reads them, but not known to be on the device; a power \
             loss or an OS crash can lose them, and after a failed sync the kernel may discard \
             them"
        )
    }
}

/// Every shard's report, one after the other.
pub fn describe(logs: &[UnsyncedLog]) -> String {
    logs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsynced(unsynced_bytes: u64, fsync: FsyncMode) -> String {
        UnsyncedLog {
            shard: ShardId(1),
            cause: "log fdatasync failed: EIO".into(),
            unsynced_bytes,
            fsync,
        }
        .to_string()
    }

    #[test]
    fn the_report_says_what_each_fsync_mode_may_have_lost() {
        let never = unsynced(42, FsyncMode::Never);
        assert!(
            never.starts_with("shard-1: the final log sync failed"),
            "{never}"
        );
        assert!(never.contains("last 42 bytes"), "{never}");
        assert!(never.contains("writes acknowledged since"), "{never}");
        assert!(never.contains("power loss"), "{never}");
        let always = unsynced(42, FsyncMode::Always);
        assert!(always.contains("No acknowledged write"), "{always}");
        let earlier = unsynced(0, FsyncMode::Never);
        assert!(earlier.contains("everything acknowledged is on stable storage"));
    }
}
