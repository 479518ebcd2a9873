#!/usr/bin/env bash
# The whole test suite: formatting, unit tests, and the end-to-end tests that
# drive the real `securenet` binary. Installs and starts whatever external
# service a suite needs, only when missing, and stops everything it started.
#
# Usage: ./scripts/test.sh            (from anywhere; needs only a Rust toolchain)
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds live outside the clone so CI runs on fresh clones reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/securenet/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

started=()
cleanup() {
  for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --features securenet/e2e -- -D warnings

step "unit and end-to-end tests"
cargo test --workspace --features securenet/e2e
