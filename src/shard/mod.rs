//! Shards: the per-core owners of the key space.
//!
//! A shard is one glommio executor pinned to one CPU. It alone owns its
//! [`Table`] (and, with the log engine, its log) and its end of the [`mesh`]:
//! no other thread ever touches them, so there is no lock around shard data.
//! Other shards reach a shard's keys only by sending it a [`ShardRequest`] over
//! the mesh and awaiting the answer. ATOMIC batches — key locks, undo,
//! two-phase commit — are the transaction layer's (`crate::txn`), which sits
//! above the shard; the shard holds it as [`Transactions`].
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
//! Every request runs through [`Shard::run_ops`], whether it came from a local
//! connection ([`Shard::execute_ops`]) or a peer (`run_batch`): it is the one
//! place where a request waits for a key held by an undecided ATOMIC batch.
//! While no key is held or awaited, it never suspends. Both callers then
//! settle the log before the results are answered.

pub mod mesh;
pub mod pending;
pub mod transactions;
pub mod value_cache;
pub mod values;

use crate::ids::TxnId;
use crate::log::compaction::LiveScale;
use crate::log::format;
use crate::log::pacing::Pacing;
use crate::log::{LogPoisoned, LogWriter};
use crate::proto::msgpack::Cursor;
use crate::proto::stats::write_stats_element;
use crate::proto::ErrorCode;
use crate::proto::{reply, request, BatchResults, Op, OpKind, RequestError, RequestLimits};
use crate::table::expiry::{wall_clock_ms, REMOVAL_GRACE_MS};
use crate::table::{Effect, Table, TableStats};
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};
use mesh::{ConnectedMesh, Reply, ShardJob, ShardRequest, ShardResponse, Ticket};
use pending::Pending;
use std::cell::{Cell, Ref, RefCell, RefMut};
use std::rc::Rc;
use value_cache::ValueCache;
use values::DiskReadLatency;

pub use crate::ids::{Router, ShardId};
/// A shard's STATS share, as the round reads it (`proto::stats`).
pub use crate::proto::stats::read_stats_element;
pub use transactions::{LocalFuture, Transactions, Vote};

/// Forwarded batches were validated by the sending shard; nothing is re-checked.
const FORWARDED_LIMITS: RequestLimits = RequestLimits {
    max_key_bytes: usize::MAX,
};

/// How long FLUSH waits, at most, for ATOMIC batches to release their keys:
/// [`FLUSH_MAX_WAITS`] pauses of [`FLUSH_WAIT_PAUSE`] (10 s).
const FLUSH_MAX_WAITS: usize = 10_000;
const FLUSH_WAIT_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// A message could not be delivered: the peer is shutting down.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("{0} is not accepting requests (shutting down)")]
pub struct PeerGone(pub ShardId);

/// One shard: its id, its table and log, its transaction layer, and its ends
/// of the mesh.
pub struct Shard {
    id: ShardId,
    router: Router,
    table: RefCell<Table>,
    /// None with `--engine memory`.
    log: Option<Rc<LogWriter>>,
    /// Key turns, ATOMIC batches, two-phase commit (`txn::Participant`).
    txn: Box<dyn Transactions>,
    requests_to: Vec<Option<ConnectedSender<ShardRequest>>>,
    responses_to: Vec<Option<ConnectedSender<ShardResponse>>>,
    pending: Pending,
    /// The disk engine's hot values (`value_cache`); disabled otherwise.
    value_cache: RefCell<ValueCache>,
    /// How long each value read from disk took (`values`).
    disk_read_latency: RefCell<DiskReadLatency>,
    /// Slows the writes down while a compaction falls behind (`log::pacing`).
    pacing: Pacing,
    /// What the last compaction's snapshot took on disk against the live
    /// data estimated for it ([`Shard::live_bytes`]). Zero `estimated`: no
    /// compaction known, the estimate stands.
    live_scale: Cell<LiveScale>,
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
        log: Option<Rc<LogWriter>>,
        txn: Box<dyn Transactions>,
        mesh: ConnectedMesh,
        value_cache_bytes: u64,
    ) -> (Rc<Shard>, PeerInboxes) {
        let shard = Shard {
            id,
            router,
            table: RefCell::new(table),
            log,
            txn,
            requests_to: mesh.requests_to,
            responses_to: mesh.responses_to,
            pending: Pending::default(),
            value_cache: RefCell::new(ValueCache::new(value_cache_bytes)),
            disk_read_latency: RefCell::default(),
            pacing: Pacing::default(),
            live_scale: Cell::default(),
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

    /// The shard's table, to read. Never held across an await.
    pub fn table(&self) -> Ref<'_, Table> {
        self.table.borrow()
    }

    /// The shard's table, to change (the transaction layer runs batches on
    /// it). Never held across an await.
    pub fn table_mut(&self) -> RefMut<'_, Table> {
        self.table.borrow_mut()
    }

    /// The transaction layer the shard was built with.
    pub fn transactions(&self) -> &dyn Transactions {
        &*self.txn
    }

    /// This shard's table figures, as STATS reports them.
    pub fn table_stats(&self) -> TableStats {
        let mut stats = self.table.borrow().stats();
        stats.log_syncs = self.log.as_ref().map_or(0, |log| log.nr_syncs());
        let cache = self.value_cache.borrow();
        stats.disk_cache_hits = cache.hits();
        stats.disk_cache_bytes = cache.bytes();
        stats.write_pacing_waits = self.pacing.nr_waits();
        stats.write_pacing_wait_us = self.pacing.wait_us();
        stats
    }

    /// Frees pinned values whose replies are gone (see `table::pinned`); returns
    /// the bytes freed.
    pub fn sweep_pinned_values(&self, budget: usize) -> u64 {
        self.table.borrow_mut().sweep_pinned(budget)
    }

    /// Removes up to `budget` keys whose deadline has passed (the expiry
    /// sweep, `server::expiry`) and logs each as a delete, so a restart does
    /// not bring it back. Keys an ATOMIC batch holds or awaits are waited
    /// for, as any request waits; returns how many keys were removed.
    pub async fn remove_expired(&self, budget: usize) -> usize {
        // Keys past their deadline by the grace only (see REMOVAL_GRACE_MS).
        let now_ms = wall_clock_ms().saturating_sub(REMOVAL_GRACE_MS);
        let mut keys = self.table.borrow().due_keys(now_ms, budget);
        if keys.is_empty() {
            return 0;
        }
        keys.sort_unstable();
        let keys: Vec<&[u8]> = keys.iter().map(|key| &key[..]).collect();
        let wait = !self.txn.is_idle();
        if wait {
            self.txn.acquire(&keys).await;
        }
        let removed: Vec<&[u8]> = {
            let mut table = self.table.borrow_mut();
            let mut removed = keys.clone();
            removed.retain(|key| table.remove_if_expired(key, now_ms));
            removed
        };
        match &self.log {
            Some(log) if !removed.is_empty() && self.poisoned().is_none() => {
                log.append(|records| {
                    for &key in &removed {
                        format::write_effect(records, &Effect::Del { key });
                    }
                });
            }
            _ => {}
        }
        if wait {
            self.txn.pass(&keys);
        }
        removed.len()
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
            match self.settle().await {
                Ok(()) => self.pace_writes().await,
                Err(poisoned) => out.fail_from(first_slot, ErrorCode::IoErr, &poisoned.to_string()),
            }
        }
    }

    /// The execution part of [`Shard::execute_ops`]; returns whether anything
    /// was appended to the log.
    async fn run_ops(&self, ops: &[Op], buf: &[u8], out: &mut BatchResults) -> bool {
        let mut wrote = false;
        // The time the requests run at, for expiry: read once while they run
        // back to back (a round's run takes microseconds), again after a wait.
        let mut now_ms = wall_clock_ms();
        let on_disk = self.keeps_values_on_disk();
        if on_disk {
            self.locate_written_values();
            // Every value the requests use, read together: a pipelined
            // round's reads are in flight at once.
            if self.read_values_for(ops, buf).await {
                now_ms = wall_clock_ms();
            }
        }
        let mut i = 0;
        while i < ops.len() {
            let op = &ops[i];
            if op.kind == OpKind::Atomic {
                let body = &ops[i + 1..i + 1 + op.nr_inner as usize];
                wrote |= self.txn.run_atomic(self, body, buf, out).await;
                now_ms = wall_clock_ms();
                i += 1 + body.len();
                continue;
            }
            if op.kind == OpKind::Flush {
                wrote |= self.flush_when_idle(out).await;
                i += 1;
                continue;
            }
            // A value on disk is read first: a turn on a key must be used
            // at once, with no await (`txn::locks`).
            let reads_value = on_disk && values::reads_value(op.kind);
            if reads_value && self.read_values_for(std::slice::from_ref(op), buf).await {
                now_ms = wall_clock_ms();
            }
            if op.kind == OpKind::Stats || self.txn.is_idle() {
                if reads_value {
                    // A key written over and over can change under every
                    // read through io_uring: the last one blocks, so the
                    // request always has its value.
                    self.read_changed_values(std::slice::from_ref(op), buf);
                }
                wrote |= self.execute(op, buf, now_ms, out);
            } else {
                let key = [op.key.of(buf)];
                self.txn.acquire(&key).await;
                if reads_value {
                    // The key may have changed while waiting for the turn.
                    self.read_changed_values(std::slice::from_ref(op), buf);
                }
                now_ms = wall_clock_ms();
                wrote |= self.execute(op, buf, now_ms, out);
                self.txn.pass(&key);
            }
            i += 1;
        }
        if on_disk {
            self.forget_read_values();
        }
        wrote
    }

    /// Runs one leaf request or STATS at `now_ms`, records its result slot in
    /// `out`, and appends its change to the log; returns whether it did.
    fn execute(&self, op: &Op, buf: &[u8], now_ms: u64, out: &mut BatchResults) -> bool {
        if op.kind.writes() {
            if let Some(poisoned) = self.poisoned() {
                reply::write_error(&mut out.buf, ErrorCode::IoErr, &poisoned.to_string());
                out.end_request();
                return false;
            }
        }
        if op.kind.is_read_modify_write() {
            return self.read_modify_write(op, buf, now_ms, out);
        }
        let effect = match op.kind {
            OpKind::Stats => {
                write_stats_element(&mut out.buf, &self.table_stats());
                None
            }
            _ => {
                let mut table = self.table.borrow_mut();
                table.set_clock(now_ms);
                table.apply(op, buf, out)
            }
        };
        out.end_request();
        let wrote = effect.is_some_and(|effect| self.append_effect(&effect).is_some());
        self.log_evictions() || wrote
    }

    /// Logs a delete for every key the table evicted (or removed as expired
    /// to make room) since the last call, after the records of the requests
    /// that made it; returns whether it appended anything.
    pub fn log_evictions(&self) -> bool {
        let evicted = self.table.borrow_mut().take_evicted();
        match &self.log {
            Some(log) if !evicted.is_empty() && self.poisoned().is_none() => {
                log.append(|records| {
                    for key in &evicted {
                        format::write_effect(records, &Effect::Del { key });
                    }
                });
                true
            }
            _ => false,
        }
    }

    /// INCRBY, INCRBYFLOAT and APPEND: the table computes and stores the new
    /// value; its entry is logged like a SET's. Returns whether it logged.
    fn read_modify_write(&self, op: &Op, buf: &[u8], now_ms: u64, out: &mut BatchResults) -> bool {
        let written = {
            let mut table = self.table.borrow_mut();
            table.set_clock(now_ms);
            table.read_modify_write(op, buf, &mut out.buf)
        };
        let entry = match written {
            Ok(entry) => entry,
            Err(refused) => {
                reply::write_error(&mut out.buf, refused.code, &refused.message);
                out.end_request();
                return false;
            }
        };
        out.end_request();
        let effect = Effect::Put {
            key: entry.key(),
            version: entry.version(),
            value: entry.value(),
            deadline: entry.deadline(),
        };
        let wrote = self.append_effect(&effect).is_some();
        self.log_evictions() || wrote
    }

    /// FLUSH once no ATOMIC batch holds or awaits a key: deleting a key a
    /// batch holds would undo it behind the batch's back (its undo, or its
    /// prepared share replayed at its decision, would bring the key back).
    /// Gives up with CONFLICT if batches keep holding keys.
    async fn flush_when_idle(&self, out: &mut BatchResults) -> bool {
        for _ in 0..FLUSH_MAX_WAITS {
            if self.txn.is_idle() {
                if let Some(poisoned) = self.poisoned() {
                    reply::write_error(&mut out.buf, ErrorCode::IoErr, &poisoned.to_string());
                    out.end_request();
                    return false;
                }
                return self.flush(out);
            }
            glommio::timer::sleep(FLUSH_WAIT_PAUSE).await;
        }
        let message = "FLUSH did not run: ATOMIC batches kept holding keys; try again";
        reply::write_error(&mut out.buf, ErrorCode::Conflict, message);
        out.end_request();
        false
    }

    /// FLUSH: deletes every key of the table, logged as one batch of
    /// deletions; answers `[-4, keys deleted]`. Returns whether it logged.
    fn flush(&self, out: &mut BatchResults) -> bool {
        let keys = self.table.borrow_mut().flush();
        reply::write_done(&mut out.buf, keys.len() as u64);
        out.end_request();
        match &self.log {
            Some(log) if !keys.is_empty() => {
                let effects: Vec<Effect<'_>> = keys.iter().map(|key| Effect::Del { key }).collect();
                log.append(|records| format::write_batch(records, &effects));
                true
            }
            _ => false,
        }
    }

    /// Why the log refuses writes, if it does.
    pub fn poisoned(&self) -> Option<LogPoisoned> {
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
            Some(log) => {
                let settled = log.durable(log.appended()).await;
                self.locate_written_values();
                settled
            }
            None => Ok(()),
        }
    }

    /// While a compaction is behind the writes, waits until it has written
    /// enough of its snapshot for what this shard appended (`log::pacing`);
    /// for a round that wrote, once its records are settled. Otherwise one
    /// check.
    async fn pace_writes(&self) {
        let Some(log) = &self.log else { return };
        if self.pacing.note_log_len(log.file_len()) {
            // The compactor runs in a task queue of its own
            // (`server::compactor`), which glommio would otherwise turn to
            // only when the requests' queue empties or at its preemption
            // (100 ms): a busy shard's log grew by tens of MB before a due
            // compaction began, and with it its pacing.
            glommio::executor().yield_task_queue_now().await;
        }
        if !self.pacing.is_pacing() {
            return;
        }
        let released = || log.poisoned().is_some();
        self.pacing
            .wait_for_compaction(|| log.appended(), released)
            .await;
    }

    /// The writers' pacing, which compactions pay (`log::pacing`).
    pub fn pacing(&self) -> &Pacing {
        &self.pacing
    }

    /// Counts an ATOMIC batch this shard ran or coordinated.
    pub fn count_atomic(&self, committed: bool) {
        self.table.borrow_mut().count_atomic(committed);
    }

    /// Whether the log is due for compaction: larger than `min_bytes` and more
    /// than twice the live data, and not poisoned. Returns the live data (the
    /// size of the snapshot's records for the table's keys and values).
    pub fn compaction_due(&self, min_bytes: u64) -> Option<u64> {
        let log = self.log.as_ref()?;
        let live_bytes = self.live_bytes();
        let due = crate::log::compaction::should_compact(log.file_len(), live_bytes, min_bytes);
        (due && log.poisoned().is_none()).then_some(live_bytes)
    }

    /// The live data as a compaction would write it: the size of the
    /// snapshot's records for the table's keys and values, scaled by what
    /// the last snapshot took on disk against its estimate
    /// ([`Shard::calibrate_live_bytes`]). Without the scale, a disk engine's
    /// log of values whose records leave much of each block to padding is
    /// "more than twice the live data" right after its compaction, and is
    /// compacted again and again, its writes paced all the while.
    pub fn live_bytes(&self) -> u64 {
        let estimate = self.live_estimate();
        let scale = self.live_scale.get();
        if scale.estimated == 0 {
            return estimate;
        }
        let scaled =
            u128::from(estimate) * u128::from(scale.measured) / u128::from(scale.estimated);
        u64::try_from(scaled).unwrap_or(u64::MAX).max(estimate)
    }

    /// The size of a snapshot's records for the table's keys and values.
    pub fn live_estimate(&self) -> u64 {
        let table = self.table.borrow();
        let stats = table.stats();
        crate::log::compaction::snapshot_bytes(stats.keys, table.key_bytes(), stats.value_bytes)
    }

    /// A compaction's snapshot, estimated at `scale.estimated` bytes
    /// ([`Shard::live_estimate`] when it was taken), took `scale.measured`
    /// bytes of the new file, before the records copied behind it: after the
    /// compaction, or after a restart from its hint file.
    pub fn calibrate_live_bytes(&self, scale: LiveScale) {
        if scale.estimated > 0 {
            self.live_scale.set(scale);
        }
    }

    /// How much larger than its records the live data is on disk, as last
    /// measured ([`Shard::calibrate_live_bytes`]; zero if never).
    pub fn live_scale(&self) -> LiveScale {
        self.live_scale.get()
    }

    /// The shard's log writer (None with the memory engine).
    pub fn log(&self) -> Option<&Rc<LogWriter>> {
        self.log.as_ref()
    }

    /// Runs a batch of request arrays forwarded by a peer, in order; the
    /// results are ready to be acknowledged.
    pub async fn execute_batch(&self, batch: &[u8]) -> BatchResults {
        let (results, wrote) = self.run_batch(batch).await;
        self.settled(results, wrote).await
    }

    /// The execution part of [`Shard::execute_batch`]: its results, not yet
    /// safe to acknowledge if it wrote (the bool). While no key is held it
    /// never suspends.
    async fn run_batch(&self, batch: &[u8]) -> (BatchResults, bool) {
        let mut results = BatchResults::default();
        let ops = match decode_forwarded(batch) {
            Ok(ops) => ops,
            Err(e) => {
                // The sender validated these bytes; getting here is a bug.
                debug_assert!(false, "forwarded batch failed to decode: {e}");
                tracing::error!(shard = %self.id, "forwarded batch failed to decode: {e}");
                return (results, false);
            }
        };
        let wrote = self.run_ops(&ops, batch, &mut results).await;
        (results, wrote)
    }

    /// `results`, once what they wrote is safe (IOERR in their place if the
    /// log failed).
    async fn settled(&self, mut results: BatchResults, wrote: bool) -> BatchResults {
        if wrote {
            match self.settle().await {
                Ok(()) => self.pace_writes().await,
                Err(poisoned) => results.fail_from(0, ErrorCode::IoErr, &poisoned.to_string()),
            }
        }
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

    /// Sends a request that is answered twice (a vote, then a confirmation);
    /// waits only for channel capacity. Await each answer with [`Shard::wait`].
    pub async fn send_twice(
        &self,
        to: ShardId,
        request: impl FnOnce((Ticket, Ticket)) -> ShardRequest,
    ) -> Result<(Ticket, Ticket), PeerGone> {
        let tickets = (self.pending.open(), self.pending.open());
        if self.channel_to(to).send(request(tickets)).await.is_err() {
            self.pending.cancel(tickets.0);
            self.pending.cancel(tickets.1);
            return Err(PeerGone(to));
        }
        Ok(tickets)
    }

    /// Gives up on the answer to `ticket` (it is dropped when it comes).
    pub fn forget(&self, ticket: Ticket) {
        self.pending.cancel(ticket);
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

    /// Sends a job for shard `to` to run on its thread ([`ShardRequest::Run`]);
    /// waits only for channel capacity.
    pub async fn send_job(&self, to: ShardId, job: ShardJob) -> Result<(), PeerGone> {
        let sent = self.channel_to(to).send(ShardRequest::Run(job)).await;
        sent.map_err(|_| PeerGone(to))
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
/// decision is never stuck behind a request waiting for it. The disk engine's
/// batches always run in their own task: reading a value suspends them.
async fn serve_peer(shard: Rc<Shard>, inbox: ConnectedReceiver<ShardRequest>) {
    while let Some(request) = inbox.recv().await {
        match request {
            ShardRequest::Decide {
                from,
                ticket,
                txn,
                commit,
            } => {
                shard.txn.decide(&shard, txn, commit);
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
            // The disk engine's batches may wait for value reads: never in
            // place, where they would hold up the decisions behind them.
            ShardRequest::Batch {
                from,
                ticket,
                batch,
            } if shard.txn.is_idle() && !shard.keeps_values_on_disk() => {
                // Run in place, in arrival order; wait for the log in a task
                // of its own, so the next batches run (and join the same
                // group commit) while this one's sync is in flight.
                let (results, wrote) = shard.run_batch(&batch).await;
                if wrote {
                    let shard = shard.clone();
                    glommio::spawn_local(async move {
                        let results = shard.settled(results, true).await;
                        respond(&shard, from, ticket, results, Ok(())).await
                    })
                    .detach();
                } else {
                    respond(&shard, from, ticket, results, Ok(())).await;
                }
            }
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
                tickets,
                txn,
                batch,
                now_ms,
            } => {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    answer_prepare(&shard, from, tickets, (txn, now_ms), batch).await
                })
                .detach();
            }
            ShardRequest::Run(job) => (job.0)(&shard),
        }
    }
}

async fn answer_batch(shard: &Shard, from: ShardId, ticket: Ticket, batch: Vec<u8>) {
    let results = shard.execute_batch(&batch).await;
    respond(shard, from, ticket, results, Ok(())).await;
}

/// Votes on a prepared share at once (on `tickets.0`), then answers
/// `tickets.1` once the share's PREPARE record is safe (or IOERR if the log
/// failed): the coordinator waits for the second answer of every participant
/// before its COMMIT, so the participants' syncs overlap.
async fn answer_prepare(
    shard: &Shard,
    from: ShardId,
    (vote_ticket, safe_ticket): (Ticket, Ticket),
    (txn, now_ms): (TxnId, u64),
    batch: Vec<u8>,
) {
    let vote = match decode_forwarded(&batch) {
        Ok(ops) => shard.txn.prepare(shard, txn, &ops, &batch, now_ms).await,
        Err(e) => Err(e),
    };
    let durable_at = match vote {
        Ok((results, durable_at)) => {
            respond(shard, from, vote_ticket, results, Ok(())).await;
            durable_at
        }
        Err(no) => {
            return respond(shard, from, vote_ticket, BatchResults::default(), Err(no)).await
        }
    };
    let safe = match (shard.log(), durable_at) {
        (Some(log), Some(end)) => log
            .durable(end)
            .await
            .map_err(|p| RequestError::new(ErrorCode::IoErr, p.to_string())),
        _ => Ok(()),
    };
    respond(shard, from, safe_ticket, BatchResults::default(), safe).await;
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
