"""Error contract over plain HTTP: status codes and {"error": "..."} bodies; the gateway keeps
serving afterwards."""
from __future__ import annotations

import json

import numpy as np
import pytest

from sluice_support import (
    answered_by, assert_json_error, assert_predictions_match, batch_of, fixture_matrix, get, manifest,
    post_json, post_raw, predict_bodies,
)

FRAUD_FEATURES = manifest("fraud_classifier")["features"]
PREDICT_PATHS = ["/predict", "/endpoints/fraud/predict", "/serving-endpoints/fraud/invocations"]


def fraud_rows(n=2):
    return batch_of("fraud_classifier", n).astype(float).tolist()


def v2_json(shape, data, datatype="FP32", name="input"):
    return {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}


# ---------------------------------------------------------------------------------------------
# malformed bodies
# ---------------------------------------------------------------------------------------------

MALFORMED = [b'{"dataframe_split": {"columns": ["amount"], "data": [[1.0]]', b"not json at all", b"",
             b'{"instances": [[1.0, 2.0,]]}']


@pytest.mark.parametrize("path", PREDICT_PATHS + ["/v2/models/fraud_classifier/infer"])
@pytest.mark.parametrize("body", MALFORMED, ids=["truncated", "text", "empty", "trailing_comma"])
def test_malformed_json_is_400(sluice, path, body):
    assert_json_error(post_raw(sluice.http + path, body), 400)


@pytest.mark.parametrize("body", [[1, 2, 3], "instances", 42, None], ids=["array", "string", "number", "null"])
def test_predict_body_not_an_object_is_400(sluice, body):
    assert_json_error(post_json(f"{sluice.http}/endpoints/fraud/predict", body), 400)


# ---------------------------------------------------------------------------------------------
# /predict format keys and features
# ---------------------------------------------------------------------------------------------

def test_two_format_keys_is_400(sluice):
    bodies = predict_bodies(FRAUD_FEATURES, batch_of("fraud_classifier", 2))
    combos = [("dataframe_split", "instances_arrays"), ("dataframe_records", "inputs_columnar"),
              ("instances_objects", "inputs_rows"), ("dataframe_split", "dataframe_records")]
    for a, b in combos:
        body = {**bodies[a], **bodies[b]}
        assert len(body) == 2
        for path in PREDICT_PATHS:
            assert_json_error(post_json(sluice.http + path, body), 400)


def test_no_format_key_is_400(sluice):
    for body in ({}, {"data": fraud_rows()}, {"columns": FRAUD_FEATURES, "data": fraud_rows()}):
        assert_json_error(post_json(f"{sluice.http}/endpoints/fraud/predict", body), 400)


def test_unknown_feature_is_400_and_named(sluice):
    rows = fraud_rows()
    bogus = "bogus_feature_xyz"
    records = [dict(zip(FRAUD_FEATURES, r), **{bogus: 1.0}) for r in rows]
    bodies = {
        "dataframe_split": {"dataframe_split": {"columns": FRAUD_FEATURES + [bogus],
                                                "data": [r + [1.0] for r in rows]}},
        "dataframe_records": {"dataframe_records": records},
        "instances_objects": {"instances": records},
        "inputs_columnar": {"inputs": {**{f: [r[i] for r in rows] for i, f in enumerate(FRAUD_FEATURES)},
                                       bogus: [1.0] * len(rows)}},
    }
    for fmt, body in bodies.items():
        r = post_json(f"{sluice.http}/endpoints/fraud/predict", body)
        assert_json_error(r, 400, mentions=bogus)


def test_unknown_feature_replacing_a_known_one_is_400(sluice):
    rows = fraud_rows()
    cols = ["amout"] + FRAUD_FEATURES[1:]  # typo of "amount"
    r = post_json(f"{sluice.http}/endpoints/fraud/predict",
                  {"dataframe_split": {"columns": cols, "data": rows}})
    assert_json_error(r, 400, mentions="amout")


def test_missing_feature_is_400(sluice):
    rows = fraud_rows()
    missing = "merchant_risk"
    keep = [f for f in FRAUD_FEATURES if f != missing]
    idx = [FRAUD_FEATURES.index(f) for f in keep]
    records = [{f: r[FRAUD_FEATURES.index(f)] for f in keep} for r in rows]
    bodies = {
        "dataframe_split": {"dataframe_split": {"columns": keep, "data": [[r[i] for i in idx] for r in rows]}},
        "dataframe_records": {"dataframe_records": records},
        "instances_objects": {"instances": records},
        "inputs_columnar": {"inputs": {f: [r[FRAUD_FEATURES.index(f)] for r in rows] for f in keep}},
        "instances_short_rows": {"instances": [r[:-1] for r in rows]},
        "inputs_short_rows": {"inputs": [r[:-1] for r in rows]},
    }
    for fmt, body in bodies.items():
        assert_json_error(post_json(f"{sluice.http}/endpoints/fraud/predict", body), 400)


def test_bad_values_are_400(sluice):
    rows = fraud_rows()
    bad = [
        {"dataframe_split": {"columns": FRAUD_FEATURES, "data": [["abc"] + rows[0][1:]]}},
        {"dataframe_records": [dict(zip(FRAUD_FEATURES, rows[0]), amount="12.5 EUR")]},
        {"instances": [rows[0], rows[1][:5]]},                               # ragged rows
        {"instances": [rows[0] + [1.0]]},                                    # too many values
        {"dataframe_split": {"columns": FRAUD_FEATURES, "data": [rows[0][:7]]}},
        {"inputs": {f: [1.0, 2.0] if f != "amount" else [1.0] for f in FRAUD_FEATURES}},  # ragged columns
    ]
    for body in bad:
        r = post_json(f"{sluice.http}/endpoints/fraud/predict", body)
        assert_json_error(r, 400)


def test_mlp_wrong_width_is_400(sluice):
    x = batch_of("mlp", 2)
    for body in ({"instances": x[:, :63].astype(float).tolist()}, {"inputs": x[:, :10].astype(float).tolist()}):
        assert_json_error(post_json(f"{sluice.http}/endpoints/mlp/predict", body), 400)


# ---------------------------------------------------------------------------------------------
# V2 shape / dtype / name errors
# ---------------------------------------------------------------------------------------------

def test_v2_wrong_shape_or_dtype_is_400(sluice):
    url = f"{sluice.http}/v2/models/fraud_classifier/versions/1/infer"
    row = fraud_rows(1)[0]
    bad = {
        "seven_columns": v2_json([1, 7], row[:7]),
        "rank_1": v2_json([8], row),
        "rank_3": v2_json([1, 1, 8], row),
        "data_shorter_than_shape": v2_json([2, 8], row),
        "data_longer_than_shape": v2_json([1, 8], row + row),
        "dtype_int64": v2_json([1, 8], [int(v) for v in row], datatype="INT64"),
        "dtype_fp64": v2_json([1, 8], row, datatype="FP64"),
        "dtype_bogus": v2_json([1, 8], row, datatype="FLOAT"),
        "unknown_input_name": v2_json([1, 8], row, name="not_input"),
        "no_inputs": {"inputs": []},
        "string_data": v2_json([1, 8], ["x"] * 8),
    }
    for what, body in bad.items():
        r = post_json(url, body)
        assert r.status == 400, f"{what}: {r.describe()}"
        assert_json_error(r, 400)


def test_v2_unknown_output_is_400(sluice):
    body = v2_json([1, 8], fraud_rows(1)[0])
    body["outputs"] = [{"name": "no_such_output"}]
    r = post_json(f"{sluice.http}/v2/models/fraud_classifier/versions/1/infer", body)
    assert_json_error(r, 400)


def test_v2_binary_size_mismatch_is_400(sluice):
    x = batch_of("mlp", 2)
    raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
    for declared, payload in ((len(raw), raw[:-4]), (len(raw) - 4, raw[:-4])):
        header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 64],
                                         "parameters": {"binary_data_size": declared}}]}).encode()
        r = post_raw(f"{sluice.http}/v2/models/mlp/infer", header + payload,
                     content_type="application/octet-stream",
                     headers={"Inference-Header-Content-Length": str(len(header))})
        assert_json_error(r, 400)


def test_v2_header_length_beyond_body_is_400(sluice):
    header = json.dumps(v2_json([1, 8], fraud_rows(1)[0])).encode()
    r = post_raw(f"{sluice.http}/v2/models/fraud_classifier/versions/1/infer", header,
                 headers={"Inference-Header-Content-Length": str(len(header) + 100)})
    assert_json_error(r, 400)


# ---------------------------------------------------------------------------------------------
# unknown model / version / endpoint
# ---------------------------------------------------------------------------------------------

def test_unknown_names_are_404(sluice):
    good_v2 = json.dumps(v2_json([1, 8], fraud_rows(1)[0])).encode()
    good_predict = predict_bodies(FRAUD_FEATURES, batch_of("fraud_classifier", 1))["dataframe_split"]
    cases = [
        ("GET", "/v2/models/no_such_model", None),
        ("GET", "/v2/models/no_such_model/ready", None),
        ("GET", "/v2/models/no_such_model/config", None),
        ("POST", "/v2/models/no_such_model/infer", good_v2),
        ("GET", "/v2/models/fraud_classifier/versions/99", None),
        ("GET", "/v2/models/fraud_classifier/versions/99/ready", None),
        ("POST", "/v2/models/fraud_classifier/versions/99/infer", good_v2),
        ("POST", "/v2/models/mlp/versions/2/infer", good_v2),
        ("POST", "/endpoints/no_such_endpoint/predict", json.dumps(good_predict).encode()),
        ("POST", "/serving-endpoints/no_such_endpoint/invocations", json.dumps(good_predict).encode()),
    ]
    failures = []
    for method, path, body in cases:
        r = get(sluice.http + path) if method == "GET" else post_raw(sluice.http + path, body)
        try:
            assert_json_error(r, 404)
        except AssertionError as e:
            failures.append(str(e).splitlines()[0])
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------------------------------
# still serving
# ---------------------------------------------------------------------------------------------

def test_still_serving_after_errors(sluice, reference):
    x = fixture_matrix("fraud_classifier")
    r = post_json(f"{sluice.http}/predict", predict_bodies(FRAUD_FEATURES, x)["dataframe_split"])
    assert r.status == 200, r.describe()
    _, _, version = answered_by(r, "fraud")
    assert_predictions_match(r.json()["predictions"], reference.predictions("fraud_classifier", version, x))
    body = v2_json(list(x.shape), x.reshape(-1).astype(float).tolist())
    r = post_json(f"{sluice.http}/v2/models/fraud_classifier/versions/2/infer", body)
    assert r.status == 200, r.describe()
    outs = {o["name"]: o for o in r.json()["outputs"]}
    exp = reference.run("fraud_classifier", "2", x)
    assert outs["label"]["data"] == exp["label"].tolist()
    np.testing.assert_allclose(np.asarray(outs["probabilities"]["data"], dtype=np.float32).reshape(-1, 2),
                               exp["probabilities"], rtol=0, atol=1e-5)
