//! SecureNet's isolation forest on the data `benches/python/iforest_reference.py`
//! wrote (raw little-endian f64 rows and u8 labels): fit seconds, single
//! thread scoring throughput and ROC AUC, medians over runs, as JSON.
//! Scoring is timed once per run with every walk the CPU has (scalar,
//! AVX2, AVX-512), so one command compares them, and with the walk the
//! library picks by measuring at start (the headline: what users get).
//!
//!     iforest_bench DATA_DIR FEATURES RUNS

use std::time::Instant;

use serde_json::json;

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
    let walks = detectors::iforest::walks();
    let (mut fits, mut auc) = (vec![], 0.0);
    let mut rates: Vec<Vec<f64>> = vec![vec![]; walks.len()];
    let mut defaults = Vec::new();
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
        let timed = |walk| {
            detectors::iforest::use_walk(Some(walk));
            let started = Instant::now();
            let scores = forest.score_samples(m);
            (scores, m.rows() as f64 / started.elapsed().as_secs_f64())
        };
        let mut best = None;
        for (w, walk) in walks.iter().enumerate() {
            let (scores, rate) = timed(*walk);
            eprintln!(
                "securenet: fit {fit:.4}s, {} walk {rate:.0} rows/s",
                walk.name()
            );
            rates[w].push(rate);
            if let Some(first) = &best {
                anyhow::ensure!(&scores == first, "the {} walk disagrees", walk.name());
            }
            best = Some(scores);
        }
        // What users get: the walk the calibration chose.
        detectors::iforest::use_walk(None);
        let started = Instant::now();
        let chosen = forest.score_samples(m);
        defaults.push(m.rows() as f64 / started.elapsed().as_secs_f64());
        anyhow::ensure!(Some(&chosen) == best.as_ref(), "the default walk disagrees");
        let scores = best.unwrap_or_default();
        let abnormality: Vec<f64> = scores.iter().map(|s| -s).collect();
        auc = detectors::metrics::roc_auc(&abnormality, &y);
        eprintln!("securenet: auc {auc:.4}");
        fits.push(fit);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let calibration = detectors::iforest::calibration();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    println!(
        "{}",
        json!({
            "median_fit_s": (median(fits) * 1e4).round() / 1e4,
            "median_score_rows_per_s": median(defaults).round(),
            "walk": calibration.best.name(),
            "cpu": cpu,
            "calibration_rows_per_s": calibration.rows_per_sec.iter()
                .map(|(w, r)| (w.name().to_string(), json!(r.round())))
                .collect::<serde_json::Map<_, _>>(),
            "walks": walks.iter().zip(&rates)
                .map(|(w, r)| (w.name().to_string(), json!(median(r.clone()).round())))
                .collect::<serde_json::Map<_, _>>(),
            "auc": (auc * 1e4).round() / 1e4,
        })
    );
    Ok(())
}
