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

from engine._jit import jit
from engine.geodesy import Origin
from formats.errors import FormatError, load_source
from formats.kmall import KmallLog, index_datagrams, joined_datagrams, mrz_ping_poses
from formats.sonar_world import SonarWorld
from formats.water_column import (
    BeamWalk,
    WaterColumn,
    assemble,
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
_PHASE_BYTES = {0: 0, 1: 1, 2: 2}


def _need(path, at: int, size: int, end: int, what: str) -> None:
    if at + size > end:
        raise FormatError(path, at, f"{what} ({size} bytes) inside the datagram, which ends at byte {end}")


def _mwc(arr: np.ndarray, o: int, n: int, path, file_offset: int) -> tuple[tuple, BeamWalk]:
    """One (re-joined) ``#MWC``: ``(ping row, its beams)``."""
    end = o + n - 4
    data = arr.data  # the bytes as a memoryview, for struct
    sec, nsec = struct.unpack_from("<II", data, o + 12)
    c = o + _HEADER_SIZE + 4
    _need(path, c, _CMN.size, end, "#MWC common part")
    ncmn, ping_cnt, _, fan = _CMN.unpack_from(data, c)
    if ncmn < _CMN.size:
        raise FormatError(path, c, f"#MWC numBytesCmnPart >= {_CMN.size}, found {ncmn}")
    t = c + ncmn
    _need(path, t, _TX_INFO.size, end, "#MWC txInfo")
    ntx_bytes, ntx, per_tx, _, _ = _TX_INFO.unpack_from(data, t)
    if ntx_bytes < _TX_INFO.size or (ntx and per_tx < _TX_SECTOR_MIN):
        raise FormatError(path, t, f"#MWC numBytesTxInfo >= {_TX_INFO.size} and numBytesPerTxSector >= "
                                   f"{_TX_SECTOR_MIN}, found {ntx_bytes} and {per_tx}")
    s = t + ntx_bytes
    _need(path, s, ntx * per_tx, end, f"{ntx} #MWC tx sectors")
    ids = np.array([struct.unpack_from("<H", data, s + k * per_tx + 12)[0] for k in range(ntx)], np.int64)
    tilts = np.array([struct.unpack_from("<f", data, s + k * per_tx)[0] for k in range(ntx)], np.float32)
    r = s + ntx * per_tx
    _need(path, r, _RX_INFO.size, end, "#MWC rxInfo")
    nrx_bytes, nbeams, per_beam, phase, _, _, fs, c_ms = _RX_INFO.unpack_from(data, r)
    if nrx_bytes < _RX_INFO.size or per_beam < _BEAM_MIN or phase not in _PHASE_BYTES:
        raise FormatError(path, r, f"#MWC numBytesRxInfo >= {_RX_INFO.size}, numBytesPerBeamEntry >= {_BEAM_MIN} and "
                                   f"phaseFlag 0-2, found {nrx_bytes}, {per_beam}, {phase}")
    if not (fs > 0 and np.isfinite(fs) and c_ms > 0 and np.isfinite(c_ms)):
        raise FormatError(path, r + 8, f"#MWC positive sampleFreq_Hz and soundVelocity_mPerSec, found {fs}, {c_ms}")
    walk = walk_beams(arr, r + nrx_bytes, end, nbeams, per_beam, 10, 1 + _PHASE_BYTES[phase], False,
                      (ids, tilts, 8, 2), path, "#MWC")
    if walk.after != end:
        raise FormatError(path, r + 2, f"{nbeams} #MWC beams ending at the datagram's end (byte {end}), "
                                       f"they end at byte {walk.after}")
    return (sec * 1_000_000_000 + nsec, ping_cnt, fan, c_ms, fs, file_offset), walk


@jit
def _headers_kernel(buf, beam_at, header_bytes, angle, start, detected, sector):
    for k in range(beam_at.shape[0]):
        at = beam_at[k]
        angle[k] = buf[at:at + 4].view(np.float32)[0]
        start[k] = buf[at + 4] | (np.uint16(buf[at + 5]) << 8)
        sector[k] = buf[at + 8]
        if header_bytes[k] >= 16:  # version 2: detectedRangeInSamplesHighResolution
            detected[k] = buf[at + 12:at + 16].view(np.float32)[0]
        else:
            detected[k] = np.float32(np.int64(buf[at + 6]) | (np.int64(buf[at + 7]) << 8))


def _read_headers(buf: np.ndarray, beam_at: np.ndarray, header_bytes: np.ndarray) -> dict[str, np.ndarray]:
    """The beam-entry fields (``EMdgmMWCrxBeamData``) of the beams at ``beam_at``."""
    n = len(beam_at)
    out: dict[str, np.ndarray] = {
        "beam_angle_deg": np.empty(n, np.float32), "start_sample": np.empty(n, np.uint16),
        "detected_range_samples": np.empty(n, np.float32), "tx_sector": np.empty(n, np.uint8)}
    _headers_kernel(buf, np.ascontiguousarray(beam_at, np.int64), np.ascontiguousarray(header_bytes, np.int64),
                    *out.values())
    return out


def _warmup() -> None:
    buf = np.zeros(32, np.uint8)
    _read_headers(buf, np.array([0, 16]), np.array([16, 12]))


def read_kmall_water_column(source: PathLike | bytes, recover: bool = False) -> WaterColumn:
    """All ``#MWC`` pings of a KMALL/KMWCD file (path or bytes), multi-part datagrams re-joined.

    Damaged datagrams raise :class:`FormatError`; with ``recover`` they are skipped and
    listed in :attr:`WaterColumn.corrupt`."""
    path, data = load_source(source)
    buf = memoryview(data)
    buffers = [np.frombuffer(data, np.uint8)]
    index, corrupt = index_datagrams(buf, path, recover)
    rows, walks = [], []
    for o, target, at, size, t in joined_datagrams(buf, index, path, recover, corrupt):
        if t != "#MWC":
            continue
        arr = buffers[0] if target is buf else np.frombuffer(target, np.uint8)
        try:
            row, walk = _mwc(arr, at, size, path, o)
        except FormatError as err:
            if recover:
                corrupt.append((o, err.expected))
                continue
            if arr is not buffers[0]:
                raise FormatError(path, o, f"(in re-joined #MWC) {err.expected}") from None
            raise
        if arr is not buffers[0]:
            buffers.append(arr)
        rows.append(row)
        walks.append([(0 if arr is buffers[0] else len(buffers) - 1, walk)])
    wc = assemble(rows, walks, buffers, _read_headers, path)
    wc.corrupt = corrupt
    return wc


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
