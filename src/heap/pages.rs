//! The heap's slow paths: finding a page with a free block, the full list
//! and delayed frees, retiring unused pages, adopting abandoned pages, and
//! giving every page up when the thread exits.
//!
//! Where pages come from, in order of preference, when a size class's queue
//! has no free block: frees that piled up on the queue's pages (local and
//! remote), blocks not yet carved from them, an abandoned page of the same
//! zone and class, a fresh page from a segment.
//!
//! A page with no free block moves to the heap's *full* list and asks to be
//! told about its next remote free (`UseDelayed`, see `page::thread_free`):
//! that free lands on the heap's delayed list, and the next slow path frees
//! it locally, which moves the page back to its queue. A local free into a
//! full page moves it back directly (the free fast path checks `in_full`).

use super::{pool_list, Heap, ZoneHeap, ABANDONED, PAGE_BACKED, PAGE_ZONES};
use crate::fault::{self, Fault, Op};
use crate::page::thread_free::{self, Block, State};
use crate::page::Page;
use crate::segment::{self, Segment};
use crate::size_class::{self, BIN_COUNT};
use crate::sync::{AtomicU64, Ordering};
use crate::thread::suspend::DeferGuard;
use crate::Zone;
use core::ptr;

/// Returns a page of `zone` and `bin` that has a free block, first in its
/// queue (so the direct table points at it), or `None` when the OS has no
/// memory.
#[cold]
pub(crate) fn page_with_free_block(heap: &Heap, zone: Zone, bin: usize) -> Option<&Page> {
    if !heap.is_active() {
        heap.activate();
    }
    // The collector's sweep updates GC pages and queues of stopped threads:
    // no thread may be stopped halfway through a page slow path.
    let _deferral = DeferGuard::new();
    // Queued frees may free a block of this very bin.
    crate::free::carry_out_deferred_frees(heap);
    free_delayed(heap);
    let zone_heap = heap.zone(zone);
    let queue = &zone_heap.queues[bin];
    let mut moved = false;
    while let Some(page) = queue.first() {
        fold_page_counts(heap, page);
        if page_has_free_block(page) {
            if moved {
                // A page before it went to the full list: the direct table
                // still points there, and every allocation would take the
                // slow path until it is pointed here.
                zone_heap.update_direct(bin);
            }
            return Some(page);
        }
        queue.remove(page);
        move_to_full(zone_heap, page);
        moved = true;
    }
    // The queue may have lost pages: the direct table must not keep pointing
    // at them, even if no page can be had below.
    zone_heap.update_direct(bin);
    // Live bytes reach new highs when the heap needs new pages: publish
    // them for the peak statistic here (not on every slow path).
    zone_heap.counters.flush(zone as usize);
    let page = adopt_abandoned(heap, zone, bin).or_else(|| fresh_page(heap, zone, bin))?;
    queue.push_front(page);
    zone_heap.update_direct(bin);
    Some(page)
}

/// Adds the allocations and frees the owner made in `page` since the last
/// call (see `Page::take_counts`) to its statistics, as whole blocks.
/// Called on the page's slow paths: every time its free list is refilled
/// (before a page goes to the full list too, as that follows a refill
/// attempt), and when it is unfulled, emptied, retired or given up; and for
/// all pages by the owner's own `stats()`. The GC zone counts its blocks
/// itself (see `gc`), so its pages' counts are dropped.
fn fold_page_counts(heap: &Heap, page: &Page) {
    let (allocs, frees) = page.take_counts();
    if allocs == 0 && frees == 0 {
        return;
    }
    let zone = segment::segment_of_page(page).zone;
    if zone == Zone::Gc {
        return;
    }
    let block_size = page.block_size.get() as u64;
    let (allocs, frees) = (u64::from(allocs), u64::from(frees));
    heap.count(zone, |c| {
        c.on_allocs(allocs, allocs * block_size);
        c.on_frees(frees, frees * block_size);
    });
}

/// Brings the statistics of `heap`'s thread up to date, for its own
/// `stats()`: takes in the blocks other threads freed into its pages and
/// into abandoned pages (whose owners exited), and adds every page's counts
/// to the counters. Owner only.
pub(crate) fn settle_counts(heap: &Heap) {
    if !heap.is_active() {
        return;
    }
    // The collector may update the queues of a stopped thread.
    let _deferral = DeferGuard::new();
    crate::free::carry_out_deferred_frees(heap);
    // Frees into full pages were handed over to the owner.
    free_delayed(heap);
    for zone in [Zone::Manual, Zone::Pinned, Zone::Stack] {
        let zone_heap = heap.zone(zone);
        for queue in &zone_heap.queues {
            queue.for_each(|page| {
                collect_remote(page);
                fold_page_counts(heap, page);
            });
        }
        // A full page's first remote free was handed over (see above) and
        // unfulled it: what is left here has none pending.
        zone_heap.full.for_each(|page| fold_page_counts(heap, page));
    }
    reclaim_all_abandoned(heap);
}

/// Every abandoned page, once: takes in the frees made into it and counts
/// them; unused pages go back to their segments, the others back to the
/// pool.
fn reclaim_all_abandoned(heap: &Heap) {
    for list in 0..PAGE_ZONES * BIN_COUNT {
        // Pages still in use wait in a chain of their own (through the pool
        // link), so that none is taken twice.
        let mut kept: *mut Page = ptr::null_mut();
        while let Some(page) = ABANDONED.pop(list) {
            // SAFETY: the pool hands over ownership of a valid page.
            let page = unsafe { &*page };
            if reclaim(heap, page) {
                page.next.set(kept);
                kept = page as *const Page as *mut Page;
            }
        }
        while !kept.is_null() {
            // SAFETY: the chain holds pages we took from the pool above.
            let next = unsafe { (*kept).next.get() };
            // SAFETY: we own the page and give it back.
            unsafe { ABANDONED.push(list, kept) };
            kept = next;
        }
    }
}

/// Takes in the frees made into an abandoned page this heap took from the
/// pool and counts them; returns the page to its segment if it is unused.
/// Returns whether the page is still in use (the caller gives it back to
/// the pool; its owner is 0 again).
fn reclaim(heap: &Heap, page: &Page) -> bool {
    page.owner.store(heap.id(), Ordering::Relaxed);
    collect(page);
    fold_page_counts(heap, page);
    if page.is_unused() {
        segment::page_free(page);
        return false;
    }
    page.owner.store(0, Ordering::Relaxed);
    true
}

/// Collects pending frees and, if needed, carves new blocks. Owner only.
fn page_has_free_block(page: &Page) -> bool {
    if page.free.get().is_null() {
        collect(page);
        if page.free.get().is_null() && page.can_extend() {
            page.extend();
        }
    }
    !page.free.get().is_null()
}

fn move_to_full(zone_heap: &ZoneHeap, page: &Page) {
    page.set_in_full(true);
    zone_heap.full.push_front(page);
    thread_free::set_state(&page.thread_free, State::UseDelayed, false);
    // A remote free that landed after the caller's last collect but before
    // the state change was linked without notifying us: look once more, or
    // the page could sit in the full list with free blocks for good.
    if thread_free::has_blocks(&page.thread_free) {
        collect(page);
        unfull(zone_heap, page);
    }
}

fn unfull(zone_heap: &ZoneHeap, page: &Page) {
    zone_heap.full.remove(page);
    page.set_in_full(false);
    thread_free::set_state(&page.thread_free, State::Normal, false);
    let bin = page.bin.get() as usize;
    zone_heap.queues[bin].push_back(page);
    if zone_heap.queues[bin].is_first(page) {
        zone_heap.update_direct(bin);
    }
}

/// Frees the blocks other threads handed to this heap's full pages.
fn free_delayed(heap: &Heap) {
    let mut block = heap.delayed.take_all();
    while !block.is_null() {
        // SAFETY: blocks on the delayed list are freed blocks of our pages;
        // the swap in take_all made their links visible.
        let next = unsafe { (*block).next };
        free_owned_block(heap, block);
        block = next;
    }
}

/// Frees a live block of a page this heap owns (the local free, minus
/// statistics, which the freeing thread counted).
fn free_owned_block(heap: &Heap, block: *mut Block) {
    let addr = block as usize;
    // SAFETY: the block lies in a live segment (its page is ours).
    let seg = unsafe { Segment::at(addr & !segment::SEGMENT_MASK) };
    let page = seg.page_of(addr);
    debug_assert_eq!(page.owner.load(Ordering::Relaxed), heap.id());
    let mut clearer = AllocBitClearer::new();
    clearer.clear(block);
    clearer.finish();
    let used = page.push_local(block);
    if page.needs_slow_path_after_free(used) {
        after_local_free(heap, seg.zone, page);
    }
}

/// The cold part of a local free: the page was full (back to its queue) or
/// is now unused.
///
/// An unused page is not returned to its segment at once: churn would bounce
/// it between heap and segment (for a large page, a 4 MiB decommit and the
/// page faults to bring it back). A small or medium page that is its
/// queue's only page simply stays. Otherwise the page stays in its queue (at
/// the back, so partly used pages are filled first) and enters the heap's
/// small ring of recently emptied pages; the page that falls out of the
/// ring goes back to its segment if it is still unused. The rings bound
/// what a heap keeps after a burst is freed (see `Heap::remember_emptied`).
#[cold]
#[inline(never)]
pub(crate) fn after_local_free(heap: &Heap, zone: Zone, page: &Page) {
    let _deferral = DeferGuard::new();
    let zone_heap = heap.zone(zone);
    fold_page_counts(heap, page);
    if page.in_full() {
        unfull(zone_heap, page);
    }
    if !page.is_unused() {
        return;
    }
    if !page.leaves_when_unused() {
        return;
    }
    let queue = &zone_heap.queues[page.bin.get() as usize];
    if !queue.is_first(page) {
        queue.remove(page);
        queue.push_back(page);
    }
    if let Some(evicted) = heap.remember_emptied(page) {
        if evicted.is_unused() {
            let zone = segment::segment_of_page(evicted).zone;
            retire(heap, heap.zone(zone), evicted);
        }
    }
}

/// After the collector freed blocks of a GC page that `heap` owns (world
/// stopped): a full page goes back to its queue, an unused one to its
/// segment. Only GC-zone structures are touched: the owner may be stopped
/// anywhere outside its slow paths, including in a manual-zone fast path.
pub(crate) fn after_sweep(heap: &Heap, page: &Page, keep: bool) {
    let zone_heap = heap.zone(Zone::Gc);
    if page.in_full() {
        unfull(zone_heap, page);
    }
    if page.is_unused() && !keep {
        retire(heap, zone_heap, page);
    }
}

/// Returns an unused page in one of the heap's queues to its segment.
fn retire(heap: &Heap, zone_heap: &ZoneHeap, page: &Page) {
    fold_page_counts(heap, page);
    heap.forget_emptied(page);
    let bin = page.bin.get() as usize;
    zone_heap.queues[bin].remove(page);
    zone_heap.update_direct(bin);
    // `used == 0`: every block came back and was collected, so nothing is
    // in flight on `thread_free`.
    segment::page_free(page);
}

/// Adopts an abandoned page of this zone and bin that has a free block;
/// abandoned pages without one become this heap's full pages.
fn adopt_abandoned(heap: &Heap, zone: Zone, bin: usize) -> Option<&'static Page> {
    while let Some(page) = ABANDONED.pop(pool_list(zone, bin)) {
        // SAFETY: the pool hands over ownership of a valid page.
        let page = unsafe { &*page };
        page.owner.store(heap.owner_id(zone), Ordering::Relaxed);
        thread_free::set_state(&page.thread_free, State::Normal, true);
        if page_has_free_block(page) {
            return Some(page);
        }
        if heap.is_dead() {
            // A dead heap keeps no page (nobody would free into its full
            // list after the thread is gone): straight back to the pool.
            thread_free::set_state(&page.thread_free, State::Never, true);
            abandon(heap, zone, page);
            return None;
        }
        move_to_full(heap.zone(zone), page);
    }
    None
}

/// Takes a fresh page from a segment for `bin`. First returns a few entirely
/// free abandoned pages of any class to their segments, so pages of exited
/// threads do not pin memory forever.
fn fresh_page(heap: &Heap, zone: Zone, bin: usize) -> Option<&'static Page> {
    reclaim_abandoned(heap, 4);
    let (page, area, len, zeroed) = segment::page_alloc(zone, size_class::page_kind_of(bin))?;
    // SAFETY: page_alloc hands us an unused page record in a live segment.
    let page = unsafe { &*page.as_ptr() };
    page.init(bin, area, len, heap.owner_id(zone), zeroed);
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
        if reclaim(heap, page) {
            // SAFETY: we own the page and give it back.
            unsafe { ABANDONED.push(list, page as *const Page as *mut Page) };
        }
    }
}

/// Gives up an owned page that is in no queue and in the `Never` state:
/// back to its segment if no block is out, else into the pool.
fn abandon(heap: &Heap, zone: Zone, page: &Page) {
    heap.forget_emptied(page);
    collect(page);
    fold_page_counts(heap, page);
    if page.is_unused() {
        segment::page_free(page);
        return;
    }
    page.set_in_full(false);
    page.owner.store(0, Ordering::Relaxed);
    // SAFETY: we own the page and give it up; pages live in segment headers
    // that stay mapped while blocks are out.
    unsafe {
        ABANDONED.push(
            pool_list(zone, page.bin.get() as usize),
            page as *const Page as *mut Page,
        )
    };
}

/// After a dead thread (see `Heap::is_dead`) allocated from `page`, give the
/// page up again.
pub(crate) fn give_up_page(heap: &Heap, zone: Zone, page: &Page) {
    let _deferral = DeferGuard::new();
    let zone_heap = heap.zone(zone);
    let bin = page.bin.get() as usize;
    zone_heap.queues[bin].remove(page);
    zone_heap.update_direct(bin);
    thread_free::set_state(&page.thread_free, State::Never, true);
    abandon(heap, zone, page);
}

/// Gives up every page at thread exit. All pages go to `Never` first, which
/// waits out notifications under way; then no other thread can reach this
/// heap, and the delayed list can be emptied for the last time.
pub(crate) fn give_up_all(heap: &Heap) {
    for zone in PAGE_BACKED {
        let zone_heap = heap.zone(zone);
        let never = |page: &Page| thread_free::set_state(&page.thread_free, State::Never, true);
        zone_heap
            .queues
            .iter()
            .for_each(|queue| queue.for_each(never));
        zone_heap.full.for_each(never);
    }
    free_delayed(heap);
    for zone in PAGE_BACKED {
        let zone_heap = heap.zone(zone);
        for bin in 0..BIN_COUNT {
            while let Some(page) = zone_heap.queues[bin].pop_front() {
                abandon(heap, zone, page);
            }
        }
        while let Some(page) = zone_heap.full.pop_front() {
            abandon(heap, zone, page);
        }
    }
}

/// Returns the unused pages of the manual and pinned zones that `heap`
/// keeps (its rings of recently emptied pages, and a queue's only page) to
/// their segments, after taking in the blocks other threads freed into its
/// pages. Owner only; see `zonal::release_free_memory`. The GC zone's pages
/// are the collector's to return, and the stack zone's are its chunks.
pub(crate) fn release_unused_pages(heap: &Heap) {
    if !heap.is_active() {
        return;
    }
    // As for any page slow path (see `page_with_free_block`).
    let _deferral = DeferGuard::new();
    crate::free::carry_out_deferred_frees(heap);
    free_delayed(heap);
    for zone in [Zone::Manual, Zone::Pinned] {
        let zone_heap = heap.zone(zone);
        for queue in &zone_heap.queues {
            // `for_each` reads a page's successor before the call, so the
            // page may leave the queue.
            queue.for_each(|page| {
                collect(page);
                fold_page_counts(heap, page);
                if page.is_unused() {
                    retire(heap, zone_heap, page);
                }
            });
        }
    }
}

/// In a forked child, for the forking thread's heap: its pages take its new
/// owner id, and notifications that threads of the parent had under way
/// (they do not exist here) are ended, or the owner would wait for them
/// forever; the blocks they were handing over are lost to the child.
pub(crate) fn after_fork_in_child(heap: &Heap) {
    for zone in PAGE_BACKED {
        let retag = |page: &Page| {
            page.owner.store(heap.owner_id(zone), Ordering::Relaxed);
            thread_free::reset_after_fork(&page.thread_free);
        };
        let zone_heap = heap.zone(zone);
        zone_heap
            .queues
            .iter()
            .for_each(|queue| queue.for_each(retag));
        zone_heap.full.for_each(retag);
    }
}

/// Moves a page's pending frees onto its free list (`Page::collect`),
/// clearing the allocation bits of the blocks other threads freed. Owner
/// only.
fn collect(page: &Page) {
    let mut clearer = AllocBitClearer::new();
    page.collect(|block| clearer.clear(block));
    clearer.finish();
}

/// [`collect`] of the thread-free list only (`Page::collect_remote`).
fn collect_remote(page: &Page) {
    let mut clearer = AllocBitClearer::new();
    page.collect_remote(|block| clearer.clear(block));
    clearer.finish();
}

/// Clears the allocation bits of blocks collected from a thread-free list
/// one bitmap word at a time. Such a list holds runs of neighbouring blocks
/// (another thread freed them in the order they were allocated), and one
/// load and one store per word instead of per block made the producer of
/// producer/consumer, which collects every block its consumer frees, 5 to
/// 11 % faster (21 runs side by side, twice). A bit already clear, in the
/// word or among the clears pending on it, means the block was freed twice.
/// Owner only: nobody else writes the page's bitmap words meanwhile.
struct AllocBitClearer {
    /// The word being cleared (null before the first block).
    word: *const AtomicU64,
    /// Its value with the pending clears applied.
    bits: u64,
}

impl AllocBitClearer {
    fn new() -> Self {
        AllocBitClearer {
            word: ptr::null(),
            bits: 0,
        }
    }

    #[inline(always)]
    fn clear(&mut self, block: *mut Block) {
        let addr = block as usize;
        // SAFETY: blocks on a page's lists lie in a live segment.
        let seg = unsafe { Segment::at(addr & !segment::SEGMENT_MASK) };
        let (word, bit) = seg.alloc_bit(addr);
        if !ptr::eq(word, self.word) {
            self.finish();
            self.word = word;
            self.bits = word.load(Ordering::Relaxed);
        }
        if self.bits & bit == 0 {
            fault::report(Op::Free, Fault::DoubleFree, addr);
        }
        self.bits &= !bit;
    }

    /// Stores the pending clears.
    fn finish(&mut self) {
        // SAFETY: a non-null `word` is a bitmap word of the live segment of
        // the last block cleared.
        if let Some(word) = unsafe { self.word.as_ref() } {
            word.store(self.bits, Ordering::Relaxed);
        }
        self.word = ptr::null();
    }
}

#[cfg(test)]
mod tests {
    use crate::alloc::alloc;
    use crate::free::free_now as free;
    use crate::segment::{self, Segment};
    use crate::Zone;

    /// Held by the tests that watch the abandoned pool: reclamation (which
    /// `reclamation_reaches_every_free_abandoned_page` drives hard) takes
    /// abandoned pages of every class out of the pool for a moment, so an
    /// adoption running at the same time could miss its page.
    static ABANDONED_POOL_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn abandoned_pool_test() -> std::sync::MutexGuard<'static, ()> {
        ABANDONED_POOL_TESTS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn page_of(block: *mut u8) -> &'static crate::page::Page {
        let addr = block as usize;
        // SAFETY: the block is live, so its segment is.
        unsafe { Segment::at(addr & !segment::SEGMENT_MASK) }.page_of(addr)
    }

    #[test]
    fn a_full_page_goes_to_the_full_list_and_comes_back_on_free() {
        std::thread::spawn(|| {
            // 4 KiB blocks: 16 per small page.
            let size = 4096;
            let first = alloc(Zone::Pinned, size, 16);
            let page = page_of(first);
            let mut blocks = vec![first];
            while page.can_extend() || !page.free.get().is_null() {
                blocks.push(alloc(Zone::Pinned, size, 16));
            }
            assert_eq!(page.used(), page.reserved.get());
            // The next allocation needs another page; this one becomes full.
            let other = alloc(Zone::Pinned, size, 16);
            assert!(!core::ptr::eq(page_of(other), page));
            assert!(page.in_full());
            // A local free moves it back to its queue.
            // SAFETY: the block is live and ours.
            unsafe { free(blocks.pop().unwrap(), size) };
            assert!(!page.in_full());
            for b in blocks.into_iter().chain([other]) {
                // SAFETY: live blocks, freed once.
                unsafe { free(b, size) };
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_remote_free_into_a_full_page_reaches_its_owner() {
        let size = 4096;
        let (blocks_tx, blocks_rx) = std::sync::mpsc::channel::<Vec<usize>>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let owner = std::thread::spawn(move || {
            let first = alloc(Zone::Pinned, size, 16);
            let page = page_of(first);
            let mut blocks = vec![first as usize];
            while page.can_extend() || !page.free.get().is_null() {
                blocks.push(alloc(Zone::Pinned, size, 16) as usize);
            }
            let extra = alloc(Zone::Pinned, size, 16);
            assert!(page.in_full());
            blocks_tx.send(blocks).unwrap();
            done_rx.recv().unwrap();
            // The slow path of the next allocation frees the delayed block,
            // which moves the page back out of the full list.
            let again = alloc(Zone::Pinned, 2 * size, 16);
            assert!(!page.in_full(), "the owner was not notified");
            // SAFETY: live blocks, freed once.
            unsafe {
                free(again, 2 * size);
                free(extra, size);
            }
        });
        let blocks = blocks_rx.recv().unwrap();
        for b in blocks {
            // SAFETY: live blocks handed over by their owner, freed once.
            unsafe { free(b as *mut u8, size) };
        }
        done_tx.send(()).unwrap();
        owner.join().unwrap();
    }

    #[test]
    fn an_exiting_thread_gives_its_pages_to_the_next_one() {
        let _pool = abandoned_pool_test();
        let size = 1008;
        let kept = std::thread::spawn(move || alloc(Zone::Pinned, size, 16) as usize)
            .join()
            .unwrap();
        let page = page_of(kept as *mut u8);
        assert_eq!(
            page.owner.load(crate::sync::Ordering::Relaxed),
            0,
            "abandoned at exit"
        );
        let page_addr = page as *const crate::page::Page as usize;
        let adopter = std::thread::spawn(move || {
            let b = alloc(Zone::Pinned, size, 16);
            let adopted = page_of(b) as *const crate::page::Page as usize == page_addr;
            // SAFETY: live block, freed once.
            unsafe { free(b, size) };
            adopted
        });
        assert!(
            adopter.join().unwrap(),
            "the abandoned page was not adopted"
        );
        // SAFETY: live block, freed once.
        unsafe { free(kept as *mut u8, size) };
    }

    #[test]
    fn reclamation_reaches_every_free_abandoned_page() {
        let _pool = abandoned_pool_test();
        use crate::heap::{pool_list, ABANDONED};
        use crate::size_class::bin_of;
        // Pinned-zone pages of 2 KiB blocks: no other test uses this pool
        // list. (Not the GC zone: other threads' frees of GC blocks are
        // left to the collector.)
        let size = 2000;
        let list = pool_list(Zone::Pinned, bin_of(size));
        let blocks = std::thread::spawn(move || {
            (0..20 * 32)
                .map(|_| alloc(Zone::Pinned, size, 16) as usize)
                .collect::<Vec<_>>()
        })
        .join()
        .unwrap();
        assert!(
            ABANDONED.list_len(list) >= 20,
            "the exiting thread abandoned its pages"
        );
        // Everything but one block is freed: one page stays in use.
        for &b in &blocks[1..] {
            // SAFETY: live blocks, freed once.
            unsafe { free(b as *mut u8, size) };
        }
        // Fresh pages of another class each look at a few abandoned pages.
        let others: Vec<usize> = (0..40 * 8)
            .map(|_| alloc(Zone::Gc, 8000, 16) as usize)
            .collect();
        assert_eq!(
            ABANDONED.list_len(list),
            1,
            "free abandoned pages were left in the pool"
        );
        for b in others {
            // SAFETY: live blocks, freed once.
            unsafe { free(b as *mut u8, 8000) };
        }
        // SAFETY: the last live block, freed once.
        unsafe { free(blocks[0] as *mut u8, size) };
    }
}
