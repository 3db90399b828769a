//! Models of `segment::map`: publishing and withdrawing segments and huge
//! mappings on a small table, with concurrent lookups.
#![cfg(loom)]

use loom::cell::UnsafeCell as LoomUnsafeCell;
use loom::sync::Arc;
use loom::thread;
use zonal::loom_api::map::{self, Found, SEGMENT, SEGMENT_SHIFT, SEGMENT_SIZE};
use zonal::loom_api::{AtomicBool, AtomicU8};

/// What a segment's header holds in these models.
const HEADER: usize = 42;

/// A segment map of `chunks` chunks and one segment header.
struct Map {
    table: Vec<AtomicU8>,
    /// Stands for the header at the start of the mapping: written before
    /// `register`, read by whoever finds the mapping. loom fails the model
    /// if such a read is not ordered after the write.
    header: LoomUnsafeCell<usize>,
}

// SAFETY: `header` is a loom cell whose accesses loom checks.
unsafe impl Sync for Map {}
// SAFETY: as above.
unsafe impl Send for Map {}

impl Map {
    fn new(chunks: usize) -> Arc<Self> {
        Arc::new(Map {
            table: (0..chunks).map(|_| AtomicU8::new(0)).collect(),
            header: LoomUnsafeCell::new(0),
        })
    }

    /// Creates a mapping: writes its header, then publishes it.
    fn create(&self, start: usize, chunks: usize, huge: bool) {
        self.header.with_mut(|h| unsafe { *h = HEADER });
        map::register(&self.table, addr(start, 0), chunks, huge);
    }

    /// A lookup that trusts what it finds: reads the header.
    fn lookup(&self, address: usize) -> Option<Found> {
        let found = map::lookup(&self.table, address);
        if found.is_some() {
            let header = self.header.with(|h| unsafe { *h });
            assert_eq!(
                header, HEADER,
                "found a mapping whose header is not visible"
            );
        }
        found
    }
}

/// An address `offset` bytes into chunk `chunk`.
fn addr(chunk: usize, offset: usize) -> usize {
    (chunk << SEGMENT_SHIFT) + offset
}

/// Publication of a segment.
///
/// One thread writes a segment's header and registers the segment (chunk
/// 1); one thread tests an address the way the free fast path does
/// (`map::entry` == `SEGMENT`), another with `map::lookup`. Checks: whoever
/// finds the segment sees the header written before `register` (the entry's
/// `Release` store and the lookups' `Acquire` loads); a lookup finds
/// either nothing or this segment, never a neighbouring chunk.
#[test]
fn found_segment_header_is_visible() {
    loom::model(|| {
        let m = Map::new(4);
        let creator = {
            let m = m.clone();
            thread::spawn(move || m.create(1, 1, false))
        };
        let fast = {
            let m = m.clone();
            thread::spawn(move || {
                if map::entry(&m.table, addr(1, 16)) == SEGMENT {
                    assert_eq!(
                        m.header.with(|h| unsafe { *h }),
                        HEADER,
                        "free fast path sees no header"
                    );
                }
            })
        };
        let r = m.lookup(addr(1, SEGMENT_SIZE - 1));
        assert!(
            r.is_none() || r == Some(Found::Segment(addr(1, 0))),
            "{r:?}"
        );
        assert_eq!(m.lookup(addr(2, 0)), None);
        creator.join().unwrap();
        fast.join().unwrap();
        assert_eq!(m.lookup(addr(1, 5)), Some(Found::Segment(addr(1, 0))));
    });
}

/// Publication of a huge mapping of three chunks (1..=3).
///
/// While the creator registers it (continuation entries first, the start
/// entry last), two threads look up interior addresses in chunks 2 and 3.
/// Checks: an interior lookup finds nothing or the mapping's start, never
/// a start that is not yet published (it would then read a header that is
/// not visible), never another chunk; the chunk after the mapping is never
/// found; after the join every chunk resolves to the start.
#[test]
fn huge_interior_lookups_resolve_to_published_start() {
    loom::model(|| {
        let m = Map::new(5);
        let creator = {
            let m = m.clone();
            thread::spawn(move || m.create(1, 3, true))
        };
        let readers: Vec<_> = [2, 3]
            .into_iter()
            .map(|chunk| {
                let m = m.clone();
                thread::spawn(move || {
                    let r = m.lookup(addr(chunk, 8));
                    assert!(
                        r.is_none() || r == Some(Found::Huge(addr(1, 0))),
                        "chunk {chunk} resolved to {r:?}"
                    );
                })
            })
            .collect();
        assert_eq!(
            m.lookup(addr(4, 0)),
            None,
            "the chunk after the mapping was found"
        );
        creator.join().unwrap();
        for r in readers {
            r.join().unwrap();
        }
        for chunk in 1..=3 {
            assert_eq!(m.lookup(addr(chunk, 123)), Some(Found::Huge(addr(1, 0))));
        }
    });
}

/// Withdrawal of a huge mapping of three chunks.
///
/// The mapping is published before the threads start. One thread
/// unregisters it (start entry first) and then raises a flag (`Release`);
/// another reads the flag (`Acquire`) and looks up an interior address.
/// Checks: a lookup racing with the withdrawal finds nothing or the real
/// start; a lookup that knows the withdrawal happened finds nothing; after
/// the join, no address of the mapping resolves and every entry is clear.
#[test]
fn unregister_hides_the_mapping() {
    loom::model(|| {
        let m = Map::new(5);
        m.create(1, 3, true);
        let gone = Arc::new(AtomicBool::new(false));
        let remover = {
            let (m, gone) = (m.clone(), gone.clone());
            thread::spawn(move || {
                map::unregister(&m.table, addr(1, 0), 3);
                gone.store(true, std::sync::atomic::Ordering::Release);
            })
        };
        let knew_gone = gone.load(std::sync::atomic::Ordering::Acquire);
        let r = m.lookup(addr(3, 77));
        if knew_gone {
            assert_eq!(r, None, "a lookup after unregister still finds the mapping");
        } else {
            assert!(r.is_none() || r == Some(Found::Huge(addr(1, 0))), "{r:?}");
        }
        remover.join().unwrap();
        for chunk in 0..5 {
            assert_eq!(m.lookup(addr(chunk, 0)), None);
            assert_eq!(map::entry(&m.table, addr(chunk, 0)), map::NONE);
        }
    });
}

/// A lookup racing with the reuse of a huge mapping's address range.
///
/// A huge mapping of three chunks (1..=3) is withdrawn and a one-chunk
/// segment is published at its start (the OS handed the range out again).
/// Concurrently, a lookup of an address in chunk 3 (a stale pointer into
/// the old mapping) may read chunk 3's old continuation entry and hop to
/// chunk 1, which by then holds the new segment. Checks: the lookup never
/// reports chunk 3 as part of the one-chunk segment at chunk 1 (a false
/// positive: callers given `Found::Segment` index the segment's metadata
/// with the address).
#[test]
fn lookup_racing_reuse_is_no_false_positive() {
    loom::model(|| {
        let m = Map::new(5);
        m.create(1, 3, true);
        let reuser = {
            let m = m.clone();
            thread::spawn(move || {
                map::unregister(&m.table, addr(1, 0), 3);
                map::register(&m.table, addr(1, 0), 1, false);
            })
        };
        let r = m.lookup(addr(3, 64));
        assert!(
            r.is_none() || r == Some(Found::Huge(addr(1, 0))),
            "chunk 3 resolved to {r:?}"
        );
        reuser.join().unwrap();
        assert_eq!(m.lookup(addr(3, 64)), None);
        assert_eq!(m.lookup(addr(1, 64)), Some(Found::Segment(addr(1, 0))));
    });
}

/// A huge mapping long enough that a lookup hops twice.
///
/// Continuation entries say at most 253 chunks; chunk 300 of a 301-chunk
/// mapping hops 253 chunks to chunk 47, then 46 more to the start. While
/// the mapping is registered, a lookup of chunk 300 runs. Checks: it finds
/// nothing or the start (with the header visible), never the intermediate
/// chunk; after the join, the first, a middle and the last chunk resolve.
#[test]
fn long_huge_mapping_hops_twice() {
    const CHUNKS: usize = 301;
    loom::model(|| {
        let m = Map::new(CHUNKS + 1);
        let creator = {
            let m = m.clone();
            thread::spawn(move || m.create(1, CHUNKS, true))
        };
        let r = m.lookup(addr(CHUNKS, 1));
        assert!(r.is_none() || r == Some(Found::Huge(addr(1, 0))), "{r:?}");
        creator.join().unwrap();
        for chunk in [1, 254, CHUNKS] {
            assert_eq!(
                m.lookup(addr(chunk, 9)),
                Some(Found::Huge(addr(1, 0))),
                "chunk {chunk}"
            );
        }
    });
}
