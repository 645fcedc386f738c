//! A shard's listener: every shard binds the same address with SO_REUSEPORT
//! ([`super::bind`]), so the kernel spreads incoming
//! connections over the shards. Each accepted connection is served by a task on
//! the accepting shard, which coordinates all of that connection's requests.
//!
//! Over `--max-connections`, a new connection receives one reply frame,
//! `[[-9, "OOM", "too many connections …"]]`, and is closed. Accept errors (for
//! example running out of file descriptors) are logged and retried after a
//! pause; they never stop the listener.

use super::connection::{self, ShardContext};
use crate::net::listener::NetListener;
use crate::net::stream::NetStream;
use crate::proto::frame::{begin_frame, finish_frame};
use crate::proto::{reply, ErrorCode};
use futures_lite::{future, AsyncWriteExt};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

/// Pause after a failed accept, so a persistent error does not spin the core.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Accepts until shutdown; returns the count of this shard's live connections,
/// which reaches zero once they have all finished.
pub async fn accept_until_shutdown(listener: NetListener, ctx: ShardContext) -> Rc<Cell<usize>> {
    let live = Rc::new(Cell::new(0usize));
    loop {
        let accept = async { Some(listener.accept().await) };
        let stop = async {
            ctx.shutdown.wait().await;
            None
        };
        match future::or(stop, accept).await {
            None => return live,
            Some(Ok(stream)) => admit(stream, &ctx, &live),
            Some(Err(e)) => {
                tracing::warn!(shard = %ctx.shard.id(), "accept failed: {e}");
                glommio::timer::sleep(ACCEPT_RETRY_PAUSE).await;
            }
        }
    }
}

fn admit(stream: NetStream, ctx: &ShardContext, live: &Rc<Cell<usize>>) {
    if !ctx.state.admit_connection() {
        glommio::spawn_local(refuse(stream, ctx.state.max_connections)).detach();
        return;
    }
    live.set(live.get() + 1);
    let (ctx, live) = (ctx.clone(), live.clone());
    glommio::spawn_local(async move {
        connection::serve(ctx.clone(), stream).await;
        ctx.state.release_connection();
        live.set(live.get() - 1);
    })
    .detach();
}

async fn refuse(mut stream: NetStream, max_connections: usize) {
    let mut out = Vec::new();
    let start = begin_frame(&mut out);
    reply::write_array_len(&mut out, 1);
    let message =
        format!("too many connections: the limit is {max_connections} (--max-connections)");
    reply::write_error(&mut out, ErrorCode::Oom, &message);
    finish_frame(&mut out, start);
    // Best effort: the client may already be gone.
    let _ = stream.write_all(&out).await;
    let _ = stream.close().await;
}
