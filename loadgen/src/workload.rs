//! The fixed-shape workload: every message has the same requests — `writes`
//! writes, then `gets` GETs — optionally wrapped in one ATOMIC. This covers the
//! KVStore preset, gets of missing keys, fresh-key PUTV puts and the ATOMIC
//! benchmarks. [`Plan`] says which keys and values message `m` of a connection
//! uses (pure arithmetic); [`Fixed`] renders it through the protocol's templates
//! and checks the reply byte for byte.
//!
//! Requests of a message, in order:
//! - write `j` (`j < writes`): SET `key_j` to `value(key_j, m)` on a key the
//!   connection owns, or (`--write-op putv-new`) PUTV version 0 of a fresh key,
//!   whose result is `[-4, 1]`;
//! - GET `j` reads `key_(j % writes)`, one of the keys just written, so its
//!   expected result is `[-1, value]`.
//!
//! With `writes = 0` there is nothing to read back; the GETs then read keys of
//! the namespace nobody writes and expect not-found — the concave seed's "gets
//! of missing keys" benchmark.
//!
//! An ATOMIC message `[[3, [requests]]]` has the same results, flattened; it
//! aborts only on a server error, which is then a mismatch. Values change with
//! every message, so a stale or misrouted read is a mismatch too. Key and value
//! bytes are described in [`crate::keys`].

use crate::keys::{self, fresh_index, ConnKeys, MISSING_PREFIX, OWNED_PREFIX};
use crate::protocol::Protocol;
use crate::script::{compare, Script};
use crate::template::Template;
use std::rc::Rc;

/// What the writes of a fixed message are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteOp {
    /// SET of a key the connection owns (no result element).
    Set,
    /// PUTV version 0 of a key never used before (result `[-4, 1]`).
    PutvNew,
}

/// The shape every message shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub writes: u32,
    pub gets: u32,
    pub write_op: WriteOp,
    /// The message is one ATOMIC batch of its requests.
    pub atomic: bool,
    /// Between [`keys::MIN_KEY_BYTES`] and [`keys::MAX_KEY_BYTES`].
    pub key_bytes: usize,
    pub value_bytes: usize,
}

impl Shape {
    /// Requests per message (inside the ATOMIC, if any).
    pub fn ops(&self) -> u32 {
        self.writes + self.gets
    }

    /// Whether GETs read keys that were just written (else keys never written).
    pub fn gets_find_values(&self) -> bool {
        self.writes > 0
    }

    /// Result elements of a reply.
    pub fn results(&self) -> u32 {
        match self.write_op {
            WriteOp::Set => self.gets,
            WriteOp::PutvNew => self.writes + self.gets,
        }
    }

    /// Keys a message draws from the connection's partition.
    pub fn keys_per_message(&self) -> u64 {
        u64::from(if self.writes > 0 {
            self.writes
        } else {
            self.gets
        })
    }

    /// The namespace of the keys drawn from the partition.
    pub fn partition_prefix(&self) -> [u8; 4] {
        if self.writes > 0 {
            OWNED_PREFIX
        } else {
            MISSING_PREFIX
        }
    }
}

/// Keys and values of one message; reused from message to message.
#[derive(Debug, Default)]
pub struct Plan {
    /// Key index per request, writes first, then GETs.
    pub keys: Vec<u64>,
    /// Value seed per write.
    pub values: Vec<u64>,
    prefix: [u8; 4],
}

impl Plan {
    /// Fills in message `message` of the connection owning `keys`.
    pub fn fill(&mut self, shape: &Shape, keys: &ConnKeys, seed: u64, message: u64) {
        self.keys.clear();
        self.values.clear();
        let fresh = shape.write_op == WriteOp::PutvNew && shape.writes > 0;
        self.prefix = if fresh {
            keys.fresh_prefix
        } else {
            shape.partition_prefix()
        };
        let per_message = shape.keys_per_message();
        for j in 0..u64::from(shape.writes) {
            let key = if fresh {
                fresh_index(keys.conn, message * u64::from(shape.writes) + j)
            } else {
                keys.key(message, per_message, j)
            };
            self.keys.push(key);
            self.values.push(keys::mix(seed ^ key, message));
        }
        for j in 0..u64::from(shape.gets) {
            let key = match shape.writes {
                0 => keys.key(message, per_message, j),
                writes => self.keys[(j % u64::from(writes)) as usize],
            };
            self.keys.push(key);
        }
    }

    /// Writes request `op`'s key into `out` (the whole slice, `key_bytes` long).
    pub fn write_key(&self, op: usize, out: &mut [u8]) {
        keys::write_key(&self.prefix, self.keys[op], out);
    }

    /// Writes write `write`'s value into `out` (the whole slice).
    pub fn write_value(&self, write: usize, out: &mut [u8]) {
        keys::write_value(self.values[write], out);
    }
}

/// Templates every connection of an executor shares.
#[derive(Debug)]
pub struct FixedTemplates {
    pub protocol: Protocol,
    pub shape: Shape,
    pub request: Template,
    pub reply: Template,
}

impl FixedTemplates {
    pub fn new(protocol: Protocol, shape: Shape) -> FixedTemplates {
        FixedTemplates {
            protocol,
            shape,
            request: protocol.request_template(&shape),
            reply: protocol.reply_template(&shape),
        }
    }
}

/// One connection's fixed-shape messages.
pub struct Fixed {
    templates: Rc<FixedTemplates>,
    keys: ConnKeys,
    plan: Plan,
    seed: u64,
}

impl Fixed {
    pub fn new(templates: Rc<FixedTemplates>, keys: ConnKeys, seed: u64) -> Fixed {
        Fixed {
            templates,
            keys,
            plan: Plan::default(),
            seed,
        }
    }
}

impl Script for Fixed {
    fn next(&mut self, message: u64, out: &mut Vec<u8>, expected: &mut Vec<u8>) -> u32 {
        let t = &*self.templates;
        self.plan.fill(&t.shape, &self.keys, self.seed, message);
        t.request.render(&self.plan, out);
        t.reply.render(&self.plan, expected);
        t.shape.ops()
    }

    fn check(&mut self, _: u64, reply: &[u8], expected: &[u8], _: bool) -> Result<(), String> {
        compare(self.templates.protocol, reply, expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(writes: u32, gets: u32) -> Shape {
        Shape {
            writes,
            gets,
            write_op: WriteOp::Set,
            atomic: false,
            key_bytes: 16,
            value_bytes: 20,
        }
    }

    fn key_text(plan: &Plan, op: usize) -> String {
        let mut key = [0u8; 16];
        plan.write_key(op, &mut key);
        String::from_utf8(key.to_vec()).expect("ascii key")
    }

    #[test]
    fn gets_read_the_keys_the_same_message_set() {
        let keys = ConnKeys::new(1, 4, 400, 7);
        let mut plan = Plan::default();
        plan.fill(&shape(3, 5), &keys, 7, 0);
        assert_eq!(plan.keys.len(), 8);
        let k = &plan.keys;
        assert_eq!(k[3..], [k[0], k[1], k[2], k[0], k[1]]);
        assert!(plan.keys.iter().all(|k| (100..200).contains(k)));
        assert!(key_text(&plan, 0).starts_with("key-"));
    }

    /// The loading run docs/benchmarks.md gives for `--preloaded`.
    #[test]
    fn sets_only_with_keys_of_connections_times_sets_times_messages_write_each_key_once() {
        for seed in [0, 7, 12_345] {
            let (nr_conns, messages, nr_keys) = (4, 10, 2_000);
            let mut writes = vec![0u32; nr_keys as usize];
            let mut plan = Plan::default();
            for conn in 0..nr_conns {
                let keys = ConnKeys::new(conn, nr_conns, nr_keys, seed);
                for message in 0..messages {
                    plan.fill(&shape(50, 0), &keys, seed, message);
                    plan.keys.iter().for_each(|&k| writes[k as usize] += 1);
                }
                assert!(key_text(&plan, 0).starts_with("key-"), "the mix's names");
            }
            assert!(writes.iter().all(|&n| n == 1), "seed {seed}");
        }
    }

    #[test]
    fn values_change_with_every_message() {
        let keys = ConnKeys::new(0, 1, 1, 9);
        let mut plan = Plan::default();
        plan.fill(&shape(1, 1), &keys, 9, 0);
        let first = plan.values[0];
        plan.fill(&shape(1, 1), &keys, 9, 1);
        assert_eq!(plan.keys[0], 0, "a one-key partition reuses its key");
        assert_ne!(plan.values[0], first);
    }

    #[test]
    fn read_only_messages_use_the_never_written_namespace() {
        let keys = ConnKeys::new(0, 1, 100, 0);
        let mut plan = Plan::default();
        plan.fill(&shape(0, 2), &keys, 0, 0);
        assert!(key_text(&plan, 0).starts_with("nil-"));
        assert_ne!(plan.keys[0], plan.keys[1]);
        assert_eq!(shape(0, 2).results(), 2);
    }

    #[test]
    fn fresh_puts_never_reuse_a_key_and_are_answered_one_element_each() {
        let put = Shape {
            write_op: WriteOp::PutvNew,
            ..shape(3, 1)
        };
        assert_eq!(put.results(), 4);
        let keys = ConnKeys::new(5, 8, 800, 0).with_fresh_prefix(*b"Nabc");
        let mut plan = Plan::default();
        let mut seen = std::collections::BTreeSet::new();
        for message in 0..10 {
            plan.fill(&put, &keys, 0, message);
            seen.extend(plan.keys[..3].iter().copied());
            assert_eq!(plan.keys[3], plan.keys[0], "the GET reads a key just put");
        }
        assert_eq!(seen.len(), 30);
        assert_eq!(key_text(&plan, 0), format!("Nabc{:012x}", plan.keys[0]));
        assert!(seen.iter().all(|k| k >> 32 == 5), "connection 5's keys");
    }
}
