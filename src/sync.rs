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
pub use loom_shim::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicU8, AtomicUsize};

pub(crate) use std::sync::atomic::Ordering;

/// loom's atomics, plus one thing loom 0.7 needs to explore our code fully.
///
/// loom's partial-order reduction remembers only the *last* access to each
/// atomic. When a thread loads an atomic and then writes it (`push`: load,
/// then CAS; `take_all`: load, then swap; `SpinLock::lock`), its own load
/// hides an earlier load by another thread, so loom never tries running the
/// write before that other load (tokio-rs/loom#392, #166: a model can pass
/// after exploring a single interleaving). Every load therefore first bumps
/// a per-atomic ghost counter with a `Relaxed` read-modify-write: those bumps
/// conflict with each other, which makes loom order loads of different
/// threads both ways. A relaxed RMW on a separate object creates no
/// happens-before edge, so no synchronisation is added to the code under
/// test; the cost is more (redundant) interleavings.
#[cfg(loom)]
mod loom_shim {
    use super::Ordering;
    use loom::sync::atomic::AtomicUsize as Ghost;

    macro_rules! shim {
        ($name:ident, $int:ty $(, $rmw:ident)*) => {
            /// A loom atomic whose loads are visible to loom's scheduler
            /// (see the module docs).
            #[derive(Debug)]
            pub struct $name {
                inner: loom::sync::atomic::$name,
                loads: Ghost,
            }

            impl $name {
                /// Creates the atomic (inside a loom model only).
                pub fn new(value: $int) -> Self {
                    $name { inner: loom::sync::atomic::$name::new(value), loads: Ghost::new(0) }
                }

                /// `load`, after a ghost RMW that makes loom order it
                /// against other threads' loads.
                pub fn load(&self, order: Ordering) -> $int {
                    self.loads.fetch_add(1, Ordering::Relaxed);
                    self.inner.load(order)
                }

                /// `store`.
                pub fn store(&self, value: $int, order: Ordering) {
                    self.inner.store(value, order)
                }

                /// `swap`.
                pub fn swap(&self, value: $int, order: Ordering) -> $int {
                    self.inner.swap(value, order)
                }

                /// `compare_exchange`.
                pub fn compare_exchange(
                    &self,
                    current: $int,
                    new: $int,
                    success: Ordering,
                    failure: Ordering,
                ) -> Result<$int, $int> {
                    self.inner.compare_exchange(current, new, success, failure)
                }

                /// `compare_exchange_weak` (loom never fails it spuriously).
                pub fn compare_exchange_weak(
                    &self,
                    current: $int,
                    new: $int,
                    success: Ordering,
                    failure: Ordering,
                ) -> Result<$int, $int> {
                    self.inner.compare_exchange_weak(current, new, success, failure)
                }

                $(
                    /// The read-modify-write of the same name.
                    pub fn $rmw(&self, value: $int, order: Ordering) -> $int {
                        self.inner.$rmw(value, order)
                    }
                )*
            }
        };
    }

    shim!(AtomicBool, bool);
    shim!(AtomicU8, u8, fetch_add, fetch_sub);
    shim!(AtomicU64, u64, fetch_add, fetch_sub);
    shim!(AtomicUsize, usize, fetch_add, fetch_sub);
}

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
///
/// It also remembers which thread holds it, so that a thread that tries to
/// take it again (which can only be a bug: say a debug-build panic inside a
/// locked section whose panic hook then allocates) aborts with a message
/// instead of spinning forever.
pub(crate) struct SpinLock {
    locked: AtomicBool,
    #[cfg(not(loom))]
    holder: std::sync::atomic::AtomicUsize,
    /// The thread record whose deferral section the holder opened (see
    /// `thread::suspend`), as an address; 0 when it had none.
    #[cfg(not(loom))]
    deferring: std::sync::atomic::AtomicUsize,
}

/// An id of the calling thread that never allocates: the address of a
/// thread-local byte.
#[cfg(not(loom))]
fn thread_token() -> usize {
    std::thread_local! {
        static TOKEN: u8 = const { 0 };
    }
    TOKEN.with(|token| token as *const u8 as usize)
}

impl SpinLock {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
            holder: std::sync::atomic::AtomicUsize::new(0),
            deferring: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
        }
    }

    /// Takes the lock. A thread registered with the collector holds it
    /// inside a deferral section (it is never suspended while holding a
    /// zonal lock), but waits for it outside one, so a collector that holds
    /// the lock can still stop it.
    pub(crate) fn lock(&self) {
        let mut spins = 0;
        loop {
            #[cfg(not(loom))]
            let deferral = crate::thread::suspend::DeferGuard::new();
            if !self.locked.load(Ordering::Relaxed)
                && self
                    .locked
                    .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                #[cfg(not(loom))]
                {
                    self.holder.store(thread_token(), Ordering::Relaxed);
                    let record = deferral.into_record();
                    self.deferring.store(
                        record.map_or(0, |r| r as *const _ as usize),
                        Ordering::Relaxed,
                    );
                }
                return;
            }
            #[cfg(not(loom))]
            drop(deferral);
            // Only the holder ever stores its own token, and it clears it
            // before releasing: seeing ours means we hold the lock already.
            #[cfg(not(loom))]
            if self.holder.load(Ordering::Relaxed) == thread_token() {
                crate::os::write_stderr(
                    b"zonal: internal error: a thread re-entered a zonal lock it holds\n",
                );
                // SAFETY: abort has no preconditions; it does not return.
                unsafe { libc::abort() };
            }
            backoff(&mut spins);
        }
    }

    /// Takes the lock if it is free, without waiting.
    #[cfg(not(loom))]
    pub(crate) fn try_lock(&self) -> bool {
        let deferral = crate::thread::suspend::DeferGuard::new();
        if self.locked.load(Ordering::Relaxed)
            || self
                .locked
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        self.holder.store(thread_token(), Ordering::Relaxed);
        let record = deferral.into_record();
        self.deferring.store(
            record.map_or(0, |r| r as *const _ as usize),
            Ordering::Relaxed,
        );
        true
    }

    /// Releases the lock. Also used by the fork `child` handler, where the
    /// lock was taken by the parent's `prepare` handler in the same thread.
    pub(crate) fn unlock(&self) {
        #[cfg(not(loom))]
        let deferring = self.deferring.swap(0, Ordering::Relaxed);
        #[cfg(not(loom))]
        self.holder.store(0, Ordering::Relaxed);
        self.locked.store(false, Ordering::Release);
        #[cfg(not(loom))]
        if deferring != 0 {
            // SAFETY: thread records are statics; `lock` stored this one.
            let record = unsafe { &*(deferring as *const crate::thread::ThreadRecord) };
            crate::thread::suspend::DeferGuard::leave(Some(record));
        }
    }

    /// Forces the lock open in a freshly forked child (only one thread exists).
    #[cfg(not(loom))]
    pub(crate) fn reset_after_fork(&self) {
        self.deferring.store(0, Ordering::Relaxed);
        self.holder.store(0, Ordering::Relaxed);
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::SpinLock;

    #[test]
    fn retaking_a_held_lock_aborts_instead_of_hanging() {
        static LOCK: SpinLock = SpinLock::new();
        // SAFETY: the child only takes the lock twice (which must abort) and
        // otherwise `_exit`s; the parent waits for it.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                libc::alarm(10); // a hang ends as SIGALRM, not SIGABRT
                LOCK.lock();
                LOCK.lock();
                libc::_exit(0);
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            assert!(libc::WIFSIGNALED(status), "status {status}");
            assert_eq!(libc::WTERMSIG(status), libc::SIGABRT);
        }
        // Other threads still take and release it normally.
        LOCK.with(|| ());
        std::thread::spawn(|| LOCK.with(|| ())).join().unwrap();
    }
}
