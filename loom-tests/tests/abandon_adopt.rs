//! A model of a page changing hands through the abandoned pool while other
//! threads free its blocks: `thread_free` and `AbandonedPool` together, in
//! the order `heap::pages` uses them.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use zonal::loom_api::abandoned::AbandonedPool;
use zonal::loom_api::thread_free::{self, Pushed, State};
use zonal_loom_tests::{TestHeap, TestPage};

const OWNER: usize = 0x1000;
const ADOPTER: usize = 0x2000;
/// Tag the exiting owner writes into the page's owner-private state.
const ABANDONED: usize = 7;

struct World {
    pool: AbandonedPool<TestPage, 1>,
    page: TestPage,
    /// The exiting owner's heap.
    heap: TestHeap,
}

// SAFETY: the pool is `Sync`, the page and heap are `Send + Sync`; the pool
// only ever holds a pointer to `page`.
unsafe impl Send for World {}
// SAFETY: as above.
unsafe impl Sync for World {}

impl World {
    fn page_ptr(&self) -> *mut TestPage {
        &self.page as *const TestPage as *mut TestPage
    }

    /// `adopt_abandoned` for a popped page: record ourselves as owner,
    /// `set_state(Normal)` overriding `Never`, then collect (as
    /// `page_has_free_block` does). Returns the blocks collected.
    fn adopt(&self, popped: *mut TestPage) -> u32 {
        assert_eq!(popped, self.page_ptr(), "the pool returned a foreign node");
        self.page.set_owner_id(ADOPTER);
        thread_free::set_state(&self.page.thread_free, State::Normal, true);
        self.page.as_owner(|owner| {
            assert_eq!(
                owner.tag, ABANDONED,
                "adopter does not see the last owner's writes"
            );
            owner.tag = ADOPTER;
            self.page.collect(owner)
        })
    }
}

/// Exit, abandon, adopt, with remote frees throughout.
///
/// A page of two blocks sits in its owner's full list (`UseDelayed`).
/// Thread 1 is the owner's thread exiting, as `give_up_all` and `abandon`
/// do it: `set_state(Never)` (waiting out a notification under way), a last
/// `free_delayed`, a last collect, owner-private writes, owner id 0, push to
/// the pool, then its heap goes away. Thread 2 frees both blocks (the first
/// free may notify the owner). Thread 3 tries twice to adopt the page from
/// the pool and collects. After the joins, whoever ends up with the page
/// collects what is left.
///
/// Checks: every block comes back exactly once — through the dying heap's
/// delayed list, the exiting owner's collect, or the new owner's; none is
/// left on the dead heap's delayed list, and no notifier touches the heap
/// after it is gone; at most one free notifies; the adopter sees the
/// exiting owner's writes (pool lock) and the page leaves the pool exactly
/// once; ownership never overlaps (loom checks the owner-private state).
#[test]
fn page_changes_hands_under_remote_frees() {
    loom::model(|| {
        let world = Arc::new(World {
            pool: AbandonedPool::new(),
            page: TestPage::new(2),
            heap: TestHeap::default(),
        });
        world.page.set_owner_id(OWNER);
        thread_free::set_state(&world.page.thread_free, State::UseDelayed, false);

        let owner = {
            let w = world.clone();
            thread::spawn(move || {
                thread_free::set_state(&w.page.thread_free, State::Never, true);
                let got = w.page.as_owner(|owner| {
                    let mut got = w.heap.free_delayed(&w.page, owner);
                    got |= w.page.collect(owner);
                    owner.tag = ABANDONED;
                    got
                });
                w.page.set_owner_id(0);
                // SAFETY: we own the page and give it up; it outlives the model.
                unsafe { w.pool.push(0, w.page_ptr()) };
                w.heap.destroy();
                got
            })
        };
        let freer = {
            let w = world.clone();
            thread::spawn(move || {
                let mut notified = 0;
                for i in 0..2 {
                    if w.page.free_remote(i) == Pushed::MustNotify {
                        assert_eq!(
                            w.page.owner_id(),
                            OWNER,
                            "notifier does not see the owner's id"
                        );
                        w.heap.notify(&w.page, i);
                        notified += 1;
                    }
                }
                notified
            })
        };
        let adopter = {
            let w = world.clone();
            thread::spawn(move || {
                for _ in 0..2 {
                    if let Some(page) = w.pool.pop(0) {
                        return Some(w.adopt(page));
                    }
                    thread::yield_now();
                }
                None
            })
        };

        let by_owner = owner.join().unwrap();
        let notified = freer.join().unwrap();
        let by_adopter = adopter.join().unwrap();
        assert!(notified <= 1, "{notified} frees notified the owner");
        assert!(
            world.heap.delayed.take_all().is_null(),
            "a block was handed to a heap that is gone"
        );
        let left = match by_adopter {
            // The adopter owns the page: collect what came after its collect.
            Some(_) => {
                assert!(world.pool.pop(0).is_none(), "the page left the pool twice");
                world.page.as_owner(|owner| world.page.collect(owner))
            }
            // Still in the pool: adopt it here.
            None => world.adopt(world.pool.pop(0).expect("the abandoned page was lost")),
        };
        let total = by_owner | by_adopter.unwrap_or(0) | left;
        assert_eq!(by_owner & by_adopter.unwrap_or(0), 0);
        world
            .page
            .as_owner(|owner| assert_eq!(owner.collected, world.page.all_blocks()));
        assert_eq!(total, world.page.all_blocks(), "a freed block was lost");
        assert_eq!(world.pool.len(), 0);
    });
}
