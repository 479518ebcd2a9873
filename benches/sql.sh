#!/usr/bin/env bash
# Analyst SQL: `POST /api/sql` latency against DuckDB over the same Parquet
# files, thirteen typical queries over ROWS generated log rows of one tenant
# (count by hour, top sources, failed logins per host, logs joined with
# findings, usage by day, a needle lookup by IP, a substring search, one
# hour of the month, distinct hosts per day, top talkers by a window
# function, logs ⋈ findings ⋈ devices, and GET /api/logs' own query for a
# day and for the newest page; benches/python/sql_bench.py has the SQL);
# medians of RUNS after one warm-up, as ratios.
#
#   benches/sql.sh [ROWS] [RUNS]        # defaults 10000000 5
#
# Data: `securenet gen` logs (October 2026, 31 days, one tenant, brute-force
# and other bursts injected) pushed through HTTP ingest, plus one nightly
# scan report per day through `POST /api/ingest/scans` (744 hosts: open
# ports and CVE findings, devices), so the lake — logs, findings, devices,
# scans and the usage the pipeline counts — is written by SecureNet itself,
# one day at a time with the server's clock set to that day (libfaketime,
# installed from Debian if missing). Then maintenance compacts it as a
# running system would. The data directory is cached per row count under
# ~/.cache/securenet/sqlbench/.
#
# Measured: `securenet query-api` (read-only over the lake, default [api.sql]
# limits unless SECURENET_API__SQL__* says otherwise) on a free port, latency
# client-side end to end (request to parsed JSON); DuckDB from PyPI in the
# same Python process, default threads, over read_parquet() of the tenant's
# files, results fetched. Fails if the two engines' results differ.
#
# BASELINE_BIN=DIR also runs the queries through the `securenet` binary in
# DIR (e.g. a release build of an earlier commit) over the same lake, each
# run alternated with the current build's beside the same DuckDB runs, and
# reports both: how much a change moved each query. BASELINE_ENV="VAR=VALUE
# ..." starts that baseline with this environment (alone: the same binary),
# e.g. BASELINE_ENV=SECURENET_API__SQL__OBJECT_CACHE_BYTES=0. Last,
# FETCH_ROWS (default 1,000,000) rows are fetched whole through Flight SQL
# (ADBC) and through POST /api/sql as Arrow IPC and as JSON. NO_BUILD=1
# skips the cargo build (uses the binaries already in
# $CARGO_TARGET_DIR/release); BENCH_VENV overrides the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/securenet/target}"
ROWS="${1:-10000000}"
RUNS="${2:-5}"
TENANT=bench
START=2026-10-01
DAYS=31
SEED=42
STARTED_AT=$(date +%s)
# Only the [api.sql] limits may come from the caller's environment.
for v in $(compgen -e | grep '^SECURENET_' | grep -v '^SECURENET_API__SQL__' || true); do unset "$v"; done

. benches/venv.sh
"$VENV/bin/python" -c 'import duckdb, pytz' 2>/dev/null || {
  echo "$VENV lacks duckdb/pytz: scripts/requirements-bench.txt needs their pins" >&2; exit 1; }
# Same package set as the other bench scripts, so the release build (and its
# feature unification) is shared.
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p securenet -p securenet-benches --bins
BIN="$CARGO_TARGET_DIR/release"
PY="$VENV/bin/python benches/python/sql_bench.py"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_ready() { # file marker pid
  for _ in $(seq 1 600); do
    if grep -q "$2" "$1" 2>/dev/null; then sed -n "s/.*$2//p" "$1" | head -n1; return; fi
    kill -0 "$3" 2>/dev/null || break
    sleep 0.05
  done
  echo "not ready: $1" >&2; tail -20 "${1%.out}.err" >&2 || true; exit 1
}

# ---------------------------------------------------------------- data (cached)
# Day by day, as a live system receives it: one `serve` per day under
# libfaketime with its clock at 23:58 of that day, so `received_at` — and
# with it the usage day, which follows receipt, not event time — is that
# day. Each day gets ROWS/DAYS generated log rows spread over the day, a few
# injected bursts (SSH brute force, port scans, ...) and the nightly scan.
# v2: objects carry bloom filters on the lookup columns; v3: 64 KiB data
# pages (a lake written by an older binary would have neither).
# LAKE_COMPRESSION=lz4_raw|snappy writes (and caches) the lake with that
# pipeline.parquet.compression instead of the default zstd.
LAKE_COMPRESSION="${LAKE_COMPRESSION:-zstd}"
CACHE="$HOME/.cache/securenet/sqlbench/rows-$ROWS-seed$SEED-v3"
[ "$LAKE_COMPRESSION" = zstd ] || CACHE="$CACHE-$LAKE_COMPRESSION"
if [ ! -f "$CACHE/loaded.json" ]; then
  if ! command -v faketime >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends faketime >/dev/null
  fi
  echo "== generating the lake: $ROWS log rows for tenant $TENANT over $DAYS days -> $CACHE" >&2
  BUILD="$CACHE.tmp"
  rm -rf "$BUILD" && mkdir -p "$BUILD"
  printf '%s\n' "data_dir = \"$BUILD\"" \
    '[http]' 'listen = "127.0.0.1:0"' '[log]' 'level = "warn"' '[ingest]' 'syslog = []' \
    '[pipeline.parquet]' "compression = \"$LAKE_COMPRESSION\"" \
    '[pipeline.detection]' 'enabled = false' '[pipeline.maintenance]' 'enabled = false' \
    '[pipeline.maintenance.compaction]' 'min_age_secs = 0' 'grace_secs = 0' > "$BUILD/load.toml"
  export SECURENET_CONFIG="$BUILD/load.toml"
  "$BIN/securenet" orgs create --id "$TENANT" --name "SQL bench" --owner-email bench@example.com --plan enterprise >/dev/null
  LOAD_KEY=$("$BIN/securenet" keys create --org "$TENANT" --name load 2>/dev/null)
  T0=$(date +%s)
  LOGS=0; FINDINGS=0
  for d in $(seq 0 $(( DAYS - 1 ))); do
    DAY=$(date -u -d "$START + $d day" +%Y-%m-%d)
    DAY_ROWS=$(( ROWS * (d + 1) / DAYS - ROWS * d / DAYS ))
    # Emptied here, not by the redirection below: that runs in the
    # background child, and wait_ready could read yesterday's ready line
    # (a dead server's address) before the child truncates the file.
    : > "$WORK/load.out"
    # shellcheck disable=SC2016 # $LIB is expanded by the dynamic loader
    LD_PRELOAD='/usr/$LIB/faketime/libfaketimeMT.so.1' FAKETIME="@$DAY 23:58:00" FAKETIME_DONT_FAKE_MONOTONIC=1 \
      "$BIN/securenet" serve > "$WORK/load.out" 2> "$WORK/load.err" &
    LOAD_PID=$!; PIDS=("$LOAD_PID")
    ADDR=$(wait_ready "$WORK/load.out" "securenet ready http=" "$LOAD_PID")
    N=$("$BIN/securenet" gen --tenants "$TENANT" --rows "$DAY_ROWS" --anomalies $(( ROWS / (DAYS * 100000) + 1 )) \
          --seed $(( SEED + d )) --start "${DAY}T00:00:00Z" --duration-secs 86400 |
        $PY ingest-logs "http://$ADDR" "$LOAD_KEY" 2>/dev/null)
    F=$($PY ingest-scan "http://$ADDR" "$LOAD_KEY" "$DAY" "$d" "$SEED")
    kill -TERM "$LOAD_PID"
    wait "$LOAD_PID" || { echo "serve exited badly" >&2; tail -20 "$WORK/load.err" >&2; exit 1; }
    PIDS=()
    LOGS=$(( LOGS + N )); FINDINGS=$(( FINDINGS + F ))
    echo "  $DAY: $N log rows, $F findings (total $LOGS rows, $(( $(date +%s) - T0 )) s)" >&2
  done
  T1=$(date +%s)
  # Compact as the scheduled maintenance would (two passes: merge, then
  # drop the merged inputs once the — here zero — grace period is over).
  "$BIN/securenet" maintain > "$BUILD/maintain1.json"
  "$BIN/securenet" maintain > "$BUILD/maintain2.json"
  unset SECURENET_CONFIG
  T2=$(date +%s)
  printf '{"logs": %s, "findings": %s, "days": %s, "ingest_s": %s, "compaction_s": %s}\n' \
    "$LOGS" "$FINDINGS" "$DAYS" $(( T1 - T0 )) $(( T2 - T1 )) > "$BUILD/loaded.json"
  rm -rf "$CACHE" && mv "$BUILD" "$CACHE"
fi
LOGS=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["logs"])' "$CACHE/loaded.json")
echo "== lake: $CACHE ($(du -sh "$CACHE/lake" | cut -f1); $(cat "$CACHE/loaded.json"))" >&2

# ---------------------------------------------------------------- query-api
# The read-only role over the cached lake, with a copy of the metadata
# store, so nothing the benchmark does writes to the cache.
cp "$CACHE"/meta.db* "$WORK/"
KEY=""
start_query_api() { # NAME BIN [VAR=VALUE ...] -> $QADDR; the process in PIDS
  local name="$1" bin="$2" dir="$WORK/$1"
  shift 2
  mkdir -p "$dir"
  cp "$WORK"/meta.db* "$dir/"
  printf '%s\n' "data_dir = \"$dir\"" '[http]' 'listen = "127.0.0.1:0"' '[log]' 'level = "warn"' \
    '[control]' "database = \"$dir/meta.db\"" '[pipeline]' "lake_dir = \"$CACHE/lake\"" > "$dir/query.toml"
  : > "$dir/query.out"
  env "$@" SECURENET_CONFIG="$dir/query.toml" "$bin/securenet" query-api > "$dir/query.out" 2> "$dir/query.err" &
  PIDS+=("$!")
  QADDR=$(wait_ready "$dir/query.out" "securenet ready http=" "$!")
}
export SECURENET_CONFIG="$WORK/query.toml"
printf '%s\n' "data_dir = \"$WORK\"" '[control]' "database = \"$WORK/meta.db\"" \
  '[pipeline]' "lake_dir = \"$CACHE/lake\"" > "$WORK/query.toml"
KEY=$("$BIN/securenet" keys create --org "$TENANT" --name sqlbench --role viewer 2>/dev/null)
"$BIN/securenet" config | sed -n '/^\[api.sql\]/,/^$/p' >&2
unset SECURENET_CONFIG
start_query_api current "$BIN"; ADDR=$QADDR
BASE_URL=()
if [ -n "${BASELINE_BIN:-}${BASELINE_ENV:-}" ]; then
  # shellcheck disable=SC2086 # BASELINE_ENV is a list of VAR=VALUE words
  start_query_api baseline "${BASELINE_BIN:-$BIN}" ${BASELINE_ENV:-}; BASE_ADDR=$QADDR
  BASE_URL=("http://$BASE_ADDR")
  echo "== baseline: ${BASELINE_BIN:-$BIN}/securenet ${BASELINE_ENV:-} at $BASE_ADDR, runs alternated with the current build's" >&2
fi
echo "== current ($BIN/securenet): $RUNS runs per query (after one warm-up) at $ADDR vs DuckDB" >&2
$PY bench "http://$ADDR" "$KEY" "$CACHE/lake" "$TENANT" "$RUNS" "$LOGS" "${BASE_URL[@]}" > "$WORK/result-current.json"
for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
PIDS=()

# Fetching one wide result of FETCH_ROWS rows whole: Flight SQL (ADBC)
# against POST /api/sql as Arrow IPC and as JSON, on a query-api whose
# result limits let it through.
FETCH_ROWS="${FETCH_ROWS:-1000000}"
dir="$WORK/fetch"; mkdir -p "$dir"; cp "$WORK"/meta.db* "$dir/"
printf '%s\n' "data_dir = \"$dir\"" '[http]' 'listen = "127.0.0.1:0"' '[log]' 'level = "warn"' \
  '[control]' "database = \"$dir/meta.db\"" '[pipeline]' "lake_dir = \"$CACHE/lake\"" \
  '[api.sql]' "max_result_rows = $FETCH_ROWS" 'max_result_bytes = 4294967296' \
  'memory_limit_bytes = 8589934592' 'timeout_ms = 300000' \
  '[api.flight_sql]' 'listen = "127.0.0.1:0"' > "$dir/query.toml"
SECURENET_CONFIG="$dir/query.toml" "$BIN/securenet" query-api > "$dir/query.out" 2> "$dir/query.err" &
FPID=$!; PIDS+=("$FPID")
FADDR=$(wait_ready "$dir/query.out" "securenet ready http=" "$FPID")
FLIGHT=$(sed -n 's/^securenet ready flight_sql=//p' "$dir/query.out" | head -n1)
echo "== fetch: $FETCH_ROWS rows through Flight SQL ($FLIGHT) and POST /api/sql ($FADDR)" >&2
$PY fetch "http://$FADDR" "grpc://$FLIGHT" "$KEY" "$RUNS" "$FETCH_ROWS" "$FPID" > "$WORK/result-fetch.json"
kill -TERM "$FPID"; wait "$FPID" 2>/dev/null || true
python3 - "$WORK" $(( $(date +%s) - STARTED_AT )) <<'PY'
import json, os, sys
work, total = sys.argv[1], sys.argv[2]
r = json.load(open(f"{work}/result-current.json"))
base = {"results": r["baseline_results"]} if r.get("baseline_results") else None
print(f"\n{r['log_rows']:,} log rows, medians of {r['runs']} runs after one warm-up; DuckDB {r['duckdb']} "
      f"({r['duckdb_threads']} threads); Parquet objects {r['files']}; script total {total} s\n")
head = "| query | rows | SecureNet ms | DuckDB ms | ratio |"
if base:
    head += f" baseline ms | its DuckDB ms | its ratio | SecureNet / baseline |"
print(head)
print("|" + " --- |" * (head.count("|") - 1))
failed = False
for i, q in enumerate(r["results"]):
    if "securenet_error" in q:
        failed = True
        line = f"| {q['query']} | {q['rows']} | FAILED: {q['securenet_error']} | {q['duckdb_ms']} | – |"
    else:
        line = f"| {q['query']} | {q['rows']} | {q['securenet_ms']} | {q['duckdb_ms']} | {q['ratio']} |"
    if base:
        b = base["results"][i]
        if "securenet_error" in b or "securenet_error" in q:
            line += f" {b.get('securenet_ms', 'FAILED')} | {b['duckdb_ms']} | {b.get('ratio', '–')} | – |"
        else:
            line += (f" {b['securenet_ms']} | {b['duckdb_ms']} | {b['ratio']} | "
                     f"{round(q['securenet_ms'] / b['securenet_ms'], 2)} |")
    print(line)
print()
fetch = json.load(open(f"{work}/result-fetch.json"))
print(f"Fetching {fetch['rows']:,} rows whole ({fetch['sql']}), medians of {fetch['runs']}:\n")
print("| transport | median ms | rows/s | bytes (HTTP: body; Flight SQL: decoded Arrow) | time vs Flight SQL |")
print("| --- | --- | --- | --- | --- |")
for name, f in fetch["results"].items():
    print(f"| {name} | {f['median_ms']} | {f['rows_per_s']:,} | {f['bytes']:,} | {f['time_vs_flight_sql']} |")
flight = fetch["results"]["flight_sql"]
print(f"\nFlight SQL: first batch after {flight.get('first_batch_median_ms')} ms (median); "
      f"query-api peak RSS after its runs {flight.get('server_peak_rss_kb')} kB")
print()
print(json.dumps({"current": r["results"], "baseline": base["results"] if base else None,
                  "fetch": fetch["results"]}))
sys.exit(1 if failed else 0)
PY
