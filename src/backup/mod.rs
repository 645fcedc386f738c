//! Online, consistent backup: a copy of every shard as of one instant,
//! written while the server keeps serving. `corekv backup DIR` asks for it
//! with `POST /v1/backup` (docs/http.md); a server started on DIR serves
//! exactly that state (docs/operations.md, *Backup and restore*).
//!
//! # One instant across all shards
//!
//! A backup must never hold half of a cross-shard ATOMIC batch, nor miss a
//! write acknowledged before it began. The shard that receives the request
//! (the *initiator*) sends every other shard a job over the mesh
//! ([`crate::shard::mesh::ShardRequest::Run`]). Each shard, when its job's
//! turn comes, stops its thread at the [`cut`] — nothing runs on it, neither
//! requests nor messages — until every shard has stopped; then each takes
//! its snapshot synchronously, before anything else runs on it
//! ([`Shard::snapshot`], the snapshot compaction takes: references to its
//! entries, its prepared batches and the COMMITs it still carries). The
//! initiator takes its own at the moment it releases the others. So each
//! snapshot is its shard's state at one instant, and no message received by
//! a shard before its snapshot was sent by another after its own: a
//! consistent cut.
//!
//! Why a cross-shard batch is whole in it: a shard's snapshot holds each
//! batch prepared on it (and undecided) as a PREPARE of the state it gave its
//! keys, with the key's committed state beside it, and the coordinator's
//! snapshot holds the COMMIT of every batch it committed whose participants
//! have not all confirmed their decision — exactly what compaction writes
//! (`crate::log::compaction`). Recovery from the backup resolves each
//! PREPARE by the COMMITs of all files: the batch is applied on every
//! participant or on none. Messages in flight at the instant are requests
//! not yet acknowledged (their effect is simply not in the backup), or
//! decisions, whose outcome the COMMIT carries. Every write acknowledged
//! before the request arrived is in the tables at the instant: a reply is
//! sent only after its writes (and, for a batch, every participant's
//! decision) are applied.
//!
//! # Why it cannot deadlock, and how long shards stop
//!
//! A stopped shard serves nothing, so nothing may wait for it. The
//! initiator never stops its thread: it sends the jobs, waiting only for
//! channel capacity, and then polls [`cut::Cut::all_stopped`] — while it
//! keeps draining its responses from the shards that have not reached their
//! job yet. A shard reaches its job after the messages ahead of it in its
//! inbox from the initiator, which need only that shard's own log and the
//! initiator's response channel; never a stopped shard. So every shard gets
//! to the cut, and the stop lasts from the first shard's arrival to the
//! last's: normally well under a millisecond, under load as long as the
//! longest queue of forwarded requests takes. It is bounded: if not every
//! shard has stopped within [`CUT_TIMEOUT`], the cut is abandoned, the shards
//! go on, and the backup fails with nothing written.
//!
//! Only one backup runs at a time (two initiators could each stop half the
//! shards and wait for the other half forever); a second is refused.
//!
//! # Writing
//!
//! Each shard writes its snapshot to `DIR/log/shard-<i>.log` in the
//! background, in chunks with yields between them, as compaction writes
//! (the same code: a log file of a fresh epoch, records as recovery reads
//! them), and fdatasyncs it. When every shard has, the initiator writes
//! `DIR/log/SHARDS` and last `DIR/ENGINE` ([`files`]) and answers. With the
//! memory engine too: the tables are all there is, and the backup is a
//! log-engine data directory. A disk engine's backup reads its values back
//! from its log and is a disk-engine data directory.

pub mod cut;
pub mod files;

use crate::server::connection::ShardContext;
use crate::shard::mesh::ShardJob;
use crate::shard::{Shard, ShardId};
use cut::Cut;
use files::{BackupDir, ShardFile};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long every shard has to reach the backup's instant.
pub const CUT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the initiator looks whether every shard has stopped.
const CUT_POLL: Duration = Duration::from_millis(1);
/// How often the initiator looks whether every file is written.
const FILES_POLL: Duration = Duration::from_millis(10);

/// Why a backup failed. Nothing of it is left in the directory.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("the backup directory must be an absolute path on the server's host, got {0}")]
    RelativeDir(PathBuf),
    #[error("{0} exists and is not empty: a backup goes into a new or empty directory")]
    NotEmpty(PathBuf),
    #[error("another backup is running; try again when it has finished")]
    Busy,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error(
        "not every shard reached the backup's instant within {CUT_TIMEOUT:?}; the shards went \
         on and nothing was kept: try again"
    )]
    CutTimeout,
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the backup's task was cancelled")]
    Cancelled,
}

/// What a finished backup holds.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub dir: PathBuf,
    pub nr_shards: usize,
    /// Entries written (keys, and the prior states of keys held by prepared batches).
    pub nr_entries: u64,
    /// Bytes of the shard files.
    pub bytes: u64,
    /// From sending the jobs to the instant: an upper bound on how long any
    /// shard stopped.
    pub cut_wait: Duration,
    pub elapsed: Duration,
}

/// Runs a backup into `dir` from this shard, in a task of its own: once
/// started it runs to its end even if the caller goes away (a half-taken
/// cut must be released or abandoned, never left).
pub async fn run(ctx: &ShardContext, dir: PathBuf) -> Result<BackupReport, BackupError> {
    let ctx = ctx.clone();
    let task = glommio::spawn_local(async move { backup(&ctx, &dir).await }).detach();
    task.await.unwrap_or(Err(BackupError::Cancelled))
}

async fn backup(ctx: &ShardContext, dir: &Path) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    if ctx.state.is_shutting_down() {
        return Err(BackupError::ShuttingDown);
    }
    if !ctx.state.begin_backup() {
        return Err(BackupError::Busy);
    }
    let _running = Running(ctx);
    let outcome = fill(ctx, dir).await;
    match &outcome {
        Ok(report) => tracing::info!(
            "backup written to {}: {} shards, {} entries, {} bytes in {:.3} s (shards stopped for at most {:.3} ms)",
            report.dir.display(),
            report.nr_shards,
            report.nr_entries,
            report.bytes,
            started.elapsed().as_secs_f64(),
            report.cut_wait.as_secs_f64() * 1e3
        ),
        Err(e) => tracing::warn!("backup to {} failed: {e}", dir.display()),
    }
    outcome.map(|report| BackupReport {
        elapsed: started.elapsed(),
        ..report
    })
}

/// Ends the server's one running backup when dropped.
struct Running<'a>(&'a ShardContext);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.state.end_backup();
    }
}

async fn fill(ctx: &ShardContext, dir: &Path) -> Result<BackupReport, BackupError> {
    let mut target = BackupDir::prepare(dir)?;
    let nr_shards = ctx.shard.nr_shards();
    let files = Arc::new(Files::new(nr_shards));
    let cut_wait = take_cut(ctx, target.path(), &files).await?;
    let written = wait_for_files(ctx, &files).await?;
    // A disk engine's backup is a disk engine's directory; the memory
    // engine's, a log engine's.
    let engine = match ctx.config.engine {
        crate::config::Engine::Disk => crate::config::Engine::Disk,
        _ => crate::config::Engine::Log,
    };
    target.complete(ctx.shard.router(), engine.name())?;
    Ok(BackupReport {
        dir: dir.to_owned(),
        nr_shards,
        nr_entries: written.iter().map(|f| f.nr_entries).sum(),
        bytes: written.iter().map(|f| f.bytes).sum(),
        cut_wait,
        elapsed: Duration::ZERO,
    })
}

/// Stops every shard at one instant, snapshots each, and starts each
/// shard's file; returns how long the cut took to gather.
async fn take_cut(
    ctx: &ShardContext,
    dir: &Path,
    files: &Arc<Files>,
) -> Result<Duration, BackupError> {
    let shard = &ctx.shard;
    let cut = Arc::new(Cut::new(
        shard.nr_shards() - 1,
        Instant::now() + CUT_TIMEOUT,
    ));
    // However this returns, a cut not released is abandoned: no shard stays stopped.
    let _abandon = AbandonUnlessReleased(cut.clone());
    let began = Instant::now();
    for peer in (0..shard.nr_shards()).filter(|&peer| peer != shard.id().0) {
        let job = peer_job(cut.clone(), files.clone(), dir.to_owned());
        send_before_deadline(shard, ShardId(peer), job, cut.deadline()).await?;
    }
    while !cut.all_stopped() {
        if ctx.shutdown.is_triggered() {
            return Err(BackupError::ShuttingDown);
        }
        if Instant::now() >= cut.deadline() {
            return Err(BackupError::CutTimeout);
        }
        glommio::timer::sleep(CUT_POLL).await;
    }
    if !cut.release() {
        return Err(BackupError::CutTimeout);
    }
    // No await between the release and the snapshot: this is the instant.
    let snapshot = crate::txn::participant::Participant::of(shard).snapshot(shard);
    let cut_wait = began.elapsed();
    write_in_background(shard, snapshot, files.clone(), dir.to_owned());
    Ok(cut_wait)
}

async fn send_before_deadline(
    shard: &Shard,
    to: ShardId,
    job: ShardJob,
    deadline: Instant,
) -> Result<(), BackupError> {
    let sent = async { Some(shard.send_job(to, job).await) };
    let late = async {
        glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
        None
    };
    match futures_lite::future::or(sent, late).await {
        Some(Ok(())) => Ok(()),
        Some(Err(_gone)) => Err(BackupError::ShuttingDown),
        None => Err(BackupError::CutTimeout),
    }
}

/// What a peer runs: stop at the cut, then snapshot and write.
fn peer_job(cut: Arc<Cut>, files: Arc<Files>, dir: PathBuf) -> ShardJob {
    ShardJob(Box::new(move |shard: &Rc<Shard>| {
        if cut.stop_until_released() {
            // Before anything else runs on this shard: its state at the cut.
            let snapshot = crate::txn::participant::Participant::of(shard).snapshot(shard);
            write_in_background(shard, snapshot, files, dir);
        }
    }))
}

fn write_in_background(
    shard: &Shard,
    snapshot: crate::log::compaction::Snapshot,
    files: Arc<Files>,
    dir: PathBuf,
) {
    let id = shard.id();
    // The disk engine's values are read back from its log for the backup.
    let values = shard.log().filter(|log| log.keeps_values()).cloned();
    glommio::spawn_local(async move {
        let written = files::write_shard_file(&dir, id.0, &snapshot, values.as_deref()).await;
        files.report(id, written);
    })
    .detach();
}

/// Waits until every shard has written its file; the first failure fails
/// the backup, once every shard has stopped writing.
async fn wait_for_files(ctx: &ShardContext, files: &Files) -> Result<Vec<ShardFile>, BackupError> {
    loop {
        if let Some(outcome) = files.outcome() {
            return outcome;
        }
        if ctx.shutdown.is_triggered() {
            return Err(BackupError::ShuttingDown);
        }
        glommio::timer::sleep(FILES_POLL).await;
    }
}

struct AbandonUnlessReleased(Arc<Cut>);

impl Drop for AbandonUnlessReleased {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

type FileOutcome = Result<ShardFile, BackupError>;

/// Each shard's file, as the shards report them.
struct Files {
    slots: Mutex<Vec<Option<FileOutcome>>>,
}

impl Files {
    fn new(nr_shards: usize) -> Files {
        Files {
            slots: Mutex::new((0..nr_shards).map(|_| None).collect()),
        }
    }

    fn report(&self, shard: ShardId, outcome: FileOutcome) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots[shard.0] = Some(outcome);
    }

    /// Every file, once every shard has reported; the first failure if any.
    fn outcome(&self) -> Option<Result<Vec<ShardFile>, BackupError>> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.iter().any(Option::is_none) {
            return None;
        }
        slots
            .drain(..)
            .flatten()
            .collect::<Result<Vec<_>, _>>()
            .into()
    }
}
