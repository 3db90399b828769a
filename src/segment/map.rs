//! The segment map: answers "is this address inside a zonal segment, and
//! where does that segment start?" in O(1), lock-free, without false
//! positives.
//!
//! The address space is cut into *chunks* of [`SEGMENT_SIZE`] bytes (the
//! segment size and alignment). One byte per chunk says what the chunk is:
//!
//! * [`NONE`]: not zonal memory (or no longer: entries are cleared before a
//!   segment is unmapped or cached);
//! * [`SEGMENT`]: the first chunk of a small/medium/large segment;
//! * [`HUGE`]: the first chunk of a huge allocation's mapping;
//! * `n >= CONTINUATION`: a later chunk of a huge mapping, whose start is
//!   `n - HUGE` chunks further down (for mappings longer than the byte can
//!   say, the lookup hops again: one hop per 253 chunks, so about one per GiB).
//!
//! Publication: a segment's header is written before its entry is stored
//! with `Release`; a lookup loads with `Acquire`, so anyone who finds an
//! entry also sees the header. Entries are written only by the thread that
//! owns the mapping (creation or release), so there are no write races.
//!
//! The table covers the 48-bit user address space of x86-64 and AArch64
//! (64 Mi chunks, 64 MiB of zero-filled, untouched-until-used `.bss`).
//! Addresses above it are never zonal's.

use crate::sync::{AtomicU8, Ordering};

/// Segment size and alignment: 4 MiB.
pub const SEGMENT_SHIFT: u32 = 22;
pub const SEGMENT_SIZE: usize = 1 << SEGMENT_SHIFT;
pub const SEGMENT_MASK: usize = SEGMENT_SIZE - 1;

pub const NONE: u8 = 0;
pub const SEGMENT: u8 = 1;
pub const HUGE: u8 = 2;
pub const CONTINUATION: u8 = 3;
const MAX_HOP: usize = (u8::MAX - HUGE) as usize;

/// What a lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// The address lies in a small/medium/large segment starting here.
    Segment(usize),
    /// The address lies in the mapping of a huge allocation starting here.
    Huge(usize),
}

/// Reads the entry for `addr`'s chunk (the free fast path compares it with
/// [`SEGMENT`] directly).
#[inline]
pub fn entry(map: &[AtomicU8], addr: usize) -> u8 {
    match map.get(addr >> SEGMENT_SHIFT) {
        Some(e) => e.load(Ordering::Acquire),
        None => NONE,
    }
}

/// Finds the segment that contains `addr`, interior pointers of huge
/// mappings included.
///
/// A lookup reads several entries one after the other, so when it races
/// with the release of a huge mapping and the reuse of its range it can
/// follow a stale continuation entry to a start chunk that by then holds a
/// different mapping. A hop must land on a [`HUGE`] start: a [`SEGMENT`]
/// (always one chunk) reached by a hop is such a new mapping, and the
/// address is not in it. (A newer huge mapping reached that way may be
/// shorter than the hop; callers given [`Found::Huge`] check the address
/// against the header, as free and realloc do.)
pub fn lookup(map: &[AtomicU8], addr: usize) -> Option<Found> {
    let mut chunk = addr >> SEGMENT_SHIFT;
    let mut hopped = false;
    loop {
        let e = map.get(chunk)?.load(Ordering::Acquire);
        match e {
            NONE => return None,
            SEGMENT if hopped => return None,
            SEGMENT => return Some(Found::Segment(chunk << SEGMENT_SHIFT)),
            HUGE => return Some(Found::Huge(chunk << SEGMENT_SHIFT)),
            hop @ CONTINUATION.. => {
                chunk -= (hop - HUGE) as usize;
                hopped = true;
            }
        }
    }
}

/// Publishes a segment (or huge mapping) of `chunks` chunks at `base`.
/// Writes continuation entries first and the start entry last, so a
/// concurrent lookup never hops to a start that is not yet published.
pub fn register(map: &[AtomicU8], base: usize, chunks: usize, huge: bool) {
    debug_assert!(base & SEGMENT_MASK == 0 && chunks >= 1);
    debug_assert!(huge || chunks == 1, "a segment is one chunk (see `lookup`)");
    let first = base >> SEGMENT_SHIFT;
    for i in 1..chunks {
        let hop = i.min(MAX_HOP);
        let hop_entry = (hop + HUGE as usize) as u8;
        map[first + i].store(hop_entry, Ordering::Release);
    }
    map[first].store(if huge { HUGE } else { SEGMENT }, Ordering::Release);
}

/// Withdraws a segment: start entry first, so a lookup that races with the
/// release sees either the whole segment or none of it.
pub fn unregister(map: &[AtomicU8], base: usize, chunks: usize) {
    let first = base >> SEGMENT_SHIFT;
    map[first].store(NONE, Ordering::Release);
    for i in 1..chunks {
        map[first + i].store(NONE, Ordering::Release);
    }
}

#[cfg(not(loom))]
mod global {
    use super::*;

    /// Chunks covering the 48-bit address space.
    pub(crate) const MAP_ENTRIES: usize = 1 << (48 - SEGMENT_SHIFT);

    /// The process-wide segment map (zero-initialised `.bss`; only the parts
    /// covering addresses we use are ever touched).
    pub(crate) static SEGMENT_MAP: [AtomicU8; MAP_ENTRIES] =
        [const { AtomicU8::new(NONE) }; MAP_ENTRIES];

    /// The map as a slice, for the functions above.
    #[inline(always)]
    pub(crate) fn map() -> &'static [AtomicU8] {
        &SEGMENT_MAP
    }
}
#[cfg(not(loom))]
pub(crate) use global::*;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn table(n: usize) -> Vec<AtomicU8> {
        (0..n).map(|_| AtomicU8::new(0)).collect()
    }

    #[test]
    fn segment_and_interior_lookups() {
        let map = table(1024);
        let base = 5 << SEGMENT_SHIFT;
        register(&map, base, 1, false);
        assert_eq!(lookup(&map, base), Some(Found::Segment(base)));
        assert_eq!(
            lookup(&map, base + SEGMENT_SIZE - 1),
            Some(Found::Segment(base))
        );
        assert_eq!(lookup(&map, base + SEGMENT_SIZE), None);
        assert_eq!(lookup(&map, base - 1), None);
        unregister(&map, base, 1);
        assert_eq!(lookup(&map, base), None);
    }

    #[test]
    fn long_huge_mappings_hop_back_to_their_start() {
        let map = table(2048);
        let base = 7 << SEGMENT_SHIFT;
        let chunks = 700; // needs several hops
        register(&map, base, chunks, true);
        for i in [0, 1, 252, 253, 254, 600, chunks - 1] {
            let addr = base + i * SEGMENT_SIZE + 12345;
            assert_eq!(lookup(&map, addr), Some(Found::Huge(base)), "chunk {i}");
        }
        assert_eq!(lookup(&map, base + chunks * SEGMENT_SIZE), None);
        unregister(&map, base, chunks);
        assert!((0..2048).all(|i| map[i].load(Ordering::Relaxed) == NONE));
    }

    #[test]
    fn a_segment_reached_by_a_hop_is_not_a_match() {
        // What a lookup can see when it reads a stale continuation entry of
        // a released huge mapping whose start chunk now holds a segment.
        let map = table(16);
        let base = 3 << SEGMENT_SHIFT;
        register(&map, base, 3, true);
        map[3].store(SEGMENT, Ordering::Relaxed);
        assert_eq!(lookup(&map, base + 2 * SEGMENT_SIZE), None);
        assert_eq!(lookup(&map, base + 5), Some(Found::Segment(base)));
    }

    #[test]
    fn addresses_beyond_the_table_are_foreign() {
        let map = table(4);
        assert_eq!(lookup(&map, usize::MAX), None);
        assert_eq!(entry(&map, usize::MAX), NONE);
    }
}
