//! Run-wide counters every connection bumps (relaxed atomics, once per batch of
//! replies), and the thread that prints a progress line on stderr once per
//! second while the run lasts.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct Progress {
    messages: AtomicU64,
    ops: AtomicU64,
    mismatches: AtomicU64,
    failed_connections: AtomicU64,
}

impl Progress {
    pub fn add(&self, messages: u64, ops: u64) {
        if messages > 0 {
            self.messages.fetch_add(messages, Relaxed);
            self.ops.fetch_add(ops, Relaxed);
        }
    }

    pub fn mismatch(&self) {
        self.mismatches.fetch_add(1, Relaxed);
    }

    pub fn connection_failed(&self) {
        self.failed_connections.fetch_add(1, Relaxed);
    }

    fn line(&self, elapsed: Duration, ops_last_tick: u64, tick: Duration) -> String {
        format!(
            "[{:>5.1}s] {:>11.0} ops/s  {:>12} ops  {:>9} messages  {} mismatches  {} failed connections",
            elapsed.as_secs_f64(),
            ops_last_tick as f64 / tick.as_secs_f64(),
            self.ops.load(Relaxed),
            self.messages.load(Relaxed),
            self.mismatches.load(Relaxed),
            self.failed_connections.load(Relaxed),
        )
    }
}

/// Prints progress once per [`TICK`] until dropped.
pub struct Printer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Printer {
    pub fn start(progress: Arc<Progress>) -> Printer {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("loadgen-progress".into())
            .spawn(move || print_until_stopped(&progress, &stopped))
            .expect("spawning the progress thread");
        Printer {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

fn print_until_stopped(progress: &Progress, stopped: &mpsc::Receiver<()>) {
    let start = Instant::now();
    let (mut last_ops, mut last_tick) = (0, start);
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
        let now = Instant::now();
        let ops = progress.ops.load(Relaxed);
        eprintln!(
            "{}",
            progress.line(now - start, ops - last_ops, now - last_tick)
        );
        (last_ops, last_tick) = (ops, now);
    }
}

impl Drop for Printer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
