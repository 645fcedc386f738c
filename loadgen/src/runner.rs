//! Runs a [`Config`]: one std thread per `--threads`, each running a glommio
//! executor (unpinned, so the load generator shares CPUs with the server as
//! the scheduler sees fit) that owns every `threads`-th connection.
//!
//! Phases per executor: connect all its connections; wait at a start gate
//! until every executor is connected; drive them all to completion. The run's
//! elapsed time is from the first executor passing the gate to the last one
//! finishing, so connection set-up is not timed.

use crate::config::Config;
use crate::connection::{self, Job, Outcome};
use crate::progress::{Printer, Progress};
use crate::report::{Report, Totals};
use crate::workload::KeyRange;
use glommio::net::TcpStream;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Memory each executor registers with io_uring. The load generator does no file
/// I/O, so glommio's minimum is enough, and a default RLIMIT_MEMLOCK suffices.
const IO_MEMORY_BYTES: usize = 64 * 1024;
/// How often an executor waiting at the start gate looks again.
const GATE_POLL: Duration = Duration::from_micros(200);
/// Latencies above this are recorded as this (HdrHistogram needs a bound).
const MAX_LATENCY_NS: u64 = 3_600 * 1_000_000_000;

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

/// Runs the workload and reports what happened. Mismatches and failed
/// connections are in the report, not errors: see [`Report::passed`].
pub fn run(config: &Config) -> Result<Report, RunError> {
    let progress = Arc::new(Progress::default());
    let gate = Arc::new(StartGate {
        arrived: AtomicUsize::new(0),
        expected: config.nr_threads,
    });
    let threads: Vec<_> = (0..config.nr_threads)
        .map(|index| {
            let (config, progress, gate) = (config.clone(), progress.clone(), gate.clone());
            std::thread::Builder::new()
                .name(format!("loadgen-{index}"))
                .spawn(move || run_thread(index, &config, progress, &gate))
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
    Ok(Report::new(config, merge(results)))
}

fn run_thread(
    index: usize,
    config: &Config,
    progress: Arc<Progress>,
    gate: &StartGate,
) -> Result<ThreadResult, RunError> {
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .name(&format!("loadgen-{index}"))
        .io_memory(IO_MEMORY_BYTES)
        .make();
    match executor {
        Ok(executor) => Ok(executor.run(run_connections(index, config, progress, gate))),
        Err(e) => {
            gate.arrive();
            Err(RunError::Executor(e.to_string()))
        }
    }
}

async fn run_connections(
    index: usize,
    config: &Config,
    progress: Arc<Progress>,
    gate: &StartGate,
) -> ThreadResult {
    let job = Rc::new(job(config, progress));
    let ids: Vec<u64> = (index as u64..u64::from(config.nr_connections))
        .step_by(config.nr_threads)
        .collect();
    let connects: Vec<_> = ids
        .iter()
        .map(|_| glommio::spawn_local(connect(config.addr, config.reply_timeout)))
        .collect();
    let mut streams = Vec::with_capacity(ids.len());
    for connect in connects {
        streams.push(connect.await);
    }
    gate.arrive_and_wait().await;
    let started = Instant::now();
    let tasks: Vec<_> = ids
        .into_iter()
        .zip(streams)
        .map(|(id, stream)| {
            let job = job.clone();
            let range = KeyRange::for_connection(
                id,
                u64::from(config.nr_connections),
                config.nr_keys,
                config.seed,
            );
            glommio::spawn_local(async move {
                match stream {
                    Ok(stream) => connection::drive(&job, id, range, stream).await,
                    Err(e) => {
                        job.progress.connection_failed();
                        Outcome::failed(format!("connection {id}: {e}"))
                    }
                }
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await);
    }
    let finished = Instant::now();
    let latency_ns = job.latency_ns.borrow().clone();
    ThreadResult {
        outcomes,
        latency_ns,
        started,
        finished,
    }
}

fn job(config: &Config, progress: Arc<Progress>) -> Job {
    Job {
        protocol: config.protocol,
        shape: config.shape,
        seed: config.seed,
        messages: config.messages_per_connection,
        pipeline: config.pipeline,
        request: config.protocol.request_template(&config.shape),
        reply: config.protocol.reply_template(&config.shape),
        latency_ns: RefCell::new(new_histogram()),
        progress,
    }
}

async fn connect(addr: std::net::SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    let describe = |e: glommio::GlommioError<()>| format!("cannot connect to {addr}: {e}");
    let stream = TcpStream::connect_timeout(addr, timeout)
        .await
        .map_err(describe)?;
    stream.set_nodelay(true).map_err(describe)?;
    stream.set_read_timeout(Some(timeout)).map_err(describe)?;
    stream.set_write_timeout(Some(timeout)).map_err(describe)?;
    Ok(stream)
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

fn merge(results: Vec<ThreadResult>) -> Totals {
    let mut totals = Totals {
        outcomes: Vec::new(),
        latency_ns: new_histogram(),
        elapsed: Duration::ZERO,
    };
    let started = results.iter().map(|r| r.started).min();
    let finished = results.iter().map(|r| r.finished).max();
    if let (Some(started), Some(finished)) = (started, finished) {
        totals.elapsed = finished - started;
    }
    for result in results {
        totals
            .latency_ns
            .add(&result.latency_ns)
            .expect("histograms with equal bounds");
        totals.outcomes.extend(result.outcomes);
    }
    totals
}
