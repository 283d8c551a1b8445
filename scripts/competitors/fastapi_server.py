#!/usr/bin/env python3
"""A hand-written FastAPI + onnxruntime service, as teams write one: the KServe V2 JSON routes
that a V2 client needs (`GET /v2/models/{name}` metadata, `GET .../ready`,
`POST /v2/models/{name}/infer`, `GET /v2/health/ready`). No binary tensors, no gRPC, no batching;
one InferenceSession per model in each worker process.

    SLUICE_COMP_MODELS=mlp=models/mlp/1/model.onnx,fraud_classifier=models/fraud_classifier/1/model.onnx \
        uvicorn fastapi_server:app --app-dir scripts/competitors --host 127.0.0.1 --port 8000 \
        --workers 1 --no-access-log

SLUICE_COMP_INTRA_OP sets ONNX Runtime's intra-op threads (default 1). The handlers are plain
`def`s: FastAPI runs them in its threadpool, so a model run does not block the event loop."""
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

V2_TYPE = {"tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(int64)": "INT64", "tensor(int32)": "INT32",
           "tensor(bool)": "BOOL"}
NP_TYPE = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_}


def _meta(t):
    return {"name": t.name, "datatype": V2_TYPE[t.type], "shape": [d if isinstance(d, int) else -1 for d in t.shape]}


class Model:
    def __init__(self, name: str, path: str, intra_op: int):
        so = ort.SessionOptions()
        so.intra_op_num_threads = intra_op
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.outputs = [(o.name, V2_TYPE[o.type]) for o in self.session.get_outputs()]
        self.out_names = [n for n, _ in self.outputs]
        self.metadata = {"name": name, "versions": ["1"], "platform": "onnxruntime_onnx",
                         "inputs": [_meta(i) for i in self.session.get_inputs()],
                         "outputs": [_meta(o) for o in self.session.get_outputs()]}


_intra = int(os.environ.get("SLUICE_COMP_INTRA_OP", "1"))
MODELS = {name: Model(name, path, _intra)
          for name, path in (kv.split("=", 1) for kv in os.environ["SLUICE_COMP_MODELS"].split(","))}

app = FastAPI()


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[Tensor]


def _model(name: str) -> Model:
    if name not in MODELS:
        raise HTTPException(404, f"model {name} not found")
    return MODELS[name]


@app.get("/v2/health/ready")
def ready():
    return {"ready": True}


@app.get("/v2/models/{name}")
def metadata(name: str):
    return _model(name).metadata


@app.get("/v2/models/{name}/ready")
def model_ready(name: str):
    _model(name)
    return {"name": name, "ready": True}


@app.post("/v2/models/{name}/infer")
def infer(name: str, req: InferRequest):
    m = _model(name)
    try:
        feeds = {t.name: np.asarray(t.data, dtype=NP_TYPE[t.datatype]).reshape(t.shape) for t in req.inputs}
    except (KeyError, ValueError) as e:
        raise HTTPException(400, f"bad input: {e}")
    outs = m.session.run(m.out_names, feeds)
    resp = {"model_name": name, "model_version": "1",
            "outputs": [{"name": n, "datatype": dt, "shape": list(o.shape), "data": o.ravel().tolist()}
                        for (n, dt), o in zip(m.outputs, outs)]}
    if req.id is not None:
        resp["id"] = req.id
    return resp
