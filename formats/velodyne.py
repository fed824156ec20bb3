"""Raw Velodyne data packets from pcap/pcapng: the decoder (VLP-16, Puck Hi-Res, VLP-32C,
HDL-32E, HDL-64E S2/S3, VLS-128 / Alpha Prime).

Packet layouts, firing timing and default beam tables: :mod:`formats.velodyne_models`; the
writer: :mod:`formats.velodyne_writer`; packet times and position packets:
:mod:`formats.velodyne_time`.

Frame: the ROS ``velodyne_pointcloud`` / velodyne_decoder convention, which is the engine's
lidar frame: x forward (encoder azimuth 0), y left, z up. With the encoder azimuth ``a``
(clockwise seen from above) minus the laser's ``rot_correction``, ``x = r cos(ω) cos(a)``,
``y = -r cos(ω) sin(a)``, ``z = r sin(ω)``.

Timing: each point's time is its packet's time plus the firing offset of its block and channel
from the model's timing table; the packet's time comes from ``time_source`` (default
``"auto"``: the sensor's own µs clock, free of capture jitter; see :mod:`formats.velodyne_time`).

Azimuth: the packet's rotation rate is its azimuth change from the first to the last block
group over the time between them (VLS-128 dual return, one sequence per packet: to the next
packet, over the difference of their time stamps); each firing's azimuth is its block's
azimuth plus that rate times the firing's delay after the block group's first firing.
``quantize_azimuth=True`` rounds it to the 0.01° encoder step as ROS velodyne_pointcloud and
velodyne_decoder do. ``azimuth_range_deg=(a, b)`` keeps firings whose encoder azimuth lies in
[a, b] clockwise (wrapping through 0 when a > b), as velodyne_decoder's min/max angle.

Returns: ``return_index`` is 0 for the strongest, 1 for the last return. In dual-return mode
a firing whose strongest and last returns have the same distance is reported twice by the
sensor; it is kept once, from the strongest block, and flagged: ``Sweep.extra["return_type"]``
``uint8`` is 1 strongest only, 2 last only, 3 both (velodyne_decoder's and nebula's values;
single-return captures: 1 or 2).

Kernels are serial: per packet the work is a few hundred points, and on the shared 2-core
machine a parallel (prange) version measured 5x slower than this one on a 178 k-point capture.

Sweeps: a new sweep starts at the first block group (the blocks sharing one firing time:
1 block, 2 in dual mode, 2 or 4 for HDL-64E, 4 or 8 for VLS-128) whose encoder azimuth has
crossed ``cut_angle_deg``; ``cut_angle_deg=None`` cuts at full rotations from the file's first
block group (the first sweep is then whole). The last sweep of a file is usually partial.
"""

from __future__ import annotations

import math
import os

import numpy as np

from engine._jit import jit
from engine.sweep import Sweep
from formats.errors import FormatError
from formats.pcap import UdpPayloads, index_udp, udp_pcap_bytes
from formats.velodyne_calibration import (
    VelodyneCalibration,
    calibration_from_hdl64e_status,
    read_calibration_yaml,
)
from formats.velodyne_models import (  # noqa: F401  (re-exported: the package's public names)
    BANK_FLAGS,
    BLOCK_SIZE,
    BLOCKS,
    BY_PRODUCT,
    CHANNELS,
    FLAG_LOWER,
    FLAG_UPPER,
    MODELS,
    PACKET_SIZE,
    RETURN_MODES,
    BeamTable,
    VelodyneModel,
    get_model,
)
from formats.velodyne_packets import (
    DecodeReport,
    block_layout,
    packet_modes,
    resolve_model,
    rotation_rates,
    u16s,
)
from formats.velodyne_time import POSITION_PORT, PositionPackets, packet_times, position_packets
from formats.velodyne_writer import Firings, velodyne_packets, write_velodyne_pcap  # noqa: F401

_FAR_POINT_M = 25.04  # HDL-64E far calibration distance; the two-point correction applies nearer only


# ---------------------------------------------------------------- kernels
@jit
def _u16(buf, pos):
    return np.int64(buf[pos]) | (np.int64(buf[pos + 1]) << 8)


@jit
def _bank(buf, base, kind):
    """First laser id of a block (its flag names the bank)."""
    if kind < 2:
        return 0
    flag = _u16(buf, base)
    if flag == 0xEEFF:
        return 0
    if flag == 0xDDFF:
        return 32
    return 64 if flag == 0xCCFF else 96


@jit
def _decode(buf, offsets, modes, rates, rates32, kind, timing, res, cal, min_r, max_r, quantize, crop_lo, crop_hi,
            starts, packet_ns, ring, xyz, intensity, rings, time_ns, rindex, rtype):
    """Write every kept point in stream order (columns sized for every channel of every packet),
    each block group's first row into ``starts`` ``(P, 12)`` (the blocks of a group are
    consecutive, so each group's points are too); returns the point count."""
    deg = math.pi / 18000.0
    crop = crop_lo != 0.0 or crop_hi != 36000.0
    i = 0
    for k in range(offsets.shape[0]):
        mode = modes[k]
        if mode < 0:
            continue
        off = offsets[k]
        rate = rates[k]
        rate32 = rates32[k]
        for b in range(BLOCKS):
            tb, ri, g, bpg, partner = block_layout(kind, mode, b)
            if tb < 0:
                continue
            if b == g * bpg:
                starts[k, g] = i
            base = off + b * BLOCK_SIZE
            bank = _bank(buf, base, kind)
            az0 = _u16(buf, base + 2)
            tb0, _, _, _, _ = block_layout(kind, mode, g * bpg)
            t0 = timing[tb0, 0]
            for j in range(CHANNELS):
                raw = _u16(buf, base + 4 + 3 * j)
                if raw == 0:
                    continue
                both = partner >= 0 and _u16(buf, off + partner * BLOCK_SIZE + 4 + 3 * j) == raw
                if both and ri == 1:
                    continue  # the same return, written from the strongest block
                laser = j % 16 if kind == 0 else bank + j
                d = raw * res + cal[laser, 4]
                if d < min_r or d > max_r:
                    continue
                t = timing[tb, j]
                if quantize:
                    dt32 = np.float32(np.float32(t) - np.float32(t0))
                    # lround(float32(az0 + rate * dt) + 36000) % 36000, as velodyne_decoder computes it
                    az32 = np.float32(np.float32(np.float32(az0) + rate32 * dt32) + np.float32(36000.0))
                    az = float(np.int64(math.floor(np.float64(az32) + 0.5)) % 36000)
                else:
                    az = az0 + rate * (t - t0)
                if crop:
                    a = az % 36000.0
                    inside = (crop_lo <= a <= crop_hi) if crop_lo <= crop_hi else (a >= crop_lo or a <= crop_hi)
                    if not inside:
                        continue
                a = az * deg
                sa = math.sin(a)
                ca = math.cos(a)
                # rotation angle = azimuth - rot_correction
                sin_r = sa * cal[laser, 3] - ca * cal[laser, 2]
                cos_r = ca * cal[laser, 3] + sa * cal[laser, 2]
                sin_v = cal[laser, 0]
                cos_v = cal[laser, 1]
                refl = np.float64(buf[base + 6 + 3 * j])
                # laser origin offset vertically by vo and sideways by ho from the rotation axis;
                # HDL-64E two-point distance correction: the near (2.4 m in x, 1.93 m in y) and far
                # (25.04 m) corrections interpolated linearly by the point's |x| and |y|, for
                # measured distances nearer than the far calibration point only (HDL-64E S3 manual
                # rev K, appendix F; velodyne_decoder 3.1); beyond it the far correction alone
                vo = cal[laser, 7]
                ho = cal[laser, 8]
                dx = d
                dy = d
                if cal[laser, 13] != 0.0 and raw * res < _FAR_POINT_M:
                    xy = d * cos_v
                    xx = abs(xy * sin_r - ho * cos_r)
                    yy = abs(xy * cos_r + ho * sin_r)
                    dc = cal[laser, 4]
                    dx += (dc - cal[laser, 5]) * (xx - 2.4) / (_FAR_POINT_M - 2.4) + cal[laser, 5] - dc
                    dy += (dc - cal[laser, 6]) * (yy - 1.93) / (_FAR_POINT_M - 1.93) + cal[laser, 6] - dc
                # Velodyne frame (x right, y forward) -> x forward, y left
                xyz[i, 0] = dy * cos_v * cos_r + ho * sin_r
                xyz[i, 1] = -(dx * cos_v * sin_r - ho * cos_r)
                xyz[i, 2] = 0.5 * (dx + dy) * sin_v + vo
                fo = (1.0 - cal[laser, 9] * 100.0 / 13100.0) ** 2  # focal distance in cm
                inten = refl + 256.0 * cal[laser, 10] * abs(fo - (1.0 - raw / 65535.0) ** 2)
                intensity[i] = min(max(inten, cal[laser, 11]), cal[laser, 12])
                rings[i] = ring[laser]
                time_ns[i] = packet_ns[k] + np.int64(math.floor(t * 1000.0 + 0.5))
                rindex[i] = ri
                rtype[i] = 3 if both else ri + 1
                i += 1
    return i


# ---------------------------------------------------------------- decoding
def read_velodyne_pcap(
    path: str | os.PathLike,
    model: str | VelodyneModel | None = None,
    *,
    calibration: VelodyneCalibration | str | os.PathLike | None = None,
    cut_angle_deg: float | None = 180.0,
    azimuth_range_deg: tuple[float, float] | None = None,
    time_source: str = "auto",
    min_range_m: float = 0.0,
    max_range_m: float = math.inf,
    quantize_azimuth: bool = False,
    port: int | None = None,
    position_port: int | None = POSITION_PORT,
    data: bytes | None = None,
) -> tuple[list[Sweep], DecodeReport]:
    """Decode every Velodyne data packet of a pcap or pcapng file into sweeps.

    Args:
        path: the capture file.
        model: a name from :data:`MODELS` (or an alias of :func:`get_model`) or None to take it
            from the packets' product id (HDL-64E packets have none: name it).
        calibration: a :class:`VelodyneCalibration` or a ROS YAML path; None uses the model's
            table, and for HDL-64E the calibration cycled through the packets' status bytes.
        cut_angle_deg: encoder azimuth (clockwise from +x, degrees) where sweeps are split;
            the default 180 cuts behind the sensor; None cuts at full rotations from the first
            firing.
        azimuth_range_deg: keep firings whose encoder azimuth lies in ``[a, b]`` degrees
            clockwise (a > b wraps through 0); None keeps all.
        time_source: "auto", "gps", "sensor" or "pcap" (:mod:`formats.velodyne_time`).
        min_range_m, max_range_m: keep points with range in this closed interval (zero-range
            channels, i.e. no return, are always dropped).
        quantize_azimuth: round each firing's azimuth to 0.01° as ROS/velodyne_decoder do.
        port: UDP destination port of the data packets (None: any).
        position_port: UDP destination port of the position packets (None: any).
        data: the file's bytes, if already in memory.

    Returns:
        The sweeps (frame "lidar": x forward, y left, z up; columns xyz, intensity, ring (rank
        by elevation, 0 lowest), time_offset_ns from the sweep's timestamp = time of its first
        firing, return_index 0 strongest / 1 last, extra ``return_type``) and the decode report.

    Raises:
        FormatError: file-level problems (not a capture, unknown model, no HDL-64E calibration).
            Bad packets are dropped and counted in the report.
    """
    if not 0.0 <= min_range_m <= max_range_m:
        raise ValueError(f"need 0 <= min_range_m <= max_range_m, got {min_range_m}, {max_range_m}")
    crop = (0.0, 36000.0)
    if azimuth_range_deg is not None:
        lo, hi = (float(a) for a in azimuth_range_deg)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"azimuth_range_deg must be finite, got {azimuth_range_deg}")
        crop = (lo % 360.0 * 100.0, hi % 360.0 * 100.0)
    spath = os.fspath(path)
    index = index_udp(spath, data)
    udp = index.select(PACKET_SIZE, port)
    positions = position_packets(index, position_port)
    buf, offsets = udp.buffer, udp.offsets
    dropped = dict(udp.dropped)
    if len(offsets) == 0 and model is None:
        mdl = None
    else:
        mdl = resolve_model(model, buf[offsets + 1205] if len(offsets) else np.empty(0, np.uint8), spath)
    report = DecodeReport(udp.records, len(offsets), 0, dropped, truncated_at=udp.truncated_at,
                          model="" if mdl is None else mdl.name, position_packets=positions)
    if mdl is None:
        return [], report
    modes = packet_modes(buf, offsets, mdl, dropped)
    alive = modes >= 0
    report.decoded = int(np.count_nonzero(alive))
    cal, report.calibration_source = _resolve_calibration(calibration, mdl, buf, offsets[alive], spath)
    if cal.n_lasers != mdl.n_lasers:
        raise ValueError(f"calibration has {cal.n_lasers} lasers, {mdl.name} has {mdl.n_lasers}")
    usec = (u16s(buf, offsets + 1200) | (u16s(buf, offsets + 1202) << 16))
    packet_ns, report.time_source = packet_times(usec[alive], udp.timestamps_ns[alive], time_source, positions)
    sweeps = _decode_packets(buf, offsets[alive], modes[alive], usec[alive], packet_ns, mdl, cal, cut_angle_deg,
                             crop, min_range_m, max_range_m, quantize_azimuth)
    report.points = sum(len(s) for s in sweeps)
    report.sweeps = len(sweeps)
    return sweeps, report


def _decode_packets(buf, offsets, modes, usec, packet_ns, mdl, cal, cut_angle_deg, crop, min_r, max_r, quantize):
    """Sweeps of the alive packets (the kernel's pass, then the cut)."""
    table = cal.table()
    res = cal.distance_resolution_m
    timing = mdl.timing_us
    rate, rate32 = rotation_rates(buf, offsets, modes, usec, mdl)
    cap = len(offsets) * BLOCKS * CHANNELS
    cols: dict[str, np.ndarray] = {
        "xyz": np.empty((cap, 3), np.float32), "intensity": np.empty(cap, np.float32),
        "ring": np.empty(cap, np.uint16), "time_ns": np.empty(cap, np.int64),
        "return_index": np.empty(cap, np.uint8), "return_type": np.empty(cap, np.uint8)}
    starts = np.zeros((len(offsets), BLOCKS), np.int64)
    n = _decode(buf, offsets, modes, rate, rate32, mdl.kind, timing, res, table, min_r, max_r, bool(quantize), *crop,
                starts, packet_ns, cal.ring, *cols.values())
    cols = {k: v[:n] for k, v in cols.items()}
    return _split(buf, offsets, modes, packet_ns, starts, mdl, cut_angle_deg, cols)


def _resolve_calibration(calibration, mdl: VelodyneModel, buf, offsets, path) -> tuple[VelodyneCalibration, str]:
    if isinstance(calibration, VelodyneCalibration):
        return calibration, "argument"
    if calibration is not None:
        return read_calibration_yaml(calibration), "yaml"
    if mdl.kind != 2:
        return mdl.default_calibration(), "model"
    cal, _ = calibration_from_hdl64e_status(buf[offsets + 1204], buf[offsets + 1205], path)
    return cal, "packets"


def _split(buf, offsets, modes, packet_ns, starts, mdl, cut_angle_deg, cols) -> list[Sweep]:
    """Cut the point stream where the block groups' encoder azimuth crosses the cut angle."""
    if cut_angle_deg is not None and not math.isfinite(cut_angle_deg):
        raise ValueError(f"cut_angle_deg must be finite or None, got {cut_angle_deg}")
    if len(offsets) == 0:
        return []
    # block groups per packet and the first block of each, by mode
    groups = []
    for code in np.unique(modes):
        rows = np.flatnonzero(modes == code)
        bpg = block_layout(mdl.kind, int(code), 0)[3]
        g = np.arange(max(BLOCKS // bpg, 1))
        groups.append((rows, g, g * bpg))
    # stream order: packet index, then group
    pk = np.concatenate([np.repeat(r, len(g)) for r, g, _ in groups])
    gi = np.concatenate([np.tile(g, len(r)) for r, g, _ in groups])
    first_block = np.concatenate([np.tile(b, len(r)) for r, _, b in groups])
    order = np.lexsort((gi, pk))
    pk, gi, first_block = pk[order], gi[order], first_block[order]
    az = u16s(buf, offsets[pk] + first_block * BLOCK_SIZE + 2)
    cut = int(az[0]) if cut_angle_deg is None else int(round(cut_angle_deg * 100)) % 36000
    rel = (az - cut) % 36000
    new = np.empty(len(rel), bool)
    new[0] = True
    new[1:] = rel[1:] < rel[:-1]
    first_group = np.flatnonzero(new)
    n = len(cols["xyz"])
    bounds = np.append(starts[pk[first_group], gi[first_group]], n)
    sweeps = []
    for s, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        if b == a:
            continue
        g0 = first_group[s]
        k = pk[g0]
        tb = block_layout(mdl.kind, int(modes[k]), int(first_block[g0]))[0]
        ts = int(packet_ns[k] + round(mdl.timing_us[tb, 0] * 1000))
        sweeps.append(Sweep(
            xyz=cols["xyz"][a:b], timestamp_ns=ts, intensity=cols["intensity"][a:b],
            time_offset_ns=cols["time_ns"][a:b] - ts, ring=cols["ring"][a:b],
            return_index=cols["return_index"][a:b], frame="lidar", extra={"return_type": cols["return_type"][a:b]},
        ))
    return sweeps


def read_velodyne_sweep(path: str | os.PathLike, index: int = 0, **options) -> Sweep:
    """One sweep of a Velodyne pcap (``index`` into :func:`read_velodyne_pcap`'s list, negative from the end).

    Options are those of :func:`read_velodyne_pcap`. Raises FormatError when the file has no
    sweep ``index``.
    """
    sweeps, report = read_velodyne_pcap(path, **options)
    if not -len(sweeps) <= index < len(sweeps):
        raise FormatError(path, None, f"sweep {index} of a Velodyne pcap; it decodes to {len(sweeps)} sweeps "
                                      f"({report.decoded} of {report.packets} packets, dropped {report.dropped})")
    return sweeps[index]


def velodyne_stream_times(udp: UdpPayloads, positions: PositionPackets | None = None,
                          time_source: str = "auto") -> np.ndarray:
    """``(P,) int64`` UNIX ns of each data packet of a capture's selected payloads, by
    ``time_source`` over the whole stream (to decode time windows of it consistently: write
    the window's packets with these as record times and decode it with ``time_source="pcap"``)."""
    buf, offsets = udp.buffer, udp.offsets
    usec = u16s(buf, offsets + 1200) | (u16s(buf, offsets + 1202) << 16)
    return packet_times(usec, udp.timestamps_ns, time_source, positions)[0]


def _warmup() -> None:
    mdl = MODELS["VLP-16"]
    s = mdl.sequences_per_packet
    firings = Firings(np.arange(s, dtype=np.int64) * 55_296, np.linspace(0, 2, s), np.full((s, 16), 5.0))
    packets, ts = velodyne_packets(firings, mdl)
    data = udp_pcap_bytes(packets, ts)
    read_velodyne_pcap("<warmup>", data=data)
    read_velodyne_pcap("<warmup>", data=data, quantize_azimuth=True, azimuth_range_deg=(10.0, 20.0))
    cal = VelodyneCalibration(np.zeros(16), np.zeros(16), 0.002, dist_correction=np.full(16, 0.01))
    read_velodyne_pcap("<warmup>", data=data, calibration=cal)
