//! A model of the stop-the-world handshake (`thread::handshake`, driven as
//! `thread::suspend` drives it): a collector requests a stop while a
//! mutator updates a structure inside a deferral section.
//!
//! A signal can arrive between any two instructions of the mutator; the
//! model delivers it at every step boundary of the mutator's code (each
//! `poll`), where the handler's decision (`on_signal`) runs on the mutator
//! thread, as a real handler does. The collector resends the signal while it
//! waits, as `stop_world` does.
//!
//! Checked: a thread acknowledges a stop only outside its section, with
//! its update complete or not begun; a request delivered inside the
//! section is acknowledged when the section ends (no lost request). The
//! wait for the resume signal after the acknowledgement is a spin loop,
//! which loom cannot explore, so the model ends each stop there.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use zonal::loom_api::handshake::{Handshake, OnSignal};

const EPOCH: u64 = 1;

struct World {
    handshake: Handshake,
    /// `STOP_REQUEST`.
    request: AtomicU64,
    /// A suspend signal is pending for the mutator.
    signal: AtomicBool,
    /// The structure the mutator updates inside its section: both halves
    /// must be equal whenever the mutator is stopped.
    first: AtomicUsize,
    second: AtomicUsize,
    in_section: AtomicBool,
}

impl World {
    /// Delivers a pending signal: the handler's logic.
    fn poll(&self) {
        // Delivery synchronises like `pthread_kill` does: the handler sees
        // what the sender wrote before sending.
        if self
            .signal
            .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let request = self.request.load(Ordering::Acquire);
            if self.handshake.on_signal(request) == OnSignal::Stop {
                self.park(request);
            }
        }
    }

    /// `wait_while_stopped`, up to the acknowledgement: the thread must be
    /// outside its section with its update complete or not begun. (The
    /// wait for the resume that follows is a spin loop, which loom cannot
    /// explore; the model ends the stop here.)
    fn park(&self, request: u64) {
        assert!(
            !self.in_section.load(Ordering::Relaxed),
            "stopped inside a section"
        );
        assert_eq!(
            self.first.load(Ordering::Relaxed),
            self.second.load(Ordering::Relaxed),
            "stopped with a half-done update"
        );
        self.handshake.acknowledge(request, 0x1000);
    }

    /// `DeferGuard::drop`: leave, then serve a deferred request.
    fn leave(&self) {
        if self.handshake.leave() {
            let request = self.request.load(Ordering::Acquire);
            if self.handshake.needs_stop(request) {
                self.park(request);
            }
        }
    }
}

#[test]
fn a_thread_is_stopped_only_outside_its_deferral_sections() {
    loom::model(|| {
        let world = Arc::new(World {
            handshake: Handshake::new(),
            request: AtomicU64::new(0),
            signal: AtomicBool::new(false),
            first: AtomicUsize::new(0),
            second: AtomicUsize::new(0),
            in_section: AtomicBool::new(false),
        });
        let mutator = {
            let world = world.clone();
            thread::spawn(move || {
                world.poll();
                world.handshake.enter();
                world.in_section.store(true, Ordering::Relaxed);
                world.poll();
                world.first.store(1, Ordering::Relaxed);
                world.poll();
                world.second.store(1, Ordering::Relaxed);
                world.in_section.store(false, Ordering::Relaxed);
                world.poll();
                world.leave();
                world.poll();
            })
        };
        // The collector: request the stop and send the signal.
        world.request.store(EPOCH, Ordering::SeqCst);
        world.signal.store(true, Ordering::Release);
        mutator.join().unwrap();
        // No lost request: a signal the mutator received led to an
        // acknowledgement (at once, or when its section ended), unless the
        // stop was requested after the mutator's last step, in which case
        // the signal is still pending.
        assert!(
            world.handshake.acknowledged(EPOCH) || world.signal.load(Ordering::Acquire),
            "a delivered stop request was never acknowledged"
        );
        if world.handshake.acknowledged(EPOCH) {
            assert_eq!(world.handshake.stopped_sp(), 0x1000);
        }
    });
}
