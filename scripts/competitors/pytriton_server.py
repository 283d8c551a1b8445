#!/usr/bin/env python3
"""PyTriton serving an ONNX model: Triton's C++ server (HTTP + gRPC) in front of a Python infer
function that calls onnxruntime, as the PyTriton docs show it (`@batch`, `Triton().bind()`).

    python pytriton_server.py --model mlp=models/mlp/1/model.onnx [--model name=path ...] \
        --http-port 8000 --grpc-port 8001 --metrics-port 8002 [--max-batch-size 64] [--intra-op 1]

Dynamic batching is PyTriton's default (ModelConfig(batching=True, DynamicBatcher() with
max_queue_delay 0)); only max_batch_size is changed (PyTriton's default is 4), to the gateway's
default of 64. Listens on 127.0.0.1 only.
"""
import argparse
import logging
import os
import signal
import sysconfig

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

NP = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
      "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def onnx_infer_func(path, intra_op):
    """An onnxruntime session and the `@batch` infer function over it, with its Triton tensors."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_op
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    in_names = [i.name for i in sess.get_inputs()]
    out_names = [o.name for o in sess.get_outputs()]

    out_types = [NP[o.type] for o in sess.get_outputs()]

    @batch
    def infer(**inputs):
        outs = sess.run(out_names, {n: inputs[n] for n in in_names})
        # .view: onnxruntime's INT64 arrays carry numpy's `longlong` scalar type, which PyTriton's
        # strict check tells from `int64` (the same 8 bytes).
        return {n: (o.reshape(-1, 1) if o.ndim == 1 else o).view(t) for n, o, t in zip(out_names, outs, out_types)}

    # Shapes without the batch dimension (PyTriton adds it when batching is on); a 1-D output
    # ([batch]) is answered as [batch, 1]: PyTriton has no Triton `reshape`.
    ins = [Tensor(name=i.name, dtype=NP[i.type], shape=tuple(int(d) for d in i.shape[1:])) for i in sess.get_inputs()]
    outs = [Tensor(name=o.name, dtype=NP[o.type], shape=tuple(int(d) for d in o.shape[1:]) or (1,))
            for o in sess.get_outputs()]
    return infer, ins, outs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", required=True, help="name=path of an ONNX model; repeatable")
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--grpc-port", type=int, required=True)
    ap.add_argument("--metrics-port", type=int, required=True)
    ap.add_argument("--max-batch-size", type=int, default=64)
    ap.add_argument("--intra-op", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # Triton's Python-backend stub links libpython3.11.so.1.0 and, without this, the loader finds
    # the system's (Debian 12: 3.11.2) while the stdlib it imports is this interpreter's (pyenv
    # 3.11.7): multiprocessing then fails with "'_thread.RLock' object has no attribute
    # '_recursion_count'". The stub (started by tritonserver, which inherits this environment)
    # must load this interpreter's own libpython.
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and sysconfig.get_config_var("Py_ENABLE_SHARED"):
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [libdir, os.environ.get("LD_LIBRARY_PATH")] if p)

    # SIGTERM (and SIGINT, even when started with it ignored) stops Triton through the `with`
    # block, so its workspace and shared memory are cleaned up.
    def _stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    cfg = TritonConfig(http_address="127.0.0.1", http_port=args.http_port, grpc_address="127.0.0.1",
                       grpc_port=args.grpc_port, metrics_address="127.0.0.1", metrics_port=args.metrics_port,
                       log_verbose=0)
    with Triton(config=cfg) as triton:
        for spec in args.model:
            name, path = spec.split("=", 1)
            infer, ins, outs = onnx_infer_func(path, args.intra_op)
            triton.bind(model_name=name, infer_func=infer, inputs=ins, outputs=outs,
                        config=ModelConfig(batching=True, max_batch_size=args.max_batch_size,
                                           batcher=DynamicBatcher()),
                        strict=True)
        triton.serve()


if __name__ == "__main__":
    main()
