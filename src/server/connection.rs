//! One client connection: buffered framing over the shard's network ring
//! (`crate::net`).
//!
//! The loop: read whatever the socket has into the receive buffer, find every
//! complete frame in it, serve them all as one [`Round`], and send all their
//! replies with one write. A pipelining client therefore costs one read and one
//! write per round, not per message.
//!
//! Limits and failure handling:
//! - The receive buffer grows with the data actually received (doubling), never
//!   to a length a client merely announced, and shrinks back after a big frame.
//! - A length prefix above `--max-frame-bytes` is answered `[[-9, "TOOBIG", …]]`
//!   after the replies to the frames before it; then the connection closes,
//!   because the stream cannot be resynchronised.
//! - A round takes at most [`ROUND_MAX_BYTES`] of frames (at least one frame);
//!   the rest wait in the buffer for the next round, served before reading again.
//!   Together with [`Output`]'s bounded buffer and shared values, this bounds what
//!   a connection holds for replies, however many reads of large values it sends.
//! - While the client does not read its replies, the write waits and nothing more
//!   is read: a slow reader holds only its own buffers.
//! - On shutdown the connection finishes the round in hand, answers it, and
//!   closes instead of reading again.

use super::output::Output;
use super::resp::{self, Dialect};
use super::round::Round;
use super::shutdown::Shutdown;
use super::state::ServerState;
use crate::net::stream::NetStream;
use crate::proto::detect::Protocol;
use crate::proto::frame::{begin_frame, finish_frame, next_frame};
use crate::proto::resp::Version;
use crate::proto::{reply, ErrorCode, FrameTooBig, RequestLimits};
use crate::shard::Shard;
use futures_lite::{future, AsyncReadExt};
use std::io;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// Smallest free space offered to each read.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// A receive buffer larger than this is shrunk once it is nearly empty again.
const SHRINK_ABOVE_BYTES: usize = 1 << 20;
/// Frame bytes one round takes in (a larger single frame is still one round).
/// Bounds the requests, and so the shared-value references, a round holds.
pub const ROUND_MAX_BYTES: usize = 256 * 1024;

/// Limits a connection enforces.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_frame_bytes: u64,
    pub request: RequestLimits,
}

/// Everything a connection task needs from its shard.
#[derive(Clone)]
pub struct ShardContext {
    pub shard: Rc<Shard>,
    pub state: Arc<ServerState>,
    pub shutdown: Rc<Shutdown>,
    pub limits: ConnectionLimits,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The server's configuration, as RESP's CONFIG GET and INFO report it.
    pub config: Arc<crate::config::Config>,
}

/// A connection's buffers and round, whichever protocol it speaks
/// (`server::resp` serves RESP and text connections with them).
pub(super) struct Connection {
    pub(super) stream: NetStream,
    pub(super) inbuf: Vec<u8>,
    /// Bytes of `inbuf` holding received data.
    pub(super) filled: usize,
    pub(super) outbuf: Vec<u8>,
    bodies: Vec<Range<usize>>,
    pub(super) round: Round,
    /// When the last read returned: the arrival of the messages it completed.
    pub(super) read_at: Instant,
}

/// What the frame scan found at the front of the receive buffer.
struct Scan {
    /// Bytes taken by the complete frames found.
    consumed: usize,
    too_big: Option<FrameTooBig>,
    /// The round was cut at [`ROUND_MAX_BYTES`]: more frames may be buffered.
    cut: bool,
}

/// Serves one connection until the client closes it, it breaks the framing, or
/// the server shuts down. Its first byte chooses the protocol
/// ([`Protocol::of_first_byte`]).
pub async fn serve(ctx: ShardContext, stream: NetStream) {
    let mut conn = Connection {
        stream,
        inbuf: vec![0; READ_CHUNK_BYTES],
        filled: 0,
        outbuf: Vec::new(),
        bodies: Vec::new(),
        round: Round::new(
            ctx.limits.request,
            ctx.shard.nr_shards(),
            ctx.config.cluster.clone(),
        ),
        read_at: Instant::now(),
    };
    if let Err(e) = conn.start(&ctx).await {
        tracing::debug!(shard = %ctx.shard.id(), "connection closed: {e}");
    }
}

impl Connection {
    /// Reads the first bytes and serves the protocol they announce.
    async fn start(&mut self, ctx: &ShardContext) -> io::Result<()> {
        if !self.read_more(&ctx.shutdown).await? {
            return Ok(());
        }
        match Protocol::of_first_byte(self.inbuf[0]) {
            Protocol::Msgpack => self.run(ctx).await,
            Protocol::Resp => resp::serve(self, ctx, Dialect::Resp(Version::Resp2)).await,
            Protocol::Text => resp::serve(self, ctx, Dialect::Text).await,
        }
    }
}

impl Connection {
    async fn run(&mut self, ctx: &ShardContext) -> io::Result<()> {
        loop {
            let scan = self.scan_frames(ctx.limits.max_frame_bytes);
            let mut out = Output::new(&mut self.stream, &mut self.outbuf);
            if !self.bodies.is_empty() {
                let inbuf = &self.inbuf[..self.filled];
                let (shard, state) = (&ctx.shard, &ctx.state);
                self.round
                    .serve(shard, state, inbuf, &self.bodies, &mut out)
                    .await?;
            }
            if let Some(too_big) = scan.too_big {
                write_too_big(out.bytes(), too_big);
                out.flush().await?;
                return Ok(());
            }
            out.flush().await?;
            if !self.bodies.is_empty() {
                let requests = ctx.metrics.requests(ctx.shard.id());
                requests.observe(self.round.tally(), self.read_at.elapsed());
            }
            self.consume(scan.consumed);
            // A ready socket is read without suspending, so a client that always
            // has bytes waiting would never let other tasks run.
            glommio::yield_if_needed().await;
            if scan.cut && !ctx.shutdown.is_triggered() {
                continue;
            }
            if !self.read_more(&ctx.shutdown).await? {
                return Ok(());
            }
        }
    }

    /// Records the body of every complete frame at the front of the buffer, up
    /// to [`ROUND_MAX_BYTES`].
    fn scan_frames(&mut self, max_frame_bytes: u64) -> Scan {
        self.bodies.clear();
        let mut consumed = 0;
        loop {
            if consumed >= ROUND_MAX_BYTES {
                return Scan {
                    consumed,
                    too_big: None,
                    cut: true,
                };
            }
            match next_frame(&self.inbuf[consumed..self.filled], max_frame_bytes) {
                Ok(Some(frame)) => {
                    let body = frame.body.start + consumed..frame.body.end + consumed;
                    self.bodies.push(body);
                    consumed += frame.total_len();
                }
                Ok(None) => {
                    return Scan {
                        consumed,
                        too_big: None,
                        cut: false,
                    }
                }
                Err(too_big) => {
                    return Scan {
                        consumed,
                        too_big: Some(too_big),
                        cut: false,
                    }
                }
            }
        }
    }

    /// Drops the first `n` buffered bytes, keeping a partial frame for later.
    pub(super) fn consume(&mut self, n: usize) {
        self.inbuf.copy_within(n..self.filled, 0);
        self.filled -= n;
        if self.inbuf.len() > SHRINK_ABOVE_BYTES && self.filled < READ_CHUNK_BYTES {
            self.inbuf.truncate(READ_CHUNK_BYTES);
            self.inbuf.shrink_to(READ_CHUNK_BYTES);
        }
    }

    /// Reads more bytes; false when the client closed or the server is shutting down.
    pub(super) async fn read_more(&mut self, shutdown: &Shutdown) -> io::Result<bool> {
        self.make_room();
        let read = async { Some(self.stream.read(&mut self.inbuf[self.filled..]).await) };
        let stop = async {
            shutdown.wait().await;
            None
        };
        match future::or(stop, read).await {
            None | Some(Ok(0)) => Ok(false),
            Some(Ok(n)) => {
                self.read_at = Instant::now();
                self.filled += n;
                Ok(true)
            }
            Some(Err(e)) => Err(e),
        }
    }

    /// Ensures at least half a chunk of free space, doubling as a frame grows.
    fn make_room(&mut self) {
        if self.inbuf.len() - self.filled >= READ_CHUNK_BYTES / 2 {
            return;
        }
        let grow_by = self.filled.max(READ_CHUNK_BYTES);
        self.inbuf.resize(self.filled + grow_by, 0);
    }
}

fn write_too_big(out: &mut Vec<u8>, too_big: FrameTooBig) {
    let start = begin_frame(out);
    reply::write_array_len(out, 1);
    reply::write_error(out, ErrorCode::TooBig, &too_big.to_string());
    finish_frame(out, start);
}
