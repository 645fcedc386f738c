//! The `corekv` command line as clap (derive) types: every subcommand, flag,
//! default and help text (with examples) lives here and nowhere else.
//!
//! Parsing is all-or-nothing: a wrong argument count, an unknown flag or
//! subcommand, an `--addr` that is not `HOST:PORT`, a bad `--timeout`, an `mset`
//! pair without `=` or a relative backup directory is a clap usage error
//! (message on stderr, exit 2) before anything touches the network. Host
//! names are resolved when connecting. docs/cli.md is the user-facing
//! reference.

use clap::{ArgGroup, Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// The default server address (BRIEF §6, the kvs spec).
pub const DEFAULT_ADDR: &str = "127.0.0.1:4000";

/// Default for `--timeout`: long enough for a GET of a large value on a
/// loaded server, short enough that a hung server does not hang a script.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for `--timeout` of `backup`, which waits until every shard's file
/// is written and synced.
pub const DEFAULT_BACKUP_TIMEOUT: Duration = Duration::from_secs(3600);

/// The value argument of `set` that means "read the value from stdin".
pub const STDIN_VALUE: &str = "-";

/// corekv: command-line client for a corekv server.
#[derive(Debug, Parser)]
#[command(
    name = "corekv",
    version,
    after_help = "Examples:\n  \
        corekv set greeting hello\n  \
        corekv get greeting\n  \
        corekv --addr db1.internal:4000 mget a b c\n  \
        corekv mset a=1 b=2 c=3\n  \
        corekv set session:1 token --ttl 30m\n  \
        corekv ttl session:1\n  \
        corekv stats --json\n  \
        corekv ping\n  \
        corekv backup /var/backups/corekv/2024-06-01 --http-addr 127.0.0.1:8080\n\n\
        Exit status: 0 success, 1 error (connection, server, I/O), 2 usage error,\n\
        3 key not found (rm, mrm, get --raw). Reference: docs/cli.md"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand accepts, before or after the subcommand name.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    // The help is an attribute rather than a doc comment: rustdoc would read
    // the IPv6 example as a link.
    #[arg(
        long,
        global = true,
        value_name = "HOST:PORT",
        default_value = DEFAULT_ADDR,
        value_parser = parse_host_port,
        help = "Server address, HOST:PORT: a host name (localhost:4000), an IPv4 address or an IPv6 one in brackets ([::1]:4000)"
    )]
    pub addr: String,

    /// Seconds to wait for the connection and for the reply (fractions
    /// allowed). Default: 5; for backup 3600.
    #[arg(long, global = true, value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,

    /// Print machine-readable JSON on stdout (one document per run; see docs/cli.md).
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Set KEY to VALUE (a string), or to raw bytes from a file or stdin.
    #[command(after_help = "Examples:\n  \
        corekv set greeting hello          # value sent as a msgpack str\n  \
        corekv set photo --file cat.jpg    # value sent as msgpack bin (raw bytes)\n  \
        printf 'a\\0b' | corekv set blob -  # raw bytes from stdin\n  \
        corekv set session token --ttl 10s # expires in 10 seconds\n\n\
        Prints nothing on success. Without --ttl the key never expires (a\n\
        deadline it had is cleared).")]
    Set(SetArgs),

    /// Print the value of KEY, or "Key not found".
    #[command(after_help = "Examples:\n  \
        corekv get greeting                # hello\n  \
        corekv get photo --raw > cat.jpg   # the stored bytes, byte-exact\n  \
        corekv get greeting --json         # {\"found\":true,\"key\":\"greeting\",...}\n\n\
        A missing key prints \"Key not found\" and exits 0 (with --raw: on stderr, exit 3).\n\
        str values print as text; bin values as b\"...\" with \\xNN escapes;\n\
        other msgpack values in a JSON-like form.")]
    Get(GetArgs),

    /// Remove KEY; a missing key is an error ("Key not found" on stderr, exit 3).
    #[command(after_help = "Examples:\n  \
        corekv rm greeting\n  \
        corekv rm greeting || echo \"was not there\"")]
    Rm(KeyArgs),

    /// Print the values of several keys, one line per key, in the order given.
    #[command(after_help = "Examples:\n  \
        corekv mget a b c\n\n\
        Output, one line per key:\n  \
        a: \"1\"\n  \
        b: Key not found\n  \
        c: 42\n\
        Values are always rendered (strings quoted, JSON escapes), so a value never\n\
        spans lines and never reads as \"Key not found\". Exits 0 even if keys are missing.")]
    Mget(KeysArgs),

    /// Set several KEY=VALUE pairs atomically: all of them or none.
    #[command(after_help = "Examples:\n  \
        corekv mset a=1 b=2 c=3\n  \
        corekv mset 'greeting=hello world'\n\n\
        The pairs are sent as one ATOMIC request; if any cannot be applied (e.g. the\n\
        server is out of memory) none is, and corekv exits 1 with the server's error.\n\
        The key ends at the first '=' (keys cannot contain '='); the value may be empty.\n\
        Prints nothing on success.")]
    Mset(MsetArgs),

    /// Remove several keys; report, per key, whether it existed.
    #[command(after_help = "Examples:\n  \
        corekv mrm a b c\n\n\
        Output, one line per key, in the order given:\n  \
        a: deleted\n  \
        b: Key not found\n\
        Every key that existed is removed; exits 3 if any key was missing.")]
    Mrm(KeysArgs),

    /// Make KEY expire after DURATION (0 removes it now); a missing key is an
    /// error ("Key not found" on stderr, exit 3).
    #[command(after_help = "Examples:\n  \
        corekv expire session 10s\n  \
        corekv expire session 1500ms\n\n\
        DURATION: a number and a unit, ms, s, m, h or d (10s, 1.5s, 500ms, 2h); a\n\
        bare number is seconds. The value and the version stay as they are.")]
    Expire(ExpireArgs),

    /// Print how long KEY has left: "N ms", "no expiry", or "Key not found".
    #[command(after_help = "Examples:\n  \
        corekv ttl session                 # 9981 ms\n  \
        corekv ttl session --json          # {\"key\":\"session\",\"found\":true,\"ttl_ms\":9981}\n\n\
        Exits 0 whether or not the key exists, as get does.")]
    Ttl(KeyArgs),

    /// Remove KEY's expiry, so that it stays until deleted; exit 3 if the key
    /// is missing or has no expiry.
    #[command(after_help = "Examples:\n  \
        corekv persist session")]
    Persist(KeyArgs),

    /// List the keys (every key, or those matching a glob PATTERN), one per line.
    #[command(after_help = "Examples:\n  \
        corekv keys                        # every key\n  \
        corekv keys 'user:*'               # keys starting with user:\n  \
        corekv keys 'session:?' --json     # [\"session:1\",\"session:2\"]\n\n\
        PATTERN is a Redis glob: * any run, ? any one byte, [abc] a set, \\ escapes.\n\
        The keys are listed shard by shard with SCAN, in no useful order, while\n\
        the server keeps serving: a key written or deleted meanwhile may be missed\n\
        or listed twice; with no writes every key is listed exactly once.")]
    Keys(PatternArgs),

    /// Print the server's metrics: keys stored, bytes of values, operation counts.
    #[command(after_help = "Examples:\n  \
        corekv stats\n  \
        corekv stats --json | jq .keys")]
    Stats,

    /// Check that the server answers: one empty request message, round trip.
    #[command(after_help = "Examples:\n  \
        corekv ping                        # PONG\n  \
        corekv --addr localhost:4000 ping --json\n\n\
        Prints PONG and exits 0 when the server answered; exits 1 otherwise.")]
    Ping,

    /// Write an online, consistent backup of every shard into DIR on the
    /// server's host (through the server's HTTP API).
    #[command(after_help = "Examples:\n  \
        corekv backup /var/backups/corekv/$(date +%F) --http-addr 127.0.0.1:8080\n\n\
        DIR is a path on the server's host, absolute, new or empty; the server writes\n\
        it while it keeps serving. Every write acknowledged before the backup began is\n\
        in it, and no ATOMIC batch is there in part. To restore, start a server with\n\
        --data-dir on a copy of DIR (docs/operations.md, \"Backup and restore\").")]
    Backup(BackupArgs),
}

impl Command {
    /// The subcommand's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Set(_) => "set",
            Command::Get(_) => "get",
            Command::Rm(_) => "rm",
            Command::Mget(_) => "mget",
            Command::Mset(_) => "mset",
            Command::Mrm(_) => "mrm",
            Command::Keys(_) => "keys",
            Command::Stats => "stats",
            Command::Ping => "ping",
            Command::Backup(_) => "backup",
            Command::Expire(_) => "expire",
            Command::Ttl(_) => "ttl",
            Command::Persist(_) => "persist",
        }
    }

    /// How long the command waits by default (see `--timeout`).
    pub fn default_timeout(&self) -> Duration {
        match self {
            Command::Backup(_) => DEFAULT_BACKUP_TIMEOUT,
            _ => DEFAULT_TIMEOUT,
        }
    }
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where the server writes the backup: an absolute path on the server's
    /// host, new or an empty directory.
    #[arg(value_parser = parse_backup_dir)]
    pub dir: PathBuf,

    /// The server's HTTP address (its --http-addr), HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub http_addr: String,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["value", "file"])))]
pub struct SetArgs {
    /// The key (its UTF-8 bytes).
    pub key: String,

    /// The value, sent as a msgpack str; "-" reads raw bytes from stdin (sent as bin).
    pub value: Option<String>,

    /// Read the value's raw bytes from PATH (sent as msgpack bin).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,

    /// Expire the key after DURATION (10s, 1.5s, 500ms, 2m, 1h, 1d; a bare
    /// number is seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    pub ttl: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ExpireArgs {
    /// The key (its UTF-8 bytes).
    pub key: String,

    /// How long until the key expires (10s, 1.5s, 500ms, 2m, 1h, 1d; a bare
    /// number is seconds; 0 removes the key now).
    #[arg(value_parser = parse_expire_after)]
    pub duration: u64,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The key (its UTF-8 bytes).
    pub key: String,

    /// Write the stored bytes to stdout exactly, with no newline (bin and str
    /// values: their bytes; any other value: its msgpack encoding).
    #[arg(long, conflicts_with = "json")]
    pub raw: bool,
}

#[derive(Debug, Args)]
pub struct PatternArgs {
    /// A Redis glob the keys must match (default: every key).
    pub pattern: Option<String>,
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    /// The key (its UTF-8 bytes).
    pub key: String,
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    /// One or more keys.
    #[arg(required = true, value_name = "KEY")]
    pub keys: Vec<String>,
}

#[derive(Debug, Args)]
pub struct MsetArgs {
    /// One or more pairs; the key ends at the first '='.
    #[arg(required = true, value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub pairs: Vec<(String, String)>,
}

/// `KEY=VALUE`, split at the first `=`.
fn parse_pair(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) => Ok((key.to_owned(), value.to_owned())),
        None => Err(format!("expected KEY=VALUE, got '{arg}' (no '=')")),
    }
}

/// `HOST:PORT` with a port number; the host is resolved when connecting.
pub fn parse_host_port(arg: &str) -> Result<String, String> {
    let usage = || {
        format!("expected HOST:PORT (e.g. 127.0.0.1:4000, localhost:4000, [::1]:4000), got '{arg}'")
    };
    let (host, port) = arg.rsplit_once(':').ok_or_else(usage)?;
    let bare_ipv6 = host.contains(':') && !(host.starts_with('[') && host.ends_with(']'));
    if host.is_empty() || bare_ipv6 || port.parse::<u16>().is_err() {
        return Err(usage());
    }
    Ok(arg.to_owned())
}

/// The server writes the backup on its own host: a relative path would be
/// taken relative to the server's working directory, not the caller's.
fn parse_backup_dir(arg: &str) -> Result<PathBuf, String> {
    let dir = PathBuf::from(arg);
    if !dir.is_absolute() {
        return Err(format!(
            "'{arg}' is relative: give an absolute path on the server's host"
        ));
    }
    Ok(dir)
}

/// The longest TTL a server accepts, in milliseconds (see docs/protocol.md).
const MAX_TTL_MS: u64 = crate::proto::request::MAX_TTL_MS;

/// `--ttl`: a duration of at least 1 ms, in milliseconds.
fn parse_ttl(arg: &str) -> Result<u64, String> {
    match parse_duration_ms(arg)? {
        0 => Err(format!("'{arg}' is no time at all: a TTL is at least 1ms")),
        ms => Ok(ms),
    }
}

/// `expire`'s DURATION, in milliseconds; 0 is allowed (the key goes now).
fn parse_expire_after(arg: &str) -> Result<u64, String> {
    parse_duration_ms(arg)
}

/// `10s`, `1.5s`, `500ms`, `2m`, `1h`, `1d`, or a bare number of seconds, in
/// whole milliseconds (a fraction of a millisecond rounds up: a TTL never
/// comes out shorter than asked).
pub fn parse_duration_ms(arg: &str) -> Result<u64, String> {
    let usage = || {
        format!(
            "expected a duration such as 10s, 1.5s, 500ms, 2m, 1h or 1d (a bare number is \
             seconds), got '{arg}'"
        )
    };
    let text = arg.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let ms_per_unit = match unit {
        "ms" => 1.0,
        "" | "s" => 1e3,
        "m" => 60e3,
        "h" => 3_600e3,
        "d" => 86_400e3,
        _ => return Err(usage()),
    };
    let number: f64 = number.parse().map_err(|_| usage())?;
    let ms = (number * ms_per_unit).ceil();
    if !(0.0..=MAX_TTL_MS as f64).contains(&ms) {
        return Err(format!(
            "'{arg}' is longer than the longest TTL, {MAX_TTL_MS}ms"
        ));
    }
    Ok(ms as u64)
}

/// A positive, finite number of seconds.
fn parse_timeout(arg: &str) -> Result<Duration, String> {
    let secs: f64 = arg
        .parse()
        .map_err(|_| format!("expected a number of seconds, got '{arg}'"))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!(
            "must be more than 0 and at most 86400 seconds, got {arg}"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn pairs_split_at_the_first_equals_sign() {
        assert_eq!(parse_pair("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_pair("a="), Ok(("a".into(), String::new())));
        assert!(parse_pair("novalue").is_err());
    }

    #[test]
    fn addresses_are_host_and_port() {
        for good in [
            "127.0.0.1:4000",
            "localhost:4000",
            "[::1]:4000",
            "db-1.internal:1",
        ] {
            assert_eq!(parse_host_port(good).as_deref(), Ok(good));
        }
        for bad in ["localhost", ":4000", "host:port", "::1:4000", "host:70000"] {
            assert!(parse_host_port(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn durations_take_a_unit_or_mean_seconds() {
        for (arg, ms) in [
            ("10s", 10_000),
            ("10", 10_000),
            ("1.5s", 1_500),
            ("500ms", 500),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("1d", 86_400_000),
            ("0", 0),
            ("0.0004s", 1),
        ] {
            assert_eq!(parse_duration_ms(arg), Ok(ms), "{arg}");
        }
        for bad in [
            "",
            "s",
            "10x",
            "-5s",
            "1e3",
            "ten",
            "10 s",
            "1.2.3s",
            "99999999999d",
        ] {
            assert!(parse_duration_ms(bad).is_err(), "{bad} accepted");
        }
        assert!(parse_ttl("0s").is_err(), "a TTL of nothing");
        assert_eq!(parse_expire_after("0s"), Ok(0));
    }

    #[test]
    fn timeouts_must_be_positive_numbers() {
        assert_eq!(parse_timeout("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "abc", "NaN", "inf"] {
            assert!(parse_timeout(bad).is_err(), "{bad} accepted");
        }
    }
}
