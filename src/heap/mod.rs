//! Per-thread heaps: where every allocation and free starts.
//!
//! Each thread has one [`Heap`] in a `thread_local!` (const-initialised, no
//! destructor, so reaching it is a single TLS-relative address and never
//! allocates). A heap has, per page-backed zone, a queue of owned pages for
//! each size class and a *direct table* that maps small sizes (by 16-byte
//! granule count) straight to a page with free blocks. The fast paths are in
//! `alloc` and `free`; this module is their slow path:
//!
//! * find a page with a free block for a size class: collect the frees that
//!   piled up on the queue's pages, carve new blocks, let go of pages that
//!   are full, adopt an abandoned page, or take a fresh page from a segment;
//! * retire a page whose last block came back;
//! * register the thread on its first slow path (statistics, fork handlers,
//!   exit guard), and at thread exit abandon every page to the pool.
//!
//! Invariants: a page is in at most one queue, and it is in a queue iff this
//! heap owns it (`page.owner == heap.id()`); `direct[g]` points at the first
//! page of the queue for `g`'s size class, or at the static empty page.

pub(crate) mod abandoned;

use crate::page::thread_free::{self, Block};
use crate::page::Page;
use crate::segment::{self, Segment};
use crate::size_class::{self, PageKind, BIN_COUNT, DIRECT_ENTRIES};
use crate::sync::{AtomicU64, Ordering, SpinLock};
use crate::{fault, stats, Zone};
use abandoned::{AbandonedPool, Linked};
use core::cell::Cell;
use core::ptr::{self, NonNull};

/// Zones indexed in a heap (all four, so `zone as usize` indexes directly;
/// the stack zone's slot stays empty).
pub(crate) const PAGE_ZONES: usize = 4;

impl Linked for Page {
    fn pool_link(&self) -> &Cell<*mut Page> {
        &self.next
    }
}

/// Abandoned pages, one list per (zone, bin).
pub(crate) static ABANDONED: AbandonedPool<Page, { PAGE_ZONES * BIN_COUNT }> = AbandonedPool::new();

pub(crate) fn pool_list(zone: Zone, bin: usize) -> usize {
    zone as usize * BIN_COUNT + bin
}

/// A doubly linked queue of pages of one size class.
struct PageQueue {
    first: Cell<*mut Page>,
    last: Cell<*mut Page>,
}

impl PageQueue {
    const fn new() -> Self {
        PageQueue {
            first: Cell::new(ptr::null_mut()),
            last: Cell::new(ptr::null_mut()),
        }
    }

    fn push_front(&self, page: &Page) {
        let p = page as *const Page as *mut Page;
        page.prev.set(ptr::null_mut());
        page.next.set(self.first.get());
        match NonNull::new(self.first.get()) {
            // SAFETY: pages in our queue are valid and owned by us.
            Some(first) => unsafe { first.as_ref().prev.set(p) },
            None => self.last.set(p),
        }
        self.first.set(p);
    }

    fn remove(&self, page: &Page) {
        let (prev, next) = (page.prev.get(), page.next.get());
        match NonNull::new(prev) {
            // SAFETY: neighbours in our queue are valid and owned by us.
            Some(prev) => unsafe { prev.as_ref().next.set(next) },
            None => self.first.set(next),
        }
        match NonNull::new(next) {
            // SAFETY: as above.
            Some(next) => unsafe { next.as_ref().prev.set(prev) },
            None => self.last.set(prev),
        }
        page.prev.set(ptr::null_mut());
        page.next.set(ptr::null_mut());
    }
}

/// Per-thread counters of one zone. Written only by the owning thread
/// (plain load + store, no read-modify-write, no shared cache line) and read
/// by `stats()` from any thread.
pub(crate) struct Counters {
    pub(crate) allocs: AtomicU64,
    pub(crate) frees: AtomicU64,
    pub(crate) alloc_bytes: AtomicU64,
    pub(crate) free_bytes: AtomicU64,
    /// Live bytes already added to the zone's global live total.
    flushed_live: Cell<i64>,
}

#[inline(always)]
fn bump(counter: &AtomicU64, by: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

impl Counters {
    const fn new() -> Self {
        Counters {
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            alloc_bytes: AtomicU64::new(0),
            free_bytes: AtomicU64::new(0),
            flushed_live: Cell::new(0),
        }
    }

    #[inline(always)]
    pub(crate) fn on_alloc(&self, bytes: usize) {
        bump(&self.allocs, 1);
        bump(&self.alloc_bytes, bytes as u64);
    }

    #[inline(always)]
    pub(crate) fn on_free(&self, bytes: usize) {
        bump(&self.frees, 1);
        bump(&self.free_bytes, bytes as u64);
    }

    /// A block changed size in place.
    #[inline]
    pub(crate) fn on_resize(&self, old: usize, new: usize) {
        if new >= old {
            bump(&self.alloc_bytes, (new - old) as u64);
        } else {
            bump(&self.free_bytes, (old - new) as u64);
        }
    }

    fn live(&self) -> i64 {
        self.alloc_bytes
            .load(Ordering::Relaxed)
            .wrapping_sub(self.free_bytes.load(Ordering::Relaxed)) as i64
    }

    /// Moves this thread's unflushed live-byte change into the zone's global
    /// total and peak (slow path only: one atomic add per page, not block).
    fn flush(&self, zone: usize) {
        let live = self.live();
        let delta = live - self.flushed_live.get();
        if delta != 0 {
            self.flushed_live.set(live);
            stats::add_live(zone, delta);
        }
    }
}

/// The allocation state of one zone inside a heap.
pub(crate) struct ZoneHeap {
    pub(crate) direct: [Cell<*mut Page>; DIRECT_ENTRIES],
    queues: [PageQueue; BIN_COUNT],
    pub(crate) counters: Counters,
}

impl ZoneHeap {
    const fn new() -> Self {
        ZoneHeap {
            direct: [const { Cell::new(&crate::page::EMPTY_PAGE.0 as *const Page as *mut Page) };
                DIRECT_ENTRIES],
            queues: [const { PageQueue::new() }; BIN_COUNT],
            counters: Counters::new(),
        }
    }

    /// The first page of `bin`'s queue: the one to allocate from.
    #[inline]
    pub(crate) fn first_page(&self, bin: usize) -> Option<&Page> {
        // SAFETY: pages in our queues are valid and owned by this thread.
        NonNull::new(self.queues[bin].first.get()).map(|p| unsafe { &*p.as_ptr() })
    }

    /// Points the direct-table slots of `bin` at the queue's first page.
    fn update_direct(&self, bin: usize) {
        let block = size_class::block_size_of(bin);
        if block > size_class::SMALL_DIRECT_MAX {
            return;
        }
        let first = self.queues[bin].first.get();
        let page = if first.is_null() {
            Page::empty()
        } else {
            first
        };
        let lowest = if bin == 0 {
            0
        } else {
            size_class::block_size_of(bin - 1) / size_class::GRANULE + 1
        };
        for slot in &self.direct[lowest..=block / size_class::GRANULE] {
            slot.set(page);
        }
    }
}

const NEW: u8 = 0;
const ACTIVE: u8 = 1;
const ACTIVATING: u8 = 2;
/// The thread's exit guard has run: pages taken from now on are given up
/// at once (see `alloc_slow`).
const DEAD: u8 = 3;

/// A thread's heap.
pub(crate) struct Heap {
    zones: [ZoneHeap; PAGE_ZONES],
    state: Cell<u8>,
    /// Links in the registry of live heaps (registry lock).
    prev: Cell<*mut Heap>,
    next: Cell<*mut Heap>,
}

thread_local! {
    static HEAP: Heap = const { Heap::new() };
    static EXIT_GUARD: ExitGuard = const { ExitGuard };
}

/// Abandons the thread's pages when the thread exits.
struct ExitGuard;

impl Drop for ExitGuard {
    fn drop(&mut self) {
        // SAFETY: the heap TLS slot has no destructor, so it is still valid
        // while other TLS destructors (this one included) run.
        let heap = unsafe { &*current() };
        heap.exit();
    }
}

/// The calling thread's heap.
#[inline(always)]
pub(crate) fn current() -> *const Heap {
    HEAP.with(|heap| heap as *const Heap)
}

/// Registry of live heaps, for statistics (and the collector's thread list).
struct Registry {
    lock: SpinLock,
    first: Cell<*mut Heap>,
}
// SAFETY: `first` and the heaps' links are only touched with `lock` held.
unsafe impl Sync for Registry {}

static REGISTRY: Registry = Registry {
    lock: SpinLock::new(),
    first: Cell::new(ptr::null_mut()),
};

/// Calls `f` with each live heap's counters for `zone`, registry locked.
pub(crate) fn for_each_counters(zone: Zone, mut f: impl FnMut(&Counters)) {
    REGISTRY.lock.with(|| {
        let mut heap = REGISTRY.first.get();
        while !heap.is_null() {
            // SAFETY: registered heaps stay valid until they deregister,
            // which needs the lock we hold.
            let h = unsafe { &*heap };
            f(&h.zone(zone).counters);
            heap = h.next.get();
        }
    })
}

pub(crate) fn registry_lock() -> &'static SpinLock {
    &REGISTRY.lock
}

impl Heap {
    const fn new() -> Self {
        Heap {
            zones: [const { ZoneHeap::new() }; PAGE_ZONES],
            state: Cell::new(NEW),
            prev: Cell::new(ptr::null_mut()),
            next: Cell::new(ptr::null_mut()),
        }
    }

    /// The id written into `Page::owner` (never 0).
    #[inline(always)]
    pub(crate) fn id(&self) -> usize {
        self as *const Heap as usize
    }

    #[inline(always)]
    pub(crate) fn zone(&self, zone: Zone) -> &ZoneHeap {
        &self.zones[zone as usize]
    }

    /// Registers the heap on its first slow path. Registering the exit guard
    /// may itself allocate on some platforms; the `ACTIVATING` state makes a
    /// nested call skip registration instead of recursing.
    #[cold]
    fn activate(&self) {
        if self.state.get() != NEW {
            return;
        }
        self.state.set(ACTIVATING);
        crate::options::get();
        crate::fork::install_handlers();
        REGISTRY.lock.with(|| {
            let me = self as *const Heap as *mut Heap;
            self.next.set(REGISTRY.first.get());
            if let Some(first) = NonNull::new(REGISTRY.first.get()) {
                // SAFETY: registered heaps are valid (see for_each_counters).
                unsafe { first.as_ref().prev.set(me) };
            }
            REGISTRY.first.set(me);
        });
        // Registering the TLS destructor; if the thread is already being torn
        // down this fails and the heap behaves as dead.
        if EXIT_GUARD.try_with(|_| ()).is_err() {
            self.state.set(ACTIVE);
            self.exit();
            return;
        }
        self.state.set(ACTIVE);
    }

    /// Gives up every page and folds the counters into the global totals.
    fn exit(&self) {
        if self.state.get() == DEAD {
            return;
        }
        for zone in [Zone::Gc, Zone::Manual, Zone::Pinned] {
            let zh = self.zone(zone);
            for bin in 0..BIN_COUNT {
                while let Some(page) = NonNull::new(zh.queues[bin].first.get()) {
                    // SAFETY: pages in our queues are valid and ours.
                    let page = unsafe { page.as_ref() };
                    zh.queues[bin].remove(page);
                    abandon(zone, page);
                }
                zh.update_direct(bin);
            }
            zh.counters.flush(zone as usize);
        }
        if self.state.get() != NEW {
            REGISTRY.lock.with(|| {
                let (prev, next) = (self.prev.get(), self.next.get());
                match NonNull::new(prev) {
                    // SAFETY: registered heaps are valid; lock held.
                    Some(prev) => unsafe { prev.as_ref().next.set(next) },
                    None => REGISTRY.first.set(next),
                }
                if let Some(next) = NonNull::new(next) {
                    // SAFETY: as above.
                    unsafe { next.as_ref().prev.set(prev) };
                }
                for zone in [Zone::Gc, Zone::Manual, Zone::Pinned] {
                    stats::retire_counters(zone, &self.zone(zone).counters);
                }
            });
        }
        self.state.set(DEAD);
    }
}

/// Gives up an owned page that is in no queue: back to its segment if no
/// block is out, into the pool if it has free blocks, or detached as full.
fn abandon(zone: Zone, page: &Page) {
    page.collect(clear_alloc_bit);
    if page.is_unused() {
        segment::page_free(page);
        return;
    }
    page.owner.store(0, Ordering::Relaxed);
    let has_free = !page.free.get().is_null() || page.can_extend();
    if !has_free && thread_free::try_mark_full(&page.thread_free) {
        return;
    }
    // SAFETY: we own the page (and give it up here); pages live in segment
    // headers that stay mapped while the page is in use.
    unsafe {
        ABANDONED.push(
            pool_list(zone, page.bin.get() as usize),
            page as *const Page as *mut Page,
        )
    };
}

/// Clears a collected block's allocation bit; a bit already clear means the
/// block was freed twice.
pub(crate) fn clear_alloc_bit(block: *mut Block) {
    let addr = block as usize;
    // SAFETY: blocks on a page's lists lie in a live segment.
    let seg = unsafe { Segment::at(addr & !segment::SEGMENT_MASK) };
    let (word, bit) = seg.alloc_bit(addr);
    let bits = word.load(Ordering::Relaxed);
    if bits & bit == 0 {
        fault::report(fault::Op::Free, fault::Fault::DoubleFree, addr);
    }
    word.store(bits & !bit, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------
// Slow paths.

/// The slow path of block allocation: returns a page of `zone` and `bin`
/// that has a free block, or `None` when the OS has no memory.
#[cold]
pub(crate) fn page_with_free_block(heap: &Heap, zone: Zone, bin: usize) -> Option<&Page> {
    if heap.state.get() != ACTIVE {
        heap.activate();
    }
    let zh = heap.zone(zone);
    zh.counters.flush(zone as usize);
    let queue = &zh.queues[bin];
    let mut cursor = queue.first.get();
    while let Some(page) = NonNull::new(cursor) {
        // SAFETY: pages in our queues are valid and ours.
        let page = unsafe { page.as_ref() };
        let next = page.next.get();
        if page_has_free_block(page) {
            if !ptr::eq(queue.first.get(), page) {
                queue.remove(page);
                queue.push_front(page);
            }
            zh.update_direct(bin);
            return Some(page);
        }
        // Full: let go of it; the first remote free re-publishes it.
        queue.remove(page);
        page.owner.store(0, Ordering::Relaxed);
        if !thread_free::try_mark_full(&page.thread_free) {
            // A block came back meanwhile: keep the page after all.
            page.owner.store(heap.id(), Ordering::Relaxed);
            queue.push_front(page);
            continue_with(&mut cursor, page);
            continue;
        }
        cursor = next;
    }
    // The queue may have lost pages above: the direct table must not keep
    // pointing at a page another thread may adopt, even if we fail below.
    zh.update_direct(bin);
    let page = adopt_abandoned(heap, zone, bin).or_else(|| fresh_page(heap, zone, bin))?;
    queue.push_front(page);
    zh.update_direct(bin);
    Some(page)
}

fn continue_with(cursor: &mut *mut Page, page: &Page) {
    *cursor = page as *const Page as *mut Page;
}

/// Collects pending frees and, if needed, carves new blocks. Owner only.
fn page_has_free_block(page: &Page) -> bool {
    if page.free.get().is_null() {
        page.collect(clear_alloc_bit);
        if page.free.get().is_null() && page.can_extend() {
            page.extend();
        }
    }
    !page.free.get().is_null()
}

/// Adopts an abandoned page of this zone and bin that has a free block.
/// Pages that turn out to be entirely free go back to their segments.
fn adopt_abandoned(heap: &Heap, zone: Zone, bin: usize) -> Option<&'static Page> {
    while let Some(page) = ABANDONED.pop(pool_list(zone, bin)) {
        // SAFETY: the pool hands over ownership of a valid page.
        let page = unsafe { &*page };
        page.owner.store(heap.id(), Ordering::Relaxed);
        if page_has_free_block(page) {
            return Some(page);
        }
        // Pool pages have free blocks; a page with none is detached as full
        // again (or kept if a block arrived meanwhile).
        page.owner.store(0, Ordering::Relaxed);
        if !thread_free::try_mark_full(&page.thread_free) {
            page.owner.store(heap.id(), Ordering::Relaxed);
            page.collect(clear_alloc_bit);
            return Some(page);
        }
    }
    None
}

/// Takes a fresh page from a segment for `bin`. Also returns a few
/// entirely free abandoned pages of other classes to their segments, so
/// pages of exited threads do not pin memory forever.
fn fresh_page(heap: &Heap, zone: Zone, bin: usize) -> Option<&'static Page> {
    reclaim_abandoned(heap, 4);
    let kind = size_class::page_kind_of(bin);
    debug_assert!(kind != PageKind::Huge);
    let (page, area, len, zeroed) = segment::page_alloc(zone, kind)?;
    // SAFETY: page_alloc hands us an unused page record in a live segment.
    let page = unsafe { &*page.as_ptr() };
    page.init(bin, area, len, heap.id(), zeroed);
    page.extend();
    Some(page)
}

/// Looks at up to `budget` abandoned pages of any class: unused ones go back
/// to their segments, the others back to the pool.
fn reclaim_abandoned(heap: &Heap, budget: usize) {
    for _ in 0..budget {
        let Some((list, page)) = ABANDONED.pop_any() else {
            return;
        };
        // SAFETY: the pool hands over ownership of a valid page.
        let page = unsafe { &*page };
        page.owner.store(heap.id(), Ordering::Relaxed);
        page.collect(clear_alloc_bit);
        if page.is_unused() {
            segment::page_free(page);
        } else {
            page.owner.store(0, Ordering::Relaxed);
            // SAFETY: we own the page and give it back.
            unsafe { ABANDONED.push(list, page as *const Page as *mut Page) };
        }
    }
}

/// Called when a local free made `page` unused: return it to its segment,
/// unless it is its queue's only page and not a large page (then keep it,
/// so alternating alloc/free of one block does not bounce a page to the
/// segment). The keep test is inline because it is the common case.
#[inline(always)]
pub(crate) fn on_page_unused(heap: &Heap, zone: Zone, page: &Page) {
    let alone = page.prev.get().is_null() && page.next.get().is_null();
    if !(alone && page.block_size.get() <= size_class::MEDIUM_MAX) {
        retire_page(heap, zone, page);
    }
}

#[cold]
#[inline(never)]
fn retire_page(heap: &Heap, zone: Zone, page: &Page) {
    let zh = heap.zone(zone);
    let bin = page.bin.get() as usize;
    zh.queues[bin].remove(page);
    zh.update_direct(bin);
    // `used == 0` means every block came back and was collected, so nothing
    // is in flight on `thread_free`.
    segment::page_free(page);
}

/// Activates the heap if needed (for slow paths that do not go through
/// `page_with_free_block`, such as huge allocations).
pub(crate) fn ensure_active(heap: &Heap) {
    if heap.state.get() != ACTIVE {
        heap.activate();
    }
}

/// Whether the thread's exit guard already ran (late allocations from other
/// TLS destructors): such a thread must not keep pages.
pub(crate) fn is_dead(heap: &Heap) -> bool {
    heap.state.get() == DEAD
}

/// After a dead thread allocated from `page`, give the page up again.
pub(crate) fn give_up_page(heap: &Heap, zone: Zone, page: &Page) {
    let zh = heap.zone(zone);
    let bin = page.bin.get() as usize;
    zh.queues[bin].remove(page);
    zh.update_direct(bin);
    abandon(zone, page);
}

/// In a forked child: drops every heap but the calling thread's from the
/// registry (their threads do not exist here), keeping their counts.
pub(crate) fn forget_other_threads() {
    let me = current();
    let mut heap = REGISTRY.first.get();
    while !heap.is_null() {
        // SAFETY: registered heaps' memory was copied into the child and is
        // not being modified (their threads do not exist here).
        let h = unsafe { &*heap };
        let next = h.next.get();
        if !ptr::eq(heap, me) {
            for zone in [Zone::Gc, Zone::Manual, Zone::Pinned] {
                stats::retire_counters(zone, &h.zone(zone).counters);
            }
        }
        heap = next;
    }
    // SAFETY: as above; the current heap is valid.
    let me_ref = unsafe { &*me };
    if me_ref.state.get() == ACTIVE {
        me_ref.prev.set(ptr::null_mut());
        me_ref.next.set(ptr::null_mut());
        REGISTRY.first.set(me as *mut Heap);
    } else {
        REGISTRY.first.set(ptr::null_mut());
    }
}
