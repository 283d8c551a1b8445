"""A/B analysis: `GET /experiments/{endpoint}` (admin port) against an independent recomputation.

One gateway for the module, started with its own config (below): endpoint `ab` splits
fraud_classifier v1 ("champion") and v2 ("challenger") 50/50 with v3 mirrored to a shadow;
endpoint `eta` splits two copies of delivery_time v1 70/30. Both log to inference tables
flushed every 100 ms, under a pytest tmp dir; routing is seeded, so each run sends the same
requests down the same routes.

Each test sends requests (with its own x-request-id) between two time marks, posts labels, waits
until the report counts every request, then recomputes everything the report says from the
Parquet files the gateway wrote (pyarrow) and the labels this test posted (the latest label of a
request id wins), with numpy and scipy: counts, shares, the SRM chi-squared (scipy.stats.chisquare),
Wilson intervals, the pooled two-proportion z-test and Wald interval of the difference, Welch's
t-test (scipy.stats.ttest_ind) and its interval, t intervals of means, latency quantiles
(numpy.quantile, linear) and shadow agreement (shadow rows joined to primary rows on
(request_id, row_index)). Doubles must agree to 1e-9 (relative or absolute), counts exactly.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import time
import urllib.parse
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import deltalake
import pyarrow as pa
import pyarrow.dataset as pads
import pytest
from scipy import stats

from sluice_support import (
    MODELS, PIN_HEADER, Reference, assert_json_error, fixture_matrix, get, manifest, post_json,
    read_tail, start_sluice, stop_sluice,
)

FRAUD_FEATURES = manifest("fraud_classifier")["features"]
FRAUD_LABELS = manifest("fraud_classifier")["class_labels"]
ETA_FEATURES = manifest("delivery_time")["features"]

AB_WEIGHTS = {"champion": 50, "challenger": 50}
ETA_WEIGHTS = {"a": 70, "b": 30}
AB_MIN_SAMPLES = 50
DEFAULT_MIN_SAMPLES = 100
ALPHA = 0.05
SRM_THRESHOLD = 0.001
TOL = 1e-9


def config_text(data_dir: Path) -> str:
    return f"""\
[server]
data_dir = {json.dumps(str(data_dir))}
watch_config = false

[runtime]
model_repository = {json.dumps(str(MODELS))}

[[endpoints]]
name = "ab"
served_entities = [
  {{ name = "champion", entity_name = "fraud_classifier", entity_version = "1" }},
  {{ name = "challenger", entity_name = "fraud_classifier", entity_version = "2" }},
  {{ name = "shadow", entity_name = "fraud_classifier", entity_version = "3" }},
]
traffic_config = {{ routes = [ {{ served_model_name = "champion", traffic_percentage = 50 }}, {{ served_model_name = "challenger", traffic_percentage = 50 }} ] }}
shadow = [{{ served_model_name = "shadow", mirror_percent = 100 }}]
inference_table = {{ enabled = true, flush_interval_ms = 100 }}
allow_served_model_override = true
routing_seed = 20261126

[endpoints.experiment]
min_samples = {AB_MIN_SAMPLES}

[[endpoints]]
name = "eta"
served_entities = [
  {{ name = "a", entity_name = "delivery_time", entity_version = "1" }},
  {{ name = "b", entity_name = "delivery_time", entity_version = "1" }},
]
traffic_config = {{ routes = [ {{ served_model_name = "a", traffic_percentage = 70 }}, {{ served_model_name = "b", traffic_percentage = 30 }} ] }}
inference_table = {{ enabled = true, flush_interval_ms = 100 }}
routing_seed = 7
"""


# --------------------------------------------------------------------------------------------
# The gateway
# --------------------------------------------------------------------------------------------

@dataclass
class Gateway:
    http: str
    admin: str
    data_dir: Path
    log_path: Path

    def log(self) -> str:
        return f"--- sluice output ---\n{read_tail(self.log_path, limit=3000)}"


@pytest.fixture(scope="module")
def gw(tmp_path_factory) -> Gateway:
    tmp = tmp_path_factory.mktemp("experiments")
    data_dir = tmp / "data"
    data_dir.mkdir()
    cfg = tmp / "sluice-experiments.toml"
    cfg.write_text(config_text(data_dir))
    proc, ports, log_path = start_sluice(tmp / "gw", config=str(cfg))
    try:
        yield Gateway(f"http://127.0.0.1:{ports['http']}", f"http://127.0.0.1:{ports['admin']}",
                      data_dir, log_path)
    finally:
        stop_sluice(proc)


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference()


# --------------------------------------------------------------------------------------------
# Time marks, requests, labels, the report
# --------------------------------------------------------------------------------------------

def rfc3339_ms(ms: int) -> str:
    s, rem = divmod(ms, 1000)
    return dt.datetime.fromtimestamp(s, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{rem:03d}Z"


@dataclass(frozen=True)
class Mark:
    """A whole millisecond strictly between what was sent before it and what is sent after."""
    text: str
    us: int


def mark() -> Mark:
    time.sleep(0.005)
    ms = time.time_ns() // 1_000_000
    time.sleep(0.005)
    return Mark(rfc3339_ms(ms), ms * 1000)


@dataclass
class Sent:
    rid: str
    rows: np.ndarray          # what was sent (float64; the gateway computes in float32)
    status: int
    served: str | None        # x-sluice-served-model of the answer
    predictions: list | None


def predict(gw: Gateway, endpoint: str, rid: str, features: list[str], x: np.ndarray,
            headers: dict | None = None, drop_column: bool = False) -> Sent:
    cols = list(features)
    data = [[float(v) for v in r] for r in x]
    if drop_column:  # a body the gateway must refuse (400), after routing it
        cols, data = cols[:-1], [r[:-1] for r in data]
    h = {"x-request-id": rid, **(headers or {})}
    r = post_json(f"{gw.http}/endpoints/{endpoint}/predict", {"dataframe_split": {"columns": cols, "data": data}}, h)
    assert r.headers.get("x-request-id") == rid, f"{rid}: answer's x-request-id: {r.describe()}"
    preds = r.json().get("predictions") if r.status == 200 else None
    if r.status == 200:
        assert isinstance(preds, list) and len(preds) == len(x), r.describe()
    return Sent(rid, x, r.status, r.headers.get("x-sluice-served-model"), preds)


class Labels:
    """Labels as posted: the latest one per request id is the one that counts."""

    def __init__(self, gw: Gateway, endpoint: str):
        self.gw, self.endpoint = gw, endpoint
        self.latest: dict[str, object] = {}

    def post(self, items: dict[str, object], unknown: int = 0) -> None:
        body = [{"request_id": rid, "label": lab} for rid, lab in items.items()]
        r = post_json(f"{self.gw.http}/endpoints/{self.endpoint}/labels", body)
        assert r.status == 200, r.describe()
        assert r.json()["accepted"] == len(body) - unknown, r.describe()  # unknown ids are refused
        assert r.json()["unknown"] == unknown, r.describe()
        self.latest.update(items)
        time.sleep(0.002)  # later posts carry later label timestamps


def report(gw: Gateway, endpoint: str, since: Mark, until: Mark, window: str = "1h") -> dict:
    q = urllib.parse.urlencode({"since": since.text, "until": until.text, "window": window})
    r = get(f"{gw.admin}/experiments/{endpoint}?{q}")
    assert r.status == 200, f"{r.describe()}\n{gw.log()}"
    return r.json()


# --------------------------------------------------------------------------------------------
# Reading the table (the recomputation's only input besides the labels posted)
# --------------------------------------------------------------------------------------------

TABLE_COLUMNS = ["request_id", "row_index", "timestamp", "served_model", "is_shadow", "status_code",
                 "latency_ms", "prediction"]


def read_table(gw: Gateway, table: str) -> list[dict]:
    d = gw.data_dir / table
    if not (d / "_delta_log").is_dir():
        return []
    t = deltalake.DeltaTable(str(d)).to_pyarrow_table(columns=TABLE_COLUMNS)  # through the Delta log
    t = t.set_column(t.schema.get_field_index("timestamp"), "timestamp", t.column("timestamp").cast(pa.int64()))
    return t.to_pylist()


def in_window(rows: list[dict], since: Mark, until: Mark) -> list[dict]:
    return [r for r in rows if since.us <= r["timestamp"] < until.us]


def wait_for_table(gw: Gateway, table: str, since: Mark, until: Mark, sent: list[Sent],
                   shadows: bool = False, timeout: float = 20.0) -> list[dict]:
    """Polls the table until every request sent has its primary rows (and, with `shadows`, every
    answered row its shadow row); returns the window's rows."""
    want_primary = sum(len(s.rows) if s.status == 200 else 1 for s in sent)
    want_shadow = sum(len(s.rows) for s in sent if s.status == 200) if shadows else 0
    deadline = time.monotonic() + timeout
    while True:
        rows = in_window(read_table(gw, table), since, until)
        primary = sum(not r["is_shadow"] for r in rows)
        shadow = sum(bool(r["is_shadow"]) for r in rows)
        if primary >= want_primary and (not shadows or shadow >= want_shadow):
            assert primary == want_primary, f"{primary} primary rows in the window, {want_primary} sent"
            return rows
        assert time.monotonic() < deadline, (
            f"table {table}: {primary}/{want_primary} primary, {shadow}/{want_shadow} shadow rows after "
            f"{timeout:.0f} s\n{gw.log()}")
        time.sleep(0.1)


def settled_report(gw: Gateway, endpoint: str, since: Mark, until: Mark, n_requests: int,
                   window: str = "1h", timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        rep = report(gw, endpoint, since, until, window)
        if rep["requests"] == n_requests:
            return rep
        assert rep["requests"] < n_requests, f"report counts {rep['requests']} requests, {n_requests} were sent"
        assert time.monotonic() < deadline, f"report still counts {rep['requests']} of {n_requests} requests"
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# Reference statistics (textbook formulas / scipy)
# --------------------------------------------------------------------------------------------

def zcrit(alpha: float = ALPHA) -> float:
    return float(stats.norm.ppf(1 - alpha / 2))


def wilson(x: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    z = zcrit(alpha)
    p = x / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return center - half, center + half


def two_proportion(x_champ: int, n_champ: int, x_cand: int, n_cand: int, alpha: float = ALPHA) -> dict:
    p1, p2 = x_champ / n_champ, x_cand / n_cand
    pooled = (x_champ + x_cand) / (n_champ + n_cand)
    z = (p2 - p1) / math.sqrt(pooled * (1 - pooled) * (1 / n_champ + 1 / n_cand))
    se = math.sqrt(p1 * (1 - p1) / n_champ + p2 * (1 - p2) / n_cand)
    diff = p2 - p1
    return {"diff": diff, "diff_ci": (diff - zcrit(alpha) * se, diff + zcrit(alpha) * se),
            "statistic": z, "p_value": float(2 * stats.norm.sf(abs(z)))}


def welch(champ: np.ndarray, cand: np.ndarray, alpha: float = ALPHA) -> dict:
    res = stats.ttest_ind(cand, champ, equal_var=False)
    va, vb = champ.var(ddof=1) / len(champ), cand.var(ddof=1) / len(cand)
    dof = (va + vb) ** 2 / (va ** 2 / (len(champ) - 1) + vb ** 2 / (len(cand) - 1))
    diff = cand.mean() - champ.mean()
    half = stats.t.ppf(1 - alpha / 2, dof) * math.sqrt(va + vb)
    assert math.isclose(float(res.df), dof, rel_tol=1e-12), (res.df, dof)
    return {"diff": diff, "diff_ci": (diff - half, diff + half), "statistic": float(res.statistic),
            "dof": float(res.df), "p_value": float(res.pvalue)}


def t_interval(x: np.ndarray, alpha: float = ALPHA) -> tuple[float, float]:
    lo, hi = stats.t.interval(1 - alpha, len(x) - 1, loc=x.mean(), scale=x.std(ddof=1) / math.sqrt(len(x)))
    return float(lo), float(hi)


def verdict(n_champ: int, n_cand: int, diff: float, p: float, higher_is_better: bool,
            min_samples: int, alpha: float = ALPHA) -> str:
    if n_champ < min_samples or n_cand < min_samples:
        return "not enough data"
    if p < alpha:
        return "candidate better" if (diff > 0) == higher_is_better else "candidate worse"
    return "no detectable difference"


# --------------------------------------------------------------------------------------------
# Comparing
# --------------------------------------------------------------------------------------------

def close(got, want, what: str, abs_tol: float = TOL) -> None:
    """got == want within 1e-9, relative or absolute (p-values: relative only, abs_tol=0, since
    they can be tiny)."""
    if isinstance(want, (tuple, list)):
        assert isinstance(got, list) and len(got) == len(want), f"{what}: got {got!r}, expected {list(want)!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            close(g, w, f"{what}[{i}]", abs_tol)
        return
    assert isinstance(got, (int, float)) and not isinstance(got, bool), f"{what}: got {got!r}, expected {want!r}"
    assert math.isclose(got, float(want), rel_tol=TOL, abs_tol=abs_tol), \
        f"{what}: got {got!r}, expected {float(want)!r} (diff {got - float(want):.3e})"


@dataclass
class ArmData:
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    metric: list[float] = field(default_factory=list)  # one value per labelled 200 row


def recompute_arms(rows: list[dict], labels: dict[str, object], metric) -> dict[str, ArmData]:
    """Per served model, from the primary rows of the window: requests (row 0), errors, latency,
    and `metric(prediction, label)` for every 200 row whose request has a label."""
    arms: dict[str, ArmData] = defaultdict(ArmData)
    for r in rows:
        if r["is_shadow"] or r["served_model"] is None:
            continue
        a = arms[r["served_model"]]
        if r["row_index"] == 0:
            a.requests += 1
            a.errors += r["status_code"] != 200
            a.latencies.append(r["latency_ms"])
        if r["status_code"] == 200 and r["request_id"] in labels and r["prediction"] is not None:
            a.metric.append(metric(r["prediction"], labels[r["request_id"]]))
    return dict(arms)


def check_traffic(rep: dict, arms: dict[str, ArmData], weights: dict[str, int], what: str) -> None:
    """Arms, requests, shares, errors, error-rate intervals, latency and the SRM test."""
    by = {a["served_model"]: a for a in rep["arms"]}
    assert set(by) == set(weights) | set(arms), f"{what}: arms {sorted(by)}, expected {sorted(set(weights) | set(arms))}"
    total = sum(a.requests for a in arms.values())
    assert rep["requests"] == total, f"{what}: requests {rep['requests']}, table has {total}"
    wsum = sum(weights.values())
    for name, a in by.items():
        d = arms.get(name, ArmData())
        w = f"{what}: arm {name!r}"
        assert a["requests"] == d.requests, f"{w}: requests {a['requests']}, table has {d.requests}"
        assert a["errors"] == d.errors, f"{w}: errors {a['errors']}, table has {d.errors}"
        assert a["configured_percent"] == weights.get(name, 0), f"{w}: configured_percent {a['configured_percent']}"
        close(a["share"], d.requests / total, f"{w}: share")
        close(a["expected_share"], weights.get(name, 0) / wsum, f"{w}: expected_share")
        if d.requests == 0:
            assert a["error_rate"] is None and a["error_rate_ci"] is None and a["latency_ms"] is None, f"{w}: {a}"
            continue
        close(a["error_rate"], d.errors / d.requests, f"{w}: error_rate")
        close(a["error_rate_ci"], wilson(d.errors, d.requests), f"{w}: error_rate_ci (Wilson)")
        lat = np.asarray(d.latencies, dtype=float)
        close(a["latency_ms"]["mean"], lat.mean(), f"{w}: latency_ms.mean")
        for q in ("p50", "p90", "p99"):
            close(a["latency_ms"][q], np.quantile(lat, int(q[1:]) / 100), f"{w}: latency_ms.{q}")

    routed = [n for n in sorted(weights) if weights[n] > 0]
    obs = np.array([arms.get(n, ArmData()).requests for n in routed], dtype=float)
    exp = np.array([total * weights[n] / wsum for n in routed])
    chi = stats.chisquare(obs, f_exp=exp)
    srm = rep["srm"]
    close(srm["statistic"], chi.statistic, f"{what}: srm.statistic")
    close(srm["p_value"], chi.pvalue, f"{what}: srm.p_value", abs_tol=0.0)
    assert srm["dof"] == len(routed) - 1, f"{what}: srm.dof {srm['dof']}"
    assert srm["threshold"] == SRM_THRESHOLD, f"{what}: srm.threshold {srm['threshold']}"
    flagged = bool(chi.pvalue < SRM_THRESHOLD)
    assert srm["flagged"] is flagged, f"{what}: srm.flagged {srm['flagged']}, scipy p = {chi.pvalue:.6g}"
    warned = any("sample ratio mismatch" in w for w in rep["warnings"])
    assert warned is flagged, f"{what}: warnings {rep['warnings']} (SRM flagged: {flagged})"


def check_champion(rep: dict, weights: dict[str, int], what: str) -> str:
    # the route with the most traffic; of equals, the first listed in the config (dict order here)
    top = max(weights.values())
    expected = next(n for n, w in weights.items() if w == top)
    champion = rep["champion"]
    assert champion == expected, f"{what}: champion {champion!r}, expected {expected!r} (first route with the most traffic)"
    flags = {a["served_model"]: a["is_champion"] for a in rep["arms"]}
    assert flags == {n: n == champion for n in flags}, f"{what}: is_champion flags {flags}, champion {champion!r}"
    return champion


def check_rate_metric(rep: dict, arms: dict[str, ArmData], champion: str, min_samples: int, what: str) -> dict:
    """Accuracy per arm (Wilson) and each candidate's z-test, Wald interval and verdict."""
    by = {a["served_model"]: a for a in rep["arms"]}
    ch = arms.get(champion, ArmData())
    out = {}
    for name, a in by.items():
        d = arms.get(name, ArmData())
        w = f"{what}: arm {name!r}"
        n, x = len(d.metric), int(sum(d.metric))
        assert a["metric"]["n"] == n, f"{w}: metric.n {a['metric']['n']}, recomputed {n}"
        if n == 0:
            assert a["metric"]["value"] is None and a["metric"]["ci"] is None, f"{w}: metric {a['metric']}"
        else:
            close(a["metric"]["value"], x / n, f"{w}: metric.value (accuracy)")
            close(a["metric"]["ci"], wilson(x, n), f"{w}: metric.ci (Wilson)")
        if name == champion:
            assert "vs_champion" not in a, f"{w}: the champion has vs_champion {a.get('vs_champion')}"
            continue
        vs = a["vs_champion"]
        nc, xc = len(ch.metric), int(sum(ch.metric))
        if n == 0 or nc == 0:
            assert vs["verdict"] == "not enough data", f"{w}: {vs}"
            continue
        ref = two_proportion(xc, nc, x, n)
        for k in ("diff", "diff_ci", "statistic", "p_value"):
            close(vs[k], ref[k], f"{w}: vs_champion.{k}", abs_tol=0.0 if k == "p_value" else TOL)
        want = verdict(nc, n, ref["diff"], ref["p_value"], True, min_samples)
        assert vs["verdict"] == want, f"{w}: verdict {vs['verdict']!r}, expected {want!r} ({ref}, n {nc}/{n})"
        out[name] = want
    return out


def jitter(rng: np.random.Generator, base: np.ndarray, continuous: list[int], n: int,
           clip01: tuple[int, ...] = ()) -> np.ndarray:
    """n rows drawn around the fixture rows: continuous features scaled by log-normal noise."""
    x = base[rng.integers(0, len(base), n)].astype(float)
    for j in continuous:
        x[:, j] *= np.exp(rng.normal(0.0, 0.3, n))
    for j in clip01:
        x[:, j] = np.clip(x[:, j], 0.0, 1.0)
    return np.round(x, 4)


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------

def test_classification_ab_report_matches_recomputation(gw, reference):
    rng = np.random.default_rng(7001)
    base = fixture_matrix("fraud_classifier")
    n_req = 600
    n_rows = rng.choice([1, 1, 1, 1, 2, 3], size=n_req)
    bad = set(rng.choice(n_req, size=30, replace=False).tolist())
    x_all = jitter(rng, base, [FRAUD_FEATURES.index(f) for f in
                               ("amount", "account_age_days", "merchant_risk", "distance_km")],
                   int(n_rows.sum()), clip01=(FRAUD_FEATURES.index("merchant_risk"),))
    # The label of a request is v2's answer for its first row 90% of the time (so the arms differ).
    v2 = [p["label"] for p in reference.predictions("fraud_classifier", "2", x_all.astype(np.float32))]

    since = mark()
    sent: list[Sent] = []
    first_row = {}
    off = 0
    for i in range(n_req):
        k = int(n_rows[i])
        s = predict(gw, "ab", f"ab-{i:04d}", FRAUD_FEATURES, x_all[off:off + k], drop_column=i in bad)
        assert s.status == (400 if i in bad else 200), f"request {i}: status {s.status}"
        if s.status == 200:
            assert s.served in AB_WEIGHTS, f"request {i}: answered by {s.served!r}"
        first_row[s.rid] = off
        off += k
        sent.append(s)
    until = mark()

    ok = [s for s in sent if s.status == 200]
    labels = Labels(gw, "ab")
    lab = {}
    for s in ok:
        if rng.random() < 0.85:
            lab[s.rid] = v2[first_row[s.rid]] if rng.random() < 0.9 else str(rng.choice(FRAUD_LABELS))
    relabel = sorted(lab)[::20]
    wrong = {rid: FRAUD_LABELS[1 - FRAUD_LABELS.index(lab[rid])] for rid in relabel}
    errs = {s.rid: "fraud" for s in sent if s.status != 200}  # labels of failed requests count for nothing
    labels.post({**wrong, **errs, "never-sent-1": "legit", "never-sent-2": "fraud"}, unknown=2)
    labels.post(lab)  # the latest label wins: the `wrong` ones are replaced
    labels.latest.pop("never-sent-1"), labels.latest.pop("never-sent-2")

    rows = wait_for_table(gw, "ab", since, until, sent, shadows=True)
    rep = settled_report(gw, "ab", since, until, n_req, window="1s")
    rows = in_window(read_table(gw, "ab"), since, until)  # exactly the files the report could see

    # The answers' x-sluice-served-model is what the table says served each request.
    served = {r["request_id"]: r["served_model"] for r in rows if not r["is_shadow"] and r["row_index"] == 0}
    assert set(served) == {s.rid for s in sent}, "every request (failed ones too) has its row 0"
    mism = [(s.rid, s.served, served.get(s.rid)) for s in ok if served.get(s.rid) != s.served]
    assert not mism, f"served_model in the table differs from the answer's header: {mism[:5]}"
    preds = {r["prediction"] for r in rows if r["status_code"] == 200}
    assert preds <= set(FRAUD_LABELS), f"prediction column holds {preds}, expected class names {FRAUD_LABELS}"

    what = "ab"
    assert rep["endpoint"] == "ab"
    assert (rep["from"], rep["to"]) == (since.text, until.text), (rep["from"], rep["to"], since, until)
    assert rep["metric"]["name"] == "accuracy" and rep["metric"]["higher_is_better"] is True, rep["metric"]
    assert "z" in rep["metric"]["test"], rep["metric"]
    assert rep["alpha"] == ALPHA and rep["min_samples"] == AB_MIN_SAMPLES, (rep["alpha"], rep["min_samples"])

    arms = recompute_arms(rows, labels.latest, lambda p, l: 1.0 if p == l else 0.0)
    assert sum(a.errors for a in arms.values()) == len(bad), {n: a.errors for n, a in arms.items()}
    check_traffic(rep, arms, AB_WEIGHTS, what)
    champion = check_champion(rep, AB_WEIGHTS, what)
    verdicts = check_rate_metric(rep, arms, champion, AB_MIN_SAMPLES, what)
    print(f"champion {champion!r}; verdicts {verdicts}; "
          f"accuracy { {n: round(float(np.mean(a.metric)), 4) for n, a in arms.items()} }; srm p {rep['srm']['p_value']:.4g}")

    # Shadow agreement: shadow rows joined to the primary rows of the window on (request_id, row_index).
    primary = {(r["request_id"], r["row_index"]): r for r in rows
               if not r["is_shadow"] and r["status_code"] == 200}
    shadow_rows = [r for r in read_table(gw, "ab") if r["is_shadow"] and r["status_code"] == 200]
    bucket_us = 1_000_000
    overall: dict[str, Counter] = defaultdict(Counter)
    windows: dict[str, dict[int, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for s in shadow_rows:
        p = primary.get((s["request_id"], s["row_index"]))
        if p is None:
            continue
        key = (p["prediction"], s["prediction"])
        overall[p["served_model"]][key] += 1
        b = since.us + (p["timestamp"] - since.us) // bucket_us * bucket_us
        windows[p["served_model"]][b][key] += 1
    assert sum(sum(c.values()) for c in overall.values()) == len(primary), "every answered row has its shadow row"

    def agreement(conf: Counter, start_us: int, who: str, got: dict) -> None:
        n = sum(conf.values())
        assert got["start"] == rfc3339_ms(start_us // 1000), f"{who}: start {got['start']}"
        assert got["rows"] == n, f"{who}: rows {got['rows']}, recomputed {n}"
        close(got["agreement_rate"], sum(c for (a, b), c in conf.items() if a == b) / n, f"{who}: agreement_rate")
        want = defaultdict(dict)
        for (a, b), c in conf.items():
            want[a][b] = c
        assert got["confusion"] == dict(want), f"{who}: confusion {got['confusion']}, recomputed {dict(want)}"

    got_pairs = {(s["shadow"], s["primary"]): s for s in rep["shadows"]}
    assert set(got_pairs) == {("shadow", p) for p in overall}, f"shadows: {sorted(got_pairs)}"
    for prim, conf in overall.items():
        sh = got_pairs[("shadow", prim)]
        agreement(conf, since.us, f"shadow vs {prim}: overall", sh["overall"])
        want_w = windows[prim]
        got_w = sh["windows"]
        assert [w["start"] for w in got_w] == [rfc3339_ms(b // 1000) for b in sorted(want_w)], \
            f"shadow vs {prim}: window starts {[w['start'] for w in got_w]}"
        for w, b in zip(got_w, sorted(want_w)):
            agreement(want_w[b], b, f"shadow vs {prim}: window {w['start']}", w)
    print(f"shadow agreement: { {p: (sum(c.values()), len(windows[p])) for p, c in overall.items()} } "
          f"(rows, 1 s windows) per primary")


def test_regression_ab_report_matches_recomputation(gw):
    rng = np.random.default_rng(7002)
    base = fixture_matrix("delivery_time")
    n_req = 500
    x_all = jitter(rng, base, [ETA_FEATURES.index(f) for f in ("distance_km", "prep_time_min", "courier_load")],
                   n_req, clip01=(ETA_FEATURES.index("courier_load"),))
    since = mark()
    sent = [predict(gw, "eta", f"eta-{i:04d}", ETA_FEATURES, x_all[i:i + 1]) for i in range(n_req)]
    until = mark()
    assert all(s.status == 200 and s.served in ETA_WEIGHTS for s in sent), Counter((s.status, s.served) for s in sent)

    # The target: the prediction plus noise, noisier for arm b (so its mean absolute error is larger).
    labels = Labels(gw, "eta")
    lab = {}
    for s in sent:
        noise = rng.normal(0.0, 3.0 if s.served == "a" else 6.0)
        if rng.random() < 0.95:
            lab[s.rid] = round(float(s.predictions[0]) + noise, 3)
    labels.post(lab)

    wait_for_table(gw, "eta", since, until, sent)
    rep = settled_report(gw, "eta", since, until, n_req)
    rows = in_window(read_table(gw, "eta"), since, until)

    what = "eta"
    assert rep["metric"]["name"] == "mean_absolute_error" and rep["metric"]["higher_is_better"] is False, rep["metric"]
    assert "Welch" in rep["metric"]["test"], rep["metric"]
    assert rep["min_samples"] == DEFAULT_MIN_SAMPLES, rep["min_samples"]
    assert rep["shadows"] == [], rep["shadows"]
    arms = recompute_arms(rows, labels.latest, lambda p, l: abs(p - l))
    check_traffic(rep, arms, ETA_WEIGHTS, what)
    champion = check_champion(rep, ETA_WEIGHTS, what)
    assert champion == "a", champion

    by = {a["served_model"]: a for a in rep["arms"]}
    champ = np.asarray(arms["a"].metric)
    for name in ("a", "b"):
        m = np.asarray(arms[name].metric)
        w = f"{what}: arm {name!r}"
        assert by[name]["metric"]["n"] == len(m), f"{w}: metric.n {by[name]['metric']['n']}, recomputed {len(m)}"
        close(by[name]["metric"]["value"], m.mean(), f"{w}: metric.value (MAE)")
        close(by[name]["metric"]["ci"], t_interval(m), f"{w}: metric.ci (t interval)")
    cand = np.asarray(arms["b"].metric)
    ref = welch(champ, cand)
    vs = by["b"]["vs_champion"]
    for k in ("diff", "diff_ci", "statistic", "dof", "p_value"):
        close(vs[k], ref[k], f"{what}: b vs a: vs_champion.{k}", abs_tol=0.0 if k == "p_value" else TOL)
    want = verdict(len(champ), len(cand), ref["diff"], ref["p_value"], False, DEFAULT_MIN_SAMPLES)
    assert vs["verdict"] == want, f"{what}: verdict {vs['verdict']!r}, expected {want!r} ({ref})"
    print(f"eta: n {len(champ)}/{len(cand)}, MAE {champ.mean():.4f}/{cand.mean():.4f}, t {ref['statistic']:.4f}, "
          f"dof {ref['dof']:.2f}, p {ref['p_value']:.4g}, verdict {want!r}")


def test_sample_ratio_mismatch(gw):
    rng = np.random.default_rng(7003)
    x = jitter(rng, fixture_matrix("fraud_classifier"), [0, 1, 4], 300)
    t0 = mark()
    fair = [predict(gw, "ab", f"srm-fair-{i:04d}", FRAUD_FEATURES, x[i:i + 1]) for i in range(200)]
    t1 = mark()
    pinned = [predict(gw, "ab", f"srm-pin-{i:04d}", FRAUD_FEATURES, x[200 + i:201 + i],
                      headers={PIN_HEADER: "champion"}) for i in range(80)]
    t2 = mark()
    assert all(s.status == 200 for s in fair + pinned)
    assert all(s.served == "champion" for s in pinned), Counter(s.served for s in pinned)

    wait_for_table(gw, "ab", t0, t2, fair + pinned)
    for (a, b, sent, name, want_flag) in [(t0, t1, fair, "random split alone", False),
                                          (t0, t2, fair + pinned, "random split + pinned", True),
                                          (t1, t2, pinned, "pinned alone", True)]:
        rep = settled_report(gw, "ab", a, b, len(sent))
        rows = in_window(read_table(gw, "ab"), a, b)
        arms = recompute_arms(rows, {}, lambda p, l: 0.0)
        check_traffic(rep, arms, AB_WEIGHTS, f"SRM, {name}")
        assert rep["srm"]["flagged"] is want_flag, \
            f"SRM, {name}: flagged {rep['srm']['flagged']}, expected {want_flag}: {rep['srm']}, " \
            f"requests { {n: d.requests for n, d in arms.items()} }"
        # No labels in these windows: no verdict.
        for arm in rep["arms"]:
            assert arm["metric"]["n"] == 0, arm
            if "vs_champion" in arm:
                assert arm["vs_champion"]["verdict"] == "not enough data", arm
        print(f"SRM, {name}: requests { {n: d.requests for n, d in arms.items()} }, "
              f"chi2 {rep['srm']['statistic']:.4f}, p {rep['srm']['p_value']:.4g}")


def test_bad_parameters(gw):
    assert_json_error(get(f"{gw.admin}/experiments/ab?since=garbage"), 400)
    assert_json_error(get(f"{gw.admin}/experiments/ab?until=not-a-time"), 400)
    assert_json_error(get(f"{gw.admin}/experiments/ab?since=1h&until=2h"), 400)  # until before since
    assert_json_error(get(f"{gw.admin}/experiments/ab?window=0s"), 400)
    assert_json_error(get(f"{gw.admin}/experiments/ab?bogus=1"), 400)
    assert_json_error(get(f"{gw.admin}/experiments/no-such-endpoint"), 404)
    r = get(f"{gw.admin}/experiments/ab?since=24h")
    assert r.status == 200, r.describe()
