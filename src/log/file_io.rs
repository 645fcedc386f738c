//! The system calls a shard's log makes on its file, in one place: appends
//! (`pwrite`), syncs (`fdatasync`) and preallocation (`fallocate`).
//!
//! Appends and preallocation are plain blocking calls on the shard's thread:
//! a buffered write of one group commit's records is a copy into the page
//! cache (microseconds), cheaper than a trip through io_uring and a kernel
//! worker. The sync is the slow call (the disk's cache flush, ~0.1–0.2 ms on
//! the machines measured in docs/benchmarks.md) and must not stop the shard:
//! [`fdatasync`] runs it off the shard's thread and resolves when it is done.

use glommio::io::BufferedFile;
use std::io;
use std::os::unix::io::AsRawFd;
use std::rc::Rc;

/// How a sync is carried out (chosen once per process; see docs/benchmarks.md
/// for the measurements behind the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMechanism {
    /// A blocking `fdatasync` on the shard's own thread.
    Inline,
    /// io_uring's `IORING_OP_FSYNC` through glommio.
    Uring,
    /// `fdatasync` on glommio's blocking thread pool.
    Pool,
}

impl SyncMechanism {
    /// The mechanism in use: `COREKV_LOG_SYNC=inline|uring|pool`, else the default.
    pub fn current() -> SyncMechanism {
        match std::env::var("COREKV_LOG_SYNC").as_deref() {
            Ok("inline") => SyncMechanism::Inline,
            Ok("uring") => SyncMechanism::Uring,
            _ => SyncMechanism::Pool,
        }
    }
}

/// Writes all of `bytes` at `offset` of `file`. A short write to a regular file
/// means the device refused (full, quota): an error like any other.
pub fn pwrite_all(file: &BufferedFile, mut bytes: &[u8], mut offset: u64) -> io::Result<()> {
    let fd = file.as_raw_fd();
    while !bytes.is_empty() {
        // SAFETY: pwrite reads at most `bytes.len()` bytes from the slice we hold.
        let n = unsafe {
            libc::pwrite(
                fd,
                bytes.as_ptr().cast(),
                bytes.len(),
                offset as libc::off_t,
            )
        };
        match n {
            n if n > 0 => {
                bytes = &bytes[n as usize..];
                offset += n as u64;
            }
            0 => return Err(io::Error::new(io::ErrorKind::WriteZero, "short write")),
            _ => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
    Ok(())
}

/// Makes everything written to `file` durable, without blocking the shard's
/// thread (except with [`SyncMechanism::Inline`]). The `Rc` keeps the file, and
/// so its descriptor, open until the sync is done.
pub async fn fdatasync(file: Rc<BufferedFile>, mechanism: SyncMechanism) -> io::Result<()> {
    match mechanism {
        SyncMechanism::Inline => fdatasync_fd(file.as_raw_fd()),
        SyncMechanism::Uring => file.fdatasync().await.map_err(io::Error::from),
        SyncMechanism::Pool => {
            let fd = file.as_raw_fd();
            let result = glommio::executor()
                .spawn_blocking(move || fdatasync_fd(fd))
                .await;
            drop(file);
            result
        }
    }
}

fn fdatasync_fd(fd: i32) -> io::Result<()> {
    // SAFETY: fdatasync on a descriptor the caller keeps open.
    match unsafe { libc::fdatasync(fd) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Allocates `[offset, offset + len)` of `file` (growing its size), so that
/// appends into it change no file metadata and a sync flushes data only.
pub fn preallocate(file: &BufferedFile, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: fallocate on a descriptor the BufferedFile keeps open; no memory.
    match unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            0,
            offset as libc::off_t,
            len as libc::off_t,
        )
    } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}
