"""KMALL ``#MWC`` water column (``.kmwcd`` files, or inside ``.kmall``).

Layout (Kongsberg KMALL spec, ``EMdgmMWC``): header, partition, common part
(``numBytesCmnPart``, ``pingCnt``, ..., ``rxFanIndex``), ``txInfo`` (``numBytesTxInfo``,
``numTxSectors``, ``numBytesPerTxSector``, heave), the tx sectors (``tiltAngleReTx_deg``
first, ``txSectorNum`` at byte 12), ``rxInfo`` (``numBytesRxInfo``, ``numBeams``,
``numBytesPerBeamEntry``, ``phaseFlag``, TVG, ``sampleFreq_Hz``, ``soundVelocity_mPerSec``),
then per beam an entry of ``numBytesPerBeamEntry`` bytes (``beamPointAngReVertical_deg``,
``startRangeSampleNum``, ``detectedRangeInSamples``, ``beamTxSectorNum``,
``numSampleData``, from version 2 ``detectedRangeInSamplesHighResolution``), its
``numSampleData`` int8 amplitudes (0.5 dB) and, with ``phaseFlag`` 1/2, as many int8/int16
phases. The beams must end exactly at the datagram's end. Sizes are read from the file, so
versions 0–2 parse.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from engine.geodesy import Origin
from formats.errors import FormatError, load_source
from formats.kmall import KmallLog, index_datagrams, joined_datagrams, mrz_ping_poses
from formats.sonar_world import SonarWorld
from formats.water_column import (
    WaterColumn,
    gather_samples,
    ping_rows,
    poses_for,
    walk_beams,
    water_column_world,
)

PathLike = str | os.PathLike
_HEADER_SIZE = 20
_CMN = struct.Struct("<HHBB")  # numBytesCmnPart, pingCnt, rxFansPerPing, rxFanIndex
_TX_INFO = struct.Struct("<3Hhf")
_TX_SECTOR_MIN = 16
_RX_INFO = struct.Struct("<2H3Bb2f")
_BEAM_MIN = 12
_BEAM = np.dtype({"names": ["angle", "start", "detected", "tx_sector", "count"],
                  "formats": ["<f4", "<u2", "<u2", "<u2", "<u2"], "offsets": [0, 4, 6, 8, 10], "itemsize": _BEAM_MIN})
_PHASE_BYTES = {0: 0, 1: 1, 2: 2}


def _need(path, at: int, size: int, end: int, what: str) -> None:
    if at + size > end:
        raise FormatError(path, at, f"{what} ({size} bytes) inside the datagram, which ends at byte {end}")


def _mwc(arr: np.ndarray, o: int, n: int, path, file_offset: int) -> tuple[tuple, dict, np.ndarray]:
    """One (re-joined) ``#MWC``: ``(ping row, beam columns, samples)``."""
    end = o + n - 4
    sec, nsec = struct.unpack_from("<II", arr, o + 12)
    c = o + _HEADER_SIZE + 4
    _need(path, c, _CMN.size, end, "#MWC common part")
    ncmn, ping_cnt, _, fan = _CMN.unpack_from(arr, c)
    if ncmn < _CMN.size:
        raise FormatError(path, c, f"#MWC numBytesCmnPart >= {_CMN.size}, found {ncmn}")
    t = c + ncmn
    _need(path, t, _TX_INFO.size, end, "#MWC txInfo")
    ntx_bytes, ntx, per_tx, _, _ = _TX_INFO.unpack_from(arr, t)
    if ntx_bytes < _TX_INFO.size or (ntx and per_tx < _TX_SECTOR_MIN):
        raise FormatError(path, t, f"#MWC numBytesTxInfo >= {_TX_INFO.size} and numBytesPerTxSector >= "
                                   f"{_TX_SECTOR_MIN}, found {ntx_bytes} and {per_tx}")
    s = t + ntx_bytes
    _need(path, s, ntx * per_tx, end, f"{ntx} #MWC tx sectors")
    sectors = {struct.unpack_from("<H", arr, s + k * per_tx + 12)[0]: struct.unpack_from("<f", arr, s + k * per_tx)[0]
               for k in range(ntx)}
    r = s + ntx * per_tx
    _need(path, r, _RX_INFO.size, end, "#MWC rxInfo")
    nrx_bytes, nbeams, per_beam, phase, _, _, fs, c_ms = _RX_INFO.unpack_from(arr, r)
    if nrx_bytes < _RX_INFO.size or per_beam < _BEAM_MIN or phase not in _PHASE_BYTES:
        raise FormatError(path, r, f"#MWC numBytesRxInfo >= {_RX_INFO.size}, numBytesPerBeamEntry >= {_BEAM_MIN} and "
                                   f"phaseFlag 0-2, found {nrx_bytes}, {per_beam}, {phase}")
    if not (fs > 0 and np.isfinite(fs) and c_ms > 0 and np.isfinite(c_ms)):
        raise FormatError(path, r + 8, f"#MWC positive sampleFreq_Hz and soundVelocity_mPerSec, found {fs}, {c_ms}")
    beam_at, counts, after = walk_beams(arr, r + nrx_bytes, end, nbeams, per_beam, 10, 1 + _PHASE_BYTES[phase],
                                        False, path, "#MWC")
    if after != end:
        raise FormatError(path, r + 2, f"{nbeams} #MWC beams ending at the datagram's end (byte {end}), "
                                       f"they end at byte {after}")
    head = arr[beam_at[:, None] + np.arange(_BEAM_MIN)].reshape(-1).view(_BEAM)
    detected = head["detected"].astype(np.float32)
    if per_beam >= 16:
        detected = arr[beam_at[:, None] + np.arange(12, 16)].reshape(-1).view("<f4").astype(np.float32)
    lut = np.full(max(sectors, default=0) + 1, np.nan, np.float32)  # tilt by sector number (uint16 keys)
    lut[list(sectors)] = list(sectors.values())
    tx = head["tx_sector"].astype(np.int64)
    tilt = np.where(tx < len(lut), lut[np.minimum(tx, len(lut) - 1)], np.float32(np.nan))
    missing = np.flatnonzero(np.isnan(tilt))
    if len(missing):
        k = int(missing[0])
        raise FormatError(path, int(beam_at[k]) + 8, f"#MWC beam {k}: a beamTxSectorNum of the ping's tx sectors "
                                                     f"{sorted(sectors)}, found {int(head['tx_sector'][k])}")
    samples, _ = gather_samples(arr, beam_at + per_beam, counts)
    beams = {"beam_angle_deg": head["angle"].astype(np.float32),
             "tilt_deg": tilt,
             "start_sample": head["start"].astype(np.uint16), "detected_range_samples": detected,
             "tx_sector": head["tx_sector"].astype(np.uint8), "counts": counts}
    return (sec * 1_000_000_000 + nsec, ping_cnt, fan, c_ms, fs, file_offset), beams, samples


def read_kmall_water_column(source: PathLike | bytes, recover: bool = False) -> WaterColumn:
    """All ``#MWC`` pings of a KMALL/KMWCD file (path or bytes), multi-part datagrams re-joined.

    Damaged datagrams raise :class:`FormatError`; with ``recover`` they are skipped."""
    path, data = load_source(source)
    buf = memoryview(data)
    whole = np.frombuffer(data, np.uint8)
    index, corrupt = index_datagrams(buf, path, recover)
    rows, beams, samples = [], [], []
    for o, target, at, size, t in joined_datagrams(buf, index, path, recover, corrupt):
        if t != "#MWC":
            continue
        arr = whole if target is buf else np.frombuffer(target, np.uint8)
        try:
            row, b, s = _mwc(arr, at, size, path, o)
        except FormatError as err:
            if recover:
                corrupt.append((o, err.expected))
                continue
            if arr is not whole:
                raise FormatError(path, o, f"(in re-joined #MWC) {err.expected}") from None
            raise
        rows.append(row)
        beams.append(b)
        samples.append(s)
    wc = _collect(rows, beams, samples, path)
    wc.corrupt = corrupt
    return wc


def _collect(rows: list[tuple], beams: list[dict], samples: list[np.ndarray], path) -> WaterColumn:
    cols = list(zip(*rows)) if rows else [()] * 6
    beam_start = np.zeros(len(rows) + 1, np.int64)
    np.cumsum([len(b["beam_angle_deg"]) for b in beams], out=beam_start[1:])
    sample_start = np.zeros(int(beam_start[-1]) + 1, np.int64)
    per_beam = np.concatenate([b["counts"] for b in beams]) if beams else np.zeros(0, np.int64)
    np.cumsum(per_beam, out=sample_start[1:])
    cat = lambda name, dtype: np.concatenate([b[name] for b in beams]) if beams else np.zeros(0, dtype)
    return WaterColumn(
        time_ns=np.asarray(cols[0], np.int64), ping_counter=np.asarray(cols[1], np.uint16),
        head=np.asarray(cols[2], np.uint16), sound_speed_m_s=np.asarray(cols[3], np.float32),
        sample_rate_hz=np.asarray(cols[4], np.float32), datagram_offset=np.asarray(cols[5], np.int64),
        beam_start=beam_start, beam_angle_deg=cat("beam_angle_deg", np.float32), tilt_deg=cat("tilt_deg", np.float32),
        start_sample=cat("start_sample", np.uint16), detected_range_samples=cat("detected_range_samples", np.float32),
        tx_sector=cat("tx_sector", np.uint8), sample_start=sample_start,
        amplitude=np.concatenate(samples) if samples else np.zeros(0, np.int8), path=path,
    )


def kmall_water_column_world(wc: WaterColumn, log: KmallLog, origin: Origin, threshold_db: float | None = None,
                             top_k: int | None = None, vertical: str = "waterline") -> SonarWorld:
    """Water-column samples as world points, placed by the ``#MRZ`` ping of the same
    ``pingCnt`` and rx fan in ``log`` (position, heading, waterline: the chain of
    :func:`formats.kmall.read_kmall_world`); pings without one are unplaced.

    The beams' acoustic origin is at the tx array's x and the rx array's y (``#IIP``
    ``TRAI_TX1``/``TRAI_RX1``, 0 when absent) and the tx transducer depth below the
    waterline. See :func:`formats.water_column.water_column_world` for the selection.
    """
    p = log.pings
    rows = ping_rows(np.stack([wc.ping_counter, wc.head], axis=1), np.stack([p.ping_counter, p.rx_fan_index], axis=1))
    poses = poses_for(mrz_ping_poses(p, origin, vertical), rows, wc.time_ns, wc.datagram_offset,
                      "no #MRZ of this ping in the log (position, heading, waterline)")
    has = rows >= 0
    r = np.where(has, rows, 0)
    tx, rx = log.install.get("TRAI_TX1", {}), log.install.get("TRAI_RX1", {})
    origin_m = np.zeros((wc.num_pings, 3))
    origin_m[:, 0] = float(tx.get("X", 0.0))
    origin_m[:, 1] = float(rx.get("Y", 0.0))
    if p.num_pings:
        origin_m[:, 2] = np.where(has, p.tx_transducer_depth_m[r].astype(np.float64) + p.z_water_level_m[r], 0.0)
    return water_column_world(wc, poses, origin_m, origin, threshold_db, top_k)
