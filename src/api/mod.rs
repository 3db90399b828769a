//! The public layer: the global allocator, zone handles, and zone names.
//! Everything unsafe lives below; this layer states the contracts.

pub(crate) mod gc;
pub(crate) mod global;
pub(crate) mod inspect;
pub(crate) mod release;
pub(crate) mod route;
pub(crate) mod zone;
