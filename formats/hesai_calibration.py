"""Hesai correction files: the angle correction CSV (Pandar XT32, QT128) and the AT128 binary
angle correction (``.dat``, version 1.5).

Angle correction CSV: a header line, then one line per channel ``channel id (1-based),
elevation (°), azimuth offset (°)``; the azimuth offset is added to the block's encoder
azimuth.

AT128 correction (little-endian): a 16-byte header (``0xEE 0xFF``, version major and minor,
channel count, mirror count, frame (mirror field) count, 8 frame-config bytes, resolution),
then per field its start and end encoder azimuth (u32), per channel an azimuth and an
elevation (i32), all times ``resolution`` in 1/25600° (0.01° / 256), then per channel 180
azimuth and 180 elevation adjustments (i8, times ``resolution`` in 0.01°, one per 2° of
encoder azimuth, interpolated linearly), then a SHA-256.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from formats.errors import FormatError

ADJUST_STEPS = 180  # AT128 adjustments per channel: one per 2° of encoder azimuth
_HEADER = np.dtype([("delimiter", "u1", 2), ("version", "u1", 2), ("channels", "u1"), ("mirrors", "u1"),
                    ("frames", "u1"), ("frame_config", "u1", 8), ("resolution", "u1")])


@dataclass(frozen=True, eq=False)
class AngleCorrection:
    """Per-channel beam angles of a spinning Hesai (XT32, QT128): ``elevation_deg`` and
    ``azimuth_deg`` ``(L,) float64`` (the offset added to the encoder azimuth)."""

    elevation_deg: np.ndarray
    azimuth_deg: np.ndarray

    @property
    def channels(self) -> int:
        return len(self.elevation_deg)


@dataclass(frozen=True, eq=False)
class AT128Correction:
    """The AT128's mirror fields and beams, in 1/25600° (resolution applied).

    Attributes:
        start_frame, end_frame: ``(F,) int64`` encoder azimuth where each mirror field starts / ends.
        azimuth, elevation: ``(L,) int64`` per channel.
        azimuth_adjust, elevation_adjust: ``(L * 180,) int64`` in 0.01° (one per 2° of encoder azimuth).
    """

    start_frame: np.ndarray
    end_frame: np.ndarray
    azimuth: np.ndarray
    elevation: np.ndarray
    azimuth_adjust: np.ndarray
    elevation_adjust: np.ndarray

    @property
    def channels(self) -> int:
        return len(self.azimuth)


def read_angle_correction_csv(path: str | os.PathLike) -> AngleCorrection:
    """Read an angle correction CSV; FormatError names the line at fault."""
    spath = os.fspath(path)
    try:
        with open(spath, encoding="utf-8-sig") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(spath, None, f"a readable angle correction CSV ({exc})") from None
    rows: list[tuple[float, float]] = []  # (elevation, azimuth) degrees per channel
    for k, line in enumerate(lines[1:], start=2):
        parts = [p.strip() for p in line.split(",")]
        try:
            cid, el, az = int(parts[0]), float(parts[1]), float(parts[2])
        except (ValueError, IndexError):
            raise FormatError(spath, None, f"line {k}: 'channel, elevation, azimuth' numbers, "
                                           f"got {line[:60]!r}") from None
        if cid != len(rows) + 1 or not (np.isfinite(el) and np.isfinite(az)):
            raise FormatError(spath, None, f"line {k}: channel {len(rows) + 1} with finite angles, got {line[:60]!r}")
        rows.append((el, az))
    if not rows:
        raise FormatError(spath, None, "a header line and one line per channel")
    a = np.array(rows)
    return AngleCorrection(a[:, 0].copy(), a[:, 1].copy())


def parse_at128_correction(data: bytes, path: str = "<bytes>") -> AT128Correction:
    """An :class:`AT128Correction` from the bytes of an AT128 ``.dat`` correction (version 1.5)."""
    if len(data) < _HEADER.itemsize:
        raise FormatError(path, 0, f"a {_HEADER.itemsize}-byte AT128 correction header, file has {len(data)} bytes")
    h = np.frombuffer(data[:_HEADER.itemsize], _HEADER)[0]
    if bytes(h["delimiter"]) != b"\xee\xff":
        raise FormatError(path, 0, f"the AT128 correction delimiter ee ff, got {bytes(h['delimiter']).hex()}")
    if tuple(h["version"]) != (1, 5):
        raise FormatError(path, 2, f"AT128 correction version 1.5, got {h['version'][0]}.{h['version'][1]}")
    f, ch, res = int(h["frames"]), int(h["channels"]), int(h["resolution"])
    if not (1 <= f <= 8 and ch >= 1 and res >= 1):
        raise FormatError(path, 4, f"1-8 mirror fields, channels and resolution >= 1, got {f}, {ch}, {res}")
    layout = [("start", "<u4", f), ("end", "<u4", f), ("azimuth", "<i4", ch), ("elevation", "<i4", ch),
              ("azimuth_adjust", "i1", ch * ADJUST_STEPS), ("elevation_adjust", "i1", ch * ADJUST_STEPS),
              ("sha256", "u1", 32)]
    body = np.dtype(layout)
    if len(data) != _HEADER.itemsize + body.itemsize:
        raise FormatError(path, _HEADER.itemsize, f"{body.itemsize} bytes after the header for {f} fields and "
                                                  f"{ch} channels, got {len(data) - _HEADER.itemsize}")
    b = np.frombuffer(data[_HEADER.itemsize:], body)[0]
    return AT128Correction(*(b[k].astype(np.int64) * res for k in (
        "start", "end", "azimuth", "elevation", "azimuth_adjust", "elevation_adjust")))


def read_at128_correction(path: str | os.PathLike) -> AT128Correction:
    """Read an AT128 ``.dat`` angle correction (version 1.5)."""
    spath = os.fspath(path)
    try:
        with open(spath, "rb") as f:
            data = f.read(1 << 20)  # a correction is ~ 47 kB
    except OSError as exc:
        raise FormatError(spath, None, f"a readable AT128 correction ({exc.strerror})") from None
    return parse_at128_correction(data, spath)
