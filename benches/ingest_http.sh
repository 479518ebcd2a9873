#!/usr/bin/env bash
# HTTP NDJSON ingest → Parquet in `securenet serve`, acknowledged rows/s with
# ~300-byte log objects, against a baseline in the same run: the same load
# generator against a null HTTP server (reads and discards bodies).
#
#   benches/ingest_http.sh [ROWS_PER_RUN] [RUNS]
#
# Prints one JSON line per target and the ratio; verifies through SQL that
# every acknowledged row is in Parquet.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/securenet/target}"
ROWS="${1:-500000}"
RUNS="${2:-5}"
BATCH="${BATCH:-2000}"
CONCURRENCY="${CONCURRENCY:-8}"

cargo build --release -q -p securenet -p securenet-benches --bins
BIN="$CARGO_TARGET_DIR/release"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

wait_ready() { # file prefix
  for _ in $(seq 1 200); do
    if grep -q "$2" "$1" 2>/dev/null; then sed -n "s/.*$2//p" "$1" | head -n1; return; fi
    sleep 0.05
  done
  echo "not ready: $1" >&2; exit 1
}

# Baseline: null server.
"$BIN/loadgen" null-server > "$WORK/null.out" &
PIDS+=($!)
NULL_ADDR=$(wait_ready "$WORK/null.out" "null-server ready http=")
echo "== baseline: null HTTP server ($ROWS rows x $RUNS runs)" >&2
BASE=$("$BIN/loadgen" http --url "http://$NULL_ADDR" --rows "$ROWS" --batch "$BATCH" --concurrency "$CONCURRENCY" --runs "$RUNS")
kill "${PIDS[0]}"

# SecureNet serve, embedded, Parquet sink with fsync.
KEY="bench-key-0123456789abcdef"
SECURENET_DATA_DIR="$WORK/data" SECURENET_HTTP__LISTEN=127.0.0.1:0 \
SECURENET_CONTROL__DEFAULT_API_KEY="$KEY" RUST_LOG=warn \
  "$BIN/securenet" serve > "$WORK/serve.out" &
PIDS+=($!)
ADDR=$(wait_ready "$WORK/serve.out" "securenet ready http=")
echo "== securenet serve: HTTP NDJSON -> Parquet ($ROWS rows x $RUNS runs + warm-up)" >&2
SN=$("$BIN/loadgen" http --url "http://$ADDR" --key "$KEY" --rows "$ROWS" --batch "$BATCH" --concurrency "$CONCURRENCY" --runs "$RUNS")

STORED=$(curl -s -H "X-API-Key: $KEY" -H 'content-type: application/json' \
  -d '{"sql":"SELECT count(*) AS n FROM logs"}' "http://$ADDR/api/sql" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0]["n"])')
EXPECTED=$(( ROWS * (RUNS + 1) ))

echo "baseline:  $BASE"
echo "securenet: $SN"
python3 - "$BASE" "$SN" "$STORED" "$EXPECTED" <<'PY'
import json, sys
base, sn = json.loads(sys.argv[1]), json.loads(sys.argv[2])
stored, expected = int(sys.argv[3]), int(sys.argv[4])
print(f"median: securenet {sn['median_rows_per_s']:.0f} rows/s ({sn['median_mb_per_s']} MB/s), "
      f"null server {base['median_rows_per_s']:.0f} rows/s; ratio {sn['median_rows_per_s']/base['median_rows_per_s']:.2f}")
print(f"rows in Parquet: {stored} of {expected} acknowledged")
sys.exit(0 if stored == expected else 1)
PY
