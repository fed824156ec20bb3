"""Scenes: list, detail (sensors, calibration, frames, origin), admin rescan."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from formats.scene_store import Scene, camera_to_json, pose_to_json
from server.deps import Admin, SceneDep, State, Viewer
from server.imported_labels import seed_all
from server.payloads import Payload, respond
from server.responses import errors
from server.schemas import Health, SceneDetail, SceneSummary

router = APIRouter(prefix="/v1", tags=["scenes"])


def _summary(scene: Scene) -> SceneSummary:
    return SceneSummary(
        id=scene.scene_id, n_frames=len(scene.frames),
        start_ns=scene.frames[0].timestamp_ns if scene.frames else None,
        end_ns=scene.frames[-1].timestamp_ns if scene.frames else None,
        lidars=[l.name for l in scene.lidars], cameras=list(scene.cameras),
    )


def _detail(scene: Scene) -> SceneDetail:
    geo = scene.origin.geodetic
    return SceneDetail.model_validate({
        "id": scene.scene_id,
        "origin": {"enu_offset_m": scene.origin.enu_offset_m,
                   "geodetic": None if geo is None else dict(zip(("lat_deg", "lon_deg", "alt_m"), geo))},
        "lidars": [{"name": l.name, "sensor_id": i, "ego_from_sensor": pose_to_json(l.ego_from_sensor)}
                   for i, l in enumerate(scene.lidars)],
        "cameras": [camera_to_json(c) for c in scene.cameras.values()],
        "frames": [{"index": f.index, "timestamp_ns": f.timestamp_ns, "world_from_ego": pose_to_json(f.world_from_ego),
                    "n_points": f.n_points, "lod_points": list(f.lod_points), "cameras": dict(f.image_timestamps_ns)}
                   for f in scene.frames],
    })


@router.get("/scenes", response_model=list[SceneSummary])
def list_scenes(_: Viewer, state: State) -> list[SceneSummary]:
    return [_summary(s) for s in state.scenes.all()]


@router.get("/scenes/{scene_id}", response_model=SceneDetail, responses=errors(304, 404))
def get_scene(_: Viewer, scene: SceneDep, state: State, request: Request) -> Response:
    key = ("scene", scene.scene_id, scene.manifest_digest)

    def build() -> Payload:
        body = _detail(scene).model_dump_json().encode()
        return Payload(body, "application/json", '"' + scene.manifest_digest[:32] + '"')

    payload = state.cache.get(key, build)
    return respond(request, payload, state.cache, state.settings.gzip_level, key)


@router.post("/admin/rescan", response_model=Health, tags=["admin"], responses=errors(403))
def rescan(_: Admin, state: State) -> Health:
    """Re-list the scenes directory (after ``fathom prepare`` added or changed scenes); a new
    scene whose log came with labels starts its label history with them."""
    n = state.scenes.scan()
    seed_all(state.labels, state.scenes.all())
    return Health(status="ok", scenes=n)
