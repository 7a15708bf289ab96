#!/usr/bin/env bash
# Peak memory per message in flight (issue 15): SESSIONS clients send a SIZE_MIB message each
# at the same moment (each sends its whole message, all wait, then all send the final dot,
# so every message is held and then evaluated at once), ROUNDS times. Reads the relay's
# peak resident set (VmHWM in /proc/PID/status) at rest after a warm-up message and after
# the rounds, and prints (peak - rest) / (SESSIONS x message size): the copies of a message
# the relay holds at its worst, receive buffer included.
#
#   benches/large-messages.sh [SESSIONS=4] [SIZE_MIB=35] [ROUNDS=2]
#
# The next hop's name never resolves (DNS points at a closed loopback port), so nothing is
# delivered and delivery's own copies (read back from the spool) stay out of the figure.
# Environment: BIN (default target/release/mailflow, built if missing) and DIR (default
# /tmp/mailflow-large) for the rules, spool and log. Only 127.0.0.1, on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."
SESSIONS="${1:-4}"
SIZE_MIB="${2:-35}"
ROUNDS="${3:-2}"
BIN="${BIN:-target/release/mailflow}"
DIR="${DIR:-/tmp/mailflow-large}"
[ -x "$BIN" ] || cargo build --release --quiet --bin mailflow
mkdir -p "$DIR"
rm -rf "$DIR/spool"
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
PORT=$(free_port)
DNS=$(free_port)

cat > "$DIR/large.mailflow" <<RULES
# Internal loopback clients, relayed to the internet; messages up to 40 MB.
accepted-domain example.com authoritative

receive-connector "Loopback" {
  listen 127.0.0.1:$PORT
  remote 127.0.0.0/8
  auth externally-secured
  max-message-size 40MB
}

send-connector "Out" {
  address-space *
}
RULES

"$BIN" relay "$DIR/large.mailflow" --spool "$DIR/spool" --hostname relay.large.test \
    --dns "127.0.0.1:$DNS" --max-message-memory 4GB --log warn \
    > "$DIR/ready.json" 2> "$DIR/relay.log" &
PID=$!
trap 'kill $PID 2> /dev/null || true' EXIT
for _ in $(seq 1 100); do
    [ -s "$DIR/ready.json" ] && break
    sleep 0.1
done
[ -s "$DIR/ready.json" ] || { cat "$DIR/relay.log" >&2; exit 1; }

python3 - "$PORT" "$PID" "$SESSIONS" "$SIZE_MIB" "$ROUNDS" <<'PY'
import socket, sys, threading

port, pid, sessions, size_mib, rounds = (int(a) for a in sys.argv[1:])

def kib(field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field):
            return int(line.split()[1])
    return 0

def reply(f):
    while True:
        line = f.readline()
        if not line:
            raise SystemExit("connection closed")
        if line[3:4] != b"-":
            return line.decode().strip()

def send(body, barrier, out, n):
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")
    reply(f)
    for cmd in (b"EHLO client.test", b"MAIL FROM:<sender@example.com>",
                b"RCPT TO:<someone@partner.example.org>", b"DATA"):
        s.sendall(cmd + b"\r\n")
        r = reply(f)
    assert r.startswith("354"), r
    s.sendall(body)
    if barrier:
        barrier.wait()
    s.sendall(b".\r\n")
    out[n] = reply(f)
    s.sendall(b"QUIT\r\n")
    reply(f)
    s.close()

line = b"b" * 76 + b"\r\n"
body = b"Subject: large\r\nMessage-ID: <large@client.test>\r\n\r\n" + \
    line * (size_mib * 1024 * 1024 // len(line))
out = {}
send(b"Subject: warm-up\r\n\r\nhello\r\n", None, out, 0)
rest = kib("VmHWM:")
for _ in range(rounds):
    barrier = threading.Barrier(sessions)
    threads = [threading.Thread(target=send, args=(body, barrier, out, n))
               for n in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bad = [r for r in out.values() if not r.startswith("250")]
    assert not bad, bad
peak = kib("VmHWM:")
flight = sessions * len(body) / 1024
print(f"{sessions} sessions x {len(body) / 1048576:.1f} MiB, {rounds} rounds: "
      f"rest {rest / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB, "
      f"(peak - rest) / in flight = {(peak - rest) / flight:.2f}")
PY
