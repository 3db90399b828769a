//! Fault reports: what happens when the program hands zonal a pointer it
//! must not (`GlobalAlloc` cannot return an error, and going on would
//! corrupt the heap).
//!
//! The report is one line on stderr naming the operation, the address and
//! the fault, written with a single `write` from a stack buffer (no
//! allocation: the heap may be what is broken), followed by `abort()`
//! (SIGABRT). Classification may be slow; it only runs on the way out.

use crate::segment::{map, Segment};
use core::fmt::Write;

/// What was wrong with a pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The block at this address is not allocated: freed twice, or never
    /// handed out.
    DoubleFree,
    /// Not inside any zonal segment: never allocated by zonal, or freed and
    /// its memory already returned to the OS (a double free of a huge block
    /// looks like this).
    Foreign,
    /// Inside a zonal segment but not at the start of a block.
    Interior,
    /// Not aligned to zonal's 16-byte granule, so not a block start.
    Misaligned,
    /// Inside a zonal segment, in memory that holds no block.
    NotAllocated,
}

impl Fault {
    fn describe(self) -> &'static str {
        match self {
            Fault::DoubleFree => "double free: the block is not allocated",
            Fault::Foreign => "pointer is not in zonal's memory (never allocated by zonal, or freed and returned to the OS)",
            Fault::Interior => "pointer is inside a block, not at its start",
            Fault::Misaligned => "misaligned pointer (not a block start)",
            Fault::NotAllocated => "pointer is not in an allocated block",
        }
    }
}

/// The operation that received the bad pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Free,
    Realloc,
}

/// Works out why `addr` is not a live block start.
pub(crate) fn classify(addr: usize) -> Fault {
    if !addr.is_multiple_of(crate::size_class::GRANULE) {
        return Fault::Misaligned;
    }
    match map::lookup(map::map(), addr) {
        None => Fault::Foreign,
        Some(map::Found::Segment(base)) => {
            // SAFETY: the map says a segment starts at `base`.
            let seg = unsafe { Segment::at(base) };
            let page = seg.page_of(addr);
            if !page.in_use.get() {
                Fault::NotAllocated
            } else if page.is_block_start(addr) {
                Fault::DoubleFree
            } else {
                Fault::Interior
            }
        }
        Some(map::Found::Huge(base)) => {
            // SAFETY: as above.
            let page = &unsafe { Segment::at(base) }.pages[0];
            if addr != page.area.get() as usize {
                Fault::Interior
            } else {
                Fault::DoubleFree
            }
        }
    }
}

/// Reports `fault` at `addr` for `op` and aborts the process.
#[cold]
#[inline(never)]
pub(crate) fn report(op: Op, fault: Fault, addr: usize) -> ! {
    let mut line = LineBuffer {
        buf: [0; 192],
        len: 0,
    };
    let verb = match (op, fault) {
        (Op::Free, Fault::DoubleFree) => "double free",
        (Op::Free, _) => "invalid free",
        (Op::Realloc, _) => "invalid realloc",
    };
    let _ = writeln!(line, "zonal: {verb} of {addr:#x}: {}", fault.describe());
    crate::os::write_stderr(&line.buf[..line.len]);
    // SAFETY: abort has no preconditions; it does not return.
    unsafe { libc::abort() }
}

/// Reports the fault of a pointer that failed a fast-path check.
#[cold]
#[inline(never)]
pub(crate) fn report_bad_pointer(op: Op, addr: usize) -> ! {
    report(op, classify(addr), addr)
}

/// A fixed-size `fmt::Write` sink that truncates instead of allocating.
pub(crate) struct LineBuffer<const N: usize> {
    pub(crate) buf: [u8; N],
    pub(crate) len: usize,
}

impl<const N: usize> Write for LineBuffer<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
