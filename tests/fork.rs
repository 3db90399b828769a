//! Fork safety: a child forked from a process whose other threads are busy
//! allocating and freeing can allocate, free and use collections.
//!
//! `libc` is not a dev-dependency, so the few functions needed are declared
//! here.

#[global_allocator]
static A: zonal::Zonal = zonal::Zonal;

mod common;

use common::Rng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

extern "C" {
    fn fork() -> i32;
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
    fn _exit(code: i32) -> !;
    fn kill(pid: i32, sig: i32) -> i32;
}

const WNOHANG: i32 = 1;
const SIGKILL: i32 = 9;

/// What the child does; returns its exit code (0 = all good). Uses nothing
/// that takes a lock another thread of the parent might have held (no
/// printing, no thread spawning).
fn child_work(round: u64) -> i32 {
    let mut rng = Rng::new(round);
    // Plain allocations and frees of every kind.
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let intact = |b: &[u8]| b[0] == b[b.len() / 2] && b[0] == b[b.len() - 1];
    for i in 0..4_000usize {
        let size = match rng.below(1000) {
            0..=899 => rng.range(1, 512),
            900..=994 => rng.range(513, 300_000),
            _ => rng.range(1 << 20, 3 << 20),
        };
        blocks.push(vec![(i % 251) as u8; size]);
        if rng.chance(1, 2) {
            let j = rng.below(blocks.len() as u64) as usize;
            if !intact(&blocks.swap_remove(j)) {
                return 2;
            }
        }
    }
    if !blocks.iter().all(|b| intact(b)) {
        return 3;
    }
    drop(blocks);
    // Strings and maps.
    let mut map: HashMap<String, Vec<u64>> = HashMap::new();
    for i in 0..1_000u64 {
        map.insert(format!("key {i}"), (0..i % 50).collect());
    }
    for i in 0..1_000u64 {
        match map.get(&format!("key {i}")) {
            Some(v) if v.len() as u64 == i % 50 && v.iter().copied().eq(0..i % 50) => {}
            _ => return 4,
        }
    }
    let mut s = String::new();
    for i in 0..10_000 {
        s.push_str(&i.to_string());
    }
    if s.len() != 38_890 {
        return 5;
    }
    // Reallocation through every kind of block.
    let mut v: Vec<u32> = Vec::new();
    for i in 0..300_000u32 {
        v.push(i);
    }
    if v.iter().enumerate().any(|(i, &x)| x != i as u32) {
        return 6;
    }
    let stats = zonal::stats();
    if stats.zone(zonal::Zone::Manual).allocations == 0 {
        return 7;
    }
    0
}

/// Forks; the child runs `child_work` and `_exit`s with its result. Waits
/// up to 30 s (a deadlocked child is killed and reported; the child's work
/// takes well under a second even on a loaded machine).
fn fork_and_wait(round: u64) -> Result<i32, String> {
    // SAFETY: the child only runs `child_work` (allocation, collections) and
    // then `_exit`s without unwinding or running destructors.
    let pid = unsafe { fork() };
    if pid < 0 {
        return Err("fork failed".into());
    }
    if pid == 0 {
        let code = std::panic::catch_unwind(|| child_work(round)).unwrap_or(101);
        // SAFETY: terminates the child immediately.
        unsafe { _exit(code) };
    }
    wait_child(pid)
}

/// Busy threads: allocate, free, and pass blocks to each other (so that
/// remote frees, page hand-overs and huge mappings are in flight).
fn start_busy_threads(
    n: usize,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicUsize>,
) -> Vec<std::thread::JoinHandle<()>> {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::channel::<Vec<u8>>()).unzip();
    receivers
        .into_iter()
        .enumerate()
        .map(|(me, inbox)| {
            let senders = senders.clone();
            let stop = stop.clone();
            let progress = progress.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::new(1000 + me as u64);
                let mut mine: Vec<Vec<u8>> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..64 {
                        let size = match rng.below(200) {
                            0..=179 => rng.range(1, 1024),
                            180..=198 => rng.range(1025, 200_000),
                            _ => rng.range(1 << 20, 3 << 20),
                        };
                        let b = vec![me as u8; size];
                        if rng.chance(1, 3) {
                            let _ = senders[rng.below(n as u64) as usize].send(b);
                        } else {
                            mine.push(b);
                        }
                        if mine.len() > 200 {
                            let k = rng.below(mine.len() as u64) as usize;
                            mine.swap_remove(k);
                        }
                    }
                    while let Ok(b) = inbox.try_recv() {
                        assert!(b.iter().all(|&x| x == b[0]));
                    }
                    // A stats snapshot takes the registry lock.
                    if rng.chance(1, 50) {
                        let _ = zonal::stats();
                    }
                    // Short-lived threads take the registry lock and abandon
                    // pages.
                    if rng.chance(1, 100) {
                        std::thread::spawn(|| vec![0u8; 5000].len()).join().unwrap();
                    }
                    progress.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect()
}

#[test]
fn fork_while_other_threads_allocate() {
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let threads = start_busy_threads(4, stop.clone(), progress.clone());
    let mut failures = Vec::new();
    for round in 0..10u64 {
        // Let the threads get going between forks.
        let seen = progress.load(Ordering::Relaxed);
        let t = Instant::now();
        while progress.load(Ordering::Relaxed) < seen + 20 && t.elapsed() < Duration::from_secs(2) {
            std::thread::yield_now();
        }
        // The forking thread allocates right before forking too.
        let noise: Vec<Vec<u8>> = (0..100).map(|i| vec![1u8; i * 37 + 1]).collect();
        match fork_and_wait(round) {
            Ok(0) => {}
            Ok(code) => failures.push(format!("round {round}: child exited with {code}")),
            Err(e) => failures.push(format!("round {round}: {e}")),
        }
        drop(noise);
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert!(failures.is_empty(), "fork failures: {failures:?}");
}

/// Forking from a thread other than the main one, and forking again from
/// inside a forked child (which inherited another thread's heaps).
#[test]
fn fork_from_worker_thread_and_nested_fork() {
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let threads = start_busy_threads(3, stop.clone(), progress.clone());
    let result = std::thread::spawn(|| {
        let mut results = Vec::new();
        for round in 100..104u64 {
            let keep: Vec<String> = (0..1000).map(|i| format!("{i}")).collect();
            // SAFETY: the child only allocates, forks again and `_exit`s.
            let pid = unsafe { fork() };
            if pid == 0 {
                // In the child: free the parent's blocks, then fork again.
                drop(keep);
                let code = fork_and_wait(round).unwrap_or(9);
                let code = if code == 0 {
                    child_work(round + 1)
                } else {
                    code
                };
                // SAFETY: terminates the child immediately.
                unsafe { _exit(code) };
            }
            assert!(pid > 0, "fork failed");
            let mut status = 0;
            let start = Instant::now();
            let outcome = loop {
                // SAFETY: valid out-pointer; our child.
                let r = unsafe { waitpid(pid, &mut status, WNOHANG) };
                if r == pid {
                    break if status & 0x7f == 0 {
                        Ok((status >> 8) & 0xff)
                    } else {
                        Err(status & 0x7f)
                    };
                }
                if start.elapsed() > Duration::from_secs(60) {
                    // SAFETY: our child.
                    unsafe {
                        kill(pid, SIGKILL);
                        waitpid(pid, &mut status, 0);
                    }
                    break Err(-1);
                }
                std::thread::sleep(Duration::from_millis(2));
            };
            results.push((round, outcome));
            drop(keep);
        }
        results
    })
    .join()
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    for (round, outcome) in result {
        assert_eq!(
            outcome,
            Ok(0),
            "round {round}: Ok(exit code) or Err(signal, -1 = deadlock)"
        );
    }
}

/// Waits up to 30 s for the child `pid` and returns its exit code; kills it
/// (a deadlock in the child fails the test instead of hanging it).
fn wait_child(pid: i32) -> Result<i32, String> {
    let start = Instant::now();
    loop {
        let mut status = 0i32;
        // SAFETY: `status` is a valid out-pointer; `pid` is our child.
        let r = unsafe { waitpid(pid, &mut status, WNOHANG) };
        if r == pid {
            if status & 0x7f == 0 {
                return Ok((status >> 8) & 0xff);
            }
            return Err(format!("child killed by signal {}", status & 0x7f));
        }
        if r < 0 || start.elapsed() > Duration::from_secs(30) {
            // SAFETY: `pid` is our child.
            unsafe {
                kill(pid, SIGKILL);
                waitpid(pid, &mut status, 0);
            }
            return Err("child deadlocked (killed after 30 s) or waitpid failed".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Threads of the parent own full pages (which ask to be told about their
/// next free); in the child those threads are gone, and new threads of the
/// child may even sit where their heaps were. The child starts and ends
/// threads (so the C library recycles the dead threads' stacks) and then
/// frees blocks of those pages, from the main thread and from new threads.
#[test]
fn child_frees_blocks_of_the_parents_vanished_threads() {
    const SIZE: usize = 2000; // 2 KiB blocks: 32 per 64 KiB page
    const THREADS: usize = 24;
    let (tx, rx) = mpsc::channel::<Vec<usize>>();
    let stop = Arc::new(AtomicBool::new(false));
    let holders: Vec<_> = (0..THREADS)
        .map(|_| {
            let (tx, stop) = (tx.clone(), stop.clone());
            std::thread::spawn(move || {
                // A full page, plus a block on the next one.
                let blocks = (0..33)
                    .map(|_| Box::into_raw(Box::new([7u8; SIZE])) as usize)
                    .collect();
                tx.send(blocks).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect();
    let all: Vec<Vec<usize>> = (0..THREADS).map(|_| rx.recv().unwrap()).collect();
    // SAFETY: the child only allocates, frees, spawns threads and `_exit`s.
    let pid = unsafe { fork() };
    if pid == 0 {
        let code = std::panic::catch_unwind(|| {
            for _ in 0..8 {
                std::thread::spawn(|| drop(vec![0u8; 5000])).join().unwrap();
            }
            let (first, second) = all.split_at(THREADS / 2);
            for blocks in first {
                for &b in &blocks[..4] {
                    // SAFETY: live blocks of the parent, each freed once here.
                    drop(unsafe { Box::from_raw(b as *mut [u8; SIZE]) });
                }
            }
            let second: Vec<Vec<usize>> = second.to_vec();
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                for blocks in &second {
                    kept.push(Box::new([1u8; SIZE]));
                    for &b in &blocks[..4] {
                        // SAFETY: as above.
                        let block = unsafe { Box::from_raw(b as *mut [u8; SIZE]) };
                        assert!(block.iter().all(|&x| x == 7));
                    }
                }
                assert!(kept.iter().all(|k| k.iter().all(|&x| x == 1)));
            })
            .join()
            .unwrap();
            0
        })
        .unwrap_or(101);
        // SAFETY: terminates the child immediately.
        unsafe { _exit(code) };
    }
    let result = wait_child(pid);
    stop.store(true, Ordering::Relaxed);
    for h in holders {
        h.join().unwrap();
    }
    for blocks in all {
        for b in blocks {
            // SAFETY: the parent's blocks are still live here; freed once.
            drop(unsafe { Box::from_raw(b as *mut [u8; SIZE]) });
        }
    }
    assert_eq!(result, Ok(0));
}
