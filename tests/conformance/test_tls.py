"""TLS on every listener (`[server.tls]`), with a CA made here by `trustme`:

  * Triton's own clients: `tritonclient.http` over HTTPS and `tritonclient.grpc` with TLS, against
    the CA; the answers match ONNX Runtime in Python;
  * the admin port speaks HTTPS too; plain HTTP on a TLS port gets no answer;
  * mutual TLS (`client_ca_file`): curl without a client certificate is refused at the
    handshake, with one the CA signed it is served;
  * a certificate replaced on disk is what new connections get (checked by its serial), while a
    connection opened before keeps working;
  * `sluice-loadtest` against the HTTPS and gRPC-TLS ports with the CA;
  * HTTPS out: the `sluice` CLI against the HTTPS admin port (`--ca-cert`), and a rollout's
    webhook delivered to an HTTPS receiver that the test CA signed (`server.webhook_ca_file`).
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import trustme

from sluice_support import REPO, Reference, batch_of, demo_config_text, read_tail, start_sluice, stop_sluice

FRAUD = "fraud_classifier"


def demo_config(tmp: Path, tls: str, extra_server: str = "") -> Path:
    text = demo_config_text(tmp).replace("[server]\n", f"[server]\ntls = {{ {tls} }}\nwatch_interval_ms = 100\n{extra_server}", 1)
    path = tmp / "sluice.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("client.example")
    files = {"ca": tmp / "ca.pem", "cert": tmp / "server.pem", "key": tmp / "server.key",
             "client_cert": tmp / "client.pem", "client_key": tmp / "client.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    with open(files["cert"], "wb") as f:
        for blob in server.cert_chain_pems:
            f.write(blob.bytes())
    client.private_key_pem.write_to_path(str(files["client_key"]))
    with open(files["client_cert"], "wb") as f:
        for blob in client.cert_chain_pems:
            f.write(blob.bytes())
    return {"ca_obj": ca, "dir": tmp, **files}


@pytest.fixture(scope="module")
def gateway(pki, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls-gw")
    tls = f'cert_file = "{pki["cert"]}", key_file = "{pki["key"]}"'
    proc, ports, log = start_sluice(tmp, str(demo_config(tmp, tls, f'webhook_ca_file = "{pki["ca"]}"\n')))
    yield {"ports": ports, "log": log, "tmp": tmp}
    stop_sluice(proc)


def context(pki, client: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    if client:
        ctx.load_cert_chain(str(pki["client_cert"]), str(pki["client_key"]))
    return ctx


def https_get(port: int, path: str, ctx: ssl.SSLContext, host: str = "localhost") -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=30)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def peer_serial(port: int, ctx: ssl.SSLContext) -> int:
    from cryptography import x509
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return x509.load_der_x509_certificate(s.getpeercert(binary_form=True)).serial_number


def test_tritonclient_over_https_and_grpc_tls(gateway, pki):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    x = batch_of(FRAUD, 4).astype(np.float32)
    want = Reference().run(FRAUD, "1", x)
    ports = gateway["ports"]

    ctx = context(pki)
    hc = httpclient.InferenceServerClient(f"localhost:{ports['http']}", ssl=True,
                                          ssl_context_factory=lambda *a, **k: ctx)
    assert hc.is_server_live() and hc.is_model_ready(FRAUD, "1")
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    r = hc.infer(FRAUD, [inp], model_version="1")
    for name, expected in want.items():
        np.testing.assert_allclose(r.as_numpy(name).astype(np.float64), np.asarray(expected, dtype=np.float64),
                                   rtol=1e-5, atol=1e-5, err_msg=f"HTTPS {name}")
    hc.close()

    gc = grpcclient.InferenceServerClient(f"localhost:{ports['grpc']}", ssl=True, root_certificates=str(pki["ca"]))
    assert gc.is_server_live() and gc.is_model_ready(FRAUD, "1")
    ginp = grpcclient.InferInput("input", list(x.shape), "FP32")
    ginp.set_data_from_numpy(x)
    g = gc.infer(FRAUD, [ginp], model_version="1")
    for name, expected in want.items():
        np.testing.assert_allclose(g.as_numpy(name).astype(np.float64), np.asarray(expected, dtype=np.float64),
                                   rtol=1e-5, atol=1e-5, err_msg=f"gRPC-TLS {name}")
    gc.close()

    # the admin port is HTTPS too; plain HTTP to a TLS port is not answered
    status, body = https_get(ports["admin"], "/admin/endpoints", ctx)
    assert status == 200, body
    plain = http.client.HTTPConnection("127.0.0.1", ports["http"], timeout=10)
    with pytest.raises((http.client.HTTPException, OSError)):
        plain.request("GET", "/v2/health/live")
        plain.getresponse().read()
    plain.close()
    # a client that does not trust the CA fails its handshake
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(ports["http"], "/v2/health/live", ssl.create_default_context())


def test_a_rotated_certificate_reaches_new_connections_and_spares_open_ones(gateway, pki):
    ports, ctx = gateway["ports"], context(pki)
    before = peer_serial(ports["http"], ctx)
    kept = http.client.HTTPSConnection("localhost", ports["http"], context=ctx, timeout=30)
    kept.request("GET", "/v2/health/ready")
    assert kept.getresponse().read() is not None
    # a new certificate for the same names, written over the old files
    fresh = pki["ca_obj"].issue_cert("localhost", "127.0.0.1")
    tmp_key, tmp_cert = pki["dir"] / "new.key", pki["dir"] / "new.pem"
    fresh.private_key_pem.write_to_path(str(tmp_key))
    with open(tmp_cert, "wb") as f:
        for blob in fresh.cert_chain_pems:
            f.write(blob.bytes())
    os.replace(tmp_key, pki["key"])
    os.replace(tmp_cert, pki["cert"])
    deadline, after = time.monotonic() + 20, before
    while after == before and time.monotonic() < deadline:
        time.sleep(0.2)
        after = peer_serial(ports["http"], ctx)
    assert after != before, f"new connections still get serial {before}\n{read_tail(gateway['log'])}"
    from cryptography import x509
    assert after == x509.load_pem_x509_certificate(fresh.cert_chain_pems[0].bytes()).serial_number
    # the connection opened before the rotation still works
    kept.request("GET", "/v2/health/live")
    r = kept.getresponse()
    assert r.status == 200 and r.read() is not None
    kept.close()


def test_mutual_tls_needs_a_client_certificate(pki, tmp_path):
    tls = f'cert_file = "{pki["cert"]}", key_file = "{pki["key"]}", client_ca_file = "{pki["ca"]}"'
    proc, ports, log = start_sluice(tmp_path, str(demo_config(tmp_path, tls)))
    try:
        url = f"https://localhost:{ports['http']}/v2/health/ready"
        base = ["curl", "-sS", "--max-time", "10", "--cacert", str(pki["ca"]), "-o", "/dev/null", "-w", "%{http_code}"]
        without = subprocess.run(base + [url], capture_output=True, text=True)
        assert without.returncode != 0 and without.stdout in ("", "000"), \
            f"served without a client certificate: {without.stdout} {without.stderr}"
        with_cert = subprocess.run(base + ["--cert", str(pki["client_cert"]), "--key", str(pki["client_key"]), url],
                                   capture_output=True, text=True)
        assert with_cert.returncode == 0 and with_cert.stdout == "200", f"{with_cert.stdout} {with_cert.stderr}"
        # a certificate from another CA is refused too
        other = trustme.CA().issue_cert("client.example")
        ck, cc = tmp_path / "other.key", tmp_path / "other.pem"
        other.private_key_pem.write_to_path(str(ck))
        other.cert_chain_pems[0].write_to_path(str(cc))
        foreign = subprocess.run(base + ["--cert", str(cc), "--key", str(ck), url], capture_output=True, text=True)
        assert foreign.returncode != 0, f"served a client certificate of another CA: {foreign.stdout}"
    finally:
        stop_sluice(proc)
    assert "panicked" not in read_tail(log, limit=20000)


def test_loadtest_over_tls(gateway, pki):
    loadtest = os.environ.get("SLUICE_LOADTEST_BIN") or str(REPO / "target" / "debug" / "sluice-loadtest")
    payload = REPO / "tests" / "fixtures" / "inputs" / "fraud_classifier.json"
    ports = gateway["ports"]
    for target, port, extra in [("predict", ports["http"], ["--endpoint", "fraud"]),
                                ("grpc", ports["grpc"], ["--model", "fraud"])]:
        run = subprocess.run([loadtest, "--target", target, "--url", f"https://localhost:{port}", "--ca-cert",
                              str(pki["ca"]), "-c", "2", "--duration", "2s", "--warmup", "0s", "--payload",
                              str(payload), "--output", "json", *extra],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, f"{target}: {run.stdout}\n{run.stderr}"
        r = json.loads(run.stdout)["overall"]
        assert r["requests"]["errors"] == 0 and r["requests"]["total"] > 10, f"{target}: {r}"


def test_the_cli_and_webhooks_reach_https(gateway, pki):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    admin = f"https://localhost:{gateway['ports']['admin']}"
    cli = [os.environ.get("SLUICE_BIN") or str(REPO / "target" / "debug" / "sluice"), "endpoints", "list",
           "--output", "json", "--admin-url", admin]
    ok = subprocess.run(cli + ["--ca-cert", str(pki["ca"])], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert any(e["name"] == "fraud" for e in json.loads(ok.stdout)["endpoints"])
    untrusted = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert untrusted.returncode != 0 and "certificate" in untrusted.stderr.lower(), untrusted.stderr

    got: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(pki["cert"]), str(pki["key"]))
    receiver.socket = server_ctx.wrap_socket(receiver.socket, server_side=True)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        hook = f"https://localhost:{receiver.server_address[1]}/hook"
        body = json.dumps({"candidate": "challenger", "steps": [50, 100], "interval": "1h",
                           "webhook_url": hook}).encode()
        conn = http.client.HTTPSConnection("localhost", gateway["ports"]["admin"], context=context(pki), timeout=30)
        conn.request("POST", "/rollouts/fraud", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 201, r.read()
        r.read()
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            time.sleep(0.1)
        assert got and got[0]["event"]["event"] == "started", f"{got}\n{read_tail(gateway['log'])}"
        conn.request("POST", "/rollouts/fraud/abort", b"", {"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200, r.read()
        r.read()
        conn.close()
    finally:
        receiver.shutdown()
