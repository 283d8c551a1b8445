#!/usr/bin/env python3
"""The measuring half of scripts/bench-perf-analyzer.sh (run that: it sets up perf_analyzer and
passes it here in $PERF_ANALYZER, with libcudart.so.12 on LD_LIBRARY_PATH).

One release gateway (logging off, no shadow, batching as in the demo config) serves
fraud_classifier v1 and mlp v1. Each is addressed the way Triton's clients address a model: V2
name and version (`perf_analyzer -m fraud_classifier -x 1`). Request data: the rows of
tests/fixtures/inputs/<model>.json, 1 row per request, cycled (perf_analyzer --input-data JSON, one
entry per row, shaped from the gateway's own /v2/models/<m>/versions/1/config). For each model,
transport (HTTP with binary tensors in and out; gRPC) and concurrency: perf_analyzer (time windows
of --interval-ms, stable within --stability %, at most --max-trials windows; infer/s and the p50/p99
of its CSV report), then sluice-loadtest closed loop (--loadtest-seconds, the first 2 s warm-up
excluded) on the same model, target and concurrency. Every load run holds /tmp/bench.lock.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_support import ROOT, start_gateway, wait_ready  # noqa: E402

LOCK = "/tmp/bench.lock"
FIXTURES = ROOT / "tests" / "fixtures" / "inputs"
MODELS = [("fraud_classifier", "1"), ("mlp", "1")]

CONFIG = """
[server]
data_dir = "{data}"
[runtime]
model_repository = "{root}/models"
[[models]]
name = "fraud_classifier"
versions = [1]
batching = {{ enabled = true, max_batch_size = 64, max_queue_delay_us = 0 }}
[[models]]
name = "mlp"
versions = [1]
batching = {{ enabled = true, max_batch_size = 64, max_queue_delay_us = 0 }}
[[endpoints]]
name = "fraud"
served_entities = [{{ name = "champion", entity_name = "fraud_classifier", entity_version = "1" }}]
"""


def fixture_rows(model: str) -> list[list[float]]:
    d = json.loads((FIXTURES / f"{model}.json").read_text())
    rows = d.get("data") or d.get("instances")
    if not rows or not all(isinstance(r, list) for r in rows):
        sys.exit(f"{FIXTURES / model}.json: no rows under data/instances")
    return rows


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def write_inputs(http: str, model: str, version: str, tmp: Path) -> tuple[Path, Path, dict]:
    """perf_analyzer --input-data JSON and a sluice-loadtest payload from the fixture rows, shaped
    by the model config the gateway serves (the dims perf_analyzer itself reads)."""
    cfg = get_json(f"{http}/v2/models/{model}/versions/{version}/config")
    if len(cfg["input"]) != 1:
        sys.exit(f"{model}: expected one input, config has {cfg['input']}")
    inp = cfg["input"][0]
    rows = fixture_rows(model)
    width = len(rows[0])
    shape = [width] if cfg["max_batch_size"] > 0 else [1, width]
    if [d for d in inp["dims"] if d != -1] not in ([width], [1, width]):
        sys.exit(f"{model}: config dims {inp['dims']} do not fit {width}-value rows")
    pa = tmp / f"{model}.pa.json"
    pa.write_text(json.dumps({"data": [{inp["name"]: {"content": r, "shape": shape}} for r in rows]}))
    lt = tmp / f"{model}.rows.json"
    lt.write_text(json.dumps({"data": rows}))
    return pa, lt, cfg


def flock(cmd: list[str]) -> list[str]:
    return ["flock", LOCK, *cmd]


def perf_analyzer(args, pa_bin, url, transport, model, version, c, data, out_dir) -> dict:
    csv_path = out_dir / f"pa-{transport}-{model}-c{c}.csv"
    cmd = [pa_bin, "-m", model, "-x", version, "-i", transport, "-u", url, "-b", "1",
           "--concurrency-range", f"{c}:{c}", "--measurement-mode", "time_windows",
           "--measurement-interval", str(args.interval_ms), "--max-trials", str(args.max_trials),
           "--stability-percentage", str(args.stability), "--input-data", str(data), "-f", str(csv_path)]
    if transport == "http":
        cmd += ["--input-tensor-format", "binary", "--output-tensor-format", "binary"]
    t0 = time.monotonic()
    p = subprocess.run(flock(cmd), capture_output=True, text=True)
    secs = time.monotonic() - t0
    (out_dir / f"pa-{transport}-{model}-c{c}.log").write_text(" ".join(cmd) + "\n\n" + p.stdout + p.stderr)
    if p.returncode != 0 or not csv_path.exists():
        tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-6:])
        print(f"perf_analyzer failed (rc {p.returncode}): {' '.join(cmd)}\n{tail}", file=sys.stderr)
        return {"error": tail, "rc": p.returncode, "secs": secs}
    row = next(csv.DictReader(csv_path.open()))
    return {"infer_per_s": float(row["Inferences/Second"]), "p50_us": int(row["p50 latency"]),
            "p99_us": int(row["p99 latency"]), "secs": secs,
            "server_queue_us": int(row.get("Server Queue") or 0),
            "server_compute_us": sum(int(row.get(k) or 0) for k in
                                     ("Server Compute Input", "Server Compute Infer", "Server Compute Output"))}


def loadtest(args, lt_bin, url, transport, model, version, c, payload) -> dict:
    target = "grpc" if transport == "grpc" else "v2-binary"
    cmd = [lt_bin, "--target", target, "--url", url, "--model", model, "--model-version", version,
           "-c", str(c), "--payload", str(payload), "--duration", f"{args.loadtest_seconds}s",
           "--warmup", "2s", "--output", "json"]
    p = subprocess.run(flock(cmd), capture_output=True, text=True)
    if p.returncode not in (0, 2):
        print(f"sluice-loadtest failed (rc {p.returncode}): {' '.join(cmd)}\n{p.stderr[-800:]}", file=sys.stderr)
        return {"error": p.stderr.strip()[-300:]}
    r = json.loads(p.stdout)["overall"]
    return {"infer_per_s": r["throughput"]["requests_per_s"], "p50_us": r["latency_ms"]["p50"] * 1000,
            "p99_us": r["latency_ms"]["p99"] * 1000, "errors": r["requests"]["errors"]}


def out(cmd: list[str], env=None) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        return (p.stdout.strip() or p.stderr.strip())  # perf_analyzer --version prints to stderr
    except OSError:
        return "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--interval-ms", type=int, default=5000)
    ap.add_argument("--max-trials", type=int, default=4)
    ap.add_argument("--stability", type=int, default=15, help="perf_analyzer --stability-percentage")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--loadtest-seconds", type=int, default=7)
    ap.add_argument("--no-loadtest", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    conc = [int(c) for c in args.concurrency.split(",")]
    pa_bin = os.environ.get("PERF_ANALYZER") or sys.exit("run scripts/bench-perf-analyzer.sh (sets PERF_ANALYZER)")
    sluice = Path(os.environ.get("SLUICE_BIN") or ROOT / "target/release/sluice")
    lt_bin = Path(os.environ.get("SLUICE_LOADTEST_BIN") or ROOT / "target/release/sluice-loadtest")
    if not sluice.exists():
        sys.exit(f"missing {sluice}; cargo build --release -p sluice -p sluice-loadtest --bins")
    if not args.no_loadtest and not lt_bin.exists():
        sys.exit(f"missing {lt_bin}; cargo build --release -p sluice-loadtest (or --no-loadtest)")

    venv_py = Path(pa_bin).parent / "python"
    meta = "import importlib.metadata as m; print(m.version('tritonclient'), m.version('nvidia-cuda-runtime-cu12'))"
    tc, cudart = (out([str(venv_py), "-c", meta]).split() + ["?", "?"])[:2]
    dirty = "-dirty" if out(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]) else ""
    versions = {"tritonclient": tc, "nvidia-cuda-runtime-cu12": cudart,
                "perf_analyzer": out([pa_bin, "--version"]).replace("Perf Analyzer Version ", ""),
                "sluice": out([str(sluice), "--version"]),
                "sluice_commit": out(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]) + dirty}

    tmp = Path(tempfile.mkdtemp(prefix="sluice-bench-pa-"))
    cfg = tmp / "sluice.toml"
    cfg.write_text(CONFIG.format(data=tmp / "data", root=ROOT))
    started = datetime.datetime.now(datetime.timezone.utc)
    proc, ports, log = start_gateway(tmp, cfg, sluice)
    rows = []
    try:
        http = f"http://127.0.0.1:{ports['http']}"
        wait_ready(ports["http"])
        urls = {"http": f"127.0.0.1:{ports['http']}", "grpc": f"127.0.0.1:{ports['grpc']}"}
        lt_urls = {"http": http, "grpc": f"http://127.0.0.1:{ports['grpc']}"}
        inputs = {}
        for model, version in MODELS:
            pa_data, lt_payload, mcfg = write_inputs(http, model, version, tmp)
            inputs[model] = (pa_data, lt_payload)
            print(f"{model} v{version}: max_batch_size {mcfg['max_batch_size']}, input "
                  f"{mcfg['input'][0]['name']} {mcfg['input'][0]['data_type']} dims {mcfg['input'][0]['dims']}",
                  file=sys.stderr)
        for transport in ("http", "grpc"):
            for model, version in MODELS:
                for c in conc:
                    pa_data, lt_payload = inputs[model]
                    r = {"transport": transport, "model": f"{model} v{version}", "concurrency": c}
                    r["perf_analyzer"] = perf_analyzer(args, pa_bin, urls[transport], transport, model, version, c,
                                                       pa_data, tmp)
                    if not args.no_loadtest:
                        r["sluice_loadtest"] = loadtest(args, str(lt_bin), lt_urls[transport], transport, model,
                                                        version, c, lt_payload)
                    print(f"  {transport} {model} c{c}: {json.dumps(r['perf_analyzer'])}", file=sys.stderr)
                    rows.append(r)
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
    finished = datetime.datetime.now(datetime.timezone.utc)

    fmt = lambda v, f="{:,.0f}": f.format(v) if isinstance(v, (int, float)) else "-"  # noqa: E731
    print(f"\nperf_analyzer against sluice, {started:%Y-%m-%d %H:%M}-{finished:%H:%M} UTC, {os.uname().nodename}, "
          f"{os.cpu_count()} CPUs; {args.interval_ms} ms windows, stable within {args.stability}% "
          f"(at most {args.max_trials} windows); 1 row per request (fixture rows); HTTP = binary tensors.\n")
    head = "| transport | model | concurrency | infer/s | p50 µs | p99 µs |"
    sep = "|---|---|---:|---:|---:|---:|"
    if not args.no_loadtest:
        head += " sluice-loadtest infer/s | p50 µs | p99 µs |"
        sep += "---:|---:|---:|"
    print(head)
    print(sep)
    for r in rows:
        pa = r["perf_analyzer"]
        line = f"| {'gRPC' if r['transport'] == 'grpc' else 'HTTP'} | {r['model']} | {r['concurrency']} | "
        line += (f"{fmt(pa.get('infer_per_s'))} | {fmt(pa.get('p50_us'))} | {fmt(pa.get('p99_us'))} |"
                 if "error" not in pa else "failed | - | - |")
        if not args.no_loadtest:
            lt = r["sluice_loadtest"]
            line += f" {fmt(lt.get('infer_per_s'))} | {fmt(lt.get('p50_us'))} | {fmt(lt.get('p99_us'))} |"
        print(line)
    print()
    for k, v in versions.items():
        print(f"- {k}: {v}")
    print(f"- logs and CSVs: {tmp}")
    if args.json:
        Path(args.json).write_text(json.dumps({"started": started.isoformat(), "finished": finished.isoformat(),
                                               "versions": versions, "args": vars(args), "rows": rows}, indent=1))
    if any("error" in r["perf_analyzer"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
