//! A round: every complete request message a connection has buffered, served
//! together so that a pipelining client pays one cross-core hop per destination
//! shard and one `write` for all of them.
//!
//! Steps, in order:
//! 1. Decode and validate each message ([`proto::decode_message`]). A message that
//!    fails is refused whole: it gets `[[-9, CODE, message]]` and none of its
//!    requests run. The others are unaffected.
//! 2. Route each request: owned here, owned by shard j (its bytes are appended to
//!    the batch for j), or STATS (every shard reports its share).
//! 3. Send each non-empty batch to its owner (waiting only for channel capacity).
//! 4. Execute the local requests in order, while the owners work on theirs.
//! 5. Await each owner's results and write one reply frame per message, in
//!    message order, taking each request's element from its owner's results.
//!    Each message is planned first (element count and exact body length, since
//!    every value's length is known) and then streamed through [`Output`], so
//!    values are never copied into a reply that is held whole.
//!
//! Per key the order of effects is the order of requests: a key has one owner,
//! and the owner runs this connection's requests in the order they were sent.

use super::output::Output;
use super::state::ServerState;
use crate::proto::frame::{begin_frame, finish_frame, write_prefix};
use crate::proto::{
    self, reply, BatchResults, ElementRef, ErrorCode, Op, OpKind, RequestError, RequestLimits,
};
use crate::shard::mesh::Ticket;
use crate::shard::{read_stats_element, Shard, ShardId};
use crate::table::TableStats;
use futures_lite::AsyncWrite;
use std::collections::VecDeque;
use std::io;
use std::ops::Range;

/// How a message of the round was decoded.
enum Message {
    /// Its requests are `ops[range]`.
    Requests(Range<usize>),
    /// Refused as a whole.
    Refused(RequestError),
}

/// Scratch space reused by every round of one connection.
pub struct Round {
    limits: RequestLimits,
    messages: Vec<Message>,
    ops: Vec<Op>,
    /// Owner of each op; STATS ops are marked with `None` (all shards).
    owners: Vec<Option<ShardId>>,
    /// Results per shard (the local shard's included), in request order.
    results: Vec<BatchResults>,
    /// Next unread result per shard during the merge.
    cursors: Vec<ResultCursor>,
    /// Copy of `cursors` used to plan a reply before writing it.
    planning_cursors: Vec<ResultCursor>,
    /// STATS elements built while planning a message, consumed while writing it.
    stats_elements: VecDeque<Vec<u8>>,
}

/// Position in one shard's results: the next slot and the next splice.
#[derive(Debug, Clone, Copy, Default)]
struct ResultCursor {
    slot: usize,
    splice: usize,
}

/// Takes the next result element of `results`.
fn take_element<'r>(results: &'r BatchResults, cursor: &mut ResultCursor) -> ElementRef<'r> {
    let element = results.element(cursor.slot, &mut cursor.splice);
    cursor.slot += 1;
    element
}

/// A message's reply before it is written.
struct ReplyPlan {
    nr_elements: u32,
    body_bytes: usize,
}

impl Round {
    pub fn new(limits: RequestLimits, nr_shards: usize) -> Round {
        Round {
            limits,
            messages: Vec::new(),
            ops: Vec::new(),
            owners: Vec::new(),
            results: (0..nr_shards).map(|_| BatchResults::default()).collect(),
            cursors: vec![ResultCursor::default(); nr_shards],
            planning_cursors: vec![ResultCursor::default(); nr_shards],
            stats_elements: VecDeque::new(),
        }
    }

    /// Serves the messages whose bodies are `buf[body]` for each body in `bodies`,
    /// writing one reply frame per message to `out`.
    pub async fn serve<W: AsyncWrite + Unpin>(
        &mut self,
        shard: &Shard,
        state: &ServerState,
        buf: &[u8],
        bodies: &[Range<usize>],
        out: &mut Output<'_, W>,
    ) -> io::Result<()> {
        self.decode(buf, bodies);
        let batches = self.route(shard, buf);
        let tickets = self.send(shard, batches).await;
        self.execute_local(shard, buf);
        self.collect(shard, tickets).await;
        let written = self.write_replies(state, out).await;
        // Drop the round's references to stored values now, not at the next round.
        self.results.iter_mut().for_each(BatchResults::clear);
        written
    }

    fn decode(&mut self, buf: &[u8], bodies: &[Range<usize>]) {
        self.messages.clear();
        self.ops.clear();
        for body in bodies {
            let first = self.ops.len();
            let message =
                match proto::decode_message(buf, body.clone(), &self.limits, &mut self.ops) {
                    Ok(()) => Message::Requests(first..self.ops.len()),
                    Err(refusal) => Message::Refused(refusal),
                };
            self.messages.push(message);
        }
    }

    /// Fills `owners` and returns the request bytes to forward, per shard.
    fn route(&mut self, shard: &Shard, buf: &[u8]) -> Vec<Vec<u8>> {
        let mut batches: Vec<Vec<u8>> = vec![Vec::new(); shard.nr_shards()];
        self.owners.clear();
        for op in &self.ops {
            let owner = match op.kind {
                OpKind::Stats => None,
                _ => Some(shard.router().route(op.key.of(buf))),
            };
            for (id, batch) in batches.iter_mut().enumerate() {
                let forwarded = owner.map_or(true, |o| o.0 == id);
                if forwarded && id != shard.id().0 {
                    batch.extend_from_slice(op.raw.of(buf));
                }
            }
            self.owners.push(owner);
        }
        batches
    }

    /// Sends each non-empty batch; a shard whose batch could not be delivered
    /// gets `None` and its requests are answered SHUTDOWN.
    async fn send(
        &mut self,
        shard: &Shard,
        batches: Vec<Vec<u8>>,
    ) -> Vec<Option<Result<Ticket, ()>>> {
        let mut tickets = Vec::with_capacity(batches.len());
        for (id, batch) in batches.into_iter().enumerate() {
            if batch.is_empty() {
                tickets.push(None);
                continue;
            }
            let sent = shard.send(ShardId(id), batch).await.map_err(|gone| {
                tracing::warn!(shard = %shard.id(), "{gone}");
            });
            tickets.push(Some(sent));
        }
        tickets
    }

    fn execute_local(&mut self, shard: &Shard, buf: &[u8]) {
        let local = &mut self.results[shard.id().0];
        local.clear();
        for (op, owner) in self.ops.iter().zip(&self.owners) {
            if owner.map_or(true, |o| o == shard.id()) {
                shard.execute(op, buf, local);
            }
        }
    }

    async fn collect(&mut self, shard: &Shard, tickets: Vec<Option<Result<Ticket, ()>>>) {
        for (id, ticket) in tickets.into_iter().enumerate() {
            if id == shard.id().0 {
                continue;
            }
            self.results[id] = match ticket {
                None => BatchResults::default(),
                Some(Ok(ticket)) => shard.wait(ticket).await,
                Some(Err(())) => self.refused_batch(ShardId(id)),
            };
        }
    }

    /// Results for a batch its owner never received: SHUTDOWN for each request.
    fn refused_batch(&self, owner: ShardId) -> BatchResults {
        let mut results = BatchResults::default();
        let forwarded = self
            .owners
            .iter()
            .filter(|o| o.map_or(true, |o| o == owner));
        for _ in forwarded {
            let message = format!("{owner} is shutting down; the request did not run");
            reply::write_error(&mut results.buf, ErrorCode::Shutdown, &message);
            results.end_request();
        }
        results
    }

    async fn write_replies<W: AsyncWrite + Unpin>(
        &mut self,
        state: &ServerState,
        out: &mut Output<'_, W>,
    ) -> io::Result<()> {
        self.cursors.fill(ResultCursor::default());
        for m in 0..self.messages.len() {
            match &self.messages[m] {
                Message::Requests(ops) => self.write_message(ops.clone(), state, out).await?,
                Message::Refused(refusal) => write_refusal(out.bytes(), refusal),
            }
            out.flush_if_full().await?;
        }
        Ok(())
    }

    /// Writes the reply frame of one message: its requests' elements in order.
    async fn write_message<W: AsyncWrite + Unpin>(
        &mut self,
        ops: Range<usize>,
        state: &ServerState,
        out: &mut Output<'_, W>,
    ) -> io::Result<()> {
        let plan = self.plan_message(ops.clone(), state);
        write_prefix(out.bytes(), plan.body_bytes);
        reply::write_array_len(out.bytes(), plan.nr_elements);
        for i in ops {
            match self.owners[i] {
                Some(owner) => {
                    let element = take_element(&self.results[owner.0], &mut self.cursors[owner.0]);
                    out.element(element).await?;
                }
                None => {
                    for cursor in &mut self.cursors {
                        cursor.slot += 1;
                    }
                    let stats = self
                        .stats_elements
                        .pop_front()
                        .expect("planned STATS element");
                    out.bytes().extend_from_slice(&stats);
                }
            }
        }
        Ok(())
    }

    /// Counts a message's elements and bytes without consuming results, walking
    /// the result slots exactly as `write_message` does: one slot on the owner
    /// per request, one on every shard for STATS (whose element is built here).
    fn plan_message(&mut self, ops: Range<usize>, state: &ServerState) -> ReplyPlan {
        self.planning_cursors.copy_from_slice(&self.cursors);
        let mut nr_elements = 0;
        let mut elements_bytes = 0;
        for i in ops {
            match self.owners[i] {
                Some(owner) => {
                    let element =
                        take_element(&self.results[owner.0], &mut self.planning_cursors[owner.0]);
                    nr_elements += u32::from(!element.is_empty());
                    elements_bytes += element.encoded_len();
                }
                None => {
                    let stats = self.stats_element(state);
                    nr_elements += 1;
                    elements_bytes += stats.len();
                    self.stats_elements.push_back(stats);
                }
            }
        }
        ReplyPlan {
            nr_elements,
            body_bytes: reply::array_len_bytes(nr_elements) + elements_bytes,
        }
    }

    /// Sums every shard's STATS share (the slots under the planning cursors)
    /// into one `[-6, {...}]` element. A shard that could not answer sent an
    /// error element instead; that error is the STATS result.
    fn stats_element(&mut self, state: &ServerState) -> Vec<u8> {
        let mut total = TableStats::default();
        let mut failure: Option<&[u8]> = None;
        for (results, cursor) in self.results.iter().zip(self.planning_cursors.iter_mut()) {
            let element = take_element(results, cursor);
            match read_stats_element(element.bytes) {
                Some(share) => total.add(&share),
                None => failure = failure.or(Some(element.bytes)),
            }
        }
        if let Some(error) = failure {
            return error.to_vec();
        }
        let server_fields = [
            ("shards", state.nr_shards as u64),
            ("connections", state.connections() as u64),
        ];
        let fields: Vec<(&str, u64)> = total.fields().into_iter().chain(server_fields).collect();
        let mut element = Vec::new();
        reply::write_stats(&mut element, fields.into_iter());
        element
    }
}

fn write_refusal(out: &mut Vec<u8>, refusal: &RequestError) {
    let start = begin_frame(out);
    reply::write_array_len(out, 1);
    reply::write_error(out, refusal.code, &refusal.message);
    finish_frame(out, start);
}
