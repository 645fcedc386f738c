//! Runs HTTP requests through the msgpack request path.
//!
//! Each HTTP request is translated into one request message of the typed
//! model (`proto::message`, [`encode_message`]) and served by a [`Round`]
//! exactly as if it had arrived on a msgpack connection of this shard: the
//! same decoding and validation, routing to the owning shards, ATOMIC,
//! `--fsync` settling and limits. The reply frame is written into memory and
//! read back into elements ([`decode_reply`]). Each message runs in a task of
//! its own, so a round always completes even if its HTTP request is abandoned.
//! One [`Dispatcher`] (and one `Round`'s scratch space) serves one HTTP
//! connection, whose requests hyper runs one at a time.

use crate::proto::message::{decode_reply, encode_message, Element, Request};
use crate::proto::LEN_PREFIX_BYTES;
use crate::server::connection::ShardContext;
use crate::server::output::Output;
use crate::server::round::Round;
use crate::table::TableStats;
use std::cell::Cell;
use std::collections::BTreeMap;

/// Why a message could not be run or its reply not read.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The message is larger than `--max-frame-bytes`, which a msgpack
    /// connection would also refuse.
    #[error("the request is {bytes} bytes as msgpack, over the limit of {limit} bytes (--max-frame-bytes)")]
    TooBig { bytes: u64, limit: u64 },
    /// The server wrote a reply the message model cannot read: a bug.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A STATS answer: the totals as STATS reports them, and each shard's share.
pub struct Stats {
    pub total: BTreeMap<String, u64>,
    pub shares: Vec<TableStats>,
}

/// Serves one HTTP connection's requests on its shard.
pub struct Dispatcher {
    ctx: ShardContext,
    /// Taken while a message runs, put back after (never borrowed across an await).
    round: Cell<Option<Round>>,
}

impl Dispatcher {
    pub fn new(ctx: ShardContext) -> Dispatcher {
        Dispatcher {
            ctx,
            round: Cell::new(None),
        }
    }

    pub fn ctx(&self) -> &ShardContext {
        &self.ctx
    }

    /// Runs one request message and returns its reply's elements.
    pub async fn call(&self, requests: &[Request]) -> Result<Vec<Element>, DispatchError> {
        let (round, reply) = self.run_to_completion(requests).await?;
        self.round.set(Some(round));
        reply
    }

    /// Runs STATS and returns the totals and every shard's share.
    pub async fn stats(&self) -> Result<Result<Stats, Element>, DispatchError> {
        let (round, reply) = self.run_to_completion(&[Request::Stats]).await?;
        let shares = round.stats_shares().to_vec();
        self.round.set(Some(round));
        match reply?.pop() {
            Some(Element::Stats(total)) => Ok(Ok(Stats { total, shares })),
            Some(other) => Ok(Err(other)),
            None => Err(DispatchError::Internal("STATS had no result".into())),
        }
    }

    /// Runs the message in a task of its own, which finishes even if the HTTP
    /// request is dropped meanwhile (the client went away): a round must never
    /// stop half-way, e.g. between a cross-shard batch's Prepare and Commit.
    async fn run_to_completion(
        &self,
        requests: &[Request],
    ) -> Result<(Round, Result<Vec<Element>, DispatchError>), DispatchError> {
        let message = encode_message(requests);
        let body_bytes = (message.len() - LEN_PREFIX_BYTES) as u64;
        let limit = self.ctx.limits.max_frame_bytes;
        if body_bytes > limit {
            return Err(DispatchError::TooBig {
                bytes: body_bytes,
                limit,
            });
        }
        let ctx = self.ctx.clone();
        let mut round = self.round.take().unwrap_or_else(|| {
            let cluster = self.ctx.config.cluster.clone();
            Round::new(self.ctx.limits.request, self.ctx.shard.nr_shards(), cluster)
        });
        let task = glommio::spawn_local(async move {
            let reply = run(&ctx, &mut round, &message).await;
            (round, reply)
        })
        .detach();
        task.await
            .ok_or_else(|| DispatchError::Internal("the request's task was cancelled".into()))
    }
}

/// Serves `message` (a framed request message) and decodes its reply.
async fn run(
    ctx: &ShardContext,
    round: &mut Round,
    message: &[u8],
) -> Result<Vec<Element>, DispatchError> {
    let mut sink = futures_lite::io::Cursor::new(Vec::new());
    let mut outbuf = Vec::new();
    let mut out = Output::new(&mut sink, &mut outbuf);
    let body = LEN_PREFIX_BYTES..message.len();
    let (shard, state) = (&ctx.shard, &ctx.state);
    let served = round.serve(shard, state, message, &[body], &mut out).await;
    let flushed = out.flush().await;
    served
        .and(flushed)
        .map_err(|e| DispatchError::Internal(format!("writing a reply to memory: {e}")))?;
    let reply = sink.into_inner();
    let body = reply
        .get(LEN_PREFIX_BYTES..)
        .ok_or_else(|| DispatchError::Internal("empty reply".into()))?;
    decode_reply(body).map_err(|e| DispatchError::Internal(e.to_string()))
}
