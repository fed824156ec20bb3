"""Box propagation of one label track through a range of frames (:mod:`engine.propagate`).

``POST /v1/scenes/{id}/tracks/{track_id}/propagate`` with a frame range: the track's
keyframes in the range seed the propagation (:mod:`server.propagation`); the answer lists per
frame the box found and its confidence, why each direction stopped, and the track with those
boxes as its keyframes in their span. With ``write``, that track is stored as a new label
revision (op ``patch``; 412 if the track changed meanwhile).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from server.deps import Annotator, SceneDep, State
from server.errors import invalid
from server.label_http import check_times
from server.propagation import merged_body, propagate_body
from server.responses import errors
from server.schemas import TRACK_ID_PATTERN, Track

router = APIRouter(prefix="/v1", tags=["labels"])
TrackIdParam = Annotated[str, PathParam(pattern=TRACK_ID_PATTERN, description="label track id")]
MAX_FRAMES = 1000
FrameIndex = Annotated[StrictInt, Field(ge=0, le=999_999)]


class PropagateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    first_frame: FrameIndex = Field(description="first frame index of the range")
    last_frame: FrameIndex = Field(description=f"last frame index (inclusive; at most {MAX_FRAMES} frames)")
    write: StrictBool = Field(False, description="store the propagated track as a new label revision")

    @model_validator(mode="after")
    def _range(self) -> PropagateRequest:
        if not 0 <= self.last_frame - self.first_frame < MAX_FRAMES:
            raise ValueError(f"need first_frame <= last_frame and at most {MAX_FRAMES} frames")
        return self


class PropagatedBox(BaseModel):
    frame_index: int
    timestamp_ns: int
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    rotation: tuple[float, float, float, float]
    confidence: float = Field(description="0..1; 1 on a seed frame")
    points: int = Field(description="object points in the box")


class PropagateResponse(BaseModel):
    scene_id: str
    track_id: str
    seed_frames: list[int] = Field(description="the frames whose track boxes seeded the propagation")
    stopped: dict[str, str] = Field(description="forward / backward: why propagation stopped (empty: end of range)")
    boxes: list[PropagatedBox] = Field(description="the frames propagation reached")
    track: Track = Field(description="the track with the boxes as its keyframes in their span")
    revision: int | None = Field(description="the label revision written (null unless write)")


@router.post("/scenes/{scene_id}/tracks/{track_id}/propagate", response_model=PropagateResponse,
             responses=errors(403, (404, "no such scene, frame or track"), 412))
def propagate(who: Annotator, scene: SceneDep, state: State, track_id: TrackIdParam,
              request: PropagateRequest) -> PropagateResponse:
    """Propagate the track's box through the frames ``first_frame..last_frame``."""
    index = {f.index: i for i, f in enumerate(scene.frames)}
    for name in ("first_frame", "last_frame"):
        if getattr(request, name) not in index:
            raise HTTPException(404, f"scene {scene.scene_id!r} has no frame {getattr(request, name)}")
    _, rows = state.labels.document(scene.scene_id)
    row = next(((rev, b) for t, rev, b in rows if t == track_id), None)
    if row is None:
        raise HTTPException(404, f"scene {scene.scene_id!r} has no label track {track_id!r}")
    rev, body = row[0], Track.model_validate_json(row[1]).model_dump(mode="json")
    found = propagate_body(scene, body, index[request.first_frame], index[request.last_frame])
    if found is None:
        raise invalid(("body",), f"track {track_id!r} has no keyframe within frames {request.first_frame}.."
                                 f"{request.last_frame}")
    result, seed_frames = found
    track = Track.model_validate(merged_body(scene, body, result))
    check_times(scene, track.keyframes, ("body",))
    revision = None
    if request.write:
        new = track.model_dump(mode="json")
        revision, _ = state.labels.patch(scene.scene_id, None, {track_id: rev}, [track_id], lambda _: {track_id: new},
                                         op="patch", author=who.name,
                                         note={"propagate": [request.first_frame, request.last_frame]})
    boxes = [PropagatedBox(frame_index=scene.frames[int(f)].index, timestamp_ns=scene.frames[int(f)].timestamp_ns,
                           center=tuple(c), size=tuple(s), rotation=tuple(q), confidence=float(cf), points=int(n))
             for f, c, s, q, cf, n, ok in zip(result.frames, result.centers, result.sizes, result.rotations,
                                             result.confidence, result.points, result.valid) if ok]
    return PropagateResponse(scene_id=scene.scene_id, track_id=track_id,
                             seed_frames=[scene.frames[f].index for f in seed_frames], stopped=result.stopped,
                             boxes=boxes, track=track, revision=revision)
