//! Instruction-count probe: `n` malloc+free pairs of 32 bytes (run under
//! callgrind; see benches/ for the side-by-side comparison).
use std::alloc::{alloc, dealloc, Layout};
use std::hint::black_box;

#[global_allocator]
static A: zonal::Zonal = zonal::Zonal;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let layout = Layout::from_size_align(32, 8).unwrap();
    for _ in 0..n {
        // SAFETY: non-zero layout; the block is freed with the same layout.
        unsafe {
            let p = black_box(alloc(layout));
            dealloc(p, layout);
        }
    }
}
