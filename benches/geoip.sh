#!/usr/bin/env bash
# GeoIP enrichment on one core (benches/src/bin/geoip_bench.rs): ROWS log
# rows in 8,192-row batches through the pipeline's GeoIP stage with a
# country and an ASN database of NETWORKS /24 networks each (written by
# scripts/geoip_testdb.py with mmdb-writer; 200,000 networks make files of
# about the size of GeoLite2's), beside parsing every address (the floor) in
# the same run. Medians over RUNS.
#
#   benches/geoip.sh [ROWS] [RUNS] [NETWORKS]   # defaults 1000000 5 200000
# Results: benches/results/geoip-<date>.json (RESULTS=path overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/securenet/target}"
ROWS="${1:-1000000}"; RUNS="${2:-5}"; NETWORKS="${3:-200000}"
RESULTS="${RESULTS:-benches/results/geoip-$(date -u +%F).json}"
. benches/venv.sh
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p securenet-benches --bin geoip_bench
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$VENV/bin/python" scripts/geoip_testdb.py "$WORK" "$NETWORKS"
out=$("$CARGO_TARGET_DIR/release/geoip_bench" "$ROWS" "$RUNS" "$WORK")
echo "$out" > "$RESULTS"
python3 - "$out" "$(du -b "$WORK/country.mmdb" | cut -f1)" "$(du -b "$WORK/asn.mmdb" | cut -f1)" "$NETWORKS" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(f"{r['rows']} rows, {r['runs']} runs; databases of {int(sys.argv[4]):,} networks: country {int(sys.argv[2]):,} B, ASN {int(sys.argv[3]):,} B")
print("| addresses | parse floor rows/s | GeoIP rows/s (median) | ns/row | GeoIP / floor | first run rows/s | located | databases opened in |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for mix in ["pool_50000", "every_row_distinct"]:
    m = r[mix]
    print(f"| {mix} | {m['parse_floor_rows_per_s']:,.0f} | {m['geoip_rows_per_s']:,.0f} | {m['geoip_ns_per_row']:.0f} | {m['ratio_to_floor']:.3f} | {m['geoip_first_run_rows_per_s']:,.0f} | {m['rows_located']:,} | {m.get('load_ms', 0):,.0f} ms |")
PY
