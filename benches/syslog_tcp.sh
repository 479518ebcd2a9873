#!/usr/bin/env bash
# End-to-end TCP syslog -> Parquet in `securenet serve`, against syslog-ng
# (Debian's 3.38) receiving the same load into a file, in the same run.
#
#   benches/syslog_tcp.sh [RUNS] [SECONDS]
#
# Load: loggen -S -P -s 300 -r 100000000 -I SECONDS --active-connections 4
# (RFC 5424, octet-counted framing, 300-byte messages, as fast as the
# receiver reads). Both receivers are lossless: syslog-ng's log path uses
# flow-control (it stops reading when its file writer falls behind) and
# SecureNet pauses TCP reads when its pipeline is full. Targets alternate
# run by run; medians are reported. After each SecureNet run the script
# checks through SQL that every message loggen sent is in Parquet, and
# after each syslog-ng run that every message is in its file.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/securenet/target}"
RUNS="${1:-3}"
SECONDS_PER_RUN="${2:-20}"
CONNECTIONS="${CONNECTIONS:-4}"

command -v loggen >/dev/null && command -v syslog-ng >/dev/null || {
  echo "needs loggen and syslog-ng: apt-get install -y syslog-ng-core" >&2; exit 1; }
# Same package set as ingest_http.sh, so both scripts share one release build.
cargo build --release -q -p securenet -p securenet-benches --bins
BIN="$CARGO_TARGET_DIR/release/securenet"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for() { # file pattern
  for _ in $(seq 1 400); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "not ready: $1" >&2; cat "$1" >&2; exit 1
}

# loggen prints e.g. "average rate = 412345.67 msg/sec, count=8246913, ..."
load() { # port -> "rate count"
  set -o pipefail
  loggen -S -P -s 300 -r 100000000 -I "$SECONDS_PER_RUN" --active-connections "$CONNECTIONS" \
    127.0.0.1 "$1" 2>&1 | sed -n 's/.*average rate = \([0-9.]*\) msg\/sec, count=\([0-9]*\).*/\1 \2/p' | tail -n1
}

run_syslog_ng() {
  local port dir; port=$(free_port); dir="$WORK/sng-$1"; mkdir -p "$dir"
  cat > "$dir/syslog-ng.conf" <<EOF
@version: 3.38
options { use_dns(no); dns_cache(no); keep_hostname(yes); stats_freq(0); };
source s_net { syslog(transport("tcp") ip("127.0.0.1") port($port) max-connections(64) log-iw-size(40000)); };
destination d_file { file("$dir/messages.log"); };
log { source(s_net); destination(d_file); flags(flow-control); };
EOF
  syslog-ng -F -f "$dir/syslog-ng.conf" -R "$dir/persist" -p "$dir/pid" -c "$dir/ctl" \
    > "$dir/out.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  local up=0
  for _ in $(seq 1 200); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && { up=1; break; }; sleep 0.05; done
  [ "$up" = 1 ] || { echo "syslog-ng did not start:" >&2; cat "$dir/out.log" >&2; exit 1; }
  read -r rate count < <(load "$port")
  # Let the writer drain, then count what is on disk.
  local stored=0 prev=-1
  while [ "$stored" != "$prev" ]; do prev=$stored; sleep 1; stored=$(wc -l < "$dir/messages.log"); done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -f "$dir/messages.log"
  echo "$rate $count $stored"
}

run_securenet() {
  local port dir key="bench-key-0123456789abcdef"; port=$(free_port); dir="$WORK/sn-$1"; mkdir -p "$dir"
  SECURENET_DATA_DIR="$dir/data" SECURENET_HTTP__LISTEN=127.0.0.1:0 \
  SECURENET_CONTROL__DEFAULT_API_KEY="$key" RUST_LOG=warn \
  SECURENET_INGEST__SYSLOG="[{name=\"tcp\",protocol=\"tcp\",listen=\"127.0.0.1:$port\",default_tenant=\"default\"}]" \
    "$BIN" serve > "$dir/out.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  wait_for "$dir/out.log" "securenet ready http="
  local addr; addr=$(sed -n 's/.*securenet ready http=//p' "$dir/out.log" | head -n1)
  read -r rate count < <(load "$port")
  local stored=0
  for _ in $(seq 1 300); do
    stored=$(curl -s -H "X-API-Key: $key" -H 'content-type: application/json' \
      -d '{"sql":"SELECT count(*) AS n FROM logs"}' "http://$addr/api/sql" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0]["n"])')
    [ "$stored" -ge "$count" ] && break
    sleep 0.2
  done
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$dir/data"
  echo "$rate $count $stored"
}

SNG=(); SN=(); OK=1
for i in $(seq 1 "$RUNS"); do
  read -r r c s < <(run_syslog_ng "$i")
  echo "run $i syslog-ng: $r msg/s, sent $c, in file $s" >&2
  SNG+=("$r"); [ "$c" = "$s" ] || OK=0
  read -r r c s < <(run_securenet "$i")
  echo "run $i securenet: $r msg/s, sent $c, in Parquet $s" >&2
  SN+=("$r"); [ "$c" = "$s" ] || OK=0
done

python3 - "${SNG[*]}" "${SN[*]}" "$OK" "$CONNECTIONS" "$SECONDS_PER_RUN" <<'PY'
import statistics, sys
sng = [float(x) for x in sys.argv[1].split()]
sn = [float(x) for x in sys.argv[2].split()]
ok = sys.argv[3] == "1"
ms, mn = statistics.median(sng), statistics.median(sn)
print(f"loggen -S -P -s 300 -I {sys.argv[5]} --active-connections {sys.argv[4]}, {len(sn)} runs each")
print(f"median: securenet {mn:.0f} msg/s, syslog-ng {ms:.0f} msg/s; ratio {mn/ms:.2f}")
print("every sent message stored: " + ("yes" if ok else "NO"))
sys.exit(0 if ok else 1)
PY
