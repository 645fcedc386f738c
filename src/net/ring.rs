//! [`NetRing`]: a shard's network io_uring and the poller task that drives it
//! (the module doc of `server::net` says why and how).
//!
//! Operations are one-shot polls and accepts, which carry no buffers: a
//! dropped [`Op`] (a connection task that stopped waiting) only needs its
//! completion ignored and the kernel request cancelled, never memory kept
//! alive. Each operation has a slot in [`NetRing`]; its `user_data` is the
//! slot's index.

use crate::notify::Notify;
use crate::sys;
use futures_lite::future;
use glommio::io::BufferedFile;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::unix::io::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Submission queue entries. Each connection has at most one read and one
/// write poll in flight; a fuller queue is submitted early, not refused.
const RING_ENTRIES: u32 = 1024;
/// `user_data` of requests whose completion nobody waits for (cancellations).
const IGNORED: u64 = u64::MAX;
/// How long [`NetRing::close`] waits for cancelled operations to finish.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Where an operation stands.
enum Slot {
    Free {
        next: Option<usize>,
    },
    Waiting(Option<Waker>),
    Done(i32),
    /// Its future was dropped before completion; the slot is freed when the
    /// (cancelled) completion arrives.
    Abandoned,
}

/// A shard's own network ring.
pub struct NetRing {
    ring: RefCell<IoUring>,
    slots: RefCell<Vec<Slot>>,
    free: Cell<Option<usize>>,
    /// Entries pushed since the last submit.
    queued: Cell<u32>,
    /// Set while the poller sleeps; a new operation must then wake it.
    parked: Cell<bool>,
    wake_poller: Notify,
    stopped: Cell<bool>,
    /// The eventfd the kernel signals while the doorbell is enabled, read
    /// through glommio (see the module doc of `server::net`).
    doorbell: BufferedFile,
}

impl NetRing {
    pub fn new() -> io::Result<Rc<NetRing>> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .build(RING_ENTRIES)?;
        let (doorbell, eventfd) = sys::eventfd_doorbell()?;
        ring.submitter().register_eventfd(eventfd)?;
        let net = NetRing {
            ring: RefCell::new(ring),
            slots: RefCell::new(Vec::new()),
            free: Cell::new(None),
            queued: Cell::new(0),
            parked: Cell::new(false),
            wake_poller: Notify::default(),
            stopped: Cell::new(false),
            doorbell,
        };
        net.set_doorbell(false);
        Ok(Rc::new(net))
    }

    /// A poll for `events` (`libc::POLLIN`, `libc::POLLOUT`) on `fd`.
    pub fn poll(self: &Rc<Self>, fd: RawFd, events: i16) -> Op {
        let entry = opcode::PollAdd::new(types::Fd(fd), events as u32).build();
        self.start(entry)
    }

    /// An accept on the listening socket `fd`; completes with the new socket.
    pub fn accept(self: &Rc<Self>, fd: RawFd) -> Op {
        let entry = opcode::Accept::new(types::Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
            .flags(libc::SOCK_CLOEXEC)
            .build();
        self.start(entry)
    }

    /// Stops the poller and cancels every operation still in flight, waiting
    /// (at most [`CLOSE_WAIT`]) until the kernel has let go of them. An
    /// operation in flight holds its socket open: a pending accept would keep
    /// the address listening after the process exits, until the kernel tears
    /// the ring down in the background, and a server restarted at once on the
    /// same port would find it taken.
    pub fn close(&self) {
        self.stopped.set(true);
        self.wake_poller.notify_all();
        let in_flight: Vec<usize> = {
            let slots = self.slots.borrow();
            (0..slots.len())
                .filter(|&i| matches!(slots[i], Slot::Waiting(_) | Slot::Abandoned))
                .collect()
        };
        for slot in in_flight {
            let cancel = opcode::AsyncCancel::new(slot as u64).build();
            self.push(cancel.user_data(IGNORED));
        }
        let deadline = std::time::Instant::now() + CLOSE_WAIT;
        while self.nr_in_flight() > 0 && std::time::Instant::now() < deadline {
            self.turn();
            // The shard is exiting: nothing else runs on this thread any more.
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }

    fn nr_in_flight(&self) -> usize {
        let slots = self.slots.borrow();
        slots
            .iter()
            .filter(|slot| matches!(slot, Slot::Waiting(_) | Slot::Abandoned))
            .count()
    }

    fn start(self: &Rc<Self>, entry: squeue::Entry) -> Op {
        let slot = self.take_slot();
        self.push(entry.user_data(slot as u64));
        Op {
            ring: self.clone(),
            slot,
            finished: false,
        }
    }

    fn take_slot(&self) -> usize {
        let mut slots = self.slots.borrow_mut();
        match self.free.get() {
            Some(i) => {
                let Slot::Free { next } = slots[i] else {
                    unreachable!("the free list holds free slots only")
                };
                self.free.set(next);
                slots[i] = Slot::Waiting(None);
                i
            }
            None => {
                slots.push(Slot::Waiting(None));
                slots.len() - 1
            }
        }
    }

    fn free_slot(&self, slots: &mut [Slot], i: usize) {
        slots[i] = Slot::Free {
            next: self.free.get(),
        };
        self.free.set(Some(i));
    }

    fn push(&self, entry: squeue::Entry) {
        loop {
            if sys::push_bufferless(&mut self.ring.borrow_mut(), &entry) {
                break;
            }
            // A full queue: hand it to the kernel now and try again.
            if let Err(e) = self.ring.borrow().submit() {
                tracing::error!("network ring submit failed: {e}");
            }
            self.queued.set(0);
        }
        self.queued.set(self.queued.get() + 1);
        if self.parked.get() {
            self.wake_poller.notify_all();
        }
    }

    fn poll_op(&self, slot: usize, cx: &mut Context<'_>) -> Poll<i32> {
        let mut slots = self.slots.borrow_mut();
        match slots[slot] {
            Slot::Done(result) => {
                self.free_slot(&mut slots, slot);
                Poll::Ready(result)
            }
            Slot::Waiting(ref mut waker) => {
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            _ => unreachable!("an operation is polled only while it is live"),
        }
    }

    /// The future of `slot` was dropped: ignore its completion, cancel it.
    fn abandon(&self, slot: usize) {
        let mut slots = self.slots.borrow_mut();
        match slots[slot] {
            Slot::Done(_) => self.free_slot(&mut slots, slot),
            Slot::Waiting(_) => {
                slots[slot] = Slot::Abandoned;
                drop(slots);
                let cancel = opcode::AsyncCancel::new(slot as u64).build();
                self.push(cancel.user_data(IGNORED));
            }
            _ => unreachable!("an operation is abandoned once"),
        }
    }

    /// Submits what is queued and, if the kernel has completions for us, runs
    /// them (`GETEVENTS`); then hands every completion to its operation.
    /// Returns how many completions there were.
    fn turn(&self) -> usize {
        let must_enter = {
            let mut ring = self.ring.borrow_mut();
            self.queued.get() > 0 || ring.submission().taskrun()
        };
        if must_enter {
            let submitted = self.queued.replace(0);
            if let Err(e) = sys::enter_getevents(&self.ring.borrow(), submitted) {
                if e.raw_os_error() != Some(libc::EINTR) && e.raw_os_error() != Some(libc::EBUSY) {
                    tracing::error!("network ring enter failed: {e}");
                }
            }
        }
        self.complete_all()
    }

    fn complete_all(&self) -> usize {
        let mut ring = self.ring.borrow_mut();
        let mut slots = self.slots.borrow_mut();
        let mut nr = 0;
        for cqe in ring.completion() {
            nr += 1;
            self.complete(&mut slots, &cqe);
        }
        nr
    }

    fn complete(&self, slots: &mut [Slot], cqe: &cqueue::Entry) {
        if cqe.user_data() == IGNORED {
            return;
        }
        let slot = cqe.user_data() as usize;
        match std::mem::replace(&mut slots[slot], Slot::Done(cqe.result())) {
            Slot::Waiting(waker) => {
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
            Slot::Abandoned => self.free_slot(slots, slot),
            _ => unreachable!("a completion for an operation not in flight"),
        }
    }

    fn set_doorbell(&self, enabled: bool) {
        let mut ring = self.ring.borrow_mut();
        match enabled {
            true => ring.completion().enable_eventfd(),
            false => ring.completion().disable_eventfd(),
        }
    }

    /// The poller: runs until [`NetRing::stop`]. See the module doc of
    /// `server::net` for the loop and the sleeping rule.
    pub async fn run(self: Rc<Self>) {
        let mut doorbell: Option<Pin<Box<dyn Future<Output = ()>>>> = None;
        while !self.stopped.get() {
            if self.turn() > 0 {
                // Let the woken connection tasks run; what they queue is
                // submitted at the start of the next turn, together.
                future::yield_now().await;
                continue;
            }
            // Nothing came: ring the doorbell from now on, then look once more,
            // so that work arriving in between is not missed.
            self.set_doorbell(true);
            if self.turn() > 0 {
                self.set_doorbell(false);
                future::yield_now().await;
                continue;
            }
            let ring = doorbell.get_or_insert_with(|| Box::pin(self.clone().ring_read()));
            self.parked.set(true);
            let woken_by_doorbell = future::or(
                async {
                    ring.await;
                    true
                },
                async {
                    self.wake_poller
                        .until(|| self.queued.get() > 0 || self.stopped.get())
                        .await;
                    false
                },
            )
            .await;
            self.parked.set(false);
            if woken_by_doorbell {
                doorbell = None;
            }
            self.set_doorbell(false);
        }
    }

    /// Waits until the kernel signals the doorbell, and clears it.
    async fn ring_read(self: Rc<Self>) {
        if let Err(e) = self.doorbell.read_at(0, 8).await {
            tracing::error!("network ring doorbell read failed: {e}");
            // Do not spin on a broken doorbell: poll the ring now and then.
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
}

/// An operation in flight on a [`NetRing`]; resolves to its result (a
/// negative errno on failure). Dropping it early cancels it.
pub struct Op {
    ring: Rc<NetRing>,
    slot: usize,
    finished: bool,
}

impl Future for Op {
    type Output = i32;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<i32> {
        let result = self.ring.poll_op(self.slot, cx);
        if result.is_ready() {
            self.finished = true;
        }
        result
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        if !self.finished {
            self.ring.abandon(self.slot);
        }
    }
}
