#!/usr/bin/env bash
# Detections, in two parts (one command):
#
# 1. The engine alone (benches/sigma.sh, skipped with SKIP_ENGINE=1): 1M
#    generated log rows, RULES rules of mixed forms and 10,000 threat-intel
#    indicators on one core — rules alone, indicators alone, both — beside
#    the bare column scan and DuckDB running the pySigma-converted rules.
#
# 2. Sigma rules in the stream, end to end: HTTP NDJSON ingest → pipeline →
# Parquet in `securenet serve` (acknowledged once stored, so the rules'
# cost is on the acknowledged path), with RULES operator rules (the mixed
# forms `benches/sigma.sh` measures, from sigma_bench) against the same
# server with `pipeline.rules.enabled = false`, alternating ROUNDS times in
# one command. Each round runs `loadgen http` (RUNS runs of ROWS rows after
# a warm-up) on a fresh data directory; medians over every run of a mode.
# Verifies through SQL that every acknowledged row is stored and reports
# the detections the rules stored.
#
#   benches/detections.sh [ROWS] [RUNS] [RULES] [ROUNDS]   # defaults 200000 3 100 3
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/securenet/target}"
ROWS="${1:-200000}"; RUNS="${2:-3}"; RULES="${3:-100}"; ROUNDS="${4:-3}"
BATCH="${BATCH:-2000}"; CONCURRENCY="${CONCURRENCY:-8}"

[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p securenet -p securenet-benches --bins
if [ -z "${SKIP_ENGINE:-}" ]; then
  echo "== part 1: the engine (benches/sigma.sh ${ENGINE_ROWS:-1000000} $RULES 5)" >&2
  NO_BUILD=1 benches/sigma.sh "${ENGINE_ROWS:-1000000}" "$RULES" 5
fi
echo "== part 2: the pipeline, serve with and without the rules" >&2
BIN="$CARGO_TARGET_DIR/release"
WORK="$(mktemp -d)"
PID=""
cleanup() { [ -z "$PID" ] || kill "$PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

# The rules: sigma_bench writes them (and a small data set we do not use).
# RULES_DIR=dir runs a rule pack of your own instead (RULES is then only
# the label of the engine part).
if [ -z "${RULES_DIR:-}" ]; then
  "$BIN/sigma_bench" 1000 "$RULES" 1 "$WORK/gen" > /dev/null
  RULES_DIR="$WORK/gen/rules"
  [ "$(ls "$RULES_DIR" | wc -l)" -eq "$RULES" ] || { echo "expected $RULES rule files" >&2; exit 1; }
fi

wait_ready() { # file prefix
  for _ in $(seq 1 400); do
    if grep -q "$2" "$1" 2>/dev/null; then sed -n "s/.*$2//p" "$1" | head -n1; return; fi
    sleep 0.05
  done
  echo "not ready: $1" >&2; cat "$1" >&2; exit 1
}

sql() { # addr query → first value of the first row
  curl -s -H "X-API-Key: $KEY" -H 'content-type: application/json' \
    -d "{\"sql\":\"$2\"}" "http://$1/api/sql" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["rows"]; print(list(r[0].values())[0] if r else 0)'
}

KEY="bench-key-0123456789abcdef"
RESULTS="$WORK/results.jsonl"
run_mode() { # mode round
  local mode=$1 round=$2 data="$WORK/data-$1-$2"
  local env=(SECURENET_DATA_DIR="$data" SECURENET_HTTP__LISTEN=127.0.0.1:0
    SECURENET_CONTROL__DEFAULT_API_KEY="$KEY" SECURENET_PIPELINE__DETECTION__ENABLED=false
    RUST_LOG=warn)
  if [ "$mode" = rules ]; then
    env+=(SECURENET_PIPELINE__RULES__RULES_DIR="$RULES_DIR")
  else
    env+=(SECURENET_PIPELINE__RULES__ENABLED=false)
  fi
  env "${env[@]}" "$BIN/securenet" serve > "$WORK/serve-$mode-$round.out" 2>&1 &
  PID=$!
  local addr; addr=$(wait_ready "$WORK/serve-$mode-$round.out" "securenet ready http=")
  echo "== round $round, $mode: $ROWS rows x $RUNS runs + warm-up" >&2
  local out; out=$("$BIN/loadgen" http --url "http://$addr" --key "$KEY" --rows "$ROWS" \
    --batch "$BATCH" --concurrency "$CONCURRENCY" --runs "$RUNS")
  local stored detections
  stored=$(sql "$addr" "SELECT count(*) FROM logs")
  detections=$(sql "$addr" "SELECT count(*) FROM detections")
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  [ "$stored" -eq $(( ROWS * (RUNS + 1) )) ] || { echo "$mode: $stored rows stored, expected $(( ROWS * (RUNS + 1) ))" >&2; exit 1; }
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(mode=sys.argv[2], round=int(sys.argv[3]), detections=int(sys.argv[4])); print(json.dumps(d))' \
    "$out" "$mode" "$round" "$detections" >> "$RESULTS"
}

for round in $(seq 1 "$ROUNDS"); do
  run_mode off "$round"
  run_mode rules "$round"
done

python3 - "$RESULTS" "$RULES" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rules = int(sys.argv[2])
def med(mode): return statistics.median(r for x in rows if x["mode"] == mode for r in x["runs"])
off, on = med("off"), med("rules")
det = [x["detections"] for x in rows if x["mode"] == "rules"]
print(f"| pipeline | acknowledged rows/s (median of {sum(len(x['runs']) for x in rows if x['mode']=='off')} runs) | vs no rules |")
print("| --- | --- | --- |")
print(f"| no rules (`pipeline.rules.enabled = false`) | {off:,.0f} | 1.00 |")
print(f"| {rules} operator rules on every batch | {on:,.0f} | {on / off:.2f} |")
print(f"detections stored per round with rules: {det}")
print(json.dumps({"rules": rules, "off_median_rows_per_s": off, "rules_median_rows_per_s": on,
                  "ratio": on / off, "detections_per_round": det, "runs": rows}))
PY
