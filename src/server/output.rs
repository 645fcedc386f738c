//! A connection's send side: reply bytes are gathered in a buffer and written
//! with one `write` per round, but never held without bound — the buffer is
//! flushed whenever it passes [`FLUSH_AT_BYTES`], and values of at least
//! [`DIRECT_WRITE_MIN_BYTES`] are written straight from their shared storage
//! instead of being copied. Each write waits for the socket, so a client that
//! does not read its replies stalls only its own connection, holding at most
//! one buffer's worth of copies.

use crate::proto::{ElementRef, Piece};
use futures_lite::{AsyncWrite, AsyncWriteExt};
use std::io;

/// Buffered reply bytes that trigger a write before the round is done.
pub const FLUSH_AT_BYTES: usize = 1 << 20;
/// Values this large are written from the table's copy, not the buffer.
pub const DIRECT_WRITE_MIN_BYTES: usize = 64 * 1024;

pub struct Output<'a, W> {
    sink: &'a mut W,
    buf: &'a mut Vec<u8>,
}

impl<'a, W: AsyncWrite + Unpin> Output<'a, W> {
    pub fn new(sink: &'a mut W, buf: &'a mut Vec<u8>) -> Self {
        Output { sink, buf }
    }

    /// Appends bytes to the buffer (call [`Output::flush_if_full`] at safe points).
    pub fn bytes(&mut self) -> &mut Vec<u8> {
        self.buf
    }

    /// Writes one result element, value pieces included.
    pub async fn element(&mut self, element: ElementRef<'_>) -> io::Result<()> {
        for piece in element.pieces() {
            match piece {
                Piece::Bytes(bytes) => self.buf.extend_from_slice(bytes),
                Piece::BytesThenValue(bytes, value) => {
                    self.buf.extend_from_slice(bytes);
                    self.value(value).await?;
                }
            }
        }
        self.flush_if_full().await
    }

    async fn value(&mut self, value: &[u8]) -> io::Result<()> {
        if value.len() < DIRECT_WRITE_MIN_BYTES {
            self.buf.extend_from_slice(value);
            return Ok(());
        }
        self.flush().await?;
        self.sink.write_all(value).await
    }

    pub async fn flush_if_full(&mut self) -> io::Result<()> {
        if self.buf.len() >= FLUSH_AT_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.sink.write_all(self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }
}
