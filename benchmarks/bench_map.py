"""Scene maps: the out-of-core octree build, COPC writing vs laspy's LAZ writer, and serving the
first view. Sizes: ``FATHOM_BENCH_MAP_POINTS`` input points (default 5 M; the issue's goal is
stated for 100 M, which needs ~2.4 GB of temporary disk and minutes on a 2-core machine).

- ``map_build``: a long synthetic drive (:func:`drive_frames`: 170 k points a frame, the ego
  1 m further each frame, so consecutive frames overlap and voxels merge) pooled, chunked,
  merged per 2 cm voxel and written as level-of-detail nodes by :class:`OctreeBuilder`, in a
  child process whose peak resident memory (``ru_maxrss``) is reported with the points per
  second (the time spent in the builder's calls; generating the frames between them is not
  counted) and the bytes per map point on disk (``octree.bin`` + ``hierarchy.bin``). Goals:
  ≥ 12 M input points/s on 2 cores, peak memory ≤ 2 GB for 100 M points. One round (a
  minute-long build is not repeated).
- ``map_copc``: the built layer written as COPC (:func:`formats.copc.write_copc`: point
  records from the nodes, read from ``octree.bin``, one LAZ chunk per node, leaves of fewer
  than 8192 points in their parent's, the next records converted while lazrs compresses in
  parallel; plus the COPC hierarchy) vs laspy writing the same points as LAZ
  (``LasData.write``, lazrs backend, parallel, chunks of 50 000 points; point format 7 plus
  the same 12 extra bytes; its arrays are built before timing, so it does less: no reading,
  no conversion). Goal ≥ 1× (beat it); outputs read back equal.
- ``map_first_view``: ``fathom serve`` (its own process, loopback) and a new client doing
  what the viewer does before its first picture: ``GET /map``, the root hierarchy page, then
  the root and level-1 nodes' viewer parts as byte ranges of ``octree.bin``, six at a time.
  Goals: ≤ 100 ms and ≤ 1 MB (reported; asserted ≤ 1 MB). The browser's own time to its
  first rendered map (module and three.js load, WebGL set-up) is ``window.fathomMap.firstViewMs``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import laspy
import numpy as np
import pytest

from formats.copc import POINT, write_copc
from formats.octree import OctreeLayer, node_sections, position_width
from formats.octree_build import OctreeBuilder, OctreeOptions

N_POINTS = int(float(os.environ.get("FATHOM_BENCH_MAP_POINTS", "5e6")))
FRAME_POINTS = 170_000
_SPAWN = multiprocessing.get_context("spawn")


def drive_frames(n_points: int, seed: int = 0):
    """``(frame, xyz_q (N, 3) int64 mm, intensity, rgb)`` of a long straight drive: each frame
    a template frame (ground rings, two building facades, poles; 1.7 cm range noise) moved
    1 m further along x, the templates cycling, until ``n_points``."""
    rng = np.random.default_rng(seed)
    templates = []
    for _ in range(8):
        n_g, n_w = FRAME_POINTS * 5 // 10, FRAME_POINTS * 4 // 10
        r, a = 4.0 + rng.exponential(12.0, n_g), rng.uniform(-np.pi, np.pi, n_g)
        ground = np.column_stack([r * np.cos(a), r * np.sin(a), rng.normal(0, 0.017, n_g)])
        side = rng.choice([-12.0, 12.0], n_w)
        walls = np.column_stack([rng.uniform(-60, 60, n_w), side + rng.normal(0, 0.017, n_w), rng.uniform(0, 15, n_w)])
        n_p = FRAME_POINTS - n_g - n_w
        poles = np.column_stack([np.round(rng.uniform(-60, 60, n_p) / 20) * 20, np.full(n_p, 6.5),
                                 rng.uniform(0, 6, n_p)])
        xyz = np.vstack([ground, walls, poles])
        templates.append((np.rint(xyz * 1000).astype(np.int64), rng.integers(0, 256, len(xyz)).astype(np.float32),
                          rng.integers(0, 256, (len(xyz), 3), dtype=np.uint8)))
    frame = 0
    while frame * FRAME_POINTS < n_points:
        q, i, rgb = templates[frame % len(templates)]
        take = min(FRAME_POINTS, n_points - frame * FRAME_POINTS)
        yield frame, q[:take] + np.array([frame * 1000, 0, 0]), i[:take], rgb[:take]
        frame += 1


def _build(layer_dir: str, n_points: int, out) -> None:
    """(In a child process.) Build the layer; send (seconds, peak RSS bytes, metadata)."""
    import numba

    numba.set_num_threads(os.cpu_count() or 1)
    warm = OctreeBuilder(Path(layer_dir) / "warm", OctreeOptions())  # kernels loaded before timing
    warm.add(0, *next(drive_frames(1000))[1:])
    warm.finish()
    start = time.perf_counter()
    builder = OctreeBuilder(layer_dir, OctreeOptions())
    spent = time.perf_counter() - start
    for frame, q, i, rgb in drive_frames(n_points):  # the frames' generation is not timed
        start = time.perf_counter()
        builder.add(frame, q, i, rgb)
        spent += time.perf_counter() - start
    start = time.perf_counter()
    meta = builder.finish()
    spent += time.perf_counter() - start
    out.send((spent, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, meta))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The benchmark's layer, built once in a child process: ``(layer dir, seconds, peak RSS, metadata)``."""
    root = tmp_path_factory.mktemp("map")
    receive, send = _SPAWN.Pipe(duplex=False)
    child = _SPAWN.Process(target=_build, args=(str(root / "lidar"), N_POINTS, send))
    child.start()
    seconds, rss, meta = receive.recv()
    child.join()
    assert child.exitcode == 0
    return root / "lidar", seconds, rss, meta


def test_fathom_map_build(benchmark, built):
    layer_dir, seconds, rss, meta = built
    disk = meta["octree"]["bytes"] + meta["hierarchy"]["bytes"]
    benchmark.group = "map_build"
    benchmark.extra_info.update(
        points=N_POINTS, map_points=meta["points"], nodes=meta["nodes"], peak_rss_bytes=rss,
        bytes_per_map_point=disk / meta["points"],
        summary=lambda _: (f"{N_POINTS / 1e6:.1f} M input points in {seconds:.1f} s = {N_POINTS / seconds / 1e6:.2f} M "
                           f"points/s (goal 12), peak RSS {rss / 2**30:.2f} GiB (goal <= 2 for 100 M), "
                           f"{meta['points'] / 1e6:.2f} M map points in {meta['nodes']} nodes, "
                           f"{disk / meta['points']:.1f} bytes per map point on disk"))
    benchmark.pedantic(lambda: None, rounds=1)  # the build ran once, in the fixture's child process
    assert meta["input_points"] == N_POINTS and 0 < meta["points"] <= N_POINTS


@pytest.fixture(scope="module")
def copc_inputs(built):
    """The layer's points as the LAS arrays laspy writes (built before timing)."""
    layer = OctreeLayer.open(built[0])
    pts = layer.points()
    header = laspy.LasHeader(point_format=7, version="1.4")
    header.add_extra_dims([laspy.ExtraBytesParams(name, np.uint32) for name in ("count", "first_frame", "last_frame")])
    header.scales = np.full(3, layer.metadata["quantum_m"])
    header.offsets = np.array(layer.metadata["origin_m"])
    data = laspy.LasData(header)
    data.X, data.Y, data.Z = pts["x"], pts["y"], pts["z"]
    ones = np.ones(len(pts["x"]), np.uint8)
    data.intensity, data.return_number, data.number_of_returns = pts["intensity16"], ones, ones
    data.red, data.green, data.blue = (pts[c].astype(np.uint16) * 257 for c in "rgb")
    data.count, data.first_frame, data.last_frame = pts["count"], pts["first"], pts["last"]
    return layer, data


def test_fathom_write_copc(benchmark, built, copc_inputs, tmp_path):
    layer, _ = copc_inputs
    out = tmp_path / "map.copc.laz"
    benchmark.group = "map_copc"
    benchmark.extra_info.update(role="fathom", goal=1, items=layer.metadata["points"], unit="points")
    info = benchmark.pedantic(write_copc, args=(built[0], out), rounds=3, warmup_rounds=1)
    with laspy.CopcReader.open(out) as reader:
        assert reader.header.point_count == layer.metadata["points"]
    benchmark.extra_info["bytes_per_point"] = info["bytes"] / info["points"]


def test_peer_laspy_write_laz(benchmark, copc_inputs, tmp_path):
    layer, data = copc_inputs
    out = tmp_path / "map.laz"
    benchmark.group = "map_copc"
    benchmark.extra_info.update(role="peer", items=len(data.points), unit="points")
    benchmark.pedantic(lambda: data.write(out, laz_backend=laspy.LazBackend.LazrsParallel), rounds=3,
                       warmup_rounds=1)
    back = laspy.read(out)
    assert len(back.points) == layer.metadata["points"] and np.array_equal(np.sort(back.X), np.sort(data.X))
    assert POINT.itemsize == back.header.point_format.size


@pytest.fixture(scope="module")
def server(built, tmp_path_factory):
    """The built layer as scene ``bench``'s map, served by ``fathom serve`` (its own process) on loopback."""
    from tests.live_server import fathom_serve
    from tests.server_scene import write_scene

    root = tmp_path_factory.mktemp("scenes")
    write_scene(root / "scenes", scene_id="bench", n_frames=1)
    (root / "scenes" / "bench" / "map").mkdir()
    os.symlink(built[0], root / "scenes" / "bench" / "map" / "lidar")
    meta = built[3]
    (root / "scenes" / "bench" / "map" / "map.json").write_text(json.dumps({
        "format": "fathom-map", "version": 1, "moving": "off", "layers": {"lidar": {
            "points": meta["points"], "input_points": meta["input_points"], "removed": {},
            "metadata_xxh3_128": "bench", "copc": None}}}))
    serve = fathom_serve(root / "scenes", root / "labels.sqlite3", root / "serve.log")
    yield serve.start()
    serve.stop()


ENTRY = np.dtype([("level", "<i4"), ("x", "<i4"), ("y", "<i4"), ("z", "<i4"), ("offset", "<u8"), ("byte_size", "<i4"),
                  ("point_count", "<i4")])


def first_view(base: str) -> int:
    """What the viewer fetches before its first picture, as it does (a new client, node
    requests six at a time); the bytes received."""
    limits = httpx.Limits(max_connections=6)
    with httpx.Client(base_url=base, headers={"Authorization": "Bearer viewer-token-1"}, limits=limits) as client, \
            ThreadPoolExecutor(6) as pool:
        info = client.get("/v1/scenes/bench/map").json()["layers"]["lidar"]
        meta, files = info["metadata"], info["files"]
        size = meta["hierarchy"]["root_bytes"]
        page = client.get(files["hierarchy.bin"], headers={"Range": f"bytes=0-{size - 1}"}).content
        entries = np.frombuffer(page, ENTRY)

        def node(e) -> int:
            n = int(e["point_count"])
            part = node_sections(n, position_width(meta["side_q"], int(e["level"])))["viewer"]
            r = client.get(files["octree.bin"], headers={"Range": f"bytes={e['offset']}-{e['offset'] + part - 1}"})
            assert r.status_code == 206
            return len(r.content)

        wanted = entries[(entries["level"] <= 1) & (entries["point_count"] > 0)]
        return len(page) + sum(pool.map(node, wanted))


def test_fathom_first_view(benchmark, server):
    size = first_view(server)
    benchmark.group = "map_first_view"
    benchmark.extra_info.update(bytes=size, summary=lambda median: (
        f"root + level 1 on loopback: {median * 1e3:.1f} ms (goal <= 100), {size / 1e6:.2f} MB (goal <= 1)"))
    benchmark.pedantic(first_view, args=(server,), rounds=10, warmup_rounds=1)
    assert size <= 1_000_000
