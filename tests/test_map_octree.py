"""The map octree: Morton codes, voxel merging and level-of-detail selection against plain NumPy
references; the out-of-core builder (chunked or not, interrupted and resumed) against them;
damaged layers."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from engine.map_octree import RECORD_WORDS, Workspace, merge_voxels, morton_codes, node_xyz, select_lod
from formats.errors import FormatError
from formats.octree import ENTRY, HIERARCHY, METADATA, OCTREE, OctreeLayer, encode_entries
from formats.octree_build import OctreeBuilder, OctreeOptions
from formats.octree_chunks import ALIGN_BITS, RAW, CellCounter, Cube, cell_coords, world_codes
from formats.octree_top import ROOT, Top, upper_tree

VOXEL = 20


def frames(n_frames: int = 6, n: int = 20_000, seed: int = 1) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Frames of mm positions on a ground plane and two walls, revisited frame after frame
    (so voxels merge), with integer intensities and colours."""
    rng = np.random.default_rng(seed)
    out = []
    for f in range(n_frames):
        ground = np.column_stack([rng.uniform(-30e3, 40e3, n), rng.uniform(-8e3, 8e3, n), rng.normal(0, 5, n)])
        wall = np.column_stack([rng.uniform(-30e3, 40e3, n // 2), np.full(n // 2, 9e3), rng.uniform(0, 6e3, n // 2)])
        pole = np.column_stack([np.full(n // 4, 1234.0), np.full(n // 4, -5e3), rng.uniform(0, 4e3, n // 4)])
        q = np.floor(np.vstack([ground, wall, pole]) + f * 3).astype(np.int64)
        out.append((q, rng.integers(0, 256, len(q)).astype(np.float32), rng.integers(0, 256, (len(q), 3), np.uint8)))
    return out


def build(path, options: OctreeOptions, data) -> OctreeLayer:
    builder = OctreeBuilder(path, options)
    for f, (q, i, rgb) in enumerate(data):
        builder.add(f, q, i, rgb)
    builder.finish()
    return OctreeLayer.open(path)


def reference_map(data, origin: np.ndarray) -> dict[str, np.ndarray]:
    """Every voxel's merged point in plain NumPy (sorted by voxel): floor of the mean position,
    rounded mean colour and intensity, count and frame range."""
    q = np.vstack([d[0] for d in data]) - origin
    inten = np.concatenate([d[1] for d in data]).astype(np.float64)
    rgb = np.vstack([d[2] for d in data]).astype(np.int64)
    frame = np.concatenate([np.full(len(d[0]), f) for f, d in enumerate(data)])
    vox, inv = np.unique(q // VOXEL, axis=0, return_inverse=True)
    count = np.bincount(inv)
    out = {"count": count, "first": np.full(len(vox), 1 << 30), "last": np.zeros(len(vox), np.int64)}
    for a, name in enumerate("xyz"):  # float64 sums of these integers are exact (below 2**53)
        out[name] = np.bincount(inv, q[:, a].astype(np.float64)).round().astype(np.int64) // count
    for c, name in enumerate("rgb"):
        out[name] = (2 * np.bincount(inv, rgb[:, c]).round().astype(np.int64) + count) // (2 * count)
    out["intensity16"] = np.rint(np.bincount(inv, inten) / count).astype(np.int64)
    np.minimum.at(out["first"], inv, frame)
    np.maximum.at(out["last"], inv, frame)
    return out


def by_voxel(points: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    order = np.lexsort((points["z"] // VOXEL, points["y"] // VOXEL, points["x"] // VOXEL))
    return {k: np.asarray(v)[order].astype(np.int64) for k, v in points.items()}


# ---------------------------------------------------------------- kernels


def test_morton_codes_interleave_bits():
    rng = np.random.default_rng(0)
    v = rng.integers(0, 1 << 21, (1000, 3))
    codes = morton_codes(v[:, 0] * 7, v[:, 1] * 7 + 6, v[:, 2] * 7 + 3, 7)
    naive = np.zeros(1000, np.int64)
    for bit in range(21):
        for a in range(3):
            naive |= ((v[:, a] >> bit) & 1) << (3 * bit + a)
    assert np.array_equal(codes, naive)
    assert np.array_equal(node_xyz(codes), v)


@pytest.mark.parametrize("cell_bits,squeeze,n", [(0, 1, 3000), (3, 1, 3000), (8, 1, 3000), (8, 16, 3000),
                                                 (8, 16, 20_000), (8, 128, 30_000)])
def test_merge_voxels_against_numpy(cell_bits, squeeze, n):
    """``squeeze``: positions divided by it (16: a few cells of thousands of points each; with
    ``n`` 20 000 some of more than 16 384, split in octants; with 128, every point in one cell
    of more than 131 072, split twice)."""
    shift = 2560 if squeeze == 128 else 0  # the points, around 0, all inside the cell [0, 5120)
    data = [(q // squeeze + shift, i, rgb) for q, i, rgb in frames(3, n)]
    q = np.vstack([d[0] for d in data])
    origin = q.min(axis=0) // (VOXEL << cell_bits) * (VOXEL << cell_bits)
    ref = reference_map(data, origin)
    counter = CellCounter(VOXEL, cell_bits)
    records = np.empty(len(q), RAW)
    runs, cells, at = [], [], 0
    for f, (fq, fi, frgb) in enumerate(data):  # each frame's records grouped by cell, as the pool holds them
        r = counter.pack(f, counter.scan(fq, fi)[1], fq, fi, frgb, records[at:at + len(fq)])
        runs.append(np.column_stack([np.cumsum(r[:, 1]) - r[:, 1] + at, r[:, 1:]]))
        cells.append(cell_coords(r[:, 0]))
        at += len(fq)
    runs = np.concatenate(runs)  # first record, records, frame
    cell_q = VOXEL << cell_bits
    corner = np.concatenate(cells) * cell_q - origin  # each run's cell's min corner
    code = morton_codes(corner[:, 0], corner[:, 1], corner[:, 2], cell_q)  # at the cells' level
    order = np.argsort(code, kind="stable")  # cell after cell, in record order within each
    runs, code, corner = runs[order], code[order], corner[order]
    firsts = np.flatnonzero(np.r_[True, np.diff(code) != 0])
    biggest = np.add.reduceat(runs[:, 1], firsts).max()
    assert len(firsts) < len(runs) and (squeeze == 1 or biggest >= {3000: 4096, 20_000: 16385, 30_000: 131_073}[n])
    merged_codes, merged = merge_voxels(records.view(np.int32).reshape(len(q), RECORD_WORDS), runs,
                                        np.append(firsts, len(runs)), code[firsts], corner[firsts], cell_bits)
    assert np.all(np.diff(merged_codes) > 0) and len(merged_codes) == len(ref["count"])
    got = {k: merged[k] for k in "xyz"}
    assert np.array_equal(merged_codes, morton_codes(got["x"], got["y"], got["z"], VOXEL))
    merged["intensity16"] = np.rint(merged.pop("intensity"))
    got = by_voxel(merged)
    for k in ("x", "y", "z", "r", "g", "b", "count", "first", "last"):
        assert np.array_equal(got[k], ref[k]), k
    assert np.abs(got["intensity16"] - ref["intensity16"]).max() <= 1  # float32 mean vs float64
    work, half = Workspace(), len(firsts) // 2  # arrays reused: the larger merge's values still in them
    args = (records.view(np.int32).reshape(len(q), RECORD_WORDS), runs)
    merge_voxels(*args, np.append(firsts, len(runs)), code[firsts], corner[firsts], cell_bits, work)
    alone = merge_voxels(*args, np.append(firsts[:half], firsts[half]), code[firsts[:half]], corner[firsts[:half]],
                         cell_bits)
    reused = merge_voxels(*args, np.append(firsts[:half], firsts[half]), code[firsts[:half]], corner[firsts[:half]],
                          cell_bits, work)
    assert np.array_equal(alone[0], reused[0]) and all(np.array_equal(alone[1][k], reused[1][k]) for k in alone[1])


# ---------------------------------------------------------------- the built layer


def check_layer(layer: OctreeLayer, data) -> None:
    """Exactly the reference map's points, each node's inside its cube, every inner node
    holding one point per occupied cell of its grid, leaves within leaf_max."""
    meta = layer.metadata
    origin = np.array(meta["origin_q"], np.int64)
    ref = reference_map(data, origin)
    nodes = layer.nodes
    keys = {(int(e["level"]), int(e["x"]), int(e["y"]), int(e["z"])) for e in nodes}
    assert len(keys) == len(nodes) == meta["nodes"]
    data = np.fromfile(layer.dir / OCTREE, np.uint8)  # the nodes, apart, at multiples of 8; zeros between
    used = np.zeros(len(data) + 1, np.int64)
    np.add.at(used, nodes["offset"].astype(np.int64), 1)
    np.add.at(used, (nodes["offset"] + nodes["byte_size"]).astype(np.int64), -1)
    inside = np.cumsum(used)[:-1]
    assert inside.max() <= 1 and np.all(nodes["offset"] % 8 == 0) and not data[inside == 0].any()
    assert sum(int(e["point_count"]) for e in nodes) == meta["points"] == len(ref["count"])
    decoded = [layer.node(r) for r in range(len(nodes))]
    got = by_voxel({k: np.concatenate([d[k] for d in decoded]) for k in decoded[0]})
    for k in ("x", "y", "z", "r", "g", "b", "count", "first", "last", "intensity16"):
        assert np.array_equal(got[k], ref[k]), k
    assert np.array_equal(got["intensity8"], ref["intensity16"] >> meta["intensity"]["shift"])
    g = meta["grid_bits"]
    parents = {(k[0] - 1, k[1] >> 1, k[2] >> 1, k[3] >> 1) for k in keys if k[0]}
    allp = {a: np.concatenate([d[a] for d in decoded]) for a in "xyz"}
    level = np.repeat(nodes["level"], nodes["point_count"])
    for e, d in zip(nodes, decoded):
        lv = int(e["level"])
        side = meta["side_q"] >> lv
        assert all(np.all(d[a] // side == e[a]) for a in "xyz"), (lv, e)
        if (lv, int(e["x"]), int(e["y"]), int(e["z"])) not in parents:  # a leaf
            assert e["point_count"] <= meta["leaf_max"] or lv >= meta["depth"] - g
            continue
        # an inner node: it and its ancestors hold one point in each occupied level-(l + g)
        # cell of its cube (the view down to level l has the grid's spacing)
        inside = np.all([(allp[a] // side) == e[a] for a in "xyz"], axis=0)
        fine = meta["side_q"] >> (lv + g)
        occupied = np.unique(np.stack([allp[a][inside] // fine for a in "xyz"], 1), axis=0)
        view = np.stack([allp[a][inside & (level <= lv)] // fine for a in "xyz"], 1)
        assert len(np.unique(view, axis=0)) == len(view) == len(occupied), (lv, len(view), len(occupied))


def test_top_built_job_by_job_is_one_selection_over_its_tree():
    """Chunk roots at levels 2 and 3 given in any order: every node above them and every chunk
    root holds the bytes one bottom-up selection over the whole tree gives."""
    rng = np.random.default_rng(5)
    depth, grid_bits = 8, 2
    whole = [(2, int(p)) for p in rng.choice(64, 6, replace=False)]
    split = [(3, int(p)) for p in rng.choice(512, 60, replace=False) if (2, int(p) >> 3) not in whole]
    chunks = sorted(whole + split, key=lambda c: c[1] << 3 * (3 - c[0]))
    roots = []
    for level, prefix in chunks:
        span = 8 ** (depth - level)
        codes = np.sort(rng.choice(span, int(rng.integers(1, 300)), replace=False)) + prefix * span
        root = np.zeros(len(codes), ROOT)
        root["codes"] = codes
        root["x"], root["y"], root["z"] = node_xyz(codes).T
        for c in ("intensity16", "r", "g", "b", "count", "first", "last"):
            root[c] = rng.integers(0, 200, len(codes))
        roots.append(root)
    with ThreadPoolExecutor(2) as threads:
        top = Top([(lv, p, len(r)) for (lv, p), r in zip(chunks, roots)], depth, 1 << depth, grid_bits, 0, threads)
        for k in rng.permutation(len(chunks)):
            top.add_chunk(int(k), roots[k])
            top.poll()
        parts, entries = top.finish()
    data = np.concatenate(parts)
    tree = upper_tree(chunks)  # the reference: one selection over the tree, its leaves owning their roots' points
    joined = np.concatenate(roots)
    sizes = np.zeros(len(tree["levels"]), np.int64)
    sizes[tree["leaf"]] = [len(r) for r in roots]
    for node in range(len(sizes) - 1, 0, -1):  # pre-order: descendants come after their node
        sizes[tree["parents"][node]] += sizes[node]
    starts = np.concatenate([[0], np.cumsum(np.where(tree["leaf"], sizes, 0))[:-1]])  # a subtree's leaves follow it
    nodes = dict(tree, starts=starts, ends=starts + sizes)
    owner, _ = select_lod(joined["codes"], nodes, depth, grid_bits)
    rows = np.arange(len(sizes))
    ref_data, ref = encode_entries({c: joined[c] for c in joined.dtype.names}, owner, rows, tree["levels"],
                                   tree["prefixes"], 1 << depth, 0)
    assert len(entries) == len(ref) == len(sizes) and int(entries["point_count"].sum()) == len(joined)
    def node(data: np.ndarray, e: np.void) -> tuple[tuple, bytes]:
        start = int(e["offset"])
        return tuple(e[["level", "x", "y", "z"]].tolist()), data[start:start + int(e["byte_size"])].tobytes()

    assert dict(node(data, e) for e in entries) == dict(node(ref_data, e) for e in ref)


@pytest.mark.parametrize("chunk_max,memory_points,batch_points", [
    (10**9, 10**9, 1 << 22), (20_000, 10**9, 1 << 22), (20_000, 10**9, 50_000), (20_000, 50_000, 1 << 22)])
def test_octree_holds_exactly_the_merged_map(tmp_path, chunk_max, memory_points, batch_points):
    """One chunk; chunks of one batch placed from the pool in memory; batches of the pool in
    memory; batches read from the segments (a pool beyond ``memory_points``)."""
    data = frames()
    layer = build(tmp_path / "lidar", OctreeOptions(leaf_max=3000, chunk_max=chunk_max, segment_points=30_000,
                                                    cell_bits=6, memory_points=memory_points,
                                                    batch_points=batch_points), data)
    check_layer(layer, data)
    assert layer.metadata["input_points"] == sum(len(d[0]) for d in data)
    assert layer.metadata["max_level"] >= 3
    assert not (tmp_path / "lidar" / ".work").exists()


@pytest.mark.parametrize("memory_points,crash_at", [(10**9, 3), (60_000, 3), (60_000, 8), (60_000, 16)])
def test_interrupted_builds_resume_byte_identical(tmp_path, monkeypatch, memory_points, crash_at):
    """``crash_at``: the chunk call that fails (at 60 000 points of memory, the batches, read
    from the segments, are chunks 0-6, 7-14, 15-22, 23-25, 26: 3 fails in batch 0, 8 in batch
    1 and 16 in batch 2; the rerun reads only the batches with chunks left)."""
    data = frames()
    options = OctreeOptions(leaf_max=3000, chunk_max=20_000, segment_points=50_000, cell_bits=6,
                            memory_points=memory_points)
    build(tmp_path / "clean", options, data)
    # the same map built all in memory: the same bytes
    build(tmp_path / "in-memory", dataclasses.replace(options, memory_points=10**9), data)
    # a crash while pooling (35,000 points a frame): frames of committed segments are not added again
    first = OctreeBuilder(tmp_path / "resumed", options)
    for f, (q, i, rgb) in enumerate(data[:3]):
        first.add(f, q, i, rgb)
    del first
    again = OctreeBuilder(tmp_path / "resumed", options)
    assert again.next_frame == 2
    for f in range(again.next_frame, len(data)):
        again.add(f, *data[f])
    # a crash in a chunk, then a rerun that does only the rest
    calls = []
    real = OctreeBuilder._process_chunk

    def crash(self, *args):
        calls.append(args[0])
        if len(calls) == crash_at:
            raise KeyboardInterrupt
        return real(self, *args)

    monkeypatch.setattr(OctreeBuilder, "_process_chunk", crash)
    with pytest.raises(KeyboardInterrupt):
        again.finish()
    monkeypatch.setattr(OctreeBuilder, "_process_chunk", lambda self, *a: calls.append(a[0]) or real(self, *a))
    done = len(calls)
    last = OctreeBuilder(tmp_path / "resumed", options)
    assert last.next_frame == len(data)
    last.finish()
    assert calls[done] == crash_at - 1 and len(set(calls[done:])) == len(calls[done:])
    for name in (HIERARCHY, OCTREE):
        assert (tmp_path / "clean" / name).read_bytes() == (tmp_path / "in-memory" / name).read_bytes(), name
    for name in (METADATA, HIERARCHY, OCTREE):
        assert (tmp_path / "clean" / name).read_bytes() == (tmp_path / "resumed" / name).read_bytes(), name


def test_a_failed_batch_read_raises_its_error_and_resumes(tmp_path, monkeypatch):
    import formats.octree_pool

    data = frames()
    options = OctreeOptions(leaf_max=3000, chunk_max=20_000, segment_points=30_000, cell_bits=6, memory_points=50_000)
    build(tmp_path / "clean", options, data)
    calls = []
    real = formats.octree_pool.read_range

    def read_range(*args):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("input/output error")
        return real(*args)

    monkeypatch.setattr(formats.octree_pool, "read_range", read_range)
    with pytest.raises(OSError, match="input/output error"):
        build(tmp_path / "resumed", options, data)
    monkeypatch.setattr(formats.octree_pool, "read_range", real)
    OctreeBuilder(tmp_path / "resumed", options).finish()
    for name in (METADATA, HIERARCHY, OCTREE):
        assert (tmp_path / "clean" / name).read_bytes() == (tmp_path / "resumed" / name).read_bytes(), name


def test_a_writer_behind_holds_the_frames_back(tmp_path, monkeypatch):
    """Two segments being written or waiting at most: the next frames wait for the writer (the
    pool's memory stays bounded), then go on; the layer is the same."""
    import formats.octree_pool

    data = frames(8, 2000)  # 3500 points a frame: a segment every two frames
    options = OctreeOptions(leaf_max=3000, chunk_max=20_000, segment_points=7000, memory_points=10_000)
    gate, real = threading.Event(), formats.octree_pool._write_arrays
    monkeypatch.setattr(formats.octree_pool, "_write_arrays", lambda path, parts: gate.wait(30) and real(path, parts))
    builder = OctreeBuilder(tmp_path / "held", options)
    added: list[int] = []
    feeder = threading.Thread(target=lambda: [builder.add(f, *d) or added.append(f) for f, d in enumerate(data)])
    feeder.start()
    feeder.join(1.0)
    assert feeder.is_alive() and len(added) == 5  # segments of frames 0-1 and 2-3 waiting: frame 5 ends the third
    gate.set()
    feeder.join(30)
    assert not feeder.is_alive() and len(added) == len(data)
    builder.finish()
    check_layer(OctreeLayer.open(tmp_path / "held"), data)


def test_damaged_pool_files_raise_format_errors(tmp_path):
    """A segment cut short, or (read after a resume) a runs file ending inside a run: a
    FormatError naming the file, not a map built from missing records."""
    data = frames()
    options = OctreeOptions(leaf_max=3000, chunk_max=20_000, segment_points=30_000, cell_bits=6, memory_points=50_000)
    for damaged, cut in (("pool-00001.bin", 5000), ("pool-00000.runs", 5)):
        builder = OctreeBuilder(tmp_path / damaged, options)
        for f, (q, i, rgb) in enumerate(data):
            builder.add(f, q, i, rgb)
        builder.pool.sync()
        path = tmp_path / damaged / ".work" / damaged
        os.truncate(path, path.stat().st_size - cut)
        if damaged.endswith(".runs"):  # runs are read back only by a resumed build
            builder = OctreeBuilder(tmp_path / damaged, options)
        with pytest.raises(FormatError, match=damaged):
            builder.finish()


def test_batches_read_each_record_once_in_few_ranges(tmp_path, monkeypatch):
    """A drive that leaves places behind, in batches: each batch is read as ranges of the
    segments (sorted by cell on the world grid), every record once but for the blocks the
    ranges share, in few ranges; the layer is the one built in memory."""
    import formats.octree_pool

    data = [(q + np.array([f * 15_000, 0, 0]), i, rgb) for f, (q, i, rgb) in enumerate(frames(8, n=8000))]
    options = OctreeOptions(leaf_max=3000, chunk_max=5_000, segment_points=14_000, cell_bits=6, memory_points=25_000)
    build(tmp_path / "in-memory", dataclasses.replace(options, memory_points=10**9), data)
    reads, real = [], formats.octree_pool.read_range
    monkeypatch.setattr(formats.octree_pool, "read_range", lambda path, out, start=0: reads.append(
        (path.name, start, len(out))) or real(path, out, start))
    build(tmp_path / "moving", options, data)
    ranges = [r for r in reads if r[0].startswith("pool-") and r[0].endswith(".bin")]
    n_segments, total = len({r[0] for r in ranges}), sum(len(d[0]) for d in data)
    assert n_segments > 3 and total <= sum(r[2] for r in ranges) <= total + 2 * 256 * len(ranges)
    assert len(ranges) <= total / 1000  # a batch spans few blocks of the grid, each a range of a segment (a
    # segment in frame order would take about one range per cell and frame: tens of records each)
    for name in (METADATA, HIERARCHY, OCTREE):
        assert (tmp_path / "in-memory" / name).read_bytes() == (tmp_path / "moving" / name).read_bytes(), name


def test_world_order_keeps_the_cube_order_within_each_block():
    """Cells sorted by :func:`world_codes` come block after block (blocks of ``2**ALIGN_BITS``
    cells on the world grid), in the order of their Morton codes in the cube around them."""
    rng = np.random.default_rng(3)
    cells = rng.integers(-3000, 3000, (5000, 3))
    packed = (cells[:, 0] + (1 << 20)) | ((cells[:, 1] + (1 << 20)) << 21) | ((cells[:, 2] + (1 << 20)) << 42)
    assert np.array_equal(cell_coords(packed), cells)
    cell_q = VOXEL << 6
    cube = Cube.around(cells.min(0) * cell_q, cells.max(0) * cell_q, VOXEL, 6)
    assert all(v % (cell_q << ALIGN_BITS) == 0 for v in cube.origin_q)
    local = cells - np.array(cube.origin_q) // cell_q
    cube_codes = morton_codes(local[:, 0], local[:, 1], local[:, 2], 1)
    order = np.argsort(world_codes(packed), kind="stable")
    block = [tuple(b) for b in (cells[order] >> ALIGN_BITS)]
    starts = [0] + [j for j in range(1, len(block)) if block[j] != block[j - 1]]
    assert len(starts) == len(set(block))  # each block one run
    for a, z in zip(starts, starts[1:] + [len(block)]):
        assert np.all(np.diff(cube_codes[order[a:z]]) >= 0)


def test_float_intensities_are_mapped_to_16_bits(tmp_path):
    q = np.array([[0, 0, 0], [100, 0, 0], [200, 0, 0]], np.int64)
    builder = OctreeBuilder(tmp_path / "l", OctreeOptions())
    builder.add(0, q, np.array([-30.5, -10.0, 2.25], np.float32), None)
    meta = builder.finish()
    pts = OctreeLayer.open(tmp_path / "l").points()
    assert meta["intensity"] == {"source_range": [-30.5, 2.25], "shift": 8} and not meta["rgb"]
    assert sorted(pts["intensity16"].tolist()) == [0, round(20.5 / 32.75 * 65535), 65535]


def test_empty_layer(tmp_path):
    meta = OctreeBuilder(tmp_path / "l", OctreeOptions()).finish()
    layer = OctreeLayer.open(tmp_path / "l")
    assert meta["points"] == 0 and len(layer.nodes) == 1 and layer.nodes[0]["point_count"] == 0


def test_bad_input_is_refused(tmp_path):
    builder = OctreeBuilder(tmp_path / "l", OctreeOptions())
    q = np.zeros((2, 3), np.int64)
    with pytest.raises(ValueError, match="xyz_q"):
        builder.add(0, q[:, :2], np.zeros(2), None)
    with pytest.raises(ValueError, match="NaN"):
        builder.add(0, q, np.array([0.0, np.nan]), None)
    with pytest.raises(ValueError, match="int32"):
        builder.add(0, q + 2**31, np.zeros(2), None)
    fine = OctreeBuilder(tmp_path / "fine", OctreeOptions(voxel_q=1, cell_bits=0))  # 1-quantum cells
    with pytest.raises(ValueError, match=r"2\*\*20 cells of 1 quanta"):
        fine.add(0, q + 2**20, np.zeros(2), None)
    for bad in (OctreeOptions(cell_bits=9), OctreeOptions(voxel_q=300, cell_bits=8)):  # > 24 code bits, > 65536 q
        with pytest.raises(ValueError, match="invalid octree options"):
            OctreeBuilder(tmp_path / "bad", bad)
    builder.add(3, q, np.zeros(2), None)
    with pytest.raises(ValueError, match="frame 2 added after frame 3"):
        builder.add(2, q, np.zeros(2), None)


def test_damaged_layers_raise_format_errors(tmp_path):
    data = frames(2, 5000)
    build(tmp_path / "l", OctreeOptions(leaf_max=500, step=1), data)
    root = tmp_path / "l"
    meta = json.loads((root / METADATA).read_bytes())
    hierarchy = (root / HIERARCHY).read_bytes()
    entries = np.frombuffer(hierarchy, ENTRY)
    assert np.any(entries["point_count"] == -1)  # step 1: every level its own page

    def damaged(edit) -> FormatError:
        (root / HIERARCHY).write_bytes(hierarchy)
        (root / METADATA).write_text(json.dumps(meta))
        edit()
        with pytest.raises(FormatError) as info:
            OctreeLayer.open(root).points()
        return info.value

    err = damaged(lambda: (root / HIERARCHY).write_bytes(hierarchy[:-5]))
    assert err.path.endswith(HIERARCHY) and "bytes" in err.expected
    bad = entries.copy()
    bad[np.flatnonzero(bad["point_count"] == -1)[0]]["offset"] = len(hierarchy)
    err = damaged(lambda: ((root / HIERARCHY).write_bytes(bad.tobytes())))
    assert "hierarchy page" in err.expected
    bad = entries.copy()
    bad[1]["x"] = 5
    assert "keys inside" in damaged(lambda: (root / HIERARCHY).write_bytes(bad.tobytes())).expected
    bad = entries.copy()
    bad[0]["point_count"] += 1
    assert "node 0-0-0-0" in damaged(lambda: (root / HIERARCHY).write_bytes(bad.tobytes())).expected
    assert '"format"' in damaged(lambda: (root / METADATA).write_text(json.dumps(dict(meta, version=9)))).expected


@pytest.mark.parametrize("min_points", [0, 400])
def test_copc_reads_back_exactly_in_laspy(tmp_path, min_points):
    """Every node its own chunk, or small leaves moved up into their parents' chunks."""
    import laspy

    from formats.copc import write_copc

    data = frames(3, 4000)
    # one chunk per counting cell: chunk roots the top levels empty entirely stay as 0-point nodes
    layer = build(tmp_path / "l", OctreeOptions(leaf_max=300, chunk_max=1, cell_bits=8, step=2), data)
    assert np.any(layer.nodes["point_count"] == 0)
    info = write_copc(tmp_path / "l", tmp_path / "m.copc.laz", min_points=min_points)
    pts = by_voxel(layer.points())
    with laspy.CopcReader.open(tmp_path / "m.copc.laz") as reader:
        assert reader.header.point_count == info["points"] == len(pts["x"])
        assert np.allclose(reader.header.scales, 1e-3) and reader.header.version.minor == 4
        got = reader.query()
        levels = [reader.query(level=lv) for lv in range(layer.metadata["max_level"] + 1)]
    per_level = [len(p) for p in levels]
    got = by_voxel({"x": got.X, "y": got.Y, "z": got.Z, "intensity16": got.intensity, "r": got.red,
                    "g": got.green, "b": got.blue, "count": got["count"], "first": got["first_frame"],
                    "last": got["last_frame"]})
    for k in ("x", "y", "z", "intensity16", "count", "first", "last"):
        assert np.array_equal(got[k], pts[k]), k
    for k in "rgb":
        assert np.array_equal(got[k], pts[k] * 257), k
    # the nodes holding each level's points: leaves of fewer than min_points (counting what they took) moved up
    nodes = {(int(e["level"]), int(e["x"]), int(e["y"]), int(e["z"])): int(e["point_count"]) for e in layer.nodes}
    for key in sorted(nodes, reverse=True):  # deepest first
        has_child = any((key[0] + 1, *c) in nodes for c in
                        {(2 * key[1] + dx, 2 * key[2] + dy, 2 * key[3] + dz) for dx in (0, 1) for dy in (0, 1)
                         for dz in (0, 1)})
        if key[0] and not has_child and nodes[key] < min_points:
            nodes[(key[0] - 1, key[1] >> 1, key[2] >> 1, key[3] >> 1)] += nodes.pop(key)
    assert info["nodes"] == len(nodes) and (min_points == 0) == (len(nodes) == len(layer.nodes))
    assert per_level == [sum(n for k, n in nodes.items() if k[0] == lv) for lv in range(len(per_level))]
    for lv, p in enumerate(levels):  # each point inside a node of its level
        side = layer.metadata["side_q"] >> lv
        assert {(lv, *k) for k in zip(p.X // side, p.Y // side, p.Z // side)} <= set(nodes)
    plain = laspy.read(tmp_path / "m.copc.laz")  # an ordinary LAZ 1.4 reader (chunk table) too
    assert np.array_equal(np.sort(plain.X), np.sort(pts["x"]))
