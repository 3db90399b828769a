//! The other zones as GC roots: a `Gc` reachable only from pinned memory,
//! from a stack frame, or through a pin guard survives collections; the
//! same object with no root is collected (the negative control that shows
//! each test can fail).
//!
//! Conservative scanning can keep an object alive through a stale copy of
//! its address in a register or a dead stack slot, so objects are made
//! and checked in functions that are never inlined, the stack below is
//! clobbered before collecting, and the control only requires that most
//! unrooted objects go.

use allocator_api2::vec::Vec as AVec;
use std::hint::black_box;
use zonal::{gc, Gc, GcWeak, PinnedZone};

#[global_allocator]
static A: zonal::Zonal = zonal::Zonal;

const OBJECTS: usize = 16;

#[derive(Debug)]
struct Payload([u64; 8]);

fn payload(i: usize) -> Payload {
    Payload([i as u64 * 0x1_0000_0001 + 0xF00D_0000_0000_0000; 8])
}

/// Overwrites the dead part of the stack below the caller.
#[inline(never)]
fn clobber_stack() {
    let junk = [0u8; 64 * 1024];
    black_box(&junk);
}

/// Makes `OBJECTS` objects, hands each to `keep` (which roots it, or not),
/// and returns only weak handles.
#[inline(never)]
fn make(mut keep: impl FnMut(usize, Gc<Payload>)) -> Vec<GcWeak<Payload>> {
    (0..OBJECTS)
        .map(|i| {
            let g = Gc::new(payload(i));
            let weak = Gc::downgrade(g);
            keep(i, g);
            weak
        })
        .collect()
}

#[inline(never)]
fn collect_and_count_survivors(weak: &[GcWeak<Payload>]) -> usize {
    clobber_stack();
    gc::collect();
    gc::collect();
    weak.iter()
        .enumerate()
        .filter(|(i, w)| match w.upgrade() {
            Some(g) => {
                assert_eq!(g.0, payload(*i).0, "a surviving object was overwritten");
                true
            }
            None => false,
        })
        .count()
}

#[test]
fn unrooted_objects_are_collected() {
    let weak = make(|_, g| {
        black_box(g);
    });
    let survivors = collect_and_count_survivors(&weak);
    assert!(
        survivors < OBJECTS / 2,
        "{survivors} of {OBJECTS} unrooted objects survived"
    );
}

#[test]
fn a_gc_reachable_only_from_pinned_memory_survives() {
    let mut slots: AVec<Option<Gc<Payload>>, _> = AVec::with_capacity_in(OBJECTS, PinnedZone);
    let weak = make(|_, g| slots.push(Some(g)));
    assert_eq!(collect_and_count_survivors(&weak), OBJECTS);
    for (i, slot) in slots.iter().enumerate() {
        assert_eq!(slot.unwrap().0, payload(i).0);
    }
}

#[test]
fn a_gc_reachable_only_through_a_pin_guard_survives() {
    let mut guards = Vec::new();
    // The guard is taken from an address inside the object; nothing else
    // keeps the object's address.
    let weak = make(|_, g| {
        let interior = (Gc::as_ptr(g) as *const u8).wrapping_add(24);
        guards.push(zonal::pin(interior).unwrap());
    });
    assert_eq!(collect_and_count_survivors(&weak), OBJECTS);
    drop(guards);
    let survivors = collect_and_count_survivors(&weak);
    assert!(
        survivors < OBJECTS / 2,
        "{survivors} survived after their pins were dropped"
    );
}

#[test]
fn a_gc_reachable_only_through_an_ffi_handle_survives() {
    let mut handles = Vec::new();
    let weak = make(|_, g| {
        handles.push(zonal::pinned::handles::export(Gc::as_ptr(g).cast()).unwrap());
    });
    assert_eq!(collect_and_count_survivors(&weak), OBJECTS);
    for (i, &h) in handles.iter().enumerate() {
        let p = zonal::pinned::handles::resolve(h).unwrap().as_ptr() as *const Payload;
        // SAFETY: the handle keeps the object alive.
        assert_eq!(unsafe { &*p }.0, payload(i).0);
        zonal::pinned::handles::revoke(h).unwrap();
    }
}

#[test]
fn a_gc_reachable_only_from_a_stack_frame_survives() {
    zonal::stack::frame(|f| {
        let mut slots: AVec<Option<Gc<Payload>>, _> = AVec::with_capacity_in(OBJECTS, f);
        let weak = make(|_, g| slots.push(Some(g)));
        assert_eq!(collect_and_count_survivors(&weak), OBJECTS);
        for (i, slot) in slots.iter().enumerate() {
            assert_eq!(slot.unwrap().0, payload(i).0);
        }
    });
}
