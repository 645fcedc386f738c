//! Running RESP and text commands through the store's request path.
//!
//! Commands are served in order, with their replies in order, but not one
//! round each:
//! - *Plain* commands (GET, SET, MGET, …: `translate::is_plain`) are
//!   translated into one request message each and gathered into a batch; the
//!   batch runs as one [`Round`] — one hop per destination shard for all of
//!   them, as a msgpack pipeline — when a command needs the store's answer
//!   before it can go on, or at the end of what was read.
//! - Connection commands (PING, HELLO, CLIENT, CONFIG GET, …) are answered in
//!   place, their replies queued between the batch's.
//! - A *unit* — one read-modify-write command, or a MULTI block at EXEC — runs
//!   alone, after the batch before it: a read (an ATOMIC batch of GETVs, a
//!   consistent snapshot of its keys and their versions), the writes computed
//!   from it (`translate::apply_rmw`), then one ATOMIC batch that CHECKs every
//!   version read and writes. If a CHECK fails (a key was written since the
//!   read), the unit runs again from the read, at most [`MAX_UNIT_ATTEMPTS`]
//!   times. EXEC's WATCHed keys are read the same way; one that changed since
//!   WATCH makes EXEC answer null without running anything.
//!
//! Everything therefore goes through the Round: routing, forwarding, ATOMIC's
//! single-shard fast path or two-phase commit, `--fsync` settling, limits.

use super::cluster;
use super::introspection;
use super::render::{self, error_text, Render};
use super::reply::{Dialect, Reply};
use super::session::{Multi, Session};
use super::translate::{self, Overlay};
use crate::proto::request::MAX_SCAN_COUNT;
use crate::proto::resp::command::{self, ClusterCommand, Command};
use crate::proto::resp::elements::{read_slot, Outcome};
use crate::proto::resp::requests;
use crate::proto::resp::Version;
use crate::proto::{ElementRef, ErrorCode};
use crate::server::connection::ShardContext;
use crate::server::output::Output;
use crate::server::round::{ReplyPart, Round};
use futures_lite::AsyncWrite;
use std::io;
use std::ops::Range;
use std::time::Instant;

/// How often a read-modify-write unit is retried when its keys keep changing
/// under it before it gives up with an error (each attempt is two rounds).
pub const MAX_UNIT_ATTEMPTS: usize = 10_000;

/// The round and output a connection serves its commands with.
pub struct Io<'a, 'o, W> {
    pub ctx: &'a ShardContext,
    pub round: &'a mut Round,
    pub out: &'a mut Output<'o, W>,
    /// When the commands arrived (request latency metrics).
    pub read_at: Instant,
}

/// A reply waiting for the batch to run.
enum Pending {
    /// Already written, at this range of `Executor::local`.
    Local(Range<usize>),
    /// Built from message `message`'s results.
    Store {
        message: usize,
        render: Render,
        dialect: Dialect,
    },
}

/// A command's answer inside a unit.
enum Answer {
    Local(Range<usize>),
    Results(Render),
}

/// A connection's batch of plain commands, and scratch space.
#[derive(Default)]
pub struct Executor {
    /// The batch's request messages, one per plain command.
    requests: Vec<u8>,
    bodies: Vec<Range<usize>>,
    pending: Vec<Pending>,
    /// Replies written before their turn (connection commands).
    local: Vec<u8>,
}

impl Executor {
    /// Serves one command (its arguments, the name first). Returns false when
    /// the connection is to close after the replies so far (QUIT).
    pub async fn command<W: AsyncWrite + Unpin>(
        &mut self,
        argv: &[&[u8]],
        session: &mut Session,
        io: &mut Io<'_, '_, W>,
    ) -> io::Result<bool> {
        if session.multi.is_some() {
            return self.in_multi(argv, session, io).await;
        }
        let command = match command::parse(argv) {
            Ok(command) => command,
            Err(refused) => {
                self.local(session.dialect, |reply| reply.error(&refused.0));
                return Ok(true);
            }
        };
        if let Some(map) = &io.ctx.config.cluster {
            let mut keys = Vec::new();
            cluster::keys(&command, &mut keys);
            if let Err(text) = cluster::check_slot(map, &keys) {
                self.local(session.dialect, |reply| reply.error(&text));
                return Ok(true);
            }
        }
        match command {
            c if translate::is_rmw(&c, false) => {
                self.flush(io).await?;
                self.run_unit(&[c], &[], false, session, io).await?;
            }
            c if translate::is_plain(&c) => self.push_plain(&c, session.dialect),
            Command::Watch(keys) => {
                self.flush(io).await?;
                self.watch(&keys, session, io).await?;
            }
            Command::FlushDb => {
                self.flush(io).await?;
                self.flush_db(session.dialect, io).await;
            }
            Command::Keys(pattern) => {
                self.flush(io).await?;
                self.keys(pattern, session.dialect, io).await;
            }
            Command::Scan {
                cursor,
                pattern,
                count,
                type_name,
            } => {
                self.flush(io).await?;
                let scan = ScanCall {
                    cursor,
                    pattern: pattern.unwrap_or_default(),
                    count: count.unwrap_or(DEFAULT_SCAN_COUNT),
                    matches_no_type: type_name.is_some_and(|t| !t.eq_ignore_ascii_case(b"string")),
                };
                self.scan(&scan, session.dialect, io).await;
            }
            Command::Cluster(ClusterCommand::CountKeysInSlot(slot))
                if io.ctx.config.cluster.is_some() =>
            {
                self.flush(io).await?;
                self.keys_in_slot(slot, None, session.dialect, io).await;
            }
            Command::Cluster(ClusterCommand::GetKeysInSlot(slot, count))
                if io.ctx.config.cluster.is_some() =>
            {
                self.flush(io).await?;
                self.keys_in_slot(slot, Some(count), session.dialect, io)
                    .await;
            }
            Command::Multi => {
                session.multi = Some(Multi::default());
                self.local(session.dialect, |r| r.ok());
            }
            Command::Exec => self.local(session.dialect, |r| r.error("ERR EXEC without MULTI")),
            Command::Discard => {
                self.local(session.dialect, |r| r.error("ERR DISCARD without MULTI"))
            }
            Command::Quit => {
                self.local(session.dialect, |r| r.ok());
                return Ok(false);
            }
            other => {
                let mut bytes = std::mem::take(&mut self.local);
                let start = bytes.len();
                connection_command(&other, session, io.ctx, &mut bytes);
                self.pending.push(Pending::Local(start..bytes.len()));
                self.local = bytes;
            }
        }
        Ok(true)
    }

    /// Runs the batch and writes every pending reply, in order.
    pub async fn flush<W: AsyncWrite + Unpin>(&mut self, io: &mut Io<'_, '_, W>) -> io::Result<()> {
        let ran = !self.bodies.is_empty();
        if ran {
            run_round(io, &self.requests, &self.bodies).await;
        }
        for pending in self.pending.drain(..) {
            match pending {
                Pending::Local(range) => io.out.bytes().extend_from_slice(&self.local[range]),
                Pending::Store {
                    message,
                    render,
                    dialect,
                } => {
                    let mut reply = Reply::new(io.out.bytes(), dialect);
                    visit_outcomes(io.round, io.ctx, message, |outcomes| match outcomes {
                        Ok(outcomes) => render::render(&render, outcomes, &mut reply, io.ctx),
                        Err(text) => reply.error(&text),
                    });
                }
            }
            io.out.flush_if_full().await?;
        }
        if ran {
            io.round.release_results();
        }
        self.requests.clear();
        self.bodies.clear();
        self.local.clear();
        Ok(())
    }

    fn push_plain(&mut self, command: &Command, dialect: Dialect) {
        let start = self.requests.len();
        requests::message(&mut self.requests, 1);
        let render = translate::write_plain(command, &mut self.requests);
        self.bodies.push(start..self.requests.len());
        self.pending.push(Pending::Store {
            message: self.bodies.len() - 1,
            render,
            dialect,
        });
    }

    /// Writes a reply now, to be sent in its turn.
    fn local(&mut self, dialect: Dialect, write: impl FnOnce(&mut Reply)) {
        let start = self.local.len();
        write(&mut Reply::new(&mut self.local, dialect));
        self.pending.push(Pending::Local(start..self.local.len()));
    }

    /// A command inside MULTI: queued (answered QUEUED), or EXEC/DISCARD.
    async fn in_multi<W: AsyncWrite + Unpin>(
        &mut self,
        argv: &[&[u8]],
        session: &mut Session,
        io: &mut Io<'_, '_, W>,
    ) -> io::Result<bool> {
        let dialect = session.dialect;
        let multi = session.multi.as_mut().expect("called inside MULTI");
        let refusal = match command::parse(argv) {
            Err(refused) => Some(refused.0),
            Ok(Command::Exec) => {
                self.flush(io).await?;
                self.exec(session, io).await?;
                return Ok(true);
            }
            Ok(Command::Discard) => {
                session.multi = None;
                session.watched.clear();
                self.local(dialect, |r| r.ok());
                return Ok(true);
            }
            Ok(Command::Multi) => {
                self.local(dialect, |r| r.error("ERR MULTI calls can not be nested"));
                return Ok(true);
            }
            Ok(Command::Quit) => {
                self.local(dialect, |r| r.ok());
                return Ok(false);
            }
            Ok(Command::Watch(_)) => Some("ERR WATCH inside MULTI is not allowed".to_owned()),
            Ok(
                Command::DbSize
                | Command::Info(_)
                | Command::Hello { .. }
                | Command::FlushDb
                | Command::Keys(_)
                | Command::Scan { .. },
            ) => Some(
                "ERR DBSIZE, INFO, HELLO, FLUSHDB, KEYS and SCAN are not supported inside MULTI in corekv"
                    .to_owned(),
            ),
            Ok(queued) => {
                let bytes: usize = argv.iter().map(|a| a.len()).sum();
                let mut keys = Vec::new();
                cluster::keys(&queued, &mut keys);
                // On a cluster node each command must be one of this node's
                // slots (else it is refused now, and EXEC aborts); the block
                // as a whole must be one slot, which EXEC checks, as Redis
                // Cluster does.
                let slot = match &io.ctx.config.cluster {
                    Some(map) => cluster::check_slot(map, &keys),
                    None => Ok(None),
                };
                let too_big = multi.queued_bytes + bytes > io.ctx.limits.max_frame_bytes as usize;
                match slot {
                    Err(text) => Some(text),
                    Ok(_) if too_big => Some(format!(
                        "ERR the MULTI block exceeds {} bytes (--max-frame-bytes)",
                        io.ctx.limits.max_frame_bytes
                    )),
                    Ok(slot) => {
                        if let (Some(block), Some(this)) = (multi.slot, slot) {
                            multi.spans_slots |= block != this;
                        }
                        multi.slot = multi.slot.or(slot);
                        multi.queued_bytes += bytes;
                        multi.queued.push(argv.iter().map(|a| a.to_vec()).collect());
                        None
                    }
                }
            }
        };
        match refusal {
            Some(text) => {
                multi.failed = true;
                self.local(dialect, |r| r.error(&text));
            }
            None => self.local(dialect, |r| r.simple("QUEUED")),
        }
        Ok(true)
    }

    async fn exec<W: AsyncWrite + Unpin>(
        &mut self,
        session: &mut Session,
        io: &mut Io<'_, '_, W>,
    ) -> io::Result<()> {
        let multi = session.multi.take().expect("EXEC inside MULTI");
        let watched = std::mem::take(&mut session.watched);
        let watched_keys = watched.iter().map(|(key, _)| key.as_slice());
        let one_slot = !multi.spans_slots && cluster::one_slot(multi.slot, watched_keys);
        if io.ctx.config.cluster.is_some() && !one_slot {
            Reply::new(io.out.bytes(), session.dialect).error(cluster::CROSSSLOT);
            return Ok(());
        }
        if multi.failed {
            let mut reply = Reply::new(io.out.bytes(), session.dialect);
            reply.error("EXECABORT Transaction discarded because of previous errors.");
            return Ok(());
        }
        let mut commands = Vec::with_capacity(multi.queued.len());
        for argv in &multi.queued {
            let argv: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
            match command::parse(&argv) {
                Ok(command) => commands.push(command),
                Err(refused) => {
                    Reply::new(io.out.bytes(), session.dialect).error(&refused.0);
                    return Ok(());
                }
            }
        }
        self.run_unit(&commands, &watched, true, session, io).await
    }

    /// Runs a unit (module docs): read, compute, CHECK-and-write, retry.
    async fn run_unit<W: AsyncWrite + Unpin>(
        &mut self,
        commands: &[Command<'_>],
        watched: &[(Vec<u8>, u64)],
        in_multi: bool,
        session: &mut Session,
        io: &mut Io<'_, '_, W>,
    ) -> io::Result<()> {
        let mut reads: Vec<&[u8]> = watched.iter().map(|(k, _)| k.as_slice()).collect();
        for command in commands.iter().filter(|c| translate::is_rmw(c, in_multi)) {
            translate::rmw_keys(command, &mut reads);
        }
        let mut seen = std::collections::HashSet::new();
        reads.retain(|key| seen.insert(*key));
        let dialect = session.dialect;
        for _ in 0..MAX_UNIT_ATTEMPTS {
            let snapshot = match self.read_versions(&reads, io).await {
                Ok(snapshot) => snapshot,
                Err(text) => {
                    Reply::new(io.out.bytes(), dialect).error(&text);
                    return Ok(());
                }
            };
            let changed = watched.iter().any(|(key, version)| {
                let at = reads
                    .iter()
                    .position(|k| k == key)
                    .expect("watched keys are read");
                snapshot[at].1 != *version
            });
            if changed {
                Reply::new(io.out.bytes(), dialect).null_array();
                return Ok(());
            }
            let mut overlay: Overlay = reads
                .iter()
                .zip(&snapshot)
                .map(|(key, (value, _))| (*key, value.clone()))
                .collect();
            let mut writes = Vec::new();
            let mut nr_writes = 0u32;
            for (key, (_, version)) in reads.iter().zip(&snapshot) {
                requests::check(&mut writes, key, *version);
                nr_writes += 1;
            }
            let nr_checks = nr_writes;
            let mut answers = Vec::with_capacity(commands.len());
            let mut local = Vec::new();
            for command in commands {
                let start = local.len();
                if translate::is_rmw(command, in_multi) {
                    let mut reply = Reply::new(&mut local, dialect);
                    translate::apply_rmw(
                        command,
                        &mut overlay,
                        &mut writes,
                        &mut nr_writes,
                        &mut reply,
                    );
                    answers.push(Answer::Local(start..local.len()));
                } else if translate::is_plain(command) {
                    answers.push(Answer::Results(translate::write_plain(
                        command,
                        &mut writes,
                    )));
                    nr_writes += 1;
                    translate::track_plain(command, &mut overlay);
                } else {
                    connection_command(command, session, io.ctx, &mut local);
                    answers.push(Answer::Local(start..local.len()));
                }
            }
            if nr_writes == nr_checks {
                // Nothing to write: the read was the answer.
                write_answers(&answers, &local, &[], in_multi, dialect, io);
                return Ok(());
            }
            let mut message = Vec::with_capacity(writes.len() + 8);
            requests::message(&mut message, 1);
            requests::atomic(&mut message, nr_writes);
            message.extend_from_slice(&writes);
            let body = 0..message.len();
            run_round(io, &message, std::slice::from_ref(&body)).await;
            let mut retry = false;
            let (round, ctx) = (&mut *io.round, io.ctx);
            let mut out = std::mem::take(io.out.bytes());
            visit_outcomes(round, ctx, 0, |outcomes| match outcomes {
                Ok([Outcome::Error { code, .. }]) if code == ErrorCode::Conflict.as_str() => {
                    retry = true
                }
                Ok([Outcome::Error { code, message }]) => {
                    Reply::new(&mut out, dialect).error(&error_text(code, message))
                }
                Ok(outcomes) => {
                    write_answers_into(&answers, &local, outcomes, in_multi, dialect, ctx, &mut out)
                }
                Err(text) => Reply::new(&mut out, dialect).error(&text),
            });
            *io.out.bytes() = out;
            io.round.release_results();
            if !retry {
                return io.out.flush_if_full().await;
            }
            glommio::yield_if_needed().await;
        }
        Reply::new(io.out.bytes(), dialect)
            .error("ERR the keys kept changing while the command ran; it did not run, try again");
        Ok(())
    }

    /// Reads each key's value and version in one ATOMIC batch.
    async fn read_versions<W: AsyncWrite + Unpin>(
        &mut self,
        keys: &[&[u8]],
        io: &mut Io<'_, '_, W>,
    ) -> Result<Vec<(Option<Vec<u8>>, u64)>, String> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut message = Vec::new();
        requests::message(&mut message, 1);
        requests::atomic(&mut message, keys.len() as u32);
        keys.iter()
            .for_each(|k| requests::get_versioned(&mut message, k));
        let body = 0..message.len();
        run_round(io, &message, std::slice::from_ref(&body)).await;
        let mut snapshot = Err(String::from("ERR internal error: no reply to a read"));
        visit_outcomes(io.round, io.ctx, 0, |outcomes| {
            snapshot = match outcomes {
                Ok([Outcome::Error { code, message }]) => Err(error_text(code, message)),
                Ok(outcomes) => Ok(outcomes
                    .iter()
                    .map(|o| match o {
                        Outcome::Versioned(value, version) => (Some(value.to_vec()), *version),
                        _ => (None, 0),
                    })
                    .collect()),
                Err(text) => Err(text),
            };
        });
        io.round.release_results();
        snapshot
    }

    /// FLUSHDB: every shard deletes all its keys (each shard at once, not
    /// all shards as one unit).
    async fn flush_db<W: AsyncWrite + Unpin>(&mut self, dialect: Dialect, io: &mut Io<'_, '_, W>) {
        let shards: Vec<usize> = (0..io.ctx.shard.nr_shards()).collect();
        let mut failure = None;
        per_shard(
            io,
            &shards,
            |shard, buf| requests::flush(buf, shard),
            |_, outcomes| match outcomes {
                Ok([Outcome::Error { code, message }]) => failure = Some(error_text(code, message)),
                Ok(_) => {}
                Err(text) => failure = Some(text),
            },
        )
        .await;
        let mut reply = Reply::new(io.out.bytes(), dialect);
        match failure {
            Some(text) => reply.error(&text),
            None => reply.ok(),
        }
    }

    /// KEYS: scans every shard to its end, all shards in each round.
    async fn keys<W: AsyncWrite + Unpin>(
        &mut self,
        pattern: &[u8],
        dialect: Dialect,
        io: &mut Io<'_, '_, W>,
    ) {
        let mut positions: Vec<(usize, u64)> = (0..io.ctx.shard.nr_shards())
            .map(|shard| (shard, 0))
            .collect();
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut failure = None;
        while !positions.is_empty() && failure.is_none() {
            let shards: Vec<usize> = positions.iter().map(|(shard, _)| *shard).collect();
            let mut next_positions = Vec::new();
            let at = positions.clone();
            let write = |shard: usize, buf: &mut Vec<u8>| {
                let position = at.iter().find(|(s, _)| *s == shard).map_or(0, |(_, p)| *p);
                requests::scan(buf, shard, position, MAX_SCAN_COUNT, pattern)
            };
            per_shard(io, &shards, write, |shard, outcomes| match outcomes {
                Ok([Outcome::Keys(next, found)]) => {
                    keys.extend(found.iter().map(|k| k.to_vec()));
                    if *next != 0 {
                        next_positions.push((shard, *next));
                    }
                }
                Ok([Outcome::Error { code, message }]) => failure = Some(error_text(code, message)),
                Ok(other) => failure = Some(format!("ERR internal error: SCAN answered {other:?}")),
                Err(text) => failure = Some(text),
            })
            .await;
            positions = next_positions;
        }
        let mut reply = Reply::new(io.out.bytes(), dialect);
        if let Some(text) = failure {
            return reply.error(&text);
        }
        reply.array(keys.len());
        keys.iter().for_each(|key| reply.bulk(key));
    }

    /// SCAN: one step on the shard the cursor names.
    async fn scan<W: AsyncWrite + Unpin>(
        &mut self,
        call: &ScanCall<'_>,
        dialect: Dialect,
        io: &mut Io<'_, '_, W>,
    ) {
        let nr_shards = io.ctx.shard.nr_shards() as u64;
        let (shard, position) = ((call.cursor % nr_shards) as usize, call.cursor / nr_shards);
        let visit = call.count.clamp(MIN_SCAN_VISIT, u64::from(MAX_SCAN_COUNT)) as u32;
        let write =
            |shard, buf: &mut Vec<u8>| requests::scan(buf, shard, position, visit, call.pattern);
        let mut reply_bytes = Vec::new();
        let mut reply = Reply::new(&mut reply_bytes, dialect);
        per_shard(io, &[shard], write, |_, outcomes| match outcomes {
            Ok([Outcome::Keys(next, found)]) => {
                let cursor = match *next {
                    0 if (shard as u64) + 1 < nr_shards => shard as u64 + 1,
                    0 => 0,
                    next => next * nr_shards + shard as u64,
                };
                reply.array(2);
                reply.bulk(cursor.to_string().as_bytes());
                let found: &[&[u8]] = if call.matches_no_type { &[] } else { found };
                reply.array(found.len());
                found.iter().for_each(|key| reply.bulk(key));
            }
            Ok([Outcome::Error { code, message }]) => reply.error(&error_text(code, message)),
            Ok(other) => reply.error(&format!("ERR internal error: SCAN answered {other:?}")),
            Err(text) => reply.error(&text),
        })
        .await;
        io.out.bytes().extend_from_slice(&reply_bytes);
    }

    /// CLUSTER COUNTKEYSINSLOT (`limit` None) and GETKEYSINSLOT: scans the
    /// shard that holds `slot` to its end, keeping the slot's keys.
    async fn keys_in_slot<W: AsyncWrite + Unpin>(
        &mut self,
        slot: u16,
        limit: Option<u64>,
        dialect: Dialect,
        io: &mut Io<'_, '_, W>,
    ) {
        let shard = io.ctx.shard.router().slot_owner(slot).0;
        let mut position = 0;
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut failure = None;
        // Each step moves the shard's scan position on; it ends at 0.
        loop {
            let mut next_position = None;
            let write = |shard, buf: &mut Vec<u8>| {
                requests::scan(buf, shard, position, MAX_SCAN_COUNT, b"*")
            };
            per_shard(io, &[shard], write, |_, outcomes| match outcomes {
                Ok([Outcome::Keys(next, found)]) => {
                    let in_slot = found.iter().filter(|k| crate::slot::key_slot(k) == slot);
                    keys.extend(in_slot.map(|k| k.to_vec()));
                    next_position = (*next != 0).then_some(*next);
                }
                Ok([Outcome::Error { code, message }]) => failure = Some(error_text(code, message)),
                Ok(other) => failure = Some(format!("ERR internal error: SCAN answered {other:?}")),
                Err(text) => failure = Some(text),
            })
            .await;
            match (next_position, &failure) {
                (Some(next), None) => position = next,
                _ => break,
            }
        }
        let mut reply = Reply::new(io.out.bytes(), dialect);
        if let Some(text) = failure {
            return reply.error(&text);
        }
        match limit {
            None => reply.integer(keys.len() as i64),
            Some(limit) => {
                keys.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
                reply.array(keys.len());
                keys.iter().for_each(|key| reply.bulk(key));
            }
        }
    }

    /// WATCH: remembers each key's version now.
    async fn watch<W: AsyncWrite + Unpin>(
        &mut self,
        keys: &[&[u8]],
        session: &mut Session,
        io: &mut Io<'_, '_, W>,
    ) -> io::Result<()> {
        let mut reply_bytes = Vec::new();
        let mut reply = Reply::new(&mut reply_bytes, session.dialect);
        match self.read_versions(keys, io).await {
            Ok(snapshot) => {
                for (key, (_, version)) in keys.iter().zip(snapshot) {
                    session.watch(key, version);
                }
                reply.ok();
            }
            Err(text) => reply.error(&text),
        }
        io.out.bytes().extend_from_slice(&reply_bytes);
        Ok(())
    }
}

/// SCAN's COUNT when none is given (Redis's).
const DEFAULT_SCAN_COUNT: u64 = 10;
/// Table buckets a SCAN looks at, at least, whatever its COUNT: the keys of
/// a step come back in one reply, so few large steps cost less than many
/// small round trips.
const MIN_SCAN_VISIT: u64 = 1000;

/// A SCAN's arguments.
struct ScanCall<'a> {
    cursor: u64,
    pattern: &'a [u8],
    count: u64,
    /// A TYPE other than `string` was asked for: corekv holds only strings.
    matches_no_type: bool,
}

/// Runs one request per shard in `shards` (one message each, `write` writes
/// it) as one round, and hands each shard's result elements to `visit`.
async fn per_shard<W>(
    io: &mut Io<'_, '_, W>,
    shards: &[usize],
    write: impl Fn(usize, &mut Vec<u8>),
    mut visit: impl FnMut(usize, Result<&[Outcome<'_>], String>),
) {
    let mut buf = Vec::new();
    let mut bodies = Vec::with_capacity(shards.len());
    for &shard in shards {
        let start = buf.len();
        requests::message(&mut buf, 1);
        write(shard, &mut buf);
        bodies.push(start..buf.len());
    }
    run_round(io, &buf, &bodies).await;
    for (m, &shard) in shards.iter().enumerate() {
        visit_outcomes(io.round, io.ctx, m, |outcomes| visit(shard, outcomes));
    }
    io.round.release_results();
}

/// Runs the messages `buf[body]` as one round and records its latency.
async fn run_round<W>(io: &mut Io<'_, '_, W>, buf: &[u8], bodies: &[Range<usize>]) {
    let ctx = io.ctx;
    io.round.execute(&ctx.shard, buf, bodies).await;
    let requests = ctx.metrics.requests(ctx.shard.id());
    requests.observe(io.round.tally(), io.read_at.elapsed());
}

/// Hands message `m`'s result elements to `visit` (every message here holds
/// one request, so one slot), or the text of its refusal.
fn visit_outcomes(
    round: &mut Round,
    ctx: &ShardContext,
    m: usize,
    visit: impl FnOnce(Result<&[Outcome<'_>], String>),
) {
    let mut visit = Some(visit);
    round.visit_reply(m, &ctx.state, |part| {
        let Some(visit) = visit.take() else { return };
        let mut outcomes = Vec::new();
        let read = match part {
            ReplyPart::Refused(refusal) => {
                return visit(Err(error_text(refusal.code.as_str(), &refusal.message)))
            }
            ReplyPart::Slot(slot) => read_slot(&slot, &mut outcomes),
            ReplyPart::Built(bytes) => {
                let slot = ElementRef {
                    bytes,
                    splices: &[],
                    base: 0,
                };
                read_slot(&slot, &mut outcomes)
            }
        };
        match read {
            Ok(()) => visit(Ok(&outcomes)),
            Err(e) => visit(Err(format!("ERR internal error: {e}"))),
        }
    });
}

/// Writes a unit's replies: EXEC's array, or the one command's reply.
fn write_answers<W: AsyncWrite + Unpin>(
    answers: &[Answer],
    local: &[u8],
    outcomes: &[Outcome<'_>],
    in_multi: bool,
    dialect: Dialect,
    io: &mut Io<'_, '_, W>,
) {
    write_answers_into(
        answers,
        local,
        outcomes,
        in_multi,
        dialect,
        io.ctx,
        io.out.bytes(),
    );
}

fn write_answers_into(
    answers: &[Answer],
    local: &[u8],
    outcomes: &[Outcome<'_>],
    in_multi: bool,
    dialect: Dialect,
    ctx: &ShardContext,
    out: &mut Vec<u8>,
) {
    let mut reply = Reply::new(out, dialect);
    if in_multi {
        reply.array(answers.len());
    }
    let mut rest = outcomes;
    for answer in answers {
        match answer {
            Answer::Local(range) => reply.out.extend_from_slice(&local[range.clone()]),
            Answer::Results(render) => {
                let n = render.nr_elements().min(rest.len());
                render::render(render, &rest[..n], &mut reply, ctx);
                rest = &rest[n..];
            }
        }
    }
}

/// Answers a command about the connection or the server, into `out`.
fn connection_command(
    command: &Command,
    session: &mut Session,
    ctx: &ShardContext,
    out: &mut Vec<u8>,
) {
    if let Command::Hello {
        protocol,
        client_name,
    } = command
    {
        if let (Some(protocol), Dialect::Resp(_)) = (protocol, session.dialect) {
            let version = if *protocol == 3 {
                Version::Resp3
            } else {
                Version::Resp2
            };
            session.dialect = Dialect::Resp(version);
        }
        if let Some(name) = client_name {
            session.client_name = Some(name.to_vec());
        }
    }
    let mut reply = Reply::new(out, session.dialect);
    match command {
        Command::Ping(None) => reply.simple("PONG"),
        Command::Ping(Some(message)) | Command::Echo(message) => reply.bulk(message),
        Command::Hello { .. } => {
            let version = match session.dialect {
                Dialect::Resp(Version::Resp3) => 3,
                _ => 2,
            };
            let mode = match ctx.config.cluster {
                Some(_) => "cluster",
                None => "standalone",
            };
            introspection::hello(&mut reply, version, session.client_id, mode)
        }
        // Inside MULTI it is queued and runs at EXEC, after the watched keys
        // were checked and forgotten: it has nothing left to do there.
        Command::Unwatch => {
            session.watched.clear();
            reply.ok()
        }
        Command::Select(0) => reply.ok(),
        Command::Select(_) => reply.error("ERR DB index is out of range"),
        Command::ClientSetName(name) if name.iter().any(|b| *b <= b' ' || *b > b'~') => {
            reply.error("ERR Client names cannot contain spaces, newlines or special characters.")
        }
        Command::ClientSetName(name) => {
            session.client_name = (!name.is_empty()).then(|| name.to_vec());
            reply.ok()
        }
        Command::ClientGetName => match &session.client_name {
            Some(name) => reply.bulk(name),
            None => reply.null(),
        },
        Command::ClientId => reply.integer(session.client_id as i64),
        Command::ClientSetInfo => reply.ok(),
        Command::CommandList => introspection::command_info(&mut reply, None),
        Command::CommandCount => reply.integer(introspection::COMMANDS.len() as i64),
        Command::CommandDocs(names) => introspection::command_docs(&mut reply, names),
        Command::CommandInfo(names) => introspection::command_info(&mut reply, Some(names)),
        Command::CommandGetKeys(args) => match command::parse(args) {
            Ok(inner) => {
                let mut keys = Vec::new();
                cluster::keys(&inner, &mut keys);
                if keys.is_empty() {
                    reply.error("ERR The command has no key arguments")
                } else {
                    reply.array(keys.len());
                    keys.iter().for_each(|key| reply.bulk(key));
                }
            }
            Err(_) if introspection::is_known(args[0]) => {
                reply.error("ERR Invalid number of arguments specified for command")
            }
            Err(_) => reply.error("ERR Invalid command specified"),
        },
        Command::Cluster(sub) => cluster::answer(sub, ctx.config.cluster.as_deref(), &mut reply),
        Command::ClusterMode if ctx.config.cluster.is_some() => reply.ok(),
        Command::ClusterMode => reply.error(cluster::DISABLED),
        Command::ConfigGet(patterns) => introspection::config_get(&mut reply, ctx, patterns),
        other => reply.error(&format!(
            "ERR internal error: {other:?} is not a connection command"
        )),
    }
}
