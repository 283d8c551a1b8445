"""The README's 60-second tour, run as written.

The block between `<!-- tour -->` and `<!-- /tour -->` in README.md is parsed into commands (a
line ending in a backslash continues the next), `# -> text` lines (text the command before must
print) and `# open URL` lines (a page that must answer 200). The gateway is the demo config, as
`scripts/run-demo.sh` serves it, with its tables in a temporary directory and on free ports: the
commands get those ports by substitution (`localhost:8000`, `127.0.0.1:8002`) and through
`SLUICE_URL` / `SLUICE_ADMIN_URL` for the CLIs, and the binaries under test for `target/debug/`.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from sluice_support import REPO, get, sluice_binary, start_demo, stop_sluice


def tour_steps() -> list[dict]:
    text = (REPO / "README.md").read_text()
    m = re.search(r"<!-- tour -->\n```bash\n(.*?)```\n<!-- /tour -->", text, re.S)
    assert m, "README.md has no <!-- tour --> bash block"
    steps: list[dict] = []
    pending = ""
    for line in m.group(1).splitlines():
        if line.startswith("# -> "):
            assert steps and steps[-1]["kind"] == "run", f"an expected output before any command: {line}"
            steps[-1]["expect"].append(line[len("# -> "):])
        elif line.startswith("# open "):
            steps.append({"kind": "open", "url": line.split()[2]})
        elif line.endswith("\\"):
            pending += line[:-1] + " "
        elif line.strip():
            steps.append({"kind": "run", "cmd": pending + line, "expect": []})
            pending = ""
    assert not pending, "a continued line ends the block"
    return steps


def test_the_tour_block_is_what_the_readme_promises():
    steps = tour_steps()
    runs = [s["cmd"] for s in steps if s["kind"] == "run"]
    assert runs[0].startswith("curl ") and any(s["kind"] == "open" for s in steps)
    assert any("drift.toml" in c for c in runs) and runs[-1].startswith("target/debug/sluice monitor status")
    assert all(s["expect"] for s in steps if s["kind"] == "run"), "every command says what it prints"
    text = (REPO / "README.md").read_text()
    assert "```bash\nscripts/run-demo.sh\n```" in text.split("<!-- tour -->")[0], "terminal 1 runs the demo"
    assert "--config sluice.toml" in (REPO / "scripts" / "run-demo.sh").read_text()


def test_the_tour_runs_as_written(tmp_path: Path):
    proc, ports, log = start_demo(tmp_path)
    http_url, admin = f"http://127.0.0.1:{ports['http']}", f"http://127.0.0.1:{ports['admin']}"
    loadtest = os.environ.get("SLUICE_LOADTEST_BIN") or str(REPO / "target" / "debug" / "sluice-loadtest")
    env = {**os.environ, "SLUICE_URL": http_url, "SLUICE_ADMIN_URL": admin}
    env.pop("SLUICE_ADMIN_TOKEN", None)

    def local(s: str) -> str:
        s = s.replace("localhost:8000", f"127.0.0.1:{ports['http']}").replace("http://127.0.0.1:8002", admin)
        s = s.replace("target/debug/sluice-loadtest", loadtest)
        return re.sub(r"target/debug/sluice(?=\s)", sluice_binary(), s)

    try:
        for step in tour_steps():
            if step["kind"] == "open":
                r = get(local(step["url"]))
                assert r.status == 200 and b"Sluice" in r.body, f"{step['url']}: {r.status}"
                continue
            p = subprocess.run(["bash", "-c", local(step["cmd"])], cwd=str(REPO), env=env, capture_output=True,
                               text=True, timeout=180)
            assert p.returncode == 0, f"{step['cmd']}\n--- stdout ---\n{p.stdout[-3000:]}\n--- stderr ---\n{p.stderr[-3000:]}"
            for want in step["expect"]:
                assert want in p.stdout, f"{step['cmd']}\nprinted no {want!r}:\n{p.stdout[-3000:]}"
    finally:
        stop_sluice(proc)
