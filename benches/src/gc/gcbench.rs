//! GCBench, the Boehm/Ellis/Kovac collector benchmark, written from its
//! published description for any [`Family`]:
//!
//! 1. stretch the heap with a temporary bottom-up tree of depth 18;
//! 2. build a long-lived tree of depth 16 (top-down) and a long-lived array
//!    of 500,000 doubles, half of it filled, both kept to the end;
//! 3. for depths 4, 6, .., 16, build `2 * size(18) / size(depth)` temporary
//!    trees top-down (allocate a node's two children, then fill each), then
//!    as many bottom-up (build both subtrees, then their parent), dropping
//!    each at once;
//! 4. check that the long-lived tree and array survived.
//!
//! Nodes hold two child pointers and two `i32`s (24 bytes), as in the
//! original. One difference, forced by `Box`: the top-down build stores a
//! child in its parent after filling it, not before (the allocation order
//! is the original's; with collectors that do not move objects, where a
//! pointer is held does not change what is live).

use std::cell::Cell;
use std::hint::black_box;

use super::family::Family;

const STRETCH_DEPTH: u32 = 18;
const LONG_LIVED_DEPTH: u32 = 16;
const ARRAY_LEN: usize = 500_000;
const MIN_DEPTH: u32 = 4;
const MAX_DEPTH: u32 = 16;

/// A GCBench tree node.
pub struct Node<F: Family> {
    left: Cell<Option<F::Ptr<Node<F>>>>,
    right: Cell<Option<F::Ptr<Node<F>>>>,
    #[allow(dead_code)] // carried for the node's size, as in the original
    i: i32,
    #[allow(dead_code)]
    j: i32,
}

impl<F: Family> Node<F> {
    fn leaf() -> Node<F> {
        Node::with(None, None)
    }

    fn with(left: Option<F::Ptr<Node<F>>>, right: Option<F::Ptr<Node<F>>>) -> Node<F> {
        Node {
            left: Cell::new(left),
            right: Cell::new(right),
            i: 0,
            j: 0,
        }
    }
}

/// Nodes in a complete tree of `depth` levels below the root.
fn tree_size(depth: u32) -> u64 {
    (1 << (depth + 1)) - 1
}

/// Temporary trees of each kind built at `depth`.
fn iterations(depth: u32) -> u64 {
    2 * tree_size(STRETCH_DEPTH) / tree_size(depth)
}

/// Gives `node` a complete subtree of `depth` levels, top-down.
fn populate<F: Family>(depth: u32, node: &Node<F>) {
    if depth == 0 {
        return;
    }
    let left = F::alloc(Node::leaf());
    let right = F::alloc(Node::leaf());
    populate(depth - 1, &left);
    populate(depth - 1, &right);
    node.left.set(Some(left));
    node.right.set(Some(right));
}

/// A complete tree of `depth` levels, bottom-up.
fn make_tree<F: Family>(depth: u32) -> F::Ptr<Node<F>> {
    if depth == 0 {
        return F::alloc(Node::leaf());
    }
    let left = make_tree::<F>(depth - 1);
    let right = make_tree::<F>(depth - 1);
    F::alloc(Node::with(Some(left), Some(right)))
}

/// Nodes reachable from `node` (children are taken out of their cells and
/// put back, which works for owning and collected pointers alike).
fn count<F: Family>(node: &Node<F>) -> u64 {
    let left = node.left.take();
    let right = node.right.take();
    let n = 1 + left.as_deref().map_or(0, count) + right.as_deref().map_or(0, count);
    node.left.set(left);
    node.right.set(right);
    n
}

/// Step 3 at one depth; returns the number of nodes built.
fn time_construction<F: Family>(depth: u32) -> u64 {
    let n = iterations(depth);
    for _ in 0..n {
        let tree = F::alloc(Node::<F>::leaf());
        populate(depth, &tree);
        black_box(&*tree);
    }
    for _ in 0..n {
        let tree = make_tree::<F>(depth);
        black_box(&*tree);
    }
    2 * n * tree_size(depth)
}

/// Runs GCBench; returns a checksum (nodes built plus the long-lived
/// tree's node count), the same for every family.
pub fn run<F: Family>() -> u64 {
    let stretch = make_tree::<F>(STRETCH_DEPTH);
    black_box(&*stretch);
    drop(stretch);
    let mut sum = tree_size(STRETCH_DEPTH);

    let long_lived = F::alloc(Node::<F>::leaf());
    populate(LONG_LIVED_DEPTH, &long_lived);
    sum += tree_size(LONG_LIVED_DEPTH);

    let mut array = F::doubles(ARRAY_LEN);
    for (i, x) in array[..ARRAY_LEN / 2].iter_mut().enumerate() {
        *x = 1.0 / i as f64;
    }

    for depth in (MIN_DEPTH..=MAX_DEPTH).step_by(2) {
        sum += time_construction::<F>(depth);
    }

    let live = count(black_box(&*long_lived));
    assert_eq!(live, tree_size(LONG_LIVED_DEPTH), "long-lived tree damaged");
    assert!(
        black_box(&*array)[1000] == 1.0 / 1000.0,
        "long-lived array damaged"
    );
    sum + live
}
