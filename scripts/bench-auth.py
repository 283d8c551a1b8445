#!/usr/bin/env python3
"""Cost of token checks ([[auth.tokens]]) on the request path: one release build, two gateways
side by side (the config of bench-overhead.py without and with ten tokens, the caller's last),
the same `Authorization: Bearer` header sent to both, rounds alternated (A B A B ...).

    cargo build --release -p sluice -p sluice-loadtest --bins
    python3 scripts/bench-auth.py [--seconds 4] [--rounds 5]

Prints req/s per round, the ratio of sums (with / without tokens) and the median p50 of each.
"""
import argparse
import importlib.util
import statistics
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("overhead", HERE / "bench-overhead.py")
b = importlib.util.module_from_spec(spec)
spec.loader.exec_module(b)

SECRET = "bench-secret-0123456789abcdef0123456789"


def token_hash(secret: str) -> str:
    return subprocess.run([str(b.REL / "sluice"), "auth", "hash"], input=secret + "\n",
                          capture_output=True, text=True, check=True).stdout.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    tokens = "".join(f'\n[[auth.tokens]]\nname = "t{i}"\nhash = "{token_hash(f"other-secret-{i:04d}-0123456789")}"\n'
                     f'scopes = ["query:fraud"]\n' for i in range(9))
    tokens += f'\n[[auth.tokens]]\nname = "bench"\nhash = "{token_hash(SECRET)}"\nscopes = ["query:*"]\n'
    tmp = Path(tempfile.mkdtemp(prefix="sluice-bench-auth-"))
    base = b.CONFIG
    off = b.Gateway(tmp, True)
    b.CONFIG = base + tokens
    on = b.Gateway(tmp, True)

    def run(g, target, clients):
        url = g.grpc if target == "grpc" else g.http
        extra = ["--target", target, "--url", url, "-c", str(clients), "--payload", str(b.PAYLOAD),
                 "-H", f"Authorization: Bearer {SECRET}"]
        extra += ["--endpoint", "fraud"] if target == "predict" else ["--model", "fraud"]
        return b.load(args, *extra)

    try:
        for target, clients in [("predict", 1), ("predict", 16), ("grpc", 1)]:
            ro, rn = [], []
            for _ in range(args.rounds):
                ro.append(run(off, target, clients))
                rn.append(run(on, target, clients))
            p50 = lambda rs: statistics.median(r["p50_ms"] * 1000 for r in rs)  # noqa: E731
            ratio = sum(r["rps"] for r in rn) / sum(r["rps"] for r in ro)
            print(f"{target} c{clients}: req/s without {[round(r['rps']) for r in ro]} with {[round(r['rps']) for r in rn]}; "
                  f"with / without {ratio:.3f}; p50 median {p50(ro):.0f} us / {p50(rn):.0f} us; "
                  f"errors with tokens {sum(r['errors'] for r in rn)}", flush=True)
    finally:
        off.stop()
        on.stop()


if __name__ == "__main__":
    main()
