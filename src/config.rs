//! Command-line flags → a validated [`Config`], passed explicitly to the server.
//!
//! Every flag is checked here, before anything touches the network or the data
//! directory, so a bad flag is a precise message and a non-zero exit with
//! nothing changed. Defaults follow BRIEF §2; the limits' defaults are explained
//! in docs/operations.md.

use crate::log::FsyncMode;
use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Largest frame the config accepts: spans inside a frame are stored as u32.
const MAX_FRAME_BYTES_CEILING: u64 = u32::MAX as u64 - 1024;
/// Shards beyond this are almost certainly a typo, and every shard costs an
/// executor thread, an io_uring ring and N-1 channel pairs.
const MAX_SHARDS: usize = 256;

/// Where the data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// In-memory map plus a per-shard append-only log: survives restarts and crashes.
    Log,
    /// In-memory map only; nothing is written to disk.
    Memory,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Log => "log",
            Engine::Memory => "memory",
        }
    }
}

/// corekv-server: a thread-per-core key/value server speaking length-prefixed msgpack.
#[derive(Debug, Parser)]
#[command(name = "corekv-server", version, about, long_about = None)]
pub struct ServerArgs {
    /// Address to listen on (IP:PORT). Port 0 picks a free port; the chosen
    /// address is logged as "listening on IP:PORT".
    #[arg(long, default_value = "127.0.0.1:4000")]
    pub addr: SocketAddr,

    /// Also serve the HTTP API (docs/http.md) on this address (IP:PORT); off
    /// unless given. Port 0 picks a free port, logged as "http listening on IP:PORT".
    #[arg(long)]
    pub http_addr: Option<SocketAddr>,

    /// Number of shards (one executor thread each). Default: one per CPU this
    /// process may run on.
    #[arg(long)]
    pub shards: Option<usize>,

    /// Data directory; created if missing. Holds the engine marker and a lock.
    #[arg(long, default_value = "./corekv-data")]
    pub data_dir: PathBuf,

    /// Storage engine.
    #[arg(long, value_enum, default_value_t = Engine::Log)]
    pub engine: Engine,

    /// Largest request message accepted, in bytes (suffixes: KiB, MiB, GiB).
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    pub max_frame_bytes: u64,

    /// Largest key accepted, in bytes (suffixes: KiB, MiB, GiB).
    #[arg(long, default_value = "64KiB", value_parser = parse_bytes)]
    pub max_key_bytes: u64,

    /// Most client connections open at once, across all shards.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,

    /// Memory for keys and values, across all shards; over it, writes get OOM
    /// and reads keep working. Default: three quarters of physical memory.
    #[arg(long, value_parser = parse_bytes)]
    pub max_memory_bytes: Option<u64>,

    /// When a write is acknowledged (log engine): `always` after its records are
    /// fdatasync-ed (group commit; survives power loss), `interval` after they
    /// are written and synced every --fsync-interval-ms, `never` after they are
    /// written. Every mode survives kill -9.
    #[arg(long, value_enum, default_value_t = FsyncFlag::Always)]
    pub fsync: FsyncFlag,

    /// Sync period for --fsync interval, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub fsync_interval_ms: u64,

    /// A shard's log is compacted (rewritten as a snapshot of its live data,
    /// online) once it is larger than this and more than twice its live data.
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    pub compact_min_bytes: u64,

    /// Start even if a log is corrupt in the middle: keep the records before the
    /// damage and drop the rest of that log. Copy the data directory first.
    #[arg(long)]
    pub salvage: bool,
}

/// `--fsync` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FsyncFlag {
    Always,
    Interval,
    Never,
}

/// A flag combination that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--shards must be between 1 and {MAX_SHARDS}, got {0}")]
    Shards(usize),
    #[error("--max-frame-bytes must be between 16 and {MAX_FRAME_BYTES_CEILING}, got {0}")]
    FrameLimit(u64),
    #[error("--max-key-bytes must be between 1 and --max-frame-bytes ({frame}), got {key}")]
    KeyLimit { key: u64, frame: u64 },
    #[error("--max-connections must be at least 1")]
    Connections,
    #[error("--max-memory-bytes must be at least 1 MiB, got {0}")]
    Memory(u64),
    #[error("--fsync-interval-ms must be between 1 and 60000, got {0}")]
    FsyncInterval(u64),
}

/// Validated server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    pub nr_shards: usize,
    pub data_dir: PathBuf,
    pub engine: Engine,
    pub max_frame_bytes: u64,
    pub max_key_bytes: usize,
    pub max_connections: usize,
    pub max_memory_bytes: u64,
    pub fsync: FsyncMode,
    pub compact_min_bytes: u64,
    pub salvage: bool,
}

impl Config {
    /// Validates parsed flags and fills in machine-dependent defaults.
    pub fn from_args(args: ServerArgs) -> Result<Config, ConfigError> {
        let nr_shards = args.shards.unwrap_or_else(default_nr_shards);
        if !(1..=MAX_SHARDS).contains(&nr_shards) {
            return Err(ConfigError::Shards(nr_shards));
        }
        if !(16..=MAX_FRAME_BYTES_CEILING).contains(&args.max_frame_bytes) {
            return Err(ConfigError::FrameLimit(args.max_frame_bytes));
        }
        if args.max_key_bytes == 0 || args.max_key_bytes > args.max_frame_bytes {
            return Err(ConfigError::KeyLimit {
                key: args.max_key_bytes,
                frame: args.max_frame_bytes,
            });
        }
        if args.max_connections == 0 {
            return Err(ConfigError::Connections);
        }
        let max_memory_bytes = args
            .max_memory_bytes
            .unwrap_or_else(default_max_memory_bytes);
        if max_memory_bytes < 1 << 20 {
            return Err(ConfigError::Memory(max_memory_bytes));
        }
        if !(1..=60_000).contains(&args.fsync_interval_ms) {
            return Err(ConfigError::FsyncInterval(args.fsync_interval_ms));
        }
        let fsync = match args.fsync {
            FsyncFlag::Always => FsyncMode::Always,
            FsyncFlag::Interval => {
                FsyncMode::Interval(Duration::from_millis(args.fsync_interval_ms))
            }
            FsyncFlag::Never => FsyncMode::Never,
        };
        Ok(Config {
            addr: args.addr,
            http_addr: args.http_addr,
            nr_shards,
            data_dir: args.data_dir,
            engine: args.engine,
            max_frame_bytes: args.max_frame_bytes,
            max_key_bytes: args.max_key_bytes as usize,
            max_connections: args.max_connections,
            max_memory_bytes,
            fsync,
            compact_min_bytes: args.compact_min_bytes,
            salvage: args.salvage,
        })
    }

    /// The share of the memory limit each shard enforces on its own table.
    pub fn shard_memory_limit_bytes(&self) -> u64 {
        self.max_memory_bytes / self.nr_shards as u64
    }
}

/// One shard per CPU the process may use (affinity mask and cgroup quota).
pub fn default_nr_shards() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn default_max_memory_bytes() -> u64 {
    crate::sys::physical_memory_bytes().map_or(1 << 30, |bytes| bytes / 4 * 3)
}

/// Parses a byte count: a plain integer, or one with a KiB/MiB/GiB suffix
/// (K/M/G and KB/MB/GB are read as the same powers of 1024).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a byte count (examples: 4096, 64KiB, 2GiB)"))?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => {
            return Err(format!(
                "unknown size suffix '{other}' (use KiB, MiB or GiB)"
            ))
        }
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["corekv-server", "--engine", "memory"];
        argv.extend_from_slice(extra);
        Config::from_args(ServerArgs::try_parse_from(argv).expect("flags parse"))
    }

    #[test]
    fn byte_counts_accept_suffixes_and_reject_nonsense() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("2g"), Ok(2 << 30));
        assert!(parse_bytes("12XB").is_err());
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999999999999GiB").is_err());
    }

    #[test]
    fn defaults_are_valid() {
        let config = config(&[]).expect("defaults");
        assert_eq!(config.addr.to_string(), "127.0.0.1:4000");
        assert_eq!(config.nr_shards, default_nr_shards());
        assert_eq!(config.max_frame_bytes, 64 << 20);
    }

    #[test]
    fn impossible_limits_are_refused() {
        assert!(matches!(
            config(&["--shards", "0"]),
            Err(ConfigError::Shards(0))
        ));
        assert!(matches!(
            config(&["--max-key-bytes", "1MiB", "--max-frame-bytes", "1KiB"]),
            Err(ConfigError::KeyLimit { .. })
        ));
        assert!(matches!(
            config(&["--max-connections", "0"]),
            Err(ConfigError::Connections)
        ));
        assert!(matches!(
            config(&["--max-memory-bytes", "10"]),
            Err(ConfigError::Memory(10))
        ));
    }
}
