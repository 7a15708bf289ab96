#!/usr/bin/env bash
# Times `mailflow diff` (release build) replaying captured traffic through two large rule
# sets that differ in one rewrite entry: by default 100,000 captured messages and two rule
# sets of 100,000 rewrite entries and 10,000 transport rules (benches/gen_rules.py, with a
# receive connector added). Reports wall time, CPU time and peak memory per run, and checks
# that the replay found exactly the messages the changed entry concerns.
#
#   benches/diff-replay.sh [MESSAGES [ENTRIES [RULES]]]
#
# Environment: DIR (default /tmp/diff-replay) for the files; RUNS (default 3).
set -euo pipefail

cd "$(dirname "$0")/.."
MESSAGES="${1:-100000}"
ENTRIES="${2:-100000}"
RULES="${3:-10000}"
DIR="${DIR:-/tmp/diff-replay}"
RUNS="${RUNS:-3}"
BIN="${BIN:-target/release/mailflow}"
mkdir -p "$DIR"

echo "== building (cargo build --release)"
[ "$BIN" != target/release/mailflow ] || cargo build --release --quiet

echo "== rule sets: $ENTRIES rewrite entries, $RULES transport rules; new = old with user7's entry changed"
python3 benches/gen_rules.py "$ENTRIES" "$RULES" > "$DIR/old.mailflow"
# The tenants' domains relay to their next hop (the generated file has them authoritative
# with no recipients, which would refuse every message), and the Internet may send to them.
sed -i 's/^accepted-domain \(tenant[0-9]*\.example\.com\)$/accepted-domain \1 internal-relay/' "$DIR/old.mailflow"
printf '\nreceive-connector "Internet" {\n  listen 0.0.0.0:25\n  auth anonymous\n}\n' >> "$DIR/old.mailflow"
sed 's/^rewrite "User 7" user7@tenant8.example.com -> user7@example.com$/rewrite "User 7" user7@tenant8.example.com -> user7.new@example.com/' \
    "$DIR/old.mailflow" > "$DIR/new.mailflow"
if cmp -s "$DIR/old.mailflow" "$DIR/new.mailflow"; then
    echo "error: the change to user7's entry did not apply" >&2
    exit 1
fi

echo "== capture: $MESSAGES messages from the Internet, one in 1,000 to user7, the rest to other users"
python3 - "$MESSAGES" "$ENTRIES" > "$DIR/capture.log" <<'PY'
import json, sys
n, entries = int(sys.argv[1]), int(sys.argv[2])
users = [i for i in range(1, entries) if i % 5 != 0 and i != 7][:50000] or [1]
for k in range(n):
    u = 7 if k % 1000 == 0 else users[k % len(users)]
    rec = {
        "date-time": "2026-12-07T12:00:00.000Z",
        "envelope": {"from": f"sender{k}@contoso.com", "to": [f"user{u}@example.com"],
                     "connector": "Internet", "local": "0.0.0.0:25", "client-ip": "203.0.113.9"},
        "size": 4096,
        "headers": [["From", f" Sender {k} <sender{k}@contoso.com>\r\n"],
                    ["To", f" user{u}@example.com\r\n"],
                    ["Subject", f" [hello {k}] quarterly figures\r\n"],
                    ["X-Tenant", f" t{k % 10000}\r\n"]],
    }
    print(json.dumps(rec))
PY
echo "   $(wc -c < "$DIR/capture.log") bytes"
expected=$(( (MESSAGES + 999) / 1000 ))

for run in $(seq 1 "$RUNS"); do
    /usr/bin/time -f "%e s wall, %U s user, %M KiB peak RSS" -o "$DIR/time.txt" \
        "$BIN" diff "$DIR/old.mailflow" "$DIR/new.mailflow" "$DIR/capture.log" \
        --no-tests --format json > "$DIR/diff.json"
    changed=$(python3 -c "import json; d=json.load(open('$DIR/diff.json')); print(d['messages'], len(d['changes']))")
    read -r evaluated differ <<< "$changed"
    if [ "$evaluated" != "$MESSAGES" ] || [ "$differ" != "$expected" ]; then
        echo "error: evaluated $evaluated (want $MESSAGES), changed $differ (want $expected)" >&2
        exit 1
    fi
    echo "run $run: $MESSAGES messages, $differ changed: $(cat "$DIR/time.txt")"
done
