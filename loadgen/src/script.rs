//! What a connection sends and how it judges each reply: the one interface
//! between the connection loop ([`crate::connection`]) and a workload.
//!
//! Implementations: [`crate::workload::Fixed`] (the same shape every message:
//! KVStore, missing gets, fresh puts, ATOMIC batches), [`crate::mix::Mix`]
//! (random GET/SET/PUTV over a distribution) and its [`crate::mix::Prefill`]
//! (with `--preloaded`, its replies judged by [`crate::preloaded`]),
//! and [`crate::increments::Increments`] (the contended counter). A script is
//! owned by one connection; it renders into buffers the connection reuses, so
//! a well-behaved script allocates nothing per message.

use crate::protocol::Protocol;

/// Counts some workloads keep besides matches and mismatches (zero elsewhere):
/// the increments workload's PUTVs, and a `--preloaded` mix's GETs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// PUTVs answered.
    pub attempts: u64,
    /// PUTVs applied.
    pub successes: u64,
    /// PUTVs refused because another connection wrote first.
    pub conflicts: u64,
    /// Of `successes`, those answered inside the measured window.
    pub measured_successes: u64,
    /// `--preloaded`: GETs that found a value that fits.
    pub get_hits: u64,
    /// `--preloaded`: GETs answered not-found (each also makes its message a mismatch).
    pub get_misses: u64,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.attempts += other.attempts;
        self.successes += other.successes;
        self.conflicts += other.conflicts;
        self.measured_successes += other.measured_successes;
        self.get_hits += other.get_hits;
        self.get_misses += other.get_misses;
    }
}

pub trait Script {
    /// Appends message `message`'s request to `out` and, if the reply is known
    /// in advance, its exact bytes to `expected`. Returns the number of
    /// requests in the message (for RESP, also the number of replies).
    fn next(&mut self, message: u64, out: &mut Vec<u8>, expected: &mut Vec<u8>) -> u32;

    /// Judges the reply to message `message`; `measured` says whether it
    /// arrived inside the measured window. `Err` describes a wrong reply.
    fn check(
        &mut self,
        message: u64,
        reply: &[u8],
        expected: &[u8],
        measured: bool,
    ) -> Result<(), String>;

    fn tally(&self) -> Tally {
        Tally::default()
    }
}

/// The check of scripts whose replies are known in advance: byte equality.
pub fn compare(protocol: Protocol, reply: &[u8], expected: &[u8]) -> Result<(), String> {
    if reply == expected {
        return Ok(());
    }
    Err(format!(
        "expected {}, got {}",
        protocol.describe(expected),
        protocol.describe(reply)
    ))
}
