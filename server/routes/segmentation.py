"""Per-point segmentation labels: the class list, edits, each frame's labels, history, exports.

One revisioned document per scene (:mod:`server.segmentation_store`): every write is one
revision (ETag ``"r<revision>"``), must carry ``If-Match`` (the ETag, or ``*``; 428 without,
412 when stale) and may hold many edits over many frames and the map, applied in order and
stored atomically. Edits are computed by the server (:mod:`engine.segmentation`) from the
selection the client sends (point indices, a world prism / box / sphere, a camera lasso, the
cuboids), never from per-point lists the client computed. A frame's labels
(``GET .../segmentation/frames/{i}``) are its effective labels (:mod:`server.segmentation_edits`):
its own layer, else the moving box holding the point, else the map voxel's label.
``POST .../segmentation/frames/{i}/select`` tries a prism on a frame's points (world or ego
frame) and gives the rows it selects without writing (an ``indices`` edit writes them).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response

from engine.segmentation import select_prism
from formats.segmentation import classes_from_json, encode_labels
from formats.segmentation_export import EXPORTERS, IMPORTERS, SceneLabels
from server.boxes import interpolation_modes, tracks_from_document
from server.config import Settings
from server.deps import Admin, Annotator, FrameDep, SceneDep, State, Viewer
from server.errors import invalid
from server.label_http import IF_MATCH, etag, expected_revision
from server.responses import WRITE, errors
from server.segmentation_edits import EditSession, MapCache, apply_edit, effective_labels, frame_points, instances
from server.segmentation_schemas import (
    ClassesBody,
    EditsBody,
    EditsResponse,
    SegmentationInfo,
    SelectBody,
    SelectResponse,
)
from server.segmentation_store import MAP_LAYER, Change, SegmentationStore, UnknownRevision

router = APIRouter(prefix="/v1/scenes/{scene_id}/segmentation", tags=["segmentation"])
RevisionQuery = Annotated[int | None, Query(ge=0, le=2**62, description="the document at this revision")]
LodQuery = Annotated[int, Query(ge=0, le=16, description="0: every point; 1..: the rows of that level of detail")]


@dataclass
class Segmentation:
    """What the routes share: the store and the map cache."""

    store: SegmentationStore
    maps: MapCache


def install(app: FastAPI, settings: Settings) -> Segmentation:
    """Open the store (``segmentation.sqlite3`` beside the label database) and add the routes."""
    seg = Segmentation(SegmentationStore(settings.label_db_path.with_name("segmentation.sqlite3")), MapCache())
    app.state.segmentation = seg
    app.include_router(router, responses=errors(401))
    return seg


async def _segmentation(request: Request) -> Segmentation:
    return request.app.state.segmentation


Seg = Annotated[Segmentation, Depends(_segmentation)]


def _read(seg: Segmentation, scene_id: str, fn, at: int | None):
    try:
        return seg.store.read(scene_id, fn, at)
    except UnknownRevision as exc:
        raise HTTPException(404, str(exc)) from None


@router.get("", response_model=SegmentationInfo, responses=errors(404))
def get_info(_: Viewer, scene: SceneDep, seg: Seg, revision: RevisionQuery = None) -> Response:
    """The class list, voxel size, track instances, which frames have their own labels."""
    def read(snap):
        return snap.revision, snap.header, snap.layer_revisions()

    rev, header, layers = _read(seg, scene.scene_id, read, revision)
    info = SegmentationInfo(scene_id=scene.scene_id, revision=rev, classes=header["classes"],
                            voxel_m=header["voxel_m"], instances=header.get("instances", {}),
                            frames=sorted(k for k in layers if k >= 0), map_voxels=MAP_LAYER in layers)
    return Response(info.model_dump_json(), media_type="application/json", headers={"ETag": etag(rev)})


@router.put("/classes", response_model=SegmentationInfo, openapi_extra=IF_MATCH, responses=errors(403, 404, *WRITE))
def put_classes(who: Annotator, scene: SceneDep, seg: Seg, body: ClassesBody, request: Request) -> Response:
    """Replace the class list (every id in use stays: ids may be added, renamed, recoloured)
    and, while the map has no labels, the voxel size."""
    expected = expected_revision(request)
    try:
        new = [c.to_json() for c in classes_from_json([c.model_dump(mode="json") for c in body.classes])]
    except ValueError as exc:
        raise invalid(("body", "classes"), str(exc)) from None

    def change(snap):
        dropped = sorted({c["id"] for c in snap.header["classes"]} - {c["id"] for c in new})
        if dropped:
            raise invalid(("body", "classes"), f"class ids {dropped} would be dropped; labels may use them", dropped)
        header = {**snap.header, "classes": new}
        if body.voxel_m is not None and body.voxel_m != header["voxel_m"]:
            if snap.layer(MAP_LAYER) is not None:
                raise invalid(("body", "voxel_m"), "the voxel size is fixed once the map has labels", body.voxel_m)
            header["voxel_m"] = body.voxel_m
        return Change(header, {})

    seg.store.write(scene.scene_id, expected, change, op="classes", author=who.name)
    return get_info(who, scene, seg)


@router.post("/edits", response_model=EditsResponse, openapi_extra=IF_MATCH, responses=errors(403, 404, *WRITE))
def post_edits(who: Annotator, scene: SceneDep, state: State, seg: Seg, body: EditsBody, request: Request
               ) -> Response:
    """Apply the edits in order as one revision (all or none)."""
    expected = expected_revision(request)
    tracks = state.labels.get(scene.scene_id)[1]["tracks"]
    written: list[dict] = []

    def change(snap):
        session = EditSession(scene, snap, tracks, seg.maps)
        for i, edit in enumerate(body.edits):
            written.append({"frame": edit.frame, "points": apply_edit(session, edit, ("body", "edits", i))})
        return Change(*session.change())

    note = {"edits": len(body.edits), "frames": sorted({e.frame for e in body.edits if e.frame is not None}),
            "map": any(e.frame is None for e in body.edits)}
    revision = seg.store.write(scene.scene_id, expected, change, op="edit", author=who.name, note=note)
    out = EditsResponse(scene_id=scene.scene_id, revision=revision, written=written)
    return Response(out.model_dump_json(), media_type="application/json", headers={"ETag": etag(revision)})


def _level_rows(scene, entry, lod: int, loc: tuple[str, ...]) -> np.ndarray | None:
    """Rows of the frame's points file that make level ``lod`` (None: level 0, every row)."""
    if lod > len(entry.lods):
        raise invalid(loc, f"frame {entry.index} has levels of detail 0..{len(entry.lods)}", lod)
    return scene.lod_rows(entry.index, lod) if lod else None


@router.get("/frames/{index}", responses={**errors(404), 200: {"content": {"application/octet-stream": {}}}})
def get_frame_labels(_: Viewer, scene: SceneDep, entry: FrameDep, state: State, seg: Seg,
                     revision: RevisionQuery = None, lod: LodQuery = 0,
                     encoding: Literal["raw", "fseg"] = Query("raw", description="raw: N uint16 class ids then N "
                                                              "uint32 instance ids, little-endian; fseg: the "
                                                              "compact encoding of formats.segmentation")) -> Response:
    """The frame's effective labels, one per point of its points file (in its order), or with
    ``lod`` one per point of that level (in the order ``points?lod=`` gives them)."""
    rows = _level_rows(scene, entry, lod, ("query", "lod"))
    frozen = _read(seg, scene.scene_id, lambda s: s.freeze([MAP_LAYER, entry.index]), revision)
    tracks = state.labels.get(scene.scene_id)[1]["tracks"]
    cls, inst = effective_labels(scene, frozen, tracks, seg.maps, frame_points(scene, entry.index))
    if rows is not None:
        cls, inst = cls[rows], inst[rows]
    body = encode_labels(cls, inst) if encoding == "fseg" else cls.astype("<u2").tobytes() + inst.astype(
        "<u4").tobytes()
    return Response(body, media_type="application/octet-stream",
                    headers={"ETag": etag(frozen.revision), "X-Points": str(len(cls))})


@router.post("/frames/{index}/select", response_model=SelectResponse, responses=errors(404))
def select_points(_: Viewer, scene: SceneDep, entry: FrameDep, body: SelectBody) -> Response:
    """The points of the frame a prism selects, by the engine function an edit uses; nothing is
    written. ``frame=ego``: the polygon and z range are in the frame's ego frame (the points
    moved as ``points?frame=ego`` moves them); ``lod``: also the positions within that level."""
    rows = _level_rows(scene, entry, body.lod, ("body", "lod"))
    xyz = frame_points(scene, entry.index).xyz
    if body.frame == "ego":
        xyz = entry.world_from_ego.inverse().apply(xyz)
    prism = body.selection
    try:
        mask = select_prism(xyz, np.array(prism.polygon), prism.z_min, prism.z_max)
    except ValueError as exc:  # an engine check (e.g. z_min above z_max)
        raise invalid(("body", "selection"), str(exc)) from None
    indices = np.flatnonzero(mask)
    level = indices if rows is None else np.flatnonzero(mask[rows])
    out = SelectResponse(scene_id=scene.scene_id, frame_index=entry.index, frame=body.frame, points=len(mask),
                         count=len(indices), indices=indices.tolist(), lod=body.lod,
                         lod_points=len(mask) if rows is None else len(rows), lod_indices=level.tolist())
    return Response(out.model_dump_json(), media_type="application/json")


@router.get("/map", responses={**errors(404), 200: {"content": {"application/octet-stream": {}}}})
def get_map_labels(_: Viewer, scene: SceneDep, seg: Seg, revision: RevisionQuery = None) -> Response:
    """The map layer: voxel keys and labels (``formats.segmentation.encode_map``; empty body: none)."""
    frozen = _read(seg, scene.scene_id, lambda s: s.freeze([MAP_LAYER]), revision)
    return Response(frozen.layer(MAP_LAYER) or b"", media_type="application/octet-stream",
                    headers={"ETag": etag(frozen.revision), "X-Voxel-M": str(frozen.header["voxel_m"])})


@router.get("/history", responses=errors(403, 404))
def get_history(_: Admin, scene: SceneDep, seg: Seg,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                after_revision: Annotated[int, Query(ge=0, le=2**62)] = 0) -> list[dict]:
    """Revisions oldest first: op, author, time, note, the layers changed (−1: the map)."""
    return seg.store.history(scene.scene_id, limit, after_revision)


def scene_labels(scene, seg: Segmentation, tracks: list[dict], revision: int | None) -> SceneLabels:
    """Every frame's effective labels and the class list, for an export."""
    layers = [MAP_LAYER] + [f.index for f in scene.frames]
    frozen = _read(seg, scene.scene_id, lambda s: s.freeze(layers), revision)
    frames = {}
    for f in scene.frames:
        frames[f.index] = effective_labels(scene, frozen, tracks, seg.maps, frame_points(scene, f.index))
    return SceneLabels(classes_from_json(frozen.header["classes"]), frames, frozen.revision)


@router.get("/export/{fmt}", responses={**errors(404, (422, "labels the format cannot hold")),
                                        200: {"content": {"application/zip": {}}}})
def export(_: Viewer, scene: SceneDep, state: State, seg: Seg, fmt: Literal["semantickitti", "nuscenes", "sfs"],
           revision: RevisionQuery = None) -> Response:
    """The effective labels of every frame as a zip: SemanticKITTI ``.label`` files + label
    YAML, nuScenes lidarseg ``.bin`` + panoptic ``.npz`` + ``lidarseg.json``/``category.json``,
    or an SFS file whose ``LabeledPointsAnnotation``s name each frame's points."""
    tracks = state.labels.get(scene.scene_id)[1]["tracks"]
    labels = scene_labels(scene, seg, tracks, revision)
    try:
        doc = {"tracks": tracks}
        files = EXPORTERS[fmt](scene, labels, tracks_from_document(doc), interpolation_modes(doc))
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return Response(buf.getvalue(), media_type="application/zip", headers={
        "ETag": etag(labels.revision),
        "Content-Disposition": f'attachment; filename="{scene.scene_id}-segmentation-{fmt}.zip"'})


@router.post("/import/{fmt}", response_model=EditsResponse, openapi_extra=IF_MATCH,
             responses=errors(403, 404, *WRITE))
async def import_labels(who: Annotator, scene: SceneDep, state: State, seg: Seg,
                        fmt: Literal["semantickitti", "nuscenes", "sfs"], request: Request) -> Response:
    """A zip as :func:`export` writes it → every frame's own layer (and the class list), one revision."""
    expected = expected_revision(request)
    data = await request.body()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            files = {n: z.read(n) for n in z.namelist() if not n.endswith("/")}
        imported = IMPORTERS[fmt](scene, files)
    except (zipfile.BadZipFile, ValueError) as exc:
        raise invalid(("body",), f"a {fmt} segmentation zip: {exc}") from None
    tracks = state.labels.get(scene.scene_id)[1]["tracks"]
    layers: dict[int, bytes | None] = {i: encode_labels(*labels) for i, labels in imported.frames.items()}
    revision = seg.store.write(scene.scene_id, expected, lambda snap: Change(
        {**snap.header, "classes": [c.to_json() for c in imported.classes],
         "instances": instances(snap.header, tracks)}, layers), op="import", author=who.name, note={"format": fmt})
    written = [{"frame": i, "points": int(len(labels[0]))} for i, labels in sorted(imported.frames.items())]
    out = EditsResponse(scene_id=scene.scene_id, revision=revision, written=written)
    return Response(out.model_dump_json(), media_type="application/json", headers={"ETag": etag(revision)})

