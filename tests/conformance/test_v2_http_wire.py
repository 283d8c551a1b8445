"""KServe V2 HTTP at the byte level: the request shapes perf_analyzer and other clients send
(see shared/reference/v2-clients.md), parsed back with tritonclient's own response decoder."""
from __future__ import annotations

import json

import numpy as np
import pytest
from tritonclient.http import InferResult

from sluice_support import SIGNATURES, assert_tensor_matches, batch_of, get, http, post_raw


def decode(resp) -> InferResult:
    assert resp.status == 200, resp.describe()
    hl = resp.headers.get("inference-header-content-length")
    return InferResult.from_response_body(resp.body, header_length=int(hl) if hl is not None else None)


def binary_request(model, x, outputs, binary_out=True, request_id=None, top_params=None):
    raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
    header = {}
    if request_id is not None:
        header["id"] = request_id
    header["inputs"] = [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                         "parameters": {"binary_data_size": len(raw)}}]
    if outputs is not None:
        header["outputs"] = [{"name": o, "parameters": {"binary_data": binary_out}} for o in outputs]
    if top_params is not None:
        header["parameters"] = top_params
    h = json.dumps(header, separators=(",", ":")).encode()
    return h, raw


def check(result: InferResult, reference, model, version, x, names=None):
    exp = reference.run(model, version, x)
    names = list(exp) if names is None else names
    got = [o["name"] for o in result.get_response()["outputs"]]
    assert sorted(got) == sorted(names), f"outputs {got}, expected {names}"
    for n in names:
        assert_tensor_matches(result.as_numpy(n), exp[n], n)


@pytest.mark.parametrize("content_type", ["application/octet-stream", None])
@pytest.mark.parametrize("n", [1, 4])
def test_perf_analyzer_binary_request(sluice, reference, content_type, n):
    """perf_analyzer: `"id":""`, binary input, binary outputs, Content-Type octet-stream
    (tritonclient: no Content-Type at all)."""
    x = batch_of("mlp", n)
    h, raw = binary_request("mlp", x, ["probs"], request_id="")
    resp = post_raw(f"{sluice.http}/v2/models/mlp/infer", h + raw, content_type=content_type,
                    headers={"Inference-Header-Content-Length": str(len(h))})
    assert "inference-header-content-length" in resp.headers, \
        f"binary output asked but no Inference-Header-Content-Length: {resp.describe()}"
    check(decode(resp), reference, "mlp", "1", x)


def test_perf_analyzer_versioned_url(sluice, reference):
    """perf_analyzer -x 2: every URL becomes /v2/models/M/versions/V/..."""
    x = batch_of("fraud_classifier", 4)
    base = f"{sluice.http}/v2/models/fraud_classifier/versions/2"
    assert get(f"{base}/ready").status == 200
    md = get(base)
    assert md.status == 200 and md.json()["name"] == "fraud_classifier", md.describe()
    h, raw = binary_request("fraud_classifier", x, ["label", "probabilities"], request_id="")
    resp = post_raw(f"{base}/infer", h + raw, content_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(h))})
    check(decode(resp), reference, "fraud_classifier", "2", x)


def test_json_mode_with_header_length_equal_to_body(sluice, reference):
    """perf_analyzer --input/output-tensor-format json: Content-Type application/json and still an
    Inference-Header-Content-Length equal to the whole body length."""
    x = batch_of("mlp", 2)
    body = json.dumps({
        "id": "",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                    "data": x.reshape(-1).astype(float).tolist()}],
        "outputs": [{"name": "probs", "parameters": {"binary_data": False}}],
    }).encode()
    resp = post_raw(f"{sluice.http}/v2/models/mlp/infer", body, content_type="application/json",
                    headers={"Inference-Header-Content-Length": str(len(body))})
    result = decode(resp)
    assert "data" in result.get_output("probs"), resp.describe()
    check(result, reference, "mlp", "1", x)


def test_binary_data_output_top_level(sluice, reference):
    """tritonclient with no outputs listed: top-level parameters.binary_data_output = true."""
    x = batch_of("fraud_classifier", 3)
    h, raw = binary_request("fraud_classifier", x, None, top_params={"binary_data_output": True})
    resp = post_raw(f"{sluice.http}/v2/models/fraud_classifier/versions/1/infer", h + raw,
                    content_type=None, headers={"Inference-Header-Content-Length": str(len(h))})
    result = decode(resp)
    for name in ("label", "probabilities"):
        size = (result.get_output(name).get("parameters") or {}).get("binary_data_size")
        assert isinstance(size, int) and size > 0, f"{name}: {result.get_output(name)}"
    check(result, reference, "fraud_classifier", "1", x)


def test_plain_json_no_outputs(sluice, reference):
    """A plain JSON V2 request with no outputs listed answers every output as JSON data."""
    x = batch_of("delivery_time", 5)
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                        "data": x.reshape(-1).astype(float).tolist()}]}
    resp = post_raw(f"{sluice.http}/v2/models/delivery_time/infer", json.dumps(body).encode())
    result = decode(resp)
    out = result.get_output("variable")
    assert out is not None and "data" in out, resp.describe()
    assert out["datatype"] == "FP32" and out["shape"] == [5, 1], out
    check(result, reference, "delivery_time", "1", x)


def test_http_request_id_echoed_in_json(sluice):
    x = batch_of("mlp", 1)
    body = {"id": "wire-id-42", "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                                             "data": x.reshape(-1).astype(float).tolist()}]}
    resp = post_raw(f"{sluice.http}/v2/models/mlp/infer", json.dumps(body).encode())
    assert resp.status == 200, resp.describe()
    assert decode(resp).get_response().get("id") == "wire-id-42", resp.describe()


@pytest.mark.parametrize("model", list(SIGNATURES))
def test_metadata_and_config_endpoints_are_json(sluice, model):
    for path in (f"/v2/models/{model}", f"/v2/models/{model}/config", "/v2"):
        r = http("GET", sluice.http + path)
        assert r.status == 200, r.describe()
        assert isinstance(r.json(), dict), r.describe()
    r = get(f"{sluice.http}/v2/models/{model}/ready")
    assert r.status == 200, r.describe()
    for path in ("/v2/health/live", "/v2/health/ready"):
        r = get(sluice.http + path)
        assert r.status == 200, r.describe()


def test_stats_shape_for_perf_analyzer(sluice):
    """"statistics" is advertised, and /stats carries every member perf_analyzer reads."""
    ext = get(f"{sluice.http}/v2").json().get("extensions", [])
    assert "statistics" in ext, f"/v2 does not advertise the statistics extension: {ext}"
    r = get(f"{sluice.http}/v2/models/mlp/stats")
    assert r.status == 200, r.describe()
    stats = r.json()["model_stats"]
    assert stats, r.describe()
    for e in stats:
        assert isinstance(e["name"], str) and isinstance(e["version"], str), e
        for k in ("inference_count", "execution_count"):
            assert isinstance(e[k], int), (k, e)
        for k in ("success", "queue", "compute_input", "compute_infer", "compute_output",
                  "cache_hit", "cache_miss"):
            d = e["inference_stats"][k]
            assert isinstance(d["count"], int) and isinstance(d["ns"], int), (k, e)
        s = e["inference_stats"]
        assert s["compute_input"]["count"] == s["compute_infer"]["count"] == s["compute_output"]["count"], e
