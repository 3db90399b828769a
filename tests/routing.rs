//! `with_zone`: the calling thread's global allocations go to the chosen
//! zone, nested routes restore their predecessor (also on panic), other
//! threads are unaffected, and the stack zone is refused.
// `vec![..]` is the point: its buffer comes from the global allocator.
#![allow(clippy::useless_vec)]

use zonal::{with_zone, Zone};

#[global_allocator]
static A: zonal::Zonal = zonal::Zonal;

fn zone_of<T>(v: &[T]) -> Zone {
    zonal::inspect(v.as_ptr().cast())
        .expect("zonal memory")
        .zone
}

#[test]
fn allocations_follow_the_route_and_nest() {
    let outside = vec![1u64; 10];
    assert_eq!(zone_of(&outside), Zone::Manual);
    let (pinned, gc, inner_manual, back_to_pinned) = with_zone(Zone::Pinned, || {
        let pinned = vec![2u64; 10];
        let (gc, inner_manual) = with_zone(Zone::Gc, || {
            let gc = vec![3u64; 10];
            let manual = with_zone(Zone::Manual, || vec![4u64; 10]).unwrap();
            (gc, manual)
        })
        .unwrap();
        (pinned, gc, inner_manual, vec![5u64; 10])
    })
    .unwrap();
    assert_eq!(zone_of(&pinned), Zone::Pinned);
    assert_eq!(zone_of(&gc), Zone::Gc);
    assert_eq!(zone_of(&inner_manual), Zone::Manual);
    assert_eq!(zone_of(&back_to_pinned), Zone::Pinned);
    assert_eq!(zone_of(&vec![6u64; 10]), Zone::Manual);
    assert_eq!(zonal::current_zone(), Zone::Manual);
    // Blocks allocated under a route are freed and resized after it ended.
    let mut grown = pinned;
    grown.extend(0..10_000);
    assert_eq!(
        zone_of(&grown),
        Zone::Pinned,
        "realloc keeps the block's zone"
    );
    assert_eq!(gc.iter().sum::<u64>(), 30);
    drop((grown, gc, inner_manual, back_to_pinned));
}

#[test]
fn the_route_is_restored_when_the_closure_panics() {
    let result = std::panic::catch_unwind(|| {
        with_zone(Zone::Pinned, || {
            assert_eq!(zonal::current_zone(), Zone::Pinned);
            panic!("boom");
        })
    });
    assert!(result.is_err());
    assert_eq!(zonal::current_zone(), Zone::Manual);
    assert_eq!(zone_of(&vec![0u8; 32]), Zone::Manual);
}

#[test]
fn routes_are_per_thread() {
    with_zone(Zone::Pinned, || {
        let other = std::thread::spawn(|| zone_of(&vec![0u32; 64]))
            .join()
            .unwrap();
        assert_eq!(other, Zone::Manual);
        assert_eq!(zone_of(&vec![0u32; 64]), Zone::Pinned);
    })
    .unwrap();
}

#[test]
fn the_stack_zone_is_refused_with_a_clear_error() {
    let err = with_zone(Zone::Stack, || unreachable!()).unwrap_err();
    assert_eq!(err, zonal::RouteError::StackZone);
    assert!(err
        .to_string()
        .contains("cannot be routed to the stack zone"));
    assert_eq!(zonal::current_zone(), Zone::Manual);
}

#[test]
fn routed_statistics_count_in_the_target_zone() {
    let before = zonal::stats().zone(Zone::Pinned).allocations;
    let kept: Vec<Box<[u8; 40]>> = with_zone(Zone::Pinned, || {
        (0..100).map(|_| Box::new([0u8; 40])).collect()
    })
    .unwrap();
    assert!(zonal::stats().zone(Zone::Pinned).allocations >= before + 100);
    assert!(kept
        .iter()
        .all(|b| zonal::inspect(b.as_ptr()).unwrap().zone == Zone::Pinned));
}
