#!/usr/bin/env bash
# End-to-end check of the monitoring and forwarder artifacts against real
# processes:
#
#   1. promtool checks deploy/prometheus/prometheus.yml and alerts.yml and
#      runs the alert unit tests (alerts.test.yml);
#   2. two `securenet serve` processes start on free ports in a private
#      directory (one of them with a tiny ingest budget, to make UDP drops
#      happen), and a real Prometheus (Debian's) scrapes both every second
#      and evaluates deploy/prometheus/alerts.yml;
#   3. traffic that moves every key series: HTTP NDJSON with injected
#      anomalies, TCP and UDP syslog, a message with a bad key, a forced
#      Parquet write failure, UDP overflow — and Debian's syslog-ng running
#      the syslog-ng block of docs/forwarders.md (plus the rsyslog block
#      when an rsyslogd is available), whose records must arrive in the
#      organization of the key they carry;
#   4. through Prometheus's HTTP API: both targets up, the key securenet_*
#      series present with the expected values, every alert rule evaluated
#      without error, and the sink-error and UDP-drop alerts firing.
#
# Usage: scripts/prometheus_e2e.sh SECURENET_BINARY [METRICS_DUMP_OUT]
#
# METRICS_DUMP_OUT receives both servers' /metrics after the traffic: the
# input of scripts/check_deploy.py. Exits non-zero on the first failure;
# stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

[ $# -ge 1 ] || { echo "usage: $0 SECURENET_BINARY [METRICS_DUMP_OUT]" >&2; exit 2; }
BIN=$(realpath "$1")
DUMP_OUT=${2:-}
[ -x "$BIN" ] || { echo "not an executable: $BIN" >&2; exit 2; }
for tool in prometheus promtool syslog-ng logger curl python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing $tool (Debian: prometheus, syslog-ng-core, bsdutils, curl, python3)" >&2; exit 2; }
done
SYSLOG_NG=$(command -v syslog-ng)
RSYSLOGD=${RSYSLOGD:-$(command -v rsyslogd 2>/dev/null || true)}

source scripts/lib/services.sh

WORK=$(mktemp -d)
pids=()
cleanup() { # SIGTERM everything started here; SIGKILL what is still up after 15 s
  local pid i
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for i in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
fail() {
  echo "FAIL: $*" >&2
  for f in "$WORK"/*.err "$WORK"/prometheus.log "$WORK"/syslog-ng/out; do
    [ -s "$f" ] && { echo "--- tail of $f" >&2; tail -20 "$f" >&2; }
  done
  exit 1
}

DEFAULT_KEY="prometheus-e2e-default-organization-key"

# serve NAME [VAR=VALUE...]: starts `securenet serve` with its own data
# directory and free ports; sets NAME_HTTP and NAME_SYSLOG_<LISTENER>.
serve() {
  local name=$1; shift
  mkdir -p "$WORK/$name"
  env -i PATH="$PATH" HOME="$HOME" RUST_LOG=warn \
    SECURENET_DATA_DIR="$WORK/$name" \
    SECURENET_HTTP__LISTEN=127.0.0.1:0 \
    SECURENET_CONTROL__DEFAULT_API_KEY="$DEFAULT_KEY" \
    SECURENET_PIPELINE__MAINTENANCE__ENABLED=false \
    "$@" "$BIN" serve > "$WORK/$name.out" 2> "$WORK/$name.err" &
  pids+=($!)
  local i line
  for i in $(seq 1 300); do
    grep -q '^securenet ready http=' "$WORK/$name.out" 2>/dev/null && break
    kill -0 "${pids[-1]}" 2>/dev/null || fail "securenet serve ($name) exited"
    sleep 0.1
  done
  grep -q '^securenet ready http=' "$WORK/$name.out" || fail "securenet serve ($name) did not start"
  printf -v "${name}_HTTP" '%s' "$(sed -n 's/^securenet ready http=//p' "$WORK/$name.out")"
  while read -r line; do
    local listener=${line%%=*} addr=${line#*=}
    printf -v "${name}_SYSLOG_${listener^^}" '%s' "$addr"
  done < <(sed -n 's/^securenet ready syslog //p' "$WORK/$name.out")
}

# securenet CLI against server NAME's data directory.
cli() { local name=$1; shift; env -i PATH="$PATH" HOME="$HOME" SECURENET_DATA_DIR="$WORK/$name" "$BIN" "$@"; }

post_ndjson() { # http key file → HTTP status
  curl -s -o "$WORK/last-answer" -w '%{http_code}' -H "X-API-Key: $2" \
    -H 'Content-Type: application/x-ndjson' --data-binary "@$3" "http://$1/api/ingest/logs"
}

sql() { # http key query → JSON answer
  curl -sf -H "X-API-Key: $2" -H 'Content-Type: application/json' \
    --data-binary "$(python3 -c 'import json,sys; print(json.dumps({"sql": sys.argv[1]}))' "$3")" \
    "http://$1/api/sql"
}

metric_value() { # http metric-line-prefix → sum of matching samples (0 if none)
  curl -sf "http://$1/metrics" | awk -v p="$2" 'index($0, p) == 1 { s += $NF } END { print s + 0 }'
}

wait_for() { # seconds description command...: retries until it succeeds
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" 2> "$WORK/wait.log"; do
    [ $SECONDS -lt $deadline ] || { cat "$WORK/wait.log" >&2; fail "timed out waiting for $what"; }
    sleep 0.3
  done
  grep '^ok ' "$WORK/wait.log" >&2 || true
}

# ------------------------------------------------------------------ promtool
step "promtool: config, rules, rule unit tests"
promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts.test.yml

# ------------------------------------------------------------------ servers
step "securenet serve (main) and a second serve with a tiny ingest budget"
serve main \
  SECURENET_INGEST__BATCH__LINGER_MS=50 \
  SECURENET_PIPELINE__DETECTION__TICK_MS=100 \
  SECURENET_INGEST__SYSLOG='[{name="tcp",protocol="tcp",listen="127.0.0.1:0",default_tenant="default"},{name="udp",protocol="udp",listen="127.0.0.1:0",default_tenant="default"}]'
# Budget for ~15 small messages, flushed every 5 s: a burst overflows it.
serve small \
  SECURENET_INGEST__BATCH__LINGER_MS=5000 \
  SECURENET_INGEST__BATCH__MAX_IN_FLIGHT_BYTES=4096 \
  SECURENET_INGEST__HTTP__MAX_BODY_BYTES=4096 \
  SECURENET_INGEST__HTTP__MAX_RECORD_BYTES=4096 \
  SECURENET_PIPELINE__DETECTION__ENABLED=false \
  SECURENET_INGEST__SYSLOG='[{name="udp",protocol="udp",listen="127.0.0.1:0",default_tenant="default"}]'
echo "main: http=$main_HTTP syslog tcp=$main_SYSLOG_TCP udp=$main_SYSLOG_UDP; small: http=$small_HTTP udp=$small_SYSLOG_UDP"

# ------------------------------------------------------------------ prometheus
step "prometheus scraping both every second, evaluating deploy/prometheus/alerts.yml"
PROM_PORT=$(free_port)
PROM="http://127.0.0.1:$PROM_PORT"
cat > "$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $ROOT/deploy/prometheus/alerts.yml
scrape_configs:
  - job_name: securenet
    metrics_path: /metrics
    static_configs:
      - targets: ["$main_HTTP"]
        labels: { server: main }
      - targets: ["$small_HTTP"]
        labels: { server: small }
EOF
promtool check config "$WORK/prometheus.yml" >/dev/null
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prometheus-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn > "$WORK/prometheus.log" 2>&1 &
pids+=($!)
wait_for 30 "prometheus to be ready" curl -sf "$PROM/-/ready" -o /dev/null

# Prometheus queries, checked by a small Python helper.
cat > "$WORK/promq.py" <<'EOF'
"""promq.py BASE MODE ARGS: exit 0 when the condition holds.

  value QUERY OP NUMBER [SERIES]   sum of the result's values OP NUMBER
                                   (and exactly SERIES series, if given)
  up                               every target of job securenet is up (2)
  rules                            every rule evaluated, none in error
  firing ALERT...                  each alert is firing
"""
import json, sys, urllib.parse, urllib.request

base, mode, args = sys.argv[1], sys.argv[2], sys.argv[3:]

def get(path, **params):
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    if body.get("status") != "success":
        sys.exit(f"{path}: {body}")
    return body["data"]

def report(ok, msg):
    print(("ok   " if ok else "wait ") + msg, file=sys.stderr)
    sys.exit(0 if ok else 1)

if mode == "value":
    query, op, want = args[0], args[1], float(args[2])
    res = get("/api/v1/query", query=query)["result"]
    total = sum(float(r["value"][1]) for r in res)
    ok = bool(res) and {">": total > want, ">=": total >= want, "==": total == want}[op]
    if len(args) > 3:
        ok = ok and len(res) == int(args[3])
    report(ok, f"{query} = {total:g} over {len(res)} series (want {op} {want:g})")
elif mode == "up":
    res = get("/api/v1/query", query='up{job="securenet"}')["result"]
    report(len(res) == 2 and all(r["value"][1] == "1" for r in res),
           "up{job=\"securenet\"}: " + ", ".join(f"{r['metric']['server']}={r['value'][1]}" for r in res))
elif mode == "rules":
    groups = get("/api/v1/rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    bad = [f"{r['name']}: {r.get('lastError')}" for r in rules if r.get("health") != "ok"]
    unevaluated = [r["name"] for r in rules if r.get("lastEvaluation", "").startswith("0001")]
    if bad:
        sys.exit("rules in error: " + "; ".join(bad))
    report(len(rules) > 0 and not unevaluated,
           f"{len(rules)} rules in {len(groups)} groups evaluated, none in error"
           + (f" (not yet: {', '.join(unevaluated)})" if unevaluated else ""))
elif mode == "firing":
    alerts = get("/api/v1/alerts")["alerts"]
    firing = {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}
    report(set(args) <= firing, f"firing: {', '.join(sorted(firing)) or 'none'} (want {', '.join(args)})")
else:
    sys.exit(f"unknown mode {mode}")
EOF
promq() { python3 "$WORK/promq.py" "$PROM" "$@"; }

wait_for 30 "both targets to be up" promq up

# ------------------------------------------------------------------ traffic
step "HTTP NDJSON: four quiet hours (the detector trains), then an hour with anomalies"
START=$(date -u -d 'yesterday 00:00' +%Y-%m-%dT%H:%M:%SZ)
LIVE=$(date -u -d 'yesterday 04:00' +%Y-%m-%dT%H:%M:%SZ)
cli main gen --tenants default --rows 24000 --seed 1 --start "$START" --duration-secs 14400 --out-dir "$WORK/gen-history" >/dev/null
cli main gen --tenants default --rows 6000 --anomalies 4 --seed 2 --start "$LIVE" --duration-secs 3600 --out-dir "$WORK/gen-live" >/dev/null
send_file() { # file: posted in 2000-line chunks, each must answer 200
  local chunk status
  split -l 2000 "$1" "$1.part."
  for chunk in "$1".part.*; do
    status=$(post_ndjson "$main_HTTP" "$DEFAULT_KEY" "$chunk")
    [ "$status" = 200 ] || fail "POST /api/ingest/logs answered $status: $(cat "$WORK/last-answer")"
  done
}
send_file "$WORK/gen-history/default.ndjson"
trained() { [ "$(metric_value "$main_HTTP" securenet_detector_models_trained_total)" != 0 ]; }
wait_for 60 "the default organization's model to be trained" trained
send_file "$WORK/gen-live/default.ndjson"
HTTP_ROWS=$(cat "$WORK/gen-history/default.ndjson" "$WORK/gen-live/default.ndjson" | wc -l)
anomalous() { [ "$(metric_value "$main_HTTP" securenet_detector_anomalies_total)" != 0 ]; }
wait_for 30 "anomalies to be detected" anomalous
echo "$HTTP_ROWS records sent, model trained, anomalies detected"

step "syslog: TCP and UDP to the default organization, one message with an unknown key"
logger -n 127.0.0.1 -P "${main_SYSLOG_TCP##*:}" -T --rfc5424 -t e2e-tcp "tcp one"
logger -n 127.0.0.1 -P "${main_SYSLOG_TCP##*:}" -T --rfc5424 -t e2e-tcp "tcp two"
logger -n 127.0.0.1 -P "${main_SYSLOG_UDP##*:}" -d --rfc5424 -t e2e-udp "udp one"
logger -n 127.0.0.1 -P "${main_SYSLOG_TCP##*:}" -T --rfc5424 -t e2e-badkey \
  --sd-id securenet@32473 --sd-param 'key="sn_0000000000000000_notakey"' "must be rejected"

step "syslog-ng with the configuration of docs/forwarders.md, to a second organization by key"
cli main orgs create --id e2e-forwarders --name "E2E forwarders" --owner-email sec@e2e.test --plan business >/dev/null
ORG_KEY=$(cli main keys create --org e2e-forwarders --role member 2>/dev/null)
# doc_block MARKER: the fenced block after `<!-- e2e: MARKER` in the doc.
doc_block() {
  awk -v m="<!-- e2e: $1" 'index($0, m) == 1 { found = 1; next }
    found && /^```/ { if (inside) exit; inside = 1; next }
    inside { print }' docs/forwarders.md
}
# substitute FILE FROM TO: replace literally, fail if FROM is not there (the
# doc changed shape: the test must follow).
substitute() {
  python3 - "$@" <<'EOF' || fail "docs/forwarders.md: \"$2\" not found in the block"
import sys
path, old, new = sys.argv[1:4]
text = open(path).read()
if old not in text:
    sys.exit(1)
open(path, "w").write(text.replace(old, new))
EOF
}
mkdir -p "$WORK/syslog-ng"
NG_CONF="$WORK/syslog-ng/securenet.conf"
doc_block syslog-ng > "$NG_CONF"
[ -s "$NG_CONF" ] || fail "no syslog-ng block marked <!-- e2e: syslog-ng --> in docs/forwarders.md"
substitute "$NG_CONF" '"securenet.example"' '"127.0.0.1"'
substitute "$NG_CONF" 'port(5514)' "port(${main_SYSLOG_TCP##*:})"
substitute "$NG_CONF" 'YOUR_SECURENET_API_KEY' "$ORG_KEY"
substitute "$NG_CONF" 'dir("/var/lib/syslog-ng")' "dir(\"$WORK/syslog-ng\")"
# What Debian's /etc/syslog-ng/syslog-ng.conf provides around conf.d: the
# version line and the local source s_src (here: a private /dev/log).
{
  echo "@version: $("$SYSLOG_NG" --version | sed -n 's/^Config version: //p')"
  echo "source s_src { unix-dgram(\"$WORK/syslog-ng/log.sock\"); };"
  echo "@include \"$NG_CONF\""
} > "$WORK/syslog-ng/syslog-ng.conf"
"$SYSLOG_NG" --syntax-only -f "$WORK/syslog-ng/syslog-ng.conf" || fail "syslog-ng rejects the configuration of docs/forwarders.md"
"$SYSLOG_NG" -F -f "$WORK/syslog-ng/syslog-ng.conf" --persist-file="$WORK/syslog-ng/persist" \
  --pidfile="$WORK/syslog-ng/pid" --control="$WORK/syslog-ng/ctl" > "$WORK/syslog-ng/out" 2>&1 &
pids+=($!)
wait_for 10 "syslog-ng's socket" test -S "$WORK/syslog-ng/log.sock"
for i in 1 2 3 4 5; do logger -u "$WORK/syslog-ng/log.sock" -t e2e-syslog-ng -p auth.warning "forwarded by syslog-ng $i"; done
ng_arrived() {
  sql "$main_HTTP" "$ORG_KEY" "SELECT count(*) AS n FROM logs WHERE app = 'e2e-syslog-ng'" |
    python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["rows"][0]["n"] == 5 else 1)'
}
wait_for 30 "the 5 syslog-ng messages in organization e2e-forwarders" ng_arrived
sql "$main_HTTP" "$ORG_KEY" "SELECT message, severity, facility, input, parse_status, structured_data FROM logs WHERE app = 'e2e-syslog-ng' ORDER BY message" |
  python3 -c '
import json, sys
rows = json.load(sys.stdin)["rows"]
assert [r["message"] for r in rows] == [f"forwarded by syslog-ng {i}" for i in range(1, 6)], rows
for r in rows:
    assert (r["severity"], r["facility"], r["input"], r["parse_status"]) == (4, 4, "syslog_tcp", "ok"), r
    assert "securenet@32473" not in (r["structured_data"] or ""), f"the key was stored: {r}"
print("syslog-ng: 5 records in e2e-forwarders, severity/facility kept, key removed")' || fail "syslog-ng records are not as sent"
# …and none of them in the default organization.
sql "$main_HTTP" "$DEFAULT_KEY" "SELECT count(*) AS n FROM logs WHERE app = 'e2e-syslog-ng'" |
  python3 -c 'import json,sys; n = json.load(sys.stdin)["rows"][0]["n"]; assert n == 0, n' || fail "syslog-ng records leaked into the default organization"

if [ -n "$RSYSLOGD" ] && [ -x "$RSYSLOGD" ]; then
  step "rsyslog with the configuration of docs/forwarders.md ($RSYSLOGD)"
  mkdir -p "$WORK/rsyslog/work"
  RS_CONF="$WORK/rsyslog/securenet.conf"
  doc_block rsyslog > "$RS_CONF"
  substitute "$RS_CONF" '"securenet.example"' '"127.0.0.1"'
  substitute "$RS_CONF" 'port="5514"' "port=\"${main_SYSLOG_TCP##*:}\""
  substitute "$RS_CONF" 'YOUR_SECURENET_API_KEY' "$ORG_KEY"
  {
    echo "global(workDirectory=\"$WORK/rsyslog/work\")"
    echo 'module(load="imuxsock" SysSock.Use="off")'
    echo "input(type=\"imuxsock\" Socket=\"$WORK/rsyslog/log.sock\")"
    echo "\$IncludeConfig $RS_CONF"
  } > "$WORK/rsyslog/rsyslog.conf"
  RS_MODULES=${RSYSLOG_MODULES:-}
  "$RSYSLOGD" -n -f "$WORK/rsyslog/rsyslog.conf" -i "$WORK/rsyslog/pid" ${RS_MODULES:+-M "$RS_MODULES"} > "$WORK/rsyslog/out" 2>&1 &
  pids+=($!)
  wait_for 10 "rsyslog's socket" test -S "$WORK/rsyslog/log.sock"
  for i in 1 2 3; do logger -u "$WORK/rsyslog/log.sock" -t e2e-rsyslog "forwarded by rsyslog $i"; done
  rs_arrived() {
    sql "$main_HTTP" "$ORG_KEY" "SELECT message FROM logs WHERE app = 'e2e-rsyslog' ORDER BY message" |
      python3 -c 'import json,sys; sys.exit(0 if [r["message"] for r in json.load(sys.stdin)["rows"]] == [f"forwarded by rsyslog {i}" for i in (1, 2, 3)] else 1)'
  }
  wait_for 30 "the 3 rsyslog messages in organization e2e-forwarders" rs_arrived
  echo "rsyslog: 3 records in e2e-forwarders"
else
  echo "(rsyslog block not run: no rsyslogd; set RSYSLOGD=/path/to/rsyslogd [RSYSLOG_MODULES=dir])"
fi

step "a Parquet write that fails: 503 to the client, securenet_sink_errors_total{sink=\"parquet\"}"
# A file where the sink needs the date directory makes exactly that write fail.
BLOCKER="$WORK/main/lake/logs/tenant_id=default/date=2001-01-01"
mkdir -p "$(dirname "$BLOCKER")"
: > "$BLOCKER"
echo '{"ts": "2001-01-01T00:00:00Z", "message": "cannot be stored"}' > "$WORK/blocked.ndjson"
status=$(post_ndjson "$main_HTTP" "$DEFAULT_KEY" "$WORK/blocked.ndjson")
[ "$status" = 503 ] || fail "a failed sink write answered $status, expected 503"
rm -f "$BLOCKER"

step "UDP overflow on the small budget: securenet_syslog_udp_dropped_total"
for i in $(seq 1 40); do logger -n 127.0.0.1 -P "${small_SYSLOG_UDP##*:}" -d -t e2e-flood "udp flood $i"; done
dropped() { [ "$(metric_value "$small_HTTP" securenet_syslog_udp_dropped_total)" != 0 ]; }
wait_for 10 "UDP drops on the small server" dropped

# ------------------------------------------------------------------ assertions
step "Prometheus sees it all"
wait_for 30 "http records"      promq value 'sum(securenet_ingest_records_total{job="securenet",input="http",outcome="accepted"})' '==' "$HTTP_ROWS"
wait_for 30 "parquet log rows"  promq value 'sum(securenet_sink_rows_total{job="securenet",sink="parquet",kind="logs"})' '>=' "$((HTTP_ROWS + 8))"
wait_for 30 "usage rows"        promq value 'sum(securenet_sink_rows_total{job="securenet",sink="parquet",kind="usage"})' '>' 0
wait_for 30 "anomaly rows"      promq value 'sum(securenet_sink_rows_total{job="securenet",sink="parquet",kind="anomalies"})' '>' 0
wait_for 30 "write latency"     promq value 'sum(securenet_sink_write_duration_seconds_count{job="securenet",sink="parquet"})' '>' 0
wait_for 30 "flushes"           promq value 'sum(securenet_ingest_batches_flushed_total{job="securenet"})' '>' 0
wait_for 30 "tcp syslog"        promq value 'sum(securenet_syslog_messages_total{job="securenet",listener="tcp",status="ok"})' '>=' 8
wait_for 30 "udp syslog"        promq value 'sum(securenet_ingest_records_total{job="securenet",input="syslog_udp",outcome="accepted"})' '>=' 1
wait_for 30 "bad key rejected"  promq value 'sum(securenet_syslog_rejected_total{job="securenet",listener="tcp",reason="bad_key"})' '==' 1
wait_for 30 "udp drops"         promq value 'sum(securenet_syslog_udp_dropped_total{job="securenet",listener="udp"})' '>' 0
wait_for 30 "sink errors"       promq value 'sum(securenet_sink_errors_total{job="securenet",sink="parquet"})' '==' 1
wait_for 30 "model trained"     promq value 'sum(securenet_detector_models_trained_total{job="securenet"})' '>=' 1
wait_for 30 "anomalies"         promq value 'sum(securenet_detector_anomalies_total{job="securenet"})' '>' 0
wait_for 30 "windows"           promq value 'sum(securenet_detector_windows_closed_total{job="securenet"})' '>' 0
wait_for 30 "API metering"      promq value 'sum(securenet_api_requests_recorded_total{job="securenet"})' '>' 0
wait_for 30 "gauges per server" promq value 'securenet_ingest_in_flight_bytes{job="securenet"}' '>=' 0 2
wait_for 30 "rules evaluated"   promq rules
wait_for 60 "alerts firing"     promq firing SecureNetSinkWriteErrors SecureNetSyslogUdpDrops

if [ -n "$DUMP_OUT" ]; then
  { curl -sf "http://$main_HTTP/metrics"; curl -sf "http://$small_HTTP/metrics"; } > "$DUMP_OUT"
  echo "metrics of both servers written to $DUMP_OUT"
fi

step "stopping"
trap - EXIT
cleanup
echo "prometheus_e2e: ok"
