//! The garbage-collected zone: a conservative, non-moving, stop-the-world
//! mark-sweep collector on zonal's page machinery.
//!
//! GC memory lives in segments of the GC zone, allocated through the same
//! per-thread heaps and pages as every other zone. A collection ([`collect()`])
//! stops every registered thread, marks every GC block reachable from the
//! roots (see `roots`: stacks, registers, TLS, data segments, explicit
//! roots, and the live contents of the other zones), treating every aligned
//! word as a possible pointer, then sweeps the blocks it did not reach back
//! to their pages. Objects are never moved, so a conservative pointer is
//! never wrong about where an object is, only (rarely) about whether it is
//! still needed.
//!
//! How the collector stays sound while other threads run:
//!
//! * every GC-zone operation (allocate, free, and the page slow paths of
//!   every zone) runs inside a *deferral section* (`thread::suspend`): a
//!   thread is only ever stopped where the pages and queues the collector
//!   touches are consistent and where it holds no zonal lock;
//! * GC pages never use the cross-thread free list: a block freed
//!   explicitly by a thread that does not own its page is left for the
//!   collector to reclaim (its allocation bit stays set), so the sweep can
//!   act as each page's owner;
//! * the allocation bitmap says exactly which blocks are live, so a
//!   conservative pointer into free memory marks nothing;
//! * threads that are not registered (new ones before their first
//!   allocation, dying ones after their exit hook) are not stopped, so
//!   their GC-zone operations and huge-block releases take the
//!   `collect::COLLECTION` lock instead (`exclusive_of_collection`).
//!
//! Statistics of the GC zone count whole blocks (block sizes), since the
//! sweep cannot know the size each block was requested with.

pub(crate) mod collect;
pub(crate) mod finalize;
mod mark;
mod roots;
mod sweep;
pub(crate) mod table;
pub(crate) mod weak;

use crate::heap::{self, Heap};
use crate::page::thread_free::Block;
use crate::page::Page;
use crate::segment::Segment;
use crate::size_class;
use crate::sync::Ordering;
use crate::thread::{self, suspend::DeferGuard};
use crate::Zone;
use core::cell::Cell;
use core::time::Duration;

/// Whether a GC block may hold pointers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// Scanned conservatively when reached (and cleared on allocation, so
    /// stale bits never look like pointers).
    Conservative,
    /// Never scanned ("atomic"): strings, numbers, pixel buffers.
    Atomic,
}

/// GC bytes a thread allocates before it adds them to the shared count.
const FLUSH_BYTES: usize = 64 * 1024;

std::thread_local! {
    /// GC bytes allocated by an unregistered thread and not yet flushed
    /// (registered threads count in their record).
    static UNFLUSHED: Cell<usize> = const { Cell::new(0) };
}

/// Allocates a GC block of at least `size` bytes aligned to `align`; null
/// when out of memory even after a collection.
///
/// The fast path — a registered thread, a small size, a block in the
/// direct table's page — is a pop like the manual zone's, inside a
/// deferral section, plus clearing the block and setting its no-scan bit.
#[inline]
pub(crate) fn alloc(size: usize, align: usize, scan: Scan) -> *mut u8 {
    // One byte more than asked (see `alloc_block`).
    let request = size.wrapping_add(1);
    if request <= size_class::SMALL_DIRECT_MAX && align <= size_class::GRANULE {
        if let Some(record) = thread::current() {
            record.handshake.enter();
            // SAFETY: the thread's heap outlives this call.
            let heap = unsafe { &*heap::current() };
            let zone_heap = heap.zone(Zone::Gc);
            let slot = (request + size_class::GRANULE - 1) >> size_class::GRANULE_SHIFT;
            // SAFETY: direct-table entries always point at a valid page.
            let page = unsafe { &*zone_heap.direct[slot].get() };
            if let Some(block) = crate::alloc::pop_block(page) {
                let bytes = page.block_size.get();
                prepare_block(page, block, bytes, scan);
                zone_heap.counters.on_alloc(bytes);
                if record.handshake.leave() {
                    thread::suspend::serve_deferred_stop(record);
                }
                count_allocated(record, bytes);
                return block;
            }
            if record.handshake.leave() {
                thread::suspend::serve_deferred_stop(record);
            }
        }
    }
    alloc_slow(size, align, scan)
}

/// Clears a small block fresh from its page's free list (if it may hold
/// stale bits) and sets its no-scan bit.
#[inline(always)]
fn prepare_block(page: &Page, block: *mut u8, bytes: usize, scan: Scan) {
    if scan == Scan::Conservative {
        if page.free_is_zero.get() {
            // Only the free-list link was written into the block.
            // SAFETY: the block is ours and at least one word long.
            unsafe { block.cast::<usize>().write(0) };
        } else {
            // SAFETY: the block is ours and `bytes` (a multiple of 16) long.
            unsafe { zero_words(block, bytes) };
        }
    }
    set_no_scan(block, scan);
}

/// Records in the segment's no-scan bitmap whether the collector scans the
/// GC block at `block`.
#[inline(always)]
fn set_no_scan(block: *mut u8, scan: Scan) {
    // SAFETY: the block lies in a live GC segment, whose header is at the
    // segment-aligned address below it.
    let seg = unsafe { Segment::at(block as usize & !crate::segment::SEGMENT_MASK) };
    let (word, bit) = seg.no_scan_bit(block as usize);
    let bits = word.load(Ordering::Relaxed);
    let bits = match scan {
        Scan::Conservative => bits & !bit,
        Scan::Atomic => bits | bit,
    };
    word.store(bits, Ordering::Relaxed);
}

/// Zeroes `bytes` (a multiple of 16) at `block`: inline word stores for
/// small blocks, `memset` beyond.
///
/// # Safety
/// `block` must be valid for `bytes` bytes of writes and 16-aligned.
#[inline(always)]
unsafe fn zero_words(block: *mut u8, bytes: usize) {
    if bytes <= 128 {
        // Volatile, or the compiler turns the loop back into a `memset`
        // call, which costs more than the stores for a few words.
        let pairs = block.cast::<u128>();
        for i in 0..bytes / 16 {
            // SAFETY: within the block, by the contract; 16-aligned.
            unsafe { pairs.add(i).write_volatile(0) };
        }
    } else {
        // SAFETY: by the contract.
        unsafe { core::ptr::write_bytes(block, 0, bytes) };
    }
}

/// Counts `bytes` of GC allocation by a registered thread towards the next
/// automatic collection (see [`note_allocated`]).
#[inline(always)]
fn count_allocated(record: &thread::ThreadRecord, bytes: usize) {
    let total = record.gc_unflushed.load(Ordering::Relaxed) + bytes;
    if total < FLUSH_BYTES {
        record.gc_unflushed.store(total, Ordering::Relaxed);
        return;
    }
    record.gc_unflushed.store(0, Ordering::Relaxed);
    flush_allocated(total);
}

#[cold]
#[inline(never)]
fn alloc_slow(size: usize, align: usize, scan: Scan) -> *mut u8 {
    collect::clear_dead_stack();
    let mut block = alloc_once(size, align, scan);
    if block.is_null() {
        collect::collect(false);
        block = alloc_once(size, align, scan);
    }
    block
}

fn alloc_once(size: usize, align: usize, scan: Scan) -> *mut u8 {
    // SAFETY: the thread's heap outlives this call.
    let heap = unsafe { &*heap::current() };
    if !heap.is_dead() {
        thread::register_current();
    }
    let (block, bytes) = exclusive_of_collection(|| alloc_block(heap, size, align, scan));
    if !block.is_null() {
        note_allocated(bytes);
    }
    block
}

/// The allocation itself, excluded from collections by the caller. Returns
/// the block and the bytes it counts for.
fn alloc_block(heap: &Heap, size: usize, align: usize, scan: Scan) -> (*mut u8, usize) {
    // One byte more than asked, so that a pointer one past the end of the
    // object is inside its block (see `mark`); and whole blocks, so the
    // statistics (which count block sizes, see the module docs) agree with
    // what the sweep frees.
    let size = size.saturating_add(1);
    let bin = size_class::bin_for(size, align);
    let request = bin.map_or(size, size_class::block_size_of);
    let block = match scan {
        Scan::Conservative => crate::alloc::alloc_zeroed_page_backed(Zone::Gc, request, align),
        Scan::Atomic => crate::alloc::alloc_page_backed(Zone::Gc, request, align),
    };
    if block.is_null() {
        return (block, 0);
    }
    let page = crate::alloc::page_of_live_block(block as usize);
    let bytes = page.block_size.get();
    if bin.is_some() {
        // Pages count the blocks taken from them only for the other zones
        // (see `heap::pages`).
        heap.count(Zone::Gc, |c| c.on_alloc(bytes));
    } else if bytes != request {
        // A huge block (counted as `request` bytes when it was mapped): it
        // counts for its whole mapping.
        heap.count(Zone::Gc, |c| c.on_resize(request, bytes));
    }
    set_no_scan(block, scan);
    (block, bytes)
}

/// Counts GC allocation towards the next automatic collection, and runs it
/// when it is due (after the allocation is complete and no lock is held).
/// Threads add to a count of their own and flush it to the shared count
/// every [`FLUSH_BYTES`].
fn note_allocated(bytes: usize) {
    if let Some(record) = thread::current() {
        return count_allocated(record, bytes);
    }
    let Ok(unflushed) = UNFLUSHED.try_with(|u| {
        let total = u.get() + bytes;
        u.set(if total >= FLUSH_BYTES { 0 } else { total });
        total
    }) else {
        return;
    };
    if unflushed >= FLUSH_BYTES {
        flush_allocated(unflushed);
    }
}

#[cold]
fn flush_allocated(bytes: usize) {
    let since = collect::ALLOCATED_SINCE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    if since >= collect::trigger() {
        collect::collect(true);
    }
}

/// An explicit free of a live GC block in a segment page: the page's owner
/// frees it at once; any other thread leaves it to the collector (GC pages
/// never use the cross-thread free list, see the module docs).
pub(crate) fn free_block(heap: &Heap, seg: &Segment, page: &Page, addr: usize) {
    if page.owner.load(Ordering::Relaxed) != heap.owner_id(Zone::Gc) {
        return;
    }
    let _deferral = DeferGuard::new();
    let (word, bit) = seg.alloc_bit(addr);
    word.store(word.load(Ordering::Relaxed) & !bit, Ordering::Relaxed);
    let used = page.push_local(addr as *mut Block);
    heap.zone(Zone::Gc).counters.on_free(page.block_size.get());
    if page.needs_slow_path_after_free(used) {
        heap::after_local_free(heap, Zone::Gc, page);
    }
}

/// Runs `f` where no collection can look at what it changes: inside a
/// deferral section on a registered thread, with the collection lock on any
/// other (which the world stop would not exclude).
pub(crate) fn exclusive_of_collection<R>(f: impl FnOnce() -> R) -> R {
    if thread::current().is_some() {
        let _deferral = DeferGuard::new();
        f()
    } else {
        collect::COLLECTION.with(f)
    }
}

/// The thread's exit hook (before its heap gives its pages up): runs the
/// finalizers still waiting for it.
pub(crate) fn on_thread_exit() {
    finalize::run_for_current_thread();
}

// ---- the public API (`zonal::gc`) ----------------------------------------

/// Runs a full collection now (stopping every other registered thread for
/// its duration), then the finalizers of this thread's objects that it
/// found unreachable. Runs even while collections are [disabled](disable).
///
/// ```
/// let before = zonal::stats().gc.collections;
/// zonal::gc::collect();
/// assert!(zonal::stats().gc.collections > before);
/// ```
pub fn collect() {
    collect::collect(false);
    finalize::run_for_current_thread();
}

/// Runs the finalizers (`Drop`) of objects this thread created that a
/// collection found unreachable, and returns how many ran. Finalizers run
/// on their creating thread only: here, at the end of [`collect()`], and
/// when the thread exits. Objects created by a thread that has exited are
/// freed without their finalizer (counted as skipped in [`crate::GcStats`]).
pub fn run_finalizers() -> usize {
    finalize::run_for_current_thread()
}

/// Turns automatic collections off until the returned guard drops (guards
/// nest; collections resume when the last one is gone). Explicit
/// [`collect()`] calls still run.
///
/// ```
/// let guard = zonal::gc::disable();
/// assert!(!zonal::gc::is_enabled());
/// drop(guard);
/// assert!(zonal::gc::is_enabled());
/// ```
pub fn disable() -> DisableGuard {
    collect::DISABLED.fetch_add(1, Ordering::Relaxed);
    DisableGuard { _private: () }
}

/// Keeps automatic collections off while alive (see [`disable`]).
#[must_use = "collections are enabled again as soon as the guard drops"]
#[derive(Debug)]
pub struct DisableGuard {
    _private: (),
}

impl Drop for DisableGuard {
    fn drop(&mut self) {
        collect::DISABLED.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether automatic collections may run (no [`DisableGuard`] is alive and
/// `ZONAL_GC_DISABLE` is not set).
pub fn is_enabled() -> bool {
    collect::DISABLED.load(Ordering::Relaxed) == 0 && !crate::options::get().gc_disable
}

/// Sets the minimum number of GC-zone bytes allocated between automatic
/// collections (the trigger adapts upwards from it to the live heap);
/// `0` restores the default (`ZONAL_GC_MIN_THRESHOLD_KIB`, 16 MiB).
pub fn set_threshold(bytes: usize) {
    collect::MIN_THRESHOLD.store(bytes, Ordering::Relaxed);
}

/// The error of [`add_root`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootTableFull;

impl core::fmt::Display for RootTableFull {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("zonal: the table of explicit GC roots is full (1048576 ranges)")
    }
}

impl std::error::Error for RootTableFull {}

/// Makes `[start, start + len)` a root: every GC object that a word of the
/// range points into stays alive until [`remove_root`]. For memory the
/// collector does not otherwise scan (a buffer from `libc::malloc`, a
/// mapping of your own).
///
/// # Safety
/// The whole range must stay readable until the root is removed.
pub unsafe fn add_root(start: *const u8, len: usize) -> Result<(), RootTableFull> {
    if roots::add(start as usize, len) {
        Ok(())
    } else {
        Err(RootTableFull)
    }
}

/// Removes the explicit root that starts at `start` (the latest one, if
/// several do); returns whether there was one.
pub fn remove_root(start: *const u8) -> bool {
    roots::remove(start as usize)
}

/// Registers the calling thread with the collector, which from then on
/// stops it during collections and scans its stack and thread-locals.
/// A thread registers itself on its first allocation or free through zonal;
/// call this in a thread that holds `Gc` values it received from elsewhere
/// before it allocates anything. Idempotent; a thread deregisters itself
/// when it exits.
pub fn register_thread() {
    thread::register_current();
}

/// Statistics of the collector (part of `zonal::stats()`).
pub(crate) fn stats() -> crate::GcStats {
    let ns =
        |counter: &crate::sync::AtomicU64| Duration::from_nanos(counter.load(Ordering::Relaxed));
    crate::GcStats {
        collections: collect::COLLECTIONS.load(Ordering::Relaxed),
        pause_last: ns(&collect::PAUSE_LAST_NS),
        pause_max: ns(&collect::PAUSE_MAX_NS),
        pause_total: ns(&collect::PAUSE_TOTAL_NS),
        mark_total: ns(&collect::MARK_TOTAL_NS),
        sweep_total: ns(&collect::SWEEP_TOTAL_NS),
        live_bytes_after: collect::LIVE_AFTER.load(Ordering::Relaxed),
        bytes_freed: collect::BYTES_FREED.load(Ordering::Relaxed),
        finalizers_run: finalize::FINALIZERS_RUN.load(Ordering::Relaxed),
        finalizers_skipped: finalize::FINALIZERS_SKIPPED.load(Ordering::Relaxed),
        finalizable_cycles: finalize::CYCLES.load(Ordering::Relaxed),
        finalizers_pending: finalize::registered_count() as u64,
        threshold: collect::trigger() as u64,
    }
}
