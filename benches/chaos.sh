#!/usr/bin/env bash
# Chaos soak: HTTP and syslog load into `securenet ingest` → Kafka (Tansu) →
# `securenet pipeline` → Parquet + ClickHouse for MINUTES, while a seeded
# random schedule SIGKILLs (and restarts) or SIGSTOPs (and SIGCONTs) the
# pipeline, the ingest role, Tansu and ClickHouse, one fault every 5–20 s.
# Then checks that every acknowledged row is exactly once in Parquet and in
# ClickHouse, that nothing else is stored twice, that `usage reconcile`
# finds usage equal to what is stored, and that clients got only 2xx, 429
# or 503. Prints a JSON report (faults, rows acknowledged, lost,
# duplicated); exit status 1 when a check fails. See benches/python/chaos.py.
#
#   benches/chaos.sh [MINUTES] [SEED]       # default 30 minutes, seed 1
#
# Needs tansu and clickhouse-server on PATH (./scripts/test.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/securenet/target}"
export PATH="$HOME/.cargo/bin:$PATH"
MINUTES="${1:-30}"
SEED="${2:-1}"

. benches/venv.sh
cargo build --release -q -p securenet -p securenet-benches --bins
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$VENV/bin/python" benches/python/chaos.py --minutes "$MINUTES" --seed "$SEED" \
  --bin "$CARGO_TARGET_DIR/release" --work "$WORK" --clickhouse-config scripts/clickhouse
