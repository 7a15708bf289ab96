#!/usr/bin/env bash
# The queue through a next hop's outage (issue 14): a relay with the 100,000-entry benchmark
# rule set whose only next hop is down. Measures, in one sitting:
#   - acceptance (msg/s, smtp-source: SESSIONS sessions, 2 KB messages) with 0, 10k, 50k and
#     100k messages queued behind the dead next hop;
#   - the relay's CPU while idle with the whole queue waiting, its RSS, the spool's size;
#   - restart time with the queue (SIGTERM, start, until the ready line);
#   - the time to drain everything once the next hop (smtp-sink) is back.
#
#   benches/queue-outage.sh [QUEUED=100000] [ROUND=2000] [SESSIONS=20]
#
# Needs Postfix's smtp-source and smtp-sink (Debian's postfix package). Environment: DIR
# (default /tmp/mailflow-outage) for the rules, spool and logs; RETRY_MAX (default 60s) is
# the longest backoff, so the drain starts at most that long after the next hop is back.
set -euo pipefail
cd "$(dirname "$0")/.."
QUEUED="${1:-100000}"
ROUND="${2:-2000}"
SESSIONS="${3:-20}"
DIR="${DIR:-/tmp/mailflow-outage}"
RETRY_MAX="${RETRY_MAX:-60s}"
PORT=2635
HOP=2536
ADMIN=2636
command -v smtp-source > /dev/null || {
    echo "needs smtp-source and smtp-sink: apt-get install postfix" >&2
    exit 2
}
mkdir -p "$DIR"
rm -rf "$DIR/spool"

. benches/bench-rules.sh
bench_rules "$DIR" 100000 outage.mailflow "$PORT" "$HOP" "max-connections-per-source 100"

cargo build --release --quiet
BIN=target/release/mailflow
"$BIN" check "$DIR/outage.mailflow" | tail -1

start_relay() {
    : > "$DIR/ready.json"
    nohup "$BIN" relay "$DIR/outage.mailflow" --spool "$DIR/spool" \
        --hostname relay.bench.test --retry-min 10s --retry-max "$RETRY_MAX" \
        --admin "127.0.0.1:$ADMIN" --log warn \
        > "$DIR/ready.json" 2>> "$DIR/relay.log" &
    for _ in $(seq 1 6000); do
        [ -s "$DIR/ready.json" ] && break
        sleep 0.01
    done
    PID=$(cat "$DIR/spool/mailflow.pid")
}

queued() {
    curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^mailflow_queue_size /{print $2}'
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Accepted msg/s for one round of ROUND messages.
round() {
    local t0 t1
    t0=$(date +%s.%N)
    smtp-source -s "$SESSIONS" -m "$ROUND" -l 2000 -f user1@tenant1.example.com \
        -t user2@partner.example.org "127.0.0.1:$PORT" >> "$DIR/source.log" 2>&1 || true
    t1=$(date +%s.%N)
    python3 -c "import sys;print(f'{float(sys.argv[3])/(float(sys.argv[2])-float(sys.argv[1])):.0f}')" \
        "$t0" "$t1" "$ROUND"
}

# Queue up to N messages (fast, more sessions), not timed.
fill_to() {
    local have need
    have=$(queued)
    while [ "$have" -lt "$1" ]; do
        need=$(($1 - have))
        smtp-source -s 50 -m "$need" -l 2000 -f user1@tenant1.example.com \
            -t user2@partner.example.org "127.0.0.1:$PORT" >> "$DIR/source.log" 2>&1 || true
        have=$(queued)
    done
}

start_relay
echo "relay pid $PID; next hop 127.0.0.1:$HOP is down"
declare -A RATE
for level in 0 10000 50000 "$QUEUED"; do
    [ "$level" -gt "$QUEUED" ] && continue
    fill_to "$level"
    before=$(queued)
    RATE[$level]=$(round)
    echo "queued $before: accepted ${RATE[$level]} msg/s"
done

sleep 5
t0=$(cpu_ticks "$PID")
sleep 30
t1=$(cpu_ticks "$PID")
hz=$(getconf CLK_TCK)
idle=$(python3 -c "import sys;print(f'{(int(sys.argv[2])-int(sys.argv[1]))/int(sys.argv[3])/30*100:.2f}')" "$t0" "$t1" "$hz")
total=$(queued)
rss=$(awk '/VmRSS/{print $2}' "/proc/$PID/status")
hwm=$(awk '/VmHWM/{print $2}' "/proc/$PID/status")
spool=$(du -sb "$DIR/spool/queue" | cut -f1)
echo "idle with $total queued: ${idle}% of a core over 30 s; RSS $((rss / 1024)) MB (peak $((hwm / 1024)) MB); spool $((spool / 1048576)) MB"

kill -TERM "$PID"
while kill -0 "$PID" 2> /dev/null; do sleep 0.05; done
t0=$(date +%s.%N)
start_relay
t1=$(date +%s.%N)
echo "restart with $(queued) queued: $(python3 -c "import sys;print(f'{float(sys.argv[2])-float(sys.argv[1]):.2f}')" "$t0" "$t1") s to the ready line"

# The next hop comes back.
( cd "$DIR" && exec smtp-sink -u nobody "127.0.0.1:$HOP" 1000 > "$DIR/sink.log" 2>&1 ) &
SINK=$!
trap 'kill $SINK 2> /dev/null || true; kill $PID 2> /dev/null || true' EXIT
t0=$(date +%s.%N)
left=$(queued)
while [ "$left" -gt 0 ]; do
    sleep 1
    left=$(queued)
done
t1=$(date +%s.%N)
echo "drained $total messages in $(python3 -c "import sys;print(f'{float(sys.argv[2])-float(sys.argv[1]):.0f}')" "$t0" "$t1") s after the next hop came back (includes up to $RETRY_MAX of backoff)"
python3 -c "import sys;a,b=float(sys.argv[1]),float(sys.argv[2]);print(f'acceptance at {sys.argv[3]} queued: {b/a*100:.0f}% of the empty-queue rate')" \
    "${RATE[0]}" "${RATE[$QUEUED]}" "$QUEUED"
