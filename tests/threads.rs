//! Thousands of short-lived threads: memory stays bounded (no growth with
//! the number of threads) and the statistics return to their baseline.
//!
//! The tests of this binary run one at a time (a lock), since they compare
//! process-wide statistics.

#[global_allocator]
static A: zonal::Zonal = zonal::Zonal;

mod common;

use common::Rng;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Mutex;
use zonal::{Zone, ZoneStats};

static SERIAL: Mutex<()> = Mutex::new(());

/// Live blocks (at most 16 more) and bytes (at most `byte_slack` more) are
/// back to `baseline`.
fn assert_back_to_baseline(baseline: &ZoneStats, end: &ZoneStats, byte_slack: u64, what: &str) {
    assert!(
        end.live_blocks <= baseline.live_blocks + 16,
        "live blocks {} -> {} {what}",
        baseline.live_blocks,
        end.live_blocks
    );
    assert!(
        end.live_bytes <= baseline.live_bytes + byte_slack,
        "live bytes {} -> {} {what}",
        baseline.live_bytes,
        end.live_bytes
    );
}

fn manual() -> ZoneStats {
    *zonal::stats().zone(Zone::Manual)
}

const MIB: u64 = 1 << 20;

/// What a thread hands back to the main thread.
type Kept = Vec<Vec<u8>>;

fn short_lived_thread(index: usize) -> Kept {
    let mut rng = Rng::new(index as u64);
    let mut temp = Vec::new();
    for i in 0..60 {
        let size = match rng.below(100) {
            0..=79 => rng.range(1, 600),
            80..=96 => rng.range(601, 40_000),
            _ => rng.range(40_001, 400_000),
        };
        temp.push(vec![(index + i) as u8; size]);
    }
    let s: String = (0..50).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    assert_eq!(s.len(), 50);
    // Keep two blocks (handed back), free the rest here.
    let kept = vec![temp.swap_remove(3), temp.swap_remove(7)];
    drop(temp);
    kept
}

/// Runs `count` threads, at most `parallel` at a time; keeps what they hand
/// back in `window` (only the newest `window_len` entries stay alive, the
/// older ones are freed by this thread: remote frees into abandoned pages).
fn run_threads(
    first: usize,
    count: usize,
    parallel: usize,
    window: &mut VecDeque<Kept>,
    window_len: usize,
) {
    let mut index = first;
    while index < first + count {
        let batch = parallel.min(first + count - index);
        let handles: Vec<_> = (index..index + batch)
            .map(|i| {
                std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || short_lived_thread(i))
                    .expect("spawn")
            })
            .collect();
        for (k, h) in handles.into_iter().enumerate() {
            let kept = h.join().expect("thread panicked");
            for b in &kept {
                assert!(
                    b.iter().all(|&x| x == b[0]),
                    "thread {} block corrupted",
                    index + k
                );
            }
            window.push_back(kept);
            while window.len() > window_len {
                window.pop_front();
            }
        }
        index += batch;
    }
}

fn thousands_of_threads_memory_stays_bounded_body() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let baseline = manual();
    let mut window = VecDeque::new();
    run_threads(0, 1_000, 8, &mut window, 200);
    let after_1000 = manual();
    run_threads(1_000, 3_000, 8, &mut window, 200);
    let after_4000 = manual();
    println!(
        "reserved: {} -> {} -> {} MiB; committed: {} -> {} -> {} MiB",
        baseline.reserved_bytes / MIB,
        after_1000.reserved_bytes / MIB,
        after_4000.reserved_bytes / MIB,
        baseline.committed_bytes / MIB,
        after_1000.committed_bytes / MIB,
        after_4000.committed_bytes / MIB
    );
    // Three times as many threads must not mean (much) more memory.
    assert!(
        after_4000.reserved_bytes <= after_1000.reserved_bytes + 32 * MIB,
        "reserved grew with the number of threads: {} MiB after 1000, {} MiB after 4000",
        after_1000.reserved_bytes / MIB,
        after_4000.reserved_bytes / MIB
    );
    assert!(
        after_4000.committed_bytes <= after_1000.committed_bytes + 32 * MIB,
        "committed grew with the number of threads: {} MiB after 1000, {} MiB after 4000",
        after_1000.committed_bytes / MIB,
        after_4000.committed_bytes / MIB
    );
    drop(window);
    let end = manual();
    assert_back_to_baseline(
        &baseline,
        &end,
        64 * 1024,
        "after every thread's blocks were freed",
    );
    assert!(end.allocations >= baseline.allocations + 4_000 * 60);
    assert!(end.frees >= baseline.frees + 4_000 * 60);
}

thread_local! {
    /// Registered (by first use) before the thread's first allocation, so
    /// its destructor runs after zonal's own thread-exit hook.
    static LATE: RefCell<Option<Box<[u8; 100]>>> = const { RefCell::new(None) };
}

/// Blocks freed (and allocated) by thread-local destructors that run after
/// zonal's thread-exit hook are still counted: live blocks return to the
/// baseline.
fn frees_in_late_thread_local_destructors_are_counted_body() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let baseline = manual();
    for _ in 0..50 {
        let handles: Vec<_> = (0..20)
            .map(|_| {
                std::thread::spawn(|| {
                    // First touch the thread-local (registers its destructor)
                    // without allocating, then allocate.
                    LATE.with(|l| assert!(l.borrow().is_none()));
                    let b = Box::new([7u8; 100]);
                    LATE.with(|l| *l.borrow_mut() = Some(b));
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
    let end = manual();
    assert_back_to_baseline(
        &baseline,
        &end,
        16 * 100,
        "after 1000 threads freed a 100-byte block in a late TLS destructor",
    );
}

/// Threads that only free (blocks allocated elsewhere) and exit, and threads
/// that allocate and exit without freeing (their blocks freed later by the
/// main thread): the counts balance.
fn threads_that_only_free_or_only_allocate_body() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let baseline = manual();
    for round in 0..20 {
        let made: Vec<Vec<Vec<u8>>> = (0..10)
            .map(|t| {
                std::thread::spawn(move || {
                    (0..100)
                        .map(|i| vec![t as u8; 16 + i * 13 + round])
                        .collect()
                })
                .join()
                .unwrap()
            })
            .collect();
        // Other short-lived threads free them.
        let handles: Vec<_> = made
            .into_iter()
            .map(|v| std::thread::spawn(move || drop(v)))
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
    let end = manual();
    assert!(
        end.live_blocks <= baseline.live_blocks + 16,
        "live blocks {} -> {}",
        baseline.live_blocks,
        end.live_blocks
    );
    assert!(end.frees >= baseline.frees + 20 * 10 * 100);
}

/// A thread-local registered before zonal's exit hook is destroyed after
/// it; when its destructor allocates, the dead thread's counts must be added
/// once, not again with everything the thread counted before.
struct AllocatesWhenDropped;

impl Drop for AllocatesWhenDropped {
    fn drop(&mut self) {
        drop(std::hint::black_box(vec![1u8; 100]));
    }
}

thread_local! {
    static ALLOCATES_LATE: AllocatesWhenDropped = const { AllocatesWhenDropped };
}

fn counts_of_a_thread_are_not_added_twice_after_it_exits_body() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A raw pthread: std's thread start-up allocates, which would register
    // zonal's exit hook before the test's thread-local.
    extern "C" fn body(_: *mut libc::c_void) -> *mut libc::c_void {
        ALLOCATES_LATE.with(|_| ());
        let kept: Vec<Box<u64>> = (0..1000)
            .map(|i| std::hint::black_box(Box::new(i)))
            .collect();
        drop(kept);
        std::ptr::null_mut()
    }
    let before = manual();
    // SAFETY: a zeroed pthread_t is a valid out-value; `body` is a valid
    // start routine that ignores its argument; the thread is joined.
    unsafe {
        let mut thread: libc::pthread_t = std::mem::zeroed();
        assert_eq!(
            libc::pthread_create(&mut thread, std::ptr::null(), body, std::ptr::null_mut()),
            0
        );
        assert_eq!(libc::pthread_join(thread, std::ptr::null_mut()), 0);
    }
    let after = manual();
    let allocations = after.allocations - before.allocations;
    assert!(
        (1000..1300).contains(&allocations),
        "{allocations} allocations counted for a thread that made about 1,002"
    );
}

/// Runs a test's body in a child process of its own (this binary, with
/// `--exact NAME --test-threads=1`): the statistics these tests compare are
/// process-wide, and the test harness's own threads (capturing output,
/// starting and ending test threads) would otherwise move them.
fn isolated(name: &str, body: fn()) {
    const CHILD: &str = "ZONAL_THREADS_TEST";
    match std::env::var(CHILD) {
        Ok(selected) if selected == name => body(),
        Ok(_) => {}
        Err(_) => {
            let out =
                common::run_child(name, &[(CHILD, name)], std::time::Duration::from_secs(120));
            assert!(
                out.status.success(),
                "{name} failed in its child process: {:?}\nstdout:\n{}\nstderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn thousands_of_threads_memory_stays_bounded() {
    isolated(
        "thousands_of_threads_memory_stays_bounded",
        thousands_of_threads_memory_stays_bounded_body,
    );
}

#[test]
fn frees_in_late_thread_local_destructors_are_counted() {
    isolated(
        "frees_in_late_thread_local_destructors_are_counted",
        frees_in_late_thread_local_destructors_are_counted_body,
    );
}

#[test]
fn threads_that_only_free_or_only_allocate() {
    isolated(
        "threads_that_only_free_or_only_allocate",
        threads_that_only_free_or_only_allocate_body,
    );
}

#[test]
fn counts_of_a_thread_are_not_added_twice_after_it_exits() {
    isolated(
        "counts_of_a_thread_are_not_added_twice_after_it_exits",
        counts_of_a_thread_are_not_added_twice_after_it_exits_body,
    );
}
