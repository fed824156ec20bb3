"""Water column and GSF decode throughput: Fathom vs the reader a user would otherwise pick,
and vs a NumPy read with every offset known in advance (the limit).

Inputs, built once from the real files of ``tests/data/sonar``:

- water column: the 6 ``#MWC`` datagrams of ``em_os03_a.kmwcd`` (EM 2042, 256 beams, 2.1 M
  samples with their beam headers) repeated ``WC_REPEAT`` times: a ``.kmwcd`` file of
  ``6 × WC_REPEAT`` pings.
- GSF: the header and the 8 swath pings (432 beams, scale factors in the first) of
  ``gsf3_08_test_file.gsf`` repeated ``GSF_REPEAT`` times.

Groups (both sides start from the same input, outputs asserted equal):

- ``water_column_decode_vs_pykmall`` (goal ≥ 10×): Fathom :func:`read_kmall_water_column`
  on the path → ``amplitude (S,) int8`` plus per-beam angle, tilt, first sample, detected
  range, sector. pykmall (pure Python): ``index_file()`` then ``read_EMdgmMWC()`` at each
  offset → per beam a tuple of amplitudes and the beam fields. Samples asserted equal.
- ``water_column_decode_vs_frombuffer_limit`` (goal: within 2×, ratio ≥ 0.5): the same
  Fathom call on the bytes vs one ``np.frombuffer(...)[mask]`` with the byte mask of every
  sample precomputed (no walking, no headers): ``amplitude (S,) int8``.
- ``water_column_points_vs_pykmall_numpy`` (goal ≥ 10×): decode + threshold (−30 dB) +
  vessel-frame points (acoustic origin at the reference point). Fathom: the decode,
  :func:`select_samples`, :func:`sample_points` → ``(M, 3) float64``; peer: pykmall's decode
  then NumPy per ping (mask, ranges, angles) → the same ``(M, 3) float64`` (asserted equal
  to 1e-9 m).
- ``gsf_decode_vs_gsfpy`` (libgsf through ctypes: a C peer, the ratio is reported without a
  goal): Fathom :func:`read_gsf` on the path → depth, across, along, travel time, beam angle
  ``float64`` and beam flags ``uint8`` per beam; gsfpy3_08 ``open_gsf`` + ``read()`` per
  record, the same six arrays copied out of each ping (``np.ctypeslib.as_array``). Equal.
- ``gsf_decode_vs_frombuffer_limit`` (ratio ≥ 0.5): Fathom on the bytes vs NumPy with every
  ping's array offsets, widths and scale factors precomputed: one ``np.frombuffer`` and one
  scaling per array and ping → the same six arrays. Equal.

The machine is shared: figures are indicative.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from engine.water_column import sample_points, select_samples
from formats.gsf import read_gsf
from formats.water_column_kmall import read_kmall_water_column

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "sonar"
WC_REPEAT, GSF_REPEAT = 20, 250
THRESHOLD_DB = -30.0
GSF_ARRAYS = {1: "depth_m", 2: "across_track_m", 3: "along_track_m", 4: "travel_time_s", 5: "beam_angle_deg"}
GSFPY_ARRAYS = {"depth_m": "depth", "across_track_m": "across_track", "along_track_m": "along_track",
                "travel_time_s": "travel_time", "beam_angle_deg": "beam_angle"}


def _kmall_datagrams(data: bytes, want: bytes) -> list[bytes]:
    out, o = [], 0
    while o < len(data):
        n, t = struct.unpack_from("<I4s", data, o)
        if t == want:
            out.append(data[o: o + n])
        o += n
    return out


@pytest.fixture(scope="module")
def wc_file(tmp_path_factory):
    dgms = _kmall_datagrams((DATA / "em_os03_a.kmwcd").read_bytes(), b"#MWC")
    data = b"".join(dgms) * WC_REPEAT
    path = tmp_path_factory.mktemp("wc") / "bench.kmwcd"
    path.write_bytes(data)
    return path, data, read_kmall_water_column(data)


def _sample_mask(data: bytes) -> np.ndarray:
    """Byte mask of every amplitude sample (plain struct walk of the #MWC layout)."""
    mask = np.zeros(len(data), bool)
    o = 0
    while o < len(data):
        n = struct.unpack_from("<I", data, o)[0]
        t = o + 24 + struct.unpack_from("<H", data, o + 24)[0]
        ntx_b, ntx, per_tx = struct.unpack_from("<3H", data, t)
        r = t + ntx_b + ntx * per_tx
        nrx_b, nbeams, per_beam, phase = struct.unpack_from("<2HBB", data, r)
        b = r + nrx_b
        for _ in range(nbeams):
            ns = struct.unpack_from("<H", data, b + 10)[0]
            mask[b + per_beam: b + per_beam + ns] = True
            b += per_beam + ns * (1 + phase)
        o += n
    return mask


def pykmall_water_column(path) -> list[dict]:
    """pykmall: index the file, decode every #MWC (pure Python, per beam)."""
    from KMALL.kmall import kmall

    k = kmall(str(path))
    k.index_file()
    offsets = k.Index[k.Index["MessageType"] == "b'#MWC'"]["ByteOffset"].to_numpy()
    out = []
    for o in offsets:
        k.FID.seek(int(o))
        out.append(k.read_EMdgmMWC())
    k.closeFile()
    return out


def fathom_points(source) -> np.ndarray:
    wc = read_kmall_water_column(source)
    sel = select_samples(wc.amplitude, wc.ping_sample_start, THRESHOLD_DB / 0.5)
    xyz, _ = sample_points(sel, wc.sample_start, wc.beam_start, wc.start_sample, wc.beam_angle_deg, wc.tilt_deg,
                           wc.metres_per_sample, np.zeros((wc.num_pings, 3)))
    return xyz


def pykmall_numpy_points(path) -> np.ndarray:
    """pykmall's decode, then the same geometry in NumPy, ping by ping."""
    out = []
    for dg in pykmall_water_column(path):
        beams = dg["beamData"]
        rx = dg["rxInfo"]
        sound_speed = np.float64(np.float32(rx["soundVelocity_mPerSec"]))
        scale = sound_speed / (2.0 * np.float64(np.float32(rx["sampleFreq_Hz"])))
        tilt_of = dict(zip(dg["sectorData"]["txSectorNum"], dg["sectorData"]["tiltAngleReTx_deg"]))
        counts = np.asarray(beams["numSampleData"])
        amp = np.concatenate([np.asarray(a, np.int8) for a in beams["sampleAmplitude05dB_p"]])
        beam = np.repeat(np.arange(len(counts)), counts)
        index = np.arange(len(amp)) - np.repeat(np.cumsum(counts) - counts, counts)
        keep = amp >= THRESHOLD_DB / 0.5
        b, i = beam[keep], index[keep]
        r = (np.asarray(beams["startRangeSampleNum"], np.float64)[b] + i) * scale
        th = np.radians(np.float32(beams["beamPointAngReVertical_deg"]).astype(np.float64))[b]
        ta = np.radians(np.float32([tilt_of[s] for s in beams["beamTxSectorNum"]]).astype(np.float64))[b]
        out.append(np.stack([r * np.sin(ta), -r * np.sin(th) * np.cos(ta), r * np.cos(th) * np.cos(ta)], axis=1))
    return np.concatenate(out)


@pytest.mark.parametrize("group", ["water_column_decode_vs_pykmall", "water_column_decode_vs_frombuffer_limit"])
def test_fathom_water_column_decode(benchmark, wc_file, group):
    path, data, wc = wc_file
    benchmark.group = group
    benchmark.extra_info.update(role="fathom", goal=10 if "pykmall" in group else 0.5, items=len(wc.amplitude),
                                unit="samples")
    out = benchmark.pedantic(read_kmall_water_column, args=(path if "pykmall" in group else data,), rounds=10,
                             warmup_rounds=1)
    np.testing.assert_array_equal(out.amplitude, wc.amplitude)


def test_pykmall_water_column(benchmark, wc_file):
    pytest.importorskip("KMALL.kmall")
    path, _, wc = wc_file
    benchmark.group = "water_column_decode_vs_pykmall"
    benchmark.extra_info.update(role="peer", items=len(wc.amplitude), unit="samples")
    dgms = benchmark.pedantic(pykmall_water_column, args=(path,), rounds=1, warmup_rounds=0)
    amp = np.concatenate([np.asarray(a, np.int8) for dg in dgms for a in dg["beamData"]["sampleAmplitude05dB_p"]])
    np.testing.assert_array_equal(amp, wc.amplitude)
    angles = np.concatenate([np.float32(dg["beamData"]["beamPointAngReVertical_deg"]) for dg in dgms])
    np.testing.assert_array_equal(angles, wc.beam_angle_deg)


def test_water_column_frombuffer_limit(benchmark, wc_file):
    _, data, wc = wc_file
    mask = _sample_mask(data)
    raw = np.frombuffer(data, np.int8)
    benchmark.group = "water_column_decode_vs_frombuffer_limit"
    benchmark.extra_info.update(role="peer", items=len(wc.amplitude), unit="samples")
    out = benchmark.pedantic(lambda: raw[mask], rounds=10, warmup_rounds=1)
    np.testing.assert_array_equal(out, wc.amplitude)


def test_fathom_water_column_points(benchmark, wc_file):
    path, _, wc = wc_file
    benchmark.group = "water_column_points_vs_pykmall_numpy"
    benchmark.extra_info.update(role="fathom", goal=10, items=len(wc.amplitude), unit="samples")
    xyz = benchmark.pedantic(fathom_points, args=(path,), rounds=10, warmup_rounds=1)
    assert len(xyz) > 0


def test_pykmall_numpy_water_column_points(benchmark, wc_file):
    pytest.importorskip("KMALL.kmall")
    path, _, wc = wc_file
    benchmark.group = "water_column_points_vs_pykmall_numpy"
    benchmark.extra_info.update(role="peer", items=len(wc.amplitude), unit="samples")
    xyz = benchmark.pedantic(pykmall_numpy_points, args=(path,), rounds=1, warmup_rounds=0)
    np.testing.assert_allclose(xyz, fathom_points(path), rtol=0, atol=1e-9)


@pytest.fixture(scope="module")
def gsf_file(tmp_path_factory):
    data = (DATA / "gsf3_08_test_file.gsf").read_bytes()
    records, o = [], 0
    while o < len(data):
        size, rid = struct.unpack_from(">II", data, o)
        end = o + 8 + (4 if rid >> 31 else 0) + size
        records.append(((rid & 0x3FFFFF), data[o:end]))
        o = end
    header = [r for t, r in records if t == 1]
    pings = [r for t, r in records if t == 2]
    blob = b"".join(header) + b"".join(pings) * GSF_REPEAT
    path = tmp_path_factory.mktemp("gsf") / "bench.gsf"
    path.write_bytes(blob)
    return path, blob, read_gsf(blob)


def _gsf_plan(data: bytes) -> list[tuple[str, int, str, float, float]]:
    """(column, offset, dtype, multiplier, offset) of every decoded array of every ping."""
    plan, scale, o = [], {}, 0
    while o < len(data):
        size, rid = struct.unpack_from(">II", data, o)
        d = o + 8 + (4 if rid >> 31 else 0)
        if rid & 0x3FFFFF == 2:
            n = struct.unpack_from(">H", data, d + 16)[0]
            q = d + 56
            while d + size - q > 4:
                word = struct.unpack_from(">I", data, q)[0]
                sid, ss = word >> 24, word & 0xFFFFFF
                if sid == 100:
                    for k in range(struct.unpack_from(">I", data, q + 4)[0]):
                        a, m, off = struct.unpack_from(">IIi", data, q + 8 + 12 * k)
                        scale[a >> 24] = (m, off)
                elif sid in GSF_ARRAYS:
                    kind = ("i" if sid in (2, 3, 5) else "u") + str(ss // n)
                    plan.append((GSF_ARRAYS[sid], q + 4, ">" + kind, n, *scale[sid]))
                elif sid == 16:
                    plan.append(("beam_flags", q + 4, "u1", n, 1.0, 0.0))
                q += 4 + ss
        o = d + size
    return plan


def frombuffer_gsf(data: bytes, plan) -> dict[str, np.ndarray]:
    cols: dict[str, list] = {}
    for name, at, dtype, n, mult, off in plan:
        raw = np.frombuffer(data, dtype, n, at)
        cols.setdefault(name, []).append(raw if name == "beam_flags" else raw / mult - off)
    return {k: np.concatenate(v) for k, v in cols.items()}


def gsfpy_arrays(path) -> dict[str, np.ndarray]:
    """libgsf via gsfpy: read every record, copy the six arrays out of each ping."""
    from gsfpy3_08 import open_gsf
    from gsfpy3_08.enums import RecordType

    cols: dict[str, list] = {k: [] for k in (*GSFPY_ARRAYS, "beam_flags")}
    with open_gsf(str(path)) as f:
        while len(cols["beam_flags"]) < 8 * GSF_REPEAT:
            rid, rec = f.read()
            if rid.recordID != RecordType.GSF_RECORD_SWATH_BATHYMETRY_PING:
                continue
            p = rec.mb_ping
            n = p.number_beams
            for ours, theirs in GSFPY_ARRAYS.items():
                cols[ours].append(np.ctypeslib.as_array(getattr(p, theirs), (n,)).copy())
            cols["beam_flags"].append(np.ctypeslib.as_array(p.beam_flags, (n,)).copy())
    return {k: np.concatenate(v) for k, v in cols.items()}


@pytest.mark.parametrize("group", ["gsf_decode_vs_gsfpy", "gsf_decode_vs_frombuffer_limit"])
def test_fathom_read_gsf(benchmark, gsf_file, group):
    path, data, ref = gsf_file
    n = int(ref.start[-1])
    benchmark.group = group
    info = {"role": "fathom", "items": n, "unit": "soundings"}
    if "limit" in group:
        info["goal"] = 0.5
    benchmark.extra_info.update(info)
    g = benchmark.pedantic(read_gsf, args=(path if "gsfpy" in group else data,), rounds=10, warmup_rounds=1)
    assert int(g.start[-1]) == n


def test_gsfpy(benchmark, gsf_file):
    pytest.importorskip("gsfpy3_08")
    path, _, ref = gsf_file
    benchmark.group = "gsf_decode_vs_gsfpy"
    benchmark.extra_info.update(role="peer", items=int(ref.start[-1]), unit="soundings")
    cols = benchmark.pedantic(gsfpy_arrays, args=(path,), rounds=3, warmup_rounds=0)
    for name, col in cols.items():
        np.testing.assert_allclose(col, ref.beam[name], rtol=0, atol=1e-9, err_msg=name)


def test_gsf_frombuffer_limit(benchmark, gsf_file):
    _, data, ref = gsf_file
    plan = _gsf_plan(data)
    benchmark.group = "gsf_decode_vs_frombuffer_limit"
    benchmark.extra_info.update(role="peer", items=int(ref.start[-1]), unit="soundings")
    cols = benchmark.pedantic(frombuffer_gsf, args=(data, plan), rounds=10, warmup_rounds=1)
    for name, col in cols.items():
        np.testing.assert_array_equal(col, ref.beam[name], err_msg=name)
