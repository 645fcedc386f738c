//! The table's side of expiry: SET with a TTL (or a deadline, or keeping
//! the key's), EXPIRE, EXPIREAT, TTL, EXPIRETIME and PERSIST, the removal of
//! keys that are due (the shard's sweep), recovery's loading of deadlines,
//! and the one wall-clock reading the layers above use.
//!
//! Semantics, as Redis's:
//! - A key whose deadline is at or before the table's clock is absent to
//!   every request (`Table::find_live`), whether or not it is still stored.
//! - A plain write (SET, PUTV) replaces the value and clears the deadline;
//!   SET with a TTL or a deadline sets both; SET keeping the deadline
//!   (KEEPTTL) replaces the value only. EXPIRE, EXPIREAT and PERSIST change
//!   only the deadline: the value and the version stay.
//! - A deadline that is not in the future (EXPIRE 0, EXPIREAT or SET with a
//!   deadline in the past) removes the key at once.
//! - TTL answers the remaining milliseconds, EXPIRETIME the deadline,
//!   [`TTL_NO_DEADLINE`] for a key without one, [`TTL_MISSING`] for an
//!   absent key (PTTL's and PEXPIRETIME's answers).
//!
//! Deadlines are absolute (Unix milliseconds): a TTL becomes `now + ttl_ms`
//! once, when the request runs, and that is what the entry stores and the log
//! records, so a restart or a replay does not move it.

use super::{Effect, Entry, OverMemoryLimit, Replaced, Table};
use crate::proto::{reply, BatchResults, Op, OpKind};
use std::time::{SystemTime, UNIX_EPOCH};

/// How long after its deadline a key may be removed in the background (the
/// sweep, or eviction's expired-first pass). Until then it is only absent.
///
/// Why wait: a cross-shard ATOMIC batch judges expiry at its coordinator's
/// clock reading, on every shard, but its shares run a little later, one
/// shard after another. Were the sweep to remove a key the moment its
/// deadline passed, a share running after that could find the key gone
/// although the batch's reading says it is alive, while another share found
/// a key with the same deadline alive. With the grace, that can happen only
/// to a batch whose shares run more than the grace after its reading, and
/// such a share is refused (see [`Table::swept_up_to`]) rather than served
/// inconsistently.
pub const REMOVAL_GRACE_MS: u64 = 1_000;

/// TTL's answer for a key that has no deadline.
pub const TTL_NO_DEADLINE: i64 = -1;
/// TTL's answer for an absent (or expired) key.
pub const TTL_MISSING: i64 = -2;

/// The wall clock in Unix milliseconds: the time a request runs at. Read by
/// the shard for each request it runs, by a batch's coordinator once for the
/// whole batch, and by the sweep; the table never reads it itself. A clock
/// before 1970 reads as 0 (nothing expires).
pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

impl Table {
    /// Sets the time the next requests run at: a key whose deadline is at or
    /// before it is expired.
    pub fn set_clock(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// The time the table's requests run at (see [`Table::set_clock`]).
    pub fn clock(&self) -> u64 {
        self.now_ms
    }

    /// The deadline `ttl_ms` from the table's clock.
    fn deadline_after(&self, ttl_ms: u64) -> u64 {
        self.now_ms.saturating_add(ttl_ms)
    }

    /// Writes `value` under `key` to expire `ttl_ms` from now; returns the
    /// new version and the deadline.
    pub fn set_expiring(
        &mut self,
        key: &[u8],
        value: &[u8],
        ttl_ms: u64,
    ) -> Result<(u64, u64), OverMemoryLimit> {
        let deadline = self.deadline_after(ttl_ms);
        let version = self.write(key, value, Some(deadline))?;
        Ok((version, deadline))
    }

    /// The key's remaining time to live in milliseconds, or
    /// [`TTL_NO_DEADLINE`] / [`TTL_MISSING`].
    pub fn ttl_ms(&self, key: &[u8]) -> i64 {
        match self.find_live(key) {
            None => TTL_MISSING,
            Some(entry) => match entry.deadline() {
                None => TTL_NO_DEADLINE,
                // Live, so the deadline is after the clock.
                Some(deadline) => i64::try_from(deadline - self.now_ms).unwrap_or(i64::MAX),
            },
        }
    }

    /// The key's deadline, if it is live and has one.
    pub fn deadline(&self, key: &[u8]) -> Option<u64> {
        self.find_live(key).and_then(Entry::deadline)
    }

    /// Runs SET with a TTL, EXPIRE, TTL or PERSIST, appending its result
    /// element (if it has one) to `out`, and says what it changed. A write
    /// over the memory limit appends nothing and is the error: `Table::apply`
    /// answers it with OOM, an ATOMIC batch aborts on it.
    pub fn apply_expiry<'b>(
        &mut self,
        op: &Op,
        buf: &'b [u8],
        out: &mut BatchResults,
    ) -> Result<Option<Effect<'b>>, OverMemoryLimit> {
        let key = op.key.of(buf);
        match op.kind {
            OpKind::SetTtl => {
                let value = op.value.of(buf);
                let (version, deadline) = self.set_expiring(key, value, op.expiry_ms)?;
                Ok(Some(Effect::Put {
                    key,
                    version,
                    value,
                    deadline: Some(deadline),
                }))
            }
            OpKind::SetAt => {
                let value = op.value.of(buf);
                self.set_at(key, value, op.expiry_ms)
            }
            OpKind::SetKeepTtl => {
                let value = op.value.of(buf);
                let deadline = self.deadline(key);
                let version = self.write(key, value, deadline)?;
                Ok(Some(Effect::Put {
                    key,
                    version,
                    value,
                    deadline,
                }))
            }
            OpKind::Expire | OpKind::ExpireAt => {
                let deadline = match op.kind {
                    OpKind::Expire => self.deadline_after(op.expiry_ms),
                    _ => op.expiry_ms,
                };
                let effect = self.expire_at(key, deadline)?;
                reply::write_done(&mut out.buf, u64::from(effect.is_some()));
                Ok(effect)
            }
            OpKind::Ttl => {
                reply::write_integer(&mut out.buf, self.ttl_ms(key));
                Ok(None)
            }
            OpKind::ExpireTime => {
                reply::write_integer(&mut out.buf, self.expire_time(key));
                Ok(None)
            }
            OpKind::Persist => {
                let effect = self.persist(key)?;
                reply::write_done(&mut out.buf, u64::from(effect.is_some()));
                Ok(effect)
            }
            _ => unreachable!("{} is not an expiry request", op.kind.name()),
        }
    }

    /// EXPIRE: gives a live key a deadline `ttl_ms` from now (0: removes it
    /// now). None if the key is absent.
    pub fn expire<'k>(
        &mut self,
        key: &'k [u8],
        ttl_ms: u64,
    ) -> Result<Option<Effect<'k>>, OverMemoryLimit> {
        self.expire_at(key, self.deadline_after(ttl_ms))
    }

    /// The key's deadline in Unix milliseconds, or [`TTL_NO_DEADLINE`] /
    /// [`TTL_MISSING`] (EXPIRETIME).
    pub fn expire_time(&self, key: &[u8]) -> i64 {
        match self.find_live(key) {
            None => TTL_MISSING,
            Some(entry) => entry.deadline().map_or(TTL_NO_DEADLINE, |deadline| {
                i64::try_from(deadline).unwrap_or(i64::MAX)
            }),
        }
    }

    /// SET with a deadline: writes `value` under `key` to expire at
    /// `deadline`; one not in the future removes the key instead (the write
    /// would be expired at once).
    pub fn set_at<'b>(
        &mut self,
        key: &'b [u8],
        value: &'b [u8],
        deadline: u64,
    ) -> Result<Option<Effect<'b>>, OverMemoryLimit> {
        if deadline <= self.now_ms {
            return Ok(self.expire_now(key).then_some(Effect::Del { key }));
        }
        let version = self.write(key, value, Some(deadline))?;
        Ok(Some(Effect::Put {
            key,
            version,
            value,
            deadline: Some(deadline),
        }))
    }

    /// EXPIREAT: gives a live key the deadline `deadline` (one not in the
    /// future removes it now). None if the key is absent.
    pub fn expire_at<'k>(
        &mut self,
        key: &'k [u8],
        deadline: u64,
    ) -> Result<Option<Effect<'k>>, OverMemoryLimit> {
        if self.find_live(key).is_none() {
            return Ok(None);
        }
        if deadline <= self.now_ms {
            self.expire_now(key);
            return Ok(Some(Effect::Del { key }));
        }
        self.replace_deadline(key, Some(deadline))?;
        Ok(Some(Effect::Expire {
            key,
            deadline: Some(deadline),
        }))
    }

    /// Removes `key`, given a deadline that is not in the future, counting it
    /// as expired; returns whether anything was stored under it.
    fn expire_now(&mut self, key: &[u8]) -> bool {
        match self.take(key) {
            Some(entry) => {
                self.stats.expired_keys += 1;
                self.pinned.displace(entry);
                true
            }
            None => false,
        }
    }

    /// PERSIST: removes a live key's deadline. None if the key is absent or
    /// has no deadline.
    pub fn persist<'k>(&mut self, key: &'k [u8]) -> Result<Option<Effect<'k>>, OverMemoryLimit> {
        if self.deadline(key).is_none() {
            return Ok(None);
        }
        self.replace_deadline(key, None)?;
        Ok(Some(Effect::Expire {
            key,
            deadline: None,
        }))
    }

    /// Replaces the live entry of `key` with one of the same key, value and
    /// version and this deadline (entries never change once built). The new
    /// entry may be 8 bytes larger, and the old one may be pinned by a reply,
    /// so the write is checked against the memory limit like any other.
    fn replace_deadline(
        &mut self,
        key: &[u8],
        deadline: Option<u64>,
    ) -> Result<(), OverMemoryLimit> {
        let hash = self.hash(key);
        let found = self
            .map
            .find(hash, |e| e.key() == key)
            .expect("the caller found the key live");
        let old = Replaced::of(found);
        // The same value, or the same location of an on-disk one.
        let entry = found.with_deadline(deadline);
        let new = entry.footprint();
        let growth = (new.allocated_bytes as u64
            + old.pinned_cost
            + Replaced::index_growth(Some(&old), deadline.is_some()))
        .saturating_sub(old.footprint.allocated_bytes as u64);
        self.check_growth(growth, key)?;
        let slot = self
            .map
            .find_mut(hash, |e| e.key() == key)
            .expect("nothing has run since the key was found");
        let replaced = std::mem::replace(slot, entry);
        self.count_out(&old.footprint, key, replaced.deadline());
        self.count_in(&new, key, deadline);
        self.pinned.displace(replaced);
        Ok(())
    }

    /// The latest deadline of a key removed in the background (sweep or
    /// eviction), 0 if none: a batch whose clock reading is before it might
    /// find such a key gone while its reading says alive.
    pub fn swept_up_to(&self) -> u64 {
        self.swept_up_to
    }

    /// Removes up to `budget` keys whose deadline is at or before `now_ms`,
    /// earliest first, counting each as expired; returns them.
    pub fn remove_due(&mut self, now_ms: u64, budget: usize) -> Vec<Box<[u8]>> {
        let mut due = self.due_keys(now_ms, budget);
        due.retain(|key| self.remove_if_expired(key, now_ms));
        due
    }

    /// Up to `budget` keys whose deadline is at or before `now_ms`, earliest
    /// first (the sweep takes their locks before it removes them).
    pub fn due_keys(&self, now_ms: u64, budget: usize) -> Vec<Box<[u8]>> {
        let places = self.deadlines.due(now_ms, budget).into_iter();
        let entries = places.flat_map(|place| self.indexed(place));
        entries.map(|entry| Box::from(entry.key())).collect()
    }

    /// The sweep: removes `key` if its deadline is at or before `now_ms`,
    /// counting it as expired; returns whether it did (the shard then logs a
    /// delete).
    pub fn remove_if_expired(&mut self, key: &[u8], now_ms: u64) -> bool {
        let Some(deadline) = self.find(key).and_then(Entry::deadline) else {
            return false;
        };
        if deadline > now_ms {
            return false;
        }
        self.swept_up_to = self.swept_up_to.max(deadline);
        self.remove_expired(key);
        true
    }

    /// Whether a key is due at `now_ms` (the sweep has work).
    pub fn has_due(&self, now_ms: u64) -> bool {
        self.deadlines
            .earliest()
            .is_some_and(|deadline| deadline <= now_ms)
    }

    /// Recovery: puts a logged value in place with its deadline, as
    /// `Table::load` does. A deadline already past is loaded too: replay
    /// does not expire keys half-way (a later record may change it); the
    /// sweep removes what is due once the shard serves.
    pub fn load_expiring(
        &mut self,
        key: &[u8],
        value: impl AsRef<[u8]>,
        version: u64,
        deadline: Option<u64>,
    ) {
        self.load_entry(Entry::expiring(key, value.as_ref(), version, deadline));
    }

    /// Recovery: gives the stored entry of `key` a new deadline (or none), as
    /// a logged EXPIRE or PERSIST did. Nothing if the key is not stored.
    pub fn load_deadline(&mut self, key: &[u8], deadline: Option<u64>) {
        let Some(current) = self.find(key) else {
            return;
        };
        let entry = current.with_deadline(deadline);
        self.load_entry(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::super::TableStats;
    use super::*;
    use crate::table::Footprint;

    const NO_LIMIT: u64 = u64::MAX;

    fn at(now_ms: u64) -> Table {
        let mut table = Table::new(NO_LIMIT);
        table.set_clock(now_ms);
        table
    }

    #[test]
    fn an_expired_key_is_absent_to_every_read_and_its_version_is_zero() {
        let mut table = at(1000);
        table.set_expiring(b"k", b"v", 500).expect("room");
        assert_eq!(table.peek(b"k"), Some((&b"v"[..], 1)));
        assert_eq!(table.ttl_ms(b"k"), 500);
        table.set_clock(1499);
        assert_eq!(table.ttl_ms(b"k"), 1);
        table.set_clock(1500);
        assert_eq!(table.peek(b"k"), None);
        assert!(table.get(b"k").expect("read").is_none());
        assert_eq!(table.version(b"k"), 0);
        assert_eq!(table.ttl_ms(b"k"), TTL_MISSING);
        assert_eq!(table.stats().misses, 1);
    }

    #[test]
    fn a_write_over_an_expired_key_starts_at_version_one_without_a_deadline() {
        let mut table = at(0);
        table.set_expiring(b"k", b"v", 10).expect("room");
        table.set(b"k", b"w").expect("room");
        assert_eq!(table.version(b"k"), 2, "overwritten while live");
        assert_eq!(
            table.ttl_ms(b"k"),
            TTL_NO_DEADLINE,
            "a plain SET clears the TTL"
        );
        table.set_expiring(b"k", b"x", 10).expect("room");
        table.set_clock(10);
        assert_eq!(
            table.put_versioned(b"k", b"y", 0),
            Ok(super::super::PutOutcome::Applied(1))
        );
        assert_eq!(table.ttl_ms(b"k"), TTL_NO_DEADLINE, "PUTV clears it too");
        assert_eq!(table.stats().expired_keys, 1);
        assert_eq!(table.stats().expires, 0);
    }

    #[test]
    fn expire_and_persist_change_the_deadline_and_keep_value_and_version() {
        let mut table = at(100);
        assert_eq!(table.expire(b"k", 50), Ok(None), "absent");
        table.set(b"k", b"v").expect("room");
        assert_eq!(table.persist(b"k"), Ok(None), "no deadline to remove");
        assert_eq!(
            table.expire(b"k", 50),
            Ok(Some(Effect::Expire {
                key: b"k",
                deadline: Some(150)
            }))
        );
        assert_eq!((table.ttl_ms(b"k"), table.version(b"k")), (50, 1));
        assert_eq!(table.stats().expires, 1);
        assert_eq!(
            table.persist(b"k"),
            Ok(Some(Effect::Expire {
                key: b"k",
                deadline: None
            }))
        );
        assert_eq!(
            (table.ttl_ms(b"k"), table.version(b"k")),
            (TTL_NO_DEADLINE, 1)
        );
        assert_eq!(table.stats().expires, 0);
        assert_eq!(table.expire(b"k", 0), Ok(Some(Effect::Del { key: b"k" })));
        assert_eq!(table.peek(b"k"), None);
        assert_eq!(table.len(), 0, "EXPIRE 0 removes the key at once");
    }

    #[test]
    fn the_sweep_removes_due_keys_earliest_first_within_its_budget() {
        let mut table = at(0);
        for i in 0..10u64 {
            table
                .set_expiring(format!("k{i}").as_bytes(), b"v", 10 + i)
                .expect("room");
        }
        table.set(b"forever", b"v").expect("room");
        assert!(!table.has_due(9));
        let removed = table.remove_due(14, 3);
        assert_eq!(removed, ["k0", "k1", "k2"].map(|k| Box::from(k.as_bytes())));
        assert_eq!(table.swept_up_to(), 12, "the latest deadline removed");
        assert_eq!(table.remove_due(14, 100).len(), 2);
        assert!(!table.has_due(14));
        assert_eq!(table.swept_up_to(), 14);
        let TableStats {
            keys,
            expires,
            expired_keys,
            ..
        } = table.stats();
        assert_eq!((keys, expires, expired_keys), (6, 5, 5));
        assert_eq!(table.remove_due(u64::MAX, 100).len(), 5);
        assert_eq!(table.deadlines.bytes(), 0, "the index let go of every key");
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_deadline_costs_eight_bytes_in_the_entry_and_nothing_without_one() {
        let plain = Footprint::of_parts(16, 34, 1);
        let expiring = Footprint::of_expiring(16, 34, 1, true, false);
        let entry = Entry::expiring(&[1; 16], &[2; 34], 1, Some(u64::MAX - 1));
        assert_eq!(entry.footprint(), expiring);
        assert_eq!(entry.deadline(), Some(u64::MAX - 1));
        assert_eq!((entry.key(), entry.value()), (&[1; 16][..], &[2; 34][..]));
        assert_eq!(Entry::new(&[1; 16], &[2; 34], 1).deadline(), None);
        assert!(expiring.allocated_bytes >= plain.allocated_bytes);
    }

    #[test]
    fn a_key_given_the_same_deadline_again_stays_in_the_expire_index() {
        // One ATOMIC batch runs at one clock reading, so two writes of a key
        // with one TTL give it the same deadline twice; so can replay.
        let mut table = at(0);
        table.set_expiring(b"k", b"v", 100).expect("room");
        table.set_expiring(b"k", b"w", 100).expect("room");
        table.expire(b"k", 100).expect("room");
        table.load_deadline(b"k", Some(100));
        table.load_expiring(b"k", b"x", 9, Some(100));
        assert_eq!(table.stats().expires, 1);
        assert_eq!(table.remove_due(100, 10), [Box::from(&b"k"[..])]);
        assert_eq!(table.len(), 0, "the sweep found it");
    }

    #[test]
    fn writes_with_a_deadline_never_take_memory_past_the_limit() {
        let limit = 256 << 10;
        let mut table = Table::new(limit);
        let mut refused = 0;
        for i in 0..100_000u32 {
            let key = i.to_le_bytes();
            let written = match i % 3 {
                0 => table.set_expiring(&key, &[1; 40], 1000).map(|_| ()),
                1 => table.set(&key, &[1; 40]).map(|_| ()),
                _ => table.expire(&(i - 1).to_le_bytes(), 500).map(|_| ()),
            };
            match written {
                Ok(()) => assert!(table.memory_used_bytes() <= limit, "after request {i}"),
                Err(_) => refused += 1,
            }
            if refused == 10 {
                break;
            }
        }
        assert_eq!(refused, 10, "the limit was reached");
    }

    #[test]
    fn absolute_deadlines_keepttl_and_expiretime_follow_redis() {
        let mut table = at(1000);
        assert_eq!(table.expire_time(b"k"), TTL_MISSING);
        assert_eq!(table.expire_at(b"k", 5000), Ok(None), "absent");
        assert_eq!(
            table.set_at(b"k", b"v", 5000).map(|e| e.is_some()),
            Ok(true)
        );
        assert_eq!((table.expire_time(b"k"), table.ttl_ms(b"k")), (5000, 4000));
        assert_eq!(
            table.expire_at(b"k", 7000),
            Ok(Some(Effect::Expire {
                key: b"k",
                deadline: Some(7000)
            }))
        );
        table.persist(b"k").expect("room");
        assert_eq!(table.expire_time(b"k"), TTL_NO_DEADLINE);
        table.expire_at(b"k", 9000).expect("room");
        let op = |kind, key: &[u8], value: &[u8]| {
            let mut body = vec![0x93, kind as u8];
            body.push(0xa0 | key.len() as u8);
            body.extend_from_slice(key);
            body.push(0xa0 | value.len() as u8);
            body.extend_from_slice(value);
            body
        };
        let body = op(crate::proto::OpKind::SetKeepTtl, b"k", b"w");
        let mut ops = Vec::new();
        let mut message = vec![0x91];
        message.extend_from_slice(&body);
        let limits = crate::proto::RequestLimits { max_key_bytes: 16 };
        crate::proto::decode_message(&message, 0..message.len(), &limits, &mut ops).expect("valid");
        let mut out = BatchResults::default();
        let effect = table
            .apply_expiry(&ops[0], &message, &mut out)
            .expect("room");
        assert!(
            matches!(
                effect,
                Some(Effect::Put {
                    version: 2,
                    deadline: Some(9000),
                    ..
                })
            ),
            "{effect:?}"
        );
        assert_eq!(table.peek(b"k"), Some((&b"\xa1w"[..], 2)));
        assert_eq!(table.expire_time(b"k"), 9000, "KEEPTTL kept it");
        assert_eq!(
            table.set_at(b"k", b"x", 1000),
            Ok(Some(Effect::Del { key: b"k" }))
        );
        assert_eq!(
            table.peek(b"k"),
            None,
            "a deadline in the past removes the key"
        );
        assert_eq!(table.set_at(b"k", b"x", 999), Ok(None), "nothing to remove");
        assert_eq!(table.expire_at(b"k", 1), Ok(None));
    }

    #[test]
    fn undoing_an_expire_puts_the_old_deadline_back() {
        let mut table = at(0);
        table.set_expiring(b"k", b"v", 100).expect("room");
        let prior = table.prior(b"k");
        table.persist(b"k").expect("room");
        table.restore(b"k", prior);
        assert_eq!(table.ttl_ms(b"k"), 100);
        assert_eq!(table.stats().expires, 1);
    }

    #[test]
    fn recovery_loads_deadlines_even_past_ones_and_the_sweep_drops_them() {
        let mut table = at(0);
        table.load_expiring(b"past", b"v", 3, Some(5));
        table.load(b"k", b"v", 1);
        table.load_deadline(b"k", Some(50));
        table.load_deadline(b"absent", Some(50));
        assert_eq!(table.len(), 2, "nothing expires while loading");
        table.set_clock(10);
        assert_eq!(table.peek(b"past"), None);
        assert_eq!(table.remove_due(10, 10), [Box::from(&b"past"[..])]);
        assert_eq!(table.ttl_ms(b"k"), 40);
    }
}
