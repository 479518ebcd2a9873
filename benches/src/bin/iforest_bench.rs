//! SecureNet's isolation forest on the data `benches/python/iforest_reference.py`
//! wrote (raw little-endian f64 rows and u8 labels): fit seconds, single
//! thread scoring throughput and ROC AUC, medians over runs, as JSON.
//! Scoring is timed twice per run, with the vector walk the CPU allows
//! (AVX-512) and with the portable scalar walk, so one command shows both.
//!
//!     iforest_bench DATA_DIR FEATURES RUNS

use std::time::Instant;

use detectors::iforest::{IsolationForest, Matrix, Params};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 4,
        "usage: iforest_bench DATA_DIR FEATURES RUNS"
    );
    let dir = std::path::Path::new(&args[1]);
    let features: usize = args[2].parse()?;
    let runs: usize = args[3].parse()?;
    let raw = std::fs::read(dir.join("x.f64"))?;
    let x: Vec<f64> = raw
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .collect();
    let y = std::fs::read(dir.join("y.u8"))?;
    let m = Matrix::new(&x, features);
    let (mut fits, mut rates, mut scalar_rates, mut auc) = (vec![], vec![], vec![], 0.0);
    for run in 0..runs {
        let started = Instant::now();
        let forest = IsolationForest::fit(
            m,
            Params {
                seed: run as u64,
                ..Params::default()
            },
        )?;
        let fit = started.elapsed().as_secs_f64();
        let timed = |vector: bool| {
            detectors::iforest::use_vector_walk(vector);
            let started = Instant::now();
            let scores = forest.score_samples(m);
            (scores, m.rows() as f64 / started.elapsed().as_secs_f64())
        };
        let (scalar_scores, scalar_rate) = timed(false);
        let (scores, rate) = timed(true);
        anyhow::ensure!(scores == scalar_scores, "the two walks disagree");
        let abnormality: Vec<f64> = scores.iter().map(|s| -s).collect();
        auc = detectors::metrics::roc_auc(&abnormality, &y);
        eprintln!(
            "securenet: fit {fit:.4}s, score {rate:.0} rows/s (scalar walk {scalar_rate:.0}), auc {auc:.4}"
        );
        fits.push(fit);
        rates.push(rate);
        scalar_rates.push(scalar_rate);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "{}",
        serde_json::json!({
            "median_fit_s": (median(fits) * 1e4).round() / 1e4,
            "median_score_rows_per_s": median(rates).round(),
            "scalar_median_score_rows_per_s": median(scalar_rates).round(),
            "vector_walk": detectors::iforest::has_vector_walk(),
            "auc": (auc * 1e4).round() / 1e4,
        })
    );
    Ok(())
}
