#!/usr/bin/env bash
# compare.sh — corekv and Redis side by side, measured by corekv-loadgen in one
# session (BRIEF §9). Documented in docs/benchmarks.md ("corekv vs Redis").
#
# What it does:
#   1. builds the workspace in release mode;
#   2. installs redis-server with apt-get if it is missing;
#   3. for each workload, starts a fresh corekv (--engine memory) and a fresh
#      Redis (--save '' --appendonly no) — for the durable SET workload corekv
#      --engine log --fsync always and Redis --appendfsync always — both pinned
#      with taskset to the same CPU set, then runs the workload RUNS times on
#      each, alternating corekv / Redis so both see the same background load;
#   4. prints the machine, then a markdown table of medians: corekv, Redis and
#      the ratio corekv / Redis, then every run's figures.
# Every run must pass (every reply verified); a failed run stops the script.
#
# Usage:   loadgen/compare.sh [RUNS]          (RUNS defaults to 3)
# Environment:
#   CPUS         taskset CPU list for both servers (default: every online CPU)
#   COREKV_PORT  default 4100      REDIS_PORT  default 6390
#   OUT          directory for the JSON reports (default: a new temp dir)
#   SKIP_BUILD=1 use the binaries already built
#   COREKV_COMMIT what to call the corekv build (default: git rev-parse of the repo)
#   WORKLOADS    which rows to run, space-separated (default: all of them —
#                kvstore batch16 inflight16 durable memory1m); e.g.
#                WORKLOADS=memory1m for the memory row alone, which runs in seconds
# Binaries are taken from ${CARGO_TARGET_DIR:-<repo>/target}/release.
set -euo pipefail

RUNS=${1:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
CPUS=${CPUS:-0-$(($(nproc) - 1))}
COREKV_PORT=${COREKV_PORT:-4100}
REDIS_PORT=${REDIS_PORT:-6390}
OUT=${OUT:-$(mktemp -d /tmp/corekv-compare.XXXXXX)}
WORKLOADS=${WORKLOADS:-kvstore batch16 inflight16 durable memory1m}
DATA=$OUT/corekv-data
mkdir -p "$OUT"

die() { echo "compare.sh: $*" >&2; exit 1; }
# selected NAME: whether the workload NAME is in $WORKLOADS.
selected() { [[ " $WORKLOADS " == *" $1 "* ]]; }
command -v jq >/dev/null || die "needs jq (apt-get install -y jq)"
command -v taskset >/dev/null || die "needs taskset (util-linux)"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release --workspace --quiet)
fi
if ! command -v redis-server >/dev/null; then
  apt-get install -y redis-server >/dev/null || die "cannot install redis-server"
fi

COREKV_PID=
REDIS_PID=
stop_servers() {
  for pid in $COREKV_PID $REDIS_PID; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  COREKV_PID=
  REDIS_PID=
}
trap stop_servers EXIT

# Waits (at most 10 s) until something accepts connections on a port.
wait_for_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "nothing listening on port $1"
}

# start_servers SHARDS [durable]: a fresh corekv with SHARDS shards (or "auto":
# one per CPU of the set) and a fresh Redis, both pinned to $CPUS. In memory
# (corekv --engine memory, Redis without persistence), or with "durable" every
# write synced before its reply (corekv --engine log --fsync always, Redis
# --appendonly yes --appendfsync always), both writing under $OUT.
start_servers() {
  stop_servers
  rm -rf "$DATA" "$OUT/redis-data"
  mkdir -p "$OUT/redis-data"
  local shards=() corekv_engine=(--engine memory) redis_persistence=(--appendonly no)
  [ "$1" != auto ] && shards=(--shards "$1")
  if [ "${2:-}" = durable ]; then
    corekv_engine=(--engine log --fsync always)
    redis_persistence=(--appendonly yes --appendfsync always)
  fi
  taskset -c "$CPUS" "$BIN/corekv-server" "${corekv_engine[@]}" --data-dir "$DATA" \
    --addr "127.0.0.1:$COREKV_PORT" "${shards[@]}" 2>"$OUT/corekv.log" &
  COREKV_PID=$!
  taskset -c "$CPUS" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$OUT/redis-data" \
    --save '' "${redis_persistence[@]}" >"$OUT/redis.log" 2>&1 &
  REDIS_PID=$!
  wait_for_port "$COREKV_PORT"
  wait_for_port "$REDIS_PORT"
  COREKV_SHARDS=$(grep -o '[0-9]* shards' "$OUT/corekv.log" | head -1 | cut -d' ' -f1)
}

rss_bytes() { echo $(($(awk '/^VmRSS/ {print $2}' "/proc/$1/status") * 1024)); }

# run NAME SERVER FLAGS...: one loadgen run, its JSON in $OUT/NAME-SERVER-N.json.
run() {
  local name=$1 server=$2 n=$3
  shift 3
  local target=(--addr "127.0.0.1:$COREKV_PORT")
  [ "$server" = redis ] && target=(--protocol resp --addr "127.0.0.1:$REDIS_PORT")
  "$BIN/corekv-loadgen" "${target[@]}" --quiet --json "$OUT/$name-$server-$n.json" "$@" \
    >"$OUT/$name-$server-$n.txt" || die "$name on $server, run $n failed: see $OUT/$name-$server-$n.txt"
}

# throughput NAME SHARDS[:durable] FLAGS...: RUNS alternating runs on fresh servers.
throughput() {
  local name=$1 shards=${2%:*} mode=
  [[ $2 == *:durable ]] && mode=durable
  shift 2
  start_servers "$shards" $mode
  eval "SHARDS_$name=$COREKV_SHARDS"
  for n in $(seq "$RUNS"); do
    run "$name" corekv "$n" "$@"
    run "$name" redis "$n" "$@"
  done
  stop_servers
}

# memory NAME FLAGS...: RSS growth per key while loading 1 M keys, fresh servers per run.
memory() {
  local name=$1
  shift
  for n in $(seq "$RUNS"); do
    start_servers 1
    for server in corekv redis; do
      local pid=$COREKV_PID
      [ "$server" = redis ] && pid=$REDIS_PID
      local before after
      before=$(rss_bytes "$pid")
      run "$name" "$server" "$n" "$@"
      after=$(rss_bytes "$pid")
      echo $(((after - before) / 1000000)) >"$OUT/$name-$server-$n.bytes_per_key"
      if [ "$server" = corekv ]; then
        # What corekv's memory limit counts, beside what the kernel sees.
        "$BIN/corekv" --addr "127.0.0.1:$COREKV_PORT" stats --json |
          jq '.memory_bytes / 1000000 | floor' >"$OUT/$name-$server-$n.accounted_per_key"
      fi
    done
  done
  stop_servers
}

# median FILES...: the median of one number per file.
median() { cat "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
# field NAME SERVER JQ: the median of a JSON field over the runs.
field() {
  local files=()
  for n in $(seq "$RUNS"); do
    jq "$3" "$OUT/$1-$2-$n.json" >"$OUT/.f$n"
    files+=("$OUT/.f$n")
  done
  median "${files[@]}"
}
human() { awk -v x="$1" 'BEGIN { if (x >= 1e6) printf "%.2f M", x / 1e6; else if (x >= 1e3) printf "%.1f k", x / 1e3; else printf "%.0f", x }'; }
ms() { awk -v x="$1" 'BEGIN { printf "%.2f ms", x / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", a / b }'; }

row_throughput() {
  local name=$1 label=$2
  local c r cp99 rp99
  c=$(field "$name" corekv .ops_per_s)
  r=$(field "$name" redis .ops_per_s)
  cp99=$(field "$name" corekv .latency_us.p99)
  rp99=$(field "$name" redis .latency_us.p99)
  echo "| $label, ops/s | $(human "$c") | $(human "$r") | **$(ratio "$c" "$r")** |"
  echo "| ↳ p99 latency per message | $(ms "$cp99") | $(ms "$rp99") | $(ratio "$cp99" "$rp99") |"
}

row_memory() {
  local name=$1 label=$2 c r
  c=$(median "$OUT/$name-corekv-"*.bytes_per_key)
  r=$(median "$OUT/$name-redis-"*.bytes_per_key)
  echo "| $label, RSS growth per key | $c B | $r B | **$(ratio "$c" "$r")** |"
  echo "| ↳ corekv's memory_bytes (what --max-memory-bytes counts) per key | $(median "$OUT/$name-corekv-"*.accounted_per_key) B | | |"
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
selected kvstore && throughput kvstore auto --preset kvstore
selected batch16 && throughput batch16 1 --connections 50 --sets-per-message 8 \
  --gets-per-message 8 --duration 5 --warmup 1
selected inflight16 && throughput inflight16 1 --connections 50 --get-ratio 0.5 --pipeline 16 \
  --duration 5 --warmup 1
selected durable && throughput durable auto:durable --connections 50 --sets-per-message 1 \
  --gets-per-message 0 --duration 5 --warmup 1
selected memory1m && memory memory1m --connections 50 --sets-per-message 100 \
  --gets-per-message 0 --keys 1000000 --key-bytes 16 --value-bytes 32 --messages 200
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

COMMIT=${COREKV_COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}
[ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ] && COMMIT="$COMMIT + working tree"
echo "## corekv vs Redis ($(date -u +%Y-%m-%d), medians of $RUNS runs)"
echo
echo "- machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), Linux $(uname -r)"
echo "- corekv $COMMIT (--engine memory; durable row: --engine log --fsync always)"
echo "- $(redis-server --version | cut -d' ' -f1-3) (--save '' --appendonly no; durable row: --appendonly yes --appendfsync always)"
echo "- data directories under $OUT ($(df -T "$OUT" | awk 'NR == 2 {print $2}') on $(df "$OUT" | awk 'NR == 2 {print $1}'))"
echo "- both servers pinned with taskset -c $CPUS; load generator unpinned, 1 thread"
echo "- load average at start $LOAD_START, at end $LOAD_END"
echo
echo "| workload | corekv | Redis | corekv / Redis |"
echo "|---|---|---|---|"
selected kvstore &&
  row_throughput kvstore "KVStore preset (corekv $SHARDS_kvstore shards, Redis 1 thread)"
selected batch16 &&
  row_throughput batch16 "GET/SET, 16 per round trip (8 SET + 8 GET) × 50 conns, 1 shard vs 1 thread"
selected inflight16 &&
  row_throughput inflight16 "GET/SET 50/50, 16 in flight per conn × 50 conns, 1 shard vs 1 thread"
selected memory1m && row_memory memory1m "1 M keys (16 B keys, 32 B values), 1 shard vs 1 thread"
selected durable &&
  row_throughput durable "Durable SET (1 per message × 50 conns), corekv $SHARDS_durable shards --fsync always vs Redis appendfsync always"
echo "| Restart of a 1 GB data set | not measured | | not scripted yet |"
echo
echo "Every run (ops/s; memory: bytes per key):"
echo
for name in kvstore batch16 inflight16 durable; do
  selected "$name" || continue
  for server in corekv redis; do
    printf -- "- %s %s:" "$name" "$server"
    for n in $(seq "$RUNS"); do printf " %s" "$(human "$(jq .ops_per_s "$OUT/$name-$server-$n.json")")"; done
    echo
  done
done
for server in corekv redis; do
  selected memory1m || break
  printf -- "- memory1m %s:" "$server"
  for n in $(seq "$RUNS"); do printf " %s" "$(cat "$OUT/memory1m-$server-$n.bytes_per_key")"; done
  echo
done
if selected memory1m; then
  printf -- "- memory1m corekv memory_bytes:"
  for n in $(seq "$RUNS"); do printf " %s" "$(cat "$OUT/memory1m-corekv-$n.accounted_per_key")"; done
  echo
fi
echo
echo "JSON reports: $OUT"
