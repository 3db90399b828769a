//! The stack zone: frames free everything at their end, the latest
//! allocation is reclaimed, frames nest and may be used and dropped in any
//! order without harm, chunks are reused, the cap holds, threads release
//! their memory, statistics count it.

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec as AVec;
use core::alloc::Layout;
use zonal::stack::{self, StackFrame};
use zonal::Zone;

#[global_allocator]
static A: zonal::Zonal = zonal::Zonal;

fn addr<T>(v: &[T]) -> usize {
    v.as_ptr() as usize
}

#[test]
fn frames_reuse_their_memory() {
    let first = stack::frame(|f| {
        let v: AVec<u64, _> = AVec::with_capacity_in(100, f);
        addr(&v)
    });
    for _ in 0..10_000 {
        stack::frame(|f| {
            let mut v: AVec<u64, _> = AVec::with_capacity_in(100, f);
            v.extend(0..100);
            assert_eq!(addr(&v), first, "a frame starts where the last one did");
            assert_eq!(zonal::inspect(v.as_ptr().cast()).unwrap().zone, Zone::Stack);
        });
    }
}

#[test]
fn freeing_the_latest_allocation_reclaims_it_and_growth_at_the_top_is_in_place() {
    stack::frame(|f| {
        let layout = Layout::from_size_align(48, 8).unwrap();
        let a = f.allocate(layout).unwrap().cast::<u8>();
        // SAFETY: allocated above with this layout, not used after.
        unsafe { f.deallocate(a, layout) };
        let b = f.allocate(layout).unwrap().cast::<u8>();
        assert_eq!(a, b, "the freed top allocation was not reclaimed");
        let c = f.allocate(layout).unwrap().cast::<u8>();
        // Freeing one below the top leaves the top alone.
        // SAFETY: as above.
        unsafe { f.deallocate(b, layout) };
        let d = f.allocate(layout).unwrap().cast::<u8>();
        assert_ne!(d, b);
        assert!(d.as_ptr() > c.as_ptr());

        let mut v: AVec<u32, _> = AVec::with_capacity_in(4, f);
        let start = addr(&v);
        v.extend(0..10_000);
        assert_eq!(addr(&v), start, "growth at the top moved the vector");
        assert_eq!(v.iter().map(|&x| x as u64).sum::<u64>(), 49_995_000);
    });
}

#[test]
fn nested_frames_pop_in_order_and_outer_allocations_survive() {
    stack::frame(|outer| {
        let mut a: AVec<u64, _> = AVec::new_in(outer);
        a.extend(0..10);
        let a_addr = addr(&a);
        let inner_start = stack::frame(|inner| {
            let mut b: AVec<u64, _> = AVec::new_in(inner);
            b.extend(100..200);
            // The outer vector grows while the inner frame lives: its new
            // buffer is kept apart (detached), not on top of the inner frame.
            a.extend(10..1000);
            assert_ne!(addr(&a), a_addr);
            assert_eq!(
                zonal::inspect(a.as_ptr().cast()).unwrap().zone,
                Zone::Manual
            );
            assert_eq!(b.iter().sum::<u64>(), 14_950);
            addr(&b)
        });
        assert_eq!(a.iter().sum::<u64>(), 499_500);
        // The inner frame's memory is free again: a new frame reuses it.
        stack::frame(|again| {
            let c: AVec<u64, _> = AVec::with_capacity_in(100, again);
            assert_eq!(addr(&c), inner_start);
        });
    });
}

#[test]
fn guards_dropped_out_of_order_or_forgotten_are_harmless() {
    let baseline = stack::usage().frames;
    let first = StackFrame::new();
    let second = StackFrame::new();
    let mut v: AVec<u8, _> = AVec::new_in(&second);
    v.extend(std::iter::repeat_n(7u8, 10_000));
    drop(first); // the outer one first: only marked ended
    v.extend(std::iter::repeat_n(8u8, 10_000));
    assert_eq!(v.iter().map(|&b| b as u64).sum::<u64>(), 150_000);
    drop(v);
    drop(second); // pops both
    assert_eq!(stack::usage().frames, baseline);

    // A forgotten frame is never popped: outer frames keep working (their
    // allocations are detached) and nothing dangles.
    stack::frame(|outer| {
        std::mem::forget(StackFrame::new());
        let mut w: AVec<u64, _> = AVec::new_in(outer);
        w.extend(0..1000);
        assert_eq!(w.iter().sum::<u64>(), 499_500);
    });
    stack::frame(|f| {
        let mut w: AVec<u64, _> = AVec::new_in(f);
        w.extend(0..1000);
        assert_eq!(w[999], 999);
    });
}

#[test]
fn big_allocations_span_chunks_and_keep_their_contents() {
    stack::frame(|f| {
        let mut blocks = Vec::new();
        for i in 0..200usize {
            let len = 1 + (i * 7919) % 20_000;
            let mut v: AVec<u8, _> = AVec::with_capacity_in(len, f);
            v.extend((0..len).map(|j| (i + j) as u8));
            blocks.push(v);
        }
        let huge: AVec<u8, _> = {
            let mut h = AVec::with_capacity_in(3 << 20, f);
            h.resize(3 << 20, 0xcd);
            h
        };
        for (i, v) in blocks.iter().enumerate() {
            assert!(
                v.iter().enumerate().all(|(j, &b)| b == (i + j) as u8),
                "block {i}"
            );
        }
        assert!(huge.iter().all(|&b| b == 0xcd));
        assert!(stack::usage().held_bytes >= (3 << 20) + 2_000_000);
    });
}

#[test]
fn the_per_thread_cap_is_enforced() {
    std::thread::spawn(|| {
        stack::set_thread_cap(512 * 1024);
        stack::frame(|f| {
            let mut v: AVec<u8, _> = AVec::new_in(f);
            assert!(v.try_reserve(256 * 1024).is_ok());
            let mut w: AVec<u8, _> = AVec::new_in(f);
            assert!(w.try_reserve(2 << 20).is_err(), "cap exceeded");
            assert!(f.allocate(Layout::new::<[u8; 1 << 20]>()).is_err());
            assert!(stack::usage().held_bytes <= 512 * 1024);
            assert_eq!(stack::usage().cap_bytes, 512 * 1024);
        });
    })
    .join()
    .unwrap();
}

#[test]
fn a_panicking_frame_is_popped() {
    let before = stack::usage().frames;
    let r = std::panic::catch_unwind(|| {
        stack::frame(|f| {
            let _v: AVec<u64, _> = AVec::with_capacity_in(1000, f);
            panic!("inside a frame");
        })
    });
    assert!(r.is_err());
    assert_eq!(stack::usage().frames, before);
}

#[test]
fn threads_release_their_stack_memory_and_statistics_count_it() {
    let before = *zonal::stats().zone(Zone::Stack);
    let handles: Vec<_> = (0..32)
        .map(|t| {
            std::thread::spawn(move || {
                stack::frame(|f| {
                    let mut v: AVec<u64, _> = AVec::new_in(f);
                    v.extend(0..40_000u64 + t);
                    v.len()
                })
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap() >= 40_000);
    }
    let after = *zonal::stats().zone(Zone::Stack);
    assert!(
        after.allocations >= before.allocations + 32,
        "chunks are counted"
    );
    // Each thread held at least 320 KiB; all of it went back (other tests
    // of this binary may hold a few chunks meanwhile).
    let growth = after.live_bytes.saturating_sub(before.live_bytes);
    assert!(
        growth < 4 << 20,
        "stack memory of exited threads leaked: {growth}"
    );
}

#[test]
fn a_frame_kept_in_a_thread_local_outlives_the_exit_hook_safely() {
    std::thread::spawn(|| {
        thread_local! {
            static KEPT: std::cell::RefCell<Option<StackFrame>> = const { std::cell::RefCell::new(None) };
        }
        KEPT.with(|k| *k.borrow_mut() = Some(StackFrame::new()));
        stack::frame(|f| {
            let v: AVec<u8, _> = AVec::with_capacity_in(100, f);
            assert_eq!(v.capacity(), 100);
        });
    })
    .join()
    .unwrap();
}

#[test]
fn over_aligned_allocations_are_served_and_freed() {
    stack::frame(|f| {
        for align in [8usize, 64, 4096, 8192, 1 << 16] {
            let layout = Layout::from_size_align(100, align).unwrap();
            let p = f.allocate(layout).unwrap().cast::<u8>();
            assert_eq!(p.as_ptr() as usize % align, 0, "align {align}");
            // SAFETY: the block holds 100 bytes.
            unsafe { p.as_ptr().write_bytes(0xaa, 100) };
            if align > 4096 {
                // SAFETY: allocated above with this layout.
                unsafe { f.deallocate(p, layout) };
            }
        }
    });
}
