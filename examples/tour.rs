//! The zonal tour: the crate's main demonstration.
//!
//! Run with `cargo run --release --example tour`. It installs zonal as the
//! global allocator, exercises the manual zone the way ordinary programs do
//! (boxes, strings, vectors that grow by `realloc`, hash maps, huge blocks,
//! threads that free each other's blocks), uses the manual zone as a
//! per-collection allocator, then the garbage-collected zone (`Gc<T>` graphs
//! kept alive only by the conservative scan of stacks and of manual-zone
//! memory, finalizers, weak handles, collections while threads allocate),
//! and prints the statistics table.

use allocator_api2::vec::Vec as ZoneVec;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use zonal::{Gc, GcZone, ManualZone, Zone};

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

    println!("{}", zonal::stats());
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
