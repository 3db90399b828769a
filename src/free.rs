//! Freeing: the fast path for a block of a page this thread owns, and the
//! paths kept apart from it — frees of other threads' blocks (one CAS onto
//! the page's thread-free list, or a hand-over to the owner when the page
//! was full), huge blocks, and bad pointers.
//!
//! Validation costs the fast path three checks it needs anyway: the segment
//! map says the address is in a zonal segment (so reading the header is
//! safe), the block's allocation bit is set (so it is a live block start:
//! double, interior and misaligned frees all fail here), and the page's
//! owner is this thread (so the non-atomic local list may be used).

use crate::fault::{self, Op};
use crate::heap::{self, Heap};
use crate::os::{self, OS_PAGE};
use crate::page::thread_free::{self, Block, Pushed};
use crate::page::Page;
use crate::segment::{self, map, Segment};
use crate::size_class::{PageKind, GRANULE, SMALL_MAX};
use crate::sync::Ordering;

/// Frees the block at `ptr`, which was allocated with `size` bytes (the
/// size only feeds the statistics of huge blocks, which count requested
/// sizes; other blocks count their block size). Aborts with a report on a
/// bad pointer.
///
/// # Safety
/// If `ptr` is a live zonal block, the caller gives up all use of it.
#[inline(always)]
pub(crate) unsafe fn free(ptr: *mut u8, size: usize) {
    let addr = ptr as usize;
    if map::entry(map::map(), addr) != map::SEGMENT {
        return free_outside_segments(addr, size);
    }
    // SAFETY: the map says the segment containing `addr` starts here.
    let seg = unsafe { Segment::at(addr & !segment::SEGMENT_MASK) };
    let page = seg.page_of(addr);
    let (word, bit) = seg.alloc_bit(addr);
    let bits = word.load(Ordering::Relaxed);
    // SAFETY: the thread's heap outlives this call.
    let heap = unsafe { &*heap::current() };
    // A live block start has its bit set and is granule aligned (the bit
    // covers the whole 16-byte granule, so the alignment is checked too).
    // Each test branches on its own: `free_shared` finds out again which
    // one failed, off the fast path.
    if bits & bit == 0
        || !addr.is_multiple_of(GRANULE)
        || page.owner.load(Ordering::Relaxed) != heap.id()
    {
        return free_shared(heap, seg, page, addr);
    }
    word.store(bits & !bit, Ordering::Relaxed);
    // Not counted here: the page's counts say how many blocks its owner
    // freed (see `Page::take_counts`).
    let used = page.push_local(ptr.cast::<Block>());
    if heap::needs_after_local_free(page, used) {
        heap::after_local_free(heap, seg.zone, page);
    }
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
