//! The stack zone: per-thread LIFO frames of scratch memory, freed
//! wholesale when the frame ends.
//!
//! ```
//! use allocator_api2::vec::Vec;
//! let total = zonal::stack::frame(|f| {
//!     let mut scratch: Vec<u64, _> = Vec::with_capacity_in(1000, f);
//!     scratch.extend(0..1000);
//!     scratch.iter().sum::<u64>()
//! }); // everything the frame allocated is gone here
//! assert_eq!(total, 499_500);
//! ```
//!
//! # Design
//!
//! Each thread has a `StackRecord`: a chain of *chunks* (blocks of the
//! `Stack` zone taken from the page machinery, 64 KiB first, doubling up to
//! 1 MiB, bigger for a bigger request) and a bump pointer `top` in the
//! newest chunk. Allocating in the innermost frame bumps `top`; freeing
//! the latest allocation moves it back; ending a frame resets `top` (and
//! the chunk chain) to where the frame began. The chunk a frame end
//! releases is kept as the thread's *spare* and reused by the next frame
//! that needs one, so a loop of frames touches the page machinery once.
//!
//! A frame begins by bump-allocating its `FrameMark` (where the frame
//! began, its outer frame, whether it has ended) at `top`, so marks cost no
//! other memory and vanish with their frame.
//!
//! # Soundness, however frames are used
//!
//! The closure API ([`frame`]) nests frames strictly, but guards
//! ([`StackFrame::new`]) can be dropped in any order or forgotten, and a
//! frame can be used while an inner one is alive. The rules that keep every
//! case sound:
//!
//! * only the *innermost* frame bumps `top`. An allocation through an outer
//!   frame while an inner one lives is *detached*: a block of the manual
//!   zone with a small header, linked into the outer frame's list and freed
//!   when that frame ends (or when it is deallocated);
//! * a frame dropped while an inner one still lives is only marked ended;
//!   its memory is reclaimed when the inner frames are gone;
//! * a forgotten frame is never popped: its memory (and that of the frames
//!   around it) stays until the thread exits — a leak, never a dangling
//!   pointer;
//! * borrows do the rest: a collection that uses a frame borrows it, so it
//!   cannot outlive the frame, and [`StackFrame`] is neither `Send` nor
//!   `Sync`, so nothing allocated in a frame crosses threads.
//!
//! ```compile_fail
//! // An allocation cannot escape its frame.
//! let v = zonal::stack::frame(|f| allocator_api2::vec::Vec::<u8, _>::new_in(f));
//! ```
//!
//! ```compile_fail
//! // A guard cannot be dropped while a collection uses it.
//! let mut v;
//! {
//!     let g = zonal::stack::StackFrame::new();
//!     v = allocator_api2::vec::Vec::<u8, _>::new_in(&g);
//! }
//! v.push(1);
//! ```
//!
//! ```compile_fail
//! // Frame memory never crosses threads.
//! zonal::stack::frame(|f| {
//!     let v = allocator_api2::vec::Vec::<u8, _>::new_in(f);
//!     std::thread::spawn(move || drop(v));
//! });
//! ```
//!
//! ```compile_fail
//! // A frame is not Send.
//! fn send<T: Send>(_: T) {}
//! send(zonal::stack::StackFrame::new());
//! ```
//!
//! # The collector
//!
//! Stack-zone contents are GC roots: the collector calls
//! `for_each_live_range` with every other thread stopped. Records are
//! found through a global registry (a `SpinLock`-protected list of
//! records, which are manual-zone blocks), never through another thread's
//! TLS. Everything the collector reads — the registry, each record's chunk
//! chain (`current`, each chunk's `prev`/`prev_top`) — is changed only
//! with the registry lock held (which defers suspension), and `top` is one
//! word, stored by the fast path outside any section: the collector sees
//! the old or the new value, both within the current chunk. Chunks are
//! freed only after they left the chain, outside the lock (freeing may take
//! the pool lock, which the collector holds while it calls us). Detached
//! blocks are manual-zone memory, which the collector scans anyway.
//!
//! Statistics: the zone's `stats()` counts chunks (bytes the stack zone
//! holds, spare included); [`usage`] tells a thread's frames, bytes in use
//! and cap.

use crate::sync::{AtomicUsize, Ordering, SpinLock};
use crate::Zone;
use allocator_api2::alloc::{AllocError, Allocator};
use core::alloc::Layout;
use core::cell::Cell;
use core::marker::PhantomData;
use core::ptr::{self, NonNull};
use std::sync::atomic::AtomicPtr;

/// Bytes of the first chunk of a thread (a 64 KiB size class).
const FIRST_CHUNK: usize = 64 * 1024;
/// Chunks double up to this size (the largest size class); a request
/// that does not fit gets a chunk of its own size.
const MAX_CHUNK: usize = 1024 * 1024;
/// Alignments the bump path handles (larger ones take the slow path).
const MAX_BUMP_ALIGN: usize = 4096;

/// The header at the start of every chunk.
#[repr(C)]
struct Chunk {
    /// The older chunk below this one in the chain.
    prev: *mut Chunk,
    /// `top` in `prev` when this chunk was pushed: `prev`'s live bytes end there.
    prev_top: usize,
    /// One past the chunk's last byte.
    end: usize,
    /// Bytes of the chunk's block (what it is freed with).
    size: usize,
}

const CHUNK_HEADER: usize = core::mem::size_of::<Chunk>();
const _: () = assert!(CHUNK_HEADER.is_multiple_of(16));

impl Chunk {
    fn data_start(chunk: *mut Chunk) -> usize {
        chunk as usize + CHUNK_HEADER
    }
}

/// Where a frame began; bump-allocated at its start (see the module docs).
struct FrameMark {
    outer: *mut FrameMark,
    saved_chunk: *mut Chunk,
    saved_top: usize,
    ended: Cell<bool>,
    /// The frame's detached blocks.
    detached: Cell<*mut Detached>,
}

/// Header of a detached block (an outer frame's allocation made while an
/// inner frame lived), just below the address handed out.
#[repr(C)]
struct Detached {
    next: Cell<*mut Detached>,
    prev: Cell<*mut Detached>,
    /// The manual-zone block holding header and data.
    block: *mut u8,
    block_size: usize,
}

const DETACHED_HEADER: usize = 32;
const _: () = assert!(core::mem::size_of::<Detached>() <= DETACHED_HEADER);

/// One thread's stack zone. Fields marked "collector" are read by
/// [`for_each_live_range`]; the rest belong to the owning thread.
pub(crate) struct StackRecord {
    /// Registry links (registry lock).
    prev: Cell<*mut StackRecord>,
    next: Cell<*mut StackRecord>,
    /// Newest chunk (collector; changed under the registry lock).
    current: AtomicPtr<Chunk>,
    /// Bump pointer in `current` (collector; one-word stores).
    top: AtomicUsize,
    /// `current`'s end (0 without a chunk).
    limit: Cell<usize>,
    innermost: Cell<*mut FrameMark>,
    /// A released chunk kept for reuse (not in the chain).
    spare: Cell<*mut Chunk>,
    /// Bytes of the chain's chunks plus detached blocks (for the cap).
    held: Cell<usize>,
    cap: Cell<usize>,
    /// Guards alive (popped or not).
    live_frames: Cell<usize>,
    /// The thread's exit hook ran (or could not be registered): the record
    /// goes away when its last frame does.
    orphan: Cell<bool>,
}

struct Registry {
    lock: SpinLock,
    first: Cell<*mut StackRecord>,
}

// SAFETY: `first` and the records' links are only touched with `lock` held.
unsafe impl Sync for Registry {}

static REGISTRY: Registry = Registry {
    lock: SpinLock::new(),
    first: Cell::new(ptr::null_mut()),
};

std::thread_local! {
    /// This thread's record, once it used the stack zone.
    static RECORD: Cell<*mut StackRecord> = const { Cell::new(ptr::null_mut()) };
    /// Releases the record at thread exit (registered on first use).
    static EXIT_HOOK: ExitHook = const { ExitHook };
}

struct ExitHook;

impl Drop for ExitHook {
    fn drop(&mut self) {
        let record = RECORD.with(|r| r.get());
        if record.is_null() {
            return;
        }
        // SAFETY: the thread's record is valid until released.
        let rec = unsafe { &*record };
        if rec.live_frames.get() == 0 {
            release(record);
        } else {
            // Frames kept in other thread-locals end later (or never, if
            // forgotten): the last one to end releases the record.
            rec.orphan.set(true);
        }
    }
}

/// The calling thread's record, made on first use.
fn record() -> &'static StackRecord {
    let record = RECORD.with(|r| r.get());
    if !record.is_null() {
        // SAFETY: a record stays valid until `release`, which clears the slot.
        return unsafe { &*record };
    }
    new_record()
}

#[cold]
fn new_record() -> &'static StackRecord {
    let record = crate::alloc::alloc(
        Zone::Manual,
        core::mem::size_of::<StackRecord>(),
        core::mem::align_of::<StackRecord>(),
    )
    .cast::<StackRecord>();
    if record.is_null() {
        std::alloc::handle_alloc_error(Layout::new::<StackRecord>());
    }
    // SAFETY: a fresh block of the right size and alignment.
    unsafe {
        record.write(StackRecord {
            prev: Cell::new(ptr::null_mut()),
            next: Cell::new(ptr::null_mut()),
            current: AtomicPtr::new(ptr::null_mut()),
            top: AtomicUsize::new(0),
            limit: Cell::new(0),
            innermost: Cell::new(ptr::null_mut()),
            spare: Cell::new(ptr::null_mut()),
            held: Cell::new(0),
            cap: Cell::new(crate::options::get().stack_cap),
            live_frames: Cell::new(0),
            orphan: Cell::new(false),
        })
    };
    REGISTRY.lock.with(|| {
        let first = REGISTRY.first.get();
        // SAFETY: registered records are valid; lock held.
        unsafe {
            (*record).next.set(first);
            if !first.is_null() {
                (*first).prev.set(record);
            }
        }
        REGISTRY.first.set(record);
    });
    RECORD.with(|r| r.set(record));
    if EXIT_HOOK.try_with(|_| ()).is_err() {
        // The thread is exiting: nobody would release the record.
        // SAFETY: just made.
        unsafe { (*record).orphan.set(true) };
    }
    // SAFETY: valid until `release`.
    unsafe { &*record }
}

/// Unregisters a record and frees its chunks, detached blocks and itself.
fn release(record: *mut StackRecord) {
    // SAFETY: the record is valid until the end of this function.
    let rec = unsafe { &*record };
    REGISTRY.lock.with(|| {
        let (prev, next) = (rec.prev.get(), rec.next.get());
        // SAFETY: registered records are valid; lock held.
        unsafe {
            if prev.is_null() {
                REGISTRY.first.set(next);
            } else {
                (*prev).next.set(next);
            }
            if !next.is_null() {
                (*next).prev.set(prev);
            }
        }
    });
    RECORD.with(|r| {
        if r.get() == record {
            r.set(ptr::null_mut());
        }
    });
    // Detached blocks of frames that never ended (forgotten guards).
    let mut mark = rec.innermost.get();
    while !mark.is_null() {
        // SAFETY: marks of frames not popped live in the chain's chunks,
        // which are still allocated.
        let m = unsafe { &*mark };
        free_detached_list(m);
        mark = m.outer;
    }
    let mut chunk = rec.current.load(Ordering::Relaxed);
    while !chunk.is_null() {
        // SAFETY: chunks of the (now unlisted) chain are ours.
        let prev = unsafe { (*chunk).prev };
        free_chunk(chunk);
        chunk = prev;
    }
    if !rec.spare.get().is_null() {
        free_chunk(rec.spare.get());
    }
    // SAFETY: unlisted and no longer reachable from the thread.
    unsafe { crate::free::free_now(record.cast(), core::mem::size_of::<StackRecord>()) };
}

fn free_chunk(chunk: *mut Chunk) {
    // SAFETY: the chunk is a live stack-zone block that left every list.
    unsafe { crate::free::free_now(chunk.cast(), (*chunk).size) };
}

/// Calls `f(start, end)` for the live (allocated, not yet popped) bytes of
/// every thread's stack zone. For the collector, with every other thread
/// stopped (see the module docs); reads only chunks that are listed, which
/// stay allocated while listed.
pub(crate) fn for_each_live_range(mut f: impl FnMut(usize, usize)) {
    REGISTRY.lock.with(|| {
        let mut record = REGISTRY.first.get();
        while !record.is_null() {
            // SAFETY: registered records are valid while the lock is held.
            let rec = unsafe { &*record };
            let mut chunk = rec.current.load(Ordering::Acquire);
            let mut top = rec.top.load(Ordering::Relaxed);
            while !chunk.is_null() {
                // SAFETY: listed chunks stay allocated (module docs).
                let c = unsafe { &*chunk };
                let start = Chunk::data_start(chunk);
                if top > start && top <= c.end {
                    f(start, top);
                }
                top = c.prev_top;
                chunk = c.prev;
            }
            record = rec.next.get();
        }
    });
}

/// A frame of the stack zone: `&StackFrame` is an [`Allocator`] whose
/// blocks are all freed when the frame ends (on drop). Frames nest; see the
/// module docs for what happens when they are used out of order. Neither
/// `Send` nor `Sync`.
///
/// ```
/// use allocator_api2::vec::Vec;
/// let outer = zonal::stack::StackFrame::new();
/// let mut a: Vec<u32, _> = Vec::new_in(&outer);
/// a.push(1);
/// {
///     let inner = zonal::stack::StackFrame::new();
///     let mut b: Vec<u32, _> = Vec::new_in(&inner);
///     b.extend([2, 3]);
///     a.push(4); // allowed: the outer frame's block is kept apart
///     assert_eq!(b.len() + a.len(), 4);
/// } // the inner frame's memory is reclaimed here
/// assert_eq!(a, [1, 4]);
/// ```
pub struct StackFrame {
    record: &'static StackRecord,
    mark: *mut FrameMark,
    _not_send: PhantomData<*mut ()>,
}

impl core::fmt::Debug for StackFrame {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StackFrame")
            .field("mark", &self.mark)
            .field("innermost", &self.is_innermost())
            .finish()
    }
}

/// Runs `f` with a new frame of the calling thread's stack zone; everything
/// allocated in it is freed when `f` returns (or unwinds).
pub fn frame<R>(f: impl FnOnce(&StackFrame) -> R) -> R {
    let frame = StackFrame::new();
    f(&frame)
}

impl Default for StackFrame {
    fn default() -> Self {
        Self::new()
    }
}

impl StackFrame {
    /// Opens a frame (closed when the guard is dropped). Aborts, like any
    /// infallible allocation, if there is no memory for its first bytes.
    pub fn new() -> StackFrame {
        let rec = record();
        let saved_chunk = rec.current.load(Ordering::Relaxed);
        let saved_top = rec.top.load(Ordering::Relaxed);
        let layout = Layout::new::<FrameMark>();
        let mark = match rec.bump(layout) {
            Some(p) => p,
            None => rec
                .bump_in_new_chunk(layout, false)
                .unwrap_or_else(|| std::alloc::handle_alloc_error(layout)),
        }
        .cast::<FrameMark>()
        .as_ptr();
        // SAFETY: freshly bumped memory for a mark, inside the frame.
        unsafe {
            mark.write(FrameMark {
                outer: rec.innermost.get(),
                saved_chunk,
                saved_top,
                ended: Cell::new(false),
                detached: Cell::new(ptr::null_mut()),
            })
        };
        rec.innermost.set(mark);
        rec.live_frames.set(rec.live_frames.get() + 1);
        StackFrame {
            record: rec,
            mark,
            _not_send: PhantomData,
        }
    }

    #[inline(always)]
    fn is_innermost(&self) -> bool {
        self.record.innermost.get() == self.mark
    }

    /// Allocation outside the bump fast path.
    #[cold]
    #[inline(never)]
    fn allocate_slow(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let rec = self.record;
        let block = if self.is_innermost() && layout.align() <= MAX_BUMP_ALIGN {
            rec.bump(layout)
                .or_else(|| rec.bump_in_new_chunk(layout, true))
        } else {
            self.allocate_detached(layout)
        };
        let block = block.ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(block, layout.size()))
    }

    /// A block of an outer frame while an inner one lives, or one aligned
    /// beyond what the bump path takes.
    fn allocate_detached(&self, layout: Layout) -> Option<NonNull<u8>> {
        let rec = self.record;
        let align = layout.align().max(16);
        let size = layout
            .size()
            .checked_add(DETACHED_HEADER)?
            .checked_add(align - 16)?;
        if rec.held.get().saturating_add(size) > rec.cap.get() {
            return None;
        }
        let block = crate::alloc::alloc(Zone::Manual, size, 16);
        if block.is_null() {
            return None;
        }
        let data = (block as usize + DETACHED_HEADER + align - 1) & !(align - 1);
        let header = (data - DETACHED_HEADER) as *mut Detached;
        // SAFETY: the frame is alive, so its mark is.
        let mark = unsafe { &*self.mark };
        let first = mark.detached.get();
        // SAFETY: the header lies in the fresh block, below `data`; the
        // list's other headers belong to this frame's live blocks.
        unsafe {
            header.write(Detached {
                next: Cell::new(first),
                prev: Cell::new(ptr::null_mut()),
                block,
                block_size: size,
            });
            if !first.is_null() {
                (*first).prev.set(header);
            }
        }
        mark.detached.set(header);
        rec.held.set(rec.held.get() + size);
        NonNull::new(data as *mut u8)
    }

    /// Frees a detached block of this frame.
    ///
    /// # Safety
    /// `ptr` was returned by `allocate_detached` of this frame and is given up.
    unsafe fn free_detached(&self, ptr: *mut u8) {
        let header = (ptr as usize - DETACHED_HEADER) as *mut Detached;
        // SAFETY: by the contract the header is live and in our list.
        let h = unsafe { &*header };
        // SAFETY: the frame is alive, so its mark is.
        let mark = unsafe { &*self.mark };
        let (prev, next) = (h.prev.get(), h.next.get());
        // SAFETY: neighbours are headers of this frame's live blocks.
        unsafe {
            if prev.is_null() {
                mark.detached.set(next);
            } else {
                (*prev).next.set(next);
            }
            if !next.is_null() {
                (*next).prev.set(prev);
            }
        }
        let (block, size) = (h.block, h.block_size);
        self.record.held.set(self.record.held.get() - size);
        // SAFETY: the block is live and unlinked.
        unsafe { crate::free::free_now(block, size) };
    }
}

impl StackRecord {
    /// Bumps `top` for `layout` in the current chunk, if it fits.
    ///
    /// `limit` is a multiple of [`MAX_BUMP_ALIGN`] and `top <= limit`, so
    /// rounding `top` up to any alignment the bump path takes stays within
    /// `limit`, and `limit - start` cannot underflow: one comparison decides.
    #[inline(always)]
    fn bump(&self, layout: Layout) -> Option<NonNull<u8>> {
        let align = layout.align();
        if align > MAX_BUMP_ALIGN {
            return None;
        }
        let top = self.top.load(Ordering::Relaxed);
        let start = (top + align - 1) & !(align - 1);
        if layout.size() > self.limit.get() - start {
            return None;
        }
        self.top.store(start + layout.size(), Ordering::Relaxed);
        // SAFETY: the size fits, so there is a chunk (without one, `limit`
        // and `start` are 0), and `start` lies in it, above its header.
        unsafe {
            core::hint::assert_unchecked(start != 0);
            Some(NonNull::new_unchecked(start as *mut u8))
        }
    }

    /// Pushes a chunk big enough for `layout` (the spare if it fits) and
    /// bumps in it. With `capped`, fails rather than exceed the cap.
    fn bump_in_new_chunk(&self, layout: Layout, capped: bool) -> Option<NonNull<u8>> {
        let current = self.current.load(Ordering::Relaxed);
        let grown = if current.is_null() {
            FIRST_CHUNK
        } else {
            // SAFETY: the current chunk is ours.
            (unsafe { (*current).size } * 2).min(MAX_CHUNK)
        };
        let needed = layout
            .size()
            .checked_add(layout.align())?
            .checked_add(CHUNK_HEADER + MAX_BUMP_ALIGN)?;
        let size =
            grown.max(needed.checked_add(crate::os::OS_PAGE - 1)? & !(crate::os::OS_PAGE - 1));
        if capped && self.held.get().saturating_add(size) > self.cap.get() {
            return None;
        }
        let spare = self.spare.get();
        // SAFETY: the spare chunk is ours.
        let chunk = if !spare.is_null() && unsafe { (*spare).size } >= needed {
            self.spare.set(ptr::null_mut());
            spare
        } else {
            let block = crate::alloc::alloc(Zone::Stack, size, 16).cast::<Chunk>();
            if block.is_null() {
                return None;
            }
            // SAFETY: a fresh block of `size` bytes, ours.
            unsafe {
                block.write(Chunk {
                    prev: ptr::null_mut(),
                    prev_top: 0,
                    // A multiple of MAX_BUMP_ALIGN (see `bump`).
                    end: (block as usize + size) & !(MAX_BUMP_ALIGN - 1),
                    size,
                })
            };
            block
        };
        let top = self.top.load(Ordering::Relaxed);
        // SAFETY: the chunk is ours and not yet listed.
        unsafe {
            (*chunk).prev = current;
            (*chunk).prev_top = top;
        }
        // SAFETY: as above.
        let (chunk_size, end) = unsafe { ((*chunk).size, (*chunk).end) };
        REGISTRY.lock.with(|| {
            self.current.store(chunk, Ordering::Release);
            self.top.store(Chunk::data_start(chunk), Ordering::Relaxed);
        });
        self.limit.set(end);
        self.held.set(self.held.get() + chunk_size);
        self.bump(layout)
    }

    /// Pops ended frames from the innermost one out.
    fn pop_ended(&self) {
        let mut released: *mut Chunk = ptr::null_mut();
        loop {
            let mark = self.innermost.get();
            if mark.is_null() {
                break;
            }
            // SAFETY: the innermost mark lives in a listed chunk.
            let m = unsafe { &*mark };
            if !m.ended.get() {
                break;
            }
            let (saved_chunk, saved_top, outer) = (m.saved_chunk, m.saved_top, m.outer);
            // `m` may be in a chunk released below: not used after this.
            let current = self.current.load(Ordering::Relaxed);
            if current == saved_chunk {
                self.top.store(saved_top, Ordering::Relaxed);
            } else {
                REGISTRY.lock.with(|| {
                    self.current.store(saved_chunk, Ordering::Release);
                    self.top.store(saved_top, Ordering::Relaxed);
                });
                // Chunks from `current` down to (not including) the saved
                // one leave the chain; collect them.
                let mut chunk = current;
                while chunk != saved_chunk {
                    // SAFETY: unlisted chunks of ours.
                    let (prev, size) = unsafe { ((*chunk).prev, (*chunk).size) };
                    self.held.set(self.held.get() - size);
                    // SAFETY: as above; `prev` is reused as the release link.
                    unsafe { (*chunk).prev = released };
                    released = chunk;
                    chunk = prev;
                }
                self.limit.set(if saved_chunk.is_null() {
                    0
                } else {
                    // SAFETY: the saved chunk is listed.
                    unsafe { (*saved_chunk).end }
                });
            }
            self.innermost.set(outer);
        }
        // Keep the biggest released chunk (or the old spare) for reuse.
        while !released.is_null() {
            // SAFETY: released chunks are ours and unlisted.
            let next = unsafe { (*released).prev };
            let spare = self.spare.get();
            // SAFETY: as above.
            if spare.is_null() || unsafe { (*spare).size < (*released).size } {
                self.spare.set(released);
                if !spare.is_null() {
                    free_chunk(spare);
                }
            } else {
                free_chunk(released);
            }
            released = next;
        }
    }
}

fn free_detached_list(mark: &FrameMark) {
    let mut header = mark.detached.replace(ptr::null_mut());
    while !header.is_null() {
        // SAFETY: headers of the frame's live detached blocks.
        let (next, block, size) =
            unsafe { ((*header).next.get(), (*header).block, (*header).block_size) };
        // SAFETY: the frame ended: its blocks are dead.
        unsafe { crate::free::free_now(block, size) };
        header = next;
    }
}

impl Drop for StackFrame {
    fn drop(&mut self) {
        let rec = self.record;
        // SAFETY: the frame's mark lives until the frame is popped, which
        // happens only after it is marked ended (below).
        let mark = unsafe { &*self.mark };
        let mut detached_bytes = 0;
        let mut header = mark.detached.get();
        while !header.is_null() {
            // SAFETY: headers of the frame's live detached blocks.
            unsafe {
                detached_bytes += (*header).block_size;
                header = (*header).next.get();
            }
        }
        free_detached_list(mark);
        rec.held.set(rec.held.get() - detached_bytes);
        mark.ended.set(true);
        if self.is_innermost() {
            rec.pop_ended();
        }
        rec.live_frames.set(rec.live_frames.get() - 1);
        if rec.live_frames.get() == 0 && rec.orphan.get() {
            release(rec as *const StackRecord as *mut StackRecord);
        }
    }
}

// SAFETY: blocks are bumped from chunks (or detached manual blocks) that
// stay allocated until the frame ends, which the borrow in `&StackFrame`
// outlives; distinct allocations never overlap (`top` only moves back over
// the latest allocation or at frame end); copies of `&StackFrame` are the
// same allocator.
unsafe impl Allocator for &StackFrame {
    #[inline(always)]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(crate::api::zone::dangling(layout));
        }
        if self.is_innermost() {
            if let Some(block) = self.record.bump(layout) {
                return Ok(NonNull::slice_from_raw_parts(block, layout.size()));
            }
        }
        match self.allocate_slow(layout) {
            // Matching here (rather than returning the result as it is)
            // lets the caller's error check stay on the slow path.
            Ok(block) => Ok(block),
            Err(e) => Err(e),
        }
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        let rec = self.record;
        let addr = ptr.as_ptr() as usize;
        if self.is_innermost() && addr + layout.size() == rec.top.load(Ordering::Relaxed) {
            // The latest allocation: reclaim it.
            rec.top.store(addr, Ordering::Relaxed);
            return;
        }
        if addr >= rec.current.load(Ordering::Relaxed) as usize && addr < rec.limit.get() {
            // Bump memory below the top: reclaimed at frame end.
            return;
        }
        if is_detached(addr) {
            // SAFETY: a detached block of this frame (the contract: it was
            // allocated by this allocator), given up.
            unsafe { self.free_detached(ptr.as_ptr()) };
        }
        // Otherwise: bump memory below the top, reclaimed at frame end.
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        let rec = self.record;
        let addr = ptr.as_ptr() as usize;
        if old.size() != 0
            && self.is_innermost()
            && addr + old.size() == rec.top.load(Ordering::Relaxed)
            && addr.is_multiple_of(new.align())
            && addr
                .checked_add(new.size())
                .is_some_and(|end| end <= rec.limit.get())
        {
            rec.top.store(addr + new.size(), Ordering::Relaxed);
            return Ok(NonNull::slice_from_raw_parts(ptr, new.size()));
        }
        // SAFETY: forwarded contract (the old block is below the new one's
        // start, or detached: they are distinct).
        unsafe { crate::api::zone::move_to_new_block(self, ptr, old, new) }
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        let rec = self.record;
        let addr = ptr.as_ptr() as usize;
        if addr.is_multiple_of(new.align()) {
            if new.size() == 0 {
                // SAFETY: forwarded contract: the caller gives the block up.
                unsafe { self.deallocate(ptr, old) };
                return Ok(crate::api::zone::dangling(new));
            }
            if self.is_innermost() && addr + old.size() == rec.top.load(Ordering::Relaxed) {
                rec.top.store(addr + new.size(), Ordering::Relaxed);
            }
            return Ok(NonNull::slice_from_raw_parts(ptr, new.size()));
        }
        // SAFETY: forwarded contract.
        unsafe { crate::api::zone::move_to_new_block(self, ptr, old, new) }
    }
}

/// Whether a frame's block at `addr` is detached (a manual-zone block)
/// rather than bump memory (a stack-zone chunk).
fn is_detached(addr: usize) -> bool {
    crate::api::inspect::find(addr).is_some_and(|a| a.zone == Zone::Manual)
}

/// The calling thread's use of the stack zone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StackUsage {
    /// Frames alive (guards not dropped).
    pub frames: usize,
    /// Bytes held: chunks in use plus detached blocks (what the cap limits).
    pub held_bytes: usize,
    /// Bytes of the spare chunk kept for reuse.
    pub spare_bytes: usize,
    /// The thread's cap on `held_bytes`.
    pub cap_bytes: usize,
}

/// The calling thread's stack-zone usage.
///
/// ```
/// let before = zonal::stack::usage().frames;
/// zonal::stack::frame(|_| assert_eq!(zonal::stack::usage().frames, before + 1));
/// ```
pub fn usage() -> StackUsage {
    let rec = record();
    let spare = rec.spare.get();
    StackUsage {
        frames: rec.live_frames.get(),
        held_bytes: rec.held.get(),
        // SAFETY: the spare chunk is ours.
        spare_bytes: if spare.is_null() {
            0
        } else {
            unsafe { (*spare).size }
        },
        cap_bytes: rec.cap.get(),
    }
}

/// Sets the calling thread's cap on stack-zone memory (chunks and detached
/// blocks; default `ZONAL_STACK_CAP_MIB`, 64 MiB). Allocations that would
/// exceed it fail (`AllocError`); a frame's own first bytes are exempt.
///
/// ```
/// use allocator_api2::alloc::Allocator;
/// zonal::stack::set_thread_cap(256 * 1024);
/// zonal::stack::frame(|f| {
///     assert!(f.allocate(core::alloc::Layout::new::<[u8; 1 << 20]>()).is_err());
/// });
/// zonal::stack::set_thread_cap(64 << 20);
/// ```
pub fn set_thread_cap(bytes: usize) {
    record().cap.set(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ranges `for_each_live_range` reports for this thread's chunks.
    fn reported_covers(addr: usize, len: usize) -> bool {
        let mut found = false;
        for_each_live_range(|start, end| found |= start <= addr && addr + len <= end);
        found
    }

    #[test]
    fn live_ranges_cover_allocations_until_their_frame_ends() {
        let layout = Layout::from_size_align(64, 8).unwrap();
        let (inner_block, outer_block) = frame(|outer| {
            let outer_block = outer.allocate(layout).unwrap().cast::<u8>().as_ptr() as usize;
            let inner_block = frame(|inner| {
                // Spill into further chunks so the older ones are walked too.
                for _ in 0..40 {
                    inner
                        .allocate(Layout::from_size_align(8192, 8).unwrap())
                        .unwrap();
                }
                let b = inner.allocate(layout).unwrap().cast::<u8>().as_ptr() as usize;
                assert!(reported_covers(b, 64), "the newest allocation is a root");
                assert!(reported_covers(outer_block, 64), "an older chunk is a root");
                b
            });
            assert!(
                !reported_covers(inner_block, 64),
                "a popped frame is no root"
            );
            assert!(reported_covers(outer_block, 64));
            (inner_block, outer_block)
        });
        assert!(!reported_covers(inner_block, 64) && !reported_covers(outer_block, 64));
    }

    #[test]
    fn freeing_the_top_allocation_shrinks_the_live_range() {
        frame(|f| {
            let layout = Layout::from_size_align(128, 16).unwrap();
            let p = f.allocate(layout).unwrap().cast::<u8>();
            assert!(reported_covers(p.as_ptr() as usize, 128));
            // SAFETY: allocated above with this layout.
            unsafe { f.deallocate(p, layout) };
            assert!(!reported_covers(p.as_ptr() as usize, 128));
        });
    }
}
