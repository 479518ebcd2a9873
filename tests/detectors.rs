//! Isolation forest parity with scikit-learn: `scripts/test.sh` runs
//! `scripts/reference/iforest.py` (scikit-learn in the test venv) and points
//! `SECURENET_IFOREST_REFERENCE` at its output. On every dataset (≥10k rows)
//! our scores must rank points like scikit-learn's (Spearman ≥ 0.99) and
//! reach the same ROC AUC on the labels (within 0.01).

use detectors::iforest::{IsolationForest, Matrix, Params};

struct Reference {
    x: Vec<f64>,
    features: usize,
    labels: Vec<u8>,
    sklearn: Vec<f64>,
}

fn load(path: &std::path::Path) -> Reference {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let columns = lines.next().unwrap().split(',').count();
    let features = columns - 2;
    let mut r = Reference {
        x: vec![],
        features,
        labels: vec![],
        sklearn: vec![],
    };
    for line in lines {
        let v: Vec<f64> = line.split(',').map(|c| c.parse().unwrap()).collect();
        assert_eq!(v.len(), columns, "{line}");
        r.x.extend_from_slice(&v[..features]);
        r.labels.push(v[features] as u8);
        r.sklearn.push(v[features + 1]);
    }
    r
}

/// Ranks with ties averaged.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut out = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0;
        for k in &idx[i..=j] {
            out[*k] = rank;
        }
        i = j + 1;
    }
    out
}

fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - ma) * (y - mb);
        va += (x - ma).powi(2);
        vb += (y - mb).powi(2);
    }
    cov / (va * vb).sqrt()
}

/// ROC AUC of "lower score = outlier" against labels (1 = outlier).
fn auc(scores: &[f64], labels: &[u8]) -> f64 {
    let r = ranks(&scores.iter().map(|s| -s).collect::<Vec<_>>());
    let pos = labels.iter().filter(|l| **l == 1).count() as f64;
    let neg = labels.len() as f64 - pos;
    let rank_sum: f64 = r
        .iter()
        .zip(labels)
        .filter(|(_, l)| **l == 1)
        .map(|(r, _)| r + 1.0)
        .sum();
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

#[test]
fn scores_rank_like_scikit_learn_and_reach_the_same_auc() {
    let dir = std::env::var("SECURENET_IFOREST_REFERENCE").expect(
        "SECURENET_IFOREST_REFERENCE is unset: run ./scripts/test.sh, which runs scikit-learn",
    );
    for name in ["blobs", "clusters", "lognormal"] {
        let r = load(&std::path::Path::new(&dir).join(format!("{name}.csv")));
        assert!(r.labels.len() >= 10_000, "{name}: {} rows", r.labels.len());
        let forest = IsolationForest::fit(
            Matrix::new(&r.x, r.features),
            Params {
                n_estimators: 1000,
                ..Params::default()
            },
        )
        .unwrap();
        let ours = forest.score_samples(Matrix::new(&r.x, r.features));
        let rho = spearman(&ours, &r.sklearn);
        let (a_ours, a_sk) = (auc(&ours, &r.labels), auc(&r.sklearn, &r.labels));
        eprintln!("{name}: spearman {rho:.4}, auc ours {a_ours:.5} sklearn {a_sk:.5}");
        assert!(rho >= 0.99, "{name}: spearman {rho}");
        assert!(
            (a_ours - a_sk).abs() <= 0.01,
            "{name}: auc {a_ours} vs {a_sk}"
        );
    }
}
