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
//! 4. with `--http-addr`, bind it for good and answer 503 until recovery
//!    ends ([`crate::http::recovering`]);
//! 5. recover the tables from the logs;
//! 6. start one thread per shard: build its executor, bind its listeners
//!    ([`bind`]), report ready; then connect the mesh and serve (the HTTP
//!    API, [`crate::http`], as a task beside the msgpack listener).
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
//! - [`listener`]: accept loop and the connection limit.
//! - [`compactor`]: the task that compacts the shard's log when it is due.
//! - [`connection`]: buffered framing, one round per read.
//! - [`round`]: decode → route → execute/forward → replies in order.
//! - [`output`]: the bounded send buffer; large values written in place.
//! - [`reclaim`]: frees values that replies held after the table let go of
//!   them, and gives that memory back to the operating system.
//! - [`expiry`]: the active sweep of keys whose deadline has passed.
//! - [`shutdown`]: the per-shard shutdown signal.
//! - [`state`]: the atomics all shards share.

pub mod bind;
pub mod compactor;
pub mod connection;
pub mod expiry;
pub mod final_sync;
pub mod listener;
pub mod output;
pub mod reclaim;
pub mod round;
pub mod shutdown;
pub mod state;

use crate::config::{Config, Engine};
use crate::datadir::{DataDir, DataDirError};
use crate::ids::{Router, ShardId};
use crate::log::writer::LogStart;
use crate::log::{FsyncMode, LogWriter};
use crate::metrics::Metrics;
use crate::proto::RequestLimits;
use crate::shard::{mesh, Shard};
use crate::sys;
use crate::table::Table;
use crate::txn::participant::Participant;
use connection::{ConnectionLimits, ShardContext};
use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};
use shutdown::Shutdown;
use state::ServerState;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Locked memory glommio needs at the least, per process.
const MIN_MEMLOCK_BYTES: u64 = 512 * 1024;
/// Memory each executor registers with io_uring for storage I/O. The memory
/// engine does no file I/O, so the minimum glommio accepts is enough; keeping it
/// small keeps many shards within a default RLIMIT_MEMLOCK.
const IO_MEMORY_BYTES: usize = 64 * 1024;
/// How long a shard waits at shutdown for its connections to finish their rounds.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_POLL: Duration = Duration::from_millis(10);

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
         (kernel 5.8+, not disabled by sysctl kernel.io_uring_disabled or a seccomp profile) and \
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

/// Runs the server until it is shut down by a signal. `on_listening` is called
/// with the bound address once every shard accepts connections.
pub fn run(config: Config, on_listening: impl FnOnce(SocketAddr)) -> Result<(), ServerError> {
    check_memlock()?;
    sys::raise_nofile_limit();
    let addr = probe_bind(config.addr)?;
    let http_addr = config.http_addr.map(probe_bind).transpose()?;
    let data_dir = DataDir::open(&config.data_dir, config.engine)?;
    let metrics = Arc::new(Metrics::new(config.nr_shards, config.engine == Engine::Log));
    let http = match http_addr {
        Some(addr) => {
            // Answers 503 during recovery; see crate::http::recovering.
            let plan = crate::http::HttpPlan::start(addr, config.max_connections)
                .map_err(|source| ServerError::Bind { addr, source })?;
            Some(plan)
        }
        None => None,
    };
    let loaded = load_tables(&config)?;
    if let Some(http) = &http {
        http.end_recovery();
    }
    let state = Arc::new(ServerState::new(config.nr_shards, config.max_connections));
    install_signal_thread(state.clone())?;
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
    on_listening(addr);
    if let Some(http) = &http {
        tracing::info!("http listening on {}", http.addr);
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

/// What the shards start from.
struct Loaded {
    /// Each shard's table, rebuilt from the logs or empty.
    tables: Vec<Table>,
    /// Where cross-shard batch numbering continues.
    next_txn_seq: u64,
    /// Each shard's intact log length (empty with the memory engine).
    log_lens: Vec<u64>,
}

fn load_tables(config: &Config) -> Result<Loaded, ServerError> {
    let limit = config.shard_memory_limit_bytes();
    if config.engine == Engine::Memory {
        tracing::info!("recovered nothing: the memory engine keeps nothing on disk");
        return Ok(Loaded {
            tables: (0..config.nr_shards)
                .map(|_| {
                    let mut table = Table::new(limit);
                    table.set_eviction_policy(config.eviction);
                    table
                })
                .collect(),
            next_txn_seq: 0,
            log_lens: Vec::new(),
        });
    }
    let recovered = crate::log::recover(&config.data_dir, config.nr_shards, config.salvage)?;
    tracing::info!(
        "recovered {} keys from {} log records in {:.3} s",
        recovered.nr_keys,
        recovered.nr_records,
        recovered.elapsed.as_secs_f64()
    );
    let mut tables = recovered.tables;
    for table in &mut tables {
        table.set_memory_limit(limit);
        table.set_eviction_policy(config.eviction);
    }
    Ok(Loaded {
        tables,
        next_txn_seq: recovered.next_txn_seq,
        log_lens: recovered.log_lens,
    })
}

/// Refuses to start below the locked memory glommio needs (unlimited, or a
/// limit that cannot be read, is left to the executor to report).
fn check_memlock() -> Result<(), ServerError> {
    match sys::memlock_limit_bytes() {
        Some(have_bytes) if have_bytes < MIN_MEMLOCK_BYTES => {
            Err(ServerError::Memlock { have_bytes })
        }
        _ => Ok(()),
    }
}

/// Binds once without SO_REUSEPORT: fails if anything already listens on the
/// address (shards bind with SO_REUSEPORT, which would otherwise silently share
/// the port with another server), and turns port 0 into a concrete port.
///
/// A port found in use is tried again for up to [`PORT_RELEASE_WAIT`]: a server
/// killed with `kill -9` leaves its listening socket to the kernel until the
/// kernel has torn down the io_uring rings that were waiting on it, which it
/// does in the background, within a fraction of a second. A live server keeps
/// its port, so the start still fails then, that much later.
fn probe_bind(addr: SocketAddr) -> Result<SocketAddr, ServerError> {
    let deadline = Instant::now() + PORT_RELEASE_WAIT;
    loop {
        match bind::probe(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result.map_err(|source| ServerError::Bind { addr, source }),
        }
    }
}

/// How long start-up waits for a port a dead server's kernel state still holds.
const PORT_RELEASE_WAIT: Duration = Duration::from_secs(1);

fn install_signal_thread(state: Arc<ServerState>) -> Result<(), ServerError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(ServerError::Signals)?;
    std::thread::Builder::new()
        .name("corekv-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if state.is_shutting_down() {
                    tracing::warn!("second signal ({signal}): exiting now");
                    std::process::exit(1);
                }
                tracing::info!("signal {signal}: shutting down (answering requests in flight)");
                state.begin_shutdown();
            }
        })
        .map_err(ServerError::Signals)?;
    Ok(())
}

type ReadyReport = Result<(), ServerError>;

fn spawn_shards(
    config: &Config,
    (addr, http): (SocketAddr, Option<crate::http::HttpPlan>),
    (state, metrics): (Arc<ServerState>, Arc<Metrics>),
    loaded: Loaded,
    ready: mpsc::Sender<ReadyReport>,
) -> Vec<std::thread::JoinHandle<ShardEnd>> {
    let cpus = sys::allowed_cpus();
    let pin = cpus.len() >= config.nr_shards;
    if !pin {
        tracing::warn!(
            "{} shards on {} CPUs: shards are not pinned to CPUs",
            config.nr_shards,
            cpus.len()
        );
    }
    let meshes = mesh::build(config.nr_shards);
    meshes
        .into_iter()
        .zip(loaded.tables)
        .enumerate()
        .map(|(i, (mesh, table))| {
            let placement = if pin {
                Placement::Fixed(cpus[i])
            } else {
                Placement::Unbound
            };
            let plan = ShardPlan {
                id: ShardId(i),
                addr,
                placement,
                mesh,
                state: state.clone(),
                metrics: metrics.clone(),
                limits: connection_limits(config),
                table,
                next_txn_seq: loaded.next_txn_seq,
                log: (config.engine == Engine::Log).then(|| LogPlan {
                    path: crate::log::shard_log_path(&crate::log::log_dir(&config.data_dir), i),
                    len: loaded.log_lens[i],
                    fsync: config.fsync,
                    compact_min_bytes: config.compact_min_bytes,
                }),
                ready: ready.clone(),
                http: http.clone(),
            };
            std::thread::Builder::new()
                .name(format!("corekv-shard-{i}"))
                .spawn(move || plan.run())
                .expect("spawning a shard thread")
        })
        .collect()
}

fn connection_limits(config: &Config) -> ConnectionLimits {
    ConnectionLimits {
        max_frame_bytes: config.max_frame_bytes,
        request: RequestLimits {
            max_key_bytes: config.max_key_bytes,
        },
    }
}

/// Everything a shard thread starts from.
struct ShardPlan {
    id: ShardId,
    addr: SocketAddr,
    placement: Placement,
    mesh: mesh::MeshEnds,
    state: Arc<ServerState>,
    metrics: Arc<Metrics>,
    limits: ConnectionLimits,
    table: Table,
    next_txn_seq: u64,
    log: Option<LogPlan>,
    ready: mpsc::Sender<ReadyReport>,
    /// The HTTP API, if `--http-addr` was given.
    http: Option<crate::http::HttpPlan>,
}

/// Where a shard's log lives, how it syncs, when it is compacted.
struct LogPlan {
    path: std::path::PathBuf,
    /// The intact log's length, where appends continue.
    len: u64,
    fsync: FsyncMode,
    compact_min_bytes: u64,
}

impl LogPlan {
    /// Opens the log for appending after its recovered (intact) contents; a
    /// poisoned log is reported to `state` (for `/health`).
    async fn open(
        &self,
        shard: ShardId,
        state: &Arc<ServerState>,
    ) -> Result<Rc<LogWriter>, ServerError> {
        let open_error = |message: String| ServerError::OpenLog {
            shard,
            path: self.path.clone(),
            message,
        };
        // Read as well as write: compaction copies the log's tail into its snapshot.
        let file = glommio::io::OpenOptions::new()
            .read(true)
            .write(true)
            .buffered_open(&self.path)
            .await
            .map_err(|e| open_error(e.to_string()))?;
        let file_size = file
            .file_size()
            .await
            .map_err(|e| open_error(e.to_string()))?;
        // Recovery left a valid file header: appends are stamped with its epoch.
        let header = file
            .read_at(0, crate::log::format::FILE_HEADER_BYTES)
            .await
            .map_err(|e| open_error(e.to_string()))?;
        let epoch = match crate::log::format::read_file_header(&header) {
            crate::log::format::FileStart::Header(crate::log::format::Framing::Epoch(epoch)) => {
                epoch
            }
            other => return Err(open_error(format!("unexpected file header: {other:?}"))),
        };
        let start = LogStart {
            len: self.len,
            file_size,
            epoch,
        };
        let writer = LogWriter::new(file, start, self.fsync, shard.0);
        let state = state.clone();
        writer.on_poison(move |poisoned| state.shard_log_poisoned(shard, &poisoned.0));
        writer.start();
        Ok(writer)
    }
}

/// How a shard thread ended: `Err` if its log was not wholly safe at
/// shutdown. (A shard that failed to start reported that through `ready`.)
type ShardEnd = Result<(), final_sync::UnsyncedLog>;

impl ShardPlan {
    fn run(self) -> ShardEnd {
        let executor = LocalExecutorBuilder::new(self.placement.clone())
            .name(&format!("corekv-shard-{}", self.id.0))
            .io_memory(IO_MEMORY_BYTES)
            // The log's syncs run on this pool's thread (`log::file_io`). Left
            // free to run on any CPU, it does not wait for its busy shard's CPU
            // to finish a sync (docs/benchmarks.md has the comparison).
            .blocking_thread_pool_placement(PoolPlacement::Unbound(1))
            .make();
        match executor {
            Ok(executor) => executor.run(self.serve()),
            Err(e) => {
                let message = e.to_string();
                let _ = self.ready.send(Err(ServerError::Executor {
                    shard: self.id,
                    message,
                }));
                Ok(())
            }
        }
    }

    async fn serve(self) -> ShardEnd {
        let net = match crate::net::ring::NetRing::new() {
            Ok(net) => net,
            Err(e) => {
                let message = format!("cannot set up its network ring: {e}");
                let error = ServerError::Executor {
                    shard: self.id,
                    message,
                };
                let _ = self.ready.send(Err(error));
                return Ok(());
            }
        };
        let listener = match bind::shared_listener(self.addr) {
            Ok(listener) => crate::net::listener::NetListener::new(listener, net.clone()),
            Err(source) => {
                let error = ServerError::ShardBind {
                    shard: self.id,
                    addr: self.addr,
                    source,
                };
                let _ = self.ready.send(Err(error));
                return Ok(());
            }
        };
        let http_listener = match self.http.as_ref().map(|plan| (plan, plan.bind())) {
            None => None,
            Some((_, Ok(listener))) => Some(listener),
            Some((plan, Err(source))) => {
                let error = ServerError::ShardBind {
                    shard: self.id,
                    addr: plan.addr,
                    source,
                };
                let _ = self.ready.send(Err(error));
                return Ok(());
            }
        };
        let log = match &self.log {
            Some(plan) => match plan.open(self.id, &self.state).await {
                Ok(writer) => Some(writer),
                Err(e) => {
                    let _ = self.ready.send(Err(e));
                    return Ok(());
                }
            },
            None => None,
        };
        let _ = self.ready.send(Ok(()));
        let mesh = self.mesh.connect().await;
        let router = Router::new(self.state.nr_shards);
        let txn = Box::new(Participant::new(self.next_txn_seq));
        let (shard, inboxes) = Shard::new(self.id, router, self.table, log.clone(), txn, mesh);
        shard.start_peer_tasks(inboxes);
        if let Some(plan) = &self.log {
            let task = compactor::compact_when_needed(
                shard.clone(),
                plan.path.clone(),
                plan.compact_min_bytes,
            );
            glommio::spawn_local(task).detach();
        }
        glommio::spawn_local(reclaim::sweep_pinned_values(shard.clone())).detach();
        expiry::start(shard.clone());
        let shutdown = Rc::new(Shutdown::default());
        glommio::spawn_local(shutdown::watch(self.state.clone(), shutdown.clone())).detach();
        self.state.shard_serving(self.id);
        let ctx = ShardContext {
            shard,
            state: self.state.clone(),
            shutdown,
            limits: self.limits,
            metrics: self.metrics.clone(),
        };
        let http = http_listener
            .map(|listener| glommio::spawn_local(crate::http::serve(listener, ctx.clone())));
        glommio::spawn_local(net.clone().run()).detach();
        let live = listener::accept_until_shutdown(listener, ctx.clone()).await;
        if let Some(http) = http {
            http.await; // stops accepting at shutdown too, then finishes its connections
        }
        drain(self.id, &self.state, &live).await;
        net.close();
        // Everything answered has been settled already; this makes the rest of
        // the log (DECIDE records, interval mode's unsynced tail) safe too.
        // A failure is reported once, by `run`, with every shard's.
        match &self.log {
            Some(plan) => final_sync::settle(&ctx.shard, plan.fsync).await,
            None => Ok(()),
        }
    }
}

/// Waits for this shard's connections to finish, then for every other shard,
/// serving forwarded requests all the while (the peer tasks keep running).
async fn drain(id: ShardId, state: &ServerState, live: &std::cell::Cell<usize>) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while live.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(DRAIN_POLL).await;
    }
    if live.get() > 0 {
        tracing::warn!(shard = %id, "closing {} connections that did not finish in {DRAIN_TIMEOUT:?}", live.get());
    }
    state.shard_drained();
    while !state.all_shards_drained() {
        glommio::timer::sleep(DRAIN_POLL).await;
    }
}
