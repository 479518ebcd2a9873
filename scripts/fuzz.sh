#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets: syslog, framing, NDJSON/JSON,
# HEC, _bulk, Loki JSON and protobuf, OTLP, GELF, Fluent forward, nmap XML,
# scan reports, training uploads, bus envelopes, tokens) for SECONDS each, growing the corpus kept in
# fuzz/corpus/<target>/ and saving any crash to fuzz/regressions/<target>/,
# where unit tests replay it (ingest::fuzzing, detectors, schemas, control).
# Prints executions, corpus size and crashes per target.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      # default 60 s, every target
#
# cargo fuzz needs nightly compiler flags; the one toolchain here is
# stable, so RUSTC_BOOTSTRAP=1 enables them for this build only.
set -uo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-60}"
shift || true
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/securenet/fuzz-target}"
if [ "$#" -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz); fi

# Seeds: real inputs the tests already use, on the first run.
seed() { # target file...
  local dir="fuzz/corpus/$1"; shift
  [ -n "$(ls -A "$dir" 2>/dev/null)" ] && return 0
  mkdir -p "$dir"
  for f in "$@"; do cp "$f" "$dir/" 2>/dev/null || true; done
}
mkdir -p fuzz/corpus
python3 - <<'PY'
import json, os, hashlib
frames = [json.loads(l)["frame"] for l in open("tests/data/syslog/corpus.jsonl")]
for target in ("syslog", "syslog_stream"):
    d = f"fuzz/corpus/{target}"
    if os.path.isdir(d) and os.listdir(d):
        continue
    os.makedirs(d, exist_ok=True)
    for f in frames:
        data = (f"{len(f)} {f}" if target == "syslog_stream" else f).encode()
        open(f"{d}/{hashlib.sha1(data).hexdigest()}", "wb").write(data)
seeds = {
    "logs": ['{"message":"a","host":"h","ts":"2026-11-26T10:00:00Z"}\n{"msg":"b","level":"warn"}\n', '[{"message":"x"},{"log":"y"}]'],
    "json_record": ['{"message":"a","host":{"name":"h"},"severity":"err","pid":42,"ts":1764000000123}'],
    "hec": ['{"event":"x","time":1764000000.5,"host":"h","fields":{"a":"b"}}{"event":{"message":"y"}}'],
    "bulk": ['{"index":{"_index":"logs","_id":"1"}}\n{"message":"a"}\n{"create":{}}\n{"message":"b"}\n'],
    "loki": ['{"streams":[{"stream":{"job":"x"},"values":[["1764000000000000000","line",{"k":"v"}]]}]}'],
    "nmap": ['<?xml version="1.0"?><nmaprun scanner="nmap" start="1764000000"><host><status state="up"/><address addr="10.0.0.1" addrtype="ipv4"/><ports><port protocol="tcp" portid="22"><state state="open"/><service name="ssh" product="OpenSSH"/><script id="vulners" output="CVE-2023-48795 5.9"/></port></ports></host><runstats><finished time="1764000100"/></runstats></nmaprun>'],
    "scan_report": ['{"scan_id":"s","scanner":"x","hosts":[{"ip":"10.0.0.1","status":"up","findings":[{"port":22,"title":"t","cvss":7.5}]}]}', '{"devices":[{"ip":"10.0.0.2","mac":"aa:bb:cc:00:11:22"}]}'],
    "training_upload": ['a,b,label\n1,2,x\n3,4,y\n', '[{"a":1,"b":2},{"a":3,"b":4}]'],
    "jwt": ['eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyOjEiLCJvcmciOiJkZWZhdWx0In0.c2ln', 'sn_0123456789abcdef_00'],
    "envelope": ['\x00ARROW1'],
}
def field(number, payload):
    """A length-delimited protobuf field (payload under 128 bytes)."""
    return bytes([number << 3 | 2, len(payload)]) + payload
entry = field(1, bytes([8, 1])) + field(2, b"line")
push = field(1, field(1, b'{job="x"}') + field(2, entry))
message_mode = bytes([0x93, 0xA3]) + b"tag" + bytes([0xCE, 0x69, 0x24, 0x1A, 0x00, 0x81, 0xA7]) + b"message" + bytes([0xA1]) + b"m"
seeds["otlp"] = ['{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"x"}}]},"scopeLogs":[{"logRecords":[{"timeUnixNano":"1764000000000000000","severityNumber":9,"body":{"stringValue":"m"},"attributes":[{"key":"a","value":{"intValue":"1"}}]}]}]}]}']
seeds["gelf"] = ['{"version":"1.1","host":"h","short_message":"m","level":3,"_securenet_key":"k","_a":1}']
binary = {"loki_protobuf": [push], "fluent": [message_mode]}
for target, items in binary.items():
    d = f"fuzz/corpus/{target}"
    if os.path.isdir(d) and os.listdir(d):
        continue
    os.makedirs(d, exist_ok=True)
    for data in items:
        open(f"{d}/{hashlib.sha1(data).hexdigest()}", "wb").write(data)
for target, items in seeds.items():
    d = f"fuzz/corpus/{target}"
    if os.path.isdir(d) and os.listdir(d):
        continue
    os.makedirs(d, exist_ok=True)
    for s in items:
        data = s.encode()
        open(f"{d}/{hashlib.sha1(data).hexdigest()}", "wb").write(data)
PY

# crashes: found by this run; kept: every input in fuzz/regressions/<target>/
# (earlier findings, fixed and replayed by the unit tests).
printf '%-16s %14s %8s %8s %6s\n' target executions corpus crashes kept > fuzz/last-run.txt
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/regressions/$t"
  log="$(mktemp)"
  before=$(ls "fuzz/regressions/$t" | wc -l)
  cargo fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" -- \
    -max_total_time="$SECS" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="fuzz/regressions/$t/" -print_final_stats=1 > "$log" 2>&1
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  kept=$(ls "fuzz/regressions/$t" | wc -l)
  crashes=$((kept - before))
  # Keep the corpus small enough for the repository.
  cargo fuzz cmin --fuzz-dir fuzz "$t" "fuzz/corpus/$t" > /dev/null 2>&1 || true
  corpus=$(ls "fuzz/corpus/$t" | wc -l)
  printf '%-16s %14s %8s %8s %6s\n' "$t" "${runs:-?}" "$corpus" "$crashes" "$kept" | tee -a fuzz/last-run.txt
  # The panic message and the first frames, for the unit test to be written.
  if [ "$crashes" -gt 0 ]; then grep -m1 -A25 "panicked at\|ERROR: AddressSanitizer\|ERROR: libFuzzer" "$log" > "fuzz/regressions/$t.crash-log"; fi
  rm -f "$log"
done
cat fuzz/last-run.txt
