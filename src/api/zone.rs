//! Zone names and the zone allocator handles.

use allocator_api2::alloc::{AllocError, Allocator};
use core::alloc::Layout;
use core::ptr::{self, NonNull};

/// The four memory zones of zonal.
///
/// Every allocation belongs to exactly one zone, and every segment holds
/// memory of one zone only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Zone {
    /// Garbage-collected memory.
    Gc = 0,
    /// Manually managed memory: what `Box`, `Vec` and every other global
    /// allocation use by default.
    Manual = 1,
    /// Memory at stable addresses, never moved or collected.
    Pinned = 2,
    /// Per-thread LIFO frames, freed wholesale at frame end.
    Stack = 3,
}

impl Zone {
    /// The zone's lower-case name, as printed in statistics.
    pub fn name(self) -> &'static str {
        match self {
            Zone::Gc => "gc",
            Zone::Manual => "manual",
            Zone::Pinned => "pinned",
            Zone::Stack => "stack",
        }
    }
}

impl core::fmt::Display for Zone {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.pad(self.name())
    }
}

/// The manual zone as an [`Allocator`] (allocator-api2 0.2, the trait that
/// hashbrown and bumpalo use; with the `nightly` feature also core's).
///
/// It serves the same memory as [`Zonal`](crate::Zonal): a block allocated
/// through either may be freed through either.
///
/// ```
/// use allocator_api2::vec::Vec;
/// let mut v = Vec::new_in(zonal::ManualZone);
/// v.extend([1, 2, 3]);
/// assert_eq!(v.iter().sum::<i32>(), 6);
///
/// let mut map = hashbrown::HashMap::new_in(zonal::ManualZone);
/// map.insert("zone", "manual");
/// assert_eq!(map["zone"], "manual");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ManualZone;

/// A zero-sized allocation: a dangling pointer aligned for `layout`.
pub(crate) fn dangling(layout: Layout) -> NonNull<[u8]> {
    // SAFETY: an alignment is never zero.
    let ptr = unsafe { NonNull::new_unchecked(ptr::null_mut::<u8>().wrapping_add(layout.align())) };
    NonNull::slice_from_raw_parts(ptr, 0)
}

pub(crate) fn block(ptr: *mut u8, len: usize) -> Result<NonNull<[u8]>, AllocError> {
    NonNull::new(ptr)
        .map(|p| NonNull::slice_from_raw_parts(p, len))
        .ok_or(AllocError)
}

/// Implements `Allocator` for a page-backed zone handle. With the `nightly`
/// feature, allocator-api2's trait *is* `core::alloc::Allocator` (it
/// re-exports it), so the same impl serves `Vec::new_in` of std.
macro_rules! page_zone_allocator {
    ($handle:ty, $zone:expr) => {
        // SAFETY: blocks come from zonal's page heaps, stay valid until
        // deallocated through any handle of the same zone (or `Zonal` for the
        // manual zone), and cloning the (zero-sized) handle changes nothing.
        unsafe impl Allocator for $handle {
            #[inline]
            fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
                if layout.size() == 0 {
                    return Ok(crate::api::zone::dangling(layout));
                }
                crate::api::zone::block(
                    crate::alloc::alloc($zone, layout.size(), layout.align()),
                    layout.size(),
                )
            }

            #[inline]
            fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
                if layout.size() == 0 {
                    return Ok(crate::api::zone::dangling(layout));
                }
                crate::api::zone::block(
                    crate::alloc::alloc_zeroed($zone, layout.size(), layout.align()),
                    layout.size(),
                )
            }

            #[inline]
            unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
                if layout.size() != 0 {
                    // SAFETY: the caller passes a block this zone allocated
                    // with `layout` and gives it up.
                    unsafe { crate::free::free(ptr.as_ptr(), layout.size()) }
                }
            }

            unsafe fn grow(
                &self,
                ptr: NonNull<u8>,
                old: Layout,
                new: Layout,
            ) -> Result<NonNull<[u8]>, AllocError> {
                // SAFETY: forwarded contract of `Allocator::grow`.
                unsafe { crate::api::zone::resize(self, ptr, old, new, false) }
            }

            unsafe fn grow_zeroed(
                &self,
                ptr: NonNull<u8>,
                old: Layout,
                new: Layout,
            ) -> Result<NonNull<[u8]>, AllocError> {
                // SAFETY: forwarded contract of `Allocator::grow_zeroed`.
                unsafe { crate::api::zone::resize(self, ptr, old, new, true) }
            }

            unsafe fn shrink(
                &self,
                ptr: NonNull<u8>,
                old: Layout,
                new: Layout,
            ) -> Result<NonNull<[u8]>, AllocError> {
                // SAFETY: forwarded contract of `Allocator::shrink`.
                unsafe { crate::api::zone::resize(self, ptr, old, new, false) }
            }
        }
    };
}

pub(super) use page_zone_allocator;

page_zone_allocator!(ManualZone, crate::Zone::Manual);

/// The pinned zone as an [`Allocator`]: blocks at stable addresses, never
/// moved and never collected, whose contents the garbage collector scans as
/// roots (a `Gc` reachable only from pinned memory stays alive). Freed
/// explicitly, like the manual zone. For page-locked (`mlock`) memory or
/// zero-on-free, see [`PinnedOptions`](crate::pinned::PinnedOptions).
///
/// ```
/// use allocator_api2::vec::Vec;
/// let mut buf: Vec<u8, _> = Vec::with_capacity_in(4096, zonal::PinnedZone);
/// buf.resize(4096, 0xab);
/// let found = zonal::inspect(buf.as_ptr()).unwrap();
/// assert_eq!(found.zone, zonal::Zone::Pinned);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinnedZone;

page_zone_allocator!(PinnedZone, crate::Zone::Pinned);

/// Grows or shrinks by moving: a new block of `new`, the bytes both
/// layouts hold copied over, the old block deallocated (the trait's default,
/// for allocators whose own `grow`/`shrink` fall back to it).
///
/// # Safety
/// The contract of `Allocator::grow`/`shrink`: `ptr` is a block of `alloc`
/// allocated with `old`.
pub(crate) unsafe fn move_to_new_block<A: Allocator + ?Sized>(
    alloc: &A,
    ptr: NonNull<u8>,
    old: Layout,
    new: Layout,
) -> Result<NonNull<[u8]>, AllocError> {
    let fresh = alloc.allocate(new)?;
    // SAFETY: both blocks are live and distinct; each holds at least the
    // smaller of the two sizes; the caller gives the old block up.
    unsafe {
        ptr::copy_nonoverlapping(
            ptr.as_ptr(),
            fresh.cast().as_ptr(),
            old.size().min(new.size()),
        );
        alloc.deallocate(ptr, old);
    }
    Ok(fresh)
}

/// Grow or shrink through `realloc` (in place when the block allows),
/// handling zero sizes and zero-filling the new tail when asked.
///
/// # Safety
/// The contract of `Allocator::grow`/`shrink`: `ptr` is a block of `alloc`
/// allocated with `old`, and `new` is larger (grow) or smaller (shrink).
pub(super) unsafe fn resize<A: Allocator>(
    alloc: &A,
    ptr: NonNull<u8>,
    old: Layout,
    new: Layout,
    zero_tail: bool,
) -> Result<NonNull<[u8]>, AllocError> {
    if old.size() == 0 {
        return if zero_tail {
            alloc.allocate_zeroed(new)
        } else {
            alloc.allocate(new)
        };
    }
    if new.size() == 0 {
        // SAFETY: the caller gives up the old block.
        unsafe { alloc.deallocate(ptr, old) };
        return Ok(dangling(new));
    }
    let align = old.align().max(new.align());
    // SAFETY: `ptr` is a live block of `old.size()` bytes (the contract).
    let p = unsafe { crate::alloc::realloc(ptr.as_ptr(), old.size(), align, new.size()) };
    let out = block(p, new.size())?;
    if zero_tail && new.size() > old.size() {
        // SAFETY: the new block holds `new.size()` bytes.
        unsafe { ptr::write_bytes(p.add(old.size()), 0, new.size() - old.size()) };
    }
    Ok(out)
}
