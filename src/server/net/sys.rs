//! The system calls of the network path, each wrapped once with its safety
//! argument: non-blocking `recv`/`send` on a connected socket, the doorbell's
//! eventfd, and socket options.

use std::io;
use std::os::unix::io::RawFd;

/// A blocking eventfd (io_uring waits on it; see `ring`).
pub fn eventfd() -> io::Result<RawFd> {
    // SAFETY: eventfd takes no pointers.
    match unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) } {
        -1 => Err(io::Error::last_os_error()),
        fd => Ok(fd),
    }
}

/// `Ok(None)` when the call would block.
fn nonblocking(result: isize) -> io::Result<Option<usize>> {
    if result >= 0 {
        return Ok(Some(result as usize));
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EAGAIN) => Ok(None),
        _ => Err(error),
    }
}

/// Receives into `buf` without blocking: `Ok(Some(0))` at end of stream.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: recv writes at most `buf.len()` bytes into the slice we hold.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        match nonblocking(n) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Sends from `buf` without blocking (and without SIGPIPE on a closed peer).
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: send reads at most `buf.len()` bytes from the slice we hold.
        let n = unsafe {
            libc::send(
                fd,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        match nonblocking(n) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Ends the sending direction (the peer reads end of stream).
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown takes no pointers.
    match unsafe { libc::shutdown(fd, libc::SHUT_WR) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}
