"""The Grafana dashboard in the repository (docs/grafana/sluice-dashboard.json) against the demo.

Starts the demo config (its tables in a temp dir), sends it traffic (answered and refused
requests), refreshes its monitor and starts and aborts a rollout, as an operator would; then every
metric any panel or variable of the dashboard queries must be a series in the demo's /metrics.
Also: the renamed metrics keep their old names as aliases for one release, with the same values.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from sluice_support import REPO, fixture, get, post_json, sluice_binary, start_demo, stop_sluice

DASHBOARD = REPO / "docs" / "grafana" / "sluice-dashboard.json"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def samples(text: str) -> list[tuple[str, dict, float]]:
    out = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def queries(dash: dict) -> list[str]:
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"] if v.get("type") == "query"]
    return exprs


def test_the_dashboard_is_well_formed():
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), ids
    for p in dash["panels"]:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]), p["title"]
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
    for e in queries(dash):
        assert e.count("(") == e.count(")") and e.count("{") == e.count("}") and e.count("[") == e.count("]"), e
    # what the issue asks a dashboard to show
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for what in ("request rate", "errors", "latency", "queue depth", "drops", "drift", "alerts", "rollout"):
        assert what in titles, what


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    proc, ports, log = start_demo(tmp_path_factory.mktemp("grafana"))
    yield {"http": f"http://127.0.0.1:{ports['http']}", "admin": f"http://127.0.0.1:{ports['admin']}", "log": log}
    stop_sluice(proc)


def metrics_of(demo) -> list[tuple[str, dict, float]]:
    r = get(f"{demo['admin']}/metrics")
    assert r.status == 200, r.body[:300]
    return samples(r.body.decode())


def cli(demo, *args: str) -> str:
    p = subprocess.run([sluice_binary(), *args, "--admin-url", demo["admin"]], capture_output=True, text=True,
                       timeout=60, cwd=str(REPO))
    assert p.returncode == 0, f"sluice {' '.join(args)}: {p.stderr}"
    return p.stdout


def test_every_metric_the_dashboard_queries_is_exported_by_the_demo(demo):
    fx = fixture("fraud_classifier")
    body = {"dataframe_split": {"columns": fx["columns"], "data": fx["data"][:1]}}
    for _ in range(40):
        assert post_json(f"{demo['http']}/endpoints/fraud/predict", body).status == 200
    assert post_json(f"{demo['http']}/endpoints/fraud/predict", {"dataframe_split": {"columns": ["x"]}}).status == 400
    assert get(f"{demo['http']}/no/such/route").status == 404
    # the monitor reads the inference table once it is flushed
    deadline = time.monotonic() + 60
    while not any(n == "sluice_monitor_drift_distance" for n, _, _ in metrics_of(demo)):
        assert time.monotonic() < deadline, "no drift gauges after a minute of refreshes\n" + demo["log"].read_text()[-3000:]
        r = post_json(f"{demo['admin']}/monitors/fraud/refresh", {})
        assert r.status == 200, r.body[:500]
        time.sleep(0.5)
    out = cli(demo, "rollout", "start", "fraud", "--to", "challenger", "--steps", "50,100", "--interval", "1h")
    assert "started at step 1 of 2" in out, out
    during = metrics_of(demo)
    cli(demo, "rollout", "abort", "fraud")

    exported = {n for n, _, _ in during}
    dash = json.loads(DASHBOARD.read_text())
    queried = {name for e in queries(dash) for name in re.findall(r"\bsluice_[a-z0-9_]+", e)}
    assert len(queried) >= 15, sorted(queried)
    missing = sorted(queried - exported)
    assert not missing, f"the dashboard queries metrics the demo does not export: {missing}"

    # renamed metrics: the new ones, and the old names beside them with the same values
    def value(name, **labels):
        got = [v for n, l, v in during if n == name and all(l.get(k) == w for k, w in labels.items())]
        assert len(got) == 1, f"{name} {labels}: {got}"
        return got[0]

    assert value("sluice_rollout_candidate_traffic_ratio", endpoint="fraud") == 0.5
    assert value("sluice_rollout_candidate_traffic_percent", endpoint="fraud") == 50.0
    after = {(n, l.get("endpoint")): v for n, l, v in metrics_of(demo)}
    assert after[("sluice_rollout_candidate_traffic_ratio", "fraud")] == 0.0
    drift = [(l, v) for n, l, v in during if n == "sluice_monitor_drift_distance"]
    assert drift and all(l["metric"] in {"wasserstein_distance", "population_stability_index", "js_distance",
                                          "tv_distance", "l_infinity_distance"} for l, _ in drift), drift[:3]
    for l, v in drift:
        assert value("sluice_monitor_drift", **l) == v, l
    pvalues = [(l, v) for n, l, v in during if n == "sluice_monitor_drift_pvalue"]
    assert pvalues and all(0.0 <= v <= 1.0 and l["test"] in {"ks", "chi_squared"} for l, v in pvalues), pvalues[:3]
    for l, v in pvalues:
        old = {k: w for k, w in l.items() if k != "test"}
        assert value("sluice_monitor_drift", metric=f"{l['test']}_pvalue", **old) == v, l
    # per served model in flight (idle now: 0) and per model version queue depth
    served = {l["served_model"] for n, l, v in during if n == "sluice_served_model_requests_in_flight"
              and l["endpoint"] == "fraud"}
    assert {"champion", "challenger"} <= served, served
    depth = {(l["model"], l["version"]): v for n, l, v in during if n == "sluice_model_queue_depth"}
    assert depth.get(("fraud_classifier", "1")) == 0.0, depth
