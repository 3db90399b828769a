//! FFI handles: stable `u64` names for addresses of zonal allocations, to
//! give to foreign code instead of raw pointers.
//!
//! A handle is `generation << 32 | (slot + 1)`: it never is 0, and it names
//! one slot of the handle table *and* one use of that slot. Revoking a
//! handle empties its slot and bumps the slot's generation before the slot
//! can be reused, so a revoked or stale handle resolves to an error, never
//! to whatever the slot (or the memory) holds later. A slot whose
//! generation would wrap is retired instead of reused.
//!
//! While a handle is exported, the allocation it names is pinned (see
//! `zonal::pin`): a garbage-collected object stays alive until the
//! handle is revoked.
//!
//! # Concurrency
//!
//! [`resolve`] is lock-free: it reads the slot's entry under a
//! crossbeam-epoch guard and compares generations. [`revoke`] takes the
//! entry out with a compare-and-swap (so of two racing revokes exactly one
//! succeeds) and leaves its memory to the epoch collector, which frees it
//! only once no resolver can still be reading it. Only export and the
//! return of a slot to the free list take a lock (the free list's), and
//! never while calling crossbeam-epoch or the allocator (both may
//! allocate, and with zonal as the global allocator that re-enters zonal).
//!
//! The table is one lazily committed mapping of [`MAX_HANDLES`] slots
//! (all-zero bytes are an empty slot), so it never moves or shrinks.

use super::pin::{self, PinError, PinRecord};
use crate::sync::{AtomicUsize, Ordering, SpinLock};
use core::cell::Cell;
use core::ptr::{self, NonNull};
use crossbeam_epoch::{self as epoch, Atomic, Owned};
use std::sync::atomic::{AtomicPtr, AtomicU32};

/// Handles that can be exported at once.
pub const MAX_HANDLES: usize = 1 << 20;

/// What a slot holds while its handle is exported.
struct Entry {
    addr: usize,
    generation: u32,
}

/// One slot of the table. All-zero bytes: empty, generation 0.
struct Slot {
    entry: Atomic<Entry>,
    /// Generation of the slot's last export (the next one is one more).
    /// Written by the exporter that took the slot off the free list or by
    /// the revoker that emptied it; ordered by the free list's lock.
    generation: AtomicU32,
    /// The pin the handle holds (exporter and successful revoker only).
    pin: AtomicPtr<PinRecord>,
    /// Next free slot + 1 (free-list lock).
    next_free: Cell<u32>,
}

struct Table {
    slots: AtomicPtr<Slot>,
    lock: SpinLock,
    /// First free slot + 1, 0 when the list is empty (lock).
    free_head: Cell<u32>,
    /// Slots handed out at least once (written with the lock held).
    high_water: AtomicU32,
    exported: AtomicUsize,
}

// SAFETY: the `Cell`s are only touched with `lock` held; the rest is atomic.
unsafe impl Sync for Table {}

static TABLE: Table = Table {
    slots: AtomicPtr::new(ptr::null_mut()),
    lock: SpinLock::new(),
    free_head: Cell::new(0),
    high_water: AtomicU32::new(0),
    exported: AtomicUsize::new(0),
};

/// The slot array, mapping it on first use (a racing loser unmaps its own).
fn slots() -> Option<*mut Slot> {
    let current = TABLE.slots.load(Ordering::Acquire);
    if !current.is_null() {
        return Some(current);
    }
    let bytes = MAX_HANDLES * core::mem::size_of::<Slot>();
    let fresh = crate::os::map_lazy(bytes)?.as_ptr().cast::<Slot>();
    match TABLE
        .slots
        .compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire)
    {
        Ok(_) => Some(fresh),
        Err(winner) => {
            // SAFETY: our mapping was never published: nothing uses it.
            unsafe { crate::os::unmap_lazy(ptr::NonNull::new_unchecked(fresh.cast()), bytes) };
            Some(winner)
        }
    }
}

/// The slot named by a handle, if the handle can name one.
fn slot_of(handle: u64) -> Option<(&'static Slot, u32)> {
    let index = (handle & 0xffff_ffff).checked_sub(1)? as usize;
    if index >= MAX_HANDLES {
        return None;
    }
    let slots = TABLE.slots.load(Ordering::Acquire);
    if slots.is_null() {
        return None;
    }
    // SAFETY: `index` is inside the table, which lives for the process;
    // zero bytes are a valid empty slot.
    Some((unsafe { &*slots.add(index) }, (handle >> 32) as u32))
}

/// Why a handle operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandleError {
    /// The handle was never issued (0, or beyond the table).
    Invalid {
        /// The handle.
        handle: u64,
    },
    /// The handle was revoked (its slot may be in use by a newer handle).
    Revoked {
        /// The handle.
        handle: u64,
    },
    /// The allocation the handle names was freed without revoking it.
    Freed {
        /// The handle.
        handle: u64,
        /// The address it named.
        addr: usize,
    },
    /// All [`MAX_HANDLES`] handles are exported.
    TableFull,
    /// The address cannot be exported.
    Pin(PinError),
}

impl core::fmt::Display for HandleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            HandleError::Invalid { handle } => write!(f, "handle {handle:#x} was never issued"),
            HandleError::Revoked { handle } => {
                write!(f, "handle {handle:#x} was revoked (stale handle)")
            }
            HandleError::Freed { handle, addr } => write!(
                f,
                "handle {handle:#x} names {addr:#x}, whose allocation was freed without revoking the handle"
            ),
            HandleError::TableFull => write!(f, "all {MAX_HANDLES} FFI handles are in use"),
            HandleError::Pin(e) => write!(f, "cannot export: {e}"),
        }
    }
}

impl std::error::Error for HandleError {}

/// Exports the address `ptr` (inside a live zonal allocation, typically a
/// [`PinnedZone`](crate::PinnedZone) block) as a handle for foreign code.
/// The allocation stays pinned until the handle is revoked.
///
/// ```
/// use zonal::pinned::handles;
/// let buf = allocator_api2::boxed::Box::new_in([7u8; 64], zonal::PinnedZone);
/// let handle = handles::export(buf.as_ptr()).unwrap();
/// assert_eq!(handles::resolve(handle).unwrap().as_ptr() as *const u8, buf.as_ptr());
/// handles::revoke(handle).unwrap();
/// assert!(handles::resolve(handle).unwrap_err().to_string().contains("revoked"));
/// ```
pub fn export(ptr: *const u8) -> Result<u64, HandleError> {
    let allocation = pin::pinnable(ptr).map_err(HandleError::Pin)?;
    let slots = slots().ok_or(HandleError::TableFull)?;
    let record = pin::insert(allocation.base, allocation.size).map_err(HandleError::Pin)?;
    let Some(index) = take_slot() else {
        // SAFETY: inserted just above, removed once.
        unsafe { pin::remove(record) };
        return Err(HandleError::TableFull);
    };
    // SAFETY: `index` came off the free list or the high-water mark, so it
    // is inside the table and ours until revoked.
    let slot = unsafe { &*slots.add(index) };
    let generation = slot.generation.load(Ordering::Relaxed) + 1;
    slot.pin.store(record, Ordering::Relaxed);
    let entry = Owned::new(Entry {
        addr: ptr as usize,
        generation,
    });
    crate::thread::suspend::deferred(|| slot.entry.store(entry, Ordering::Release));
    TABLE.exported.fetch_add(1, Ordering::Relaxed);
    Ok(u64::from(generation) << 32 | (index as u64 + 1))
}

fn take_slot() -> Option<usize> {
    TABLE.lock.with(|| {
        let head = TABLE.free_head.get();
        if head != 0 {
            let index = head as usize - 1;
            // SAFETY: free-list entries are slots of the mapped table.
            let slot = unsafe { &*TABLE.slots.load(Ordering::Relaxed).add(index) };
            TABLE.free_head.set(slot.next_free.get());
            return Some(index);
        }
        let next = TABLE.high_water.load(Ordering::Relaxed) as usize;
        if next >= MAX_HANDLES {
            return None;
        }
        TABLE.high_water.store(next as u32 + 1, Ordering::Release);
        Some(next)
    })
}

/// The address a handle names. Lock-free; fails for a handle that was
/// never issued, has been revoked (even if its slot was reused since), or
/// whose allocation was freed meanwhile.
pub fn resolve(handle: u64) -> Result<NonNull<u8>, HandleError> {
    let (slot, generation) = slot_of(handle).ok_or(HandleError::Invalid { handle })?;
    let guard = epoch::pin();
    let entry = slot.entry.load(Ordering::Acquire, &guard);
    // SAFETY: a non-null entry stays allocated while our guard is pinned
    // (revoke frees entries only through `defer_destroy`).
    match unsafe { entry.as_ref() } {
        Some(entry) if entry.generation == generation => {
            let addr = entry.addr;
            drop(guard);
            if !crate::api::inspect::find_current(addr).is_some_and(|a| a.live) {
                return Err(HandleError::Freed { handle, addr });
            }
            NonNull::new(addr as *mut u8).ok_or(HandleError::Invalid { handle })
        }
        _ if generation == 0 || handle & 0xffff_ffff > u64::from(high_water()) => {
            Err(HandleError::Invalid { handle })
        }
        _ => Err(HandleError::Revoked { handle }),
    }
}

/// Slots handed out so far (to tell "never issued" from "revoked").
fn high_water() -> u32 {
    TABLE.high_water.load(Ordering::Acquire)
}

/// Revokes a handle: it (and every copy of it) resolves to an error from
/// now on, and the allocation is no longer pinned by it. Revoking twice, or
/// concurrently from two threads, succeeds once.
pub fn revoke(handle: u64) -> Result<(), HandleError> {
    let (slot, generation) = slot_of(handle).ok_or(HandleError::Invalid { handle })?;
    let guard = epoch::pin();
    let current = slot.entry.load(Ordering::Acquire, &guard);
    // SAFETY: as in `resolve`.
    match unsafe { current.as_ref() } {
        Some(entry) if entry.generation == generation => {}
        _ => return Err(HandleError::Revoked { handle }),
    }
    let taken = crate::thread::suspend::deferred(|| {
        slot.entry.compare_exchange(
            current,
            epoch::Shared::null(),
            Ordering::AcqRel,
            Ordering::Acquire,
            &guard,
        )
    });
    if taken.is_err() {
        return Err(HandleError::Revoked { handle });
    }
    // SAFETY: the entry is unlinked; resolvers that still see it hold
    // guards, which the epoch collector waits for before freeing it.
    unsafe { guard.defer_destroy(current) };
    drop(guard);
    // We won the CAS: the pin and the slot are ours.
    let record = slot.pin.swap(ptr::null_mut(), Ordering::Relaxed);
    // SAFETY: the exporter inserted this record; only the winning revoker
    // removes it.
    unsafe { pin::remove(record) };
    TABLE.exported.fetch_sub(1, Ordering::Relaxed);
    let index = (handle & 0xffff_ffff) as u32 - 1;
    slot.generation.store(generation, Ordering::Relaxed);
    if generation < u32::MAX {
        TABLE.lock.with(|| {
            slot.next_free.set(TABLE.free_head.get());
            TABLE.free_head.set(index + 1);
        });
    }
    Ok(())
}

/// Handles exported and not yet revoked.
pub fn exported_count() -> usize {
    TABLE.exported.load(Ordering::Relaxed)
}
