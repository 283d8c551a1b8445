"""Process contract: the ports file means "ready", ports are ephemeral, SIGTERM stops it.

Starts its own second gateway (the session one keeps running, which also shows two instances
on ephemeral ports coexist)."""
from __future__ import annotations

import signal
import subprocess

from sluice_support import (
    answered_by, assert_predictions_match, batch_of, get, manifest, post_json, predict_bodies,
    read_tail, start_sluice, stop_sluice,
)


def test_ports_file_means_ready_and_sigterm_stops(sluice, reference, tmp_path):
    proc, ports, log_path = start_sluice(tmp_path / "second")
    try:
        assert len({ports["http"], ports["grpc"], ports["admin"]}) == 3, ports
        assert all(p > 0 for p in ports.values() if isinstance(p, int)), ports
        assert ports["http"] != sluice.ports["http"], (ports, sluice.ports)
        base = f"http://127.0.0.1:{ports['http']}"
        # No waiting: once the ports file exists the models must be loaded.
        r = get(f"{base}/v2/health/ready")
        assert r.status == 200, r.describe()
        x = batch_of("fraud_classifier", 4)
        r = post_json(f"{base}/predict",
                      predict_bodies(manifest("fraud_classifier")["features"], x)["dataframe_split"])
        assert r.status == 200, r.describe()
        _, _, version = answered_by(r, "fraud")
        assert_predictions_match(r.json()["predictions"], reference.predictions("fraud_classifier", version, x))
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            raise AssertionError("sluice still running 20 s after SIGTERM\n" + read_tail(log_path)) from None
        assert rc in (0, -signal.SIGTERM, 128 + signal.SIGTERM), f"exit status {rc}\n{read_tail(log_path)}"
    finally:
        stop_sluice(proc, grace=5)
