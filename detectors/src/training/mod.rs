//! Training on uploaded data: the product's "upload training data → train
//! → predict" flow, with no I/O here (the query API stores datasets and
//! artifacts).
//!
//! - [`parse`]: CSV (with a header) or JSON (an array of objects, or one
//!   object per line) through polars; numeric and boolean columns become
//!   features (as f64), the label column (if any) becomes classes, other
//!   columns are reported as ignored, and rows with a missing or non-finite
//!   value are dropped and counted.
//! - [`train`]: labelled data trains a random forest (smartcore) and reports
//!   accuracy, precision and recall on a held-out 20 % split, plus the ROC
//!   AUC an isolation forest reaches on the same split (the minority class
//!   taken as the anomaly); unlabelled data trains an isolation forest.
//! - [`predict`]: the label with a confidence (the share of trees voting
//!   for it), or the anomaly score with a confidence (how far from the
//!   threshold) and an explanation.
//!
//! The random forest is an ensemble of smartcore single-tree forests — each
//! one a bootstrap sample with `sqrt(features)` candidates per split, which
//! is what smartcore's forest trains per tree — because smartcore's forest
//! does not expose its votes, and a confidence needs them.

use std::collections::BTreeMap;
use std::io::Cursor;

use polars::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use smartcore::ensemble::random_forest_classifier::{
    RandomForestClassifier, RandomForestClassifierParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;

use crate::iforest::{Contamination, IsolationForest, Matrix, Params};
use crate::metrics::roc_auc;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TrainingError {
    /// The upload cannot be used; the message says why and how to fix it.
    #[error("{0}")]
    Invalid(String),
    #[error("training failed: {0}")]
    Failed(String),
}

type Result<T> = std::result::Result<T, TrainingError>;

fn invalid(msg: impl Into<String>) -> TrainingError {
    TrainingError::Invalid(msg.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    /// An array of objects, or newline-delimited objects.
    Json,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_rows: usize,
    pub max_features: usize,
    pub min_rows: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_rows: 200_000,
            max_features: 256,
            min_rows: 20,
        }
    }
}

/// A cleaned dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    pub features: Vec<String>,
    /// Row-major, `rows × features.len()`.
    pub x: Vec<f64>,
    pub label_column: Option<String>,
    /// One per row when labelled.
    pub labels: Option<Vec<String>>,
    pub rows: usize,
    pub dropped_rows: usize,
    pub ignored_columns: Vec<String>,
}

impl Dataset {
    /// Rows per class, when labelled.
    pub fn class_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for l in self.labels.iter().flatten() {
            *counts.entry(l.clone()).or_default() += 1;
        }
        counts
    }
}

/// Which column holds the answer a model learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label<'a> {
    /// This column (it must exist).
    Column(&'a str),
    /// None: every numeric column is a feature (the uploader said so).
    Unlabelled,
    /// A column named `label` if there is one; a column whose name looks
    /// like an answer (`anomaly`, `is_attack`, `class`…) is refused rather
    /// than trained on as a feature.
    Auto,
}

/// Column names that look like an answer, not a measurement.
const LABEL_LIKE: &[&str] = &[
    "labels",
    "anomaly",
    "anomalous",
    "is_anomaly",
    "attack",
    "is_attack",
    "malicious",
    "is_malicious",
    "fraud",
    "is_fraud",
    "class",
    "target",
    "y",
    "outcome",
    "ground_truth",
    "truth",
    "verdict",
    "category",
    "tag",
];

/// Whether CSV text ends inside a quoted field (RFC 4180: a field that
/// starts with `"` runs to the next `"` not doubled; a `"` elsewhere in an
/// unquoted field is text, as polars reads it).
fn ends_inside_quotes(bytes: &[u8]) -> bool {
    let (mut quoted, mut field_start) = (false, true);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if quoted {
            if b == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    i += 2;
                    continue;
                }
                quoted = false;
            }
            field_start = false;
        } else if b == b'"' && field_start {
            quoted = true;
            field_start = false;
        } else {
            field_start = matches!(b, b',' | b'\n' | b'\r');
        }
        i += 1;
    }
    quoted
}

/// Parses and cleans an upload; `label` says which column is the answer.
pub fn parse(bytes: &[u8], format: Format, label: Label<'_>, limits: &Limits) -> Result<Dataset> {
    if std::str::from_utf8(bytes).is_err() {
        return Err(invalid("training data must be UTF-8 text"));
    }
    // polars 0.55's reader panics on a quoted field left open at the end
    // (found by fuzzing) instead of refusing it.
    if format == Format::Csv && ends_inside_quotes(bytes) {
        return Err(invalid(
            "cannot parse the training data: a quoted field is never closed",
        ));
    }
    // The reader is a third party's: should another input make it panic,
    // that is this upload's error, not a failed request or a lost worker.
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match format {
        Format::Csv => CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(Some(10_000))
            .into_reader_with_file_handle(Cursor::new(bytes))
            .finish(),
        Format::Json => {
            let trimmed = bytes.trim_ascii_start();
            let json_format = if trimmed.starts_with(b"[") {
                JsonFormat::Json
            } else {
                JsonFormat::JsonLines
            };
            JsonReader::new(Cursor::new(bytes))
                .with_json_format(json_format)
                .infer_schema_len(std::num::NonZeroUsize::new(10_000))
                .finish()
        }
    }));
    let df = read
        .map_err(|_| invalid("cannot parse the training data: the reader failed on it"))?
        .map_err(|e| {
            invalid(format!(
                "cannot parse the training data: {}",
                first_line(&e.to_string())
            ))
        })?;

    if df.height() > limits.max_rows {
        return Err(invalid(format!(
            "{} rows is over the limit of {}; sample the data first",
            df.height(),
            limits.max_rows
        )));
    }
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let label_column = match label {
        Label::Column(l) if names.iter().any(|n| n == l) => Some(l.to_string()),
        Label::Column(l) => {
            return Err(invalid(format!(
                "label column {l:?} is not in the data (columns: {})",
                names.join(", ")
            )));
        }
        Label::Unlabelled => None,
        Label::Auto => match names.iter().find(|n| n.as_str() == "label") {
            Some(l) => Some(l.clone()),
            None => {
                if let Some(suspect) = names
                    .iter()
                    .find(|n| LABEL_LIKE.contains(&n.to_ascii_lowercase().as_str()))
                {
                    return Err(invalid(format!(
                        "column {suspect:?} looks like a label: as a feature the model would \
                         learn the answer. Name the label (?label={suspect}) or say the data \
                         has none (?unlabelled=true)"
                    )));
                }
                None
            }
        },
    };
    let mut features = Vec::new();
    let mut ignored = Vec::new();
    for (name, column) in names.iter().zip(df.columns()) {
        if Some(name) == label_column.as_ref() {
            continue;
        }
        if column.dtype().is_primitive_numeric() || column.dtype() == &DataType::Boolean {
            features.push(name.clone());
        } else {
            ignored.push(name.clone());
        }
    }
    if features.is_empty() {
        return Err(invalid(format!(
            "no numeric feature columns (columns: {})",
            names.join(", ")
        )));
    }
    if features.len() > limits.max_features {
        return Err(invalid(format!(
            "{} feature columns is over the limit of {}",
            features.len(),
            limits.max_features
        )));
    }
    let mut columns: Vec<Vec<Option<f64>>> = Vec::with_capacity(features.len());
    for f in &features {
        let c = df
            .column(f)
            .and_then(|c| c.cast(&DataType::Float64))
            .map_err(|e| invalid(format!("column {f:?}: {e}")))?;
        let values = c
            .f64()
            .map_err(|e| invalid(format!("column {f:?}: {e}")))?
            .iter()
            .collect();
        columns.push(values);
    }
    let label_values: Option<Vec<Option<String>>> = match &label_column {
        Some(l) => {
            let c = df
                .column(l)
                .and_then(|c| c.cast(&DataType::String))
                .map_err(|e| invalid(format!("label column {l:?}: {e}")))?;
            let s = c
                .str()
                .map_err(|e| invalid(format!("label column {l:?}: {e}")))?;
            Some(
                s.iter()
                    .map(|v| v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty()))
                    .collect(),
            )
        }
        None => None,
    };
    let height = df.height();
    let mut x = Vec::with_capacity(height * features.len());
    let mut labels = label_values.as_ref().map(|_| Vec::with_capacity(height));
    let mut dropped = 0;
    for row in 0..height {
        let complete = columns.iter().all(|c| c[row].is_some_and(f64::is_finite))
            && label_values.as_ref().is_none_or(|l| l[row].is_some());
        if !complete {
            dropped += 1;
            continue;
        }
        x.extend(columns.iter().map(|c| c[row].unwrap_or(0.0)));
        if let (Some(out), Some(values)) = (labels.as_mut(), label_values.as_ref()) {
            out.push(values[row].clone().unwrap_or_default());
        }
    }
    let rows = height - dropped;
    if rows < limits.min_rows {
        return Err(invalid(format!(
            "{rows} usable rows (of {height}; {dropped} had missing or non-numeric values); at least {} are needed",
            limits.min_rows
        )));
    }
    let dataset = Dataset {
        features,
        x,
        label_column,
        labels,
        rows,
        dropped_rows: dropped,
        ignored_columns: ignored,
    };
    if dataset.labels.is_some() && dataset.class_counts().len() < 2 {
        return Err(invalid(
            "the label column has a single class; a classifier needs at least two",
        ));
    }
    Ok(dataset)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    IsolationForest,
    RandomForest,
}

/// A model trained on an upload.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TrainedModel {
    IsolationForest {
        features: Vec<String>,
        threshold: f64,
        forest: IsolationForest,
    },
    RandomForest {
        features: Vec<String>,
        classes: Vec<String>,
        trees: Vec<RandomForestClassifier<f64, i32, DenseMatrix<f64>, Vec<i32>>>,
    },
}

impl TrainedModel {
    pub fn features(&self) -> &[String] {
        match self {
            TrainedModel::IsolationForest { features, .. }
            | TrainedModel::RandomForest { features, .. } => features,
        }
    }

    pub fn kind(&self) -> ModelKind {
        match self {
            TrainedModel::IsolationForest { .. } => ModelKind::IsolationForest,
            TrainedModel::RandomForest { .. } => ModelKind::RandomForest,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingMetrics {
    pub train_rows: usize,
    pub test_rows: usize,
    /// Held-out accuracy (random forest).
    pub accuracy: Option<f64>,
    /// For `positive_class` (binary) or macro-averaged (more classes).
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub positive_class: Option<String>,
    /// ROC AUC of an isolation forest on the held-out split, the minority
    /// class as the anomaly (labelled data only).
    pub isolation_forest_auc: Option<f64>,
    /// Share of training rows above the isolation forest's threshold.
    pub flagged_share: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct TrainParams {
    pub kind: Option<ModelKind>,
    pub n_estimators: usize,
    pub contamination: f64,
    pub seed: u64,
}

impl Default for TrainParams {
    fn default() -> Self {
        Self {
            kind: None,
            n_estimators: 100,
            contamination: 0.05,
            seed: 42,
        }
    }
}

fn fit_forest(x: &[f64], features: usize, params: &TrainParams) -> Result<IsolationForest> {
    IsolationForest::fit(
        Matrix::new(x, features),
        Params {
            n_estimators: params.n_estimators,
            contamination: Contamination::Fraction(params.contamination.clamp(1e-4, 0.5)),
            seed: params.seed,
            ..Params::default()
        },
    )
    .map_err(|e| TrainingError::Failed(e.to_string()))
}

/// Trains the model `params.kind` asks for (default: a random forest for
/// labelled data, an isolation forest otherwise).
pub fn train(data: &Dataset, params: &TrainParams) -> Result<(TrainedModel, TrainingMetrics)> {
    let nf = data.features.len();
    let kind = params.kind.unwrap_or(if data.labels.is_some() {
        ModelKind::RandomForest
    } else {
        ModelKind::IsolationForest
    });
    let Some(labels) = &data.labels else {
        if kind == ModelKind::RandomForest {
            return Err(invalid(
                "a random forest needs labelled data (a label column)",
            ));
        }
        let forest = fit_forest(&data.x, nf, params)?;
        let threshold = -forest.offset();
        let scores = forest.score_samples(Matrix::new(&data.x, nf));
        let flagged = scores.iter().filter(|s| -**s > threshold).count();
        return Ok((
            TrainedModel::IsolationForest {
                features: data.features.clone(),
                threshold,
                forest,
            },
            TrainingMetrics {
                train_rows: data.rows,
                flagged_share: Some(flagged as f64 / data.rows as f64),
                ..Default::default()
            },
        ));
    };

    // Held-out split: a seeded shuffle, 80 / 20.
    let mut order: Vec<usize> = (0..data.rows).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(params.seed));
    let test_n = (data.rows / 5).max(1);
    let (test, train_idx) = order.split_at(test_n);
    let rows_of = |idx: &[usize]| -> Vec<f64> {
        idx.iter()
            .flat_map(|&i| data.x[i * nf..(i + 1) * nf].iter().copied())
            .collect()
    };
    let (x_train, x_test) = (rows_of(train_idx), rows_of(test));
    let counts = data.class_counts();
    let classes: Vec<String> = counts.keys().cloned().collect();
    let class_of = |l: &str| classes.iter().position(|c| c == l).unwrap_or(0) as i32;
    let y_train: Vec<i32> = train_idx.iter().map(|&i| class_of(&labels[i])).collect();
    let y_test: Vec<i32> = test.iter().map(|&i| class_of(&labels[i])).collect();
    // The anomaly class: the minority one.
    let minority = counts
        .iter()
        .min_by_key(|(_, n)| **n)
        .map(|(c, _)| class_of(c))
        .unwrap_or(0);

    // The isolation forest's view of the labels.
    let iforest = fit_forest(&x_train, nf, params)?;
    let scores = iforest.score_samples(Matrix::new(&x_test, nf));
    let abnormality: Vec<f64> = scores.iter().map(|s| -s).collect();
    let is_anomaly: Vec<u8> = y_test.iter().map(|&y| u8::from(y == minority)).collect();
    let auc = (is_anomaly.contains(&0) && is_anomaly.contains(&1))
        .then(|| roc_auc(&abnormality, &is_anomaly));

    let mut metrics = TrainingMetrics {
        train_rows: train_idx.len(),
        test_rows: test.len(),
        isolation_forest_auc: auc,
        ..Default::default()
    };
    match kind {
        ModelKind::IsolationForest => {
            let threshold = -iforest.offset();
            let predicted: Vec<i32> = abnormality
                .iter()
                .map(|&a| if a > threshold { minority } else { -1 })
                .collect();
            let (p, r) = precision_recall(&predicted, &y_test, minority);
            metrics.precision = Some(p);
            metrics.recall = Some(r);
            metrics.positive_class = Some(classes[minority as usize].clone());
            Ok((
                TrainedModel::IsolationForest {
                    features: data.features.clone(),
                    threshold,
                    forest: iforest,
                },
                metrics,
            ))
        }
        ModelKind::RandomForest => {
            let matrix = |x: &[f64], n: usize| {
                DenseMatrix::new(n, nf, x.to_vec(), false)
                    .map_err(|e| TrainingError::Failed(e.to_string()))
            };
            let train_m = matrix(&x_train, train_idx.len())?;
            let test_m = matrix(&x_test, test.len())?;
            let trees = (0..params.n_estimators.max(1))
                .map(|t| {
                    let p = RandomForestClassifierParameters::default()
                        .with_n_trees(1)
                        .with_seed(params.seed.wrapping_add(t as u64));
                    RandomForestClassifier::fit(&train_m, &y_train, p)
                        .map_err(|e| TrainingError::Failed(e.to_string()))
                })
                .collect::<Result<Vec<_>>>()?;
            let model = TrainedModel::RandomForest {
                features: data.features.clone(),
                classes: classes.clone(),
                trees,
            };
            let predicted: Vec<i32> = votes(&model, &test_m)?
                .into_iter()
                .map(|(c, _)| c as i32)
                .collect();
            let correct = predicted
                .iter()
                .zip(&y_test)
                .filter(|(p, y)| p == y)
                .count();
            metrics.accuracy = Some(correct as f64 / y_test.len() as f64);
            let (p, r) = if classes.len() == 2 {
                metrics.positive_class = Some(classes[minority as usize].clone());
                precision_recall(&predicted, &y_test, minority)
            } else {
                let per: Vec<(f64, f64)> = (0..classes.len() as i32)
                    .map(|c| precision_recall(&predicted, &y_test, c))
                    .collect();
                let n = per.len() as f64;
                (
                    per.iter().map(|p| p.0).sum::<f64>() / n,
                    per.iter().map(|p| p.1).sum::<f64>() / n,
                )
            };
            metrics.precision = Some(p);
            metrics.recall = Some(r);
            Ok((model, metrics))
        }
    }
}

/// Precision and recall of `class` (0 when undefined).
fn precision_recall(predicted: &[i32], truth: &[i32], class: i32) -> (f64, f64) {
    let tp = predicted
        .iter()
        .zip(truth)
        .filter(|(p, t)| **p == class && **t == class)
        .count() as f64;
    let pp = predicted.iter().filter(|p| **p == class).count() as f64;
    let ap = truth.iter().filter(|t| **t == class).count() as f64;
    (
        if pp > 0.0 { tp / pp } else { 0.0 },
        if ap > 0.0 { tp / ap } else { 0.0 },
    )
}

/// For each row: the winning class index and its share of the votes.
fn votes(model: &TrainedModel, x: &DenseMatrix<f64>) -> Result<Vec<(usize, f64)>> {
    let TrainedModel::RandomForest { classes, trees, .. } = model else {
        return Err(TrainingError::Failed("not a random forest".into()));
    };
    let n = smartcore::linalg::basic::arrays::Array::shape(x).0;
    let mut counts = vec![vec![0u32; classes.len()]; n];
    for tree in trees {
        let predicted = tree
            .predict(x)
            .map_err(|e| TrainingError::Failed(e.to_string()))?;
        for (row, c) in predicted.into_iter().enumerate() {
            if let Some(slot) = counts[row].get_mut(c as usize) {
                *slot += 1;
            }
        }
    }
    Ok(counts
        .into_iter()
        .map(|c| {
            let (best, n) = c
                .iter()
                .enumerate()
                .max_by_key(|(i, n)| (**n, std::cmp::Reverse(*i)))
                .map(|(i, n)| (i, *n))
                .unwrap_or((0, 0));
            (best, f64::from(n) / trees.len().max(1) as f64)
        })
        .collect())
}

/// One prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The class (random forest), or `anomaly` / `normal`.
    pub label: String,
    /// 0..1: the winning class's share of the trees' votes, or how far the
    /// score is from the threshold (relative to the room on that side).
    pub confidence: f64,
    /// Isolation forest only: the anomaly score (0..1, higher is more
    /// abnormal) and each feature's share of the isolation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<BTreeMap<String, f64>>,
}

/// Predicts rows given in the model's feature order (row-major).
pub fn predict(model: &TrainedModel, x: &[f64]) -> Result<Vec<Prediction>> {
    let nf = model.features().len();
    if nf == 0 || !x.len().is_multiple_of(nf) {
        return Err(invalid(format!("rows must have {nf} features")));
    }
    let rows = x.len() / nf;
    match model {
        TrainedModel::IsolationForest {
            features,
            threshold,
            forest,
        } => {
            let scores = forest.score_samples(Matrix::new(x, nf));
            Ok(scores
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    let score = -s;
                    let anomaly = score > *threshold;
                    let confidence = if anomaly {
                        (score - threshold) / (1.0 - threshold).max(1e-9)
                    } else {
                        (threshold - score) / threshold.max(1e-9)
                    };
                    let shares = forest.explain(&x[i * nf..(i + 1) * nf]);
                    Prediction {
                        label: if anomaly { "anomaly" } else { "normal" }.into(),
                        confidence: confidence.clamp(0.0, 1.0),
                        score: Some(score),
                        explanation: Some(features.iter().cloned().zip(shares).collect()),
                    }
                })
                .collect())
        }
        TrainedModel::RandomForest { classes, .. } => {
            let m = DenseMatrix::new(rows, nf, x.to_vec(), false)
                .map_err(|e| TrainingError::Failed(e.to_string()))?;
            Ok(votes(model, &m)?
                .into_iter()
                .map(|(c, share)| Prediction {
                    label: classes.get(c).cloned().unwrap_or_default(),
                    confidence: share,
                    score: None,
                    explanation: None,
                })
                .collect())
        }
    }
}

#[cfg(test)]
mod tests;
