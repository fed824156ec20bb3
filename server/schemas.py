"""Request and response bodies (pydantic). Label keyframes are in the world frame.

Validation is strict so that bad input gets a 422 naming the field and never reaches the
engine: finite numbers only (``NaN``/``Infinity`` rejected), sizes ``>= 0``, rotations
non-zero (normalised on input), keyframe timestamps strictly increasing, track ids unique.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator
from pydantic_core import PydanticCustomError

Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Field(allow_inf_nan=False, ge=0.0)]
TimestampNs = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]
TrackId = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]
AttrValue = (StrictBool | StrictInt | Finite | Annotated[StrictStr, Field(max_length=256)]
             | Annotated[list[Finite], Field(max_length=16, description="a few numbers, e.g. KITTI's 2D bbox")])
Attributes = Annotated[dict[Annotated[str, Field(min_length=1, max_length=64)], AttrValue], Field(max_length=64)]


def _unit(q: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    n = math.sqrt(sum(v * v for v in q))
    if not n > 1e-9:
        raise PydanticCustomError("zero_quaternion", "rotation must be a non-zero quaternion (w, x, y, z)")
    return (q[0] / n, q[1] / n, q[2] / n, q[3] / n)


Vec3 = tuple[Finite, Finite, Finite]
Size3 = tuple[NonNegative, NonNegative, NonNegative]
Quaternion = Annotated[tuple[Finite, Finite, Finite, Finite], AfterValidator(_unit)]
Pose7 = Annotated[list[float], Field(min_length=7, max_length=7, description="[qw qx qy qz tx ty tz]")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Keyframe(_Strict):
    """One box of a track at one time (world frame)."""

    timestamp_ns: TimestampNs
    center: Vec3 = Field(description="box centre, m, world frame relative to the scene origin")
    size: Size3 = Field(description="length (x), width (y), height (z), m")
    rotation: Quaternion = Field(description="box → world, (w, x, y, z)")
    attributes: Attributes = {}


def _increasing(keyframes: list[Keyframe]) -> list[Keyframe]:
    for i in range(1, len(keyframes)):
        if keyframes[i].timestamp_ns <= keyframes[i - 1].timestamp_ns:
            raise PydanticCustomError(
                "keyframes_order",
                "keyframes[{i}].timestamp_ns {t} is not after keyframes[{j}].timestamp_ns {s}",
                {"i": i, "j": i - 1, "t": keyframes[i].timestamp_ns, "s": keyframes[i - 1].timestamp_ns},
            )
    return keyframes


Keyframes = Annotated[list[Keyframe], Field(min_length=1, max_length=100_000), AfterValidator(_increasing)]


class Track(_Strict):
    id: TrackId
    category: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    attributes: Attributes = {}
    stationary: StrictBool = False
    keyframes: Keyframes


class LabelDocument(_Strict):
    """The whole label document of a scene (``PUT``)."""

    tracks: Annotated[list[Track], Field(max_length=10_000)] = []

    @field_validator("tracks")
    @classmethod
    def _unique(cls, tracks: list[Track]) -> list[Track]:
        seen: set[str] = set()
        for i, t in enumerate(tracks):
            if t.id in seen:
                raise PydanticCustomError("duplicate_track", "tracks[{i}].id {id!r} is a duplicate", {"i": i, "id": t.id})
            seen.add(t.id)
        return tracks


class TrackUpdate(_Strict):
    """Fields of an existing track to replace (absent fields stay)."""

    id: TrackId
    category: Annotated[StrictStr, Field(min_length=1, max_length=64)] | None = None
    attributes: Attributes | None = None
    stationary: StrictBool | None = None
    keyframes: Keyframes | None = None


class LabelPatch(_Strict):
    """Per-track changes (``PATCH``): add or replace whole tracks, update fields, delete."""

    upsert: Annotated[list[Track], Field(max_length=10_000)] = []
    update: Annotated[list[TrackUpdate], Field(max_length=10_000)] = []
    delete: Annotated[list[TrackId], Field(max_length=10_000)] = []

    @field_validator("delete")
    @classmethod
    def _once(cls, delete: list[str], info) -> list[str]:
        ids = [t.id for t in info.data.get("upsert", [])] + [t.id for t in info.data.get("update", [])] + delete
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise PydanticCustomError("duplicate_track", "track ids {ids} appear more than once in the patch",
                                      {"ids": sorted(dup)})
        return delete


class LabelsResponse(BaseModel):
    scene_id: str
    revision: int
    tracks: list[Track]


class HistoryEntry(BaseModel):
    revision: int
    op: Literal["put", "patch", "import", "seed"] = Field(
        description="put, patch; import: the labels the scene's log came with (revision 1); seed: the same, "
                    "written by older versions")
    author: str
    at_ns: int
    change: dict


class Origin(BaseModel):
    enu_offset_m: tuple[float, float, float]
    geodetic: dict[str, float] | None


class LidarOut(BaseModel):
    name: str
    sensor_id: int
    ego_from_sensor: Pose7


class CameraOut(BaseModel):
    name: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    skew: float
    model: str
    distortion: list[float]
    max_fov_rad: float | None
    near_m: float
    shutter: str
    row_readout_ns: int
    ego_from_camera: Pose7


class FrameOut(BaseModel):
    index: int
    timestamp_ns: int
    world_from_ego: Pose7
    n_points: int
    lod_points: list[int] = Field(description="points per level of detail 1, 2, ...")
    cameras: dict[str, int] = Field(description="camera → image timestamp_ns")


class SceneSummary(BaseModel):
    id: str
    n_frames: int
    start_ns: int | None
    end_ns: int | None
    lidars: list[str]
    cameras: list[str]


class SceneDetail(BaseModel):
    id: str
    origin: Origin
    lidars: list[LidarOut]
    cameras: list[CameraOut]
    frames: list[FrameOut]


class Box(BaseModel):
    track_id: str
    category: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    rotation: tuple[float, float, float, float]
    points_in_box: int | None = Field(description="points of the frame inside the box (null: not computed)")


class CuboidsResponse(BaseModel):
    scene_id: str
    frame_index: int
    timestamp_ns: int
    frame: Literal["world", "ego"]
    source: Literal["labels", "prepared"] = Field(
        description="labels: the label store now; prepared: the boxes written by 'fathom prepare'")
    revision: int | None = Field(description="label revision (null for prepared boxes)")
    boxes: list[Box]


class Health(BaseModel):
    status: Literal["ok"]
    scenes: int


class ProjectedBox(BaseModel):
    track_id: str
    paths: list[list[tuple[float, float]]] = Field(description="visible edge polylines, pixels")


class ProjectionResponse(BaseModel):
    camera: str
    timestamp_ns: int
    width: int
    height: int
    u: list[float]
    v: list[float]
    depth: list[float] = Field(description="camera-frame z, m")
    index: list[int] = Field(description="row of each projected point in the level's table")
    boxes: list[ProjectedBox]
