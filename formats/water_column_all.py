"""Kongsberg ``.all`` water column: datagram 'k' (0x6B), stored in ``.wcd`` files.

Body (EM datagram formats, "Water column datagram"): number of datagrams and this one's
number (a ping's beams may be split over several), number of tx sectors ``Ntx``, total rx
beams, beams in this datagram ``Nrx``, sound speed (0.1 m/s), sampling frequency
(0.01 Hz), tx-time heave (cm), TVG function and offset, scanning info, 3 spare (24 bytes);
``Ntx`` × (tilt angle re tx array, 0.01°; centre frequency, 10 Hz; tx sector number;
spare); ``Nrx`` × (beam pointing angle re vertical, 0.01°, positive port; start range
sample number; number of samples ``Ns``; detected range in samples; tx sector number; beam
number; ``Ns`` int8 amplitudes in 0.5 dB); one spare byte for an even length; ETX and
checksum. A ping's datagrams must arrive numbered 1..N and add up to its total beams.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from engine.geodesy import Origin
from engine.pose_track import Extrapolation
from formats.errors import FormatError, load_source
from formats.kongsberg_all import (
    AllLog,
    active_fixes,
    all_ping_poses,
    byte_order,
    check_body_end,
    epoch_ns,
    index_datagrams,
)
from formats.sonar_world import SonarWorld
from formats.water_column import (
    WaterColumn,
    assemble,
    ping_rows,
    poses_for,
    walk_beams,
    water_column_world,
)

PathLike = str | os.PathLike
TYPE_WATER_COLUMN = 0x6B
_INFO_SIZE = 24
_SECTOR_SIZE = 6
_BEAM_HEADER = 10


def _beam_dtype(order: str) -> np.dtype:
    return np.dtype([("angle", order + "i2"), ("start", order + "u2"), ("count", order + "u2"),
                     ("detected", order + "u2"), ("tx_sector", "u1"), ("beam_number", "u1")])


def read_all_water_column(source: PathLike | bytes, verify_checksum: bool = True, recover: bool = False
                          ) -> WaterColumn:
    """All water-column pings of a ``.wcd``/``.all`` file (path or bytes), a ping's
    datagrams joined in order. Bad input raises :class:`FormatError`; with ``recover`` a
    ping whose datagrams do not all arrive (e.g. the recording stopped) is dropped and
    listed in :attr:`WaterColumn.corrupt` instead."""
    path, data = load_source(source)
    order = byte_order(data, path)
    arr = np.frombuffer(data, np.uint8)
    head = struct.Struct(order + "HIIHH")
    info = struct.Struct(order + "6HIhBbB")
    beam_dtype = _beam_dtype(order)
    pending: dict[tuple[int, int], dict] = {}
    done: list[dict] = []
    for o, n, t in index_datagrams(data, path, order, verify_checksum):
        if t != TYPE_WATER_COLUMN:
            continue
        end = o + 4 + n - 3
        _, date, ms, counter, serial = head.unpack_from(data, o + 6)
        b = o + 20
        if b + _INFO_SIZE > end:
            raise FormatError(path, b, f"a {_INFO_SIZE}-byte water-column ping info before the ETX at byte {end}")
        ndg, dgn, ntx, total, nrx, ss, sf, _, _, _, _ = info.unpack_from(data, b)
        key = (counter, serial)
        ping = pending.get(key)
        if ping is None:
            if dgn != 1 or ndg < 1:
                raise FormatError(path, o, f"datagram 1 of a water-column ping, found {dgn} of {ndg}")
            t_ns = epoch_ns(date, ms)
            if t_ns < 0:
                raise FormatError(path, o + 8, f"a date YYYYMMDD, found {date}")
            if ss == 0 or sf == 0:
                raise FormatError(path, b + 10, f"a positive sound speed and sampling frequency, found {ss}, {sf}")
            ping = pending[key] = {"row": (t_ns, counter, serial, ss * 0.1, sf * 0.01, o), "ndg": ndg, "total": total,
                                   "next": 1, "walks": []}
        if dgn != ping["next"] or ndg != ping["ndg"] or total != ping["total"]:
            raise FormatError(path, o, f"datagram {ping['next']} of {ping['ndg']} of water-column ping {counter} "
                                       f"(serial {serial}), found {dgn} of {ndg}")
        s = b + _INFO_SIZE
        if s + ntx * _SECTOR_SIZE > end:
            raise FormatError(path, s, f"{ntx} tx sectors before the ETX at byte {end}")
        sectors = arr[s: s + ntx * _SECTOR_SIZE].reshape(ntx, _SECTOR_SIZE)
        tilt = sectors[:, :2].copy().view(order + "i2").reshape(-1) * np.float32(0.01)
        walk = walk_beams(arr, s + ntx * _SECTOR_SIZE, end, nrx, _BEAM_HEADER, 4, 1, order == ">",
                          (sectors[:, 4].astype(np.int64), tilt.astype(np.float32), 8, 1), path, "water column")
        check_body_end(path, b + 8, walk.after, end, f"{nrx} water-column beams")
        ping["walks"].append((0, walk))
        ping["next"] += 1
        if dgn == ndg:
            beams = sum(len(w.counts) for _, w in ping["walks"])
            if beams != total:
                raise FormatError(path, o, f"{total} beams in water-column ping {counter} (serial {serial}), "
                                           f"its {ndg} datagrams hold {beams}")
            done.append(pending.pop(key))
    corrupt = []
    for ping in sorted(pending.values(), key=lambda p: p["row"][5]):
        why = (f"all {ping['ndg']} datagrams of water-column ping {ping['row'][1]} (serial {ping['row'][2]}), "
               f"found {len(ping['walks'])}")
        if not recover:
            raise FormatError(path, ping["row"][5], why)
        corrupt.append((ping["row"][5], why))
    done.sort(key=lambda p: p["row"][5])

    def read_headers(buf: np.ndarray, beam_at: np.ndarray, _: np.ndarray) -> dict[str, np.ndarray]:
        h = buf[beam_at[:, None] + np.arange(_BEAM_HEADER)].reshape(-1).view(beam_dtype)
        return {"beam_angle_deg": h["angle"].astype(np.float32) * np.float32(0.01),
                "start_sample": h["start"].astype(np.uint16),
                "detected_range_samples": h["detected"].astype(np.float32), "tx_sector": h["tx_sector"]}

    wc = assemble([p["row"] for p in done], [p["walks"] for p in done], [arr], read_headers, path)
    wc.corrupt = corrupt
    return wc


def _install_offsets(log: AllLog, wc: WaterColumn) -> np.ndarray:
    """Per ping ``(P, 3)``: the rx head's position in the XYZ 88 frame (x, y re the active
    position sensor, z re the tx transducer), from the installation datagram."""
    ins = log.install
    pos = log.position
    use = active_fixes(log)
    system = int(pos["descriptor"][use][0] & 0x03) if use.any() else 1
    heads = {}
    for k, rx in (("R1S", "S2"), ("R2S", "S3")):
        if k in ins:
            heads[int(ins[k])] = rx
    need = ["S1X", "S1Z", f"P{system}X", f"P{system}Y"] + [f"{rx}{a}" for rx in heads.values() for a in "YZ"]
    missing = [k for k in need if k not in ins] or ([] if heads else ["R1S"])
    if missing:
        raise FormatError(log.path, None, f"installation parameters {', '.join(missing)} to place the water column")
    out = np.zeros((wc.num_pings, 3))
    for i, serial in enumerate(wc.head.tolist()):
        head = heads.get(serial)
        if head is None:
            raise FormatError(wc.path, int(wc.datagram_offset[i]), f"a water-column serial number of the installed rx "
                                                                   f"heads {sorted(heads)}, found {serial}")
        out[i] = (float(ins["S1X"]) - float(ins[f"P{system}X"]), float(ins[f"{head}Y"]) - float(ins[f"P{system}Y"]),
                  float(ins[f"{head}Z"]) - float(ins["S1Z"]))
    return out


def all_water_column_world(wc: WaterColumn, log: AllLog, origin: Origin, threshold_db: float | None = None,
                           top_k: int | None = None, extrapolate: Extrapolation = "none",
                           max_extrapolation_s: float = 0.0, max_fix_gap_s: float = 5.0) -> SonarWorld:
    """Water-column samples as world points, each ping placed as the XYZ 88 ping of the same
    counter and serial number in ``log`` (the chain and fix policy of
    :func:`formats.kongsberg_all.read_all_world`); pings without one are unplaced. The beams
    start at their rx head (installation datagram). See
    :func:`formats.water_column.water_column_world` for the selection."""
    x = log.xyz
    rows = ping_rows(np.stack([wc.ping_counter, wc.head], axis=1), np.stack([x.ping["counter"], x.ping["serial"]], 1))
    poses = poses_for(all_ping_poses(log, origin, extrapolate, max_extrapolation_s, max_fix_gap_s), rows, wc.time_ns,
                      wc.datagram_offset, "no XYZ 88 ping of this counter and serial number in the log")
    return water_column_world(wc, poses, _install_offsets(log, wc), origin, threshold_db, top_k)
