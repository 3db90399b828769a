//! Pages: runs of equal-sized blocks inside a segment, and the three free
//! lists that make the fast paths cheap (after mimalloc's free-list sharding).
//!
//! * `free` — blocks ready to hand out. Only the owner pops it.
//! * `local_free` — blocks the owner freed. Only the owner pushes it; it is
//!   moved to `free` when `free` runs dry, which keeps the allocation fast
//!   path a single pop and lets the slow path notice "this page has been
//!   freed into" at a bounded rate.
//! * `thread_free` — blocks other threads freed (see [`thread_free`]), and
//!   the state that says whether the owner wants to hear about them.
//!
//! Blocks are carved lazily (`capacity` of `reserved` so far), a few KiB at a
//! time, so a page that is only partly used is only partly resident.
//!
//! Ownership invariant: the *owner* (the heap whose id is in `owner`) is
//! the only thread that reads or writes the `Cell` fields and the page's
//! words of the segment's allocation bitmap. `owner == 0` means nobody owns
//! the page: it is in the abandoned pool, and every free to it goes through
//! `thread_free`. The segment lock protects `in_use`.
//!
//! Allocation-bitmap invariant: a block's bit (by 16-byte granule of its
//! start) is set exactly while the block is handed out to the program or
//! sits in `thread_free` waiting for collection. A free whose bit is clear
//! is a double free or not a block start, and is reported.

pub(crate) mod thread_free;

use crate::size_class::{self, GRANULE};
use core::cell::Cell;
use core::ptr;
use thread_free::Block;

use crate::sync::{AtomicUsize, Ordering};

/// Bytes of fresh blocks carved per extension of a page.
///
/// Carving little at a time keeps a page's untouched tail out of memory,
/// but the blocks carved so far are all a page cycles through while the
/// program frees what it allocates: its free list then runs dry, and the
/// slow path runs, once per that many blocks (every 4 allocations of 1 KiB
/// blocks at 4 KiB). 16 KiB made alloc/free churn of 16 B–1 KiB blocks 16 %
/// faster and batches of 100,000 such blocks 8 % faster than 4 KiB (64 KiB
/// gained nothing more).
const EXTEND_BYTES: usize = 16 * 1024;

/// [`Page::used_and_allocs`] holds the blocks out in its low 32 bits and
/// the owner's allocations since the last [`Page::take_counts`] above them.
const ALLOCS_SHIFT: u32 = 32;
/// What one allocation adds to [`Page::used_and_allocs`].
const ONE_ALLOC: u64 = (1 << ALLOCS_SHIFT) | 1;
/// In [`Page::free_flags`]: the page is in its owner's full list.
const IN_FULL: u8 = 1;
/// In [`Page::free_flags`]: once unused, the page leaves its queue (it is
/// not a small or medium page alone in its queue, which simply stays).
const LEAVES_WHEN_UNUSED: u8 = 2;

/// Page metadata. All-zero bytes are a valid "unused" page, which is what a
/// fresh or decommitted segment header holds.
///
/// Aligned to two cache lines: a record never shares a line with its
/// neighbour's (whose `thread_free` other threads CAS while this page's
/// owner works on its own fields), and the free fast path finds it from a
/// page index with one shift.
#[repr(C, align(128))]
pub(crate) struct Page {
    pub(crate) free: Cell<*mut Block>,
    /// Blocks out (handed out, or freed by another thread and not yet
    /// collected) in the low 32 bits; above them, the allocations made
    /// from this page since its counts were last taken (see
    /// [`Page::take_counts`]). Read through [`Page::used`].
    used_and_allocs: Cell<u64>,
    pub(crate) local_free: Cell<*mut Block>,
    /// [`Page::used`] when the counts were last taken.
    used_at_last_count: Cell<u32>,
    pub(crate) capacity: Cell<u32>,
    pub(crate) block_size: Cell<usize>,
    pub(crate) reserved: Cell<u32>,
    pub(crate) bin: Cell<u8>,
    /// Every block now in `free` reads as zero past its link word.
    pub(crate) free_is_zero: Cell<bool>,
    /// Handed out by its segment (segment lock).
    pub(crate) in_use: Cell<bool>,
    /// [`IN_FULL`] and [`LEAVES_WHEN_UNUSED`]: what a local free must
    /// check after it, in one byte (see [`Page::needs_slow_path_after_free`]).
    free_flags: Cell<u8>,
    /// First byte of the block area.
    pub(crate) area: Cell<*mut u8>,
    /// Links in a heap's page queue or in the abandoned pool.
    pub(crate) prev: Cell<*mut Page>,
    pub(crate) next: Cell<*mut Page>,
    /// Id of the owning heap, 0 when none.
    pub(crate) owner: AtomicUsize,
    pub(crate) thread_free: AtomicUsize,
}

#[cfg(not(loom))]
/// `Page` is shared between threads through raw pointers under the
/// ownership invariant in the module docs.
#[cfg(not(loom))]
pub(crate) struct SharedPage(pub(crate) Page);
#[cfg(not(loom))]
// SAFETY: cross-thread access to the `Cell` fields is excluded by the
// ownership invariant (only the owner touches them; ownership moves through
// Release/Acquire operations on the pool lock or `thread_free`).
unsafe impl Sync for SharedPage {}

/// The page every empty direct-table slot points at: it never has a free
/// block, so the allocation fast path needs no null check.
pub(crate) static EMPTY_PAGE: SharedPage = SharedPage(Page::unused());

#[cfg(not(loom))]
impl Page {
    /// A page record in the unused state (what zeroed memory holds).
    pub(crate) const fn unused() -> Page {
        Page {
            free: Cell::new(ptr::null_mut()),
            used_and_allocs: Cell::new(0),
            local_free: Cell::new(ptr::null_mut()),
            used_at_last_count: Cell::new(0),
            capacity: Cell::new(0),
            block_size: Cell::new(0),
            reserved: Cell::new(0),
            bin: Cell::new(0),
            free_is_zero: Cell::new(false),
            in_use: Cell::new(false),
            free_flags: Cell::new(0),
            area: Cell::new(ptr::null_mut()),
            prev: Cell::new(ptr::null_mut()),
            next: Cell::new(ptr::null_mut()),
            owner: AtomicUsize::new(0),
            thread_free: AtomicUsize::new(0),
        }
    }

    /// The page that the direct table's empty slots point at.
    #[inline(always)]
    pub(crate) fn empty() -> *mut Page {
        &EMPTY_PAGE.0 as *const Page as *mut Page
    }
}

impl Page {
    /// Prepares a page fresh from its segment for blocks of `bin`, owned by
    /// `owner`. `area_len` bytes start at `area`; `zeroed` says whether they
    /// read as zero.
    pub(crate) fn init(
        &self,
        bin: usize,
        area: *mut u8,
        area_len: usize,
        owner: usize,
        zeroed: bool,
    ) {
        let block_size = size_class::block_size_of(bin);
        self.free.set(ptr::null_mut());
        self.local_free.set(ptr::null_mut());
        self.used_and_allocs.set(0);
        self.used_at_last_count.set(0);
        self.capacity.set(0);
        self.block_size.set(block_size);
        self.reserved.set((area_len / block_size) as u32);
        self.bin.set(bin as u8);
        self.free_is_zero.set(zeroed);
        self.free_flags.set(0);
        self.area.set(area);
        self.prev.set(ptr::null_mut());
        self.next.set(ptr::null_mut());
        self.thread_free.store(0, Ordering::Relaxed);
        self.owner.store(owner, Ordering::Relaxed);
    }

    /// Blocks out: handed out, or freed by another thread and not yet
    /// collected.
    #[inline(always)]
    pub(crate) fn used(&self) -> u32 {
        self.used_and_allocs.get() as u32
    }

    /// [`Page::used`] read by a thread that may not be the owner (see
    /// `inspect`): a value the owner stored, perhaps stale.
    pub(crate) fn used_racy(&self) -> u32 {
        // SAFETY: the record lives in a mapped segment header; a volatile
        // read of a word-sized field yields a value the owner stored, which
        // the caller treats as a hint.
        unsafe { core::ptr::read_volatile(self.used_and_allocs.as_ptr()) as u32 }
    }

    /// Sets [`Page::used`] for a page whose counts are not taken (a huge
    /// block's page, or a GC page the collector sweeps).
    pub(crate) fn set_used(&self, used: u32) {
        let allocs = self.used_and_allocs.get() & !u64::from(u32::MAX);
        self.used_and_allocs.set(allocs | u64::from(used));
        self.used_at_last_count.set(used);
    }

    /// Notes a block handed out from `free`. The allocation is counted in
    /// the same add that raises `used`: per-thread counters on the fast
    /// paths cost a miss-bound alloc/free loop (churn-batch-100k) 6 % of its
    /// time, their stores queueing behind the program's stores to blocks
    /// that miss the cache.
    #[inline(always)]
    pub(crate) fn note_alloc(&self) {
        self.used_and_allocs
            .set(self.used_and_allocs.get() + ONE_ALLOC);
    }

    /// The allocations from and frees into this page since the last call,
    /// as (allocations, frees); the owner adds them to its heap's
    /// statistics on the page's slow paths. Frees are not counted as they
    /// happen: they are what is missing from `used` given the allocations,
    /// so the blocks other threads freed count once the owner has collected
    /// them. Owner only.
    ///
    /// Between two calls, the allocations are at most what the free list
    /// held at the first (the free list is refilled only on the slow path
    /// that calls this), so they fit their 32 bits.
    pub(crate) fn take_counts(&self) -> (u32, u32) {
        let packed = self.used_and_allocs.get();
        let allocs = (packed >> ALLOCS_SHIFT) as u32;
        let used = packed as u32;
        let frees = self
            .used_at_last_count
            .get()
            .wrapping_add(allocs)
            .wrapping_sub(used);
        self.used_and_allocs.set(u64::from(used));
        self.used_at_last_count.set(used);
        (allocs, frees)
    }

    /// Pushes a block the owner freed onto `local_free`; returns the blocks
    /// still in use.
    #[inline(always)]
    pub(crate) fn push_local(&self, block: *mut Block) -> u32 {
        // SAFETY: the caller (the owner) gave up the live block, so its
        // first word may become the link.
        unsafe { (*block).next = self.local_free.get() };
        self.local_free.set(block);
        let packed = self.used_and_allocs.get() - 1;
        self.used_and_allocs.set(packed);
        packed as u32
    }

    /// Whether the page is in its owner's full list rather than a size-class
    /// queue.
    #[inline(always)]
    pub(crate) fn in_full(&self) -> bool {
        self.free_flags.get() & IN_FULL != 0
    }

    pub(crate) fn set_in_full(&self, in_full: bool) {
        let flags = self.free_flags.get() & !IN_FULL;
        self.free_flags
            .set(flags | if in_full { IN_FULL } else { 0 });
    }

    /// Whether a local free that leaves the page unused must run the slow
    /// path ([`LEAVES_WHEN_UNUSED`]).
    #[inline(always)]
    pub(crate) fn leaves_when_unused(&self) -> bool {
        self.free_flags.get() & LEAVES_WHEN_UNUSED != 0
    }

    /// Recomputes [`LEAVES_WHEN_UNUSED`] from the page's links and block
    /// size; called whenever a queue links or unlinks it or a neighbour.
    pub(crate) fn update_leaves_when_unused(&self) {
        let stays = self.prev.get().is_null()
            && self.next.get().is_null()
            && self.block_size.get() <= size_class::MEDIUM_MAX;
        let flags = self.free_flags.get() & !LEAVES_WHEN_UNUSED;
        self.free_flags
            .set(flags | if stays { 0 } else { LEAVES_WHEN_UNUSED });
    }

    /// Whether a local free that left `used` blocks must run the slow path
    /// (`heap::after_local_free`): the page is in the full list (it goes
    /// back to its queue), or it is now unused and leaves it (see
    /// [`Page::leaves_when_unused`]); a small or medium page alone in its
    /// queue simply stays, at no call. Computed without a branch on `used`,
    /// which a batch of queued frees makes hard to predict (churn-pairs ran
    /// 25 % faster without it).
    #[inline(always)]
    pub(crate) fn needs_slow_path_after_free(&self, used: u32) -> bool {
        let flags = self.free_flags.get();
        (flags & IN_FULL != 0) | ((used == 0) & (flags & LEAVES_WHEN_UNUSED != 0))
    }

    /// Whether all blocks are back (the page can return to its segment).
    #[inline]
    pub(crate) fn is_unused(&self) -> bool {
        self.used() == 0
    }

    /// Whether more blocks can still be carved out of the page.
    #[inline]
    pub(crate) fn can_extend(&self) -> bool {
        self.capacity.get() < self.reserved.get()
    }

    /// Carves up to [`EXTEND_BYTES`] of new blocks onto the (empty) free
    /// list. Owner only.
    pub(crate) fn extend(&self) {
        debug_assert!(self.free.get().is_null() && self.can_extend());
        let size = self.block_size.get();
        let count = (EXTEND_BYTES / size)
            .max(1)
            .min((self.reserved.get() - self.capacity.get()) as usize);
        // SAFETY: blocks capacity..capacity+count lie inside the block area
        // (count is capped by `reserved`), are not handed out, and are owned
        // by this page's owner, the caller.
        unsafe {
            let first = self.area.get().add(self.capacity.get() as usize * size);
            let mut block = first;
            for _ in 1..count {
                let next = block.add(size);
                (*block.cast::<Block>()).next = next.cast();
                block = next;
            }
            (*block.cast::<Block>()).next = ptr::null_mut();
            self.free.set(first.cast());
        }
        self.capacity.set(self.capacity.get() + count as u32);
    }

    /// Moves `local_free` and the thread-free list onto `free`, and takes
    /// the blocks other threads freed off `used`. Owner only.
    ///
    /// `on_remote_block` is called for each block taken from the thread-free list
    /// (to clear its allocation bit) before it is linked in.
    pub(crate) fn collect(&self, on_remote_block: impl FnMut(*mut Block)) {
        let local = self.local_free.replace(ptr::null_mut());
        if !local.is_null() {
            if self.free.get().is_null() {
                // The usual case (called when `free` ran dry): no walk.
                self.free.set(local);
                self.free_is_zero.set(false);
            } else {
                self.prepend(local, list_tail(local));
            }
        }
        self.collect_remote(on_remote_block);
    }

    /// The thread-free half of [`Page::collect`]: moves the blocks other
    /// threads freed onto `free` and takes them off `used`. Owner only.
    pub(crate) fn collect_remote(&self, mut on_remote_block: impl FnMut(*mut Block)) {
        let remote = thread_free::take_all(&self.thread_free);
        if !remote.is_null() {
            let mut tail = remote;
            let mut count = 0u32;
            loop {
                on_remote_block(tail);
                count += 1;
                // SAFETY: every block on the taken list is a free block of
                // this page, now owned by us (take_all's Acquire makes the
                // pushers' `next` writes visible).
                let next = unsafe { (*tail).next };
                if next.is_null() {
                    break;
                }
                tail = next;
            }
            // Their frees count when the owner next takes the counts.
            self.used_and_allocs
                .set(self.used_and_allocs.get() - u64::from(count));
            self.prepend(remote, tail);
        }
    }

    /// Links the list `first..=last` in front of `free`; freed blocks are
    /// not zero, so the page loses `free_is_zero`.
    fn prepend(&self, first: *mut Block, last: *mut Block) {
        // SAFETY: `last` is a free block owned by the caller (the owner).
        unsafe { (*last).next = self.free.get() };
        self.free.set(first);
        self.free_is_zero.set(false);
    }

    /// Whether `addr` is the start of a block of this page (used to classify
    /// faults, so it may divide).
    pub(crate) fn is_block_start(&self, addr: usize) -> bool {
        let area = self.area.get() as usize;
        let size = self.block_size.get();
        size != 0
            && addr >= area
            && addr < area + self.reserved.get() as usize * size
            && (addr - area).is_multiple_of(size)
    }
}

fn list_tail(mut block: *mut Block) -> *mut Block {
    // SAFETY: the caller passes a well-formed, null-terminated list of free
    // blocks that it owns.
    unsafe {
        while !(*block).next.is_null() {
            block = (*block).next;
        }
    }
    block
}

// The thread-free word keeps its state in the two low bits of a block address.
const _: () = assert!(GRANULE >= 4);

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A 64 KiB, 64 KiB-aligned buffer standing in for a page's block area.
    #[repr(C, align(65536))]
    struct Area([u8; 65536]);

    fn page_over(area: &mut Area, bin: usize) -> Page {
        let page = Page::unused();
        page.init(bin, area.0.as_mut_ptr(), area.0.len(), 1, true);
        page
    }

    fn pop(page: &Page) -> *mut Block {
        let block = page.free.get();
        assert!(!block.is_null());
        // SAFETY: the block heads the page's free list.
        page.free.set(unsafe { (*block).next });
        page.note_alloc();
        block
    }

    #[test]
    fn extend_carves_a_few_kib_at_a_time_in_address_order() {
        let mut area = Box::new(Area([0; 65536]));
        let bin = crate::size_class::bin_of(48);
        let page = page_over(&mut area, bin);
        assert_eq!(page.reserved.get() as usize, 65536 / 48);
        page.extend();
        assert_eq!(page.capacity.get() as usize, EXTEND_BYTES / 48);
        let first = pop(&page) as usize;
        let second = pop(&page) as usize;
        assert_eq!(first, area.0.as_ptr() as usize);
        assert_eq!(second - first, 48);
        assert!(page.is_block_start(second));
        assert!(!page.is_block_start(second + 16));
    }

    #[test]
    fn collect_moves_local_and_remote_frees_and_counts_remote_ones() {
        let mut area = Box::new(Area([0; 65536]));
        let page = page_over(&mut area, crate::size_class::bin_of(64));
        page.extend();
        let blocks: Vec<*mut Block> = (0..6).map(|_| pop(&page)).collect();
        assert_eq!(page.used(), 6);
        // Drain what is left so that `free` is empty, as in the slow path.
        while !page.free.get().is_null() {
            pop(&page);
        }
        let used = page.used();
        assert_eq!(page.push_local(blocks[0]), used - 1);
        for &b in &blocks[1..4] {
            // SAFETY: the blocks are ours and free.
            assert_eq!(
                unsafe { thread_free::push(&page.thread_free, b) },
                thread_free::Pushed::Listed
            );
        }
        let mut seen = Vec::new();
        page.collect(|b| seen.push(b));
        seen.sort();
        assert_eq!(seen, blocks[1..4].to_vec());
        assert_eq!(page.used(), used - 4);
        assert!(!page.free_is_zero.get(), "freed blocks are not zero");
        let mut on_free = 0;
        let mut b = page.free.get();
        while !b.is_null() {
            on_free += 1;
            // SAFETY: walking the page's own free list.
            b = unsafe { (*b).next };
        }
        assert_eq!(on_free, 4);
    }

    #[test]
    fn counts_are_derived_from_allocations_and_used() {
        let mut area = Box::new(Area([0; 65536]));
        let page = page_over(&mut area, crate::size_class::bin_of(64));
        page.extend();
        let blocks: Vec<*mut Block> = (0..5).map(|_| pop(&page)).collect();
        page.push_local(blocks[0]);
        page.push_local(blocks[1]);
        assert_eq!(page.take_counts(), (5, 2));
        assert_eq!(page.take_counts(), (0, 0), "taken counts start again");
        let more: Vec<*mut Block> = (0..3).map(|_| pop(&page)).collect();
        // Frees by other threads count once the owner has collected them.
        for &b in &[blocks[2], more[0]] {
            // SAFETY: the blocks are ours and free.
            unsafe { thread_free::push(&page.thread_free, b) };
        }
        assert_eq!(page.take_counts(), (3, 0));
        page.collect(|_| {});
        page.push_local(more[1]);
        assert_eq!(page.take_counts(), (0, 3));
        assert_eq!(page.used(), 3);
    }

    #[test]
    fn a_full_page_asks_for_one_notification() {
        let mut area = Box::new(Area([0; 65536]));
        let page = page_over(&mut area, crate::size_class::bin_of(32));
        page.extend();
        let (a, b) = (pop(&page), pop(&page));
        thread_free::set_state(&page.thread_free, thread_free::State::UseDelayed, false);
        // SAFETY: the blocks are ours and free.
        unsafe {
            assert_eq!(
                thread_free::push(&page.thread_free, a),
                thread_free::Pushed::MustNotify
            );
            assert_eq!(
                thread_free::state(&page.thread_free),
                thread_free::State::Delaying
            );
            assert_eq!(
                thread_free::push(&page.thread_free, b),
                thread_free::Pushed::Listed
            );
        }
        thread_free::end_notify(&page.thread_free);
        assert_eq!(
            thread_free::state(&page.thread_free),
            thread_free::State::Normal
        );
        assert_eq!(
            thread_free::take_all(&page.thread_free),
            b,
            "only the linked block is on the list"
        );
        thread_free::set_state(&page.thread_free, thread_free::State::Never, true);
        thread_free::set_state(&page.thread_free, thread_free::State::Normal, false);
        assert_eq!(
            thread_free::state(&page.thread_free),
            thread_free::State::Never,
            "Never is kept"
        );
    }
}
