"""The viewer page in a real browser: Debian's headless Chromium driven by Playwright
(never a downloaded browser), against a real ``fathom serve`` process with its access log."""

from __future__ import annotations

import shutil
import time

import httpx
import pytest

from tests.server_scene import car_track, write_scene
from tests.test_server_data_process import Serve

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian chromium not installed")


def _wait(page, key: str) -> dict:
    """Poll the page's ``window.fathomViewer`` until ``key`` (or an error) is set (the page's
    CSP forbids the string evaluation ``wait_for_function`` uses)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = page.evaluate("() => window.fathomViewer")
        if state[key] or state["error"]:
            return state
        time.sleep(0.1)
    raise AssertionError(f"viewer never reached {key}: {state}")


def test_viewer_draws_points_boxes_and_camera(tmp_path):
    from playwright.sync_api import sync_playwright

    write_scene(tmp_path / "scenes")
    server = Serve(tmp_path / "scenes", tmp_path / "labels.sqlite3", tmp_path / "serve.log")
    url = server.start()
    try:
        r = httpx.put(url + "/v1/scenes/demo/labels", json={"tracks": [car_track()]},
                      headers={"Authorization": "Bearer annotator-token-1", "If-Match": "*"})
        assert r.status_code == 200
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=FLAGS)
            try:
                page = ctx.new_page()
                problems: list[str] = []
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: problems.append(str(e)))
                outside: list[str] = []
                page.on("request", lambda rq: outside.append(rq.url) if not rq.url.startswith((url, "blob:" + url, "data:")) else None)
                page.goto(f"{url}/viewer/demo?token=viewer-token-1")
                state = _wait(page, "ready")
                assert state["error"] is None, state
                assert state["points"] > 1000 and state["boxes"] == 1 and state["projected"] > 0
                # the canvas really shows them: count lit pixels of the bird's-eye view
                lit = page.evaluate("""() => {
                    const c = document.getElementById('bev');
                    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    let n = 0, box = 0;
                    for (let i = 0; i < d.length; i += 4) {
                        if (d[i] + d[i + 1] + d[i + 2] > 0) n++;
                        if (d[i] === 255 && d[i + 1] === 204 && d[i + 2] === 0) box++;
                    }
                    return [n, box];
                }""")
                assert lit[0] > 500 and lit[1] > 20, lit
                assert page.evaluate("document.getElementById('camera-image').naturalWidth") == 64
                assert not problems, problems
                assert not outside, outside
                # the link's token left the address bar at once; the tab keeps it for reloads
                assert page.url == f"{url}/viewer/demo", page.url
                assert page.evaluate("sessionStorage.getItem('fathom-token')") == "viewer-token-1"
                page.reload()
                state = _wait(page, "ready")
                assert state["error"] is None and state["points"] > 1000 and "token" not in page.url, state
                # a wrong token shows an error, not a broken page
                page.goto(f"{url}/viewer/demo?token=wrong-token-xyz")
                assert "401" in _wait(page, "error")["error"]
                assert "token" not in page.url
            finally:
                ctx.close()
    finally:
        log = server.stop()
    assert "/viewer/demo?token=***" in log and "viewer-token-1" not in log and "wrong-token-xyz" not in log
