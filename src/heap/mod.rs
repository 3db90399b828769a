//! Per-thread heaps: where every allocation and free starts.
//!
//! Each thread has one [`Heap`] in a `thread_local!` (const-initialised, no
//! destructor, so reaching it is a single TLS-relative address and never
//! allocates). Per page-backed zone a heap has a queue of pages for each
//! size class, a *full* list of pages with no free block, and a *direct
//! table* that maps small sizes (by 16-byte granule count) straight to a
//! page with free blocks. The fast paths are in `alloc` and `free`; the slow
//! paths that find, retire and give up pages are in [`pages`].
//!
//! Invariants:
//! * a page is in at most one of this heap's queues or its full list, and
//!   it is in one iff this heap owns it (`page.owner == heap.id()`);
//! * `direct[g]` points at the first page of the queue of `g`'s size class,
//!   or at the static empty page;
//! * other threads touch a heap only through `delayed` (see
//!   `page::thread_free`), and only while one of its pages is in the
//!   `Delaying` state, which the heap waits out before it goes away.
//!
//! A thread registers its heap on its first slow path (statistics, fork
//! handlers, the exit guard). At thread exit every page is given up to the
//! abandoned pool ([`abandoned`]) or to its segment.

pub(crate) mod abandoned;
pub(crate) mod counters;
pub(crate) mod pages;
mod queue;

use crate::page::thread_free::BlockStack;
use crate::page::Page;
use crate::size_class::{self, BIN_COUNT, DIRECT_ENTRIES};
use crate::sync::SpinLock;
use crate::{stats, Zone};
use abandoned::{AbandonedPool, Linked};
use core::cell::Cell;
use core::ptr::{self, NonNull};
pub(crate) use counters::Counters;
pub(crate) use pages::{
    after_local_free, after_sweep, give_up_page, page_with_free_block, release_unused_pages,
    settle_counts,
};
use queue::PageQueue;

/// Zones indexed in a heap (all four, so `zone as usize` indexes directly;
/// the stack zone's pages hold the chunks that `stack` carves frames from).
pub(crate) const PAGE_ZONES: usize = 4;
const PAGE_BACKED: [Zone; 4] = [Zone::Gc, Zone::Manual, Zone::Pinned, Zone::Stack];

impl Linked for Page {
    fn pool_link(&self) -> &Cell<*mut Page> {
        &self.next
    }
}

/// Abandoned pages, one list per (zone, bin).
pub(crate) static ABANDONED: AbandonedPool<Page, { PAGE_ZONES * BIN_COUNT }> = AbandonedPool::new();

/// The pool list of a zone and bin.
pub(crate) fn pool_list(zone: Zone, bin: usize) -> usize {
    zone as usize * BIN_COUNT + bin
}

/// The allocation state of one zone inside a heap.
pub(crate) struct ZoneHeap {
    pub(crate) direct: [Cell<*mut Page>; DIRECT_ENTRIES],
    queues: [PageQueue; BIN_COUNT],
    /// Owned pages with no free block (they wait for a free).
    full: PageQueue,
    pub(crate) counters: Counters,
}

impl ZoneHeap {
    const fn new() -> Self {
        ZoneHeap {
            direct: [const { Cell::new(&crate::page::EMPTY_PAGE.0 as *const Page as *mut Page) };
                DIRECT_ENTRIES],
            queues: [const { PageQueue::new() }; BIN_COUNT],
            full: PageQueue::new(),
            counters: Counters::new(),
        }
    }

    /// The first page of `bin`'s queue: the one to allocate from.
    #[inline]
    pub(crate) fn first_page(&self, bin: usize) -> Option<&Page> {
        self.queues[bin].first()
    }

    /// Points the direct-table slots of `bin` at the queue's first page.
    fn update_direct(&self, bin: usize) {
        let block = size_class::block_size_of(bin);
        if block > size_class::SMALL_DIRECT_MAX {
            return;
        }
        let first = self.queues[bin].first_ptr();
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
/// at once (see `alloc`).
const DEAD: u8 = 3;

/// Emptied small or medium pages a heap keeps before returning the oldest
/// to its segment.
const EMPTIED_RING: usize = 8;
/// The same for large pages (up to 4 MiB each).
const EMPTIED_LARGE_RING: usize = 2;

/// A thread's heap.
pub(crate) struct Heap {
    zones: [ZoneHeap; PAGE_ZONES],
    /// Blocks other threads freed into this heap's full pages.
    delayed: BlockStack,
    /// Recently emptied pages kept in their queues (see
    /// `pages::after_local_free`): the first [`EMPTIED_LARGE_RING`] slots
    /// for large pages, the rest for small and medium ones; the oldest of
    /// each ring is at its `next` index.
    emptied: [Cell<*mut Page>; EMPTIED_LARGE_RING + EMPTIED_RING],
    emptied_next: Cell<usize>,
    emptied_large_next: Cell<usize>,
    state: Cell<u8>,
    /// See [`Heap::id`].
    id: Cell<usize>,
    /// Links in the registry of live heaps (registry lock).
    prev: Cell<*mut Heap>,
    next: Cell<*mut Heap>,
    /// The zone `Zonal` (the global allocator) serves this thread's
    /// allocations from: `Manual` unless `with_zone` routes them elsewhere
    /// (never `Stack`).
    route: Cell<Zone>,
    /// Frees queued by `free::free` and not yet carried out (see
    /// `free::carry_out_deferred_frees`): the first `deferred_count`
    /// entries. A count of [`DEFERRED_FREES`] (the queue is full) or
    /// [`NO_DEFERRAL`] (the heap is not active, deferral is off, or the
    /// queue is being carried out) sends every free to the slow path.
    pub(crate) deferred_frees: [Cell<*mut u8>; DEFERRED_FREES],
    pub(crate) deferred_count: Cell<usize>,
}

/// Frees a thread queues before it carries them out together.
pub(crate) const DEFERRED_FREES: usize = 64;
/// [`Heap::deferred_count`] of a heap that carries out every free at once.
pub(crate) const NO_DEFERRAL: usize = DEFERRED_FREES + 1;

thread_local! {
    static HEAP: Heap = const { Heap::new() };
    static EXIT_GUARD: ExitGuard = const { ExitGuard };
}

/// Gives up the thread's pages when the thread exits.
struct ExitGuard;

impl Drop for ExitGuard {
    fn drop(&mut self) {
        // SAFETY: the heap's TLS slot has no destructor, so it stays valid
        // while TLS destructors (this one included) run.
        let heap = unsafe { &*current() };
        heap.exit();
    }
}

/// The calling thread's heap.
#[inline(always)]
pub(crate) fn current() -> *const Heap {
    HEAP.with(|heap| heap as *const Heap)
}

/// Page owner ids carry the process's fork generation above the address
/// bits, so a page owned by a thread of the parent is never taken for a
/// page of a child's thread whose heap happens to sit at the same address.
const FORK_GEN_SHIFT: u32 = 48;
/// Set in the owner id of GC-zone pages (heap addresses are aligned, so the
/// low bit of an id is otherwise 0); see [`Heap::owner_id`].
pub(crate) const GC_OWNER_TAG: usize = 1;
static FORK_GENERATION: crate::sync::AtomicUsize = crate::sync::AtomicUsize::new(0);

fn fork_generation() -> usize {
    FORK_GENERATION.load(crate::sync::Ordering::Relaxed) & 0xffff
}

/// The owner id of `heap` in the current fork generation.
fn heap_id(heap: &Heap) -> usize {
    heap as *const Heap as usize | fork_generation() << FORK_GEN_SHIFT
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

/// Runs `f` with the registry locked. A thread's exit moves its counts from
/// its heap into the retired totals under this lock, so `f` sees each
/// thread's counts exactly once, in its heap or in the retired totals.
pub(crate) fn with_registry_locked<R>(f: impl FnOnce(&Registered) -> R) -> R {
    REGISTRY.lock.with(|| f(&Registered(())))
}

/// Proof that the registry is locked (see [`with_registry_locked`]).
pub(crate) struct Registered(());

impl Registered {
    /// Calls `f` with each registered heap.
    pub(crate) fn for_each_heap(&self, mut f: impl FnMut(&Heap)) {
        let mut heap = REGISTRY.first.get();
        while !heap.is_null() {
            // SAFETY: registered heaps stay valid until they deregister,
            // which needs the lock our caller holds.
            let h = unsafe { &*heap };
            f(h);
            heap = h.next.get();
        }
    }

    /// Calls `f` with each live heap's counters for `zone`.
    pub(crate) fn for_each_counters(&self, zone: Zone, mut f: impl FnMut(&Counters)) {
        let mut heap = REGISTRY.first.get();
        while !heap.is_null() {
            // SAFETY: registered heaps stay valid until they deregister,
            // which needs the lock our caller holds.
            let h = unsafe { &*heap };
            f(&h.zone(zone).counters);
            heap = h.next.get();
        }
    }
}

pub(crate) fn registry_lock() -> &'static SpinLock {
    &REGISTRY.lock
}

impl Heap {
    const fn new() -> Self {
        Heap {
            zones: [const { ZoneHeap::new() }; PAGE_ZONES],
            delayed: BlockStack::new(),
            emptied: [const { Cell::new(ptr::null_mut()) }; EMPTIED_LARGE_RING + EMPTIED_RING],
            emptied_next: Cell::new(0),
            emptied_large_next: Cell::new(0),
            state: Cell::new(NEW),
            id: Cell::new(1),
            prev: Cell::new(ptr::null_mut()),
            next: Cell::new(ptr::null_mut()),
            route: Cell::new(Zone::Manual),
            deferred_frees: [const { Cell::new(ptr::null_mut()) }; DEFERRED_FREES],
            deferred_count: Cell::new(NO_DEFERRAL),
        }
    }

    /// The zone the global allocator serves this thread from (see `route`).
    #[inline(always)]
    pub(crate) fn route(&self) -> Zone {
        self.route.get()
    }

    /// Routes this thread's global allocations to `zone`; returns the
    /// previous zone.
    pub(crate) fn set_route(&self, zone: Zone) -> Zone {
        self.route.replace(zone)
    }

    /// The id written into `Page::owner`: the heap's address tagged with
    /// the fork generation (see [`heap_id`]); 1 until the heap is activated,
    /// which no page ever names.
    #[inline(always)]
    pub(crate) fn id(&self) -> usize {
        self.id.get()
    }

    /// The owner id this heap writes into its pages of `zone`. Pages of the
    /// GC zone carry [`GC_OWNER_TAG`] as well, so the free fast path (which
    /// compares the owner with [`Heap::id`]) sends every GC-zone free to the
    /// slow path, where the collector's deferral protocol applies.
    #[inline]
    pub(crate) fn owner_id(&self, zone: Zone) -> usize {
        self.id() | if zone == Zone::Gc { GC_OWNER_TAG } else { 0 }
    }

    /// The heap a collector must update when it frees blocks of a GC page
    /// owned by `owner` (tag included), if that heap can still exist.
    ///
    /// # Safety
    /// The world is stopped, or the caller otherwise knows the owner's
    /// thread cannot exit meanwhile.
    pub(crate) unsafe fn owner_of_gc_page<'a>(owner: usize) -> Option<&'a Heap> {
        let id = owner & !GC_OWNER_TAG;
        if id == 0 {
            return None;
        }
        // SAFETY: forwarded contract.
        unsafe { Self::from_id(id) }
    }

    #[inline(always)]
    pub(crate) fn zone(&self, zone: Zone) -> &ZoneHeap {
        &self.zones[zone as usize]
    }

    /// The heap named by a page's owner id, if that heap can still exist:
    /// after a fork, ids of the parent's other threads name heaps that are
    /// gone (their memory may even be another thread's now).
    ///
    /// # Safety
    /// `id` must be the owner of a page that is in the `Delaying` state,
    /// set by the caller (which keeps the owner's thread from exiting).
    pub(crate) unsafe fn from_id<'a>(id: usize) -> Option<&'a Heap> {
        (id >> FORK_GEN_SHIFT == fork_generation())
            // SAFETY: by the contract, a heap of this generation is alive.
            .then(|| unsafe { &*((id & ((1 << FORK_GEN_SHIFT) - 1)) as *const Heap) })
    }

    /// Hands a block freed into one of this heap's full pages to its owner.
    ///
    /// # Safety
    /// As for `thread_free::push`.
    pub(crate) unsafe fn push_delayed(&self, block: *mut crate::page::thread_free::Block) {
        // SAFETY: forwarded contract.
        unsafe { self.delayed.push(block) }
    }

    /// Records a page that just became unused; returns the page it evicts
    /// from its ring (large pages have a ring of their own, of
    /// [`EMPTIED_LARGE_RING`] entries, since each holds up to 4 MiB). Ring
    /// entries are always pages this heap owns: a page leaves its ring
    /// (`forget_emptied`) before it leaves the heap.
    pub(crate) fn remember_emptied(&self, page: &Page) -> Option<&Page> {
        let large = page.block_size.get() > size_class::MEDIUM_MAX;
        let (ring, next) = if large {
            (
                &self.emptied[..EMPTIED_LARGE_RING],
                &self.emptied_large_next,
            )
        } else {
            (&self.emptied[EMPTIED_LARGE_RING..], &self.emptied_next)
        };
        let page = page as *const Page as *mut Page;
        if ring.iter().any(|slot| slot.get() == page) {
            return None;
        }
        let slot = next.get();
        next.set((slot + 1) % ring.len());
        let evicted = ring[slot].replace(page);
        // SAFETY: ring entries are pages this heap owns (see above).
        NonNull::new(evicted).map(|p| unsafe { &*p.as_ptr() })
    }

    /// Drops a page from the ring of emptied pages (it is leaving the heap).
    pub(crate) fn forget_emptied(&self, page: &Page) {
        for slot in &self.emptied {
            if ptr::eq(slot.get(), page) {
                slot.set(ptr::null_mut());
            }
        }
    }

    /// Charges an operation to this thread's counters of `zone`, from a path
    /// that may run before the heap was ever used (a thread that only frees)
    /// or after the thread's exit hook ran (frees in later TLS destructors):
    /// the heap is registered first if it is new, and a dead heap's counts
    /// go straight into the retired totals, since nobody reads its counters
    /// any more.
    pub(crate) fn count(&self, zone: Zone, op: impl FnOnce(&Counters)) {
        if self.state.get() == NEW {
            self.activate();
        }
        let counters = &self.zone(zone).counters;
        op(counters);
        if self.is_dead() {
            stats::retire_counters(zone, counters);
            counters.reset();
        }
    }

    /// Whether the heap is registered and alive.
    #[inline]
    pub(crate) fn is_active(&self) -> bool {
        self.state.get() == ACTIVE
    }

    /// Whether the thread's exit guard already ran (late allocations from
    /// other TLS destructors): such a thread must not keep pages.
    #[inline]
    pub(crate) fn is_dead(&self) -> bool {
        self.state.get() == DEAD
    }

    /// Registers the heap on its first slow path. Registering the exit guard
    /// may itself allocate on some platforms; the `ACTIVATING` state makes a
    /// nested call skip registration instead of recursing.
    #[cold]
    pub(crate) fn activate(&self) {
        if self.state.get() != NEW {
            return;
        }
        self.state.set(ACTIVATING);
        self.id.set(heap_id(self));
        crate::options::get();
        crate::fork::install_handlers();
        // Before any lock: from here on, this thread's stack is scanned and
        // its locked sections defer suspension.
        crate::thread::register_current();
        REGISTRY.lock.with(|| {
            let me = self as *const Heap as *mut Heap;
            self.next.set(REGISTRY.first.get());
            if let Some(first) = NonNull::new(REGISTRY.first.get()) {
                // SAFETY: registered heaps are valid (see Registered).
                unsafe { first.as_ref().prev.set(me) };
            }
            REGISTRY.first.set(me);
        });
        self.state.set(ACTIVE);
        if crate::options::get().defer_frees {
            crate::free::carry_out_deferred_frees_at_exit();
            self.deferred_count.set(0);
        }
        // Registers the TLS destructor. If the thread is already being torn
        // down this fails, and the heap gives up its pages at once.
        if EXIT_GUARD.try_with(|_| ()).is_err() {
            self.exit();
        }
    }

    /// Gives up every page and folds the counters into the global totals.
    fn exit(&self) {
        if self.state.get() == DEAD {
            return;
        }
        // Later frees (from other TLS destructors) are carried out at once.
        crate::free::carry_out_deferred_frees(self);
        self.deferred_count.set(NO_DEFERRAL);
        crate::gc::on_thread_exit();
        // No collection may see the pages half given up: deferred if the
        // thread is still registered, under the collection lock if its
        // registration already ended (TLS destructors run in any order).
        crate::gc::exclusive_of_collection(|| self.give_up_everything());
        crate::thread::deregister_current();
    }

    fn give_up_everything(&self) {
        pages::give_up_all(self);
        for zone in PAGE_BACKED {
            let zone_heap = self.zone(zone);
            for bin in 0..BIN_COUNT {
                zone_heap.update_direct(bin);
            }
            zone_heap.counters.flush(zone as usize);
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
                for zone in PAGE_BACKED {
                    let counters = &self.zone(zone).counters;
                    stats::retire_counters(zone, counters);
                    // Later counts (from other TLS destructors) are folded
                    // in one by one (see `count`).
                    counters.reset();
                }
            });
        }
        self.state.set(DEAD);
    }
}

/// In a forked child (one thread, every lock reset): starts a new fork
/// generation, so pages of the parent's other threads (which do not exist
/// here) are never mistaken for pages of new threads; re-tags the calling
/// thread's own pages with its new id; and drops the other heaps from the
/// registry, keeping their counts. Their pages stay theirs and are leaked:
/// those heaps may have been mid-update when the fork happened.
pub(crate) fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, crate::sync::Ordering::Relaxed);
    let me = current();
    let mut heap = REGISTRY.first.get();
    while !heap.is_null() {
        // SAFETY: registered heaps' memory was copied into the child and is
        // not being modified (their threads do not exist here).
        let h = unsafe { &*heap };
        let next = h.next.get();
        if !ptr::eq(heap, me) {
            for zone in PAGE_BACKED {
                stats::retire_counters(zone, &h.zone(zone).counters);
            }
        }
        heap = next;
    }
    // SAFETY: the current thread's heap is valid.
    let me_ref = unsafe { &*me };
    if me_ref.state.get() == ACTIVE {
        me_ref.id.set(heap_id(me_ref));
        pages::after_fork_in_child(me_ref);
        me_ref.prev.set(ptr::null_mut());
        me_ref.next.set(ptr::null_mut());
        REGISTRY.first.set(me as *mut Heap);
    } else {
        REGISTRY.first.set(ptr::null_mut());
    }
}
