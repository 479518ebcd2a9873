#!/usr/bin/env bash
# Isolation forest: SecureNet vs scikit-learn IsolationForest(n_jobs=1) and
# isotree (nthreads=1) on the same 1,000,000 × 8 float rows (1% outliers),
# 100 trees on 256-row samples, single thread: fit seconds, scoring rows/s,
# ROC AUC; medians over RUNS, all in this one command.
#
#   benches/iforest.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/securenet/target}"
RUNS="${1:-3}"

. benches/venv.sh
# Same package set as the other bench scripts, so the release build (and its
# feature unification) is shared.
cargo build --release -q -p securenet -p securenet-benches --bins
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

REF=$("$VENV/bin/python" benches/python/iforest_reference.py "$WORK" "$RUNS")
OURS=$("$CARGO_TARGET_DIR/release/iforest_bench" "$WORK" 8 "$RUNS")
python3 - "$REF" "$OURS" <<'PY'
import json, sys
ref, ours = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sk, iso = ref["sklearn"], ref["isotree"]
print(json.dumps({
    "bench": "iforest",
    "rows": ref["rows"], "features": ref["features"], "versions": ref["versions"],
    "securenet": ours, "sklearn": sk, "isotree": iso,
    "scoring_speedup_vs_sklearn": round(ours["median_score_rows_per_s"] / sk["median_score_rows_per_s"], 1),
    "speedup_vs_sklearn_per_walk": {w: round(r / sk["median_score_rows_per_s"], 1) for w, r in ours["walks"].items()},
    "scoring_speedup_vs_isotree": round(ours["median_score_rows_per_s"] / iso["median_score_rows_per_s"], 1),
    "fit_time_ratio_to_isotree": round(ours["median_fit_s"] / iso["median_fit_s"], 3),
    "auc_difference_vs_sklearn": round(ours["auc"] - sk["auc"], 4),
}))
PY
