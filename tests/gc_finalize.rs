//! Finalization and weak handles (issue 3, item 8e): `Drop` of unreachable
//! `Gc` values runs exactly once, in topological order (if A points to B,
//! A's drop runs first and B is still intact for it), on the thread that
//! created the value; cycles of finalizable objects are never finalized
//! (and are counted); `GcWeak` upgrades while its target lives and fails
//! for good once the target was found unreachable.
//!
//! Every test runs in a child process of its own (statistics, the log of
//! drops).

#[global_allocator]
static A: zonal::Zonal = zonal::Zonal;

mod common;
mod gc_common;

use gc_common::{churn, clobber_stack, isolated, Payload};
use std::cell::Cell;
use std::collections::HashSet;
use std::hint::black_box;
use std::sync::{mpsc, Mutex};
use std::time::Duration;
use zonal::{gc, Gc, GcWeak};

const TIMEOUT: Duration = Duration::from_secs(120);

fn run(name: &str, body: fn()) {
    isolated(name, &[], TIMEOUT, body);
}

fn tid() -> i32 {
    // SAFETY: gettid has no preconditions (and works during thread exit,
    // unlike `std::thread::current`).
    unsafe { libc::gettid() }
}

/// What a drop saw.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Dropped {
    /// (chain or group, index)
    id: (u64, u64),
    thread: i32,
    /// Everything it read through its `Gc` fields was intact.
    intact: bool,
}

static LOG: Mutex<Vec<Dropped>> = Mutex::new(Vec::new());

fn log() -> Vec<Dropped> {
    LOG.lock().unwrap().clone()
}

fn payload_seed(chain: u64, index: u64) -> u64 {
    chain * 1000 + index
}

// ---- order -------------------------------------------------------------------

/// A link of a chain: `next` is finalizable too (finalized after this one),
/// `data` is a plain (non-finalizable) object only this link reaches.
struct Link {
    chain: u64,
    index: u64,
    check: u64,
    data: Gc<Payload>,
    next: Option<Gc<Link>>,
}

fn link_check(chain: u64, index: u64) -> u64 {
    (chain << 32 | index) ^ 0xA5A5_A5A5
}

impl Drop for Link {
    fn drop(&mut self) {
        // Read through both handles: they must still be intact.
        let mut intact = self.check == link_check(self.chain, self.index)
            && self.data.intact(payload_seed(self.chain, self.index));
        if let Some(next) = self.next {
            intact &= next.check == link_check(next.chain, next.index)
                && next.index == self.index + 1
                && next.data.intact(payload_seed(next.chain, next.index));
        }
        LOG.lock().unwrap().push(Dropped {
            id: (self.chain, self.index),
            thread: tid(),
            intact,
        });
    }
}

const CHAINS: u64 = 16;
const CHAIN_LEN: u64 = 6;

/// Chains `c0 -> c1 -> ... -> c5`, unreachable once this returns; weak
/// handles of their plain data objects.
#[inline(never)]
fn make_chains() -> Vec<GcWeak<Payload>> {
    let mut data_weak = Vec::new();
    for chain in 0..CHAINS {
        let mut next = None;
        for index in (0..CHAIN_LEN).rev() {
            let data = Gc::new(Payload::new(payload_seed(chain, index)));
            data_weak.push(Gc::downgrade(data));
            next = Some(Gc::new(Link {
                chain,
                index,
                check: link_check(chain, index),
                data,
                next,
            }));
        }
        black_box(next);
    }
    clobber_stack(2);
    data_weak
}

fn finalizers_run_once_in_topological_order_body() {
    let start = zonal::stats().gc;
    let data_weak = make_chains();
    clobber_stack(8);
    let mut collections = 0;
    // Each collection finalizes (at most) the head of what is left of each
    // chain, so a chain of 6 needs 6 collections.
    while collections < 40 {
        gc::collect();
        collections += 1;
        let done = log().iter().filter(|d| d.id.1 == CHAIN_LEN - 1).count();
        if done == CHAINS as usize {
            break;
        }
    }
    // More collections: nothing runs twice.
    for _ in 0..5 {
        gc::collect();
        assert_eq!(gc::run_finalizers(), 0);
    }
    let log = log();
    let mut seen = HashSet::new();
    for d in &log {
        assert!(seen.insert(d.id), "finalizer of {:?} ran twice", d.id);
        assert!(d.intact, "{:?}: its drop read overwritten memory", d.id);
        assert_eq!(d.thread, tid(), "{:?}: dropped on another thread", d.id);
    }
    let mut complete = 0;
    for chain in 0..CHAINS {
        let order: Vec<u64> = log
            .iter()
            .filter(|d| d.id.0 == chain)
            .map(|d| d.id.1)
            .collect();
        // Whatever ran is a prefix of the chain, in order (a stale word may
        // keep a suffix alive, never make a later link run first).
        assert_eq!(
            order,
            (0..order.len() as u64).collect::<Vec<_>>(),
            "chain {chain} finalized out of order"
        );
        if order.len() as u64 == CHAIN_LEN {
            complete += 1;
        }
    }
    assert!(
        complete >= CHAINS * 3 / 4,
        "only {complete} of {CHAINS} chains were finalized completely in {collections} collections"
    );
    let end = zonal::stats().gc;
    assert_eq!(
        end.finalizers_run - start.finalizers_run,
        log.len() as u64,
        "finalizers_run does not match the drops that ran"
    );
    // The plain objects the links held are freed after their links.
    churn(1);
    let left = gc_common::alive(&data_weak);
    assert!(
        left <= data_weak.len() / 4,
        "{left} of {} data objects survived their finalized links",
        data_weak.len()
    );
}

#[test]
fn finalizers_run_once_in_topological_order() {
    run(
        "finalizers_run_once_in_topological_order",
        finalizers_run_once_in_topological_order_body,
    );
}

// ---- never inside an allocation ------------------------------------------------

#[inline(never)]
fn make_single_links(chain: u64, count: u64) {
    for index in 0..count {
        black_box(Gc::new(Link {
            chain,
            index,
            check: link_check(chain, index),
            data: Gc::new(Payload::new(payload_seed(chain, index))),
            next: None,
        }));
    }
    clobber_stack(2);
}

/// Automatic collections find finalizable objects unreachable, but the
/// finalizers wait for `run_finalizers` (or `collect`) on their thread.
fn finalizers_never_run_inside_allocation_body() {
    gc::set_threshold(1 << 20);
    let start = zonal::stats().gc;
    make_single_links(1, 256);
    clobber_stack(8);
    for i in 0..65_536u64 {
        black_box(Gc::new(Payload::new(i))); // 16 MiB
    }
    let mid = zonal::stats().gc;
    assert!(
        mid.collections >= start.collections + 4,
        "no automatic collections"
    );
    assert!(log().is_empty(), "a finalizer ran inside an allocation");
    assert_eq!(mid.finalizers_run, start.finalizers_run);
    let ran = gc::run_finalizers();
    assert!(ran >= 192, "only {ran} of 256 finalizers ready");
    assert_eq!(log().len(), ran);
    assert!(log().iter().all(|d| d.intact && d.thread == tid()));
    assert_eq!(gc::run_finalizers(), 0, "the queue was not emptied");
}

#[test]
fn finalizers_never_run_inside_allocation() {
    run(
        "finalizers_never_run_inside_allocation",
        finalizers_never_run_inside_allocation_body,
    );
}

// ---- cycles --------------------------------------------------------------------

/// Finalizable, with a mutable edge (single-threaded: `Cell`).
struct CycleNode {
    group: u64,
    index: u64,
    edge: Cell<Option<Gc<CycleNode>>>,
    plain: Cell<Option<Gc<Plain>>>,
}

/// Not finalizable: a plain object on a cycle (its edge is only read by
/// the collector).
struct Plain {
    #[allow(dead_code)]
    edge: Cell<Option<Gc<CycleNode>>>,
}

impl Drop for CycleNode {
    fn drop(&mut self) {
        LOG.lock().unwrap().push(Dropped {
            id: (self.group, self.index),
            thread: tid(),
            intact: true,
        });
    }
}

fn node(group: u64, index: u64) -> Gc<CycleNode> {
    Gc::new(CycleNode {
        group,
        index,
        edge: Cell::new(None),
        plain: Cell::new(None),
    })
}

const TWO_CYCLES: u64 = 0;
const SELF_CYCLES: u64 = 1;
const THROUGH_PLAIN: u64 = 2;
const NO_CYCLE: u64 = 3;
const PER_GROUP: u64 = 32;

/// 32 each of: A <-> B, A -> A, A -> plain -> A, and (the control) a
/// finalizable object on no cycle.
#[inline(never)]
fn make_cycles() {
    for i in 0..PER_GROUP {
        let (a, b) = (node(TWO_CYCLES, 2 * i), node(TWO_CYCLES, 2 * i + 1));
        a.edge.set(Some(b));
        b.edge.set(Some(a));
        let s = node(SELF_CYCLES, i);
        s.edge.set(Some(s));
        let t = node(THROUGH_PLAIN, i);
        t.plain.set(Some(Gc::new(Plain {
            edge: Cell::new(Some(t)),
        })));
        black_box(node(NO_CYCLE, i));
    }
    clobber_stack(2);
}

fn cycles_are_not_finalized_body() {
    make_cycles();
    clobber_stack(8);
    for _ in 0..5 {
        gc::collect();
    }
    let stats = zonal::stats().gc;
    let log = log();
    let in_group = |g| log.iter().filter(|d| d.id.0 == g).count() as u64;
    assert_eq!(in_group(TWO_CYCLES), 0, "a two-object cycle was finalized");
    assert_eq!(in_group(SELF_CYCLES), 0, "a self-cycle was finalized");
    assert_eq!(
        in_group(THROUGH_PLAIN),
        0,
        "a cycle through a plain object was finalized"
    );
    assert!(
        in_group(NO_CYCLE) >= PER_GROUP * 3 / 4,
        "only {} of {PER_GROUP} acyclic objects finalized (the control)",
        in_group(NO_CYCLE)
    );
    // 96 cycles, each counted once (or once per member), by every
    // collection that still finds them.
    assert!(
        stats.finalizable_cycles >= 3 * PER_GROUP * 3 / 4,
        "finalizable_cycles = {} with {} unreachable cycles",
        stats.finalizable_cycles,
        3 * PER_GROUP
    );
    assert!(stats.finalizers_pending >= 4 * PER_GROUP * 3 / 4);
    // Dropping the world around them changes nothing: still never run.
    churn(1);
    assert_eq!(
        self::log().len() as u64,
        in_group(NO_CYCLE),
        "finalizers ran later"
    );
}

#[test]
fn cycles_are_not_finalized() {
    run("cycles_are_not_finalized", cycles_are_not_finalized_body);
}

// ---- the creating thread ----------------------------------------------------------

/// Thread-safe finalizable value (so `GcWeak` handles may be sent).
struct Owned {
    id: u64,
}

impl Drop for Owned {
    fn drop(&mut self) {
        LOG.lock().unwrap().push(Dropped {
            id: (self.id >> 32, self.id & 0xFFFF_FFFF),
            thread: tid(),
            intact: true,
        });
    }
}

#[inline(never)]
fn make_owned(group: u64, count: u64) -> Vec<GcWeak<Owned>> {
    let weak = (0..count)
        .map(|i| {
            Gc::downgrade(Gc::new(Owned {
                id: group << 32 | i,
            }))
        })
        .collect();
    clobber_stack(2);
    weak
}

static SLOTS: Mutex<Vec<Gc<Owned>>> = Mutex::new(Vec::new());

fn finalizers_run_on_the_creating_thread_body() {
    const COUNT: u64 = 64;
    // 1. A thread's objects become unreachable while it waits: the main
    // thread's collections and `run_finalizers` do not run them; the
    // thread's own `run_finalizers` does.
    let (to_main, from_thread) = mpsc::channel();
    let (to_thread, from_main) = mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        let weak = make_owned(1, COUNT);
        clobber_stack(8);
        to_main.send((tid(), weak)).unwrap();
        from_main.recv().unwrap();
        let ran = gc::run_finalizers();
        to_main.send((ran as i32, Vec::new())).unwrap();
        from_main.recv().unwrap();
    });
    let (worker_tid, weak) = from_thread.recv().unwrap();
    let before = zonal::stats().gc;
    for _ in 0..3 {
        gc::collect();
        assert_eq!(
            gc::run_finalizers(),
            0,
            "another thread's finalizers ran here"
        );
    }
    assert!(log().is_empty(), "another thread's finalizers ran on main");
    let pending = zonal::stats().gc;
    assert_eq!(pending.finalizers_run, before.finalizers_run);
    // Unreachable objects' weak handles fail at once, even while their
    // finalizers wait.
    let left = gc_common::alive(&weak);
    assert!(
        left <= COUNT as usize / 4,
        "{left} weak handles still upgrade"
    );
    to_thread.send(()).unwrap();
    let (ran, _) = from_thread.recv().unwrap();
    assert!(
        ran as u64 >= COUNT * 3 / 4,
        "the creating thread ran {ran} finalizers"
    );
    let log1 = log();
    assert_eq!(log1.len(), ran as usize);
    assert!(
        log1.iter().all(|d| d.thread == worker_tid),
        "finalizers ran on the wrong thread: {log1:?}"
    );
    to_thread.send(()).unwrap();
    worker.join().unwrap();

    // 2. Finalizers that are ready when their thread exits run in its exit
    // hook, on that thread.
    let (to_main, from_thread) = mpsc::channel();
    let (to_thread, from_main) = mpsc::channel::<()>();
    let exiting = std::thread::spawn(move || {
        make_owned(2, COUNT);
        clobber_stack(8);
        to_main.send(tid()).unwrap();
        from_main.recv().unwrap();
        // Exits without calling `run_finalizers`.
    });
    let exiting_tid = from_thread.recv().unwrap();
    gc::collect();
    gc::collect();
    assert!(
        log().iter().all(|d| d.id.0 != 2),
        "ran before the thread exited"
    );
    to_thread.send(()).unwrap();
    exiting.join().unwrap();
    let log2: Vec<_> = log().into_iter().filter(|d| d.id.0 == 2).collect();
    assert!(
        log2.len() as u64 >= COUNT * 3 / 4,
        "only {} finalizers ran at thread exit",
        log2.len()
    );
    assert!(log2.iter().all(|d| d.thread == exiting_tid));

    // 3. Objects still reachable when their thread exits are freed later
    // without their finalizer (counted as skipped).
    let before = zonal::stats().gc;
    // The vector's buffer comes from this thread, which frees it below: a
    // block freed by another thread than its page's owner stays allocated
    // (and scanned) until the owner takes it back, which a dead thread
    // never does.
    SLOTS.lock().unwrap().reserve_exact(COUNT as usize);
    std::thread::spawn(|| {
        let objects = (0..COUNT).map(|i| Gc::new(Owned { id: 3 << 32 | i }));
        SLOTS.lock().unwrap().extend(objects);
    })
    .join()
    .unwrap();
    *SLOTS.lock().unwrap() = Vec::new();
    clobber_stack(8);
    gc::collect();
    gc::collect();
    let after = zonal::stats().gc;
    assert!(
        log().iter().all(|d| d.id.0 != 3),
        "an exited thread's finalizer ran"
    );
    let skipped = after.finalizers_skipped - before.finalizers_skipped;
    assert!(
        skipped >= COUNT * 3 / 4,
        "only {skipped} finalizers of an exited thread's objects counted as skipped"
    );
}

#[test]
fn finalizers_run_on_the_creating_thread() {
    run(
        "finalizers_run_on_the_creating_thread",
        finalizers_run_on_the_creating_thread_body,
    );
}

// ---- weak handles ------------------------------------------------------------------

#[inline(never)]
fn make_weak_only(count: u64) -> Vec<GcWeak<Payload>> {
    let weak = (0..count)
        .map(|i| Gc::downgrade(Gc::new(Payload::new(9000 + i))))
        .collect();
    clobber_stack(2);
    weak
}

fn weak_upgrades_while_alive_and_fails_after_collection_body() {
    let strong: Vec<Gc<Payload>> = (0..64).map(|i| Gc::new(Payload::new(i))).collect();
    let weak: Vec<GcWeak<Payload>> = strong.iter().map(|g| Gc::downgrade(*g)).collect();
    let clones: Vec<GcWeak<Payload>> = weak.to_vec();
    churn(2);
    for (i, (w, c)) in weak.iter().zip(&clones).enumerate() {
        let up = w.upgrade().expect("weak handle of a live object failed");
        assert!(Gc::ptr_eq(up, strong[i]));
        assert!(up.intact(i as u64));
        assert!(Gc::ptr_eq(c.upgrade().unwrap(), strong[i]));
    }
    drop(clones);
    assert_eq!(gc_common::alive(&weak), 64, "dropping clones broke handles");
    // Objects that only weak handles refer to are collected; then every
    // upgrade fails, for good.
    let only_weak = make_weak_only(256);
    let clones: Vec<GcWeak<Payload>> = only_weak.to_vec();
    clobber_stack(8);
    churn(2);
    let left = gc_common::alive(&only_weak);
    assert!(left <= 64, "{left} of 256 weakly held objects survived");
    for (w, c) in only_weak.iter().zip(&clones) {
        assert_eq!(
            w.upgrade().is_some(),
            c.upgrade().is_some(),
            "clones disagree"
        );
    }
    let dead: Vec<usize> = (0..256)
        .filter(|&i| only_weak[i].upgrade().is_none())
        .collect();
    churn(1);
    for &i in &dead {
        assert!(
            only_weak[i].upgrade().is_none(),
            "a cleared weak handle came back"
        );
    }
    // The strong ones are still fine.
    for (i, w) in weak.iter().enumerate() {
        assert!(w.upgrade().unwrap().intact(i as u64));
    }
    drop(strong);
}

#[test]
fn weak_upgrades_while_alive_and_fails_after_collection() {
    run(
        "weak_upgrades_while_alive_and_fails_after_collection",
        weak_upgrades_while_alive_and_fails_after_collection_body,
    );
}
