#!/usr/bin/env bash
# The seed scenario end to end on this machine: starts the local servers, seeds collection `coll`
# on Milvus A, previews and applies plans/migrate.toml (backup → copy → restore as `coll_bak` on
# Milvus B), then shows what `coll_bak` holds. Safe to run again: it resets the demo's own data.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/cache.sh
py=.venv/bin/python
data() { "$py" scripts/milvus_data.py "$@"; }

scripts/services.sh up
echo "== building planrun"
cargo build --locked --quiet
bin="$CARGO_TARGET_DIR/debug/planrun"

echo "== resetting the demo's collections, backups and run state"
data drop coll >/dev/null
data drop --uri http://127.0.0.1:19540 --token "" coll_bak >/dev/null
data s3-clean --bucket bucket-a --prefix backup/my_backup/ >/dev/null
data s3-clean --bucket bucket-b --prefix backup/my_backup/ >/dev/null
rm -rf plans/.planrun

echo "== seeding collection coll on Milvus A (127.0.0.1:19530)"
data seed --collection coll --rows 3000 --partitions 3 --segments 2

echo "== planrun plan plans/migrate.toml   (dry run: changes nothing)"
"$bin" plan plans/migrate.toml

echo "== planrun apply --yes plans/migrate.toml"
"$bin" apply --yes plans/migrate.toml

echo "== coll_bak on Milvus B (127.0.0.1:19540): first rows"
data dump --uri http://127.0.0.1:19540 --token "" --collection coll_bak --limit 5
echo "== coll (Milvus A) against coll_bak (Milvus B), row by row"
data compare --collection coll --target-collection coll_bak
echo
echo "Demo done. Stop the servers with: scripts/services.sh down"
