//! The memory managers the GC benchmarks compare, behind one trait, so each
//! benchmark is written once and compiled for each of them.
//!
//! A [`Family`] says how to allocate a tree node (an owning or collected
//! pointer to it) and the pointer-free array of doubles GCBench keeps
//! alive. With `Box`-like families, dropping a pointer frees the object
//! (and, through `Drop`, its subtree); with collected families dropping a
//! pointer does nothing and the collector finds the garbage.

use std::ops::{Deref, DerefMut};

use super::bdwgc::{BdwDoubles, BdwRef};

/// One memory manager, as seen by the benchmarks.
pub trait Family: 'static {
    /// A pointer to a heap `T`: owning (`Box`) or collected (`Gc`).
    type Ptr<T: 'static>: Deref<Target = T>;
    /// A zeroed, heap-allocated, pointer-free array of doubles.
    type Doubles: DerefMut<Target = [f64]>;
    /// Moves `value` to the heap.
    fn alloc<T: 'static>(value: T) -> Self::Ptr<T>;
    /// `len` zeroes.
    fn doubles(len: usize) -> Self::Doubles;
}

/// `std::boxed::Box` with the process's global allocator (glibc's malloc in
/// the `box-system` variant); objects are freed by `Drop`.
pub struct StdBox;

impl Family for StdBox {
    type Ptr<T: 'static> = Box<T>;
    type Doubles = Vec<f64>;

    #[inline]
    fn alloc<T: 'static>(value: T) -> Box<T> {
        Box::new(value)
    }

    fn doubles(len: usize) -> Vec<f64> {
        vec![0.0; len]
    }
}

/// `allocator_api2::boxed::Box` in zonal's manual zone
/// ([`zonal::ManualZone`]); objects are freed by `Drop`.
pub struct Manual;

impl Family for Manual {
    type Ptr<T: 'static> = allocator_api2::boxed::Box<T, zonal::ManualZone>;
    type Doubles = allocator_api2::vec::Vec<f64, zonal::ManualZone>;

    #[inline]
    fn alloc<T: 'static>(value: T) -> Self::Ptr<T> {
        allocator_api2::boxed::Box::new_in(value, zonal::ManualZone)
    }

    fn doubles(len: usize) -> Self::Doubles {
        let mut v = allocator_api2::vec::Vec::with_capacity_in(len, zonal::ManualZone);
        v.resize(len, 0.0);
        v
    }
}

/// bdwgc: nodes from `GC_malloc`, the array from `GC_malloc_atomic`.
pub struct Bdw;

impl Family for Bdw {
    type Ptr<T: 'static> = BdwRef<T>;
    type Doubles = BdwDoubles;

    #[inline]
    fn alloc<T: 'static>(value: T) -> BdwRef<T> {
        // SAFETY: the benchmarks keep node pointers only in locals and in
        // other nodes (bdwgc memory), both scanned by bdwgc; the `bdwgc`
        // variant initialises bdwgc before running a benchmark.
        unsafe { BdwRef::new(value) }
    }

    fn doubles(len: usize) -> BdwDoubles {
        // SAFETY: as for `alloc`: the array handle stays in a local.
        unsafe { BdwDoubles::zeroed(len) }
    }
}

/// zonal's GC zone: nodes are `zonal::Gc<T>`, the array is pointer-free GC
/// memory ([`zonal::GcAtomicZone`]).
///
/// Every allocation ticks [`ZONAL_POLL`], which samples the per-collection
/// pauses from zonal's statistics.
#[cfg(feature = "zonal-gc")]
pub struct ZonalGc;

/// The pause sampler of the zonal `Gc<T>` variant.
#[cfg(feature = "zonal-gc")]
pub static ZONAL_POLL: super::pauses::ZonalPoll = super::pauses::ZonalPoll::new();

#[cfg(feature = "zonal-gc")]
impl Family for ZonalGc {
    type Ptr<T: 'static> = zonal::Gc<T>;
    type Doubles = allocator_api2::vec::Vec<f64, zonal::GcAtomicZone>;

    #[inline]
    fn alloc<T: 'static>(value: T) -> zonal::Gc<T> {
        let gc = zonal::Gc::new(value);
        ZONAL_POLL.tick();
        gc
    }

    fn doubles(len: usize) -> Self::Doubles {
        let mut v = allocator_api2::vec::Vec::with_capacity_in(len, zonal::GcAtomicZone);
        v.resize(len, 0.0);
        v
    }
}
