"""The gateway survives hostile input.

Every bad request gets a clear 4xx with {"error": "..."} (or the right gRPC code), the process
stays up, and its memory stays bounded:

  * test_hostile_request: one case per hostile request (hostile_cases.py): shapes whose element
    count is absurd or overflows for every V2 datatype over V2 JSON, V2 binary and gRPC; ragged and
    first-element-huge nested arrays in every /predict format; JSON nested 100,000 deep; NaN and
    Infinity literals; huge numbers; a frame of 1,000,000 columns; ids, headers and labels of
    kilobytes to megabytes; wrong binary sizes and header lengths; truncated bodies; bodies over
    max_body_bytes. After each one: the process is alive, /v2/health/live answers 200, a normal
    /predict answers 200, and the peak RSS during the case is under MAX_VMHWM_BYTES.
  * test_slow_clients_are_cut_off: 1,000 connections that trickle request heads or bodies, or
    say nothing, are closed by the server, while normal requests all succeed.
  * test_overload_burst_gets_429: a burst far above the model's queue_capacity and the server's
    max_concurrent_requests gets 429s with JSON errors, no 5xx, and the gateway answers at once
    afterwards.
  * test_max_concurrent_requests_rejects_before_the_body: requests beyond
    server.max_concurrent_requests get 429 before their body is read.

This module starts its own gateway (so a crash cannot take down the session's), restarted when a
case kills it so that every case is judged on its own. The gateway's config is the demo's
sluice.toml with the keys below.
"""
from __future__ import annotations

import asyncio
import http.client as httplib
import json
import re
import resource
import selectors
import socket
import threading
import time
from pathlib import Path

import pytest

from hostile_cases import (
    CASES, ID_CAP, MiB, Case, GrpcReply, Reply, dumps, fraud_split, grpc_infer, grpc_valid_mlp, mlp_json_input,
    mlp_rows,
)
from sluice_support import REPO, http, read_tail, start_sluice, stop_sluice

# --------------------------------------------------------------------------------------------
# The module's gateway config: the demo's sluice.toml, with these [server] keys (they replace the
# demo's values of the same keys), the mlp model's queue_capacity, and the inference tables'
# flush interval (short, so logging work that follows an answer happens while a case is judged).
# --------------------------------------------------------------------------------------------
SERVER_KEYS = """\
watch_config = false
max_body_bytes = 16777216
header_read_timeout_ms = 2000
body_read_timeout_ms = 2000
max_concurrent_requests = 64
"""
MLP_QUEUE_CAPACITY = 32
TABLE_FLUSH_INTERVAL_MS = 200

# Peak resident memory (VmHWM) allowed during any single case or test. The demo's five small
# ONNX sessions with ONNX Runtime, DataFusion and the monitor take about 165 MiB once started
# (debug build); the largest legitimate work a case causes is parsing a body of up to 16 MiB into
# serde_json values (a 1,000,000-key object: about 200 MiB more). Measured across this module:
# about 410 MiB at most (after the overload burst). 1.5 GiB leaves room for a few 16 MiB bodies
# parsed at once and still catches any allocation sized from a number in a request.
MAX_VMHWM_BYTES = 1536 * MiB

# Slow-client test: bounds.
SLOW_CONNECTIONS = {"head_trickle": 840, "silent": 100, "body_trickle": 40, "idle_keepalive": 20}
TRICKLE_EVERY_S = 0.5
SLOW_CLOSE_BOUND_S = 15.0     # every slow connection closed by then (timeouts are 2 s / 5 s)
NORMAL_REQUESTS = 200
# Overload test.
BURST_REQUESTS = 2000
BURST_ROWS = 32
MAX_CONCURRENT = 64           # = max_concurrent_requests above
AFTER_BURST_LATENCY_S = 1.0


def module_config(data_dir: Path) -> str:
    """sluice.toml with paths made absolute and this module's keys applied; fails loudly if the
    demo config no longer has what is replaced."""
    text = (REPO / "sluice.toml").read_text()

    def sub(pattern: str, repl: str, count: int = 1) -> None:
        nonlocal text
        text, n = re.subn(pattern, repl, text, flags=re.M)
        assert n == count, f"sluice.toml: expected {count} match(es) of {pattern!r}, found {n}"

    keys = [line.split("=")[0].strip() for line in SERVER_KEYS.splitlines() if "=" in line]
    server_end = text.index("\n[runtime]")
    server, rest = text[:server_end], text[server_end:]
    server = "\n".join(line for line in server.splitlines()
                       if line.split("=")[0].strip() not in keys)
    text = server.replace("[server]\n", "[server]\n" + SERVER_KEYS, 1) + rest
    sub(r'^data_dir = "data".*$', f"data_dir = {json.dumps(str(data_dir))}")
    sub(r'^model_repository = "models".*$', f"model_repository = {json.dumps(str(REPO / 'models'))}")
    sub(r'^baseline = "models/', f'baseline = "{REPO}/models/')
    sub(r'^name = "mlp"\nversions = \[1\]$', f'name = "mlp"\nversions = [1]\nqueue_capacity = {MLP_QUEUE_CAPACITY}')
    sub(r"flush_interval_ms = \d+", f"flush_interval_ms = {TABLE_FLUSH_INTERVAL_MS}")
    sub(r"^inference_table = \{ enabled = true \}$",
        f"inference_table = {{ enabled = true, flush_interval_ms = {TABLE_FLUSH_INTERVAL_MS} }}", count=2)
    return text


# --------------------------------------------------------------------------------------------
# The gateway (restarted when a case kills it)
# --------------------------------------------------------------------------------------------

class Gateway:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.config = tmp / "sluice-hostile.toml"
        (tmp / "data").mkdir(exist_ok=True)
        self.config.write_text(module_config(tmp / "data"))
        self.runs = 0
        self.proc = None
        self.start()

    def start(self) -> None:
        self.runs += 1
        self.proc, ports, self.log_path = start_sluice(self.tmp / f"run{self.runs}", str(self.config))
        self.http_port, self.grpc_port = ports["http"], ports["grpc"]
        self.http = f"http://127.0.0.1:{self.http_port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ensure_running(self) -> None:
        if not self.alive():
            self.start()

    def stop(self) -> None:
        if self.proc is not None:
            stop_sluice(self.proc)

    def exit_description(self) -> str:
        rc = self.proc.poll()
        if rc is None:
            return "running"
        return f"exited with status {rc}" + (f" (signal {-rc})" if rc < 0 else "")

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int, limit: int = 2500) -> str:
        return read_tail(self.log_path, start=offset, limit=limit)

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM in bytes (empty when the process is gone)."""
        out = {}
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith(("VmRSS:", "VmHWM:")):
                        k, v = line.split(":", 1)
                        out[k] = int(v.split()[0]) * 1024
        except OSError:
            pass
        return out

    def reset_peak(self) -> None:
        """Resets VmHWM to the current RSS (Linux clear_refs 5), so a case's peak is its own."""
        try:
            with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass  # older kernels: VmHWM stays the peak since start, a stricter check


def _raise_nofile(want: int = 16384) -> None:
    """The slow-client and burst tests hold over 2,000 sockets here and in the gateway (which
    inherits this limit when started from here)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    _raise_nofile()
    g = Gateway(tmp_path_factory.mktemp("hostile"))
    try:
        yield g
    finally:
        g.stop()


VALID_PREDICT = dumps(fraud_split(2))


def after_checks(gw: Gateway, settle: float) -> list[str]:
    """Problems with the gateway after a request: dead, not live, not serving, memory."""
    problems = []
    time.sleep(settle)
    if not gw.alive():
        return [f"the gateway process {gw.exit_description()}"]
    try:
        r = http("GET", f"{gw.http}/v2/health/live", timeout=10)
        if r.status != 200:
            problems.append(f"GET /v2/health/live -> {r.status} {r.body[:200]!r}")
    except (OSError, httplib.HTTPException) as e:
        problems.append(f"GET /v2/health/live failed: {type(e).__name__}: {e}")
    try:
        r = http("POST", f"{gw.http}/endpoints/fraud/predict", VALID_PREDICT,
                 {"Content-Type": "application/json"}, timeout=10)
        if r.status != 200 or len(json.loads(r.body).get("predictions", [])) != 2:
            problems.append(f"a normal /predict afterwards -> {r.status} {r.body[:300]!r}")
    except (OSError, ValueError, httplib.HTTPException) as e:
        problems.append(f"a normal /predict afterwards failed: {type(e).__name__}: {e}")
    if not gw.alive():
        return problems + [f"the gateway process {gw.exit_description()}"]
    mem = gw.memory()
    if mem.get("VmHWM", 0) > MAX_VMHWM_BYTES:
        problems.append(f"peak RSS (VmHWM) {mem['VmHWM'] / MiB:.0f} MiB > bound {MAX_VMHWM_BYTES / MiB:.0f} MiB "
                        f"(VmRSS now {mem.get('VmRSS', 0) / MiB:.0f} MiB)")
    return problems


def error_body_problem(reply: Reply) -> str | None:
    """None when the body is {"error": "<non-empty text>"}."""
    try:
        body = json.loads(reply.body)
    except ValueError:
        return f"body is not JSON: {reply.body[:300]!r} (content-type {reply.headers.get('content-type')!r})"
    if not (isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"].strip()):
        return f'body is not {{"error": "<text>"}}: {reply.body[:300]!r}'
    return None


# --------------------------------------------------------------------------------------------
# 1. One hostile request at a time
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_request(gw, case: Case):
    gw.ensure_running()
    gw.reset_peak()
    log_from = gw.log_size()
    result = case.send(gw)
    problems = []
    if isinstance(result, GrpcReply):
        if result.code != case.code:
            problems.append(f"expected gRPC {case.code.name}, got {result.describe()}")
        elif not result.details.strip():
            problems.append(f"gRPC {result.code.name} without a message")
    else:
        if result.status not in case.status:
            problems.append(f"expected HTTP {' or '.join(map(str, case.status))}, got {result.describe()}")
        elif result.status is not None and case.json_error:
            p = error_body_problem(result)
            if p:
                problems.append(f"HTTP {result.status}: {p}")
    problems += after_checks(gw, case.settle)
    assert not problems, (f"{case.id}: {case.what}\n  - " + "\n  - ".join(problems)
                          + f"\n--- gateway log during the case ---\n{gw.log_since(log_from)}")


def test_there_are_enough_cases():
    assert len(CASES) >= 45


def test_values_at_the_caps_are_accepted(gw):
    """Ids and text of exactly ID_CAP bytes are served normally (the caps only cut what is longer)."""
    gw.ensure_running()
    rid = "i" * ID_CAP
    r = http("POST", f"{gw.http}/endpoints/fraud/predict", VALID_PREDICT,
             {"Content-Type": "application/json", "x-request-id": rid, "x-sluice-requester": "q" * ID_CAP})
    assert r.status == 200, r.describe()
    assert r.headers.get("x-request-id") == rid, f"the client's x-request-id must be echoed: {r.headers}"
    r = http("POST", f"{gw.http}/endpoints/fraud/predict", dumps(fraud_split(2, client_request_id="c" * ID_CAP)),
             {"Content-Type": "application/json"})
    assert r.status == 200, r.describe()
    r = http("POST", f"{gw.http}/v2/models/mlp/infer", dumps({"id": "v" * ID_CAP, "inputs": [mlp_json_input(1)]}),
             {"Content-Type": "application/json"})
    assert r.status == 200, r.describe()
    assert json.loads(r.body).get("id") == "v" * ID_CAP, r.describe()
    r = http("POST", f"{gw.http}/endpoints/fraud/labels",
             dumps([{"request_id": rid, "label": "L" * ID_CAP}, {"client_request_id": "c" * ID_CAP, "label": "fraud"}]),
             {"Content-Type": "application/json"})
    assert r.status == 200, r.describe()
    g = grpc_infer(gw.grpc_port, grpc_valid_mlp("g" * ID_CAP), metadata=[("x-request-id", rid)])
    assert g.code.name == "OK", g.describe()
    assert gw.alive()


# --------------------------------------------------------------------------------------------
# 2. Slow clients
# --------------------------------------------------------------------------------------------

def _read_response_blocking(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    need = int(m.group(1)) if m else 0
    while len(body) < need:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head


def test_slow_clients_are_cut_off(gw):
    """1,000 connections that trickle a request head (a header line every 0.5 s, never ending
    it), say nothing at all, trickle a body after a complete head (Content-Length 100000, 2 bytes
    every 0.5 s), or sit idle on keep-alive after one request: the server closes every one of
    them within SLOW_CLOSE_BOUND_S (header_read_timeout_ms and body_read_timeout_ms are 2 s, as
    whole-phase deadlines; on HTTP/1 the header timer also runs while a connection is idle, from
    its opening or its previous answer), while NORMAL_REQUESTS sequential /predict
    calls made meanwhile all answer 200."""
    gw.ensure_running()
    gw.reset_peak()
    log_from = gw.log_size()
    port = gw.http_port
    socks: dict[socket.socket, str] = {}
    closed: dict[socket.socket, tuple[float, str]] = {}
    answered: dict[socket.socket, bytes] = {}
    sel = selectors.DefaultSelector()
    normal: list = []
    try:
        body_head = (f"POST /endpoints/fraud/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                     '{"instances": [').encode()
        for kind, n in SLOW_CONNECTIONS.items():
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                if kind == "head_trickle":
                    s.sendall(f"POST /endpoints/fraud/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())
                elif kind == "body_trickle":
                    s.sendall(body_head)
                elif kind == "idle_keepalive":
                    s.sendall(f"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                    head = _read_response_blocking(s)
                    assert head.startswith(b"HTTP/1.1 200"), f"keep-alive probe answered {head[:100]!r}"
                s.setblocking(False)
                socks[s] = kind
                sel.register(s, selectors.EVENT_READ)
        t0 = time.monotonic()

        def run_normal():
            for i in range(NORMAL_REQUESTS):
                try:
                    r = http("POST", f"{gw.http}/endpoints/fraud/predict", VALID_PREDICT,
                             {"Content-Type": "application/json"}, timeout=10)
                    normal.append((r.status, r.body[:200]))
                except (OSError, httplib.HTTPException) as e:
                    normal.append((None, f"{type(e).__name__}: {e}"))

        worker = threading.Thread(target=run_normal, daemon=True)
        worker.start()

        def mark(s, how):
            if s not in closed:
                closed[s] = (time.monotonic() - t0, how)
                try:
                    sel.unregister(s)
                except (KeyError, ValueError):
                    pass

        step, next_trickle = 0, t0 + TRICKLE_EVERY_S
        deadline = t0 + SLOW_CLOSE_BOUND_S
        while len(closed) < len(socks) and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.05):
                s = key.fileobj
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    mark(s, f"error {type(e).__name__}")
                    continue
                if not data:
                    mark(s, "eof" if s not in answered else f"eof after {answered[s][:12]!r}")
                elif data.startswith(b"HTTP/1.1 408"):
                    mark(s, "408")
                else:
                    answered[s] = answered.get(s, b"") + data   # an answer: still must be closed
            if time.monotonic() >= next_trickle:
                step += 1
                next_trickle += TRICKLE_EVERY_S
                for s, kind in socks.items():
                    if s in closed or kind in ("silent", "idle_keepalive"):
                        continue
                    piece = f"X-Trickle-{step}: a\r\n".encode() if kind == "head_trickle" else b"0,"
                    try:
                        s.send(piece)
                    except BlockingIOError:
                        pass
                    except OSError as e:
                        mark(s, f"send error {type(e).__name__}")
        worker.join(timeout=60)

        still_open = {k: sum(1 for s, kk in socks.items() if kk == k and s not in closed) for k in SLOW_CONNECTIONS}
        times = sorted(t for t, _ in closed.values())
        hows: dict[str, int] = {}
        for _, how in closed.values():
            hows[how.split(" ")[0]] = hows.get(how.split(" ")[0], 0) + 1
        bad_normal = [x for x in normal if x[0] != 200]
        problems = []
        if worker.is_alive():
            problems.append("the normal requests did not finish within 60 s")
        if len(normal) != NORMAL_REQUESTS or bad_normal:
            problems.append(f"{len(bad_normal)} of {len(normal)} normal /predict calls failed "
                            f"(of {NORMAL_REQUESTS}); first: {bad_normal[:3]}")
        if any(still_open.values()):
            problems.append(f"slow connections still open after {SLOW_CLOSE_BOUND_S:.0f} s: {still_open}")
        if not gw.alive():
            problems.append(f"the gateway process {gw.exit_description()}")
        mem = gw.memory()
        if mem.get("VmHWM", 0) > MAX_VMHWM_BYTES:
            problems.append(f"peak RSS {mem['VmHWM'] / MiB:.0f} MiB > {MAX_VMHWM_BYTES / MiB:.0f} MiB")
        summary = (f"closed {len(closed)}/{len(socks)}: how {hows}; "
                   f"close times p50 {times[len(times) // 2] if times else float('nan'):.1f} s, "
                   f"max {times[-1] if times else float('nan'):.1f} s")
        assert not problems, "\n  - ".join(["slow clients:"] + problems) + f"\n{summary}\n" + gw.log_since(log_from)
    finally:
        for s in socks:
            s.close()
        sel.close()
    problems = after_checks(gw, 0.0)
    assert not problems, problems


# --------------------------------------------------------------------------------------------
# 3. Overload
# --------------------------------------------------------------------------------------------

class _Collect(asyncio.Protocol):
    """Collects the bytes of one Connection: close exchange."""

    def __init__(self):
        self.data = b""
        self.done = asyncio.get_running_loop().create_future()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(exc)


def _parse(data: bytes) -> tuple[int | None, bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    if not m:
        return None, data[:200]
    if re.search(rb"(?i)transfer-encoding:\s*chunked", head):
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            n = int(size_line.split(b";")[0] or b"0", 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    return int(m.group(1)), body


async def _burst(port: int, request: bytes, n: int, timeout: float,
                 connected_s: list) -> list[tuple[int | None, bytes, str]]:
    loop = asyncio.get_running_loop()

    async def connect():
        try:
            return (await asyncio.wait_for(loop.create_connection(_Collect, "127.0.0.1", port), 10))[1]
        except (OSError, asyncio.TimeoutError) as e:
            return f"connect: {type(e).__name__}: {e}"

    t0 = time.monotonic()
    protos = await asyncio.gather(*(connect() for _ in range(n)))
    connected_s.append(time.monotonic() - t0)
    # Every connection is open before any request is written, so they all arrive at once.
    for p in protos:
        if isinstance(p, _Collect):
            p.transport.write(request)

    async def finish(p):
        if not isinstance(p, _Collect):
            return None, b"", p
        try:
            exc = await asyncio.wait_for(asyncio.shield(p.done), timeout)
        except asyncio.TimeoutError:
            p.transport.abort()
            exc = "timeout"
        status, body = _parse(p.data)
        return status, body, "" if status is not None else f"no answer ({exc})"

    results = await asyncio.gather(*(finish(p) for p in protos))
    return results


def _request(port: int, path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def test_overload_burst_gets_429(gw):
    """BURST_REQUESTS requests of BURST_ROWS rows to mlp, all written at once over as many
    connections: far above mlp's queue_capacity (MLP_QUEUE_CAPACITY) and max_concurrent_requests.
    Some get 429 with a JSON error, the rest 200; nothing else (no 5xx, no dropped connection).
    Right after, a normal request answers 200 within AFTER_BURST_LATENCY_S."""
    gw.ensure_running()
    gw.reset_peak()
    log_from = gw.log_size()
    request = _request(gw.http_port, "/endpoints/mlp/predict", dumps({"instances": mlp_rows(BURST_ROWS)}))
    t0 = time.monotonic()
    connected_s: list[float] = []
    results = asyncio.run(_burst(gw.http_port, request, BURST_REQUESTS, timeout=60, connected_s=connected_s))
    took = time.monotonic() - t0
    by_status: dict = {}
    for status, _, _ in results:
        by_status[status] = by_status.get(status, 0) + 1
    problems = []
    no_answer = [err for status, _, err in results if status is None]
    if no_answer:
        problems.append(f"{len(no_answer)} requests got no HTTP answer; first: {no_answer[:3]}")
    others = {s: c for s, c in by_status.items() if s not in (200, 429, None)}
    if others:
        problems.append(f"statuses other than 200/429: {others}")
    if not by_status.get(429):
        problems.append("no 429 in the burst")
    if not by_status.get(200):
        problems.append("no 200 in the burst")
    for status, body, _ in results:
        if status == 429:
            p = error_body_problem(Reply(429, {}, body))
            if p:
                problems.append(f"429: {p}")
                break
    if not gw.alive():
        problems.append(f"the gateway process {gw.exit_description()}")
    else:
        t1 = time.monotonic()
        r = http("POST", f"{gw.http}/endpoints/mlp/predict", dumps({"instances": mlp_rows(2)}),
                 {"Content-Type": "application/json"}, timeout=10)
        latency = time.monotonic() - t1
        if r.status != 200 or latency > AFTER_BURST_LATENCY_S:
            problems.append(f"the request right after the burst: {r.status} in {latency:.2f} s "
                            f"(bound {AFTER_BURST_LATENCY_S} s): {r.body[:200]!r}")
        mem = gw.memory()
        if mem.get("VmHWM", 0) > MAX_VMHWM_BYTES:
            problems.append(f"peak RSS {mem['VmHWM'] / MiB:.0f} MiB > {MAX_VMHWM_BYTES / MiB:.0f} MiB")
    assert not problems, ("overload burst:\n  - " + "\n  - ".join(problems)
                          + f"\nstatuses {by_status} in {took:.1f} s (connections opened in "
                          f"{connected_s[0] if connected_s else float('nan'):.2f} s)\n{gw.log_since(log_from)}")
    problems = after_checks(gw, 0.0)
    assert not problems, problems


def test_max_concurrent_requests_rejects_before_the_body(gw):
    """MAX_CONCURRENT + 36 requests send a complete head (Content-Length 20000) and no body.
    Those beyond server.max_concurrent_requests get 429 with a JSON error while their body is
    still unsent; so does a normal request while the others hold every slot. Once
    body_read_timeout_ms has cut the holders off, the slots are free and a normal request
    answers 200."""
    gw.ensure_running()
    log_from = gw.log_size()
    port = gw.http_port
    n = MAX_CONCURRENT + 36
    head = (f"POST /endpoints/mlp/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\nContent-Length: 20000\r\n\r\n").encode()
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]
    sel = selectors.DefaultSelector()
    answers: dict[socket.socket, bytes] = {}
    ended: dict[socket.socket, str] = {}
    problems = []
    try:
        for s in socks:
            s.sendall(head)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        t0 = time.monotonic()

        def pump(until: float, stop=lambda: False):
            while time.monotonic() < until and not stop():
                for key, _ in sel.select(timeout=0.05):
                    s = key.fileobj
                    try:
                        data = s.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError as e:
                        data, err = b"", f"{type(e).__name__}"
                    else:
                        err = "eof"
                    if data:
                        answers[s] = answers.get(s, b"") + data
                    else:
                        ended[s] = err
                        sel.unregister(s)

        def rejected():
            return [s for s, d in answers.items() if d.startswith(b"HTTP/1.1 429")]

        pump(t0 + 1.5, stop=lambda: len(rejected()) >= n - MAX_CONCURRENT)
        got = len(rejected())
        if got < n - MAX_CONCURRENT:
            problems.append(f"{got} of the {n - MAX_CONCURRENT} requests beyond max_concurrent_requests "
                            f"({MAX_CONCURRENT}) got 429 within 1.5 s (body unsent); answers: "
                            f"{sorted({d[:12] for d in answers.values()})}")
        for s in rejected():
            status, body = _parse(answers[s])
            p = error_body_problem(Reply(status, {}, body))
            if p:
                problems.append(f"429: {p}")
                break
        if not problems:
            r = http("POST", f"{gw.http}/endpoints/mlp/predict", dumps({"instances": mlp_rows(1)}),
                     {"Content-Type": "application/json"}, timeout=5)
            if r.status != 429 or error_body_problem(Reply(r.status, r.headers, r.body)):
                problems.append(f"a request while every slot is held: {r.status} {r.body[:200]!r} (expected 429)")
        # The holders are cut off by body_read_timeout_ms (2 s); then the slots are free again.
        holders = [s for s in socks if s not in rejected()]
        pump(t0 + 10, stop=lambda: all(s in ended or answers.get(s, b"").startswith(b"HTTP/1.1 408")
                                       for s in holders))
        open_holders = [s for s in holders if s not in ended and not answers.get(s, b"").startswith(b"HTTP/1.1 408")]
        if open_holders:
            problems.append(f"{len(open_holders)} requests holding a slot with an unsent body are still open 10 s later")
        r = http("POST", f"{gw.http}/endpoints/mlp/predict", dumps({"instances": mlp_rows(1)}),
                 {"Content-Type": "application/json"}, timeout=10)
        if r.status != 200:
            problems.append(f"a request after the holders were cut off: {r.status} {r.body[:200]!r}")
    finally:
        for s in socks:
            s.close()
        sel.close()
    if not gw.alive():
        problems.append(f"the gateway process {gw.exit_description()}")
    assert not problems, "max_concurrent_requests:\n  - " + "\n  - ".join(problems) + "\n" + gw.log_since(log_from)
