#!/usr/bin/env bash
# kv_types.sh - KV storage types side by side with llama.cpp: bytes per token and decode speed
# (tg32) at depth 4096 and 16384, per K/V type pair, on one model. For the lead to fold into
# bench/compare.sh.
#
# Usage: bench/kv_types.sh [MODEL] [TYPES]     (run from the repository root, after a build)
#   MODEL  default ../shared/models/kjv-tiny/kjv-tiny-f16.gguf
#   TYPES  (or env TYPES) space-separated K/V pairs, default "f16/f16 q8_0/q8_0 q4_0/q4_0 f16/q8_0
#          f16/q4_0 kivi4/kivi4 kivi2/kivi2" (llama.cpp has no kivi types: "-" in its column)
# Env: LLAMA_BIN (default ../shared/anchors/llama.cpp-b9749/bin; absent = kvserve only),
#      DEPTHS (default "4096 16384"), THREADS (default 2).
# kvserve: bench_longctx speed (a fresh process prefills DEPTH tokens of filler with full
# attention, then decodes 32 tokens; decode tokens/s). llama.cpp: llama-bench -d DEPTH -n 32
# -fa on -ctk K -ctv V (tg32 at that depth). A llama.cpp run that fails prints its exit code
# (its AVX-VNNI q8_0 dot dies with SIGILL, 132, on CPUs without AVX-VNNI).
set -u
MODEL=${1:-../shared/models/kjv-tiny/kjv-tiny-f16.gguf}
TYPES=${2:-${TYPES:-"f16/f16 q8_0/q8_0 q4_0/q4_0 f16/q8_0 f16/q4_0 kivi4/kivi4 kivi2/kivi2"}}
LLAMA_BIN=${LLAMA_BIN:-../shared/anchors/llama.cpp-b9749/bin}
DEPTHS=${DEPTHS:-"4096 16384"}
THREADS=${THREADS:-2}
FILLER=$(dirname "$MODEL")/heldout-public.txt
[ -f "$FILLER" ] || FILLER=""

echo "| K / V | bytes/token | depth | kvserve tg32 t/s | llama.cpp tg32 t/s |"
echo "|---|---|---|---|---|"
for kv in $TYPES; do
    k=${kv%/*}
    v=${kv#*/}
    bpt=$(./build/bench/bench_longctx --model "$MODEL" speed --ctx 64 \
          --gen 1 --policies full --threads 1 --k-dtype "$k" --v-dtype "$v" \
          ${FILLER:+--filler "$FILLER"} 2>&1 | grep -o 'KV [0-9]* bytes/token' | grep -o '[0-9]*')
    for d in $DEPTHS; do
        ours=$(./build/bench/bench_longctx --model "$MODEL" speed --ctx "$d" --gen 32 \
               --policies full --threads "$THREADS" --k-dtype "$k" --v-dtype "$v" \
               ${FILLER:+--filler "$FILLER"} 2>&1 | awk -F'|' '/ full /{gsub(/ /,"",$5); print $5}')
        theirs="-"
        if [ -x "$LLAMA_BIN/llama-bench" ] && [ "${k#kivi}" = "$k" ] && [ "${v#kivi}" = "$v" ]; then
            out=$(LD_LIBRARY_PATH="$LLAMA_BIN" "$LLAMA_BIN/llama-bench" -m "$MODEL" -p 0 -n 32 \
                  -d "$d" -t "$THREADS" -r 1 -fa on -ctk "$k" -ctv "$v" -o csv 2>/dev/null)
            rc=$?
            if [ $rc -eq 0 ]; then
                theirs=$(echo "$out" | python3 -c 'import csv, sys
print(next(csv.DictReader(sys.stdin))["avg_ts"])')
            else
                theirs="exit $rc"
            fi
        fi
        echo "| $k / $v | ${bpt:-?} | $d | ${ours:-?} | $theirs |"
    done
done
