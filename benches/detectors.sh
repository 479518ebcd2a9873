#!/usr/bin/env bash
# Streaming detector throughput, single thread: generated multi-tenant logs
# (anomalies injected) through usage counting and through feature windows +
# per-tenant isolation-forest scoring, against a baseline scan of the same
# columns in the same run; medians over RUNS.
#
#   benches/detectors.sh [ROWS] [TENANTS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/securenet/target}"
ROWS="${1:-1000000}"; TENANTS="${2:-4}"; RUNS="${3:-5}"
# Same package set as the other bench scripts: one shared release build.
cargo build --release -q -p securenet -p securenet-benches --bins
"$CARGO_TARGET_DIR/release/detector_bench" "$ROWS" "$TENANTS" "$RUNS"
