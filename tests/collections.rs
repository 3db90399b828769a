//! `ManualZone` as an allocator-api2 `Allocator`: collections on top of it,
//! and every method of the trait called directly, over zero sizes and
//! alignments from 1 byte to beyond the segment size.

#[global_allocator]
static A: zonal::Zonal = zonal::Zonal;

mod common;

use allocator_api2::alloc::{Allocator, Global};
use allocator_api2::vec::Vec as AVec;
use common::Rng;
use core::alloc::Layout;
use core::ptr::NonNull;
use zonal::ManualZone;

fn bytes<'a>(p: NonNull<[u8]>, len: usize) -> &'a mut [u8] {
    assert!(
        p.len() >= len,
        "block of {} bytes for a request of {len}",
        p.len()
    );
    // SAFETY: the allocator returned at least `len` bytes at `p`, and the
    // caller uses the slice only while the block is live.
    unsafe { core::slice::from_raw_parts_mut(p.cast::<u8>().as_ptr(), len) }
}

fn addr(p: NonNull<[u8]>) -> usize {
    p.cast::<u8>().as_ptr() as usize
}

fn lay(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

#[test]
fn hashbrown_map_in_manual_zone() {
    let mut map = hashbrown::HashMap::new_in(ManualZone);
    for i in 0..100_000u64 {
        assert!(map
            .insert(i, i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .is_none());
    }
    assert_eq!(map.len(), 100_000);
    for i in 0..100_000u64 {
        assert_eq!(
            map.get(&i),
            Some(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            "key {i}"
        );
    }
    for i in (0..100_000u64).filter(|i| i % 3 != 0) {
        assert!(map.remove(&i).is_some());
    }
    map.shrink_to_fit();
    assert_eq!(map.len(), 33_334);
    for i in 0..100_000u64 {
        assert_eq!(map.contains_key(&i), i % 3 == 0, "key {i}");
    }
    // Values that own memory of their own, in the same zone.
    let mut nested: hashbrown::HashMap<String, AVec<u32, ManualZone>, _, _> =
        hashbrown::HashMap::new_in(ManualZone);
    for i in 0..2_000u32 {
        let mut v = AVec::new_in(ManualZone);
        v.extend(0..i % 97);
        nested.insert(format!("key-{i}"), v);
    }
    for i in 0..2_000u32 {
        let v = &nested[&format!("key-{i}")];
        assert!(v.iter().copied().eq(0..i % 97), "key-{i}");
    }
    let before = nested.len();
    nested.retain(|k, _| k.len() % 2 == 0);
    assert!(nested.len() < before);
    assert!(nested.keys().all(|k| k.len() % 2 == 0));
}

#[test]
fn allocator_api2_vec_in_manual_zone() {
    let mut v: AVec<u32, ManualZone> = AVec::new_in(ManualZone);
    for i in 0..1_000_000u32 {
        v.push(i ^ 0x5555);
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == (i as u32) ^ 0x5555));
    v.truncate(1000);
    v.shrink_to_fit();
    assert!(v.capacity() >= 1000);
    assert!(v.iter().enumerate().all(|(i, &x)| x == (i as u32) ^ 0x5555));
    v.extend(0..10);
    assert_eq!(v.len(), 1010);
    assert_eq!(&v[1000..], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);

    // Over-aligned elements go through the allocator with their alignment.
    #[repr(C, align(4096))]
    #[derive(Clone, Copy)]
    struct Page([u64; 512]);
    let mut pages: AVec<Page, ManualZone> = AVec::with_capacity_in(3, ManualZone);
    for i in 0..40u64 {
        pages.push(Page([i; 512]));
        assert_eq!(pages.as_ptr() as usize % 4096, 0);
    }
    assert!(pages
        .iter()
        .enumerate()
        .all(|(i, p)| p.0.iter().all(|&x| x == i as u64)));

    // Vectors of vectors, grown and shrunk in turn.
    let mut rng = Rng::new(7);
    let mut outer: AVec<AVec<u8, ManualZone>, ManualZone> = AVec::new_in(ManualZone);
    for i in 0..500usize {
        let n = rng.log_size(1, 100_000);
        let mut inner = AVec::with_capacity_in(n / 2, ManualZone);
        inner.resize(n, i as u8);
        outer.push(inner);
    }
    for (i, inner) in outer.iter_mut().enumerate() {
        assert!(inner.iter().all(|&b| b == i as u8));
        let keep = inner.len() / 3;
        inner.truncate(keep);
        inner.shrink_to_fit();
        inner.push(0xEE);
    }
    for (i, inner) in outer.iter().enumerate() {
        let (last, rest) = inner.split_last().unwrap();
        assert_eq!(*last, 0xEE);
        assert!(rest.iter().all(|&b| b == i as u8));
    }
}

/// Blocks from `ManualZone` and from `Zonal` (the global allocator) are the
/// same memory: each may free the other's.
#[test]
fn manual_zone_and_global_allocator_are_interchangeable() {
    for size in [1usize, 24, 1000, 70_000, 2 << 20] {
        let l = lay(size, 8);
        let p = ManualZone.allocate(l).unwrap();
        bytes(p, size).fill(3);
        // SAFETY: allocated above with `l`; the global allocator is zonal.
        unsafe { Global.deallocate(p.cast(), l) };
        let q = Global.allocate(l).unwrap();
        bytes(q, size).fill(4);
        // SAFETY: allocated above with `l` by zonal (the global allocator).
        unsafe { ManualZone.deallocate(q.cast(), l) };
    }
}

fn alignments() -> impl Iterator<Item = usize> {
    (0..=22).map(|s| 1usize << s).chain([1 << 23, 1 << 24])
}

#[test]
fn zero_size_layouts() {
    for align in alignments() {
        let zero = lay(0, align);
        let p = ManualZone.allocate(zero).unwrap();
        assert_eq!(addr(p) % align, 0, "align {align}");
        assert_ne!(addr(p), 0);
        let z = ManualZone.allocate_zeroed(zero).unwrap();
        assert_eq!(addr(z) % align, 0, "align {align}");
        // SAFETY: zero-size blocks from this allocator.
        unsafe {
            ManualZone.deallocate(z.cast(), zero);
            // Grow from nothing, then shrink back to nothing.
            let g = ManualZone.grow(p.cast(), zero, lay(100, align)).unwrap();
            assert_eq!(addr(g) % align, 0);
            bytes(g, 100).fill(9);
            let gz = ManualZone
                .grow_zeroed(g.cast(), lay(100, align), lay(300, align))
                .unwrap();
            let b = bytes(gz, 300);
            assert!(
                b[..100].iter().all(|&x| x == 9) && common::is_zero(&b[100..]),
                "align {align}"
            );
            let s = ManualZone.shrink(gz.cast(), lay(300, align), zero).unwrap();
            assert_eq!(addr(s) % align, 0);
            assert_eq!(s.len(), 0);
            ManualZone.deallocate(s.cast(), zero);
            let gz = ManualZone
                .grow_zeroed(s.cast(), zero, lay(5000, align))
                .unwrap();
            assert!(common::is_zero(bytes(gz, 5000)));
            ManualZone.deallocate(gz.cast(), lay(5000, align));
        }
    }
}

/// For every alignment, a chain of grow / grow_zeroed / shrink calls keeps
/// the contents, keeps the alignment, and zero-fills what grow_zeroed adds.
#[test]
fn grow_shrink_chain_every_alignment() {
    let sizes = [
        1usize,
        7,
        16,
        100,
        4096,
        65_537,
        1 << 20,
        (1 << 20) + 1,
        3 << 20,
        9 << 20,
    ];
    for align in alignments() {
        for (k, pair) in sizes.windows(2).enumerate() {
            let (small, big) = (pair[0], pair[1]);
            // Keep large alignments cheap: they are huge blocks either way.
            if align >= 1 << 20 && big > (1 << 20) + 1 {
                continue;
            }
            let seed = common::seed_of(&[align as u64, k as u64]);
            let l0 = lay(small, align);
            let p = ManualZone.allocate(l0).unwrap();
            assert_eq!(addr(p) % align, 0, "allocate {small} align {align}");
            common::fill(bytes(p, small), seed);
            // SAFETY: each call passes the block and layout returned by the
            // previous one.
            unsafe {
                // grow to `big`, same alignment
                let l1 = lay(big, align);
                let p1 = ManualZone.grow(p.cast(), l0, l1).unwrap();
                assert_eq!(addr(p1) % align, 0, "grow {small}->{big} align {align}");
                assert!(
                    common::check_prefix(bytes(p1, small), seed, small),
                    "grow {small}->{big} align {align}"
                );
                common::fill(bytes(p1, big), seed ^ 1);
                // shrink to `small`, with a larger alignment when there is one
                let align2 = if align < 1 << 16 { align * 4 } else { align };
                let l2 = lay(small, align2);
                let p2 = ManualZone.shrink(p1.cast(), l1, l2).unwrap();
                assert_eq!(
                    addr(p2) % align2,
                    0,
                    "shrink {big}->{small} align {align}->{align2}"
                );
                assert!(
                    common::check_prefix(bytes(p2, small), seed ^ 1, big),
                    "shrink {big}->{small} align {align}"
                );
                // grow_zeroed back to `big`: old prefix kept, tail zero
                let l3 = lay(big, align2);
                let p3 = ManualZone.grow_zeroed(p2.cast(), l2, l3).unwrap();
                assert_eq!(addr(p3) % align2, 0);
                let b = bytes(p3, big);
                assert!(
                    common::check_prefix(&b[..small], seed ^ 1, big),
                    "grow_zeroed {small}->{big} align {align2}"
                );
                assert!(
                    common::is_zero(&b[small..]),
                    "grow_zeroed {small}->{big} align {align2}: tail not zero"
                );
                // a grow to the same size is allowed and changes nothing
                let p4 = ManualZone.grow(p3.cast(), l3, l3).unwrap();
                assert!(common::is_zero(&bytes(p4, big)[small..]));
                ManualZone.deallocate(p4.cast(), l3);
            }
        }
    }
}

/// Huge blocks grown and shrunk through the allocator (mremap paths).
#[test]
fn huge_grow_and_shrink() {
    let l0 = lay(2 << 20, 16);
    let p = ManualZone.allocate(l0).unwrap();
    common::fill(bytes(p, 2 << 20), 11);
    // SAFETY: each call passes the previous block and its layout.
    unsafe {
        let l1 = lay(64 << 20, 16);
        let p1 = ManualZone.grow_zeroed(p.cast(), l0, l1).unwrap();
        let b = bytes(p1, 64 << 20);
        assert!(common::check(&b[..2 << 20], 11));
        assert!(common::is_zero(&b[2 << 20..]));
        common::fill(b, 12);
        let l2 = lay(3 << 20, 16);
        let p2 = ManualZone.shrink(p1.cast(), l1, l2).unwrap();
        assert!(common::check_prefix(bytes(p2, 3 << 20), 12, 64 << 20));
        let l3 = lay(40 << 20, 1 << 21);
        let p3 = ManualZone.grow(p2.cast(), l2, l3).unwrap();
        assert_eq!(addr(p3) % (1 << 21), 0);
        assert!(common::check_prefix(
            &bytes(p3, 40 << 20)[..3 << 20],
            12,
            64 << 20
        ));
        let l4 = lay(1000, 16);
        let p4 = ManualZone.shrink(p3.cast(), l3, l4).unwrap();
        assert!(common::check_prefix(bytes(p4, 1000), 12, 64 << 20));
        ManualZone.deallocate(p4.cast(), l4);
    }
}

/// `allocate_zeroed` returns zeros, also when it reuses memory that was
/// written and freed just before (same thread, same size class).
#[test]
fn allocate_zeroed_after_dirty_reuse() {
    let mut rng = Rng::new(99);
    let mut sizes: Vec<usize> = (0..=21)
        .flat_map(|s| [1usize << s, (1 << s) + 1, (3 << s) / 2])
        .collect();
    sizes.extend((0..200).map(|_| rng.log_size(1, 1 << 20)));
    for &size in &sizes {
        for align in [1usize, 16, 64, 4096] {
            let l = lay(size, align);
            // Dirty a few blocks of this class and free them.
            let dirty: Vec<_> = (0..4)
                .map(|_| {
                    let p = ManualZone.allocate(l).unwrap();
                    bytes(p, size).fill(0xA5);
                    p
                })
                .collect();
            for p in dirty.iter().rev() {
                // SAFETY: allocated above with `l`.
                unsafe { ManualZone.deallocate(p.cast(), l) };
            }
            let zeroed: Vec<_> = (0..4)
                .map(|_| ManualZone.allocate_zeroed(l).unwrap())
                .collect();
            let reused = zeroed
                .iter()
                .filter(|z| dirty.iter().any(|d| addr(**z) == addr(*d)))
                .count();
            for z in &zeroed {
                assert_eq!(addr(*z) % align, 0);
                assert!(
                    common::is_zero(bytes(*z, size)),
                    "allocate_zeroed({size}, {align}) returned dirty memory ({reused} of 4 blocks reused)"
                );
            }
            for z in zeroed {
                // SAFETY: allocated above with `l`.
                unsafe { ManualZone.deallocate(z.cast(), l) };
            }
        }
    }
}

/// Many blocks live at once through the trait: no two overlap.
#[test]
fn allocate_many_disjoint() {
    let mut rng = Rng::new(5);
    let mut live: Vec<(usize, usize, Layout, u64)> = Vec::new();
    for i in 0..3_000u64 {
        let size = rng.log_size(1, 300_000);
        let align = 1usize << rng.below(13);
        let l = lay(size, align);
        let p = if i % 2 == 0 {
            ManualZone.allocate(l)
        } else {
            ManualZone.allocate_zeroed(l)
        }
        .unwrap();
        assert_eq!(addr(p) % align, 0);
        if i % 2 == 1 {
            assert!(common::is_zero(bytes(p, size)));
        }
        common::fill(bytes(p, size), i);
        live.push((addr(p), size, l, i));
    }
    live.sort_unstable_by_key(|e| e.0);
    for w in live.windows(2) {
        assert!(
            w[0].0 + w[0].1 <= w[1].0,
            "blocks {:#x}+{} and {:#x} overlap",
            w[0].0,
            w[0].1,
            w[1].0
        );
    }
    for (a, size, l, seed) in live {
        let p = NonNull::new(a as *mut u8).unwrap();
        // SAFETY: live block of `size` bytes allocated with `l`.
        unsafe {
            assert!(common::check(
                core::slice::from_raw_parts(p.as_ptr(), size),
                seed
            ));
            ManualZone.deallocate(p, l);
        }
    }
}
