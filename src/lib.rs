//! corekv: a key/value server for Linux that uses every core without locks.
//!
//! One glommio (io_uring) executor per core, each owning a shard of the key
//! space: its own hash map (and, with the log engine, its own append-only log).
//! A request for a key owned by another core travels as a message between
//! executors. Clients speak length-prefixed msgpack (docs/protocol.md), wire
//! compatible with the KVStore seed's Python client.
//!
//! # Layout
//!
//! Follow a request by reading the modules in this order:
//!
//! - [`server`]: per-shard listeners (SO_REUSEPORT), connections with buffered
//!   framing, and the *round* that serves all buffered messages at once.
//! - [`proto`]: the only code that knows msgpack — framing, request decoding and
//!   validation, reply encoding, wire error codes. No I/O.
//! - [`shard`]: the per-core owner of a table; key routing ([`shard::Router`]);
//!   the cross-core mesh of bounded channels; forwarded batches.
//! - [`table`]: the hash map and `apply(op)`: no I/O, no awaits, deterministic.
//!   It stores each key, value and version as one [`entry::Entry`]: a single
//!   reference-counted allocation that replies share instead of copying.
//! - [`txn`]: ATOMIC batches — key locks, undo, two-phase commit across shards.
//! - [`http`]: the optional HTTP API (`--http-addr`) — hyper on glommio,
//!   requests translated into msgpack messages and served by the same path.
//! - [`config`] and [`datadir`]: validated flags, the locked data directory.
//! - [`allocator`]: the process's allocator (mimalloc) and the sizes it
//!   really holds, which the memory limit counts.
//! - [`client`]: a blocking client library (std::net) shared by the CLI, the load
//!   generator and the tests.
//! - [`cli`]: the `corekv` command-line client (subcommands, output formats,
//!   exit statuses) on top of [`client`]; `src/bin/corekv.rs` only calls it.
//!
//! ARCHITECTURE.md has the codemap, the invariants and the glossary.

pub mod allocator;
pub mod cli;
pub mod client;
pub mod config;
pub mod datadir;
pub mod entry;
pub mod failpoint;
pub mod http;
pub mod log;
pub mod notify;
pub mod proto;
pub mod server;
pub mod shard;
pub mod table;
pub mod txn;
