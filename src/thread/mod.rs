//! The registry of threads the collector knows: where each one's stack and
//! static thread-local storage are, and the state of its suspension
//! handshake (see [`suspend`]).
//!
//! A thread registers itself when its heap is first used (or through
//! `gc::register_thread`) and deregisters when its heap's exit hook runs.
//! Records live in a static table ([`MAX_THREADS`] slots, zero-filled
//! `.bss`, only the used part ever touched) rather than in thread-local
//! storage, for two reasons: the suspend signal handler must find the
//! record of the thread it interrupts without touching TLS (only safe for
//! the initial-exec model), and a record must stay readable after its
//! thread is gone (a late handler or a racing collector may still look).
//!
//! Invariants:
//! * a slot is `LIVE` exactly between its thread's registration and
//!   deregistration, both under [`THREADS`]' lock, which a collection holds
//!   from before it stops the world until after it resumes it: the set of
//!   live records cannot change while the world is stopped;
//! * a record's stack and TLS ranges are written before it becomes `LIVE`
//!   and not changed while it is;
//! * zonal's own metadata (this table included) is never scanned as a root.

pub(crate) mod handshake;
pub(crate) mod suspend;

use crate::sync::{AtomicU64, AtomicU8, AtomicUsize, Ordering, SpinLock};
use core::cell::Cell;
use core::ffi::c_void;

/// Threads registered at once; registering one more aborts with a message.
pub(crate) const MAX_THREADS: usize = 16384;
/// Static TLS blocks recorded per thread (one per loaded object with a
/// `PT_TLS` segment; a Rust program has one or two).
const MAX_TLS_RANGES: usize = 16;

const FREE: u8 = 0;
const LIVE: u8 = 1;

/// What the collector knows of one registered thread.
pub(crate) struct ThreadRecord {
    state: AtomicU8,
    /// `pthread_self()` of the thread (for `pthread_kill` and for the signal
    /// handler to find its own record).
    pthread: AtomicUsize,
    /// Identifies this registration: never reused, so finalizers queued for
    /// a thread that has exited are not run by a later thread in its slot.
    pub(crate) serial: AtomicU64,
    /// Highest address of the stack (it grows down).
    stack_high: AtomicUsize,
    /// Lowest address of the stack mapping, a bound for sanity checks.
    stack_low: AtomicUsize,
    /// Static TLS blocks: start and end of each.
    tls: [(AtomicUsize, AtomicUsize); MAX_TLS_RANGES],
    tls_count: AtomicUsize,
    /// The suspension handshake (see `suspend`).
    pub(crate) handshake: handshake::Handshake,
    /// GC-zone bytes this thread allocated and has not yet added to the
    /// collector's shared count (own thread only; see `gc`).
    pub(crate) gc_unflushed: AtomicUsize,
}

impl ThreadRecord {
    const fn new() -> Self {
        ThreadRecord {
            state: AtomicU8::new(FREE),
            pthread: AtomicUsize::new(0),
            serial: AtomicU64::new(0),
            stack_high: AtomicUsize::new(0),
            stack_low: AtomicUsize::new(0),
            tls: [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; MAX_TLS_RANGES],
            tls_count: AtomicUsize::new(0),
            handshake: handshake::Handshake::new(),
            gc_unflushed: AtomicUsize::new(0),
        }
    }

    /// The record's index in the table.
    pub(crate) fn slot(&self) -> usize {
        (self as *const ThreadRecord as usize - RECORDS.as_ptr() as usize)
            / core::mem::size_of::<ThreadRecord>()
    }

    /// The thread's `pthread_t`.
    pub(crate) fn pthread(&self) -> libc::pthread_t {
        self.pthread.load(Ordering::Relaxed) as libc::pthread_t
    }

    /// The part of the stack a stopped (or the current) thread may use:
    /// from `sp` to the stack's high end.
    pub(crate) fn stack_range(&self, sp: usize) -> (usize, usize) {
        let high = self.stack_high.load(Ordering::Relaxed);
        let low = self.stack_low.load(Ordering::Relaxed);
        // A stack pointer outside the recorded stack (a handler running on
        // an alternate stack, say) scans the whole recorded stack instead.
        let start = if sp >= low && sp <= high { sp } else { low };
        (start & !(core::mem::size_of::<usize>() - 1), high)
    }

    /// Calls `f(start, end)` for each of the thread's static TLS blocks.
    pub(crate) fn for_each_tls(&self, mut f: impl FnMut(usize, usize)) {
        let count = self.tls_count.load(Ordering::Relaxed);
        for (start, end) in &self.tls[..count] {
            f(start.load(Ordering::Relaxed), end.load(Ordering::Relaxed));
        }
    }
}

struct Threads {
    lock: SpinLock,
    /// Slots `0..high_water` have been used at least once.
    high_water: AtomicUsize,
    next_serial: AtomicU64,
}

static THREADS: Threads = Threads {
    lock: SpinLock::new(),
    high_water: AtomicUsize::new(0),
    next_serial: AtomicU64::new(1),
};

static RECORDS: [ThreadRecord; MAX_THREADS] = [const { ThreadRecord::new() }; MAX_THREADS];

std::thread_local! {
    /// The calling thread's record, once registered.
    static CURRENT: Cell<*const ThreadRecord> = const { Cell::new(core::ptr::null()) };
    /// The thread deregistered (it is exiting): it never registers again,
    /// or its record would outlive it.
    static EXITED: Cell<bool> = const { Cell::new(false) };
    /// Deregisters the thread when it exits, whatever registered it (its
    /// heap's exit hook deregisters too; whichever runs first wins).
    static DEREGISTER_AT_EXIT: DeregisterAtExit = const { DeregisterAtExit };
}

struct DeregisterAtExit;

impl Drop for DeregisterAtExit {
    fn drop(&mut self) {
        deregister_current();
    }
}

/// The address range of the record table (excluded from root scanning:
/// it holds stack addresses, never object pointers the program owns).
pub(crate) fn records_range() -> (usize, usize) {
    let start = RECORDS.as_ptr() as usize;
    (start, start + core::mem::size_of_val(&RECORDS))
}

/// The lock that keeps the set of live records fixed (held by collections).
pub(crate) fn lock() -> &'static SpinLock {
    &THREADS.lock
}

/// The calling thread's record, if it is registered.
#[inline]
pub(crate) fn current() -> Option<&'static ThreadRecord> {
    let record = CURRENT.try_with(|c| c.get()).ok()?;
    // SAFETY: records are static.
    (!record.is_null()).then(|| unsafe { &*record })
}

/// Calls `f` for every live record. The caller holds [`lock`], or is a
/// signal handler during a stop (when the collector holds it).
pub(crate) fn for_each_live(mut f: impl FnMut(&'static ThreadRecord)) {
    let high = THREADS.high_water.load(Ordering::Acquire);
    for record in &RECORDS[..high] {
        if record.state.load(Ordering::Acquire) == LIVE {
            f(record);
        }
    }
}

/// Whether the registration `serial` in slot `slot` is still live (its
/// thread has not exited).
pub(crate) fn is_live(slot: usize, serial: u64) -> bool {
    let record = &RECORDS[slot];
    record.state.load(Ordering::Acquire) == LIVE && record.serial.load(Ordering::Relaxed) == serial
}

/// The live record of the thread `pthread`, found without TLS (for the
/// signal handler).
pub(crate) fn find(pthread: libc::pthread_t) -> Option<&'static ThreadRecord> {
    let high = THREADS.high_water.load(Ordering::Acquire);
    RECORDS[..high].iter().find(|r| {
        r.state.load(Ordering::Acquire) == LIVE
            && r.pthread.load(Ordering::Relaxed) == pthread as usize
    })
}

/// Registers the calling thread (idempotent). Called on a heap's first use
/// and by `gc::register_thread`. Never allocates through zonal.
pub(crate) fn register_current() {
    if current().is_some() || EXITED.try_with(|e| e.get()).unwrap_or(true) {
        return;
    }
    // Registers the destructor; a thread already being torn down (the
    // access fails) does not register at all.
    if DEREGISTER_AT_EXIT.try_with(|_| ()).is_err() {
        let _ = EXITED.try_with(|e| e.set(true));
        return;
    }
    suspend::install_handlers();
    let (stack_low, stack_high) = stack_bounds();
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    let mut tls = [(0usize, 0usize); MAX_TLS_RANGES];
    let tls_count = static_tls_blocks(me as usize, &mut tls);
    THREADS.lock.with(|| {
        let high = THREADS.high_water.load(Ordering::Relaxed);
        let slot = RECORDS[..high]
            .iter()
            .position(|r| r.state.load(Ordering::Relaxed) == FREE)
            .unwrap_or(high);
        if slot == MAX_THREADS {
            crate::os::write_stderr(
                b"zonal: more than 16384 threads registered with the collector at once\n",
            );
            // SAFETY: abort has no preconditions.
            unsafe { libc::abort() };
        }
        let record = &RECORDS[slot];
        record.pthread.store(me as usize, Ordering::Relaxed);
        record.serial.store(
            THREADS.next_serial.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        record.stack_low.store(stack_low, Ordering::Relaxed);
        record.stack_high.store(stack_high, Ordering::Relaxed);
        for (dst, src) in record.tls.iter().zip(&tls[..tls_count]) {
            dst.0.store(src.0, Ordering::Relaxed);
            dst.1.store(src.1, Ordering::Relaxed);
        }
        record.tls_count.store(tls_count, Ordering::Relaxed);
        record.handshake.reset();
        record.state.store(LIVE, Ordering::Release);
        if slot == high {
            THREADS.high_water.store(high + 1, Ordering::Release);
        }
        // Publishing the record to TLS last: from here on, zonal locks this
        // thread takes defer its suspension.
        let _ = CURRENT.try_with(|c| c.set(record));
    });
}

/// Deregisters the calling thread (its heap's exit hook). Its stack is no
/// longer scanned from here on.
pub(crate) fn deregister_current() {
    let Some(record) = current() else { return };
    THREADS.lock.with(|| {
        record.state.store(FREE, Ordering::Release);
    });
    // Outside the lock: the lock's release reads the deferral state of the
    // record it found when it was taken.
    let _ = CURRENT.try_with(|c| c.set(core::ptr::null()));
    let _ = EXITED.try_with(|e| e.set(true));
}

/// In a forked child: only the calling thread exists; every other record is
/// freed and the lock is forced open.
pub(crate) fn after_fork_in_child() {
    THREADS.lock.reset_after_fork();
    // A thread of the parent may have been registering (it held this lock
    // only to read or fill in the TLS layout, which stays consistent: it is
    // marked known only once complete).
    TLS_LAYOUT.lock.reset_after_fork();
    let me = current().map(|r| r as *const ThreadRecord);
    let high = THREADS.high_water.load(Ordering::Relaxed);
    for record in &RECORDS[..high] {
        if Some(record as *const ThreadRecord) != me {
            record.state.store(FREE, Ordering::Relaxed);
        } else {
            // SAFETY: pthread_self has no preconditions.
            record
                .pthread
                .store(unsafe { libc::pthread_self() } as usize, Ordering::Relaxed);
            record.handshake.reset();
        }
    }
}

extern "C" {
    /// glibc's record of the main thread's stack top (reading `/proc`, as
    /// `pthread_getattr_np` does for the main thread, would allocate).
    static __libc_stack_end: *mut c_void;
}

/// `(low, high)` of the calling thread's stack.
fn stack_bounds() -> (usize, usize) {
    // SAFETY: getpid and gettid have no preconditions.
    let is_main = unsafe { libc::getpid() == libc::gettid() };
    if is_main {
        // SAFETY: glibc sets `__libc_stack_end` before `main` and never
        // changes it afterwards.
        let high = unsafe { __libc_stack_end } as usize;
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a valid out-pointer.
        unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut limit) };
        let size = if limit.rlim_cur == libc::RLIM_INFINITY || limit.rlim_cur == 0 {
            8 << 20
        } else {
            limit.rlim_cur as usize
        };
        // Round the top up to a page: `__libc_stack_end` points a little
        // below the environment and auxiliary vector, which hold no heap
        // pointers but are part of the same mapping.
        let high = (high + 4095) & !4095;
        return (high.saturating_sub(size), high);
    }
    // SAFETY: `attr` is initialised by pthread_getattr_np before use and
    // destroyed after; pthread_getattr_np on a thread other than the main
    // one reads the thread descriptor (its allocation, if any, is glibc's
    // own malloc, never zonal).
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return fallback_stack_bounds();
        }
        let mut addr: *mut c_void = core::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
        libc::pthread_attr_destroy(&mut attr);
        if !ok {
            return fallback_stack_bounds();
        }
        (addr as usize, addr as usize + size)
    }
}

/// A conservative guess when the stack cannot be queried: from here up to
/// the end of the current 8 MiB-aligned region. Never used on glibc.
fn fallback_stack_bounds() -> (usize, usize) {
    let here = &0u8 as *const u8 as usize;
    (here - (64 << 10), (here + (8 << 20)) & !((8 << 20) - 1))
}

/// Where the static TLS blocks lie relative to a thread's `pthread_self()`
/// (the same for every thread: static TLS sits at fixed offsets from the
/// thread pointer), learnt once, from the first thread that registers.
struct TlsLayout {
    lock: SpinLock,
    known: core::cell::Cell<bool>,
    blocks: core::cell::Cell<[(isize, usize); MAX_TLS_RANGES]>,
    count: core::cell::Cell<usize>,
}

// SAFETY: the cells are only touched with `lock` held.
unsafe impl Sync for TlsLayout {}

static TLS_LAYOUT: TlsLayout = TlsLayout {
    lock: SpinLock::new(),
    known: core::cell::Cell::new(false),
    blocks: core::cell::Cell::new([(0, 0); MAX_TLS_RANGES]),
    count: core::cell::Cell::new(0),
};

/// Fills `out` with the static TLS blocks of the calling thread, whose
/// `pthread_self()` is `me`, and returns how many.
///
/// Only the first registration asks the dynamic linker (`dl_iterate_phdr`,
/// whose lock a collection holds while it runs, and which glibc does not
/// reset in a forked child): later ones apply the offsets it found. That
/// first registration happens at the process's first allocation, when only
/// the objects loaded at startup exist, whose TLS is static. (TLS of
/// objects loaded later with `dlopen` is dynamic and is not scanned.)
fn static_tls_blocks(me: usize, out: &mut [(usize, usize); MAX_TLS_RANGES]) -> usize {
    TLS_LAYOUT.lock.with(|| {
        if !TLS_LAYOUT.known.get() {
            let mut found = [(0usize, 0usize); MAX_TLS_RANGES];
            let count = ask_linker_for_tls_blocks(&mut found);
            let mut blocks = [(0isize, 0usize); MAX_TLS_RANGES];
            for (block, &(start, end)) in blocks.iter_mut().zip(&found[..count]) {
                *block = (start.wrapping_sub(me) as isize, end - start);
            }
            TLS_LAYOUT.blocks.set(blocks);
            TLS_LAYOUT.count.set(count);
            TLS_LAYOUT.known.set(true);
        }
        let count = TLS_LAYOUT.count.get();
        for (slot, &(offset, len)) in out.iter_mut().zip(&TLS_LAYOUT.blocks.get()[..count]) {
            let start = me.wrapping_add(offset as usize);
            *slot = (start, start + len);
        }
        count
    })
}

/// The calling thread's TLS blocks, from the dynamic linker: one per loaded
/// object with a `PT_TLS` segment allocated for this thread.
fn ask_linker_for_tls_blocks(out: &mut [(usize, usize); MAX_TLS_RANGES]) -> usize {
    struct Collect<'a> {
        out: &'a mut [(usize, usize); MAX_TLS_RANGES],
        count: usize,
    }
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> libc::c_int {
        // SAFETY: dl_iterate_phdr passes a valid info record and our `data`.
        let (info, collect) = unsafe { (&*info, &mut *data.cast::<Collect>()) };
        if info.dlpi_tls_data.is_null() || collect.count == MAX_TLS_RANGES {
            return 0;
        }
        for i in 0..info.dlpi_phnum as usize {
            // SAFETY: `dlpi_phdr` has `dlpi_phnum` entries.
            let header = unsafe { &*info.dlpi_phdr.add(i) };
            if header.p_type == libc::PT_TLS {
                let start = info.dlpi_tls_data as usize;
                collect.out[collect.count] = (start, start + header.p_memsz as usize);
                collect.count += 1;
            }
        }
        0
    }
    let mut collect = Collect { out, count: 0 };
    // SAFETY: `visit` matches the callback type and only writes through the
    // `Collect` we pass, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut collect as *mut Collect).cast()) };
    collect.count
}
