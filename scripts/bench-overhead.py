#!/usr/bin/env python3
"""Published overhead: the gateway against bare ONNX Runtime and against the machine's HTTP
ceiling, the cost of inference logging and of 100% shadow mirroring, and dynamic batching on vs
off, all measured in one run on one machine with the same load tool.

    cargo build --release -p sluice -p sluice-loadtest --bins --example ort_bare --example fixed_body --example fixed_grpc
    python3 scripts/bench-overhead.py [--seconds 10] [--clients 16] [--json out.json]

Steps (every load run: sluice-loadtest closed loop, the first 2 s warm-up excluded):
  a. `ort_bare`: in-process Session::run per model, 1 row, one thread (p50, runs/s).
  b. the gateway (release, logging off, no shadow) on fraud_classifier v1: /predict, V2 binary and
     gRPC at concurrency 1 (p50) and at --clients (saturated throughput).
  c. `fixed_body`: a minimal hyper server answering a fixed body, /predict at concurrency 1 and
     at --clients: the HTTP stack's ceiling on this machine; `fixed_grpc`: a minimal tonic server
     answering a fixed ModelInferResponse, gRPC at concurrency 1 and at --clients: the gRPC ceiling.
     Gateway work per request = p50(gateway) - p50(bare ORT) - p50(the ceiling of its transport).
  d. logging on vs off, shadow 100% vs none: the same model behind separate endpoints of one
     gateway, rounds alternated (A B A B) so machine noise hits both alike.
  e. dynamic batching on vs off for the MLP (two gateway processes, one after the other): rows/s at
     64 clients, p50 at 1 client.
  f. with --baseline-bin OLD: before/after. OLD (an earlier release build of `sluice`) and this
     build serve the same config side by side; /predict, V2 binary and gRPC at concurrency 1 and
     at --clients, rounds alternated (A B A B). Reports after / before for req/s and p50.
Prints a Markdown table of every number and, with --json, writes them all.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REL = ROOT / "target" / "release"

from bench_support import start_gateway  # noqa: E402  (scripts/ is on sys.path: the script's own dir)

PAYLOAD = ROOT / "tests" / "fixtures" / "inputs" / "fraud_classifier.json"

CONFIG = """
[server]
data_dir = "{data}"
[runtime]
model_repository = "{root}/models"
[[models]]
name = "fraud_classifier"
versions = [1, 3]
batching = {{ enabled = true, max_batch_size = 64, max_queue_delay_us = 0 }}
[[models]]
name = "mlp"
versions = [1]
batching = {{ enabled = {mlp_batching}, max_batch_size = 64, max_queue_delay_us = 0 }}
[[endpoints]]
name = "fraud"
served_entities = [{{ name = "champion", entity_name = "fraud_classifier", entity_version = "1" }}]
[[endpoints]]
name = "fraud_logged"
served_entities = [{{ name = "champion", entity_name = "fraud_classifier", entity_version = "1" }}]
inference_table = {{ enabled = true }}
[[endpoints]]
name = "fraud_shadow"
served_entities = [
  {{ name = "champion", entity_name = "fraud_classifier", entity_version = "1" }},
  {{ name = "shadow", entity_name = "fraud_classifier", entity_version = "3" }},
]
traffic_config = {{ routes = [{{ served_model_name = "champion", traffic_percentage = 100 }}] }}
shadow = [{{ served_model_name = "shadow", mirror_percent = 100 }}]
[[endpoints]]
name = "mlp"
served_entities = [{{ name = "mlp-v1", entity_name = "mlp", entity_version = "1" }}]
"""


class Gateway:
    def __init__(self, tmp: Path, mlp_batching: bool, binary: Path | None = None):
        self.dir = Path(tempfile.mkdtemp(dir=tmp))
        cfg = self.dir / "sluice.toml"
        cfg.write_text(CONFIG.format(data=self.dir / "data", root=ROOT, mlp_batching=str(mlp_batching).lower()))
        self.proc, p, self.log = start_gateway(self.dir, cfg, binary)
        self.http, self.grpc = f"http://127.0.0.1:{p['http']}", f"http://127.0.0.1:{p['grpc']}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()


def load(args, *extra):
    cmd = [str(REL / "sluice-loadtest"), "--duration", f"{args.seconds}s", "--warmup", "2s", "--output", "json", *extra]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode not in (0, 2):
        sys.exit(f"load failed: {' '.join(cmd)}\n{p.stderr}")
    r = json.loads(p.stdout)["overall"]
    if r["requests"]["errors"]:
        print(f"warning: {r['requests']['errors']} errors in {' '.join(extra)}: {r['errors']}", file=sys.stderr)
    return {"rps": r["throughput"]["requests_per_s"], "rows_per_s": r["throughput"]["rows_per_s"],
            "p50_ms": r["latency_ms"]["p50"], "p99_ms": r["latency_ms"]["p99"], "errors": r["requests"]["errors"]}


def fraud(g, args, target, clients, endpoint="fraud"):
    url = g.grpc if target == "grpc" else g.http
    extra = ["--target", target, "--url", url, "-c", str(clients), "--payload", str(PAYLOAD)]
    extra += ["--endpoint", endpoint] if target == "predict" else ["--model", endpoint]
    return load(args, *extra)


def alternate(args, a, b, rounds=2):
    """Runs a() and b() alternately; returns the mean of each metric."""
    ra, rb = [], []
    for _ in range(rounds):
        ra.append(a())
        rb.append(b())
    mean = lambda rs: {k: sum(r[k] for r in rs) / len(rs) for k in rs[0]}  # noqa: E731
    return mean(ra), mean(rb)


def ceiling(args, tmp, example, target_args):
    """A fixed-answer server (`example`) driven like the gateway: concurrency 1 and --clients."""
    ports = tmp / f"{example}.port"
    server = subprocess.Popen([str(REL / "examples" / example), "127.0.0.1:0", str(ports)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if ports.exists() and ports.stat().st_size:
                break
            time.sleep(0.1)
        base = [*target_args, "--url", f"http://127.0.0.1:{ports.read_text().strip()}", "--payload", str(PAYLOAD)]
        return {"c1": load(args, *base, "-c", "1"), "sat": load(args, *base, "-c", str(args.clients))}
    finally:
        server.terminate()
        server.wait(10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--json", default=None)
    ap.add_argument("--baseline-bin", default=None, help="an earlier sluice release binary: before/after (step f)")
    args = ap.parse_args()
    for f in ["sluice", "sluice-loadtest", "examples/ort_bare", "examples/fixed_body", "examples/fixed_grpc"]:
        if not (REL / f).exists():
            sys.exit(f"missing {REL / f}; build first (see the docstring)")
    tmp = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    out = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "seconds": args.seconds, "clients": args.clients}

    # a. bare ONNX Runtime
    p = subprocess.run([str(REL / "examples/ort_bare"), "20000", "1", "--json"], capture_output=True, text=True, check=True)
    out["ort_bare"] = {r["model"]: r for r in json.loads(p.stdout)}

    # b + d. one gateway
    g = Gateway(tmp, mlp_batching=True)
    try:
        out["gateway"] = {}
        for target in ["predict", "v2-binary", "grpc"]:
            out["gateway"][target] = {"c1": fraud(g, args, target, 1), "sat": fraud(g, args, target, args.clients)}
        on, off = alternate(args, lambda: fraud(g, args, "predict", args.clients, "fraud_logged"),
                            lambda: fraud(g, args, "predict", args.clients, "fraud"))
        out["logging"] = {"on": on, "off": off, "ratio": on["rps"] / off["rps"]}
        sh, no = alternate(args, lambda: fraud(g, args, "predict", args.clients, "fraud_shadow"),
                           lambda: fraud(g, args, "predict", args.clients, "fraud"))
        out["shadow"] = {"on": sh, "off": no, "ratio": sh["rps"] / no["rps"]}
        mlp_on = {
            "c1": load(args, "--target", "v2-binary", "--url", g.http, "--model", "mlp", "-c", "1"),
            "c64": load(args, "--target", "v2-binary", "--url", g.http, "--model", "mlp", "-c", "64"),
        }
    finally:
        g.stop()

    # c. HTTP and gRPC ceilings
    out["ceiling"] = ceiling(args, tmp, "fixed_body", ["--target", "predict", "--endpoint", "fraud"])
    out["grpc_ceiling"] = ceiling(args, tmp, "fixed_grpc", ["--target", "grpc", "--model", "fraud"])

    # e. batching off
    g = Gateway(tmp, mlp_batching=False)
    try:
        mlp_off = {
            "c1": load(args, "--target", "v2-binary", "--url", g.http, "--model", "mlp", "-c", "1"),
            "c64": load(args, "--target", "v2-binary", "--url", g.http, "--model", "mlp", "-c", "64"),
        }
    finally:
        g.stop()
    out["batching"] = {"on": mlp_on, "off": mlp_off}

    # f. before / after
    if args.baseline_bin:
        old, new = Gateway(tmp, mlp_batching=True, binary=Path(args.baseline_bin)), Gateway(tmp, mlp_batching=True)
        try:
            out["before_after"] = {}
            for target in ["predict", "v2-binary", "grpc"]:
                for clients in [1, args.clients]:
                    before, after = alternate(args, lambda: fraud(old, args, target, clients),
                                              lambda: fraud(new, args, target, clients))
                    out["before_after"][f"{target} c{clients}"] = {"before": before, "after": after}
        finally:
            old.stop()
            new.stop()

    bare = out["ort_bare"]["fraud_classifier"]["p50_us"]
    lines = ["| measurement | value |", "|---|---|"]
    for m, r in out["ort_bare"].items():
        lines.append(f"| bare ONNX Runtime, {m}, 1 row: p50 / runs per s (1 thread) | {r['p50_us']:.1f} us / {r['runs_per_s']:,.0f} |")
    for t, r in out["gateway"].items():
        ceiling = out["grpc_ceiling"] if t == "grpc" else out["ceiling"]
        which = "gRPC ceiling" if t == "grpc" else "HTTP ceiling"
        work = r['c1']['p50_ms'] * 1000 - bare - ceiling['c1']['p50_ms'] * 1000
        lines.append(f"| gateway {t}, fraud, concurrency 1: p50 | {r['c1']['p50_ms'] * 1000:.0f} us "
                     f"(over bare ORT: {r['c1']['p50_ms'] * 1000 - bare:.0f} us; gateway work, less the {which}'s "
                     f"round trip too: {work:.0f} us) |")
        lines.append(f"| gateway {t}, fraud, {args.clients} clients: req/s | {r['sat']['rps']:,.0f} "
                     f"({r['sat']['rps'] / ceiling['sat']['rps']:.2f} of the {which}) |")
    c = out["ceiling"]
    lines.append(f"| HTTP ceiling (fixed body), concurrency 1: p50 | {c['c1']['p50_ms'] * 1000:.0f} us |")
    lines.append(f"| HTTP ceiling (fixed body), {args.clients} clients: req/s | {c['sat']['rps']:,.0f} |")
    c = out["grpc_ceiling"]
    lines.append(f"| gRPC ceiling (fixed ModelInferResponse), concurrency 1: p50 | {c['c1']['p50_ms'] * 1000:.0f} us |")
    lines.append(f"| gRPC ceiling (fixed ModelInferResponse), {args.clients} clients: req/s | {c['sat']['rps']:,.0f} |")
    lg, sh = out["logging"], out["shadow"]
    lines.append(f"| inference logging on / off, req/s | {lg['on']['rps']:,.0f} / {lg['off']['rps']:,.0f} = {lg['ratio']:.3f} |")
    lines.append(f"| 100% shadow / none, req/s | {sh['on']['rps']:,.0f} / {sh['off']['rps']:,.0f} = {sh['ratio']:.3f} |")
    lines.append(f"| 100% shadow / none, p99 | {sh['on']['p99_ms']:.2f} ms / {sh['off']['p99_ms']:.2f} ms |")
    b = out["batching"]
    lines.append(f"| MLP batching on / off, 64 clients, rows/s | {b['on']['c64']['rows_per_s']:,.0f} / {b['off']['c64']['rows_per_s']:,.0f} "
                 f"= {b['on']['c64']['rows_per_s'] / b['off']['c64']['rows_per_s']:.2f} |")
    lines.append(f"| MLP batching on / off, 1 client, p50 | {b['on']['c1']['p50_ms'] * 1000:.0f} us / {b['off']['c1']['p50_ms'] * 1000:.0f} us |")
    for k, r in out.get("before_after", {}).items():
        bf, af = r["before"], r["after"]
        lines.append(f"| before / after, {k}: req/s | {bf['rps']:,.0f} / {af['rps']:,.0f} = {af['rps'] / bf['rps']:.3f} |")
        lines.append(f"| before / after, {k}: p50 | {bf['p50_ms'] * 1000:.0f} us / {af['p50_ms'] * 1000:.0f} us |")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
