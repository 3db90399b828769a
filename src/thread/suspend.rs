//! Stopping the world: the signal handshake that suspends every registered
//! thread for a collection, and the *deferral* protocol that keeps a thread
//! from being suspended while it is inside zonal's slow paths.
//!
//! # Deferral
//!
//! A thread inside a deferral section ([`DeferGuard`]; every zonal lock
//! opens one while it is held, and so does every GC-zone operation) must
//! not be suspended: it may hold a lock the collector needs, or be halfway
//! through changing a page the collector sweeps. The suspend handler sees
//! the section's depth in the thread's [`Handshake`], records the request
//! (`pending`) and returns; when the thread leaves its outermost section it
//! sees the request and parks itself exactly as the handler would have.
//! Depth and `pending` are only written by their own thread (the handler
//! runs on that thread), so plain loads and stores with compiler fences
//! order them against the handler.
//!
//! # The handshake
//!
//! The collector (holding the thread registry's lock, so the set of threads
//! is fixed) publishes a stop epoch in [`STOP_REQUEST`] and sends each
//! other live thread the suspend signal. A thread stops by spilling its
//! registers onto its stack, recording its stack pointer, and acknowledging
//! with a `Release` store of the epoch (the collector's `Acquire` load then
//! sees everything the thread wrote before), then waits in `sigsuspend`
//! with everything but the resume signal blocked, until the request
//! changes. To resume, the collector clears the request and sends the
//! resume signal; the resume signal is blocked from before the
//! acknowledgement until `sigsuspend`, so it cannot be lost in between.
//! A thread that has not acknowledged after a while is sent the suspend
//! signal again (signals can be lost, say when a thread is being created),
//! and duplicate signals are recognised by the epoch and ignored.
//!
//! Handlers are installed with `SA_RESTART` (an interrupted system call is
//! resumed) and without `SA_ONSTACK`, so they run on the thread's normal
//! stack, which is the one the collector scans. The signal numbers are
//! options (`ZONAL_GC_SUSPEND_SIGNAL`, `ZONAL_GC_RESUME_SIGNAL`; `SIGPWR`
//! and `SIGXCPU` by default, as in bdwgc).

use super::handshake::{Handshake, OnSignal};
use super::ThreadRecord;
use crate::sync::{AtomicBool, AtomicI32, AtomicU64, Ordering};

/// The epoch of the stop in progress, 0 when none.
static STOP_REQUEST: AtomicU64 = AtomicU64::new(0);
static NEXT_EPOCH: AtomicU64 = AtomicU64::new(1);
static SUSPEND_SIGNAL: AtomicI32 = AtomicI32::new(0);
static RESUME_SIGNAL: AtomicI32 = AtomicI32::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// How long the collector waits for an acknowledgement before it sends the
/// suspend signal again.
const RESEND_AFTER_MS: u64 = 20;

/// While alive, the calling thread is not suspended by a collection (a
/// request that arrives meanwhile is served when the outermost guard
/// drops). Does nothing on a thread that is not registered, which the
/// collector never stops.
pub(crate) struct DeferGuard {
    record: Option<&'static ThreadRecord>,
}

impl DeferGuard {
    #[inline]
    pub(crate) fn new() -> Self {
        let record = super::current();
        if let Some(record) = record {
            record.handshake.enter();
        }
        DeferGuard { record }
    }

    /// The record whose section this guard holds (for locks that must
    /// leave the same section they entered).
    pub(crate) fn into_record(self) -> Option<&'static ThreadRecord> {
        let record = self.record;
        core::mem::forget(self);
        record
    }

    /// Leaves the section `record` entered (see [`DeferGuard::into_record`]).
    pub(crate) fn leave(record: Option<&'static ThreadRecord>) {
        if let Some(record) = record {
            if record.handshake.leave() {
                park_here(&record.handshake);
            }
        }
    }
}

impl Drop for DeferGuard {
    #[inline]
    fn drop(&mut self) {
        Self::leave(self.record);
    }
}

/// Serves a stop request that arrived inside the deferral section `record`
/// just left (for code that drives the handshake itself, as the GC
/// allocation fast path does).
#[cold]
pub(crate) fn serve_deferred_stop(record: &ThreadRecord) {
    park_here(&record.handshake);
}

/// Runs `f` inside a deferral section.
#[inline]
#[allow(dead_code)] // for zones whose operations are not behind a lock
pub(crate) fn deferred<R>(f: impl FnOnce() -> R) -> R {
    let _guard = DeferGuard::new();
    f()
}

/// Installs the suspend and resume handlers once per process.
pub(crate) fn install_handlers() {
    if INSTALLED.swap(true, Ordering::AcqRel) {
        return;
    }
    let options = crate::options::get();
    SUSPEND_SIGNAL.store(options.gc_suspend_signal, Ordering::Relaxed);
    RESUME_SIGNAL.store(options.gc_resume_signal, Ordering::Relaxed);
    // SAFETY: the handlers are async-signal-safe extern "C" functions that
    // live for the whole process; the sigaction structs are fully
    // initialised (zeroed, then the fields we use).
    unsafe {
        let mut action: libc::sigaction = core::mem::zeroed();
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        // The resume signal stays blocked while the suspend handler runs
        // (it is only let through inside sigsuspend).
        libc::sigaddset(&mut action.sa_mask, options.gc_resume_signal);
        action.sa_sigaction = on_suspend_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigaction(options.gc_suspend_signal, &action, core::ptr::null_mut());

        let mut resume: libc::sigaction = core::mem::zeroed();
        resume.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut resume.sa_mask);
        resume.sa_sigaction = on_resume_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigaction(options.gc_resume_signal, &resume, core::ptr::null_mut());
    }
}

extern "C" fn on_resume_signal(_signal: libc::c_int) {
    // Only wakes `sigsuspend`; the loop around it checks the request.
}

extern "C" fn on_suspend_signal(_signal: libc::c_int) {
    // SAFETY: errno is thread-local; the handler restores it on exit so the
    // interrupted code never sees it change.
    let saved_errno = unsafe { *libc::__errno_location() };
    let request = STOP_REQUEST.load(Ordering::Acquire);
    if request != 0 {
        // SAFETY: pthread_self is async-signal-safe.
        if let Some(record) = super::find(unsafe { libc::pthread_self() }) {
            if record.handshake.on_signal(request) == OnSignal::Stop {
                wait_while_stopped(&record.handshake, request);
            }
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved_errno };
}

/// Parks the calling thread for the stop in progress, from ordinary code
/// (the end of a deferral section), with the resume signal blocked as it is
/// inside the handler.
#[cold]
#[inline(never)]
fn park_here(handshake: &Handshake) {
    let request = STOP_REQUEST.load(Ordering::Acquire);
    if !handshake.needs_stop(request) {
        return;
    }
    // SAFETY: the sets are initialised by sigemptyset before use.
    unsafe {
        let mut block: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, RESUME_SIGNAL.load(Ordering::Relaxed));
        libc::sigaddset(&mut block, SUSPEND_SIGNAL.load(Ordering::Relaxed));
        libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
        wait_while_stopped(handshake, request);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
    }
}

/// Acknowledges stop `request` and waits until it is over. Runs in the
/// suspend handler or in [`park_here`], with the resume signal blocked.
#[inline(never)]
fn wait_while_stopped(handshake: &Handshake, request: u64) {
    // Callee-saved registers may hold the only copy of a pointer: put them
    // on the stack, below which nothing is scanned. (Caller-saved ones are
    // already on the stack, in the signal frame or the callers' frames.)
    let registers = spill_registers();
    handshake.acknowledge(request, registers.as_ptr() as usize);
    // SAFETY: the set is initialised by sigfillset before use.
    unsafe {
        let mut wait_mask: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut wait_mask);
        libc::sigdelset(&mut wait_mask, RESUME_SIGNAL.load(Ordering::Relaxed));
        // Let the user interrupt or kill a stopped program.
        for signal in [libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGABRT] {
            libc::sigdelset(&mut wait_mask, signal);
        }
        while STOP_REQUEST.load(Ordering::Acquire) == request {
            libc::sigsuspend(&wait_mask);
        }
    }
    core::hint::black_box(&registers);
}

/// The callee-saved registers, stored in an array on the caller's stack.
#[inline(always)]
pub(crate) fn spill_registers() -> [usize; 8] {
    let mut registers = [0usize; 8];
    #[cfg(target_arch = "x86_64")]
    // SAFETY: only stores registers into our own array.
    unsafe {
        core::arch::asm!(
            "mov [{0}], rbx",
            "mov [{0} + 8], rbp",
            "mov [{0} + 16], r12",
            "mov [{0} + 24], r13",
            "mov [{0} + 32], r14",
            "mov [{0} + 40], r15",
            "mov [{0} + 48], rsp",
            in(reg) registers.as_mut_ptr(),
            options(nostack, preserves_flags),
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: only stores registers into our own array.
    unsafe {
        core::arch::asm!(
            "stp x19, x20, [{0}]",
            "stp x21, x22, [{0}, #16]",
            "stp x23, x24, [{0}, #32]",
            "stp x25, x26, [{0}, #48]",
            in(reg) registers.as_mut_ptr(),
            options(nostack, preserves_flags),
        );
    }
    core::hint::black_box(registers)
}

/// Stops every live thread but the caller. The caller holds the thread
/// registry's lock and is not inside a deferral section of its own that
/// another stop could wait on. Returns the stop's epoch for [`resume_world`].
pub(crate) fn stop_world() -> u64 {
    let epoch = NEXT_EPOCH.fetch_add(1, Ordering::Relaxed);
    STOP_REQUEST.store(epoch, Ordering::SeqCst);
    let me = super::current().map(|r| r as *const ThreadRecord);
    let signal = SUSPEND_SIGNAL.load(Ordering::Relaxed);
    let others = |f: &mut dyn FnMut(&'static ThreadRecord)| {
        super::for_each_live(|record| {
            if Some(record as *const ThreadRecord) != me {
                f(record);
            }
        })
    };
    others(&mut |record| send(record, signal));
    let mut last_send = crate::os::now_ms();
    let mut spins = 0u32;
    loop {
        let mut waiting = 0;
        others(&mut |record| {
            if !record.handshake.acknowledged(epoch) {
                waiting += 1;
            }
        });
        if waiting == 0 {
            return epoch;
        }
        crate::sync::backoff(&mut spins);
        let now = crate::os::now_ms();
        if now - last_send >= RESEND_AFTER_MS {
            last_send = now;
            others(&mut |record| {
                if !record.handshake.acknowledged(epoch) {
                    send(record, signal);
                }
            });
        }
    }
}

/// Lets every thread stopped by `stop_world` run again.
pub(crate) fn resume_world(epoch: u64) {
    debug_assert_eq!(STOP_REQUEST.load(Ordering::Relaxed), epoch);
    STOP_REQUEST.store(0, Ordering::SeqCst);
    let me = super::current().map(|r| r as *const ThreadRecord);
    let signal = RESUME_SIGNAL.load(Ordering::Relaxed);
    super::for_each_live(|record| {
        if Some(record as *const ThreadRecord) != me {
            send(record, signal);
        }
    });
}

fn send(record: &ThreadRecord, signal: libc::c_int) {
    // SAFETY: the record is live, so its thread has not deregistered, and a
    // thread deregisters before it exits: the pthread_t is valid.
    unsafe { libc::pthread_kill(record.pthread(), signal) };
}
