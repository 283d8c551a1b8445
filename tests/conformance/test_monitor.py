"""`sluice monitor run`: profile and drift tables checked against an independent reference.

The definitions are those of the monitor spec (profile table `<table>_profile_metrics`, drift
table `<table>_drift_metrics`). Every test here:

  * writes the deterministic fixtures of monitor_fixtures.py (an inference table in the gateway's
    layout, its labels table and a baseline file) under a pytest tmp dir,
  * runs `sluice monitor run --table DIR --config FILE --labels DIR [--baseline FILE] --out DIR`
    with a monitor config TOML written next to them,
  * reads the two output tables with pyarrow and compares them with what this file recomputes
    from the fixture Parquet files alone, with numpy, scipy and scikit-learn (no pandas, nothing
    shared with the engine): every statistic of every (window, model_id, slice, column) group.

Tolerances: counts and strings exact; every double within 1e-9, absolute for |x| <= 1 and
relative above (MAPE with a zero target is ~1e15). A mismatch names the table, window, model,
slice, column and statistic.

Every test fails, with the reason, when the binary has no working `monitor` subcommand
(`sluice monitor --help` fails): a regression of the engine is a failure, never a skip.

Environment: SLUICE_BIN (binary, default target/debug/sluice), SLUICE_MONITOR_TIMEOUT (seconds per
CLI run, default 600).
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import shutil
import subprocess
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import deltalake
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon
from sklearn import metrics as skm

import monitor_fixtures as mf
from sluice_support import REPO, sluice_binary

TIMEOUT = float(os.environ.get("SLUICE_MONITOR_TIMEOUT", "600"))
TOL = 1e-9            # reference comparisons
SAME_TOL = 1e-12      # run vs run ("identical" tables; allows last-bit float summation order)
MAX_REPORTED = 40     # mismatches listed in one failure message


# --------------------------------------------------------------------------------------------
# The binary must have the monitor subcommand: every test fails (not skips) without it
# --------------------------------------------------------------------------------------------

def _monitor_missing() -> str | None:
    binary = sluice_binary()
    if not os.path.isfile(binary):
        return f"sluice binary not found at {binary} (build it, or set SLUICE_BIN)"
    try:
        p = subprocess.run([binary, "monitor", "--help"], cwd=str(REPO), capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`{binary} monitor --help` could not run: {e}"
    if p.returncode != 0:
        first = (p.stderr or p.stdout).strip().splitlines()
        return f"`sluice monitor --help` exits {p.returncode} ({first[0] if first else 'no output'}) in {binary}"
    return None


@pytest.fixture(scope="module", autouse=True)
def monitor_subcommand():
    """Fails every test of the module when `sluice monitor` is gone (checked once)."""
    missing = _monitor_missing()
    if missing is not None:
        pytest.fail(missing, pytrace=False)


# --------------------------------------------------------------------------------------------
# Monitor configs
# --------------------------------------------------------------------------------------------

GRANULARITY = "1 hour"
HOUR_US = mf.HOUR_US

COMMON = {
    "granularities": [GRANULARITY],
    "timestamp_col": "timestamp",
    "model_id_col": "served_model",
    "prediction_col": "prediction",
    "label_col": "label",
    "filter": "status_code = 200",
}

TABLES = {
    mf.PAYMENTS: {
        "problem_type": "classification",
        "columns": ["amount", "shifted", "stable", "all_null", "constant", "gappy", "merchant", "prediction"],
        "slicing_exprs": ["amount > 1000", "merchant"],
    },
    # regression; latency_ms is not in the baseline, so its slices compare with the whole baseline
    mf.ETA: {
        "problem_type": "regression",
        "columns": ["distance", "load", "prediction"],
        "slicing_exprs": ["distance > 10", "latency_ms > 50"],
    },
    mf.TRIAGE: {
        "problem_type": "classification",
        "columns": ["x1", "prediction"],
        "slicing_exprs": ["x1 > 1"],
    },
}
# eta gets its baseline from the --baseline flag, the others from the config key `baseline`.
BASELINE_BY_FLAG = {mf.ETA}

MATCH_RATE = {"type": "aggregate", "name": "match_rate", "input_columns": [":table"],
              "definition": "avg(CASE WHEN prediction = label THEN 1.0 ELSE 0.0 END)",
              "output_data_type": "double"}
BAD_METRIC = {"type": "aggregate", "name": "bad_metric", "input_columns": [":table"],
              "definition": "avg(no_such_column)", "output_data_type": "double"}


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return json.dumps(str(v))  # a TOML basic string


def config_text(table: str, baseline: Path | None, custom_metrics: list[dict] = ()) -> str:
    cfg = {"problem_type": TABLES[table]["problem_type"], **COMMON,
           **{k: v for k, v in TABLES[table].items() if k != "problem_type"}}
    if baseline is not None:
        cfg["baseline"] = str(baseline)
    lines = [f"{k} = {_toml(v)}" for k, v in cfg.items()]
    for m in custom_metrics:
        lines += ["", "[[custom_metrics]]"] + [f"{k} = {_toml(v)}" for k, v in m.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Running the CLI and reading its output
# --------------------------------------------------------------------------------------------

@dataclass
class Output:
    out_dir: Path
    profile: list[dict]
    drift: list[dict]
    profile_schema: pa.Schema
    drift_schema: pa.Schema
    log: str


def monitor_cmd(table_dir: Path, out_dir: Path, config: Path, labels: Path | None,
                baseline: Path | None) -> list[str]:
    cmd = [sluice_binary(), "monitor", "run", "--table", str(table_dir), "--config", str(config),
           "--out", str(out_dir)]
    if labels is not None:
        cmd += ["--labels", str(labels)]
    if baseline is not None:
        cmd += ["--baseline", str(baseline)]
    return cmd


def run_cli(cmd: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.setdefault("RUST_BACKTRACE", "1")
    try:
        return subprocess.run(cmd, cwd=str(REPO), capture_output=True, text=True, timeout=TIMEOUT,
                              stdin=subprocess.DEVNULL, env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"sluice monitor did not finish within {TIMEOUT:.0f} s\ncommand: {' '.join(cmd)}\n"
                    f"--- output ---\n{_tail((e.stdout or b'').decode('utf-8', 'replace') if isinstance(e.stdout, bytes) else (e.stdout or ''))}",
                    pytrace=False)


def _tail(text: str, limit: int = 6000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _proc_text(p: subprocess.CompletedProcess) -> str:
    return f"--- stdout ---\n{_tail(p.stdout or '')}\n--- stderr ---\n{_tail(p.stderr or '')}"


def run_monitor(table_dir: Path, out_dir: Path, config: Path, labels: Path | None = None,
                baseline: Path | None = None) -> Output:
    cmd = monitor_cmd(table_dir, out_dir, config, labels, baseline)
    p = run_cli(cmd)
    if p.returncode != 0:
        pytest.fail(f"sluice monitor exited with status {p.returncode}\ncommand: {' '.join(cmd)}\n"
                    f"config:\n{config.read_text()}\n{_proc_text(p)}", pytrace=False)
    name = table_dir.name
    prof, prof_schema = read_output_table(out_dir / f"{name}_profile_metrics")
    drift, drift_schema = read_output_table(out_dir / f"{name}_drift_metrics")
    return Output(out_dir, prof, drift, prof_schema, drift_schema, _proc_text(p))


def read_output_table(path: Path) -> tuple[list[dict], pa.Schema]:
    """A metric table, read as a lakehouse reader reads it: the files of its latest version
    from its Delta log (deltalake, delta-rs' Python binding), each read by pyarrow; rows as
    dicts. Checks the layout the monitor promises: one file per window and granularity, so a
    refresh replaces exactly the windows it recomputed (and no window's rows appear twice)."""
    assert (path / "_delta_log").is_dir(), \
        f"output table {path} is not a Delta table (contents: " \
        f"{sorted(p.name for p in path.iterdir()) if path.is_dir() else 'no such folder'})"
    table = deltalake.DeltaTable(str(path))
    tables = [pq.read_table(uri) for uri in table.file_uris()]
    assert tables, f"output table {path} has no data files at version {table.version()}"
    windows = Counter()
    for t in tables:
        keys = {(g, w["start"]) for g, w in zip(t.column("granularity").to_pylist(), t.column("window").to_pylist())}
        assert len(keys) == 1, f"a data file of {path} holds {len(keys)} windows: {sorted(keys)}"
        windows[keys.pop()] += 1
    twice = [k for k, n in windows.items() if n > 1]
    assert not twice, f"windows of {path} in more than one data file: {twice}"
    schema = tables[0].schema
    t = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    return [_norm_row(r) for r in t.to_pylist()], schema


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _us(v) -> int | None:
    if v is None:
        return None
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=dt.timezone.utc)
        return (v - _EPOCH) // dt.timedelta(microseconds=1)
    return int(v)


def _window(v) -> tuple[int, int] | None:
    if v is None:
        return None
    return (_us(v.get("start")), _us(v.get("end")))


def _norm_row(r: dict) -> dict:
    r = dict(r)
    if "window" in r:
        r["window"] = _window(r["window"])
    if "window_cmp" in r:
        r["window_cmp"] = _window(r["window_cmp"])
    return r


def profile_key(r: dict) -> tuple:
    """INPUT rows: (granularity, window, model_id, slice_key, slice_value, column_name); BASELINE
    rows (the baseline's profile written beside each window) add "BASELINE" at the end."""
    key = (r.get("granularity"), r.get("window"), r.get("model_id"), r.get("slice_key"), r.get("slice_value"),
           r.get("column_name"))
    return key if r.get("log_type", "INPUT") == "INPUT" else key + (r["log_type"],)


def drift_key(r: dict) -> tuple:
    return (r.get("drift_type"), r.get("granularity"), r.get("window"), r.get("window_cmp"), r.get("model_id"),
            r.get("slice_key"), r.get("slice_value"), r.get("column_name"))


def _hhmm(us: int) -> str:
    return dt.datetime.fromtimestamp(us / 1e6, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def _fmt_window(w) -> str:
    return "NULL" if w is None else f"[{_hhmm(w[0])}, {_hhmm(w[1])})"


def describe_profile(table: str, key: tuple) -> str:
    g, w, model, sk, sv, col = key[:6]
    sl = "NULL" if sk is None else f"{sk} = {sv!r}"
    log = f" {key[6]}" if len(key) > 6 else ""
    return (f"{table} profile{log}, window {_fmt_window(w)} ({g}), model_id {'NULL' if model is None else repr(model)}, "
            f"slice {sl}, column {col!r}")


def describe_drift(table: str, key: tuple) -> str:
    kind, g, w, wc, model, sk, sv, col = key
    sl = "NULL" if sk is None else f"{sk} = {sv!r}"
    return (f"{table} drift {kind}, window {_fmt_window(w)} vs {_fmt_window(wc) if kind == 'CONSECUTIVE' else 'baseline'}"
            f" ({g}), model_id {'NULL' if model is None else repr(model)}, slice {sl}, column {col!r}")


def index_rows(rows: list[dict], keyf, describe, errors: list[str]) -> dict:
    out = {}
    for r in rows:
        k = keyf(r)
        if k in out:
            errors.append(f"{describe(k)}: duplicate row")
        out[k] = r
    return out


# --------------------------------------------------------------------------------------------
# The fixture data, read back independently of the generator
# --------------------------------------------------------------------------------------------

@dataclass
class Col:
    kind: str            # "double", "string", "int", "bool", "map"
    values: np.ndarray   # doubles: float64 (NULL -> NaN, see null); others: object
    null: np.ndarray     # bool

    def take(self, m: np.ndarray) -> "Col":
        return Col(self.kind, self.values[m], self.null[m])


@dataclass
class Frame:
    cols: dict[str, Col]
    n: int

    def take(self, m: np.ndarray) -> "Frame":
        return Frame({k: c.take(m) for k, c in self.cols.items()}, int(np.count_nonzero(m)))

    def __getitem__(self, name: str) -> Col:
        return self.cols[name]


def frame_of(t: pa.Table) -> Frame:
    cols = {}
    for name in t.column_names:
        c = t.column(name)
        typ = c.type
        null = np.asarray(pc.is_null(c).to_numpy(zero_copy_only=False), dtype=bool)
        if pa.types.is_floating(typ):
            vals = np.asarray(c.to_numpy(zero_copy_only=False), dtype=np.float64)
            cols[name] = Col("double", vals, null)
        elif pa.types.is_timestamp(typ):
            vals = np.asarray(pc.cast(c, pa.int64()).to_numpy(zero_copy_only=False), dtype=object)
            cols[name] = Col("int", vals, null)
        elif pa.types.is_map(typ):
            vals = np.empty(len(c), dtype=object)
            for i, v in enumerate(c.to_pylist()):
                vals[i] = None if v is None else dict(v)
            cols[name] = Col("map", vals, null)
        else:
            kind = ("string" if pa.types.is_string(typ) or pa.types.is_large_string(typ)
                    else "bool" if pa.types.is_boolean(typ) else "int")
            vals = np.empty(len(c), dtype=object)
            vals[:] = c.to_pylist()
            cols[name] = Col(kind, vals, null)
    return Frame(cols, t.num_rows)


def read_fixture_table(root: Path) -> pa.Table:
    """A fixture table's rows at its latest version, through its Delta log (delta-rs' Python
    binding), without the `date` partition column (the reference works on the logged columns)."""
    assert (root / "_delta_log").is_dir(), f"no Delta table at {root}"
    t = deltalake.DeltaTable(str(root)).to_pyarrow_table()
    assert t.num_rows, f"no rows in {root}"
    return t.drop_columns(["date"])


def join_labels(frame: Frame, labels: pa.Table | None) -> Frame:
    """label / label_value of the latest labels row with the same request_id, else of the latest
    with the same client_request_id."""
    n = frame.n
    label = np.empty(n, dtype=object)
    label_value = np.full(n, np.nan)
    lv_null = np.ones(n, dtype=bool)
    if labels is not None:
        by_rid: dict[str, tuple] = {}
        by_crid: dict[str, tuple] = {}
        for r in labels.to_pylist():
            ts = _us(r["timestamp"])
            item = (ts, r["label"], r["label_value"])
            for key, index in ((r["request_id"], by_rid), (r["client_request_id"], by_crid)):
                if key is not None and (key not in index or index[key][0] < ts):
                    index[key] = item
        rids, crids = frame["request_id"].values, frame["client_request_id"].values
        for i in range(n):
            hit = by_rid.get(rids[i]) if rids[i] is not None else None
            if hit is None and crids[i] is not None:
                hit = by_crid.get(crids[i])
            if hit is not None:
                label[i] = hit[1]
                if hit[2] is not None:
                    label_value[i], lv_null[i] = hit[2], False
    cols = dict(frame.cols)
    cols["label"] = Col("string", label, np.array([v is None for v in label], dtype=bool))
    cols["label_value"] = Col("double", label_value, lv_null)
    return Frame(cols, n)


def load_inputs(table_dir: Path, labels_dir: Path | None) -> Frame:
    """The table's rows that pass `status_code = 200`, with their labels."""
    f = frame_of(read_fixture_table(table_dir))
    status = f["status_code"]
    keep = np.array([(not nl) and v == 200 for v, nl in zip(status.values, status.null)], dtype=bool)
    labels = read_fixture_table(labels_dir) if labels_dir is not None and labels_dir.is_dir() else None
    return join_labels(f.take(keep), labels)


# --------------------------------------------------------------------------------------------
# Reference statistics
# --------------------------------------------------------------------------------------------

class Marker:
    def __init__(self, name: str, absent_ok: bool = False):
        self.name, self.absent_ok = name, absent_ok

    def __repr__(self):
        return self.name


ZERO_OR_NULL = Marker("0 or NULL")
NULL_OR_EMPTY = Marker("NULL or []")
NULL_IF_PRESENT = Marker("NULL (or no such column)", absent_ok=True)
ANY_VALUE = Marker("anything", absent_ok=True)


class Unordered(list):
    """A list compared as a sorted list."""


P101 = np.arange(101) / 100
PSI_P = np.arange(1, 10) / 10


def good(col: Col) -> np.ndarray:
    """Non-null, non-NaN values of a double column."""
    v = col.values[~col.null]
    return v[~np.isnan(v)]


def strings(col: Col) -> list[str]:
    return [v for v, nl in zip(col.values, col.null) if not nl]


NUMERIC_STATS = ("min", "max", "avg", "stddev", "median")
STRING_STATS = ("min_length", "max_length", "avg_length")


def profile_column(col: Col) -> dict:
    n = len(col.null)
    nulls = int(col.null.sum())
    d = {"count": n, "num_nulls": nulls, "percent_null": 100.0 * nulls / n}
    if col.kind == "double":
        nn = col.values[~col.null]
        nan = int(np.isnan(nn).sum())
        g = nn[~np.isnan(nn)]
        zeros = int(np.count_nonzero(g == 0.0))
        distinct = int(len(np.unique(g)))
        d.update(data_type="double", num_nan=nan, num_zeros=zeros, distinct_count=distinct,
                 percent_nan=100.0 * nan / n, percent_zeros=100.0 * zeros / n,
                 percent_distinct=100.0 * distinct / n)
        if len(g):
            d.update({"min": float(g.min()), "max": float(g.max()), "avg": float(np.mean(g)),
                      "stddev": float(np.std(g, ddof=1)) if len(g) >= 2 else None,
                      "median": float(np.median(g)),
                      "quantiles": [float(x) for x in np.quantile(g, P101)]})
        else:
            d.update({k: None for k in NUMERIC_STATS}, quantiles=None)
        d.update({k: NULL_IF_PRESENT for k in STRING_STATS}, frequent_items=NULL_OR_EMPTY)
    elif col.kind == "string":
        s = strings(col)
        counts = Counter(s)
        distinct = len(counts)
        d.update(data_type="string", num_nan=ZERO_OR_NULL, num_zeros=ZERO_OR_NULL, percent_nan=ZERO_OR_NULL,
                 percent_zeros=ZERO_OR_NULL, distinct_count=distinct, percent_distinct=100.0 * distinct / n)
        d.update({k: None for k in NUMERIC_STATS}, quantiles=NULL_OR_EMPTY)
        if s:
            lengths = np.array([len(x) for x in s], dtype=float)  # characters, not bytes
            top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
            d.update(min_length=float(lengths.min()), max_length=float(lengths.max()),
                     avg_length=float(lengths.mean()),
                     frequent_items=[{"item": k, "count": c} for k, c in top])
        else:
            d.update({k: None for k in STRING_STATS}, frequent_items=NULL_OR_EMPTY)
    else:
        raise AssertionError(f"reference: column kind {col.kind} is not monitored")
    return d


CLASSIFICATION_QUALITY = ("accuracy_score", "precision", "recall", "f1_score", "confusion_matrix", "roc_auc_score")
REGRESSION_QUALITY = ("mean_squared_error", "root_mean_squared_error", "mean_absolute_error",
                      "mean_absolute_percentage_error", "r2_score")


def classification_quality(g: Frame) -> dict:
    lab = ~g["label"].null & ~g["prediction"].null
    q = {k: NULL_IF_PRESENT for k in REGRESSION_QUALITY}
    if not lab.any():
        q.update({k: None for k in CLASSIFICATION_QUALITY})
        return q
    y_true = [str(v) for v in g["label"].values[lab]]
    y_pred = [str(v) for v in g["prediction"].values[lab]]
    labels = sorted(set(y_true) | set(y_pred))
    pair = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one-label groups: sklearn warns, the numbers stand
        for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1_score", skm.f1_score)):
            pair[name] = {avg: float(fn(y_true, y_pred, labels=labels, average=avg, zero_division=0))
                          for avg in ("macro", "weighted")}
        cm = skm.confusion_matrix(y_true, y_pred, labels=labels)
        q.update(accuracy_score=float(skm.accuracy_score(y_true, y_pred)), **pair,
                 confusion_matrix={"labels": labels, "counts": [[int(x) for x in row] for row in cm]},
                 roc_auc_score=roc_auc(y_true, list(g["probabilities"].values[lab])))
    return q


def roc_auc(y_true: list[str], probs: list[dict | None]) -> float | None:
    if any(p is None for p in probs):
        raise AssertionError("reference: a labelled row without probabilities (the fixtures have none)")
    keys = sorted(probs[0])
    assert all(sorted(p) == keys for p in probs), "reference: probability maps with different keys"
    if len(keys) == 2:
        if len(set(y_true)) < 2:
            return None
        pos = keys[1]  # the greater of the two sorted class keys
        return float(skm.roc_auc_score(np.array([y == pos for y in y_true], dtype=int),
                                       np.array([p[pos] for p in probs])))
    if not set(keys) <= set(y_true):
        return None
    scores = np.array([[p[k] for k in keys] for p in probs])
    return float(skm.roc_auc_score(np.array(y_true), scores, multi_class="ovr", average="macro", labels=keys))


def regression_quality(g: Frame) -> dict:
    y = g["label_value"]
    p = g["prediction"]
    lab = ~y.null & ~p.null & ~np.isnan(y.values) & ~np.isnan(p.values)
    q = {k: NULL_IF_PRESENT for k in CLASSIFICATION_QUALITY}
    if not lab.any():
        q.update({k: None for k in REGRESSION_QUALITY})
        return q
    yt, yp = y.values[lab], p.values[lab]
    q.update(mean_squared_error=float(skm.mean_squared_error(yt, yp)),
             root_mean_squared_error=float(skm.root_mean_squared_error(yt, yp)),
             mean_absolute_error=float(skm.mean_absolute_error(yt, yp)),
             mean_absolute_percentage_error=float(skm.mean_absolute_percentage_error(yt, yp)),
             r2_score=float(skm.r2_score(yt, yp)) if len(yt) >= 2 else None)
    return q


def table_row(g: Frame, columns: list[str], problem_type: str) -> dict:
    d = {"count": g.n, "data_type": "table",
         "non_null_columns": Unordered(c for c in columns if not g[c].null.all())}
    d.update(classification_quality(g) if problem_type == "classification" else regression_quality(g))
    return d


def percents(col: Col) -> dict:
    n = len(col.null)
    if n == 0:
        return {"percent_null": None, "percent_zeros": None, "percent_distinct": None, "avg": None}
    nulls = int(col.null.sum())
    if col.kind == "double":
        g = good(col)
        return {"percent_null": 100.0 * nulls / n, "percent_zeros": 100.0 * np.count_nonzero(g == 0.0) / n,
                "percent_distinct": 100.0 * len(np.unique(g)) / n, "avg": float(np.mean(g)) if len(g) else None}
    return {"percent_null": 100.0 * nulls / n, "percent_zeros": ZERO_OR_NULL,
            "percent_distinct": 100.0 * len(set(strings(col))) / n, "avg": None}


def _delta(a, b):
    if a is ZERO_OR_NULL or b is ZERO_OR_NULL:
        return ZERO_OR_NULL
    if a is None or b is None:
        return None
    return float(a - b)


NUMERIC_DRIFT = ("ks_test", "wasserstein_distance", "population_stability_index")
CATEGORICAL_DRIFT = ("chi_squared_test", "js_distance", "tv_distance", "l_infinity_distance")


def psi(cur: np.ndarray, ref: np.ndarray) -> float:
    edges = np.unique(np.quantile(ref, PSI_P))
    k = len(edges) + 1
    p = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=k) / len(ref)
    q = np.bincount(np.searchsorted(edges, cur, side="left"), minlength=k) / len(cur)
    p = np.where(p == 0, 1e-4, p)
    q = np.where(q == 0, 1e-4, q)
    return float(np.sum((q - p) * np.log(q / p)))


def category_distributions(cur: Col, ref: Col) -> tuple[list[str], np.ndarray, np.ndarray]:
    cc, rc = Counter(strings(cur)), Counter(strings(ref))
    cats = sorted(set(cc) | set(rc))
    return cats, np.array([rc[c] for c in cats], dtype=float), np.array([cc[c] for c in cats], dtype=float)


def drift_column(cur: Col, ref: Col, cur_n: int, ref_n: int) -> dict:
    pc_, pr = percents(cur), percents(ref)
    d = {"data_type": cur.kind, "count_delta": cur_n - ref_n, "avg_delta": _delta(pc_["avg"], pr["avg"])}
    for k in ("percent_null", "percent_zeros", "percent_distinct"):
        d[f"{k}_delta"] = _delta(pc_[k], pr[k])
    if cur.kind == "double":
        cg, rg = good(cur), good(ref)
        d.update({k: None for k in CATEGORICAL_DRIFT})
        if len(cg) and len(rg):
            ks = stats.ks_2samp(cg, rg)
            d.update(ks_test={"statistic": float(ks.statistic), "pvalue": float(ks.pvalue)},
                     wasserstein_distance=float(stats.wasserstein_distance(cg, rg)),
                     population_stability_index=psi(cg, rg))
        else:
            d.update({k: None for k in NUMERIC_DRIFT})
    else:
        d.update({k: None for k in NUMERIC_DRIFT})
        if strings(cur) and strings(ref):
            _, r, c = category_distributions(cur, ref)
            chi = stats.chi2_contingency(np.array([r, c]))
            p, q = r / r.sum(), c / c.sum()
            d.update(chi_squared_test={"statistic": float(chi.statistic), "pvalue": float(chi.pvalue)},
                     js_distance=float(jensenshannon(p, q, base=2)),
                     tv_distance=float(0.5 * np.abs(p - q).sum()),
                     l_infinity_distance=float(np.abs(p - q).max()))
        else:
            d.update({k: None for k in CATEGORICAL_DRIFT})
    return d


# --------------------------------------------------------------------------------------------
# Expected groups
# --------------------------------------------------------------------------------------------

_PRED = re.compile(r"^\s*([A-Za-z_]\w*)\s*>\s*(-?\d+(?:\.\d+)?)\s*$")
_BARE = re.compile(r"^\s*([A-Za-z_]\w*)\s*$")


def slice_columns(expr: str) -> list[str]:
    m = _PRED.match(expr) or _BARE.match(expr)
    assert m, f"reference: slicing expression {expr!r} not supported by the reference"
    return [m.group(1)]


def predicate(col: Col, threshold: float) -> np.ndarray:
    if col.null.any() or np.isnan(col.values[~col.null]).any():
        raise AssertionError("reference: NULL/NaN in a predicate's column (the fixtures avoid it)")
    return col.values > threshold


def slices_of(g: Frame, expr: str) -> list[tuple[str, np.ndarray]]:
    m = _PRED.match(expr)
    if m:
        t = predicate(g[m.group(1)], float(m.group(2)))
        return [(v, mask) for v, mask in (("true", t), ("false", ~t)) if mask.any()]
    col = g[_BARE.match(expr).group(1)]
    assert col.kind == "string", "reference: bare-column slices only on string columns"
    counts = Counter(strings(col))
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:100]
    return [(v, np.array([x == v for x in col.values], dtype=bool) & ~col.null) for v, _ in top]


def baseline_slice(base: Frame, expr: str | None, value: str | None) -> Frame:
    """The slice evaluated on the baseline when its columns exist there, else the whole baseline."""
    if expr is None or not all(c in base.cols for c in slice_columns(expr)):
        return base
    m = _PRED.match(expr)
    if m:
        t = predicate(base[m.group(1)], float(m.group(2)))
        return base.take(t if value == "true" else ~t)
    col = base[_BARE.match(expr).group(1)]
    return base.take(np.array([x == value for x in col.values], dtype=bool) & ~col.null)


@dataclass
class Expected:
    table: str
    profile: dict = field(default_factory=dict)         # key -> stats
    baseline_profile: dict = field(default_factory=dict)  # key + ("BASELINE",) -> stats of the baseline
    drift: dict = field(default_factory=dict)           # key -> stats
    drift_optional: dict = field(default_factory=dict)  # key -> stats (row may be absent)
    groups: dict = field(default_factory=dict)          # (window, model, sk, sv) -> Frame
    windows: list = field(default_factory=list)


def expected_tables(table: str, table_dir: Path, labels_dir: Path | None, baseline_path: Path,
                    custom: dict | None = None) -> Expected:
    spec = TABLES[table]
    columns, exprs, problem = spec["columns"], spec["slicing_exprs"], spec["problem_type"]
    data = load_inputs(table_dir, labels_dir)
    base = frame_of(pq.read_table(baseline_path))
    win = np.array([v // HOUR_US * HOUR_US for v in data["timestamp"].values], dtype=np.int64)
    model = data["served_model"].values
    shadow = np.array([bool(v) for v in data["is_shadow"].values])
    models = [None] + sorted({m for m in model})
    exp = Expected(table)
    exp.windows = sorted(set(win.tolist()))

    for w in exp.windows:
        for mid in models:
            gmask = (win == w) & ((~shadow) if mid is None else np.array([m == mid for m in model]))
            if not gmask.any():
                continue
            sub = data.take(gmask)
            slices = [(None, None, np.ones(sub.n, dtype=bool))]
            for expr in exprs:
                slices += [(expr, v, m) for v, m in slices_of(sub, expr)]
            for sk, sv, m in slices:
                g = sub.take(m)
                exp.groups[((w, w + HOUR_US), mid, sk, sv)] = g
                for c in columns:
                    exp.profile[(GRANULARITY, (w, w + HOUR_US), mid, sk, sv, c)] = \
                        {"log_type": "INPUT", **profile_column(g[c])}
                trow = {"log_type": "INPUT", **table_row(g, columns, problem)}
                if custom:
                    trow.update({name: fn(g) for name, fn in custom.items()})
                exp.profile[(GRANULARITY, (w, w + HOUR_US), mid, sk, sv, ":table")] = trow

    for (wnd, mid, sk, sv), g in exp.groups.items():
        prev = ((wnd[0] - HOUR_US, wnd[0]), mid, sk, sv)
        refs = []
        if prev in exp.groups:
            refs.append(("CONSECUTIVE", prev[0], exp.groups[prev], False))
        b = baseline_slice(base, sk, sv)
        refs.append(("BASELINE", None, b, b.n == 0))
        if mid is None and b.n > 0:
            # the baseline's own profile, written beside the window's (log_type BASELINE)
            pk = (GRANULARITY, wnd, None, sk, sv)
            exp.baseline_profile[pk + (":table", "BASELINE")] = {"log_type": "BASELINE", "count": b.n}
            for c in columns:
                exp.baseline_profile[pk + (c, "BASELINE")] = (
                    {"log_type": "BASELINE", **profile_column(b[c])} if c in b.cols else {"log_type": "BASELINE"})
        for kind, wcmp, ref, optional in refs:
            for c in columns:
                key = (kind, GRANULARITY, wnd, wcmp, mid, sk, sv, c)
                if optional:
                    # Empty baseline slice: the spec does not say whether the row exists.
                    stats_ = {"count_delta": g.n, **{k: None for k in NUMERIC_DRIFT + CATEGORICAL_DRIFT},
                              "avg_delta": None}
                    exp.drift_optional[key] = stats_
                else:
                    exp.drift[key] = drift_column(g[c], ref[c] if c in ref.cols else _empty_like(g[c]), g.n, ref.n)
            # A ":table" drift row is not in the spec; allowed, with count_delta checked.
            exp.drift_optional[(kind, GRANULARITY, wnd, wcmp, mid, sk, sv, ":table")] = {"count_delta": g.n - ref.n}
    return exp


def _empty_like(col: Col) -> Col:
    return Col(col.kind, col.values[:0], col.null[:0])


# --------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------

def _is_num(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def close(got, exp, tol: float = TOL) -> bool:
    if math.isnan(exp):
        return math.isnan(got)
    if math.isinf(exp):
        return got == exp
    return abs(got - exp) <= tol * max(1.0, abs(exp))


def check_value(got, exp, where: str, errors: list[str], tol: float = TOL) -> None:
    if exp is ANY_VALUE:
        return
    if exp is ZERO_OR_NULL:
        if got is not None and got != 0:
            errors.append(f"{where}: got {got!r}, expected 0 or NULL")
        return
    if exp is NULL_OR_EMPTY:
        if got not in (None, []):
            errors.append(f"{where}: got {got!r:.200}, expected NULL or an empty list")
        return
    if exp is None or exp is NULL_IF_PRESENT:
        if got is not None:
            errors.append(f"{where}: got {got!r:.200}, expected NULL")
        return
    if got is None:
        errors.append(f"{where}: got NULL, expected {exp!r:.200}")
        return
    if isinstance(exp, bool) or isinstance(exp, str):
        if got != exp:
            errors.append(f"{where}: got {got!r}, expected {exp!r}")
        return
    if isinstance(exp, (int, np.integer)):
        if not isinstance(got, int) or isinstance(got, bool) or got != exp:
            errors.append(f"{where}: got {got!r}, expected exactly {int(exp)}")
        return
    if isinstance(exp, float):
        if not _is_num(got) or not close(float(got), exp, tol):
            errors.append(f"{where}: got {got!r}, expected {exp!r} (tolerance {tol:g})")
        return
    if isinstance(exp, Unordered):
        if not isinstance(got, list) or sorted(got) != sorted(exp):
            errors.append(f"{where}: got {got!r}, expected (in any order) {sorted(exp)!r}")
        return
    if isinstance(exp, list):
        if not isinstance(got, list) or len(got) != len(exp):
            errors.append(f"{where}: got {got!r:.300}, expected a list of {len(exp)}: {exp!r:.300}")
            return
        sub: list[str] = []
        for i, (g, e) in enumerate(zip(got, exp)):
            check_value(g, e, f"{where}[{i}]", sub, tol)
            if sub:
                errors.append(sub[0] + f" (whole list got {got!r:.300}, expected {exp!r:.300})")
                return
        return
    if isinstance(exp, dict):
        if not isinstance(got, dict):
            errors.append(f"{where}: got {got!r:.200}, expected a struct {exp!r:.200}")
            return
        for k, e in exp.items():
            if k not in got:
                errors.append(f"{where}: struct has no field {k!r} (got {got!r:.200})")
            else:
                check_value(got[k], e, f"{where}.{k}", errors, tol)
        return
    raise AssertionError(f"reference: cannot compare {exp!r}")


def check_row(got: dict, exp: dict, where: str, errors: list[str], only: set[str] | None = None) -> None:
    for stat, e in exp.items():
        if only is not None and stat not in only:
            continue
        if stat not in got:
            if not (isinstance(e, Marker) and e.absent_ok):
                errors.append(f"{where}: statistic {stat!r}: no such column in the output")
            continue
        check_value(got[stat], e, f"{where}: {stat}", errors)


def fail_on(errors: list[str], what: str) -> None:
    if errors:
        shown = "\n".join(errors[:MAX_REPORTED])
        more = f"\n... and {len(errors) - MAX_REPORTED} more" if len(errors) > MAX_REPORTED else ""
        pytest.fail(f"{what}: {len(errors)} mismatch(es)\n{shown}{more}", pytrace=False)


def profile_errors(out: Output, exp: Expected, only: set[str] | None = None,
                   keys: set | None = None) -> list[str]:
    errors: list[str] = []
    describe = lambda k: describe_profile(exp.table, k)  # noqa: E731
    got = index_rows(out.profile, profile_key, describe, errors)
    for key, e in sorted({**exp.profile, **exp.baseline_profile}.items(), key=lambda kv: repr(kv[0])):
        if keys is not None and key not in keys:
            continue
        if key in got:
            check_row(got[key], e, describe(key), errors, only)
    return errors


def drift_errors(out: Output, exp: Expected, only: set[str] | None = None) -> list[str]:
    errors: list[str] = []
    describe = lambda k: describe_drift(exp.table, k)  # noqa: E731
    got = index_rows(out.drift, drift_key, describe, errors)
    for key, e in sorted({**exp.drift_optional, **exp.drift}.items(), key=lambda kv: repr(kv[0])):
        if key in got:
            check_row(got[key], e, describe(key), errors, only)
    return errors


def group_errors(out: Output, exp: Expected) -> list[str]:
    errors: list[str] = []
    dp = lambda k: describe_profile(exp.table, k)  # noqa: E731
    dd = lambda k: describe_drift(exp.table, k)  # noqa: E731
    pgot = index_rows(out.profile, profile_key, dp, errors)
    dgot = index_rows(out.drift, drift_key, dd, errors)
    want = set(exp.profile) | set(exp.baseline_profile)
    errors += [f"{dp(k)}: row missing" for k in sorted(want - set(pgot), key=repr)]
    errors += [f"{dp(k)}: unexpected row" for k in sorted(set(pgot) - want, key=repr)]
    errors += [f"{dd(k)}: row missing" for k in sorted(set(exp.drift) - set(dgot), key=repr)]
    errors += [f"{dd(k)}: unexpected row" + (" (CONSECUTIVE only where the previous window has rows)"
                                              if k[0] == "CONSECUTIVE" else "")
               for k in sorted(set(dgot) - set(exp.drift) - set(exp.drift_optional), key=repr)]
    return errors


# --------------------------------------------------------------------------------------------
# Fixtures: data written once per module, each CLI run once
# --------------------------------------------------------------------------------------------

class MonitorEnv:
    def __init__(self, root: Path):
        self.root = root
        self.paths = mf.write_all(root / "fixtures")
        self._runs: dict[str, Output | str] = {}
        self._expected: dict[str, Expected] = {}

    def config(self, table: str, name: str, custom_metrics: list[dict] = ()) -> Path:
        baseline = None if table in BASELINE_BY_FLAG else self.paths[table]["baseline"]
        path = self.root / "configs" / f"{name}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config_text(table, baseline, custom_metrics))
        return path

    def baseline_flag(self, table: str) -> Path | None:
        return self.paths[table]["baseline"] if table in BASELINE_BY_FLAG else None

    def run(self, table: str) -> Output:
        """The CLI on a table with its standard config (once; a failure fails every user)."""
        if table not in self._runs:
            try:
                self._runs[table] = run_monitor(self.paths[table]["table"], self.root / "out" / table,
                                                self.config(table, table), self.paths[table]["labels"],
                                                self.baseline_flag(table))
            except BaseException as e:  # pytest.fail / assertion: remember the message
                self._runs[table] = f"{type(e).__name__}: {e}"
                raise
        r = self._runs[table]
        if isinstance(r, str):
            pytest.fail(f"the monitor run on {table!r} failed earlier in this module: {r}", pytrace=False)
        return r

    def expected(self, table: str) -> Expected:
        if table not in self._expected:
            p = self.paths[table]
            self._expected[table] = expected_tables(table, p["table"], p["labels"], p["baseline"])
        return self._expected[table]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> MonitorEnv:
    return MonitorEnv(tmp_path_factory.mktemp("monitor"))


# --------------------------------------------------------------------------------------------
# Every table: groups, statistics, schema
# --------------------------------------------------------------------------------------------

ALL_TABLES = [mf.PAYMENTS, mf.ETA, mf.TRIAGE]


@pytest.mark.parametrize("table", ALL_TABLES)
def test_groups_are_exactly_the_expected_ones(env, table):
    """Profile rows: one per (window, model_id incl. NULL, slice incl. NULL, column incl. ":table").
    Drift rows: BASELINE for every group, CONSECUTIVE only where the previous window has that group;
    no missing, no extra, no duplicate rows. (Rows for an empty baseline slice and ":table" drift
    rows are tolerated either way: the spec does not settle them.)"""
    out, exp = env.run(table), env.expected(table)
    assert len(exp.windows) == 3, f"fixture problem: {len(exp.windows)} windows"
    fail_on(group_errors(out, exp), f"{table}: groups")


@pytest.mark.parametrize("table", ALL_TABLES)
def test_profile_statistics_match_reference(env, table):
    out, exp = env.run(table), env.expected(table)
    errors = profile_errors(out, exp)
    for r in out.profile:
        if r.get("granularity") != GRANULARITY:
            errors.append(f"{describe_profile(table, profile_key(r))}: granularity {r.get('granularity')!r}")
    fail_on(errors, f"{table}: profile statistics")


@pytest.mark.parametrize("table", ALL_TABLES)
def test_drift_statistics_match_reference(env, table):
    out, exp = env.run(table), env.expected(table)
    fail_on(drift_errors(out, exp), f"{table}: drift statistics")


def _norm_type(t: pa.DataType):
    if pa.types.is_dictionary(t):
        return _norm_type(t.value_type)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t):
        return "string"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or getattr(pa.types, "is_list_view", lambda _: False)(t):
        return ("list", _norm_type(t.value_type))
    if pa.types.is_struct(t):
        return ("struct", tuple(sorted((t.field(i).name, _norm_type(t.field(i).type)) for i in range(t.num_fields))))
    if pa.types.is_timestamp(t):
        return ("timestamp", t.unit, t.tz)
    return str(t)


_TS = pa.timestamp("us", tz="UTC")
_WINDOW = pa.struct([("start", _TS), ("end", _TS)])
_PAIR = pa.struct([("macro", pa.float64()), ("weighted", pa.float64())])
_TEST = pa.struct([("statistic", pa.float64()), ("pvalue", pa.float64())])
D, I, S = pa.float64(), pa.int64(), pa.string()

PROFILE_TYPES = {
    "window": _WINDOW, "log_type": S, "monitor_version": I, "granularity": S, "model_id": S, "slice_key": S,
    "slice_value": S, "column_name": S, "data_type": S, "count": I, "num_nulls": I, "num_nan": I, "num_zeros": I,
    "distinct_count": I, "percent_null": D, "percent_nan": D, "percent_zeros": D, "percent_distinct": D,
    "min": D, "max": D, "avg": D, "stddev": D, "median": D, "quantiles": pa.list_(D),
    "min_length": D, "max_length": D, "avg_length": D,
    "frequent_items": pa.list_(pa.struct([("item", S), ("count", I)])), "non_null_columns": pa.list_(S),
}
CLASSIFICATION_TYPES = {
    "accuracy_score": D, "precision": _PAIR, "recall": _PAIR, "f1_score": _PAIR,
    "confusion_matrix": pa.struct([("labels", pa.list_(S)), ("counts", pa.list_(pa.list_(I)))]),
    "roc_auc_score": D,
}
REGRESSION_TYPES = {k: D for k in REGRESSION_QUALITY}
DRIFT_TYPES = {
    "window": _WINDOW, "window_cmp": _WINDOW, "drift_type": S, "granularity": S, "monitor_version": I,
    "model_id": S, "slice_key": S, "slice_value": S, "column_name": S, "data_type": S, "count_delta": I,
    "avg_delta": D, "percent_null_delta": D, "percent_zeros_delta": D, "percent_distinct_delta": D,
    "ks_test": _TEST, "wasserstein_distance": D, "population_stability_index": D, "chi_squared_test": _TEST,
    "js_distance": D, "tv_distance": D, "l_infinity_distance": D,
}


def test_baseline_profile_rows_sit_beside_each_window(env):
    """Lakehouse Monitoring writes the baseline's profile into the profile table with log_type
    BASELINE: here once per window and slice (model_id NULL), so a dashboard can put baseline and
    current side by side from the metric table alone. Their values are checked against numpy in
    test_profile_statistics_match_reference; here, that they are all there and only there."""
    out, exp = env.run(mf.PAYMENTS), env.expected(mf.PAYMENTS)
    got = [r for r in out.profile if r["log_type"] == "BASELINE"]
    assert exp.baseline_profile and len(got) == len(exp.baseline_profile), (len(got), len(exp.baseline_profile))
    assert all(r["model_id"] is None for r in got)
    assert {r["log_type"] for r in out.profile} == {"INPUT", "BASELINE"}
    inputs = {(r["granularity"], r["window"], r["slice_key"], r["slice_value"], r["column_name"])
              for r in out.profile if r["log_type"] == "INPUT" and r["model_id"] is None}
    for r in got:
        assert (r["granularity"], r["window"], r["slice_key"], r["slice_value"], r["column_name"]) in inputs, r


def same(a, b) -> bool:
    """Equal, floats up to TOL, inside lists and dicts too."""
    if isinstance(a, float) and isinstance(b, float):
        return close(a, b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def test_default_columns_are_every_feature_numeric_and_categorical(env):
    """Without `columns`, as Lakehouse Monitoring does: every feature column is profiled, numeric
    and categorical (the string `merchant`, whose categorical drift - chi-squared, TV, L-infinity,
    JS - is checked against scipy above), plus the prediction and, with labels, the label; no
    system column (request ids, endpoint, served model, latencies...). Every row of the run that
    names its columns is in this run with the same values."""
    table = mf.PAYMENTS
    text = config_text(table, env.paths[table]["baseline"])
    text = "\n".join(line for line in text.splitlines() if not line.startswith("columns = ")) + "\n"
    config = env.root / "configs" / "payments-default-columns.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(text)
    out = run_monitor(env.paths[table]["table"], env.root / "out" / "payments-default", config,
                      env.paths[table]["labels"])
    named = env.run(table)
    cols = {r["column_name"] for r in out.profile if r["log_type"] == "INPUT"} - {":table"}
    assert cols == set(TABLES[table]["columns"]) | {"label"}, sorted(cols)
    assert {r["data_type"] for r in out.profile if r["column_name"] == "merchant"} == {"string"}
    volatile = {"monitor_version", "logging_table_commit_version"}
    for kind, keyf, rows_named, rows_default in (("profile", profile_key, named.profile, out.profile),
                                                 ("drift", drift_key, named.drift, out.drift)):
        errors: list[str] = []
        default = index_rows(rows_default, keyf, repr, errors)
        for r in rows_named:
            k = keyf(r)
            if k[-1] == ":table" or (kind == "profile" and k[5] == ":table"):
                continue  # the table row lists the monitored columns (non_null_columns)
            if k not in default:
                errors.append(f"{kind} {k}: missing without `columns`")
                continue
            for stat, v in r.items():
                if stat not in volatile and not same(default[k].get(stat), v):
                    errors.append(f"{kind} {k}: {stat} {default[k].get(stat)!r} != {v!r}")
        fail_on(errors, f"{kind} rows without `columns` vs with them")


@pytest.mark.parametrize("table", ALL_TABLES)
def test_output_schema(env, table):
    """Column types as in the spec (string/large_string and list/large_list treated alike);
    monitor_version set and the same on every row of one run."""
    out = env.run(table)
    problem = TABLES[table]["problem_type"]
    want_profile = {**PROFILE_TYPES, **(CLASSIFICATION_TYPES if problem == "classification" else REGRESSION_TYPES)}
    errors = []
    for what, schema, want in (("profile", out.profile_schema, want_profile), ("drift", out.drift_schema, DRIFT_TYPES)):
        for name, t in want.items():
            if name not in schema.names:
                errors.append(f"{table} {what} table: column {name!r} missing")
            elif _norm_type(schema.field(name).type) != _norm_type(t):
                errors.append(f"{table} {what} table: column {name!r} is {schema.field(name).type}, expected {t}")
    for what, rows in (("profile", out.profile), ("drift", out.drift)):
        versions = {r.get("monitor_version") for r in rows}
        if len(versions) != 1 or None in versions:
            errors.append(f"{table} {what} table: monitor_version values {sorted(versions, key=repr)}, expected one non-NULL value")
        types = Counter(r.get("drift_type") for r in rows) if what == "drift" else None
        if types is not None and set(types) - {"CONSECUTIVE", "BASELINE"}:
            errors.append(f"{table} drift table: drift_type values {dict(types)}")
    for r in out.drift:
        if (r.get("drift_type") == "BASELINE") != (r.get("window_cmp") is None):
            errors.append(f"{describe_drift(table, drift_key(r))}: window_cmp must be NULL exactly for BASELINE rows")
    fail_on(errors, f"{table}: schema")


# --------------------------------------------------------------------------------------------
# payments: the edge cases, one by one
# --------------------------------------------------------------------------------------------

def _h(i: int) -> tuple[int, int]:
    return (mf.WINDOW_STARTS_US[i], mf.WINDOW_STARTS_US[i] + HOUR_US)


def _drift_rows(out: Output, column: str, model, sk=None, sv=None) -> dict:
    return {(r["drift_type"], r["window"]): r for r in out.drift
            if r.get("column_name") == column and r.get("model_id") == model
            and r.get("slice_key") == sk and r.get("slice_value") == sv}


def _profile_row(out: Output, window, model, sk, sv, column) -> dict | None:
    for r in out.profile:
        if profile_key(r) == (GRANULARITY, window, model, sk, sv, column):
            return r
    return None


def test_shifted_feature_drifts_in_last_hour_only(env):
    out, exp = env.run(mf.PAYMENTS), env.expected(mf.PAYMENTS)
    errors = []
    for model in (None, "champion", "challenger"):
        rows = _drift_rows(out, "shifted", model)
        for kind, hour in (("CONSECUTIVE", 1), ("CONSECUTIVE", 2), ("BASELINE", 0), ("BASELINE", 1), ("BASELINE", 2)):
            where = describe_drift(mf.PAYMENTS, (kind, GRANULARITY, _h(hour), _h(hour - 1) if kind == "CONSECUTIVE" else None,
                                                 model, None, None, "shifted"))
            r = rows.get((kind, _h(hour)))
            if r is None or r.get("ks_test") is None:
                errors.append(f"{where}: no ks_test (row {r!r:.200})")
                continue
            ks = r["ks_test"]
            if hour == 2:
                if not (ks["statistic"] > 0.5 and ks["pvalue"] < 1e-6):
                    errors.append(f"{where}: ks_test {ks}, expected a large statistic and pvalue < 1e-6 (shifted by 3 sd)")
            elif not ks["pvalue"] > 1e-3:
                errors.append(f"{where}: ks_test {ks}, expected pvalue > 0.001 (no shift before hour 3)")
        for col in ("stable", "amount"):
            for (kind, w), r in _drift_rows(out, col, model).items():
                ks = r.get("ks_test")
                if ks is None or not ks["pvalue"] > 1e-3:
                    errors.append(f"{describe_drift(mf.PAYMENTS, drift_key(r))}: ks_test {ks}, expected pvalue > 0.001 "
                                  f"(this column never shifts)")
    # The same must hold for the reference itself (else the fixture, not the engine, is wrong).
    for key, e in exp.drift.items():
        kind, _, w, _, model, sk, _, col = key
        if sk is None and model in (None, "champion", "challenger") and col == "shifted":
            p = e["ks_test"]["pvalue"]
            assert (p < 1e-6) if w == _h(2) else (p > 1e-3), f"fixture problem: reference {key} p = {p}"
    fail_on(errors, "payments: shifted / unshifted features")


def test_all_null_and_empty_comparisons(env):
    """all_null: NULL statistics everywhere, no crash; gappy (all NULL in hour 2): NULL drift both
    against hour 2 and from hour 2 to hour 3, values elsewhere."""
    out = env.run(mf.PAYMENTS)
    errors = []
    null_profile = {k: None for k in NUMERIC_STATS + ("quantiles",)}
    null_drift = {k: None for k in NUMERIC_DRIFT + ("avg_delta",)}
    for r in out.profile:
        if r.get("column_name") == "all_null":
            where = describe_profile(mf.PAYMENTS, profile_key(r))
            check_row(r, {**null_profile, "num_nulls": r.get("count"), "percent_null": 100.0, "distinct_count": 0,
                          "data_type": "double"}, where, errors)
    n_all_null = sum(1 for r in out.drift if r.get("column_name") == "all_null")
    if n_all_null == 0:
        errors.append("payments drift: no rows for column 'all_null'")
    for r in out.drift:
        where = describe_drift(mf.PAYMENTS, drift_key(r))
        if r.get("column_name") == "all_null":
            check_row(r, null_drift, where, errors)
        if r.get("column_name") == "gappy" and (r["window"] == _h(1) or r.get("window_cmp") == _h(1)):
            check_row(r, null_drift, where, errors)
    g2 = _profile_row(out, _h(1), None, None, None, "gappy")
    if g2 is None or g2.get("num_nulls") != g2.get("count") or g2.get("avg") is not None:
        errors.append(f"payments profile, hour 2, gappy: expected all NULL, got {g2!r:.300}")
    g3 = _drift_rows(out, "gappy", None).get(("BASELINE", _h(2)))
    if g3 is None or g3.get("ks_test") is None:
        errors.append(f"payments drift BASELINE hour 3 gappy: expected a ks_test, got {g3!r:.300}")
    fail_on(errors, "payments: all-NULL column / empty comparisons")


def test_categories_absent_from_baseline(env):
    """merchant: the table has "hooli" (not in the baseline), the baseline "wayne" (not in the
    table): chi-squared finite and JS/TV/L-inf over the union of categories."""
    out, exp = env.run(mf.PAYMENTS), env.expected(mf.PAYMENTS)
    rows = _drift_rows(out, "merchant", None)
    base = frame_of(pq.read_table(env.paths[mf.PAYMENTS]["baseline"]))
    errors = []
    for i in range(3):
        key = ("BASELINE", GRANULARITY, _h(i), None, None, None, None, "merchant")
        where = describe_drift(mf.PAYMENTS, key)
        r = rows.get(("BASELINE", _h(i)))
        if r is None:
            errors.append(f"{where}: row missing")
            continue
        chi = r.get("chi_squared_test")
        if not chi or not all(_is_num(chi.get(k)) and math.isfinite(chi[k]) for k in ("statistic", "pvalue")):
            errors.append(f"{where}: chi_squared_test {chi!r}, expected finite statistic and pvalue")
        check_row(r, exp.drift[key], where, errors, only=set(CATEGORICAL_DRIFT))
        # Over the intersection only the distance would differ: make sure the fixture tells them apart.
        g = exp.groups[(_h(i), None, None, None)]
        cats, rc, cc = category_distributions(g["merchant"], base["merchant"])
        assert mf.ABSENT_FROM_BASELINE in cats and mf.ONLY_IN_BASELINE in cats, f"fixture problem: {cats}"
        inter = np.array([(c != mf.ABSENT_FROM_BASELINE and c != mf.ONLY_IN_BASELINE) for c in cats])
        js_inter = float(jensenshannon(rc[inter] / rc[inter].sum(), cc[inter] / cc[inter].sum(), base=2))
        if _is_num(r.get("js_distance")) and abs(r["js_distance"] - js_inter) < 1e-6:
            errors.append(f"{where}: js_distance {r['js_distance']} is the value over the categories both sides "
                          f"share ({js_inter}); it must be over the union")
    fail_on(errors, "payments: categories absent from the baseline")


def test_single_row_slices(env):
    """`amount > 1000` is true for exactly one row in hour 1 (a champion row); merchant "stark"
    occurs once, in hour 2."""
    out = env.run(mf.PAYMENTS)
    errors = []
    for model in (None, "champion"):
        for col in ("amount", ":table"):
            r = _profile_row(out, _h(0), model, "amount > 1000", "true", col)
            where = describe_profile(mf.PAYMENTS, (GRANULARITY, _h(0), model, "amount > 1000", "true", col))
            if r is None:
                errors.append(f"{where}: row missing")
                continue
            want = {"count": 1}
            if col == "amount":
                want.update({"min": 1500.0, "max": 1500.0, "avg": 1500.0, "median": 1500.0, "stddev": None,
                             "quantiles": [1500.0] * 101, "distinct_count": 1})
            check_row(r, want, where, errors)
        r = _profile_row(out, _h(1), model, "merchant", mf.SINGLE_ROW_MERCHANT, "merchant")
        where = describe_profile(mf.PAYMENTS, (GRANULARITY, _h(1), model, "merchant", mf.SINGLE_ROW_MERCHANT, "merchant"))
        if r is None:
            errors.append(f"{where}: row missing")
        else:
            check_row(r, {"count": 1, "distinct_count": 1,
                          "frequent_items": [{"item": mf.SINGLE_ROW_MERCHANT, "count": 1}]}, where, errors)
    if _profile_row(out, _h(0), "challenger", "amount > 1000", "true", "amount") is not None:
        errors.append("payments profile: hour 1 challenger has no row with amount > 1000, yet a slice row exists")
    # hour 2 vs the one-row slice of hour 1
    r = _drift_rows(out, "amount", "champion", "amount > 1000", "true").get(("CONSECUTIVE", _h(1)))
    if r is None:
        errors.append("payments drift CONSECUTIVE hour 2 vs hour 1, champion, amount > 1000 = 'true': row missing")
    fail_on(errors, "payments: single-row slices")


@pytest.mark.parametrize("table", [mf.PAYMENTS, mf.TRIAGE])
def test_classification_quality_matches_sklearn(env, table):
    """accuracy, precision/recall/f1 (macro, weighted), confusion matrix and ROC AUC of every group
    on its labelled rows (labels joined by request_id, else client_request_id, latest first)."""
    out, exp = env.run(table), env.expected(table)
    errors = profile_errors(out, exp, only=set(CLASSIFICATION_QUALITY))
    if table == mf.PAYMENTS:
        e = exp.profile[(GRANULARITY, _h(1), "challenger", None, None, ":table")]
        assert e["accuracy_score"] is None, "fixture problem: the hour-2 challenger must have no labels"
        e = exp.profile[(GRANULARITY, _h(0), None, "amount > 1000", "true", ":table")]
        assert e["accuracy_score"] is not None and e["roc_auc_score"] is None, "fixture problem: single-row slice"
    else:
        for i in range(3):
            e = exp.profile[(GRANULARITY, _h(i), None, None, None, ":table")]
            assert (e["roc_auc_score"] is None) == (i == 1), f"fixture problem: triage hour {i + 1} ROC AUC {e}"
    n_quality = sum(1 for k, e in exp.profile.items() if k[-1] == ":table" and e["accuracy_score"] is not None)
    assert n_quality > 10, "fixture problem: too few labelled groups"
    fail_on(errors, f"{table}: classification quality")


def test_regression_quality_matches_sklearn(env):
    """MSE, RMSE, MAE, MAPE (a zero target makes it ~1e15), R2 (NULL for one labelled row)."""
    out, exp = env.run(mf.ETA), env.expected(mf.ETA)
    errors = profile_errors(out, exp, only=set(REGRESSION_QUALITY))
    e = exp.profile[(GRANULARITY, _h(0), None, None, None, ":table")]
    assert e["mean_absolute_percentage_error"] > 1e10, "fixture problem: no zero target in hour 1"
    e = exp.profile[(GRANULARITY, _h(1), "challenger", None, None, ":table")]
    assert e["r2_score"] is None and e["mean_squared_error"] is not None, "fixture problem: one-label group"
    fail_on(errors, "eta: regression quality")


# --------------------------------------------------------------------------------------------
# Incremental runs and rebuilds
# --------------------------------------------------------------------------------------------

def _row_map(rows: list[dict], keyf) -> dict:
    out = {}
    for r in rows:
        k = keyf(r)
        assert k not in out, f"duplicate output row {k}"
        out[k] = {c: v for c, v in r.items() if c != "monitor_version"}
    return out


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or close(a, b, SAME_TOL)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b and type(a) is type(b)


def diff_tables(name: str, a: dict, b: dict, describe, keys=None) -> list[str]:
    """Rows of a and b (key -> row) restricted to keys: same keys, same values."""
    ka = set(a) if keys is None else set(a) & keys
    kb = set(b) if keys is None else set(b) & keys
    errors = [f"{name}: {describe(k)}: only in the first" for k in sorted(ka - kb, key=repr)]
    errors += [f"{name}: {describe(k)}: only in the second" for k in sorted(kb - ka, key=repr)]
    for k in sorted(ka & kb, key=repr):
        for c in sorted(set(a[k]) | set(b[k])):
            if not _same(a[k].get(c), b[k].get(c)):
                errors.append(f"{name}: {describe(k)}: {c}: {a[k].get(c)!r:.200} != {b[k].get(c)!r:.200}")
    return errors


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def test_incremental_run_and_rebuild(env, tmp_path):
    """Run; add one file with rows in the last hour only; run again into the same --out: rows of
    hours 1-2 unchanged, hour 3 recomputed (equal to the reference on all the data). Then delete
    the output (the CLI's state lives under --out) and rerun from scratch: the same tables.
    monitor_version is left out of these comparisons (its meaning across runs is not specified)."""
    src = env.paths[mf.PAYMENTS]
    table_dir = tmp_path / "data" / mf.PAYMENTS
    shutil.copytree(src["table"], table_dir)
    out_dir = tmp_path / "out"
    config = env.config(mf.PAYMENTS, "incremental")
    first = run_monitor(table_dir, out_dir, config, src["labels"])
    before = _snapshot(table_dir)
    added = mf.write_payments_increment(table_dir)
    second = run_monitor(table_dir, out_dir, config, src["labels"])

    after = _snapshot(table_dir)
    new_files = sorted(k for k in set(after) - set(before) if not k.startswith("_delta_log/"))
    new_log = sorted(k for k in set(after) - set(before) if k.startswith("_delta_log/"))
    assert new_files == [str(added.relative_to(table_dir))] and all(after[k] == before[k] for k in before), \
        f"the monitor must not write into the inference table: files now {sorted(after)}"
    assert len(new_log) == 1 and new_log[0].endswith(".json"), f"the increment is one commit: {new_log}"

    touched = {_h(2)}
    dp = lambda k: describe_profile(mf.PAYMENTS, k)  # noqa: E731
    dd = lambda k: describe_drift(mf.PAYMENTS, k)  # noqa: E731
    p1, p2 = _row_map(first.profile, profile_key), _row_map(second.profile, profile_key)
    d1, d2 = _row_map(first.drift, drift_key), _row_map(second.drift, drift_key)
    untouched_p = {k for k in set(p1) | set(p2) if k[1] not in touched}
    untouched_d = {k for k in set(d1) | set(d2) if k[2] not in touched}
    errors = diff_tables("rows of untouched windows, first run vs second", p1, p2, dp, untouched_p)
    errors += diff_tables("rows of untouched windows, first run vs second", d1, d2, dd, untouched_d)
    k = (GRANULARITY, _h(2), None, None, None, ":table")
    if k in p1 and k in p2 and p2[k].get("count") == p1[k].get("count"):
        errors.append(f"{dp(k)}: count unchanged ({p1[k].get('count')}) after adding rows to that window")
    fail_on(errors, "incremental run")

    exp = expected_tables(mf.PAYMENTS, table_dir, src["labels"], src["baseline"])
    errors = group_errors(second, exp) + profile_errors(second, exp) + drift_errors(second, exp)
    fail_on(errors, "incremental run vs the reference on all the data")

    shutil.rmtree(out_dir)
    third = run_monitor(table_dir, out_dir, config, src["labels"])
    p3, d3 = _row_map(third.profile, profile_key), _row_map(third.drift, drift_key)
    errors = diff_tables("incremental vs from scratch", p2, p3, dp) + diff_tables("incremental vs from scratch", d2, d3, dd)
    fail_on(errors, "rebuild from scratch")


# --------------------------------------------------------------------------------------------
# Custom metrics
# --------------------------------------------------------------------------------------------

def _match_rate(g: Frame) -> float:
    """avg(CASE WHEN prediction = label THEN 1.0 ELSE 0.0 END): a NULL label counts 0."""
    lab, pred = g["label"], g["prediction"]
    hits = [(not ln) and (not pn) and lv == pv for lv, ln, pv, pn in zip(lab.values, lab.null, pred.values, pred.null)]
    return float(np.mean(hits))


def test_custom_aggregate_metric_match_rate(env, tmp_path):
    """match_rate on every group's ":table" row = the share of rows whose label equals the
    prediction (unlabelled rows count 0), which is sklearn's accuracy where every row is labelled."""
    src = env.paths[mf.PAYMENTS]
    config = env.config(mf.PAYMENTS, "custom_match_rate", [MATCH_RATE])
    out = run_monitor(src["table"], tmp_path / "out", config, src["labels"])
    exp = expected_tables(mf.PAYMENTS, src["table"], src["labels"], src["baseline"], custom={"match_rate": _match_rate})
    errors = profile_errors(out, exp, only={"match_rate"},
                            keys={k for k in exp.profile if k[-1] == ":table"})
    fully_labelled = 0
    for (g_, w, model, sk, sv, col), e in exp.profile.items():
        if col != ":table":
            continue
        g = exp.groups[(w, model, sk, sv)]
        if not g["label"].null.any():
            fully_labelled += 1
            acc = skm.accuracy_score(list(g["label"].values), list(g["prediction"].values))
            assert close(e["match_rate"], float(acc)), "reference: match_rate != accuracy on a fully labelled group"
    assert fully_labelled >= 1, "fixture problem: no fully labelled group"
    if not any("match_rate" in r for r in out.profile):
        errors.insert(0, "payments profile: no column 'match_rate'")
    fail_on(errors, "custom metric match_rate")


def test_invalid_custom_metric_is_an_error_naming_it(env, tmp_path):
    src = env.paths[mf.PAYMENTS]
    config = env.config(mf.PAYMENTS, "custom_bad_metric", [BAD_METRIC])
    cmd = monitor_cmd(src["table"], tmp_path / "out", config, src["labels"], None)
    p = run_cli(cmd)
    assert p.returncode != 0, f"an invalid custom metric must fail the run\ncommand: {' '.join(cmd)}\n{_proc_text(p)}"
    text = (p.stdout or "") + (p.stderr or "")
    assert "bad_metric" in text, f"the error must name the metric 'bad_metric'\n{_proc_text(p)}"
    assert "panicked" not in text, f"an invalid metric must be an error, not a panic\n{_proc_text(p)}"
