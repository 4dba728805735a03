#!/usr/bin/env bash
# fuzz-campaign.sh - a long libFuzzer campaign on one target, at the lowest CPU priority.
# Usage: scripts/fuzz-campaign.sh TARGET [RUNS] [BUILD_DIR]
#        scripts/fuzz-campaign.sh all [RUNS] [BUILD_DIR]     (every target, one after another)
#   TARGET: one of TARGETS below (every tests/fuzz/fuzz_*.c); RUNS: executions (default 10000000);
#   BUILD_DIR: a clang build with -Dfuzz=true (default build-asan, see .ci/run).
# The working corpus lives in $KVSERVE_FUZZ_DIR/<target> (default /tmp/kvserve-fuzz), seeded
# with the regression corpus; crashers are written to tests/fuzz/corpus/<target>/ so that
# they become regression inputs (replayed by the fuzz_*_replay tests and the smoke runs).
# libFuzzer's whole output (progress) goes to $KVSERVE_FUZZ_DIR/<target>.log; this prints the
# final statistics: record them in docs/reliability.md with the date, commit and corpus size.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGETS="gguf toml tokenizer jinja http persist grammar json_schema head_profile"
t=${1:?target: all or one of $TARGETS}; runs=${2:-10000000}; b=${3:-build-asan}
if [ "$t" = all ]; then
    for x in $TARGETS; do "$0" "$x" "$runs" "$b"; done
    exit 0
fi
case " $TARGETS " in *" $t "*) ;; *) echo "unknown target $t: one of $TARGETS" >&2; exit 2 ;; esac
exe="$b/tests/fuzz/fuzz_$t"
[ -x "$exe" ] || { echo "no $exe: build with CC=clang meson setup $b -Dfuzz=true" >&2; exit 2; }
work="${KVSERVE_FUZZ_DIR:-/tmp/kvserve-fuzz}/$t"
reg="tests/fuzz/corpus/$t"
mkdir -p "$work" "$reg"
export KVSERVE_SHARED="${KVSERVE_SHARED:-$(cd .. && pwd)/shared}"
echo "fuzz $t: $runs runs, commit $(git rev-parse --short HEAD), $(date -u +%F)"
# KVSERVE_FUZZ_TIME=S also stops the run after S seconds (a time-boxed campaign on a busy machine).
nice -n 19 "$exe" -runs="$runs" ${KVSERVE_FUZZ_TIME:+-max_total_time=$KVSERVE_FUZZ_TIME} \
    -max_len=65536 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$reg/" "$work" "$reg" 2>&1 | tee "$work.log" | grep -E "^(#[0-9]+ +(DONE|INITED)|Done|stat::|==|SUMMARY|artifact)" || true
echo "corpus: $(ls "$work" | wc -l) files, $(du -sk "$work" | cut -f1) KiB"
