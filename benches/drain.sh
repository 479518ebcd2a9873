#!/usr/bin/env bash
# Where the time of the Kafka path goes: the pipeline role draining a
# backlog, apart from the ingest role producing it.
#
#   benches/drain.sh [ROWS] [RUNS] [MAX_IN_FLIGHT...]
#
# Per run: `securenet ingest` loads ROWS rows (HTTP NDJSON, `loadgen`) into
# a fresh Tansu (sqlite) with no pipeline running; then `securenet
# pipeline` starts and drains the backlog into Parquet + ClickHouse 18.16.
# Reports per phase the rate and the CPU seconds each process spent (from
# /proc: Tansu, ClickHouse, the SecureNet role), and the sinks' mean write
# latency, for each `pipeline.consumer.max_in_flight` given (default: 4 16),
# runs alternating; medians at the end. Needs tansu and clickhouse-server
# on PATH (./scripts/test.sh installs them).
#
# A/B of two builds in one sitting: BINS="old=/dir/of/old/release
# new=$CARGO_TARGET_DIR/release" (label=directory holding `securenet`);
# each run then goes through every build in turn, per setting.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/securenet/target}"
export PATH="$HOME/.cargo/bin:$PATH"
ROWS="${1:-200000}"; RUNS="${2:-3}"
SETTINGS=("${@:3}"); [ ${#SETTINGS[@]} -gt 0 ] || SETTINGS=(4 16)
cargo build --release -q -p securenet -p securenet-benches --bins
read -r -a BUILDS <<< "${BINS:-current=$CARGO_TARGET_DIR/release}"
WORK="$(mktemp -d)"; PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 1; rm -rf "$WORK"; }
trap cleanup EXIT
source scripts/lib/services.sh
wait_ready() { # file marker
  for _ in $(seq 1 600); do
    if grep -q "$2" "$1" 2>/dev/null; then sed -n "s/.*$2//p" "$1" | head -n1; return; fi
    sleep 0.05
  done
  echo "not ready: $1" >&2; exit 1
}
cpu_s() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$1/stat"; } # utime + stime, 100 Hz
metric() { # addr name filter
  curl -s "http://$1/metrics" | grep "^$2" | grep -- "$3" | awk '{print $2}' || true
}
mkdir -p "$WORK/tansu"
start_tansu "$WORK/tansu" PIDS; TANSU=${PIDS[-1]}
start_clickhouse "$WORK/clickhouse" PIDS; CH=${PIDS[-1]}
KEY="bench-key-0123456789abcdef"
RESULTS="$WORK/results.tsv"
for run in $(seq 1 "$RUNS"); do
  for m in "${SETTINGS[@]}"; do
  for build in "${BUILDS[@]}"; do
    label="${build%%=*}"; BIN="${build#*=}"
    tag="r${run}m${m}${label//[^a-z0-9]/}"
    ENVS="SECURENET_HTTP__LISTEN=127.0.0.1:0 SECURENET_CONTROL__DEFAULT_API_KEY=$KEY RUST_LOG=error
      SECURENET_INGEST__SYSLOG=[] SECURENET_PIPELINE__MAINTENANCE__ENABLED=false
      SECURENET_DATA_DIR=$WORK/$tag SECURENET_BUS__KIND=kafka SECURENET_BUS__KAFKA__BROKERS=$KAFKA_BROKERS
      SECURENET_BUS__KAFKA__TOPIC_PREFIX=$tag$$ SECURENET_BUS__KAFKA__GROUP_ID=$tag$$
      SECURENET_PIPELINE__CLICKHOUSE__URL=$CLICKHOUSE_URL SECURENET_PIPELINE__CLICKHOUSE__DATABASE=$tag
      SECURENET_PIPELINE__CONSUMER__MAX_IN_FLIGHT=$m"
    env $ENVS "$BIN/securenet" ingest > "$WORK/$tag-ingest.out" 2> "$WORK/$tag-ingest.err" &
    ING=$!; PIDS+=($ING)
    ADDR=$(wait_ready "$WORK/$tag-ingest.out" "securenet ready http=")
    t0=$(cpu_s "$TANSU"); c0=$(cpu_s "$CH")
    LOAD=$("$BIN/loadgen" http --url "http://$ADDR" --key "$KEY" --rows "$ROWS" --runs 0 |
      python3 -c 'import json,sys; print(round(json.load(sys.stdin)["median_rows_per_s"]))')
    load_cpu="$(cpu_s "$ING") $(python3 -c "print(round($(cpu_s "$TANSU") - $t0, 2), round($(cpu_s "$CH") - $c0, 2))")"
    kill "$ING"; wait "$ING" 2>/dev/null || true
    t0=$(cpu_s "$TANSU"); c0=$(cpu_s "$CH")
    START=$(date +%s.%N)
    env $ENVS "$BIN/securenet" pipeline > "$WORK/$tag-pipeline.out" 2> "$WORK/$tag-pipeline.err" &
    PIPE=$!; PIDS+=($PIPE)
    PADDR=$(wait_ready "$WORK/$tag-pipeline.out" "securenet ready http=")
    while :; do
      C=$(curl -s "$CLICKHOUSE_URL/?query=SELECT%20count()%20FROM%20$tag.logs" 2>/dev/null || echo 0)
      P=$(metric "$PADDR" securenet_sink_rows_total 'kind="logs",sink="parquet"')
      [ "${C:-0}" -ge "$ROWS" ] 2>/dev/null && [ "${P:-0}" -ge "$ROWS" ] 2>/dev/null && break
      sleep 0.05
    done
    END=$(date +%s.%N)
    drain_cpu="$(cpu_s "$PIPE") $(python3 -c "print(round($(cpu_s "$TANSU") - $t0, 2), round($(cpu_s "$CH") - $c0, 2))")"
    batches=$(metric "$PADDR" securenet_sink_batches_total 'kind="logs",sink="parquet"')
    inserts=$(metric "$PADDR" securenet_sink_inserts_total 'kind="logs",sink="clickhouse"')
    lat_ch=$(python3 -c "print(round(1000 * $(metric "$PADDR" securenet_sink_write_duration_seconds_sum 'sink="clickhouse"') / $(metric "$PADDR" securenet_sink_write_duration_seconds_count 'sink="clickhouse"')))")
    lat_pq=$(python3 -c "print(round(1000 * $(metric "$PADDR" securenet_sink_write_duration_seconds_sum 'sink="parquet"') / $(metric "$PADDR" securenet_sink_write_duration_seconds_count 'sink="parquet"')))")
    DRAIN=$(python3 -c "print(round($ROWS / ($END - $START)))")
    kill "$PIPE"; wait "$PIPE" 2>/dev/null || true
    echo "run $run $label max_in_flight=$m: load $LOAD rows/s (cpu s: ingest tansu clickhouse = $load_cpu); drain $DRAIN rows/s in $batches batches, ${inserts:-?} ClickHouse inserts (cpu s: pipeline tansu clickhouse = $drain_cpu; mean write ms: clickhouse $lat_ch parquet $lat_pq)" >&2
    printf '%s\t%s\t%s\t%s\t%s\n' "$label max_in_flight=$m" "$LOAD" "$DRAIN" "$load_cpu" "$drain_cpu" >> "$RESULTS"
    curl -s "$CLICKHOUSE_URL/" -d "DROP DATABASE $tag" > /dev/null
  done
  done
done
python3 - "$RESULTS" "$ROWS" <<'PY'
import json, statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
out = {"rows_per_run": int(sys.argv[2]), "settings": {}}
for m in dict.fromkeys(r[0] for r in rows):
    rs = [r for r in rows if r[0] == m]
    med = lambda i: statistics.median(float(r[i]) for r in rs)
    cpu = lambda i, j: statistics.median(float(r[i].split()[j]) for r in rs)
    out["settings"][m] = {
        "load_rows_per_s": med(1), "drain_rows_per_s": med(2),
        "load_cpu_s": {"ingest": cpu(3, 0), "tansu": cpu(3, 1), "clickhouse": cpu(3, 2)},
        "drain_cpu_s": {"pipeline": cpu(4, 0), "tansu": cpu(4, 1), "clickhouse": cpu(4, 2)},
        "runs_drain": [float(r[2]) for r in rs],
    }
print(json.dumps(out, indent=1))
PY
