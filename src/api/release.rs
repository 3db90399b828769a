//! `release_free_memory`: gives the free memory zonal keeps committed back
//! to the operating system on request.
//!
//! zonal has no background thread, so retained memory is only decommitted
//! when the program calls into the allocator (see the segment pool's module
//! docs): a program that goes idle right after freeing keeps what the
//! retention budget allowed, up to `ZONAL_RETAIN_MAX_MIB` after the budget
//! learnt that a large working set keeps coming back. This is the explicit
//! way to hand it back (like glibc's `malloc_trim` or mimalloc's
//! `mi_collect(true)`).

use crate::{heap, os, segment};

/// Gives the free memory that zonal keeps committed for reuse back to the
/// operating system now, and returns by how many bytes zonal's committed
/// memory fell (other threads allocating at the same time make the figure
/// smaller than what was given back).
///
/// Two kinds of free memory are released:
///
/// * the calling thread's unused pages of the manual and pinned zones (a
///   thread keeps a few recently emptied pages, so that alloc/free churn
///   does not bounce them), after it has taken in the blocks other threads
///   freed into its pages;
/// * everything the shared segment pool retains: free pages of partly used
///   segments, cached empty segments (their address space stays reserved)
///   and cached mappings of freed huge blocks (unmapped). The retention
///   budget also forgets what it learnt from reuse and starts again from
///   `ZONAL_RETAIN_MIB`.
///
/// Other threads' unused pages stay with them: only their owner may return
/// them (they do when they allocate or free again, or exit). Live blocks
/// are never touched. The call takes the pool's lock once and makes one
/// `madvise` per run of adjacent free pages; it is meant for moments such
/// as the end of a burst of work before the program goes idle, not for a
/// loop.
///
/// ```
/// let big: Vec<u8> = vec![1; 64 << 20];
/// drop(big);
/// let given_back = zonal::release_free_memory();
/// println!("gave {given_back} bytes back to the OS");
/// ```
pub fn release_free_memory() -> usize {
    // SAFETY: the thread's heap outlives this call.
    let heap = unsafe { &*heap::current() };
    let before = os::committed_bytes();
    // Pages the heap returns may already be decommitted on their way into
    // the pool (its retention rules apply as for any returned page), so the
    // figure is the fall in committed memory, not the pool's own count.
    heap::release_unused_pages(heap);
    segment::release_retained();
    before.saturating_sub(os::committed_bytes())
}
