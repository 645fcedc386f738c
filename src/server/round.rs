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
//!
//! Per key the order of effects is the order of requests: a key has one owner,
//! and the owner runs this connection's requests in the order they were sent.

use super::state::ServerState;
use crate::proto::frame::{begin_frame, finish_frame};
use crate::proto::{self, reply, ErrorCode, Op, OpKind, RequestError, RequestLimits};
use crate::shard::mesh::{BatchResults, Ticket};
use crate::shard::{read_stats_element, Shard, ShardId};
use crate::table::TableStats;
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
    /// Next unread result slot per shard during the merge.
    cursors: Vec<usize>,
    /// Copy of `cursors` used to count a reply's elements before writing them.
    counting_cursors: Vec<usize>,
}

impl Round {
    pub fn new(limits: RequestLimits, nr_shards: usize) -> Round {
        Round {
            limits,
            messages: Vec::new(),
            ops: Vec::new(),
            owners: Vec::new(),
            results: (0..nr_shards).map(|_| BatchResults::default()).collect(),
            cursors: vec![0; nr_shards],
            counting_cursors: vec![0; nr_shards],
        }
    }

    /// Serves the messages whose bodies are `buf[body]` for each body in `bodies`,
    /// appending one reply frame per message to `out`.
    pub async fn serve(
        &mut self,
        shard: &Shard,
        state: &ServerState,
        buf: &[u8],
        bodies: &[Range<usize>],
        out: &mut Vec<u8>,
    ) {
        self.decode(buf, bodies);
        let batches = self.route(shard, buf);
        let tickets = self.send(shard, batches).await;
        self.execute_local(shard, buf);
        self.collect(shard, tickets).await;
        self.write_replies(state, out);
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

    fn write_replies(&mut self, state: &ServerState, out: &mut Vec<u8>) {
        self.cursors.iter_mut().for_each(|c| *c = 0);
        for m in 0..self.messages.len() {
            let start = begin_frame(out);
            match &self.messages[m] {
                Message::Requests(ops) => self.write_elements(ops.clone(), state, out),
                Message::Refused(refusal) => write_refusal(out, refusal),
            }
            finish_frame(out, start);
        }
    }

    /// Writes the reply array of one message: its requests' elements in order.
    fn write_elements(&mut self, ops: Range<usize>, state: &ServerState, out: &mut Vec<u8>) {
        let nr_elements = self.count_elements(ops.clone());
        reply::write_array_len(out, nr_elements);
        for i in ops {
            match self.owners[i] {
                Some(owner) => {
                    let element = self.results[owner.0].element(self.cursors[owner.0]);
                    out.extend_from_slice(element);
                    self.cursors[owner.0] += 1;
                }
                None => self.write_stats(state, out),
            }
        }
    }

    /// Elements a message's reply holds, counted without consuming results.
    /// Walks the result slots exactly as `write_elements` does: one slot on the
    /// owner per request, and one on every shard for STATS.
    fn count_elements(&mut self, ops: Range<usize>) -> u32 {
        let cursors = &mut self.counting_cursors;
        cursors.copy_from_slice(&self.cursors);
        let mut count = 0;
        for i in ops {
            match self.owners[i] {
                Some(owner) => {
                    count += u32::from(!self.results[owner.0].element(cursors[owner.0]).is_empty());
                    cursors[owner.0] += 1;
                }
                None => {
                    count += 1;
                    cursors.iter_mut().for_each(|c| *c += 1);
                }
            }
        }
        count
    }

    /// Sums every shard's STATS share into one `[-6, {...}]` element. A shard
    /// that could not answer sent an error element instead; that error is the
    /// STATS result.
    fn write_stats(&mut self, state: &ServerState, out: &mut Vec<u8>) {
        let mut total = TableStats::default();
        let mut failure: Option<&[u8]> = None;
        for (results, cursor) in self.results.iter().zip(self.cursors.iter_mut()) {
            let element = results.element(*cursor);
            *cursor += 1;
            match read_stats_element(element) {
                Some(share) => total.add(&share),
                None => failure = failure.or(Some(element)),
            }
        }
        if let Some(error) = failure {
            out.extend_from_slice(error);
            return;
        }
        let server_fields = [
            ("shards", state.nr_shards as u64),
            ("connections", state.connections() as u64),
        ];
        let fields: Vec<(&str, u64)> = total.fields().into_iter().chain(server_fields).collect();
        reply::write_stats(out, fields.into_iter());
    }
}

fn write_refusal(out: &mut Vec<u8>, refusal: &RequestError) {
    reply::write_array_len(out, 1);
    reply::write_error(out, refusal.code, &refusal.message);
}
