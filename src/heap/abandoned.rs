//! The abandoned-page pool: pages that have free blocks but no owner.
//!
//! Pages arrive here in two ways: a thread exits and gives up every page it
//! still has blocks in, or a page that its owner let go of as full is
//! re-opened by a remote free (see `page::thread_free`). Any thread that
//! needs a page of the same zone and size class adopts one from here before
//! taking a fresh page from a segment, so memory of exited threads is
//! reused instead of leaked.
//!
//! The pool is a set of intrusive FIFO lists (one per zone and bin) behind
//! one lock: adoption is a slow path (once per page), and a lock makes the
//! hand-over of a page's owner-private fields trivially ordered (the
//! abandoner's writes happen before the unlock, the adopter's reads after
//! the lock) with no ABA hazard on page reuse.
//!
//! Invariant: a node is on at most one list, and while it is there nobody
//! owns it; `pop` transfers ownership to the caller.

use crate::sync::{AtomicUsize, Ordering, SpinLock};
use core::cell::{Cell, UnsafeCell};
use core::ptr;

/// A node that can sit in the pool, linked through one of its own fields.
pub trait Linked {
    fn pool_link(&self) -> &Cell<*mut Self>;
}

/// `LISTS` intrusive lists of abandoned nodes behind one lock.
pub struct AbandonedPool<N, const LISTS: usize> {
    lock: SpinLock,
    heads: UnsafeCell<[*mut N; LISTS]>,
    /// Last node of each list (nodes are appended, so a node taken and given
    /// back goes behind the others: reclamation sees every node in turn).
    tails: UnsafeCell<[*mut N; LISTS]>,
    /// Nodes in the pool; read without the lock to skip empty pools quickly.
    len: AtomicUsize,
    /// Where `pop_any` starts looking, so reclamation visits every list.
    cursor: Cell<usize>,
}

// SAFETY: `heads` and `cursor` are only touched with `lock` held; nodes are
// handed between threads through that lock.
unsafe impl<N, const LISTS: usize> Sync for AbandonedPool<N, LISTS> {}

impl<N: Linked, const LISTS: usize> AbandonedPool<N, LISTS> {
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        AbandonedPool {
            lock: SpinLock::new(),
            heads: UnsafeCell::new([ptr::null_mut(); LISTS]),
            tails: UnsafeCell::new([ptr::null_mut(); LISTS]),
            len: AtomicUsize::new(0),
            cursor: Cell::new(0),
        }
    }

    #[cfg(loom)]
    pub fn new() -> Self {
        AbandonedPool {
            lock: SpinLock::new(),
            heads: UnsafeCell::new([ptr::null_mut(); LISTS]),
            tails: UnsafeCell::new([ptr::null_mut(); LISTS]),
            len: AtomicUsize::new(0),
            cursor: Cell::new(0),
        }
    }

    /// Gives up `node` to list `list` (at its end).
    ///
    /// # Safety
    /// The caller must own `node` (no other thread may use its owner-private
    /// state) and `node` must stay valid while it is in the pool.
    pub unsafe fn push(&self, list: usize, node: *mut N) {
        self.lock.with(|| {
            // SAFETY: lock held; the caller owns `node`; the tail, if any,
            // is a valid node in the pool.
            unsafe {
                let (heads, tails) = (&mut *self.heads.get(), &mut *self.tails.get());
                (*node).pool_link().set(ptr::null_mut());
                match tails[list].is_null() {
                    true => heads[list] = node,
                    false => (*tails[list]).pool_link().set(node),
                }
                tails[list] = node;
            }
            self.len.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// Takes a node from list `list`, transferring its ownership.
    pub fn pop(&self, list: usize) -> Option<*mut N> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.lock.with(|| {
            // SAFETY: lock held.
            self.take_head(list)
        })
    }

    /// Takes a node from any list, visiting lists round-robin. Returns the
    /// list it came from.
    pub fn pop_any(&self) -> Option<(usize, *mut N)> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.lock.with(|| {
            let start = self.cursor.get();
            for step in 0..LISTS {
                let list = (start + step) % LISTS;
                if let Some(node) = self.take_head(list) {
                    self.cursor.set((list + 1) % LISTS);
                    return Some((list, node));
                }
            }
            None
        })
    }

    /// Unlinks the first node of `list`. Lock held.
    fn take_head(&self, list: usize) -> Option<*mut N> {
        // SAFETY: the caller holds the lock.
        let (heads, tails) = unsafe { (&mut *self.heads.get(), &mut *self.tails.get()) };
        let node = heads[list];
        if node.is_null() {
            return None;
        }
        // SAFETY: nodes in the pool are valid (push's contract).
        heads[list] = unsafe { (*node).pool_link().get() };
        if heads[list].is_null() {
            tails[list] = ptr::null_mut();
        }
        self.len.fetch_sub(1, Ordering::Relaxed);
        Some(node)
    }

    /// Number of nodes in the pool.
    #[cfg_attr(not(loom), allow(dead_code))]
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Nodes on list `list` (for tests).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn list_len(&self, list: usize) -> usize {
        self.lock.with(|| {
            // SAFETY: lock held; nodes in the pool are valid.
            let mut node = unsafe { (*self.heads.get())[list] };
            let mut len = 0;
            while !node.is_null() {
                len += 1;
                // SAFETY: as above.
                node = unsafe { (*node).pool_link().get() };
            }
            len
        })
    }

    /// The pool's lock (for the fork handlers).
    #[cfg(not(loom))]
    pub(crate) fn lock(&self) -> &SpinLock {
        &self.lock
    }
}
