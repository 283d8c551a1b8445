#!/usr/bin/env python3
"""Monitor throughput: one refresh of a large inference table through `sluice monitor run`, and
the same data through Evidently's data drift report, in one run on one machine.

    python scripts/bench-monitor.py [--rows 10000000] [--features 10] [--sluice target/release/sluice]
                                    [--evidently-python /path/to/venv/bin/python] [--workdir DIR]

Writes a synthetic inference table in the gateway's layout (one day, one served model, `--rows`
rows x `--features` FLOAT64 features, the last feature shifted in the second half of the day)
and a 100k-row baseline. Then, each under `/usr/bin/time -v` (peak RSS):
  1. `sluice monitor run` with granularities ["1 day"] against the baseline: profile + drift for
     every feature, per model and for all models;
  2. Evidently's `DataDriftPreset` report over the same features, reference = the baseline,
     current = the whole table (read from the same Parquet files).
Prints rows per second, wall time and peak memory of both, and their ratio. With the default
`max_exact_values` (100000) the monitor computes quantiles, KS and Wasserstein of the 10M-row
window on a seeded 100k sample; `--max-exact-values 20000000` keeps every value, as Evidently does.
Needs numpy and pyarrow here; Evidently (and pandas) in the Python given by --evidently-python.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DAY_US = 86_400_000_000
T0_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def write_table(root: Path, rows: int, features: int, seed: int = 7) -> Path:
    table = root / "bench"
    part_dir = table / "date=2026-01-01"
    part_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per_file = 1_000_000
    for f, start in enumerate(range(0, rows, per_file)):
        n = min(per_file, rows - start)
        idx = np.arange(start, start + n)
        ts = T0_US + (idx * (DAY_US // rows))
        cols = {
            "request_id": pa.array([f"r{i}" for i in idx]),
            "row_index": pa.array(np.zeros(n, dtype=np.int64)),
            "timestamp": pa.array(ts, type=pa.timestamp("us", tz="UTC")),
            "served_model": pa.array(["champion"] * n),
            "model_version": pa.array(["1"] * n),
            "is_shadow": pa.array(np.zeros(n, dtype=bool)),
            "status_code": pa.array(np.full(n, 200, dtype=np.uint16)),
            "latency_ms": pa.array(rng.gamma(2.0, 0.5, n)),
        }
        for k in range(features):
            x = rng.normal(10.0 * k, 1.0 + k, n)
            if k == features - 1:
                x = np.where(idx >= rows // 2, x + 0.5 * (1.0 + k), x)
            cols[f"f{k}"] = pa.array(x)
        cols["prediction"] = pa.array(np.where(rng.random(n) < 0.1, "fraud", "legit"))
        pq.write_table(pa.table(cols), part_dir / f"part-{f:05d}.parquet", compression="zstd", row_group_size=131072)
    return table


def write_baseline(root: Path, features: int, n: int = 100_000, seed: int = 11) -> Path:
    rng = np.random.default_rng(seed)
    cols = {f"f{k}": rng.normal(10.0 * k, 1.0 + k, n) for k in range(features)}
    cols["prediction"] = np.where(rng.random(n) < 0.1, "fraud", "legit")
    path = root / "baseline.parquet"
    pq.write_table(pa.table(cols), path)
    return path


def timed(cmd, env=None):
    """Runs cmd under /usr/bin/time -v; returns (wall seconds, peak RSS MiB, stdout)."""
    t = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    return wall, (int(m.group(1)) / 1024 if m else float("nan")), p.stdout


EVIDENTLY = r"""
import sys, glob, time
import pyarrow.parquet as pq, pyarrow as pa
table, baseline, features = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
cur = pa.concat_tables([pq.read_table(f, columns=features) for f in sorted(glob.glob(table + "/*/*.parquet"))]).to_pandas()
ref = pq.read_table(baseline, columns=features).to_pandas()
try:
    from evidently import Report, Dataset, DataDefinition
    from evidently.presets import DataDriftPreset
    dd = DataDefinition(numerical_columns=features)
    report = Report([DataDriftPreset()])
    snap = report.run(Dataset.from_pandas(cur, data_definition=dd), Dataset.from_pandas(ref, data_definition=dd))
    out = snap.dict()
except ImportError:
    from evidently.report import Report
    from evidently.metric_preset import DataDriftPreset
    report = Report(metrics=[DataDriftPreset()])
    report.run(reference_data=ref, current_data=cur)
    out = report.as_dict()
import evidently
print("evidently", evidently.__version__, "rows", len(cur))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--features", type=int, default=10)
    ap.add_argument("--sluice", default="target/release/sluice")
    ap.add_argument("--evidently-python", default=None)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--max-exact-values", type=int, default=None,
                    help="monitor's max_exact_values (default 100000; 20000000 keeps every value)")
    a = ap.parse_args()
    root = Path(a.workdir or tempfile.mkdtemp(prefix="sluice-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    table = root / "bench"
    if not table.exists():
        table = write_table(root, a.rows, a.features)
    baseline = write_baseline(root, a.features)
    print(f"data: {a.rows} rows x {a.features} features in {table} ({time.perf_counter() - t:.0f} s to write)")
    cfg = root / "monitor.toml"
    feats = [f"f{k}" for k in range(a.features)]
    cfg.write_text(
        'granularities = ["1 day"]\n'
        f"columns = {json.dumps(feats)}\n"
        f'baseline = "{baseline}"\n'
        + (f"max_exact_values = {a.max_exact_values}\n" if a.max_exact_values else "")
    )
    out = root / "out"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    wall, rss, stdout = timed([a.sluice, "monitor", "run", "--table", str(table), "--config", str(cfg), "--out", str(out), "-o", "json"])
    report = json.loads(stdout)["report"]
    print(f"sluice monitor run: {wall:.1f} s, {report['rows_read'] / wall:,.0f} rows/s, peak RSS {rss:.0f} MiB "
          f"({report['profile_rows']} profile rows, {report['drift_rows']} drift rows)")
    if a.evidently_python:
        script = root / "evidently_run.py"
        script.write_text(EVIDENTLY)
        ewall, erss, eout = timed([a.evidently_python, str(script), str(table), str(baseline), ",".join(feats)])
        print(f"evidently DataDriftPreset: {ewall:.1f} s, {a.rows / ewall:,.0f} rows/s, peak RSS {erss:.0f} MiB ({eout.strip()})")
        print(f"ratio (Evidently time / sluice time): {ewall / wall:.2f}; memory ratio: {erss / rss:.2f}")


if __name__ == "__main__":
    main()
