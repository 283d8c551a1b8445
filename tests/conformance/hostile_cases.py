"""Hostile single requests for test_hostile.py, and the wire helpers that send them.

Every case is one request that a client can send in a few lines: sizes, shapes, lengths and
nesting chosen to make a careless gateway allocate from a number the client wrote, overflow,
recurse, or keep a huge string per logged row. Each case says what the gateway must answer:

  * HTTP: the status (exact where the README's error table makes it clear) and a JSON body
    {"error": "<non-empty text>"};
  * gRPC: the status code (INVALID_ARGUMENT for bad input, RESOURCE_EXHAUSTED for too large).

Bodies are built when a case runs (not at collection), so the big ones cost nothing until then.
HTTP goes over a raw socket (exact bytes, exact framing, bogus headers allowed), with the body
sent from a second thread while the answer is read, so a 413 sent before the body is consumed is
seen even when the server then closes the connection.
"""
from __future__ import annotations

import http.client as httplib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from sluice_support import batch_of, manifest

KiB = 1024
MiB = 1024 * 1024

FRAUD_FEATURES: list[str] = manifest("fraud_classifier")["features"]

# The id / text cap planned for the gateway: longer values are refused (400 / INVALID_ARGUMENT).
ID_CAP = 256
# server.max_body_bytes of the module's config (the demo's 16 MiB default).
MAX_BODY = 16 * MiB
# Shapes whose element count is absurd for the bytes actually sent.
HUGE_DIM = 8796093022208                  # 2**43 (a BYTES Vec of that capacity is ~200 TB)
OVER_2_63 = [3037000500, 3037000500]      # product 9223372037000250000: > 2**63, < 2**64
OVER_2_64 = [4294967296, 4294967296, 4294967296]  # 2**96: overflows any 64-bit count
FIRST_HUGE = 50_000                       # length of the first element at each nesting level


# --------------------------------------------------------------------------------------------
# Wire helpers
# --------------------------------------------------------------------------------------------

@dataclass
class Reply:
    """What came back for one HTTP request: a status (None when no answer came back), the
    headers (lower-case names), the body; `error` says why there is no (complete) answer."""
    status: int | None
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None
    send_error: str | None = None
    elapsed: float = 0.0

    def describe(self) -> str:
        if self.status is None:
            return f"no HTTP answer ({self.error}; sending: {self.send_error or 'ok'}) after {self.elapsed:.2f} s"
        return f"{self.status} {self.body[:400]!r} after {self.elapsed:.2f} s"


@dataclass
class GrpcReply:
    code: grpc.StatusCode
    details: str = ""
    elapsed: float = 0.0

    def describe(self) -> str:
        return f"gRPC {self.code.name}: {self.details[:400]!r} after {self.elapsed:.2f} s"


def http_exchange(port: int, method: str, path: str, body: bytes = b"", headers: list | None = None, *,
                  content_length: int | str | None = None, chunked: bool = False,
                  send_bytes: int | None = None, half_close: bool = False, abandon: bool = False,
                  timeout: float = 30.0) -> Reply:
    """One HTTP/1.1 request on a fresh connection (Connection: close).

    content_length overrides the Content-Length header (any text); chunked sends the body with
    Transfer-Encoding: chunked instead; send_bytes sends only that many body bytes; half_close
    then shuts the write side (the server sees the body end early); abandon closes the connection
    right after sending, reading nothing."""
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    if chunked:
        head.append("Transfer-Encoding: chunked")
        step = 256 * KiB
        wire = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + step]), body[i:i + step])
                        for i in range(0, len(body), step)) + b"0\r\n\r\n"
    else:
        head.append(f"Content-Length: {len(body) if content_length is None else content_length}")
        wire = body
    if send_bytes is not None:
        wire = wire[:send_bytes]
    for k, v in headers or []:
        head.append(f"{k}: {v}")
    payload = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + wire

    start = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if abandon:
        try:
            sock.sendall(payload)
        finally:
            sock.close()
        return Reply(None, error="the client closed the connection without reading",
                     elapsed=time.monotonic() - start)
    send_error: list[str] = []

    def send():
        try:
            sock.sendall(payload)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            send_error.append(f"{type(e).__name__}: {e}")

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    reply = Reply(None)
    try:
        resp = httplib.HTTPResponse(sock, method=method)
        resp.begin()
        reply = Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()})
        reply.body = resp.read()
    except (httplib.HTTPException, OSError) as e:
        reply.error = f"{type(e).__name__}: {e}"
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)   # wakes a sender still blocked in sendall
        except OSError:
            pass
        sender.join(timeout)
        sock.close()
    reply.send_error = send_error[0] if send_error else None
    reply.elapsed = time.monotonic() - start
    return reply


GRPC_OPTIONS = [("grpc.max_send_message_length", -1),
                ("grpc.max_receive_message_length", 64 * MiB),
                ("grpc.max_metadata_size", 1 * MiB),
                ("grpc.enable_retries", 0)]


def grpc_infer(port: int, request, metadata: list | None = None, timeout: float = 30.0) -> GrpcReply:
    start = time.monotonic()
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=GRPC_OPTIONS) as ch:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
        try:
            stub.ModelInfer(request, metadata=metadata, timeout=timeout)
            return GrpcReply(grpc.StatusCode.OK, "", time.monotonic() - start)
        except grpc.RpcError as e:
            return GrpcReply(e.code(), e.details() or "", time.monotonic() - start)


# --------------------------------------------------------------------------------------------
# Payload pieces
# --------------------------------------------------------------------------------------------

def fraud_rows(n: int) -> list[list[float]]:
    return [[round(float(v), 4) for v in r] for r in batch_of("fraud_classifier", n)]


def mlp_rows(n: int) -> list[list[float]]:
    return [[round(float(v), 4) for v in r] for r in batch_of("mlp", n)]


def fraud_split(n: int = 2, **extra) -> dict:
    return {"dataframe_split": {"columns": FRAUD_FEATURES, "data": fraud_rows(n)}, **extra}


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def first_huge(levels: int, n: int = FIRST_HUGE) -> str:
    """Ragged nested arrays whose FIRST element is n long at every level, the rest `[0]`:
    a shape read from first elements is [n] * levels (n**levels elements) in ~3n bytes a level."""
    text = "[" + ",".join(["0"] * n) + "]"
    for _ in range(levels - 1):
        text = "[" + text + ",[0]" * (n - 1) + "]"
    return text


def deep(depth: int, leaf: str = "0") -> str:
    return "[" * depth + leaf + "]" * depth


def wide_columns(n: int = 1_000_000) -> str:
    return ",".join(f'"c{i}"' for i in range(n))


def zeros(n: int) -> str:
    return ",".join(["0"] * n)


def padded_json(size: int, prefix: bytes = b'{"instances":', suffix: bytes = b"[[0]]}") -> bytes:
    """Valid JSON of exactly `size` bytes (whitespace padding): only its size is wrong."""
    pad = size - len(prefix) - len(suffix)
    return prefix + b" " * pad + suffix


# V2 datatypes: numpy little-endian type (None for BYTES), and three elements as JSON.
V2_TYPES = {
    "BOOL": ("?", [True, False, True]),
    "UINT8": ("<u1", [1, 0, 1]), "UINT16": ("<u2", [1, 0, 1]), "UINT32": ("<u4", [1, 0, 1]),
    "UINT64": ("<u8", [1, 0, 1]),
    "INT8": ("<i1", [1, 0, 1]), "INT16": ("<i2", [1, 0, 1]), "INT32": ("<i4", [1, 0, 1]),
    "INT64": ("<i8", [1, 0, 1]),
    "FP32": ("<f4", [1, 0, 1]), "FP64": ("<f8", [1, 0, 1]),
    "BYTES": (None, ["a", "b", "c"]),
}
BAD_SHAPES = {
    "product_over_2_63": OVER_2_63,
    "dim_2_43": [HUGE_DIM],
    "negative_dim": [-1, 64],
}


def bytes_elements(items: list[bytes]) -> bytes:
    return b"".join(len(x).to_bytes(4, "little") + x for x in items)


def raw_of(datatype: str, values=None) -> bytes:
    np_type, sample = V2_TYPES[datatype]
    values = sample if values is None else values
    if np_type is None:
        return bytes_elements([str(v).encode() for v in values])
    return np.asarray(values, dtype=np_type).tobytes()


def v2_binary_body(inputs: list[dict], raws: list[bytes], extra: dict | None = None) -> tuple[bytes, int]:
    """(body, header length) of a V2 binary request: JSON header, then the raw chunks."""
    header = dumps({**(extra or {}), "inputs": inputs})
    return header + b"".join(raws), len(header)


def mlp_binary_input(n: int = 1) -> tuple[dict, bytes]:
    raw = np.asarray(mlp_rows(n), dtype="<f4").tobytes()
    return {"name": "input", "datatype": "FP32", "shape": [n, 64],
            "parameters": {"binary_data_size": len(raw)}}, raw


def mlp_json_input(n: int = 1) -> dict:
    return {"name": "input", "datatype": "FP32", "shape": [n, 64],
            "data": [v for r in mlp_rows(n) for v in r]}


def grpc_request(model: str = "mlp", inputs: list[tuple[str, str, list]] = (), raw: list[bytes] | None = None,
                 req_id: str = "") -> "service_pb2.ModelInferRequest":
    req = service_pb2.ModelInferRequest(model_name=model, id=req_id)
    for name, datatype, shape in inputs:
        req.inputs.add(name=name, datatype=datatype, shape=shape)
    for r in raw or []:
        req.raw_input_contents.append(r)
    return req


def grpc_valid_mlp(req_id: str = "") -> "service_pb2.ModelInferRequest":
    raw = np.asarray(mlp_rows(1), dtype="<f4").tobytes()
    return grpc_request("mlp", [("input", "FP32", [1, 64])], [raw], req_id=req_id)


# --------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    id: str
    what: str                      # the request, in words (shown when the case fails)
    send: Callable                 # (gateway) -> Reply | GrpcReply
    status: tuple = ()             # HTTP: accepted statuses (None = no answer is fine)
    code: grpc.StatusCode | None = None   # gRPC: the expected code
    json_error: bool = True        # an HTTP answer must be {"error": "..."}
    settle: float = 0.1            # seconds to wait before the after-checks (async work)


CASES: list[Case] = []


def http_case(id, what, path, body_fn, status, *, headers=(), content_type="application/json",
              json_error=True, settle=0.1, **kw):
    hdrs = list(headers)
    if content_type is not None:
        hdrs.insert(0, ("Content-Type", content_type))

    def send(gw):
        body = body_fn() if callable(body_fn) else body_fn
        h = [(k, v() if callable(v) else v) for k, v in hdrs]
        return http_exchange(gw.http_port, "POST", path, body, h, **kw)

    CASES.append(Case(id, what, send, status=status if isinstance(status, tuple) else (status,),
                      json_error=json_error, settle=settle))


def binary_case(id, what, path, body_fn, status=400, *, header_length=None, extra_headers=(), settle=0.1):
    """A V2 binary request: body_fn returns (body, header length)."""
    def send(gw):
        body, hlen = body_fn()
        h = [("Content-Type", "application/octet-stream"),
             ("Inference-Header-Content-Length", str(hlen) if header_length is None else header_length),
             *extra_headers]
        return http_exchange(gw.http_port, "POST", path, body, h)

    CASES.append(Case(id, what, send, status=(status,), settle=settle))


def grpc_case(id, what, req_fn, code=grpc.StatusCode.INVALID_ARGUMENT, *, metadata=None, settle=0.1):
    def send(gw):
        return grpc_infer(gw.grpc_port, req_fn(), metadata=metadata() if callable(metadata) else metadata)

    CASES.append(Case(id, what, send, code=code, settle=settle))


FRAUD = "/endpoints/fraud/predict"
MLP = "/endpoints/mlp/predict"
V2_MLP = "/v2/models/mlp/infer"
LABELS = "/endpoints/fraud/labels"
FH3, FH4 = (lambda: first_huge(3)), (lambda: first_huge(4))
SLOW = 0.6   # settle for cases whose effects (logging, shadows, label writes) run after the answer

# ---- /predict on fraud (8 named features): all four formats ---------------------------------

http_case("predict_fraud_split_row_first_huge",
          "dataframe_split whose first row is first-element-huge nested arrays (3 levels of 50,000)",
          FRAUD, lambda: ('{"dataframe_split":{"columns":%s,"data":[%s,%s]}}'
                          % (json.dumps(FRAUD_FEATURES), FH3(), json.dumps(fraud_rows(1)[0]))).encode(), 400)
http_case("predict_fraud_split_1m_columns", "dataframe_split with 1,000,000 column names and one row of 1,000,000",
          FRAUD, lambda: ('{"dataframe_split":{"columns":[%s],"data":[[%s]]}}'
                          % (wide_columns(), zeros(1_000_000))).encode(), 400)
http_case("predict_fraud_split_positional_1m_wide", "dataframe_split without columns, one row of 1,000,000 values",
          FRAUD, lambda: ('{"dataframe_split":{"data":[[%s]]}}' % zeros(1_000_000)).encode(), 400)
http_case("predict_fraud_records_1m_keys", "dataframe_records with one record of 1,000,000 keys",
          FRAUD, lambda: ('{"dataframe_records":[{%s}]}'
                          % ",".join(f'"c{i}":0' for i in range(1_000_000))).encode(), 400)
http_case("predict_fraud_records_value_first_huge", "dataframe_records whose 'amount' is first-element-huge nested arrays",
          FRAUD, lambda: ('{"dataframe_records":[{%s}]}'
                          % ",".join(f'"{f}":{FH3() if f == "amount" else "0"}' for f in FRAUD_FEATURES)).encode(), 400)
http_case("predict_fraud_instances_first_huge", "instances = first-element-huge nested arrays (3 levels of 50,000)",
          FRAUD, lambda: ('{"instances":%s}' % FH3()).encode(), 400)
http_case("predict_fraud_instances_ragged", "instances rows of 8, 3 and 50,000 values",
          FRAUD, lambda: dumps({"instances": [fraud_rows(1)[0], [1, 2, 3], [0] * FIRST_HUGE]}), 400)
http_case("predict_fraud_inputs_columnar_first_huge", "inputs columnar whose 'amount' column is first-element-huge",
          FRAUD, lambda: ('{"inputs":{%s}}' % ",".join(
              f'"{f}":{FH3() if f == "amount" else "[" + zeros(FIRST_HUGE) + "]"}' for f in FRAUD_FEATURES)).encode(),
          400)
http_case("predict_fraud_inputs_rows_first_huge_4_levels", "inputs = first-element-huge nested arrays (4 levels)",
          FRAUD, lambda: ('{"inputs":%s}' % FH4()).encode(), 400)
http_case("predict_fraud_nan_literal", "NaN literal in a row (not JSON)",
          FRAUD, lambda: ('{"instances":[[NaN%s]]}' % (",0" * 7)).encode(), 400)
http_case("predict_fraud_infinity_literal", "-Infinity literal in dataframe_split (not JSON)",
          FRAUD, lambda: ('{"dataframe_split":{"columns":%s,"data":[[-Infinity%s]]}}'
                          % (json.dumps(FRAUD_FEATURES), ",0" * 7)).encode(), 400)
http_case("predict_fraud_number_1e400", "1e400 as a feature value",
          FRAUD, lambda: ('{"instances":[[1e400%s]]}' % (",0" * 7)).encode(), 400)
http_case("predict_fraud_number_out_of_fp32", "1e39 as a feature value (out of range for FP32)",
          FRAUD, lambda: ('{"instances":[[1e39%s]]}' % (",0" * 7)).encode(), 400)
http_case("predict_fraud_nested_100000_deep", "instances nested 100,000 deep",
          FRAUD, lambda: ('{"instances":%s}' % deep(100_000)).encode(), 400)
http_case("predict_fraud_nested_200_deep", "instances nested 200 deep (past the 128 cap)",
          FRAUD, lambda: ('{"instances":%s}' % deep(200)).encode(), 400)
http_case("predict_fraud_client_request_id_4mib_1000_rows", "client_request_id of 4 MiB on a request of 1,000 rows",
          FRAUD, lambda: dumps(fraud_split(1000, client_request_id="r" * (4 * MiB))), 400, settle=SLOW)
http_case("predict_fraud_client_request_id_257", f"client_request_id of {ID_CAP + 1} bytes",
          FRAUD, lambda: dumps(fraud_split(2, client_request_id="r" * (ID_CAP + 1))), 400, settle=SLOW)
http_case("predict_fraud_x_request_id_10kb", "x-request-id header of 10 KB on 1,000 rows",
          FRAUD, lambda: dumps(fraud_split(1000)), 400, headers=[("x-request-id", "i" * (10 * KiB))], settle=SLOW)
http_case("predict_fraud_x_request_id_257", f"x-request-id header of {ID_CAP + 1} bytes",
          FRAUD, lambda: dumps(fraud_split(2)), 400, headers=[("x-request-id", "i" * (ID_CAP + 1))], settle=SLOW)
http_case("predict_fraud_requester_10kb", "x-sluice-requester header of 10 KB on 1,000 rows",
          FRAUD, lambda: dumps(fraud_split(1000)), 400, headers=[("x-sluice-requester", "q" * (10 * KiB))],
          settle=SLOW)
http_case("predict_fraud_body_over_limit", "a 17 MiB body with Content-Length",
          FRAUD, lambda: padded_json(17 * MiB), 413)
http_case("predict_fraud_body_over_limit_chunked", "a 17 MiB chunked body (no Content-Length)",
          FRAUD, lambda: padded_json(17 * MiB), 413, chunked=True)
http_case("predict_fraud_truncated_body", "Content-Length 100000, 20 bytes sent, then the write side closed",
          FRAUD, lambda: dumps(fraud_split(2)), (None, 400), content_length=100_000, send_bytes=20, half_close=True,
          timeout=15)
http_case("predict_fraud_truncated_body_abandoned", "Content-Length 100000, 20 bytes sent, then the connection closed",
          FRAUD, lambda: dumps(fraud_split(2)), (None,), content_length=100_000, send_bytes=20, abandon=True)
http_case("predict_fraud_content_length_overflow", "Content-Length 99999999999999999999999 (hyper refuses the head)",
          FRAUD, lambda: dumps(fraud_split(2)), (None, 400), content_length="99999999999999999999999",
          json_error=False)
http_case("predict_fraud_text_plain", "a /predict body sent as text/plain",
          FRAUD, lambda: dumps(fraud_split(2)), 415, content_type="text/plain")
http_case("predict_unknown_endpoint_4kb_name", "/endpoints/<4 KB name>/predict",
          "/endpoints/" + "e" * (4 * KiB) + "/predict", lambda: dumps(fraud_split(2)), 404)
http_case("predict_fraud_pin_10kb", "x-sluice-served-model header of 10 KB (an unknown served model)",
          FRAUD, lambda: dumps(fraud_split(2)), (400, 404), headers=[("x-sluice-served-model", "s" * (10 * KiB))])

# ---- /predict on mlp (raw tensor [-1, 64], no features) -------------------------------------

http_case("predict_mlp_instances_first_huge_3_levels",
          "instances = first-element-huge nested arrays, 3 levels of 50,000 (shape product 1.25e14)",
          MLP, lambda: ('{"instances":%s}' % FH3()).encode(), 400)
http_case("predict_mlp_instances_first_huge_4_levels",
          "instances = first-element-huge nested arrays, 4 levels of 50,000 (shape product 6.25e18)",
          MLP, lambda: ('{"instances":%s}' % FH4()).encode(), 400)
http_case("predict_mlp_inputs_first_huge", "inputs = first-element-huge nested arrays, 3 levels",
          MLP, lambda: ('{"inputs":%s}' % FH3()).encode(), 400)
http_case("predict_mlp_inputs_named_first_huge", 'inputs = {"input": first-element-huge nested arrays}',
          MLP, lambda: ('{"inputs":{"input":%s}}' % FH3()).encode(), 400)
http_case("predict_mlp_instances_objects_first_huge", 'instances = [{"input": first-element-huge (2 levels)}]',
          MLP, lambda: ('{"instances":[{"input":%s}]}' % first_huge(2)).encode(), 400)
http_case("predict_mlp_inputs_ragged", "inputs rows of 64, 3 and 50,000 values",
          MLP, lambda: dumps({"inputs": [mlp_rows(1)[0], [1, 2, 3], [0] * FIRST_HUGE]}), 400)
http_case("predict_mlp_instances_1m_wide", "instances: one row of 1,000,000 values",
          MLP, lambda: ('{"instances":[[%s]]}' % zeros(1_000_000)).encode(), 400)
http_case("predict_mlp_split_first_huge", "dataframe_split (not accepted without features) with first-huge data",
          MLP, lambda: ('{"dataframe_split":{"data":%s}}' % FH3()).encode(), 400)
http_case("predict_mlp_records_1m_keys", "dataframe_records (not accepted without features) of 1,000,000 keys",
          MLP, lambda: ('{"dataframe_records":[{%s}]}'
                        % ",".join(f'"c{i}":0' for i in range(1_000_000))).encode(), 400)
http_case("predict_mlp_number_1e400", "1e400 in a row",
          MLP, lambda: ('{"instances":[[1e400%s]]}' % (",0" * 63)).encode(), 400)
http_case("predict_mlp_infinity_literal", "Infinity literal in inputs (not JSON)",
          MLP, lambda: ('{"inputs":[[Infinity%s]]}' % (",0" * 63)).encode(), 400)
http_case("predict_mlp_nested_100000_deep", "inputs nested 100,000 deep",
          MLP, lambda: ('{"inputs":%s}' % deep(100_000)).encode(), 400)
http_case("predict_mlp_client_request_id_4mib_500_rows", "client_request_id of 4 MiB on 500 rows",
          MLP, lambda: dumps({"instances": mlp_rows(500), "client_request_id": "r" * (4 * MiB)}), 400, settle=SLOW)

# ---- KServe V2 JSON --------------------------------------------------------------------------

for _dt in V2_TYPES:
    for _sname, _shape in BAD_SHAPES.items():
        http_case(f"v2_json_{_dt}_{_sname}", f"V2 JSON {_dt} input of shape {_shape} with 3 elements",
                  V2_MLP, (lambda dt=_dt, shape=_shape: dumps(
                      {"inputs": [{"name": "input", "datatype": dt, "shape": shape, "data": V2_TYPES[dt][1]}]})), 400)

http_case("v2_json_FP32_shape_2_96", f"V2 JSON FP32 shape {OVER_2_64} (overflows 64 bits)",
          V2_MLP, lambda: dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": OVER_2_64,
                                             "data": [0, 0, 0]}]}), 400)
http_case("v2_json_shape_2_43x64_data_first_huge", "V2 JSON FP32 shape [2**43, 64], data first-element-huge nested",
          V2_MLP, lambda: ('{"inputs":[{"name":"input","datatype":"FP32","shape":[%d,64],"data":%s}]}'
                           % (HUGE_DIM, FH3())).encode(), 400)
V2_MLP_FP16 = "/v2/models/mlp_fp16/infer"
http_case("v2_json_fp16_out_of_range", "V2 JSON FP16 data beyond the largest half (65504)",
          V2_MLP_FP16, lambda: dumps({"inputs": [{"name": "input", "datatype": "FP16", "shape": [1, 64],
                                                  "data": [1e5] * 64}]}), 400)
http_case("v2_json_fp16_strings", "V2 JSON FP16 data of strings",
          V2_MLP_FP16, lambda: dumps({"inputs": [{"name": "input", "datatype": "FP16", "shape": [1, 64],
                                                  "data": ["0.5"] * 64}]}), 400)
binary_case("v2_bin_fp16_odd_bytes", "V2 binary FP16 input of 127 bytes (64 elements need 128)",
            V2_MLP_FP16, lambda: v2_binary_body([{"name": "input", "datatype": "FP16", "shape": [1, 64],
                                                  "parameters": {"binary_data_size": 127}}], [b"\0" * 127]))
binary_case("v2_bin_fp16_huge_shape", "V2 binary FP16 shape [2**43, 64] over 128 bytes",
            V2_MLP_FP16, lambda: v2_binary_body([{"name": "input", "datatype": "FP16", "shape": [HUGE_DIM, 64],
                                                  "parameters": {"binary_data_size": 128}}], [b"\0" * 128]))
def grpc_typed_fp16() -> "service_pb2.ModelInferRequest":
    req = grpc_request("mlp_fp16", [("input", "FP16", [1, 64])])
    req.inputs[0].contents.fp32_contents.extend([0.5] * 64)
    return req


grpc_case("grpc_fp16_typed_contents", "gRPC FP16 input in typed fp32_contents (KServe has no FP16 field)",
          grpc_typed_fp16)
grpc_case("grpc_fp16_raw_short", "gRPC FP16 raw_input_contents of 100 bytes for 64 elements",
          lambda: grpc_request("mlp_fp16", [("input", "FP16", [1, 64])], [b"\0" * 100]))
for _dt in ("FP16", "BF16", "FOO"):
    http_case(f"v2_json_datatype_{_dt}", f"V2 JSON input with datatype {_dt}",
              V2_MLP, (lambda dt=_dt: dumps({"inputs": [{"name": "input", "datatype": dt, "shape": [1, 64],
                                                         "data": [0] * 64}]})), 400)
http_case("v2_json_data_nested_100000_deep", "V2 JSON data nested 100,000 deep",
          V2_MLP, lambda: ('{"inputs":[{"name":"input","datatype":"FP32","shape":[1,64],"data":%s}]}'
                           % deep(100_000)).encode(), 400)
http_case("v2_json_nan_literal", "V2 JSON data with a NaN literal (not JSON)",
          V2_MLP, lambda: ('{"inputs":[{"name":"input","datatype":"FP32","shape":[1,64],"data":[NaN%s]}]}'
                           % (",0" * 63)).encode(), 400)
http_case("v2_json_number_1e400", "V2 JSON data with 1e400",
          V2_MLP, lambda: ('{"inputs":[{"name":"input","datatype":"FP32","shape":[1,64],"data":[1e400%s]}]}'
                           % (",0" * 63)).encode(), 400)
http_case("v2_json_int64_too_big", "V2 JSON INT64 element 99999999999999999999999",
          V2_MLP, lambda: ('{"inputs":[{"name":"input","datatype":"INT64","shape":[1,64],'
                           '"data":[99999999999999999999999%s]}]}' % (",0" * 63)).encode(), 400)
http_case("v2_json_data_1m_elements", "V2 JSON shape [1, 64] with 1,000,000 data elements",
          V2_MLP, lambda: ('{"inputs":[{"name":"input","datatype":"FP32","shape":[1,64],"data":[%s]}]}'
                           % zeros(1_000_000)).encode(), 400)
http_case("v2_json_id_1mib", "V2 JSON request id of 1 MiB (a valid input)",
          V2_MLP, lambda: dumps({"id": "v" * MiB, "inputs": [mlp_json_input(1)]}), 400, settle=SLOW)
http_case("v2_json_id_257", f"V2 JSON request id of {ID_CAP + 1} bytes",
          V2_MLP, lambda: dumps({"id": "v" * (ID_CAP + 1), "inputs": [mlp_json_input(1)]}), 400, settle=SLOW)
http_case("v2_json_endpoint_id_1mib", "V2 JSON through the fraud endpoint with an id of 1 MiB",
          "/v2/models/fraud/infer", lambda: dumps({"id": "v" * MiB, "inputs": [
              {"name": "input", "datatype": "FP32", "shape": [1, 8], "data": fraud_rows(1)[0]}]}), 400, settle=SLOW)
http_case("v2_json_x_request_id_10kb", "V2 JSON with an x-request-id header of 10 KB",
          V2_MLP, lambda: dumps({"inputs": [mlp_json_input(1)]}), 400, headers=[("x-request-id", "i" * (10 * KiB))],
          settle=SLOW)
http_case("v2_json_body_over_limit", "V2 JSON body of 17 MiB",
          V2_MLP, lambda: padded_json(17 * MiB, b'{"inputs":', b"[]}"), 413)

# ---- KServe V2 binary tensors ----------------------------------------------------------------

for _dt in V2_TYPES:
    for _sname, _shape in BAD_SHAPES.items():
        binary_case(f"v2_bin_{_dt}_{_sname}", f"V2 binary {_dt} input of shape {_shape}, 3 elements of data",
                    V2_MLP, (lambda dt=_dt, shape=_shape: v2_binary_body(
                        [{"name": "input", "datatype": dt, "shape": shape,
                          "parameters": {"binary_data_size": len(raw_of(dt))}}], [raw_of(dt)])))


def _bin_with_size(size, raw_len=256):
    def body():
        raw = np.zeros(raw_len // 4, dtype="<f4").tobytes()
        return v2_binary_body([{"name": "input", "datatype": "FP32", "shape": [1, 64],
                                "parameters": {"binary_data_size": size}}], [raw])
    return body


binary_case("v2_bin_size_too_small", "binary_data_size 100 for a [1, 64] FP32 input (256 bytes sent)",
            V2_MLP, _bin_with_size(100))
binary_case("v2_bin_size_too_large", "binary_data_size 1,000,000 with 256 bytes of binary data",
            V2_MLP, _bin_with_size(1_000_000))
binary_case("v2_bin_size_2_63", "binary_data_size 9223372036854775807",
            V2_MLP, _bin_with_size(9223372036854775807))
binary_case("v2_bin_size_2_64", "binary_data_size 18446744073709551616 (past u64)",
            V2_MLP, _bin_with_size(18446744073709551616))
binary_case("v2_bin_size_negative", "binary_data_size -256",
            V2_MLP, _bin_with_size(-256))
binary_case("v2_bin_size_not_a_number", 'binary_data_size "256"',
            V2_MLP, _bin_with_size("256"))
binary_case("v2_bin_size_float", "binary_data_size 1e30",
            V2_MLP, _bin_with_size(1e30))
binary_case("v2_bin_header_length_past_body", "Inference-Header-Content-Length 10,000,000 for a small body",
            V2_MLP, lambda: v2_binary_body(*map(lambda x: [x], mlp_binary_input(1))), header_length="10000000")
binary_case("v2_bin_header_length_not_a_number", "Inference-Header-Content-Length: abc",
            V2_MLP, lambda: v2_binary_body(*map(lambda x: [x], mlp_binary_input(1))), header_length="abc")
binary_case("v2_bin_header_length_negative", "Inference-Header-Content-Length: -5",
            V2_MLP, lambda: v2_binary_body(*map(lambda x: [x], mlp_binary_input(1))), header_length="-5")
binary_case("v2_bin_header_length_2_64", "Inference-Header-Content-Length: 18446744073709551616",
            V2_MLP, lambda: v2_binary_body(*map(lambda x: [x], mlp_binary_input(1))),
            header_length="18446744073709551616")
binary_case("v2_bin_header_length_zero", "Inference-Header-Content-Length: 0 (no JSON header)",
            V2_MLP, lambda: v2_binary_body(*map(lambda x: [x], mlp_binary_input(1))), header_length="0")
binary_case("v2_bin_bytes_length_past_end", "BYTES element whose 4-byte length says 2**31-1, 2 bytes follow",
            V2_MLP, lambda: v2_binary_body([{"name": "input", "datatype": "BYTES", "shape": [1],
                                             "parameters": {"binary_data_size": 6}}],
                                           [(2**31 - 1).to_bytes(4, "little") + b"ab"]))
binary_case("v2_bin_bytes_length_ffffffff", "BYTES element whose length is 0xffffffff, shape [2**43]",
            V2_MLP, lambda: v2_binary_body([{"name": "input", "datatype": "BYTES", "shape": [HUGE_DIM],
                                             "parameters": {"binary_data_size": 6}}],
                                           [b"\xff\xff\xff\xff" + b"ab"]))
binary_case("v2_bin_bytes_cut_short", "BYTES data of 2 bytes (not even a length)",
            V2_MLP, lambda: v2_binary_body([{"name": "input", "datatype": "BYTES", "shape": [1],
                                             "parameters": {"binary_data_size": 2}}], [b"ab"]))
binary_case("v2_bin_bytes_many_empty_elements", "BYTES shape [2**43] with 1 MiB of zero-length elements",
            V2_MLP, lambda: v2_binary_body([{"name": "input", "datatype": "BYTES", "shape": [HUGE_DIM],
                                             "parameters": {"binary_data_size": MiB}}], [b"\0" * MiB]))
for _dt in ("FP16", "BF16", "FOO"):
    binary_case(f"v2_bin_datatype_{_dt}", f"V2 binary input with datatype {_dt}",
                V2_MLP, (lambda dt=_dt: v2_binary_body([{"name": "input", "datatype": dt, "shape": [1, 64],
                                                         "parameters": {"binary_data_size": 128}}], [b"\0" * 128])))
binary_case("v2_bin_unclaimed_bytes", "1 MiB of binary data no input claims",
            V2_MLP, lambda: (lambda h, raw: v2_binary_body([h], [raw + b"\0" * MiB]))(*mlp_binary_input(1)))
binary_case("v2_bin_id_1mib", "V2 binary request whose JSON header has an id of 1 MiB",
            V2_MLP, lambda: (lambda h, raw: v2_binary_body([h], [raw], {"id": "v" * MiB}))(*mlp_binary_input(1)),
            settle=SLOW)
binary_case("v2_bin_body_over_limit", "V2 binary body of 17 MiB",
            V2_MLP, lambda: (lambda h: (h + b"\0" * (17 * MiB), len(h)))(
                dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [17 * MiB // 256, 64],
                                   "parameters": {"binary_data_size": 17 * MiB}}]})), status=413)
http_case("v2_bin_truncated_body", "V2 binary: Content-Length 1,000,000, 300 bytes sent, write side closed",
          V2_MLP, lambda: v2_binary_body(*map(lambda x: [x], mlp_binary_input(1)))[0], (None, 400),
          content_type="application/octet-stream", headers=[("Inference-Header-Content-Length", "90")],
          content_length=1_000_000, send_bytes=300, half_close=True, timeout=15)

# ---- labels ----------------------------------------------------------------------------------

http_case("labels_label_1mib", "a label of 1 MiB",
          LABELS, lambda: dumps([{"request_id": "hostile-1", "label": "L" * MiB}]), 400, settle=SLOW)
http_case("labels_request_id_257", f"a label whose request_id has {ID_CAP + 1} bytes",
          LABELS, lambda: dumps([{"request_id": "i" * (ID_CAP + 1), "label": "fraud"}]), 400, settle=SLOW)
http_case("labels_request_id_10kb_x_1000", "1,000 labels with request_ids of 10 KB",
          LABELS, lambda: dumps([{"request_id": f"{k}" + "i" * (10 * KiB), "label": "fraud"} for k in range(1000)]),
          400, settle=SLOW)
http_case("labels_client_request_id_4mib", "a label whose client_request_id has 4 MiB",
          LABELS, lambda: dumps([{"client_request_id": "c" * (4 * MiB), "label": "legit"}]), 400, settle=SLOW)
http_case("labels_nested_100000_deep", "a labels body nested 100,000 deep",
          LABELS, lambda: deep(100_000).encode(), 400)
http_case("labels_label_nested_200_deep", "a label value nested 200 deep",
          LABELS, lambda: ('[{"request_id":"x","label":%s}]' % deep(200)).encode(), 400)
http_case("labels_nan_literal", "a NaN literal label (not JSON)",
          LABELS, lambda: b'[{"request_id":"x","label":NaN}]', 400)
http_case("labels_number_1e400", "label 1e400",
          LABELS, lambda: b'[{"request_id":"x","label":1e400}]', 400)
http_case("labels_body_over_limit", "a labels body of 17 MiB",
          LABELS, lambda: padded_json(17 * MiB, b"", b"[]"), 413)
http_case("labels_truncated_body", "labels: Content-Length 100000, 10 bytes sent, write side closed",
          LABELS, lambda: dumps([{"request_id": "x", "label": "fraud"}]), (None, 400), content_length=100_000,
          send_bytes=10, half_close=True, timeout=15)

# ---- gRPC ModelInfer -------------------------------------------------------------------------

for _dt in V2_TYPES:
    for _sname, _shape in BAD_SHAPES.items():
        grpc_case(f"grpc_raw_{_dt}_{_sname}", f"gRPC raw_input_contents {_dt} of shape {_shape}, 3 elements",
                  (lambda dt=_dt, shape=_shape: grpc_request("mlp", [("input", dt, shape)], [raw_of(dt)])))

grpc_case("grpc_raw_FP32_shape_2_96", f"gRPC raw FP32 of shape {OVER_2_64}",
          lambda: grpc_request("mlp", [("input", "FP32", OVER_2_64)], [b"\0" * 12]))


def _typed(datatype, shape, **contents):
    def build():
        req = grpc_request("mlp", [("input", datatype, shape)])
        for k, v in contents.items():
            getattr(req.inputs[0].contents, k).extend(v)
        return req
    return build


grpc_case("grpc_typed_FP32_dim_2_43", "gRPC typed fp32_contents (3 values) with shape [2**43]",
          _typed("FP32", [HUGE_DIM], fp32_contents=[1.0, 2.0, 3.0]))
grpc_case("grpc_typed_BYTES_dim_2_43", "gRPC typed bytes_contents (3 values) with shape [2**43]",
          _typed("BYTES", [HUGE_DIM], bytes_contents=[b"a", b"b", b"c"]))
grpc_case("grpc_typed_INT64_product_over_2_63", "gRPC typed int64_contents with shape product > 2**63",
          _typed("INT64", OVER_2_63, int64_contents=[1, 2, 3]))
grpc_case("grpc_raw_count_mismatch", "gRPC: 2 raw_input_contents for 1 input",
          lambda: grpc_request("mlp", [("input", "FP32", [1, 64])], [b"\0" * 256, b"\0" * 256]))
grpc_case("grpc_raw_size_mismatch", "gRPC: FP32 [1, 64] with 100 raw bytes",
          lambda: grpc_request("mlp", [("input", "FP32", [1, 64])], [b"\0" * 100]))
grpc_case("grpc_bytes_length_past_end", "gRPC raw BYTES element whose length says 2**31-1, 2 bytes follow",
          lambda: grpc_request("mlp", [("input", "BYTES", [1])], [(2**31 - 1).to_bytes(4, "little") + b"ab"]))
grpc_case("grpc_bytes_many_empty_elements", "gRPC raw BYTES shape [2**43], 1 MiB of zero-length elements",
          lambda: grpc_request("mlp", [("input", "BYTES", [HUGE_DIM])], [b"\0" * MiB]))
for _dt in ("FP16", "BF16", "FOO"):
    grpc_case(f"grpc_datatype_{_dt}", f"gRPC input with datatype {_dt}",
              (lambda dt=_dt: grpc_request("mlp", [("input", dt, [1, 64])], [b"\0" * 128])))
grpc_case("grpc_id_1mib", "gRPC ModelInfer with a V2 id of 1 MiB (a valid input)",
          lambda: grpc_valid_mlp("g" * MiB), settle=SLOW)
grpc_case("grpc_id_257", f"gRPC ModelInfer with a V2 id of {ID_CAP + 1} bytes",
          lambda: grpc_valid_mlp("g" * (ID_CAP + 1)), settle=SLOW)
grpc_case("grpc_x_request_id_10kb", "gRPC x-request-id metadata of 10 KB",
          grpc_valid_mlp, metadata=[("x-request-id", "i" * (10 * KiB))], settle=SLOW)
grpc_case("grpc_requester_10kb", "gRPC x-sluice-requester metadata of 10 KB",
          grpc_valid_mlp, metadata=[("x-sluice-requester", "q" * (10 * KiB))], settle=SLOW)
grpc_case("grpc_message_over_limit", "gRPC ModelInfer message of 17 MiB",
          lambda: grpc_request("mlp", [("input", "FP32", [17 * MiB // 256, 64])], [b"\0" * (17 * MiB)]),
          code=grpc.StatusCode.RESOURCE_EXHAUSTED)

_ids = [c.id for c in CASES]
assert len(_ids) == len(set(_ids)), "duplicate case ids"
