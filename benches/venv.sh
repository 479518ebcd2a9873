# Sourced by the bench scripts that need Python (chaos, iforest, sql): sets
# VENV to the pinned bench venv (scripts/requirements-test.txt +
# requirements-bench.txt), creating it on first use. BENCH_VENV overrides.
REQS="scripts/requirements-test.txt scripts/requirements-bench.txt"
VENV="${BENCH_VENV:-$HOME/.cache/securenet/venv-bench-$(cat $REQS | sha256sum | cut -c1-12)}"
if [ ! -x "$VENV/bin/python" ]; then
  rm -rf "$VENV.tmp"
  python3 -m venv "$VENV.tmp"
  "$VENV.tmp/bin/pip" install -q --disable-pip-version-check -r scripts/requirements-test.txt -r scripts/requirements-bench.txt
  mv "$VENV.tmp" "$VENV"
fi
