//! Request latency per command family, as each shard's connections measure
//! it: from the moment a message's bytes were read (the read that completed
//! it) to the moment its reply was written to the socket.
//!
//! The cost is kept off the request path: a connection reads the clock once
//! when a read returns and once when a round's replies are written, counts
//! the round's requests by family ([`Tally`], a pass over the decoded ops
//! with no allocation), and adds the counts to this shard's histograms
//! ([`RequestLatency::observe`]: one bucket search per round, plain stores).
//! Every request of a round gets the round's latency — they were read
//! together and answered by one write.

use super::histogram::{bucket_of, SharedHistogram};
use crate::proto::{Op, OpKind};
use std::time::Duration;

/// Upper bounds of the request latency buckets, in nanoseconds (10 µs … 2.5 s).
pub const REQUEST_NANOS_BOUNDS: [u64; 17] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
];

/// What a request is, for its latency: by opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// GET, GETV, TTL, EXPIRETIME.
    Get,
    /// SET, PUTV, and the expiry writes (SET with a TTL or a deadline or
    /// keeping it, EXPIRE, EXPIREAT, PERSIST).
    Set,
    /// DEL, RM.
    Delete,
    /// ATOMIC (one request, however many it holds).
    Atomic,
    /// STATS and SLOTMAP: requests about the node, not a key.
    Stats,
    /// A message refused whole (it does not decode or validate).
    Other,
}

impl Family {
    pub const ALL: [Family; 6] = [
        Family::Get,
        Family::Set,
        Family::Delete,
        Family::Atomic,
        Family::Stats,
        Family::Other,
    ];

    pub fn of(kind: OpKind) -> Family {
        match kind {
            OpKind::Get | OpKind::GetV | OpKind::Check | OpKind::Scan => Family::Get,
            OpKind::Ttl | OpKind::ExpireTime => Family::Get,
            OpKind::Set | OpKind::PutV | OpKind::IncrBy | OpKind::Append | OpKind::IncrByFloat => {
                Family::Set
            }
            OpKind::SetTtl | OpKind::Expire | OpKind::Persist | OpKind::ExpireAt => Family::Set,
            OpKind::SetKeepTtl | OpKind::SetAt => Family::Set,
            OpKind::Del | OpKind::Rm | OpKind::Flush => Family::Delete,
            OpKind::Atomic => Family::Atomic,
            OpKind::Stats => Family::Stats,
            OpKind::SlotMap => Family::Stats,
        }
    }

    /// The `command` label.
    pub fn name(self) -> &'static str {
        match self {
            Family::Get => "get",
            Family::Set => "set",
            Family::Delete => "delete",
            Family::Atomic => "atomic",
            Family::Stats => "stats",
            Family::Other => "other",
        }
    }
}

/// A round's requests, counted by family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally([u64; Family::ALL.len()]);

impl Tally {
    /// Counts the top-level requests of `ops` (an ATOMIC's body is part of
    /// it, not requests of its own) and `nr_refused` refused messages.
    pub fn of(ops: &[Op], nr_refused: usize) -> Tally {
        let mut tally = Tally::default();
        let mut i = 0;
        while i < ops.len() {
            tally.0[Family::of(ops[i].kind) as usize] += 1;
            i += 1 + ops[i].nr_inner as usize;
        }
        tally.0[Family::Other as usize] += nr_refused as u64;
        tally
    }

    pub fn count(&self, family: Family) -> u64 {
        self.0[family as usize]
    }
}

/// One shard's request latency histograms, one per family.
#[derive(Debug)]
pub struct RequestLatency {
    families: [SharedHistogram; Family::ALL.len()],
}

impl Default for RequestLatency {
    fn default() -> RequestLatency {
        RequestLatency {
            families: Family::ALL.map(|_| SharedHistogram::new(&REQUEST_NANOS_BOUNDS)),
        }
    }
}

impl RequestLatency {
    /// Records that the requests in `tally` took `elapsed` each. Only the
    /// shard these histograms belong to may call it.
    pub fn observe(&self, tally: Tally, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = bucket_of(&REQUEST_NANOS_BOUNDS, nanos);
        for (histogram, &n) in self.families.iter().zip(&tally.0) {
            if n > 0 {
                histogram.observe_in(bucket, nanos, n);
            }
        }
    }

    pub fn family(&self, family: Family) -> &SharedHistogram {
        &self.families[family as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{decode_message, RequestLimits};

    fn ops(body: &[u8]) -> Vec<Op> {
        let limits = RequestLimits {
            max_key_bytes: 1024,
        };
        let mut ops = Vec::new();
        decode_message(body, 0..body.len(), &limits, &mut ops).expect("valid message");
        ops
    }

    #[test]
    fn an_atomic_batch_counts_once_and_its_body_not_at_all() {
        // [[0,"a"], [3, [[1,"a",1], [2,"b"]]], [7], [6,"c"]]
        let body = [
            0x94, 0x92, 0x00, 0xa1, b'a', 0x92, 0x03, 0x92, 0x93, 0x01, 0xa1, b'a', 0x01, 0x92,
            0x02, 0xa1, b'b', 0x91, 0x07, 0x92, 0x06, 0xa1, b'c',
        ];
        let tally = Tally::of(&ops(&body), 2);
        let counts = Family::ALL.map(|f| tally.count(f));
        assert_eq!(counts, [1, 0, 1, 1, 1, 2]);
    }

    #[test]
    fn a_round_adds_its_requests_to_one_bucket_of_each_family() {
        let latency = RequestLatency::default();
        let tally = Tally::of(&ops(&[0x92, 0x92, 0x00, 0xa1, b'a', 0x91, 0x07]), 0);
        latency.observe(tally, Duration::from_micros(30));
        let get = latency.family(Family::Get).read();
        assert_eq!(get.counts[2], 1, "30 µs is in the 50 µs bucket");
        assert_eq!(get.sum, 30_000);
        assert_eq!(latency.family(Family::Stats).read().count(), 1);
        assert_eq!(latency.family(Family::Set).read().count(), 0);
    }
}
