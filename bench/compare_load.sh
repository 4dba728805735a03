#!/usr/bin/env bash
# compare_load.sh - serving throughput and latency of kvserve against llama-server.
#
# Starts `kvserve serve` and `llama-server -np 4` on free ports of 127.0.0.1 with the same
# file and threads, then runs bench_load (streaming /v1/completions, greedy, ignore_eos so
# every request generates exactly MAX_TOKENS) against each in turn, A B A B A B, and prints a
# markdown table of medians: aggregate tokens/s, TTFT p50/p99 and inter-token p50/p99 for 4
# and 16 clients. Both servers are stopped by PID on exit.
#
#   bench/compare_load.sh [--model FILE] [--clients "4 16"] [--tokens 64] [--reps 3]
# Env: LLAMA_BIN (default ../shared/anchors/llama.cpp-b9749/bin; its rows are skipped with a
#      note when llama-server is absent), THREADS (default 2), BUILD (default build).
# Defaults: the model is build/compare/qwen2.5-0.5b-q4_0.gguf (from bench/compare.sh) when it
# exists, else kjv-tiny. kvserve runs with its default [limits] max_concurrent (16);
# llama-server with 4 slots of 1024 tokens (-np 4 -c 4096).
set -euo pipefail
cd "$(dirname "$0")/.."

SHARED=${KVSERVE_SHARED:-../shared}
MODEL=build/compare/qwen2.5-0.5b-q4_0.gguf
[ -s "$MODEL" ] || MODEL=$SHARED/models/kjv-tiny/kjv-tiny-f16.gguf
CLIENTS="4 16"
TOKENS=64
REPS=3
while [ $# -gt 0 ]; do
    case "$1" in
    --model) MODEL=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --tokens) TOKENS=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare_load.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
BUILD=${BUILD:-build}
THREADS=${THREADS:-2}
LLAMA_BIN=${LLAMA_BIN:-../shared/anchors/llama.cpp-b9749/bin}
for b in kvserve bench/bench_load; do
    [ -x "$BUILD/$b" ] || { echo "compare_load.sh: $BUILD/$b missing (run scripts/setup.sh)" >&2; exit 1; }
done
have_llama=1
if [ ! -x "$LLAMA_BIN/llama-server" ]; then
    have_llama=0
    echo "note: no llama-server in $LLAMA_BIN: llama.cpp's rows are skipped" >&2
fi

TMP=$(mktemp -d)
KVS_PID=""; LLAMA_PID=""
cleanup() {
    [ -n "$KVS_PID" ] && kill "$KVS_PID" 2>/dev/null && wait "$KVS_PID" 2>/dev/null || true
    [ -n "$LLAMA_PID" ] && kill "$LLAMA_PID" 2>/dev/null && wait "$LLAMA_PID" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_healthy() { # port pid name
    for _ in $(seq 600); do
        kill -0 "$2" 2>/dev/null || { echo "compare_load.sh: $3 exited (log in $TMP)" >&2; cat "$TMP/$3.log" >&2; exit 1; }
        python3 -c 'import sys, urllib.request
try: sys.exit(0 if urllib.request.urlopen("http://127.0.0.1:%s/health" % sys.argv[1], timeout=2).status == 200 else 1)
except Exception: sys.exit(1)' "$1" && return 0
        sleep 0.5
    done
    echo "compare_load.sh: $3 did not become healthy" >&2; exit 1
}

KVS_PORT=$(free_port)
printf '[server]\nhost = "127.0.0.1"\nport = %d\n[model]\nctx = 4096\n' "$KVS_PORT" >"$TMP/kvserve.toml"
"$BUILD/kvserve" serve --config "$TMP/kvserve.toml" --model "$MODEL" --threads "$THREADS" \
    >"$TMP/kvserve.log" 2>&1 &
KVS_PID=$!
wait_healthy "$KVS_PORT" "$KVS_PID" kvserve
if [ $have_llama = 1 ]; then
    LLAMA_PORT=$(free_port)
    "$LLAMA_BIN/llama-server" -m "$MODEL" -t "$THREADS" -np 4 -c 4096 --host 127.0.0.1 \
        --port "$LLAMA_PORT" >"$TMP/llama.log" 2>&1 &
    LLAMA_PID=$!
    wait_healthy "$LLAMA_PORT" "$LLAMA_PID" llama
fi

# one bench_load run -> "tok/s ttft50 ttft99 itl50 itl99" (or dashes when it failed)
load() { # port clients
    "$BUILD/bench/bench_load" 127.0.0.1 "$1" "$2" "$TOKENS" 2>/dev/null | python3 -c '
import re, sys
m = re.search(r"ok (\d+)/(\d+), .*= ([0-9.]+) tokens/s; ttft p50 ([0-9.]+) ms p99 ([0-9.]+) ms; "
              r"itl p50 ([0-9.]+) ms p99 ([0-9.]+) ms", sys.stdin.read())
print(" ".join(m.groups()[2:]) if m and m.group(1) == m.group(2) else "- - - - -")'
}
median() { tr ' ' '\n' | grep -v '^-*$' | sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "-"}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b == 0) print "-"; else printf "%.2fx", a / b }'; }

echo "| clients | server | tokens/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms |"
echo "|---|---|---|---|---|---|---|"
for n in $CLIENTS; do
    declare -a K=("" "" "" "" "") L=("" "" "" "" "")
    for _ in $(seq "$REPS"); do
        if [ $have_llama = 1 ]; then
            read -r -a v <<<"$(load "$LLAMA_PORT" "$n")"
            for i in 0 1 2 3 4; do L[$i]+=" ${v[$i]}"; done
        fi
        read -r -a v <<<"$(load "$KVS_PORT" "$n")"
        for i in 0 1 2 3 4; do K[$i]+=" ${v[$i]}"; done
    done
    km=(); lm=()
    for i in 0 1 2 3 4; do km+=("$(median <<<"${K[$i]}")"); lm+=("$(median <<<"${L[$i]}")"); done
    [ $have_llama = 1 ] && echo "| $n | llama-server -np 4 | ${lm[0]} | ${lm[1]} | ${lm[2]} | ${lm[3]} | ${lm[4]} |"
    echo "| $n | kvserve | ${km[0]} | ${km[1]} | ${km[2]} | ${km[3]} | ${km[4]} |"
    [ $have_llama = 1 ] && echo "| $n | kvserve / llama-server | $(ratio "${km[0]}" "${lm[0]}") | | | | $(ratio "${lm[4]}" "${km[4]}") (llama p99 / kvserve p99) |"
done
echo
echo "$(basename "$MODEL"), threads $THREADS, $TOKENS tokens per request (ignore_eos), medians of" \
    "$REPS interleaved runs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%d)," \
    "kvserve $(git rev-parse --short HEAD 2>/dev/null || echo '?')."
