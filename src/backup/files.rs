//! A backup directory on disk: made empty, filled, completed, or removed.
//!
//! ```text
//! DIR/log/shard-<i>.log   shard i's snapshot: a log file of a fresh epoch, a BASE
//!                         (with the disk engine: no sealed segments, `log::segments`)
//! DIR/log/SHARDS          the shard count (and routing), as the log engine writes it
//! DIR/ENGINE              "log" (or "disk") — written last: the mark of a complete backup
//! ```
//!
//! This is exactly a log-engine data directory, so a server started on it
//! recovers it like any other. Each file is fdatasync-ed, then its directory;
//! `ENGINE` is written only after everything else is safe, so a backup cut
//! short (a failure, a crash) is never mistaken for a whole one: a server
//! refuses a directory holding `log/` without `ENGINE` (`crate::datadir`).
//! A failed backup removes what it wrote.

use super::BackupError;
use crate::failpoint;
use crate::ids::Router;
use crate::log::compaction::{self, Snapshot};
use crate::log::{log_dir, shard_log_path, shards_file_text, LogWriter};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The directory a backup fills; removed again unless [`BackupDir::complete`].
#[derive(Debug)]
pub struct BackupDir {
    path: PathBuf,
    /// Whether this backup created `path` (else it existed, empty).
    created: bool,
    complete: bool,
}

/// One shard's file, written.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardFile {
    pub bytes: u64,
    pub nr_entries: u64,
}

impl BackupDir {
    /// Makes `path` ready: it must be absolute and either missing or an
    /// empty directory.
    pub fn prepare(path: &Path) -> Result<BackupDir, BackupError> {
        if !path.is_absolute() {
            return Err(BackupError::RelativeDir(path.to_owned()));
        }
        let created = match fs::read_dir(path).map(|mut entries| entries.next().is_none()) {
            Ok(true) => false,
            Ok(false) => return Err(BackupError::NotEmpty(path.to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(io_error(path)(e)),
        };
        let dir = BackupDir {
            path: path.to_owned(),
            created,
            complete: false,
        };
        fs::create_dir_all(log_dir(path)).map_err(io_error(path))?;
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the files that make the shard files a data directory, last
    /// `ENGINE`, each synced before the next.
    pub fn complete(&mut self, router: &Router, engine: &str) -> Result<(), BackupError> {
        let logs = log_dir(&self.path);
        let shards = logs.join("SHARDS");
        let text = shards_file_text(router.nr_shards(), router.routing());
        write_synced(&shards, text.as_bytes()).map_err(io_error(&shards))?;
        sync_dir(&logs).map_err(io_error(&logs))?;
        let engine_name = engine;
        let engine = self.path.join("ENGINE");
        write_synced(&engine, format!("{engine_name}\n").as_bytes()).map_err(io_error(&engine))?;
        sync_dir(&self.path).map_err(io_error(&self.path))?;
        if let Some(parent) = self.path.parent().filter(|_| self.created) {
            // Best effort: the directory's own entry (an error here does not
            // make the backup less whole once it is found).
            let _ = sync_dir(parent);
        }
        self.complete = true;
        Ok(())
    }
}

impl Drop for BackupDir {
    fn drop(&mut self) {
        if self.complete {
            return;
        }
        let removed = if self.created {
            fs::remove_dir_all(&self.path)
        } else {
            // It was an empty directory of the operator's: leave it empty.
            fs::read_dir(&self.path).and_then(|mut entries| {
                entries.try_for_each(|entry| fs::remove_dir_all(entry?.path()))
            })
        };
        if let Err(e) = removed {
            tracing::error!(
                "cannot remove the failed backup in {}: {e}",
                self.path.display()
            );
        }
    }
}

/// Writes shard `shard`'s snapshot into `dir` and makes it safe.
pub async fn write_shard_file(
    dir: &Path,
    shard: usize,
    snapshot: &Snapshot,
    values: Option<&LogWriter>,
) -> Result<ShardFile, BackupError> {
    let path = shard_log_path(&log_dir(dir), shard);
    write_log_file(&path, shard, snapshot, values)
        .await
        .map_err(io_error(&path))?;
    Ok(ShardFile {
        bytes: fs::metadata(&path).map_err(io_error(&path))?.len(),
        nr_entries: snapshot.entries.len() as u64,
    })
}

async fn write_log_file(
    path: &Path,
    shard: usize,
    snapshot: &Snapshot,
    values: Option<&LogWriter>,
) -> io::Result<()> {
    let scope = Some(shard);
    failpoint::check("backup::create", scope)?;
    let file = glommio::io::OpenOptions::new()
        .write(true)
        .create_new(true)
        .buffered_open(path)
        .await
        .map_err(io::Error::from)?;
    // A fresh epoch: no record of the live log passes as one of this file's.
    let epoch = crate::log::new_epoch();
    let failpoint = ("backup::write", scope);
    let mut progress = |_| Ok(());
    compaction::write_snapshot(&file, snapshot, epoch, failpoint, values, &mut progress).await?;
    failpoint::check("backup::fdatasync", scope)?;
    file.fdatasync().await.map_err(io::Error::from)?;
    file.close().await.map_err(io::Error::from)
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}
