//! Concurrency primitives, switched to `loom` under `cfg(loom)`.
//!
//! Every lock-free structure in zonal takes its atomics from here, so the
//! `loom-tests` crate model-checks exactly the code that ships. The only lock
//! is [`SpinLock`]: a test-and-test-and-set lock with `sched_yield` back-off.
//! It exists (instead of `std::sync::Mutex`) because the fork handlers must
//! acquire it in the parent's `prepare` hook and release it in a different
//! function (`parent`/`child`), which a guard-based mutex cannot express, and
//! because it never allocates.
//!
//! Invariant: a `SpinLock` is only ever held on slow paths, never across a
//! call into the global allocator and never across a call that can block.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize};

pub(crate) use std::sync::atomic::Ordering;

/// Spins a little, then yields the processor (the lock holder may be
/// descheduled on a machine with fewer cores than threads).
#[inline]
pub(crate) fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        #[cfg(loom)]
        loom::thread::yield_now();
        #[cfg(not(loom))]
        std::hint::spin_loop();
    } else {
        #[cfg(loom)]
        loom::thread::yield_now();
        #[cfg(not(loom))]
        std::thread::yield_now();
    }
}

/// A non-allocating lock with explicit `lock`/`unlock` (see the module docs).
pub(crate) struct SpinLock {
    locked: AtomicBool,
}

impl SpinLock {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
        }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
        }
    }

    pub(crate) fn lock(&self) {
        let mut spins = 0;
        loop {
            if !self.locked.load(Ordering::Relaxed)
                && self
                    .locked
                    .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            backoff(&mut spins);
        }
    }

    /// Releases the lock. Also used by the fork `child` handler, where the
    /// lock was taken by the parent's `prepare` handler in the same thread.
    pub(crate) fn unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }

    /// Forces the lock open in a freshly forked child (only one thread exists).
    #[cfg(not(loom))]
    pub(crate) fn reset_after_fork(&self) {
        self.locked.store(false, Ordering::Relaxed);
    }

    /// Runs `f` with the lock held.
    pub(crate) fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        self.lock();
        struct Unlock<'a>(&'a SpinLock);
        impl Drop for Unlock<'_> {
            fn drop(&mut self) {
                self.0.unlock();
            }
        }
        let _unlock = Unlock(self);
        f()
    }
}
