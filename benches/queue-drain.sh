#!/usr/bin/env bash
# `mailflow queue drain` (issue 17): how fast a stopped node's queue is handed to a peer. A
# relay with the benchmark rule set (1,000 rewrite entries) queues QUEUED messages (2 KB,
# smtp-source, SESSIONS sessions) behind a next hop that is down and is stopped; its queue is
# then drained (timed) to
#   1. Postfix's smtp-sink (the drain's own cost: one connection, a transaction per message,
#      each outcome synced to the spool before the next), and
#   2. after queueing again, a second mailflow relay (the real case: the peer syncs each
#      message to its own spool before its 250).
#
#   benches/queue-drain.sh [QUEUED=5000] [SESSIONS=20]
#
# Needs smtp-source and smtp-sink (Debian's postfix package). Environment: DIR (default
# /tmp/mailflow-drain); BIN (default: target/release/mailflow, built here; name
# target/debug/mailflow to measure a debug build without building).
set -euo pipefail
cd "$(dirname "$0")/.."
QUEUED="${1:-5000}"
SESSIONS="${2:-20}"
DIR="${DIR:-/tmp/mailflow-drain}"
PORT=2645
HOP=2546
PEER=2647
ADMIN=2648
command -v smtp-source > /dev/null || {
    echo "needs smtp-source and smtp-sink: apt-get install postfix" >&2
    exit 2
}
mkdir -p "$DIR"
rm -rf "$DIR/spool" "$DIR/peer"
. benches/bench-rules.sh
bench_rules "$DIR" 1000 drain.mailflow "$PORT" "$HOP"
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=target/release/mailflow
fi
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null || true; done' EXIT

# Starts a relay on SPOOL listening on LISTEN (next hop down), waits for its ready line.
relay() {
    local spool=$1 listen=$2 admin=$3
    : > "$DIR/ready.json"
    "$BIN" relay "$DIR/drain.mailflow" --spool "$spool" --listen "Loopback=127.0.0.1:$listen" \
        --admin "127.0.0.1:$admin" --hostname relay.bench.test --retry-min 1h --log warn \
        > "$DIR/ready.json" 2>> "$DIR/relay.log" &
    PIDS+=($!)
    for _ in $(seq 1 6000); do
        [ -s "$DIR/ready.json" ] && break
        sleep 0.01
    done
}

queued() {
    curl -s "http://127.0.0.1:$1/metrics" | awk '/^mailflow_queue_size /{print $2}'
}

stop() {
    local pid
    pid=$(cat "$1/mailflow.pid")
    kill -TERM "$pid"
    while kill -0 "$pid" 2> /dev/null; do sleep 0.05; done
}

# Queues QUEUED messages on the node (a relay on DIR/spool), then stops it.
fill() {
    relay "$DIR/spool" "$PORT" "$ADMIN"
    local have
    have=$(queued "$ADMIN")
    while [ "$have" -lt "$QUEUED" ]; do
        smtp-source -s "$SESSIONS" -m $((QUEUED - have)) -l 2000 -f user1@tenant1.example.com \
            -t user2@partner.example.org "127.0.0.1:$PORT" >> "$DIR/source.log" 2>&1 || true
        have=$(queued "$ADMIN")
    done
    stop "$DIR/spool"
}

# Drains the node to 127.0.0.1:PEER; prints messages and seconds.
timed_drain() {
    local t0 t1
    t0=$(date +%s.%N)
    "$BIN" queue drain --spool "$DIR/spool" --to "127.0.0.1:$PEER" --hostname node.bench.test \
        > "$DIR/drain.log"
    t1=$(date +%s.%N)
    tail -1 "$DIR/drain.log"
    python3 -c "import sys;d=float(sys.argv[2])-float(sys.argv[1]);print(f'{d:.2f} s, {int(sys.argv[3])/d:.0f} msg/s')" \
        "$t0" "$t1" "$QUEUED"
}

fill
( cd "$DIR" && exec smtp-sink -u nobody "127.0.0.1:$PEER" 1000 > "$DIR/sink.log" 2>&1 ) &
PIDS+=($!)
sleep 0.5
echo "to smtp-sink:"
timed_drain
kill "${PIDS[-1]}"
wait "${PIDS[-1]}" 2> /dev/null || true

fill
relay "$DIR/peer" "$PEER" $((ADMIN + 1))
echo "to a mailflow relay:"
timed_drain
echo "the peer holds $(queued $((ADMIN + 1))) messages"
