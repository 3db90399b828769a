//! Roots: where the collector starts marking (DESIGN.md §5).
//!
//! * the stack of every registered thread, from the stack pointer it
//!   stopped at (below the signal frame that holds its registers) up to its
//!   base, and the collector's own stack from the frame where `collect`
//!   spilled its registers (not from deeper inside the collection: those
//!   frames are the collector's own and may hold stale addresses);
//! * the static TLS blocks of every registered thread;
//! * the writable data of every loaded object (`PT_LOAD` segments with
//!   `PF_W`, minus `PT_GNU_RELRO`), minus zonal's own large tables (the
//!   segment map and the thread records), which hold no program pointers;
//! * explicit roots ([`add`], [`remove`]);
//! * the live blocks of the manual and pinned zones, whole, and the live
//!   part (below each thread's top) of the stack zone;
//! * allocations held by pin guards and FFI handles (`pinned`);
//! * objects waiting for their finalizer (they must survive until it ran).
//!
//! Everything here runs with the world stopped, the thread registry and the
//! pool locked, and the dynamic linker's lock held (the collection runs
//! inside `dl_iterate_phdr`), so no object can be loaded or unloaded and no
//! segment can be unmapped while its memory is read.

use super::mark::Marker;
use super::table::MappedVec;
use crate::segment::{self, Segment};
use crate::size_class::GRANULE;
use crate::sync::{Ordering, SpinLock};
use crate::thread;
use crate::Zone;
use core::cell::UnsafeCell;
use core::ffi::c_void;

/// Explicit roots: `(start, end)` ranges.
struct ExplicitRoots {
    lock: SpinLock,
    ranges: UnsafeCell<MappedVec<(usize, usize)>>,
}

// SAFETY: `ranges` is only touched with `lock` held.
unsafe impl Sync for ExplicitRoots {}

static EXPLICIT: ExplicitRoots = ExplicitRoots {
    lock: SpinLock::new(),
    ranges: UnsafeCell::new(MappedVec::new(1 << 20)),
};

fn with_explicit<R>(f: impl FnOnce(&mut MappedVec<(usize, usize)>) -> R) -> R {
    // SAFETY: the lock serialises every access to the table.
    EXPLICIT
        .lock
        .with(|| f(unsafe { &mut *EXPLICIT.ranges.get() }))
}

/// Adds `[start, start + len)` to the explicit roots; `false` if the table
/// is full (a million ranges).
pub(crate) fn add(start: usize, len: usize) -> bool {
    with_explicit(|ranges| ranges.push((start, start.saturating_add(len))))
}

/// Removes the explicit root that starts at `start` (the most recently
/// added one if several do); whether there was one.
pub(crate) fn remove(start: usize) -> bool {
    with_explicit(|ranges| {
        let found = ranges.as_slice().iter().rposition(|r| r.0 == start);
        if let Some(index) = found {
            ranges.swap_remove(index);
        }
        found.is_some()
    })
}

/// Marks from every root. The collector's own thread is `me`; its stack is
/// scanned from `own_stack_top` (where `collect` spilled its registers).
pub(crate) fn mark_all(marker: &mut Marker, me: &thread::ThreadRecord, own_stack_top: usize) {
    let (start, end) = me.stack_range(own_stack_top);
    // SAFETY: our own stack, from the frame of `collect` to its base.
    unsafe { marker.scan_root(start, end) };
    thread::for_each_live(|record| {
        if !core::ptr::eq(record, me) {
            let (start, end) = record.stack_range(record.handshake.stopped_sp());
            // SAFETY: the thread is stopped in its suspend handler, below
            // which nothing of its stack is in use; the range is its stack.
            unsafe { marker.scan_root(start, end) };
        }
        record.for_each_tls(|start, end| {
            // SAFETY: a registered thread's static TLS stays allocated
            // until the thread exits, after it deregistered.
            unsafe { marker.scan_root(start, end) }
        });
    });
    mark_data_segments(marker);
    with_explicit(|ranges| {
        for &(start, end) in ranges.as_slice() {
            // SAFETY: `gc::add_root`'s contract keeps the range readable
            // until it is removed.
            unsafe { marker.scan_root(start, end) };
        }
    });
    mark_zone_contents(marker);
    crate::stack::for_each_live_range(|start, end| {
        // SAFETY: live stack-zone bytes lie in chunks that stay allocated
        // while listed (and the pool lock keeps their segments mapped).
        unsafe { marker.scan_root(start, end) }
    });
    crate::pinned::pin::for_each_pinned(|base, _size| {
        marker.consider(base);
        marker.drain();
    });
    super::finalize::mark_pending(marker);
}

/// Every allocated block of the manual and pinned zones. (Stack-zone
/// chunks are scanned only up to each thread's top; see `mark_all`.)
fn mark_zone_contents(marker: &mut Marker) {
    segment::for_each_segment(|seg| {
        if seg.zone == Zone::Manual || seg.zone == Zone::Pinned {
            for_each_live_block(seg, |start, size| {
                // SAFETY: a block of a live segment, kept mapped by the pool
                // lock; its contents are whatever the program wrote.
                unsafe { marker.scan_root(start, start + size) }
            });
        }
    });
}

/// Calls `f(start, size)` for every allocated block of a segment.
fn for_each_live_block(seg: &Segment, mut f: impl FnMut(usize, usize)) {
    if seg.is_huge() {
        let page = &seg.pages[0];
        if page.used() == 1 {
            f(page.area.get() as usize, page.block_size.get());
        }
        return;
    }
    for page in seg.page_records() {
        let size = page.block_size.get();
        if !page.in_use.get() || size == 0 {
            continue;
        }
        for word in super::mark::bitmap_words(seg, page) {
            let mut live = seg.alloc_bitmap[word].load(Ordering::Relaxed);
            while live != 0 {
                let bit = live.trailing_zeros() as usize;
                live &= live - 1;
                f(seg.base() + (word * 64 + bit) * GRANULE, size);
            }
        }
    }
}

/// Writable data of every loaded object, minus zonal's own tables.
fn mark_data_segments(marker: &mut Marker) {
    struct Visit<'a> {
        marker: &'a mut Marker,
        excluded: [(usize, usize); 2],
    }
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> libc::c_int {
        // SAFETY: dl_iterate_phdr passes a valid record and our `data`.
        let (info, visit) = unsafe { (&*info, &mut *data.cast::<Visit>()) };
        // SAFETY: `dlpi_phdr` has `dlpi_phnum` entries.
        let headers =
            unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        let base = info.dlpi_addr as usize;
        let relro = headers
            .iter()
            .find(|h| h.p_type == libc::PT_GNU_RELRO)
            .map(|h| {
                (
                    base + h.p_vaddr as usize,
                    base + (h.p_vaddr + h.p_memsz) as usize,
                )
            });
        for header in headers {
            if header.p_type != libc::PT_LOAD || header.p_flags & libc::PF_W == 0 {
                continue;
            }
            let start = base + header.p_vaddr as usize;
            let end = start + header.p_memsz as usize;
            let mut pieces = [(start, end); 1];
            let mut rest = MappedRanges::new(&mut pieces);
            if let Some(relro) = relro {
                rest.subtract(relro);
            }
            for excluded in visit.excluded {
                rest.subtract(excluded);
            }
            rest.for_each(|start, end| {
                // SAFETY: a writable PT_LOAD segment of a loaded object,
                // mapped while the linker's lock (held) prevents unloading.
                unsafe { visit.marker.scan_root(start, end) }
            });
        }
        0
    }
    let map = crate::segment::map::map();
    let map_start = map.as_ptr() as usize;
    let mut visit_state = Visit {
        marker,
        excluded: [
            (map_start, map_start + core::mem::size_of_val(map)),
            thread::records_range(),
        ],
    };
    // SAFETY: `visit` matches the callback type and only uses the `Visit`
    // we pass, which outlives the call. The linker's lock is recursive and
    // already held by this thread (see `collect`).
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut visit_state as *mut Visit).cast()) };
}

/// A range with holes cut out of it: at most a few pieces (each
/// subtraction of an interval splits at most one piece in two).
struct MappedRanges<'a> {
    first: &'a mut [(usize, usize); 1],
    extra: [(usize, usize); 4],
    extra_count: usize,
}

impl<'a> MappedRanges<'a> {
    fn new(first: &'a mut [(usize, usize); 1]) -> Self {
        MappedRanges {
            first,
            extra: [(0, 0); 4],
            extra_count: 0,
        }
    }

    fn subtract(&mut self, (hole_start, hole_end): (usize, usize)) {
        let mut split = None;
        for piece in self
            .first
            .iter_mut()
            .chain(self.extra[..self.extra_count].iter_mut())
        {
            let (start, end) = *piece;
            if hole_end <= start || hole_start >= end {
                continue;
            }
            if hole_start > start && hole_end < end {
                *piece = (start, hole_start);
                split = Some((hole_end, end));
            } else if hole_start <= start {
                *piece = (hole_end.min(end), end);
            } else {
                *piece = (start, hole_start);
            }
        }
        if let Some(piece) = split {
            if self.extra_count < self.extra.len() {
                self.extra[self.extra_count] = piece;
                self.extra_count += 1;
            }
        }
    }

    fn for_each(&self, mut f: impl FnMut(usize, usize)) {
        for &(start, end) in self.first.iter().chain(&self.extra[..self.extra_count]) {
            if end > start {
                f(start, end);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MappedRanges;

    #[test]
    fn subtracting_holes_leaves_the_right_pieces() {
        let mut first = [(100, 200)];
        let mut ranges = MappedRanges::new(&mut first);
        ranges.subtract((120, 130));
        ranges.subtract((0, 105));
        ranges.subtract((190, 300));
        ranges.subtract((500, 600));
        let mut pieces = Vec::new();
        ranges.for_each(|s, e| pieces.push((s, e)));
        pieces.sort();
        assert_eq!(pieces, vec![(105, 120), (130, 190)]);
    }
}
