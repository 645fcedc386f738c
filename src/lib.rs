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
//! - [`net`]: sockets on each shard's own io_uring ring, cheap per message.
//! - [`server`]: per-shard listeners (SO_REUSEPORT), connections with buffered
//!   framing, and the *round* that serves all buffered messages at once;
//!   start-up and shutdown.
//! - [`proto`]: the only code that knows msgpack — framing, request decoding and
//!   validation, reply encoding, wire error codes, STATS, and the typed
//!   messages the clients, the CLI and the HTTP API build. No I/O.
//! - [`shard`]: the per-core owner of a table, a log and its ends of the mesh
//!   of bounded channels; runs the requests it owns and its peers' batches.
//! - [`txn`]: ATOMIC batches — key locks, undo, a shard's side of two-phase
//!   commit (the participant) and the coordinator.
//! - [`table`]: the hash map and `apply(op)`, which says what a request
//!   changed (an effect): no I/O, no awaits, deterministic. It stores each
//!   key, value and version as one [`entry::Entry`]: a single
//!   reference-counted allocation that replies share instead of copying.
//! - [`log`]: each shard's append-only log — record format, group commit,
//!   recovery, compaction.
//! - [`http`]: the optional HTTP API (`--http-addr`) — hyper on glommio,
//!   requests translated into typed messages and served by the same path.
//! - [`ids`]: `ShardId`, `TxnId` and key routing ([`ids::Router`]), by hash
//!   or by [`slot`] (Redis Cluster's hash slots).
//! - [`cluster`]: the static cluster file: nodes, addresses, slot ranges.
//! - [`metrics`]: the figures `/metrics` reports — request latency, log syncs,
//!   errors — each written only by the shard it describes.
//! - [`backup`]: an online, consistent copy of every shard (`corekv backup`).
//! - [`config`] and [`datadir`]: validated flags, the locked data directory.
//! - [`sys`]: every libc call, behind safe functions.
//! - [`failpoint`] and [`notify`]: I/O failpoints for tests; executor-local
//!   wait-until.
//! - [`allocator`]: the process's allocator (mimalloc) and the sizes it
//!   really holds, which the memory limit counts.
//! - [`client`]: a blocking client library (std::net) shared by the CLI, the load
//!   generator and the tests.
//! - [`cli`]: the `corekv` command-line client (subcommands, output formats,
//!   exit statuses) on top of [`client`]; `src/bin/corekv.rs` only calls it.
//!
//! Imports flow one way: in this chain a module may use the ones to its left,
//! never one to its right.
//!
//! ```text
//! slot, sys, failpoint, notify, allocator → ids, entry, net → proto → table
//!   → log → shard → txn → metrics → config, cluster → datadir → server
//!   → backup → http → bin
//!                                           (client → cli beside: proto, ids only)
//! ```
//!
//! A lower layer that needs something from a higher one takes it as a
//! parameter or a small trait ([`shard::Transactions`]), never an import;
//! `tests/layering.rs` checks it. Unsafe code is in [`sys`] (system calls), in
//! [`entry`] and [`allocator`] (the entry's hand-made allocation), and in
//! `net::ring`'s one submission of a read whose buffer the kernel fills
//! later, only.
//!
//! ARCHITECTURE.md has the codemap, the invariants and the glossary.

#![deny(unsafe_code)]

// The one hand-made data structure (a reference-counted single allocation per
// entry) and the allocator calls it sizes itself with are the only unsafe code
// outside `sys`; every block says why it is sound.
#[allow(unsafe_code)]
pub mod allocator;
pub mod backup;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod datadir;
#[allow(unsafe_code)]
pub mod entry;
pub mod failpoint;
pub mod http;
pub mod ids;
pub mod log;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod proto;
pub mod server;
pub mod shard;
pub mod slot;
// The one module with unsafe code: every libc call and FFI hand-over, each
// wrapped in a safe function.
#[allow(unsafe_code)]
pub mod sys;
pub mod table;
pub mod txn;
