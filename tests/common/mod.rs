//! Helpers shared by the integration tests: a deterministic RNG, fast
//! position-sensitive fill patterns, and the child-process pattern.
#![allow(dead_code)]

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// xorshift64*: deterministic, allocation-free, good enough for tests.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // Never zero (xorshift's fixed point); spread small seeds apart.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03 | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo + 1) as u64) as usize
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// A size spread log-uniformly over `lo..=hi`.
    pub fn log_size(&mut self, lo: usize, hi: usize) -> usize {
        let lo_bits = usize::BITS - lo.leading_zeros();
        let hi_bits = usize::BITS - hi.leading_zeros();
        let bits = self.range(lo_bits as usize, hi_bits as usize) as u32;
        let top = if bits >= usize::BITS {
            usize::MAX
        } else {
            (1usize << bits) - 1
        };
        self.range(lo, hi.min(top).max(lo))
    }
}

/// Mixes a few numbers into one pattern seed.
pub fn seed_of(parts: &[u64]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &p in parts {
        h ^= p;
        h = h.wrapping_mul(0x100_0000_01b3).rotate_left(29);
    }
    h
}

const PERIOD: usize = 1 << 20;

/// Pseudo-random bytes, `PERIOD + 4096` long; blocks are filled with a
/// window of it that depends on the seed, so every byte depends on its
/// position and the seed.
fn pattern() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let mut rng = Rng::new(0x5eed);
        let mut v = vec![0u8; PERIOD + 4096];
        for chunk in v.chunks_mut(8) {
            let x = rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&x[..chunk.len()]);
        }
        v
    })
}

fn pattern_chunks(len: usize, seed: u64) -> impl Iterator<Item = (usize, &'static [u8])> {
    let p = pattern();
    let start = (seed % 4093) as usize;
    (0..len).step_by(PERIOD).map(move |at| {
        let n = (len - at).min(PERIOD);
        // The seed also perturbs which window each period uses.
        let s = (start + (at / PERIOD) * 7) % 4096;
        (at, &p[s..s + n])
    })
}

/// Fills `buf` with the pattern of `seed`.
pub fn fill(buf: &mut [u8], seed: u64) {
    let len = buf.len();
    for (at, src) in pattern_chunks(len, seed) {
        buf[at..at + src.len()].copy_from_slice(src);
    }
    stamp(buf, seed);
}

/// Writes the seed into the first and last 8 bytes as well, so that two
/// seeds that share a window still differ.
fn stamp(buf: &mut [u8], seed: u64) {
    let n = buf.len();
    if n >= 8 {
        buf[..8].copy_from_slice(&seed.to_le_bytes());
        buf[n - 8..].copy_from_slice(&(!seed).to_le_bytes());
    }
}

/// Whether `buf` holds the pattern of `seed` (as written by [`fill`]).
pub fn check(buf: &[u8], seed: u64) -> bool {
    check_prefix(buf, seed, buf.len())
}

/// Whether a prefix of `len` bytes of a buffer filled with `seed` (whose
/// full length was `full`) is intact: everything but the tail stamp.
pub fn check_prefix(buf: &[u8], seed: u64, full: usize) -> bool {
    let len = buf.len();
    assert!(len <= full);
    if full < 16 {
        let mut copy = [0u8; 16];
        fill(&mut copy[..full], seed);
        return buf == &copy[..len];
    }
    // Expected bytes: pattern, with the head stamp, and the tail stamp only
    // where it falls inside the prefix.
    let mut ok = true;
    for (at, src) in pattern_chunks(len, seed) {
        let got = &buf[at..at + src.len()];
        let lo = 8usize.saturating_sub(at).min(got.len());
        let hi = (full - 8).saturating_sub(at).min(got.len()).max(lo);
        ok &= got[lo..hi] == src[lo..hi];
    }
    let head = seed.to_le_bytes();
    ok &= buf[..len.min(8)] == head[..len.min(8)];
    if len > full - 8 {
        let tail = (!seed).to_le_bytes();
        ok &= buf[full - 8..len] == tail[..len - (full - 8)];
    }
    ok
}

/// Whether every byte of `buf` is zero (memcmp against a zero page).
pub fn is_zero(buf: &[u8]) -> bool {
    static ZERO: [u8; 65536] = [0; 65536];
    buf.chunks(ZERO.len()).all(|c| c == &ZERO[..c.len()])
}

/// Re-runs this test binary, running only `test_name` (with
/// `--nocapture`), with `env` set, and returns its output. A child still
/// running after `timeout` is killed (SIGKILL), so a hang fails the test
/// instead of stalling the suite.
pub fn run_child(test_name: &str, env: &[(&str, &str)], timeout: Duration) -> Output {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test_name, "--nocapture", "--test-threads=1"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn child test process");
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
            let _ = child.kill();
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
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// The signal that killed a child, if any.
pub fn signal_of(out: &Output) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    out.status.signal()
}

/// Resident set size of this process in bytes (`/proc/self/statm`).
pub fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .expect("statm field 2")
        .parse()
        .expect("statm number");
    pages * page_size()
}

pub fn page_size() -> usize {
    extern "C" {
        fn sysconf(name: i32) -> i64;
    }
    const SC_PAGESIZE: i32 = 30; // Linux
                                 // SAFETY: sysconf has no preconditions.
    let n = unsafe { sysconf(SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}
