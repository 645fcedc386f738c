//! A round: every complete request message a connection has buffered, served
//! together so that a pipelining client pays one cross-core hop per destination
//! shard and one `write` for all of them.
//!
//! Steps, in order:
//! 1. Decode and validate each message ([`proto::decode_message`]). A message that
//!    fails is refused whole: it gets `[[-9, CODE, message]]` and none of its
//!    requests run. The others are unaffected. On a cluster node, a message
//!    with a key of a hash slot another node owns is refused the same way,
//!    with `MOVED "<slot> <ip:port>"` naming the owner (every protocol's
//!    requests pass here, so this is the one place that check is made).
//! 2. Route each request: owned here, owned by shard j (its bytes are appended to
//!    the batch for j), STATS (every shard reports its share), or SLOTMAP
//!    (the round answers it from the cluster map; no shard takes part).
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
use crate::cluster::ClusterMap;
use crate::proto::frame::{begin_frame, finish_frame, write_prefix};
use crate::proto::{
    self, reply, BatchResults, ElementRef, ErrorCode, Op, OpKind, RequestError, RequestLimits,
};
use crate::shard::mesh::{ShardRequest, Ticket};
use crate::shard::{read_stats_element, Shard, ShardId};
use crate::table::TableStats;
use crate::txn::coordinator;
use futures_lite::AsyncWrite;
use std::collections::VecDeque;
use std::io;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;

/// How a message of the round was decoded.
enum Message {
    /// Its requests are `ops[range]`.
    Requests(Range<usize>),
    /// Refused as a whole.
    Refused(RequestError),
}

/// Who runs an op and where its result slot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// One shard: a leaf request, or an ATOMIC whose keys are all on that shard.
    Shard(ShardId),
    /// Every shard reports its share (STATS).
    AllShards,
    /// The round answers it itself (SLOTMAP): no shard runs it, no result slot.
    Node,
    /// An ATOMIC spanning shards; its slot is `cross_shard_results[i]`.
    CrossShard(usize),
    /// Part of an ATOMIC's body: runs with its marker, has no slot of its own.
    Body,
}

/// Scratch space reused by every round of one connection.
pub struct Round {
    limits: RequestLimits,
    /// The cluster this server is a node of: keys of other nodes' slots are
    /// refused with MOVED.
    cluster: Option<Arc<ClusterMap>>,
    messages: Vec<Message>,
    ops: Vec<Op>,
    /// On a cluster node, each op's hash slot (index = op; 0 for an op
    /// without a key): computed once, by the MOVED check, and used again to
    /// route the op to its shard. Empty on a standalone server.
    slots: Vec<u16>,
    owners: Vec<Owner>,
    /// Results per shard (the local shard's included), in request order.
    results: Vec<BatchResults>,
    /// The single result slot of each cross-shard ATOMIC, in order.
    cross_shard_results: Vec<BatchResults>,
    /// The ops of a segment that run on this shard.
    local_ops: Vec<Op>,
    /// Next unread result per shard during the merge.
    cursors: Vec<ResultCursor>,
    /// Copy of `cursors` used to plan a reply before writing it.
    planning_cursors: Vec<ResultCursor>,
    /// STATS elements built while planning a message, consumed while writing it.
    stats_elements: VecDeque<Vec<u8>>,
    /// The STATS element of the reply part last taken ([`Round::take_part`]).
    built_stats: Vec<u8>,
    /// Each shard's share of the last STATS answered (index = shard id), for
    /// the HTTP API's per-shard figures.
    stats_shares: Vec<TableStats>,
    /// SLOTMAP's element, built once: the map does not change while the
    /// server runs. Empty when the server is not a cluster node (SLOTMAP is
    /// then refused at decoding).
    slot_map: Vec<u8>,
}

/// Position in one shard's results: the next slot and the next splice.
#[derive(Debug, Clone, Copy, Default)]
struct ResultCursor {
    slot: usize,
    splice: usize,
}

/// Takes the next result slot of `results`: its elements and how many they are.
fn take_slot<'r>(results: &'r BatchResults, cursor: &mut ResultCursor) -> (ElementRef<'r>, u32) {
    let count = results.count(cursor.slot);
    let elements = results.element(cursor.slot, &mut cursor.splice);
    cursor.slot += 1;
    (elements, count)
}

/// The one slot of a cross-shard ATOMIC's results.
fn cross_shard_slot(results: &BatchResults) -> (ElementRef<'_>, u32) {
    take_slot(results, &mut ResultCursor::default())
}

/// What [`Round::visit_reply`] hands over for a message.
pub enum ReplyPart<'r> {
    /// The message was refused whole.
    Refused(&'r RequestError),
    /// One request's result slot (an ATOMIC's holds all its elements).
    Slot(ElementRef<'r>),
    /// A STATS element, summed over the shards, or SLOTMAP's element.
    Built(&'r [u8]),
}

/// A message's reply before it is written.
struct ReplyPlan {
    nr_elements: u32,
    body_bytes: usize,
}

type SentBatches = Vec<Option<Result<Ticket, ()>>>;

impl Round {
    pub fn new(limits: RequestLimits, nr_shards: usize, cluster: Option<Arc<ClusterMap>>) -> Round {
        let mut slot_map = Vec::new();
        if let Some(cluster) = &cluster {
            reply::write_slot_map(&mut slot_map, &cluster.me().name, cluster.nodes());
        }
        Round {
            slot_map,
            limits,
            cluster,
            messages: Vec::new(),
            ops: Vec::new(),
            slots: Vec::new(),
            owners: Vec::new(),
            results: (0..nr_shards).map(|_| BatchResults::default()).collect(),
            cross_shard_results: Vec::new(),
            local_ops: Vec::new(),
            cursors: vec![ResultCursor::default(); nr_shards],
            planning_cursors: vec![ResultCursor::default(); nr_shards],
            stats_elements: VecDeque::new(),
            built_stats: Vec::new(),
            stats_shares: Vec::new(),
        }
    }

    /// The requests of the round last served, by family (request latency).
    pub fn tally(&self) -> crate::metrics::latency::Tally {
        let refused = self
            .messages
            .iter()
            .filter(|m| matches!(m, Message::Refused(_)));
        crate::metrics::latency::Tally::of(&self.ops, refused.count())
    }

    /// Each shard's share of the last STATS this round answered, indexed by
    /// shard id; shorter than the shard count if a shard could not answer.
    pub fn stats_shares(&self) -> &[TableStats] {
        &self.stats_shares
    }

    /// Serves the messages whose bodies are `buf[body]` for each body in `bodies`,
    /// writing one reply frame per message to `out`.
    ///
    /// The round runs as segments: the requests between two cross-shard ATOMIC
    /// batches are served together (steps 2–4), and each cross-shard batch runs
    /// alone between them, so every request takes effect after the ones before it
    /// on its keys.
    pub async fn serve<W: AsyncWrite + Unpin>(
        &mut self,
        shard: &Rc<Shard>,
        state: &ServerState,
        buf: &[u8],
        bodies: &[Range<usize>],
        out: &mut Output<'_, W>,
    ) -> io::Result<()> {
        self.execute(shard, buf, bodies).await;
        let written = self.write_replies(state, out).await;
        self.release_results();
        written
    }

    /// Steps 1–4 of [`Round::serve`]: runs the messages without writing their
    /// replies. Another protocol then reads each message's results with
    /// [`Round::visit_reply`], in message order, and calls
    /// [`Round::release_results`].
    pub async fn execute(&mut self, shard: &Rc<Shard>, buf: &[u8], bodies: &[Range<usize>]) {
        self.decode(buf, bodies);
        self.assign_owners(shard, buf);
        let mut start = 0;
        while start < self.ops.len() {
            let barrier = (start..self.ops.len())
                .find(|&i| matches!(self.owners[i], Owner::CrossShard(_)))
                .unwrap_or(self.ops.len());
            if start < barrier {
                self.run_segment(shard, buf, start..barrier).await;
            }
            start = barrier;
            if barrier < self.ops.len() {
                start += 1 + self.ops[barrier].nr_inner as usize;
                self.run_cross_shard(shard, buf, barrier).await;
            }
        }
        self.cursors.fill(ResultCursor::default());
    }

    /// Hands message `m`'s results to `visit`: its refusal, or each request's
    /// result slot in order (STATS as a built element). Messages must be
    /// visited in order, each once, after [`Round::execute`].
    pub fn visit_reply(
        &mut self,
        m: usize,
        state: &ServerState,
        mut visit: impl FnMut(ReplyPart<'_>),
    ) {
        let ops = match &self.messages[m] {
            Message::Refused(refusal) => return visit(ReplyPart::Refused(refusal)),
            Message::Requests(ops) => ops.clone(),
        };
        // Planning builds the STATS elements the message needs.
        self.plan_message(ops.clone(), state);
        for i in ops {
            if let Some(part) = self.take_part(i) {
                visit(part);
            }
        }
    }

    /// The reply part of request `i` of the message being answered, taken in
    /// request order (it advances the result cursors): its result slot, or the
    /// STATS element planning built; none for the requests of an ATOMIC body,
    /// whose results are in their batch's slot.
    fn take_part(&mut self, i: usize) -> Option<ReplyPart<'_>> {
        match self.owners[i] {
            Owner::Shard(owner) => {
                let (elements, _) = take_slot(&self.results[owner.0], &mut self.cursors[owner.0]);
                Some(ReplyPart::Slot(elements))
            }
            Owner::CrossShard(k) => Some(ReplyPart::Slot(
                cross_shard_slot(&self.cross_shard_results[k]).0,
            )),
            Owner::AllShards => {
                for cursor in &mut self.cursors {
                    cursor.slot += 1;
                }
                self.built_stats = self
                    .stats_elements
                    .pop_front()
                    .expect("planned STATS element");
                Some(ReplyPart::Built(&self.built_stats))
            }
            Owner::Node => Some(ReplyPart::Built(&self.slot_map)),
            Owner::Body => None,
        }
    }

    /// Drops the round's references to stored values (now, not at the next round).
    pub fn release_results(&mut self) {
        self.results.iter_mut().for_each(BatchResults::clear);
        self.cross_shard_results.clear();
    }

    fn decode(&mut self, buf: &[u8], bodies: &[Range<usize>]) {
        self.messages.clear();
        self.ops.clear();
        self.slots.clear();
        for body in bodies {
            let first = self.ops.len();
            let decoded = proto::decode_message(buf, body.clone(), &self.limits, &mut self.ops)
                .and_then(|()| match &self.cluster {
                    Some(cluster) => not_moved(cluster, &self.ops[first..], buf, &mut self.slots),
                    None => no_slot_map(&self.ops[first..]),
                });
            let message = match decoded {
                Ok(()) => Message::Requests(first..self.ops.len()),
                Err(refusal) => {
                    self.ops.truncate(first);
                    self.slots.truncate(first);
                    Message::Refused(refusal)
                }
            };
            self.messages.push(message);
        }
    }

    fn assign_owners(&mut self, shard: &Shard, buf: &[u8]) {
        self.owners.clear();
        let router = shard.router();
        // On a cluster node the shard follows from the slot decoding found.
        let route = |i: usize| match self.slots.get(i) {
            Some(&slot) => router.slot_owner(slot),
            None => router.route(self.ops[i].key.of(buf)),
        };
        let mut nr_cross_shard = 0;
        let mut i = 0;
        while i < self.ops.len() {
            let op = &self.ops[i];
            let owner = match op.kind {
                OpKind::Stats => Owner::AllShards,
                OpKind::SlotMap => Owner::Node,
                OpKind::Atomic => {
                    let body = i + 1..i + 1 + op.nr_inner as usize;
                    let mut owners = body.map(route);
                    let first = owners.next().unwrap_or(shard.id());
                    if owners.all(|owner| owner == first) {
                        Owner::Shard(first)
                    } else {
                        nr_cross_shard += 1;
                        Owner::CrossShard(nr_cross_shard - 1)
                    }
                }
                kind if kind.targets_a_shard() => {
                    Owner::Shard(ShardId(op.target.shard as usize % shard.nr_shards()))
                }
                _ => Owner::Shard(route(i)),
            };
            self.owners.push(owner);
            let body_len = op.nr_inner as usize;
            self.owners
                .extend(std::iter::repeat_n(Owner::Body, body_len));
            i += 1 + body_len;
        }
    }

    /// Serves `ops[range]`, which holds no cross-shard ATOMIC: forwards each
    /// owner's share in one batch, runs the local share meanwhile, and appends
    /// every shard's results.
    async fn run_segment(&mut self, shard: &Shard, buf: &[u8], range: Range<usize>) {
        let batches = self.batches(shard, buf, range.clone());
        let sent = self.send(shard, batches).await;
        self.execute_local(shard, buf, range.clone()).await;
        self.collect(shard, sent, range).await;
    }

    /// The request bytes of `ops[range]` to forward, per shard.
    fn batches(&self, shard: &Shard, buf: &[u8], range: Range<usize>) -> Vec<Vec<u8>> {
        let mut batches: Vec<Vec<u8>> = vec![Vec::new(); shard.nr_shards()];
        for i in range {
            let raw = self.ops[i].raw.of(buf);
            match self.owners[i] {
                Owner::Shard(owner) if owner != shard.id() => {
                    batches[owner.0].extend_from_slice(raw)
                }
                Owner::AllShards => {
                    for (id, batch) in batches.iter_mut().enumerate() {
                        if id != shard.id().0 {
                            batch.extend_from_slice(raw);
                        }
                    }
                }
                _ => {}
            }
        }
        batches
    }

    /// Sends each non-empty batch; a shard whose batch could not be delivered
    /// gets `Err` and its requests are answered SHUTDOWN.
    async fn send(&mut self, shard: &Shard, batches: Vec<Vec<u8>>) -> SentBatches {
        let mut sent = Vec::with_capacity(batches.len());
        for (id, batch) in batches.into_iter().enumerate() {
            if batch.is_empty() {
                sent.push(None);
                continue;
            }
            let from = shard.id();
            let request = |ticket| ShardRequest::Batch {
                from,
                ticket,
                batch,
            };
            let ticket = shard.send(ShardId(id), request).await.map_err(|gone| {
                tracing::warn!(shard = %shard.id(), "{gone}");
            });
            sent.push(Some(ticket));
        }
        sent
    }

    async fn execute_local(&mut self, shard: &Shard, buf: &[u8], range: Range<usize>) {
        let mut local_ops = std::mem::take(&mut self.local_ops);
        local_ops.clear();
        let mut i = range.start;
        while i < range.end {
            // An ATOMIC marker comes with its body (nr_inner is 0 for other ops).
            let len = 1 + self.ops[i].nr_inner as usize;
            let here = match self.owners[i] {
                Owner::Shard(owner) => owner == shard.id(),
                Owner::AllShards => true,
                Owner::CrossShard(_) | Owner::Node | Owner::Body => false,
            };
            if here {
                local_ops.extend_from_slice(&self.ops[i..i + len]);
            }
            i += len;
        }
        // execute_ops settles the log: nothing is acknowledged before its
        // records are safe (--fsync).
        shard
            .execute_ops(&local_ops, buf, &mut self.results[shard.id().0])
            .await;
        self.local_ops = local_ops;
    }

    async fn collect(&mut self, shard: &Shard, sent: SentBatches, range: Range<usize>) {
        for (id, ticket) in sent.into_iter().enumerate() {
            let results = match ticket {
                None => continue,
                Some(Ok(ticket)) => shard.wait(ticket).await.results,
                Some(Err(())) => self.refused_batch(ShardId(id), range.clone()),
            };
            self.results[id].append(results);
        }
    }

    /// Results for a batch its owner never received: SHUTDOWN for each request.
    fn refused_batch(&self, owner: ShardId, range: Range<usize>) -> BatchResults {
        let mut results = BatchResults::default();
        for i in range {
            if matches!(self.owners[i], Owner::AllShards) || self.owners[i] == Owner::Shard(owner) {
                let message = format!("{owner} is shutting down; the request did not run");
                reply::write_error(&mut results.buf, ErrorCode::Shutdown, &message);
                results.end_request();
            }
        }
        results
    }

    async fn run_cross_shard(&mut self, shard: &Rc<Shard>, buf: &[u8], marker: usize) {
        let body = &self.ops[marker + 1..marker + 1 + self.ops[marker].nr_inner as usize];
        let mut slot = BatchResults::default();
        coordinator::run_cross_shard(shard, body, buf, &mut slot).await;
        self.cross_shard_results.push(slot);
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
            match self.take_part(i) {
                Some(ReplyPart::Slot(elements)) => out.element(elements).await?,
                Some(ReplyPart::Built(stats)) => out.bytes().extend_from_slice(stats),
                Some(ReplyPart::Refused(_)) | None => {}
            }
        }
        Ok(())
    }

    /// Counts a message's elements and bytes without consuming results, walking
    /// the result slots exactly as `write_message` does: one slot on the owner
    /// per request (an ATOMIC's slot holds all its elements), one on every shard
    /// for STATS (whose element is built here).
    fn plan_message(&mut self, ops: Range<usize>, state: &ServerState) -> ReplyPlan {
        self.planning_cursors.copy_from_slice(&self.cursors);
        let mut nr_elements = 0;
        let mut elements_bytes = 0;
        for i in ops {
            let (elements, count) = match self.owners[i] {
                Owner::Shard(owner) => {
                    take_slot(&self.results[owner.0], &mut self.planning_cursors[owner.0])
                }
                Owner::CrossShard(k) => cross_shard_slot(&self.cross_shard_results[k]),
                Owner::AllShards => {
                    let stats = self.stats_element(state);
                    nr_elements += 1;
                    elements_bytes += stats.len();
                    self.stats_elements.push_back(stats);
                    continue;
                }
                Owner::Node => {
                    nr_elements += 1;
                    elements_bytes += self.slot_map.len();
                    continue;
                }
                Owner::Body => continue,
            };
            nr_elements += count;
            elements_bytes += elements.encoded_len();
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
        self.stats_shares.clear();
        for (results, cursor) in self.results.iter().zip(self.planning_cursors.iter_mut()) {
            let (element, _) = take_slot(results, cursor);
            match read_stats_element(element.bytes) {
                Some(share) => {
                    total.add(&share);
                    self.stats_shares.push(share);
                }
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

/// `Err(MOVED)` naming the owner of the first key in `ops` whose hash slot
/// another node of `cluster` owns. Appends each op's slot to `slots` (0 for
/// an op without a key), for routing.
fn not_moved(
    cluster: &ClusterMap,
    ops: &[Op],
    buf: &[u8],
    slots: &mut Vec<u16>,
) -> Result<(), RequestError> {
    for op in ops {
        let keyed = !matches!(op.kind, OpKind::Atomic | OpKind::Stats | OpKind::SlotMap)
            && !op.kind.targets_a_shard();
        let slot = if keyed {
            crate::slot::key_slot(op.key.of(buf))
        } else {
            0
        };
        slots.push(slot);
        if keyed && !cluster.is_mine(slot) {
            let owner = cluster.owner(slot);
            return Err(RequestError::new(
                ErrorCode::Moved,
                format!("{slot} {}", owner.addr),
            ));
        }
    }
    Ok(())
}

/// A server that is not a cluster node has no slot map: a message asking for
/// it is refused whole (as Redis answers CLUSTER SLOTS with "cluster support
/// disabled"), so a cluster client pointed at a standalone server learns why.
fn no_slot_map(ops: &[Op]) -> Result<(), RequestError> {
    if ops.iter().all(|op| op.kind != OpKind::SlotMap) {
        return Ok(());
    }
    Err(RequestError::new(
        ErrorCode::BadReq,
        "SLOTMAP: this server is not a cluster node (started without --cluster)",
    ))
}

fn write_refusal(out: &mut Vec<u8>, refusal: &RequestError) {
    let start = begin_frame(out);
    reply::write_array_len(out, 1);
    reply::write_error(out, refusal.code, &refusal.message);
    finish_frame(out, start);
}
