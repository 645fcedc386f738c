//! Cross-core plumbing: two full matrices of bounded glommio shared channels
//! between shards, one carrying [`ShardRequest`]s and one carrying
//! [`ShardResponse`]s.
//!
//! Why two meshes: a shard that serves a peer's request must be able to send the
//! response even while its own request channels are full. Response channels are
//! drained by tasks that never block (they only hand the response to a waiting
//! connection), so a response send always makes progress and request traffic in
//! both directions can never deadlock.
//!
//! Why bounded: every channel holds at most [`CHANNEL_CAPACITY`] batches; a shard
//! that cannot keep up makes its peers' senders wait (back-pressure all the way
//! to the client's socket) instead of growing memory.
//!
//! Channel endpoints are created on the main thread by [`build`] and moved into
//! each executor thread, where [`MeshEnds::connect`] connects them all at once
//! (a connect waits for the peer's end to connect too).

use super::Shard;
use crate::ids::{ShardId, TxnId};
use crate::proto::{BatchResults, RequestError};
use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender};
use glommio::channels::shared_channel::{SharedReceiver, SharedSender};
use std::rc::Rc;

/// Batches in flight per ordered pair of shards, per direction.
pub const CHANNEL_CAPACITY: usize = 128;

/// Identifies one outstanding forwarded batch on the shard that sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(pub u64);

/// What one shard asks another.
#[derive(Debug)]
pub enum ShardRequest {
    /// Run these requests (the owner's share of a round) and answer with their
    /// results. The request arrays are exactly as the client encoded them,
    /// concatenated; the sender validated them and the owner decodes them again
    /// (cheap: values are skipped, not parsed).
    Batch {
        from: ShardId,
        ticket: Ticket,
        batch: Vec<u8>,
    },
    /// Phase 1 of a cross-shard ATOMIC: run this share with undo, hold its keys,
    /// and vote.
    /// Answered twice: the vote on `tickets.0` at once, then on `tickets.1`
    /// once the participant's PREPARE record is safe.
    Prepare {
        from: ShardId,
        tickets: (Ticket, Ticket),
        txn: TxnId,
        batch: Vec<u8>,
        /// The coordinator's clock reading for the whole batch (Unix ms).
        now_ms: u64,
    },
    /// Phase 2: commit (keep the writes) or abort (roll back), then release the
    /// keys — at once, never waiting. Answered (empty) once the participant's
    /// DECIDE record is safe, so the coordinator knows when its COMMIT record is
    /// no longer needed by anyone.
    Decide {
        from: ShardId,
        ticket: Ticket,
        txn: TxnId,
        commit: bool,
    },
    /// Run a job on the receiving shard's thread, when the message's turn
    /// comes in its inbox (Seastar's `submit_to`). Not answered; a job that
    /// has something to report shares a place for it with its sender. Backup
    /// uses it to reach every shard (`crate::backup`).
    Run(ShardJob),
}

/// A job another shard runs on its own thread, given its [`Shard`].
pub struct ShardJob(pub Box<JobFn>);

/// What a [`ShardJob`] runs.
pub type JobFn = dyn FnOnce(&Rc<Shard>) + Send;

impl std::fmt::Debug for ShardJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShardJob")
    }
}

/// The answer to a `Batch` or `Prepare`.
#[derive(Debug)]
pub struct ShardResponse {
    pub ticket: Ticket,
    pub reply: Reply,
}

/// Results in request order, and for `Prepare` the vote (`Err` = vote no).
#[derive(Debug)]
pub struct Reply {
    pub results: BatchResults,
    pub vote: Result<(), RequestError>,
}

/// One direction's channels as seen from one shard, before connecting.
struct Ends<T: Send> {
    to: Vec<Option<SharedSender<T>>>,
    from: Vec<Option<SharedReceiver<T>>>,
}

/// Everything one shard needs to talk to its peers, ready to move to its thread.
pub struct MeshEnds {
    requests: Ends<ShardRequest>,
    responses: Ends<ShardResponse>,
}

/// A shard's connected channels: `*_to[j]` sends to shard j (None for itself),
/// `*_from` receives from each peer.
pub struct ConnectedMesh {
    pub requests_to: Vec<Option<ConnectedSender<ShardRequest>>>,
    pub requests_from: Vec<(ShardId, ConnectedReceiver<ShardRequest>)>,
    pub responses_to: Vec<Option<ConnectedSender<ShardResponse>>>,
    pub responses_from: Vec<(ShardId, ConnectedReceiver<ShardResponse>)>,
}

/// Creates the channel matrices for `nr_shards` shards; element i goes to shard i.
pub fn build(nr_shards: usize) -> Vec<MeshEnds> {
    let requests = matrix(nr_shards);
    let responses = matrix(nr_shards);
    requests
        .into_iter()
        .zip(responses)
        .map(|(requests, responses)| MeshEnds {
            requests,
            responses,
        })
        .collect()
}

fn matrix<T: Send>(n: usize) -> Vec<Ends<T>> {
    let mut ends: Vec<Ends<T>> = (0..n)
        .map(|_| Ends {
            to: (0..n).map(|_| None).collect(),
            from: (0..n).map(|_| None).collect(),
        })
        .collect();
    for from in 0..n {
        for to in (0..n).filter(|&to| to != from) {
            let (tx, rx) = shared_channel::new_bounded(CHANNEL_CAPACITY);
            ends[from].to[to] = Some(tx);
            ends[to].from[from] = Some(rx);
        }
    }
    ends
}

impl MeshEnds {
    /// Connects every channel end; must run on the shard's own executor.
    pub async fn connect(self) -> ConnectedMesh {
        let (requests_to, requests_from) = connect_ends(self.requests);
        let (responses_to, responses_from) = connect_ends(self.responses);
        ConnectedMesh {
            requests_to: join_senders(requests_to).await,
            requests_from: join_receivers(requests_from).await,
            responses_to: join_senders(responses_to).await,
            responses_from: join_receivers(responses_from).await,
        }
    }
}

type SenderTasks<T> = Vec<Option<glommio::Task<ConnectedSender<T>>>>;
type ReceiverTasks<T> = Vec<(ShardId, glommio::Task<ConnectedReceiver<T>>)>;

/// Starts every connect as its own task so that none waits on another.
fn connect_ends<T: Send + 'static>(ends: Ends<T>) -> (SenderTasks<T>, ReceiverTasks<T>) {
    let senders = ends
        .to
        .into_iter()
        .map(|tx| tx.map(|tx| glommio::spawn_local(tx.connect())))
        .collect();
    let receivers = ends
        .from
        .into_iter()
        .enumerate()
        .filter_map(|(peer, rx)| rx.map(|rx| (ShardId(peer), glommio::spawn_local(rx.connect()))))
        .collect();
    (senders, receivers)
}

async fn join_senders<T: Send>(tasks: SenderTasks<T>) -> Vec<Option<ConnectedSender<T>>> {
    let mut senders = Vec::with_capacity(tasks.len());
    for task in tasks {
        senders.push(match task {
            Some(task) => Some(task.await),
            None => None,
        });
    }
    senders
}

async fn join_receivers<T: Send>(tasks: ReceiverTasks<T>) -> Vec<(ShardId, ConnectedReceiver<T>)> {
    let mut receivers = Vec::with_capacity(tasks.len());
    for (peer, task) in tasks {
        receivers.push((peer, task.await));
    }
    receivers
}
