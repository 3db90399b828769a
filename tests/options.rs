//! The environment options take effect: `ZONAL_SEGMENT_CACHE` (empty
//! segments kept for reuse instead of unmapped), `ZONAL_PURGE_DELAY_MS`
//! (how long free pages stay committed, and that adjacent ones go back in
//! one call) and `ZONAL_RETAIN_MIB` /
//! `ZONAL_RETAIN_MAX_MIB` (the retention budget and how far it grows when
//! a working set is freed and allocated again); and a growing huge block
//! reuses a committed mapping. Each case runs in a child process started
//! with the option set.

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
        // As above, but the free pages wait out a short purge delay: they
        // are adjacent, and go back to the OS in a call per run of them,
        // not one per 64 KiB page (a page at a time would also split every
        // transparent huge page they cover).
        "purge_runs" => {
            let blocks = alloc_many(3_000, 1024);
            free_all(&blocks[1..], 1024);
            let before = zonal::stats();
            std::thread::sleep(Duration::from_millis(300));
            // A page for another size class: the pool purges expired pages
            // when it hands one out.
            let other = alloc_many(1, 5000);
            let after = zonal::stats();
            let calls = after.os_decommits - before.os_decommits;
            let freed = before
                .os_committed_bytes
                .saturating_sub(after.os_committed_bytes);
            println!("{calls} decommit calls gave back {} KiB", freed / 1024);
            assert!(
                freed >= 2 * MIB,
                "only {} KiB decommitted after the purge delay",
                freed / 1024
            );
            assert!(
                calls <= 3,
                "{calls} decommit calls for {} KiB of adjacent free pages",
                freed / 1024
            );
            free_all(&other, 5000);
            free_all(&blocks[..1], 1024);
        }
        // A 64 MiB working set of small blocks, freed and allocated again:
        // the first free decommits what exceeds the 32 MiB base budget, and
        // allocating it again right away teaches the budget to keep it.
        "retention" => {
            let max: u64 = std::env::var("ZONAL_RETAIN_MAX_MIB")
                .unwrap()
                .parse()
                .unwrap();
            let before = zonal::stats().os_committed_bytes;
            let mut kept_after_free = Vec::new();
            for _ in 0..4 {
                let blocks = alloc_many(64 * 1024, 1024);
                free_all(&blocks, 1024);
                kept_after_free.push(zonal::stats().os_committed_bytes.saturating_sub(before));
            }
            println!("committed after each free, beyond the start: {kept_after_free:?}");
            assert!(
                kept_after_free[0] <= 40 * MIB,
                "the first free kept {} MiB committed (base budget 32 MiB)",
                kept_after_free[0] / MIB
            );
            let last = kept_after_free[3];
            if max > 32 {
                assert!(
                    last >= 56 * MIB,
                    "after four rounds only {} MiB of the 64 MiB working set stayed committed",
                    last / MIB
                );
            } else {
                assert!(
                    last <= 40 * MIB,
                    "ZONAL_RETAIN_MAX_MIB={max}: {} MiB stayed committed",
                    last / MIB
                );
            }
        }
        // `release_free_memory` gives back a freed huge block's mapping,
        // which the budget keeps committed; then a 64 MiB working set that
        // the budget has learnt to keep (as above), after which the budget
        // starts again from its base.
        "release" => {
            let before = zonal::stats().os_committed_bytes;
            let huge = alloc_many(1, 12 << 20);
            free_all(&huge, 12 << 20);
            let kept = zonal::stats().os_committed_bytes.saturating_sub(before);
            assert!(
                kept >= 12 * MIB,
                "the freed 12 MiB block's mapping was not kept ({} MiB)",
                kept / MIB
            );
            zonal::release_free_memory();
            let after = zonal::stats().os_committed_bytes.saturating_sub(before);
            assert!(
                after <= MIB,
                "{} MiB of the huge block's mapping still committed after release_free_memory",
                after / MIB
            );
            for _ in 0..4 {
                let blocks = alloc_many(64 * 1024, 1024);
                free_all(&blocks, 1024);
            }
            let kept = zonal::stats().os_committed_bytes.saturating_sub(before);
            let released = zonal::release_free_memory() as u64;
            let after = zonal::stats().os_committed_bytes.saturating_sub(before);
            println!(
                "kept {} MiB, released {} MiB, {} MiB left",
                kept / MIB,
                released / MIB,
                after / MIB
            );
            assert!(
                kept >= 56 * MIB,
                "the budget did not learn: only {} MiB kept",
                kept / MIB
            );
            assert!(
                after <= 4 * MIB,
                "{} MiB still committed after release_free_memory",
                after / MIB
            );
            assert!(
                released + MIB >= kept - after && released <= kept - after + MIB,
                "release_free_memory reported {} MiB, but {} MiB went back",
                released / MIB,
                (kept - after) / MIB
            );
            let blocks = alloc_many(64 * 1024, 1024);
            free_all(&blocks, 1024);
            let relearning = zonal::stats().os_committed_bytes.saturating_sub(before);
            assert!(
                relearning <= 40 * MIB,
                "after release the first free kept {} MiB (base budget 32 MiB)",
                relearning / MIB
            );
        }
        // A huge block grows while a freed mapping that fits is still
        // committed: realloc moves the block into it (copying) instead of
        // growing its own mapping into fresh pages.
        "huge_growth" => {
            let big = Layout::from_size_align(12 << 20, 16).unwrap();
            // SAFETY: non-zero size.
            let cached = unsafe { Zonal.alloc(big) };
            assert!(!cached.is_null());
            // SAFETY: inside the block.
            unsafe { cached.write_bytes(1, 12 << 20) };
            // SAFETY: live block with this layout; its mapping is cached.
            unsafe { Zonal.dealloc(cached, big) };
            let small = Layout::from_size_align(3 << 20, 16).unwrap();
            // SAFETY: non-zero size.
            let p = unsafe { Zonal.alloc(small) };
            assert!(!p.is_null());
            // SAFETY: inside the block.
            unsafe { p.write_bytes(7, 3 << 20) };
            // SAFETY: live block with this layout.
            let grown = unsafe { Zonal.realloc(p, small, 10 << 20) };
            assert_eq!(
                grown, cached,
                "growing did not reuse the committed mapping of the freed 12 MiB block"
            );
            // SAFETY: the first 3 MiB were copied.
            let copied = unsafe { std::slice::from_raw_parts(grown, 3 << 20) };
            assert!(copied.iter().all(|&b| b == 7), "contents lost in the move");
            // SAFETY: live block with the layout it was grown to.
            unsafe { Zonal.dealloc(grown, Layout::from_size_align(10 << 20, 16).unwrap()) };
        }
        // Empty segments go to the cache with their committed pages. One
        // taken back for another page kind keeps them (translated to the
        // new page layout) instead of faulting them in again, and what it
        // cannot keep whole reads as zero.
        "relayout" => {
            // Large blocks (one page per segment), all touched, then freed:
            // their segments wait in the cache, committed.
            // 8 large pages: all but the last two (which the heap keeps in
            // its ring of emptied large pages) go to the segment cache.
            let large = alloc_many(24, 900 << 10);
            free_all(&large, 900 << 10);
            // Medium blocks (512 KiB pages) reuse those segments.
            let faults_before = minor_faults();
            let medium = Layout::from_size_align(48 << 10, 16).unwrap();
            let blocks: Vec<*mut u8> = (0..150)
                .map(|_| {
                    // SAFETY: non-zero size.
                    let p = unsafe { Zonal.alloc_zeroed(medium) };
                    assert!(!p.is_null());
                    // SAFETY: the block is ours.
                    let bytes = unsafe { std::slice::from_raw_parts_mut(p, 48 << 10) };
                    assert!(
                        bytes.iter().all(|&b| b == 0),
                        "alloc_zeroed gave dirty memory"
                    );
                    bytes.fill(0x22);
                    p
                })
                .collect();
            let faults = minor_faults() - faults_before;
            println!("faults while reusing 7 MiB of cached large segments as medium: {faults}");
            // Measured: about 1900 faults; about 3500 when the segments are
            // decommitted before their reuse (the check then reads each
            // fresh page and the fill writes it: two faults per page). The
            // large blocks never touched their pages' last 900 KiB nor the
            // ends of their 1 MiB blocks, which account for about 600 of
            // the 1900; the rest is not explained yet.
            assert!(
                faults < 2700,
                "{faults} page faults: the cached segments' committed memory was not reused"
            );
            for p in blocks {
                // SAFETY: live blocks with this layout.
                unsafe { Zonal.dealloc(p, medium) };
            }
            // Now small pages, partly used, become a large page: the dirty
            // small pages cover only part of it, and must read as zero.
            let small = alloc_many(4096, 1000);
            free_all(&small, 1000);
            let big = Layout::from_size_align(900 << 10, 16).unwrap();
            for _ in 0..8 {
                // SAFETY: non-zero size.
                let p = unsafe { Zonal.alloc_zeroed(big) };
                assert!(!p.is_null());
                // SAFETY: the block is ours.
                let bytes = unsafe { std::slice::from_raw_parts(p, 900 << 10) };
                assert!(
                    bytes.iter().all(|&b| b == 0),
                    "alloc_zeroed gave dirty memory"
                );
                // SAFETY: live block with this layout.
                unsafe { Zonal.dealloc(p, big) };
            }
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
fn a_cached_segment_reused_for_another_page_kind_keeps_its_memory() {
    // 4 KiB pages, so that the fault count measures what was reused, and
    // a budget that keeps all the cached segments committed.
    run(
        "relayout",
        &[("ZONAL_HUGE_OS_PAGES", "0"), ("ZONAL_RETAIN_MIB", "128")],
    );
}

/// Minor page faults of this process so far.
fn minor_faults() -> i64 {
    // SAFETY: getrusage writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    usage.ru_minflt
}

/// No retention budget: freed segment-sized huge mappings would otherwise
/// stay committed in the huge cache (within the budget) instead of going
/// to the segment cache this measures.
const NO_RETENTION: [(&str, &str); 2] = [("ZONAL_RETAIN_MIB", "0"), ("ZONAL_RETAIN_MAX_MIB", "0")];

#[test]
fn segment_cache_zero_unmaps_empty_segments() {
    run(
        "segment_cache",
        &[
            ("ZONAL_SEGMENT_CACHE", "0"),
            ("EXPECT_CACHED", "0"),
            NO_RETENTION[0],
            NO_RETENTION[1],
        ],
    );
}

#[test]
fn segment_cache_keeps_that_many_empty_segments() {
    run(
        "segment_cache",
        &[
            ("ZONAL_SEGMENT_CACHE", "20"),
            ("EXPECT_CACHED", "20"),
            NO_RETENTION[0],
            NO_RETENTION[1],
        ],
    );
}

#[test]
fn retention_budget_grows_when_a_working_set_comes_back() {
    run("retention", &[("ZONAL_RETAIN_MAX_MIB", "256")]);
}

#[test]
fn retention_budget_stays_at_its_base_when_told_to() {
    run("retention", &[("ZONAL_RETAIN_MAX_MIB", "32")]);
}

#[test]
fn release_free_memory_gives_back_what_the_budget_kept() {
    run("release", &[]);
}

#[test]
fn a_growing_huge_block_moves_into_a_committed_mapping() {
    run("huge_growth", &[]);
}

#[test]
fn purge_delay_zero_decommits_at_once() {
    run("purge_delay", &[("ZONAL_PURGE_DELAY_MS", "0")]);
}

#[test]
fn adjacent_free_pages_are_decommitted_in_one_call() {
    run("purge_runs", &[("ZONAL_PURGE_DELAY_MS", "100")]);
}

#[test]
fn long_purge_delay_keeps_free_pages_committed() {
    run("purge_delay", &[("ZONAL_PURGE_DELAY_MS", "600000")]);
}
