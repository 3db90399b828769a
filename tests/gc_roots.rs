//! Roots of the collector: a `Gc` reachable from only one place survives
//! collections with its contents intact, for every kind of place the
//! collector must scan (issue 3, item 8a), and is reclaimed once that place
//! lets go of it.
//!
//! Every test follows the same plan, in a child process of its own:
//! put 16 objects (each a [`Payload`] whose every word is checked) in the
//! place, in a function of their own, so no other copy of a pointer stays
//! around; make 64 *hidden* objects (only XOR-ed addresses and weak
//! handles refer to them); churn: allocate 12+ MiB of garbage of the same
//! size and collect after every 4 MiB, so a block freed by mistake would be
//! reused and overwritten; then check that the hidden objects were
//! reclaimed (the negative control: the collections did free what was
//! unreachable) and that the objects in the place are intact. Where the
//! place can be emptied, the test empties it, churns again and checks that
//! the objects are gone now (the place was what kept them).

#[global_allocator]
static A: zonal::Zonal = zonal::Zonal;

mod common;
mod gc_common;

use allocator_api2::vec::Vec as AVec;
use gc_common::{churn, clobber_stack, fresh, hidden, intact_at, isolated, word, Payload};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use zonal::{gc, Gc, GcAtomicZone, GcWeak, GcZone};

/// Objects kept in each place.
const N: usize = 16;
const TIMEOUT: Duration = Duration::from_secs(120);

fn run(name: &str, body: fn()) {
    isolated(name, &[], TIMEOUT, body);
}

/// Weak handles of `objects` (they do not keep anything alive).
fn weak_of(objects: &[Gc<Payload>]) -> Vec<GcWeak<Payload>> {
    objects.iter().map(|g| Gc::downgrade(*g)).collect()
}

/// `N` fresh objects with seeds `base..base + N` and their weak handles.
#[inline(never)]
fn make(base: u64) -> (Vec<Gc<Payload>>, Vec<GcWeak<Payload>>) {
    let objects: Vec<_> = (0..N as u64).map(|i| fresh(base + i)).collect();
    let weak = weak_of(&objects);
    (objects, weak)
}

/// Asserts that the payload at each pointer `i` holds seed `base + i`.
fn check_all(pointers: impl IntoIterator<Item = *const Payload>, base: u64, what: &str) {
    let mut count = 0;
    for (i, p) in pointers.into_iter().enumerate() {
        // SAFETY: the place under test keeps the object alive (that is what
        // the test checks; a failure shows up as a wrong word or a crash).
        let ok = unsafe { intact_at(p, base + i as u64) };
        assert!(ok, "{what}: object {i} was freed and overwritten");
        count += 1;
    }
    assert_eq!(count, N, "{what}: objects missing");
}

/// The negative control: hidden objects made now are reclaimed by `churn`.
fn control_and_churn(what: &str) {
    let control = hidden(64, 0xC0_0000);
    churn(3);
    control.assert_mostly_reclaimed(what);
}

/// Asserts that most objects whose weak handles are given are gone (after
/// their place let go of them and a churn).
fn assert_gone(weak: &[GcWeak<Payload>], what: &str) {
    let left = gc_common::alive(weak);
    assert!(
        left <= weak.len() / 4,
        "{what}: {left} of {} objects survived after the place let go of them",
        weak.len()
    );
}

// ---- a local ---------------------------------------------------------------

/// Holds the objects in a local array only, churns, checks; the frame dies
/// when this returns.
#[inline(never)]
fn hold_in_locals(base: u64) -> Vec<GcWeak<Payload>> {
    let objects: [Gc<Payload>; N] = std::array::from_fn(|i| fresh(base + i as u64));
    let objects = black_box(objects);
    let weak = weak_of(&objects);
    control_and_churn("local");
    check_all(objects.iter().map(|g| Gc::as_ptr(*g)), base, "local");
    weak
}

fn in_a_local_body() {
    let weak = hold_in_locals(100);
    clobber_stack(8);
    churn(2);
    assert_gone(&weak, "local (after its frame died)");
}

#[test]
fn in_a_local() {
    run("in_a_local", in_a_local_body);
}

// ---- statics ---------------------------------------------------------------

static STATIC_MUTEX: Mutex<Vec<Gc<Payload>>> = Mutex::new(Vec::new());
static STATIC_SLOTS: [Mutex<Option<Gc<Payload>>>; N] = [const { Mutex::new(None) }; N];
static STATIC_POINTERS: [AtomicPtr<Payload>; N] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; N];

#[inline(never)]
fn install_statics(base: u64) -> Vec<GcWeak<Payload>> {
    let (objects, mut weak) = make(base);
    for (slot, g) in STATIC_SLOTS.iter().zip(&objects) {
        *slot.lock().unwrap() = Some(*g);
    }
    let (objects, more) = make(base + 100);
    weak.extend(more);
    for (slot, g) in STATIC_POINTERS.iter().zip(&objects) {
        slot.store(Gc::as_ptr(*g) as *mut Payload, Ordering::Relaxed);
    }
    weak
}

fn in_a_static_body() {
    let weak = install_statics(200);
    clobber_stack(4);
    control_and_churn("static");
    let slots = STATIC_SLOTS
        .iter()
        .map(|s| Gc::as_ptr(s.lock().unwrap().unwrap()));
    check_all(slots, 200, "static Mutex<Option<Gc>>");
    let pointers = STATIC_POINTERS
        .iter()
        .map(|p| p.load(Ordering::Relaxed).cast_const());
    check_all(pointers, 300, "static AtomicPtr");
    for slot in &STATIC_SLOTS {
        *slot.lock().unwrap() = None;
    }
    for p in &STATIC_POINTERS {
        p.store(std::ptr::null_mut(), Ordering::Relaxed);
    }
    churn(2);
    assert_gone(&weak, "statics");
    // A static whose heap buffer holds the handles: the buffer is scanned
    // as live memory of the manual zone.
    let (objects, weak) = make(400);
    *STATIC_MUTEX.lock().unwrap() = objects;
    churn(2);
    let guard = STATIC_MUTEX.lock().unwrap();
    check_all(
        guard.iter().map(|g| Gc::as_ptr(*g)),
        400,
        "static Mutex<Vec<Gc>>",
    );
    drop(guard);
    // `clear` would keep the buffer, and the stale words in it.
    *STATIC_MUTEX.lock().unwrap() = Vec::new();
    churn(2);
    assert_gone(&weak, "static Mutex<Vec<Gc>>");
}

#[test]
fn in_a_static() {
    run("in_a_static", in_a_static_body);
}

// ---- thread-locals -----------------------------------------------------------

/// A lazily initialised thread-local with a destructor (std registers it
/// on first use) and one with a const initialiser, both in static TLS.
struct LazySlots([Option<Gc<Payload>>; N]);

impl Drop for LazySlots {
    fn drop(&mut self) {
        black_box(&self.0);
    }
}

thread_local! {
    static TLS_CONST: [Cell<Option<Gc<Payload>>>; N] = const { [const { Cell::new(None) }; N] };
    // Lazy on purpose (the other kind of thread-local storage).
    #[allow(clippy::missing_const_for_thread_local)]
    static TLS_LAZY: RefCell<LazySlots> = RefCell::new(LazySlots([None; N]));
}

#[inline(never)]
fn install_tls(base: u64) -> Vec<GcWeak<Payload>> {
    let (objects, mut weak) = make(base);
    TLS_CONST.with(|slots| {
        for (slot, g) in slots.iter().zip(&objects) {
            slot.set(Some(*g));
        }
    });
    let (objects, more) = make(base + 100);
    weak.extend(more);
    TLS_LAZY.with(|slots| {
        for (slot, g) in slots.borrow_mut().0.iter_mut().zip(&objects) {
            *slot = Some(*g);
        }
    });
    weak
}

fn check_tls(base: u64, what: &str) {
    let consts: Vec<_> =
        TLS_CONST.with(|slots| slots.iter().map(|s| Gc::as_ptr(s.get().unwrap())).collect());
    check_all(consts, base, &format!("{what}: const thread_local!"));
    let lazies: Vec<_> = TLS_LAZY.with(|slots| {
        let slots = slots.borrow();
        slots.0.iter().map(|s| Gc::as_ptr(s.unwrap())).collect()
    });
    check_all(lazies, base + 100, &format!("{what}: lazy thread_local!"));
}

fn clear_tls() {
    TLS_CONST.with(|slots| slots.iter().for_each(|s| s.set(None)));
    TLS_LAZY.with(|slots| slots.borrow_mut().0 = [None; N]);
}

const MAIN_THREAD_ENV: &str = "ZONAL_GC_TEST_MAIN_THREAD_TLS";
const MAIN_THREAD_DONE: &str = "main-thread thread_local test passed";

/// Runs before `main` (an `.init_array` constructor), on the process's main
/// thread: the test harness runs every test on a thread of its own, so this
/// is the only way to put a `Gc` in the main thread's thread-locals.
extern "C" fn main_thread_hook() {
    if std::env::var_os(MAIN_THREAD_ENV).is_none() {
        return;
    }
    let code = match std::panic::catch_unwind(main_thread_tls_body) {
        Ok(()) => {
            println!("{MAIN_THREAD_DONE}");
            0
        }
        Err(_) => 101,
    };
    std::process::exit(code);
}

#[used]
#[link_section = ".init_array"]
static MAIN_THREAD_HOOK: extern "C" fn() = main_thread_hook;

fn main_thread_tls_body() {
    // SAFETY: getpid and gettid have no preconditions.
    assert_eq!(
        unsafe { libc::getpid() },
        unsafe { libc::gettid() },
        "not the main thread"
    );
    let weak = install_tls(500);
    clobber_stack(4);
    control_and_churn("main thread TLS");
    check_tls(500, "main thread");
    clear_tls();
    churn(2);
    assert_gone(&weak, "main thread TLS");
}

#[test]
fn in_a_thread_local_of_the_main_thread() {
    assert!(
        std::env::var_os(MAIN_THREAD_ENV).is_none(),
        "the constructor did not run the test"
    );
    let out = common::run_child(
        "in_a_thread_local_of_the_main_thread",
        &[(MAIN_THREAD_ENV, "1")],
        TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(MAIN_THREAD_DONE),
        "main-thread TLS child failed: {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A spawned thread puts objects in its thread-locals and waits (blocked
/// on a channel) while the main thread collects: the stopped thread's TLS
/// is a root. Then it collects itself (its own TLS is a root too).
fn in_a_thread_local_of_a_spawned_thread_body() {
    let (to_main, from_thread) = mpsc::channel::<Vec<GcWeak<Payload>>>();
    let (to_thread, from_main) = mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let weak = install_tls(600);
        clobber_stack(4);
        to_main.send(weak).unwrap();
        from_main.recv().unwrap();
        check_tls(600, "spawned thread, main collected");
        churn(2);
        check_tls(600, "spawned thread, it collected itself");
        clear_tls();
        clobber_stack(4);
        to_main.send(Vec::new()).unwrap();
        from_main.recv().unwrap();
    });
    let weak = from_thread.recv().unwrap();
    control_and_churn("spawned thread TLS");
    to_thread.send(()).unwrap();
    from_thread.recv().unwrap();
    churn(2);
    assert_gone(&weak, "spawned thread TLS (cleared, thread alive)");
    to_thread.send(()).unwrap();
    thread.join().expect("the spawned thread failed");
}

#[test]
fn in_a_thread_local_of_a_spawned_thread() {
    run(
        "in_a_thread_local_of_a_spawned_thread",
        in_a_thread_local_of_a_spawned_thread_body,
    );
}

// ---- std collections (the live memory of the manual zone) -------------------

fn in_a_std_vec_body() {
    let (objects, weak) = make(700);
    control_and_churn("std Vec");
    check_all(objects.iter().map(|g| Gc::as_ptr(*g)), 700, "std Vec");
    drop(objects);
    churn(2);
    assert_gone(&weak, "std Vec (dropped)");
}

#[test]
fn in_a_std_vec() {
    run("in_a_std_vec", in_a_std_vec_body);
}

#[inline(never)]
fn make_map(base: u64) -> (HashMap<u64, Gc<Payload>>, Vec<GcWeak<Payload>>) {
    let (objects, weak) = make(base);
    let map = objects
        .into_iter()
        .enumerate()
        .map(|(i, g)| (i as u64, g))
        .collect();
    (map, weak)
}

fn in_a_std_hash_map_body() {
    let (mut map, weak) = make_map(800);
    // Lots of other entries, so the table has been reallocated.
    for i in N as u64..5000 {
        map.insert(i, fresh(i));
    }
    control_and_churn("std HashMap");
    check_all(
        (0..N as u64).map(|i| Gc::as_ptr(map[&i])),
        800,
        "std HashMap",
    );
    for i in N as u64..5000 {
        assert!(map[&i].intact(i), "std HashMap: entry {i} overwritten");
    }
    for i in 0..N as u64 {
        map.remove(&i);
    }
    // The removed values' words stay in the table's unused slots until
    // overwritten: rebuild the table.
    map.shrink_to_fit();
    let map = map.into_iter().collect::<HashMap<_, _>>();
    churn(2);
    assert_gone(&weak, "std HashMap (removed)");
    drop(map);
}

#[test]
fn in_a_std_hash_map() {
    run("in_a_std_hash_map", in_a_std_hash_map_body);
}

/// Each handle in a `Box` of its own (the boxes are the place under test).
#[allow(clippy::vec_box)]
#[inline(never)]
fn make_boxes(base: u64) -> (Vec<Box<Gc<Payload>>>, Vec<GcWeak<Payload>>) {
    let (objects, weak) = make(base);
    (objects.into_iter().map(Box::new).collect(), weak)
}

fn in_a_box_body() {
    let (boxes, weak) = make_boxes(900);
    control_and_churn("Box");
    check_all(boxes.iter().map(|b| Gc::as_ptr(**b)), 900, "Box<Gc>");
    drop(boxes);
    churn(2);
    assert_gone(&weak, "Box (dropped)");
}

#[test]
fn in_a_box() {
    run("in_a_box", in_a_box_body);
}

type SharedSlots = Arc<Vec<Mutex<Option<Gc<Payload>>>>>;

#[inline(never)]
fn make_mutexes(base: u64) -> (SharedSlots, Vec<GcWeak<Payload>>) {
    let (objects, weak) = make(base);
    let shared = Arc::new(objects.into_iter().map(|g| Mutex::new(Some(g))).collect());
    (shared, weak)
}

fn in_a_mutex_body() {
    let (shared, weak) = make_mutexes(1000);
    // Another thread owns a clone of the Arc and reads under the locks
    // while collections run.
    let reader = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            for _ in 0..200 {
                for (i, m) in shared.iter().enumerate() {
                    let g = m.lock().unwrap().unwrap();
                    assert!(g.intact(1000 + i as u64), "Mutex: object {i} overwritten");
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    control_and_churn("Mutex");
    reader.join().expect("reader thread failed");
    let pointers: Vec<_> = shared
        .iter()
        .map(|m| Gc::as_ptr(m.lock().unwrap().unwrap()))
        .collect();
    check_all(pointers, 1000, "Arc<Mutex<Option<Gc>>>");
    for m in shared.iter() {
        *m.lock().unwrap() = None;
    }
    churn(2);
    assert_gone(&weak, "Mutex (emptied)");
}

#[test]
fn in_a_mutex() {
    run("in_a_mutex", in_a_mutex_body);
}

#[inline(never)]
fn send_all(base: u64, tx: &mpsc::Sender<Gc<Payload>>, sync_tx: &mpsc::SyncSender<Gc<Payload>>) {
    let (objects, _) = make(base);
    for g in objects {
        tx.send(g).unwrap();
    }
    let (objects, _) = make(base + 100);
    for g in objects {
        sync_tx.send(g).unwrap();
    }
}

fn in_a_channel_body() {
    let (tx, rx) = mpsc::channel();
    let (sync_tx, sync_rx) = mpsc::sync_channel(N);
    send_all(1100, &tx, &sync_tx);
    clobber_stack(4);
    control_and_churn("channel");
    let received: Vec<_> = (0..N).map(|_| Gc::as_ptr(rx.recv().unwrap())).collect();
    check_all(received, 1100, "mpsc::channel");
    let received: Vec<_> = (0..N)
        .map(|_| Gc::as_ptr(sync_rx.recv().unwrap()))
        .collect();
    check_all(received, 1200, "mpsc::sync_channel");
}

#[test]
fn in_a_channel() {
    run("in_a_channel", in_a_channel_body);
}

// ---- an explicit root --------------------------------------------------------

#[inline(never)]
fn fill_malloc_buffer(buffer: *mut usize, base: u64) -> Vec<GcWeak<Payload>> {
    let (objects, weak) = make(base);
    for (i, g) in objects.iter().enumerate() {
        // SAFETY: the buffer holds `N` words.
        unsafe { buffer.add(i).write(Gc::as_ptr(*g) as usize) };
    }
    weak
}

fn in_an_explicit_root_body() {
    let bytes = N * std::mem::size_of::<usize>();
    // SAFETY: plain malloc; freed at the end.
    let buffer = unsafe { libc::malloc(bytes) }.cast::<usize>();
    assert!(!buffer.is_null());
    // SAFETY: the buffer stays allocated (readable) until after
    // `remove_root`.
    unsafe { gc::add_root(buffer.cast(), bytes) }.unwrap();
    let weak = fill_malloc_buffer(buffer, 1300);
    clobber_stack(4);
    control_and_churn("explicit root");
    // SAFETY: the buffer holds `N` words.
    let pointers = (0..N).map(|i| unsafe { buffer.add(i).read() } as *const Payload);
    check_all(pointers, 1300, "explicit root (malloc buffer)");
    assert!(gc::remove_root(buffer.cast()));
    assert!(!gc::remove_root(buffer.cast()), "removed twice");
    // The buffer still holds the pointers, but the collector no longer
    // looks at it: memory from `libc::malloc` is not a root by itself.
    churn(2);
    assert_gone(&weak, "malloc buffer after remove_root");
    // SAFETY: allocated above, no longer a root.
    unsafe { libc::free(buffer.cast()) };
}

#[test]
fn in_an_explicit_root() {
    run("in_an_explicit_root", in_an_explicit_root_body);
}

// ---- interior pointers -------------------------------------------------------

/// Offset (bytes) of the interior pointer kept for object `i`: spread over
/// the whole object, unaligned ones included, up to its last byte.
fn interior_offset(i: usize) -> usize {
    let size = std::mem::size_of::<Payload>();
    if i == N - 1 {
        size - 1
    } else {
        1 + i * (size - 2) / (N - 1)
    }
}

#[inline(never)]
fn make_interior(base: u64) -> (Vec<usize>, Vec<GcWeak<Payload>>) {
    let (objects, weak) = make(base);
    let pointers = objects
        .iter()
        .enumerate()
        .map(|(i, g)| Gc::as_ptr(*g) as usize + interior_offset(i))
        .collect();
    (pointers, weak)
}

const HUGE_WORDS: usize = 1 << 20; // 8 MiB
const HUGE_SEED: u64 = 77;

/// A huge GC block (its own mapping) kept only by a pointer into its
/// middle, which is in a `Box`.
#[inline(never)]
fn make_huge_interior() -> Box<usize> {
    let mut v: AVec<u64, GcZone> = AVec::with_capacity_in(HUGE_WORDS, GcZone);
    v.extend((0..HUGE_WORDS).map(|i| word(HUGE_SEED, i)));
    let middle = v.as_ptr() as usize + HUGE_WORDS * 4 + 3;
    std::mem::forget(v);
    Box::new(middle)
}

#[inline(never)]
fn check_huge_interior(middle: &usize) {
    let start = (*middle - HUGE_WORDS * 4 - 3) as *const u64;
    for i in 0..HUGE_WORDS {
        // SAFETY: the interior pointer keeps the huge block alive.
        let w = unsafe { start.add(i).read_volatile() };
        assert_eq!(w, word(HUGE_SEED, i), "huge block word {i} changed");
    }
}

fn interior_pointer_body() {
    let (pointers, weak) = make_interior(1400);
    let huge = make_huge_interior();
    clobber_stack(4);
    control_and_churn("interior pointer");
    let bases = pointers
        .iter()
        .enumerate()
        .map(|(i, p)| (p - interior_offset(i)) as *const Payload);
    check_all(bases, 1400, "interior pointer");
    check_huge_interior(&huge);
    clobber_stack(4);
    // Erase the pointers before freeing their memory: a freed manual block
    // is not scanned, but its next owner may leave part of it unwritten
    // (a vector's spare capacity), and the collector scans live manual
    // blocks whole.
    let mut pointers = pointers;
    pointers.iter_mut().for_each(|p| *black_box(p) = 0);
    drop(pointers);
    let mut huge = huge;
    *black_box(&mut *huge) = 0;
    drop(huge);
    churn(2);
    assert_gone(&weak, "interior pointers (dropped)");
    // Not asserted: that the huge block is freed once its interior pointer
    // is gone. In about one run in five it is kept by 16-byte blocks that
    // hold addresses inside it (not yet explained; see the issue notes),
    // while the 16 small objects above are always freed.
}

#[test]
fn interior_pointer() {
    run("interior_pointer", interior_pointer_body);
}

// ---- one past the end ----------------------------------------------------------

/// Element counts whose byte size (×8) is exactly a block size class: an
/// end pointer would be the start of the next block if the collector did
/// not make every GC block one byte longer than asked.
const END_LENGTHS: [usize; 9] = [1, 2, 8, 16, 32, 128, 1024, 8192, 1 << 20];

/// A `GcZone` (or `GcAtomicZone`) vector with `len == capacity`, of which
/// only the end pointer is kept.
#[inline(never)]
fn end_pointer_of<A: allocator_api2::alloc::Allocator>(len: usize, seed: u64, zone: A) -> usize {
    let mut v: AVec<u64, A> = AVec::with_capacity_in(len, zone);
    v.extend((0..len).map(|i| word(seed, i)));
    assert_eq!(v.len(), v.capacity());
    // SAFETY: one past the end of the vector's buffer.
    let end = unsafe { v.as_ptr().add(v.len()) } as usize;
    std::mem::forget(v);
    end
}

fn check_from_end(end: usize, len: usize, seed: u64, what: &str) {
    let start = (end - len * 8) as *const u64;
    for i in 0..len {
        // SAFETY: the end pointer keeps the vector's block alive.
        let w = unsafe { start.add(i).read_volatile() };
        assert_eq!(w, word(seed, i), "{what}: len {len}, word {i} changed");
    }
}

/// Checks every vector from its end pointer, in a frame of its own (so the
/// pointers it leaves in stack slots die with it).
#[inline(never)]
fn check_all_from_end(ends: &[(usize, usize, u64, &str)]) {
    for &(end, len, seed, zone) in ends {
        check_from_end(end, len, seed, zone);
    }
}

fn one_past_the_end_body() {
    let mut ends = Vec::new();
    for (k, &len) in END_LENGTHS.iter().enumerate() {
        for copy in 0..4u64 {
            let seed = 1500 + k as u64 * 10 + copy;
            let (zone, end) = if copy % 2 == 0 {
                ("GcZone", end_pointer_of(len, seed, GcZone))
            } else {
                ("GcAtomicZone", end_pointer_of(len, seed, GcAtomicZone))
            };
            ends.push((end, len, seed, zone));
        }
    }
    clobber_stack(4);
    control_and_churn("one past the end");
    check_all_from_end(&ends);
    // Disguised, so that this list does not keep the vectors alive.
    let disguised: Vec<(usize, usize, u64)> = ends
        .iter()
        .map(|&(end, len, seed, _)| (!end, len, seed))
        .collect();
    drop(ends);
    // The check loop left the last end pointers (of the biggest vectors)
    // in its own stack slots: those are dead now, and overwritten here.
    clobber_stack(4);
    churn(2);
    // Counted per vector, not in bytes: a stale register or stack word may
    // keep one vector alive, and one 8 MiB vector would dominate a byte
    // count.
    let survivors = disguised
        .iter()
        .filter(|&&(end, len, seed)| still_there(!end, len, seed))
        .count();
    assert!(
        survivors * 4 <= disguised.len(),
        "the vectors were not freed once their end pointers were gone: \
         {survivors} of {} survived",
        disguised.len()
    );
}

/// Whether the vector that ended at `end` is still allocated and intact
/// (its block is live, starts where the vector did, and holds its first
/// word: a reused block would not).
fn still_there(end: usize, len: usize, seed: u64) -> bool {
    let start = end - len * 8;
    zonal::inspect((end - 1) as *const u8).is_some_and(|a| a.live && a.base == start)
        // SAFETY: the block is live, so its memory is mapped.
        && unsafe { (start as *const u64).read_volatile() } == word(seed, 0)
}

#[test]
fn one_past_the_end() {
    run("one_past_the_end", one_past_the_end_body);
}

/// Like [`end_pointer_of`], but the vector first grows to exactly the size
/// of its first block (`len` elements at first, `grown` after), which could
/// be done in place if the spare byte were given away.
#[inline(never)]
fn end_pointer_after_growing(len: usize, grown: usize, seed: u64) -> (usize, bool) {
    let mut v: AVec<u64, GcZone> = AVec::with_capacity_in(len, GcZone);
    let before = v.as_ptr();
    v.reserve_exact(grown);
    let in_place = v.as_ptr() == before;
    v.extend((0..grown).map(|i| word(seed, i)));
    assert_eq!(v.len(), v.capacity());
    // SAFETY: one past the end of the vector's buffer.
    let end = unsafe { v.as_ptr().add(v.len()) } as usize;
    std::mem::forget(v);
    (end, in_place)
}

/// (initial, grown) element counts: 8 × initial + 1 rounds up to the block
/// size 8 × grown (65 -> 80, 257 -> 320, 1025 -> 1280 bytes).
const GROWN: [(usize, usize); 3] = [(8, 10), (32, 40), (128, 160)];

fn one_past_the_end_after_growing_in_place_body() {
    let mut ends = Vec::new();
    for (k, &(len, grown)) in GROWN.iter().enumerate() {
        for copy in 0..8u64 {
            let seed = 1700 + k as u64 * 10 + copy;
            // Growing to exactly the block size must not take the spare
            // byte: zonal moves the vector instead of growing in place.
            let (end, _in_place) = end_pointer_after_growing(len, grown, seed);
            ends.push((end, grown, seed));
        }
    }
    clobber_stack(4);
    control_and_churn("one past the end after growing");
    for &(end, len, seed) in &ends {
        check_from_end(end, len, seed, "GcZone vector grown in place");
    }
}

#[test]
fn one_past_the_end_after_growing_in_place() {
    run(
        "one_past_the_end_after_growing_in_place",
        one_past_the_end_after_growing_in_place_body,
    );
}

// ---- a thread blocked in a system call ---------------------------------------

#[inline(never)]
fn hidden_addresses(base: u64) -> (Vec<usize>, Vec<GcWeak<Payload>>) {
    let (objects, weak) = make(base);
    let xored = objects
        .iter()
        .map(|g| Gc::as_ptr(*g) as usize ^ gc_common::XOR)
        .collect();
    (xored, weak)
}

/// The thread's body: decode the pointers into locals, block in `read`,
/// then check the objects. Only its stack (and registers) hold them.
#[inline(never)]
fn blocked_reader(xored: Vec<usize>, fd: i32, ready: mpsc::Sender<()>) -> Result<(), String> {
    gc::register_thread();
    let mut pointers = [std::ptr::null::<Payload>(); N];
    for (p, x) in pointers.iter_mut().zip(&xored) {
        *p = (x ^ gc_common::XOR) as *const Payload;
    }
    let pointers = black_box(pointers);
    drop(xored);
    clobber_stack(2);
    ready.send(()).unwrap();
    let mut byte = 0u8;
    let mut interrupted = 0;
    loop {
        // SAFETY: reads one byte into `byte`.
        let n = unsafe { libc::read(fd, (&mut byte as *mut u8).cast(), 1) };
        if n == 1 {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINTR) {
            interrupted += 1;
            continue;
        }
        return Err(format!("read failed: {err}"));
    }
    for (i, p) in black_box(pointers).iter().enumerate() {
        // SAFETY: the stack of this thread kept the object alive.
        if !unsafe { intact_at(*p, 1800 + i as u64) } {
            return Err(format!("object {i} overwritten ({interrupted} EINTR)"));
        }
    }
    Ok(())
}

fn on_a_thread_blocked_in_a_syscall_body() {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (xored, weak) = hidden_addresses(1800);
    let (ready_tx, ready_rx) = mpsc::channel();
    let read_fd = fds[0];
    let thread = std::thread::spawn(move || blocked_reader(xored, read_fd, ready_tx));
    ready_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    clobber_stack(4);
    control_and_churn("thread blocked in read");
    for _ in 0..20 {
        gc::collect();
    }
    // Still blocked: the objects must be alive (weak handles upgrade).
    assert_eq!(
        gc_common::alive(&weak),
        N,
        "objects of the blocked thread collected"
    );
    // SAFETY: writes one byte to the pipe.
    assert_eq!(unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) }, 1);
    let result = thread.join().expect("reader thread panicked");
    // SAFETY: closing our descriptors.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    result.unwrap();
    churn(2);
    assert_gone(&weak, "objects of the reader thread after it exited");
}

#[test]
fn on_a_thread_blocked_in_a_syscall() {
    run(
        "on_a_thread_blocked_in_a_syscall",
        on_a_thread_blocked_in_a_syscall_body,
    );
}

// ---- the negative control on its own -------------------------------------------

fn unreachable_objects_are_reclaimed_body() {
    gc::collect();
    let before = zonal::stats().gc;
    let control = hidden(1024, 0xABC);
    clobber_stack(8);
    gc::collect();
    gc::collect();
    let after = zonal::stats().gc;
    control.assert_mostly_reclaimed("1024 hidden objects");
    let freed = after.bytes_freed - before.bytes_freed;
    let size = std::mem::size_of::<Payload>() as u64;
    assert!(
        freed >= 3 * 1024 * size / 4,
        "only {freed} bytes freed for 1024 unreachable {size}-byte objects"
    );
    assert!(after.collections >= before.collections + 2);
}

#[test]
fn unreachable_objects_are_reclaimed() {
    run(
        "unreachable_objects_are_reclaimed",
        unreachable_objects_are_reclaimed_body,
    );
}

// ---- a hashbrown map in the GC zone ----------------------------------------------

type GcMap = hashbrown::HashMap<u64, Gc<Payload>, hashbrown::DefaultHashBuilder, GcZone>;

#[inline(never)]
fn make_gc_map(base: u64, count: u64) -> (GcMap, Vec<GcWeak<Payload>>) {
    let mut map = GcMap::new_in(GcZone);
    let mut weak = Vec::new();
    for i in 0..count {
        let g = fresh(base + i);
        weak.push(Gc::downgrade(g));
        map.insert(i, g);
    }
    (map, weak)
}

/// A map in the GC zone inside a `Gc` (GC object -> GC table -> GC values).
struct Registry {
    map: Mutex<GcMap>,
}

#[inline(never)]
fn make_registry(base: u64, count: u64) -> (Gc<Registry>, Vec<GcWeak<Payload>>) {
    let (map, weak) = make_gc_map(base, count);
    (
        Gc::new(Registry {
            map: Mutex::new(map),
        }),
        weak,
    )
}

fn check_map(map: &GcMap, base: u64, keys: impl Iterator<Item = u64>, what: &str) {
    for i in keys {
        let g = map
            .get(&i)
            .unwrap_or_else(|| panic!("{what}: key {i} missing"));
        assert!(g.intact(base + i), "{what}: value {i} overwritten");
    }
}

fn hashbrown_map_in_the_gc_zone_body() {
    const COUNT: u64 = 4096;
    let (mut map, weak) = make_gc_map(20_000, COUNT);
    let (registry, _) = make_registry(40_000, COUNT);
    let registry = black_box(registry);
    clobber_stack(4);
    control_and_churn("hashbrown map in GcZone");
    check_map(&map, 20_000, 0..COUNT, "GcZone map");
    check_map(
        &registry.map.lock().unwrap(),
        40_000,
        0..COUNT,
        "GcZone map in a Gc",
    );
    // Remove the odd keys, shrink (a new table; the old one is deallocated
    // explicitly), and keep going.
    for i in (1..COUNT).step_by(2) {
        map.remove(&i);
    }
    map.shrink_to_fit();
    registry.map.lock().unwrap().retain(|k, _| k % 2 == 0);
    churn(2);
    check_map(
        &map,
        20_000,
        (0..COUNT).step_by(2),
        "GcZone map after removal",
    );
    check_map(
        &registry.map.lock().unwrap(),
        40_000,
        (0..COUNT).step_by(2),
        "GcZone map in a Gc after retain",
    );
    let odd: Vec<_> = weak.iter().skip(1).step_by(2).cloned().collect();
    let left = gc_common::alive(&odd);
    assert!(
        left <= odd.len() / 4,
        "{left} of {} removed values survived",
        odd.len()
    );
}

#[test]
fn hashbrown_map_in_the_gc_zone() {
    run(
        "hashbrown_map_in_the_gc_zone",
        hashbrown_map_in_the_gc_zone_body,
    );
}

// ---- mark-stack overflow ---------------------------------------------------------

struct ListNode {
    key: u64,
    check: u64,
    next: Option<Gc<ListNode>>,
}

struct TreeNode {
    key: u64,
    children: [Option<Gc<TreeNode>>; FANOUT],
}

const FANOUT: usize = 8;
const LIST_LEN: u64 = 100_000;
const WIDE: usize = 20_000;
const TREE_DEPTH: u32 = 5;

fn list_check(key: u64) -> u64 {
    key.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xF0F0
}

#[inline(never)]
fn make_list() -> Gc<ListNode> {
    let mut head = None;
    for key in 0..LIST_LEN {
        head = Some(Gc::new(ListNode {
            key,
            check: list_check(key),
            next: head,
        }));
    }
    head.unwrap()
}

fn make_tree(key: u64, depth: u32) -> Gc<TreeNode> {
    let children = std::array::from_fn(|i| {
        (depth > 0).then(|| make_tree(key * FANOUT as u64 + i as u64 + 1, depth - 1))
    });
    Gc::new(TreeNode { key, children })
}

fn tree_count(node: &TreeNode, key: u64) -> usize {
    assert_eq!(node.key, key, "tree node overwritten");
    let mut count = 1;
    for (i, child) in node.children.iter().enumerate() {
        if let Some(child) = child {
            count += tree_count(child, key * FANOUT as u64 + i as u64 + 1);
        }
    }
    count
}

#[inline(never)]
fn make_wide() -> AVec<Gc<Payload>, GcZone> {
    let mut v = AVec::with_capacity_in(WIDE, GcZone);
    v.extend((0..WIDE as u64).map(|i| Gc::new(Payload::new(60_000 + i))));
    v
}

fn deep_and_wide_structures_survive_body() {
    let list = black_box(make_list());
    let tree = black_box(make_tree(0, TREE_DEPTH));
    let wide = make_wide();
    clobber_stack(4);
    control_and_churn("deep and wide structures");
    let mut node = Some(list);
    let mut expected = LIST_LEN;
    while let Some(n) = node {
        expected -= 1;
        assert_eq!(n.key, expected, "list node overwritten");
        assert_eq!(n.check, list_check(n.key), "list node overwritten");
        node = n.next;
    }
    assert_eq!(expected, 0, "list cut short");
    let nodes: usize = (0..=TREE_DEPTH).map(|d| FANOUT.pow(d)).sum();
    assert_eq!(tree_count(&tree, 0), nodes);
    for (i, g) in wide.iter().enumerate() {
        assert!(
            g.intact(60_000 + i as u64),
            "wide vector: object {i} overwritten"
        );
    }
}

/// With a 16-entry mark stack, marking overflows constantly (the wide
/// vector alone pushes 20,000 objects); the rescans must still find
/// everything.
#[test]
fn mark_stack_overflow_loses_nothing() {
    isolated(
        "mark_stack_overflow_loses_nothing",
        &[("ZONAL_GC_MARK_STACK", "16")],
        TIMEOUT,
        deep_and_wide_structures_survive_body,
    );
}

/// The same structures with the default mark stack.
#[test]
fn deep_and_wide_structures_survive() {
    run(
        "deep_and_wide_structures_survive",
        deep_and_wide_structures_survive_body,
    );
}

/// A thread that received `Gc` values (moved into it) and holds them while
/// the main thread collects; `gc::register_thread` is idempotent.
fn received_by_another_thread_body() {
    let counter = Arc::new(AtomicUsize::new(0));
    let (objects, weak) = make(1900);
    let (tx, rx) = mpsc::channel::<()>();
    let thread = {
        let counter = Arc::clone(&counter);
        std::thread::spawn(move || {
            gc::register_thread();
            gc::register_thread();
            let objects = black_box(objects);
            rx.recv().unwrap();
            for (i, g) in objects.iter().enumerate() {
                assert!(g.intact(1900 + i as u64), "object {i} overwritten");
                counter.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    control_and_churn("received by another thread");
    tx.send(()).unwrap();
    thread.join().expect("receiving thread failed");
    assert_eq!(counter.load(Ordering::Relaxed), N);
    // No check that they are gone now: the vector's buffer was freed by the
    // other thread (a remote free), and such a block stays allocated, and
    // scanned, until its owner (this thread) takes it back.
    drop(weak);
}

#[test]
fn received_by_another_thread() {
    run(
        "received_by_another_thread",
        received_by_another_thread_body,
    );
}
