"""PCD reader/writer and the LZF codec against pypcd4, open3d and python-lzf, real files and bad input."""

from __future__ import annotations

import struct

import lzf as python_lzf
import numpy as np
import open3d as o3d
import pytest
from pypcd4 import PointCloud

from engine.sweep import Sweep
from formats import lzf
from formats.errors import FormatError
from formats.pcd import read_pcd, read_pcd_header, write_pcd
from formats.registry import read_points

REAL = [
    "pypcd4_ascii.pcd",
    "pypcd4_binary.pcd",
    "pypcd4_binary_compressed.pcd",
    "pypcd4_ascii_organized.pcd",
    "pypcd4_binary_compressed_organized.pcd",
    "pypcd4_ascii_multi_count.pcd",
    "pcl_bunny.pcd",
    "pcl_colored_cloud.pcd",
    "pcl_car6.pcd",
]


def rgb_reference(packed: np.ndarray) -> np.ndarray:
    """Plain NumPy unpacking of 0x00RRGGBB colours (4-byte values of any dtype)."""
    u = np.ascontiguousarray(packed).view(np.uint32).astype(np.int64)
    return np.stack([(u >> 16) & 255, (u >> 8) & 255, u & 255], axis=1)


def pcd_bytes(fields, types, sizes, counts, body: bytes, points: int, width=None, height=1, data="ascii") -> bytes:
    header = (
        f"VERSION 0.7\nFIELDS {' '.join(fields)}\nSIZE {' '.join(map(str, sizes))}\n"
        f"TYPE {' '.join(types)}\nCOUNT {' '.join(map(str, counts))}\nWIDTH {points if width is None else width}\n"
        f"HEIGHT {height}\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {points}\nDATA {data}\n"
    )
    return header.encode() + body


# ---------------------------------------------------------------- real files vs peers


@pytest.mark.parametrize("name", [n for n in REAL if n != "pcl_bunny.pcd"])  # pypcd4 rejects VERSION .5
def test_real_file_matches_pypcd4(real_data, name):
    path = real_data / "pcd" / name
    ours = read_pcd(path)
    peer = PointCloud.from_path(path)
    data = peer.pc_data
    np.testing.assert_array_equal(ours.xyz, np.stack([data["x"], data["y"], data["z"]], axis=1))
    hdr = read_pcd_header(path)
    assert (hdr.width, hdr.height, hdr.points) == (peer.metadata.width, peer.metadata.height, len(ours))
    for field, count in zip(hdr.fields, hdr.counts):
        if field in "xyz":
            continue
        if count > 1:
            expected = np.stack([data[f"{field}__{k:04d}"] for k in range(count)], axis=1)
        else:
            expected = data[field]
        if field == "rgb":
            np.testing.assert_array_equal(ours.extra["rgb"], rgb_reference(expected))
        elif field == "intensity" and count == 1:
            np.testing.assert_array_equal(ours.intensity, expected)
        else:
            np.testing.assert_array_equal(ours.extra[field], expected)
            assert ours.extra[field].dtype == expected.dtype
    if hdr.height > 1:
        idx = np.arange(len(ours))
        np.testing.assert_array_equal(ours.extra["row_col"], np.stack([idx // hdr.width, idx % hdr.width], axis=1))
    else:
        assert "row_col" not in ours.extra


@pytest.mark.parametrize("name", [n for n in REAL if "multi_count" not in n])
def test_real_file_matches_open3d(real_data, name):
    path = real_data / "pcd" / name
    ours = read_pcd(path)
    peer = o3d.io.read_point_cloud(str(path), remove_nan_points=False, remove_infinite_points=False)
    np.testing.assert_array_equal(ours.xyz, np.asarray(peer.points).astype(np.float32))
    if "rgb" in ours.extra:
        np.testing.assert_array_equal(ours.extra["rgb"], np.round(np.asarray(peer.colors) * 255))


def test_bunny_matches_numpy_loadtxt(real_data):
    path = real_data / "pcd" / "pcl_bunny.pcd"
    expected = np.loadtxt(path, skiprows=10, dtype=np.float64).astype(np.float32)
    np.testing.assert_array_equal(read_pcd(path).xyz, expected)


def test_three_encodings_of_one_cloud_agree(real_data):
    sweeps = [read_pcd(real_data / "pcd" / f"pypcd4_{e}.pcd") for e in ("ascii", "binary", "binary_compressed")]
    for s in sweeps[1:]:
        np.testing.assert_array_equal(s.xyz, sweeps[0].xyz)
        np.testing.assert_array_equal(s.extra["rgb"], sweeps[0].extra["rgb"])


def test_organized_ascii_and_compressed_agree(real_data):
    a = read_pcd(real_data / "pcd" / "pypcd4_ascii_organized.pcd")
    b = read_pcd(real_data / "pcd" / "pypcd4_binary_compressed_organized.pcd")
    np.testing.assert_array_equal(a.xyz, b.xyz)
    np.testing.assert_array_equal(a.intensity, b.intensity)
    np.testing.assert_array_equal(a.extra["row_col"], b.extra["row_col"])
    assert a.extra["row_col"].max(axis=0).tolist() == [1, 3]


def test_registry_dispatches_pcd(real_data):
    s = read_points(real_data / "pcd" / "pcl_bunny.pcd")
    assert len(s) == 397


def test_invalid_header_raises_with_offset(real_data):
    path = real_data / "pcd" / "pypcd4_ascii_invalid_header.pcd"
    with pytest.raises(FormatError) as err:
        read_pcd(path)
    raw = path.read_bytes()
    assert err.value.offset == raw.index(b"FIEL")
    assert err.value.path == str(path)
    assert "FIEL" in err.value.expected


# ---------------------------------------------------------------- writer round trips


def rich_sweep(n: int = 300, seed: int = 0) -> Sweep:
    rng = np.random.default_rng(seed)
    xyz = rng.normal(0, 50, (n, 3)).astype(np.float32)
    xyz[5] = np.nan
    return Sweep(
        xyz=xyz,
        intensity=rng.random(n).astype(np.float32),
        time_offset_ns=rng.integers(-(10**12), 10**12, n),
        ring=rng.integers(0, 128, n),
        extra={
            "rgb": rng.integers(0, 256, (n, 3)).astype(np.uint8),
            "normal": rng.normal(size=(n, 3)),  # float64, COUNT 3
            "label": rng.integers(-128, 128, n).astype(np.int8),
            "flags": rng.integers(0, 2**16, n).astype(np.uint16),
            "big": rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True),
            "tiny": (rng.normal(size=n) * 1e-30).astype(np.float32),
        },
    )


def assert_same_sweep(a: Sweep, b: Sweep) -> None:
    np.testing.assert_array_equal(a.xyz, b.xyz)  # NaN == NaN for assert_array_equal
    for name in ("intensity", "time_offset_ns", "ring"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.extra.keys() == b.extra.keys()
    for k in a.extra:
        assert a.extra[k].dtype == b.extra[k].dtype, k
        np.testing.assert_array_equal(a.extra[k], b.extra[k])


@pytest.mark.parametrize("encoding", ["ascii", "binary", "binary_compressed"])
def test_writer_round_trip(tmp_path, encoding):
    sweep = rich_sweep()
    path = tmp_path / f"rt_{encoding}.pcd"
    write_pcd(path, sweep, encoding)
    assert read_pcd_header(path).data == encoding
    assert_same_sweep(read_pcd(path), sweep)
    dropped = read_pcd(path, drop_nan=True)
    assert len(dropped) == len(sweep) - 1
    np.testing.assert_array_equal(dropped.xyz, np.delete(sweep.xyz, 5, axis=0))
    # peers read the same numbers
    peer = PointCloud.from_path(path).pc_data
    np.testing.assert_array_equal(np.stack([peer["x"], peer["y"], peer["z"]], 1), sweep.xyz)
    np.testing.assert_array_equal(peer["intensity"], sweep.intensity)
    np.testing.assert_array_equal(peer["time_offset_ns"], sweep.time_offset_ns)
    np.testing.assert_array_equal(peer["big"], sweep.extra["big"])
    np.testing.assert_array_equal(rgb_reference(peer["rgb"]), sweep.extra["rgb"])
    if encoding == "binary_compressed":
        # PCL keeps a COUNT>1 field's values together per point inside its plane (pypcd4 does
        # not, so it is no reference here): check the plane layout on the raw LZF payload
        raw = path.read_bytes()
        start = read_pcd_header(path).data_offset
        packed, size = struct.unpack_from("<II", raw, start)
        planes = python_lzf.decompress(raw[start + 8 : start + 8 + packed], size)
        n = len(sweep)
        normal_at = n * (4 * 3 + 4 + 8 + 2 + 4)  # after the x, y, z, intensity, time, ring, rgb planes
        np.testing.assert_array_equal(np.frombuffer(planes, "<f8", n * 3, normal_at).reshape(n, 3),
                                      sweep.extra["normal"])
    else:
        np.testing.assert_array_equal(np.stack([peer[f"normal__{k:04d}"] for k in range(3)], 1), sweep.extra["normal"])
    o3d_pc = o3d.io.read_point_cloud(str(path), remove_nan_points=False, remove_infinite_points=False)
    np.testing.assert_array_equal(np.asarray(o3d_pc.points).astype(np.float32), sweep.xyz)
    np.testing.assert_array_equal(np.round(np.asarray(o3d_pc.colors) * 255), sweep.extra["rgb"])


@pytest.mark.parametrize("encoding", ["ascii", "binary", "binary_compressed"])
def test_organized_round_trip(real_data, tmp_path, encoding):
    src = read_pcd(real_data / "pcd" / "pypcd4_ascii_organized.pcd")
    write_pcd(tmp_path / "org.pcd", src, encoding)
    hdr = read_pcd_header(tmp_path / "org.pcd")
    assert (hdr.width, hdr.height) == (4, 2)
    assert_same_sweep(read_pcd(tmp_path / "org.pcd"), src)
    with pytest.raises(ValueError, match="row_col"):
        write_pcd(tmp_path / "bad.pcd", src.select(np.arange(1, 8)), encoding)


def test_empty_sweep_round_trip(tmp_path):
    for encoding in ("ascii", "binary", "binary_compressed"):
        write_pcd(tmp_path / "e.pcd", Sweep(xyz=np.zeros((0, 3))), encoding)
        assert len(read_pcd(tmp_path / "e.pcd")) == 0


def test_organized_nan_drop_keeps_grid_positions(tmp_path):
    xyz = np.arange(18, dtype=np.float32).reshape(6, 3)
    xyz[[1, 4], 2] = np.nan
    body = "".join(" ".join("nan" if np.isnan(v) else repr(float(v)) for v in row) + "\n" for row in xyz).encode()
    (tmp_path / "o.pcd").write_bytes(pcd_bytes("xyz", "FFF", [4] * 3, [1] * 3, body, 6, width=3, height=2))
    kept = read_pcd(tmp_path / "o.pcd")
    assert len(kept) == 6 and np.isnan(kept.xyz[1, 2])
    dropped = read_pcd(tmp_path / "o.pcd", drop_nan=True)
    np.testing.assert_array_equal(dropped.xyz, xyz[[0, 2, 3, 5]])
    np.testing.assert_array_equal(dropped.extra["row_col"], [[0, 0], [0, 2], [1, 0], [1, 2]])


# ---------------------------------------------------------------- ascii number parsing, types, mapping


def test_ascii_tokens_match_python_float(tmp_path):
    tokens = ["0", "-0", "+.5", "1.", "1e-30", "-2.5E+7", "123456789012345678901234", "0.1234567890123456789012",
              "nan", "-inf", "Infinity", "3.4028235e38", "4.9e-324", "1e400", "007.25",
              "2.2250738585072014e-308"]  # fmt: skip
    body = "".join(f"{t} 0 0\n" for t in tokens).encode()
    (tmp_path / "t.pcd").write_bytes(pcd_bytes(["x", "y", "z"], "FFF", [8, 4, 4], [1] * 3, body, len(tokens)))
    hdr = read_pcd_header(tmp_path / "t.pcd")
    assert hdr.sizes == (8, 4, 4)
    with pytest.raises(FormatError, match="pass origin="):  # float32 would move 3.4028235e38 by 3.4e30 m
        read_pcd(tmp_path / "t.pcd")
    s = read_pcd(tmp_path / "t.pcd", origin=np.zeros(3))
    assert s.xyz.dtype == np.float32  # F8 x is narrowed into Sweep.xyz, relative to the origin given
    expected = np.array([float(t) for t in tokens], dtype=np.float64).astype(np.float32)
    np.testing.assert_array_equal(s.xyz[:, 0], expected)


def test_ascii_float64_extra_is_exact(tmp_path):
    rng = np.random.default_rng(3)
    vals = np.concatenate([rng.normal(size=200) * 10.0 ** rng.integers(-40, 40, 200),
                           [np.pi, -1e-310, 1.7976931348623157e308]])
    body = "".join(f"0 0 0 {float(v)!r}\n" for v in vals).encode()
    (tmp_path / "d.pcd").write_bytes(pcd_bytes(["x", "y", "z", "d"], "FFFF", [4, 4, 4, 8], [1] * 4, body, len(vals)))
    np.testing.assert_array_equal(read_pcd(tmp_path / "d.pcd").extra["d"], vals)


@pytest.mark.parametrize("encoding", ["ascii", "binary", "binary_compressed"])
def test_every_type_and_size(tmp_path, encoding):
    rng = np.random.default_rng(1)
    n = 50
    extra = {}
    for dt in ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f4", "f8"]:
        dtype = np.dtype(dt)
        if dtype.kind == "f":
            extra[f"v_{dt}"] = rng.normal(size=(n, 2)).astype(dtype)
        else:
            info = np.iinfo(dtype)
            v = rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
            v[:2] = [info.min, info.max]
            extra[f"v_{dt}"] = v
    sweep = Sweep(xyz=rng.normal(size=(n, 3)), extra=extra)
    write_pcd(tmp_path / "t.pcd", sweep, encoding)
    hdr = read_pcd_header(tmp_path / "t.pcd")
    assert hdr.types[3:] == ("I",) * 4 + ("U",) * 4 + ("F",) * 2
    assert hdr.sizes[3:] == (1, 2, 4, 8) * 2 + (4, 8)
    assert_same_sweep(read_pcd(tmp_path / "t.pcd"), sweep)


def test_time_field_rule(tmp_path):
    body = b"1 2 3 0.05 250000 1700000000.5\n4 5 6 0.1 0 1700000000.6\n"
    fields = ["x", "y", "z", "time", "t", "timestamp"]
    (tmp_path / "a.pcd").write_bytes(pcd_bytes(fields, "FFFFUF", [4, 4, 4, 4, 4, 8], [1] * 6, body, 2))
    s = read_pcd(tmp_path / "a.pcd")
    # float seconds "time" wins (first); integer "t" then stays in extra; "timestamp" never maps
    np.testing.assert_array_equal(s.time_offset_ns, np.round(np.float32([0.05, 0.1]).astype(np.float64) * 1e9))
    np.testing.assert_array_equal(s.extra["t"], [250000, 0])
    np.testing.assert_array_equal(s.extra["timestamp"], [1700000000.5, 1700000000.6])
    (tmp_path / "b.pcd").write_bytes(
        pcd_bytes(["x", "y", "z", "t", "ring"], "FFFUU", [4, 4, 4, 4, 1], [1] * 5, b"1 2 3 250000 7\n", 1))
    s = read_pcd(tmp_path / "b.pcd")
    assert s.time_offset_ns.tolist() == [250000] and s.ring.tolist() == [7]


def test_compressed_padding_fields_left_out_as_pcl_writes(tmp_path):
    n = 4
    x = np.arange(n * 3, dtype="<f4").reshape(3, n)
    planes = x.tobytes() + np.arange(n, dtype="<u2").tobytes()  # x, y, z, ring planes; no "_" plane
    packed = python_lzf.compress(planes, 2 * len(planes) + 16)
    body = struct.pack("<II", len(packed), len(planes)) + packed
    raw = pcd_bytes(["x", "y", "z", "_", "ring"], "FFFUU", [4, 4, 4, 4, 2], [1] * 5, body, n, data="binary_compressed")
    (tmp_path / "p.pcd").write_bytes(raw)
    s = read_pcd(tmp_path / "p.pcd")
    np.testing.assert_array_equal(s.xyz, x.T)
    assert s.ring.tolist() == [0, 1, 2, 3]


def test_padding_fields_and_ascii_packed_rgb_as_integer(tmp_path):
    # PCL writes an F rgb field in ascii as the packed uint32 integer
    body = b"1 2 3 99 16711935\n"
    (tmp_path / "p.pcd").write_bytes(pcd_bytes(["x", "y", "z", "_", "rgb"], "FFFFF", [4] * 5, [1] * 5, body, 1))
    s = read_pcd(tmp_path / "p.pcd")
    assert s.extra.keys() == {"rgb"}
    assert s.extra["rgb"].tolist() == [[255, 0, 255]]


# ---------------------------------------------------------------- bad input


def raises_at(path, offset=None, match=None):
    with pytest.raises(FormatError) as err:
        read_pcd(path)
    assert err.value.path == str(path)
    if offset is not None:
        assert err.value.offset == offset, err.value
    if match is not None:
        assert match in str(err.value), err.value
    return err.value


def test_non_numeric_ascii_names_offset_and_field(tmp_path):
    body = b"1 2 3\n4 five 6\n"
    raw = pcd_bytes("xyz", "FFF", [4] * 3, [1] * 3, body, 2)
    (tmp_path / "a.pcd").write_bytes(raw)
    raises_at(tmp_path / "a.pcd", raw.index(b"five"), "field 'y' (row 1)")


@pytest.mark.parametrize(
    "body, match",
    [
        (b"1 2 3\n4 5\n", "before the end of line"),
        (b"1 2 3\n4 5 6 7\n", "end of line after 3 values"),
        (b"1 2 3\n", "data ends in row 1"),
        (b"1 2 3\n4 5 6\n7 8 9\n", "no data after"),
        (b"1 2 3\n4 5 6x\n", "a number for field 'z'"),
    ],
)
def test_ascii_structure_errors(tmp_path, body, match):
    (tmp_path / "a.pcd").write_bytes(pcd_bytes("xyz", "FFF", [4] * 3, [1] * 3, body, 2))
    raises_at(tmp_path / "a.pcd", match=match)


@pytest.mark.parametrize(
    "types, sizes, body, match",
    [
        ("FFFU", [4, 4, 4, 1], b"1 2 3 300\n", "within the uint8 range (row 0)"),
        ("FFFU", [4, 4, 4, 4], b"1 2 3 -1\n", "a number for field 'a'"),
        ("FFFI", [4, 4, 4, 8], b"1 2 3 9223372036854775808\n", "within the int64 range (row 0)"),
        ("FFFI", [4, 4, 4, 2], b"1 2 3 1.5\n", "a number for field 'a'"),
    ],
)
def test_ascii_integer_errors(tmp_path, types, sizes, body, match):
    (tmp_path / "a.pcd").write_bytes(pcd_bytes(["x", "y", "z", "a"], types, sizes, [1] * 4, body, 1))
    raises_at(tmp_path / "a.pcd", match=match)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda h: h.replace(b"TYPE F F F", b"TYPE F X F"), "TYPE I, U or F for field 'y'"),
        (lambda h: h.replace(b"SIZE 4 4 4", b"SIZE 4 3 4"), "SIZE in (4, 8)"),
        (lambda h: h.replace(b"TYPE F F F", b"TYPE F F U").replace(b"SIZE 4 4 4", b"SIZE 4 4 16"),
         "SIZE in (1, 2, 4, 8)"),
        (lambda h: h.replace(b"POINTS 2", b"POINTS 3"), "POINTS = WIDTH * HEIGHT"),
        (lambda h: h.replace(b"COUNT 1 1 1", b"COUNT 1 1"), "3 COUNT values"),
        (lambda h: h.replace(b"DATA binary", b"DATA zip"), "DATA ascii, binary or binary_compressed"),
        (lambda h: h.replace(b"WIDTH 2", b"WIDTH two"), "integers after WIDTH"),
        (lambda h: h.replace(b"FIELDS x y z", b"FIELDS x y y"), "distinct field names"),
        (lambda h: h[: h.index(b"DATA")], "ends before the DATA line"),
    ],
)
def test_header_errors(tmp_path, edit, match):
    raw = pcd_bytes("xyz", "FFF", [4] * 3, [1] * 3, np.zeros(6, "<f4").tobytes(), 2, data="binary")
    (tmp_path / "h.pcd").write_bytes(edit(raw))
    raises_at(tmp_path / "h.pcd", match=match)


def test_missing_xyz_field(tmp_path):
    (tmp_path / "n.pcd").write_bytes(pcd_bytes(["a", "b"], "FF", [4, 4], [1, 1], b"1 2\n", 1))
    raises_at(tmp_path / "n.pcd", match="fields x, y and z")


@pytest.mark.parametrize("encoding", ["ascii", "binary", "binary_compressed"])
def test_truncated_files_raise(tmp_path, encoding):
    write_pcd(tmp_path / "full.pcd", rich_sweep(100), encoding)
    raw = (tmp_path / "full.pcd").read_bytes()
    start = read_pcd_header(tmp_path / "full.pcd").data_offset
    # cut inside the header-size words / the data, and drop the last value (an ascii cut
    # inside the final number leaves a shorter valid number, which no reader can detect)
    for cut in (start + 3, (start + len(raw)) // 2, raw.rstrip().rindex(b" ")):
        (tmp_path / "cut.pcd").write_bytes(raw[:cut])
        err = raises_at(tmp_path / "cut.pcd")
        assert err.offset is None or err.offset <= cut


def test_compressed_size_mismatch(tmp_path):
    write_pcd(tmp_path / "c.pcd", rich_sweep(20), "binary_compressed")
    raw = bytearray((tmp_path / "c.pcd").read_bytes())
    start = read_pcd_header(tmp_path / "c.pcd").data_offset
    packed, size = struct.unpack_from("<II", raw, start)
    struct.pack_into("<II", raw, start, packed, size + 1)
    (tmp_path / "c.pcd").write_bytes(bytes(raw))
    raises_at(tmp_path / "c.pcd", start + 4, f"found {size + 1}")


def test_corrupt_lzf_never_crashes(real_data, tmp_path):
    """Mutated compressed bytes: a FormatError naming field and offset, or the exact size decoded."""
    src = real_data / "pcd" / "pcl_car6.pcd"
    raw = src.read_bytes()
    start = read_pcd_header(src).data_offset + 8
    good = read_pcd(src)
    rng = np.random.default_rng(0)
    errors = 0
    for trial in range(300):
        buf = bytearray(raw)
        for pos in rng.integers(start, len(raw), 1 + trial % 5):
            buf[pos] = rng.integers(0, 256)
        (tmp_path / "m.pcd").write_bytes(bytes(buf))
        try:
            s = read_pcd(tmp_path / "m.pcd")
        except FormatError as err:
            errors += 1
            assert start <= err.offset <= len(raw) and "decoding field" in err.expected
        else:
            assert len(s) == len(good)
    assert errors > 0


# ---------------------------------------------------------------- LZF codec against python-lzf


@pytest.mark.parametrize("kind", ["random", "repetitive", "floats", "empty", "long_runs"])
def test_lzf_against_python_lzf(kind):
    rng = np.random.default_rng(5)
    data = {
        "random": rng.integers(0, 256, 5000).astype(np.uint8).tobytes(),
        "repetitive": b"abcdefgh" * 2000 + b"xyz",
        "floats": np.round(rng.normal(size=4000), 2).astype(np.float32).tobytes(),
        "empty": b"",
        "long_runs": b"\x00" * 70000 + b"\x01" * 300 + bytes(range(256)) * 40,
    }[kind]
    ours = lzf.compress(data)
    assert python_lzf.decompress(ours, len(data) + 1) == data if data else ours == b""
    assert len(ours) <= lzf.max_compressed_size(len(data))
    if data:
        peer = python_lzf.compress(data, lzf.max_compressed_size(len(data)))
        out, status, _, _ = lzf.decompress(peer, len(data))
        assert status == lzf.OK and out.tobytes() == data


def test_lzf_decoder_status_codes():
    data = b"hello hello hello hello"
    packed = lzf.compress(data)
    assert lzf.decompress(packed, len(data) - 1)[1] == lzf.OUTPUT_OVERFLOW
    assert lzf.decompress(packed, len(data) + 1)[1] == lzf.SHORT_OUTPUT
    assert lzf.decompress(packed[:-1], len(data))[1] == lzf.TRUNCATED_INPUT
    # a back reference at output position 0 points before the start
    _, status, in_off, out_off = lzf.decompress(bytes([0x20, 0x05]), 3)
    assert (status, in_off, out_off) == (lzf.BAD_REFERENCE, 0, 0)
    zeros = bytes(100_000)
    packed = lzf.compress(zeros)  # the best LZF does: 264 bytes per 3-byte back reference
    assert len(zeros) <= lzf.max_decompressed_size(len(packed)) < len(zeros) * 1.01
    assert lzf.decompress(packed, lzf.max_decompressed_size(len(packed)) + 1)[:2][1] == lzf.TOO_LARGE


# ---------------------------------------------------------------- ascii parsed in parallel chunks


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of ~512 bytes, so a few thousand rows make dozens of chunks."""
    from formats import ascii_numbers

    monkeypatch.setattr(ascii_numbers, "CHUNK_BYTES", 512)


def _multi_chunk_body(n: int, end: str = "\n") -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    xyz = np.round(rng.uniform(-80, 80, (n, 3)), 3)
    xyz[::97, 0] = rng.normal(size=len(xyz[::97])) * 1e-30  # exponents, the slow path
    ints = np.stack([rng.integers(-(2**31), 2**31, n), rng.integers(0, 2**16, n)], axis=1)
    body = "".join(f"{x!r} {y!r} {z!r} {a} {b}{end}" for (x, y, z), (a, b) in zip(xyz.tolist(), ints.tolist()))
    return body.encode(), xyz, ints


@pytest.mark.parametrize("end", ["\n", "\r\n"])
def test_ascii_many_chunks_match_numpy_and_peers(tmp_path, small_chunks, end):
    n = 5000
    body, xyz, ints = _multi_chunk_body(n, end)
    path = tmp_path / "m.pcd"
    path.write_bytes(pcd_bytes(["x", "y", "z", "a", "ring"], "FFFIU", [8, 8, 8, 4, 2], [1] * 5, body, n))
    s = read_pcd(path)
    np.testing.assert_array_equal(s.xyz, xyz.astype(np.float32))
    np.testing.assert_array_equal(s.extra["a"], ints[:, 0])
    np.testing.assert_array_equal(s.ring, ints[:, 1])
    peer = PointCloud.from_path(path).pc_data
    np.testing.assert_array_equal(s.extra["a"], peer["a"])
    np.testing.assert_array_equal(s.xyz, np.stack([peer["x"], peer["y"], peer["z"]], axis=1).astype(np.float32))
    np.testing.assert_allclose(s.xyz, np.asarray(o3d.io.read_point_cloud(str(path)).points), rtol=1e-7, atol=0)


def test_ascii_blank_lines_between_rows_in_many_chunks(tmp_path, small_chunks):
    n = 3000
    body, xyz, ints = _multi_chunk_body(n, " \t\n")  # trailing blanks too
    lines = body.split(b"\n")
    lines[700:700] = [b"", b"   ", b"\t"]  # blank lines shift every later row's line number
    path = tmp_path / "b.pcd"
    path.write_bytes(pcd_bytes(["x", "y", "z", "a", "ring"], "FFFIU", [8, 8, 8, 4, 2], [1] * 5, b"\n".join(lines), n))
    s = read_pcd(path)
    np.testing.assert_array_equal(s.xyz, xyz.astype(np.float32))
    np.testing.assert_array_equal(s.ring, ints[:, 1])


def _with_bad_rows(body: bytes, rows: list[int]) -> tuple[bytes, list[int]]:
    """Replace the y token of ``rows`` by ``bad``; returns the body and each bad token's offset in it."""
    lines = body.split(b"\n")
    for r in rows:
        x, _, rest = lines[r].split(b" ", 2)
        lines[r] = x + b" bad " + rest
    out = b"\n".join(lines)
    starts = np.cumsum([0] + [len(line) + 1 for line in lines])
    return out, [int(starts[r]) + lines[r].index(b"bad") for r in rows]


@pytest.mark.parametrize("bad_rows", [[40, 4000], [4000], [4999]])
def test_ascii_earliest_error_across_chunks(tmp_path, small_chunks, bad_rows):
    n = 5000
    body, _, _ = _multi_chunk_body(n)
    body, offsets = _with_bad_rows(body, bad_rows)
    raw = pcd_bytes(["x", "y", "z", "a", "ring"], "FFFIU", [8, 8, 8, 4, 2], [1] * 5, body, n)
    (tmp_path / "e.pcd").write_bytes(raw)
    header = len(raw) - len(body)
    raises_at(tmp_path / "e.pcd", header + offsets[0], f"field 'y' (row {bad_rows[0]}), found b'bad'")


@pytest.mark.parametrize("declared, match", [(4999, "no data after the 4999 declared rows"),
                                             (5001, "the data ends in row 5000")])  # fmt: skip
def test_ascii_row_count_mismatch_across_chunks(tmp_path, small_chunks, declared, match):
    body, _, _ = _multi_chunk_body(5000)
    raw = pcd_bytes(["x", "y", "z", "a", "ring"], "FFFIU", [8, 8, 8, 4, 2], [1] * 5, body, declared)
    (tmp_path / "c.pcd").write_bytes(raw)
    header = len(raw) - len(body)
    last_row = header + body.rstrip().rindex(b"\n") + 1
    raises_at(tmp_path / "c.pcd", last_row if declared < 5000 else len(raw), match)


# ---------------------------------------------------------------- the number scanner against Python


def _random_decimals(rng: np.random.Generator, n: int) -> list[str]:
    """Decimal tokens of every shape: signs, leading zeros, 0-20 integer and fraction digits,
    exponents, 17-significant-digit doubles, float32 ``%.9g``, and the fast path's edges."""
    digits = np.array(list("0123456789"))
    tokens = []
    for _ in range(n):
        n_int, n_frac = int(rng.integers(0, 21)), int(rng.integers(-1, 21))  # -1: no point
        if n_int == 0 and n_frac <= 0:
            n_int = 1
        s = str(rng.choice(["", "-", "+"])) + "0" * int(rng.integers(0, 4)) * (rng.random() < 0.2)
        s += "".join(rng.choice(digits, n_int)) + ("" if n_frac < 0 else "." + "".join(rng.choice(digits, n_frac)))
        if rng.random() < 0.3:
            s += str(rng.choice(["e", "E"])) + str(rng.choice(["", "-", "+"])) + str(rng.integers(0, 400))
        tokens.append(s)
    doubles = rng.normal(size=n // 4) * 10.0 ** rng.integers(-30, 30, n // 4)
    tokens += [repr(x) for x in doubles.tolist()]
    tokens += ["%.9g" % x for x in doubles.astype(np.float32).tolist()]
    tokens += ["0", "-0", "+0.0", "0.0e999", "1e-400", "1e400", ".5", "5.", "-.5e1", "9007199254740992",
               "9007199254740993", "1e22", "1e23", "1e-22", "1e-23", "0.000000000000000000000000001",
               "123456789012345678901234567890", "00000000000000000000001.5", "1" * 19, "1" * 20,
               "18446744073709551616", "4.9406564584124654e-324", "1.7976931348623157e308",
               "nan", "-NaN", "inf", "-Infinity", "+inf"]  # fmt: skip
    return tokens


@pytest.mark.parametrize("parallel", [False, True])
def test_ascii_scanner_matches_python_float(small_chunks, parallel):
    """Every value bit-equal to Python's correctly rounded ``float`` (then rounded to float32)."""
    from formats import ascii_numbers as an

    tokens = _random_decimals(np.random.default_rng(5), 8000)
    tokens += ["1"] * (-len(tokens) % 3)
    rows = [" ".join(tokens[k : k + 3]) for k in range(0, len(tokens), 3)]
    buf = np.frombuffer(("\n".join(rows) + "\n").encode(), dtype=np.uint8)
    dtypes = [np.float64, np.float32, np.float64]
    cols, _ = an.parse_columns("<t>", buf, 0, len(rows), np.array([an.FLOAT] * 3), dtypes, ["a", "b", "c"],
                               parallel, parallel)
    expected = np.array([float(t) for t in tokens]).reshape(-1, 3)
    for c, dt in enumerate(dtypes):
        with np.errstate(over="ignore"):
            want = expected[:, c].astype(dt)
        nan = np.isnan(want)
        assert np.isnan(cols[c][nan]).all()
        np.testing.assert_array_equal(cols[c][~nan].view(f"u{want.itemsize}"), want[~nan].view(f"u{want.itemsize}"))


@pytest.mark.parametrize("dtype", ["i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8"])
def test_ascii_integers_match_python_int(dtype):
    """Random integers (signs, leading zeros, the dtype's limits) exact; one past a limit names the dtype."""
    from formats import ascii_numbers as an

    info = np.iinfo(dtype)
    rng = np.random.default_rng(6)
    values = [int(v) for v in rng.integers(info.min, info.max, 500, dtype=dtype, endpoint=True)]
    values += [info.min, info.max, 0]
    tokens = [("+" if v >= 0 and rng.random() < 0.2 else "") + ("-" if v < 0 else "")
              + "0" * int(rng.integers(0, 25)) * (rng.random() < 0.2) + str(abs(v)) for v in values]
    kind = an.INT if info.min < 0 else an.UINT
    buf = np.frombuffer((" \n".join(tokens) + "\n").encode(), dtype=np.uint8)
    (col,), _ = an.parse_columns("<t>", buf, 0, len(tokens), np.array([kind]), [np.dtype(dtype)], ["a"], True, True)
    assert col.dtype == np.dtype(dtype)
    assert col.tolist() == values
    for bad in (info.max + 1, info.min - 1):
        if bad < 0 and kind == an.UINT:
            continue
        text = f"1\n{bad}\n".encode()
        with pytest.raises(FormatError, match=f"field 'a' within the {np.dtype(dtype)} range \\(row 1\\)") as err:
            an.parse_columns("<t>", np.frombuffer(text, dtype=np.uint8), 0, 2, np.array([kind]), [np.dtype(dtype)],
                             ["a"], True, True)
        assert err.value.offset == 2
