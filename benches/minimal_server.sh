#!/usr/bin/env bash
# The minimal-server benchmark (benches/minimal_server.rs): each network
# variant pinned to one CPU, driven by corekv-loadgen pinned to another, on
# three shapes. For each variant and shape it prints the load generator's
# ops/s and messages/s, and over the load generator's measured window the
# server's CPU use, its CPU time per message (utime + stime from
# /proc/PID/stat) and the rescheduling interrupts (IPIs) its CPU took per
# message (that CPU's column of the RES: line of /proc/interrupts; they count
# every IPI to that CPU, whatever it was for).
#
# Usage: benches/minimal_server.sh [VARIANT...]   (default: glommio epoll ring)
#
# Environment (defaults in brackets):
#   SERVER_CPU [1]   LOADGEN_CPU [0]   PORT [4100]
#   DURATION [5]     WARMUP [1]        seconds of the --duration shapes
#   SHAPES ["set1 mixed16 kvstore"]    which shapes to run:
#     set1     SET, 1 in flight: --connections 50 --sets-per-message 1 --gets-per-message 0
#     mixed16  GET/SET 50/50, 16 in flight: --get-ratio 0.5 --pipeline 16
#     kvstore  --preset kvstore (100 connections x 500 messages of 50 SET + 50 GET)
#   OUT [a new temporary directory]    where the load generator's JSON reports go
#
# How the window is found: the script samples the server's CPU time and the
# interrupt count every SAMPLE_S seconds while the load generator runs. The
# load generator's measured window (after connecting, prefilling and warming
# up) is the last `elapsed_s` of its report before it exits; the samples
# MARGIN_S inside both ends of it delimit the window used, and the messages in
# it are the report's messages/s times its length. The script itself runs on
# LOADGEN_CPU, so it adds nothing to the server's CPU.
#
# The machine must be otherwise idle for figures worth recording: anything else
# running on SERVER_CPU adds to its interrupts and takes CPU from the server.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVER_CPU=${SERVER_CPU:-1}
LOADGEN_CPU=${LOADGEN_CPU:-0}
PORT=${PORT:-4100}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
SHAPES=${SHAPES:-"set1 mixed16 kvstore"}
SAMPLE_S=0.05
MARGIN_S=0.1
if [ $# -gt 0 ]; then VARIANTS=("$@"); else VARIANTS=(glommio epoll ring); fi
OUT=${OUT:-$(mktemp -d /tmp/minimal_server.XXXXXX)}
mkdir -p "$OUT"

shape_flags() {
    local timed=(--duration "$DURATION" --warmup "$WARMUP")
    case $1 in
        set1) echo --connections 50 --sets-per-message 1 --gets-per-message 0 "${timed[@]}" ;;
        mixed16) echo --get-ratio 0.5 --pipeline 16 "${timed[@]}" ;;
        kvstore) echo --preset kvstore ;;
        *) echo "unknown shape: $1" >&2; return 1 ;;
    esac
}

echo "== building (release)" >&2
cargo build --release -p corekv-loadgen >&2
LOADGEN=target/release/corekv-loadgen
SERVER=$(cargo bench --bench minimal_server --no-run --message-format=json |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "minimal_server" \
            and m.get("executable"):
        print(m["executable"])')
[ -x "$SERVER" ] || { echo "cannot find the minimal_server bench executable" >&2; exit 1; }

# Everything from here on (the load generator, the sampler) stays off the server's CPU.
taskset -cp "$LOADGEN_CPU" $$ >/dev/null

# The server's utime + stime in clock ticks, into $ticks (every thread:
# /proc/PID/stat of the process covers its whole thread group).
cpu_ticks() {
    local stat fields
    read -r stat <"/proc/$1/stat"
    read -ra fields <<<"${stat##*) }" # fields from the 3rd (state) on
    ticks=$((fields[11] + fields[12]))  # the 14th and 15th: utime, stime
}

# The rescheduling interrupts SERVER_CPU has taken so far, into $ipis.
res_ipis() {
    local column=-1 i
    local -a cpus values
    {
        read -ra cpus
        while read -ra values; do
            [ "${values[0]}" = "RES:" ] && break
        done
    } </proc/interrupts
    for i in "${!cpus[@]}"; do
        [ "${cpus[$i]}" = "CPU$SERVER_CPU" ] && column=$i
    done
    [ "$column" -ge 0 ] || { echo "CPU$SERVER_CPU not in /proc/interrupts" >&2; return 1; }
    ipis=${values[$((column + 1))]}
}

server_pid=
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
trap stop_server EXIT

start_server() {
    taskset -c "$SERVER_CPU" "$SERVER" --variant "$1" --addr "127.0.0.1:$PORT" 2>"$OUT/$1.server.log" &
    server_pid=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "the $1 server did not start; its log:" >&2
    cat "$OUT/$1.server.log" >&2
    return 1
}

# Runs one shape against the running server and prints its row.
measure() {
    local variant=$1 shape=$2 json="$OUT/$1.$2.json" samples="$OUT/$1.$2.samples"
    local flags loadgen_pid status=0 ended
    flags=$(shape_flags "$shape")
    # shellcheck disable=SC2086 # the flags are words
    "$LOADGEN" --addr "127.0.0.1:$PORT" $flags --quiet --json "$json" >"$OUT/$variant.$shape.log" 2>&1 &
    loadgen_pid=$!
    : >"$samples"
    while kill -0 "$loadgen_pid" 2>/dev/null; do
        cpu_ticks "$server_pid"
        res_ipis
        echo "$EPOCHREALTIME $ticks $ipis" >>"$samples"
        sleep "$SAMPLE_S"
    done
    wait "$loadgen_pid" || status=$?
    ended=$EPOCHREALTIME
    if [ ! -s "$json" ]; then
        printf '%-8s %-8s load generator failed (exit %s): %s\n' "$variant" "$shape" "$status" \
            "$(tail -1 "$OUT/$variant.$shape.log")"
        return
    fi
    python3 - "$json" "$samples" "$ended" "$status" "$variant" "$shape" "$(getconf CLK_TCK)" \
        "$MARGIN_S" <<'EOF'
import json, sys
json_path, samples_path, ended, status, variant, shape, clk_tck, margin = sys.argv[1:]
report = json.load(open(json_path))
samples = [tuple(map(float, line.split())) for line in open(samples_path) if line.strip()]
start = float(ended) - report["elapsed_s"] + float(margin)
end = float(ended) - float(margin)
inside = [s for s in samples if start <= s[0] <= end]
row = f"{variant:<8} {shape:<8} {report['ops_per_s']:>12.0f} {report['messages_per_s']:>10.0f}"
if len(inside) < 2:
    row += "   (window too short to sample)"
else:
    (t0, cpu0, res0), (t1, cpu1, res1) = inside[0], inside[-1]
    seconds = t1 - t0
    messages = report["messages_per_s"] * seconds
    cpu_s = (cpu1 - cpu0) / float(clk_tck)
    row += f" {100 * cpu_s / seconds:>7.0f}% {1e6 * cpu_s / messages:>10.2f} {(res1 - res0) / messages:>9.3f}"
    row += f" {seconds:>6.2f}"
row += f" {report['errors']:>6}"
if status != "0":
    row += f"  FAILED (exit {status})"
print(row, flush=True)
EOF
}

echo "== server on CPU $SERVER_CPU, load generator on CPU $LOADGEN_CPU; reports in $OUT" >&2
printf '%-8s %-8s %12s %10s %8s %10s %9s %6s %6s\n' variant shape ops/s msgs/s "srv cpu" "cpu us/msg" \
    "IPIs/msg" "win s" errors
for variant in "${VARIANTS[@]}"; do
    start_server "$variant"
    for shape in $SHAPES; do
        measure "$variant" "$shape"
    done
    stop_server
done
