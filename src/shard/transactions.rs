//! What a shard's request path needs from the transaction layer above it.
//!
//! `txn` owns ATOMIC batches — key locks, undo, two-phase commit — and sits
//! above the shard, so the shard cannot name its types. A shard is built with
//! the layer as a [`Transactions`] trait object (`txn::Participant`) and calls
//! it where a request meets a batch: a request for a key a batch holds or
//! awaits waits for its turn, a single-shard ATOMIC runs as one unit, and a
//! peer's `Prepare` and `Commit`/`Abort` are the participant's to run. While no
//! batch holds or awaits a key, a request costs one [`Transactions::is_idle`].

use super::Shard;
use crate::ids::TxnId;
use crate::proto::{BatchResults, Op, RequestError};
use std::any::Any;
use std::future::Future;
use std::pin::Pin;

/// A future of the transaction layer, boxed because the shard holds the layer
/// as a trait object. Executor-local, like everything a shard owns.
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// A participant's yes vote on a cross-shard batch: its share's results, and
/// the log position its PREPARE record is safe at (None without a log). The
/// vote is given before that record is safe; the coordinator waits for it.
pub type Vote = (BatchResults, Option<u64>);

/// The transaction layer as the shard's request path sees it.
pub trait Transactions: Any {
    /// True while no ATOMIC batch holds or awaits a key (the normal case): a
    /// request then runs at once, without taking a turn.
    fn is_idle(&self) -> bool;

    /// Resolves when the caller has its turn on `keys` (distinct); the caller
    /// runs at once and ends the turn with [`Transactions::pass`].
    fn acquire<'a>(&'a self, keys: &'a [&'a [u8]]) -> LocalFuture<'a, ()>;

    /// Ends a turn taken with [`Transactions::acquire`].
    fn pass(&self, keys: &[&[u8]]);

    /// Runs an ATOMIC batch whose keys are all on `shard` (`body`, leaf
    /// requests) as one unit into one result slot of `out`; returns whether it
    /// appended to the log.
    fn run_atomic<'a>(
        &'a self,
        shard: &'a Shard,
        body: &'a [Op],
        buf: &'a [u8],
        out: &'a mut BatchResults,
    ) -> LocalFuture<'a, bool>;

    /// `Prepare` of a cross-shard batch on `shard`: runs its share `ops` with
    /// undo at the coordinator's clock reading `now_ms` (every share of a
    /// batch judges expiry at the same instant), holds their keys, logs the
    /// PREPARE and votes — the share's results and where the record will be
    /// safe, or the error.
    fn prepare<'a>(
        &'a self,
        shard: &'a Shard,
        txn: TxnId,
        ops: &'a [Op],
        buf: &'a [u8],
        now_ms: u64,
    ) -> LocalFuture<'a, Result<Vote, RequestError>>;

    /// `Commit` or `Abort` of a batch prepared on `shard`; never waits.
    fn decide(&self, shard: &Shard, txn: TxnId, commit: bool);

    /// The layer as its own type, for the layer itself (`txn::Participant::of`).
    fn as_any(&self) -> &dyn Any;
}
