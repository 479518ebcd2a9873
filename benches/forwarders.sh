#!/usr/bin/env bash
# Every forwarder protocol against NDJSON, the same generated records, one
# `securenet serve` (embedded bus, Parquet with fsync), in one command.
#
#   benches/forwarders.sh [ROWS_PER_RUN] [ROUNDS]
#
# Each round sends ROWS_PER_RUN rows once in every protocol, in turn, so a
# noisy machine slows them alike; a first round is a warm-up and is not
# counted. Acknowledged rows/s (GELF over TCP has no acks: until the
# server's Parquet sink has written every row, read from its /metrics) and
# wire MB/s, medians over the rounds, and each protocol's ratio to NDJSON's
# median. Fails unless SQL holds every acknowledged row.
# The batcher's linger is LINGER_MS (10 ms; the default is 1 s): receivers
# without acks (GELF over TCP) hand records over unacknowledged, and their
# last batch waits out the linger before it is written — at 1 s that tail,
# not the receiver, would dominate a 200,000-row run, and at 100 ms (this
# script's default until 2026-12-06) it was still up to a fifth of one.
# Records someone waits for (acknowledged protocols) are group-committed
# without waiting for it (ingest/src/batcher.rs).
# OTLP is sent as senders structure it (records grouped by resource, JSON
# without default-valued fields); otlp-json-flat is the form this bench sent
# before 2026-12-06 (everything on every record, every field written), kept
# for comparison — docs/benchmarks.md.
# Results: benches/results/forwarders-<date>.json (RESULTS=path overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/securenet/target}"
ROWS="${1:-200000}"
ROUNDS="${2:-3}"
BATCH="${BATCH:-2000}"
CONCURRENCY="${CONCURRENCY:-8}"
PROTOCOLS="${PROTOCOLS:-ndjson otlp-http otlp-json otlp-json-flat otlp-grpc loki-protobuf loki-json gelf-http gelf-tcp fluent}"
RESULTS="${RESULTS:-benches/results/forwarders-$(date -u +%F).json}"

[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p securenet -p securenet-benches --bins
BIN="${BIN:-$CARGO_TARGET_DIR/release}"
WORK="$(mktemp -d)"
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_ready() { # file prefix
  for _ in $(seq 1 200); do
    if grep -q "$2" "$1" 2>/dev/null; then sed -n "s/.*$2//p" "$1" | head -n1; return; fi
    sleep 0.05
  done
  echo "not ready: $1" >&2; exit 1
}

KEY="bench-key-0123456789abcdef"
SECURENET_DATA_DIR="$WORK/data" SECURENET_HTTP__LISTEN=127.0.0.1:0 \
SECURENET_CONTROL__DEFAULT_API_KEY="$KEY" RUST_LOG=warn \
SECURENET_INGEST__OTLP__GRPC_LISTEN=127.0.0.1:0 \
SECURENET_INGEST__BATCH__LINGER_MS="${LINGER_MS:-10}" \
SECURENET_INGEST__SYSLOG='[{name="gelf",protocol="tcp",format="gelf",listen="127.0.0.1:0",default_tenant="default"},{name="fluent",protocol="tcp",format="fluent",listen="127.0.0.1:0",default_tenant="default",max_frame_bytes=16777216}]' \
  "$BIN/securenet" serve > "$WORK/serve.out" &
PID=$!
ADDR=$(wait_ready "$WORK/serve.out" "securenet ready http=")
GRPC=$(wait_ready "$WORK/serve.out" "securenet ready otlp_grpc=")
GELF=$(wait_ready "$WORK/serve.out" "securenet ready syslog gelf=")
FLUENT=$(wait_ready "$WORK/serve.out" "securenet ready syslog fluent=")

target() {
  case "$1" in
    otlp-grpc) echo "$GRPC" ;;
    gelf-tcp) echo "$GELF" ;;
    fluent) echo "$FLUENT" ;;
    *) echo "" ;;
  esac
}

# The server's CPU time (user + system, clock ticks) from /proc: what each
# protocol costs SecureNet itself, apart from the load generator sharing
# the machine.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
TICKS=$(getconf CLK_TCK)

: > "$WORK/runs.jsonl"
for round in $(seq 0 "$ROUNDS"); do
  for p in $PROTOCOLS; do
    t=$(target "$p")
    cpu0=$(cpu_ticks)
    out=$("$BIN/loadgen" http --url "http://$ADDR" --key "$KEY" --protocol "$p" \
      ${t:+--target "$t"} --rows "$ROWS" --batch "$BATCH" --concurrency "$CONCURRENCY" --runs 0)
    cpu1=$(cpu_ticks)
    echo "{\"round\": $round, \"server_cpu_ticks\": $((cpu1 - cpu0)), \"result\": $out}" >> "$WORK/runs.jsonl"
  done
done

STORED=$(curl -s -H "X-API-Key: $KEY" -H 'content-type: application/json' \
  -d '{"sql":"SELECT input, count(*) AS n FROM logs GROUP BY input ORDER BY input"}' "http://$ADDR/api/sql")
mkdir -p "$(dirname "$RESULTS")"
python3 - "$WORK/runs.jsonl" "$STORED" "$ROWS" "$ROUNDS" "$RESULTS" "$TICKS" <<'PY'
import json, statistics, sys, subprocess
runs = [json.loads(l) for l in open(sys.argv[1])]
stored = json.loads(sys.argv[2])
rows, rounds, path, ticks = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
total_stored = sum(r["n"] for r in stored["rows"])
acked = sum(r["result"]["acknowledged"] for r in runs)
by = {}
for r in runs:
    if r["round"] == 0:
        continue  # warm-up
    res = dict(r["result"], server_cpu_s=r["server_cpu_ticks"] / ticks)
    by.setdefault(res["protocol"], []).append(res)
summary = {}
for p, rs in by.items():
    rate = statistics.median(x["median_rows_per_s"] for x in rs)
    mb = statistics.median(x["median_mb_per_s"] for x in rs)
    cpu_us = statistics.median(x["server_cpu_s"] for x in rs) / rows * 1e6
    summary[p] = {"rows_per_s": rate, "mb_per_s": mb, "bytes_per_row": rs[0]["bytes_per_row"],
                  "server_cpu_us_per_row": round(cpu_us, 2),
                  "runs": [x["median_rows_per_s"] for x in rs]}
base = summary["Ndjson"]["rows_per_s"]
for p, s in summary.items():
    s["ratio_to_ndjson"] = round(s["rows_per_s"] / base, 3)
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
out = {"rows_per_run": rows, "rounds": rounds, "cpu": cpu, "stored_by_input": stored["rows"],
       "stored_total": total_stored, "sent_total": acked, "protocols": summary}
json.dump(out, open(path, "w"), indent=1)
print(f"{'protocol':<14} {'rows/s':>10} {'MB/s':>7} {'B/row':>6} {'x NDJSON':>9} {'srv us/row':>10}  runs")
for p, s in summary.items():
    print(f"{p:<14} {s['rows_per_s']:>10.0f} {s['mb_per_s']:>7.1f} {s['bytes_per_row']:>6} {s['ratio_to_ndjson']:>9.3f} {s['server_cpu_us_per_row']:>10.2f}  {s['runs']}")
print(f"stored {total_stored} rows, sent {acked}; results in {path}")
if total_stored != acked:
    sys.exit(f"SQL holds {total_stored} rows, {acked} were acknowledged")
PY
