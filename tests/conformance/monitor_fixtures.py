"""Deterministic fixture datasets for the `sluice monitor` reference tests (test_monitor.py).

    .venv/bin/python tests/conformance/monitor_fixtures.py OUTDIR

writes, under OUTDIR (every number comes from numpy generators with fixed seeds):

  payments/                                          classification inference table: a Delta table
                                                     (gateway layout, partitioned by date), written
                                                     by delta-rs' Python binding, one commit
  payments/date=2024-03-05/.part-00099.parquet.tmp   a hidden temp file the engine must ignore
  payments/date=2024-03-05/part-99999-uncommitted.parquet  a file beside the log that no commit
                                                     added (an upload that never committed): the
                                                     engine must read the log, not the directory
  payments_labels/                                   labels (request_id or client_request_id), a
                                                     Delta table partitioned by the labels' own dates
  payments_baseline.parquet                          baseline: feature columns + prediction
  eta/..., eta_labels/..., eta_baseline.parquet      regression table (prediction double)
  triage/..., triage_labels/..., triage_baseline.parquet  3-class table (multiclass ROC AUC)

`write_payments_increment(table_dir)` appends one commit with one new file to payments: new rows
in the last hour only (the incremental-run test).

Every table spans three consecutive hours of 2024-03-05 (10:00, 11:00, 12:00 UTC), so the "1 hour"
granularity gives exactly three windows. Within an hour each request sits at a seeded minute and
second offset; a few sit on the window boundaries on purpose (10:59:59.999999, 11:00:00.000000,
12:00:00.000000).

The payments table (served models "champion" and "challenger", plus "shadow" rows with
is_shadow = true mirroring champion requests in hours 1 and 3 only, plus status_code 500 rows that
the default filter `status_code = 200` must drop) carries these edge cases:

  amount    lognormal, below 1000 except: exactly one status-200 row in hour 1 (a champion row,
            1500.0) so the slice `amount > 1000` = "true" has a single row there; several in hours
            2 and 3. The 500 rows and the hidden and uncommitted files use amounts 5000 / 7777 so
            that reading any of them would change that slice.
  shifted   N(0, 1) in hours 1-2 and in the baseline, N(3, 1) in hour 3 (drift in hour 3 only)
  stable    N(10, 2) rounded to 0.1 everywhere (ties; no drift)
  all_null  NULL in every row (table and baseline)
  constant  5.0 in every row (table and baseline)
  gappy     N(0, 1) with NULLs, NaNs and exact zeros; all NULL in hour 2 (empty comparisons)
  merchant  string; 12 categories in the table ("hooli" is absent from the baseline, the baseline
            has "wayne" which the table lacks, "café" has more bytes than characters), plus "stark"
            on one single row in hour 2
  prediction / probabilities   "fraud" / "legit" with {"fraud": p, "legit": 1 - p}

Labels: about two thirds of the primary requests by request_id (none for the challenger in hour
2), three by client_request_id only, one request labelled twice by request_id (the later label
wins), one labelled by request_id and (later) by client_request_id with different labels (the
request_id label wins), one label for a request that does not exist, one label for a 500 row.
Two-row requests (row_index 0 and 1) share request_id and timestamp.
"""
from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import deltalake
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

UTC = dt.timezone.utc
DAY = "2024-03-05"
START = dt.datetime(2024, 3, 5, 10, 0, 0, tzinfo=UTC)
HOUR_US = 3_600_000_000
START_US = int((START - dt.datetime(1970, 1, 1, tzinfo=UTC)) // dt.timedelta(microseconds=1))
HOURS = 3
WINDOW_STARTS_US = [START_US + h * HOUR_US for h in range(HOURS)]

PAYMENTS, ETA, TRIAGE = "payments", "eta", "triage"
PAYMENTS_FEATURES = ["amount", "shifted", "stable", "all_null", "constant", "gappy"]
ETA_FEATURES = ["distance", "load"]
TRIAGE_FEATURES = ["x1"]

TABLE_MERCHANTS = ["acme", "globex", "initech", "umbrella", "hooli", "café", "soylent", "tyrell",
                   "cyberdyne", "vandelay", "wonka", "oscorp"]
MERCHANT_WEIGHTS = np.array([18, 15, 12, 10, 8, 8, 7, 6, 5, 5, 3, 3], dtype=float)
BASELINE_MERCHANTS = [m for m in TABLE_MERCHANTS if m != "hooli"] + ["wayne"]
ABSENT_FROM_BASELINE = "hooli"
ONLY_IN_BASELINE = "wayne"
SINGLE_ROW_MERCHANT = "stark"      # one row, hour 2, champion
INCREMENT_MERCHANT = "initrode"    # only in the increment file (hour 3)

BINARY_CLASSES = ["fraud", "legit"]
TRIAGE_CLASSES = ["low", "medium", "high"]  # map key order on purpose not sorted

PAYMENTS_SEED, ETA_SEED, TRIAGE_SEED, INCREMENT_SEED, BASELINE_SEED = 20240305, 7301, 4242, 99, 1234

MODEL_VERSION = {"champion": "1", "challenger": "2", "shadow": "3", "triage-v1": "1"}


# --------------------------------------------------------------------------------------------
# Schemas (the gateway's inference table layout, the columns the monitor uses)
# --------------------------------------------------------------------------------------------

def _inference_schema(features: list[tuple[str, pa.DataType]], prediction: pa.DataType,
                      with_probabilities: bool) -> pa.Schema:
    fields = [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("client_request_id", pa.string()),
        pa.field("row_index", pa.int64(), nullable=False),
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("endpoint", pa.string()),
        pa.field("served_model", pa.string()),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("is_shadow", pa.bool_()),
        pa.field("status_code", pa.uint16()),
        pa.field("error", pa.string()),
        pa.field("latency_ms", pa.float64()),
    ]
    fields += [pa.field(n, t) for n, t in features]
    fields.append(pa.field("prediction", prediction))
    if with_probabilities:
        fields.append(pa.field("probabilities", pa.map_(pa.string(), pa.float64())))
    return pa.schema(fields)


LABELS_SCHEMA = pa.schema([
    pa.field("request_id", pa.string()),
    pa.field("client_request_id", pa.string()),
    pa.field("label", pa.string()),
    pa.field("label_value", pa.float64()),
    pa.field("timestamp", pa.timestamp("us", tz="UTC")),
])

PAYMENTS_SCHEMA = _inference_schema([(f, pa.float64()) for f in PAYMENTS_FEATURES] + [("merchant", pa.string())],
                                    pa.string(), True)
ETA_SCHEMA = _inference_schema([(f, pa.float64()) for f in ETA_FEATURES], pa.float64(), False)
TRIAGE_SCHEMA = _inference_schema([(f, pa.float64()) for f in TRIAGE_FEATURES], pa.string(), True)


def _write(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")
    return path


def _append(table: pa.Table, table_dir: Path, day: str) -> Path:
    """Appends `table` (its rows all of `day`) to the Delta table at table_dir, partitioned by
    `date` as the gateway writes it, in one commit; returns the data file that commit added."""
    dated = table.append_column("date", pa.array([day] * table.num_rows, pa.string()))
    if not (table_dir / "_delta_log").is_dir():
        # created first, so that every append is cast to the Delta schema and writes map entries
        # as `key_value` (as Spark and the gateway do), not pyarrow's `entries`
        deltalake.DeltaTable.create(str(table_dir), schema=dated.schema, partition_by=["date"])
    before = set(deltalake.DeltaTable(str(table_dir)).file_uris())
    deltalake.write_deltalake(str(table_dir), dated, mode="append", partition_by=["date"])
    added = sorted(set(deltalake.DeltaTable(str(table_dir)).file_uris()) - before)
    assert len(added) == 1, added
    return Path(added[0].removeprefix("file://"))


def _rows_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)


def _write_labels(labels: list[dict], labels_dir: Path) -> list[Path]:
    """Labels partitioned by the date of their own timestamp (as the gateway writes them)."""
    by_date: dict[str, list[dict]] = {}
    for lab in labels:
        day = dt.datetime.fromtimestamp(lab["timestamp"] / 1e6, tz=UTC).strftime("%Y-%m-%d")
        by_date.setdefault(day, []).append(lab)
    return [_append(_rows_table(rows, LABELS_SCHEMA), labels_dir, day) for day, rows in sorted(by_date.items())]


def _offset_us(rng: np.random.Generator) -> int:
    """A seeded position inside an hour: minute, second and microsecond."""
    minute = int(rng.integers(0, 60))
    second = int(rng.integers(0, 60))
    micro = int(rng.integers(0, 1_000_000))
    return (minute * 60 + second) * 1_000_000 + micro


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _label_time(rng: np.random.Generator, day_offset: int) -> int:
    """A labels timestamp on 2024-03-05 + day_offset days (after all the inference rows)."""
    base = START_US - 10 * HOUR_US + day_offset * 24 * HOUR_US
    return base + int(rng.integers(0, 20 * HOUR_US))


# --------------------------------------------------------------------------------------------
# payments: classification (binary), two served models + shadow, the edge cases
# --------------------------------------------------------------------------------------------

def _amount(rng: np.random.Generator) -> float:
    """Lognormal amount strictly below 1000 (rounded to cents)."""
    while True:
        a = round(float(rng.lognormal(4.4, 0.8)), 2)
        if a < 1000:
            return a


def _merchant(rng: np.random.Generator, names: list[str], weights: np.ndarray) -> str:
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _gappy(rng: np.random.Generator, hour: int) -> float | None:
    if hour == 1:
        return None                       # all NULL in the second hour
    u = float(rng.random())
    if u < 0.08:
        return None
    if u < 0.13:
        return float("nan")
    if u < 0.19:
        return 0.0
    return float(rng.normal(0.0, 1.0))


def _payments_features(rng: np.random.Generator, hour: int) -> dict:
    return {
        "amount": _amount(rng),
        "shifted": float(rng.normal(3.0 if hour == 2 else 0.0, 1.0)),
        "stable": round(float(rng.normal(10.0, 2.0)), 1),
        "all_null": None,
        "constant": 5.0,
        "gappy": _gappy(rng, hour),
        "merchant": _merchant(rng, TABLE_MERCHANTS, MERCHANT_WEIGHTS),
    }


def _fraud_score(f: dict) -> float:
    """True fraud log-odds of a row (before noise)."""
    return -1.0 + 1.2 * (np.log(f["amount"]) - 4.4) + 0.3 * (f["stable"] - 10.0)


def _classify(rng: np.random.Generator, f: dict, noise: float) -> tuple[str, list]:
    p = float(_sigmoid(_fraud_score(f) + rng.normal(0.0, noise)))
    pred = "fraud" if p > 0.5 else "legit"
    return pred, [("fraud", p), ("legit", 1.0 - p)]


def _request_rows(req: dict, feats: list[dict], served: str, rng: np.random.Generator, noise: float,
                  endpoint: str, model_name: str, is_shadow: bool = False) -> list[dict]:
    rows = []
    for i, f in enumerate(feats):
        pred, probs = _classify(rng, f, noise)
        rows.append({
            "request_id": req["request_id"], "client_request_id": req["client_request_id"],
            "row_index": i, "timestamp": req["timestamp"], "endpoint": endpoint,
            "served_model": served, "model_name": model_name, "model_version": MODEL_VERSION[served],
            "is_shadow": is_shadow, "status_code": 200, "error": None,
            "latency_ms": round(float(rng.uniform(5.0, 80.0)), 3),
            **f, "prediction": pred, "probabilities": probs,
        })
    return rows


def payments_rows(seed: int = PAYMENTS_SEED) -> tuple[list[dict], list[dict]]:
    """(inference rows, labels rows) of the payments table."""
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    requests: list[dict] = []     # primary status-200 requests: hour, served, ids, true label
    error_requests: list[dict] = []
    n = 0
    for hour in range(HOURS):
        base = WINDOW_STARTS_US[hour]
        champion_reqs, challenger_reqs = [], []
        for served, count, two_row in (("champion", 115, 5), ("challenger", 40, 0)):
            for k in range(count):
                n += 1
                ts = base + _offset_us(rng)
                if served == "champion" and k == 0 and hour > 0:
                    ts = base                                  # exactly on the window start
                if served == "challenger" and k == 0 and hour == 0:
                    ts = base + HOUR_US - 1                    # last microsecond of the window
                req = {"request_id": f"req-{n:05d}",
                       "client_request_id": f"cli-{n:05d}" if rng.random() < 0.5 else None,
                       "timestamp": ts, "hour": hour, "served": served}
                nrows = 2 if (served == "champion" and 10 <= k < 10 + two_row) else 1
                feats = [_payments_features(rng, hour) for _ in range(nrows)]
                if served == "champion" and k == 1 and hour == 0:
                    feats[0]["amount"] = 1500.0                # the single "amount > 1000" row of hour 1
                    req["client_request_id"] = "cli-single"
                    req["no_mirror"] = True
                if hour > 0 and ((served == "champion" and 20 <= k < 24) or (served == "challenger" and k in (5, 6))):
                    feats[0]["amount"] = round(float(rng.uniform(1100.0, 3000.0)), 2)
                if served == "champion" and k == 2 and hour == 1:
                    feats[0]["merchant"] = SINGLE_ROW_MERCHANT
                req["features"] = feats
                req["truth"] = ["fraud" if rng.random() < _sigmoid(_fraud_score(f)) else "legit" for f in feats]
                noise = 0.8 if served == "champion" else 1.4
                req["rows"] = _request_rows(req, feats, served, rng, noise, "payments", "fraud_classifier")
                rows += req["rows"]
                requests.append(req)
                (champion_reqs if served == "champion" else challenger_reqs).append(req)
        if hour != 1:   # shadows in hours 1 and 3 only: no CONSECUTIVE row for the shadow in hour 3
            mirrored = [r for r in champion_reqs if len(r["rows"]) == 1 and not r.get("no_mirror")][30:38]
            for req in mirrored:
                shadow_req = dict(req, timestamp=req["timestamp"] + 1500)
                rows += _request_rows(shadow_req, req["features"], "shadow", rng, 1.0, "payments",
                                      "fraud_classifier", is_shadow=True)
        for k in range(4):  # failed requests: dropped by the filter status_code = 200
            n += 1
            served = "champion" if k < 3 else "challenger"
            f = _payments_features(rng, hour)
            f["amount"] = 5000.0
            req = {"request_id": f"req-{n:05d}", "client_request_id": f"cli-{n:05d}", "hour": hour}
            error_requests.append(req)
            rows.append({
                "request_id": req["request_id"], "client_request_id": req["client_request_id"],
                "row_index": 0, "timestamp": base + _offset_us(rng), "endpoint": "payments",
                "served_model": served, "model_name": "fraud_classifier",
                "model_version": MODEL_VERSION[served], "is_shadow": False, "status_code": 500,
                "error": "model execution failed: simulated", "latency_ms": 1.5, **f,
                "prediction": None, "probabilities": None,
            })

    labels: list[dict] = []
    lrng = np.random.default_rng(seed + 1)
    by_crid_done = 0
    special = {}
    for req in requests:
        truth = req["truth"][0]
        if req["hour"] == 1 and req["served"] == "challenger":
            continue                                           # no labels: quality NULL there
        if req.get("no_mirror"):                               # the single-row slice is labelled
            labels.append({"request_id": req["request_id"], "client_request_id": None, "label": truth,
                           "label_value": None, "timestamp": _label_time(lrng, 1)})
            continue
        u = lrng.random()
        if u < 0.62:
            labels.append({"request_id": req["request_id"], "client_request_id": None, "label": truth,
                           "label_value": None, "timestamp": _label_time(lrng, int(lrng.integers(1, 3)))})
            if "twice" not in special and req["served"] == "champion":
                special["twice"] = req                         # an older, different label first
                labels.append({"request_id": req["request_id"], "client_request_id": None,
                               "label": "legit" if truth == "fraud" else "fraud", "label_value": None,
                               "timestamp": START_US + 5 * HOUR_US})
            elif "rid_over_crid" not in special and req["client_request_id"] and req["hour"] == 2:
                special["rid_over_crid"] = req                 # a newer client_request_id label loses
                labels.append({"request_id": None, "client_request_id": req["client_request_id"],
                               "label": "legit" if truth == "fraud" else "fraud", "label_value": None,
                               "timestamp": START_US + 60 * HOUR_US})
        elif req["client_request_id"] and by_crid_done < 3 and req["served"] == "champion":
            by_crid_done += 1
            labels.append({"request_id": None, "client_request_id": req["client_request_id"], "label": truth,
                           "label_value": None, "timestamp": _label_time(lrng, 1)})
    assert by_crid_done == 3 and len(special) == 2
    labels.append({"request_id": "req-does-not-exist", "client_request_id": None, "label": "fraud",
                   "label_value": None, "timestamp": _label_time(lrng, 1)})
    labels.append({"request_id": error_requests[0]["request_id"], "client_request_id": None, "label": "fraud",
                   "label_value": None, "timestamp": _label_time(lrng, 1)})
    return rows, labels


def payments_baseline(seed: int = BASELINE_SEED, n: int = 500) -> pa.Table:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        f = {
            "amount": _amount(rng) if i % 40 else round(float(rng.uniform(1100.0, 3000.0)), 2),
            "shifted": float(rng.normal(0.0, 1.0)),
            "stable": round(float(rng.normal(10.0, 2.0)), 1),
            "all_null": None,
            "constant": 5.0,
            "gappy": _gappy(rng, 0),
            "merchant": _merchant(rng, BASELINE_MERCHANTS, np.array([18, 15, 12, 10, 8, 7, 6, 5, 5, 3, 3, 6.0])),
        }
        pred, _ = _classify(rng, f, 0.8)
        rows.append({**f, "prediction": pred})
    schema = pa.schema([pa.field(c, pa.float64()) for c in PAYMENTS_FEATURES]
                       + [pa.field("merchant", pa.string()), pa.field("prediction", pa.string())])
    return _rows_table(rows, schema)


def write_payments(root: Path) -> dict:
    rows, labels = payments_rows()
    table_dir = root / PAYMENTS
    part = table_dir / f"date={DAY}"
    _append(_rows_table(rows, PAYMENTS_SCHEMA), table_dir, DAY)
    # A temp file as the gateway leaves it mid-write: valid Parquet, hidden name; never read.
    rng = np.random.default_rng(5)
    hidden = []
    for k in range(50):
        f = _payments_features(rng, 0)
        f["amount"] = 7777.0
        req = {"request_id": f"hidden-{k}", "client_request_id": None, "timestamp": START_US + _offset_us(rng)}
        hidden += _request_rows(req, [f], "champion", rng, 0.8, "payments", "fraud_classifier")
    _write(_rows_table(hidden, PAYMENTS_SCHEMA), part / ".part-00099.parquet.tmp")
    # the same rows in a visible Parquet file that no commit added: only the log says it is not data
    _write(_rows_table(hidden, PAYMENTS_SCHEMA), part / "part-99999-uncommitted.parquet")
    labels_dir = root / f"{PAYMENTS}_labels"
    _write_labels(labels, labels_dir)
    baseline = _write(payments_baseline(), root / f"{PAYMENTS}_baseline.parquet")
    return {"table": table_dir, "labels": labels_dir, "baseline": baseline}


def write_payments_increment(table_dir: Path, seed: int = INCREMENT_SEED) -> Path:
    """One more file in the last hour only: champion, challenger, shadow and a 500 row, one new
    merchant ("initrode") and one new "amount > 1000" row."""
    rng = np.random.default_rng(seed)
    base = WINDOW_STARTS_US[HOURS - 1]
    rows = []
    for k in range(28):
        served = "champion" if k < 20 else "challenger"
        f = _payments_features(rng, HOURS - 1)
        if k in (3, 4):
            f["merchant"] = INCREMENT_MERCHANT
        if k == 5:
            f["amount"] = 2222.22
        req = {"request_id": f"inc-{k:03d}", "client_request_id": None, "timestamp": base + _offset_us(rng)}
        rows += _request_rows(req, [f], served, rng, 0.8, "payments", "fraud_classifier")
        if k < 2:
            rows += _request_rows(dict(req, timestamp=req["timestamp"] + 1500), [f], "shadow", rng, 1.0,
                                  "payments", "fraud_classifier", is_shadow=True)
    f = _payments_features(rng, HOURS - 1)
    rows.append({"request_id": "inc-err", "client_request_id": None, "row_index": 0,
                 "timestamp": base + _offset_us(rng), "endpoint": "payments", "served_model": "champion",
                 "model_name": "fraud_classifier", "model_version": "1", "is_shadow": False,
                 "status_code": 500, "error": "model execution failed: simulated", "latency_ms": 2.0,
                 **f, "prediction": None, "probabilities": None})
    return _append(_rows_table(rows, PAYMENTS_SCHEMA), table_dir, DAY)


# --------------------------------------------------------------------------------------------
# eta: regression
# --------------------------------------------------------------------------------------------

def _eta_features(rng: np.random.Generator) -> dict:
    return {"distance": round(float(rng.gamma(2.0, 4.0)), 3), "load": round(float(rng.uniform(0.0, 1.0)), 2)}


def _eta_predict(rng: np.random.Generator, f: dict, served: str) -> float:
    a, b, c = (4.0, 1.8, 12.0) if served == "champion" else (6.0, 1.6, 9.0)
    return float(a + b * f["distance"] + c * f["load"] + rng.normal(0.0, 2.0))


def eta_rows(seed: int = ETA_SEED) -> tuple[list[dict], list[dict]]:
    rng = np.random.default_rng(seed)
    rows, labels, n = [], [], 0
    lrng = np.random.default_rng(seed + 1)
    zero_done = na_done = crid_done = False
    for hour in range(HOURS):
        base = WINDOW_STARTS_US[hour]
        challenger_labelled = 0
        for served, count in (("champion", 60), ("challenger", 20)):
            for k in range(count):
                n += 1
                f = _eta_features(rng)
                rid, crid = f"eta-{n:05d}", (f"ecli-{n:05d}" if k % 3 == 0 else None)
                ts = base + _offset_us(rng)
                pred = _eta_predict(rng, f, served)
                rows.append({"request_id": rid, "client_request_id": crid, "row_index": 0, "timestamp": ts,
                             "endpoint": "eta", "served_model": served, "model_name": "delivery_time",
                             "model_version": MODEL_VERSION[served], "is_shadow": False, "status_code": 200,
                             "error": None, "latency_ms": round(float(rng.uniform(5.0, 100.0)), 3), **f,
                             "prediction": pred})
                truth = round(float(5.0 + 2.0 * f["distance"] + 10.0 * f["load"] + rng.normal(0.0, 3.0)), 3)
                if served == "challenger" and hour == 1:
                    if challenger_labelled:
                        continue          # exactly one labelled row: r2_score NULL (n < 2)
                    challenger_labelled += 1
                elif lrng.random() >= 0.7:
                    continue
                lab = {"request_id": rid, "client_request_id": None, "label": f"{truth:.3f}",
                       "label_value": truth, "timestamp": _label_time(lrng, 1)}
                if served == "champion" and hour == 0 and not zero_done:
                    zero_done = True      # MAPE with a zero target
                    lab.update(label="0", label_value=0.0)
                elif served == "champion" and hour == 2 and not na_done:
                    na_done = True        # a label that is not a number: not used for regression
                    lab.update(label="n/a", label_value=None)
                elif crid and not crid_done:
                    crid_done = True
                    lab.update(request_id=None, client_request_id=crid)
                labels.append(lab)
        for k in range(3):
            n += 1
            f = _eta_features(rng)
            rows.append({"request_id": f"eta-{n:05d}", "client_request_id": None, "row_index": 0,
                         "timestamp": base + _offset_us(rng), "endpoint": "eta", "served_model": "champion",
                         "model_name": "delivery_time", "model_version": "1", "is_shadow": False,
                         "status_code": 500, "error": "model execution failed: simulated",
                         "latency_ms": 1.0, **f, "prediction": None})
    assert zero_done and na_done and crid_done
    return rows, labels


def write_eta(root: Path) -> dict:
    rows, labels = eta_rows()
    table_dir = root / ETA
    _append(_rows_table(rows, ETA_SCHEMA), table_dir, DAY)
    labels_dir = root / f"{ETA}_labels"
    _write_labels(labels, labels_dir)
    rng = np.random.default_rng(BASELINE_SEED + 1)
    brows = []
    for _ in range(400):
        f = _eta_features(rng)
        brows.append({**f, "prediction": _eta_predict(rng, f, "champion")})
    schema = pa.schema([pa.field(c, pa.float64()) for c in ETA_FEATURES] + [pa.field("prediction", pa.float64())])
    baseline = _write(_rows_table(brows, schema), root / f"{ETA}_baseline.parquet")
    return {"table": table_dir, "labels": labels_dir, "baseline": baseline}


# --------------------------------------------------------------------------------------------
# triage: classification with three classes (multiclass ROC AUC)
# --------------------------------------------------------------------------------------------

def _triage_probs(rng: np.random.Generator, x1: float) -> list:
    logits = np.array([1.2 * x1, 0.3, -1.2 * x1]) + rng.normal(0.0, 0.7, 3)
    e = np.exp(logits - logits.max())
    p = e / e.sum()
    return [(c, float(v)) for c, v in zip(TRIAGE_CLASSES, p)]


def triage_rows(seed: int = TRIAGE_SEED) -> tuple[list[dict], list[dict]]:
    rng = np.random.default_rng(seed)
    lrng = np.random.default_rng(seed + 1)
    rows, labels, n = [], [], 0
    for hour in range(HOURS):
        base = WINDOW_STARTS_US[hour]
        for k in range(50):
            n += 1
            x1 = float(rng.normal(0.0, 1.0))
            probs = _triage_probs(rng, x1)
            pred = max(probs, key=lambda kv: kv[1])[0]
            rid = f"tri-{n:05d}"
            rows.append({"request_id": rid, "client_request_id": None, "row_index": 0,
                         "timestamp": base + _offset_us(rng), "endpoint": "triage", "served_model": "triage-v1",
                         "model_name": "triage", "model_version": "1", "is_shadow": False, "status_code": 200,
                         "error": None, "latency_ms": round(float(rng.uniform(5.0, 50.0)), 3), "x1": x1,
                         "prediction": pred, "probabilities": probs})
            p_true = np.array([v for _, v in _triage_probs(rng, x1)])
            truth = TRIAGE_CLASSES[int(rng.choice(3, p=p_true))]
            if hour == 1 and truth == "high":
                continue          # hour 2: "high" never occurs in y_true -> multiclass ROC AUC NULL
            if lrng.random() < 0.85:
                labels.append({"request_id": rid, "client_request_id": None, "label": truth,
                               "label_value": None, "timestamp": _label_time(lrng, 1)})
    return rows, labels


def write_triage(root: Path) -> dict:
    rows, labels = triage_rows()
    table_dir = root / TRIAGE
    _append(_rows_table(rows, TRIAGE_SCHEMA), table_dir, DAY)
    labels_dir = root / f"{TRIAGE}_labels"
    _write_labels(labels, labels_dir)
    rng = np.random.default_rng(BASELINE_SEED + 2)
    brows = []
    for _ in range(300):
        x1 = float(rng.normal(0.0, 1.0))
        probs = _triage_probs(rng, x1)
        brows.append({"x1": x1, "prediction": max(probs, key=lambda kv: kv[1])[0]})
    schema = pa.schema([pa.field("x1", pa.float64()), pa.field("prediction", pa.string())])
    baseline = _write(_rows_table(brows, schema), root / f"{TRIAGE}_baseline.parquet")
    return {"table": table_dir, "labels": labels_dir, "baseline": baseline}


def write_all(root: Path) -> dict[str, dict]:
    """Writes every fixture under root; returns {table name: {"table", "labels", "baseline"}}."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return {PAYMENTS: write_payments(root), ETA: write_eta(root), TRIAGE: write_triage(root)}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUTDIR", file=sys.stderr)
        return 2
    paths = write_all(Path(argv[1]))
    for name, p in paths.items():
        print(f"{name}: table {p['table']}  labels {p['labels']}  baseline {p['baseline']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
