use std::sync::Arc;

use arrow::array::Float64Array;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box–Muller.
    let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// `n` inliers ~ N(0, 1)^d and `k` outliers ~ N(6, 1)^d (labels: 1 = outlier).
fn dataset(n: usize, k: usize, d: usize, seed: u64) -> (Vec<f64>, Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::with_capacity((n + k) * d);
    let mut y = Vec::with_capacity(n + k);
    for i in 0..n + k {
        let outlier = i >= n;
        for _ in 0..d {
            x.push(normal(&mut rng) + if outlier { 6.0 } else { 0.0 });
        }
        y.push(u8::from(outlier));
    }
    (x, y)
}

/// ROC AUC where a lower score means "more abnormal".
fn auc(scores: &[f64], labels: &[u8]) -> f64 {
    let abnormality: Vec<f64> = scores.iter().map(|s| -s).collect();
    crate::metrics::roc_auc(&abnormality, labels)
}

#[test]
fn average_path_length_matches_the_paper() {
    assert_eq!(average_path_length(0.0), 0.0);
    assert_eq!(average_path_length(1.0), 0.0);
    assert_eq!(average_path_length(2.0), 1.0);
    // 2 (ln 255 + γ) − 2·255/256
    assert!((average_path_length(256.0) - 10.244_770_920_116_851).abs() < 1e-9);
}

#[test]
fn separates_outliers_and_is_deterministic() {
    let (x, y) = dataset(2000, 40, 4, 1);
    let m = Matrix::new(&x, 4);
    let forest = IsolationForest::fit(m, Params::default()).unwrap();
    let scores = forest.score_samples(m);
    assert!(auc(&scores, &y) > 0.99, "auc {}", auc(&scores, &y));
    assert!(scores.iter().all(|s| (-1.0..0.0).contains(s)));
    // Same seed, same forest; another seed, other scores.
    let again = IsolationForest::fit(m, Params::default()).unwrap();
    assert_eq!(again.score_samples(m), scores);
    let other = IsolationForest::fit(
        m,
        Params {
            seed: 7,
            ..Params::default()
        },
    )
    .unwrap();
    assert_ne!(other.score_samples(m), scores);
}

#[test]
fn auto_contamination_uses_offset_minus_half_and_fraction_uses_the_quantile() {
    let (x, _) = dataset(1000, 0, 3, 2);
    let m = Matrix::new(&x, 3);
    let auto = IsolationForest::fit(m, Params::default()).unwrap();
    assert_eq!(auto.offset(), -0.5);
    let tenth = IsolationForest::fit(
        m,
        Params {
            contamination: Contamination::Fraction(0.1),
            ..Params::default()
        },
    )
    .unwrap();
    let outliers = tenth.predict(m).iter().filter(|p| **p == -1).count();
    assert!((95..=105).contains(&outliers), "{outliers} of 1000");
    let decision = tenth.decision_function(m);
    let scores = tenth.score_samples(m);
    for (d, s) in decision.iter().zip(&scores) {
        assert!((d - (s - tenth.offset())).abs() < 1e-12);
    }
}

#[test]
fn arrow_columns_score_like_rows() {
    let (x, _) = dataset(500, 10, 2, 3);
    let m = Matrix::new(&x, 2);
    let forest = IsolationForest::fit(m, Params::default()).unwrap();
    let cols: Vec<Arc<Float64Array>> = (0..2)
        .map(|f| {
            Arc::new(Float64Array::from_iter_values(
                x.iter().skip(f).step_by(2).copied(),
            ))
        })
        .collect();
    let refs: Vec<&Float64Array> = cols.iter().map(|c| c.as_ref()).collect();
    let mut out = Vec::new();
    forest.score_columns(&refs, &mut out);
    assert_eq!(out, forest.score_samples(m));
}

#[test]
fn explanations_name_the_feature_that_isolates() {
    let (mut x, _) = dataset(1000, 0, 3, 4);
    // One point far out on feature 2 only.
    x.extend_from_slice(&[0.0, 0.0, 12.0]);
    let m = Matrix::new(&x, 3);
    let forest = IsolationForest::fit(m, Params::default()).unwrap();
    let shares = forest.explain(&[0.0, 0.0, 12.0]);
    assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    assert!(shares[2] > shares[0] && shares[2] > shares[1], "{shares:?}");
}

#[test]
fn subsampling_features_and_bootstrap_still_work() {
    let (x, y) = dataset(2000, 40, 8, 5);
    let m = Matrix::new(&x, 8);
    let forest = IsolationForest::fit(
        m,
        Params {
            max_features: 0.5,
            bootstrap: true,
            max_samples: MaxSamples::Fraction(0.1),
            ..Params::default()
        },
    )
    .unwrap();
    assert!(auc(&forest.score_samples(m), &y) > 0.99);
}

#[test]
fn constant_data_and_bad_parameters() {
    let x = vec![1.0; 300];
    let forest = IsolationForest::fit(Matrix::new(&x, 3), Params::default()).unwrap();
    // Nothing to split: every row is as normal as the others.
    let s = forest.score_samples(Matrix::new(&x, 3));
    assert!(s.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        IsolationForest::fit(Matrix::new(&[], 3), Params::default()).unwrap_err(),
        FitError::Empty
    );
    for bad in [
        Params {
            n_estimators: 0,
            ..Params::default()
        },
        Params {
            max_features: 0.0,
            ..Params::default()
        },
        Params {
            contamination: Contamination::Fraction(0.7),
            ..Params::default()
        },
        Params {
            max_samples: MaxSamples::Fraction(1.5),
            ..Params::default()
        },
    ] {
        assert!(matches!(
            IsolationForest::fit(Matrix::new(&x, 3), bad),
            Err(FitError::Invalid(_))
        ));
    }
}

#[test]
fn the_complete_layout_scores_exactly_like_walking_the_trees() {
    let (mut x, _) = dataset(3000, 30, 5, 6);
    // Constant and duplicated rows make early leaves; NaN routes right.
    for _ in 0..50 {
        x.extend_from_slice(&[1.0, 1.0, 1.0, 1.0, 1.0]);
    }
    for max_samples in [
        MaxSamples::Auto,
        MaxSamples::Count(2000),
        MaxSamples::Count(3),
    ] {
        let m = Matrix::new(&x, 5);
        let forest = IsolationForest::fit(
            m,
            Params {
                max_samples,
                ..Params::default()
            },
        )
        .unwrap();
        let fast = forest.score_samples(m);
        for (i, s) in fast.iter().enumerate() {
            assert_eq!(
                *s,
                forest.score_by_walking(m.row(i)),
                "row {i} {max_samples:?}"
            );
        }
        let odd = [f64::NAN, 0.0, f64::INFINITY, -1e300, 3.0];
        assert_eq!(
            forest.score_samples(Matrix::new(&odd, 5))[0],
            forest.score_by_walking(&odd)
        );
    }
}

#[test]
fn the_range_check_scores_values_far_beyond_the_training_data_high() {
    let (x, y) = dataset(3000, 0, 3, 11);
    let _ = y;
    let m = Matrix::new(&x, 3);
    let plain = IsolationForest::fit(m, Params::default()).unwrap();
    let checked = IsolationForest::fit(
        m,
        Params {
            range_check: true,
            ..Params::default()
        },
    )
    .unwrap();
    let far = [100.0, 0.0, 0.0];
    let edge = -plain.score_samples(Matrix::new(&far, 3))[0];
    let isolated = -checked.score_samples(Matrix::new(&far, 3))[0];
    // Without the check a value 100σ out scores like the training edge.
    assert!(edge < 0.7, "plain {edge}");
    assert!(isolated > 0.8, "checked {isolated}");
    // The explanation names the feature that is out of range.
    let shares = checked.explain(&far);
    assert!(shares[0] > 0.6, "{shares:?}");
    // In-range rows keep (nearly) the same ranking.
    let a: Vec<f64> = plain.score_samples(m);
    let b: Vec<f64> = checked.score_samples(m);
    let rho = crate::metrics::spearman(&a, &b);
    assert!(rho > 0.999, "spearman {rho}");
}

#[test]
fn a_forest_survives_a_json_round_trip() {
    let (x, _) = dataset(1000, 10, 3, 12);
    let m = Matrix::new(&x, 3);
    let forest = IsolationForest::fit(m, Params::default()).unwrap();
    let json = serde_json::to_string(&forest).unwrap();
    let back: IsolationForest = serde_json::from_str(&json).unwrap();
    assert_eq!(back.score_samples(m), forest.score_samples(m));
    assert_eq!(back.offset(), forest.offset());
}

#[test]
fn f32_thresholds_route_f32_values_exactly_like_f64_thresholds() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for _ in 0..100_000 {
        let t: f64 = normal(&mut rng) * 10f64.powi(rng.random_range(-3..6));
        let t32 = tree::f32_at_most(t);
        assert!(f64::from(t32) <= t && f64::from(t32.next_up()) > t, "{t}");
        // Values around the threshold, as the forest sees them (f32).
        for x in [t32.next_down(), t32, t32.next_up(), t as f32] {
            assert_eq!(f64::from(x) <= t, x <= t32, "x {x} t {t}");
        }
    }
}

#[test]
fn the_vector_walk_scores_exactly_like_walking_the_trees() {
    let (x, _) = dataset(2000, 20, 6, 14);
    let m = Matrix::new(&x, 6);
    let forest = IsolationForest::fit(m, Params::default()).unwrap();
    // Blocks of 16 rows with NaN, infinities, huge values and values equal
    // to training values (thresholds lie between them) in every position.
    let odd = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -1e300,
        1e300,
        0.0,
    ];
    let mut rows = x[..6 * 40].to_vec();
    for (i, v) in rows.iter_mut().enumerate() {
        if i % 7 == 3 {
            *v = odd[i % odd.len()];
        }
    }
    rows.extend_from_slice(&x[..6 * 1000]);
    let m = Matrix::new(&rows, 6);
    let scores = forest.score_samples(m);
    for (i, s) in scores.iter().enumerate() {
        assert_eq!(
            s.to_bits(),
            forest.score_by_walking(m.row(i)).to_bits(),
            "row {i}"
        );
    }
    // Every walk this CPU has, tree by tree, bit for bit against the
    // scalar walk, on 16 k + 8 + 5 rows (full vectors, groups, leftovers).
    let mut block: Vec<[f32; 8]> = rows
        .chunks_exact(6)
        .map(|r| {
            let mut b = [0.0f32; 8];
            for (s, v) in b.iter_mut().zip(r) {
                *s = *v as f32;
            }
            b
        })
        .collect();
    block.truncate(16 * 40 + 8 + 5);
    let walks = simd::available();
    for walk in &walks {
        for tree in &forest.fast {
            let mut want = vec![0.5; block.len()];
            tree.accumulate::<8>(&block, &mut want);
            let mut got = vec![0.5; block.len()];
            let done = simd::accumulate::<8>(*walk, tree, &block, &mut got);
            tree.accumulate::<8>(&block[done..], &mut got[done..]);
            let full = match walk {
                Walk::Scalar => 0,
                Walk::Avx2 => block.len() / 8 * 8,
                Walk::Avx512 => block.len() / 16 * 16,
            };
            assert_eq!(done, full, "{walk:?}");
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{walk:?}");
        }
    }
    eprintln!("walks on this CPU: {walks:?}");
}

/// The default walk is the fastest measured on this CPU, and a forced walk
/// overrides it; every walk scores alike.
#[test]
fn the_default_walk_is_measured_and_scores_like_every_other() {
    let c = super::calibration();
    assert_eq!(
        c.rows_per_sec.len(),
        super::walks()
            .len()
            .min(c.rows_per_sec.len().max(1))
            .max(c.rows_per_sec.len())
    );
    if let Some(fastest) = c.rows_per_sec.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
        assert_eq!(c.best, fastest.0);
    }
    assert!(super::walks().contains(&c.best));
}
