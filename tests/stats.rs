//! Statistics: counters move by exactly what the test allocates and frees,
//! peaks, reserved/committed memory, the `Display` table, and
//! `ZONAL_SHOW_STATS=1`.
//!
//! The counting tests hold a lock so that no other test of this binary
//! allocates meanwhile; the test harness's own threads are idle while a
//! test runs, so the expected deltas are exact up to a small slack.

#[global_allocator]
static A: zonal::Zonal = zonal::Zonal;

mod common;

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use std::alloc::GlobalAlloc;
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use zonal::{ManualZone, Zonal, Zone, ZoneStats};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Let the harness finish with the previous test (it frees that test's
    // result and thread) before counting.
    std::thread::sleep(Duration::from_millis(20));
    guard
}

fn manual() -> ZoneStats {
    *zonal::stats().zone(Zone::Manual)
}

/// Blocks the test harness might allocate or free meanwhile.
const SLACK: u64 = 8;

fn assert_delta(what: &str, before: u64, after: u64, expected: i64, slack: u64) {
    let delta = after as i64 - before as i64;
    assert!(
        (delta - expected).unsigned_abs() <= slack,
        "{what}: changed by {delta}, expected {expected} (± {slack})"
    );
}

#[test]
fn counters_follow_manual_zone_allocations() {
    let _s = serial();
    const N: usize = 1000;
    const SIZE: usize = 1000;
    let l = Layout::from_size_align(SIZE, 8).unwrap();
    let mut blocks: Vec<NonNull<u8>> = Vec::with_capacity(N);
    let before = manual();
    for _ in 0..N {
        blocks.push(ManualZone.allocate(l).unwrap().cast());
    }
    let mid = manual();
    assert_delta(
        "allocations",
        before.allocations,
        mid.allocations,
        N as i64,
        SLACK,
    );
    assert_delta("frees", before.frees, mid.frees, 0, SLACK);
    assert_delta(
        "live_blocks",
        before.live_blocks,
        mid.live_blocks,
        N as i64,
        SLACK,
    );
    assert_delta(
        "live_bytes",
        before.live_bytes,
        mid.live_bytes,
        (N * block_size(blocks[0].as_ptr())) as i64,
        SLACK * 4096,
    );
    assert!(
        mid.peak_bytes >= mid.live_bytes,
        "peak {} < live {}",
        mid.peak_bytes,
        mid.live_bytes
    );
    assert!(
        mid.committed_bytes >= (N * SIZE) as u64,
        "committed {} < live",
        mid.committed_bytes
    );
    assert!(mid.reserved_bytes >= mid.committed_bytes);
    for b in blocks.drain(..) {
        // SAFETY: allocated above with `l`.
        unsafe { ManualZone.deallocate(b, l) };
    }
    let after = manual();
    assert_delta("allocations", mid.allocations, after.allocations, 0, SLACK);
    assert_delta("frees", mid.frees, after.frees, N as i64, SLACK);
    assert_delta(
        "live_blocks (back to before)",
        before.live_blocks,
        after.live_blocks,
        0,
        SLACK,
    );
    assert_delta(
        "live_bytes (back to before)",
        before.live_bytes,
        after.live_bytes,
        0,
        SLACK * 4096,
    );
    // Zero-size allocations are not blocks.
    let z = Layout::from_size_align(0, 64).unwrap();
    let p = ManualZone.allocate(z).unwrap();
    // SAFETY: zero-size block of this allocator.
    unsafe { ManualZone.deallocate(p.cast(), z) };
    let zs = manual();
    assert_delta(
        "allocations after a zero-size allocation",
        after.allocations,
        zs.allocations,
        0,
        SLACK,
    );
}

/// The size of the block at `p` (its size class).
fn block_size(p: *mut u8) -> usize {
    zonal::inspect(p).expect("a live zonal block").size
}

#[test]
fn counters_follow_global_alloc_and_realloc() {
    let _s = serial();
    let l = Layout::from_size_align(1000, 16).unwrap();
    let before = manual();
    // SAFETY: valid layouts; each block is freed once.
    unsafe {
        let p = Zonal.alloc(l);
        let s1 = manual();
        // Blocks count as their block size (their size class).
        assert_eq!(block_size(p), 1024);
        assert_delta("allocations", before.allocations, s1.allocations, 1, SLACK);
        assert_delta("live_bytes", before.live_bytes, s1.live_bytes, 1024, 512);
        // A small growth fits in place (1000 is in the 1024-byte class):
        // no new allocation, and the block did not change.
        let q = Zonal.realloc(p, l, 1020);
        let s2 = manual();
        assert_delta(
            "allocations (in-place realloc)",
            s1.allocations,
            s2.allocations,
            0,
            SLACK,
        );
        assert_delta(
            "live_bytes (in-place realloc)",
            s1.live_bytes,
            s2.live_bytes,
            0,
            512,
        );
        assert_delta(
            "live_blocks (realloc)",
            s1.live_blocks,
            s2.live_blocks,
            0,
            SLACK,
        );
        // A large growth moves: one allocation, one free.
        let r = Zonal.realloc(q, Layout::from_size_align(1020, 16).unwrap(), 50_000);
        let s3 = manual();
        let moved_block = block_size(r);
        assert!(moved_block >= 50_000, "a block of {moved_block} bytes");
        assert_delta(
            "allocations (moving realloc)",
            s2.allocations,
            s3.allocations,
            1,
            SLACK,
        );
        assert_delta("frees (moving realloc)", s2.frees, s3.frees, 1, SLACK);
        assert_delta(
            "live_bytes (moving realloc)",
            s2.live_bytes,
            s3.live_bytes,
            moved_block as i64 - 1024,
            512,
        );
        assert_delta(
            "live_blocks (moving realloc)",
            s2.live_blocks,
            s3.live_blocks,
            0,
            SLACK,
        );
        Zonal.dealloc(r, Layout::from_size_align(50_000, 16).unwrap());
        let s4 = manual();
        assert_delta(
            "live_blocks (end)",
            before.live_blocks,
            s4.live_blocks,
            0,
            SLACK,
        );
        assert_delta("live_bytes (end)", before.live_bytes, s4.live_bytes, 0, 512);
        assert_delta("frees (end)", before.frees, s4.frees, 2, SLACK);
    }
}

#[test]
fn huge_blocks_move_reserved_committed_and_peak() {
    let _s = serial();
    const SIZE: usize = 64 << 20;
    let l = Layout::from_size_align(SIZE, 16).unwrap();
    let before = zonal::stats();
    let b = *before.zone(Zone::Manual);
    // SAFETY: valid layout; freed once.
    unsafe {
        let p = Zonal.alloc(l);
        assert!(!p.is_null());
        let mid = zonal::stats();
        let m = *mid.zone(Zone::Manual);
        assert_delta(
            "live_bytes (huge)",
            b.live_bytes,
            m.live_bytes,
            SIZE as i64,
            1 << 20,
        );
        assert!(
            m.reserved_bytes >= b.reserved_bytes + SIZE as u64,
            "reserved {} -> {}",
            b.reserved_bytes,
            m.reserved_bytes
        );
        assert!(
            m.committed_bytes >= b.committed_bytes + SIZE as u64,
            "committed {} -> {}",
            b.committed_bytes,
            m.committed_bytes
        );
        assert!(mid.os_reserved_bytes >= before.os_reserved_bytes + SIZE as u64);
        assert!(mid.os_committed_bytes >= before.os_committed_bytes + SIZE as u64);
        assert!(m.peak_bytes >= m.live_bytes && m.peak_bytes >= SIZE as u64);
        Zonal.dealloc(p, l);
    }
    let after = zonal::stats();
    let a = *after.zone(Zone::Manual);
    assert_delta(
        "live_bytes (huge freed)",
        b.live_bytes,
        a.live_bytes,
        0,
        1 << 20,
    );
    assert!(
        a.peak_bytes >= SIZE as u64,
        "peak {} forgot the 64 MiB block",
        a.peak_bytes
    );
    assert!(
        a.reserved_bytes <= b.reserved_bytes + (8 << 20),
        "reserved {} -> {} after the huge block was freed",
        b.reserved_bytes,
        a.reserved_bytes
    );
    assert!(a.committed_bytes <= b.committed_bytes + (8 << 20));
    assert!(after.os_reserved_bytes <= before.os_reserved_bytes + (8 << 20));
}

#[test]
fn frees_by_other_threads_are_counted() {
    let _s = serial();
    let before = manual();
    // Blocks allocated here, freed by a thread that allocates nothing.
    let v: Vec<Box<[u8; 64]>> = (0..5_000).map(|_| Box::new([1u8; 64])).collect();
    let mid = manual();
    assert_delta(
        "live_blocks",
        before.live_blocks,
        mid.live_blocks,
        5_001,
        SLACK,
    );
    std::thread::spawn(move || drop(v)).join().unwrap();
    let after = manual();
    assert_delta("frees", mid.frees, after.frees, 5_001, SLACK * 2);
    assert_delta(
        "live_blocks",
        before.live_blocks,
        after.live_blocks,
        0,
        SLACK * 2,
    );
    // Blocks allocated by a thread that exits, freed here.
    let v: Vec<Box<[u8; 64]>> =
        std::thread::spawn(|| (0..5_000).map(|_| Box::new([2u8; 64])).collect())
            .join()
            .unwrap();
    let mid = manual();
    assert_delta(
        "allocations by an exited thread",
        after.allocations,
        mid.allocations,
        5_001,
        SLACK * 4,
    );
    drop(v);
    let end = manual();
    assert_delta(
        "live_blocks (end)",
        before.live_blocks,
        end.live_blocks,
        0,
        SLACK * 4,
    );
}

/// A free into the pages of a thread that is still running counts when
/// that thread collects it, together with its own allocations: the totals
/// never hold a free whose allocation is not counted yet (they would show
/// fewer live blocks than there are, or wrap below zero).
#[test]
fn frees_never_count_before_their_allocations() {
    let _s = serial();
    let before = manual();
    let (blocks_tx, blocks_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    // The owner allocates (its pages count the allocations and reach its
    // counters only on their slow paths), hands the blocks over and waits.
    let owner = std::thread::spawn(move || {
        let v: Vec<Box<[u8; 64]>> = (0..5_000).map(|_| Box::new([3u8; 64])).collect();
        blocks_tx.send(v).unwrap();
        done_rx.recv().unwrap();
    });
    let v = blocks_rx.recv().unwrap();
    std::thread::spawn(move || drop(v)).join().unwrap();
    let mid = manual();
    let allocated = mid.allocations - before.allocations;
    let freed = mid.frees - before.frees;
    assert!(
        freed <= allocated + SLACK,
        "{freed} frees counted but only {allocated} allocations"
    );
    assert!(
        mid.live_blocks + SLACK >= before.live_blocks,
        "live blocks fell from {} to {} while the blocks were freed",
        before.live_blocks,
        mid.live_blocks
    );
    // Once the owner has gone, everything is counted.
    done_tx.send(()).unwrap();
    owner.join().unwrap();
    let end = manual();
    assert_delta(
        "allocations",
        before.allocations,
        end.allocations,
        5_001,
        SLACK * 4,
    );
    assert_delta("frees", before.frees, end.frees, 5_001, SLACK * 4);
    assert_delta(
        "live_blocks (end)",
        before.live_blocks,
        end.live_blocks,
        0,
        SLACK * 4,
    );
}

#[test]
fn display_names_every_zone() {
    let _s = serial();
    let v = vec![0u8; 123_456];
    let s = zonal::stats();
    let table = s.to_string();
    drop(v);
    for word in [
        "zone",
        "live",
        "peak",
        "committed",
        "reserved",
        "allocs",
        "frees",
        "gc",
        "manual",
        "pinned",
        "stack",
        "os",
    ] {
        assert!(
            table.contains(word),
            "statistics table lacks {word:?}:\n{table}"
        );
    }
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines.len() >= 6, "header, four zones, os:\n{table}");
    let manual_line = lines
        .iter()
        .find(|l| l.starts_with("manual"))
        .expect("manual row");
    assert!(
        manual_line.contains(&s.zone(Zone::Manual).allocations.to_string()),
        "manual row lacks its allocation count:\n{table}"
    );
    // Zone names as printed.
    assert_eq!(Zone::Gc.name(), "gc");
    assert_eq!(Zone::Manual.to_string(), "manual");
    assert_eq!(format!("{:>8}", Zone::Stack), "   stack");
}

#[test]
fn show_stats_env_prints_table_at_exit() {
    let _s = serial();
    // The child exits normally through libtest; the table goes to stderr.
    let out = common::run_child(
        "child_allocates",
        &[("ZONAL_SHOW_STATS", "1")],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed: {:?}\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains("zonal statistics:"),
        "no statistics at exit:\n{stderr}"
    );
    let table = &stderr[stderr.find("zonal statistics:").unwrap()..];
    for word in ["gc", "manual", "pinned", "stack", "os", "allocs"] {
        assert!(table.contains(word), "exit table lacks {word:?}:\n{table}");
    }
    // And not without the variable.
    let out = common::run_child(
        "child_allocates",
        &[("ZONAL_SHOW_STATS", "0")],
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("zonal statistics"),
        "statistics printed with ZONAL_SHOW_STATS=0:\n{stderr}"
    );
}

/// The child side of `show_stats_env_prints_table_at_exit` (harmless when
/// run on its own).
#[test]
fn child_allocates() {
    let _s = serial();
    let v: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    assert_eq!(v.len(), 1000);
}
