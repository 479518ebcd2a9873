//! One isolation tree, flattened: nodes in a vector, children by index.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Matrix, average_path_length};

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
        };
        let n = rows.len();
        t.build(x, &mut rows[..n], features, 0, max_depth, rng);
        t
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
                let v = x.data[r as usize * x.features + f];
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
            if x.data[rows[j] as usize * x.features + f] <= threshold {
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
            node = if row[f as usize] <= self.threshold[node] {
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
    pub(super) fn attribute(&self, row: &[f64], weights: &mut [f64]) {
        let total = f64::from(self.size[0].max(1));
        let mut node = 0usize;
        loop {
            let f = self.feature[node];
            if f == LEAF {
                return;
            }
            let next = if row[f as usize] <= self.threshold[node] {
                self.left[node]
            } else {
                self.right[node]
            } as usize;
            weights[f as usize] += f64::from(self.size[node] - self.size[next]) / total;
            node = next;
        }
    }
}
