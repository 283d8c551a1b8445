#!/usr/bin/env python3
"""Resident memory of the gateway (issue 19, item 6): the bundled demo (sluice.toml: 5 model
versions, logging, a 100% shadow, a monitor) at idle and under 16-client load, and the cost of
each extra loaded model version.

    cargo build --release -p sluice -p sluice-loadtest --bins
    python3 scripts/bench-memory.py [--seconds 10] [--clients 16] [--json out.json]

Steps:
  a. the demo config (paths pointed at a temp dir), idle: RSS 5 s after the gateway is ready;
  b. the same gateway under `sluice-loadtest` /predict at --clients for --seconds: RSS sampled
     every 0.25 s (max and last), then again 5 s after the load stops (what is kept);
  c. per extra model version: gateways serving 1 and then 9 versions of the MLP (2.2 MB of
     weights; the versions are copies of models/mlp/1) and of fraud_classifier (33 KB), idle;
     (RSS(9) - RSS(1)) / 8 per version, one gateway at a time.
RSS is VmRSS of /proc/<pid>/status (resident, shared pages of the ORT library included); the
peak is VmHWM.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_support import REL, ROOT, start_gateway, wait_ready  # noqa: E402  (scripts/ is on sys.path)

PAYLOAD = ROOT / "tests" / "fixtures" / "inputs" / "fraud_classifier.json"


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def mib(kib: int) -> float:
    return round(kib / 1024, 1)


def gateway(workdir: Path, config_text: str):
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "sluice.toml"
    cfg.write_text(config_text)
    proc, ports, log = start_gateway(workdir, cfg, cwd=workdir)
    wait_ready(ports["http"])
    return proc, ports, log


def stop(proc, log):
    proc.terminate()
    proc.wait(60)
    log.close()


def demo(tmp: Path, args) -> dict:
    work = tmp / "demo"
    work.mkdir()
    (work / "models").symlink_to(ROOT / "models")
    text = (ROOT / "sluice.toml").read_text().replace("watch_config = true", "watch_config = false")
    proc, ports, log = gateway(work, text)
    out = {}
    try:
        time.sleep(5)
        out["idle_mib"] = mib(status_kib(proc.pid, "VmRSS"))
        samples: list[int] = []
        done = threading.Event()

        def sample():
            while not done.is_set():
                samples.append(status_kib(proc.pid, "VmRSS"))
                time.sleep(0.25)

        t = threading.Thread(target=sample)
        t.start()
        cmd = [str(REL / "sluice-loadtest"), "--target", "predict", "--url", f"http://127.0.0.1:{ports['http']}",
               "--endpoint", "fraud", "--payload", str(PAYLOAD), "-c", str(args.clients),
               "--duration", f"{args.seconds}s", "--warmup", "2s", "--output", "json"]
        p = subprocess.run(cmd, capture_output=True, text=True)
        done.set()
        t.join()
        if p.returncode not in (0, 2):
            sys.exit(f"load failed: {p.stderr}")
        r = json.loads(p.stdout)["overall"]
        out["load"] = {"clients": args.clients, "seconds": args.seconds, "rps": r["throughput"]["requests_per_s"],
                       "errors": r["requests"]["errors"], "rss_max_mib": mib(max(samples)),
                       "rss_end_mib": mib(samples[-1])}
        time.sleep(5)
        out["after_load_mib"] = mib(status_kib(proc.pid, "VmRSS"))
        out["peak_mib"] = mib(status_kib(proc.pid, "VmHWM"))
    finally:
        stop(proc, log)
    return out


VERSIONS_CONFIG = """
[server]
data_dir = "data"
[runtime]
model_repository = "repo"
[[models]]
name = "{model}"
versions = {versions}
[[endpoints]]
name = "e"
served_entities = [{{ name = "v1", entity_name = "{model}", entity_version = "1" }}]
"""


def per_version(tmp: Path, model: str, n: int) -> dict:
    rss = {}
    for count in (1, n):
        work = tmp / f"{model}-{count}"
        repo = work / "repo" / model
        repo.mkdir(parents=True)
        for v in range(1, count + 1):
            shutil.copytree(ROOT / "models" / model / "1", repo / str(v))
        manifest = ROOT / "models" / model / "manifest.toml"
        if manifest.exists():
            shutil.copy(manifest, repo / "manifest.toml")
        proc, _, log = gateway(work, VERSIONS_CONFIG.format(model=model, versions=list(range(1, count + 1))))
        try:
            time.sleep(3)
            rss[count] = status_kib(proc.pid, "VmRSS")
        finally:
            stop(proc, log)
    size = (ROOT / "models" / model / "1" / "model.onnx").stat().st_size
    return {"model_bytes": size, "rss_1_mib": mib(rss[1]), f"rss_{n}_mib": mib(rss[n]),
            "per_extra_version_mib": round((rss[n] - rss[1]) / 1024 / (n - 1), 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--versions", type=int, default=9)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    for f in ["sluice", "sluice-loadtest"]:
        if not (REL / f).exists():
            sys.exit(f"missing {REL / f}; build first (see the docstring)")
    tmp = Path(tempfile.mkdtemp(prefix="sluice-mem-"))
    out = {"demo": demo(tmp, args),
           "per_version": {m: per_version(tmp, m, args.versions) for m in ("mlp", "fraud_classifier")}}
    d = out["demo"]
    print("| measurement | resident memory |\n|---|---|")
    print(f"| demo (sluice.toml), idle | {d['idle_mib']} MiB |")
    print(f"| demo under {args.clients} clients, /predict for {args.seconds} s ({d['load']['rps']:.0f} req/s, "
          f"logging + 100% shadow) | max {d['load']['rss_max_mib']} MiB, end {d['load']['rss_end_mib']} MiB |")
    print(f"| demo 5 s after the load | {d['after_load_mib']} MiB (peak VmHWM {d['peak_mib']} MiB) |")
    for m, r in out["per_version"].items():
        print(f"| each extra loaded version of {m} ({r['model_bytes'] / 1e6:.2f} MB model) | "
              f"{r['per_extra_version_mib']} MiB (1 version {r['rss_1_mib']} MiB, {args.versions} versions "
              f"{r[f'rss_{args.versions}_mib']} MiB) |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
