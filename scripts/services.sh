#!/usr/bin/env bash
# Starts and stops the real servers planrun's tests and demo talk to, all on loopback:
#   S3 (moto)        127.0.0.1:9000   buckets bucket-a, bucket-b
#   Milvus A 2.3.5   127.0.0.1:19530  data in bucket-a:files, auth on (root / Milvus), mgmt :9091
#   Milvus B 2.3.5   127.0.0.1:19540  data in bucket-b:files, auth off, mgmt :9092
#   Milvus Lite      127.0.0.1:19560  milvus-lite 3.2.2 (pure Python)
#   Milvus Lite 2.5  127.0.0.1:19570  milvus-lite 2.5.1 (the C++ core of Milvus 2.5; no GetVersion,
#                                     no databases)
# Usage: scripts/services.sh up|down|status|install [s3|milvus-a|milvus-b|lite|lite25 ...]
# Everything is installed into the git-ignored .venv (Lite 2.5 into .venv-lite25: the two
# milvus-lite versions cannot share one environment) and runs from .services/ (data and logs).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
dir="${PLANRUN_SERVICES_DIR:-$root/.services}"
py="$venv/bin/python"
venv25="$root/.venv-lite25"
all=(s3 milvus-a milvus-b lite lite25)

log() { printf '[services] %s\n' "$*" >&2; }

install() {
  if [ -x "$py" ] && "$py" -c 'import milvus, milvus_lite, pymilvus, moto, boto3' 2>/dev/null \
     && [ -x "$venv/bin/milvus-server" ]; then
    return
  fi
  log "installing milvus==2.3.5, milvus-lite, pymilvus, moto[server], boto3 into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "milvus==2.3.5" "milvus-lite==3.2.2" "pymilvus" "moto[server]" "boto3"
}

# The directory of Lite 2.5's server binary and the libraries it needs beside it.
lite25_lib() {
  "$venv25/bin/python" -c 'import milvus_lite, os; print(os.path.join(os.path.dirname(milvus_lite.__file__), "lib"))'
}

install_lite25() {
  if [ -x "$venv25/bin/python" ] && [ -x "$(lite25_lib 2>/dev/null)/milvus" ]; then
    return
  fi
  log "installing milvus-lite==2.5.1 into $venv25"
  python3 -m venv "$venv25"
  "$venv25/bin/pip" install --quiet --disable-pip-version-check "milvus-lite==2.5.1"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Starts a command in its own process group and records the group id: the Milvus launcher
# leaves its server child running when only the launcher is killed.
spawn() {
  local name=$1; shift
  mkdir -p "$dir/logs"
  rm -f "$dir/$name.pgid"
  # setsid forks when its caller leads a process group (job control), so `$!` may not be the
  # server: the new session's first process writes its own pid, which is the group id.
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$dir/$name.pgid" "$@" >"$dir/logs/$name.log" 2>&1 < /dev/null &
  local i
  for i in $(seq 50); do [ -s "$dir/$name.pgid" ] && return 0; sleep 0.1; done
  log "$name did not start; see $dir/logs/$name.log"
  return 1
}

running() {
  local f="$dir/$1.pgid"
  [ -f "$f" ] && kill -0 -- "-$(cat "$f")" 2>/dev/null
}

wait_for() { # name, seconds, check command...
  local name=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ! running "$name"; then
      log "$name exited during start-up; last lines of $dir/logs/$name.log:"
      tail -n 30 "$dir/logs/$name.log" >&2 || true
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "$name not healthy after ${secs}s; see $dir/logs/$name.log"
      return 1
    fi
    sleep 1
  done
}

milvus_healthy() { # port [user:password]
  "$py" - "$@" <<'EOF'
import sys
from pymilvus import MilvusClient
kw = {"token": sys.argv[2]} if len(sys.argv) > 2 else {}
c = MilvusClient(uri=f"http://127.0.0.1:{sys.argv[1]}", timeout=5, **kw)
c.list_collections()
EOF
}

make_buckets() {
  env -u AWS_CA_BUNDLE "$py" - <<'EOF'
import boto3
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:9000", region_name="us-east-1",
                  aws_access_key_id="minioadmin", aws_secret_access_key="minioadmin")
have = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
for b in ("bucket-a", "bucket-b"):
    if b not in have:
        s3.create_bucket(Bucket=b)
EOF
}

# moto keeps objects in memory: a newly started S3 server is empty.
s3_fresh=0

start_s3() {
  running s3 || { port_open 9000 && { log "port 9000 is taken by another process"; return 1; }; \
    spawn s3 "$venv/bin/moto_server" -H 127.0.0.1 -p 9000; s3_fresh=1; }
  wait_for s3 30 port_open 9000
  make_buckets
}

# A Milvus whose binlogs were in an earlier (now empty) S3 server keeps meta that points at
# missing objects, and retries reading them forever (a storm of 404s that loads the machine).
reset_if_stale() { # name
  if [ "$s3_fresh" = 1 ] && [ -d "$dir/$1" ]; then
    log "$1: the S3 server started empty, so its old meta is reset (rm -rf $dir/$1)"
    rm -rf "${dir:?}/$1"
  fi
}

milvus_common=(--extra-config common.storageType=minio
  --extra-config minio.address=127.0.0.1 --extra-config minio.port=9000
  --extra-config minio.rootPath=files)

start_milvus_a() {
  running milvus-a && return 0
  port_open 19530 && { log "port 19530 is taken by another process"; return 1; }
  reset_if_stale milvus-a
  mkdir -p "$dir/milvus-a"
  spawn milvus-a env -u AWS_CA_BUNDLE "$venv/bin/milvus-server" --data "$dir/milvus-a" \
    "${milvus_common[@]}" --extra-config minio.bucketName=bucket-a \
    --authorization-enabled true
}

start_milvus_b() {
  running milvus-b && return 0
  port_open 19540 && { log "port 19540 is taken by another process"; return 1; }
  reset_if_stale milvus-b
  mkdir -p "$dir/milvus-b/data"
  # The embedded etcd's peer port is fixed unless it gets a config file of its own.
  cat >"$dir/milvus-b/etcd.yaml" <<EOF
name: milvus_b
listen-peer-urls: http://127.0.0.1:2390
listen-client-urls: http://127.0.0.1:2389
advertise-client-urls: http://127.0.0.1:2389
initial-advertise-peer-urls: http://127.0.0.1:2390
initial-cluster: milvus_b=http://127.0.0.1:2390
data-dir: $dir/milvus-b/data/etcd.data
EOF
  spawn milvus-b env -u AWS_CA_BUNDLE METRICS_PORT=9092 ETCD_CONFIG_PATH="$dir/milvus-b/etcd.yaml" \
    "$venv/bin/milvus-server" --data "$dir/milvus-b" \
    "${milvus_common[@]}" --extra-config minio.bucketName=bucket-b \
    --proxy-port 19540 --proxy-internal-port 19539 --root-coord-port 53110 \
    --query-coord-port 19541 --query-node-port 21133 --index-coord-port 22940 \
    --index-node-port 21131 --data-coord-port 13343 --data-node-port 21134 --etcd-port 2389
}

start_lite() {
  running lite && return 0
  port_open 19560 && { log "port 19560 is taken by another process"; return 1; }
  mkdir -p "$dir/lite"
  spawn lite "$venv/bin/milvus-lite" server --data-dir "$dir/lite" --host 127.0.0.1 --port 19560
}

start_lite25() {
  running lite25 && return 0
  port_open 19570 && { log "port 19570 is taken by another process"; return 1; }
  mkdir -p "$dir/lite25"
  local lib; lib=$(lite25_lib)
  # The binary takes a db file (name: [A-Za-z0-9._-], at most 36 characters), an address and a
  # log level; its libraries sit beside it and are not on the loader's path.
  spawn lite25 bash -c 'cd "$0" && exec env LD_LIBRARY_PATH="$1" "$1/milvus" lite25.db 127.0.0.1:19570 ERROR' \
    "$dir/lite25" "$lib"
}

up() {
  local want=("$@"); [ ${#want[@]} -gt 0 ] || want=("${all[@]}")
  local w
  for w in "${want[@]}"; do
    case $w in s3|milvus-a|milvus-b|lite|lite25) ;; *) log "unknown service '$w' (known: ${all[*]})"; return 2;; esac
  done
  # The health checks use pymilvus from .venv, so it is installed whatever is started.
  install
  if printf '%s\n' "${want[@]}" | grep -qx lite25; then install_lite25; fi
  mkdir -p "$dir"
  # Milvus needs its object store first.
  if printf '%s\n' "${want[@]}" | grep -q milvus || printf '%s\n' "${want[@]}" | grep -qx s3; then
    start_s3
  fi
  # The launcher takes the first free HTTP port from 9091, so A starts (and binds 9091) before B.
  if printf '%s\n' "${want[@]}" | grep -qx milvus-a; then
    start_milvus_a
    wait_for milvus-a 60 port_open 9091 || true
  fi
  if printf '%s\n' "${want[@]}" | grep -qx milvus-b; then start_milvus_b; fi
  if printf '%s\n' "${want[@]}" | grep -qx lite; then start_lite; fi
  if printf '%s\n' "${want[@]}" | grep -qx lite25; then start_lite25; fi
  if printf '%s\n' "${want[@]}" | grep -qx milvus-a; then wait_for milvus-a 180 milvus_healthy 19530 root:Milvus; fi
  if printf '%s\n' "${want[@]}" | grep -qx milvus-b; then wait_for milvus-b 180 milvus_healthy 19540; fi
  if printf '%s\n' "${want[@]}" | grep -qx lite; then wait_for lite 60 milvus_healthy 19560; fi
  if printf '%s\n' "${want[@]}" | grep -qx lite25; then wait_for lite25 60 milvus_healthy 19570; fi
  status "${want[@]}"
}

stop_one() {
  local name=$1 f="$dir/$1.pgid"
  [ -f "$f" ] || return 0
  local pg; pg=$(cat "$f")
  if kill -0 -- "-$pg" 2>/dev/null; then
    kill -TERM -- "-$pg" 2>/dev/null || true
    for _ in 1 2 3 4 5; do kill -0 -- "-$pg" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$pg" 2>/dev/null || true
  fi
  rm -f "$f"
  log "stopped $name"
}

down() {
  local want=("$@"); [ ${#want[@]} -gt 0 ] || want=(lite25 lite milvus-b milvus-a s3)
  local w; for w in "${want[@]}"; do stop_one "$w"; done
}

status() {
  local want=("$@"); [ ${#want[@]} -gt 0 ] || want=("${all[@]}")
  local w bad=0
  for w in "${want[@]}"; do
    if running "$w"; then printf '%-9s running (pgid %s)\n' "$w" "$(cat "$dir/$w.pgid")"
    else printf '%-9s stopped\n' "$w"; bad=1; fi
  done
  return $bad
}

cmd=${1:-}; shift || true
case $cmd in
  up) up "$@" ;;
  down) down "$@" ;;
  status) status "$@" ;;
  install) install; install_lite25 ;;
  *) echo "usage: $0 up|down|status|install [s3|milvus-a|milvus-b|lite|lite25 ...]" >&2; exit 2 ;;
esac
