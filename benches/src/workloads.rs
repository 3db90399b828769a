//! The workloads, in the spirit of mimalloc-bench. Each runs in a child
//! process whose global allocator is the one under test, allocates through
//! `std::alloc` (directly, or through `Vec`), touches what it allocates and
//! frees everything before returning a checksum of bytes read back.
//!
//! Every request sequence comes from a fixed-seed [`Rng`], so all allocators
//! see the same requests. `scale` multiplies the amount of work (the number
//! of operations), never the shape: working sets and size distributions are
//! the same at every scale.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::collections::VecDeque;
use std::hint::black_box;
use std::ptr::NonNull;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use crate::rng::Rng;

/// A named workload.
pub struct Workload {
    /// Name used on the command line and in tables.
    pub name: &'static str,
    /// One-line description.
    pub about: &'static str,
    /// Runs the workload at `scale`, returning a checksum.
    pub run: fn(f64) -> u64,
}

/// Every workload, in table order.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "churn-pairs",
        about: "(a) 1 thread: alloc+free pairs, random sizes 16 B-1 KiB",
        run: churn_pairs,
    },
    Workload {
        name: "churn-batch-1k",
        about: "(a) 1 thread: alloc 1,000 blocks of 16 B-1 KiB, free them in order, repeat",
        run: |s| churn_batch(1_000, 20_000_000, s),
    },
    Workload {
        name: "churn-batch-100k",
        about: "(a) 1 thread: alloc 100,000 blocks of 16 B-1 KiB, free them in order, repeat",
        run: |s| churn_batch(100_000, 5_000_000, s),
    },
    Workload {
        name: "mixed",
        about: "(b) 1 thread: 4,000-slot working set, replace random slots, sizes 16 B-1 MiB skewed small",
        run: mixed,
    },
    Workload {
        name: "vec-growth",
        about: "(c) 1 thread: grow 4 Vec<u64> at a time by push (realloc) to 1-2M elements, keep 4 more alive",
        run: vec_growth,
    },
    Workload {
        name: "prod-cons",
        about: "(d) 2 threads: producer allocates 16 B-1 KiB blocks, consumer frees them, batches of 1,000",
        run: prod_cons,
    },
    Workload {
        name: "larson-2",
        about: "(e) 2 threads: larson server churn, 5,000 slots each, 1/8 of frees handed to another thread",
        run: |s| larson(2, s),
    },
    Workload {
        name: "larson-8",
        about: "(e) 8 threads: larson server churn, as larson-2 with 8 threads (same total work)",
        run: |s| larson(8, s),
    },
];

/// `base` operations at `scale`, at least one.
fn scaled(base: usize, scale: f64) -> usize {
    ((base as f64 * scale) as usize).max(1)
}

/// The alignment of every block (that of `u64`-sized fields).
const ALIGN: usize = 8;
/// Touch stride: one write per page.
const PAGE: usize = 4096;

/// A block from the global allocator, touched on allocation and freed on
/// drop.
pub struct Block {
    ptr: NonNull<u8>,
    size: usize,
}

// SAFETY: a `Block` owns its memory exclusively; any thread may read or
// free it.
unsafe impl Send for Block {}

impl Block {
    /// Allocates `size` (> 0) bytes and writes `tag` to the first and last
    /// byte and one byte in every page between.
    #[inline]
    pub fn new(size: usize, tag: u8) -> Block {
        debug_assert!(size > 0);
        // SAFETY: ALIGN is a power of two and sizes are far below isize::MAX.
        let layout = unsafe { Layout::from_size_align_unchecked(size, ALIGN) };
        // SAFETY: `layout` has a non-zero size.
        let p = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(p) else {
            handle_alloc_error(layout)
        };
        // SAFETY: the block is `size` bytes long and ours.
        unsafe {
            let mut off = 0;
            while off < size {
                p.add(off).write(tag);
                off += PAGE;
            }
            p.add(size - 1).write(tag);
        }
        // The writes cannot be elided: the pointer escapes.
        black_box(p);
        Block { ptr, size }
    }

    /// The first byte (the tag written at allocation).
    #[inline]
    pub fn first(&self) -> u8 {
        // SAFETY: the block is live and at least one byte long.
        unsafe { self.ptr.as_ptr().read() }
    }
}

impl Drop for Block {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout.
        unsafe {
            dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.size, ALIGN),
            )
        }
    }
}

/// A small size: uniform in 16 B..=1 KiB.
#[inline]
fn small_size(rng: &mut Rng) -> usize {
    rng.range(16, 1024)
}

/// (a) alloc+free pairs.
fn churn_pairs(scale: f64) -> u64 {
    let n = scaled(20_000_000, scale);
    let mut rng = Rng::new(1);
    let mut sum = 0u64;
    for i in 0..n {
        let b = Block::new(small_size(&mut rng), i as u8);
        sum += u64::from(b.first());
    }
    sum
}

/// (a) batches: allocate `batch` blocks, free them in allocation order;
/// `total` allocations in all at scale 1.
fn churn_batch(batch: usize, total: usize, scale: f64) -> u64 {
    let rounds = scaled(total, scale).div_ceil(batch);
    let mut rng = Rng::new(2);
    let mut held: Vec<Block> = Vec::with_capacity(batch);
    let mut sum = 0u64;
    for r in 0..rounds {
        for _ in 0..batch {
            held.push(Block::new(small_size(&mut rng), r as u8));
        }
        for b in held.drain(..) {
            sum += u64::from(b.first());
        }
    }
    sum
}

/// A size skewed toward small: 80% 16-256 B, 15% up to 8 KiB, 4% up to
/// 64 KiB, 1% up to 1 MiB.
#[inline]
fn mixed_size(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..80 => rng.range(16, 256),
        80..95 => rng.range(257, 8 << 10),
        95..99 => rng.range((8 << 10) + 1, 64 << 10),
        _ => rng.range((64 << 10) + 1, 1 << 20),
    }
}

/// (b) mixed sizes over a working set of 4,000 live blocks (~30 MiB).
fn mixed(scale: f64) -> u64 {
    const SLOTS: usize = 4_000;
    let steps = scaled(2_000_000, scale);
    let mut rng = Rng::new(3);
    let mut slots: Vec<Block> = (0..SLOTS)
        .map(|i| Block::new(mixed_size(&mut rng), i as u8))
        .collect();
    let mut sum = 0u64;
    for i in 0..steps {
        let k = rng.below(SLOTS);
        let new = Block::new(mixed_size(&mut rng), i as u8);
        sum += u64::from(std::mem::replace(&mut slots[k], new).first());
    }
    sum + slots.iter().map(|b| u64::from(b.first())).sum::<u64>()
}

/// A final `Vec<u64>` length: 70% up to 1,000, 25% up to 100,000, 5% up to
/// 2,000,000 (16 MiB).
fn vec_len(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..70 => rng.range(1, 1_000),
        70..95 => rng.range(1_001, 100_000),
        _ => rng.range(100_001, 2_000_000),
    }
}

/// (c) `Vec` growth by `realloc`: four vectors grow together from empty by
/// `push`, then join a queue of the four previous ones (the oldest is
/// dropped), so growth happens among other live blocks.
fn vec_growth(scale: f64) -> u64 {
    const GROUP: usize = 4;
    let groups = scaled(1_000, scale);
    let mut rng = Rng::new(4);
    let mut kept: VecDeque<Vec<u64>> = VecDeque::with_capacity(GROUP + 1);
    let mut sum = 0u64;
    for g in 0..groups as u64 {
        let lens: [usize; GROUP] = std::array::from_fn(|_| vec_len(&mut rng));
        let mut vs: [Vec<u64>; GROUP] = Default::default();
        let longest = lens.iter().copied().max().unwrap_or(0);
        for i in 0..longest {
            for (v, &len) in vs.iter_mut().zip(&lens) {
                if i < len {
                    v.push(i as u64 ^ g);
                }
            }
        }
        for v in vs {
            sum = sum.wrapping_add(black_box(&v)[v.len() / 2]);
            if kept.len() == GROUP {
                kept.pop_front();
            }
            kept.push_back(v);
        }
    }
    sum
}

/// (d) producer/consumer: one thread allocates, the other frees.
fn prod_cons(scale: f64) -> u64 {
    const BATCH: usize = 1_000;
    let total = scaled(10_000_000, scale);
    let (tx, rx) = sync_channel::<Vec<Block>>(16);
    let producer = thread::spawn(move || {
        let mut rng = Rng::new(5);
        let mut left = total;
        while left > 0 {
            let k = left.min(BATCH);
            let mut batch = Vec::with_capacity(k);
            for i in 0..k {
                batch.push(Block::new(small_size(&mut rng), i as u8));
            }
            tx.send(batch).expect("consumer alive");
            left -= k;
        }
    });
    let mut sum = 0u64;
    for batch in rx {
        sum += batch.iter().map(|b| u64::from(b.first())).sum::<u64>();
        // The batch and its blocks are freed here, on the consumer thread.
    }
    producer.join().expect("producer");
    sum
}

/// Blocks handed to a larson thread for it to free.
struct Inboxes(Vec<Mutex<Vec<Block>>>);

/// One larson thread's state, handed from generation to generation.
struct Larson {
    id: usize,
    threads: usize,
    slots: Vec<Block>,
    rng: Rng,
    outbox: Vec<Block>,
    spare: Vec<Block>,
    inboxes: Arc<Inboxes>,
    ops_per_gen: usize,
    gens_left: usize,
    sum: u64,
}

/// What a larson generation thread returns: its successor, or the end.
enum Step {
    Next(JoinHandle<Step>),
    Done(u64),
}

const LARSON_SLOTS: usize = 5_000;
const LARSON_GENS: usize = 4;
/// One freed block in this many is handed to the next thread instead.
const LARSON_HANDOFF: usize = 8;
const LARSON_OUTBOX: usize = 256;
/// Ops between drains of the thread's inbox.
const LARSON_DRAIN: usize = 1_024;

impl Larson {
    /// Runs one generation, then starts the next on a fresh thread (as
    /// larson does), or frees everything after the last.
    fn run(mut self) -> Step {
        for op in 0..self.ops_per_gen {
            let k = self.rng.below(LARSON_SLOTS);
            let new = Block::new(small_size(&mut self.rng), op as u8);
            let old = std::mem::replace(&mut self.slots[k], new);
            self.sum += u64::from(old.first());
            if self.rng.below(LARSON_HANDOFF) == 0 {
                self.outbox.push(old);
                if self.outbox.len() == LARSON_OUTBOX {
                    self.flush_outbox();
                }
            } else {
                drop(old);
            }
            if op % LARSON_DRAIN == LARSON_DRAIN - 1 {
                self.drain_inbox();
            }
        }
        self.gens_left -= 1;
        if self.gens_left > 0 {
            Step::Next(thread::spawn(move || self.run()))
        } else {
            self.flush_outbox();
            self.drain_inbox();
            Step::Done(self.sum)
        }
    }

    fn flush_outbox(&mut self) {
        let to = (self.id + 1) % self.threads;
        self.inboxes.0[to]
            .lock()
            .expect("inbox")
            .append(&mut self.outbox);
    }

    fn drain_inbox(&mut self) {
        std::mem::swap(
            &mut *self.inboxes.0[self.id].lock().expect("inbox"),
            &mut self.spare,
        );
        self.sum += self.spare.iter().map(|b| u64::from(b.first())).sum::<u64>();
        self.spare.clear();
    }
}

/// (e) larson-style server churn with `threads` threads and the same total
/// work for any thread count.
fn larson(threads: usize, scale: f64) -> u64 {
    let ops = scaled(10_000_000, scale) / threads;
    let inboxes = Arc::new(Inboxes(
        (0..threads).map(|_| Mutex::new(Vec::new())).collect(),
    ));
    let handles: Vec<JoinHandle<Step>> = (0..threads)
        .map(|id| {
            let inboxes = Arc::clone(&inboxes);
            thread::spawn(move || {
                let mut rng = Rng::new(100 + id as u64);
                let slots = (0..LARSON_SLOTS)
                    .map(|i| Block::new(small_size(&mut rng), i as u8))
                    .collect();
                Larson {
                    id,
                    threads,
                    slots,
                    rng,
                    outbox: Vec::with_capacity(LARSON_OUTBOX),
                    spare: Vec::new(),
                    inboxes,
                    ops_per_gen: ops.div_ceil(LARSON_GENS),
                    gens_left: LARSON_GENS,
                    sum: 0,
                }
                .run()
            })
        })
        .collect();
    let mut sum = 0u64;
    for mut h in handles {
        loop {
            match h.join().expect("larson thread") {
                Step::Next(next) => h = next,
                Step::Done(s) => {
                    sum += s;
                    break;
                }
            }
        }
    }
    // Blocks handed over after their receiver finished.
    for inbox in &inboxes.0 {
        let blocks = std::mem::take(&mut *inbox.lock().expect("inbox"));
        sum += blocks.iter().map(|b| u64::from(b.first())).sum::<u64>();
    }
    sum
}

/// `n` malloc+free pairs of 32 bytes after a warm-up of 1,000, for
/// instruction counts (`pairs` mode).
pub fn pairs(n: usize) {
    // SAFETY: 32 and 8 form a valid layout.
    let layout = unsafe { Layout::from_size_align_unchecked(32, 8) };
    for _ in 0..n + 1_000 {
        // SAFETY: non-zero size; freed at once with the same layout.
        unsafe {
            let p = black_box(alloc(layout));
            if p.is_null() {
                handle_alloc_error(layout);
            }
            dealloc(p, layout);
        }
    }
}

/// The loop of [`pairs`] without the allocator calls, to measure the loop's
/// own instructions (`pairs none` mode).
pub fn empty_pairs(n: usize) {
    let mut dummy = [0u8; 32];
    for _ in 0..n + 1_000 {
        let p = black_box(dummy.as_mut_ptr());
        if p.is_null() {
            std::process::abort();
        }
    }
}
