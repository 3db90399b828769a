//! Fork safety.
//!
//! `fork` copies only the calling thread. Any zonal lock another thread held
//! at that moment would stay locked forever in the child, so `prepare` takes
//! every global lock (in a fixed order), and `parent`/`child` release them.
//! In the child, the heaps of threads that no longer exist are removed from
//! the registry with their counters folded into the retired totals; their
//! pages stay owned by those heaps (they may have been mid-update when the
//! fork happened, so touching them is not safe) and are leaked in the child.
//! A new fork generation in the page owner ids keeps new threads of the
//! child from mistaking those pages for their own (see `heap::heap_id`).
//!
//! Per-thread heaps never hold a global lock across user code, and no lock
//! is held while calling `fork` from inside zonal, so taking the locks here
//! cannot deadlock.

use crate::heap;
use crate::sync::{AtomicBool, Ordering};

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Installs the `pthread_atfork` handlers once per process.
pub(crate) fn install_handlers() {
    if INSTALLED.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: the handlers are plain extern "C" functions valid for the life
    // of the process; pthread_atfork does not call them now.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

extern "C" fn prepare() {
    // No collection may be under way in the child: it would find the world
    // half stopped and the collector's locks held.
    crate::gc::collect::COLLECTION.lock();
    crate::thread::lock().lock();
    heap::registry_lock().lock();
    heap::ABANDONED.lock().lock();
    crate::segment::pool_lock().lock();
}

extern "C" fn parent() {
    crate::segment::pool_lock().unlock();
    heap::ABANDONED.lock().unlock();
    heap::registry_lock().unlock();
    crate::thread::lock().unlock();
    crate::gc::collect::COLLECTION.unlock();
}

extern "C" fn child() {
    crate::segment::reset_after_fork();
    heap::ABANDONED.lock().reset_after_fork();
    heap::registry_lock().reset_after_fork();
    heap::after_fork_in_child();
    crate::gc::collect::COLLECTION.reset_after_fork();
    crate::thread::after_fork_in_child();
}
