//! [`NetStream`]: one client connection's socket on the shard's [`NetRing`],
//! as `AsyncRead + AsyncWrite`.
//!
//! Reads and writes are non-blocking system calls made by the connection's own
//! task. Only when one would block does the task arm a poll on the ring and
//! park; the poller wakes it when the socket is ready. After a read that did
//! not fill the caller's buffer the socket is most likely drained, so the next
//! read arms the poll at once instead of first making a `recv` that would
//! only say "would block".

use super::ring::{NetRing, Op};
use crate::sys;
use futures_lite::{AsyncRead, AsyncWrite};
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

pub struct NetStream {
    // Fields drop in this order: a poll still in flight has its cancellation
    // queued before the socket is closed (the kernel holds its own reference
    // to the socket until the cancellation is submitted and done).
    /// The poll a read waits for.
    readable: Option<Op>,
    writable: Option<Op>,
    fd: OwnedFd,
    ring: Rc<NetRing>,
    /// The last read left the socket empty: poll before reading again.
    drained: bool,
}

impl NetStream {
    pub fn new(fd: OwnedFd, ring: Rc<NetRing>) -> NetStream {
        NetStream {
            readable: None,
            writable: None,
            fd,
            ring,
            drained: true,
        }
    }

    /// Connects to `addr` (a blocking connect, bounded by `timeout`: for a
    /// client setting up its connections), with Nagle's algorithm off.
    pub fn connect(
        addr: std::net::SocketAddr,
        timeout: std::time::Duration,
        ring: Rc<NetRing>,
    ) -> io::Result<NetStream> {
        let stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        Ok(NetStream::new(OwnedFd::from(stream), ring))
    }

    /// Waits for `op` (armed if absent); an error result is the socket's error.
    fn wait(
        op: &mut Option<Op>,
        ring: &Rc<NetRing>,
        fd: i32,
        events: i16,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let pending = op.get_or_insert_with(|| ring.poll(fd, events));
        let result = ready!(Pin::new(pending).poll(cx));
        *op = None;
        if result < 0 {
            return Poll::Ready(Err(io::Error::from_raw_os_error(-result)));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for NetStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let fd = this.fd.as_raw_fd();
        loop {
            if this.drained {
                ready!(Self::wait(
                    &mut this.readable,
                    &this.ring,
                    fd,
                    libc::POLLIN,
                    cx
                ))?;
            }
            match sys::recv(fd, buf)? {
                Some(n) => {
                    this.drained = n < buf.len();
                    return Poll::Ready(Ok(n));
                }
                None => this.drained = true,
            }
        }
    }
}

impl AsyncWrite for NetStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let fd = this.fd.as_raw_fd();
        loop {
            if let Some(n) = sys::send(fd, buf)? {
                return Poll::Ready(Ok(n));
            }
            ready!(Self::wait(
                &mut this.writable,
                &this.ring,
                fd,
                libc::POLLOUT,
                cx
            ))?;
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(sys::shutdown_write(self.fd.as_raw_fd()))
    }
}
