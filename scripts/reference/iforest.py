#!/usr/bin/env python3
"""Reference scores from scikit-learn's IsolationForest for the parity test.

    python scripts/reference/iforest.py OUT_DIR

Writes OUT_DIR/<dataset>.csv with the features, the label (1 = injected
outlier) and scikit-learn's score_samples, for fixed, seeded datasets of at
least 10k rows. tests/detectors.rs fits SecureNet's forest on the same rows
and compares ranks (Spearman) and ROC AUC.

Both sides use 1,000 trees: with 100 trees two scikit-learn forests that
differ only in their seed agree on ranks with Spearman ~0.95 on these data
(tree sampling noise), with 1,000 trees ~0.995 — so 1,000 trees make a
0.99 bar a test of the algorithm rather than of luck.
"""
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

N_ESTIMATORS = 1000


def datasets():
    rng = np.random.default_rng(20261127)
    # Gaussian blob with uniform outliers.
    x = np.vstack([rng.normal(size=(10_000, 8)), rng.uniform(-6, 6, size=(200, 8))])
    y = np.r_[np.zeros(10_000), np.ones(200)]
    yield "blobs", x, y
    # Three clusters of different spread, outliers between them.
    centers = np.array([[0, 0, 0, 0, 0, 0], [8, 8, 0, 0, 4, 4], [-6, 4, 6, -4, 0, 2]])
    parts = [rng.normal(loc=c, scale=s, size=(4_000, 6)) for c, s in zip(centers, (1.0, 0.5, 2.0))]
    outliers = rng.uniform(-12, 14, size=(120, 6))
    x = np.vstack(parts + [outliers])
    y = np.r_[np.zeros(12_000), np.ones(120)]
    yield "clusters", x, y
    # Skewed, log-normal telemetry-like counts with bursts.
    base = rng.lognormal(mean=2.0, sigma=0.6, size=(20_000, 4))
    bursts = rng.lognormal(mean=4.0, sigma=0.5, size=(400, 4))
    x = np.vstack([base, bursts])
    y = np.r_[np.zeros(20_000), np.ones(400)]
    yield "lognormal", x, y


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name, x, y in datasets():
        forest = IsolationForest(n_estimators=N_ESTIMATORS, random_state=0).fit(x)
        scores = forest.score_samples(x)
        table = np.column_stack([x, y, scores])
        header = ",".join([f"f{i}" for i in range(x.shape[1])] + ["label", "sklearn"])
        np.savetxt(out / f"{name}.csv", table, delimiter=",", header=header, comments="", fmt="%.17g")
        summary[name] = {"rows": int(len(x)), "auc": float(roc_auc_score(y, -scores))}
    import sklearn

    summary["sklearn_version"] = sklearn.__version__
    summary["n_estimators"] = N_ESTIMATORS
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
