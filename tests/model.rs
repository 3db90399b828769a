//! Model-based test: random sequences of alloc / alloc_zeroed / realloc /
//! dealloc (and the `Allocator` trait's grow / shrink) driven by a
//! deterministic RNG, checked against a reference model of live ranges.
//!
//! The model (a `BTreeMap` of live ranges) itself allocates through zonal;
//! that is fine: its nodes are simply not in the model.

#[global_allocator]
static A: zonal::Zonal = zonal::Zonal;

mod common;

use allocator_api2::alloc::Allocator;
use common::Rng;
use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::ptr::NonNull;
use zonal::{ManualZone, Zonal};

#[derive(Clone, Copy, Debug)]
struct Block {
    size: usize,
    align: usize,
    /// The pattern the block holds (all of it).
    seed: u64,
}

#[derive(Default)]
struct Model {
    live: BTreeMap<usize, Block>,
    bytes: usize,
}

impl Model {
    fn check_free(&self, addr: usize, size: usize, what: &str) {
        if let Some((&a, b)) = self.live.range(..=addr).next_back() {
            assert!(
                a + b.size <= addr,
                "{what}: {addr:#x}+{size} overlaps live {a:#x}+{}",
                b.size
            );
        }
        if let Some((&a, b)) = self.live.range(addr..).next() {
            assert!(
                addr + size <= a,
                "{what}: {addr:#x}+{size} overlaps live {a:#x}+{}",
                b.size
            );
        }
    }

    fn insert(&mut self, addr: usize, block: Block, what: &str) {
        assert!(addr != 0, "{what}: null for {block:?}");
        assert_eq!(
            addr % block.align,
            0,
            "{what}: {addr:#x} not aligned to {}",
            block.align
        );
        self.check_free(addr, block.size, what);
        self.bytes += block.size;
        self.live.insert(addr, block);
    }

    fn remove(&mut self, addr: usize) -> Block {
        let b = self.live.remove(&addr).expect("block in model");
        self.bytes -= b.size;
        b
    }

    /// The n-th live block (n < len).
    fn nth(&self, n: usize) -> (usize, Block) {
        let (&a, &b) = self.live.iter().nth(n).unwrap();
        (a, b)
    }
}

fn bytes<'a>(addr: usize, len: usize) -> &'a mut [u8] {
    // SAFETY: callers pass a live block of at least `len` bytes.
    unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len) }
}

fn random_size(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=59 => rng.range(1, 256),
        60..=84 => rng.range(257, 8192),
        85..=95 => rng.log_size(8193, 1 << 20),
        96..=98 => rng.range((1 << 20) - 64, (1 << 20) + 64),
        _ => rng.log_size((1 << 20) + 1, 6 << 20),
    }
}

fn random_align(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=69 => 1 << rng.below(5),
        70..=94 => 1 << rng.range(5, 12),
        95..=98 => 1 << rng.range(13, 17),
        _ => 1 << rng.range(18, 23),
    }
}

/// Runs one random sequence. Returns the number of operations done.
fn run_sequence(seed: u64, ops: usize) -> usize {
    let mut rng = Rng::new(seed);
    let mut model = Model::default();
    let mut next_seed = seed << 20;
    let mut fresh_seed = || {
        next_seed += 1;
        next_seed
    };
    let budget = 96 << 20; // live bytes
    for op in 0..ops {
        let what = format!("seed {seed} op {op}");
        let choice = rng.below(100);
        let must_free = model.bytes > budget || model.live.len() > 400;
        if model.live.is_empty() || (!must_free && choice < 40) {
            // alloc or alloc_zeroed
            let size = random_size(&mut rng);
            let align = random_align(&mut rng);
            let l = Layout::from_size_align(size, align).unwrap();
            let zeroed = rng.chance(1, 3);
            // SAFETY: non-zero size.
            let p = unsafe {
                if zeroed {
                    Zonal.alloc_zeroed(l)
                } else {
                    Zonal.alloc(l)
                }
            } as usize;
            let block = Block {
                size,
                align,
                seed: fresh_seed(),
            };
            model.insert(p, block, &what);
            if zeroed {
                assert!(
                    common::is_zero(bytes(p, size)),
                    "{what}: alloc_zeroed({size}, {align}) not zero"
                );
            }
            common::fill(bytes(p, size), block.seed);
        } else if !must_free && choice < 65 {
            // realloc (GlobalAlloc: same alignment)
            let (p, old) = model.nth(rng.below(model.live.len() as u64) as usize);
            assert!(
                common::check(bytes(p, old.size), old.seed),
                "{what}: block {p:#x} {old:?} corrupted"
            );
            let new_size = if rng.chance(1, 2) {
                random_size(&mut rng)
            } else {
                (old.size / 2).max(1)
            };
            model.remove(p);
            // SAFETY: a live block with its layout.
            let q = unsafe {
                Zonal.realloc(
                    p as *mut u8,
                    Layout::from_size_align(old.size, old.align).unwrap(),
                    new_size,
                )
            } as usize;
            let block = Block {
                size: new_size,
                align: old.align,
                seed: fresh_seed(),
            };
            model.insert(q, block, &what);
            let kept = old.size.min(new_size);
            assert!(
                common::check_prefix(bytes(q, kept), old.seed, old.size),
                "{what}: realloc {p:#x}->{q:#x} {}->{new_size} (align {}) lost data",
                old.size,
                old.align
            );
            common::fill(bytes(q, new_size), block.seed);
        } else if !must_free && choice < 75 {
            // grow / grow_zeroed / shrink through the Allocator trait, with
            // a possibly different alignment
            let (p, old) = model.nth(rng.below(model.live.len() as u64) as usize);
            assert!(
                common::check(bytes(p, old.size), old.seed),
                "{what}: block {p:#x} {old:?} corrupted"
            );
            let new_size = random_size(&mut rng);
            let new_align = if rng.chance(1, 2) {
                old.align
            } else {
                random_align(&mut rng)
            };
            let ol = Layout::from_size_align(old.size, old.align).unwrap();
            let nl = Layout::from_size_align(new_size, new_align).unwrap();
            let ptr = NonNull::new(p as *mut u8).unwrap();
            model.remove(p);
            let zero_tail = new_size > old.size && rng.chance(1, 2);
            // SAFETY: a live block of ManualZone's zone with its layout;
            // grow gets a larger size, shrink a smaller one.
            let r = unsafe {
                if new_size >= old.size {
                    if zero_tail {
                        ManualZone.grow_zeroed(ptr, ol, nl)
                    } else {
                        ManualZone.grow(ptr, ol, nl)
                    }
                } else {
                    ManualZone.shrink(ptr, ol, nl)
                }
            }
            .unwrap_or_else(|_| panic!("{what}: resize {ol:?} -> {nl:?} failed"));
            assert!(r.len() >= new_size);
            let q = r.cast::<u8>().as_ptr() as usize;
            let block = Block {
                size: new_size,
                align: new_align,
                seed: fresh_seed(),
            };
            model.insert(q, block, &what);
            let kept = old.size.min(new_size);
            assert!(
                common::check_prefix(bytes(q, kept), old.seed, old.size),
                "{what}: resize {p:#x}->{q:#x} {ol:?} -> {nl:?} lost data"
            );
            if zero_tail {
                assert!(
                    common::is_zero(&bytes(q, new_size)[old.size..]),
                    "{what}: grow_zeroed tail not zero"
                );
            }
            common::fill(bytes(q, new_size), block.seed);
        } else {
            // dealloc, through either handle, after checking contents
            let (p, b) = model.nth(rng.below(model.live.len() as u64) as usize);
            assert!(
                common::check(bytes(p, b.size), b.seed),
                "{what}: block {p:#x} {b:?} corrupted before free"
            );
            model.remove(p);
            let l = Layout::from_size_align(b.size, b.align).unwrap();
            // SAFETY: a live block with its layout.
            unsafe {
                if rng.chance(1, 4) {
                    ManualZone.deallocate(NonNull::new(p as *mut u8).unwrap(), l);
                } else {
                    Zonal.dealloc(p as *mut u8, l);
                }
            }
        }
    }
    // Everything still live must be intact; then free it.
    for (&p, b) in &model.live {
        assert!(
            common::check(bytes(p, b.size), b.seed),
            "seed {seed} end: block {p:#x} {b:?} corrupted"
        );
        // SAFETY: a live block with its layout.
        unsafe {
            Zonal.dealloc(
                p as *mut u8,
                Layout::from_size_align(b.size, b.align).unwrap(),
            )
        };
    }
    ops
}

#[test]
fn random_sequences_many_seeds() {
    let mut total = 0;
    for seed in 1..=80u64 {
        total += run_sequence(seed, 1_000);
    }
    assert_eq!(total, 80 * 1_000);
}

#[test]
fn long_random_sequences() {
    for seed in 1_000..1_002u64 {
        run_sequence(seed, 20_000);
    }
}

/// The same model, several sequences at once on different threads.
#[test]
fn random_sequences_in_parallel() {
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                (0..6u64)
                    .map(|s| run_sequence(10_000 + t * 100 + s, 1_000))
                    .sum::<usize>()
            })
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(total, 4 * 6 * 1_000);
}

/// The pattern helpers the tests rely on do notice damage.
#[test]
fn pattern_helpers_detect_corruption() {
    for len in [
        1usize,
        7,
        8,
        9,
        15,
        16,
        17,
        100,
        4096,
        (1 << 20) + 3,
        3 << 20,
    ] {
        let mut v = vec![0u8; len];
        common::fill(&mut v, 42);
        assert!(common::check(&v, 42), "len {len}");
        assert!(
            len < 2 || !common::check(&v, 43),
            "len {len}: other seed accepted"
        );
        for pos in [0, len / 2, len - 1] {
            v[pos] ^= 0x10;
            assert!(!common::check(&v, 42), "len {len}: flip at {pos} missed");
            assert!(
                !common::check_prefix(&v[..=pos], 42, len),
                "len {len}: prefix flip at {pos} missed"
            );
            v[pos] ^= 0x10;
        }
        for cut in [1, len / 3, len] {
            assert!(
                common::check_prefix(&v[..cut.max(1)], 42, len),
                "len {len}: prefix {cut}"
            );
        }
        // A copy shifted by 16 bytes is not the same pattern.
        if len >= 48 {
            let mut shifted = vec![0u8; len];
            shifted[16..].copy_from_slice(&v[..len - 16]);
            shifted[..8].copy_from_slice(&v[..8]);
            assert!(
                !common::check_prefix(&shifted[..len - 8], 42, len),
                "len {len}: shift missed"
            );
        }
    }
    assert!(common::is_zero(&[0u8; 100_000]));
    let mut z = vec![0u8; 100_000];
    z[99_999] = 1;
    assert!(!common::is_zero(&z));
}
