"""Velodyne sensor models: packet layout, firing timing and the manuals' default beam tables.

Packet layout (1206-byte UDP payload): 12 blocks of 100 bytes (flag, azimuth u16 in 0.01°,
32 × (distance u16, reflectivity u8)), then the µs since the top of the hour (u32), the return
mode (0x37 strongest, 0x38 last, 0x39 dual) and the product id. Block flags name the laser
bank: ``0xEEFF`` lasers 0-31, ``0xDDFF`` 32-63 (HDL-64E lower bank, VLS-128 bank 2),
``0xCCFF`` 64-95 and ``0xBBFF`` 96-127 (VLS-128). HDL-64E packets carry a status type/value
byte pair instead of the return mode and product id, cycling through the unit's calibration.

Channel layouts (:attr:`VelodyneModel.kind`): 0 two 16-laser firing sequences per block
(VLP-16, Puck Hi-Res); 1 one 32-laser sequence per block (HDL-32E, VLP-32C); 2 HDL-64E upper
and lower bank blocks in pairs; 3 VLS-128 / Alpha Prime, four bank blocks per 128-laser
sequence (single return: 3 sequences per packet; dual: one sequence in blocks 0-7 as (last,
strongest) pairs per bank, blocks 8-11 unused).

Timing (µs after the packet's time stamp, Velodyne manuals): VLP-16 and Puck Hi-Res 2.304 per
firing, 55.296 per sequence; VLP-32C pairs every 2.304, 55.296 per block; HDL-32E 1.152 per
firing, 46.080 per block; HDL-64E S2 48 and S3 57.6 per upper/lower pair; VLS-128 eight lasers
per firing group every 2.66666, groups 0-7 then two maintenance slots then 8-15 (20 slots,
53.333 per sequence), the time stamp 7 µs after the first group (VeloView 5.1 and
velodyne_decoder 3.1; the manual's firmware 5.2.3 lengthens the group to 2.89 µs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from formats.velodyne_calibration import VelodyneCalibration

PACKET_SIZE = 1206
BLOCKS = 12
CHANNELS = 32
BLOCK_SIZE = 100
FLAG_UPPER = 0xEEFF
FLAG_LOWER = 0xDDFF
BANK_FLAGS = (0xEEFF, 0xDDFF, 0xCCFF, 0xBBFF)  # lasers 0-31, 32-63, 64-95, 96-127
RETURN_MODES = {0x37: "strongest", 0x38: "last", 0x39: "dual"}
_VLS128_GROUP_US = 2.66666
_VLS128_TOH_US = 7.0


def _timing_us(name: str) -> np.ndarray:
    """``(12, 32) float64`` µs: firing time of (single-return block, channel) after the packet time stamp."""
    b = np.arange(BLOCKS)[:, None]
    j = np.arange(CHANNELS)[None, :]
    if name in ("VLP-16", "Puck Hi-Res"):
        return (2 * b + j // 16) * 55.296 + (j % 16) * 2.304
    if name == "VLP-32C":
        return b * 55.296 + (j // 2) * 2.304
    if name == "HDL-32E":
        return b * 46.080 + j * 1.152
    if name in ("HDL-64E_S2", "HDL-64E_S3"):
        s2 = name.endswith("S2")
        pattern = np.array([0.0, 1.26, 2.46, 3.66] if s2 else [0.0, 1.3, 2.5, 3.7])
        return (b // 2) * (48.0 if s2 else 57.6) + (j // 4) * (6.0 if s2 else 7.2) + pattern[j % 4]
    if name == "VLS-128":
        laser = 32 * (b % 4) + j
        slot = laser // 8 + laser // 64 * 2
        return ((b // 4) * 20 + slot) * _VLS128_GROUP_US - _VLS128_TOH_US
    raise ValueError(name)


def _interleaved(lowest: float, step: float) -> list[float]:
    """16 elevations, laser ids alternating between the lower and the upper half (VLP-16 order)."""
    return [lowest + step * (k // 2 if k % 2 == 0 else 8 + k // 2) for k in range(16)]


_ELEVATION_DEG = {
    "VLP-16": _interleaved(-15.0, 2.0),
    "Puck Hi-Res": [round(v, 3) for v in _interleaved(-10.0, 4.0 / 3.0)],
    "HDL-32E": [-30.67, -9.33, -29.33, -8, -28, -6.67, -26.67, -5.33, -25.33, -4, -24, -2.67, -22.67,
                -1.33, -21.33, 0, -20, 1.33, -18.67, 2.67, -17.33, 4, -16, 5.33, -14.67, 6.67, -13.33, 8,
                -12, 9.33, -10.67, 10.67],
    "VLP-32C": [-25, -1, -1.667, -15.639, -11.31, 0, -0.667, -8.843, -7.254, 0.333, -0.333, -6.148,
                -5.333, 1.333, 0.667, -4, -4.667, 1.667, 1, -3.667, -3.333, 3.333, 2.333, -2.667, -3, 7,
                4.667, -2.333, -2, 15, 10.333, -1.333],
    # VLS-128 user manual, laser id order
    "VLS-128": [-11.742, -1.99, 3.4, -5.29, -0.78, 4.61, -4.08, 1.31, -6.5, -1.11, 4.28, -4.41, 0.1, 6.48,
                -3.2, 2.19, -3.86, 1.53, -9.244, -1.77, 2.74, -5.95, -0.56, 4.83, -2.98, 2.41, -6.28, -0.89,
                3.62, -5.07, 0.32, 7.58, -0.34, 5.18, -3.64, 1.75, -25.0, -2.43, 2.96, -5.73, 0.54, 9.7,
                -2.76, 2.63, -7.65, -1.55, 3.84, -4.85, 3.18, -5.51, -0.12, 5.73, -4.3, 1.09, -16.042,
                -2.21, 4.06, -4.63, 0.76, 15.0, -3.42, 1.97, -6.85, -1.33, -5.62, -0.23, 5.43, -3.53, 0.98,
                -19.582, -2.32, 3.07, -4.74, 0.65, 11.75, -2.65, 1.86, -7.15, -1.44, 3.95, -2.1, 3.29, -5.4,
                -0.01, 4.5, -4.19, 1.2, -13.565, -1.22, 4.17, -4.52, 0.87, 6.08, -3.31, 2.08, -6.65, 1.42,
                -10.346, -1.88, 3.51, -6.06, -0.67, 4.72, -3.97, 2.3, -6.39, -1.0, 4.39, -5.18, 0.21, 6.98,
                -3.09, 4.98, -3.75, 1.64, -8.352, -2.54, 2.85, -5.84, -0.45, 8.43, -2.87, 2.52, -6.17,
                -1.66, 3.73, -4.96, 0.43],
}
# vertical offset of each laser's origin (mm): the manuals' tables (VLP-16 41.91 mm, VLP-32C
# 42.40 mm times tan(-elevation)); VLS-128 58.63 mm times tan(-elevation), VeloView's calibration
_VERT_OFFSET_MM = {
    "VLP-16": -41.91 * np.tan(np.radians(_ELEVATION_DEG["VLP-16"])),
    "Puck Hi-Res": [7.4, -0.9, 6.5, -1.8, 5.5, -2.7, 4.6, -3.7, 3.7, -4.6, 2.7, -5.5, 1.8, -6.5, 0.9, -7.4],
    "VLP-32C": -42.40 * np.tan(np.radians(_ELEVATION_DEG["VLP-32C"])),
    "HDL-32E": [17.17, 4.76, 16.27, 4.07, 15.40, 3.38, 14.54, 2.70, 13.71, 2.02, 12.89, 1.35, 12.09, 0.67, 11.31,
                0.0, 10.54, -0.67, 9.78, -1.35, 9.04, -2.02, 8.30, -2.70, 7.58, -3.38, 6.86, -4.07, 6.15, -4.76,
                5.45, -5.45],
    "VLS-128": -58.63 * np.tan(np.radians(_ELEVATION_DEG["VLS-128"])),
}
_ROT_DEG = {
    "VLP-32C": [-1.4, 4.2, -1.4, 1.4, -1.4, 1.4, -4.2, 1.4, -1.4, 4.2, -1.4, 1.4, -4.2, 1.4, -4.2, 1.4,
                -1.4, 4.2, -1.4, 4.2, -4.2, 1.4, -1.4, 1.4, -1.4, 1.4, -1.4, 4.2, -4.2, 1.4, -1.4, 1.4],
    "VLS-128": [-6.354, -4.548, -2.732, -0.911, 0.911, 2.732, 4.548, 6.354] * 16,
}


@dataclass(frozen=True)
class VelodyneModel:
    """A sensor model's packet layout and timing.

    Attributes:
        name: a key of :data:`MODELS`.
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
        """Channel→laser layout (module docstring): 0 VLP-16 style, 1 32 lasers, 2 HDL-64E, 3 VLS-128."""
        return {16: 0, 32: 1, 64: 2, 128: 3}[self.n_lasers]

    @property
    def sequences_per_packet(self) -> int:
        return BLOCKS * CHANNELS // self.n_lasers

    def default_calibration(self) -> VelodyneCalibration:
        """The manual's per-laser angles (None for HDL-64E: each unit has its own calibration)."""
        if self.name not in _ELEVATION_DEG:
            raise ValueError(f"{self.name} has no default calibration: give a YAML or read it from the packets")
        rot = _ROT_DEG.get(self.name, [0.0] * self.n_lasers)
        return VelodyneCalibration(rot_correction=np.radians(rot),
                                   vert_correction=np.radians(_ELEVATION_DEG[self.name]),
                                   vert_offset_correction=np.asarray(_VERT_OFFSET_MM[self.name]) / 1000.0,
                                   distance_resolution_m=self.distance_resolution_m)

    def beam_table(self) -> "BeamTable":
        """Per-laser geometry and timing of one firing sequence (to build a simulated beam pattern)."""
        if self.kind == 2:
            raise ValueError("HDL-64E beam tables come from a unit's calibration")
        cal = self.default_calibration()
        t = self.timing_us
        firing = {0: t.ravel()[:16], 1: t[0], 3: t[:4].ravel()}[self.kind]
        return BeamTable(
            elevation_rad=cal.vert_correction.copy(), azimuth_offset_rad=cal.rot_correction.copy(),
            firing_offset_ns=np.rint((firing - firing[0]) * 1000).astype(np.int64),
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
        VelodyneModel("Puck Hi-Res", 16, 0x24, 0.002, 55.296),
        VelodyneModel("VLP-32C", 32, 0x28, 0.004, 55.296),
        VelodyneModel("HDL-32E", 32, 0x21, 0.002, 46.080),
        VelodyneModel("HDL-64E_S2", 64, None, 0.002, 48.0),
        VelodyneModel("HDL-64E_S3", 64, None, 0.002, 57.6),
        VelodyneModel("VLS-128", 128, 0xA1, 0.004, 20 * _VLS128_GROUP_US),
    ]
}
BY_PRODUCT = {m.product_id: m for m in MODELS.values() if m.product_id is not None}
_ALIASES = {"ALPHAPRIME": "VLS-128", "VLP16HIRES": "Puck Hi-Res", "PUCKHIRES": "Puck Hi-Res"}


def _key(name: str) -> str:
    return name.upper().replace("_", "").replace("-", "").replace(" ", "")


def get_model(name: str) -> VelodyneModel:
    """The model by name (case, space and ``-``/``_`` insensitive, e.g. ``"vlp16"``, ``"HDL-64E S3"``,
    ``"Alpha Prime"`` for the VLS-128, ``"VLP-16 Hi-Res"`` for the Puck Hi-Res)."""
    key = _ALIASES.get(_key(name), name)
    for m in MODELS.values():
        if _key(m.name) == _key(key):
            return m
    raise ValueError(f"unknown Velodyne model {name!r}; known: {sorted(MODELS)} (and 'Alpha Prime')")
