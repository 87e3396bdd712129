#!/usr/bin/env bash
# planrun's benchmark suite (issue 6): planrun against rclone on the same S3 servers, side by side.
# Usage: bench/run.sh [--smoke] [bench.py options: --only 1,2,5,6 --rounds N --objects N --json F]
# Needs the two Garage S3 servers of scripts/services.sh, s3 on 127.0.0.1:9000 and s3-b on
# 127.0.0.1:9100 (the second endpoint of benchmarks 2 and 5); starts them with
# `scripts/services.sh up s3 s3-b` when either is down. Installs rclone and GNU time when missing
# (`scripts/services.sh install-peers`).
# Set PLANRUN to an existing binary to skip the release build (the smoke test does).
# Results: a Markdown table on stdout (see docs/benchmarks.md for how to read it).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
log() { printf '[bench] %s\n' "$*" >&2; }

"$root/scripts/services.sh" install-peers

# The services live in the main checkout's git-ignored .venv; a worktree uses the one there.
venv="$root/.venv"
main_checkout=$(git -C "$root" worktree list --porcelain 2>/dev/null | awk '/^worktree /{print $2; exit}')
if [ ! -x "$venv/bin/python" ] && [ -n "$main_checkout" ] && [ -x "$main_checkout/.venv/bin/python" ]; then
  venv="$main_checkout/.venv"
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/9000) 2>/dev/null || ! (exec 3<>/dev/tcp/127.0.0.1/9100) 2>/dev/null; then
  log "no S3 server on 127.0.0.1:9000 or :9100: starting them with scripts/services.sh up s3 s3-b"
  "$root/scripts/services.sh" up s3 s3-b
  venv="$root/.venv"
fi
export BENCH_PYTHON="$venv/bin/python"
# For the version in the results: the Garage the services run.
# (.venv and .tools are the checkout's links into the per-machine cache.)
export BENCH_GARAGE="${BENCH_GARAGE:-$(dirname "$venv")/.tools/bin/garage}"

if [ -n "${PLANRUN:-}" ]; then
  # The smoke test passes the binary cargo built for it: no second (release) build.
  log "using PLANRUN=$PLANRUN"
  export PLANRUN_CHECKPOINT_BENCH="${PLANRUN_CHECKPOINT_BENCH:-}"
else
  log "building planrun (release)"
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin planrun --bench checkpoint >&2
  export PLANRUN="$CARGO_TARGET_DIR/release/planrun"
  # The checkpoint timing loop is a plain (harness = false) bench target: its newest build.
  PLANRUN_CHECKPOINT_BENCH=$(ls -t "$CARGO_TARGET_DIR"/release/deps/checkpoint-* 2>/dev/null \
    | grep -v '\.d$' | head -n1 || true)
  export PLANRUN_CHECKPOINT_BENCH
fi

exec "$BENCH_PYTHON" "$root/bench/bench.py" "$@"
