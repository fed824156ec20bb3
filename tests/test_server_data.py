"""Serving scene data to browsers and other HTTP clients (in-process): byte ranges and HEAD
on frame payloads and images, CORS from the settings' allow-list, damaged stored files
answered 500 naming the scene, frame and file (never a server path), tokens kept out of the
access log."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from formats.scene_store import Scene
from server.access_log import ACCESS_LOGGER, redact
from server.byte_ranges import UNSATISFIABLE, byte_range, if_range_holds
from server.config import Settings
from server.main import create_app
from tests import naive
from tests.server_scene import TOKENS, car_track, frame_xyz, millimetres, write_scene

V = {"Authorization": "Bearer viewer-token-1"}
A = {"Authorization": "Bearer annotator-token-1"}
PLAIN = {**V, "Accept-Encoding": "identity"}
POINTS = "/v1/scenes/demo/frames/0/points"
IMAGE = "/v1/scenes/demo/frames/0/images/CAM_FRONT"
ORIGIN = "https://labeller.example"


def _app(scenes: Path, **settings):
    return create_app(Settings(scenes_dir=scenes, tokens=json.dumps(TOKENS), warmup=False, **settings))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    write_scene(root)
    app = _app(root, cors_origins=[ORIGIN])
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
    assert app.state.fathom.server_errors == 0


# ---------------------------------------------------------------- byte ranges and HEAD


@pytest.mark.parametrize("url", [POINTS + "?format=raw", POINTS, IMAGE])
def test_single_byte_ranges(client, url):
    full = client.get(url, headers=PLAIN)
    assert full.status_code == 200 and full.headers["accept-ranges"] == "bytes"
    body, size, etag = full.content, len(full.content), full.headers["etag"]
    assert size > 800
    for spec, first, last in [("0-99", 0, 99), ("100-", 100, size - 1), ("-50", size - 50, size - 1),
                              ("10-10", 10, 10), ("5-999999999", 5, size - 1), ("-999999", 0, size - 1),
                              (f"{size - 1}-", size - 1, size - 1)]:
        r = client.get(url, headers={**PLAIN, "Range": f"bytes={spec}"})
        assert r.status_code == 206, (spec, r.status_code)
        assert r.content == body[first:last + 1], spec
        assert r.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert int(r.headers["content-length"]) == last - first + 1 and r.headers["etag"] == etag
    for spec in (f"{size}-", f"{size + 5}-{size + 9}", "-0", "9" * 40 + "-"):
        r = client.get(url, headers={**PLAIN, "Range": f"bytes={spec}"})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}", spec
    for ignored in ("bytes=5-2", "bytes=0-1,4-5", "items=0-1", "bytes=abc", "bytes=-"):
        r = client.get(url, headers={**PLAIN, "Range": ignored})
        assert r.status_code == 200 and r.content == body, ignored


def test_byte_range_edges():
    assert byte_range("bytes=0-", 0) == byte_range("bytes=-5", 0) == UNSATISFIABLE  # an empty body has no byte
    assert byte_range(" Bytes = 2 - 4 ", 10) == (2, 4) and byte_range("bytes=0-0", 1) == (0, 0)
    assert byte_range("bytes=0009-" + "9" * 5000, 10) == (9, 9)  # no 5000-digit int conversion
    assert if_range_holds(None, '"a"') and if_range_holds(' "a" ', '"a"') and not if_range_holds('W/"a"', '"a"')


def test_ranges_are_of_the_unencoded_body_and_if_range(client):
    """A range request is never gzipped (its offsets are the payload's own); If-Range serves
    the range only for the current strong ETag; If-None-Match still gives 304 first."""
    full = client.get(POINTS, headers=PLAIN)
    body, etag = full.content, full.headers["etag"]
    gz = client.get(POINTS, headers={**V, "Accept-Encoding": "gzip"})
    assert gz.headers["content-encoding"] == "gzip" and gz.headers["etag"] != etag
    r = client.get(POINTS, headers={**V, "Accept-Encoding": "gzip", "Range": "bytes=0-63"})
    assert r.status_code == 206 and "content-encoding" not in r.headers and r.content == body[:64]
    assert r.headers["etag"] == etag
    assert client.get(POINTS, headers={**PLAIN, "Range": "bytes=0-63", "If-Range": etag}).status_code == 206
    for stale in ('"0123456789abcdef"', "W/" + etag, gz.headers["etag"], "Wed, 21 Oct 2015 07:28:00 GMT"):
        r = client.get(POINTS, headers={**PLAIN, "Range": "bytes=0-63", "If-Range": stale})
        assert r.status_code == 200 and r.content == body, stale
    r = client.get(POINTS, headers={**PLAIN, "Range": "bytes=0-63", "If-None-Match": etag})
    assert r.status_code == 304 and not r.content


@pytest.mark.parametrize("url", [POINTS + "?format=raw&frame=ego", POINTS, IMAGE])
def test_head_gives_the_get_headers_without_the_body(client, url):
    for encoding in ("identity", "gzip"):
        get = client.get(url, headers={**V, "Accept-Encoding": encoding})
        head = client.head(url, headers={**V, "Accept-Encoding": encoding, "Range": "bytes=0-9"})
        assert head.status_code == 200 and head.content == b""  # HEAD ignores Range
        assert get.headers.get("content-encoding") == head.headers.get("content-encoding")
        assert head.headers["content-length"] == get.headers["content-length"]  # of the body as sent
        if encoding == "identity":
            assert int(head.headers["content-length"]) == len(get.content)
        for name in ("etag", "content-type", "x-timestamp-ns", "x-point-count", "x-frame", "accept-ranges"):
            assert head.headers.get(name) == get.headers.get(name), name
    assert client.head(url).status_code == 401
    assert client.head(url, headers={**V, "If-None-Match": get.headers["etag"]}).status_code == 304


# ---------------------------------------------------------------- CORS


def test_cors_preflight_and_responses_follow_the_allow_list(client, tmp_path):
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization, range"}
    r = client.options(POINTS, headers={"Origin": ORIGIN, **preflight})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "range", "if-match", "if-none-match"} <= allowed
    assert "PUT" in r.headers["access-control-allow-methods"] and "access-control-allow-credentials" not in r.headers
    r = client.options(POINTS, headers={"Origin": "https://evil.example", **preflight})
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    r = client.get(POINTS, headers={**V, "Origin": ORIGIN})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    assert {"etag", "content-range", "x-point-count", "x-timestamp-ns"} <= exposed
    r = client.get(POINTS, headers={**V, "Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    # the default: no allow-list, no CORS headers at all
    write_scene(tmp_path / "scenes")
    with TestClient(_app(tmp_path / "scenes")) as plain:
        assert "access-control-allow-origin" not in plain.get(POINTS, headers={**V, "Origin": ORIGIN}).headers
        r = plain.options(POINTS, headers={"Origin": ORIGIN, **preflight})
        assert r.status_code == 405 and "access-control-allow-origin" not in r.headers


def test_cors_origins_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("FATHOM_CORS_ORIGINS", json.dumps([ORIGIN, "http://localhost:5173"]))
    assert Settings(scenes_dir=tmp_path).cors_origins == [ORIGIN, "http://localhost:5173"]
    assert Settings(scenes_dir=tmp_path, cors_origins=["*"]).cors_origins == ["*"]
    for bad in ("https://labeller.example/", "labeller.example", "https://a.example/app", "ftp://a.example"):
        with pytest.raises(ValidationError, match="CORS origin"):
            Settings(scenes_dir=tmp_path, cors_origins=[bad])


# ---------------------------------------------------------------- one annotator's huge boxes


def test_huge_label_boxes_among_small_ones_count_exactly(client):
    """The issue's labels: 200 boxes hundreds of metres wide (within any schema limit) and 201
    cars; the cuboids route counts each box's points as the NumPy reference does."""
    rng = np.random.default_rng(17)
    sizes = np.vstack([rng.uniform(500, 999, (200, 3)), np.tile([4.2, 1.9, 1.5], (201, 1))])
    sizes[:200, 2] = rng.uniform(0.5, 2.0, 200)
    centers = np.column_stack([rng.uniform(-40, 40, (401, 2)), rng.uniform(-1, 2, 401)])
    yaws = rng.uniform(-np.pi, np.pi, 401)
    rotations = np.column_stack([np.cos(yaws / 2), np.zeros((401, 2)), np.sin(yaws / 2)])
    tracks = [dict(car_track(), id=f"t{k}", keyframes=[dict(kf, center=list(c), size=list(s), rotation=list(q))
                                                       for kf in car_track()["keyframes"]])
              for k, (c, s, q) in enumerate(zip(centers, sizes, rotations))]
    r = client.put("/v1/scenes/demo/labels", json={"tracks": tracks}, headers={**A, "If-Match": "*"})
    assert r.status_code == 200, r.text
    boxes = client.get("/v1/scenes/demo/frames/0/cuboids", headers=V).json()["boxes"]
    assert [b["track_id"] for b in boxes] == [t["id"] for t in tracks]
    xyz = millimetres(frame_xyz(0))[1]
    _, counts = naive.points_in_boxes(xyz.astype(np.float32), centers, sizes, rotations)
    assert [b["points_in_box"] for b in boxes] == counts.tolist()
    assert np.count_nonzero(counts[:200]) > 20 and counts.sum() > 1000


# ---------------------------------------------------------------- damaged stored files


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _bad_json(path: Path) -> None:  # same size: the JSON parser finds it
    path.write_bytes(b"{" + b" " * (path.stat().st_size - 1))


def _reversed_rows(path: Path) -> None:  # same size, rows no longer increasing
    path.write_bytes(b"".join(reversed([path.read_bytes()[i:i + 4] for i in range(0, path.stat().st_size, 4)])))


def _grown(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\0\0\0\0")


def _flipped_byte(path: Path) -> None:  # same size: only the digest sees it
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, file, kind, urls", [
    (_truncate, lambda e: e.points, "points file",
     [POINTS, POINTS + "?format=raw", POINTS + "?fields=x,y,intensity", POINTS + "?lod=1",
      "/v1/scenes/demo/frames/0/cuboids", "/v1/scenes/demo/frames/0/cuboids?source=prepared",
      "/v1/scenes/demo/frames/0/projection/CAM_FRONT?lod=0"]),
    (_bad_json, lambda e: e.boxes, "boxes file", ["/v1/scenes/demo/frames/0/cuboids?source=prepared"]),
    (_grown, lambda e: e.lods[0], "level-of-detail 1 rows file",
     [POINTS + "?lod=1", "/v1/scenes/demo/frames/0/projection/CAM_FRONT?lod=1"]),
    (_reversed_rows, lambda e: e.lods[0], "level-of-detail 1 rows file", [POINTS + "?lod=1&format=raw"]),
    (_truncate, lambda e: e.images["CAM_FRONT"], "CAM_FRONT image", [IMAGE]),
    (_flipped_byte, lambda e: e.images["CAM_FRONT"], "CAM_FRONT image", [IMAGE]),
])
def test_damaged_files_are_a_500_naming_scene_frame_and_file(tmp_path, caplog, damage, file, kind, urls):
    scene_dir = write_scene(tmp_path / "scenes")
    path = scene_dir / file(Scene.open(scene_dir).frame(0)).file
    damage(path)
    app = _app(tmp_path / "scenes")
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.put("/v1/scenes/demo/labels", json={"tracks": [car_track()]}, headers={**A, "If-Match": "*"})
        assert r.status_code == 200
        for url in urls:
            with caplog.at_level(logging.ERROR, logger="fathom.server"):
                caplog.clear()
                r = c.get(url, headers=V)
            assert r.status_code == 500, (url, r.status_code, r.text)
            detail = r.json()["detail"]
            assert "'demo'" in detail and "frame 0" in detail and kind in detail, (url, detail)
            assert "/" not in detail and str(tmp_path) not in r.text, (url, detail)
            assert str(path) in caplog.text  # the log has the full detail
        assert c.get("/v1/scenes/demo/frames/1/points", headers=V).status_code == 200  # the other frames serve
    assert app.state.fathom.server_errors == 0


# ---------------------------------------------------------------- tokens out of the log


def test_access_log_redacts_token_query_values(client):
    """The app (made by the ``client`` fixture) filters uvicorn's access logger."""
    assert redact('127.0.0.1:5 - "GET /viewer/demo?token=s3cr3t-X_y HTTP/1.1" 200') == \
        '127.0.0.1:5 - "GET /viewer/demo?token=*** HTTP/1.1" 200'
    assert redact("/a?x=1&TOKEN=abc&y=2#f") == "/a?x=1&TOKEN=***&y=2#f"
    assert redact("/a?access_token=abc&id_token=def") == "/a?access_token=***&id_token=***"
    assert redact("/a?tokens=1&x=token=2") == "/a?tokens=1&x=token=2"  # other names and values stay
    record = logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/viewer/demo?token=SECRET", "1.1", 200), None)
    assert logging.getLogger(ACCESS_LOGGER).filter(record) is not False
    assert "SECRET" not in record.getMessage() and "token=***" in record.getMessage()
