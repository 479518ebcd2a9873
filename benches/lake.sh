#!/usr/bin/env bash
# The lake on S3 against the lake in a directory, in the same command:
# `securenet serve` (embedded bus) with `pipeline.lake_url` on an S3 server
# (moto, the one scripts/test.sh uses) vs on the local filesystem, runs
# alternating between the two.
#
#   1. ingest → Parquet: HTTP NDJSON through loadgen until `SELECT count(*)`
#      sees every row (rows/s, from the first request).
#   2. a query over the whole table (`SELECT count(*), count(DISTINCT host)
#      FROM logs`): median latency of 20, and the S3 requests one query
#      makes (from moto's request log: one LIST of the tenant's prefix, then
#      ranged GETs of each object's footer and columns), and the objects.
#
#   benches/lake.sh [ROWS] [RUNS]
#
# moto is an in-memory Python server on the same two cores: the ratios say
# what the object store path costs in requests and CPU here, not what AWS
# latency would add (each request is a network round trip there).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/securenet/target}"
ROWS="${1:-200000}"
RUNS="${2:-3}"

cargo build --release -q -p securenet -p securenet-benches --bins
BIN="$CARGO_TARGET_DIR/release"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 1; rm -rf "$WORK"; }
trap cleanup EXIT

# The test venv (moto and boto3 pinned there), built by scripts/test.sh.
REQS=scripts/requirements-test.txt
VENV="$HOME/.cache/securenet/venv-$(sha256sum "$REQS" | cut -c1-12)"
[ -x "$VENV/bin/python" ] || { echo "run ./scripts/test.sh once first (it builds $VENV)" >&2; exit 1; }
source scripts/lib/services.sh
start_moto "$WORK" PIDS "$VENV/bin/python"
echo "moto on $S3_ENDPOINT" >&2

KEY="bench-key-0123456789abcdef"
wait_ready() { # file marker
  for _ in $(seq 1 600); do
    if grep -q "$2" "$1" 2>/dev/null; then sed -n "s/.*$2//p" "$1" | head -n1; return; fi
    sleep 0.05
  done
  echo "not ready: $1" >&2; tail -5 "$1" >&2; exit 1
}
sql() { # addr query → first row as JSON
  curl -s -H "X-API-Key: $KEY" -H 'content-type: application/json' \
    -d "{\"sql\":\"$2\"}" "http://$1/api/sql" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["rows"][0]))'
}
# moto's request log (werkzeug colours some lines: strip the escapes).
requests() { sed 's/\x1b\[[0-9;]*m//g' "$WORK/moto.log" | grep -c '"[A-Z]* /securenet-test' || true; }

one_run() { # lake(file|s3) run → prints "rate ms_median requests_per_query"
  local lake=$1 run=$2 data="$WORK/$1-$2"
  local extra=()
  if [ "$lake" = s3 ]; then
    extra=(SECURENET_PIPELINE__LAKE_URL="s3://$S3_BUCKET/run-$run-$$" AWS_ENDPOINT_URL="$S3_ENDPOINT"
      AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true)
  fi
  env SECURENET_DATA_DIR="$data" SECURENET_HTTP__LISTEN=127.0.0.1:0 SECURENET_CONTROL__DEFAULT_API_KEY=$KEY \
    RUST_LOG=error SECURENET_INGEST__SYSLOG=[] SECURENET_PIPELINE__MAINTENANCE__ENABLED=false \
    SECURENET_PIPELINE__DETECTION__ENABLED=false "${extra[@]}" \
    "$BIN/securenet" serve > "$data.out" 2> "$data.err" &
  local pid=$!
  PIDS+=("$pid")
  local addr; addr=$(wait_ready "$data.out" "securenet ready http=")
  local start end n
  start=$(date +%s.%N)
  "$BIN/loadgen" http --url "http://$addr" --key "$KEY" --rows "$ROWS" --runs 0 > /dev/null
  while :; do
    n=$(sql "$addr" "SELECT count(*) AS n FROM logs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["n"])')
    [ "$n" -ge "$ROWS" ] && break
    sleep 0.05
  done
  end=$(date +%s.%N)
  [ "$n" -eq "$ROWS" ] || { echo "$lake: $n rows stored, $ROWS sent" >&2; exit 1; }
  local before after times=()
  before=$(requests)
  for _ in $(seq 1 20); do
    local t0 t1
    t0=$(date +%s%N)
    sql "$addr" "SELECT count(*) AS n, count(DISTINCT host) AS h FROM logs" > /dev/null
    t1=$(date +%s%N)
    times+=($(( (t1 - t0) / 1000000 )))
  done
  after=$(requests)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$ROWS" "$start" "$end" "$before" "$after" "${times[@]}" <<'PY'
import sys
rows, start, end, before, after = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
times = sorted(int(t) for t in sys.argv[6:])
print(round(rows / (end - start)), times[len(times) // 2], round((after - before) / len(times), 1))
PY
}

FILE=() S3=()
for run in $(seq 1 "$RUNS"); do
  echo "== run $run: file" >&2; FILE+=("$(one_run file "$run")"); echo "   ${FILE[-1]}" >&2
  echo "== run $run: s3" >&2; S3+=("$(one_run s3 "$run")"); echo "   ${S3[-1]}" >&2
done
python3 - "$ROWS" "${#FILE[@]}" "${FILE[@]}" "${S3[@]}" <<'PY'
import json, sys
rows, n = int(sys.argv[1]), int(sys.argv[2])
runs = [list(map(float, r.split())) for r in sys.argv[3:]]
file, s3 = runs[:n], runs[n:]
med = lambda xs: sorted(xs)[len(xs) // 2]
f_rate, s_rate = med([r[0] for r in file]), med([r[0] for r in s3])
f_ms, s_ms = med([r[1] for r in file]), med([r[1] for r in s3])
print(json.dumps({
    "bench": "lake_s3_vs_file",
    "rows": rows,
    "ingest_to_parquet_rows_per_s": {"file": [r[0] for r in file], "s3": [r[0] for r in s3],
                                     "median_file": f_rate, "median_s3": s_rate,
                                     "ratio_s3_to_file": round(s_rate / f_rate, 3)},
    "full_scan_query_ms": {"median_file": f_ms, "median_s3": s_ms,
                           "ratio_s3_to_file": round(s_ms / max(f_ms, 1), 3)},
    "s3_requests_per_query": med([r[2] for r in s3]),
}))
PY
