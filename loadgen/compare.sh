#!/usr/bin/env bash
# compare.sh — corekv and Redis side by side, measured by corekv-loadgen in one
# session. Documented in docs/benchmarks.md ("corekv vs Redis").
#
# The fair per-core shape: one corekv shard and one Redis thread, each pinned
# in turn to the same CPU (CORE_CPU), the load generator pinned to another
# (LOADGEN_CPU), 50 connections, 16 B values. Rows marked "default" run corekv
# with its default shard count and both servers unpinned instead.
#
# For each row it starts fresh servers, runs the workload RUNS times on each,
# alternating corekv / Redis so both see the same background load, and samples
# the server's CPU time over the load generator's measured window (not its
# connecting, prefilling or warm-up): CPU µs per request is what a bigger
# machine scales. Durable rows also report corekv's log syncs per second and
# records per sync (STATS log_syncs), and the same workload on corekv's memory
# engine, for the cost of durability.
#
# Every run must pass (every reply verified); a failed run stops the script.
#
# Usage:   loadgen/compare.sh [RUNS]          (RUNS defaults to 3)
# Environment:
#   CORE_CPU [1]  LOADGEN_CPU [0]
#   COREKV_PORT [4100]  REDIS_PORT [6390]
#   DURATION [5]  WARMUP [1]    seconds of each timed run
#   OUT           directory for the JSON reports (default: a new temp dir)
#   SKIP_BUILD=1  use the binaries already built
#   COREKV_COMMIT what to call the corekv build (default: git rev-parse of the repo)
#   WORKLOADS     rows to run, space-separated (default: all —
#                 set1 get1 inflight16 kvstore1 kvstore durable1 durable durable16
#                 durable1k setttl1 memoryttl memory1m)
# Binaries are taken from ${CARGO_TARGET_DIR:-<repo>/target}/release.
set -euo pipefail

RUNS=${1:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
CORE_CPU=${CORE_CPU:-1}
LOADGEN_CPU=${LOADGEN_CPU:-0}
ALL_CPUS=0-$(($(nproc) - 1))
COREKV_PORT=${COREKV_PORT:-4100}
REDIS_PORT=${REDIS_PORT:-6390}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
OUT=${OUT:-$(mktemp -d /tmp/corekv-compare.XXXXXX)}
WORKLOADS=${WORKLOADS:-set1 get1 inflight16 kvstore1 kvstore durable1 durable durable16 durable1k setttl1 memoryttl memory1m}
DATA=$OUT/corekv-data
SAMPLE_S=0.05
MARGIN_S=0.1
mkdir -p "$OUT"

die() { echo "compare.sh: $*" >&2; exit 1; }
selected() { [[ " $WORKLOADS " == *" $1 "* ]]; }
command -v jq >/dev/null || die "needs jq (apt-get install -y jq)"
command -v taskset >/dev/null || die "needs taskset (util-linux)"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release --workspace --quiet)
fi
if ! command -v redis-server >/dev/null; then
  apt-get install -y redis-server >/dev/null || die "cannot install redis-server"
fi
MACHINE="$(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), Linux $(uname -r)"
# The script, the sampler and the load generator stay off the servers' CPU.
taskset -cp "$LOADGEN_CPU" $$ >/dev/null

PID=
stop_server() {
  if [ -n "$PID" ]; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=
  fi
}
trap stop_server EXIT

# Waits (at most 10 s) until something accepts connections on a port.
wait_for_port() {
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  die "nothing listening on port $1"
}

# start SERVER MODE CPUS: a fresh server. SERVER corekv|redis; MODE memory or
# always (durable: corekv --engine log --fsync always, Redis appendfsync always);
# CPUS "core" (one shard / pinned to CORE_CPU) or "default" (default shards, all CPUs).
start() {
  local server=$1 mode=$2 cpus=$3 pin=$CORE_CPU shards=(--shards 1)
  stop_server
  rm -rf "$DATA" "$OUT/redis-data"
  mkdir -p "$OUT/redis-data"
  if [ "$cpus" = default ]; then pin=$ALL_CPUS; shards=(); fi
  if [ "$server" = corekv ]; then
    local engine=(--engine memory)
    [ "$mode" = always ] && engine=(--engine log --fsync always)
    taskset -c "$pin" "$BIN/corekv-server" "${engine[@]}" --data-dir "$DATA" \
      --addr "127.0.0.1:$COREKV_PORT" "${shards[@]}" 2>"$OUT/corekv.log" &
    PID=$!
    wait_for_port "$COREKV_PORT"
  else
    local persistence=(--appendonly no)
    [ "$mode" = always ] && persistence=(--appendonly yes --appendfsync always)
    taskset -c "$pin" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$OUT/redis-data" \
      --save '' "${persistence[@]}" >"$OUT/redis.log" 2>&1 &
    PID=$!
    wait_for_port "$REDIS_PORT"
  fi
}

cpu_ticks() {
  local stat fields
  read -r stat <"/proc/$1/stat"
  read -ra fields <<<"${stat##*) }"
  ticks=$((fields[11] + fields[12]))
}

log_syncs() {
  "$BIN/corekv" stats --addr "127.0.0.1:$COREKV_PORT" --json | jq '.log_syncs // 0'
}

# run NAME SERVER N FLAGS...: one load generator run against the running
# server; its report in $OUT/NAME-SERVER-N.json, with the server's CPU
# seconds per request over the measured window added (cpu_us_per_op), and for
# corekv the log syncs of the run (syncs).
run() {
  local name=$1 server=$2 n=$3
  shift 3
  local json="$OUT/$name-$server-$n.json" samples="$OUT/$name-$server-$n.samples"
  local target=(--addr "127.0.0.1:$COREKV_PORT") syncs0=0 syncs1=0 lg status=0 ended
  [ "$server" = redis ] && target=(--protocol resp --addr "127.0.0.1:$REDIS_PORT")
  [ "$server" = corekv ] && syncs0=$(log_syncs)
  "$BIN/corekv-loadgen" "${target[@]}" --quiet --json "$json" "$@" >"$OUT/$name-$server-$n.txt" 2>&1 &
  lg=$!
  : >"$samples"
  while kill -0 "$lg" 2>/dev/null; do
    cpu_ticks "$PID"
    echo "$EPOCHREALTIME $ticks" >>"$samples"
    sleep "$SAMPLE_S"
  done
  wait "$lg" || status=$?
  ended=$EPOCHREALTIME
  [ "$status" = 0 ] || die "$name on $server, run $n failed: see $OUT/$name-$server-$n.txt"
  [ "$server" = corekv ] && syncs1=$(log_syncs)
  python3 - "$json" "$samples" "$ended" "$(getconf CLK_TCK)" "$MARGIN_S" $((syncs1 - syncs0)) <<'EOF'
import json, sys
path, samples_path, ended, clk_tck, margin, syncs = sys.argv[1:]
report = json.load(open(path))
samples = [tuple(map(float, l.split())) for l in open(samples_path) if l.strip()]
start = float(ended) - report["elapsed_s"] + float(margin)
end = float(ended) - float(margin)
inside = [s for s in samples if start <= s[0] <= end]
if len(inside) >= 2:
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    ops = report["ops_per_s"] * (t1 - t0)
    report["cpu_us_per_op"] = 1e6 * (c1 - c0) / float(clk_tck) / ops if ops else None
report["syncs"] = int(syncs)
json.dump(report, open(path, "w"))
EOF
}

# throughput NAME MODE CPUS FLAGS...: RUNS alternating runs on fresh servers.
throughput() {
  local name=$1 mode=$2 cpus=$3
  shift 3
  for n in $(seq "$RUNS"); do
    for server in corekv redis; do
      start "$server" "$mode" "$cpus"
      run "$name" "$server" "$n" "$@"
      stop_server
    done
    if [ "$mode" = always ]; then
      start corekv memory "$cpus"
      run "$name" corekv-memory "$n" "$@"
      stop_server
    fi
  done
}

# keys SERVER: how many keys the running server holds.
keys() {
  if [ "$1" = corekv ]; then
    "$BIN/corekv" stats --addr "127.0.0.1:$COREKV_PORT" --json | jq '.keys'
  else
    redis-cli -p "$REDIS_PORT" dbsize
  fi
}

# memory NAME FLAGS...: RSS growth over the load, per key the server then holds.
memory() {
  local name=$1
  shift
  for n in $(seq "$RUNS"); do
    for server in corekv redis; do
      start "$server" memory core
      local before after
      before=$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status")
      run "$name" "$server" "$n" "$@"
      after=$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status")
      echo $(((after - before) * 1024 / $(keys "$server"))) >"$OUT/$name-$server-$n.bytes_per_key"
      stop_server
    done
  done
}

median() { sort -g | awk '{v[NR] = $1} END {if (NR) print v[int((NR + 1) / 2)]; else print 0}'; }
# field NAME SERVER JQ: the median of a JSON field over the runs.
field() {
  for n in $(seq "$RUNS"); do jq "$3 // 0" "$OUT/$1-$2-$n.json"; done | median
}
human() { awk -v x="$1" 'BEGIN { if (x >= 1e6) printf "%.2f M", x / 1e6; else if (x >= 1e3) printf "%.1f k", x / 1e3; else printf "%.0f", x }'; }
ms() { awk -v x="$1" 'BEGIN { printf "%.2f ms", x / 1000 }'; }
us() { awk -v x="$1" 'BEGIN { printf "%.1f µs", x }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "–" }'; }

row_throughput() {
  local name=$1 label=$2 c r
  c=$(field "$name" corekv .ops_per_s)
  r=$(field "$name" redis .ops_per_s)
  echo "| $label | $(human "$c") | $(human "$r") | **$(ratio "$c" "$r")** |" \
    "$(ms "$(field "$name" corekv .latency_us.p99)") / $(ms "$(field "$name" redis .latency_us.p99)") |" \
    "$(us "$(field "$name" corekv .cpu_us_per_op)") / $(us "$(field "$name" redis .cpu_us_per_op)") |"
}

row_durable() {
  local name=$1 label=$2 syncs secs ops mem
  row_throughput "$name" "$label"
  syncs=$(field "$name" corekv .syncs)
  secs=$(field "$name" corekv .elapsed_s)
  ops=$(field "$name" corekv .ops_per_s)
  mem=$(field "$name" corekv-memory .ops_per_s)
  echo "| ↳ corekv: $(awk -v s="$syncs" -v t="$secs" -v w="$WARMUP" 'BEGIN { printf "%.0f", s / (t + w) }') syncs/s," \
    "$(awk -v s="$syncs" -v o="$ops" -v t="$secs" -v w="$WARMUP" 'BEGIN { if (s) printf "%.1f", o * (t + w) / s; else print "–" }') records per sync;" \
    "memory engine $(human "$mem") ops/s, always / memory = $(ratio "$ops" "$mem") | | | | | |"
}

row_memory() {
  local name=$1 label=$2 c r
  c=$(cat "$OUT/$name-corekv-"*.bytes_per_key | median)
  r=$(cat "$OUT/$name-redis-"*.bytes_per_key | median)
  echo "| $label, RSS growth per key | $c B | $r B | **$(ratio "$c" "$r")** | | |"
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
TIMED=(--duration "$DURATION" --warmup "$WARMUP")
SET1=(--connections 50 --sets-per-message 1 --gets-per-message 0 --value-bytes 16 "${TIMED[@]}")
selected set1 && throughput set1 memory core "${SET1[@]}"
selected get1 && throughput get1 memory core --connections 50 --get-ratio 1 --value-bytes 16 "${TIMED[@]}"
selected inflight16 && throughput inflight16 memory core --connections 50 --get-ratio 0.5 \
  --pipeline 16 --value-bytes 16 "${TIMED[@]}"
selected kvstore1 && throughput kvstore1 memory core --preset kvstore
selected kvstore && throughput kvstore memory default --preset kvstore
selected durable1 && throughput durable1 always core "${SET1[@]}"
selected durable && throughput durable always default "${SET1[@]}"
selected durable16 && throughput durable16 always core "${SET1[@]}" --pipeline 16
selected durable1k && throughput durable1k always core --connections 50 --sets-per-message 1 \
  --gets-per-message 0 --value-bytes 1024 "${TIMED[@]}"
selected setttl1 && throughput setttl1 memory core --connections 50 --get-ratio 0 \
  --set-ttl-ms 3600000 --value-bytes 16 "${TIMED[@]}"
selected memoryttl && memory memoryttl --connections 50 --get-ratio 0 --set-ttl-ms 3600000 \
  --ops-per-message 100 --keys 1000000 --key-bytes 16 --value-bytes 32 --messages 200
selected memory1m && memory memory1m --connections 50 --sets-per-message 100 --gets-per-message 0 \
  --keys 1000000 --key-bytes 16 --value-bytes 32 --messages 200
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

COMMIT=${COREKV_COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}
[ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ] && COMMIT="$COMMIT + working tree"
echo "## corekv vs Redis ($(date -u +%Y-%m-%d), medians of $RUNS runs)"
echo
echo "- machine: $MACHINE"
echo "- corekv $COMMIT; $(redis-server --version | cut -d' ' -f1-3)"
echo "- per-core rows: 1 corekv shard, then 1 Redis thread, pinned to CPU $CORE_CPU; load generator on CPU $LOADGEN_CPU"
echo "- default rows: corekv with its default shard count, Redis, both on CPUs $ALL_CPUS; load generator on CPU $LOADGEN_CPU"
echo "- durable rows: corekv --engine log --fsync always, Redis --appendonly yes --appendfsync always; data under $OUT ($(df -T "$OUT" | awk 'NR == 2 {print $2}'))"
echo "- load average at start $LOAD_START, at end $LOAD_END"
echo
echo "| workload | corekv | Redis | corekv / Redis | p99 corekv / Redis | server CPU per request corekv / Redis |"
echo "|---|---|---|---|---|---|"
selected set1 && row_throughput set1 "SET, 1 in flight × 50 conns, 1 shard vs 1 thread, ops/s"
selected get1 && row_throughput get1 "GET, 1 in flight × 50 conns, 1 shard vs 1 thread, ops/s"
selected inflight16 && row_throughput inflight16 "GET/SET 50/50, 16 in flight × 50 conns, 1 shard vs 1 thread, ops/s"
selected kvstore1 && row_throughput kvstore1 "KVStore preset, 1 shard vs 1 thread, ops/s"
selected kvstore && row_throughput kvstore "KVStore preset, default shards vs Redis, ops/s"
selected durable1 && row_durable durable1 "Durable SET 16 B, 1 in flight × 50, 1 shard vs 1 thread, ops/s"
selected durable && row_durable durable "Durable SET 16 B, 1 in flight × 50, default shards vs Redis, ops/s"
selected durable16 && row_durable durable16 "Durable SET 16 B, 16 in flight × 50, 1 shard vs 1 thread, ops/s"
selected durable1k && row_durable durable1k "Durable SET 1 KiB, 1 in flight × 50, 1 shard vs 1 thread, ops/s"
selected setttl1 && row_throughput setttl1 "SET with a 1 h TTL (Redis: SET … PX), 1 in flight × 50, 1 shard vs 1 thread, ops/s"
selected memoryttl && row_memory memoryttl "~630 k keys with a 1 h TTL (16 B keys, 32 B values), 1 shard vs 1 thread"
selected memory1m && row_memory memory1m "1 M keys (16 B keys, 32 B values), 1 shard vs 1 thread"
echo
echo "Reports: $OUT"
