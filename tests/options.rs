//! The environment options take effect: `ZONAL_SEGMENT_CACHE` (empty
//! segments kept for reuse instead of unmapped) and `ZONAL_PURGE_DELAY_MS`
//! (how long free pages stay committed). Each case runs in a child process
//! started with the option set.

#[global_allocator]
static A: zonal::Zonal = zonal::Zonal;

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::time::Duration;
use zonal::Zonal;

const MIB: u64 = 1 << 20;
const SCENARIO_VAR: &str = "ZONAL_OPTIONS_SCENARIO";

/// Allocates `count` blocks of `size` bytes, touching each.
fn alloc_many(count: usize, size: usize) -> Vec<usize> {
    let l = Layout::from_size_align(size, 16).unwrap();
    (0..count)
        .map(|_| {
            // SAFETY: non-zero size.
            let p = unsafe { Zonal.alloc(l) };
            assert!(!p.is_null());
            // SAFETY: inside the block.
            unsafe { p.write_bytes(0x11, size) };
            p as usize
        })
        .collect()
}

fn free_all(blocks: &[usize], size: usize) {
    let l = Layout::from_size_align(size, 16).unwrap();
    for &p in blocks {
        // SAFETY: live blocks with this layout.
        unsafe { Zonal.dealloc(p as *mut u8, l) };
    }
}

fn scenario(name: &str) {
    // Warm up, so that the harness's own segments exist before measuring.
    let warm = alloc_many(100, 300);
    free_all(&warm, 300);
    match name {
        // 40 huge blocks of 2 MiB: one segment-sized mapping each.
        "segment_cache" => {
            let want: u64 = std::env::var("EXPECT_CACHED").unwrap().parse().unwrap();
            let before = zonal::stats().os_reserved_bytes;
            let blocks = alloc_many(40, 2 << 20);
            let mid = zonal::stats().os_reserved_bytes;
            assert!(
                mid >= before + 40 * 600_000,
                "40 large blocks reserved only {} MiB",
                (mid - before) / MIB
            );
            free_all(&blocks, 2 << 20);
            let after = zonal::stats().os_reserved_bytes;
            let kept = after.saturating_sub(before);
            println!("reserved before {before}, with blocks {mid}, after free {after}");
            if want == 0 {
                assert!(
                    kept < 8 * MIB,
                    "ZONAL_SEGMENT_CACHE=0 kept {} MiB reserved",
                    kept / MIB
                );
            } else {
                assert!(
                    kept >= (want - 2) * 4 * MIB,
                    "ZONAL_SEGMENT_CACHE={want} kept only {} MiB of empty segments",
                    kept / MIB
                );
                assert!(
                    kept <= (want + 2) * 4 * MIB,
                    "ZONAL_SEGMENT_CACHE={want} kept {} MiB of empty segments",
                    kept / MIB
                );
            }
        }
        // Small blocks over ~50 pages of one segment; one survivor keeps
        // the segment alive, so the free pages can only be purged.
        "purge_delay" => {
            let delay: u64 = std::env::var("ZONAL_PURGE_DELAY_MS")
                .unwrap()
                .parse()
                .unwrap();
            let before = zonal::stats().os_committed_bytes;
            let blocks = alloc_many(3_000, 1024);
            let mid = zonal::stats().os_committed_bytes;
            assert!(
                mid >= before + 3 * MIB - MIB / 2,
                "3 MiB of small blocks committed only {}",
                mid - before
            );
            free_all(&blocks[1..], 1024);
            // A slow path or two (purging happens on slow paths).
            let other = alloc_many(200, 5000);
            free_all(&other, 5000);
            let after = zonal::stats().os_committed_bytes;
            println!("committed before {before}, with blocks {mid}, after free {after}");
            if delay == 0 {
                assert!(
                    after <= before + 3 * MIB / 2,
                    "ZONAL_PURGE_DELAY_MS=0: {} KiB still committed after the frees",
                    (after - before) / 1024
                );
            } else {
                assert!(
                    after >= before + 2 * MIB,
                    "ZONAL_PURGE_DELAY_MS={delay}: only {} KiB still committed right after the frees",
                    (after.saturating_sub(before)) / 1024
                );
            }
            free_all(&blocks[..1], 1024);
        }
        other => panic!("unknown scenario {other}"),
    }
}

#[test]
fn child_entry() {
    if let Ok(name) = std::env::var(SCENARIO_VAR) {
        scenario(&name);
    }
}

fn run(name: &str, env: &[(&str, &str)]) {
    let mut all = vec![(SCENARIO_VAR, name)];
    all.extend_from_slice(env);
    let out = common::run_child("child_entry", &all, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} {env:?} failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}

#[test]
fn segment_cache_zero_unmaps_empty_segments() {
    run(
        "segment_cache",
        &[("ZONAL_SEGMENT_CACHE", "0"), ("EXPECT_CACHED", "0")],
    );
}

#[test]
fn segment_cache_keeps_that_many_empty_segments() {
    run(
        "segment_cache",
        &[("ZONAL_SEGMENT_CACHE", "20"), ("EXPECT_CACHED", "20")],
    );
}

#[test]
fn purge_delay_zero_decommits_at_once() {
    run("purge_delay", &[("ZONAL_PURGE_DELAY_MS", "0")]);
}

#[test]
fn long_purge_delay_keeps_free_pages_committed() {
    run("purge_delay", &[("ZONAL_PURGE_DELAY_MS", "600000")]);
}
