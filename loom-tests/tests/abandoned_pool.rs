//! Models of `heap::abandoned::AbandonedPool`: pages handed between threads
//! through the pool.
//!
//! At most two threads use the pool at the same time in each model: with a
//! third thread spinning on the pool's `SpinLock`, loom's exploration of the
//! spin-and-yield loops does not finish in minutes (it takes 0.1 s with two).
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use zonal::loom_api::abandoned::AbandonedPool;
use zonal_loom_tests::TestPage;

type Pool = AbandonedPool<TestPage, 2>;

/// Tag written into page `i`'s owner-private state by whoever abandons it.
const ABANDONED_BY: usize = 100;
/// Tag an adopter writes (plus its thread number).
const ADOPTED_BY: usize = 200;

/// Shared fixture: the pool and two pages (page `i` belongs on list `i`).
struct World {
    pool: Pool,
    pages: [TestPage; 2],
}

// SAFETY: the pool is `Sync` and the pages are `Send + Sync`; the raw
// pointers inside the pool only ever point at `pages`.
unsafe impl Send for World {}

impl World {
    fn new() -> Arc<Self> {
        Arc::new(World {
            pool: Pool::new(),
            pages: [TestPage::new(1), TestPage::new(1)],
        })
    }

    fn page_ptr(&self, i: usize) -> *mut TestPage {
        &self.pages[i] as *const TestPage as *mut TestPage
    }

    fn index_of(&self, page: *mut TestPage) -> usize {
        (0..2)
            .find(|&i| self.page_ptr(i) == page)
            .expect("the pool returned a foreign node")
    }

    /// Gives up page `i` (which the caller owns) to list `i`, after writing
    /// its owner-private state.
    fn abandon(&self, i: usize) {
        self.pages[i].as_owner(|state| state.tag = ABANDONED_BY + i);
        // SAFETY: the caller owns page `i`; it outlives the model.
        unsafe { self.pool.push(i, self.page_ptr(i)) };
    }

    /// Takes ownership of a page popped from list `list`: it must be that
    /// list's page, and the abandoning thread's write must be visible.
    fn adopt(&self, list: usize, page: *mut TestPage, me: usize) -> usize {
        let i = self.index_of(page);
        assert_eq!(i, list, "page {i} came off list {list}");
        self.pages[i].as_owner(|state| {
            assert_eq!(
                state.tag,
                ABANDONED_BY + i,
                "adopter {me} does not see page {i}'s last owner's writes"
            );
            state.tag = ADOPTED_BY + me;
        });
        i
    }

    /// After every thread is joined: drains the pool and checks that each
    /// page was adopted exactly once overall.
    fn check(&self, adopted: &[usize]) {
        let mut seen = [0; 2];
        for &i in adopted {
            seen[i] += 1;
        }
        while let Some((list, page)) = self.pool.pop_any() {
            let i = self.index_of(page);
            assert_eq!(i, list, "page {i} came off list {list}");
            seen[i] += 1;
        }
        assert_eq!(self.pool.len(), 0, "pool count out of step");
        assert_eq!(
            seen,
            [1, 1],
            "pages adopted {seen:?} times (lost or handed out twice)"
        );
    }
}

/// Abandon while another thread adopts.
///
/// Thread 1 abandons page 0 (writing its owner-private state first) and
/// then adopts from list 1; thread 2 tries `pop_any` twice. Page 1 was
/// abandoned before the threads started, so threads 1 and 2 race for it.
///
/// Checks: every page is adopted exactly once (counting what is left in the
/// pool at the end) and comes off its own list; an adopter sees the writes
/// the abandoning thread made before `push` (the pool lock's
/// Release/Acquire); no two threads own a page at once (loom flags
/// concurrent use of its owner-private state).
#[test]
fn abandoned_pages_are_adopted_once() {
    loom::model(|| {
        let world = World::new();
        world.abandon(1);
        let t1 = {
            let world = world.clone();
            thread::spawn(move || {
                world.abandon(0);
                world.pool.pop(1).map(|page| world.adopt(1, page, 1))
            })
        };
        let t2 = {
            let world = world.clone();
            thread::spawn(move || {
                let mut adopted = Vec::new();
                for _ in 0..2 {
                    if let Some((list, page)) = world.pool.pop_any() {
                        adopted.push(world.adopt(list, page, 2));
                    }
                }
                adopted
            })
        };
        let mut adopted: Vec<usize> = t1.join().unwrap().into_iter().collect();
        adopted.extend(t2.join().unwrap());
        world.check(&adopted);
    });
}

/// Reclamation round trip.
///
/// Both pages start in the pool. Thread 1 does what `reclaim_abandoned`
/// does: `pop_any`, look at the page as its owner, push it back to the same
/// list. Thread 2 adopts with `pop(0)` and then `pop_any`.
///
/// Checks: no page is lost or handed out twice while it is popped and
/// re-pushed, each lands back on its own list (`pop_any` reports the right
/// list), and the owner-private state passes cleanly from owner to owner.
#[test]
fn reclaim_round_trip_loses_nothing() {
    loom::model(|| {
        let world = World::new();
        world.abandon(0);
        world.abandon(1);
        let reclaimer = {
            let world = world.clone();
            thread::spawn(move || {
                if let Some((list, page)) = world.pool.pop_any() {
                    let i = world.adopt(list, page, 1);
                    // Still in use: give it back.
                    world.abandon(i);
                }
            })
        };
        let adopter = {
            let world = world.clone();
            thread::spawn(move || {
                let mut adopted = Vec::new();
                if let Some(page) = world.pool.pop(0) {
                    adopted.push(world.adopt(0, page, 2));
                }
                if let Some((list, page)) = world.pool.pop_any() {
                    adopted.push(world.adopt(list, page, 2));
                }
                adopted
            })
        };
        reclaimer.join().unwrap();
        let adopted = adopter.join().unwrap();
        world.check(&adopted);
    });
}
