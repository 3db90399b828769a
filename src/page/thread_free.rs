//! The thread-free list: how other threads return blocks to a page they do
//! not own, with one CAS each, and how a page's owner hears that a page it
//! had filled up has room again (after mimalloc's delayed free).
//!
//! The list head is one word: a block address (blocks are 16-byte aligned)
//! whose two low bits are the page's [`State`]:
//!
//! * `Normal`: pushes link the block onto the list.
//! * `UseDelayed`: the owner keeps the page in its *full* list and wants
//!   to be told about the next free. The next pusher does not link its block;
//!   it switches the state to `Delaying` and is told [`Pushed::MustNotify`]:
//!   it must hand the block to the owner heap's delayed-free list and then
//!   call [`end_notify`] (which sets `Normal`).
//! * `Delaying`: a notification is under way; pushes link normally.
//! * `Never`: the page has no owner (abandoned); pushes link normally and
//!   nobody is notified.
//!
//! The owner takes every linked block with [`take_all`] (a CAS that keeps the
//! state bits) and changes the state with [`set_state`]. `set_state` waits
//! while a notification is under way, and that wait is the lifetime
//! guarantee for the notifier: an owner that abandons its pages first sets
//! them all to `Never`, so no notifier can still be reading its heap when
//! the thread's heap goes away.
//!
//! Orderings: pushes and notifications use `AcqRel`, `take_all` `Acquire`
//! (the `next` links written before a push are visible to the collector);
//! `set_state` is `AcqRel`, so a notifier that sees `UseDelayed` also sees
//! the owner's writes before it (its `owner` field among them).
//!
//! No ABA hazard: every CAS from a non-owner either links a block in front
//! of whatever head it read, or changes only the state bits.

use crate::sync::{backoff, AtomicUsize, Ordering};

const STATE_MASK: usize = 3;

/// The notification state kept in a page's thread-free word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum State {
    /// Pushes link their block.
    Normal = 0,
    /// The page is in its owner's full list; the next push notifies it.
    UseDelayed = 1,
    /// A notification is under way.
    Delaying = 2,
    /// The page has no owner; nobody is notified.
    Never = 3,
}

impl State {
    fn of(word: usize) -> State {
        match word & STATE_MASK {
            0 => State::Normal,
            1 => State::UseDelayed,
            2 => State::Delaying,
            _ => State::Never,
        }
    }
}

/// A free block's first word links it into a free list.
#[repr(C)]
pub struct Block {
    pub next: *mut Block,
}

/// What a push did with its block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// The block is on the page's thread-free list.
    Listed,
    /// The block was *not* linked: the caller must give it to the page
    /// owner's delayed-free list, then call [`end_notify`].
    MustNotify,
}

/// Frees `block` into the page whose thread-free word is `head`.
///
/// # Safety
/// `block` must be a valid, writable, 16-byte aligned free block that no
/// other thread will touch until the owner takes it back.
pub unsafe fn push(head: &AtomicUsize, block: *mut Block) -> Pushed {
    let mut old = head.load(Ordering::Relaxed);
    loop {
        let state = State::of(old);
        let new = if state == State::UseDelayed {
            (old & !STATE_MASK) | State::Delaying as usize
        } else {
            // SAFETY: the caller gives us exclusive use of the block's memory.
            unsafe { (*block).next = (old & !STATE_MASK) as *mut Block };
            block as usize | state as usize
        };
        match head.compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) if state == State::UseDelayed => return Pushed::MustNotify,
            Ok(_) => return Pushed::Listed,
            Err(current) => old = current,
        }
    }
}

/// Ends a notification started by a push that returned
/// [`Pushed::MustNotify`]: `Delaying` becomes `Normal`.
pub fn end_notify(head: &AtomicUsize) {
    let mut old = head.load(Ordering::Relaxed);
    loop {
        debug_assert_eq!(State::of(old), State::Delaying);
        let new = old & !STATE_MASK;
        match head.compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return,
            Err(current) => old = current,
        }
    }
}

/// Takes every linked block; returns the first (null if none). The state is
/// kept. Only the page's owner may call this.
pub fn take_all(head: &AtomicUsize) -> *mut Block {
    let mut old = head.load(Ordering::Relaxed);
    loop {
        if old & !STATE_MASK == 0 {
            return core::ptr::null_mut();
        }
        match head.compare_exchange_weak(
            old,
            old & STATE_MASK,
            Ordering::Acquire,
            Ordering::Relaxed,
        ) {
            Ok(_) => return (old & !STATE_MASK) as *mut Block,
            Err(current) => old = current,
        }
    }
}

/// Whether any block is linked on the list (a snapshot).
pub fn has_blocks(head: &AtomicUsize) -> bool {
    head.load(Ordering::Acquire) & !STATE_MASK != 0
}

/// Sets the page's state, first waiting for a notification under way to
/// end. A `Never` state is only replaced when `override_never` is set (by
/// the thread adopting the page). Only the page's owner may call this.
pub fn set_state(head: &AtomicUsize, state: State, override_never: bool) {
    debug_assert!(state != State::Delaying);
    let mut spins = 0;
    let mut old = head.load(Ordering::Relaxed);
    loop {
        let current = State::of(old);
        if current == State::Delaying {
            backoff(&mut spins);
            old = head.load(Ordering::Relaxed);
            continue;
        }
        if current == state || (current == State::Never && !override_never) {
            return;
        }
        let new = (old & !STATE_MASK) | state as usize;
        match head.compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => old = now,
        }
    }
}

/// The page's current state (for assertions and models).
#[cfg_attr(not(loom), allow(dead_code))]
pub fn state(head: &AtomicUsize) -> State {
    State::of(head.load(Ordering::Acquire))
}

/// A lock-free LIFO of blocks that any thread may push and only its owner
/// empties (a heap's delayed-free list). Taking everything at once with a
/// swap means there is no pop, so no ABA hazard.
pub struct BlockStack {
    head: AtomicUsize,
}

impl BlockStack {
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        BlockStack {
            head: AtomicUsize::new(0),
        }
    }

    #[cfg(loom)]
    pub fn new() -> Self {
        BlockStack {
            head: AtomicUsize::new(0),
        }
    }

    /// Pushes a block.
    ///
    /// # Safety
    /// As for [`push`].
    pub unsafe fn push(&self, block: *mut Block) {
        let mut old = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: the caller gives us exclusive use of the block.
            unsafe { (*block).next = old as *mut Block };
            match self.head.compare_exchange_weak(
                old,
                block as usize,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(current) => old = current,
            }
        }
    }

    /// Takes every block pushed so far (null if none). Owner only.
    pub fn take_all(&self) -> *mut Block {
        if self.head.load(Ordering::Relaxed) == 0 {
            return core::ptr::null_mut();
        }
        self.head.swap(0, Ordering::Acquire) as *mut Block
    }
}

/// In a forked child (one thread): a notification that was under way in a
/// thread that does not exist here never ends; end it.
#[cfg(not(loom))]
pub fn reset_after_fork(head: &AtomicUsize) {
    let word = head.load(Ordering::Relaxed);
    if State::of(word) == State::Delaying {
        head.store(word & !STATE_MASK, Ordering::Relaxed);
    }
}
