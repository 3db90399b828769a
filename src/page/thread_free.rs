//! The thread-free list: how other threads return blocks to a page they do
//! not own, with one CAS each, and how the owner takes them back in a batch.
//!
//! The list head is one word: a block address (blocks are 16-byte aligned)
//! whose low bit is the [`FULL`] tag. Operations:
//!
//! * [`push`] (any thread): link the block in front with a `Release` CAS.
//!   The pushed head never carries the tag, so if the old head was tagged
//!   the pusher is told that it *re-opened* a full page, and exactly one
//!   pusher learns that (it must then publish the page to the abandoned pool).
//! * [`take_all`] (the owner): swap the head with empty (`Acquire`) and walk
//!   the returned list; the `Acquire` pairs with each pusher's `Release`, so
//!   the `next` links written before the push are visible.
//! * [`try_mark_full`] (the owner, when the page has no free block left):
//!   CAS empty → `FULL`. Fails if a block arrived meanwhile, in which case
//!   the owner collects it instead of letting go of the page.
//!
//! Invariant: while the head is `FULL` the page has no owner and is in no
//! queue; the first push takes it out of that state. No ABA hazard: the only
//! conditional update from a non-owner is a push, which is correct for any
//! head value it observed.

use crate::sync::{AtomicUsize, Ordering};

/// Tag stored in the head of a page that its owner has let go of because it
/// was full.
pub(crate) const FULL: usize = 1;

/// A free block's first word links it into a free list.
#[repr(C)]
pub(crate) struct Block {
    pub next: *mut Block,
}

/// Whether a push found the page detached as full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// The page still has an owner (or was already re-opened).
    Plain,
    /// The page was detached as full: the pusher must publish it.
    ReopenedFull,
}

/// Pushes `block` onto the list headed by `head`.
///
/// # Safety
/// `block` must be a valid, writable, 16-byte aligned free block that no
/// other thread will touch until the owner takes it back.
pub(crate) unsafe fn push(head: &AtomicUsize, block: *mut Block) -> Pushed {
    let mut old = head.load(Ordering::Relaxed);
    loop {
        // SAFETY: the caller gives us exclusive use of the block's memory.
        unsafe { (*block).next = (old & !FULL) as *mut Block };
        // AcqRel: Release publishes `next`; Acquire pairs with the owner's
        // `try_mark_full`, so a pusher that re-opens a full page sees the
        // owner's last writes to it before handing it on.
        match head.compare_exchange_weak(old, block as usize, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) if old & FULL != 0 => return Pushed::ReopenedFull,
            Ok(_) => return Pushed::Plain,
            Err(current) => old = current,
        }
    }
}

/// Takes every block pushed so far; returns the first (null if none).
/// Only the page's owner may call this.
pub(crate) fn take_all(head: &AtomicUsize) -> *mut Block {
    if head.load(Ordering::Relaxed) == 0 {
        return core::ptr::null_mut();
    }
    let taken = head.swap(0, Ordering::Acquire);
    debug_assert!(taken & FULL == 0, "owner collected a page it had let go of");
    (taken & !FULL) as *mut Block
}

/// Marks an empty list `FULL`; `false` if a block arrived first.
pub(crate) fn try_mark_full(head: &AtomicUsize) -> bool {
    head.compare_exchange(0, FULL, Ordering::Release, Ordering::Relaxed)
        .is_ok()
}
