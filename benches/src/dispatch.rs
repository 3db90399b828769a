//! The benchmark binary's global allocator: one of zonal, glibc (`System`),
//! mimalloc or jemalloc, chosen once per process from the environment
//! variable `ZONAL_BENCH_ALLOC` (`zonal`, `system`, `mimalloc`, `jemalloc`;
//! unset means `system`).
//!
//! The choice is read with `libc::getenv` (which does not allocate) on the
//! first allocation, before any memory exists, so every block of the process
//! comes from the chosen allocator and the four never mix. Each call then
//! pays the same small dispatch cost — a relaxed load of one byte and a
//! jump-table branch — whichever allocator is selected; zonal is called
//! through its `GlobalAlloc` impl (inlined, as it would be as a real
//! `#[global_allocator]`), the peers through theirs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};

use mimalloc::MiMalloc;
use tikv_jemallocator::Jemalloc;

/// The environment variable naming the allocator of a process.
pub const ENV_VAR: &str = "ZONAL_BENCH_ALLOC";

/// The allocators the benchmarks compare, in the order tables print them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Allocator {
    /// zonal's manual zone.
    Zonal = 1,
    /// `std::alloc::System`, that is glibc malloc.
    System = 2,
    /// mimalloc (crate `mimalloc`).
    Mimalloc = 3,
    /// jemalloc (crate `tikv-jemallocator`).
    Jemalloc = 4,
}

impl Allocator {
    /// Every allocator, zonal first.
    pub const ALL: [Allocator; 4] = [
        Allocator::Zonal,
        Allocator::System,
        Allocator::Mimalloc,
        Allocator::Jemalloc,
    ];

    /// The name used on the command line and in `ZONAL_BENCH_ALLOC`.
    pub fn name(self) -> &'static str {
        match self {
            Allocator::Zonal => "zonal",
            Allocator::System => "system",
            Allocator::Mimalloc => "mimalloc",
            Allocator::Jemalloc => "jemalloc",
        }
    }

    /// The name used in table headers.
    pub fn label(self) -> &'static str {
        match self {
            Allocator::Zonal => "zonal",
            Allocator::System => "System (glibc)",
            Allocator::Mimalloc => "mimalloc",
            Allocator::Jemalloc => "jemalloc",
        }
    }

    /// Parses a name as written by [`Allocator::name`] (`glibc` is accepted
    /// for `system`).
    pub fn parse(name: &[u8]) -> Option<Allocator> {
        match name {
            b"zonal" => Some(Allocator::Zonal),
            b"system" | b"glibc" => Some(Allocator::System),
            b"mimalloc" => Some(Allocator::Mimalloc),
            b"jemalloc" => Some(Allocator::Jemalloc),
            _ => None,
        }
    }
}

/// Not yet read from the environment.
const UNSET: u8 = 0;

static SELECTED: AtomicU8 = AtomicU8::new(UNSET);

/// The allocator serving this process.
pub fn current() -> Allocator {
    match selected() {
        1 => Allocator::Zonal,
        3 => Allocator::Mimalloc,
        4 => Allocator::Jemalloc,
        _ => Allocator::System,
    }
}

#[inline(always)]
fn selected() -> u8 {
    let s = SELECTED.load(Ordering::Relaxed);
    if s != UNSET {
        s
    } else {
        init()
    }
}

/// Reads `ZONAL_BENCH_ALLOC`. Threads racing here all compute the same
/// value. Runs before the first allocation, so it must not allocate.
#[cold]
#[inline(never)]
fn init() -> u8 {
    let name = c"ZONAL_BENCH_ALLOC";
    // SAFETY: `name` is NUL-terminated; getenv returns NULL or a
    // NUL-terminated string, copied out of at once.
    let value = unsafe { libc::getenv(name.as_ptr()) };
    let chosen = if value.is_null() {
        Allocator::System
    } else {
        // SAFETY: see above.
        let bytes = unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes();
        match Allocator::parse(bytes) {
            Some(a) => a,
            None => die(
                b"zonal-benches: ZONAL_BENCH_ALLOC must be zonal, system, mimalloc or jemalloc\n",
            ),
        }
    };
    SELECTED.store(chosen as u8, Ordering::Relaxed);
    chosen as u8
}

/// Prints `msg` without allocating and aborts.
fn die(msg: &[u8]) -> ! {
    // SAFETY: writes `msg.len()` bytes from a live slice to stderr.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    std::process::abort()
}

/// The dispatching global allocator (see the module docs).
pub struct Dispatch;

macro_rules! dispatch {
    ($method:ident($($arg:expr),*)) => {
        match selected() {
            1 => zonal::Zonal.$method($($arg),*),
            2 => System.$method($($arg),*),
            3 => MiMalloc.$method($($arg),*),
            4 => Jemalloc.$method($($arg),*),
            // `selected` only returns the four values above (the callers are
            // unsafe blocks).
            _ => std::hint::unreachable_unchecked(),
        }
    };
}

// SAFETY: every method forwards to the same allocator for the whole life of
// the process (the selection is fixed before the first allocation), and
// each of the four upholds the `GlobalAlloc` contract.
unsafe impl GlobalAlloc for Dispatch {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { dispatch!(alloc(layout)) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract; `ptr` came from the same allocator.
        unsafe { dispatch!(dealloc(ptr, layout)) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { dispatch!(alloc_zeroed(layout)) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract; `ptr` came from the same allocator.
        unsafe { dispatch!(realloc(ptr, layout, new_size)) }
    }
}
