//! Weak links: the table behind `GcWeak<T>`.
//!
//! A weak link is a slot in a table of the collector's own (mapped from the
//! OS, never scanned, so a link does not keep its target alive) holding the
//! target's address, a count of the `GcWeak` handles that share it, and a
//! generation that changes whenever the slot is reused, so a handle can
//! never reach another link's target. After marking from the roots (before
//! finalization keeps anything alive), the collector clears every link
//! whose target is unmarked: once an object is unreachable its weak
//! handles fail to upgrade, for good, even while its finalizer waits.
//!
//! Every operation takes the table's lock, inside which the thread cannot
//! be suspended, so an upgrade either sees the link cleared or returns a
//! strong handle that the collector will find on the caller's stack.

use super::mark;
use super::table::MappedVec;
use crate::sync::SpinLock;
use core::cell::UnsafeCell;

#[derive(Clone, Copy)]
struct Link {
    /// The target object's address, 0 once cleared.
    target: usize,
    /// The GC block that contains the target (what the marks say about).
    block: usize,
    /// Handles sharing the link; 0 for a free slot.
    handles: u32,
    generation: u32,
}

struct Table {
    lock: SpinLock,
    links: UnsafeCell<MappedVec<Link>>,
    /// Free slots, reused before the table grows.
    free: UnsafeCell<MappedVec<u32>>,
}

// SAFETY: the vectors are only touched with `lock` held.
unsafe impl Sync for Table {}

static TABLE: Table = Table {
    lock: SpinLock::new(),
    links: UnsafeCell::new(MappedVec::new(1 << 22)),
    free: UnsafeCell::new(MappedVec::new(1 << 22)),
};

fn with_table<R>(f: impl FnOnce(&mut MappedVec<Link>, &mut MappedVec<u32>) -> R) -> R {
    // SAFETY: the lock serialises every access.
    TABLE
        .lock
        .with(|| unsafe { f(&mut *TABLE.links.get(), &mut *TABLE.free.get()) })
}

/// A handle's name for its link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LinkId {
    slot: u32,
    generation: u32,
}

/// Creates a link to `target`, inside the GC block at `block`; `None` when
/// the table is full.
pub(crate) fn create(target: usize, block: usize) -> Option<LinkId> {
    with_table(|links, free| {
        let slot = match free.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(links.len()).ok()?;
                let fresh = Link {
                    target: 0,
                    block: 0,
                    handles: 0,
                    generation: 0,
                };
                if !links.push(fresh) {
                    return None;
                }
                slot
            }
        };
        let link = &mut links.as_mut_slice()[slot as usize];
        link.target = target;
        link.block = block;
        link.handles = 1;
        Some(LinkId {
            slot,
            generation: link.generation,
        })
    })
}

/// The target, if it has not been collected.
pub(crate) fn get(id: LinkId) -> Option<usize> {
    with_table(|links, _| {
        let link = links.as_slice().get(id.slot as usize)?;
        (link.generation == id.generation && link.target != 0).then_some(link.target)
    })
}

/// One more handle shares the link.
pub(crate) fn retain(id: LinkId) {
    with_table(|links, _| {
        let link = &mut links.as_mut_slice()[id.slot as usize];
        debug_assert_eq!(link.generation, id.generation);
        link.handles += 1;
    })
}

/// A handle is gone; the last one frees the slot.
pub(crate) fn release(id: LinkId) {
    with_table(|links, free| {
        let link = &mut links.as_mut_slice()[id.slot as usize];
        debug_assert_eq!(link.generation, id.generation);
        link.handles -= 1;
        if link.handles == 0 {
            link.target = 0;
            link.block = 0;
            link.generation = link.generation.wrapping_add(1);
            // The free list has room for every slot.
            let _ = free.push(id.slot);
        }
    })
}

/// With marking done and the world stopped: clears links to unmarked
/// objects.
pub(super) fn clear_unreachable() {
    with_table(|links, _| {
        for link in links.as_mut_slice() {
            if link.target != 0 && !mark::is_marked(link.block) {
                link.target = 0;
                link.block = 0;
            }
        }
    })
}
