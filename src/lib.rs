//! zonal: a four-zone memory manager for Rust.
//!
//! zonal replaces the global allocator with a memory model of four zones —
//! garbage-collected, manual, pinned and stack memory — built on mmap'd
//! segments with size-class free lists and per-thread heaps.
//!
//! * [`Zonal`] is a [`GlobalAlloc`](core::alloc::GlobalAlloc) serving the
//!   manual zone: put `#[global_allocator] static A: zonal::Zonal =
//!   zonal::Zonal;` in a binary.
//! * [`ManualZone`] is the same zone as an allocator-api2 `Allocator`, for
//!   collections such as `hashbrown::HashMap::new_in(zonal::ManualZone)`.
//! * [`Gc<T>`], [`GcZone`] and the [`gc`] module: garbage-collected memory,
//!   found reachable by a conservative scan of stacks, registers, static
//!   data, thread-locals and the other zones.
//! * [`PinnedZone`] and the [`pinned`] module: memory at stable addresses
//!   (optionally page-locked), pin guards ([`pin()`]) and FFI handles.
//! * The [`stack`] module: per-thread LIFO frames whose memory is freed
//!   wholesale when the frame ends.
//! * [`with_zone`] routes a thread's global allocations to another zone;
//!   [`inspect`] and the [`checked`] views validate raw pointers.
//! * [`stats()`] reports per-zone statistics.
//!
//! # Layers
//!
//! Bottom up, each calling only those below it: `os` (mmap and friends),
//! `segment` (4 MiB aligned regions and the segment map), `size_class`,
//! `page` (free lists and the thread-free list), `heap` (per-thread heaps,
//! abandoned pages), `thread` (the collector's thread registry and the
//! stop-the-world handshake), then `alloc`/`free` (fast paths), the zones'
//! policies (`gc`, `pinned`, `stack`) and `api`.
#![warn(missing_docs)]
#![cfg_attr(feature = "nightly", feature(allocator_api))]

#[cfg(not(loom))]
mod alloc;
#[cfg(not(loom))]
mod api;
#[cfg(not(loom))]
mod fault;
#[cfg(not(loom))]
mod fork;
#[cfg(not(loom))]
mod free;
#[cfg(not(loom))]
pub mod gc;
#[cfg(not(loom))]
mod heap;
#[cfg(not(loom))]
mod options;
#[cfg(not(loom))]
mod os;
#[cfg(not(loom))]
mod page;
#[cfg(not(loom))]
pub mod pinned;
#[cfg(not(loom))]
mod segment;
#[cfg(not(loom))]
mod size_class;
#[cfg(not(loom))]
pub mod stack;
#[cfg(not(loom))]
mod stats;
mod sync;
#[cfg(not(loom))]
mod thread;

#[cfg(not(loom))]
pub use api::gc::{Gc, GcAtomicZone, GcWeak, GcZone};
#[cfg(not(loom))]
pub use api::global::Zonal;
#[cfg(not(loom))]
pub use api::inspect::{checked, inspect, Allocation};
#[cfg(not(loom))]
pub use api::release::release_free_memory;
#[cfg(not(loom))]
pub use api::route::{current_zone, with_zone, RouteError};
#[cfg(not(loom))]
pub use api::zone::{ManualZone, PinnedZone, Zone};
#[cfg(not(loom))]
pub use pinned::{pin, PinGuard};
#[cfg(not(loom))]
pub use stats::{stats, GcStats, Stats, ZoneStats};

/// The lock-free pieces, exposed for the `loom-tests` crate (only under
/// `cfg(loom)`, where nothing else is compiled). The files are the very ones
/// the normal build uses, compiled here against `sync`'s loom atomics.
#[cfg(loom)]
#[doc(hidden)]
// Without this `#[path]`, the paths below would resolve inside `src/loom_api/`.
#[path = "."]
pub mod loom_api {
    /// The atomics the modules below use (loom's, see `sync`).
    pub use crate::sync::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize};

    #[path = "page/thread_free.rs"]
    pub mod thread_free;

    #[path = "heap/abandoned.rs"]
    pub mod abandoned;

    #[path = "segment/map.rs"]
    pub mod map;

    #[path = "thread/handshake.rs"]
    pub mod handshake;
}
