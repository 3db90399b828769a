//! binary-trees, the Computer Language Benchmarks Game program, written from
//! its published rules for any [`Family`], single-threaded:
//!
//! 1. build a "stretch" tree of depth `max + 1`, walk it, drop it;
//! 2. build a long-lived tree of depth `max`, kept to the end;
//! 3. for depths 4, 6, .., `max`, build, walk and drop
//!    `2^(max - depth + 4)` trees;
//! 4. walk the long-lived tree.
//!
//! Trees are built bottom-up; a node holds two child pointers and nothing
//! else (16 bytes). The walk counts nodes ("check"). The published programs
//! spread step 3 over threads; here one thread does everything, so the
//! comparison is of allocators and collectors, not of parallelism.

use std::hint::black_box;

use super::family::Family;

const MIN_DEPTH: u32 = 4;

/// A binary-trees node.
pub struct TreeNode<F: Family> {
    left: Option<F::Ptr<TreeNode<F>>>,
    right: Option<F::Ptr<TreeNode<F>>>,
}

/// A complete tree of `depth` levels below the root, bottom-up.
fn bottom_up<F: Family>(depth: u32) -> F::Ptr<TreeNode<F>> {
    if depth == 0 {
        return F::alloc(TreeNode {
            left: None,
            right: None,
        });
    }
    let left = bottom_up::<F>(depth - 1);
    let right = bottom_up::<F>(depth - 1);
    F::alloc(TreeNode {
        left: Some(left),
        right: Some(right),
    })
}

/// The node count of a tree.
fn check<F: Family>(node: &TreeNode<F>) -> u64 {
    1 + match (&node.left, &node.right) {
        (Some(l), Some(r)) => check(l) + check(r),
        _ => 0,
    }
}

/// Runs binary-trees with maximum depth `n`; returns the sum of every
/// check, the same for every family.
pub fn run<F: Family>(n: u32) -> u64 {
    let max_depth = n.max(MIN_DEPTH + 2);
    let mut sum = check(&bottom_up::<F>(max_depth + 1));

    let long_lived = bottom_up::<F>(max_depth);
    for depth in (MIN_DEPTH..=max_depth).step_by(2) {
        let iterations = 1u64 << (max_depth - depth + MIN_DEPTH);
        for _ in 0..iterations {
            sum += check(&bottom_up::<F>(depth));
        }
    }
    sum + check(black_box(&*long_lived))
}
