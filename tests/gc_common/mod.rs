//! Helpers shared by the GC tests (`tests/gc_*.rs`): payloads whose every
//! word can be checked, garbage churn that makes freed blocks get reused,
//! stack clobbering, hidden (unreachable) objects as negative controls, and
//! running a test's body in a child process of its own.
#![allow(dead_code)]

use std::hint::black_box;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use zonal::{gc, Gc, GcWeak};

/// Words of a [`Payload`]: 31 × 8 = 248 bytes, a 256-byte block with the
/// collector's extra byte; the garbage of [`churn`] has the same size, so
/// it lands in the blocks that collections free.
pub const WORDS: usize = 31;

/// An object whose every word depends on its seed and position, so that
/// any overwrite (a free-list link, a reused block) is detected.
#[derive(Debug)]
pub struct Payload {
    pub words: [u64; WORDS],
}

/// The expected word `i` of the payload of `seed` (never zero, and never a
/// plausible heap address: the top bits are set).
pub fn word(seed: u64, i: usize) -> u64 {
    let mut x = seed
        .wrapping_add((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    x | 0xF000_0000_0000_0001
}

impl Payload {
    pub fn new(seed: u64) -> Payload {
        let mut words = [0u64; WORDS];
        for (i, w) in words.iter_mut().enumerate() {
            *w = word(seed, i);
        }
        Payload { words }
    }

    /// Whether every word is the one `seed` wrote (read volatile: the
    /// compiler must not reuse values it read before a collection).
    pub fn intact(&self, seed: u64) -> bool {
        self.words
            .iter()
            .enumerate()
            .all(|(i, w)| unsafe { std::ptr::read_volatile(w) } == word(seed, i))
    }
}

/// Checks the payload at `p` (a raw pointer that alone kept it alive).
///
/// # Safety
/// `p` must point to a live `Payload` (the collector's job).
pub unsafe fn intact_at(p: *const Payload, seed: u64) -> bool {
    // SAFETY: by the contract.
    unsafe { (*p).intact(seed) }
}

/// A fresh `Gc<Payload>` (not inlined, so no copy of the handle stays in
/// the caller's frame by accident).
#[inline(never)]
pub fn fresh(seed: u64) -> Gc<Payload> {
    black_box(Gc::new(Payload::new(seed)))
}

/// Overwrites a good part of the stack below the caller with zeros, so
/// stale copies of pointers in dead frames do not keep objects alive.
#[inline(never)]
pub fn clobber_stack(depth: usize) -> u64 {
    let mut buf = [0u64; 2048];
    black_box(&mut buf);
    if depth == 0 {
        buf[0]
    } else {
        clobber_stack(depth - 1).wrapping_add(buf[7])
    }
}

/// Seeds of churn garbage (distinct from every test's seeds).
const GARBAGE_SEED: u64 = 0xDEAD_0000_0000;

/// Allocates garbage of the payload's size (`rounds` × 4 MiB) and collects
/// after each round, then clobbers the stack and collects again: a block
/// that was freed while still in use would by then have been reused and
/// overwritten (or carry a free-list link).
#[inline(never)]
pub fn churn(rounds: u64) {
    for round in 0..rounds {
        for i in 0..16_384u64 {
            black_box(Gc::new(Payload::new(GARBAGE_SEED ^ (round << 20) ^ i)));
        }
        gc::collect();
    }
    clobber_stack(8);
    gc::collect();
    gc::collect();
}

/// `n` objects that only weak handles (which do not keep them alive) and
/// XOR-ed addresses (which the collector cannot recognise) refer to.
pub struct Hidden {
    pub weak: Vec<GcWeak<Payload>>,
    pub xored: Vec<usize>,
}

pub const XOR: usize = 0x5A5A_5A5A_5A5A_5A5A;

/// Makes `n` hidden objects (in a frame of its own that later calls
/// overwrite).
#[inline(never)]
pub fn hidden(n: usize, seed: u64) -> Hidden {
    let mut weak = Vec::with_capacity(n);
    let mut xored = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let g = fresh(seed + i);
        xored.push(Gc::as_ptr(g) as usize ^ XOR);
        weak.push(Gc::downgrade(g));
    }
    clobber_stack(2);
    Hidden { weak, xored }
}

/// How many of the weak handles still upgrade.
#[inline(never)]
pub fn alive<T>(weak: &[GcWeak<T>]) -> usize {
    weak.iter().filter(|w| w.upgrade().is_some()).count()
}

impl Hidden {
    /// Asserts that the collector reclaimed at least 3/4 of the hidden
    /// objects: the negative control that shows the test around it can
    /// fail (conservative scanning may keep a few alive through stale
    /// words, never most of them).
    pub fn assert_mostly_reclaimed(&self, what: &str) {
        let n = self.weak.len();
        let left = alive(&self.weak);
        assert!(
            left <= n / 4,
            "{what}: {left} of {n} unreachable objects survived the collections \
             (the collector did not reclaim them; the test proves nothing)"
        );
    }
}

/// Runs `body` in a child process of its own (this test binary with
/// `--exact name`; ignored tests too, since the parent decided to run it),
/// so process-wide state (statistics, thresholds, other tests' threads and
/// objects) does not interfere. The child is killed after `timeout` (a hang
/// fails the test).
pub fn isolated(name: &str, env: &[(&str, &str)], timeout: Duration, body: fn()) {
    const CHILD: &str = "ZONAL_GC_TEST_CHILD";
    match std::env::var(CHILD) {
        Ok(selected) if selected == name => body(),
        Ok(_) => {}
        Err(_) => {
            let mut all = vec![(CHILD, name)];
            all.extend_from_slice(env);
            let out = run_child(name, &all, timeout);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{name} failed in its child process: {:?}\nstdout:\n{stdout}\nstderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            // The child ran exactly this test (not zero tests: a typo in the
            // name would otherwise pass).
            assert!(
                stdout.contains("1 passed"),
                "{name}: the child did not run the test:\n{stdout}"
            );
        }
    }
}

/// `common::run_child` with `--include-ignored`: runs `test_name` alone in
/// a child process (output captured, killed after `timeout`).
pub fn run_child(test_name: &str, env: &[(&str, &str)], timeout: Duration) -> Output {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        test_name,
        "--nocapture",
        "--test-threads=1",
        "--include-ignored",
    ]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    // A process group of its own: on a timeout the whole group is killed,
    // processes the child forked included (a forked grandchild that hangs
    // would otherwise keep the output pipes open, and this wait forever).
    cmd.process_group(0);
    let mut child = cmd.spawn().expect("spawn child test process");
    let group = child.id() as i32;
    let mut stdout = child.stdout.take().expect("stdout pipe");
    let mut stderr = child.stderr.take().expect("stderr pipe");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > timeout {
            // SAFETY: kill has no memory-safety preconditions; the group is
            // the child's own (see above).
            unsafe { libc::kill(-group, libc::SIGKILL) };
            let status = child.wait().expect("wait after kill");
            let stdout = out_reader.join().unwrap();
            let stderr = err_reader.join().unwrap();
            panic!(
                "child {test_name} {env:?} timed out after {timeout:?} (killed, {status:?})\n\
                 stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // A process the child left behind (a hung forked child it gave up on)
    // keeps the pipes open: then it is still in the group, which goes too.
    let exited = Instant::now();
    while !(out_reader.is_finished() && err_reader.is_finished()) {
        if exited.elapsed() > Duration::from_secs(5) {
            // SAFETY: as above; the group still has a member (the process
            // holding the pipes), so its id cannot have been reused.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}
