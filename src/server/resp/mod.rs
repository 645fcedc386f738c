//! RESP and text connections: the server half of `proto::resp` and
//! `proto::text`.
//!
//! A connection whose first byte is `*` (RESP) or a letter (text) is served
//! here instead of `server::connection`'s msgpack loop, with the same
//! buffers, round and output: read what the socket has, parse every complete
//! command in it (up to [`ROUND_MAX_BYTES`] of them), serve them through the
//! [`exec::Executor`] — one round for a pipeline of plain commands — and
//! write all the replies with one write.
//!
//! - A RESP command is bounded by `--max-frame-bytes` (as a msgpack message
//!   is); a length above it, a negative bulk length or a byte where RESP
//!   framing does not allow it is answered `-ERR Protocol error: …`, then the
//!   connection closes (the stream cannot be resynchronised). A well-framed
//!   but wrong command gets an error reply and the connection stays usable.
//! - A text line is bounded by `proto::text::MAX_LINE_BYTES`.
//! - Back-pressure and shutdown as for msgpack: while the client does not
//!   read, nothing more is read; on shutdown the commands in hand are
//!   answered and the connection closes.
//!
//! - [`exec`]: batching, read-modify-write units, MULTI/EXEC/WATCH.
//! - [`cluster`]: a cluster node's key checks (MOVED, CROSSSLOT) and CLUSTER.
//! - [`translate`]: commands → requests; read-modify-write computation.
//! - [`render`]: result elements → replies; error mapping.
//! - [`reply`]: the dialects (RESP2, RESP3, text).
//! - [`introspection`]: HELLO, CONFIG GET, COMMAND, INFO.
//! - [`session`]: per-connection state.

pub mod cluster;
pub mod exec;
pub mod introspection;
pub mod render;
pub mod reply;
pub mod session;
pub mod translate;

pub use reply::Dialect;

use super::connection::{Connection, ShardContext, ROUND_MAX_BYTES};
use super::output::Output;
use crate::proto::resp::{CommandParser, RespLimits};
use crate::proto::text;
use exec::{Executor, Io};
use reply::Reply;
use session::Session;
use std::io;
use std::ops::Range;

/// The commands found at the front of the receive buffer.
struct Scan {
    /// Bytes they take.
    consumed: usize,
    /// The framing broke after them: this reply, then close.
    fatal: Option<String>,
    /// Cut at [`ROUND_MAX_BYTES`]: more may be buffered.
    cut: bool,
}

/// Serves a RESP or text connection until the client closes it or QUITs, it
/// breaks the framing, or the server shuts down.
pub(super) async fn serve(
    conn: &mut Connection,
    ctx: &ShardContext,
    dialect: Dialect,
) -> io::Result<()> {
    let mut session = Session::new(dialect);
    let mut executor = Executor::default();
    let mut args: Vec<Range<usize>> = Vec::new();
    let mut commands: Vec<Range<usize>> = Vec::new();
    let limits = RespLimits {
        max_command_bytes: ctx.limits.max_frame_bytes as usize,
    };
    let mut parser = CommandParser::default();
    loop {
        let input = &conn.inbuf[..conn.filled];
        let scan = match dialect {
            Dialect::Resp(_) => scan_resp(input, &limits, &mut parser, &mut args, &mut commands),
            Dialect::Text => scan_text(input, &mut args, &mut commands),
        };
        let Connection {
            stream,
            inbuf,
            outbuf,
            round,
            read_at,
            ..
        } = &mut *conn;
        let mut out = Output::new(stream, outbuf);
        let mut io = Io {
            ctx,
            round,
            out: &mut out,
            read_at: *read_at,
        };
        let mut open = true;
        let mut argv: Vec<&[u8]> = Vec::new();
        for command in &commands {
            argv.clear();
            argv.extend(args[command.clone()].iter().map(|r| &inbuf[r.clone()]));
            if argv.is_empty() {
                continue;
            }
            if !executor.command(&argv, &mut session, &mut io).await? {
                open = false;
                break;
            }
        }
        executor.flush(&mut io).await?;
        if let Some(fatal) = &scan.fatal {
            Reply::new(out.bytes(), session.dialect).error(fatal);
            open = false;
        }
        out.flush().await?;
        if !open {
            return Ok(());
        }
        conn.consume(scan.consumed);
        glommio::yield_if_needed().await;
        if scan.cut && !ctx.shutdown.is_triggered() {
            continue;
        }
        if !conn.read_more(&ctx.shutdown).await? {
            return Ok(());
        }
    }
}

/// Finds the complete RESP commands at the front of `input`.
fn scan_resp(
    input: &[u8],
    limits: &RespLimits,
    parser: &mut CommandParser,
    args: &mut Vec<Range<usize>>,
    commands: &mut Vec<Range<usize>>,
) -> Scan {
    args.clear();
    commands.clear();
    let mut consumed = 0;
    while consumed < ROUND_MAX_BYTES {
        let first = args.len();
        match parser.parse(&input[consumed..], limits, args) {
            Ok(Some(parsed)) => {
                args[first..]
                    .iter_mut()
                    .for_each(|r| *r = r.start + consumed..r.end + consumed);
                commands.push(first..args.len());
                consumed += parsed.len;
            }
            Ok(None) => return scan_end(consumed, None, false),
            Err(broken) => return scan_end(consumed, Some(format!("ERR {broken}")), false),
        }
    }
    scan_end(consumed, None, true)
}

/// Finds the complete lines at the front of `input`.
fn scan_text(input: &[u8], args: &mut Vec<Range<usize>>, commands: &mut Vec<Range<usize>>) -> Scan {
    args.clear();
    commands.clear();
    let mut consumed = 0;
    while consumed < ROUND_MAX_BYTES {
        match text::next_line(&input[consumed..]) {
            Ok(Some(len)) => {
                let line = &input[consumed..consumed + len - 1];
                let first = args.len();
                for word in text::words(line) {
                    let start = word.as_ptr() as usize - input.as_ptr() as usize;
                    args.push(start..start + word.len());
                }
                commands.push(first..args.len());
                consumed += len;
            }
            Ok(None) => return scan_end(consumed, None, false),
            Err(too_long) => return scan_end(consumed, Some(format!("ERR {too_long}")), false),
        }
    }
    scan_end(consumed, None, true)
}

fn scan_end(consumed: usize, fatal: Option<String>, cut: bool) -> Scan {
    Scan {
        consumed,
        fatal,
        cut,
    }
}
