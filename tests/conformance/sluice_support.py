"""Shared helpers for the Sluice conformance suite.

Everything the tests compare against is computed here, independently of the gateway:
manifests and fixture inputs are read from the repository, and reference answers come from
onnxruntime in Python running the very same model.onnx files on the same float32 inputs.
"""
from __future__ import annotations

import http.client as httplib
import json
import os
import signal
import subprocess
import time
import tomllib
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
FIXTURES = REPO / "tests" / "fixtures" / "inputs"

ATOL = 1e-5

# Endpoints of the demo config (sluice.toml): endpoint -> served entity name -> (model, version).
SERVED = {
    "fraud": {"champion": ("fraud_classifier", "1"), "challenger": ("fraud_classifier", "2"),
              "shadow": ("fraud_classifier", "3")},
    "delivery": {"delivery-v1": ("delivery_time", "1")},
    "mlp": {"mlp-v1": ("mlp", "1")},
}
# endpoint -> served entity -> traffic percentage (entities not listed get no split traffic).
TRAFFIC = {
    "fraud": {"champion": 90, "challenger": 10},
    "delivery": {"delivery-v1": 100},
    "mlp": {"mlp-v1": 100},
}
# endpoint -> served entity -> mirror percentage (shadows: their answers are never returned).
MIRRORS = {"fraud": {"shadow": 100}}
# endpoint -> the model behind it (every demo endpoint serves versions of one model).
ENDPOINTS = {ep: next(iter(served.values()))[0] for ep, served in SERVED.items()}
DEFAULT_ENDPOINT = "fraud"
PIN_HEADER = "x-sluice-served-model"
STICKY_HEADER = "x-user-id"

# The V2 signature of every bundled model: inputs/outputs -> (datatype, shape with -1 = any).
SIGNATURES = {
    "fraud_classifier": {
        "versions": ["1", "2", "3"],
        "inputs": {"input": ("FP32", [-1, 8])},
        "outputs": {"label": ("INT64", [-1]), "probabilities": ("FP32", [-1, 2])},
    },
    "delivery_time": {
        "versions": ["1"],
        "inputs": {"input": ("FP32", [-1, 6])},
        "outputs": {"variable": ("FP32", [-1, 1])},
    },
    "mlp": {
        "versions": ["1"],
        "inputs": {"input": ("FP32", [-1, 64])},
        "outputs": {"probs": ("FP32", [-1, 10])},
    },
    # the MLP with float16 weights, input and output (scripts/make-models.py mlp_fp16)
    "mlp_fp16": {
        "versions": ["1"],
        "inputs": {"input": ("FP16", [-1, 64])},
        "outputs": {"probs": ("FP16", [-1, 10])},
    },
}

NP_DTYPE = {"FP16": np.float16, "FP32": np.float32, "INT64": np.int64}
# Models whose inputs are another model's committed fixture rows, cast to their input datatype.
FIXTURE_OF = {"mlp_fp16": "mlp"}


# --------------------------------------------------------------------------------------------
# Repository data
# --------------------------------------------------------------------------------------------

def manifest(model: str) -> dict:
    with open(MODELS / model / "manifest.toml", "rb") as f:
        return tomllib.load(f)


def config_path() -> Path:
    return Path(os.environ.get("SLUICE_CONFIG") or REPO / "sluice.toml")


def routed_names(endpoint: str) -> set[str]:
    """Served entities an unpinned request to the endpoint may be answered by (traffic > 0)."""
    return {name for name, pct in TRAFFIC[endpoint].items() if pct > 0}


def answered_by(resp, endpoint: str, pinned: str | None = None) -> tuple[str, str, str]:
    """Checks the x-sluice-* / x-request-id headers of a 200 answer from an endpoint and returns
    (served entity, model, version) that answered: the served entity must be one the split routes
    to (or the pinned one), and x-sluice-model-version the version configured for it."""
    served = resp.headers.get("x-sluice-served-model")
    allowed = {pinned} if pinned is not None else routed_names(endpoint)
    assert served in allowed, \
        f"x-sluice-served-model {served!r}, expected one of {sorted(allowed)}: headers {resp.headers}"
    model, version = SERVED[endpoint][served]
    assert resp.headers.get("x-sluice-model-version") == version, \
        f"x-sluice-model-version for {served!r} must be {version!r}: headers {resp.headers}"
    assert resp.headers.get("x-request-id"), f"x-request-id missing or empty: {resp.headers}"
    return served, model, version


def fixture(model: str) -> dict:
    with open(FIXTURES / f"{model}.json") as f:
        return json.load(f)


def fixture_matrix(model: str) -> np.ndarray:
    """The committed input rows of a model as a float32 matrix (in manifest feature order)."""
    fx = fixture(model)
    if "instances" in fx:
        return np.asarray(fx["instances"], dtype=np.float32)
    features = manifest(model).get("features")
    cols = fx["columns"]
    x = np.asarray(fx["data"], dtype=np.float32)
    if features and list(cols) != list(features):
        x = x[:, [cols.index(f) for f in features]]
    return x


def batch_of(model: str, n: int) -> np.ndarray:
    """n rows of committed inputs (the fixture rows repeated if it has fewer than n), in the
    model's input datatype (float32, or float16 for an FP16 model)."""
    x = fixture_matrix(FIXTURE_OF.get(model, model))
    reps = -(-n // len(x))
    (dtype, _), = SIGNATURES[model]["inputs"].values() if model in SIGNATURES else [("FP32", None)]
    return np.ascontiguousarray(np.tile(x, (reps, 1))[:n], dtype=NP_DTYPE.get(dtype, np.float32))


# --------------------------------------------------------------------------------------------
# Reference answers (onnxruntime in Python)
# --------------------------------------------------------------------------------------------

class Reference:
    def __init__(self) -> None:
        self._sessions: dict[tuple[str, str], ort.InferenceSession] = {}

    def session(self, model: str, version: str) -> ort.InferenceSession:
        key = (model, str(version))
        if key not in self._sessions:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            self._sessions[key] = ort.InferenceSession(
                str(MODELS / model / str(version) / "model.onnx"), sess_options=opts,
                providers=["CPUExecutionProvider"])
        return self._sessions[key]

    def run(self, model: str, version: str, x: np.ndarray) -> dict[str, np.ndarray]:
        s = self.session(model, version)
        x = np.ascontiguousarray(x, dtype=np.float16 if s.get_inputs()[0].type == "tensor(float16)" else np.float32)
        outs = s.run(None, {s.get_inputs()[0].name: x})
        return {o.name: v for o, v in zip(s.get_outputs(), outs)}

    def predictions(self, model: str, version: str, x: np.ndarray) -> list:
        """What /predict must answer for rows x, built from the manifest and the ORT outputs."""
        m = manifest(model)
        outs = self.run(model, version, x)
        o = m.get("outputs", {})
        if m["problem_type"] == "regression":
            v = outs[o["value"]]
            v = v.reshape(len(x), -1)
            assert v.shape[1] == 1
            return [float(r[0]) for r in v]
        labels = m["class_labels"]
        probs = outs[o["probabilities"]]
        if "label" in o:
            idx = outs[o["label"]].reshape(-1)
        else:
            idx = np.argmax(probs, axis=1)
        return [{"label": labels[int(i)],
                 "probabilities": {labels[j]: float(p[j]) for j in range(len(labels))}}
                for i, p in zip(idx, probs)]


def assert_predictions_match(got, expected, atol: float = ATOL, what: str = "") -> None:
    """Labels and probability keys exactly equal; numbers within atol."""
    assert isinstance(got, list), f"{what}: predictions is not a list: {got!r:.300}"
    assert len(got) == len(expected), f"{what}: {len(got)} predictions, expected {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected)):
        if isinstance(e, float):
            assert isinstance(g, (int, float)) and not isinstance(g, bool), \
                f"{what}: row {i}: expected a number, got {g!r}"
            assert abs(g - e) <= atol, f"{what}: row {i}: got {g!r}, expected {e!r} (atol {atol})"
            continue
        assert isinstance(g, dict), f"{what}: row {i}: expected an object, got {g!r}"
        assert set(g) == {"label", "probabilities"}, f"{what}: row {i}: keys {sorted(g)}"
        assert g["label"] == e["label"], f"{what}: row {i}: label {g['label']!r} != {e['label']!r}"
        gp, ep = g["probabilities"], e["probabilities"]
        assert isinstance(gp, dict) and set(gp) == set(ep), \
            f"{what}: row {i}: probability keys {sorted(gp) if isinstance(gp, dict) else gp!r} != {sorted(ep)}"
        for k in ep:
            assert abs(gp[k] - ep[k]) <= atol, \
                f"{what}: row {i}: probabilities[{k!r}] = {gp[k]!r}, expected {ep[k]!r} (atol {atol})"


def assert_tensor_matches(got: np.ndarray | None, expected: np.ndarray, name: str,
                          atol: float = ATOL) -> None:
    assert got is not None, f"output {name!r} missing from the response"
    assert tuple(got.shape) == tuple(expected.shape), \
        f"output {name!r}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    if np.issubdtype(expected.dtype, np.integer):
        assert got.dtype == expected.dtype, f"output {name!r}: dtype {got.dtype}, expected {expected.dtype}"
        np.testing.assert_array_equal(got, expected, err_msg=f"output {name!r}")
    else:
        assert got.dtype == expected.dtype, f"output {name!r}: dtype {got.dtype}, expected {expected.dtype}"
        np.testing.assert_allclose(got, expected, rtol=0, atol=atol, err_msg=f"output {name!r}")


# --------------------------------------------------------------------------------------------
# /predict request bodies in every accepted format
# --------------------------------------------------------------------------------------------

def _cell(v: float):
    return float(v)


def predict_bodies(features: list[str], x: np.ndarray) -> dict[str, dict]:
    """The same rows in each MLflow/Databricks request format."""
    rows = [[_cell(v) for v in r] for r in x.tolist()]
    records = [dict(zip(features, r)) for r in rows]
    return {
        "dataframe_split": {"dataframe_split": {"columns": list(features), "data": rows}},
        "dataframe_records": {"dataframe_records": records},
        "instances_objects": {"instances": records},
        "instances_arrays": {"instances": rows},
        "inputs_columnar": {"inputs": {f: [r[i] for r in rows] for i, f in enumerate(features)}},
        "inputs_rows": {"inputs": rows},
    }


# --------------------------------------------------------------------------------------------
# Plain HTTP (stdlib http.client: exact headers, no proxies)
# --------------------------------------------------------------------------------------------

@dataclass
class Response:
    status: int
    headers: dict = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    url: str = ""
    method: str = ""

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError(
                f"{self.method} {self.url} -> {self.status}: body is not JSON ({e}): {self.body[:500]!r}"
            ) from None

    def describe(self) -> str:
        return f"{self.method} {self.url} -> {self.status} {self.body[:600]!r}"


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 30.0) -> Response:
    """One plain HTTP/1.1 request on a fresh connection; never raises on a status code.

    http.client (what urllib uses underneath) sends exactly the headers given here plus Host,
    Accept-Encoding and Content-Length; unlike urllib.request it adds no default Content-Type.
    """
    u = urllib.parse.urlsplit(url)
    conn = httplib.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        path = u.path + (f"?{u.query}" if u.query else "")
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read(), url, method)
    finally:
        conn.close()


def post_json(url: str, obj, headers: dict | None = None) -> Response:
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return http("POST", url, json.dumps(obj).encode(), h)


def post_raw(url: str, body: bytes, content_type: str | None = "application/json",
             headers: dict | None = None) -> Response:
    h = {}
    if content_type:
        h["Content-Type"] = content_type
    h.update(headers or {})
    return http("POST", url, body, h)


def get(url: str) -> Response:
    return http("GET", url)


def assert_json_error(resp: Response, status: int, mentions: str | None = None) -> str:
    """resp has the given status and a JSON body {"error": "<non-empty text>"}; returns the text."""
    assert resp.status == status, f"expected {status}: {resp.describe()}"
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], \
        f"error body must be {{\"error\": \"...\"}}: {resp.describe()}"
    if mentions is not None:
        assert mentions in body["error"], f"error text should name {mentions!r}: {resp.describe()}"
    return body["error"]


# --------------------------------------------------------------------------------------------
# Starting and stopping the gateway
# --------------------------------------------------------------------------------------------

def read_tail(path: Path, start: int = 0, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    text = data.decode("utf-8", "replace")
    if len(text) > limit:
        text = "...\n" + text[-limit:]
    return text


def stop_sluice(proc: subprocess.Popen, grace: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def demo_config_text(tmp: Path) -> str:
    """sluice.toml with its tables in `tmp / "data"` and repository paths made absolute."""
    text = (REPO / "sluice.toml").read_text()
    text = text.replace('data_dir = "data"', f'data_dir = "{tmp / "data"}"')
    text = text.replace('model_repository = "models"', f'model_repository = "{REPO / "models"}"')
    return text.replace('baseline = "models/', f'baseline = "{REPO}/models/')


def start_demo(tmp: Path, extra_args: tuple[str, ...] = ()):
    """The demo config (tables in `tmp`) on free ports without an admin token, whatever
    SLUICE_ADMIN_TOKEN says: (proc, ports, log path), as `start_sluice`."""
    config = tmp / "sluice.toml"
    config.write_text(demo_config_text(tmp))
    old = os.environ.pop("SLUICE_ADMIN_TOKEN", None)
    try:
        return start_sluice(tmp, str(config), extra_args)
    finally:
        if old is not None:
            os.environ["SLUICE_ADMIN_TOKEN"] = old


def sluice_binary() -> str:
    return os.environ.get("SLUICE_BIN") or str(REPO / "target" / "debug" / "sluice")


def start_sluice(workdir: Path, config: str | None = None, extra_args: tuple[str, ...] = ()):
    """Start a gateway (`extra_args` appended to `sluice serve`, e.g. `--test-clock`); returns
    (proc, ports dict, log path). Fails the caller with the log."""
    binary = sluice_binary()
    config = config or os.environ.get("SLUICE_CONFIG") or str(REPO / "sluice.toml")
    timeout = float(os.environ.get("SLUICE_START_TIMEOUT", "60"))
    if not os.path.isfile(binary):
        pytest.fail(f"sluice binary not found at {binary} (build it, or set SLUICE_BIN)", pytrace=False)
    if not os.path.isfile(config):
        pytest.fail(f"sluice config not found at {config} (or set SLUICE_CONFIG)", pytrace=False)

    workdir.mkdir(parents=True, exist_ok=True)
    ports_file = workdir / "ports.json"
    log_path = workdir / "sluice.log"
    if ports_file.exists():
        ports_file.unlink()
    cmd = [binary, "serve", "--config", config,
           "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--admin", "127.0.0.1:0",
           "--ports-file", str(ports_file), *extra_args]
    env = dict(os.environ)
    env.setdefault("RUST_BACKTRACE", "1")
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env)
    log.close()

    deadline = time.monotonic() + timeout
    ports = None
    while True:
        if ports_file.exists():
            try:
                ports = json.loads(ports_file.read_text())
            except ValueError:
                ports = None  # still being written
            if isinstance(ports, dict) and all(isinstance(ports.get(k), int) for k in ("http", "grpc", "admin")):
                break
        if time.monotonic() > deadline:
            stop_sluice(proc, grace=5)
            pytest.fail(f"sluice did not write {ports_file} within {timeout:.0f} s "
                        f"(ports file content: {ports!r})\ncommand: {' '.join(cmd)}\n"
                        f"--- sluice output ---\n{read_tail(log_path, limit=8000)}", pytrace=False)
        try:
            rc = proc.wait(timeout=0.05)  # doubles as the poll interval
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"sluice exited with status {rc} before writing its ports file\n"
                    f"command: {' '.join(cmd)}\n--- sluice output ---\n{read_tail(log_path, limit=8000)}",
                    pytrace=False)
    return proc, ports, log_path
