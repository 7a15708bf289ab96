# Sourced by the relay benchmarks (relay-setup.sh, relay-reuse.sh, queue-outage.sh,
# auth-relay.sh): the rule set they share, the same work as ../shared/bench/postfix-relay's
# Postfix: N per-address rewrite entries userI@tenant1.example.com -> userI@shared.example.com
# plus the domain entry tenant2.example.com -> shared.example.com, loopback clients internal
# (so the sender is rewritten outbound, as Postfix's canonical maps do), everything to one
# smart host.
#
#   bench_rules DIR N RULES_FILE LISTEN_PORT NEXT_HOP_PORT [RECEIVE_SETTING...]
#
# Writes DIR/entries.csv and DIR/RULES_FILE; each RECEIVE_SETTING is one more line of the
# receive connector (e.g. "max-connections-per-source 100"). Environment: BENCH_AUTH, the
# receive connector's `auth` (default externally-secured: the tenants' own relay; `anonymous`
# makes the clients Internet senders); BENCH_SEND, more lines of the send connector.
bench_rules() {
    local dir=$1 n=$2 rules=$3 port=$4 hop=$5
    shift 5
    python3 - "$n" > "$dir/entries.csv" <<'PY'
import sys
n = int(sys.argv[1])
print("Name,InternalAddress,ExternalAddress,ExceptionList,OutboundOnly")
for i in range(n):
    print(f"user{i},user{i}@tenant1.example.com,user{i}@shared.example.com,,False")
print("tenant2,tenant2.example.com,shared.example.com,,True")
PY
    {
        cat <<RULES
# The relay benchmarks' rule set (benches/bench-rules.sh).
accepted-domain shared.example.com internal-relay
accepted-domain tenant1.example.com internal-relay
accepted-domain tenant2.example.com internal-relay

receive-connector "Loopback" {
  listen 127.0.0.1:$port
  remote 127.0.0.0/8
  auth ${BENCH_AUTH:-externally-secured}
  max-recipients 1000
RULES
        for setting in "$@"; do
            echo "  $setting"
        done
        cat <<RULES
}

send-connector "Sink" {
  address-space *
  smart-host 127.0.0.1:$hop
RULES
        if [ -n "${BENCH_SEND:-}" ]; then
            echo "  $BENCH_SEND"
        fi
        cat <<RULES
}

import rewrites "entries.csv"
RULES
    } > "$dir/$rules"
}
