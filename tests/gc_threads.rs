//! A multi-threaded GC test (issue 3, item 8c): worker threads build,
//! share, mutate and check linked lists of `Gc` nodes while collections
//! run (explicit ones from two of the workers, automatic ones from
//! everybody's allocation), and short-lived threads are spawned and exit
//! all along. Every list carries its length and key sum, and every node a
//! payload derived from its key, so a node freed too early (and reused) or
//! a lost link is detected.
//!
//! Runs in a child process with a timeout: a deadlock in the stop-the-world
//! handshake fails the test instead of stalling the suite.

#[global_allocator]
static A: zonal::Zonal = zonal::Zonal;

mod common;
mod gc_common;

use common::Rng;
use gc_common::{isolated, word};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zonal::{gc, Gc};

const PAYLOAD: usize = 4;

struct Node {
    key: u64,
    payload: [u64; PAYLOAD],
    next: Mutex<Option<Gc<Node>>>,
}

fn new_node(key: u64, next: Option<Gc<Node>>) -> Gc<Node> {
    Gc::new(Node {
        key,
        payload: std::array::from_fn(|i| word(key, i)),
        next: Mutex::new(next),
    })
}

fn node_intact(n: &Node) -> bool {
    n.payload
        .iter()
        .enumerate()
        .all(|(i, &w)| w == word(n.key, i))
}

/// A list and what it must contain.
#[derive(Clone, Copy)]
struct List {
    head: Option<Gc<Node>>,
    len: u64,
    sum: u64,
}

const EMPTY: List = List {
    head: None,
    len: 0,
    sum: 0,
};

fn build(rng: &mut Rng, len: u64) -> List {
    let mut list = EMPTY;
    for _ in 0..len {
        let key = rng.next_u64() >> 8;
        list.head = Some(new_node(key, list.head));
        list.len += 1;
        list.sum = list.sum.wrapping_add(key);
    }
    list
}

/// Walks the list: every node intact, length and sum as recorded.
fn verify(list: &List, what: &str) {
    let (mut len, mut sum) = (0, 0u64);
    let mut node = list.head;
    let mut last = None;
    while let Some(n) = node {
        assert!(node_intact(&n), "{what}: node {len} overwritten");
        len += 1;
        sum = sum.wrapping_add(n.key);
        assert!(len <= list.len, "{what}: longer than {}", list.len);
        last = Some(n);
        node = *n.next.lock().unwrap();
    }
    assert_eq!(len, list.len, "{what}: length");
    assert_eq!(sum, list.sum, "{what}: key sum");
    black_box(last);
}

/// Unlinks every `k`-th node (in place: other nodes' `next` change).
fn thin(list: &mut List, k: u64) {
    let Some(head) = list.head else { return };
    let mut prev = head;
    let mut index = 1;
    loop {
        let Some(cur) = *prev.next.lock().unwrap() else {
            break;
        };
        if index % k == 0 {
            let after = *cur.next.lock().unwrap();
            *prev.next.lock().unwrap() = after;
            list.len -= 1;
            list.sum = list.sum.wrapping_sub(cur.key);
        } else {
            prev = cur;
        }
        index += 1;
    }
}

/// Appends `tail` to `list` (walks to the end).
fn append(list: &mut List, tail: List) {
    match list.head {
        None => *list = tail,
        Some(mut n) => {
            loop {
                let next = *n.next.lock().unwrap();
                match next {
                    Some(next) => n = next,
                    None => break,
                }
            }
            *n.next.lock().unwrap() = tail.head;
            list.len += tail.len;
            list.sum = list.sum.wrapping_add(tail.sum);
        }
    }
}

const SLOTS: usize = 32;
static LISTS: [Mutex<List>; SLOTS] = [const { Mutex::new(EMPTY) }; SLOTS];

struct Shared {
    stop: AtomicBool,
    ops: AtomicU64,
    explicit: AtomicU64,
    short_lived: AtomicU64,
}

fn worker(id: u64, shared: &Shared, collects: bool) {
    let mut rng = Rng::new(id);
    // A private list, rooted by this thread's stack only.
    let mut mine = build(&mut rng, 500);
    while !shared.stop.load(Ordering::Relaxed) {
        verify(&mine, "private list");
        match rng.below(100) {
            0..=24 => {
                let list = {
                    let len = rng.range(10, 2000) as u64;
                    build(&mut rng, len)
                };
                *LISTS[rng.below(SLOTS as u64) as usize].lock().unwrap() = list;
            }
            25..=54 => {
                let slot = rng.below(SLOTS as u64) as usize;
                verify(&LISTS[slot].lock().unwrap(), "shared list");
            }
            55..=69 => {
                let slot = rng.below(SLOTS as u64) as usize;
                let k = rng.range(2, 5) as u64;
                thin(&mut LISTS[slot].lock().unwrap(), k);
            }
            70..=79 => {
                let (a, b) = (
                    rng.below(SLOTS as u64) as usize,
                    rng.below(SLOTS as u64) as usize,
                );
                if a != b {
                    let (first, second) = (a.min(b), a.max(b));
                    let mut x = LISTS[first].lock().unwrap();
                    let mut y = LISTS[second].lock().unwrap();
                    let (to, from) = if a < b {
                        (&mut *x, &mut *y)
                    } else {
                        (&mut *y, &mut *x)
                    };
                    if to.len + from.len > 6000 {
                        thin(to, 2);
                        thin(from, 2);
                    }
                    append(to, *from);
                    *from = EMPTY;
                }
            }
            80..=89 => {
                // Replace the private list (the old one becomes garbage).
                mine = {
                    let len = rng.range(10, 1000) as u64;
                    build(&mut rng, len)
                };
            }
            90..=94 => {
                // Garbage that drives automatic collections.
                for _ in 0..2000 {
                    black_box(new_node(rng.next_u64(), None));
                }
            }
            _ => {
                if collects && rng.chance(1, 5) {
                    gc::collect();
                    shared.explicit.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        shared.ops.fetch_add(1, Ordering::Relaxed);
    }
    verify(&mine, "private list at the end");
}

/// Spawns short-lived threads, two at a time, until told to stop: each
/// builds a list, publishes it, checks another, sometimes collects, exits.
fn spawner(shared: Arc<Shared>) {
    let mut round = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let handles: Vec<_> = (0..2)
            .map(|k| {
                let seed = 1000 + round * 2 + k;
                std::thread::spawn(move || {
                    let mut rng = Rng::new(seed);
                    let list = {
                        let len = rng.range(10, 500) as u64;
                        build(&mut rng, len)
                    };
                    verify(&list, "short-lived thread's list");
                    *LISTS[rng.below(SLOTS as u64) as usize].lock().unwrap() = list;
                    let slot = rng.below(SLOTS as u64) as usize;
                    verify(&LISTS[slot].lock().unwrap(), "shared list (short-lived)");
                    if rng.chance(1, 4) {
                        gc::collect();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("short-lived thread failed");
            shared.short_lived.fetch_add(1, Ordering::Relaxed);
        }
        round += 1;
    }
}

fn threads_mutate_linked_lists_during_collections_body() {
    assert!(
        !std::mem::needs_drop::<Node>(),
        "nodes would be finalizable: the test is about collection, not finalization"
    );
    const WORKERS: u64 = 6;
    const RUN_FOR: Duration = Duration::from_secs(4);
    gc::set_threshold(2 << 20);
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        ops: AtomicU64::new(0),
        explicit: AtomicU64::new(0),
        short_lived: AtomicU64::new(0),
    });
    let start = zonal::stats().gc;
    let workers: Vec<_> = (0..WORKERS)
        .map(|id| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || worker(id, &shared, id < 2))
        })
        .collect();
    let spawner = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || spawner(shared))
    };
    let began = Instant::now();
    while began.elapsed() < RUN_FOR {
        std::thread::sleep(Duration::from_millis(50));
        if workers.iter().any(|w| w.is_finished()) {
            break; // a worker panicked: stop early, report below
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    for (id, w) in workers.into_iter().enumerate() {
        w.join()
            .unwrap_or_else(|_| panic!("worker {id} failed (see its panic above)"));
    }
    spawner.join().expect("spawner failed");
    for (slot, list) in LISTS.iter().enumerate() {
        verify(
            &list.lock().unwrap(),
            &format!("shared list {slot} at the end"),
        );
    }
    gc::collect();
    for (slot, list) in LISTS.iter().enumerate() {
        verify(
            &list.lock().unwrap(),
            &format!("shared list {slot} after the last collection"),
        );
    }
    let end = zonal::stats().gc;
    let collections = end.collections - start.collections;
    let explicit = shared.explicit.load(Ordering::Relaxed);
    let ops = shared.ops.load(Ordering::Relaxed);
    let short_lived = shared.short_lived.load(Ordering::Relaxed);
    println!(
        "{ops} operations, {collections} collections ({explicit} explicit from workers), \
         {short_lived} short-lived threads, pause max {:?}, {} MiB freed",
        end.pause_max,
        (end.bytes_freed - start.bytes_freed) >> 20
    );
    assert!(ops >= 1000, "only {ops} operations in {RUN_FOR:?}");
    assert!(explicit >= 5, "only {explicit} explicit collections");
    assert!(
        collections >= explicit + 5,
        "only {} automatic collections (or from short-lived threads)",
        collections - explicit
    );
    assert!(short_lived >= 20, "only {short_lived} short-lived threads");
}

#[test]
fn threads_mutate_linked_lists_during_collections() {
    isolated(
        "threads_mutate_linked_lists_during_collections",
        &[],
        Duration::from_secs(60),
        threads_mutate_linked_lists_during_collections_body,
    );
}

/// The same with a tiny mark stack (overflow rescans while threads wait)
/// and the collection threshold at its minimum.
#[test]
fn threads_mutate_linked_lists_with_a_tiny_mark_stack() {
    isolated(
        "threads_mutate_linked_lists_with_a_tiny_mark_stack",
        &[("ZONAL_GC_MARK_STACK", "16")],
        Duration::from_secs(60),
        threads_mutate_linked_lists_during_collections_body,
    );
}

/// New threads start (register with the collector) and exit while two
/// other threads collect back to back: 20 short-lived threads must not take
/// more than a few seconds (a hang is killed by the child's timeout).
fn threads_start_while_others_collect_back_to_back_body() {
    let stop = Arc::new(AtomicBool::new(false));
    let collectors: Vec<_> = (0..2)
        .map(|id| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut rng = Rng::new(77 + id);
                let list = build(&mut rng, 1000);
                while !stop.load(Ordering::Relaxed) {
                    gc::collect();
                }
                verify(&list, "collector's list");
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let began = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..20u64 {
        let t = Instant::now();
        std::thread::spawn(move || {
            let mut rng = Rng::new(i);
            verify(&build(&mut rng, 100), "short-lived thread's list");
        })
        .join()
        .unwrap();
        slowest = slowest.max(t.elapsed());
        if began.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    let took = began.elapsed();
    stop.store(true, Ordering::Relaxed);
    for c in collectors {
        c.join().unwrap();
    }
    println!("20 threads in {took:?} (slowest {slowest:?})");
    assert!(
        took < Duration::from_secs(5),
        "20 short-lived threads took {took:?} (slowest {slowest:?}) while others collected"
    );
}

#[test]
fn threads_start_while_others_collect_back_to_back() {
    isolated(
        "threads_start_while_others_collect_back_to_back",
        &[],
        Duration::from_secs(60),
        threads_start_while_others_collect_back_to_back_body,
    );
}
