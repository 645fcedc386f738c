//! The process's memory allocator, and what it really holds for a request.
//!
//! corekv allocates with mimalloc, not the C library's malloc. Memory per key
//! is dominated by one small allocation per stored entry (`entry`), and what an
//! allocation really costs is its size class: glibc's malloc adds an 8-byte
//! header and rounds to 16 bytes (a 57-byte entry takes 80), mimalloc keeps no
//! per-block header and has classes 16 bytes apart from 16 to 128 (on x86-64
//! it aligns every block of two words or more to 16: 33 to 48 bytes take 48)
//! and 32 apart to 256 (the same entry takes 64). Measured in
//! docs/benchmarks.md ("Memory per key").
//!
//! The memory limit counts what the allocator holds, not what was asked for:
//! [`held_bytes`] is the size class a request lands in.
//!
//! Declared here, in the library, rather than in each binary: the table's
//! accounting asks this allocator for its size classes, so every program that
//! links the table (the server, the tests, the tools) must allocate with it.

use mimalloc::MiMalloc;
use std::ptr::NonNull;
use std::sync::OnceLock;

#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

/// Requests up to this size have their size class looked up in a table.
const SMALL_MAX_BYTES: usize = 1024;

/// Bytes the allocator takes for a request of `requested` bytes: its size
/// class, exactly, up to a few hundred KiB; above that (blocks with pages of
/// their own) the request rounded up to whole pages, which is what becomes
/// resident (the block's reserved tail is never touched).
///
/// Every write asks this several times, so small sizes (every entry of a
/// small key and value) are answered from a table filled once from the
/// allocator: a call into it costs about as much as the rest of a SET.
pub fn held_bytes(requested: usize) -> usize {
    match small_classes().get(requested) {
        Some(&class) => usize::from(class),
        None => good_size(requested),
    }
}

fn small_classes() -> &'static [u16; SMALL_MAX_BYTES + 1] {
    static CLASSES: OnceLock<[u16; SMALL_MAX_BYTES + 1]> = OnceLock::new();
    CLASSES.get_or_init(|| {
        std::array::from_fn(|size| {
            u16::try_from(good_size(size)).expect("a small request's class is small")
        })
    })
}

fn good_size(requested: usize) -> usize {
    // SAFETY: mi_good_size is a pure computation on its argument.
    unsafe { libmimalloc_sys::mi_good_size(requested) }
}

/// Allocates `size` bytes (aligned for any primitive type) straight from the
/// allocator; None when it has no memory. For blocks whose size is costly to
/// recompute when they are freed: [`free`] needs no size.
pub fn allocate(size: usize) -> Option<NonNull<u8>> {
    // SAFETY: mi_malloc takes a size and returns a fresh block or null.
    NonNull::new(unsafe { libmimalloc_sys::mi_malloc(size) }.cast())
}

/// Frees a block from [`allocate`].
///
/// # Safety
/// `block` must come from [`allocate`] and not have been freed yet.
pub unsafe fn free(block: NonNull<u8>) {
    libmimalloc_sys::mi_free(block.as_ptr().cast());
}

/// Asks the allocator to give freed pages back to the operating system now,
/// rather than after its purge delay. Frees of large blocks on other threads
/// are collected too.
pub fn return_free_memory_to_os() {
    // SAFETY: mi_collect takes no pointers; it only walks the allocator's own
    // structures of the calling thread (and, with `force`, shared ones).
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// What the allocator holds for the live block at `ptr` (tests compare it with
/// [`held_bytes`] of the size that was asked for).
#[cfg(test)]
pub(crate) fn usable_bytes(ptr: *const u8) -> usize {
    // SAFETY: callers pass a live block from this allocator.
    unsafe { libmimalloc_sys::mi_usable_size(ptr.cast()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_small_size_class_is_the_allocators_own() {
        for size in 0..=SMALL_MAX_BYTES + 1 {
            assert_eq!(held_bytes(size), good_size(size), "{size} bytes");
        }
    }

    #[test]
    fn held_bytes_is_the_size_class_a_request_really_gets() {
        for size in [
            1, 7, 8, 9, 57, 64, 65, 100, 1000, 1024, 1025, 4000, 9000, 70_000, 300_000,
        ] {
            let block: Vec<u8> = Vec::with_capacity(size);
            assert_eq!(
                held_bytes(size),
                usable_bytes(block.as_ptr()),
                "{size} bytes"
            );
        }
        for size in [600_000, (1 << 20) + 24, 20_000_000] {
            let block: Vec<u8> = Vec::with_capacity(size);
            let held = held_bytes(size);
            assert!(
                held >= size && held <= usable_bytes(block.as_ptr()),
                "{size} bytes"
            );
            assert_eq!(held % 4096, 0, "whole pages");
        }
    }
}
