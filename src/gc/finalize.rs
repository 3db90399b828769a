//! Finalization: running `Drop` of `Gc<T>` values that became unreachable,
//! in topological order.
//!
//! A finalizable object is registered when it is created, with its drop
//! function and the thread that created it. After marking from the roots,
//! the collector looks at every registered object that is still unmarked
//! and marks from its *contents* (not from the object itself). Afterwards:
//!
//! * an object still unmarked is reachable from no root and from no other
//!   unreachable finalizable object: it is *ready*. It moves to the ready
//!   queue and is marked (with everything it reaches), so its memory and
//!   whatever its `Drop` may read survive until the finalizer has run;
//! * an object that became marked is reachable from another unreachable
//!   finalizable object: it waits for a later collection, after the one
//!   that points to it has been finalized. So if A points to B, A is
//!   finalized first;
//! * an object that became marked while marking from its own contents is
//!   part of a cycle of finalizable objects. Such cycles are never
//!   finalized (no order would be right); they are counted.
//!
//! Finalizers run on the thread that created the object (so `Gc<T>` needs
//! no `Send` bound on `T`): at the end of that thread's `gc::collect()`, in
//! `gc::run_finalizers()`, and when the thread exits. They never run inside
//! an allocation call or while the world is stopped. Objects of a thread
//! that has exited are freed without running their finalizer (their
//! resources leak, which is safe; dropping a value of a `!Send` type on
//! another thread is not) and are counted as skipped.
//!
//! Objects waiting in the ready queue are roots for later collections.

use super::mark::{self, Marker};
use super::table::MappedVec;
use crate::sync::{AtomicU64, Ordering, SpinLock};
use crate::thread;
use core::cell::UnsafeCell;

/// A registered finalizable object.
#[derive(Clone, Copy)]
struct Finalizable {
    object: usize,
    drop: unsafe fn(*mut u8),
    thread_slot: usize,
    thread_serial: u64,
}

struct Tables {
    lock: SpinLock,
    registered: UnsafeCell<MappedVec<Finalizable>>,
    ready: UnsafeCell<MappedVec<Finalizable>>,
}

// SAFETY: both tables are only touched with `lock` held.
unsafe impl Sync for Tables {}

static TABLES: Tables = Tables {
    lock: SpinLock::new(),
    registered: UnsafeCell::new(MappedVec::new(1 << 22)),
    ready: UnsafeCell::new(MappedVec::new(1 << 22)),
};

pub(crate) static FINALIZERS_RUN: AtomicU64 = AtomicU64::new(0);
pub(crate) static FINALIZERS_SKIPPED: AtomicU64 = AtomicU64::new(0);
/// Finalizable cycles found by the last collection.
pub(crate) static CYCLES: AtomicU64 = AtomicU64::new(0);

fn with_tables<R>(
    f: impl FnOnce(&mut MappedVec<Finalizable>, &mut MappedVec<Finalizable>) -> R,
) -> R {
    // SAFETY: the lock serialises every access to the tables.
    TABLES
        .lock
        .with(|| unsafe { f(&mut *TABLES.registered.get(), &mut *TABLES.ready.get()) })
}

/// Registers the object at `object` (a live GC block start, created by the
/// calling thread) to have `drop` run on it once it is unreachable; `false`
/// if the table is full.
pub(crate) fn register(object: usize, drop: unsafe fn(*mut u8)) -> bool {
    thread::register_current();
    // A thread that can no longer register (it is exiting: this is a late
    // TLS destructor) gets serial 0, which is never live: its object will
    // be freed without its finalizer, like those of any exited thread.
    let (thread_slot, thread_serial) = match thread::current() {
        Some(me) => (me.slot(), me.serial.load(Ordering::Relaxed)),
        None => (0, 0),
    };
    let entry = Finalizable {
        object,
        drop,
        thread_slot,
        thread_serial,
    };
    with_tables(|registered, _| registered.push(entry))
}

/// Marks the objects waiting for their finalizer, and what they reach.
pub(super) fn mark_pending(marker: &mut Marker) {
    with_tables(|_, ready| {
        for entry in ready.as_slice() {
            marker.consider(entry.object);
            marker.drain();
        }
    });
}

/// With the world stopped and marking from the roots done: moves the
/// registered objects that are ready (see the module docs) to the ready
/// queue and marks them. Returns how many became ready.
pub(super) fn find_ready(marker: &mut Marker) -> usize {
    with_tables(|registered, ready| {
        let mut cycles = 0;
        for entry in registered.as_slice() {
            if !mark::is_marked(entry.object) && marker.mark_from_contents(entry.object) {
                cycles += 1;
            }
        }
        CYCLES.store(cycles, Ordering::Relaxed);
        let mut found = 0;
        registered.retain(|entry| {
            if mark::is_marked(entry.object) {
                return true;
            }
            if !thread::is_live(entry.thread_slot, entry.thread_serial) {
                // Its thread is gone: free it without its finalizer.
                FINALIZERS_SKIPPED.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            mark::set_marked(entry.object);
            if !ready.push(*entry) {
                // No room to queue it: keep it registered (alive) for now.
                return true;
            }
            found += 1;
            false
        });
        found
    })
}

/// Runs the finalizers of the calling thread's ready objects; returns how
/// many ran. Never called inside an allocation or with the world stopped.
pub(crate) fn run_for_current_thread() -> usize {
    let Some(me) = thread::current() else {
        return 0;
    };
    let slot = me.slot();
    let serial = me.serial.load(Ordering::Relaxed);
    let mut ran = 0;
    loop {
        // One at a time, outside the lock: a finalizer may allocate,
        // collect, or create finalizable objects.
        let next = with_tables(|_, ready| {
            let index = ready
                .as_slice()
                .iter()
                .position(|e| e.thread_slot == slot && e.thread_serial == serial)?;
            Some(ready.swap_remove(index))
        });
        let Some(entry) = next else { break };
        // SAFETY: the object was registered with this drop function by this
        // thread, is unreachable (nobody else can use it), was kept alive
        // (marked) since, and is dropped exactly once: it has left both
        // tables.
        unsafe { (entry.drop)(entry.object as *mut u8) };
        FINALIZERS_RUN.fetch_add(1, Ordering::Relaxed);
        ran += 1;
    }
    ran
}

/// Registered objects not yet found unreachable (for tests and stats).
pub(crate) fn registered_count() -> usize {
    with_tables(|registered, _| registered.len())
}
