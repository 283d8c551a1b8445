"""Databricks' serving-endpoints REST API, driven by Databricks' own Python SDK (`databricks-sdk`,
`WorkspaceClient(host=<sluice>, token=...)`) against a real `sluice serve`: create (and wait),
list, get, update the config (and wait) including an update whose model does not load (the SDK
raises, the endpoint says UPDATE_FAILED with the reason, the old config keeps serving), query in
every input format (with the served model from the `served-model-name` header), export metrics,
logs, OpenAPI, tags and delete; errors as the SDK's typed exceptions (`error_code`). The admin API
sees the same endpoints and one history. Hostile bodies get 400 with `error_code` and the server
keeps serving.

MLflow's scoring server protocol (`mlflow models serve`): `POST /invocations` serves the default
endpoint, `/ping` and `/version` answer, errors carry `error_code` and `message`; an endpoint with
`response_format = "mlflow"` answers `{"predictions": {<output>: [...]}}`, the shape MLflow's ONNX
pyfunc gives for tensor input (recorded from `mlflow models serve` 3.17.2 for this model:
`{"predictions": {"label": [1, 1], "probabilities": [[0.34, 0.65], ...]}}`; MLflow itself is not run
here: with dataframe input it cannot serve this model at all, its `[N, 2]` probabilities do not
fit one column), with values equal to onnxruntime's.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import numpy as np

from sluice_support import FIXTURES, MODELS, Reference, fixture_matrix, get, http, start_sluice, stop_sluice

TOKEN = "dbx-test-token-0123456789"
_ROWS = json.loads((FIXTURES / "fraud_classifier.json").read_text())
COLUMNS, DATA = _ROWS["columns"], _ROWS["data"][:3]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    root = tmp_path_factory.mktemp("dbx")
    repo = root / "models"
    shutil.copytree(MODELS / "fraud_classifier", repo / "fraud_classifier",
                    ignore=shutil.ignore_patterns("3"))
    # version 9 exists but is not a model: it passes the checks made at once and fails to load
    (repo / "fraud_classifier" / "9").mkdir()
    (repo / "fraud_classifier" / "9" / "model.onnx").write_bytes(b"not an onnx model\n" * 64)
    config = root / "sluice.toml"
    config.write_text(f"""\
[server]
data_dir = {json.dumps(str(root / "data"))}
admin_token = "{TOKEN}"
default_endpoint = "fraud"

[runtime]
model_repository = {json.dumps(str(repo))}

[[models]]
name = "fraud_classifier"
versions = [1, 2]

[[endpoints]]
name = "fraud"
served_entities = [{{ name = "champion", entity_name = "fraud_classifier", entity_version = 1 }}]
""")
    proc, ports, log = start_sluice(root / "gw", config=str(config))
    yield {"http": f"http://127.0.0.1:{ports['http']}", "admin": f"http://127.0.0.1:{ports['admin']}", "log": log}
    stop_sluice(proc)


@pytest.fixture(scope="module")
def w(gateway, tmp_path_factory):
    from databricks.sdk import WorkspaceClient
    with pytest.MonkeyPatch.context() as mp:
        import os
        for k in list(os.environ):
            if k.startswith(("DATABRICKS_", "ARM_", "AZURE_", "GOOGLE_")):
                mp.delenv(k)
        mp.setenv("HOME", str(tmp_path_factory.mktemp("home")))  # no ~/.databrickscfg
        yield WorkspaceClient(host=gateway["http"], token=TOKEN, auth_type="pat")


def entity(name: str, version: str, **extra):
    from databricks.sdk.service.serving import ServedEntityInput
    return ServedEntityInput(entity_name="fraud_classifier", entity_version=version, name=name, **extra)


def routes(**weights):
    from databricks.sdk.service.serving import Route, TrafficConfig
    return TrafficConfig(routes=[Route(served_model_name=n, traffic_percentage=p) for n, p in weights.items()])


def admin(gateway, method: str, path: str, body=None):
    data = json.dumps(body).encode() if body is not None else None
    r = http(method, gateway["admin"] + path, data,
             {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    return r.status, r.json()


def test_the_sdk_drives_an_endpoint_from_create_to_delete(w, gateway):
    from databricks.sdk.errors import NotFound, OperationFailed, ResourceAlreadyExists, ResourceDoesNotExist
    from databricks.sdk.service.serving import (DataframeSplitInput, EndpointCoreConfigInput,
                                                EndpointStateConfigUpdate, EndpointStateReady, EndpointTag)

    # create, and wait until it serves; fields that mean nothing here are kept and given back
    ep = w.serving_endpoints.create_and_wait(
        name="dbx",
        config=EndpointCoreConfigInput(
            name="dbx",
            served_entities=[entity("champion", "1", workload_size="Small", scale_to_zero_enabled=True)],
            traffic_config=routes(champion=100)),
        tags=[EndpointTag(key="team", value="risk")],
        description="fraud scores for checkout")
    assert ep.name == "dbx"
    assert ep.state.config_update == EndpointStateConfigUpdate.NOT_UPDATING
    assert ep.state.ready == EndpointStateReady.READY
    (se,) = ep.config.served_entities
    assert (se.name, se.entity_name, se.entity_version) == ("champion", "fraud_classifier", "1")
    assert (se.workload_size, se.scale_to_zero_enabled) == ("Small", True)
    assert se.state.deployment.value == "DEPLOYMENT_READY"
    assert [(r.served_model_name, r.traffic_percentage) for r in ep.config.traffic_config.routes] == [("champion", 100)]
    assert [(t.key, t.value) for t in ep.tags] == [("team", "risk")]
    assert ep.description == "fraud scores for checkout"
    assert ep.creation_timestamp and ep.last_updated_timestamp >= ep.creation_timestamp
    first_version = ep.config.config_version

    with pytest.raises(ResourceAlreadyExists):
        w.serving_endpoints.create(name="dbx", config=EndpointCoreConfigInput(
            name="dbx", served_entities=[entity("champion", "1")]))

    listed = {e.name: e for e in w.serving_endpoints.list()}
    assert {"dbx", "fraud"} <= set(listed)
    assert [x.entity_version for x in listed["dbx"].config.served_entities] == ["1"]

    # queries in each input format; the served model comes from the served-model-name header
    records = [dict(zip(COLUMNS, row)) for row in DATA]
    for kwargs in ({"dataframe_split": DataframeSplitInput(columns=COLUMNS, data=DATA)},
                   {"dataframe_records": records},
                   {"instances": records},
                   {"inputs": {c: [row[i] for row in DATA] for i, c in enumerate(COLUMNS)}}):
        q = w.serving_endpoints.query(name="dbx", **kwargs)
        assert len(q.predictions) == len(DATA), (kwargs.keys(), q.predictions)
        assert {"label", "probabilities"} <= set(q.predictions[0]), q.predictions[0]
        assert q.served_model_name == "champion"
    raw = http("POST", gateway["http"] + "/serving-endpoints/dbx/invocations",
               json.dumps({"dataframe_records": records, "client_request_id": "c-1", "params": {"x": 1}}).encode(),
               {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert raw.status == 200, raw.describe()
    assert raw.headers["served-model-name"] == "champion"

    # an update adds a challenger at 50%; a route may name the entity as served_entity_name
    from databricks.sdk.service.serving import Route, TrafficConfig
    ep = w.serving_endpoints.update_config_and_wait(
        name="dbx",
        served_entities=[entity("champion", "1"), entity("challenger", "2", workload_size="Small")],
        traffic_config=TrafficConfig(routes=[Route(served_model_name="champion", traffic_percentage=50),
                                             Route(served_entity_name="challenger", traffic_percentage=50)]))
    assert [x.entity_version for x in ep.config.served_entities] == ["1", "2"]
    assert ep.config.config_version == first_version + 1
    served = {w.serving_endpoints.query(name="dbx", dataframe_records=records[:1]).served_model_name
              for _ in range(40)}
    assert served == {"champion", "challenger"}

    # an update whose model does not load: the SDK raises, the endpoint says why, and the
    # previous config goes on serving
    with pytest.raises(OperationFailed, match="UPDATE_FAILED"):
        w.serving_endpoints.update_config_and_wait(
            name="dbx", served_entities=[entity("champion", "1"), entity("broken", "9")],
            traffic_config=routes(champion=50, broken=50))
    ep = w.serving_endpoints.get("dbx")
    assert ep.state.config_update == EndpointStateConfigUpdate.UPDATE_FAILED
    assert ep.state.ready == EndpointStateReady.READY
    assert [x.entity_version for x in ep.config.served_entities] == ["1", "2"]
    failed = [x for x in ep.pending_config.served_entities if x.name == "broken"]
    assert failed and failed[0].state.deployment.value == "DEPLOYMENT_FAILED"
    assert "fraud_classifier" in failed[0].state.deployment_state_message, failed[0].state
    assert w.serving_endpoints.query(name="dbx", dataframe_records=records[:1]).served_model_name in (
        "champion", "challenger")
    # a model version that does not exist at all is refused at once
    from databricks.sdk.errors import InvalidParameterValue
    with pytest.raises(InvalidParameterValue, match="99"):
        w.serving_endpoints.update_config(name="dbx", served_entities=[entity("champion", "99")],
                                          traffic_config=routes(champion=100))

    # metrics, logs, OpenAPI
    text = w.serving_endpoints.export_metrics("dbx").contents.read().decode()
    assert 'endpoint="dbx"' in text and "# TYPE" in text, text[:500]
    assert 'endpoint="fraud"' not in text
    logs = w.serving_endpoints.logs("dbx", "champion").logs
    assert "fraud_classifier" in logs and "version 1" in logs, logs
    doc = json.loads(w.serving_endpoints.get_open_api("dbx").contents.read())
    assert doc["openapi"].startswith("3.")
    post = doc["paths"]["/serving-endpoints/dbx/invocations"]["post"]
    split = post["requestBody"]["content"]["application/json"]["schema"]["oneOf"][0]
    assert split["properties"]["dataframe_split"]["properties"]["columns"]["items"]["enum"] == COLUMNS

    # tags
    tags = w.serving_endpoints.patch("dbx", add_tags=[EndpointTag(key="tier", value="gold")], delete_tags=["team"])
    assert [(t.key, t.value) for t in tags.tags] == [("tier", "gold")]

    # the admin API sees the same endpoint and one history
    status, view = admin(gateway, "GET", "/admin/endpoints/dbx")
    assert status == 200 and [s["version"] for s in view["served_models"]] == ["1", "2"], view
    status, hist = admin(gateway, "GET", "/admin/endpoints/dbx/history")
    assert [h["source"] for h in hist["history"]] == ["api"] * 3, hist  # create, update, tags

    w.serving_endpoints.delete("dbx")
    with pytest.raises(ResourceDoesNotExist):
        w.serving_endpoints.get("dbx")
    with pytest.raises(NotFound):
        w.serving_endpoints.update_config(name="dbx", served_entities=[entity("champion", "1")])


def test_errors_come_in_databricks_shape_and_hostile_bodies_do_not_hurt(gateway):
    url = gateway["http"] + "/api/2.0/serving-endpoints"
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    r = get(url)
    assert r.status == 401 and r.json()["error_code"] == "UNAUTHENTICATED", r.describe()
    r = http("GET", url, None, {"Authorization": "Bearer wrong"})
    assert r.status in (401, 403) and r.json()["error_code"] in ("UNAUTHENTICATED", "PERMISSION_DENIED")
    r = http("GET", url + "/nope", None, auth)
    assert (r.status, r.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST"), r.describe()
    assert "nope" in r.json()["message"]
    hostile = [
        b"", b"[]", b"null", b"{", b'"x"', b'{"name": 7, "config": {}}',
        b'{"name": "h", "config": []}', b'{"name": "h"}',
        b'{"name": "h", "config": {"served_entities": {}}}',
        b'{"name": "h", "config": {"served_entities": [{"entity_name": "fraud_classifier"}]}}',
        b'{"name": "h", "config": {"served_entities": [{"entity_name": "fraud_classifier", "entity_version": "1",'
        b' "surprise": 1}]}}',
        b'{"name": "h", "config": {"served_entities": [{"entity_name": "fraud_classifier", "entity_version": "1"}],'
        b' "traffic_config": {"routes": [{"served_model_name": "nobody", "traffic_percentage": 100}]}}}',
        b'{"name": "../../etc", "config": {"served_entities": [{"entity_name": "fraud_classifier", "entity_version": "1"}]}}',
        b'{"name": "h", "config": {"served_entities": [{"entity_name": "fraud_classifier", "entity_version": "1"}]},'
        b' "tags": [{"key": 1}]}',
        b'{"name": "h", "config": {"served_entities": [{"entity_name": "fraud_classifier",'
        b' "entity_version": "18446744073709551616"}]}}',
        b'{"name": "h", "config": {"served_entities": [' + b'{"entity_name": "fraud_classifier", "entity_version": "1"},' * 2000
        + b'{"entity_name": "fraud_classifier", "entity_version": "1"}]}}',
        b'{"name": "h", "config": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}",
        # percentages that overflow a sum
        b'{"name": "h", "config": {"served_entities": [{"entity_name": "fraud_classifier", "entity_version": "1"},'
        b' {"entity_name": "fraud_classifier", "entity_version": "2"}], "traffic_config": {"routes": ['
        b'{"served_model_name": "fraud_classifier-1", "traffic_percentage": 9223372036854775807},'
        b' {"served_model_name": "fraud_classifier-2", "traffic_percentage": 10}]}}}',
        # kept fields must fit a TOML config
        b'{"name": "h", "config": {"served_entities": [{"entity_name": "fraud_classifier", "entity_version": "1"}]},'
        b' "rate_limits": [{"calls": 18446744073709551615}]}',
    ]
    for body in hostile:
        r = http("POST", url, body, auth)
        assert r.status == 400, (body[:120], r.describe())
        err = r.json()
        assert err["error_code"] == "INVALID_PARAMETER_VALUE" and err["message"], (body[:120], err)
    r = http("POST", url, b"{}", {**auth, "Content-Type": "text/plain"})
    assert (r.status, r.json()["error_code"]) == (415, "INVALID_PARAMETER_VALUE")
    r = http("PATCH", url + "/fraud/tags", b'{"add_tags": "x"}', auth)
    assert (r.status, r.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), r.describe()
    # nothing was created, and the gateway still serves
    names = {e["name"] for e in http("GET", url, None, auth).json()["endpoints"]}
    assert names == {"fraud"}, names
    r = http("POST", gateway["http"] + "/serving-endpoints/fraud/invocations",
             json.dumps({"dataframe_split": {"columns": COLUMNS, "data": DATA}}).encode(), auth)
    assert r.status == 200, r.describe()


def test_invocations_answers_as_the_mlflow_scoring_server(w, gateway):
    from databricks.sdk.service.serving import EndpointCoreConfigInput
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    split = {"dataframe_split": {"columns": COLUMNS, "data": DATA}}
    x = fixture_matrix("fraud_classifier")[:len(DATA)]
    want = Reference().run("fraud_classifier", "1", x)

    # the default endpoint, in Sluice's shape unless asked otherwise
    r = http("POST", gateway["http"] + "/invocations", json.dumps(split).encode(), auth)
    assert r.status == 200, r.describe()
    got = r.json()["predictions"]
    assert len(got) == len(DATA) and {"label", "probabilities"} <= set(got[0])
    assert r.headers["served-model-name"] == "champion"
    ping = http("GET", gateway["http"] + "/ping", None, {})
    assert (ping.status, ping.body) == (200, b"\n")
    version = http("GET", gateway["http"] + "/version", None, auth)
    assert version.status == 200 and version.body.decode().count(".") == 2, version.describe()

    # an endpoint in MLflow's shape: every output by name, rows as lists
    w.serving_endpoints.create_and_wait(name="mlf", config=EndpointCoreConfigInput(
        name="mlf", served_entities=[entity("v1", "1")], traffic_config=routes(v1=100)))
    status, _ = admin(gateway, "PUT", "/admin/endpoints/mlf", {
        "served_entities": [{"name": "v1", "entity_name": "fraud_classifier", "entity_version": 1}],
        "response_format": "mlflow"})
    assert status == 200
    for body in (split, {"dataframe_records": [dict(zip(COLUMNS, row)) for row in DATA]},
                 {"inputs": {c: [row[i] for row in DATA] for i, c in enumerate(COLUMNS)}, "params": {}}):
        r = http("POST", gateway["http"] + "/serving-endpoints/mlf/invocations", json.dumps(body).encode(), auth)
        assert r.status == 200, r.describe()
        got = r.json()["predictions"]
        assert set(got) == {"label", "probabilities"}, got
        assert got["label"] == want["label"].tolist()
        np.testing.assert_allclose(np.array(got["probabilities"]), want["probabilities"], atol=1e-6)
    q = w.serving_endpoints.query(name="mlf", dataframe_records=[dict(zip(COLUMNS, DATA[0]))])
    assert q.predictions["label"] == want["label"][:1].tolist()

    # errors as MLflow and Databricks give them (Sluice's `error` kept beside)
    for path in ("/invocations", "/serving-endpoints/mlf/invocations"):
        r = http("POST", gateway["http"] + path, b'{"dataframe_split": {"columns": ["nope"], "data": [[1]]}}', auth)
        assert r.status == 400, r.describe()
        err = r.json()
        assert err["error_code"] == "BAD_REQUEST" and err["message"] == err["error"] and "nope" in err["message"], err
    w.serving_endpoints.delete("mlf")


def test_a_create_whose_model_does_not_load_fails_and_can_be_fixed(w):
    from databricks.sdk.errors import OperationFailed
    from databricks.sdk.service.serving import EndpointCoreConfigInput, EndpointStateConfigUpdate, EndpointStateReady
    with pytest.raises(OperationFailed):
        w.serving_endpoints.create_and_wait(name="bad", config=EndpointCoreConfigInput(
            name="bad", served_entities=[entity("broken", "9")]))
    ep = w.serving_endpoints.get("bad")
    assert (ep.state.ready, ep.state.config_update) == (EndpointStateReady.NOT_READY,
                                                        EndpointStateConfigUpdate.UPDATE_FAILED)
    assert ep.config is None and ep.pending_config.served_entities[0].state.deployment.value == "DEPLOYMENT_FAILED"
    assert "bad" in {e.name for e in w.serving_endpoints.list()}
    # a config that loads makes it
    ep = w.serving_endpoints.update_config_and_wait(name="bad", served_entities=[entity("ok", "1")])
    assert ep.state.ready == EndpointStateReady.READY and ep.config.served_entities[0].name == "ok"
    w.serving_endpoints.delete("bad")
