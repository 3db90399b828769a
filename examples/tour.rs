//! The zonal tour: the crate's main demonstration.
//!
//! Run with `cargo run --release --example tour`. It installs zonal as the
//! global allocator and walks through the four zones:
//!
//! * the manual zone the way ordinary programs use it (boxes, strings,
//!   vectors that grow by `realloc`, hash maps, huge blocks, threads that
//!   free each other's blocks), and as a per-collection allocator;
//! * the garbage-collected zone (`Gc<T>` graphs kept alive only by the
//!   conservative scan of stacks and of manual-zone memory, finalizers, weak
//!   handles, collections while threads allocate);
//! * the pinned zone (a vector at a stable address, an FFI handle exported,
//!   resolved and revoked, pin guards keeping `Gc` values alive,
//!   page-locked memory);
//! * the stack zone (nested frames of scratch vectors, memory reused from
//!   frame to frame);
//! * routing a std `Vec`'s allocation to another zone with `with_zone`, and
//!   checked access to raw pointers (`inspect`, `checked`);
//!
//! then prints the statistics table, and gives the free memory zonal kept
//! for reuse back to the OS (`release_free_memory`).

use allocator_api2::vec::Vec as ZoneVec;
use std::alloc::Layout;
use std::cell::Cell;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use zonal::pinned::{handles, PinnedOptions};
use zonal::{checked, Gc, GcWeak, GcZone, ManualZone, PinnedZone, Zone};

#[global_allocator]
static ALLOC: zonal::Zonal = zonal::Zonal;

fn main() {
    println!("zonal tour\n");

    // 1. Ordinary Rust allocations go through the manual zone.
    let words: Vec<String> = (0..10_000).map(|i| format!("word-{i}")).collect();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, w) in words.iter().enumerate() {
        index.insert(w, i);
    }
    assert_eq!(index["word-4242"], 4242);
    println!(
        "1. {} strings and a {}-entry HashMap in the manual zone",
        words.len(),
        index.len()
    );

    // 2. A vector that grows by realloc: in place inside its size class,
    //    then through mremap once it is a huge block (no copy).
    let mut grow: Vec<u64> = Vec::new();
    for i in 0..4_000_000u64 {
        grow.push(i);
    }
    println!(
        "2. a Vec grown to {} MiB by realloc",
        (grow.len() * 8) >> 20
    );

    // 3. Per-collection zone allocator (allocator-api2 `Allocator`).
    let mut samples = ZoneVec::new_in(ManualZone);
    samples.extend((0..1000u32).map(|i| i * i));
    let mut table = hashbrown::HashMap::new_in(ManualZone);
    table.insert("zone", "manual");
    println!(
        "3. allocator_api2 Vec ({} items) and hashbrown map in ManualZone",
        samples.len()
    );

    // 4. Cross-thread frees: producers allocate, the main thread frees.
    let (tx, rx) = mpsc::channel::<Vec<Box<[u8; 48]>>>();
    let producers: Vec<_> = (0..4u8)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                for _ in 0..50 {
                    tx.send((0..1000).map(|_| Box::new([t; 48])).collect())
                        .unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut received = 0;
    for batch in rx {
        received += batch.len();
    }
    for p in producers {
        p.join().unwrap();
    }
    println!("4. {received} blocks allocated on 4 threads and freed on the main thread");

    let before = zonal::stats();
    drop((index, grow, samples, table));
    drop(words);
    let after = zonal::stats();
    println!(
        "5. freeing the structures above returned {} live bytes and {} blocks\n",
        before.zone(Zone::Manual).live_bytes - after.zone(Zone::Manual).live_bytes,
        before.zone(Zone::Manual).live_blocks - after.zone(Zone::Manual).live_blocks,
    );

    gc_zone();
    let pinned = pinned_zone();
    stack_zone();
    let routed = routing();
    checked_access(&pinned);

    println!("{}", zonal::stats());
    drop((pinned, routed));

    // 12. The free memory zonal keeps committed for reuse, back to the OS.
    let freed = zonal::release_free_memory();
    println!(
        "12. release_free_memory gave {:.1} MiB back to the OS; {:.1} MiB committed now",
        freed as f64 / (1 << 20) as f64,
        zonal::stats().os_committed_bytes as f64 / (1 << 20) as f64,
    );
}

/// A cons cell in the GC zone.
struct Cons {
    value: u64,
    next: Cell<Option<Gc<Cons>>>,
}

/// Counts the finalizers of `Noisy` values.
static DROPPED: AtomicUsize = AtomicUsize::new(0);

/// A value whose `Drop` (its finalizer) counts itself.
struct Noisy(#[allow(dead_code)] u64);

impl Drop for Noisy {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

fn list(len: u64) -> Gc<Cons> {
    let mut head = Gc::new(Cons {
        value: 0,
        next: Cell::new(None),
    });
    for value in 1..len {
        head = Gc::new(Cons {
            value,
            next: Cell::new(Some(head)),
        });
    }
    head
}

fn sum(list: Gc<Cons>) -> u64 {
    let mut node = Some(list);
    let mut total = 0;
    while let Some(n) = node {
        total += n.value;
        node = n.next.get();
    }
    total
}

/// Finalizable garbage, and weak handles to it.
#[inline(never)]
fn make_garbage() -> Vec<zonal::GcWeak<Noisy>> {
    (0..1000)
        .map(|i| Gc::downgrade(Gc::new(Noisy(i))))
        .collect()
}

fn gc_zone() {
    // 6. A Gc list on the stack, another only inside a std Vec (manual-zone
    //    memory, which the collector scans), and a GcZone hash map.
    let kept = list(10_000);
    let in_vec: Vec<Gc<Cons>> = vec![list(1_000)];
    let mut by_name = hashbrown::HashMap::new_in(GcZone);
    by_name.insert("hundred", list(100));
    let before = zonal::stats().gc;
    // 7. Garbage: 200 lists of 10 000 cells (about 64 MiB) and finalizable
    //    values, while two threads build and check lists of their own.
    let workers: Vec<_> = (0..2)
        .map(|_| {
            thread::spawn(|| {
                let mine = list(5_000);
                for _ in 0..50 {
                    let _ = list(10_000);
                }
                sum(mine)
            })
        })
        .collect();
    for _ in 0..200 {
        let _ = list(10_000);
    }
    let weak = make_garbage();
    for w in workers {
        assert_eq!(w.join().unwrap(), 5_000 * 4_999 / 2);
    }
    zonal::gc::collect();
    let after = zonal::stats().gc;
    assert_eq!(sum(kept), 10_000 * 9_999 / 2);
    assert_eq!(sum(in_vec[0]), 1_000 * 999 / 2);
    assert_eq!(sum(by_name["hundred"]), 100 * 99 / 2);
    println!(
        "6. {} collections freed {:.1} MiB of Gc garbage; the lists on the stack, in a std Vec \n   and in a GcZone hash map are intact (max pause {:.2} ms)",
        after.collections - before.collections,
        (after.bytes_freed - before.bytes_freed) as f64 / (1 << 20) as f64,
        after.pause_max.as_secs_f64() * 1e3,
    );
    // A word left over on a stack may keep a value alive (the scan is
    // conservative), so a few of the 1000 may survive.
    let dead = weak.iter().filter(|w| w.upgrade().is_none()).count();
    println!(
        "7. {} of 1000 finalizable values were finalized; {dead} of their weak handles no longer upgrade\n",
        DROPPED.load(Ordering::Relaxed),
    );
}

/// A GC object that only a pin guard will keep alive.
struct Payload([u64; 8]);

/// Makes 16 `Gc` values, pins each through an interior address (nothing
/// else keeps them), and returns the guards and weak handles.
#[inline(never)]
fn pinned_objects() -> (Vec<zonal::PinGuard>, Vec<GcWeak<Payload>>) {
    (0..16u64)
        .map(|i| {
            let g = Gc::new(Payload([i; 8]));
            let interior = (Gc::as_ptr(g) as *const u8).wrapping_add(24);
            (zonal::pin(interior).unwrap(), Gc::downgrade(g))
        })
        .unzip()
}

/// Collects (after overwriting the dead stack below) and counts the
/// values still alive.
#[inline(never)]
fn collect_and_count(weak: &[GcWeak<Payload>]) -> usize {
    black_box(&[0u8; 64 * 1024]);
    zonal::gc::collect();
    let alive = weak
        .iter()
        .enumerate()
        .filter_map(|(i, w)| Some((i, w.upgrade()?)));
    alive.map(|(i, g)| assert_eq!(g.0, [i as u64; 8])).count()
}

fn pinned_zone() -> ZoneVec<u64, PinnedZone> {
    // 8. Pinned memory is never moved or collected, and is scanned for Gc
    //    values; an FFI handle names it until revoked.
    let mut buf = ZoneVec::with_capacity_in(1024, PinnedZone);
    buf.extend(0..1024u64);
    let addr = buf.as_ptr();
    zonal::gc::collect();
    assert_eq!(buf.as_ptr(), addr);
    let handle = handles::export(addr.cast()).unwrap();
    assert_eq!(
        handles::resolve(handle).unwrap().as_ptr() as *const u64,
        addr
    );
    handles::revoke(handle).unwrap();
    let stale = handles::resolve(handle).unwrap_err();
    assert!(stale.to_string().contains("revoked"));
    println!(
        "8. a PinnedZone Vec stays at {addr:p} across a collection; FFI handle {handle:#x} resolved to it,\n   then was revoked: {stale}"
    );

    // Pin guards keep Gc values alive that nothing else refers to.
    let (guards, weak) = pinned_objects();
    assert_eq!(collect_and_count(&weak), 16);
    drop(guards);
    let left = collect_and_count(&weak);
    assert!(left < 8, "{left} of 16 survived after unpinning");
    println!("   16 Gc values kept only by pin guards survived a collection; after unpinning, {left} survived the next\n   (a stale word on a stack may keep a few: the scan is conservative)");

    // Page-locked memory (mlock), cleared when freed: RLIMIT_MEMLOCK may refuse it.
    let secrets = PinnedOptions::new().page_locked(true).zero_on_free(true);
    let layout = Layout::new::<[u8; 4096]>();
    match secrets.try_allocate(layout) {
        Ok(block) => {
            // SAFETY: allocated just above with this layout, not used after.
            unsafe { secrets.deallocate_block(block.cast(), layout) };
            println!("   a 4 KiB page-locked block was locked, zeroed on free and unlocked\n");
        }
        Err(e) => println!("   page-locked memory refused (handled): {e}\n"),
    }
    buf
}

fn stack_zone() {
    // 9. Stack frames: scratch vectors freed wholesale when the frame ends;
    //    frames nest, and the next frame reuses the same chunk.
    let chunks_before = zonal::stats().zone(Zone::Stack).allocations;
    let mut starts = Vec::with_capacity(1000);
    let mut evens = 0;
    for round in 0..1000u64 {
        evens += zonal::stack::frame(|f| {
            let mut squares = ZoneVec::with_capacity_in(1000, f);
            squares.extend((0..1000u64).map(|i| i * i + round));
            starts.push(squares.as_ptr() as usize);
            zonal::stack::frame(|inner| {
                assert_eq!(zonal::stack::usage().frames, 2);
                let mut even: ZoneVec<u64, _> = ZoneVec::new_in(inner);
                even.extend(squares.iter().filter(|&&x| x % 2 == 0));
                even.len()
            })
        });
    }
    let chunks = zonal::stats().zone(Zone::Stack).allocations - chunks_before;
    assert_eq!(evens, 1000 * 500);
    assert!(starts.iter().all(|&s| s == starts[0]));
    assert!(chunks <= 2, "{chunks} chunks for 1000 frames");
    assert_eq!(zonal::stack::usage().frames, 0);
    println!(
        "9. 1000 frames, each with a 1000-element scratch Vec and a nested frame: every frame's Vec\n   started at the same address, and the stack zone took {chunks} chunk from the pages for all of them\n"
    );
}

fn routing() -> Vec<u8> {
    // 10. with_zone sends the thread's global allocations (here a std Vec's
    //     buffer) to another zone; the stack zone is refused.
    let pinned = zonal::with_zone(Zone::Pinned, || vec![7u8; 4096]).unwrap();
    let words = zonal::with_zone(Zone::Gc, || (0..512u64).collect::<Vec<_>>()).unwrap();
    assert_eq!(zonal::current_zone(), Zone::Manual);
    assert_eq!(zonal::inspect(pinned.as_ptr()).unwrap().zone, Zone::Pinned);
    assert_eq!(
        zonal::inspect(words.as_ptr().cast()).unwrap().zone,
        Zone::Gc
    );
    zonal::gc::collect();
    assert_eq!(words.iter().sum::<u64>(), 511 * 512 / 2);
    let refused = zonal::with_zone(Zone::Stack, || ()).unwrap_err();
    println!(
        "10. with_zone put one std Vec in the pinned zone and one in the GC zone (intact after a collection);\n    Zone::Stack is refused: \"{refused}\"\n"
    );
    pinned
}

fn checked_access(pinned: &[u64]) {
    // 11. inspect: which allocation holds an address (zone, block, live?).
    let boxed = Box::new([0u64; 6]);
    let gc = Gc::new(42u64);
    let local = 0u64;
    let manual = zonal::inspect(boxed.as_ptr().cast()).unwrap();
    let pin = zonal::inspect(pinned.as_ptr().wrapping_add(100).cast()).unwrap();
    let collected = zonal::inspect(Gc::as_ptr(gc).cast()).unwrap();
    let stack = zonal::stack::frame(|f| {
        let scratch = ZoneVec::<u8, _>::with_capacity_in(16, f);
        zonal::inspect(scratch.as_ptr()).unwrap()
    });
    assert_eq!(
        (manual.zone, manual.base),
        (Zone::Manual, boxed.as_ptr() as usize)
    );
    assert_eq!(
        (pin.zone, pin.base),
        (Zone::Pinned, pinned.as_ptr() as usize)
    );
    assert_eq!(
        (collected.zone, collected.base),
        (Zone::Gc, Gc::as_ptr(gc) as usize)
    );
    assert_eq!(stack.zone, Zone::Stack);
    assert!(manual.live && pin.live && collected.live);
    assert!(zonal::inspect((&local as *const u64).cast()).is_none());
    println!(
        "11. inspect: Box -> {} block of {} B, interior of the pinned Vec -> {} block of {} B at its start,\n    Gc -> {} block of {} B, frame Vec -> {} chunk of {} KiB, a local variable -> not zonal's",
        manual.zone, manual.size, pin.zone, pin.size, collected.zone, collected.size,
        stack.zone, stack.size >> 10,
    );

    //     Checked views of raw pointers (as received from FFI).
    let array = Box::new([10u32, 11, 12, 13, 14, 15, 16, 17]);
    let raw: *const u32 = array.as_ptr();
    // SAFETY: nothing frees or writes `array` while the views are used.
    let errors = unsafe {
        assert_eq!(*checked::get(raw, 8, 3).unwrap(), 13);
        assert_eq!(checked::slice(raw, 8).unwrap().iter().sum::<u32>(), 108);
        [
            checked::deref(std::ptr::null::<u32>()).unwrap_err(),
            checked::deref(&local).unwrap_err(),
            checked::get(raw, 8, 10).unwrap_err(),
            checked::slice(raw, 1000).unwrap_err(),
        ]
    };
    assert_eq!(errors[0].to_string(), "Null pointer dereference");
    assert!(errors[1]
        .to_string()
        .starts_with("Invalid pointer dereference"));
    assert_eq!(errors[2].to_string(), "Array index out of bounds: 10 >= 8");
    assert!(errors[3].to_string().contains("run past the end"));
    println!("    checked views: element 3 of a Box'd [u32; 8] is 13; refused:");
    for e in errors {
        println!("      {e}");
    }
    println!();
}
