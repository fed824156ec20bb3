"""Request and response bodies (pydantic). Label keyframes are in the world frame.

Validation is strict so that bad input gets a 422 naming the field and never reaches the
engine or the label store: numbers must be JSON numbers (no numeric strings), finite
(``NaN``/``Infinity`` rejected) and within physical bounds (centres within ±10,000 km of the
scene origin, sizes 0 to 10 km); rotations are non-zero quaternions, normalised on input
without overflow or underflow; integers (timestamps, revisions) may be written as integral
numbers such as ``101074.0`` only up to 2^53, where a float is still exact; text must be valid
Unicode (pydantic refuses lone surrogates); keyframe timestamps strictly increasing; track ids
unique.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

MAX_COORDINATE_M = 1e7
MAX_SIZE_M = 1e4
_EXACT_FLOAT_INT = 2**53


def _integral(value: Any) -> Any:
    """An integral JSON number written as a float (``101074.0``) as an int, when exact."""
    if isinstance(value, float) and value.is_integer():
        if abs(value) > _EXACT_FLOAT_INT:
            raise PydanticCustomError("inexact_integer",
                                      "{value} is written as a float above 2^53, where floats are not exact: "
                                      "write it as an integer", {"value": value})
        return int(value)
    return value


Finite = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Coordinate = Annotated[float, Strict(), Field(allow_inf_nan=False, ge=-MAX_COORDINATE_M, le=MAX_COORDINATE_M)]
SizeM = Annotated[float, Strict(), Field(allow_inf_nan=False, ge=0.0, le=MAX_SIZE_M)]
TimestampNs = Annotated[int, Strict(), Field(ge=0, le=2**63 - 1, description=(
    "ns; an integer (an integral number written as a float is accepted up to 2^53)")), BeforeValidator(_integral)]
Revision = Annotated[int, Strict(), Field(ge=0, le=2**62, description="a label revision (0: none)"),
                     BeforeValidator(_integral)]
TRACK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
TrackId = Annotated[StrictStr, Field(pattern=TRACK_ID_PATTERN)]
Category = Annotated[StrictStr, Field(min_length=1, max_length=64)]
AttrName = Annotated[StrictStr, Field(min_length=1, max_length=64)]
AttrScalar = StrictBool | StrictInt | Finite | Annotated[StrictStr, Field(max_length=256)]
AttrValue = AttrScalar | Annotated[list[Finite],
                                   Field(max_length=16, description="a few numbers, e.g. KITTI's 2D bbox")]
Attributes = Annotated[dict[AttrName, AttrValue], Field(max_length=64)]


def _unit(q: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """``q / |q|``, computed on ``q / max|q_i|`` so that neither 1e200 nor 1e-200 over- or underflows."""
    m = max(abs(v) for v in q)
    if m == 0.0:
        raise PydanticCustomError("zero_quaternion", "rotation must be a non-zero quaternion (w, x, y, z)")
    s = tuple(v / m for v in q)
    n = math.sqrt(sum(v * v for v in s))  # in [1, 2]
    return (s[0] / n, s[1] / n, s[2] / n, s[3] / n)


Vec3 = tuple[Coordinate, Coordinate, Coordinate]
Size3 = tuple[SizeM, SizeM, SizeM]
Quaternion = Annotated[tuple[Finite, Finite, Finite, Finite], AfterValidator(_unit)]
Pose7 = Annotated[list[float], Field(min_length=7, max_length=7, description="[qw qx qy qz tx ty tz]")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Keyframe(_Strict):
    """One box of a track at one time (world frame)."""

    timestamp_ns: TimestampNs
    center: Vec3 = Field(description="box centre, m, world frame relative to the scene origin")
    size: Size3 = Field(description="length (x), width (y), height (z), m")
    rotation: Quaternion = Field(description="box → world, (w, x, y, z); any non-zero scale, stored normalised")
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
TrackRevisions = Annotated[dict[TrackId, Revision], Field(max_length=10_000, json_schema_extra={
    "propertyNames": {"pattern": TRACK_ID_PATTERN}})]


Interpolation = Literal["linear", "ctrv", "hermite"]
_INTERPOLATION = ("how boxes between keyframes are interpolated (engine.cuboid_motion): linear (centre lerp, "
                  "rotation slerp), ctrv (constant turn rate: along the arc the heading change describes) or "
                  "hermite (a cubic through the neighbouring keyframes, heading following the path); stored only "
                  "when not linear")


class Track(_Strict):
    id: TrackId
    category: Category
    attributes: Attributes = {}
    stationary: StrictBool = False
    interpolation: Interpolation = Field("linear", description=_INTERPOLATION,
                                         exclude_if=lambda mode: mode == "linear")
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
                raise PydanticCustomError("duplicate_track", "tracks[{i}].id {id!r} is a duplicate",
                                          {"i": i, "id": t.id})
            seen.add(t.id)
        return tracks


class TrackUpdate(_Strict):
    """Fields of an existing track to replace (absent fields stay)."""

    id: TrackId
    category: Category | None = None
    attributes: Attributes | None = None
    stationary: StrictBool | None = None
    interpolation: Interpolation | None = None
    keyframes: Keyframes | None = None


_BASE = ("track id → the revision of that track the change was based on (``track_revisions`` of a GET; "
         "0: the track must not exist yet). Given, it must name every track the request changes, and the "
         "request is refused with 412 if any named track changed since, whatever else changed; send it with "
         "``If-Match: *`` to let edits of other tracks through")


class LabelPatch(_Strict):
    """Per-track changes (``PATCH``): add or replace whole tracks, update fields, delete."""

    upsert: Annotated[list[Track], Field(max_length=10_000)] = []
    update: Annotated[list[TrackUpdate], Field(max_length=10_000)] = []
    delete: Annotated[list[TrackId], Field(max_length=10_000)] = []
    base: TrackRevisions | None = Field(None, description=_BASE)

    @model_validator(mode="after")
    def _once(self) -> LabelPatch:
        ids = self.ids()
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise PydanticCustomError("duplicate_track", "track ids {ids} appear more than once in the patch",
                                      {"ids": dup})
        _check_base(self.base, ids)
        return self

    def ids(self) -> list[str]:
        """The ids of every track the patch names, in the order upsert, update, delete."""
        return [t.id for t in self.upsert] + [t.id for t in self.update] + list(self.delete)


def _check_base(base: dict[str, int] | None, ids: list[str]) -> None:
    missing = [] if base is None else sorted(set(ids) - base.keys())
    if missing:
        raise PydanticCustomError("missing_base", "base names no revision for the changed tracks {ids}",
                                  {"ids": missing})


class RevertRequest(_Strict):
    """Make the labels (or some tracks) what they were at ``revision``: a new revision, op ``revert``."""

    revision: Revision = Field(description="the revision to go back to")
    tracks: Annotated[list[TrackId], Field(min_length=1, max_length=10_000)] | None = Field(
        None, description="only these tracks (default: the whole document)")
    base: TrackRevisions | None = Field(None, description=_BASE + " (only with ``tracks``)")

    @model_validator(mode="after")
    def _base_needs_tracks(self) -> RevertRequest:
        if self.base is not None and self.tracks is None:
            raise PydanticCustomError("missing_tracks", "base needs tracks (a document revert names no tracks)")
        _check_base(self.base, self.tracks or [])
        return self


class LabelsResponse(BaseModel):
    """The whole label document at ``revision``, tracks in the order they were created."""

    scene_id: str
    revision: int
    tracks: list[Track]
    track_revisions: dict[str, int] = Field(description="track id → the revision that last changed it")


class TracksResponse(BaseModel):
    """What a write did: the new revision, the tracks it named (as they are now) and those it deleted."""

    scene_id: str
    revision: int
    tracks: list[Track]
    track_revisions: dict[str, int] = Field(description="track id → the revision that last changed it")
    deleted: list[str]


class TrackConflict(BaseModel):
    id: str
    base: int = Field(description="the revision the request was based on")
    revision: int = Field(description="the track's revision now (0: it does not exist)")
    track: Track | None = Field(description="the track now (null: it does not exist)")


class ConflictResponse(BaseModel):
    """412: nothing was written."""

    detail: str
    revision: int = Field(description="the document's revision now")
    conflicts: list[TrackConflict] = Field(description="tracks changed since their base revision (empty when "
                                                       "If-Match named a stale document revision)")


class ErrorResponse(BaseModel):
    detail: str


Op = Literal["put", "patch", "revert", "import", "seed"]
_OPS = ("put, patch, revert; import: the labels the scene's log came with (revision 1); seed: the same, "
        "written by older versions")


class HistoryEntry(BaseModel):
    """One revision of a scene's labels."""

    revision: int
    op: Op = Field(description=_OPS)
    author: str = Field(description="the name of the token that wrote it")
    at_ns: int
    tracks: list[str] = Field(description="ids of the tracks it changed")
    note: dict[str, Any] | None = Field(description="import: {imported_tracks}; revert: {revision}; revisions "
                                                    "from before per-track history: the request as recorded")


class TrackHistoryEntry(BaseModel):
    """One change of one track: its body before and after (null: absent)."""

    revision: int
    op: Op = Field(description=_OPS)
    author: str
    at_ns: int
    before_revision: int = Field(description="the track's revision before this change (0: it did not exist)")
    before: Track | None
    after: Track | None


class AttributeSpec(_Strict):
    name: AttrName
    values: Annotated[list[AttrScalar], Field(min_length=1, max_length=1000)] | None = Field(
        None, description="the allowed values (default: any value)")


def _unique_names(items: list[Any], what: str) -> list[Any]:
    names = [i.name for i in items]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PydanticCustomError("duplicate_name", "{what} {names} appear more than once",
                                  {"what": what, "names": dup})
    return items


AttributeSpecs = Annotated[list[AttributeSpec], Field(max_length=64),
                           AfterValidator(lambda v: _unique_names(v, "attributes"))]


class LabelClass(_Strict):
    name: Category
    attributes: AttributeSpecs = Field([], description="the track attributes this class may have")
    keyframe_attributes: AttributeSpecs = Field([], description="the keyframe attributes this class may have")


class Ontology(_Strict):
    """A scene's label classes: tracks must have one of these categories, and only the attributes
    (and values) their class lists."""

    classes: Annotated[list[LabelClass], Field(max_length=1000), AfterValidator(lambda v: _unique_names(v, "classes"))]


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
