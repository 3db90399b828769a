//! Allocation: the fast path (a pop from a page found through the heap's
//! direct table) and, kept apart, everything else — size-class lookup for
//! larger or over-aligned requests, huge blocks, zeroing and `realloc`.
//!
//! The fast path touches only thread-local state and the page's owner
//! fields: no lock, no atomic read-modify-write. It sets the block's bit in
//! the allocation bitmap (a plain store to a word only this thread writes),
//! which is what lets `free` recognise double and invalid frees.

use crate::fault::{self, Op};
use crate::heap::{self, Heap};
use crate::page::Page;
use crate::segment::{self, map, Segment};
use crate::size_class::{self, GRANULE, GRANULE_SHIFT, SMALL_DIRECT_MAX};
use crate::sync::Ordering;
use crate::Zone;
use core::ptr;

/// Allocates `size` bytes aligned to `align` (a power of two) in `zone`.
/// Returns null when out of memory.
#[inline(always)]
pub(crate) fn alloc(zone: Zone, size: usize, align: usize) -> *mut u8 {
    if zone == Zone::Gc {
        return crate::gc::alloc(size, align, crate::gc::Scan::Conservative);
    }
    alloc_page_backed(zone, size, align)
}

/// [`alloc`] without the GC zone's protocol (which `gc::alloc` wraps
/// around this).
#[inline(always)]
pub(crate) fn alloc_page_backed(zone: Zone, size: usize, align: usize) -> *mut u8 {
    // SAFETY: the thread's heap outlives this call.
    let heap = unsafe { &*heap::current() };
    if size <= SMALL_DIRECT_MAX && align <= GRANULE {
        let zone_heap = heap.zone(zone);
        // SAFETY: direct-table entries always point at a valid page (an
        // owned one, or the static empty page whose free list is null).
        let page = unsafe { &*zone_heap.direct[(size + GRANULE - 1) >> GRANULE_SHIFT].get() };
        if let Some(block) = pop_block(page) {
            return block;
        }
    }
    alloc_slow(heap, zone, size, align)
}

/// Sets the allocation bit of a block this thread just took from a page it
/// owns.
#[inline(always)]
fn mark_allocated(addr: usize) {
    // SAFETY: the block lies in a live segment, whose header is at the
    // segment-aligned address below it.
    let seg = unsafe { Segment::at(addr & !segment::SEGMENT_MASK) };
    let (word, bit) = seg.alloc_bit(addr);
    word.store(word.load(Ordering::Relaxed) | bit, Ordering::Relaxed);
}

/// Pops a block from the free list of `page` (the empty page, or one this
/// thread owns), if it has one, and counts the allocation in the page (see
/// `Page::note_alloc`).
#[inline(always)]
pub(crate) fn pop_block(page: &Page) -> Option<*mut u8> {
    let block = page.free.get();
    if block.is_null() {
        return None;
    }
    // SAFETY: `block` heads the free list of a page this thread owns (the
    // static empty page never has a free block).
    page.free.set(unsafe { (*block).next });
    page.note_alloc();
    mark_allocated(block as usize);
    Some(block.cast())
}

/// Requests the direct table does not cover: larger or over-aligned blocks
/// (first page of the size class's queue), then the heap's slow path.
#[inline(never)]
fn alloc_slow(heap: &Heap, zone: Zone, size: usize, align: usize) -> *mut u8 {
    let Some(bin) = size_class::bin_for(size, align) else {
        return alloc_huge(heap, zone, size, align);
    };
    let zone_heap = heap.zone(zone);
    if let Some(block) = zone_heap.first_page(bin).and_then(pop_block) {
        return block;
    }
    alloc_from_new_page(heap, zone, bin)
}

#[cold]
#[inline(never)]
fn alloc_from_new_page(heap: &Heap, zone: Zone, bin: usize) -> *mut u8 {
    let Some(page) = heap::page_with_free_block(heap, zone, bin) else {
        return ptr::null_mut();
    };
    let Some(block) = pop_block(page) else {
        unreachable!("page_with_free_block returned a page without a free block");
    };
    if heap.is_dead() {
        heap::give_up_page(heap, zone, page);
    }
    block
}

fn alloc_huge(heap: &Heap, zone: Zone, size: usize, align: usize) -> *mut u8 {
    if !heap.is_active() {
        heap.activate();
    }
    match segment::huge_alloc(zone, size, align) {
        Some(page) => {
            heap.count(zone, |c| c.on_alloc(size));
            // SAFETY: huge_alloc returns the page of a live huge block.
            unsafe { page.as_ref() }.area.get()
        }
        None => ptr::null_mut(),
    }
}

/// Like [`alloc`], with the block cleared. Memory fresh from the OS is known
/// to be zero and is not cleared again.
pub(crate) fn alloc_zeroed(zone: Zone, size: usize, align: usize) -> *mut u8 {
    if zone == Zone::Gc {
        // GC blocks that may be scanned always come cleared.
        return alloc(zone, size, align);
    }
    alloc_zeroed_page_backed(zone, size, align)
}

/// [`alloc_zeroed`] without the GC zone's protocol.
pub(crate) fn alloc_zeroed_page_backed(zone: Zone, size: usize, align: usize) -> *mut u8 {
    let block = alloc_page_backed(zone, size, align);
    if block.is_null() {
        return block;
    }
    if current_heap().is_dead() {
        // The page may already belong to another thread (see `alloc_slow`):
        // its flags are not ours to read.
        // SAFETY: the block is ours and at least `size` bytes long.
        unsafe { ptr::write_bytes(block, 0, size) };
        return block;
    }
    let page = page_of_live_block(block as usize);
    // `free_is_zero` still describes the list the block came from: only the
    // owner's slow path clears it, and we are the owner.
    // SAFETY: the block is ours and at least `size` (>= 16 when rounded up
    // to its class) bytes long.
    unsafe {
        if page.free_is_zero.get() {
            if page.reserved.get() > 1 {
                // Only the free-list link was written into the block.
                block.cast::<usize>().write(0);
            }
        } else {
            ptr::write_bytes(block, 0, size);
        }
    }
    block
}

/// The page of a block known to be live.
pub(crate) fn page_of_live_block(addr: usize) -> &'static Page {
    match map::lookup(map::map(), addr) {
        // SAFETY: the map says a segment starts at `base`.
        Some(map::Found::Segment(base)) => unsafe { Segment::at(base) }.page_of(addr),
        // SAFETY: as above.
        Some(map::Found::Huge(base)) => &unsafe { Segment::at(base) }.pages[0],
        None => unreachable!("a block zonal just allocated is in its segment map"),
    }
}

/// Resizes the block at `ptr` (allocated with `old_size` and `align`) to
/// `new_size` bytes: in place when its size class or huge mapping allows,
/// otherwise by allocating in the same zone, copying and freeing. Returns
/// null (with the old block intact) when out of memory.
///
/// # Safety
/// `ptr` must be a live zonal block of at least `old_size` bytes.
pub(crate) unsafe fn realloc(
    ptr: *mut u8,
    old_size: usize,
    align: usize,
    new_size: usize,
) -> *mut u8 {
    // A block whose free is queued must be seen as freed.
    crate::free::carry_out_deferred_frees(current_heap());
    let addr = ptr as usize;
    let zone = match map::lookup(map::map(), addr) {
        Some(map::Found::Segment(base)) => {
            // SAFETY: the map says a segment starts at `base`.
            let seg = unsafe { Segment::at(base) };
            let (word, bit) = seg.alloc_bit(addr);
            if word.load(Ordering::Relaxed) & bit == 0 || !addr.is_multiple_of(GRANULE) {
                fault::report_bad_pointer(Op::Realloc, addr);
            }
            let block = seg.page_of(addr).block_size.get();
            // A GC block keeps one spare byte past its contents, so that a
            // pointer one past the end stays inside it (see `gc::mark`).
            let needed = new_size + usize::from(seg.zone == Zone::Gc);
            if fits_in_place(needed, block, align, addr) {
                // Statistics count whole blocks: the block did not change.
                return ptr;
            }
            seg.zone
        }
        Some(map::Found::Huge(base)) => {
            // SAFETY: as above.
            let seg = unsafe { Segment::at(base) };
            let page = &seg.pages[0];
            if addr != page.area.get() as usize || page.used() != 1 {
                fault::report_bad_pointer(Op::Realloc, addr);
            }
            let zone = seg.zone;
            let old_block = page.block_size.get();
            // SAFETY: the block is the caller's live huge block. After this
            // call `seg` may have moved: only `zone` is used. A collection
            // must not look at the mapping while it moves.
            // The GC zone's spare byte (see above) for huge blocks too.
            let needed = new_size + usize::from(zone == Zone::Gc);
            let resized =
                crate::gc::exclusive_of_collection(|| unsafe { realloc_huge(page, needed, align) });
            if let Some(p) = resized {
                let (old, new) = if zone == Zone::Gc {
                    (old_block, page_of_live_block(p as usize).block_size.get())
                } else {
                    (old_size, new_size)
                };
                current_heap().count(zone, |c| c.on_resize(old, new));
                return p;
            }
            zone
        }
        None => fault::report_bad_pointer(Op::Realloc, addr),
    };
    let new = alloc(zone, new_size, align);
    if !new.is_null() {
        // SAFETY: both blocks are live, distinct, and at least this long.
        unsafe {
            ptr::copy_nonoverlapping(ptr, new, old_size.min(new_size));
            crate::free::free(ptr, old_size);
        }
    }
    new
}

/// Whether a block of `block` bytes at `addr` can serve `new_size` without
/// wasting more than half of it.
#[inline]
fn fits_in_place(new_size: usize, block: usize, align: usize, addr: usize) -> bool {
    new_size <= block
        && (new_size >= block / 2 || block <= 4 * GRANULE)
        && addr.is_multiple_of(align)
}

/// In-place or `mremap` resize of a huge block that stays huge.
///
/// # Safety
/// `page` is the page of the caller's live huge block.
unsafe fn realloc_huge(page: &Page, new_size: usize, align: usize) -> Option<*mut u8> {
    let block = page.block_size.get();
    if new_size <= block && new_size >= block / 2 {
        return Some(page.area.get());
    }
    if new_size <= size_class::LARGE_MAX
        || !(page.area.get() as usize).is_multiple_of(align)
        || align > segment::SEGMENT_SIZE
        || segment::grow_by_copy(page, new_size)
    {
        return None;
    }
    // SAFETY: the caller owns the live huge block.
    let moved = unsafe { segment::huge_resize(page, new_size) }?;
    // SAFETY: huge_resize returns the page of the (moved) live block.
    Some(unsafe { moved.as_ref() }.area.get())
}

/// The calling thread's heap.
#[inline]
fn current_heap() -> &'static Heap {
    // SAFETY: the heap lives as long as the thread, and callers use the
    // reference at once.
    unsafe { &*heap::current() }
}
