//! The instant of a backup: every shard stops at it at once.
//!
//! The shard running the backup (the *initiator*) sends each peer a job.
//! A peer's job stops its whole thread in [`Cut::stop_until_released`] —
//! nothing runs on that shard, no request, no message — until the
//! initiator sees every peer stopped ([`Cut::all_stopped`], polled without
//! blocking its own thread) and calls [`Cut::release`], right before it takes
//! its own snapshot. Each peer takes its snapshot right after it is
//! released, before anything else runs on it. So each peer's snapshot is
//! its state when it stopped, and nothing reached it in between.
//!
//! A cut is released or abandoned, never both, and every waiter learns which:
//! the initiator abandons it if the peers are not all stopped by the
//! deadline (or it must stop for shutdown), a peer abandons it if it has
//! not been released by the deadline and a grace period, and a peer that
//! arrives after either does not stop at all.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long a stopped peer waits past the deadline for the initiator's
/// decision before it abandons the cut itself (the initiator decides at the
/// deadline; this only covers an initiator that cannot run).
const PEER_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Gathering,
    Released,
    Abandoned,
}

#[derive(Debug)]
struct State {
    stopped: usize,
    phase: Phase,
}

/// The rendezvous of one backup's shards.
#[derive(Debug)]
pub struct Cut {
    nr_peers: usize,
    deadline: Instant,
    state: Mutex<State>,
    decided: Condvar,
}

impl Cut {
    /// A cut for `nr_peers` shards besides the initiator, to be reached by
    /// `deadline`.
    pub fn new(nr_peers: usize, deadline: Instant) -> Cut {
        Cut {
            nr_peers,
            deadline,
            state: Mutex::new(State {
                stopped: 0,
                phase: Phase::Gathering,
            }),
            decided: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one is still whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A peer: blocks the calling thread until the cut is released (true) or
    /// abandoned (false). Returns false at once if it was already abandoned.
    pub fn stop_until_released(&self) -> bool {
        let mut state = self.lock();
        if state.phase != Phase::Gathering {
            return state.phase == Phase::Released;
        }
        state.stopped += 1;
        let give_up = self.deadline + PEER_GRACE;
        while state.phase == Phase::Gathering {
            let now = Instant::now();
            if now >= give_up {
                state.phase = Phase::Abandoned;
                self.decided.notify_all();
                break;
            }
            state = self
                .decided
                .wait_timeout(state, give_up - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.phase == Phase::Released
    }

    /// Whether every peer is stopped at the cut (and it is still undecided).
    pub fn all_stopped(&self) -> bool {
        let state = self.lock();
        state.phase == Phase::Gathering && state.stopped == self.nr_peers
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The initiator: lets the stopped peers go on, taking their snapshots
    /// first. False if the cut was abandoned meanwhile.
    pub fn release(&self) -> bool {
        self.decide(Phase::Released)
    }

    /// Gives the cut up: stopped peers go on without a snapshot, later ones
    /// do not stop. False if it was released already.
    pub fn abandon(&self) -> bool {
        self.decide(Phase::Abandoned)
    }

    fn decide(&self, phase: Phase) -> bool {
        let mut state = self.lock();
        if state.phase != Phase::Gathering {
            return state.phase == phase;
        }
        state.phase = phase;
        self.decided.notify_all();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn peers_stop_until_the_initiator_releases_them() {
        let cut = Arc::new(Cut::new(2, Instant::now() + Duration::from_secs(30)));
        let peers: Vec<_> = (0..2)
            .map(|_| {
                let cut = cut.clone();
                std::thread::spawn(move || cut.stop_until_released())
            })
            .collect();
        while !cut.all_stopped() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(cut.release());
        assert!(!cut.abandon(), "a released cut stays released");
        for peer in peers {
            assert!(peer.join().expect("peer thread"));
        }
    }

    #[test]
    fn an_abandoned_cut_releases_nobody_and_stops_nobody() {
        let cut = Arc::new(Cut::new(2, Instant::now() + Duration::from_secs(30)));
        let early = {
            let cut = cut.clone();
            std::thread::spawn(move || cut.stop_until_released())
        };
        while cut.lock().stopped == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(cut.abandon());
        assert!(!early.join().expect("peer thread"));
        assert!(!cut.stop_until_released(), "a late peer does not stop");
        assert!(!cut.release());
        assert!(!cut.all_stopped());
    }

    #[test]
    fn a_peer_gives_up_on_an_initiator_that_never_decides() {
        let cut = Cut::new(1, Instant::now());
        assert!(!cut.stop_until_released());
        assert!(!cut.release(), "the peer abandoned it");
    }
}
