//! Segments: 4 MiB aligned regions, each owned by one zone and carved into
//! pages of one kind, plus the dedicated mappings of huge allocations.
//!
//! Layout of a segment (the header is [`HEADER_SIZE`] bytes at its start):
//!
//! ```text
//! | Segment header: fields, 64 Page records, allocation bitmap, mark bitmap | pages ... |
//! ```
//!
//! | kind   | page size | pages | blocks up to |
//! |--------|-----------|-------|--------------|
//! | small  | 64 KiB    | 62 (the first two hold the header) | 8 KiB |
//! | medium | 512 KiB   | 8 (the first is shortened by the header) | 64 KiB |
//! | large  | 4 MiB     | 1 (shortened by the header) | 1 MiB |
//! | huge   | the mapping | 1 | anything |
//!
//! Every page start is 64 KiB aligned ([`PAGE_ALIGN_MIN`]), which is what
//! lets size classes honour alignments up to 64 KiB.
//!
//! The side bitmaps hold one bit per 16-byte granule of the first 4 MiB, so
//! a block's bit is found with shifts from its address alone. The
//! allocation bitmap is written only by the owner of the page that contains
//! the granule (see `page`); the mark bitmap belongs to the collector.
//!
//! Segments are shared by all threads: [`pool`] hands pages out and takes
//! them back (and decides when free memory goes back to the OS); [`huge`]
//! maps and resizes huge blocks; [`map`] is the segment map.

mod huge;
pub(crate) mod map;
mod pool;

use crate::os;
use crate::page::Page;
use crate::size_class::{self, PageKind, PAGE_ALIGN_MIN};
use crate::sync::{AtomicU64, AtomicUsize, Ordering};
use crate::Zone;
use core::cell::Cell;
use core::ptr::NonNull;
pub(crate) use huge::{grow_by_copy, huge_alloc, huge_free, huge_resize};
pub(crate) use map::{SEGMENT_MASK, SEGMENT_SHIFT, SEGMENT_SIZE};
pub(crate) use pool::{page_alloc, page_free, pool_lock, release_retained, reset_after_fork};

/// Bytes at the start of every segment that hold its header.
pub(crate) const HEADER_SIZE: usize = 128 * 1024;
/// Page records per segment (small segments have the most pages).
pub(crate) const MAX_PAGES: usize = SEGMENT_SIZE >> SMALL_PAGE_SHIFT;
/// Words of each side bitmap: one bit per granule of a segment.
pub(crate) const BITMAP_WORDS: usize = SEGMENT_SIZE / size_class::GRANULE / 64;

const SMALL_PAGE_SHIFT: u32 = 16;
const MEDIUM_PAGE_SHIFT: u32 = 19;
/// Huge segments have one page, whatever the offset.
const HUGE_PAGE_SHIFT: u32 = 63;

/// Offsets in its segment of the start and end of page `index`'s block
/// area, for pages of `1 << page_shift` bytes (the header is cut off the
/// first pages). The pages of every kind tile `HEADER_SIZE..SEGMENT_SIZE`.
pub(super) fn page_bounds(page_shift: u32, index: usize) -> (usize, usize) {
    let start = (index << page_shift).max(HEADER_SIZE);
    let end = ((index + 1) << page_shift).min(SEGMENT_SIZE);
    (start, end)
}

impl PageKind {
    /// Pages in a segment of this kind (not huge).
    pub(super) const fn page_count(self) -> usize {
        match self {
            PageKind::Small => MAX_PAGES,
            PageKind::Medium => SEGMENT_SIZE >> MEDIUM_PAGE_SHIFT,
            _ => 1,
        }
    }

    /// The first page that has a block area (the header fills the ones
    /// before it).
    pub(super) const fn first_page(self) -> usize {
        let first = HEADER_SIZE >> self.page_shift();
        if first < self.page_count() {
            first
        } else {
            self.page_count() - 1
        }
    }

    pub(super) const fn page_shift(self) -> u32 {
        match self {
            PageKind::Small => SMALL_PAGE_SHIFT,
            PageKind::Medium => MEDIUM_PAGE_SHIFT,
            PageKind::Large => SEGMENT_SHIFT,
            PageKind::Huge => HUGE_PAGE_SHIFT,
        }
    }
}

/// The header at the start of every segment and huge mapping.
#[repr(C)]
pub(crate) struct Segment {
    /// Written once before the segment is published in the map.
    pub(crate) zone: Zone,
    pub(crate) kind: PageKind,
    pub(crate) page_shift: u32,
    /// Bytes of the mapping (a multiple of `SEGMENT_SIZE`).
    pub(crate) mapping_size: usize,
    // Protected by the pool lock (see `pool`):
    pub(super) free_pages: Cell<u64>,
    /// Free pages whose memory is still committed (not yet purged).
    pub(super) dirty_pages: Cell<u64>,
    /// When the dirty pages may be decommitted (`u64::MAX`: none dirty).
    pub(super) purge_deadline: Cell<u64>,
    pub(super) used_pages: Cell<u32>,
    /// The transparent-huge-page advice the mapping last got: 0 none yet
    /// (or unknown), else [`HUGE_ADVICE_ON`] or [`HUGE_ADVICE_OFF`].
    pub(super) huge_advice: Cell<u8>,
    /// Links in a partial list or the cache.
    pub(super) next: Cell<*mut Segment>,
    pub(super) prev: Cell<*mut Segment>,
    pub(crate) pages: [Page; MAX_PAGES],
    pub(crate) alloc_bitmap: [AtomicU64; BITMAP_WORDS],
    pub(crate) mark_bitmap: [AtomicU64; BITMAP_WORDS],
    /// GC zone only: set for blocks that hold no pointers (never scanned).
    /// Written by the block's allocator when it hands the block out.
    pub(crate) no_scan_bitmap: [AtomicU64; BITMAP_WORDS],
}

const _: () = assert!(core::mem::size_of::<Segment>() <= HEADER_SIZE);
const _: () = assert!(HEADER_SIZE.is_multiple_of(PAGE_ALIGN_MIN));

/// Values of [`Segment::huge_advice`].
pub(super) const HUGE_ADVICE_ON: u8 = 1;
pub(super) const HUGE_ADVICE_OFF: u8 = 2;

impl Segment {
    /// The segment that starts at `base`.
    ///
    /// # Safety
    /// `base` must be the start of a published segment (found in the map),
    /// which stays mapped while the returned reference is used.
    #[inline(always)]
    pub(crate) unsafe fn at<'a>(base: usize) -> &'a Segment {
        // SAFETY: by the contract a header lives at `base`.
        unsafe { &*(base as *const Segment) }
    }

    #[inline(always)]
    pub(crate) fn base(&self) -> usize {
        self as *const Segment as usize
    }

    /// The page record covering `addr` (which must lie in this segment).
    #[inline(always)]
    pub(crate) fn page_of(&self, addr: usize) -> &Page {
        let index = (addr - self.base()) >> self.page_shift;
        debug_assert!(index < MAX_PAGES);
        // SAFETY: `addr` lies in this segment's first SEGMENT_SIZE bytes (or,
        // for a huge segment, page_shift is 63 and the index is 0), and
        // SEGMENT_SIZE >> page_shift <= MAX_PAGES for every kind.
        unsafe { self.pages.get_unchecked(index) }
    }

    /// The allocation-bitmap word and bit of the granule at `addr`, which
    /// must lie in the segment's first 4 MiB.
    #[inline(always)]
    pub(crate) fn alloc_bit(&self, addr: usize) -> (&AtomicU64, u64) {
        bit_in(&self.alloc_bitmap, addr & SEGMENT_MASK)
    }

    /// The mark-bitmap word and bit of the granule at `addr`.
    #[inline(always)]
    pub(crate) fn mark_bit(&self, addr: usize) -> (&AtomicU64, u64) {
        bit_in(&self.mark_bitmap, addr & SEGMENT_MASK)
    }

    /// The no-scan-bitmap word and bit of the granule at `addr`.
    #[inline(always)]
    pub(crate) fn no_scan_bit(&self, addr: usize) -> (&AtomicU64, u64) {
        bit_in(&self.no_scan_bitmap, addr & SEGMENT_MASK)
    }

    /// Whether this is the header of a huge block's mapping.
    #[inline]
    pub(crate) fn is_huge(&self) -> bool {
        self.kind == PageKind::Huge
    }

    /// The page records in use by this segment's kind.
    pub(crate) fn page_records(&self) -> &[Page] {
        let count = match self.kind {
            PageKind::Small => MAX_PAGES,
            PageKind::Medium => SEGMENT_SIZE >> MEDIUM_PAGE_SHIFT,
            _ => 1,
        };
        &self.pages[..count]
    }

    /// The end of the block area of `page`, a page of this segment.
    pub(crate) fn page_area_end(&self, page: &Page) -> usize {
        let (area, len) = self.page_area(self.page_index(page));
        area as usize + len
    }

    /// Block area of page `index`: `(start, length)`.
    pub(super) fn page_area(&self, index: usize) -> (*mut u8, usize) {
        let (start, end) = page_bounds(self.page_shift, index);
        ((self.base() + start) as *mut u8, end - start)
    }

    /// Bytes of the block areas of the dirty (free, committed) pages.
    pub(super) fn dirty_bytes(&self) -> usize {
        let mut dirty = self.dirty_pages.get();
        let mut bytes = 0;
        while dirty != 0 {
            bytes += self.page_area(dirty.trailing_zeros() as usize).1;
            dirty &= dirty - 1;
        }
        bytes
    }

    pub(super) fn page_index(&self, page: &Page) -> usize {
        (page as *const Page as usize - self.pages.as_ptr() as usize) / core::mem::size_of::<Page>()
    }
}

#[inline(always)]
fn bit_in(bitmap: &[AtomicU64; BITMAP_WORDS], offset: usize) -> (&AtomicU64, u64) {
    let granule = offset >> size_class::GRANULE_SHIFT;
    (&bitmap[granule / 64], 1u64 << (granule % 64))
}

/// The segment that contains `page`.
#[inline(always)]
pub(crate) fn segment_of_page(page: &Page) -> &Segment {
    // SAFETY: page records live inside their segment's header, within the
    // first SEGMENT_SIZE bytes, so masking yields the header.
    unsafe { Segment::at(page as *const Page as usize & !SEGMENT_MASK) }
}

/// Maps memory that the segment map can describe. The kernel only hands
/// out addresses above 2^47 (or 2^48) when asked to; should it ever, the
/// mapping is refused like any other out-of-memory condition rather than
/// indexing past the map.
fn map_mappable(size: usize, align: usize) -> Option<NonNull<u8>> {
    let base = os::map_aligned(size, align)?;
    let start = base.as_ptr() as usize;
    if start.checked_add(size)? >> SEGMENT_SHIFT > map::MAP_ENTRIES {
        // SAFETY: the mapping was just made and never handed out.
        unsafe { os::unmap(base, size) };
        return None;
    }
    note_mapped(start, size);
    Some(base)
}

/// Widens the bounds that [`for_each_segment`] walks to cover a mapping.
fn note_mapped(start: usize, size: usize) {
    MAPPED_LOW.fetch_min(start, Ordering::Relaxed);
    MAPPED_HIGH.fetch_max(start + size, Ordering::Relaxed);
}

/// Bounds of every address range zonal ever mapped for segments and huge
/// blocks (the segment map only has entries between them).
static MAPPED_LOW: AtomicUsize = AtomicUsize::new(usize::MAX);
static MAPPED_HIGH: AtomicUsize = AtomicUsize::new(0);

/// Calls `f` on every published segment and huge mapping, in address order,
/// by walking the segment map between the bounds of zonal's mappings.
///
/// The caller keeps the segments it is given mapped while it uses them: a
/// collector with the world stopped and the pool lock held (the only other
/// ways a segment goes away are excluded; see `gc`).
pub(crate) fn for_each_segment(mut f: impl FnMut(&Segment)) {
    let low = MAPPED_LOW.load(Ordering::Relaxed);
    let high = MAPPED_HIGH.load(Ordering::Relaxed);
    if low >= high {
        return;
    }
    let first = low >> SEGMENT_SHIFT;
    let last = (high - 1) >> SEGMENT_SHIFT;
    for (chunk, entry) in map::map()[first..=last].iter().enumerate() {
        let chunk = first + chunk;
        let entry = entry.load(Ordering::Acquire);
        if entry == map::SEGMENT || entry == map::HUGE {
            // SAFETY: the map says a segment or huge mapping starts here,
            // and the caller keeps it mapped.
            f(unsafe { Segment::at(chunk << SEGMENT_SHIFT) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::ptr;

    #[test]
    fn pages_of_every_kind_lie_in_their_segment_and_are_aligned() {
        for kind in [PageKind::Small, PageKind::Medium, PageKind::Large] {
            let (page, area, len, _zeroed) = page_alloc(Zone::Pinned, kind).expect("segment");
            // SAFETY: page_alloc returns a page record in a live segment.
            let page = unsafe { page.as_ref() };
            let seg = segment_of_page(page);
            assert_eq!(seg.kind, kind);
            assert_eq!(seg.zone, Zone::Pinned);
            let (start, end) = (area as usize, area as usize + len);
            assert!(start >= seg.base() + HEADER_SIZE && end <= seg.base() + SEGMENT_SIZE);
            assert_eq!(start % PAGE_ALIGN_MIN, 0);
            assert!(ptr::eq(seg.page_of(start), page) && ptr::eq(seg.page_of(end - 1), page));
            assert_eq!(
                map::lookup(map::map(), start),
                Some(map::Found::Segment(seg.base()))
            );
            page_free(page);
        }
    }

    #[test]
    fn an_emptied_segment_leaves_the_map() {
        // Large pages have a segment each, so freeing the page empties it.
        let (page, area, _, _) = page_alloc(Zone::Gc, PageKind::Large).unwrap();
        // SAFETY: as above.
        page_free(unsafe { page.as_ref() });
        match map::lookup(map::map(), area as usize) {
            None => {}
            // Tests run in parallel: another one may have been handed the
            // (cached) segment since; it cannot be our large Gc segment.
            Some(map::Found::Segment(base)) => {
                // SAFETY: the map says a segment starts there.
                let seg = unsafe { Segment::at(base) };
                assert!(seg.kind != PageKind::Large || seg.zone != Zone::Gc);
            }
            Some(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn huge_blocks_are_aligned_found_from_inside_and_resized() {
        for align in [16, 1 << 16, 1 << 22, 1 << 24] {
            let page = huge_alloc(Zone::Manual, 5 << 20, align).expect("huge");
            // SAFETY: huge_alloc returns the page of a live huge block.
            let page = unsafe { page.as_ref() };
            let block = page.area.get() as usize;
            assert_eq!(block % align, 0);
            assert!(page.block_size.get() >= 5 << 20);
            let base = segment_of_page(page).base();
            assert_eq!(
                map::lookup(map::map(), block + (5 << 20) - 1),
                Some(map::Found::Huge(base))
            );
            // SAFETY: the block is ours.
            unsafe { (block as *mut u8).add(4 << 20).write(42) };
            // SAFETY: the block is ours; after resizing only `moved` is used.
            let moved = unsafe { huge_resize(page, 40 << 20) }.expect("mremap");
            // SAFETY: as above.
            let moved = unsafe { moved.as_ref() };
            let new_block = moved.area.get();
            assert_eq!(new_block as usize % align, 0);
            // SAFETY: the block moved with its contents.
            assert_eq!(unsafe { *new_block.add(4 << 20) }, 42);
            assert!(moved.block_size.get() >= 40 << 20);
            // SAFETY: the block is ours and no longer used.
            unsafe { huge_free(moved) };
            assert_eq!(map::lookup(map::map(), new_block as usize), None);
        }
    }
}
