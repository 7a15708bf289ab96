#!/usr/bin/env bash
# Connection reuse and PIPELINING towards the next hop, measured: the relay of
# benches/relay-setup.sh (N rewrite entries, durable acceptance, everything to smtp-sink),
# run once per setting of --connection-reuse-limit in the same sitting. Two measures each:
#   through: ../shared/bench/postfix-relay/bench.sh, acceptance and delivery at once;
#   drain: MESSAGES queued while the next hop is down, then the time from its first to its
#     last delivery once smtp-sink is up (delivery alone, acceptance out of the way).
# Ports differ from relay-setup.sh's (2625/2526), so it can run beside the side-by-side
# benchmark's relays.
#
#   benches/relay-reuse.sh [N] [MESSAGES] [SESSIONS]     # default 100000 5000 20
#
# Environment: DIR (default /tmp/mailflow-reuse-bench), PORT (2725), SINK_PORT (2726),
# LIMITS (the --connection-reuse-limit values to compare, default "0 100").
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-100000}"; M="${2:-5000}"; S="${3:-20}"
DIR="${DIR:-/tmp/mailflow-reuse-bench}"
PORT="${PORT:-2725}"; SINK_PORT="${SINK_PORT:-2726}"
LIMITS="${LIMITS:-0 100}"
BENCH="$(pwd)/../shared/bench/postfix-relay/bench.sh"
mkdir -p "$DIR"

. benches/bench-rules.sh
bench_rules "$DIR" "$N" bench.mailflow "$PORT" "$SINK_PORT"

start_relay() {
    rm -rf "$DIR/spool" "$DIR/ready.json"
    target/release/mailflow relay "$DIR/bench.mailflow" --spool "$DIR/spool" \
        --hostname relay.bench.test --retry-min 1s --retry-max 1s --queue-interval 1s \
        --log warn --connection-reuse-limit "$1" > "$DIR/ready.json" 2> "$DIR/relay.log" &
    pid=$!
    for _ in $(seq 1 300); do
        [ -s "$DIR/ready.json" ] && break
        sleep 0.1
    done
}

sink_count() {
    tr '\r' '\n' < "$DIR/sink.log" | grep -Eo 'mesg=[0-9]+' | tail -1 | cut -d= -f2 || true
}

drain() {
    start_relay "$1"
    smtp-source -c -s "$S" -m "$M" -r 1 -f user1@tenant1.example.com \
        -t user2@partner.example.org -l 2000 "127.0.0.1:$PORT" > /dev/null 2>&1
    ( cd "$DIR" && exec smtp-sink -u nobody -c "127.0.0.1:$SINK_PORT" 1000 > "$DIR/sink.log" 2>&1 ) &
    sink=$!
    first=""
    for _ in $(seq 1 12000); do
        n=$(sink_count)
        [ -z "$first" ] && [ "${n:-0}" -gt 0 ] && first=$(date +%s.%N) && n0=$n
        [ "${n:-0}" -ge "$M" ] && break
        sleep 0.01
    done
    end=$(date +%s.%N)
    kill "$sink" "$pid"
    wait "$sink" "$pid" 2>/dev/null || true
    python3 -c "import sys;f,e,m,n0=map(float,sys.argv[1:5]);print(f'drain: delivered {(m-n0)/(e-f):.0f} msg/s')" \
        "$first" "$end" "$M" "$n0"
}

cargo build --release --quiet
for limit in $LIMITS; do
    echo -n "--connection-reuse-limit $limit: "
    drain "$limit"
done
for limit in $LIMITS; do
    start_relay "$limit"
    echo -n "--connection-reuse-limit $limit: through: "
    SINK="127.0.0.1:$SINK_PORT" "$BENCH" "127.0.0.1:$PORT" "$M" "$S" 1
    kill "$pid"
    wait "$pid" 2>/dev/null || true
done
