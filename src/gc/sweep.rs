//! Sweeping: every allocated GC block that marking did not reach goes back
//! to its page; pages left with no block go back to their segments (whose
//! memory the pool then decommits, see `segment::pool`), except for about
//! one cycle's allocation of them, which stay with their owners for the
//! next cycle; unreachable huge blocks are unmapped.
//!
//! Sweeping runs with the world stopped (but the pool lock released: giving
//! pages back takes it). A page's free lists are owner-private, but its
//! owner is stopped outside every GC-zone operation (they all defer
//! suspension) and GC pages never use the cross-thread free list (see
//! `free`), so the collector may act as the owner: freed blocks go on the
//! page's local free list with their allocation bits cleared, exactly as
//! the owner's own free would leave them. Queues are only touched through
//! [`heap::after_sweep`], which keeps to GC-zone structures.
//!
//! Sweeping is bitmap-driven: per 64 granules, `alloc & !mark` names the
//! garbage, so a page with no garbage costs a few word operations.

use crate::heap::{self, Heap};
use crate::page::thread_free::Block;
use crate::page::Page;
use crate::segment::{self, map, Segment};
use crate::size_class::GRANULE;
use crate::sync::Ordering;
use crate::{stats, Zone};

/// What a sweep freed.
#[derive(Clone, Copy, Default)]
pub(crate) struct Swept {
    pub(crate) blocks: u64,
    pub(crate) bytes: u64,
}

/// Sweeps every GC segment. Up to `keep` bytes of pages left empty stay
/// with their owners instead of going back to their segments: about what
/// the program will allocate again before the next collection, which would
/// otherwise be decommitted now and faulted back in at once.
pub(crate) fn sweep_all(keep: usize) -> Swept {
    let mut swept = Swept::default();
    let mut keep = keep;
    segment::for_each_segment(|seg| {
        if seg.zone != Zone::Gc {
            return;
        }
        if seg.is_huge() {
            sweep_huge(seg, &mut swept);
            return;
        }
        let base = seg.base();
        for page in seg.page_records() {
            // Retiring a page can release (and, with a zero-sized cache,
            // unmap) the whole segment: stop once it left the map.
            if map::entry(map::map(), base) != map::SEGMENT {
                break;
            }
            if page.in_use.get() && page.block_size.get() != 0 {
                sweep_page(seg, page, &mut swept, &mut keep);
            }
        }
    });
    stats::add_collected(Zone::Gc, swept.blocks, swept.bytes);
    swept
}

fn sweep_page(seg: &Segment, page: &Page, swept: &mut Swept, keep: &mut usize) {
    let block_size = page.block_size.get();
    let words = super::mark::bitmap_words(seg, page);
    let mut garbage_blocks = 0u64;
    for word in words.clone() {
        let garbage = seg.alloc_bitmap[word].load(Ordering::Relaxed)
            & !seg.mark_bitmap[word].load(Ordering::Relaxed);
        garbage_blocks += u64::from(garbage.count_ones());
    }
    if garbage_blocks == 0 {
        return;
    }
    // SAFETY: the world is stopped, so the owner's thread cannot exit.
    let owner = unsafe { Heap::owner_of_gc_page(page.owner.load(Ordering::Relaxed)) };
    let whole = owner.is_some() && garbage_blocks == u64::from(page.used());
    if whole {
        // Every block still out is garbage and the owner retires the page
        // below: it goes back whole, so its blocks need not be linked into
        // its free list one by one.
        for word in words {
            seg.alloc_bitmap[word].store(0, Ordering::Relaxed);
        }
        page.set_used(0);
    } else {
        for word in words {
            let alloc = seg.alloc_bitmap[word].load(Ordering::Relaxed);
            let mut garbage = alloc & !seg.mark_bitmap[word].load(Ordering::Relaxed);
            if garbage == 0 {
                continue;
            }
            seg.alloc_bitmap[word].store(alloc & !garbage, Ordering::Relaxed);
            while garbage != 0 {
                let bit = garbage.trailing_zeros() as usize;
                garbage &= garbage - 1;
                let block = seg.base() + (word * 64 + bit) * GRANULE;
                page.push_local(block as *mut Block);
            }
        }
    }
    swept.blocks += garbage_blocks;
    swept.bytes += garbage_blocks * block_size as u64;
    // An abandoned page (no owner) keeps its freed blocks on its local
    // list; whoever adopts or reclaims it collects them.
    if let Some(owner) = owner {
        let page_bytes = page.reserved.get() as usize * block_size;
        let kept = page.is_unused() && *keep >= page_bytes;
        if kept {
            *keep -= page_bytes;
            if whole {
                // Emptied whole (its blocks not linked): carve it afresh.
                page.free.set(core::ptr::null_mut());
                page.local_free.set(core::ptr::null_mut());
                page.capacity.set(0);
                page.free_is_zero.set(false);
            }
        }
        heap::after_sweep(owner, page, kept);
    }
}

fn sweep_huge(seg: &Segment, swept: &mut Swept) {
    let page = &seg.pages[0];
    let start = page.area.get() as usize;
    if page.used() != 1 || super::mark::is_marked(start) {
        return;
    }
    swept.blocks += 1;
    swept.bytes += page.block_size.get() as u64;
    // SAFETY: the block is live (used == 1), unreachable, and nobody can
    // reach it any more: it was not marked.
    unsafe { segment::huge_free(page) };
}
