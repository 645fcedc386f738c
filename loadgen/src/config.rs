//! Command-line flags → a validated [`Config`]. A preset fills in a seed
//! benchmark's workload; any flag given explicitly overrides the preset, so
//! `--preset kvstore --connections 4` is the KVStore workload on 4 connections.
//! Every check happens here, before a connection is opened.

use crate::protocol::Protocol;
use crate::workload::{Shape, MAX_KEY_BYTES, MIN_KEY_BYTES};
use clap::{Parser, ValueEnum};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// Largest value accepted: corekv's default frame limit is 64 MiB, and a message
/// holds several values.
const MAX_VALUE_BYTES: usize = 1 << 20;
/// Requests per message beyond this are almost certainly a typo.
const MAX_OPS_PER_MESSAGE: u32 = 1 << 20;

/// A named workload replaying a seed's benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// KVStore: 100 connections × 500 messages of 50 SET + 50 GET, replies verified.
    Kvstore,
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::Kvstore => "kvstore",
        }
    }
}

/// The workload knobs a preset may set.
#[derive(Debug, Clone, Copy)]
struct Knobs {
    connections: u32,
    messages: u64,
    sets: u32,
    gets: u32,
    /// `None`: just enough for each connection's SETs of one message, so every
    /// message rewrites the same keys (the KVStore seed's hot set).
    keys: Option<u64>,
    key_bytes: usize,
    value_bytes: usize,
    pipeline: u32,
}

impl Knobs {
    /// Without a preset: one SET and one GET per message over 100 000 keys.
    const DEFAULT: Knobs = Knobs {
        connections: 50,
        messages: 10_000,
        sets: 1,
        gets: 1,
        keys: Some(100_000),
        key_bytes: 16,
        value_bytes: 32,
        pipeline: 1,
    };

    fn of(preset: Option<Preset>) -> Knobs {
        match preset {
            None => Knobs::DEFAULT,
            // The seed's Client.hs: 100 threads × 500 rounds, each round the same
            // 50 keys and values of 10 bytes, set then read back.
            Some(Preset::Kvstore) => Knobs {
                connections: 100,
                messages: 500,
                sets: 50,
                gets: 50,
                keys: None,
                key_bytes: 10,
                value_bytes: 10,
                pipeline: 1,
            },
        }
    }
}

/// corekv-loadgen: closed-loop load generator for corekv (msgpack) and Redis (RESP).
///
/// Each connection sends a message, waits for its reply, checks it byte for
/// byte against the reply a correct server sends, and repeats (with --pipeline
/// N, keeping N messages in flight). Exits non-zero if any reply did not match
/// or any connection failed.
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

    /// Connections, spread round-robin over the threads [default: 50].
    #[arg(long)]
    pub connections: Option<u32>,

    /// Executor threads (one glommio executor each, not pinned).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Messages each connection sends [default: 10000].
    #[arg(long)]
    pub messages: Option<u64>,

    /// SET requests per message [default: 1].
    #[arg(long)]
    pub sets_per_message: Option<u32>,

    /// GET requests per message, reading the keys the same message set [default: 1].
    #[arg(long)]
    pub gets_per_message: Option<u32>,

    /// Size of the key space, split evenly between connections [default: 100000;
    /// kvstore: connections × sets-per-message].
    #[arg(long)]
    pub keys: Option<u64>,

    /// Bytes per key [default: 16; kvstore: 10].
    #[arg(long)]
    pub key_bytes: Option<usize>,

    /// Bytes per value [default: 32; kvstore: 10].
    #[arg(long)]
    pub value_bytes: Option<usize>,

    /// Messages in flight per connection [default: 1].
    #[arg(long)]
    pub pipeline: Option<u32>,

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
}

/// A validated run.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub preset: Option<Preset>,
    pub nr_connections: u32,
    pub nr_threads: usize,
    pub messages_per_connection: u64,
    pub shape: Shape,
    pub nr_keys: u64,
    pub pipeline: u32,
    pub seed: u64,
    pub reply_timeout: Duration,
    pub show_progress: bool,
}

impl Config {
    pub fn from_args(args: &Args) -> Result<Config, ConfigError> {
        let knobs = Knobs::of(args.preset);
        let connections = args.connections.unwrap_or(knobs.connections);
        let sets = args.sets_per_message.unwrap_or(knobs.sets);
        let hot_set = u64::from(connections) * u64::from(sets.max(1));
        let config = Config {
            addr: resolve(&args.addr)?,
            protocol: args.protocol,
            preset: args.preset,
            nr_connections: connections,
            nr_threads: args.threads,
            messages_per_connection: args.messages.unwrap_or(knobs.messages),
            shape: Shape {
                sets,
                gets: args.gets_per_message.unwrap_or(knobs.gets),
                key_bytes: args.key_bytes.unwrap_or(knobs.key_bytes),
                value_bytes: args.value_bytes.unwrap_or(knobs.value_bytes),
            },
            nr_keys: args.keys.or(knobs.keys).unwrap_or(hot_set),
            pipeline: args.pipeline.unwrap_or(knobs.pipeline),
            seed: args.seed,
            reply_timeout: Duration::from_millis(args.reply_timeout_ms),
            show_progress: !args.quiet,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let counts = [
            ("connections", u64::from(self.nr_connections)),
            ("threads", self.nr_threads as u64),
            ("messages", self.messages_per_connection),
            ("pipeline", u64::from(self.pipeline)),
            ("reply-timeout-ms", self.reply_timeout.as_millis() as u64),
        ];
        if let Some((flag, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err(ConfigError::Zero { flag });
        }
        if self.nr_threads > self.nr_connections as usize {
            return Err(ConfigError::Threads {
                threads: self.nr_threads,
                connections: self.nr_connections,
            });
        }
        self.validate_shape()?;
        self.validate_keys()
    }

    fn validate_shape(&self) -> Result<(), ConfigError> {
        let ops = u64::from(self.shape.sets) + u64::from(self.shape.gets);
        match ops {
            0 => return Err(ConfigError::EmptyMessage),
            n if n > u64::from(MAX_OPS_PER_MESSAGE) => return Err(ConfigError::TooManyOps(n)),
            _ => {}
        }
        if self.shape.value_bytes > MAX_VALUE_BYTES {
            return Err(ConfigError::ValueBytes(self.shape.value_bytes));
        }
        Ok(())
    }

    fn validate_keys(&self) -> Result<(), ConfigError> {
        let key_bytes = self.shape.key_bytes;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key_bytes) {
            return Err(ConfigError::KeyBytes(key_bytes));
        }
        let capacity = self.shape.key_capacity();
        if self.nr_keys > capacity {
            return Err(ConfigError::TooManyKeys {
                keys: self.nr_keys,
                key_bytes,
                capacity,
            });
        }
        let needed = u64::from(self.nr_connections) * u64::from(self.shape.sets.max(1));
        if self.nr_keys < needed {
            return Err(ConfigError::TooFewKeys {
                keys: self.nr_keys,
                needed,
            });
        }
        Ok(())
    }

    /// Requests per message.
    pub fn ops_per_message(&self) -> u64 {
        u64::from(self.shape.ops())
    }
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

    #[test]
    fn kvstore_preset_is_the_seed_benchmark_and_flags_override_it() {
        let c = config(&["--preset", "kvstore"]).expect("valid");
        assert_eq!(c.nr_connections, 100);
        assert_eq!(c.messages_per_connection, 500);
        assert_eq!((c.shape.sets, c.shape.gets), (50, 50));
        assert_eq!(c.pipeline, 1);
        assert_eq!((c.shape.key_bytes, c.shape.value_bytes), (10, 10));
        assert_eq!(
            c.nr_keys,
            100 * 50,
            "each connection rewrites its own 50 keys"
        );
        let c = config(&["--preset", "kvstore", "--connections", "4"]).expect("valid");
        assert_eq!((c.nr_connections, c.shape.sets, c.nr_keys), (4, 50, 200));
        let c = config(&["--preset", "kvstore", "--keys", "100000"]).expect("valid");
        assert_eq!(c.nr_keys, 100_000);
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
    }
}
