#!/bin/sh
# make_fixtures.sh - rebuilds tests/data/models/: small random-weight models of each supported
# architecture (scripts/fixtures/make_models.py, gguf-py), quantized by llama-quantize to every
# type a user can download, and llama.cpp's greedy tokens, top logprobs and perplexity for each
# file (scripts/fixtures/record.py). The tests read the stored results; they never run llama.cpp.
#
# usage: scripts/make_fixtures.sh [ARCH...]      (default: the five architectures below; the
#        extra files: TYPES="F32 Q8_0" scripts/make_fixtures.sh llamayarn phi3long phi3ext)
# env:   LLAMA_BIN  llama.cpp b9749 bin folder (default ../shared/anchors/llama.cpp-b9749/bin)
#        GGUF_PY    gguf-py folder (default ../shared/anchors/gguf-py)
#        TYPES      quantization types (default: all below)
#        FORCE=1    remake files whose fixture already exists
# Needs Debian's python3-numpy (/usr/bin/python3).
set -eu
cd "$(dirname "$0")/.."
LLAMA_BIN=${LLAMA_BIN:-../shared/anchors/llama.cpp-b9749/bin}
GGUF_PY=${GGUF_PY:-../shared/anchors/gguf-py}
VOCAB=${VOCAB:-../shared/vocab/ggml-vocab-llama-spm.gguf}
TYPES=${TYPES:-"F32 F16 BF16 Q8_0 Q4_0 Q6_K Q4_1 Q5_0 Q5_1 Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M IQ4_NL IQ4_XS"}
OUT=tests/data/models
PY="env PYTHONPATH=$GGUF_PY /usr/bin/python3"
ARCHS=${*:-"llama3 qwen2 qwen3 gemma3 phi3"}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The anchor builds use AVX-VNNI (VEX VPDPBUSD) in every quantized dot kernel; on a CPU with
# only AVX512-VNNI they die with SIGILL. Rewrite those instructions to their EVEX form at load
# time (scripts/fixtures/vnni_emu.c; identical results).
if ! grep -qw avx_vnni /proc/cpuinfo; then
    cc -O2 -shared -fPIC -o "$tmp/vnni_emu.so" scripts/fixtures/vnni_emu.c
    objdump -d "$LLAMA_BIN/libggml-cpu.so.0" | grep '{vex} vpdpbusd' |
        awk -F'\t' '{split($1, a, ":"); n = split($2, b, " "); printf "%s %d\n", a[1], n}' >"$tmp/vnni_sites"
    export LD_PRELOAD="$tmp/vnni_emu.so" VNNI_SITES="$tmp/vnni_sites"
fi
mkdir -p "$OUT"
for a in $ARCHS; do
    $PY scripts/fixtures/make_models.py "$VOCAB" "$tmp" "$a" >/dev/null
    mkdir -p "$OUT/$a"
    for t in $TYPES; do
        f="$OUT/$a/$a-$t.gguf"
        # resume: a file whose fixture exists is kept (FORCE=1 remakes everything)
        [ "${FORCE:-0}" = 1 ] || [ ! -f "${f%.gguf}.json" ] || continue
        "$LLAMA_BIN/llama-quantize" "$tmp/$a-F32.gguf" "$f" "$t" 2 >"$tmp/quant.log" 2>&1 ||
            { cat "$tmp/quant.log"; exit 1; }
        $PY scripts/fixtures/record.py "$LLAMA_BIN" "$f" "$OUT/ppl-text.txt" "${f%.gguf}.json"
        echo "$f"
    done
done
