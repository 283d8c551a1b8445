"""Concurrent requests (which the gateway may batch together) each get their own rows' answers."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tritonclient.grpc as grpcclient

from sluice_support import (
    answered_by, assert_predictions_match, assert_tensor_matches, batch_of, manifest, post_json,
    predict_bodies,
)

FRAUD_FEATURES = manifest("fraud_classifier")["features"]


def _rows(model: str, k: int, n: int) -> np.ndarray:
    """Request k's rows: n rows starting at a k-dependent offset (so requests differ)."""
    x = batch_of(model, 32)
    idx = [(k + i) % len(x) for i in range(n)]
    out = x[idx].copy()
    out[:, 0] += np.float32(k) * np.float32(0.25)  # make every request's first column unique
    return out


def test_concurrent_predict_and_v2_http(sluice, reference):
    jobs = []
    for k in range(48):
        n = 1 + k % 5
        kind = k % 3
        jobs.append((k, n, kind))

    def one(job):
        k, n, kind = job
        if kind == 0:
            x = _rows("fraud_classifier", k, n)
            r = post_json(f"{sluice.http}/endpoints/fraud/predict",
                          predict_bodies(FRAUD_FEATURES, x)["dataframe_split"])
            assert r.status == 200, r.describe()
            _, _, version = answered_by(r, "fraud")
            assert_predictions_match(r.json()["predictions"],
                                     reference.predictions("fraud_classifier", version, x),
                                     what=f"job {k} (v{version})")
        elif kind == 1:
            x = _rows("mlp", k, n)
            r = post_json(f"{sluice.http}/endpoints/mlp/predict", {"instances": x.astype(float).tolist()})
            assert r.status == 200, r.describe()
            assert_predictions_match(r.json()["predictions"], reference.predictions("mlp", "1", x),
                                     what=f"job {k}")
        else:
            x = _rows("mlp", k, n)
            body = {"id": f"job-{k}", "inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                                  "data": x.reshape(-1).astype(float).tolist()}]}
            r = post_json(f"{sluice.http}/v2/models/mlp/infer", body)
            assert r.status == 200, r.describe()
            resp = json.loads(r.body)
            assert resp.get("id") == f"job-{k}", resp
            out = {o["name"]: o for o in resp["outputs"]}["probs"]
            got = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
            assert_tensor_matches(got, reference.run("mlp", "1", x)["probs"], "probs")
        return k

    with ThreadPoolExecutor(max_workers=8) as pool:
        done = list(pool.map(one, jobs))
    assert done == [j[0] for j in jobs]


def test_concurrent_grpc_versions(sluice, reference):
    client = grpcclient.InferenceServerClient(sluice.grpc)
    try:
        def one(k):
            version = "123"[k % 3]
            x = _rows("fraud_classifier", k, 1 + k % 4)
            inp = grpcclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            res = client.infer("fraud_classifier", [inp], model_version=version, request_id=f"g{k}",
                               client_timeout=30)
            assert res.get_response().id == f"g{k}"
            exp = reference.run("fraud_classifier", version, x)
            for name in ("label", "probabilities"):
                assert_tensor_matches(res.as_numpy(name), exp[name], name)
            return k

        with ThreadPoolExecutor(max_workers=8) as pool:
            assert list(pool.map(one, range(32))) == list(range(32))
    finally:
        client.close()
