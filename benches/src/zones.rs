//! The pinned and stack zones and `inspect`, side by side with their peers,
//! in one process, interleaved, medians of several runs, as ratios:
//!
//! * `pinned-pairs`, `pinned-batch`: `PinnedZone` against `ManualZone`
//!   (the same page machinery; the goal is at most 1.1x);
//! * `stack-small`: a frame of 1,000 small allocations (16–64 bytes)
//!   through `&StackFrame` against the same through `&bumpalo::Bump` (both
//!   as allocator-api2 `Allocator`s, memory reused: frame end vs `reset`);
//! * `inspect`: `zonal::inspect` of interior pointers of live blocks,
//!   against reading one word through each pointer (a floor: the loop's
//!   own cost).
//!
//! ```text
//! zonal-benches zones [--reps N] [--scale F]
//! zonal-benches zones-ir VARIANT N      one variant's loop, for callgrind
//! ```
//!
//! `zones-ir` variants: `pinned`, `manual` (N alloc+free pairs of 32
//! bytes), `stack`, `bump` (N small allocations, a frame or reset every
//! 1,000), `inspect`, `none` (N iterations of the pointer walk alone).

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use std::hint::black_box;
use std::time::Instant;
use zonal::{ManualZone, PinnedZone};

/// A manual-zone box (zonal memory whatever the global allocator is).
type ZoneBox<T> = allocator_api2::boxed::Box<T, ManualZone>;

const BATCH: usize = 1000;

/// Sizes of the small allocations (cycled).
const SMALL: [usize; 4] = [16, 24, 48, 64];

fn pairs<A: Allocator>(a: &A, n: usize) -> u64 {
    let layout = Layout::from_size_align(32, 8).unwrap();
    let mut sum = 0u64;
    for _ in 0..n {
        let p = a.allocate(layout).unwrap().cast::<u8>();
        sum = sum.wrapping_add(black_box(p.as_ptr() as u64) & 0xff);
        // SAFETY: allocated just above with this layout.
        unsafe { a.deallocate(p, layout) };
    }
    sum
}

fn batch<A: Allocator>(a: &A, rounds: usize) -> u64 {
    let mut blocks = Vec::with_capacity(BATCH);
    let mut sum = 0u64;
    for _ in 0..rounds {
        for i in 0..BATCH {
            let layout = Layout::from_size_align(SMALL[i % 4], 8).unwrap();
            let p = a.allocate(layout).unwrap().cast::<u8>();
            // SAFETY: the block holds at least 16 bytes.
            unsafe { p.as_ptr().write(i as u8) };
            blocks.push((p, layout));
        }
        for (p, layout) in blocks.drain(..) {
            // SAFETY: written above.
            sum = sum.wrapping_add(u64::from(unsafe { p.as_ptr().read() }));
            // SAFETY: allocated above with this layout.
            unsafe { a.deallocate(p, layout) };
        }
    }
    sum
}

/// `count` small allocations in one frame (or arena round), each written.
#[inline(always)]
fn small_allocations<A: Allocator>(a: A, count: usize) -> u64 {
    let mut sum = 0u64;
    for i in 0..count {
        let layout = Layout::from_size_align(SMALL[i % 4], 8).unwrap();
        let p = a.allocate(layout).unwrap().cast::<u8>();
        // SAFETY: the block holds at least 16 bytes.
        unsafe { p.as_ptr().write(i as u8) };
        sum = sum.wrapping_add(p.as_ptr() as u64 & 0xff);
    }
    sum
}

fn stack_rounds(rounds: usize) -> u64 {
    let mut sum = 0;
    for _ in 0..rounds {
        sum += zonal::stack::frame(|f| small_allocations(f, BATCH));
    }
    sum
}

fn bump_rounds(rounds: usize) -> u64 {
    let mut bump = bumpalo::Bump::new();
    let mut sum = 0;
    for _ in 0..rounds {
        sum += small_allocations(&bump, BATCH);
        bump.reset();
    }
    sum
}

/// Live blocks and interior pointers into them, for the `inspect` loop.
fn inspect_targets() -> (Vec<ZoneBox<[u8; 200]>>, Vec<usize>) {
    let blocks: Vec<ZoneBox<[u8; 200]>> = (0..4096)
        .map(|_| ZoneBox::new_in([1u8; 200], ManualZone))
        .collect();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let addrs = (0..4096)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            blocks[i].as_ptr() as usize + (x % 200) as usize
        })
        .collect();
    (blocks, addrs)
}

fn inspect_loop(addrs: &[usize], n: usize) -> u64 {
    let mut sum = 0u64;
    for i in 0..n {
        let a = zonal::inspect(black_box(addrs[i % addrs.len()]) as *const u8).unwrap();
        sum = sum.wrapping_add(a.base as u64 ^ a.size as u64);
    }
    sum
}

fn read_loop(addrs: &[usize], n: usize) -> u64 {
    let mut sum = 0u64;
    for i in 0..n {
        // SAFETY: the addresses point into live blocks (`inspect_targets`).
        sum = sum.wrapping_add(u64::from(unsafe {
            *(black_box(addrs[i % addrs.len()]) as *const u8)
        }));
    }
    sum
}

fn time(f: impl FnOnce() -> u64) -> (f64, u64) {
    let start = Instant::now();
    let checksum = black_box(f());
    (start.elapsed().as_secs_f64() * 1e9, checksum)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// `zonal-benches zones [--reps N] [--scale F]`.
pub fn main(args: &[String]) -> Result<(), String> {
    let mut reps = 7usize;
    let mut scale = 1.0f64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--reps" => reps = it.next().and_then(|v| v.parse().ok()).ok_or("--reps N")?,
            "--scale" => scale = it.next().and_then(|v| v.parse().ok()).ok_or("--scale F")?,
            other => return Err(format!("zones: unknown argument {other}")),
        }
    }
    let n = |base: f64| ((base * scale) as usize).max(1);
    let (pairs_n, batch_n, frames_n, inspect_n) = (n(2e6), n(2e3), n(5e3), n(4e6));
    let (_blocks, addrs) = inspect_targets();
    type Case<'a> = (&'a str, Box<dyn Fn() -> u64 + 'a>);
    let rows: Vec<(&str, Case, Case, f64)> = vec![
        (
            "pinned-pairs",
            ("PinnedZone", Box::new(|| pairs(&PinnedZone, pairs_n))),
            ("ManualZone", Box::new(|| pairs(&ManualZone, pairs_n))),
            pairs_n as f64,
        ),
        (
            "pinned-batch",
            ("PinnedZone", Box::new(|| batch(&PinnedZone, batch_n))),
            ("ManualZone", Box::new(|| batch(&ManualZone, batch_n))),
            (batch_n * BATCH) as f64,
        ),
        (
            "stack-small",
            ("StackFrame", Box::new(|| stack_rounds(frames_n))),
            ("bumpalo", Box::new(|| bump_rounds(frames_n))),
            (frames_n * BATCH) as f64,
        ),
        (
            "inspect",
            ("inspect", Box::new(|| inspect_loop(&addrs, inspect_n))),
            ("read-only floor", Box::new(|| read_loop(&addrs, inspect_n))),
            inspect_n as f64,
        ),
    ];
    println!("## Pinned and stack zones, inspect (zonal-benches zones)\n");
    println!(
        "- {reps} runs each, interleaved, in one process; medians; scale {scale}; {}; load {}",
        crate::driver::cpu_model(),
        crate::driver::loadavg()
    );
    println!("\n| workload | zonal | peer | zonal ns/op | peer ns/op | zonal / peer | spread zonal | spread peer |");
    println!("|---|---|---|---:|---:|---:|---:|---:|");
    for (name, (zname, zonal_case), (pname, peer_case), ops) in &rows {
        // Warm-up (pages, chunks, arena), then interleaved runs.
        zonal_case();
        peer_case();
        let (mut z, mut p) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            z.push(time(zonal_case).0 / ops);
            p.push(time(peer_case).0 / ops);
        }
        let spread = |xs: &[f64]| {
            let lo = xs.iter().copied().fold(f64::MAX, f64::min);
            let hi = xs.iter().copied().fold(0.0, f64::max);
            format!("{:.0}%", (hi / lo - 1.0) * 100.0)
        };
        let (zm, pm) = (median(z.clone()), median(p.clone()));
        println!(
            "| {name} | {zname} | {pname} | {zm:.2} | {pm:.2} | {:.2} | {} | {} |",
            zm / pm,
            spread(&z),
            spread(&p)
        );
    }
    Ok(())
}

/// `zonal-benches zones-ir VARIANT N`: one loop, for instruction counts.
pub fn instructions(args: &[String]) -> Result<(), String> {
    let variant = args.first().ok_or("zones-ir VARIANT N")?;
    let n: usize = args
        .get(1)
        .and_then(|v| v.parse().ok())
        .ok_or("zones-ir VARIANT N")?;
    let (_blocks, addrs) = inspect_targets();
    // Warm-up outside the counted difference (it is the same for every N).
    let warm = 10 * BATCH;
    let sum = match variant.as_str() {
        "pinned" => pairs(&PinnedZone, warm) + pairs(&PinnedZone, n),
        "manual" => pairs(&ManualZone, warm) + pairs(&ManualZone, n),
        "stack" => stack_rounds(10) + stack_rounds(n / BATCH),
        "bump" => bump_rounds(10) + bump_rounds(n / BATCH),
        "inspect" => inspect_loop(&addrs, warm) + inspect_loop(&addrs, n),
        "none" => read_loop(&addrs, warm) + read_loop(&addrs, n),
        other => return Err(format!("zones-ir: unknown variant {other}")),
    };
    println!("{}", black_box(sum));
    Ok(())
}
