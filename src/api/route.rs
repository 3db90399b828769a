//! Routing: `with_zone` sends the calling thread's global allocations (every
//! `Box`, `Vec`, `String` … made through [`Zonal`](crate::Zonal)) to another
//! zone for the duration of a closure.
//!
//! The routing state is one field of the thread's heap (`Heap::route`),
//! read by `Zonal::alloc` next to the heap access the allocation makes
//! anyway. Routes nest, and the previous route is restored when the
//! closure returns or unwinds. Only the *allocation* is routed: freeing and
//! resizing a block work on the block's own zone, whatever the route is
//! when they happen, so a block allocated under a route may be freed
//! after it ended.

use crate::heap;
use crate::Zone;

/// Why a zone cannot be routed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteError {
    /// The stack zone frees memory wholesale when its frame ends, which
    /// global allocations (freed one by one, at any time, possibly on
    /// another thread) cannot respect.
    StackZone,
}

impl core::fmt::Display for RouteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RouteError::StackZone => f.write_str(
                "global allocations cannot be routed to the stack zone: its memory is freed \
                 wholesale when its frame ends (use zonal::stack::frame and allocate in the frame)",
            ),
        }
    }
}

impl std::error::Error for RouteError {}

/// Runs `f` with the calling thread's global allocations served by `zone`
/// (`Gc`, `Manual` or `Pinned`), then restores the previous route, also
/// when `f` panics. Routes nest. Other threads are not affected. Routing to
/// [`Zone::Stack`] is refused with [`RouteError::StackZone`].
///
/// Under the `Gc` route, blocks of the global allocator are garbage
/// collected: freeing them explicitly is still allowed, but one that is
/// only reachable through memory the collector does not scan may be
/// collected early (see [`Gc`](crate::Gc)).
///
/// ```
/// let v = zonal::with_zone(zonal::Zone::Pinned, || vec![0u8; 100]).unwrap();
/// // With `Zonal` as the global allocator, `v`'s buffer is pinned memory.
/// # drop(v);
/// assert!(zonal::with_zone(zonal::Zone::Stack, || ()).unwrap_err()
///     .to_string().contains("stack zone"));
/// ```
pub fn with_zone<R>(zone: Zone, f: impl FnOnce() -> R) -> Result<R, RouteError> {
    if zone == Zone::Stack {
        return Err(RouteError::StackZone);
    }
    /// Restores the previous route, on return and on unwind.
    struct Restore(Zone);
    impl Drop for Restore {
        fn drop(&mut self) {
            current_heap().set_route(self.0);
        }
    }
    let _restore = Restore(current_heap().set_route(zone));
    Ok(f())
}

/// The zone the calling thread's global allocations go to now.
///
/// ```
/// assert_eq!(zonal::current_zone(), zonal::Zone::Manual);
/// zonal::with_zone(zonal::Zone::Pinned, || {
///     assert_eq!(zonal::current_zone(), zonal::Zone::Pinned);
/// }).unwrap();
/// ```
pub fn current_zone() -> Zone {
    current_heap().route()
}

fn current_heap() -> &'static heap::Heap {
    // SAFETY: the heap lives as long as the thread, and the reference is
    // used at once.
    unsafe { &*heap::current() }
}
