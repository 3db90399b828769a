//! Per-collection pause logs, for the median and maximum pause of a run.
//!
//! A [`PauseLog`] stores durations in an anonymous mapping made by
//! [`PauseLog::map`], not in static data or on the heap: bdwgc scans every
//! loaded object's writable data, and zonal's collector scans that and the
//! manual zone's live memory, so a log kept there would lengthen the very
//! pauses it records. A mapping of its own is scanned by neither.
//!
//! Two sources fill logs: bdwgc's collection-event callback (see
//! [`super::bdwgc`]) and, for zonal, [`ZonalPoll`], which reads
//! `zonal::stats().gc` every few thousand allocations and logs `pause_last`
//! whenever exactly one collection happened since the previous look.

use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// How many pauses a log keeps (later ones still count in the maximum,
/// total and count, not in the median).
const CAPACITY: usize = 1 << 16;

/// Durations of one kind of pause, in nanoseconds. Written from one thread
/// at a time (bdwgc calls back under its lock; the zonal poll runs on the
/// benchmark's only thread).
pub struct PauseLog {
    started: AtomicU64,
    stored: AtomicUsize,
    count: AtomicU64,
    max: AtomicU64,
    total: AtomicU64,
    values: AtomicPtr<u64>,
}

/// Count, median, maximum and total of a log, in nanoseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct PauseSummary {
    /// Pauses recorded.
    pub count: u64,
    /// Median pause (upper median of the stored ones).
    pub median_ns: u64,
    /// Longest pause.
    pub max_ns: u64,
    /// Sum of the pauses.
    pub total_ns: u64,
}

impl PauseLog {
    /// An empty log; call [`PauseLog::map`] before recording.
    pub const fn new() -> PauseLog {
        PauseLog {
            started: AtomicU64::new(0),
            stored: AtomicUsize::new(0),
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
            total: AtomicU64::new(0),
            values: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// Maps the storage for the durations (without it, only the count,
    /// maximum and total are kept).
    pub fn map(&self) {
        let bytes = CAPACITY * std::mem::size_of::<u64>();
        // SAFETY: an anonymous private mapping with no address hint;
        // nothing else is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            self.values.store(p.cast(), Ordering::Relaxed);
        }
    }

    /// Marks the start of a pause at `now` (nanoseconds).
    pub fn begin(&self, now: u64) {
        self.started.store(now, Ordering::Relaxed);
    }

    /// Ends the pause begun last and records it (an end without a begin is
    /// ignored).
    pub fn end(&self, now: u64) {
        let started = self.started.swap(0, Ordering::Relaxed);
        if started != 0 {
            self.record(now.saturating_sub(started));
        }
    }

    /// Records a pause of `ns` nanoseconds.
    pub fn record(&self, ns: u64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(ns, Ordering::Relaxed);
        self.total.fetch_add(ns, Ordering::Relaxed);
        let values = self.values.load(Ordering::Relaxed);
        let i = self.stored.load(Ordering::Relaxed);
        if !values.is_null() && i < CAPACITY {
            // SAFETY: `values` maps CAPACITY u64s and `i < CAPACITY`; one
            // writer at a time (see the type's docs).
            unsafe { values.add(i).write(ns) };
            self.stored.store(i + 1, Ordering::Relaxed);
        }
    }

    /// The log's figures so far.
    pub fn summary(&self) -> PauseSummary {
        let values = self.values.load(Ordering::Relaxed);
        let mut v: Vec<u64> = if values.is_null() {
            Vec::new()
        } else {
            let n = self.stored.load(Ordering::Relaxed);
            // SAFETY: the first `n` values were written by `record`, and
            // nothing records while the benchmark thread reads them.
            unsafe { std::slice::from_raw_parts(values, n) }.to_vec()
        };
        v.sort_unstable();
        PauseSummary {
            count: self.count.load(Ordering::Relaxed),
            median_ns: v.get(v.len() / 2).copied().unwrap_or(0),
            max_ns: self.max.load(Ordering::Relaxed),
            total_ns: self.total.load(Ordering::Relaxed),
        }
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds, without allocating (bdwgc's callback
/// runs with its lock held, possibly with the world stopped).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// zonal's per-collection pauses, sampled from `zonal::stats().gc`.
///
/// zonal publishes the last, longest and total pause, not each one. Every
/// [`ZonalPoll::EVERY`] GC allocations the benchmark looks at the statistics
/// (a few hundred nanoseconds, under 0.1 ns per allocation); zonal's
/// trigger waits for at least 4 MiB of allocation between collections, so
/// at most one collection falls between two looks and `pause_last` is its
/// pause. When more than one did, only the last is logged and the others
/// are counted as missed (the report shows it).
#[cfg(feature = "zonal-gc")]
pub struct ZonalPoll {
    ticks: std::sync::atomic::AtomicU32,
    seen: AtomicU64,
    missed: AtomicU64,
    log: PauseLog,
}

#[cfg(feature = "zonal-gc")]
impl ZonalPoll {
    /// Allocations between two looks (a power of two).
    pub const EVERY: u32 = 4096;

    /// A poll that has seen no collection.
    pub const fn new() -> ZonalPoll {
        ZonalPoll {
            ticks: std::sync::atomic::AtomicU32::new(0),
            seen: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            log: PauseLog::new(),
        }
    }

    /// Maps the log and takes the current collection count as the start.
    pub fn start(&self) {
        self.log.map();
        self.seen
            .store(zonal::stats().gc.collections, Ordering::Relaxed);
    }

    /// Counts one allocation; looks at the statistics every `EVERY`.
    #[inline(always)]
    pub fn tick(&self) {
        let t = self.ticks.load(Ordering::Relaxed).wrapping_add(1);
        self.ticks.store(t, Ordering::Relaxed);
        if t & (Self::EVERY - 1) == 0 {
            self.look();
        }
    }

    /// Logs the pause of a new collection, if any.
    #[cold]
    #[inline(never)]
    pub fn look(&self) {
        let gc = zonal::stats().gc;
        let seen = self.seen.swap(gc.collections, Ordering::Relaxed);
        match gc.collections.saturating_sub(seen) {
            0 => {}
            n => {
                self.log.record(gc.pause_last.as_nanos() as u64);
                self.missed.fetch_add(n - 1, Ordering::Relaxed);
            }
        }
    }

    /// The logged pauses and how many collections were not logged.
    pub fn finish(&self) -> (PauseSummary, u64) {
        self.look();
        (self.log.summary(), self.missed.load(Ordering::Relaxed))
    }
}
