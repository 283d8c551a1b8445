#!/usr/bin/env python3
"""Published overhead: the gateway against bare ONNX Runtime and against the machine's HTTP
ceiling, the cost of inference logging and of 100% shadow mirroring, and dynamic batching on vs
off, all measured in one run on one machine with the same load tool.

    cargo build --release -p sluice -p sluice-loadtest --bins --example ort_bare --example fixed_body --example fixed_grpc
    python3 scripts/bench-overhead.py [--seconds 10] [--clients 16] [--json out.json]

Steps (every load run: sluice-loadtest closed loop, the first 2 s warm-up excluded). Whatever is
compared runs side by side and is measured in alternated rounds (A B A B ..., --rounds of each,
default 3), each number the median of its rounds, so machine noise hits both sides alike:
  a. `ort_bare`: in-process Session::run per model, 1 row, one thread (p50, runs/s).
  b. the gateway (release, logging off, no shadow) on fraud_classifier v1: /predict, V2 binary and
     gRPC at concurrency 1 (p50) and at --clients (saturated throughput), alternated with
  c. `fixed_body`: a minimal hyper server answering a fixed body, /predict at concurrency 1 and
     at --clients: the HTTP stack's ceiling on this machine; `fixed_grpc`: a minimal tonic server
     answering a fixed ModelInferResponse, gRPC at concurrency 1 and at --clients: the gRPC ceiling.
     Gateway work per request = p50(gateway) - p50(bare ORT) - p50(the ceiling of its transport).
  d. logging on vs off, shadow 100% vs none: the same model behind separate endpoints of one
     gateway.
  e. dynamic batching on vs off for the MLP (two gateway processes, side by side): rows/s at 64
     clients, p50 at 1 client.
  f. with --baseline-bin OLD: before/after. OLD (an earlier release build of `sluice`) and this
     build serve the same config side by side; /predict, V2 binary and gRPC at concurrency 1 and
     at --clients. Reports after / before for req/s and p50.
Prints a Markdown table of every number and, with --json, writes them all.
"""

import argparse
import json
import os
import resource
import statistics
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(args, *extra, server_pid=None):
    """One sluice-loadtest run. With `server_pid`, also the CPU time per request of the server and
    of the load tool: CPU time of the whole run (warm-up included) over req/s x --seconds."""
    cmd = [str(REL / "sluice-loadtest"), "--duration", f"{args.seconds}s", "--warmup", "2s", "--output", "json", *extra]
    server0 = cpu_seconds(server_pid) if server_pid else 0.0
    client0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, capture_output=True, text=True)
    client1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    server1 = cpu_seconds(server_pid) if server_pid else 0.0
    if p.returncode not in (0, 2):
        sys.exit(f"load failed: {' '.join(cmd)}\n{p.stderr}")
    r = json.loads(p.stdout)["overall"]
    if r["requests"]["errors"]:
        print(f"warning: {r['requests']['errors']} errors in {' '.join(extra)}: {r['errors']}", file=sys.stderr)
    out = {"rps": r["throughput"]["requests_per_s"], "rows_per_s": r["throughput"]["rows_per_s"],
           "p50_ms": r["latency_ms"]["p50"], "p99_ms": r["latency_ms"]["p99"], "errors": r["requests"]["errors"]}
    sent = out["rps"] * args.seconds
    if server_pid and sent:
        client = (client1.ru_utime + client1.ru_stime) - (client0.ru_utime + client0.ru_stime)
        out["server_cpu_us"] = (server1 - server0) / sent * 1e6
        out["client_cpu_us"] = client / sent * 1e6
    return out


def fraud(g, args, target, clients, endpoint="fraud"):
    url = g.grpc if target == "grpc" else g.http
    extra = ["--target", target, "--url", url, "-c", str(clients), "--payload", str(PAYLOAD)]
    extra += ["--endpoint", endpoint] if target == "predict" else ["--model", endpoint]
    return load(args, *extra, server_pid=g.proc.pid)


def alternate(args, *runs):
    """Runs each of `runs` in turn, --rounds times; returns the median of each metric, per run."""
    results = [[] for _ in runs]
    for _ in range(args.rounds):
        for run, rs in zip(runs, results):
            rs.append(run())
    median = lambda rs: {k: statistics.median(r[k] for r in rs) for k in rs[0]}  # noqa: E731
    return [median(rs) for rs in results]


class Ceiling:
    """A fixed-answer server (`example`), driven like the gateway."""

    def __init__(self, tmp: Path, example: str, target_args: list[str]):
        ports = tmp / f"{example}.port"
        self.proc = subprocess.Popen([str(REL / "examples" / example), "127.0.0.1:0", str(ports)], stdout=subprocess.DEVNULL)
        for _ in range(100):
            if ports.exists() and ports.stat().st_size:
                break
            time.sleep(0.1)
        else:
            self.stop()
            sys.exit(f"{example} did not start")
        self.args = [*target_args, "--url", f"http://127.0.0.1:{ports.read_text().strip()}", "--payload", str(PAYLOAD)]

    def run(self, args, clients):
        return load(args, *self.args, "-c", str(clients), server_pid=self.proc.pid)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3, help="alternated rounds per comparison (medians)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--baseline-bin", default=None, help="an earlier sluice release binary: before/after (step f)")
    args = ap.parse_args()
    for f in ["sluice", "sluice-loadtest", "examples/ort_bare", "examples/fixed_body", "examples/fixed_grpc"]:
        if not (REL / f).exists():
            sys.exit(f"missing {REL / f}; build first (see the docstring)")
    tmp = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    out = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "seconds": args.seconds, "clients": args.clients,
           "rounds": args.rounds}

    # a. bare ONNX Runtime
    p = subprocess.run([str(REL / "examples/ort_bare"), "20000", "1", "--json"], capture_output=True, text=True, check=True)
    out["ort_bare"] = {r["model"]: r for r in json.loads(p.stdout)}

    # b + c + d + e. the gateways and both ceilings, side by side
    g = Gateway(tmp, mlp_batching=True)
    unbatched = Gateway(tmp, mlp_batching=False)
    http_ceiling = Ceiling(tmp, "fixed_body", ["--target", "predict", "--endpoint", "fraud"])
    grpc_ceiling = Ceiling(tmp, "fixed_grpc", ["--target", "grpc", "--model", "fraud"])
    try:
        out["gateway"] = {t: {} for t in ["predict", "v2-binary", "grpc"]}
        out["ceiling"], out["grpc_ceiling"] = {}, {}
        for key, clients in [("c1", 1), ("sat", args.clients)]:
            runs = alternate(args, *[lambda t=t: fraud(g, args, t, clients) for t in out["gateway"]],
                             lambda: http_ceiling.run(args, clients), lambda: grpc_ceiling.run(args, clients))
            for t, r in zip(out["gateway"], runs):
                out["gateway"][t][key] = r
            out["ceiling"][key], out["grpc_ceiling"][key] = runs[3], runs[4]
        on, off = alternate(args, lambda: fraud(g, args, "predict", args.clients, "fraud_logged"),
                            lambda: fraud(g, args, "predict", args.clients, "fraud"))
        out["logging"] = {"on": on, "off": off, "ratio": on["rps"] / off["rps"]}
        sh, no = alternate(args, lambda: fraud(g, args, "predict", args.clients, "fraud_shadow"),
                           lambda: fraud(g, args, "predict", args.clients, "fraud"))
        out["shadow"] = {"on": sh, "off": no, "ratio": sh["rps"] / no["rps"]}
        mlp = lambda gw, c: load(args, "--target", "v2-binary", "--url", gw.http, "--model", "mlp", "-c", str(c),  # noqa: E731
                                 server_pid=gw.proc.pid)
        on64, off64 = alternate(args, lambda: mlp(g, 64), lambda: mlp(unbatched, 64))
        on1, off1 = alternate(args, lambda: mlp(g, 1), lambda: mlp(unbatched, 1))
        out["batching"] = {"on": {"c1": on1, "c64": on64}, "off": {"c1": off1, "c64": off64}}
    finally:
        for s in [g, unbatched, http_ceiling, grpc_ceiling]:
            s.stop()

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
        ceil = out["grpc_ceiling"] if t == "grpc" else out["ceiling"]
        which = "gRPC ceiling" if t == "grpc" else "HTTP ceiling"
        work = r['c1']['p50_ms'] * 1000 - bare - ceil['c1']['p50_ms'] * 1000
        lines.append(f"| gateway {t}, fraud, concurrency 1: p50 | {r['c1']['p50_ms'] * 1000:.0f} us "
                     f"(over bare ORT: {r['c1']['p50_ms'] * 1000 - bare:.0f} us; gateway work, less the {which}'s "
                     f"round trip too: {work:.0f} us) |")
        lines.append(f"| gateway {t}, fraud, {args.clients} clients: req/s | {r['sat']['rps']:,.0f} "
                     f"({r['sat']['rps'] / ceil['sat']['rps']:.2f} of the {which}) |")
        lines.append(f"| gateway {t}, {args.clients} clients: CPU per request, server / load tool | "
                     f"{r['sat']['server_cpu_us']:.1f} us / {r['sat']['client_cpu_us']:.1f} us |")
    c = out["ceiling"]
    lines.append(f"| HTTP ceiling (fixed body), concurrency 1: p50 | {c['c1']['p50_ms'] * 1000:.0f} us |")
    lines.append(f"| HTTP ceiling (fixed body), {args.clients} clients: req/s | {c['sat']['rps']:,.0f} |")
    lines.append(f"| HTTP ceiling, {args.clients} clients: CPU per request, server / load tool | "
                 f"{c['sat']['server_cpu_us']:.1f} us / {c['sat']['client_cpu_us']:.1f} us |")
    c = out["grpc_ceiling"]
    lines.append(f"| gRPC ceiling (fixed ModelInferResponse), concurrency 1: p50 | {c['c1']['p50_ms'] * 1000:.0f} us |")
    lines.append(f"| gRPC ceiling (fixed ModelInferResponse), {args.clients} clients: req/s | {c['sat']['rps']:,.0f} |")
    lines.append(f"| gRPC ceiling, {args.clients} clients: CPU per request, server / load tool | "
                 f"{c['sat']['server_cpu_us']:.1f} us / {c['sat']['client_cpu_us']:.1f} us |")
    lg, sh = out["logging"], out["shadow"]
    lines.append(f"| inference logging on / off, req/s | {lg['on']['rps']:,.0f} / {lg['off']['rps']:,.0f} = {lg['ratio']:.3f} |")
    lines.append(f"| inference logging on / off, p99 | {lg['on']['p99_ms']:.2f} ms / {lg['off']['p99_ms']:.2f} ms |")
    lines.append(f"| inference logging on / off, gateway CPU per request | {lg['on']['server_cpu_us']:.1f} us / {lg['off']['server_cpu_us']:.1f} us |")
    lines.append(f"| 100% shadow / none, req/s | {sh['on']['rps']:,.0f} / {sh['off']['rps']:,.0f} = {sh['ratio']:.3f} |")
    lines.append(f"| 100% shadow / none, p99 | {sh['on']['p99_ms']:.2f} ms / {sh['off']['p99_ms']:.2f} ms |")
    b = out["batching"]
    lines.append(f"| MLP batching on / off, 64 clients, rows/s | {b['on']['c64']['rows_per_s']:,.0f} / {b['off']['c64']['rows_per_s']:,.0f} "
                 f"= {b['on']['c64']['rows_per_s'] / b['off']['c64']['rows_per_s']:.2f} |")
    lines.append(f"| MLP batching on / off, 64 clients, gateway CPU per request | {b['on']['c64']['server_cpu_us']:.1f} us / {b['off']['c64']['server_cpu_us']:.1f} us |")
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
