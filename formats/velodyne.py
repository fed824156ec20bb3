"""Raw Velodyne data packets (VLP-16, VLP-32C, HDL-32E, HDL-64E S2/S3) from pcap: decoder and writer.

Packet layout (1206-byte UDP payload): 12 blocks of 100 bytes (flag ``0xEEFF``, or ``0xDDFF``
for the HDL-64E lower laser bank; azimuth u16 in 0.01°; 32 × (distance u16, reflectivity u8)),
then the µs since the top of the hour (u32), then the return mode (0x37 strongest, 0x38 last,
0x39 dual) and the product id (0x21 HDL-32E, 0x22 VLP-16, 0x28 VLP-32C). HDL-64E packets carry
a status type/value byte pair there instead, cycling through the unit's calibration.

Frame: the ROS ``velodyne_pointcloud`` / velodyne_decoder convention, which is the engine's
lidar frame: x forward (encoder azimuth 0), y left, z up. With the encoder azimuth ``a``
(clockwise seen from above) minus the laser's ``rot_correction``, ``x = r cos(ω) cos(a)``,
``y = -r cos(ω) sin(a)``, ``z = r sin(ω)``.

Timing: each point's time is its packet's time plus the firing offset of its block and channel
from the model's timing table (Velodyne manuals: VLP-16 2.304 µs per firing, 55.296 µs per
firing sequence, two sequences per block; VLP-32C lasers fire in pairs every 2.304 µs, 55.296 µs
per block; HDL-32E 1.152 µs per firing, 46.080 µs per block; HDL-64E S2 48 µs and S3 57.6 µs
per upper/lower block pair). The packet time is the pcap record time (``time_source="pcap"``) or
the packet's own µs-since-hour field placed in the hour of the pcap record time, the nearer
hour when they disagree by over 30 minutes (``time_source="gps"``; the packet field is the time
of the first firing, synchronised to GPS when the sensor has a PPS input).

Azimuth: the packet's rotation rate is its azimuth change from the first to the last block
over the time between them; each firing's azimuth is its block's azimuth plus that rate times
the firing's delay after the block's first firing (so the two sequences of a VLP-16 block and
the staggered firings within a sequence get their own azimuths). ``quantize_azimuth=True``
rounds it to the 0.01° encoder step as ROS velodyne_pointcloud and velodyne_decoder do.

Kernels are serial: per packet the work is a few hundred points, and on the shared 2-core
machine a parallel (prange) version measured 5x slower than this one on a 178 k-point capture.

Sweeps: a new sweep starts at the first block group (the blocks sharing one firing time:
1 block, 2 in dual mode, 2 or 4 for HDL-64E) whose encoder azimuth has crossed
``cut_angle_deg``. The first and last sweep of a file are usually partial.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from engine._jit import jit
from engine.sweep import Sweep
from formats.errors import FormatError
from formats.pcap import read_udp_payloads, udp_pcap_bytes
from formats.velodyne_calibration import (
    VelodyneCalibration,
    calibration_from_hdl64e_status,
    read_calibration_yaml,
)

PACKET_SIZE = 1206
BLOCKS = 12
CHANNELS = 32
BLOCK_SIZE = 100
FLAG_UPPER = 0xEEFF
FLAG_LOWER = 0xDDFF
RETURN_MODES = {0x37: "strongest", 0x38: "last", 0x39: "dual"}
_MODE_CODE = {"strongest": 0, "last": 1, "dual": 2}
_FAR_POINT_M = 25.04  # HDL-64E far calibration distance; the two-point correction applies nearer only


# ---------------------------------------------------------------- sensor tables
def _timing_us(name: str) -> np.ndarray:
    """``(12, 32) float64`` µs: firing time of (single-return block, channel) after block 0 channel 0."""
    b = np.arange(BLOCKS)[:, None]
    j = np.arange(CHANNELS)[None, :]
    if name == "VLP-16":
        return (2 * b + j // 16) * 55.296 + (j % 16) * 2.304
    if name == "VLP-32C":
        return b * 55.296 + (j // 2) * 2.304
    if name == "HDL-32E":
        return b * 46.080 + j * 1.152
    if name in ("HDL-64E_S2", "HDL-64E_S3"):
        s2 = name.endswith("S2")
        pattern = np.array([0.0, 1.26, 2.46, 3.66] if s2 else [0.0, 1.3, 2.5, 3.7])
        return (b // 2) * (48.0 if s2 else 57.6) + (j // 4) * (6.0 if s2 else 7.2) + pattern[j % 4]
    raise ValueError(name)


_ELEVATION_DEG = {
    "VLP-16": [-15, 1, -13, 3, -11, 5, -9, 7, -7, 9, -5, 11, -3, 13, -1, 15],
    "HDL-32E": [-30.67, -9.33, -29.33, -8, -28, -6.67, -26.67, -5.33, -25.33, -4, -24, -2.67, -22.67,
                -1.33, -21.33, 0, -20, 1.33, -18.67, 2.67, -17.33, 4, -16, 5.33, -14.67, 6.67, -13.33, 8,
                -12, 9.33, -10.67, 10.67],
    "VLP-32C": [-25, -1, -1.667, -15.639, -11.31, 0, -0.667, -8.843, -7.254, 0.333, -0.333, -6.148,
                -5.333, 1.333, 0.667, -4, -4.667, 1.667, 1, -3.667, -3.333, 3.333, 2.333, -2.667, -3, 7,
                4.667, -2.333, -2, 15, 10.333, -1.333],
}
# vertical offset of each laser's origin (mm); VLP-16 and VLP-32C: 41.91 / 42.40 mm x tan(-elevation)
_VERT_OFFSET_MM = {
    "VLP-16": -41.91 * np.tan(np.radians(_ELEVATION_DEG["VLP-16"])),
    "VLP-32C": -42.40 * np.tan(np.radians(_ELEVATION_DEG["VLP-32C"])),
    "HDL-32E": [17.17, 4.76, 16.27, 4.07, 15.40, 3.38, 14.54, 2.70, 13.71, 2.02, 12.89, 1.35, 12.09, 0.67, 11.31,
                0.0, 10.54, -0.67, 9.78, -1.35, 9.04, -2.02, 8.30, -2.70, 7.58, -3.38, 6.86, -4.07, 6.15, -4.76,
                5.45, -5.45],
}
_ROT_DEG = {
    "VLP-32C": [-1.4, 4.2, -1.4, 1.4, -1.4, 1.4, -4.2, 1.4, -1.4, 4.2, -1.4, 1.4, -4.2, 1.4, -4.2, 1.4,
                -1.4, 4.2, -1.4, 4.2, -4.2, 1.4, -1.4, 1.4, -1.4, 1.4, -1.4, 4.2, -4.2, 1.4, -1.4, 1.4],
}


@dataclass(frozen=True)
class VelodyneModel:
    """A sensor model's packet layout and timing.

    Attributes:
        name: "VLP-16", "VLP-32C", "HDL-32E", "HDL-64E_S2" or "HDL-64E_S3".
        n_lasers: lasers per firing sequence.
        product_id: the packet's last byte, or None (HDL-64E: status bytes there).
        distance_resolution_m: metres per raw distance unit.
        sequence_period_us: time between consecutive firing sequences.
    """

    name: str
    n_lasers: int
    product_id: int | None
    distance_resolution_m: float
    sequence_period_us: float

    @property
    def timing_us(self) -> np.ndarray:
        """``(12, 32) float64`` µs firing offsets of (single-return block, channel)."""
        return _timing_us(self.name)

    @property
    def kind(self) -> int:
        """Channel→laser layout: 0 two 16-laser sequences per block, 1 one 32-laser, 2 HDL-64E banks."""
        return {16: 0, 32: 1, 64: 2}[self.n_lasers]

    @property
    def sequences_per_packet(self) -> int:
        return BLOCKS * CHANNELS // self.n_lasers

    def default_calibration(self) -> VelodyneCalibration:
        """The manual's per-laser angles (None for HDL-64E: each unit has its own calibration)."""
        if self.name not in _ELEVATION_DEG:
            raise ValueError(f"{self.name} has no default calibration: give a YAML or read it from the packets")
        rot = _ROT_DEG.get(self.name, [0.0] * self.n_lasers)
        return VelodyneCalibration(rot_correction=np.radians(rot), vert_correction=np.radians(_ELEVATION_DEG[self.name]),
                                   vert_offset_correction=np.asarray(_VERT_OFFSET_MM[self.name]) / 1000.0,
                                   distance_resolution_m=self.distance_resolution_m)

    def beam_table(self) -> "BeamTable":
        """Per-laser geometry and timing of one firing sequence (to build a simulated beam pattern)."""
        cal = self.default_calibration()
        firing = self.timing_us.ravel()[: self.n_lasers] if self.kind == 0 else self.timing_us[0]
        if self.kind == 2:
            raise ValueError("HDL-64E beam tables come from a unit's calibration")
        return BeamTable(
            elevation_rad=cal.vert_correction.copy(), azimuth_offset_rad=cal.rot_correction.copy(),
            firing_offset_ns=np.rint(firing * 1000).astype(np.int64),
            sequence_period_ns=int(round(self.sequence_period_us * 1000)), ring=cal.ring,
        )


@dataclass(frozen=True, eq=False)
class BeamTable:
    """One firing sequence of a model, laser by laser (laser id order, the packet's order).

    Attributes:
        elevation_rad: ``(L,) float64`` beam elevation above the sensor's xy plane.
        azimuth_offset_rad: ``(L,) float64`` beam yaw minus the encoder direction's yaw in the lidar
            frame (counter-clockwise seen from above; equals Velodyne's rot_correction, which is
            subtracted from the clockwise encoder angle). The spin is clockwise.
        firing_offset_ns: ``(L,) int64`` firing time after the sequence start.
        sequence_period_ns: time between sequence starts.
        ring: ``(L,) uint16`` rank of each laser by elevation.
    """

    elevation_rad: np.ndarray
    azimuth_offset_rad: np.ndarray
    firing_offset_ns: np.ndarray
    sequence_period_ns: int
    ring: np.ndarray


MODELS: dict[str, VelodyneModel] = {
    m.name: m for m in [
        VelodyneModel("VLP-16", 16, 0x22, 0.002, 55.296),
        VelodyneModel("VLP-32C", 32, 0x28, 0.004, 55.296),
        VelodyneModel("HDL-32E", 32, 0x21, 0.002, 46.080),
        VelodyneModel("HDL-64E_S2", 64, None, 0.002, 48.0),
        VelodyneModel("HDL-64E_S3", 64, None, 0.002, 57.6),
    ]
}
_BY_PRODUCT = {m.product_id: m for m in MODELS.values() if m.product_id is not None}


def get_model(name: str) -> VelodyneModel:
    """The model by name (case and ``-``/``_`` insensitive, e.g. ``"vlp16"``, ``"HDL-64E S3"``)."""
    key = name.upper().replace("_", "").replace("-", "").replace(" ", "")
    for m in MODELS.values():
        if m.name.replace("_", "").replace("-", "") == key:
            return m
    raise ValueError(f"unknown Velodyne model {name!r}; known: {sorted(MODELS)}")


# ---------------------------------------------------------------- kernels
@jit
def _block_layout(kind, mode, block):
    """(timing block index, return index, block-group index, blocks per group) of a block."""
    if mode == 2:
        if kind == 2:
            return block // 4 * 2 + block % 2, (block // 2) % 2, block // 4, 4
        return block // 2, 1 - block % 2, block // 2, 2
    rindex = 1 if mode == 1 else 0
    if kind == 2:
        return block, rindex, block // 2, 2
    return block, rindex, block, 1


@jit
def _u16(buf, pos):
    return np.int64(buf[pos]) | (np.int64(buf[pos + 1]) << 8)


@jit
def _range_m(raw, laser, res, cal):
    return raw * res + cal[laser, 4]


@jit
def _count(buf, offsets, modes, kind, res, cal, min_r, max_r):
    """``(P, 12) int64`` points per block group (unused groups 0)."""
    p = offsets.shape[0]
    counts = np.zeros((p, BLOCKS), np.int64)
    for k in range(p):
        mode = modes[k]
        if mode < 0:
            continue
        for b in range(BLOCKS):
            base = offsets[k] + b * BLOCK_SIZE
            bank = 32 if (kind == 2 and _u16(buf, base) == FLAG_LOWER) else 0
            tb, ri, g, bpg = _block_layout(kind, mode, b)
            n = 0
            for j in range(CHANNELS):
                raw = _u16(buf, base + 4 + 3 * j)
                if raw == 0:
                    continue
                laser = j % 16 if kind == 0 else bank + j
                d = _range_m(raw, laser, res, cal)
                if d >= min_r and d <= max_r:
                    n += 1
            counts[k, g] += n
    return counts


@jit
def _decode(buf, offsets, modes, packet_ns, starts, kind, timing, res, cal, ring, min_r, max_r,
            quantize, xyz, intensity, rings, time_ns, rindex):
    """Fill the point columns from ``starts`` ``(P, 12)`` (first point of each block group)."""
    deg = math.pi / 18000.0
    for k in range(offsets.shape[0]):
        mode = modes[k]
        if mode < 0:
            continue
        off = offsets[k]
        tb0, _, _, _ = _block_layout(kind, mode, 0)
        tb11, _, _, _ = _block_layout(kind, mode, BLOCKS - 1)
        span = timing[tb11, 0] - timing[tb0, 0]
        diff = (_u16(buf, off + 11 * BLOCK_SIZE + 2) - _u16(buf, off + 2) + 36000) % 36000
        rate = diff / span  # centidegrees per µs
        if quantize:
            rate32 = np.float32(np.float32(diff) / np.float32(span))
        pos = np.zeros(BLOCKS, np.int64)
        for g in range(BLOCKS):
            pos[g] = starts[k, g]
        for b in range(BLOCKS):
            base = off + b * BLOCK_SIZE
            bank = 32 if (kind == 2 and _u16(buf, base) == FLAG_LOWER) else 0
            az0 = _u16(buf, base + 2)
            tb, ri, g, bpg = _block_layout(kind, mode, b)
            t0 = timing[tb, 0]
            for j in range(CHANNELS):
                raw = _u16(buf, base + 4 + 3 * j)
                if raw == 0:
                    continue
                laser = j % 16 if kind == 0 else bank + j
                d = _range_m(raw, laser, res, cal)
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
                a = az * deg
                sa = math.sin(a)
                ca = math.cos(a)
                # rotation angle = azimuth - rot_correction
                sin_r = sa * cal[laser, 3] - ca * cal[laser, 2]
                cos_r = ca * cal[laser, 3] + sa * cal[laser, 2]
                sin_v = cal[laser, 0]
                cos_v = cal[laser, 1]
                refl = np.float64(buf[base + 6 + 3 * j])
                i = pos[g]
                pos[g] = i + 1
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


# ---------------------------------------------------------------- decoding
@dataclass
class DecodeReport:
    """What happened to the file's records.

    Attributes:
        records: pcap records in the file.
        packets: records that are 1206-byte UDP data packets (on the chosen port).
        decoded: packets decoded into points.
        dropped: reason -> number of records/packets skipped (pcap reasons from
            :func:`formats.pcap.read_udp_payloads`, then ``block_flag``, ``azimuth``,
            ``return_mode``, ``product_id``).
        points: points decoded.
        sweeps: sweeps produced.
        model: the model decoded as; calibration_source: "model", "yaml", "argument" or "packets".
        truncated_at: byte offset of a truncated last record, or None.
    """

    records: int
    packets: int
    decoded: int
    dropped: dict[str, int]
    points: int = 0
    sweeps: int = 0
    model: str = ""
    calibration_source: str = ""
    truncated_at: int | None = None

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


def _resolve_model(model: str | VelodyneModel | None, product: np.ndarray, path: str) -> VelodyneModel:
    if isinstance(model, VelodyneModel):
        return model
    if model is not None:
        return get_model(model)
    known = [int(p) for p in product if int(p) in _BY_PRODUCT]
    if not known:
        raise FormatError(path, None, "a data packet with a known product id (0x21 HDL-32E, 0x22 VLP-16, "
                                      "0x28 VLP-32C); for HDL-64E pass model='HDL-64E_S2' or 'HDL-64E_S3'")
    return _BY_PRODUCT[max(set(known), key=known.count)]


def _packet_modes(buf: np.ndarray, offsets: np.ndarray, model: VelodyneModel, dropped: dict[str, int]) -> np.ndarray:
    """``(P,) int8`` return mode code per packet (0 strongest, 1 last, 2 dual), -1 when dropped."""
    p = len(offsets)
    blocks = offsets[:, None] + BLOCK_SIZE * np.arange(BLOCKS)[None, :]
    flags = buf[blocks].astype(np.int64) | (buf[blocks + 1].astype(np.int64) << 8)
    azim = buf[blocks + 2].astype(np.int64) | (buf[blocks + 3].astype(np.int64) << 8)
    modes = np.full(p, -1, np.int8)
    if model.kind == 2:
        good_flags = np.all(flags[:, 0::2] == FLAG_UPPER, axis=1) & np.all(flags[:, 1::2] == FLAG_LOWER, axis=1)
        mode = np.where(azim[:, 0] == azim[:, 2], 2, 0)
        mode_ok = np.ones(p, bool)
        product_ok = np.ones(p, bool)
    else:
        good_flags = np.all(flags == FLAG_UPPER, axis=1)
        rm = buf[offsets + 1204]
        mode = np.select([rm == 0x37, rm == 0x38, rm == 0x39], [0, 1, 2], -1)
        mode_ok = mode >= 0
        product_ok = buf[offsets + 1205] == model.product_id
    az_ok = np.all(azim < 36000, axis=1)
    checks = [("block_flag", good_flags), ("azimuth", az_ok), ("return_mode", mode_ok), ("product_id", product_ok)]
    alive = np.ones(p, bool)
    for reason, ok in checks:
        dropped[reason] = int(np.count_nonzero(alive & ~ok))
        alive &= ok
    modes[alive] = mode[alive]
    return modes


def _packet_times(buf: np.ndarray, offsets: np.ndarray, pcap_ns: np.ndarray, source: str) -> np.ndarray:
    if source == "pcap":
        return pcap_ns.copy()
    if source != "gps":
        raise ValueError(f"time_source must be 'pcap' or 'gps', got {source!r}")
    b = offsets + 1200
    usec = (buf[b].astype(np.int64) | (buf[b + 1].astype(np.int64) << 8) | (buf[b + 2].astype(np.int64) << 16)
            | (buf[b + 3].astype(np.int64) << 24))
    hour = 3_600_000_000_000
    t = (pcap_ns // hour) * hour + usec * 1000
    t = np.where(t > pcap_ns + hour // 2, t - hour, t)
    return np.where(t < pcap_ns - hour // 2, t + hour, t)


def read_velodyne_pcap(
    path: str | os.PathLike,
    model: str | VelodyneModel | None = None,
    *,
    calibration: VelodyneCalibration | str | os.PathLike | None = None,
    cut_angle_deg: float = 180.0,
    time_source: str = "pcap",
    min_range_m: float = 0.0,
    max_range_m: float = math.inf,
    quantize_azimuth: bool = False,
    port: int | None = None,
    data: bytes | None = None,
) -> tuple[list[Sweep], DecodeReport]:
    """Decode every Velodyne data packet of a pcap into sweeps.

    Args:
        path: the pcap file.
        model: a name from :data:`MODELS` or None to take it from the packets' product id
            (HDL-64E packets have none: name it).
        calibration: a :class:`VelodyneCalibration` or a ROS YAML path; None uses the model's
            table, and for HDL-64E the calibration cycled through the packets' status bytes.
        cut_angle_deg: encoder azimuth (clockwise from +x, degrees) where sweeps are split;
            the default 180 cuts behind the sensor.
        time_source: "pcap" (record timestamps) or "gps" (the packets' µs-since-hour field).
        min_range_m, max_range_m: keep points with range in this closed interval (zero-range
            channels, i.e. no return, are always dropped).
        quantize_azimuth: round each firing's azimuth to 0.01° as ROS/velodyne_decoder do.
        port: UDP destination port of the data packets (None: any).
        data: the file's bytes, if already in memory.

    Returns:
        The sweeps (frame "lidar": x forward, y left, z up; columns xyz, intensity, ring,
        time_offset_ns from the sweep's timestamp = time of its first firing, return_index
        0 strongest / 1 last) and the decode report.

    Raises:
        FormatError: file-level problems (not a pcap, unknown model, no HDL-64E calibration).
            Bad packets are dropped and counted in the report.
    """
    if not 0.0 <= min_range_m <= max_range_m:
        raise ValueError(f"need 0 <= min_range_m <= max_range_m, got {min_range_m}, {max_range_m}")
    spath = os.fspath(path)
    udp = read_udp_payloads(spath, PACKET_SIZE, port=port, data=data)
    buf, offsets = udp.buffer, udp.offsets
    dropped = dict(udp.dropped)
    if len(offsets) == 0 and model is None:
        mdl = None
    else:
        mdl = _resolve_model(model, buf[offsets + 1205] if len(offsets) else np.empty(0, np.uint8), spath)
    report = DecodeReport(udp.records, len(offsets), 0, dropped, truncated_at=udp.truncated_at,
                          model="" if mdl is None else mdl.name)
    if mdl is None:
        return [], report
    modes = _packet_modes(buf, offsets, mdl, dropped)
    alive = modes >= 0
    report.decoded = int(np.count_nonzero(alive))
    cal, report.calibration_source = _resolve_calibration(calibration, mdl, buf, offsets[alive], spath)
    if cal.n_lasers != mdl.n_lasers:
        raise ValueError(f"calibration has {cal.n_lasers} lasers, {mdl.name} has {mdl.n_lasers}")
    table = cal.table()
    res = cal.distance_resolution_m
    counts = _count(buf, offsets, modes, mdl.kind, res, table, min_range_m, max_range_m)
    flat = counts.ravel()
    starts = (np.cumsum(flat) - flat).reshape(counts.shape)
    n = int(flat.sum())
    xyz = np.empty((n, 3), np.float32)
    intensity = np.empty(n, np.float32)
    rings = np.empty(n, np.uint16)
    time_ns = np.empty(n, np.int64)
    rindex = np.empty(n, np.uint8)
    packet_ns = _packet_times(buf, offsets, udp.timestamps_ns, time_source)
    _decode(buf, offsets, modes, packet_ns, starts, mdl.kind, mdl.timing_us, res, table,
            cal.ring, min_range_m, max_range_m, bool(quantize_azimuth), xyz, intensity, rings, time_ns, rindex)
    sweeps = _split(buf, offsets, modes, packet_ns, starts, counts, mdl, cut_angle_deg,
                    xyz, intensity, rings, time_ns, rindex)
    report.points = n
    report.sweeps = len(sweeps)
    return sweeps, report


def _resolve_calibration(calibration, mdl: VelodyneModel, buf, offsets, path) -> tuple[VelodyneCalibration, str]:
    if isinstance(calibration, VelodyneCalibration):
        return calibration, "argument"
    if calibration is not None:
        return read_calibration_yaml(calibration), "yaml"
    if mdl.kind != 2:
        return mdl.default_calibration(), "model"
    cal, _ = calibration_from_hdl64e_status(buf[offsets + 1204], buf[offsets + 1205], path)
    return cal, "packets"


def _split(buf, offsets, modes, packet_ns, starts, counts, mdl, cut_angle_deg, xyz, intensity, rings, time_ns,
           rindex) -> list[Sweep]:
    """Cut the point stream where the block groups' encoder azimuth crosses the cut angle."""
    if not math.isfinite(cut_angle_deg):
        raise ValueError(f"cut_angle_deg must be finite, got {cut_angle_deg}")
    alive = np.flatnonzero(modes >= 0)
    if len(alive) == 0:
        return []
    # block groups per packet and the first block of each, by mode
    groups = []
    for code in np.unique(modes[alive]):
        rows = alive[modes[alive] == code]
        bpg = (4 if code == 2 else 2) if mdl.kind == 2 else (2 if code == 2 else 1)
        g = np.arange(BLOCKS // bpg)
        groups.append((rows, g, g * bpg))
    # stream order: packet index, then group
    pk = np.concatenate([np.repeat(r, len(g)) for r, g, _ in groups])
    gi = np.concatenate([np.tile(g, len(r)) for r, g, _ in groups])
    first_block = np.concatenate([np.tile(b, len(r)) for r, _, b in groups])
    order = np.lexsort((gi, pk))
    pk, gi, first_block = pk[order], gi[order], first_block[order]
    pos = offsets[pk] + first_block * BLOCK_SIZE + 2
    az = buf[pos].astype(np.int64) | (buf[pos + 1].astype(np.int64) << 8)
    cut = int(round(cut_angle_deg * 100)) % 36000
    rel = (az - cut) % 36000
    new = np.empty(len(rel), bool)
    new[0] = True
    new[1:] = rel[1:] < rel[:-1]
    first_group = np.flatnonzero(new)
    bounds = np.append(starts[pk[first_group], gi[first_group]], len(xyz))
    t_first = mdl.timing_us[0, 0]
    sweeps = []
    for s, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        g0 = first_group[s]
        if b == a:
            continue
        k = pk[g0]
        tb, _, _, _ = _block_layout(mdl.kind, int(modes[k]), int(first_block[g0]))
        ts = int(packet_ns[k] + round((mdl.timing_us[tb, 0] - t_first) * 1000))
        sweeps.append(Sweep(
            xyz=xyz[a:b], timestamp_ns=ts, intensity=intensity[a:b], time_offset_ns=time_ns[a:b] - ts,
            ring=rings[a:b], return_index=rindex[a:b], frame="lidar",
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


# ---------------------------------------------------------------- writer
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


def velodyne_packets(firings: Firings, model: str | VelodyneModel = "VLP-16", return_mode: str = "strongest",
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Pack firing sequences into ``(P, 1206) uint8`` data packets and their ``(P,) int64`` times.

    Supports the single-bank models (VLP-16, VLP-32C, HDL-32E). A trailing partial packet is
    padded with empty sequences whose azimuth continues the mean rotation rate.
    """
    mdl = model if isinstance(model, VelodyneModel) else get_model(model)
    if mdl.kind == 2:
        raise ValueError("writing HDL-64E packets is not supported")
    if return_mode not in _MODE_CODE:
        raise ValueError(f"return_mode must be one of {sorted(_MODE_CODE)}, got {return_mode!r}")
    dual = return_mode == "dual"
    ts = np.ascontiguousarray(firings.timestamp_ns, np.int64)
    az = np.ascontiguousarray(firings.azimuth_deg, np.float64)
    dist = np.asarray(firings.distance_m, np.float64)
    s, L = ts.shape[0], mdl.n_lasers
    want = (s, 2, L) if dual else (s, L)
    if dist.ndim == 2 and not dual:
        dist = dist[:, None, :]
    elif dist.shape != want:
        raise ValueError(f"distance_m must have shape {want} for {return_mode} {mdl.name}, got {dist.shape}")
    if dist.shape[::2] != (s, L) or az.shape != (s,) or s == 0:
        raise ValueError(f"distance_m {dist.shape}, azimuth_deg {az.shape}, timestamp_ns {ts.shape} "
                         f"must agree on S > 0 sequences of {L} lasers")
    refl = (np.zeros(dist.shape, np.uint8) if firings.reflectivity is None
            else np.asarray(firings.reflectivity).reshape(dist.shape).astype(np.uint8))
    per_packet = mdl.sequences_per_packet // (2 if dual else 1)
    pad = -s % per_packet
    if pad:
        step = (np.diff(np.unwrap(np.radians(az))).mean() * 180 / math.pi) if s > 1 else 0.0
        az = np.concatenate([az, az[-1] + step * np.arange(1, pad + 1)])
        ts = np.concatenate([ts, ts[-1] + np.rint(mdl.sequence_period_us * 1000 * np.arange(1, pad + 1)).astype(np.int64)])
        dist = np.concatenate([dist, np.zeros((pad, *dist.shape[1:]))])
        refl = np.concatenate([refl, np.zeros((pad, *refl.shape[1:]), np.uint8)])
    p = len(ts) // per_packet
    with np.errstate(invalid="ignore"):
        raw = np.where(np.isfinite(dist) & (dist > 0), np.rint(dist / mdl.distance_resolution_m), 0)
    if raw.max(initial=0) > 65535:
        raise ValueError(f"distance over {65535 * mdl.distance_resolution_m:.3f} m cannot be encoded for {mdl.name}")
    raw = raw.astype(np.uint16)
    seq_per_block = CHANNELS // L
    blocks_per_return = per_packet // seq_per_block  # blocks holding one return of the packet
    # (P, blocks_per_return, R, 32) channel data; R = returns in this mode
    r = raw.shape[1]
    chan_d = raw.reshape(p, blocks_per_return, seq_per_block, r, L).transpose(0, 1, 3, 2, 4).reshape(p, blocks_per_return, r, 32)
    chan_r = refl.reshape(p, blocks_per_return, seq_per_block, r, L).transpose(0, 1, 3, 2, 4).reshape(p, blocks_per_return, r, 32)
    if dual:  # even block = last return, odd block = strongest
        chan_d, chan_r = chan_d[:, :, ::-1], chan_r[:, :, ::-1]
    chan_d = chan_d.reshape(p, BLOCKS, 32)
    chan_r = chan_r.reshape(p, BLOCKS, 32)
    block_az = np.rint(az.reshape(p, blocks_per_return, seq_per_block)[:, :, 0] * 100).astype(np.int64) % 36000
    block_az = np.repeat(block_az, r, axis=1)
    blocks = np.zeros((p, BLOCKS, BLOCK_SIZE), np.uint8)
    blocks[:, :, 0] = 0xFF
    blocks[:, :, 1] = 0xEE
    blocks[:, :, 2] = block_az & 0xFF
    blocks[:, :, 3] = block_az >> 8
    blocks[:, :, 4::3] = chan_d & 0xFF
    blocks[:, :, 5::3] = chan_d >> 8
    blocks[:, :, 6::3] = chan_r
    pkt_ts = ts.reshape(p, per_packet)[:, 0]
    usec = (pkt_ts // 1000) % 3_600_000_000
    packets = np.zeros((p, PACKET_SIZE), np.uint8)
    packets[:, :1200] = blocks.reshape(p, 1200)
    packets[:, 1200:1204] = usec.astype("<u4").view(np.uint8).reshape(p, 4)
    packets[:, 1204] = {"strongest": 0x37, "last": 0x38, "dual": 0x39}[return_mode]
    packets[:, 1205] = mdl.product_id
    return packets, pkt_ts


def write_velodyne_pcap(path: str | os.PathLike, firings: Firings, model: str | VelodyneModel = "VLP-16",
                        return_mode: str = "strongest", *, nanosecond: bool = False, port: int = 2368) -> int:
    """Write firing sequences as a pcap of Velodyne data packets; returns the packet count.

    The pcap record time of each packet is the time of its first firing (µs resolution unless
    ``nanosecond``); the packet's µs-since-hour field holds the same time.
    """
    packets, pkt_ts = velodyne_packets(firings, model, return_mode)
    with open(path, "wb") as f:
        f.write(udp_pcap_bytes(packets, pkt_ts, dst_port=port, nanosecond=nanosecond))
    return len(packets)


def _warmup() -> None:
    mdl = MODELS["VLP-16"]
    s = mdl.sequences_per_packet
    firings = Firings(np.arange(s, dtype=np.int64) * 55_296, np.linspace(0, 2, s), np.full((s, 16), 5.0))
    packets, ts = velodyne_packets(firings, mdl)
    data = udp_pcap_bytes(packets, ts)
    read_velodyne_pcap("<warmup>", data=data)
    read_velodyne_pcap("<warmup>", data=data, quantize_azimuth=True)
    cal = VelodyneCalibration(np.zeros(16), np.zeros(16), 0.002, dist_correction=np.full(16, 0.01))
    read_velodyne_pcap("<warmup>", data=data, calibration=cal)
