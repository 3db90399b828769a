//! [`MappedVec`]: a growable array in memory mapped straight from the OS,
//! for the collector's own tables (mark stack, finalizers, weak links,
//! explicit roots).
//!
//! The collector's metadata must never come from the global allocator (it
//! runs with the world stopped, and the global allocator may be zonal
//! itself) and must never be scanned as a root (a table that lists objects
//! would keep them alive). Memory mapped here is neither: it is outside
//! every zonal segment and outside every loaded object's data.
//!
//! A `MappedVec` reserves its whole capacity as address space once; the
//! kernel commits pages as they are first written, so a large capacity
//! costs nothing until used. It is not synchronised: owners wrap it in a
//! lock or use it from the collector only.

use crate::os;
use core::marker::PhantomData;
use core::ptr::NonNull;

/// A vector of `Copy` values with a fixed maximum capacity, in its own
/// mapping.
pub(crate) struct MappedVec<T: Copy> {
    base: Option<NonNull<T>>,
    len: usize,
    capacity: usize,
    _values: PhantomData<T>,
}

// SAFETY: the vector owns its mapping; sharing it is up to the owner's lock,
// as for any `Vec<T>` of `Send` values.
unsafe impl<T: Copy + Send> Send for MappedVec<T> {}

impl<T: Copy> MappedVec<T> {
    /// An empty vector that may grow to `capacity` values (mapped on first
    /// push).
    pub(crate) const fn new(capacity: usize) -> Self {
        MappedVec {
            base: None,
            len: 0,
            capacity,
            _values: PhantomData,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Changes the maximum capacity (only while nothing is mapped yet).
    pub(crate) fn set_capacity(&mut self, capacity: usize) {
        if self.base.is_none() {
            self.capacity = capacity;
        }
    }

    fn bytes(&self) -> usize {
        (self.capacity * core::mem::size_of::<T>()).next_multiple_of(os::OS_PAGE)
    }

    /// Appends `value`; `false` when the vector is full or the OS refused
    /// the reservation.
    #[inline]
    pub(crate) fn push(&mut self, value: T) -> bool {
        if self.len == self.capacity {
            return false;
        }
        let base = match self.base {
            Some(base) => base,
            None => {
                let Some(mapping) = os::map_lazy(self.bytes()) else {
                    return false;
                };
                let base = mapping.cast::<T>();
                self.base = Some(base);
                base
            }
        };
        // SAFETY: `len < capacity`, so the slot lies inside the mapping.
        unsafe { base.as_ptr().add(self.len).write(value) };
        self.len += 1;
        true
    }

    #[inline]
    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: the slot below the old length was written by `push`.
        Some(unsafe { self.base?.as_ptr().add(self.len).read() })
    }

    /// The values, in push order (swap_remove reorders).
    pub(crate) fn as_slice(&self) -> &[T] {
        match self.base {
            // SAFETY: the first `len` slots were written by `push`.
            Some(base) => unsafe { core::slice::from_raw_parts(base.as_ptr(), self.len) },
            None => &[],
        }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        match self.base {
            // SAFETY: as above; `&mut self` makes the access exclusive.
            Some(base) => unsafe { core::slice::from_raw_parts_mut(base.as_ptr(), self.len) },
            None => &mut [],
        }
    }

    /// Removes the value at `index`, moving the last one into its place.
    pub(crate) fn swap_remove(&mut self, index: usize) -> T {
        let slice = self.as_mut_slice();
        let last = slice.len() - 1;
        slice.swap(index, last);
        self.pop().expect("index was in bounds")
    }

    /// Keeps the values for which `keep` returns true (order not kept).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let mut i = 0;
        while i < self.len {
            if keep(&self.as_slice()[i]) {
                i += 1;
            } else {
                self.swap_remove(i);
            }
        }
    }

    /// Empties the vector, keeping its mapping.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// Empties the vector and gives its memory back to the OS (the
    /// reservation stays).
    pub(crate) fn clear_and_release(&mut self) {
        if let Some(base) = self.base {
            let used = (self.len * core::mem::size_of::<T>()).next_multiple_of(os::OS_PAGE);
            if used > 16 * os::OS_PAGE {
                // SAFETY: the range lies in our mapping and holds only
                // values we no longer need.
                unsafe { os::decommit(base.as_ptr().cast(), used.min(self.bytes())) };
            }
        }
        self.len = 0;
    }
}
