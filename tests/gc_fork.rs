//! Fork in a program that uses the GC zone (issue 3, item 8d): while
//! several threads allocate `Gc` lists and collect, the main thread forks;
//! the child (only the forking thread survives) checks the objects it
//! inherited, allocates new ones, collects (which must not wait for the
//! vanished threads), checks old and new, and exits 0; the parent checks
//! its objects too and carries on.
//!
//! Runs in a child process of its own (so the test harness's threads are
//! not forked with it), with timeouts on the forked children.
//!
//! Two versions: the other threads parked at each fork, and the other
//! threads running, collections included (a collection in progress at the
//! fork once left the dynamic linker's lock held in the child, whose first
//! collection then deadlocked).

#[global_allocator]
static A: zonal::Zonal = zonal::Zonal;

mod common;
mod gc_common;

use allocator_api2::vec::Vec as AVec;
use common::Rng;
use gc_common::{isolated, word, Payload};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zonal::{gc, Gc, GcZone};

struct Node {
    key: u64,
    check: u64,
    next: Option<Gc<Node>>,
}

fn check_of(key: u64) -> u64 {
    word(key, 3)
}

/// A list of `len` nodes with keys `base..base + len` (head has the last).
fn build(base: u64, len: u64) -> Gc<Node> {
    let mut head = None;
    for key in base..base + len {
        head = Some(Gc::new(Node {
            key,
            check: check_of(key),
            next: head,
        }));
    }
    head.expect("empty list")
}

/// Whether the list from `head` has keys `base + len - 1` down to `base`,
/// each node intact.
fn list_ok(head: Gc<Node>, base: u64, len: u64) -> bool {
    let mut node = Some(head);
    let mut expected = base + len;
    while let Some(n) = node {
        if expected == base {
            return false;
        }
        expected -= 1;
        if n.key != expected || n.check != check_of(expected) {
            return false;
        }
        node = n.next;
    }
    expected == base
}

/// What the main thread owns before forking: a list, and payloads in a
/// `GcZone` map.
struct Owned {
    list: Gc<Node>,
    map: hashbrown::HashMap<u64, Gc<Payload>, hashbrown::DefaultHashBuilder, GcZone>,
}

const LIST_BASE: u64 = 1 << 40;
const LIST_LEN: u64 = 20_000;
const MAP_LEN: u64 = 2_000;

fn make_owned() -> Owned {
    let mut map = hashbrown::HashMap::new_in(GcZone);
    for i in 0..MAP_LEN {
        map.insert(i, Gc::new(Payload::new(7_000 + i)));
    }
    Owned {
        list: build(LIST_BASE, LIST_LEN),
        map,
    }
}

fn owned_ok(owned: &Owned) -> bool {
    list_ok(owned.list, LIST_BASE, LIST_LEN)
        && owned.map.len() as u64 == MAP_LEN
        && (0..MAP_LEN).all(|i| owned.map.get(&i).is_some_and(|g| g.intact(7_000 + i)))
}

/// The forked child's work; returns its exit code (0 = all good). No
/// printing, no threads: only allocation, collection and checks.
fn child_work(owned: &Owned, round: u64) -> i32 {
    if !owned_ok(owned) {
        return 2;
    }
    let before = zonal::stats().gc.collections;
    let fresh = build(round << 32, 50_000);
    let mut payloads: AVec<Gc<Payload>, GcZone> = AVec::new_in(GcZone);
    for i in 0..5_000u64 {
        payloads.push(Gc::new(Payload::new(round * 100_000 + i)));
        // Garbage, so collections have something to free.
        black_box(Gc::new(Payload::new(i)));
    }
    for _ in 0..3 {
        gc::collect();
    }
    for i in 0..20_000u64 {
        black_box(build(i, 10));
    }
    gc::collect();
    if zonal::stats().gc.collections < before + 4 {
        return 3;
    }
    if !list_ok(fresh, round << 32, 50_000) {
        return 4;
    }
    if !payloads
        .iter()
        .enumerate()
        .all(|(i, g)| g.intact(round * 100_000 + i as u64))
    {
        return 5;
    }
    if !owned_ok(owned) {
        return 6;
    }
    0
}

/// Forks; the child runs `child_work` and `_exit`s with its code. Waits up
/// to 30 s for it (a deadlocked child is killed and reported).
fn fork_and_wait(owned: &Owned, round: u64) -> Result<i32, String> {
    // SAFETY: the child only allocates, collects and checks, then `_exit`s
    // without unwinding or running destructors.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err("fork failed".into());
    }
    if pid == 0 {
        let code = std::panic::catch_unwind(|| child_work(owned, round)).unwrap_or(101);
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(code) };
    }
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: valid out-pointer; our child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return if libc::WIFEXITED(status) {
                Ok(libc::WEXITSTATUS(status))
            } else {
                Err(format!("child killed by signal {}", libc::WTERMSIG(status)))
            };
        }
        if r < 0 || start.elapsed() > Duration::from_secs(30) {
            // SAFETY: our child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Err("child deadlocked (killed after 30 s) or waitpid failed".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Threads that build, check and drop lists, keep a few, and collect now
/// and then, until told to stop.
/// When `pause` is set, each thread parks (sleeps, outside zonal and
/// outside every collection) and counts itself in `parked`.
struct Control {
    stop: AtomicBool,
    pause: AtomicBool,
    parked: AtomicU64,
    progress: AtomicU64,
}

fn busy_threads(n: u64, control: Arc<Control>) -> Vec<std::thread::JoinHandle<()>> {
    (0..n)
        .map(|id| {
            let control = Arc::clone(&control);
            std::thread::spawn(move || {
                let mut rng = Rng::new(id + 50);
                let kept: Mutex<Vec<(Gc<Node>, u64, u64)>> = Mutex::new(Vec::new());
                let mut next_base = (id + 1) << 48;
                while !control.stop.load(Ordering::Relaxed) {
                    if control.pause.load(Ordering::SeqCst) {
                        control.parked.fetch_add(1, Ordering::SeqCst);
                        while control.pause.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        control.parked.fetch_sub(1, Ordering::SeqCst);
                    }
                    let len = rng.range(100, 2_000) as u64;
                    let list = build(next_base, len);
                    let mut kept = kept.lock().unwrap();
                    kept.push((list, next_base, len));
                    next_base += len;
                    if kept.len() > 8 {
                        let (head, base, len) = kept.swap_remove(rng.below(8) as usize);
                        assert!(list_ok(head, base, len), "thread {id}: list overwritten");
                    }
                    drop(kept);
                    if rng.chance(1, 20) {
                        gc::collect();
                    }
                    control.progress.fetch_add(1, Ordering::Relaxed);
                }
                for (head, base, len) in kept.into_inner().unwrap() {
                    assert!(list_ok(head, base, len), "thread {id}: list overwritten");
                }
            })
        })
        .collect()
}

/// Forks 8 times while 4 threads use the GC zone. With `park`, the
/// threads are parked (sleeping, in no collection) at each fork; without,
/// they may be anywhere, in the middle of a collection included.
fn fork_rounds(park: bool) {
    gc::set_threshold(2 << 20);
    let owned = make_owned();
    let control = Arc::new(Control {
        stop: AtomicBool::new(false),
        pause: AtomicBool::new(false),
        parked: AtomicU64::new(0),
        progress: AtomicU64::new(0),
    });
    const THREADS: u64 = 4;
    let threads = busy_threads(THREADS, Arc::clone(&control));
    let mut failures = Vec::new();
    for round in 1..=8u64 {
        // Let the threads get going between forks.
        let seen = control.progress.load(Ordering::Relaxed);
        let t = Instant::now();
        while control.progress.load(Ordering::Relaxed) < seen + 20
            && t.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        if park {
            control.pause.store(true, Ordering::SeqCst);
            while control.parked.load(Ordering::SeqCst) < THREADS {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // The forking thread allocates GC garbage right before forking.
        for i in 0..1_000u64 {
            black_box(Gc::new(Payload::new(i)));
        }
        match fork_and_wait(&owned, round) {
            Ok(0) => {}
            Ok(code) => failures.push(format!("round {round}: child exited with {code}")),
            Err(e) => failures.push(format!("round {round}: {e}")),
        }
        control.pause.store(false, Ordering::SeqCst);
        gc::collect();
        assert!(
            owned_ok(&owned),
            "round {round}: the parent's objects were overwritten"
        );
    }
    control.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a busy thread failed");
    }
    assert!(failures.is_empty(), "fork failures: {failures:?}");
    println!(
        "8 forks; {} list operations in the parent's threads; {} collections",
        control.progress.load(Ordering::Relaxed),
        zonal::stats().gc.collections
    );
}

fn fork_while_gc_threads_are_parked_body() {
    fork_rounds(true);
}

/// Threads that use the GC zone (their lists, pages and records exist,
/// they collect between forks) are parked at each fork.
#[test]
fn fork_while_gc_threads_are_parked() {
    isolated(
        "fork_while_gc_threads_are_parked",
        &[],
        Duration::from_secs(120),
        fork_while_gc_threads_are_parked_body,
    );
}

fn fork_while_threads_collect_body() {
    fork_rounds(false);
}

/// Forks while the other threads allocate and collect: a fork may come
/// while another thread is inside a collection.
#[test]
fn fork_while_threads_collect() {
    isolated(
        "fork_while_threads_collect",
        &[],
        Duration::from_secs(300),
        fork_while_threads_collect_body,
    );
}
