//! Runs a [`Config`]: one std thread per `--threads`, each running a glommio
//! executor (unpinned, so the load generator shares CPUs with the server as
//! the scheduler sees fit) that owns every `threads`-th connection.
//!
//! Phases:
//! 1. Set-up, in the calling thread: every connection's keys (routed and
//!    bucketed by shard for `--placement`; with `--cluster`, the node each
//!    connection talks to, from the slot map `--addr` answers, and the keys
//!    that node owns); the shared counter reset (increments workload).
//! 2. Per executor: connect all its connections and prefill their keys (mixed
//!    workloads; untimed); wait at a start gate until every executor is ready;
//!    drive them all to completion. The run's elapsed time is from the first
//!    executor passing the gate to the last one finishing, or the `--duration`
//!    window, so connection set-up and prefill are not timed.
//! 3. The counter's final check (increments workload).

use crate::config::{Config, Workload};
use crate::connection::{self, Job, Outcome, Span};
use crate::increments::{self, Increments};
use crate::keys::{ConnKeys, PlacementSpec, OWNED_PREFIX};
use crate::mix::{Mix, Prefill};
use crate::progress::{Printer, Progress};
use crate::report::{Report, Totals};
use crate::script::Script;
use crate::workload::{Fixed, FixedTemplates};
use corekv::client::ClusterClient;
use corekv::cluster::ClusterMap;
use corekv::net::ring::NetRing;
use corekv::net::stream::NetStream;
use corekv::net::wake_guard::{self, WakeGuard};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Memory each executor registers with io_uring. The load generator does no file
/// I/O, so glommio's minimum is enough, and a default RLIMIT_MEMLOCK suffices.
const IO_MEMORY_BYTES: usize = 64 * 1024;
/// How often an executor waiting at the start gate looks again.
const GATE_POLL: Duration = Duration::from_micros(200);
/// Latencies above this are recorded as this (HdrHistogram needs a bound).
const MAX_LATENCY_NS: u64 = 3_600 * 1_000_000_000;
/// Prefill messages in flight per connection.
const PREFILL_PIPELINE: u32 = 8;

/// The run could not take place at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "cannot start a glommio executor: {0}. The load generator needs Linux io_uring and \
         RLIMIT_MEMLOCK >= 512 KiB"
    )]
    Executor(String),
    #[error("executor thread {0} panicked")]
    Panicked(usize),
    #[error("{0}")]
    Setup(String),
}

/// What one executor thread brings back.
struct ThreadResult {
    outcomes: Vec<Outcome>,
    latency_ns: Histogram<u64>,
    started: Instant,
    finished: Instant,
}

/// Counts executors that are ready (or failed to start) so all start together.
struct StartGate {
    arrived: AtomicUsize,
    expected: usize,
}

impl StartGate {
    fn arrive(&self) {
        self.arrived.fetch_add(1, Ordering::AcqRel);
    }

    async fn arrive_and_wait(&self) {
        self.arrive();
        while self.arrived.load(Ordering::Acquire) < self.expected {
            glommio::timer::sleep(GATE_POLL).await;
        }
    }
}

/// Where one connection goes and which keys it uses.
#[derive(Debug, Clone)]
struct ConnPlan {
    keys: ConnKeys,
    /// `--addr`, or with `--cluster` the connection's node.
    addr: SocketAddr,
}

/// Runs the workload and reports what happened. Mismatches and failed
/// connections are in the report, not errors: see [`Report::passed`].
pub fn run(config: &Config) -> Result<Report, RunError> {
    let mut per_thread = vec![Vec::new(); config.nr_threads];
    for plan in connection_plans(config)? {
        per_thread[plan.keys.conn as usize % config.nr_threads].push(plan);
    }
    if config.workload == Workload::Increments {
        increments::reset(config.addr, config.key_bytes, config.reply_timeout)
            .map_err(RunError::Setup)?;
    }
    let progress = Arc::new(Progress::default());
    // glommio's sleep can miss a wake-up under load; stopped when this returns.
    let guard = Arc::new(WakeGuard::default());
    let _guard_thread = wake_guard::start(guard.clone())
        .map_err(|e| RunError::Setup(format!("cannot start the wake guard thread: {e}")))?;
    let gate = Arc::new(StartGate {
        arrived: AtomicUsize::new(0),
        expected: config.nr_threads,
    });
    let threads: Vec<_> = per_thread
        .into_iter()
        .enumerate()
        .map(|(index, keys)| {
            let (config, progress, gate) = (config.clone(), progress.clone(), gate.clone());
            let guard = guard.clone();
            std::thread::Builder::new()
                .name(format!("loadgen-{index}"))
                .spawn(move || run_thread(index, config, keys, (progress, guard), &gate))
                .expect("spawning an executor thread")
        })
        .collect();
    let printer = config.show_progress.then(|| Printer::start(progress));
    let results: Vec<_> = threads
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.join().map_err(|_| RunError::Panicked(i))?)
        .collect::<Result<_, _>>()?;
    drop(printer);
    let mut totals = merge(config, results);
    if config.workload == Workload::Increments {
        let successes = totals.outcomes.iter().map(|o| o.tally.successes).sum();
        let timeout = config.reply_timeout;
        totals.counter = Some(increments::verify(
            config.addr,
            config.key_bytes,
            timeout,
            successes,
        ));
    }
    Ok(Report::new(config, totals))
}

/// Every connection's keys, placed on shards if asked, and its address.
fn connection_plans(config: &Config) -> Result<Vec<ConnPlan>, RunError> {
    let keys = connection_keys(config)?;
    if !config.cluster {
        let plan = |keys| ConnPlan {
            keys,
            addr: config.addr,
        };
        return Ok(keys.into_iter().map(plan).collect());
    }
    let map = ClusterClient::connect(&[config.addr], Some(config.reply_timeout))
        .map_err(|e| {
            RunError::Setup(format!(
                "--cluster: cannot get the slot map from {}: {e}",
                config.addr
            ))
        })?
        .map()
        .clone();
    keys.into_iter()
        .map(|keys| on_node(config, &map, keys))
        .collect()
}

/// Connection `keys.conn` goes to node `conn mod nodes` and keeps the keys
/// of its partition that node owns.
fn on_node(config: &Config, map: &ClusterMap, keys: ConnKeys) -> Result<ConnPlan, RunError> {
    let node = &map.nodes()[keys.conn as usize % map.nodes().len()];
    let (prefix, needed) = match &config.workload {
        Workload::Fixed { shape, .. } => (shape.partition_prefix(), shape.keys_per_message()),
        _ => (OWNED_PREFIX, 1),
    };
    let owns = |key: &[u8]| map.owner(corekv::slot::key_slot(key)).name == node.name;
    let keys = keys
        .on_node(&prefix, config.key_bytes, needed, owns)
        .map_err(RunError::Setup)?;
    Ok(ConnPlan {
        keys,
        addr: node.addr,
    })
}

/// Every connection's keys, placed on shards if asked.
fn connection_keys(config: &Config) -> Result<Vec<ConnKeys>, RunError> {
    let nr_conns = u64::from(config.nr_connections);
    let spec = match &config.workload {
        Workload::Fixed {
            shape,
            placement: Some((placement, nr_shards)),
        } => Some(PlacementSpec {
            placement: *placement,
            nr_shards: *nr_shards,
            prefix: shape.partition_prefix(),
            key_bytes: config.key_bytes,
            per_message: shape.keys_per_message(),
        }),
        _ => None,
    };
    (0..nr_conns)
        .map(|conn| {
            let keys = ConnKeys::new(conn, nr_conns, config.nr_keys, config.seed)
                .with_fresh_prefix(config.fresh_prefix);
            match &spec {
                Some(spec) => keys.place(spec).map_err(|e| RunError::Setup(e.to_string())),
                None => Ok(keys),
            }
        })
        .collect()
}

fn run_thread(
    index: usize,
    config: Config,
    keys: Vec<ConnPlan>,
    (progress, guard): (Arc<Progress>, Arc<WakeGuard>),
    gate: &StartGate,
) -> Result<ThreadResult, RunError> {
    let name = format!("loadgen-{index}");
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .name(&name)
        .io_memory(IO_MEMORY_BYTES)
        .make();
    match executor {
        Ok(executor) => Ok(executor.run(async move {
            let beat = Arc::new(AtomicU64::new(0));
            let _watching = guard.watch(name, beat.clone());
            glommio::spawn_local(wake_guard::beat(beat)).detach();
            run_connections(Rc::new(config), keys, progress, gate).await
        })),
        Err(e) => {
            gate.arrive();
            Err(RunError::Executor(e.to_string()))
        }
    }
}

/// A connected connection with its script, ready to run.
type Prepared = Result<(NetStream, Box<dyn Script>), String>;

async fn run_connections(
    config: Rc<Config>,
    keys: Vec<ConnPlan>,
    progress: Arc<Progress>,
    gate: &StartGate,
) -> ThreadResult {
    // The executor's own network ring (corekv::net): its sockets' events never
    // interrupt the thread, so the load generator costs little per message.
    let ring = match NetRing::new() {
        Ok(ring) => ring,
        Err(e) => {
            gate.arrive();
            let failed = keys
                .iter()
                .map(|_| Outcome::failed(format!("network ring: {e}")));
            return ThreadResult {
                outcomes: failed.collect(),
                latency_ns: new_histogram(),
                started: Instant::now(),
                finished: Instant::now(),
            };
        }
    };
    glommio::spawn_local(ring.clone().run()).detach();
    let job = Rc::new(run_job(&config, progress.clone()));
    let prefill = (config.prefill_messages() > 0).then(|| Rc::new(prefill_job(&config, progress)));
    let templates = match &config.workload {
        Workload::Fixed { shape, .. } => {
            Some(Rc::new(FixedTemplates::new(config.protocol, *shape)))
        }
        _ => None,
    };
    let ids: Vec<u64> = keys.iter().map(|k| k.keys.conn).collect();
    let preparing: Vec<_> = keys
        .into_iter()
        .map(|plan| {
            let script = script(&config, templates.clone(), &plan.keys);
            let prepared = prepare(config.clone(), prefill.clone(), plan, script, ring.clone());
            glommio::spawn_local(prepared)
        })
        .collect();
    let mut prepared = Vec::with_capacity(preparing.len());
    for task in preparing {
        prepared.push(task.await);
    }
    gate.arrive_and_wait().await;
    let started = Instant::now();
    let tasks: Vec<_> = ids
        .into_iter()
        .zip(prepared)
        .map(|(id, ready)| glommio::spawn_local(run_one(job.clone(), id, ready, started)))
        .collect();
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await);
    }
    let finished = Instant::now();
    ring.close();
    let latency_ns = job.latency_ns.borrow().clone();
    ThreadResult {
        outcomes,
        latency_ns,
        started,
        finished,
    }
}

/// The script a connection runs.
fn script(
    config: &Config,
    templates: Option<Rc<FixedTemplates>>,
    keys: &ConnKeys,
) -> Box<dyn Script> {
    let (key_bytes, value_bytes) = (config.key_bytes, config.value_bytes);
    match &config.workload {
        Workload::Fixed { .. } => {
            let templates = templates.expect("fixed workloads have templates");
            Box::new(Fixed::new(templates, keys.clone(), config.seed))
        }
        Workload::Mix(spec) => Box::new(Mix::new(
            *spec,
            config.protocol,
            keys,
            key_bytes,
            value_bytes,
            config.seed,
        )),
        Workload::Increments => Box::new(Increments::new(key_bytes)),
    }
}

/// Connects and, for a mixed workload, prefills the connection's keys.
async fn prepare(
    config: Rc<Config>,
    prefill: Option<Rc<Job>>,
    plan: ConnPlan,
    script: Box<dyn Script>,
    ring: Rc<NetRing>,
) -> Prepared {
    let ConnPlan { keys, addr } = plan;
    let id = keys.conn;
    let mut stream = NetStream::connect(addr, config.reply_timeout, ring)
        .map_err(|e| format!("connection {id}: cannot connect to {addr}: {e}"))?;
    if let Some(mut job) = prefill {
        let c = &config;
        let mut filler = Prefill::new(c.protocol, &keys, c.key_bytes, c.value_bytes, c.seed);
        // With --cluster a connection keeps only its node's keys, so its
        // prefill is shorter than the partition's.
        if filler.messages() != c.prefill_messages() {
            job = Rc::new(Job {
                span: Span::Messages(filler.messages()),
                ..prefill_job(c, job.progress.clone())
            });
        }
        let outcome = connection::drive(&job, id, &mut filler, &mut stream, Instant::now()).await;
        if let Some(failure) = outcome.failure {
            return Err(format!("prefill failed: {failure}"));
        }
        if outcome.mismatches > 0 {
            let sample = outcome.mismatch_samples.join("; ");
            return Err(format!(
                "connection {id}: prefill got {} wrong replies: {sample}",
                outcome.mismatches
            ));
        }
    }
    Ok((stream, script))
}

async fn run_one(job: Rc<Job>, id: u64, ready: Prepared, started: Instant) -> Outcome {
    match ready {
        Ok((mut stream, mut script)) => {
            connection::drive(&job, id, &mut *script, &mut stream, started).await
        }
        Err(e) => {
            job.progress.connection_failed();
            Outcome::failed(e)
        }
    }
}

fn run_job(config: &Config, progress: Arc<Progress>) -> Job {
    Job {
        protocol: config.protocol,
        pipeline: config.pipeline,
        span: config.span,
        rate_ops_per_s: config.rate_ops_per_s,
        ops_per_message: config.ops_per_message(),
        nr_connections: config.nr_connections,
        record: true,
        latency_ns: RefCell::new(new_histogram()),
        progress,
        reply_timeout: config.reply_timeout,
    }
}

fn prefill_job(config: &Config, progress: Arc<Progress>) -> Job {
    Job {
        pipeline: PREFILL_PIPELINE,
        span: Span::Messages(config.prefill_messages()),
        rate_ops_per_s: None,
        record: false,
        ..run_job(config, progress)
    }
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

fn merge(config: &Config, results: Vec<ThreadResult>) -> Totals {
    let mut totals = Totals {
        outcomes: Vec::new(),
        latency_ns: new_histogram(),
        elapsed: Duration::ZERO,
        counter: None,
    };
    let started = results.iter().map(|r| r.started).min();
    let finished = results.iter().map(|r| r.finished).max();
    totals.elapsed = match (config.span, started, finished) {
        (Span::Window { duration, .. }, ..) => duration,
        (_, Some(started), Some(finished)) => finished - started,
        _ => Duration::ZERO,
    };
    for result in results {
        totals
            .latency_ns
            .add(&result.latency_ns)
            .expect("histograms with equal bounds");
        totals.outcomes.extend(result.outcomes);
    }
    totals
}
