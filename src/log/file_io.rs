//! The system calls a shard's log makes on its file, in one place: appends
//! (`pwrite`), syncs (`fdatasync`) and preallocation (`fallocate`), each
//! through its safe wrapper in `crate::sys`.
//!
//! Appends and preallocation are plain blocking calls on the shard's thread:
//! a buffered write of one group commit's records is a copy into the page
//! cache (microseconds), cheaper than a trip through io_uring and a kernel
//! worker. The sync is the slow call (the disk's cache flush, ~0.1–0.2 ms on
//! the machines measured in docs/benchmarks.md) and must not stop the shard:
//! [`fdatasync`] runs it off the shard's thread and resolves when it is done.

use crate::sys;
use glommio::io::BufferedFile;
use std::io;
use std::os::unix::io::AsRawFd;
use std::rc::Rc;

/// Writes all of `bytes` at `offset` of `file`. A short write to a regular file
/// means the device refused (full, quota): an error like any other.
pub fn pwrite_all(file: &BufferedFile, mut bytes: &[u8], mut offset: u64) -> io::Result<()> {
    let fd = file.as_raw_fd();
    while !bytes.is_empty() {
        match sys::pwrite(fd, bytes, offset) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "short write")),
            Ok(n) => {
                bytes = &bytes[n..];
                offset += n as u64;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Makes everything written to `file` durable without blocking the shard's
/// thread: the `fdatasync` runs on the executor's blocking thread pool (one
/// thread, free to run on any CPU; `server` sets it up). It syncs a duplicate
/// of the file's descriptor, owned by the pool's job, so the file stays open
/// until the sync is done even if this future is dropped first (the number
/// of a closed descriptor may be reused by another file).
///
/// Measured against the alternatives (docs/benchmarks.md, "Which thread runs
/// the sync"): a blocking `fdatasync` on the shard's thread stops the shard
/// for the sync; io_uring's fsync through glommio's ring, or through the
/// shard's own network ring, runs on a kernel worker that shares the shard's
/// CPU; the pool thread pinned to the shard's CPU waits for it too. An unbound
/// pool thread gave the most durable writes per second.
pub async fn fdatasync(file: Rc<BufferedFile>) -> io::Result<()> {
    let fd = sys::dup(file.as_raw_fd())?;
    drop(file);
    glommio::executor()
        .spawn_blocking(move || sys::fdatasync(fd.as_raw_fd()))
        .await
}

/// Allocates `[offset, offset + len)` of `file` (growing its size), so that
/// appends into it change no file metadata and a sync flushes data only.
pub fn preallocate(file: &BufferedFile, offset: u64, len: u64) -> io::Result<()> {
    sys::fallocate(file.as_raw_fd(), offset, len)
}
