"""Per-laser Velodyne calibration: ROS ``velodyne_pointcloud`` YAML and HDL-64E status bytes.

Angles are radians as in the ROS database format: ``vert_correction`` is the laser's
elevation, ``rot_correction`` is subtracted from the encoder azimuth (both measured the
Velodyne way, azimuth clockwise seen from above). Distances in metres.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from formats.errors import FormatError

_FLOAT_FIELDS = ("rot_correction", "vert_correction", "dist_correction", "dist_correction_x",
                 "dist_correction_y", "vert_offset_correction", "horiz_offset_correction",
                 "focal_distance", "focal_slope")


@dataclass(frozen=True, eq=False)
class VelodyneCalibration:
    """Calibration of L lasers, indexed by laser id (the packet's channel order).

    Attributes:
        rot_correction: ``(L,) float64`` rad, subtracted from the encoder azimuth.
        vert_correction: ``(L,) float64`` rad, elevation.
        dist_correction, dist_correction_x, dist_correction_y: ``(L,) float64`` m.
        vert_offset_correction, horiz_offset_correction: ``(L,) float64`` m.
        focal_distance, focal_slope: ``(L,) float64`` intensity correction terms.
        min_intensity, max_intensity: ``(L,) float64`` intensity clamp.
        two_pt_correction: ``(L,) bool`` apply the two-point distance correction.
        distance_resolution_m: metres per raw distance unit.

    The model is ROS ``velodyne_pointcloud``'s; terms left at their neutral value (0, or the
    0..255 intensity clamp) have no effect.
    """

    rot_correction: np.ndarray
    vert_correction: np.ndarray
    distance_resolution_m: float
    dist_correction: np.ndarray | None = None
    dist_correction_x: np.ndarray | None = None
    dist_correction_y: np.ndarray | None = None
    vert_offset_correction: np.ndarray | None = None
    horiz_offset_correction: np.ndarray | None = None
    focal_distance: np.ndarray | None = None
    focal_slope: np.ndarray | None = None
    min_intensity: np.ndarray | None = None
    max_intensity: np.ndarray | None = None
    two_pt_correction: np.ndarray | None = None

    def __post_init__(self) -> None:
        rot = np.ascontiguousarray(self.rot_correction, dtype=np.float64)
        n = rot.shape[0]
        if rot.shape != (n,) or n == 0:
            raise ValueError(f"rot_correction must have shape (L,), got {rot.shape}")
        defaults = {"min_intensity": 0.0, "max_intensity": 255.0}
        for name in ("rot_correction", "vert_correction", *_FLOAT_FIELDS[2:], "min_intensity", "max_intensity"):
            value = getattr(self, name)
            arr = (np.full(n, defaults.get(name, 0.0)) if value is None
                   else np.ascontiguousarray(value, dtype=np.float64))
            if arr.shape != (n,) or not np.all(np.isfinite(arr)):
                raise ValueError(f"calibration {name} must be finite with shape ({n},), got {arr.shape}")
            object.__setattr__(self, name, arr)
        two = np.zeros(n, bool) if self.two_pt_correction is None else np.asarray(self.two_pt_correction, bool)
        if two.shape != (n,):
            raise ValueError(f"two_pt_correction must have shape ({n},), got {two.shape}")
        object.__setattr__(self, "two_pt_correction", np.ascontiguousarray(two))
        if not (self.distance_resolution_m > 0):
            raise ValueError(f"distance_resolution_m must be > 0, got {self.distance_resolution_m}")

    @property
    def n_lasers(self) -> int:
        return len(self.rot_correction)

    @property
    def ring(self) -> np.ndarray:
        """``(L,) uint16``: each laser's rank by elevation (0 = lowest), ties by laser id."""
        ring = np.empty(self.n_lasers, np.uint16)
        ring[np.argsort(self.vert_correction, kind="stable")] = np.arange(self.n_lasers)
        return ring

    def table(self) -> np.ndarray:
        """``(L, 14) float64`` for the kernels: sin/cos of vert and rot, the other terms, two-point flag."""
        return np.ascontiguousarray(np.stack([
            np.sin(self.vert_correction), np.cos(self.vert_correction),
            np.sin(self.rot_correction), np.cos(self.rot_correction),
            self.dist_correction, self.dist_correction_x, self.dist_correction_y,
            self.vert_offset_correction, self.horiz_offset_correction,
            self.focal_distance, self.focal_slope, self.min_intensity, self.max_intensity,
        ] + [np.asarray(self.two_pt_correction, dtype=np.float64)], axis=1))


def read_calibration_yaml(path: str | os.PathLike) -> VelodyneCalibration:
    """Read a ROS ``velodyne_pointcloud`` calibration YAML (``lasers:`` list with ``laser_id``)."""
    import yaml

    spath = os.fspath(path)
    try:
        with open(spath) as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise FormatError(spath, None, f"a readable calibration YAML ({exc})") from exc
    return calibration_from_dict(doc, spath)


def calibration_from_dict(doc: object, path: str = "<dict>") -> VelodyneCalibration:
    """Build a calibration from the parsed ROS YAML mapping (see :func:`read_calibration_yaml`)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("lasers"), list) or not doc["lasers"]:
        raise FormatError(path, None, "a mapping with a non-empty 'lasers' list")
    lasers = doc["lasers"]
    n = int(doc.get("num_lasers", len(lasers)))
    cols: dict[str, np.ndarray] = {f: np.zeros(n) for f in _FLOAT_FIELDS}
    cols["min_intensity"] = np.zeros(n)
    cols["max_intensity"] = np.full(n, 255.0)
    two = np.zeros(n, bool)
    seen = np.zeros(n, bool)
    for k, laser in enumerate(lasers):
        try:
            i = int(laser["laser_id"])
            if not 0 <= i < n:
                raise ValueError(f"laser_id {i} outside 0..{n - 1}")
            for f in ("rot_correction", "vert_correction"):
                cols[f][i] = float(laser[f])
            for f in _FLOAT_FIELDS[2:]:
                cols[f][i] = float(laser.get(f, 0.0))
            cols["min_intensity"][i] = np.floor(float(laser.get("min_intensity", 0)))
            cols["max_intensity"][i] = np.floor(float(laser.get("max_intensity", 255)))
            # ROS defaults the flag to false; velodyne_decoder applies the correction whenever
            # per-axis distance corrections are given, and so do we when the flag is absent
            two[i] = bool(laser.get("two_pt_correction_available",
                                    cols["dist_correction_x"][i] != 0 or cols["dist_correction_y"][i] != 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(path, None,
                              f"lasers[{k}] with laser_id, rot_correction, vert_correction ({exc})") from exc
        seen[i] = True
    if not seen.all():
        raise FormatError(path, None,
                          f"calibration for every laser 0..{n - 1}, missing {np.flatnonzero(~seen).tolist()}")
    try:
        res = float(doc.get("distance_resolution", 0.002))
        return VelodyneCalibration(distance_resolution_m=res, two_pt_correction=two, **cols)
    except ValueError as exc:
        raise FormatError(path, None, str(exc)) from exc


# ---------------------------------------------------------------- HDL-64E status cycle
_STATUS_TYPES = b"HMSDNYGTV"  # time/status bytes; every other type byte carries calibration data
_CALIB_CYCLE = 1820  # bytes in one cycle, starting at the "UNIT#" token


def _crc16(data: bytes) -> int:
    """CRC-16 (poly 0x8005, init 0, not reflected), as the HDL-64E S3 manual specifies."""
    reg = 0
    for octet in data:
        reg ^= octet << 8
        for _ in range(8):
            reg = ((reg << 1) ^ 0x8005) if reg & 0x8000 else (reg << 1)
            reg &= 0xFFFF
    return reg


def calibration_from_hdl64e_status(status_type: np.ndarray, status_value: np.ndarray,
                                   path: str = "<bytes>") -> tuple[VelodyneCalibration, str]:
    """Recover the HDL-64E S2/S3 calibration from the status bytes of consecutive packets.

    Args:
        status_type, status_value: ``(P,) uint8`` bytes 1204 and 1205 of each data packet,
            in capture order.

    Returns:
        The calibration and the model ("S2" or "S3"; S3 packets carry a 'W' warning byte and a
        CRC-16 over the laser records, S2 stores the cycle length instead).

    Raises:
        FormatError: no complete cycle with a valid checksum in the stream.
    """
    stype = np.asarray(status_type, np.uint8)
    sval = np.asarray(status_value, np.uint8)
    is_s3 = bool(np.any(stype == ord("W")))
    data = sval[~np.isin(stype, np.frombuffer(_STATUS_TYPES, np.uint8))].tobytes()
    start = data.find(b"UNIT#")
    while start >= 0 and start + _CALIB_CYCLE <= len(data):
        cycle = data[start:start + _CALIB_CYCLE]
        records = [cycle[7 + 28 * k: 7 + 28 * k + 21] for k in range(64)]
        expected = int.from_bytes(cycle[-2:], "little")
        ok = (_crc16(b"".join(r[1:] for r in records)) == expected) if is_s3 else expected == _CALIB_CYCLE
        if ok:
            record_dtype = np.dtype([("id", "u1"), ("v", "<i2", 9), ("lo", "u1"), ("hi", "u1")])
            raw = np.frombuffer(b"".join(records), record_dtype)
            if np.array_equal(raw["id"], np.arange(64)):
                v = raw["v"].astype(np.float64)
                cal = VelodyneCalibration(
                    rot_correction=np.radians(v[:, 1] * 0.01), vert_correction=np.radians(v[:, 0] * 0.01),
                    dist_correction=v[:, 2] * 0.001, dist_correction_x=v[:, 3] * 0.001,
                    dist_correction_y=v[:, 4] * 0.001, vert_offset_correction=v[:, 5] * 0.001,
                    horiz_offset_correction=v[:, 6] * 0.001, focal_distance=v[:, 7] * 0.001,
                    focal_slope=v[:, 8] * 0.1, min_intensity=raw["lo"], max_intensity=raw["hi"],
                    two_pt_correction=np.ones(64, bool), distance_resolution_m=0.002,
                )
                return cal, ("S3" if is_s3 else "S2")
        start = data.find(b"UNIT#", start + 1)
    raise FormatError(path, None, f"a complete HDL-64E calibration cycle ({_CALIB_CYCLE} status bytes from "
                                  f"'UNIT#' with a valid checksum) in the packets' status bytes")
