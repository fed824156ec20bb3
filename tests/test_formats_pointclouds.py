"""KITTI / nuScenes bins, PLY, LAS/LAZ and AV2 feather readers against numpy, open3d, laspy and pyarrow."""

from __future__ import annotations

import laspy
import numpy as np
import open3d as o3d
import pyarrow as pa
import pyarrow.feather as feather
import pytest

from engine.sweep import Sweep
from formats.av2 import read_av2_sweep, write_av2_sweep
from formats.errors import FormatError
from formats.kitti import read_kitti_bin, write_kitti_bin
from formats.las import las_origin, read_las
from formats.nuscenes import read_nuscenes_pcd_bin, write_nuscenes_pcd_bin
from formats.ply import ENCODINGS, read_ply, write_ply
from formats.registry import read_points


def sample_sweep(n: int = 200, seed: int = 0) -> Sweep:
    rng = np.random.default_rng(seed)
    return Sweep(
        xyz=rng.normal(0, 30, (n, 3)),
        intensity=rng.random(n),
        ring=rng.integers(0, 64, n),
        time_offset_ns=rng.integers(0, 100_000_000, n),
        extra={"rgb": rng.integers(0, 256, (n, 3)).astype(np.uint8)},
    )


# ---------------------------------------------------------------- KITTI / nuScenes


def test_kitti_matches_numpy(tmp_path):
    rec = np.random.default_rng(1).normal(size=(100, 4)).astype("<f4")
    rec.tofile(tmp_path / "000001.bin")
    s = read_points(tmp_path / "000001.bin")
    np.testing.assert_array_equal(s.xyz, rec[:, :3])
    np.testing.assert_array_equal(s.intensity, rec[:, 3])
    write_kitti_bin(tmp_path / "back.bin", s)
    assert (tmp_path / "back.bin").read_bytes() == (tmp_path / "000001.bin").read_bytes()


def test_kitti_nan_and_empty(tmp_path):
    rec = np.ones((3, 4), "<f4")
    rec[1, 0] = np.nan
    rec.tofile(tmp_path / "n.bin")
    assert len(read_kitti_bin(tmp_path / "n.bin")) == 3
    assert len(read_kitti_bin(tmp_path / "n.bin", drop_nan=True)) == 2
    (tmp_path / "e.bin").write_bytes(b"")
    assert read_kitti_bin(tmp_path / "e.bin").xyz.shape == (0, 3)


@pytest.mark.parametrize("reader, record", [(read_kitti_bin, 16), (read_nuscenes_pcd_bin, 20)])
def test_bin_truncated(tmp_path, reader, record):
    (tmp_path / "t.pcd.bin").write_bytes(bytes(record * 3 + 6))
    with pytest.raises(FormatError) as err:
        reader(tmp_path / "t.pcd.bin")
    assert err.value.offset == record * 3 and f"{record}-byte records" in err.value.expected


def test_nuscenes_matches_numpy_and_timestamp_from_name(tmp_path):
    rng = np.random.default_rng(2)
    rec = np.concatenate([rng.normal(size=(50, 4)), rng.integers(0, 32, (50, 1))], axis=1).astype("<f4")
    path = tmp_path / "n015-2018-07-24-11-22-45+0800__LIDAR_TOP__1532402927647951.pcd.bin"
    rec.tofile(path)
    s = read_points(path)
    assert s.timestamp_ns == 1532402927647951000
    np.testing.assert_array_equal(s.xyz, rec[:, :3])
    np.testing.assert_array_equal(s.intensity, rec[:, 3])
    np.testing.assert_array_equal(s.ring, rec[:, 4].astype(np.uint16))
    write_nuscenes_pcd_bin(tmp_path / "x.pcd.bin", s)
    assert (tmp_path / "x.pcd.bin").read_bytes() == path.read_bytes()
    assert read_nuscenes_pcd_bin(path, timestamp_ns=5).timestamp_ns == 5


def test_nuscenes_non_integral_ring(tmp_path):
    rec = np.zeros((4, 5), "<f4")
    rec[2, 4] = 1.5
    rec.tofile(tmp_path / "r.pcd.bin")
    with pytest.raises(FormatError) as err:
        read_nuscenes_pcd_bin(tmp_path / "r.pcd.bin")
    assert err.value.offset == 2 * 20 + 16


# ---------------------------------------------------------------- PLY


def ply_reference(path) -> dict[str, np.ndarray]:
    """Independent NumPy reader for a vertex-only binary PLY (the test's own peer for big endian)."""
    raw = path.read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    lines = raw[:end].decode().splitlines()
    order = ">" if "big" in lines[1] else "<"
    types = {"float": "f4", "double": "f8", "uchar": "u1", "ushort": "u2", "int": "i4", "uint": "u4"}
    props = [(ln.split()[2], order + types[ln.split()[1]]) for ln in lines if ln.startswith("property")]
    n = int(next(ln for ln in lines if ln.startswith("element vertex")).split()[2])
    return np.frombuffer(raw, dtype=props, count=n, offset=end)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_ply_round_trip_and_peers(tmp_path, encoding):
    s = sample_sweep()
    path = tmp_path / f"s_{encoding}.ply"
    write_ply(path, s, encoding)
    r = read_points(path)
    np.testing.assert_array_equal(r.xyz, s.xyz)
    np.testing.assert_array_equal(r.intensity, s.intensity)
    np.testing.assert_array_equal(r.ring, s.ring)
    np.testing.assert_array_equal(r.time_offset_ns, s.time_offset_ns)
    np.testing.assert_array_equal(r.extra["rgb"], s.extra["rgb"])
    if encoding == "binary_big_endian":  # open3d reads no big-endian PLY
        ref = ply_reference(path)
        np.testing.assert_array_equal(r.xyz, np.stack([ref["x"], ref["y"], ref["z"]], 1))
        np.testing.assert_array_equal(r.ring, ref["ring"])
        return
    peer = o3d.io.read_point_cloud(str(path))
    np.testing.assert_array_equal(r.xyz, np.asarray(peer.points).astype(np.float32))
    np.testing.assert_array_equal(r.extra["rgb"], np.round(np.asarray(peer.colors) * 255))
    t = o3d.t.io.read_point_cloud(str(path))
    np.testing.assert_array_equal(r.intensity, t.point["intensity"].numpy()[:, 0])


@pytest.mark.parametrize("ascii_", [True, False])
def test_ply_written_by_open3d_mesh(tmp_path, ascii_):
    mesh = o3d.geometry.TriangleMesh.create_sphere(radius=2.5, resolution=8)
    path = tmp_path / "mesh.ply"
    o3d.io.write_triangle_mesh(str(path), mesh, write_ascii=ascii_)
    s = read_ply(path)  # vertex before face: the face list element after it is ignored
    peer = o3d.io.read_triangle_mesh(str(path))  # ascii PLY holds 6 digits: compare what is in the file
    np.testing.assert_array_equal(s.xyz, np.asarray(peer.vertices).astype(np.float32))


def faces_first_ply(encoding: str, xyz: np.ndarray) -> bytes:
    """A PLY whose list-property 'face' element comes before 'vertex' (must be walked and skipped)."""
    faces = [[0, 1, 2], [2, 1, 0, 3], []]
    head = (
        f"ply\nformat {encoding} 1.0\ncomment faces first\nelement face {len(faces)}\n"
        "property list uchar int vertex_indices\nproperty uchar flag\n"
        f"element vertex {len(xyz)}\nproperty float x\nproperty float y\nproperty float z\n"
        "property list uchar float weights\nproperty ushort ring\nend_header\n"
    ).encode()
    if encoding == "ascii":
        body = "".join(f"{len(f)} {' '.join(map(str, f))} 7\n" for f in faces)
        body += "".join(f"{x!r} {y!r} {z!r} 2 0.5 0.25 {k}\n" for k, (x, y, z) in enumerate(xyz.tolist()))
        return head + body.encode()
    o = ">" if encoding == "binary_big_endian" else "<"
    body = b"".join(np.uint8(len(f)).tobytes() + np.array(f, o + "i4").tobytes() + b"\x07" for f in faces)
    for k, p in enumerate(xyz):
        body += np.asarray(p, o + "f4").tobytes() + b"\x02" + np.array([0.5, 0.25], o + "f4").tobytes()
        body += np.array(k, o + "u2").tobytes()
    return head + body


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_ply_list_properties_and_leading_elements(tmp_path, encoding):
    xyz = np.random.default_rng(3).normal(size=(6, 3)).astype(np.float32)
    (tmp_path / "f.ply").write_bytes(faces_first_ply(encoding, xyz))
    s = read_ply(tmp_path / "f.ply")
    np.testing.assert_array_equal(s.xyz, xyz)
    assert s.ring.tolist() == list(range(6))
    assert "weights" not in s.extra


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_ply_truncated(tmp_path, encoding):
    xyz = np.ones((6, 3), np.float32)
    raw = faces_first_ply(encoding, xyz)
    cut = raw.rstrip()[: raw.rstrip().rindex(b" ")] if encoding == "ascii" else raw[:-3]
    (tmp_path / "t.ply").write_bytes(cut)
    with pytest.raises(FormatError):
        read_ply(tmp_path / "t.ply")


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"plx\n", "magic"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n", "end_header"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty quad x\nend_header\n1\n", "PLY header line"),
        (b"ply\nformat binary_middle_endian 1.0\nend_header\n", "PLY header line"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\n"
         b"end_header\n1 two 3\n", "field 'y'"),
    ],
)
def test_ply_bad_input(tmp_path, raw, match):
    (tmp_path / "b.ply").write_bytes(raw)
    with pytest.raises(FormatError, match=match):
        read_ply(tmp_path / "b.ply")


# ---------------------------------------------------------------- LAS / LAZ


@pytest.mark.parametrize("name", ["simple.las", "simple.laz"])
def test_las_matches_laspy(real_data, name):
    path = real_data / "las" / name
    peer = laspy.read(path)
    s = read_points(path)
    origin = las_origin(path)
    xyz64 = np.stack([peer.x, peer.y, peer.z], axis=1)
    np.testing.assert_array_equal(origin, np.floor(xyz64.min(axis=0)))
    np.testing.assert_array_equal(s.xyz, (xyz64 - origin).astype(np.float32))
    assert np.abs(s.xyz.astype(np.float64) + origin - xyz64).max() < 1e-3
    np.testing.assert_array_equal(s.intensity, np.asarray(peer.intensity, np.float32))
    np.testing.assert_array_equal(s.return_index, np.asarray(peer.return_number) - 1)
    np.testing.assert_array_equal(s.extra["classification"], np.asarray(peer.classification))
    np.testing.assert_array_equal(s.extra["gps_time"], peer.gps_time)
    np.testing.assert_array_equal(s.extra["rgb"], np.stack([peer.red, peer.green, peer.blue], axis=1))


def test_las_and_laz_agree_and_origin_keyword(real_data):
    a = read_las(real_data / "las" / "simple.las")
    b = read_las(real_data / "las" / "simple.laz")
    np.testing.assert_array_equal(a.xyz, b.xyz)
    assert a.extra.keys() == b.extra.keys()
    for k in a.extra:
        np.testing.assert_array_equal(a.extra[k], b.extra[k])
    origin = np.array([637000.5, 849000.25, 400.0])
    c = read_las(real_data / "las" / "simple.las", origin=origin)
    peer = laspy.read(real_data / "las" / "simple.las")
    np.testing.assert_array_equal(c.xyz[:, 0], (np.asarray(peer.x) - origin[0]).astype(np.float32))


def test_las_bad_input(real_data, tmp_path):
    raw = (real_data / "las" / "simple.las").read_bytes()
    (tmp_path / "bad.las").write_bytes(b"XXXX" + raw[4:])
    with pytest.raises(FormatError):
        read_las(tmp_path / "bad.las")
    (tmp_path / "short.las").write_bytes(raw[:100])
    with pytest.raises(FormatError):
        read_las(tmp_path / "short.las")


# ---------------------------------------------------------------- Argoverse 2


def test_av2_matches_pyarrow(tmp_path):
    s = sample_sweep(300)
    s = Sweep(xyz=s.xyz, intensity=np.round(s.intensity * 255), ring=s.ring, time_offset_ns=s.time_offset_ns)
    path = tmp_path / "315967376859506000.feather"
    write_av2_sweep(path, s)
    table = feather.read_table(path)
    assert table.schema.field("x").type == pa.float16()
    r = read_points(path)
    assert r.timestamp_ns == 315967376859506000 and r.frame == "ego"
    xyz = np.stack([table["x"].to_numpy(), table["y"].to_numpy(), table["z"].to_numpy()], 1)
    np.testing.assert_array_equal(r.xyz, xyz.astype(np.float32))
    np.testing.assert_array_equal(r.intensity, table["intensity"].to_numpy())
    np.testing.assert_array_equal(r.ring, table["laser_number"].to_numpy())
    np.testing.assert_array_equal(r.time_offset_ns, table["offset_ns"].to_numpy())
    assert np.abs(r.xyz - s.xyz).max() <= 0.05  # float16 storage
    assert r.extra == {}


def test_av2_extra_columns_and_errors(tmp_path):
    table = pa.table({"x": np.float16([1, np.nan]), "y": np.float16([2, 3]), "z": np.float16([3, 4]),
                      "w": np.float16([0.5, 1])})
    feather.write_feather(table, tmp_path / "a.feather")
    r = read_av2_sweep(tmp_path / "a.feather")
    assert r.timestamp_ns == 0 and r.extra["w"].dtype == np.float32 and len(r) == 2
    assert len(read_av2_sweep(tmp_path / "a.feather", drop_nan=True)) == 1
    feather.write_feather(pa.table({"x": [1.0]}), tmp_path / "b.feather")
    with pytest.raises(FormatError, match="columns x, y and z"):
        read_av2_sweep(tmp_path / "b.feather")
    (tmp_path / "c.feather").write_bytes(b"not arrow at all")
    with pytest.raises(FormatError):
        read_av2_sweep(tmp_path / "c.feather")
