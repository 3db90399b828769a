//! The operating-system layer: the only code in zonal that calls `mmap`,
//! `munmap`, `madvise`, `mremap` and `mlock`.
//!
//! Memory is handled in three states: *reserved* (address space owned by
//! zonal), *committed* (may be resident) and *decommitted* (still reserved,
//! contents discarded with `MADV_DONTNEED`, reads back as zero). Private
//! anonymous mappings read as zero when fresh and after `MADV_DONTNEED`; the
//! upper layers rely on that to skip clearing memory for `alloc_zeroed`.
//!
//! Every function here reports failure by returning `None`/`false`; none of
//! them allocates or panics, so they are safe to call from inside `alloc`.
//! The byte counters (`reserved`, `committed`) feed `zonal::stats()`.

use crate::sync::{AtomicUsize, Ordering};
use core::ptr::{self, NonNull};

/// Size of an OS page. Linux on the targets zonal supports uses 4 KiB base
/// pages; `page_size()` checks this once at start-up.
pub(crate) const OS_PAGE: usize = 4096;

static RESERVED: AtomicUsize = AtomicUsize::new(0);
static COMMITTED: AtomicUsize = AtomicUsize::new(0);
static DECOMMITS: AtomicUsize = AtomicUsize::new(0);

/// Bytes of address space zonal holds from the OS.
pub(crate) fn reserved_bytes() -> usize {
    RESERVED.load(Ordering::Relaxed)
}

/// Bytes zonal holds committed (possibly resident).
pub(crate) fn committed_bytes() -> usize {
    COMMITTED.load(Ordering::Relaxed)
}

/// Successful [`decommit`] calls so far (each one system call, however
/// many pages it covers).
pub(crate) fn decommit_calls() -> usize {
    DECOMMITS.load(Ordering::Relaxed)
}

pub(crate) fn note_committed(delta: isize) {
    if delta >= 0 {
        COMMITTED.fetch_add(delta as usize, Ordering::Relaxed);
    } else {
        COMMITTED.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
    }
}

/// Maps `size` bytes of fresh zeroed read-write memory aligned to `align`
/// (a power of two, at least `OS_PAGE`). `size` must be a multiple of
/// `OS_PAGE`. The whole range counts as reserved and committed.
pub(crate) fn map_aligned(size: usize, align: usize) -> Option<NonNull<u8>> {
    debug_assert!(align.is_power_of_two() && align >= OS_PAGE && size.is_multiple_of(OS_PAGE));
    // Over-reserve, then trim the unaligned head and tail: the kernel gives
    // no alignment guarantee beyond a page.
    let padded = size.checked_add(align - OS_PAGE)?;
    let raw = map_raw(padded)?;
    let start = raw.as_ptr() as usize;
    let aligned = (start + align - 1) & !(align - 1);
    let head = aligned - start;
    let tail = padded - head - size;
    if head > 0 {
        // SAFETY: [start, aligned) is the head of the mapping made above.
        unsafe { libc::munmap(start as *mut libc::c_void, head) };
    }
    if tail > 0 {
        // SAFETY: the tail lies inside the mapping made above, after the
        // `size` bytes we keep.
        unsafe { libc::munmap((aligned + size) as *mut libc::c_void, tail) };
    }
    RESERVED.fetch_add(size, Ordering::Relaxed);
    COMMITTED.fetch_add(size, Ordering::Relaxed);
    NonNull::new(aligned as *mut u8)
}

/// Reserves `size` bytes (a multiple of `OS_PAGE`) of zeroed read-write
/// memory that the kernel commits page by page as it is first written: for
/// tables whose size is only bounded, not known (the collector's). Counts
/// as reserved only; kept for the life of the process.
pub(crate) fn map_lazy(size: usize) -> Option<NonNull<u8>> {
    let base = map_raw(size)?;
    RESERVED.fetch_add(size, Ordering::Relaxed);
    Some(base)
}

/// Returns a mapping made by [`map_lazy`] to the OS.
///
/// # Safety
/// `[base, base + size)` must be exactly a live [`map_lazy`] mapping that
/// nothing will touch again.
pub(crate) unsafe fn unmap_lazy(base: NonNull<u8>, size: usize) {
    // SAFETY: by the contract, the range is our own mapping.
    unsafe { libc::munmap(base.as_ptr().cast(), size) };
    RESERVED.fetch_sub(size, Ordering::Relaxed);
}

/// Locks `[start, start + len)` into RAM (`mlock`). On failure returns the
/// OS error number.
///
/// # Safety
/// The range must lie inside a zonal mapping.
pub(crate) unsafe fn lock_in_memory(start: *mut u8, len: usize) -> Result<(), i32> {
    // SAFETY: by the contract the range is ours; locking changes no contents.
    if unsafe { libc::mlock(start.cast(), len) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// Unlocks a range locked by [`lock_in_memory`] (`munlock`).
///
/// # Safety
/// The range must lie inside a zonal mapping.
pub(crate) unsafe fn unlock_from_memory(start: *mut u8, len: usize) {
    // SAFETY: by the contract the range is ours.
    unsafe { libc::munlock(start.cast(), len) };
}

/// Asks the kernel to back `[base, base + size)` with transparent huge pages
/// (2 MiB: one page fault instead of 512) or, with `huge == false`, not to.
/// Only advice: failure (a kernel without THP) changes nothing.
///
/// # Safety
/// The range must lie inside a zonal mapping.
pub(crate) unsafe fn advise_huge_pages(base: *mut u8, size: usize, huge: bool) {
    let advice = if huge {
        libc::MADV_HUGEPAGE
    } else {
        libc::MADV_NOHUGEPAGE
    };
    // SAFETY: by the contract the range is ours; advice does not change
    // contents.
    unsafe { libc::madvise(base.cast(), size, advice) };
}

fn map_raw(size: usize) -> Option<NonNull<u8>> {
    // SAFETY: an anonymous private mapping at a kernel-chosen address does
    // not alias any existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

/// Returns a mapping made by [`map_aligned`] (or grown by [`remap`]) to the OS.
///
/// # Safety
/// `[base, base + size)` must be exactly a live zonal mapping that nothing
/// will touch again, and all of it must be counted as committed.
pub(crate) unsafe fn unmap(base: NonNull<u8>, size: usize) {
    // SAFETY: by the contract, the range is our own mapping.
    unsafe { libc::munmap(base.as_ptr().cast(), size) };
    RESERVED.fetch_sub(size, Ordering::Relaxed);
    COMMITTED.fetch_sub(size, Ordering::Relaxed);
}

/// Discards the contents of `[base, base + size)`: the memory stops counting
/// as resident and reads back as zero. Returns whether the kernel agreed.
///
/// # Safety
/// The range must lie inside a zonal mapping, be page aligned, and hold no
/// live data.
pub(crate) unsafe fn decommit(base: *mut u8, size: usize) -> bool {
    debug_assert!((base as usize).is_multiple_of(OS_PAGE) && size.is_multiple_of(OS_PAGE));
    // SAFETY: by the contract, the range is ours and holds nothing live.
    let done = unsafe { libc::madvise(base.cast(), size, libc::MADV_DONTNEED) == 0 };
    if done {
        DECOMMITS.fetch_add(1, Ordering::Relaxed);
    }
    done
}

/// Grows or shrinks a mapping, moving it to a new `align`-aligned address
/// if it cannot change size in place. Page contents move with the mapping
/// (no copy). Returns the new base, or `None` with the old mapping intact.
///
/// # Safety
/// `[base, base + old_size)` must be a live zonal mapping; on success the
/// old range must not be used again unless it equals the new base.
pub(crate) unsafe fn remap(
    base: NonNull<u8>,
    old_size: usize,
    new_size: usize,
    align: usize,
) -> Option<NonNull<u8>> {
    // First try to resize where it is: the common case for shrinking and for
    // growing into free address space.
    // SAFETY: by the contract the old range is our mapping; without
    // MREMAP_MAYMOVE the kernel either resizes in place or fails.
    let p = unsafe { libc::mremap(base.as_ptr().cast(), old_size, new_size, 0) };
    if p != libc::MAP_FAILED {
        account_resize(old_size, new_size);
        return NonNull::new(p.cast());
    }
    // Reserve an aligned destination, then move the pages onto it.
    let dest = map_aligned(new_size, align)?;
    // SAFETY: `dest` is a fresh mapping of `new_size` bytes that MREMAP_FIXED
    // replaces atomically; the source is our live mapping.
    let p = unsafe {
        libc::mremap(
            base.as_ptr().cast(),
            old_size,
            new_size,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            dest.as_ptr().cast::<libc::c_void>(),
        )
    };
    if p == libc::MAP_FAILED {
        // SAFETY: `dest` is the mapping made just above, never handed out.
        unsafe { unmap(dest, new_size) };
        return None;
    }
    // The source range no longer exists; its bytes now live at `dest`.
    RESERVED.fetch_sub(old_size, Ordering::Relaxed);
    COMMITTED.fetch_sub(old_size, Ordering::Relaxed);
    Some(dest)
}

fn account_resize(old_size: usize, new_size: usize) {
    if new_size >= old_size {
        RESERVED.fetch_add(new_size - old_size, Ordering::Relaxed);
        COMMITTED.fetch_add(new_size - old_size, Ordering::Relaxed);
    } else {
        RESERVED.fetch_sub(old_size - new_size, Ordering::Relaxed);
        COMMITTED.fetch_sub(old_size - new_size, Ordering::Relaxed);
    }
}

/// Monotonic milliseconds, for purge delays. Uses the vDSO: no syscall, no
/// allocation.
pub(crate) fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Writes `bytes` to stderr with one `write` per call to this function,
/// retrying on partial writes. Used for fault reports and the exit-time
/// statistics table, where going through `std::io` could allocate.
pub(crate) fn write_stderr(bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: `rest` is a valid readable buffer of the given length.
        let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            return;
        }
        rest = &rest[n as usize..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_mappings_are_aligned_zeroed_and_writable() {
        for align in [OS_PAGE, 64 * 1024, 4 << 20, 32 << 20] {
            let size = 3 * OS_PAGE;
            let p = map_aligned(size, align).expect("mmap");
            assert_eq!(p.as_ptr() as usize % align, 0);
            // SAFETY: the mapping is ours and `size` bytes long.
            let bytes = unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), size) };
            assert!(bytes.iter().all(|&b| b == 0));
            bytes.fill(0xAB);
            // SAFETY: as above; nothing else uses it.
            unsafe { unmap(p, size) };
        }
    }

    #[test]
    fn decommitted_memory_reads_back_as_zero() {
        let size = 4 * OS_PAGE;
        let p = map_aligned(size, OS_PAGE).unwrap();
        // SAFETY: the mapping is ours.
        unsafe {
            core::ptr::write_bytes(p.as_ptr(), 7, size);
            assert!(decommit(p.as_ptr().add(OS_PAGE), 2 * OS_PAGE));
            let bytes = core::slice::from_raw_parts(p.as_ptr(), size);
            assert!(bytes[..OS_PAGE].iter().all(|&b| b == 7));
            assert!(bytes[OS_PAGE..3 * OS_PAGE].iter().all(|&b| b == 0));
            assert!(bytes[3 * OS_PAGE..].iter().all(|&b| b == 7));
            unmap(p, size);
        }
    }

    #[test]
    fn remap_keeps_contents_and_alignment() {
        let align = 4 << 20;
        let old = 4 << 20;
        let p = map_aligned(old, align).unwrap();
        // SAFETY: the mapping is ours; after remap only the new one is used.
        unsafe {
            for i in (0..old).step_by(OS_PAGE) {
                *p.as_ptr().add(i) = (i / OS_PAGE) as u8;
            }
            let q = remap(p, old, 64 << 20, align).expect("mremap");
            assert_eq!(q.as_ptr() as usize % align, 0);
            for i in (0..old).step_by(OS_PAGE) {
                assert_eq!(*q.as_ptr().add(i), (i / OS_PAGE) as u8);
            }
            let r = remap(q, 64 << 20, 8 << 20, align).expect("shrink");
            assert_eq!(*r.as_ptr().add(OS_PAGE), 1);
            unmap(r, 8 << 20);
        }
    }
}
