"""The viewer page in a real browser: Debian's headless Chromium driven by Playwright
(never a downloaded browser), against a real ``fathom serve`` process with its access log."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live_server import fathom_serve
from tests.server_scene import T0, car_track, write_scene

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian chromium not installed")


@contextmanager
def _browser(tmp_path: Path, url: str) -> Iterator[tuple[Any, list[str], list[str]]]:
    """A page of a fresh headless Chromium: ``(page, errors it logged or raised, URLs it asked
    for outside the server at url)``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = ctx.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            outside: list[str] = []
            page.on("request", lambda rq: outside.append(rq.url)
                    if not rq.url.startswith((url, "blob:" + url, "data:")) else None)
            yield page, problems, outside
        finally:
            ctx.close()


def _wait(page, key: str, view: str = "fathomViewer") -> dict:
    """Poll the page's ``window.fathomViewer`` (or another ``view``'s state) until ``key`` (or
    an error) is set (the page's CSP forbids the string evaluation ``wait_for_function`` uses)."""
    deadline = time.monotonic() + 30
    state = None
    while time.monotonic() < deadline:
        state = page.evaluate(f"() => window.{view} || {{error: null}}")
        if state.get(key) or state["error"]:
            return state
        time.sleep(0.1)
    raise AssertionError(f"viewer never reached {key}: {state}")


def test_viewer_draws_points_boxes_and_camera(tmp_path):
    write_scene(tmp_path / "scenes")
    server = fathom_serve(tmp_path / "scenes", tmp_path / "labels.sqlite3", tmp_path / "serve.log")
    url = server.start()
    try:
        r = httpx.put(url + "/v1/scenes/demo/labels", json={"tracks": [car_track()]},
                      headers={"Authorization": "Bearer annotator-token-1", "If-Match": "*"})
        assert r.status_code == 200
        # a labelled bearing (no hydrophone array: its ray starts at the ego origin), 30° to port
        contact = {"id": "c1", "category": "merchant", "band_hz": [100.0, 500.0],
                   "keyframes": [{"timestamp_ns": T0 - 10**9, "azimuth_rad": 0.5236},
                                 {"timestamp_ns": T0 + 10**9, "azimuth_rad": 0.5236}]}
        r = httpx.put(url + "/v1/scenes/demo/bearing-tracks", json={"expected_revision": 0, "tracks": [contact]},
                      headers={"Authorization": "Bearer annotator-token-1"})
        assert r.status_code == 200
        with _browser(tmp_path, url) as (page, problems, outside):
            page.goto(f"{url}/viewer/demo?token=viewer-token-1")
            state = _wait(page, "ready")
            assert state["error"] is None, state
            assert state["points"] > 1000 and state["boxes"] == 1 and state["projected"] > 0
            assert state["bearings"] == 1, state
            # the canvas really shows them: count lit pixels of the bird's-eye view (the bearing ray
            # magenta: no point has green below 120)
            lit = page.evaluate("""() => {
                const c = document.getElementById('bev');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let n = 0, box = 0, ray = 0;
                for (let i = 0; i < d.length; i += 4) {
                    if (d[i] + d[i + 1] + d[i + 2] > 0) n++;
                    if (d[i] === 255 && d[i + 1] === 204 && d[i + 2] === 0) box++;
                    if (d[i] > 200 && d[i + 1] < 120 && d[i + 2] > 200) ray++;
                }
                return [n, box, ray];
            }""")
            assert lit[0] > 500 and lit[1] > 20 and lit[2] > 200, lit
            assert page.evaluate("document.getElementById('camera-image').naturalWidth") == 64
            # a scene without a map: no map panel, no error
            state = _wait(page, "ready", "fathomMap")
            assert state["available"] is False and state["error"] is None, state
            assert page.evaluate("document.getElementById('map-panel').hidden")
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
        log = server.stop()
    assert "/viewer/demo?token=***" in log and "viewer-token-1" not in log and "wrong-token-xyz" not in log


def _lit(page, canvas: str) -> int:
    """Pixels of a canvas that are not black (a WebGL canvas is copied into a 2-D one first)."""
    return page.evaluate("""(id) => {
        const src = document.getElementById(id), c = document.createElement('canvas');
        c.width = src.width; c.height = src.height;
        const ctx = c.getContext('2d');
        ctx.drawImage(src, 0, 0);
        const d = ctx.getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 0) n++;
        return n;
    }""", canvas)


def _settled(page) -> dict:
    """The map view's state once its first view is drawn and no node is loading."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = _wait(page, "ready", "fathomMap")
        if state["error"] or state["idle"]:
            time.sleep(0.3)  # one more frame: loads finished in the last one are drawn
            return page.evaluate("() => window.fathomMap")
        time.sleep(0.1)
    raise AssertionError(f"map view never settled: {state}")


def test_viewer_streams_the_map_within_its_point_budget(tmp_path):
    from formats.octree import OctreeLayer
    from formats.octree_build import OctreeOptions
    from server.scene_map import MapOptions, build_scene_map

    write_scene(tmp_path / "scenes")
    # a 32-cell grid per node: a small root, several levels below it for the budget to cut
    build_scene_map(tmp_path / "scenes" / "demo", options=MapOptions(octree=OctreeOptions(leaf_max=300, grid_bits=5)))
    nodes = OctreeLayer.open(tmp_path / "scenes" / "demo" / "map" / "lidar").nodes
    assert nodes[nodes["level"] == 0]["point_count"].sum() < 2000 < nodes["point_count"].sum()
    server = fathom_serve(tmp_path / "scenes", tmp_path / "labels.sqlite3", tmp_path / "serve.log")
    url = server.start()
    try:
        with _browser(tmp_path, url) as (page, problems, outside):
            page.goto(f"{url}/viewer/demo?token=viewer-token-1&map_budget=2000")
            state = _settled(page)
            assert state["error"] is None and state["available"], state
            assert 0 < state["points"] <= state["budget"] == 2000, state
            assert state["firstViewMs"] is not None and state["firstViewBytes"] < 1_000_000
            assert _lit(page, "map3d") > 300
            # zoom in: finer nodes replace coarse ones, still within the budget
            box = page.locator("#map3d").bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            for _ in range(6):
                page.mouse.wheel(0, -400)
                time.sleep(0.05)
            zoomed = _settled(page)
            assert zoomed["error"] is None and 0 < zoomed["points"] <= 2000, zoomed
            page.click("#map-top")
            top = _settled(page)
            assert top["error"] is None and 0 < top["points"] <= 2000 and _lit(page, "map3d") > 300, top
            # the per-frame views still work beside it
            assert _wait(page, "ready")["points"] > 1000
            assert not problems, problems
            assert not outside, outside
    finally:
        server.stop()
