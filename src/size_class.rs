//! Size classes: the bin table that maps a request size to a block size.
//!
//! All block sizes are multiples of the 16-byte granule, so every block is
//! 16-byte aligned and a block's granule index inside its segment (used by the
//! side bitmaps) is a shift, not a division. Bins:
//!
//! * 16, 32, …, 128: exact granule bins for tiny sizes;
//! * above 128: four bins per power of two (`2^k × {1.25, 1.5, 1.75, 2}`),
//!   which bounds internal fragmentation at 25 % (12.5 % on average);
//! * up to [`LARGE_MAX`]; larger requests are *huge* and get their own
//!   mapping.
//!
//! Sizes up to [`SMALL_DIRECT_MAX`] are looked up through a per-heap direct
//! table indexed by granule count (the allocation fast path); the bin of any
//! size is computed with a leading-zero count.

/// What a page holds, which decides its size (see `segment`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum PageKind {
    Small = 0,
    Medium = 1,
    Large = 2,
    Huge = 3,
}

/// Every page's block area starts at a multiple of this (the segment layer
/// guarantees it), so blocks whose size is a multiple of an alignment up to
/// this are aligned to it.
pub(crate) const PAGE_ALIGN_MIN: usize = 64 * 1024;

/// Allocation granule and minimum alignment of every block.
pub(crate) const GRANULE: usize = 16;
pub(crate) const GRANULE_SHIFT: u32 = 4;

/// Largest size served through the heap's direct page table.
pub(crate) const SMALL_DIRECT_MAX: usize = 1024;
/// Number of entries in the direct table (granule counts 0..=64).
pub(crate) const DIRECT_ENTRIES: usize = SMALL_DIRECT_MAX / GRANULE + 1;

/// Largest block served from small (64 KiB) pages.
pub(crate) const SMALL_MAX: usize = 8 * 1024;
/// Largest block served from medium (512 KiB) pages.
pub(crate) const MEDIUM_MAX: usize = 64 * 1024;
/// Largest block served from a large page (one page per segment).
pub(crate) const LARGE_MAX: usize = 1024 * 1024;

/// Number of bins: 8 granule bins + 4 bins for each power of two from
/// 2^7 (exclusive) to 2^20 (inclusive).
pub(crate) const BIN_COUNT: usize = 8 + 4 * (20 - 7);

/// Returns the bin for a size in `1..=LARGE_MAX`.
#[inline]
pub(crate) const fn bin_of(size: usize) -> usize {
    if size <= 128 {
        // Sizes 0 and 1..=16 share bin 0.
        let granules = (size + GRANULE - 1) >> GRANULE_SHIFT;
        if granules == 0 {
            0
        } else {
            granules - 1
        }
    } else {
        // size in (2^k, 2^(k+1)], k >= 7: four bins of width 2^(k-2).
        let s = size - 1;
        let k = (usize::BITS - 1 - s.leading_zeros()) as usize; // 2^k <= s
        let quarter = (s >> (k - 2)) & 3; // which quarter of (2^k, 2^(k+1)]
        8 + (k - 7) * 4 + quarter
    }
}

/// Block size of a bin.
#[inline]
pub(crate) const fn block_size_of(bin: usize) -> usize {
    if bin < 8 {
        (bin + 1) * GRANULE
    } else {
        let k = (bin - 8) / 4 + 7;
        let quarter = (bin - 8) % 4;
        (1 << k) + ((quarter + 1) << (k - 2))
    }
}

/// Page kind that serves a bin.
#[inline]
pub(crate) const fn page_kind_of(bin: usize) -> PageKind {
    let size = block_size_of(bin);
    if size <= SMALL_MAX {
        PageKind::Small
    } else if size <= MEDIUM_MAX {
        PageKind::Medium
    } else {
        PageKind::Large
    }
}

/// The bin for a request of `size` bytes aligned to `align`, or `None` when
/// the request must be served as a huge allocation.
///
/// Blocks are placed at `page_start + i * block_size` and page starts are
/// 64 KiB aligned, so an alignment up to 64 KiB is honoured by choosing a
/// bin whose block size is a multiple of the alignment.
#[inline]
pub(crate) fn bin_for(size: usize, align: usize) -> Option<usize> {
    if align <= GRANULE {
        return (size <= LARGE_MAX).then(|| bin_of(size));
    }
    if align > PAGE_ALIGN_MIN {
        return None;
    }
    let needed = if size < align { align } else { size };
    if needed > LARGE_MAX {
        return None;
    }
    let mut bin = bin_of(needed);
    // A power of two is reached within four bins, and every power of two at
    // least `align` is a multiple of it, so this loop is short.
    while bin < BIN_COUNT && !block_size_of(bin).is_multiple_of(align) {
        bin += 1;
    }
    (bin < BIN_COUNT).then_some(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_fits_its_bin_and_waste_is_bounded() {
        for size in 1..=LARGE_MAX {
            let bin = bin_of(size);
            let block = block_size_of(bin);
            assert!(block >= size, "size {size} bin {bin} block {block}");
            assert!(block.is_multiple_of(GRANULE));
            if bin > 0 {
                assert!(
                    block_size_of(bin - 1) < size,
                    "size {size} not in smallest bin"
                );
            }
            if size > 128 {
                assert!(
                    (block - size) * 4 <= size,
                    "size {size} wastes too much in {block}"
                );
            }
        }
        assert_eq!(bin_of(LARGE_MAX), BIN_COUNT - 1);
        assert_eq!(block_size_of(BIN_COUNT - 1), LARGE_MAX);
    }

    #[test]
    fn bins_are_strictly_increasing() {
        for bin in 1..BIN_COUNT {
            assert!(block_size_of(bin) > block_size_of(bin - 1));
        }
    }

    #[test]
    fn aligned_bins_are_multiples_of_alignment() {
        for shift in 5..=16 {
            let align = 1usize << shift;
            for size in [1, align - 1, align, align + 1, 3 * align, 100_000] {
                if let Some(bin) = bin_for(size, align) {
                    assert!(block_size_of(bin).is_multiple_of(align));
                    assert!(block_size_of(bin) >= size);
                }
            }
        }
        assert_eq!(bin_for(10, 1 << 17), None);
        assert_eq!(bin_for(LARGE_MAX + 1, 8), None);
    }
}
