//! A shard's listener: every shard binds the same address with SO_REUSEPORT
//! ([`super::bind`]), so the kernel spreads incoming
//! connections over the shards. Each accepted connection is served by a task on
//! the accepting shard, which coordinates all of that connection's requests.
//!
//! [`admit_until_shutdown`] is the accept loop of every listener a shard runs
//! (the HTTP API's too): admission under `--max-connections`, a task per
//! connection, a count of the live ones for the drain at shutdown.
//!
//! Over `--max-connections`, a new msgpack connection receives one reply frame,
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
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

/// Pause after a failed accept, so a persistent error does not spin the core.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Accepts msgpack connections until shutdown; returns the count of this
/// shard's live connections, which reaches zero once they have all finished.
pub async fn accept_until_shutdown(listener: NetListener, ctx: ShardContext) -> Rc<Cell<usize>> {
    let listener = &listener;
    let serve = |stream, ctx: ShardContext| connection::serve(ctx, stream);
    admit_until_shutdown(&ctx, "accept", || listener.accept(), serve, refuse).await
}

/// The accept loop every listener of a shard shares (msgpack here, the HTTP
/// API too): until shutdown, take each connection `accept` yields, admit it
/// under `--max-connections` and serve it with `serve` in a task of its own,
/// or, over the limit, let `refuse` tell it why in its protocol. `what` names
/// the listener in the log line of a failed accept (retried after a pause; it
/// never stops the loop). Returns the live-connection count, which reaches
/// zero once every served connection has finished.
pub async fn admit_until_shutdown<S, E, Accepting, Serving, Refusing>(
    ctx: &ShardContext,
    what: &str,
    accept: impl Fn() -> Accepting,
    serve: impl Fn(S, ShardContext) -> Serving,
    refuse: impl Fn(S, usize) -> Refusing,
) -> Rc<Cell<usize>>
where
    Accepting: Future<Output = Result<S, E>>,
    E: std::fmt::Display,
    Serving: Future<Output = ()> + 'static,
    Refusing: Future<Output = ()> + 'static,
{
    let live = Rc::new(Cell::new(0usize));
    loop {
        let accepted = async { Some(accept().await) };
        let stop = async {
            ctx.shutdown.wait().await;
            None
        };
        match future::or(stop, accepted).await {
            None => return live,
            Some(Ok(stream)) if !ctx.state.admit_connection() => {
                glommio::spawn_local(refuse(stream, ctx.state.max_connections)).detach();
            }
            Some(Ok(stream)) => {
                live.set(live.get() + 1);
                let serving = serve(stream, ctx.clone());
                let (state, live) = (ctx.state.clone(), live.clone());
                glommio::spawn_local(async move {
                    serving.await;
                    state.release_connection();
                    live.set(live.get() - 1);
                })
                .detach();
            }
            Some(Err(e)) => {
                tracing::warn!(shard = %ctx.shard.id(), "{what} failed: {e}");
                glommio::timer::sleep(ACCEPT_RETRY_PAUSE).await;
            }
        }
    }
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
