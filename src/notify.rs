//! An executor-local "wake me when this becomes true": tasks wait on a
//! condition, and whoever changes what the condition reads calls
//! [`Notify::notify_all`]. Not thread-safe by design (glommio tasks of one
//! executor only).
//!
//! Each waiting future keeps one waker slot, replaced on every poll and removed
//! when the future is dropped, so memory stays bounded however often a
//! surrounding `or` polls it.

use hashbrown::HashMap;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Notify {
    next_waiter: Cell<u64>,
    waiters: RefCell<HashMap<u64, Waker>>,
}

impl Notify {
    /// Wakes every task waiting on this notify; each re-checks its condition.
    pub fn notify_all(&self) {
        for (_, waker) in self.waiters.borrow_mut().drain() {
            waker.wake();
        }
    }

    /// Resolves once `ready()` returns true (checked now and after each notify).
    pub fn until<F: Fn() -> bool>(&self, ready: F) -> Until<'_, F> {
        let id = self.next_waiter.get();
        self.next_waiter.set(id + 1);
        Until {
            notify: self,
            id,
            ready,
        }
    }
}

pub struct Until<'a, F> {
    notify: &'a Notify,
    id: u64,
    ready: F,
}

impl<F: Fn() -> bool> Future for Until<'_, F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if (self.ready)() {
            return Poll::Ready(());
        }
        self.notify
            .waiters
            .borrow_mut()
            .insert(self.id, cx.waker().clone());
        Poll::Pending
    }
}

impl<F> Drop for Until<'_, F> {
    fn drop(&mut self) {
        self.notify.waiters.borrow_mut().remove(&self.id);
    }
}
