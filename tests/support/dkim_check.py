#!/usr/bin/env python3
"""DKIM signing and verification with dkimpy, an independent implementation, for the relay
tests (tests/it/relay_bytes.rs). No DNS: the public key is given on the command line.

    dkim_check.py sign KEY DOMAIN SELECTOR < message > signed
    dkim_check.py signatures NAME=RECORD... < message   (a line per signature, top first:
                                                        `d=DOMAIN s=SELECTOR pass|fail`)
    dkim_check.py verify PUBLIC_KEY_BASE64 [KEY_TYPE] < message    (exit 0: verifies; 1: not)
    dkim_check.py verify-files PUBLIC_KEY_BASE64 KEY_TYPE FILE...  (a line each: pass/fail)

KEY_TYPE is the record's k= (rsa, the default, or ed25519: dkimpy needs PyNaCl for it).

dkimpy is required: a missing module is an error (exit 2), never a pass. .ci/run installs it.

For `signatures`, NAME is `SELECTOR._domainkey.DOMAIN` and RECORD its TXT record; a signature
whose key is not given fails.
"""
import sys

try:
    import dkim
except ImportError:
    sys.stderr.write("dkimpy is needed: pip install dkimpy (.ci/run installs it)\n")
    sys.exit(2)


def main():
    mode = sys.argv[1]
    message = sys.stdin.buffer.read()
    if mode == "sign":
        key, domain, selector = sys.argv[2], sys.argv[3], sys.argv[4]
        with open(key, "rb") as f:
            private = f.read()
        # simple/simple: the strictest canonicalization, any changed byte of a signed field
        # or of the body breaks it. From, To, Subject, Date, Message-ID and the rest are
        # signed (dkimpy's default list of the fields present).
        sig = dkim.sign(
            message,
            selector.encode(),
            domain.encode(),
            private,
            canonicalize=(b"simple", b"simple"),
        )
        sys.stdout.buffer.write(sig + message)
    elif mode == "signatures":
        records = dict(a.split("=", 1) for a in sys.argv[2:])

        def dnsfunc(name, timeout=5):
            name = name.decode() if isinstance(name, bytes) else name
            record = records.get(name.rstrip(".").lower())
            return record.encode() if record is not None else None

        d = dkim.DKIM(message)
        signatures = [v for (k, v) in d.headers if k.lower() == b"dkim-signature"]
        for idx, value in enumerate(signatures):
            tags = dkim.util.parse_tag_value(value)
            try:
                ok = d.verify(idx=idx, dnsfunc=dnsfunc)
            except dkim.DKIMException:
                ok = False
            print(f"d={tags[b'd'].decode()} s={tags[b's'].decode()} {'pass' if ok else 'fail'}")
    elif mode == "verify":
        public = sys.argv[2].encode()
        kind = (sys.argv[3] if len(sys.argv) > 3 else "rsa").encode()

        def dnsfunc(name, timeout=5):
            return b"v=DKIM1; k=" + kind + b"; p=" + public

        ok = dkim.verify(message, dnsfunc=dnsfunc)
        print("pass" if ok else "fail")
        sys.exit(0 if ok else 1)
    elif mode == "verify-files":
        public, kind = sys.argv[2].encode(), sys.argv[3].encode()

        def dnsfunc(name, timeout=5):
            return b"v=DKIM1; k=" + kind + b"; p=" + public

        for path in sys.argv[4:]:
            with open(path, "rb") as f:
                print("pass" if dkim.verify(f.read(), dnsfunc=dnsfunc) else "fail")
    else:
        sys.exit(f"unknown mode {mode}")


main()
