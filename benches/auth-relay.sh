#!/usr/bin/env bash
# What issue 16's authentication costs on the relay's message path, measured: the relay of
# benches/bench-rules.sh (N rewrite entries, fsync before `250`, everything to smtp-sink),
# one rule set per case, every case once per round, in one sitting:
#
#   out-unsigned  tenant mail rewritten to shared.example.com, RSA key loaded, `dkim-sign off`
#   out-rsa       the same, signed at delivery with RSA-2048
#   out-rsa-ed    the same, signed with RSA-2048 and Ed25519
#   in-off        Internet mail (`auth anonymous`), DKIM-signed by its sender, no verification
#   in-verify     the same with `authserv-id`: SPF, DKIM, DMARC and ARC verified per message
#   in-seal       the same and sealed with ARC (`arc-seal`, the RSA key)
#   postfix       Postfix (../shared/bench/postfix-relay, no authentication) with the
#                 outbound message, when POSTFIX=HOST:PORT names it; it relays to port 2526,
#                 so its sink listens there
#
# Each case: a fresh spool and relay, one message first whose delivered copy is checked (a
# signature, or Authentication-Results with spf, dkim and dmarc pass, and an ARC set), then
# MESSAGES messages of SIZE bytes over SESSIONS sessions with smtp-source -F; printed:
# accepted and delivered msg/s, the relay's RSS after the run and its peak (VmHWM), and the
# DNS queries per message. The DNS is benches/dns-responder.py (`--dns`): the sender's SPF,
# DKIM key and DMARC records, NXDOMAIN for anything else. The relay's --dns resolver does
# not cache, so each message costs its queries.
#
#   benches/auth-relay.sh [N] [MESSAGES] [SESSIONS] [ROUNDS]    # default 100000 20000 20 3
#
# Environment: BIN (default target/release/mailflow, built), DIR (/tmp/mailflow-auth-bench),
# PORT (2825), SINK_PORT (2826), SIZE (4000), CASES (default all but postfix), POSTFIX (e.g.
# 127.0.0.1:2525), PERF (a case: `perf record -g` of the relay during its first timed run,
# into DIR/CASE.perf.data).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-100000}"; M="${2:-20000}"; S="${3:-20}"; ROUNDS="${4:-3}"
DIR="${DIR:-/tmp/mailflow-auth-bench}"
PORT="${PORT:-2825}"; SINK_PORT="${SINK_PORT:-2826}"; SIZE="${SIZE:-4000}"
CASES="${CASES:-out-unsigned out-rsa out-rsa-ed in-off in-verify in-seal}"
[ -n "${POSTFIX:-}" ] && CASES="$CASES postfix"
PERF="${PERF:-}"
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet --bin mailflow
    BIN="$(pwd)/target/release/mailflow"
fi
CHECK="$(pwd)/tests/support/dkim_check.py"
mkdir -p "$DIR/keys"

. benches/bench-rules.sh

# The TXT record `mailflow dkim keygen` prints, as one string.
keygen() {
    rm -f "$DIR/keys/$3"
    "$BIN" dkim keygen "$1" "$2" ${4:+--algorithm "$4"} -o "$DIR/keys/$3" 2> /dev/null |
        python3 -c 'import re,sys; print("".join(re.findall(r"\"([^\"]*)\"", sys.stdin.read())))'
}
keygen shared.example.com mf2026 rsa.pem > /dev/null
keygen shared.example.com mf2026ed ed25519.pem ed25519 > /dev/null
SENDER_KEY=$(keygen partner.example.org s2026 partner.pem)

# A message of SIZE bytes with 76-character lines, CRLF, as the client sends it.
message() {
    python3 - "$1" "$2" "$SIZE" <<'PY'
import sys
sender, rcpt, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
head = (f"From: Sender <{sender}>\r\nTo: <{rcpt}>\r\nSubject: quarterly figures\r\n"
        "Date: Mon, 07 Dec 2026 12:00:00 +0000\r\nMessage-ID: <bench@partner.example.org>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
line = "The figures for the quarter are attached below, with the notes of the review.\r\n"[:76] + "\r\n"
body = line * max(1, (size - len(head)) // len(line))
sys.stdout.buffer.write((head + body).encode())
PY
}
message user1@tenant1.example.com user2@partner.example.org | tr -d '\r' > "$DIR/outbound.eml"
message someone@partner.example.org user1@shared.example.com > "$DIR/inbound.crlf"
# Signed once, as received (CRLF); smtp-source -F turns the file's LF back into CRLF.
python3 "$CHECK" sign "$DIR/keys/partner.pem" partner.example.org s2026 < "$DIR/inbound.crlf" |
    tr -d '\r' > "$DIR/inbound.eml"

rules() {
    local case=$1
    case "$case" in
        in-*) BENCH_AUTH=anonymous ;;
        *) BENCH_AUTH=externally-secured ;;
    esac
    [ "$case" = out-unsigned ] && BENCH_SEND="dkim-sign off" || BENCH_SEND=""
    BENCH_AUTH=$BENCH_AUTH BENCH_SEND=$BENCH_SEND \
        bench_rules "$DIR" "$N" "$case.mailflow" "$PORT" "$SINK_PORT"
    {
        printf 'dkim-key "shared.example.com" {\n  selector mf2026\n  key "keys/rsa.pem"\n}\n'
        if [ "$case" = out-rsa-ed ]; then
            printf 'dkim-key "shared.example.com" {\n  selector mf2026ed\n  key "keys/ed25519.pem"\n}\n'
        fi
        case "$case" in
            in-verify) printf 'authentication {\n  authserv-id relay.bench.test\n}\n' ;;
            in-seal) printf 'authentication {\n  authserv-id relay.bench.test\n  arc-seal shared.example.com\n}\n' ;;
        esac
    } >> "$DIR/$case.mailflow"
}

start_dns() {
    rm -f "$DIR/dns.port"
    python3 benches/dns-responder.py 0 \
        "partner.example.org=v=spf1 ip4:127.0.0.1 -all" \
        "s2026._domainkey.partner.example.org=$SENDER_KEY" \
        "_dmarc.partner.example.org=v=DMARC1; p=reject" > "$DIR/dns.port" 2> "$DIR/dns.log" &
    dns=$!
    for _ in $(seq 1 100); do
        [ -s "$DIR/dns.port" ] && break
        sleep 0.1
    done
}

start_relay() {
    rm -rf "$DIR/spool" "$DIR/ready.json"
    "$BIN" relay "$DIR/$1.mailflow" --spool "$DIR/spool" --hostname relay.bench.test \
        --retry-min 1s --retry-max 1s --queue-interval 1s --log warn \
        --dns "127.0.0.1:$(cat "$DIR/dns.port")" > "$DIR/ready.json" 2> "$DIR/relay.log" &
    pid=$!
    for _ in $(seq 1 600); do
        [ -s "$DIR/ready.json" ] && return
        sleep 0.1
    done
    echo "the relay did not start:" >&2
    cat "$DIR/relay.log" >&2
    exit 1
}

start_sink() {
    rm -rf "$DIR/sink.log" "$DIR/dump" "$DIR/dump.d"
    # smtp-sink writes as nobody.
    mkdir -m 777 "$DIR/dump.d"
    ( cd "$DIR" && exec smtp-sink -u nobody ${2:+-D "$DIR/dump.d/m"} -c "127.0.0.1:$1" 1000 \
        > "$DIR/sink.log" 2>&1 ) &
    sink=$!
    sleep 0.3
}

sink_count() {
    tr '\r' '\n' < "$DIR/sink.log" | grep -Eo 'mesg=[0-9]+' | tail -1 | cut -d= -f2 || true
}

# smtp-source to the relay at $1, until the sink has seen $2 messages; prints accepted and
# delivered msg/s.
through() {
    local relay=$1 m=$2 file=$3 from=$4 to=$5 start sent end n=0
    start=$(date +%s.%N)
    smtp-source -c -s "$S" -m "$m" -r 1 -f "$from" -t "$to" -F "$file" "$relay" \
        > "$DIR/source.log" 2>&1
    sent=$(date +%s.%N)
    for _ in $(seq 1 6000); do
        n=$(sink_count)
        [ "${n:-0}" -ge "$m" ] && break
        sleep 0.05
    done
    end=$(date +%s.%N)
    python3 -c "import sys;s,a,e,m=map(float,sys.argv[1:5]);print(f'accepted {m/(a-s):5.0f} msg/s, delivered {m/(e-s):5.0f} msg/s (sink saw {sys.argv[5]})',end='')" \
        "$start" "$sent" "$end" "$m" "${n:-0}"
}

# What the one message the sink dumped must carry, per case.
check_dump() {
    local case=$1
    case "$case" in
        out-unsigned) ! grep -qi '^DKIM-Signature:' "$DIR/dump" && return ;;
        out-rsa) [ "$(grep -ci '^DKIM-Signature:' "$DIR/dump")" = 1 ] && return ;;
        out-rsa-ed) grep -qi 'a=ed25519-sha256' "$DIR/dump" && grep -qi 'a=rsa-sha256' "$DIR/dump" && return ;;
        in-off) ! grep -qi '^Authentication-Results: relay.bench.test' "$DIR/dump" && return ;;
        in-verify | in-seal)
            for w in spf=pass dkim=pass dmarc=pass; do
                tr -d '\r' < "$DIR/dump" | sed -n '/^Authentication-Results: relay.bench.test/,/^[^ \t]/p' |
                    grep -q "$w" || { echo "$case: no $w in the delivered copy" >&2; cat "$DIR/dump" >&2; exit 1; }
            done
            if [ "$case" = in-seal ]; then grep -qi '^ARC-Seal:' "$DIR/dump" && return; else
                ! grep -qi '^ARC-Seal:' "$DIR/dump" && return; fi ;;
    esac
    echo "$case: the delivered copy is not as expected" >&2
    cat "$DIR/dump" >&2
    exit 1
}

run_case() {
    local case=$1 round=$2 file from to relay rec=""
    case "$case" in
        in-*) file=$DIR/inbound.eml; from=someone@partner.example.org; to=user1@shared.example.com ;;
        *) file=$DIR/outbound.eml; from=user1@tenant1.example.com; to=user2@partner.example.org ;;
    esac
    if [ "$case" = postfix ]; then
        start_sink 2526
        printf '%-13s round %s: ' "$case" "$round"
        through "$POSTFIX" "$M" "$file" "$from" "$to"
        echo
        kill "$sink"; wait "$sink" 2>/dev/null || true
        return
    fi
    rules "$case"
    start_dns
    start_relay "$case"
    start_sink "$SINK_PORT" dump
    smtp-source -c -s 1 -m 1 -r 1 -f "$from" -t "$to" -F "$file" "127.0.0.1:$PORT" > /dev/null 2>&1
    for _ in $(seq 1 200); do [ "$(sink_count)" = 1 ] && break; sleep 0.05; done
    kill "$sink"; wait "$sink" 2>/dev/null || true
    cat "$DIR"/dump.d/* > "$DIR/dump" 2> /dev/null || true
    check_dump "$case"
    start_sink "$SINK_PORT"
    if [ "$case" = "$PERF" ] && [ "$round" = 1 ]; then
        perf record -g -o "$DIR/$case.perf.data" -p "$pid" > /dev/null 2>&1 &
        rec=$!
    fi
    # The resident set every 0.2 s during the run (VmHWM would be the rule set's loading).
    local before sampler
    before=$(awk '/^VmRSS/ {print int($2/1024)}' "/proc/$pid/status")
    ( while kill -0 "$pid" 2>/dev/null; do
        awk '/^VmRSS/ {print int($2/1024)}' "/proc/$pid/status" 2>/dev/null || true
        sleep 0.2
    done ) > "$DIR/rss.log" &
    sampler=$!
    printf '%-13s round %s: ' "$case" "$round"
    through "127.0.0.1:$PORT" "$M" "$file" "$from" "$to"
    [ -n "$rec" ] && { kill -INT "$rec"; wait "$rec" 2>/dev/null || true; }
    local rss queries
    rss=$(sort -n "$DIR/rss.log" | tail -1)
    kill "$sink" "$pid" "$dns"
    wait "$sink" "$pid" "$dns" "$sampler" 2>/dev/null || true
    queries=$(grep -Eo '[0-9]+ queries' "$DIR/dns.log" | cut -d' ' -f1 || echo 0)
    python3 -c "import sys;print(f', RSS {sys.argv[1]} -> {sys.argv[2]} MiB, {int(sys.argv[3])/(int(sys.argv[4])+1):.1f} DNS queries/msg')" \
        "$before" "$rss" "${queries:-0}" "$M"
}

pid=""; dns=""; sink=""
# What this script started goes with it, also when a check fails.
trap 'kill $pid $dns $sink 2> /dev/null || true' EXIT
echo "$(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $M messages of $SIZE bytes, $S sessions, $N entries"
for round in $(seq 1 "$ROUNDS"); do
    for case in $CASES; do
        run_case "$case" "$round"
    done
done
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
