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
#   LAKES="file s3 s3-nocache" benches/lake.sh   # which lakes, alternated
#
# A lake named `<lake>-nocache` is that lake with the SQL engine's cache of
# small objects off (`api.sql.object_cache_bytes = 0`): the requests and
# time that cache saves, in the same command.
#
# moto is an in-memory Python server on the same two cores: the ratios say
# what the object store path costs in requests and CPU here, not what AWS
# latency would add (each request is a network round trip there).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/securenet/target}"
ROWS="${1:-200000}"
RUNS="${2:-3}"

# NO_BUILD=1 skips the build; BIN=DIR takes the binaries from DIR.
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p securenet -p securenet-benches --bins
BIN="${BIN:-$CARGO_TARGET_DIR/release}"
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
  case "$lake" in
    *-nocache) extra=(SECURENET_API__SQL__OBJECT_CACHE_BYTES=0); lake=${lake%-nocache} ;;
  esac
  if [ "$lake" = s3 ]; then
    extra+=(SECURENET_PIPELINE__LAKE_URL="s3://$S3_BUCKET/$1-run-$run-$$" AWS_ENDPOINT_URL="$S3_ENDPOINT"
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
  local before after times
  before=$(requests)
  # Timed from one client process (one connection), so the figure is the
  # query's and not a curl and python start per query.
  times=$(python3 - "$addr" "$KEY" <<'PY'
import http.client, json, sys, time
host, port = sys.argv[1].rsplit(":", 1)
conn = http.client.HTTPConnection(host, int(port), timeout=120)
body = json.dumps({"sql": "SELECT count(*) AS n, count(DISTINCT host) AS h FROM logs"})
out = []
for _ in range(20):
    t = time.perf_counter()
    conn.request("POST", "/api/sql", body=body,
                 headers={"X-API-Key": sys.argv[2], "Content-Type": "application/json"})
    resp = conn.getresponse(); data = resp.read()
    if resp.status != 200:
        sys.exit(f"HTTP {resp.status}: {data[:300]!r}")
    out.append((time.perf_counter() - t) * 1000)
print(" ".join(f"{x:.2f}" for x in out))
PY
)
  after=$(requests)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  # shellcheck disable=SC2086 # the times are one word each
  python3 - "$ROWS" "$start" "$end" "$before" "$after" $times <<'PY'
import sys
rows, start, end, before, after = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
times = sorted(float(t) for t in sys.argv[6:])
print(round(rows / (end - start)), times[len(times) // 2], round((after - before) / len(times), 1))
PY
}

LAKES=(${LAKES:-file s3})
declare -A RESULTS=()
for run in $(seq 1 "$RUNS"); do
  for lake in "${LAKES[@]}"; do
    echo "== run $run: $lake" >&2
    r=$(one_run "$lake" "$run"); echo "   $r" >&2
    RESULTS[$lake]+="$r;"
  done
done
args=()
for lake in "${LAKES[@]}"; do args+=("$lake" "${RESULTS[$lake]}"); done
python3 - "$ROWS" "${args[@]}" <<'PY'
import json, sys
rows = int(sys.argv[1])
lakes = {name: [list(map(float, r.split())) for r in runs.split(";") if r]
         for name, runs in zip(sys.argv[2::2], sys.argv[3::2])}
med = lambda xs: sorted(xs)[len(xs) // 2]
out = {"bench": "lake_s3_vs_file", "rows": rows, "lakes": {}}
for name, runs in lakes.items():
    out["lakes"][name] = {
        "ingest_to_parquet_rows_per_s": [r[0] for r in runs],
        "median_rows_per_s": med([r[0] for r in runs]),
        "full_scan_query_ms_per_run": [r[1] for r in runs],
        "median_query_ms": med([r[1] for r in runs]),
        "s3_requests_per_query": med([r[2] for r in runs]) if name.startswith("s3") else None,
    }
if "file" in lakes and "s3" in lakes:
    f, s = out["lakes"]["file"], out["lakes"]["s3"]
    out["ratio_s3_to_file"] = {
        "ingest": round(s["median_rows_per_s"] / f["median_rows_per_s"], 3),
        "query": round(s["median_query_ms"] / max(f["median_query_ms"], 1), 3)}
for name in lakes:
    if name.endswith("-nocache") and name[:-len("-nocache")] in lakes:
        on, off = out["lakes"][name[:-len("-nocache")]], out["lakes"][name]
        out[f"query_ms_ratio_{name[:-len('-nocache')]}_cache_to_nocache"] = round(
            on["median_query_ms"] / max(off["median_query_ms"], 1), 3)
print(json.dumps(out))
PY
