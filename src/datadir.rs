//! The data directory: created on first start, locked while a server runs, and
//! marked with the engine that created it.
//!
//! Files:
//! - `ENGINE`: the engine name and a newline, written at first start. A
//!   later start with a different `--engine` is refused, because the other
//!   engine would silently ignore (or shadow) the data already there — except
//!   between `log` and `disk`, which keep the same log files (one keeps the
//!   values in memory, the other reads them from the files): such a start
//!   rewrites the marker, the same way, and serves the data. It is
//!   written whole or not at all: into `ENGINE.tmp`, fdatasync-ed, renamed
//!   over `ENGINE`, and the directory fsync-ed, so a full disk or a crash at
//!   first start cannot leave a torn or empty marker that blocks the
//!   directory.
//! - `LOCK`: held with an exclusive `flock` for the server's lifetime, so two
//!   servers can never write one directory. The kernel drops the lock when the
//!   process dies, even on `kill -9`.
//!
//! A missing or empty `ENGINE` means a first start that did not finish
//! (older versions could leave an empty one on a full disk): if the
//! directory holds no data (no `log/`), this start is the first start. If it
//! holds data, the start is refused with the command that restores the
//! marker, since guessing the engine could shadow that data.
//!
//! Nothing here deletes or rewrites an existing file, except its own
//! `ENGINE.tmp`, an empty `ENGINE` in a directory without data, and `ENGINE`
//! when a start switches between the log and disk engines.
//!
//! [`DataDir::open`] is the first thing a start creates on disk; the server
//! calls it only after the checks that need no disk (flags, locked memory,
//! the addresses) have passed, so a refused start leaves no directory behind.

use crate::config::Engine;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

const ENGINE_FILE: &str = "ENGINE";
/// Where the marker is written before it is renamed into place.
const ENGINE_TEMP_FILE: &str = "ENGINE.tmp";
const LOCK_FILE: &str = "LOCK";

// Each error's cause is its `source`: the binary prints the chain (`{:#}`),
// so a message that printed the source too would repeat it.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create data directory {path}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot use {path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot write the engine marker {path}")]
    Marker { path: PathBuf, source: io::Error },
    #[error("data directory {path} is in use by another corekv-server")]
    Locked { path: PathBuf },
    #[error(
        "data directory {path} was created with --engine {recorded}; refusing to start with \
         --engine {requested} (start with --engine {recorded}, or use another --data-dir)"
    )]
    EngineMismatch {
        path: PathBuf,
        recorded: String,
        requested: &'static str,
    },
    #[error(
        "data directory {path} holds log-engine data ({log_dir}) but its ENGINE marker is \
         {marker}, so the engine it was created with cannot be checked. Only --engine log \
         creates {log_dir}: restore the marker with `echo log > {path}/ENGINE` and start with \
         --engine log (or use another --data-dir)",
        log_dir = crate::log::log_dir(path).display(),
        path = path.display()
    )]
    MarkerLost { path: PathBuf, marker: &'static str },
}

/// An open, locked data directory. The lock is released when this is dropped.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
    /// True when this start created the engine marker.
    pub fresh: bool,
}

impl DataDir {
    /// Creates (if needed), locks and checks the directory for `engine`.
    pub fn open(path: &Path, engine: Engine) -> Result<DataDir, DataDirError> {
        std::fs::create_dir_all(path).map_err(|source| DataDirError::Create {
            path: path.to_owned(),
            source,
        })?;
        let lock = lock(path)?;
        let fresh = check_engine(path, engine)?;
        Ok(DataDir {
            path: path.to_owned(),
            _lock: lock,
            fresh,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn io_error(path: PathBuf) -> impl FnOnce(io::Error) -> DataDirError {
    move |source| DataDirError::Io { path, source }
}

fn lock(dir: &Path) -> Result<File, DataDirError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error(path.clone()))?;
    match crate::sys::lock_exclusive(&file) {
        Ok(()) => Ok(file),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(DataDirError::Locked {
            path: dir.to_owned(),
        }),
        Err(source) => Err(DataDirError::Io { path, source }),
    }
}

/// Returns true when the marker was written now (first start).
fn check_engine(dir: &Path, engine: Engine) -> Result<bool, DataDirError> {
    let recorded = match read_marker(dir)? {
        Some(recorded) => recorded,
        None if crate::log::log_dir(dir).exists() => {
            let marker = if dir.join(ENGINE_FILE).exists() {
                "empty"
            } else {
                "missing"
            };
            return Err(DataDirError::MarkerLost {
                path: dir.to_owned(),
                marker,
            });
        }
        None => {
            write_marker(dir, engine)?;
            return Ok(true);
        }
    };
    let same_files = |name: &str| name == Engine::Log.name() || name == Engine::Disk.name();
    if recorded != engine.name() && same_files(&recorded) && same_files(engine.name()) {
        tracing::info!(
            "data directory {} was used with --engine {recorded}; it now runs --engine {} (the \
             same log files)",
            dir.display(),
            engine.name()
        );
        write_marker(dir, engine)?;
        return Ok(false);
    }
    if recorded != engine.name() {
        return Err(DataDirError::EngineMismatch {
            path: dir.to_owned(),
            recorded,
            requested: engine.name(),
        });
    }
    Ok(false)
}

/// The engine the marker names; `None` if there is no marker or it is empty.
fn read_marker(dir: &Path) -> Result<Option<String>, DataDirError> {
    let path = dir.join(ENGINE_FILE);
    let mut recorded = String::new();
    match File::open(&path) {
        Ok(mut file) => file.read_to_string(&mut recorded).map_err(io_error(path))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(DataDirError::Io { path, source }),
    };
    let recorded = recorded.trim();
    Ok((!recorded.is_empty()).then(|| recorded.to_owned()))
}

/// Writes the marker whole or not at all (see the module doc). On failure
/// the temporary file is removed, so the directory is as it was.
fn write_marker(dir: &Path, engine: Engine) -> Result<(), DataDirError> {
    let temp = dir.join(ENGINE_TEMP_FILE);
    let path = dir.join(ENGINE_FILE);
    let written = write_synced(&temp, engine)
        .and_then(|()| std::fs::rename(&temp, &path))
        .and_then(|()| File::open(dir)?.sync_all());
    written.map_err(|source| {
        // Best effort: a temporary file left behind is ignored and replaced.
        let _ = std::fs::remove_file(&temp);
        DataDirError::Marker { path, source }
    })
}

fn write_synced(path: &Path, engine: Engine) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    crate::failpoint::check("datadir::marker", None)?;
    writeln!(file, "{}", engine.name())?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_and_disk_engines_take_over_each_others_directories_and_record_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        drop(DataDir::open(dir.path(), Engine::Log).expect("first start"));
        for engine in [Engine::Disk, Engine::Disk, Engine::Log] {
            drop(DataDir::open(dir.path(), engine).expect("same log files"));
            let marker = std::fs::read_to_string(dir.path().join(ENGINE_FILE)).expect("marker");
            assert_eq!(marker.trim(), engine.name());
        }
        let err = DataDir::open(dir.path(), Engine::Memory).expect_err("memory ignores logs");
        assert!(matches!(err, DataDirError::EngineMismatch { .. }), "{err}");
    }

    #[test]
    fn engine_is_recorded_and_a_mismatch_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataDir::open(dir.path(), Engine::Memory).expect("first start");
        assert!(first.fresh);
        drop(first);
        let again = DataDir::open(dir.path(), Engine::Memory).expect("same engine");
        assert!(!again.fresh);
        drop(again);
        let err = DataDir::open(dir.path(), Engine::Log).expect_err("other engine");
        let err_disk = DataDir::open(dir.path(), Engine::Disk).expect_err("other engine");
        assert!(
            matches!(err_disk, DataDirError::EngineMismatch { .. }),
            "{err_disk}"
        );
        assert!(matches!(err, DataDirError::EngineMismatch { .. }), "{err}");
    }

    #[test]
    fn an_empty_or_missing_marker_in_a_directory_without_data_is_a_first_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(ENGINE_FILE), "").expect("empty marker");
        std::fs::write(dir.path().join(ENGINE_TEMP_FILE), "lo").expect("torn temp");
        let opened = DataDir::open(dir.path(), Engine::Log).expect("an empty marker is new");
        assert!(opened.fresh);
        let marker = std::fs::read_to_string(dir.path().join(ENGINE_FILE)).expect("marker");
        assert_eq!(marker, "log\n");
        assert!(!dir.path().join(ENGINE_TEMP_FILE).exists());
    }

    #[test]
    fn an_empty_or_missing_marker_beside_log_data_is_refused_with_the_fix() {
        for empty_marker in [true, false] {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::create_dir(crate::log::log_dir(dir.path())).expect("log dir");
            if empty_marker {
                std::fs::write(dir.path().join(ENGINE_FILE), "\n").expect("empty marker");
            }
            let err = DataDir::open(dir.path(), Engine::Log).expect_err("data without a marker");
            assert!(matches!(err, DataDirError::MarkerLost { .. }), "{err}");
            let message = err.to_string();
            let fix = format!("echo log > {}/ENGINE", dir.path().display());
            assert!(message.contains(&fix), "{message}");
            let marker = std::fs::read(dir.path().join(ENGINE_FILE)).unwrap_or_default();
            assert_eq!(marker.trim_ascii(), b"", "the marker must not be guessed");
        }
    }

    #[test]
    fn a_locked_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _held = DataDir::open(dir.path(), Engine::Memory).expect("first");
        let err = DataDir::open(dir.path(), Engine::Memory).expect_err("locked");
        assert!(matches!(err, DataDirError::Locked { .. }), "{err}");
    }
}
