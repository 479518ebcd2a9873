#!/usr/bin/env bash
# Log template mining: grouping accuracy of detectors::templates (what
# POST /api/insights/summary uses) and of Drain on the same labelled data,
# per dataset and the mean, in this one command. Deterministic: no timing,
# no randomness, so one run is the figure.
#
#   benches/templates.sh [FILE...]
#
# FILE: Loghub's *_structured.csv as published (columns Content, EventId),
# or JSON lines {"event", "content"}; default benches/data/loghub/*.jsonl
# (Loghub's 2k samples, see benches/data/loghub/README.md).
# VERBOSE=1 prints every wrongly grouped template.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/securenet/target}"
cargo build --release -q -p securenet -p securenet-benches --bins
if [ "$#" -eq 0 ]; then set -- benches/data/loghub/*.jsonl; fi
"$CARGO_TARGET_DIR/release/template_accuracy" "$@"
