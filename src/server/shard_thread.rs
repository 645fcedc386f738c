//! A shard's thread: its executor, its listeners, its log, and the serving
//! tasks, from start to the last sync at shutdown.
//!
//! [`spawn_shards`] starts one thread per shard, pinned to a CPU when there
//! are enough. Each builds its glommio executor, binds its listeners and opens
//! its log (with the disk engine: its sealed segments too, and how it rolls
//! into new ones), reports ready (or why not), then connects the mesh and serves:
//! the msgpack listener, the frontend's task (the HTTP API), the compactor
//! and the sweep of pinned values. At shutdown it drains its connections,
//! waits until every shard has drained (peers may still forward to it), and
//! syncs the rest of its log.

use super::connection::{ConnectionLimits, ShardContext};
use super::frontend::Frontend;
use super::ring_reads::RingReads;
use super::shutdown::{self, Shutdown};
use super::startup::Loaded;
use super::state::ServerState;
use super::{bind, compactor, expiry, final_sync, listener, reclaim, ServerError};
use crate::config::Config;
use crate::ids::{Router, ShardId};
use crate::log::compaction::LiveScale;
use crate::log::writer::LogStart;
use crate::log::{FsyncMode, LogWriter};
use crate::metrics::Metrics;
use crate::proto::RequestLimits;
use crate::shard::{mesh, Shard};
use crate::sys;
use crate::table::Table;
use crate::txn::participant::Participant;
use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Memory each executor registers with io_uring for storage I/O. The memory
/// engine does no file I/O, so the minimum glommio accepts is enough; keeping it
/// small keeps many shards within a default RLIMIT_MEMLOCK.
const IO_MEMORY_BYTES: usize = 64 * 1024;
/// How long a shard waits at shutdown for its connections to finish their rounds.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_POLL: Duration = Duration::from_millis(10);

pub type ReadyReport = Result<(), ServerError>;

pub fn spawn_shards(
    config: &Config,
    (addr, http): (SocketAddr, Option<Arc<dyn Frontend>>),
    (state, metrics): (Arc<ServerState>, Arc<Metrics>),
    loaded: Loaded,
    ready: mpsc::Sender<ReadyReport>,
) -> Vec<std::thread::JoinHandle<ShardEnd>> {
    let cpus = sys::allowed_cpus();
    let pin = cpus.len() >= config.nr_shards;
    if !pin {
        tracing::warn!(
            "{} shards on {} CPUs: shards are not pinned to CPUs{}",
            config.nr_shards,
            cpus.len(),
            match config.idle_poll {
                // Polling a CPU another shard needs would take its time.
                Some(_) => ", and --idle-poll-us has no effect",
                None => "",
            }
        );
    }
    let idle_poll = config.idle_poll.filter(|_| pin);
    if let Some(idle_poll) = idle_poll {
        tracing::info!(
            "shards poll for {} µs before they sleep",
            idle_poll.as_micros()
        );
    }
    let meshes = mesh::build(config.nr_shards);
    let shared_config = Arc::new(config.clone());
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
                idle_poll,
                mesh,
                state: state.clone(),
                metrics: metrics.clone(),
                limits: connection_limits(config),
                config: shared_config.clone(),
                table,
                next_txn_seq: loaded.next_txn_seq,
                router: config.router(),
                log: (config.engine.logs()).then(|| LogPlan {
                    path: crate::log::shard_log_path(&crate::log::log_dir(&config.data_dir), i),
                    len: loaded.log_lens[i],
                    live_scale: loaded.live_scales[i],
                    fsync: config.fsync,
                    compact_min_bytes: config.compact_min_bytes,
                    segment_bytes: config.segment_bytes,
                    merge_live_percent: config.merge_live_percent,
                    files: loaded.files[i].clone(),
                    values_on_disk: config.engine == crate::config::Engine::Disk,
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
    /// How long the executor polls before it sleeps (only for a shard
    /// pinned to its own CPU).
    idle_poll: Option<Duration>,
    mesh: mesh::MeshEnds,
    state: Arc<ServerState>,
    metrics: Arc<Metrics>,
    limits: ConnectionLimits,
    /// What CONFIG GET and INFO report over RESP.
    config: Arc<Config>,
    table: Table,
    next_txn_seq: u64,
    /// Key → owning shard, as recovery placed the keys.
    router: Router,
    log: Option<LogPlan>,
    ready: mpsc::Sender<ReadyReport>,
    /// The HTTP API, if `--http-addr` was given.
    http: Option<Arc<dyn Frontend>>,
}

/// Where a shard's log lives, how it syncs, when it is compacted.
struct LogPlan {
    path: std::path::PathBuf,
    /// The intact log's length, where appends continue.
    len: u64,
    fsync: FsyncMode,
    compact_min_bytes: u64,
    /// The disk engine's segment size (`log::segments`).
    segment_bytes: u64,
    /// `--merge-live-percent` (`log::merge`).
    merge_live_percent: u64,
    /// The shard's files as recovery numbered them.
    files: crate::log::ShardFiles,
    /// The disk engine: values are read back from the log.
    values_on_disk: bool,
    /// What the snapshot its hint file describes took against its estimate.
    live_scale: Option<LiveScale>,
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
        if self.values_on_disk {
            // Recovery numbered this shard's files (`log::ShardFiles`).
            let reader = glommio::io::DmaFile::open(&self.path)
                .await
                .map_err(|e| open_error(e.to_string()))?;
            let mut sealed = Vec::with_capacity(self.files.sealed.len());
            let mut sealed_bytes = 0;
            for (number, path) in &self.files.sealed {
                let file = glommio::io::DmaFile::open(path)
                    .await
                    .map_err(|e| open_error(format!("{}: {e}", path.display())))?;
                sealed_bytes += file
                    .file_size()
                    .await
                    .map_err(|e| open_error(format!("{}: {e}", path.display())))?;
                sealed.push((*number, file));
            }
            writer.keep_values(crate::log::values::ValueFiles::with_sealed(
                self.files.active,
                reader,
                sealed,
            ));
            writer.roll_segments(crate::log::writer::SegmentPlan {
                active: self.path.clone(),
                segment_bytes: self.segment_bytes,
                next_seq: self.files.next_seq,
                sealed: self.files.sealed.iter().map(|(_, p)| p.clone()).collect(),
                sealed_bytes,
            });
        }
        let state = state.clone();
        writer.on_poison(move |poisoned| state.shard_log_poisoned(shard, &poisoned.0));
        writer.start();
        Ok(writer)
    }
}

/// How a shard thread ended: `Err` if its log was not wholly safe at
/// shutdown. (A shard that failed to start reported that through `ready`.)
pub type ShardEnd = Result<(), final_sync::UnsyncedLog>;

impl ShardPlan {
    fn run(self) -> ShardEnd {
        let mut builder = LocalExecutorBuilder::new(self.placement.clone());
        if let Some(idle_poll) = self.idle_poll {
            // glommio polls its rings, and with them the doorbell of the
            // shard's network ring (`crate::net`), for this long after its
            // task queues run dry, and only then sleeps in the kernel.
            builder = builder.spin_before_park(idle_poll);
        }
        let executor = builder
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
        // Watched by the wake guard from the start (a shard that sleeps
        // through a wake-up while it starts would never report ready)
        // until its executor ends.
        let shutdown = Rc::new(Shutdown::default());
        let beat = Arc::new(AtomicU64::new(0));
        let _watching = self
            .state
            .wake_guard
            .watch(self.id.to_string(), beat.clone());
        glommio::spawn_local(shutdown::watch(self.state.clone(), shutdown.clone(), beat)).detach();
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
        let http_task = match self.http.as_ref().map(|http| (http, http.bind())) {
            None => None,
            Some((_, Ok(task))) => Some(task),
            Some((http, Err(source))) => {
                let error = ServerError::ShardBind {
                    shard: self.id,
                    addr: http.addr(),
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
        if let Some(log) = log.as_ref().filter(|log| log.keeps_values()) {
            log.read_through(Rc::new(RingReads(net.clone())));
        }
        let mesh = self.mesh.connect().await;
        let router = self.router.clone();
        let txn = Box::new(Participant::new(self.next_txn_seq));
        let (shard, inboxes) = Shard::new(
            self.id,
            router,
            self.table,
            log.clone(),
            txn,
            mesh,
            self.config.shard_disk_cache_bytes(),
        );
        shard.start_peer_tasks(inboxes);
        if let Some(scale) = self.log.as_ref().and_then(|plan| plan.live_scale) {
            shard.calibrate_live_bytes(scale);
        }
        let compactor = self.log.as_ref().map(|plan| {
            let task = compactor::compact_when_needed(
                shard.clone(),
                plan.path.clone(),
                compactor::Policy {
                    min_bytes: plan.compact_min_bytes,
                    merge_live_percent: plan.merge_live_percent,
                },
            );
            compactor::spawn(task)
        });
        glommio::spawn_local(reclaim::sweep_pinned_values(shard.clone())).detach();
        expiry::start(shard.clone());
        self.state.shard_serving(self.id);
        // Ready only once serving: the server logs that it listens when every
        // shard is ready, and a /health answered by a shard must then say
        // serving, not recovering (tests/http_recovery.rs saw the 503 when
        // the shards reported ready before connecting their mesh).
        let _ = self.ready.send(Ok(()));
        let ctx = ShardContext {
            shard,
            state: self.state.clone(),
            shutdown,
            limits: self.limits,
            metrics: self.metrics.clone(),
            config: self.config.clone(),
        };
        let http = http_task.map(|serve| glommio::spawn_local(serve(ctx.clone())));
        glommio::spawn_local(net.clone().run()).detach();
        let live = listener::accept_until_shutdown(listener, ctx.clone()).await;
        if let Some(http) = http {
            http.await; // stops accepting at shutdown too, then finishes its connections
        }
        drain(self.id, &self.state, &live).await;
        // A compaction or merge under way stops at its next chunk; its file
        // operations end before the executor does.
        if let (Some(log), Some(compactor)) = (ctx.shard.log(), compactor) {
            log.stop_rewrites();
            compactor.await;
        }
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
