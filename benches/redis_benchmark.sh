#!/usr/bin/env bash
# redis-benchmark against corekv (over RESP) and Redis in one session: Redis's
# own tool, so neither side is measured by corekv's load generator. Documented
# in docs/benchmarks.md ("redis-benchmark").
#
# Rows: each of TESTS (redis-benchmark -t) at each pipeline depth of PIPELINES,
# 50 connections, 16 B values, a key space of 100 000 (-r). "core" rows run one
# corekv shard, then one Redis thread, each pinned to CORE_CPU, redis-benchmark
# pinned to BENCH_CPU; "default" rows run corekv with its default shard count
# and Redis unpinned (both on every CPU), redis-benchmark on BENCH_CPU.
# Every row runs RUNS times on each server, alternating, and reports the median
# requests/s, its p99, and the server's CPU µs per request (utime + stime from
# /proc/PID/stat over the run, divided by the requests).
#
# Usage:   benches/redis_benchmark.sh [RUNS]          (RUNS defaults to 3)
# Environment:
#   CORE_CPU [1]  BENCH_CPU [0]  COREKV_PORT [4120]  REDIS_PORT [6391]
#   TESTS ["set get"]  PIPELINES ["1 16"]  SHAPES ["core default"]
#   REQUESTS [200000]  requests per run (-n)
#   SKIP_BUILD=1      use the corekv-server already built (target/release)
set -euo pipefail

RUNS=${1:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
CORE_CPU=${CORE_CPU:-1}
BENCH_CPU=${BENCH_CPU:-0}
NR_CPUS=$(nproc)
ALL_CPUS=0-$((NR_CPUS - 1))
COREKV_PORT=${COREKV_PORT:-4120}
REDIS_PORT=${REDIS_PORT:-6391}
TESTS=${TESTS:-"set get"}
PIPELINES=${PIPELINES:-"1 16"}
SHAPES=${SHAPES:-"core default"}
REQUESTS=${REQUESTS:-200000}
OUT=$(mktemp -d /tmp/corekv-redis-benchmark.XXXXXX)

die() { echo "redis_benchmark.sh: $*" >&2; exit 1; }
command -v redis-benchmark >/dev/null || die "needs redis-benchmark (apt-get install -y redis-tools)"
command -v redis-server >/dev/null || die "needs redis-server (apt-get install -y redis-server)"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release --bin corekv-server --quiet)
fi
taskset -cp "$BENCH_CPU" $$ >/dev/null

PID=
stop_server() {
  if [ -n "$PID" ]; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=
  fi
}
trap stop_server EXIT

wait_for_port() {
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  die "nothing listens on port $1"
}

# start_server corekv|redis core|default
start_server() {
  local cpus=$CORE_CPU shards=(--shards 1)
  [ "$2" = default ] && cpus=$ALL_CPUS && shards=()
  rm -rf "$OUT/data"
  if [ "$1" = corekv ]; then
    taskset -c "$cpus" "$BIN/corekv-server" --engine memory --data-dir "$OUT/data" \
      --addr "127.0.0.1:$COREKV_PORT" "${shards[@]}" 2>>"$OUT/corekv.log" &
    PID=$!
    wait_for_port "$COREKV_PORT"
  else
    mkdir -p "$OUT/data"
    taskset -c "$cpus" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$OUT/data" \
      --save '' --appendonly no >>"$OUT/redis.log" 2>&1 &
    PID=$!
    wait_for_port "$REDIS_PORT"
  fi
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }

# run_once corekv|redis TEST PIPELINE -> "rps p99_ms cpu_us_per_request"
run_once() {
  local port=$COREKV_PORT
  [ "$1" = redis ] && port=$REDIS_PORT
  local before after line
  before=$(cpu_ticks)
  line=$(redis-benchmark -h 127.0.0.1 -p "$port" -c 50 -d 16 -r 100000 -n "$REQUESTS" \
    -P "$3" -t "$2" --csv 2>"$OUT/bench.err" | tail -1)
  after=$(cpu_ticks)
  grep -qi error "$OUT/bench.err" && die "redis-benchmark reported errors against $1: $(head -3 "$OUT/bench.err")"
  local hz
  hz=$(getconf CLK_TCK)
  echo "$line" | tr -d '"' | awk -F, -v t=$((after - before)) -v hz="$hz" -v n="$REQUESTS" \
    '{ printf "%s %s %.2f\n", $2, $7, t / hz * 1e6 / n }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "## redis-benchmark: corekv (RESP) vs Redis ($(date -u +%Y-%m-%d), medians of $RUNS runs)"
echo
echo "- machine: $NR_CPUS CPUs, $(lscpu | sed -n 's/^Model name: *//p'), Linux $(uname -r)"
echo "- corekv $(git -C "$ROOT" rev-parse --short HEAD) (--engine memory); $(redis-server --version | cut -d' ' -f1-3) (--save '' --appendonly no)"
echo "- redis-benchmark -c 50 -d 16 -r 100000 -n $REQUESTS, pinned to CPU $BENCH_CPU"
echo "- core rows: 1 corekv shard, then 1 Redis thread, pinned to CPU $CORE_CPU; default rows: corekv's default shards and Redis on CPUs $ALL_CPUS"
echo "- load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| test | shape | -P | corekv req/s | Redis req/s | corekv / Redis | p99 corekv / Redis | server CPU per request corekv / Redis |"
echo "|---|---|---|---|---|---|---|---|"
for shape in $SHAPES; do
  for test in $TESTS; do
    for pipeline in $PIPELINES; do
      : >"$OUT/corekv.runs"
      : >"$OUT/redis.runs"
      for _ in $(seq "$RUNS"); do
        for server in corekv redis; do
          start_server "$server" "$shape"
          run_once "$server" "$test" "$pipeline" >>"$OUT/$server.runs"
          stop_server
        done
      done
      c_rps=$(cut -d' ' -f1 "$OUT/corekv.runs" | median)
      r_rps=$(cut -d' ' -f1 "$OUT/redis.runs" | median)
      c_p99=$(cut -d' ' -f2 "$OUT/corekv.runs" | median)
      r_p99=$(cut -d' ' -f2 "$OUT/redis.runs" | median)
      c_cpu=$(cut -d' ' -f3 "$OUT/corekv.runs" | median)
      r_cpu=$(cut -d' ' -f3 "$OUT/redis.runs" | median)
      awk -v t="$test" -v s="$shape" -v p="$pipeline" -v c="$c_rps" -v r="$r_rps" \
        -v cp="$c_p99" -v rp="$r_p99" -v cc="$c_cpu" -v rc="$r_cpu" \
        'BEGIN { printf "| %s | %s | %s | %.0f | %.0f | **%.2f×** | %s ms / %s ms | %s µs / %s µs |\n", toupper(t), s, p, c, r, c / r, cp, rp, cc, rc }'
      echo "runs (req/s): corekv $(cut -d' ' -f1 "$OUT/corekv.runs" | tr '\n' ' ')— Redis $(cut -d' ' -f1 "$OUT/redis.runs" | tr '\n' ' ')" >>"$OUT/all-runs.txt"
    done
  done
done
echo
echo "Every run, in row order:"
sed 's/^/- /' "$OUT/all-runs.txt"
echo "load average at end $(cut -d' ' -f1-3 /proc/loadavg)"
