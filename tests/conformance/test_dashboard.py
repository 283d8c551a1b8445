"""The operator dashboard in a real browser.

The demo config (sluice.toml, with its tables in a temporary directory and an admin token) is
served by the real binary; `sluice-loadtest` runs a drift scenario against it (amount shifted for
a while, as loadtest/scenarios/drift.toml does, with shorter phases); the fraud monitor is
refreshed. Then Debian's chromium, headless and driven by Playwright, opens
`http://<admin>/dashboard` and the test checks, from the page's DOM:

  * the token prompt appears (the admin API needs the token) and the page loads once it is given;
  * the endpoints' split chart shows configured and observed shares, and the traffic charts
    draw lines with data from the running gateway;
  * the monitor's drift chart flags `amount`, its baseline-vs-current histogram is drawn, and
    the demo's `amount_drift` alert shows as firing;
  * a traffic edit goes through the confirmation step and round-trips: the admin API then
    reports the new split, and a bad edit shows the server's error;
  * experiment results, and a rollout started through the API, appear.

A screenshot is saved to target/test-artifacts/dashboard.png.

Environment: SLUICE_BIN and SLUICE_LOADTEST_BIN (default target/debug/...), CHROMIUM (default:
`chromium` on PATH; scripts/test.sh installs Debian's package).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import deltalake
import pyarrow.parquet as pq
import pytest

from sluice_support import REPO, demo_config_text, get, http, post_json, start_demo, start_sluice, stop_sluice

TOKEN = "dashboard-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Flags known to work for headless Chromium on this kind of machine.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "target" / "test-artifacts"


def chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("chromium is not installed: scripts/test.sh installs Debian's chromium package "
                    "(apt-get install chromium), or set CHROMIUM", pytrace=False)
    return path


def tall_browser(p, tmp: Path):
    """Headless Chromium with a profile in `tmp`, tall enough for the whole dashboard."""
    return p.chromium.launch_persistent_context(
        str(tmp / "chromium-profile"), executable_path=chromium(), headless=True,
        args=CHROMIUM_FLAGS, viewport={"width": 1400, "height": 2400})


def demo_config(tmp: Path) -> Path:
    """sluice.toml with its data in `tmp` and repository paths made absolute."""
    path = tmp / "sluice.toml"
    path.write_text(demo_config_text(tmp))
    return path


def drift_scenario(tmp: Path) -> Path:
    """loadtest/scenarios/drift.toml with 4-second phases."""
    text = (REPO / "loadtest" / "scenarios" / "drift.toml").read_text()
    text = re.sub(r'duration = "10s"', 'duration = "4s"', text)
    text = text.replace('baseline = "../../models/', f'baseline = "{REPO}/models/')
    text = text.replace('warmup = "2s"', 'warmup = "1s"')
    path = tmp / "drift.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboard")
    old = os.environ.get("SLUICE_ADMIN_TOKEN")
    os.environ["SLUICE_ADMIN_TOKEN"] = TOKEN
    try:
        proc, ports, log = start_sluice(tmp, str(demo_config(tmp)))
    finally:
        if old is None:
            os.environ.pop("SLUICE_ADMIN_TOKEN", None)
        else:
            os.environ["SLUICE_ADMIN_TOKEN"] = old
    http_url = f"http://127.0.0.1:{ports['http']}"
    admin = f"http://127.0.0.1:{ports['admin']}"
    loadtest = os.environ.get("SLUICE_LOADTEST_BIN") or str(REPO / "target" / "debug" / "sluice-loadtest")
    run = subprocess.run([loadtest, "--scenario", str(drift_scenario(tmp)), "--url", http_url],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"sluice-loadtest failed:\n{run.stdout}\n{run.stderr}"
    wait_for_flush(tmp / "data" / "fraud")
    r = http("POST", f"{admin}/monitors/fraud/refresh", headers={**AUTH, "Content-Type": "application/json"}, timeout=300)
    assert r.status == 200, r.describe()
    yield {"admin": admin, "http": http_url, "tmp": tmp}
    stop_sluice(proc)


def read_table(path: Path):
    """The gateway's inference table, through its Delta log (None before its first commit)."""
    return deltalake.DeltaTable(str(path)).to_pyarrow_table() if (path / "_delta_log").is_dir() else None


def wait_for_flush(path: Path) -> None:
    """Until the table's row count holds still for longer than its 1 s flush interval."""
    last, deadline = -1, time.monotonic() + 30
    while time.monotonic() < deadline:
        t = read_table(path)
        n = t.num_rows if t is not None else 0
        if n == last and n > 0:
            return
        last = n
        time.sleep(1.5)
    pytest.fail(f"the inference table {path} did not settle")


def admin_endpoint(admin: str, name: str) -> dict:
    r = http("GET", f"{admin}/admin/endpoints/{name}", headers=AUTH)
    assert r.status == 200, r.describe()
    return r.json()


def test_the_data_apis_need_the_token(gateway):
    admin = gateway["admin"]
    page = get(f"{admin}/dashboard")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert b"<script" in page.body and b"src=\"http" not in page.body, "every asset is in the page"
    for path in ("/dashboard/api/traffic", "/monitors/fraud/series", "/monitors/fraud/histogram?column=amount"):
        r = get(admin + path)
        assert r.status == 401, (path, r.describe())
        assert "error" in r.json()

    # recent traffic, against the inference table: every /predict request the load tool sent
    table = read_table(gateway["tmp"] / "data" / "fraud")
    primary = table.filter(pc.and_(pc.invert(table["is_shadow"]), pc.equal(table["row_index"], 0)))
    r = http("GET", f"{admin}/dashboard/api/traffic?minutes=30", headers=AUTH)
    assert r.status == 200, r.describe()
    series = [s for s in r.json()["series"] if s["endpoint"] == "fraud"]
    for model in ("champion", "challenger"):
        got = sum(p["requests"] for s in series if s["served_model"] == model for p in s["points"])
        want = pc.sum(pc.equal(primary["served_model"], model)).as_py()
        assert got == want and want > 0, (model, got, want)
    assert sum(p["errors"] for s in series for p in s["points"]) == pc.sum(pc.not_equal(primary["status_code"], 200)).as_py()

    # the histogram of amount in the newest 5-minute window, against numpy on the same rows
    r = http("GET", f"{admin}/monitors/fraud/histogram?column=amount&granularity=5%20minutes", headers=AUTH)
    assert r.status == 200, r.describe()
    h = r.json()
    ts = table["timestamp"].cast("int64").to_numpy()
    start = (ts.max() // 300_000_000) * 300_000_000
    assert h["window_ms"] == start // 1000
    rows = table.filter(pc.and_(pc.and_(pc.invert(table["is_shadow"]), pc.equal(table["status_code"], 200)),
                                pc.greater_equal(table["timestamp"].cast("int64"), start)))
    edges = np.array(h["edges"])

    def counts(x):
        return np.bincount(np.searchsorted(edges[1:-1], np.asarray(x), side="right"), minlength=len(edges) - 1).tolist()

    assert h["current"] == counts(rows["amount"].to_numpy()), h
    baseline = pq.read_table(REPO / "models" / "fraud_classifier" / "1" / "baseline.parquet")
    assert h["baseline"] == counts(baseline["amount"].to_numpy()), h
    assert np.isclose(edges[0], np.quantile(np.concatenate([rows["amount"].to_numpy(), baseline["amount"].to_numpy()]), 0.01))

    r = http("GET", f"{admin}/monitors/fraud/histogram?column=no_such_column", headers=AUTH)
    assert r.status == 404 and "no_such_column" in r.json()["error"], r.describe()
    r = http("GET", f"{admin}/monitors/fraud/series?granularity=3%20fortnights", headers=AUTH)
    assert r.status == 400 and "error" in r.json(), r.describe()


def test_dashboard_in_headless_chromium(gateway, tmp_path):
    from playwright.sync_api import sync_playwright

    admin = gateway["admin"]
    before = admin_endpoint(admin, "fraud")
    with sync_playwright() as p:
        browser = tall_browser(p, tmp_path)
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{admin}/dashboard")

            # the admin API wants the token: the page asks for it, then loads
            page.wait_for_selector("[data-testid=token-input]", state="visible", timeout=20_000)
            page.fill("[data-testid=token-input]", TOKEN)
            page.click("[data-testid=token-save]")
            page.wait_for_selector("body[data-loaded=true]", state="attached", timeout=60_000)
            page.wait_for_selector("[data-testid=drift-chart]", timeout=60_000)

            # endpoints: configured and observed split of the demo's 90/10 A/B test
            split = "[data-testid=split-chart][data-endpoint=fraud]"
            page.wait_for_selector(f"{split} rect[data-kind=observed][data-model=champion]", timeout=20_000)
            assert page.locator(f"{split} rect[data-kind=configured][data-model=champion]").count() == 1
            assert page.locator(f"{split} rect[data-kind=configured][data-model=challenger]").count() == 1

            # traffic over time: lines with points from the gateway's recent traffic
            for metric in ("rate", "errors", "latency"):
                chart = f"[data-testid=traffic-chart][data-endpoint=fraud][data-metric={metric}]"
                points = page.eval_on_selector_all(
                    f"{chart} [data-points]", "els => els.map(e => Number(e.dataset.points))")
                assert points and max(points) > 0, (metric, points)

            # monitoring: amount is flagged, and no other feature (the rows are drawn from the
            # baseline, so the other features match it); its drift line and histogram are drawn
            page.wait_for_selector("[data-testid=drift-flag][data-column=amount]", timeout=20_000)
            flagged = page.eval_on_selector_all("[data-testid=drift-flag][data-endpoint=fraud]",
                                                "els => els.map(e => e.dataset.column)")
            # the model's answers move with amount (larger amounts look like fraud): prediction
            # drift is the consequence, not a false alarm
            assert [c for c in flagged if c != "prediction"] == ["amount"], flagged
            drift_points = page.eval_on_selector_all(
                "[data-testid=drift-chart][data-column=amount] [data-points]",
                "els => els.map(e => Number(e.dataset.points))")
            assert drift_points and max(drift_points) > 0, drift_points
            page.click("[data-testid=drift-chart][data-column=amount]")
            hist = "[data-testid=histogram][data-column=amount]"
            page.wait_for_selector(f"{hist} rect[data-kind=current]", timeout=20_000)
            assert page.locator(f"{hist} rect[data-kind=baseline]").count() > 0

            # the alert the drift raised
            alert = page.wait_for_selector(
                "[data-testid=alert-row][data-endpoint=fraud][data-alert=amount_drift]", timeout=20_000)
            assert alert.get_attribute("data-state") == "firing"

            # a traffic edit with a confirmation step: a bad one shows the server's error ...
            page.click("[data-testid=edit-traffic][data-endpoint=fraud]")
            page.fill("[data-testid=traffic-input][data-model=champion]", "60")
            page.fill("[data-testid=traffic-input][data-model=challenger]", "50")
            page.click("[data-testid=traffic-review]")
            page.wait_for_selector("[data-testid=traffic-confirm]", state="visible")
            page.click("[data-testid=traffic-apply]")
            result = page.wait_for_selector("[data-testid=traffic-result][data-ok]", timeout=20_000)
            assert result.get_attribute("data-ok") == "false"
            assert "sum to 110" in result.inner_text(), result.inner_text()
            assert admin_endpoint(admin, "fraud")["config_version"] == before["config_version"]

            # ... and a good one, confirmed, reaches the gateway
            page.click("[data-testid=edit-traffic][data-endpoint=fraud]") \
                if not page.is_visible("[data-testid=traffic-input][data-model=champion]") else None
            page.fill("[data-testid=traffic-input][data-model=champion]", "50")
            page.fill("[data-testid=traffic-input][data-model=challenger]", "50")
            page.click("[data-testid=traffic-review]")
            confirm = page.wait_for_selector("[data-testid=traffic-confirm]", state="visible")
            assert "50" in confirm.inner_text()
            page.click("[data-testid=traffic-apply]")
            page.wait_for_selector("[data-testid=traffic-result][data-ok=true]", timeout=20_000)
            after = admin_endpoint(admin, "fraud")
            split_now = {m["name"]: m["traffic_percentage"] for m in after["served_models"] if "mirror_percent" not in m}
            assert split_now == {"champion": 50, "challenger": 50}, after
            assert after["config_version"] == before["config_version"] + 1
            # the page shows it back: configured split and the new history version
            page.wait_for_selector(f"{split} rect[data-kind=configured][data-model=champion][data-percent='50.0']",
                                   timeout=20_000)
            page.wait_for_selector(
                f"[data-testid=history-row][data-endpoint=fraud][data-version='{after['config_version']}']",
                timeout=20_000)

            # experiment results and a rollout in progress
            page.wait_for_selector("[data-testid=experiment-arm][data-model=challenger]", timeout=20_000)
            r = post_json(f"{admin}/rollouts/fraud", {"candidate": "challenger", "steps": [25, 100], "interval": "5m"},
                          headers=AUTH)
            assert r.status == 201, r.describe()
            page.wait_for_selector("[data-testid=rollout][data-endpoint=fraud][data-phase=progressing]", timeout=20_000)
            page.wait_for_selector(f"{split} rect[data-kind=configured][data-model=challenger][data-percent='25.0']",
                                   timeout=20_000)

            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            print(f"dashboard screenshot: {shot}")
            assert not errors, f"JavaScript errors on the page: {errors}"
        finally:
            browser.close()


def test_normal_traffic_leaves_the_drift_badges_off(tmp_path):
    """`sluice-loadtest` with no payload against the demo draws its rows from the fraud monitor's
    baseline (found through the admin API), so the dashboard flags no feature of the fraud
    endpoint; what drift.toml then shifts is the only thing that lights up (the test above)."""
    from playwright.sync_api import sync_playwright

    proc, ports, log = start_demo(tmp_path)
    admin = f"http://127.0.0.1:{ports['admin']}"
    try:
        loadtest = os.environ.get("SLUICE_LOADTEST_BIN") or str(REPO / "target" / "debug" / "sluice-loadtest")
        run = subprocess.run([loadtest, "--url", f"http://127.0.0.1:{ports['http']}", "--admin-url", admin,
                              "--endpoint", "fraud", "--rate", "50", "--duration", "12s", "--warmup", "1s",
                              "--output", "json"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, f"sluice-loadtest failed:\n{run.stdout}\n{run.stderr}"
        assert "sampled from baseline" in run.stdout and "fraud_classifier/1/baseline.parquet" in run.stdout, \
            run.stdout[:2000]
        wait_for_flush(tmp_path / "data" / "fraud")
        r = http("POST", f"{admin}/monitors/fraud/refresh", headers={"Content-Type": "application/json"}, timeout=300)
        assert r.status == 200, r.describe()
        with sync_playwright() as p:
            browser = tall_browser(p, tmp_path)
            try:
                page = browser.pages[0] if browser.pages else browser.new_page()
                page.goto(f"{admin}/dashboard")
                page.wait_for_selector("[data-testid=drift-chart][data-column=amount]", timeout=60_000)
                charted = page.eval_on_selector_all("[data-testid=drift-chart]", "els => els.map(e => e.dataset.column)")
                assert len(set(charted)) >= 8, charted
                flagged = page.eval_on_selector_all("[data-testid=drift-flag][data-endpoint=fraud]",
                                                    "els => els.map(e => e.dataset.column)")
                assert flagged == [], f"features flagged under traffic drawn from the baseline: {flagged}"
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "dashboard-quiet.png"), full_page=True)
            finally:
                browser.close()
    finally:
        stop_sluice(proc)


ATTACK_PAGE = b"""<!doctype html><html><body><p>a page from another origin</p></body></html>"""


def test_a_page_from_another_origin_cannot_use_a_tokenless_admin_api(tmp_path):
    """The attacks a web page can make on an admin API on loopback without a token, from headless
    Chromium: a page served on another loopback port sends a no-CORS POST that would start a
    rollout, a CORS PATCH of the traffic, and submits a form that would roll the endpoint back;
    and a rebound name (evil.example resolving to 127.0.0.1, as DNS rebinding makes it) reaches
    the admin port. None of them changes anything; the ones that reach the server are refused
    and counted."""
    import http.server
    import threading

    from playwright.sync_api import sync_playwright

    proc, ports, log = start_demo(tmp_path)

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(ATTACK_PAGE)))
            self.end_headers()
            self.wfile.write(ATTACK_PAGE)

        def log_message(self, *args):
            pass

    attacker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    admin = f"http://127.0.0.1:{ports['admin']}"
    forbidden = 'sluice_rejected_requests_total{protocol="admin",reason="forbidden"}'

    def refused() -> float:
        text = get(f"{admin}/metrics").body.decode()
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(forbidden))

    try:
        before = admin_endpoint(admin, "fraud")
        assert get(f"{admin}/rollouts/fraud").status == 404, "no rollout before"
        refused_before = refused()
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=chromium(), headless=True,
                args=CHROMIUM_FLAGS + ["--host-resolver-rules=MAP evil.example 127.0.0.1"])
            try:
                page = browser.pages[0] if browser.pages else browser.new_page()
                page.goto(f"http://127.0.0.1:{attacker.server_address[1]}/")
                rollout = {"candidate": "challenger", "steps": [100], "interval": "1s", "min_requests": 1}
                split = {"routes": [{"served_model_name": "champion", "traffic_percentage": 0},
                                    {"served_model_name": "challenger", "traffic_percentage": 100}]}
                outcome = page.evaluate(
                    """async ([admin, rollout, split]) => {
                      const out = {};
                      // no-CORS: the browser sends it (text/plain is allowed) but hides the answer
                      try {
                        const r = await fetch(admin + '/rollouts/fraud', {method: 'POST', mode: 'no-cors',
                          headers: {'Content-Type': 'text/plain'}, body: JSON.stringify(rollout)});
                        out.nocors = r.type;
                      } catch (e) { out.nocors = 'threw: ' + e; }
                      // CORS with JSON: needs a preflight the admin API never grants
                      try {
                        const r = await fetch(admin + '/admin/endpoints/fraud/traffic', {method: 'PATCH',
                          headers: {'Content-Type': 'application/json'}, body: JSON.stringify(split)});
                        out.cors = 'answered ' + r.status;
                      } catch (e) { out.cors = 'blocked'; }
                      return out;
                    }""", [admin, rollout, split])
                assert outcome == {"nocors": "opaque", "cors": "blocked"}, outcome
                # a form post, as a cross-site form would send it
                with page.expect_navigation():
                    page.evaluate(
                        """(url) => { const f = document.createElement('form'); f.method = 'POST';
                          f.enctype = 'text/plain'; f.action = url; const i = document.createElement('input');
                          i.name = '{"version": 1, "x'; i.value = '": 1}'; f.appendChild(i);
                          document.body.appendChild(f); f.submit(); }""",
                        f"{admin}/admin/endpoints/fraud/rollback")
                assert "cross-origin request refused" in page.content(), page.content()
                # DNS rebinding: a name of the attacker's that now resolves to 127.0.0.1
                page.goto(f"http://evil.example:{ports['admin']}/admin/endpoints")
                assert "is not a loopback name" in page.content(), page.content()
                # the operator's own browser, by a loopback name, still gets the dashboard
                page.goto(f"http://localhost:{ports['admin']}/dashboard")
                page.wait_for_selector("body", timeout=10_000)
                assert "loopback name" not in page.content()
            finally:
                browser.close()
        assert admin_endpoint(admin, "fraud") == before, "the traffic did not move"
        assert get(f"{admin}/rollouts/fraud").status == 404, "no rollout was started"
        assert refused() - refused_before >= 3, "the no-CORS post, the form and the rebound request"
    finally:
        attacker.shutdown()
        stop_sluice(proc)
