//! `inspect` and the checked views of raw pointers: the seed's safety
//! validation (`asthra_deref_checked`, `asthra_array_get_checked`).
//!
//! [`inspect`] answers, for any address, "which zonal allocation contains
//! this, and is it live?" from the segment map and the segment header
//! alone: O(1), no lock, no allocation, once the calling thread's queued
//! frees are carried out (see `free`; a call that finds some queued carries
//! out up to 64 frees first). The [`checked`] functions build on it to vet
//! pointers that arrive from FFI before they are read.
//!
//! Granularity: an allocation is a *block*, whose size is the size class
//! the request was rounded up to (a huge block: its whole usable mapping).
//! Stack-zone memory is reported chunk by chunk (a frame's allocations are
//! not tracked one by one): the chunk is the allocation, live while the
//! stack zone holds it.
//!
//! Reading another thread's page: a page's geometry (`area`, `block_size`,
//! `reserved`) is written by its owner only when the page is (re)initialised
//! for a size class, and the answer is checked against the segment's bounds
//! before use, so a page that changes during the lookup yields an answer
//! that was true a moment ago, never an address outside the segment. Like
//! any answer about memory other threads may free, it can be stale by the
//! time the caller acts on it.

use crate::segment::{self, map, Segment, HEADER_SIZE};
use crate::size_class::GRANULE;
use crate::sync::Ordering;
use crate::Zone;
use core::cell::Cell;

/// What [`inspect`] found: the allocation (block) that contains an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// The zone the block belongs to.
    pub zone: Zone,
    /// Address of the block's first byte.
    pub base: usize,
    /// Usable bytes of the block (its size class, at least what was asked for).
    pub size: usize,
    /// Whether the block is allocated now (`false`: freed, or never handed out).
    pub live: bool,
}

impl Allocation {
    /// One past the block's last byte.
    pub fn end(&self) -> usize {
        self.base + self.size
    }

    /// Whether `addr` lies inside the block.
    pub fn contains(&self, addr: usize) -> bool {
        addr >= self.base && addr < self.end()
    }
}

/// The zonal allocation that contains `ptr` (any address, interior ones
/// included), live or freed, or `None` if the address is not inside a block
/// of zonal's memory (foreign memory, zonal's own metadata, unused pages).
///
/// ```
/// let v = allocator_api2::vec::Vec::<u64, _>::with_capacity_in(8, zonal::PinnedZone);
/// let found = zonal::inspect(v.as_ptr().wrapping_add(3).cast()).expect("zonal memory");
/// assert_eq!(found.zone, zonal::Zone::Pinned);
/// assert_eq!(found.base, v.as_ptr() as usize);
/// assert!(found.size >= 64 && found.live);
///
/// let on_the_stack = 0u64;
/// assert!(zonal::inspect(&on_the_stack as *const u64 as *const u8).is_none());
/// ```
pub fn inspect(ptr: *const u8) -> Option<Allocation> {
    find_current(ptr as usize)
}

/// Reads a page field that its owner may rewrite (see the module docs).
#[inline]
fn read_field<T: Copy>(cell: &Cell<T>) -> T {
    // SAFETY: the cell lives in a mapped segment header; a volatile read of
    // a word-sized field yields a value the owner stored, which the caller
    // validates before use.
    unsafe { core::ptr::read_volatile(cell.as_ptr()) }
}

/// [`find`] after carrying out the calling thread's queued frees (see
/// `free`): they are frees the program has made, so their blocks must read
/// as freed. For the public queries; not for the collector (which holds the
/// pool lock that carrying out frees may need) or internal checks that only
/// ask for a block's zone.
pub(crate) fn find_current(addr: usize) -> Option<Allocation> {
    // SAFETY: the thread's heap outlives this call.
    crate::free::carry_out_deferred_frees(unsafe { &*crate::heap::current() });
    find(addr)
}

/// [`inspect`] by address.
pub(crate) fn find(addr: usize) -> Option<Allocation> {
    match map::lookup(map::map(), addr)? {
        map::Found::Segment(base) => {
            // SAFETY: the map says a segment starts at `base`; a published
            // segment's header stays mapped (segments are cached or
            // unmapped only after leaving the map, and the header of a
            // cached segment stays readable memory of ours).
            let seg = unsafe { Segment::at(base) };
            if addr < base + HEADER_SIZE {
                return None;
            }
            let page = seg.page_of(addr);
            if !read_field(&page.in_use) {
                return None;
            }
            let area = read_field(&page.area) as usize;
            let size = read_field(&page.block_size);
            let reserved = read_field(&page.reserved) as usize;
            let area_end = area.checked_add(size.checked_mul(reserved)?)?;
            if size == 0
                || addr < area
                || addr >= area_end
                || area_end > base + segment::SEGMENT_SIZE
            {
                return None;
            }
            let block = area + (addr - area) / size * size;
            let (word, bit) = seg.alloc_bit(block);
            Some(Allocation {
                zone: seg.zone,
                base: block,
                size,
                live: word.load(Ordering::Relaxed) & bit != 0 && block.is_multiple_of(GRANULE),
            })
        }
        map::Found::Huge(base) => {
            // SAFETY: as above, for a huge mapping's header.
            let seg = unsafe { Segment::at(base) };
            let page = &seg.pages[0];
            let area = read_field(&page.area) as usize;
            let size = read_field(&page.block_size);
            if addr < area || addr >= area.checked_add(size)? {
                return None;
            }
            Some(Allocation {
                zone: seg.zone,
                base: area,
                size,
                live: page.used_racy() == 1,
            })
        }
    }
}

/// Why [`map::lookup`] found nothing for an address it was asked about:
/// memory zonal does not own, or zonal memory outside every block.
fn unallocated_error(addr: usize) -> AccessError {
    if map::lookup(map::map(), addr).is_some() {
        AccessError::NotAllocated { addr }
    } else {
        AccessError::Foreign { addr }
    }
}

/// Why a checked view refused a pointer. `Display` uses the seed's texts
/// ("Null pointer dereference", "Invalid pointer dereference", "Array
/// index out of bounds: 10 >= 8"), followed by the details.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessError {
    /// The pointer is null.
    Null,
    /// The address is not in memory zonal manages.
    Foreign {
        /// The address.
        addr: usize,
    },
    /// The address is in zonal's memory but in no block (metadata, or a
    /// page that holds no blocks now).
    NotAllocated {
        /// The address.
        addr: usize,
    },
    /// The address is in a block that is not allocated (freed).
    Freed {
        /// The address.
        addr: usize,
        /// The freed block.
        allocation: Allocation,
    },
    /// The address is not aligned for the type read through it.
    Misaligned {
        /// The address.
        addr: usize,
        /// The alignment the type needs.
        align: usize,
    },
    /// The bytes to read run past the end of the allocation.
    OutOfBounds {
        /// The address.
        addr: usize,
        /// Bytes the view covers.
        len: usize,
        /// The allocation they run out of.
        allocation: Allocation,
    },
    /// An index beyond the array's length.
    IndexOutOfBounds {
        /// The index asked for.
        index: usize,
        /// The array's length.
        len: usize,
    },
}

impl core::fmt::Display for AccessError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        const INVALID: &str = "Invalid pointer dereference";
        match *self {
            AccessError::Null => f.write_str("Null pointer dereference"),
            AccessError::Foreign { addr } => {
                write!(f, "{INVALID}: {addr:#x} is not in memory zonal allocated")
            }
            AccessError::NotAllocated { addr } => write!(
                f,
                "{INVALID}: {addr:#x} is in zonal's memory but not in any allocation"
            ),
            AccessError::Freed { addr, allocation } => write!(
                f,
                "{INVALID}: {addr:#x} is in a freed {} block at {:#x} ({} bytes)",
                allocation.zone, allocation.base, allocation.size
            ),
            AccessError::Misaligned { addr, align } => {
                write!(f, "{INVALID}: {addr:#x} is not aligned to {align} bytes")
            }
            AccessError::OutOfBounds {
                addr,
                len,
                allocation,
            } => write!(
                f,
                "{INVALID}: {len} bytes at {addr:#x} run past the end of the {} block at {:#x} ({} bytes)",
                allocation.zone, allocation.base, allocation.size
            ),
            AccessError::IndexOutOfBounds { index, len } => {
                write!(f, "Array index out of bounds: {index} >= {len}")
            }
        }
    }
}

impl std::error::Error for AccessError {}

/// Checked views of raw pointers, typically received from FFI: each
/// verifies that the pointer is not null, lies in a live zonal allocation,
/// is aligned for `T`, and that the bytes it covers stay inside that
/// allocation, and returns an [`AccessError`] otherwise.
///
/// ```
/// use zonal::checked;
/// let mut v = allocator_api2::vec::Vec::with_capacity_in(8, zonal::PinnedZone);
/// v.extend([10u32, 11, 12, 13, 14, 15, 16, 17]);
/// let raw: *const u32 = v.as_ptr(); // say, handed back by C code
///
/// // SAFETY: nobody frees or writes the vector while the views are used.
/// unsafe {
///     assert_eq!(*checked::get(raw, 8, 3)?, 13);
///     assert_eq!(checked::get(raw, 8, 10).unwrap_err().to_string(),
///                "Array index out of bounds: 10 >= 8");
///     assert_eq!(checked::deref(core::ptr::null::<u32>()).unwrap_err().to_string(),
///                "Null pointer dereference");
///     assert_eq!(checked::slice(raw, 8)?.iter().sum::<u32>(), 108);
/// }
/// # Ok::<(), zonal::checked::AccessError>(())
/// ```
///
/// What the checks cannot see: the type's validity (any bytes are read as
/// `T`), blocks rounded up to their size class (a read past the requested
/// length but inside the block passes), a block freed by another thread
/// after the check, and stack-zone memory popped from its frame but still
/// in the zone's chunk. Hence the `unsafe`: the caller promises what the
/// checks cannot.
pub mod checked {
    pub use super::AccessError;
    use super::{find_current, unallocated_error, Allocation};

    /// Verifies that `len` values of `T` starting at `ptr` lie inside one
    /// live zonal allocation and that `ptr` is aligned for `T`; returns
    /// that allocation. Safe: it reads nothing through `ptr`.
    ///
    /// ```
    /// let b = allocator_api2::boxed::Box::new_in([0u16; 4], zonal::ManualZone);
    /// let p = b.as_ptr();
    /// assert!(zonal::checked::validate(p, 4).is_ok());
    /// let misaligned = (p as *const u8).wrapping_add(1).cast::<u16>();
    /// assert!(zonal::checked::validate(misaligned, 1).unwrap_err().to_string()
    ///     .starts_with("Invalid pointer dereference"));
    /// ```
    pub fn validate<T>(ptr: *const T, len: usize) -> Result<Allocation, AccessError> {
        let addr = ptr as usize;
        if ptr.is_null() {
            return Err(AccessError::Null);
        }
        let align = core::mem::align_of::<T>();
        if !addr.is_multiple_of(align) {
            return Err(AccessError::Misaligned { addr, align });
        }
        let allocation = find_current(addr).ok_or_else(|| unallocated_error(addr))?;
        if !allocation.live {
            return Err(AccessError::Freed { addr, allocation });
        }
        let bytes = core::mem::size_of::<T>().saturating_mul(len);
        match addr.checked_add(bytes) {
            Some(end) if end <= allocation.end() => Ok(allocation),
            _ => Err(AccessError::OutOfBounds {
                addr,
                len: bytes,
                allocation,
            }),
        }
    }

    /// The `T` at `ptr`, after [`validate`]`(ptr, 1)`.
    ///
    /// # Safety
    /// The bytes at `ptr` must be a valid `T`, and the allocation must stay
    /// allocated and unwritten while the reference lives (see the module
    /// docs for what the checks cannot see).
    pub unsafe fn deref<'a, T>(ptr: *const T) -> Result<&'a T, AccessError> {
        validate(ptr, 1)?;
        // SAFETY: validated (non-null, aligned, inside a live block); the
        // caller vouches for the value and its lifetime.
        Ok(unsafe { &*ptr })
    }

    /// The `len` values of `T` at `ptr`, after [`validate`]`(ptr, len)`.
    ///
    /// # Safety
    /// As for [`deref()`], for every element.
    pub unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> Result<&'a [T], AccessError> {
        validate(ptr, len)?;
        // SAFETY: as for `deref`, over `len` elements inside the block.
        Ok(unsafe { core::slice::from_raw_parts(ptr, len) })
    }

    /// Element `index` of the array of `len` values of `T` at `ptr`; an
    /// index of `len` or more is refused with "Array index out of bounds:
    /// {index} >= {len}", an array that does not fit its allocation as for
    /// [`validate`].
    ///
    /// # Safety
    /// As for [`deref()`], for the element.
    pub unsafe fn get<'a, T>(
        ptr: *const T,
        len: usize,
        index: usize,
    ) -> Result<&'a T, AccessError> {
        validate(ptr, len)?;
        if index >= len {
            return Err(AccessError::IndexOutOfBounds { index, len });
        }
        // SAFETY: the whole array lies in the live block; `index < len`.
        Ok(unsafe { &*ptr.add(index) })
    }
}
