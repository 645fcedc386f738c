//! Shards: the per-core owners of the key space.
//!
//! A shard is one glommio executor pinned to one CPU. It alone owns its
//! [`Table`] (and, with the log engine, its log) and its key locks: no other
//! thread ever touches them, so there is no lock around shard data. Other shards
//! reach a shard's keys only by sending it a [`ShardRequest`] over the [`mesh`]
//! and awaiting the answer.
//!
//! The path of a request:
//! 1. A connection on shard C decodes a round of messages (`server::round`).
//! 2. Each request is routed by [`Router::route`]; those owned by C run in place
//!    with [`Shard::execute_ops`], the others are appended, verbatim, to one
//!    batch per owning shard and sent with [`Shard::send`] — one channel message
//!    per destination per round, however many requests and messages it holds.
//! 3. The owner runs the batch in order and answers with one result slot per
//!    request; C awaits it with [`Shard::wait`].
//!
//! Ordering: a key always lives on one shard; each shard runs a connection's
//! requests in the order the connection sent them (local ones in place, remote
//! ones through a FIFO channel), so requests on the same key take effect in
//! message order. Requests on different shards may run concurrently; only ATOMIC
//! makes several keys one unit (see `crate::txn`).
//!
//! Every request passes through [`Shard::execute_ops`], whether it came from a
//! local connection or a peer: it is the one place where a request waits for a
//! key held by an undecided ATOMIC batch. While no key is held or awaited, it
//! never suspends.

pub mod mesh;
pub mod pending;
pub mod router;

use crate::log::compaction::{PreparedShare, Snapshot, SnapshotEntry};
use crate::log::format::{self, Effect};
use crate::log::replay::OwnedEffect;
use crate::log::{LogPoisoned, LogWriter};
use crate::proto::msgpack::Cursor;
use crate::proto::ErrorCode;
use crate::proto::{reply, request, BatchResults, Op, OpKind, RequestError, RequestLimits};
use crate::table::{Change, Table, TableStats};
use crate::txn::locks::LockTable;
use crate::txn::undo::UndoLog;
use crate::txn::unit::{effect_of, run_unit};
use crate::txn::TxnId;
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};
use hashbrown::HashMap;
use mesh::{ConnectedMesh, Reply, ShardRequest, ShardResponse, Ticket};
use pending::Pending;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

pub use router::{Router, ShardId};

/// Forwarded batches were validated by the sending shard; nothing is re-checked.
const FORWARDED_LIMITS: RequestLimits = RequestLimits {
    max_key_bytes: usize::MAX,
};

/// A message could not be delivered: the peer is shutting down.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("{0} is not accepting requests (shutting down)")]
pub struct PeerGone(pub ShardId);

/// A cross-shard batch this shard has voted yes for and not yet heard the
/// decision of: the keys it holds and how to undo its writes.
struct Prepared {
    keys: Vec<Box<[u8]>>,
    undo: UndoLog,
}

/// One shard: its id, its table and locks, and its ends of the mesh.
pub struct Shard {
    id: ShardId,
    router: Router,
    table: RefCell<Table>,
    /// None with `--engine memory`.
    log: Option<Rc<LogWriter>>,
    locks: LockTable,
    prepared: RefCell<HashMap<TxnId, Prepared>>,
    /// Cross-shard batches this shard committed whose participants have not all
    /// confirmed their decision yet.
    committing: RefCell<hashbrown::HashSet<TxnId>>,
    next_txn_seq: Cell<u64>,
    requests_to: Vec<Option<ConnectedSender<ShardRequest>>>,
    responses_to: Vec<Option<ConnectedSender<ShardResponse>>>,
    pending: Pending,
}

/// The receiving ends a shard serves from its peer tasks.
pub struct PeerInboxes {
    requests_from: Vec<(ShardId, ConnectedReceiver<ShardRequest>)>,
    responses_from: Vec<(ShardId, ConnectedReceiver<ShardResponse>)>,
}

/// The distinct keys of `ops`.
fn distinct_keys<'b>(ops: &[Op], buf: &'b [u8]) -> Vec<&'b [u8]> {
    let mut keys: Vec<&[u8]> = ops.iter().map(|op| op.key.of(buf)).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

impl Shard {
    pub fn new(
        id: ShardId,
        router: Router,
        table: Table,
        log: Option<Rc<LogWriter>>,
        mesh: ConnectedMesh,
    ) -> (Rc<Shard>, PeerInboxes) {
        let shard = Shard {
            id,
            router,
            table: RefCell::new(table),
            log,
            locks: LockTable::default(),
            prepared: RefCell::new(HashMap::new()),
            committing: RefCell::new(hashbrown::HashSet::new()),
            next_txn_seq: Cell::new(0),
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
        let mut stats = self.table.borrow().stats();
        stats.log_syncs = self.log.as_ref().map_or(0, |log| log.nr_syncs());
        stats
    }

    /// Frees pinned values whose replies are gone (see `table::pinned`); returns
    /// the bytes freed.
    pub fn sweep_pinned_values(&self, budget: usize) -> u64 {
        self.table.borrow_mut().sweep_pinned(budget)
    }

    /// Runs requests owned by this shard, in order, one result slot each: leaf
    /// requests, STATS (this shard's share), and single-shard ATOMIC batches
    /// (a marker followed by its body), and settles the log: when it returns,
    /// every write among them is safe for the `--fsync` mode and the results may
    /// be acknowledged. If the log failed, their slots hold IOERR instead.
    /// Waits for keys that an ATOMIC batch holds or is queued for.
    pub async fn execute_ops(&self, ops: &[Op], buf: &[u8], out: &mut BatchResults) {
        let first_slot = out.len();
        if self.run_ops(ops, buf, out).await {
            if let Err(poisoned) = self.settle().await {
                out.fail_from(first_slot, ErrorCode::IoErr, &poisoned.to_string());
            }
        }
    }

    /// The execution part of [`Shard::execute_ops`]; returns whether anything
    /// was appended to the log.
    async fn run_ops(&self, ops: &[Op], buf: &[u8], out: &mut BatchResults) -> bool {
        let mut wrote = false;
        let mut i = 0;
        while i < ops.len() {
            let op = &ops[i];
            if op.kind == OpKind::Atomic {
                let body = &ops[i + 1..i + 1 + op.nr_inner as usize];
                wrote |= self.execute_atomic(body, buf, out).await;
                i += 1 + body.len();
                continue;
            }
            if op.kind == OpKind::Stats || self.locks.is_idle() {
                wrote |= self.execute(op, buf, out);
            } else {
                let key = [op.key.of(buf)];
                self.locks.acquire(&key).await;
                wrote |= self.execute(op, buf, out);
                self.locks.pass(&key);
            }
            i += 1;
        }
        wrote
    }

    /// Runs one leaf request or STATS, records its result slot in `out`, and
    /// appends its change to the log; returns whether it did.
    fn execute(&self, op: &Op, buf: &[u8], out: &mut BatchResults) -> bool {
        if op.kind.writes() {
            if let Some(poisoned) = self.poisoned() {
                reply::write_error(&mut out.buf, ErrorCode::IoErr, &poisoned.to_string());
                out.end_request();
                return false;
            }
        }
        let change = match op.kind {
            OpKind::Stats => {
                write_stats_element(&mut out.buf, &self.table_stats());
                Change::Nothing
            }
            _ => self.table.borrow_mut().apply(op, buf, out),
        };
        out.end_request();
        match (&self.log, effect_of(op, buf, change)) {
            (Some(log), Some(effect)) => {
                log.append(|records| format::write_effect(records, &effect));
                true
            }
            _ => false,
        }
    }

    fn poisoned(&self) -> Option<LogPoisoned> {
        self.log.as_ref().and_then(|log| log.poisoned())
    }

    /// At shutdown: writes and fdatasyncs everything logged, whatever the mode.
    pub async fn settle_all(&self) -> Result<(), LogPoisoned> {
        match &self.log {
            Some(log) => log.sync_all().await,
            None => Ok(()),
        }
    }

    /// Waits until everything this shard has logged so far is safe for the
    /// `--fsync` mode (group commit: the wait is shared by every request whose
    /// records went out in the same write and sync).
    pub async fn settle(&self) -> Result<(), LogPoisoned> {
        match &self.log {
            Some(log) => log.durable(log.appended()).await,
            None => Ok(()),
        }
    }

    /// Runs an ATOMIC batch whose keys are all on this shard, as one unit, into
    /// one result slot: its results flattened, or one error element. Its changes
    /// are logged as one BATCH record; returns whether there were any.
    async fn execute_atomic(&self, body: &[Op], buf: &[u8], out: &mut BatchResults) -> bool {
        let keys = distinct_keys(body, buf);
        self.locks.acquire(&keys).await;
        let mut results = BatchResults::default();
        let mut effects = Vec::new();
        let outcome = self.run_with_undo(body, buf, &mut results, &mut effects);
        self.table.borrow_mut().count_atomic(outcome.is_ok());
        self.locks.pass(&keys);
        match outcome {
            Ok(_) => {
                let nr_elements = results.counts.iter().sum();
                out.append_into_slot(results);
                out.end_request_with(nr_elements);
                self.log_records(|records| format::write_batch(records, &effects), &effects)
            }
            Err(abort) => {
                reply::write_error(&mut out.buf, abort.code, &abort.message);
                out.end_request_with(1);
                false
            }
        }
    }

    /// Runs leaf requests as a unit; on failure rolls them back. On success
    /// returns the undo log (to roll back later if a cross-shard batch aborts).
    fn run_with_undo<'b>(
        &self,
        ops: &[Op],
        buf: &'b [u8],
        results: &mut BatchResults,
        effects: &mut Vec<Effect<'b>>,
    ) -> Result<UndoLog, RequestError> {
        let mut undo = UndoLog::default();
        if let Some(poisoned) = self.poisoned() {
            return Err(RequestError::new(ErrorCode::IoErr, poisoned.to_string()));
        }
        let mut table = self.table.borrow_mut();
        match run_unit(&mut table, ops, buf, results, &mut undo, effects) {
            Ok(()) => Ok(undo),
            Err(abort) => {
                undo.roll_back(&mut table);
                Err(abort)
            }
        }
    }

    /// Appends records encoding `effects` unless there are none; returns whether it did.
    fn log_records(&self, encode: impl FnOnce(&mut Vec<u8>), effects: &[Effect<'_>]) -> bool {
        match &self.log {
            Some(log) if !effects.is_empty() => {
                log.append(encode);
                true
            }
            _ => false,
        }
    }

    /// Phase 1 of a cross-shard batch on this shard: runs this shard's share
    /// (`ops`, leaf requests) with undo and, if it succeeded, holds its keys
    /// until [`Shard::decide`]. Returns the vote: the share's results or the error.
    pub async fn prepare(
        &self,
        txn: TxnId,
        ops: &[Op],
        buf: &[u8],
    ) -> Result<BatchResults, RequestError> {
        let keys = distinct_keys(ops, buf);
        self.locks.acquire(&keys).await;
        let mut results = BatchResults::default();
        let mut effects = Vec::new();
        let undo = match self.run_with_undo(ops, buf, &mut results, &mut effects) {
            Ok(undo) => undo,
            Err(no) => {
                self.locks.pass(&keys);
                return Err(no);
            }
        };
        // Hold the keys before the first await: nobody may see the tentative writes.
        self.locks.hold(txn, &keys);
        let owned_keys = keys.iter().map(|k| Box::from(*k)).collect();
        let prepared = Prepared {
            keys: owned_keys,
            undo,
        };
        self.prepared.borrow_mut().insert(txn, prepared);
        // The prepare record must be safe before the yes vote leaves.
        if let Some(log) = &self.log {
            let end = log.append(|records| format::write_prepare(records, txn, &effects));
            if let Err(poisoned) = log.durable(end).await {
                self.decide(txn, false);
                return Err(RequestError::new(ErrorCode::IoErr, poisoned.to_string()));
            }
        }
        Ok(results)
    }

    /// Phase 2 on this shard: keeps (commit) or rolls back (abort) the writes of
    /// a prepared batch and releases its keys. Never waits.
    pub fn decide(&self, txn: TxnId, commit: bool) {
        let Some(prepared) = self.prepared.borrow_mut().remove(&txn) else {
            debug_assert!(
                false,
                "decision for {txn}, which this shard did not prepare"
            );
            return;
        };
        if let Some(log) = &self.log {
            log.append(|records| format::write_decide(records, txn, commit));
        }
        if !commit {
            prepared.undo.roll_back(&mut self.table.borrow_mut());
        }
        self.locks.release(&prepared.keys);
    }

    /// Numbers new cross-shard batches from `seq` on (above every number a
    /// previous run left in the logs).
    pub fn continue_txn_numbering(&self, seq: u64) {
        self.next_txn_seq.set(self.next_txn_seq.get().max(seq));
    }

    /// A fresh id for a batch this shard coordinates.
    pub fn next_txn(&self) -> TxnId {
        let seq = self.next_txn_seq.get();
        self.next_txn_seq.set(seq + 1);
        TxnId {
            coordinator: self.id,
            seq,
        }
    }

    /// Counts a cross-shard batch this shard coordinated.
    pub fn count_atomic(&self, committed: bool) {
        self.table.borrow_mut().count_atomic(committed);
    }

    /// Whether the log is due for compaction: larger than `min_bytes` and more
    /// than twice the live data, and not poisoned. Returns the live data (the
    /// size of the snapshot's records for the table's keys and values).
    pub fn compaction_due(&self, min_bytes: u64) -> Option<u64> {
        let log = self.log.as_ref()?;
        let table = self.table.borrow();
        let stats = table.stats();
        let live_bytes = crate::log::compaction::snapshot_bytes(
            stats.keys,
            table.key_bytes(),
            stats.value_bytes,
        );
        let due = crate::log::compaction::should_compact(log.file_len(), live_bytes, min_bytes);
        (due && log.poisoned().is_none()).then_some(live_bytes)
    }

    /// The snapshot compaction writes, taken now (synchronously: nothing runs
    /// meanwhile): the committed state of every key — for a key a prepared
    /// cross-shard batch holds, its state before the batch, from the undo log —
    /// and each prepared batch's share as the state it tentatively gave its
    /// keys, to be carried forward as a PREPARE (`log::compaction` explains why
    /// that resolves exactly as the original records would).
    pub fn compaction_snapshot(&self) -> Option<Snapshot> {
        let log = self.log.as_ref()?;
        let table = self.table.borrow();
        let prepared = self.prepared.borrow();
        let held: hashbrown::HashSet<&[u8]> = prepared
            .values()
            .flat_map(|p| p.undo.priors().map(|(key, _)| key))
            .collect();
        let mut entries: Vec<SnapshotEntry> = table
            .entries()
            .filter(|entry| held.is_empty() || !held.contains(entry.key()))
            .cloned()
            .collect();
        let mut shares = Vec::with_capacity(prepared.len());
        for (txn, batch) in prepared.iter() {
            let mut effects = Vec::new();
            for (key, before) in batch.undo.priors() {
                if let Some(entry) = before.state() {
                    entries.push(entry.clone());
                }
                effects.push(tentative_effect(&table, key));
            }
            shares.push(PreparedShare { txn: *txn, effects });
        }
        Some(Snapshot {
            cut: log.appended(),
            entries,
            commits: self.committing.borrow().iter().copied().collect(),
            prepared: shares,
        })
    }

    /// The shard's log writer (None with the memory engine).
    pub fn log(&self) -> Option<&Rc<LogWriter>> {
        self.log.as_ref()
    }

    /// The commit point of a cross-shard batch this shard coordinates: logs
    /// COMMIT and waits until it is safe. Only then may anyone be told. Until
    /// [`Shard::forget_commit`], compaction carries the record forward.
    pub async fn log_commit(&self, txn: TxnId) -> Result<(), LogPoisoned> {
        let Some(log) = &self.log else { return Ok(()) };
        self.committing.borrow_mut().insert(txn);
        let end = log.append(|records| format::write_commit(records, txn));
        let safe = log.durable(end).await;
        if safe.is_err() {
            self.committing.borrow_mut().remove(&txn);
        }
        safe
    }

    /// Every participant has its decision safe: the COMMIT record of `txn` is
    /// needed by nobody any more.
    pub fn forget_commit(&self, txn: TxnId) {
        self.committing.borrow_mut().remove(&txn);
    }

    /// Runs a batch of request arrays forwarded by a peer, in order; the
    /// results are ready to be acknowledged.
    pub async fn execute_batch(&self, batch: &[u8]) -> BatchResults {
        let mut results = BatchResults::default();
        let ops = match decode_forwarded(batch) {
            Ok(ops) => ops,
            Err(e) => {
                // The sender validated these bytes; getting here is a bug.
                debug_assert!(false, "forwarded batch failed to decode: {e}");
                tracing::error!(shard = %self.id, "forwarded batch failed to decode: {e}");
                return results;
            }
        };
        self.execute_ops(&ops, batch, &mut results).await;
        results
    }

    /// Sends a request that expects an answer; waits only for channel capacity.
    /// Await the answer with [`Shard::wait`].
    pub async fn send(
        &self,
        to: ShardId,
        request: impl FnOnce(Ticket) -> ShardRequest,
    ) -> Result<Ticket, PeerGone> {
        let ticket = self.pending.open();
        if self.channel_to(to).send(request(ticket)).await.is_err() {
            self.pending.cancel(ticket);
            return Err(PeerGone(to));
        }
        Ok(ticket)
    }

    /// Sends phase 2 of a cross-shard batch to a participant; the answer comes
    /// once the participant's DECIDE record is safe.
    pub async fn send_decision(
        &self,
        to: ShardId,
        txn: TxnId,
        commit: bool,
    ) -> Result<Ticket, PeerGone> {
        let from = self.id;
        self.send(to, |ticket| ShardRequest::Decide {
            from,
            ticket,
            txn,
            commit,
        })
        .await
    }

    fn channel_to(&self, to: ShardId) -> &ConnectedSender<ShardRequest> {
        self.requests_to[to.0]
            .as_ref()
            .expect("messages are only sent to other shards")
    }

    /// The answer to a request sent with [`Shard::send`].
    pub async fn wait(&self, ticket: Ticket) -> Reply {
        self.pending.wait(ticket).await
    }

    /// Starts the tasks that serve peers' requests and collect peers' responses.
    pub fn start_peer_tasks(self: &Rc<Self>, inboxes: PeerInboxes) {
        for (_, inbox) in inboxes.requests_from {
            glommio::spawn_local(serve_peer(self.clone(), inbox)).detach();
        }
        for (_, inbox) in inboxes.responses_from {
            glommio::spawn_local(collect_responses(self.clone(), inbox)).detach();
        }
    }
}

fn decode_forwarded(batch: &[u8]) -> Result<Vec<Op>, RequestError> {
    let mut ops = Vec::new();
    let mut cursor = Cursor::new(batch);
    while !cursor.is_empty() {
        request::decode_request(&mut cursor, &FORWARDED_LIMITS, &mut ops)?;
    }
    Ok(ops)
}

/// Serves one peer's requests in arrival order. Decisions are applied at once; a
/// batch runs in place while no key is locked (it cannot suspend then), else in
/// its own task, like every prepare — so nothing here ever waits for a key and a
/// decision is never stuck behind a request waiting for it.
async fn serve_peer(shard: Rc<Shard>, inbox: ConnectedReceiver<ShardRequest>) {
    while let Some(request) = inbox.recv().await {
        match request {
            ShardRequest::Decide {
                from,
                ticket,
                txn,
                commit,
            } => {
                shard.decide(txn, commit);
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let vote = shard
                        .settle()
                        .await
                        .map_err(|p| RequestError::new(ErrorCode::IoErr, p.to_string()));
                    respond(&shard, from, ticket, BatchResults::default(), vote).await
                })
                .detach();
            }
            ShardRequest::Batch {
                from,
                ticket,
                batch,
            } if shard.locks.is_idle() => answer_batch(&shard, from, ticket, batch).await,
            ShardRequest::Batch {
                from,
                ticket,
                batch,
            } => {
                let shard = shard.clone();
                glommio::spawn_local(
                    async move { answer_batch(&shard, from, ticket, batch).await },
                )
                .detach();
            }
            ShardRequest::Prepare {
                from,
                ticket,
                txn,
                batch,
            } => {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    answer_prepare(&shard, from, ticket, txn, batch).await
                })
                .detach();
            }
        }
    }
}

async fn answer_batch(shard: &Shard, from: ShardId, ticket: Ticket, batch: Vec<u8>) {
    let results = shard.execute_batch(&batch).await;
    respond(shard, from, ticket, results, Ok(())).await;
}

async fn answer_prepare(shard: &Shard, from: ShardId, ticket: Ticket, txn: TxnId, batch: Vec<u8>) {
    let vote = match decode_forwarded(&batch) {
        Ok(ops) => shard.prepare(txn, &ops, &batch).await,
        Err(e) => Err(e),
    };
    match vote {
        Ok(results) => respond(shard, from, ticket, results, Ok(())).await,
        Err(no) => respond(shard, from, ticket, BatchResults::default(), Err(no)).await,
    }
}

async fn respond(
    shard: &Shard,
    to: ShardId,
    ticket: Ticket,
    results: BatchResults,
    vote: Result<(), RequestError>,
) {
    let channel = shard.responses_to[to.0]
        .as_ref()
        .expect("every peer has a response channel");
    let response = ShardResponse {
        ticket,
        reply: Reply { results, vote },
    };
    // A peer that is gone has nobody waiting for the answer.
    let _ = channel.send(response).await;
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

/// A key a prepared batch holds, as the batch left it (for its PREPARE in a
/// snapshot): its current value and version, or a deletion if it is absent.
fn tentative_effect(table: &Table, key: &[u8]) -> OwnedEffect {
    match table.prior(key).state() {
        Some(entry) => OwnedEffect::Put {
            key: Box::from(key),
            version: entry.version(),
            value: entry.value().into(),
        },
        None => OwnedEffect::Del {
            key: Box::from(key),
        },
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
        let stats = TableStats::from_values([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, u64::MAX]);
        let mut element = Vec::new();
        write_stats_element(&mut element, &stats);
        assert_eq!(read_stats_element(&element), Some(stats));
        assert_eq!(read_stats_element(&[0x90]), None);
    }
}
