"""The rig description shared by raw logs (input) and prepared scenes (output).

Where the scene's local world frame sits (:class:`SceneOrigin`), the LiDARs and cameras on
the ego (:class:`Lidar`, :class:`engine.camera.Camera`) and their JSON codecs, and the rule
for names that become directory and file names (:data:`NAME_RULE`). ``formats.raw_log``
(``log.json``) and ``formats.scene_store`` (``scene.json``) both write these layouts::

    pose   = [qw, qx, qy, qz, tx, ty, tz]               # rotation first (wxyz), metres
    lidar  = {"name", "sensor_id", "ego_from_sensor": pose}
    camera = {"name", "width", "height", "fx", "fy", "cx", "cy", "skew", "model", "distortion": [...],
              "max_fov_rad", "near_m", "shutter", "row_readout_ns", "ego_from_camera": pose}

Decoders raise :class:`FormatError` naming the file and the field.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from engine.camera import Camera, CameraIntrinsics
from engine.se3 import SE3
from formats.errors import FormatError

NAME_RULE = "1-64 ASCII letters, digits, '_', '-', '.', starting with a letter or digit"


@dataclass(frozen=True)
class SceneOrigin:
    """Where the scene's local world frame sits.

    Attributes:
        enu_offset_m: ``(3,) float64`` position of the local frame's origin in the ENU frame
            of the log (metres).
        geodetic: optional ``(lat_deg, lon_deg, alt_m)`` of that origin.
    """

    enu_offset_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    geodetic: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        off = tuple(float(v) for v in self.enu_offset_m)
        if len(off) != 3 or not all(math.isfinite(v) for v in off):
            raise ValueError(f"SceneOrigin.enu_offset_m must be 3 finite floats, got {self.enu_offset_m!r}")
        object.__setattr__(self, "enu_offset_m", off)
        if self.geodetic is not None:
            geo = tuple(float(v) for v in self.geodetic)
            if len(geo) != 3 or not all(math.isfinite(v) for v in geo) or abs(geo[0]) > 90:
                raise ValueError(f"SceneOrigin.geodetic must be (lat_deg, lon_deg, alt_m), got {self.geodetic!r}")
            object.__setattr__(self, "geodetic", geo)


@dataclass(frozen=True)
class Lidar:
    """A LiDAR (or sonar) on the ego: its name and extrinsic ``ego_from_sensor``."""

    name: str
    ego_from_sensor: SE3


def valid_name(value: Any) -> bool:
    """Whether ``value`` may name a scene or a sensor (:data:`NAME_RULE`): such names become
    directory and file names, and the strict pattern keeps them inside the scenes directory."""
    return (isinstance(value, str) and 0 < len(value) <= 64 and value.isascii() and value[0].isalnum()
            and all(c.isalnum() or c in "_-." for c in value))


def checked_name(value: Any, path: str | os.PathLike | None, what: str) -> str:
    """``value`` if it is a :func:`valid_name`, else FormatError naming ``what`` in ``path``."""
    if not valid_name(value):
        raise FormatError(path, None, f"{what}: {NAME_RULE}; got {value!r}")
    return value


def pose_to_json(pose: SE3) -> list[float]:
    """A single pose as ``[qw, qx, qy, qz, tx, ty, tz]``."""
    return np.concatenate([pose.rotation, pose.translation]).tolist()


def pose_from_json(value: Any, path: str | os.PathLike | None, what: str) -> SE3:
    """The pose of :func:`pose_to_json`; FormatError naming ``what`` unless 7 numbers making a valid pose."""
    if not (isinstance(value, list) and len(value) == 7 and all(isinstance(v, (int, float)) for v in value)):
        raise FormatError(path, None, f"{what}: a list of 7 numbers [qw qx qy qz tx ty tz]")
    try:
        return SE3(np.array(value[:4], float), np.array(value[4:], float))
    except ValueError as exc:
        raise FormatError(path, None, f"{what}: a valid pose ({exc})") from None


def lidar_to_json(lidar: Lidar, sensor_id: int) -> dict[str, Any]:
    """A LiDAR entry ``{"name", "sensor_id", "ego_from_sensor"}``."""
    return {"name": lidar.name, "sensor_id": sensor_id, "ego_from_sensor": pose_to_json(lidar.ego_from_sensor)}


def lidar_from_json(d: Any, path: str | os.PathLike | None, what: str) -> Lidar:
    """The :class:`Lidar` of a LiDAR entry (its ``sensor_id`` is the caller's to check)."""
    if not isinstance(d, Mapping):
        raise FormatError(path, None, f"{what}: an object {{name, sensor_id, ego_from_sensor}}, got {d!r}")
    return Lidar(checked_name(d.get("name"), path, f"{what}.name"),
                 pose_from_json(d.get("ego_from_sensor"), path, f"{what}.ego_from_sensor"))


def camera_to_json(cam: Camera) -> dict[str, Any]:
    """A camera entry (intrinsics, lens, shutter and ``ego_from_camera``)."""
    k = cam.intrinsics
    return {
        "name": cam.name, "width": k.width, "height": k.height, "fx": k.fx, "fy": k.fy,
        "cx": k.cx, "cy": k.cy, "skew": k.skew, "model": k.model, "distortion": list(k.distortion),
        "max_fov_rad": k.max_fov_rad, "near_m": cam.near_m, "shutter": cam.shutter,
        "row_readout_ns": cam.row_readout_ns, "ego_from_camera": pose_to_json(cam.ego_from_camera),
    }


def camera_from_json(d: Mapping[str, Any], path: str | os.PathLike | None) -> Camera:
    """The :class:`Camera` of a camera entry (defaults: pinhole, no skew or distortion, 0.1 m
    near plane, global shutter); FormatError naming what is wrong."""
    try:
        k = CameraIntrinsics(
            int(d["width"]), int(d["height"]), float(d["fx"]), float(d["fy"]), float(d["cx"]),
            float(d["cy"]), float(d.get("skew", 0.0)), d.get("model", "pinhole"),
            tuple(d.get("distortion", ())), d.get("max_fov_rad"),
        )
        return Camera(
            checked_name(d["name"], path, "camera name"), k,
            pose_from_json(d["ego_from_camera"], path, f"camera {d['name']!r} ego_from_camera"),
            float(d.get("near_m", 0.1)), d.get("shutter", "global"), int(d.get("row_readout_ns", 0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(path, None, f"a valid camera entry ({type(exc).__name__}: {exc})") from None
