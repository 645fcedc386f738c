//! Another way in, started and stopped with the server: the HTTP API is one.
//!
//! The server knows nothing of what a frontend speaks. It starts it once its
//! own start-up checks have passed and before the logs are replayed (so the
//! frontend can say "recovering" meanwhile), tells it when recovery has ended,
//! has every shard bind its listener before the shard reports ready, and runs
//! the shard's serving task beside the msgpack listener until shutdown, waiting
//! for it before the shard drains. The binary chooses the frontend
//! (`bin/corekv-server.rs` passes `http::start`), so the server layer imports
//! nothing above it.

use super::connection::ShardContext;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

/// A shard's serving task: given the shard's context, it serves until shutdown
/// and then finishes its connections.
pub type ShardTask = Box<dyn FnOnce(ShardContext) -> Pin<Box<dyn Future<Output = ()>>>>;

/// A started frontend, shared by every shard thread.
pub trait Frontend: Send + Sync {
    /// The address it listens on (port 0 already resolved).
    fn addr(&self) -> SocketAddr;
    /// The logs are replayed; the shards start next.
    fn end_recovery(&self);
    /// Binds this shard's listener, on the shard's thread, and returns the
    /// task that serves it.
    fn bind(&self) -> io::Result<ShardTask>;
}

/// Starts the frontend on `addr` (the server has checked that it is free),
/// allowing at most `max_connections` at once.
pub type StartFrontend =
    fn(addr: SocketAddr, max_connections: usize) -> io::Result<Arc<dyn Frontend>>;
