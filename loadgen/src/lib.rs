//! corekv-loadgen: a load generator for corekv (length-prefixed msgpack) and
//! Redis (RESP), so both are measured by one tool.
//!
//! Every connection sends messages, checks each reply against the reply a
//! correct server must send, and records each message's latency. Closed loop by
//! default (`--pipeline` keeps several messages in flight); open loop with
//! `--rate`, latency then measured from each message's intended send time.
//! Connections are tasks spread over glommio executors, one per `--threads`.
//! The result is a [`Report`]: throughput, HdrHistogram latency percentiles per
//! message, and every error.
//!
//! # Layout
//!
//! Read in this order to follow a message:
//!
//! - [`config`]: flags and presets → a validated [`Config`].
//! - [`keys`]: key names, values, each connection's partition, placement on
//!   corekv shards.
//! - [`script`]: the interface between a connection and a workload; the
//!   workloads are [`workload`] (fixed shape: KVStore, missing gets, fresh
//!   puts, ATOMIC), [`mix`] (random GET/SET/PUTV over [`distribution`]; with
//!   `--preloaded`, over keys an earlier run loaded, judged by [`preloaded`])
//!   and [`increments`] (the contended counter).
//! - [`template`]: a fixed message as bytes with key/value holes, rendered
//!   without allocating.
//! - [`protocol`]: msgpack and RESP encodings, and where a reply ends.
//! - [`connection`]: one connection's send → judge loop, closed or open
//!   ([`pacing`]), by count or by time.
//! - [`runner`]: set-up, executors, the start gate, merging results.
//! - [`progress`] and [`report`]: the live stderr line, the final figures.
//!
//! The binary (`src/main.rs`) parses flags, calls [`run`], prints the report,
//! writes `--json`, and exits non-zero unless [`Report::passed`].

#![deny(unsafe_code)]

pub mod config;
pub mod connection;
pub mod distribution;
pub mod increments;
pub mod keys;
pub mod mix;
pub mod pacing;
pub mod preloaded;
pub mod progress;
pub mod protocol;
pub mod report;
pub mod runner;
pub mod script;
pub mod template;
pub mod workload;

pub use config::{Args, Config, ConfigError, Preset};
pub use protocol::Protocol;
pub use report::Report;
pub use runner::{run, RunError};
