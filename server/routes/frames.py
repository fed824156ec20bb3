"""Frame data: points (Arrow stream or raw float32), radar returns (Arrow stream) and interpolated cuboids."""

from __future__ import annotations

from typing import Annotated, Literal

import pyarrow as pa
import pyarrow.ipc as ipc
from fastapi import APIRouter, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from formats.errors import FormatError
from formats.scene_store import FrameEntry, Scene, radar_with_xyz
from server.boxes import frame_boxes, prepared_boxes
from server.deps import FrameDep, SceneDep, State, Viewer
from server.errors import invalid
from server.payloads import (
    ARROW_STREAM,
    DATA_RESPONSES,
    RAW_XYZ,
    Compression,
    Payload,
    accepts_gzip,
    point_fields,
    points_payload,
    respond,
)
from server.responses import errors
from server.schemas import CuboidsResponse
from server.store_errors import DAMAGED, reading

router = APIRouter(prefix="/v1", tags=["frames"])

FrameQuery = Annotated[Literal["world", "ego"], Query(description="world (relative to the scene origin) or ego")]


POINTS = "/scenes/{scene_id}/frames/{index}/points"
POINTS_RESPONSES = {
    200: {"content": {ARROW_STREAM: {}, RAW_XYZ: {}},
          "description": "Arrow IPC stream (default; buffers LZ4- or Zstandard-compressed with "
                         "?compression=) or little-endian float32 x y z (N × 12 bytes)"},
    422: {"description": "bad query (unknown field, a level the frame lacks, compression with format=raw)"},
    404: {"description": "no such scene or frame"},
    **DATA_RESPONSES,
}


@router.head(POINTS, response_class=Response, responses=POINTS_RESPONSES)
@router.get(POINTS, response_class=Response, responses=POINTS_RESPONSES)
async def get_points(
    _: Viewer,
    scene: SceneDep,
    entry: FrameDep,
    state: State,
    request: Request,
    format: Annotated[Literal["arrow", "raw"] | None, Query(description="default: from Accept, else arrow")] = None,
    lod: Annotated[int, Query(ge=0, le=16, description="0 = full resolution, 1.. coarser")] = 0,
    frame: FrameQuery = "world",
    fields: Annotated[str | None, Query(max_length=200, description="comma-separated columns (arrow only)")] = None,
    compression: Annotated[Compression | None, Query(
        description="arrow only: compress the stream's buffers (Arrow IPC LZ4 frame or Zstandard; "
                    "Arrow readers decompress them; not gzipped on top)")] = None,
) -> Response:
    """Points of one frame from the memory-mapped store (headers ``X-Point-Count``, ``X-Frame``,
    ``X-Timestamp-Ns``; HEAD: the headers alone; ``Range: bytes=…``: part of the unencoded body).

    ``arrow`` (default): an Arrow IPC stream, by default the columns ``x y z`` (float32, metres,
    in ``frame``: the float32 nearest to the stored position ``offset + q * scale``, which is
    the prepared position rounded to the store's 1 mm quantisation) and every stored column
    but the quantised ones, each in its stored type (the narrowest of the types
    ``formats.scene_store`` allows it, e.g. ``intensity`` uint8, uint16 or float32, ``box_id``
    int8, int16 or int32: the stream's schema says which); ``fields`` picks columns, among
    them the quantised ``xq yq zq`` (int32, world frame only) with the schema metadata
    ``fathom.quantisation`` ``{"scale", "offset"}``. ``compression=lz4|zstd`` compresses the
    stream's buffers (Arrow IPC body compression; pyarrow and Arrow C++ readers decompress;
    the decoded table equals the uncompressed one). ``raw``: little-endian float32 ``x y z``
    interleaved, ``N × 12`` bytes (the same values as the Arrow columns).
    """
    if format is None:
        accept = request.headers.get("accept", "")
        format = "raw" if RAW_XYZ in accept and ARROW_STREAM not in accept else "arrow"
    if lod > len(entry.lods):
        raise invalid(("query", "lod"), f"frame {entry.index} has levels of detail 0..{len(entry.lods)}", lod)
    if compression is not None and format == "raw":
        raise invalid(("query", "compression"), "compression applies to format=arrow only", compression)
    key = ("points", scene.scene_id, scene.points_version(entry.index, lod), lod, frame, format,
           fields if format == "arrow" else None, compression)
    payload = state.cache.peek(key)
    if payload is None:  # build off the event loop: it maps the file and serialises it
        payload = await run_in_threadpool(_build_points, state, key, scene, entry, lod, fields, frame, format,
                                          compression)
    args = (request, payload, state.cache, state.settings.gzip_level, key)
    if payload.compressible and accepts_gzip(request) and state.cache.peek(key + ("gzip",)) is None:
        return await run_in_threadpool(respond, *args)  # compressing takes a while
    return respond(*args)


def _build_points(state, key, scene, entry, lod, fields, frame, fmt, compression) -> Payload:
    wanted = None if fields is None else [f.strip() for f in fields.split(",")]
    with reading(scene, entry):
        try:
            names = point_fields(scene, entry.index, wanted, frame)
        except FormatError:
            raise
        except ValueError as exc:
            raise invalid(("query", "fields"), str(exc), fields) from None
        return state.cache.get(key, lambda: points_payload(scene, entry.index, lod, names, frame, fmt, compression))


@router.get("/scenes/{scene_id}/frames/{index}/cuboids", response_model=CuboidsResponse,
            responses=errors((500, DAMAGED)))
def get_cuboids(
    _: Viewer,
    scene: SceneDep,
    entry: FrameDep,
    state: State,
    frame: FrameQuery = "world",
    source: Annotated[Literal["labels", "prepared"], Query(
        description="labels: the label store's tracks interpolated now; prepared: the boxes "
                    "'fathom prepare' interpolated from the raw log's labels (nothing recomputed)")] = "labels",
) -> CuboidsResponse:
    """Label boxes at the frame's timestamp with points-in-box counts (a point in
    overlapping boxes counts for the box with the nearest centre)."""
    head = dict(scene_id=scene.scene_id, frame_index=entry.index, timestamp_ns=entry.timestamp_ns, frame=frame)
    if source == "prepared":
        boxes = prepared_boxes(scene, entry, frame)
        if boxes is None:
            raise HTTPException(404, f"frame {entry.index} of scene {scene.scene_id!r} was prepared without labels")
        return CuboidsResponse(**head, source=source, revision=None, boxes=boxes)
    revision, doc = state.labels.get(scene.scene_id)
    return CuboidsResponse(**head, source=source, revision=revision, boxes=frame_boxes(scene, entry, doc, frame))


RADAR = "/scenes/{scene_id}/frames/{index}/radar"
RADAR_RESPONSES = {
    200: {"content": {ARROW_STREAM: {}}, "description": "Arrow IPC stream of the frame's radar returns"},
    404: {"description": "no such scene or frame, or a frame without radar"},
    **DATA_RESPONSES,
}


@router.head(RADAR, response_class=Response, responses=RADAR_RESPONSES)
@router.get(RADAR, response_class=Response, responses=RADAR_RESPONSES)
async def get_radar(_: Viewer, scene: SceneDep, entry: FrameDep, state: State, request: Request,
                    frame: FrameQuery = "world") -> Response:
    """The frame's radar returns (every radar's scan of the frame; headers ``X-Point-Count``,
    ``X-Frame``, ``X-Timestamp-Ns``) as an Arrow IPC stream: ``x y z`` (float32, metres, in
    ``frame``, each return where it was at its scan's time), ``radial_velocity_mps`` (float32,
    the range rate as measured, positive receding), ``radial_velocity_comp_mps`` (float32, with
    the ego's motion removed: 0 for a static target), ``rcs_dbsm`` (float32), ``sensor_id``
    (uint8, index into the scene's radars) and ``time_offset_ns`` (int32, the scan's time minus
    the frame timestamp). 404 for a frame prepared without radar.
    """
    if entry.radar is None:
        raise HTTPException(404, f"frame {entry.index} of scene {scene.scene_id!r} has no radar returns")
    key = ("radar", scene.scene_id, entry.radar.xxh3_128, frame)
    payload = state.cache.peek(key)
    if payload is None:
        payload = await run_in_threadpool(_build_radar, state, key, scene, entry, frame)
    return respond(request, payload, state.cache, state.settings.gzip_level, key)


def _build_radar(state, key, scene: Scene, entry: FrameEntry, frame: str) -> Payload:
    with reading(scene, entry, "radar file"):
        return state.cache.get(key, lambda: _radar_payload(scene, entry, frame))


def _radar_payload(scene: Scene, entry: FrameEntry, frame: str) -> Payload:
    """The Arrow IPC stream of :meth:`Scene.stored_radar` in ``frame`` (the quantised columns
    left out; schema metadata ``fathom.frame``, ``fathom.timestamp_ns``, ``fathom.frame_index``)."""
    stored = scene.stored_radar(entry.index)
    table = radar_with_xyz(stored, None if frame == "world" else entry.world_from_ego.inverse())
    table = table.drop_columns([c for c in ("xq", "yq", "zq") if c in table.schema.names])
    table = table.replace_schema_metadata({"fathom.frame": frame, "fathom.timestamp_ns": str(entry.timestamp_ns),
                                           "fathom.frame_index": str(entry.index)})
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(table.num_rows, 1))
    headers = {"X-Point-Count": str(table.num_rows), "X-Frame": frame, "X-Timestamp-Ns": str(entry.timestamp_ns)}
    etag = '"radar-' + entry.radar.xxh3_128 + "-" + frame + '"'
    return Payload(memoryview(sink.getvalue()), ARROW_STREAM, etag, headers)
