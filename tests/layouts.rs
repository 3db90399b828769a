//! `GlobalAlloc` over every size-class boundary and every alignment:
//! alignment honoured, live blocks disjoint, zeroing, and contents kept
//! across `realloc` (in place, moved, and huge blocks resized by mremap).

#[global_allocator]
static A: zonal::Zonal = zonal::Zonal;

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use zonal::Zonal;

fn lay(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

fn slice<'a>(p: *mut u8, len: usize) -> &'a mut [u8] {
    assert!(!p.is_null(), "allocation of {len} bytes failed");
    // SAFETY: callers pass a live block of at least `len` bytes.
    unsafe { std::slice::from_raw_parts_mut(p, len) }
}

/// Sizes around every power of two up to 2 MiB and around every quarter
/// step between them (where size classes start and end), plus every size up
/// to 1 KiB + 16.
fn boundary_sizes() -> Vec<usize> {
    let mut sizes: Vec<usize> = (1..=1040).collect();
    for k in 7..=21u32 {
        let p = 1usize << k;
        for q in [4usize, 5, 6, 7] {
            let b = p * q / 4;
            sizes.extend([b - 16, b - 1, b, b + 1, b + 15, b + 16]);
        }
    }
    sizes.extend([(2 << 20) - 1, 2 << 20, (2 << 20) + 1]);
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// Live blocks, by start address, for overlap checks.
#[derive(Default)]
struct Live(BTreeMap<usize, usize>);

impl Live {
    fn insert(&mut self, p: *mut u8, len: usize) {
        let a = p as usize;
        if let Some((&start, &n)) = self.0.range(..=a).next_back() {
            assert!(
                start + n <= a,
                "block {a:#x}+{len} overlaps live block {start:#x}+{n}"
            );
        }
        if let Some((&start, &n)) = self.0.range(a..).next() {
            assert!(
                a + len <= start,
                "block {a:#x}+{len} overlaps live block {start:#x}+{n}"
            );
        }
        self.0.insert(a, len);
    }

    fn remove(&mut self, p: *mut u8) {
        assert!(self.0.remove(&(p as usize)).is_some());
    }
}

#[test]
fn every_size_class_boundary() {
    let mut live = Live::default();
    let mut kept = Vec::new();
    for (i, &size) in boundary_sizes().iter().enumerate() {
        let l = lay(size, 1);
        // SAFETY: non-zero sizes; every block is freed once with its layout.
        unsafe {
            let a = Zonal.alloc(l);
            let z = Zonal.alloc_zeroed(l);
            let b = Zonal.alloc(l);
            for (k, &p) in [a, z, b].iter().enumerate() {
                assert_eq!(
                    p as usize % 16,
                    0,
                    "size {size}: blocks are 16-byte aligned"
                );
                live.insert(p, size);
                if k == 1 {
                    assert!(
                        common::is_zero(slice(p, size)),
                        "alloc_zeroed({size}) not zero"
                    );
                }
                common::fill(slice(p, size), common::seed_of(&[i as u64, k as u64]));
            }
            for (k, &p) in [a, z, b].iter().enumerate() {
                assert!(
                    common::check(slice(p, size), common::seed_of(&[i as u64, k as u64])),
                    "size {size} block {k} overwritten"
                );
            }
            // Keep the smaller blocks alive to the end (overlap checks
            // against everything); free the big ones now.
            if size <= 64 * 1024 {
                kept.push((a, size, common::seed_of(&[i as u64, 0])));
                for p in [z, b] {
                    live.remove(p);
                    Zonal.dealloc(p, l);
                }
            } else {
                for p in [a, z, b] {
                    live.remove(p);
                    Zonal.dealloc(p, l);
                }
            }
        }
    }
    for (p, size, seed) in kept {
        assert!(
            common::check(slice(p, size), seed),
            "kept block of {size} bytes overwritten"
        );
        live.remove(p);
        // SAFETY: allocated above with this layout.
        unsafe { Zonal.dealloc(p, lay(size, 1)) };
    }
    assert!(live.0.is_empty());
}

fn alignments() -> impl Iterator<Item = usize> {
    (0..=22)
        .map(|s| 1usize << s)
        .chain([1 << 23, 1 << 24, 1 << 25])
}

#[test]
fn every_alignment() {
    let mut live = Live::default();
    let mut held = Vec::new();
    for align in alignments() {
        let mut sizes = vec![
            1,
            align.saturating_sub(1).max(1),
            align,
            align + 1,
            2 * align + 16,
            3 * align,
        ];
        sizes.extend([16, 100, 5000, 100_000]);
        sizes.retain(|&s| s <= 48 << 20);
        sizes.sort_unstable();
        sizes.dedup();
        for &size in &sizes {
            let seed = common::seed_of(&[align as u64, size as u64]);
            let l = lay(size, align);
            // SAFETY: non-zero sizes; each block is freed once.
            unsafe {
                let p = Zonal.alloc(l);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "alloc({size}, {align}) at {p:?}");
                live.insert(p, size);
                common::fill(slice(p, size), seed);
                let z = Zonal.alloc_zeroed(l);
                assert_eq!(
                    z as usize % align,
                    0,
                    "alloc_zeroed({size}, {align}) at {z:?}"
                );
                live.insert(z, size);
                assert!(
                    common::is_zero(slice(z, size)),
                    "alloc_zeroed({size}, {align}) not zero"
                );
                live.remove(z);
                Zonal.dealloc(z, l);

                // Grow and shrink with realloc: alignment and contents kept.
                live.remove(p);
                let grown = size * 2 + 1;
                let g = Zonal.realloc(p, l, grown);
                assert_eq!(g as usize % align, 0, "realloc({size}->{grown}, {align})");
                live.insert(g, grown);
                assert!(
                    common::check_prefix(slice(g, size), seed, size),
                    "realloc({size}->{grown}, {align}) lost data"
                );
                common::fill(slice(g, grown), seed ^ 1);
                live.remove(g);
                let shrunk = (size / 3).max(1);
                let s = Zonal.realloc(g, lay(grown, align), shrunk);
                assert_eq!(s as usize % align, 0, "realloc({grown}->{shrunk}, {align})");
                live.insert(s, shrunk);
                assert!(
                    common::check_prefix(slice(s, shrunk), seed ^ 1, grown),
                    "realloc({grown}->{shrunk}, {align}) lost data"
                );
                // Hold small blocks to the end so later ones are checked
                // against them.
                if shrunk <= 4096 {
                    held.push((s, shrunk, align, seed ^ 1, grown));
                } else {
                    live.remove(s);
                    Zonal.dealloc(s, lay(shrunk, align));
                }
            }
        }
    }
    for (p, size, align, seed, full) in held {
        assert!(
            common::check_prefix(slice(p, size), seed, full),
            "held block {size}/{align} overwritten"
        );
        live.remove(p);
        // SAFETY: allocated with this layout.
        unsafe { Zonal.dealloc(p, lay(size, align)) };
    }
}

/// A chain of reallocs through every kind of block: small, medium, large,
/// huge and back, for a few alignments.
#[test]
fn realloc_chain_across_all_kinds() {
    let chain = [
        1usize,
        17,
        100,
        128,
        129,
        1000,
        1024,
        1025,
        5000,
        8192,
        8193,
        70_000,
        600_000,
        1 << 20,
        (1 << 20) + 1,
        5 << 20,
        6 << 20,
        3 << 20,
        900_000,
        700,
        16,
        5,
        1,
    ];
    for align in [1usize, 16, 64, 4096, 1 << 16, 1 << 20] {
        let seed = align as u64;
        let mut size = chain[0];
        // SAFETY: each realloc passes the current block and its layout.
        unsafe {
            let mut p = Zonal.alloc(lay(size, align));
            common::fill(slice(p, size), seed);
            let mut filled = size;
            for (step, &next) in chain.iter().enumerate().skip(1) {
                let q = Zonal.realloc(p, lay(size, align), next);
                assert!(!q.is_null());
                assert_eq!(
                    q as usize % align,
                    0,
                    "step {step}: {size}->{next} align {align}"
                );
                let kept = size.min(next);
                assert!(
                    common::check_prefix(slice(q, kept), seed + step as u64 - 1, filled),
                    "step {step}: realloc {size}->{next} align {align} lost data"
                );
                common::fill(slice(q, next), seed + step as u64);
                filled = next;
                p = q;
                size = next;
            }
            Zonal.dealloc(p, lay(size, align));
        }
    }
}

/// Huge blocks grown and shrunk through mremap: 2 MiB -> 64 MiB -> 3 MiB,
/// with a neighbour mapped right after so that growth must move.
#[test]
fn huge_realloc_through_mremap() {
    const MIB: usize = 1 << 20;
    // SAFETY: each realloc passes the current block and its layout.
    unsafe {
        let l = lay(2 * MIB, 16);
        let p = Zonal.alloc(l);
        common::fill(slice(p, 2 * MIB), 1);
        // A neighbour, likely mapped next to it.
        let n = Zonal.alloc(lay(6 * MIB, 16));
        common::fill(slice(n, 6 * MIB), 2);

        let p = Zonal.realloc(p, l, 64 * MIB);
        assert!(
            common::check(slice(p, 2 * MIB), 1),
            "2 MiB -> 64 MiB lost data"
        );
        common::fill(slice(p, 64 * MIB), 3);
        assert!(
            common::check(slice(n, 6 * MIB), 2),
            "neighbour overwritten by the grown block"
        );

        let p = Zonal.realloc(p, lay(64 * MIB, 16), 3 * MIB);
        assert!(
            common::check_prefix(slice(p, 3 * MIB), 3, 64 * MIB),
            "64 MiB -> 3 MiB lost data"
        );
        common::fill(slice(p, 3 * MIB), 4);

        // Small steps inside the same mapping, then a shrink into a size
        // class and back out to huge.
        let p = Zonal.realloc(p, lay(3 * MIB, 16), 3 * MIB + 4096);
        assert!(common::check_prefix(slice(p, 3 * MIB), 4, 3 * MIB));
        common::fill(slice(p, 3 * MIB + 4096), 5);
        let p = Zonal.realloc(p, lay(3 * MIB + 4096, 16), 2 * MIB - 1);
        assert!(common::check_prefix(
            slice(p, 2 * MIB - 1),
            5,
            3 * MIB + 4096
        ));
        let p = Zonal.realloc(p, lay(2 * MIB - 1, 16), 512 * 1024);
        assert!(common::check_prefix(
            slice(p, 512 * 1024),
            5,
            3 * MIB + 4096
        ));
        common::fill(slice(p, 512 * 1024), 6);
        let p = Zonal.realloc(p, lay(512 * 1024, 16), 20 * MIB);
        assert!(common::check(slice(p, 512 * 1024), 6));
        common::fill(slice(p, 20 * MIB), 7);

        assert!(common::check(slice(n, 6 * MIB), 2), "neighbour overwritten");
        Zonal.dealloc(n, lay(6 * MIB, 16));
        // Now grow where the neighbour was.
        let p = Zonal.realloc(p, lay(20 * MIB, 16), 100 * MIB);
        assert!(common::check(slice(p, 20 * MIB), 7));
        Zonal.dealloc(p, lay(100 * MIB, 16));
    }
}

/// Several huge blocks grown in turn (interleaved, so mappings collide).
#[test]
fn interleaved_huge_growth() {
    const MIB: usize = 1 << 20;
    let mut blocks: Vec<(*mut u8, usize, u64)> = Vec::new();
    // SAFETY: blocks are used and freed with their current size.
    unsafe {
        for i in 0..6u64 {
            let size = 2 * MIB + (i as usize) * 4096;
            let p = Zonal.alloc(lay(size, 16));
            common::fill(slice(p, size), i);
            blocks.push((p, size, i));
        }
        for round in 1..4u64 {
            for b in blocks.iter_mut() {
                let new = b.1 * 2;
                let q = Zonal.realloc(b.0, lay(b.1, 16), new);
                assert!(
                    common::check(slice(q, b.1), b.2),
                    "round {round}: grow {} -> {new}",
                    b.1
                );
                let seed = b.2 + round * 100;
                common::fill(slice(q, new), seed);
                *b = (q, new, seed);
            }
            let mut live = Live::default();
            for b in &blocks {
                live.insert(b.0, b.1);
            }
        }
        for (p, size, seed) in blocks {
            assert!(common::check(slice(p, size), seed));
            Zonal.dealloc(p, lay(size, 16));
        }
    }
}

/// Shrinking with realloc to every fraction, from every class boundary.
#[test]
fn realloc_to_smaller_sizes() {
    for (i, &size) in boundary_sizes().iter().enumerate().filter(|(_, &s)| s >= 2) {
        if size < 1040 && size % 7 != 0 {
            continue; // the dense small range is sampled
        }
        for div in [2usize, 3, 16, usize::MAX] {
            let target = (size / div.min(size)).max(1);
            let seed = common::seed_of(&[i as u64, div as u64]);
            // SAFETY: realloc of a live block with its layout.
            unsafe {
                let p = Zonal.alloc(lay(size, 8));
                common::fill(slice(p, size), seed);
                let q = Zonal.realloc(p, lay(size, 8), target);
                assert!(
                    common::check_prefix(slice(q, target), seed, size),
                    "realloc {size} -> {target}"
                );
                Zonal.dealloc(q, lay(target, 8));
            }
        }
    }
}

/// alloc_zeroed must clear memory that the same thread just dirtied and
/// freed, for every size class (the freed block is usually the one reused).
#[test]
fn alloc_zeroed_reuses_dirty_blocks_cleared() {
    for &size in boundary_sizes().iter().step_by(3) {
        for align in [1usize, 32, 1024] {
            let l = lay(size, align);
            // SAFETY: non-zero sizes, freed once.
            unsafe {
                let p = Zonal.alloc(l);
                slice(p, size).fill(0xEE);
                Zonal.dealloc(p, l);
                let z = Zonal.alloc_zeroed(l);
                assert!(
                    common::is_zero(slice(z, size)),
                    "alloc_zeroed({size}, {align}) dirty (reused: {})",
                    p == z
                );
                slice(z, size).fill(0xDD);
                // And realloc growth from a zeroed block keeps its bytes.
                let g = Zonal.realloc(z, l, size + 100);
                assert!(slice(g, size).iter().all(|&b| b == 0xDD));
                Zonal.dealloc(g, lay(size + 100, align));
            }
        }
    }
}

/// Requests the OS cannot satisfy return null (GlobalAlloc) or an error
/// (Allocator), never a panic or an abort; a failed realloc leaves the old
/// block intact.
#[test]
fn out_of_memory_returns_null() {
    use allocator_api2::alloc::Allocator;
    let impossible = [
        1usize << 48,
        1 << 50,
        isize::MAX as usize - 4095,
        isize::MAX as usize - (1 << 30),
    ];
    for &size in &impossible {
        for align in [16usize, 4096, 1 << 22] {
            let Ok(l) = Layout::from_size_align(size, align) else {
                continue;
            };
            // SAFETY: non-zero size; a non-null result is freed.
            unsafe {
                let p = Zonal.alloc(l);
                assert!(p.is_null(), "alloc({size:#x}, {align}) succeeded?");
                let z = Zonal.alloc_zeroed(l);
                assert!(z.is_null(), "alloc_zeroed({size:#x}, {align}) succeeded?");
            }
            assert!(zonal::ManualZone.allocate(l).is_err());
            assert!(zonal::ManualZone.allocate_zeroed(l).is_err());
        }
        for old in [100usize, 100_000, 3 << 20] {
            let l = lay(old, 16);
            // SAFETY: realloc of a live block; on failure it stays live.
            unsafe {
                let p = Zonal.alloc(l);
                common::fill(slice(p, old), old as u64);
                let q = Zonal.realloc(p, l, size);
                assert!(q.is_null(), "realloc({old} -> {size:#x}) succeeded?");
                assert!(
                    common::check(slice(p, old), old as u64),
                    "failed realloc damaged the block"
                );
                let g = zonal::ManualZone.grow(
                    std::ptr::NonNull::new(p).unwrap(),
                    l,
                    lay(size.min(isize::MAX as usize - 15), 16),
                );
                assert!(g.is_err());
                assert!(
                    common::check(slice(p, old), old as u64),
                    "failed grow damaged the block"
                );
                Zonal.dealloc(p, l);
            }
        }
    }
    // The allocator still works afterwards.
    let v = vec![1u8; 5 << 20];
    assert_eq!(v.iter().map(|&b| b as usize).sum::<usize>(), 5 << 20);
}

/// alloc_zeroed must also clear blocks that come back through other
/// threads' frees (collected remote frees, big blocks whose pages were
/// released by the remote free, full pages handed back to their owner).
#[test]
fn alloc_zeroed_after_remote_frees() {
    for size in [
        24usize,
        200,
        1000,
        5000,
        40_000,
        65_536,
        100_000,
        500_000,
        1 << 20,
    ] {
        let l = lay(size, 16);
        for _round in 0..3 {
            // Enough blocks to fill the pages of this class.
            let count = (4 << 20) / size.max(4096) + 64;
            let blocks: Vec<usize> = (0..count)
                .map(|_| {
                    // SAFETY: non-zero size.
                    let p = unsafe { Zonal.alloc(l) };
                    slice(p, size).fill(0xC3);
                    p as usize
                })
                .collect();
            let freed = blocks.clone();
            std::thread::spawn(move || {
                for p in freed {
                    // SAFETY: live blocks with this layout, handed over.
                    unsafe { Zonal.dealloc(p as *mut u8, l) };
                }
            })
            .join()
            .unwrap();
            let zeroed: Vec<usize> = (0..count)
                .map(|_| {
                    // SAFETY: non-zero size.
                    let z = unsafe { Zonal.alloc_zeroed(l) };
                    assert!(
                        common::is_zero(slice(z, size)),
                        "alloc_zeroed({size}) after remote frees is dirty (reused block: {})",
                        blocks.contains(&(z as usize))
                    );
                    z as usize
                })
                .collect();
            for z in zeroed {
                // SAFETY: live blocks with this layout.
                unsafe { Zonal.dealloc(z as *mut u8, l) };
            }
        }
    }
}
