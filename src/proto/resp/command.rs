//! RESP commands: an array of arguments → a typed [`Command`], with Redis's
//! arity and syntax checks and error texts. Keys and values stay slices of the
//! receive buffer.

use super::value::{parse_f64, parse_i64};
use std::fmt::Write;

/// A SET's condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetCondition {
    Always,
    /// NX: only if absent.
    IfAbsent,
    /// XX: only if present.
    IfPresent,
}

/// When a key is to expire, as the store's requests take it: both in
/// milliseconds, at most [`MAX_EXPIRY_MS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// This many milliseconds from when the request runs (0: at once).
    In(u64),
    /// At this Unix time in milliseconds (not in the future: at once).
    At(u64),
}

/// What a SET does to the key's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetExpiry {
    /// No option: the key no longer expires (Redis's SET clears the TTL).
    Clear,
    /// KEEPTTL.
    Keep,
    /// EX, PX, EXAT, PXAT (and SETEX, PSETEX).
    Expire(Deadline),
}

/// What GETEX does to the key's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetExChange {
    Persist,
    Expire(Deadline),
}

/// The unit TTL and EXPIRETIME answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Seconds,
    Milliseconds,
}

/// CLUSTER's subcommands (Redis Cluster's, for a static cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterCommand<'a> {
    Info,
    MyId,
    KeySlot(&'a [u8]),
    Slots,
    Shards,
    Nodes,
    CountKeysInSlot(u16),
    /// The slot and the most keys to return.
    GetKeysInSlot(u16, u64),
}

/// A command of the key/value store or the connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Command<'a> {
    Ping(Option<&'a [u8]>),
    Echo(&'a [u8]),
    Hello {
        protocol: Option<i64>,
        client_name: Option<&'a [u8]>,
    },
    Select(i64),
    Quit,
    ClientSetName(&'a [u8]),
    ClientGetName,
    ClientId,
    ClientSetInfo,
    CommandList,
    CommandCount,
    CommandDocs(Vec<&'a [u8]>),
    CommandInfo(Vec<&'a [u8]>),
    /// COMMAND GETKEYS: the command whose keys are asked for, name first.
    CommandGetKeys(Vec<&'a [u8]>),
    Cluster(ClusterCommand<'a>),
    /// READONLY, READWRITE and ASKING: Redis Cluster's connection modes for
    /// replicas and slot migrations, which a static cluster has not.
    ClusterMode,
    ConfigGet(Vec<&'a [u8]>),
    Info(Vec<&'a [u8]>),
    DbSize,
    Get(&'a [u8]),
    Set {
        key: &'a [u8],
        value: &'a [u8],
        condition: SetCondition,
        get: bool,
        expiry: SetExpiry,
    },
    SetNx(&'a [u8], &'a [u8]),
    GetSet(&'a [u8], &'a [u8]),
    GetDel(&'a [u8]),
    MGet(Vec<&'a [u8]>),
    MSet(Vec<(&'a [u8], &'a [u8])>),
    MSetNx(Vec<(&'a [u8], &'a [u8])>),
    /// DEL and UNLINK.
    Del(Vec<&'a [u8]>),
    Exists(Vec<&'a [u8]>),
    Type(&'a [u8]),
    IncrBy(&'a [u8], i64),
    IncrByFloat(&'a [u8], f64),
    Append(&'a [u8], &'a [u8]),
    StrLen(&'a [u8]),
    Multi,
    Exec,
    Discard,
    Watch(Vec<&'a [u8]>),
    Unwatch,
    /// FLUSHDB and FLUSHALL (one database: the same).
    FlushDb,
    Keys(&'a [u8]),
    /// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT.
    Expire(&'a [u8], Deadline),
    /// TTL and PTTL.
    Ttl(&'a [u8], TimeUnit),
    /// EXPIRETIME and PEXPIRETIME.
    ExpireTime(&'a [u8], TimeUnit),
    Persist(&'a [u8]),
    GetEx(&'a [u8], Option<GetExChange>),
    Scan {
        cursor: u64,
        pattern: Option<&'a [u8]>,
        count: Option<u64>,
        type_name: Option<&'a [u8]>,
    },
}

/// Why a command was refused; the text is the whole error reply, code first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CommandError(pub String);

impl CommandError {
    fn new(text: impl Into<String>) -> CommandError {
        CommandError(text.into())
    }
}

pub const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
pub const SYNTAX: &str = "ERR syntax error";
/// EXPIRE's options that depend on the key's current deadline: a deadline
/// change does not change the key's version, so the CHECK that guards
/// read-modify-write commands could not tell that another client changed the
/// deadline between the read and the write.
pub const EXPIRE_CONDITIONS_NOT_SUPPORTED: &str =
    "ERR the NX, XX, GT and LT options are not supported: corekv cannot apply them atomically";

/// The largest TTL or deadline the store accepts, in milliseconds (2^53,
/// about 285,000 years); a longer one is an invalid expire time.
pub const MAX_EXPIRY_MS: u64 = 1 << 53;

/// Longest command or subcommand name recognised (longer is unknown).
const MAX_NAME_BYTES: usize = 16;

/// Parses a command from its arguments (the name first).
pub fn parse<'a>(args: &[&'a [u8]]) -> Result<Command<'a>, CommandError> {
    let Some((name, rest)) = args.split_first() else {
        return Err(CommandError::new("ERR empty command"));
    };
    let mut upper = [0u8; MAX_NAME_BYTES];
    let name_upper = uppercase(name, &mut upper);
    let arity = |min: usize, max: Option<usize>| {
        let n = args.len();
        if n < min || max.is_some_and(|max| n > max) {
            Err(wrong_arity(name))
        } else {
            Ok(())
        }
    };
    let command = match name_upper {
        b"GET" => arity(2, Some(2)).map(|_| Command::Get(rest[0]))?,
        b"SET" => arity(3, None).and_then(|_| parse_set(rest))?,
        b"SETNX" => arity(3, Some(3)).map(|_| Command::SetNx(rest[0], rest[1]))?,
        b"SETEX" | b"PSETEX" => {
            arity(4, Some(4))?;
            let (unit, command) = match name_upper {
                b"SETEX" => (Unit::Seconds, "setex"),
                _ => (Unit::Milliseconds, "psetex"),
            };
            Command::Set {
                key: rest[0],
                value: rest[2],
                condition: SetCondition::Always,
                get: false,
                expiry: SetExpiry::Expire(set_deadline(rest[1], unit, false, command)?),
            }
        }
        b"GETEX" => arity(2, None).and_then(|_| parse_getex(rest))?,
        b"EXPIRE" | b"PEXPIRE" | b"EXPIREAT" | b"PEXPIREAT" => {
            arity(3, None)?;
            parse_expire(name_upper, rest)?
        }
        b"TTL" => arity(2, Some(2)).map(|_| Command::Ttl(rest[0], TimeUnit::Seconds))?,
        b"PTTL" => arity(2, Some(2)).map(|_| Command::Ttl(rest[0], TimeUnit::Milliseconds))?,
        b"EXPIRETIME" => {
            arity(2, Some(2)).map(|_| Command::ExpireTime(rest[0], TimeUnit::Seconds))?
        }
        b"PEXPIRETIME" => {
            arity(2, Some(2)).map(|_| Command::ExpireTime(rest[0], TimeUnit::Milliseconds))?
        }
        b"PERSIST" => arity(2, Some(2)).map(|_| Command::Persist(rest[0]))?,
        b"GETSET" => arity(3, Some(3)).map(|_| Command::GetSet(rest[0], rest[1]))?,
        b"GETDEL" => arity(2, Some(2)).map(|_| Command::GetDel(rest[0]))?,
        b"MGET" => arity(2, None).map(|_| Command::MGet(rest.to_vec()))?,
        b"MSET" | b"MSETNX" => {
            if rest.is_empty() || rest.len() % 2 != 0 {
                return Err(wrong_arity(name));
            }
            let pairs = rest.chunks(2).map(|pair| (pair[0], pair[1])).collect();
            match name_upper {
                b"MSET" => Command::MSet(pairs),
                _ => Command::MSetNx(pairs),
            }
        }
        // DELETE: the text protocol's name (the kv-store seed's).
        b"DEL" | b"UNLINK" | b"DELETE" => arity(2, None).map(|_| Command::Del(rest.to_vec()))?,
        b"EXISTS" => arity(2, None).map(|_| Command::Exists(rest.to_vec()))?,
        b"TYPE" => arity(2, Some(2)).map(|_| Command::Type(rest[0]))?,
        b"INCR" => arity(2, Some(2)).map(|_| Command::IncrBy(rest[0], 1))?,
        b"DECR" => arity(2, Some(2)).map(|_| Command::IncrBy(rest[0], -1))?,
        b"INCRBY" => {
            arity(3, Some(3))?;
            Command::IncrBy(rest[0], integer(rest[1])?)
        }
        b"DECRBY" => {
            arity(3, Some(3))?;
            let by = integer(rest[1])?
                .checked_neg()
                .ok_or_else(|| CommandError::new("ERR decrement would overflow"))?;
            Command::IncrBy(rest[0], by)
        }
        b"INCRBYFLOAT" => {
            arity(3, Some(3))?;
            let by = parse_f64(rest[1])
                .ok_or_else(|| CommandError::new("ERR value is not a valid float"))?;
            Command::IncrByFloat(rest[0], by)
        }
        b"APPEND" => arity(3, Some(3)).map(|_| Command::Append(rest[0], rest[1]))?,
        b"STRLEN" => arity(2, Some(2)).map(|_| Command::StrLen(rest[0]))?,
        b"PING" => arity(1, Some(2)).map(|_| Command::Ping(rest.first().copied()))?,
        b"ECHO" => arity(2, Some(2)).map(|_| Command::Echo(rest[0]))?,
        b"HELLO" => parse_hello(rest)?,
        b"SELECT" => {
            arity(2, Some(2))?;
            Command::Select(integer(rest[0])?)
        }
        b"QUIT" => Command::Quit,
        b"CLIENT" => arity(2, None).and_then(|_| parse_client(rest))?,
        b"COMMAND" => parse_command_command(rest)?,
        b"CLUSTER" => arity(2, None).and_then(|_| parse_cluster(rest))?,
        b"READONLY" | b"READWRITE" | b"ASKING" => {
            arity(1, Some(1)).map(|_| Command::ClusterMode)?
        }
        b"CONFIG" => arity(2, None).and_then(|_| parse_config(rest))?,
        b"INFO" => Command::Info(rest.to_vec()),
        b"DBSIZE" => arity(1, Some(1)).map(|_| Command::DbSize)?,
        b"MULTI" => arity(1, Some(1)).map(|_| Command::Multi)?,
        b"EXEC" => arity(1, Some(1)).map(|_| Command::Exec)?,
        b"DISCARD" => arity(1, Some(1)).map(|_| Command::Discard)?,
        b"WATCH" => arity(2, None).map(|_| Command::Watch(rest.to_vec()))?,
        b"UNWATCH" => arity(1, Some(1)).map(|_| Command::Unwatch)?,
        b"FLUSHDB" | b"FLUSHALL" => {
            arity(1, Some(2))?;
            let mut upper = [0u8; MAX_NAME_BYTES];
            match rest.first().map(|mode| uppercase(mode, &mut upper)) {
                None | Some(b"SYNC" | b"ASYNC") => Command::FlushDb,
                Some(_) => return Err(CommandError::new(SYNTAX)),
            }
        }
        b"KEYS" => arity(2, Some(2)).map(|_| Command::Keys(rest[0]))?,
        b"SCAN" => arity(2, None).and_then(|_| parse_scan(rest))?,
        _ => return Err(unknown_command(name, rest)),
    };
    Ok(command)
}

/// The unit a time argument is given in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Seconds,
    Milliseconds,
}

impl Unit {
    fn millis(self) -> i64 {
        match self {
            Unit::Seconds => 1000,
            Unit::Milliseconds => 1,
        }
    }
}

/// SET's and GETEX's time options: which one, and its argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeOption<'a> {
    /// EX, PX (relative) or EXAT, PXAT (absolute).
    Expire {
        unit: Unit,
        absolute: bool,
        arg: &'a [u8],
    },
    /// KEEPTTL (SET) or PERSIST (GETEX).
    Keep,
    Persist,
}

/// Reads one of SET's or GETEX's time options at `option`, Redis's way: EX,
/// PX, EXAT and PXAT exclude each other (the same one repeated: the last
/// counts), and KEEPTTL and PERSIST exclude them all. None: not a time option
/// that fits here.
fn time_option<'a>(
    option: &[u8],
    next: Option<&&'a [u8]>,
    current: Option<TimeOption<'a>>,
    allowed: TimeOption<'static>,
) -> Option<TimeOption<'a>> {
    let mut upper = [0u8; MAX_NAME_BYTES];
    let (unit, absolute) = match uppercase(option, &mut upper) {
        b"EX" => (Unit::Seconds, false),
        b"PX" => (Unit::Milliseconds, false),
        b"EXAT" => (Unit::Seconds, true),
        b"PXAT" => (Unit::Milliseconds, true),
        b"KEEPTTL" if allowed == TimeOption::Keep => {
            return matches!(current, None | Some(TimeOption::Keep)).then_some(TimeOption::Keep)
        }
        b"PERSIST" if allowed == TimeOption::Persist => {
            return matches!(current, None | Some(TimeOption::Persist))
                .then_some(TimeOption::Persist)
        }
        _ => return None,
    };
    let fits = match current {
        None => true,
        Some(TimeOption::Expire {
            unit: u,
            absolute: a,
            ..
        }) => (u, a) == (unit, absolute),
        Some(_) => false,
    };
    let arg = *next.filter(|_| fits)?;
    Some(TimeOption::Expire {
        unit,
        absolute,
        arg,
    })
}

/// How many arguments a time option takes after its name.
fn time_option_args(option: &TimeOption) -> usize {
    match option {
        TimeOption::Expire { .. } => 1,
        _ => 0,
    }
}

fn parse_set<'a>(rest: &[&'a [u8]]) -> Result<Command<'a>, CommandError> {
    let (key, value) = (rest[0], rest[1]);
    let mut condition = SetCondition::Always;
    let mut get = false;
    let mut time = None;
    let mut at = 2;
    while let Some(option) = rest.get(at) {
        let mut upper = [0u8; MAX_NAME_BYTES];
        match uppercase(option, &mut upper) {
            b"NX" if condition != SetCondition::IfPresent => condition = SetCondition::IfAbsent,
            b"XX" if condition != SetCondition::IfAbsent => condition = SetCondition::IfPresent,
            b"GET" => get = true,
            _ => {
                let found = time_option(option, rest.get(at + 1), time, TimeOption::Keep)
                    .ok_or_else(|| CommandError::new(SYNTAX))?;
                at += time_option_args(&found);
                time = Some(found);
            }
        }
        at += 1;
    }
    let expiry = match time {
        None => SetExpiry::Clear,
        Some(TimeOption::Keep) => SetExpiry::Keep,
        Some(TimeOption::Expire {
            unit,
            absolute,
            arg,
        }) => SetExpiry::Expire(set_deadline(arg, unit, absolute, "set")?),
        Some(TimeOption::Persist) => unreachable!("PERSIST is not one of SET's options"),
    };
    Ok(Command::Set {
        key,
        value,
        condition,
        get,
        expiry,
    })
}

fn parse_getex<'a>(rest: &[&'a [u8]]) -> Result<Command<'a>, CommandError> {
    let mut time = None;
    let mut at = 1;
    while let Some(option) = rest.get(at) {
        let found = time_option(option, rest.get(at + 1), time, TimeOption::Persist)
            .ok_or_else(|| CommandError::new(SYNTAX))?;
        at += 1 + time_option_args(&found);
        time = Some(found);
    }
    let change = match time {
        None => None,
        Some(TimeOption::Persist) => Some(GetExChange::Persist),
        Some(TimeOption::Expire {
            unit,
            absolute,
            arg,
        }) => Some(GetExChange::Expire(set_deadline(
            arg, unit, absolute, "getex",
        )?)),
        Some(TimeOption::Keep) => unreachable!("KEEPTTL is not one of GETEX's options"),
    };
    Ok(Command::GetEx(rest[0], change))
}

/// SET's, SETEX's and GETEX's time argument, as Redis checks it: an
/// integer, above 0, whose milliseconds do not overflow (nor, here, exceed
/// [`MAX_EXPIRY_MS`]).
fn set_deadline(
    arg: &[u8],
    unit: Unit,
    absolute: bool,
    command: &str,
) -> Result<Deadline, CommandError> {
    let n = integer(arg)?;
    let ms = n
        .checked_mul(unit.millis())
        .and_then(|ms| u64::try_from(ms).ok())
        .filter(|ms| (1..=MAX_EXPIRY_MS).contains(ms))
        .ok_or_else(|| invalid_expire_time(command))?;
    Ok(match absolute {
        true => Deadline::At(ms),
        false => Deadline::In(ms),
    })
}

/// EXPIRE, PEXPIRE, EXPIREAT and PEXPIREAT: options first, then the time,
/// as Redis checks them. A time at or before now (negative included)
/// removes the key.
fn parse_expire<'a>(name_upper: &[u8], rest: &[&'a [u8]]) -> Result<Command<'a>, CommandError> {
    let (unit, absolute, command) = match name_upper {
        b"EXPIRE" => (Unit::Seconds, false, "expire"),
        b"PEXPIRE" => (Unit::Milliseconds, false, "pexpire"),
        b"EXPIREAT" => (Unit::Seconds, true, "expireat"),
        _ => (Unit::Milliseconds, true, "pexpireat"),
    };
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in &rest[2..] {
        let mut upper = [0u8; MAX_NAME_BYTES];
        match uppercase(option, &mut upper) {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => {
                return Err(CommandError(format!(
                    "ERR Unsupported option {}",
                    lossy(&option[..option.len().min(128)])
                )))
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(CommandError::new(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(CommandError::new(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    let n = integer(rest[1])?;
    let ms = n
        .checked_mul(unit.millis())
        .ok_or_else(|| invalid_expire_time(command))?;
    if ms > MAX_EXPIRY_MS as i64 {
        return Err(invalid_expire_time(command));
    }
    if nx || xx || gt || lt {
        return Err(CommandError::new(EXPIRE_CONDITIONS_NOT_SUPPORTED));
    }
    let ms = ms.max(0) as u64;
    let deadline = match absolute {
        true => Deadline::At(ms),
        false => Deadline::In(ms),
    };
    Ok(Command::Expire(rest[0], deadline))
}

fn invalid_expire_time(command: &str) -> CommandError {
    CommandError(format!("ERR invalid expire time in '{command}' command"))
}

fn parse_scan<'a>(rest: &[&'a [u8]]) -> Result<Command<'a>, CommandError> {
    let cursor = std::str::from_utf8(rest[0])
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| CommandError::new("ERR invalid cursor"))?;
    let (mut pattern, mut count, mut type_name) = (None, None, None);
    let mut options = rest[1..].iter();
    while let Some(option) = options.next() {
        let mut upper = [0u8; MAX_NAME_BYTES];
        let name = uppercase(option, &mut upper);
        let value = options.next().ok_or_else(|| CommandError::new(SYNTAX))?;
        match name {
            b"MATCH" => pattern = Some(*value),
            b"COUNT" => match parse_i64(value) {
                Some(n) if n >= 1 => count = Some(n as u64),
                Some(_) => return Err(CommandError::new(SYNTAX)),
                None => return Err(CommandError::new(NOT_AN_INTEGER)),
            },
            b"TYPE" => type_name = Some(*value),
            _ => return Err(CommandError::new(SYNTAX)),
        }
    }
    Ok(Command::Scan {
        cursor,
        pattern,
        count,
        type_name,
    })
}

fn parse_hello<'a>(rest: &[&'a [u8]]) -> Result<Command<'a>, CommandError> {
    let Some((version, mut options)) = rest.split_first() else {
        return Ok(Command::Hello {
            protocol: None,
            client_name: None,
        });
    };
    let protocol = parse_i64(version).ok_or_else(|| {
        CommandError::new("ERR Protocol version is not an integer or out of range")
    })?;
    if !(2..=3).contains(&protocol) {
        return Err(CommandError::new("NOPROTO unsupported protocol version"));
    }
    let mut client_name = None;
    while let Some((option, after)) = options.split_first() {
        let mut upper = [0u8; MAX_NAME_BYTES];
        match (uppercase(option, &mut upper), after) {
            (b"SETNAME", [name, more @ ..]) => {
                client_name = Some(*name);
                options = more;
            }
            (b"AUTH", [_, _, ..]) => {
                return Err(CommandError::new(
                    "ERR AUTH is not supported: corekv has no users or passwords",
                ))
            }
            _ => {
                return Err(CommandError(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(option)
                )))
            }
        }
    }
    Ok(Command::Hello {
        protocol: Some(protocol),
        client_name,
    })
}

fn parse_client<'a>(rest: &[&'a [u8]]) -> Result<Command<'a>, CommandError> {
    let mut upper = [0u8; MAX_NAME_BYTES];
    let command = match (uppercase(rest[0], &mut upper), rest.len()) {
        (b"SETNAME", 2) => Command::ClientSetName(rest[1]),
        (b"GETNAME", 1) => Command::ClientGetName,
        (b"ID", 1) => Command::ClientId,
        (b"SETINFO", 3) => Command::ClientSetInfo,
        (b"SETNAME" | b"GETNAME" | b"ID" | b"SETINFO", _) => {
            return Err(subcommand_arity("client", rest[0]))
        }
        _ => return Err(unknown_subcommand("CLIENT", rest[0])),
    };
    Ok(command)
}

fn parse_command_command<'a>(rest: &[&'a [u8]]) -> Result<Command<'a>, CommandError> {
    let Some((sub, args)) = rest.split_first() else {
        return Ok(Command::CommandList);
    };
    let mut upper = [0u8; MAX_NAME_BYTES];
    let command = match uppercase(sub, &mut upper) {
        b"COUNT" => Command::CommandCount,
        b"DOCS" => Command::CommandDocs(args.to_vec()),
        b"INFO" => Command::CommandInfo(args.to_vec()),
        b"GETKEYS" if !args.is_empty() => Command::CommandGetKeys(args.to_vec()),
        b"GETKEYS" => return Err(subcommand_arity("command", sub)),
        _ => return Err(unknown_subcommand("COMMAND", sub)),
    };
    Ok(command)
}

fn parse_cluster<'a>(rest: &[&'a [u8]]) -> Result<Command<'a>, CommandError> {
    let (sub, args) = (rest[0], &rest[1..]);
    let mut upper = [0u8; MAX_NAME_BYTES];
    let arity = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(subcommand_arity("cluster", sub))
        }
    };
    let slot = |arg: &[u8]| match parse_i64(arg) {
        Some(n) if (0..i64::from(crate::slot::NR_SLOTS)).contains(&n) => Ok(n as u16),
        _ => Err(CommandError::new("ERR Invalid slot")),
    };
    let command = match uppercase(sub, &mut upper) {
        b"INFO" => arity(0).map(|_| ClusterCommand::Info)?,
        b"MYID" => arity(0).map(|_| ClusterCommand::MyId)?,
        b"KEYSLOT" => arity(1).map(|_| ClusterCommand::KeySlot(args[0]))?,
        b"SLOTS" => arity(0).map(|_| ClusterCommand::Slots)?,
        b"SHARDS" => arity(0).map(|_| ClusterCommand::Shards)?,
        b"NODES" => arity(0).map(|_| ClusterCommand::Nodes)?,
        b"COUNTKEYSINSLOT" => {
            arity(1)?;
            ClusterCommand::CountKeysInSlot(slot(args[0])?)
        }
        b"GETKEYSINSLOT" => {
            arity(2)?;
            let invalid = || CommandError::new("ERR Invalid slot or number of keys");
            let slot = slot(args[0]).map_err(|_| invalid())?;
            let count = parse_i64(args[1]).filter(|n| *n >= 0).ok_or_else(invalid)?;
            ClusterCommand::GetKeysInSlot(slot, count as u64)
        }
        _ => return Err(unknown_subcommand("CLUSTER", sub)),
    };
    Ok(Command::Cluster(command))
}

fn parse_config<'a>(rest: &[&'a [u8]]) -> Result<Command<'a>, CommandError> {
    let mut upper = [0u8; MAX_NAME_BYTES];
    match uppercase(rest[0], &mut upper) {
        b"GET" if rest.len() >= 2 => Ok(Command::ConfigGet(rest[1..].to_vec())),
        b"GET" => Err(subcommand_arity("config", rest[0])),
        b"SET" | b"RESETSTAT" | b"REWRITE" => Err(CommandError::new(
            "ERR corekv's configuration is read-only over RESP: set it with corekv-server's flags",
        )),
        _ => Err(unknown_subcommand("CONFIG", rest[0])),
    }
}

fn integer(arg: &[u8]) -> Result<i64, CommandError> {
    parse_i64(arg).ok_or_else(|| CommandError::new(NOT_AN_INTEGER))
}

/// ASCII-uppercases `name` into `buf`; a name longer than `buf` becomes empty
/// (matches nothing).
fn uppercase<'b>(name: &[u8], buf: &'b mut [u8; MAX_NAME_BYTES]) -> &'b [u8] {
    if name.len() > MAX_NAME_BYTES {
        return &[];
    }
    for (to, from) in buf.iter_mut().zip(name) {
        *to = from.to_ascii_uppercase();
    }
    &buf[..name.len()]
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn wrong_arity(name: &[u8]) -> CommandError {
    CommandError(format!(
        "ERR wrong number of arguments for '{}' command",
        lossy(name).to_lowercase()
    ))
}

fn subcommand_arity(command: &str, sub: &[u8]) -> CommandError {
    CommandError(format!(
        "ERR wrong number of arguments for '{command}|{}' command",
        lossy(sub).to_lowercase()
    ))
}

fn unknown_subcommand(command: &str, sub: &[u8]) -> CommandError {
    CommandError(format!(
        "ERR unknown subcommand '{}'. Try {command} HELP.",
        lossy(&sub[..sub.len().min(128)])
    ))
}

fn unknown_command(name: &[u8], args: &[&[u8]]) -> CommandError {
    let mut text = format!(
        "ERR unknown command '{}', with args beginning with: ",
        lossy(&name[..name.len().min(128)])
    );
    for arg in args.iter().take(32) {
        let _ = write!(text, "'{}' ", lossy(&arg[..arg.len().min(128)]));
    }
    CommandError(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_words(line: &str) -> Result<Command<'_>, CommandError> {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        parse(&args)
    }

    #[test]
    fn names_are_case_insensitive_and_arguments_stay_slices() {
        assert_eq!(parse_words("get k"), Ok(Command::Get(b"k")));
        assert_eq!(parse_words("DecrBy k 5"), Ok(Command::IncrBy(b"k", -5)));
        assert_eq!(
            parse_words("set k v nx get"),
            Ok(Command::Set {
                key: b"k",
                value: b"v",
                condition: SetCondition::IfAbsent,
                get: true,
                expiry: SetExpiry::Clear,
            })
        );
        assert_eq!(
            parse_words("MSET a 1 b 2"),
            Ok(Command::MSet(vec![(&b"a"[..], &b"1"[..]), (b"b", b"2")]))
        );
    }

    #[test]
    fn errors_use_redis_texts() {
        let error = |line| parse_words(line).expect_err(line).0;
        assert_eq!(
            error("GET"),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            error("mset a"),
            "ERR wrong number of arguments for 'mset' command"
        );
        assert_eq!(error("SET k v NX XX"), SYNTAX);
        assert_eq!(error("SET k v EX"), SYNTAX);
        assert_eq!(error("INCRBY k x"), NOT_AN_INTEGER);
        assert_eq!(
            error("DECRBY k -9223372036854775808"),
            "ERR decrement would overflow"
        );
        assert_eq!(error("INCRBYFLOAT k nan"), "ERR value is not a valid float");
        assert_eq!(
            error("FOO a b"),
            "ERR unknown command 'FOO', with args beginning with: 'a' 'b' "
        );
        assert_eq!(error("HELLO 4"), "NOPROTO unsupported protocol version");
        assert!(error("CONFIG SET maxmemory 1").contains("read-only"));
    }

    #[test]
    fn set_takes_every_valid_combination_of_expiry_and_conditions() {
        let expiry = |line| match parse_words(line) {
            Ok(Command::Set {
                condition,
                get,
                expiry,
                ..
            }) => (condition, get, expiry),
            other => panic!("{line}: {other:?}"),
        };
        use Deadline::{At, In};
        use SetCondition::{Always, IfAbsent, IfPresent};
        assert_eq!(
            expiry("SET k v EX 10"),
            (Always, false, SetExpiry::Expire(In(10_000)))
        );
        assert_eq!(
            expiry("SET k v px 50 NX"),
            (IfAbsent, false, SetExpiry::Expire(In(50)))
        );
        assert_eq!(
            expiry("SET k v XX EXAT 1700000000 GET"),
            (IfPresent, true, SetExpiry::Expire(At(1_700_000_000_000)))
        );
        assert_eq!(
            expiry("SET k v PXAT 5 GET NX"),
            (IfAbsent, true, SetExpiry::Expire(At(5)))
        );
        assert_eq!(
            expiry("SET k v KEEPTTL XX"),
            (IfPresent, false, SetExpiry::Keep)
        );
        // The same option repeated: the last counts, as in Redis.
        assert_eq!(
            expiry("SET k v EX 1 EX 2"),
            (Always, false, SetExpiry::Expire(In(2_000)))
        );
        assert_eq!(parse_words("SETEX k 3 v"), parse_words("SET k v EX 3"));
        assert_eq!(parse_words("PSETEX k 3 v"), parse_words("SET k v PX 3"));
    }

    #[test]
    fn invalid_expiry_options_and_times_are_refused_with_redis_texts() {
        let error = |line| parse_words(line).expect_err(line).0;
        for line in [
            "SET k v EX 1 PX 1",
            "SET k v KEEPTTL EX 1",
            "SET k v EX 1 KEEPTTL",
            "SET k v EXAT 1 PXAT 1",
            "SET k v PX",
            "SET k v PERSIST",
            "GETEX k KEEPTTL",
            "GETEX k PERSIST EX 1",
            "GETEX k EX 1 PERSIST",
            "GETEX k NX",
        ] {
            assert_eq!(error(line), SYNTAX, "{line}");
        }
        assert_eq!(error("SET k v EX x"), NOT_AN_INTEGER);
        assert_eq!(
            error("SET k v EX 0"),
            "ERR invalid expire time in 'set' command"
        );
        assert_eq!(
            error("SET k v PX -5"),
            "ERR invalid expire time in 'set' command"
        );
        assert_eq!(
            error("SET k v EX 9223372036854775"),
            "ERR invalid expire time in 'set' command"
        );
        assert_eq!(
            error("SETEX k 0 v"),
            "ERR invalid expire time in 'setex' command"
        );
        assert_eq!(
            error("PSETEX k -1 v"),
            "ERR invalid expire time in 'psetex' command"
        );
        assert_eq!(error("SETEX k x v"), NOT_AN_INTEGER);
        assert_eq!(
            error("GETEX k EXAT 0"),
            "ERR invalid expire time in 'getex' command"
        );
        assert_eq!(
            error("EXPIRE k 9223372036854775807"),
            "ERR invalid expire time in 'expire' command"
        );
        assert_eq!(
            error("EXPIRE k -9223372036854775808"),
            "ERR invalid expire time in 'expire' command"
        );
        assert_eq!(error("PEXPIRE k 1.5"), NOT_AN_INTEGER);
        assert_eq!(error("EXPIRE k 1 FOO"), "ERR Unsupported option FOO");
        assert_eq!(
            error("EXPIRE k 1 NX XX"),
            "ERR NX and XX, GT or LT options at the same time are not compatible"
        );
        assert_eq!(
            error("EXPIRE k 1 GT LT"),
            "ERR GT and LT options at the same time are not compatible"
        );
        assert_eq!(error("EXPIRE k 1 GT"), EXPIRE_CONDITIONS_NOT_SUPPORTED);
        assert_eq!(
            error("TTL"),
            "ERR wrong number of arguments for 'ttl' command"
        );
        assert_eq!(
            error("SETEX k 1"),
            "ERR wrong number of arguments for 'setex' command"
        );
    }

    #[test]
    fn expire_times_at_or_before_now_remove_the_key() {
        assert_eq!(
            parse_words("EXPIRE k -10"),
            Ok(Command::Expire(b"k", Deadline::In(0)))
        );
        assert_eq!(
            parse_words("pexpireat k -1"),
            Ok(Command::Expire(b"k", Deadline::At(0)))
        );
        assert_eq!(
            parse_words("EXPIREAT k 1700000000"),
            Ok(Command::Expire(b"k", Deadline::At(1_700_000_000_000)))
        );
        assert_eq!(
            parse_words("GETEX k PERSIST"),
            Ok(Command::GetEx(b"k", Some(GetExChange::Persist)))
        );
        assert_eq!(
            parse_words("PTTL k"),
            Ok(Command::Ttl(b"k", TimeUnit::Milliseconds))
        );
    }
}
