//! Per-thread statistics counters.
//!
//! Written only by the owning thread, with a plain load and store (no
//! read-modify-write, no shared cache line), and read by `stats()` from any
//! thread; hence relaxed atomics, which compile to ordinary moves.
//!
//! The fast paths do not touch them: a thread's allocations from and frees
//! into its own pages are counted in the page record, in the word that
//! counts the page's blocks out, which those paths write anyway
//! (`Page::note_alloc`, `Page::take_counts`), and added here on the
//! page's slow paths and when the thread takes its own `stats()`
//! (`pages::settle_counts`). Counter updates on the fast paths cost
//! a miss-bound alloc/free loop (churn-batch-100k) 6 % of its time, their
//! stores queueing behind the program's stores to blocks that miss the
//! cache. Blocks of pages count as their block size; huge blocks as the
//! size asked for.

use crate::stats;
use crate::sync::{AtomicU64, Ordering};
use core::cell::Cell;

/// The counters of one zone in one heap.
pub(crate) struct Counters {
    pub(crate) allocs: AtomicU64,
    pub(crate) frees: AtomicU64,
    pub(crate) alloc_bytes: AtomicU64,
    pub(crate) free_bytes: AtomicU64,
    /// Live bytes already added to the zone's global live total.
    flushed_live: Cell<i64>,
}

#[inline(always)]
fn bump(counter: &AtomicU64, by: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

impl Counters {
    pub(crate) const fn new() -> Self {
        Counters {
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            alloc_bytes: AtomicU64::new(0),
            free_bytes: AtomicU64::new(0),
            flushed_live: Cell::new(0),
        }
    }

    #[inline(always)]
    pub(crate) fn on_alloc(&self, bytes: usize) {
        bump(&self.allocs, 1);
        bump(&self.alloc_bytes, bytes as u64);
    }

    #[inline(always)]
    pub(crate) fn on_free(&self, bytes: usize) {
        self.on_frees(1, bytes as u64);
    }

    /// `count` blocks of `bytes` in all were allocated (counted in a page
    /// first, see `Page::take_counts`).
    #[inline]
    pub(crate) fn on_allocs(&self, count: u64, bytes: u64) {
        bump(&self.allocs, count);
        bump(&self.alloc_bytes, bytes);
    }

    /// `count` blocks of `bytes` in all were freed.
    #[inline]
    pub(crate) fn on_frees(&self, count: u64, bytes: u64) {
        bump(&self.frees, count);
        bump(&self.free_bytes, bytes);
    }

    /// A block changed size in place.
    #[inline]
    pub(crate) fn on_resize(&self, old: usize, new: usize) {
        if new >= old {
            bump(&self.alloc_bytes, (new - old) as u64);
        } else {
            bump(&self.free_bytes, (old - new) as u64);
        }
    }

    /// Zeroes the counts (after they were folded into the retired totals).
    pub(crate) fn reset(&self) {
        for counter in [
            &self.allocs,
            &self.frees,
            &self.alloc_bytes,
            &self.free_bytes,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        self.flushed_live.set(0);
    }

    fn live(&self) -> i64 {
        self.alloc_bytes
            .load(Ordering::Relaxed)
            .wrapping_sub(self.free_bytes.load(Ordering::Relaxed)) as i64
    }

    /// Moves this thread's unflushed live-byte change into the zone's global
    /// total and peak (slow paths only: one atomic add per page, not block).
    pub(crate) fn flush(&self, zone: usize) {
        let live = self.live();
        let delta = live - self.flushed_live.get();
        if delta != 0 {
            self.flushed_live.set(live);
            stats::add_live(zone, delta);
        }
    }
}
