//! ATOMIC batches: `[3, [R…]]` runs R as one strictly serializable unit, even
//! when its keys live on several shards. docs/transactions.md is the long form.
//!
//! # Guarantees
//!
//! - **All or nothing.** If any request of the batch fails — a PUTV whose version
//!   does not match, a write over the memory limit — nothing of the batch is
//!   applied and the batch answers one element `[-9, CODE, message naming the
//!   key]` (CONFLICT or OOM). Otherwise it answers its requests' results,
//!   flattened in order; a GET in the batch sees the batch's earlier writes.
//! - **Strictly serializable.** Once any reader has seen an effect of a batch,
//!   every later read, on any connection and any shard, sees all of it; no
//!   reader ever sees part of a batch. A plain GET of a key held by an undecided
//!   batch waits for the decision instead of reading around it.
//! - **No deadlock, no livelock, no starvation** (see *Why it cannot deadlock*).
//!
//! # Two paths
//!
//! **One shard** (every key of the batch routes to the same shard): the batch is
//! routed like any single-key request, to its owner, in order with the
//! connection's other requests. The owner waits for its turn on the batch's keys
//! ([`locks`]), runs the requests with an undo log ([`unit::run_unit`]) without
//! yielding, and rolls back on failure. No cross-core message beyond the one any
//! request to that owner takes; none at all when the owner is the connection's
//! shard.
//!
//! **Several shards**: two-phase commit, coordinated by the connection's shard
//! ([`coordinator`]). Within a round the batch is a barrier: requests before it
//! complete first, requests after it start after it is decided.
//!
//! 1. `Prepare` — to each participant in ascending [`ShardId`](crate::ids::ShardId) order, one at a
//!    time: the participant waits for its turn on its keys, runs its share with
//!    undo, and if that succeeded *holds* the keys; it answers with its `Vote`:
//!    yes with its share's results, or no with the error.
//! 2. `Commit` — when every participant voted yes: each drops its undo log and
//!    releases its keys. The batch's reply is the participants' results merged
//!    in request order.
//!    `Abort` — at the first no vote: each participant that voted yes rolls back
//!    and releases; later participants are never asked. The reply is the error.
//!
//! While a participant holds a key, every request for it — a plain GET, a SET,
//! another batch — queues behind it. The tentative writes are in the table but
//! nobody can read them: they become visible, per key, only when the key is
//! released after Commit, by which time every participant has voted yes.
//!
//! # Why it cannot deadlock
//!
//! A coordinator asks participants in ascending shard order and does not ask the
//! next before the previous holds its keys, so a batch waiting on shard s holds
//! keys only on shards below s. Inside a shard, waiters queue in one arrival order
//! on all their keys ([`locks`]). So a batch waits only for batches that hold keys
//! on its shard (and wait only on higher shards) or that queued earlier on it; by
//! induction from the highest shard down, every waiter is eventually granted.
//! Batches never abort because of contention, only because of their data, so
//! nothing retries forever (no livelock), and queues are FIFO (no starvation).
//!
//! `Commit`/`Abort` messages are handled the moment they arrive and never wait,
//! and a forwarded batch that has to wait for a key runs in its own task, so a
//! decision is never stuck behind requests waiting for that very decision.
//!
//! # The log step
//!
//! With the log engine, [`participant::Participant::prepare`] appends a PREPARE
//! record and votes at once; it confirms on a second ticket once the PREPARE is
//! safe, so the participants' syncs overlap. The coordinator waits for every
//! confirmation, then appends COMMIT and makes it safe before telling anyone
//! (the commit point); each participant
//! appends DECIDE when told and confirms once it is safe. Recovery resolves a
//! PREPARE without DECIDE by the coordinator's COMMIT, so a crash at any
//! instant leaves each batch all or nothing (docs/storage.md). The coordinator
//! keeps the COMMIT (compaction carries it) until every participant's DECIDE is
//! known safe; one that fails to log it never confirms, and the COMMIT stays
//! until the restart resolves it.

pub mod coordinator;
pub mod locks;
pub mod participant;
pub mod undo;
pub mod unit;

pub use crate::ids::TxnId;
