#!/usr/bin/env python3
"""What inference logging to Delta tables costs: throughput with logging off, to a local Delta
table, and to a Delta table in S3-compatible object storage (SeaweedFS on loopback), and how long
each commit takes; with --parquet-bin, also the writer of plain Parquet files that Delta replaced.

    cargo build --release -p sluice -p sluice-loadtest --bins
    .venv/bin/python scripts/bench-tables.py [--seconds 10] [--clients 16] [--rounds 2] [--json out.json]
        [--parquet-bin /tmp/oldpq/target/release/sluice]

--parquet-bin is a release `sluice` built from 145649c, the last commit whose inference tables
were directories of plain Parquet files (one file per flush, no log):

    git worktree add --detach /tmp/oldpq 145649c
    (cd /tmp/oldpq && cargo build --release --locked -p sluice --bins)

Three release gateways run side by side, each with fraud_classifier v1 behind endpoint `fraud`:
`off` (no inference table), `local` (inference table under a temporary data_dir) and `s3`
(`[storage] tables = "s3://..."` on a SeaweedFS started here, the `weed` of the test venv). The
load tool drives /predict on one at a time, closed loop, --clients connections, the first 2 s
warm-up excluded, rounds alternated (off [parquet] local s3, off [parquet] local s3, ...) so
machine noise hits every mode alike. The `parquet` gateway (the old binary) logs to a local
directory with the same settings; it has no commits, so its files written are reported instead. Commits are counted over the whole run (divided by the seconds under load: with
no rows a writer commits nothing). Commit times come from each gateway's `sluice_log_commit_duration_seconds` (all
commits of the run, warm-up included; p50 and p99 as the upper bound of the histogram bucket
that holds them).
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REL = ROOT / "target" / "release"
PAYLOAD = ROOT / "tests" / "fixtures" / "inputs" / "fraud_classifier.json"
sys.path.insert(0, str(ROOT / "tests" / "conformance"))
from seaweedfs import BUCKET, CREDENTIALS, Weed  # noqa: E402

from bench_support import start_gateway  # noqa: E402

CONFIG = """
[server]
data_dir = "{data}"
[runtime]
model_repository = "{root}/models"
[[models]]
name = "fraud_classifier"
versions = [1]
batching = {{ enabled = true, max_batch_size = 64, max_queue_delay_us = 0 }}
[[endpoints]]
name = "fraud"
served_entities = [{{ name = "champion", entity_name = "fraud_classifier", entity_version = "1" }}]
{table}
{storage}
"""


class Gateway:
    def __init__(self, tmp: Path, name: str, table: bool, storage: str = "", binary: Path | None = None):
        self.name = name
        self.dir = Path(tempfile.mkdtemp(dir=tmp, prefix=f"{name}-"))
        cfg = self.dir / "sluice.toml"
        cfg.write_text(CONFIG.format(data=self.dir / "data", root=ROOT, storage=storage,
                                     table="inference_table = { enabled = true }" if table else ""))
        self.proc, p, self.log = start_gateway(self.dir, cfg, binary=binary, env=CREDENTIALS)
        self.http, self.admin = f"http://127.0.0.1:{p['http']}", f"http://127.0.0.1:{p['admin']}"
        self.started = time.monotonic()

    def metrics(self) -> dict[str, float]:
        text = urllib.request.urlopen(f"{self.admin}/metrics", timeout=10).read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("sluice_log_") and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                out[k] = float(v)
        return out

    def stop(self):
        self.proc.terminate()
        self.proc.wait(120)
        self.log.close()


def load(args, g: Gateway) -> dict:
    cmd = [str(REL / "sluice-loadtest"), "--duration", f"{args.seconds}s", "--warmup", "2s", "--output", "json",
           "--target", "predict", "--url", g.http, "-c", str(args.clients), "--payload", str(PAYLOAD),
           "--endpoint", "fraud"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode not in (0, 2):
        sys.exit(f"load failed: {' '.join(cmd)}\n{p.stderr}")
    r = json.loads(p.stdout)["overall"]
    if r["requests"]["errors"]:
        print(f"warning: {r['requests']['errors']} errors on {g.name}: {r['errors']}", file=sys.stderr)
    return {"rps": r["throughput"]["requests_per_s"], "p50_ms": r["latency_ms"]["p50"],
            "p99_ms": r["latency_ms"]["p99"], "errors": r["requests"]["errors"]}


def commit_stats(g: Gateway, loaded_s: float) -> dict:
    m = g.metrics()
    t = 'table="fraud"'
    get = lambda name, extra="": next((v for k, v in m.items() if k.startswith(name + "{") and t in k  # noqa: E731
                                       and extra in k), 0.0)
    commits = get("sluice_log_commits_total")
    total = get("sluice_log_commit_duration_seconds_sum")
    count = get("sluice_log_commit_duration_seconds_count")
    # quantiles from the histogram's buckets: the upper bound of the bucket that holds them
    buckets = sorted((float(re.search(r'[{,]le="([^"]+)"', k).group(1)), v) for k, v in m.items()
                     if k.startswith("sluice_log_commit_duration_seconds_bucket{") and t in k and "+Inf" not in k)
    bound = lambda p: next((le for le, n in buckets if n >= p * count), None) if count else None  # noqa: E731
    q = {"0.5": bound(0.5), "0.99": bound(0.99)}
    return {"commits": commits, "commits_per_loaded_s": commits / loaded_s,
            "mean_ms": 1000 * total / count if count else None,
            "p50_ms": 1000 * q["0.5"] if q["0.5"] else None, "p99_ms": 1000 * q["0.99"] if q["0.99"] else None,
            "retries": get("sluice_log_commit_retries_total"), "rows": get("sluice_log_rows_written_total"),
            "files": get("sluice_log_files_total"),
            "dropped": sum(v for k, v in m.items() if k.startswith("sluice_log_rows_dropped_total{") and t in k)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--parquet-bin", type=Path, help="release sluice of 145649c (the plain-Parquet writer)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weed = Weed(tmp / "weed")
        weed.start()
        storage = f'[storage]\ntables = "s3://{BUCKET}/bench"\nendpoint = "{weed.endpoint}"\nallow_http = true\n'
        gws = [Gateway(tmp, "off", False)]
        if args.parquet_bin:
            gws.append(Gateway(tmp, "parquet", True, binary=args.parquet_bin.resolve()))
        gws += [Gateway(tmp, "local", True), Gateway(tmp, "s3", True, storage)]
        try:
            runs = {g.name: [] for g in gws}
            for _ in range(args.rounds):
                for g in gws:
                    runs[g.name].append(load(args, g))
            time.sleep(2)  # the last flushes
            commits = {g.name: commit_stats(g, args.rounds * args.seconds) for g in gws[1:]}
        finally:
            for g in gws:
                g.stop()
            weed.stop()
    mean = {n: {k: sum(r[k] for r in rs) / len(rs) for k in rs[0]} for n, rs in runs.items()}
    off = mean["off"]["rps"]
    print(f"\n{args.rounds} rounds of {args.seconds} s per mode, {args.clients} clients, /predict, fraud_classifier v1\n")
    print("| mode | req/s | / off | p50 ms | p99 ms | commits (files) | commit mean / p50 / p99 ms | retries |")
    print("|---|---|---|---|---|---|---|---|")
    for n in runs:
        m, c = mean[n], commits.get(n)
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        if n == "parquet":  # no commits: one file per flush
            cs = f"({c['files']:.0f} files) | - | -"
        elif c:
            cs = (f"{c['commits']:.0f} ({c['commits_per_loaded_s']:.2f}/s of load) | {fmt(c['mean_ms'])} / "
                  f"{fmt(c['p50_ms'])} / {fmt(c['p99_ms'])} | {c['retries']:.0f}")
        else:
            cs = "- | - | -"
        print(f"| {n} | {m['rps']:,.0f} | {m['rps'] / off:.3f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {cs} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "mean": mean, "commits": commits}, indent=2))


if __name__ == "__main__":
    main()
