//! Huge blocks (larger than the largest size class, or aligned beyond what
//! pages guarantee): one mapping each, with one page and one block.
//!
//! A huge mapping is a whole number of segments, aligned to the segment
//! size (or to the block's alignment if that is larger), with the usual
//! header in front of the block, and it is registered in the segment map
//! chunk by chunk, so interior pointers resolve in O(1).
//!
//! Growing a huge block moves its pages with `mremap` instead of copying,
//! and leaves headroom (the mapping doubles, in address space only: pages
//! that are never touched cost nothing), so a vector that keeps doubling
//! moves once every other growth, unless a freed mapping that fits is
//! still committed: copying into it costs less than the kernel's clearing
//! of fresh pages. A freed mapping stays committed in the
//! pool's huge cache while the retention budget allows (see `pool`);
//! otherwise one of a single segment is decommitted and cached as an empty
//! segment, and a larger one is unmapped.

use super::{map, map_mappable, pool, segment_of_page, Segment, HEADER_SIZE, HUGE_PAGE_SHIFT};
use crate::os::{self, OS_PAGE};
use crate::page::Page;
use crate::size_class::PageKind;
use crate::stats;
use crate::Zone;
use core::ptr::{self, NonNull};
use map::{SEGMENT_MASK, SEGMENT_SHIFT, SEGMENT_SIZE};

/// Offset of a huge block in its mapping for alignment `align`.
fn block_offset(align: usize) -> usize {
    HEADER_SIZE.max(align)
}

/// Mapping size for a block of `size` bytes at `offset`.
fn mapping_size(offset: usize, size: usize) -> Option<usize> {
    let total = offset.checked_add(size)?;
    total.checked_add(SEGMENT_MASK).map(|t| t & !SEGMENT_MASK)
}

/// Maps a huge block of at least `size` bytes aligned to `align`. Returns
/// its page (the block starts at `page.area`); `page.free_is_zero` says
/// whether the block reads as zero (not when a cached mapping is reused).
pub(crate) fn huge_alloc(zone: Zone, size: usize, align: usize) -> Option<NonNull<Page>> {
    let offset = block_offset(align);
    let needed = mapping_size(offset, size)?;
    let reused = if align <= SEGMENT_SIZE {
        pool::take_huge_mapping(needed)
    } else {
        None
    };
    // The mapping, whether it reads as zero, and how much of it is fresh
    // (committed from here on; for the retention budget).
    let (seg, zeroed, fresh) = match reused {
        Some(seg) => (seg, false, 0),
        None if needed == SEGMENT_SIZE && align <= SEGMENT_SIZE => {
            match pool::take_cached_for_huge() {
                Some((seg, dirty)) => {
                    // A cached segment is committed in its first OS page and
                    // in the pages it kept; the rest reads as zero.
                    let fresh = SEGMENT_SIZE - OS_PAGE - dirty;
                    os::note_committed(fresh as isize);
                    (seg, dirty == 0, fresh)
                }
                None => (
                    map_mappable(needed, SEGMENT_SIZE)?
                        .as_ptr()
                        .cast::<Segment>(),
                    true,
                    needed,
                ),
            }
        }
        None => (
            map_mappable(needed, align.max(SEGMENT_SIZE))?
                .as_ptr()
                .cast::<Segment>(),
            true,
            needed,
        ),
    };
    if fresh != 0 {
        pool::note_fresh_huge_commit(fresh);
    }
    if crate::options::get().huge_os_pages {
        // A huge block is one big buffer: 2 MiB pages fault it in 512 times
        // faster. (A reused mapping already has the advice.)
        // SAFETY: `needed` bytes from `seg` are our mapping.
        unsafe { os::advise_huge_pages(seg.cast(), needed, true) };
    }
    // A reused mapping keeps its size, which may exceed what was needed.
    let mapping = if zeroed {
        needed
    } else {
        unsafe_mapping_size(seg)
    };
    // SAFETY: `seg` starts a mapping we own exclusively; the block lies
    // inside it.
    unsafe {
        ptr::addr_of_mut!((*seg).zone).write(zone);
        ptr::addr_of_mut!((*seg).kind).write(PageKind::Huge);
        ptr::addr_of_mut!((*seg).page_shift).write(HUGE_PAGE_SHIFT);
        ptr::addr_of_mut!((*seg).mapping_size).write(mapping);
        // The advice above may cover only part of the mapping: a segment
        // made of it later advises afresh.
        (*seg).huge_advice.set(0);
        let page = &(*seg).pages[0];
        page.block_size.set(mapping - offset);
        page.reserved.set(1);
        page.capacity.set(1);
        page.set_used(1);
        page.in_use.set(true);
        page.free_is_zero.set(zeroed);
        page.area.set((seg as *mut u8).add(offset));
    }
    stats::account(zone, mapping as isize, mapping as isize);
    map::register(map::map(), seg as usize, mapping >> SEGMENT_SHIFT, true);
    // SAFETY: the page record lives in the header initialised above.
    Some(unsafe { NonNull::from(&(*seg).pages[0]) })
}

fn unsafe_mapping_size(seg: *mut Segment) -> usize {
    // SAFETY: `seg` is a cached huge mapping we just took: its header is ours.
    unsafe { (*seg).mapping_size }
}

/// Releases a huge block's mapping.
///
/// # Safety
/// `page` must be the page of a live huge block that nobody uses any more.
pub(crate) unsafe fn huge_free(page: &Page) {
    let seg = segment_of_page(page) as *const Segment as *mut Segment;
    // SAFETY: the header stays mapped until the unmap below.
    let (mapping, zone) = unsafe { ((*seg).mapping_size, (*seg).zone) };
    stats::account(zone, -(mapping as isize), -(mapping as isize));
    map::unregister(map::map(), seg as usize, mapping >> SEGMENT_SHIFT);
    if pool::cache_huge_mapping(seg) {
        return;
    }
    if mapping == SEGMENT_SIZE {
        // SAFETY: the mapping is ours, unpublished, and holds nothing live;
        // everything past the first OS page is dropped, so the header's page
        // records and bitmaps read as zero again, and the first page (the
        // header's fields and first page record) is reset by hand.
        unsafe {
            os::decommit((seg as *mut u8).add(OS_PAGE), SEGMENT_SIZE - OS_PAGE);
            ptr::write_bytes(seg as *mut u8, 0, OS_PAGE);
            ptr::addr_of_mut!((*seg).kind).write(PageKind::Huge);
            (*seg).purge_deadline.set(u64::MAX);
        }
        os::note_committed(-((SEGMENT_SIZE - OS_PAGE) as isize));
        pool::cache_huge(seg);
    } else {
        pool::unmap_huge(seg);
    }
}

/// Whether growing the huge block of `page` to `new_size` bytes is better
/// done by allocating (and copying) than by [`huge_resize`]: when it needs
/// a bigger mapping and the pool keeps a committed one that fits. Fresh
/// pages cost more than the copy: the kernel clears them, and faults them
/// in, before the caller writes them again.
pub(crate) fn grow_by_copy(page: &Page, new_size: usize) -> bool {
    let seg = segment_of_page(page);
    let offset = page.area.get() as usize - seg.base();
    mapping_size(offset, new_size)
        .is_some_and(|needed| needed > seg.mapping_size && pool::has_huge_mapping(needed))
}

/// Resizes a huge block to hold at least `new_size` bytes, in place or by
/// moving its pages (`mremap`, no copy); growth leaves headroom (see the
/// module docs). Returns the (possibly moved) page, or `None` with the
/// block untouched.
///
/// # Safety
/// `page` must be the page of a live huge block owned by the caller.
pub(crate) unsafe fn huge_resize(page: &Page, new_size: usize) -> Option<NonNull<Page>> {
    let seg = segment_of_page(page);
    let base = seg.base();
    let offset = page.area.get() as usize - base;
    let old_mapping = seg.mapping_size;
    let needed = mapping_size(offset, new_size)?;
    let new_mapping = if needed > old_mapping {
        mapping_size(offset, new_size.checked_mul(2)?).unwrap_or(needed)
    } else {
        needed
    };
    if new_mapping == old_mapping {
        return Some(NonNull::from(page));
    }
    let align = offset.max(SEGMENT_SIZE).next_power_of_two();
    let zone = seg.zone;
    map::unregister(map::map(), base, old_mapping >> SEGMENT_SHIFT);
    // SAFETY: the mapping is ours and the caller owns the block.
    let moved = unsafe {
        os::remap(
            NonNull::new_unchecked(base as *mut u8),
            old_mapping,
            new_mapping,
            align,
        )
    };
    let Some(new_base) = moved else {
        map::register(map::map(), base, old_mapping >> SEGMENT_SHIFT, true);
        return None;
    };
    super::note_mapped(new_base.as_ptr() as usize, new_mapping);
    let delta = new_mapping as isize - old_mapping as isize;
    stats::account(zone, delta, delta);
    if delta > 0 {
        pool::note_fresh_huge_commit(delta as usize);
    }
    let seg = new_base.as_ptr().cast::<Segment>();
    // SAFETY: the header moved with the mapping and is ours.
    unsafe {
        ptr::addr_of_mut!((*seg).mapping_size).write(new_mapping);
        let page = &(*seg).pages[0];
        page.block_size.set(new_mapping - offset);
        page.area.set(new_base.as_ptr().add(offset));
    }
    map::register(map::map(), seg as usize, new_mapping >> SEGMENT_SHIFT, true);
    // SAFETY: as above.
    Some(unsafe { NonNull::from(&(*seg).pages[0]) })
}
