//! The task that keeps a shard's log compact: every [`COMPACTION_CHECK`], and
//! as soon as a write takes the log past the length at which it is due (the
//! writers tell it, `log::pacing`), it asks the shard whether its log is due
//! (`Shard::compaction_due`), checks that the file system has room for the
//! snapshot, takes it and runs [`compaction::compact`] (`log::compaction`
//! explains the steps), pacing the writes meanwhile (`log::pacing`).
//!
//! It logs changes, not every check:
//! - `compacted PATH: BEFORE → AFTER bytes (N keys) in S s` for each compaction;
//! - a compaction skipped for lack of free space once, when that starts, and
//!   once when there is room again;
//! - each failed compaction. After a failure the next attempt waits at least
//!   [`RETRY_AFTER_FAILURE`] and until the log has grown: retrying at once
//!   would write the same snapshot into the same failure;
//! - a failed directory sync after a switch once, and once when a retry (at
//!   every check) succeeds.
//!
//! The disk engine first merges its emptiest sealed segments (`log::merge`,
//! `--merge-live-percent`), pacing the writes only when the log and the
//! merge's inputs would pass the log's bound; it compacts the whole log only
//! when no segment is worth merging and the log is still due. Each merge is
//! logged (`merged N sealed segments …`); a failed one waits as a failed
//! compaction does.
//!
//! With the disk engine's segments (`log::segments`), rolls are held back
//! from the snapshot to the end of the compaction, and the sealed segments
//! the snapshot (a BASE) superseded are deleted once the switch is durable:
//! after the directory sync, never before (a lost rename would leave the old
//! active file with its segments gone).

use crate::entry::{Entry, Location, ValueCheck};
use crate::log::compaction::{self, CompactionError, LiveScale};
use crate::log::hint;
use crate::log::merge::{self, Floors, MergeError, MergePlan};
use crate::log::pacing::{self, Budget};
use crate::log::LogWriter;
use crate::shard::Shard;
use crate::txn::participant::Participant;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How often a shard checks whether its log needs compacting.
const COMPACTION_CHECK: Duration = Duration::from_millis(100);
/// The least time between a failed compaction and the next attempt.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The compactor's share of the shard against the requests' 1000 (glommio's
/// default task queue) while both have work to run.
const RECLAIM_SHARES: usize = 250;
/// While the compactor has work to run, the longest the requests' queue runs
/// before glommio looks at the compactor's again (requests arriving all the
/// time never empty their queue). glommio applies it from its next poll;
/// until then its 100 ms preemption period holds, so a writer that finds
/// the log due yields the requests' queue itself (`Shard::pace_writes`).
const RECLAIM_LATENCY: Duration = Duration::from_millis(1);

/// When a shard's log is worth reclaiming space from.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// `--compact-min-bytes`: no compaction or merge below this log size.
    pub min_bytes: u64,
    /// `--merge-live-percent` (`log::merge`; 0: no merges).
    pub merge_live_percent: u64,
}

/// Starts `compactor` ([`compact_when_needed`]) in a task queue of its own:
/// requests waiting to run go first, and the compactor gets its share
/// ([`RECLAIM_SHARES`]) of the shard, within [`RECLAIM_LATENCY`], when both
/// have work. Its writes yield that queue between chunks
/// (`log::compaction`); while writes are paced to it (`log::pacing`), they
/// wait and leave it the shard.
pub fn spawn(compactor: impl std::future::Future<Output = ()> + 'static) -> glommio::Task<()> {
    let queue = glommio::executor().create_task_queue(
        glommio::Shares::Static(RECLAIM_SHARES),
        glommio::Latency::Matters(RECLAIM_LATENCY),
        "compactor",
    );
    // Only a queue that does not exist is refused, and this executor just
    // made it.
    glommio::spawn_local_into(compactor, queue).expect("the compactor's task queue exists")
}

/// Compacts the shard's log whenever it has grown past the policy.
pub async fn compact_when_needed(shard: Rc<Shard>, path: PathBuf, policy: Policy) {
    let mut compactor = Compactor {
        shard,
        path,
        min_bytes: policy.min_bytes,
        merge_live_percent: policy.merge_live_percent,
        failed: None,
        short_of_room: false,
        directory_unsynced: false,
        floors: Floors::default(),
    };
    // After a compaction the log may be due again at once (the writes went
    // on meanwhile): the next one then starts without an await in between,
    // so that no unpaced writes slip in (`log::pacing`).
    let mut due_again = false;
    compactor.call_when_due();
    loop {
        let periodic = match due_again {
            true => false,
            false => {
                let timer = async {
                    glommio::timer::sleep(COMPACTION_CHECK).await;
                    true
                };
                let wanted = async {
                    compactor.shard.pacing().compaction_wanted().await;
                    false
                };
                futures_lite::future::or(timer, wanted).await
            }
        };
        let Some(log) = compactor.shard.log().cloned() else {
            return;
        };
        if log.rewrites_stopped() {
            return;
        }
        let compacted = compactor.check(&log).await;
        let due_now = compactor
            .shard
            .compaction_due(compactor.min_bytes)
            .is_some();
        // A writer's call that found the log not due after all (the live
        // data grew with it) is renewed at the new length at once: waiting
        // for the periodic check would leave the writes unpaced until then.
        // A log still due and not compacted (no room, a failure to back off
        // from) is asked about again only at the periodic check, or every
        // round would wake this task.
        if periodic || compacted || !due_now {
            compactor.call_when_due();
        }
        due_again = compacted && due_now;
    }
}

/// One shard's compaction state between checks.
struct Compactor {
    shard: Rc<Shard>,
    path: PathBuf,
    min_bytes: u64,
    merge_live_percent: u64,
    /// After a failed compaction: when, and the log's end then.
    failed: Option<(Instant, u64)>,
    /// The last check skipped compaction for lack of free space.
    short_of_room: bool,
    /// A switch happened but the directory sync after it failed.
    directory_unsynced: bool,
    /// What the merges' outputs hold that the table does not count.
    floors: Floors,
}

impl Compactor {
    /// Asks the writers to wake this task as soon as the log is due
    /// (`log::pacing`), unless a compaction could not start now anyway.
    fn call_when_due(&self) {
        let due_past = match self.failed.is_some() || self.short_of_room {
            true => u64::MAX,
            false => compaction::due_past(self.shard.live_bytes(), self.min_bytes),
        };
        self.shard.pacing().call_compactor_past(due_past);
    }

    /// Compacts the log if it is due; returns whether a compaction ran.
    async fn check(&mut self, log: &LogWriter) -> bool {
        if self.directory_unsynced {
            self.retry_directory_sync();
        }
        // The disk engine reclaims space a few sealed segments at a time;
        // the whole log is compacted only if no segment is worth merging
        // (the active file alone outgrew the live data, or merges fail).
        if log.keeps_values() && self.may_retry(log) && self.merge_segments(log).await {
            return true;
        }
        let Some(live_bytes) = self.shard.compaction_due(self.min_bytes) else {
            return false;
        };
        if !self.may_retry(log) || !self.has_room(live_bytes) {
            return false;
        }
        let estimate = self.shard.live_estimate();
        // No roll from the cut on: the tail stays in the active file.
        let _rolls_held = log.hold_rolls();
        let Some(snapshot) = Participant::of(&self.shard).compaction_snapshot(&self.shard) else {
            return false;
        };
        let (before, nr_keys) = (log.file_len(), snapshot.entries.len());
        let started = Instant::now();
        // From the snapshot on, the writes may grow the log up to the bound
        // only as fast as the snapshot is written (`log::pacing`).
        let bound = pacing::bound(live_bytes, pacing::margin_bytes(self.min_bytes));
        let budget = Budget::new(before, bound, live_bytes, log.appended());
        let pacing_shard = self.shard.clone();
        // Held until the compaction's last step below: the writers wait for
        // it, if they have filled the new file meanwhile (`log::pacing`).
        let paced = pacing_shard.pacing().begin(bound, budget);
        let (shard, path) = (self.shard.id(), self.path.display());
        // Entries put back by an undo from here on may point into files
        // this snapshot does not move them out of.
        self.shard.table_mut().forget_restored_files();
        let (result, moved) = compaction::compact(log, &self.path, snapshot, &paced).await;
        let moved_snapshot_len = moved.snapshot_len;
        if log.keeps_values() && result.is_ok() {
            // The new log's index, so that a restart need not read its values.
            let hinted = hint::write(&self.path, moved.epoch, moved.puts_end, &moved.located).await;
            if let Err(e) = hinted {
                tracing::warn!(%shard, "cannot write the hint file of {path} ({e}); a restart reads the whole log");
            }
        }
        if !log.keeps_values() && result.is_ok() {
            // A hint left by the disk engine no longer describes this log.
            let _ = hint::remove(&self.path);
        }
        if log.keeps_values() && !moved.located.is_empty() {
            self.shard.relocate_values(moved.located).await;
        }
        if !moved.prepared_located.is_empty() {
            self.shard.relocate_values(moved.prepared_located).await;
        }
        if log.keeps_values() {
            self.close_unreferenced(log);
        }
        drop(paced);
        match result {
            Ok(after) => {
                self.failed = None;
                self.floors.clear();
                self.delete_superseded(log);
                self.shard.calibrate_live_bytes(LiveScale {
                    estimated: estimate,
                    measured: moved_snapshot_len,
                });
                let secs = started.elapsed().as_secs_f64();
                tracing::info!(%shard, "compacted {path}: {before} → {after} bytes ({nr_keys} keys) in {secs:.1} s");
            }
            Err(e @ CompactionError::DirectoryNotSynced(_)) => {
                self.failed = None;
                self.directory_unsynced = true;
                tracing::error!(%shard, "compaction of {path}: {e}");
            }
            Err(e @ CompactionError::Abandoned(_)) => {
                self.failed = Some((Instant::now(), log.appended()));
                tracing::error!(%shard, "compaction of {path} failed: {e}");
            }
        }
        true
    }

    /// Merges the sealed segments worth it (`log::merge`), if the log is
    /// past `--compact-min-bytes`; returns whether a merge was tried.
    async fn merge_segments(&mut self, log: &LogWriter) -> bool {
        if log.file_len() <= self.min_bytes || self.merge_live_percent == 0 {
            return false;
        }
        let sealed = log.sealed_segments();
        let chosen = {
            let table = self.shard.table();
            merge::choose(
                &sealed,
                |number| table.live_bytes_in_file(number),
                self.shard.live_scale(),
                &self.floors,
                self.merge_live_percent,
            )
        };
        let Some(chosen) = chosen else {
            return false;
        };
        // Its output takes room until its inputs go: not the last of the
        // disk, which the log's own appends need.
        // (Not a merge tried: the caller then sleeps until the next check.)
        if !self.has_room(chosen.live_bytes) {
            return false;
        }
        let mut plan = MergePlan::of(&sealed, &chosen.segments);
        let shard = self.shard.id();
        let started = Instant::now();
        // The writes may grow the log only up to its bound, plus what this
        // merge frees, as it reads its inputs.
        let pacing_shard = self.shard.clone();
        let paced = self.merge_pacing(log, &plan, chosen.live_bytes, &pacing_shard);
        let progress = |bytes: u64| paced.pay(bytes);
        loop {
            let view = Participant::of(&self.shard).merge_view(&self.shard);
            match merge::write(log, &plan, &view, &progress).await {
                Ok(written) => {
                    self.install_merge(log, &plan, written, started).await;
                    return true;
                }
                Err(MergeError::NeedsOlder(number)) => match plan.with_older(&sealed, number) {
                    Some(wider) => plan = wider,
                    None => {
                        tracing::error!(%shard, "cannot merge segments: a batch's PREPARE is in none of them");
                        self.failed = Some((Instant::now(), log.appended()));
                        return true;
                    }
                },
                Err(e @ MergeError::Busy(_)) => {
                    tracing::debug!(%shard, "merge put off: {e}");
                    self.failed = Some((Instant::now(), log.appended()));
                    return true;
                }
                Err(MergeError::Failed(e)) => {
                    tracing::error!(%shard, "merging segments of {} failed: {e}", self.path.display());
                    self.failed = Some((Instant::now(), log.appended()));
                    return true;
                }
            }
        }
    }

    /// The writers' pacing during a merge of `plan` expected to write
    /// `live_bytes` (`Budget::for_merge`). The bound is the compaction's:
    /// twice the live data plus `--compact-min-bytes`. The merge's output
    /// sits beside its inputs until they are deleted; that room a copying
    /// merge cannot do without, and it is not taken from the writes: a log
    /// within its bound is within it again when the merge ends, a log past
    /// it (a burst outran the merges) shrinks with each merge, and while the
    /// log has room up to its bound for what the merge reads, writes no
    /// faster than the merge reads never wait.
    fn merge_pacing<'s>(
        &self,
        log: &LogWriter,
        plan: &MergePlan,
        live_bytes: u64,
        shard: &'s Shard,
    ) -> pacing::PacedCompaction<'s> {
        let bound = pacing::bound(shard.live_bytes(), pacing::margin_bytes(self.min_bytes));
        let file_len = log.file_len();
        let input: u64 = plan.inputs.iter().map(|s| s.bytes).sum();
        let budget = Budget::for_merge(file_len, bound, input, live_bytes, log.appended());
        shard.pacing().begin(bound, budget)
    }

    /// Steps 2 and 3 of a merge (`log::merge`): the output replaces its
    /// inputs on disk, then for reads, then the entries move into it.
    async fn install_merge(
        &mut self,
        log: &LogWriter,
        plan: &MergePlan,
        written: merge::Written,
        started: Instant,
    ) {
        let shard = self.shard.id();
        let newest = &plan.inputs.last().expect("a plan has inputs").path;
        let before: u64 = plan.inputs.iter().map(|s| s.bytes).sum();
        if merge::is_empty(&written) {
            let _ = std::fs::remove_file(&written.temp);
            if let Err(e) = merge::delete_inputs(plan, true, shard.0) {
                tracing::warn!(%shard, "cannot delete sealed segments that hold nothing live ({e}); they replay harmlessly until deleted at a restart");
            }
            log.install_merge(&plan.inputs, None, 0);
            self.floors.merged(&plan.inputs, None, 0);
            self.close_unreferenced(log);
            tracing::info!(
                %shard,
                "merged {} sealed segments: nothing in them is live, {before} bytes deleted",
                plan.inputs.len()
            );
            return;
        }
        let durable = match merge::install(&written, plan, shard.0) {
            Ok(durable) => durable,
            Err(e) => {
                let _ = std::fs::remove_file(&written.temp);
                tracing::error!(%shard, "cannot put the merged segment in place of {} ({e}); nothing changed", newest.display());
                self.failed = Some((Instant::now(), log.appended()));
                return;
            }
        };
        let reader = match glommio::io::DmaFile::open(newest).await {
            Ok(reader) => reader,
            Err(e) => {
                // The inputs stay open for reads; on disk the merged segment
                // stands for them, and the older ones stay until a restart.
                tracing::error!(%shard, "cannot open the merged segment {} for reads ({e})", newest.display());
                self.failed = Some((Instant::now(), log.appended()));
                return;
            }
        };
        let number = log
            .install_merge(&plan.inputs, Some(reader), written.len)
            .expect("a disk engine's log has value files");
        self.floors
            .merged(&plan.inputs, Some(number), written.uncounted_bytes);
        let located: Vec<(Entry, Location)> = written
            .located
            .into_iter()
            .map(|(entry, offset)| {
                let location = Location {
                    file: number,
                    offset,
                    len: entry.value_len() as u32,
                    check: ValueCheck::Record {
                        with_deadline: entry.deadline().is_some(),
                    },
                };
                (entry, location)
            })
            .collect();
        if let Err(e) = hint::write(newest, written.epoch, written.puts_end, &located).await {
            tracing::warn!(%shard, "cannot write the hint file of {} ({e}); a restart reads its records", newest.display());
        }
        self.shard.relocate_values(located).await;
        if durable {
            if let Err(e) = merge::delete_inputs(plan, false, shard.0) {
                tracing::warn!(%shard, "cannot delete merged segments ({e}); they replay harmlessly until deleted at a restart");
            }
        }
        self.close_unreferenced(log);
        let records = written
            .puts_end
            .saturating_sub(crate::log::format::FILE_HEADER_BYTES as u64);
        self.shard.calibrate_live_bytes(LiveScale {
            estimated: written.records_estimate,
            measured: records,
        });
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(
            %shard,
            "merged {} sealed segments into {}: {before} → {} bytes in {secs:.2} s",
            plan.inputs.len(),
            newest.display(),
            written.len
        );
    }

    /// Closes the retired files no entry points into any more.
    fn close_unreferenced(&self, log: &LogWriter) {
        let table = self.shard.table();
        let closed = log.close_unreferenced_files(|file| {
            table.pinned_point_into(file) || table.restored_into(file)
        });
        if closed > 0 {
            tracing::debug!(shard = %self.shard.id(), "closed {closed} log files no value points into");
        }
    }

    /// Whether enough time has passed, and the log grown, since a failure.
    fn may_retry(&self, log: &LogWriter) -> bool {
        match self.failed {
            None => true,
            Some((at, appended)) => {
                at.elapsed() >= RETRY_AFTER_FAILURE && log.appended() > appended
            }
        }
    }

    /// Whether the file system has room for a snapshot (or a merge's
    /// output) of `live_bytes`; logs when that changes.
    fn has_room(&mut self, live_bytes: u64) -> bool {
        let needed = compaction::room_needed(live_bytes);
        let (shard, path) = (self.shard.id(), self.path.display());
        let free = match compaction::free_bytes(&self.path) {
            Ok(free) => free,
            // Cannot tell: try, and let a failure say what is wrong.
            Err(_) => return true,
        };
        let room = free >= needed;
        if room == self.short_of_room {
            self.short_of_room = !room;
            match room {
                true => {
                    tracing::info!(%shard, "compaction of {path}: there is room again ({free} bytes free)")
                }
                false => tracing::warn!(
                    %shard,
                    "compaction of {path} skipped: it needs about {needed} bytes free and {free} are; \
                     retrying when there is room"
                ),
            }
        }
        room
    }

    /// Deletes the sealed segments the last switch superseded (it is durable).
    /// A failure only costs disk space until the next start, which deletes
    /// them (the active file is a BASE).
    fn delete_superseded(&self, log: &LogWriter) {
        let superseded = log.take_superseded_segments();
        if superseded.is_empty() {
            return;
        }
        match crate::log::segments::delete(&superseded) {
            Ok(()) => tracing::debug!(
                shard = %self.shard.id(),
                "deleted {} sealed segments the compaction superseded",
                superseded.len()
            ),
            Err(e) => tracing::warn!(
                shard = %self.shard.id(),
                "cannot delete the sealed segments a compaction superseded ({e}); the next start does"
            ),
        }
    }

    fn retry_directory_sync(&mut self) {
        if compaction::sync_log_dir(&self.path, self.shard.id().0).is_ok() {
            self.directory_unsynced = false;
            if let Some(log) = self.shard.log().cloned() {
                self.delete_superseded(&log);
            }
            tracing::info!(shard = %self.shard.id(), "synced the directory of {}", self.path.display());
        }
    }
}
