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
//! * [`stats()`] reports per-zone statistics.
//!
//! # Layers
//!
//! Bottom up, each calling only those below it: `os` (mmap and friends),
//! `segment` (4 MiB aligned regions and the segment map), `size_class`,
//! `page` (free lists and the thread-free list), `heap` (per-thread heaps,
//! abandoned pages), then `alloc`/`free` (fast paths) and `api`.
#![warn(missing_docs)]

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
mod heap;
#[cfg(not(loom))]
mod options;
#[cfg(not(loom))]
mod os;
mod page;
#[cfg(not(loom))]
mod segment;
mod size_class;
#[cfg(not(loom))]
mod stats;
mod sync;

#[cfg(not(loom))]
pub use api::global::Zonal;
#[cfg(not(loom))]
pub use api::zone::{ManualZone, Zone};
#[cfg(not(loom))]
pub use stats::{stats, Stats, ZoneStats};
