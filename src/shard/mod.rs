//! Shards: the per-core owners of the key space.
//!
//! A shard is one glommio executor pinned to one CPU. It alone owns its
//! [`Table`] (and, with the log engine, its log): no other thread ever touches
//! them, so there is no lock around shard data. Other shards reach a shard's keys
//! only by sending it a [`ShardRequest`] over the [`mesh`] and awaiting the
//! [`ShardResponse`].
//!
//! The path of a request:
//! 1. A connection on shard C decodes a round of messages (`server::round`).
//! 2. Each request is routed by [`Router::route`]; those owned by C run in place
//!    with [`Shard::execute`], the others are appended, verbatim, to one batch per
//!    owning shard and sent with [`Shard::send`] — one channel message per
//!    destination per round, however many requests and messages it holds.
//! 3. The owner runs the batch in order ([`Shard::execute_batch`]) and answers
//!    with one element slot per request; C awaits it with [`Shard::wait`].
//!
//! Ordering: a key always lives on one shard; each shard runs a connection's
//! requests in the order the connection sent them (local ones in place,
//! remote ones through a FIFO channel), so requests on the same key take effect
//! in message order. Requests on different shards may run concurrently; only
//! ATOMIC (a later issue) makes several keys one unit.
//!
//! Every request passes through [`Shard::execute`], whether it came from a local
//! connection or a peer: this is the single place where ATOMIC's key locks will
//! make a request wait.

pub mod mesh;
pub mod pending;
pub mod router;

use crate::proto::msgpack::Cursor;
use crate::proto::{reply, request, BatchResults, ErrorCode, Op, OpKind, RequestLimits};
use crate::table::{Table, TableStats};
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};
use mesh::{ConnectedMesh, ShardRequest, ShardResponse, Ticket};
use pending::Pending;
use std::cell::RefCell;
use std::rc::Rc;

pub use router::{Router, ShardId};

/// Forwarded batches were validated by the sending shard; nothing is re-checked.
const FORWARDED_LIMITS: RequestLimits = RequestLimits {
    max_key_bytes: usize::MAX,
};

/// A forwarded batch could not be delivered: the owner is shutting down.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("{0} is not accepting requests (shutting down)")]
pub struct PeerGone(pub ShardId);

/// One shard: its id, its table, and its ends of the mesh.
pub struct Shard {
    id: ShardId,
    router: Router,
    table: RefCell<Table>,
    requests_to: Vec<Option<ConnectedSender<ShardRequest>>>,
    responses_to: Vec<Option<ConnectedSender<ShardResponse>>>,
    pending: Pending,
}

/// The receiving ends a shard serves from its peer tasks.
pub struct PeerInboxes {
    requests_from: Vec<(ShardId, ConnectedReceiver<ShardRequest>)>,
    responses_from: Vec<(ShardId, ConnectedReceiver<ShardResponse>)>,
}

impl Shard {
    pub fn new(
        id: ShardId,
        router: Router,
        table: Table,
        mesh: ConnectedMesh,
    ) -> (Rc<Shard>, PeerInboxes) {
        let shard = Shard {
            id,
            router,
            table: RefCell::new(table),
            requests_to: mesh.requests_to,
            responses_to: mesh.responses_to,
            pending: Pending::default(),
        };
        let inboxes = PeerInboxes {
            requests_from: mesh.requests_from,
            responses_from: mesh.responses_from,
        };
        (Rc::new(shard), inboxes)
    }

    pub fn id(&self) -> ShardId {
        self.id
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn nr_shards(&self) -> usize {
        self.router.nr_shards()
    }

    /// This shard's table figures, as STATS reports them.
    pub fn table_stats(&self) -> TableStats {
        self.table.borrow().stats()
    }

    /// Runs one request owned by this shard (STATS: this shard's share) and
    /// records its result slot in `out`.
    pub fn execute(&self, op: &Op, buf: &[u8], out: &mut BatchResults) {
        match op.kind {
            OpKind::Stats => write_stats_element(&mut out.buf, &self.table_stats()),
            _ => self.table.borrow_mut().apply(op, buf, out),
        }
        out.end_request();
    }

    /// Runs a batch forwarded by a peer, in order.
    pub fn execute_batch(&self, batch: &[u8]) -> BatchResults {
        let mut results = BatchResults::default();
        let mut cursor = Cursor::new(batch);
        while !cursor.is_empty() {
            match request::decode_request(&mut cursor, &FORWARDED_LIMITS) {
                Ok(op) => self.execute(&op, batch, &mut results),
                Err(e) => {
                    // The sender validated these bytes; getting here is a bug. Answer
                    // the rest of the batch with errors rather than guess.
                    debug_assert!(false, "forwarded batch failed to decode: {e}");
                    tracing::error!(shard = %self.id, "forwarded batch failed to decode: {e}");
                    reply::write_error(&mut results.buf, ErrorCode::BadReq, &e.message);
                    results.end_request();
                    break;
                }
            }
        }
        results
    }

    /// Sends a batch of request arrays to their owner; waits only for channel
    /// capacity. Await the results with [`Shard::wait`].
    pub async fn send(&self, to: ShardId, batch: Vec<u8>) -> Result<Ticket, PeerGone> {
        let sender = self.requests_to[to.0]
            .as_ref()
            .expect("batches are only forwarded to other shards");
        let ticket = self.pending.open();
        let request = ShardRequest {
            from: self.id,
            ticket,
            batch,
        };
        if sender.send(request).await.is_err() {
            self.pending.cancel(ticket);
            return Err(PeerGone(to));
        }
        Ok(ticket)
    }

    /// The results of a batch sent with [`Shard::send`].
    pub async fn wait(&self, ticket: Ticket) -> BatchResults {
        self.pending.wait(ticket).await
    }

    /// Starts the tasks that serve peers' batches and collect peers' responses.
    pub fn start_peer_tasks(self: &Rc<Self>, inboxes: PeerInboxes) {
        for (peer, inbox) in inboxes.requests_from {
            glommio::spawn_local(serve_peer(self.clone(), peer, inbox)).detach();
        }
        for (_, inbox) in inboxes.responses_from {
            glommio::spawn_local(collect_responses(self.clone(), inbox)).detach();
        }
    }
}

/// Runs every batch `peer` forwards, in arrival order, and sends the results back.
async fn serve_peer(shard: Rc<Shard>, peer: ShardId, inbox: ConnectedReceiver<ShardRequest>) {
    let reply_to = shard.responses_to[peer.0]
        .as_ref()
        .expect("every peer has a response channel");
    while let Some(request) = inbox.recv().await {
        let results = shard.execute_batch(&request.batch);
        let response = ShardResponse {
            ticket: request.ticket,
            results,
        };
        if reply_to.send(response).await.is_err() {
            break; // the peer is gone: nobody is waiting for results any more
        }
    }
}

/// Hands each response from a peer to the connection waiting for it. Never blocks.
async fn collect_responses(shard: Rc<Shard>, inbox: ConnectedReceiver<ShardResponse>) {
    while let Some(response) = inbox.recv().await {
        shard.pending.complete(response);
    }
}

/// A shard's STATS share travels as an array of integers in
/// [`TableStats::fields`] order; only the coordinating shard turns the sum into
/// the `[-6, {name: integer}]` element.
fn write_stats_element(out: &mut Vec<u8>, stats: &TableStats) {
    let fields = stats.fields();
    reply::write_array_len(out, fields.len() as u32);
    for (_, value) in fields {
        reply::write_uint(out, value);
    }
}

/// Reads an element written by [`write_stats_element`].
pub fn read_stats_element(element: &[u8]) -> Option<TableStats> {
    let mut cursor = Cursor::new(element);
    if cursor.read_array_len().ok()? != TableStats::NR_FIELDS as u64 {
        return None;
    }
    let mut values = [0u64; TableStats::NR_FIELDS];
    for value in &mut values {
        *value = u64::try_from(cursor.read_int().ok()?).ok()?;
    }
    Some(TableStats::from_values(values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_element_round_trips() {
        let stats = TableStats::from_values([1, 2, 3, 4, 5, 6, 7, 8, 9, u64::MAX]);
        let mut element = Vec::new();
        write_stats_element(&mut element, &stats);
        assert_eq!(read_stats_element(&element), Some(stats));
        assert_eq!(read_stats_element(&[0x90]), None);
    }
}
