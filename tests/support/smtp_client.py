#!/usr/bin/env python3
"""A real SMTP client for the relay's end-to-end tests: Python's smtplib, driven step by step
so every reply can be asserted. Prints one JSON object: the EHLO keywords before and after
STARTTLS, and the reply to each command.

  smtp_client.py --port P [--host 127.0.0.1] [--source 127.0.0.2] [--starttls]
                 [--cert C --key K] --from A --to B [--to C] [--message FILE | --data TEXT]
                 [--mail-option XOORG=x] [--count N] [--no-quit]
"""
import argparse
import json
import smtplib
import ssl
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--source", default=None)
    p.add_argument("--starttls", action="store_true")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--from", dest="sender", required=True)
    p.add_argument("--to", action="append", default=[])
    p.add_argument("--message")
    p.add_argument("--data")
    p.add_argument("--mail-option", action="append", default=[])
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--ehlo", default="client.test")
    a = p.parse_args()

    out = {"ehlo": [], "ehlo_tls": [], "starttls": None, "messages": []}
    src = (a.source, 0) if a.source else None
    s = smtplib.SMTP(a.host, a.port, local_hostname=a.ehlo, source_address=src, timeout=30)
    code, _ = s.ehlo()
    out["ehlo"] = sorted(s.esmtp_features.keys())
    if a.starttls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if a.cert:
            ctx.load_cert_chain(a.cert, a.key)
        code, msg = s.starttls(context=ctx)
        out["starttls"] = [code, msg.decode(errors="replace")]
        s.ehlo()
        out["ehlo_tls"] = sorted(s.esmtp_features.keys())
    if a.message:
        with open(a.message, "rb") as f:
            body = f.read()
    else:
        body = (a.data or "Subject: test\r\n\r\nhello\r\n").encode()
    template = body
    for i in range(a.count):
        body = template.replace(b"{seq}", str(i).encode())
        m = {"mail": None, "rcpt": [], "data": None}
        code, msg = s.mail(a.sender, a.mail_option)
        m["mail"] = [code, msg.decode(errors="replace")]
        ok = code == 250
        accepted = 0
        for r in a.to:
            if not ok:
                break
            code, msg = s.rcpt(r)
            m["rcpt"].append([code, msg.decode(errors="replace")])
            accepted += code == 250
        if ok and accepted:
            code, msg = s.data(body)
            m["data"] = [code, msg.decode(errors="replace")]
        else:
            s.rset()
        out["messages"].append(m)
        if a.count > 1:
            # One line per acknowledged message, flushed, for the crash test to read live.
            seq = None
            for line in body.split(b"\r\n"):
                if line.lower().startswith(b"x-seq:"):
                    seq = line[6:].strip().decode()
            print(json.dumps({"acked": m["data"], "seq": seq}), flush=True)
    try:
        s.quit()
    except smtplib.SMTPException:
        pass
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        main()
    except (smtplib.SMTPException, OSError) as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        sys.exit(0)
