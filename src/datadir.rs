//! The data directory: created on first start, locked while a server runs, and
//! marked with the engine that created it.
//!
//! Files:
//! - `ENGINE`: the engine name and a newline, written once at first start. A
//!   later start with a different `--engine` is refused, because the other
//!   engine would silently ignore (or shadow) the data already there.
//! - `LOCK`: held with an exclusive `flock` for the server's lifetime, so two
//!   servers can never write one directory. The kernel drops the lock when the
//!   process dies, even on `kill -9`.
//!
//! Nothing here ever deletes or rewrites an existing file.

use crate::config::Engine;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

const ENGINE_FILE: &str = "ENGINE";
const LOCK_FILE: &str = "LOCK";

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create data directory {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot use {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
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
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => DataDirError::Locked {
                path: dir.to_owned(),
            },
            _ => DataDirError::Io { path, source: err },
        });
    }
    Ok(file)
}

/// Returns true when the marker was written now (first start).
fn check_engine(dir: &Path, engine: Engine) -> Result<bool, DataDirError> {
    let path = dir.join(ENGINE_FILE);
    match File::open(&path) {
        Ok(mut file) => {
            let mut recorded = String::new();
            file.read_to_string(&mut recorded)
                .map_err(io_error(path.clone()))?;
            let recorded = recorded.trim();
            if recorded != engine.name() {
                return Err(DataDirError::EngineMismatch {
                    path: dir.to_owned(),
                    recorded: recorded.to_owned(),
                    requested: engine.name(),
                });
            }
            Ok(false)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            write_marker(&path, engine).map_err(io_error(path.clone()))?;
            Ok(true)
        }
        Err(source) => Err(DataDirError::Io { path, source }),
    }
}

fn write_marker(path: &Path, engine: Engine) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    crate::failpoint::check("datadir::marker", None)?;
    writeln!(file, "{}", engine.name())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(matches!(err, DataDirError::EngineMismatch { .. }), "{err}");
    }

    #[test]
    fn a_locked_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _held = DataDir::open(dir.path(), Engine::Memory).expect("first");
        let err = DataDir::open(dir.path(), Engine::Memory).expect_err("locked");
        assert!(matches!(err, DataDirError::Locked { .. }), "{err}");
    }
}
