"""Bodies of the revisioned label documents (:mod:`server.doc_store`): passive-sonar bearing
tracks and the 2D tracks of camera streams. Validation as :mod:`server.schemas` (strict JSON
numbers, finite, bounded; keyframe times strictly increasing; track ids unique)."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

from engine.tracks2d import Track2D
from server.schemas import Attributes, Category, Revision, TimestampNs, TrackId

Azimuth = Annotated[float, Strict(), Field(allow_inf_nan=False, ge=-2 * math.pi, le=2 * math.pi,
                                           description="rad, ego frame: 0 ahead, +π/2 to port")]
Hertz = Annotated[float, Strict(), Field(allow_inf_nan=False, ge=0.0, le=1e7)]
MAX_TRACKS = 10_000
MAX_KEYFRAMES = 100_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _increasing(times: list[int], what: str) -> None:
    if any(b <= a for a, b in zip(times, times[1:])):
        raise ValueError(f"{what} timestamps must be strictly increasing")


def _unique(ids: list[str]) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"track id {i!r} appears twice")
        seen.add(i)


class BearingKeyframe(_Strict):
    timestamp_ns: TimestampNs
    azimuth_rad: Azimuth


class BearingTrackBody(_Strict):
    """A contact on the bearing-time record: its class, the band it was seen in, its bearings."""

    id: TrackId
    category: Category
    band_hz: tuple[Hertz, Hertz]
    attributes: Attributes = Field(default_factory=dict)
    keyframes: Annotated[list[BearingKeyframe], Field(min_length=1, max_length=MAX_KEYFRAMES)]

    @field_validator("band_hz")
    @classmethod
    def _band(cls, band: tuple[float, float]) -> tuple[float, float]:
        if band[0] > band[1]:
            raise ValueError(f"band_hz must be [lo, hi] with lo <= hi, got {list(band)}")
        return band

    @model_validator(mode="after")
    def _times(self) -> "BearingTrackBody":
        _increasing([k.timestamp_ns for k in self.keyframes], f"track {self.id!r} keyframe")
        return self


class BearingTracks(_Strict):
    tracks: Annotated[list[BearingTrackBody], Field(max_length=MAX_TRACKS)]

    @model_validator(mode="after")
    def _ids(self) -> "BearingTracks":
        _unique([t.id for t in self.tracks])
        return self


class BearingTracksWrite(BearingTracks):
    """A save: the whole document and the revision it was based on (0 before the first)."""

    expected_revision: Revision


class BearingTracksDocument(BearingTracks):
    scene_id: str
    revision: Revision


class DocumentRevision(_Strict):
    revision: Revision
    author: str
    at_ns: int


# ---------------------------------------------------------------- 2D tracks on camera streams

Pixel = Annotated[float, Strict(), Field(allow_inf_nan=False, ge=-1e5, le=1e5, description="px, pixel centres")]
CameraName = Annotated[str, Strict(), Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class Keyframe2D(_Strict):
    timestamp_ns: TimestampNs
    points: Annotated[list[tuple[Pixel, Pixel]], Field(min_length=2, max_length=10_000,
                                                       description="a box: [[u0, v0], [u1, v1]]")]


class Track2DBody(_Strict):
    """A box, polygon or polyline in one camera's stream, keyed in time (engine.tracks2d)."""

    id: TrackId
    category: Category
    camera: CameraName
    shape: Literal["box", "polygon", "polyline"]
    attributes: Attributes = Field(default_factory=dict)
    keyframes: Annotated[list[Keyframe2D], Field(min_length=1, max_length=MAX_KEYFRAMES)]

    @model_validator(mode="after")
    def _track(self) -> "Track2DBody":
        self.to_track()  # the engine's checks: times, vertex counts, box corners in order
        return self

    def to_track(self) -> Track2D:
        return Track2D(self.id, self.category, self.camera, self.shape,
                       np.array([k.timestamp_ns for k in self.keyframes], np.int64),
                       tuple(np.array(k.points, np.float64) for k in self.keyframes), dict(self.attributes))


class Tracks2D(_Strict):
    tracks: Annotated[list[Track2DBody], Field(max_length=MAX_TRACKS)]

    @model_validator(mode="after")
    def _ids(self) -> "Tracks2D":
        _unique([t.id for t in self.tracks])
        return self


class Tracks2DWrite(Tracks2D):
    expected_revision: Revision


class Tracks2DDocument(Tracks2D):
    scene_id: str
    revision: Revision
