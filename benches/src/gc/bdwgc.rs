//! bdwgc (the Boehm-Demers-Weiser conservative collector, Debian's
//! `libgc-dev`) through FFI: the few functions the GC benchmarks need, a
//! typed handle to a collected object, and a pause recorder fed by bdwgc's
//! collection-event callback.
//!
//! `build.rs` links `-lgc`; `setup.sh` installs the library.
//!
//! **Pauses.** bdwgc reports the phases of every collection to one callback
//! ([`GC_set_on_collection_event`]). The recorder timestamps two pairs:
//!
//! - `GC_EVENT_START` .. `GC_EVENT_END`: the whole collection, from the
//!   decision to collect to the end of its bookkeeping. The benchmarks are
//!   single-threaded, so this is the time the program's only thread waits:
//!   the pause the tables report.
//! - `GC_EVENT_PRE_STOP_WORLD` .. `GC_EVENT_POST_START_WORLD`: the time the
//!   world is stopped (root scan and mark), a subset of the above, reported
//!   as a note.
//!
//! Both exclude bdwgc's lazy sweeping, which happens later, inside
//! allocations, and is counted in the total time only.

use std::ffi::{c_int, c_ulong, c_void};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use super::pauses::{now_ns, PauseLog, PauseSummary};

/// `GC_EventType` values (gc.h, bdwgc 8.2).
const GC_EVENT_START: c_int = 0;
const GC_EVENT_END: c_int = 5;
const GC_EVENT_PRE_STOP_WORLD: c_int = 6;
const GC_EVENT_POST_START_WORLD: c_int = 9;

#[link(name = "gc")]
extern "C" {
    fn GC_init();
    fn GC_malloc(size: usize) -> *mut c_void;
    fn GC_malloc_atomic(size: usize) -> *mut c_void;
    fn GC_gcollect();
    fn GC_get_heap_size() -> usize;
    fn GC_get_gc_no() -> usize;
    fn GC_get_parallel() -> c_int;
    fn GC_set_on_collection_event(callback: Option<extern "C" fn(c_int)>);
    fn GC_start_performance_measurement();
    fn GC_get_full_gc_total_time() -> c_ulong;
    fn GC_start_mark_threads();
}

/// Whole collections (`GC_EVENT_START` .. `GC_EVENT_END`).
static COLLECTIONS: PauseLog = PauseLog::new();
/// World stopped (`GC_EVENT_PRE_STOP_WORLD` .. `GC_EVENT_POST_START_WORLD`).
static STOPPED: PauseLog = PauseLog::new();

/// bdwgc's collection-event callback: timestamps the two pause kinds.
extern "C" fn on_event(event: c_int) {
    match event {
        GC_EVENT_START => COLLECTIONS.begin(now_ns()),
        GC_EVENT_END => COLLECTIONS.end(now_ns()),
        GC_EVENT_PRE_STOP_WORLD => STOPPED.begin(now_ns()),
        GC_EVENT_POST_START_WORLD => STOPPED.end(now_ns()),
        _ => {}
    }
}

/// Initialises bdwgc on the calling (main) thread and installs the pause
/// recorder. Call once, before any other function of this module.
pub fn init() {
    COLLECTIONS.map();
    STOPPED.map();
    // SAFETY: called once from the main thread before any allocation from
    // bdwgc, as gc.h asks; the callback is a plain function that does not
    // allocate or call back into bdwgc.
    unsafe {
        GC_init();
        GC_start_performance_measurement();
        GC_set_on_collection_event(Some(on_event));
    }
}

/// Starts bdwgc's parallel marker threads. bdwgc starts them lazily, when
/// the program creates its first thread through bdwgc's `pthread_create`
/// wrapper; a single-threaded program (or a Rust program, whose threads do
/// not go through the wrapper) marks on one thread unless it asks.
pub fn start_mark_threads() {
    // SAFETY: bdwgc is initialised (`init` first); the call only starts
    // bdwgc's own helper threads.
    unsafe { GC_start_mark_threads() }
}

/// What bdwgc did during a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Report {
    /// Whole collections.
    pub collections: PauseSummary,
    /// World-stopped intervals.
    pub stopped: PauseSummary,
    /// bdwgc's own count of collections (`GC_get_gc_no`, includes any at
    /// start-up).
    pub gc_no: u64,
    /// `GC_get_parallel()`: parallel marker threads besides the collecting
    /// one (0: marking is single-threaded).
    pub parallel: i32,
    /// bdwgc's own total of full-collection time, milliseconds.
    pub full_gc_ms: u64,
    /// The heap size at the end of the run, bytes.
    pub heap_bytes: u64,
}

/// Reads the pause recorder and bdwgc's counters.
pub fn report() -> Report {
    // SAFETY: plain getters; the program is single-threaded here, so the
    // unsynchronised ones (gc.h's warning) race with nothing.
    unsafe {
        Report {
            collections: COLLECTIONS.summary(),
            stopped: STOPPED.summary(),
            gc_no: GC_get_gc_no() as u64,
            parallel: GC_get_parallel(),
            full_gc_ms: GC_get_full_gc_total_time() as u64,
            heap_bytes: GC_get_heap_size() as u64,
        }
    }
}

/// Runs a full collection (used only outside the timed part, if at all).
#[allow(dead_code)]
pub fn collect() {
    // SAFETY: bdwgc is initialised (callers call `init` first).
    unsafe { GC_gcollect() }
}

/// A pointer to a `T` in bdwgc's scanned heap.
///
/// bdwgc frees an object when no pointer to it is left where it looks:
/// stacks, registers, static data and its own heap. A `BdwRef` must live
/// only there (never in memory from the global allocator, which bdwgc does
/// not scan); see [`BdwRef::new`]. `T`'s destructor never runs.
pub struct BdwRef<T>(NonNull<T>);

impl<T> Clone for BdwRef<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for BdwRef<T> {}

impl<T> BdwRef<T> {
    /// Moves `value` into memory from `GC_malloc` (scanned for pointers).
    ///
    /// # Safety
    ///
    /// The returned handle and its copies may be kept only on the stack, in
    /// registers, in static data or inside other bdwgc objects: anywhere
    /// else bdwgc does not see them and may free the object under them.
    /// bdwgc must be initialised ([`init`]).
    pub unsafe fn new(value: T) -> BdwRef<T> {
        const { assert!(std::mem::align_of::<T>() <= 16) };
        const { assert!(!std::mem::needs_drop::<T>()) };
        // SAFETY: bdwgc is initialised (caller's contract).
        let p = unsafe { GC_malloc(std::mem::size_of::<T>().max(1)) }.cast::<T>();
        let Some(p) = NonNull::new(p) else {
            oom(std::mem::size_of::<T>())
        };
        // SAFETY: `p` is fresh, 16-byte aligned (bdwgc's granule) memory of
        // `size_of::<T>()` bytes.
        unsafe { p.as_ptr().write(value) };
        BdwRef(p)
    }
}

impl<T> Deref for BdwRef<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the object is initialised by `new` and stays allocated
        // while this handle is where bdwgc scans (the contract of `new`);
        // only shared references are ever made.
        unsafe { self.0.as_ref() }
    }
}

/// A zeroed `[f64]` in bdwgc's pointer-free ("atomic") memory, never
/// scanned. Like [`BdwRef`], it must live where bdwgc looks for roots.
pub struct BdwDoubles {
    ptr: NonNull<f64>,
    len: usize,
}

impl BdwDoubles {
    /// `len` zeroes from `GC_malloc_atomic`.
    ///
    /// # Safety
    ///
    /// As for [`BdwRef::new`].
    pub unsafe fn zeroed(len: usize) -> BdwDoubles {
        let bytes = len * std::mem::size_of::<f64>();
        // SAFETY: bdwgc is initialised (caller's contract).
        let p = unsafe { GC_malloc_atomic(bytes.max(1)) }.cast::<f64>();
        let Some(ptr) = NonNull::new(p) else {
            oom(bytes)
        };
        // SAFETY: `ptr` is fresh memory of `bytes` bytes (atomic memory is
        // not cleared by bdwgc).
        unsafe { ptr.as_ptr().write_bytes(0, len) };
        BdwDoubles { ptr, len }
    }
}

impl Deref for BdwDoubles {
    type Target = [f64];

    fn deref(&self) -> &[f64] {
        // SAFETY: `len` initialised doubles, kept alive by this handle being
        // where bdwgc scans (the contract of `zeroed`).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for BdwDoubles {
    fn deref_mut(&mut self) -> &mut [f64] {
        // SAFETY: as in `deref`; `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

#[cold]
fn oom(bytes: usize) -> ! {
    eprintln!("zonal-benches: bdwgc could not allocate {bytes} bytes");
    std::process::abort()
}
