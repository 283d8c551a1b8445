"""MLflow / Databricks style /predict: every request format, every bundled model, against ORT."""
from __future__ import annotations

import json

import numpy as np
import pytest

from sluice_support import (
    DEFAULT_ENDPOINT, PIN_HEADER, answered_by, assert_predictions_match, batch_of, fixture_matrix,
    manifest, post_json, predict_bodies,
)

FRAUD_FEATURES = manifest("fraud_classifier")["features"]
DELIVERY_FEATURES = manifest("delivery_time")["features"]


def endpoint_urls(base: str, endpoint: str) -> dict[str, str]:
    urls = {
        "endpoints": f"{base}/endpoints/{endpoint}/predict",
        "databricks": f"{base}/serving-endpoints/{endpoint}/invocations",
    }
    if endpoint == DEFAULT_ENDPOINT:
        urls["default"] = f"{base}/predict"
    return urls


def predict(url: str, body: dict, headers: dict | None = None):
    r = post_json(url, body, headers=headers)
    assert r.status == 200, f"request body {json.dumps(body)[:300]}...: {r.describe()}"
    payload = r.json()
    assert isinstance(payload, dict) and "predictions" in payload, f"no 'predictions': {r.describe()}"
    return r, payload["predictions"]


def assert_sluice_headers(r, endpoint: str, pinned: str | None = None) -> str:
    """The x-sluice-* headers name a served entity of the endpoint and its version; returns the
    version, which is what the answer must be compared against."""
    return answered_by(r, endpoint, pinned)[2]


# ---------------------------------------------------------------------------------------------
# fraud: all four formats (six shapes), three URL families, batch 16 and 1
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pin", ["champion", "challenger", None], ids=["pin_champion", "pin_challenger", "split"])
@pytest.mark.parametrize("route", ["endpoints", "default", "databricks"])
@pytest.mark.parametrize("n", [16, 1])
def test_fraud_all_formats_match_reference_and_each_other(sluice, reference, route, n, pin):
    """Every format answers like onnxruntime on the version named by x-sluice-model-version.
    Pinned, every format is answered by the same model, so the answers must also be identical;
    through the split, answers are compared with each other only when the same version answered."""
    x = batch_of("fraud_classifier", n)
    url = endpoint_urls(sluice.http, "fraud")[route]
    headers = {PIN_HEADER: pin} if pin else None
    answers: dict[str, dict[str, list]] = {}  # version -> format -> predictions
    for fmt, body in predict_bodies(FRAUD_FEATURES, x).items():
        r, preds = predict(url, body, headers)
        version = assert_sluice_headers(r, "fraud", pin)
        assert_predictions_match(preds, reference.predictions("fraud_classifier", version, x),
                                 what=f"{route} {fmt} n={n} (v{version})")
        answers.setdefault(version, {})[fmt] = preds
    if pin:
        assert len(answers) == 1, f"pinned to {pin} but answered by versions {sorted(answers)}"
    for version, by_fmt in answers.items():
        first_fmt, first = next(iter(by_fmt.items()))
        for fmt, preds in by_fmt.items():
            assert preds == first, \
                f"v{version}: {fmt} answered differently from {first_fmt} for the same rows"


@pytest.mark.parametrize("pin", ["champion", "challenger"])
def test_fraud_routes_give_identical_answers(sluice, reference, pin):
    """Every URL of the fraud endpoint, pinned to one served model, and the direct served-model
    route to it, give the same answer."""
    x = fixture_matrix("fraud_classifier")
    body = predict_bodies(FRAUD_FEATURES, x)["dataframe_split"]
    answers = {}
    for route, url in endpoint_urls(sluice.http, "fraud").items():
        r, answers[route] = predict(url, body, {PIN_HEADER: pin})
        assert_sluice_headers(r, "fraud", pin)
    r, answers["direct"] = predict(f"{sluice.http}/endpoints/fraud/served-models/{pin}/predict", body)
    version = assert_sluice_headers(r, "fraud", pin)
    assert answers["default"] == answers["endpoints"] == answers["databricks"] == answers["direct"], answers
    assert_predictions_match(answers["direct"], reference.predictions("fraud_classifier", version, x))


def test_fraud_labels_are_class_labels(sluice, reference):
    x = fixture_matrix("fraud_classifier")
    r, preds = predict(f"{sluice.http}/endpoints/fraud/predict",
                       predict_bodies(FRAUD_FEATURES, x)["dataframe_split"])
    version = assert_sluice_headers(r, "fraud")
    labels = reference.run("fraud_classifier", version, x)["label"]
    class_labels = manifest("fraud_classifier")["class_labels"]
    assert [p["label"] for p in preds] == [class_labels[int(i)] for i in labels]


def test_dataframe_split_columns_in_any_order(sluice, reference):
    x = fixture_matrix("fraud_classifier")
    perm = list(reversed(range(len(FRAUD_FEATURES))))
    body = {"dataframe_split": {"columns": [FRAUD_FEATURES[i] for i in perm],
                                "data": x[:, perm].astype(float).tolist()}}
    r, preds = predict(f"{sluice.http}/endpoints/fraud/predict", body)
    version = assert_sluice_headers(r, "fraud")
    assert_predictions_match(preds, reference.predictions("fraud_classifier", version, x),
                             what=f"dataframe_split with reversed columns (v{version})")


def test_integer_json_numbers_accepted(sluice, reference):
    """Integral feature values written as JSON integers (16, not 16.0) are valid input."""
    x = fixture_matrix("fraud_classifier")
    records = [{f: (int(v) if float(v).is_integer() else float(v)) for f, v in zip(FRAUD_FEATURES, row)}
               for row in x.tolist()]
    assert any(isinstance(v, int) for v in records[0].values())
    r, preds = predict(f"{sluice.http}/endpoints/fraud/predict", {"dataframe_records": records})
    version = assert_sluice_headers(r, "fraud")
    assert_predictions_match(preds, reference.predictions("fraud_classifier", version, x),
                             what=f"dataframe_records with integer JSON numbers (v{version})")


# ---------------------------------------------------------------------------------------------
# delivery (regression): predictions are floats
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("route", ["endpoints", "databricks"])
@pytest.mark.parametrize("n", [16, 1])
def test_delivery_matches_reference(sluice, reference, route, n):
    x = batch_of("delivery_time", n)
    expected = reference.predictions("delivery_time", "1", x)
    url = endpoint_urls(sluice.http, "delivery")[route]
    answers = {}
    for fmt, body in predict_bodies(DELIVERY_FEATURES, x).items():
        r, preds = predict(url, body)
        assert_sluice_headers(r, "delivery")
        assert all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in preds), \
            f"{fmt}: regression predictions must be plain numbers: {preds[:3]!r}"
        assert_predictions_match(preds, expected, what=f"{route} {fmt} n={n}")
        answers[fmt] = preds
    first = next(iter(answers.values()))
    assert all(a == first for a in answers.values()), "formats disagree for the same rows"


# ---------------------------------------------------------------------------------------------
# mlp (classification without features and without a label output)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("route", ["endpoints", "databricks"])
@pytest.mark.parametrize("key", ["instances", "inputs"])
@pytest.mark.parametrize("n", [8, 1])
def test_mlp_matches_reference(sluice, reference, route, key, n):
    x = batch_of("mlp", n)
    expected = reference.predictions("mlp", "1", x)
    assert expected[0]["label"] == f"c{int(np.argmax(reference.run('mlp', '1', x)['probs'][0]))}"
    url = endpoint_urls(sluice.http, "mlp")[route]
    r, preds = predict(url, {key: x.astype(float).tolist()})
    assert_sluice_headers(r, "mlp")
    assert_predictions_match(preds, expected, what=f"{route} {key} n={n}")


def test_request_ids_differ_between_requests(sluice):
    body = predict_bodies(FRAUD_FEATURES, batch_of("fraud_classifier", 1))["dataframe_split"]
    ids = {predict(f"{sluice.http}/endpoints/fraud/predict", body)[0].headers.get("x-request-id")
           for _ in range(3)}
    assert None not in ids and len(ids) == 3, f"x-request-id values: {ids}"
