//! A shard's key locks: per-key FIFO queues that order everything touching a
//! key while an ATOMIC batch is in the way.
//!
//! Executor-local (`RefCell`), like everything a shard owns. When no batch holds
//! or waits for a key — the normal case — the table is empty and every check is
//! one `is_empty()`.
//!
//! Rules:
//! - [`LockTable::acquire`] waits for a *turn* on a set of keys: no holder on any
//!   of them, and this waiter first in each of their queues. A waiter is pushed
//!   on all its keys' queues in one step, so any two waiters are in the same
//!   order on every key they share: no cycle can form inside a shard.
//! - With its turn, the caller either runs at once and calls [`LockTable::pass`]
//!   (a plain request, a single-shard ATOMIC), or keeps the keys with
//!   [`LockTable::hold`] until [`LockTable::release`] (a prepared cross-shard
//!   batch waiting for Commit or Abort).
//! - Queues are first come, first served: a waiter is overtaken by no one that
//!   arrived after it, so it waits only for what was ahead of it (no starvation).

use super::TxnId;
use hashbrown::HashMap;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct WaiterId(u64);

#[derive(Default)]
struct KeyLock {
    holder: Option<TxnId>,
    queue: VecDeque<WaiterId>,
}

/// The lock of `key`, made if it has none (the key is copied only then).
fn lock_of<'t>(table: &'t mut HashMap<Box<[u8]>, KeyLock>, key: &[u8]) -> &'t mut KeyLock {
    if !table.contains_key(key) {
        table.insert(Box::from(key), KeyLock::default());
    }
    table.get_mut(key).expect("the key's lock is there")
}

struct Waiter {
    keys: Vec<Box<[u8]>>,
    waker: Option<Waker>,
}

#[derive(Default)]
pub struct LockTable {
    keys: RefCell<HashMap<Box<[u8]>, KeyLock>>,
    waiters: RefCell<HashMap<WaiterId, Waiter>>,
    next_waiter: Cell<u64>,
}

impl LockTable {
    /// True when no key is held or awaited.
    pub fn is_idle(&self) -> bool {
        self.keys.borrow().is_empty()
    }

    /// Resolves when the caller has its turn on every key of `keys` (distinct).
    pub fn acquire(&self, keys: &[&[u8]]) -> Acquire<'_> {
        let table = self.keys.borrow();
        if keys.iter().all(|k| !table.contains_key(*k)) {
            return Acquire {
                locks: self,
                id: None,
            };
        }
        drop(table);
        let id = WaiterId(self.next_waiter.get());
        self.next_waiter.set(id.0 + 1);
        let mut table = self.keys.borrow_mut();
        for key in keys {
            lock_of(&mut table, key).queue.push_back(id);
        }
        let waiter = Waiter {
            keys: keys.iter().map(|k| Box::from(*k)).collect(),
            waker: None,
        };
        self.waiters.borrow_mut().insert(id, waiter);
        Acquire {
            locks: self,
            id: Some(id),
        }
    }

    /// Keeps the keys of a turn for `txn` until [`LockTable::release`].
    pub fn hold(&self, txn: TxnId, keys: &[&[u8]]) {
        let mut table = self.keys.borrow_mut();
        for key in keys {
            let lock = lock_of(&mut table, key);
            debug_assert!(lock.holder.is_none(), "a turn means nobody holds the key");
            lock.holder = Some(txn);
        }
    }

    /// Gives up held keys and lets the next waiters go.
    pub fn release(&self, keys: &[Box<[u8]>]) {
        {
            let mut table = self.keys.borrow_mut();
            for key in keys {
                if let Some(lock) = table.get_mut(&**key) {
                    lock.holder = None;
                }
            }
        }
        self.wake_fronts(keys.iter().map(|k| &**k));
    }

    /// Ends a turn that was used at once, letting the next waiters go.
    pub fn pass(&self, keys: &[&[u8]]) {
        self.wake_fronts(keys.iter().copied());
    }

    /// Wakes the first waiter of each key, and forgets keys nobody needs.
    fn wake_fronts<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) {
        let mut table = self.keys.borrow_mut();
        let mut waiters = self.waiters.borrow_mut();
        for key in keys {
            let Some(lock) = table.get(key) else { continue };
            match lock.queue.front() {
                Some(front) => {
                    if let Some(waker) = waiters.get_mut(front).and_then(|w| w.waker.take()) {
                        waker.wake();
                    }
                }
                None if lock.holder.is_none() => {
                    table.remove(key);
                }
                None => {}
            }
        }
    }

    /// Takes the turn if it is `id`'s: first in line on all its keys, none held.
    fn try_grant(&self, id: WaiterId) -> bool {
        let mut table = self.keys.borrow_mut();
        let waiters = self.waiters.borrow();
        let waiter = &waiters[&id];
        let ready = waiter.keys.iter().all(|key| {
            let lock = &table[&**key];
            lock.holder.is_none() && lock.queue.front() == Some(&id)
        });
        if ready {
            for key in &waiter.keys {
                if let Some(lock) = table.get_mut(&**key) {
                    lock.queue.pop_front();
                }
            }
        }
        ready
    }

    /// Removes a waiter that gave up before its turn.
    fn abandon(&self, id: WaiterId) {
        let Some(waiter) = self.waiters.borrow_mut().remove(&id) else {
            return;
        };
        {
            let mut table = self.keys.borrow_mut();
            for key in &waiter.keys {
                if let Some(lock) = table.get_mut(&**key) {
                    lock.queue.retain(|w| *w != id);
                }
            }
        }
        self.wake_fronts(waiter.keys.iter().map(|k| &**k));
    }
}

/// Future of [`LockTable::acquire`].
pub struct Acquire<'a> {
    locks: &'a LockTable,
    /// None once the turn is taken (or when it was free at once).
    id: Option<WaiterId>,
}

impl Future for Acquire<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(id) = self.id else {
            return Poll::Ready(());
        };
        if self.locks.try_grant(id) {
            self.locks.waiters.borrow_mut().remove(&id);
            self.id = None;
            return Poll::Ready(());
        }
        if let Some(waiter) = self.locks.waiters.borrow_mut().get_mut(&id) {
            waiter.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.locks.abandon(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ShardId;
    use std::sync::Arc;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn poll(fut: &mut Acquire<'_>) -> Poll<()> {
        let waker = Waker::from(Arc::new(Flag(false.into())));
        Pin::new(fut).poll(&mut Context::from_waker(&waker))
    }

    const T1: TxnId = TxnId {
        coordinator: ShardId(0),
        seq: 1,
    };

    #[test]
    fn free_keys_are_granted_at_once_and_leave_no_trace() {
        let locks = LockTable::default();
        assert_eq!(poll(&mut locks.acquire(&[b"a", b"b"])), Poll::Ready(()));
        locks.pass(&[b"a", b"b"]);
        assert!(locks.is_idle());
    }

    #[test]
    fn a_held_key_makes_later_requests_wait_in_arrival_order() {
        let locks = LockTable::default();
        let mut first = locks.acquire(&[b"a"]);
        assert_eq!(poll(&mut first), Poll::Ready(()));
        locks.hold(T1, &[b"a"]);
        let mut second = locks.acquire(&[b"a", b"b"]);
        let mut third = locks.acquire(&[b"b"]);
        assert_eq!(poll(&mut second), Poll::Pending);
        assert_eq!(
            poll(&mut third),
            Poll::Pending,
            "b is promised to an earlier waiter"
        );
        locks.release(&[Box::from(&b"a"[..])]);
        assert_eq!(poll(&mut third), Poll::Pending, "no overtaking");
        assert_eq!(poll(&mut second), Poll::Ready(()));
        locks.pass(&[b"a", b"b"]);
        assert_eq!(poll(&mut third), Poll::Ready(()));
        locks.pass(&[b"b"]);
        assert!(locks.is_idle());
    }

    #[test]
    fn an_abandoned_waiter_lets_the_next_one_go() {
        let locks = LockTable::default();
        locks.hold(T1, &[b"a"]);
        let mut gives_up = locks.acquire(&[b"a"]);
        assert_eq!(poll(&mut gives_up), Poll::Pending);
        let mut next = locks.acquire(&[b"a"]);
        drop(gives_up);
        locks.release(&[Box::from(&b"a"[..])]);
        assert_eq!(poll(&mut next), Poll::Ready(()));
        locks.pass(&[b"a"]);
        assert!(locks.is_idle());
    }
}
