//! Answering a store command from its result elements: how each command's
//! msgpack results ([`Outcome`]s) become its Redis reply, and how corekv's
//! error codes become Redis-style errors.

use super::introspection;
use super::reply::{Dialect, Reply};
use crate::proto::resp::command::TimeUnit;
use crate::proto::resp::elements::Outcome;
use crate::proto::resp::value::{Stored, WRONGTYPE};
use crate::proto::{ErrorCode, RequestError};
use crate::server::connection::ShardContext;

/// Redis's answer to a write over the memory limit.
pub const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

/// How a store command's reply is built from its result elements.
#[derive(Debug, Clone, PartialEq)]
pub enum Render {
    /// GET: `[-1, V]` → V as a string, `[-2]` → null.
    Get,
    /// SET, MSET: no element → OK.
    Ok,
    /// SET NX: PUTV at version 0 → OK, or null if the key exists.
    SetIfAbsent,
    /// SETNX: PUTV at version 0 → 1, or 0 if the key exists.
    SetNx,
    /// MSETNX: ATOMIC of PUTVs at version 0 → 1, or 0 if it aborted.
    MSetNx,
    /// DEL of n keys: the sum of n RM results.
    Removed(usize),
    /// EXISTS of n keys: how many of n GETs found a value.
    Exists(usize),
    /// TYPE: from one GET.
    Type,
    /// STRLEN: from one GET.
    StrLen,
    /// MGET of n keys: n GETs.
    MGet(usize),
    /// INCRBY: `[-8, n]` → n.
    Integer,
    /// APPEND: `[-4, length]` → the length.
    Length,
    /// DBSIZE: from STATS.
    DbSize,
    /// INFO: from STATS, these sections (lowercase; empty for the default).
    Info(Vec<String>),
    /// EXPIRE*, PERSIST: `[-4, 1|0]` → 1 or 0.
    Flag,
    /// TTL, PTTL: `[-8, ms|-1|-2]` → the TTL in the unit (seconds rounded).
    Ttl(TimeUnit),
    /// EXPIRETIME, PEXPIRETIME: `[-8, unix_ms|-1|-2]` → the deadline in the unit.
    ExpireTime(TimeUnit),
    /// GETEX with an option: a GET, then the deadline change's element.
    GetEx,
}

impl Render {
    /// Elements the command's requests yield inside a successful ATOMIC batch.
    pub fn nr_elements(&self) -> usize {
        match self {
            Render::Ok => 0,
            Render::Removed(n) | Render::Exists(n) | Render::MGet(n) => *n,
            Render::Get | Render::SetIfAbsent | Render::SetNx | Render::Type | Render::StrLen => 1,
            Render::Integer | Render::Length => 1,
            Render::MSetNx | Render::DbSize | Render::Info(_) => 1,
            Render::Flag | Render::Ttl(_) | Render::ExpireTime(_) => 1,
            Render::GetEx => 2,
        }
    }
}

/// Writes the reply of a command answered by `outcomes` (all of its result
/// elements). An error element answers the command, except where it is the
/// command's normal outcome (MSETNX's conflict).
pub fn render(render: &Render, outcomes: &[Outcome<'_>], reply: &mut Reply, ctx: &ShardContext) {
    if let Some(Outcome::Error { code, message }) = outcomes.iter().find(|o| is_error(o)) {
        if *render == Render::MSetNx && code == ErrorCode::Conflict.as_str() {
            return reply.integer(0);
        }
        return reply.error(&error_text(code, message));
    }
    let mut scratch = Vec::new();
    match render {
        Render::Ok => reply.ok(),
        Render::Get | Render::GetEx => match outcomes.first() {
            Some(Outcome::Found(value)) => string(value, reply, &mut scratch),
            _ => reply.null(),
        },
        Render::SetIfAbsent => match outcomes.first() {
            Some(Outcome::Done(_)) => reply.ok(),
            _ => reply.null(),
        },
        Render::SetNx => reply.integer(i64::from(matches!(
            outcomes.first(),
            Some(Outcome::Done(_))
        ))),
        Render::MSetNx => reply.integer(1),
        // The kv-store seed's text protocol answers DELETE `success`.
        Render::Removed(_) if reply.dialect == Dialect::Text => reply.ok(),
        Render::Removed(_) => {
            let removed = outcomes.iter().map(|o| match o {
                Outcome::Done(n) => *n as i64,
                _ => 0,
            });
            reply.integer(removed.sum())
        }
        Render::Exists(_) => reply.integer(
            outcomes
                .iter()
                .filter(|o| matches!(o, Outcome::Found(_)))
                .count() as i64,
        ),
        Render::Type => match outcomes.first() {
            Some(Outcome::Found(value)) => reply.simple(type_name(value)),
            _ => reply.simple("none"),
        },
        Render::StrLen => match outcomes.first() {
            Some(Outcome::Found(value)) => match Stored::of(value).bytes(&mut scratch) {
                Some(bytes) => reply.integer(bytes.len() as i64),
                None => reply.error(WRONGTYPE),
            },
            _ => reply.integer(0),
        },
        Render::MGet(n) => {
            reply.array(*n);
            for outcome in outcomes {
                match outcome {
                    // MGET answers null for a value that is not a string.
                    Outcome::Found(value) => match Stored::of(value).bytes(&mut scratch) {
                        Some(bytes) => reply.bulk(bytes),
                        None => reply.null(),
                    },
                    _ => reply.null(),
                }
            }
        }
        Render::Integer => match outcomes.first() {
            Some(Outcome::Integer(n)) => reply.integer(*n),
            other => reply.error(&format!("ERR internal error: INCRBY answered {other:?}")),
        },
        Render::Length => match outcomes.first() {
            Some(Outcome::Done(n)) => reply.integer(*n as i64),
            other => reply.error(&format!("ERR internal error: APPEND answered {other:?}")),
        },
        Render::Flag => match outcomes.first() {
            Some(Outcome::Done(n)) => reply.integer(*n as i64),
            other => reply.error(&format!("ERR internal error: EXPIRE answered {other:?}")),
        },
        Render::Ttl(unit) | Render::ExpireTime(unit) => match outcomes.first() {
            // -1 (no deadline) and -2 (no such key) stay as they are.
            Some(Outcome::Integer(n)) if *n < 0 => reply.integer(*n),
            Some(Outcome::Integer(ms)) => reply.integer(match (render, unit) {
                (_, TimeUnit::Milliseconds) => *ms,
                // Redis rounds a TTL to the nearest second, a deadline down.
                (Render::Ttl(_), TimeUnit::Seconds) => (ms + 500) / 1000,
                (_, TimeUnit::Seconds) => ms / 1000,
            }),
            other => reply.error(&format!("ERR internal error: TTL answered {other:?}")),
        },
        Render::DbSize => reply.integer(stat(outcomes, "keys") as i64),
        Render::Info(sections) => {
            let stats = match outcomes.first() {
                Some(Outcome::Stats(stats)) => stats.as_slice(),
                _ => &[],
            };
            reply.bulk(introspection::info(ctx, stats, sections).as_bytes())
        }
    }
}

/// Answers a refused message (a key over the limit, say).
pub fn render_refusal(refusal: &RequestError, reply: &mut Reply) {
    reply.error(&error_text(refusal.code.as_str(), &refusal.message));
}

/// A stored value as a string reply, or WRONGTYPE.
pub fn string(value: &[u8], reply: &mut Reply, scratch: &mut Vec<u8>) {
    match Stored::of(value).bytes(scratch) {
        Some(bytes) => reply.bulk(bytes),
        None => reply.error(WRONGTYPE),
    }
}

/// TYPE of a stored value: `string`, or `msgpack` for a value a msgpack
/// client stored that is not a string or an integer.
pub fn type_name(value: &[u8]) -> &'static str {
    match Stored::of(value) {
        Stored::Other => "msgpack",
        _ => "string",
    }
}

/// A corekv error element as a Redis error reply.
pub fn error_text(code: &str, message: &str) -> String {
    match ErrorCode::parse(code) {
        Some(ErrorCode::Oom) => OOM.to_owned(),
        Some(ErrorCode::IoErr) => format!("IOERR {message}"),
        Some(ErrorCode::Shutdown) => format!("ERR server is shutting down: {message}"),
        Some(ErrorCode::WrongType) => WRONGTYPE.to_owned(),
        Some(ErrorCode::Moved) => format!("MOVED {message}"),
        _ => format!("ERR {message}"),
    }
}

fn is_error(outcome: &Outcome<'_>) -> bool {
    matches!(outcome, Outcome::Error { .. })
}

fn stat(outcomes: &[Outcome<'_>], name: &str) -> u64 {
    match outcomes.first() {
        Some(Outcome::Stats(stats)) => stats
            .iter()
            .find(|(field, _)| field == name)
            .map_or(0, |(_, n)| *n),
        _ => 0,
    }
}
