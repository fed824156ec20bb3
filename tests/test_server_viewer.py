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


def _pixels(page, rgb: tuple[int, int, int]) -> int:
    """Pixels of the bird's-eye view of exactly this colour."""
    return page.evaluate("""(rgb) => {
        const c = document.getElementById('bev');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] === rgb[0] && d[i + 1] === rgb[1] && d[i + 2] === rgb[2]) n++;
        return n;
    }""", list(rgb))


def _message(page, text: str) -> dict:
    """The viewer's state once its segmentation message holds ``text``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = page.evaluate("() => window.fathomViewer")
        if text in (state["segMessage"] or ""):
            return state
        time.sleep(0.1)
    raise AssertionError(f"no message with {text!r}: {state}")


# prism vertices clicked on the 800 px bird's-eye view (60 m from the ego to the edge), the last double-clicked
PRISM_PX = [(370, 290), (440, 300), (430, 370), (365, 360)]


def _draw_prism(page) -> dict:
    page.click("#prism-draw")
    page.fill("#prism-zmin", "-1.6")
    page.fill("#prism-zmax", "0.2")
    for u, v in PRISM_PX[:-1]:
        page.click("#bev", position={"x": u, "y": v})
    page.dblclick("#bev", position={"x": PRISM_PX[-1][0], "y": PRISM_PX[-1][1]})
    return _wait(page, "selected")


def test_viewer_colours_by_class_and_tries_a_prism(tmp_path):
    import numpy as np

    write_scene(tmp_path / "scenes")
    server = fathom_serve(tmp_path / "scenes", tmp_path / "labels.sqlite3", tmp_path / "serve.log")
    url = server.start()
    seg, viewer = url + "/v1/scenes/demo/segmentation", {"Authorization": "Bearer viewer-token-1"}
    annotator = {"Authorization": "Bearer annotator-token-1", "If-Match": "*"}
    try:
        classes = [{"id": 0, "name": "unlabelled", "color": [0, 0, 0]},
                   {"id": 1, "name": "block", "color": [255, 0, 0]}, {"id": 2, "name": "tried", "color": [0, 90, 0]}]
        assert httpx.put(seg + "/classes", json={"classes": classes}, headers=annotator).status_code == 200
        block = {"kind": "prism", "polygon": [[8.9, -1], [11.1, -1], [11.1, 1], [8.9, 1]], "z_min": -0.1, "z_max": 1.5}
        r = httpx.post(seg + "/edits", json={"edits": [{"frame": 0, "class_id": 1, "selection": block}]},
                       headers=annotator)
        assert r.status_code == 200 and r.json()["written"][0]["points"] >= 200
        with _browser(tmp_path, url) as (page, problems, outside):
            page.goto(f"{url}/viewer/demo?token=viewer-token-1")
            assert _wait(page, "ready")["error"] is None and _wait(page, "classes")["classes"] == 3
            assert _pixels(page, (255, 0, 0)) == 0  # the height colours never are pure red
            page.check("#seg-colour")
            state = _wait(page, "labelled")
            assert state["labelled"] == r.json()["written"][0]["points"], state  # every point of the frame drawn
            assert _pixels(page, (255, 0, 0)) > 30
            # the prism: the clicked pixels in ego metres, the count the server gives for them
            state = _draw_prism(page)
            s = 800 / 120
            want = [[(400 - v) / s, (400 - u) / s] for u, v in PRISM_PX]
            assert np.allclose(state["prism"]["polygon"], want), state["prism"]
            body = {"selection": {"kind": "prism", "polygon": state["prism"]["polygon"], "z_min": -1.6,
                                  "z_max": 0.2}, "frame": "ego"}
            r = httpx.post(seg + "/frames/0/select", json=body, headers=viewer)
            chosen = r.json()
            assert state["selected"] == chosen["count"] > 20 and state["prism"]["z_min"] == -1.6, state
            assert f"{chosen['count']} of" in page.text_content("#seg-status")
            assert _pixels(page, (255, 255, 255)) > 20  # highlighted
            # a viewer may not write: the server's 403 is shown, nothing changes
            page.select_option("#apply-class", "2")
            page.click("#prism-apply")
            assert "403" in _message(page, "annotator")["segMessage"]
            rev = httpx.get(seg, headers=viewer).json()["revision"]
            assert all("403" in p for p in problems) and not outside, (problems, outside)
            # an annotator's apply writes exactly the selected rows
            page.goto(f"{url}/viewer/demo?token=annotator-token-1")
            _wait(page, "ready")
            state = _draw_prism(page)
            assert state["selected"] == chosen["count"]
            page.select_option("#apply-class", "2")
            page.click("#prism-apply")
            assert _wait(page, "applied")["applied"] == chosen["count"]
            assert httpx.get(seg, headers=viewer).json()["revision"] == rev + 1
            labels = np.frombuffer(httpx.get(seg + "/frames/0", headers=viewer).content[:2 * chosen["points"]], "<u2")
            assert np.flatnonzero(labels == 2).tolist() == chosen["indices"]
            assert all("403" in p for p in problems), problems
    finally:
        server.stop()
