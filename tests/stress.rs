//! Multi-threaded stress: many threads allocate blocks of mixed sizes, fill
//! them with a pattern derived from (thread, index, size), and either free
//! them locally or send them to another thread, which verifies the pattern
//! and frees them (cross-thread frees).

#[global_allocator]
static A: zonal::Zonal = zonal::Zonal;

mod common;

use common::Rng;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use zonal::Zonal;

/// A block in flight between threads (addresses are plain integers so the
/// message is `Send`).
struct Msg {
    addr: usize,
    size: usize,
    align: usize,
    seed: u64,
    from: usize,
}

fn seed(thread: usize, index: usize, size: usize) -> u64 {
    common::seed_of(&[thread as u64, index as u64, size as u64])
}

fn bytes<'a>(addr: usize, len: usize) -> &'a mut [u8] {
    // SAFETY: callers pass a live block of at least `len` bytes.
    unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len) }
}

fn random_size(rng: &mut Rng) -> usize {
    match rng.below(1000) {
        0..=599 => rng.range(16, 512),
        600..=899 => rng.range(513, 16 * 1024),
        900..=994 => rng.log_size(16 * 1024, 256 * 1024),
        _ => rng.log_size(1 << 20, 3 << 20), // some huge
    }
}

fn verify_and_free(m: Msg, me: usize) {
    assert!(
        common::check(bytes(m.addr, m.size), m.seed),
        "thread {me}: block {:#x} ({} bytes, from thread {}) corrupted",
        m.addr,
        m.size,
        m.from
    );
    // SAFETY: the block is live, allocated with this layout, and handed to
    // us by its allocating thread.
    unsafe {
        Zonal.dealloc(
            m.addr as *mut u8,
            Layout::from_size_align(m.size, m.align).unwrap(),
        )
    };
}

/// Reallocs a block another thread allocated (in place or moved), checks
/// that its contents survived, and refills it.
fn realloc_foreign_owned(m: Msg, me: usize, rng: &mut Rng) -> Msg {
    assert!(
        common::check(bytes(m.addr, m.size), m.seed),
        "thread {me}: received block corrupted"
    );
    let new_size = if rng.chance(1, 2) {
        m.size + rng.range(1, m.size)
    } else {
        (m.size / 2).max(1)
    };
    let old = Layout::from_size_align(m.size, m.align).unwrap();
    // SAFETY: a live block with its layout, handed to this thread.
    let q = unsafe { Zonal.realloc(m.addr as *mut u8, old, new_size) } as usize;
    assert!(q != 0 && q.is_multiple_of(m.align));
    let kept = m.size.min(new_size);
    assert!(
        common::check_prefix(bytes(q, kept), m.seed, m.size),
        "thread {me}: realloc {} -> {new_size} of thread {}'s block lost data",
        m.size,
        m.from
    );
    let seed = m.seed ^ 0xABCD;
    common::fill(bytes(q, new_size), seed);
    Msg {
        addr: q,
        size: new_size,
        align: m.align,
        seed,
        from: m.from,
    }
}

fn worker(
    me: usize,
    threads: usize,
    ops: usize,
    senders: Vec<mpsc::Sender<Msg>>,
    inbox: mpsc::Receiver<Msg>,
    start: Arc<Barrier>,
    release_every: usize,
) -> (usize, usize) {
    let mut rng = Rng::new(0xC0FFEE + me as u64);
    let mut local: Vec<Msg> = Vec::new();
    let (mut sent, mut received) = (0, 0);
    start.wait();
    for index in 0..ops {
        let size = random_size(&mut rng);
        let align = [8usize, 16, 64, 4096][rng.below(4) as usize];
        let l = Layout::from_size_align(size, align).unwrap();
        let zeroed = rng.chance(1, 8);
        // SAFETY: non-zero size.
        let p = unsafe {
            if zeroed {
                Zonal.alloc_zeroed(l)
            } else {
                Zonal.alloc(l)
            }
        };
        assert!(!p.is_null(), "thread {me}: out of memory for {size}");
        assert_eq!(p as usize % align, 0);
        if zeroed {
            assert!(
                common::is_zero(bytes(p as usize, size)),
                "thread {me}: alloc_zeroed({size}) not zero"
            );
        }
        let s = seed(me, index, size);
        common::fill(bytes(p as usize, size), s);
        let m = Msg {
            addr: p as usize,
            size,
            align,
            seed: s,
            from: me,
        };
        if rng.chance(1, 2) {
            let to = (me + 1 + rng.below(threads as u64 - 1) as usize) % threads;
            senders[to]
                .send(m)
                .expect("receiver alive until all senders are gone");
            sent += 1;
        } else {
            local.push(m);
        }
        // Free some local blocks (not always the newest).
        while local.len() > 48 || (!local.is_empty() && rng.chance(1, 3)) {
            let i = rng.below(local.len() as u64) as usize;
            verify_and_free(local.swap_remove(i), me);
        }
        // Give this thread's unused pages and the pool's free memory back
        // while other threads free into our pages.
        if release_every != 0 && index % release_every == 0 {
            zonal::release_free_memory();
        }
        // Verify and free what others sent us, some after a realloc by
        // this thread (which does not own the block's page).
        while let Ok(m) = inbox.try_recv() {
            let m = if rng.chance(1, 4) {
                realloc_foreign_owned(m, me, &mut rng)
            } else {
                m
            };
            verify_and_free(m, me);
            received += 1;
        }
    }
    for m in local.drain(..) {
        verify_and_free(m, me);
    }
    // Let the channels close once every worker is done sending, and free
    // what is still in flight to us.
    drop(senders);
    for m in inbox {
        verify_and_free(m, me);
        received += 1;
    }
    (sent, received)
}

fn run(threads: usize, ops: usize) {
    run_releasing(threads, ops, 0);
}

/// [`run`], each worker calling `release_free_memory` every
/// `release_every` operations (0: never).
fn run_releasing(threads: usize, ops: usize, release_every: usize) {
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..threads).map(|_| mpsc::channel::<Msg>()).unzip();
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(me, inbox)| {
            let senders = senders.clone();
            let start = start.clone();
            std::thread::Builder::new()
                .name(format!("stress-{me}"))
                .spawn(move || worker(me, threads, ops, senders, inbox, start, release_every))
                .unwrap()
        })
        .collect();
    drop(senders);
    let (mut sent, mut received) = (0, 0);
    for h in handles {
        let (s, r) = h.join().expect("worker panicked");
        sent += s;
        received += r;
    }
    assert_eq!(sent, received, "every block sent was received and freed");
    assert!(
        sent > threads * ops / 4,
        "cross-thread traffic too low: {sent}"
    );
}

#[test]
fn eight_threads_cross_thread_frees() {
    run(8, 6_000);
}

/// `release_free_memory` running in a loop on another thread (which also
/// allocates and frees, so it has pages of its own to give back), and
/// called by each of eight threads every 97 operations while they
/// allocate, free and send blocks to each other (so it collects remote
/// frees into their pages): every block's contents must survive, and
/// nothing may deadlock.
#[test]
fn release_free_memory_while_threads_allocate() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let releaser = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut rng = Rng::new(99);
            let mut calls = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let held: Vec<Vec<u8>> = (0..64)
                    .map(|i| vec![i as u8; random_size(&mut rng)])
                    .collect();
                zonal::release_free_memory();
                for (i, v) in held.iter().enumerate() {
                    assert!(v.iter().all(|&b| b == i as u8), "releaser's block changed");
                }
                drop(held);
                zonal::release_free_memory();
                calls += 2;
            }
            calls
        })
    };
    run_releasing(8, 3_000, 97);
    stop.store(true, Ordering::Relaxed);
    let calls = releaser.join().expect("releaser panicked");
    assert!(calls > 0);
}

#[test]
fn sixteen_threads_short_bursts() {
    // More threads than cores, started and stopped several times.
    for _ in 0..3 {
        run(16, 800);
    }
}

/// A producer/consumer pipeline: one thread allocates everything, the
/// others free it (all frees remote), while the producer keeps reusing its
/// pages (the remote frees must come back to it).
#[test]
fn producer_consumers() {
    let consumers = 8;
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..consumers)
        .map(|_| mpsc::sync_channel::<Msg>(256))
        .unzip();
    let handles: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(c, inbox)| {
            std::thread::spawn(move || {
                let mut n = 0usize;
                for m in inbox {
                    verify_and_free(m, c + 1);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut rng = Rng::new(77);
    let total = 60_000;
    for index in 0..total {
        let size = if rng.chance(1, 50) {
            rng.log_size(8 << 10, 200 << 10)
        } else {
            rng.range(16, 300)
        };
        let l = Layout::from_size_align(size, 16).unwrap();
        // SAFETY: non-zero size.
        let p = unsafe { Zonal.alloc(l) } as usize;
        assert!(p != 0);
        let s = seed(0, index, size);
        common::fill(bytes(p, size), s);
        senders[index % consumers]
            .send(Msg {
                addr: p,
                size,
                align: 16,
                seed: s,
                from: 0,
            })
            .unwrap();
    }
    drop(senders);
    let freed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(freed, total);
    // The producer's memory was recycled rather than grown without bound:
    // at most 8 x 256 blocks were in flight at any time.
    let s = zonal::stats();
    let manual = s.zone(zonal::Zone::Manual);
    assert!(
        manual.committed_bytes < 512 << 20,
        "committed {} bytes after a pipeline with a bounded number of blocks in flight",
        manual.committed_bytes
    );
}

/// Owners exit while other threads free into their (full) pages: the
/// hand-over of remote frees must not race with the owner's exit.
#[test]
fn remote_frees_race_owner_exit() {
    let consumers = 4;
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..consumers).map(|_| mpsc::channel::<Vec<Msg>>()).unzip();
    let consumer_handles: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(c, inbox)| {
            std::thread::spawn(move || {
                let mut n = 0usize;
                for batch in inbox {
                    for m in batch {
                        verify_and_free(m, 100 + c);
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let producers = 160;
    let per_producer = 1_500;
    for wave in 0..producers / 8 {
        let handles: Vec<_> = (0..8)
            .map(|k| {
                let senders = senders.clone();
                let me = wave * 8 + k;
                std::thread::spawn(move || {
                    let mut rng = Rng::new(me as u64);
                    // Few sizes, so the producer's pages fill up and are
                    // full when the remote frees arrive.
                    let sizes = [32usize, 48, 256, 3000, 70_000];
                    let mut batch = Vec::with_capacity(100);
                    for index in 0..per_producer {
                        let size = sizes[rng.below(sizes.len() as u64) as usize];
                        let l = Layout::from_size_align(size, 16).unwrap();
                        // SAFETY: non-zero size.
                        let p = unsafe { Zonal.alloc(l) } as usize;
                        assert!(p != 0);
                        let s = seed(me, index, size);
                        common::fill(bytes(p, size), s);
                        batch.push(Msg {
                            addr: p,
                            size,
                            align: 16,
                            seed: s,
                            from: me,
                        });
                        if batch.len() == 100 {
                            let to = rng.below(senders.len() as u64) as usize;
                            senders[to].send(std::mem::take(&mut batch)).unwrap();
                        }
                    }
                    if !batch.is_empty() {
                        senders[0].send(batch).unwrap();
                    }
                    // Exit at once, while the consumers are still freeing.
                })
            })
            .collect();
        for h in handles {
            h.join().expect("producer panicked");
        }
    }
    drop(senders);
    let freed: usize = consumer_handles
        .into_iter()
        .map(|h| h.join().expect("consumer panicked"))
        .sum();
    assert_eq!(freed, producers * per_producer);
}
