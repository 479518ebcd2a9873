//! One isolation tree, flattened: nodes in a vector, children by index.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Matrix, average_path_length, quantize};

const LEAF: u32 = u32::MAX;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Tree {
    /// Split feature, or `LEAF`.
    feature: Vec<u32>,
    threshold: Vec<f64>,
    left: Vec<u32>,
    right: Vec<u32>,
    /// Leaves: `c(rows in leaf)`, the depth the leaf's rows stand for.
    correction: Vec<f64>,
    /// Training rows that reached the node (for explanations).
    size: Vec<u32>,
    /// Per feature: its range in the tree's sample (for the optional range
    /// check; see `Params::range_check`).
    #[serde(default)]
    lo: Vec<f64>,
    #[serde(default)]
    hi: Vec<f64>,
}

impl Tree {
    pub(super) fn grow(
        x: Matrix<'_>,
        mut rows: Vec<u32>,
        features: &[u32],
        max_depth: usize,
        rng: &mut ChaCha8Rng,
    ) -> Self {
        let mut t = Tree {
            feature: vec![],
            threshold: vec![],
            left: vec![],
            right: vec![],
            correction: vec![],
            size: vec![],
            lo: vec![],
            hi: vec![],
        };
        t.lo = vec![f64::INFINITY; x.features];
        t.hi = vec![f64::NEG_INFINITY; x.features];
        for &r in &rows {
            for f in 0..x.features {
                let v = x.value(r as usize, f);
                t.lo[f] = t.lo[f].min(v);
                t.hi[f] = t.hi[f].max(v);
            }
        }
        let n = rows.len();
        t.build(x, &mut rows[..n], features, 0, max_depth, rng);
        t
    }

    /// Whether `v` lies beyond the sample's range of feature `f` by more
    /// than that range's width.
    #[inline]
    fn outside(&self, f: usize, v: f64) -> bool {
        let w = self.hi[f] - self.lo[f];
        v < self.lo[f] - w || v > self.hi[f] + w
    }

    fn push_leaf(&mut self, rows: usize) -> u32 {
        self.feature.push(LEAF);
        self.threshold.push(0.0);
        self.left.push(LEAF);
        self.right.push(LEAF);
        self.correction.push(average_path_length(rows as f64));
        self.size.push(rows as u32);
        (self.feature.len() - 1) as u32
    }

    /// Grows the subtree for `rows` (reordered in place); returns its index.
    fn build(
        &mut self,
        x: Matrix<'_>,
        rows: &mut [u32],
        features: &[u32],
        depth: usize,
        max_depth: usize,
        rng: &mut ChaCha8Rng,
    ) -> u32 {
        if depth >= max_depth || rows.len() <= 1 {
            return self.push_leaf(rows.len());
        }
        // A random feature that is not constant here (as scikit-learn's
        // random splitter: constant features are skipped), and a threshold
        // uniform in its range.
        let mut candidates: Vec<u32> = features.to_vec();
        let split = loop {
            if candidates.is_empty() {
                break None;
            }
            let pick = rng.random_range(0..candidates.len());
            let f = candidates.swap_remove(pick) as usize;
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for &r in rows.iter() {
                let v = x.value(r as usize, f);
                lo = lo.min(v);
                hi = hi.max(v);
            }
            if hi > lo {
                let mut threshold = lo + rng.random::<f64>() * (hi - lo);
                if threshold >= hi {
                    threshold = lo; // keeps both sides non-empty
                }
                break Some((f, threshold));
            }
        };
        let Some((f, threshold)) = split else {
            return self.push_leaf(rows.len());
        };
        let node = self.feature.len();
        self.feature.push(f as u32);
        self.threshold.push(threshold);
        self.left.push(LEAF);
        self.right.push(LEAF);
        self.correction.push(0.0);
        self.size.push(rows.len() as u32);
        // Partition: values <= threshold go left.
        let mut i = 0;
        for j in 0..rows.len() {
            if x.value(rows[j] as usize, f) <= threshold {
                rows.swap(i, j);
                i += 1;
            }
        }
        let (l, r) = rows.split_at_mut(i);
        let left = self.build(x, l, features, depth + 1, max_depth, rng);
        let right = self.build(x, r, features, depth + 1, max_depth, rng);
        self.left[node] = left;
        self.right[node] = right;
        node as u32
    }

    /// Depth of `row`'s leaf plus the leaf's correction.
    pub(super) fn path_length(&self, row: &[f64]) -> f64 {
        let mut node = 0usize;
        let mut depth = 0.0;
        loop {
            let f = self.feature[node];
            if f == LEAF {
                return depth + self.correction[node];
            }
            node = if quantize(row[f as usize]) <= self.threshold[node] {
                self.left[node]
            } else {
                self.right[node]
            } as usize;
            depth += 1.0;
        }
    }

    /// [`Tree::path_length`] with the range check: at the first node that
    /// splits on a feature whose value in `row` lies beyond the tree
    /// sample's range of it by more than the range's width, the row is
    /// isolated (path ends at depth + 1, no leaf correction) — as a tree
    /// grown with the row in its sample would almost surely have split it
    /// off there. Without this, a value far beyond anything seen in
    /// training scores no higher than the most extreme training rows. The
    /// whole-sample range (not the node's) keeps rows inside the training
    /// distribution unaffected.
    pub(super) fn path_length_checked(&self, row: &[f64]) -> f64 {
        let mut node = 0usize;
        let mut depth = 0.0;
        loop {
            let f = self.feature[node];
            if f == LEAF {
                return depth + self.correction[node];
            }
            let v = quantize(row[f as usize]);
            if self.outside(f as usize, v) {
                return depth + 1.0;
            }
            node = if v <= self.threshold[node] {
                self.left[node]
            } else {
                self.right[node]
            } as usize;
            depth += 1.0;
        }
    }

    /// Credits each feature split on along `row`'s path with the share of
    /// the tree's sample that split cut away from the row's side: the split
    /// that separates the row from the bulk earns most.
    /// With `range_check`, a split whose range the row falls far outside
    /// is credited with everything left at that node (it isolates the row).
    pub(super) fn attribute(&self, row: &[f64], weights: &mut [f64], range_check: bool) {
        let total = f64::from(self.size[0].max(1));
        let mut node = 0usize;
        loop {
            let f = self.feature[node];
            if f == LEAF {
                return;
            }
            let v = quantize(row[f as usize]);
            if range_check && self.outside(f as usize, v) {
                weights[f as usize] += f64::from(self.size[node]) / total;
                return;
            }
            let next = if v <= self.threshold[node] {
                self.left[node]
            } else {
                self.right[node]
            } as usize;
            weights[f as usize] += f64::from(self.size[node] - self.size[next]) / total;
            node = next;
        }
    }
}

/// Deepest tree laid out complete (2^16 leaves); deeper trees are scored by
/// walking the node tree.
const MAX_COMPLETE_DEPTH: usize = 16;

/// A tree as a complete binary tree of fixed depth `d`: internal node `i`
/// has children `2i+1` and `2i+2`, so a row's walk is `d` branch-free steps
/// and one lookup. Leaves the grown tree reached early are padded: every
/// slot under them holds the same value (depth + c(n)), so the pad nodes'
/// routing does not matter.
#[derive(Debug, Clone)]
pub(super) struct Complete {
    depth: usize,
    feature: Vec<u32>,
    threshold: Vec<f64>,
    /// Path length (leaf depth + correction) per final slot.
    value: Vec<f64>,
}

impl Complete {
    pub(super) fn from_tree(tree: &Tree) -> Option<Self> {
        Self::with_depth(tree, tree.depth())
    }

    /// The tree laid out at `depth` (at least the tree's own).
    fn with_depth(tree: &Tree, depth: usize) -> Option<Self> {
        if depth > MAX_COMPLETE_DEPTH || depth < tree.depth() {
            return None;
        }
        let internal = (1usize << depth) - 1;
        let mut c = Complete {
            depth,
            feature: vec![0; internal],
            threshold: vec![f64::INFINITY; internal],
            value: vec![0.0; 1 << depth],
        };
        c.fill(tree, 0, 0, 0);
        Some(c)
    }

    fn fill(&mut self, tree: &Tree, node: usize, slot: usize, level: usize) {
        if tree.feature[node] == LEAF {
            // Every final slot under `slot` gets this leaf's path length.
            let value = level as f64 + tree.correction[node];
            let below = self.depth - level;
            let first = ((slot + 1) << below) - 1 - ((1 << self.depth) - 1);
            self.value[first..first + (1 << below)].fill(value);
            return;
        }
        self.feature[slot] = tree.feature[node];
        self.threshold[slot] = tree.threshold[node];
        self.fill(tree, tree.left[node] as usize, 2 * slot + 1, level + 1);
        self.fill(tree, tree.right[node] as usize, 2 * slot + 2, level + 1);
    }

    /// Adds each row's path length to `acc`; `rows` is row-major with
    /// `features` columns and `acc.len()` rows. The walks of a block of rows
    /// advance level by level, so they overlap in the CPU.
    #[inline]
    pub(super) fn accumulate(&self, rows: &[f64], features: usize, acc: &mut [f64]) {
        const BLOCK: usize = 16;
        let internal = (1usize << self.depth) - 1;
        for (b, chunk) in acc.chunks_mut(BLOCK).enumerate() {
            let base = b * BLOCK;
            let mut idx = [0usize; BLOCK];
            for _ in 0..self.depth {
                for (r, i) in idx.iter_mut().enumerate().take(chunk.len()) {
                    let f = self.feature[*i] as usize;
                    let v = quantize(rows[(base + r) * features + f]);
                    // Right unless `v <= t`: NaN goes right, as in
                    // `Tree::path_length`.
                    let left = v <= self.threshold[*i];
                    *i = 2 * *i + 2 - usize::from(left);
                }
            }
            for (r, a) in chunk.iter_mut().enumerate() {
                *a += self.value[idx[r] - internal];
            }
        }
    }
}

/// Levels of the [`Fast`] layout: trees grown on up to 256 rows (the
/// default `max_samples`) are at most this deep.
pub(super) const FAST_DEPTH: usize = 8;
pub(super) const FAST_INTERNAL: usize = (1 << FAST_DEPTH) - 1;

/// One internal node of the [`Fast`] layout: 8 bytes, one load.
#[derive(Debug, Clone, Copy, Default)]
struct Node {
    /// The split threshold rounded *down* to f32: for an f32 value `x`,
    /// `x <= t` exactly when `x <= round_down_f32(t)`, so scoring f32
    /// features against f32 thresholds routes every row as the f64
    /// thresholds would.
    threshold: f32,
    feature: u32,
}

/// The largest f32 not above `t`.
pub(super) fn f32_at_most(t: f64) -> f32 {
    let r = t as f32; // round to nearest
    if f64::from(r) > t { r.next_down() } else { r }
}

/// A tree of depth ≤ 8 as a complete tree of exactly depth 8 in fixed-size
/// arrays: indices are masked to the array size, so the walk carries no
/// bounds checks, and a node is one 8-byte load.
#[derive(Debug, Clone)]
pub(super) struct Fast {
    nodes: Box<[Node; FAST_INTERNAL + 1]>,
    /// The nodes' thresholds and features again as two arrays, for the
    /// vector walk (`super::simd`), which loads sixteen of each at once.
    threshold: Box<[f32; FAST_INTERNAL + 1]>,
    feature: Box<[i32; FAST_INTERNAL + 1]>,
    /// Path length per final slot.
    value: Box<[f64; FAST_INTERNAL + 1]>,
}

impl Fast {
    pub(super) fn from_tree(tree: &Tree) -> Option<Self> {
        let c = Complete::with_depth(tree, FAST_DEPTH)?;
        let mut nodes = Box::new([Node::default(); FAST_INTERNAL + 1]);
        for (i, n) in nodes.iter_mut().take(FAST_INTERNAL).enumerate() {
            *n = Node {
                threshold: f32_at_most(c.threshold[i]),
                feature: c.feature[i],
            };
        }
        let mut value = Box::new([0.0; FAST_INTERNAL + 1]);
        value.copy_from_slice(&c.value);
        let mut threshold = Box::new([0.0; FAST_INTERNAL + 1]);
        let mut feature = Box::new([0; FAST_INTERNAL + 1]);
        for ((t, f), n) in threshold
            .iter_mut()
            .zip(feature.iter_mut())
            .zip(nodes.iter())
        {
            *t = n.threshold;
            *f = n.feature as i32;
        }
        Some(Self {
            nodes,
            threshold,
            feature,
            value,
        })
    }

    pub(super) fn thresholds(&self) -> &[f32; FAST_INTERNAL + 1] {
        &self.threshold
    }

    pub(super) fn features(&self) -> &[i32; FAST_INTERNAL + 1] {
        &self.feature
    }

    pub(super) fn values(&self) -> &[f64; FAST_INTERNAL + 1] {
        &self.value
    }

    /// Adds each row's path length to `acc`. `rows` holds f32 features
    /// padded to a stride of `S` (a power of two ≥ the feature count); 8
    /// walks advance level by level so they overlap in the CPU (8, not 16:
    /// eight walk indices stay in registers — 30 % fewer instructions).
    #[inline]
    pub(super) fn accumulate<const S: usize>(&self, rows: &[[f32; S]], acc: &mut [f64]) {
        const B: usize = 8;
        let nodes: &[Node; FAST_INTERNAL + 1] = &self.nodes;
        let value: &[f64; FAST_INTERNAL + 1] = &self.value;
        let walk = |row: &[f32; S]| {
            let mut i = 0usize;
            for _ in 0..FAST_DEPTH {
                let n = nodes[i & FAST_INTERNAL];
                let left = row[n.feature as usize & (S - 1)] <= n.threshold;
                i = 2 * i + 2 - usize::from(left);
            }
            value[(i - FAST_INTERNAL) & FAST_INTERNAL]
        };
        let mut row_blocks = rows.chunks_exact(B);
        let mut acc_blocks = acc.chunks_exact_mut(B);
        for (rb, ab) in (&mut row_blocks).zip(&mut acc_blocks) {
            // Fixed-size views: the compiler sees every index is in range.
            let (Ok(rb), Ok(ab)) = (
                <&[[f32; S]; B]>::try_from(rb),
                <&mut [f64; B]>::try_from(ab),
            ) else {
                continue; // unreachable: chunks_exact yields B items
            };
            let mut idx = [0usize; B];
            for _ in 0..FAST_DEPTH {
                for r in 0..B {
                    let n = nodes[idx[r] & FAST_INTERNAL];
                    // NaN compares false: right, as in `Tree::path_length`.
                    let left = rb[r][n.feature as usize & (S - 1)] <= n.threshold;
                    idx[r] = 2 * idx[r] + 2 - usize::from(left);
                }
            }
            for r in 0..B {
                ab[r] += value[(idx[r] - FAST_INTERNAL) & FAST_INTERNAL];
            }
        }
        for (a, row) in acc_blocks
            .into_remainder()
            .iter_mut()
            .zip(row_blocks.remainder())
        {
            *a += walk(row);
        }
    }
}

impl Tree {
    /// Depth of the deepest leaf.
    fn depth(&self) -> usize {
        fn walk(t: &Tree, node: usize) -> usize {
            if t.feature[node] == LEAF {
                0
            } else {
                1 + walk(t, t.left[node] as usize).max(walk(t, t.right[node] as usize))
            }
        }
        walk(self, 0)
    }
}
