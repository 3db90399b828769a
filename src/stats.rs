//! Statistics: per-zone counts of live bytes and blocks, peaks, committed
//! and reserved memory, and allocation and free counts.
//!
//! Counting is per thread (see `heap::Counters`): the fast paths count in
//! the page record they write anyway, and the owning thread adds those
//! counts to its own counters on the page's slow paths, with plain stores,
//! so statistics add no shared cache-line traffic. [`stats()`] sums the live threads' counters
//! and those of threads that have exited. Peaks are tracked at page
//! granularity: each thread flushes its live-byte change into a global total
//! on its slow paths (one atomic add per page, not per block) and the peak
//! is the maximum that total reached, so a peak can lag the true maximum by
//! at most a few pages per thread.

use crate::heap;
use crate::sync::{AtomicU64, Ordering};
use crate::Zone;
use core::fmt;

const ZONES: usize = 4;

struct Retired {
    allocs: AtomicU64,
    frees: AtomicU64,
    alloc_bytes: AtomicU64,
    free_bytes: AtomicU64,
}

static RETIRED: [Retired; ZONES] = [const {
    Retired {
        allocs: AtomicU64::new(0),
        frees: AtomicU64::new(0),
        alloc_bytes: AtomicU64::new(0),
        free_bytes: AtomicU64::new(0),
    }
}; ZONES];

static FLUSHED_LIVE: [AtomicU64; ZONES] = [const { AtomicU64::new(0) }; ZONES];
static PEAK: [AtomicU64; ZONES] = [const { AtomicU64::new(0) }; ZONES];
static RESERVED: [AtomicU64; ZONES] = [const { AtomicU64::new(0) }; ZONES];
static COMMITTED: [AtomicU64; ZONES] = [const { AtomicU64::new(0) }; ZONES];

/// Adds a thread's unflushed live-byte change and updates the peak.
pub(crate) fn add_live(zone: usize, delta: i64) {
    let live = FLUSHED_LIVE[zone]
        .fetch_add(delta as u64, Ordering::Relaxed)
        .wrapping_add(delta as u64);
    if (live as i64) > 0 {
        PEAK[zone].fetch_max(live, Ordering::Relaxed);
    }
}

/// Folds an exiting thread's counters into the retired totals.
pub(crate) fn retire_counters(zone: Zone, counters: &heap::Counters) {
    let r = &RETIRED[zone as usize];
    r.allocs
        .fetch_add(counters.allocs.load(Ordering::Relaxed), Ordering::Relaxed);
    r.frees
        .fetch_add(counters.frees.load(Ordering::Relaxed), Ordering::Relaxed);
    r.alloc_bytes.fetch_add(
        counters.alloc_bytes.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    r.free_bytes.fetch_add(
        counters.free_bytes.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
}

/// Counts blocks that the collector freed (it has no per-thread counters
/// of its own: they go straight into the retired totals).
pub(crate) fn add_collected(zone: Zone, blocks: u64, bytes: u64) {
    let r = &RETIRED[zone as usize];
    r.frees.fetch_add(blocks, Ordering::Relaxed);
    r.free_bytes.fetch_add(bytes, Ordering::Relaxed);
    add_live(zone as usize, -(bytes as i64));
}

/// Accounts memory a zone reserved (address space) or committed.
pub(crate) fn account(zone: Zone, reserved: isize, committed: isize) {
    RESERVED[zone as usize].fetch_add(reserved as u64, Ordering::Relaxed);
    COMMITTED[zone as usize].fetch_add(committed as u64, Ordering::Relaxed);
}

/// Statistics of one zone. Byte counts of blocks are their usable sizes:
/// the size class of a block up to 1 MiB (so `realloc` within its block
/// changes nothing), the requested size of a huge block (the GC zone: its
/// whole mapping). `committed_bytes` and `reserved_bytes` are
/// memory held from the OS for the zone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ZoneStats {
    /// Bytes allocated and not yet freed.
    pub live_bytes: u64,
    /// Blocks allocated and not yet freed.
    pub live_blocks: u64,
    /// Highest `live_bytes` seen (tracked per page; see the module docs).
    pub peak_bytes: u64,
    /// Bytes of the zone's segments that may be resident.
    pub committed_bytes: u64,
    /// Address space held for the zone.
    pub reserved_bytes: u64,
    /// Allocations so far (`realloc` in place counts as none).
    pub allocations: u64,
    /// Frees so far.
    pub frees: u64,
}

/// Statistics of the garbage collector (see [`crate::gc`]). Byte counts
/// are whole blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcStats {
    /// Collections run so far.
    pub collections: u64,
    /// How long the world was stopped by the last collection.
    pub pause_last: core::time::Duration,
    /// The longest stop so far.
    pub pause_max: core::time::Duration,
    /// All stops together.
    pub pause_total: core::time::Duration,
    /// The part of `pause_total` spent stopping the world and marking.
    pub mark_total: core::time::Duration,
    /// The part of `pause_total` spent sweeping (and resuming the world).
    pub sweep_total: core::time::Duration,
    /// Bytes of GC objects found reachable by the last collection.
    pub live_bytes_after: u64,
    /// Bytes the collector has freed so far.
    pub bytes_freed: u64,
    /// Finalizers (`Drop` of `Gc` values) run so far.
    pub finalizers_run: u64,
    /// Unreachable finalizable objects freed without their finalizer,
    /// because the thread that created them had exited.
    pub finalizers_skipped: u64,
    /// Cycles of finalizable objects found by the last collection: they are
    /// kept, and never finalized.
    pub finalizable_cycles: u64,
    /// Finalizable objects not yet found unreachable.
    pub finalizers_pending: u64,
    /// GC-zone bytes that the next automatic collection waits for.
    pub threshold: u64,
}

/// A snapshot of zonal's statistics, from [`stats()`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Per zone, indexed by `Zone as usize`; see [`Stats::zone`].
    pub zones: [ZoneStats; ZONES],
    /// Address space held from the OS by the whole allocator, including
    /// cached empty segments.
    pub os_reserved_bytes: u64,
    /// Memory committed from the OS by the whole allocator.
    pub os_committed_bytes: u64,
    /// Calls that gave committed memory back to the OS (`madvise` with
    /// `MADV_DONTNEED`) since the process started. Adjacent free pages go
    /// back in one call, so this counts system calls, not pages.
    pub os_decommits: u64,
    /// The garbage collector's statistics.
    pub gc: GcStats,
}

impl Stats {
    /// The statistics of one zone.
    pub fn zone(&self, zone: Zone) -> &ZoneStats {
        &self.zones[zone as usize]
    }
}

/// Takes a snapshot of the statistics.
///
/// Counters of running threads are read without stopping them, so a
/// snapshot taken while other threads allocate is a consistent sum of
/// slightly different moments.
///
/// Allocations from a page and frees into it (by any thread) are counted
/// in the page first, and reach the counters of the page's owner when that
/// page next takes a slow path (its free list refilled, the page emptied,
/// unfulled or given up), when the owner calls `stats()` or
/// [`release_free_memory`](crate::release_free_memory), or when it exits;
/// frees into pages of exited threads, when a thread takes such a page or
/// calls `stats()`. So `stats()` first carries out the calling thread's
/// queued frees (see `ZONAL_DEFER_FREES`) and takes in the frees other threads
/// made into the calling thread's pages and into pages of exited threads,
/// and the calling thread's own figures are exact. Another running
/// thread's may lag by what was allocated from or freed into its pages
/// since they last took a slow path, allocations and frees alike (a free
/// never counts before its allocation does).
///
/// ```
/// let before = zonal::stats().zone(zonal::Zone::Manual).allocations;
/// let v = allocator_api2::vec::Vec::<u64, _>::with_capacity_in(100, zonal::ManualZone);
/// let s = zonal::stats();
/// assert!(s.zone(zonal::Zone::Manual).allocations > before);
/// assert!(s.zone(zonal::Zone::Manual).live_bytes >= 800);
/// drop(v);
/// println!("{s}");
/// ```
pub fn stats() -> Stats {
    // SAFETY: the thread's heap outlives this call.
    heap::settle_counts(unsafe { &*heap::current() });
    let mut zones = [ZoneStats::default(); ZONES];
    for zone in [Zone::Gc, Zone::Manual, Zone::Pinned, Zone::Stack] {
        let i = zone as usize;
        let (allocs, frees, alloc_bytes, free_bytes) = heap::with_registry_locked(|heaps| {
            let r = &RETIRED[i];
            let mut sums = [&r.allocs, &r.frees, &r.alloc_bytes, &r.free_bytes]
                .map(|counter| counter.load(Ordering::Relaxed));
            heaps.for_each_counters(zone, |c| {
                for (sum, counter) in
                    sums.iter_mut()
                        .zip([&c.allocs, &c.frees, &c.alloc_bytes, &c.free_bytes])
                {
                    *sum = sum.wrapping_add(counter.load(Ordering::Relaxed));
                }
            });
            (sums[0], sums[1], sums[2], sums[3])
        });
        let live_bytes = (alloc_bytes.wrapping_sub(free_bytes) as i64).max(0) as u64;
        let peak = PEAK[i]
            .fetch_max(live_bytes, Ordering::Relaxed)
            .max(live_bytes);
        zones[i] = ZoneStats {
            live_bytes,
            live_blocks: (allocs.wrapping_sub(frees) as i64).max(0) as u64,
            peak_bytes: peak,
            committed_bytes: COMMITTED[i].load(Ordering::Relaxed),
            reserved_bytes: RESERVED[i].load(Ordering::Relaxed),
            allocations: allocs,
            frees,
        };
    }
    Stats {
        zones,
        os_reserved_bytes: crate::os::reserved_bytes() as u64,
        os_committed_bytes: crate::os::committed_bytes() as u64,
        os_decommits: crate::os::decommit_calls() as u64,
        gc: crate::gc::stats(),
    }
}

impl fmt::Display for Stats {
    /// A table with one row per zone and a row for the OS totals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<8} {:>12} {:>11} {:>12} {:>12} {:>12} {:>12} {:>12}",
            "zone", "live", "blocks", "peak", "committed", "reserved", "allocs", "frees"
        )?;
        for zone in [Zone::Gc, Zone::Manual, Zone::Pinned, Zone::Stack] {
            let z = self.zone(zone);
            writeln!(
                f,
                "{:<8} {:>12} {:>11} {:>12} {:>12} {:>12} {:>12} {:>12}",
                zone.name(),
                Bytes(z.live_bytes),
                z.live_blocks,
                Bytes(z.peak_bytes),
                Bytes(z.committed_bytes),
                Bytes(z.reserved_bytes),
                z.allocations,
                z.frees
            )?;
        }
        writeln!(
            f,
            "{:<8} {:>12} {:>11} {:>12} {:>12} {:>12}   {} decommit calls",
            "os",
            "",
            "",
            "",
            Bytes(self.os_committed_bytes),
            Bytes(self.os_reserved_bytes),
            self.os_decommits
        )?;
        let gc = &self.gc;
        writeln!(
            f,
            "gc: {} collections, pause last {:.2} ms / max {:.2} ms / total {:.1} ms \
             (mark {:.1} ms, sweep {:.1} ms), \
             {} live after the last, {} freed, {} finalizers run ({} skipped, {} pending), \
             {} finalizable cycles kept",
            gc.collections,
            gc.pause_last.as_secs_f64() * 1e3,
            gc.pause_max.as_secs_f64() * 1e3,
            gc.pause_total.as_secs_f64() * 1e3,
            gc.mark_total.as_secs_f64() * 1e3,
            gc.sweep_total.as_secs_f64() * 1e3,
            Bytes(gc.live_bytes_after),
            Bytes(gc.bytes_freed),
            gc.finalizers_run,
            gc.finalizers_skipped,
            gc.finalizers_pending,
            gc.finalizable_cycles
        )
    }
}

/// A byte count printed with a binary unit.
struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit < UNITS.len() - 1 {
            value /= 1024.0;
            unit += 1;
        }
        let mut text = crate::fault::LineBuffer {
            buf: [0u8; 32],
            len: 0,
        };
        let _ = if unit == 0 {
            fmt::Write::write_fmt(&mut text, format_args!("{} B", self.0))
        } else {
            fmt::Write::write_fmt(&mut text, format_args!("{value:.1} {}", UNITS[unit]))
        };
        f.pad(core::str::from_utf8(&text.buf[..text.len]).unwrap_or(""))
    }
}

/// Arranges for the table to be printed to stderr at exit
/// (`ZONAL_SHOW_STATS=1`).
pub(crate) fn print_at_exit() {
    extern "C" fn print() {
        let mut out = crate::fault::LineBuffer {
            buf: [0u8; 2048],
            len: 0,
        };
        let _ = fmt::Write::write_fmt(&mut out, format_args!("zonal statistics:\n{}", stats()));
        crate::os::write_stderr(&out.buf[..out.len]);
    }
    // SAFETY: `print` is a plain extern "C" function that stays valid for the
    // life of the process.
    unsafe { libc::atexit(print) };
}
