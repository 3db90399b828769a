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
//! Segments are shared by all threads. Handing pages out and taking them
//! back happens under one global [`SpinLock`] (a slow path: once per page,
//! not per block). Pages that come back stay committed for
//! `ZONAL_PURGE_DELAY_MS` (so churn does not pay for `madvise`), then are
//! decommitted on a later slow path. A segment whose pages are all free is
//! withdrawn from the segment map at once, decommitted, and kept in a small
//! cache or unmapped: after a burst is freed, resident memory falls without a
//! background thread.

pub(crate) mod map;

use crate::os::{self, OS_PAGE};
use crate::page::Page;
use crate::size_class::{self, PageKind, PAGE_ALIGN_MIN};
use crate::stats;
use crate::sync::{AtomicU64, Ordering, SpinLock};
use crate::Zone;
use core::cell::{Cell, UnsafeCell};
use core::ptr::{self, NonNull};
pub(crate) use map::{SEGMENT_MASK, SEGMENT_SHIFT, SEGMENT_SIZE};

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

impl PageKind {
    const fn page_shift(self) -> u32 {
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
    // Protected by the segment lock:
    free_pages: Cell<u64>,
    /// Free pages that are still committed (not yet purged).
    dirty_pages: Cell<u64>,
    purge_deadline: Cell<u64>,
    used_pages: Cell<u32>,
    next: Cell<*mut Segment>,
    prev: Cell<*mut Segment>,
    pub(crate) pages: [Page; MAX_PAGES],
    pub(crate) alloc_bitmap: [AtomicU64; BITMAP_WORDS],
    pub(crate) mark_bitmap: [AtomicU64; BITMAP_WORDS],
}

const _: () = assert!(core::mem::size_of::<Segment>() <= HEADER_SIZE);
const _: () = assert!(HEADER_SIZE.is_multiple_of(PAGE_ALIGN_MIN));

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
    #[allow(dead_code)] // used by the collector
    pub(crate) fn mark_bit(&self, addr: usize) -> (&AtomicU64, u64) {
        bit_in(&self.mark_bitmap, addr & SEGMENT_MASK)
    }

    /// Block area of page `index`: `(start, length)`.
    fn page_area(&self, index: usize) -> (*mut u8, usize) {
        let base = self.base();
        let start = (index << self.page_shift).max(HEADER_SIZE);
        let end = ((index + 1) << self.page_shift).min(SEGMENT_SIZE);
        ((base + start) as *mut u8, end - start)
    }

    fn page_index(&self, page: &Page) -> usize {
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

// ---------------------------------------------------------------------------
// The global segment pool (slow path, under `POOL.lock`).

const KINDS: usize = 3; // small, medium, large
const ZONES: usize = 4;

struct Pool {
    lock: SpinLock,
    /// Per zone and kind: segments with at least one free page.
    partial: UnsafeCell<[[*mut Segment; KINDS]; ZONES]>,
    /// Empty segments, decommitted but for their first OS page, linked
    /// through `Segment::next`.
    cache: Cell<*mut Segment>,
    cached: Cell<usize>,
    /// Earliest purge deadline of any segment with dirty free pages.
    next_purge: Cell<u64>,
}

// SAFETY: every field but `lock` is only accessed with `lock` held.
unsafe impl Sync for Pool {}

static POOL: Pool = Pool {
    lock: SpinLock::new(),
    partial: UnsafeCell::new([[ptr::null_mut(); KINDS]; ZONES]),
    cache: Cell::new(ptr::null_mut()),
    cached: Cell::new(0),
    next_purge: Cell::new(u64::MAX),
};

/// The lock taken around every segment operation (also by the fork handlers).
pub(crate) fn pool_lock() -> &'static SpinLock {
    &POOL.lock
}

/// A page from a segment of `zone` and `kind`, marked in use, plus whether
/// its memory reads as zero. `None` when the OS refuses memory.
pub(crate) fn page_alloc(
    zone: Zone,
    kind: PageKind,
) -> Option<(NonNull<Page>, *mut u8, usize, bool)> {
    debug_assert!(kind != PageKind::Huge);
    POOL.lock.with(|| {
        // SAFETY: we hold the pool lock.
        let partial = unsafe { &mut (*POOL.partial.get())[zone as usize][kind as usize] };
        if partial.is_null() {
            let seg = segment_acquire(zone, kind)?;
            list_push(partial, seg);
        }
        // SAFETY: segments on the partial list are live and have a free page.
        let seg = unsafe { &**partial };
        let free = seg.free_pages.get();
        let index = free.trailing_zeros() as usize;
        let bit = 1u64 << index;
        seg.free_pages.set(free & !bit);
        seg.used_pages.set(seg.used_pages.get() + 1);
        if free & !bit == 0 {
            list_remove(partial, seg as *const Segment as *mut Segment);
        }
        let dirty = seg.dirty_pages.get() & bit != 0;
        let (area, len) = seg.page_area(index);
        if dirty {
            seg.dirty_pages.set(seg.dirty_pages.get() & !bit);
        } else {
            os::note_committed(len as isize);
            stats::account(zone, 0, len as isize);
        }
        let page = &seg.pages[index];
        page.in_use.set(true);
        maybe_purge();
        Some((NonNull::from(page), area, len, !dirty))
    })
}

/// Returns an unused page (no block handed out, none in flight) to its
/// segment.
pub(crate) fn page_free(page: &Page) {
    debug_assert!(page.is_unused());
    let seg = segment_of_page(page);
    POOL.lock.with(|| {
        let index = seg.page_index(page);
        let bit = 1u64 << index;
        page.in_use.set(false);
        page.owner.store(0, Ordering::Relaxed);
        let was_full = seg.free_pages.get() == 0;
        seg.free_pages.set(seg.free_pages.get() | bit);
        seg.dirty_pages.set(seg.dirty_pages.get() | bit);
        seg.used_pages.set(seg.used_pages.get() - 1);
        // SAFETY: we hold the pool lock.
        let partial = unsafe { &mut (*POOL.partial.get())[seg.zone as usize][seg.kind as usize] };
        let seg_ptr = seg as *const Segment as *mut Segment;
        if seg.used_pages.get() == 0 {
            if !was_full {
                list_remove(partial, seg_ptr);
            }
            segment_release(seg_ptr);
        } else {
            if was_full {
                list_push(partial, seg_ptr);
            }
            let delay = crate::options::get().purge_delay_ms;
            let deadline = os::now_ms() + delay;
            if seg.purge_deadline.get() == u64::MAX || delay == 0 {
                seg.purge_deadline.set(deadline);
            }
            POOL.next_purge.set(POOL.next_purge.get().min(deadline));
            maybe_purge();
        }
    })
}

/// Decommits free pages whose delay has passed. Pool lock held.
fn maybe_purge() {
    let now = os::now_ms();
    if now < POOL.next_purge.get() {
        return;
    }
    let mut next = u64::MAX;
    // SAFETY: we hold the pool lock.
    let lists = unsafe { &*POOL.partial.get() };
    for head in lists.iter().flatten() {
        let mut seg = *head;
        while !seg.is_null() {
            // SAFETY: segments on partial lists are live.
            let s = unsafe { &*seg };
            if s.dirty_pages.get() != 0 {
                if s.purge_deadline.get() <= now {
                    purge_dirty_pages(s);
                } else {
                    next = next.min(s.purge_deadline.get());
                }
            }
            seg = s.next.get();
        }
    }
    POOL.next_purge.set(next);
}

fn purge_dirty_pages(seg: &Segment) {
    let mut dirty = seg.dirty_pages.get();
    while dirty != 0 {
        let index = dirty.trailing_zeros() as usize;
        dirty &= dirty - 1;
        let (area, len) = seg.page_area(index);
        // SAFETY: the page is free (in `free_pages`), so nothing lives in its
        // block area, which is page aligned inside our mapping.
        if unsafe { os::decommit(area, len) } {
            os::note_committed(-(len as isize));
            stats::account(seg.zone, 0, -(len as isize));
            seg.dirty_pages
                .set(seg.dirty_pages.get() & !(1u64 << index));
        }
    }
    seg.purge_deadline.set(u64::MAX);
}

/// A new (or cached) segment for `zone` and `kind`, published in the map,
/// all pages free. Pool lock held.
fn segment_acquire(zone: Zone, kind: PageKind) -> Option<*mut Segment> {
    let base = take_cached().or_else(|| map_mappable(SEGMENT_SIZE, SEGMENT_SIZE))?;
    let seg = base.as_ptr().cast::<Segment>();
    let page_count = match kind {
        PageKind::Small => MAX_PAGES,
        PageKind::Medium => SEGMENT_SIZE >> MEDIUM_PAGE_SHIFT,
        _ => 1,
    };
    let first_page = (HEADER_SIZE >> kind.page_shift()).min(page_count - 1);
    let free_pages = (u64::MAX >> (64 - page_count)) & !((1u64 << first_page) - 1);
    // SAFETY: `seg` is the start of a mapping we own exclusively; its header
    // reads as zero beyond the fields written here (fresh, or decommitted
    // when cached), and all-zero bytes are valid for every header field.
    unsafe {
        ptr::addr_of_mut!((*seg).zone).write(zone);
        ptr::addr_of_mut!((*seg).kind).write(kind);
        ptr::addr_of_mut!((*seg).page_shift).write(kind.page_shift());
        ptr::addr_of_mut!((*seg).mapping_size).write(SEGMENT_SIZE);
        (*seg).free_pages.set(free_pages);
        (*seg).dirty_pages.set(0);
        (*seg).purge_deadline.set(u64::MAX);
        (*seg).used_pages.set(0);
        (*seg).next.set(ptr::null_mut());
        (*seg).prev.set(ptr::null_mut());
    }
    // Only the header's first OS page counts as committed until pages are
    // handed out (see `page_alloc`).
    os::note_committed(-((SEGMENT_SIZE - OS_PAGE) as isize));
    stats::account(zone, SEGMENT_SIZE as isize, OS_PAGE as isize);
    map::register(map::map(), seg as usize, 1, false);
    Some(seg)
}

/// Maps memory that the segment map can describe. The kernel only hands
/// out addresses above 2^47 (or 2^48) when asked to; should it ever, the
/// mapping is refused like any other out-of-memory condition rather than
/// indexing past the map.
fn map_mappable(size: usize, align: usize) -> Option<NonNull<u8>> {
    let base = os::map_aligned(size, align)?;
    if (base.as_ptr() as usize).checked_add(size)? >> SEGMENT_SHIFT > map::MAP_ENTRIES {
        // SAFETY: the mapping was just made and never handed out.
        unsafe { os::unmap(base, size) };
        return None;
    }
    Some(base)
}

/// Withdraws an empty segment: out of the map, then cached or unmapped.
/// Pool lock held.
fn segment_release(seg: *mut Segment) {
    map::unregister(map::map(), seg as usize, 1);
    // SAFETY: the segment is still mapped and its header is valid.
    let s = unsafe { &*seg };
    let mut dirty = s.dirty_pages.get();
    let mut dirty_bytes = 0;
    while dirty != 0 {
        dirty_bytes += s.page_area(dirty.trailing_zeros() as usize).1;
        dirty &= dirty - 1;
    }
    os::note_committed(-(dirty_bytes as isize));
    stats::account(
        s.zone,
        -(SEGMENT_SIZE as isize),
        -((OS_PAGE + dirty_bytes) as isize),
    );
    // SAFETY: the segment is empty and unpublished; nobody else refers to it.
    unsafe { cache_or_unmap(seg) };
}

/// # Safety
/// `seg` must be an unpublished, empty, `SEGMENT_SIZE` mapping of ours
/// whose committed accounting is "first OS page + pages in use (none)".
unsafe fn cache_or_unmap(seg: *mut Segment) {
    // Decommit everything but the first OS page, whose link keeps it in the
    // cache; the rest of the header reads as zero when reused.
    // SAFETY: the range lies inside our mapping and holds nothing live.
    unsafe { os::decommit((seg as *mut u8).add(OS_PAGE), SEGMENT_SIZE - OS_PAGE) };
    if POOL.cached.get() < crate::options::get().segment_cache {
        // SAFETY: the first OS page of the header is still committed.
        unsafe {
            ptr::write_bytes(seg as *mut u8, 0, OS_PAGE);
            (*seg).next.set(POOL.cache.get());
        }
        POOL.cache.set(seg);
        POOL.cached.set(POOL.cached.get() + 1);
    } else {
        os::note_committed((SEGMENT_SIZE - OS_PAGE) as isize);
        // SAFETY: by the contract the mapping is ours and unused.
        unsafe { os::unmap(NonNull::new_unchecked(seg.cast()), SEGMENT_SIZE) };
    }
}

/// A cached segment, with committed accounting restored to a fresh
/// segment's. Pool lock held.
fn take_cached() -> Option<NonNull<u8>> {
    let seg = POOL.cache.get();
    if seg.is_null() {
        return None;
    }
    // SAFETY: cached segments are ours, and their first OS page (holding
    // `next`) is committed.
    POOL.cache.set(unsafe { (*seg).next.get() });
    // SAFETY: as above.
    unsafe { ptr::write_bytes(seg as *mut u8, 0, OS_PAGE) };
    POOL.cached.set(POOL.cached.get() - 1);
    os::note_committed((SEGMENT_SIZE - OS_PAGE) as isize);
    NonNull::new(seg.cast())
}

fn list_push(head: &mut *mut Segment, seg: *mut Segment) {
    // SAFETY: `seg` and the current head are live segments; pool lock held.
    unsafe {
        (*seg).prev.set(ptr::null_mut());
        (*seg).next.set(*head);
        if !head.is_null() {
            (**head).prev.set(seg);
        }
    }
    *head = seg;
}

fn list_remove(head: &mut *mut Segment, seg: *mut Segment) {
    // SAFETY: `seg` is on the list headed by `head`; pool lock held.
    unsafe {
        let (prev, next) = ((*seg).prev.get(), (*seg).next.get());
        if prev.is_null() {
            *head = next;
        } else {
            (*prev).next.set(next);
        }
        if !next.is_null() {
            (*next).prev.set(prev);
        }
        (*seg).next.set(ptr::null_mut());
        (*seg).prev.set(ptr::null_mut());
    }
}

// ---------------------------------------------------------------------------
// Huge allocations: one mapping each, one page, one block.

/// Offset of a huge block in its mapping for alignment `align`.
fn huge_offset(align: usize) -> usize {
    HEADER_SIZE.max(align)
}

fn huge_mapping_size(offset: usize, size: usize) -> Option<usize> {
    let total = offset.checked_add(size)?;
    total.checked_add(SEGMENT_MASK).map(|t| t & !SEGMENT_MASK)
}

/// Maps a huge block of at least `size` bytes aligned to `align`. Returns
/// its page (the block starts at `page.area`); the block reads as zero.
pub(crate) fn huge_alloc(zone: Zone, size: usize, align: usize) -> Option<NonNull<Page>> {
    let offset = huge_offset(align);
    let mapping = huge_mapping_size(offset, size)?;
    let base = if mapping == SEGMENT_SIZE && align <= SEGMENT_SIZE {
        POOL.lock.with(take_cached)
    } else {
        None
    };
    let base = match base {
        Some(b) => b,
        None => map_mappable(mapping, align.max(SEGMENT_SIZE))?,
    };
    let seg = base.as_ptr().cast::<Segment>();
    // SAFETY: `seg` starts a mapping we own exclusively, zero beyond what we
    // write here; the block lies inside it.
    unsafe {
        ptr::addr_of_mut!((*seg).zone).write(zone);
        ptr::addr_of_mut!((*seg).kind).write(PageKind::Huge);
        ptr::addr_of_mut!((*seg).page_shift).write(HUGE_PAGE_SHIFT);
        ptr::addr_of_mut!((*seg).mapping_size).write(mapping);
        let page = &(*seg).pages[0];
        page.block_size.set(mapping - offset);
        page.reserved.set(1);
        page.capacity.set(1);
        page.used.set(1);
        page.in_use.set(true);
        page.free_is_zero.set(true);
        page.area.set(base.as_ptr().add(offset));
    }
    stats::account(zone, mapping as isize, mapping as isize);
    map::register(map::map(), seg as usize, mapping >> SEGMENT_SHIFT, true);
    // SAFETY: the page record lives in the header initialised above.
    Some(unsafe { NonNull::from(&(*seg).pages[0]) })
}

/// Releases a huge block's mapping.
///
/// # Safety
/// `page` must be the page of a live huge block that nobody uses any more.
pub(crate) unsafe fn huge_free(page: &Page) {
    let seg = segment_of_page(page) as *const Segment as *mut Segment;
    // SAFETY: the header stays mapped until the unmap below.
    let (mapping, zone) = unsafe { ((*seg).mapping_size, (*seg).zone) };
    page.used.set(0);
    stats::account(zone, -(mapping as isize), -(mapping as isize));
    map::unregister(map::map(), seg as usize, mapping >> SEGMENT_SHIFT);
    if mapping == SEGMENT_SIZE {
        // Count it like an empty regular segment: first OS page committed.
        os::note_committed(-((SEGMENT_SIZE - OS_PAGE) as isize));
        // SAFETY: the mapping is ours, unpublished and holds nothing live.
        POOL.lock.with(|| unsafe { cache_or_unmap(seg) });
    } else {
        // SAFETY: as above.
        unsafe { os::unmap(NonNull::new_unchecked(seg.cast()), mapping) };
    }
}

/// Resizes a huge block to hold at least `new_size` bytes, in place or by
/// moving its pages (`mremap`, no copy). Returns the (possibly moved) page,
/// or `None` with the block untouched.
///
/// # Safety
/// `page` must be the page of a live huge block owned by the caller.
pub(crate) unsafe fn huge_resize(page: &Page, new_size: usize) -> Option<NonNull<Page>> {
    let seg = segment_of_page(page);
    let base = seg.base();
    let offset = page.area.get() as usize - base;
    let old_mapping = seg.mapping_size;
    let new_mapping = huge_mapping_size(offset, new_size)?;
    if new_mapping == old_mapping {
        return Some(NonNull::from(page));
    }
    let align = (offset.max(SEGMENT_SIZE)).next_power_of_two();
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
    let delta = new_mapping as isize - old_mapping as isize;
    stats::account(zone, delta, delta);
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

/// Forgets every lock holder after `fork` (child side, one thread).
pub(crate) fn reset_after_fork() {
    POOL.lock.reset_after_fork();
}

#[cfg(test)]
mod tests {
    use super::*;

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
