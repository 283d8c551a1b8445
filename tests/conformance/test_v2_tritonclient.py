"""KServe V2 through Triton's own Python clients (tritonclient.http and tritonclient.grpc)."""
from __future__ import annotations

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from sluice_support import SIGNATURES, assert_tensor_matches, batch_of, fixture

STAT_KEYS = ["success", "fail", "queue", "compute_input", "compute_infer", "compute_output",
             "cache_hit", "cache_miss"]
REQUIRED_STAT_KEYS = ["success", "queue", "compute_input", "compute_infer", "compute_output",
                      "cache_hit", "cache_miss"]


class V2:
    """One interface over both tritonclient flavours; answers are normalised to plain dicts."""

    def __init__(self, proto: str, sluice):
        self.proto = proto
        if proto == "http":
            self.mod = httpclient
            self.client = httpclient.InferenceServerClient(sluice.http_hostport, connection_timeout=30,
                                                           network_timeout=60)
        else:
            self.mod = grpcclient
            self.client = grpcclient.InferenceServerClient(sluice.grpc)

    def close(self):
        self.client.close()

    # --- control plane ------------------------------------------------------------------------
    def server_metadata(self) -> dict:
        md = self.client.get_server_metadata()
        if self.proto == "http":
            return md
        return {"name": md.name, "version": md.version, "extensions": list(md.extensions)}

    def model_metadata(self, model: str, version: str = "") -> dict:
        md = self.client.get_model_metadata(model, version)
        if self.proto == "http":
            return md

        def t(ts):
            return [{"name": x.name, "datatype": x.datatype, "shape": [int(d) for d in x.shape]} for x in ts]
        return {"name": md.name, "versions": list(md.versions), "platform": md.platform,
                "inputs": t(md.inputs), "outputs": t(md.outputs)}

    def model_config(self, model: str, version: str = "") -> dict:
        cfg = self.client.get_model_config(model, version)
        if self.proto == "http":
            return cfg
        c = cfg.config

        def t(ts):
            return [{"name": x.name, "data_type": model_config_pb2.DataType.Name(x.data_type),
                     "dims": [int(d) for d in x.dims]} for x in ts]
        return {"name": c.name, "max_batch_size": int(c.max_batch_size), "input": t(c.input),
                "output": t(c.output)}

    def statistics(self, model: str, version: str = "") -> list[dict]:
        st = self.client.get_inference_statistics(model, version)
        if self.proto == "http":
            assert isinstance(st, dict) and isinstance(st.get("model_stats"), list), f"stats: {st!r:.500}"
            return st["model_stats"]
        out = []
        for m in st.model_stats:
            out.append({
                "name": m.name, "version": m.version,
                "inference_count": int(m.inference_count), "execution_count": int(m.execution_count),
                "inference_stats": {k: {"count": int(getattr(m.inference_stats, k).count),
                                        "ns": int(getattr(m.inference_stats, k).ns)} for k in STAT_KEYS},
            })
        return out

    # --- inference ----------------------------------------------------------------------------
    def make_input(self, x: np.ndarray, binary: bool = True, name: str = "input"):
        inp = self.mod.InferInput(name, list(x.shape), np_to_triton_dtype(x.dtype))
        if self.proto == "http":
            inp.set_data_from_numpy(x, binary_data=binary)
        else:
            inp.set_data_from_numpy(x)
        return inp

    def make_output(self, name: str, binary: bool = True):
        if self.proto == "http":
            return self.mod.InferRequestedOutput(name, binary_data=binary)
        return self.mod.InferRequestedOutput(name)

    def infer(self, model, x, version="", outputs=None, binary_in=True, binary_out=True, **kw):
        outs = None if outputs is None else [self.make_output(o, binary_out) for o in outputs]
        return self.client.infer(model, [self.make_input(x, binary_in)], model_version=version,
                                 outputs=outs, **kw)

    def output_names(self, result) -> list[str]:
        if self.proto == "http":
            return [o["name"] for o in result.get_response().get("outputs", [])]
        return [o.name for o in result.get_response().outputs]

    def output_meta(self, result, name) -> tuple[str, list[int]]:
        if self.proto == "http":
            o = result.get_output(name)
            return o["datatype"], list(o["shape"])
        for o in result.get_response().outputs:
            if o.name == name:
                return o.datatype, [int(d) for d in o.shape]
        raise AssertionError(f"no output {name!r}")

    def response_id(self, result) -> str:
        if self.proto == "http":
            return result.get_response().get("id")
        return result.get_response().id

    def response_version(self, result) -> str:
        if self.proto == "http":
            return result.get_response().get("model_version", "")
        return result.get_response().model_version


@pytest.fixture(scope="module", params=["http", "grpc"])
def v2(request, sluice):
    c = V2(request.param, sluice)
    yield c
    c.close()


@pytest.fixture(scope="module")
def http_v2(sluice):
    c = V2("http", sluice)
    yield c
    c.close()


def check_result(v2, result, reference, model, version, x, names=None):
    exp = reference.run(model, version or "1", x)
    names = list(exp) if names is None else names
    assert sorted(v2.output_names(result)) == sorted(names), \
        f"response outputs {v2.output_names(result)}, expected {names}"
    for name in names:
        dtype, shape = v2.output_meta(result, name)
        assert dtype == SIGNATURES[model]["outputs"][name][0], f"{name}: datatype {dtype}"
        assert shape == list(exp[name].shape), f"{name}: shape {shape}, expected {list(exp[name].shape)}"
        assert_tensor_matches(result.as_numpy(name), exp[name], name)


# Model cases; fraud_classifier is always asked for with an explicit version.
CASES = [("fraud_classifier", "1"), ("fraud_classifier", "2"), ("delivery_time", ""), ("mlp", ""),
         ("delivery_time", "1"), ("mlp", "1"), ("fraud_classifier", "3"), ("mlp_fp16", "")]
CASE_IDS = [f"{m}@{v or 'default'}" for m, v in CASES]
# every HTTP tensor encoding, in and out: one case of each model, FP16 included
ENCODING_CASES = CASES[:4] + [("mlp_fp16", "")]
ENCODING_IDS = [f"{m}@{v or 'default'}" for m, v in ENCODING_CASES]


# ---------------------------------------------------------------------------------------------
# control plane
# ---------------------------------------------------------------------------------------------

def test_server_live_and_ready(v2):
    assert v2.client.is_server_live() is True
    assert v2.client.is_server_ready() is True


def test_server_metadata_extensions(v2):
    md = v2.server_metadata()
    assert md.get("name"), f"server metadata without a name: {md}"
    ext = md.get("extensions")
    assert isinstance(ext, list), f"server metadata without an extensions list: {md}"
    assert "binary_tensor_data" in ext and "model_configuration" in ext, f"extensions: {ext}"


@pytest.mark.parametrize("model", list(SIGNATURES))
def test_model_ready(v2, model):
    assert v2.client.is_model_ready(model) is True
    for version in SIGNATURES[model]["versions"]:
        assert v2.client.is_model_ready(model, version) is True, f"{model} v{version} not ready"


def test_unknown_model_not_ready(v2):
    for model, version in [("no_such_model", ""), ("fraud_classifier", "99")]:
        try:
            ready = v2.client.is_model_ready(model, version)
        except InferenceServerException:
            continue  # gRPC may answer with an error status instead
        assert ready is False, f"{model} v{version or '-'} reported ready"


@pytest.mark.parametrize("model", list(SIGNATURES))
def test_model_metadata(v2, model):
    sig = SIGNATURES[model]
    for version in [""] + sig["versions"]:
        md = v2.model_metadata(model, version)
        assert md["name"] == model, md
        if version == "":
            assert sorted(md["versions"]) == sorted(sig["versions"]), f"versions: {md['versions']}"
        else:
            assert version in md["versions"], f"v{version} metadata lists versions {md['versions']}"
        got_in = {t["name"]: (t["datatype"], list(t["shape"])) for t in md["inputs"]}
        got_out = {t["name"]: (t["datatype"], list(t["shape"])) for t in md["outputs"]}
        assert got_in == sig["inputs"], f"inputs: {md['inputs']}"
        assert got_out == sig["outputs"], f"outputs: {md['outputs']}"


@pytest.mark.parametrize("model", list(SIGNATURES))
def test_model_config(v2, model):
    sig = SIGNATURES[model]
    cfg = v2.model_config(model)
    assert cfg.get("name") == model, cfg
    mbs = cfg.get("max_batch_size", 0)
    assert isinstance(mbs, int) and mbs >= 0, f"max_batch_size: {mbs!r}"
    ins = {t["name"]: t for t in cfg.get("input", [])}
    outs = {t["name"]: t for t in cfg.get("output", [])}
    assert set(ins) == set(sig["inputs"]), f"config inputs {list(ins)}"
    assert set(outs) == set(sig["outputs"]), f"config outputs {list(outs)}"
    for table, got in ((sig["inputs"], ins), (sig["outputs"], outs)):
        for name, (dtype, shape) in table.items():
            t = got[name]
            if "data_type" in t:
                assert t["data_type"] == f"TYPE_{dtype}", f"{name}: data_type {t['data_type']}"
            if "dims" in t:
                want = [shape[1:]] if mbs > 0 else [shape]
                if mbs > 0 and len(shape) == 1:
                    want.append([1])  # Triton writes a batch-only tensor as dims [1] + reshape []
                assert [int(d) for d in t["dims"]] in want, \
                    f"{name}: dims {t['dims']} with max_batch_size {mbs}, expected one of {want}"


def _stats_entry(entries, model, version):
    for e in entries:
        if e.get("name") == model and str(e.get("version")) == version:
            return e
    raise AssertionError(f"no statistics entry for {model} v{version}: {entries!r:.800}")


@pytest.mark.parametrize("model,version", [("mlp", "1"), ("fraud_classifier", "2")])
def test_statistics(v2, reference, model, version):
    """The statistics extension is advertised, and its counters grow with an inference."""
    ext = v2.server_metadata()["extensions"]
    assert "statistics" in ext, f"server metadata does not advertise the statistics extension: {ext}"
    before = _stats_entry(v2.statistics(model, version), model, version)
    before_all = _stats_entry(v2.statistics(model), model, version)
    for e in (before, before_all):
        for k in ("name", "version", "inference_count", "execution_count", "inference_stats"):
            assert k in e, f"statistics entry without {k!r}: {e}"
        for k in REQUIRED_STAT_KEYS:
            d = e["inference_stats"].get(k)
            assert isinstance(d, dict) and isinstance(d.get("count"), int) and isinstance(d.get("ns"), int), \
                f"inference_stats.{k} must have integer count and ns: {e['inference_stats']}"
    x = batch_of(model, 4)
    v2.infer(model, x, version=version)
    after = _stats_entry(v2.statistics(model, version), model, version)
    s0, s1 = before["inference_stats"], after["inference_stats"]
    assert after["inference_count"] >= before["inference_count"] + 4, (before, after)
    assert after["execution_count"] > before["execution_count"], (before, after)
    for k in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert s1[k]["count"] > s0[k]["count"], f"inference_stats.{k}.count did not grow: {s0[k]} -> {s1[k]}"
    assert s1["compute_input"]["count"] == s1["compute_infer"]["count"] == s1["compute_output"]["count"], \
        f"compute counts must be equal (perf_analyzer requires it): {s1}"


def test_statistics_list_every_loaded_version(v2):
    """Statistics without a model list every loaded version of every model; with a model and no
    version, every version of that model (fraud_classifier has three)."""
    ext = v2.server_metadata()["extensions"]
    assert "statistics" in ext, f"server metadata does not advertise the statistics extension: {ext}"
    want = sorted((m, v) for m, sig in SIGNATURES.items() for v in sig["versions"])
    got = sorted((e.get("name"), str(e.get("version"))) for e in v2.statistics(""))
    assert got == want, f"statistics of all models list {got}, expected {want}"
    for model, sig in SIGNATURES.items():
        got = sorted((e.get("name"), str(e.get("version"))) for e in v2.statistics(model))
        assert got == sorted((model, v) for v in sig["versions"]), f"statistics of {model}: {got}"


# ---------------------------------------------------------------------------------------------
# inference
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model,version", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("n", [1, 16])
@pytest.mark.parametrize("listed", [True, False], ids=["outputs_listed", "no_outputs"])
def test_infer_matches_reference(v2, reference, model, version, n, listed):
    x = batch_of(model, n)
    outputs = list(SIGNATURES[model]["outputs"]) if listed else None
    result = v2.infer(model, x, version=version, outputs=outputs)
    check_result(v2, result, reference, model, version, x)


@pytest.mark.parametrize("model,version", ENCODING_CASES, ids=ENCODING_IDS)
@pytest.mark.parametrize("n", [1, 16])
@pytest.mark.parametrize("binary_in", [False, True], ids=["json_in", "binary_in"])
@pytest.mark.parametrize("binary_out", [False, True], ids=["json_out", "binary_out"])
def test_http_tensor_encodings(http_v2, reference, model, version, n, binary_in, binary_out):
    x = batch_of(model, n)
    outputs = list(SIGNATURES[model]["outputs"])
    result = http_v2.infer(model, x, version=version, outputs=outputs, binary_in=binary_in,
                           binary_out=binary_out)
    check_result(http_v2, result, reference, model, version, x)
    for name in outputs:
        out = result.get_output(name)
        if binary_out:
            size = (out.get("parameters") or {}).get("binary_data_size")
            assert isinstance(size, int) and size > 0, f"binary output asked, got {out}"
            assert "data" not in out, f"binary output {name} also carries JSON data"
        else:
            assert "data" in out, f"JSON output asked, got {out}"
            assert "binary_data_size" not in (out.get("parameters") or {}), out


@pytest.mark.parametrize("n", [1, 16])
@pytest.mark.parametrize("subset", [["probabilities"], ["label"]])
def test_infer_subset_of_outputs(v2, reference, n, subset):
    x = batch_of("fraud_classifier", n)
    result = v2.infer("fraud_classifier", x, version="1", outputs=subset)
    check_result(v2, result, reference, "fraud_classifier", "1", x, names=subset)
    other = ({"label", "probabilities"} - set(subset)).pop()
    assert result.as_numpy(other) is None, f"{other} returned although only {subset} was requested"


def test_fraud_versions_differ_as_expected(v2, reference):
    fx = fixture("fraud_classifier")
    x = batch_of("fraud_classifier", 16)
    r1 = v2.infer("fraud_classifier", x, version="1")
    r2 = v2.infer("fraud_classifier", x, version="2")
    check_result(v2, r1, reference, "fraud_classifier", "1", x)
    check_result(v2, r2, reference, "fraud_classifier", "2", x)
    for r, want in ((r1, "1"), (r2, "2")):
        got = v2.response_version(r)
        assert got in ("", want), f"response model_version {got!r} for a v{want} request"
    l1, l2 = r1.as_numpy("label"), r2.as_numpy("label")
    rows = fx["disagreeing_rows"]
    assert rows and all(l1[i] != l2[i] for i in rows), \
        f"v1 labels {l1[rows].tolist()} vs v2 labels {l2[rows].tolist()} on the disagreeing rows"


def test_fraud_unversioned_answers_with_one_version(v2, reference):
    x = batch_of("fraud_classifier", 16)
    result = v2.infer("fraud_classifier", x)
    labels = result.as_numpy("label")
    assert labels is not None
    versions = SIGNATURES["fraud_classifier"]["versions"]
    matches = [v for v in versions
               if np.array_equal(labels, reference.run("fraud_classifier", v, x)["label"])]
    assert len(matches) == 1, f"unversioned labels {labels.tolist()} match versions {matches}"
    check_result(v2, result, reference, "fraud_classifier", matches[0], x)
    got = v2.response_version(result)
    assert got in ("", matches[0]), f"response model_version {got!r}, but the answer is v{matches[0]}'s"


@pytest.mark.parametrize("request_id", ["conformance-req-1", "7f3c2a9e-0b1d-4c55-9a8e-1234567890ab"])
def test_request_id_echoed(v2, request_id):
    result = v2.infer("mlp", batch_of("mlp", 1), request_id=request_id)
    assert v2.response_id(result) == request_id


def test_unknown_request_parameters_ignored(v2, reference):
    x = batch_of("mlp", 2)
    result = v2.infer("mlp", x, parameters={"sluice_conformance_unknown": "ignored",
                                            "another_unknown_flag": True})
    check_result(v2, result, reference, "mlp", "", x)


def test_grpc_perf_analyzer_request(sluice, reference):
    """The exact ModelInfer perf_analyzer sends (tritonclient refuses to send the reserved
    triton_enable_empty_final_response parameter, so this goes through a bare stub)."""
    x = batch_of("mlp", 1)
    req = service_pb2.ModelInferRequest(model_name="mlp")
    req.parameters["triton_enable_empty_final_response"].bool_param = True
    req.inputs.add(name="input", datatype="FP32", shape=[1, 64])
    req.outputs.add(name="probs")
    req.raw_input_contents.append(np.ascontiguousarray(x, dtype="<f4").tobytes())
    with grpc.insecure_channel(sluice.grpc) as ch:
        resp = service_pb2_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=30)
    assert [o.name for o in resp.outputs] == ["probs"], resp
    assert len(resp.raw_output_contents) == 1, f"no raw_output_contents: {resp}"
    out = np.frombuffer(resp.raw_output_contents[0], dtype="<f4").reshape([int(d) for d in resp.outputs[0].shape])
    assert_tensor_matches(out, reference.run("mlp", "1", x)["probs"], "probs")


def test_grpc_uses_raw_output_contents(sluice, reference):
    c = V2("grpc", sluice)
    try:
        x = batch_of("fraud_classifier", 16)
        result = c.infer("fraud_classifier", x, version="1")
        resp = result.get_response()
        assert len(resp.raw_output_contents) == len(resp.outputs) == 2, \
            f"{len(resp.raw_output_contents)} raw contents for {len(resp.outputs)} outputs"
        exp = reference.run("fraud_classifier", "1", x)
        for out, raw in zip(resp.outputs, resp.raw_output_contents):
            dt = np.int64 if out.datatype == "INT64" else np.float32
            arr = np.frombuffer(raw, dtype="<" + np.dtype(dt).str[1:]).reshape([int(d) for d in out.shape])
            assert_tensor_matches(arr, exp[out.name], out.name)
    finally:
        c.close()


def test_fp16_mlp_is_the_fp32_mlp_within_half_precision(v2, reference):
    """The FP16 MLP (the FP32 MLP's weights rounded to half precision) sent float16 numpy arrays:
    its answers are onnxruntime-in-Python's for the same model (float16, the check above), and
    within 2e-3 of the float32 MLP's with the same classes (measured: 4.6e-4 on the fixture)."""
    x = batch_of("mlp_fp16", 16)
    assert x.dtype == np.float16
    got = v2.infer("mlp_fp16", x).as_numpy("probs")
    assert got.dtype == np.float16, got.dtype
    want = reference.run("mlp", "1", x.astype(np.float32))["probs"]
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=0, atol=2e-3)
    assert (got.argmax(axis=1) == want.argmax(axis=1)).all()


def test_grpc_fp16_needs_raw_contents(sluice):
    """KServe's InferTensorContents has no FP16 field: typed contents are refused, by name."""
    req = service_pb2.ModelInferRequest(model_name="mlp_fp16")
    t = req.inputs.add(name="input", datatype="FP16", shape=[1, 64])
    t.contents.fp32_contents.extend([0.5] * 64)
    with grpc.insecure_channel(sluice.grpc) as ch:
        with pytest.raises(grpc.RpcError) as ei:
            service_pb2_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=30)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, ei.value
    assert "raw_input_contents" in ei.value.details(), ei.value.details()


# ---------------------------------------------------------------------------------------------
# client-visible errors
# ---------------------------------------------------------------------------------------------

def _assert_well_formed(v2, exc: InferenceServerException) -> None:
    # tritonclient.http reads the "error" member of the body; a body it cannot decode shows here.
    assert "exception occurred in the client" not in str(exc), f"{v2.proto}: {exc}"


def test_unknown_model_raises(v2):
    x = batch_of("mlp", 1)
    with pytest.raises(InferenceServerException) as ei:
        v2.infer("no_such_model", x)
    _assert_well_formed(v2, ei.value)
    with pytest.raises(InferenceServerException) as ei:
        v2.model_metadata("no_such_model")
    _assert_well_formed(v2, ei.value)
    with pytest.raises(InferenceServerException) as ei:
        v2.model_config("no_such_model")
    _assert_well_formed(v2, ei.value)
    if v2.proto == "http":
        assert str(ei.value.status()) == "404", f"status {ei.value.status()}: {ei.value}"


def test_unknown_version_raises(v2):
    with pytest.raises(InferenceServerException):
        v2.infer("fraud_classifier", batch_of("fraud_classifier", 1), version="99")
    with pytest.raises(InferenceServerException):
        v2.model_metadata("fraud_classifier", "99")


def test_wrong_shape_raises_invalid_argument(v2):
    x = batch_of("mlp", 2)[:, :63].copy()  # mlp wants 64 columns
    with pytest.raises(InferenceServerException) as ei:
        v2.infer("mlp", x)
    status = str(ei.value.status())
    assert status in ("400", "StatusCode.INVALID_ARGUMENT"), f"status {status}: {ei.value}"


def test_still_serving_after_errors(v2, reference):
    x = batch_of("delivery_time", 16)
    check_result(v2, v2.infer("delivery_time", x), reference, "delivery_time", "", x)
