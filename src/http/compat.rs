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
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // glommio reads into an initialised slice; hyper's buffer is not.
        crate::sys::read_into_cursor(buf, |slice| Pin::new(&mut self.0).poll_read(cx, slice))
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
