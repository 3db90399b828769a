//! Run-time options, read once from `ZONAL_*` environment variables.
//!
//! Options are read with `libc::getenv` (which does not allocate) the first
//! time any slow path needs them, so they work even when zonal is the global
//! allocator and the process has not finished starting. Every option is
//! listed in the README.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `ZONAL_SHOW_STATS` | `0` | `1`: print the statistics table to stderr at exit |
//! | `ZONAL_DEFER_FREES` | `1` | frees of blocks up to 1 KiB are queued per thread and carried out 64 at a time (invalid and double frees among them are reported when the queue is carried out); `0` carries out every free at once, so such a fault aborts inside the faulty call |
//! | `ZONAL_PURGE_DELAY_MS` | `1000` | how long a free page stays committed before it is decommitted; `0` decommits at once |
//! | `ZONAL_SEGMENT_CACHE` | `8` | empty segments kept for reuse instead of unmapped |
//! | `ZONAL_HUGE_OS_PAGES` | `1` | ask the kernel for transparent huge pages (`MADV_HUGEPAGE`) on huge blocks, and on segments once zonal holds 32 MiB committed; `0` keeps 4 KiB pages |
//! | `ZONAL_RETAIN_MIB` | `32` | free memory kept committed (for reuse without page faults) before the oldest is decommitted at once |
//! | `ZONAL_RETAIN_MAX_MIB` | `256` | the most the retention budget grows to when memory it made zonal decommit is asked for again within the purge delay; at most `ZONAL_RETAIN_MIB` disables the growth |
//! | `ZONAL_GC_SUSPEND_SIGNAL` | `SIGPWR` (30) | signal number that suspends threads for a collection |
//! | `ZONAL_GC_RESUME_SIGNAL` | `SIGXCPU` (24) | signal number that resumes them |
//! | `ZONAL_GC_MIN_THRESHOLD_KIB` | `16384` | GC-zone bytes allocated between automatic collections, at least |
//! | `ZONAL_GC_GROWTH_PERCENT` | `67` | the full trigger, as a percentage of the last collection's scan work (`2 * scanned live + atomic live / 4 + roots`): the next automatic collection comes when the GC heap fills, and the heap grows only when less than half of the full trigger would be allocated before it does (see `src/gc/collect.rs`) |
//! | `ZONAL_GC_MARK_STACK` | `4194304` | entries the collector's mark stack may hold before it falls back to overflow rescans |
//! | `ZONAL_GC_DISABLE` | `0` | `1`: no automatic collections (explicit `gc::collect` still runs) |
//! | `ZONAL_STACK_CAP_MIB` | `64` | stack-zone memory one thread may hold (frames' chunks and blocks); beyond it frame allocations fail |

use crate::sync::{AtomicU64, AtomicU8, Ordering};

const UNREAD: u8 = 0;
const READING: u8 = 1;
const READ: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNREAD);
static PURGE_DELAY_MS: AtomicU64 = AtomicU64::new(1000);
static SEGMENT_CACHE: AtomicU64 = AtomicU64::new(8);
static RETAIN_MIB: AtomicU64 = AtomicU64::new(32);
static RETAIN_MAX_MIB: AtomicU64 = AtomicU64::new(256);
static HUGE_OS_PAGES: AtomicU64 = AtomicU64::new(1);
static DEFER_FREES: AtomicU64 = AtomicU64::new(1);
static GC_SUSPEND_SIGNAL: AtomicU64 = AtomicU64::new(libc::SIGPWR as u64);
static GC_RESUME_SIGNAL: AtomicU64 = AtomicU64::new(libc::SIGXCPU as u64);
static GC_MIN_THRESHOLD_KIB: AtomicU64 = AtomicU64::new(16384);
static GC_GROWTH_PERCENT: AtomicU64 = AtomicU64::new(67);
static GC_MARK_STACK: AtomicU64 = AtomicU64::new(1 << 22);
static GC_DISABLE: AtomicU64 = AtomicU64::new(0);
static STACK_CAP_MIB: AtomicU64 = AtomicU64::new(64);

/// Parsed option values.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    pub purge_delay_ms: u64,
    pub segment_cache: usize,
    pub retain_bytes: usize,
    /// At least `retain_bytes`.
    pub retain_max_bytes: usize,
    pub huge_os_pages: bool,
    pub defer_frees: bool,
    pub gc_suspend_signal: libc::c_int,
    pub gc_resume_signal: libc::c_int,
    pub gc_min_threshold: usize,
    pub gc_growth_percent: usize,
    pub gc_mark_stack: usize,
    pub gc_disable: bool,
    pub stack_cap: usize,
}

/// Returns the options, reading the environment on first use.
pub(crate) fn get() -> Options {
    if STATE.load(Ordering::Acquire) != READ {
        init();
    }
    Options {
        purge_delay_ms: PURGE_DELAY_MS.load(Ordering::Relaxed),
        segment_cache: SEGMENT_CACHE.load(Ordering::Relaxed) as usize,
        retain_bytes: (RETAIN_MIB.load(Ordering::Relaxed) as usize) << 20,
        retain_max_bytes: (RETAIN_MAX_MIB
            .load(Ordering::Relaxed)
            .max(RETAIN_MIB.load(Ordering::Relaxed)) as usize)
            << 20,
        huge_os_pages: HUGE_OS_PAGES.load(Ordering::Relaxed) != 0,
        defer_frees: DEFER_FREES.load(Ordering::Relaxed) != 0,
        gc_suspend_signal: GC_SUSPEND_SIGNAL.load(Ordering::Relaxed) as libc::c_int,
        gc_resume_signal: GC_RESUME_SIGNAL.load(Ordering::Relaxed) as libc::c_int,
        gc_min_threshold: (GC_MIN_THRESHOLD_KIB.load(Ordering::Relaxed) as usize) << 10,
        gc_growth_percent: GC_GROWTH_PERCENT.load(Ordering::Relaxed) as usize,
        gc_mark_stack: GC_MARK_STACK.load(Ordering::Relaxed) as usize,
        gc_disable: GC_DISABLE.load(Ordering::Relaxed) != 0,
        stack_cap: (STACK_CAP_MIB.load(Ordering::Relaxed) as usize) << 20,
    }
}

#[cold]
fn init() {
    if STATE
        .compare_exchange(UNREAD, READING, Ordering::Acquire, Ordering::Acquire)
        .is_err()
    {
        // Another thread is reading: defaults are fine until it finishes.
        return;
    }
    if read_u64(c"ZONAL_SHOW_STATS").is_some_and(|v| v != 0) {
        crate::stats::print_at_exit();
    }
    if let Some(v) = read_u64(c"ZONAL_PURGE_DELAY_MS") {
        PURGE_DELAY_MS.store(v, Ordering::Relaxed);
    }
    if let Some(v) = read_u64(c"ZONAL_SEGMENT_CACHE") {
        SEGMENT_CACHE.store(v.min(4096), Ordering::Relaxed);
    }
    if let Some(v) = read_u64(c"ZONAL_HUGE_OS_PAGES") {
        HUGE_OS_PAGES.store(v, Ordering::Relaxed);
    }
    if let Some(v) = read_u64(c"ZONAL_DEFER_FREES") {
        DEFER_FREES.store(v, Ordering::Relaxed);
    }
    if let Some(v) = read_u64(c"ZONAL_RETAIN_MIB") {
        RETAIN_MIB.store(v.min(1 << 20), Ordering::Relaxed);
    }
    if let Some(v) = read_u64(c"ZONAL_RETAIN_MAX_MIB") {
        RETAIN_MAX_MIB.store(v.min(1 << 20), Ordering::Relaxed);
    }
    let signal_ok =
        |v: u64| (1..=64).contains(&v) && v != libc::SIGKILL as u64 && v != libc::SIGSTOP as u64;
    let suspend = read_u64(c"ZONAL_GC_SUSPEND_SIGNAL").filter(|&v| signal_ok(v));
    let resume = read_u64(c"ZONAL_GC_RESUME_SIGNAL").filter(|&v| signal_ok(v));
    if let Some(v) = suspend {
        GC_SUSPEND_SIGNAL.store(v, Ordering::Relaxed);
    }
    if let Some(v) = resume {
        GC_RESUME_SIGNAL.store(v, Ordering::Relaxed);
    }
    if GC_SUSPEND_SIGNAL.load(Ordering::Relaxed) == GC_RESUME_SIGNAL.load(Ordering::Relaxed) {
        crate::os::write_stderr(
            b"zonal: ZONAL_GC_SUSPEND_SIGNAL and ZONAL_GC_RESUME_SIGNAL must differ; using the defaults\n",
        );
        GC_SUSPEND_SIGNAL.store(libc::SIGPWR as u64, Ordering::Relaxed);
        GC_RESUME_SIGNAL.store(libc::SIGXCPU as u64, Ordering::Relaxed);
    }
    if let Some(v) = read_u64(c"ZONAL_GC_MIN_THRESHOLD_KIB") {
        GC_MIN_THRESHOLD_KIB.store(v.clamp(64, 1 << 30), Ordering::Relaxed);
    }
    if let Some(v) = read_u64(c"ZONAL_GC_GROWTH_PERCENT") {
        GC_GROWTH_PERCENT.store(v.clamp(10, 10_000), Ordering::Relaxed);
    }
    if let Some(v) = read_u64(c"ZONAL_GC_MARK_STACK") {
        GC_MARK_STACK.store(v.clamp(16, 1 << 28), Ordering::Relaxed);
    }
    if let Some(v) = read_u64(c"ZONAL_GC_DISABLE") {
        GC_DISABLE.store(v, Ordering::Relaxed);
    }
    if let Some(v) = read_u64(c"ZONAL_STACK_CAP_MIB") {
        STACK_CAP_MIB.store(v.min(1 << 30), Ordering::Relaxed);
    }
    STATE.store(READ, Ordering::Release);
}

/// Reads a decimal environment variable; `None` when unset or malformed.
fn read_u64(name: &core::ffi::CStr) -> Option<u64> {
    // SAFETY: `name` is NUL-terminated; getenv returns NULL or a
    // NUL-terminated string that stays valid while the environment is not
    // modified, and we copy out of it at once.
    let value = unsafe { libc::getenv(name.as_ptr()) };
    if value.is_null() {
        return None;
    }
    // SAFETY: non-null result of getenv is a valid C string (see above).
    let bytes = unsafe { core::ffi::CStr::from_ptr(value) }.to_bytes();
    parse_u64(bytes)
}

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 19 {
        return None;
    }
    bytes.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::parse_u64;

    #[test]
    fn parses_decimal_and_rejects_garbage() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"1250"), Some(1250));
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"12a"), None);
        assert_eq!(parse_u64(b"-1"), None);
    }
}
