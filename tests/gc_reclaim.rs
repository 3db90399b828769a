//! Garbage is reclaimed (issue 3, item 8b): a program that allocates 100
//! times its GC heap limit in short-lived objects runs in bounded memory;
//! `gc::disable` suppresses automatic collections; explicit deallocation
//! through `GcZone` frees at once (on the allocating thread) or leaves the
//! block to the collector (on another thread).
//!
//! Every test runs in a child process of its own: they compare
//! process-wide statistics and set the collection threshold.

#[global_allocator]
static A: zonal::Zonal = zonal::Zonal;

mod common;
mod gc_common;

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec as AVec;
use common::Rng;
use gc_common::{clobber_stack, isolated, word, Payload};
use std::alloc::Layout;
use std::hint::black_box;
use std::ptr::NonNull;
use std::time::Duration;
use zonal::{gc, Gc, GcAtomicZone, GcZone, Zone, ZoneStats};

const MIB: usize = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(180);

fn gc_zone() -> ZoneStats {
    *zonal::stats().zone(Zone::Gc)
}

/// A node of the short-lived lists (48 bytes, a 64-byte block).
struct Node {
    value: u64,
    check: u64,
    next: Option<Gc<Node>>,
    _pad: [u64; 3],
}

/// Builds and walks a list of `len` nodes, then drops it: garbage.
#[inline(never)]
fn short_lived_list(len: u64, seed: u64) -> usize {
    let mut head: Option<Gc<Node>> = None;
    for i in 0..len {
        let value = seed ^ i;
        head = Some(Gc::new(Node {
            value,
            check: !value,
            next: head,
            _pad: [0; 3],
        }));
    }
    let mut count = 0;
    let mut node = head;
    while let Some(n) = node {
        assert_eq!(n.check, !n.value, "list node overwritten while in use");
        count += 1;
        node = n.next;
    }
    assert_eq!(count, len);
    len as usize * std::mem::size_of::<Node>()
}

/// A `GcZone` vector of `words` words, checked and dropped (its buffer is
/// left to the collector: `Vec`'s drop deallocates it explicitly, so half
/// of them are leaked with `forget` to leave the work to the collector).
#[inline(never)]
fn short_lived_vector(words: usize, seed: u64, forget: bool) -> usize {
    let mut v: AVec<u64, GcZone> = AVec::with_capacity_in(words, GcZone);
    v.extend((0..words).map(|i| seed ^ i as u64));
    assert!(v.iter().enumerate().all(|(i, &w)| w == seed ^ i as u64));
    if forget {
        std::mem::forget(v);
    }
    words * 8
}

/// A big pointer-free buffer (a large or huge block), touched on every
/// page so that it is resident, then forgotten.
#[inline(never)]
fn short_lived_buffer(bytes: usize, seed: u8) -> usize {
    let mut v: AVec<u8, GcAtomicZone> = AVec::with_capacity_in(bytes, GcAtomicZone);
    v.resize(bytes, seed);
    assert_eq!(v[bytes / 2], seed);
    std::mem::forget(v);
    bytes
}

/// Objects that stay alive throughout (checked at the end).
#[inline(never)]
fn make_live_set() -> AVec<Gc<Payload>, GcZone> {
    let mut v = AVec::with_capacity_in(4096, GcZone);
    v.extend((0..4096u64).map(|i| Gc::new(Payload::new(5000 + i))));
    v
}

fn garbage_is_reclaimed_and_memory_stays_bounded_body() {
    const THRESHOLD: usize = 8 * MIB;
    const TOTAL: usize = 800 * MIB;
    gc::set_threshold(THRESHOLD);
    let live_set = make_live_set();
    gc::collect();
    let start = zonal::stats();
    let start_rss = common::rss_bytes();
    let mut rng = Rng::new(8);
    let mut allocated = 0;
    let mut next_sample = 0;
    let (mut max_committed, mut max_rss) = (0u64, 0usize);
    let mut samples = 0;
    // Bytes in small list nodes, vectors, big buffers.
    let mut kinds = [0usize; 3];
    while allocated < TOTAL {
        let seed = rng.next_u64();
        let (kind, bytes) = match rng.below(100) {
            0..=69 => (0, short_lived_list(rng.range(1000, 20_000) as u64, seed)),
            70..=94 => (
                1,
                short_lived_vector(rng.range(512, 8192), seed, rng.chance(1, 2)),
            ),
            _ => (
                2,
                short_lived_buffer(rng.range(256 * 1024, 3 * MIB), seed as u8),
            ),
        };
        kinds[kind] += bytes;
        allocated += bytes;
        if allocated >= next_sample {
            next_sample = allocated + 4 * MIB;
            samples += 1;
            max_committed = max_committed.max(gc_zone().committed_bytes);
            max_rss = max_rss.max(common::rss_bytes());
        }
    }
    clobber_stack(4);
    gc::collect();
    let end = zonal::stats();
    let collections = end.gc.collections - start.gc.collections;
    let freed = end.gc.bytes_freed - start.gc.bytes_freed;
    println!(
        "allocated {} MiB (lists {} MiB, vectors {} MiB, buffers {} MiB) in {samples} samples: {collections} collections, {} MiB freed; \
         GC committed at most {} MiB (start {} MiB); RSS at most {} MiB (start {} MiB); \
         GC live {} MiB at the end",
        allocated / MIB,
        kinds[0] / MIB,
        kinds[1] / MIB,
        kinds[2] / MIB,
        freed / MIB as u64,
        max_committed / MIB as u64,
        start.zone(Zone::Gc).committed_bytes / MIB as u64,
        max_rss / MIB,
        start_rss / MIB,
        end.zone(Zone::Gc).live_bytes / MIB as u64,
    );
    // Between two collections the program allocates at most the threshold
    // (8 MiB) plus the unflushed 64 KiB per thread and one structure in
    // flight (at most 3 MiB); the live set is 1 MiB of payloads (+ 32 KiB
    // vector): about 12 MiB of blocks in use at any time. Committed memory
    // adds size-class rounding (at most 25 %), partly used pages of each
    // size class (64 KiB small, 512 KiB medium, a 4 MiB segment per large
    // page), retained segments and huge mappings awaiting reuse (the purge
    // delay is a matter of time, so this depends a little on the machine's
    // speed): 5 times the blocks in use leaves room for all of it. Without
    // collections the zone would hold 800 MiB.
    assert!(
        max_committed <= 64 * MIB as u64,
        "the GC zone grew to {} MiB committed while allocating 100 x its 8 MiB threshold",
        max_committed / MIB as u64
    );
    // The process as a whole: the GC zone's bound, plus the manual zone and
    // the test harness (a few MiB), plus pages freed but not yet returned to
    // the OS (the purge delay of 1 s, with memory retained up to the
    // retention budget).
    assert!(
        max_rss <= start_rss + 96 * MIB,
        "RSS grew from {} MiB to {} MiB",
        start_rss / MIB,
        max_rss / MIB
    );
    assert!(
        collections as usize >= TOTAL / THRESHOLD / 2,
        "only {collections} collections for {} MiB at an 8 MiB threshold",
        TOTAL / MIB
    );
    assert!(
        freed as usize >= TOTAL * 9 / 10,
        "only {} MiB freed of {} MiB of garbage",
        freed / MIB as u64,
        TOTAL / MIB
    );
    for (i, g) in live_set.iter().enumerate() {
        assert!(g.intact(5000 + i as u64), "live object {i} overwritten");
    }
}

#[test]
fn garbage_is_reclaimed_and_memory_stays_bounded() {
    isolated(
        "garbage_is_reclaimed_and_memory_stays_bounded",
        &[],
        TIMEOUT,
        garbage_is_reclaimed_and_memory_stays_bounded_body,
    );
}

/// Allocates about `bytes` of garbage in 256-byte payloads.
#[inline(never)]
fn garbage(bytes: usize) {
    for i in 0..bytes / 256 {
        black_box(Gc::new(Payload::new(i as u64)));
    }
}

fn disable_suppresses_automatic_collections_body() {
    gc::set_threshold(MIB);
    garbage(4 * MIB);
    let start = zonal::stats().gc.collections;
    assert!(start >= 2, "no automatic collection at a 1 MiB threshold");
    assert!(gc::is_enabled());
    let outer = gc::disable();
    let inner = gc::disable();
    assert!(!gc::is_enabled());
    drop(inner);
    assert!(
        !gc::is_enabled(),
        "one guard dropped, one alive: still disabled"
    );
    garbage(64 * MIB);
    assert_eq!(
        zonal::stats().gc.collections,
        start,
        "automatic collections ran while disabled"
    );
    gc::collect();
    assert_eq!(
        zonal::stats().gc.collections,
        start + 1,
        "an explicit collection runs while disabled"
    );
    drop(outer);
    assert!(gc::is_enabled());
    garbage(16 * MIB);
    let end = zonal::stats().gc.collections;
    assert!(
        end >= start + 4,
        "automatic collections did not resume: {start} -> {end}"
    );
}

#[test]
fn disable_suppresses_automatic_collections() {
    isolated(
        "disable_suppresses_automatic_collections",
        &[],
        TIMEOUT,
        disable_suppresses_automatic_collections_body,
    );
}

/// `ZONAL_GC_DISABLE=1` turns automatic collections off for good.
fn disabled_by_option_body() {
    gc::set_threshold(MIB);
    assert!(!gc::is_enabled());
    garbage(32 * MIB);
    assert_eq!(zonal::stats().gc.collections, 0);
    gc::collect();
    assert_eq!(zonal::stats().gc.collections, 1);
}

#[test]
fn disabled_by_option() {
    isolated(
        "disabled_by_option",
        &[("ZONAL_GC_DISABLE", "1")],
        TIMEOUT,
        disabled_by_option_body,
    );
}

/// Fills a block with the pattern of `seed`.
fn fill(block: NonNull<[u8]>, seed: u64) {
    let words = block.len() / 8;
    let p = block.cast::<u64>().as_ptr();
    for i in 0..words {
        // SAFETY: the block holds `words` words.
        unsafe { p.add(i).write(word(seed, i)) };
    }
}

fn deallocate_on_the_allocating_thread_body() {
    gc::set_threshold(1 << 30); // no automatic collection in this test
    for (size, zone) in [
        (24, "GcZone"),
        (1000, "GcZone"),
        (40_000, "GcAtomicZone"),
        (300_000, "GcZone"),
        (3 * MIB, "GcAtomicZone"),
    ] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        let before = gc_zone();
        let block = if zone == "GcZone" {
            GcZone.allocate(layout)
        } else {
            GcAtomicZone.allocate(layout)
        }
        .unwrap();
        fill(block, size as u64);
        let allocated = gc_zone();
        assert_eq!(allocated.allocations, before.allocations + 1);
        assert_eq!(allocated.live_blocks, before.live_blocks + 1);
        assert!(allocated.live_bytes >= before.live_bytes + size as u64);
        // SAFETY: allocated above with `layout`, given up here.
        unsafe {
            if zone == "GcZone" {
                GcZone.deallocate(block.cast(), layout)
            } else {
                GcAtomicZone.deallocate(block.cast(), layout)
            }
        };
        let freed = gc_zone();
        assert_eq!(freed.frees, allocated.frees + 1, "{zone} {size}: not freed");
        assert_eq!(freed.live_blocks, before.live_blocks, "{zone} {size}");
        assert_eq!(freed.live_bytes, before.live_bytes, "{zone} {size}");
    }
    // Freed blocks are reused: allocate, free, allocate again.
    let layout = Layout::from_size_align(200, 8).unwrap();
    let first: Vec<NonNull<[u8]>> = (0..2000)
        .map(|_| GcZone.allocate(layout).unwrap())
        .collect();
    let addresses: std::collections::HashSet<usize> = first
        .iter()
        .map(|b| b.cast::<u8>().as_ptr() as usize)
        .collect();
    for b in first {
        // SAFETY: allocated above with `layout`.
        unsafe { GcZone.deallocate(b.cast(), layout) };
    }
    let second: Vec<NonNull<[u8]>> = (0..2000)
        .map(|_| GcZone.allocate(layout).unwrap())
        .collect();
    let reused = second
        .iter()
        .filter(|b| addresses.contains(&(b.cast::<u8>().as_ptr() as usize)))
        .count();
    assert!(
        reused >= 1500,
        "only {reused} of 2000 explicitly freed blocks were reused"
    );
    for b in second {
        // SAFETY: allocated above with `layout`.
        unsafe { GcZone.deallocate(b.cast(), layout) };
    }
}

#[test]
fn deallocate_on_the_allocating_thread() {
    isolated(
        "deallocate_on_the_allocating_thread",
        &[],
        TIMEOUT,
        deallocate_on_the_allocating_thread_body,
    );
}

/// Blocks of the main thread, their addresses in a `malloc` buffer made
/// an explicit root (so they stay reachable until the root is removed, and
/// no other copy of their addresses is left around).
#[inline(never)]
fn rooted_blocks(buffer: *mut usize, count: usize, layout: Layout) {
    for i in 0..count {
        let block = GcZone.allocate(layout).unwrap();
        fill(block, i as u64);
        // SAFETY: the buffer holds `count` words.
        unsafe { buffer.add(i).write(block.cast::<u8>().as_ptr() as usize) };
    }
}

fn deallocate_on_another_thread_body() {
    gc::set_threshold(1 << 30);
    const COUNT: usize = 512;
    let layout = Layout::from_size_align(1000, 8).unwrap();
    // SAFETY: plain malloc, freed at the end.
    let buffer = unsafe { libc::malloc(COUNT * 8) }.cast::<usize>();
    assert!(!buffer.is_null());
    // SAFETY: the buffer stays allocated until after `remove_root`.
    unsafe { gc::add_root(buffer.cast(), COUNT * 8) }.unwrap();
    rooted_blocks(buffer, COUNT, layout);
    clobber_stack(4);
    gc::collect();
    let before = zonal::stats();
    let addresses = buffer as usize;
    std::thread::spawn(move || {
        for i in 0..COUNT {
            // SAFETY: the buffer holds `COUNT` addresses of live blocks
            // allocated with `layout`; each is given up once, here.
            unsafe {
                let p = (addresses as *const usize).add(i).read() as *mut u8;
                GcZone.deallocate(NonNull::new(p).unwrap(), layout);
            }
        }
    })
    .join()
    .unwrap();
    // Another thread's explicit free leaves the block to the collector.
    let after_free = zonal::stats();
    assert_eq!(
        after_free.zone(Zone::Gc).live_blocks,
        before.zone(Zone::Gc).live_blocks,
        "blocks freed at once by a thread that does not own their page"
    );
    assert!(gc::remove_root(buffer.cast()));
    clobber_stack(4);
    gc::collect();
    let after = zonal::stats();
    let freed_blocks = before.zone(Zone::Gc).live_blocks - after.zone(Zone::Gc).live_blocks;
    let freed_bytes = after.gc.bytes_freed - before.gc.bytes_freed;
    assert!(
        freed_blocks as usize >= COUNT * 3 / 4 && freed_bytes >= freed_blocks * 1000,
        "the collection reclaimed {freed_blocks} blocks ({freed_bytes} bytes) of {COUNT}"
    );
    // SAFETY: allocated above, no longer a root.
    unsafe { libc::free(buffer.cast()) };
}

#[test]
fn deallocate_on_another_thread() {
    isolated(
        "deallocate_on_another_thread",
        &[],
        TIMEOUT,
        deallocate_on_another_thread_body,
    );
}
