//! One connection's loop, run as a task on a glommio executor: ask the
//! connection's [`Script`] for messages, keep up to `--pipeline` of them in
//! flight, hand every reply to the script to judge, and record each message's
//! latency.
//!
//! When a message leaves:
//! - closed loop (default): as soon as a pipeline slot is free; its latency is
//!   measured from that moment;
//! - open loop (`--rate`): at its intended time on the connection's
//!   [`Schedule`], or at once if the connection is behind; its latency is
//!   measured from the intended time (see [`crate::pacing`]).
//!
//! How long: `--messages` per connection, or a time window — `--warmup`
//! seconds whose replies are judged but not counted, then `--duration` seconds
//! whose replies are counted (throughput) and timed (latency). No message is
//! sent after the window; replies still in flight then are judged, not counted.
//!
//! Lean by construction: a message and its expected reply are rendered into
//! buffers reused for the whole run; each wake-up judges every complete reply in
//! the receive buffer and sends all follow-up messages with one write. Writes,
//! reads and the pacing timer are polled together, so a deep pipeline cannot
//! deadlock against a server that stops reading while its replies go unread.
//!
//! A reply the script rejects is a *mismatch*: counted, sampled for the report,
//! and the loop goes on (the framing is intact). An I/O error, a timeout, a
//! closed connection or an unreadable reply is a *failure*: the connection
//! stops, and its unanswered messages are simply not counted.

use crate::pacing::Schedule;
use crate::progress::Progress;
use crate::protocol::Protocol;
use crate::script::{Script, Tally};
use corekv::net::stream::NetStream;
use futures_lite::{AsyncRead, AsyncWrite, Future};
use glommio::timer::Timer;
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

/// Mismatches described in full per connection; the rest are only counted.
const SAMPLES_PER_CONNECTION: usize = 3;
/// Free space offered to each read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// How long connections run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Span {
    /// This many messages per connection, every reply counted.
    Messages(u64),
    /// Warm-up, then the measured window.
    Window {
        warmup: Duration,
        duration: Duration,
    },
}

/// What every connection of one executor shares for one phase (prefill or run).
pub struct Job {
    pub protocol: Protocol,
    pub pipeline: u32,
    pub span: Span,
    /// Open loop: requests per second over all connections.
    pub rate_ops_per_s: Option<f64>,
    /// Requests per message (the pacing unit).
    pub ops_per_message: u64,
    pub nr_connections: u32,
    /// Record latency and progress (not during prefill).
    pub record: bool,
    /// Latency per message, nanoseconds; one per executor, merged at the end.
    pub latency_ns: RefCell<Histogram<u64>>,
    pub progress: Arc<Progress>,
    /// A connection waiting this long for a reply (or to write) fails.
    pub reply_timeout: Duration,
}

/// How one connection's run went.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Replies received and judged (matching or not).
    pub replies: u64,
    /// Of those, the replies counted: all of them, or those in the window.
    pub measured: u64,
    /// Requests in the counted replies' messages.
    pub measured_ops: u64,
    pub mismatches: u64,
    pub mismatch_samples: Vec<String>,
    pub failure: Option<String>,
    pub tally: Tally,
}

impl Outcome {
    pub fn failed(failure: String) -> Outcome {
        Outcome {
            failure: Some(failure),
            ..Outcome::default()
        }
    }
}

/// A message in flight.
struct Slot {
    expected: Vec<u8>,
    sent_at: Instant,
    requests: u32,
}

struct Conn<'a> {
    job: &'a Job,
    id: u64,
    script: &'a mut dyn Script,
    stream: &'a mut NetStream,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    written: usize,
    inbuf: Vec<u8>,
    filled: usize,
    /// Message `m` uses slot `m % pipeline`.
    slots: Vec<Slot>,
    sent: u64,
    received: u64,
    schedule: Option<Schedule>,
    timer: Option<Timer>,
    /// Fires a reply timeout; re-armed only when it goes off early, so a
    /// message costs no timer update.
    silence: Timer,
    /// When the connection last read or wrote.
    last_progress: Instant,
    /// The counted window (`None`: count everything).
    window: Option<(Instant, Instant)>,
    outcome: Outcome,
}

/// Runs connection `id` over `stream` for `job`, from `started` (the start
/// gate), until its span is over or it fails.
pub async fn drive(
    job: &Job,
    id: u64,
    script: &mut dyn Script,
    stream: &mut NetStream,
    started: Instant,
) -> Outcome {
    let schedule = job.rate_ops_per_s.map(|rate| {
        Schedule::for_connection(started, rate, job.ops_per_message, job.nr_connections, id)
    });
    let window = match job.span {
        Span::Messages(_) => None,
        Span::Window { warmup, duration } => Some((started + warmup, started + warmup + duration)),
    };
    let slot = || Slot {
        expected: Vec::new(),
        sent_at: started,
        requests: 0,
    };
    let mut conn = Conn {
        job,
        id,
        script,
        stream,
        out: Vec::new(),
        written: 0,
        inbuf: vec![0; READ_CHUNK_BYTES],
        filled: 0,
        slots: (0..job.pipeline).map(|_| slot()).collect(),
        sent: 0,
        received: 0,
        schedule,
        timer: schedule.map(|_| Timer::new(Duration::ZERO)),
        silence: Timer::new(job.reply_timeout),
        last_progress: started,
        window,
        outcome: Outcome::default(),
    };
    if let Err(e) = conn.run().await {
        job.progress.connection_failed();
        conn.outcome.failure = Some(format!("connection {id}: {e}"));
    }
    conn.outcome.tally = conn.script.tally();
    conn.outcome
}

impl Conn<'_> {
    async fn run(&mut self) -> io::Result<()> {
        loop {
            let now = Instant::now();
            self.take_replies(now)?;
            self.queue_due(now);
            if self.received == self.sent && !self.may_send(now) {
                break;
            }
            self.io_step(now).await?;
        }
        if self.filled > 0 {
            return Err(io::Error::other(format!(
                "{} unexpected bytes after the last reply",
                self.filled
            )));
        }
        Ok(())
    }

    fn in_flight(&self) -> u64 {
        self.sent - self.received
    }

    /// Whether the span allows another message.
    fn may_send(&self, now: Instant) -> bool {
        match (self.job.span, self.window, &self.schedule) {
            (Span::Messages(n), ..) => self.sent < n,
            (_, Some((_, end)), None) => now < end,
            (_, Some((_, end)), Some(s)) => now < end && s.intended(self.sent) < end,
            (_, None, _) => unreachable!("a time span always has a window"),
        }
    }

    /// Queues every message that is due and has a free slot.
    fn queue_due(&mut self, now: Instant) {
        while self.in_flight() < u64::from(self.job.pipeline) && self.may_send(now) {
            let at = match &self.schedule {
                None => now,
                Some(s) if s.intended(self.sent) <= now => s.intended(self.sent),
                Some(_) => break,
            };
            self.queue(at);
        }
    }

    /// Renders the next message into the send buffer and its expectation into its slot.
    fn queue(&mut self, at: Instant) {
        let slot = &mut self.slots[(self.sent % u64::from(self.job.pipeline)) as usize];
        slot.expected.clear();
        slot.requests = self
            .script
            .next(self.sent, &mut self.out, &mut slot.expected);
        slot.sent_at = at;
        self.sent += 1;
    }

    /// Judges every complete reply in the receive buffer.
    fn take_replies(&mut self, now: Instant) -> io::Result<()> {
        let measured = self
            .window
            .is_none_or(|(from, end)| (from..end).contains(&now));
        let (first_measured, first_ops) = (self.outcome.measured, self.outcome.measured_ops);
        let mut at = 0;
        while self.received < self.sent {
            let slot = (self.received % u64::from(self.job.pipeline)) as usize;
            let buf = &self.inbuf[at..self.filled];
            let requests = self.slots[slot].requests;
            let Some(len) = self
                .job
                .protocol
                .reply_len(buf, requests)
                .map_err(io::Error::other)?
            else {
                break;
            };
            self.judge(at, len, slot, measured, now);
            at += len;
        }
        self.inbuf.copy_within(at..self.filled, 0);
        self.filled -= at;
        if self.job.record {
            self.job.progress.add(
                self.outcome.measured - first_measured,
                self.outcome.measured_ops - first_ops,
            );
        }
        Ok(())
    }

    fn judge(&mut self, at: usize, len: usize, slot: usize, measured: bool, now: Instant) {
        let job = self.job;
        let message = self.received;
        let reply = &self.inbuf[at..at + len];
        let slot = &self.slots[slot];
        if let Err(why) = self.script.check(message, reply, &slot.expected, measured) {
            self.outcome.mismatches += 1;
            job.progress.mismatch();
            if self.outcome.mismatch_samples.len() < SAMPLES_PER_CONNECTION {
                self.outcome
                    .mismatch_samples
                    .push(format!("connection {} message {message}: {why}", self.id));
            }
        }
        if measured {
            self.outcome.measured += 1;
            self.outcome.measured_ops += u64::from(slot.requests);
            if job.record {
                let latency_ns = now.saturating_duration_since(slot.sent_at).as_nanos();
                let latency_ns = u64::try_from(latency_ns).unwrap_or(u64::MAX);
                job.latency_ns.borrow_mut().saturating_record(latency_ns);
            }
        }
        self.outcome.replies += 1;
        self.received += 1;
    }

    /// Writes what is queued, reads what has arrived, and (open loop) waits for
    /// the next intended send; returns once any of them made progress.
    async fn io_step(&mut self, now: Instant) -> io::Result<()> {
        self.make_room();
        let next_send = match &self.schedule {
            Some(s) if self.in_flight() < u64::from(self.job.pipeline) && self.may_send(now) => {
                Some(s.intended(self.sent))
            }
            _ => None,
        };
        if let (Some(timer), Some(at)) = (&mut self.timer, next_send) {
            timer.reset(at.saturating_duration_since(now));
        }
        poll_fn(|cx| {
            let mut progressed = false;
            if self.written < self.out.len() {
                let pending = &self.out[self.written..];
                if let Poll::Ready(n) = Pin::new(&mut *self.stream).poll_write(cx, pending)? {
                    self.written += n;
                    progressed = true;
                }
            }
            let free = &mut self.inbuf[self.filled..];
            if let Poll::Ready(n) = Pin::new(&mut *self.stream).poll_read(cx, free)? {
                if n == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed the connection",
                    )));
                }
                self.filled += n;
                progressed = true;
            }
            if let (Some(timer), Some(_)) = (&mut self.timer, next_send) {
                progressed |= Pin::new(timer).poll(cx).is_ready();
            }
            if progressed {
                self.last_progress = Instant::now();
                return Poll::Ready(Ok(()));
            }
            self.poll_silence(cx)
        })
        .await?;
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
        Ok(())
    }

    /// Pending, unless the connection has waited `reply_timeout` for a reply
    /// or to write since it last made progress.
    fn poll_silence(&mut self, cx: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        while Pin::new(&mut self.silence).poll(cx).is_ready() {
            let quiet = self.last_progress.elapsed();
            let waiting = self.in_flight() > 0 || self.written < self.out.len();
            if waiting && quiet >= self.job.reply_timeout {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no reply within {:?}", self.job.reply_timeout),
                )));
            }
            let left = self.job.reply_timeout.saturating_sub(quiet);
            self.silence.reset(left.max(Duration::from_millis(1)));
        }
        Poll::Pending
    }

    /// Keeps at least half a chunk free, doubling the buffer for a big reply.
    fn make_room(&mut self) {
        if self.inbuf.len() - self.filled < READ_CHUNK_BYTES / 2 {
            let grow_by = self.inbuf.len().max(READ_CHUNK_BYTES);
            self.inbuf.resize(self.inbuf.len() + grow_by, 0);
        }
    }
}
