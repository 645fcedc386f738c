//! Giving back memory that replies held: each shard's periodic sweep of its
//! pinned values (`table::pinned`), and asking the allocator to return what
//! the sweeps freed to the operating system.
//!
//! Why the allocator needs asking: the allocator (mimalloc, `crate::allocator`)
//! keeps freed pages for reuse and gives them back to the operating system
//! only after a delay, and only when the thread that freed them next calls
//! into it. A shard that has just freed what a burst of stalled replies held
//! may then sit idle, with the memory still resident. (With glibc's malloc,
//! used before, it was worse: blocks freed below one still in use stayed
//! resident until the table's newest values happened to be freed too —
//! measured with 1 MiB values, 101 MiB of RSS against 20 MiB before ten
//! stalled connections.)
//!
//! So once the releasing has settled (a period whose sweep freed nothing,
//! after at least [`TRIM_MIN_FREED_BYTES`] were freed since the last trim),
//! the shard asks the allocator to return freed pages now — one trim covers a
//! whole burst of closing connections — at most once per
//! [`TRIM_MIN_INTERVAL`]. While values keep being released, the same work
//! reuses the memory and a trim would only cost time. Memory freed by the
//! sweep a refused write runs is not counted: the write that needed the room
//! reuses it.

use crate::allocator;
use crate::shard::Shard;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How often a shard frees the pinned values whose replies are gone.
pub const SWEEP_PERIOD: Duration = Duration::from_millis(100);
/// Pinned values one periodic sweep looks at: well under a millisecond of work
/// even when a great many are pinned (they are then covered over several
/// periods).
pub const SWEEP_BUDGET: usize = 16 * 1024;
/// Bytes a shard's sweeps must have freed before it asks for a trim: below
/// this, returning the pages is not worth a trim's milliseconds.
pub const TRIM_MIN_FREED_BYTES: u64 = 1 << 20;
/// At most one trim per shard per interval: a trim walks the allocator's
/// pages and returns them with system calls. Values pass through the
/// pinned list in normal work too (an ATOMIC batch's undo log holds each value
/// it overwrites until the batch ends), so a load that pauses often could
/// otherwise settle, and trim, every period.
pub const TRIM_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Runs for the life of the shard: sweeps on this shard's thread (so the last
/// reference to a value, and its free, is this shard's), and trims once a
/// release of enough memory has settled.
pub async fn sweep_pinned_values(shard: Rc<Shard>) {
    let mut freed_since_trim = 0;
    let mut last_trim: Option<Instant> = None;
    loop {
        glommio::timer::sleep(SWEEP_PERIOD).await;
        let freed = shard.sweep_pinned_values(SWEEP_BUDGET);
        freed_since_trim += freed;
        let settled = freed == 0 && freed_since_trim >= TRIM_MIN_FREED_BYTES;
        let due = last_trim.is_none_or(|at| at.elapsed() >= TRIM_MIN_INTERVAL);
        if settled && due {
            allocator::return_free_memory_to_os();
            freed_since_trim = 0;
            last_trim = Some(Instant::now());
        }
    }
}
