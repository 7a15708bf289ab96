#!/usr/bin/env python3
"""Times `mailflow import exchange` (release build) on a generated PowerShell file: ENTRIES
New-AddressRewriteEntry lines and RULES New-TransportRule lines, prompts included, and checks
that everything imports (exit 0) and the result passes `mailflow check`.

    cargo build --release
    python3 benches/import-large.py [ENTRIES [RULES [RUNS]]]

Defaults: 5000 entries, 500 rules, 3 runs.
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "mailflow")


def script(entries, rules):
    lines = ["[PS] C:\\>New-AcceptedDomain -Name example.com -DomainName example.com"]
    for i in range(entries):
        lines.append(
            f'[PS] C:\\>New-AddressRewriteEntry -Name "User {i}" '
            f"-InternalAddress user{i}@tenant{i % 2 + 1}.example.com "
            f"-ExternalAddress user{i}@example.com"
        )
    for i in range(rules):
        lines.append(
            f'[PS] C:\\>New-TransportRule -Name "Rule {i}" -Priority {i} -FromScope NotInOrganization '
            f'-SubjectContainsWords "offer {i}", "deal {i}" -DeleteMessage $true'
        )
    return "\n".join(lines) + "\n"


def main():
    entries = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    rules = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    if not os.path.exists(BIN):
        raise SystemExit("build first: cargo build --release")
    with tempfile.TemporaryDirectory() as tmp:
        ps1 = os.path.join(tmp, "config.ps1")
        out = os.path.join(tmp, "imported.mailflow")
        with open(ps1, "w") as f:
            f.write(script(entries, rules))
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            r = subprocess.run([BIN, "import", "exchange", ps1, "-o", out, "--color", "never"],
                               capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if r.returncode != 0:
                raise SystemExit(f"import failed ({r.returncode}):\n{r.stderr[-3000:]}")
        check = subprocess.run([BIN, "check", out], capture_output=True, text=True)
        if check.returncode != 0:
            raise SystemExit(f"check refuses the import:\n{check.stdout[-3000:]}")
        size = os.path.getsize(ps1)
    print(f"{entries} entries + {rules} rules ({size} bytes of PowerShell): "
          f"median {statistics.median(times):.2f} s, max {max(times):.2f} s over {runs} runs")


if __name__ == "__main__":
    main()
