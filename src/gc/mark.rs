//! Marking: conservative recognition of pointers into the GC zone, and the
//! explicit mark stack that makes marking iterative.
//!
//! Any aligned word of a scanned range is a *candidate*. A candidate names
//! a GC object if it lies in a GC-zone page and in (or one past the end of)
//! a block whose allocation bit is set. Interior pointers count, and so
//! does a pointer one past the end of an object (a Rust slice's end pointer
//! may be all that keeps it): every GC allocation is one byte longer than
//! asked (see `gc::alloc`), so that pointer is still inside its block
//! rather than at the start of the next one. (Counting block boundaries for
//! both blocks instead would chain every object to its neighbour.) A newly
//! marked object that may hold pointers is
//! pushed on the mark stack as a range to scan; pointer-free ("atomic")
//! objects are only marked.
//!
//! The mark stack is a [`MappedVec`] with a capacity limit
//! (`ZONAL_GC_MARK_STACK`). When a push does not fit, the object stays
//! marked but unscanned and `overflowed` is set; after the stack drains,
//! [`Marker::finish`] rescans every marked scannable object of the heap
//! (pushing what it finds unmarked) until a pass ends without overflow. The
//! result is the same set of marks, whatever the limit.
//!
//! Invariants the unsafe code relies on: marking runs with the world
//! stopped and the pool lock held, so every segment it reaches stays mapped
//! and every GC page's fields are consistent (GC-zone operations defer
//! suspension); the candidate bounds `[gc_low, gc_high)` cover every GC
//! segment that existed when the world stopped.

use super::table::MappedVec;
use crate::segment::{self, map, Segment, SEGMENT_MASK, SEGMENT_SIZE};
use crate::size_class::GRANULE;
use crate::sync::Ordering;
use crate::Zone;

const WORD: usize = core::mem::size_of::<usize>();

/// The collector's marking state for one collection.
pub(crate) struct Marker {
    stack: MappedVec<(usize, usize)>,
    overflowed: bool,
    gc_low: usize,
    gc_high: usize,
    /// Bytes of the objects marked so far (block sizes).
    pub(crate) marked_bytes: usize,
    /// Bytes of scannable objects marked so far.
    pub(crate) marked_scannable_bytes: usize,
    /// Bytes of roots scanned.
    pub(crate) root_bytes: usize,
}

impl Marker {
    pub(crate) const fn new() -> Self {
        Marker {
            stack: MappedVec::new(1 << 22),
            overflowed: false,
            gc_low: usize::MAX,
            gc_high: 0,
            marked_bytes: 0,
            marked_scannable_bytes: 0,
            root_bytes: 0,
        }
    }

    /// Prepares for a collection: clears the mark bitmaps of every GC
    /// segment and records the bounds of the GC zone.
    pub(crate) fn begin(&mut self, mark_stack_limit: usize) {
        self.stack.set_capacity(mark_stack_limit);
        self.overflowed = false;
        self.marked_bytes = 0;
        self.marked_scannable_bytes = 0;
        self.root_bytes = 0;
        self.gc_low = usize::MAX;
        self.gc_high = 0;
        segment::for_each_segment(|seg| {
            if seg.zone != Zone::Gc {
                return;
            }
            self.gc_low = self.gc_low.min(seg.base());
            self.gc_high = self.gc_high.max(seg.base() + seg.mapping_size);
            clear_marks(seg);
        });
    }

    /// Treats every aligned word of `[start, end)` as a candidate pointer.
    ///
    /// # Safety
    /// The range must be readable for the whole call.
    pub(crate) unsafe fn scan_root(&mut self, start: usize, end: usize) {
        if end > start {
            self.root_bytes += end - start;
        }
        // SAFETY: forwarded contract.
        unsafe { self.scan_range(start, end) };
        self.drain();
    }

    /// # Safety
    /// As for [`Marker::scan_root`].
    #[inline]
    unsafe fn scan_range(&mut self, start: usize, end: usize) {
        let mut word = (start + WORD - 1) & !(WORD - 1);
        while word + WORD <= end {
            // SAFETY: the word lies in the caller's readable range. Volatile,
            // because the memory may be another thread's stack or a block
            // being written: we want whatever bits are there.
            let candidate = unsafe { core::ptr::read_volatile(word as *const usize) };
            if candidate >= self.gc_low && candidate <= self.gc_high {
                self.consider(candidate);
            }
            word += WORD;
        }
    }

    /// Marks the object `candidate` points into, if any.
    pub(crate) fn consider(&mut self, candidate: usize) {
        if candidate < self.gc_low || candidate > self.gc_high {
            return;
        }
        match map::entry(map::map(), candidate) {
            map::NONE => {}
            map::SEGMENT => self.consider_in_segment(candidate),
            _ => self.consider_in_huge(candidate),
        }
    }

    fn consider_in_segment(&mut self, candidate: usize) {
        // SAFETY: the map says a segment starts at this aligned address; it
        // stays mapped during marking (module docs).
        let seg = unsafe { Segment::at(candidate & !SEGMENT_MASK) };
        if seg.zone != Zone::Gc {
            return;
        }
        let page = seg.page_of(candidate);
        let block_size = page.block_size.get();
        let area = page.area.get() as usize;
        if !page.in_use.get() || block_size == 0 || candidate < area {
            return;
        }
        let offset = candidate - area;
        // Both fit in 32 bits (a page lies within its 4 MiB segment), and a
        // 32-bit division is several times cheaper than a 64-bit one; a
        // shift is cheaper still, for the power-of-two sizes.
        let index = if block_size.is_power_of_two() {
            offset >> block_size.trailing_zeros()
        } else {
            (offset as u32 / block_size as u32) as usize
        };
        let blocks = page.capacity.get() as usize;
        if index < blocks {
            self.mark_block(seg, area + index * block_size, block_size);
        }
    }

    fn consider_in_huge(&mut self, candidate: usize) {
        let Some(map::Found::Huge(base)) = map::lookup(map::map(), candidate) else {
            return;
        };
        // SAFETY: the map says a huge mapping starts at `base`; it stays
        // mapped during marking.
        let seg = unsafe { Segment::at(base) };
        let page = &seg.pages[0];
        let area = page.area.get() as usize;
        let size = page.block_size.get();
        if seg.zone != Zone::Gc || page.used() != 1 {
            return;
        }
        if candidate >= area && candidate <= area + size {
            self.mark_object(seg, area, size);
        }
    }

    /// Marks the block at `start` if it is allocated.
    #[inline]
    fn mark_block(&mut self, seg: &Segment, start: usize, size: usize) {
        let (alloc_word, alloc_bit) = seg.alloc_bit(start);
        if alloc_word.load(Ordering::Relaxed) & alloc_bit != 0 {
            self.mark_object(seg, start, size);
        }
    }

    /// Marks the live object at `start` (a segment block or a huge block)
    /// and queues its contents for scanning, unless it is marked already
    /// or holds no pointers.
    #[inline]
    fn mark_object(&mut self, seg: &Segment, start: usize, size: usize) {
        let (mark_word, mark_bit) = seg.mark_bit(start);
        let marks = mark_word.load(Ordering::Relaxed);
        if marks & mark_bit != 0 {
            return;
        }
        mark_word.store(marks | mark_bit, Ordering::Relaxed);
        self.marked_bytes += size;
        let (no_scan_word, no_scan_bit) = seg.no_scan_bit(start);
        if no_scan_word.load(Ordering::Relaxed) & no_scan_bit == 0 {
            self.marked_scannable_bytes += size;
            self.push(start, start + size);
        }
    }

    #[inline]
    fn push(&mut self, start: usize, end: usize) {
        if !self.stack.push((start, end)) {
            self.overflowed = true;
        }
    }

    /// Scans everything on the mark stack, and what that marks, until the
    /// stack is empty.
    ///
    /// An object in the cache line of the one scanned last is scanned at
    /// once: it is in the cache already. Any other goes
    /// through a small FIFO and is prefetched as it enters it, so that its
    /// memory is on its way while [`PREFETCH_DISTANCE`] others are scanned;
    /// scanning it at once would wait for the miss (a structure built top
    /// down, or mutated since, is traced in an order unlike its layout).
    pub(crate) fn drain(&mut self) {
        let mut fifo = [(0usize, 0usize); PREFETCH_DISTANCE];
        let (mut head, mut len) = (0usize, 0usize);
        let mut last = 0usize;
        loop {
            let range = match self.stack.pop() {
                Some(range) if range.0.abs_diff(last) < NEAR => range,
                Some(range) => {
                    prefetch(range.0);
                    fifo[(head + len) % PREFETCH_DISTANCE] = range;
                    len += 1;
                    if len < PREFETCH_DISTANCE {
                        continue;
                    }
                    let oldest = fifo[head];
                    head = (head + 1) % PREFETCH_DISTANCE;
                    len -= 1;
                    oldest
                }
                None if len > 0 => {
                    let oldest = fifo[head];
                    head = (head + 1) % PREFETCH_DISTANCE;
                    len -= 1;
                    oldest
                }
                None => return,
            };
            last = range.0;
            // SAFETY: pushed ranges are marked, live GC blocks, mapped for
            // the whole collection.
            unsafe { self.scan_range(range.0, range.1) };
        }
    }

    /// Marks from the *contents* of the object at `start` (not the object
    /// itself), for finalization ordering. Returns whether the object ended
    /// up marked (it is reachable from itself).
    pub(crate) fn mark_from_contents(&mut self, start: usize) -> bool {
        let Some((seg, size)) = object_at(start) else {
            return false;
        };
        let (no_scan_word, no_scan_bit) = seg.no_scan_bit(start);
        if no_scan_word.load(Ordering::Relaxed) & no_scan_bit == 0 {
            self.push(start, start + size);
            self.drain();
            self.finish();
        }
        is_marked(start)
    }

    /// Drains the stack and, after an overflow, rescans marked objects until
    /// nothing is missed.
    pub(crate) fn finish(&mut self) {
        self.drain();
        while self.overflowed {
            self.overflowed = false;
            segment::for_each_segment(|seg| {
                if seg.zone == Zone::Gc {
                    for_each_marked_object(seg, |start, size, scannable| {
                        if scannable {
                            // SAFETY: a marked live GC block, mapped while
                            // marking.
                            unsafe { self.scan_range(start, start + size) };
                            self.drain();
                        }
                    });
                }
            });
        }
        self.stack.clear_and_release();
    }
}

/// Objects in flight between the mark stack and their scan (see
/// [`Marker::drain`]).
const PREFETCH_DISTANCE: usize = 8;
/// Objects closer than this to the last one scanned skip the FIFO. (Measured
/// with 64, 256 and 4096 bytes and without the FIFO: one cache line kept
/// binary-trees' marking as fast as without prefetching and cut GCBench's
/// longest pause from 26 to 6 ms; wider windows gave back most of that.)
const NEAR: usize = 64;

/// Starts loading the cache line at `address`.
#[inline(always)]
fn prefetch(address: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch has no effect on program state and never faults.
    unsafe {
        core::arch::x86_64::_mm_prefetch(address as *const i8, core::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Clears the marks of a GC segment (only the words its pages use).
fn clear_marks(seg: &Segment) {
    if seg.is_huge() {
        let (word, _) = seg.mark_bit(seg.pages[0].area.get() as usize);
        word.store(0, Ordering::Relaxed);
        return;
    }
    for page in seg.page_records() {
        if page.in_use.get() {
            for word in bitmap_words(seg, page) {
                seg.mark_bitmap[word].store(0, Ordering::Relaxed);
            }
        }
    }
}

/// The bitmap word indices that cover a page's block area (pages are 64 KiB
/// aligned, so no word covers two pages).
pub(crate) fn bitmap_words(seg: &Segment, page: &crate::page::Page) -> core::ops::Range<usize> {
    let start = page.area.get() as usize - seg.base();
    let end = start + page.capacity.get() as usize * page.block_size.get();
    let first = start / GRANULE / 64;
    let last = end.min(SEGMENT_SIZE).div_ceil(GRANULE * 64);
    first..last
}

/// The segment and block size of the live GC block that starts at `start`.
pub(crate) fn object_at(start: usize) -> Option<(&'static Segment, usize)> {
    match map::lookup(map::map(), start)? {
        map::Found::Segment(base) => {
            // SAFETY: the map says a segment starts at `base`.
            let seg = unsafe { Segment::at(base) };
            let page = seg.page_of(start);
            let (word, bit) = seg.alloc_bit(start);
            (seg.zone == Zone::Gc && word.load(Ordering::Relaxed) & bit != 0)
                .then(|| (seg, page.block_size.get()))
        }
        map::Found::Huge(base) => {
            // SAFETY: as above.
            let seg = unsafe { Segment::at(base) };
            let page = &seg.pages[0];
            (seg.zone == Zone::Gc && page.area.get() as usize == start && page.used() == 1)
                .then(|| (seg, page.block_size.get()))
        }
    }
}

/// Whether the GC block starting at `start` is marked.
pub(crate) fn is_marked(start: usize) -> bool {
    let Some((seg, _)) = object_at(start) else {
        return false;
    };
    let (word, bit) = seg.mark_bit(start);
    word.load(Ordering::Relaxed) & bit != 0
}

/// Marks the GC block starting at `start` without scanning it (the caller
/// arranges for its contents).
pub(crate) fn set_marked(start: usize) {
    if let Some((seg, _)) = object_at(start) {
        let (word, bit) = seg.mark_bit(start);
        word.store(word.load(Ordering::Relaxed) | bit, Ordering::Relaxed);
    }
}

/// Calls `f(start, size, scannable)` for every marked block of a GC segment.
fn for_each_marked_object(seg: &Segment, mut f: impl FnMut(usize, usize, bool)) {
    if seg.is_huge() {
        let page = &seg.pages[0];
        let start = page.area.get() as usize;
        if page.used() == 1 && is_marked(start) {
            let (word, bit) = seg.no_scan_bit(start);
            f(
                start,
                page.block_size.get(),
                word.load(Ordering::Relaxed) & bit == 0,
            );
        }
        return;
    }
    for page in seg.page_records() {
        if !page.in_use.get() || page.block_size.get() == 0 {
            continue;
        }
        for word in bitmap_words(seg, page) {
            let mut marked = seg.mark_bitmap[word].load(Ordering::Relaxed)
                & seg.alloc_bitmap[word].load(Ordering::Relaxed);
            while marked != 0 {
                let bit = marked.trailing_zeros() as usize;
                marked &= marked - 1;
                let start = seg.base() + (word * 64 + bit) * GRANULE;
                let scannable =
                    seg.no_scan_bitmap[word].load(Ordering::Relaxed) & (1u64 << bit) == 0;
                f(start, page.block_size.get(), scannable);
            }
        }
    }
}
