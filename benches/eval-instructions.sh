#!/usr/bin/env bash
# Instructions per evaluation of the `eval` bench's message, counted by callgrind: a figure
# that does not move with the load of a shared machine, where criterion's times move by a
# third. Counts only what `evaluate` runs (dropping the verdict is outside it).
#
#   benches/eval-instructions.sh [10|100000]    (default 10: the small rule set; the large
#                                                one takes a few minutes under valgrind)
#
# Needs valgrind (callgrind_annotate comes with it).
set -euo pipefail
size="${1:-10}"
cd "$(dirname "$0")/.."
bin=$(cargo bench --bench eval --no-run 2>&1 | sed -n 's/.*Executable benches\/eval.rs (\(.*\))/\1/p' | tail -1)
[ -n "$bin" ] || { echo "could not build the eval bench" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
valgrind --tool=callgrind --callgrind-out-file="$out/cg" \
    --toggle-collect='mailflow::eval::stages::evaluate' \
    "$bin" --bench "evaluate/3-recipients/mailflow/$size-" --profile-time 1 \
    >"$out/log" 2>&1
total=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$out/log" | sort -n | tail -1 || true)
calls=$(callgrind_annotate --tree=calling "$out/cg" 2>/dev/null \
    | grep -A1 '\*  .*stages::evaluate \[' \
    | sed -n 's/.*evaluate_inner (\([0-9,]*\)x).*/\1/p' | tr -d , | head -1 || true)
[ -n "$total" ] && [ -n "$calls" ] && [ "$calls" -gt 0 ] || {
    echo "no evaluations counted (see $out/log)" >&2
    trap - EXIT
    exit 1
}
echo "$size entries: $((total / calls)) instructions per evaluation ($calls evaluations)"
