//! Isolation forest parity with scikit-learn: `scripts/test.sh` runs
//! `scripts/reference/iforest.py` (scikit-learn in the test venv) and points
//! `SECURENET_IFOREST_REFERENCE` at its output. On every dataset (≥10k rows)
//! our scores must rank points like scikit-learn's (Spearman ≥ 0.99) and
//! reach the same ROC AUC on the labels (within 0.01).

use detectors::iforest::{IsolationForest, Matrix, Params};
use detectors::metrics::{roc_auc, spearman};

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
        let negated = |v: &[f64]| v.iter().map(|s| -s).collect::<Vec<_>>();
        let (a_ours, a_sk) = (
            roc_auc(&negated(&ours), &r.labels),
            roc_auc(&negated(&r.sklearn), &r.labels),
        );
        eprintln!("{name}: spearman {rho:.4}, auc ours {a_ours:.5} sklearn {a_sk:.5}");
        assert!(rho >= 0.99, "{name}: spearman {rho}");
        assert!(
            (a_ours - a_sk).abs() <= 0.01,
            "{name}: auc {a_ours} vs {a_sk}"
        );
    }
}
