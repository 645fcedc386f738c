//! Command-line flags → a validated [`Config`]. A preset fills in a seed
//! benchmark's workload; any flag given explicitly overrides the preset, so
//! `--preset kvstore --connections 4` is the KVStore workload on 4 connections.
//! Every check happens here, before a connection is opened.

use crate::connection::Span;
use crate::distribution::Distribution;
use crate::keys::{self, Placement, MAX_KEY_BYTES, MIN_FRESH_KEY_BYTES, MIN_KEY_BYTES};
use crate::mix::{self, MixSpec};
use crate::protocol::Protocol;
use crate::workload::{Shape, WriteOp};
use clap::{Parser, ValueEnum};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// Largest value accepted: corekv's default frame limit is 64 MiB, and a message
/// holds several values.
const MAX_VALUE_BYTES: usize = 1 << 20;
/// Requests per message beyond this are almost certainly a typo.
const MAX_OPS_PER_MESSAGE: u32 = 1 << 20;
/// Longest run accepted (`--duration` + `--warmup`): a day; more is a typo.
const MAX_RUN_SECS: f64 = 86_400.0;

/// A named workload replaying a seed's benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// KVStore: 100 connections × 500 messages of 50 SET + 50 GET, replies verified.
    Kvstore,
    /// concave: 512 connections × 1 000 GETs of keys never written (each expects [-2]).
    ConcaveMissingGets,
    /// concave: 512 connections × 500 puts of 1 object (PUTV version 0 of a fresh key).
    #[value(name = "concave-put-1")]
    #[serde(rename = "concave-put-1")]
    ConcavePut1,
    /// concave: 512 connections × 5 puts of 500 objects (one ATOMIC of 500 fresh-key PUTVs).
    #[value(name = "concave-put-500")]
    #[serde(rename = "concave-put-500")]
    ConcavePut500,
    /// concave: 512 connections × 1 000 GETV + PUTV increments of one shared key.
    ConcaveIncrements,
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::Kvstore => "kvstore",
            Preset::ConcaveMissingGets => "concave-missing-gets",
            Preset::ConcavePut1 => "concave-put-1",
            Preset::ConcavePut500 => "concave-put-500",
            Preset::ConcaveIncrements => "concave-increments",
        }
    }
}

/// The workload knobs a preset may set.
#[derive(Debug, Clone, Copy)]
struct Knobs {
    connections: u32,
    messages: u64,
    increments: bool,
    writes: u32,
    gets: u32,
    write_op: WriteOp,
    atomic: bool,
    /// `None`: just enough for each connection's writes of one message, so every
    /// message rewrites the same keys (the KVStore seed's hot set).
    keys: Option<u64>,
    key_bytes: usize,
    value_bytes: usize,
}

impl Knobs {
    /// Without a preset: one SET and one GET per message over 100 000 keys.
    const DEFAULT: Knobs = Knobs {
        connections: 50,
        messages: 10_000,
        increments: false,
        writes: 1,
        gets: 1,
        write_op: WriteOp::Set,
        atomic: false,
        keys: Some(100_000),
        key_bytes: 16,
        value_bytes: 32,
    };

    /// concave's benchmarks: 512 tasks; keys and values are UUIDs (36 bytes).
    const CONCAVE: Knobs = Knobs {
        connections: 512,
        key_bytes: 36,
        value_bytes: 36,
        ..Knobs::DEFAULT
    };

    fn of(preset: Option<Preset>) -> Knobs {
        match preset {
            None => Knobs::DEFAULT,
            // The seed's Client.hs: 100 threads × 500 rounds, each round the same
            // 50 keys and values of 10 bytes, set then read back.
            Some(Preset::Kvstore) => Knobs {
                connections: 100,
                messages: 500,
                writes: 50,
                gets: 50,
                keys: None,
                key_bytes: 10,
                value_bytes: 10,
                ..Knobs::DEFAULT
            },
            Some(Preset::ConcaveMissingGets) => Knobs {
                messages: 1_000,
                writes: 0,
                gets: 1,
                ..Knobs::CONCAVE
            },
            Some(Preset::ConcavePut1) => Knobs {
                messages: 500,
                writes: 1,
                gets: 0,
                write_op: WriteOp::PutvNew,
                ..Knobs::CONCAVE
            },
            Some(Preset::ConcavePut500) => Knobs {
                messages: 5,
                writes: 500,
                gets: 0,
                write_op: WriteOp::PutvNew,
                atomic: true,
                ..Knobs::CONCAVE
            },
            // 1 000 iterations of put(get(key) + 1): a GETV and a PUTV message each.
            Some(Preset::ConcaveIncrements) => Knobs {
                messages: 2_000,
                increments: true,
                ..Knobs::CONCAVE
            },
        }
    }
}

/// corekv-loadgen: load generator for corekv (msgpack) and Redis (RESP).
///
/// Each connection sends messages and checks every reply against the reply a
/// correct server sends: closed loop by default (--pipeline N keeps N messages
/// in flight), open loop at a fixed rate with --rate. Exits non-zero if any
/// reply did not match or any connection failed.
#[derive(Debug, Parser)]
#[command(name = "corekv-loadgen", version, about, long_about = None)]
pub struct Args {
    /// Server address (HOST:PORT).
    #[arg(long, default_value = "127.0.0.1:4000")]
    pub addr: String,

    /// Wire protocol: corekv's msgpack, or RESP to drive a Redis server.
    #[arg(long, value_enum, default_value_t = Protocol::Msgpack)]
    pub protocol: Protocol,

    /// A seed benchmark's workload; explicit flags override its values.
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,

    /// Connections, spread round-robin over the threads [default: 50; concave: 512].
    #[arg(long)]
    pub connections: Option<u32>,

    /// Executor threads (one glommio executor each, not pinned).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Messages each connection sends [default: 10000].
    #[arg(long, conflicts_with = "duration")]
    pub messages: Option<u64>,

    /// Run for this many seconds (after --warmup) instead of a message count.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Seconds of load before the measured --duration; replies are checked, not counted.
    #[arg(long, value_name = "SECS", requires = "duration")]
    pub warmup: Option<f64>,

    /// Open loop: send at this many requests per second over all connections,
    /// measuring latency from each message's intended send time (as wrk2 does).
    #[arg(long, value_name = "OPS_PER_S")]
    pub rate: Option<f64>,

    /// Messages in flight per connection (open loop: at most) [default: 1].
    #[arg(long)]
    pub pipeline: Option<u32>,

    /// Writes (SET, or --write-op) per message [default: 1; kvstore: 50].
    #[arg(long, conflicts_with = "atomic_keys")]
    pub sets_per_message: Option<u32>,

    /// GET requests per message, reading the keys the same message wrote [default: 1;
    /// with --atomic-keys K: K].
    #[arg(long)]
    pub gets_per_message: Option<u32>,

    /// What each write is: SET of an owned key, or PUTV version 0 of a fresh key
    /// (answered [-4, 1]).
    #[arg(long, value_enum)]
    pub write_op: Option<WriteOp>,

    /// Send each message as one ATOMIC batch writing K keys (K SETs, then the
    /// GETs of --gets-per-message, default K, reading them back).
    #[arg(long, value_name = "K")]
    pub atomic_keys: Option<u32>,

    /// Which corekv shards a message's keys live on (needs --server-shards).
    #[arg(long, value_enum, alias = "atomic-placement")]
    pub placement: Option<Placement>,

    /// The server's --shards, for --placement.
    #[arg(long, value_name = "N")]
    pub server_shards: Option<usize>,

    /// --addr is a node of a corekv cluster: ask it for the slot map, spread
    /// the connections over every node (connection i on node i mod nodes) and
    /// give each connection only keys its node owns, so every request goes
    /// to its key's node.
    #[arg(long)]
    pub cluster: bool,

    /// Mixed workload: each request is a GET with this probability, else a write
    /// (PUTV with --putv-ratio, else SET), on a key drawn by --distribution.
    #[arg(long)]
    pub get_ratio: Option<f64>,

    /// Mixed workload: probability that a request is a PUTV at the key's current
    /// version [default: 0].
    #[arg(long, requires = "get_ratio")]
    pub putv_ratio: Option<f64>,

    /// Mixed workload: requests per message [default: 1].
    #[arg(long, requires = "get_ratio")]
    pub ops_per_message: Option<u32>,

    /// Mixed workload: each SET expires this many milliseconds after it runs
    /// (corekv's SET with a TTL; RESP: SET K V PX MS). Pick one longer than
    /// the run: GETs expect the values written.
    #[arg(long, value_name = "MS", requires = "get_ratio")]
    pub set_ttl_ms: Option<u64>,

    /// Mixed workload: the keys are already loaded, so skip the prefill. A GET of
    /// a key this run has not written then expects any value of --value-bytes (a
    /// hit); a not-found reply is a miss, counted and an error. SETs work as
    /// usual; no --putv-ratio. Load the keys first, with the same --keys,
    /// --key-bytes and --value-bytes, by the fixed workload on C connections:
    /// --sets-per-message S --gets-per-message 0 --messages M, where
    /// --keys = C × S × M (docs/benchmarks.md).
    #[arg(long, alias = "no-prefill")]
    pub preloaded: bool,

    /// Mixed workload: how keys are drawn from a connection's partition.
    #[arg(long, value_enum, requires = "get_ratio")]
    pub distribution: Option<Distribution>,

    /// Zipf exponent for --distribution zipf.
    #[arg(long, default_value_t = 0.99)]
    pub zipf_theta: f64,

    /// Size of the key space, split evenly between connections [default: 100000;
    /// kvstore: connections × sets-per-message].
    #[arg(long)]
    pub keys: Option<u64>,

    /// Bytes per key [default: 16; kvstore: 10; concave: 36].
    #[arg(long)]
    pub key_bytes: Option<usize>,

    /// Bytes per value [default: 32; kvstore: 10; concave: 36].
    #[arg(long)]
    pub value_bytes: Option<usize>,

    /// Seed for key order and values.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// A connection that waits longer than this for a reply fails.
    #[arg(long, default_value_t = 10_000)]
    pub reply_timeout_ms: u64,

    /// Write a JSON report to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// A flag value or combination that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot resolve --addr {addr}: {reason}")]
    Addr { addr: String, reason: String },
    #[error("--{flag} must be at least 1")]
    Zero { flag: &'static str },
    #[error("--threads ({threads}) must not exceed --connections ({connections})")]
    Threads { threads: usize, connections: u32 },
    #[error("a message needs at least one request (--sets-per-message + --gets-per-message)")]
    EmptyMessage,
    #[error("at most {MAX_OPS_PER_MESSAGE} requests per message, got {0}")]
    TooManyOps(u64),
    #[error("--value-bytes must be at most {MAX_VALUE_BYTES}, got {0}")]
    ValueBytes(usize),
    #[error(
        "--keys ({keys}) must be at least --connections × --sets-per-message ({needed}): each \
         connection writes its own keys, and a message's keys must be distinct"
    )]
    TooFewKeys { keys: u64, needed: u64 },
    #[error("--keys ({keys}) exceeds what keys of {key_bytes} bytes can name ({capacity})")]
    TooManyKeys {
        keys: u64,
        key_bytes: usize,
        capacity: u64,
    },
    #[error("--key-bytes must be between {MIN_KEY_BYTES} and {MAX_KEY_BYTES}, got {0}")]
    KeyBytes(usize),
    #[error("--{flag} must be {expected}, got {value}")]
    OutOfRange {
        flag: &'static str,
        expected: &'static str,
        value: f64,
    },
    #[error("{0}")]
    Combination(String),
}

/// What the messages contain.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    /// Every message the same shape ([`crate::workload`]).
    Fixed {
        shape: Shape,
        /// Placement and the server's shard count.
        placement: Option<(Placement, usize)>,
    },
    /// Random requests over a distribution ([`crate::mix`]).
    Mix(MixSpec),
    /// GETV + PUTV of one shared counter ([`crate::increments`]).
    Increments,
}

impl Workload {
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Fixed { .. } => "fixed",
            Workload::Mix(_) => "mix",
            Workload::Increments => "increments",
        }
    }
}

/// A validated run.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub preset: Option<Preset>,
    pub nr_connections: u32,
    pub nr_threads: usize,
    pub span: Span,
    pub rate_ops_per_s: Option<f64>,
    pub pipeline: u32,
    pub workload: Workload,
    pub nr_keys: u64,
    pub key_bytes: usize,
    pub value_bytes: usize,
    pub seed: u64,
    pub reply_timeout: Duration,
    pub show_progress: bool,
    /// Namespace of this run's fresh keys (`--write-op putv-new`).
    pub fresh_prefix: [u8; 4],
    /// `--cluster`: connections spread over the nodes of the cluster `addr`
    /// belongs to, each using only its node's keys.
    pub cluster: bool,
}

impl Config {
    pub fn from_args(args: &Args) -> Result<Config, ConfigError> {
        let knobs = Knobs::of(args.preset);
        let connections = args.connections.unwrap_or(knobs.connections);
        let key_bytes = args.key_bytes.unwrap_or(knobs.key_bytes);
        let value_bytes = args.value_bytes.unwrap_or(knobs.value_bytes);
        let workload = workload(args, &knobs, key_bytes, value_bytes)?;
        let hot_set = match &workload {
            Workload::Fixed { shape, .. } => {
                u64::from(connections) * u64::from(shape.writes.max(1))
            }
            _ => u64::from(connections),
        };
        let config = Config {
            addr: resolve(&args.addr)?,
            protocol: args.protocol,
            preset: args.preset,
            nr_connections: connections,
            nr_threads: args.threads,
            span: span(args, &knobs)?,
            rate_ops_per_s: args.rate,
            pipeline: args.pipeline.unwrap_or(1),
            workload,
            nr_keys: args.keys.or(knobs.keys).unwrap_or(hot_set),
            key_bytes,
            value_bytes,
            seed: args.seed,
            reply_timeout: Duration::from_millis(args.reply_timeout_ms),
            show_progress: !args.quiet,
            fresh_prefix: keys::fresh_prefix(run_nonce()),
            cluster: args.cluster,
        };
        config.validate(args)?;
        Ok(config)
    }

    fn validate(&self, args: &Args) -> Result<(), ConfigError> {
        let counts = [
            ("connections", u64::from(self.nr_connections)),
            ("threads", self.nr_threads as u64),
            ("pipeline", u64::from(self.pipeline)),
            ("reply-timeout-ms", self.reply_timeout.as_millis() as u64),
        ];
        if let Some((flag, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err(ConfigError::Zero { flag });
        }
        if self.span == Span::Messages(0) {
            return Err(ConfigError::Zero { flag: "messages" });
        }
        if self.nr_threads > self.nr_connections as usize {
            return Err(ConfigError::Threads {
                threads: self.nr_threads,
                connections: self.nr_connections,
            });
        }
        if let Some(rate) = self.rate_ops_per_s {
            in_range(
                "rate",
                rate,
                "a positive number",
                rate > 0.0 && rate.is_finite(),
            )?;
        }
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&self.key_bytes) {
            return Err(ConfigError::KeyBytes(self.key_bytes));
        }
        if self.value_bytes > MAX_VALUE_BYTES {
            return Err(ConfigError::ValueBytes(self.value_bytes));
        }
        if self.cluster {
            self.validate_cluster()?;
        }
        match &self.workload {
            Workload::Fixed { shape, placement } => self.validate_fixed(shape, *placement),
            Workload::Mix(spec) => self.validate_mix(spec),
            Workload::Increments => self.validate_increments(args),
        }
    }

    fn validate_fixed(
        &self,
        shape: &Shape,
        placement: Option<(Placement, usize)>,
    ) -> Result<(), ConfigError> {
        let ops = u64::from(shape.writes) + u64::from(shape.gets);
        match ops {
            0 => return Err(ConfigError::EmptyMessage),
            n if n > u64::from(MAX_OPS_PER_MESSAGE) => return Err(ConfigError::TooManyOps(n)),
            _ => {}
        }
        let corekv_only = |what: &str| {
            combination(format!(
                "{what} is corekv-only: not available with --protocol resp"
            ))
        };
        if self.protocol == Protocol::Resp && shape.atomic {
            return corekv_only("ATOMIC (--atomic-keys)");
        }
        if shape.write_op == WriteOp::PutvNew && shape.writes > 0 {
            if self.protocol == Protocol::Resp {
                return corekv_only("PUTV (--write-op putv-new)");
            }
            self.validate_fresh_keys(placement.is_some())?;
            // Fresh keys need no key space, but every connection still gets a partition.
            return self.validate_keys(u64::from(self.nr_connections));
        }
        if let Some((placement, nr_shards)) = placement {
            if self.protocol == Protocol::Resp {
                return corekv_only("--placement");
            }
            if placement == Placement::Spread && shape.keys_per_message() < nr_shards as u64 {
                return combination(format!(
                    "--placement spread needs at least --server-shards ({nr_shards}) keys per message"
                ));
            }
        }
        let per_message = u64::from(shape.writes.max(1));
        self.validate_keys(u64::from(self.nr_connections) * per_message)
    }

    /// `--cluster` picks each connection's keys among its partition's: the
    /// workloads whose keys are not drawn from a partition cannot follow.
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        match &self.workload {
            Workload::Fixed {
                placement: Some(_), ..
            } => combination(
                "--cluster and --placement both choose the keys: pick one (a cluster node \
                 deals slots to its shards, not keys)"
                    .into(),
            ),
            Workload::Fixed { shape, .. }
                if shape.write_op == WriteOp::PutvNew && shape.writes > 0 =>
            {
                combination("--cluster needs owned keys, not --write-op putv-new".into())
            }
            Workload::Increments => combination(
                "--cluster: the increments workload's one counter lives on one node".into(),
            ),
            _ => Ok(()),
        }
    }

    /// Fresh keys carry the connection in the bits above 32 of their index.
    fn validate_fresh_keys(&self, placed: bool) -> Result<(), ConfigError> {
        if placed {
            return combination("--placement needs owned keys, not --write-op putv-new".into());
        }
        if self.key_bytes < MIN_FRESH_KEY_BYTES {
            return combination(format!(
                "--write-op putv-new needs --key-bytes of at least {MIN_FRESH_KEY_BYTES}"
            ));
        }
        let connection_bits = (4 * (self.key_bytes - keys::KEY_PREFIX_BYTES) - 32).min(32);
        if u64::from(self.nr_connections) > 1u64 << connection_bits {
            return combination(format!(
                "--write-op putv-new with {}-byte keys allows at most {} connections",
                self.key_bytes,
                1u64 << connection_bits
            ));
        }
        Ok(())
    }

    fn validate_keys(&self, needed: u64) -> Result<(), ConfigError> {
        let capacity = keys::key_capacity(self.key_bytes);
        if self.nr_keys > capacity {
            return Err(ConfigError::TooManyKeys {
                keys: self.nr_keys,
                key_bytes: self.key_bytes,
                capacity,
            });
        }
        if self.nr_keys < needed {
            return Err(ConfigError::TooFewKeys {
                keys: self.nr_keys,
                needed,
            });
        }
        Ok(())
    }

    fn validate_mix(&self, spec: &MixSpec) -> Result<(), ConfigError> {
        let ratio = |flag, r: f64| in_range(flag, r, "between 0 and 1", (0.0..=1.0).contains(&r));
        ratio("get-ratio", spec.get_ratio)?;
        ratio("putv-ratio", spec.putv_ratio)?;
        let sum = spec.get_ratio + spec.putv_ratio;
        in_range(
            "get-ratio + --putv-ratio",
            sum,
            "at most 1",
            sum <= 1.0 + 1e-9,
        )?;
        let theta = spec.zipf_theta;
        in_range(
            "zipf-theta",
            theta,
            "a positive number",
            theta > 0.0 && theta.is_finite(),
        )?;
        if spec.set_ttl_ms == Some(0) {
            return Err(ConfigError::Zero { flag: "set-ttl-ms" });
        }
        match spec.ops {
            0 => {
                return Err(ConfigError::Zero {
                    flag: "ops-per-message",
                })
            }
            n if n > MAX_OPS_PER_MESSAGE => return Err(ConfigError::TooManyOps(n.into())),
            _ => {}
        }
        if self.protocol == Protocol::Resp && spec.putv_ratio > 0.0 {
            return combination(
                "PUTV (--putv-ratio) is corekv-only: not available with --protocol resp".into(),
            );
        }
        if spec.preloaded && spec.putv_ratio > 0.0 {
            return combination(
                "--putv-ratio cannot be combined with --preloaded: a PUTV sends the key's \
                 current version, which only the prefill makes known"
                    .into(),
            );
        }
        self.validate_keys(u64::from(self.nr_connections))
    }

    fn validate_increments(&self, args: &Args) -> Result<(), ConfigError> {
        if self.protocol == Protocol::Resp {
            return combination("the increments workload (GETV + PUTV) is corekv-only".into());
        }
        if self.pipeline != 1 {
            return combination(
                "the increments workload writes what it read: --pipeline must be 1".into(),
            );
        }
        if args.get_ratio.is_some() || args.atomic_keys.is_some() || args.placement.is_some() {
            return combination(
                "the increments preset takes no mix, ATOMIC or placement flags".into(),
            );
        }
        self.validate_keys(u64::from(self.nr_connections))
    }

    /// Requests per message.
    pub fn ops_per_message(&self) -> u64 {
        match &self.workload {
            Workload::Fixed { shape, .. } => u64::from(shape.ops()),
            Workload::Mix(spec) => u64::from(spec.ops),
            Workload::Increments => 1,
        }
    }

    /// Keys in each connection's partition.
    pub fn partition_len(&self) -> u64 {
        self.nr_keys / u64::from(self.nr_connections)
    }

    /// Prefill messages per connection (mixed workloads without `--preloaded` only).
    pub fn prefill_messages(&self) -> u64 {
        match self.workload {
            Workload::Mix(spec) if !spec.preloaded => mix::prefill_messages(self.partition_len()),
            _ => 0,
        }
    }
}

fn workload(
    args: &Args,
    knobs: &Knobs,
    key_bytes: usize,
    value_bytes: usize,
) -> Result<Workload, ConfigError> {
    let fixed_flags = args.sets_per_message.is_some()
        || args.gets_per_message.is_some()
        || args.write_op.is_some()
        || args.atomic_keys.is_some();
    if args.preloaded && args.get_ratio.is_none() {
        return combination(
            "--preloaded skips the mixed workload's prefill: it needs --get-ratio (the fixed \
             workloads read only keys they have just written, the increments workload its own \
             counter)"
                .into(),
        );
    }
    if knobs.increments {
        return Ok(Workload::Increments);
    }
    if let Some(get_ratio) = args.get_ratio {
        if fixed_flags || args.placement.is_some() {
            return combination(
                "--get-ratio (a mixed workload) cannot be combined with --sets-per-message, \
                 --gets-per-message, --write-op, --atomic-keys or --placement"
                    .into(),
            );
        }
        return Ok(Workload::Mix(MixSpec {
            ops: args.ops_per_message.unwrap_or(1),
            get_ratio,
            putv_ratio: args.putv_ratio.unwrap_or(0.0),
            distribution: args.distribution.unwrap_or(Distribution::Uniform),
            zipf_theta: args.zipf_theta,
            set_ttl_ms: args.set_ttl_ms,
            preloaded: args.preloaded,
        }));
    }
    let (writes, gets, atomic) = match args.atomic_keys {
        Some(k) => (k, args.gets_per_message.unwrap_or(k), true),
        None => (
            args.sets_per_message.unwrap_or(knobs.writes),
            args.gets_per_message.unwrap_or(knobs.gets),
            knobs.atomic,
        ),
    };
    let placement = match (args.placement, args.server_shards) {
        (Some(p), Some(n)) if n > 0 => Some((p, n)),
        (Some(_), _) => return combination("--placement needs --server-shards N (N >= 1)".into()),
        (None, Some(_)) => {
            return combination("--server-shards is only used with --placement".into())
        }
        (None, None) => None,
    };
    let shape = Shape {
        writes,
        gets,
        write_op: args.write_op.unwrap_or(knobs.write_op),
        atomic,
        key_bytes,
        value_bytes,
    };
    Ok(Workload::Fixed { shape, placement })
}

fn span(args: &Args, knobs: &Knobs) -> Result<Span, ConfigError> {
    let Some(duration) = args.duration else {
        return Ok(Span::Messages(args.messages.unwrap_or(knobs.messages)));
    };
    let warmup = args.warmup.unwrap_or(0.0);
    let valid = |s: f64| s.is_finite() && (0.0..=MAX_RUN_SECS).contains(&s);
    in_range(
        "duration",
        duration,
        "between 0 and 86400 seconds (exclusive of 0)",
        valid(duration) && duration > 0.0,
    )?;
    in_range(
        "warmup",
        warmup,
        "between 0 and 86400 seconds",
        valid(warmup),
    )?;
    Ok(Span::Window {
        warmup: Duration::from_secs_f64(warmup),
        duration: Duration::from_secs_f64(duration),
    })
}

fn in_range(
    flag: &'static str,
    value: f64,
    expected: &'static str,
    ok: bool,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            flag,
            expected,
            value,
        })
    }
}

fn combination<T>(why: String) -> Result<T, ConfigError> {
    Err(ConfigError::Combination(why))
}

/// Differs from run to run (clock and process id), for fresh-key namespaces.
fn run_nonce() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    keys::mix(nanos, u64::from(std::process::id()))
}

fn resolve(addr: &str) -> Result<SocketAddr, ConfigError> {
    let error = |reason: String| ConfigError::Addr {
        addr: addr.to_owned(),
        reason,
    };
    addr.to_socket_addrs()
        .map_err(|e| error(e.to_string()))?
        .next()
        .ok_or_else(|| error("resolves to no address".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config, ConfigError> {
        let argv = std::iter::once("corekv-loadgen").chain(args.iter().copied());
        Config::from_args(&Args::try_parse_from(argv).expect("flags parse"))
    }

    fn shape(c: &Config) -> Shape {
        match &c.workload {
            Workload::Fixed { shape, .. } => *shape,
            other => panic!("not a fixed workload: {other:?}"),
        }
    }

    #[test]
    fn kvstore_preset_is_the_seed_benchmark_and_flags_override_it() {
        let c = config(&["--preset", "kvstore"]).expect("valid");
        assert_eq!(c.nr_connections, 100);
        assert_eq!(c.span, Span::Messages(500));
        let s = shape(&c);
        assert_eq!(
            (s.writes, s.gets, s.write_op, s.atomic),
            (50, 50, WriteOp::Set, false)
        );
        assert_eq!(c.pipeline, 1);
        assert_eq!((c.key_bytes, c.value_bytes), (10, 10));
        assert_eq!(
            c.nr_keys,
            100 * 50,
            "each connection rewrites its own 50 keys"
        );
        let c = config(&["--preset", "kvstore", "--connections", "4"]).expect("valid");
        assert_eq!(
            (c.nr_connections, shape(&c).writes, c.nr_keys),
            (4, 50, 200)
        );
        let c = config(&["--preset", "kvstore", "--keys", "100000"]).expect("valid");
        assert_eq!(c.nr_keys, 100_000);
    }

    #[test]
    fn concave_presets_replay_the_seed_benchmarks() {
        let c = config(&["--preset", "concave-missing-gets"]).expect("valid");
        assert_eq!((c.nr_connections, c.span), (512, Span::Messages(1_000)));
        assert_eq!((shape(&c).writes, shape(&c).gets), (0, 1));
        assert_eq!((c.key_bytes, c.value_bytes), (36, 36), "UUID-sized");
        let c = config(&["--preset", "concave-put-1"]).expect("valid");
        let s = shape(&c);
        assert_eq!(
            (c.span, s.writes, s.gets, s.write_op, s.atomic),
            (Span::Messages(500), 1, 0, WriteOp::PutvNew, false)
        );
        let c = config(&["--preset", "concave-put-500"]).expect("valid");
        let s = shape(&c);
        assert_eq!(
            (c.span, s.writes, s.write_op, s.atomic),
            (Span::Messages(5), 500, WriteOp::PutvNew, true)
        );
        let c = config(&["--preset", "concave-increments"]).expect("valid");
        assert_eq!(
            (c.workload.clone(), c.span, c.ops_per_message()),
            (Workload::Increments, Span::Messages(2_000), 1)
        );
        assert!(config(&["--preset", "concave-increments", "--pipeline", "2"]).is_err());
    }

    #[test]
    fn atomic_keys_make_one_batch_that_reads_its_keys_back() {
        let c = config(&[
            "--atomic-keys",
            "16",
            "--placement",
            "spread",
            "--server-shards",
            "2",
        ])
        .expect("valid");
        let s = shape(&c);
        assert_eq!(
            (s.writes, s.gets, s.atomic, s.write_op),
            (16, 16, true, WriteOp::Set)
        );
        assert_eq!(
            c.workload,
            Workload::Fixed {
                shape: s,
                placement: Some((Placement::Spread, 2))
            }
        );
        let c = config(&[
            "--atomic-keys",
            "2",
            "--gets-per-message",
            "1",
            "--atomic-placement",
            "one-shard",
            "--server-shards",
            "2",
        ])
        .expect("valid");
        assert_eq!((shape(&c).gets, c.ops_per_message()), (1, 3));
    }

    #[test]
    fn mixed_workloads_take_ratios_and_a_distribution() {
        let c = config(&[
            "--get-ratio",
            "0.9",
            "--putv-ratio",
            "0.05",
            "--distribution",
            "zipf",
            "--zipf-theta",
            "1.2",
            "--ops-per-message",
            "4",
        ])
        .expect("valid");
        let Workload::Mix(spec) = c.workload else {
            panic!("a mix")
        };
        assert_eq!(
            (spec.ops, spec.distribution, spec.zipf_theta),
            (4, Distribution::Zipf, 1.2)
        );
        assert!((spec.set_ratio() - 0.05).abs() < 1e-9);
        assert_eq!(
            c.prefill_messages(),
            20,
            "100 000 keys / 50 connections / 100 per message"
        );
        let c = config(&["--get-ratio", "0.5"]).expect("valid");
        assert_eq!(
            c.workload,
            Workload::Mix(MixSpec {
                ops: 1,
                get_ratio: 0.5,
                putv_ratio: 0.0,
                distribution: Distribution::Uniform,
                zipf_theta: 0.99,
                set_ttl_ms: None,
                preloaded: false,
            })
        );
    }

    #[test]
    fn preloaded_mixes_skip_the_prefill_over_either_protocol() {
        let c = config(&[
            "--get-ratio",
            "1",
            "--preloaded",
            "--rate",
            "1000",
            "--duration",
            "1",
        ])
        .expect("valid");
        let Workload::Mix(spec) = c.workload else {
            panic!("a mix")
        };
        assert!(spec.preloaded);
        assert_eq!(c.prefill_messages(), 0, "the keys are loaded: no prefill");
        let c = config(&["--get-ratio", "0.9", "--no-prefill", "--protocol", "resp"])
            .expect("SETs over RESP still work");
        assert!(matches!(c.workload, Workload::Mix(spec) if spec.preloaded));
        assert_eq!(c.prefill_messages(), 0);
    }

    #[test]
    fn preloaded_is_refused_where_there_is_no_prefill_to_skip_or_a_putv_needs_it() {
        let refused = |args: &[&str]| config(args).expect_err("refused").to_string();
        let needs_mix = "--preloaded skips the mixed workload's prefill: it needs --get-ratio";
        assert!(refused(&["--preloaded"]).contains(needs_mix));
        let fixed = [
            "--sets-per-message",
            "50",
            "--gets-per-message",
            "0",
            "--preloaded",
        ];
        assert!(refused(&fixed).contains(needs_mix));
        assert!(refused(&["--preset", "concave-increments", "--preloaded"]).contains(needs_mix));
        assert!(refused(&["--preset", "kvstore", "--no-prefill"]).contains(needs_mix));
        assert!(
            refused(&["--get-ratio", "0.8", "--putv-ratio", "0.1", "--preloaded"])
                .contains("--putv-ratio cannot be combined with --preloaded")
        );
    }

    #[test]
    fn duration_warmup_and_rate_make_a_timed_open_loop_run() {
        let c = config(&["--duration", "2.5", "--warmup", "1", "--rate", "50000"]).expect("valid");
        assert_eq!(
            c.span,
            Span::Window {
                warmup: Duration::from_secs(1),
                duration: Duration::from_millis(2_500)
            }
        );
        assert_eq!(c.rate_ops_per_s, Some(50_000.0));
        let c = config(&["--preset", "kvstore", "--duration", "3"])
            .expect("a preset's count gives way to --duration");
        assert_eq!(
            c.span,
            Span::Window {
                warmup: Duration::ZERO,
                duration: Duration::from_secs(3)
            }
        );
        let parse = |args: &[&str]| {
            Args::try_parse_from(std::iter::once("corekv-loadgen").chain(args.iter().copied()))
        };
        assert!(
            parse(&["--messages", "5", "--duration", "1"]).is_err(),
            "count or time, not both"
        );
        assert!(
            parse(&["--warmup", "1"]).is_err(),
            "warm-up needs a duration"
        );
        assert!(
            parse(&["--putv-ratio", "0.5"]).is_err(),
            "mix flags need --get-ratio"
        );
    }

    #[test]
    fn cluster_runs_take_workloads_whose_keys_come_from_a_partition() {
        let refused = |flags: &[&str]| {
            let argv = ["corekv-loadgen", "--cluster"].iter().chain(flags);
            let args = Args::parse_from(argv);
            Config::from_args(&args).expect_err("refused").to_string()
        };
        let placement = ["--placement", "one-shard", "--server-shards", "2"];
        assert!(refused(&placement).contains("--placement"));
        assert!(refused(&["--preset", "concave-put-1"]).contains("putv-new"));
        assert!(refused(&["--preset", "concave-increments"]).contains("counter"));
        for flags in [&["--get-ratio", "0.5"][..], &["--atomic-keys", "3"], &[]] {
            let argv = ["corekv-loadgen", "--cluster"].iter().chain(flags);
            let config = Config::from_args(&Args::parse_from(argv)).expect("a cluster run");
            assert!(config.cluster);
        }
    }

    #[test]
    fn impossible_workloads_are_refused_before_running() {
        let refused = |args: &[&str]| config(args).expect_err("refused").to_string();
        assert!(refused(&["--connections", "0"]).contains("--connections"));
        assert!(refused(&["--threads", "3", "--connections", "2"]).contains("--threads"));
        assert!(
            refused(&["--sets-per-message", "0", "--gets-per-message", "0"])
                .contains("at least one request")
        );
        assert!(refused(&[
            "--keys",
            "10",
            "--connections",
            "5",
            "--sets-per-message",
            "3"
        ])
        .contains("at least"));
        assert!(refused(&["--addr", "nonsense"]).contains("--addr"));
        assert!(refused(&["--key-bytes", "7"]).contains("--key-bytes"));
        assert!(refused(&["--key-bytes", "8", "--keys", "65537"]).contains("can name (65536)"));
        assert!(refused(&["--rate", "0"]).contains("--rate"));
        assert!(refused(&["--duration", "0"]).contains("--duration"));
        assert!(refused(&["--get-ratio", "0.8", "--putv-ratio", "0.3"]).contains("at most 1"));
        assert!(refused(&["--get-ratio", "1.5"]).contains("--get-ratio"));
        assert!(refused(&[
            "--get-ratio",
            "0.5",
            "--distribution",
            "zipf",
            "--zipf-theta",
            "0"
        ])
        .contains("--zipf-theta"));
        assert!(refused(&["--get-ratio", "0.5", "--sets-per-message", "2"])
            .contains("cannot be combined"));
        assert!(refused(&[
            "--get-ratio",
            "0.5",
            "--putv-ratio",
            "0.1",
            "--protocol",
            "resp"
        ])
        .contains("corekv-only"));
        assert!(refused(&["--atomic-keys", "4", "--protocol", "resp"]).contains("corekv-only"));
        assert!(
            refused(&["--preset", "concave-put-1", "--protocol", "resp"]).contains("corekv-only")
        );
        assert!(
            refused(&["--preset", "concave-put-1", "--key-bytes", "12"]).contains("--key-bytes")
        );
        assert!(
            refused(&["--atomic-keys", "4", "--placement", "spread"]).contains("--server-shards")
        );
        assert!(refused(&[
            "--atomic-keys",
            "2",
            "--placement",
            "spread",
            "--server-shards",
            "4"
        ])
        .contains("at least --server-shards"));
        assert!(refused(&["--server-shards", "2"]).contains("only used with --placement"));
        assert!(refused(&["--preset", "concave-put-1", "--keys", "10"]).contains("--keys"));
        assert!(refused(&["--preset", "concave-increments", "--keys", "10"]).contains("--keys"));
    }
}
