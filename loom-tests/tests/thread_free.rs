//! Models of `page::thread_free`: remote frees racing with the owner's
//! collection, and the delayed-free protocol (`UseDelayed` → `Delaying` →
//! `Normal`, and `Never` when the owner goes away).
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use zonal::loom_api::thread_free::{self, Pushed, State};
use zonal_loom_tests::{TestHeap, TestPage};

/// The id the owning heap writes into its pages.
const HEAP_ID: usize = 0x1000;

/// Concurrent remote frees while the owner collects.
///
/// Two threads each free two blocks of a page in the `Normal` state
/// (`thread_free::push`) while the owner collects twice (`take_all` plus
/// the walk of `Page::collect`); after the joins the owner collects once
/// more. Checks: every push links its block (`Listed`); every block is
/// collected exactly once (none lost, none twice, no foreign pointer on the
/// list); the freeing thread's writes to a block, and so the `next` link
/// `push` wrote before its CAS, happen before the collector reads them.
#[test]
fn remote_frees_two_threads_two_blocks_each() {
    loom::model(|| {
        let page = Arc::new(TestPage::new(4));
        let pushers: Vec<_> = [[0, 1], [2, 3]]
            .into_iter()
            .map(|blocks| {
                let page = page.clone();
                thread::spawn(move || {
                    for i in blocks {
                        assert_eq!(page.free_remote(i), Pushed::Listed);
                    }
                })
            })
            .collect();
        page.as_owner(|owner| {
            page.collect(owner);
            page.collect(owner);
        });
        for p in pushers {
            p.join().unwrap();
        }
        page.as_owner(|owner| {
            page.collect(owner);
            assert_eq!(owner.collected, page.all_blocks(), "a freed block was lost");
        });
        assert!(thread_free::take_all(&page.thread_free).is_null());
        assert_eq!(
            page.state(),
            State::Normal,
            "collection changed the page's state"
        );
    });
}

/// Three remote freers at once, the owner collecting concurrently.
///
/// Same checks as above with three pushers of one block each, so CAS
/// retries chain over two intermediate heads.
#[test]
fn remote_frees_three_threads() {
    loom::model(|| {
        let page = Arc::new(TestPage::new(3));
        let pushers: Vec<_> = (0..3)
            .map(|i| {
                let page = page.clone();
                thread::spawn(move || assert_eq!(page.free_remote(i), Pushed::Listed))
            })
            .collect();
        page.as_owner(|owner| page.collect(owner));
        for p in pushers {
            p.join().unwrap();
        }
        page.as_owner(|owner| {
            page.collect(owner);
            assert_eq!(owner.collected, page.all_blocks(), "a freed block was lost");
        });
    });
}

/// What a remote freer does in `free.rs`: push, and if told to, notify the
/// owner heap (found through the page's owner id). Returns whether it
/// notified.
fn free_and_notify(page: &TestPage, heap: &TestHeap, i: usize) -> bool {
    match page.free_remote(i) {
        Pushed::Listed => false,
        Pushed::MustNotify => {
            assert_eq!(
                page.owner_id(),
                HEAP_ID,
                "notifier does not see the owner's id"
            );
            heap.notify(page, i);
            true
        }
    }
}

/// The delayed-free protocol, with `pushers` remote freers of one block.
///
/// The owner records its id in the page and moves it to its full list
/// (`set_state(UseDelayed)`), concurrently with the frees; then, as its
/// next slow path would, it frees its delayed blocks (`BlockStack::take_all`),
/// moves the page back to its queue if one came (`set_state(Normal)`, which
/// waits out a notification under way) and collects. Checks:
/// * exactly one free notifies (`MustNotify`) if any free comes after the
///   page went to the full list, none otherwise, and the page ends `Normal`
///   or still `UseDelayed` accordingly;
/// * the notified block is not linked on the thread-free list but reaches
///   the owner through its delayed list; every other block through the
///   thread-free list; each exactly once, with the freeing thread's
///   contents visible;
/// * the notifier sees the owner's id written before `UseDelayed` was set
///   (`set_state`'s `AcqRel` with `push`'s `AcqRel`).
fn delayed_free(pushers: usize) {
    loom::model(move || {
        let page = Arc::new(TestPage::new(pushers));
        let heap = Arc::new(TestHeap::default());
        let handles: Vec<_> = (0..pushers)
            .map(|i| {
                let (page, heap) = (page.clone(), heap.clone());
                thread::spawn(move || free_and_notify(&page, &heap, i).then_some(i))
            })
            .collect();
        // The owner: the page has no free block left.
        page.set_owner_id(HEAP_ID);
        thread_free::set_state(&page.thread_free, State::UseDelayed, false);
        // Its next slow path.
        let mut via_delayed = page.as_owner(|owner| heap.free_delayed(&page, owner));
        if via_delayed != 0 {
            thread_free::set_state(&page.thread_free, State::Normal, false);
        }
        let mut via_list = page.as_owner(|owner| page.collect(owner));
        let notified: Vec<usize> = handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect();
        page.as_owner(|owner| {
            via_delayed |= heap.free_delayed(&page, owner);
            via_list |= page.collect(owner);
            assert_eq!(owner.collected, page.all_blocks(), "a freed block was lost");
        });
        match notified[..] {
            [] => {
                assert_eq!(page.state(), State::UseDelayed);
                assert_eq!(via_delayed, 0);
            }
            [i] => {
                assert_eq!(page.state(), State::Normal);
                assert_eq!(
                    via_delayed,
                    1 << i,
                    "the notified block did not come through the delayed list"
                );
            }
            _ => panic!("blocks {notified:?} all notified the owner"),
        }
        assert_eq!(via_list, page.all_blocks() & !via_delayed);
    });
}

/// Delayed free with two remote freers (see `delayed_free`).
#[test]
fn delayed_free_two_pushers() {
    delayed_free(2);
}

/// Delayed free with three remote freers (see `delayed_free`).
#[test]
fn delayed_free_three_pushers() {
    delayed_free(3);
}

/// The lifetime guarantee: an owner that goes away waits out notifications.
///
/// The owner's page is in its full list (`UseDelayed`) when two threads
/// free blocks of it. Meanwhile the owner's thread exits: it sets the page
/// to `Never` (`set_state(Never)`, which waits while a notification is
/// under way), frees its delayed blocks for the last time, and its heap
/// goes away. Afterwards another thread adopts the page (`set_state(Normal)`
/// overriding `Never`) and collects. Checks: no notifier touches the heap
/// after it is gone (loom flags the notifier's read of the heap racing with
/// its destruction); no block is left on the dead heap's delayed list; every
/// block comes back exactly once; pushes after `Never` link normally.
#[test]
fn never_waits_out_notifications() {
    loom::model(|| {
        let page = Arc::new(TestPage::new(2));
        let heap = Arc::new(TestHeap::default());
        page.set_owner_id(HEAP_ID);
        thread_free::set_state(&page.thread_free, State::UseDelayed, false);
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let (page, heap) = (page.clone(), heap.clone());
                thread::spawn(move || free_and_notify(&page, &heap, i))
            })
            .collect();
        // The owner's thread exits (`give_up_all`).
        thread_free::set_state(&page.thread_free, State::Never, true);
        page.as_owner(|owner| heap.free_delayed(&page, owner));
        heap.destroy();
        let notified = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&n| n)
            .count();
        assert!(notified <= 1, "{notified} frees notified the owner");
        assert!(
            heap.delayed.take_all().is_null(),
            "a block was handed to a heap that is gone"
        );
        assert_eq!(page.state(), State::Never);
        // An adopter takes the page over.
        thread_free::set_state(&page.thread_free, State::Normal, true);
        page.as_owner(|owner| {
            page.collect(owner);
            assert_eq!(owner.collected, page.all_blocks(), "a freed block was lost");
        });
    });
}
