"""Velodyne data packets checked before decoding: the decode report, the model from the product
id, each packet's return mode (or why it is dropped) and its rotation rate (see
:mod:`formats.velodyne`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine._jit import jit
from formats.errors import FormatError
from formats.pcap import CaptureReport
from formats.velodyne_models import (
    BANK_FLAGS,
    BLOCK_SIZE,
    BLOCKS,
    BY_PRODUCT,
    FLAG_LOWER,
    FLAG_UPPER,
    VelodyneModel,
    get_model,
)
from formats.velodyne_time import PositionPackets


@jit
def block_layout(kind, mode, block):
    """(timing row or -1 for an unused block, return index, block group, blocks per group,
    the block holding the same firings' other return or -1) of a block."""
    if kind == 3:
        if mode == 2:
            if block >= 8:
                return -1, 0, 0, 8, -1
            return block // 2, 1 - block % 2, 0, 8, block ^ 1
        return block, 1 if mode == 1 else 0, block // 4, 4, -1
    if mode == 2:
        if kind == 2:
            return block // 4 * 2 + block % 2, (block // 2) % 2, block // 4, 4, block ^ 2
        return block // 2, 1 - block % 2, block // 2, 2, block ^ 1
    rindex = 1 if mode == 1 else 0
    if kind == 2:
        return block, rindex, block // 2, 2, -1
    return block, rindex, block, 1, -1



@dataclass
class DecodeReport(CaptureReport):
    """:class:`~formats.pcap.CaptureReport` of a Velodyne capture: ``packets`` are 1206-byte
    UDP data packets; ``dropped`` adds ``block_flag``, ``azimuth``, ``return_mode``,
    ``product_id``; ``time_source`` is "gps_fix", "gps_capture", "sensor_fit" or "pcap".

    Attributes:
        model: the model decoded as.
        calibration_source: "model", "yaml", "argument" or "packets".
        position_packets: the capture's position packets (port 8308).
    """

    model: str = ""
    calibration_source: str = ""
    position_packets: PositionPackets | None = field(default=None, repr=False)


def resolve_model(model: str | VelodyneModel | None, product: np.ndarray, path: str) -> VelodyneModel:
    if isinstance(model, VelodyneModel):
        return model
    if model is not None:
        return get_model(model)
    known = [int(p) for p in product if int(p) in BY_PRODUCT]
    if not known:
        ids = ", ".join(f"0x{p:02X} {m.name}" for p, m in BY_PRODUCT.items())
        raise FormatError(path, None, f"a data packet with a known product id ({ids}); for HDL-64E pass "
                                      f"model='HDL-64E_S2' or 'HDL-64E_S3'")
    return BY_PRODUCT[max(set(known), key=known.count)]


def u16s(buf: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return buf[pos].astype(np.int64) | (buf[pos + 1].astype(np.int64) << 8)


def packet_modes(buf: np.ndarray, offsets: np.ndarray, model: VelodyneModel, dropped: dict[str, int]) -> np.ndarray:
    """``(P,) int8`` return mode code per packet (0 strongest, 1 last, 2 dual), -1 when dropped."""
    p = len(offsets)
    blocks = offsets[:, None] + BLOCK_SIZE * np.arange(BLOCKS)[None, :]
    flags = u16s(buf, blocks)
    azim = u16s(buf, blocks + 2)
    modes = np.full(p, -1, np.int8)
    used = np.ones((p, BLOCKS), bool)
    if model.kind == 2:
        good_flags = np.all(flags[:, 0::2] == FLAG_UPPER, axis=1) & np.all(flags[:, 1::2] == FLAG_LOWER, axis=1)
        mode = np.where(azim[:, 0] == azim[:, 2], 2, 0)
        mode_ok = np.ones(p, bool)
        product_ok = np.ones(p, bool)
    else:
        rm = buf[offsets + 1204]
        mode = np.select([rm == 0x37, rm == 0x38, rm == 0x39], [0, 1, 2], -1)
        mode_ok = mode >= 0
        product_ok = buf[offsets + 1205] == model.product_id
        if model.kind == 3:  # bank flags in block order; dual: (last, strongest) pairs in blocks 0-7
            single = np.array(BANK_FLAGS * 3)
            dual = np.repeat(BANK_FLAGS, 2)
            used[mode == 2, 8:] = False
            good_flags = np.where(mode == 2, np.all(flags[:, :8] == dual, axis=1), np.all(flags == single, axis=1))
        else:
            good_flags = np.all(flags == FLAG_UPPER, axis=1)
    az_ok = np.all((azim < 36000) | ~used, axis=1)
    checks = [("block_flag", good_flags), ("azimuth", az_ok), ("return_mode", mode_ok), ("product_id", product_ok)]
    alive = np.ones(p, bool)
    for reason, ok in checks:
        dropped[reason] = int(np.count_nonzero(alive & ~ok))
        alive &= ok
    modes[alive] = mode[alive]
    return modes


def rotation_rates(buf: np.ndarray, offsets: np.ndarray, modes: np.ndarray, usec: np.ndarray, mdl: VelodyneModel):
    """``((P,) float64, (P,) float32)`` rotation rate of each packet in 0.01° per µs (module docstring)."""
    timing = mdl.timing_us
    rate = np.zeros(len(offsets))
    rate32 = np.zeros(len(offsets), np.float32)
    for code in (0, 1, 2):
        rows = np.flatnonzero(modes == code)
        if len(rows) == 0:
            continue
        if mdl.kind == 3 and code == 2:  # one sequence per packet: to the next packet
            az = u16s(buf, offsets[rows] + 2)
            diff = (np.diff(az) % 36000).astype(np.float64)
            dt = (np.diff(usec[rows]) % 3_600_000_000).astype(np.float64)
            ok = (dt > 0) & (dt < 1000)
            r = np.full(len(rows), np.median(diff[ok] / dt[ok]) if ok.any() else 0.0)
            r[:-1][ok] = diff[ok] / dt[ok]
            rate[rows] = r
            rate32[rows] = r.astype(np.float32)
            continue
        last = 8 if mdl.kind == 3 else BLOCKS - 1
        tb0 = block_layout(mdl.kind, code, 0)[0]
        tb1 = block_layout(mdl.kind, code, last)[0]
        diff = (u16s(buf, offsets[rows] + last * BLOCK_SIZE + 2) - u16s(buf, offsets[rows] + 2)) % 36000
        span = timing[tb1, 0] - timing[tb0, 0]
        rate[rows] = diff / span
        rate32[rows] = diff.astype(np.float32) / np.float32(span)
    return rate, rate32
