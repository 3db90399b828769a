//! The zonal tour: the crate's main demonstration.
//!
//! Run with `cargo run --release --example tour`. It installs zonal as the
//! global allocator, exercises the manual zone the way ordinary programs do
//! (boxes, strings, vectors that grow by `realloc`, hash maps, huge blocks,
//! threads that free each other's blocks), uses the manual zone as a
//! per-collection allocator, and prints the statistics table.
//!
//! The garbage-collected, pinned and stack zones are being built (see the
//! README's roadmap); their rows in the table stay at zero until then.

use allocator_api2::vec::Vec as ZoneVec;
use std::collections::HashMap;
use std::sync::mpsc;
use std::thread;
use zonal::{ManualZone, Zone};

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

    println!("{after}");
}
