#!/usr/bin/env bash
# Runs every test on this machine: installs and starts the real servers, then the whole cargo suite.
# Servers this script started are stopped again at the end; ones already running are left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install the Rust toolchain (https://rustup.rs) first" >&2; exit 1
fi
# Compiled dependencies are kept per machine, like the servers: a second clone compiles only
# planrun itself.
. scripts/cache.sh
# No test reaches an address outside 127.0.0.1: the AWS credential and region chains of planrun
# and of the servers skip the EC2 instance metadata service.
export AWS_EC2_METADATA_DISABLED=true
if ! scripts/services.sh status >/dev/null 2>&1; then
  trap 'scripts/services.sh down' EXIT
fi
# The servers' installs (pip downloads, the one-time Garage build) run beside the test build.
scripts/services.sh install &
installing=$!
cargo test --locked --no-run
wait "$installing"
scripts/services.sh up
# Servers kept from earlier runs (a dev machine's) hold what interrupted runs left behind, and a
# Milvus serving dozens of stale loaded collections slows every test after: those are dropped
# (a run still going keeps its own).
for server in 19530:root:Milvus 19540: 19550:root:Milvus; do
  port=${server%%:*} token=${server#*:}
  .venv/bin/python scripts/milvus_data.py sweep --uri "http://127.0.0.1:$port" --token "$token" >/dev/null \
    || echo "test.sh: could not drop stale test collections on 127.0.0.1:$port; going on" >&2
done
# Milvus on 2 cores is the bottleneck; a few test threads keep it responsive.
cargo test --locked -- --test-threads "${PLANRUN_TEST_THREADS:-4}" "$@"
