//! corekv-loadgen: a closed-loop load generator for corekv (length-prefixed
//! msgpack) and Redis (RESP), so both are measured by one tool.
//!
//! Every connection sends a message, waits for its reply, checks it byte for
//! byte against the reply a correct server must send, and repeats; `--pipeline`
//! keeps several messages in flight. Connections are tasks spread over glommio
//! executors, one per `--threads`. The result is a [`Report`]: throughput,
//! HdrHistogram latency percentiles per message, and every error.
//!
//! # Layout
//!
//! Read in this order to follow a message:
//!
//! - [`config`]: flags and presets → a validated [`Config`].
//! - [`workload`]: which keys and values message `m` of connection `c` uses.
//! - [`template`]: a message as fixed bytes with key/value holes, rendered
//!   without allocating.
//! - [`protocol`]: msgpack and RESP request/expected-reply templates, and where
//!   a reply ends in a buffer.
//! - [`connection`]: one connection's send → verify → send loop.
//! - [`runner`]: executors, connection set-up, the start gate, merging results.
//! - [`progress`] and [`report`]: the live stderr line, the final figures.
//!
//! The binary (`src/main.rs`) parses flags, calls [`run`], prints the report,
//! writes `--json`, and exits non-zero unless [`Report::passed`].

pub mod config;
pub mod connection;
pub mod progress;
pub mod protocol;
pub mod report;
pub mod runner;
pub mod template;
pub mod workload;

pub use config::{Args, Config, ConfigError, Preset};
pub use protocol::Protocol;
pub use report::Report;
pub use runner::{run, RunError};
