#!/usr/bin/env python3
"""Regenerate the bundled demo models, their baselines and the committed test inputs.

    .venv/bin/pip install -r models/requirements.txt
    .venv/bin/python scripts/make-models.py

Writes, under models/ (Triton-style repository: models/<name>/<version>/model.onnx):
  fraud_classifier/1  gradient-boosted trees trained on "last year's" transactions (champion)
  fraud_classifier/2  random forest trained on "this year's" transactions, where fraud moved
                      towards foreign, card-not-present, night-time payments (challenger)
  fraud_classifier/3  scaled logistic regression trained on both years (the demo's shadow)
  delivery_time/1     gradient-boosted regression of delivery minutes
  mlp/1               dense MLP 64 -> 512 -> 512 -> 512 -> 10 (softmax), big enough that batching matters
plus manifest.toml per model, baseline.parquet (training sample) per tabular model version,
tests/fixtures/inputs/<model>.json (rows the conformance tests send), and the test-only
tests/fixtures/models/fraud_broken/1 (same inputs as the fraud classifier, but fails at run time on
any batch of more than one row: a shadow that errors), tests/fixtures/models/fraud_flaky/1 (fraud_classifier
v1 that fails at run time when a row has amount > 50000) and tests/fixtures/models/fraud_alarmist/1 (same
inputs and outputs as the fraud classifier, predicts fraud for every row).

    .venv/bin/python scripts/make-models.py --fixtures-only   # only the test-only fixture models

Everything is seeded, so a rerun with the pinned requirements gives the same files.
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "models")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "inputs")
OPSETS = {"": 17, "ai.onnx.ml": 3}

FRAUD_FEATURES = [
    "amount", "account_age_days", "txn_count_24h", "merchant_risk",
    "distance_km", "hour_of_day", "is_foreign", "card_present",
]
DELIVERY_FEATURES = ["distance_km", "items", "prep_time_min", "hour_of_day", "is_raining", "courier_load"]


def fraud_data(rng, n, year):
    amount = rng.lognormal(3.5 if year == 1 else 3.8, 1.0, n)
    age = rng.gamma(2.0, 300.0, n)
    cnt = rng.poisson(3 if year == 1 else 4, n).astype(float)
    mrisk = rng.beta(2, 5, n)
    dist = rng.exponential(30 if year == 1 else 45, n)
    hour = rng.integers(0, 24, n).astype(float)
    foreign = (rng.random(n) < (0.08 if year == 1 else 0.15)).astype(float)
    present = (rng.random(n) < (0.7 if year == 1 else 0.55)).astype(float)
    night = ((hour < 6) | (hour > 22)).astype(float)
    z = (-4.0 + 0.5 * np.log1p(amount) - 0.001 * age + 0.15 * cnt + 2.5 * mrisk + 0.01 * dist
         - 0.8 * present)
    if year == 2:  # the pattern moved: foreign, card-not-present, night-time payments
        z += 1.6 * foreign + 1.0 * night * (1 - present) - 0.3
    else:
        z += 0.6 * foreign
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    x = np.column_stack([amount, age, cnt, mrisk, dist, hour, foreign, present]).astype(np.float32)
    return x, y


def delivery_data(rng, n):
    dist = rng.exponential(4.0, n)
    items = rng.integers(1, 12, n).astype(float)
    prep = rng.gamma(3.0, 4.0, n)
    hour = rng.integers(8, 24, n).astype(float)
    rain = (rng.random(n) < 0.2).astype(float)
    load = rng.uniform(0, 1, n)
    rush = (((hour >= 12) & (hour <= 13)) | ((hour >= 18) & (hour <= 20))).astype(float)
    y = 8 + 3.2 * dist + 0.6 * items + prep + 6 * rush + 7 * rain + 10 * load ** 2 + rng.normal(0, 3, n)
    x = np.column_stack([dist, items, prep, hour, rain, load]).astype(np.float32)
    return x, y.astype(np.float32)


def save_onnx(model, name, version, doc):
    d = os.path.join(MODELS, name, str(version))
    os.makedirs(d, exist_ok=True)
    model.doc_string = doc
    # skl2onnx may write duplicate opset imports in a hash-dependent order: canonicalise them so
    # reruns give identical bytes.
    opsets = {}
    for o in model.opset_import:
        opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(opsets.items()))
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(d, "model.onnx"))
    return os.path.join(d, "model.onnx")


def sk_to_onnx(est, n_features):
    from skl2onnx.common.data_types import FloatTensorType
    final = est.steps[-1][1] if hasattr(est, "steps") else est
    opts = {id(final): {"zipmap": False}} if hasattr(final, "predict_proba") else None
    return to_onnx(est, initial_types=[("input", FloatTensorType([None, n_features]))],
                   target_opset=OPSETS, options=opts)


def write_baseline(name, version, features, x, y, pred, labels=None):
    cols = {f: pa.array(x[:, i].astype(np.float64)) for i, f in enumerate(features)}
    if labels is not None:
        cols["label"] = pa.array([labels[int(v)] for v in y])
        cols["prediction"] = pa.array([labels[int(v)] for v in pred])
    else:
        cols["label"] = pa.array(y.astype(np.float64))
        cols["prediction"] = pa.array(pred.astype(np.float64))
    pq.write_table(pa.table(cols), os.path.join(MODELS, name, str(version), "baseline.parquet"),
                   compression="zstd")


def write_manifest(name, text):
    with open(os.path.join(MODELS, name, "manifest.toml"), "w") as f:
        f.write(text)


def write_fixture(name, payload):
    os.makedirs(FIXTURES, exist_ok=True)
    with open(os.path.join(FIXTURES, f"{name}.json"), "w") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")


def run_ort(path, x):
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return s.run(None, {"input": x})


def fraud():
    rng = np.random.default_rng(20260101)
    labels = ["legit", "fraud"]
    x1, y1 = fraud_data(rng, 6000, 1)
    x2, y2 = fraud_data(rng, 6000, 2)
    m1 = GradientBoostingClassifier(n_estimators=60, max_depth=3, random_state=1).fit(x1, y1)
    m2 = RandomForestClassifier(n_estimators=40, max_depth=7, random_state=2).fit(x2, y2)
    p1 = save_onnx(sk_to_onnx(m1, 8), "fraud_classifier", 1, "fraud champion: GBT on year-1 data")
    p2 = save_onnx(sk_to_onnx(m2, 8), "fraud_classifier", 2, "fraud challenger: RF on year-2 data")
    x12, y12 = np.vstack([x1, x2]), np.concatenate([y1, y2])
    m3 = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x12, y12)
    save_onnx(sk_to_onnx(m3, 8), "fraud_classifier", 3, "fraud shadow: scaled logistic regression on both years")
    write_baseline("fraud_classifier", 3, FRAUD_FEATURES, x12[::6], y12[::6], m3.predict(x12[::6]), labels)
    write_baseline("fraud_classifier", 1, FRAUD_FEATURES, x1[:2000], y1[:2000], m1.predict(x1[:2000]), labels)
    write_baseline("fraud_classifier", 2, FRAUD_FEATURES, x2[:2000], y2[:2000], m2.predict(x2[:2000]), labels)
    write_manifest("fraud_classifier", fraud_manifest(
        "# Card-payment fraud classifier (binary). Versions are trained on different years of data.",
        "Card-payment fraud classifier"))
    # Test rows: a held-out mix from both years, including rows where v1 and v2 disagree.
    xt = np.vstack([fraud_data(rng, 200, 1)[0], fraud_data(rng, 200, 2)[0]])
    l1 = run_ort(p1, xt)[0]
    l2 = run_ort(p2, xt)[0]
    disagree = np.flatnonzero(l1 != l2)
    agree = np.flatnonzero(l1 == l2)
    if len(disagree) < 4:
        sys.exit(f"fraud v1 and v2 disagree on only {len(disagree)} of {len(xt)} rows")
    print(f"fraud_classifier: v1/v2 disagree on {len(disagree)}/{len(xt)} held-out rows")
    rows = xt[np.concatenate([disagree[:8], agree[:8]])]
    write_fixture("fraud_classifier", {"columns": FRAUD_FEATURES, "data": rows.tolist(),
                                       "disagreeing_rows": list(range(min(8, len(disagree))))})


def delivery():
    rng = np.random.default_rng(20260202)
    x, y = delivery_data(rng, 5000)
    m = GradientBoostingRegressor(n_estimators=80, max_depth=3, random_state=3).fit(x, y)
    save_onnx(sk_to_onnx(m, 6), "delivery_time", 1, "delivery minutes: GBT regression")
    write_baseline("delivery_time", 1, DELIVERY_FEATURES, x[:2000], y[:2000], m.predict(x[:2000]))
    write_manifest("delivery_time", f'''# Food-delivery time regression (minutes).
description = "Delivery time in minutes"
problem_type = "regression"
features = {json.dumps(DELIVERY_FEATURES)}

[outputs]
value = "variable"
''')
    xt, _ = delivery_data(rng, 16)
    write_fixture("delivery_time", {"columns": DELIVERY_FEATURES, "data": xt.tolist()})


MLP_MANIFEST = '''# Dense MLP over a raw 64-float tensor (no named features): send tensors via
# `inputs`/`instances` on /predict, or KServe V2. Predictions are the argmax class and probabilities.
description = "{description}"
problem_type = "classification"
class_labels = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"]

[outputs]
probabilities = "probs"
'''


def mlp_weights():
    """The MLP's layers (float32 weights and biases) and the generator after drawing them."""
    rng = np.random.default_rng(20260303)
    dims = [64, 512, 512, 512, 10]
    layers = []
    for i in range(4):
        w = (rng.standard_normal((dims[i], dims[i + 1])) * np.sqrt(2.0 / dims[i])).astype(np.float32)
        b = (rng.standard_normal(dims[i + 1]) * 0.01).astype(np.float32)
        layers.append((w, b))
    return rng, layers


def mlp_model(name, layers, elem, np_dtype):
    """MatMul+Add layers with Relu between and a Softmax, every tensor of type `elem`."""
    nodes, inits, prev = [], [], "input"
    for i, (w, b) in enumerate(layers):
        inits += [numpy_helper.from_array(w.astype(np_dtype), f"W{i}"),
                  numpy_helper.from_array(b.astype(np_dtype), f"b{i}")]
        nodes += [helper.make_node("MatMul", [prev, f"W{i}"], [f"mm{i}"]),
                  helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"])]
        if i < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [f"z{i}"], [f"h{i}"]))
            prev = f"h{i}"
    nodes.append(helper.make_node("Softmax", [f"z{len(layers) - 1}"], ["probs"], axis=-1))
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("input", elem, ["batch", 64])],
                          [helper.make_tensor_value_info("probs", elem, ["batch", 10])],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="sluice make-models")
    m.ir_version = 8
    return m


def mlp():
    rng, layers = mlp_weights()
    save_onnx(mlp_model("mlp", layers, TensorProto.FLOAT, np.float32), "mlp", 1, "dense MLP 64-512-512-512-10")
    write_manifest("mlp", MLP_MANIFEST.format(description="Dense MLP 64-512-512-512-10"))
    xt = rng.standard_normal((8, 64)).astype(np.float32)
    write_fixture("mlp", {"instances": xt.tolist()})


def mlp_fp16():
    """The MLP's weights rounded to IEEE half precision, every tensor FLOAT16 (input and output
    included), as onnx's float16 tools convert a model without keep_io_types; ONNX Runtime's CPU
    provider runs MatMul, Add, Relu and Softmax in float16."""
    _, layers = mlp_weights()
    m = mlp_model("mlp_fp16", layers, TensorProto.FLOAT16, np.float16)
    save_onnx(m, "mlp_fp16", 1, "dense MLP 64-512-512-512-10, float16")
    write_manifest("mlp_fp16", MLP_MANIFEST.format(description="Dense MLP 64-512-512-512-10, float16 weights, input and output"))


def fraud_broken():
    """Test-only: takes the fraud classifier's input, but reshapes it to exactly one row, so any
    batch of two or more rows fails inside ONNX Runtime (a shadow model that errors)."""
    shape = numpy_helper.from_array(np.array([1, 8], dtype=np.int64), "one_row")
    nodes = [helper.make_node("Reshape", ["input", "one_row"], ["row"]),
             helper.make_node("ReduceSum", ["row"], ["score"], keepdims=1, axes=[1])]
    g = helper.make_graph(nodes, "fraud_broken",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 8])],
                          [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
                          initializer=[shape])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 12)], producer_name="sluice make-models")
    m.ir_version = 8
    onnx.checker.check_model(m)
    d = os.path.join(ROOT, "tests", "fixtures", "models", "fraud_broken")
    os.makedirs(os.path.join(d, "1"), exist_ok=True)
    onnx.save(m, os.path.join(d, "1", "model.onnx"))
    with open(os.path.join(d, "manifest.toml"), "w") as f:
        f.write(f'# Test-only: fails on batches of more than one row.\nfeatures = {json.dumps(FRAUD_FEATURES)}\n')


def fixture_model(name, model, manifest):
    """Writes a test-only model under tests/fixtures/models/<name>/1 with its manifest."""
    onnx.checker.check_model(model, full_check=True)
    d = os.path.join(ROOT, "tests", "fixtures", "models", name)
    os.makedirs(os.path.join(d, "1"), exist_ok=True)
    onnx.save(model, os.path.join(d, "1", "model.onnx"))
    with open(os.path.join(d, "manifest.toml"), "w") as f:
        f.write(manifest)
    return os.path.join(d, "1", "model.onnx")


def fraud_manifest(comment, description):
    return f'''{comment}
description = "{description}"
problem_type = "classification"
features = {json.dumps(FRAUD_FEATURES)}
class_labels = ["legit", "fraud"]

[outputs]
label = "label"
probabilities = "probabilities"
'''


def fraud_flaky():
    """Test-only: fraud_classifier v1 (same label and probabilities, bit for bit), except that a run fails
    inside ONNX Runtime whenever a row of the batch has amount > 50000 (a candidate that errors on a
    share of requests). Per row, the index (amount > 50000) * 1000 is gathered from a one-element zero
    vector: out of range, so Gather fails, when the condition holds; the gathered zeros are added to
    both outputs, so the guard is on the path to whichever output is requested. Reads
    models/fraud_classifier/1/model.onnx, so run fraud() first when regenerating everything."""
    m = onnx.load(os.path.join(MODELS, "fraud_classifier", "1", "model.onnx"))
    g = m.graph
    outputs = {o.name: o for o in g.output}
    t = outputs["label"].type.tensor_type
    p = outputs["probabilities"].type.tensor_type
    if (t.elem_type, len(t.shape.dim), p.elem_type, len(p.shape.dim)) != (TensorProto.INT64, 1, TensorProto.FLOAT, 2):
        sys.exit("fraud_flaky: fraud_classifier v1 no longer has int64 label [N] and float probabilities [N, 2]")
    # Rename the original outputs internally; the new Add nodes produce "label" and "probabilities".
    for n in g.node:
        n.output[:] = [{"label": "v1_label", "probabilities": "v1_probabilities"}.get(o, o) for o in n.output]
    g.initializer.extend([
        numpy_helper.from_array(np.array(0, dtype=np.int64), "flaky_amount_col"),
        numpy_helper.from_array(np.array(50000.0, dtype=np.float32), "flaky_threshold"),
        numpy_helper.from_array(np.array(1000, dtype=np.int64), "flaky_big_index"),
        numpy_helper.from_array(np.array([0.0], dtype=np.float32), "flaky_zero"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "flaky_axis1"),
    ])
    g.node.extend([
        helper.make_node("Gather", ["input", "flaky_amount_col"], ["flaky_amount"], axis=1),       # [N]
        helper.make_node("Greater", ["flaky_amount", "flaky_threshold"], ["flaky_too_big"]),
        helper.make_node("Cast", ["flaky_too_big"], ["flaky_too_big_i"], to=TensorProto.INT64),
        helper.make_node("Mul", ["flaky_too_big_i", "flaky_big_index"], ["flaky_index"]),          # 0 or 1000
        helper.make_node("Gather", ["flaky_zero", "flaky_index"], ["flaky_guard"], axis=0),         # fails on 1000
        helper.make_node("Unsqueeze", ["flaky_guard", "flaky_axis1"], ["flaky_guard_col"]),         # [N, 1]
        helper.make_node("Add", ["v1_probabilities", "flaky_guard_col"], ["probabilities"]),
        helper.make_node("Cast", ["flaky_guard"], ["flaky_guard_i"], to=TensorProto.INT64),
        helper.make_node("Add", ["v1_label", "flaky_guard_i"], ["label"]),
    ])
    g.name = "fraud_flaky"
    m.doc_string = "test-only: fraud champion v1 that fails at run time when amount > 50000"
    return fixture_model("fraud_flaky", m, fraud_manifest(
        "# Test-only: fraud_classifier v1 that fails at run time when amount > 50000 "
        "(a candidate that errors on a share of requests).",
        "Test-only fraud classifier v1 that fails when amount > 50000"))


def fraud_alarmist():
    """Test-only: the fraud classifier's input and outputs (int64 label [N], float probabilities [N, 2]),
    but predicts class 1 ("fraud") with probabilities [0.1, 0.9] for every row (a candidate whose
    predictions drift). The batch dimension is taken from the input's shape."""
    inits = [
        numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "two"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "fraud_index"),
        numpy_helper.from_array(np.array([[0.1, 0.9]], dtype=np.float32), "fraud_probs"),
    ]
    nodes = [
        helper.make_node("Shape", ["input"], ["input_shape"]),
        helper.make_node("Slice", ["input_shape", "zero", "one"], ["batch"]),                    # [N]
        helper.make_node("Concat", ["batch", "two"], ["probs_shape"], axis=0),                    # [N, 2]
        helper.make_node("Expand", ["fraud_index", "batch"], ["label"]),
        helper.make_node("Expand", ["fraud_probs", "probs_shape"], ["probabilities"]),
    ]
    g = helper.make_graph(nodes, "fraud_alarmist",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 8])],
                          [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
                           helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="sluice make-models")
    m.ir_version = 8
    m.doc_string = "test-only: predicts fraud for every row"
    return fixture_model("fraud_alarmist", m, fraud_manifest(
        "# Test-only: predicts fraud for every row (a candidate whose predictions drift).",
        "Test-only fraud classifier that predicts fraud for every row"))


def fixtures():
    fraud_broken()
    fraud_flaky()
    fraud_alarmist()


if __name__ == "__main__":
    if sys.argv[1:] == ["--fixtures-only"]:
        fixtures()
        print("test-only fixture models written under", os.path.join(ROOT, "tests", "fixtures", "models"))
        sys.exit(0)
    if sys.argv[1:]:
        sys.exit(f"usage: {sys.argv[0]} [--fixtures-only]")
    fraud()
    delivery()
    mlp()
    mlp_fp16()
    fixtures()
    print("models written under", MODELS)
