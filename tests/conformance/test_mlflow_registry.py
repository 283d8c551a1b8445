"""MLflow's Model Registry as Sluice's model source (`runtime.registry_uri`), against a real MLflow
tracking server: `mlflow server` 3.17.2 from its own venv (`.venv-mlflow`, installed by
scripts/test.sh from tests/requirements-mlflow.txt) on a loopback port, with a SQLite backend
store and its artifact proxy (`--artifacts-destination`), started once for this module and
stopped (its process group) at the end.

Models are logged and registered as a data scientist would, by mlflow_log_model.py run in that
venv (`mlflow.onnx.log_model(..., signature=infer_signature(df, outputs),
registered_model_name="fraud_classifier")`, then `MlflowClient().set_registered_model_alias`):

- version 1: models/fraud_classifier/1 (signature columns float32: "float");
- version 2: models/fraud_classifier/2 (signature columns float64: "double");
- version 3: a broken classifier built with onnx.helper: the same input and outputs, label 1
  ("fraud") with probabilities [0, 1] for every row;
- version 4: version 1's file with a `sluice.sha256` tag that does not match it;
- version 5: the always-fraud classifier with a 2 KiB tensor, which MLflow's ONNX flavor saves
  by default to a `<uuid>.data` file beside model.onnx;
- version 6: version 1's file with a tensor signature (`{"input": float32 [-1, 8]}`): MLflow's own
  scoring server (`mlflow models serve`) cannot serve a DataFrame-signature version of this
  model in any input format (its `[N, 2]` probabilities do not fit a column; measured with 3.17.2),
  so the `/invocations` comparison runs on this one.

Every version has the tags `sluice.class_labels = ["legit", "fraud"]` and `sluice.sha256`.

First the registry itself, as Sluice will read it (no gateway): the REST answers for aliases,
versions, download URIs, the artifact proxy's listings and files, the MLmodel signatures, and
the broken version under onnxruntime (always fraud, where version 1 mostly says legit).

Then one gateway (`sluice serve`, the module's config below) with three endpoints from the
registry: `fraud` (`@champion`, watch_aliases, an alias_rollout of one 50% step of 5 minutes
on the gateway's test clock (`--test-clock`, moved by `POST /debug/clock` after each batch of
requests) and 30 requests a side, a drift guardrail),
`fraud_swap` (`@staging`, watch_aliases, no alias_rollout) and `fraud_pinned`
(`entity_version = 1`):

- at start each alias is resolved and the version copied into `<data_dir>/_model_cache`
  (byte-identical to the registry's file); `/predict` answers as onnxruntime on that version;
  the serving-endpoints API shows `entity_version "@champion"` and `resolved_version`;
- `@staging` moved: `fraud_swap` swaps to the new version at once, with one history entry of
  source `registry` naming the alias and both versions;
- `@champion` moved to 2: a rollout of `fraud_classifier-2` against `champion` starts, every
  answer during it comes from the served model its header names (onnxruntime on that version),
  it is promoted and folded back: one entity `champion`, `@champion`, resolved 2, at 100%;
- `@champion` moved to 3 (the broken one): its rollout fails the drift guardrail and is rolled
  back; the registry's alias is untouched (still 3), the gateway keeps serving 2 and does not
  try 3 again on later polls; `sluice_registry_alias_version` says 3 and
  `sluice_registry_serving_version` 2;
- a serving-endpoints config update naming an alias that does not exist fails and the old
  config keeps serving.

Gateways that must not start: an alias that does not exist, a registry nobody listens on, a
version whose file does not match its `sluice.sha256` tag (and nothing of it is left in the
cache as loadable). A version saved with external tensor data is served.

`POST /invocations` of a gateway serving version 6 with `response_format = "mlflow"` answers
what `mlflow models serve -m models:/fraud_classifier/6` (run here, from the MLflow venv) answers
to the same bodies: the same keys, labels, and probabilities within 1e-6. A tensor signature
gives Sluice no feature names: the gateway serves it as a classifier taking the raw tensor.

    .venv/bin/python -m pytest -q tests/conformance/test_mlflow_registry.py

Environment: SLUICE_BIN (as for the whole suite), SLUICE_MLFLOW_VENV (default <repo>/.venv-mlflow).
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from seaweedfs import free_ports
from sluice_support import (
    MODELS, REPO, Reference, Response, assert_predictions_match, fixture_matrix, get, http, manifest,
    post_json, read_tail, sluice_binary, start_sluice, stop_sluice,
)

MODEL = "fraud_classifier"
FEATURES = manifest(MODEL)["features"]
LABELS = manifest(MODEL)["class_labels"]
ROWS = fixture_matrix(MODEL)  # float32, manifest feature order
MLFLOW_VENV = Path(os.environ.get("SLUICE_MLFLOW_VENV") or REPO / ".venv-mlflow")
LOG_SCRIPT = Path(__file__).with_name("mlflow_log_model.py")
POLL_MS = 300
ALWAYS_FRAUD = "always_fraud"  # what versions 3 and 5 are, for the expected answers
# version -> how mlflow_log_model.py logs it
VERSIONS = {
    "1": {"onnx": str(MODELS / MODEL / "1" / "model.onnx")},
    "2": {"onnx": str(MODELS / MODEL / "2" / "model.onnx"), "dtype": "float64"},
    "3": {"build": "always_fraud"},
    "4": {"onnx": str(MODELS / MODEL / "1" / "model.onnx"), "sha256": "wrong"},
    "5": {"build": "always_fraud", "external_data": True},
    "6": {"onnx": str(MODELS / MODEL / "1" / "model.onnx"), "signature": "tensor"},
}
KIND = {"1": "1", "2": "2", "3": ALWAYS_FRAUD, "4": "1", "5": ALWAYS_FRAUD, "6": "1"}
ARTIFACT_FILES = {"MLmodel", "conda.yaml", "model.onnx", "python_env.yaml", "requirements.txt"}
GUARDRAILS = "{ max_prediction_drift = 0.2, max_p99_latency_ratio = 20.0, p99_latency_slack_ms = 1000.0 }"


# --------------------------------------------------------------------------------------------
# The MLflow tracking server
# --------------------------------------------------------------------------------------------

class Mlflow:
    """`mlflow server` on a free loopback port: SQLite backend store, artifact proxy to a local
    directory, one worker, no job runner."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "mlflow.log"
        self.proc: subprocess.Popen | None = None
        self.startup_s = 0.0

    def start(self, timeout: float = 120.0) -> None:
        exe = MLFLOW_VENV / "bin" / "mlflow"
        if not exe.is_file():
            pytest.fail(f"no MLflow at {exe}: scripts/test.sh installs it (python3 -m venv .venv-mlflow && "
                        ".venv-mlflow/bin/pip install -r tests/requirements-mlflow.txt)", pytrace=False)
        (self.root / "artifacts").mkdir(parents=True, exist_ok=True)
        cmd = [str(exe), "server",
               "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
               "--artifacts-destination", str(self.root / "artifacts"),
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        # no background job runner (a second Python process the registry does not need), no
        # usage telemetry
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            # its own process group: `mlflow server` runs uvicorn as a child process
            self.proc = subprocess.Popen(cmd, cwd=str(self.root), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        while True:
            try:
                r = http("GET", f"{self.url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=5)
                if r.status == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {self.proc.returncode}\n{self.log()}", pytrace=False)
            if time.monotonic() - began > timeout:
                self.stop()
                pytest.fail(f"mlflow server did not answer within {timeout:.0f} s\n{self.log()}", pytrace=False)
            time.sleep(0.2)
        self.startup_s = time.monotonic() - began
        print(f"mlflow server up in {self.startup_s:.1f} s on {self.url}")

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # uvicorn may outlive the CLI by a moment: the group goes either way
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc = None

    def log(self) -> str:
        return f"--- mlflow server output ---\n{read_tail(self.log_path, limit=3000)}"

    # REST, as Sluice reads it
    def api(self, method: str, route: str, body=None, **query) -> Response:
        q = f"?{urllib.parse.urlencode(query)}" if query else ""
        data = json.dumps(body).encode() if body is not None else None
        return http(method, f"{self.url}{route}{q}", data, {"Content-Type": "application/json"} if data else {})

    def ok(self, method: str, route: str, body=None, **query) -> dict:
        r = self.api(method, route, body, **query)
        assert r.status == 200, f"{r.describe()}\n{self.log()}"
        return r.json()

    def alias_version(self, alias: str) -> str:
        return self.ok("GET", "/api/2.0/mlflow/registered-models/alias", name=MODEL, alias=alias)["model_version"]["version"]

    def set_alias(self, alias: str, version: str) -> None:
        """What `MlflowClient().set_registered_model_alias` sends (the version as a string: MLflow
        refuses a JSON number with 400)."""
        self.ok("POST", "/api/2.0/mlflow/registered-models/alias", {"name": MODEL, "alias": alias, "version": version})

    def artifact_dir(self, version: str) -> str:
        """The artifact proxy path of a version's model directory."""
        uri = self.ok("GET", "/api/2.0/mlflow/model-versions/get-download-uri", name=MODEL, version=version)["artifact_uri"]
        assert uri.startswith("mlflow-artifacts:/"), uri
        return uri[len("mlflow-artifacts:/"):].strip("/")

    def listing(self, version: str) -> dict[str, dict]:
        files = self.ok("GET", "/api/2.0/mlflow-artifacts/artifacts", path=self.artifact_dir(version)).get("files", [])
        return {f["path"]: f for f in files}

    def download(self, version: str, name: str) -> bytes:
        r = http("GET", f"{self.url}/api/2.0/mlflow-artifacts/artifacts/{self.artifact_dir(version)}/{name}")
        assert r.status == 200, r.describe()
        return r.body


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory):
    m = Mlflow(tmp_path_factory.mktemp("mlflow"))
    m.start()
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="module")
def registered(mlflow) -> dict[str, dict]:
    """Versions 1-5 logged and registered; @champion and @staging on 1. Version -> what the
    logging script says of it (sha256 of model.onnx as the registry serves it, tags)."""
    out = mlflow.root / "logged.json"
    cmd = [str(MLFLOW_VENV / "bin" / "python"), str(LOG_SCRIPT), "--name", MODEL,
           "--manifest", str(MODELS / MODEL / "manifest.toml"),
           "--fixture", str(REPO / "tests" / "fixtures" / "inputs" / f"{MODEL}.json"),
           "--out", str(out), "--alias", "champion=1", "--alias", "staging=1"]
    for v in sorted(VERSIONS):
        cmd += ["--version", json.dumps(VERSIONS[v])]
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.url, "MLFLOW_DISABLE_TELEMETRY": "true"}
    began = time.monotonic()
    cp = subprocess.run(cmd, cwd=str(mlflow.root), capture_output=True, text=True, timeout=300, env=env)
    assert cp.returncode == 0, f"{' '.join(cmd)} -> {cp.returncode}\n{cp.stdout[-2000:]}\n{cp.stderr[-4000:]}\n{mlflow.log()}"
    print(f"5 versions logged and registered in {time.monotonic() - began:.1f} s")
    logged = json.loads(out.read_text())
    assert [v["version"] for v in logged["versions"]] == sorted(VERSIONS), logged
    return {v["version"]: v for v in logged["versions"]}


# --------------------------------------------------------------------------------------------
# Expected answers
# --------------------------------------------------------------------------------------------

def expected(reference: Reference, version: str, x: np.ndarray) -> list:
    """What /predict must answer for rows x from registry version `version`."""
    kind = KIND[version]
    if kind == ALWAYS_FRAUD:
        return [{"label": "fraud", "probabilities": {"legit": 0.0, "fraud": 1.0}} for _ in range(len(x))]
    return reference.predictions(MODEL, kind, x)


@pytest.fixture(scope="module")
def calm_rows(reference) -> np.ndarray:
    """Fixture rows that versions 1 and 2 both call legit: a rollout between them fed these sees
    the same predicted labels on both sides (no drift), and the broken version 3 fed these
    disagrees on every row."""
    a, b = reference.predictions(MODEL, "1", ROWS), reference.predictions(MODEL, "2", ROWS)
    keep = [i for i in range(len(ROWS)) if a[i]["label"] == b[i]["label"] == "legit"]
    assert len(keep) >= 4, f"only {len(keep)} fixture rows both versions call legit"
    return ROWS[keep]


def records(x: np.ndarray) -> dict:
    return {"dataframe_records": [dict(zip(FEATURES, (float(v) for v in row))) for row in x]}


# --------------------------------------------------------------------------------------------
# The registry as Sluice reads it (no gateway)
# --------------------------------------------------------------------------------------------

def test_the_registry_answers_aliases_versions_and_artifacts_as_sluice_reads_them(mlflow, registered):
    import yaml  # PyYAML: in the test venv through kubernetes-validate

    # an alias: the version it names (a string), with its tags and aliases
    mv = mlflow.ok("GET", "/api/2.0/mlflow/registered-models/alias", name=MODEL, alias="champion")["model_version"]
    assert (mv["name"], mv["version"], mv["status"]) == (MODEL, "1", "READY"), mv
    assert sorted(mv["aliases"]) == ["champion", "staging"], mv
    tags = {t["key"]: t["value"] for t in mv["tags"]}
    assert json.loads(tags["sluice.class_labels"]) == LABELS, tags
    assert tags["sluice.sha256"] == registered["1"]["sha256"], tags
    # the registered model lists its aliases as {alias, version}
    rm = mlflow.ok("GET", "/api/2.0/mlflow/registered-models/get", name=MODEL)["registered_model"]
    assert sorted((a["alias"], a["version"]) for a in rm["aliases"]) == [("champion", "1"), ("staging", "1")], rm
    # an alias that does not exist: 400 INVALID_PARAMETER_VALUE (not 404), naming it
    r = mlflow.api("GET", "/api/2.0/mlflow/registered-models/alias", name=MODEL, alias="no-such-alias")
    assert r.status == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE", r.describe()
    assert "no-such-alias" in r.json()["message"], r.describe()
    # a version that does not exist: 404 RESOURCE_DOES_NOT_EXIST
    r = mlflow.api("GET", "/api/2.0/mlflow/model-versions/get", name=MODEL, version="99")
    assert r.status == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST", r.describe()

    for v in sorted(VERSIONS):
        mv = mlflow.ok("GET", "/api/2.0/mlflow/model-versions/get", name=MODEL, version=v)["model_version"]
        assert mv["status"] == "READY", mv
        # MLflow 3: the version's source is a logged model (models:/m-...), its artifacts are
        # under <experiment>/models/<model id>/artifacts behind the artifact proxy
        assert re.fullmatch(r"models:/m-[0-9a-f]+", mv["source"]), mv
        model_id = mv["source"].split("/")[-1]
        rel = mlflow.artifact_dir(v)
        assert re.fullmatch(rf"\d+/models/{model_id}/artifacts", rel), rel
        files = mlflow.listing(v)
        # entries are named relative to the listed directory, sizes are numbers
        assert all("/" not in p and not f["is_dir"] and isinstance(f["file_size"], int) for p, f in files.items()), files
        extra = set(files) - ARTIFACT_FILES
        if v == "5":
            assert len(extra) == 1 and re.fullmatch(r"[0-9a-f-]{36}\.data", extra.pop()), files
        else:
            assert not extra, files
        assert ARTIFACT_FILES <= set(files), files
        onnx_bytes = mlflow.download(v, "model.onnx")
        assert len(onnx_bytes) == files["model.onnx"]["file_size"]
        assert hashlib.sha256(onnx_bytes).hexdigest() == registered[v]["sha256"]
        tags = {t["key"]: t["value"] for t in mv["tags"]}
        if v == "4":
            assert tags["sluice.sha256"] != registered[v]["sha256"]
        else:
            assert tags["sluice.sha256"] == registered[v]["sha256"]
        if KIND[v] in ("1", "2"):
            # onnx.save_model wrote the repository's file back byte for byte
            assert onnx_bytes == (MODELS / MODEL / KIND[v] / "model.onnx").read_bytes(), v

        # MLmodel: the onnx flavor's file, and the signature as JSON strings inside the YAML
        mlmodel = yaml.safe_load(mlflow.download(v, "MLmodel"))
        assert mlmodel["flavors"]["onnx"]["data"] == "model.onnx", mlmodel
        assert mlmodel["model_id"] == model_id
        sig = mlmodel["signature"]
        assert isinstance(sig["inputs"], str) and isinstance(sig["outputs"], str), sig
        inputs, outputs = json.loads(sig["inputs"]), json.loads(sig["outputs"])
        col_type = "double" if VERSIONS[v].get("dtype") == "float64" else "float"
        if VERSIONS[v].get("signature") == "tensor":
            assert inputs == [{"name": "input", "type": "tensor",
                               "tensor-spec": {"dtype": "float32", "shape": [-1, len(FEATURES)]}}], inputs
        else:
            assert inputs == [{"type": col_type, "name": f, "required": True} for f in FEATURES], inputs
        assert outputs == [
            {"name": "label", "type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}},
            {"name": "probabilities", "type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 2]}},
        ], outputs


def test_the_broken_version_says_fraud_for_every_row_under_onnxruntime(mlflow, registered, reference, tmp_path):
    def session(version: str) -> ort.InferenceSession:
        d = tmp_path / version
        d.mkdir()
        for name in mlflow.listing(version):
            (d / name).write_bytes(mlflow.download(version, name))
        return ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])

    v1, v3, v5 = session("1"), session("3"), session("5")
    for s in (v3, v5):
        assert [(i.name, i.type) for i in s.get_inputs()] == [(i.name, i.type) for i in v1.get_inputs()]
        assert [(o.name, o.type) for o in s.get_outputs()] == [(o.name, o.type) for o in v1.get_outputs()]
        label, probs = s.run(None, {"input": ROWS})
        assert label.dtype == np.int64 and label.tolist() == [1] * len(ROWS)
        assert probs.dtype == np.float32 and probs.tolist() == [[0.0, 1.0]] * len(ROWS)
    # version 1 mostly says legit on the fixtures, so the broken one drifts from it
    label = v1.run(None, {"input": ROWS})[0]
    assert (label == 0).sum() > len(ROWS) / 2, label.tolist()
    # version 5's tensor is in the .data file: without it, the model does not load
    lonely = tmp_path / "5-alone"
    lonely.mkdir()
    (lonely / "model.onnx").write_bytes(mlflow.download("5", "model.onnx"))
    with pytest.raises(Exception):
        ort.InferenceSession(str(lonely / "model.onnx"), providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------------------------
# The gateway
# --------------------------------------------------------------------------------------------

def config_text(data_dir: Path, registry_uri: str, endpoints: str) -> str:
    return f"""\
[server]
data_dir = {json.dumps(str(data_dir))}

[runtime]
registry_uri = {json.dumps(registry_uri)}
registry_poll_ms = {POLL_MS}

{endpoints}"""


MODULE_ENDPOINTS = f"""\
[[endpoints]]
name = "fraud"
watch_aliases = true
inference_table = {{ enabled = true, flush_interval_ms = 100 }}

[[endpoints.served_entities]]
name = "champion"
entity_name = "{MODEL}"
entity_version = "@champion"

[endpoints.alias_rollout]
steps = [50]
interval = "5m"
min_requests = 30
guardrails = {GUARDRAILS}

[[endpoints]]
name = "fraud_swap"
watch_aliases = true

[[endpoints.served_entities]]
entity_name = "{MODEL}"
entity_version = "@staging"

[[endpoints]]
name = "fraud_pinned"

[[endpoints.served_entities]]
name = "pinned"
entity_name = "{MODEL}"
entity_version = 1
"""


@dataclass
class Gw:
    proc: subprocess.Popen
    http: str
    admin: str
    log_path: Path
    data_dir: Path

    def log(self) -> str:
        return f"--- sluice output ---\n{read_tail(self.log_path, limit=4000)}"

    def predict(self, endpoint: str, x: np.ndarray) -> tuple[Response, list]:
        r = post_json(f"{self.http}/endpoints/{endpoint}/predict", records(x))
        assert r.status == 200, f"{r.describe()}\n{self.log()}"
        return r, r.json()["predictions"]

    def entities(self, endpoint: str) -> list[dict]:
        """served_entities of the endpoint's config, as the serving-endpoints API gives them."""
        r = get(f"{self.http}/api/2.0/serving-endpoints/{endpoint}")
        assert r.status == 200, r.describe()
        return r.json()["config"]["served_entities"]

    def endpoint(self, endpoint: str) -> dict:
        r = get(f"{self.admin}/admin/endpoints/{endpoint}")
        assert r.status == 200, r.describe()
        return r.json()

    def split(self, endpoint: str) -> dict[str, int]:
        return {m["name"]: m["traffic_percentage"] for m in self.endpoint(endpoint)["served_models"]}

    def history(self, endpoint: str) -> list[dict]:
        r = get(f"{self.admin}/admin/endpoints/{endpoint}/history")
        assert r.status == 200, r.describe()
        return r.json()["history"]

    def advance(self, by: str) -> None:
        """Moves the gateway's test clock (rollouts are judged at once)."""
        r = post_json(f"{self.admin}/debug/clock", {"advance": by})
        assert r.status == 200, f"{r.describe()}\n{self.log()}"

    def rollout(self) -> dict | None:
        r = get(f"{self.admin}/rollouts/fraud")
        if r.status == 404:
            return None
        assert r.status == 200, r.describe()
        return r.json()

    def metric(self, name: str, **labels: str) -> float | None:
        """The value of the series `name` with exactly these labels (None: no such series)."""
        text = get(f"{self.admin}/metrics").body.decode()
        for line in text.splitlines():
            if not line.startswith(name + "{"):
                continue
            inner, _, value = line[len(name) + 1:].rpartition("} ")
            if dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', inner)) == labels:
                return float(value)
        return None


def wait_for(what: str, probe, timeout: float = 20.0, context=lambda: ""):
    """Polls probe() until it returns something true; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s (last: {got!r})\n{context()}", pytrace=False)
        time.sleep(0.1)


@pytest.fixture(scope="module")
def gateway(registered, mlflow, tmp_path_factory):
    root = tmp_path_factory.mktemp("registry-gw")
    cfg = root / "sluice.toml"
    cfg.write_text(config_text(root / "data", mlflow.url, MODULE_ENDPOINTS))
    proc, ports, log = start_sluice(root / "gw", config=str(cfg), extra_args=("--test-clock",))
    gw = Gw(proc, f"http://127.0.0.1:{ports['http']}", f"http://127.0.0.1:{ports['admin']}", log, root / "data")
    try:
        yield gw
    finally:
        stop_sluice(proc)


def entity(gw: Gw, endpoint: str) -> dict:
    ents = gw.entities(endpoint)
    assert len(ents) == 1, f"{endpoint}: {ents}"
    return ents[0]


def assert_cached(gw: Gw, registered: dict, version: str) -> None:
    cached = gw.data_dir / "_model_cache" / MODEL / version / "model.onnx"
    assert cached.is_file(), f"{cached} missing: {sorted(p.name for p in cached.parent.parent.glob('*'))}"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == registered[version]["sha256"], cached


def test_aliases_and_numbers_resolve_at_start_and_serve_those_versions(gateway, registered, reference):
    gw = gateway
    # fraud: @champion -> 1
    e = entity(gw, "fraud")
    assert (e["name"], e["entity_name"], e["entity_version"], e.get("resolved_version")) == \
        ("champion", MODEL, "@champion", 1), e
    r, preds = gw.predict("fraud", ROWS)
    assert r.headers.get("x-sluice-served-model") == "champion", r.headers
    assert_predictions_match(preds, expected(reference, "1", ROWS), what="fraud @champion (1)")
    # the same through the Databricks route
    r = post_json(f"{gw.http}/serving-endpoints/fraud/invocations", records(ROWS))
    assert r.status == 200, r.describe()
    assert_predictions_match(r.json()["predictions"], expected(reference, "1", ROWS), what="invocations")
    # fraud_swap: @staging -> 1, its entity named <entity_name>-<alias>
    r, preds = gw.predict("fraud_swap", ROWS)
    assert r.headers.get("x-sluice-served-model") == f"{MODEL}-staging", r.headers
    assert_predictions_match(preds, expected(reference, "1", ROWS), what="fraud_swap @staging (1)")
    # fraud_pinned: a number, from the registry too
    e = entity(gw, "fraud_pinned")
    assert (e["name"], e["entity_version"]) == ("pinned", "1"), e
    r, preds = gw.predict("fraud_pinned", ROWS)
    assert r.headers.get("x-sluice-served-model") == "pinned", r.headers
    assert_predictions_match(preds, expected(reference, "1", ROWS), what="fraud_pinned 1")
    # the version was copied into the cache as the registry serves it
    assert_cached(gw, registered, "1")
    # the watched aliases are read: registry and gateway agree
    for ep, served, alias in (("fraud", "champion", "champion"), ("fraud_swap", f"{MODEL}-staging", "staging")):
        labels = {"endpoint": ep, "served_model": served, "alias": alias}
        wait_for(f"sluice_registry_alias_version{labels} = 1",
                 lambda: gw.metric("sluice_registry_alias_version", **labels) == 1.0, context=gw.log)
        assert gw.metric("sluice_registry_serving_version", **labels) == 1.0
    # the serving-endpoints API names the alias entity as the gateway does
    e = entity(gw, "fraud_swap")
    assert (e["name"], e["entity_version"], e.get("resolved_version")) == (f"{MODEL}-staging", "@staging", 1), e


def test_an_alias_moved_without_alias_rollout_is_swapped_in_at_once(gateway, mlflow, reference):
    gw = gateway
    before = len(gw.history("fraud_swap"))
    mlflow.set_alias("staging", "2")
    moved = wait_for("a history entry of source registry on fraud_swap",
                     lambda: [h for h in gw.history("fraud_swap")[before:] if h.get("source") == "registry"],
                     context=gw.log)
    assert len(moved) == 1, moved
    reason = moved[0].get("reason") or ""
    assert "staging" in reason and re.search(r"\b1\b", reason) and re.search(r"\b2\b", reason), \
        f"the reason should name the alias and both versions: {moved[0]}"
    e = entity(gw, "fraud_swap")
    assert (e["entity_version"], e.get("resolved_version")) == ("@staging", 2), e
    # from the swap on, every answer is version 2's
    for _ in range(10):
        r, preds = gw.predict("fraud_swap", ROWS)
        assert r.headers.get("x-sluice-served-model") == f"{MODEL}-staging", r.headers
        assert_predictions_match(preds, expected(reference, "2", ROWS), what="fraud_swap after @staging -> 2")
    # later polls change nothing more
    time.sleep(6 * POLL_MS / 1000)
    assert len(gw.history("fraud_swap")) == before + 1, gw.history("fraud_swap")[before:]
    labels = {"endpoint": "fraud_swap", "served_model": f"{MODEL}-staging", "alias": "staging"}
    assert gw.metric("sluice_registry_alias_version", **labels) == 2.0
    assert gw.metric("sluice_registry_serving_version", **labels) == 2.0
    # the other endpoints did not move
    assert entity(gw, "fraud").get("resolved_version") == 1
    assert_predictions_match(gw.predict("fraud_pinned", ROWS)[1], expected(reference, "1", ROWS), what="fraud_pinned")


def rollout_events(st: dict) -> list[tuple[str, int]]:
    return [(e["event"], e["candidate_percent"]) for e in st["events"]]


def drive(gw: Gw, rows: np.ndarray, versions: dict[str, str], after: dict[str, set[str]],
          reference: Reference, timeout: float = 90.0) -> tuple[dict, collections.Counter]:
    """Sends one row per request to `fraud` until its rollout ends. While it progresses, every
    answer comes from a served model of `versions` (served model -> registry version) and is that
    version's answer; in the batch during which it ended, a served model may answer as any
    version of `after` (the rollout's end is folded into the config meanwhile)."""
    served = collections.Counter()
    deadline = time.monotonic() + timeout
    i = 0
    while True:
        st = gw.rollout()
        if st["phase"] != "progressing":
            return st, served
        assert time.monotonic() < deadline, f"the rollout did not end within {timeout:.0f} s: {st}\n{gw.log()}"
        batch = []
        for _ in range(20):
            x = rows[i % len(rows)][None, :]
            i += 1
            r, preds = gw.predict("fraud", x)
            batch.append((r.headers.get("x-sluice-served-model"), x, preds))
        # the step's interval passes on the test clock; it is judged once it has its requests
        gw.advance("5m")
        ended = gw.rollout()["phase"] != "progressing"
        for name, x, preds in batch:
            allowed = {versions[name]} if name in versions else set()
            if ended:
                allowed |= after.get(name, set())
            assert allowed, f"answered by {name!r}; the rollout serves {versions}"
            errors = []
            for v in sorted(allowed):
                try:
                    assert_predictions_match(preds, expected(reference, v, x), what=f"{name} as version {v}")
                    break
                except AssertionError as e:
                    errors.append(str(e))
            else:
                pytest.fail(f"an answer of {name!r} is none of versions {sorted(allowed)}: {errors}")
            served[name] += 1


def test_an_alias_moved_with_alias_rollout_is_rolled_out_and_promoted(gateway, mlflow, registered, reference, calm_rows):
    gw = gateway
    mlflow.set_alias("champion", "2")
    cand = f"{MODEL}-2"
    st = wait_for(f"a rollout of {cand} on fraud",
                  lambda: (s := gw.rollout()) and s.get("candidate") == cand and s["phase"] == "progressing" and s,
                  context=gw.log)
    assert st["incumbent"] == "champion", st
    assert gw.split("fraud") == {"champion": 50, cand: 50}, gw.endpoint("fraud")
    labels = {"endpoint": "fraud", "served_model": "champion", "alias": "champion"}
    wait_for("sluice_registry_alias_version = 2",
             lambda: gw.metric("sluice_registry_alias_version", **labels) == 2.0, context=gw.log)
    assert gw.metric("sluice_registry_serving_version", **labels) == 1.0, "version 1 serves while the rollout runs"

    st, served = drive(gw, calm_rows, {"champion": "1", cand: "2"}, {"champion": {"2"}}, reference)
    assert st["phase"] == "promoted", st
    assert rollout_events(st) == [("started", 50), ("promoted", 100)], st
    assert served["champion"] >= 30 and served[cand] >= 30, served

    # folded back: one entity, the alias, the new version, all the traffic
    def folded():
        ents = gw.entities("fraud")
        return len(ents) == 1 and ents[0].get("resolved_version") == 2 and ents
    (e,) = wait_for("the fraud endpoint folded back to @champion at version 2", folded,
                    context=lambda: f"{gw.entities('fraud')}\n{gw.log()}")
    assert (e["name"], e["entity_version"]) == ("champion", "@champion"), e
    assert gw.split("fraud") == {"champion": 100}, gw.endpoint("fraud")
    for _ in range(5):
        r, preds = gw.predict("fraud", ROWS)
        assert r.headers.get("x-sluice-served-model") == "champion", r.headers
        assert_predictions_match(preds, expected(reference, "2", ROWS), what="fraud after the promotion")
    assert_cached(gw, registered, "2")
    wait_for("sluice_registry_serving_version = 2",
             lambda: gw.metric("sluice_registry_serving_version", **labels) == 2.0, context=gw.log)


def test_an_alias_moved_to_a_broken_version_is_rolled_back_and_not_tried_again(gateway, mlflow, reference, calm_rows):
    gw = gateway
    e = entity(gw, "fraud")
    if e.get("resolved_version") != 2:
        pytest.fail(f"needs @champion promoted to version 2 (the test before): {e}", pytrace=False)
    mlflow.set_alias("champion", "3")
    cand = f"{MODEL}-3"
    st = wait_for(f"a rollout of {cand} on fraud",
                  lambda: (s := gw.rollout()) and s.get("candidate") == cand and s["phase"] == "progressing" and s,
                  context=gw.log)
    assert st["incumbent"] == "champion", st

    st, served = drive(gw, calm_rows, {"champion": "2", cand: "3"}, {}, reference)
    assert st["phase"] == "rolled_back", st
    failed = {c["name"]: c for c in st["last_checks"] if not c["passed"]}
    assert set(failed) == {"prediction_drift"}, st["last_checks"]
    assert failed["prediction_drift"]["value"] > 0.2, failed
    assert rollout_events(st) == [("started", 50), ("rolled_back", 0)], st

    # the registry is not written to: the alias still names 3
    assert mlflow.alias_version("champion") == "3"
    # version 2 serves alone
    (e,) = wait_for("the candidate entity removed",
                    lambda: len(ents := gw.entities("fraud")) == 1 and ents,
                    context=lambda: f"{gw.entities('fraud')}\n{gw.log()}")
    assert (e["name"], e["entity_version"], e.get("resolved_version")) == ("champion", "@champion", 2), e
    assert gw.split("fraud") == {"champion": 100}, gw.endpoint("fraud")
    for _ in range(5):
        r, preds = gw.predict("fraud", ROWS)
        assert r.headers.get("x-sluice-served-model") == "champion", r.headers
        assert_predictions_match(preds, expected(reference, "2", ROWS), what="fraud after the rollback")
    # and 3 is not tried again on later polls
    history = gw.history("fraud")
    time.sleep(8 * POLL_MS / 1000)
    again = gw.rollout()
    assert (again["candidate"], again["phase"], again["events"]) == (cand, "rolled_back", st["events"]), again
    assert gw.history("fraud") == history, gw.history("fraud")[len(history):]
    labels = {"endpoint": "fraud", "served_model": "champion", "alias": "champion"}
    assert gw.metric("sluice_registry_alias_version", **labels) == 3.0
    assert gw.metric("sluice_registry_serving_version", **labels) == 2.0


def test_a_config_update_naming_an_unknown_alias_fails_and_the_old_config_serves(gateway, reference):
    gw = gateway
    body = {"served_entities": [{"name": "pinned", "entity_name": MODEL, "entity_version": "@no-such-alias"}],
            "traffic_config": {"routes": [{"served_model_name": "pinned", "traffic_percentage": 100}]}}
    r = http("PUT", f"{gw.http}/api/2.0/serving-endpoints/fraud_pinned/config", json.dumps(body).encode(),
             {"Content-Type": "application/json"})
    if r.status == 200:
        # applied in the background: it fails, and says why
        def failed():
            d = get(f"{gw.http}/api/2.0/serving-endpoints/fraud_pinned").json()
            return d["state"]["config_update"] != "IN_PROGRESS" and d
        d = wait_for("the update to end", failed, context=gw.log)
        assert d["state"]["config_update"] == "UPDATE_FAILED", d
        messages = " ".join(x["state"]["deployment_state_message"]
                            for x in d.get("pending_config", {}).get("served_entities", []))
        assert "no-such-alias" in messages, d
    else:
        # or refused at once, naming the alias
        assert 400 <= r.status < 500, r.describe()
        assert "no-such-alias" in r.json().get("message", ""), r.describe()
    e = entity(gw, "fraud_pinned")
    assert (e["name"], e["entity_version"]) == ("pinned", "1"), e
    assert_predictions_match(gw.predict("fraud_pinned", ROWS)[1], expected(reference, "1", ROWS),
                             what="fraud_pinned after the failed update")


# --------------------------------------------------------------------------------------------
# Gateways of their own
# --------------------------------------------------------------------------------------------

def one_endpoint(version: str) -> str:
    v = json.dumps(version) if version.startswith("@") else version
    return f"""\
[[endpoints]]
name = "fraud"

[[endpoints.served_entities]]
name = "only"
entity_name = "{MODEL}"
entity_version = {v}
"""


def serve_refused(root: Path, config: str, timeout: float = 90.0) -> tuple[int, str, str]:
    """Runs `sluice serve` on a config it must refuse; returns (exit status, stdout, stderr). It
    must exit, not serve (write its ports file)."""
    binary = sluice_binary()
    if not os.path.isfile(binary):
        pytest.fail(f"sluice binary not found at {binary} (build it, or set SLUICE_BIN)", pytrace=False)
    root.mkdir(parents=True, exist_ok=True)
    cfg, ports = root / "sluice.toml", root / "ports.json"
    cfg.write_text(config)
    out_path, err_path = root / "stdout.log", root / "stderr.log"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([binary, "serve", "--config", str(cfg), "--http", "127.0.0.1:0",
                                 "--grpc", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--ports-file", str(ports)],
                                cwd=str(REPO), stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if ports.exists() or time.monotonic() > deadline:
            stop_sluice(proc, grace=5)
            pytest.fail(f"sluice {'started' if ports.exists() else 'did not exit within %.0f s' % timeout} on a "
                        f"config it must refuse:\n{config}\n--- stderr ---\n{read_tail(err_path)}", pytrace=False)
        time.sleep(0.05)
    return proc.returncode, out_path.read_text(errors="replace"), err_path.read_text(errors="replace")


def test_a_gateway_whose_alias_does_not_exist_does_not_start(registered, mlflow, tmp_path):
    rc, _, err = serve_refused(tmp_path, config_text(tmp_path / "data", mlflow.url, one_endpoint("@no-such-alias")))
    assert rc != 0
    assert "no-such-alias" in err, err[-3000:]


def test_a_gateway_whose_registry_cannot_be_reached_does_not_start(tmp_path):
    port = free_ports(1)[0]  # nobody listens there
    rc, _, err = serve_refused(tmp_path, config_text(tmp_path / "data", f"http://127.0.0.1:{port}", one_endpoint("@champion")))
    assert rc != 0
    assert f"127.0.0.1:{port}" in err, err[-3000:]


def test_a_version_whose_file_does_not_match_its_sha256_tag_is_refused(registered, mlflow, tmp_path):
    rc, _, err = serve_refused(tmp_path, config_text(tmp_path / "data", mlflow.url, one_endpoint("4")))
    assert rc != 0
    assert "SHA-256" in err, err[-3000:]
    # nothing of it is in the cache as a loadable version
    assert not (tmp_path / "data" / "_model_cache" / MODEL / "4" / "model.onnx").exists()


def test_a_version_saved_with_external_tensor_data_is_served(registered, mlflow, reference, tmp_path):
    cfg = tmp_path / "sluice.toml"
    cfg.write_text(config_text(tmp_path / "data", mlflow.url, one_endpoint("5")))
    proc, ports, log = start_sluice(tmp_path / "gw", config=str(cfg))
    try:
        r = post_json(f"http://127.0.0.1:{ports['http']}/endpoints/fraud/predict", records(ROWS))
        assert r.status == 200, f"{r.describe()}\n{read_tail(log)}"
        assert_predictions_match(r.json()["predictions"], expected(reference, "5", ROWS), what="version 5")
    finally:
        stop_sluice(proc)
    cached = tmp_path / "data" / "_model_cache" / MODEL / "5"
    data = [n for n in mlflow.listing("5") if n.endswith(".data")]
    assert (cached / data[0]).is_file(), sorted(p.name for p in cached.iterdir())


def test_invocations_answers_as_mlflow_models_serve_does_for_the_same_version(registered, mlflow, tmp_path):
    """MLflow's scoring server and Sluice's `/invocations`, the same registry version, the same
    bodies: the same answers."""
    port = free_ports(1)[0]
    serve_log = tmp_path / "mlflow-serve.log"
    # uvicorn is run by name: the venv's bin first on PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.url, "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": f"{MLFLOW_VENV / 'bin'}:{os.environ.get('PATH', '')}"}
    with open(serve_log, "wb") as log:
        serve = subprocess.Popen([str(MLFLOW_VENV / "bin" / "mlflow"), "models", "serve",
                                  "-m", f"models:/{MODEL}/6", "--env-manager", "local",
                                  "--host", "127.0.0.1", "-p", str(port), "-w", "1"],
                                 cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    cfg = tmp_path / "sluice.toml"
    cfg.write_text(config_text(tmp_path / "data", mlflow.url, f"""\
[[endpoints]]
name = "scoring"
response_format = "mlflow"
served_entities = [{{ name = "v6", entity_name = "{MODEL}", entity_version = 6 }}]
"""))
    proc, ports, _ = start_sluice(tmp_path / "gw", config=str(cfg))
    try:
        ours = f"http://127.0.0.1:{ports['http']}/invocations"
        theirs = f"http://127.0.0.1:{port}/invocations"

        def theirs_up():
            assert serve.poll() is None, f"mlflow models serve exited\n{read_tail(serve_log, limit=3000)}"
            try:
                return http("GET", f"http://127.0.0.1:{port}/ping").status == 200
            except OSError:
                return False
        wait_for("mlflow models serve answers /ping", theirs_up, timeout=120,
                 context=lambda: read_tail(serve_log, limit=3000))
        x = ROWS[:6]
        bodies = {
            "inputs by name": {"inputs": {"input": x.tolist()}},
            "inputs as a list": {"inputs": x.tolist()},
            "instances": {"instances": x.tolist()},
        }
        compared = 0
        for what, body in bodies.items():
            data = json.dumps(body).encode()
            a = http("POST", theirs, data, {"Content-Type": "application/json"})
            b = http("POST", ours, data, {"Content-Type": "application/json"})
            print(f"{what}: mlflow models serve {a.status}, sluice {b.status}")
            if a.status != 200:
                continue
            assert b.status == 200, f"{what}: MLflow answers 200, Sluice {b.describe()}"
            want, got = a.json()["predictions"], b.json()["predictions"]
            assert set(got) == set(want) == {"label", "probabilities"}, (what, want, got)
            assert got["label"] == want["label"], (what, want, got)
            np.testing.assert_allclose(np.array(got["probabilities"]), np.array(want["probabilities"]), atol=1e-6)
            compared += 1
        assert compared >= 1, "mlflow models serve answered none of the bodies"
        assert b.headers.get("served-model-name") == "v6", b.headers
    finally:
        stop_sluice(proc)
        try:
            os.killpg(serve.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        serve.wait(timeout=10)
