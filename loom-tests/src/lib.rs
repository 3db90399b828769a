//! Fixtures shared by the loom models in `tests/`.
//!
//! Everything here is scaffolding around zonal's real code, reached through
//! `zonal::loom_api` (which exists only under `--cfg loom`): a stand-in for
//! a page (its thread-free word, one owner-private field, a few blocks), a
//! stand-in for a heap (its delayed-free list and its lifetime), and helpers
//! that collect blocks and account for them.
//!
//! Visibility is checked with `loom::cell::UnsafeCell`: loom fails an
//! execution in which a thread reads such a cell without a happens-before
//! edge from the last write, or two threads use it concurrently. So every
//! piece of state that a protocol hands from one thread to another (a freed
//! block's contents, a page's owner-private fields, a heap that is about to
//! go away) lives in one.
#![cfg(loom)]

use loom::cell::UnsafeCell as LoomUnsafeCell;
use std::cell::{Cell, UnsafeCell};
use zonal::loom_api::abandoned::Linked;
use zonal::loom_api::thread_free::{self, Block, BlockStack, Pushed, State};
use zonal::loom_api::AtomicUsize;

/// A block as a page hands it out: 16-byte aligned (the two low bits of a
/// thread-free word are the page's state), link in its first word.
#[repr(C, align(16))]
pub struct TestBlock {
    /// The word `thread_free::push` / `BlockStack::push` overwrite with the
    /// link.
    link: UnsafeCell<*mut Block>,
    /// The block's contents: the freeing thread writes it before the push,
    /// whoever collects the block reads it. A read without a happens-before
    /// edge from the write fails the model; it is the edge that also makes
    /// the `next` link written just before the push visible.
    stamp: LoomUnsafeCell<usize>,
}

/// Owner-private state of a page (stands for `Page`'s `Cell` fields and its
/// `owner` word): only the current owner may touch it, so two owners at
/// once, or an owner that does not see its predecessor's writes, fail the
/// model.
#[derive(Debug, Default)]
pub struct OwnerState {
    /// Bit `i`: block `i` came back to the page (thread-free list or
    /// delayed list).
    pub collected: u32,
    /// A model-specific tag (for example the owning heap's id).
    pub tag: usize,
}

/// A page stand-in: the real thread-free word, owner-private state, blocks,
/// and the intrusive link the abandoned pool uses.
pub struct TestPage {
    pub thread_free: AtomicUsize,
    /// Stands for `Page::owner`, the owning heap's id: written by a thread
    /// when it takes or gives up the page, read by a notifier to find the
    /// heap (`free.rs`), so a notifier must see the owner's write.
    owner_id: LoomUnsafeCell<usize>,
    pub owner: LoomUnsafeCell<OwnerState>,
    blocks: Box<[TestBlock]>,
    pool_link: Cell<*mut TestPage>,
}

// SAFETY: the fields are shared under the very protocols the models check:
// a block belongs to whoever frees it until it is pushed, then to the page's
// owner; `owner` and `pool_link` belong to the page's current owner (or to
// the pool). loom checks the `LoomUnsafeCell`s; the rest follows from them.
unsafe impl Sync for TestPage {}
// SAFETY: as above.
unsafe impl Send for TestPage {}

impl Linked for TestPage {
    fn pool_link(&self) -> &Cell<*mut TestPage> {
        &self.pool_link
    }
}

impl TestPage {
    /// A page of `blocks` blocks, all handed out, in the `Normal` state.
    pub fn new(blocks: usize) -> Self {
        assert!(blocks <= 32);
        TestPage {
            thread_free: AtomicUsize::new(0),
            owner_id: LoomUnsafeCell::new(0),
            owner: LoomUnsafeCell::new(OwnerState::default()),
            blocks: (0..blocks)
                .map(|_| TestBlock {
                    link: UnsafeCell::new(std::ptr::null_mut()),
                    stamp: LoomUnsafeCell::new(0),
                })
                .collect(),
            pool_link: Cell::new(std::ptr::null_mut()),
        }
    }

    /// Bit mask with one bit per block.
    pub fn all_blocks(&self) -> u32 {
        ((1u64 << self.blocks.len()) - 1) as u32
    }

    fn block_ptr(&self, i: usize) -> *mut Block {
        self.blocks[i].link.get().cast()
    }

    /// The index of `block` if it is one of this page's blocks.
    pub fn index_of(&self, block: *mut Block) -> Option<usize> {
        let offset = (block as usize).wrapping_sub(self.blocks.as_ptr() as usize);
        let size = std::mem::size_of::<TestBlock>();
        (offset.is_multiple_of(size) && offset / size < self.blocks.len()).then_some(offset / size)
    }

    /// A thread that does not own the page frees block `i`: writes the
    /// block's contents, then `thread_free::push` (zonal's code). A caller
    /// told `MustNotify` must go on with [`TestHeap::notify`].
    pub fn free_remote(&self, i: usize) -> Pushed {
        self.blocks[i].stamp.with_mut(|s| unsafe { *s = i + 1 });
        // SAFETY: block `i` is handed out to the caller, who gives it up;
        // it is 16-byte aligned and nobody touches it until it is collected.
        unsafe { thread_free::push(&self.thread_free, self.block_ptr(i)) }
    }

    /// Accounts for one block that came back to the owner: it must be one
    /// of ours, not seen before, with the freeing thread's contents visible.
    fn take_back(&self, owner: &mut OwnerState, block: *mut Block) -> u32 {
        let i = self
            .index_of(block)
            .unwrap_or_else(|| panic!("{block:p} is not one of the page's blocks"));
        let bit = 1u32 << i;
        assert!(owner.collected & bit == 0, "block {i} came back twice");
        owner.collected |= bit;
        let stamp = self.blocks[i].stamp.with(|s| unsafe { *s });
        assert_eq!(stamp, i + 1, "block {i} came back with foreign contents");
        bit
    }

    /// The owner takes every listed block back: `thread_free::take_all`,
    /// then the walk `Page::collect` does. Returns the blocks collected.
    pub fn collect(&self, owner: &mut OwnerState) -> u32 {
        let mut block = thread_free::take_all(&self.thread_free);
        let mut got = 0;
        while !block.is_null() {
            got |= self.take_back(owner, block);
            // SAFETY: the block is on the list we took, so it is ours.
            block = unsafe { (*block).next };
        }
        got
    }

    /// Runs `f` as the page's owner (loom checks that nobody else is one).
    pub fn as_owner<R>(&self, f: impl FnOnce(&mut OwnerState) -> R) -> R {
        self.owner.with_mut(|state| f(unsafe { &mut *state }))
    }

    /// The owner records itself (or 0 when it gives the page up).
    pub fn set_owner_id(&self, id: usize) {
        self.owner_id.with_mut(|o| unsafe { *o = id });
    }

    /// A notifier reads the owner's id.
    pub fn owner_id(&self) -> usize {
        self.owner_id.with(|o| unsafe { *o })
    }

    /// The page's state (`thread_free::state`, an `Acquire` load).
    pub fn state(&self) -> State {
        thread_free::state(&self.thread_free)
    }
}

/// A heap stand-in: the real delayed-free list (`BlockStack`) and a cell
/// that stands for the heap's memory, which goes away when its thread has
/// given up its pages.
pub struct TestHeap {
    pub delayed: BlockStack,
    /// Every notifier reads it (as `Heap::from_id` dereferences the heap);
    /// [`TestHeap::destroy`] writes it. loom fails the model if a notifier
    /// can still be reading when the heap goes away.
    alive: LoomUnsafeCell<bool>,
}

// SAFETY: `delayed` is a lock-free stack; `alive` is checked by loom.
unsafe impl Sync for TestHeap {}
// SAFETY: as above.
unsafe impl Send for TestHeap {}

impl Default for TestHeap {
    fn default() -> Self {
        TestHeap {
            delayed: BlockStack::new(),
            alive: LoomUnsafeCell::new(true),
        }
    }
}

impl TestHeap {
    /// What `free.rs` does after `Pushed::MustNotify`: hand the block to the
    /// owner heap's delayed list (`BlockStack::push`), then
    /// `thread_free::end_notify`.
    pub fn notify(&self, page: &TestPage, i: usize) {
        assert!(
            self.alive.with(|a| unsafe { *a }),
            "notified a heap that is gone"
        );
        // SAFETY: our push was told `MustNotify`, so block `i` was not linked
        // and is still ours to hand over.
        unsafe { self.delayed.push(page.block_ptr(i)) };
        thread_free::end_notify(&page.thread_free);
    }

    /// The owner empties its delayed list (`free_delayed`): every block must
    /// be one of `page`'s. Returns the blocks taken.
    pub fn free_delayed(&self, page: &TestPage, owner: &mut OwnerState) -> u32 {
        let mut block = self.delayed.take_all();
        let mut got = 0;
        while !block.is_null() {
            got |= page.take_back(owner, block);
            // SAFETY: blocks on the delayed list we took are ours.
            block = unsafe { (*block).next };
        }
        got
    }

    /// The heap's memory goes away (its thread exits).
    pub fn destroy(&self) {
        self.alive.with_mut(|a| unsafe { *a = false });
    }
}
