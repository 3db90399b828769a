//! Freeing: the queue of deferred frees, the fast path for a block of a
//! page this thread owns, and the paths kept apart from it — frees of other
//! threads' blocks (one CAS onto the page's thread-free list, or a
//! hand-over to the owner when the page was full), huge blocks, and bad
//! pointers.
//!
//! **The queue.** [`free`] of a block up to [`DEFER_MAX`] bytes only stores
//! the pointer in the thread's queue (`Heap::deferred_frees`); when the
//! queue is full, [`carry_out_deferred_frees`] frees all of them through
//! [`free_now`]. A loop that reads each block just before freeing it waits
//! for that read's cache miss, and the processor can only keep as many
//! misses in flight as its reorder window holds iterations: a free of a few
//! instructions there instead of about 45 let churn-batch-100k run 14 %
//! faster, and the blocks are still in the cache when the queue is carried
//! out. Invariants:
//!
//! * only the owning thread touches its queue, except the collector, which
//!   reads it with the world stopped (see [`hide_queued_frees`]);
//! * a queued block is still allocated (its bit is set): whatever must see
//!   it as freed carries out the calling thread's queue first (the
//!   allocation slow path, `stats`, `inspect`, `realloc`, a collection,
//!   `release_free_memory`), and the collector hides other threads' queued
//!   blocks;
//! * a heap that is not active, or dead, or told not to defer
//!   (`ZONAL_DEFER_FREES=0`) has the count [`NO_DEFERRAL`], which sends
//!   every free to the slow path, so nothing is queued that no exit would
//!   carry out; the main thread's queue is carried out by an `atexit`
//!   handler, since its TLS destructors do not run at process exit.
//!
//! Validation costs the fast path three checks it needs anyway: the segment
//! map says the address is in a zonal segment (so reading the header is
//! safe), the block's allocation bit is set (so it is a live block start:
//! double, interior and misaligned frees all fail here), and the page's
//! owner is this thread (so the non-atomic local list may be used).

use crate::fault::{self, Op};
use crate::heap::{self, Heap, DEFERRED_FREES, NO_DEFERRAL};
use crate::os::{self, OS_PAGE};
use crate::page::thread_free::{self, Block, Pushed};
use crate::page::Page;
use crate::segment::{self, map, Segment};
use crate::size_class::{PageKind, GRANULE, SMALL_MAX};
use crate::sync::{AtomicBool, Ordering};

/// Frees the block at `ptr`, which was allocated with `size` bytes: a
/// block of at most [`DEFER_MAX`] bytes is queued (see the module docs),
/// any other is freed at once ([`free_now`]). Aborts with a report on a bad
/// pointer, when the free is carried out.
///
/// # Safety
/// If `ptr` is a live zonal block, the caller gives up all use of it. A GC
/// block may be queued only because the queue lies in static TLS, which
/// the collector scans: the queue keeps the block alive until its free.
#[inline(always)]
pub(crate) unsafe fn free(ptr: *mut u8, size: usize) {
    // SAFETY: the thread's heap outlives this call.
    let heap = unsafe { &*heap::current() };
    let count = heap.deferred_count.get();
    if count < DEFERRED_FREES && size <= DEFER_MAX {
        // SAFETY: `count` is below the queue's length.
        unsafe { heap.deferred_frees.get_unchecked(count) }.set(ptr);
        heap.deferred_count.set(count + 1);
        return;
    }
    // SAFETY: as for this function.
    unsafe { free_deferring(heap, ptr, size) }
}

/// Largest request whose free is queued: a queue of small blocks holds at
/// most 64 KiB back from reuse, and bigger blocks (whose memory may go
/// back to the OS) are freed at once.
pub(crate) const DEFER_MAX: usize = crate::size_class::SMALL_DIRECT_MAX;

/// The slow path of [`free`]: the queue is full (carry it out, then queue
/// `ptr`), the block is big, or the heap does not defer (it is new, dead,
/// or deferral is off).
///
/// # Safety
/// As for [`free`].
#[cold]
#[inline(never)]
unsafe fn free_deferring(heap: &Heap, ptr: *mut u8, size: usize) {
    if heap.deferred_count.get() == NO_DEFERRAL && !heap.is_active() && !heap.is_dead() {
        // A thread's first call into zonal may be a free.
        heap.activate();
    }
    if size <= DEFER_MAX && heap.deferred_count.get() == DEFERRED_FREES {
        carry_out_deferred_frees(heap);
    }
    let count = heap.deferred_count.get();
    if size <= DEFER_MAX && count < DEFERRED_FREES {
        heap.deferred_frees[count].set(ptr);
        heap.deferred_count.set(count + 1);
        return;
    }
    // SAFETY: as for this function.
    unsafe { free_now(ptr, size) }
}

/// Carries out the frees `heap` has queued, in the order they were made.
/// Owner only. Also called wherever queued blocks must be seen as free:
/// before the thread's page slow paths look for free blocks, before its
/// statistics are read, before `inspect` answers about an address, when
/// memory is released, and at thread and process exit.
pub(crate) fn carry_out_deferred_frees(heap: &Heap) {
    let count = heap.deferred_count.get();
    if count == 0 || count > DEFERRED_FREES {
        return;
    }
    // Frees made meanwhile (none are expected) are carried out at once.
    heap.deferred_count.set(NO_DEFERRAL);
    // The segment the last free found in the map, while it must still be
    // there: consecutive frees in one segment look it up once (an address
    // is never usize::MAX's segment).
    let mut mapped_segment = usize::MAX;
    for entry in &heap.deferred_frees[..count] {
        let addr = entry.get() as usize;
        let base = addr & !segment::SEGMENT_MASK;
        if base != mapped_segment {
            if map::entry(map::map(), addr) != map::SEGMENT {
                // Not huge (queued blocks are small), so a bad pointer.
                free_outside_segments(addr, 0);
                mapped_segment = usize::MAX;
                continue;
            }
            mapped_segment = base;
        }
        // SAFETY: the segment is in the map (looked up above, and only the
        // fast path ran since); the block was queued by `free`, whose
        // caller gave it up.
        if !unsafe { free_in_segment(heap, addr) } {
            mapped_segment = usize::MAX;
        }
    }
    heap.deferred_count.set(0);
}

/// Registers (once per process) an `atexit` handler that carries out the
/// exiting thread's queued frees: the main thread's TLS destructors do not
/// run when the process exits, and an invalid or double free it queued
/// must still be reported.
pub(crate) fn carry_out_deferred_frees_at_exit() {
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    extern "C" fn at_exit() {
        // SAFETY: the exiting thread's heap is valid until its TLS is torn
        // down, after `exit` has run the handlers.
        carry_out_deferred_frees(unsafe { &*heap::current() });
    }
    if !REGISTERED.swap(true, Ordering::Relaxed) {
        // SAFETY: `at_exit` is a plain function that stays valid.
        unsafe { libc::atexit(at_exit) };
    }
}

/// For a collection, with the world stopped: clears the allocation bit of
/// every live block that a thread has queued for freeing, and records it
/// in `hidden`. The program has freed those blocks, so the collector must
/// not scan them (a freed manual block's stale pointers would keep GC
/// objects alive) nor count a queued GC block as garbage (its owner frees
/// it when it carries out its queue). [`unhide_queued_frees`] sets the bits
/// back before the world resumes. A queued pointer that is not a live block
/// is left alone: its free reports the fault.
///
/// A stopped thread may be halfway through changing a word of the bitmap
/// (loaded, not yet stored): its store, after the world resumes, is based
/// on the word as it was before this clear, and the bit is set again by
/// then, so nothing is lost. If `hidden` is full, the remaining blocks stay
/// visible (scanned conservatively, which is safe).
pub(crate) fn hide_queued_frees(hidden: &mut crate::gc::table::MappedVec<usize>) {
    heap::with_registry_locked(|heaps| {
        heaps.for_each_heap(|heap| {
            let count = heap.deferred_count.get();
            if count > DEFERRED_FREES {
                return;
            }
            for entry in &heap.deferred_frees[..count] {
                let addr = entry.get() as usize;
                if let Some((word, bit)) = live_block_bit(addr) {
                    if hidden.push(addr) {
                        word.store(word.load(Ordering::Relaxed) & !bit, Ordering::Relaxed);
                    }
                }
            }
        })
    });
}

/// Sets back the allocation bits [`hide_queued_frees`] cleared, and empties
/// `hidden`.
pub(crate) fn unhide_queued_frees(hidden: &mut crate::gc::table::MappedVec<usize>) {
    for &addr in hidden.as_slice() {
        // SAFETY: `addr` was a live block of a published segment when it
        // was hidden, and segments holding live blocks stay mapped.
        let seg = unsafe { Segment::at(addr & !segment::SEGMENT_MASK) };
        let (word, bit) = seg.alloc_bit(addr);
        word.store(word.load(Ordering::Relaxed) | bit, Ordering::Relaxed);
    }
    hidden.clear();
}

/// The allocation-bitmap word and bit of `addr` if it is a live block of a
/// segment (not a huge block: queued frees are small).
fn live_block_bit(addr: usize) -> Option<(&'static crate::sync::AtomicU64, u64)> {
    if map::entry(map::map(), addr) != map::SEGMENT || !addr.is_multiple_of(GRANULE) {
        return None;
    }
    // SAFETY: the map says the segment containing `addr` starts here.
    let seg = unsafe { Segment::at(addr & !segment::SEGMENT_MASK) };
    let (word, bit) = seg.alloc_bit(addr);
    (word.load(Ordering::Relaxed) & bit != 0).then_some((word, bit))
}

/// Frees the block at `ptr`, which was allocated with `size` bytes (the
/// size only feeds the statistics of huge blocks, which count requested
/// sizes; other blocks count their block size), at once. Aborts with a
/// report on a bad pointer.
///
/// # Safety
/// If `ptr` is a live zonal block, the caller gives up all use of it.
#[inline(always)]
pub(crate) unsafe fn free_now(ptr: *mut u8, size: usize) {
    let addr = ptr as usize;
    if map::entry(map::map(), addr) != map::SEGMENT {
        return free_outside_segments(addr, size);
    }
    // SAFETY: the thread's heap outlives this call.
    let heap = unsafe { &*heap::current() };
    // SAFETY: the map says `addr` lies in a segment; the caller's contract.
    unsafe { free_in_segment(heap, addr) };
}

/// [`free_now`] of an address the segment map places in a segment. Returns
/// whether only the fast path ran: no page changed lists or went back to
/// its segment (which could take the segment out of the map).
///
/// # Safety
/// `addr` lies in a published segment; if it is a live block, the caller
/// gives it up.
#[inline(always)]
unsafe fn free_in_segment(heap: &Heap, addr: usize) -> bool {
    // SAFETY: the segment containing `addr` starts here (the contract).
    let seg = unsafe { Segment::at(addr & !segment::SEGMENT_MASK) };
    let page = seg.page_of(addr);
    let (word, bit) = seg.alloc_bit(addr);
    let bits = word.load(Ordering::Relaxed);
    // A live block start has its bit set and is granule aligned (the bit
    // covers the whole 16-byte granule, so the alignment is checked too).
    // Each test branches on its own: `free_shared` finds out again which
    // one failed, off the fast path.
    if bits & bit == 0
        || !addr.is_multiple_of(GRANULE)
        || page.owner.load(Ordering::Relaxed) != heap.id()
    {
        free_shared(heap, seg, page, addr);
        return false;
    }
    word.store(bits & !bit, Ordering::Relaxed);
    // Not counted here: the page's counts say how many blocks its owner
    // freed (see `Page::take_counts`).
    let used = page.push_local(addr as *mut Block);
    if page.needs_slow_path_after_free(used) {
        heap::after_local_free(heap, seg.zone, page);
        return false;
    }
    true
}

/// A bad pointer, or a live block of a page this thread does not own.
#[cold]
#[inline(never)]
fn free_shared(heap: &Heap, seg: &Segment, page: &Page, addr: usize) {
    let (word, bit) = seg.alloc_bit(addr);
    if word.load(Ordering::Relaxed) & bit == 0 || !addr.is_multiple_of(GRANULE) {
        fault::report_bad_pointer(Op::Free, addr);
    }
    if seg.zone == crate::Zone::Gc {
        return crate::gc::free_block(heap, seg, page, addr);
    }
    // Not counted here: whoever collects the block from the page counts it
    // (see `Page::take_counts`), so a thread's count of frees never gets
    // ahead of its count of allocations.
    release_big_block_memory(seg, page, addr);
    let block = addr as *mut Block;
    // SAFETY: the block is live (its bit is set) and the caller gave it up.
    if unsafe { thread_free::push(&page.thread_free, block) } == Pushed::MustNotify {
        // SAFETY: our push put the page in the `Delaying` state, which keeps
        // its owner's heap alive until `end_notify`.
        match unsafe { Heap::from_id(page.owner.load(Ordering::Relaxed)) } {
            // SAFETY: the block is ours to hand over.
            Some(owner) => unsafe { owner.push_delayed(block) },
            None => {
                // The owner was a thread of the parent before a fork: link
                // the block like any remote free (the page is leaked here).
                thread_free::end_notify(&page.thread_free);
                // SAFETY: as for the push above.
                unsafe { thread_free::push(&page.thread_free, block) };
                return;
            }
        }
        thread_free::end_notify(&page.thread_free);
    }
}

/// Blocks at least this big give their memory back to the OS when another
/// thread frees them.
const RELEASE_ON_REMOTE_FREE_MIN: usize = 64 * 1024;
// Small pages hold no such block.
const _: () = assert!(SMALL_MAX < RELEASE_ON_REMOTE_FREE_MIN);

/// Returns the whole OS pages of a big block freed by a thread that does not
/// own its page. The owner may be idle for a long time (only it can retire
/// the page), and without a background thread this is the only moment
/// anyone can give that memory back. Must run before the block is pushed:
/// after that the owner may reuse it.
///
/// The OS page holding the block's first word stays: the push writes the
/// free-list link there at once, and in a segment backed by transparent
/// huge pages that write would fault a whole 2 MiB page back in once the
/// rest of its range is decommitted. The page's last block also gives back
/// the slack after it, where no block ever lives but which a huge page
/// made resident.
fn release_big_block_memory(seg: &Segment, page: &Page, addr: usize) {
    // The segment's kind first: the page record's first cache line is the
    // one its owner writes on every allocation and free, and reading it
    // here would pull that line away from the owner on every remote free
    // (producer/consumer traffic: 13 % of this function's samples).
    if seg.kind == PageKind::Small {
        return;
    }
    let block_size = page.block_size.get();
    if block_size < RELEASE_ON_REMOTE_FREE_MIN {
        return;
    }
    let start = (addr + core::mem::size_of::<Block>() + OS_PAGE - 1) & !(OS_PAGE - 1);
    let blocks_end = page.area.get() as usize + page.reserved.get() as usize * block_size;
    let block_end = addr + block_size;
    let end = if block_end == blocks_end {
        seg.page_area_end(page)
    } else {
        block_end
    } & !(OS_PAGE - 1);
    if end > start {
        // SAFETY: the range lies inside a freed block that this thread still
        // exclusively holds, or in the page's slack, which holds no block;
        // nothing lives in it.
        unsafe { os::decommit(start as *mut u8, end - start) };
    }
}

/// Huge blocks and bad pointers.
#[cold]
#[inline(never)]
fn free_outside_segments(addr: usize, size: usize) {
    match map::lookup(map::map(), addr) {
        Some(map::Found::Huge(base)) => {
            // SAFETY: the map says a huge mapping starts at `base`.
            let seg = unsafe { Segment::at(base) };
            let page = &seg.pages[0];
            if addr != page.area.get() as usize || page.used() != 1 {
                fault::report_bad_pointer(Op::Free, addr);
            }
            // GC-zone statistics count whole blocks (see `gc`).
            let counted = if seg.zone == crate::Zone::Gc {
                page.block_size.get()
            } else {
                size
            };
            // SAFETY: the thread's heap outlives this call.
            unsafe { &*heap::current() }.count(seg.zone, |c| c.on_free(counted));
            // SAFETY: the block is live and the caller gave it up; no
            // collection looks at the mapping while it goes.
            crate::gc::exclusive_of_collection(|| unsafe { segment::huge_free(page) });
        }
        _ => fault::report_bad_pointer(Op::Free, addr),
    }
}
