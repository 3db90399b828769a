//! Memory goes back to the OS: after a burst of at least 512 MiB is freed,
//! resident memory falls back near its previous level within a second,
//! without any background thread.
//!
//! Each scenario runs in a child process (this binary re-run with
//! `ZONAL_RSS_SCENARIO` set), so that other tests do not disturb RSS and
//! each starts from a fresh allocator.

#[global_allocator]
static A: zonal::Zonal = zonal::Zonal;

mod common;

use common::Rng;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use zonal::Zonal;

const MIB: usize = 1 << 20;
const SCENARIO_VAR: &str = "ZONAL_RSS_SCENARIO";

struct Block {
    addr: usize,
    size: usize,
}

/// Allocates the burst: many 64 KiB and 256 KiB blocks plus small ones,
/// every page touched. Returns the blocks in a shuffled order.
fn burst(total: usize, rng: &mut Rng) -> Vec<Block> {
    let mut blocks = Vec::with_capacity(total / (64 << 10) + 200_000);
    let mut bytes = 0;
    let page = common::page_size();
    while bytes < total {
        let size = match rng.below(10) {
            0..=4 => 64 << 10,
            5..=8 => 256 << 10,
            _ => rng.range(100_000, 1 << 20),
        };
        blocks.push(alloc_touched(size, page));
        bytes += size;
        for _ in 0..8 {
            let small = rng.range(16, 1024);
            blocks.push(alloc_touched(small, page));
            bytes += small;
        }
    }
    // Shuffle (Fisher-Yates) so frees come in no particular order.
    for i in (1..blocks.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        blocks.swap(i, j);
    }
    blocks
}

fn alloc_touched(size: usize, page: usize) -> Block {
    // SAFETY: non-zero size.
    let p = unsafe { Zonal.alloc(Layout::from_size_align(size, 16).unwrap()) };
    assert!(!p.is_null());
    let mut off = 0;
    while off < size {
        // SAFETY: inside the block.
        unsafe { p.add(off).write_volatile(1) };
        off += page;
    }
    // SAFETY: inside the block.
    unsafe { p.add(size - 1).write_volatile(1) };
    Block {
        addr: p as usize,
        size,
    }
}

fn free_all(blocks: Vec<Block>) {
    for b in blocks {
        // SAFETY: live blocks with their layouts.
        unsafe {
            Zonal.dealloc(
                b.addr as *mut u8,
                Layout::from_size_align(b.size, 16).unwrap(),
            )
        };
    }
}

/// Polls RSS for up to a second; returns the first value within `limit`,
/// or the last one seen. `activity` runs between polls.
fn wait_for_rss(limit: usize, mut activity: impl FnMut()) -> (usize, Duration) {
    let start = Instant::now();
    loop {
        let rss = common::rss_bytes();
        if rss <= limit || start.elapsed() > Duration::from_secs(1) {
            return (rss, start.elapsed());
        }
        activity();
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn report(what: &str, baseline: usize, peak: usize, after: usize, took: Duration) {
    println!(
        "{what}: baseline {} MiB, peak {} MiB, after free {} MiB ({took:?})\n{}",
        baseline / MIB,
        peak / MIB,
        after / MIB,
        zonal::stats()
    );
}

/// Threads of this process (zonal must not start any of its own).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}

fn scenario(name: &str) {
    let threads_at_start = thread_count();
    let mut rng = Rng::new(2024);
    // Warm up the allocator and the pattern of the process.
    free_all(burst(8 * MIB, &mut rng));
    let baseline = common::rss_bytes();
    match name {
        "single_thread_idle" => {
            let blocks = burst(512 * MIB, &mut rng);
            let peak = common::rss_bytes();
            assert!(
                peak >= baseline + 400 * MIB,
                "the burst did not become resident: {peak} vs {baseline}"
            );
            free_all(blocks);
            // No activity at all after the frees.
            let (after, took) = wait_for_rss(baseline + 64 * MIB, || {});
            report(name, baseline, peak, after, took);
            assert!(
                after <= baseline + 64 * MIB,
                "RSS {} MiB one second after freeing a burst (baseline {} MiB, peak {} MiB)",
                after / MIB,
                baseline / MIB,
                peak / MIB
            );
        }
        "single_thread_light_activity" => {
            // Some blocks survive the burst, scattered over its pages.
            let mut blocks = burst(512 * MIB, &mut rng);
            let survivors: Vec<Block> = (0..blocks.len())
                .step_by(997)
                .map(|_| blocks.pop().unwrap())
                .collect();
            let peak = common::rss_bytes();
            assert!(peak >= baseline + 400 * MIB);
            free_all(blocks);
            let mut keep = Vec::new();
            let (after, took) = wait_for_rss(baseline + 64 * MIB, || {
                // A program that carries on with ordinary small allocations.
                keep.push(vec![0u8; 200]);
                keep.push(vec![0u8; 70_000]);
                if keep.len() > 20 {
                    keep.clear();
                }
            });
            report(name, baseline, peak, after, took);
            let survivor_bytes: usize = survivors.iter().map(|b| b.size).sum();
            assert!(
                after <= baseline + 64 * MIB + survivor_bytes,
                "RSS {} MiB one second after freeing a burst (baseline {} MiB, survivors {} MiB)",
                after / MIB,
                baseline / MIB,
                survivor_bytes / MIB
            );
            free_all(survivors);
        }
        "freed_by_other_thread" => {
            // The burst is allocated by one thread and freed by another,
            // while the allocating thread stays alive but idle.
            let (tx, rx) = std::sync::mpsc::channel::<Vec<Block>>();
            let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
            let allocator = std::thread::spawn(move || {
                let mut rng = Rng::new(7);
                tx.send(burst(512 * MIB, &mut rng)).unwrap();
                // Stay alive (and idle) until the main thread is done.
                done_rx.recv().unwrap();
            });
            let blocks = rx.recv().unwrap();
            let peak = common::rss_bytes();
            assert!(peak >= baseline + 400 * MIB);
            free_all(blocks);
            let mut keep = Vec::new();
            let (after, took) = wait_for_rss(baseline + 64 * MIB, || {
                keep.push(vec![1u8; 5000]);
                if keep.len() > 50 {
                    keep.clear();
                }
            });
            report(name, baseline, peak, after, took);
            done_tx.send(()).unwrap();
            allocator.join().unwrap();
            assert!(
                after <= baseline + 64 * MIB,
                "RSS {} MiB one second after another thread freed a burst (baseline {} MiB, peak {} MiB)",
                after / MIB,
                baseline / MIB,
                peak / MIB
            );
        }
        "thread_exits_after_burst" => {
            // A thread allocates and frees a burst and exits.
            std::thread::spawn(|| {
                let mut rng = Rng::new(9);
                let blocks = burst(512 * MIB, &mut rng);
                free_all(blocks);
            })
            .join()
            .unwrap();
            let (after, took) = wait_for_rss(baseline + 64 * MIB, || {});
            report(name, baseline, 0, after, took);
            assert!(
                after <= baseline + 64 * MIB,
                "RSS {} MiB after a thread's burst",
                after / MIB
            );
        }
        other => panic!("unknown scenario {other}"),
    }
    assert_eq!(
        thread_count(),
        threads_at_start,
        "zonal started a thread of its own"
    );
}

#[test]
fn child_entry() {
    if let Ok(name) = std::env::var(SCENARIO_VAR) {
        scenario(&name);
    }
}

fn run(name: &str) {
    let out = common::run_child(
        "child_entry",
        &[(SCENARIO_VAR, name)],
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scenario {name} failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "scenario {name} did not run:\n{stdout}"
    );
}

/// The scenarios run one at a time (each child needs 512 MiB and more).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run_alone(name: &str) {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    run(name);
}

#[test]
fn rss_falls_after_burst_freed_idle() {
    run_alone("single_thread_idle");
}

#[test]
fn rss_falls_after_burst_freed_with_survivors() {
    run_alone("single_thread_light_activity");
}

#[test]
fn rss_falls_after_burst_freed_by_other_thread() {
    run_alone("freed_by_other_thread");
}

#[test]
fn rss_falls_after_thread_with_burst_exits() {
    run_alone("thread_exits_after_burst");
}
