#!/usr/bin/env bash
# Sets up mailflow for the side-by-side relay benchmark of ../shared/bench/postfix-relay/:
# the same work as that Postfix (N per-address rewrite entries userI@tenant1.example.com ->
# userI@shared.example.com plus the domain entry tenant2.example.com -> shared.example.com,
# durable acceptance, everything forwarded to 127.0.0.1:2526), listening on 127.0.0.1:2625.
#
#   benches/relay-setup.sh [N]          # writes the rules, builds, starts the relay
#   ../shared/bench/postfix-relay/bench.sh 127.0.0.1:2625 5000 20 1
#   kill "$(cat /tmp/mailflow-bench/spool/mailflow.pid)"
#
# Environment: DIR (default /tmp/mailflow-bench) holds the rules, the spool and the log.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-100000}"
DIR="${DIR:-/tmp/mailflow-bench}"
mkdir -p "$DIR"
rm -rf "$DIR/spool"

. benches/bench-rules.sh
bench_rules "$DIR" "$N" bench.mailflow 2625 2526

cargo build --release --quiet
echo "checking the rules"
target/release/mailflow check "$DIR/bench.mailflow" | tail -1
echo "starting the relay (log: $DIR/relay.log)"
nohup target/release/mailflow relay "$DIR/bench.mailflow" --spool "$DIR/spool" \
    --hostname relay.bench.test --retry-min 5s --queue-interval 1s --log warn \
    > "$DIR/ready.json" 2> "$DIR/relay.log" &
for _ in $(seq 1 100); do
    [ -s "$DIR/ready.json" ] && break
    sleep 0.1
done
cat "$DIR/ready.json"
echo "relay pid $(cat "$DIR/spool/mailflow.pid")"
