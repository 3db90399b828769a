//! The segment pool: hands pages out to heaps and takes them back, and
//! decides when free memory goes back to the OS.
//!
//! All of it runs under one global [`SpinLock`]; it is a slow path (once per
//! page, not per block).
//!
//! Free memory that is still committed is *retained*: the pages of partly
//! used segments that came back (`dirty_pages`), and empty segments kept in
//! the cache. Retaining spares churn the cost of `madvise` and of faulting
//! the pages back in, but nothing can wait for a background thread to give
//! it back later, so retention is bounded twice:
//!
//! * by size: at most the *retention budget* of retained memory; beyond
//!   that the oldest retained memory (cached huge mappings and segments
//!   first) is decommitted at once. This bounds resident memory after a
//!   burst is freed, however idle the program is afterwards;
//! * by time: retained memory older than `ZONAL_PURGE_DELAY_MS` is
//!   decommitted on the next pool operation.
//!
//! The budget is `ZONAL_RETAIN_MIB` plus an *extra* learnt from reuse
//! ([`Budget`]): memory the budget made us decommit that the program then
//! asks for again within the purge delay (we commit fresh memory while
//! such decommits are recent) was decommitted in vain, and each such byte
//! raises the extra, up to `ZONAL_RETAIN_MAX_MIB`. A program that frees
//! and reallocates a working set larger than the base budget every few
//! milliseconds thus stops faulting it back in after one round, while a
//! one-off burst (freed and not reallocated) leaves the budget at its base.
//! The extra halves for every purge delay that passes without such a
//! regret.
//!
//! Empty segments leave the segment map at once (a stale pointer into one
//! is recognised as foreign) and wait in the cache, newest first, up to
//! `ZONAL_SEGMENT_CACHE` of them or as many as the retention budget covers,
//! whichever is more; the oldest beyond that is unmapped. A segment is
//! taken back from the cache for its own page kind first; reused for
//! another kind, it keeps the pages whose whole area was committed
//! ([`relayout_dirty`]); for a huge block, all of them.
//!
//! Invariant: `Pool::retained` is the sum of `Segment::dirty_bytes()` over
//! partial and cached segments (full segments have no free page), plus the
//! mapping sizes of the cached huge mappings.

use super::{map, map_mappable, segment_of_page, Segment};
use crate::os::{self, OS_PAGE};
use crate::page::Page;
use crate::size_class::PageKind;
use crate::stats;
use crate::sync::{Ordering, SpinLock};
use crate::Zone;
use core::cell::{Cell, UnsafeCell};
use core::ptr::{self, NonNull};
use map::SEGMENT_SIZE;

const KINDS: usize = 3; // small, medium, large
/// Freed huge mappings kept for reuse.
const HUGE_CACHE: usize = 8;
const ZONES: usize = 4;

struct Pool {
    lock: SpinLock,
    /// Per zone and kind: segments with at least one free page.
    partial: UnsafeCell<[[*mut Segment; KINDS]; ZONES]>,
    /// Empty segments, newest first, linked through `next`/`prev`.
    cache_newest: Cell<*mut Segment>,
    cache_oldest: Cell<*mut Segment>,
    cached: Cell<usize>,
    /// Mappings of freed huge blocks kept committed for reuse, oldest first
    /// (null slots are empty).
    huge_cache: [Cell<*mut Segment>; HUGE_CACHE],
    /// Bytes of free memory still committed (see the module docs).
    retained: Cell<usize>,
    /// Earliest purge deadline of any segment with dirty pages.
    next_purge: Cell<u64>,
    budget: Budget,
}

/// The retention budget and what it learns from reuse (see the module
/// docs). All times are `os::now_ms`.
struct Budget {
    /// Bytes retained beyond `ZONAL_RETAIN_MIB`.
    extra: Cell<usize>,
    /// Bytes the budget recently decommitted that fresh commits have not
    /// yet matched.
    unmatched_purges: Cell<usize>,
    /// When the budget last decommitted memory.
    last_purge: Cell<u64>,
    /// When `extra` last grew or was last halved.
    last_change: Cell<u64>,
}

// SAFETY: every field but `lock` is only accessed with `lock` held.
unsafe impl Sync for Pool {}

static POOL: Pool = Pool {
    lock: SpinLock::new(),
    partial: UnsafeCell::new([[ptr::null_mut(); KINDS]; ZONES]),
    cache_newest: Cell::new(ptr::null_mut()),
    cache_oldest: Cell::new(ptr::null_mut()),
    cached: Cell::new(0),
    huge_cache: [const { Cell::new(ptr::null_mut()) }; HUGE_CACHE],
    retained: Cell::new(0),
    next_purge: Cell::new(u64::MAX),
    budget: Budget {
        extra: Cell::new(0),
        unmatched_purges: Cell::new(0),
        last_purge: Cell::new(0),
        last_change: Cell::new(0),
    },
};

impl Budget {
    /// Bytes of free memory that may stay committed now.
    fn bytes(&self, now: u64) -> usize {
        let options = crate::options::get();
        let extra = self.extra.get();
        if extra != 0 {
            let periods =
                now.saturating_sub(self.last_change.get()) / options.purge_delay_ms.max(1);
            if periods != 0 {
                self.extra
                    .set(extra.checked_shr(periods.min(63) as u32).unwrap_or(0));
                self.last_change.set(now);
            }
        }
        options.retain_bytes + self.extra.get()
    }

    /// Drops what the budget learnt: the program said it wants its free
    /// memory back (`release_retained`).
    fn forget(&self, now: u64) {
        self.extra.set(0);
        self.unmatched_purges.set(0);
        self.last_change.set(now);
    }

    /// The budget decommitted `len` bytes of retained memory.
    fn note_purge(&self, len: usize, now: u64) {
        let cap = crate::options::get().retain_max_bytes;
        self.unmatched_purges
            .set(self.unmatched_purges.get().saturating_add(len).min(cap));
        self.last_purge.set(now);
    }

    /// `len` bytes of fresh memory are being committed: if the budget
    /// decommitted memory within the purge delay, that was in vain, and
    /// the budget grows by what it now has to commit again.
    fn note_fresh_commit(&self, len: usize, now: u64) {
        let unmatched = self.unmatched_purges.get();
        if unmatched == 0 {
            return;
        }
        let options = crate::options::get();
        if now.saturating_sub(self.last_purge.get()) > options.purge_delay_ms {
            self.unmatched_purges.set(0);
            return;
        }
        let grow = len.min(unmatched);
        self.unmatched_purges.set(unmatched - grow);
        let ceiling = options
            .retain_max_bytes
            .saturating_sub(options.retain_bytes);
        self.extra.set((self.extra.get() + grow).min(ceiling));
        self.last_change.set(now);
    }
}

/// Notes `len` bytes of fresh memory committed for a huge block (taken
/// outside the pool lock), for the retention budget.
pub(super) fn note_fresh_huge_commit(len: usize) {
    POOL.lock
        .with(|| POOL.budget.note_fresh_commit(len, os::now_ms()));
}

/// The lock taken around every pool operation (also by the fork handlers).
pub(crate) fn pool_lock() -> &'static SpinLock {
    &POOL.lock
}

/// Forgets the lock holder after `fork` (child side, one thread).
pub(crate) fn reset_after_fork() {
    POOL.lock.reset_after_fork();
}

fn partial_list(zone: Zone, kind: PageKind) -> &'static mut *mut Segment {
    // SAFETY: callers hold the pool lock, which serialises all access.
    unsafe { &mut (*POOL.partial.get())[zone as usize][kind as usize] }
}

/// A page from a segment of `zone` and `kind`, marked in use: the page
/// record, its block area and length, and whether that area reads as zero.
/// `None` when the OS refuses memory.
pub(crate) fn page_alloc(
    zone: Zone,
    kind: PageKind,
) -> Option<(NonNull<Page>, *mut u8, usize, bool)> {
    debug_assert!(kind != PageKind::Huge);
    POOL.lock.with(|| {
        let partial = partial_list(zone, kind);
        if partial.is_null() {
            let seg = segment_acquire(zone, kind)?;
            list_push(partial, seg);
        }
        let seg = committed_first(*partial);
        let free = seg.free_pages.get();
        // Committed pages first: they need no page faults.
        let dirty_free = free & seg.dirty_pages.get();
        let index = if dirty_free != 0 { dirty_free } else { free }.trailing_zeros() as usize;
        let bit = 1u64 << index;
        seg.free_pages.set(free & !bit);
        seg.used_pages.set(seg.used_pages.get() + 1);
        if free & !bit == 0 {
            list_remove(partial, seg as *const Segment as *mut Segment);
        }
        let (area, len) = seg.page_area(index);
        let dirty = seg.dirty_pages.get() & bit != 0;
        if dirty {
            seg.dirty_pages.set(seg.dirty_pages.get() & !bit);
            POOL.retained.set(POOL.retained.get() - len);
        } else {
            os::note_committed(len as isize);
            stats::account(zone, 0, len as isize);
            POOL.budget.note_fresh_commit(len, os::now_ms());
        }
        let page = &seg.pages[index];
        page.in_use.set(true);
        purge_expired();
        Some((NonNull::from(page), area, len, !dirty))
    })
}

/// The first of the first few segments of a partial list that has a free
/// page still committed, or else the list's head: committed pages need no
/// page faults. Pool lock held; `head` is not null.
fn committed_first<'a>(head: *mut Segment) -> &'a Segment {
    const LOOK_AT: usize = 16;
    let mut seg = head;
    for _ in 0..LOOK_AT {
        let Some(s) = NonNull::new(seg) else { break };
        // SAFETY: segments on a partial list are live.
        let s = unsafe { s.as_ref() };
        if s.free_pages.get() & s.dirty_pages.get() != 0 {
            return s;
        }
        seg = s.next.get();
    }
    unsafe_ref(head)
}

/// Returns an unused page (no block handed out, none in flight) to its
/// segment; an emptied segment goes to the cache.
pub(crate) fn page_free(page: &Page) {
    debug_assert!(page.is_unused());
    let seg = segment_of_page(page);
    let seg_ptr = seg as *const Segment as *mut Segment;
    POOL.lock.with(|| {
        let index = seg.page_index(page);
        let bit = 1u64 << index;
        page.in_use.set(false);
        page.owner.store(0, Ordering::Relaxed);
        let was_full = seg.free_pages.get() == 0;
        seg.free_pages.set(seg.free_pages.get() | bit);
        seg.dirty_pages.set(seg.dirty_pages.get() | bit);
        seg.used_pages.set(seg.used_pages.get() - 1);
        POOL.retained
            .set(POOL.retained.get() + seg.page_area(index).1);
        set_deadline(seg);
        let partial = partial_list(seg.zone, seg.kind);
        if seg.used_pages.get() == 0 {
            if !was_full {
                list_remove(partial, seg_ptr);
            }
            segment_release(seg_ptr);
        } else {
            // The segment with the page freed last goes first: `page_alloc`
            // then hands out committed pages before fresh ones.
            if !was_full {
                list_remove(partial, seg_ptr);
            }
            list_push(partial, seg_ptr);
        }
        enforce_retention();
        purge_expired();
    })
}

fn set_deadline(seg: &Segment) {
    let delay = crate::options::get().purge_delay_ms;
    let deadline = os::now_ms().saturating_add(delay);
    if seg.purge_deadline.get() == u64::MAX || delay == 0 {
        seg.purge_deadline.set(deadline);
    }
    POOL.next_purge.set(POOL.next_purge.get().min(deadline));
}

/// Decommits the dirty pages of `seg`, each run of adjacent dirty pages in
/// one call. Besides saving system calls, a run that covers whole 2 MiB
/// ranges of a segment backed by transparent huge pages frees those huge
/// pages whole: decommitting them 64 KiB at a time would split each into
/// base pages first, and the memory would come back as 512 page faults and
/// stay mapped by base pages (many more TLB misses) after that.
fn purge(seg: &Segment) {
    let mut dirty = seg.dirty_pages.get();
    while dirty != 0 {
        let first = dirty.trailing_zeros() as usize;
        let run = (dirty >> first).trailing_ones() as usize;
        let run_mask = (u64::MAX >> (64 - run)) << first;
        dirty &= !run_mask;
        let (start, _) = seg.page_area(first);
        let (last, last_len) = seg.page_area(first + run - 1);
        // Page areas of adjacent indices are adjacent (see `page_bounds`).
        let len = last as usize + last_len - start as usize;
        // SAFETY: the pages are free, so nothing lives in their block areas,
        // which are adjacent and page aligned inside our mapping.
        if unsafe { os::decommit(start, len) } {
            os::note_committed(-(len as isize));
            if let Some(zone) = published_zone(seg) {
                stats::account(zone, 0, -(len as isize));
            }
            seg.dirty_pages.set(seg.dirty_pages.get() & !run_mask);
            POOL.retained.set(POOL.retained.get() - len);
        }
    }
    seg.purge_deadline.set(u64::MAX);
}

/// The zone a segment's memory counts for: its own while it is published,
/// none while it is cached.
fn published_zone(seg: &Segment) -> Option<Zone> {
    (map::entry(map::map(), seg.base()) == map::SEGMENT).then_some(seg.zone)
}

/// Calls `f` on every partial and cached segment.
fn for_each_retaining(mut f: impl FnMut(&Segment)) {
    // SAFETY: pool lock held.
    let lists = unsafe { &*POOL.partial.get() };
    for head in lists
        .iter()
        .flatten()
        .copied()
        .chain([POOL.cache_newest.get()])
    {
        let mut seg = head;
        while let Some(s) = NonNull::new(seg) {
            // SAFETY: listed segments are live.
            let s = unsafe { s.as_ref() };
            seg = s.next.get();
            f(s);
        }
    }
}

/// Decommits all retained memory (the free pages of partial and cached
/// segments, and the cached huge mappings, which are unmapped) and forgets
/// what the retention budget learnt, so that it starts again from
/// `ZONAL_RETAIN_MIB`. See `zonal::release_free_memory`.
pub(crate) fn release_retained() {
    POOL.lock.with(|| {
        unmap_cached_huge_until(0);
        for_each_retaining(purge);
        POOL.next_purge.set(u64::MAX);
        POOL.budget.forget(os::now_ms());
    })
}

/// Decommits retained memory whose delay has passed.
fn purge_expired() {
    let now = os::now_ms();
    if now < POOL.next_purge.get() {
        return;
    }
    let mut next = u64::MAX;
    for_each_retaining(|seg| {
        if seg.dirty_pages.get() != 0 {
            if seg.purge_deadline.get() <= now {
                purge(seg);
            } else {
                next = next.min(seg.purge_deadline.get());
            }
        }
    });
    POOL.next_purge.set(next);
}

/// Decommits retained memory, cached huge mappings first, then the oldest
/// cached segments, until at most the budget is retained.
fn enforce_retention() {
    let now = os::now_ms();
    let budget = POOL.budget.bytes(now);
    let before = POOL.retained.get();
    if before <= budget {
        return;
    }
    unmap_cached_huge_until(budget);
    let mut seg = POOL.cache_oldest.get();
    while POOL.retained.get() > budget {
        let Some(s) = NonNull::new(seg) else { break };
        // SAFETY: cached segments are live.
        let s = unsafe { s.as_ref() };
        purge(s);
        seg = s.prev.get();
    }
    if POOL.retained.get() > budget {
        for_each_retaining(|seg| {
            if POOL.retained.get() > budget {
                purge(seg);
            }
        });
    }
    POOL.budget
        .note_purge(before.saturating_sub(POOL.retained.get()), now);
}

/// Unmaps cached huge mappings, oldest first, until at most `limit` bytes
/// are retained or none is left. Pool lock held.
fn unmap_cached_huge_until(limit: usize) {
    for slot in &POOL.huge_cache {
        if POOL.retained.get() <= limit {
            break;
        }
        if let Some(seg) = NonNull::new(slot.replace(ptr::null_mut())) {
            unmap_cached_huge(seg.as_ptr());
        }
    }
}

/// A segment for `zone` and `kind` with all pages free, published in the
/// map: from the cache (its retained pages stay committed when the kind
/// matches) or fresh from the OS.
fn segment_acquire(zone: Zone, kind: PageKind) -> Option<*mut Segment> {
    let (seg, fresh) = match take_cached(kind) {
        Some(seg) => (seg, false),
        None => {
            let base = map_mappable(SEGMENT_SIZE, SEGMENT_SIZE)?;
            // Only the header's first OS page counts as committed until
            // pages are handed out (see `page_alloc`).
            os::note_committed(-((SEGMENT_SIZE - OS_PAGE) as isize));
            (base.as_ptr().cast::<Segment>(), true)
        }
    };
    advise_huge_pages(seg, fresh);
    init_header(seg, zone, kind);
    stats::account(
        zone,
        SEGMENT_SIZE as isize,
        (OS_PAGE + unsafe_ref(seg).dirty_bytes()) as isize,
    );
    map::register(map::map(), seg as usize, 1, false);
    Some(seg)
}

fn unsafe_ref<'a>(seg: *mut Segment) -> &'a Segment {
    // SAFETY: callers pass segments they hold (pool lock, not yet published
    // or just withdrawn), whose headers are mapped.
    unsafe { &*seg }
}

/// Below this much committed memory, segments get no transparent huge
/// pages (see [`advise_huge_pages`]).
const HUGE_PAGES_FROM: usize = 32 << 20;

/// Whether a segment is backed by transparent huge pages (2 MiB: one page
/// fault instead of 512, and far fewer TLB misses), decided on every
/// acquisition because a cached segment may have had other advice before.
/// Segments get them once zonal holds at least [`HUGE_PAGES_FROM`]
/// committed. Before that, a few live blocks pinning whole 2 MiB pages (a
/// thread's one 80 KiB block makes its large page's first 2 MiB resident)
/// would be a large share of a small program's memory; after it, a small
/// one, and the page faults and TLB misses of a big heap cost more.
///
/// A fresh mapping gets its advice before anything touches it: the first
/// touch of a 2 MiB range builds a base-page table for it, and faults
/// there stay 4 KiB even after `MADV_HUGEPAGE` (writing the header first
/// made page faults 2.5 to 4 times as many in mixed, vec-growth and
/// larson-8). A cached segment's header records the advice it last got, so
/// the system call (which takes the memory-map lock for writing) is made
/// only when the advice changes (mixed: 1,677 calls to 31).
///
/// A huge page also makes the slack after a large page's last block
/// resident; when another thread frees the blocks of an idle owner, the
/// last block's release gives that slack back too (see
/// `free::release_big_block_memory`).
fn advise_huge_pages(seg: *mut Segment, fresh: bool) {
    if crate::options::get().huge_os_pages {
        let huge = os::committed_bytes() >= HUGE_PAGES_FROM;
        let advice = if huge {
            super::HUGE_ADVICE_ON
        } else {
            super::HUGE_ADVICE_OFF
        };
        let s = unsafe_ref(seg);
        // `fresh` first: reading a fresh header would be its first touch.
        if fresh || s.huge_advice.get() != advice {
            // SAFETY: the segment is our mapping of SEGMENT_SIZE bytes.
            unsafe { os::advise_huge_pages(seg.cast(), SEGMENT_SIZE, huge) };
        }
        s.huge_advice.set(advice);
    }
}

/// Writes the header fields of a segment about to be published. Its page
/// records are unused (fresh memory reads as zero; a reused segment's pages
/// all came back) and its bitmaps are clear.
fn init_header(seg: *mut Segment, zone: Zone, kind: PageKind) {
    let page_count = kind.page_count();
    let first_page = kind.first_page();
    let free_pages = (u64::MAX >> (64 - page_count)) & !((1u64 << first_page) - 1);
    // SAFETY: the segment is ours and unpublished (see `unsafe_ref`).
    unsafe {
        ptr::addr_of_mut!((*seg).zone).write(zone);
        ptr::addr_of_mut!((*seg).kind).write(kind);
        ptr::addr_of_mut!((*seg).page_shift).write(kind.page_shift());
        ptr::addr_of_mut!((*seg).mapping_size).write(SEGMENT_SIZE);
        (*seg).free_pages.set(free_pages);
        (*seg).used_pages.set(0);
        if (*seg).dirty_pages.get() == 0 {
            (*seg).purge_deadline.set(u64::MAX);
        }
        (*seg).next.set(ptr::null_mut());
        (*seg).prev.set(ptr::null_mut());
    }
}

/// Withdraws an emptied segment from the map and caches it, retained pages
/// and all. Pool lock held.
fn segment_release(seg: *mut Segment) {
    map::unregister(map::map(), seg as usize, 1);
    let s = unsafe_ref(seg);
    stats::account(
        s.zone,
        -(SEGMENT_SIZE as isize),
        -((OS_PAGE + s.dirty_bytes()) as isize),
    );
    cache_push(seg);
}

/// Puts an empty, unpublished segment into the cache, unmapping the oldest
/// cached segment if the cache is full. Pool lock held.
pub(super) fn cache_push(seg: *mut Segment) {
    let s = unsafe_ref(seg);
    s.prev.set(ptr::null_mut());
    s.next.set(POOL.cache_newest.get());
    match NonNull::new(POOL.cache_newest.get()) {
        // SAFETY: cached segments are live.
        Some(newest) => unsafe { newest.as_ref() }.prev.set(seg),
        None => POOL.cache_oldest.set(seg),
    }
    POOL.cache_newest.set(seg);
    POOL.cached.set(POOL.cached.get() + 1);
    let now = os::now_ms();
    let limit = crate::options::get()
        .segment_cache
        .max(POOL.budget.bytes(now) / SEGMENT_SIZE);
    while POOL.cached.get() > limit {
        let oldest = POOL.cache_oldest.get();
        cache_remove(oldest);
        let before = POOL.retained.get();
        purge(unsafe_ref(oldest));
        POOL.budget.note_purge(before - POOL.retained.get(), now);
        os::note_committed((SEGMENT_SIZE - OS_PAGE) as isize);
        // SAFETY: the segment is ours, empty and unpublished; its retained
        // memory was just accounted for by `purge`.
        unsafe { os::unmap(NonNull::new_unchecked(oldest.cast()), SEGMENT_SIZE) };
    }
}

fn cache_remove(seg: *mut Segment) {
    let s = unsafe_ref(seg);
    let (prev, next) = (s.prev.get(), s.next.get());
    match NonNull::new(prev) {
        // SAFETY: cached segments are live.
        Some(p) => unsafe { p.as_ref() }.next.set(next),
        None => POOL.cache_newest.set(next),
    }
    match NonNull::new(next) {
        // SAFETY: as above.
        Some(n) => unsafe { n.as_ref() }.prev.set(prev),
        None => POOL.cache_oldest.set(prev),
    }
    s.next.set(ptr::null_mut());
    s.prev.set(ptr::null_mut());
    POOL.cached.set(POOL.cached.get() - 1);
}

/// Takes the newest cached segment of page kind `kind`, or else the newest
/// cached segment. Its retained pages stay committed: as they are when it
/// is reused for the same page kind, translated to the new page layout
/// otherwise (see [`relayout_dirty`]). Pool lock held.
fn take_cached(kind: PageKind) -> Option<*mut Segment> {
    let newest = NonNull::new(POOL.cache_newest.get())?.as_ptr();
    let mut seg = newest;
    while !seg.is_null() && unsafe_ref(seg).kind != kind {
        seg = unsafe_ref(seg).next.get();
    }
    let seg = if seg.is_null() { newest } else { seg };
    cache_remove(seg);
    let s = unsafe_ref(seg);
    if s.kind != kind {
        relayout_dirty(s, kind);
    }
    Some(seg)
}

/// Bytes per bit of [`dirty_chunks`]: the small page size, of which the
/// pages of every kind are whole multiples.
const CHUNK_SHIFT: u32 = PageKind::Small.page_shift();

/// The 64 KiB chunks of an empty segment's block areas that are dirty
/// (committed), one bit each.
fn dirty_chunks(seg: &Segment) -> u64 {
    let mut chunks = 0u64;
    let mut dirty = seg.dirty_pages.get();
    while dirty != 0 {
        let (start, end) = super::page_bounds(seg.page_shift, dirty.trailing_zeros() as usize);
        dirty &= dirty - 1;
        chunks |= chunk_mask(start, end);
    }
    chunks
}

/// The chunk bits of `start..end` (offsets in a segment, chunk aligned).
fn chunk_mask(start: usize, end: usize) -> u64 {
    let (first, last) = (start >> CHUNK_SHIFT, end >> CHUNK_SHIFT);
    (u64::MAX >> (64 - (last - first))) << first
}

/// Rewrites the dirty mask of an empty cached segment for its reuse with
/// pages of `kind`: a new page whose whole area was committed stays
/// dirty (no page faults when it is handed out); the committed parts of a
/// page that was only partly committed are decommitted, so that every
/// page not marked dirty reads as zero (which `alloc_zeroed` relies on).
/// Pool lock held; the caller then writes the header for `kind`.
fn relayout_dirty(seg: &Segment, kind: PageKind) {
    let chunks = dirty_chunks(seg);
    let old_bytes = seg.dirty_bytes();
    let mut dirty = 0u64;
    let mut kept = 0;
    for index in kind.first_page()..kind.page_count() {
        let (start, end) = super::page_bounds(kind.page_shift(), index);
        let mask = chunk_mask(start, end);
        if chunks & mask == mask {
            dirty |= 1 << index;
            kept += end - start;
            continue;
        }
        let mut partial = chunks & mask;
        while partial != 0 {
            let chunk = partial.trailing_zeros() as usize;
            partial &= partial - 1;
            let at = (seg.base() + (chunk << CHUNK_SHIFT)) as *mut u8;
            // SAFETY: the chunk lies in the block areas of an empty segment
            // that we hold (unpublished): nothing lives in it. Should the
            // kernel refuse to drop it, clearing it keeps the page's
            // promise to read as zero (the bytes stay committed unseen).
            unsafe {
                if !os::decommit(at, 1 << CHUNK_SHIFT) {
                    ptr::write_bytes(at, 0, 1 << CHUNK_SHIFT);
                }
            }
        }
    }
    os::note_committed(kept as isize - old_bytes as isize);
    POOL.retained.set(POOL.retained.get() - old_bytes + kept);
    seg.dirty_pages.set(dirty);
    if dirty == 0 {
        seg.purge_deadline.set(u64::MAX);
    }
}

/// Takes the newest cached segment for a huge block of one segment, with
/// the pool lock. Its committed pages are kept (the block then does not
/// read as zero): returns the segment and how many bytes of its block
/// areas were committed, which stop counting as retained.
pub(super) fn take_cached_for_huge() -> Option<(*mut Segment, usize)> {
    POOL.lock.with(|| {
        let seg = NonNull::new(POOL.cache_newest.get())?.as_ptr();
        cache_remove(seg);
        let s = unsafe_ref(seg);
        let dirty = s.dirty_bytes();
        POOL.retained.set(POOL.retained.get() - dirty);
        s.dirty_pages.set(0);
        s.purge_deadline.set(u64::MAX);
        Some((seg, dirty))
    })
}

/// Caches the segment-sized mapping of a freed huge block (decommitted: its
/// contents are unknown) with the pool lock.
pub(super) fn cache_huge(seg: *mut Segment) {
    POOL.lock.with(|| cache_push(seg));
}

/// Keeps the mapping of a freed huge block (unpublished, its accounting
/// already withdrawn from its zone) committed for reuse. Returns `false`
/// (and keeps nothing) when it would take more than half of the retention
/// budget: the caller then gives the memory back.
pub(super) fn cache_huge_mapping(seg: *mut Segment) -> bool {
    let mapping = unsafe_ref(seg).mapping_size;
    POOL.lock.with(|| {
        let now = os::now_ms();
        if mapping > POOL.budget.bytes(now) / 2 {
            POOL.budget.note_purge(mapping, now);
            return false;
        }
        let oldest = POOL.huge_cache[0].replace(ptr::null_mut());
        for i in 1..HUGE_CACHE {
            POOL.huge_cache[i - 1].set(POOL.huge_cache[i].get());
        }
        POOL.huge_cache[HUGE_CACHE - 1].set(seg);
        POOL.retained.set(POOL.retained.get() + mapping);
        if let Some(oldest) = NonNull::new(oldest) {
            unmap_cached_huge(oldest.as_ptr());
        }
        enforce_retention();
        true
    })
}

/// The slot of the newest cached huge mapping that fits a request for
/// `mapping` bytes: at least that, and at most twice that, so reuse does
/// not waste much. Pool lock held.
fn fitting_huge_mapping(mapping: usize) -> Option<&'static Cell<*mut Segment>> {
    POOL.huge_cache.iter().rev().find(|slot| {
        let seg = slot.get();
        !seg.is_null()
            && (mapping..=mapping.saturating_mul(2)).contains(&unsafe_ref(seg).mapping_size)
    })
}

/// Whether [`take_huge_mapping`] would find a mapping of `mapping` bytes.
pub(super) fn has_huge_mapping(mapping: usize) -> bool {
    POOL.lock.with(|| fitting_huge_mapping(mapping).is_some())
}

/// Takes a cached huge mapping that fits a request for `mapping` bytes
/// (see [`fitting_huge_mapping`]), or `None`.
pub(super) fn take_huge_mapping(mapping: usize) -> Option<*mut Segment> {
    POOL.lock.with(|| {
        let slot = fitting_huge_mapping(mapping)?;
        let seg = slot.replace(ptr::null_mut());
        POOL.retained
            .set(POOL.retained.get() - unsafe_ref(seg).mapping_size);
        Some(seg)
    })
}

fn unmap_cached_huge(seg: *mut Segment) {
    POOL.retained
        .set(POOL.retained.get() - unsafe_ref(seg).mapping_size);
    unmap_huge(seg);
}

pub(super) fn unmap_huge(seg: *mut Segment) {
    let mapping = unsafe_ref(seg).mapping_size;
    // SAFETY: the mapping is ours, unpublished, and holds nothing live.
    unsafe { os::unmap(NonNull::new_unchecked(seg.cast()), mapping) };
}

fn list_push(head: &mut *mut Segment, seg: *mut Segment) {
    let s = unsafe_ref(seg);
    s.prev.set(ptr::null_mut());
    s.next.set(*head);
    if let Some(first) = NonNull::new(*head) {
        // SAFETY: listed segments are live; pool lock held.
        unsafe { first.as_ref() }.prev.set(seg);
    }
    *head = seg;
}

fn list_remove(head: &mut *mut Segment, seg: *mut Segment) {
    let s = unsafe_ref(seg);
    let (prev, next) = (s.prev.get(), s.next.get());
    match NonNull::new(prev) {
        // SAFETY: listed segments are live; pool lock held.
        Some(p) => unsafe { p.as_ref() }.next.set(next),
        None => *head = next,
    }
    if let Some(n) = NonNull::new(next) {
        // SAFETY: as above.
        unsafe { n.as_ref() }.prev.set(prev);
    }
    s.next.set(ptr::null_mut());
    s.prev.set(ptr::null_mut());
}
