"""Endpoints from outside: the fraud A/B split (champion 90 / challenger 10, shadow mirrored),
pinning with x-sluice-served-model, the direct served-model route, sticky x-user-id routing,
who answered a KServe V2 call (response parameters and headers, HTTP and gRPC), V2 calls on an
endpoint name, and the endpoints CLI / admin API.

Nothing here changes the session gateway's configuration: edits (PATCH, PUT, DELETE, rollback,
reload) run against a second gateway started from a temporary copy of the demo config."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import tomllib
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from sluice_support import (
    MIRRORS, PIN_HEADER, REPO, SERVED, SIGNATURES, STICKY_HEADER, TRAFFIC, answered_by,
    assert_json_error, assert_predictions_match, assert_tensor_matches, batch_of, config_path,
    fixture_matrix, get, http, manifest, post_json, post_raw, predict_bodies, read_tail,
    routed_names, sluice_binary, start_sluice, stop_sluice,
)

FRAUD_FEATURES = manifest("fraud_classifier")["features"]
PARAM_KEYS = {"sluice_served_model", "sluice_model_version", "sluice_request_id"}


def fraud_body(n: int = 4, fmt: str = "dataframe_split") -> dict:
    return predict_bodies(FRAUD_FEATURES, batch_of("fraud_classifier", n))[fmt]


def fraud_urls(base: str) -> list[str]:
    return [f"{base}/predict", f"{base}/endpoints/fraud/predict",
            f"{base}/serving-endpoints/fraud/invocations"]


def check_fraud_answer(r, reference, x, pinned=None) -> str:
    """A 200 fraud answer: headers name a served entity and its version, predictions equal
    onnxruntime on that version. Returns the served entity name."""
    assert r.status == 200, r.describe()
    served, model, version = answered_by(r, "fraud", pinned)
    assert_predictions_match(r.json()["predictions"], reference.predictions(model, version, x),
                             what=f"answer of {served} (v{version})")
    return served


# ---------------------------------------------------------------------------------------------
# the demo config is what this file expects
# ---------------------------------------------------------------------------------------------

def test_demo_config_matches_suite_tables():
    """SERVED / TRAFFIC / MIRRORS in sluice_support describe sluice.toml (guards the tables)."""
    with open(config_path(), "rb") as f:
        cfg = tomllib.load(f)
    eps = {e["name"]: e for e in cfg["endpoints"]}
    assert set(eps) == set(SERVED), f"config endpoints {sorted(eps)}"
    for name, ep in eps.items():
        served = {s["name"]: (s["entity_name"], str(s["entity_version"])) for s in ep["served_entities"]}
        assert served == SERVED[name], f"{name}: served entities {served}"
        routes = ep.get("traffic_config", {}).get("routes")
        if routes is None:
            assert TRAFFIC[name] == {next(iter(served)): 100}, name
        else:
            assert {r["served_model_name"]: r["traffic_percentage"] for r in routes} == TRAFFIC[name], name
        mirrors = {m["served_model_name"]: m["mirror_percent"] for m in ep.get("shadow", [])}
        assert mirrors == MIRRORS.get(name, {}), f"{name}: shadow {mirrors}"


# ---------------------------------------------------------------------------------------------
# /predict: the split, pinning, the direct route
# ---------------------------------------------------------------------------------------------

def test_split_answers_only_from_routed_models(sluice, reference):
    """Unpinned requests are answered by champion or challenger (never the shadow), each with its
    own version's answer."""
    x = batch_of("fraud_classifier", 8)
    body = predict_bodies(FRAUD_FEATURES, x)["dataframe_split"]
    seen = {}
    for i in range(60):
        url = fraud_urls(sluice.http)[i % 3]
        served = check_fraud_answer(post_json(url, body), reference, x)
        seen[served] = seen.get(served, 0) + 1
    assert set(seen) <= routed_names("fraud") == {"champion", "challenger"}, seen
    # 90 %: P(no champion in 60) = 0.1^60.
    assert seen.get("champion", 0) > 0, seen


@pytest.mark.parametrize("pin", ["champion", "challenger"])
def test_pin_served_model_on_predict(sluice, reference, pin):
    """x-sluice-served-model pins the answer to that served model on every fraud URL."""
    x = batch_of("fraud_classifier", 16)
    for fmt, body in predict_bodies(FRAUD_FEATURES, x).items():
        for url in fraud_urls(sluice.http):
            for _ in range(3):
                r = post_json(url, body, headers={PIN_HEADER: pin})
                assert check_fraud_answer(r, reference, x, pinned=pin) == pin, f"{url} {fmt}"


def test_pin_challenger_answers_version_2(sluice, reference):
    x = fixture_matrix("fraud_classifier")
    r = post_json(f"{sluice.http}/predict", predict_bodies(FRAUD_FEATURES, x)["dataframe_split"],
                  headers={PIN_HEADER: "challenger"})
    assert r.status == 200, r.describe()
    assert r.headers.get("x-sluice-served-model") == "challenger", r.headers
    assert r.headers.get("x-sluice-model-version") == "2", r.headers
    preds = r.json()["predictions"]
    assert_predictions_match(preds, reference.predictions("fraud_classifier", "2", x), what="challenger")
    # The fixture's disagreeing rows tell v2 from v1 (so this is not v1's answer by accident).
    v1 = reference.predictions("fraud_classifier", "1", x)
    rows = [i for i, (a, b) in enumerate(zip(preds, v1)) if a["label"] != b["label"]]
    assert rows, "pinned challenger answered exactly like v1 on every row"


def test_pin_unknown_served_model_is_404(sluice):
    for url in fraud_urls(sluice.http):
        r = post_json(url, fraud_body(), headers={PIN_HEADER: "no-such-served-model"})
        assert_json_error(r, 404, mentions="no-such-served-model")


@pytest.mark.parametrize("endpoint,served", [(ep, s) for ep, ss in SERVED.items() for s in ss])
def test_direct_served_model_route(sluice, reference, endpoint, served):
    """POST /endpoints/{name}/served-models/{served}/predict bypasses the split (the shadow and
    0 % routes included) and is answered by that served model."""
    model, version = SERVED[endpoint][served]
    x = batch_of(model, 5)
    m = manifest(model)
    body = (predict_bodies(m["features"], x)["dataframe_records"] if m.get("features")
            else {"instances": x.astype(float).tolist()})
    url = f"{sluice.http}/endpoints/{endpoint}/served-models/{served}/predict"
    for _ in range(5 if endpoint == "fraud" else 1):
        r = post_json(url, body)
        assert r.status == 200, r.describe()
        assert answered_by(r, endpoint, pinned=served) == (served, model, version)
        assert_predictions_match(r.json()["predictions"], reference.predictions(model, version, x),
                                 what=url)


def test_direct_route_unknown_names_are_404(sluice):
    body = json.dumps(fraud_body()).encode()
    for path, name in (("/endpoints/fraud/served-models/no-such-served/predict", "no-such-served"),
                       ("/endpoints/no-such-endpoint/served-models/champion/predict", "no-such-endpoint"),
                       ("/endpoints/delivery/served-models/champion/predict", "champion")):
        assert_json_error(post_raw(sluice.http + path, body), 404, mentions=name)


def test_request_id_echoed_on_predict(sluice):
    rid = f"conformance-{uuid.uuid4()}"
    for url in fraud_urls(sluice.http) + [f"{sluice.http}/endpoints/fraud/served-models/challenger/predict"]:
        r = post_json(url, fraud_body(1), headers={"x-request-id": rid})
        assert r.status == 200, r.describe()
        assert r.headers.get("x-request-id") == rid, f"{url}: {r.headers}"


# ---------------------------------------------------------------------------------------------
# sticky routing
# ---------------------------------------------------------------------------------------------

def test_sticky_key_keeps_one_served_model(sluice, reference):
    """50 keys x 20 requests: every request with the same x-user-id is answered by the same served
    model (whichever URL of the endpoint it goes to), with that model's answer."""
    x = batch_of("fraud_classifier", 2)
    body = predict_bodies(FRAUD_FEATURES, x)["dataframe_split"]
    expected = {s: reference.predictions(m, v, x) for s, (m, v) in SERVED["fraud"].items()}
    urls = fraud_urls(sluice.http)

    def one_key(k: int):
        key = f"user-{k}-{k * 7919 % 1000}"
        got = []
        for i in range(20):
            r = post_json(urls[i % len(urls)], body, headers={STICKY_HEADER: key})
            assert r.status == 200, r.describe()
            served, _, _ = answered_by(r, "fraud")
            assert_predictions_match(r.json()["predictions"], expected[served], what=f"{key} #{i}")
            got.append(served)
        return key, got

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one_key, range(50)))
    unstable = {key: got for key, got in results if len(set(got)) != 1}
    assert not unstable, f"keys answered by more than one served model: {unstable}"


def test_sticky_keys_still_split_traffic(sluice):
    """Stickiness is per key: over 300 distinct keys both routed models answer (90/10 split;
    P(no challenger) = 0.9^300), and never the shadow."""
    body = fraud_body(1)

    def one(k):
        r = post_json(f"{sluice.http}/predict", body, headers={STICKY_HEADER: f"spread-{k}"})
        assert r.status == 200, r.describe()
        return answered_by(r, "fraud")[0]

    with ThreadPoolExecutor(max_workers=4) as pool:
        served = list(pool.map(one, range(300)))
    counts = {s: served.count(s) for s in set(served)}
    assert set(counts) == {"champion", "challenger"}, counts


# ---------------------------------------------------------------------------------------------
# shadow mirroring
# ---------------------------------------------------------------------------------------------

def _inference_count(sluice, model, version) -> int:
    r = get(f"{sluice.http}/v2/models/{model}/versions/{version}/stats")
    assert r.status == 200, r.describe()
    (entry,) = [e for e in r.json()["model_stats"] if str(e["version"]) == version]
    return int(entry["inference_count"])


def test_shadow_receives_mirrored_requests(sluice, reference):
    """mirror_percent 100: fraud_classifier v3 runs every routed request's rows, although its
    answers are never returned."""
    ext = get(f"{sluice.http}/v2").json().get("extensions", [])
    assert "statistics" in ext, f"/v2 does not advertise the statistics extension (this test counts with it): {ext}"
    n, k = 3, 10
    x = batch_of("fraud_classifier", n)
    before = _inference_count(sluice, "fraud_classifier", "3")
    for i in range(k):
        r = post_json(fraud_urls(sluice.http)[i % 3], predict_bodies(FRAUD_FEATURES, x)["instances_arrays"])
        check_fraud_answer(r, reference, x)
    deadline = time.monotonic() + 15
    while True:
        after = _inference_count(sluice, "fraud_classifier", "3")
        if after >= before + n * k or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert after >= before + n * k, \
        f"shadow v3 inference_count {before} -> {after} after {k} requests of {n} rows (mirror 100%)"


# ---------------------------------------------------------------------------------------------
# KServe V2: who answered (parameters and headers)
# ---------------------------------------------------------------------------------------------

class Client:
    def __init__(self, proto, sluice):
        self.proto = proto
        if proto == "http":
            self.mod = httpclient
            self.c = httpclient.InferenceServerClient(sluice.http_hostport, connection_timeout=30,
                                                      network_timeout=60)
        else:
            self.mod = grpcclient
            self.c = grpcclient.InferenceServerClient(sluice.grpc)

    def infer(self, model, x, version="", **kw):
        inp = self.mod.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return self.c.infer(model, [inp], model_version=version, **kw)

    def params(self, result) -> dict[str, str]:
        """The three sluice_* response parameters, as strings (gRPC: string_param)."""
        if self.proto == "http":
            p = result.get_response().get("parameters")
            assert isinstance(p, dict), f"no top-level parameters: {result.get_response()}"
            out = {k: p.get(k) for k in PARAM_KEYS}
        else:
            p = result.get_response().parameters
            out = {}
            for k in PARAM_KEYS:
                assert k in p, f"response parameters lack {k!r}: {dict(p)}"
                assert p[k].WhichOneof("parameter_choice") == "string_param", f"{k}: {p[k]}"
                out[k] = p[k].string_param
        for k, v in out.items():
            assert isinstance(v, str) and v, f"parameter {k!r} must be a non-empty string: {out}"
        return out

    def response_version(self, result) -> str:
        if self.proto == "http":
            return result.get_response().get("model_version", "")
        return result.get_response().model_version

    def close(self):
        self.c.close()


@pytest.fixture(scope="module", params=["http", "grpc"])
def client(request, sluice):
    c = Client(request.param, sluice)
    yield c
    c.close()


def check_outputs(result, reference, model, version, x):
    exp = reference.run(model, version, x)
    for name in exp:
        assert_tensor_matches(result.as_numpy(name), exp[name], name)


@pytest.mark.parametrize("model,version", [("fraud_classifier", "1"), ("fraud_classifier", "2"),
                                           ("fraud_classifier", "3"), ("mlp", ""), ("delivery_time", "1"),
                                           ("fraud_classifier", "")])
def test_v2_parameters_on_direct_model_call(client, reference, model, version):
    """A model called by name answers parameters sluice_served_model = the model name,
    sluice_model_version = the version that ran (the highest when none is asked), and a
    sluice_request_id that differs between requests."""
    x = batch_of(model, 3)
    want = version or max(SIGNATURES[model]["versions"], key=int)
    ids = set()
    for _ in range(2):
        result = client.infer(model, x, version=version)
        p = client.params(result)
        assert p["sluice_served_model"] == model, p
        assert p["sluice_model_version"] == want, p
        assert client.response_version(result) in ("", want), client.response_version(result)
        check_outputs(result, reference, model, want, x)
        ids.add(p["sluice_request_id"])
    assert len(ids) == 2, f"sluice_request_id repeated across requests: {ids}"


@pytest.mark.parametrize("binary", [False, True], ids=["json_out", "binary_out"])
def test_v2_http_headers_match_parameters(sluice, reference, binary):
    """HTTP V2 answers carry x-sluice-served-model / x-sluice-model-version / x-request-id,
    equal to the parameters in the body; a client x-request-id is echoed in both."""
    x = batch_of("fraud_classifier", 4)
    raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
    for path, served, version in (("/v2/models/fraud_classifier/versions/2/infer", "fraud_classifier", "2"),
                                  ("/v2/models/fraud/infer", None, None)):
        for rid in (None, f"wire-{uuid.uuid4()}"):
            headers = {"x-request-id": rid} if rid else {}
            if binary:
                h = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                            "parameters": {"binary_data_size": len(raw)}}],
                                "parameters": {"binary_data_output": True}}).encode()
                headers["Inference-Header-Content-Length"] = str(len(h))
                resp = post_raw(sluice.http + path, h + raw, content_type="application/octet-stream",
                                headers=headers)
            else:
                body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                    "data": x.reshape(-1).astype(float).tolist()}]}
                resp = post_json(sluice.http + path, body, headers=headers)
            assert resp.status == 200, resp.describe()
            hl = resp.headers.get("inference-header-content-length")
            result = httpclient.InferResult.from_response_body(
                resp.body, header_length=int(hl) if hl is not None else None)
            p = result.get_response().get("parameters") or {}
            assert set(PARAM_KEYS) <= set(p), f"{path}: parameters {p}"
            assert resp.headers.get("x-sluice-served-model") == p["sluice_served_model"], (resp.headers, p)
            assert resp.headers.get("x-sluice-model-version") == p["sluice_model_version"], (resp.headers, p)
            assert resp.headers.get("x-request-id") == p["sluice_request_id"], (resp.headers, p)
            assert p["sluice_request_id"], p
            if rid:
                assert p["sluice_request_id"] == rid, f"{path}: x-request-id {rid!r} not echoed: {p}"
            if served is None:  # through the fraud endpoint's split
                assert p["sluice_served_model"] in routed_names("fraud"), p
                model, want = SERVED["fraud"][p["sluice_served_model"]]
                assert p["sluice_model_version"] == want, p
            else:
                model, want = "fraud_classifier", version
                assert p["sluice_served_model"] == served and p["sluice_model_version"] == want, p
            check_outputs(result, reference, model, want, x)


# ---------------------------------------------------------------------------------------------
# KServe V2 on an endpoint name
# ---------------------------------------------------------------------------------------------

def test_v2_endpoint_name_routes_through_split(client, reference):
    """Model name "fraud" (an endpoint, not a model) goes through the fraud split: answered by
    champion or challenger, with the outputs of the version the parameters name."""
    x = batch_of("fraud_classifier", 16)
    seen = {}
    for i in range(30):
        result = client.infer("fraud", x, request_id=f"ep-{i}")
        p = client.params(result)
        served = p["sluice_served_model"]
        assert served in routed_names("fraud"), f"request {i}: served by {served!r}: {p}"
        model, version = SERVED["fraud"][served]
        assert p["sluice_model_version"] == version, p
        assert client.response_version(result) in ("", version), client.response_version(result)
        check_outputs(result, reference, model, version, x)
        seen[served] = seen.get(served, 0) + 1
    assert seen.get("champion", 0) > 0, seen  # 90 %: P(none in 30) = 0.1^30


@pytest.mark.parametrize("pin", ["champion", "challenger"])
def test_v2_endpoint_name_pinned(client, reference, pin):
    x = batch_of("fraud_classifier", 16)
    model, version = SERVED["fraud"][pin]
    for _ in range(5):
        result = client.infer("fraud", x, headers={PIN_HEADER: pin})
        p = client.params(result)
        assert p["sluice_served_model"] == pin and p["sluice_model_version"] == version, p
        check_outputs(result, reference, model, version, x)


def test_v2_endpoint_name_with_version_is_refused(sluice):
    """Versions are not allowed on an endpoint name; HTTP and gRPC refuse it as the same kind of
    error (400 <-> INVALID_ARGUMENT or 404 <-> NOT_FOUND, per the error table)."""
    x = batch_of("fraud_classifier", 1)
    codes = {}
    for proto in ("http", "grpc"):
        c = Client(proto, sluice)
        try:
            with pytest.raises(InferenceServerException) as ei:
                c.infer("fraud", x, version="1")
            assert "exception occurred in the client" not in str(ei.value), f"{proto}: {ei.value}"
            codes[proto] = str(ei.value.status())
        finally:
            c.close()
    assert (codes["http"], codes["grpc"]) in {("400", "StatusCode.INVALID_ARGUMENT"),
                                              ("404", "StatusCode.NOT_FOUND")}, codes


def test_v2_model_name_wins_over_endpoint_name(client, reference):
    """"mlp" is both a model and an endpoint (served entity "mlp-v1"): V2 means the model."""
    x = batch_of("mlp", 2)
    for version in ("", "1"):
        result = client.infer("mlp", x, version=version)
        p = client.params(result)
        assert p["sluice_served_model"] == "mlp", f"'mlp' resolved to {p['sluice_served_model']!r}: {p}"
        assert p["sluice_model_version"] == "1", p
        check_outputs(result, reference, "mlp", "1", x)


# ---------------------------------------------------------------------------------------------
# CLI and read-only admin API (session gateway)
# ---------------------------------------------------------------------------------------------

def run_cli(*args, timeout=60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SLUICE_ADMIN_URL", "SLUICE_ADMIN_TOKEN")}
    return subprocess.run([sluice_binary(), *args], cwd=str(REPO), env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def cli_endpoints(admin_url: str) -> dict:
    p = run_cli("endpoints", "list", "--output", "json", "--admin-url", admin_url)
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout[:2000]}\nstderr: {p.stderr[:2000]}"
    try:
        doc = json.loads(p.stdout)
    except ValueError as e:
        raise AssertionError(f"stdout is not JSON ({e}): {p.stdout[:2000]!r}") from None
    assert isinstance(doc, dict) and isinstance(doc.get("endpoints"), list), doc
    by_name = {e.get("name"): e for e in doc["endpoints"]}
    assert len(by_name) == len(doc["endpoints"]), f"duplicate endpoint names: {doc}"
    return by_name


def served_table(entry: dict) -> dict:
    """served_models of an endpoint entry as name -> (model, version, traffic, mirror)."""
    out = {}
    for s in entry["served_models"]:
        for k in ("name", "model", "version", "traffic_percentage"):
            assert k in s, f"served model entry without {k!r}: {s}"
        out[s["name"]] = (s["model"], s["version"], s["traffic_percentage"], s.get("mirror_percent"))
    return out


def expected_table(endpoint: str, traffic: dict | None = None) -> dict:
    traffic = TRAFFIC[endpoint] if traffic is None else traffic
    mirrors = MIRRORS.get(endpoint, {})
    return {name: (m, v, traffic.get(name, 0), mirrors.get(name))
            for name, (m, v) in SERVED[endpoint].items()}


def test_cli_endpoints_list_json(sluice):
    eps = cli_endpoints(sluice.admin)
    assert set(eps) == set(SERVED), f"endpoints listed: {sorted(eps)}"
    fraud = eps["fraud"]
    assert isinstance(fraud.get("config_version"), int) and fraud["config_version"] >= 1, fraud
    assert isinstance(fraud.get("config"), dict) and fraud["config"].get("name") == "fraud", fraud
    table = served_table(fraud)
    assert table["champion"] == ("fraud_classifier", "1", 90, None), table
    assert table["challenger"] == ("fraud_classifier", "2", 10, None), table
    model, version, traffic, mirror = table["shadow"]
    assert (model, version, mirror) == ("fraud_classifier", "3", 100), table
    assert traffic in (0, None), f"shadow must take no split traffic: {table}"
    for name in SERVED:
        assert served_table(eps[name]) == expected_table(name), f"{name}: {served_table(eps[name])}"


def test_cli_endpoints_table_output(sluice):
    p = run_cli("endpoints", "list", "--admin-url", sluice.admin)
    assert p.returncode == 0, f"exit {p.returncode}: {p.stderr[:2000]}"
    for word in ("fraud", "champion", "challenger", "shadow", "delivery", "mlp"):
        assert word in p.stdout, f"{word!r} missing from the table:\n{p.stdout}"


def test_admin_api_read_only(sluice):
    r = get(f"{sluice.admin}/admin/endpoints")
    assert r.status == 200, r.describe()
    listed = {e["name"]: e for e in r.json()["endpoints"]}
    assert set(listed) == set(SERVED), r.describe()
    r = get(f"{sluice.admin}/admin/endpoints/fraud")
    assert r.status == 200, r.describe()
    one = r.json()
    assert one["name"] == "fraud" and served_table(one) == expected_table("fraud"), r.describe()
    assert served_table(listed["fraud"]) == served_table(one)
    assert_json_error(get(f"{sluice.admin}/admin/endpoints/no-such-endpoint"), 404)
    r = get(f"{sluice.admin}/admin/endpoints/fraud/history")
    assert r.status == 200, r.describe()
    hist = r.json().get("history")
    assert isinstance(hist, list) and hist and hist[0].get("version") == 1, r.describe()
    assert hist[-1]["version"] == one["config_version"], (hist[-1], one)


# ---------------------------------------------------------------------------------------------
# live edits, on a second gateway of its own
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def scratch(tmp_path):
    """A second gateway on a temporary copy of the demo config (file watching off, so only an
    explicit /admin/reload rereads it). Relative paths resolve from the config's directory, so
    the copy sits next to a link to the repository's models."""
    (tmp_path / "models").symlink_to(REPO / "models", target_is_directory=True)
    text = config_path().read_text()
    assert "watch_config = true" in text
    cfg = tmp_path / "sluice.toml"
    cfg.write_text(text.replace("watch_config = true", "watch_config = false"))
    proc, ports, log_path = start_sluice(tmp_path / "run", config=str(cfg))
    try:
        yield {"http": f"http://127.0.0.1:{ports['http']}", "admin": f"http://127.0.0.1:{ports['admin']}",
               "config": cfg, "log": log_path}
    finally:
        stop_sluice(proc)


@contextlib.contextmanager
def log_on_failure(log_path):
    """Failures against the second gateway carry its log (conftest attaches only the session's)."""
    try:
        yield
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- second gateway log ---\n{read_tail(log_path, limit=3000)}") from e


def admin(method, url, obj=None):
    body = None if obj is None else json.dumps(obj).encode()
    # every state-changing admin call declares JSON, body or not (the admin API refuses others)
    return http(method, url, body, {"Content-Type": "application/json"} if body is not None or method != "GET" else {})


def routes(champion, challenger):
    return {"routes": [{"served_model_name": "champion", "traffic_percentage": champion},
                       {"served_model_name": "challenger", "traffic_percentage": challenger}]}


def test_live_traffic_edit_history_and_rollback(scratch, reference):
    h, a = scratch["http"], scratch["admin"]
    x = batch_of("fraud_classifier", 4)
    body = predict_bodies(FRAUD_FEATURES, x)["dataframe_split"]
    with log_on_failure(scratch["log"]):
        start = cli_endpoints(a)["fraud"]["config_version"]

        # An invalid change is refused and changes nothing.
        assert_json_error(admin("PATCH", f"{a}/admin/endpoints/fraud/traffic", routes(50, 40)), 400)
        assert_json_error(admin("PATCH", f"{a}/admin/endpoints/no-such/traffic", routes(50, 50)), 404)
        now = cli_endpoints(a)["fraud"]
        assert now["config_version"] == start and served_table(now) == expected_table("fraud"), now

        # All traffic to the challenger: every request, sticky or not, goes there.
        r = admin("PATCH", f"{a}/admin/endpoints/fraud/traffic", routes(0, 100))
        assert r.status == 200, r.describe()
        assert r.json()["config_version"] == start + 1, r.describe()
        assert served_table(r.json()) == expected_table("fraud", {"champion": 0, "challenger": 100})
        for i in range(30):
            hdr = {STICKY_HEADER: f"k{i % 10}"} if i % 2 else {}
            served = check_fraud_answer(post_json(fraud_urls(h)[i % 3], body, headers=hdr), reference, x)
            assert served == "challenger", f"request {i} ({hdr}) served by {served} at 0/100"
        eps = cli_endpoints(a)
        assert served_table(eps["fraud"]) == expected_table("fraud", {"champion": 0, "challenger": 100})
        assert eps["fraud"]["config_version"] == start + 1

        r = get(f"{a}/admin/endpoints/fraud/history")
        assert r.status == 200, r.describe()
        versions = [e["version"] for e in r.json()["history"]]
        assert versions[-2:] == [start, start + 1], versions

        # Rolling back to the first version restores 90/10 as a new config version.
        assert_json_error(admin("POST", f"{a}/admin/endpoints/fraud/rollback", {"version": 999}), 404)
        r = admin("POST", f"{a}/admin/endpoints/fraud/rollback", {"version": 1})
        assert r.status == 200, r.describe()
        assert r.json()["config_version"] == start + 2, r.describe()
        eps = cli_endpoints(a)
        assert served_table(eps["fraud"]) == expected_table("fraud"), eps["fraud"]
        served = {check_fraud_answer(post_json(f"{h}/predict", body, headers={PIN_HEADER: "champion"}),
                                     reference, x, pinned="champion")}
        assert served == {"champion"}
        # Other endpoints were not touched.
        assert all(eps[n]["config_version"] == 1 for n in ("delivery", "mlp")), eps


def test_put_delete_endpoint_and_reload(scratch, reference):
    h, a = scratch["http"], scratch["admin"]
    x = batch_of("mlp", 2)
    body = {"instances": x.astype(float).tolist()}
    with log_on_failure(scratch["log"]):
        spec = {"name": "extra",
                "served_entities": [{"name": "m1", "entity_name": "mlp", "entity_version": "1"}]}
        r = admin("PUT", f"{a}/admin/endpoints/extra", spec)
        assert r.status in (200, 201), r.describe()
        r = post_json(f"{h}/endpoints/extra/predict", body)
        assert r.status == 200, r.describe()
        assert r.headers.get("x-sluice-served-model") == "m1", r.headers
        assert r.headers.get("x-sluice-model-version") == "1", r.headers
        assert_predictions_match(r.json()["predictions"], reference.predictions("mlp", "1", x))
        assert "extra" in cli_endpoints(a)

        r = admin("DELETE", f"{a}/admin/endpoints/extra")
        assert r.status in (200, 204), r.describe()
        assert_json_error(post_json(f"{h}/endpoints/extra/predict", body), 404)
        assert_json_error(get(f"{a}/admin/endpoints/extra"), 404)
        assert "extra" not in cli_endpoints(a)

        # Reload rereads the file: 50/50 in the file becomes the live split of fraud only.
        text = scratch["config"].read_text()
        new = text.replace('{ served_model_name = "champion", traffic_percentage = 90 }',
                           '{ served_model_name = "champion", traffic_percentage = 50 }').replace(
                           '{ served_model_name = "challenger", traffic_percentage = 10 }',
                           '{ served_model_name = "challenger", traffic_percentage = 50 }')
        assert new != text
        scratch["config"].write_text(new)
        r = admin("POST", f"{a}/admin/reload")
        assert r.status == 200, r.describe()
        assert "fraud" in r.json().get("changed_endpoints", []), r.describe()
        eps = cli_endpoints(a)
        assert served_table(eps["fraud"]) == expected_table("fraud", {"champion": 50, "challenger": 50})
        assert served_table(eps["mlp"]) == expected_table("mlp")
