//! Misuse of the allocator must abort (SIGABRT) after exactly one line on
//! stderr naming the fault and the address.
//!
//! Every scenario runs in a child process: the parent re-runs this binary
//! with `ZONAL_FAULT_SCENARIO` set and `--exact child_entry`; the child
//! prints `ADDR=<hex>` (the address it is about to misuse) on stdout, then
//! commits the misuse, and prints `SURVIVED` if the faulty call returned.
//!
//! Each scenario runs twice: with `ZONAL_DEFER_FREES=0`, the abort must
//! come inside the faulty call (no `SURVIVED`); by default, frees of small
//! blocks are queued and carried out 64 at a time, so a faulty `dealloc`
//! may return and the abort comes when the queue is carried out (here, at
//! the latest when the child exits). `reported_within_the_queue` checks
//! that bound.

#[global_allocator]
static A: zonal::Zonal = zonal::Zonal;

mod common;

use allocator_api2::alloc::Allocator;
use std::alloc::{GlobalAlloc, Layout};
use std::io::Write;
use std::ptr::NonNull;
use std::time::Duration;
use zonal::{ManualZone, Zonal};

const SCENARIO_VAR: &str = "ZONAL_FAULT_SCENARIO";

extern "C" {
    fn malloc(size: usize) -> *mut u8;
}

#[repr(C, align(16))]
struct Aligned([u8; 64]);

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 16).unwrap()
}

fn announce(addr: usize) {
    println!("ADDR={addr:#x}");
    std::io::stdout().flush().unwrap();
}

fn alloc(size: usize) -> *mut u8 {
    // SAFETY: non-zero size.
    let p = unsafe { Zonal.alloc(layout(size)) };
    assert!(!p.is_null());
    // Touch it: a live, written block.
    // SAFETY: `p` is a live block of `size` bytes.
    unsafe { p.write_bytes(0x5a, size) };
    p
}

fn free(p: *mut u8, size: usize) {
    // SAFETY: deliberately not always valid: this is what is being tested.
    unsafe { Zonal.dealloc(p, layout(size)) }
}

/// Frees `addr` on a new thread and waits for it.
fn free_on_other_thread(addr: usize, size: usize) {
    std::thread::spawn(move || free(addr as *mut u8, size))
        .join()
        .unwrap();
}

/// Allocates many blocks of `size` (and keeps them), so that the calling
/// thread's page for that size runs dry and collects its pending frees.
fn churn(size: usize) {
    let mut keep = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        keep.push(alloc(size) as usize);
    }
    std::mem::forget(keep);
}

fn run_scenario(name: &str) {
    match name {
        "double_free" => {
            let p = alloc(48);
            free(p, 48);
            announce(p as usize);
            free(p, 48);
        }
        "double_free_manual_zone" => {
            let l = layout(200);
            let p = ManualZone.allocate(l).unwrap().cast::<u8>();
            // SAFETY: `p` was allocated by ManualZone with `l`.
            unsafe { ManualZone.deallocate(p, l) };
            announce(p.as_ptr() as usize);
            // SAFETY: deliberately invalid.
            unsafe { ManualZone.deallocate(p, l) };
        }
        "double_free_large" => {
            let p = alloc(256 * 1024);
            free(p, 256 * 1024);
            announce(p as usize);
            free(p, 256 * 1024);
        }
        "double_free_huge" => {
            let size = 8 << 20;
            let p = alloc(size);
            free(p, size);
            announce(p as usize);
            free(p, size);
        }
        "double_free_remote_then_owner" => {
            // Another thread frees the block, then its owner frees it again.
            let p = alloc(48);
            free_on_other_thread(p as usize, 48);
            announce(p as usize);
            free(p, 48);
            churn(48);
        }
        "double_free_owner_then_remote" => {
            let p = alloc(48);
            free(p, 48);
            announce(p as usize);
            free_on_other_thread(p as usize, 48);
        }
        "double_free_remote_twice" => {
            let p = alloc(48);
            free_on_other_thread(p as usize, 48);
            announce(p as usize);
            free_on_other_thread(p as usize, 48);
            churn(48);
        }
        "foreign_stack" => {
            let mut buf = Aligned([1; 64]);
            let p = buf.0.as_mut_ptr();
            announce(p as usize);
            free(p, 64);
            std::hint::black_box(&mut buf);
        }
        "foreign_libc_malloc" => {
            // SAFETY: plain libc malloc.
            let p = unsafe { malloc(64) };
            assert!(!p.is_null());
            announce(p as usize);
            free(p, 64);
        }
        "interior" => {
            let p = alloc(256);
            let q = p.wrapping_add(32);
            announce(q as usize);
            free(q, 256);
        }
        "interior_huge" => {
            let size = 8 << 20;
            let p = alloc(size);
            let q = p.wrapping_add(1 << 20);
            announce(q as usize);
            free(q, size);
        }
        "misaligned" => {
            let p = alloc(256);
            let q = p.wrapping_add(8);
            announce(q as usize);
            free(q, 256);
        }
        "misaligned_remote" => {
            // The block belongs to another thread's page.
            let p = std::thread::spawn(|| alloc(256) as usize).join().unwrap();
            let q = p + 8;
            announce(q);
            free(q as *mut u8, 256);
        }
        "misaligned_huge" => {
            let size = 8 << 20;
            let p = alloc(size);
            let q = p.wrapping_add(1);
            announce(q as usize);
            free(q, size);
        }
        "segment_metadata" => {
            // A 16-aligned address inside zonal's own segment header.
            let p = alloc(48);
            let q = (p as usize & !((4 << 20) - 1)) + 4096;
            announce(q);
            free(q as *mut u8, 48);
        }
        "realloc_foreign_stack" => {
            let mut buf = Aligned([1; 64]);
            let p = buf.0.as_mut_ptr();
            announce(p as usize);
            // SAFETY: deliberately invalid.
            let r = unsafe { Zonal.realloc(p, layout(64), 128) };
            std::hint::black_box((r, &mut buf));
        }
        "realloc_foreign_malloc" => {
            // SAFETY: plain libc malloc.
            let p = unsafe { malloc(64) };
            announce(p as usize);
            // SAFETY: deliberately invalid.
            let r = unsafe { Zonal.realloc(p, layout(64), 4096) };
            std::hint::black_box(r);
        }
        "realloc_freed" => {
            let p = alloc(48);
            free(p, 48);
            announce(p as usize);
            // SAFETY: deliberately invalid.
            let r = unsafe { Zonal.realloc(p, layout(48), 4096) };
            std::hint::black_box(r);
        }
        "realloc_interior" => {
            let p = alloc(256);
            let q = p.wrapping_add(64);
            announce(q as usize);
            // SAFETY: deliberately invalid.
            let r = unsafe { Zonal.realloc(q, layout(128), 200) };
            std::hint::black_box(r);
        }
        "realloc_misaligned" => {
            let p = alloc(256);
            let q = p.wrapping_add(8);
            announce(q as usize);
            // SAFETY: deliberately invalid.
            let r = unsafe { Zonal.realloc(q, layout(128), 200) };
            std::hint::black_box(r);
        }
        "grow_foreign" => {
            let mut buf = Aligned([1; 64]);
            let p = NonNull::new(buf.0.as_mut_ptr()).unwrap();
            announce(p.as_ptr() as usize);
            // SAFETY: deliberately invalid.
            let r = unsafe { ManualZone.grow(p, layout(64), layout(100_000)) };
            let _ = std::hint::black_box((r, &mut buf));
        }
        "double_free_then_frees" => {
            let p = alloc(48);
            free(p, 48);
            announce(p as usize);
            free(p, 48);
            // One queue's worth of further frees carries the queue out.
            let blocks: Vec<*mut u8> = (0..64).map(|_| alloc(32)).collect();
            for b in blocks {
                free(b, 32);
            }
            println!("LATE");
            std::io::stdout().flush().unwrap();
        }
        other => panic!("unknown scenario {other}"),
    }
    println!("SURVIVED");
    std::io::stdout().flush().unwrap();
    // Do not run anything else in a possibly corrupted heap.
    std::process::exit(0);
}

/// The child side: does nothing unless the scenario variable is set.
#[test]
fn child_entry() {
    if let Ok(name) = std::env::var(SCENARIO_VAR) {
        run_scenario(&name);
    }
}

/// What the one `zonal:` line must say: `zonal: <verb> of <addr>: <reason>`
/// with an accepted verb and a reason that names the fault. (The exact
/// wording of reasons is zonal's to choose; the keywords are not.)
struct Expect {
    verbs: &'static [&'static str],
    reason: fn(&str) -> bool,
}

const DOUBLE_FREE: Expect = Expect {
    verbs: &["double free"],
    reason: |r| r.contains("not allocated"),
};
/// A block whose memory went back to the OS when it was freed cannot be
/// told from a foreign pointer without extra records: accept a report that
/// says so (mentions that the pointer may have been freed).
const DOUBLE_FREE_OF_RELEASED: Expect = Expect {
    verbs: &["double free", "invalid free"],
    reason: |r| r.contains("not allocated") || r.contains("freed"),
};
const fn foreign(verb: &'static [&'static str]) -> Expect {
    Expect {
        verbs: verb,
        reason: |r| r.contains("not allocated by zonal") || r.contains("not in zonal's memory"),
    }
}
const fn interior(verb: &'static [&'static str]) -> Expect {
    Expect {
        verbs: verb,
        reason: |r| r.contains("inside a block"),
    }
}
const fn misaligned(verb: &'static [&'static str]) -> Expect {
    Expect {
        verbs: verb,
        reason: |r| r.contains("misaligned"),
    }
}
const FREE: &[&str] = &["invalid free"];
const REALLOC: &[&str] = &["invalid realloc"];

/// Runs `scenario` with frees carried out at once (the abort must come
/// inside the faulty call) and with the default queue (it may come later).
fn expect_fault(scenario: &str, expect: Expect) {
    expect_fault_in(scenario, &expect, Promptness::InTheCall);
    expect_fault_in(scenario, &expect, Promptness::ByExit);
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Promptness {
    /// `ZONAL_DEFER_FREES=0`: inside the faulty call.
    InTheCall,
    /// The default: by the time the queue is carried out.
    ByExit,
}

fn expect_fault_in(scenario: &str, expect: &Expect, promptness: Promptness) {
    let defer = match promptness {
        Promptness::InTheCall => "0",
        Promptness::ByExit => "1",
    };
    let out = common::run_child(
        "child_entry",
        &[(SCENARIO_VAR, scenario), ("ZONAL_DEFER_FREES", defer)],
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!(
        "scenario {scenario} ({promptness:?}): status {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    // libtest prints `test child_entry ... ` on the same line.
    let addr = stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ADDR="))
        .unwrap_or_else(|| panic!("child did not announce an address; {context}"));
    assert!(
        promptness == Promptness::ByExit || !stdout.contains("SURVIVED"),
        "zonal did not detect the misuse in the faulty call; {context}"
    );
    assert_eq!(
        common::signal_of(&out),
        Some(6),
        "child did not die of SIGABRT; {context}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("zonal:")).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one `zonal:` line; {context}"
    );
    let line = lines[0];
    let reason = expect
        .verbs
        .iter()
        .find_map(|verb| line.strip_prefix(&format!("zonal: {verb} of {addr}: ")))
        .unwrap_or_else(|| {
            panic!(
                "expected `zonal: <{:?}> of {addr}: ...`; {context}",
                expect.verbs
            )
        });
    assert!(
        (expect.reason)(reason),
        "the reason does not name the fault; {context}"
    );
}

/// With the default queue, a double free is reported by the time the 64
/// frees after it have been made (when the queue is carried out), not only
/// at exit.
#[test]
fn reported_within_the_queue() {
    let out = common::run_child(
        "child_entry",
        &[(SCENARIO_VAR, "double_free_then_frees")],
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!(
        "status {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert_eq!(common::signal_of(&out), Some(6), "no SIGABRT; {context}");
    assert!(
        !stdout.contains("LATE"),
        "the double free was not reported within the queue's 64 frees; {context}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("zonal: double free of 0x")),
        "no report naming the double free; {context}"
    );
}

#[test]
fn double_free_same_thread() {
    expect_fault("double_free", DOUBLE_FREE);
}

#[test]
fn double_free_through_manual_zone() {
    expect_fault("double_free_manual_zone", DOUBLE_FREE);
}

#[test]
fn double_free_large_block() {
    expect_fault("double_free_large", DOUBLE_FREE_OF_RELEASED);
}

#[test]
fn double_free_huge_block() {
    expect_fault("double_free_huge", DOUBLE_FREE_OF_RELEASED);
}

#[test]
fn double_free_freed_by_other_thread_then_owner() {
    expect_fault("double_free_remote_then_owner", DOUBLE_FREE);
}

#[test]
fn double_free_freed_by_owner_then_other_thread() {
    expect_fault("double_free_owner_then_remote", DOUBLE_FREE);
}

#[test]
fn double_free_by_two_other_threads() {
    expect_fault("double_free_remote_twice", DOUBLE_FREE);
}

#[test]
fn free_of_stack_pointer() {
    expect_fault("foreign_stack", foreign(FREE));
}

#[test]
fn free_of_libc_malloc_pointer() {
    expect_fault("foreign_libc_malloc", foreign(FREE));
}

#[test]
fn free_of_interior_pointer() {
    expect_fault("interior", interior(FREE));
}

#[test]
fn free_of_interior_pointer_of_huge_block() {
    expect_fault("interior_huge", interior(FREE));
}

#[test]
fn free_of_misaligned_pointer() {
    expect_fault("misaligned", misaligned(FREE));
}

#[test]
fn free_of_misaligned_pointer_into_other_threads_block() {
    expect_fault("misaligned_remote", misaligned(FREE));
}

#[test]
fn free_of_misaligned_pointer_of_huge_block() {
    expect_fault("misaligned_huge", misaligned(FREE));
}

#[test]
fn free_of_pointer_into_segment_metadata() {
    expect_fault(
        "segment_metadata",
        Expect {
            verbs: FREE,
            reason: |r| r.contains("not"),
        },
    );
}

#[test]
fn realloc_of_stack_pointer() {
    expect_fault("realloc_foreign_stack", foreign(REALLOC));
}

#[test]
fn realloc_of_libc_malloc_pointer() {
    expect_fault("realloc_foreign_malloc", foreign(REALLOC));
}

#[test]
fn realloc_of_freed_block() {
    expect_fault(
        "realloc_freed",
        Expect {
            verbs: REALLOC,
            reason: |r| r.contains("not allocated") || r.contains("freed"),
        },
    );
}

#[test]
fn realloc_of_interior_pointer() {
    expect_fault("realloc_interior", interior(REALLOC));
}

#[test]
fn realloc_of_misaligned_pointer() {
    expect_fault("realloc_misaligned", misaligned(REALLOC));
}

#[test]
fn manual_zone_grow_of_foreign_pointer() {
    expect_fault("grow_foreign", foreign(REALLOC));
}
