//! One collection, start to end, and the trigger that decides when the
//! next one runs.
//!
//! Lock order (every path that takes more than one of these takes them in
//! this order): [`COLLECTION`], the dynamic linker's lock (a collection
//! runs inside a `dl_iterate_phdr` callback, so no object is loaded or
//! unloaded while its data is scanned), the thread registry, the pool.
//! `fork`'s prepare handler takes `COLLECTION` first, so no collector holds
//! the linker's lock when the process forks (glibc does not reset it in the
//! child). A thread inside `dlopen` holds the linker's lock and may
//! allocate: its automatic collections only *try* `COLLECTION`, so it never
//! waits for a collector that waits for the linker's lock.
//!
//! 1. stop every other registered thread (`thread::suspend`);
//! 2. with the pool locked: clear the marks, mark from the roots
//!    (`roots`), clear weak links to unmarked objects (`weak`), find the
//!    finalizable objects that are ready and keep them (`finalize`);
//! 3. sweep (`sweep`), resume the world;
//! 4. record statistics and set the next trigger.
//!
//! The trigger follows Boehm's free-space divisor and his "collect or
//! expand" rule. Let `work = 2 * scannable live + atomic live / 4 + roots`
//! (what the last collection scanned) and `full(work) = work ×
//! ZONAL_GC_GROWTH_PERCENT / 100 × freed share`, where the freed share is
//! how much of the allocation since the previous collection this one found
//! dead (50 % to 100 %). Let the *heap* be the most bytes of GC blocks any
//! trigger so far let be in use at once (live after a collection plus its
//! trigger, the minimum left out; it never shrinks). The next collection
//! comes after `max(minimum, heap - live, full(work) / 2, small - live)`
//! more bytes of GC allocation (see [`record`]):
//!
//! * `heap - live`: while the heap has room, the program fills it before
//!   the next collection, whatever the live size;
//! * `full(work) / 2`: the heap grows (the trigger reaches past it) only
//!   when less than half the full trigger would be allocated before it
//!   fills, so the work of a collection (proportional to what it scans) is
//!   always paid for by a proportional amount of allocation and GC work per
//!   allocated byte stays bounded (Boehm's default free-space divisor of 3
//!   is `full / 2` with the default 67 %);
//! * `small = steady + full(steady's share of work)`, counted only while it
//!   is at most 8 × the minimum (128 MiB by default): a small heap may grow
//!   to the *steady* live (the least of the last 16 collections, so not a
//!   structure that happened to be half built at one of them) plus a whole
//!   full trigger, since small heaps cost little memory and their
//!   collections, cheap one by one, would otherwise come often.
//!
//! The freed share keeps a structure that is being built (nothing dies)
//! from growing the heap by much at each collection (`full / 2` is then a
//! quarter of the growth percentage of the scan work), so a small trigger
//! finds it dead soon after it is dropped, instead of letting a whole
//! trigger's worth of new allocation pile up on top of it. Filling the heap
//! before collecting makes the peak memory of a program with a phase of
//! large live data (the heap it needed then) also the peak of what
//! follows, as for bdwgc, instead of a trigger proportional to each
//! collection's live bytes (which, taken while a large temporary structure
//! is half built, would let memory grow past that peak).

use super::mark::Marker;
use super::table::MappedVec;
use super::{finalize, roots, sweep, weak};
use crate::sync::{AtomicU64, AtomicUsize, Ordering, SpinLock};
use crate::thread::{self, suspend};
use core::cell::UnsafeCell;
use core::ffi::c_void;

/// Held for a whole collection; also taken by threads that are not
/// registered (whose work the stop cannot exclude) around GC-zone
/// operations and huge-block releases.
pub(crate) static COLLECTION: SpinLock = SpinLock::new();

struct MarkerCell(UnsafeCell<Marker>);
// SAFETY: only used with `COLLECTION` held.
unsafe impl Sync for MarkerCell {}
static MARKER: MarkerCell = MarkerCell(UnsafeCell::new(Marker::new()));

/// Blocks threads have queued for freeing, hidden from the collection
/// (see `free::hide_queued_frees`); used only with `COLLECTION` held.
struct HiddenCell(UnsafeCell<MappedVec<usize>>);
// SAFETY: only used with `COLLECTION` held.
unsafe impl Sync for HiddenCell {}
/// Room for 64 queued frees of each of 16,384 threads (address space only
/// until used).
static HIDDEN: HiddenCell = HiddenCell(UnsafeCell::new(MappedVec::new(1 << 20)));

/// GC-zone bytes allocated since the last collection (flushed from the
/// threads in batches, see `gc::alloc`).
pub(crate) static ALLOCATED_SINCE: AtomicUsize = AtomicUsize::new(0);
/// Bytes of GC allocation that start the next collection.
pub(crate) static TRIGGER: AtomicUsize = AtomicUsize::new(0);
/// The heap: the most bytes of GC blocks a trigger so far let be in use
/// at once (live after a collection plus its trigger, not counting the
/// minimum).
pub(crate) static HEAP: AtomicUsize = AtomicUsize::new(0);
/// Live bytes after the last [`STEADY_WINDOW`] collections (0: none yet).
static RECENT_LIVE: [AtomicUsize; STEADY_WINDOW] = [const { AtomicUsize::new(0) }; STEADY_WINDOW];
/// Collections whose least live size is the steady one.
const STEADY_WINDOW: usize = 16;
/// Heaps up to this many minimum thresholds are small (see the module docs).
const SMALL_HEAP_MINIMUMS: usize = 8;
/// The user's minimum (`gc::set_threshold`), 0 for the option's default.
pub(crate) static MIN_THRESHOLD: AtomicUsize = AtomicUsize::new(0);
/// Disable guards alive.
pub(crate) static DISABLED: AtomicUsize = AtomicUsize::new(0);

pub(crate) static COLLECTIONS: AtomicU64 = AtomicU64::new(0);
pub(crate) static PAUSE_LAST_NS: AtomicU64 = AtomicU64::new(0);
pub(crate) static PAUSE_MAX_NS: AtomicU64 = AtomicU64::new(0);
pub(crate) static PAUSE_TOTAL_NS: AtomicU64 = AtomicU64::new(0);
pub(crate) static LIVE_AFTER: AtomicU64 = AtomicU64::new(0);
pub(crate) static BYTES_FREED: AtomicU64 = AtomicU64::new(0);
pub(crate) static MARK_TOTAL_NS: AtomicU64 = AtomicU64::new(0);
pub(crate) static SWEEP_TOTAL_NS: AtomicU64 = AtomicU64::new(0);

/// The minimum bytes between automatic collections.
pub(crate) fn min_threshold() -> usize {
    match MIN_THRESHOLD.load(Ordering::Relaxed) {
        0 => crate::options::get().gc_min_threshold,
        bytes => bytes,
    }
}

/// The current trigger (the minimum until the first collection).
pub(crate) fn trigger() -> usize {
    TRIGGER.load(Ordering::Relaxed).max(min_threshold())
}

/// Runs a full collection, unless this one is automatic and collections
/// are disabled or no longer due. Must not be called inside a deferral
/// section or with a zonal lock held.
///
/// Requests coalesce: an explicit request is satisfied by any collection
/// that started after it was made (so threads that call `collect` at the
/// same time share one), and an automatic one is dropped when another
/// thread is already collecting (its allocation is counted against the
/// next trigger). Back-to-back collections leave the other threads at
/// least as much time to run as the last pause took (see
/// [`let_mutators_run`]).
pub(crate) fn collect(automatic: bool) {
    if automatic && (DISABLED.load(Ordering::Relaxed) > 0 || crate::options::get().gc_disable) {
        return;
    }
    thread::register_current();
    if thread::current().is_none() {
        // An exiting thread: its stack is no longer scanned, so it cannot
        // collect (anything only it refers to would be freed).
        return;
    }
    // The caller's queued frees were made before the collection: their
    // blocks must not be scanned as live. (Other threads' queues, at most
    // 64 small blocks each, are scanned until they are carried out.)
    // SAFETY: the thread's heap outlives this call.
    crate::free::carry_out_deferred_frees(unsafe { &*crate::heap::current() });
    let requested = STARTED.load(Ordering::Acquire) + 1;
    if automatic {
        if !COLLECTION.try_lock() {
            return;
        }
    } else {
        COLLECTION.lock();
    }
    let due = if automatic {
        ALLOCATED_SINCE.load(Ordering::Relaxed) >= trigger()
    } else {
        COLLECTIONS.load(Ordering::Acquire) < requested
    };
    if due {
        let_mutators_run();
        // The caller's registers, and the top of its stack: the collector's
        // own stack is scanned from here up, not from deep inside the
        // collection, whose frames may hold stale addresses in slots they
        // have not written yet.
        let registers = thread::suspend::spill_registers();
        let mut stack_top = registers.as_ptr() as usize;
        // The collection runs in the callback, with the linker's lock held.
        unsafe extern "C" fn first_object_only(
            _info: *mut libc::dl_phdr_info,
            _size: libc::size_t,
            data: *mut c_void,
        ) -> libc::c_int {
            // SAFETY: `data` is the `stack_top` passed below.
            collect_with_linker_locked(unsafe { *data.cast::<usize>() });
            1
        }
        // SAFETY: the callback matches the expected type and only reads the
        // `usize` we pass; returning 1 ends the iteration after the first
        // object.
        unsafe {
            libc::dl_iterate_phdr(
                Some(first_object_only),
                (&mut stack_top as *mut usize).cast(),
            )
        };
        core::hint::black_box(&registers);
    }
    COLLECTION.unlock();
    clear_dead_stack();
}

/// Zeroes the stack below the caller, where finished calls left object
/// addresses (the collection's mark FIFO and scan cursors; the program's
/// own deep recursions). Frames the program calls later may leave some of
/// their slots unwritten, and a stale address there would keep its object
/// alive at every collection while that frame lives. Run after each
/// collection and on the GC allocation slow path (once per page of small
/// blocks), as bdwgc's `GC_clear_stack` is.
#[inline(never)]
pub(crate) fn clear_dead_stack() {
    let mut frame = [0usize; 1024];
    core::hint::black_box(&mut frame);
}

/// Collections started so far (`COLLECTION` held to increment).
static STARTED: AtomicU64 = AtomicU64::new(0);
/// When the last collection resumed the world (monotonic nanoseconds).
static LAST_END_NS: AtomicU64 = AtomicU64::new(0);

/// If the last collection ended less than its own pause ago, waits out the
/// difference (at most 20 ms): threads that collect back to back would
/// otherwise keep the world stopped nearly all the time, and a thread they
/// stop would barely run between stops.
fn let_mutators_run() {
    let pause = PAUSE_LAST_NS.load(Ordering::Relaxed).min(20_000_000);
    let since = now_ns().saturating_sub(LAST_END_NS.load(Ordering::Relaxed));
    if since < pause {
        let wait = pause - since;
        let duration = libc::timespec {
            tv_sec: 0,
            tv_nsec: wait as libc::c_long,
        };
        // SAFETY: `duration` is valid; an early wake-up (EINTR) is fine.
        unsafe { libc::nanosleep(&duration, core::ptr::null_mut()) };
    }
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One collection; the caller holds `COLLECTION` and the linker's lock.
/// The collecting thread's stack is scanned from `stack_top` up.
fn collect_with_linker_locked(stack_top: usize) {
    let Some(me) = thread::current() else {
        return;
    };
    STARTED.fetch_add(1, Ordering::Relaxed);
    thread::lock().lock();
    let start = std::time::Instant::now();
    let epoch = suspend::stop_world();
    // SAFETY: `COLLECTION` is held: nobody else uses the hidden list.
    let hidden = unsafe { &mut *HIDDEN.0.get() };
    crate::free::hide_queued_frees(hidden);
    // SAFETY: `COLLECTION` is held: nobody else uses the marker.
    let marker = unsafe { &mut *MARKER.0.get() };
    crate::segment::pool_lock().lock();
    marker.begin(crate::options::get().gc_mark_stack);
    roots::mark_all(marker, me, stack_top);
    marker.finish();
    weak::clear_unreachable();
    finalize::find_ready(marker);
    marker.finish();
    crate::segment::pool_lock().unlock();
    let marked = std::time::Instant::now();
    let swept = sweep::sweep_all(ALLOCATED_SINCE.load(Ordering::Relaxed));
    crate::free::unhide_queued_frees(hidden);
    suspend::resume_world(epoch);
    LAST_END_NS.store(now_ns(), Ordering::Relaxed);
    MARK_TOTAL_NS.fetch_add((marked - start).as_nanos() as u64, Ordering::Relaxed);
    SWEEP_TOTAL_NS.fetch_add(marked.elapsed().as_nanos() as u64, Ordering::Relaxed);
    let pause = start.elapsed().as_nanos() as u64;
    thread::lock().unlock();
    record(marker, swept, pause);
}

fn record(marker: &Marker, swept: sweep::Swept, pause_ns: u64) {
    COLLECTIONS.fetch_add(1, Ordering::Release);
    PAUSE_LAST_NS.store(pause_ns, Ordering::Relaxed);
    PAUSE_MAX_NS.fetch_max(pause_ns, Ordering::Relaxed);
    PAUSE_TOTAL_NS.fetch_add(pause_ns, Ordering::Relaxed);
    LIVE_AFTER.store(marker.marked_bytes as u64, Ordering::Relaxed);
    BYTES_FREED.fetch_add(swept.bytes, Ordering::Relaxed);
    let atomic = marker.marked_bytes - marker.marked_scannable_bytes;
    let work = 2 * marker.marked_scannable_bytes + atomic / 4 + marker.root_bytes;
    let percent = crate::options::get().gc_growth_percent;
    // Scaled by how much of what was allocated since the last collection
    // this one found dead (at least half; see the module docs).
    let allocated = ALLOCATED_SINCE.load(Ordering::Relaxed).max(1) as u64;
    let freed_share = (swept.bytes.min(allocated) * 100 / allocated).max(50) as usize;
    let full = |work: usize| work / 100 * percent / 100 * freed_share;
    let live = marker.marked_bytes;
    let mut next = full(work) / 2;
    let slot = (COLLECTIONS.load(Ordering::Relaxed) as usize) % STEADY_WINDOW;
    RECENT_LIVE[slot].store(live.max(1), Ordering::Relaxed);
    let steady = RECENT_LIVE
        .iter()
        .map(|l| l.load(Ordering::Relaxed))
        .filter(|&l| l != 0)
        .min()
        .unwrap_or(live);
    // The steady live's share of `work` (scanned as the last collection's).
    let steady_work = (work as u128 * steady as u128 / live.max(1) as u128) as usize;
    let small = steady.saturating_add(full(steady_work));
    let min = min_threshold();
    if small <= SMALL_HEAP_MINIMUMS.saturating_mul(min) {
        next = next.max(small.saturating_sub(live));
    }
    let heap = HEAP.load(Ordering::Relaxed);
    next = next.max(heap.saturating_sub(live));
    // Not counting the minimum: it spaces collections of a small heap, and
    // the heap filled only by it would let the allocation between two of
    // them exceed it whenever the live size drops.
    HEAP.store(heap.max(live.saturating_add(next)), Ordering::Relaxed);
    TRIGGER.store(next, Ordering::Relaxed);
    ALLOCATED_SINCE.store(0, Ordering::Relaxed);
}
