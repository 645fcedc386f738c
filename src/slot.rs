//! Hash slots as Redis Cluster defines them: a key's slot is CRC16-XMODEM of
//! the key — or of its hash tag, the part between the first `{` and the next
//! `}` when that part is not empty — modulo [`NR_SLOTS`]. Keys that share a
//! tag share a slot, which is how a client keeps keys together on one node.
//!
//! This is the Redis Cluster specification's algorithm (its test vector:
//! "123456789" → 0x31C3), so cluster-aware Redis clients and corekv agree on
//! where every key lives.

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

/// Slots in the key space.
pub const NR_SLOTS: u16 = 16384;

/// CRC-16/XMODEM (polynomial 0x1021, initial value 0), Redis Cluster's,
/// sixteen bytes a step (slice-by-16 tables): a cluster node computes it for
/// every key of every request.
const CRC16: crc::Crc<u16, crc::Table<16>> =
    crc::Crc::<u16, crc::Table<16>>::new(&crc::CRC_16_XMODEM);

/// The slot of `key`.
pub fn key_slot(key: &[u8]) -> u16 {
    CRC16.checksum(hashed_part(key)) % NR_SLOTS
}

/// The part of `key` its slot is computed from: the hash tag if the key has a
/// non-empty one, else the whole key.
fn hashed_part(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    match key[open + 1..].iter().position(|&b| b == b'}') {
        Some(len) if len > 0 => &key[open + 1..open + 1 + len],
        _ => key,
    }
}

/// A range of slots as written in a cluster file: `"0-5460"` or `"42"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotRange {
    pub first: u16,
    pub last: u16,
}

impl SlotRange {
    pub fn slots(self) -> RangeInclusive<u16> {
        self.first..=self.last
    }

    pub fn nr_slots(self) -> usize {
        usize::from(self.last - self.first) + 1
    }
}

impl fmt::Display for SlotRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Why a slot range did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("slot range {text:?}: {why} (write \"FIRST-LAST\" or \"SLOT\", slots 0-{max})", max = NR_SLOTS - 1)]
pub struct BadSlotRange {
    text: String,
    why: &'static str,
}

impl FromStr for SlotRange {
    type Err = BadSlotRange;

    fn from_str(text: &str) -> Result<SlotRange, BadSlotRange> {
        let bad = |why| BadSlotRange {
            text: text.to_owned(),
            why,
        };
        let slot = |part: &str| -> Result<u16, BadSlotRange> {
            let n: u16 = part.trim().parse().map_err(|_| bad("not a slot number"))?;
            if n >= NR_SLOTS {
                return Err(bad("a slot past the last"));
            }
            Ok(n)
        };
        let (first, last) = match text.split_once('-') {
            Some((first, last)) => (slot(first)?, slot(last)?),
            None => {
                let n = slot(text)?;
                (n, n)
            }
        };
        if first > last {
            return Err(bad("the first slot is after the last"));
        }
        Ok(SlotRange { first, last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_redis_cluster_specification_and_garnet() {
        // The specification's CRC16 check value, then Garnet's slot test vectors.
        assert_eq!(CRC16.checksum(b"123456789"), 0x31C3);
        for (key, slot) in [("x", 16287), ("y", 12222), ("a", 15495), ("wxz", 949)] {
            assert_eq!(key_slot(key.as_bytes()), slot, "{key}");
        }
        assert_eq!(key_slot(b"foo"), 12182);
    }

    #[test]
    fn a_hash_tag_decides_the_slot_when_it_is_not_empty() {
        let tagged = key_slot(b"user1000");
        assert_eq!(key_slot(b"{user1000}.following"), tagged);
        assert_eq!(key_slot(b"{user1000}.followers"), tagged);
        assert_eq!(key_slot(b"foo{user1000}bar{other}"), tagged);
        // An empty tag, or none closed, hashes the whole key.
        assert_eq!(
            key_slot(b"foo{}{bar}"),
            CRC16.checksum(b"foo{}{bar}") % NR_SLOTS
        );
        assert_eq!(key_slot(b"foo{bar"), CRC16.checksum(b"foo{bar") % NR_SLOTS);
        assert_eq!(key_slot(b"{{bar}}"), key_slot(b"{bar"));
    }

    #[test]
    fn slot_ranges_parse_as_written_in_cluster_files() {
        assert_eq!(
            "0-5460".parse(),
            Ok(SlotRange {
                first: 0,
                last: 5460
            })
        );
        assert_eq!(
            "42".parse(),
            Ok(SlotRange {
                first: 42,
                last: 42
            })
        );
        assert_eq!(
            " 7 - 9 "
                .trim()
                .parse::<SlotRange>()
                .map(SlotRange::nr_slots),
            Ok(3)
        );
        for bad in ["", "x", "5-", "-5", "9-7", "16384", "0-16384", "1-2-3"] {
            let error = bad.parse::<SlotRange>().expect_err(bad);
            assert!(error.to_string().contains(&format!("{bad:?}")), "{error}");
        }
    }
}
