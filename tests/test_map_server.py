"""Serving a scene's map: the map description, hierarchy pages and node byte ranges of
octree.bin that decode to exactly the layer's points, node payloads (plain, LZ4, Zstandard),
ETags and caching headers, HEAD, 416 past the end, COPC over HTTP ranges, 404s."""

from __future__ import annotations

import io
import json

import laspy
import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from formats.octree import ENTRY, OctreeLayer, node_sections, position_width
from formats.octree_build import OctreeOptions
from server.config import Settings
from server.main import create_app
from server.scene_map import MAP_DIR, MapOptions, build_scene_map
from tests.server_scene import TOKENS, write_scene

V = {"Authorization": "Bearer viewer-token-1", "Accept-Encoding": "identity"}
MAP = "/v1/scenes/demo/map"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    write_scene(root, n_frames=3)
    write_scene(root, scene_id="nomap", n_frames=1)
    build_scene_map(root / "demo", options=MapOptions(octree=OctreeOptions(leaf_max=500, step=2)))
    app = create_app(Settings(scenes_dir=root, tokens=json.dumps(TOKENS), warmup=False))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, root
    assert app.state.fathom.server_errors == 0


def _pages(client, url: str, root_bytes: int) -> np.ndarray:
    """Every node entry, walking the hierarchy pages with byte ranges, as a viewer does."""
    found, todo = [], [(0, root_bytes)]
    while todo:
        off, size = todo.pop()
        r = client.get(url, headers={**V, "Range": f"bytes={off}-{off + size - 1}"})
        assert r.status_code == 206 and r.headers["content-range"].startswith(f"bytes {off}-")
        page = np.frombuffer(r.content, ENTRY)
        found.append(page[page["point_count"] >= 0])
        todo += [(int(p["offset"]), int(p["byte_size"])) for p in page[page["point_count"] == -1]]
    return np.concatenate(found)


def test_nodes_by_byte_range_decode_to_the_layer(served):
    client, root = served
    info = client.get(MAP, headers=V).json()
    layer = info["layers"]["lidar"]
    meta = layer["metadata"]
    assert set(info["layers"]) == {"lidar"} and meta["points"] > 1000 and meta["max_level"] >= 2
    nodes = _pages(client, layer["files"]["hierarchy.bin"], meta["hierarchy"]["root_bytes"])
    assert len(nodes) == meta["nodes"]
    truth = OctreeLayer.open(root / "demo" / MAP_DIR / "lidar")
    got = {}
    for e in nodes:
        n, lv = int(e["point_count"]), int(e["level"])
        if n == 0:
            continue
        w = position_width(meta["side_q"], lv)
        size = node_sections(n, w)["viewer"]
        span = f"bytes={e['offset']}-{e['offset'] + size - 1}"
        r = client.get(layer["files"]["octree.bin"], headers={**V, "Range": span})
        assert r.status_code == 206 and len(r.content) == size <= 16 * n
        pos = np.frombuffer(r.content, f"<u{w}", 3 * n).reshape(n, 3).astype(np.int64)
        corner = np.array([e["x"], e["y"], e["z"]]) * (meta["side_q"] >> lv)
        got[(lv, int(e["x"]), int(e["y"]), int(e["z"]))] = pos + corner
    for k, e in enumerate(truth.nodes):
        if e["point_count"]:
            d = truth.node(k)
            assert np.array_equal(got[(int(e["level"]), int(e["x"]), int(e["y"]), int(e["z"]))],
                                  np.stack([d["x"], d["y"], d["z"]], 1))


def test_node_payloads_and_compression(served):
    client, root = served
    truth = OctreeLayer.open(root / "demo" / MAP_DIR / "lidar")
    e = truth.nodes[np.argmax(truth.nodes["point_count"])]
    key = f"{e['level']}-{e['x']}-{e['y']}-{e['z']}"
    url = f"{MAP}/lidar/nodes/{key}"
    plain = client.get(url, headers=V)
    n, w = int(e["point_count"]), position_width(truth.metadata["side_q"], int(e["level"]))
    assert plain.status_code == 200 and plain.headers["x-point-count"] == str(n)
    assert plain.headers["x-position-bytes"] == str(w) and len(plain.content) == node_sections(n, w)["viewer"]
    full = client.get(url + "?part=full", headers=V)
    assert len(full.content) == int(e["byte_size"]) and full.content.startswith(plain.content)
    for codec in ("lz4", "zstd"):
        r = client.get(f"{url}?compression={codec}", headers=V)
        assert r.headers["x-compression"] == codec and int(r.headers["x-uncompressed-length"]) == len(plain.content)
        assert pa.decompress(r.content, len(plain.content), codec=codec, asbytes=True) == plain.content
        assert r.headers["etag"] != plain.headers["etag"]
    again = client.get(url, headers={**V, "If-None-Match": plain.headers["etag"]})
    assert again.status_code == 304
    assert client.get(f"{MAP}/lidar/nodes/30-0-0-0", headers=V).status_code == 404
    assert client.get(f"{MAP}/lidar/nodes/0-0-0", headers=V).status_code == 422


def test_files_ranges_etags_and_caching(served):
    client, _ = served
    layer = client.get(MAP, headers=V).json()["layers"]["lidar"]
    url = layer["files"]["octree.bin"]
    digest = layer["metadata"]["octree"]["xxh3_128"]
    head = client.head(url, headers=V)
    size = int(head.headers["content-length"])
    assert head.status_code == 200 and size == layer["metadata"]["octree"]["bytes"] and not head.content
    assert head.headers["etag"] == f'"{digest}"' and head.headers["accept-ranges"] == "bytes"
    assert "immutable" in head.headers["cache-control"]  # ?v= is the file's digest
    plain_url = url.split("?")[0]
    r = client.get(plain_url, headers={**V, "Range": "bytes=0-9"})
    assert r.status_code == 206 and r.headers["cache-control"] == "private, no-cache"
    assert client.get(plain_url + "?v=0123", headers=V).headers["cache-control"] == "private, no-cache"
    past = client.get(plain_url, headers={**V, "Range": f"bytes={size}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{size}"
    assert client.get(plain_url, headers={**V, "If-None-Match": f'"{digest}"'}).status_code == 304
    assert client.get(f"{MAP}/lidar/other.bin", headers=V).status_code == 422
    assert client.get(f"{MAP}/sonar/octree.bin", headers=V).status_code == 404
    assert client.get("/v1/scenes/nomap/map", headers=V).json() == {"scene_id": "nomap", "moving": None, "layers": {}}
    assert client.get("/v1/scenes/nomap/map/lidar/hierarchy.bin", headers=V).status_code == 404
    assert client.get(MAP).status_code == 401


def test_copc_over_http_ranges(served):
    client, root = served
    url = client.get(MAP, headers=V).json()["layers"]["lidar"]["copc"]
    body = client.get(url, headers=V).content
    with laspy.CopcReader(io.BytesIO(body)) as reader:
        points = reader.query()
    truth = OctreeLayer.open(root / "demo" / MAP_DIR / "lidar").points()
    assert len(points) == len(truth["x"]) and np.array_equal(np.sort(points.X), np.sort(truth["x"]))
    header = client.get(url, headers={**V, "Range": "bytes=0-3"})
    assert header.status_code == 206 and header.content == b"LASF"
