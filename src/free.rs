//! Freeing: the fast path for a block of a page this thread owns, and the
//! paths kept apart from it — frees of other threads' blocks (one CAS onto
//! the page's thread-free list), huge blocks, and bad pointers.
//!
//! Validation costs the fast path three checks it needs anyway: the segment
//! map says the address is in a zonal segment (so reading the header is
//! safe), the block's allocation bit is set (so it is a live block start:
//! double, interior and misaligned frees all fail here), and the page's
//! owner is this thread (so the non-atomic local list may be used).

use crate::fault::{self, Op};
use crate::heap::{self, Heap, ABANDONED};
use crate::page::thread_free::{self, Block, Pushed};
use crate::page::Page;
use crate::segment::{self, map, Segment};
use crate::sync::Ordering;

/// Frees the block at `ptr`, which was allocated with `size` bytes (the
/// size only feeds statistics). Aborts with a report on a bad pointer.
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
    if bits & bit == 0 || page.owner.load(Ordering::Relaxed) != heap.id() {
        return free_shared(heap, seg, page, addr, bits & bit != 0, size);
    }
    word.store(bits & !bit, Ordering::Relaxed);
    let block = ptr.cast::<Block>();
    // SAFETY: the block is live (bit set) and on a page we own; the caller
    // gave it up, so we may reuse its first word as the link.
    unsafe { (*block).next = page.local_free.get() };
    page.local_free.set(block);
    let used = page.used.get() - 1;
    page.used.set(used);
    heap.zone(seg.zone).counters.on_free(size);
    if used == 0 {
        heap::on_page_unused(heap, seg.zone, page);
    }
}

/// A bad pointer, or a live block of a page this thread does not own.
#[cold]
#[inline(never)]
fn free_shared(heap: &Heap, seg: &Segment, page: &Page, addr: usize, allocated: bool, size: usize) {
    if !allocated {
        fault::report_bad_pointer(Op::Free, addr);
    }
    heap.zone(seg.zone).counters.on_free(size);
    // SAFETY: the block is live (its bit is set) and the caller gave it up.
    let pushed = unsafe { thread_free::push(&page.thread_free, addr as *mut Block) };
    if pushed == Pushed::ReopenedFull {
        let list = heap::pool_list(seg.zone, page.bin.get() as usize);
        // SAFETY: re-opening a full page makes us responsible for it (see
        // page::thread_free); its header stays mapped while blocks are out.
        unsafe { ABANDONED.push(list, page as *const Page as *mut Page) };
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
            if addr != page.area.get() as usize || page.used.get() != 1 {
                fault::report_bad_pointer(Op::Free, addr);
            }
            crate::alloc::counters(seg.zone).on_free(size);
            // SAFETY: the block is live and the caller gave it up.
            unsafe { segment::huge_free(page) };
        }
        _ => fault::report_bad_pointer(Op::Free, addr),
    }
}
