#!/bin/sh
# eval.sh - regenerates the policy evaluation: docs/eval-policies.md and the SVG charts the
# README shows (docs/eval-accuracy-budget.svg, docs/eval-heatmap.svg, docs/eval-ppl-length.svg)
# from one bench/bench_eval run over every registered policy on kjv-tiny (`hybrid` with the
# head profile `kvserve profile-heads` measures first, build/eval/heads.toml).
#
#   scripts/eval.sh [extra bench_eval flags, e.g. --trials 24 --lengths 1,4]
#
# Needs a built tree (build/) and ../shared/models/kjv-tiny. Runs on 2 threads; on an idle
# 2-core machine it takes several minutes (the 16x prompts under full attention dominate).
set -eu
cd "$(dirname "$0")/.."
M=${KVSERVE_SHARED:-../shared}/models/kjv-tiny
ninja -C build bench/bench_eval kvserve >/dev/null
mkdir -p build/eval
# the head profile `hybrid` needs, measured on the same model (a few seconds)
build/kvserve profile-heads --model "$M/kjv-tiny-f16.gguf" --out build/eval/heads.toml >/dev/null
build/bench/bench_eval --model "$M/kjv-tiny-f16.gguf" --text "$M/heldout-public.txt" \
    --profile build/eval/heads.toml \
    --json build/eval/eval.json --threads 2 "$@" | tee build/eval/eval.txt
python3 scripts/eval_charts.py build/eval/eval.json docs \
    --command "scripts/eval.sh $*"
echo "wrote docs/eval-policies.md and docs/eval-*.svg"
