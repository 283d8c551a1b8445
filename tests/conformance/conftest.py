"""Sluice conformance suite: starts the gateway binary once per session and tests it from outside.

    .venv/bin/python -m pytest -q tests/conformance

Environment:
  SLUICE_BIN     gateway binary (default: <repo>/target/debug/sluice)
  SLUICE_CONFIG  config file (default: <repo>/sluice.toml, the demo config)
  SLUICE_START_TIMEOUT  seconds to wait for the ports file (default 60)

The binary runs with the repository root as its working directory (it loads
.ort/lib/libonnxruntime.so from there) on ephemeral ports; its ports file tells us where it
listens. On a test failure the part of the gateway's log written during that test is attached.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sluice_support import Reference, read_tail, start_sluice, stop_sluice  # noqa: E402

_LOG_PATH: Path | None = None
_LOG_OFFSET = pytest.StashKey[int]()


@dataclass(frozen=True)
class Sluice:
    http: str          # base URL, e.g. http://127.0.0.1:41234
    http_hostport: str  # 127.0.0.1:41234 (tritonclient.http url)
    grpc: str          # 127.0.0.1:41235 (tritonclient.grpc url)
    admin: str         # base URL of the admin listener
    ports: dict
    log_path: Path
    pid: int


def _log_size() -> int:
    try:
        return _LOG_PATH.stat().st_size if _LOG_PATH else 0
    except OSError:
        return 0


@pytest.fixture(scope="session")
def sluice(tmp_path_factory) -> Sluice:
    global _LOG_PATH
    workdir = tmp_path_factory.mktemp("sluice")
    proc, ports, log_path = start_sluice(workdir)
    _LOG_PATH = log_path
    try:
        yield Sluice(
            http=f"http://127.0.0.1:{ports['http']}",
            http_hostport=f"127.0.0.1:{ports['http']}",
            grpc=f"127.0.0.1:{ports['grpc']}",
            admin=f"http://127.0.0.1:{ports['admin']}",
            ports=ports,
            log_path=log_path,
            pid=proc.pid,
        )
    finally:
        stop_sluice(proc)
        _LOG_PATH = None


@pytest.fixture(scope="session")
def reference() -> Reference:
    return Reference()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if call.when == "setup":
        item.stash[_LOG_OFFSET] = _log_size()
    if rep.failed and _LOG_PATH is not None:
        start = item.stash.get(_LOG_OFFSET, 0)
        text = read_tail(_LOG_PATH, start=start, limit=3000)
        if text.strip():
            rep.sections.append(("sluice log during this test", text))
