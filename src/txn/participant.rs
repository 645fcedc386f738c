//! One shard's side of ATOMIC batches (the module docs of `txn` are the
//! essay): the key locks every request passes while a batch holds or awaits
//! keys, single-shard batches run as one unit, and a participant's two phases
//! of a cross-shard batch — `Prepare` (run the share with undo, hold its keys,
//! make its PREPARE record safe, vote) and `Commit`/`Abort` (log DECIDE, keep
//! or roll back, release). A shard is also the coordinator of the batches its
//! connections send: [`Participant`] numbers them and keeps each one's COMMIT
//! record until every participant has its decision safe.
//!
//! The shard sits below txn and holds its `Participant` as
//! [`Transactions`], the interface its request path calls; txn reaches the
//! shard through a few of its methods (its table, its log, its mesh) and gets
//! its own state back with [`Participant::of`].
//!
//! Compaction's snapshot is taken here ([`Participant::compaction_snapshot`]):
//! only the participant knows which keys prepared batches hold and what they
//! were before.

use super::locks::LockTable;
use super::undo::UndoLog;
use super::unit::run_unit;
use crate::entry::Entry;
use crate::ids::{ShardId, TxnId};
use crate::log::compaction::{PreparedShare, Snapshot, SnapshotEntry};
use crate::log::format;
use crate::log::merge::MergeView;
use crate::log::replay::OwnedEffect;
use crate::log::LogPoisoned;
use crate::proto::{reply, BatchResults, ErrorCode, Op, RequestError};
use crate::shard::{LocalFuture, Shard, Transactions, Vote};
use crate::table::expiry::wall_clock_ms;
use crate::table::{Effect, Table};
use hashbrown::{HashMap, HashSet};
use std::any::Any;
use std::cell::{Cell, RefCell};

/// Why a COMMIT record is not known to be safe.
#[derive(Debug, Clone)]
pub enum CommitFailed {
    /// The log was poisoned before it: the COMMIT was never written, and the
    /// batch may be aborted everywhere.
    NotWritten(LogPoisoned),
    /// It failed on its way to disk: it may or may not be there, so the
    /// batch's outcome is decided by the restart that reads the log.
    InDoubt(LogPoisoned),
}

/// A cross-shard batch this shard has voted yes for and not yet heard the
/// decision of: the keys it holds and how to undo its writes.
struct Prepared {
    keys: Vec<Box<[u8]>>,
    undo: UndoLog,
}

/// One shard's transaction state: its key locks, the batches it has prepared,
/// and, as a coordinator, its batch numbering and the COMMITs it keeps.
pub struct Participant {
    locks: LockTable,
    prepared: RefCell<HashMap<TxnId, Prepared>>,
    /// Cross-shard batches this shard committed whose participants have not all
    /// confirmed their decision yet.
    committing: RefCell<HashSet<TxnId>>,
    next_txn_seq: Cell<u64>,
}

/// The distinct keys of `ops`.
fn distinct_keys<'b>(ops: &[Op], buf: &'b [u8]) -> Vec<&'b [u8]> {
    let mut keys: Vec<&[u8]> = ops.iter().map(|op| op.key.of(buf)).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

impl Participant {
    /// A shard's transaction state, numbering the batches it coordinates from
    /// `first_txn_seq` on (above every number a previous run left in the logs).
    pub fn new(first_txn_seq: u64) -> Participant {
        Participant {
            locks: LockTable::default(),
            prepared: RefCell::new(HashMap::new()),
            committing: RefCell::new(HashSet::new()),
            next_txn_seq: Cell::new(first_txn_seq),
        }
    }

    /// The participant `shard` was built with.
    pub fn of(shard: &Shard) -> &Participant {
        shard
            .transactions()
            .as_any()
            .downcast_ref()
            .expect("every shard is built with txn's Participant (see server::ShardPlan)")
    }

    /// A fresh id for a batch the shard `coordinator` coordinates.
    pub fn next_txn(&self, coordinator: ShardId) -> TxnId {
        let seq = self.next_txn_seq.get();
        self.next_txn_seq.set(seq + 1);
        TxnId { coordinator, seq }
    }

    /// Runs an ATOMIC batch whose keys are all on `shard`, as one unit, into
    /// one result slot: its results flattened, or one error element. Its
    /// changes are logged as one BATCH record; returns whether there were any.
    pub async fn run_atomic(
        &self,
        shard: &Shard,
        body: &[Op],
        buf: &[u8],
        out: &mut BatchResults,
    ) -> bool {
        let keys = distinct_keys(body, buf);
        self.acquire_with_values(shard, &keys, body, buf).await;
        // One clock reading for the whole batch: no request of it sees a key
        // alive that another saw expired.
        let now_ms = wall_clock_ms();
        let mut results = BatchResults::default();
        let mut effects = Vec::new();
        let outcome = run_with_undo(shard, body, buf, now_ms, &mut results, &mut effects);
        shard.forget_read_values();
        shard.count_atomic(outcome.is_ok());
        self.locks.pass(&keys);
        let wrote = match outcome {
            Ok((_, computed)) => {
                let effects = with_computed(&effects, &computed);
                let nr_elements = results.counts.iter().sum();
                out.append_into_slot(results);
                out.end_request_with(nr_elements);
                !effects.is_empty() && shard.append_batch(&effects).is_some()
            }
            Err(abort) => {
                reply::write_error(&mut out.buf, abort.code, &abort.message);
                out.end_request_with(1);
                false
            }
        };
        // Keys the batch's writes evicted, whether or not it committed.
        shard.log_evictions();
        wrote
    }

    /// Takes the turn on `keys` with the values `ops` use read (disk engine):
    /// through io_uring before the turn, which must be used at once, and
    /// with a blocking read for one that changed while the batch waited.
    async fn acquire_with_values(&self, shard: &Shard, keys: &[&[u8]], ops: &[Op], buf: &[u8]) {
        shard.read_values_for(ops, buf).await;
        self.locks.acquire(keys).await;
        shard.read_changed_values(ops, buf);
    }

    /// Phase 1 of a cross-shard batch on `shard`: runs this shard's share
    /// (`ops`, leaf requests) with undo and, if it succeeded, holds its keys
    /// until [`Participant::decide`]. Returns the vote: the share's results or
    /// the error.
    pub async fn prepare(
        &self,
        shard: &Shard,
        txn: TxnId,
        ops: &[Op],
        buf: &[u8],
        now_ms: u64,
    ) -> Result<Vote, RequestError> {
        let keys = distinct_keys(ops, buf);
        self.acquire_with_values(shard, &keys, ops, buf).await;
        if now_ms < shard.table().swept_up_to() {
            self.locks.pass(&keys);
            return Err(stale_clock(now_ms));
        }
        let mut results = BatchResults::default();
        let mut effects = Vec::new();
        let ran = run_with_undo(shard, ops, buf, now_ms, &mut results, &mut effects);
        shard.forget_read_values();
        let (undo, computed) = match ran {
            Ok(done) => done,
            Err(no) => {
                self.locks.pass(&keys);
                shard.log_evictions();
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
        // The vote leaves before the PREPARE record is safe: the coordinator
        // waits for every participant's record to be safe (in parallel) before
        // it writes its COMMIT, so the syncs of the participants overlap.
        let effects = with_computed(&effects, &computed);
        let durable_at = shard.append_prepare(txn, &effects);
        shard.log_evictions();
        Ok((results, durable_at))
    }

    /// Phase 2 on `shard`: keeps (commit) or rolls back (abort) the writes of a
    /// prepared batch and releases its keys. Never waits.
    pub fn decide(&self, shard: &Shard, txn: TxnId, commit: bool) {
        let Some(prepared) = self.prepared.borrow_mut().remove(&txn) else {
            debug_assert!(
                false,
                "decision for {txn}, which this shard did not prepare"
            );
            return;
        };
        if let Some(log) = shard.log() {
            log.append(|records| format::write_decide(records, txn, commit));
        }
        if !commit {
            prepared.undo.roll_back(&mut shard.table_mut());
        }
        self.locks.release(&prepared.keys);
    }

    /// The commit point of a cross-shard batch `shard` coordinates: logs
    /// COMMIT and waits until it is safe. Only then may anyone be told. Until
    /// [`Participant::forget_commit`], compaction carries the record forward.
    pub async fn log_commit(&self, shard: &Shard, txn: TxnId) -> Result<(), CommitFailed> {
        // Kept with the memory engine too: a backup's snapshot carries it.
        self.committing.borrow_mut().insert(txn);
        let Some(log) = shard.log() else {
            return Ok(());
        };
        if let Some(poisoned) = log.poisoned() {
            // Nothing is written to a poisoned log: the COMMIT never will be.
            self.committing.borrow_mut().remove(&txn);
            return Err(CommitFailed::NotWritten(poisoned));
        }
        let end = log.append(|records| format::write_commit(records, txn));
        let safe = log.durable(end).await;
        if safe.is_err() {
            self.committing.borrow_mut().remove(&txn);
        }
        // The write or the sync failed after the COMMIT was handed to the
        // file: it may be on disk (a failed fdatasync leaves the written
        // pages in the page cache, which a restarted server reads).
        safe.map_err(CommitFailed::InDoubt)
    }

    /// Every participant has its decision safe: the COMMIT record of `txn` is
    /// needed by nobody any more.
    pub fn forget_commit(&self, txn: TxnId) {
        self.committing.borrow_mut().remove(&txn);
    }

    /// The snapshot compaction writes of `shard`'s log, taken now
    /// (synchronously: nothing runs meanwhile): the committed state of every
    /// key — for a key a prepared cross-shard batch holds, its state before the
    /// batch, from the undo log — and each prepared batch's share as the state
    /// it tentatively gave its keys, to be carried forward as a PREPARE
    /// (`log::compaction` explains why that resolves exactly as the original
    /// records would). None with the memory engine.
    pub fn compaction_snapshot(&self, shard: &Shard) -> Option<Snapshot> {
        shard.log()?;
        Some(self.snapshot(shard))
    }

    /// `shard`'s committed state as a merge of its sealed segments judges
    /// it (`log::merge`).
    pub fn merge_view<'a>(&'a self, shard: &'a Shard) -> CommittedView<'a> {
        CommittedView {
            participant: self,
            shard,
        }
    }

    /// `shard`'s state as [`Participant::compaction_snapshot`] takes it, with
    /// the memory engine too (`cut` is then 0): what a backup writes.
    pub fn snapshot(&self, shard: &Shard) -> Snapshot {
        let table = shard.table();
        let prepared = self.prepared.borrow();
        let held: HashSet<&[u8]> = prepared
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
            let mut states = Vec::new();
            for (key, before) in batch.undo.priors() {
                if let Some(entry) = before.state() {
                    entries.push(entry.clone());
                }
                // As the batch left the key: its entry, or absent.
                states.push((Box::from(key), table.prior(key).state().cloned()));
            }
            shares.push(PreparedShare { txn: *txn, states });
        }
        Snapshot {
            cut: shard.log().map_or(0, |log| log.appended()),
            entries,
            commits: self.committing.borrow().iter().copied().collect(),
            prepared: shares,
        }
    }
}

/// A shard's committed state, read one key at a time (`log::merge`): a key a
/// prepared batch holds is as the batch's undo log has it.
pub struct CommittedView<'a> {
    participant: &'a Participant,
    shard: &'a Shard,
}

impl MergeView for CommittedView<'_> {
    fn committed(&self, key: &[u8]) -> Option<Entry> {
        for batch in self.participant.prepared.borrow().values() {
            if let Some((_, before)) = batch.undo.priors().find(|(held, _)| *held == key) {
                return before.state().cloned();
            }
        }
        self.shard.table().prior(key).state().cloned()
    }

    fn is_prepared(&self, txn: TxnId) -> bool {
        self.participant.prepared.borrow().contains_key(&txn)
    }

    fn commit_needed(&self, txn: TxnId) -> bool {
        self.participant.committing.borrow().contains(&txn)
    }
}

/// The shard's request path calls these (see [`Transactions`]).
impl Transactions for Participant {
    fn is_idle(&self) -> bool {
        self.locks.is_idle()
    }

    fn acquire<'a>(&'a self, keys: &'a [&'a [u8]]) -> LocalFuture<'a, ()> {
        Box::pin(self.locks.acquire(keys))
    }

    fn pass(&self, keys: &[&[u8]]) {
        self.locks.pass(keys);
    }

    fn run_atomic<'a>(
        &'a self,
        shard: &'a Shard,
        body: &'a [Op],
        buf: &'a [u8],
        out: &'a mut BatchResults,
    ) -> LocalFuture<'a, bool> {
        Box::pin(Participant::run_atomic(self, shard, body, buf, out))
    }

    fn prepare<'a>(
        &'a self,
        shard: &'a Shard,
        txn: TxnId,
        ops: &'a [Op],
        buf: &'a [u8],
        now_ms: u64,
    ) -> LocalFuture<'a, Result<Vote, RequestError>> {
        Box::pin(Participant::prepare(self, shard, txn, ops, buf, now_ms))
    }

    fn decide(&self, shard: &Shard, txn: TxnId, commit: bool) {
        Participant::decide(self, shard, txn, commit);
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The refusal of a share that runs so long after its batch's clock reading
/// that the shard may already have removed keys the reading says are alive:
/// answering would mix expired and alive keys of one instant. Retrying the
/// batch takes a new reading.
fn stale_clock(now_ms: u64) -> RequestError {
    RequestError::new(
        ErrorCode::Conflict,
        format!(
            "ATOMIC aborted: it ran more than {} ms after its clock reading ({now_ms}), \
             and expired keys may already be gone; retry",
            crate::table::expiry::REMOVAL_GRACE_MS
        ),
    )
}

/// Runs leaf requests on `shard`'s table as a unit, judging expiry at
/// `now_ms`; on failure rolls them back. On success returns the undo log (to
/// roll back later if a cross-shard batch aborts) and the final state of the
/// keys INCRBY, INCRBYFLOAT or APPEND changed (logged after `effects`: their
/// values exist only in the table).
fn run_with_undo<'b>(
    shard: &Shard,
    ops: &[Op],
    buf: &'b [u8],
    now_ms: u64,
    results: &mut BatchResults,
    effects: &mut Vec<Effect<'b>>,
) -> Result<(UndoLog, Vec<OwnedEffect>), RequestError> {
    let mut undo = UndoLog::default();
    if let Some(poisoned) = shard.poisoned() {
        return Err(RequestError::new(ErrorCode::IoErr, poisoned.to_string()));
    }
    let mut table = shard.table_mut();
    table.set_clock(now_ms);
    let mut computed = Vec::new();
    match run_unit(
        &mut table,
        ops,
        buf,
        results,
        &mut undo,
        effects,
        &mut computed,
    ) {
        Ok(()) => {
            let finals = computed.iter().map(|key| tentative_effect(&table, key));
            Ok((undo, finals.collect()))
        }
        Err(abort) => {
            undo.roll_back(&mut table);
            Err(abort)
        }
    }
}

/// `effects` followed by the final states of computed keys.
fn with_computed<'a>(effects: &[Effect<'a>], computed: &'a [OwnedEffect]) -> Vec<Effect<'a>> {
    let finals = computed.iter().map(OwnedEffect::borrowed);
    effects.iter().cloned().chain(finals).collect()
}

/// A key a prepared batch holds, as the batch left it (for its PREPARE in a
/// snapshot): its current value and version, or a deletion if it is absent.
fn tentative_effect(table: &Table, key: &[u8]) -> OwnedEffect {
    match table.prior(key).state() {
        Some(entry) => OwnedEffect::Put {
            key: Box::from(key),
            version: entry.version(),
            value: entry.value().into(),
            deadline: entry.deadline(),
        },
        None => OwnedEffect::Del {
            key: Box::from(key),
        },
    }
}
