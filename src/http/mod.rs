//! The HTTP API (`--http-addr`): concave's `/v1/get` and `/v1/put`, plus
//! `/v1/stats`, `/health`, Prometheus `/metrics` and `/v1/backup` (docs/http.md).
//!
//! Like the msgpack listener, every shard binds the HTTP address with
//! SO_REUSEPORT and SO_REUSEADDR ([`crate::server::bind`]) and serves the
//! connections the kernel hands it, with hyper's HTTP/1.1 server on the shard's
//! own executor ([`compat`]). A request is translated into one msgpack request
//! message and served by the shard's ordinary request path ([`dispatch`]), so
//! routing, ATOMIC, `--fsync` durability and limits apply unchanged; only the
//! translation and the JSON mapping ([`json`]) are HTTP's own.
//!
//! Start and stop: the address is bound before recovery, and until the shards
//! exist [`recovering`] answers every request with 503 (`/health`:
//! `{"status":"recovering"}`); the first shard adopts its listening socket, the
//! others bind their own, so the port never refuses a connection between the
//! two (a port that cannot be bound fails start-up). At shutdown the shard
//! stops accepting, `/health` answers 503, each connection finishes the
//! request in hand and closes (hyper's graceful shutdown), and the shard
//! waits for them, at most [`DRAIN_TIMEOUT`], before it drains its msgpack
//! connections.
//!
//! HTTP connections count against `--max-connections` and in STATS'
//! `connections`; over the limit a connection gets a 503 and is closed.
//!
//! - [`compat`]: hyper's IO traits over glommio's `TcpStream`.
//! - [`recovering`]: the 503 server during recovery, and the socket handover.
//! - [`routes`]: paths, methods, the handlers, error responses.
//! - [`dispatch`]: one msgpack message through a [`Round`](crate::server::round::Round).
//! - [`json`]: JSON ↔ msgpack values.
//! - [`metrics`]: the Prometheus page (the figures: [`crate::metrics`]).

pub mod compat;
pub mod dispatch;
pub mod json;
pub mod metrics;
pub mod recovering;
pub mod routes;

use crate::server::connection::ShardContext;
use crate::server::frontend::{Frontend, ShardTask};
use crate::server::listener::admit_until_shutdown;
use compat::HyperStream;
use dispatch::Dispatcher;
use futures_lite::{future, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a shard waits at shutdown for its HTTP connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// Pause after a failed accept, so a persistent error does not spin the core.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// What every shard needs to serve HTTP.
#[derive(Debug, Clone)]
pub struct HttpPlan {
    /// The resolved address (port 0 already replaced by the chosen port).
    pub addr: SocketAddr,
    /// The 503 server of recovery, until a shard adopts its socket.
    recovering: Arc<Mutex<Option<recovering::Recovering>>>,
}

impl HttpPlan {
    /// Binds `addr` and answers 503 on it until [`HttpPlan::end_recovery`].
    pub fn start(addr: SocketAddr, max_connections: usize) -> std::io::Result<HttpPlan> {
        let recovering = recovering::Recovering::start(addr, max_connections)?;
        Ok(HttpPlan {
            addr,
            recovering: Arc::new(Mutex::new(Some(recovering))),
        })
    }

    /// Stops the 503 answers; new connections wait in the socket's backlog
    /// until the shard that adopts it serves.
    pub fn end_recovery(&self) {
        if let Some(recovering) = self
            .recovering
            .lock()
            .ok()
            .as_deref_mut()
            .and_then(Option::as_mut)
        {
            recovering.stop();
        }
    }

    /// This shard's listener ([`crate::server::bind`]): the recovery server's socket for
    /// the first shard to ask, a new one for the others.
    pub fn bind(&self) -> std::io::Result<TcpListener> {
        let adopted = self
            .recovering
            .lock()
            .ok()
            .and_then(|mut slot| slot.take())
            .and_then(recovering::Recovering::into_listener);
        match adopted {
            Some(listener) => Ok(crate::server::bind::adopt(listener)),
            None => crate::server::bind::shard_listener(self.addr),
        }
    }
}

/// Starts the HTTP API for the server ([`crate::server::run`]): binds `addr`
/// and answers 503 on it until recovery ends.
pub fn start(addr: SocketAddr, max_connections: usize) -> std::io::Result<Arc<dyn Frontend>> {
    Ok(Arc::new(HttpPlan::start(addr, max_connections)?))
}

impl Frontend for HttpPlan {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn end_recovery(&self) {
        HttpPlan::end_recovery(self)
    }

    fn bind(&self) -> std::io::Result<ShardTask> {
        let listener = HttpPlan::bind(self)?;
        Ok(Box::new(move |ctx| Box::pin(serve(listener, ctx))))
    }
}

/// Accepts HTTP connections until shutdown, then waits (bounded) for the open
/// ones to finish.
pub async fn serve(listener: TcpListener, ctx: ShardContext) {
    glommio::spawn_local(publish_figures(ctx.clone())).detach();
    let listener = &listener;
    let live = admit_until_shutdown(
        &ctx,
        "http accept",
        || listener.accept(),
        serve_admitted,
        refuse,
    )
    .await;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while live.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(DRAIN_POLL).await;
    }
}

/// Keeps the figures this shard keeps to itself fresh for other shards'
/// `/metrics` ([`crate::metrics`]).
async fn publish_figures(ctx: ShardContext) {
    while !ctx.shutdown.is_triggered() {
        ctx.metrics.publish(&ctx.shard);
        glommio::timer::sleep(crate::metrics::PUBLISH_PERIOD).await;
    }
}

/// Serves a connection the accept loop admitted, counted in this shard's gauges.
async fn serve_admitted(stream: TcpStream, ctx: ShardContext) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY: {e}");
    }
    count_http_connection(&ctx, true);
    serve_connection(&ctx, stream).await;
    count_http_connection(&ctx, false);
}

/// Counts an opened (or closed) connection in this shard's gauges.
fn count_http_connection(ctx: &ShardContext, opened: bool) {
    let open = &ctx.metrics.shard(ctx.shard.id()).http_connections;
    if opened {
        open.fetch_add(1, Ordering::Relaxed);
    } else {
        open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one connection with hyper until the client closes it, or until
/// shutdown, when the request in hand is finished and the connection closed.
async fn serve_connection(ctx: &ShardContext, stream: TcpStream) {
    let dispatcher = Rc::new(Dispatcher::new(ctx.clone()));
    let service =
        hyper::service::service_fn(move |request| routes::handle(request, dispatcher.clone()));
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(HyperStream(stream), service);
    let mut connection = std::pin::pin!(connection);
    let finished = async { Some(connection.as_mut().await) };
    let stop = async {
        ctx.shutdown.wait().await;
        None
    };
    let result = match future::or(finished, stop).await {
        Some(result) => result,
        None => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(shard = %ctx.shard.id(), "http connection closed: {e}");
    }
}

/// Over `--max-connections`: a 503 written by hand (hyper is not started for
/// a connection we will not serve), then close.
async fn refuse(mut stream: TcpStream, max_connections: usize) {
    let body = format!(
        "{{\"error\":\"too many connections: the limit is {max_connections} (--max-connections)\",\"code\":\"OOM\"}}"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // Best effort: the client may already be gone.
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.close().await;
}
