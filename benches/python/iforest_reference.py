#!/usr/bin/env python3
"""Isolation-forest baselines for benches/iforest.sh.

    iforest_reference.py DATA_DIR RUNS

Generates the benchmark data once (1,000,000 × 8 float64, 1% outliers,
seeded) as raw little-endian files DATA_DIR/x.f64 and DATA_DIR/y.u8, then
times scikit-learn's IsolationForest(n_jobs=1) and isotree's
IsolationForest(nthreads=1), both with 100 trees on 256-row samples, single
threaded: fit seconds, score_samples throughput, ROC AUC. Prints JSON.
"""
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.ensemble import IsolationForest as SkForest
from sklearn.metrics import roc_auc_score

ROWS, FEATURES, OUTLIERS = 1_000_000, 8, 10_000


def data(out: Path):
    x_path, y_path = out / "x.f64", out / "y.u8"
    if not x_path.exists():
        rng = np.random.default_rng(8)
        inliers = rng.normal(size=(ROWS - OUTLIERS, FEATURES))
        outliers = rng.uniform(-5, 5, size=(OUTLIERS, FEATURES))
        x = np.vstack([inliers, outliers])
        y = np.r_[np.zeros(ROWS - OUTLIERS, dtype=np.uint8), np.ones(OUTLIERS, dtype=np.uint8)]
        order = rng.permutation(ROWS)
        x[order].astype("<f8").tofile(x_path)
        y[order].tofile(y_path)
    x = np.fromfile(x_path, dtype="<f8").reshape(ROWS, FEATURES)
    y = np.fromfile(y_path, dtype=np.uint8)
    return x, y


def timed(f):
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def bench(name, fit, score, runs, x, y):
    fits, rates, auc = [], [], None
    for _ in range(runs):
        t_fit, model = timed(lambda: fit(x))
        t_score, abnormal = timed(lambda: score(model, x))
        fits.append(t_fit)
        rates.append(len(x) / t_score)
        auc = float(roc_auc_score(y, abnormal))
        print(f"{name}: fit {t_fit:.3f}s, score {len(x) / t_score:,.0f} rows/s, auc {auc:.4f}", file=sys.stderr)
    return {
        "median_fit_s": round(statistics.median(fits), 4),
        "median_score_rows_per_s": round(statistics.median(rates)),
        "auc": round(auc, 4),
    }


def main(out: Path, runs: int):
    out.mkdir(parents=True, exist_ok=True)
    x, y = data(out)
    result = {"rows": ROWS, "features": FEATURES}
    result["sklearn"] = bench(
        "sklearn",
        lambda x: SkForest(n_estimators=100, max_samples=256, n_jobs=1, random_state=0).fit(x),
        lambda m, x: -m.score_samples(x),
        runs, x, y,
    )
    import isotree

    result["isotree"] = bench(
        "isotree",
        lambda x: isotree.IsolationForest(
            ntrees=100, sample_size=256, ndim=1, nthreads=1, missing_action="fail",
            random_seed=0,
        ).fit(x),
        lambda m, x: m.predict(x),
        runs, x, y,
    )
    import sklearn

    result["versions"] = {"sklearn": sklearn.__version__, "isotree": isotree.__version__ if hasattr(isotree, "__version__") else "0.6.1.post10"}
    print(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
