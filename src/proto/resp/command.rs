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
    CommandDocs,
    CommandInfo(Vec<&'a [u8]>),
    ConfigGet(Vec<&'a [u8]>),
    Info(Vec<&'a [u8]>),
    DbSize,
    Get(&'a [u8]),
    Set {
        key: &'a [u8],
        value: &'a [u8],
        condition: SetCondition,
        get: bool,
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
pub const EXPIRY_NOT_SUPPORTED: &str =
    "ERR EX, PX, EXAT, PXAT and KEEPTTL are not supported yet (corekv has no key expiry)";

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

fn parse_set<'a>(rest: &[&'a [u8]]) -> Result<Command<'a>, CommandError> {
    let (key, value) = (rest[0], rest[1]);
    let mut condition = SetCondition::Always;
    let mut get = false;
    let mut expiry = false;
    let mut options = rest[2..].iter();
    while let Some(option) = options.next() {
        let mut upper = [0u8; MAX_NAME_BYTES];
        match uppercase(option, &mut upper) {
            b"NX" if condition != SetCondition::IfPresent => condition = SetCondition::IfAbsent,
            b"XX" if condition != SetCondition::IfAbsent => condition = SetCondition::IfPresent,
            b"GET" => get = true,
            b"KEEPTTL" => expiry = true,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" => {
                options.next().ok_or_else(|| CommandError::new(SYNTAX))?;
                expiry = true;
            }
            _ => return Err(CommandError::new(SYNTAX)),
        }
    }
    if expiry {
        return Err(CommandError::new(EXPIRY_NOT_SUPPORTED));
    }
    Ok(Command::Set {
        key,
        value,
        condition,
        get,
    })
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
        b"DOCS" => Command::CommandDocs,
        b"INFO" => Command::CommandInfo(args.to_vec()),
        _ => return Err(unknown_subcommand("COMMAND", sub)),
    };
    Ok(command)
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
                get: true
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
        assert_eq!(error("SET k v EX 10"), EXPIRY_NOT_SUPPORTED);
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
}
