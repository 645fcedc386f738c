//! [`NetRing`]: a shard's network io_uring and the poller task that drives it
//! (the module doc of `crate::net` says why and how).
//!
//! Operations are one-shot polls and accepts, which carry no buffers, and
//! positioned reads of files ([`NetRing::read_at`]: the disk engine reads
//! its values here, `crate::log::values`; a read is submitted as soon as it
//! is queued, and collected with the sockets' completions). A dropped
//! [`Op`] (a connection task that stopped waiting) needs its completion
//! ignored and the kernel request cancelled — an accept that completed for
//! nobody has made a socket, which is closed, and a read's buffer belongs to
//! its slot, not its future, so it stays alive until the kernel is done with
//! it. Each operation has a slot in [`NetRing`]; its `user_data`
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
/// result is a socket someone must close; `buffer` is a read's, which the
/// kernel writes into until the read's completion arrives.
enum Slot {
    Free {
        next: Option<usize>,
    },
    Waiting {
        waker: Option<Waker>,
        user_data: u64,
        accept: bool,
        buffer: Option<Vec<u8>>,
    },
    Done {
        result: i32,
        accept: bool,
        buffer: Option<Vec<u8>>,
    },
    /// Its future was dropped before completion; the slot is freed (and a
    /// read's buffer with it) when the (cancelled) completion arrives.
    Abandoned {
        accept: bool,
        buffer: Option<Vec<u8>>,
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

    /// A read of `size` bytes at `offset` of the file `fd` into a buffer
    /// aligned to `align` bytes (a power of two: what direct I/O asks of the
    /// memory). The buffer belongs to the operation's slot until the kernel
    /// completes the read, whatever happens to the future.
    pub fn read_at(self: &Rc<Self>, fd: RawFd, offset: u64, size: usize, align: usize) -> ReadOp {
        let mut buffer = vec![0u8; size + align];
        let shift = buffer.as_ptr().align_offset(align);
        let len = u32::try_from(size).unwrap_or(u32::MAX);
        // The pointer stays valid when the Vec moves into the slot: moving a
        // Vec does not move its heap buffer, which the slot keeps until the
        // completion (or for ever, if the ring is dropped first: `Drop`).
        let target = buffer[shift..].as_mut_ptr();
        let entry = opcode::Read::new(types::Fd(fd), target, len)
            .offset(offset)
            .build();
        let op = self.start_with(entry, false, Some(buffer));
        // Submitted at once, not at the poller's next turn: that turn comes
        // only after every task woken in this pass has run (16 connections'
        // requests at 16 in flight), and the read would wait for all of them
        // before the device even sees it. One `io_uring_enter` per read
        // (a microsecond or two) bought 8–25 % more GETs at 16 in flight and
        // reads of 210–241 µs instead of 313–318 µs (docs/benchmarks.md).
        // A failed submit leaves the entry queued for the next turn.
        let _ = self.ring.borrow().submit();
        ReadOp { op, shift }
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
        self.start_with(entry, accept, None)
    }

    fn start_with(
        self: &Rc<Self>,
        entry: squeue::Entry,
        accept: bool,
        buffer: Option<Vec<u8>>,
    ) -> Op {
        let generation = self.generation.get().wrapping_add(1);
        self.generation.set(generation);
        let slot = self.take_slot();
        let user_data = (u64::from(generation) << 32) | slot as u64;
        let pushed = match buffer {
            None => {
                self.push(&|ring| sys::push_bufferless(ring, &entry.clone().user_data(user_data)))
            }
            // SAFETY: the buffer the read points into goes into the slot
            // below and stays there, unmoved, until its completion is reaped.
            Some(_) => self
                .push(&|ring| unsafe { sys::push_read(ring, &entry.clone().user_data(user_data)) }),
        };
        let state = if pushed {
            Slot::Waiting {
                waker: None,
                user_data,
                accept,
                buffer,
            }
        } else {
            Slot::Done {
                result: -libc::EBUSY,
                accept: false,
                buffer,
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
    fn push(&self, push_into: &dyn Fn(&mut IoUring) -> bool) -> bool {
        for _ in 0..PUSH_ATTEMPTS {
            if push_into(&mut self.ring.borrow_mut()) {
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
        let cancel = opcode::AsyncCancel::new(user_data)
            .build()
            .user_data(IGNORED);
        // A cancellation that finds no room is given up: the operation then
        // completes by itself (its socket closes or becomes ready).
        self.push(&|ring| sys::push_bufferless(ring, &cancel));
    }

    fn poll_op(&self, slot: usize, cx: &mut Context<'_>) -> Poll<(i32, Option<Vec<u8>>)> {
        let mut slots = self.slots.borrow_mut();
        match slots[slot] {
            Slot::Done {
                result,
                ref mut buffer,
                ..
            } => {
                let buffer = buffer.take();
                self.free_slot(&mut slots, slot);
                Poll::Ready((result, buffer))
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
            Slot::Done { result, accept, .. } => {
                close_unclaimed(result, accept);
                self.free_slot(&mut slots, slot);
            }
            Slot::Waiting {
                user_data,
                accept,
                ref mut buffer,
                ..
            } => {
                let buffer = buffer.take();
                slots[slot] = Slot::Abandoned { accept, buffer };
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
                ref mut buffer,
                ..
            } => {
                if let Some(waker) = waker.take() {
                    waker.wake();
                }
                let buffer = buffer.take();
                slots[slot] = Slot::Done {
                    result,
                    accept,
                    buffer,
                };
            }
            Slot::Abandoned { accept, .. } => {
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
        self.poll_with_buffer(cx).map(|(result, _)| result)
    }
}

impl Op {
    fn poll_with_buffer(&mut self, cx: &mut Context<'_>) -> Poll<(i32, Option<Vec<u8>>)> {
        let result = self.ring.poll_op(self.slot, cx);
        if result.is_ready() {
            self.finished = true;
        }
        result
    }
}

/// A read in flight on a [`NetRing`] ([`NetRing::read_at`]); resolves to the
/// bytes read. Dropping it early cancels it (its buffer stays with the ring
/// until the kernel lets go of it).
pub struct ReadOp {
    op: Op,
    /// Where the aligned part of the buffer starts.
    shift: usize,
}

impl Drop for NetRing {
    /// A read still in flight (the ring closes without waiting for ever,
    /// [`NetRing::close`]) may still be written by the device after the
    /// ring is gone: its buffer is leaked rather than handed back to the
    /// allocator. Only a shard that stops does this, once.
    fn drop(&mut self) {
        for slot in self.slots.get_mut().iter_mut() {
            if let Slot::Waiting { buffer, .. } | Slot::Abandoned { buffer, .. } = slot {
                if let Some(buffer) = buffer.take() {
                    std::mem::forget(buffer);
                }
            }
        }
    }
}

/// The bytes a [`ReadOp`] read: `len` bytes (fewer than asked for only where
/// the file ends) from `shift` in `buffer`.
pub struct ReadBuffer {
    buffer: Vec<u8>,
    shift: usize,
    len: usize,
}

impl ReadBuffer {
    /// The whole buffer, and where the bytes read are in it.
    pub fn into_parts(self) -> (Vec<u8>, std::ops::Range<usize>) {
        (self.buffer, self.shift..self.shift + self.len)
    }
}

impl std::ops::Deref for ReadBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buffer[self.shift..self.shift + self.len]
    }
}

impl Future for ReadOp {
    type Output = io::Result<ReadBuffer>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let shift = self.shift;
        self.op.poll_with_buffer(cx).map(|(result, buffer)| {
            let buffer = buffer.expect("a read's slot keeps its buffer until it is taken");
            match usize::try_from(result) {
                Ok(len) => Ok(ReadBuffer {
                    len: len.min(buffer.len() - shift),
                    buffer,
                    shift,
                }),
                Err(_) => Err(io::Error::from_raw_os_error(-result)),
            }
        })
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        if !self.finished {
            self.ring.abandon(self.slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    /// Runs `test` on a glommio executor with a ring whose poller runs.
    fn with_ring(test: impl FnOnce(Rc<NetRing>) -> Pin<Box<dyn Future<Output = ()>>> + 'static) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .expect("an executor")
            .run(async move {
                let ring = NetRing::new().expect("a ring");
                glommio::spawn_local(ring.clone().run()).detach();
                test(ring.clone()).await;
                ring.close();
            });
    }

    /// A file of `blocks` 4 KiB blocks, block `i` filled with byte `i`.
    fn file_of_blocks(blocks: u8) -> std::fs::File {
        let mut file = tempfile::tempfile().expect("a temp file");
        for i in 0..blocks {
            file.write_all(&[i; 4096]).expect("write");
        }
        file
    }

    #[test]
    fn a_read_on_the_ring_brings_the_files_bytes_into_aligned_memory() {
        with_ring(|ring| {
            Box::pin(async move {
                let file = file_of_blocks(3);
                let read = ring
                    .read_at(file.as_raw_fd(), 4096, 8192, 4096)
                    .await
                    .expect("read");
                assert_eq!(read.len(), 8192);
                assert_eq!(read.as_ptr().align_offset(4096), 0, "aligned");
                assert!(read[..4096].iter().all(|&b| b == 1));
                assert!(read[4096..].iter().all(|&b| b == 2));
            })
        });
    }

    #[test]
    fn a_read_past_the_end_of_a_file_brings_the_bytes_there_are() {
        with_ring(|ring| {
            Box::pin(async move {
                let file = file_of_blocks(3);
                let read = ring.read_at(file.as_raw_fd(), 8192, 8192, 4096).await;
                assert_eq!(read.expect("read").len(), 4096);
                let past = ring.read_at(file.as_raw_fd(), 1 << 20, 4096, 4096).await;
                assert_eq!(past.expect("read").len(), 0);
            })
        });
    }

    #[test]
    fn a_read_of_a_descriptor_that_names_no_file_is_an_error() {
        with_ring(|ring| {
            Box::pin(async move {
                // Not a closed file's number: another test's thread could
                // open a file under it meanwhile.
                let read = ring.read_at(-1, 0, 4096, 4096).await;
                let error = read.err().expect("an error");
                assert_eq!(error.raw_os_error(), Some(libc::EBADF), "{error}");
            })
        });
    }

    #[test]
    fn a_read_dropped_in_flight_frees_its_slot_once_the_kernel_is_done() {
        with_ring(|ring| {
            Box::pin(async move {
                let file = file_of_blocks(4);
                for _ in 0..16 {
                    drop(ring.read_at(file.as_raw_fd(), 0, 16384, 4096));
                }
                for _ in 0..1000 {
                    if ring.nr_in_flight() == 0 {
                        break;
                    }
                    glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                }
                assert_eq!(ring.nr_in_flight(), 0, "every abandoned read completed");
                let read = ring.read_at(file.as_raw_fd(), 12288, 4096, 4096).await;
                assert!(read.expect("read").iter().all(|&b| b == 3));
            })
        });
    }
}
