#!/usr/bin/env python3
"""A tiny DNS responder for the relay benchmarks (benches/auth-relay.sh): UDP on loopback,
standard library only, authoritative for the TXT records given on the command line.

    dns-responder.py PORT NAME=TXT [NAME=TXT...]

PORT 0 takes a free port. Prints the port it listens on (one line), then answers until
SIGTERM or SIGINT, when it prints on stderr how many queries it answered. A query for a
given NAME gets its TXT record (for TXT) or an empty answer (any other type); any other
name gets NXDOMAIN. TXT values longer than 255 bytes are split into several strings, as a
DKIM key's record is published. No EDNS, no TCP: the benchmark's answers fit in 512 bytes
(an RSA-2048 key's record is about 410), and a larger one is refused at start.
"""
import signal
import socket
import struct
import sys

TXT, IN = 16, 1


def txt_rdata(value):
    data = value.encode()
    parts = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
    return b"".join(bytes([len(p)]) + p for p in parts)


def question_end(packet):
    """Offset just past the question's QNAME, and the name, lowercased."""
    labels, i = [], 12
    while True:
        n = packet[i]
        if n == 0:
            return i + 1, ".".join(labels).lower()
        if n & 0xC0:
            raise ValueError("compressed name in a question")
        labels.append(packet[i + 1 : i + 1 + n].decode("ascii", "replace"))
        i += 1 + n


def answer(packet, records):
    ident, flags, qdcount = struct.unpack("!HHH", packet[:6])
    if flags & 0x8000 or qdcount != 1:
        return None
    end, name = question_end(packet)
    qtype, _qclass = struct.unpack("!HH", packet[end : end + 4])
    question = packet[12 : end + 4]
    rd = flags & 0x0100
    record = records.get(name.rstrip("."))
    if record is None:
        rcode, answers = 3, []
    elif qtype == TXT:
        rcode, answers = 0, [record]
    else:
        rcode, answers = 0, []
    # QR, AA, RD as asked, RA; no additional section (the query's OPT is not echoed).
    header = struct.pack("!HHHHHH", ident, 0x8400 | rd | 0x0080 | rcode, 1, len(answers), 0, 0)
    body = b"".join(
        struct.pack("!HHHIH", 0xC00C, TXT, IN, 300, len(rdata)) + rdata for rdata in answers
    )
    return header + question + body


def main():
    port = int(sys.argv[1])
    records = {}
    for pair in sys.argv[2:]:
        name, value = pair.split("=", 1)
        rdata = txt_rdata(value)
        if len(rdata) + 12 + len(name) + 6 + 12 > 512:
            sys.exit(f"the record of {name} does not fit in a 512-byte answer")
        records[name.rstrip(".").lower()] = rdata
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(("127.0.0.1", port))
    print(sock.getsockname()[1], flush=True)
    count = [0]

    def stop(*_):
        sys.stderr.write(f"dns-responder: answered {count[0]} queries\n")
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        packet, peer = sock.recvfrom(4096)
        try:
            reply = answer(packet, records)
        except (ValueError, IndexError, struct.error):
            continue
        if reply is not None:
            sock.sendto(reply, peer)
            count[0] += 1


main()
