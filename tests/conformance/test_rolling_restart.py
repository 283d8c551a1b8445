"""A rolling restart behind a real load balancer loses nothing: three `sluice serve` processes
behind HAProxy (Debian's, started here on loopback, health checks on `/v2/health/ready`), under
load from `sluice-loadtest` through the balancer, restarted one at a time (SIGTERM, wait for the
exit, start again on the same port).

On SIGTERM a replica reports not ready at once and keeps accepting for `server.drain_delay_ms`,
so the balancer's health check takes it out before its listeners close; then in-flight work
drains and every queued inference-table row is written. Asserted: every request the client sent
was answered 200 (zero failed requests at the client), and every answered request id is exactly
once among the primary rows of the three replicas' inference tables (zero rows lost), read with
the Python `deltalake` reader.

The balancer settings are the ones the README recommends: `inter 200ms fall 1 rise 2` health
checks, `retry-on conn-failure` (a request that never reached a replica is sent to another).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import deltalake
import pytest

from seaweedfs import free_ports
from sluice_support import REPO, read_tail, sluice_binary
from test_inference_tables import ENDPOINT, TABLE, write_config

LOADTEST = os.environ.get("SLUICE_LOADTEST_BIN") or str(REPO / "target" / "debug" / "sluice-loadtest")
PAYLOAD = REPO / "tests" / "fixtures" / "inputs" / "fraud_classifier.json"
DRAIN_MS = 1500


class Replica:
    def __init__(self, root: Path, http_port: int, admin_port: int):
        self.root = root
        self.http_port = http_port
        self.admin_port = admin_port
        self.data = root / "data"
        root.mkdir(parents=True, exist_ok=True)
        cfg = write_config(root / "sluice.toml", self.data, flush_interval_ms=200)
        cfg.write_text(cfg.read_text().replace("watch_config = false\n",
                                               f"watch_config = false\ndrain_delay_ms = {DRAIN_MS}\n", 1))
        self.config = cfg
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.log_path = self.root / f"sluice-{self.starts}.log"
        log = open(self.log_path, "wb")
        cmd = [sluice_binary(), "serve", "--config", str(self.config), "--http", f"127.0.0.1:{self.http_port}",
               "--grpc", "127.0.0.1:0", "--admin", f"127.0.0.1:{self.admin_port}", "--shutdown-grace-secs", "30"]
        self.proc = subprocess.Popen(cmd, cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 60
        while not self.ready():
            assert self.proc.poll() is None, f"replica exited at start\n{self.log()}"
            assert time.monotonic() < deadline, f"replica not ready within 60 s\n{self.log()}"
            time.sleep(0.05)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def in_flight(self) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return next(float(line.split()[1]) for line in text.splitlines() if line.startswith("sluice_requests_in_flight "))

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=90)

    def log(self) -> str:
        return f"--- {self.log_path} ---\n{read_tail(self.log_path, limit=3000)}"

    def primary_ids(self) -> list[str]:
        t = deltalake.DeltaTable(str(self.data / TABLE)).to_pyarrow_table(columns=["request_id", "is_shadow"])
        rows = t.to_pylist()
        return [r["request_id"] for r in rows if not r["is_shadow"]]


def haproxy_config(path: Path, front: int, backends: list[int]) -> Path:
    servers = "\n".join(f"  server r{i} 127.0.0.1:{p} check" for i, p in enumerate(backends))
    path.write_text(f"""\
global
  maxconn 2000

defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  retries 3
  option redispatch
  retry-on conn-failure

frontend fe
  bind 127.0.0.1:{front}
  default_backend sluice

backend sluice
  balance roundrobin
  option httpchk GET /v2/health/ready
  http-check expect status 200
  default-server inter 200ms fastinter 100ms downinter 200ms fall 1 rise 2
{servers}
""")
    return path


def test_rolling_restart_of_three_replicas_under_load_fails_no_request_and_loses_no_row(tmp_path):
    haproxy = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.path.exists(p)), None)
    if haproxy is None:
        pytest.fail("haproxy not found: scripts/test.sh installs Debian's haproxy package", pytrace=False)
    front, *ports = free_ports(7)
    replicas = [Replica(tmp_path / f"r{i}", ports[i], ports[3 + i]) for i in range(3)]
    ports = ports[:3]
    for r in replicas:
        r.start()
    cfg = haproxy_config(tmp_path / "haproxy.cfg", front, ports)
    lb_log = open(tmp_path / "haproxy.log", "wb")
    lb = subprocess.Popen([haproxy, "-f", str(cfg), "-db"], stdout=lb_log, stderr=subprocess.STDOUT)
    load = None
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{front}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            assert time.monotonic() < deadline, (tmp_path / "haproxy.log").read_text()
            time.sleep(0.1)

        request_log = tmp_path / "requests.jsonl"
        seconds = 35
        load = subprocess.Popen(
            [LOADTEST, "--url", f"http://127.0.0.1:{front}", "--endpoint", ENDPOINT, "--payload", str(PAYLOAD),
             "--rows", "1", "--concurrency", "4", "--duration", f"{seconds}s", "--warmup", "0s",
             "--request-log", str(request_log)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started = time.monotonic()
        # the gauge an autoscaler scales on sees the load
        seen = 0.0
        while time.monotonic() - started < 3:
            seen = max(seen, sum(r.in_flight() for r in replicas))
            time.sleep(0.02)
        assert seen >= 1, "sluice_requests_in_flight never above 0 under load"
        for r in replicas:
            t0 = time.monotonic()
            rc = r.stop()
            assert rc == 0, f"replica exited {rc} after SIGTERM\n{r.log()}"
            r.start()
            # back in the balancer (rise 2 at 200 ms) before the next one goes
            time.sleep(0.8)
            print(f"replica on :{r.http_port} restarted in {time.monotonic() - t0:.1f} s")
        assert time.monotonic() - started < seconds - 2, "the restarts did not fit in the load run"
        out, _ = load.communicate(timeout=120)
        lines = [json.loads(line) for line in request_log.read_text().splitlines()]
        failed = [x for x in lines if x["outcome"] != "ok"]
        assert lines and not failed, f"{len(failed)} of {len(lines)} requests failed: {failed[:5]}\n{out}"
        answered = [x["id"] for x in lines]
        assert all(answered) and len(set(answered)) == len(answered)

        assert [r.in_flight() for r in replicas] == [0, 0, 0]
        for r in replicas:
            assert r.stop() == 0, r.log()
        logged: list[str] = []
        for r in replicas:
            ids = r.primary_ids()
            assert ids, f"replica {r.root.name} logged nothing"
            logged += ids
        assert len(logged) == len(set(logged)), "a request id logged twice"
        missing = set(answered) - set(logged)
        assert not missing, f"{len(missing)} of {len(answered)} answered requests are in no table"
        assert set(logged) == set(answered)
        print(f"{len(answered)} requests through HAProxy across 3 rolling restarts: none failed, none lost")
    finally:
        if load is not None and load.poll() is None:
            load.kill()
        lb.send_signal(signal.SIGTERM)
        lb.wait(timeout=10)
        lb_log.close()
        for r in replicas:
            if r.proc is not None and r.proc.poll() is None:
                r.proc.kill()
