//! hyper 1.x on glommio: hyper's runtime traits over a glommio `TcpStream`.
//!
//! hyper is runtime-agnostic; it only needs its own `Read`/`Write` traits on
//! the connection. glommio's `TcpStream` implements the futures-io traits, so
//! [`HyperStream`] forwards one to the other (after glommio's examples/hyper.rs,
//! but passing read errors through instead of swallowing them). The HTTP/1
//! server connection needs no executor (it spawns nothing) and no timer (no
//! header-read timeout: an idle HTTP connection costs what an idle msgpack
//! connection does, one slot of `--max-connections`).
//!
//! Everything here runs on the executor that accepted the connection; nothing
//! is `Send`, and nothing needs to be.

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A glommio TCP stream as hyper's IO type.
pub struct HyperStream(pub TcpStream);

impl hyper::rt::Read for HyperStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // glommio reads into an initialised slice: zero the unfilled part first.
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
        match Pin::new(&mut self.0).poll_read(cx, slice) {
            Poll::Ready(Ok(n)) => {
                // SAFETY: the read initialised (and filled) the first `n` bytes.
                unsafe { buf.advance(n) };
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl hyper::rt::Write for HyperStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}
