//! Write pacing: while a compaction writes its snapshot, the shard's writes
//! may grow the log only as fast as the compaction advances, so that the log
//! stays within twice the live data plus a margin however fast clients
//! overwrite their keys. Writes slow down instead of the disk filling.
//!
//! # Why it is needed
//!
//! A compaction (`log::compaction`) writes a snapshot of the live data to a
//! new file while requests keep appending to the old one; only the switch at
//! the end replaces the old file. Everything appended while the snapshot is
//! written lands in the old file (and is copied behind the snapshot by the
//! switch). When clients append faster than the snapshot is written, the old
//! log grows without bound: one compaction never finishes before the next
//! one is due, and the log ends up many times the live data.
//!
//! # The budget
//!
//! When a compaction takes its snapshot the log file is `file_len` bytes and
//! may grow to the *bound*, `2 × live + margin` ([`bound`]): it has
//! `headroom = bound − file_len` bytes to go (none if it is past the bound
//! already, which a burst between two compaction checks can do). The
//! snapshot is `snapshot_bytes` long. Writers may append
//! `headroom × written / snapshot_bytes` bytes by the time the compaction has
//! written `written` snapshot bytes ([`Budget::allowed`]): the headroom is
//! spread over the snapshot, so when the snapshot is complete the log has
//! grown by at most the headroom, plus [`ALLOWANCE_BYTES`], plus the round
//! each connection had in flight. What writers appended beyond what they are
//! allowed is their *debt* ([`Budget::debt`]): appended bytes add to it,
//! snapshot bytes the compaction writes pay it off.
//!
//! (Pacing one appended byte per snapshot byte, however big the headroom,
//! would let the log grow by a whole snapshot while it is written: up to
//! three times the live data.)
//!
//! Once the snapshot is written the budget ends: the switch that follows
//! stops the log's writes itself while it copies the tail
//! (`LogWriter::switch_file`), so the old file no longer grows. After the
//! switch, while the compaction finishes (the disk engine's hint file and
//! relocated values), the writers may fill the new file up to the bound
//! and then wait ([`PacedCompaction::after_switch`]); if the log is due
//! again by then, the next compaction starts at once, before any released
//! writer runs (`server::compactor`).
//!
//! # Who waits
//!
//! A round of requests that appended to the log waits, after its records are
//! written and before it is answered, while the debt exceeds
//! [`ALLOWANCE_BYTES`] ([`Pacing::wait_for_compaction`]); each payment wakes
//! the waiters. Reads never wait, and a round that only read is not paced.
//! A write is never failed by pacing: it is answered late. When no
//! compaction runs a round pays two `Cell` checks: whether a budget is set,
//! and the log's length against the one the compactor asked about (below).
//!
//! Every waiter is released when the budget ends, whichever way the
//! compaction ends: written, failed (the guard, [`PacedCompaction`], ends the
//! budget when dropped) or stopped because the log was poisoned (the
//! compaction gives up at its next chunk, see `log::compaction`; and the
//! waiters look for a poisoned log every few milliseconds, so that a
//! compaction stuck between chunks does not hold them).
//!
//! A compaction starts at the compactor's periodic check; a burst of writes
//! between two checks could take the log past its bound before the
//! compaction even starts. So the compactor also tells the pacing the log
//! length at which it is due ([`Pacing::call_compactor_past`]), and the first
//! round that finds the log longer wakes it ([`Pacing::note_log_len`]).
//!
//! # Merges
//!
//! The disk engine's merges of sealed segments (`log::merge`) use the same
//! budget: the merge pays with the input bytes it reads, and the headroom is
//! what the bound leaves plus what the merge frees net of what it writes
//! (`server::compactor`), so the log shrinks with each merge while it is
//! past the bound. The merge's own output, on disk beside its inputs until
//! they are deleted, is not taken from the headroom: a large segment that
//! became mostly dead would otherwise stop every write for its whole merge.
//!
//! STATS `write_pacing_waits` counts the rounds that waited and
//! `write_pacing_wait_us` the time they waited, summed.

use crate::notify::Notify;
use std::cell::Cell;
use std::time::{Duration, Instant};

/// How far writers may run ahead of their budget before a round waits: a
/// few rounds' records, so that a compaction keeping up never stops anyone,
/// and a waiter is woken once the compaction has paid for that much.
pub const ALLOWANCE_BYTES: u64 = 1 << 20;

/// How often a waiting round looks whether the log was poisoned meanwhile.
const RECHECK: Duration = Duration::from_millis(10);

/// The most a shard's log file may hold while a compaction runs: twice the
/// live data (which is when a compaction is due) plus `margin_bytes`.
pub fn bound(live_bytes: u64, margin_bytes: u64) -> u64 {
    live_bytes.saturating_mul(2).saturating_add(margin_bytes)
}

/// The margin over twice the live data that a log with compaction threshold
/// `min_bytes` may use: the threshold itself. A log smaller than the
/// threshold is never compacted, so this is the slack the policy already
/// grants; the default threshold gives 64 MiB.
pub fn margin_bytes(min_bytes: u64) -> u64 {
    min_bytes
}

/// What the writers may append while one snapshot is written (see the
/// module doc). All figures in bytes; `appended` positions are the log's
/// (`LogWriter::appended`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The log's appended position when the snapshot was taken.
    appended_from: u64,
    /// How much the log file may grow while the snapshot is written.
    headroom: u64,
    /// The snapshot's expected length.
    snapshot_bytes: u64,
    /// Snapshot bytes written so far.
    written: u64,
}

impl Budget {
    /// The budget of a compaction whose snapshot of `snapshot_bytes` is taken
    /// when the log file holds `file_len` bytes, may hold `bound`, and its
    /// appended position is `appended`.
    pub fn new(file_len: u64, bound: u64, snapshot_bytes: u64, appended: u64) -> Budget {
        Budget {
            appended_from: appended,
            headroom: bound.saturating_sub(file_len),
            snapshot_bytes,
            written: 0,
        }
    }

    /// The budget of a merge (`log::merge`) of `input_bytes` of sealed
    /// segments expected to write `output_bytes`, when the log's files hold
    /// `file_len` bytes and may hold `bound`: the writes may add what is
    /// left up to the bound plus what the merge frees net of its output,
    /// paid for by the input read. The output itself is not taken from the
    /// writes (the module doc's *Merges*).
    pub fn for_merge(
        file_len: u64,
        bound: u64,
        input_bytes: u64,
        output_bytes: u64,
        appended: u64,
    ) -> Budget {
        let net_frees = input_bytes.saturating_sub(output_bytes.saturating_mul(2));
        Budget {
            appended_from: appended,
            headroom: bound.saturating_sub(file_len).saturating_add(net_frees),
            snapshot_bytes: input_bytes,
            written: 0,
        }
    }

    /// Records `bytes` more of the snapshot written.
    pub fn pay(&mut self, bytes: u64) {
        self.written = self.written.saturating_add(bytes);
    }

    /// Bytes the writers may have appended by now: the headroom, in
    /// proportion to the snapshot written (all of it once it is complete).
    pub fn allowed(&self) -> u64 {
        if self.written >= self.snapshot_bytes {
            return self.headroom;
        }
        let share =
            u128::from(self.headroom) * u128::from(self.written) / u128::from(self.snapshot_bytes);
        share as u64
    }

    /// What the writers appended, the log being at `appended` now, beyond
    /// what they are allowed.
    pub fn debt(&self, appended: u64) -> u64 {
        appended
            .saturating_sub(self.appended_from)
            .saturating_sub(self.allowed())
    }

    /// Whether a round that leaves the log at `appended` must wait.
    pub fn must_wait(&self, appended: u64) -> bool {
        self.debt(appended) > ALLOWANCE_BYTES
    }
}

/// A shard's pacing state: the running compaction's budget, if any, and the
/// figures STATS reports.
pub struct Pacing {
    budget: Cell<Option<Budget>>,
    /// Woken at every payment and when the budget ends.
    progress: Notify,
    nr_waits: Cell<u64>,
    wait_us: Cell<u64>,
    /// The log file length past which the compactor wants to be told at once
    /// (u64::MAX: not now), and whether a writer told it.
    due_at: Cell<u64>,
    compaction_wanted: Cell<bool>,
    compactor: Notify,
}

impl Default for Pacing {
    fn default() -> Pacing {
        Pacing {
            budget: Cell::new(None),
            progress: Notify::default(),
            nr_waits: Cell::new(0),
            wait_us: Cell::new(0),
            due_at: Cell::new(u64::MAX),
            compaction_wanted: Cell::new(false),
            compactor: Notify::default(),
        }
    }
}

impl Pacing {
    /// Starts pacing the writers of a log bounded at `bound` by `budget`
    /// until the returned guard ends it (or is dropped).
    pub fn begin(&self, bound: u64, budget: Budget) -> PacedCompaction<'_> {
        self.budget.set(Some(budget));
        PacedCompaction {
            pacing: self,
            bound,
        }
    }

    /// Whether writers are paced now: with [`Pacing::note_log_len`], the
    /// checks a round pays when no compaction is writing a snapshot.
    pub fn is_pacing(&self) -> bool {
        self.budget.get().is_some()
    }

    /// The compactor: tell me as soon as the log file is longer than
    /// `file_len` (u64::MAX: do not).
    pub fn call_compactor_past(&self, file_len: u64) {
        self.due_at.set(file_len);
    }

    /// A writer: the log file is `file_len` bytes now. Past the length the
    /// compactor asked for, it is woken (once), rather than finding out at
    /// its next periodic check, by which time the writes may have taken
    /// the log well past its bound.
    /// Returns whether it woke the compactor.
    pub fn note_log_len(&self, file_len: u64) -> bool {
        let due = file_len > self.due_at.get();
        if due {
            self.due_at.set(u64::MAX);
            self.compaction_wanted.set(true);
            self.compactor.notify_all();
        }
        due
    }

    /// The compactor: resolves when a writer found the log past the length
    /// it asked for.
    pub async fn compaction_wanted(&self) {
        self.compactor.until(|| self.compaction_wanted.get()).await;
        self.compaction_wanted.set(false);
    }

    /// Waits while the writers' debt, the log being at `appended()`, exceeds
    /// the allowance, unless `released()` (the log is poisoned: nothing more
    /// will be acknowledged, so there is nothing to slow down).
    pub async fn wait_for_compaction(
        &self,
        appended: impl Fn() -> u64,
        released: impl Fn() -> bool,
    ) {
        let must_wait = || {
            self.budget
                .get()
                .is_some_and(|budget| budget.must_wait(appended()))
                && !released()
        };
        if !must_wait() {
            return;
        }
        let started = Instant::now();
        while must_wait() {
            // Woken by the compaction's payments; the timer is for what
            // does not notify it: the log being poisoned.
            let paid = self.progress.until(|| !must_wait());
            futures_lite::future::or(paid, glommio::timer::sleep(RECHECK)).await;
        }
        self.nr_waits.set(self.nr_waits.get() + 1);
        let waited = started.elapsed().as_micros() as u64;
        self.wait_us.set(self.wait_us.get() + waited);
    }

    /// Rounds that waited for a compaction so far.
    pub fn nr_waits(&self) -> u64 {
        self.nr_waits.get()
    }

    /// Microseconds rounds waited for a compaction so far, summed.
    pub fn wait_us(&self) -> u64 {
        self.wait_us.get()
    }

    fn pay(&self, bytes: u64) {
        if let Some(mut budget) = self.budget.get() {
            budget.pay(bytes);
            self.budget.set(Some(budget));
            self.progress.notify_all();
        }
    }

    fn end(&self) {
        self.budget.set(None);
        self.progress.notify_all();
    }
}

/// A compaction's hold on its shard's pacing: it pays as it writes its
/// snapshot, and ends the budget when the snapshot is written or, dropped,
/// whenever the compaction stops.
pub struct PacedCompaction<'a> {
    pacing: &'a Pacing,
    bound: u64,
}

impl PacedCompaction<'_> {
    /// `bytes` more of the snapshot are written: wakes the writers.
    pub fn pay(&self, bytes: u64) {
        self.pacing.pay(bytes);
    }

    /// Ends the budget and releases every waiter.
    pub fn end(&self) {
        self.pacing.end();
    }

    /// The switch is done: the new log file holds `file_len` bytes and the
    /// log's appended position is `appended`. Until the compaction's last
    /// steps are done (the guard dropped) and the next one can start, the
    /// writers may fill the new file up to the bound, and then wait.
    pub fn after_switch(&self, file_len: u64, appended: u64) {
        let budget = Budget::new(file_len, self.bound, 0, appended);
        self.pacing.budget.set(Some(budget));
        self.pacing.progress.notify_all();
    }
}

impl Drop for PacedCompaction<'_> {
    fn drop(&mut self) {
        self.pacing.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_headroom_is_spread_over_the_snapshot_in_proportion_to_what_is_written() {
        // A 100 MiB file bounded at 140 MiB, a 50 MiB snapshot: 40 MiB of room.
        let mut budget = Budget::new(100 * MIB, 140 * MIB, 50 * MIB, 1000);
        assert_eq!(budget.allowed(), 0);
        budget.pay(25 * MIB);
        assert_eq!(budget.allowed(), 20 * MIB);
        budget.pay(25 * MIB);
        assert_eq!(budget.allowed(), 40 * MIB);
        budget.pay(MIB);
        assert_eq!(budget.allowed(), 40 * MIB, "never more than the headroom");
    }

    #[test]
    fn appended_bytes_add_to_the_debt_and_written_snapshot_bytes_pay_it_off() {
        let from = 7 * MIB;
        let mut budget = Budget::new(100 * MIB, 140 * MIB, 40 * MIB, from);
        assert_eq!(budget.debt(from), 0);
        assert_eq!(budget.debt(from + 3 * MIB), 3 * MIB);
        budget.pay(2 * MIB); // allows 2 MiB of the 40 of headroom
        assert_eq!(budget.debt(from + 3 * MIB), MIB);
        budget.pay(MIB);
        assert_eq!(budget.debt(from + 3 * MIB), 0);
        assert_eq!(budget.debt(from + 2 * MIB), 0, "never negative");
    }

    #[test]
    fn a_merge_of_a_large_half_dead_segment_leaves_the_writes_the_room_up_to_the_bound() {
        // A bulk load's 273 MiB segment, half dead, in a 430 MiB log of
        // 220 MiB live data: bound 504 MiB. Counting the merge's 172 MiB of
        // output against the writes left them nothing for its whole run.
        let bound = super::bound(220 * MIB, 64 * MIB);
        let mut budget = Budget::for_merge(430 * MIB, bound, 273 * MIB, 172 * MIB, 0);
        budget.pay(273 * MIB);
        assert_eq!(budget.allowed(), 74 * MIB);
    }

    #[test]
    fn a_merge_of_a_log_past_its_bound_lets_the_writes_add_only_what_it_frees_beyond_its_output() {
        // 40 MiB of input holding 10 MiB live, the log 20 MiB past its bound:
        // the merge frees 30 MiB and writes 10, so the writes may add 20 and
        // the log ends 10 MiB smaller.
        let mut budget = Budget::for_merge(120 * MIB, 100 * MIB, 40 * MIB, 10 * MIB, 0);
        budget.pay(20 * MIB);
        assert_eq!(
            budget.allowed(),
            10 * MIB,
            "in proportion to the input read"
        );
        budget.pay(20 * MIB);
        assert_eq!(budget.allowed(), 20 * MIB);
    }

    #[test]
    fn a_round_waits_only_while_the_debt_exceeds_the_allowance() {
        let budget = Budget::new(10 * MIB, 20 * MIB, 10 * MIB, 0);
        assert!(!budget.must_wait(ALLOWANCE_BYTES));
        assert!(budget.must_wait(ALLOWANCE_BYTES + 1));
    }

    #[test]
    fn a_log_already_past_its_bound_allows_only_the_allowance_until_the_snapshot_is_written() {
        let mut budget = Budget::new(150 * MIB, 140 * MIB, 50 * MIB, 0);
        budget.pay(49 * MIB);
        assert_eq!(budget.allowed(), 0);
        assert!(budget.must_wait(ALLOWANCE_BYTES + 1));
        budget.pay(MIB);
        assert_eq!(budget.allowed(), 0, "no headroom to give");
    }

    #[test]
    fn an_empty_snapshot_allows_the_whole_headroom_at_once() {
        let budget = Budget::new(MIB, 3 * MIB, 0, 0);
        assert_eq!(budget.allowed(), 2 * MIB);
    }

    #[test]
    fn the_bound_is_twice_the_live_data_plus_the_margin_and_does_not_overflow() {
        assert_eq!(bound(10, 5), 25);
        assert_eq!(bound(u64::MAX, 5), u64::MAX);
        assert_eq!(margin_bytes(64 * MIB), 64 * MIB);
    }

    #[test]
    fn a_writer_past_the_due_length_wakes_the_compactor_once() {
        let pacing = Pacing::default();
        assert!(!pacing.note_log_len(u64::MAX - 1));
        assert!(!pacing.compaction_wanted.get(), "not asked for");
        pacing.call_compactor_past(100);
        assert!(!pacing.note_log_len(100));
        assert!(!pacing.compaction_wanted.get());
        assert!(pacing.note_log_len(101));
        assert!(pacing.compaction_wanted.get());
        assert_eq!(
            pacing.due_at.get(),
            u64::MAX,
            "until the compactor asks again"
        );
    }

    #[test]
    fn ending_the_budget_stops_the_pacing_and_a_dropped_guard_ends_it() {
        let pacing = Pacing::default();
        let paced = pacing.begin(MIB, Budget::new(0, MIB, MIB, 0));
        assert!(pacing.is_pacing());
        paced.end();
        assert!(!pacing.is_pacing());
        let paced = pacing.begin(MIB, Budget::new(0, MIB, MIB, 0));
        paced.pay(MIB);
        assert!(pacing.is_pacing());
        paced.end();
        paced.after_switch(MIB / 2, 100);
        assert_eq!(pacing.budget.get().map(|b| b.allowed()), Some(MIB / 2));
        drop(paced);
        assert!(!pacing.is_pacing());
    }
}
