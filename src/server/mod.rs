//! The server: starts one pinned glommio executor per shard, each with its own
//! listener on the shared address, and runs until SIGINT or SIGTERM.
//!
//! Start-up, in order (any failure is an error naming what to fix, before a
//! single request is served). The checks that need nothing on disk come
//! first, so a start they refuse creates no data directory:
//! 1. check RLIMIT_MEMLOCK (glommio registers memory with io_uring);
//! 2. bind the address (and `--http-addr`) once without SO_REUSEPORT
//!    ([`bind::probe`]), which fails if anyone else — including another
//!    corekv-server — listens there, and resolves port 0;
//! 3. open (create) and lock the data directory, check or write the engine
//!    marker ([`crate::datadir`]);
//! 4. with `--http-addr`, start the HTTP frontend ([`frontend`]): it binds
//!    the address for good and answers 503 until recovery ends;
//! 5. recover the tables from the logs;
//! 6. start one thread per shard: build its executor, bind its listeners
//!    ([`bind`]), report ready; then connect the mesh and serve (the HTTP
//!    frontend's task beside the msgpack listener).
//!
//! Shutdown: the signal thread sets the shared flag; each shard stops accepting,
//! lets its connections answer what they have read, and waits until every shard
//! is drained (peers may still need it to run forwarded requests), then syncs
//! the rest of its log before its executor exits. If any shard's log could not
//! be made safe, [`run`] returns [`ServerError::LogsNotSafe`] naming each such
//! shard and what may be lost, and the process exits non-zero. A second
//! signal exits at once.
//!
//! - [`bind`]: listening sockets (SO_REUSEPORT, SO_REUSEADDR) and the probe.
//! - [`final_sync`]: the last log sync at shutdown, and its failure report.
//! - [`frontend`]: how another way in (the HTTP API) starts and stops with
//!   the server without the server knowing it.
//! - [`listener`]: accept loop and the connection limit.
//! - [`compactor`]: the task that compacts the shard's log when it is due.
//! - [`ring_reads`]: the disk engine's value reads on the shard's own ring.
//! - [`connection`]: buffered framing, one round per read.
//! - [`round`]: decode → route → execute/forward → replies in order.
//! - [`output`]: the bounded send buffer; large values written in place.
//! - [`reclaim`]: frees values that replies held after the table let go of
//!   them, and gives that memory back to the operating system.
//! - [`startup`]: the steps before any shard thread — locked memory, the
//!   address probe, signals, the tables recovered from the logs.
//! - [`shard_thread`]: one shard's thread from its executor to its last sync.
//! - [`expiry`]: the active sweep of keys whose deadline has passed.
//! - [`shutdown`]: the per-shard shutdown signal.
//! - [`state`]: the atomics all shards share.

pub mod bind;
pub mod compactor;
pub mod connection;
pub mod expiry;
pub mod final_sync;
pub mod frontend;
pub mod listener;
pub mod output;
pub mod reclaim;
pub mod resp;
pub mod ring_reads;
pub mod round;
pub mod shard_thread;
pub mod shutdown;
pub mod startup;
pub mod state;

use crate::config::Config;
use crate::datadir::{DataDir, DataDirError};
use crate::ids::ShardId;
use crate::metrics::Metrics;
use crate::sys;
use frontend::StartFrontend;
use shard_thread::spawn_shards;
use startup::{check_memlock, install_signal_thread, load_tables, probe_bind, MIN_MEMLOCK_BYTES};
use state::ServerState;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;

/// Why the server could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    // The cause is the error's source: `{:#}` (anyhow) prints it after the
    // message, so the message must not print it too.
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "locked-memory limit (RLIMIT_MEMLOCK) is {have_bytes} bytes; glommio needs at least \
         {MIN_MEMLOCK_BYTES} bytes for io_uring. Raise it (ulimit -l 1024, systemd \
         LimitMEMLOCK=, docker --ulimit memlock=...) — see docs/operations.md"
    )]
    Memlock { have_bytes: u64 },
    #[error(
        "{shard}: cannot start its io_uring executor: {message}. corekv needs Linux io_uring \
         (kernel 6.1+, not disabled by sysctl kernel.io_uring_disabled or a seccomp profile) and \
         locked memory (RLIMIT_MEMLOCK >= 512 KiB) — see docs/operations.md"
    )]
    Executor { shard: ShardId, message: String },
    #[error("{shard}: cannot listen on {addr}")]
    ShardBind {
        shard: ShardId,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot start the thread that watches the shards: {0}")]
    WakeGuard(std::io::Error),
    #[error("{0} stopped unexpectedly (its thread panicked)")]
    ShardPanicked(ShardId),
    #[error("shutdown failed to make every log safe: {}", final_sync::describe(.0))]
    LogsNotSafe(Vec<final_sync::UnsyncedLog>),
    #[error(transparent)]
    Recovery(#[from] crate::log::RecoveryError),
    #[error("{shard}: cannot open its log {path}: {message}")]
    OpenLog {
        shard: ShardId,
        path: std::path::PathBuf,
        message: String,
    },
}

/// Runs the server until it is shut down by a signal. With `--http-addr`,
/// `start_http` starts the frontend that serves it (see [`frontend`]).
/// `on_listening` is called with the bound address once every shard accepts
/// connections.
pub fn run(
    config: Config,
    start_http: StartFrontend,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), ServerError> {
    check_memlock()?;
    sys::raise_nofile_limit();
    // Each port stays claimed until this server listens on it for good.
    let claim = probe_bind(config.addr)?;
    let addr = claim.addr;
    let http_claim = config.http_addr.map(probe_bind).transpose()?;
    let http_addr = http_claim.as_ref().map(|claim| claim.addr);
    let data_dir = DataDir::open(&config.data_dir, config.engine)?;
    let metrics = Arc::new(Metrics::new(
        config.nr_shards,
        config.engine.logs(),
        config.engine == crate::config::Engine::Disk,
    ));
    let http = match http_addr {
        Some(addr) => {
            // The HTTP API answers 503 during recovery.
            let frontend = start_http(addr, config.max_connections)
                .map_err(|source| ServerError::Bind { addr, source })?;
            Some(frontend)
        }
        None => None,
    };
    let loaded = load_tables(&config)?;
    if let Some(http) = &http {
        http.end_recovery();
    }
    let state = Arc::new(ServerState::new(config.nr_shards, config.max_connections));
    install_signal_thread(state.clone())?;
    // Stopped when this returns, whichever way.
    let _guard_thread =
        crate::net::wake_guard::start(state.wake_guard.clone()).map_err(ServerError::WakeGuard)?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let shared = (state.clone(), metrics);
    let threads = spawn_shards(&config, (addr, http.clone()), shared, loaded, ready_tx);
    for _ in 0..config.nr_shards {
        // A closed channel means a shard thread died before reporting; its join says why.
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => break,
        }
    }
    // Every shard listens: the ports are this server's without the claims.
    drop((claim, http_claim));
    on_listening(addr);
    if let Some(http) = &http {
        tracing::info!("http listening on {}", http.addr());
    }
    let mut unsynced = Vec::new();
    for (shard, thread) in threads.into_iter().enumerate() {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(log)) => unsynced.push(log),
            Err(_) => return Err(ServerError::ShardPanicked(ShardId(shard))),
        }
    }
    drop(data_dir);
    if !unsynced.is_empty() {
        return Err(ServerError::LogsNotSafe(unsynced));
    }
    tracing::info!("shut down cleanly");
    Ok(())
}
