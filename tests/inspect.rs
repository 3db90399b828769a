//! `zonal::inspect` and the checked views: every kind of bad pointer is
//! recognised and reported with the seed's texts.

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use zonal::checked::{self, AccessError};
use zonal::{ManualZone, PinnedZone, Zone};

#[global_allocator]
static A: zonal::Zonal = zonal::Zonal;

#[test]
fn inspect_finds_base_size_zone_and_liveness_from_any_interior_address() {
    for (zone, size) in [
        (Zone::Manual, 24usize),
        (Zone::Pinned, 3000),
        (Zone::Manual, 100_000),
    ] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        let block = match zone {
            Zone::Manual => ManualZone.allocate(layout),
            _ => PinnedZone.allocate(layout),
        }
        .unwrap()
        .cast::<u8>();
        let base = block.as_ptr() as usize;
        for offset in [0, 1, size / 2, size - 1] {
            let a = zonal::inspect((base + offset) as *const u8).unwrap();
            assert_eq!(
                (a.zone, a.base, a.live),
                (zone, base, true),
                "offset {offset}"
            );
            assert!(a.size >= size && a.contains(base + offset));
        }
        // SAFETY: allocated above with this layout.
        unsafe { ManualZone.deallocate(block, layout) };
        let a = zonal::inspect(base as *const u8).unwrap();
        assert!(!a.live, "freed block reported live");
    }
}

#[test]
fn inspect_sees_huge_blocks_from_inside() {
    let v = vec![1u8; 8 << 20];
    let base = v.as_ptr() as usize;
    let a = zonal::inspect((base + (7 << 20)) as *const u8).unwrap();
    assert_eq!((a.zone, a.base, a.live), (Zone::Manual, base, true));
    assert!(a.size >= 8 << 20);
}

#[test]
fn inspect_knows_nothing_of_foreign_memory() {
    let on_stack = [0u8; 16];
    assert_eq!(zonal::inspect(on_stack.as_ptr()), None);
    static STATIC: u64 = 0;
    assert_eq!(zonal::inspect((&STATIC as *const u64).cast()), None);
    assert_eq!(zonal::inspect(core::ptr::null()), None);
    assert_eq!(zonal::inspect(usize::MAX as *const u8), None);
    let system = std::alloc::System;
    let layout = Layout::new::<[u64; 4]>();
    // SAFETY: a valid layout; freed below.
    let p = unsafe { std::alloc::GlobalAlloc::alloc(&system, layout) };
    assert_eq!(zonal::inspect(p), None);
    // SAFETY: allocated above.
    unsafe { std::alloc::GlobalAlloc::dealloc(&system, p, layout) };
}

#[test]
fn checked_views_report_each_fault_with_the_seed_texts() {
    let mut v = allocator_api2::vec::Vec::with_capacity_in(8, PinnedZone);
    v.extend(0u64..8);
    let p = v.as_ptr();
    // SAFETY (for all the views below): `v` is neither freed nor written
    // while they are used.
    unsafe {
        assert_eq!(*checked::deref(p.add(7)).unwrap(), 7);
        assert_eq!(checked::slice(p, 8).unwrap(), &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(*checked::get(p, 8, 3).unwrap(), 3);

        let e = checked::get(p, 8, 10).unwrap_err();
        assert_eq!(e, AccessError::IndexOutOfBounds { index: 10, len: 8 });
        assert_eq!(e.to_string(), "Array index out of bounds: 10 >= 8");

        let e = checked::deref(core::ptr::null::<u64>()).unwrap_err();
        assert_eq!(e.to_string(), "Null pointer dereference");

        let local = 5u64;
        let e = checked::deref(&local as *const u64).unwrap_err();
        assert!(matches!(e, AccessError::Foreign { .. }));
        assert!(
            e.to_string().starts_with("Invalid pointer dereference"),
            "{e}"
        );

        let e = checked::deref(p.cast::<u8>().add(3).cast::<u64>()).unwrap_err();
        assert!(matches!(e, AccessError::Misaligned { align: 8, .. }), "{e}");
        assert!(e.to_string().starts_with("Invalid pointer dereference"));

        // Past the block: the block holds 64 bytes (a size class), and
        // 1000 elements do not fit in it.
        let e = checked::slice(p, 1000).unwrap_err();
        assert!(matches!(e, AccessError::OutOfBounds { .. }), "{e}");
        assert!(e.to_string().starts_with("Invalid pointer dereference"));
    }
    let raw = v.as_ptr();
    drop(v);
    // SAFETY: the view must refuse the freed block before reading it.
    let e = unsafe { checked::deref(raw) }.unwrap_err();
    assert!(matches!(e, AccessError::Freed { .. }), "{e}");
    assert!(
        e.to_string().starts_with("Invalid pointer dereference"),
        "{e}"
    );
    assert!(e.to_string().contains("freed"), "{e}");
}

#[test]
fn zonal_metadata_is_not_an_allocation() {
    let b = Box::new(0u64);
    let segment_start = (&*b as *const u64 as usize) & !((4 << 20) - 1);
    // The segment header holds page records and bitmaps, not blocks.
    let header = (segment_start + 64) as *const u64;
    assert_eq!(zonal::inspect(header.cast()), None);
    let e = checked::validate(header, 1).unwrap_err();
    assert!(matches!(e, AccessError::NotAllocated { .. }), "{e}");
}
