#!/usr/bin/env bash
# compare.sh - kvserve against llama.cpp on the same files, same threads, interleaved runs.
#
# Speed on these machines drifts by +-30% between runs, so a figure means something only
# next to llama.cpp's measured in the same run. This script makes the benchmark files, then
# runs llama-bench and kvserve's bench_model alternately (A B A B A B), takes medians, and
# prints one markdown table with ratios and the share of the memory-bandwidth roofline that
# kvserve's decode reaches (bytes of weights + KV read per token / probed read bandwidth).
# Then the long-context rows: sink_window, retrieval and pyramid at a 2k-token budget against
# llama.cpp's full-KV decode at the policy depth, and a long prefill under retrieval's sparse
# prefill against llama.cpp's full prefill.
#
#   bench/compare.sh [--reps N] [--depths "4096 16384"] [--files "f16 q8_0 ..."] [--out DIR]
#                    [--policy-files "q4_0"] [--policy-depth 16384] [--long-prefill 32768]
# Env: LLAMA_BIN (default ../shared/anchors/llama.cpp-b9749/bin; llama.cpp's column is
#      skipped with a note when it is absent), THREADS (default 2), BUILD (default build).
# --policy-files "" or --long-prefill 0 skips those rows.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=3
DEPTHS="4096 16384"
FILES="f16 q8_0 q4_0 q4_k_m q5_k_m kjv-tiny"
POLICY_FILES="q4_0"
POLICY_DEPTH=16384
LONG_PREFILL=32768
OUT=build/compare
while [ $# -gt 0 ]; do
    case "$1" in
    --reps) REPS=$2; shift 2 ;;
    --depths) DEPTHS=$2; shift 2 ;;
    --files) FILES=$2; shift 2 ;;
    --policy-files) POLICY_FILES=$2; shift 2 ;;
    --policy-depth) POLICY_DEPTH=$2; shift 2 ;;
    --long-prefill) LONG_PREFILL=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
BUILD=${BUILD:-build}
THREADS=${THREADS:-2}
LLAMA_BIN=${LLAMA_BIN:-../shared/anchors/llama.cpp-b9749/bin}
SHARED=${KVSERVE_SHARED:-../shared}
mkdir -p "$OUT"
rm -f "$OUT/llama_build"

have_llama=1
if [ ! -x "$LLAMA_BIN/llama-bench" ]; then
    have_llama=0
    echo "note: no llama-bench in $LLAMA_BIN: llama.cpp's column is skipped" >&2
fi
for b in bench_model make_model bench_bandwidth; do
    [ -x "$BUILD/bench/$b" ] || { echo "compare.sh: $BUILD/bench/$b missing (run scripts/setup.sh)" >&2; exit 1; }
done

# The 2k-token budget of each policy: sink_window keeps 4 sinks + 2044 recent tokens; retrieval
# 4 sinks + a 512-token window + 24 blocks of 64 (no dense layers, so every layer is sparse);
# pyramid an average of 2048 tokens per layer.
POLICIES=("sink_window:n_sink=4,window=2044"
          "retrieval:window=512,top_k=24,dense_layers=0"
          "pyramid:budget=2048")

# ---- files -------------------------------------------------------------------------------
model_path() { # name -> path, making the file on first use; "" when it cannot be made
    local name=$1 f f16
    if [ "$name" = kjv-tiny ]; then echo "$SHARED/models/kjv-tiny/kjv-tiny-f16.gguf"; return; fi
    f="$OUT/qwen2.5-0.5b-$name.gguf"
    f16="$OUT/qwen2.5-0.5b-f16.gguf"
    [ -s "$f16" ] || "$BUILD/bench/make_model" --shape qwen2.5-0.5b --type f16 \
        --vocab "$SHARED/vocab/ggml-vocab-qwen2.gguf" --out "$f16" >&2
    if [ ! -s "$f" ]; then
        if [ $have_llama = 1 ]; then
            "$LLAMA_BIN/llama-quantize" "$f16" "$f" "$(echo "$name" | tr a-z A-Z)" >/dev/null 2>&1 || rm -f "$f"
        else
            "$BUILD/bench/make_model" --shape qwen2.5-0.5b --type "$name" \
                --vocab "$SHARED/vocab/ggml-vocab-qwen2.gguf" --out "$f" >&2 || rm -f "$f"
        fi
    fi
    [ -s "$f" ] && echo "$f" || echo ""
}

# ---- one measurement each ------------------------------------------------------------------
# kvs FILE DEPTH [POLICY] -> "pp tg" (tokens/s, "-" when not measured, "U" when kvserve cannot
# load the file's tensor types); depth 0 measures pp512 and tg32, otherwise tg32@dN.
kvs() {
    local out args=(--model "$1" --threads "$THREADS" --reps 1)
    [ -n "${3:-}" ] && args+=(--kv-policy "$3")
    if [ "$2" = 0 ]; then args+=(--prompt 512 --gen 32); else args+=(--prompt 0 --gen 32 --depth "$2"); fi
    if ! out=$("$BUILD/bench/bench_model" "${args[@]}" 2>&1); then
        grep -q "not supported" <<<"$out" && echo "U U" || echo "- -"
        return
    fi
    if [ "$2" = 0 ]; then
        echo "$(sed -n 's/^pp512: *//p' <<<"$out") $(sed -n 's/^tg32: *//p' <<<"$out")"
    else
        echo "- $(sed -n "s/^tg32@d$2: *//p" <<<"$out")"
    fi
}
# kvs_prefill FILE N POLICY -> tokens/s of an N-token prefill
kvs_prefill() {
    "$BUILD/bench/bench_model" --model "$1" --threads "$THREADS" --reps 1 --prompt "$2" \
        --gen 0 --kv-policy "$3" 2>/dev/null | sed -n "s/^pp$2: *//p" | grep . || echo -
}
# llama FILE DEPTH [PROMPT] -> "pp tg"; DEPTH 0: pp512 and tg32; PROMPT set: ppPROMPT only
llama() {
    [ $have_llama = 1 ] || { echo "- -"; return; }
    local args=(-m "$1" -t "$THREADS" -r 1 -o jsonl)
    if [ -n "${3:-}" ]; then args+=(-p "$3" -n 0)
    elif [ "$2" = 0 ]; then args+=(-p 512 -n 32)
    else args+=(-p 0 -n 32 -d "$2"); fi
    local out rc=0
    out=$("$LLAMA_BIN/llama-bench" "${args[@]}" 2>/dev/null) || rc=$?
    if [ $rc = 132 ]; then echo "I I"; return; fi
    python3 -c '
import json, sys
pp = tg = "-"
for line in sys.stdin:
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if r.get("n_prompt", 0) > 0: pp = "%.2f" % r["avg_ts"]
    if r.get("n_gen", 0) > 0: tg = "%.2f" % r["avg_ts"]
    with open(sys.argv[1], "w") as f:
        f.write("build %s (%s)" % (r.get("build_number", "?"), r.get("build_commit", "?")))
print(pp, tg)' "$OUT/llama_build" <<<"$out" || echo "- -"
}
median() { tr ' ' '\n' | awk '/^[0-9.]+$/' | sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "-"}'; }
# a kvserve cell: "unsupported type" when the file has a tensor type kvserve lacks
cell() { grep -qw U <<<"$1" && echo "unsupported type" || median <<<"$1"; }
# a llama.cpp cell: "crashed (SIGILL)" when llama-bench died of an illegal instruction (the
# anchor builds use AVX-VNNI, VEX-encoded, which some CPUs of this kind lack)
lcell() { grep -qw I <<<"$1" && echo "crashed (SIGILL)" || median <<<"$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b == 0) print "-"; else printf "%.2fx", a / b }'; }

# ---- roofline ----------------------------------------------------------------------------
GBS=$("$BUILD/bench/bench_bandwidth" --threads "$THREADS" 2>/dev/null | sed -n 's/^bandwidth: *\([0-9.]*\).*/\1/p')
GBS=${GBS:--}
roofline() { # file depth tokens/s -> "NN%"
    local bpt
    bpt=$(python3 bench/gguf_info.py "$1" --bytes "$2" 2>/dev/null || echo -)
    awk -v g="$GBS" -v b="$bpt" -v t="$3" 'BEGIN { if (g == "-" || b == "-" || t !~ /^[0-9.]+$/) print "-"; else printf "%.1f%%", 100 * t * b / (g * 1e9) }'
}

# ---- run ---------------------------------------------------------------------------------
echo "| file | test | llama.cpp t/s | kvserve t/s | ratio | kvserve % of roofline |"
echo "|---|---|---|---|---|---|"
for name in $FILES; do
    f=$(model_path "$name")
    if [ -z "$f" ]; then echo "| $name | - | - | - | - | could not make the file |"; continue; fi
    for d in 0 $DEPTHS; do
        lp=""; lt=""; kp=""; kt=""
        for _ in $(seq "$REPS"); do
            read -r a b <<<"$(llama "$f" "$d")"; lp+=" $a"; lt+=" $b"
            read -r a b <<<"$(kvs "$f" "$d")"; kp+=" $a"; kt+=" $b"
        done
        kt_m=$(cell "$kt"); lt_m=$(lcell "$lt")
        if [ "$d" = 0 ]; then
            kp_m=$(cell "$kp"); lp_m=$(lcell "$lp")
            echo "| $name | pp512 | $lp_m | $kp_m | $(ratio "$kp_m" "$lp_m") | |"
            echo "| $name | tg32 | $lt_m | $kt_m | $(ratio "$kt_m" "$lt_m") | $(roofline "$f" "$d" "$kt_m") |"
        else
            echo "| $name | tg32@d$d | $lt_m | $kt_m | $(ratio "$kt_m" "$lt_m") | $(roofline "$f" "$d" "$kt_m") |"
        fi
    done
done

# Long context: each policy at a 2k budget against llama.cpp's full-KV decode at the same depth
# (the llama.cpp column is its full cache; the ratio is the speed-up the policy buys).
for name in $POLICY_FILES; do
    f=$(model_path "$name")
    [ -n "$f" ] || continue
    lt=""; declare -A kt=()
    for _ in $(seq "$REPS"); do
        read -r _a b <<<"$(llama "$f" "$POLICY_DEPTH")"; lt+=" $b"
        for p in "${POLICIES[@]}"; do
            read -r _a b <<<"$(kvs "$f" "$POLICY_DEPTH" "$p")"; kt[$p]+=" $b"
        done
    done
    for p in "${POLICIES[@]}"; do
        m=$(cell "${kt[$p]}"); l=$(lcell "$lt")
        echo "| $name | tg32@d$POLICY_DEPTH ${p%%:*} 2k vs full | $l | $m | $(ratio "$m" "$l") | |"
    done
    unset kt
    if [ "$LONG_PREFILL" != 0 ]; then
        lp=""; kp=""
        for _ in $(seq "$REPS"); do
            read -r a _b <<<"$(llama "$f" 0 "$LONG_PREFILL")"; lp+=" $a"
            kp+=" $(kvs_prefill "$f" "$LONG_PREFILL" retrieval)"
        done
        l=$(lcell "$lp"); m=$(median <<<"$kp")
        echo "| $name | pp$LONG_PREFILL retrieval sparse vs full | $l | $m | $(ratio "$m" "$l") | |"
    fi
done
echo
echo "threads $THREADS, medians of $REPS interleaved runs (llama.cpp then kvserve), probed read" \
    "bandwidth $GBS GB/s ($THREADS threads), load average $(cut -d' ' -f1-3 /proc/loadavg)," \
    "$(date -u +%Y-%m-%d), kvserve $(git rev-parse --short HEAD 2>/dev/null || echo '?')," \
    "llama.cpp $(cat "$OUT/llama_build" 2>/dev/null || echo absent) from $LLAMA_BIN (llama-bench defaults)." \
    "kvserve numerics: llama (the server's)."
