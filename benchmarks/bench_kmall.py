"""KMALL decode throughput (soundings/s): Fathom vs the plain-Python ``kmall`` reader
(PyPI ``pykmall``), vs a per-sounding ``struct.unpack`` loop, and vs a NumPy ``frombuffer``
read of the same sounding bytes with the datagram offsets known in advance (the limit).

The log is written by :func:`formats.kmall.write_kmall`: 400 pings × 512 soundings
(EM 2040-like, 120-byte soundings, ~25 MB) plus 100 Hz ``#SKM`` attitude.

Same start on both sides of each group:

- ``kmall_vs_pykmall``: both from the file path (the file is in the OS page cache). Fathom:
  :func:`read_kmall` (reads the file, indexes and decodes every datagram: all sounding and
  ping columns, attitude). pykmall: ``kmall(path)``, ``index_file()`` (its datagram index),
  then ``read_EMdgmMRZ()`` at each ``#MRZ`` offset, the soundings' columns gathered (pykmall
  reads from an open file only, not from bytes). The sounding columns are asserted equal.
- ``kmall_vs_struct_loop`` and ``kmall_vs_frombuffer_limit``: both from the file's bytes in
  memory (Fathom: :func:`read_kmall` on ``bytes``), their columns asserted equal to Fathom's.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from formats.kmall import MrzPings, SkmSamples, _sounding_dtype, read_kmall, write_kmall

PINGS, BEAMS = 400, 512
N = PINGS * BEAMS
FIELDS = ("x_m", "y_m", "z_m", "beam_angle_deg", "two_way_travel_time_s", "reflectivity_db", "quality_factor",
          "delta_latitude_deg", "delta_longitude_deg", "detection_type", "detection_method", "sounding_index",
          "tx_sector")


@pytest.fixture(scope="module")
def log_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    t = 1_700_000_000_000_000_000 + np.arange(PINGS, dtype=np.int64) * 250_000_000
    f32 = lambda *a: rng.uniform(*a, N).astype(np.float32)
    pings = MrzPings(
        time_ns=t, ping_counter=np.arange(PINGS), rx_fan_index=np.zeros(PINGS), heading_deg=np.full(PINGS, 42.0),
        sound_speed_m_s=np.full(PINGS, 1500.0), tx_transducer_depth_m=np.ones(PINGS),
        z_water_level_m=np.full(PINGS, 0.5), latitude_deg=np.linspace(51.0, 51.01, PINGS),
        longitude_deg=np.full(PINGS, 3.0), ellipsoid_height_m=np.full(PINGS, 45.0),
        sounding_start=np.arange(PINGS + 1) * BEAMS, x_m=f32(-1, 1), y_m=f32(-100, 100), z_m=f32(20, 60),
        beam_angle_deg=f32(-70, 70), two_way_travel_time_s=f32(0.02, 0.2), reflectivity_db=f32(-50, -10),
        quality_factor=f32(0, 1), delta_latitude_deg=f32(-1e-3, 1e-3), delta_longitude_deg=f32(-1e-3, 1e-3),
        detection_type=rng.integers(0, 3, N), detection_method=np.ones(N),
        sounding_index=np.tile(np.arange(BEAMS), PINGS), tx_sector=np.zeros(N),
    )
    k = int((t[-1] - t[0]) / 10_000_000) + 1
    ts = t[0] + np.arange(k, dtype=np.int64) * 10_000_000
    att = SkmSamples(time_ns=ts, status=np.zeros(k), latitude_deg=np.full(k, 51.0), longitude_deg=np.full(k, 3.0),
                     ellipsoid_height_m=np.zeros(k), roll_deg=np.zeros(k), pitch_deg=np.zeros(k),
                     heading_deg=np.zeros(k), heave_m=np.zeros(k), delayed_heave_time_ns=ts,
                     delayed_heave_m=np.zeros(k))
    path = tmp_path_factory.mktemp("kmall") / "bench.kmall"
    write_kmall(path, pings, att)
    return path, path.read_bytes()


def _sounding_blocks(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, count, bytes per sounding) of each #MRZ sounding block (plain struct walk)."""
    out, o = [], 0
    while o < len(data):
        n, t = struct.unpack_from("<I4s", data, o)
        if t == b"#MRZ":
            c = o + 24
            p = c + struct.unpack_from("<H", data, c)[0]
            ninfo = struct.unpack_from("<H", data, p)[0]
            ntx, per_tx = struct.unpack_from("<2H", data, p + 92)
            r = p + ninfo + ntx * per_tx
            nrx, n_main, _, per = struct.unpack_from("<4H", data, r)
            n_extra, n_cls, per_cls = struct.unpack_from("<3H", data, r + 26)
            out.append((r + nrx + n_cls * per_cls, n_main + n_extra, per))
        o += n
    return out


def struct_loop(data: bytes) -> dict[str, list]:
    """Per-sounding struct.unpack into column lists (what a plain-Python reader does)."""
    cols: dict[str, list] = {k: [] for k in ("z", "y", "x", "angle", "twt", "det")}
    fmt = struct.Struct("<1H8B1H6f2H18f4H")
    for start, count, per in _sounding_blocks(data):
        for k in range(count):
            f = fmt.unpack_from(data, start + k * per)
            cols["det"].append(f[2])
            cols["angle"].append(f[26])
            cols["twt"].append(f[28])
            cols["z"].append(f[32])
            cols["y"].append(f[33])
            cols["x"].append(f[34])
    return cols


def frombuffer_limit(data: bytes, blocks) -> dict[str, np.ndarray]:
    """The same 13 sounding columns read through zero-copy ``np.frombuffer`` views of the
    sounding blocks, offsets known in advance: no datagram walk, no header decoding."""
    views = [np.frombuffer(data, np.uint8, count * per, start).reshape(count, per)[:, :120]
             for start, count, per in blocks]
    rec = np.concatenate(views).view(_sounding_dtype(120)).reshape(-1)
    return {name: rec[name].astype(rec.dtype[name].newbyteorder("=")) for name in FIELDS}


# pykmall's sounding keys for Fathom's columns
PYKMALL_FIELDS = {"z_m": "z_reRefPoint_m", "y_m": "y_reRefPoint_m", "x_m": "x_reRefPoint_m",
                  "beam_angle_deg": "beamAngleReRx_deg", "two_way_travel_time_s": "twoWayTravelTime_sec",
                  "reflectivity_db": "reflectivity1_dB", "quality_factor": "qualityFactor",
                  "delta_latitude_deg": "deltaLatitude_deg", "delta_longitude_deg": "deltaLongitude_deg",
                  "detection_type": "detectionType", "detection_method": "detectionMethod",
                  "sounding_index": "soundingIndex", "tx_sector": "txSectorNumb"}


@pytest.mark.parametrize("group", ["kmall_vs_pykmall", "kmall_vs_struct_loop", "kmall_vs_frombuffer_limit"])
def test_fathom_read_kmall(benchmark, log_file, group):
    path, data = log_file
    benchmark.group = group
    benchmark.extra_info.update(role="fathom", items=N, unit="soundings")
    source = path if group == "kmall_vs_pykmall" else data
    log = benchmark.pedantic(read_kmall, args=(source,), rounds=20, warmup_rounds=1)
    assert log.pings.num_soundings == N


def pykmall_soundings(path) -> dict[str, list]:
    """pykmall from the path: index the file, decode every ``#MRZ``, gather its soundings'
    columns (pykmall's names)."""
    from KMALL.kmall import kmall

    k = kmall(str(path))
    k.index_file()
    offsets = k.Index[k.Index["MessageType"] == "b'#MRZ'"]["ByteOffset"].to_numpy()
    cols: dict[str, list] = {name: [] for name in PYKMALL_FIELDS.values()}
    for o in offsets:
        k.FID.seek(int(o))
        sounding = k.read_EMdgmMRZ()["sounding"]
        for name, column in cols.items():
            column.extend(sounding[name])
    k.closeFile()
    return cols


def test_pykmall(benchmark, log_file):
    pytest.importorskip("KMALL.kmall")
    path, _ = log_file
    benchmark.group = "kmall_vs_pykmall"
    benchmark.extra_info.update(role="peer", items=N, unit="soundings")
    cols = benchmark.pedantic(pykmall_soundings, args=(path,), rounds=3, warmup_rounds=0)
    pings = read_kmall(path).pings
    for ours, theirs in PYKMALL_FIELDS.items():
        column = getattr(pings, ours)
        np.testing.assert_array_equal(np.asarray(cols[theirs], column.dtype), column, err_msg=ours)


def test_struct_loop(benchmark, log_file):
    _, data = log_file
    benchmark.group = "kmall_vs_struct_loop"
    benchmark.extra_info.update(role="peer", items=N, unit="soundings")
    cols = benchmark.pedantic(struct_loop, args=(data,), rounds=3, warmup_rounds=0)
    pings = read_kmall(data).pings
    for ours, theirs in (("z_m", "z"), ("y_m", "y"), ("x_m", "x"), ("beam_angle_deg", "angle"),
                         ("two_way_travel_time_s", "twt"), ("detection_type", "det")):
        column = getattr(pings, ours)
        np.testing.assert_array_equal(np.asarray(cols[theirs], column.dtype), column, err_msg=ours)


def test_frombuffer_limit(benchmark, log_file):
    _, data = log_file
    blocks = _sounding_blocks(data)
    benchmark.group = "kmall_vs_frombuffer_limit"
    benchmark.extra_info.update(role="peer", items=N, unit="soundings")
    out = benchmark.pedantic(frombuffer_limit, args=(data, blocks), rounds=20, warmup_rounds=1)
    pings = read_kmall(data).pings
    for name in FIELDS:
        np.testing.assert_array_equal(out[name], getattr(pings, name), err_msg=name)
