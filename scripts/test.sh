#!/usr/bin/env bash
# Runs every test on this machine: installs and starts the real servers, then the whole cargo suite.
# Servers this script started are stopped again at the end; ones already running are left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install the Rust toolchain (https://rustup.rs) first" >&2; exit 1
fi
if ! scripts/services.sh status >/dev/null 2>&1; then
  trap 'scripts/services.sh down' EXIT
fi
# The servers' installs (pip downloads, the one-time Garage build) run beside the test build.
scripts/services.sh install &
installing=$!
cargo test --locked --no-run
wait "$installing"
scripts/services.sh up
# Milvus on 2 cores is the bottleneck; a few test threads keep it responsive.
cargo test --locked -- --test-threads "${PLANRUN_TEST_THREADS:-4}" "$@"
