#!/usr/bin/env bash
# check_format.sh - fails if any C source or header of the tree differs from .clang-format.
# Usage: scripts/check_format.sh [clang-format binary]   (default: clang-format, Debian's)
# Checks the files git tracks under the layer folders, include/, bench/ and tests/, plus
# main.c; skips text/unicode_data.c, which scripts/gen_unicode.py writes. Prints each
# offending file with clang-format's diagnostics, then "check_format: N of M files differ".
# Fix with: clang-format -i FILE... (the same list: scripts/check_format.sh --list | xargs ...)
set -uo pipefail
cd "$(dirname "$0")/.."

CF=clang-format
LIST_ONLY=0
for a in "$@"; do
    case "$a" in
        --list) LIST_ONLY=1 ;;
        -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) CF="$a" ;;
    esac
done

mapfile -t files < <(git ls-files -- 'main.c' 'core/*.[ch]' 'text/*.[ch]' 'kvcache/*.[ch]' \
    'engine/*.[ch]' 'server/*.[ch]' 'cli/*.[ch]' 'include/*.h' 'bench/*.[ch]' 'tests/*.[ch]' |
    grep -v '^text/unicode_data\.c$')
if [ "$LIST_ONLY" = 1 ]; then printf '%s\n' "${files[@]}"; exit 0; fi
if ! command -v "$CF" >/dev/null; then
    echo "check_format: $CF not found (apt-get install clang-format)" >&2
    exit 2
fi
if [ "${#files[@]}" -eq 0 ]; then
    echo "check_format: no files found" >&2
    exit 2
fi

bad=0
for f in "${files[@]}"; do
    if ! out=$("$CF" --style=file --dry-run --Werror "$f" 2>&1); then
        bad=$((bad + 1))
        echo "$out" | head -20
    fi
done
echo "check_format: $bad of ${#files[@]} files differ from .clang-format"
[ "$bad" -eq 0 ]
