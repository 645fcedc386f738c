//! Every system call the crate makes through `libc`, and every other use of
//! `unsafe`, in one place: each function is a safe wrapper whose `unsafe` block
//! says why it is sound. The rest of the crate is `#![deny(unsafe_code)]`
//! (src/lib.rs), so a new `unsafe` elsewhere fails to build.
//!
//! It sits at the bottom of the crate with the ids: it uses nothing of it.
//!
//! - Process: [`memlock_limit_bytes`], [`raise_nofile_limit`],
//!   [`allowed_cpus`], [`physical_memory_bytes`], [`malloc_trim`],
//!   [`random_u64`].
//! - Files: [`pwrite`], [`fdatasync`], [`fallocate`], [`free_bytes`],
//!   [`lock_exclusive`].
//! - Sockets and streams: [`adopt_listener`] and [`adopt_stream`] hand a std
//!   socket to glommio; [`read_into_cursor`] reads into hyper's buffer;
//!   [`recv`], [`send`], [`shutdown_write`] and [`accepted`] for the shards'
//!   network ring.
//! - io_uring (the shards' network ring): [`eventfd_doorbell`],
//!   [`push_bufferless`], [`enter_getevents`].
//! - Threads: [`thread_id`], [`interrupt_thread`] (the wake guard's).
//! - Process figures: [`sysconf`], [`nofile_limit`].

use std::fs::File;
use std::io;
use std::os::unix::io::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::path::Path;
use std::task::Poll;

/// The soft RLIMIT_MEMLOCK in bytes; None when unlimited, or when the limit
/// cannot be read (the executor then reports a real failure itself).
pub fn memlock_limit_bytes() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return None;
    }
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Lifts the soft limit on open files to the hard one. Each connection is a
/// file descriptor, so the server calls it for `--max-connections` not to be
/// silently capped at 1024, and the load generator for its thousands of client
/// connections.
pub fn raise_nofile_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// CPUs this process may run on, in order (its affinity mask); empty if the
/// mask cannot be read.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for pid 0 (us).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// The machine's physical memory in bytes, if the system says.
pub fn physical_memory_bytes() -> Option<u64> {
    // SAFETY: sysconf has no preconditions; it returns -1 on error.
    let (pages, page_size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages > 0 && page_size > 0).then(|| pages as u64 * page_size as u64)
}

/// Asks the allocator to give the pages of freed blocks back to the operating
/// system (glibc; other C libraries are left alone).
pub fn malloc_trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only works on the allocator's
    // own free lists, under its arena locks; it is safe to call from any thread
    // at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Eight random bytes from the kernel; None without getrandom (a very old kernel).
pub fn random_u64() -> Option<u64> {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    (n == bytes.len() as isize).then(|| u64::from_le_bytes(bytes))
}

/// One `pwrite` of `bytes` at `offset` of `fd`: how many bytes it wrote (an
/// interrupted call is an error of kind `Interrupted`, to be retried).
pub fn pwrite(fd: RawFd, bytes: &[u8], offset: u64) -> io::Result<usize> {
    // SAFETY: pwrite reads at most `bytes.len()` bytes from the slice we hold.
    let n = unsafe {
        libc::pwrite(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            offset as libc::off_t,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// One `pread` into `buf` from `offset` of `fd`: how many bytes it read (0
/// at the end of the file; an interrupted call is an error of kind
/// `Interrupted`, to be retried).
pub fn pread(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    // SAFETY: pread writes at most `buf.len()` bytes into the slice we hold.
    let n = unsafe {
        libc::pread(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            offset as libc::off_t,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// `fdatasync` of a descriptor the caller keeps open.
pub fn fdatasync(fd: RawFd) -> io::Result<()> {
    // SAFETY: fdatasync on a descriptor; no memory is involved.
    match unsafe { libc::fdatasync(fd) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// A second descriptor for the open file behind `fd` (close-on-exec), owned
/// by the caller: it keeps the file open however long the caller needs it.
pub fn dup(fd: RawFd) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: fcntl on a descriptor; on success the new one is ours alone.
    match unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) } {
        -1 => Err(io::Error::last_os_error()),
        // SAFETY: `new` is a fresh descriptor nothing else owns.
        new => Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(new) }),
    }
}

/// Allocates `[offset, offset + len)` of the file behind `fd`, growing its size.
pub fn fallocate(fd: RawFd, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: fallocate on a descriptor the caller keeps open; no memory.
    match unsafe { libc::fallocate(fd, 0, offset as libc::off_t, len as libc::off_t) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Bytes an unprivileged process may still write on the file system holding
/// `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: statvfs is plain data, filled by statvfs below.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs reads a NUL-terminated path and fills the struct we pass.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stats.f_bavail as u64 * stats.f_frsize as u64)
}

/// Takes an exclusive `flock` on `file` without waiting; an error of kind
/// `WouldBlock` if another process holds it. Held until the file is closed.
pub fn lock_exclusive(file: &File) -> io::Result<()> {
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    match unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// A listening socket, served by this thread's glommio executor from now on.
pub fn adopt_listener(listener: std::net::TcpListener) -> glommio::net::TcpListener {
    // SAFETY: `into_raw_fd` gives up ownership of a valid, listening socket,
    // which the glommio listener now owns (and closes) alone.
    unsafe { glommio::net::TcpListener::from_raw_fd(listener.into_raw_fd()) }
}

/// A connected socket, served by this thread's glommio executor from now on.
pub fn adopt_stream(stream: std::net::TcpStream) -> glommio::net::TcpStream {
    // SAFETY: `into_raw_fd` gives up ownership of a valid, connected socket,
    // which the glommio stream now owns (and closes) alone.
    unsafe { glommio::net::TcpStream::from_raw_fd(stream.into_raw_fd()) }
}

/// Reads into hyper's buffer with `read`, which fills an initialised slice
/// and says how many bytes it read (glommio reads into `&mut [u8]`, hyper
/// hands out uninitialised memory).
pub fn read_into_cursor(
    mut buf: hyper::rt::ReadBufCursor<'_>,
    read: impl FnOnce(&mut [u8]) -> Poll<io::Result<usize>>,
) -> Poll<io::Result<()>> {
    // SAFETY: we only ever write initialised bytes into the cursor's memory.
    let unfilled = unsafe { buf.as_mut() };
    for byte in unfilled.iter_mut() {
        byte.write(0);
    }
    // SAFETY: every byte of `unfilled` was initialised just above, and
    // MaybeUninit<u8> has the layout of u8.
    let slice = unsafe {
        std::slice::from_raw_parts_mut(unfilled.as_mut_ptr().cast::<u8>(), unfilled.len())
    };
    match read(slice) {
        Poll::Ready(Ok(n)) => {
            // SAFETY: the read initialised (and filled) the first `n` bytes.
            unsafe { buf.advance(n) };
            Poll::Ready(Ok(()))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// A descriptor a successful `accept` returned, owned from now on.
pub fn accepted(fd: RawFd) -> std::os::fd::OwnedFd {
    assert!(
        fd >= 0,
        "accept results are checked before they are adopted"
    );
    // SAFETY: a successful accept returns a new descriptor that nobody else owns.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
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

/// Receives into `buf` without blocking: `Ok(None)` when nothing is there,
/// `Ok(Some(0))` at end of stream.
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

/// Sends from `buf` without blocking (and without SIGPIPE on a closed peer):
/// `Ok(None)` when the socket has no room.
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

/// Ends the sending direction of a socket (the peer reads end of stream).
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown takes no pointers.
    match unsafe { libc::shutdown(fd, libc::SHUT_WR) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Closes a descriptor the kernel handed over (an accept's socket) that
/// nothing else owns.
pub fn close(fd: RawFd) {
    // SAFETY: the caller owns `fd` and nothing uses it after this.
    drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
}

/// A new blocking eventfd, as a glommio file (the network ring's doorbell:
/// io_uring signals it, glommio reads it) and its raw descriptor, which stays
/// valid as long as the file.
pub fn eventfd_doorbell() -> io::Result<(glommio::io::BufferedFile, RawFd)> {
    // SAFETY: eventfd takes no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else; the file
    // closes it.
    Ok((unsafe { glommio::io::BufferedFile::from_raw_fd(fd) }, fd))
}

/// The calling thread's kernel id (`gettid`), for [`interrupt_thread`].
pub fn thread_id() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Sends `signal` to thread `tid` of this process (`tgkill`): a blocking
/// system call it is in returns `EINTR` once the signal's handler has run.
pub fn interrupt_thread(tid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: tgkill takes no pointers; a thread of our own process is named.
    match unsafe { libc::tgkill(libc::getpid(), tid, signal) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Pushes `entry` onto `ring`'s submission queue; false if the queue is full.
/// Only for operations that point at no memory (polls, accepts without an
/// address, cancellations): nothing must outlive the submission.
pub fn push_bufferless(ring: &mut io_uring::IoUring, entry: &io_uring::squeue::Entry) -> bool {
    debug_assert!(
        [
            io_uring::opcode::PollAdd::CODE,
            io_uring::opcode::Accept::CODE,
            io_uring::opcode::AsyncCancel::CODE
        ]
        .contains(&(entry.get_opcode() as u8)),
        "only bufferless operations"
    );
    // SAFETY: the operations allowed here carry no buffer or address the
    // kernel could touch after the submission.
    unsafe { ring.submission().push(entry).is_ok() }
}

/// Pushes the read `entry` onto `ring`'s submission queue; false if the
/// queue is full.
///
/// # Safety
/// The buffer the read points into must stay allocated, and not be moved
/// or otherwise used, until the read's completion has been reaped from
/// `ring` (or for ever, if the ring is dropped before).
pub unsafe fn push_read(ring: &mut io_uring::IoUring, entry: &io_uring::squeue::Entry) -> bool {
    debug_assert_eq!(
        entry.get_opcode() as u8,
        io_uring::opcode::Read::CODE,
        "only reads"
    );
    // SAFETY: the caller keeps the buffer alive as this function requires.
    unsafe { ring.submission().push(entry).is_ok() }
}

/// `io_uring_enter` submitting `to_submit` entries and, with `GETEVENTS`
/// (`IORING_ENTER_GETEVENTS`, 1 in the kernel ABI), running the completions
/// the kernel deferred for this ring (`DEFER_TASKRUN`), without waiting.
pub fn enter_getevents(ring: &io_uring::IoUring, to_submit: u32) -> io::Result<usize> {
    const ENTER_GETEVENTS: u32 = 1;
    // SAFETY: no argument points at memory.
    unsafe {
        ring.submitter()
            .enter::<libc::sigset_t>(to_submit, 0, ENTER_GETEVENTS, None)
    }
}

/// A `sysconf` value, if positive.
pub fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf has no preconditions; it returns -1 on error.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value).ok().filter(|&v| v > 0)
}

/// The soft limit on open files.
pub fn nofile_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    Some(limit.rlim_cur)
}
