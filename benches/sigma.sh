#!/usr/bin/env bash
# Sigma rules in the stream: RULES generated rules of mixed forms over ROWS
# generated log rows, single thread (benches/src/bin/sigma_bench.rs), beside
# a scan of the same columns in the same run; then DuckDB running the same
# rules, converted by pySigma's DuckDB backend, over the same rows with one
# thread and with every core (benches/python/sigma_duckdb.py), failing if
# any rule's match count differs; and INDICATORS (10,000) threat-intel
# indicators alone and with the rules. Medians over RUNS.
#
#   benches/sigma.sh [ROWS] [RULES] [RUNS]      # defaults 1000000 100 5
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/securenet/target}"
ROWS="${1:-1000000}"; RULES="${2:-100}"; RUNS="${3:-5}"
. benches/venv.sh
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p securenet -p securenet-benches --bins
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
ours=$("$CARGO_TARGET_DIR/release/sigma_bench" "$ROWS" "$RULES" "$RUNS" "$WORK")
one=$("$VENV/bin/python" benches/python/sigma_duckdb.py "$WORK" "$RUNS" 1)
all=$("$VENV/bin/python" benches/python/sigma_duckdb.py "$WORK" "$RUNS" "$(nproc)")
python3 - "$ours" "$one" "$all" <<'PY'
import json, sys
ours, one, every = (json.loads(a) for a in sys.argv[1:4])
r = ours["sigma_rules"]["rows_per_s"]
print(f"{ours['rows']} rows, {ours['rules']} rules ({ours['rules_matching_something']} match something, {ours['rows_matched']} matches), compiled in {ours['compile_ms']} ms")
print(f"| engine | threads | rows/s | vs SecureNet |")
print(f"| --- | --- | --- | --- |")
print(f"| column scan (floor) | 1 | {ours['baseline_scan']['rows_per_s']:,.0f} | {ours['baseline_scan']['rows_per_s'] / r:.2f} |")
print(f"| SecureNet RuleSet | 1 | {r:,.0f} | 1.00 |")
i, both = ours["indicators"], ours["rules_and_indicators"]
print(f"| SecureNet indicators alone ({i['count']:,}; {i['rows_matched']:,} rows matched) | 1 | {i['rows_per_s']:,.0f} | {i['rows_per_s'] / r:.2f} |")
print(f"| SecureNet rules + indicators | 1 | {both['rows_per_s']:,.0f} | {both['rows_per_s'] / r:.2f} |")
print(f"| DuckDB (pySigma) | 1 | {one['rows_per_s']:,.0f} | {one['rows_per_s'] / r:.2f} |")
print(f"| DuckDB (pySigma) | {every['threads']} | {every['rows_per_s']:,.0f} | {every['rows_per_s'] / r:.2f} |")
print(json.dumps({"securenet": ours, "duckdb_1_thread": one, "duckdb_all_threads": every}))
PY
