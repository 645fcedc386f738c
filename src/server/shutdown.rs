//! A shard's view of graceful shutdown: a one-way, executor-local signal that
//! the listener and every connection race against their next accept or read.
//!
//! The process-wide flag in [`ServerState`] is set by the signal thread; each
//! shard's [`watch`] task turns it into a local trigger (glommio wakers are
//! executor-local, so the flag is polled rather than waking foreign tasks).
//! The same task beats for the wake guard (`net::wake_guard`).
//! Once triggered, nothing new is read or accepted; work already read finishes
//! and is answered.

use super::state::ServerState;
use crate::notify::Notify;
use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often a shard looks at the process-wide shutdown flag.
const POLL_INTERVAL: Duration = crate::net::wake_guard::BEAT_INTERVAL;

#[derive(Default)]
pub struct Shutdown {
    triggered: Cell<bool>,
    notify: Notify,
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        self.triggered.get()
    }

    pub fn trigger(&self) {
        self.triggered.set(true);
        self.notify.notify_all();
    }

    /// Resolves once shutdown has been triggered.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        self.notify.until(|| self.triggered.get())
    }
}

/// Triggers `local` once the process-wide flag is set, and bumps `beat`
/// at every look for as long as the shard runs: the wake guard
/// (`net::wake_guard`) interrupts a shard whose beat stands still.
pub async fn watch(state: Arc<ServerState>, local: Rc<Shutdown>, beat: Arc<AtomicU64>) {
    loop {
        glommio::timer::sleep(POLL_INTERVAL).await;
        beat.fetch_add(1, Ordering::Relaxed);
        if !local.is_triggered() && state.is_shutting_down() {
            local.trigger();
        }
    }
}
