#!/usr/bin/env bash
# Starts and stops the real servers planrun's tests and demo talk to, all on loopback:
#   S3 (Garage)      127.0.0.1:9000   buckets bucket-a, bucket-b; keys enforced (see below)
#   S3 B (Garage)    127.0.0.1:9100   a second, separate S3 server with the same buckets and demo key
#   Milvus A 2.3.5   127.0.0.1:19530  data in bucket-a:files, auth on (root / Milvus), mgmt :9091
#   Milvus B 2.3.5   127.0.0.1:19540  data in bucket-b:files, auth off, mgmt :9092
#   Milvus Q 2.3.5   127.0.0.1:19550  data in bucket-b:files-q, auth on (root / Milvus), its rate
#                                     limits switched on and set low (quotaAndLimits: 2 queries/s),
#                                     mgmt :9093
#   Milvus Lite      127.0.0.1:19560  milvus-lite 3.2.2 (pure Python)
#   Milvus Lite 2.5  127.0.0.1:19570  milvus-lite 2.5.1 (the C++ core of Milvus 2.5; no GetVersion,
#                                     no databases)
# Usage: scripts/services.sh up|down|status|install|install-peers [s3|s3-b|milvus-a|milvus-b|milvus-q|lite|lite25 ...]
# What the servers run from is installed once per machine into a per-user cache (PLANRUN_CACHE,
# default ~/.cache/planrun) and shared by every clone: the Python servers into a venv named after
# the hash of its pinned requirements (scripts/requirements.txt; Lite 2.5 into one of its own from
# scripts/requirements-lite25.txt: the two milvus-lite versions cannot share one environment), and
# Garage into garage-<version> (built once by cargo, 10-15 min on 2 cores). A changed pin or
# version installs beside the old one. The clone links them as its git-ignored .venv,
# .venv-lite25 and .tools; everything runs from .services/ (data and logs).
#
# S3 keys (local test credentials, not secrets of any real system):
#   demo    GK706c616e72756e2d64656d6f  read/write/owner on bucket-a and bucket-b (both servers);
#           Milvus A and B store their binlogs with it; the example plans default to it
#   only-a  GK6f6e6c792d612d6b65792d31  read/write on bucket-a only (server 9000)
#   only-b  GK6f6e6c792d622d6b65792d31  read/write on bucket-b only (server 9000)
#   planted GK706c616e7465642d6b65792d  read/write on bucket-b (server 9000): tests/secrets.rs
#           plants it and checks that it never shows
# Each secret is below, beside its key id.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir="${PLANRUN_SERVICES_DIR:-$root/.services}"
. "$root/scripts/cache.sh"
pins="$root/scripts/requirements.txt"
pins25="$root/scripts/requirements-lite25.txt"
hash_of() { sha256sum "$1" | cut -c1-12; }
venv="$cache/venv-$(hash_of "$pins")"
py="$venv/bin/python"
venv25="$cache/venv-lite25-$(hash_of "$pins25")"
garage_release=2.5.0
tools="$cache/garage-$garage_release"
garage="$tools/bin/garage"
all=(s3 s3-b milvus-a milvus-b milvus-q lite lite25)

demo_key=GK706c616e72756e2d64656d6f
demo_secret=706c616e72756e2d64656d6f2d7365637265742d6b65792d6e6f742d7265616c
only_a_key=GK6f6e6c792d612d6b65792d31
only_a_secret=6f6e6c792d612d7365637265742d6b65792d6e6f742d7265616c2d2d2d2d2d2d
only_b_key=GK6f6e6c792d622d6b65792d31
only_b_secret=6f6e6c792d622d7365637265742d6b65792d6e6f742d7265616c2d2d2d2d2d2d
planted_key=GK706c616e7465642d6b65792d
planted_secret=706c616e7465642d7365637265742d6e657665722d746f2d62652d73686f776e

log() { printf '[services] %s\n' "$*" >&2; }

# Nothing here leaves loopback. Milvus's C++ storage client (the AWS C++ SDK) otherwise asks the
# EC2 instance metadata service, a link-local address, for its region when it starts.
export AWS_EC2_METADATA_DISABLED=true

# One install at a time per cache entry (clones may share the machine), and an entry counts only
# once it is complete: an install that was killed half way is removed and done again.
cached() { # dir, command that fills it...
  local target=$1; shift
  mkdir -p "$cache"
  (
    flock 9
    [ -f "$target/.complete" ] && exit 0
    rm -rf "$target"
    "$@" || { rm -rf "$target"; exit 1; }
    touch "$target/.complete"
  ) 9>"$target.lock"
}

# The clone's names for the cache entries (tests, the demo and the benchmarks use them).
link() {
  # A clone set up before the cache had real directories there.
  if [ -d "$root/$2" ] && [ ! -L "$root/$2" ]; then rm -rf "${root:?}/$2"; fi
  ln -sfn "$1" "$root/$2"
}

fill_venv() { # dir requirements
  python3 -m venv "$1" && "$1/bin/pip" install --quiet --disable-pip-version-check -r "$2"
}

install() {
  log_once "$venv" "installing milvus==2.3.5, milvus-lite 3.2.2, pymilvus and boto3 (pinned) into $venv"
  cached "$venv" fill_venv "$venv" "$pins"
  link "$venv" .venv
}

install_lite25() {
  log_once "$venv25" "installing milvus-lite==2.5.1 into $venv25"
  cached "$venv25" fill_venv "$venv25" "$pins25"
  link "$venv25" .venv-lite25
}

# Garage with only what a single local node needs (sqlite metadata, bundled C libraries):
# leaving out LMDB, metrics and K2V shortens the build. cargo installs into a scratch root, which
# becomes the entry only when the build succeeded.
fill_garage() {
  if ! command -v cargo >/dev/null; then
    log "cargo not found: Garage is built with it; install the Rust toolchain (https://rustup.rs)"
    return 1
  fi
  rm -rf "$tools.tmp"
  cargo install --quiet garage --locked --version "$garage_release" --no-default-features \
    --features bundled-libs,sqlite --root "$tools.tmp" && mv "$tools.tmp" "$tools"
}

install_garage() {
  log_once "$tools" "building Garage $garage_release into $tools (once per machine; 10-15 minutes on 2 cores)"
  cached "$tools" fill_garage
  link "$tools" .tools
}

log_once() { [ -f "$1/.complete" ] || log "$2"; }

# The benchmarks' peer (rclone) and the GNU time they measure memory with, from Debian's packages.
install_peers() {
  command -v rclone >/dev/null && [ -x /usr/bin/time ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "rclone and GNU time are needed by the benchmarks: install the packages rclone and time"
    return 1
  fi
  log "installing rclone and GNU time (apt-get)"
  local out; out=$(mktemp)
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone time; } \
    >"$out" 2>&1 || { tail -n 20 "$out" >&2; rm -f "$out"; return 1; }
  rm -f "$out"
}

# The directory of Lite 2.5's server binary and the libraries it needs beside it.
lite25_lib() {
  "$venv25/bin/python" -c 'import milvus_lite, os; print(os.path.join(os.path.dirname(milvus_lite.__file__), "lib"))'
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

# Set when the S3 server Milvus uses starts without its data (first start, or .services wiped).
s3_fresh=0

garage_cfg() { # name s3-port rpc-port admin-port
  local d="$dir/$1"
  mkdir -p "$d"
  cat >"$d/garage.toml" <<EOF
metadata_dir = "$d/meta"
data_dir = "$d/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$3"
rpc_public_addr = "127.0.0.1:$3"
rpc_secret = "$(printf '%064d' "$3")"
[s3_api]
s3_region = "us-east-1"
api_bind_addr = "127.0.0.1:$2"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$4"
admin_token = "planrun-local-admin-$1"
EOF
}

# What garage_setup gives a node; a node set up by an older version of this script is set up again.
garage_version="keys-2"

# A node's first start: give it the whole (one-node) layout, the keys and the buckets. Steps
# already done (a node set up by an older version) fail harmlessly; the checks at the end count.
garage_setup() { # name
  local cfg="$dir/$1/garage.toml" node b layout
  g() { "$garage" -c "$cfg" "$@" >/dev/null 2>&1 || true; }
  wait_for "$1" 30 "$garage" -c "$cfg" status
  node=$("$garage" -c "$cfg" node id -q 2>/dev/null); node=${node%%@*}
  layout=$("$garage" -c "$cfg" layout show 2>/dev/null || true)
  if ! grep -q "^${node:0:16} " <<<"$layout"; then
    "$garage" -c "$cfg" layout assign -z dc1 -c 10G "$node" >/dev/null
    "$garage" -c "$cfg" layout apply --version 1 >/dev/null
  fi
  g key import --yes "$demo_key" "$demo_secret" -n demo
  for b in bucket-a bucket-b; do
    g bucket create "$b"
    g bucket allow --read --write --owner "$b" --key demo
  done
  if [ "$1" = s3 ]; then
    g key import --yes "$only_a_key" "$only_a_secret" -n only-a
    g key import --yes "$only_b_key" "$only_b_secret" -n only-b
    g key import --yes "$planted_key" "$planted_secret" -n planted
    g bucket allow --read --write bucket-a --key only-a
    g bucket allow --read --write bucket-b --key only-b
    g bucket allow --read --write bucket-b --key planted
  fi
  "$garage" -c "$cfg" key info demo >/dev/null && "$garage" -c "$cfg" bucket info bucket-b >/dev/null \
    || { log "$1: setting up Garage failed; see $dir/logs/$1.log"; return 1; }
  echo "$garage_version" >"$dir/$1/configured"
}

start_garage() { # name s3-port rpc-port admin-port
  local name=$1 p
  if ! running "$name"; then
    for p in "$2" "$3" "$4"; do
      port_open "$p" && { log "port $p is taken by another process"; return 1; }
    done
    if [ ! -f "$dir/$name/configured" ]; then
      rm -rf "${dir:?}/$name"
      [ "$name" = s3 ] && s3_fresh=1
    fi
    garage_cfg "$@"
    spawn "$name" "$garage" -c "$dir/$name/garage.toml" server
  fi
  wait_for "$name" 30 port_open "$2"
  [ "$(cat "$dir/$name/configured" 2>/dev/null)" = "$garage_version" ] || garage_setup "$name"
}

start_s3() { start_garage s3 9000 3901 3903; }
start_s3_b() { start_garage s3-b 9100 3911 3913; }

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
  --extra-config minio.accessKeyID="$demo_key" --extra-config minio.secretAccessKey="$demo_secret"
  --extra-config minio.rootPath=files)
# Each component registers the address it is called at; left empty, that is the machine's first
# network address, and the server's calls to itself would leave loopback.
for role in rootCoord proxy queryCoord queryNode indexNode dataCoord dataNode; do
  milvus_common+=(--extra-config "$role.ip=127.0.0.1")
done

start_milvus_a() {
  running milvus-a && return 0
  port_open 19530 && { log "port 19530 is taken by another process"; return 1; }
  reset_if_stale milvus-a
  mkdir -p "$dir/milvus-a"
  spawn milvus-a env -u AWS_CA_BUNDLE "$venv/bin/milvus-server" --data "$dir/milvus-a" \
    "${milvus_common[@]}" --extra-config minio.bucketName=bucket-a \
    --authorization-enabled true
}

# A Milvus beside A on the same host: every port moved by 10 x `shift` (B: 1, Q: 2), the HTTP port
# 9091 + shift, its binlogs in bucket-b under `root`; more arguments go to the launcher.
start_neighbour() { # name shift root extra...
  local name=$1 k=$2 root=$3; shift 3
  local p=$((19530 + 10 * k)) e=$((2379 + 10 * k))
  running "$name" && return 0
  port_open "$p" && { log "port $p is taken by another process"; return 1; }
  reset_if_stale "$name"
  # After a crash (a test kills Q) its ports linger in TIME_WAIT for up to a minute, and the
  # launcher would move each to the next free one, where nobody looks for it: wait them out.
  local ports=("$p" $((p - 1)) $((p + 1)) $((53100 + 10 * k)) $((21123 + 10 * k)) \
    $((22930 + 10 * k)) $((21121 + 10 * k)) $((13333 + 10 * k)) $((21124 + 10 * k)) \
    "$e" $((e + 1)) $((9091 + k)))
  local port deadline=$((SECONDS + 120))
  for port in "${ports[@]}"; do
    while [ -n "$(ss -Htan "sport = :$port" 2>/dev/null)" ] && [ $SECONDS -lt $deadline ]; do
      sleep 1
    done
  done
  mkdir -p "$dir/$name/data"
  # The embedded etcd's peer port is fixed unless it gets a config file of its own.
  cat >"$dir/$name/etcd.yaml" <<EOF
name: ${name/-/_}
listen-peer-urls: http://127.0.0.1:$((e + 1))
listen-client-urls: http://127.0.0.1:$e
advertise-client-urls: http://127.0.0.1:$e
initial-advertise-peer-urls: http://127.0.0.1:$((e + 1))
initial-cluster: ${name/-/_}=http://127.0.0.1:$((e + 1))
data-dir: $dir/$name/data/etcd.data
EOF
  spawn "$name" env -u AWS_CA_BUNDLE METRICS_PORT=$((9091 + k)) ETCD_CONFIG_PATH="$dir/$name/etcd.yaml" \
    "$venv/bin/milvus-server" --data "$dir/$name" \
    "${milvus_common[@]}" --extra-config minio.bucketName=bucket-b --extra-config minio.rootPath="$root" \
    --proxy-port "$p" --proxy-internal-port $((p - 1)) --root-coord-port $((53100 + 10 * k)) \
    --query-coord-port $((p + 1)) --query-node-port $((21123 + 10 * k)) \
    --index-coord-port $((22930 + 10 * k)) --index-node-port $((21121 + 10 * k)) \
    --data-coord-port $((13333 + 10 * k)) --data-node-port $((21124 + 10 * k)) --etcd-port "$e" "$@"
}

start_milvus_b() { start_neighbour milvus-b 1 files; }

# A third instance with its quotas on and low, for the tests of back-off under rate limits; a
# test kills it during imports, and an import it was running then blocks its import queue until
# it expires (15 min by default, 2 min here).
# Queries only: 2 per second, which a rows backup of a few partitions exceeds at once. (Insert
# limits are in MB/s with a burst of one second's worth: an insert larger than that would be
# refused for ever, which tests nothing of planrun.)
start_milvus_q() {
  start_neighbour milvus-q 2 files-q --authorization-enabled true \
    --extra-config quotaAndLimits.enabled=true \
    --extra-config quotaAndLimits.quotaCenterCollectInterval=1 \
    --extra-config quotaAndLimits.dql.enabled=true \
    --extra-config quotaAndLimits.dql.queryRate.max=2 \
    --extra-config rootCoord.importTaskExpiration=120
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

# Waits for a Milvus to answer; one that did not is started once more. Seen here: Milvus A's
# proxy, started beside B, Q and Lite, once found a server without QueryCoord on its QueryCoord
# port, gave up and left its launcher running with nothing behind it.
healthy_or_again() { # name port [user:password]
  local name=$1; shift
  wait_for "$name" 180 milvus_healthy "$@" && return 0
  log "starting $name once more"
  stop_one "$name"
  "start_${name/-/_}"
  wait_for "$name" 180 milvus_healthy "$@"
}

up() {
  local want=("$@"); [ ${#want[@]} -gt 0 ] || want=("${all[@]}")
  local w
  for w in "${want[@]}"; do
    case $w in s3|s3-b|milvus-a|milvus-b|milvus-q|lite|lite25) ;; *) log "unknown service '$w' (known: ${all[*]})"; return 2;; esac
  done
  # The health checks use pymilvus from .venv, so it is installed whatever is started; the
  # Garage build runs beside the pip installs.
  local garage_build=""
  if printf '%s\n' "${want[@]}" | grep -q 's3\|milvus'; then install_garage & garage_build=$!; fi
  install
  if printf '%s\n' "${want[@]}" | grep -qx lite25; then install_lite25; fi
  if [ -n "$garage_build" ]; then wait "$garage_build"; fi
  mkdir -p "$dir"
  # Milvus needs its object store first.
  if printf '%s\n' "${want[@]}" | grep -q milvus || printf '%s\n' "${want[@]}" | grep -qx s3; then
    start_s3
  fi
  if printf '%s\n' "${want[@]}" | grep -qx s3-b; then start_s3_b; fi
  # The launcher takes the first free HTTP port from 9091, so A starts (and binds 9091) before B.
  if printf '%s\n' "${want[@]}" | grep -qx milvus-a; then
    start_milvus_a
    wait_for milvus-a 60 port_open 9091 || true
  fi
  if printf '%s\n' "${want[@]}" | grep -qx milvus-b; then start_milvus_b; fi
  # After B has its HTTP port: the launcher takes the first free one from 9091.
  if printf '%s\n' "${want[@]}" | grep -qx milvus-q; then
    wait_for milvus-b 60 port_open 9092 || true
    start_milvus_q
  fi
  if printf '%s\n' "${want[@]}" | grep -qx lite; then start_lite; fi
  if printf '%s\n' "${want[@]}" | grep -qx lite25; then start_lite25; fi
  if printf '%s\n' "${want[@]}" | grep -qx milvus-a; then healthy_or_again milvus-a 19530 root:Milvus; fi
  if printf '%s\n' "${want[@]}" | grep -qx milvus-b; then healthy_or_again milvus-b 19540; fi
  if printf '%s\n' "${want[@]}" | grep -qx milvus-q; then healthy_or_again milvus-q 19550 root:Milvus; fi
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
  local want=("$@"); [ ${#want[@]} -gt 0 ] || want=(lite25 lite milvus-q milvus-b milvus-a s3-b s3)
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
  # The Garage build (the long one) runs beside the pip installs.
  install) install_garage & garage_build=$!; install; install_lite25; install_peers; wait "$garage_build" ;;
  install-peers) install_peers ;;
  *) echo "usage: $0 up|down|status|install|install-peers [s3|s3-b|milvus-a|milvus-b|milvus-q|lite|lite25 ...]" >&2; exit 2 ;;
esac
