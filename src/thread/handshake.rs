//! A thread's side of the stop-the-world handshake, as a state machine of
//! its own (no signals, no thread registry), so that the `loom-tests` crate
//! can model-check exactly this code; `suspend` drives it from the signal
//! handler and from the end of deferral sections.
//!
//! * `depth` counts the deferral sections the thread is in and `pending`
//!   records a stop request that arrived inside one. Both are written only
//!   by their own thread (the signal handler runs on it), so plain loads
//!   and stores suffice; compiler fences keep the compiler from moving the
//!   section's work across `enter`/`leave`.
//! * `acked_epoch` is the last stop the thread acknowledged, published with
//!   `Release` after `stopped_sp`, so that a collector that reads it with
//!   `Acquire` sees the stack pointer and everything the thread wrote before
//!   stopping.
//!
//! Invariant (what the loom model checks): a thread acknowledges a stop only
//! outside every deferral section, and a request that arrives inside one is
//! acknowledged when the outermost section ends.

use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use core::sync::atomic::compiler_fence;

/// What a suspend signal asks of the thread it interrupts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnSignal {
    /// No stop is under way, or this one is already acknowledged.
    Ignore,
    /// Inside a deferral section: recorded, served when it ends.
    Deferred,
    /// Stop here: acknowledge and wait.
    Stop,
}

/// A thread's side of the handshake.
#[derive(Debug)]
pub struct Handshake {
    depth: AtomicUsize,
    pending: AtomicBool,
    stopped_sp: AtomicUsize,
    acked_epoch: AtomicU64,
}

impl Handshake {
    /// A handshake outside every section, with nothing acknowledged.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Handshake {
            depth: AtomicUsize::new(0),
            pending: AtomicBool::new(false),
            stopped_sp: AtomicUsize::new(0),
            acked_epoch: AtomicU64::new(0),
        }
    }

    /// A handshake outside every section, with nothing acknowledged.
    #[cfg(loom)]
    pub fn new() -> Self {
        Handshake {
            depth: AtomicUsize::new(0),
            pending: AtomicBool::new(false),
            stopped_sp: AtomicUsize::new(0),
            acked_epoch: AtomicU64::new(0),
        }
    }

    /// Back to the state of [`Handshake::new`] (a new registration, or the
    /// only thread of a forked child).
    pub fn reset(&self) {
        self.depth.store(0, Ordering::Relaxed);
        self.pending.store(false, Ordering::Relaxed);
        self.acked_epoch.store(0, Ordering::Relaxed);
    }

    /// Enters a deferral section (own thread only).
    #[inline]
    pub fn enter(&self) {
        self.depth
            .store(self.depth.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
    }

    /// Leaves a deferral section (own thread only); `true` when a stop
    /// request arrived inside the outermost section and must be served now.
    #[inline]
    pub fn leave(&self) -> bool {
        compiler_fence(Ordering::SeqCst);
        let depth = self.depth.load(Ordering::Relaxed) - 1;
        self.depth.store(depth, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        if depth == 0 && self.pending.load(Ordering::Relaxed) {
            self.pending.store(false, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// The signal handler's decision for stop `request` (0: none).
    pub fn on_signal(&self, request: u64) -> OnSignal {
        if request == 0 || self.acked_epoch.load(Ordering::Relaxed) == request {
            OnSignal::Ignore
        } else if self.depth.load(Ordering::Relaxed) > 0 {
            self.pending.store(true, Ordering::Relaxed);
            OnSignal::Deferred
        } else {
            OnSignal::Stop
        }
    }

    /// Whether stop `request` (0: none) still needs this thread to stop.
    pub fn needs_stop(&self, request: u64) -> bool {
        request != 0 && self.acked_epoch.load(Ordering::Relaxed) != request
    }

    /// Records where the thread stopped and acknowledges stop `request`.
    pub fn acknowledge(&self, request: u64, stack_pointer: usize) {
        self.stopped_sp.store(stack_pointer, Ordering::Relaxed);
        self.acked_epoch.store(request, Ordering::Release);
    }

    /// Whether the thread acknowledged stop `epoch` (collector side).
    pub fn acknowledged(&self, epoch: u64) -> bool {
        self.acked_epoch.load(Ordering::Acquire) == epoch
    }

    /// Where the stopped thread's stack ends (valid while it is stopped).
    pub fn stopped_sp(&self) -> usize {
        self.stopped_sp.load(Ordering::Relaxed)
    }
}
