//! The wake guard: a thread that interrupts a glommio executor that has
//! slept through its own wake-ups (a server's shard, a load generator's
//! thread).
//!
//! A shard's glommio executor sleeps in `io_uring_enter` when it has nothing
//! to run, to be woken by its I/O, its timers and other threads. glommio 0.9
//! waits on its main ring, linked by a poll to the ring that holds its
//! timers and the wake-ups other threads send it. Rarely, under load, that
//! sleep is not ended: a shard was found asleep for seconds with a timer
//! long due, a client's bytes waiting on its socket and the network poll
//! that would read them queued but never submitted (tests on a busy 2-CPU
//! machine: a few times in a few thousand server starts with large writes;
//! a request never answered, or a shutdown that never ended). Any signal
//! ended it: `io_uring_enter` returned `EINTR`, glommio went round its loop
//! and everything proceeded.
//!
//! So every watched executor beats: it bumps a counter every
//! [`BEAT_INTERVAL`] for as long as it runs ([`beat`]; a server's shard
//! does it in its shutdown watch, `server::shutdown::watch`). This thread
//! looks every [`CHECK_INTERVAL`]; an executor whose beat has not moved
//! since the last look is sent [`WAKE_SIGNAL`] on its thread, whose handler
//! does nothing. glommio takes
//! the `EINTR` as a wake-up: due timers fire, finished I/O is collected,
//! runnable tasks run. An executor that was only busy (a long computation
//! between two awaits) is interrupted to no effect: the handler returns and
//! restartable system calls restart (`SA_RESTART`). Interruptions are
//! counted (`/metrics`: `corekv_shards_woken_by_guard_total`) and logged at
//! debug level.

use crate::sys;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a watched executor beats.
pub const BEAT_INTERVAL: Duration = Duration::from_millis(20);
/// How often the guard looks at the beats: five of them.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// The signal that interrupts a shard's wait. Its default action is to
/// ignore it, so one that reaches the process before the handler is
/// installed, or after, does no harm (Go's runtime preempts its threads
/// with it for the same reason).
pub const WAKE_SIGNAL: i32 = libc::SIGURG;

/// The executors the guard watches, and how often it interrupted one.
#[derive(Debug, Default)]
pub struct WakeGuard {
    watched: Mutex<Vec<Watched>>,
    nr_woken: AtomicU64,
}

#[derive(Debug)]
struct Watched {
    /// What the executor is, for the log (`shard-0`, `loadgen-1`).
    label: String,
    /// The executor's thread (`gettid`).
    thread: i32,
    beat: Arc<AtomicU64>,
    /// The beat at the last look.
    last_seen: u64,
}

impl WakeGuard {
    /// Watches the executor the calling thread runs, `label`, which bumps
    /// `beat` while it runs; until the returned value is dropped.
    pub fn watch(self: &Arc<Self>, label: String, beat: Arc<AtomicU64>) -> Watching {
        let last_seen = beat.load(Ordering::Relaxed);
        let watched = Watched {
            label: label.clone(),
            thread: sys::thread_id(),
            beat,
            last_seen,
        };
        self.lock().push(watched);
        Watching {
            guard: self.clone(),
            label,
        }
    }

    /// Times an executor was interrupted because its beat stood still.
    pub fn nr_woken(&self) -> u64 {
        self.nr_woken.load(Ordering::Relaxed)
    }

    /// One look: interrupts every executor whose beat has not moved since
    /// the last.
    fn look(&self) {
        for watched in self.lock().iter_mut() {
            let beat = watched.beat.load(Ordering::Relaxed);
            if beat != watched.last_seen {
                watched.last_seen = beat;
                continue;
            }
            self.nr_woken.fetch_add(1, Ordering::Relaxed);
            let label = &watched.label;
            match sys::interrupt_thread(watched.thread, WAKE_SIGNAL) {
                Ok(()) => {
                    tracing::debug!("{label} did not beat for {CHECK_INTERVAL:?}; interrupted it")
                }
                Err(e) => tracing::warn!("cannot interrupt the thread of {label}: {e}"),
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Watched>> {
        // The list stays whole whatever panicked while it was held (pushes,
        // removals and counter updates only): keep using it.
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An executor watched by the guard; dropping it (the executor ends)
/// stops the watch, so that its thread id is never signalled after.
pub struct Watching {
    guard: Arc<WakeGuard>,
    label: String,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.guard.lock().retain(|w| w.label != self.label);
    }
}

/// Bumps `beat` every [`BEAT_INTERVAL`], for ever: the task a watched
/// executor runs when it has no timer of its own to beat with.
pub async fn beat(beat: Arc<AtomicU64>) {
    loop {
        glommio::timer::sleep(BEAT_INTERVAL).await;
        beat.fetch_add(1, Ordering::Relaxed);
    }
}

/// The guard's thread; stopped and joined when dropped.
#[derive(Debug)]
pub struct GuardThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    handler: signal_hook::SigId,
}

/// Installs the handler of [`WAKE_SIGNAL`] and starts the thread that looks
/// after `guard`'s executors.
pub fn start(guard: Arc<WakeGuard>) -> std::io::Result<GuardThread> {
    let handler = install_handler()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::Builder::new()
        .name("corekv-wake-guard".into())
        .spawn(move || loop {
            // Parked rather than asleep, so that dropping the guard (at a
            // server's start, when recovery's HTTP executor hands over, and
            // at every exit) need not wait out an interval.
            let next_look = Instant::now() + CHECK_INTERVAL;
            while let Some(left) = next_look.checked_duration_since(Instant::now()) {
                if stopping.load(Ordering::Acquire) {
                    return;
                }
                std::thread::park_timeout(left);
            }
            guard.look();
        });
    let thread = match thread {
        Ok(thread) => thread,
        Err(e) => {
            signal_hook::low_level::unregister(handler);
            return Err(e);
        }
    };
    Ok(GuardThread {
        stop,
        thread: Some(thread),
        handler,
    })
}

/// A handler for [`WAKE_SIGNAL`] that only makes the interrupted system
/// call return (it sets a flag nobody reads).
fn install_handler() -> std::io::Result<signal_hook::SigId> {
    signal_hook::flag::register(WAKE_SIGNAL, Arc::new(AtomicBool::new(false)))
}

impl Drop for GuardThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
        signal_hook::low_level::unregister(self.handler);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::mpsc;

    /// A thread whose beat stands still is interrupted in a blocking call
    /// (a receive with a timeout, which `SA_RESTART` does not restart); one
    /// that beats is left alone; one no longer watched is not signalled.
    #[test]
    fn an_executor_whose_beat_stood_still_is_interrupted_and_no_other() {
        let handler = install_handler().expect("handler");
        let guard = Arc::new(WakeGuard::default());
        let beating = Arc::new(AtomicU64::new(0));
        let gone = guard.watch("gone".into(), Arc::new(AtomicU64::new(0)));
        drop(gone);
        let _beating = guard.watch("beating".into(), beating.clone());
        let (watching_tx, watching_rx) = mpsc::channel();
        let still = std::thread::spawn({
            let guard = guard.clone();
            move || {
                let (mut socket, _peer) = std::os::unix::net::UnixStream::pair().expect("pair");
                socket
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .expect("timeout");
                let _watching = guard.watch("still".into(), Arc::new(AtomicU64::new(0)));
                watching_tx.send(()).expect("send");
                socket.read(&mut [0u8; 1]).map_err(|e| e.kind())
            }
        });
        watching_rx.recv().expect("watching");
        let mut interrupted = None;
        for _ in 0..200 {
            beating.fetch_add(1, Ordering::Relaxed);
            guard.look();
            if still.is_finished() {
                interrupted = Some(still.join().expect("join"));
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        signal_hook::low_level::unregister(handler);
        assert_eq!(interrupted, Some(Err(std::io::ErrorKind::Interrupted)));
        assert!(guard.nr_woken() >= 1);
        assert_eq!(guard.lock().len(), 1, "the beating one only");
    }
}
