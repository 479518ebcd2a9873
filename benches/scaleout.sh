#!/usr/bin/env bash
# Scale-out benchmarks, each against a baseline in the same command:
#
#   1. Kafka (Tansu 0.6.0, sqlite): envelopes through the bus's producer and
#      consumer vs the same bytes through bare librdkafka (same settings).
#   2. ClickHouse 18.16 (Debian): the ClickHouse sink vs bare inserts of
#      the same Native blocks, one write at a time and 4 in flight (as the
#      pipeline drives it by default), the same for both; with the insert
#      bodies uncompressed (the default) and LZ4-compressed; 1 M rows a
#      run, and once more 200,000 (short runs, as measured before).
#   3. End to end: HTTP NDJSON → `securenet ingest` → Kafka → `securenet
#      pipeline` → Parquet only, and Parquet + ClickHouse, rows/s from the
#      first request until the sinks have written every row (the pipelines'
#      metrics; the stored counts are checked after); baselines: the
#      embedded `securenet serve` with the same load and the same clock,
#      writing the same sinks. 3b: one process per role sharing a
#      data directory; 3c: share-nothing — two of each role, each with its
#      own data directory, the lake on S3 and the control plane on
#      PostgreSQL, the load split over both ingest nodes; once against each
#      S3 server in S3_SERVERS (default "s3s moto").
#
#   benches/scaleout.sh [E2E_ROWS] [RUNS]
#
# Services' and processes' data go under $TMPDIR (mktemp); see
# docs/benchmarks.md for why the figures there were taken with
# TMPDIR=/dev/shm on this machine.
#
# Needs tansu and clickhouse-server on PATH (./scripts/test.sh installs
# them); installs s3s-fs with cargo on first use. Starts every service on
# free ports in a temporary directory and stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/securenet/target}"
export PATH="$HOME/.cargo/bin:$PATH"
E2E_ROWS="${1:-200000}"
RUNS="${2:-5}"

# BIN: a directory with other builds' securenet, loadgen and scaleout (an
# A/B of two builds); NO_BUILD=1 skips the build.
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p securenet -p securenet-benches --bins
BIN="${BIN:-$CARGO_TARGET_DIR/release}"
WORK="$(mktemp -d)"
PIDS=()
STOPS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for c in "${STOPS[@]}"; do $c >/dev/null 2>&1 || true; done
  sleep 1; rm -rf "$WORK"
}
trap cleanup EXIT

source scripts/lib/services.sh
wait_ready() { # file marker
  for _ in $(seq 1 600); do
    if grep -q "$2" "$1" 2>/dev/null; then sed -n "s/.*$2//p" "$1" | head -n1; return; fi
    sleep 0.05
  done
  echo "not ready: $1" >&2; tail -5 "$1" >&2; exit 1
}

# Services.
mkdir -p "$WORK/tansu"
start_tansu "$WORK/tansu" PIDS; TANSU_PID=${PIDS[-1]}
start_clickhouse "$WORK/clickhouse" PIDS; CH_PID=${PIDS[-1]}
BROKERS="$KAFKA_BROKERS"
CH="$CLICKHOUSE_URL"

echo "== 1. Kafka bus vs bare librdkafka (Tansu)" >&2
KAFKA=$(RUST_LOG=error "$BIN/scaleout" kafka --brokers "$BROKERS" --envelopes 100 --rows 2000 --runs "$RUNS")
echo "$KAFKA"
echo "== 2. ClickHouse sink vs bare Native inserts, one write at a time and 4 in flight, lz4 and none" >&2
# Runs of 100 envelopes × 10,000 rows (1 M rows, 1.5-2 s a half): long
# enough for ClickHouse to merge the run's parts while it runs, as under a
# pipeline that writes without pause. Then the short runs of 20 envelopes
# (0.2 s a half) that the figures before 2026-12-06 (late) were taken with,
# for comparison: there a run's first and last inserts, with a core idle,
# are a large part of it, and its parts are merged only after the clock.
for comp in lz4 none; do
  for c in 1 4; do
    "$BIN/scaleout" clickhouse --url "$CH" --envelopes 100 --rows 10000 --concurrency "$c" --runs "$RUNS" --compression "$comp"
  done
done
"$BIN/scaleout" clickhouse --url "$CH" --envelopes 20 --rows 10000 --concurrency 4 --runs "$RUNS" --compression none

KEY="bench-key-0123456789abcdef"
common_env() {
  echo SECURENET_HTTP__LISTEN=127.0.0.1:0 SECURENET_CONTROL__DEFAULT_API_KEY=$KEY \
    RUST_LOG=error SECURENET_INGEST__SYSLOG=[] SECURENET_PIPELINE__MAINTENANCE__ENABLED=false
}
ch_env() { # sinks database → the ClickHouse sink's settings; nothing for "parquet"
  [ "$1" = "parquet" ] ||
    echo "SECURENET_PIPELINE__CLICKHOUSE__URL=$CH SECURENET_PIPELINE__CLICKHOUSE__DATABASE=$2"
}
count_sql() { # addr
  curl -s -H "X-API-Key: $KEY" -H 'content-type: application/json' \
    -d '{"sql":"SELECT count(*) AS n FROM logs"}' "http://$1/api/sql" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0]["n"])'
}
# A run ends when the pipelines' sinks report every row written (their
# /metrics, summed over the pipeline processes, polled every 20 ms); the
# stored counts are checked after the clock stops. Polling `count() FINAL`
# and SQL counts during the run took CPU from the system being measured
# (each SQL count over the S3 lake lists and reads footers through moto).
sink_rows() { # sink, pipeline addresses... → rows that sink wrote
  local sink=$1 total=0 n; shift
  for a in "$@"; do
    n=$(curl -s "http://$a/metrics" | awk -v s="sink=\"$sink\"" \
      '/^securenet_sink_rows_total/ && index($0, s) && index($0, "kind=\"logs\"") {print $2}')
    total=$((total + ${n:-0}))
  done
  echo "$total"
}
wait_written() { # pipeline addresses... (the sinks in $SINKS, default both)
  local s
  for s in ${SINKS:-parquet clickhouse}; do
    while [ "$(sink_rows "$s" "$@")" -lt "$E2E_ROWS" ]; do sleep 0.02; done
  done
}
# The distributed shapes start their load once every pipeline holds
# partitions (`securenet_bus_assigned_partitions` > 0): a run measures the
# topology at work, not the consumer group forming. Without it, a second
# pipeline could still be joining when the load began — the likely cause
# of 3c runs that now and then stalled for ~3 s (docs/benchmarks.md).
wait_assigned() { # pipeline addresses...
  local a n
  for a in "$@"; do
    for _ in $(seq 1 600); do
      n=$(curl -s "http://$a/metrics" | awk '/^securenet_bus_assigned_partitions / {print $2}')
      [ "${n:-0}" -gt 0 ] && break
      sleep 0.05
    done
  done
}
# A run's clock starts when the load generator sent its first request (its
# bodies are generated before that) and stops when the sinks wrote every
# row: the same for the embedded baselines and the distributed shapes.
started() { # loadgen outputs... → the earliest first request, unix seconds
  python3 -c 'import json,sys; print(min(json.loads(a)["last_run_started_unix_s"] for a in sys.argv[1:]))' "$@"
}
rate() { # start end → rows/s
  python3 -c "print(round($E2E_ROWS / ($2 - $1)))"
}
# CPU seconds (user + system, from /proc, each process with its
# descendants) of named groups of processes: `cpu_snap name=pid,pid …`
# prints `name:seconds …`; `cpu_diff BEFORE AFTER` prints `name=seconds …`
# spent between the two snapshots. Where the time of a run goes; the load
# generator (an exited child) is not counted.
cpu_snap() {
  python3 - "$@" <<'PY'
import os, sys
tick = os.sysconf("SC_CLK_TCK")
procs = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        procs[int(d)] = (int(f[1]), int(f[11]) + int(f[12]))
def total(pid):
    t, todo = 0, [pid]
    while todo:
        p = todo.pop()
        t += procs.get(p, (0, 0))[1]
        todo += [c for c, (pp, _) in procs.items() if pp == p]
    return t
out = []
for arg in sys.argv[1:]:
    name, pids = arg.split("=", 1)
    out.append(f"{name}:{sum(total(int(p)) for p in pids.split(',') if p) / tick:.2f}")
print(" ".join(out))
PY
}
cpu_diff() { # before after
  python3 -c '
import sys
b = dict(kv.split(":") for kv in sys.argv[1].split())
a = dict(kv.split(":") for kv in sys.argv[2].split())
print(" ".join(f"{k}={float(a[k]) - float(b[k]):.2f}" for k in a))' "$1" "$2"
}
wait_stored() { # query-api address, ClickHouse database ("" when only Parquet: C is then set to the expected count) → sets P and C (after the clock)
  for _ in $(seq 1 300); do
    P=$(count_sql "$1")
    if [ -n "$2" ]; then C=$(count_ch "$2"); else C=$E2E_ROWS; fi
    [ "$P" -ge "$E2E_ROWS" ] && [ "${C:-0}" -ge "$E2E_ROWS" ] && return
    sleep 0.1
  done
}
count_ch() { # database
  curl -s "$CH/?query=SELECT%20count()%20FROM%20$1.logs%20FINAL" 2>/dev/null || echo 0
}

# 3a. Baselines: the embedded `serve` (one process, in-memory bus) with
# Parquet only, and with Parquet + ClickHouse — the distributed shapes below
# write both, so the second is the like-for-like one.
BASE_RATES=(); BASE_CH_RATES=()
for run in $(seq 1 "$RUNS"); do
  for sinks in "parquet" "parquet clickhouse"; do
    echo "== 3a. run $run: securenet serve (embedded bus, $sinks) — $E2E_ROWS rows" >&2
    DATA="$WORK/serve$run${sinks// /}"; DB="bench_serve_${run}_$$"
    env $(common_env) $(ch_env "$sinks" "$DB") SECURENET_DATA_DIR="$DATA" "$BIN/securenet" serve > "$DATA.out" 2>"$DATA.err" &
    PIDS+=($!); SERVE_PID=$!
    ADDR=$(wait_ready "$DATA.out" "securenet ready http=")
    GROUPS_CPU=("serve=$SERVE_PID" "clickhouse=$CH_PID"); CPU0=$(cpu_snap "${GROUPS_CPU[@]}")
    LOAD=$("$BIN/loadgen" http --url "http://$ADDR" --key "$KEY" --rows "$E2E_ROWS" --runs 0)
    SINKS="$sinks" wait_written "$ADDR"
    END=$(date +%s.%N)
    CPU=$(cpu_diff "$CPU0" "$(cpu_snap "${GROUPS_CPU[@]}")")
    RATE=$(rate "$(started "$LOAD")" "$END")
    echo "run $run ($sinks): $RATE rows/s until written (acknowledged: $LOAD); CPU s: $CPU" >&2
    echo "serve ${sinks// /+}	$CPU" >> "$WORK/cpu.log"
    if [ "$sinks" = "parquet" ]; then BASE_RATES+=("$RATE"); else BASE_CH_RATES+=("$RATE"); fi
    kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
    [ "$sinks" = "parquet" ] || curl -s "$CH/" -d "DROP DATABASE IF EXISTS $DB" > /dev/null
  done
done

E2E_RATES=(); E2E_PQ_RATES=()
for run in $(seq 1 "$RUNS"); do
  for sinks in "parquet" "parquet clickhouse"; do
    echo "== 3b. run $run: ingest → Kafka → pipeline → $sinks — $E2E_ROWS rows" >&2
    DATA="$WORK/e2e$run${sinks// /}"; DB=""
    [ "$sinks" = "parquet" ] || DB="bench_e2e_${run}_$$"
    T="bench$run${#sinks}$$"
    ROLE_ENV="$(common_env) SECURENET_DATA_DIR=$DATA SECURENET_BUS__KIND=kafka SECURENET_BUS__KAFKA__BROKERS=$BROKERS \
      SECURENET_BUS__KAFKA__TOPIC_PREFIX=$T SECURENET_BUS__KAFKA__GROUP_ID=$T $(ch_env "$sinks" "$DB")"
    L="$WORK/e2e$run${#sinks}"
    env $ROLE_ENV "$BIN/securenet" pipeline > "$L.pipeline.out" 2>"$L.pipeline.err" &
    PIDS+=($!); PIPE_PID=$!
    PIPE=$(wait_ready "$L.pipeline.out" "securenet ready http=")
    env $ROLE_ENV "$BIN/securenet" ingest > "$L.ingest.out" 2>"$L.ingest.err" &
    PIDS+=($!); INGEST_PID=$!
    INGEST=$(wait_ready "$L.ingest.out" "securenet ready http=")
    env $ROLE_ENV "$BIN/securenet" query-api > "$L.api.out" 2>"$L.api.err" &
    PIDS+=($!); API_PID=$!
    API=$(wait_ready "$L.api.out" "securenet ready http=")
    wait_assigned "$PIPE"
    GROUPS_CPU=("ingest=$INGEST_PID" "pipeline=$PIPE_PID" "tansu=$TANSU_PID" "clickhouse=$CH_PID")
    CPU0=$(cpu_snap "${GROUPS_CPU[@]}")
    "$BIN/loadgen" http --url "http://$INGEST" --key "$KEY" --rows "$E2E_ROWS" --runs 0 > "$L.load.json"
    SINKS="$sinks" wait_written "$PIPE"
    END=$(date +%s.%N)
    CPU=$(cpu_diff "$CPU0" "$(cpu_snap "${GROUPS_CPU[@]}")")
    START=$(started "$(cat "$L.load.json")")
    wait_stored "$API" "$DB"
    RATE=$(rate "$START" "$END")
    echo "run $run ($sinks): parquet=$P${DB:+ clickhouse=$C} in $(python3 -c "print(round($END - $START, 2))")s = $RATE rows/s (ingest acknowledged: $(cat "$L.load.json")); CPU s: $CPU" >&2
    [ "$P" -eq "$E2E_ROWS" ] && [ "$C" -eq "$E2E_ROWS" ] || { echo "count mismatch: parquet $P clickhouse $C" >&2; exit 1; }
    echo "kafka ${sinks// /+}	$CPU" >> "$WORK/cpu.log"
    if [ "$sinks" = "parquet" ]; then E2E_PQ_RATES+=("$RATE"); else E2E_RATES+=("$RATE"); fi
    kill "$INGEST_PID" "$PIPE_PID" "$API_PID"; wait "$INGEST_PID" "$PIPE_PID" "$API_PID" 2>/dev/null || true
    [ -z "$DB" ] || curl -s "$CH/" -d "DROP DATABASE $DB" > /dev/null
  done
done

# 3c. Share-nothing: the services the hosts share (S3 server, PostgreSQL)
# as scripts/test.sh starts them. The runs go once against each S3 server
# in S3_SERVERS (default "s3s moto"): s3s-fs, a Rust S3 server over a
# directory (installed with cargo once), and moto (Python, the test
# suite's), both on the same two cores as everything else; the S3 server's
# CPU is a cost of this machine, not of a deployment's object store, so
# the figures are reported per server (docs/benchmarks.md).
S3_SERVERS="${S3_SERVERS:-s3s moto}"
TEST_VENV="$HOME/.cache/securenet/venv-$(sha256sum scripts/requirements-test.txt | cut -c1-12)"
if [ ! -x "$TEST_VENV/bin/python" ]; then
  python3 -m venv "$TEST_VENV.tmp"
  "$TEST_VENV.tmp/bin/pip" install -q --disable-pip-version-check -r scripts/requirements-test.txt
  mv "$TEST_VENV.tmp" "$TEST_VENV"
fi
PG_DIR="$(mktemp -d)"
start_postgres "$PG_DIR" STOPS
# Outside $WORK (the server's user cannot enter it): removed once stopped.
STOPS+=("rm -rf $PG_DIR")
PSQL="$(postgres_bin)/psql"
for s3 in $S3_SERVERS; do
case $s3 in
  s3s) start_s3s "$WORK/s3s" PIDS ;;
  moto) start_moto "$WORK" PIDS "$TEST_VENV/bin/python" ;;
  *) echo "S3_SERVERS: unknown server $s3 (s3s, moto)" >&2; exit 1 ;;
esac
S3_PID=${PIDS[-1]}
for run in $(seq 1 "$RUNS"); do
  for sinks in "parquet" "parquet clickhouse"; do
    echo "== 3c. run $run ($s3): share-nothing, 2 × each role → $sinks — $E2E_ROWS rows" >&2
    # DB names the run's PostgreSQL database and lake prefix, and its
    # ClickHouse database when that sink is on.
    DB="bench_sn_${s3}_${run}_${#sinks}_$$"; CH_DB=""
    [ "$sinks" = "parquet" ] || CH_DB="$DB"
    "$PSQL" -q "$POSTGRES_URL" -c "CREATE DATABASE $DB"
    PGURL="${POSTGRES_URL%/postgres}/$DB"
    T="sn$run${#sinks}$$"
    SN_ENV="$(common_env) SECURENET_BUS__KIND=kafka SECURENET_BUS__KAFKA__BROKERS=$BROKERS \
      SECURENET_BUS__KAFKA__TOPIC_PREFIX=$T SECURENET_BUS__KAFKA__GROUP_ID=$T $(ch_env "$sinks" "$DB") \
      SECURENET_CONTROL__DATABASE=$PGURL SECURENET_PIPELINE__LAKE_URL=s3://$S3_BUCKET/$DB \
      AWS_ENDPOINT_URL=$S3_ENDPOINT AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
      AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true"
    ROLE_PIDS=(); ADDRS=(); H="$WORK/sn$run${#sinks}"
    for role in pipeline pipeline ingest ingest query-api query-api; do
      h="$H/${#ROLE_PIDS[@]}"; mkdir -p "$h"
      env $SN_ENV SECURENET_DATA_DIR="$h" "$BIN/securenet" $role > "$h/out" 2>"$h/err" &
      PIDS+=($!); ROLE_PIDS+=($!)
      ADDRS+=("$(wait_ready "$h/out" "securenet ready http=")")
  done
  wait_assigned "${ADDRS[0]}" "${ADDRS[1]}"
  PG_PID=$(head -1 "$PG_DIR/data/postmaster.pid")
  GROUPS_CPU=("ingest=${ROLE_PIDS[2]},${ROLE_PIDS[3]}" "pipeline=${ROLE_PIDS[0]},${ROLE_PIDS[1]}"
    "query_api=${ROLE_PIDS[4]},${ROLE_PIDS[5]}" "tansu=$TANSU_PID" "clickhouse=$CH_PID" "s3_$s3=$S3_PID"
    "postgres=$PG_PID")
  CPU0=$(cpu_snap "${GROUPS_CPU[@]}")
  HALF=$((E2E_ROWS / 2))
  "$BIN/loadgen" http --url "http://${ADDRS[2]}" --key "$KEY" --rows "$HALF" --runs 0 > "$H/load1.json" &
  L1=$!
  "$BIN/loadgen" http --url "http://${ADDRS[3]}" --key "$KEY" --rows $((E2E_ROWS - HALF)) --runs 0 > "$H/load2.json"
  wait "$L1"
  SINKS="$sinks" wait_written "${ADDRS[0]}" "${ADDRS[1]}"
  END=$(date +%s.%N)
  CPU=$(cpu_diff "$CPU0" "$(cpu_snap "${GROUPS_CPU[@]}")")
  START=$(started "$(cat "$H/load1.json")" "$(cat "$H/load2.json")")
  wait_stored "${ADDRS[4]}" "$CH_DB"
  RATE=$(rate "$START" "$END")
  P2=$(count_sql "${ADDRS[5]}")
  echo "run $run ($s3, $sinks): parquet=$P (other query-api: $P2)${CH_DB:+ clickhouse=$C} in $(python3 -c "print(round($END - $START, 2))")s = $RATE rows/s; CPU s: $CPU" >&2
  [ "$P" -eq "$E2E_ROWS" ] && [ "$P2" -eq "$E2E_ROWS" ] && [ "$C" -eq "$E2E_ROWS" ] ||
    { echo "count mismatch: parquet $P / $P2, clickhouse $C" >&2; exit 1; }
  echo "share_nothing_$s3 ${sinks// /+}	$CPU" >> "$WORK/cpu.log"
  echo "$s3 ${sinks// /+} $RATE" >> "$WORK/sn_rates"
  kill "${ROLE_PIDS[@]}"; wait "${ROLE_PIDS[@]}" 2>/dev/null || true
  [ -z "$CH_DB" ] || curl -s "$CH/" -d "DROP DATABASE $CH_DB" > /dev/null
  done
done
kill "$S3_PID"; wait "$S3_PID" 2>/dev/null || true
done

python3 - "${BASE_RATES[*]}" "${BASE_CH_RATES[*]}" "${E2E_RATES[*]}" "${E2E_PQ_RATES[*]}" "$WORK/cpu.log" "$WORK/sn_rates" <<'PY'
import json, sys
runs = [sorted(int(r) for r in a.split()) for a in sys.argv[1:5]]
base, base_ch, e2e, e2e_pq = runs
# Share-nothing rates per S3 server and sinks, in the order the servers ran.
sn_runs = {}
for line in open(sys.argv[6]):
    server, sinks, rate = line.split()
    sn_runs.setdefault(server, {}).setdefault(sinks, []).append(int(rate))
sn_runs = {server: {k: sorted(v) for k, v in r.items()} for server, r in sn_runs.items()}
med = lambda r: r[len(r) // 2]
# CPU seconds per run of each process group, median over the runs of a shape.
cpu = {}
for line in open(sys.argv[5]):
    shape, groups = line.rstrip("\n").split("\t")
    for kv in groups.split():
        k, v = kv.split("=")
        cpu.setdefault(shape, {}).setdefault(k, []).append(float(v))
print(json.dumps({
    "cpu_s_per_run_median": {shape: {k: sorted(v)[len(v) // 2] for k, v in g.items()} for shape, g in cpu.items()},
    "bench": "end_to_end",
    "clock": "first request sent until the sinks wrote every row",
    "serve_parquet_runs_rows_per_s": base,
    "baseline_serve_parquet_rows_per_s": med(base),
    "serve_both_sinks_runs_rows_per_s": base_ch,
    "baseline_serve_both_sinks_rows_per_s": med(base_ch),
    "kafka_parquet_runs_rows_per_s": e2e_pq,
    "kafka_parquet_median_rows_per_s": med(e2e_pq),
    "kafka_parquet_ratio_to_serve_parquet": round(med(e2e_pq) / med(base), 3),
    "kafka_both_sinks_runs_rows_per_s": e2e,
    "kafka_both_sinks_median_rows_per_s": med(e2e),
    "ratio_to_baseline": round(med(e2e) / med(base), 3),
    "ratio_to_serve_both_sinks": round(med(e2e) / med(base_ch), 3),
    "share_nothing_by_s3_server": {
        server: {
            "parquet_runs_rows_per_s": r["parquet"],
            "parquet_median_rows_per_s": med(r["parquet"]),
            "parquet_ratio_to_serve_parquet": round(med(r["parquet"]) / med(base), 3),
            "both_sinks_runs_rows_per_s": r["parquet+clickhouse"],
            "both_sinks_median_rows_per_s": med(r["parquet+clickhouse"]),
            "both_sinks_ratio_to_serve_both_sinks": round(med(r["parquet+clickhouse"]) / med(base_ch), 3),
        }
        for server, r in sn_runs.items()
    },
}))
PY
