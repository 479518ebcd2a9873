#!/usr/bin/env bash
# Property-based API testing: schemathesis (PyPI) generates requests from
# GET /api/openapi.json of a live `securenet serve` and checks that no
# answer is a 5xx and every answer conforms to the document (status codes,
# media types, JSON schemas).
#
# Usage: scripts/schemathesis.sh SECURENET_BIN PYTHON_VENV [MAX_EXAMPLES]
# (run through the venv's python: test.sh builds venvs under a temporary
# name, so their console-script shebangs point elsewhere)
set -euo pipefail
BIN=$1 VENV=$2 EXAMPLES=${3:-25}
WORK=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT

KEY="schemathesis-default-organization-key-01"
env -i PATH="$PATH" HOME="$HOME" RUST_LOG=warn \
  SECURENET_DATA_DIR="$WORK/data" \
  SECURENET_HTTP__LISTEN=127.0.0.1:0 \
  SECURENET_CONTROL__DEFAULT_API_KEY="$KEY" \
  SECURENET_INGEST__SYSLOG='[]' \
  SECURENET_API__RATE_LIMIT_PER_SEC=100000 \
  SECURENET_API__RATE_LIMIT_BURST=100000 \
  SECURENET_API__STRIPE_WEBHOOK_SECRET=whsec_schemathesis \
  SECURENET_API__PLATFORM_ADMIN_TOKEN=schemathesis-platform-admin-token-000001 \
  "$BIN" serve > "$WORK/serve.out" 2> "$WORK/serve.err" &
pid=$!
for _ in $(seq 1 300); do
  grep -q '^securenet ready http=' "$WORK/serve.out" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$WORK/serve.err" >&2; exit 1; }
  sleep 0.1
done
HTTP=$(sed -n 's/^securenet ready http=//p' "$WORK/serve.out")
[ -n "$HTTP" ] || { echo "securenet serve did not start" >&2; cat "$WORK/serve.err" >&2; exit 1; }
echo "schemathesis against http://$HTTP/api/openapi.json ($EXAMPLES examples per operation)"
status=0
# From the work directory: schemathesis keeps a cache (.schemathesis/) in
# its working directory.
(cd "$WORK" && "$VENV/bin/python" -m schemathesis.cli run "http://$HTTP/api/openapi.json" \
  --header "Authorization: Bearer $KEY" --header "X-API-Key: $KEY" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$EXAMPLES" --seed 42 --workers 1 --no-color ${SCHEMATHESIS_ARGS:-}) || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- server log (tail)" >&2; tail -30 "$WORK/serve.err" >&2
fi
exit "$status"
