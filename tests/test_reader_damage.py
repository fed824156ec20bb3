"""Regression tests on damaged copies of the real files of tests/data (and files Open3D,
pypcd4 and laspy write from them): every count or offset beyond the file is a
FormatError naming the file, found without an allocation sized by it; library errors are
FormatErrors; fewer points than declared is an error; positions far from zero keep their
precision through an origin. :mod:`tests.test_reader_fuzz` damages the same files at random.
"""

from __future__ import annotations

import contextlib
import struct
import tracemalloc
from collections.abc import Iterator

import laspy
import numpy as np
import open3d as o3d
import pytest
from pypcd4 import Encoding, PointCloud

from formats.errors import FormatError
from formats.las import las_origin, read_las
from formats.pcd import read_pcd, read_pcd_header
from formats.ply import read_ply
from formats.registry import read_points
from tests.test_reader_fuzz import las14_copies


@contextlib.contextmanager
def allocates_below(limit: int) -> Iterator[None]:
    """Fail unless the block's peak of Python and NumPy allocations (tracemalloc) stays below
    ``limit`` bytes, whether or not the system would have granted more."""
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, f"allocated {peak} bytes at the peak, limit {limit}"


def edited(raw: bytes, *edits: tuple[int, str, object]) -> bytes:
    """``raw`` with ``struct.pack_into(fmt, at, value)`` applied for each ``(at, fmt, value)``."""
    out = bytearray(raw)
    for at, fmt, value in edits:
        struct.pack_into(fmt, out, at, value)
    return bytes(out)


def read_fails(path, raw: bytes, match: str, offset: int | None = None) -> FormatError:
    """Write ``raw`` to ``path``; reading it must raise a FormatError naming it, having
    allocated no more than a few times the file's size."""
    path.write_bytes(raw)
    with allocates_below(16 * len(raw) + (1 << 20)), pytest.raises(FormatError, match=match) as err:
        read_points(path)
    assert err.value.path == str(path)
    if offset is not None:
        assert err.value.offset == offset
    return err.value


@pytest.mark.parametrize("name", ["a.pcd", "a.ply", "a.bin", "a.pcd.bin", "a.las", "a.laz"])
def test_missing_file_is_a_format_error(tmp_path, name):
    with pytest.raises(FormatError, match="readable file") as err:
        read_points(tmp_path / name)
    assert err.value.path == str(tmp_path / name)


# ---------------------------------------------------------------- LAS / LAZ


@pytest.mark.parametrize("name", ["simple.las", "simple.laz"])
def test_las_counts_and_offsets_beyond_the_file(real_data, tmp_path, name):
    raw = (real_data / "las" / name).read_bytes()
    bad = tmp_path / name
    read_fails(bad, edited(raw, (100, "<I", 10**9)), "1000000000 VLRs", offset=227)  # hung in laspy's VLR loop
    read_fails(bad, edited(raw, (96, "<I", len(raw) + 1)), "offset to point data")
    read_fails(bad, edited(raw, (94, "<H", 100)), "header size")
    read_fails(bad, edited(raw, (131, "<d", 0.0)), "non-zero scales")
    if name == "simple.laz":
        table_at = struct.unpack_from("<q", raw, 333)[0]
        read_fails(bad, edited(raw, (table_at + 4, "<I", 2**32 - 1)), "LAZ chunks", offset=table_at + 4)


def test_las14_evlrs_beyond_the_file(real_data, tmp_path):
    for path in las14_copies(real_data, tmp_path):
        raw = path.read_bytes()
        evlr_at = struct.unpack_from("<Q", raw, 235)[0]
        read_fails(tmp_path / f"bad{path.suffix}", edited(raw, (243, "<I", 10**9)), "1000000000 EVLRs", offset=evlr_at)
        read_fails(tmp_path / f"bad{path.suffix}", edited(raw, (evlr_at + 20, "<Q", 2**40)), "EVLR 0 of 1")
        assert len(read_las(path)) == 1065


@pytest.mark.parametrize(
    "name, edit, error",
    [
        ("simple.las", (104, "<B", 63), "PointFormatNotSupported"),  # laspy's errors, not only LaspyException
        ("simple.las", (105, "<H", 7), "LaspyException"),
        ("simple.laz", (227 + 54 + 36, "<H", 0xFFFF), "PanicException"),  # a LASzip item size lazrs panics on
        ("simple.laz", (227 + 54, "<H", 0), "LazrsError"),  # compressor 0: not a LASzip stream
    ],
)
def test_las_library_errors_are_format_errors(real_data, tmp_path, name, edit, error):
    raw = (real_data / "las" / name).read_bytes()
    read_fails(tmp_path / name, edited(raw, edit), error)


@pytest.mark.parametrize("name", ["simple.las", "simple.laz"])
def test_las_fewer_points_than_declared(real_data, tmp_path, name):
    raw = (real_data / "las" / name).read_bytes()
    offset = struct.unpack_from("<I", raw, 96)[0]
    cut = tmp_path / name
    if name == "simple.las":  # laspy returns the 500 points there, and 0 of a header with no records
        read_fails(cut, raw[: offset + 500 * 34 + 10], "1065 point records of 34 bytes")
        read_fails(cut, raw[:offset], "1065 point records of 34 bytes")
    else:
        read_fails(cut, raw[: len(raw) // 2], "LazrsError")
        read_fails(cut, edited(raw, (107, "<I", 1066)), "LAS/LAZ")
        read_fails(cut, edited(raw, (107, "<I", 2**32 - 1)), "LAS/LAZ")


@pytest.mark.parametrize(
    "bounds",
    [
        {187: 1e30},  # min x: every x came back -1e30
        # off by metres (simple.las: min 635619.85 848899.70 406.59, max z 586.38)
        {187: 635587.15, 203: 848867.0, 211: 598.88, 219: 414.84},
        {at: 0.0 for at in range(179, 227, 8)},  # never filled in
    ],
)
def test_las_origin_from_the_points_not_the_header_bounds(real_data, tmp_path, bounds):
    raw = (real_data / "las" / "simple.las").read_bytes()
    path = tmp_path / "bounds.las"
    # max x, min x, max y, ... at 179, 187, ...
    path.write_bytes(edited(raw, *((at, "<d", v) for at, v in bounds.items())))
    peer = laspy.read(path)
    xyz64 = np.stack([peer.x, peer.y, peer.z], axis=1)
    assert not np.array_equal(peer.header.mins, xyz64.min(axis=0))
    origin = las_origin(path)
    np.testing.assert_array_equal(origin, np.floor(xyz64.min(axis=0)))
    s = read_las(path)
    np.testing.assert_array_equal(s.xyz, (xyz64 - origin).astype(np.float32))
    assert np.abs(s.xyz + origin - xyz64).max() < 2.5e-4  # float32 near a 5 km extent


# ---------------------------------------------------------------- PCD


def header_edited(path, **values) -> bytes:
    """The file at ``path`` with its header lines ``KEY ...`` replaced by ``KEY value``."""
    raw = path.read_bytes()
    end = read_pcd_header(path).data_offset
    lines = raw[:end].decode().splitlines()
    for key, value in values.items():
        k = next(i for i, ln in enumerate(lines) if ln.split()[:1] == [key])
        lines[k] = f"{key} {value}"
    return ("\n".join(lines) + "\n").encode() + raw[end:]


@pytest.mark.parametrize(
    "name, values, match",
    [
        ("pypcd4_ascii.pcd", {"WIDTH": 10**9, "POINTS": 10**9},  # asked for 11 GiB
         "1000000000 rows of 4 values; the data ends in row 213"),
        ("pypcd4_ascii.pcd", {"HEIGHT": 2**63, "POINTS": 213 * 2**63}, "the data ends in row 213"),  # OverflowError
        ("pypcd4_ascii.pcd", {"COUNT": "1 1 1 2147483647"}, "a point of 2147483650 ascii values"),
        ("pypcd4_ascii.pcd", {"COUNT": f"1 1 1 {2**62}"}, "a point of at most"),
        ("pypcd4_binary.pcd", {"WIDTH": 10**12, "POINTS": 10**12}, "bytes of binary data"),
    ],
)
def test_pcd_points_beyond_the_file(real_data, tmp_path, name, values, match):
    read_fails(tmp_path / name, header_edited(real_data / "pcd" / name, **values), match)


def test_pcd_compressed_size_word_beyond_what_lzf_reaches(real_data, tmp_path):
    src = real_data / "pcd" / "pypcd4_binary_compressed.pcd"  # 213 points of 16 bytes
    start = read_pcd_header(src).data_offset
    n = 2**28 - 1  # 4 GiB - 16 bytes uncompressed, stated consistently by WIDTH, POINTS and the size word
    raw = bytearray(header_edited(src, WIDTH=n, POINTS=n))
    start += len(raw) - len(src.read_bytes())
    packed = struct.unpack_from("<I", raw, start)[0]
    struct.pack_into("<I", raw, start + 4, n * 16)  # a 3 KiB file allocated 4 GiB
    read_fails(tmp_path / "c.pcd", bytes(raw), f"{n * 16} bytes from {packed}", offset=start + 4)


@pytest.mark.parametrize("encoding", ["ascii", "binary", "binary_compressed"])
@pytest.mark.parametrize("offset", [(0.0, 0.0, 1234567890.12), (500000.123, 5400000.456, 0.0)])  # far z, a UTM position
def test_pcd_far_float64_coordinates_need_an_origin(real_data, tmp_path, encoding, offset):
    """pypcd4_binary.pcd's points moved far from 0 and written by pypcd4 as F8: float32 without
    an origin moved them by 45.9 m (z) and 44 mm (UTM)."""
    data = PointCloud.from_path(real_data / "pcd" / "pypcd4_binary.pcd").pc_data
    xyz64 = np.stack([data["x"], data["y"], data["z"]], axis=1).astype(np.float64) + offset
    path = tmp_path / "far.pcd"
    PointCloud.from_points(xyz64, ("x", "y", "z"), (np.float64,) * 3).save(path, encoding=Encoding(encoding))
    peer = PointCloud.from_path(path).pc_data
    in_file = np.stack([peer["x"], peer["y"], peer["z"]], axis=1)
    assert in_file.dtype == np.float64 and np.abs(in_file - xyz64).max() < 1e-9  # pypcd4 writes 10 decimals in ascii
    xyz64 = in_file
    with pytest.raises(FormatError, match="pass origin="):
        read_pcd(path)
    origin = np.floor(xyz64.min(axis=0))
    s = read_pcd(path, origin=origin)
    np.testing.assert_array_equal(s.xyz, (xyz64 - origin).astype(np.float32))
    assert np.abs(s.xyz + origin - xyz64).max() < 1e-6
    with pytest.raises(ValueError, match="3 finite numbers"):
        read_pcd(path, origin=[0.0, np.nan, 0.0])


# ---------------------------------------------------------------- PLY


@pytest.fixture
def bunny_ply(real_data, tmp_path):
    """``write(ascii: bool, offset=(0, 0, 0)) -> (path, (N, 3) float64)``: pcl_bunny.pcd's points
    plus ``offset`` written by Open3D as a PLY (``property double x y z``)."""

    def write(ascii_: bool, offset=(0.0, 0.0, 0.0)):
        pc = o3d.io.read_point_cloud(str(real_data / "pcd" / "pcl_bunny.pcd")).translate(offset)
        path = tmp_path / f"bunny_{'ascii' if ascii_ else 'binary'}.ply"
        o3d.io.write_point_cloud(str(path), pc, write_ascii=ascii_)
        return path, np.asarray(o3d.io.read_point_cloud(str(path)).points)

    return write


def header_edit(path, old: bytes, new: bytes) -> bytes:
    raw = path.read_bytes()
    end = raw.index(b"end_header")
    assert old in raw[:end]
    return raw[:end].replace(old, new, 1) + raw[end:]


@pytest.mark.parametrize("ascii_", [True, False])
def test_ply_counts_beyond_the_file(bunny_ply, tmp_path, ascii_):
    path, _ = bunny_ply(ascii_)
    bad = tmp_path / "bad.ply"
    read_fails(bad, header_edit(path, b"vertex 397", b"vertex 1000000000000"), "1000000000000 ")  # asked for 10.9 TiB
    read_fails(bad, header_edit(path, b"vertex 397", b"vertex 9223372036854775808"), "9223372036854775808 ")
    faces = b"element face 1000000000000\nproperty list uchar int vertex_indices\n"
    read_fails(bad, header_edit(path, b"element vertex", faces + b"element vertex"), "'face'|'vertex_indices'")
    empty = b"element nothing 1000000000000\n"  # rows of no bytes: skipped, not walked row by row
    bad.write_bytes(header_edit(path, b"element vertex", empty + b"element vertex"))
    np.testing.assert_array_equal(read_ply(bad).xyz, read_ply(path).xyz)


def test_ply_list_of_10e12_items(tmp_path):
    head = (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty list uchar float w\n"
            b"property float x\nproperty float y\nproperty float z\nend_header\n")
    read_fails(tmp_path / "l.ply", head + b"1000000000000 1 2 3\n", "data ends in row 0")


@pytest.mark.parametrize("ascii_", [True, False])
def test_ply_repeated_property(bunny_ply, tmp_path, ascii_):
    path, _ = bunny_ply(ascii_)
    raw = header_edit(path, b"property double z\n", b"property double z\nproperty double z\n")
    read_fails(tmp_path / "rep.ply", raw, "one property 'z' in element 'vertex', found a second")


def test_ply_texture_t_is_no_time(tmp_path):
    raw = b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
    raw += b"property float s\nproperty float t\nend_header\n1 2 3 0.25 0.5\nnan 0 0 0.75 1\n"
    (tmp_path / "uv.ply").write_bytes(raw)
    s = read_ply(tmp_path / "uv.ply")
    assert s.time_offset_ns is None
    np.testing.assert_array_equal(s.extra["t"], np.float32([0.5, 1]))
    np.testing.assert_array_equal(s.extra["s"], np.float32([0.25, 0.75]))
    d = read_ply(tmp_path / "uv.ply", drop_nan=True)
    assert d.extra["t"].tolist() == [0.5] and d.extra["s"].tolist() == [0.25]


@pytest.mark.parametrize("ascii_", [True, False])
@pytest.mark.parametrize("offset", [(0.0, 0.0, 1234567890.12), (500000.0, 5400000.0, 0.0)])  # far z, a UTM position
def test_ply_far_coordinates_need_an_origin(bunny_ply, tmp_path, ascii_, offset):
    path, xyz64 = bunny_ply(False, offset)
    if ascii_:  # Open3D writes 6 digits in ascii: the same header, every digit of the doubles
        head = header_edit(path, b"binary_little_endian", b"ascii")
        path = tmp_path / "far_ascii.ply"
        rows = "".join(f"{x!r} {y!r} {z!r}\n" for x, y, z in xyz64.tolist())
        path.write_bytes(head[: head.index(b"end_header\n") + 11] + rows.encode())
    with pytest.raises(FormatError, match="pass origin="):
        read_ply(path)
    origin = np.floor(xyz64.min(axis=0))
    s = read_ply(path, origin=origin)
    np.testing.assert_array_equal(s.xyz, (xyz64 - origin).astype(np.float32))
    assert np.abs(s.xyz + origin - xyz64).max() < 1e-7  # float32 around the origin: 45.9 m and 44 mm lost without
    near, near64 = bunny_ply(ascii_)  # Open3D's double bunny near 0 needs no origin
    np.testing.assert_array_equal(read_ply(near).xyz, near64.astype(np.float32))
