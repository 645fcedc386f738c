//! The network path of a glommio executor: sockets served through an io_uring
//! ring of the executor's own, set up so that network events never interrupt
//! it. The server's shards serve their clients with it; the load generator
//! drives its connections with it.
//!
//! # Why not glommio's sockets
//!
//! glommio 0.9 creates its rings without `COOP_TASKRUN`/`DEFER_TASKRUN`, and its
//! `TcpStream` arms a one-shot poll on its ring after every read that drains
//! the socket. The kernel completes that poll from the sender's context and,
//! to run the completion on the shard's thread, interrupts that thread (an
//! inter-processor interrupt: in a VM, an exit to the hypervisor). Measured:
//! ~0.77 such interrupts per message, and a per-message cost ~3× an epoll
//! loop's (docs/benchmarks.md).
//!
//! # What this does instead
//!
//! Each shard owns one more ring ([`ring::NetRing`]), created with
//! `SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG`: completions are only
//! processed when the shard itself asks (`io_uring_enter` with `GETEVENTS`),
//! never by interrupting it. Sockets are read and written with plain
//! non-blocking `recv`/`send` system calls while they have data or room; only
//! when one would block does its task arm a one-shot poll on the ring and
//! park ([`stream::NetStream`]). New connections arrive through an accept on
//! the same ring ([`listener::NetListener`]). The disk engine reads its
//! values on it too ([`ring::NetRing::read_at`]), for the same reason: a
//! read then goes out, and comes back, with the sockets' polls.
//!
//! One task per shard, the *poller* ([`ring::NetRing::run`]), submits the polls
//! every connection task queued during a pass of the executor in one system
//! call, reaps the completions and wakes their tasks, then yields so they run:
//! an event loop in the manner of Redis's, inside the glommio executor, which
//! keeps the shards, channels, timers and the log's file I/O.
//!
//! # Sleeping without losing a wake-up
//!
//! When a pass finds nothing to do the poller must sleep until either its ring
//! or glommio has work. glommio offers no way to await an arbitrary file
//! descriptor, so the hand-off goes through an eventfd registered with the
//! ring (the *doorbell*): the kernel signals it when the ring has work for
//! the shard, and the poller awaits it with a glommio file read, which
//! glommio's own reactor serves. The doorbell is enabled only while the poller
//! sleeps (`IORING_CQ_EVENTFD_DISABLED` is set while it runs), so a busy shard
//! is never interrupted by it; and it is enabled *before* the poller's last
//! look at the ring, so work that arrives in between rings it.
//!
//! Sleeping costs the shard a round of glommio's own (timers armed and
//! cancelled, rings linked: docs/benchmarks.md counts the system calls) and
//! an interrupt to wake it. With `--idle-poll-us` glommio first polls its
//! rings, the doorbell's read among them, for that long: a shard whose work
//! comes every few tens of microseconds then never sleeps.
//!
//! glommio's own sleep can miss a wake-up under load (an executor found
//! asleep with its timers due): [`wake_guard`] interrupts an executor whose
//! 20 ms beat stands still.

pub mod listener;
// One unsafe call: submitting a read whose buffer its slot keeps alive
// until the kernel completes it (`ring::NetRing::read_at`).
#[allow(unsafe_code)]
pub mod ring;
pub mod stream;
pub mod wake_guard;
