//! The pinned zone's policies beyond plain allocation (which is
//! [`PinnedZone`], ordinary pages of the `Pinned` zone):
//!
//! * [`PinnedOptions`]: page-locked (`mlock`) blocks and zero-on-free;
//! * `pin`: pin guards that keep any zonal allocation alive and scanned
//!   (the pin table, read by the collector through `for_each_pinned`);
//! * [`handles`]: the FFI handle table (`u64` handles with generations,
//!   lock-free resolution on crossbeam-epoch).
//!
//! Page-locked blocks each get a mapping of their own (a huge block of the
//! pinned zone, registered in the segment map like any other, so `inspect`,
//! `free` and the collector know it): `mlock` works on whole OS pages, and
//! a page shared with unlocked blocks, or with another locked block that is
//! freed first, would be unlocked behind its owner's back.

pub mod handles;
pub(crate) mod pin;

#[allow(unused_imports)] // the collector's root marking calls it
pub(crate) use pin::for_each_pinned;
pub use pin::{pin, pinned_count, PinError, PinGuard};

use crate::api::zone::{dangling, PinnedZone};
use crate::os::OS_PAGE;
use crate::Zone;
use allocator_api2::alloc::{AllocError, Allocator};
use core::alloc::Layout;
use core::ptr::NonNull;

/// Why a pinned allocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PinnedError {
    /// No memory (or address space) for the block.
    OutOfMemory {
        /// Bytes asked for.
        size: usize,
    },
    /// `mlock` refused: the process's `RLIMIT_MEMLOCK` would be exceeded.
    MemlockLimit {
        /// Bytes asked for (locked in whole OS pages).
        size: usize,
        /// The soft limit in bytes (`u64::MAX`: unlimited).
        limit: u64,
    },
    /// `mlock` failed for another reason (the OS error number).
    LockFailed {
        /// Bytes asked for.
        size: usize,
        /// `errno` from `mlock`.
        errno: i32,
    },
}

impl core::fmt::Display for PinnedError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            PinnedError::OutOfMemory { size } => {
                write!(f, "pinned allocation of {size} bytes failed: out of memory")
            }
            PinnedError::MemlockLimit { size, limit } => write!(
                f,
                "page-locking {size} bytes failed: RLIMIT_MEMLOCK ({limit} bytes) reached; \
                 raise it (ulimit -l, setrlimit) or free locked memory"
            ),
            PinnedError::LockFailed { size, errno } => {
                write!(f, "page-locking {size} bytes failed: mlock error {errno}")
            }
        }
    }
}

impl std::error::Error for PinnedError {}

/// The pinned zone with options: page-locked blocks (`mlock`: never
/// swapped out) and zero-on-free (contents are cleared before the block is
/// released, for keys and other secrets).
///
/// It is an [`Allocator`] (failures are `AllocError`); [`try_allocate`]
/// says why an allocation failed, in particular when `RLIMIT_MEMLOCK` was
/// reached. Blocks must be freed through a `PinnedOptions` with the same
/// settings (the `Allocator` contract: the same allocator).
///
/// [`try_allocate`]: PinnedOptions::try_allocate
///
/// ```
/// use allocator_api2::vec::Vec;
/// let secrets = zonal::pinned::PinnedOptions::new().page_locked(true).zero_on_free(true);
/// match secrets.try_allocate(core::alloc::Layout::new::<[u8; 32]>()) {
///     Ok(block) => unsafe {
///         // SAFETY: allocated just above with this layout.
///         secrets.deallocate_block(block.cast(), core::alloc::Layout::new::<[u8; 32]>())
///     },
///     Err(e) => eprintln!("{e}"), // e.g. "... RLIMIT_MEMLOCK (65536 bytes) reached ..."
/// }
/// let mut key: Vec<u8, _> = Vec::new_in(zonal::pinned::PinnedOptions::new().zero_on_free(true));
/// key.extend_from_slice(b"hunter2");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinnedOptions {
    page_locked: bool,
    zero_on_free: bool,
}

impl PinnedOptions {
    /// Plain pinned memory (what [`PinnedZone`] serves).
    pub const fn new() -> Self {
        PinnedOptions {
            page_locked: false,
            zero_on_free: false,
        }
    }

    /// Lock blocks into RAM (`mlock`); each block gets its own mapping.
    pub const fn page_locked(self, on: bool) -> Self {
        PinnedOptions {
            page_locked: on,
            ..self
        }
    }

    /// Clear blocks before they are freed.
    pub const fn zero_on_free(self, on: bool) -> Self {
        PinnedOptions {
            zero_on_free: on,
            ..self
        }
    }

    /// Allocates a pinned block for `layout`, saying why it failed.
    pub fn try_allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, PinnedError> {
        if layout.size() == 0 {
            return Ok(dangling(layout));
        }
        if !self.page_locked {
            return PinnedZone
                .allocate(layout)
                .map_err(|_| PinnedError::OutOfMemory {
                    size: layout.size(),
                });
        }
        allocate_locked(layout)
    }

    /// Frees a block from [`try_allocate`](Self::try_allocate) (or
    /// `allocate`): clears it first with zero-on-free, unlocks it when
    /// page-locked.
    ///
    /// # Safety
    /// `ptr` was allocated by a `PinnedOptions` with the same settings and
    /// `layout`, and is not used afterwards.
    pub unsafe fn deallocate_block(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        if self.zero_on_free {
            // SAFETY: the block holds `layout.size()` bytes and is ours.
            unsafe { clear(ptr.as_ptr(), layout.size()) };
        }
        if self.page_locked {
            // SAFETY: a locked block's whole pages are its own mapping.
            unsafe { unlock(ptr.as_ptr(), layout.size()) };
        }
        // SAFETY: the caller gives up a live pinned block.
        unsafe { crate::free::free_now(ptr.as_ptr(), layout.size()) };
    }
}

/// Clears `len` bytes at `ptr` in a way the compiler cannot drop as a dead
/// store (the block is freed right after).
///
/// # Safety
/// `len` bytes at `ptr` are writable and ours.
unsafe fn clear(ptr: *mut u8, len: usize) {
    // SAFETY: forwarded contract.
    unsafe { core::ptr::write_bytes(ptr, 0, len) };
    // The pointer escapes after the writes, so they must happen.
    core::hint::black_box(ptr);
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
}

/// `[ptr, ptr + len)` widened to whole OS pages.
fn page_range(ptr: *mut u8, len: usize) -> (*mut libc::c_void, usize) {
    let start = ptr as usize & !(OS_PAGE - 1);
    let end = (ptr as usize + len + OS_PAGE - 1) & !(OS_PAGE - 1);
    (start as *mut libc::c_void, end - start)
}

/// A page-locked block: a huge block of the pinned zone (its own mapping,
/// whose block starts on a page boundary), locked with `mlock`.
fn allocate_locked(layout: Layout) -> Result<NonNull<[u8]>, PinnedError> {
    let size = layout.size();
    // SAFETY: the thread's heap outlives this call.
    let heap = unsafe { &*crate::heap::current() };
    if !heap.is_active() {
        heap.activate();
    }
    let page = crate::segment::huge_alloc(Zone::Pinned, size, layout.align().max(OS_PAGE))
        .ok_or(PinnedError::OutOfMemory { size })?;
    heap.count(Zone::Pinned, |c| c.on_alloc(size));
    // SAFETY: huge_alloc returns the page of a live huge block.
    let block = unsafe { page.as_ref() }.area.get();
    let (start, len) = page_range(block, size);
    // SAFETY: the range lies in the block's own mapping.
    if let Err(errno) = unsafe { crate::os::lock_in_memory(start.cast(), len) } {
        // SAFETY: the block is ours and unused.
        unsafe { crate::free::free_now(block, size) };
        return Err(match errno {
            libc::ENOMEM | libc::EAGAIN | libc::EPERM => PinnedError::MemlockLimit {
                size,
                limit: memlock_limit(),
            },
            _ => PinnedError::LockFailed { size, errno },
        });
    }
    crate::api::zone::block(block, size).map_err(|_| PinnedError::OutOfMemory { size })
}

/// Unlocks the pages of a locked block.
///
/// # Safety
/// The block is a live page-locked block of `len` bytes.
unsafe fn unlock(ptr: *mut u8, len: usize) {
    let (start, len) = page_range(ptr, len);
    // SAFETY: the range lies in the block's own mapping.
    unsafe { crate::os::unlock_from_memory(start.cast(), len) };
}

/// The soft `RLIMIT_MEMLOCK`, in bytes.
fn memlock_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return 0;
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        limit.rlim_cur
    }
}

// SAFETY: blocks are pinned-zone blocks (plain or in their own locked
// mapping) valid until deallocated through an equal `PinnedOptions`; copies
// of the (plain data) handle behave identically.
unsafe impl Allocator for PinnedOptions {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.try_allocate(layout).map_err(|_| AllocError)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.deallocate_block(ptr, layout) }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if *self == PinnedOptions::new() {
            // SAFETY: forwarded contract (plain pinned blocks).
            return unsafe { PinnedZone.grow(ptr, old, new) };
        }
        // SAFETY: forwarded contract.
        unsafe { crate::api::zone::move_to_new_block(self, ptr, old, new) }
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if *self == PinnedOptions::new() {
            // SAFETY: forwarded contract (plain pinned blocks).
            return unsafe { PinnedZone.shrink(ptr, old, new) };
        }
        // SAFETY: forwarded contract.
        unsafe { crate::api::zone::move_to_new_block(self, ptr, old, new) }
    }
}
