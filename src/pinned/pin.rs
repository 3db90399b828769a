//! Pin guards: while a [`PinGuard`] lives, the allocation that contains the
//! pinned address (any zone) is marked and scanned by the collector.
//!
//! The pin table is a doubly linked list of [`PinRecord`]s behind a
//! [`SpinLock`] (whose holder defers suspension, so a stopped thread never
//! holds it). Records are blocks of the manual zone, allocated and freed
//! outside the lock. The collector walks the table with the world stopped
//! ([`for_each_pinned`]); it yields only allocations that are still live,
//! so a manual or pinned block freed while pinned (a program error the
//! guard cannot prevent) is never read.

use crate::api::inspect::{self, Allocation};
use crate::sync::SpinLock;
use crate::Zone;
use core::cell::Cell;
use core::marker::PhantomData;
use core::ptr;

/// One pinned allocation in the pin table.
pub(crate) struct PinRecord {
    base: usize,
    size: usize,
    prev: Cell<*mut PinRecord>,
    next: Cell<*mut PinRecord>,
}

struct PinTable {
    lock: SpinLock,
    first: Cell<*mut PinRecord>,
    count: Cell<usize>,
}

// SAFETY: `first`, `count` and every record's links are only touched with
// `lock` held.
unsafe impl Sync for PinTable {}

static PINS: PinTable = PinTable {
    lock: SpinLock::new(),
    first: Cell::new(ptr::null_mut()),
    count: Cell::new(0),
};

/// Why an address cannot be pinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PinError {
    /// The address is null.
    Null,
    /// The address is not inside a block zonal allocated.
    NotZonal {
        /// The address.
        addr: usize,
    },
    /// The address is inside a zonal block that is not allocated.
    Freed {
        /// The address.
        addr: usize,
    },
    /// The address is stack-zone memory, which its frame frees
    /// wholesale: pinning it could not keep it alive.
    StackZone {
        /// The address.
        addr: usize,
    },
    /// No memory for the pin record.
    OutOfMemory,
}

impl core::fmt::Display for PinError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            PinError::Null => f.write_str("cannot pin a null pointer"),
            PinError::NotZonal { addr } => write!(
                f,
                "cannot pin {addr:#x}: the address is not inside an allocation zonal made"
            ),
            PinError::Freed { addr } => {
                write!(f, "cannot pin {addr:#x}: the allocation was freed")
            }
            PinError::StackZone { addr } => write!(
                f,
                "cannot pin {addr:#x}: stack-zone memory is freed when its frame ends"
            ),
            PinError::OutOfMemory => f.write_str("cannot pin: out of memory for the pin record"),
        }
    }
}

impl std::error::Error for PinError {}

/// The live allocation that contains `ptr`, or why it cannot be pinned.
pub(crate) fn pinnable(ptr: *const u8) -> Result<Allocation, PinError> {
    let addr = ptr as usize;
    if ptr.is_null() {
        return Err(PinError::Null);
    }
    let found = inspect::find_current(addr).ok_or(PinError::NotZonal { addr })?;
    if found.zone == Zone::Stack {
        return Err(PinError::StackZone { addr });
    }
    if !found.live {
        return Err(PinError::Freed { addr });
    }
    Ok(found)
}

/// Pins the allocation that contains `ptr` (any address inside it, from
/// any zone but the stack zone) until the guard is dropped: the collector
/// keeps it alive and scans it. Fails for an address zonal did not
/// allocate, a freed block, or stack-zone memory.
///
/// For a garbage-collected object this is what keeps it alive while, say,
/// C code holds its address. Manual and pinned blocks are never collected
/// anyway; pinning them makes their contents roots (which they already
/// are) and is harmless. A manual block must not be freed while pinned.
///
/// ```
/// let b = allocator_api2::boxed::Box::new_in([1u64, 2, 3], zonal::ManualZone);
/// let guard = zonal::pin(b.as_ptr().cast()).unwrap_or_else(|e| panic!("{e}"));
/// assert_eq!(guard.allocation().base, b.as_ptr() as usize);
/// drop(guard);
///
/// let local = 5u32;
/// let err = zonal::pin(&local as *const u32 as *const u8).unwrap_err();
/// assert!(err.to_string().contains("not inside an allocation zonal made"));
/// ```
pub fn pin(ptr: *const u8) -> Result<PinGuard, PinError> {
    let allocation = pinnable(ptr)?;
    let record = insert(allocation.base, allocation.size)?;
    Ok(PinGuard {
        record,
        allocation,
        _not_send: PhantomData,
    })
}

/// Adds a record for `(base, size)` to the pin table.
pub(crate) fn insert(base: usize, size: usize) -> Result<*mut PinRecord, PinError> {
    let record = crate::alloc::alloc(
        Zone::Manual,
        core::mem::size_of::<PinRecord>(),
        core::mem::align_of::<PinRecord>(),
    )
    .cast::<PinRecord>();
    if record.is_null() {
        return Err(PinError::OutOfMemory);
    }
    // SAFETY: a fresh block of the right size and alignment, ours alone.
    unsafe {
        record.write(PinRecord {
            base,
            size,
            prev: Cell::new(ptr::null_mut()),
            next: Cell::new(ptr::null_mut()),
        })
    };
    PINS.lock.with(|| {
        let first = PINS.first.get();
        // SAFETY: the record is ours; linked records stay valid while
        // linked, and the lock is held.
        unsafe {
            (*record).next.set(first);
            if !first.is_null() {
                (*first).prev.set(record);
            }
        }
        PINS.first.set(record);
        PINS.count.set(PINS.count.get() + 1);
    });
    Ok(record)
}

/// Unlinks and frees a record made by [`insert`].
///
/// # Safety
/// `record` came from [`insert`] and is removed only once.
pub(crate) unsafe fn remove(record: *mut PinRecord) {
    PINS.lock.with(|| {
        // SAFETY: the record is linked (the contract), so it and its
        // neighbours are valid; the lock is held.
        unsafe {
            let (prev, next) = ((*record).prev.get(), (*record).next.get());
            if prev.is_null() {
                PINS.first.set(next);
            } else {
                (*prev).next.set(next);
            }
            if !next.is_null() {
                (*next).prev.set(prev);
            }
        }
        PINS.count.set(PINS.count.get() - 1);
    });
    // SAFETY: the record is unlinked: nobody else can reach it.
    unsafe { crate::free::free_now(record.cast(), core::mem::size_of::<PinRecord>()) };
}

/// Calls `f(base, size)` for every allocation a pin guard (or an FFI
/// handle) holds and that is still allocated. For the collector, with the
/// world stopped; the pool lock it holds keeps segments mapped while their
/// liveness is checked.
pub(crate) fn for_each_pinned(mut f: impl FnMut(usize, usize)) {
    PINS.lock.with(|| {
        let mut record = PINS.first.get();
        while !record.is_null() {
            // SAFETY: linked records are valid while the lock is held.
            let r = unsafe { &*record };
            if inspect::find(r.base).is_some_and(|a| a.live && a.base == r.base) {
                f(r.base, r.size);
            }
            record = r.next.get();
        }
    });
}

/// Number of pins held now (pin guards and exported handles).
pub fn pinned_count() -> usize {
    PINS.lock.with(|| PINS.count.get())
}

/// Keeps an allocation pinned while it lives (see [`pin`]). Not `Send`: a
/// pin belongs to the thread that took it, like the borrow of the address
/// it protects.
#[derive(Debug)]
#[must_use = "the allocation is only pinned while the guard lives"]
pub struct PinGuard {
    record: *mut PinRecord,
    allocation: Allocation,
    _not_send: PhantomData<*mut ()>,
}

impl PinGuard {
    /// The pinned allocation (as [`inspect`](crate::inspect) saw it when
    /// it was pinned).
    pub fn allocation(&self) -> Allocation {
        self.allocation
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        // SAFETY: the record was inserted by `pin` and only this guard
        // removes it.
        unsafe { remove(self.record) };
    }
}
