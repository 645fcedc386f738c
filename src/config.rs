//! Command-line flags → a validated [`Config`], passed explicitly to the server.
//!
//! Every flag is checked here, before anything touches the network or the data
//! directory, so a bad flag is a precise message and a non-zero exit with
//! nothing changed. Every flag can also come from the environment
//! (`--max-connections` from `COREKV_MAX_CONNECTIONS`, clap's `env`); the
//! command line wins. Defaults follow BRIEF §2; the limits' defaults are explained
//! in docs/operations.md.

use crate::cluster::{ClusterError, ClusterMap};
use crate::ids::{Router, Routing};
use crate::log::FsyncMode;
use crate::table::eviction::EvictionPolicy;
use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Largest frame the config accepts (Redis's largest bulk string too). Spans
/// inside a frame are stored as u32, and one log record holds a whole ATOMIC
/// batch, whose effects can take ~4.5× its wire bytes (`[1,"",nil]` is 4
/// bytes on the wire, 18 in the log): that must stay under a record's 4 GiB.
const MAX_FRAME_BYTES_CEILING: u64 = 512 << 20;
/// The disk engine's cache of hot values when --disk-cache-bytes is not
/// given: enough for the hot set of many workloads, small next to the
/// memory a server is given.
const DEFAULT_DISK_CACHE_BYTES: u64 = 64 << 20;
/// Shards beyond this are almost certainly a typo, and every shard costs an
/// executor thread, an io_uring ring and N-1 channel pairs.
const MAX_SHARDS: usize = 256;
/// The longest `--idle-poll-us`: a shard polling longer than this would be
/// spinning, not waiting for a reply about to come.
const MAX_IDLE_POLL_US: u64 = 10_000;

/// Where the data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// In-memory map plus a per-shard append-only log: survives restarts and crashes.
    Log,
    /// In-memory map only; nothing is written to disk.
    Memory,
    /// In-memory index, values only in the per-shard log and read from disk:
    /// for data larger than RAM.
    Disk,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Log => "log",
            Engine::Memory => "memory",
            Engine::Disk => "disk",
        }
    }

    /// Whether the engine keeps a log on disk (the log and disk engines).
    pub fn logs(self) -> bool {
        matches!(self, Engine::Log | Engine::Disk)
    }
}

/// corekv-server: a thread-per-core key/value server speaking length-prefixed msgpack.
#[derive(Debug, Parser)]
#[command(
    name = "corekv-server",
    version,
    about,
    long_about = None,
    after_help = "Every flag can also be set with the environment variable shown beside it\n\
        ([env: COREKV_…]); a flag given on the command line wins over its variable.\n\n\
        Examples:\n  \
        corekv-server                                   # 127.0.0.1:4000, ./corekv-data, fsync always\n  \
        corekv-server --addr 0.0.0.0:4000 --data-dir /var/lib/corekv --http-addr 127.0.0.1:8080\n  \
        corekv-server --engine memory --shards 4        # a cache: nothing on disk\n  \
        corekv-server --fsync interval --fsync-interval-ms 50\n  \
        COREKV_DATA_DIR=/srv/kv COREKV_LOG=debug corekv-server --log-format json\n\n\
        Docs: docs/operations.md (running, monitoring, backup and restore),\n\
        docs/storage.md (the log engine), docs/http.md (the HTTP API and /metrics)."
)]
pub struct ServerArgs {
    /// Address to listen on (IP:PORT). Port 0 picks a free port; the chosen
    /// address is logged as "listening on IP:PORT".
    #[arg(long, env = "COREKV_ADDR", default_value = "127.0.0.1:4000")]
    pub addr: SocketAddr,

    /// Also serve the HTTP API (docs/http.md) on this address (IP:PORT); off
    /// unless given. Port 0 picks a free port, logged as "http listening on IP:PORT".
    #[arg(long, env = "COREKV_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,

    /// Number of shards (one executor thread each). Default: one per CPU this
    /// process may run on.
    #[arg(long, env = "COREKV_SHARDS")]
    pub shards: Option<usize>,

    /// Data directory; created if missing. Holds the engine marker and a lock.
    #[arg(long, env = "COREKV_DATA_DIR", default_value = "./corekv-data")]
    pub data_dir: PathBuf,

    /// Storage engine.
    #[arg(long, env = "COREKV_ENGINE", value_enum, default_value_t = Engine::Log)]
    pub engine: Engine,

    /// Largest request message accepted, in bytes (suffixes: KiB, MiB, GiB).
    #[arg(long, env = "COREKV_MAX_FRAME_BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub max_frame_bytes: u64,

    /// Largest key accepted, in bytes (suffixes: KiB, MiB, GiB).
    #[arg(long, env = "COREKV_MAX_KEY_BYTES", default_value = "64KiB", value_parser = parse_bytes)]
    pub max_key_bytes: u64,

    /// Most client connections open at once, across all shards.
    #[arg(long, env = "COREKV_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Memory for keys and values, across all shards; over it, writes get OOM
    /// (or make room, see --maxmemory-policy) and reads keep working.
    /// Default: three quarters of physical memory.
    #[arg(long, env = "COREKV_MAX_MEMORY_BYTES", value_parser = parse_bytes)]
    pub max_memory_bytes: Option<u64>,

    /// Disk engine: memory for a cache of hot values, across all shards
    /// (each keeps an equal share), on top of --max-memory-bytes. A value
    /// is cached on its second read from disk, so one-off scans do not flush
    /// it. 0 disables the cache. Refused with the other engines, which keep
    /// their values in memory. Default: 64MiB with --engine disk.
    #[arg(long, env = "COREKV_DISK_CACHE_BYTES", value_parser = parse_bytes)]
    pub disk_cache_bytes: Option<u64>,

    /// What a write over --max-memory-bytes does: `noeviction` refuses it
    /// with OOM; the others evict keys to make room, as Redis's policies of
    /// the same names do (allkeys-: any key, volatile-: keys with an expiry;
    /// -lru: the least recently used of a sample, -random: any, volatile-ttl:
    /// the nearest deadline). Each shard evicts from its own share.
    #[arg(
        long = "maxmemory-policy",
        env = "COREKV_MAXMEMORY_POLICY",
        value_enum,
        default_value_t = MaxMemoryPolicy::Noeviction
    )]
    pub maxmemory_policy: MaxMemoryPolicy,

    /// When a write is acknowledged (log engine): `always` after its records are
    /// fdatasync-ed (group commit; survives power loss), `interval` after they
    /// are written and synced every --fsync-interval-ms, `never` after they are
    /// written. Every mode survives kill -9.
    #[arg(long, env = "COREKV_FSYNC", value_enum, default_value_t = FsyncFlag::Always)]
    pub fsync: FsyncFlag,

    /// Sync period for --fsync interval, in milliseconds.
    #[arg(long, env = "COREKV_FSYNC_INTERVAL_MS", default_value_t = 100)]
    pub fsync_interval_ms: u64,

    /// A shard's log is compacted (rewritten as a snapshot of its live data,
    /// online) once it is larger than this and more than twice its live data.
    /// While a compaction runs, writes are slowed (never refused) so that the
    /// log stays within twice its live data plus this.
    #[arg(long, env = "COREKV_COMPACT_MIN_BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub compact_min_bytes: u64,

    /// The disk engine splits each shard's log into segments: once the active
    /// file `shard-<i>.log` is larger than this, it is sealed (renamed to
    /// `shard-<i>.<seq>.seg`) and a new one started. The log engine keeps one
    /// file per shard and ignores this. From 4KiB to 1TiB.
    #[arg(long, env = "COREKV_SEGMENT_BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub segment_bytes: u64,

    /// The disk engine merges a sealed segment whose live data is under
    /// this percentage of its size (rewriting its live data, deleting the
    /// rest), so the log stays within about 100/this times the live data.
    /// 0 turns merging off: whole-log compaction then reclaims the space.
    /// From 0 to 80.
    #[arg(long, env = "COREKV_MERGE_LIVE_PERCENT", default_value_t = crate::log::merge::MERGE_BELOW_LIVE_PERCENT)]
    pub merge_live_percent: u64,

    /// How long a shard keeps polling for work, on its CPU, before it sleeps,
    /// in microseconds. A shard that sleeps is woken by the kernel for the
    /// next request or disk read, which costs tens of microseconds on a
    /// virtual machine; polling saves that at the price of CPU time spent
    /// waiting. Takes effect only when every shard has a CPU of its own.
    /// 0 (the default) sleeps at once; at most 10000.
    #[arg(long, env = "COREKV_IDLE_POLL_US", default_value_t = 0)]
    pub idle_poll_us: u64,

    /// Start even if a log is corrupt in the middle: keep the records before the
    /// damage and drop the rest of that log. Copy the data directory first.
    #[arg(long, env = "COREKV_SALVAGE")]
    pub salvage: bool,

    /// Which log lines to print: a level (error, warn, info, debug, trace)
    /// or per-module directives (info,corekv::log=debug). Without it,
    /// RUST_LOG is read; then the default, info. A filter that does not
    /// parse is an error.
    #[arg(long, env = "COREKV_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// How log lines are written to stderr: `text` for people, `json` (one
    /// object per line) for log shippers.
    #[arg(long, env = "COREKV_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Run as a node of a Redis Cluster-style cluster described by this TOML
    /// file (docs/cluster.md): keys of slots another node owns are answered
    /// MOVED. Needs --node.
    #[arg(long, env = "COREKV_CLUSTER", value_name = "FILE")]
    pub cluster: Option<PathBuf>,

    /// Which of the cluster file's nodes this server is (its `name`). Needs
    /// --cluster.
    #[arg(long, env = "COREKV_NODE", value_name = "NAME")]
    pub node: Option<String>,
}

/// `--maxmemory-policy` values: Redis's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MaxMemoryPolicy {
    Noeviction,
    #[value(name = "allkeys-lru")]
    AllkeysLru,
    #[value(name = "volatile-lru")]
    VolatileLru,
    #[value(name = "allkeys-random")]
    AllkeysRandom,
    #[value(name = "volatile-random")]
    VolatileRandom,
    #[value(name = "volatile-ttl")]
    VolatileTtl,
}

impl MaxMemoryPolicy {
    /// The table's policy of this name.
    pub fn eviction(self) -> EvictionPolicy {
        match self {
            MaxMemoryPolicy::Noeviction => EvictionPolicy::NoEviction,
            MaxMemoryPolicy::AllkeysLru => EvictionPolicy::AllKeysLru,
            MaxMemoryPolicy::VolatileLru => EvictionPolicy::VolatileLru,
            MaxMemoryPolicy::AllkeysRandom => EvictionPolicy::AllKeysRandom,
            MaxMemoryPolicy::VolatileRandom => EvictionPolicy::VolatileRandom,
            MaxMemoryPolicy::VolatileTtl => EvictionPolicy::VolatileTtl,
        }
    }
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the log filter came from, for its error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFilterSource {
    Flag,
    CorekvLog,
    RustLog,
    Default,
}

impl std::fmt::Display for LogFilterSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFilterSource::Flag => "--log",
            LogFilterSource::CorekvLog => "COREKV_LOG",
            LogFilterSource::RustLog => "RUST_LOG",
            LogFilterSource::Default => "the default",
        })
    }
}

/// The log filter to use: `--log` (or `COREKV_LOG`, which clap reads into
/// it: `from_env` says which), else `rust_log`, else `info`. An empty value
/// counts as unset.
pub fn log_filter(
    log: Option<&str>,
    from_env: bool,
    rust_log: Option<&str>,
) -> (String, LogFilterSource) {
    fn given(text: Option<&str>) -> Option<&str> {
        text.map(str::trim).filter(|t| !t.is_empty())
    }
    match (given(log), given(rust_log)) {
        (Some(filter), _) if from_env => (filter.to_owned(), LogFilterSource::CorekvLog),
        (Some(filter), _) => (filter.to_owned(), LogFilterSource::Flag),
        (None, Some(filter)) => (filter.to_owned(), LogFilterSource::RustLog),
        (None, None) => ("info".to_owned(), LogFilterSource::Default),
    }
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
    #[error(
        "--disk-cache-bytes applies only to --engine disk (the {0} engine keeps its values in memory)"
    )]
    DiskCache(&'static str),
    #[error(
        "--segment-bytes must be between 4KiB (4096) and 1TiB (1099511627776), got {0}: a \
         segment is sealed once its file is larger than this"
    )]
    SegmentBytes(u64),
    #[error(
        "--merge-live-percent must be between 0 (no merging) and 80, got {0}: a sealed segment \
         under this share of live data is merged"
    )]
    MergeLivePercent(u64),
    #[error("--fsync-interval-ms must be between 1 and 60000, got {0}")]
    FsyncInterval(u64),
    #[error(
        "--idle-poll-us must be between 0 (sleep at once) and {max}, got {0}: how long an idle \
         shard polls before it sleeps",
        max = MAX_IDLE_POLL_US
    )]
    IdlePoll(u64),
    #[error("--cluster and --node go together: {0} is given without the other")]
    ClusterFlags(&'static str),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
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
    /// The disk engine's cache of hot values, across all shards (0: none,
    /// and always 0 with the other engines).
    pub disk_cache_bytes: u64,
    pub eviction: EvictionPolicy,
    pub fsync: FsyncMode,
    pub compact_min_bytes: u64,
    /// The disk engine's segment size (`log::segments`).
    pub segment_bytes: u64,
    /// Sealed segments under this percentage live are merged (`log::merge`;
    /// 0: never).
    pub merge_live_percent: u64,
    /// How long an idle shard polls before it sleeps (`--idle-poll-us`;
    /// `None`: it sleeps at once).
    pub idle_poll: Option<Duration>,
    pub salvage: bool,
    /// The cluster this server is a node of (`--cluster`, `--node`); `None`
    /// for a standalone server.
    pub cluster: Option<Arc<ClusterMap>>,
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
        let disk_cache_bytes = match (args.engine, args.disk_cache_bytes) {
            (Engine::Disk, bytes) => bytes.unwrap_or(DEFAULT_DISK_CACHE_BYTES),
            (_, None) => 0,
            (engine, Some(_)) => return Err(ConfigError::DiskCache(engine.name())),
        };
        let segments =
            crate::log::segments::MIN_SEGMENT_BYTES..=crate::log::segments::MAX_SEGMENT_BYTES;
        if !segments.contains(&args.segment_bytes) {
            return Err(ConfigError::SegmentBytes(args.segment_bytes));
        }
        if args.merge_live_percent > crate::log::merge::MAX_MERGE_LIVE_PERCENT {
            return Err(ConfigError::MergeLivePercent(args.merge_live_percent));
        }
        if !(1..=60_000).contains(&args.fsync_interval_ms) {
            return Err(ConfigError::FsyncInterval(args.fsync_interval_ms));
        }
        if args.idle_poll_us > MAX_IDLE_POLL_US {
            return Err(ConfigError::IdlePoll(args.idle_poll_us));
        }
        let fsync = match args.fsync {
            FsyncFlag::Always => FsyncMode::Always,
            FsyncFlag::Interval => {
                FsyncMode::Interval(Duration::from_millis(args.fsync_interval_ms))
            }
            FsyncFlag::Never => FsyncMode::Never,
        };
        let cluster = match (args.cluster, args.node) {
            (Some(path), Some(node)) => Some(Arc::new(ClusterMap::load(&path, &node)?)),
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError::ClusterFlags("--cluster")),
            (None, Some(_)) => return Err(ConfigError::ClusterFlags("--node")),
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
            disk_cache_bytes,
            eviction: args.maxmemory_policy.eviction(),
            fsync,
            compact_min_bytes: args.compact_min_bytes,
            segment_bytes: args.segment_bytes,
            merge_live_percent: args.merge_live_percent,
            idle_poll: (args.idle_poll_us > 0).then(|| Duration::from_micros(args.idle_poll_us)),
            salvage: args.salvage,
            cluster,
        })
    }

    /// How keys are spread over this server's shards: by hash, or by hash
    /// slot on a cluster node, so that the keys of one slot (one hash tag)
    /// share a shard and a single-slot command touches one shard.
    pub fn router(&self) -> Router {
        let routing = match self.cluster {
            Some(_) => Routing::Slots,
            None => Routing::Hash,
        };
        Router::with_routing(self.nr_shards, routing)
    }

    /// The share of the disk engine's value cache each shard keeps.
    pub fn shard_disk_cache_bytes(&self) -> u64 {
        self.disk_cache_bytes / self.nr_shards as u64
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
    fn segment_sizes_outside_4_kib_to_1_tib_are_refused_with_the_range() {
        assert_eq!(config(&[]).expect("default").segment_bytes, 64 << 20);
        assert_eq!(
            config(&["--segment-bytes", "4KiB"])
                .expect("4 KiB")
                .segment_bytes,
            4096
        );
        for bad in ["0", "4095", "1025GiB"] {
            let error = config(&["--segment-bytes", bad])
                .expect_err(bad)
                .to_string();
            assert!(
                error.contains("--segment-bytes must be between 4KiB"),
                "{error}"
            );
        }
    }

    #[test]
    fn merge_shares_over_80_percent_are_refused_and_0_turns_merging_off() {
        assert_eq!(config(&[]).expect("default").merge_live_percent, 50);
        for good in ["0", "80"] {
            config(&["--merge-live-percent", good]).expect(good);
        }
        let error = config(&["--merge-live-percent", "81"])
            .expect_err("81")
            .to_string();
        assert!(error.contains("between 0 (no merging) and 80"), "{error}");
    }

    #[test]
    fn idle_polling_is_off_unless_asked_for_and_longer_than_10_ms_is_refused() {
        assert_eq!(config(&[]).expect("default").idle_poll, None);
        assert_eq!(config(&["--idle-poll-us", "0"]).expect("0").idle_poll, None);
        assert_eq!(
            config(&["--idle-poll-us", "10000"]).expect("max").idle_poll,
            Some(Duration::from_millis(10))
        );
        let error = config(&["--idle-poll-us", "10001"])
            .expect_err("10001")
            .to_string();
        assert!(
            error.contains("between 0 (sleep at once) and 10000, got 10001"),
            "{error}"
        );
    }

    #[test]
    fn defaults_are_valid() {
        let config = config(&[]).expect("defaults");
        assert_eq!(config.addr.to_string(), "127.0.0.1:4000");
        assert_eq!(config.nr_shards, default_nr_shards());
        assert_eq!(config.max_frame_bytes, 64 << 20);
    }

    #[test]
    fn every_flag_reads_its_corekv_environment_variable() {
        use clap::CommandFactory;
        let command = ServerArgs::command();
        let mut nr_flags = 0;
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if ["help", "version"].contains(&long) {
                continue;
            }
            let expected = format!("COREKV_{}", long.to_uppercase().replace('-', "_"));
            let env = arg.get_env().and_then(|e| e.to_str());
            assert_eq!(env, Some(expected.as_str()), "--{long}");
            nr_flags += 1;
        }
        assert!(nr_flags >= 15, "{nr_flags} flags");
    }

    #[test]
    fn the_log_filter_is_the_flag_then_corekv_log_then_rust_log_then_info() {
        let source = |log, from_env, rust_log| log_filter(log, from_env, rust_log).1;
        assert_eq!(
            source(Some("debug"), false, Some("warn")),
            LogFilterSource::Flag
        );
        assert_eq!(
            source(Some("debug"), true, Some("warn")),
            LogFilterSource::CorekvLog
        );
        assert_eq!(log_filter(None, false, Some("warn")).0, "warn");
        assert_eq!(source(Some(" "), true, None), LogFilterSource::Default);
        assert_eq!(log_filter(None, false, None).0, "info");
    }

    #[test]
    fn cluster_and_node_go_together_and_a_cluster_node_routes_by_slot() {
        assert!(matches!(
            config(&["--cluster", "nodes.toml"]),
            Err(ConfigError::ClusterFlags("--cluster"))
        ));
        assert!(matches!(
            config(&["--node", "a"]),
            Err(ConfigError::ClusterFlags("--node"))
        ));
        assert_eq!(
            config(&[]).expect("standalone").router().routing(),
            Routing::Hash
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("nodes.toml");
        let text = "[[node]]\nname = \"a\"\naddr = \"127.0.0.1:7001\"\nslots = [\"0-16383\"]\n";
        std::fs::write(&file, text).expect("write the cluster file");
        let path = file.to_str().expect("utf-8 path");
        let node = config(&["--cluster", path, "--node", "a"]).expect("a valid cluster");
        assert_eq!(node.router().routing(), Routing::Slots);
        assert_eq!(node.cluster.expect("clustered").me().name, "a");
        let error = config(&["--cluster", path, "--node", "b"]).expect_err("unknown node");
        assert!(
            error
                .to_string()
                .contains("--node \"b\" is not one of its nodes"),
            "{error}"
        );
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

    #[test]
    fn the_disk_cache_defaults_with_the_disk_engine_and_is_refused_with_the_others() {
        // Each call names its engine (`config` names the memory engine).
        let config = |flags: &[&str]| {
            let argv = [&["corekv-server"], flags].concat();
            Config::from_args(ServerArgs::try_parse_from(argv).expect("flags parse"))
        };
        let cache = |flags: &[&str]| config(flags).map(|c| c.disk_cache_bytes);
        assert_eq!(cache(&["--engine", "disk"]).ok(), Some(64 << 20));
        let flags = ["--engine", "disk", "--disk-cache-bytes", "0"];
        assert_eq!(cache(&flags).ok(), Some(0));
        let flags = [
            "--engine",
            "disk",
            "--disk-cache-bytes",
            "1GiB",
            "--shards",
            "4",
        ];
        assert_eq!(
            config(&flags).ok().map(|c| c.shard_disk_cache_bytes()),
            Some(256 << 20)
        );
        assert_eq!(cache(&["--engine", "log"]).ok(), Some(0));
        for engine in ["log", "memory"] {
            assert!(matches!(
                cache(&["--engine", engine, "--disk-cache-bytes", "0"]),
                Err(ConfigError::DiskCache(name)) if name == engine
            ));
        }
    }
}
