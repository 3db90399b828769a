//! The safe face of the GC zone: [`Gc<T>`], [`GcWeak<T>`], and the zone
//! handles [`GcZone`] and [`GcAtomicZone`].

use crate::gc::{self, finalize, weak, Scan};
use allocator_api2::alloc::{AllocError, Allocator};
use core::alloc::Layout;
use core::fmt;
use core::marker::PhantomData;
use core::ops::Deref;
use core::ptr::{self, NonNull};

/// A pointer to a value in the garbage-collected zone.
///
/// `Gc<T>` is `Copy`: handles are plain pointers, and the value lives as
/// long as any handle (or any other word that points into it) is reachable
/// from a root — a local variable, a `static`, a thread-local, an explicit
/// root, or the live memory of the manual, pinned or stack zones — then it
/// is collected. Values are never moved. Shared access only: mutate through
/// `Cell`, `RefCell`, atomics or locks inside `T`.
///
/// If `T` needs `Drop`, its drop runs once the value is unreachable, on the
/// thread that created it (see [`gc::run_finalizers`]),
/// in topological order: if A points to B, A is dropped first, so a `Drop`
/// may still read the `Gc` values it holds.
///
/// ```
/// use std::cell::Cell;
/// use zonal::Gc;
///
/// struct Node { value: u32, next: Cell<Option<Gc<Node>>> }
///
/// let a = Gc::new(Node { value: 1, next: Cell::new(None) });
/// let b = Gc::new(Node { value: 2, next: Cell::new(Some(a)) });
/// zonal::gc::collect();
/// assert_eq!(b.next.get().unwrap().value, 1);
/// ```
///
/// What keeps a value alive must be visible to the collector: a pointer
/// hidden from it (stored XOR-ed, or only in memory zonal does not see, such
/// as a buffer from `libc::malloc` or a thread that never used zonal) does
/// not, and the value may be freed while still in use that way.
///
/// `Gc<T>` is `Send` and `Sync` only when `T` is both, so values that are
/// not thread-safe stay on one thread:
///
/// ```compile_fail
/// let shared = zonal::Gc::new(std::cell::Cell::new(1));
/// std::thread::spawn(move || shared.set(2)); // Cell is not Sync
/// ```
///
/// ```compile_fail
/// let local = 5;
/// let _ = zonal::Gc::new(&local); // must be 'static
/// ```
///
/// ```compile_fail
/// let counter = zonal::Gc::new(std::rc::Rc::new(1));
/// std::thread::spawn(move || drop(counter)); // Rc is neither Send nor Sync
/// ```
///
/// ```compile_fail
/// let mut value = zonal::Gc::new(1);
/// *value = 2; // shared access only
/// ```
pub struct Gc<T: 'static> {
    ptr: NonNull<T>,
    _owns: PhantomData<T>,
}

impl<T: 'static> Clone for Gc<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: 'static> Copy for Gc<T> {}

// SAFETY: a `Gc<T>` gives shared access to `T` from any thread that holds a
// copy, so it may cross threads only when `T` is `Sync` (and `Send`, since
// the last handle may be on another thread than the one that created it).
// Finalizers run on the creating thread whatever the bounds.
unsafe impl<T: Send + Sync + 'static> Send for Gc<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync + 'static> Sync for Gc<T> {}

/// Drops the `T` at `object` (a finalizer).
///
/// # Safety
/// `object` holds a live `T` that nobody uses any more.
unsafe fn drop_value<T>(object: *mut u8) {
    // SAFETY: by the contract.
    unsafe { ptr::drop_in_place(object.cast::<T>()) }
}

impl<T: 'static> Gc<T> {
    /// Moves `value` into the GC zone.
    ///
    /// # Panics
    /// Out of memory (after a collection) ends the process through
    /// [`handle_alloc_error`](std::alloc::handle_alloc_error), as `Box::new` does.
    pub fn new(value: T) -> Gc<T> {
        Self::new_in(value, Scan::Conservative)
    }

    /// Moves `value` into the GC zone as *atomic* memory, which the
    /// collector never scans for pointers: cheaper to collect, for data
    /// such as numbers, strings and buffers.
    ///
    /// # Safety
    /// `value` must hold no pointer that is the only thing keeping a GC
    /// object alive (no `Gc`, no `GcZone` collection): such objects would
    /// be freed while `value` still points to them.
    pub unsafe fn new_atomic(value: T) -> Gc<T> {
        Self::new_in(value, Scan::Atomic)
    }

    fn new_in(value: T, scan: Scan) -> Gc<T> {
        let layout = Layout::new::<T>();
        // Zero-sized values still get a block of their own, so that every
        // handle names a distinct live object.
        let block = gc::alloc(layout.size().max(1), layout.align(), scan);
        let Some(ptr) = NonNull::new(block.cast::<T>()) else {
            std::alloc::handle_alloc_error(layout)
        };
        // SAFETY: the block is fresh, large and aligned enough for `T`.
        unsafe { ptr.as_ptr().write(value) };
        if core::mem::needs_drop::<T>() && !finalize::register(block as usize, drop_value::<T>) {
            // No room to remember the finalizer: report it like any other
            // out-of-memory condition rather than silently never dropping.
            std::alloc::handle_alloc_error(layout)
        }
        Gc {
            ptr,
            _owns: PhantomData,
        }
    }

    /// The address of the value.
    pub fn as_ptr(this: Gc<T>) -> *const T {
        this.ptr.as_ptr()
    }

    /// Whether two handles point to the same value.
    pub fn ptr_eq(a: Gc<T>, b: Gc<T>) -> bool {
        a.ptr == b.ptr
    }

    /// A weak handle: it does not keep the value alive, and upgrades to a
    /// `Gc<T>` until the value is collected.
    ///
    /// ```
    /// let strong = zonal::Gc::new(42u64);
    /// let weak = zonal::Gc::downgrade(strong);
    /// assert_eq!(weak.upgrade().map(|g| *g), Some(42));
    /// ```
    ///
    /// # Panics
    /// If the table of weak links is full (4 million live links).
    pub fn downgrade(this: Gc<T>) -> GcWeak<T> {
        let address = this.ptr.as_ptr() as usize;
        let link = weak::create(address, address).expect("zonal: the table of weak links is full");
        GcWeak {
            link,
            _target: PhantomData,
        }
    }
}

impl<T: 'static> Deref for Gc<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the handle itself (on the stack, in a register or in
        // scanned memory) keeps the value alive, and values never move.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: fmt::Debug + 'static> fmt::Debug for Gc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: fmt::Display + 'static> fmt::Display for Gc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl<T: PartialEq + 'static> PartialEq for Gc<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

/// A weak handle to a [`Gc<T>`] value (from [`Gc::downgrade`]): it does not
/// keep the value alive, and [`upgrade`](GcWeak::upgrade) fails for good
/// once the collector found the value unreachable.
pub struct GcWeak<T: 'static> {
    link: weak::LinkId,
    _target: PhantomData<Gc<T>>,
}

impl<T: 'static> GcWeak<T> {
    /// The value, if it has not been collected.
    pub fn upgrade(&self) -> Option<Gc<T>> {
        let address = weak::get(self.link)?;
        Some(Gc {
            // SAFETY: live link targets are non-null object addresses.
            ptr: unsafe { NonNull::new_unchecked(address as *mut T) },
            _owns: PhantomData,
        })
    }
}

impl<T: 'static> Clone for GcWeak<T> {
    fn clone(&self) -> Self {
        weak::retain(self.link);
        GcWeak {
            link: self.link,
            _target: PhantomData,
        }
    }
}

impl<T: 'static> Drop for GcWeak<T> {
    fn drop(&mut self) {
        weak::release(self.link);
    }
}

impl<T: 'static> fmt::Debug for GcWeak<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GcWeak(..)")
    }
}

/// The GC zone as an [`Allocator`]: memory that is scanned for pointers
/// and collected once unreachable; `deallocate` may free it earlier.
///
/// A collection built on it (say `hashbrown::HashMap::new_in(GcZone)`)
/// lives while the collection's own handle is reachable, and the
/// collection's buffers keep alive the `Gc` values stored in them. An
/// early `deallocate` frees at once on the thread that allocated the block;
/// on any other thread it leaves the block to the next collection.
///
/// ```
/// use allocator_api2::vec::Vec;
/// let mut names = Vec::new_in(zonal::GcZone);
/// names.push(zonal::Gc::new("zone"));
/// zonal::gc::collect();
/// assert_eq!(*names[0], "zone");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcZone;

super::zone::page_zone_allocator!(GcZone, crate::Zone::Gc);

/// The GC zone for pointer-free ("atomic") memory: collected like
/// [`GcZone`] memory, but never scanned, so it is cheaper to collect and
/// cannot keep other objects alive by accident. Store no pointers to GC
/// objects in it.
///
/// ```
/// use allocator_api2::vec::Vec;
/// let mut samples: Vec<f64, _> = Vec::with_capacity_in(1 << 16, zonal::GcAtomicZone);
/// samples.extend((0..1 << 16).map(|i| i as f64));
/// assert_eq!(samples[10], 10.0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcAtomicZone;

// SAFETY: blocks come from the GC zone and stay valid until deallocated or
// (when no handle or collection reaches them any more) collected; the
// handle is zero-sized and stateless. Growing and shrinking use the trait's
// default (allocate, copy, deallocate), so new blocks are atomic too.
unsafe impl Allocator for GcAtomicZone {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(super::zone::dangling(layout));
        }
        super::zone::block(
            gc::alloc(layout.size(), layout.align(), Scan::Atomic),
            layout.size(),
        )
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: the caller passes a block this zone allocated with
            // `layout` and gives it up.
            unsafe { crate::free::free_now(ptr.as_ptr(), layout.size()) }
        }
    }
}
