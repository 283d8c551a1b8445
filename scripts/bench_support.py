"""What the benchmark scripts share: starting a release gateway on free loopback ports."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REL = ROOT / "target" / "release"


def start_gateway(workdir: Path, config: Path, binary: Path | None = None, env: dict | None = None,
                  cwd: Path | None = None):
    """`sluice serve` with `config` on ports 0 (run in `cwd`, default this one); returns (process,
    ports dict, open log file).
    Exits the script, pointing at the log, when the gateway dies before it serves."""
    ports = workdir / "ports.json"
    log = open(workdir / "sluice.log", "w")
    proc = subprocess.Popen(
        [str(binary or REL / "sluice"), "serve", "--config", str(config), "--ort-lib",
         str(ROOT / ".ort/lib/libonnxruntime.so"), "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0",
         "--admin", "127.0.0.1:0", "--ports-file", str(ports)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd)
    for _ in range(240):
        if ports.exists() and ports.stat().st_size:
            break
        if proc.poll() is not None:
            sys.exit(f"gateway exited; see {workdir / 'sluice.log'}")
        time.sleep(0.25)
    return proc, json.loads(ports.read_text()), log


def wait_ready(http_port: int, limit_s: float = 60):
    """Waits for `/v2/health/ready` of a gateway on 127.0.0.1:`http_port` (all models loaded)."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"gateway not ready after {limit_s:.0f} s")
