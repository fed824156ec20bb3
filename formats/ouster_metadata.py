"""Ouster sensor metadata JSON (legacy flat and current nested formats) and the packet layouts.

Current format (firmware 2.x/3.x, ouster-sdk): ``beam_intrinsics`` (``beam_altitude_angles``,
``beam_azimuth_angles`` in degrees, ``lidar_origin_to_beam_origin_mm``,
``beam_to_lidar_transform``), ``lidar_intrinsics.lidar_to_sensor_transform``,
``lidar_data_format`` (``pixels_per_column``, ``columns_per_packet``, ``columns_per_frame``,
``column_window``, ``udp_profile_lidar``), ``config_params`` (``lidar_mode``,
``udp_port_lidar``), ``sensor_info`` (``prod_sn``, ``initialization_id``). Legacy format
(firmware 1.x/2.0): the same keys flat at the top level, ``data_format`` for the data format
(firmware 1.12 has none: 64 pixels, 16 columns per packet, the width from ``lidar_mode``).
Transforms are 16 numbers, row-major 4×4, translations in millimetres.

Lidar packet layouts (Ouster sensor data docs; byte offsets, little-endian):

- ``LEGACY``: no packet header; per column: time stamp u64 ns @0, measurement id u16 @8, frame
  id u16 @10, encoder count u32 @12, then 12 bytes per pixel (range u32 & 0xFFFFF mm @0,
  reflectivity u8 @4, signal u16 @6, near-IR u16 @8), then the column status u32 (bit 0 valid).
- others: 32-byte packet header (packet type u16 @0 = 1, frame id u16 @2, init id u24 @4,
  serial number u40 @7), per column a 12-byte header (time stamp u64 ns @0, measurement id u16
  @8, status u16 @10, bit 0 valid) and the pixels, then a 32-byte packet footer.
  ``RNG19_RFL8_SIG16_NIR16`` 12 bytes (range u32 & 0x7FFFF mm @0, reflectivity @4, signal u16
  @6, near-IR u16 @8); ``RNG19_RFL8_SIG16_NIR16_DUAL`` 16 bytes (range u32 & 0x7FFFF @0,
  reflectivity @3, range 2 @4, reflectivity 2 @7, signal u16 @8, signal 2 @10, near-IR @12);
  ``RNG15_RFL8_NIR8`` 4 bytes (range (u16 & 0x7FFF) × 8 mm @0, reflectivity @2, near-IR × 16 @3).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from formats.errors import FormatError, load_json

# profile -> (pixel bytes, returns, range offsets, range kind, reflectivity offsets, signal offsets,
# near-IR offset, near-IR scale); range kind 0: u32 & 0xFFFFF, 1: u32 & 0x7FFFF, 2: (u16 & 0x7FFF) << 3
PROFILES: dict[str, tuple[int, int, tuple[int, int], int, tuple[int, int], tuple[int, int], int, int]] = {
    "LEGACY": (12, 1, (0, 0), 0, (4, 4), (6, 6), 8, 1),
    "RNG19_RFL8_SIG16_NIR16": (12, 1, (0, 0), 1, (4, 4), (6, 6), 8, 1),
    "RNG19_RFL8_SIG16_NIR16_DUAL": (16, 2, (0, 4), 1, (3, 7), (8, 10), 12, 1),
    "RNG15_RFL8_NIR8": (4, 1, (0, 0), 2, (2, 2), (-1, -1), 3, 16),
}
MAX_PIXELS = 128
MAX_COLUMNS = 4096


@dataclass(frozen=True, eq=False)
class OusterMetadata:
    """What decoding needs from a sensor's metadata.

    Attributes:
        pixels_per_column: H beams; columns_per_packet; columns_per_frame: W.
        column_window: ``(first, last)`` measurement ids the sensor sends (inclusive, may wrap).
        profile: a key of :data:`PROFILES`.
        beam_altitude_deg, beam_azimuth_deg: ``(H,) float64`` beam elevation and azimuth offset.
        beam_to_lidar_mm: ``(4, 4) float64`` (translation in mm).
        lidar_to_sensor_mm: ``(4, 4) float64`` lidar frame → sensor frame (translation in mm).
        udp_port_lidar: the lidar packets' UDP port, or None (unknown: any port).
        prod_sn, init_id: the sensor's serial number and initialisation id (0: not checked).
    """

    pixels_per_column: int
    columns_per_packet: int
    columns_per_frame: int
    column_window: tuple[int, int]
    profile: str
    beam_altitude_deg: np.ndarray
    beam_azimuth_deg: np.ndarray
    beam_to_lidar_mm: np.ndarray
    lidar_to_sensor_mm: np.ndarray
    udp_port_lidar: int | None = None
    prod_sn: int = 0
    init_id: int = 0

    @property
    def legacy(self) -> bool:
        return self.profile == "LEGACY"

    @property
    def column_size(self) -> int:
        pixel = PROFILES[self.profile][0]
        return (16 + pixel * self.pixels_per_column + 4) if self.legacy else 12 + pixel * self.pixels_per_column

    @property
    def packet_size(self) -> int:
        """Bytes of one lidar packet (UDP payload)."""
        return self.columns_per_packet * self.column_size + (0 if self.legacy else 64)

    def xyz_lut(self) -> tuple[np.ndarray, np.ndarray]:
        """``(direction, offset)``, each ``(W, H, 3) float64``: a pixel of measurement id ``m`` and
        beam ``u`` with range ``r`` metres lies at ``direction[m, u] * r + offset[m, u]`` metres in
        the sensor frame (ouster-sdk's XYZ look-up table: encoder angle ``2π (1 - m / W)``, beam
        azimuth and altitude, the beam origin ``beam_to_lidar`` away from the axis, then
        ``lidar_to_sensor``)."""
        w = self.columns_per_frame
        encoder = 2.0 * np.pi * (1.0 - np.arange(w) / w)[:, None]
        azimuth = -np.radians(self.beam_azimuth_deg)[None, :]
        altitude = np.radians(self.beam_altitude_deg)[None, :]
        direction = np.stack(np.broadcast_arrays(np.cos(encoder + azimuth) * np.cos(altitude),
                                                 np.sin(encoder + azimuth) * np.cos(altitude),
                                                 np.sin(altitude)), axis=-1)
        bx, bz = self.beam_to_lidar_mm[0, 3], self.beam_to_lidar_mm[2, 3]
        dist = np.hypot(bx, bz) if bz != 0 else bx
        offset = np.stack(np.broadcast_arrays(np.cos(encoder) * bx - direction[..., 0] * dist,
                                              np.sin(encoder) * bx - direction[..., 1] * dist,
                                              -direction[..., 2] * dist + bz), axis=-1)
        rot = self.lidar_to_sensor_mm[:3, :3]
        direction = direction @ rot.T
        offset = offset @ rot.T + self.lidar_to_sensor_mm[:3, 3]
        return np.ascontiguousarray(direction), np.ascontiguousarray(offset * 1e-3)


def _matrix(value: object, what: str, path: str) -> np.ndarray:
    m = np.asarray(value, dtype=np.float64) if isinstance(value, list) else np.empty(0)
    if m.shape != (16,) or not np.all(np.isfinite(m)):
        raise FormatError(path, None, f"{what}: 16 finite numbers (a row-major 4x4 matrix)")
    return m.reshape(4, 4)


def _int(value: object, what: str, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise FormatError(path, None, f"{what}: an integer in [{lo}, {hi}], got {value!r}")
    return value


def _number(value: object) -> int:
    """A serial number or id given as a number or a numeric string (0 when absent or not numeric)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else 0


def parse_ouster_metadata(doc: object, path: str | os.PathLike = "<metadata>") -> OusterMetadata:
    """An :class:`OusterMetadata` from a parsed metadata document of either format.

    Raises:
        FormatError: a missing or invalid field, named by its JSON path.
    """
    path = os.fspath(path)
    if not isinstance(doc, dict):
        raise FormatError(path, None, "an Ouster metadata JSON object")
    nested = "beam_intrinsics" in doc or "lidar_data_format" in doc
    if nested:
        beams, fmt = doc.get("beam_intrinsics"), doc.get("lidar_data_format")
        lidar, config, info = doc.get("lidar_intrinsics"), doc.get("config_params") or {}, doc.get("sensor_info") or {}
        if not (isinstance(beams, dict) and isinstance(fmt, dict) and isinstance(lidar, dict)
                and isinstance(config, dict) and isinstance(info, dict)):
            raise FormatError(path, None, "beam_intrinsics, lidar_data_format and lidar_intrinsics objects")
        prefix = ("beam_intrinsics.", "lidar_data_format.", "lidar_intrinsics.")
    else:
        beams = lidar = config = info = doc
        fmt = doc.get("data_format")
        if fmt is None:  # firmware 1.12: 64 pixels, 16 columns per packet
            width = str(doc.get("lidar_mode", "")).split("x")[0]
            fmt = {"pixels_per_column": 64, "columns_per_packet": 16,
                   "columns_per_frame": int(width) if width.isdigit() else None}
        if not isinstance(fmt, dict):
            raise FormatError(path, None, "data_format: an object")
        prefix = ("", "data_format.", "")
    h = _int(fmt.get("pixels_per_column"), prefix[1] + "pixels_per_column", path, 1, MAX_PIXELS)
    cpp = _int(fmt.get("columns_per_packet"), prefix[1] + "columns_per_packet", path, 1, MAX_COLUMNS)
    w = _int(fmt.get("columns_per_frame"), prefix[1] + "columns_per_frame", path, 1, MAX_COLUMNS)
    window = fmt.get("column_window", [0, w - 1])
    if not (isinstance(window, list) and len(window) == 2):
        raise FormatError(path, None, f"{prefix[1]}column_window: [first, last]")
    first = _int(window[0], prefix[1] + "column_window[0]", path, 0, w - 1)
    last = _int(window[1], prefix[1] + "column_window[1]", path, 0, w - 1)
    profile = fmt.get("udp_profile_lidar", "LEGACY")
    if profile not in PROFILES:
        raise FormatError(path, None, f"{prefix[1]}udp_profile_lidar one of {sorted(PROFILES)}, got {profile!r}")
    if fmt.get("header_type", "STANDARD") != "STANDARD":
        raise FormatError(path, None, f"{prefix[1]}header_type STANDARD, got {fmt.get('header_type')!r}")
    angles = {}
    for key in ("beam_altitude_angles", "beam_azimuth_angles"):
        a = np.asarray(beams.get(key), dtype=np.float64) if isinstance(beams.get(key), list) else np.empty(0)
        if a.shape != (h,) or not np.all(np.isfinite(a)):
            raise FormatError(path, None, f"{prefix[0]}{key}: {h} finite numbers (one per pixel of a column)")
        angles[key] = a
    if "beam_to_lidar_transform" in beams:
        beam_to_lidar = _matrix(beams["beam_to_lidar_transform"], prefix[0] + "beam_to_lidar_transform", path)
    else:
        origin = beams.get("lidar_origin_to_beam_origin_mm", 0.0)
        if isinstance(origin, bool) or not isinstance(origin, (int, float)) or not np.isfinite(origin):
            raise FormatError(path, None, f"{prefix[0]}lidar_origin_to_beam_origin_mm: a number")
        beam_to_lidar = np.eye(4)
        beam_to_lidar[0, 3] = origin
    lidar_to_sensor = _matrix(lidar.get("lidar_to_sensor_transform"), prefix[2] + "lidar_to_sensor_transform", path)
    port = config.get("udp_port_lidar")
    port = port if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536 else None
    return OusterMetadata(h, cpp, w, (first, last), profile, angles["beam_altitude_angles"],
                          angles["beam_azimuth_angles"], beam_to_lidar, lidar_to_sensor, port,
                          _number(info.get("prod_sn")), _number(info.get("initialization_id")))


def read_ouster_metadata(path: str | os.PathLike) -> OusterMetadata:
    """Read a metadata JSON file (either format); ``FormatError`` names the file and field."""
    return parse_ouster_metadata(load_json(path, "Ouster metadata JSON"), path)
