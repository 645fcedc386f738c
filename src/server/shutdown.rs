//! A shard's view of graceful shutdown: a one-way, executor-local signal that
//! the listener and every connection race against their next accept or read.
//!
//! The process-wide flag in [`ServerState`] is set by the signal thread; each
//! shard's [`watch`] task turns it into a local trigger (glommio wakers are
//! executor-local, so the flag is polled rather than waking foreign tasks).
//! Once triggered, nothing new is read or accepted; work already read finishes
//! and is answered.

use super::state::ServerState;
use hashbrown::HashMap;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// How often a shard looks at the process-wide shutdown flag.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

#[derive(Default)]
pub struct Shutdown {
    triggered: Cell<bool>,
    next_waiter: Cell<u64>,
    waiters: RefCell<HashMap<u64, Waker>>,
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        self.triggered.get()
    }

    pub fn trigger(&self) {
        self.triggered.set(true);
        for (_, waker) in self.waiters.borrow_mut().drain() {
            waker.wake();
        }
    }

    /// Resolves once shutdown has been triggered.
    pub fn wait(&self) -> Wait<'_> {
        let id = self.next_waiter.get();
        self.next_waiter.set(id + 1);
        Wait { shutdown: self, id }
    }
}

pub struct Wait<'a> {
    shutdown: &'a Shutdown,
    id: u64,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shutdown.is_triggered() {
            return Poll::Ready(());
        }
        // One entry per live Wait, replaced on every poll: bounded however often
        // the surrounding `or` polls us.
        self.shutdown
            .waiters
            .borrow_mut()
            .insert(self.id, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        self.shutdown.waiters.borrow_mut().remove(&self.id);
    }
}

/// Triggers `local` once the process-wide flag is set.
pub async fn watch(state: Arc<ServerState>, local: Rc<Shutdown>) {
    while !state.is_shutting_down() {
        glommio::timer::sleep(POLL_INTERVAL).await;
    }
    local.trigger();
}
