#!/usr/bin/env bash
# Times `mailflow check` (release build) on a generated rule file with 100,000 rewrite entries
# and 10,000 transport rules, and reports its peak memory. The goal: under one second.
#
#   benches/check-large.sh [ENTRIES [RULES]]
#
# Environment: OUT (default /tmp/large.mailflow) is where the file is written; RUNS (default 5)
# how many timed runs. Uses hyperfine too when installed; GNU time (/usr/bin/time) for CPU
# time and peak memory, else bash's `time` for wall time only.
set -euo pipefail

cd "$(dirname "$0")/.."
ENTRIES="${1:-100000}"
RULES="${2:-10000}"
OUT="${OUT:-/tmp/large.mailflow}"
RUNS="${RUNS:-5}"
BIN=target/release/mailflow

echo "== building (cargo build --release)"
cargo build --release --quiet

echo "== generating $OUT: $ENTRIES rewrite entries, $RULES transport rules"
python3 benches/gen_rules.py "$ENTRIES" "$RULES" > "$OUT"
echo "   $(wc -c < "$OUT") bytes, $(wc -l < "$OUT") lines"

echo "== the file must check clean"
if ! "$BIN" check "$OUT"; then
    echo "error: the generated file does not check clean; the timings would be meaningless" >&2
    exit 1
fi

echo "== timing: $BIN check $OUT ($RUNS runs)"
if command -v hyperfine > /dev/null; then
    hyperfine --warmup 1 --runs "$RUNS" "$BIN check $OUT"
fi
# Each run with GNU time when there is one (wall and CPU seconds, peak memory), else bash's
# `time` (wall seconds only). CPU time is the steadier figure on a busy machine.
if [ -x /usr/bin/time ] && /usr/bin/time -f %e true > /dev/null 2>&1; then
    "$BIN" check "$OUT" > /dev/null # warm-up: the file into the page cache
    for i in $(seq 1 "$RUNS"); do
        /usr/bin/time -f "%e %U %S %M" -o /tmp/check-large.time "$BIN" check "$OUT" > /dev/null
        read -r wall user sys rss < <(tail -n 1 /tmp/check-large.time)
        cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
        printf '   run %d: %s s wall, %s s cpu (user %s + sys %s), peak RSS %d KiB\n' \
            "$i" "$wall" "$cpu" "$user" "$sys" "$rss"
        echo "$wall $cpu $rss" >> /tmp/check-large.runs.$$
    done
    sort -n /tmp/check-large.runs.$$ | awk '
        { w[NR] = $1; c[NR] = $2; r = ($3 > r) ? $3 : r; sw += $1; sc += $2 }
        END {
            mw = (NR % 2) ? w[(NR + 1) / 2] : (w[NR / 2] + w[NR / 2 + 1]) / 2
            printf "   wall time: min %.3f s, median %.3f s, mean %.3f s, max %.3f s\n", w[1], mw, sw / NR, w[NR]
            printf "   cpu time (user+sys): mean %.3f s\n", sc / NR
            printf "   peak memory (max RSS): %d KiB (%.1f MiB)\n", r, r / 1024
        }'
    rm -f /tmp/check-large.runs.$$ /tmp/check-large.time
else
    TIMEFORMAT=%R
    times=()
    for i in $(seq 1 "$RUNS"); do
        t=$( { time "$BIN" check "$OUT" > /dev/null; } 2>&1 )
        times+=("$t")
        printf '   run %d: %s s\n' "$i" "$t"
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '
        { v[NR] = $1; sum += $1 }
        END {
            median = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "   wall time: min %.3f s, median %.3f s, mean %.3f s, max %.3f s\n", v[1], median, sum / NR, v[NR]
        }'
    echo "   (GNU time not installed: no cpu time or peak memory figures)"
fi
