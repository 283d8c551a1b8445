"""Tracing: one `/predict` sent with a W3C `traceparent` arrives at a real OTLP/gRPC receiver
(a small server on the `opentelemetry-proto` package, started here) as a span tree in the
caller's trace: request -> infer -> batch (the worker thread's run), plus the shadow copy's
span linked to the request. Logs are JSON lines with `[telemetry] log_format = "json"`.
"""
from __future__ import annotations

import json
import secrets
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from sluice_support import REPO, fixture, post_json, read_tail, start_sluice, stop_sluice


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans = []
        self.lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 (gRPC method name)
        with self.lock:
            for rs in request.resource_spans:
                service = next((a.value.string_value for a in rs.resource.attributes
                                if a.key == "service.name"), None)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append((service, s))
        return trace_service_pb2.ExportTraceServiceResponse()

    def in_trace(self, trace_id: bytes):
        with self.lock:
            return [(svc, s) for svc, s in self.spans if s.trace_id == trace_id]

    def linked_to(self, trace_id: bytes):
        with self.lock:
            return [s for _, s in self.spans if any(link.trace_id == trace_id for link in s.links)]


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    tmp = tmp_path_factory.mktemp("tracing")
    text = (REPO / "sluice.toml").read_text()
    text = text.replace('data_dir = "data"', f'data_dir = "{tmp / "data"}"')
    text = text.replace('model_repository = "models"', f'model_repository = "{REPO / "models"}"')
    text = text.replace('baseline = "models/', f'baseline = "{REPO}/models/')
    text += (f'\n[telemetry]\nlog_format = "json"\notlp_endpoint = "http://127.0.0.1:{port}"\n'
             'service_name = "sluice-under-test"\n')
    cfg = tmp / "sluice.toml"
    cfg.write_text(text)
    proc, ports, log = start_sluice(tmp / "gw", config=str(cfg))
    try:
        yield receiver, f"http://127.0.0.1:{ports['http']}", log
    finally:
        stop_sluice(proc)
        server.stop(grace=None)


def wait_for(what: str, f, log: Path, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = f()
        if got:
            return got
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}\n--- sluice log ---\n{read_tail(log, limit=6000)}")


def test_one_predict_is_one_span_tree_in_the_callers_trace(traced):
    receiver, http, log = traced
    f = fixture("fraud_classifier")
    trace_id, parent_id = secrets.token_bytes(16), secrets.token_bytes(8)
    traceparent = f"00-{trace_id.hex()}-{parent_id.hex()}-01"
    body = {"dataframe_split": {"columns": f["columns"], "data": f["data"][:2]}}
    r = post_json(f"{http}/endpoints/fraud/predict", body, headers={"traceparent": traceparent})
    assert r.status == 200, r.describe()

    def tree():
        spans = {s.name: s for _, s in receiver.in_trace(trace_id)}
        return spans if {"request", "infer", "batch"} <= spans.keys() else None

    spans = wait_for("request, infer and batch spans in the caller's trace", tree, log)
    request, infer, batch = spans["request"], spans["infer"], spans["batch"]
    assert request.parent_span_id == parent_id, "the request span continues the caller's span"
    assert infer.parent_span_id == request.span_id
    assert batch.parent_span_id == infer.span_id, "the worker thread's span is a child of the model call"
    assert request.start_time_unix_nano <= infer.start_time_unix_nano <= batch.start_time_unix_nano
    assert batch.end_time_unix_nano <= infer.end_time_unix_nano <= request.end_time_unix_nano
    attrs = {a.key: a.value for a in request.attributes}
    assert attrs["path"].string_value == "/endpoints/fraud/predict"
    status = attrs["status"]
    assert (status.int_value or status.string_value) in (200, "200"), status
    assert {svc for svc, _ in receiver.in_trace(trace_id)} == {"sluice-under-test"}
    # The demo mirrors every request to its shadow: a span of its own, linked to the request.
    shadows = wait_for("the shadow's span, linked to the request",
                       lambda: [s for s in receiver.linked_to(trace_id) if s.name == "shadow"], log)
    assert any(link.span_id == request.span_id for link in shadows[0].links)
    assert shadows[0].trace_id != trace_id


def test_logs_are_json_lines(traced):
    _, _, log = traced
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    events = [json.loads(line) for line in lines if line.startswith("{")]
    assert events, read_tail(log)
    assert all("level" in e and "fields" in e for e in events), events[:3]
    assert len(events) == len(lines), [line for line in lines if not line.startswith("{")][:5]
