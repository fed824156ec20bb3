"""Bounded fuzzing of the point-cloud readers on damaged copies of real files.

Each reader's cases (byte flips, truncations, edits of header numbers and lines) run in
ONE subprocess (a Python start with numba costs seconds) under a wall-time limit and an
address-space limit (``RLIMIT_AS``, :data:`HEADROOM` above what the imports map). Every
case must end in a Sweep or a ``FormatError`` naming the file: never another exception,
a hang, a crash or a ``MemoryError``. Where the reader returns a result and a peer library
reads the same damaged file (laspy, pypcd4, Open3D), the two must agree, which catches a
silently wrong result. Cases are drawn from a fixed seed, so a failure reproduces.

Run one reader by hand: ``python tests/test_reader_fuzz.py pcd 400 report.json tests/data/pcd/*.pcd``.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import random
import re
import resource
import struct
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CASES = {"las": 600, "pcd": 800, "ply": 600, "bin": 100}
HEADROOM = 2 << 30  # bytes of address space a case may map beyond the worker's imports
WALL_S = 120  # per reader; a hang ends the worker and names its case

_INTS = [0, 1, 2, 3, 7, 255, 256, 65535, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 10**9, 10**12, 2**63 - 1, 2**63, 2**64]
_FLOATS = [0.0, -0.0, 1e-300, 1e30, -1e30, math.nan, math.inf, 1234567890.12]

# ---------------------------------------------------------------- mutations


def _header_end(data: bytes, kind: str) -> int:
    """Where the header ends: the point data of a LAS, after the DATA / end_header line of a PCD / PLY."""
    if kind == "las":
        return struct.unpack_from("<I", data, 96)[0] if len(data) >= 100 else len(data)
    if kind == "bin":
        return 0
    tag = b"\nDATA" if kind == "pcd" else b"end_header"
    at = data.find(tag)
    return len(data) if at < 0 else data.find(b"\n", at + 1) + 1


def _las_fields(data: bytes) -> list[tuple[int, str]]:
    """(offset, struct format) of the numbers of a LAS header, its first VLR and the LAZ chunk table."""
    fields = [(94, "<H"), (96, "<I"), (100, "<I"), (104, "<B"), (105, "<H"), (107, "<I")]
    fields += [(131 + 8 * k, "<d") for k in range(12)]
    header_size, offset, n_vlrs = struct.unpack_from("<HII", data, 94)
    if data[25] >= 4:
        fields += [(235, "<Q"), (243, "<I"), (247, "<Q")]  # first EVLR, EVLR count, 64-bit point count
    if n_vlrs:
        fields.append((header_size + 20, "<H"))
    if data[104] & 0x80 and offset + 8 <= len(data):
        fields.append((offset, "<q"))
        table_at = struct.unpack_from("<q", data, offset)[0]
        if 0 < table_at <= len(data) - 8:
            fields += [(table_at, "<I"), (table_at + 4, "<I")]
    return fields


def _edit_binary_number(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    at, fmt = rng.choice(_las_fields(data))
    (old,) = struct.unpack_from(fmt, data, at)
    if fmt == "<d":
        new = rng.choice(_FLOATS + [old + 32.7, old - 32.7, old * 2])
    else:
        bits = 8 * struct.calcsize(fmt)
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if fmt == "<q" else (0, 2**bits - 1)
        new = min(max(rng.choice(_INTS + [old + 1, old - 1, old * 2, old // 2, rng.randrange(lo, hi)]), lo), hi)
    out = bytearray(data)
    struct.pack_into(fmt, out, at, new)
    return f"number@{at}{fmt}:{old}->{new}", bytes(out)


def _edit_text_number(data: bytes, end: int, rng: random.Random) -> tuple[str, bytes]:
    spans = [m.span() for m in re.finditer(rb"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", data[:end])]
    if not spans:
        return "no-number", data
    a, b = rng.choice(spans)
    old = data[a:b]
    new = str(rng.choice(_INTS + [-1, int(float(old)) + 1, int(float(old)) * 2, "1e30", "nan"])).encode()
    return f"number@{a}:{old.decode()}->{new.decode()}", data[:a] + new + data[b:]


def _edit_pcd_points(data: bytes, end: int, rng: random.Random) -> tuple[str, bytes]:
    """Declare another point count consistently: WIDTH, HEIGHT and POINTS (and, in
    binary_compressed, the uncompressed size word) all agree."""
    head = data[:end].decode("ascii", "replace")
    width, height = (int(m.group(1)) if (m := re.search(rf"^{key} (\d+)", head, re.MULTILINE)) else 1
                     for key in ("WIDTH", "HEIGHT"))
    new_w, new_h = rng.choice([(v, height) for v in _INTS + [width + 1, 2 * width]] + [(width, 2**63), (width, 10**9)])
    for key, value in (("WIDTH", new_w), ("HEIGHT", new_h), ("POINTS", new_w * new_h)):
        head = re.sub(rf"^{key} \d+", f"{key} {value}", head, flags=re.MULTILINE)
    body = data[end:]
    if "binary_compressed" in head and len(body) >= 8 and width * height:
        row = struct.unpack_from("<I", body, 4)[0] // (width * height)
        body = body[:4] + struct.pack("<I", new_w * new_h * row % 2**32) + body[8:]
    return f"points:{width}x{height}->{new_w}x{new_h}", head.encode("ascii", "replace") + body


def _edit_text_line(data: bytes, end: int, rng: random.Random) -> tuple[str, bytes]:
    lines = data[:end].split(b"\n")
    k = rng.randrange(len(lines))
    op = rng.choice(["duplicate", "delete", "swap"])
    if op == "duplicate":
        lines.insert(k, lines[k])
    elif op == "delete":
        del lines[k]
    else:
        j = rng.randrange(len(lines))
        lines[k], lines[j] = lines[j], lines[k]
    return f"line-{op}@{k}", b"\n".join(lines) + data[end:]


_OPS = {"bin": ["flip", "truncate"], "las": ["flip", "truncate", "number", "number", "number"]}
_TEXT_OPS = ["flip", "truncate", "number", "number", "line"]  # PCD and PLY headers


def mutate(data: bytes, kind: str, rng: random.Random) -> tuple[str, bytes]:
    """A damaged copy of ``data``: (what was done, bytes)."""
    end = _header_end(data, kind)
    op = rng.choice(_OPS.get(kind, _TEXT_OPS))
    if op == "flip":
        region = end if end and rng.random() < 0.7 else len(data)
        out = bytearray(data)
        spots = [rng.randrange(region) for _ in range(rng.randint(1, 4))]
        for at in spots:
            out[at] ^= rng.randint(1, 255)
        return f"flip@{spots}", bytes(out)
    if op == "truncate":
        cut = rng.randrange(min(len(data), 2 * end + 64) if rng.random() < 0.5 else len(data))
        return f"truncate@{cut}", data[:cut]
    if op == "line":
        return _edit_text_line(data, end, rng)
    if kind == "las":
        return _edit_binary_number(data, rng)
    if kind == "pcd" and rng.random() < 0.5:
        return _edit_pcd_points(data, end, rng)
    return _edit_text_number(data, end, rng)


# ---------------------------------------------------------------- peers (worker side)
# Each returns "" when the peer agrees, what differs when it does not, None when the peer
# could not read the file (nothing to compare).


def _peer_las(path: str, sweep) -> str | None:
    import laspy

    from formats.las import las_origin

    try:
        peer = laspy.read(path)
    except Exception as exc:  # noqa: BLE001  (any failure of the peer is reported)
        return f"laspy failed where the reader did not: {type(exc).__name__}: {exc}"
    xyz = np.stack([peer.x, peer.y, peer.z], axis=1)
    if len(xyz) != len(sweep):
        return f"laspy has {len(xyz)} points, the reader {len(sweep)}"
    origin = np.floor(xyz.min(axis=0)) if len(xyz) else np.zeros(3)
    if not np.array_equal(las_origin(path), origin):
        return f"origin {las_origin(path)} is not the floored minimum {origin} of laspy's points"
    if not np.array_equal(sweep.xyz, (xyz - origin).astype(np.float32)):
        return "xyz differ from laspy's x y z minus the origin"
    return ""


def _peer_pcd(path: str, sweep) -> str | None:
    from pypcd4 import PointCloud

    try:
        data = PointCloud.from_path(path).pc_data
    except Exception:  # noqa: BLE001
        return None  # pypcd4 refuses more than Fathom (e.g. VERSION .5): nothing to compare
    if len(data) != len(sweep):
        return f"pypcd4 has {len(data)} points, the reader {len(sweep)}"
    xyz = np.stack([data["x"], data["y"], data["z"]], axis=1).astype(np.float32)
    if not np.array_equal(xyz, sweep.xyz, equal_nan=True):
        return "xyz differ from pypcd4's"
    return ""


def _peer_ply(path: str, sweep) -> str | None:
    import open3d as o3d

    with open(path, "rb") as fh:
        if b"big_endian" in fh.read(64):
            return None  # Open3D reads no big-endian PLY
    cloud = o3d.t.io.read_point_cloud(path, format="ply")  # the tensor reader maps properties by name
    if "positions" not in cloud.point:
        return None  # Open3D refuses more than Fathom: nothing to compare
    peer = cloud.point.positions.numpy()
    if len(peer) != len(sweep):
        return f"Open3D has {len(peer)} points, the reader {len(sweep)}"
    if not np.array_equal(peer.astype(np.float32), sweep.xyz, equal_nan=True):
        return "xyz differ from Open3D's"
    return ""


PEERS: dict[str, tuple[str | None, Callable | None]] = {
    "las": ("laspy", _peer_las), "pcd": ("pypcd4", _peer_pcd), "ply": ("open3d", _peer_ply), "bin": (None, None),
}  # fmt: skip


def _address_space() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize"))


def run_worker(kind: str, seeds: list[str], n_cases: int) -> dict:
    """Read ``n_cases`` damaged copies of ``seeds``; returns counts and failures."""
    import formats
    from formats.errors import FormatError
    from formats.registry import read_points

    formats.warmup()
    module, peer = PEERS[kind]
    if module:
        importlib.import_module(module)  # before the limit: the peer's import maps a lot
    limit = _address_space() + HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    rng = random.Random(f"fathom-fuzz-{kind}")
    originals = [Path(s).read_bytes() for s in seeds]
    counts = {"result": 0, "FormatError": 0, "peer_agreed": 0}
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(n_cases):
            s = k % len(seeds)
            what, data = mutate(originals[s], kind, rng)
            case = f"case {k} {Path(seeds[s]).name} {what}"
            print(case, file=sys.stderr, flush=True)
            path = os.path.join(tmp, Path(seeds[s]).name)
            Path(path).write_bytes(data)
            try:
                sweep = read_points(path)
            except FormatError as exc:
                counts["FormatError"] += 1
                if exc.path != path:
                    failures.append(f"{case}: FormatError names {exc.path!r}, not the file")
                continue
            except BaseException as exc:  # noqa: BLE001  (a lazrs panic is a BaseException)
                failures.append(f"{case}: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-3)}")
                continue
            counts["result"] += 1
            verdict = peer(path, sweep) if peer else None
            if verdict:
                failures.append(f"{case}: {verdict}")
            counts["peer_agreed"] += verdict == ""
    return {"cases": n_cases, **counts, "failures": failures}


# ---------------------------------------------------------------- tests (parent side)


def las14_copies(real_data: Path, tmp: Path) -> list[Path]:
    """``simple.las`` converted by laspy to LAS 1.4 point format 6 with one EVLR, as LAS and LAZ."""
    import laspy
    from laspy.vlrs.vlrlist import VLRList

    las = laspy.convert(laspy.read(real_data / "las" / "simple.las"), file_version="1.4", point_format_id=6)
    las.evlrs = VLRList([laspy.VLR(user_id="fathom", record_id=1, description="test", record_data=b"evlr data")])
    paths = [tmp / "simple14.las", tmp / "simple14.laz"]
    for path in paths:
        las.write(path)
    return paths


def _seeds(kind: str, real_data: Path, tmp: Path) -> list[Path]:
    """Real files to damage: tests/data's LAS/LAZ and PCDs; PLY written by Open3D (a cloud
    and a mesh with a face list) and Fathom (big endian), KITTI / nuScenes bins from a
    real PCD's points."""
    if kind == "las":
        return [*sorted((real_data / "las").glob("simple.la[sz]")), *las14_copies(real_data, tmp)]
    if kind == "pcd":
        return sorted((real_data / "pcd").glob("*.pcd"))
    import open3d as o3d

    from formats.kitti import write_kitti_bin
    from formats.nuscenes import write_nuscenes_pcd_bin
    from formats.pcd import read_pcd
    from formats.ply import write_ply

    cloud = read_pcd(real_data / "pcd" / "pcl_colored_cloud.pcd")
    cloud = cloud.select(np.arange(0, len(cloud), max(1, len(cloud) // 300)))
    if kind == "bin":
        write_kitti_bin(tmp / "cloud.bin", cloud)
        write_nuscenes_pcd_bin(tmp / "cloud.pcd.bin", cloud)
        return [tmp / "cloud.bin", tmp / "cloud.pcd.bin"]
    pc = o3d.io.read_point_cloud(str(real_data / "pcd" / "pcl_bunny.pcd"))
    o3d.io.write_point_cloud(str(tmp / "bunny_ascii.ply"), pc, write_ascii=True)
    o3d.io.write_point_cloud(str(tmp / "bunny_binary.ply"), pc)
    mesh = o3d.geometry.TriangleMesh.create_sphere(radius=2.5, resolution=6)
    o3d.io.write_triangle_mesh(str(tmp / "sphere_ascii.ply"), mesh, write_ascii=True)
    o3d.io.write_triangle_mesh(str(tmp / "sphere_binary.ply"), mesh)
    write_ply(tmp / "cloud_big.ply", cloud, "binary_big_endian")
    return sorted(tmp.glob("*.ply"))


def run_reader_fuzz(kind: str, seeds: list[Path], report: Path) -> dict:
    """Run the worker for ``kind`` in a subprocess, its report written to ``report`` (stdout
    is left to the peers' chatter); returns the report, fails the test on a hang or crash."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "2"}
    cmd = [sys.executable, str(Path(__file__)), kind, str(CASES[kind]), str(report), *map(str, seeds)]
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=WALL_S, check=False)
    except subprocess.TimeoutExpired as exc:
        last = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
        raise AssertionError(f"{kind} fuzz worker hung past {WALL_S} s in {last}") from None
    assert done.returncode == 0, \
        f"{kind} fuzz worker died ({done.returncode}) after {done.stderr.strip().splitlines()[-3:]}"
    return json.loads(report.read_text())


def _check(kind: str, real_data: Path, tmp_path: Path) -> None:
    report = run_reader_fuzz(kind, _seeds(kind, real_data, tmp_path), tmp_path / "report.json")
    assert not report["failures"], "\n".join(report["failures"][:20])
    assert report["result"] + report["FormatError"] == CASES[kind]
    assert report["result"] > 0 and report["FormatError"] > 0  # the mutations both break and keep files
    if PEERS[kind][1] is not None:
        assert report["peer_agreed"] > report["result"] // 2, report  # most results were held to the peer


def test_fuzz_las(real_data, tmp_path):
    _check("las", real_data, tmp_path)


def test_fuzz_pcd(real_data, tmp_path):
    _check("pcd", real_data, tmp_path)


def test_fuzz_ply(real_data, tmp_path):
    _check("ply", real_data, tmp_path)


def test_fuzz_kitti_nuscenes(real_data, tmp_path):
    _check("bin", real_data, tmp_path)


if __name__ == "__main__":
    kind_, n_, report_, *seeds_ = sys.argv[1:]
    Path(report_).write_text(json.dumps(run_worker(kind_, seeds_, int(n_))))
