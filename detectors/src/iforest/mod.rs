//! Isolation forest (Liu, Ting & Zhou 2008) with scikit-learn's semantics.
//!
//! The same parameters and scores as `sklearn.ensemble.IsolationForest`:
//!
//! - each of `n_estimators` trees is grown on `max_samples` rows drawn
//!   without replacement (with, if `bootstrap`), over `max_features`
//!   features drawn per tree, to depth `ceil(log2(max_samples))`;
//! - a split picks a random feature among the tree's features that is not
//!   constant in the node and a threshold uniform in its (min, max);
//! - the path length of a row is its leaf's depth plus `c(n)` for the `n`
//!   training rows left in that leaf, with `c(n) = 2 H(n-1) - 2 (n-1)/n`;
//! - `score_samples = -2^(-mean path / c(max_samples))` (higher = more
//!   normal), `decision_function = score_samples - offset` and `predict` is
//!   `-1` (outlier) where the decision is negative. `offset` is `-0.5` for
//!   `contamination = auto`, else the `contamination` quantile of the
//!   training scores.
//!
//! Trees are flattened into one node array per tree (feature, threshold,
//! children, leaf correction), scoring walks them without allocating, and
//! batches are scored straight from Arrow `Float64` columns. Trees of depth
//! ≤ 8 (the default 256-row samples) are also laid out as complete trees of
//! f32 thresholds (`tree::Fast`): blocks of rows walk them level by level,
//! sixteen rows per AVX-512 vector or eight per AVX2 vector where the CPU
//! has them (`simd`), with bit-identical results on every walk. Training is
//! CPU work for a blocking thread (`spawn_blocking`), not the async runtime.
//! Deterministic for a given seed.

mod simd;
mod tree;

use arrow::array::{Array, Float64Array};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use tree::{Complete, Fast, Tree};

pub use simd::Walk;

/// Forces a walk for scoring (capped at what the CPU has), or with `None`
/// the fastest measured on this CPU (the default). Process-wide; every walk
/// gives bit-identical scores, so this exists for benchmarks that compare
/// them.
pub fn use_walk(walk: Option<Walk>) {
    simd::choose(walk);
}

/// What the one-time measurement of the walks found on this CPU.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// The walk scoring uses unless one is forced.
    pub best: Walk,
    /// Each available walk's speed on the calibration forest (100 trees of
    /// 256 samples, 8 features): rows scored per second, best of 5 runs.
    pub rows_per_sec: Vec<(Walk, f64)>,
}

/// Measures every walk this CPU has, once per process (a few
/// milliseconds, at the first scoring), and keeps the fastest: which walk
/// wins depends on the CPU's gather throughput, not on its feature flags
/// (on AMD EPYC the AVX2 walk ran at half the scalar walk's speed).
pub fn calibration() -> &'static Calibration {
    static MEASURED: std::sync::OnceLock<Calibration> = std::sync::OnceLock::new();
    MEASURED.get_or_init(|| {
        let available = simd::available();
        if available.len() == 1 {
            return Calibration {
                best: Walk::Scalar,
                rows_per_sec: Vec::new(),
            };
        }
        const ROWS: usize = 4096;
        const FEATURES: usize = 8;
        let mut rng = ChaCha8Rng::seed_from_u64(0x5ec);
        let data: Vec<f64> = (0..ROWS * FEATURES).map(|_| rng.random::<f64>()).collect();
        let Ok(forest) = IsolationForest::fit(
            Matrix::new(&data, FEATURES),
            Params {
                seed: 7,
                ..Params::default()
            },
        ) else {
            return Calibration {
                best: Walk::Scalar,
                rows_per_sec: Vec::new(),
            };
        };
        let mut acc = vec![0.0; ROWS];
        let mut rows_per_sec = Vec::new();
        for walk in available {
            let mut best = std::time::Duration::MAX;
            for _ in 0..5 {
                let started = std::time::Instant::now();
                forest.fast_lengths_with::<FEATURES>(walk, &data, &mut acc);
                best = best.min(started.elapsed());
            }
            rows_per_sec.push((walk, ROWS as f64 / best.as_secs_f64().max(1e-9)));
        }
        let best = rows_per_sec
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(Walk::Scalar, |(w, _)| *w);
        Calibration { best, rows_per_sec }
    })
}

/// The walk scoring uses now: the forced one, else the fastest measured.
fn walk_now() -> Walk {
    simd::forced().unwrap_or_else(|| calibration().best)
}

/// The walks this CPU runs, best last.
pub fn walks() -> Vec<Walk> {
    simd::available()
}

/// `max_samples`: how many rows each tree sees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum MaxSamples {
    /// `min(256, n)`.
    Auto,
    Count(usize),
    Fraction(f64),
}

/// `contamination`: how the decision threshold is set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Contamination {
    /// Offset −0.5, as in the original paper.
    Auto,
    /// Expected share of outliers in the training data, in (0, 0.5].
    Fraction(f64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub n_estimators: usize,
    pub max_samples: MaxSamples,
    /// Share (0, 1] of the features each tree uses.
    pub max_features: f64,
    pub bootstrap: bool,
    pub contamination: Contamination,
    pub seed: u64,
    /// Not in scikit-learn (off by default, for parity): isolate a row at
    /// the first node whose split-feature range it lies far outside (the
    /// range check of the original iForest authors' code, as isotree's
    /// `penalize_range`). Lets values far beyond the training data score
    /// as the outliers they are; the streaming detector turns it on.
    #[serde(default)]
    pub range_check: bool,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            n_estimators: 100,
            max_samples: MaxSamples::Auto,
            max_features: 1.0,
            bootstrap: false,
            contamination: Contamination::Auto,
            seed: 0,
            range_check: false,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FitError {
    #[error("no training rows")]
    Empty,
    #[error("{0}")]
    Invalid(String),
}

/// Row-major `f64` data: `rows × features`.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    pub data: &'a [f64],
    pub features: usize,
}

impl<'a> Matrix<'a> {
    pub fn new(data: &'a [f64], features: usize) -> Self {
        assert!(
            features > 0 && data.len().is_multiple_of(features),
            "ragged matrix"
        );
        Self { data, features }
    }

    pub fn rows(&self) -> usize {
        self.data.len() / self.features
    }

    pub fn row(&self, i: usize) -> &'a [f64] {
        &self.data[i * self.features..(i + 1) * self.features]
    }

    /// Row `r`, feature `f`, as the trees see it ([`quantize`]d).
    #[inline]
    pub(crate) fn value(&self, r: usize, f: usize) -> f64 {
        quantize(self.data[r * self.features + f])
    }
}

/// Features are single precision inside the forest, as in scikit-learn
/// (which converts `X` to float32 for fitting and scoring): every value is
/// rounded to f32 before it meets a threshold. It also lets the fast layout
/// score f32 rows against f32 thresholds with the exact same routing.
#[inline]
pub(crate) fn quantize(v: f64) -> f64 {
    f64::from(v as f32)
}

/// A fitted forest. Serialized without its scoring layout (which pads with
/// infinities JSON cannot hold); deserializing rebuilds it from the trees.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "StoredForest")]
pub struct IsolationForest {
    params: Params,
    trees: Vec<Tree>,
    /// The same trees laid out for fast scoring (`None` past depth 16).
    #[serde(skip_serializing)]
    complete: Vec<Option<Complete>>,
    /// Every tree in the f32 fixed-depth layout, when all are ≤ 8 deep
    /// (the default 256-row samples); empty otherwise.
    #[serde(skip_serializing)]
    fast: Vec<Fast>,
    features: usize,
    max_samples: usize,
    /// `offset_` in scikit-learn.
    offset: f64,
}

/// The serialized form of [`IsolationForest`].
#[derive(Deserialize)]
struct StoredForest {
    params: Params,
    trees: Vec<Tree>,
    features: usize,
    max_samples: usize,
    offset: f64,
}

impl From<StoredForest> for IsolationForest {
    fn from(s: StoredForest) -> Self {
        let complete = s.trees.iter().map(Complete::from_tree).collect();
        let fast = fast_layout(&s.trees);
        Self {
            params: s.params,
            trees: s.trees,
            complete,
            fast,
            features: s.features,
            max_samples: s.max_samples,
            offset: s.offset,
        }
    }
}

fn fast_layout(trees: &[Tree]) -> Vec<Fast> {
    trees
        .iter()
        .map(Fast::from_tree)
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default()
}

/// `c(n)`: the average path length of an unsuccessful search in a binary
/// search tree of `n` nodes — the depth a leaf of `n` rows stands for.
pub fn average_path_length(n: f64) -> f64 {
    const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;
    if n <= 1.0 {
        0.0
    } else if n <= 2.0 {
        1.0
    } else {
        2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
    }
}

impl IsolationForest {
    pub fn fit(x: Matrix<'_>, params: Params) -> Result<Self, FitError> {
        let n = x.rows();
        if n == 0 {
            return Err(FitError::Empty);
        }
        if params.n_estimators == 0 {
            return Err(FitError::Invalid("n_estimators must be positive".into()));
        }
        if !(params.max_features > 0.0 && params.max_features <= 1.0) {
            return Err(FitError::Invalid("max_features must be in (0, 1]".into()));
        }
        let max_samples = match params.max_samples {
            MaxSamples::Auto => n.min(256),
            MaxSamples::Count(c) if c >= 1 => c.min(n),
            MaxSamples::Fraction(f) if f > 0.0 && f <= 1.0 => ((f * n as f64) as usize).max(1),
            other => return Err(FitError::Invalid(format!("max_samples {other:?}"))),
        };
        if let Contamination::Fraction(c) = params.contamination
            && !(c > 0.0 && c <= 0.5)
        {
            return Err(FitError::Invalid(
                "contamination must be in (0, 0.5]".into(),
            ));
        }
        let n_features = ((params.max_features * x.features as f64) as usize).max(1);
        let max_depth = (max_samples.max(2) as f64).log2().ceil() as usize;
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
        let mut trees = Vec::with_capacity(params.n_estimators);
        for _ in 0..params.n_estimators {
            let tree_seed: u64 = rng.random();
            let mut tree_rng = ChaCha8Rng::seed_from_u64(tree_seed);
            let rows: Vec<u32> = if params.bootstrap {
                (0..max_samples)
                    .map(|_| tree_rng.random_range(0..n) as u32)
                    .collect()
            } else {
                sample(&mut tree_rng, n, max_samples)
                    .into_iter()
                    .map(|i| i as u32)
                    .collect()
            };
            let features: Vec<u32> = if n_features == x.features {
                (0..x.features as u32).collect()
            } else {
                let mut f: Vec<u32> = sample(&mut tree_rng, x.features, n_features)
                    .into_iter()
                    .map(|i| i as u32)
                    .collect();
                f.sort_unstable();
                f
            };
            trees.push(Tree::grow(x, rows, &features, max_depth, &mut tree_rng));
        }
        let complete = trees.iter().map(Complete::from_tree).collect();
        let fast = fast_layout(&trees);
        let mut forest = Self {
            params: params.clone(),
            trees,
            complete,
            fast,
            features: x.features,
            max_samples,
            offset: -0.5,
        };
        if let Contamination::Fraction(c) = params.contamination {
            let mut scores = forest.score_samples(x);
            scores.sort_by(f64::total_cmp);
            forest.offset = percentile(&scores, 100.0 * c);
        }
        Ok(forest)
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn n_features(&self) -> usize {
        self.features
    }

    pub fn offset(&self) -> f64 {
        self.offset
    }

    /// Sum over trees of each row's path length, into `acc` (one per row
    /// of the row-major `rows`).
    fn path_lengths(&self, rows: &[f64], acc: &mut [f64]) {
        acc.fill(0.0);
        if self.params.range_check {
            let f = self.features;
            for tree in &self.trees {
                for (r, a) in acc.iter_mut().enumerate() {
                    *a += tree.path_length_checked(&rows[r * f..(r + 1) * f]);
                }
            }
            return;
        }
        if !self.fast.is_empty() {
            let done = match self.features {
                1 => self.fast_lengths::<1>(rows, acc),
                2 => self.fast_lengths::<2>(rows, acc),
                3..=4 => self.fast_lengths::<4>(rows, acc),
                5..=8 => self.fast_lengths::<8>(rows, acc),
                9..=16 => self.fast_lengths::<16>(rows, acc),
                17..=32 => self.fast_lengths::<32>(rows, acc),
                _ => false,
            };
            if done {
                return;
            }
        }
        for (tree, complete) in self.trees.iter().zip(&self.complete) {
            match complete {
                Some(c) => c.accumulate(rows, self.features, acc),
                None => {
                    for (r, a) in acc.iter_mut().enumerate() {
                        *a += tree.path_length(&rows[r * self.features..(r + 1) * self.features]);
                    }
                }
            }
        }
    }

    /// [`Self::path_lengths`] through the f32 layout: the rows are copied
    /// into f32 at a power-of-two stride `S ≥ features`, then every tree
    /// walks them. Returns `false` (nothing done) if `S` is too small.
    fn fast_lengths<const S: usize>(&self, rows: &[f64], acc: &mut [f64]) -> bool {
        self.fast_lengths_with::<S>(walk_now(), rows, acc)
    }

    /// [`Self::fast_lengths`] with the given walk.
    fn fast_lengths_with<const S: usize>(&self, walk: Walk, rows: &[f64], acc: &mut [f64]) -> bool {
        let nf = self.features;
        if nf > S {
            return false;
        }
        let mut block = vec![[0.0f32; S]; acc.len()];
        for (b, row) in block.iter_mut().zip(rows.chunks_exact(nf)) {
            for (slot, v) in b.iter_mut().zip(row) {
                *slot = *v as f32;
            }
        }
        for tree in &self.fast {
            let done = simd::accumulate::<S>(walk, tree, &block, acc);
            tree.accumulate::<S>(&block[done..], &mut acc[done..]);
        }
        true
    }

    /// Turns summed path lengths into `score_samples` values, in place:
    /// `-2^(-E[h(x)] / c(ψ))`.
    fn finish_scores(&self, acc: &mut [f64]) {
        let norm = self.trees.len() as f64 * average_path_length(self.max_samples as f64);
        for a in acc {
            *a = -(-*a / norm).exp2();
        }
    }

    /// scikit-learn's `score_samples`: the lower, the more abnormal.
    /// Scores blocks of rows tree by tree, so each tree stays in cache.
    pub fn score_samples(&self, x: Matrix<'_>) -> Vec<f64> {
        assert_eq!(x.features, self.features, "feature count");
        const CHUNK: usize = 1024;
        let mut out = vec![0.0; x.rows()];
        for (i, acc) in out.chunks_mut(CHUNK).enumerate() {
            let start = i * CHUNK * self.features;
            let rows = &x.data[start..start + acc.len() * self.features];
            self.path_lengths(rows, acc);
            self.finish_scores(acc);
        }
        out
    }

    /// scikit-learn's `decision_function`: negative = outlier.
    pub fn decision_function(&self, x: Matrix<'_>) -> Vec<f64> {
        self.score_samples(x)
            .into_iter()
            .map(|s| s - self.offset)
            .collect()
    }

    /// scikit-learn's `predict`: `-1` outlier, `1` inlier.
    pub fn predict(&self, x: Matrix<'_>) -> Vec<i8> {
        self.decision_function(x)
            .into_iter()
            .map(|d| if d < 0.0 { -1 } else { 1 })
            .collect()
    }

    /// `score_samples` straight from Arrow columns (one per feature, in
    /// training order); nulls count as 0. Writes into `out` so a caller can
    /// reuse the buffer across batches.
    pub fn score_columns(&self, columns: &[&Float64Array], out: &mut Vec<f64>) {
        assert_eq!(columns.len(), self.features, "feature count");
        const CHUNK: usize = 1024;
        let rows = columns.first().map_or(0, |c| c.len());
        out.clear();
        out.resize(rows, 0.0);
        // One row-major block buffer for the whole call.
        let mut block = vec![0.0; CHUNK * self.features];
        for (i, acc) in out.chunks_mut(CHUNK).enumerate() {
            let first = i * CHUNK;
            for (f, c) in columns.iter().enumerate() {
                for r in 0..acc.len() {
                    block[r * self.features + f] = if c.is_null(first + r) {
                        0.0
                    } else {
                        c.value(first + r)
                    };
                }
            }
            self.path_lengths(&block[..acc.len() * self.features], acc);
            self.finish_scores(acc);
        }
    }

    /// Which features isolated `row`: each split on its paths is credited
    /// with the share of the tree's sample it cut away from the row (the
    /// early, decisive splits of an outlier earn most), summed per feature
    /// over all trees and normalised to shares that add up to 1.
    pub fn explain(&self, row: &[f64]) -> Vec<f64> {
        let mut weights = vec![0.0; self.features];
        for t in &self.trees {
            t.attribute(row, &mut weights, self.params.range_check);
        }
        let total: f64 = weights.iter().sum();
        if total > 0.0 {
            weights.iter_mut().for_each(|w| *w /= total);
        }
        weights
    }
}

#[cfg(test)]
impl IsolationForest {
    /// `score_samples` of one row by walking the node trees: the reference
    /// the complete layout must match.
    fn score_by_walking(&self, row: &[f64]) -> f64 {
        let depth: f64 = self.trees.iter().map(|t| t.path_length(row)).sum();
        let norm = self.trees.len() as f64 * average_path_length(self.max_samples as f64);
        -(-depth / norm).exp2()
    }
}

/// numpy's default (linear) percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = (sorted.len() - 1) as f64 * q / 100.0;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests;
