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
//! | `ZONAL_PURGE_DELAY_MS` | `1000` | how long a free page stays committed before it is decommitted; `0` decommits at once |
//! | `ZONAL_SEGMENT_CACHE` | `8` | empty segments kept for reuse instead of unmapped |
//! | `ZONAL_HUGE_OS_PAGES` | `1` | ask the kernel for transparent huge pages (`MADV_HUGEPAGE`) on segments and huge blocks; `0` keeps 4 KiB pages |
//! | `ZONAL_RETAIN_MIB` | `32` | free memory kept committed (for reuse without page faults) before the oldest is decommitted at once |

use crate::sync::{AtomicU64, AtomicU8, Ordering};

const UNREAD: u8 = 0;
const READING: u8 = 1;
const READ: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNREAD);
static PURGE_DELAY_MS: AtomicU64 = AtomicU64::new(1000);
static SEGMENT_CACHE: AtomicU64 = AtomicU64::new(8);
static RETAIN_MIB: AtomicU64 = AtomicU64::new(32);
static HUGE_OS_PAGES: AtomicU64 = AtomicU64::new(1);

/// Parsed option values.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    pub purge_delay_ms: u64,
    pub segment_cache: usize,
    pub retain_bytes: usize,
    pub huge_os_pages: bool,
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
        huge_os_pages: HUGE_OS_PAGES.load(Ordering::Relaxed) != 0,
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
    if let Some(v) = read_u64(c"ZONAL_RETAIN_MIB") {
        RETAIN_MIB.store(v.min(1 << 20), Ordering::Relaxed);
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
