//! [`NetRing`]: a shard's network io_uring and the poller task that drives it
//! (the module doc of `crate::net` says why and how).
//!
//! Operations are one-shot polls and accepts, which carry no buffers: a
//! dropped [`Op`] (a connection task that stopped waiting) only needs its
//! completion ignored and the kernel request cancelled, never memory kept
//! alive — except that an accept that completed for nobody has made a socket,
//! which is closed. Each operation has a slot in [`NetRing`]; its `user_data`
//! is the slot's index and a generation, so a cancellation can only ever
//! reach the operation it was made for, not a later one in the same slot.
//!
//! The completion queue is sized for every operation that can be in flight
//! (each connection has at most one read and one write poll); should it
//! overflow anyway, the kernel keeps the completions (`IORING_FEAT_NODROP`)
//! and the next turn enters the ring to collect them.

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

/// Submission queue entries; a fuller queue is submitted early, not refused.
const RING_ENTRIES: u32 = 1024;
/// Completion queue entries: room for two polls for each of 8 192
/// connections of one shard (more overflow into the kernel's list, collected
/// at the next turn).
const COMPLETION_ENTRIES: u32 = 16 * 1024;
/// Attempts to make room in a full submission queue before an operation is
/// failed (with `EBUSY`) instead of waiting for ever.
const PUSH_ATTEMPTS: usize = 3;
/// `user_data` of requests whose completion nobody waits for (cancellations).
const IGNORED: u64 = u64::MAX;
/// How long [`NetRing::close`] waits for cancelled operations to finish.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Where an operation stands. `accept` marks an accept, whose successful
/// result is a socket someone must close.
enum Slot {
    Free {
        next: Option<usize>,
    },
    Waiting {
        waker: Option<Waker>,
        user_data: u64,
        accept: bool,
    },
    Done {
        result: i32,
        accept: bool,
    },
    /// Its future was dropped before completion; the slot is freed when the
    /// (cancelled) completion arrives.
    Abandoned {
        accept: bool,
    },
}

/// A shard's own network ring.
pub struct NetRing {
    ring: RefCell<IoUring>,
    slots: RefCell<Vec<Slot>>,
    free: Cell<Option<usize>>,
    /// Makes each operation's `user_data` unique (with its slot index).
    generation: Cell<u32>,
    /// Set while the poller sleeps; a new operation must then wake it.
    parked: Cell<bool>,
    wake_poller: Notify,
    stopped: Cell<bool>,
    /// The eventfd the kernel signals while the doorbell is enabled, read
    /// through glommio (see the module doc of `crate::net`).
    doorbell: BufferedFile,
}

impl NetRing {
    pub fn new() -> io::Result<Rc<NetRing>> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(COMPLETION_ENTRIES)
            .build(RING_ENTRIES)?;
        let (doorbell, eventfd) = sys::eventfd_doorbell()?;
        ring.submitter().register_eventfd(eventfd)?;
        let net = NetRing {
            ring: RefCell::new(ring),
            slots: RefCell::new(Vec::new()),
            free: Cell::new(None),
            generation: Cell::new(0),
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
        self.start(entry, false)
    }

    /// An accept on the listening socket `fd`; completes with the new socket.
    pub fn accept(self: &Rc<Self>, fd: RawFd) -> Op {
        let entry = opcode::Accept::new(types::Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
            .flags(libc::SOCK_CLOEXEC)
            .build();
        self.start(entry, true)
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
        let in_flight: Vec<u64> = self
            .slots
            .borrow()
            .iter()
            .filter_map(|slot| match slot {
                Slot::Waiting { user_data, .. } => Some(*user_data),
                _ => None,
            })
            .collect();
        for user_data in in_flight {
            self.cancel(user_data);
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
            .filter(|slot| matches!(slot, Slot::Waiting { .. } | Slot::Abandoned { .. }))
            .count()
    }

    fn start(self: &Rc<Self>, entry: squeue::Entry, accept: bool) -> Op {
        let generation = self.generation.get().wrapping_add(1);
        self.generation.set(generation);
        let slot = self.take_slot();
        let user_data = (u64::from(generation) << 32) | slot as u64;
        let state = if self.push(entry.user_data(user_data)) {
            Slot::Waiting {
                waker: None,
                user_data,
                accept,
            }
        } else {
            Slot::Done {
                result: -libc::EBUSY,
                accept: false,
            }
        };
        self.slots.borrow_mut()[slot] = state;
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
                i
            }
            None => {
                slots.push(Slot::Free { next: None });
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

    /// Queues `entry`, submitting a full queue first (after collecting
    /// completions, which may be what holds the kernel back). False if no room
    /// was made after [`PUSH_ATTEMPTS`]: the caller fails the operation.
    fn push(&self, entry: squeue::Entry) -> bool {
        for _ in 0..PUSH_ATTEMPTS {
            if sys::push_bufferless(&mut self.ring.borrow_mut(), &entry) {
                if self.parked.get() {
                    self.wake_poller.notify_all();
                }
                return true;
            }
            self.turn();
        }
        tracing::error!("network ring: the submission queue stays full; an operation fails");
        false
    }

    /// Cancels the operation whose `user_data` this is, if still in flight.
    fn cancel(&self, user_data: u64) {
        let cancel = opcode::AsyncCancel::new(user_data).build();
        // A cancellation that finds no room is given up: the operation then
        // completes by itself (its socket closes or becomes ready).
        self.push(cancel.user_data(IGNORED));
    }

    fn poll_op(&self, slot: usize, cx: &mut Context<'_>) -> Poll<i32> {
        let mut slots = self.slots.borrow_mut();
        match slots[slot] {
            Slot::Done { result, .. } => {
                self.free_slot(&mut slots, slot);
                Poll::Ready(result)
            }
            Slot::Waiting { ref mut waker, .. } => {
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
            Slot::Done { result, accept } => {
                close_unclaimed(result, accept);
                self.free_slot(&mut slots, slot);
            }
            Slot::Waiting {
                user_data, accept, ..
            } => {
                slots[slot] = Slot::Abandoned { accept };
                drop(slots);
                self.cancel(user_data);
            }
            _ => unreachable!("an operation is abandoned once"),
        }
    }

    /// Submits what is queued and, if the kernel has completions for us, runs
    /// them (`GETEVENTS`); then hands every completion to its operation.
    /// Returns how many completions there were.
    fn turn(&self) -> usize {
        let to_submit = {
            let mut ring = self.ring.borrow_mut();
            let queue = ring.submission();
            let to_submit = queue.len() as u32;
            // The kernel has work for us (DEFER_TASKRUN), or completions that
            // found the queue full wait in its overflow list.
            (to_submit > 0 || queue.taskrun() || queue.cq_overflow()).then_some(to_submit)
        };
        if let Some(to_submit) = to_submit {
            if let Err(e) = sys::enter_getevents(&self.ring.borrow(), to_submit) {
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
        let slot = (cqe.user_data() & u64::from(u32::MAX)) as usize;
        let result = cqe.result();
        match slots[slot] {
            Slot::Waiting {
                ref mut waker,
                accept,
                ..
            } => {
                if let Some(waker) = waker.take() {
                    waker.wake();
                }
                slots[slot] = Slot::Done { result, accept };
            }
            Slot::Abandoned { accept } => {
                close_unclaimed(result, accept);
                self.free_slot(slots, slot);
            }
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

    /// Whether entries wait in the submission queue.
    fn has_queued(&self) -> bool {
        !self.ring.borrow_mut().submission().is_empty()
    }

    /// The poller: runs until [`NetRing::close`]. See the module doc of
    /// `crate::net` for the loop and the sleeping rule.
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
                        .until(|| self.has_queued() || self.stopped.get())
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

/// The socket an accept made for an operation nobody waits for any more.
fn close_unclaimed(result: i32, accept: bool) {
    if accept && result >= 0 {
        sys::close(result);
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
