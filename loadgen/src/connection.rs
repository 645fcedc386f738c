//! One connection's closed loop, run as a task on a glommio executor: keep
//! `--pipeline` messages in flight; for each reply, check it byte for byte
//! against the expected reply, record the message's latency, and send the next
//! message, until `--messages` replies have arrived.
//!
//! Lean by construction: a message and its expected reply are rendered from
//! templates into buffers reused for the whole run; each wake-up handles every
//! complete reply in the receive buffer and sends all follow-up messages with
//! one write. Writes and reads are polled together, so a deep pipeline cannot
//! deadlock against a server that stops reading while its replies go unread.
//!
//! A reply that differs from the expected one is a *mismatch*: counted, sampled
//! for the report, and the loop goes on (the framing is intact). An I/O error,
//! a timeout, a closed connection or an unreadable reply is a *failure*: the
//! connection stops, and its unanswered messages are simply not counted.

use crate::progress::Progress;
use crate::protocol::Protocol;
use crate::template::Template;
use crate::workload::{KeyRange, Plan, Shape};
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

/// Mismatches described in full per connection; the rest are only counted.
const SAMPLES_PER_CONNECTION: usize = 3;
/// Free space offered to each read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// What every connection of one executor shares.
pub struct Job {
    pub protocol: Protocol,
    pub shape: Shape,
    pub seed: u64,
    pub messages: u64,
    pub pipeline: u32,
    pub request: Template,
    pub reply: Template,
    /// Latency per message, nanoseconds; one per executor, merged at the end.
    pub latency_ns: RefCell<Histogram<u64>>,
    pub progress: Arc<Progress>,
}

/// How one connection's run went.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Replies received (matching or not).
    pub replies: u64,
    pub mismatches: u64,
    pub mismatch_samples: Vec<String>,
    pub failure: Option<String>,
}

impl Outcome {
    pub fn failed(failure: String) -> Outcome {
        Outcome {
            failure: Some(failure),
            ..Outcome::default()
        }
    }
}

struct Conn<'a> {
    job: &'a Job,
    id: u64,
    range: KeyRange,
    stream: TcpStream,
    plan: Plan,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    written: usize,
    inbuf: Vec<u8>,
    filled: usize,
    /// Expected reply and send time of message `m`, at slot `m % pipeline`.
    expected: Vec<Vec<u8>>,
    sent_at: Vec<Instant>,
    sent: u64,
    outcome: Outcome,
}

/// Runs connection `id` over `stream` until all its messages are answered or it fails.
pub async fn drive(job: &Job, id: u64, range: KeyRange, stream: TcpStream) -> Outcome {
    let slots = job.pipeline as usize;
    let mut conn = Conn {
        job,
        id,
        range,
        stream,
        plan: Plan::default(),
        out: Vec::with_capacity(slots * job.request.len()),
        written: 0,
        inbuf: vec![0; READ_CHUNK_BYTES.max(2 * job.reply.len())],
        filled: 0,
        expected: vec![Vec::with_capacity(job.reply.len()); slots],
        sent_at: vec![Instant::now(); slots],
        sent: 0,
        outcome: Outcome::default(),
    };
    if let Err(e) = conn.run().await {
        job.progress.connection_failed();
        conn.outcome.failure = Some(format!("connection {id}: {e}"));
    }
    conn.outcome
}

impl Conn<'_> {
    async fn run(&mut self) -> io::Result<()> {
        let first = self.job.messages.min(u64::from(self.job.pipeline));
        let now = Instant::now();
        for _ in 0..first {
            self.queue_next(now);
        }
        while self.outcome.replies < self.job.messages {
            self.io_step().await?;
            self.take_replies()?;
        }
        if self.filled > 0 {
            return Err(io::Error::other(format!(
                "{} unexpected bytes after the last reply",
                self.filled
            )));
        }
        Ok(())
    }

    /// Renders the next message into the send buffer and its expected reply into its slot.
    fn queue_next(&mut self, now: Instant) {
        let job = self.job;
        let slot = (self.sent % u64::from(job.pipeline)) as usize;
        self.plan.fill(&job.shape, &self.range, job.seed, self.sent);
        job.request.render(&self.plan, &mut self.out);
        self.expected[slot].clear();
        job.reply.render(&self.plan, &mut self.expected[slot]);
        self.sent_at[slot] = now;
        self.sent += 1;
    }

    /// Verifies every complete reply in the receive buffer and queues a
    /// follow-up message for each.
    fn take_replies(&mut self) -> io::Result<()> {
        let job = self.job;
        let now = Instant::now();
        let mut at = 0;
        let first_reply = self.outcome.replies;
        while self.outcome.replies < self.sent {
            let buf = &self.inbuf[at..self.filled];
            let Some(len) = job
                .protocol
                .reply_len(buf, &job.shape)
                .map_err(io::Error::other)?
            else {
                break;
            };
            self.check_reply(at, len, now);
            at += len;
            if self.sent < job.messages {
                self.queue_next(now);
            }
        }
        self.inbuf.copy_within(at..self.filled, 0);
        self.filled -= at;
        let replies = self.outcome.replies - first_reply;
        job.progress
            .add(replies, replies * u64::from(job.shape.ops()));
        Ok(())
    }

    fn check_reply(&mut self, at: usize, len: usize, now: Instant) {
        let job = self.job;
        let message = self.outcome.replies;
        let slot = (message % u64::from(job.pipeline)) as usize;
        let reply = &self.inbuf[at..at + len];
        if reply != self.expected[slot].as_slice() {
            self.outcome.mismatches += 1;
            job.progress.mismatch();
            if self.outcome.mismatch_samples.len() < SAMPLES_PER_CONNECTION {
                self.outcome.mismatch_samples.push(format!(
                    "connection {} message {message}: expected {}, got {}",
                    self.id,
                    job.protocol.describe(&self.expected[slot]),
                    job.protocol.describe(reply),
                ));
            }
        }
        let latency_ns = now.duration_since(self.sent_at[slot]).as_nanos();
        let latency_ns = u64::try_from(latency_ns).unwrap_or(u64::MAX);
        job.latency_ns.borrow_mut().saturating_record(latency_ns);
        self.outcome.replies += 1;
    }

    /// Writes what is queued and reads what has arrived, returning once either
    /// made progress. Polling both keeps a deep pipeline from deadlocking.
    async fn io_step(&mut self) -> io::Result<()> {
        self.make_room();
        poll_fn(|cx| {
            let mut progressed = false;
            if self.written < self.out.len() {
                let pending = &self.out[self.written..];
                if let Poll::Ready(n) = Pin::new(&mut self.stream).poll_write(cx, pending)? {
                    self.written += n;
                    progressed = true;
                }
            }
            let free = &mut self.inbuf[self.filled..];
            if let Poll::Ready(n) = Pin::new(&mut self.stream).poll_read(cx, free)? {
                if n == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed the connection",
                    )));
                }
                self.filled += n;
                progressed = true;
            }
            if progressed {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
        .await?;
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
        Ok(())
    }

    /// Keeps at least half a chunk free, doubling the buffer for a big reply.
    fn make_room(&mut self) {
        if self.inbuf.len() - self.filled < READ_CHUNK_BYTES / 2 {
            let grow_by = self.inbuf.len().max(READ_CHUNK_BYTES);
            self.inbuf.resize(self.inbuf.len() + grow_by, 0);
        }
    }
}
