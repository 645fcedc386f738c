//! The suites of servers that keep data — writes and batches across crashes,
//! torn and corrupt logs, fsync modes, group commit, compaction, write
//! pacing, resharding, backup, expiry — and the request and protocol
//! suites, run again on the disk engine (`--engine disk`: values only in
//! the log, read back from disk). Each suite's file is included as it is;
//! every server they start with the log engine, or with no engine named,
//! runs the disk engine here (`common::on_disk_engine`).

// Each suite brings its own `mod common;`, as it does in its own test binary.
#![allow(clippy::duplicate_mod)]

#[path = "atomic.rs"]
mod atomic;
#[path = "backup.rs"]
mod backup;
#[path = "compaction.rs"]
mod compaction;
#[path = "crash_batches.rs"]
mod crash_batches;
#[path = "crash_writes.rs"]
mod crash_writes;
#[path = "expiry.rs"]
mod expiry;
#[path = "fsync_modes.rs"]
mod fsync_modes;
#[path = "group_commit.rs"]
mod group_commit;
#[path = "log_records.rs"]
mod log_records;
#[path = "model.rs"]
mod model;
#[path = "pipelining.rs"]
mod pipelining;
#[path = "protocol.rs"]
mod protocol;
#[path = "read_modify_write.rs"]
mod read_modify_write;
#[path = "reshard.rs"]
mod reshard;
#[path = "resp_wire.rs"]
mod resp_wire;
#[path = "torn_and_corrupt_logs.rs"]
mod torn_and_corrupt_logs;
#[path = "write_pacing.rs"]
mod write_pacing;
