"""Velodyne data packets from firing sequences: the writer behind simulated logs and the tests.

Writes every model but the HDL-64E (layouts in :mod:`formats.velodyne_models`): the block
azimuth is each sequence's encoder azimuth rounded to 0.01°, the packet's µs-past-the-hour
stamp is the time of its first sequence (for the VLS-128, of the time-stamp reference 7 µs
after the first firing group), the return mode and product id bytes are set.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from formats.pcap import udp_pcap_bytes
from formats.velodyne_models import BANK_FLAGS, BLOCK_SIZE, BLOCKS, CHANNELS, PACKET_SIZE, VelodyneModel, get_model

_MODE_BYTE = {"strongest": 0x37, "last": 0x38, "dual": 0x39}


@dataclass(eq=False)
class Firings:
    """Firing sequences to write, in time order.

    Attributes:
        timestamp_ns: ``(S,) int64`` UNIX ns of each sequence's first firing; consecutive
            sequences are expected ``sequence_period_us`` apart (packet times are taken from the
            first sequence of each packet, the others follow the model's timing table).
        azimuth_deg: ``(S,) float64`` encoder azimuth at each sequence start, clockwise seen
            from above, 0 = +x (it is written rounded to 0.01°).
        distance_m: ``(S, L)`` or ``(S, 2, L)`` (dual: [strongest, last]) ranges in laser id
            order; 0, negative or NaN = no return.
        reflectivity: same shape as ``distance_m``, ``uint8``.
    """

    timestamp_ns: np.ndarray
    azimuth_deg: np.ndarray
    distance_m: np.ndarray
    reflectivity: np.ndarray | None = None


def _blocks(raw: np.ndarray, refl: np.ndarray, block_az: np.ndarray, mdl: VelodyneModel, dual: bool) -> np.ndarray:
    """``(P, 12, 100) uint8`` blocks from ``(P, n, R, L)`` raw distances / reflectivities and
    ``(P, n)`` sequence azimuths (n sequences per packet, R returns as [strongest, last])."""
    p, n, r, n_lasers = raw.shape
    if dual:  # each (last, strongest) pair of blocks: even block = last return
        raw, refl = raw[:, :, ::-1], refl[:, :, ::-1]
    if mdl.kind == 3:  # sequence -> (bank, return) blocks
        per = (p, n, r, 4, CHANNELS)
        d = raw.reshape(per).transpose(0, 1, 3, 2, 4).reshape(p, -1, CHANNELS)
        i = refl.reshape(per).transpose(0, 1, 3, 2, 4).reshape(p, -1, CHANNELS)
        flags = np.tile(np.repeat(BANK_FLAGS, r), n)
        az = np.repeat(block_az, 4 * r, axis=1)
    else:  # kind 0: two sequences per block; kind 1: one
        spb = CHANNELS // n_lasers
        per = (p, n // spb, spb, r, n_lasers)
        d = raw.reshape(per).transpose(0, 1, 3, 2, 4).reshape(p, -1, CHANNELS)
        i = refl.reshape(per).transpose(0, 1, 3, 2, 4).reshape(p, -1, CHANNELS)
        flags = np.full(d.shape[1], BANK_FLAGS[0])
        az = np.repeat(block_az[:, ::spb], r, axis=1)
    out = np.zeros((p, BLOCKS, BLOCK_SIZE), np.uint8)
    used = d.shape[1]  # VLS-128 dual: 8 blocks, the last four stay empty
    out[:, :used, 0] = flags & 0xFF
    out[:, :used, 1] = flags >> 8
    out[:, :used, 2] = az & 0xFF
    out[:, :used, 3] = az >> 8
    out[:, :used, 4::3] = d & 0xFF
    out[:, :used, 5::3] = d >> 8
    out[:, :used, 6::3] = i
    return out


def velodyne_packets(firings: Firings, model: str | VelodyneModel = "VLP-16", return_mode: str = "strongest",
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Pack firing sequences into ``(P, 1206) uint8`` data packets and their ``(P,) int64`` time
    stamps (the first sequence's first firing; VLS-128: 7 µs after it, the stamp's reference).
    A trailing partial packet is padded with empty sequences whose azimuth continues the mean
    rotation rate."""
    mdl = model if isinstance(model, VelodyneModel) else get_model(model)
    if mdl.kind == 2 or mdl.product_id is None:  # the HDL-64E: status bytes where the product id goes
        raise ValueError("writing HDL-64E packets is not supported")
    if return_mode not in _MODE_BYTE:
        raise ValueError(f"return_mode must be one of {sorted(_MODE_BYTE)}, got {return_mode!r}")
    dual = return_mode == "dual"
    ts = np.ascontiguousarray(firings.timestamp_ns, np.int64)
    az = np.ascontiguousarray(firings.azimuth_deg, np.float64)
    dist = np.asarray(firings.distance_m, np.float64)
    s, n_lasers = ts.shape[0], mdl.n_lasers
    want = (s, 2, n_lasers) if dual else (s, n_lasers)
    if dist.ndim == 2 and not dual:
        dist = dist[:, None, :]
    elif dist.shape != want:
        raise ValueError(f"distance_m must have shape {want} for {return_mode} {mdl.name}, got {dist.shape}")
    if dist.shape[::2] != (s, n_lasers) or az.shape != (s,) or s == 0:
        raise ValueError(f"distance_m {dist.shape}, azimuth_deg {az.shape}, timestamp_ns {ts.shape} "
                         f"must agree on S > 0 sequences of {n_lasers} lasers")
    refl = (np.zeros(dist.shape, np.uint8) if firings.reflectivity is None
            else np.asarray(firings.reflectivity).reshape(dist.shape).astype(np.uint8))
    per_packet = mdl.sequences_per_packet // (2 if dual else 1)
    pad = -s % per_packet
    if pad:
        step = (np.diff(np.unwrap(np.radians(az))).mean() * 180 / math.pi) if s > 1 else 0.0
        az = np.concatenate([az, az[-1] + step * np.arange(1, pad + 1)])
        pad_ns = np.rint(mdl.sequence_period_us * 1000 * np.arange(1, pad + 1)).astype(np.int64)
        ts = np.concatenate([ts, ts[-1] + pad_ns])
        dist = np.concatenate([dist, np.zeros((pad, *dist.shape[1:]))])
        refl = np.concatenate([refl, np.zeros((pad, *refl.shape[1:]), np.uint8)])
    p = len(ts) // per_packet
    with np.errstate(invalid="ignore"):
        raw = np.where(np.isfinite(dist) & (dist > 0), np.rint(dist / mdl.distance_resolution_m), 0)
    if raw.max(initial=0) > 65535:
        raise ValueError(f"distance over {65535 * mdl.distance_resolution_m:.3f} m cannot be encoded for {mdl.name}")
    shape = (p, per_packet, raw.shape[1], n_lasers)
    block_az = np.rint(az.reshape(p, per_packet) * 100).astype(np.int64) % 36000
    blocks = _blocks(raw.astype(np.uint16).reshape(shape).astype(np.int64), refl.reshape(shape), block_az, mdl, dual)
    pkt_ts = ts.reshape(p, per_packet)[:, 0]
    stamp_ns = pkt_ts - int(round(mdl.timing_us[0, 0] * 1000))  # the stamp's reference firing
    usec = (stamp_ns // 1000) % 3_600_000_000
    packets = np.zeros((p, PACKET_SIZE), np.uint8)
    packets[:, :1200] = blocks.reshape(p, 1200)
    packets[:, 1200:1204] = usec.astype("<u4").view(np.uint8).reshape(p, 4)
    packets[:, 1204] = _MODE_BYTE[return_mode]
    packets[:, 1205] = mdl.product_id
    return packets, stamp_ns


def write_velodyne_pcap(path: str | os.PathLike, firings: Firings, model: str | VelodyneModel = "VLP-16",
                        return_mode: str = "strongest", *, nanosecond: bool = False, port: int = 2368) -> int:
    """Write firing sequences as a pcap of Velodyne data packets; returns the packet count.

    The pcap record time of each packet is its time stamp (µs resolution unless
    ``nanosecond``); the packet's µs-since-hour field holds the same time.
    """
    packets, pkt_ts = velodyne_packets(firings, model, return_mode)
    with open(path, "wb") as f:
        f.write(udp_pcap_bytes(packets, pkt_ts, dst_port=port, nanosecond=nanosecond))
    return len(packets)
