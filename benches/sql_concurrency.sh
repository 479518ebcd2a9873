#!/usr/bin/env bash
# Analyst SQL under concurrency: is one organization's heavy work kept from
# the others? Four organizations, CLIENTS clients each, every client
# sending its next `POST /api/sql` as soon as the last one answered, for
# SECONDS per phase:
#
#   mix          all four organizations run the light query mix
#   light alone  three of them run it, the fourth is idle
#   with heavy   the same three, while the fourth runs heavy queries
#                (a high-cardinality GROUP BY sorted, a join of every log
#                with every finding, a regex over every message)
#
# Reported per organization: p50/p99 of answered queries, queries/s,
# refusals (429 when its queue is full); and each light organization's p99
# with the heavy one against alone (the goal: ≤ 2). The queries are LIGHT
# and HEAVY in benches/python/sql_bench.py.
#
#   benches/sql_concurrency.sh [SECONDS] [CLIENTS] [ROWS]   # defaults 30 4 10000000
#
# Data: the lake benches/sql.sh caches for ROWS rows (run it first), its
# one tenant's objects hard-linked under four organizations. The server is
# `securenet query-api` with the default [api.sql] limits unless
# SECURENET_API__SQL__* says otherwise; the organizations are on the
# business plan, whose SQL limits are [api.sql]'s. NO_BUILD=1 and
# BENCH_VENV as in benches/sql.sh; BASELINE_BIN=DIR runs the same phases
# first against the `securenet` in DIR (an earlier build), same lake, same
# command.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/securenet/target}"
SECONDS_PER_PHASE="${1:-30}"
CLIENTS="${2:-4}"
ROWS="${3:-10000000}"
for v in $(compgen -e | grep '^SECURENET_' | grep -v '^SECURENET_API__SQL__' || true); do unset "$v"; done

# The lake benches/sql.sh caches (its seed and layout version).
CACHE="$HOME/.cache/securenet/sqlbench/rows-$ROWS-seed42-v3"
[ -f "$CACHE/loaded.json" ] || { echo "no cached lake at $CACHE: run benches/sql.sh $ROWS first" >&2; exit 1; }
. benches/venv.sh
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p securenet -p securenet-benches --bins
BIN="$CARGO_TARGET_DIR/release"

# Beside the cache, so the hard links stay on one filesystem.
mkdir -p "$HOME/.cache/securenet/tmp"
WORK="$(mktemp -d "$HOME/.cache/securenet/tmp/sqlconc.XXXXXX")"
PID=""
cleanup() {
  [ -z "$PID" ] || { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

TENANTS=(org1 org2 org3 org4)
for kind_dir in "$CACHE"/lake/*/; do
  kind=$(basename "$kind_dir")
  [ -d "$kind_dir/tenant_id=bench" ] || continue
  for t in "${TENANTS[@]}"; do
    mkdir -p "$WORK/lake/$kind"
    cp -al "$kind_dir/tenant_id=bench" "$WORK/lake/$kind/tenant_id=$t"
  done
done
cp "$CACHE"/meta.db* "$WORK/"
printf '%s\n' "data_dir = \"$WORK\"" '[http]' 'listen = "127.0.0.1:0"' '[log]' 'level = "warn"' \
  '[control]' "database = \"$WORK/meta.db\"" '[pipeline]' "lake_dir = \"$WORK/lake\"" > "$WORK/query.toml"
export SECURENET_CONFIG="$WORK/query.toml"
KEYS="{"
for t in "${TENANTS[@]}"; do
  "$BIN/securenet" orgs create --org "$t" --name "$t" --owner-email "sec@$t.test" --plan business >/dev/null
  k=$("$BIN/securenet" keys create --org "$t" --name conc --role viewer 2>/dev/null)
  KEYS="$KEYS\"$t\": \"$k\","
done
KEYS="${KEYS%,}}"
"$BIN/securenet" config | sed -n '/^\[api.sql\]/,/^$/p' >&2

# Runs the phases against `securenet query-api` from DIR, writing OUT.
measure() {
  local dir="$1" out="$2"
  # Emptied before the start (not by the background redirection): the
  # previous pass's ready line must not be read as this one's.
  : > "$WORK/query.out"
  "$dir/securenet" query-api > "$WORK/query.out" 2> "$WORK/query.err" &
  PID=$!
  for _ in $(seq 1 600); do grep -q "securenet ready http=" "$WORK/query.out" 2>/dev/null && break; sleep 0.05; done
  ADDR=$(sed -n 's/^securenet ready http=//p' "$WORK/query.out" | head -n1)
  [ -n "$ADDR" ] || { echo "query-api not ready" >&2; tail -20 "$WORK/query.err" >&2; exit 1; }
  echo "== $dir/securenet: $SECONDS_PER_PHASE s per phase, $CLIENTS clients per organization, at $ADDR" >&2
  "$VENV/bin/python" benches/python/sql_bench.py concurrency "http://$ADDR" "$KEYS" "$SECONDS_PER_PHASE" "$CLIENTS" \
    > "$out"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
}

if [ -n "${BASELINE_BIN:-}" ]; then
  measure "$BASELINE_BIN" "$WORK/baseline.json"
fi
measure "$BIN" "$WORK/result.json"
python3 - "$WORK/result.json" "${BASELINE_BIN:+$WORK/baseline.json}" <<'PY'
import json, sys
def table(r, title):
    print(f"\n{title}: {r['clients_per_tenant']} clients per organization, {r['seconds']} s per phase; heavy: {r['heavy_tenant']}\n")
    print("| phase | organization | answered | refused | p50 ms | p99 ms | queries/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for phase, orgs in r["phases"].items():
        for org, s in orgs.items():
            print(f"| {phase} | {org} | {s['ok']} | {s['refused']} {s['statuses'] or ''} | {s['p50_ms']} | {s['p99_ms']} | {s['qps']} |")
    print()
    print("p99 with the heavy organization / p99 alone:", r["p99_with_heavy_vs_alone"])
r = json.load(open(sys.argv[1]))
out = {"current": r}
if len(sys.argv) > 2 and sys.argv[2]:
    b = json.load(open(sys.argv[2]))
    table(b, "baseline (BASELINE_BIN)")
    out["baseline"] = b
table(r, "this build")
print()
print(json.dumps(out))
PY
