//! The coordinating side of a cross-shard ATOMIC batch: `Prepare` each
//! participant in ascending shard order, then `Commit` all or `Abort` those that
//! voted yes, and merge the participants' results in request order.
//!
//! Runs on the shard of the connection that sent the batch, as part of that
//! connection's round; the coordinator's own shard, if it owns keys of the
//! batch, takes part through the same calls a peer's messages make.
//!
//! The COMMIT record is kept (compaction carries it forward) until every
//! participant's DECIDE record is known to be safe, its own included: until
//! then a crash can leave a participant with a PREPARE and no DECIDE, and
//! recovery completes that share only if it finds the COMMIT. A participant
//! that fails to log its decision (IOERR) or cannot be reached never confirms,
//! so its batch's COMMIT stays until the next restart, which resolves it.
//!
//! If the COMMIT itself fails on its way to disk (its write or its sync), it
//! may or may not be there: no decision is sent, every share stays prepared
//! with its keys held, and the client is answered IOERR saying the outcome is
//! in doubt. The coordinator's log is poisoned, so the server must restart,
//! and recovery then commits every share if the COMMIT is in the log and
//! aborts every share if it is not — never half.

use super::participant::{CommitFailed, Participant};
use super::TxnId;
use crate::failpoint;
use crate::ids::ShardId;
use crate::proto::{reply, BatchResults, ErrorCode, Op, RequestError};
use crate::shard::mesh::{Reply, ShardRequest, Ticket};
use crate::shard::Shard;
use crate::table::expiry::wall_clock_ms;
use std::rc::Rc;

/// Runs the batch whose leaf requests are `inner` (spans into `buf`) and writes
/// its single result slot to `out`: the flattened results, or one error element.
///
/// Phases: `Prepare` each participant in ascending shard order (each votes as
/// soon as its share is executed and its PREPARE appended); wait until every
/// remote participant's PREPARE is safe — their syncs run in parallel; log the
/// COMMIT (the commit point; the coordinator's own PREPARE is safe with it,
/// being earlier in the same log); send every participant the decision; reply.
/// The participants' confirmations that their DECIDE is safe are collected by
/// a task of their own, which then lets the COMMIT record go.
pub async fn run_cross_shard(shard: &Rc<Shard>, inner: &[Op], buf: &[u8], out: &mut BatchResults) {
    let local = Participant::of(shard);
    let txn = local.next_txn(shard.id());
    // The batch's one clock reading: every participant judges expiry at it.
    let now_ms = wall_clock_ms();
    let owners: Vec<ShardId> = inner
        .iter()
        .map(|op| shard.router().route(op.key.of(buf)))
        .collect();
    let mut participants = owners.clone();
    participants.sort_unstable();
    participants.dedup();
    let mut yes_votes: Vec<(ShardId, BatchResults)> = Vec::with_capacity(participants.len());
    let mut safe_tickets = Vec::with_capacity(participants.len());
    let mut refusal = None;
    for &participant in &participants {
        match prepare(shard, (txn, now_ms), participant, inner, &owners, buf).await {
            Ok((results, safe_ticket)) => {
                yes_votes.push((participant, results));
                safe_tickets.extend(safe_ticket);
            }
            Err(no) => {
                refusal = Some(no);
                break;
            }
        }
    }
    if let Err(no) = prepares_safe(shard, safe_tickets, refusal.is_none()).await {
        refusal = Some(no);
    }
    let scope = Some(shard.id().0);
    if refusal.is_none() {
        failpoint::hold_while_armed("txn::before_commit", scope, &txn).await;
        // The commit point: once COMMIT is safe in the coordinator's log, recovery
        // completes the batch on every participant, whatever happens next.
        match local.log_commit(shard, txn).await {
            Ok(()) => {}
            Err(CommitFailed::NotWritten(poisoned)) => {
                refusal = Some(RequestError::new(ErrorCode::IoErr, poisoned.to_string()));
            }
            Err(CommitFailed::InDoubt(poisoned)) => {
                // Neither outcome may be sent: aborting would contradict a
                // COMMIT that reached the disk, committing one that did not.
                // Every participant keeps its share prepared, its keys held,
                // until the restart reads this log and decides (the log is
                // poisoned: the server must be restarted anyway).
                shard.count_atomic(false);
                let message = format!(
                    "ATOMIC's outcome is in doubt until the server restarts: its COMMIT record \
                     may or may not have reached the disk, and its keys stay held until then; {poisoned}"
                );
                reply::write_error(&mut out.buf, ErrorCode::IoErr, &message);
                out.end_request_with(1);
                return;
            }
        }
    }
    let commit = refusal.is_none();
    if commit {
        failpoint::hold_while_armed("txn::before_decide", scope, &txn).await;
    }
    let mut decisions = Vec::with_capacity(yes_votes.len());
    for (participant, _) in &yes_votes {
        decisions.push(decide(shard, txn, *participant, commit).await);
    }
    // Every participant holds its decision (or it is in flight to it): readers
    // see the batch whole from now on, so the client may be answered. The
    // COMMIT record stays until every DECIDE is known to be safe.
    if commit {
        let shard = shard.clone();
        glommio::spawn_local(forget_commit_when_decided(shard, txn, decisions)).detach();
    }
    shard.count_atomic(commit);
    match refusal {
        Some(no) => {
            reply::write_error(&mut out.buf, no.code, &no.message);
            out.end_request_with(1);
        }
        None => merge(inner.len(), &owners, &yes_votes, out),
    }
}

/// Waits until every remote participant that voted yes has its PREPARE record
/// safe (`wanted`), or forgets their answers (the batch aborts anyway). The
/// first failure is the batch's refusal.
async fn prepares_safe(
    shard: &Shard,
    safe_tickets: Vec<Ticket>,
    wanted: bool,
) -> Result<(), RequestError> {
    let mut outcome = Ok(());
    for ticket in safe_tickets {
        if !wanted {
            shard.forget(ticket);
            continue;
        }
        if let Err(no) = shard.wait(ticket).await.vote {
            outcome = outcome.and(Err(no));
        }
    }
    outcome
}

/// Collects the participants' confirmations of a committed batch; only if
/// every DECIDE (this shard's included) is safe may the COMMIT record go.
async fn forget_commit_when_decided(shard: Rc<Shard>, txn: TxnId, decisions: Vec<Decision>) {
    let mut every_decision_safe = true;
    for decision in decisions {
        every_decision_safe &= match decision {
            Decision::Here => shard.settle().await.is_ok(),
            Decision::Sent(ticket) => shard.wait(ticket).await.vote.is_ok(),
            Decision::Undelivered => false,
        };
    }
    if every_decision_safe {
        Participant::of(&shard).forget_commit(txn);
    }
}

/// Asks one participant to prepare its share; returns its vote and, for a
/// peer, the ticket of its confirmation that the PREPARE record is safe.
async fn prepare(
    shard: &Shard,
    (txn, now_ms): (TxnId, u64),
    participant: ShardId,
    inner: &[Op],
    owners: &[ShardId],
    buf: &[u8],
) -> Result<(BatchResults, Option<Ticket>), RequestError> {
    failpoint::hold_while_armed("txn::before_prepare", Some(participant.0), &txn).await;
    let share = inner.iter().zip(owners).filter(|(_, o)| **o == participant);
    if participant == shard.id() {
        let ops: Vec<Op> = share.map(|(op, _)| *op).collect();
        // Its PREPARE is safe once the COMMIT after it in the same log is.
        let (results, _) = Participant::of(shard)
            .prepare(shard, txn, &ops, buf, now_ms)
            .await?;
        return Ok((results, None));
    }
    let mut batch = Vec::new();
    for (op, _) in share {
        batch.extend_from_slice(op.raw.of(buf));
    }
    let request = |tickets| ShardRequest::Prepare {
        from: shard.id(),
        tickets,
        txn,
        batch,
        now_ms,
    };
    match shard.send_twice(participant, request).await {
        Ok((vote_ticket, safe_ticket)) => {
            let Reply { results, vote } = shard.wait(vote_ticket).await;
            match vote {
                Ok(()) => Ok((results, Some(safe_ticket))),
                Err(no) => {
                    shard.forget(safe_ticket);
                    Err(no)
                }
            }
        }
        Err(gone) => Err(RequestError::new(
            ErrorCode::Shutdown,
            format!("ATOMIC aborted: {gone}"),
        )),
    }
}

/// Where a participant's decision went.
enum Decision {
    /// This shard, decided in place: its DECIDE is safe once its log settles.
    Here,
    /// A peer, which confirms (empty answer) once its DECIDE is safe, or answers
    /// IOERR if its log failed.
    Sent(Ticket),
    /// A peer that is gone (shutting down with the whole server): it never
    /// confirms, and recovery resolves its share from the COMMIT record.
    Undelivered,
}

/// Tells one participant the outcome.
async fn decide(shard: &Shard, txn: TxnId, participant: ShardId, commit: bool) -> Decision {
    if participant == shard.id() {
        Participant::of(shard).decide(shard, txn, commit);
        return Decision::Here;
    }
    match shard.send_decision(participant, txn, commit).await {
        Ok(ticket) => Decision::Sent(ticket),
        Err(_) => Decision::Undelivered,
    }
}

/// Writes the batch's results in request order into one slot of `out`.
fn merge(
    nr_requests: usize,
    owners: &[ShardId],
    votes: &[(ShardId, BatchResults)],
    out: &mut BatchResults,
) {
    let mut next_slot = vec![0usize; votes.len()];
    let mut next_splice = vec![0usize; votes.len()];
    let mut nr_elements = 0;
    for owner in owners.iter().take(nr_requests) {
        let v = votes
            .iter()
            .position(|(p, _)| p == owner)
            .expect("every owner voted");
        let results = &votes[v].1;
        nr_elements += results.count(next_slot[v]);
        out.push_element(results.element(next_slot[v], &mut next_splice[v]));
        next_slot[v] += 1;
    }
    out.end_request_with(nr_elements);
}
