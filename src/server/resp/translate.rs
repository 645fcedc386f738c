//! Store commands → the requests of the msgpack model (`proto::resp::requests`).
//!
//! - A *plain* command maps onto requests directly and needs nothing read
//!   first: GET → GET, SET → SET, SET NX and SETNX → PUTV at version 0,
//!   INCR/DECR/INCRBY/DECRBY → INCRBY, INCRBYFLOAT → INCRBYFLOAT and APPEND →
//!   APPEND (the table computes the new value), MGET, MSET, MSETNX, DEL, EXISTS → one ATOMIC batch
//!   (atomic across shards). Expiry: SET EX/PX and SETEX/PSETEX → SET with a
//!   TTL, SET EXAT/PXAT → SET with a deadline, SET KEEPTTL → SET keeping the
//!   deadline, EXPIRE/PEXPIRE → EXPIRE, EXPIREAT/PEXPIREAT → EXPIREAT,
//!   TTL/PTTL → TTL, EXPIRETIME/PEXPIRETIME → EXPIRETIME, PERSIST → PERSIST,
//!   GETEX → an ATOMIC batch of GET and the deadline change.
//! - A *read-modify-write* command (GETSET, GETDEL, SET XX/GET, SET NX with
//!   a TTL or deadline, and inside
//!   MULTI also INCR*, APPEND and every conditional write) needs
//!   the key's value first:
//!   it is computed here ([`apply_rmw`]) from the values and versions a read
//!   returned, and written back in an ATOMIC batch that CHECKs those versions
//!   (`server::resp::exec` retries when a CHECK fails). What it writes
//!   treats the deadline as Redis does: SET and GETSET clear it (or set
//!   SET's own), INCR*, APPEND keep it.

use super::render::Render;
use super::reply::Reply;
use crate::proto::reply::write_bin;
use crate::proto::resp::command::{
    Command, Deadline, GetExChange, SetCondition, SetExpiry, NOT_AN_INTEGER,
};
use crate::proto::resp::requests;
use crate::proto::resp::value::{format_f64, parse_f64, Stored, WrongType, WRONGTYPE};
use crate::table::expiry::wall_clock_ms;
use std::collections::HashMap;

/// Whether the command must read its keys before it can write.
pub fn is_rmw(command: &Command, in_multi: bool) -> bool {
    match command {
        Command::GetSet(..) | Command::GetDel(..) => true,
        // INCRBY, INCRBYFLOAT and APPEND run in the table; inside MULTI they
        // are computed here, so that later commands of the block see them.
        Command::IncrBy(..) | Command::IncrByFloat(..) | Command::Append(..) => in_multi,
        // SET NX with a TTL has no single request (PUTV clears the deadline):
        // it CHECKs that the key is absent (version 0) and writes.
        Command::Set {
            condition,
            get,
            expiry,
            ..
        } => {
            *get || *condition == SetCondition::IfPresent
                || (*condition == SetCondition::IfAbsent
                    && (in_multi || matches!(expiry, SetExpiry::Expire(_))))
        }
        Command::SetNx(..) | Command::MSetNx(..) => in_multi,
        _ => false,
    }
}

/// The keys a read-modify-write command reads.
pub fn rmw_keys<'a>(command: &Command<'a>, keys: &mut Vec<&'a [u8]>) {
    match command {
        Command::IncrBy(key, _)
        | Command::IncrByFloat(key, _)
        | Command::Append(key, _)
        | Command::GetSet(key, _)
        | Command::GetDel(key)
        | Command::SetNx(key, _)
        | Command::Set { key, .. } => keys.push(key),
        Command::MSetNx(pairs) => keys.extend(pairs.iter().map(|(key, _)| *key)),
        _ => {}
    }
}

/// Whether the command runs on the store without reading first (false for
/// connection commands too).
pub fn is_plain(command: &Command) -> bool {
    matches!(
        command,
        Command::Get(_)
            | Command::Set { .. }
            | Command::SetNx(..)
            | Command::MGet(_)
            | Command::MSet(_)
            | Command::MSetNx(_)
            | Command::Del(_)
            | Command::Exists(_)
            | Command::Type(_)
            | Command::StrLen(_)
            | Command::DbSize
            | Command::Info(_)
            | Command::IncrBy(..)
            | Command::IncrByFloat(..)
            | Command::Append(..)
            | Command::Expire(..)
            | Command::Ttl(..)
            | Command::ExpireTime(..)
            | Command::Persist(_)
            | Command::GetEx(..)
    )
}

/// Writes a plain command as ONE request (possibly an ATOMIC batch) and says
/// how to answer it.
pub fn write_plain(command: &Command, buf: &mut Vec<u8>) -> Render {
    match command {
        Command::Get(key) => {
            requests::get(buf, key);
            Render::Get
        }
        Command::Type(key) => {
            requests::get(buf, key);
            Render::Type
        }
        Command::StrLen(key) => {
            requests::get(buf, key);
            Render::StrLen
        }
        Command::Set {
            key,
            value,
            condition: SetCondition::IfAbsent,
            ..
        } => {
            requests::put_versioned(buf, key, value, 0);
            Render::SetIfAbsent
        }
        Command::Set {
            key, value, expiry, ..
        } => {
            write_set(buf, key, value, *expiry);
            Render::Ok
        }
        Command::SetNx(key, value) => {
            requests::put_versioned(buf, key, value, 0);
            Render::SetNx
        }
        Command::MGet(keys) => {
            atomic_of(buf, keys, requests::get);
            Render::MGet(keys.len())
        }
        Command::Exists(keys) => {
            atomic_of(buf, keys, requests::get);
            Render::Exists(keys.len())
        }
        Command::Del(keys) => {
            atomic_of(buf, keys, requests::remove);
            Render::Removed(keys.len())
        }
        Command::MSet(pairs) => {
            requests::atomic(buf, pairs.len() as u32);
            pairs.iter().for_each(|(k, v)| requests::set(buf, k, v));
            Render::Ok
        }
        Command::MSetNx(pairs) => {
            requests::atomic(buf, pairs.len() as u32);
            pairs
                .iter()
                .for_each(|(k, v)| requests::put_versioned(buf, k, v, 0));
            Render::MSetNx
        }
        Command::IncrBy(key, delta) => {
            requests::incr_by(buf, key, *delta);
            Render::Integer
        }
        Command::Append(key, suffix) => {
            requests::append(buf, key, suffix);
            Render::Length
        }
        Command::IncrByFloat(key, delta) => {
            requests::incr_by_float(buf, key, *delta);
            Render::Get
        }
        Command::DbSize => {
            requests::stats(buf);
            Render::DbSize
        }
        Command::Info(sections) => {
            requests::stats(buf);
            let lower = sections
                .iter()
                .map(|s| String::from_utf8_lossy(s).to_lowercase());
            Render::Info(lower.collect())
        }
        Command::Expire(key, deadline) => {
            write_expire(buf, key, *deadline);
            Render::Flag
        }
        Command::Persist(key) => {
            requests::persist(buf, key);
            Render::Flag
        }
        Command::Ttl(key, unit) => {
            requests::ttl(buf, key);
            Render::Ttl(*unit)
        }
        Command::ExpireTime(key, unit) => {
            requests::expire_time(buf, key);
            Render::ExpireTime(*unit)
        }
        Command::GetEx(key, None) => {
            requests::get(buf, key);
            Render::Get
        }
        Command::GetEx(key, Some(change)) => {
            requests::atomic(buf, 2);
            requests::get(buf, key);
            match change {
                GetExChange::Persist => requests::persist(buf, key),
                GetExChange::Expire(deadline) => write_expire(buf, key, *deadline),
            }
            Render::GetEx
        }
        other => unreachable!("not a plain command: {other:?}"),
    }
}

/// The SET request for a SET's deadline option.
fn write_set(buf: &mut Vec<u8>, key: &[u8], value: &[u8], expiry: SetExpiry) {
    match expiry {
        SetExpiry::Clear => requests::set(buf, key, value),
        SetExpiry::Keep => requests::set_keep_ttl(buf, key, value),
        SetExpiry::Expire(Deadline::In(ttl_ms)) => requests::set_with_ttl(buf, key, value, ttl_ms),
        SetExpiry::Expire(Deadline::At(unix_ms)) => {
            requests::set_with_deadline(buf, key, value, unix_ms)
        }
    }
}

fn write_expire(buf: &mut Vec<u8>, key: &[u8], deadline: Deadline) {
    match deadline {
        Deadline::In(ttl_ms) => requests::expire(buf, key, ttl_ms),
        Deadline::At(unix_ms) => requests::expire_at(buf, key, unix_ms),
    }
}

/// Whether `deadline` removes the key at once (judged by this shard's clock,
/// for the overlay only: the store decides with its own reading).
fn is_due(deadline: Deadline) -> bool {
    match deadline {
        Deadline::In(ttl_ms) => ttl_ms == 0,
        Deadline::At(unix_ms) => unix_ms <= wall_clock_ms(),
    }
}

fn atomic_of(buf: &mut Vec<u8>, keys: &[&[u8]], write: fn(&mut Vec<u8>, &[u8])) {
    requests::atomic(buf, keys.len() as u32);
    keys.iter().for_each(|key| write(buf, key));
}

/// The values a unit of commands sees: what the read returned (msgpack
/// encodings), updated by the unit's own writes as they are planned.
pub type Overlay<'a> = HashMap<&'a [u8], Option<Vec<u8>>>;

/// A plain command inside MULTI changes the overlay's keys as it will
/// change the store, so that a later read-modify-write sees it.
pub fn track_plain<'a>(command: &Command<'a>, overlay: &mut Overlay<'a>) {
    let mut put = |key: &'a [u8], value: Option<&[u8]>| {
        if let Some(slot) = overlay.get_mut(key) {
            *slot = value.map(bin);
        }
    };
    match command {
        Command::Set {
            key,
            expiry: SetExpiry::Expire(deadline),
            ..
        } if is_due(*deadline) => put(key, None),
        Command::Set { key, value, .. } => put(key, Some(value)),
        Command::MSet(pairs) => pairs.iter().for_each(|(k, v)| put(k, Some(v))),
        Command::Del(keys) => keys.iter().for_each(|k| put(k, None)),
        Command::Expire(key, deadline)
        | Command::GetEx(key, Some(GetExChange::Expire(deadline)))
            if is_due(*deadline) =>
        {
            put(key, None)
        }
        _ => {}
    }
}

/// Plans a read-modify-write command against the overlay: appends its writes
/// to `writes` (requests for the ATOMIC batch), updates the overlay, and
/// writes its reply.
pub fn apply_rmw<'a>(
    command: &Command<'a>,
    overlay: &mut Overlay<'a>,
    writes: &mut Vec<u8>,
    nr_writes: &mut u32,
    reply: &mut Reply,
) {
    let current = |overlay: &Overlay<'a>, key: &[u8]| overlay.get(key).cloned().flatten();
    // Each write says what becomes of the key's deadline: INCR*, APPEND keep
    // it (as in Redis), SET applies its option, GETSET clears it.
    let mut set = |overlay: &mut Overlay<'a>, key: &'a [u8], bytes: &[u8], expiry: SetExpiry| {
        write_set(writes, key, bytes, expiry);
        *nr_writes += 1;
        let stays = !matches!(expiry, SetExpiry::Expire(deadline) if is_due(deadline));
        overlay.insert(key, stays.then(|| bin(bytes)));
    };
    match command {
        Command::IncrBy(key, by) => {
            let old = current(overlay, key);
            let n = match old.as_deref().map(|v| Stored::of(v).as_i64()) {
                None => 0,
                Some(Ok(Some(n))) => n,
                Some(Ok(None)) => return reply.error(NOT_AN_INTEGER),
                Some(Err(WrongType)) => return reply.error(WRONGTYPE),
            };
            let Some(new) = n.checked_add(*by) else {
                return reply.error("ERR increment or decrement would overflow");
            };
            set(overlay, key, new.to_string().as_bytes(), SetExpiry::Keep);
            reply.integer(new);
        }
        Command::IncrByFloat(key, by) => {
            let old = current(overlay, key);
            let mut scratch = Vec::new();
            let n = match old.as_deref().map(Stored::of) {
                None => 0.0,
                Some(Stored::Other) => return reply.error(WRONGTYPE),
                Some(stored) => {
                    let text = stored.bytes(&mut scratch).unwrap_or_default();
                    match parse_f64(text) {
                        Some(n) => n,
                        None => return reply.error("ERR value is not a valid float"),
                    }
                }
            };
            let new = n + by;
            if !new.is_finite() {
                return reply.error("ERR increment would produce NaN or Infinity");
            }
            let text = format_f64(new);
            set(overlay, key, text.as_bytes(), SetExpiry::Keep);
            reply.float_text(&text);
        }
        Command::Append(key, suffix) => {
            let old = current(overlay, key);
            let mut scratch = Vec::new();
            let mut joined = match old.as_deref().map(Stored::of) {
                None => Vec::new(),
                Some(stored) => match stored.bytes(&mut scratch) {
                    Some(bytes) => bytes.to_vec(),
                    None => return reply.error(WRONGTYPE),
                },
            };
            joined.extend_from_slice(suffix);
            set(overlay, key, &joined, SetExpiry::Keep);
            reply.integer(joined.len() as i64);
        }
        Command::GetSet(key, value) | Command::Set { key, value, .. } => {
            let (condition, get, expiry) = match command {
                Command::Set {
                    condition,
                    get,
                    expiry,
                    ..
                } => (*condition, *get, *expiry),
                _ => (SetCondition::Always, true, SetExpiry::Clear),
            };
            let old = current(overlay, key);
            let mut scratch = Vec::new();
            let old_bytes = match old.as_deref().map(|v| Stored::of(v).bytes(&mut scratch)) {
                Some(None) if get => return reply.error(WRONGTYPE),
                Some(bytes) => bytes.map(<[u8]>::to_vec),
                None => None,
            };
            let applies = match condition {
                SetCondition::Always => true,
                SetCondition::IfAbsent => old.is_none(),
                SetCondition::IfPresent => old.is_some(),
            };
            if applies {
                set(overlay, key, value, expiry);
            }
            match (get, old_bytes) {
                (true, Some(bytes)) => reply.bulk(&bytes),
                (true, None) => reply.null(),
                (false, _) if applies => reply.ok(),
                (false, _) => reply.null(),
            }
        }
        Command::GetDel(key) => {
            let old = current(overlay, key);
            let mut scratch = Vec::new();
            match old.as_deref().map(|v| Stored::of(v).bytes(&mut scratch)) {
                None => reply.null(),
                Some(None) => reply.error(WRONGTYPE),
                Some(Some(bytes)) => {
                    requests::del(writes, key);
                    *nr_writes += 1;
                    reply.bulk(bytes);
                    overlay.insert(key, None);
                }
            }
        }
        Command::SetNx(key, value) => {
            let absent = current(overlay, key).is_none();
            if absent {
                set(overlay, key, value, SetExpiry::Clear);
            }
            reply.integer(i64::from(absent));
        }
        Command::MSetNx(pairs) => {
            let all_absent = pairs.iter().all(|(k, _)| current(overlay, k).is_none());
            if all_absent {
                pairs
                    .iter()
                    .for_each(|(k, v)| set(overlay, k, v, SetExpiry::Clear));
            }
            reply.integer(i64::from(all_absent));
        }
        other => unreachable!("not a read-modify-write command: {other:?}"),
    }
}

/// `bytes` as the msgpack bin a RESP write stores.
fn bin(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 5);
    write_bin(&mut out, bytes);
    out
}
