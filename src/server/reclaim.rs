//! Giving back memory that replies held: each shard's periodic sweep of its
//! pinned values (`table::pinned`), and asking the allocator to return what
//! the sweeps freed to the operating system.
//!
//! Why the allocator needs asking: glibc's malloc serves large blocks with
//! mmap only until the first one is freed; then it raises its threshold (up to
//! 32 MiB) and serves blocks of that size from its arenas, which keep freed
//! blocks for reuse and give pages back only from the top of a heap. Values
//! freed below a value still stored stay resident. Measured with 1 MiB values
//! (80 MiB pinned by ten stalled connections, then released): the server's RSS
//! stayed at 101 MiB against 20 MiB before those connections, until the
//! table's newest values happened to be freed too.
//!
//! Two fixes were measured; both bring RSS back to 20 MiB. Fixing
//! `M_MMAP_THRESHOLD` at start (every large block its own mapping, unmapped on
//! free) made allocating, filling and freeing a 1 MiB value about 4× slower in
//! a micro-benchmark, and a 128 KiB one over 10× (each pays for a fresh mapping
//! and its page faults) — a tax on every large write to cover a rare case.
//! `malloc_trim(0)` costs 1–10 ms per call and is needed only after sweeps
//! freed a lot, so that is what is done: once the releasing has settled (a
//! period whose sweep freed nothing, after at least [`TRIM_MIN_FREED_BYTES`]
//! were freed since the last trim), so that one trim covers a whole burst of
//! closing connections, and at most once per [`TRIM_MIN_INTERVAL`]. While
//! values keep being released, the same work reuses the memory and a trim
//! would only cost time. Memory freed by the sweep a refused write runs is not
//! counted: the write that needed the room reuses it.

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
/// At most one trim per shard per interval: a trim walks every arena's free
/// blocks and holds each arena's lock meanwhile. Values pass through the
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
            return_free_memory_to_os();
            freed_since_trim = 0;
            last_trim = Some(Instant::now());
        }
    }
}

/// Asks the allocator to give the pages of freed blocks back to the operating
/// system (glibc; other C libraries are left alone).
fn return_free_memory_to_os() {
    crate::sys::malloc_trim();
}
