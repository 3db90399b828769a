//! Intrusive doubly linked queues of pages, linked through `Page::prev` and
//! `Page::next`. Owner only: a heap's queues are touched by its thread alone.
//!
//! Every link change recomputes the flag the free fast path reads instead
//! of the links (`Page::update_leaves_when_unused`), for each page whose
//! links changed.

use crate::page::Page;
use core::cell::Cell;
use core::ptr::{self, NonNull};

/// A queue of pages owned by one heap.
pub(crate) struct PageQueue {
    first: Cell<*mut Page>,
    last: Cell<*mut Page>,
}

impl PageQueue {
    pub(crate) const fn new() -> Self {
        PageQueue {
            first: Cell::new(ptr::null_mut()),
            last: Cell::new(ptr::null_mut()),
        }
    }

    /// The first page, if any.
    #[inline]
    pub(crate) fn first(&self) -> Option<&Page> {
        // SAFETY: pages in a queue are valid and owned by the queue's heap,
        // whose thread is the caller.
        NonNull::new(self.first.get()).map(|p| unsafe { &*p.as_ptr() })
    }

    pub(crate) fn first_ptr(&self) -> *mut Page {
        self.first.get()
    }

    pub(crate) fn is_first(&self, page: &Page) -> bool {
        ptr::eq(self.first.get(), page)
    }

    pub(crate) fn push_front(&self, page: &Page) {
        let p = page as *const Page as *mut Page;
        page.prev.set(ptr::null_mut());
        page.next.set(self.first.get());
        match NonNull::new(self.first.get()) {
            // SAFETY: pages in our queue are valid and owned by us.
            Some(first) => unsafe {
                first.as_ref().prev.set(p);
                first.as_ref().update_leaves_when_unused();
            },
            None => self.last.set(p),
        }
        self.first.set(p);
        page.update_leaves_when_unused();
    }

    pub(crate) fn push_back(&self, page: &Page) {
        let p = page as *const Page as *mut Page;
        page.next.set(ptr::null_mut());
        page.prev.set(self.last.get());
        match NonNull::new(self.last.get()) {
            // SAFETY: pages in our queue are valid and owned by us.
            Some(last) => unsafe {
                last.as_ref().next.set(p);
                last.as_ref().update_leaves_when_unused();
            },
            None => self.first.set(p),
        }
        self.last.set(p);
        page.update_leaves_when_unused();
    }

    pub(crate) fn remove(&self, page: &Page) {
        let (prev, next) = (page.prev.get(), page.next.get());
        match NonNull::new(prev) {
            // SAFETY: neighbours in our queue are valid and owned by us.
            Some(prev) => unsafe {
                prev.as_ref().next.set(next);
                prev.as_ref().update_leaves_when_unused();
            },
            None => self.first.set(next),
        }
        match NonNull::new(next) {
            // SAFETY: as above.
            Some(next) => unsafe {
                next.as_ref().prev.set(prev);
                next.as_ref().update_leaves_when_unused();
            },
            None => self.last.set(prev),
        }
        page.prev.set(ptr::null_mut());
        page.next.set(ptr::null_mut());
        page.update_leaves_when_unused();
    }

    /// Calls `f` on every page, front to back (`f` must not unlink pages).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Page)) {
        let mut cursor = self.first.get();
        // SAFETY: as for `first`.
        while let Some(page) = NonNull::new(cursor).map(|p| unsafe { &*p.as_ptr() }) {
            cursor = page.next.get();
            f(page);
        }
    }

    /// Removes and returns the first page.
    pub(crate) fn pop_front(&self) -> Option<&Page> {
        let page = self.first()?;
        self.remove(page);
        Some(page)
    }
}
