//! `Zonal`, the global allocator.

use core::alloc::{GlobalAlloc, Layout};

/// zonal as the global allocator: every `Box`, `Vec`, `String` … of the
/// program is served by the manual zone (or, on a thread inside
/// [`with_zone`](crate::with_zone), by the zone it routes to).
///
/// ```no_run
/// #[global_allocator]
/// static ALLOC: zonal::Zonal = zonal::Zonal;
///
/// fn main() {
///     let v = vec![1u8; 1000]; // served by zonal's manual zone
///     println!("{}", zonal::stats());
///     # drop(v);
/// }
/// ```
///
/// Freeing a pointer that zonal did not return (foreign, interior or
/// misaligned) or freeing a block twice aborts the process with one line on
/// stderr naming the fault and the address, for example
/// `zonal: double free of 0x7f3a2c010040: double free: the block is not allocated`.
/// Frees of blocks up to 1 KiB are queued and carried out 64 at a time, so
/// such a fault is reported when the thread's queue is carried out (within
/// its next 64 frees, its next allocation slow path, or its exit); with
/// `ZONAL_DEFER_FREES=0` the abort comes inside the faulty `dealloc`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Zonal;

/// The zone this thread's global allocations go to (`Manual` unless
/// [`with_zone`](crate::with_zone) routes them elsewhere).
#[inline(always)]
fn routed_zone() -> crate::Zone {
    // SAFETY: the thread's heap outlives this call.
    unsafe { &*crate::heap::current() }.route()
}

/// Allocation under a route other than the manual zone, kept out of line so
/// that the manual fast path stays as small as it was without routing.
#[cold]
#[inline(never)]
fn alloc_routed(zone: crate::Zone, size: usize, align: usize, zeroed: bool) -> *mut u8 {
    if zeroed {
        crate::alloc::alloc_zeroed(zone, size, align)
    } else {
        crate::alloc::alloc(zone, size, align)
    }
}

// SAFETY: blocks are at least `layout.size()` bytes, aligned to
// `layout.align()`, and stay valid and disjoint from every other live block
// until freed; out of memory returns null instead of unwinding.
unsafe impl GlobalAlloc for Zonal {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let zone = routed_zone();
        if zone != crate::Zone::Manual {
            return alloc_routed(zone, layout.size(), layout.align(), false);
        }
        crate::alloc::alloc(crate::Zone::Manual, layout.size(), layout.align())
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller passes a block allocated by this allocator with
        // `layout` and gives it up.
        unsafe { crate::free::free(ptr, layout.size()) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let zone = routed_zone();
        if zone != crate::Zone::Manual {
            return alloc_routed(zone, layout.size(), layout.align(), true);
        }
        crate::alloc::alloc_zeroed(crate::Zone::Manual, layout.size(), layout.align())
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller passes a live block allocated with `layout`.
        unsafe { crate::alloc::realloc(ptr, layout.size(), layout.align(), new_size) }
    }
}
