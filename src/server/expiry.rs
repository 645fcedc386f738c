//! The active expiry sweep: each shard removes the keys whose deadline has
//! passed, so that keys nobody reads again still go (a read only hides an
//! expired key; `table::expiry`).
//!
//! Every [`SWEEP_PERIOD`] the shard takes the keys that are due from its
//! expire index, earliest first, [`SWEEP_BATCH`] at a time, removes them and
//! logs each as a delete (`Shard::remove_expired`). While whole batches keep
//! coming it goes on, yielding between batches, until [`SWEEP_TIME_BUDGET`]
//! of the period is spent — a quarter of it, as Redis's active expiry allows
//! itself — and then waits for the next period. It runs in a task queue of
//! its own with a small share of the executor, so requests waiting to run
//! go first whenever it yields.
//!
//! Keys are found by deadline, not sampled: the sweep reads exactly the keys
//! that are due and stops at the first that is not, so it costs nothing when
//! nothing is due, and a backlog (keys written with one TTL at one time) goes
//! at the sweep's full rate.

use crate::shard::Shard;
use glommio::{Latency, Shares};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How often a shard looks for keys that are due.
pub const SWEEP_PERIOD: Duration = Duration::from_millis(100);
/// Keys taken, removed and logged at a time, between yields.
pub const SWEEP_BATCH: usize = 128;
/// The most a shard's sweep runs per period while a backlog lasts.
pub const SWEEP_TIME_BUDGET: Duration = Duration::from_millis(25);
/// The sweep's share of the executor against the default queue's 1000:
/// when both have work, requests get almost all of it.
const SWEEP_SHARES: usize = 50;

/// Starts the sweep of `shard` in its own low-priority task queue.
pub fn start(shard: Rc<Shard>) {
    let queue = glommio::executor().create_task_queue(
        Shares::Static(SWEEP_SHARES),
        Latency::NotImportant,
        "expiry-sweep",
    );
    match glommio::spawn_local_into(sweep(shard.clone()), queue) {
        Ok(task) => task.detach(),
        Err(e) => {
            // Only a queue that does not exist is refused; sweep anyway.
            tracing::warn!("expiry sweep in the default task queue: {e}");
            glommio::spawn_local(sweep(shard)).detach()
        }
    };
}

/// Runs for the life of the shard.
async fn sweep(shard: Rc<Shard>) {
    loop {
        glommio::timer::sleep(SWEEP_PERIOD).await;
        let started = Instant::now();
        while shard.remove_expired(SWEEP_BATCH).await == SWEEP_BATCH
            && started.elapsed() < SWEEP_TIME_BUDGET
        {
            glommio::yield_if_needed().await;
        }
    }
}
