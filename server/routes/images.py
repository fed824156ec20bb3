"""Cameras: the stored JPEG of one frame and camera, and the frame projected into it."""

from __future__ import annotations

from typing import Annotated

import xxhash
from fastapi import APIRouter, HTTPException, Query, Request, Response

from formats.errors import FormatError
from server.deps import FrameDep, SceneDep, State, Viewer
from server.errors import invalid
from server.payloads import DATA_RESPONSES, Payload, respond
from server.projections import camera_projection
from server.responses import errors
from server.schemas import ProjectionResponse
from server.store_errors import DAMAGED, reading

router = APIRouter(prefix="/v1", tags=["images"])

IMAGE = "/scenes/{scene_id}/frames/{index}/images/{camera}"
IMAGE_RESPONSES = {200: {"content": {"image/jpeg": {}}}, 404: {"description": "no such image"}, **DATA_RESPONSES}


@router.head(IMAGE, response_class=Response, responses=IMAGE_RESPONSES)
@router.get(IMAGE, response_class=Response, responses=IMAGE_RESPONSES)
def get_image(_: Viewer, scene: SceneDep, entry: FrameDep, camera: str, state: State, request: Request) -> Response:
    """JPEG of ``camera`` at frame ``index`` (header ``X-Timestamp-Ns``: exposure time; HEAD:
    the headers alone; ``Range: bytes=…``: part of it). The file is checked against the
    manifest's size and XXH3-128 digest before it is first served."""
    stored = entry.images.get(camera)
    if stored is None:
        raise HTTPException(404, f"frame {entry.index} has no image for camera {camera!r}")
    key = ("image", scene.scene_id, stored.xxh3_128)

    def build() -> Payload:
        path = scene.image_path(entry.index, camera)
        body = path.read_bytes()
        if xxhash.xxh3_128(body).hexdigest() != stored.xxh3_128:
            raise FormatError(path, None, "the XXH3-128 digest the manifest records")
        return Payload(body, "image/jpeg", '"' + stored.xxh3_128[:32] + '"',
                       {"X-Timestamp-Ns": str(entry.image_timestamps_ns[camera])}, compressible=False)

    with reading(scene, entry, f"{camera} image"):
        payload = state.cache.get(key, build)
    return respond(request, payload)


@router.get("/scenes/{scene_id}/frames/{index}/projection/{camera}", response_model=ProjectionResponse,
            responses=errors((500, DAMAGED)))
def get_projection(
    _: Viewer, scene: SceneDep, entry: FrameDep, camera: str, state: State,
    lod: Annotated[int, Query(ge=0, le=16, description="level of detail of the projected points")] = 1,
) -> ProjectionResponse:
    """The frame's points (level ``lod``) and label boxes projected into ``camera`` at its
    exposure time: pixels of the points inside the image, box edges as polylines."""
    if camera not in entry.images:
        raise HTTPException(404, f"frame {entry.index} has no image for camera {camera!r}")
    if lod > len(entry.lods):
        raise invalid(("query", "lod"), f"frame {entry.index} has levels of detail 0..{len(entry.lods)}", lod)
    _, doc = state.labels.get(scene.scene_id)
    return ProjectionResponse.model_validate(camera_projection(scene, entry, camera, lod, doc))
