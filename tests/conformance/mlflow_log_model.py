"""Registers ONNX models in a real MLflow Model Registry, as a data scientist would.

Runs in MLflow's own venv (`.venv-mlflow/bin/python`, from tests/requirements-mlflow.txt), not in
the test venv; the tracking server is the one MLFLOW_TRACKING_URI names. Used by
test_mlflow_registry.py:

    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 .venv-mlflow/bin/python \\
        tests/conformance/mlflow_log_model.py --name fraud_classifier \\
        --manifest models/fraud_classifier/manifest.toml \\
        --fixture tests/fixtures/inputs/fraud_classifier.json \\
        --version '{"onnx": "models/fraud_classifier/1/model.onnx"}' \\
        --version '{"build": "always_fraud", "dtype": "float64"}' \\
        --alias champion=1

Each --version is logged in a run of its own with `mlflow.onnx.log_model(..., name="model",
signature=..., registered_model_name=NAME)`, so it becomes the model's next version. Its
signature is `infer_signature(df, {"label": int64 [N], "probabilities": float32 [N, 2]})`, where df
has the manifest's features as columns (the fixture rows, as float32 or, with `"dtype":
"float64"`, float64). Every version gets the tags `sluice.class_labels` (the manifest's class
labels, a JSON list) and `sluice.sha256` (hex SHA-256 of model.onnx as the registry serves it,
read back from the registry; `"sha256": "wrong"` sets a digest of other bytes; `"sha256": "none"`
sets none). `{"build": "always_fraud"}` logs a classifier built here with onnx.helper: the same
input and outputs as the fraud classifier, answering label 1 with probabilities [0, 1] for every
row (`"external_data": true`: with a 2 KiB initializer, which MLflow's ONNX flavor saves by default
to a `<uuid>.data` file beside model.onnx). Then each --alias ALIAS=VERSION is set with
`MlflowClient().set_registered_model_alias`.

Prints (or writes to --out) one JSON object: {"versions": [{"version", "run_id", "model_uri", "source", "sha256",
"tags"}...], "aliases": {...}}.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import tomllib

import numpy as np
import pandas as pd
import onnx
import onnx.numpy_helper
from onnx import TensorProto, helper

import mlflow
import mlflow.onnx
from mlflow import MlflowClient
from mlflow.models import infer_signature


def always_fraud_model(big: bool = False) -> onnx.ModelProto:
    """input float [N, 8] -> label int64 [N] (all 1), probabilities float [N, 2] (all [0, 1]).

    With `big`, the [0, 1] row is row 0 of a [256, 2] float initializer (2 KiB): MLflow's
    `log_model` (save_as_external_data=True by default) then writes that tensor to a
    `<uuid>.data` file beside model.onnx, which the model cannot be loaded without."""
    nodes = [
        helper.make_node("Shape", ["input"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["n"]),  # [N]
        helper.make_node("ConstantOfShape", ["n"], ["label"],
                         value=helper.make_tensor("fraud", TensorProto.INT64, [1], [1])),
        helper.make_node("Concat", ["n", "one"], ["n_by_1"], axis=0),  # [N, 1]
        helper.make_node("Expand", ["row", "n_by_1"], ["probabilities"]),  # [1, 2] -> [N, 2]
    ]
    initializer = [helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
                   helper.make_tensor("one", TensorProto.INT64, [1], [1])]
    if big:
        table = np.random.default_rng(7).random((256, 2), dtype=np.float32)
        table[0] = [0.0, 1.0]
        initializer.append(onnx.numpy_helper.from_array(table, "table"))
        nodes.insert(0, helper.make_node("Gather", ["table", "zero"], ["row"], axis=0))  # [1, 2]
    else:
        initializer.append(helper.make_tensor("row", TensorProto.FLOAT, [1, 2], [0.0, 1.0]))
    graph = helper.make_graph(
        nodes, "always_fraud",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        initializer=initializer)
    model = helper.make_model(graph, producer_name="sluice-tests",
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="registered model name")
    p.add_argument("--manifest", required=True, help="manifest.toml: features and class_labels")
    p.add_argument("--fixture", required=True, help="fixture rows (JSON with columns and data)")
    p.add_argument("--version", action="append", default=[], metavar="JSON",
                   help='{"onnx": PATH} or {"build": "always_fraud"} (with "external_data": true, '
                        'a 2 KiB tensor that MLflow saves as external data); optional "dtype" '
                        '(float32, float64) and "sha256" (right, wrong, none)')
    p.add_argument("--alias", action="append", default=[], metavar="ALIAS=VERSION")
    p.add_argument("--experiment", default="sluice-registry-tests")
    p.add_argument("--out", help="write the JSON answer here (MLflow prints to stdout too)")
    args = p.parse_args()
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        p.error("set MLFLOW_TRACKING_URI to the tracking server")

    with open(args.manifest, "rb") as f:
        manifest = tomllib.load(f)
    features = list(manifest["features"])
    labels = list(manifest["class_labels"])
    with open(args.fixture) as f:
        fx = json.load(f)
    cols = fx["columns"]
    rows = np.asarray(fx["data"], dtype=np.float64)[:, [cols.index(c) for c in features]]

    mlflow.set_experiment(args.experiment)
    client = MlflowClient()
    out: dict = {"versions": [], "aliases": {}}
    for text in args.version:
        spec = json.loads(text)
        if "onnx" in spec:
            model = onnx.load(spec["onnx"])
        elif spec.get("build") == "always_fraud":
            model = always_fraud_model(big=bool(spec.get("external_data")))
        else:
            p.error(f"--version {text}: give onnx or build")
        dtype = {"float32": np.float32, "float64": np.float64}[spec.get("dtype", "float32")]
        df = pd.DataFrame(rows.astype(dtype), columns=features)
        example_out = {"label": np.zeros(len(df), dtype=np.int64),
                       "probabilities": np.zeros((len(df), len(labels)), dtype=np.float32)}
        if spec.get("signature") == "tensor":
            # a tensor signature (the ONNX input by name), which `mlflow models serve` can serve
            signature = infer_signature({"input": rows.astype(np.float32)}, example_out)
        else:
            signature = infer_signature(df, example_out)
        with mlflow.start_run(run_name=spec.get("run_name")) as run:
            # explicit requirements: MLflow would otherwise infer them by loading the model in
            # a subprocess (slow, and onnxruntime is not installed in this venv)
            info = mlflow.onnx.log_model(model, name="model", signature=signature,
                                         registered_model_name=args.name,
                                         pip_requirements=["onnx", "onnxruntime"])
        version = str(info.registered_model_version)
        mv = client.get_model_version(args.name, version)
        tags = {"sluice.class_labels": json.dumps(labels)}
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{args.name}/{version}",
                                                        dst_path=tmp)
            digest = sha256_of(os.path.join(local, "model.onnx"))
        match spec.get("sha256", "right"):
            case "right":
                tags["sluice.sha256"] = digest
            case "wrong":
                tags["sluice.sha256"] = hashlib.sha256(b"not the model that was logged").hexdigest()
            case "none":
                pass
            case other:
                p.error(f"sha256: {other!r}")
        for k, v in tags.items():
            client.set_model_version_tag(args.name, version, k, v)
        out["versions"].append({"version": version, "run_id": run.info.run_id,
                                "model_uri": info.model_uri, "source": mv.source,
                                "sha256": digest, "tags": tags})
    for a in args.alias:
        alias, _, version = a.partition("=")
        client.set_registered_model_alias(args.name, alias, version)
        out["aliases"][alias] = version
    text = json.dumps(out)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
