#!/usr/bin/env python3
"""Sluice against what users would run instead, same models, same client, same machine, one run:

  - sluice: the release gateway (`${SLUICE_BIN:-target/release/sluice}`), ONNX Runtime from
    scripts/fetch-onnxruntime.sh (.ort/), no inference table; batching, intra-op threads (1) and
    instances (1) are the gateway's defaults (batching on, max_batch_size 64,
    max_queue_delay_us 0), one endpoint per model named like the model.
  - PyTriton (nvidia-pytriton): Triton's C++ server, HTTP + gRPC, in front of a Python `@batch`
    infer function calling onnxruntime (scripts/competitors/pytriton_server.py); PyTriton's
    default dynamic batcher (queue delay 0), max_batch_size 64 (PyTriton's default is 4), one
    model instance.
  - MLServer: a custom `MLModel` runtime calling onnxruntime
    (scripts/competitors/mlserver_runtime.py) with a model-settings.json per model; MLServer's
    defaults (1 parallel inference worker process, no adaptive batching) except `debug: false`
    (no access log line per request).
  - FastAPI + uvicorn[standard]: a hand-written V2 JSON service
    (scripts/competitors/fastapi_server.py), `--no-access-log`, 1 worker and 2 workers.

Every competitor runs ONNX Runtime (the same version as the gateway's) with intra_op_num_threads
= --intra-op (default 1, the gateway's default) and inter_op_num_threads = 1, CPU provider. Every
server listens on 127.0.0.1 only and runs alone (one at a time), and each answer is first checked
against onnxruntime's own output for a fixed input.

The load: target/release/sluice-loadtest, closed loop, generated payloads (seeded, so every
server gets the same requests; 1 row per request) from the server's V2 metadata, V2 JSON over HTTP
at each --clients, and where the server speaks them V2 binary (Triton's binary tensor extension)
and gRPC for the models in --all-protocols-for. Each run is --seconds long, its first --warmup
seconds left out of every statistic.

    python3 scripts/bench-competitors.py --setup-only          # venv + pins (outside the lock)
    flock /tmp/bench.lock python3 scripts/bench-competitors.py [--json out.json]

Needs: cargo build --release -p sluice -p sluice-loadtest --bins; scripts/fetch-onnxruntime.sh.
The venv (.venv-competitors, CPython 3.11) is created and filled from
scripts/requirements-competitors.txt on first use, and again when that file changes. Not in CI.
Prints a Markdown table and the versions of everything measured.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REL = ROOT / "target" / "release"
VENV = ROOT / ".venv-competitors"
REQS = ROOT / "scripts" / "requirements-competitors.txt"
COMP = ROOT / "scripts" / "competitors"
VPY = VENV / "bin" / "python"

sys.path.insert(0, str(ROOT / "scripts"))
from bench_support import start_gateway  # noqa: E402

PACKAGES = ["nvidia-pytriton", "tritonclient", "mlserver", "fastapi", "starlette", "pydantic", "uvicorn",
            "uvloop", "httptools", "onnxruntime", "numpy", "grpcio"]


# ---------------------------------------------------------------- setup

def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def setup_venv() -> dict:
    """Creates .venv-competitors and installs the pins when missing or when the pins changed."""
    stamp = VENV / ".requirements.sha256"
    want = hashlib.sha256(REQS.read_bytes()).hexdigest()
    info = {"venv": str(VENV)}
    if VPY.exists() and stamp.exists() and stamp.read_text().strip() == want:
        info["installed"] = "already"
    else:
        py = shutil.which("python3.11") or sys.executable
        t0 = time.time()
        if not VPY.exists():
            subprocess.run([py, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VPY), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
        subprocess.run([str(VPY), "-m", "pip", "install", "-q", "-r", str(REQS)], check=True)
        stamp.write_text(want)
        info["installed"] = f"now, in {time.time() - t0:.0f} s"
    ver = subprocess.run([str(VPY), "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                         text=True, check=True).stdout.strip()
    if not ver.startswith("3.11."):
        sys.exit(f"{VENV} runs Python {ver}; the pins are for CPython 3.11")
    info["python"] = ver
    info["size_mib"] = round(dir_size(VENV) / 2**20)
    return info


def package_versions() -> dict:
    code = ("import json, importlib.metadata as m\n"
            f"print(json.dumps({{p: m.version(p) for p in {PACKAGES!r}}}))")
    return json.loads(subprocess.run([str(VPY), "-c", code], capture_output=True, text=True, check=True).stdout)


# ---------------------------------------------------------------- helpers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, body: dict | None = None, timeout: float = 10):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def reference_inputs(models: list[str]) -> dict:
    """A fixed 1-row input per model and onnxruntime's own outputs for it (flattened)."""
    code = r"""
import json, sys, numpy as np, onnxruntime as ort
out = {}
for name in sys.argv[1:]:
    s = ort.InferenceSession(f"models/{name}/1/model.onnx", providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    width = int(np.prod([int(d) for d in i.shape[1:]]))
    x = np.array([((k % 7) - 3) / 3.0 for k in range(width)], dtype=np.float32).reshape(1, width)
    res = s.run(None, {i.name: x})
    out[name] = {"input": i.name, "shape": [1, width], "data": x.ravel().tolist(),
                 "outputs": {o.name: np.asarray(r).ravel().astype(float).tolist() for o, r in zip(s.get_outputs(), res)}}
print(json.dumps(out))
"""
    p = subprocess.run([str(VPY), "-c", code, *models], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(p.stdout)


def check_answers(http: str, ref: dict) -> str:
    """Sends each model's fixed input as V2 JSON; '' when every output matches onnxruntime's."""
    for name, r in ref.items():
        body = {"inputs": [{"name": r["input"], "shape": r["shape"], "datatype": "FP32", "data": r["data"]}]}
        try:
            ans = http_json(f"{http}/v2/models/{name}/infer", body)
        except (urllib.error.URLError, OSError) as e:
            detail = e.read()[:300].decode(errors="replace") if isinstance(e, urllib.error.HTTPError) else ""
            return f"{name}: {e} {detail}"
        got = {o["name"]: o.get("data") for o in ans.get("outputs", [])}
        for out, want in r["outputs"].items():
            g = got.get(out)
            if g is None or len(g) != len(want) or any(abs(float(a) - b) > 1e-4 + 1e-4 * abs(b) for a, b in zip(g, want)):
                return f"{name}.{out}: got {g}, want {want}"
    return ""


def wait_ready(proc: subprocess.Popen, http: str, models: list[str], log: Path, limit: float = 180):
    t0 = time.time()
    while time.time() - t0 < limit:
        if proc.poll() is not None:
            sys.exit(f"server exited ({proc.returncode}) before it was ready; see {log}")
        try:
            if all(urllib.request.urlopen(f"{http}/v2/models/{m}/ready", timeout=2).status == 200 for m in models):
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    sys.exit(f"server not ready after {limit:.0f} s; see {log}")


# ---------------------------------------------------------------- servers

class Server:
    """One server under test: start(), urls, the protocols it speaks, stop()."""
    label = ""
    protocols = ("v2-json",)
    http = grpc = ""

    def __init__(self, work: Path, models: list[str], args):
        self.work, self.models, self.args = work, models, args
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = work / "server.log"
        self.proc: subprocess.Popen | None = None
        self.version = ""

    def spawn(self, cmd: list[str], env: dict | None = None, cwd: Path = ROOT):
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                         env={**os.environ, **(env or {})}, start_new_session=True)

    def stop(self):
        """SIGTERM to the server (each stops its children on it), then its whole session if need be."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(45)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # what is left of this server's own session
        except ProcessLookupError:
            pass
        self.proc.wait(10)


class Sluice(Server):
    label = "sluice"
    protocols = ("v2-json", "v2-binary", "grpc")

    def start(self):
        binary = Path(os.environ.get("SLUICE_BIN", REL / "sluice"))
        cfg = [f'[server]\ndata_dir = "{self.work / "data"}"\n[runtime]\nmodel_repository = "{ROOT / "models"}"\n']
        for m in self.models:
            cfg.append(f'[[models]]\nname = "{m}"\nversions = [1]\nintra_op_threads = {self.args.intra_op}\n')
        for m in self.models:
            cfg.append(f'[[endpoints]]\nname = "{m}"\n'
                       f'served_entities = [{{ name = "{m}-v1", entity_name = "{m}", entity_version = "1" }}]\n')
        (self.work / "sluice.toml").write_text("\n".join(cfg))
        self.proc, ports, self._logf = start_gateway(self.work, self.work / "sluice.toml", binary)
        self.log = self.work / "sluice.log"
        self.http, self.grpc = f"http://127.0.0.1:{ports['http']}", f"http://127.0.0.1:{ports['grpc']}"
        wait_ready(self.proc, self.http, self.models, self.log)
        self.version = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout.strip()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)
        if getattr(self, "_logf", None):
            self._logf.close()


class PyTriton(Server):
    label = "PyTriton"
    protocols = ("v2-json", "v2-binary", "grpc")

    def start(self):
        h, g, m = free_port(), free_port(), free_port()
        cmd = [str(VPY), str(COMP / "pytriton_server.py"), "--http-port", str(h), "--grpc-port", str(g),
               "--metrics-port", str(m), "--max-batch-size", str(self.args.pytriton_max_batch),
               "--intra-op", str(self.args.intra_op)]
        for name in self.models:
            cmd += ["--model", f"{name}={ROOT / 'models' / name / '1' / 'model.onnx'}"]
        self.spawn(cmd)
        self.http, self.grpc = f"http://127.0.0.1:{h}", f"http://127.0.0.1:{g}"
        wait_ready(self.proc, self.http, self.models, self.log)
        meta = http_json(f"{self.http}/v2")
        self.version = f"{meta['name']} {meta['version']}"


class MLServer(Server):
    label = "MLServer"
    protocols = ("v2-json", "grpc")  # no binary tensor extension: such a request fails (HTTP 422/500)

    def start(self):
        h, g, m = free_port(), free_port(), free_port()
        repo = self.work / "repo"
        repo.mkdir(exist_ok=True)
        (repo / "settings.json").write_text(json.dumps(
            {"debug": False, "host": "127.0.0.1", "http_port": h, "grpc_port": g, "metrics_port": m}))
        meta = json.loads(subprocess.run([str(VPY), "-c", METADATA_CODE, *self.models], capture_output=True,
                                         text=True, cwd=ROOT, check=True).stdout)
        for name in self.models:
            (repo / name).mkdir(exist_ok=True)
            (repo / name / "model-settings.json").write_text(json.dumps({
                "name": name, "implementation": "mlserver_runtime.OnnxRuntime",
                "inputs": meta[name]["inputs"], "outputs": meta[name]["outputs"],
                "parameters": {"uri": str(ROOT / "models" / name / "1" / "model.onnx"), "version": "1",
                               "extra": {"intra_op_threads": self.args.intra_op}},
            }, indent=1))
        self.spawn([str(VENV / "bin" / "mlserver"), "start", str(repo)], env={"PYTHONPATH": str(COMP)}, cwd=repo)
        self.http, self.grpc = f"http://127.0.0.1:{h}", f"http://127.0.0.1:{g}"
        wait_ready(self.proc, self.http, self.models, self.log)
        meta = http_json(f"{self.http}/v2")
        self.version = f"{meta['name']} {meta['version']}"


METADATA_CODE = r"""
import json, sys, onnxruntime as ort
T = {"tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(int64)": "INT64", "tensor(int32)": "INT32", "tensor(bool)": "BOOL"}
def meta(t): return {"name": t.name, "datatype": T[t.type], "shape": [d if isinstance(d, int) else -1 for d in t.shape]}
out = {}
for n in sys.argv[1:]:
    s = ort.InferenceSession(f"models/{n}/1/model.onnx", providers=["CPUExecutionProvider"])
    out[n] = {"inputs": [meta(i) for i in s.get_inputs()], "outputs": [meta(o) for o in s.get_outputs()]}
print(json.dumps(out))
"""


class FastAPI(Server):
    protocols = ("v2-json",)

    def __init__(self, work, models, args, workers: int):
        super().__init__(work, models, args)
        self.workers = workers
        self.label = f"FastAPI, {workers} worker" + ("s" if workers > 1 else "")

    def start(self):
        h = free_port()
        models = ",".join(f"{n}={ROOT / 'models' / n / '1' / 'model.onnx'}" for n in self.models)
        self.spawn([str(VENV / "bin" / "uvicorn"), "fastapi_server:app", "--app-dir", str(COMP), "--host", "127.0.0.1",
                    "--port", str(h), "--workers", str(self.workers), "--no-access-log", "--log-level", "warning"],
                   env={"SLUICE_COMP_MODELS": models, "SLUICE_COMP_INTRA_OP": str(self.args.intra_op)})
        self.http = f"http://127.0.0.1:{h}"
        wait_ready(self.proc, self.http, self.models, self.log)
        self.version = "uvicorn --workers %d" % self.workers


# ---------------------------------------------------------------- load

def load(args, target: str, url: str, model: str, clients: int) -> dict:
    cmd = [str(REL / "sluice-loadtest"), "--target", target, "--url", url, "--model", model, "-c", str(clients),
           "--duration", f"{args.seconds}s", "--warmup", f"{args.warmup}s", "--output", "json"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode not in (0, 2):
        return {"failed": (p.stderr.strip() or p.stdout.strip())[-300:]}
    r = json.loads(p.stdout)["overall"]
    lat = r["latency_ms"] or {}
    return {"rps": r["throughput"]["requests_per_s"], "p50_ms": lat.get("p50"), "p99_ms": lat.get("p99"),
            "ok": r["requests"]["ok"], "errors": r["requests"]["errors"], "error_kinds": r["errors"]}


def fmt(r: dict | None, key: str) -> str:
    if r is None:
        return "-"
    if "failed" in r:
        return "failed"
    v = r[key]
    if v is None:
        return "-"
    return f"{v:,.0f}" if key == "rps" else f"{v:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=8, help="each load run, warm-up included")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--clients", default="1,16")
    ap.add_argument("--models", default="mlp,fraud_classifier")
    ap.add_argument("--all-protocols-for", default="mlp", help="models also driven over V2 binary and gRPC")
    ap.add_argument("--servers", default="sluice,pytriton,mlserver,fastapi")
    ap.add_argument("--fastapi-workers", default="1,2")
    ap.add_argument("--intra-op", type=int, default=1, help="ONNX Runtime intra-op threads, every server")
    ap.add_argument("--pytriton-max-batch", type=int, default=64)
    ap.add_argument("--setup-only", action="store_true", help="create/fill the venv and stop")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    venv = setup_venv()
    print(f"venv: {venv}", file=sys.stderr)
    if args.setup_only:
        return
    sluice_bin = Path(os.environ.get("SLUICE_BIN", REL / "sluice"))
    for f in [sluice_bin, REL / "sluice-loadtest", ROOT / ".ort/lib/libonnxruntime.so"]:
        if not f.exists():
            sys.exit(f"missing {f}; see the docstring")
    models = args.models.split(",")
    extra = set(args.all_protocols_for.split(",")) & set(models)
    clients = [int(c) for c in args.clients.split(",")]
    wanted = args.servers.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="sluice-competitors-"))
    ref = reference_inputs(models)

    servers = []
    if "sluice" in wanted:
        servers.append(lambda: Sluice(tmp / "sluice", models, args))
    if "pytriton" in wanted:
        servers.append(lambda: PyTriton(tmp / "pytriton", models, args))
    if "mlserver" in wanted:
        servers.append(lambda: MLServer(tmp / "mlserver", models, args))
    if "fastapi" in wanted:
        for w in [int(w) for w in args.fastapi_workers.split(",")]:
            servers.append(lambda w=w: FastAPI(tmp / f"fastapi-{w}", models, args, w))

    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    t_all = time.time()
    rows, server_info = [], {}
    for make in servers:
        s = make()
        t0 = time.time()
        try:
            s.start()
            ready_s = time.time() - t0
            bad = check_answers(s.http, ref)
            if bad:
                sys.exit(f"{s.label} answered wrongly: {bad}; see {s.log}")
            server_info[s.label] = {"version": s.version, "ready_s": round(ready_s, 1)}
            print(f"{s.label}: ready in {ready_s:.1f} s, answers match onnxruntime", file=sys.stderr)
            for m in models:
                for target in s.protocols:
                    if target != "v2-json" and m not in extra:
                        continue
                    url = s.grpc if target == "grpc" else s.http
                    res = {c: load(args, target, url, m, c) for c in clients}
                    rows.append({"server": s.label, "model": m, "protocol": target, "results": res})
                    print(f"  {m} {target}: " + ", ".join(
                        f"c{c} {fmt(r, 'rps')} req/s p50 {fmt(r, 'p50_ms')} ms" for c, r in res.items()), file=sys.stderr)
        finally:
            s.stop()
    elapsed = time.time() - t_all

    versions = package_versions()
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=ROOT).stdout.strip()
    ort_lib = (ROOT / ".ort/lib/libonnxruntime.so").resolve().name
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")

    head = "| server | model | protocol | " + " | ".join(
        f"c={c} req/s | c={c} p50 ms | c={c} p99 ms" for c in clients) + " |"
    lines = [head, "|" + "---|" * (3 + 3 * len(clients))]
    for r in rows:
        cells = []
        for c in clients:
            x = r["results"][c]
            cells += [fmt(x, "rps"), fmt(x, "p50_ms"), fmt(x, "p99_ms")]
        lines.append(f"| {r['server']} | {r['model']} | {r['protocol']} | " + " | ".join(cells) + " |")
    print(f"Run {started}, {elapsed:.0f} s; {os.cpu_count()} CPUs ({cpu}), server and client share them; "
          f"sluice-loadtest closed loop, {args.seconds} s runs ({args.warmup} s warm-up left out), 1 row/request, "
          f"generated seeded payloads; ONNX Runtime intra-op threads {args.intra_op} everywhere.\n")
    print("\n".join(lines))
    problems = [(r["server"], r["model"], r["protocol"], c, x) for r in rows for c, x in r["results"].items()
                if "failed" in x or x.get("errors")]
    for srv, m, t, c, x in problems:
        print(f"\n{srv} {m} {t} c={c}: " + (f"failed: {x['failed']}" if "failed" in x
                                            else f"{x['errors']} errors: {json.dumps(x['error_kinds'])[:300]}"))
    print("\nVersions:")
    print(f"- sluice {commit}{' (with uncommitted changes)' if dirty else ''}: "
          f"{server_info.get('sluice', {}).get('version', '?')}, ONNX Runtime {ort_lib.removeprefix('libonnxruntime.so.')}")
    for label, info in server_info.items():
        if label != "sluice":
            print(f"- {label}: {info['version']}")
    print(f"- Python {venv['python']} (venv {VENV.name}): " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"- machine: {platform.system()} {platform.release()}, {platform.freedesktop_os_release().get('PRETTY_NAME', '')}")
    print("- time to ready (start to every model ready): " + ", ".join(
        f"{k} {v['ready_s']} s" for k, v in server_info.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "started": started, "elapsed_s": elapsed, "args": vars(args), "commit": commit, "dirty": bool(dirty),
            "cpus": os.cpu_count(), "cpu": cpu, "ort_lib": ort_lib, "venv": venv, "packages": versions,
            "servers": server_info, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
