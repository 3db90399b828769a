//! The benchmark binary's global allocator: one of zonal, glibc (`System`),
//! mimalloc or jemalloc, chosen once per process from the environment
//! variable `ZONAL_BENCH_ALLOC` (`zonal`, `system`, `mimalloc`, `jemalloc`;
//! unset means `system`).
//!
//! The choice is read with `libc::getenv` (which does not allocate) on the
//! first allocation, before any memory exists, so every block of the process
//! comes from the chosen allocator and the four never mix. The choice is a
//! pointer to a table of four functions, one per `GlobalAlloc` method, each
//! a thin wrapper around that allocator's own `GlobalAlloc` impl. Each call
//! then pays the same small dispatch cost whichever allocator is selected:
//! two loads and an indirect tail jump (3 instructions; callgrind counts
//! them in `__rust_alloc` / `__rust_dealloc`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

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

/// The four `GlobalAlloc` methods of one allocator.
struct Table {
    id: Allocator,
    alloc: unsafe fn(Layout) -> *mut u8,
    dealloc: unsafe fn(*mut u8, Layout),
    alloc_zeroed: unsafe fn(Layout) -> *mut u8,
    realloc: unsafe fn(*mut u8, Layout, usize) -> *mut u8,
}

/// A table forwarding to the `GlobalAlloc` impl of `$alloc`.
macro_rules! table {
    ($name:ident, $id:expr, $alloc:expr) => {
        static $name: Table = {
            unsafe fn alloc(layout: Layout) -> *mut u8 {
                // SAFETY: forwarded contract.
                unsafe { $alloc.alloc(layout) }
            }
            unsafe fn dealloc(ptr: *mut u8, layout: Layout) {
                // SAFETY: forwarded contract; `ptr` came from this allocator.
                unsafe { $alloc.dealloc(ptr, layout) }
            }
            unsafe fn alloc_zeroed(layout: Layout) -> *mut u8 {
                // SAFETY: forwarded contract.
                unsafe { $alloc.alloc_zeroed(layout) }
            }
            unsafe fn realloc(ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                // SAFETY: forwarded contract; `ptr` came from this allocator.
                unsafe { $alloc.realloc(ptr, layout, new_size) }
            }
            Table {
                id: $id,
                alloc,
                dealloc,
                alloc_zeroed,
                realloc,
            }
        };
    };
}

table!(ZONAL, Allocator::Zonal, zonal::Zonal);
table!(SYSTEM, Allocator::System, System);
table!(MIMALLOC, Allocator::Mimalloc, MiMalloc);
table!(JEMALLOC, Allocator::Jemalloc, Jemalloc);

/// Before the selection: each method selects, then calls the selected
/// allocator.
static FIRST: Table = {
    unsafe fn alloc(layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract.
        unsafe { (select().alloc)(layout) }
    }
    unsafe fn dealloc(ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract (unreachable in practice: nothing
        // is freed before the first allocation).
        unsafe { (select().dealloc)(ptr, layout) }
    }
    unsafe fn alloc_zeroed(layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract.
        unsafe { (select().alloc_zeroed)(layout) }
    }
    unsafe fn realloc(ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`.
        unsafe { (select().realloc)(ptr, layout, new_size) }
    }
    Table {
        id: Allocator::System,
        alloc,
        dealloc,
        alloc_zeroed,
        realloc,
    }
};

/// The table in use: `FIRST` until the selection, then one of the four.
static SELECTED: AtomicPtr<Table> = AtomicPtr::new(ptr::addr_of!(FIRST).cast_mut());

/// The selected table, selecting if needed.
fn selected() -> &'static Table {
    let t = SELECTED.load(Ordering::Acquire);
    if ptr::eq(t, &FIRST) {
        select()
    } else {
        // SAFETY: SELECTED only ever holds the address of one of the
        // static tables.
        unsafe { &*t }
    }
}

/// The allocator serving this process.
pub fn current() -> Allocator {
    selected().id
}

/// Reads `ZONAL_BENCH_ALLOC` and stores the table. Threads racing here all
/// store the same table. Runs before the first allocation of the process,
/// so it must not allocate.
#[cold]
#[inline(never)]
fn select() -> &'static Table {
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
    let table = match chosen {
        Allocator::Zonal => &ZONAL,
        Allocator::System => &SYSTEM,
        Allocator::Mimalloc => &MIMALLOC,
        Allocator::Jemalloc => &JEMALLOC,
    };
    SELECTED.store(ptr::from_ref(table).cast_mut(), Ordering::Release);
    table
}

/// Prints `msg` without allocating and aborts.
fn die(msg: &[u8]) -> ! {
    // SAFETY: writes `msg.len()` bytes from a live slice to stderr.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    std::process::abort()
}

/// The dispatching global allocator (see the module docs).
pub struct Dispatch;

/// The table for a call on the hot path. Acquire is a plain load on x86-64
/// and pairs with the release store of `select`.
#[inline(always)]
fn table() -> &'static Table {
    // SAFETY: SELECTED only ever holds the address of a static table.
    unsafe { &*SELECTED.load(Ordering::Acquire) }
}

// SAFETY: every method forwards to the same allocator for the whole life of
// the process (the selection is fixed before the first allocation), and
// each of the four upholds the `GlobalAlloc` contract.
unsafe impl GlobalAlloc for Dispatch {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { (table().alloc)(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract; `ptr` came from the same allocator.
        unsafe { (table().dealloc)(ptr, layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { (table().alloc_zeroed)(layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract; `ptr` came from the same allocator.
        unsafe { (table().realloc)(ptr, layout, new_size) }
    }
}
