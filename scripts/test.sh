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

# Debian packages the end-to-end tests drive as real clients. Installed only
# when the command is missing; needs root or passwordless sudo.
apt_updated=0
need() { # need <command> <debian package>
  command -v "$1" >/dev/null 2>&1 && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  if [ "$apt_updated" -eq 0 ]; then
    $sudo apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$2" >/dev/null
  command -v "$1" >/dev/null 2>&1 || { echo "could not install $2 (for $1)" >&2; exit 1; }
}

step "tools"
need curl curl
need openssl openssl
need logger bsdutils
need loggen syslog-ng-core
need nmap nmap

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --features securenet/e2e -- -D warnings

step "unit and end-to-end tests"
cargo test --workspace --features securenet/e2e
